"""Figures show every volume radiologically from its affine, whatever its storage order on disk."""

from __future__ import annotations

import numpy as np
import pytest

from mtsr_monai.reporting.views import plane_image, plane_of_axis

# 20 x 24 x 16 voxels of 1 x 1 x 3 mm in RAS storage; a bright block at the patient's right, anterior, top
RAS = np.diag([1.0, 1.0, 3.0, 1.0])


def _ras_volume() -> np.ndarray:
    vol = np.zeros((20, 24, 16), np.float32)
    vol[15:19, 18:22, 8] = 1.0  # high x = right, high y = anterior
    return vol


def _stored(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored RAS, LPS (BraTS, DICOM-like) or slice-first (z, y, x)."""
    vol = _ras_volume()
    if kind == "ras":
        return vol, RAS
    if kind == "lps":
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = [19, 23]  # index 0 of the stored array is the old last index
        return vol[::-1, ::-1].copy(), RAS @ flip
    perm = np.zeros((4, 4))
    perm[0, 2] = perm[1, 1] = perm[2, 0] = perm[3, 3] = 1.0  # stored index (k, j, i) -> RAS index (i, j, k)
    return np.transpose(vol, (2, 1, 0)).copy(), RAS @ perm


@pytest.mark.parametrize("kind", ["ras", "lps", "slice_first"])
def test_axial_view_puts_patient_right_on_the_left_and_anterior_up(kind):
    vol, affine = _stored(kind)
    image, aspect = plane_image(vol, affine, "axial", point=(16.5, 19.5, 24.0))
    rows, cols = np.nonzero(image)
    assert image.shape == (24, 20) and aspect == pytest.approx(1.0)
    assert cols.max() < 10 and rows.max() < 12  # left half (patient's right), upper half (anterior)
    np.testing.assert_array_equal(image, plane_image(*_stored("ras"), "axial", point=(16.5, 19.5, 24.0))[0])


def test_coronal_and_sagittal_views_keep_the_voxel_aspect():
    vol, affine = _stored("lps")
    coronal, aspect = plane_image(vol, affine, "coronal", point=(16.5, 19.5, 24.0))
    assert coronal.shape == (16, 20) and aspect == pytest.approx(3.0)
    sagittal, aspect = plane_image(vol, affine, "sagittal", point=(16.5, 19.5, 24.0))
    rows, cols = np.nonzero(sagittal)
    assert sagittal.shape == (16, 24) and aspect == pytest.approx(3.0)
    assert cols.max() < 12  # anterior on the viewer's left


def test_plane_of_an_array_axis_comes_from_the_affine():
    _, affine = _stored("slice_first")
    assert [plane_of_axis(affine, a) for a in range(3)] == ["axial", "coronal", "sagittal"]


def test_a_montage_of_an_image_with_no_positive_intensity_is_drawn(tmp_path):
    from mtsr_monai.reporting.figures import axial_montage

    negative = -np.random.default_rng(0).random((16, 16, 4)).astype(np.float32) - 1.0
    written = axial_montage(
        [("input", negative, np.eye(4)), ("std", np.zeros((16, 16, 4)), np.eye(4))], tmp_path / "m.png"
    )
    assert written.stat().st_size > 0


def test_an_image_with_no_positive_intensity_is_warned_about():
    from mtsr_monai.io import validate_volume

    with pytest.warns(UserWarning, match="no positive intensity"):
        validate_volume(-np.arange(64, dtype=np.float32).reshape(4, 4, 4) - 1, np.eye(4))


def test_canonical_refuses_anything_but_a_3d_volume():
    from mtsr_monai.reporting.views import canonical

    with pytest.raises(ValueError, match="3D"):
        canonical(np.zeros((4, 4, 4, 3)), np.eye(4))
