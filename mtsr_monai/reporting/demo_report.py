"""``mtsr demo`` (:func:`run_demo`): the demo subject through ``mtsr run``, scored against its truth, with
its figures and HTML page.

``figures/sr_comparison.png``: input, bicubic, SR and ground truth side by side, zoomed, with the error maps;
``figures/translation.png``: the SR input, the mean and spread of the translations and the demo target;
``run/montage.png`` (written by ``mtsr run``): input, SR, every sample and the spread. The page links them
by paths relative to itself and names every file relative to the output folder (shipped weights relative
to the bundles folder), so the folder can be moved or shared as it is.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["demo_figures", "demo_html", "run_demo", "shown_path"]


def shown_path(path: str | os.PathLike, out: str | os.PathLike) -> str:
    """``path`` relative to the output folder ``out`` when inside it, ``bundles/...`` for a shipped bundle
    file, else the path as given."""
    from mtsr_monai.inference.bundle import bundles_root

    p = Path(path).resolve()
    for base, prefix in ((Path(out).resolve(), ""), (bundles_root().resolve(), "bundles/")):
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
) -> dict[str, Path]:
    """Write ``figures/sr_comparison.png`` and ``figures/translation.png``; return their paths."""
    from mtsr_monai.reporting.figures import axial_montage, sr_comparison_figure
    from mtsr_monai.reporting.views import centre_point
    from mtsr_monai.transforms.intensity import robust_scale

    hr_affine = slab["hr_affine"]
    point = centre_point(slab["brain"], hr_affine)
    comparison = sr_comparison_figure(
        [
            (f"input {source} (LR, x{scale} coarser)", slab["lr"], slab["lr_affine"]),
            ("bicubic", bicubic, hr_affine),
            ("SR (model)", arrays["sr"], hr_affine),
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


def _table(rows: list[tuple[str, float, float]]) -> str:
    cells = (f"<tr><td>{html.escape(n)}</td><td>{p:.2f}</td><td>{s:.4f}</td></tr>" for n, p, s in rows)
    body = "\n".join(cells)
    return f"<table><tr><th>image</th><th>PSNR (dB)</th><th>SSIM</th></tr>\n{body}</table>"


def _figure(src: str, alt: str) -> str:
    """The PNG at its own size (scrolls sideways on a narrow screen rather than shrinking its labels)."""
    return f'<div class="scroll"><img src="{html.escape(src)}" alt="{html.escape(alt)}"></div>'


def demo_html(report: dict[str, Any], out: str | os.PathLike) -> str:
    """The self-describing page of a demo run; every path relative to ``out`` (or to the bundles)."""
    from mtsr_monai.reporting.views import CONVENTION

    m, src, tgt = report["metrics"], report["source"], report["target"]
    t = m["translation"]
    sr_method = report["super_resolution"]
    if sr_method.startswith("model (") and sr_method.endswith(")"):
        sr_method = f"model ({shown_path(sr_method[7:-1], out)})"
    sr_rows = [
        (f"SR ({sr_method}) vs true {src}", m["sr"]["psnr"], m["sr"]["ssim"]),
        (f"bicubic vs true {src}", m["bicubic"]["psnr"], m["bicubic"]["ssim"]),
    ]
    mt_rows = [(f"mean of {t['n_samples']} {tgt} samples vs demo {tgt}", t["psnr_mean"], t["ssim_mean"])]
    mt_rows += [
        (f"{tgt} sample {i}", p, s)
        for i, (p, s) in enumerate(zip(t["psnr_samples"], t["ssim_samples"], strict=True))
    ]
    lp = report["lpips"]
    lpips_line = (
        f"LPIPS v0.1 ({lp['net']}): realism {t['lpips_realism']:.4f}, diversity {t['lpips_diversity']:.4f}"
        if lp["available"] and "lpips_realism" in t
        else f"LPIPS unavailable: {lp['reason']}"
    )
    rel = {k: shown_path(v, out) for k, v in report["figures"].items()}
    weights = shown_path(report["translation_weights"], out)
    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mtsr demo</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
.scroll{{overflow-x:auto}}.note{{color:#555}}</style></head><body>
<h1>mtsr demo: {e(src)} LR &rarr; SR &rarr; {e(tgt)}</h1>
<p>Demo subject synthesised from the MNI152 2009a template; {report["slices"]} axial slices, {e(src)} degraded
x{report["scale"]} in-plane (second-order chain, seed 0). Super-resolution: {e(sr_method)}. Translation:
{e(weights)} ({report["translation_training_iterations"]} training iterations on BraTS, CPU: a small
demonstration model).</p>
<p class="note">Every image is shown {e(CONVENTION)}; the letters at the edges give the patient's
directions (R/L right/left, A/P anterior/posterior, S/I superior/inferior).</p>
<h2>Super-resolution against bicubic and the ground truth</h2>
<p>Top: input, bicubic, SR and the true {e(src)} (the cyan square is the zoomed region). Middle: that region
zoomed. Bottom: signed errors (image &minus; truth) of bicubic and SR, whole and zoomed, on one colour
scale: blue darker, red brighter than the truth.</p>
{_figure(rel["sr_comparison"], "input, bicubic, SR and ground truth")}
<p>Metrics over the brain (PSNR) and 2D axial slices (SSIM):</p>
{_table(sr_rows)}
<h2>Translation to {e(tgt)}</h2>
{_figure(rel["translation"], "SR input, mean and std of the samples, demo target")}
{_figure(shown_path(report["montage"], out), "input, SR, every sample and their std")}
<p>Metrics (2D, axial slices; translations in [0, 1] against the robust-scaled demo image):</p>
{_table(mt_rows)}
<p>Diversity between samples: mean pairwise 1 - SSIM {t.get("pairwise_1_minus_ssim", 0):.4f}, mean pairwise
L1 {t.get("pairwise_l1", 0):.4f}. {e(lpips_line)}</p>
<h2>Files</h2>
<p>Run time {report["seconds"]:.1f} s. In this folder: <code>run/</code> (sr, samples, mean, std,
montage.png, summary.json), <code>figures/</code>, <code>lr_{e(src)}.nii.gz</code>,
<code>lr_brain_mask.nii.gz</code>, <code>hr_{e(src)}.nii.gz</code>, <code>subject/</code> (the whole demo
subject), <code>demo.json</code>.</p>
</body></html>
"""


