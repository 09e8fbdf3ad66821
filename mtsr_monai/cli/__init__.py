"""The ``mtsr`` command.

Subcommands live one per module in :mod:`mtsr_monai.cli.commands`; each module defines ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int | None`` and imports nothing heavy at
module level, so that ``mtsr --help`` answers at once. Modules are discovered automatically.

Exit codes: 0 success, 2 bad input or bad arguments, 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from mtsr_monai import __version__
from mtsr_monai.errors import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _command_modules() -> list[ModuleType]:
    from mtsr_monai.cli import commands

    modules = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtsr",
        description="Super-resolution and modality translation of brain MRI (MONAI).",
        epilog="Exit codes: 0 success, 2 bad input or arguments, 1 internal error.",
    )
    parser.add_argument("--version", action="version", version=f"mtsr-monai {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 on bad arguments
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        code = args._run(args)
    except InputError as err:
        print(f"mtsr {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"mtsr {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the last line of defence: report, exit 1
        print(f"mtsr {args.command}: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        if "--debug" in sys.argv or __import__("os").environ.get("MTSR_DEBUG"):
            raise
        return EXIT_INTERNAL
    return EXIT_OK if code is None else int(code)
