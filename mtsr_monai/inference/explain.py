"""Explainability of the clinical SR model (paper section 3.7): attention-gate maps and the critic's GradCAM.

- Attention maps: every gate's coefficients ``psi`` (finest gate first) for every slice, bilinearly stretched
  to the slice size and stacked back into volumes on the target grid (``attention_gate<k>.nii.gz``, values in
  [0, 1]); a PNG montage shows each gate overlaid on the input (first input channel) at one slice.
- GradCAM (MONAI ``monai.visualize.GradCAM``) of the critic's last conv block for its score on the restored
  slice, normalised per slice to [0, 1] (``gradcam.nii.gz``), overlaid on the output in the PNG; the critic's
  mean generation score sigmoid(D(y_hat)) is written to ``critic_score.txt``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtsr_monai.io import atomic_write_text, load_volume, save_volume
from mtsr_monai.io.geometry import AxisOrder
from mtsr_monai.reporting.views import (
    CONVENTION,
    colour_bar,
    plane_image,
    plane_of_axis,
    pyplot,
    save_figure,
    show_plane,
)
from mtsr_monai.transforms.intensity import display_range


def _batches(volume: np.ndarray, axis: int, batch_size: int, desc: str = ""):
    """Slice batches along ``axis``, with a progress bar named ``desc`` (stderr) when given."""
    from tqdm import tqdm

    n = volume.shape[axis + 1]
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not desc):
        stop = min(start + batch_size, n)
        part = np.moveaxis(np.take(volume, np.arange(start, stop), axis=axis + 1), axis + 1, 0)
        yield start, stop, torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))


def _put(out: np.ndarray, values: np.ndarray, axis: int, start: int, stop: int) -> None:
    index = [slice(None)] * out.ndim
    index[axis] = slice(start, stop)
    out[tuple(index)] = np.moveaxis(values, 0, axis)


def attention_volumes(
    network: torch.nn.Module,
    x: np.ndarray,
    axis: int,
    batch_size: int = 8,
    device: str = "cpu",
    patch_size: int | None = None,
) -> list[np.ndarray]:
    """One (X, Y, Z) volume per attention gate (finest first), each map stretched to the slice size, from the
    pass that restores the volume: whole slices, or ``patch_size`` sliding windows (the network normalises
    each window on its own, so the windows' maps differ from a whole slice's)."""
    network.eval()
    maps: list[np.ndarray] | None = None
    with torch.no_grad():
        for start, stop, batch in _batches(x, axis, batch_size, "attention maps"):
            gates = _gate_maps(network, batch.to(device), patch_size)
            if maps is None:
                maps = [np.zeros(x.shape[1:], np.float32) for _ in gates]
            for k, g in enumerate(gates):
                _put(maps[k], g[:, 0].cpu().numpy(), axis, start, stop)
    return maps or []


def _gate_maps(network: torch.nn.Module, batch: torch.Tensor, patch_size: int | None) -> list[torch.Tensor]:
    """Each gate's ``(B, 1, h, w)`` map on the slices' pixels, from the pass ``restore_volume`` makes."""
    import torch.nn.functional as F

    size = tuple(batch.shape[-2:])
    if patch_size:
        from monai.inferers import sliding_window_inference

        def gates_of(window: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(network(window, return_attention=True)[1])

        # the restoration's windows and blending (inference.clinical.restore_volume); each gate's map is
        # stitched at its own scale, then stretched to the slice
        roi = (int(patch_size), int(patch_size))
        stitched = sliding_window_inference(batch, roi, 64, gates_of, overlap=0.25, mode="gaussian")
        return [F.interpolate(g.float(), size=size, mode="bilinear", align_corners=False) for g in stitched]
    _, gates = network(batch, return_attention=True)
    # gate maps live on the padded grid, 2**k coarser: back to its pixels, then the input's share
    stretched = [
        F.interpolate(g.float(), scale_factor=2**k, mode="bilinear", align_corners=False)
        for k, g in enumerate(gates)
    ]
    return [g[..., : size[0], : size[1]] for g in stretched]


def gradcam_volume(
    critic: torch.nn.Module, y: np.ndarray, axis: int, batch_size: int = 8, device: str = "cpu"
) -> tuple[np.ndarray, float]:
    """GradCAM of the critic (last conv block) on each restored slice, and the mean critic score."""
    from monai.visualize import GradCAM

    critic.eval()
    layer = f"features.{len(critic.features) - 1}"
    # raw maps: MONAI's default postprocessing maps (min, max) to (1, 0), the most relevant pixels to 0
    cam = GradCAM(nn_module=critic, target_layers=layer, postprocessing=lambda m: m)
    out = np.zeros(y.shape[1:], np.float32)
    scores = []
    for start, stop, batch in _batches(y, axis, batch_size, "critic GradCAM"):
        batch = batch.to(device)
        keep = batch.flatten(1).amax(1) > 0
        maps = np.zeros((batch.shape[0],) + tuple(batch.shape[-2:]), np.float32)
        if keep.any():
            h, w = batch.shape[-2:]
            # the critic's four stride-2 blocks need room: pad small slices to at least 32 x 32
            padded = torch.nn.functional.pad(batch[keep], (0, max(32 - w, 0), 0, max(32 - h, 0)))
            maps[keep.cpu().numpy()] = _unit_range(
                cam(padded, class_idx=0)[:, 0, :h, :w].detach().cpu().numpy()
            )
            with torch.no_grad():
                scores.append(torch.sigmoid(critic(padded)).flatten().cpu().numpy())
        _put(out, maps, axis, start, stop)
    score = float(np.concatenate(scores).mean()) if scores else float("nan")
    return out, score


def _unit_range(maps: np.ndarray) -> np.ndarray:
    """Each map of a (N, H, W) stack scaled to [0, 1] over its own pixels (a constant map becomes 0)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)


