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
from collections.abc import Callable, Sequence
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


def save_montage(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    title: str = "",
    point: Sequence[float] | None = None,
) -> Path:
    """Axial panels ``(name, volume, affine)`` through the world ``point``, radiological with orientation
    letters and a colour bar on the std map (:func:`mtsr_monai.reporting.figures.axial_montage`)."""
    from mtsr_monai.reporting.figures import axial_montage

    return axial_montage(panels, path, title, point)


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
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``mtsr run``: SR of the LR input in modality ``source``, then ``samples`` translations to
    ``target``. ``on_stage(name)`` is called as each stage starts (progress)."""
    from mtsr_monai.inference.translate import (
        MODALITIES,
        default_weights,
        latent_codes,
        load_translator,
        sample_statistics,
        translate_volume,
    )
    from mtsr_monai.io import atomic_write_text, load_volume, save_volume

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
    stage = on_stage or (lambda name: None)
    stage("read")
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

    stage("super-resolution")
    t = time.perf_counter()
    sr, sr_affine, sr_description = super_resolve(lr, lr_affine, scale, sr_method, device, progress)
    timings["super_resolution_s"] = time.perf_counter() - t
    sr_mask = None
    if lr_mask is not None:  # the brain mask on the SR grid (nearest neighbour)
        from mtsr_monai.inference.super_resolve import super_resolve_volume

        sr_mask = (
            super_resolve_volume(lr_mask, lr_affine, method="nearest", scale=scale, progress=False)[0] > 0.5
        )
    stage("translation")
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

    stage("write volumes, montage")
    from mtsr_monai.reporting.views import centre_point

    panels = [(f"input {source} (LR)", lr, lr_affine), (f"SR {source}", sr, sr_affine)]
    panels += [(f"{target} sample {i}", v, sr_affine) for i, v in enumerate(translated)]
    panels.append(("std across samples", std, sr_affine))
    fg = mean > 0  # the translated brain (background stays 0): the montage cuts through its centre
    point = centre_point(fg if fg.any() else np.ones(sr.shape, bool), sr_affine)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"sr": str(save_volume(sr, out / "sr.nii.gz", sr_affine)), "samples": []}
    for i, vol in enumerate(translated):
        written["samples"].append(str(save_volume(vol, out / f"sample_{i}.nii.gz", sr_affine)))
    written["mean"] = str(save_volume(mean, out / "mean.nii.gz", sr_affine))
    written["std"] = str(save_volume(std, out / "std.nii.gz", sr_affine))
    written["montage"] = str(
        save_montage(panels, out / "montage.png", f"{source} LR -> SR x{scale} -> {target}", point)
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


def _demo_slab(
    out: Path, source: str, target: str, slices: int, scale: int, progress: bool
) -> dict[str, Any]:
    """The demo subject's central slab of ``slices`` axial slices, in-plane cropped to a multiple of
    ``scale``, its ``source`` degraded x``scale`` (second-order chain, seed 0) with the brain mask on the LR
    grid; writes ``lr_<source>``, ``lr_brain_mask``, ``hr_<source>`` and ``subject/`` into ``out``."""
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
    from mtsr_monai.inference.super_resolve import super_resolve_volume
    from mtsr_monai.io import atomic_write_text
    from mtsr_monai.progress import StageBar
    from mtsr_monai.reporting.demo_report import demo_figures, demo_html

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
