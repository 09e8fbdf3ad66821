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
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtsr_monai.data.demo import make_demo_subject
from mtsr_monai.errors import InputError
from mtsr_monai.inference.brain_mask import (
    AUTO_MASK_NAME,
    RUN_ONLY_OUTPUTS,
    brain_mask_for,
    check_brain_mask,
    earlier_outputs,
    stale_auto_mask,
)
from mtsr_monai.inference.bundle import (
    bundles_root,
    guard_bundle_outputs,
    load_bundle_network,
    sr_scale_refused,
    sr_weights_path,
)
from mtsr_monai.inference.super_resolve import super_resolve_volume
from mtsr_monai.io import (
    atomic_file_set,
    atomic_write_text,
    load_volume,
    nifti_space,
    save_volume,
    volume_stem,
)
from mtsr_monai.io.atomic import record_written
from mtsr_monai.io.geometry import resampled_affine, resolve_axis
from mtsr_monai.io.outputs import OutputPlan
from mtsr_monai.metrics.image import psnr, ssim
from mtsr_monai.metrics.perceptual import load_lpips, sample_measures
from mtsr_monai.progress import StageBar
from mtsr_monai.reporting.demo_report import demo_figures, demo_html, shown_path
from mtsr_monai.reporting.figures import axial_montage
from mtsr_monai.reporting.views import centre_point
from mtsr_monai.transforms.intensity import robust_scale


def load_sr_network(device: str = "cpu") -> tuple[torch.nn.Module | None, str]:
    """(network or None, description). The network is built from the SR bundle's own ``inference.yaml``
    (``network_def``) and loaded from :func:`sr_weights_path` (sha256-checked when shipped); without weights
    the caller falls back to bicubic and says so."""

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
    axis: str | int = "auto",
) -> tuple[np.ndarray, np.ndarray, str]:
    """F1: (sr volume, sr affine, description of the method used); slices normal to ``axis`` (auto: the
    acquisition plane from the voxel sizes, :func:`~mtsr_monai.io.geometry.acquisition_axis`)."""

    network, description = (None, method) if method != "auto" else load_sr_network(device)
    model_scale = getattr(network, "scale", scale)
    if model_scale != scale:
        raise sr_scale_refused(model_scale, scale)
    used = "model" if network is not None else ("bicubic" if method == "auto" else method)
    sr, sr_aff = super_resolve_volume(
        volume, affine, method=used, network=network, scale=scale, axis=axis, device=device, progress=progress
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

    return axial_montage(panels, path, title, point)


def _geometry(
    lr: np.ndarray, lr_affine: np.ndarray, sr: np.ndarray, sr_affine: np.ndarray, sr_axis: str | int
) -> dict[str, Any]:
    """Shapes, voxel sizes (mm) and the SR's slice axis, for ``summary.json``."""

    def voxel_mm(affine: np.ndarray) -> list[float]:
        return [round(float(v), 4) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)]

    return {
        "input_shape": list(lr.shape), "output_shape": list(sr.shape), "input_voxel_mm": voxel_mm(lr_affine),
        "output_voxel_mm": voxel_mm(sr_affine), "sr_slice_axis": resolve_axis(lr_affine, sr_axis),
    }  # fmt: skip


