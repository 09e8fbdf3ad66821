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


def sr_weights_path() -> Path:
    """The SR weights: ``$MTSR_SR_WEIGHTS``, else the SR bundle's ``models/model.pt`` (under
    :func:`mtsr_monai.inference.bundle.bundles_root`)."""
    from mtsr_monai.inference.bundle import weights_path

    env = os.environ.get("MTSR_SR_WEIGHTS")
    return Path(env) if env else weights_path("mtsr_sr")


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


def _load_input(
    input_path: str | os.PathLike, mask_path: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(LR volume, its affine, brain mask or None)``: the mask must be on the input's grid."""
    from mtsr_monai.io import check_same_grid, load_volume

    image = load_volume(input_path)
    lr, lr_affine = image.numpy().astype(np.float32), np.asarray(image.affine)
    if mask_path is None:
        return lr, lr_affine, None
    m = load_volume(mask_path, validate=False)
    check_same_grid(
        [lr.shape, tuple(m.shape)], [lr_affine, np.asarray(m.affine)], [str(input_path), str(mask_path)]
    )
    return lr, lr_affine, (m.numpy() > 0).astype(np.float32)


def _mask_on_sr_grid(mask: np.ndarray | None, affine: np.ndarray, scale: int) -> np.ndarray | None:
    """The LR brain mask on the SR grid (nearest neighbour), or None without a mask."""
    from mtsr_monai.inference.super_resolve import super_resolve_volume

    if mask is None:
        return None
    return super_resolve_volume(mask, affine, method="nearest", scale=scale, progress=False)[0] > 0.5


def _montage_panels(
    lr: np.ndarray, lr_affine: np.ndarray, arrays: dict[str, Any], source: str, target: str
) -> tuple[list, Sequence[float]]:
    """The montage's panels (LR input, SR, each sample, the std map) and the world point it cuts through:
    the centre of the translated brain (the background stays 0)."""
    from mtsr_monai.reporting.views import centre_point

    sr, sr_affine, fg = arrays["sr"], arrays["affine"], arrays["mean"] > 0
    panels = [(f"input {source} (LR)", lr, lr_affine), (f"SR {source}", sr, sr_affine)]
    panels += [(f"{target} sample {i}", v, sr_affine) for i, v in enumerate(arrays["samples"])]
    panels.append(("std across samples", arrays["std"], sr_affine))
    return panels, centre_point(fg if fg.any() else np.ones(sr.shape, bool), sr_affine)


def _write_outputs(
    out: Path, arrays: dict[str, Any], panels: list, title: str, point: Sequence[float]
) -> dict[str, Any]:
    """``sr``, ``sample_i``, ``mean``, ``std`` NIfTIs (SR grid) and the montage into ``out``; their paths."""
    from mtsr_monai.io import save_volume

    affine = arrays["affine"]
    out.mkdir(parents=True, exist_ok=True)
    written = {"sr": str(save_volume(arrays["sr"], out / "sr.nii.gz", affine)), "samples": []}
    for i, vol in enumerate(arrays["samples"]):
        written["samples"].append(str(save_volume(vol, out / f"sample_{i}.nii.gz", affine)))
    written["mean"] = str(save_volume(arrays["mean"], out / "mean.nii.gz", affine))
    written["std"] = str(save_volume(arrays["std"], out / "std.nii.gz", affine))
    written["montage"] = str(save_montage(panels, out / "montage.png", title, point))
    return written


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
    ``target``, checked as ``mtsr translate`` checks (:func:`.translate.prepare_translation`).
    ``on_stage(name)`` is called as each stage starts (progress)."""
    from mtsr_monai.inference.translate import prepare_translation, sample_statistics, translate_volume
    from mtsr_monai.io import atomic_write_text

    timings, t0 = {}, time.perf_counter()
    checked = prepare_translation(source, target, mt_weights, codes, samples, seed, device)  # fail early
    generator, meta, codes, weights = checked
    stage = on_stage or (lambda name: None)
    stage("read")
    lr, lr_affine, lr_mask = _load_input(input_path, mask_path)
    stage("super-resolution")
    t = time.perf_counter()
    sr, sr_affine, sr_description = super_resolve(lr, lr_affine, scale, sr_method, device, progress)
    timings["super_resolution_s"] = time.perf_counter() - t
    sr_mask = _mask_on_sr_grid(lr_mask, lr_affine, scale)
    stage("translation")
    t = time.perf_counter()
    translated = translate_volume(
        sr, sr_affine, generator, int(meta["image_size"]), codes, axis, progress=progress, mask=sr_mask,
        native_resolution=bool(meta.get("native_resolution", False)),
    )  # fmt: skip
    mean, std = sample_statistics(translated)
    timings["translation_s"] = time.perf_counter() - t
    arrays, fg = {"sr": sr, "samples": translated, "mean": mean, "std": std, "affine": sr_affine}, mean > 0
    summary = {
        "input": str(input_path), "source": source, "target": target, "scale": scale,
        "input_shape": list(lr.shape), "output_shape": list(sr.shape), "super_resolution": sr_description,
        "translation_weights": str(weights), "translation_method": meta.get("method"),
        "translation_training_iterations": meta.get("iterations"), "seed": seed,
        "mask": str(mask_path) if mask_path else None, "codes": codes.tolist(),
        "std_mean_in_foreground": float(std[fg].mean()) if fg.any() else 0.0,
    }  # fmt: skip
    stage("write volumes, montage")
    out, (panels, point) = Path(output_dir), _montage_panels(lr, lr_affine, arrays, source, target)
    written = _write_outputs(out, arrays, panels, f"{source} LR -> SR x{scale} -> {target}", point)
    timings["total_s"] = time.perf_counter() - t0
    summary.update(timings={k: round(v, 2) for k, v in timings.items()}, outputs=written)
    written["summary"] = str(out / "summary.json")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    summary["_arrays"] = arrays
    return summary
