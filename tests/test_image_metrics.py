"""Image-fidelity metrics against scikit-image and known values; the mtsr evaluate command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mtsr_monai.cli import main
from mtsr_monai.metrics.image import (
    batch_psnr,
    batch_ssim,
    foreground_psnr,
    foreground_psnr_metric,
    image_metrics,
    mae,
    nmse,
    nmse_clinical_code,
    psnr,
    ssim,
    ssim_map,
)
from tests.conftest import write_nifti

SK = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ref = rng.random((24, 22, 14))
    return ref + 0.1 * rng.standard_normal(ref.shape), ref


def test_psnr_and_ssim_match_scikit_image_in_2d_and_3d(pair) -> None:
    pred, ref = pair
    rng = float(ref.max() - ref.min())
    assert psnr(pred, ref) == pytest.approx(peak_signal_noise_ratio(ref, pred, data_range=rng), abs=1e-3)
    assert ssim(pred, ref) == pytest.approx(structural_similarity(ref, pred, data_range=rng, **SK), abs=1e-3)
    p2, r2 = pred[:, :, 5], ref[:, :, 5]
    assert ssim(p2, r2, data_range=1.0) == pytest.approx(
        structural_similarity(r2, p2, data_range=1.0, **SK), abs=1e-3
    )
    slicewise = np.mean(
        [structural_similarity(ref[..., k], pred[..., k], data_range=1.0, **SK) for k in range(14)]
    )
    assert ssim(pred, ref, data_range=1.0, axis=2) == pytest.approx(slicewise, abs=1e-3)


def test_batch_psnr_and_ssim_match_scikit_image_per_item(pair) -> None:
    pred, ref = pair
    p = torch.tensor(np.moveaxis(pred, 2, 0)[:4, None], dtype=torch.float32)  # (4, 1, 24, 22)
    r = torch.tensor(np.moveaxis(ref, 2, 0)[:4, None], dtype=torch.float32)
    got_psnr, got_ssim = batch_psnr(p, r, 1.0), batch_ssim(p, r, 1.0)
    for b in range(4):
        pb, rb = p[b, 0].double().numpy(), r[b, 0].double().numpy()
        assert float(got_psnr[b]) == pytest.approx(peak_signal_noise_ratio(rb, pb, data_range=1.0), abs=1e-3)
        assert float(got_ssim[b]) == pytest.approx(
            structural_similarity(rb, pb, data_range=1.0, **SK), abs=1e-3
        )


def test_identical_images_give_infinite_psnr_and_perfect_scores(pair) -> None:
    _, ref = pair
    assert psnr(ref, ref) == math.inf
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert nmse(ref, ref) == 0.0 and mae(ref, ref) == 0.0
    assert torch.isinf(batch_psnr(torch.ones(2, 1, 16, 16), torch.ones(2, 1, 16, 16))).all()


def test_an_item_equal_to_its_reference_is_left_out_of_the_foreground_psnr_mean(caplog) -> None:
    ref = torch.zeros(3, 1, 16, 16)
    ref[:, :, 4:12, 4:12] = 0.5
    pred = ref.clone()
    pred[1] += 0.1  # foreground MSE 0.01: 20 dB; item 0 is perfect, item 2 has no foreground
    ref[2], pred[2] = 0.0, 0.3
    per_item = foreground_psnr(pred, ref)[:, 0]
    assert per_item[0] == math.inf and float(per_item[1]) == pytest.approx(20.0, abs=1e-4)
    assert torch.isnan(per_item[2])
    metric = foreground_psnr_metric()
    metric(pred, ref)
    with caplog.at_level("WARNING", logger="mtsr_monai.metrics.image"):
        mean = float(metric.aggregate())
    assert mean == pytest.approx(20.0, abs=1e-4)  # was inf
    assert "1 of 2 items equal their reference" in caplog.text
    metric.reset()
    metric(ref[:1], ref[:1])  # every item perfect: the mean is inf, truly
    assert float(metric.aggregate()) == math.inf


def test_constant_offset_gives_known_errors() -> None:
    ref = np.zeros((16, 16, 8))
    ref[4:12, 4:12, 2:6] = 2.0  # data range 2
    pred = ref + 0.1
    assert mae(pred, ref) == pytest.approx(0.1)
    assert psnr(pred, ref) == pytest.approx(10 * math.log10(2.0**2 / 0.01))
    n = ref.size
    assert nmse(pred, ref) == pytest.approx(0.01 * n / (4.0 * 256))
    assert nmse_clinical_code(pred, ref) == pytest.approx(nmse(pred, ref) / n)


def test_mask_restricts_errors_to_the_brain(pair) -> None:
    pred, ref = pair
    mask = np.zeros(ref.shape, bool)
    mask[6:18, 6:16, 4:10] = True
    spoiled = pred.copy()
    spoiled[~mask] += 5.0  # errors outside the brain only
    assert psnr(spoiled, ref, mask, data_range=1.0) == pytest.approx(psnr(pred, ref, mask, data_range=1.0))
    assert mae(spoiled, ref, mask) == pytest.approx(mae(pred, ref, mask))
    assert psnr(spoiled, ref, data_range=1.0) < psnr(pred, ref, data_range=1.0) - 10
    assert ssim(pred, ref, mask, data_range=1.0) == pytest.approx(ssim_map(pred, ref, 1.0)[mask].mean())


def test_image_metrics_uses_ref_background_as_brain_only_when_zero() -> None:
    ref = np.zeros((20, 20, 12))
    ref[5:15, 5:15, 3:9] = np.linspace(1, 2, 600).reshape(10, 10, 6)
    pred = ref * 1.05
    result = image_metrics(pred, ref)
    assert result["mask"] == "ref > 0" and result["brain"]["voxels"] == 600
    assert (
        result["brain"]["mae"] > result["whole"]["mae"]
    )  # the background, exact, dilutes the whole-image MAE
    shifted = image_metrics(pred + 1, ref + 1)
    assert shifted["mask"] is None and shifted["brain"] is None


def test_a_raw_head_whose_scanner_zeroed_its_air_has_no_brain_values() -> None:
    # a head (bright skull, darker brain) in noisy air zeroed beyond a margin: zeros, but not stripped
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    ref = np.where(radius < 0.6, 1.0, np.where(radius < 0.7, 2.0, 0.0)) + rng.normal(0, 0.05, radius.shape)
    ref = np.where(radius < 0.9, np.abs(ref), 0.0)
    result = image_metrics(ref * 1.05, ref)
    assert result["mask"] is None and result["brain"] is None


def test_evaluate_cli_writes_json_and_refuses_other_grids(tmp_path: Path, phantom: np.ndarray) -> None:
    ref = write_nifti(tmp_path / "ref.nii.gz", phantom)
    pred = write_nifti(tmp_path / "pred.nii.gz", phantom + 0.05)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["whole"]["mae"] == pytest.approx(0.05, rel=1e-4)
    assert result["whole"]["psnr"] == pytest.approx(
        10 * math.log10(float(np.ptp(phantom)) ** 2 / 0.0025), rel=1e-4
    )

    other = write_nifti(tmp_path / "other.nii.gz", phantom[:, :, :-2])
    out2 = tmp_path / "m2.json"
    assert main(["evaluate", "--pred", str(other), "--ref", str(ref), "--json", str(out2)]) == 2
    assert not out2.exists()
    empty = write_nifti(tmp_path / "mask.nii.gz", np.zeros(phantom.shape, np.uint8))
    assert (
        main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--mask", str(empty), "--json", str(out2)])
        == 2
    )


def test_a_constant_prediction_is_scored_and_a_constant_reference_refused(tmp_path: Path, phantom) -> None:
    ref = write_nifti(tmp_path / "ref.nii.gz", phantom)
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros(phantom.shape, np.float32))
    out = tmp_path / "m.json"
    assert main(["evaluate", "--pred", str(flat), "--ref", str(ref), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["whole"]["mae"] == pytest.approx(
        float(np.abs(phantom).mean()), rel=1e-4
    )
    assert main(["evaluate", "--pred", str(ref), "--ref", str(flat), "--json", str(tmp_path / "x.json")]) == 2


def test_evaluate_cli_with_mask_reports_brain_values(tmp_path: Path, phantom: np.ndarray) -> None:
    ref = write_nifti(tmp_path / "ref.nii.gz", phantom)
    noisy = phantom.copy()
    noisy[:4] += 1.0  # error only in a slab outside the mask
    pred = write_nifti(tmp_path / "pred.nii.gz", noisy)
    mask = np.zeros(phantom.shape, np.uint8)
    mask[10:22, 10:22, 4:12] = 1
    mask_file = write_nifti(tmp_path / "mask.nii.gz", mask)
    out = tmp_path / "m.json"
    args = ["evaluate", "--pred", str(pred), "--ref", str(ref), "--mask", str(mask_file), "--json", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["mask"] == "given" and result["brain"]["psnr"] == "inf" and result["brain"]["mae"] == 0.0
    assert result["whole"]["mae"] > 0


def test_batch_ssim_inside_bf16_autocast_matches_fp32() -> None:
    import torch

    from mtsr_monai.metrics.image import batch_ssim

    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(4, 3, 64, 64, generator=gen) * 0.2 + 0.6  # bright, low-variance patches
    pred = ref + 0.01 * torch.randn(4, 3, 64, 64, generator=gen)
    expected = batch_ssim(pred, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = batch_ssim(pred, ref)
    assert got.dtype == torch.float32 and torch.allclose(got, expected, atol=1e-5)


def test_ssim_map_equals_scikit_image_and_also_scores_volumes_thinner_than_the_window():
    from mtsr_monai.metrics.image import ssim_map

    rng = np.random.default_rng(0)
    a = rng.random((24, 20, 16))
    b = a + 0.1 * rng.standard_normal(a.shape)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "full": True}
    assert np.allclose(ssim_map(b, a, 1.0), structural_similarity(b, a, data_range=1.0, **options)[1])
    thin = ssim_map(b[..., :4], a[..., :4], 1.0)  # scikit-image raises on 4 slices
    assert thin.shape == (24, 20, 4) and np.isfinite(thin).all()
