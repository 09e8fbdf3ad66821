"""Whole-volume super-resolution: geometry (SR overlays LR), intensity mapping, baselines, CLI behaviour."""

from __future__ import annotations

import argparse
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from mtsr_monai.inference.super_resolve import robust_range, sr_affine, super_resolve_volume
from mtsr_monai.networks.rrdb import RRDBNet
from tests.conftest import write_nifti


def test_sr_affine_puts_each_4x4_block_over_its_lr_voxel():
    affine = np.array([[-0.9, 0, 0, 100], [0, 0.9, 0, -80], [0, 0, 5.0, -40], [0, 0, 0, 1]])
    new = sr_affine(affine, inplane=[0, 1], scale=4)
    assert np.allclose(np.diag(new)[:3], [-0.225, 0.225, 5.0])
    # centres of SR voxels 4i..4i+3 average to the centre of LR voxel i
    i, j, k = 3, 7, 2
    sr_centres = [new @ [4 * i + a, 4 * j + b, k, 1] for a in range(4) for b in range(4)]
    assert np.allclose(np.mean(sr_centres, axis=0), affine @ [i, j, k, 1])


def test_bicubic_volume_keeps_slices_range_and_axis(phantom):
    affine = np.diag([1.0, 1.0, 3.0, 1.0])  # z is the thick axial axis
    scaled = phantom * 1000 + 50
    sr, new_affine = super_resolve_volume(scaled, affine, method="bicubic", progress=False)
    assert sr.shape == (128, 128, 16)
    assert np.allclose(np.diag(new_affine)[:3], [0.25, 0.25, 3.0])
    lo, hi = robust_range(scaled)
    assert abs(sr.mean() - scaled.mean()) < 0.02 * (hi - lo)


def test_axis_is_found_from_the_header_not_the_array_order(phantom):
    # array axis 0 points superior here, so axial slices are planes of axes 1, 2
    affine = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    sr, _ = super_resolve_volume(phantom, affine, method="nearest", progress=False)
    assert sr.shape == (32, 128, 64)


def test_background_slices_stay_background_and_model_runs_through_sliding_windows():
    vol = np.zeros((20, 24, 4), np.float32)
    vol[4:16, 6:18, 1:3] = np.random.default_rng(1).random((12, 12, 2)) + 1
    net = RRDBNet(num_blocks=1, features=8, growth=4, global_skip="bicubic")  # output near the input
    sr, _ = super_resolve_volume(
        vol, np.eye(4), method="model", network=net, roi_size=8, batch_size=2, progress=False
    )
    assert sr.shape == (80, 96, 4)
    assert np.all(sr[..., 0] == 0) and np.all(sr[..., 3] == 0)
    assert np.isfinite(sr).all() and sr[..., 1].std() > 0


def test_lanczos_matches_bicubic_closely_on_smooth_images(phantom):
    smooth = np.asarray(torch.nn.functional.avg_pool3d(torch.from_numpy(phantom)[None, None], 3, 1, 1)[0, 0])
    a, _ = super_resolve_volume(smooth, np.eye(4), method="lanczos", progress=False)
    b, _ = super_resolve_volume(smooth, np.eye(4), method="bicubic", progress=False)
    assert np.abs(a - b).mean() < 0.02


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "mtsr_monai", "super-resolve", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_super_resolves_a_sagittal_acquisition_in_its_own_plane_by_default(tmp_path, phantom):
    import nibabel as nib

    lr = write_nifti(tmp_path / "sag.nii.gz", phantom[:, :8, :8] + 1, np.diag([1.0, 4.0, 4.0, 1.0]))
    done = _cli("--input", str(lr), "--output", str(tmp_path / "sr.nii.gz"), "--method", "bicubic")
    assert done.returncode == 0, done.stderr
    sr = nib.load(tmp_path / "sr.nii.gz")
    assert sr.shape == (32, 32, 32) and np.allclose(sr.header.get_zooms(), 1.0)  # not 0.25 x 1 x 4 mm


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    bad = write_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8, 4), np.float32))
    out = tmp_path / "sr.nii.gz"
    result = _cli("--input", str(bad), "--output", str(out), "--method", "bicubic")
    assert result.returncode == 2 and "flat.nii.gz" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize("bundle", ["mtsr_mt", "clinical_sr"])
