"""Blur kernels, the three degradation models, their geometry, reproducibility and `mtsr degrade`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_nifti


# ------------------------------------------------------------------------------------------- helpers
def _world_bbox(shape, affine) -> tuple[np.ndarray, np.ndarray]:
    """World-space bounding box of a grid's outer voxel faces (exact for axis-aligned affines)."""
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    return world.min(axis=1), world.max(axis=1)


def _smooth_volume(shape, seed: int = 0) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 3).astype(np.float32) * 10 + 1


def _resample_to(lr, lr_affine, hr_shape, hr_affine) -> np.ndarray:
    """Trilinear resampling of the LR image onto the HR grid, through world coordinates."""
    from scipy import ndimage

    idx = np.array(np.meshgrid(*[np.arange(n) for n in hr_shape], indexing="ij")).reshape(3, -1)
    world = hr_affine[:3, :3] @ idx + hr_affine[:3, 3:4]
    inv = np.linalg.inv(lr_affine)
    lr_idx = inv[:3, :3] @ world + inv[:3, 3:4]
    return ndimage.map_coordinates(lr, lr_idx, order=1, mode="nearest").reshape(hr_shape)


# ------------------------------------------------------------------------------------------- kernels
def test_every_kernel_family_sums_to_one_and_is_centred():
    from mtsr_monai.transforms import kernels as K

    rng = np.random.RandomState(0)
    for _ in range(60):
        k = K.random_blur_kernel(rng, sinc_prob=0.3)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert k.sum() == pytest.approx(1.0, abs=1e-9)
        assert np.unravel_index(np.argmax(k), k.shape) == (k.shape[0] // 2, k.shape[1] // 2)


def test_generalized_gaussian_with_beta_one_is_the_gaussian():
    from mtsr_monai.transforms import kernels as K

    np.testing.assert_allclose(
        K.generalized_gaussian_kernel(13, 2.0, 1.0, 0.3, beta=1.0), K.gaussian_kernel(13, 2.0, 1.0, 0.3)
    )
    assert not np.allclose(
        K.generalized_gaussian_kernel(13, 2.0, 1.0, 0.3, beta=3.0), K.gaussian_kernel(13, 2.0, 1.0, 0.3)
    )


def test_anisotropic_gaussian_is_wider_along_its_major_axis_and_rotates():
    from mtsr_monai.transforms import kernels as K

    k = K.gaussian_kernel(21, 3.0, 1.0, theta=0.0)
    cols, rows = k.sum(axis=0), k.sum(axis=1)  # marginals along x and along y
    x = np.arange(21) - 10
    assert (cols * x**2).sum() > 4 * (rows * x**2).sum()
    np.testing.assert_allclose(K.gaussian_kernel(21, 3.0, 1.0, theta=np.pi / 2), k.T, atol=1e-12)


@pytest.mark.parametrize("cutoff", [np.pi / 5, np.pi / 3, np.pi / 2])
def test_sinc_kernel_passes_below_and_stops_above_its_cutoff(cutoff):
    from mtsr_monai.transforms import kernels as K

    k = K.sinc_kernel(21, cutoff)
    assert k.sum() == pytest.approx(1.0)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(128, 128))))
    f = np.fft.fftshift(np.fft.fftfreq(128)) * 2 * np.pi
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    assert spectrum[radius < 0.7 * cutoff].mean() > 0.75
    assert spectrum[(radius > 1.3 * cutoff) & (radius < np.pi)].mean() < 0.1


# -------------------------------------------------------------------------------------- geometry
def test_axial_axis_comes_from_the_affine_not_the_array_order():
    from mtsr_monai.io.geometry import resolve_axis

    permuted = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])  # array axis 0 is S
    assert resolve_axis(permuted, "axial") == 0
    assert resolve_axis(permuted, "sagittal") == 2
    assert resolve_axis(np.eye(4), "axial") == 2
    assert resolve_axis(np.diag([-1.0, -1, 1, 1]), "coronal") == 1


