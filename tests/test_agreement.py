"""Overlap metrics, volumes in ml and Bland-Altman statistics / plots."""

from __future__ import annotations

import numpy as np
import pytest

from mtsr_monai.metrics.agreement import bland_altman, overlap_metrics, volume_ml
from mtsr_monai.reporting.agreement import bland_altman_plot


def test_overlap_metrics_match_hand_counts():
    ref = np.zeros((10, 10, 10), bool)
    pred = np.zeros_like(ref)
    ref[:4] = True  # 400 voxels
    pred[2:7] = True  # 500 voxels; overlap 200
    m = overlap_metrics(pred, ref)
    tp, fp, fn, tn = 200, 300, 200, 300
    assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["jaccard"] == pytest.approx(tp / (tp + fp + fn))
    assert m["tpf"] == pytest.approx(tp / (tp + fn))
    assert m["ppv"] == pytest.approx(tp / (tp + fp))
    assert m["tnf"] == pytest.approx(tn / (tn + fp))


def test_overlap_of_empty_masks_is_perfect_and_undefined_ratios_are_none():
    empty = np.zeros((4, 4, 4), bool)
    m = overlap_metrics(empty, empty)
    assert m["dice"] == 1.0 and m["jaccard"] == 1.0 and m["tpf"] is None and m["ppv"] is None


def test_volume_in_ml_uses_the_affine_voxel_size():
    mask = np.ones((10, 10, 10), bool)
    assert volume_ml(mask, np.diag([1.0, 1.0, 1.0, 1])) == pytest.approx(1.0)
    assert volume_ml(mask, np.diag([0.5, 2.0, 3.0, 1])) == pytest.approx(3.0)


def test_bland_altman_bias_and_limits_of_agreement():
    ref = np.array([100.0, 200.0, 300.0, 400.0])
    method = ref * 1.1  # +10% of the reference = 2*0.1/2.1 of the mean
    st = bland_altman(method, ref, percent=True)
    assert st["bias"] == pytest.approx(100 * 0.1 / 1.05)
    assert st["sd"] == pytest.approx(0.0, abs=1e-9)
    ml = bland_altman([1.0, 2.0, 4.0], [0.0, 2.0, 3.0], percent=False)
    d = np.array([1.0, 0.0, 1.0])
    assert ml["bias"] == pytest.approx(d.mean())
    assert ml["loa_high"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1))
    assert ml["loa_low"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1))


def test_bland_altman_plot_writes_a_png_with_methods_overlaid(tmp_path):
    path = bland_altman_plot(
        {"sr": ([1.0, 2.1, 3.0], [1.1, 2.0, 3.2]), "trilinear": ([0.8, 1.7, 2.5], [1.1, 2.0, 3.2])},
        tmp_path / "ba_csf.png",
        title="CSF",
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["ba_csf.png"]  # no temp file left behind
