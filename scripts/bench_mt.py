#!/usr/bin/env python
"""Modality translation on whole volumes: BicycleGAN samples vs the tissue-lookup and identity baselines.

For every subject of a split (``scripts/shared_splits.py``: ``--split test`` = the held-out subjects, for
final reports only; ``--split validation`` for choices) that has both contrasts of a direction:

- the source volume is translated by ``translate_volume`` (the CLI's path) with ``--samples`` seeded codes;
  the baselines are ``identity`` (the source, scaled) and ``tissue-lookup`` (``bundles/mtsr_mt/models/
  tissue_lookup.json``, fitted on training subjects only);
- everything is scored inside the brain (the source's non-zero voxels) against the real target after the
  same robust scaling to [0, 1]: PSNR (data range 1) and SSIM (2D axial, masked); per sample, for the mean
  of the samples, and the diversity (mean pairwise 1 - SSIM between samples, inside the brain);
- ``--montage DIR`` writes, per subject and direction, a PNG of one axial slice: input, real target, the
  samples, their mean, their per-voxel std (with a colour bar) and tissue-lookup, displayed in radiological
  convention (patient's right on the image's left) from the affine, with orientation letters.

Usage: python scripts/bench_mt.py [--split test] [--directions t1:flair t1:t2] [--samples 5]
       [--weights-dir bundles/mtsr_mt/models] [--json out.json] [--montage DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def score(pred: np.ndarray, ref: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """PSNR / SSIM inside the brain, and ``psnr_level_matched``: the PSNR after one gain that gives the
    prediction the reference's brain median (a score of structure and contrast; the global level of a
    robust-scaled target, set by its own 99.5 % level, is not predictable from the source)."""
    from mtsr_monai.metrics.image import psnr, ssim

    level = float(np.median(pred[brain]))
    gain = float(np.median(ref[brain])) / level if level > 0 else 1.0
    return {
        "psnr": psnr(pred, ref, brain, 1.0),
        "ssim": ssim(pred, ref, brain, 1.0, axis=2),
        "psnr_level_matched": psnr(pred * gain, ref, brain, 1.0),
    }


def diversity(samples: np.ndarray, brain: np.ndarray) -> float:
    """Mean pairwise 1 - SSIM between samples (N, H, W, S), inside the brain."""
    from mtsr_monai.metrics.perceptual import sample_measures

    return sample_measures(samples, mask=brain, slice_axis=2)["pairwise_1_minus_ssim"]


def montage(panels: dict[str, np.ndarray], affine: np.ndarray, path: Path, title: str) -> None:
    """The panels' axial slice with the most brain (of the first panel), radiological, pixels scaled to the
    voxel size; std maps in magma with a labelled colour bar."""
    from mtsr_monai.reporting.views import canonical, colour_bar, pyplot, save_figure, show_plane

    names = list(panels)
    ras, ras_affine = canonical(panels[names[0]], affine)
    k = int(np.argmax((ras > 0).sum(axis=(0, 1))))
    point = (ras_affine @ [(ras.shape[0] - 1) / 2, (ras.shape[1] - 1) / 2, k, 1.0])[:3]
    fig, axes = pyplot().subplots(2, (len(names) + 1) // 2, figsize=(2.6 * ((len(names) + 1) // 2), 6.2))
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        is_std = name.startswith("std")
        window = {"cmap": "magma", "vmin": 0} if is_std else {"vmin": 0, "vmax": 1}
        shown = show_plane(ax, panels[name], affine, "axial", point, **window)
        ax.set_title(name, fontsize=9)
        if is_std:
            colour_bar(ax, shown, "std across samples")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def evaluate_subject(subject: dict, source: str, target: str, args, generator, meta, lookup) -> dict:
    """Scores of one subject and direction (and its montage when asked)."""
    import torch

    from mtsr_monai.inference.tissue_lookup import identity_translate, tissue_lookup_translate
    from mtsr_monai.inference.translate import (
        latent_codes,
        sample_statistics,
        translate_volume,
        volume_settings,
    )
    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.intensity import robust_scale

    image = load_volume(subject[source])
    src, affine = image.numpy().astype(np.float32), np.asarray(image.affine)
    ref = robust_scale(torch.as_tensor(load_volume(subject[target]).numpy())).numpy()
    brain = src > 0
    codes = latent_codes(args.samples, int(meta["nz"]), args.seed, meta.get("code_prior"))
    samples = translate_volume(
        src, affine, generator, int(meta["image_size"]), codes, progress=False,
        **volume_settings(meta),
    )  # fmt: skip
    mean, std = sample_statistics(samples)
    lookup_out = tissue_lookup_translate(src, source, lookup)
    row = {
        "subject": subject["subject"],
        "identity": score(identity_translate(src), ref, brain),
        "tissue_lookup": score(lookup_out, ref, brain),
        "samples": [score(s, ref, brain) for s in samples],
        "mean": score(mean, ref, brain),
        "diversity_1_minus_ssim": diversity(samples, brain),
        "std_in_brain": float(std[brain].mean()),
    }
    if args.montage:
        panels = {"input " + source: identity_translate(src), "real " + target: ref}
        panels.update({f"sample {i}": s for i, s in enumerate(samples)})
        panels.update({"mean": mean, "std": std, "tissue-lookup": lookup_out})
        name = f"{subject['subject']}_{source}_to_{target}.png"
        montage(panels, affine, args.montage / name, f"{subject['subject']}: {source} -> {target}")
    return row


def main(argv: list[str] | None = None) -> int:
    import torch
    from shared_splits import split_of, subjects

    from mtsr_monai.inference.tissue_lookup import load_tissue_lookup
    from mtsr_monai.inference.translate import load_translator

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="test", choices=("test", "validation"))
    p.add_argument("--directions", nargs="+", default=["t1:flair", "t1:t2"])
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights-dir", type=Path, default=REPO / "bundles" / "mtsr_mt" / "models")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--montage", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {}
    for direction in args.directions:
        source, target = direction.split(":")
        generator, meta = load_translator(args.weights_dir / f"{source}_to_{target}.pt")
        lookup = load_tissue_lookup(source, target, args.weights_dir / "tissue_lookup.json")
        chosen = [
            s for s in subjects() if split_of(s["subject"]) == args.split and source in s and target in s
        ]
        rows = [evaluate_subject(s, source, target, args, generator, meta, lookup) for s in chosen]
        for r in rows:
            worst = min(s["psnr"] for s in r["samples"])
            print(
                f"{direction} {r['subject']}: mean {r['mean']['psnr']:.2f} dB / {r['mean']['ssim']:.3f}, "
                f"lookup {r['tissue_lookup']['psnr']:.2f} / {r['tissue_lookup']['ssim']:.3f}, "
                f"identity {r['identity']['psnr']:.2f} / {r['identity']['ssim']:.3f}, "
                f"level-matched PSNR mean {r['mean']['psnr_level_matched']:.2f}, "
                f"lookup {r['tissue_lookup']['psnr_level_matched']:.2f}, "
                f"identity {r['identity']['psnr_level_matched']:.2f}, "
                f"worst sample {worst:.2f}, diversity {r['diversity_1_minus_ssim']:.4f}",
                flush=True,
            )
        report[direction] = {
            "weights_meta": {k: v for k, v in meta.items() if k != "validation"},
            "rows": rows,
        }
    text = json.dumps(report, indent=2)
    if args.json:
        from mtsr_monai.io import atomic_write_text  # creates the folder; no partial file

        atomic_write_text(args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