def explain_volume(
    network: torch.nn.Module,
    critic: torch.nn.Module | None,
    x: np.ndarray,
    y: np.ndarray,
    axis: int,
    modalities: Sequence[str],
    batch_size: int = 8,
    device: str = "cpu",
    affine: np.ndarray | None = None,
    patch_size: int | None = None,
) -> dict[str, Any]:
    """Attention volumes for input ``x`` and, with a critic, GradCAM and score on output ``y`` (with a
    warning when a sequence is missing: its output channel is the network's guess, which the critic, trained
    on all of them together, rejects: a score near 0 and an empty GradCAM that say little of the others).
    With the grid's ``affine`` the slices are cut in the training array order, and with ``patch_size`` the
    attention maps come from the same sliding windows, as the restoration did."""
    if affine is not None:
        order = AxisOrder(affine)
        ordered = (order.apply(x), order.apply(y), order.axis(axis))
        out = explain_volume(network, critic, *ordered, modalities, batch_size, device, None, patch_size)
        out["attention"] = [order.undo(m) for m in out["attention"]]
        if "gradcam" in out:
            out["gradcam"] = order.undo(out["gradcam"])
        return out
    out: dict[str, Any] = {"attention": attention_volumes(network, x, axis, batch_size, device, patch_size)}
    if critic is not None:
        out["gradcam"], out["critic_score"] = gradcam_volume(critic, y, axis, batch_size, device)
        missing = [m for c, m in enumerate(modalities) if not np.any(x[c] > 0)]
        if missing:
            warnings.warn(
                f"no {', '.join(missing)} given: the critic judges all of {', '.join(modalities)} together, "
                f"so its score ({out['critic_score']:.3f}) and GradCAM describe the guessed channel(s) more "
                "than the restored scans; give every sequence for a meaningful critic",
                stacklevel=2,
            )
    return out


def _overlay(
    ax: Any,
    volume: np.ndarray,
    affine: np.ndarray,
    plane: str,
    point: Any,
    label: str,
    **imshow: Any,
) -> None:
    """A heat map over the grey panel already on ``ax``, with its colour bar."""

    image, aspect = plane_image(volume, affine, plane, point)
    shown = ax.imshow(image, aspect=aspect, cmap="jet", alpha=0.45, interpolation="nearest", **imshow)
    colour_bar(ax, shown, label)


