"""``mtsr demo``: the whole method on the embedded demo subject, with metrics, a montage and an HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import SAMPLES, SEED, folder_outputs, modality

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "demo"
HELP = "end-to-end demo on the built-in MNI-based subject: degrade T1, SR, translate to FLAIR, report"
DESCRIPTION = (
    "Builds the demo subject from the MNI152 template (mtsr make-demo-data), keeps a slab of --slices axial "
    "slices, degrades its T1 x4 in-plane (second-order chain, seed 0), runs `mtsr run` with the shipped "
    "weights, "
    "prints PSNR/SSIM of SR and bicubic against the true T1 and of the FLAIR samples against the demo FLAIR, "
    "and writes OUT/report.html (input, bicubic, SR and ground truth side by side with zoomed insets and "
    "error maps; the translations), its figures OUT/figures/*.png and OUT/run/montage.png, and OUT/demo.json."
)
#: the fewest axial slices of the slab (a volume of one slice cannot be written)
MIN_SLICES = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-dir", "-o", type=Path, default=Path("mtsr_demo"), help="default ./mtsr_demo"
    )
    parser.add_argument(
        "--source", default="t1", type=modality, help="contrast degraded and translated (default t1)"
    )
    parser.add_argument(
        "--target", default="flair", type=modality, help="contrast translated to (default flair)"
    )
    parser.add_argument("--samples", "-n", type=SAMPLES, default=5, help="translations (default 5)")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the latent codes (default 0)")
    parser.add_argument(
        "--slices",
        type=int,
        default=8,
        help=f"axial slices of the slab processed (speed; default 8, at least {MIN_SLICES})",
    )


def outputs(args: argparse.Namespace) -> OutputPlan:
    names = (
        f"lr_{args.source}.nii.gz",
        "lr_brain_mask.nii.gz",
        f"hr_{args.source}.nii.gz",
        "demo.json",
        "report.html",
        "subject/*.nii.gz",
        "run/*",
        "figures/*.png",
    )
    return folder_outputs(args.output_dir, names)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad arguments before the demo writes anything (its subject comes first)."""
    from mtsr_monai.data.demo import CONTRASTS
    from mtsr_monai.errors import InputError

    if args.slices < MIN_SLICES:
        raise InputError(f"--slices must be >= {MIN_SLICES}, got {args.slices}")
    for flag, contrast in (("--source", args.source), ("--target", args.target)):
        if contrast not in CONTRASTS:
            raise InputError(f"{flag} {contrast!r}: the demo subject has {', '.join(CONTRASTS)}")
    from mtsr_monai.inference.translate import prepare_translation

    # the pair's weights, --samples and --seed, checked as the translation will check them once written
    prepare_translation(args.source, args.target, samples=args.samples, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from mtsr_monai.inference.pipeline import run_demo
    from mtsr_monai.reporting.demo_report import diversity_line

    _check_arguments(args)
    report = run_demo(args.output_dir, args.source, args.target, args.samples, args.seed, args.slices)
    m = report["metrics"]
    print(
        f"SR ({report['super_resolution']}) vs ground truth {args.source}: "
        f"PSNR {m['sr']['psnr']:.2f} dB, SSIM {m['sr']['ssim']:.4f}"
    )
    print(
        f"bicubic vs ground truth {args.source}: PSNR {m['bicubic']['psnr']:.2f} dB, "
        f"SSIM {m['bicubic']['ssim']:.4f}"
    )
    t = m["translation"]
    print(
        f"{args.target} samples (seed {report['seed']}) vs demo {args.target}: PSNR of mean "
        f"{t['psnr_mean']:.2f} dB, SSIM of mean {t['ssim_mean']:.4f}"
    )
    print(diversity_line(t, report["lpips"]))  # "n/a" with one sample, as the page
    figures = ", ".join([report["montage"], *report["figures"].values()])
    print(f"figures: {figures}\nreport:  {report['html']}\n({report['seconds']:.0f} s)")
    return 0
