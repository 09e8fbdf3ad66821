"""Slices of volumes shown as a radiologist reads them, whatever the array order on disk.

One convention for every figure of the project (and ``scripts/bench_mt.py``): **radiological**. The volume
is first reoriented from its affine to the closest RAS+ axes (axis flips and permutations, no resampling),
then each plane is drawn with the patient's right on the image's left:

- axial: anterior at the top, right (R) on the left, left (L) on the right;
- coronal: superior at the top, R on the left;
- sagittal: superior at the top, anterior (A) on the left.

Every panel carries its orientation letters (:func:`orientation_markers`) and is drawn with the aspect of its
voxel sizes, so thick-slice and super-resolved volumes look alike in size. Slices of several volumes are
matched by a world point (mm), so volumes on different grids (LR input, SR output) show the same anatomy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.io import atomic_output
from mtsr_monai.io.geometry import AxisOrder

#: plane -> RAS axis normal to it
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
#: plane -> letters at the (left, right, top, bottom) edges of a radiological display
MARKERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}
CONVENTION = "radiological (patient's right on the image's left; anterior / superior up)"

__all__ = [
    "CONVENTION",
    "MARKERS",
    "PLANE_AXIS",
    "canonical",
    "centre_point",
    "colour_bar",
    "orientation_markers",
    "plane_image",
    "plane_of_axis",
    "show_plane",
]


def literal(text: str) -> str:
    """``text`` as matplotlib draws it literally: a ``$`` pair in a file name is not mathtext (it failed to
    parse or came out as math)."""
    return str(text).replace("$", r"\$")


def canonical(volume: Any, affine: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` of a 3D ``volume`` reoriented to the closest RAS+ axes (flips and swaps only)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"canonical takes a 3D volume, got shape {volume.shape}")
    order = AxisOrder(affine, "RAS")
    return order.apply(volume), order.affine(volume.shape)


def centre_point(mask: np.ndarray, affine: Any) -> np.ndarray:
    """World point (mm) at the centre of mass of ``mask`` (of the whole grid when empty)."""
    mask = np.asarray(mask, bool)
    index = np.argwhere(mask).mean(axis=0) if mask.any() else (np.array(mask.shape) - 1) / 2.0
    return (np.asarray(affine, dtype=np.float64) @ np.append(index, 1.0))[:3]


def plane_of_axis(affine: Any, axis: int) -> str:
    """The anatomical plane whose slices are normal to array ``axis`` (world axis nearest its direction)."""
    direction = np.abs(np.asarray(affine, dtype=np.float64)[:3, axis])
    return {0: "sagittal", 1: "coronal", 2: "axial"}[int(np.argmax(direction))]


def _index_at(ras_affine: np.ndarray, shape: Sequence[int], point: Sequence[float], axis: int) -> int:
    """Index along RAS ``axis`` of the slice nearest to the world ``point`` (clipped to the grid)."""
    index = np.linalg.solve(ras_affine, np.append(np.asarray(point, dtype=np.float64), 1.0))[:3]
    return int(np.clip(np.rint(index[axis]), 0, shape[axis] - 1))


def plane_image(
    volume: Any, affine: Any, plane: str = "axial", point: Sequence[float] | None = None
) -> tuple[np.ndarray, float]:
    """``(image, aspect)``: the ``plane`` slice through the world ``point`` (default: the grid's centre),
    radiological, ready for ``imshow(image, aspect=aspect)`` (rows top to bottom, origin upper)."""
    ras, ras_affine = canonical(volume, affine)
    axis = PLANE_AXIS[plane]
    if point is None:
        point = centre_point(np.ones(ras.shape[:3], bool), ras_affine)
    k = _index_at(ras_affine, ras.shape, point, axis)
    cols_axis, rows_axis = (a for a in range(3) if a != axis)
    # transpose: rows = the upper RAS axis (A or S), flipped so it grows upwards; columns mirrored so R
    # (axial, coronal) or A (sagittal) is on the viewer's left
    image = np.take(ras, k, axis=axis).T[::-1, ::-1]
    spacing = np.linalg.norm(ras_affine[:3, :3], axis=0)
    return np.ascontiguousarray(image), float(spacing[rows_axis] / spacing[cols_axis])


def colour_bar(ax: Any, shown: Any, label: str, size: float = 7) -> Any:
    """A colour bar beside ``ax``, as tall as the image it describes (not the figure row)."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    cax = make_axes_locatable(ax).append_axes("right", size="5%", pad=0.04)
    bar = ax.figure.colorbar(shown, cax=cax)
    bar.set_label(label, fontsize=size)
    bar.ax.tick_params(labelsize=size)
    return bar


def orientation_markers(ax: Any, plane: str, color: str = "yellow", size: float = 9) -> None:
    """The four orientation letters of ``plane`` at the edges of ``ax`` (outlined for any background)."""
    import matplotlib.patheffects as pe

    left, right, top, bottom = MARKERS[plane]
    outline = [pe.withStroke(linewidth=2, foreground="black")]
    for x, y, letter in ((0.03, 0.5, left), (0.97, 0.5, right), (0.5, 0.97, top), (0.5, 0.03, bottom)):
        ax.text(
            x,
            y,
            letter,
            color=color,
            fontsize=size,
            fontweight="bold",
            ha="center",
            va="center",
            transform=ax.transAxes,
            path_effects=outline,
        )


def show_plane(
    ax: Any,
    volume: Any,
    affine: Any,
    plane: str = "axial",
    point: Sequence[float] | None = None,
    markers: bool = True,
    **imshow: Any,
) -> Any:
    """Draw :func:`plane_image` on ``ax`` (no ticks, orientation letters); returns the ``AxesImage``."""
    image, aspect = plane_image(volume, affine, plane, point)
    imshow.setdefault("cmap", "gray")
    imshow.setdefault("interpolation", "nearest")
    shown = ax.imshow(image, aspect=aspect, **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    if markers:
        orientation_markers(ax, plane)
    return shown


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: float | str = "figure") -> Path:
    """Write ``fig`` as a PNG (white background) atomically, its folder created, and close it."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    pyplot().close(fig)
    return path


def draw_panel(ax: Any, image: np.ndarray, aspect: float, plane: str = "axial", **imshow: Any) -> Any:
    """A 2D ``image`` already in display orientation on ``ax``: nearest-neighbour pixels, no ticks, the
    orientation letters of ``plane``; returns the ``AxesImage`` (for a colour bar)."""
    shown = ax.imshow(image, aspect=aspect, interpolation="nearest", **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    orientation_markers(ax, plane, size=8)
    return shown
