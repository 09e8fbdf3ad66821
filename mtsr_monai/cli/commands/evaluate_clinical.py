"""``mtsr evaluate-clinical``: clinical-usability report of restored volumes against references."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import folder_outputs

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "evaluate-clinical"
HELP = "HTML + JSON report: IQM differences, fidelity, tissue agreement, volumes, Bland-Altman, montages"
DESCRIPTION = (
    "Compare restored volumes (--pred-dir) and optional baselines (--baseline-dir, repeatable; e.g. "
    "interpolation) with high-resolution references (--ref-dir). Files are matched by their path relative "
    "to each folder (e.g. <subject>/flair.nii.gz or <subject>_flair.nii.gz). Per subject and method: IQMs "
    "and their differences to the reference's (tissue masks of the reference), MAE/PSNR/SSIM, EM tissue "
    "segmentation agreement (Dice, Jaccard, TPF, PPV, TNF) and volumes; over subjects: Bland-Altman plots "
    "per tissue. With --labels-dir (BraTS seg or GT_W) and FLAIR inputs: the hyperintensity rule's Dice "
    "against the whole tumour. Writes OUTPUT/index.html, OUTPUT/report.json and OUTPUT/figures/."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred-dir", required=True, type=Path, help="restored volumes (the method under test)"
    )
    parser.add_argument("--ref-dir", required=True, type=Path, help="high-resolution reference volumes")
    parser.add_argument(
        "--baseline-dir",
        action="append",
        default=[],
        type=Path,
        help="another method (repeatable), e.g. trilinear interpolation",
    )
    parser.add_argument(
        "--names", nargs="+", help="method names, pred first then baselines (default: folder names)"
    )
    parser.add_argument(
        "--labels-dir", type=Path, help="lesion / tumour labels (BraTS *seg* or GT_W), label > 0"
    )
    parser.add_argument("--output", "-o", required=True, type=Path, help="report folder")
    parser.add_argument(
        "--contrast",
        choices=("t1", "t1ce", "t2", "pd", "flair"),
        help="contrast (default: guessed from each reference file name)",
    )
    parser.add_argument(
        "--classes", type=int, choices=(3, 4), default=3, help="EM classes (4 adds pial); default 3"
    )
    parser.add_argument(
        "--variant", choices=("mriqc", "paper"), default="mriqc", help="IQM formulas (default mriqc)"
    )


def outputs(args: argparse.Namespace) -> OutputPlan:
    return folder_outputs(args.output, ("index.html", "report.json", "figures/*.png"))


def run(args: argparse.Namespace) -> int:
    import sys

    from mtsr_monai.reporting.clinical import evaluate_clinical

    report = evaluate_clinical(
        args.pred_dir,
        args.ref_dir,
        args.output,
        baseline_dirs=args.baseline_dir,
        names=args.names,
        labels_dir=args.labels_dir,
        contrast=args.contrast,
        n_classes=args.classes,
        variant=args.variant,
    )
    for subject in report["subjects"]:
        for warning in subject["warnings"]:
            print(f"mtsr evaluate-clinical: warning: {subject['key']}: {warning}", file=sys.stderr)
    print(
        f"wrote {args.output / 'index.html'} and report.json ({len(report['subjects'])} subjects)",
        file=sys.stderr,
    )
    return 0
