"""Autoencoders: the Fire autoencoder the package exists for, and a plain convolutional baseline.

``SqueezeAutoencoder``: a 3x3 conv stem, then per level a ``Fire`` block and a 2x2 max-pool that keeps its
indices; a bottleneck Fire to the latent and one back; then per level (deepest first) an ``UnpoolFire`` block
(max-unpool with that level's indices fused into a Fire); a 3x3 conv head. ``ConvAutoencoder`` has the same
topology and pooling with 3x3 convs in place of the Fire blocks, so the comparison isolates Fire vs conv.

``SqueezeAutoencoder(..., reference=True)`` builds the same network from plain PyTorch layers
(``TorchvisionFire`` and ``nn.MaxUnpool2d``) with identical parameter names: state dicts move both ways and
the outputs agree, which is how the tests check the fused kernels inside a whole model.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .modules import Fire, UnpoolFire
from .squeezenet import TorchvisionFire

__all__ = ["SqueezeAutoencoder", "ConvAutoencoder", "build_model", "MODELS", "count_parameters"]

Encoded = Tuple[Tensor, List[Tensor], List[Tuple[int, int]]]


def _resolve_widths(widths: Union[int, Sequence[int]], depth: Optional[int], name: str) -> List[int]:
    """An int is the first level's width, doubled at every level; a sequence lists every level's width."""
    if isinstance(widths, int) and not isinstance(widths, bool):
        levels = 3 if depth is None else depth
        if levels < 1:
            raise ValueError(f"{name}: depth must be >= 1, got {levels}")
        resolved = [widths * 2 ** i for i in range(levels)]
    else:
        resolved = [int(w) for w in widths]
        if not resolved:
            raise ValueError(f"{name}: widths must not be empty")
        if depth is not None and depth != len(resolved):
            raise ValueError(f"{name}: depth={depth} contradicts widths={list(widths)} ({len(resolved)} levels)")
    if min(resolved) < 2:
        raise ValueError(f"{name}: every width must be >= 2, got {resolved}")
    return resolved


def _head_activation(name: str, owner: str) -> nn.Module:
    if name == "sigmoid":
        return nn.Sigmoid()
    if name in ("none", None):
        return nn.Identity()
    raise ValueError(f"{owner}: output_activation must be 'sigmoid' or 'none', got {name!r}")


class _ReferenceUnpoolFire(TorchvisionFire):
    """nn.MaxUnpool2d followed by a torchvision-style Fire: UnpoolFire's unfused twin, same parameter names."""

    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes, kernel_size=2, stride=None,
                 padding=0) -> None:
        super().__init__(inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes)
        self.unpool = nn.MaxUnpool2d(kernel_size, stride, padding)

    def forward(self, input: Tensor, indices: Tensor, output_size=None) -> Tensor:
        return super().forward(self.unpool(input, indices, output_size))


