"""The ``squeezeae`` command (also ``python -m squeezeae_ext``): train, reconstruct, bench, info.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; this file
only wires them up, so ``squeezeae info`` stays fast and optional extras are imported only when needed.
"""
import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("squeezeae_ext.train", "train the Fire autoencoder (embedded digits by default)"),
    "reconstruct": ("squeezeae_ext.train", "reconstruct images with a trained checkpoint"),
    "bench": ("squeezeae_ext.bench", "benchmark the fused ops against eager PyTorch and torch.compile"),
    "info": ("squeezeae_ext.info", "versions, compiled kernels, devices and threads"),
}


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="squeezeae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"squeezeae_ext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{name}_arguments", module.__dict__.get("add_arguments"))(p)
        p.set_defaults(_run=getattr(module, f"run_{name}", module.__dict__.get("run")))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CommandError as error:
        print(f"squeezeae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"squeezeae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
