"""Figures of `mtsr run` and `mtsr demo`: the translation montage and the super-resolution comparison.

All panels follow :mod:`mtsr_monai.reporting.views` (radiological, orientation letters, voxel aspect);
maps of spread or error get a colour bar. PNGs are written atomically with matplotlib's Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.reporting.views import (
    CONVENTION,
    colour_bar,
    draw_panel,
    plane_image,
    pyplot,
    save_figure,
    show_plane,
)
from mtsr_monai.transforms.intensity import display_range

__all__ = ["axial_montage", "sr_comparison_figure", "zoom_box"]

#: a panel: (title, volume, affine)
Panel = tuple[str, Any, Any]


def axial_montage(
    panels: Sequence[Panel],
    path: str | Path,
    title: str = "",
    point: Sequence[float] | None = None,
    per_row: int = 4,
) -> Path:
    """Axial panels through the world ``point`` (mm; default the first volume's centre), ``per_row`` a row,
    3.2 in each so their titles stay readable. Panels named ``std...`` are a spread map (magma, colour bar);
    the others are grey, each from 0 (or its 0.5th percentile, if below) to its 99.5th percentile."""
    plt = pyplot()
    n = len(panels)
    cols = min(per_row, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, volume, affine) in zip(axes.flat, panels, strict=False):
        image, _ = plane_image(volume, affine, "axial", point)
        spread = name.lower().startswith("std")
        vmin, vmax = display_range(image)  # a spread map is >= 0, so its window starts at 0 too
        cmap = "magma" if spread else "gray"
        shown = show_plane(ax, volume, affine, "axial", point, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=10)
        if spread:
            colour_bar(ax, shown, "std across samples")
    fig.suptitle(f"{title}\naxial, {CONVENTION}" if title else f"axial, {CONVENTION}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def zoom_box(
    image: np.ndarray, mask: np.ndarray | None = None, fraction: float = 0.3
) -> tuple[float, float, float, float]:
    """``(row0, row1, col0, col1)`` as fractions of the image: the square of side ``fraction`` of the
    smaller image side holding the most edge energy inside ``mask`` (the brain: fine anatomy, not its
    outline against the background), where an inset shows what SR changes."""
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float32)
    side = max(4, int(round(fraction * min(img.shape))))
    edges = np.hypot(ndimage.sobel(img, 0), ndimage.sobel(img, 1))
    if mask is not None and np.asarray(mask).any():
        edges = edges * ndimage.binary_erosion(np.asarray(mask, bool), iterations=3)
    energy = ndimage.uniform_filter(edges, side)
    half = side // 2
    inner = energy[half : img.shape[0] - half, half : img.shape[1] - half]
    r, c = np.unravel_index(int(np.argmax(inner)), inner.shape)
    h, w = img.shape
    return r / h, (r + side) / h, c / w, (c + side) / w


def _crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    h, w = image.shape
    r0, r1, c0, c1 = (int(round(f * n)) for f, n in zip(box, (h, h, w, w), strict=True))
    return image[r0 : max(r1, r0 + 1), c0 : max(c1, c0 + 1)]


def _box_outline(ax: Any, image: np.ndarray, box: Sequence[float]) -> None:
    from matplotlib.patches import Rectangle

    h, w = image.shape
    r0, r1, c0, c1 = box
    ax.add_patch(
        Rectangle((c0 * w - 0.5, r0 * h - 0.5), (c1 - c0) * w, (r1 - r0) * h, fill=False, ec="cyan", lw=1.2)
    )


def sr_comparison_figure(
    panels: Sequence[Panel],
    path: str | Path,
    truth: str,
    point: Sequence[float] | None = None,
    mask: Any = None,
    title: str = "",
) -> Path:
    """Input, baselines, SR and ground truth side by side (row 1, the zoomed region outlined in cyan), the
    zoomed region of each (row 2), and below each image on the truth's grid its signed error
    ``image - truth``, whole (row 3) and zoomed (row 4), on one symmetric scale with its colour bar. All axial
    and radiological; grey levels shared (truth's 0.5-99.5th percentiles inside ``mask``, a volume on the
    truth's grid). The panels must cover one field of view (SR overlays its input), one zoom box fits all."""
    plt = pyplot()
    names = [name for name, _, _ in panels]
    views = {name: plane_image(vol, aff, "axial", point) for name, vol, aff in panels}
    truth_img, truth_aspect = views[truth]
    truth_aff = dict((n, a) for n, _, a in panels)[truth]
    brain = plane_image(mask, truth_aff, "axial", point)[0] > 0 if mask is not None else None
    vmin, vmax = display_range(truth_img, brain)
    box = zoom_box(truth_img, brain)
    diffs = {n: views[n][0] - truth_img for n in names if n != truth and views[n][0].shape == truth_img.shape}
    cols = len(names)
    fig = plt.figure(figsize=(3.1 * cols + 0.9, 3.1 * 4 + 0.7))
    grid = fig.add_gridspec(4, cols + 1, width_ratios=[1] * cols + [0.06])
    for c, name in enumerate(names):
        image, aspect = views[name]
        ax = fig.add_subplot(grid[0, c])
        draw_panel(ax, image, aspect, cmap="gray", vmin=vmin, vmax=vmax)
        _box_outline(ax, image, box)
        ax.set_title(name, fontsize=10)
        ax = fig.add_subplot(grid[1, c])
        draw_panel(ax, _crop(image, box), aspect, cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(f"{name}, zoom", fontsize=9)
    errors = [np.abs(d[brain] if brain is not None and brain.any() else d) for d in diffs.values()]
    scale = max((float(np.percentile(e, 99)) for e in errors), default=1.0) or 1.0
    shown = None
    for c, name in enumerate(names):  # each error below its own image's column
        for row, zoomed in ((2, False), (3, True)) if name in diffs else ():
            ax = fig.add_subplot(grid[row, c])
            diff = _crop(diffs[name], box) if zoomed else diffs[name]
            shown = draw_panel(ax, diff, truth_aspect, cmap="RdBu_r", vmin=-scale, vmax=scale)
            ax.set_title(f"{name} - {truth}" + (", zoom" if zoomed else ""), fontsize=9)
    for row in (2, 3) if shown is not None else ():
        bar = fig.colorbar(shown, cax=fig.add_subplot(grid[row, cols]))
        bar.set_label("image - truth (truth's intensity units)", fontsize=8)
    fig.suptitle(f"{title}\naxial, {CONVENTION}" if title else f"axial, {CONVENTION}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