def test_a_bundle_of_another_task_is_refused_before_anything_is_written(tmp_path, phantom, bundle, capsys):
    from mtsr_monai.cli import main

    lr = write_nifti(tmp_path / "lr.nii.gz", phantom * 100)
    out = tmp_path / "sr.nii.gz"
    assert main(["super-resolve", "-i", str(lr), "-o", str(out), "--bundle", bundle]) == 2
    assert "not SliceSRInferer" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_cli_default_uses_shipped_weights(tmp_path, phantom):
    from mtsr_monai.inference.bundle import bundle_dir

    if not (bundle_dir() / "models" / "model.pt").is_file():
        pytest.skip("shipped weights not present")
    src = write_nifti(tmp_path / "lr.nii.gz", phantom[:, :, 6:9], np.diag([1.0, 1.0, 2.0, 1.0]))
    out = tmp_path / "sr.nii.gz"
    result = _cli("--input", str(src), "--output", str(out))
    assert result.returncode == 0, result.stderr
    img = nib.load(str(out))
    assert img.shape == (128, 128, 3)
    assert np.allclose(img.header.get_zooms(), (0.25, 0.25, 2.0))


def test_bf16_inference_stays_close_to_fp32(phantom):
    torch.manual_seed(0)
    net = RRDBNet(features=16, growth=8, num_blocks=2)  # no bicubic skip: its zero-init head hides errors
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    outs = {
        p: super_resolve_volume(phantom, affine, network=net, progress=False, precision=p)[0]
        for p in ("fp32", "bf16")
    }
    mse = float(np.mean((outs["fp32"] - outs["bf16"]) ** 2))
    assert mse > 0  # bf16 really ran
    assert 10 * np.log10(float(np.ptp(outs["fp32"])) ** 2 / mse) > 40  # PSNR of bf16 against fp32
    with pytest.raises(ValueError, match="fp16"):
        super_resolve_volume(phantom, affine, network=net, progress=False, precision="fp16")


def test_volume_inference_equals_the_network_on_each_slice():
    # one window per slice (roi >= slice): the channels-last, sliding-window path must compute net(x) exactly
    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=2)
    vol = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32) + 0.5
    sr, _ = super_resolve_volume(vol, np.eye(4), network=net, roi_size=16, precision="fp32", progress=False)
    lo, hi = robust_range(vol)
    with torch.inference_mode():
        slices = torch.from_numpy((np.moveaxis(vol, 2, 0) - lo) / (hi - lo))[:, None]
        direct = net.eval()(slices)[:, 0].clamp_min(0).numpy() * (hi - lo) + lo  # magnitude: no undershoot
    np.testing.assert_allclose(sr, np.moveaxis(direct, 0, 2), rtol=1e-5, atol=1e-5)


def test_network_undershoot_never_makes_a_magnitude_image_negative():
    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=1)
    torch.nn.init.constant_(net.conv_last.conv.bias, -5.0)  # an output far below zero everywhere
    vol = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32) * 100
    sr, _ = super_resolve_volume(vol, np.eye(4), network=net, precision="fp32", progress=False)
    assert sr.min() == 0.0


@pytest.mark.parametrize("method", ["bicubic", "lanczos"])
def test_interpolation_overshoot_never_makes_a_magnitude_image_negative(method):
    vol = np.zeros((12, 12, 2), np.float32)
    vol[4:8, 4:8] = 100.0  # a sharp edge: bicubic and lanczos ring below zero next to it
    sr, _ = super_resolve_volume(vol, np.eye(4), method=method, progress=False)
    assert sr.min() == 0.0 and sr.max() > 100.0  # clamped at zero only, the overshoot above kept


