"""Argument groups and output plans shared by the ``mtsr`` commands, defined once.

Imports nothing heavy at module level (the commands' ``add_arguments`` run for ``mtsr --help``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mtsr_monai.inference.defaults import SR_ROI_SIZE

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

#: the routine sequences of a clinical session, in the order that picks the reference scan
SESSION_SEQUENCES = ("flair", "t1", "t2")

# The choices of options shared by several commands. They repeat constants of modules that import torch
# (inference.super_resolve.METHODS, inference.clinical.METHODS, precision.PRECISIONS,
# transforms.protocol.PROFILES), which ``mtsr --help`` must not load; tests/test_cli_arguments.py checks
# that the two stay equal.
#: ``mtsr super-resolve --method``, ``mtsr bids --sr-method``
SR_METHODS = ("model", "bicubic", "bilinear", "lanczos", "nearest")
#: ``mtsr clinical-sr --method``, ``mtsr bids --clinical-method``
CLINICAL_METHODS = ("model", "trilinear", "bspline", "sinc")
#: ``mtsr translate``/``run --mask`` keywords (anything else is a file); ``auto`` is inference.brain_mask.AUTO
MASK_AUTO, MASK_NONE = "auto", "none"
#: ``--precision`` of the network arithmetic
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: slice profiles of a thick-slice acquisition
SLICE_PROFILES = ("gaussian", "boxcar")
#: the largest in-plane factor of ``mtsr degrade --scale`` and ``mtsr run --scale``
MAX_SCALE = 16


def modality(name: str) -> str:
    """``--source`` / ``--target`` as a datalist key: BIDS and scanner names (``T1w``, ``FLAIR``, ``T2w``,
    ``t1c``) as ``mtsr datalist`` reads them in file names, so ``mtsr bids`` and ``mtsr translate`` take
    the same names; anything else lower-cased, for the commands' own check to name the choices."""
    # lazy: data.datalist loads only when a command parses its arguments, not for ``mtsr --help``
    from mtsr_monai.data.datalist import ALIASES

    return ALIASES.get(name.lower(), name.lower())


def check_axis(value: str | int, option: str = "--axis") -> None:
    """InputError unless ``value`` names a plane (axial, coronal, sagittal) or an array axis, as
    :func:`mtsr_monai.io.geometry.resolve_axis` takes it: ``mtsr`` checks every command's ``--axis`` (and
    ``--sr-axis``) with this before the command starts."""
    from mtsr_monai.errors import InputError
    from mtsr_monai.io.geometry import resolve_axis

    try:
        resolve_axis(None, value)
    except ValueError as err:
        raise InputError(f"{option} {value}: {err}") from err