class _AutoencoderBase(nn.Module):
    """Shared encode/decode plumbing: ``encode`` pools with indices, ``decode`` unpools with them."""

    pool_kernel = 2

    def encode(self, x: Tensor) -> Encoded:
        """(latent, pooling indices per level, pre-pool sizes per level) of x."""
        self._check_input(x)
        x = self.stem_activation(self.stem(x))
        indices, sizes = [], []
        for block in self.encoder:
            x = block(x)
            sizes.append((x.shape[-2], x.shape[-1]))
            x, idx = self._pool(x)
            indices.append(idx)
        return self.bottleneck(x), indices, sizes

    def _init_weights(self) -> None:
        # He-normal weights and a small positive bias: with PyTorch's default init and images that are mostly 0,
        # a third of the ReLUs (many of a Fire's few squeeze planes) died in the first epochs (measured on the
        # digits); both autoencoders use the same rule so the comparison stays fair.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.constant_(module.bias, 0.1)

    def _pool(self, x: Tensor):
        return nn.functional.max_pool2d(x, self.pool_kernel, self.pool_kernel, return_indices=True)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected input [N, {self.in_channels}, H, W], got shape {tuple(x.shape)}"
            )
        smallest = self.pool_kernel ** len(self.widths)
        if min(x.shape[-2:]) < smallest:
            raise ValueError(
                f"{type(self).__name__}: images of {x.shape[-2]}x{x.shape[-1]} are too small for "
                f"{len(self.widths)} pooling levels (need at least {smallest}x{smallest})"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(*self.encode(x))

    @property
    def config(self) -> dict:
        """JSON-able constructor arguments: ``build_model(**model.config)`` rebuilds the architecture."""
        return {"model": self.model_name, "in_channels": self.in_channels, "widths": list(self.widths),
                "latent_channels": self.latent_channels, "output_activation": self.output_activation,
                **self._extra_config()}

    def _extra_config(self) -> dict:
        return {}


class SqueezeAutoencoder(_AutoencoderBase):
    """Fire encoder with max-pooling indices, UnpoolFire decoder.

    Args:
        in_channels: image channels (1 for greyscale, 3 for RGB).
        widths: channels after each level's Fire: an int (first level, doubled per level) or one int per level.
        depth: number of pooling levels (only needed with an int ``widths``; default 3).
        latent_channels: channels of the latent at 1/2**depth of the input resolution.
        squeeze_ratio: a Fire's squeeze planes = round(squeeze_ratio * max(its input, its output channels)) (SqueezeNet's
            SR; a decoder block's input is the wider side, and its squeeze must carry the sparse unpooled map).
        pct3x3: the share of a Fire's expand planes that are 3x3 (SqueezeNet's pct3x3; the rest are 1x1).
        output_activation: 'sigmoid' (images in [0, 1]) or 'none'.
        reference: build the same network from plain PyTorch layers (same parameter names).

    ``encode(x)`` returns ``(latent, indices, sizes)``: the latent, each level's pooling indices and each level's
    pre-pooling spatial size (the ``output_size`` of the matching unpool, so odd sizes come back exactly).
    ``decode(latent, indices, sizes)`` inverts it; ``forward(x)`` is both.
    """

    model_name = "squeeze"

    def __init__(self, in_channels: int = 1, widths: Union[int, Sequence[int]] = (16, 32, 64),
                 depth: Optional[int] = None, latent_channels: int = 16, squeeze_ratio: float = 0.25,
                 pct3x3: float = 0.5, output_activation: str = "sigmoid", reference: bool = False) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.widths = _resolve_widths(widths, depth, type(self).__name__)
        self.latent_channels = int(latent_channels)
        self.squeeze_ratio = float(squeeze_ratio)
        self.pct3x3 = float(pct3x3)
        self.output_activation = output_activation
        self.reference = bool(reference)
        if not 0 < self.squeeze_ratio <= 4:
            raise ValueError(f"SqueezeAutoencoder: squeeze_ratio must be in (0, 4], got {squeeze_ratio}")
        if not 0 < self.pct3x3 < 1:
            raise ValueError(f"SqueezeAutoencoder: pct3x3 must be in (0, 1), got {pct3x3}")
        fire = TorchvisionFire if reference else Fire
        unpool_fire = _ReferenceUnpoolFire if reference else UnpoolFire

        def shape(inplanes: int, out: int):
            squeeze = max(1, round(self.squeeze_ratio * max(inplanes, out)))
            e3 = min(max(1, round(self.pct3x3 * out)), out - 1)
            return inplanes, squeeze, out - e3, e3

        w = self.widths
        self.stem = nn.Conv2d(self.in_channels, w[0], kernel_size=3, padding=1)
        self.stem_activation = nn.ReLU(inplace=True)
        self.encoder = nn.ModuleList(fire(*shape(w[max(i - 1, 0)], w[i])) for i in range(len(w)))
        self.bottleneck = fire(*shape(w[-1], self.latent_channels))
        self.expand = fire(*shape(self.latent_channels, w[-1]))
        # decoder[j] undoes level len(w) - 1 - j: its input has that level's channels (the indices' shape)
        self.decoder = nn.ModuleList(
            unpool_fire(*shape(w[i], w[max(i - 1, 0)]), kernel_size=self.pool_kernel)
            for i in reversed(range(len(w)))
        )
        self.head = nn.Conv2d(w[0], self.in_channels, kernel_size=3, padding=1)
        self.head_activation = _head_activation(output_activation, type(self).__name__)
        self._init_weights()

    def _extra_config(self) -> dict:
        return {"squeeze_ratio": self.squeeze_ratio, "pct3x3": self.pct3x3}

    def decode(self, latent: Tensor, indices: Sequence[Tensor], sizes: Sequence[Tuple[int, int]]) -> Tensor:
        x = self.expand(latent)
        for block, idx, size in zip(self.decoder, reversed(indices), reversed(sizes)):
            x = block(x, idx, size)
        return self.head_activation(self.head(x))


class ConvAutoencoder(_AutoencoderBase):
    """The plain convolutional baseline: SqueezeAutoencoder's topology with a 3x3 conv + ReLU per Fire.

    Same constructor (less ``squeeze_ratio``/``reference``), same ``encode``/``decode``/``forward``.
    """

    model_name = "conv"

    def __init__(self, in_channels: int = 1, widths: Union[int, Sequence[int]] = (16, 32, 64),
                 depth: Optional[int] = None, latent_channels: int = 16, output_activation: str = "sigmoid") -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.widths = _resolve_widths(widths, depth, type(self).__name__)
        self.latent_channels = int(latent_channels)
        self.output_activation = output_activation

        def conv(inplanes: int, out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(inplanes, out, kernel_size=3, padding=1), nn.ReLU(inplace=True))

        w = self.widths
        self.stem = nn.Conv2d(self.in_channels, w[0], kernel_size=3, padding=1)
        self.stem_activation = nn.ReLU(inplace=True)
        self.encoder = nn.ModuleList(conv(w[max(i - 1, 0)], w[i]) for i in range(len(w)))
        self.bottleneck = conv(w[-1], self.latent_channels)
        self.expand = conv(self.latent_channels, w[-1])
        self.unpool = nn.MaxUnpool2d(self.pool_kernel)
        self.decoder = nn.ModuleList(conv(w[i], w[max(i - 1, 0)]) for i in reversed(range(len(w))))
        self.head = nn.Conv2d(w[0], self.in_channels, kernel_size=3, padding=1)
        self.head_activation = _head_activation(output_activation, type(self).__name__)
        self._init_weights()

    def decode(self, latent: Tensor, indices: Sequence[Tensor], sizes: Sequence[Tuple[int, int]]) -> Tensor:
        x = self.expand(latent)
        for block, idx, size in zip(self.decoder, reversed(indices), reversed(sizes)):
            x = block(self.unpool(x, idx, size))
        return self.head_activation(self.head(x))


MODELS = {"squeeze": SqueezeAutoencoder, "conv": ConvAutoencoder}


def build_model(model: str = "squeeze", **kwargs) -> nn.Module:
    """``build_model(**autoencoder.config)`` rebuilds an autoencoder (``reference=`` only for 'squeeze')."""
    if model not in MODELS:
        raise ValueError(f"build_model: model must be one of {sorted(MODELS)}, got {model!r}")
    return MODELS[model](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
