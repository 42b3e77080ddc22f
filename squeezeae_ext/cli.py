"""The ``squeezeae`` command (also ``python -m squeezeae_ext``): train, reconstruct, bench, info.

Each subcommand lives in its own module exposing ``add_<name>_arguments(parser)`` (or ``add_arguments``) and
``run_<name>(args)`` (or ``run``) returning an exit status. Only the chosen subcommand's module is imported,
so ``squeezeae info`` stays fast and a missing optional extra breaks only the command that needs it.
"""
import argparse
import importlib
import os
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


def build_parser(command=None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (none for the top-level ``--help``)."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="squeezeae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"squeezeae_ext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
            adder(p)
            p.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CommandError as error:
        print(f"squeezeae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"squeezeae {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `squeezeae bench | head`: the reader left; stop quietly, as other tools do
        # Python would report the error again when it flushes stdout at exit: point stdout at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