def integer_in(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """argparse ``type`` of an integer option that must be ``>= minimum`` (and ``<= maximum``): refused at
    once, exit 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from err
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {value}")
        return value

    return parse


def output_volume(text: str) -> Path:
    """argparse ``type`` of an output volume: refused at once (exit 2) unless its type is one
    :func:`mtsr_monai.io.save_volume` writes."""
    from mtsr_monai.errors import InputError
    from mtsr_monai.io.volume import check_output_type

    try:
        return check_output_type(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def check_device(device: str) -> None:
    """InputError for a ``--device`` torch cannot name (``cpu``, ``cuda``, ``cuda:1`` ...) or a CUDA device
    on a machine without one; torch is only imported for a device other than ``cpu``."""
    from mtsr_monai.errors import InputError

    if device == "cpu":
        return
    import torch  # lazy: the check runs before the command's start-up

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as err:
        raise InputError(f"--device {device!r} names no torch device (cpu, cuda, cuda:N)") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device} requested but CUDA is not available")


#: argparse ``type`` of every ``--seed``: numpy's and ITK's generators take 0 to 2**32 - 1
SEED = integer_in(0, 2**32 - 1)
#: translations per input: a mistyped count (1e9) would allocate its latent codes (60 GiB) before failing
MAX_SAMPLES = 1000
SAMPLES = integer_in(1, MAX_SAMPLES)


def positive_minutes(text: str) -> float:
    """argparse ``type`` of a duration in minutes: a positive finite number, refused at once (exit 2)."""
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from err
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number of minutes, got {text}")
    return value


def add_roi_size_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--roi-size``: the SR network's LR sliding-window side (``mtsr super-resolve``, ``mtsr bids``)."""
    parser.add_argument(
        "--roi-size",
        type=int,
        default=SR_ROI_SIZE,
        help=f"LR sliding-window side (default {SR_ROI_SIZE}: a whole slice)",
    )


def add_device_argument(
    parser: argparse.ArgumentParser,
    choices: Sequence[str] | None = None,
    help: str = "torch device (default cpu)",
) -> None:
    """``--device`` (default ``cpu``); ``choices`` limits it where the command accepts only some."""
    parser.add_argument("--device", default="cpu", choices=choices, help=help)


def add_slice_profile_argument(
    parser: argparse.ArgumentParser, flag: str, help: str, default: str | None = "gaussian"
) -> None:
    """A slice-profile option ``flag`` (one of :data:`SLICE_PROFILES`, default ``gaussian``; None where a
    command must tell an option given from one left out)."""
    parser.add_argument(flag, choices=SLICE_PROFILES, default=default, help=help)


def add_no_progress_argument(parser: argparse.ArgumentParser, help: str = "no progress bar (stderr)") -> None:
    """``--no-progress``: silence the progress bar of a long command."""
    parser.add_argument("--no-progress", action="store_true", help=help)


class StoreOnce(argparse.Action):
    """``store`` that refuses (exit 2) an option given twice: a second ``--flair`` or ``--input`` is a
    mistake whose first value argparse would silently drop. For options without a default (None)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} given twice: give each input once")
        setattr(namespace, self.dest, values)


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """The routine scans of one session (``--t1``, ``--t2``, ``--flair``), the target grid (``--like`` or
    ``--spacing``), ``--output-dir``, ``--model``, ``--slice-axis``, ``--planes`` and ``--device``: the
    arguments of ``mtsr clinical-sr`` and ``mtsr explain``."""
    parser.add_argument("--t1", type=Path, action=StoreOnce, help="T1-weighted scan")
    parser.add_argument("--t2", type=Path, action=StoreOnce, help="T2-weighted scan")
    parser.add_argument("--flair", type=Path, action=StoreOnce, help="FLAIR scan")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--like", type=Path, help="write on the grid of this volume")
    target.add_argument(
        "--spacing", type=float, help="isotropic voxel size in mm of the output grid (e.g. 1)"
    )
    parser.add_argument(
        "--output-dir", "-o", required=True, type=Path, help="folder for the restored volumes"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help="checkpoint (default: the bundle's model.pt)"
    )
    parser.add_argument(
        "--slice-axis",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="array axis of the output grid to slice along (default: the planes containing the thick axis)",
    )
    parser.add_argument(
        "--planes",
        type=int,
        choices=(1, 2),
        default=2,
        help="without --slice-axis: restore in the 2 planes through the thick axis and average them "
        "(default), or in 1 (half the time)",
    )
    add_device_argument(parser)


def session_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """``{sequence: path}`` of the session's scans given; InputError when there is none, or when one file is
    given as two sequences (a typing slip: the fused model would read one contrast as another)."""
    from mtsr_monai.errors import InputError

    inputs = {m: getattr(args, m) for m in SESSION_SEQUENCES if getattr(args, m) is not None}
    if not inputs:
        raise InputError("give at least one of --t1, --t2, --flair")
    seen: dict[Path, str] = {}
    for m, path in inputs.items():
        key = Path(path).resolve()
        if key in seen:
            raise InputError(f"given as both --{seen[key]} and --{m}: give each sequence its own scan", path)
        seen[key] = m
    return inputs


def file_outputs(*paths: str | Path | None) -> OutputPlan:
    """The output plan of a command that writes the given files (``None``: not written this time)."""
    from mtsr_monai.io.outputs import OutputPlan

    return OutputPlan(files=[Path(p) for p in paths if p is not None])


def folder_outputs(folder: str | Path, names: Iterable[str]) -> OutputPlan:
    """The output plan of a command that writes ``names`` (globs allowed) into ``folder``."""
    from mtsr_monai.io.outputs import OutputPlan

    folder = Path(folder)
    return OutputPlan(files=[folder / n for n in names], folders=[folder])


def print_written(written: Mapping[str, Any]) -> int:
    """Print what a command wrote, one ``key: path`` a line; returns the exit code 0."""
    for key, path in written.items():
        print(f"{key}: {path}")
    return 0