def _load_input(
    input_path: str | os.PathLike, mask_path: str | os.PathLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(LR volume, its affine, brain mask or None)``: the mask must be on the input's grid."""

    image = load_volume(input_path)
    lr, lr_affine = image.numpy().astype(np.float32), np.asarray(image.affine)
    if mask_path is None:
        return lr, lr_affine, None
    m = load_volume(mask_path, validate=False)
    # on the input's grid and not empty (an empty one gave all-zero samples with exit 0), as `mtsr translate`
    names = (str(input_path), str(mask_path))
    inside = check_brain_mask(m.numpy(), np.asarray(m.affine), lr.shape, lr_affine, names)
    return lr, lr_affine, inside.astype(np.float32)


def _mask_on_sr_grid(
    mask: np.ndarray | None, affine: np.ndarray, scale: int, axis: str | int
) -> np.ndarray | None:
    """The LR brain mask on the SR grid, or None without a mask: interpolated bilinearly and cut at 0.5, so
    its edge follows the brain's outline instead of the LR voxels' staircase (nearest neighbour)."""

    if mask is None:
        return None
    sr_mask = super_resolve_volume(mask, affine, method="bilinear", scale=scale, axis=axis, progress=False)[0]
    return sr_mask > 0.5


def _montage_panels(
    lr: np.ndarray, lr_affine: np.ndarray, arrays: dict[str, Any], source: str, target: str
) -> tuple[list, Sequence[float]]:
    """The montage's panels (LR input, SR, each sample, the std map) and the world point it cuts through:
    the centre of the translated brain (the background stays 0)."""

    sr, sr_affine, fg = arrays["sr"], arrays["affine"], arrays["mean"] > 0
    panels = [(f"input {source} (LR)", lr, lr_affine), (f"SR {source}", sr, sr_affine)]
    panels += [(f"{target} sample {i}", v, sr_affine) for i, v in enumerate(arrays["samples"])]
    panels.append(("std across samples", arrays["std"], sr_affine))
    return panels, centre_point(fg if fg.any() else np.ones(sr.shape, bool), sr_affine)


def _write_outputs(
    out: Path,
    arrays: dict[str, Any],
    panels: list,
    run: dict,
    point: Sequence[float],
    mask: Any = None,
    finish_summary: Callable[[dict[str, Any]], str] | None = None,
    estimated_mask: str | None = None,
) -> dict[str, Any]:
    """``sr``, ``sample_i``, ``mean``, ``std`` NIfTIs (SR grid), the montage (titled from the ``run``
    summary's source, scale and target), the ``estimated_mask`` file as ``brain_mask.nii.gz`` and
    ``summary.json`` (the text ``finish_summary(paths)`` returns) into ``out``, all or none (an earlier
    run's extra samples and mask removed, unless that mask is this run's ``mask``); the paths."""

    affine = arrays["affine"]
    volumes = {"sr": arrays["sr"], **{f"sample_{i}": v for i, v in enumerate(arrays["samples"])}}
    volumes.update(mean=arrays["mean"], std=arrays["std"])
    # summary.json holds the codes: a codes.json of an earlier `mtsr translate` there would mislead
    stale = ("sample_*.nii.gz", "codes.json", *stale_auto_mask(out, mask))
    with atomic_file_set(out, stale=stale, earlier=earlier_outputs(out)) as staging:
        for name, volume in volumes.items():
            save_volume(volume, staging / f"{name}.nii.gz", affine, space=arrays["space"])
        title = f"{run['source']} LR -> SR x{run['scale']} -> {run['target']}"
        save_montage(panels, staging / "montage.png", title, point)
        written = {name: str(out / f"{name}.nii.gz") for name in ("sr", "mean", "std")}
        written["samples"] = [str(out / f"sample_{i}.nii.gz") for i in range(len(arrays["samples"]))]
        written["montage"] = str(out / "montage.png")
        if estimated_mask is not None:
            shutil.copyfile(estimated_mask, staging / AUTO_MASK_NAME)
        if finish_summary is not None:  # in the set: never an earlier run's summary beside these volumes
            (staging / "summary.json").write_text(finish_summary(written))
    return written


#: what :func:`run_pipeline` writes into its output folder (and the estimated brain mask, ``mask="auto"``)
PIPELINE_FILES = ("sample_*.nii.gz", "mean.nii.gz", "std.nii.gz", *RUN_ONLY_OUTPUTS)


class PipelineWriter:
    """The outputs of :func:`run_pipeline` for a bundle item ``{"image": path}``: the folder
    ``output_dir/<input name>`` and its files (``planned_outputs``, as the bundles' writers say them)."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)

    def output_folder(self, d: dict) -> Path:
        return self.output_dir / volume_stem(str(d["image"]))

    def planned_outputs(self, d: dict) -> OutputPlan:
        out = self.output_folder(d)
        return OutputPlan(files=[out / n for n in (*PIPELINE_FILES, "codes.json")], folders=[out])


def pipeline_items(
    input_files: Sequence[str], output_dir: str | os.PathLike, mask_files: Sequence[str] | None = None
) -> list[dict]:
    """The ``inference_mtsr.yaml`` bundle run's items, ``{"image", "mask", "output"}``, checked as
    ``mtsr run`` checks one (InputError: no input, a mask list of another length, an output over an input,
    two inputs with one output folder)."""
    masks = list(mask_files) if mask_files is not None else [None] * len(input_files)
    if len(masks) != len(input_files):
        raise InputError(
            f"{len(masks)} mask_files for {len(input_files)} input_files: give one mask per input"
        )
    writer = PipelineWriter(output_dir)
    items = [{"image": str(f), "mask": m} for f, m in zip(input_files, masks, strict=True)]
    guard_bundle_outputs(items, writer)
    return [{**item, "output": str(writer.output_folder(item))} for item in items]


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
    sr_axis: str | int = "auto",
    mt_weights: str | os.PathLike | None = None,
    axis: str | int = "axial",
    device: str = "cpu",
    progress: bool = True,
    mask_path: str | os.PathLike | None = None,
    on_stage: Callable[[str], None] = lambda name: None,
) -> dict[str, Any]:
    """``mtsr run``: SR of the LR input in modality ``source``, then ``samples`` translations to ``target``,
    checked as ``mtsr translate`` checks; ``on_stage(name)`` is called as each stage starts (progress)."""
    # lazy: keeps ignite, monai out of this module's import
    from mtsr_monai.inference import translate

    timings, t0 = {}, time.perf_counter()
    checked = translate.prepare_translation(source, target, mt_weights, codes, samples, seed, device)
    generator, meta, codes, weights = checked  # checked before anything is read: bad input fails early
    on_stage("read")
    # auto on a head with its skull: the estimated mask is written with the other outputs (_write_outputs)
    with brain_mask_for(input_path, mask_path, output_dir, source, progress, keep=False) as mask:
        (lr, lr_affine, lr_mask), space = _load_input(input_path, mask.path), nifti_space(input_path)
        on_stage("super-resolution")
        t = time.perf_counter()
        sr, sr_affine, sr_text = super_resolve(lr, lr_affine, scale, sr_method, device, progress, sr_axis)
        timings["super_resolution_s"] = time.perf_counter() - t
        sr_mask = _mask_on_sr_grid(lr_mask, lr_affine, scale, sr_axis)
        on_stage("translation")
        t = time.perf_counter()
        translated = translate.translate_volume(
            sr, sr_affine, generator, int(meta["image_size"]), codes, axis, progress=progress, mask=sr_mask,
            **translate.volume_settings(meta),
        )  # fmt: skip
        mean, std = translate.sample_statistics(translated)
        timings["translation_s"] = time.perf_counter() - t
        arrays = dict(sr=sr, samples=translated, mean=mean, std=std, affine=sr_affine, space=space)
        summary = {
            "input": str(input_path), "source": source, "target": target, "scale": scale,
            **_geometry(lr, lr_affine, sr, sr_affine, sr_axis), "super_resolution": sr_text,
            "translation_weights": str(weights), "translation_method": meta.get("method"),
            "translation_training_iterations": meta.get("iterations"),
            "translation_training": meta.get("phase"), "seed": seed, "codes": codes.tolist(),
            "std_mean_in_foreground": float(std[mean > 0].mean()) if (mean > 0).any() else 0.0,
        }  # fmt: skip
        on_stage("write volumes, montage")
        out, (panels, point) = Path(output_dir), _montage_panels(lr, lr_affine, arrays, source, target)
        finish_summary = _summary_writer(out, summary, mask, timings, t0)
        estimated = mask.path if mask.estimated else None
        _write_outputs(out, arrays, panels, summary, point, mask_path, finish_summary, estimated)
    summary["_arrays"] = arrays
    return summary


def _summary_writer(
    out: Path, summary: dict[str, Any], mask: Any, timings: dict, t0: float
) -> Callable[[dict[str, Any]], str]:
    """``written paths -> summary.json's text`` for :func:`_write_outputs` (the run's summary with the mask
    it used, its timings and outputs, itself among them; ``summary`` gets them too)."""
    # an estimated mask is written with the other outputs (_write_outputs), as brain_mask.nii.gz
    mask_final = str(out / AUTO_MASK_NAME) if mask.estimated else mask.path
    summary.update(mask=mask_final, mask_note=mask.note, mask_failed=mask.failed)

    def finish(written: dict[str, Any]) -> str:
        if mask.estimated:
            written["brain_mask"] = mask_final
        return _summary_text(out, summary, written, {**timings, "total_s": time.perf_counter() - t0})

    return finish


def _summary_text(out: Path, summary: dict[str, Any], written: dict[str, str], timings: dict) -> str:
    """``out/summary.json``'s text: the run's summary with its timings and outputs (itself among them);
    ``summary`` gets them too."""
    summary.update(timings={k: round(v, 2) for k, v in timings.items()}, outputs=written)
    written["summary"] = str(out / "summary.json")
    on_disk = {**summary, "outputs": relative_to(written, out)}  # the folder can be moved
    return json.dumps(on_disk, indent=1)


def relative_to(paths: Any, folder: Path) -> Any:
    """``paths`` (a path, or a list / dict of them) with those inside ``folder`` made relative to it."""
    if isinstance(paths, dict):
        return {k: relative_to(v, folder) for k, v in paths.items()}
    if isinstance(paths, (list, tuple)):
        return [relative_to(v, folder) for v in paths]
    return shown_path(paths, folder)


def _demo_slab(
    out: Path, source: str, target: str, slices: int, scale: int, progress: bool
) -> dict[str, Any]:
    """The demo subject's central slab of ``slices`` axial slices, in-plane cropped to a multiple of
    ``scale``, its ``source`` degraded x``scale`` (second-order chain, seed 0) with the brain mask on the LR
    grid; writes ``lr_<source>``, ``lr_brain_mask``, ``hr_<source>`` and ``subject/`` into ``out``."""
    # lazy: keeps monai, scipy out of this module's import
    from mtsr_monai.transforms.degradation import centre_crop_to_multiple, degrade_volume_second_order

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
    """``(metrics, lpips status)``: SR and bicubic against the true source inside the brain (PSNR, 2D axial
    SSIM: over whole slices the SR's clean background would dominate), the translations against the demo
    target scaled to [0, 1] the same way (whole 2D axial slices)."""

    hr_np, mask, through = slab["hr"], slab["brain"], slab["through"]
    data_range = float(hr_np.max() - hr_np.min())
    metrics = {
        name: {
            "psnr": psnr(vol, hr_np, mask, data_range),
            "ssim": ssim(vol, hr_np, mask, data_range=data_range, axis=through),
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


#: what a demo's rerun with fewer samples, another mask or another source contrast removes of an earlier
#: demo's (its run/ folder; its lr_<source> and hr_<source> scans)
DEMO_STALE = ("run/sample_*.nii.gz", "run/codes.json", "run/brain_mask.nii.gz", "lr_*.nii.gz", "hr_*.nii.gz")


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
    figures, ``report.html`` and ``demo.json`` in ``output_dir``: all of them or, when the demo stops
    half-way (an error, Ctrl-C), none (an earlier demo there is left as it was)."""
    out = Path(output_dir)
    earlier = [f"run/{name}" for name in earlier_outputs(out / "run")]
    with atomic_file_set(out, stale=DEMO_STALE, earlier=earlier) as staging:
        report = _demo_in(staging, source, target, samples, seed, slices, scale, progress)
        # the run's summary names its input (the demo's LR scan) and mask by where they will be
        summary = staging / "run" / "summary.json"
        atomic_write_text(
            summary, json.dumps(_moved(json.loads(summary.read_text()), staging, out), indent=1)
        )
        record_written(staging / "run", ["summary.json"])
    return _moved(report, staging, out)


def _moved(value: Any, staging: Path, out: Path) -> Any:
    """``value`` (JSON-like) with every path under ``staging`` named under ``out`` instead."""
    if isinstance(value, dict):
        return {k: _moved(v, staging, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, staging, out) for v in value]
    if isinstance(value, str) and value.startswith(str(staging)):
        return str(out) + value[len(str(staging)) :]
    return value


def _demo_in(
    out: Path, source: str, target: str, samples: int, seed: int, slices: int, scale: int, progress: bool
) -> dict[str, Any]:
    """The demo written into ``out`` (:func:`run_demo`'s staging folder); its report."""
    t0 = time.perf_counter()
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
        sr_method = summary["super_resolution"].split(" ", 1)[0]  # "model (path)", "bicubic (... not found)"
        figures = demo_figures(out, slab, arrays, bicubic, source, target, scale, sr_method)
        report = {
            "source": source,
            "target": target,
            "scale": scale,
            "slices": int(slab["hr"].shape[slab["through"]]),
            "super_resolution": summary["super_resolution"],
            "translation_weights": summary["translation_weights"],
            "translation_training_iterations": summary["translation_training_iterations"],
            "translation_training": summary["translation_training"],
            "translation_method": summary["translation_method"],
            "seed": summary["seed"],  # the latent codes' (the degradation's is fixed: 0)
            "metrics": metrics,
            "lpips": lpips_status,
            "montage": summary["outputs"]["montage"],
            "figures": {k: str(v) for k, v in figures.items()},
            "html": str(out / "report.html"),
        }
        report["seconds"] = time.perf_counter() - t0
        bar.next("report")
        atomic_write_text(out / "report.html", demo_html(report, out, bundles_root()))
        on_disk = {**report, **relative_to({k: report[k] for k in ("montage", "figures", "html")}, out)}
        atomic_write_text(out / "demo.json", json.dumps(on_disk, indent=1))
    return report
