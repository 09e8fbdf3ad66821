"""``mtsr make-demo-data``: write the embedded demo subject (T1w, T2w, FLAIR, PD, brain mask)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import add_no_progress_argument, folder_outputs

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "make-demo-data"
HELP = (
    "write a deterministic demo subject (t1, t2, flair, pd, brain_mask) synthesised from the MNI152 template"
)
DESCRIPTION = (
    "Synthesise T1w, T2w, PD (spin echo) and FLAIR (inversion recovery) images from the MNI152 2009a "
    "tissue maps and literature relaxation times at 3 T, and write DIR/{t1,t2,flair,pd,brain_mask}.nii.gz "
    "on the template's 1 mm grid. Times in ms; FLAIR's TI defaults to the CSF null point."
)

#: (contrast, parameter) pairs exposed as --tr-t1 ... --ti-flair
PARAMETERS = [
    ("t1", "tr"),
    ("t1", "te"),
    ("t2", "tr"),
    ("t2", "te"),
    ("pd", "tr"),
    ("pd", "te"),
    ("flair", "tr"),
    ("flair", "te"),
    ("flair", "ti"),
]
DEFAULTS_MS = {"t1": (500, 10), "t2": (4000, 100), "pd": (5000, 15), "flair": (9000, 100)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", "-o", required=True, type=Path, help="folder to write the five files into"
    )
    add_no_progress_argument(parser)
    group = parser.add_argument_group("sequence parameters (ms)")
    for contrast, param in PARAMETERS:
        if param == "ti":
            default = "CSF null point"
        else:
            default = DEFAULTS_MS[contrast][0 if param == "tr" else 1]
        group.add_argument(
            f"--{param}-{contrast}",
            type=float,
            default=None,
            metavar="MS",
            help=f"{param.upper()} of the {contrast.upper()} image (default {default})",
        )


def outputs(args: argparse.Namespace) -> OutputPlan:
    return folder_outputs(args.output, [f"{n}.nii.gz" for n in ("t1", "t2", "flair", "pd", "brain_mask")])


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.data.demo import make_demo_subject
    from mtsr_monai.errors import InputError

    if args.output.exists() and not args.output.is_dir():
        raise InputError("exists and is not a folder", args.output)
    overrides = {f"{p}_{c}": getattr(args, f"{p}_{c}") for c, p in PARAMETERS}
    try:
        from mtsr_monai.data.demo import resolve_sequences

        resolve_sequences(**overrides)  # refuse bad times before the slow part
    except ValueError as err:
        raise InputError(str(err)) from err
    paths = make_demo_subject(args.output, progress=not args.no_progress, **overrides)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
