"""IQMs: FWHM of a known Gaussian blur, MRIQC formulas re-implemented independently on a real scan,
monotonic behaviour under blur and noise, the `mtsr qc` command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from mtsr_monai.metrics import qc
from tests.conftest import write_nifti


def _blurred_noise(sigma_vox: float, shape=(64, 64, 64), seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(shape)
    return ndimage.gaussian_filter(noise, sigma_vox, mode="wrap").astype(np.float32)


def _tissue_phantom(seed: int = 0, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Concentric spheres: WM core, GM shell, CSF shell, zero background (skull-stripped-like)."""
    g = np.indices((40, 40, 40)).astype(np.float64) - 19.5
    r = np.sqrt((g**2).sum(0))
    labels = np.zeros(r.shape, np.uint8)
    labels[r < 18] = 1
    labels[r < 15] = 2
    labels[r < 9] = 3
    means = np.array([0.0, 0.3, 0.6, 0.9])
    img = means[labels] + np.where(labels > 0, 0.04, 0.0) * np.random.default_rng(seed).standard_normal(
        r.shape
    )
    if noise:
        rng = np.random.default_rng(seed + 1)
        img = np.sqrt(
            (img + noise * rng.standard_normal(r.shape)) ** 2 + (noise * rng.standard_normal(r.shape)) ** 2
        )
        img = np.where(labels > 0, img, 0.0)
    return img.astype(np.float32), labels


def test_fwhm_of_gaussian_blurred_noise_matches_known_fwhm_within_5_percent():
    sigma = 2.0  # voxels; FWHM = 2 sqrt(2 ln 2) sigma
    spacing = (1.0, 1.5, 3.0)
    out = qc.fwhm(_blurred_noise(sigma), None, spacing)
    expected = 2.0 * math.sqrt(2.0 * math.log(2.0)) * sigma
    for axis, name in enumerate("xyz"):
        assert out[f"fwhm_{name}"] == pytest.approx(expected * spacing[axis], rel=0.05)
    assert out["fwhm_avg"] == pytest.approx(expected * np.mean(spacing), rel=0.05)


def test_blurring_raises_fwhm_and_rician_noise_raises_cjv():
    img, labels = _tissue_phantom()
    brain = labels > 0
    base = qc.compute_iqms(img, labels, brain)
    blurred = qc.compute_iqms(ndimage.gaussian_filter(img, 1.5) * brain, labels, brain)
    noisy_img, _ = _tissue_phantom(noise=0.15)
    noisy = qc.compute_iqms(noisy_img, labels, brain)
    assert blurred["fwhm_avg"] > base["fwhm_avg"] * 1.3
    assert noisy["cjv"] > base["cjv"] * 1.5


def test_paper_variant_uses_mean_sd_cjv_unnormalised_efc_and_95th_percentile():
    img, labels = _tissue_phantom()
    wm, gm = labels == 3, labels == 2
    p = qc.compute_iqms(img, labels, labels > 0, variant="paper")
    w, g = img[wm].astype(np.float64), img[gm].astype(np.float64)
    assert p["cjv"] == pytest.approx((w.std() + g.std()) / abs(w.mean() - g.mean()), rel=1e-9)
    assert p["wm2max"] == pytest.approx(np.median(w) / np.percentile(img.astype(np.float64), 95), rel=1e-9)
    assert p["efc"] < 0  # the paper's sum without 1 / E_max is a negative entropy
    assert 0 < qc.compute_iqms(img, labels, labels > 0)["efc"] < 1


def test_skull_stripped_image_has_no_air_so_snrd_is_null_and_cnr_finite():
    img, labels = _tissue_phantom()
    out = qc.compute_iqms(img, labels)
    assert out["air_voxels"] == 0 and out["sd_air"] == 0.0
    assert out["snrd_wm"] is None and out["snrd_total"] is None
    assert out["cnr"] is not None and math.isfinite(out["cnr"])


