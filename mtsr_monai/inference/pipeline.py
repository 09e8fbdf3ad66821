"""MTSR-MRI's full method F = F2 o F1: super-resolution in modality A, then N translations to modality B.

``run_pipeline`` (``mtsr run``) computes everything in memory first and writes only when all steps succeeded:
``sr.nii.gz`` (F1, on the x``scale`` in-plane grid), ``sample_0..N-1.nii.gz``, ``mean.nii.gz``, ``std.nii.gz``
(per-voxel spread across samples), ``montage.png`` (input, SR, samples, std on one slice) and
``summary.json``. The SR step uses the SR bundle's shipped weights when they exist and says so; without them
it falls back to bicubic interpolation and the summary records that (never silently).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtsr_monai.errors import InputError


def sr_weights_path() -> Path:
    """The SR weights: ``$MTSR_SR_WEIGHTS``, else the SR bundle's ``models/model.pt`` (under
    :func:`mtsr_monai.inference.bundle.bundles_root`)."""
    from mtsr_monai.inference.bundle import bundles_root

    env = os.environ.get("MTSR_SR_WEIGHTS")
    return Path(env) if env else bundles_root() / "mtsr_sr" / "models" / "model.pt"


def load_sr_network(device: str = "cpu") -> tuple[torch.nn.Module | None, str]:
    """(network or None, description). The network is built from the SR bundle's own ``inference.yaml``
    (``network_def``) and loaded from :func:`sr_weights_path` (sha256-checked when shipped); without weights
    the caller falls back to bicubic and says so."""
    from mtsr_monai.inference.bundle import load_bundle_network

    path = sr_weights_path()
    if not path.is_file():
        return None, f"bicubic (SR weights not found: {path})"
    network, _ = load_bundle_network("mtsr_sr", device=device, weights=path)
    return network, f"model ({path})"


def super_resolve(
    volume: np.ndarray,
    affine: np.ndarray,
    scale: int = 4,
    method: str = "auto",
    device: str = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, str]:
    """F1: (sr volume, sr affine, description of the method used)."""
    from mtsr_monai.inference.super_resolve import super_resolve_volume

    network, description = (None, method) if method != "auto" else load_sr_network(device)
    used = "model" if network is not None else ("bicubic" if method == "auto" else method)
    sr, sr_aff = super_resolve_volume(
        volume, affine, method=used, network=network, scale=scale, device=device, progress=progress
    )
    return sr, sr_aff, description


def central_slice(volume: np.ndarray, axis: int, index: int | None = None) -> np.ndarray:
    k = volume.shape[axis] // 2 if index is None else index
    return np.take(volume, k, axis=axis)


def save_montage(panels: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, title: str = "") -> Path:
    """One row of 2D panels (rotated so anterior is up) written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtsr_monai.io import atomic_output

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.8), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, panels, strict=False):
        img = np.rot90(np.asarray(img, dtype=np.float32))
        vmax = float(np.percentile(img, 99.5)) if img.any() else 1.0
        ax.imshow(
            img,
            cmap="magma" if name.startswith("std") else "gray",
            vmin=0,
            vmax=vmax or 1.0,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def run_pipeline(
    input_path: str | os.PathLike,
    source: str,
    target: str,
    output_dir: str | os.PathLike,
    samples: int = 5,
    seed: int | None = None,
    codes: np.ndarray | None = None,
    scale: int = 4,
    sr_method: str = "auto",
    mt_weights: str | os.PathLike | None = None,
    axis: str | int = "axial",
    device: str = "cpu",
    progress: bool = True,
    mask_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """``mtsr run``: SR of the LR input in modality ``source``, then ``samples`` translations to
    ``target``."""
    from mtsr_monai.inference.translate import (
        MODALITIES,
        default_weights,
        latent_codes,
        load_translator,
        sample_statistics,
        translate_volume,
    )
    from mtsr_monai.io import atomic_write_text, load_volume, save_volume
    from mtsr_monai.transforms.degradation import resolve_axis

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    for name in (source, target):
        if name not in MODALITIES:
            raise InputError(f"unknown modality {name!r}; choose from {', '.join(MODALITIES)}")
    if source == target:
        raise InputError("source and target modality are the same")
    weights = Path(mt_weights) if mt_weights else default_weights(source, target)
    generator, meta = load_translator(weights, device)  # fail early, before any long computation
    nz = int(meta["nz"])
    if codes is None:
        if samples < 1:
            raise InputError("--samples must be >= 1")
        codes = latent_codes(samples, nz, seed)
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[1] != nz:
        raise InputError(f"latent codes must be a list of {nz}-vectors, got shape {codes.shape}")
    image = load_volume(input_path)
    lr, lr_affine = image.numpy().astype(np.float32), np.asarray(image.affine)
    lr_mask = None
    if mask_path is not None:
        from mtsr_monai.io import check_same_grid

        m = load_volume(mask_path, validate=False)
        check_same_grid(
            [lr.shape, tuple(m.shape)], [lr_affine, np.asarray(m.affine)], [str(input_path), str(mask_path)]
        )
        lr_mask = (m.numpy() > 0).astype(np.float32)

    t = time.perf_counter()
    sr, sr_affine, sr_description = super_resolve(lr, lr_affine, scale, sr_method, device, progress)
    timings["super_resolution_s"] = time.perf_counter() - t
    sr_mask = None
    if lr_mask is not None:  # the brain mask on the SR grid (nearest neighbour)
        from mtsr_monai.inference.super_resolve import super_resolve_volume

        sr_mask = (
            super_resolve_volume(lr_mask, lr_affine, method="nearest", scale=scale, progress=False)[0] > 0.5
        )
    t = time.perf_counter()
    translated = translate_volume(
        sr,
        sr_affine,
        generator,
        int(meta["image_size"]),
        codes,
        axis,
        progress=progress,
        mask=sr_mask,
        native_resolution=bool(meta.get("native_resolution", False)),
    )
    mean, std = sample_statistics(translated)
    timings["translation_s"] = time.perf_counter() - t

    through = resolve_axis(sr_affine, axis)
    k_sr = sr.shape[through] // 2
    lr_through = resolve_axis(lr_affine, axis)
    k_lr = min(int(round(k_sr * lr.shape[lr_through] / sr.shape[through])), lr.shape[lr_through] - 1)
    panels = [
        (f"input {source} (LR)", central_slice(lr, lr_through, k_lr)),
        (f"SR {source}", central_slice(sr, through, k_sr)),
    ]
    panels += [(f"{target} sample {i}", central_slice(v, through, k_sr)) for i, v in enumerate(translated)]
    panels.append(("std across samples", central_slice(std, through, k_sr)))

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"sr": str(save_volume(sr, out / "sr.nii.gz", sr_affine)), "samples": []}
    for i, vol in enumerate(translated):
        written["samples"].append(str(save_volume(vol, out / f"sample_{i}.nii.gz", sr_affine)))
    written["mean"] = str(save_volume(mean, out / "mean.nii.gz", sr_affine))
    written["std"] = str(save_volume(std, out / "std.nii.gz", sr_affine))
    written["montage"] = str(
        save_montage(panels, out / "montage.png", f"{source} LR -> SR x{scale} -> {target}")
    )
    timings["total_s"] = time.perf_counter() - t0
    fg = mean > 0
    summary = {
        "input": str(input_path),
        "source": source,
        "target": target,
        "scale": scale,
        "input_shape": list(lr.shape),
        "output_shape": list(sr.shape),
        "super_resolution": sr_description,
        "translation_weights": str(weights),
        "translation_method": meta.get("method"),
        "translation_training_iterations": meta.get("iterations"),
        "seed": seed,
        "mask": str(mask_path) if mask_path else None,
        "codes": codes.tolist(),
        "std_mean_in_foreground": float(std[fg].mean()) if fg.any() else 0.0,
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "outputs": written,
    }
    written["summary"] = str(out / "summary.json")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    summary["_arrays"] = {"sr": sr, "samples": translated, "mean": mean, "std": std, "affine": sr_affine}
    return summary


def _demo_html(report: dict[str, Any]) -> str:
    import html

    m = report["metrics"]
    t = m["translation"]
    rows = [
        (f"SR ({report['super_resolution']}) vs true {report['source']}", m["sr"]["psnr"], m["sr"]["ssim"]),
        (f"bicubic vs true {report['source']}", m["bicubic"]["psnr"], m["bicubic"]["ssim"]),
        (
            f"mean of {t['n_samples']} {report['target']} samples vs demo {report['target']}",
            t["psnr_mean"],
            t["ssim_mean"],
        ),
    ]
    rows += [
        (f"{report['target']} sample {i}", p, s)
        for i, (p, s) in enumerate(zip(t["psnr_samples"], t["ssim_samples"], strict=True))
    ]
    body = "\n".join(
        f"<tr><td>{html.escape(n)}</td><td>{p:.2f}</td><td>{s:.4f}</td></tr>" for n, p, s in rows
    )
    lp = report["lpips"]
    lpips_line = (
        f"LPIPS v0.1 ({lp['net']}): realism {t['lpips_realism']:.4f}, diversity {t['lpips_diversity']:.4f}"
        if lp["available"] and "lpips_realism" in t
        else f"LPIPS unavailable: {lp['reason']}"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mtsr demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}img{{max-width:100%}}</style></head><body>
<h1>mtsr demo: {html.escape(report["source"])} LR &rarr; SR &rarr; {html.escape(report["target"])}</h1>
<p>Demo subject synthesised from the MNI152 2009a template; {report["slices"]} axial slices,
T1 degraded x{report["scale"]}
in-plane (second-order chain, seed 0). Super-resolution: {html.escape(report["super_resolution"])}.
Translation: {html.escape(str(report["translation_weights"]))}
({report["translation_training_iterations"]} training iterations on BraTS, CPU:
a small demonstration model).</p>
<img src="run/montage.png" alt="montage">
<h2>Metrics (2D, axial slices; translations in [0, 1] against the robust-scaled demo image)</h2>
<table><tr><th>image</th><th>PSNR (dB)</th><th>SSIM</th></tr>
{body}</table>
<p>Diversity between samples: mean pairwise 1 - SSIM {t.get("pairwise_1_minus_ssim", 0):.4f},
mean pairwise L1 {t.get("pairwise_l1", 0):.4f}. {html.escape(lpips_line)}</p>
<p>Run time {report["seconds"]:.1f} s. Files: <code>run/</code> (sr, samples, mean, std, summary.json),
<code>lr_{html.escape(report["source"])}.nii.gz</code>,
<code>hr_{html.escape(report["source"])}.nii.gz</code>.</p>
</body></html>
"""


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
    ``report.html`` and ``demo.json`` in ``output_dir``."""
    from mtsr_monai.data.demo import make_demo_subject
    from mtsr_monai.data.slices import robust_scale
    from mtsr_monai.inference.super_resolve import super_resolve_volume
    from mtsr_monai.io import atomic_write_text, load_volume, save_volume
    from mtsr_monai.metrics.image import psnr, ssim
    from mtsr_monai.metrics.perceptual import load_lpips, sample_measures
    from mtsr_monai.transforms.degradation import (
        centre_crop_to_multiple,
        degrade_volume_second_order,
        resampled_affine,
        resolve_axis,
    )

    t0 = time.perf_counter()
    out = Path(output_dir)
    paths = make_demo_subject(out / "subject")
    src, tgt = load_volume(paths[source]), load_volume(paths[target])
    brain = torch.as_tensor(load_volume(paths["brain_mask"], validate=False).numpy() > 0, dtype=torch.float32)
    affine = np.asarray(src.affine)
    through = resolve_axis(affine, "axial")
    inplane = [k for k in range(3) if k != through]
    hr = torch.as_tensor(src.numpy(), dtype=torch.float32)
    truth_b = torch.as_tensor(tgt.numpy(), dtype=torch.float32)
    # a central slab keeps the CPU demo within its time budget; in-plane crop to a multiple of the scale
    n = hr.shape[through]
    start = max(0, n // 2 - slices // 2)
    hr, truth_b = hr.narrow(through, start, min(slices, n)), truth_b.narrow(through, start, min(slices, n))
    brain = brain.narrow(through, start, min(slices, n))
    hr, starts = centre_crop_to_multiple(hr, inplane, scale)
    truth_b, _ = centre_crop_to_multiple(truth_b, inplane, scale)
    brain, _ = centre_crop_to_multiple(brain, inplane, scale)
    hr_affine = resampled_affine(affine, {}, {**starts, through: start})
    hr_np = hr.numpy()
    lr, lr_affine = degrade_volume_second_order(hr_np, hr_affine, scale=scale, seed=0)
    lr_path = save_volume(lr, out / f"lr_{source}.nii.gz", lr_affine)
    # the brain mask on the LR grid (a block is brain when most of it is): the translation model was trained
    # on skull-stripped scans, so the noisy background of the degraded input is masked out
    lr_mask = (
        torch.nn.functional.avg_pool2d(brain.movedim(through, 0)[:, None], scale)[:, 0]
        .movedim(0, through)
        .numpy()
        > 0.5
    )
    mask_path = save_volume(lr_mask.astype(np.uint8), out / "lr_brain_mask.nii.gz", lr_affine, dtype=np.uint8)
    save_volume(hr_np, out / f"hr_{source}.nii.gz", hr_affine)

    summary = run_pipeline(
        lr_path,
        source,
        target,
        out / "run",
        samples=samples,
        seed=seed,
        scale=scale,
        progress=progress,
        mask_path=mask_path,
    )
    arrays = summary.pop("_arrays")
    sr = arrays["sr"]
    if sr.shape != hr_np.shape:
        raise RuntimeError(f"SR grid {sr.shape} differs from the ground truth's {hr_np.shape}")
    bicubic, _ = super_resolve_volume(lr, lr_affine, method="bicubic", scale=scale, progress=False)
    mask = brain.numpy() > 0
    data_range = float(hr_np.max() - hr_np.min())
    metrics = {
        "sr": {
            "psnr": psnr(sr, hr_np, mask, data_range),
            "ssim": ssim(sr, hr_np, data_range=data_range, axis=through),
        },
        "bicubic": {
            "psnr": psnr(bicubic, hr_np, mask, data_range),
            "ssim": ssim(bicubic, hr_np, data_range=data_range, axis=through),
        },
    }
    # translations are in [0, 1]: compare with the demo target scaled the same way, slice by slice
    truth01 = robust_scale(truth_b).numpy()
    lpips_metric, lpips_status = load_lpips()
    samples_axial = np.moveaxis(arrays["samples"], through + 1, 1)
    metrics["translation"] = sample_measures(
        samples_axial, np.moveaxis(truth01, through, 0), lpips_metric=lpips_metric
    )
    report = {
        "source": source,
        "target": target,
        "scale": scale,
        "slices": int(hr.shape[through]),
        "super_resolution": summary["super_resolution"],
        "translation_weights": summary["translation_weights"],
        "translation_training_iterations": summary["translation_training_iterations"],
        "metrics": metrics,
        "lpips": lpips_status.as_dict(),
        "montage": summary["outputs"]["montage"],
        "html": str(out / "report.html"),
    }
    report["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "report.html", _demo_html(report))
    atomic_write_text(out / "demo.json", json.dumps(report, indent=1))
    return report
