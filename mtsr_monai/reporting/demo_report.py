"""Figures and the HTML page of ``mtsr demo``.

``figures/sr_comparison.png``: input, bicubic, SR and ground truth side by side, zoomed, with the error maps;
``figures/translation.png``: the SR input, the mean and spread of the translations and the demo target;
``run/montage.png`` (written by ``mtsr run``): input, SR, every sample and the spread. The page links them
by paths relative to itself and names every file relative to the output folder (shipped weights relative
to the bundles folder), so the folder can be moved or shared as it is.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.reporting.figures import axial_montage, sr_comparison_figure
from mtsr_monai.reporting.views import CONVENTION, centre_point
from mtsr_monai.transforms.intensity import robust_scale

__all__ = ["demo_figures", "demo_html", "shown_path"]


def shown_path(
    path: str | os.PathLike, out: str | os.PathLike, bundles: str | os.PathLike | None = None
) -> str:
    """``path`` relative to the output folder ``out`` when inside it, ``bundles/...`` for a file under the
    bundles folder ``bundles`` (a shipped bundle file), else the path as given."""
    p = Path(path).resolve()
    bases = [(Path(out).resolve(), "")] + ([(Path(bundles).resolve(), "bundles/")] if bundles else [])
    for base, prefix in bases:
        if base in p.parents:
            return prefix + p.relative_to(base).as_posix()
    return str(path)


def demo_figures(
    out: Path,
    slab: dict[str, Any],
    arrays: dict[str, Any],
    bicubic: np.ndarray,
    source: str,
    target: str,
    scale: int = 4,
    sr_method: str = "model",
) -> dict[str, Path]:
    """Write ``figures/sr_comparison.png`` and ``figures/translation.png``; return their paths. ``sr_method``:
    what made ``arrays["sr"]`` (``bicubic`` where the SR weights were not found), named in its panel."""

    hr_affine = slab["hr_affine"]
    sr_panel = "SR (model)" if sr_method == "model" else f"SR: {sr_method} (no model)"
    point = centre_point(slab["brain"], hr_affine)
    comparison = sr_comparison_figure(
        [
            (f"input {source} (LR, x{scale} coarser)", slab["lr"], slab["lr_affine"]),
            ("bicubic", bicubic, hr_affine),
            (sr_panel, arrays["sr"], hr_affine),
            ("ground truth", slab["hr"], hr_affine),
        ],
        out / "figures" / "sr_comparison.png",
        truth="ground truth",
        point=point,
        mask=slab["brain"].astype(np.uint8),
        title=f"demo {source}: super-resolution x{scale}",
    )
    n = len(arrays["samples"])
    translation = axial_montage(
        [
            (f"SR {source} (input)", arrays["sr"], hr_affine),
            (f"mean of {n} {target} samples", arrays["mean"], hr_affine),
            (f"std across {n} samples", arrays["std"], hr_affine),
            (f"demo {target} (truth, [0, 1])", robust_scale(slab["truth_b"]).numpy(), hr_affine),
        ],
        out / "figures" / "translation.png",
        title=f"demo: {source} -> {target} translation",
        point=point,
    )
    return {"sr_comparison": comparison, "translation": translation}


def diversity_line(translation: dict[str, Any], lpips: dict[str, Any]) -> str:
    """The samples' diversity (pairwise 1 - SSIM and L1; LPIPS where it is available), "n/a" where a
    measure needs two samples and there is one (0 would read "identical samples")."""
    t = translation

    def shown(key: str) -> str:
        return f"{t[key]:.4f}" if key in t else "n/a (one sample)"

    text = (
        f"Diversity between samples: mean pairwise 1 - SSIM {shown('pairwise_1_minus_ssim')}, mean pairwise "
        f"L1 {shown('pairwise_l1')}. "
    )
    if lpips["available"] and "lpips_realism" in t:
        realism = f"{t['lpips_realism']:.4f}"
        return text + f"LPIPS v0.1 ({lpips['net']}): realism {realism}, diversity {shown('lpips_diversity')}"
    return text + f"LPIPS unavailable: {lpips['reason']}"


def _table(rows: list[tuple[str, float, float]]) -> str:
    cells = (f"<tr><td>{html.escape(n)}</td><td>{p:.2f}</td><td>{s:.4f}</td></tr>" for n, p, s in rows)
    body = "\n".join(cells)
    return f"<table><tr><th>image</th><th>PSNR (dB)</th><th>SSIM</th></tr>\n{body}</table>"


def _figure(src: str, alt: str) -> str:
    """The PNG at its own size (scrolls sideways on a narrow screen rather than shrinking its labels)."""
    return f'<div class="scroll"><img src="{html.escape(src)}" alt="{html.escape(alt)}"></div>'


def demo_html(
    report: dict[str, Any], out: str | os.PathLike, bundles: str | os.PathLike | None = None
) -> str:
    """The self-describing page of a demo run; every path relative to ``out`` (or to the bundles folder
    ``bundles``: :func:`mtsr_monai.inference.bundle.bundles_root`). Over 60 lines: the page's sections
    in reading order, each a few lines of markup."""

    m, src, tgt = report["metrics"], report["source"], report["target"]
    t = m["translation"]
    sr_method = report["super_resolution"]
    if sr_method.startswith("model (") and sr_method.endswith(")"):
        sr_method = f"model ({shown_path(sr_method[7:-1], out, bundles)})"
    sr_rows = [
        (f"SR ({sr_method}) vs true {src}", m["sr"]["psnr"], m["sr"]["ssim"]),
        (f"bicubic vs true {src}", m["bicubic"]["psnr"], m["bicubic"]["ssim"]),
    ]
    mt_rows = [(f"mean of {t['n_samples']} {tgt} samples vs demo {tgt}", t["psnr_mean"], t["ssim_mean"])]
    mt_rows += [
        (f"{tgt} sample {i}", p, s)
        for i, (p, s) in enumerate(zip(t["psnr_samples"], t["ssim_samples"], strict=True))
    ]
    rel = {k: shown_path(v, out, bundles) for k, v in report["figures"].items()}
    weights = shown_path(report["translation_weights"], out, bundles)
    e = html.escape
    # every training FLAIR held a lesion: a model can paint one into a brain that has none (docs/mt.md)
    caution = (
        f'<p class="note">This demo subject has no lesion: any bright, lesion-like area in the {e(tgt)} '
        "samples is invented. Every FLAIR the translation model was trained on holds a glioma or MS lesions, "
        "and earlier weights painted lesions into this brain (docs/mt.md, &ldquo;Sessions 32-34&rdquo;); "
        "the std map does not flag such an area.</p>"
        if tgt == "flair"
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mtsr demo</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.scroll{{overflow-x:auto}}.note{{color:#555}}</style></head><body>
<h1>mtsr demo: {e(src)} LR &rarr; SR &rarr; {e(tgt)}</h1>
<p>Demo subject synthesised from the MNI152 2009a template; {report["slices"]} axial slices, {e(src)} degraded
x{report["scale"]} in-plane (second-order chain, seed 0). Super-resolution: {e(sr_method)}. Translation:
{e(weights)} ({report["translation_training_iterations"]} training iterations; how it was trained, from the
weights file: {e(str(report.get("translation_training") or "not recorded"))}); method
{e(str(report.get("translation_method") or "not recorded"))}, latent codes drawn with seed
{report.get("seed")}.</p>
<p class="note">Every image is shown {e(CONVENTION)}; the letters at the edges give the patient's
directions (R/L right/left, A/P anterior/posterior, S/I superior/inferior).</p>
<h2>Super-resolution against bicubic and the ground truth</h2>
<p>Top: input, bicubic, SR and the true {e(src)} (the cyan square is the zoomed region). Middle: that region
zoomed. Below bicubic and SR: their signed errors (image &minus; truth), whole and zoomed, on one colour
scale: blue darker, red brighter than the truth.</p>
{_figure(rel["sr_comparison"], "input, bicubic, SR and ground truth")}
<p>Metrics inside the brain (PSNR; SSIM of the 2D axial slices):</p>
{_table(sr_rows)}
<h2>Translation to {e(tgt)}</h2>
{_figure(rel["translation"], "SR input, mean and std of the samples, demo target")}
{_figure(shown_path(report["montage"], out, bundles), "input, SR, every sample and their std")}
{caution}
<p>Metrics (2D, axial slices; translations in [0, 1] against the robust-scaled demo image):</p>
{_table(mt_rows)}
<p>{e(diversity_line(t, report["lpips"]))}</p>
<h2>Files</h2>
<p>Run time {report["seconds"]:.1f} s. In this folder: <code>run/</code> (sr, samples, mean, std,
montage.png, summary.json), <code>figures/</code>, <code>lr_{e(src)}.nii.gz</code>,
<code>lr_brain_mask.nii.gz</code>, <code>hr_{e(src)}.nii.gz</code>, <code>subject/</code> (the whole demo
subject), <code>demo.json</code>.</p>
</body></html>
"""