@pytest.mark.parametrize("shape", [(40, 36, 6), (42, 37, 6)])
def test_second_order_lr_has_floor_size_x4_spacing_and_covers_the_hr_field_of_view(shape):
    from mtsr_monai.transforms.degradation import degrade_volume_second_order

    hr = _smooth_volume(shape)
    affine = np.array([[-0.9, 0, 0, 50], [0, 0.9, 0, -20], [0, 0, 2.0, 10], [0, 0, 0, 1]])
    lr, lr_affine = degrade_volume_second_order(hr, affine, scale=4, seed=3)
    assert lr.shape == (shape[0] // 4, shape[1] // 4, shape[2]) and lr.dtype == np.float32
    np.testing.assert_allclose(np.abs(np.diag(lr_affine))[:3], [3.6, 3.6, 2.0])
    lo_lr, hi_lr = _world_bbox(lr.shape, lr_affine)
    lo_hr, hi_hr = _world_bbox(shape, affine)
    if shape[0] % 4 == 0 and shape[1] % 4 == 0:  # each LR voxel is its 4 x 4 block: the same outer faces
        np.testing.assert_allclose(lo_lr, lo_hr, atol=1e-6)
        np.testing.assert_allclose(hi_lr, hi_hr, atol=1e-6)
    else:  # centre crop: the LR box is inside the HR box, and lost at most (scale-1) voxels per axis
        assert np.all(lo_lr >= lo_hr - 1e-6) and np.all(hi_lr <= hi_hr + 1e-6)
        assert np.all((hi_hr - lo_hr) - (hi_lr - lo_lr) <= 3 * 0.9 + 1e-6)


@pytest.mark.parametrize(
    ("voxel_mm", "axis"),
    [
        ((4, 4, 1), 2),
        ((1, 4, 4), 0),
        ((4, 1, 4), 1),
        ((0.45, 0.45, 6), 2),
        ((1, 1, 1), 2),
        ((0.9, 1, 1.1), 2),
        ((4, 1, 1.2), 0),  # rectangular pixels in the plane of the two sizes that agree
        ((1, 4, 1.25), 1),
    ],
)
def test_auto_axis_is_normal_to_the_plane_of_the_two_voxel_sizes_that_agree(voxel_mm, axis):
    from mtsr_monai.io.geometry import resolve_axis

    assert resolve_axis(np.diag([*voxel_mm, 1.0]), "auto") == axis  # near-isotropic: axial


def test_second_order_degrades_in_the_plane_normal_to_the_axial_axis_of_a_permuted_volume():
    from mtsr_monai.transforms.degradation import degrade_volume_second_order

    permuted = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    lr, lr_affine = degrade_volume_second_order(_smooth_volume((6, 32, 28)), permuted, scale=4, seed=1)
    assert lr.shape == (6, 8, 7)
    np.testing.assert_allclose(np.linalg.norm(lr_affine[:3, :3], axis=0), [1, 4, 4])


def test_second_order_is_reproducible_byte_for_byte_and_seed_dependent():
    from mtsr_monai.transforms.degradation import degrade_volume_second_order

    hr = _smooth_volume((32, 32, 4))
    a, _ = degrade_volume_second_order(hr, np.eye(4), seed=7)
    b, _ = degrade_volume_second_order(hr, np.eye(4), seed=7)
    c, _ = degrade_volume_second_order(hr, np.eye(4), seed=8)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_second_order_dictionary_transform_on_a_2d_slice_pairs_hr_and_lr():
    import torch

    from mtsr_monai.transforms.degradation import RandSecondOrderDegradationd

    slice_ = torch.as_tensor(_smooth_volume((1, 66, 64)))  # (C, H, W) with H not divisible by 4
    t = RandSecondOrderDegradationd(keys="hr", scale=4, lr_suffix="_lr")
    outs = []
    for _ in range(2):
        t.set_random_state(seed=11)
        outs.append(t({"hr": slice_}))
    assert tuple(outs[0]["hr_lr"].shape) == (1, 16, 16)
    assert tuple(outs[0]["hr"].shape) == (1, 64, 64)  # the HR is centre-cropped to 4 x the LR
    assert torch.equal(outs[0]["hr_lr"], outs[1]["hr_lr"])
    assert not torch.equal(outs[0]["hr_lr"], t({"hr": slice_})["hr_lr"])  # next draw differs


def test_second_order_dictionary_transform_degrades_in_place_when_the_output_key_is_the_input():
    import torch

    from mtsr_monai.transforms.degradation import RandSecondOrderDegradationd

    slice_ = torch.as_tensor(_smooth_volume((1, 64, 64)))
    t = RandSecondOrderDegradationd(keys="hr", scale=4, output_keys="hr")
    t.set_random_state(seed=11)
    assert tuple(t({"hr": slice_})["hr"].shape) == (1, 16, 16)


def test_second_order_noise_follows_the_intensity_range():
    """Gaussian/Rician sigma is a fraction of the input range: scaling the input scales the output."""
    from mtsr_monai.transforms.degradation import degrade_volume_second_order

    hr = _smooth_volume((32, 32, 3))
    a, _ = degrade_volume_second_order(hr, np.eye(4), seed=5)
    b, _ = degrade_volume_second_order(hr * 100, np.eye(4), seed=5)
    np.testing.assert_allclose(b, a * 100, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------ k-space
def test_kspace_truncation_of_an_edge_shows_gibbs_overshoot():
    import torch

    from mtsr_monai.transforms.degradation import kspace_truncate

    edge = torch.zeros(1, 64, 64)
    edge[:, :, 16:48] = 1.0  # a bar: two sharp edges along x
    ringing = kspace_truncate(edge, scale=4, keep_grid=True)[0]
    profile = ringing[32]
    assert profile.max() > 1.05  # Gibbs overshoot ~9 % of the step
    assert profile[:14].max() > 0.03  # ripples outside the bar (magnitude of undershoot)
    lr = kspace_truncate(edge, scale=2)[0]
    ripple = lr[16, 9:14] - 1.0  # inside the bar, next to its edge at LR index 8
    assert lr.shape == (32, 32) and ripple.max() > 0.005 and ripple.min() < -0.002


def test_kspace_lr_samples_sit_at_hr_block_centres():
    """On a band-limited image the LR voxel i equals the HR signal at index i*scale + (scale-1)/2."""
    import torch

    from mtsr_monai.transforms.degradation import kspace_truncate

    n, scale = 64, 4
    t = np.arange(n)
    f = lambda x: 2 + np.cos(2 * np.pi * 3 * x / n) + 0.5 * np.sin(2 * np.pi * 5 * x / n)  # noqa: E731
    hr = torch.as_tensor(np.outer(np.ones(n), f(t)), dtype=torch.float64)[None]
    lr = kspace_truncate(hr, scale)[0, 0].numpy()
    centres = np.arange(n // scale) * scale + (scale - 1) / 2
    np.testing.assert_allclose(lr, f(centres), atol=1e-6)


def test_kspace_noise_is_rician_with_the_requested_sigma():
    from mtsr_monai.transforms.degradation import degrade_volume_kspace

    vol = np.zeros((128, 128, 4), np.float32)
    vol[40:90, 40:90] = 1.0
    lr, _ = degrade_volume_kspace(vol, np.eye(4), scale=2, noise=0.05, seed=0)
    background = lr[:12, :12].ravel()  # far from the square: magnitude of pure complex noise = Rayleigh
    assert background.min() >= 0
    assert background.mean() == pytest.approx(0.05 * np.sqrt(np.pi / 2), rel=0.12)


def test_one_hot_voxel_does_not_set_the_noise_of_the_kspace_and_thick_slice_modes():
    from mtsr_monai.transforms.degradation import degrade_volume_kspace, degrade_volume_thick_slice

    vol = np.zeros((64, 64, 8), np.float32)
    vol[16:48, 16:48] = 1.0
    hot = vol.copy()
    hot[30, 30, 3] = 50.0  # as real scans have: max - min set by one voxel
    for degrade in (
        lambda v: degrade_volume_kspace(v, np.eye(4), scale=2, noise=0.05, seed=0)[0],
        lambda v: degrade_volume_thick_slice(v, np.eye(4), thickness=2.0, noise=0.05, seed=0)[0],
    ):
        background = (degrade(vol)[:6, :6, 0], degrade(hot)[:6, :6, 0])  # far from the square and the voxel
        np.testing.assert_allclose(background[1], background[0], rtol=1e-4)


# ------------------------------------------------------------------------------------- thick slices
def test_thick_slice_centres_spacing_and_boxcar_weights():
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice, thick_slice_weights

    weights, centres = thick_slice_weights(30, 1.0, 3.0, 1.0, profile="boxcar")
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # FOV 30 mm, 7 slices of 3 mm every 4 mm span 27 mm: centred, so the first slice covers 1.5..4.5 mm
    # from the FOV edge, i.e. voxels 1 and 4 by half and voxels 2, 3 fully
    np.testing.assert_allclose(centres, 2.5 + 4 * np.arange(7))
    np.testing.assert_allclose(weights[0, 1:5], [1 / 6, 1 / 3, 1 / 3, 1 / 6])
    assert weights[0, :1].sum() == 0 and weights[0, 5:].sum() == 0

    affine = np.array([[1.0, 0, 0, -5], [0, 1.0, 0, 7], [0, 0, 0.5, -20], [0, 0, 0, 1]])
    vol = _smooth_volume((16, 16, 60))
    lr, lr_affine = degrade_volume_thick_slice(vol, affine, thickness=4.0, gap=1.0, axis="axial")
    assert lr.shape == (16, 16, 6)  # floor((30 - 4) / 5) + 1
    assert lr_affine[2, 2] == pytest.approx(5.0)
    first_mm = -20 - 0.25 + (30 - (5 * 5 + 4)) / 2 + 2  # FOV edge + half the margin + half a slice
    np.testing.assert_allclose(lr_affine[2, 3] + 5.0 * np.arange(6), first_mm + 5.0 * np.arange(6))
    np.testing.assert_allclose(lr_affine[:2, :2], affine[:2, :2])


def test_a_float32_oblique_spacing_a_hair_under_1_mm_keeps_every_thick_slice():
    from mtsr_monai.transforms.degradation import thick_slice_centres

    # 155 voxels of 0.99999998 mm (a 10-degree rotation stored in float32) hold 31 slices of 5 mm, as 1 mm do
    assert (
        len(thick_slice_centres(155, 0.99999998, 5.0, 0.0))
        == len(thick_slice_centres(155, 1.0, 5.0, 0.0))
        == 31
    )


@pytest.mark.parametrize("profile", ["gaussian", "boxcar"])
def test_thick_slice_lr_overlays_the_hr_in_world_space(profile):
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice

    affine = np.array(
        [[0, 0, 1.0, -10], [0, 1.0, 0, 4], [-1.0, 0, 0, 30], [0, 0, 0, 1]]
    )  # axial = array axis 0
    hr = _smooth_volume((48, 24, 20), seed=2)
    lr, lr_affine = degrade_volume_thick_slice(hr, affine, thickness=3.0, gap=0.5, profile=profile, scale=2)
    assert lr.shape == (13, 12, 10)
    np.testing.assert_allclose(np.linalg.norm(lr_affine[:3, :3], axis=0), [3.5, 2.0, 2.0])
    for lr_face, hr_face in zip(_world_bbox(lr.shape, lr_affine), _world_bbox(hr.shape, affine), strict=True):
        np.testing.assert_allclose(lr_face[:2], hr_face[:2], atol=1e-6)  # in-plane (world x, y): 2 x 2 blocks
    back = _resample_to(lr, lr_affine, hr.shape, affine)
    inner = (slice(4, -4), slice(2, -2), slice(2, -2))
    assert np.corrcoef(back[inner].ravel(), hr[inner].ravel())[0, 1] > 0.9


def test_thick_slice_refuses_slices_thinner_than_the_input_spacing():
    from mtsr_monai.transforms.degradation import degrade_volume_thick_slice

    with pytest.raises(ValueError, match="below the input spacing"):
        degrade_volume_thick_slice(_smooth_volume((8, 8, 10)), np.diag([1, 1, 3.0, 1]), thickness=2.0)


@pytest.mark.parametrize("axis", [2, 3, -3])
def test_thick_slices_of_a_2d_slice_refuse_an_axis_it_does_not_have(axis):
    from mtsr_monai.transforms.degradation import RandThickSliceDegradation

    with pytest.raises(ValueError, match="array axis in -2..1"):
        RandThickSliceDegradation(3.0, axis=axis)(np.random.rand(1, 32, 24))  # 2 had acted as axis 0


# ------------------------------------------------------------------------- array + dictionary pairs
def _models(prob: float = 1.0) -> dict:
    """A fresh array transform of each model (the wrappers take one each)."""
    from mtsr_monai.transforms.degradation import (
        RandKSpaceTruncation,
        RandSecondOrderDegradation,
        RandThickSliceDegradation,
    )

    return {
        "second_order": RandSecondOrderDegradation(scale=4, prob=prob),
        "kspace": RandKSpaceTruncation(scale=4, noise=0.05, prob=prob),
        "thick_slice": RandThickSliceDegradation(thickness=3.0, noise=0.05, prob=prob),
    }


def _hr():
    import torch
    from monai.data import MetaTensor

    return MetaTensor(
        torch.as_tensor(_smooth_volume((1, 16, 16, 12))), affine=torch.eye(4, dtype=torch.float64)
    )


@pytest.mark.parametrize("model", ["second_order", "kspace", "thick_slice"])
def test_degradation_array_equals_dictionary_with_one_seed(model):
    import torch

    from mtsr_monai.transforms.degradation import RandDegradationd

    array = _models()[model].set_random_state(seed=5)(_hr())
    mapped = RandDegradationd("hr", _models()[model]).set_random_state(seed=5)({"hr": _hr()})
    assert torch.equal(array, mapped["hr_lr"])
    assert np.array_equal(array.affine.numpy(), mapped["hr_lr"].affine.numpy())


@pytest.mark.parametrize("model", ["second_order", "kspace", "thick_slice"])
def test_degradation_is_reproducible_with_set_random_state(model):
    import torch

    transform = _models()[model]
    first = transform.set_random_state(seed=3)(_hr())
    again = transform.set_random_state(seed=3)(_hr())
    assert torch.equal(first, again)
    assert not torch.equal(first, transform(_hr()))  # the next draw differs


@pytest.mark.parametrize("model", ["second_order", "kspace", "thick_slice"])
def test_degradation_with_prob_zero_leaves_the_input_unchanged(model):
    import torch

    from mtsr_monai.transforms.degradation import RandDegradationd

    hr = _hr()
    out = _models(prob=0.0)[model](hr)
    assert torch.equal(out, hr) and out is not hr
    mapped = RandDegradationd("hr", _models(prob=0.0)[model])({"hr": hr})
    assert torch.equal(mapped["hr_lr"], hr)


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def hr_file(tmp_path: Path) -> Path:
    affine = np.array([[1.0, 0, 0, -16], [0, 1.0, 0, -16], [0, 0, 1.5, -6], [0, 0, 0, 1]])
    return write_nifti(tmp_path / "hr.nii.gz", _smooth_volume((32, 32, 8)), affine)


def _mtsr(*argv: str) -> int:
    from mtsr_monai.cli import main

    return main([str(a) for a in argv])


def _load(path: Path):
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize(
    "mode,extra,shape,spacing",
    [
        ("second-order", [], (8, 8, 8), (4, 4, 1.5)),
        ("kspace", ["--scale", "2"], (16, 16, 8), (2, 2, 1.5)),
        ("kspace", ["--keep-grid"], (32, 32, 8), (1, 1, 1.5)),
        ("thick-slice", ["--thickness", "3", "--gap", "1.5"], (32, 32, 3), (1, 1, 4.5)),
    ],
)
def test_cli_degrade_writes_the_true_voxel_size(tmp_path, hr_file, mode, extra, shape, spacing):
    out = tmp_path / "lr.nii.gz"
    assert _mtsr("degrade", "--input", hr_file, "--output", out, "--mode", mode, *extra) == 0
    data, affine = _load(out)
    assert data.shape == shape and data.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), spacing, rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr.nii.gz", "lr.nii.gz"]  # nothing else written


def test_cli_degrade_same_seed_same_bytes_other_seed_differs(tmp_path, hr_file):
    runs = {}
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        out = tmp_path / f"{name}.nii.gz"
        assert _mtsr("degrade", "-i", hr_file, "-o", out, "--mode", "second-order", "--seed", seed) == 0
        runs[name] = _load(out)[0].tobytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


@pytest.mark.parametrize(
    "args",
    [
        ["--mode", "second-order", "--scale", "1"],
        ["--mode", "kspace", "--scale", "0"],
        ["--mode", "second-order", "--scale", "20"],
        ["--mode", "thick-slice"],  # no --thickness
        ["--mode", "thick-slice", "--thickness", "1.0"],  # thinner than the 1.5 mm input slices
        ["--mode", "thick-slice", "--thickness", "30"],  # beyond the 12 mm field of view
        ["--mode", "second-order", "--thickness", "3"],
        ["--mode", "second-order", "--profile", "gaussian"],  # the default value, given: still refused
        ["--mode", "kspace", "--gap", "0"],
        ["--mode", "kspace", "--noise", "-0.1"],
    ],
)
def test_cli_degrade_refuses_bad_arguments_with_exit_2_and_no_output(tmp_path, hr_file, args, capsys):
    out = tmp_path / "lr.nii.gz"
    assert _mtsr("degrade", "-i", hr_file, "-o", out, *args) == 2
    assert not out.exists()
    assert "error" in capsys.readouterr().err


def test_cli_degrade_refuses_a_constant_or_missing_input(tmp_path):
    flat = write_nifti(tmp_path / "flat.nii.gz", np.ones((16, 16, 4), np.float32))
    out = tmp_path / "lr.nii.gz"
    assert _mtsr("degrade", "-i", flat, "-o", out, "--mode", "kspace") == 2
    assert _mtsr("degrade", "-i", tmp_path / "nope.nii.gz", "-o", out, "--mode", "kspace") == 2
    assert not out.exists()


@pytest.mark.parametrize("mode", ["second-order", "kspace"])
def test_cli_degrade_keeps_a_negative_image_negative(tmp_path, hr_file, mode):
    """The chains' magnitude noise must not turn a negative image's values positive."""
    hr, affine = _load(hr_file)
    signed = write_nifti(tmp_path / "signed.nii.gz", -hr.astype(np.float32), affine)
    out = tmp_path / "lr.nii.gz"
    assert _mtsr("degrade", "-i", signed, "-o", out, "--mode", mode, "--scale", "2") == 0
    lr = _load(out)[0]
    assert lr.max() <= 0.05 * np.abs(hr).max() and lr.mean() < 0.5 * -hr.mean()


def test_cli_degrade_keeps_the_negative_half_of_a_z_scored_skull_stripped_image(tmp_path, hr_file):
    hr, affine = _load(hr_file)
    brain = hr > np.percentile(hr, 40)
    z = np.where(brain, (hr - hr[brain].mean()) / hr[brain].std(), 0.0).astype(np.float32)  # 0 outside
    source, out = write_nifti(tmp_path / "z.nii.gz", z, affine), tmp_path / "lr.nii.gz"
    assert _mtsr("degrade", "-i", source, "-o", out, "--mode", "kspace") == 0
    assert (_load(out)[0] < -0.5).mean() > 0.5 * (z < -0.5).mean()


def test_interpolation_undershoot_does_not_make_a_magnitude_image_signed():
    from mtsr_monai.transforms.intensity import is_signed

    image = np.random.default_rng(0).uniform(100, 900, (20, 20, 10))
    image[0, :3, 0] = -20.0  # a few small negatives at an edge
    assert not is_signed(image) and is_signed(-image) and not is_signed(np.zeros((4, 4, 4)))


@pytest.mark.real_data
def test_cli_degrade_real_brats_t1_overlays_its_source(tmp_path, brats_case):
    out = tmp_path / "t1_lr.nii.gz"
    assert (
        _mtsr("degrade", "-i", brats_case["t1"], "-o", out, "--mode", "thick-slice", "--thickness", "5") == 0
    )
    hr, hr_affine = _load(brats_case["t1"])
    lr, lr_affine = _load(out)
    assert lr.shape == (240, 240, 31)
    np.testing.assert_allclose(np.linalg.norm(lr_affine[:3, :3], axis=0), [1, 1, 5], rtol=1e-5)
    back = _resample_to(lr.astype(np.float32), lr_affine, hr.shape, hr_affine)
    inner = (slice(None), slice(None), slice(10, -10))
    assert np.corrcoef(back[inner].ravel(), hr[inner].astype(np.float32).ravel())[0, 1] > 0.9


def test_a_second_order_call_reusing_a_draw_never_made_is_refused():
    from mtsr_monai.transforms.degradation import RandSecondOrderDegradation

    with pytest.raises(RuntimeError, match="randomize"):  # it returned the HR slice as its "LR"
        RandSecondOrderDegradation(prob=1.0)(_smooth_volume((32, 32, 1))[None, ..., 0], randomize=False)


def test_intensity_scalings_and_baselines_take_flipped_numpy_views():
    from mtsr_monai.inference.tissue_lookup import identity_translate
    from mtsr_monai.transforms.intensity import median_scale, robust_scale
    from mtsr_monai.transforms.protocol import ProtocolParams, SimulateProtocol

    volume = _smooth_volume((16, 16, 8)).astype(np.float64)
    flipped = np.flip(volume, 0)  # negative strides: what np.flip and nibabel reorientation give
    for scale in (robust_scale, median_scale):
        np.testing.assert_allclose(scale(flipped).numpy(), scale(volume.copy()[::-1].copy()).numpy())
    np.testing.assert_allclose(identity_translate(flipped), identity_translate(np.ascontiguousarray(flipped)))
    assert SimulateProtocol(ProtocolParams(axis=0, thickness=2.0))(flipped[None]).shape[0] == 1
