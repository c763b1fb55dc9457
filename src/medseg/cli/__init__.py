"""``medseg`` command line. Each module in this package adds subcommands via ``register(subparsers)``.

The CLI is thin: it parses arguments, calls one library function and prints the result.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Medical image segmentation toolkit: train, evaluate, predict, metrics, losses, models.",
        epilog="Example: medseg demo --output runs/demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="show warnings and errors only")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="also show debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    from medseg.log import configure

    configure(args.verbose - args.quiet)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # user-facing errors: one clear line, no traceback
        from medseg.errors import UserError

        if isinstance(err, UserError) or type(err).__name__ in {"ConfigError", "DataError", "CheckpointError"}:
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise


def add_command(sub: argparse._SubParsersAction, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subparser whose --help ends with an example."""
    return sub.add_parser(name, help=help, description=help, epilog=f"Example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
