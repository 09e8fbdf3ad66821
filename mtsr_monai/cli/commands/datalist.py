"""``mtsr datalist``: a decathlon-style datalist (training / validation / test) from a folder of subjects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import SEED, file_outputs

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "datalist"
HELP = "build a decathlon-style datalist JSON (training/validation/test split by subject) from a data folder"
DESCRIPTION = (
    "Find subjects under --root (BraTS 2018-2023 names, IXI, BIDS, or one folder per subject), split them "
    "by subject into training / validation / test (ids sorted, then a permutation seeded by --seed), and "
    "write a JSON readable by monai.data.load_decathlon_datalist. Paths are absolute unless --relative."
)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="data folder")
    parser.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "brats", "ixi", "bids", "folders"],
        help="default: auto-detect",
    )
    parser.add_argument("--output", "-o", required=True, help="datalist JSON to write")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the subject permutation (default 0)")
    parser.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=[0.66, 0.18, 0.16],
        metavar=("TRAIN", "VAL", "TEST"),
        help="split ratios summing to 1 (default 0.66 0.18 0.16, as in the clinical paper)",
    )
    parser.add_argument(
        "--require", type=_csv, default=[], help="keep only subjects having these keys, e.g. t1,flair"
    )
    parser.add_argument(
        "--relative",
        action="store_true",
        help="write paths relative to the datalist's folder (MONAI base_dir)",
    )


def outputs(args: argparse.Namespace) -> OutputPlan:
    return file_outputs(args.output)


def refuse_non_datalist_output(output: Path) -> None:
    """The output must be a ``.json`` file, and an existing one a datalist (one this command wrote, with
    its ``training`` list): a scan, a sidecar or any other file of the dataset is never overwritten."""
    import json

    from mtsr_monai.errors import InputError

    if not output.name.lower().endswith(".json"):
        raise InputError("the datalist is written as JSON: give an output name ending in .json", output)
    if output.is_file():
        try:
            existing = json.loads(output.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            existing = None
        if not (isinstance(existing, dict) and isinstance(existing.get("training"), list)):
            raise InputError("exists and is not a datalist: refusing to overwrite it", output)


def run(args: argparse.Namespace) -> int:
    import json

    from mtsr_monai.data.datalist import build_datalist
    from mtsr_monai.io import atomic_write_text

    output = Path(args.output)
    refuse_non_datalist_output(output)
    base_dir = output.absolute().parent if args.relative else None
    datalist = build_datalist(
        args.root,
        layout=args.layout,
        seed=args.seed,
        ratios=args.ratios,
        require=args.require,
        base_dir=base_dir,
    )
    atomic_write_text(output, json.dumps(datalist, indent=2) + "\n")
    keys = ", ".join(f"{k} {n}" for k, n in datalist["keys"].items())
    print(
        f"{output}: layout {datalist['layout']}, {datalist['numTraining']} training / "
        f"{datalist['numValidation']} validation / {datalist['numTest']} test subjects (keys: {keys})"
    )
    return 0
