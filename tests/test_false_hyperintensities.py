"""scripts/mt_false_hyperintensities.py: the figure shows a slice a reader can place."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import mt_false_hyperintensities  # noqa: E402


def test_the_fallback_figure_slice_skips_the_brains_thin_end_slices():
    brain = np.zeros((20, 20, 10), bool)
    brain[2:18, 2:18, 2:9] = True
    brain[9:11, 9:11, 1] = True  # the brain's lowest slice: 4 voxels
    excess = np.zeros(brain.shape, np.float32)
    excess[9:11, 9:11, 1] = 5.0  # large there by partial volume
    excess[5:8, 5:8, 6] = 1.0
    assert mt_false_hyperintensities.figure_slice(excess, brain) == 1
    assert mt_false_hyperintensities.figure_slice(excess, brain, min_brain_share=0.5) == 6