def write_explanations(
    explained: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    affine: np.ndarray,
    output_dir: str | Path,
    modalities: Sequence[str],
    axis: int,
    slice_index: int | None = None,
    space: int = 1,
) -> dict[str, Path]:
    """NIfTI volumes (atomic; NIfTI ``space`` code, as the restored volumes) and one PNG montage at
    ``slice_index`` (default: the slice with most signal), radiological with orientation letters; attention
    and GradCAM maps with their colour bars."""

    out_dir = Path(output_dir)
    written: dict[str, Path] = {}
    for k, vol in enumerate(explained["attention"], start=1):
        path = out_dir / f"attention_gate{k}.nii.gz"
        written[f"attention_gate{k}"] = save_volume(vol, path, affine=affine, space=space)
    if "gradcam" in explained:
        path = out_dir / "gradcam.nii.gz"
        written["gradcam"] = save_volume(explained["gradcam"], path, affine=affine, space=space)
        written["critic_score"] = atomic_write_text(
            out_dir / "critic_score.txt", f"{explained['critic_score']:.6f}\n"
        )
    written["explain_png"] = _explain_figure(
        explained, x, y, affine, out_dir / "explain.png", modalities, axis, slice_index
    )
    return written


def _explain_figure(
    explained: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    affine: np.ndarray,
    png: Path,
    modalities: Sequence[str],
    axis: int,
    slice_index: int | None,
) -> Path:
    """Input, restored, each attention gate and GradCAM over one slice (see :func:`write_explanations`)."""

    if slice_index is None:
        other = tuple(d for d in range(3) if d != axis)
        slice_index = int(np.argmax((x > 0).sum(axis=(0,) + tuple(d + 1 for d in other))))
    present = [c for c, _ in enumerate(modalities) if x[c].max() > 0] or [0]
    c0 = present[0]
    index = (np.array(x.shape[1:]) - 1) / 2.0
    index[axis] = slice_index
    point = (np.asarray(affine, dtype=np.float64) @ np.append(index, 1.0))[:3]
    plane = plane_of_axis(affine, axis)
    gates = explained["attention"]
    ncols = 2 + len(gates) + (1 if "gradcam" in explained else 0)
    fig, axes = pyplot().subplots(1, ncols, figsize=(3.0 * ncols, 3.3))
    window = dict(zip(("vmin", "vmax"), display_range(x[c0], x[c0] > 0), strict=True))  # one for both
    show_plane(axes[0], x[c0], affine, plane, point, **window)
    axes[0].set_title(f"input {modalities[c0]} (network scale)", fontsize=9)
    show_plane(axes[1], y[c0], affine, plane, point, **window)
    axes[1].set_title("restored (network output)", fontsize=9)
    for k, g in enumerate(gates, start=1):
        show_plane(axes[1 + k], x[c0], affine, plane, point)
        _overlay(axes[1 + k], g, affine, plane, point, "attention", vmin=0, vmax=1)
        axes[1 + k].set_title(f"gate {k}", fontsize=9)
    if "gradcam" in explained:
        show_plane(axes[-1], y[c0], affine, plane, point)
        # MONAI's GradCAM is normalised to [0, 1] per slice
        _overlay(axes[-1], explained["gradcam"], affine, plane, point, "GradCAM", vmin=0, vmax=1)
        axes[-1].set_title(f"critic GradCAM (mean score {explained['critic_score']:.3g})", fontsize=9)
    fig.suptitle(f"{plane}, {CONVENTION}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png, dpi=100)
    return png


def comparison_montage(
    volumes: dict[str, str | Path], output: str | Path, axes: Sequence[int] = (1, 2), title: str = ""
) -> Path:
    """PNG rows = the planes normal to the given array axes (through the grid's centre), columns = the
    given volumes (all on one grid), e.g. ``{"trilinear": ..., "model": ...}``; radiological with orientation
    letters; one grey window for every column, the first volume's 0.5-99.5 percentiles."""

    loaded = {k: load_volume(v, validate=False) for k, v in volumes.items()}
    first = next(iter(loaded.values())).numpy()  # one window for all: the columns are compared
    lo, hi = display_range(first, first > 0, include_zero=False)
    fig, grid = pyplot().subplots(
        len(axes), len(loaded), figsize=(3.0 * len(loaded), 3.0 * len(axes) + 0.4), squeeze=False
    )
    for c, (name, image) in enumerate(loaded.items()):
        arr, affine = image.numpy(), np.asarray(image.affine)
        for r, axis in enumerate(axes):
            plane = plane_of_axis(affine, axis)
            show_plane(grid[r][c], arr, affine, plane, cmap="gray", vmin=lo, vmax=hi)
            if c == 0:
                grid[r][c].set_ylabel(plane, fontsize=9)
        grid[0][c].set_title(name, fontsize=9)
    fig.suptitle(f"{title}\n{CONVENTION}" if title else CONVENTION, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, output, dpi=80)
