"""Whole-volume x4 super-resolution of a NIfTI slice by slice, and the intensity scaling shared with training.

A volume is scaled to about [0, 1] by :func:`~mtsr_monai.transforms.intensity.robust_range` (the training
scaling, without clipping so the mapping back is exact), brought to the training array order (flips and axis
swaps, undone after), cut into 2D slices in the plane normal to ``axis`` (found from the header), super-
resolved in batches of slices by a network through MONAI's ``SlidingWindowInferer`` (so memory stays bounded
for any in-plane size), mapped back to the input's range, and written with an affine whose in-plane voxel size
is divided by the scale, so SR overlays the input. Interpolation baselines (``bicubic``, ``bilinear``,
``nearest`` via torch; ``lanczos`` via PIL) use the same geometry. All-zero (background) slices map to zero
without touching the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtsr_monai.errors import InputError
from mtsr_monai.inference.bundle import bundle_components, infer_item, load_bundle_network
from mtsr_monai.inference.defaults import SR_ROI_SIZE
from mtsr_monai.inference.slicewise import busy_batches
from mtsr_monai.io import check_image_file, load_volume, nifti_space, save_volume
from mtsr_monai.io.geometry import AxisOrder, resolve_axis, sr_affine
from mtsr_monai.io.validation import check_nifti_header, check_volume_array, validate_volume
from mtsr_monai.precision import (  # noqa: F401 (kept public here: scripts import them from this module)
    PRECISIONS,
    auto_precision,
    autocast_dtype,
    resolve_precision,
)
from mtsr_monai.reporting.views import plane_of_axis
from mtsr_monai.transforms.intensity import robust_range, scale_to_range

METHODS = ("model", "bicubic", "bilinear", "lanczos", "nearest")
#: LR pixels of one window unit: ``batch_size`` of them go through the network at once (8: 8 BraTS slices at
#: x4, 60 x 60; a 320 x 320 slice alone), so memory follows --batch-size for any matrix
WINDOW_PIXELS = 64 * 64

__all__ = [
    "METHODS",
    "eval_pairs",
    "interpolate_slices",
    "load_sr_model",
    "prepare_network",
    "robust_range",
    "sr_affine",
    "super_resolve_file",
    "super_resolve_planes",
    "super_resolve_scaled",
    "super_resolve_volume",
]


def interpolate_slices(x: torch.Tensor, scale: int, method: str) -> torch.Tensor:
    """Upsample slices ``(N, 1, h, w)`` by ``scale`` with an interpolation baseline."""
    if method in ("bicubic", "bilinear"):
        return torch.nn.functional.interpolate(x, scale_factor=scale, mode=method, align_corners=False)
    if method == "nearest":
        return torch.nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    if method == "lanczos":
        from PIL import Image

        out = []
        for img in x[:, 0].cpu().numpy().astype(np.float32):
            h, w = img.shape
            resized = Image.fromarray(img, mode="F").resize((w * scale, h * scale), Image.LANCZOS)
            out.append(torch.from_numpy(np.array(resized, dtype=np.float32)))
        return torch.stack(out)[:, None].to(x.device)
    raise ValueError(f"unknown interpolation method {method!r}")


def eval_pairs(
    paths: Sequence[str],
    slices_per_volume: int = 4,
    seed: int = 0,
    scale: int = 4,
    min_foreground: float = 0.25,
) -> list[dict[str, torch.Tensor]]:
    """Fixed held-out LR/HR pairs: axial slices of each volume, degraded with a seeded second-order chain.

    Slices are the centres of equal parts of those whose foreground (voxels above the robust low level, > 0
    once scaled) covers at least ``min_foreground`` of the fullest slice's (:func:`spaced_brain_slices`);
    each is scaled by :func:`robust_range` of its volume and degraded by
    :class:`~mtsr_monai.transforms.degradation.RandSecondOrderDegradationd` seeded by ``seed`` and its
    position, so every call returns the same pairs. Items: ``{"lr": (1, h, w), "hr": (1, H, W), "source":
    path, "slice": index}``.
    """
    # lazy: data.slices imports monai, which the CLI's import of this module should not pay for
    from mtsr_monai.data.slices import spaced_brain_slices

    # lazy: keeps monai, scipy out of this module's import
    from mtsr_monai.transforms.degradation import RandSecondOrderDegradationd

    degrade = RandSecondOrderDegradationd(keys="hr", scale=scale, output_keys="lr")
    pairs = []
    for n, path in enumerate(paths):
        vol = load_volume(path)
        axis = resolve_axis(np.asarray(vol.affine), "axial")
        arr = np.moveaxis(np.asarray(vol), axis, 0)
        lo, hi = robust_range(arr)
        arr = scale_to_range(arr, lo, hi, clip=False)
        picks = spaced_brain_slices(torch.from_numpy(arr), slices_per_volume, min_foreground, False)
        for j, s in enumerate(picks.tolist()):
            degrade.set_random_state(seed + 1000 * n + j)
            item = degrade({"hr": torch.from_numpy(np.ascontiguousarray(arr[s][None])).float()})
            pairs.append(
                {
                    "lr": torch.as_tensor(item["lr"]).float().clone(),
                    "hr": torch.as_tensor(item["hr"]).float().clone(),
                    "source": str(path),
                    "slice": int(s),
                }
            )
    return pairs


def _network_box(slices: np.ndarray, vmin: float) -> tuple[slice, slice]:
    """Where the network runs: row and column slices of the box holding the volume's foreground (+ 8 pixels,
    clipped; :func:`~mtsr_monai.transforms.crop.foreground_box`, MONAI's bounding box); outside it the slices
    are background, which stays background (skull-stripped volumes: ~1/3 less work). One box for the volume,
    not one per batch: a slice's output must not depend on the batch size or on the slices batched with it."""
    # lazy: transforms.crop loads MONAI, which the interpolation baselines do without
    from mtsr_monai.transforms.crop import foreground_box

    foreground = (slices > vmin).any(0)
    return foreground_box(foreground, margin=8) if foreground.any() else (slice(None), slice(None))


