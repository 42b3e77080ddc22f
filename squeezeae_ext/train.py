"""``squeezeae train`` and ``squeezeae reconstruct``.

train: fits a SqueezeAutoencoder (or the ConvAutoencoder baseline) to the embedded digits or ``--data``, keeps a
seeded held-out split, and writes into ``--out``: ``checkpoint.pt`` (after every epoch, atomically),
``metrics.json`` and ``reconstruction.png`` (held-out originals above their reconstructions).

Exact resumption: the shuffling of epoch ``e`` is a pure function of (``--seed``, ``e``) (DistributedSampler's
rule, also used with one process), the checkpoint holds model, optimizer and RNG states, so
``--epochs 1`` then ``--resume ... --epochs 2`` gives the same parameters as ``--epochs 2`` straight.

Multi-process: under ``torchrun --nproc_per_node=N -m squeezeae_ext train ...`` (RANK/WORLD_SIZE/LOCAL_RANK in
the environment) training uses DistributedDataParallel (gloo on the CPU, NCCL on CUDA). ``--batch-size`` is the
GLOBAL batch: each of the N processes takes ``batch_size / N`` images per step, so a step sees the same images
as a one-process step, and the result does not depend on N (up to float rounding). Rank 0 alone shows the
progress bar and writes files.
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .cli import CommandError
from .data import load_images, parse_size, split
from .models import build_model, count_parameters

CHECKPOINT, METRICS, PICTURE = "checkpoint.pt", "metrics.json", "reconstruction.png"
FORMAT = "squeezeae-checkpoint-v1"

# Architecture: must match a resumed checkpoint. Unset options take the checkpoint's value, then these.
ARCH_DEFAULTS = {"model": "squeeze", "widths": [16, 32, 64], "latent_channels": 16, "squeeze_ratio": 0.25}
# Training and data: unset options take the checkpoint's value, then these; a change only warns.
TRAIN_DEFAULTS = {"epochs": 40, "batch_size": 32, "lr": 3e-3, "seed": 0}
DATA_DEFAULTS = {"data": None, "resize": None, "color": "auto", "limit": None, "val_fraction": 0.1,
                 "split_seed": 0}


# --------------------------------------------------------------------------------------------------- arguments
def _widths(text: str):
    try:
        widths = [int(w) for w in text.replace(" ", "").split(",") if w]
    except ValueError:
        widths = []
    if not widths or min(widths) < 2:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths >= 2 such as 16,32,64, got {text!r}")
    return widths


def _add_data_arguments(parser, default_note: str) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", metavar="PATH", default=None,
                       help="a folder of PNG/JPEG images or a .npy/.npz array [N,H,W] or [N,C,H,W]; " + default_note)
    group.add_argument("--resize", metavar="N|HxW", default=None, help="resize every image (needed for mixed sizes)")
    group.add_argument("--color", choices=["auto", "grey", "rgb"], default=None,
                       help="channels: auto = greyscale if every image is, else RGB")
    group.add_argument("--limit", type=int, metavar="N", default=None, help="use only the first N images")


def _add_runtime_arguments(parser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="auto: CUDA when available (and built, for the fused ops), else the CPU")
    group.add_argument("--channels-last", action="store_true", help="run the model in channels_last memory format")
    group.add_argument("--amp", action="store_true", help="autocast: bfloat16 on the CPU, float16 on CUDA")
    group.add_argument("--threads", type=int, metavar="N", default=None, help="torch.set_num_threads(N)")
    group.add_argument("--force", action="store_true", help="overwrite files in --out that belong to another run")
    group.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")


def add_train_arguments(parser) -> None:
    model = parser.add_argument_group("model (fixed by a resumed checkpoint)")
    model.add_argument("--model", choices=["squeeze", "conv"], default=None,
                       help="squeeze: Fire autoencoder (default); conv: the plain-conv baseline")
    model.add_argument("--widths", type=_widths, default=None, metavar="W1,W2,...",
                       help=f"channels per level, one level per width (default {','.join(map(str, ARCH_DEFAULTS['widths']))})")
    model.add_argument("--latent-channels", type=int, default=None, metavar="C",
                       help=f"latent channels (default {ARCH_DEFAULTS['latent_channels']})")
    model.add_argument("--squeeze-ratio", type=float, default=None, metavar="R",
                       help=f"Fire squeeze planes / output channels (default {ARCH_DEFAULTS['squeeze_ratio']})")
    model.add_argument("--reference", action="store_true",
                       help="squeeze model from plain PyTorch layers instead of the fused ops (same parameters)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"total epochs, counting those of a resumed checkpoint (default {TRAIN_DEFAULTS['epochs']})")
    train.add_argument("--batch-size", type=int, default=None,
                       help=f"global batch size, split across processes under torchrun (default {TRAIN_DEFAULTS['batch_size']})")
    train.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (default {TRAIN_DEFAULTS['lr']})")
    train.add_argument("--seed", type=int, default=None, help="initialisation and shuffling seed (default 0)")
    train.add_argument("--val-fraction", type=float, default=None, help="held-out fraction (default 0.1)")
    train.add_argument("--split-seed", type=int, default=None, help="seed of the held-out split (default 0)")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--out", metavar="DIR", default=None,
                       help="output folder (default out/train_<model>, or the resumed checkpoint's folder)")
    train.add_argument("--resume", metavar="CKPT", default=None, help="continue the run saved in CKPT exactly")
    train.add_argument("--grid", type=int, default=16, metavar="N", help="held-out images in the PNG (default 16)")
    _add_data_arguments(parser, "default: scikit-learn's bundled digits, 32x32")
    _add_runtime_arguments(parser)


def add_reconstruct_arguments(parser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", required=True, help="a checkpoint.pt of squeezeae train")
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder")
    parser.add_argument("--per-image", action="store_true",
                        help="also write every reconstruction as DIR/images/NNNNN.png (input order)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--grid", type=int, default=16, metavar="N", help="images in the PNG grid (default 16)")
    _add_data_arguments(parser, "default: the held-out images of the checkpoint's own data")
    _add_runtime_arguments(parser)


# ------------------------------------------------------------------------------------------------ small helpers
class _Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        self.is_main = self.rank == 0

    def init(self, device: torch.device) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=self.rank,
                                    world_size=self.world_size)

    def close(self, together: bool) -> None:
        """Tears the process group down; `together` (after a run that ended well) waits for every rank first: a
        rank tearing gloo down while rank 0 still wrote its files aborted ("terminate called without an active
        exception") in about one run in five. After an error there is no waiting: the other ranks may never come."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if together:
                    dist.barrier()
                dist.destroy_process_group()


def _say(dist: _Distributed, quiet: bool, text: str) -> None:
    if dist.is_main and not quiet:
        print(text, flush=True)


def _fused_ready(device: torch.device) -> bool:
    key = "CUDA" if device.type == "cuda" else "CPU"
    return torch._C._dispatch_has_kernel_for_dispatch_key("squeezeae::fire", key) and \
        torch._C._dispatch_has_kernel_for_dispatch_key("squeezeae::unpool_fire", key)


def _pick_device(requested: str, dist: _Distributed, needs_fused: bool) -> torch.device:
    from . import has_cuda_kernels

    if requested == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: torch sees no CUDA device (torch.version.cuda = "
                           f"{torch.version.cuda}); use --device cpu")
    if requested == "cuda" and needs_fused and not has_cuda_kernels():
        raise CommandError("--device cuda: this build of squeezeae_ext has no CUDA kernels; rebuild it with CUDA "
                           "(pip install --no-build-isolation -e .), or use --device cpu or --reference")
    use_cuda = requested == "cuda" or (
        requested == "auto" and torch.cuda.is_available() and (has_cuda_kernels() or not needs_fused))
    if not use_cuda:
        return torch.device("cpu")
    index = dist.local_rank if dist.enabled else torch.cuda.current_device()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _atomic_write(path: str, write) -> None:
    """write(file) into a temporary file in the same folder, then os.replace: never a half-written ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the user's usual permissions
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_json(path: str, payload: dict) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(payload, indent=2) + "\n").encode()))


def save_grid(path: str, rows, columns: int = 8, scale: int = 3, frame: int = 1) -> None:
    """PNG of ``rows`` (equal-shape [n, C, H, W] tensors in [0, 1]) interleaved: for every chunk of ``columns``
    images, one line from each tensor (originals above reconstructions)."""
    try:
        from PIL import Image
    except ImportError as error:
        raise CommandError(f"writing PNGs needs Pillow ({error}); install it with `pip install pillow`") from None
    n, channels, height, width = rows[0].shape
    columns = max(1, min(columns, n))
    lines = []
    for start in range(0, n, columns):
        for tensor in rows:
            chunk = tensor[start:start + columns].float().clamp(0, 1)
            if chunk.shape[0] < columns:
                chunk = torch.cat([chunk, chunk.new_ones(columns - chunk.shape[0], *chunk.shape[1:])])
            chunk = F.pad(chunk, (frame,) * 4, value=1.0)  # white frame around each image
            lines.append(torch.cat(list(chunk), dim=2))
    grid = torch.cat(lines, dim=1)
    grid = grid.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    array = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array[..., :3])
    _atomic_write(path, lambda f: image.save(f, format="PNG", optimize=True))


def _load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise CommandError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CommandError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CommandError(f"{path} is not a checkpoint of squeezeae train ({FORMAT})")
    return checkpoint


def _peek_run_id(path: str) -> Optional[str]:
    try:
        if path.endswith(".json"):
            with open(path) as f:
                return json.load(f).get("run_id")
        return torch.load(path, map_location="cpu", weights_only=True).get("run_id")
    except Exception:
        return None


def _guard_out(out: str, names, run_id: Optional[str], force: bool, hint: str) -> None:
    """Refuse to overwrite files of another run: ``run_id`` is the run this invocation continues (or None)."""
    if force or not os.path.exists(out):
        return
    if not os.path.isdir(out):
        raise CommandError(f"--out {out} exists and is not a folder")
    existing = [n for n in names if os.path.exists(os.path.join(out, n))]
    if not existing:
        return
    owners = {_peek_run_id(os.path.join(out, n)) for n in existing if n in (CHECKPOINT, METRICS)}
    if run_id is not None and owners == {run_id}:
        return
    raise CommandError(f"--out {out} already holds {', '.join(existing)} of another run; choose another --out, "
                       f"{hint}or pass --force to overwrite")


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _resolve(args, checkpoint: Optional[dict], dist: _Distributed) -> dict:
    """The run's config: explicit options, else the resumed checkpoint's, else the defaults."""
    saved = checkpoint["config"] if checkpoint else {}
    config = {}
    for key, default in {**ARCH_DEFAULTS, **TRAIN_DEFAULTS, **DATA_DEFAULTS}.items():
        given = getattr(args, key, None)
        if given is not None and key in saved and saved[key] != given:
            flag = "--" + key.replace("_", "-")
            shown = lambda v: ",".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
            if key in ARCH_DEFAULTS:
                raise CommandError(f"checkpoint {args.resume} was trained with {flag} {shown(saved[key])}, this run "
                                   f"asks for {flag} {shown(given)}; drop {flag} to continue it, or start a new run "
                                   "without --resume")
            if key != "epochs":
                _say(dist, False, f"note: resuming with {flag} {shown(given)} (checkpoint: {shown(saved[key])}); "
                                  "the run will differ from an uninterrupted one")
        config[key] = given if given is not None else saved.get(key, default)
    return config


def _batches(indices: torch.Tensor, batch_size: int):
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


@torch.no_grad()
def _evaluate(model, images: torch.Tensor, device, memory_format, batch_size: int = 256):
    """(mean squared error over every pixel, reconstructions on the CPU)."""
    was_training = model.training
    model.eval()
    total, count, outputs = 0.0, 0, []
    for batch in torch.split(images, batch_size):
        x = batch.to(device).contiguous(memory_format=memory_format)
        y = model(x).float()
        total += F.mse_loss(y, x, reduction="sum").item()
        count += x.numel()
        outputs.append(y.cpu())
    model.train(was_training)
    return total / max(count, 1), torch.cat(outputs)


# --------------------------------------------------------------------------------------------------------- train
def run_train(args) -> int:
    dist = _Distributed()
    checkpoint = _load_checkpoint(args.resume) if args.resume else None
    config = _resolve(args, checkpoint, dist)
    if args.threads:
        torch.set_num_threads(args.threads)
    for key in ("epochs", "batch_size"):
        if config[key] < 1:
            raise CommandError(f"--{key.replace('_', '-')} must be >= 1, got {config[key]}")
    if not config["lr"] > 0:
        raise CommandError(f"--lr must be > 0, got {config['lr']}")
    if config["batch_size"] % dist.world_size:
        raise CommandError(f"--batch-size {config['batch_size']} (the global batch) must be a multiple of the "
                           f"{dist.world_size} processes")
    if checkpoint and checkpoint["epoch"] >= config["epochs"]:
        raise CommandError(f"checkpoint {args.resume} has already trained {checkpoint['epoch']} epochs; pass "
                           f"--epochs N with N > {checkpoint['epoch']} to continue")
    if config["model"] != "squeeze" and args.reference:
        raise CommandError("--reference applies to --model squeeze only")
    needs_fused = config["model"] == "squeeze" and not args.reference
    device = _pick_device(args.device, dist, needs_fused)
    if needs_fused and not _fused_ready(device):
        raise CommandError(f"this build of squeezeae_ext has no {device.type.upper()} kernels for fire/unpool_fire "
                           "(rebuild with pip install --no-build-isolation -e .); --reference runs the same model "
                           "from plain PyTorch layers")

    images = load_images(config["data"], parse_size(config["resize"]), config["color"], config["limit"])
    train_index, heldout_index = split(len(images), config["val_fraction"], config["split_seed"])
    model_kwargs = {k: config[k] for k in ("widths", "latent_channels")}
    if config["model"] == "squeeze":
        model_kwargs["squeeze_ratio"] = config["squeeze_ratio"]
    in_channels = images.shape[1]
    if checkpoint and checkpoint["model_config"]["in_channels"] != in_channels:
        raise CommandError(f"checkpoint {args.resume} expects {checkpoint['model_config']['in_channels']}-channel "
                           f"images, the data has {in_channels} channels (see --color)")
    smallest = 2 ** len(config["widths"])
    if min(images.shape[-2:]) < smallest:
        raise CommandError(f"images are {images.shape[-2]}x{images.shape[-1]}; {len(config['widths'])} pooling "
                           f"levels need at least {smallest}x{smallest} (fewer --widths, or --resize)")

    run_id = checkpoint["run_id"] if checkpoint else uuid.uuid4().hex
    out = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                       else os.path.join("out", f"train_{config['model']}"))
    _guard_out(out, (CHECKPOINT, METRICS, PICTURE), run_id if checkpoint else None, args.force,
               "pass --resume DIR/checkpoint.pt to continue that run, ")

    dist.init(device)
    try:
        status = _train(args, config, model_kwargs, in_channels, images, train_index, heldout_index, checkpoint,
                        run_id, out, device, dist)
    except BaseException:
        dist.close(together=False)
        raise
    dist.close(together=True)
    return status


def _train(args, config, model_kwargs, in_channels, images, train_index, heldout_index, checkpoint, run_id, out,
           device, dist) -> int:
    quiet = args.quiet
    torch.manual_seed(config["seed"])
    random.seed(config["seed"])
    np.random.seed(config["seed"])
    extra = {"reference": True} if args.reference else {}
    model = build_model(config["model"], in_channels=in_channels, **model_kwargs, **extra)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    history, start_epoch, trained_seconds = [], 0, 0.0
    if checkpoint:
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CommandError(f"checkpoint {args.resume} does not fit this model: {str(error).splitlines()[0]}") \
                from None
        for group in optimizer.param_groups:
            group["lr"] = config["lr"]
        _set_rng_state(checkpoint["rng"])
        history, start_epoch = list(checkpoint["history"]), checkpoint["epoch"]
        trained_seconds = float(checkpoint.get("trained_seconds", 0.0))

    train_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)
    amp = torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16) \
        if args.amp else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    if checkpoint and checkpoint.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(checkpoint["scaler"])

    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(len(train_index)), num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=config["seed"], drop_last=False)
    local_batch = config["batch_size"] // dist.world_size
    parameters = count_parameters(model)
    heldout = images[heldout_index]
    fused = config["model"] == "squeeze" and not args.reference
    _say(dist, quiet, f"{type(model).__name__} ({'fused ops' if fused else 'plain PyTorch layers'}), "
                      f"{parameters:,} parameters; {len(train_index)} training / {len(heldout_index)} held-out images "
                      f"{tuple(images.shape[1:])}; device {device}, {dist.world_size} process(es), "
                      f"{torch.get_num_threads()} thread(s); out {out}")

    progress = None
    if dist.is_main and not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(total=(config["epochs"] - start_epoch) * len(train_index), unit="img", unit_scale=True,
                        dynamic_ncols=True, desc="train")
    os.makedirs(out, exist_ok=True) if dist.is_main else None
    wall_start = time.perf_counter()
    epoch_seconds = []
    model.train()
    try:
        for epoch in range(start_epoch, config["epochs"]):
            sampler.set_epoch(epoch)
            order = train_index[torch.tensor(list(iter(sampler)), dtype=torch.long)]
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros(2, dtype=torch.float64)
            for batch in _batches(order, local_batch):
                x = images[batch].to(device, non_blocking=True).contiguous(memory_format=memory_format)
                with amp:
                    y = train_model(x)
                loss = F.mse_loss(y.float(), x)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += torch.tensor([loss.item() * len(batch), len(batch)], dtype=torch.float64)
                if progress is not None:
                    progress.update(len(batch) * dist.world_size)
                    progress.set_postfix_str(f"epoch {epoch + 1}/{config['epochs']} loss {loss.item():.5f}")
            if dist.enabled:
                import torch.distributed as tdist

                tdist.all_reduce(loss_sum)
            seconds = time.perf_counter() - epoch_start
            epoch_seconds.append(seconds)
            trained_seconds += seconds
            train_loss = float(loss_sum[0] / loss_sum[1])
            if dist.is_main:
                mse, _ = _evaluate(model, heldout, device, memory_format)
                record = {"epoch": epoch + 1, "train_loss": train_loss, "heldout_mse": mse,
                          "heldout_psnr_db": _psnr(mse), "seconds": seconds,
                          "images_per_s": len(train_index) / seconds}
                history.append(record)
                _save_checkpoint(os.path.join(out, CHECKPOINT), model, optimizer, scaler, epoch + 1, config,
                                 run_id, history, trained_seconds)
                line = (f"epoch {epoch + 1}/{config['epochs']}  loss {train_loss:.5f}  held-out PSNR "
                        f"{record['heldout_psnr_db']:.2f} dB  {record['images_per_s']:.0f} img/s  {seconds:.1f} s")
                if progress is not None:
                    progress.write(line)
                elif not quiet:
                    print(line, flush=True)
    finally:
        if progress is not None:
            progress.close()

    replica_diff = _replica_difference(model, dist)
    if not dist.is_main:
        return 0
    wall = time.perf_counter() - wall_start
    mse, reconstructions = _evaluate(model, heldout, device, memory_format)
    shown = min(args.grid, len(heldout))
    if shown > 0:
        save_grid(os.path.join(out, PICTURE), [heldout[:shown], reconstructions[:shown]])
    metrics = {
        "run_id": run_id,
        "model": type(model).__name__,
        "model_config": model.config,
        "fused_kernels": fused,
        "parameters": parameters,
        "config": config,
        "data": {"source": config["data"] or "sklearn digits (embedded)", "images": len(images),
                 "train_images": len(train_index), "heldout_images": len(heldout_index),
                 "image_shape": list(images.shape[1:])},
        "epochs": config["epochs"],
        "epochs_this_run": len(epoch_seconds),
        "heldout_mse": mse,
        "heldout_psnr_db": _psnr(mse),
        "wall_time_s": wall,
        "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
        "trained_seconds_total": trained_seconds,
        "world_size": dist.world_size,
        "global_batch_size": config["batch_size"],
        "replica_max_abs_diff": replica_diff,
        "device": str(device),
        "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile,
        "torch": str(torch.__version__), "threads": torch.get_num_threads(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "history": history,
    }
    _write_json(os.path.join(out, METRICS), metrics)
    if not quiet:
        print(f"held-out MSE {mse:.6f}  PSNR {_psnr(mse):.2f} dB  |  {parameters:,} parameters  |  wall time "
              f"{wall:.1f} s ({metrics['seconds_per_epoch']:.2f} s/epoch)")
        print(f"wrote {os.path.join(out, CHECKPOINT)}, {os.path.join(out, METRICS)}"
              + (f", {os.path.join(out, PICTURE)}" if shown > 0 else ""))
    return 0


def _save_checkpoint(path, model, optimizer, scaler, epoch, config, run_id, history, trained_seconds) -> None:
    payload = {
        "format": FORMAT, "run_id": run_id, "epoch": epoch, "config": config, "model_config": model.config,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": _rng_state(), "history": history, "trained_seconds": trained_seconds,
        "torch": str(torch.__version__),
    }
    _atomic_write(path, lambda f: torch.save(payload, f))


def _replica_difference(model, dist) -> Optional[float]:
    """Largest parameter difference between any process and rank 0 (None with one process)."""
    if not dist.enabled:
        return None
    import torch.distributed as tdist

    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.world_size)]
    tdist.all_gather(gathered, flat)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


# --------------------------------------------------------------------------------------------------- reconstruct
def run_reconstruct(args) -> int:
    checkpoint = _load_checkpoint(args.checkpoint)
    model_config = dict(checkpoint["model_config"])
    name = model_config.pop("model")
    try:
        model = build_model(name, **model_config)
        model.load_state_dict(checkpoint["model"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CommandError(f"checkpoint {args.checkpoint} does not describe a model this version can build: "
                           f"{str(error).splitlines()[0]}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = _Distributed()
    device = _pick_device(args.device, dist, needs_fused=name == "squeeze")
    if name == "squeeze" and not _fused_ready(device):
        raise CommandError(f"this build of squeezeae_ext has no {device.type.upper()} kernels for fire/unpool_fire")
    in_channels = model_config["in_channels"]
    if args.data is None:
        saved = checkpoint["config"]
        images = load_images(saved["data"], parse_size(saved["resize"]), saved["color"], saved["limit"])
        images = images[split(len(images), saved["val_fraction"], saved["split_seed"])[1]]
        if args.limit:
            images = images[:args.limit]
        source = f"the held-out images of {saved['data'] or 'the embedded digits'}"
    else:
        color = args.color or ("grey" if in_channels == 1 else "rgb" if in_channels == 3 else "auto")
        images = load_images(args.data, parse_size(args.resize), color, args.limit)
        source = args.data
    if images.shape[1] != in_channels:
        raise CommandError(f"the model takes {in_channels}-channel images, the data has {images.shape[1]}")
    smallest = 2 ** len(model_config["widths"])
    if min(images.shape[-2:]) < smallest:
        raise CommandError(f"images are {images.shape[-2]}x{images.shape[-1]}; this model needs at least "
                           f"{smallest}x{smallest} (see --resize)")
    names = [PICTURE, "reconstruct_metrics.json"] + (["images"] if args.per_image else [])
    _guard_out(args.out, names, None, args.force, "")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    amp = torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16) \
        if args.amp else nullcontext()
    start = time.perf_counter()
    with amp:
        mse, reconstructions = _evaluate(model, images, device, memory_format, max(1, args.batch_size))
    seconds = time.perf_counter() - start
    os.makedirs(args.out, exist_ok=True)
    shown = min(args.grid, len(images))
    save_grid(os.path.join(args.out, PICTURE), [images[:shown], reconstructions[:shown]])
    if args.per_image:
        folder = os.path.join(args.out, "images")
        os.makedirs(folder, exist_ok=True)
        for i, image in enumerate(reconstructions):
            save_grid(os.path.join(folder, f"{i:05d}.png"), [image[None]], columns=1, scale=1, frame=0)
    _write_json(os.path.join(args.out, "reconstruct_metrics.json"), {
        "checkpoint": os.path.abspath(args.checkpoint), "run_id": checkpoint["run_id"], "source": source,
        "images": len(images), "mse": mse, "psnr_db": _psnr(mse), "seconds": seconds, "device": str(device)})
    if not args.quiet:
        print(f"{len(images)} images from {source}: MSE {mse:.6f}  PSNR {_psnr(mse):.2f} dB  ({seconds:.2f} s)")
        print(f"wrote {os.path.join(args.out, PICTURE)}"
              + (f" and {len(images)} images in {os.path.join(args.out, 'images')}" if args.per_image else ""))
    return 0
