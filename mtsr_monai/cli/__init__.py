"""The ``mtsr`` command.

Subcommands live one per module in :mod:`mtsr_monai.cli.commands`; each module defines ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int | None`` and imports nothing heavy at
module level, so that ``mtsr --help`` answers at once. Modules are discovered automatically.

A module may also define ``outputs(args) -> OutputPlan`` (the files and folders it writes) and
``inputs(args) -> list[Path]`` (input files beyond the generic ``--input``, ``--t1``, ``--mask``, ...):
before the command runs, :func:`mtsr_monai.io.outputs.guard_outputs` refuses an output that is an input,
an unwritable output place and an output another run is writing, locks the outputs for the run and
removes the temporary files of killed runs.

Exit codes: 0 success, 2 bad input or bad arguments, 1 internal error (``mtsr --debug COMMAND ...`` or
``MTSR_DEBUG=1`` re-raises it, with its traceback), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM;
handled like Ctrl-C: temporary files are removed); `mtsr bids` also 3 (a participant held by another run).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from mtsr_monai import __version__
from mtsr_monai.cli.arguments import MASK_AUTO, MASK_NONE, check_axis, check_device
from mtsr_monai.errors import InputError, root_cause

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

#: argument names that hold input files or folders, for every command
INPUT_ARGS = (
    "input",
    "pred",
    "ref",
    "mask",
    "tissues",
    "t1",
    "t2",
    "flair",
    "like",
    "datalist",
    "codes",
    "template",
    "template_mask",
    "model",
    "weights",
)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so cleanup runs as for Ctrl-C (not an Exception: the
    commands' ``except Exception`` blocks must not swallow it)."""


def _in_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread.

    An exception raised while the import machinery runs can land in one of its callbacks, where Python
    ignores it, and a module would be left half-imported: there the signal is deferred, re-checked every
    50 ms (SIGALRM) until the import is over. One raised inside a finalizer (``__del__``, a weakref
    callback) is ignored too, and the run would go on to its end: Python reports it to
    ``sys.unraisablehook``, which raises it again 50 ms later (Ctrl-C's KeyboardInterrupt too).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    pending = []

    def defer(signum: int) -> None:
        pending.append(signum)
        signal.setitimer(signal.ITIMER_REAL, 0.05)

    def handler(signum, frame):
        if signum == signal.SIGALRM:
            if not pending:
                return  # not ours: only a deferred signal arms the timer
            signum = pending[-1]
        if _in_import(frame):
            return defer(signum)
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated

    def unraisable(report) -> None:
        for kind, signum in ((Terminated, signal.SIGTERM), (KeyboardInterrupt, signal.SIGINT)):
            if report.exc_type is not None and issubclass(report.exc_type, kind):
                return defer(signum)  # raised in a finalizer, where Python drops it: again in 50 ms
        previous_hook(report)

    previous = signal.signal(signal.SIGTERM, handler)
    previous_alarm = signal.signal(signal.SIGALRM, handler)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGALRM, previous_alarm)
        sys.unraisablehook = previous_hook


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings printed as ``mtsr COMMAND: warning: ...``, one line, not Python's ``file:line: UserWarning``
    form with a line of source code, through ``warnings.showwarning`` (itk replaces ``formatwarning`` when it
    loads). Filters (``-W``, ``PYTHONWARNINGS``) apply as usual, and ``catch_warnings(record=True)`` inside
    the command records; one opened around :func:`main` sees the printed line instead."""
    previous = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        with contextlib.suppress(OSError):  # a closed stderr drops the warning, as Python's own does
            (file or sys.stderr).write(f"mtsr {command}: warning: {text}\n")

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = previous


def _named_inputs(args: argparse.Namespace) -> list[Path]:
    """The generic input options (:data:`INPUT_ARGS`) the command was given (not ``--mask auto|none``)."""
    named = [(name, getattr(args, name, None)) for name in INPUT_ARGS]
    return [
        Path(v)
        for name, v in named
        if isinstance(v, (str, Path)) and not (name == "mask" and str(v) in (MASK_AUTO, MASK_NONE))
    ]


def _inputs(module: ModuleType, args: argparse.Namespace) -> list[Path]:
    extra = getattr(module, "inputs", None)
    return _named_inputs(args) + (list(extra(args)) if extra else [])


def _refuse_bad_arguments(args: argparse.Namespace) -> None:
    """A named input (``--input``, ``--t1``, ...) that does not exist, an ``--axis`` that names no plane or
    array axis, a ``--device`` that is not there and ``--precision fp16`` off CUDA are refused at once,
    before the command's start-up (torch, MONAI, weights: seconds) makes the user wait for the error."""
    # lazy: `mtsr --help` answers without numpy and the io package
    from mtsr_monai.io.volume import check_image_file

    for path in _named_inputs(args):
        check_image_file(path)
    for option in ("axis", "sr_axis"):
        if getattr(args, option, None) is not None:
            check_axis(getattr(args, option), "--" + option.replace("_", "-"))
    if getattr(args, "device", None) is not None:
        check_device(str(args.device))
    on_cuda = str(getattr(args, "device", "cpu")).startswith("cuda")
    if getattr(args, "precision", None) == "fp16" and not on_cuda:
        raise InputError("--precision fp16 needs --device cuda")


def _guard(module: ModuleType, args: argparse.Namespace):
    from mtsr_monai.io.outputs import OutputPlan, guard_outputs

    plan = module.outputs(args) if hasattr(module, "outputs") else OutputPlan()
    return guard_outputs(plan, _inputs(module, args), what=f"mtsr {args.command}")


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
        epilog="Exit codes: 0 success, 2 bad input or arguments (nothing written), 1 internal error, "
        "130 interrupted, 143 terminated (SIGTERM).",
    )
    parser.add_argument("--version", action="version", version=f"mtsr-monai {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an internal error, show its traceback (as MTSR_DEBUG=1); give it before the command",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP)
        )
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _module=module)
    return parser


def describe_failure(err: BaseException) -> str:
    """One line for an unexpected failure, in the words of its root cause: MONAI wraps a full disk or a
    refused write in ``applying transform <SaveVolumed object at 0x...>``, which names neither. A failure
    of the machine (disk, permissions) is an error, not an internal one."""
    cause = root_cause(err)
    kind = "error" if isinstance(cause, OSError) else "internal error"
    if cause is err:
        return f"{kind}: {type(err).__name__}: {err}"
    outer = " ".join(str(err).split())[:120]
    return f"{kind}: {type(cause).__name__}: {cause} (in {type(err).__name__}: {outer})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits with 2 on bad arguments
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        _refuse_bad_arguments(args)
        with _sigterm_raises(), _one_line_warnings(args.command), _guard(args._module, args):
            code = args._run(args)
    except InputError as err:
        print(f"mtsr {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"mtsr {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"mtsr {args.command}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as err:  # noqa: BLE001 - the last line of defence: report, exit 1
        print(f"mtsr {args.command}: {describe_failure(err)}", file=sys.stderr)
        if args.debug or os.environ.get("MTSR_DEBUG"):
            raise
        return EXIT_INTERNAL
    return EXIT_OK if code is None else int(code)