def _demo_slab(
    out: Path, source: str, target: str, slices: int, scale: int, progress: bool
) -> dict[str, Any]:
    """The demo subject's central slab of ``slices`` axial slices, in-plane cropped to a multiple of
    ``scale``, its ``source`` degraded x``scale`` (second-order chain, seed 0) with the brain mask on the LR
    grid; writes ``lr_<source>``, ``lr_brain_mask``, ``hr_<source>`` and ``subject/`` into ``out``."""
    import torch

    from mtsr_monai.data.demo import make_demo_subject
    from mtsr_monai.io import load_volume, save_volume
    from mtsr_monai.transforms.degradation import (
        centre_crop_to_multiple,
        degrade_volume_second_order,
        resampled_affine,
        resolve_axis,
    )

    paths = make_demo_subject(out / "subject", progress=progress)
    src, tgt = load_volume(paths[source]), load_volume(paths[target])
    brain = torch.as_tensor(load_volume(paths["brain_mask"], validate=False).numpy() > 0, dtype=torch.float32)
    affine = np.asarray(src.affine)
    through = resolve_axis(affine, "axial")
    inplane = [k for k in range(3) if k != through]
    # a central slab keeps the CPU demo within its time budget; in-plane crop to a multiple of the scale
    n = src.shape[through]
    start, count = max(0, n // 2 - slices // 2), min(slices, n)
    cropped = []
    for vol in (torch.as_tensor(src.numpy()), torch.as_tensor(tgt.numpy()), brain):
        crop, starts = centre_crop_to_multiple(vol.float().narrow(through, start, count), inplane, scale)
        cropped.append(crop)
    hr, truth_b, brain = cropped
    hr_affine = resampled_affine(affine, {}, {**starts, through: start})
    hr_np = hr.numpy()
    lr, lr_affine = degrade_volume_second_order(hr_np, hr_affine, scale=scale, seed=0)
    # the brain mask on the LR grid (a block is brain when most of it is): the translation model was trained
    # on skull-stripped scans, so the noisy background of the degraded input is masked out
    lr_mask = (
        torch.nn.functional.avg_pool2d(brain.movedim(through, 0)[:, None], scale)[:, 0]
        .movedim(0, through)
        .numpy()
        > 0.5
    )
    save_volume(hr_np, out / f"hr_{source}.nii.gz", hr_affine)
    return {
        "hr": hr_np,
        "hr_affine": hr_affine,
        "truth_b": truth_b,
        "brain": brain.numpy() > 0,
        "lr": lr,
        "lr_affine": lr_affine,
        "through": through,
        "lr_path": save_volume(lr, out / f"lr_{source}.nii.gz", lr_affine),
        "mask_path": save_volume(
            lr_mask.astype(np.uint8), out / "lr_brain_mask.nii.gz", lr_affine, dtype=np.uint8
        ),
    }


def _demo_metrics(slab: dict[str, Any], arrays: dict[str, Any], bicubic: np.ndarray) -> tuple[dict, dict]:
    """``(metrics, lpips status)``: SR and bicubic against the true source (PSNR in the brain, 2D axial
    SSIM), the translations against the demo target scaled to [0, 1] the same way."""
    from mtsr_monai.metrics.image import psnr, ssim
    from mtsr_monai.metrics.perceptual import load_lpips, sample_measures
    from mtsr_monai.transforms.intensity import robust_scale

    hr_np, mask, through = slab["hr"], slab["brain"], slab["through"]
    data_range = float(hr_np.max() - hr_np.min())
    metrics = {
        name: {
            "psnr": psnr(vol, hr_np, mask, data_range),
            "ssim": ssim(vol, hr_np, data_range=data_range, axis=through),
        }
        for name, vol in (("sr", arrays["sr"]), ("bicubic", bicubic))
    }
    truth01 = robust_scale(slab["truth_b"]).numpy()
    lpips_metric, lpips_status = load_lpips()
    samples_axial = np.moveaxis(arrays["samples"], through + 1, 1)
    metrics["translation"] = sample_measures(
        samples_axial, np.moveaxis(truth01, through, 0), lpips_metric=lpips_metric
    )
    return metrics, lpips_status.as_dict()


def run_demo(
    output_dir: str | os.PathLike,
    source: str = "t1",
    target: str = "flair",
    samples: int = 5,
    seed: int = 0,
    slices: int = 8,
    scale: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """``mtsr demo``: demo subject -> slab -> x``scale`` degradation of ``source`` -> :func:`run_pipeline` ->
    metrics against the truth (SR and bicubic vs the true ``source``; samples vs the demo ``target``),
    figures, ``report.html`` and ``demo.json`` in ``output_dir``."""
    from mtsr_monai.inference.pipeline import run_pipeline
    from mtsr_monai.inference.super_resolve import super_resolve_volume
    from mtsr_monai.io import atomic_write_text
    from mtsr_monai.progress import StageBar

    t0 = time.perf_counter()
    out = Path(output_dir)
    slab = _demo_slab(out, source, target, slices, scale, progress)
    summary = run_pipeline(
        slab["lr_path"], source, target, out / "run", samples, seed, scale=scale, progress=progress,
        mask_path=slab["mask_path"],
    )  # fmt: skip
    arrays = summary.pop("_arrays")
    if arrays["sr"].shape != slab["hr"].shape:
        raise RuntimeError(f"SR grid {arrays['sr'].shape} differs from the ground truth's {slab['hr'].shape}")
    with StageBar(3, "demo report", enabled=progress) as bar:
        bar.next("bicubic and metrics")
        bicubic, _ = super_resolve_volume(
            slab["lr"], slab["lr_affine"], method="bicubic", scale=scale, progress=False
        )
        metrics, lpips_status = _demo_metrics(slab, arrays, bicubic)
        bar.next("figures")
        figures = demo_figures(out, slab, arrays, bicubic, source, target, scale)
        report = {
            "source": source,
            "target": target,
            "scale": scale,
            "slices": int(slab["hr"].shape[slab["through"]]),
            "super_resolution": summary["super_resolution"],
            "translation_weights": summary["translation_weights"],
            "translation_training_iterations": summary["translation_training_iterations"],
            "metrics": metrics,
            "lpips": lpips_status,
            "montage": summary["outputs"]["montage"],
            "figures": {k: str(v) for k, v in figures.items()},
            "html": str(out / "report.html"),
        }
        report["seconds"] = time.perf_counter() - t0
        bar.next("report")
        atomic_write_text(out / "report.html", demo_html(report, out))
        atomic_write_text(out / "demo.json", json.dumps(report, indent=1))
    return report