def test_the_same_image_stored_in_another_axis_order_gives_the_same_super_resolution():
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=1)  # random: neither flip- nor transpose-invariant
    lps = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32) * 100
    lps_affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    ref, _ = super_resolve_volume(lps, lps_affine, network=net, precision="fp32", progress=False)
    for stored in (
        np.diag([1.0, 1.0, 2.0, 1.0]),
        np.array([[0, -1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]),
    ):
        change = ornt_transform(
            io_orientation(lps_affine), io_orientation(stored)
        )  # the same voxels, reordered
        sr, _ = super_resolve_volume(
            apply_orientation(lps, change), stored, network=net, precision="fp32", progress=False
        )
        back = apply_orientation(sr, ornt_transform(io_orientation(stored), io_orientation(lps_affine)))
        assert np.allclose(back, ref, atol=1e-4)


def test_a_network_of_another_factor_is_refused_rather_than_misplaced():
    net = RRDBNet(features=8, growth=4, num_blocks=1)  # x4
    with pytest.raises(ValueError, match="x4, not x2"):
        super_resolve_volume(np.ones((12, 10, 3), np.float32), np.eye(4), network=net, scale=2)


def test_run_pipeline_refuses_a_scale_the_shipped_model_does_not_make():
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.pipeline import super_resolve

    with pytest.raises(InputError, match="upsamples x4, not x3"):
        super_resolve(np.ones((12, 10, 3), np.float32), np.eye(4), scale=3, method="auto", progress=False)


def test_the_brain_mask_on_the_sr_grid_follows_an_oblique_edge_not_the_lr_staircase():
    from mtsr_monai.inference.pipeline import _mask_on_sr_grid

    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    lr_mask = np.repeat(((i + 0.5) >= (j + 0.5) * 0.7)[..., None], 2, axis=2).astype(np.float32)
    fine_i, fine_j = np.meshgrid((np.arange(64) + 0.5) / 4, (np.arange(64) + 0.5) / 4, indexing="ij")
    ideal = fine_i >= fine_j * 0.7  # the edge the LR voxels sample
    sr_mask = _mask_on_sr_grid(lr_mask, np.eye(4), 4, "axial")[..., 0]
    nearest = np.repeat(np.repeat(lr_mask[..., 0] > 0.5, 4, 0), 4, 1)
    assert (sr_mask != ideal).sum() < 0.85 * (nearest != ideal).sum()  # nearest neighbour: equal


@pytest.mark.parametrize("problem", ["nan", "channel axis", "2d"])
def test_the_python_api_refuses_what_the_cli_refuses(problem):
    from mtsr_monai.errors import InputError

    vol = np.random.default_rng(0).random((16, 16, 4)).astype(np.float32)
    vol[0, 0, 0] = np.nan if problem == "nan" else vol[0, 0, 0]  # one NaN voxel made the whole output NaN
    bad = {"nan": vol, "channel axis": vol[None], "2d": vol[..., 0]}[problem]
    with pytest.raises(InputError):
        super_resolve_volume(bad, np.eye(4), method="bicubic", progress=False)


def test_large_slices_advance_the_progress_bar_one_at_a_time(capsys):
    from mtsr_monai.inference.super_resolve import super_resolve_scaled

    rng = np.random.default_rng(0)
    for size, steps in ((32, 2), (200, 10)):  # 10 slices: 8 + 2 small ones, large ones alone
        super_resolve_scaled(rng.random((10, size, size), dtype=np.float32) + 0.1, method="bicubic")
        assert f"/{steps} [" in capsys.readouterr().err


def test_a_slices_output_does_not_depend_on_the_batch_size():
    # each slice's brain sits elsewhere: a box per batch would crop a slice differently in batches of 1 and 4
    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=1)
    vol = np.zeros((40, 40, 4), np.float32)
    for k in range(4):
        vol[4 + 6 * k : 14 + 6 * k, 5 + 5 * k : 15 + 5 * k, k] = 1.0 + k
    outs = [
        super_resolve_volume(
            vol, np.eye(4), network=net, batch_size=b, roi_size=16, precision="fp32", progress=False
        )[0]
        for b in (1, 4)
    ]
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=1e-5)  # batched convs: float rounding only


def test_a_slice_wider_than_the_old_64_pixel_window_is_super_resolved_in_one_pass():
    from mtsr_monai.bids.tasks import SuperResolveTask
    from mtsr_monai.cli.commands import super_resolve as command
    from mtsr_monai.inference.defaults import SR_ROI_SIZE as ROI_SIZE

    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=1)
    vol = np.random.default_rng(0).random((120, 100, 2)).astype(np.float32) + 1  # a 120 x 100 slice

    def sr(**kwargs):
        options = {"network": net, "precision": "fp32", "progress": False, **kwargs}
        return super_resolve_volume(vol, np.eye(4), **options)[0]

    whole = sr(roi_size=120)
    np.testing.assert_array_equal(sr(), whole)  # the default window holds the slice: no seams
    assert np.abs(sr(roi_size=64) - whole).max() > 1e-3  # windows that meet disagree where they meet
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert parser.parse_args(["-i", "a.nii.gz", "-o", "b.nii.gz"]).roi_size == ROI_SIZE
    assert SuperResolveTask().roi_size == ROI_SIZE  # mtsr bids' task, built without the CLI


def test_a_larger_batch_size_puts_more_large_slices_through_each_network_call():
    from mtsr_monai.inference.super_resolve import super_resolve_scaled

    class Counting(torch.nn.Module):
        scale, calls = 4, 0

        def forward(self, x):
            Counting.calls += 1
            return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")

    slices = np.random.default_rng(0).random((8, 240, 240)).astype(np.float32) + 0.1
    for batch_size, calls in ((8, 8), (32, 4), (128, 1)):  # 240 x 240 = 14 windows of 64 x 64
        Counting.calls = 0
        super_resolve_scaled(slices, network=Counting(), batch_size=batch_size, progress=False)
        assert Counting.calls == calls
