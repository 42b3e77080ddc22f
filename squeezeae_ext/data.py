"""Images for ``squeezeae train`` / ``squeezeae reconstruct``: always a float32 tensor [N, C, H, W] in [0, 1].

Sources:
- the embedded default (no network): scikit-learn's bundled handwritten digits, 1,797 8x8 greyscale images,
  resized bilinearly to 32x32;
- a folder of PNG/JPEG images (Pillow): all greyscale -> 1 channel, otherwise RGB; all the same size unless
  ``resize`` is given;
- a ``.npy`` / ``.npz`` array [N, H, W] or [N, C, H, W]: integers are divided by 255, floats outside [0, 1] are
  min-max scaled.

Every problem a user can cause raises ``squeezeae_ext.cli.CommandError`` with one line that names the file.
"""
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .cli import CommandError

__all__ = ["load_images", "load_digits", "split", "parse_size", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
DIGITS_SIZE = (32, 32)


def parse_size(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'32' -> (32, 32); '24x32' -> (24, 32) as (height, width); None stays None."""
    if text is None:
        return None
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise CommandError(f"--resize must be N or HxW with positive integers, got {text!r}")
    return size


def _resize(images: torch.Tensor, size: Optional[Tuple[int, int]]) -> torch.Tensor:
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)


def load_digits(size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """scikit-learn's bundled digits (values 0..16) as [1797, 1, H, W] in [0, 1], default 32x32."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:
        raise CommandError(
            f"the embedded digits data set needs scikit-learn ({error}); install it with `pip install scikit-learn` "
            "or pass --data PATH (a folder of PNG/JPEG images or a .npy/.npz array)"
        ) from None
    images = torch.from_numpy(sklearn_digits().images.astype(np.float32) / 16.0).unsqueeze(1)
    return F.interpolate(images, size=size or DIGITS_SIZE, mode="bilinear", align_corners=False).clamp_(0, 1)


def _pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise CommandError(f"reading image folders needs Pillow ({error}); install it with `pip install pillow`") from None
    return Image


def _list_images(folder: str) -> List[str]:
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise CommandError(f"no PNG/JPEG images ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}")
    return [os.path.join(folder, n) for n in names]


def _load_folder(folder: str, size: Optional[Tuple[int, int]], color: str) -> torch.Tensor:
    Image = _pillow()
    paths = _list_images(folder)
    opened = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                opened.append((path, image.copy()))
        except Exception as error:  # Pillow raises several types for broken files
            raise CommandError(f"cannot read image {path}: {error}") from None
    if color == "auto":
        color = "grey" if all(image.mode in GREY_MODES for _, image in opened) else "rgb"
    mode = "L" if color == "grey" else "RGB"
    first_path, first = opened[0]
    arrays = []
    for path, image in opened:
        if size is None and image.size != first.size:
            raise CommandError(
                f"image {path} is {image.size[1]}x{image.size[0]} (HxW) but the first image {first_path} is "
                f"{first.size[1]}x{first.size[0]}; pass --resize HxW to resize them all"
            )
        image = image.convert(mode)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


def _load_array(path: str, size: Optional[Tuple[int, int]]) -> torch.Tensor:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.keys())
                key = next((k for k in ("images", "x", "X", "data") if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise CommandError(f"{path} holds several arrays {keys}; name the images 'images' (or keep one)")
                array = loaded[key]
        else:
            array = loaded
    except CommandError:
        raise
    except Exception as error:
        raise CommandError(f"cannot read array file {path}: {error}") from None
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise CommandError(f"{path}: expected an array [N, H, W] or [N, C, H, W], got shape {tuple(array.shape)}")
    if array.shape[0] == 0 or min(array.shape[1:]) < 1:
        raise CommandError(f"{path}: the array is empty (shape {tuple(array.shape)})")
    if array.dtype.kind in "iub":
        images = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif array.dtype.kind == "f":
        images = torch.from_numpy(array.astype(np.float32))
        if not torch.isfinite(images).all():
            raise CommandError(f"{path}: the array holds NaN or infinite values")
        low, high = images.min(), images.max()
        if low < 0 or high > 1:
            images = (images - low) / (high - low).clamp_min(1e-12)
    else:
        raise CommandError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    return _resize(images.contiguous(), size)


def load_images(path: Optional[str] = None, resize: Optional[Sequence[int]] = None, color: str = "auto",
                limit: Optional[int] = None) -> torch.Tensor:
    """[N, C, H, W] float32 in [0, 1] from ``path`` (None = the embedded digits); the first ``limit`` only."""
    size = tuple(resize) if resize is not None else None
    if path is None:
        images = load_digits(size)
    elif not os.path.exists(path):
        raise CommandError(f"data path {path} does not exist")
    elif os.path.isdir(path):
        images = _load_folder(path, size, color)
    elif path.lower().endswith((".npy", ".npz")):
        images = _load_array(path, size)
    elif path.lower().endswith(IMAGE_EXTENSIONS):
        raise CommandError(f"--data {path} is a single image; pass the folder that holds the images")
    else:
        raise CommandError(f"--data {path}: expected a folder of PNG/JPEG images or a .npy/.npz array")
    if path is not None and color != "auto":
        channels = 1 if color == "grey" else 3
        if images.shape[1] != channels:
            if images.shape[1] == 1:
                images = images.expand(-1, channels, -1, -1).contiguous()
            elif images.shape[1] == 3 and channels == 1:
                images = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise CommandError(f"--color {color}: cannot convert {images.shape[1]}-channel images")
    if limit is not None:
        if limit < 1:
            raise CommandError(f"--limit must be >= 1, got {limit}")
        images = images[:limit]
    return images


def split(n: int, val_fraction: float, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): a seeded permutation, so the held-out set never depends on --seed."""
    if not 0 < val_fraction < 1:
        raise CommandError(f"--val-fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise CommandError(f"{n} images leave nothing to train on with --val-fraction {val_fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values