def prepare_network(
    network: torch.nn.Module, device: str | torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``network`` on ``device`` in eval mode with channels-last weights; returns the callable to run on
    ``(N, C, h, w)`` batches. Channels-last (NHWC) is oneDNN's and cuDNN's native layout: it spares a layout
    conversion around every conv (about 20 % of the RRDB's CPU time). The function is unchanged."""
    network = network.to(device).eval().to(memory_format=torch.channels_last)

    def run(x: torch.Tensor) -> torch.Tensor:
        return network(x.contiguous(memory_format=torch.channels_last))

    return run


def window_inferer(shape: tuple[int, ...], roi_size: int = SR_ROI_SIZE, batch_size: int = 8) -> Any:
    """The sliding-window inferer ``mtsr super-resolve`` runs on LR slices of ``shape`` (H, W): windows of
    ``roi_size``, no larger than the slice (no padding work), blended with Gaussian weights (overlap 0.25),
    as many window pixels at once as ``batch_size`` windows of 64 x 64 (the memory bound), at least one."""
    from monai.inferers import SlidingWindowInferer  # lazy: the interpolation baselines need no MONAI

    roi = (min(roi_size, int(shape[0])), min(roi_size, int(shape[1])))
    windows = max(1, min(batch_size, batch_size * WINDOW_PIXELS // (roi[0] * roi[1])))
    return SlidingWindowInferer(roi_size=roi, sw_batch_size=windows, overlap=0.25, mode="gaussian")


def super_resolve_scaled(
    slices: np.ndarray,
    method: str = "model",
    network: torch.nn.Module | None = None,
    scale: int = 4,
    batch_size: int = 8,
    roi_size: int = SR_ROI_SIZE,
    device: str | torch.device = "cpu",
    progress: bool = True,
    inferer: Callable | None = None,
    precision: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Super-resolve ``(S, h, w)`` slices already scaled by :func:`robust_range`; returns
    ``(S, scale h, scale w)`` float32 in the same (scaled) units: ``out`` when given (such an array, a view
    of a larger one too, written in place: no second output-sized buffer).

    ``method="model"`` runs ``network`` through a ``SlidingWindowInferer`` with LR windows of ``roi_size``
    (no larger than the slice) or through ``inferer``; the other methods interpolate. Slices holding only the
    minimum (background) come out as that minimum without computation.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method == "model" and network is None:
        raise ValueError("method 'model' needs a network")
    if method == "model" and getattr(network, "scale", scale) != scale:
        raise ValueError(f"the network upsamples x{network.scale}, not x{scale}")
    slices = np.asarray(slices, dtype=np.float32)
    n_slices, h, w = slices.shape
    device = torch.device(device)
    run_network = prepare_network(network, device) if method == "model" else None
    dtype = autocast_dtype(precision, device)

    def run_model(x: torch.Tensor) -> torch.Tensor:
        if inferer is not None:
            return inferer(x, run_network)
        return window_inferer(tuple(x.shape[-2:]), roi_size, batch_size)(x, run_network)

    vmin = float(slices.min())
    floor = min(vmin, 0.0)  # magnitude images: undershoot at edges clamped (z-scored inputs: their minimum)
    shape = (n_slices, h * scale, w * scale)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {shape}, not {out.dtype} {out.shape}")
    out[...] = vmin
    rows, cols = _network_box(slices, vmin) if method == "model" else (slice(None), slice(None))
    with torch.inference_mode():
        desc = f"super-resolve ({method})"
        budget = batch_size * WINDOW_PIXELS
        for idx in busy_batches(slices, batch_size, vmin, progress, desc, max_pixels=budget):
            x = torch.from_numpy(slices[idx]).float()[:, None].to(device)
            if method != "model":
                out[idx] = interpolate_slices(x, scale, method)[:, 0].float().clamp_min(floor).cpu().numpy()
                continue
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                y = run_model(x[..., rows, cols])
            y = y[:, 0].float().clamp_min(floor).cpu().numpy()
            out[idx, rows.start * scale : rows.stop * scale, cols.start * scale : cols.stop * scale] = y
    return out


def super_resolve_volume(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    method: str = "model",
    network: torch.nn.Module | None = None,
    scale: int = 4,
    axis: str | int = "axial",
    batch_size: int = 8,
    roi_size: int = SR_ROI_SIZE,
    device: str | torch.device = "cpu",
    progress: bool = True,
    inferer: Callable | None = None,
    precision: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Super-resolve a 3D volume slice by slice in the plane normal to ``axis``; returns ``(sr, sr_affine)``.

    The volume is scaled by :func:`robust_range`, super-resolved by :func:`super_resolve_planes` (in the
    training array order) and :func:`super_resolve_scaled` (network
    ``(N, 1, h, w)`` in [0, 1] -> ``(N, 1, scale h, scale w)``, or an interpolation) and mapped back to the
    input's range. ``precision``: ``fp32``, ``bf16`` or ``fp16`` (CUDA) autocast for the network; ``auto``
    picks :func:`auto_precision` (bf16 halves the CPU time where the CPU has native bf16 instructions).
    """
    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    check_volume_array(arr)
    arr = arr.astype(np.float32, copy=False)
    lo, hi = robust_range(arr)
    scaled = scale_to_range(arr, lo, hi, clip=False)
    out, grid = super_resolve_planes(
        scaled,
        affine,
        axis,
        method=method,
        network=network,
        scale=scale,
        batch_size=batch_size,
        roi_size=roi_size,
        device=device,
        progress=progress,
        inferer=inferer,
        precision=precision,
    )
    out *= hi - lo  # in place: the output is the largest array by far (x 16 the input)
    out += lo
    return out, grid


def super_resolve_planes(
    volume: np.ndarray, affine: np.ndarray, axis: str | int = "axial", scale: int = 4, **options: Any
) -> tuple[np.ndarray, np.ndarray]:
    """A volume already scaled (``(X, Y, Z)``) super-resolved slice by slice in the plane normal to ``axis``
    by :func:`super_resolve_scaled` (``options``: its other arguments); returns ``(sr, sr_affine)``.

    The slices are cut in the training array order (:data:`~mtsr_monai.io.geometry.TRAINING_AXCODES`; flips
    and axis swaps only, undone on the output), so the same image stored LPS, RAS or with its axes swapped
    gives the same output: the network is not flip- or transpose-invariant."""
    affine = np.asarray(affine)
    through = resolve_axis(affine, axis)
    order = AxisOrder(affine)
    slices = np.moveaxis(order.apply(volume), order.axis(through), 0)
    inplane = [k for k in range(3) if k != through]
    # the output in the stored order, written through a view in the slices' order: one output-sized buffer
    sr = np.empty([n * scale if k in inplane else n for k, n in enumerate(volume.shape)], np.float32)
    view = np.moveaxis(order.apply(sr, copy=False), order.axis(through), 0)
    super_resolve_scaled(np.ascontiguousarray(slices), scale=scale, out=view, **options)
    return sr, sr_affine(affine, inplane, scale)


def super_resolve_file(
    input_path: str,
    output_path: str,
    method: str = "model",
    network: torch.nn.Module | None = None,
    bundle: str | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    roi_size: int = SR_ROI_SIZE,
    scale: int = 4,
    axis: str | int = "axial",
    progress: bool = True,
    inferer: Callable | None = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Read ``input_path`` (validated), super-resolve it, write ``output_path`` atomically; returns a summary
    (``slice_axis``, ``slice_plane``: the array axis the slices were cut across and its plane, as resolved).

    The work is done by the ``preprocessing``, ``inferer`` and ``postprocessing`` of the bundle's
    ``configs/inference.yaml`` (default: the shipped ``mtsr_sr``), the objects ``python -m monai.bundle run
    inference`` runs, with this call's arguments as overrides. ``method="model"`` with no ``network`` loads
    the bundle's weights (sha256 checked); ``inferer`` replaces the sliding window over each slice batch.
    """
    import time

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method != "model" and bundle is None and _is_nifti(input_path) and _is_nifti(output_path):
        return _interpolate_nifti_file(input_path, output_path, method, scale, axis, batch_size, progress)

    overrides = {
        "axis": axis,
        "scale": scale,
        "roi_size": roi_size,
        "batch_size": batch_size,
        "method": method,
        "precision": precision,
        "progress": progress,
    }
    components = bundle_components(bundle, overrides, inferer="SliceSRInferer")
    components["inferer"].window_inferer = inferer
    if method == "model" and network is None:
        network, _ = load_bundle_network(bundle, device=device)
    if method == "model":
        network = network.to(device)
    start = time.perf_counter()
    item = infer_item(
        components, {"image": str(input_path), "output": str(output_path)}, network or torch.nn.Identity()
    )
    seconds = time.perf_counter() - start
    return {
        "input": str(input_path),
        "output": str(output_path),
        "method": method,
        "precision": resolve_precision(precision, device) if method == "model" else None,
        "input_shape": list(item["image"].shape[1:]),
        "output_shape": list(item["pred"].shape[1:]),
        **_slice_axis(np.asarray(item["image"].affine), axis),
        "seconds": seconds,
    }


def _slice_axis(affine: np.ndarray, axis: str | int) -> dict[str, Any]:
    """``axis`` as it resolved for an image of this affine: the array axis and its anatomical plane. Given the
    affine the slices were cut by (the loaded image's), so a caller need not read the file's header again."""
    through = resolve_axis(affine, axis)
    return {"slice_axis": through, "slice_plane": plane_of_axis(affine, through)}


def _is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def _read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(float32 array, affine)`` of a 3D NIfTI read with nibabel and the checks of
    :func:`mtsr_monai.io.load_volume` (which reads through MONAI's ``LoadImage``: the same numbers)."""
    import nibabel as nib

    path = Path(path)
    check_image_file(path)
    mm_per_unit = check_nifti_header(path)
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel raises many types for corrupt data
        detail = " ".join(str(err).split())[:160]
        raise InputError(f"unreadable or truncated image ({type(err).__name__}: {detail})", path) from err
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputError(f"expected a 3D volume, got 4D data with {data.shape[-1]} volumes", path)
    affine = np.asarray(image.affine, dtype=np.float64)
    affine[:3] *= mm_per_unit  # a header in metres or microns: mm, as load_volume and the outputs
    validate_volume(data, affine, path)
    return data, affine


def _interpolate_nifti_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    method: str,
    scale: int,
    axis: str | int,
    batch_size: int,
    progress: bool,
) -> dict[str, Any]:
    """An interpolation baseline of a NIfTI file without importing MONAI (about 8 s of start-up): the
    bundle's steps for these methods (read, robust scaling, slice interpolation, scaling back, write) on
    arrays, with nibabel for the files; the output equals the bundle path's (tests/test_import_time.py)."""
    import time

    start = time.perf_counter()
    volume, affine = _read_nifti(input_path)
    sr, affine_sr = super_resolve_volume(
        volume, affine, method=method, scale=scale, axis=axis, batch_size=batch_size, progress=progress
    )
    save_volume(sr, output_path, affine_sr, space=nifti_space(input_path))
    return {
        "input": str(input_path),
        "output": str(output_path),
        "method": method,
        "precision": None,
        "input_shape": list(volume.shape),
        "output_shape": list(sr.shape),
        **_slice_axis(affine, axis),
        "seconds": time.perf_counter() - start,
    }


def load_sr_model(path: str | None = None, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The shipped SR network (or ``path``'s weights on the shipped bundle's architecture), eval mode."""

    return load_bundle_network(None, device=device, weights=path)
