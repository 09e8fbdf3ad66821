"""EM tissue segmentation, template priors and the FLAIR hyperintensity rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mtsr_monai.metrics.agreement import overlap_metrics
from mtsr_monai.metrics.segmentation import (
    fit_gmm,
    guess_contrast,
    segment_tissues,
    template_priors,
    wmh_mask,
)


def _three_class_phantom(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Nested spheres plus a bumpy boundary: 1 CSF, 2 GM, 3 WM, T1-like intensities with noise."""
    g = np.indices((48, 48, 48)).astype(np.float64) - 23.5
    r = np.sqrt((g**2).sum(0)) + 1.5 * np.sin(g[0] / 3.0) * np.cos(g[1] / 4.0)
    labels = np.zeros(r.shape, np.uint8)
    labels[r < 22] = 1
    labels[r < 18] = 2
    labels[r < 12] = 3
    means = np.array([0.0, 0.25, 0.55, 0.85])
    img = means[labels] + 0.05 * np.random.default_rng(seed).standard_normal(r.shape)
    return np.where(labels > 0, img, 0.0).astype(np.float32), labels


def test_em_recovers_three_class_phantom_with_dice_above_095():
    img, truth = _three_class_phantom()
    seg = segment_tissues(img, truth > 0, ("t1",))
    for label in (1, 2, 3):
        assert overlap_metrics(seg == label, truth == label)["dice"] > 0.95, label


def test_class_names_follow_the_contrast_ordering():
    img, truth = _three_class_phantom()
    # a FLAIR-like image of the same anatomy: CSF dark, WM darker than GM
    flair_means = np.array([0.0, 0.1, 0.8, 0.5])
    flair = flair_means[truth] + 0.04 * np.random.default_rng(1).standard_normal(truth.shape)
    seg = segment_tissues(flair.astype(np.float32), truth > 0, ("flair",))
    assert overlap_metrics(seg == 3, truth == 3)["dice"] > 0.95
    assert overlap_metrics(seg == 2, truth == 2)["dice"] > 0.95


def test_multispectral_em_separates_classes_that_one_channel_confuses():
    _, truth = _three_class_phantom()
    rng = np.random.default_rng(2)
    # channel 1 confuses GM with WM, channel 2 CSF with GM: only together are the three distinct
    a = np.array([0.0, 0.2, 0.7, 0.7])[truth] + 0.05 * rng.standard_normal(truth.shape)
    b = np.array([0.0, 0.3, 0.3, 0.9])[truth] + 0.05 * rng.standard_normal(truth.shape)
    seg = segment_tissues([a.astype(np.float32), b.astype(np.float32)], truth > 0, ("t1", "t1"))
    for label in (1, 2, 3):
        assert overlap_metrics(seg == label, truth == label)["dice"] > 0.9, label


def test_fit_gmm_recovers_known_means_of_a_1d_mixture():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.5, 4000), rng.normal(1, 0.3, 2000), rng.normal(3, 0.4, 4000)])
    fit = fit_gmm(x[:, None], np.array([[-1.0], [0.5], [2.0]]))
    assert fit.converged
    assert np.allclose(np.sort(fit.means[:, 0]), [-2, 1, 3], atol=0.05)
    assert np.allclose(np.sort(fit.weights), [0.2, 0.4, 0.4], atol=0.02)


def test_four_class_mode_adds_a_pial_label():
    img, truth = _three_class_phantom()
    seg = segment_tissues(img, truth > 0, ("t1",), n_classes=4)
    assert set(np.unique(seg)) == {0, 1, 2, 3, 4}


def test_template_priors_on_the_template_grid_reproduce_its_wm_map():
    import nibabel as nib

    from mtsr_monai.io.template import template_path

    wm_img = nib.load(str(template_path("wm")))
    wm = np.asarray(wm_img.dataobj, np.float32) / 255.0
    block = np.zeros(wm.shape, bool)
    block[70:110, 90:130, 70:100] = True  # a central block keeps the test fast
    pri = template_priors(wm.shape, wm_img.affine, block)
    assert np.allclose(pri[block][:, 2], wm[block], atol=1e-4)
    assert np.allclose(pri[block].sum(axis=1)[pri[block][:, 0] > 0], 1.0, atol=1e-4)


def test_wmh_rule_finds_bright_lesions_and_drops_tiny_ones():
    img, truth = _three_class_phantom()
    flair = np.array([0.0, 0.1, 0.45, 0.35])[truth] + 0.03 * np.random.default_rng(4).standard_normal(
        truth.shape
    )
    g = np.indices(truth.shape) - np.array([23, 23, 30])[:, None, None, None]
    lesion = (g**2).sum(0) < 16  # radius-4 lesion in WM
    speck = np.zeros_like(lesion)
    speck[23, 15, 23] = True  # a single bright voxel: below the minimum volume
    flair = np.where(lesion | speck, 1.0, flair).astype(np.float32)
    mask = wmh_mask(flair, truth > 0, min_volume_mm3=10)
    assert overlap_metrics(mask, lesion)["dice"] > 0.8
    assert not mask[23, 15, 23]
    assert wmh_mask(flair, truth > 0, region=ndimage.binary_erosion(truth == 1, iterations=1)).sum() == 0


@pytest.mark.parametrize(
    ("name", "contrast"),
    [
        ("sub_FLAIR.nii.gz", "flair"),
        ("Brats18_x_t1ce.nii.gz", "t1ce"),
        ("T2.nii.gz", "t2"),
        ("scan.nii", "t1"),
        ("sub-01_PDw.nii.gz", "pd"),  # BIDS suffixes, as mtsr datalist reads them
        ("BraTS-GLI-00000-000-t2f.nii.gz", "flair"),  # BraTS 2023: t2f is the FLAIR, not a T2
        ("sub-01_ce-gad_T1w.nii.gz", "t1ce"),
        ("sub-01_acq-flair_T1w.nii.gz", "t1"),  # an acquisition label does not name the contrast
    ],
)
def test_guess_contrast_from_file_name(name, contrast):
    assert guess_contrast(name) == contrast


def test_presmoothing_reads_a_textured_lesion_as_one_region_without_an_edge_rim():
    truth = np.zeros((48, 48, 48), np.uint8)
    g = np.indices(truth.shape) - 24
    truth[(g**2).sum(0) < 20**2] = 1
    lesion = ((g - np.array([6, 0, 0])[:, None, None, None]) ** 2).sum(0) < 6**2
    checker = (np.indices(truth.shape).sum(0) % 2).astype(bool)  # every other lesion voxel stays normal
    flair = np.where(truth > 0, 0.35, 0.0) + 0.01 * np.random.default_rng(0).standard_normal(truth.shape)
    flair = np.where(lesion & checker, 1.0, flair * (truth > 0)).astype(np.float32)
    raw = wmh_mask(flair, truth > 0)  # isolated bright voxels: each below the minimum volume
    smoothed = wmh_mask(flair, truth > 0, presmooth=1.0)
    assert overlap_metrics(raw, lesion)["dice"] < 0.1
    assert overlap_metrics(smoothed, lesion)["dice"] > 0.75
    assert not (smoothed & ~ndimage.binary_dilation(lesion, iterations=2)).any()