def test_air_with_noise_gives_dietrich_snr():
    img, labels = _tissue_phantom()
    rng = np.random.default_rng(3)
    # Rayleigh background (magnitude of complex Gaussian noise, sigma 0.02) around an unstripped "head"
    bg = np.hypot(0.02 * rng.standard_normal(img.shape), 0.02 * rng.standard_normal(img.shape))
    img = np.pad(np.where(labels > 0, img, bg), 12, mode="constant").astype(np.float32)
    pad = np.hypot(0.02 * rng.standard_normal(img.shape), 0.02 * rng.standard_normal(img.shape))
    img = np.where(img == 0, pad, img).astype(np.float32)
    labels = np.pad(labels, 12)
    out = qc.compute_iqms(img, labels, labels > 0)
    assert out["air_voxels"] > 1000
    # sd of Rayleigh(sigma) = sigma sqrt((4 - pi) / 2): Dietrich's SNR recovers median_WM / sigma
    assert out["snrd_wm"] == pytest.approx(np.median(img[labels == 3]) / 0.02, rel=0.1)


@pytest.mark.parametrize("stripped", [True, False])
def test_iqms_from_masks_found_once_equal_those_found_inside_and_test_stripping_once(stripped, monkeypatch):
    img, labels = _tissue_phantom()
    img = img + np.float32(0.3) * (labels > 0)  # CSF well above the zero background: one head
    if not stripped:  # an unstripped head: noisy air all around
        rng = np.random.default_rng(4)
        img = np.pad(img, 10) + np.abs(0.05 * rng.standard_normal(np.add(img.shape, 20))).astype(np.float32)
        labels = np.pad(labels, 10)
    inside = qc.compute_iqms(img, labels)
    calls = []
    real = qc.is_skull_stripped
    monkeypatch.setattr(qc, "is_skull_stripped", lambda *a, **k: calls.append(1) or real(*a, **k))
    masks = qc.image_masks(img)
    once = qc.compute_iqms(img, labels, **masks)
    assert len(calls) == 1 and masks["skull_stripped"] is stripped
    assert json.dumps(once, sort_keys=True) == json.dumps(inside, sort_keys=True)


def test_a_small_air_region_counts_alike_on_an_image_and_its_finer_resampling():
    img, labels = _tissue_phantom()
    air = np.zeros(img.shape, bool)
    air[0, 0, :9] = True  # 9 voxels of 4 x 4 x 1 mm = 144 mm3
    img = np.where(air, np.random.default_rng(0).uniform(0.01, 0.05, img.shape), img).astype(np.float32)
    coarse = qc.compute_iqms(img, labels, labels > 0, spacing=(4, 4, 1), air=air)
    fine = [np.repeat(np.repeat(a, 4, 0), 4, 1) for a in (img, labels, air)]  # the same region, 1 mm grid
    finer = qc.compute_iqms(fine[0], fine[1], fine[1] > 0, spacing=(1, 1, 1), air=fine[2])
    assert coarse["air_voxels"] == 9 and finer["air_voxels"] == 144
    assert coarse["sd_air"] == pytest.approx(finer["sd_air"], rel=0.01)
    tiny = qc.compute_iqms(fine[0], fine[1], fine[1] > 0, spacing=(0.25, 0.25, 1), air=fine[2])  # 9 mm3
    assert tiny["air_voxels"] == 0 and tiny["sd_air"] == 0


def _mriqc_reference(img: np.ndarray, wm: np.ndarray, gm: np.ndarray) -> dict:
    """MRIQC's published formulas, written directly in numpy (independent of mtsr_monai.metrics.qc).

    MRIQC's MAD is statsmodels' ``mad()``: the median absolute deviation divided by the standard
    normal's 0.75 quantile (scipy's ``norm.ppf(0.75)``, about 0.6745).
    """
    from scipy.stats import norm

    x = img.astype(np.float64)
    mu_wm, mu_gm = np.median(x[wm]), np.median(x[gm])
    mad_wm = np.median(np.abs(x[wm] - mu_wm)) / norm.ppf(0.75)
    mad_gm = np.median(np.abs(x[gm] - mu_gm)) / norm.ppf(0.75)
    flat = np.clip(x.ravel(), 0, None)
    n_vox = flat.size
    b_max = np.sqrt((flat**2).sum())
    efc_max = 1.0 * n_vox * (1.0 / np.sqrt(n_vox)) * np.log(1.0 / np.sqrt(n_vox))
    return {
        "cjv": (mad_wm + mad_gm) / abs(mu_wm - mu_gm),
        "efc": (1.0 / efc_max) * np.sum((flat / b_max) * np.log((flat + 1e-16) / b_max)),
        "wm2max": mu_wm / np.percentile(x.ravel(), 99.95),
    }


