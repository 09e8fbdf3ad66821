#!/usr/bin/env python
"""Does a translation into FLAIR paint lesions where there are none?

Every FLAIR the T1 -> FLAIR model trained on (BraTS, TCGA) holds a glioma. This script finds where an image
is **lesion-like**: brighter than its normal tissue by more than ``--delta`` times its brain median, normal
tissue being the tissue lookup of the same T1 (CSF, GM, WM classes painted with FLAIR levels) brought to the
image's brain median; an opening drops single voxels. On the real FLAIRs of the training subjects this
finds 0.6-0.9 of the labelled tumour at ``--delta 0.5`` (it calls 0-20 mL outside the label lesion-like too:
oedema the label misses, vessels).

- BraTS subjects of ``--split`` (``scripts/shared_splits.py``) with a T1, a FLAIR and a tumour label: the
  lesion-like volume **outside** the label (dilated by ``--margin`` voxels) and the share of the label found,
  in the real FLAIR and in the mean of ``--samples`` samples;
- ``--healthy T1 ...``: T1s of brains without a lesion (IXI002, say): every lesion-like voxel is invented;
- ``--demo``: the same for the embedded demo subject (MNI152-based, no lesion), with its synthetic FLAIR.

``--figure F`` draws, for the brains without a lesion, the T1 and the samples' mean at the axial slice with
the most lesion-like volume, outlined (with none, the slice with the most excess past half ``--delta`` among
those with at least half the largest brain area). Usage:

    python scripts/mt_false_hyperintensities.py --split validation --demo \
        --healthy ../shared/data/ixi002_cai4cai_hdbet/hd_bet_IXI002-Guys-0828-T1.nii.gz --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def tissue_excess(image: np.ndarray, normal: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """How far ``image`` lies above its ``normal`` tissue (the tissue lookup given the image's brain median),
    in units of that median (0 outside the brain)."""
    median = float(np.median(image[brain]))
    excess = (image - normal * median / max(float(np.median(normal[brain])), 1e-6)) / max(median, 1e-6)
    return np.where(brain, excess, 0.0)


def lesion_like(image: np.ndarray, normal: np.ndarray, brain: np.ndarray, delta: float) -> np.ndarray:
    """Brain voxels whose :func:`tissue_excess` passes ``delta``; single voxels dropped (an opening)."""
    from scipy import ndimage

    return ndimage.binary_opening(brain & (tissue_excess(image, normal, brain) > delta))


def translated(t1_path: str, samples: int, seed: int, weights_dir: Path) -> dict[str, np.ndarray]:
    """The T1 (scaled), the mean of ``samples`` FLAIR samples (the CLI's path) and the tissue lookup."""
    # lazy: torch and MONAI load only once the arguments are read
    from mtsr_monai.inference.tissue_lookup import (
        identity_translate,
        load_tissue_lookup,
        tissue_lookup_translate,
    )
    from mtsr_monai.inference.translate import (
        latent_codes,
        load_translator,
        sample_statistics,
        translate_volume,
        volume_settings,
    )
    from mtsr_monai.io import load_volume

    generator, meta = load_translator(weights_dir / "t1_to_flair.pt")
    image = load_volume(t1_path)
    src, affine = image.numpy().astype(np.float32), np.asarray(image.affine)
    codes = latent_codes(samples, int(meta["nz"]), seed, meta.get("code_prior"))
    out = translate_volume(
        src, affine, generator, int(meta["image_size"]), codes, progress=False, **volume_settings(meta)
    )
    lookup = tissue_lookup_translate(
        src, "t1", load_tissue_lookup("t1", "flair", weights_dir / "tissue_lookup.json")
    )
    return {
        "t1": identity_translate(src),
        "model": sample_statistics(out)[0],
        "lookup": lookup,
        "affine": affine,
    }


def millilitres(mask: np.ndarray, affine: np.ndarray) -> float:
    return float(mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


def lesioned_row(subject: dict, args) -> dict:
    """Invented (outside the dilated label) and found (inside the label) lesion-like volume of one BraTS
    subject, in its real FLAIR and in the samples' mean."""
    import torch
    from scipy import ndimage

    # lazy: torch and MONAI load only once the arguments are read
    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.intensity import robust_scale

    images = translated(subject["t1"], args.samples, args.seed, args.weights_dir)
    images["real"] = robust_scale(torch.as_tensor(load_volume(subject["flair"]).numpy())).numpy()
    brain, affine = images["t1"] > 0, images["affine"]
    lesion = load_volume(subject["label"], validate=False).numpy() > 0
    outside = brain & ~ndimage.binary_dilation(lesion, iterations=args.margin)
    row = {"subject": subject["subject"], "lesion_ml": millilitres(lesion, affine)}
    for name in ("real", "model"):
        found = lesion_like(images[name], images["lookup"], brain, args.delta)
        row[f"{name}_outside_label_ml"] = millilitres(found & outside, affine)
        row[f"{name}_label_found"] = round(float((found & lesion).sum() / max(int(lesion.sum()), 1)), 3)
    return row


def healthy_row(name: str, t1_path: str, args, flair_path: str | None = None) -> tuple[dict, dict]:
    """Lesion-like volume of a brain without a lesion (all of it invented), in the samples' mean (and in
    its real FLAIR when there is one), and the arrays for the figure."""
    images = translated(t1_path, args.samples, args.seed, args.weights_dir)
    brain, affine = images["t1"] > 0, images["affine"]
    images["invented"] = lesion_like(images["model"], images["lookup"], brain, args.delta)
    images["excess"] = tissue_excess(images["model"], images["lookup"], brain)
    row = {"subject": name, "model_invented_ml": millilitres(images["invented"], affine)}
    if flair_path is not None:
        import torch

        # lazy: torch and MONAI load only once the arguments are read
        from mtsr_monai.io import load_volume
        from mtsr_monai.transforms.intensity import robust_scale

        real = robust_scale(torch.as_tensor(load_volume(flair_path).numpy())).numpy()
        row["real_invented_ml"] = millilitres(lesion_like(real, images["lookup"], brain, args.delta), affine)
    return row, images


def figure_slice(weight: np.ndarray, brain: np.ndarray, min_brain_share: float = 0.0) -> int:
    """Axial index (RAS arrays) of the largest ``weight`` sum among the slices whose brain area is at least
    ``min_brain_share`` of the largest: a brain's end slices, a few voxels of tissue whose excess is large
    by partial volume, then give way to a slice a reader can place."""
    area = brain.sum(axis=(0, 1))
    totals = np.where(area >= min_brain_share * area.max(), weight.sum(axis=(0, 1)), -1.0)
    return int(np.argmax(totals))


def figure(cases: dict[str, dict], path: Path, delta: float) -> None:
    """T1 and the samples' mean of each healthy brain at its axial slice with the most lesion-like volume
    (or the largest excess), radiological from the affine, the lesion-like voxels outlined in red."""
    # lazy: matplotlib only when a figure is asked for
    from mtsr_monai.reporting.views import canonical, plane_image, pyplot, save_figure, show_plane

    plt = pyplot()
    fig, axes = plt.subplots(len(cases), 2, figsize=(7, 3.8 * len(cases)), squeeze=False)
    for row, (name, images) in zip(axes, cases.items(), strict=True):
        false, affine = images["invented"].astype(np.float32), images["affine"]
        ras_brain, ras_affine = canonical(images["t1"] > 0, affine)
        if false.any():
            k = figure_slice(canonical(false, affine)[0], ras_brain)
        else:  # nothing past delta: where the excess past delta / 2 is largest
            excess = np.clip(images["excess"] - delta / 2, 0, None).astype(np.float32)
            k = figure_slice(canonical(excess, affine)[0], ras_brain, min_brain_share=0.5)
        point = (ras_affine @ np.array([ras_brain.shape[0] / 2, ras_brain.shape[1] / 2, k, 1.0]))[:3]
        for ax, key, title in ((row[0], "t1", "T1 (input)"), (row[1], "model", "FLAIR, mean of the samples")):
            show_plane(ax, images[key], affine, "axial", point, vmin=0, vmax=1)
            if key == "model":
                ax.contour(plane_image(false, affine, "axial", point)[0], [0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{name}: {title}", fontsize=9)
    fig.suptitle(
        f"brains without a lesion, T1 -> FLAIR; red: lesion-like (above normal tissue by {delta} x median)",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    from shared_splits import split_of, subjects

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="validation", choices=("training", "validation", "test", "none"))
    parser.add_argument("--healthy", nargs="*", default=[], help="T1s of brains without a lesion")
    parser.add_argument("--demo", action="store_true", help="also the embedded demo subject")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delta", type=float, default=0.5, help="lesion-like: above normal + delta x median")
    parser.add_argument("--margin", type=int, default=3, help="voxels the tumour label is dilated by")
    parser.add_argument("--weights-dir", type=Path, default=REPO / "bundles" / "mtsr_mt" / "models")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args(argv)
    rows, cases = [], {}
    for subject in subjects():
        if split_of(subject["subject"]) == args.split and {"t1", "flair", "label"} <= subject.keys():
            rows.append(lesioned_row(subject, args))
            print(json.dumps(rows[-1]), flush=True)
    healthy = [(Path(p).name.split(".")[0], p) for p in args.healthy]
    with tempfile.TemporaryDirectory() as work:
        if args.demo:
            # lazy: the template's tissue maps only for --demo
            from mtsr_monai.data.demo import make_demo_subject

            demo = make_demo_subject(work)
            healthy.append(("demo subject", str(demo["t1"]), str(demo["flair"])))
        for name, path, *flair in healthy:
            row, cases[name] = healthy_row(name, path, args, *flair)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"delta": args.delta, "margin": args.margin, "rows": rows}, indent=1))
    if args.figure and cases:
        figure(cases, args.figure, args.delta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
