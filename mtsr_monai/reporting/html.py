"""Figures (montages, difference maps) and the self-contained HTML page of the clinical evaluation.

Figures are drawn with matplotlib's Agg backend, written atomically as PNG files beside the page
(``figures/``) and also embedded in the HTML as base64, so the page opens on its own.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.reporting.views import CONVENTION, draw_panel, literal, plane_image, pyplot, save_figure
from mtsr_monai.transforms.intensity import display_range

PLANES = ("axial", "coronal", "sagittal")


def _planes(
    vol: np.ndarray, point: Sequence[int], affine: np.ndarray | None, planes: Sequence[str] = PLANES
) -> list[tuple[np.ndarray, float]]:
    """``(image, aspect)`` of each plane through array index ``point``, reoriented from ``affine`` (identity:
    the array is taken as RAS) to the radiological display of :mod:`mtsr_monai.reporting.views`."""

    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    world = (affine @ np.append(np.asarray(point, dtype=np.float64), 1.0))[:3]
    return [plane_image(vol, affine, plane, world) for plane in planes]


def _grid_panel(axes: Any, r: int, c: int, name: str, image: np.ndarray, aspect: float, **imshow: Any) -> Any:
    """Panel (row ``r``: image ``name``, column ``c``: plane ``PLANES[c]``) of a figure grid, the row named
    on the first column and the plane on the first row."""
    shown = draw_panel(axes[r, c], image, aspect, PLANES[c], **imshow)
    if c == 0:
        axes[r, c].set_ylabel(literal(name), fontsize=10)
    if r == 0:
        axes[r, c].set_title(PLANES[c], fontsize=10)
    return shown


def montage_figure(
    volumes: Mapping[str, np.ndarray],
    path: str | Path,
    point: Sequence[int],
    mask: np.ndarray | None = None,
    overlay: np.ndarray | None = None,
    title: str = "",
    affine: np.ndarray | None = None,
) -> Path:
    """Rows = images (reference first), columns = axial / coronal / sagittal through array index ``point``,
    radiological from ``affine`` with orientation letters; all rows share the reference's display range;
    ``overlay`` (a binary mask, e.g. the tumour) is outlined in red."""

    plt = pyplot()
    names = list(volumes)
    vmin, vmax = display_range(volumes[names[0]], mask)
    fig, axes = plt.subplots(len(names), 3, figsize=(8.4, 2.8 * len(names) + 0.6), squeeze=False)
    contours = _planes(overlay.astype(np.float32), point, affine) if overlay is not None else None
    for r, name in enumerate(names):
        for c, (image, aspect) in enumerate(_planes(volumes[name], point, affine)):
            _grid_panel(axes, r, c, name, image, aspect, cmap="gray", vmin=vmin, vmax=vmax)
            if contours is not None and contours[c][0].any():
                axes[r, c].contour(contours[c][0], levels=[0.5], colors="red", linewidths=0.6)
    fig.suptitle(f"{literal(title)}\n{CONVENTION}" if title else CONVENTION, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def difference_figure(
    reference: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    path: str | Path,
    point: Sequence[int],
    mask: np.ndarray | None = None,
    title: str = "",
    affine: np.ndarray | None = None,
) -> Path:
    """Signed difference (method - reference) on the axial and coronal planes, one row per method,
    radiological with orientation letters, one symmetric colour scale (99th percentile of |difference| in
    the mask) with its colour bar."""

    plt = pyplot()
    diffs = {
        name: pred.astype(np.float32) - reference.astype(np.float32) for name, pred in predictions.items()
    }
    sel = mask if mask is not None and mask.any() else np.ones(reference.shape, bool)
    scale = max(float(np.percentile(np.abs(d[sel]), 99)) for d in diffs.values()) or 1.0
    fig, axes = plt.subplots(len(diffs), 2, figsize=(6.2, 2.9 * len(diffs) + 0.6), squeeze=False)
    shown = None
    for r, (name, d) in enumerate(diffs.items()):
        for c, (image, aspect) in enumerate(_planes(d, point, affine, PLANES[:2])):
            shown = _grid_panel(axes, r, c, name, image, aspect, cmap="RdBu_r", vmin=-scale, vmax=scale)
    fig.suptitle(f"{literal(title)}\n{CONVENTION}" if title else CONVENTION, fontsize=9)
    fig.tight_layout()
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, label="method - reference")
    return save_figure(fig, path)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-4):
            return f"{v:.2e}"
        return f"{v:.{digits}g}"
    return html.escape(str(value))


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    best: Sequence[str | None] | None = None,
    caption: str = "",
    unranked: int = 0,
) -> str:
    """HTML table; ``best[j]`` = 'min' / 'max' bolds the best numeric cell of column j (first cell of a
    cell pair ``(value, sd)`` is compared, rendered as ``value ± sd``) among the rows after the first
    ``unranked`` (a reference shown for scale, not a contender)."""

    def value_of(cell: Any) -> float | None:
        v = cell[0] if isinstance(cell, tuple) else cell
        return float(v) if isinstance(v, (int, float, np.number)) and math.isfinite(float(v)) else None

    bold: set[tuple[int, int]] = set()
    if best:
        for j, rule in enumerate(best):
            if rule not in ("min", "max"):
                continue
            ranked = list(enumerate(rows))[unranked:]
            vals = [(value_of(r[j]), i) for i, r in ranked if value_of(r[j]) is not None]
            if len(vals) > 1:
                target = (min if rule == "min" else max)(v for v, _ in vals)
                bold |= {(i, j) for v, i in vals if v == target}
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            text = (
                f"{_fmt(cell[0], 3)} ± {_fmt(cell[1], 2)}"
                if isinstance(cell, tuple) and len(cell) == 2
                else _fmt(cell)
            )
            cells.append(f"<td><b>{text}</b></td>" if (i, j) in bold else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def embed_png(path: str | Path, alt: str = "", width: str = "") -> str:
    """``<img>`` with the PNG inlined as base64 (the page then needs no other file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    style = f' style="max-width:{width}"' if width else ""
    name = html.escape(Path(path).name)
    return f'<img alt="{html.escape(alt)}" title="{name}"{style} src="data:image/png;base64,{data}">'


CSS = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1300px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:1.6em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:0.82em}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#eef2f7}td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-style:italic;padding-bottom:4px;color:#444}
.figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.figs img{border:1px solid #ddd;max-width:100%}
.scroll{overflow-x:auto}
.note{color:#555;font-size:0.85em}
"""


def render_template(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` (Jinja2, HTML autoescaping; ``png`` is :func:`embed_png`, ``css`` the
    page style) with ``context``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    return env.get_template(name).render(css=CSS, png=embed_png, **context)


def render_page(title: str, sections: Sequence[tuple[str, str]], intro: str = "") -> str:
    """Assemble the page from (heading, html body) sections; ``intro`` is HTML too."""
    return render_template("page.html.j2", title=title, sections=sections, intro=intro)