def test_cjv_efc_wm2max_match_independent_mriqc_formulas_on_real_scan(brats_case):
    import nibabel as nib

    from mtsr_monai.metrics.segmentation import segment_tissues

    img = np.asarray(nib.load(str(brats_case["t1"])).dataobj, dtype=np.float32)
    brain = qc.default_brain_mask(img)
    labels = segment_tissues(img, brain, ("t1",), max_fit_voxels=50_000)
    ours = qc.compute_iqms(img, labels, brain)
    ref = _mriqc_reference(img, labels == 3, labels == 2)
    for key in ("cjv", "efc", "wm2max"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-6), key
    # sanity of the values themselves on a real 1 mm T1 (MRIQC's typical ranges)
    assert 0.2 < ours["cjv"] < 1.5 and 0.2 < ours["efc"] < 0.9 and 0.3 < ours["wm2max"] < 1.0


def test_blurred_skull_stripped_scan_is_still_stripped_so_its_halo_is_not_air(brats_case):
    import nibabel as nib

    img = np.asarray(nib.load(str(brats_case["t1"])).dataobj, dtype=np.float32)[:, :, 40:110]
    for sigma in (1.0, 2.0, 3.0):
        blurred = ndimage.gaussian_filter(img, sigma)
        assert qc.is_skull_stripped(blurred), sigma
    labels = np.where(img > 0, 3, 0).astype(np.uint8)
    labels[img > np.percentile(img[img > 0], 60)] = 2
    out = qc.compute_iqms(blurred, labels)
    assert out["air_voxels"] == 0 and out["snrd_wm"] is None and out["fber"] is None


def test_a_skull_stripped_scan_resampled_by_cubic_spline_is_still_stripped(brats_case):
    import nibabel as nib

    img = np.asarray(nib.load(str(brats_case["t1"])).dataobj, dtype=np.float32)[:, :, 60:90]
    resampled = ndimage.zoom(img, 1 / 1.3, order=3)  # residues of ~1e-20 where the background was 0
    assert float(np.mean(resampled == 0)) < 0.2
    masks = qc.image_masks(resampled)
    assert masks["skull_stripped"] and not masks["air"].any()
    assert float(resampled[masks["brain"]].min()) > 0  # the spline's ringing tails are no brain (nor CSF)


def test_a_z_scored_skull_stripped_brain_is_its_non_zero_voxels_not_the_whole_grid():
    img, _ = _tissue_phantom()
    inside = img != 0
    img[inside] = (img[inside] - img[inside].mean()) / img[inside].std()  # half the brain below 0
    masks = qc.image_masks(img)
    assert masks["skull_stripped"] and np.array_equal(masks["head"], inside)
    assert np.array_equal(masks["brain"], inside)


def test_unstripped_scan_with_a_masked_background_is_not_taken_as_stripped(shared_data):
    import nibabel as nib

    # the Ljubljana scanner zeroes the background beyond a band of air noise around the head
    path = shared_data / "open_ms_longitudinal_raw" / "patient01_study1" / "study1_T1W.nii.gz"
    img = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    assert not qc.is_skull_stripped(img)
    assert not qc.is_skull_stripped(ndimage.gaussian_filter(img, 1.0))


def test_outlier_voxels_do_not_move_the_head_mask():
    img, labels = _tissue_phantom()
    x = np.rint(np.pad(img, 4) * 1000).astype(np.int16)
    rng = np.random.default_rng(0)
    spiked = x.copy()
    spiked.flat[rng.choice(x.size, 20, replace=False)] = np.tile([32767, -32767], 10)
    clean, robust = qc.head_mask(x).sum(), qc.head_mask(spiked).sum()
    # a plain Otsu on [-32767, 32767] puts the threshold above every tissue: a 10-voxel "head"
    assert clean > 20_000 and abs(robust - clean) < 0.05 * clean


