"""The group report of ``mtsr bids ... group``: a TSV and a self-contained HTML page over all participants.

Rows are images: every input with its IQMs, every output with its IQMs, its consistency with the input (tasks
that keep the contrast) or the spread of its samples (translation). Images are grouped by suffix and role
(``T1w input``, ``T1w mtsrSR``, ...). In each group of at least ``min_group`` images a value is an outlier
when it lies outside Tukey's fences, ``[Q1 - k IQR, Q3 + k IQR]`` with ``k = 1.5``; such cells are
highlighted in the table, listed, and drawn in red on the distribution plots, as MRIQC's group report
lets one spot the scans to look at first. The page embeds its figure (base64), so it opens on its own.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.io import atomic_write_text
from mtsr_monai.reporting.html import embed_png, render_page
from mtsr_monai.reporting.views import pyplot, save_figure

#: (column, label, better) shown in the report; better: "low", "high" or "" (no direction)
METRICS = (
    ("cjv", "CJV", "low"),
    ("efc", "EFC", "low"),
    ("fwhm_avg", "FWHM avg (mm)", "low"),
    ("wm2max", "WM2max", ""),
    ("snr_total", "SNR total", "high"),
    ("cnr", "CNR", "high"),
    ("consistency_r", "consistency r", "high"),
    ("consistency_nrmse", "consistency NRMSE", "low"),
    ("mean_std_in_foreground", "sample spread (mean std)", ""),
)
ID_COLUMNS = (
    "participant_id",
    "session_id",
    "bids_name",
    "suffix",
    "group",
    "role",
    "task",
    "source",
    "error",
)


def _value(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None


def tukey_fences(values: Sequence[float], k: float = 1.5) -> tuple[float, float]:
    """``(Q1 - k IQR, Q3 + k IQR)`` of ``values``."""
    q1, q3 = np.percentile(np.asarray(values, float), [25, 75])
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def flag_outliers(rows: list[dict[str, Any]], min_group: int = 4, k: float = 1.5) -> list[dict[str, Any]]:
    """Set ``row["outliers"]`` (metric names, comma-separated) per group; returns one record per flag."""
    flags = []
    for row in rows:
        row["outliers"] = ""
    for group in sorted({r["group"] for r in rows}):
        members = [r for r in rows if r["group"] == group]
        for key, label, _ in METRICS:
            vals = [(r, v) for r in members if (v := _value(r, key)) is not None]
            if len(vals) < min_group:
                continue
            lo, hi = tukey_fences([v for _, v in vals], k)
            for r, v in vals:
                if v < lo or v > hi:
                    r["outliers"] = ",".join(filter(None, [r["outliers"], key]))
                    flags.append(
                        {
                            "group": group,
                            "bids_name": r["bids_name"],
                            "participant_id": r["participant_id"],
                            "metric": label,
                            "value": v,
                            "low": lo,
                            "high": hi,
                        }
                    )
    return flags


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return html.escape(str(v))


def _tsv_cell(value: Any) -> str:
    """A BIDS TSV cell: ``n/a`` for a missing value (None, empty, NaN), never an empty cell."""
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return "n/a"
    return re.sub(r"[\t\r\n]+", " ", str(value))  # a tab or line break would split the row


def write_tsv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``group_iqms.tsv``: one row per image, the ID columns, every metric and the outlier flags."""
    columns = [*ID_COLUMNS, *(k for k, _, _ in METRICS), "outliers"]
    extra = sorted({k for r in rows for k in r} - set(columns))
    lines = ["\t".join(columns + extra)]
    for r in rows:
        lines.append("\t".join(_tsv_cell(r.get(c)) for c in columns + extra))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def distribution_figure(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """One panel per metric: the values of each group as points over a box plot, outliers in red and named."""

    plt = pyplot()
    groups = sorted({r["group"] for r in rows})
    shown = [(k, lab) for k, lab, _ in METRICS if any(_value(r, k) is not None for r in rows)]
    if not shown:
        return None
    cols = 3
    nrows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.2 * nrows), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (key, label) in zip(axes.ravel(), shown, strict=False):
        data = [
            [(r, v) for r in rows if r["group"] == g and (v := _value(r, key)) is not None] for g in groups
        ]
        present = [i for i, d in enumerate(data) if d]
        ax.boxplot(
            [[v for _, v in data[i]] for i in present], positions=present, widths=0.5, showfliers=False
        )
        for i in present:
            for r, v in data[i]:
                bad = key in r.get("outliers", "").split(",")
                x = i + rng.uniform(-0.15, 0.15)
                ax.plot(x, v, "o", ms=4, color="red" if bad else "tab:blue", alpha=0.8)
                if bad:
                    ax.annotate(
                        r["participant_id"],
                        (x, v),
                        fontsize=7,
                        color="red",
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_title(label, fontsize=10)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=7)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(rows_i) + "</tr>" for rows_i in rows)
    table = f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Per group: number of images and median [Q1, Q3] of each metric."""
    shown = [(k, lab) for k, lab, _ in METRICS if any(_value(r, k) is not None for r in rows)]
    out = []
    for g in sorted({r["group"] for r in rows}):
        members = [r for r in rows if r["group"] == g]
        cells = [f"<td>{html.escape(g)}</td>", f"<td>{len(members)}</td>"]
        for key, _ in shown:
            vals = [v for r in members if (v := _value(r, key)) is not None]
            if vals:
                q1, med, q3 = np.percentile(vals, [25, 50, 75])
                cells.append(f"<td>{_fmt(float(med))} [{_fmt(float(q1))}, {_fmt(float(q3))}]</td>")
            else:
                cells.append("<td>n/a</td>")
        out.append(cells)
    return _table(["group", "images", *(f"{lab} median [Q1, Q3]" for _, lab in shown)], out)


def _images_table(rows: Sequence[Mapping[str, Any]]) -> str:
    shown = [(k, lab) for k, lab, _ in METRICS if any(_value(r, k) is not None for r in rows)]
    out = []
    for r in rows:
        bad = set(filter(None, r.get("outliers", "").split(",")))
        cells = [f"<td>{_fmt(r.get(c))}</td>" for c in ("participant_id", "session_id", "group", "bids_name")]
        for key, _ in shown:
            attr = ' class="outlier"' if key in bad else ""
            cells.append(f"<td{attr}>{_fmt(r.get(key))}</td>")
        cells.append(f'<td class="err">{_fmt(r.get("error") or "")}</td>')
        out.append(cells)
    return _table(["participant", "session", "group", "image", *(lab for _, lab in shown), "QC error"], out)


CSS_EXTRA = "td.outlier{background:#f8c4c4;font-weight:bold}td.err{color:#a00;text-align:left}"


def write_group_report(
    rows: list[dict[str, Any]],
    failures: Sequence[Mapping[str, Any]],
    output_dir: Path,
    title: str = "mtsr bids group report",
    intro: str = "",
) -> dict[str, Path]:
    """Flag outliers; write ``group_iqms.tsv``, ``figures/group_distributions.png``, ``group_report.html``."""

    flags = flag_outliers(rows)
    tsv = write_tsv(rows, output_dir / "group_iqms.tsv")
    fig = distribution_figure(rows, output_dir / "figures" / "group_distributions.png")
    participants = sorted({r["participant_id"] for r in rows})
    failed = {f.get("participant_id") for f in failures}  # a failure is a participant's run of one task
    overview = (
        f"<p>{len(participants)} participants, {sum(r['role'] == 'input' for r in rows)} input images, "
        f"{sum(r['role'] == 'output' for r in rows)} output images, "
        f"{len(failed)} failed participant(s) ({len(failures)} failed task run(s)), "
        f"{len(flags)} outlying value(s) (Tukey fences, k = 1.5, groups of at least 4 images).</p>"
    )
    sections = [("Overview", overview), ("Summary by group", _summary_table(rows))]
    if fig is not None:
        sections.append(("Distributions", f'<div class="figs">{embed_png(fig, "IQM distributions")}</div>'))
    flag_rows = [
        [
            f"<td>{_fmt(f[c])}</td>"
            for c in ("participant_id", "group", "bids_name", "metric", "value", "low", "high")
        ]
        for f in flags
    ]
    sections.append(
        (
            "Outliers",
            _table(["participant", "group", "image", "metric", "value", "low fence", "high fence"], flag_rows)
            if flags
            else "<p>None.</p>",
        )
    )
    fail_rows = [
        [f"<td>{_fmt(f.get(c))}</td>" for c in ("participant_id", "task", "error_type", "reason")]
        for f in failures
    ]
    sections.append(
        (
            "Failed participants",
            _table(["participant", "task", "error", "reason"], fail_rows) if failures else "<p>None.</p>",
        )
    )
    sections.append(("All images", _images_table(rows)))
    page = render_page(title, sections, intro).replace("</style>", CSS_EXTRA + "</style>", 1)
    report = atomic_write_text(output_dir / "group_report.html", page)
    return {"html": report, "tsv": tsv, **({"figure": fig} if fig else {})}
