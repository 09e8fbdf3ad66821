"""``mtsr qc``: MRIQC-style image-quality metrics of one volume, as flat JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mtsr_monai.cli.arguments import StoreOnce, add_no_progress_argument, file_outputs, output_volume

if TYPE_CHECKING:  # the plan type only; the CLI imports io lazily
    from mtsr_monai.io.outputs import OutputPlan

NAME = "qc"
HELP = "image-quality metrics (CJV, EFC, FWHM, WM2max, SNR, CNR, tissue summaries) of one volume"
DESCRIPTION = (
    "Compute no-reference image-quality metrics of one brain MRI volume, the MRIQC way by default "
    "(--variant paper: the clinical SR paper's mean/sd CJV, un-normalised EFC, 95th-percentile WM2max). "
    "Tissues (1 CSF, 2 GM, 3 WM) come from --tissues or from an EM Gaussian-mixture segmentation inside "
    "the brain mask; the brain mask from --mask, else image > 0 on skull-stripped images, else Otsu + "
    "largest component + hole filling. Writes flat JSON with lower-case keys to --json (or stdout)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", "-i", required=True, type=Path, action=StoreOnce, help="NIfTI / NRRD / MHA volume"
    )
    parser.add_argument("--mask", type=Path, help="brain mask on the input's grid (non-zero = brain)")
    parser.add_argument("--tissues", type=Path, help="label map on the input's grid: 1 CSF, 2 GM, 3 WM")
    parser.add_argument("--json", type=Path, help="output JSON (default: print to stdout)")
    parser.add_argument(
        "--variant", choices=("mriqc", "paper"), default="mriqc", help="formula set (default mriqc)"
    )
    parser.add_argument(
        "--contrast",
        choices=("t1", "t1ce", "t2", "pd", "flair"),
        help="contrast of the input, names the EM classes (default: guessed from the file name, else t1)",
    )
    parser.add_argument(
        "--classes",
        type=int,
        choices=(3, 4),
        default=3,
        help="EM classes: 3 (CSF, GM, WM) or 4 (+ pial / partial volume); default 3",
    )
    parser.add_argument(
        "--priors",
        action="store_true",
        help="use the MNI152 GM/WM maps as spatial priors (input must be registered to MNI space)",
    )
    parser.add_argument(
        "--save-tissues", type=output_volume, help="also write the tissue label map used (uint8 NIfTI)"
    )
    add_no_progress_argument(parser)


def outputs(args: argparse.Namespace) -> OutputPlan:
    return file_outputs(args.json, args.save_tissues)


def _read(args: argparse.Namespace):
    """``(data, affine, brain or None, tissues or None)`` of the input, mask and tissue map (one grid)."""
    import numpy as np

    from mtsr_monai.io import check_same_grid, load_volume

    image = load_volume(args.input)
    affine = np.asarray(image.affine)
    data = image.numpy()
    shapes, affines, paths = [data.shape], [affine], [args.input]
    brain = tissues = None
    if args.mask is not None:
        m = load_volume(args.mask, validate=False)
        shapes.append(m.shape), affines.append(np.asarray(m.affine)), paths.append(args.mask)
        brain = m.numpy() != 0  # any non-zero value is brain, as the help says
    if args.tissues is not None:
        t = load_volume(args.tissues, validate=False)
        shapes.append(t.shape), affines.append(np.asarray(t.affine)), paths.append(args.tissues)
        tissues = np.rint(t.numpy()).astype(np.int16)
    check_same_grid(shapes, affines, paths)
    return data, affine, brain, tissues


def _segment(args: argparse.Namespace, data, affine, brain, contrast: str):
    """The EM tissue map (1 CSF, 2 GM, 3 WM) of the input inside ``brain``."""
    from mtsr_monai.errors import InputError
    from mtsr_monai.metrics.segmentation import segment_tissues, template_priors

    priors = template_priors(data.shape, affine, brain) if args.priors else None
    try:
        return segment_tissues(data, brain, (contrast,), n_classes=args.classes, priors=priors)
    except ValueError as err:
        raise InputError(f"tissue segmentation failed: {err}", args.input) from err


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    import numpy as np

    from mtsr_monai.errors import InputError
    from mtsr_monai.io import atomic_write_text, nifti_space, save_volume, voxel_sizes
    from mtsr_monai.metrics import qc
    from mtsr_monai.metrics.segmentation import guess_contrast
    from mtsr_monai.progress import StageBar

    # EM segmentation and the IQMs take minutes on a large volume: show which stage runs
    with StageBar(4, "qc", enabled=not args.no_progress) as bar:
        bar.next("read")
        data, affine, brain, tissues = _read(args)
        bar.next("brain mask")
        if brain is None:
            brain = (tissues > 0) if tissues is not None else qc.default_brain_mask(data)
        if brain.sum() < 100:
            # named after what made the mask: the --mask file, the --tissues map, or the input's own estimate
            raise InputError("brain mask has fewer than 100 voxels", args.mask or args.tissues or args.input)
        contrast = args.contrast or guess_contrast(args.input.name)
        bar.next("tissue segmentation (EM)" if tissues is None else "tissue map")
        if tissues is None:
            tissues = _segment(args, data, affine, brain, contrast)
        for name, label in qc.LABELS.items():
            if not np.any(tissues == label):
                where = args.tissues or args.input
                raise InputError(f"no {name.upper()} voxels (label {label}) in the tissue map", where)
        bar.next("IQMs")
        result = qc.compute_iqms(data, tissues, brain, voxel_sizes(affine), args.variant)
    result = {
        "input": str(args.input),
        "contrast": contrast,
        "tissues_source": str(args.tissues) if args.tissues else "em",
        **result,
    }
    result = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in result.items()}
    text = json.dumps(result, indent=2, allow_nan=False, default=float) + "\n"
    if args.save_tissues is not None:
        space = nifti_space(args.input)
        save_volume(tissues.astype(np.uint8), args.save_tissues, affine=affine, dtype=np.uint8, space=space)
    if args.json is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(args.json, text)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