def test_fber_is_the_ratio_of_median_energies_inside_and_outside_the_head():
    head = np.zeros((20, 20, 20), bool)
    head[5:15, 5:15, 5:15] = True
    img = np.where(head, 10.0, 2.0)
    img[0] = 0.0  # zero padding is not background
    assert qc.fber(img, head) == pytest.approx(100.0 / 4.0)
    assert qc.fber(np.where(head, 10.0, 0.0), head) is None


def test_qc_command_writes_flat_json_with_lowercase_keys(tmp_path):
    from mtsr_monai.cli import main

    img, labels = _tissue_phantom()
    src = write_nifti(tmp_path / "sub_t1.nii.gz", img)
    seg = write_nifti(tmp_path / "seg.nii.gz", labels)
    out = tmp_path / "qc.json"
    assert main(["qc", "--input", str(src), "--tissues", str(seg), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in (
        "cjv",
        "efc",
        "fber",
        "fwhm_x",
        "fwhm_y",
        "fwhm_z",
        "fwhm_avg",
        "wm2max",
        "snr_wm",
        "cnr",
        "summary_wm_mean",
        "summary_gm_p95",
        "ratio_wm_gm_mean",
        "ratio_csf_wmgm_mean",
    ):
        assert key in data and key == key.lower()
    assert all(not isinstance(v, (dict, list)) for v in data.values())
    assert data["ratio_wm_gm_mean"] == pytest.approx(data["summary_wm_mean"] / data["summary_gm_mean"])


def test_qc_command_refuses_mask_on_another_grid_with_exit_2(tmp_path, capsys):
    from mtsr_monai.cli import main

    img, labels = _tissue_phantom()
    src = write_nifti(tmp_path / "t1.nii.gz", img)
    mask = write_nifti(tmp_path / "mask.nii.gz", (labels[:-2] > 0).astype(np.uint8))
    out = tmp_path / "qc.json"
    assert main(["qc", "--input", str(src), "--mask", str(mask), "--json", str(out)]) == 2
    assert "mask.nii.gz" in capsys.readouterr().err
    assert not out.exists()


def test_qc_command_reads_any_non_zero_mask_value_as_brain(tmp_path):
    from mtsr_monai.cli import main

    img, labels = _tissue_phantom()
    src = write_nifti(tmp_path / "t1.nii.gz", img)
    results = []
    half = (labels > 0) & (np.arange(labels.shape[0]) < labels.shape[0] // 2)[:, None, None]
    for name, value in (("positive", 1), ("negative", -1)):  # half the brain: not what no --mask gives
        mask = write_nifti(tmp_path / f"{name}.nii.gz", (half * value).astype(np.int8))
        out = tmp_path / f"{name}.json"
        assert main(["qc", "--input", str(src), "--mask", str(mask), "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert main(["qc", "--input", str(src), "--json", str(tmp_path / "none.json")]) == 0
    unmasked = json.loads((tmp_path / "none.json").read_text())
    assert results[0] == results[1] and results[0]["summary_gm_n"] < unmasked["summary_gm_n"]


def test_iqm_metric_accumulates_absolute_differences_to_the_reference():
    import torch

    from mtsr_monai.metrics.qc import IQMMetric

    img, _ = _tissue_phantom()
    ref = torch.from_numpy(np.stack([img, img]))[:, None]
    blurred = torch.from_numpy(np.stack([img, ndimage.gaussian_filter(img, 1.5) * (img > 0)]))[:, None]
    metric = IQMMetric(keys=("cjv", "fwhm_avg"), contrast="t1")
    metric(ref, ref)
    assert metric.aggregate() == {"cjv": 0.0, "fwhm_avg": 0.0}
    metric.reset()
    metric(blurred, ref)
    out = metric.aggregate()
    assert out["fwhm_avg"] > 0.1 and out["cjv"] > 0  # half the batch is blurred
