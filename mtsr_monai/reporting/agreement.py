"""The Bland-Altman figure of volume agreement (its statistics: :mod:`mtsr_monai.metrics.agreement`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mtsr_monai.metrics.agreement import bland_altman
from mtsr_monai.reporting.views import pyplot, save_figure

__all__ = ["bland_altman_plot"]


def bland_altman_plot(
    pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "",
    percent: bool = True,
) -> Path:
    """One Bland-Altman PNG with every method overlaid: ``pairs`` maps a method name to
    (method volumes, reference volumes) in ml, one entry per subject. Written atomically."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*X"
    unit = "%" if percent else "ml"
    for i, (name, (a, b)) in enumerate(pairs.items()):
        st = bland_altman(a, b, percent)
        c = colours[i % len(colours)]
        ax.scatter(
            st["mean"],
            [np.nan if v is None else v for v in st["difference"]],
            color=c,
            marker=markers[i % len(markers)],
            label=name if st["bias"] is None else f"{name} (bias {st['bias']:.2f} {unit})",
            zorder=3,
        )
        if st["bias"] is not None:
            ax.axhline(st["bias"], color=c, lw=1.2)
        if st["sd"] is not None:
            ax.axhline(st["loa_low"], color=c, lw=0.8, ls="--")
            ax.axhline(st["loa_high"], color=c, lw=0.8, ls="--")
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("mean of method and reference volume (ml)")
    ax.set_ylabel("difference (% of mean)" if percent else "difference (ml)")
    ax.set_title(title or "Bland-Altman")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
