"""scripts/prepare_open_ms_pairs.py: the 1 mm grid covers the scan; nothing is written into shared data."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import prepare_open_ms_pairs  # noqa: E402


def test_the_one_mm_grid_covers_the_same_extent_with_the_scans_slices():
    scan = sitk.Image([320, 300, 36], sitk.sitkFloat32)
    scan.SetSpacing((0.72, 0.75, 4.0))
    scan.SetOrigin((-110.0, -95.0, -70.0))
    scan.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    grid = prepare_open_ms_pairs.in_plane_grid(scan)
    assert grid.GetSpacing() == (1.0, 1.0, 4.0)
    assert grid.GetSize() == (230, 225, 36)

    def corner(image):
        return np.array(image.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, 0.0)))

    np.testing.assert_allclose(corner(grid), corner(scan), atol=1e-9)


def test_an_output_folder_inside_the_shared_data_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(prepare_open_ms_pairs, "DATA_ROOT", tmp_path)
    with pytest.raises(SystemExit) as stop:
        prepare_open_ms_pairs.main(["--root", str(tmp_path), "--out", str(tmp_path / "pairs")])
    assert stop.value.code == 2
    assert not (tmp_path / "pairs").exists()
