"""Clinical SR data pairing, target grids, the clinical-sr / explain commands and one real clinical scan."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mtsr_monai.cli import main as cli_main
from tests.conftest import write_nifti


def _head(shape=(40, 40, 24), seed=0) -> np.ndarray:
    """Zero background, a textured ellipsoid 'brain' (fine stripes along x so thick slices lose them)."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    inside = x**2 + y**2 + z**2 < 0.8
    tex = (
        0.5
        + 0.3 * np.sin(np.arange(shape[0]) * 1.9)[:, None, None]
        + 0.05 * np.random.default_rng(seed).random(shape)
    )
    return np.where(inside, tex, 0.0).astype(np.float32)


@pytest.fixture
def subject(tmp_path: Path) -> dict:
    out = {"subject": "s0"}
    for i, m in enumerate(("flair", "t1", "t2")):
        out[m] = str(write_nifti(tmp_path / f"{m}.nii.gz", _head(seed=i) * (100 + 50 * i), np.eye(4)))
    return out


def _grad_x(v: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(np.diff(v, axis=0))[mask[1:]].mean())


def test_pair_is_same_size_unit_range_and_blurred_along_the_protocol_axis(subject):
    from mtsr_monai.data.clinical import make_pair

    pair = make_pair(subject, crop=False)
    assert pair["lr"].shape == pair["hr"].shape == (3, 40, 40, 24)
    assert 0 <= pair["lr"].min() and pair["lr"].max() <= 1 and pair["hr"].max() == pytest.approx(1.0)
    m = pair["mask"]
    for c in range(3):  # sagittal thick slices remove the detail along x, keep it along y
        assert _grad_x(pair["lr"][c], m) < 0.5 * _grad_x(pair["hr"][c], m)


def test_rigid_pairing_registers_and_stays_close_to_the_header_pairing(subject):
    from mtsr_monai.data.clinical import make_pair

    header = make_pair(subject, modalities=["t1"], crop=False)
    rigid = make_pair(subject, modalities=["t1"], pairing="rigid", crop=False)
    m = header["mask"]
    assert np.abs(rigid["lr"] - header["lr"])[:, m].mean() < 0.05


def test_rigid_pairing_undoes_a_shift_that_header_pairing_keeps():
    from mtsr_monai.data.clinical import pair_onto_grid

    hr = _head()
    lr = np.roll(hr, 3, axis=1)  # the same head 3 mm off in y: a patient who moved between scans
    inside = hr > 0
    header = pair_onto_grid(lr, np.eye(4), hr, np.eye(4), "header")
    rigid = pair_onto_grid(lr, np.eye(4), hr, np.eye(4), "rigid")
    assert np.abs(rigid - hr)[inside].mean() < 0.3 * np.abs(header - hr)[inside].mean()


def test_slice_dataset_patches_transposes_and_channel_dropout():
    from mtsr_monai.data.clinical import ClinicalSliceDataset, pad_collate

    vol = np.random.default_rng(0).random((3, 30, 40, 20)).astype(np.float32)
    pair = {"lr": vol, "hr": vol, "mask": np.ones(vol.shape[1:], bool)}
    ds = ClinicalSliceDataset([pair], patch_size=16, samples_per_scan=20, channel_dropout=0.9, seed=1)
    assert len(ds) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-brain slice has no background: not worth a warning per patch
        samples = [ds[i] for i in range(20)]
    for s in samples:
        assert s["lr"].shape == (3, 16, 16) and s["mask"].shape == (1, 16, 16)
        assert (s["lr"].flatten(1).amax(1) > 0).sum() >= 1  # never all channels dropped
    full = ClinicalSliceDataset([pair], mode="slice", samples_per_scan=4, axes=(2,), transpose=False)
    batch = pad_collate([full[i] for i in range(4)], multiple=16)
    assert batch["lr"].shape == (4, 3, 32, 48)


def test_monai_dataloader_seeds_workers_epochs_and_processes_apart():
    from monai.data import DataLoader

    from mtsr_monai.data.clinical import ClinicalSliceDataset, pad_collate

    vol = np.random.default_rng(0).random((1, 30, 40, 20)).astype(np.float32)
    pair = {"lr": vol, "hr": vol, "mask": np.ones(vol.shape[1:], bool)}
    ds = ClinicalSliceDataset([pair], patch_size=16, samples_per_scan=4, seed=1)
    # items 0, 2: worker 0; 1, 3: worker 1
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=pad_collate)
    draws = [batch["hr"] for _ in range(2) for batch in loader]
    assert len(draws) == 8
    # each draw its own: no worker repeats the other's stream, no epoch the previous epoch's
    assert not any(torch.equal(a, b) for i, a in enumerate(draws) for b in draws[i + 1 :])

    def first_batch(torch_seed: int) -> torch.Tensor:  # no workers: from the torch seed (DDP: per rank)
        torch.manual_seed(torch_seed)
        return next(iter(DataLoader(ds, batch_size=4, collate_fn=pad_collate)))["hr"]

    assert torch.equal(first_batch(0), first_batch(0)) and not torch.equal(first_batch(0), first_batch(1))


def test_slice_dataset_transposes_and_flips_give_each_symmetry_of_the_square_alike():
    from mtsr_monai.data.clinical import ClinicalSliceDataset

    vol = np.arange(2 * 5 * 5, dtype=np.float32).reshape(1, 2, 5, 5)
    pair = {"lr": vol, "hr": vol, "mask": np.ones(vol.shape[1:], bool)}
    ds = ClinicalSliceDataset([pair], mode="slice", samples_per_scan=800, axes=(0,), seed=2)
    counts: dict[tuple, int] = {}
    for i in range(len(ds)):
        s = ds[i]["hr"][0]
        key = (int(s[0, 0] - s[0, 0] // 25 * 25), int(s[0, 1] - s[0, 0]))  # the corner and the step along w
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 8 and min(counts.values()) > 60  # each of the 8 about 100 times


def test_generator_loss_specs_sum_named_terms():
    from mtsr_monai.losses.reconstruction import generator_loss

    pred, target = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    terms = generator_loss("mae+ssim")(pred, target)
    assert set(terms) == {"mae", "ssim", "total"}
    assert float(terms["total"]) == pytest.approx(float(terms["mae"] + terms["ssim"]))
    assert float(generator_loss("bce")(target, target)["total"]) < float(
        generator_loss("bce")(pred, target)["total"]
    )
    with pytest.raises(ValueError):
        generator_loss("mae+vgg")


def test_bce_loss_is_computed_outside_autocast(monkeypatch):
    # CUDA autocast refuses binary_cross_entropy (whatever the dtype): the loss must leave autocast first
    from mtsr_monai.losses import reconstruction

    inside = []
    bce = reconstruction.F.binary_cross_entropy
    monkeypatch.setattr(
        reconstruction.F, "binary_cross_entropy",
        lambda *a: inside.append(torch.is_autocast_enabled("cpu")) or bce(*a),
    )  # fmt: skip
    pred, target = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = reconstruction.BCELoss()(pred, target)
    assert inside == [False] and loss.dtype == torch.float32


def _oblique_affine(spacing=(1.0, 1.0, 4.0), angle=0.3) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [-20.0, -20.0, -10.0]
    return affine


def test_isotropic_grid_covers_the_oblique_field_of_view_and_keeps_its_orientation():
    from mtsr_monai.inference.clinical import isotropic_grid, thick_axis_on_grid
    from mtsr_monai.transforms.sitk_utils import array_to_sitk, sitk_affine

    img = array_to_sitk(np.zeros((40, 40, 6), np.float32), _oblique_affine())
    grid = isotropic_grid(img, 1.0)
    assert grid.GetSize() == (40, 40, 24)
    a_in, a_out = _oblique_affine(), sitk_affine(grid)
    np.testing.assert_allclose(
        a_out[:3, :3] / np.linalg.norm(a_out[:3, :3], axis=0),
        a_in[:3, :3] / np.linalg.norm(a_in[:3, :3], axis=0),
        atol=1e-6,
    )
    # first voxel's outer edge coincides with the input's
    edge_in = a_in[:3, :3] @ np.full(3, -0.5) + a_in[:3, 3]
    edge_out = a_out[:3, :3] @ np.full(3, -0.5) + a_out[:3, 3]
    np.testing.assert_allclose(edge_in, edge_out, atol=1e-6)
    assert thick_axis_on_grid(img, grid) == 2


def test_a_target_grid_too_large_to_hold_or_a_spacing_out_of_range_is_refused():
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.clinical import isotropic_grid
    from mtsr_monai.inference.components import ClinicalSliceInferer, PrepareRoutineScansd
    from mtsr_monai.transforms.sitk_utils import array_to_sitk

    scan = array_to_sitk(np.zeros((4, 4, 4), np.float32), np.diag([57.5, 57.5, 36.0, 1.0]))  # 230 mm wide
    assert isotropic_grid(scan, 1.0).GetSize() == (230, 230, 144)
    with pytest.raises(InputError, match="M voxels"):
        isotropic_grid(scan, 0.1)  # 2300 x 2300 x 1440: 30 GB a volume
    for bad in ({"spacing": 0}, {"spacing": -1}):  # a bundle's --spacing, refused before any session
        with pytest.raises(InputError, match="outside"):
            PrepareRoutineScansd(**bad)
    for bad in ({"planes": 3}, {"slice_axis": 5}):
        with pytest.raises(InputError, match="planes must be 1 or 2"):
            ClinicalSliceInferer(**bad)


def test_isotropic_grid_is_centred_and_ignores_float32_rounding_of_the_voxel_size():
    from mtsr_monai.inference.clinical import isotropic_grid
    from mtsr_monai.transforms.sitk_utils import array_to_sitk, sitk_affine

    def centre(image):
        affine = sitk_affine(image)
        return affine[:3, :3] @ ((np.asarray(image.GetSize()) - 1) / 2) + affine[:3, 3]

    fine = np.diag([0.7187503, 0.7187503, 4.0, 1.0])  # 128 voxels: 92.00004 mm
    scan = array_to_sitk(np.zeros((128, 128, 23), np.float32), fine)  # 92 x 92 x 92 mm
    grid = isotropic_grid(scan, 1.0)
    assert grid.GetSize() == (92, 92, 92)  # not 93 with an empty last row
    np.testing.assert_allclose(centre(grid), centre(scan), atol=1e-3)
    odd = array_to_sitk(np.zeros((161, 40, 5), np.float32), np.diag([0.5, 1.0, 4.0, 1.0]))  # 80.5 mm
    np.testing.assert_allclose(centre(isotropic_grid(odd, 1.0)), centre(odd), atol=1e-6)


def test_the_same_session_stored_in_another_axis_order_is_restored_alike():
    from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

    from mtsr_monai.inference.clinical import restore_planes

    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1)  # random: neither flip- nor transpose-invariant
    lps_affine, stored = (
        np.diag([-1.0, -1.0, 1.0, 1.0]),
        np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    )
    vol = np.random.default_rng(0).random((2, 12, 10, 8)).astype(np.float32)
    ref = restore_planes(net, vol, (2, 1), lps_affine)
    change = ornt_transform(io_orientation(lps_affine), io_orientation(stored))
    moved = np.moveaxis(apply_orientation(np.moveaxis(vol, 0, -1), change), -1, 0)
    axes = [int(change[a, 0]) for a in (2, 1)]  # the same anatomical planes in the stored order
    out = restore_planes(net, moved, axes, stored)
    back = np.moveaxis(
        apply_orientation(
            np.moveaxis(out, 0, -1), ornt_transform(io_orientation(stored), io_orientation(lps_affine))
        ),
        -1,
        0,
    )
    np.testing.assert_allclose(back, ref, atol=1e-5)


def test_a_validation_batch_without_an_affine_is_restored_in_its_own_array_order():
    from mtsr_monai.inference.clinical import restore_planes
    from mtsr_monai.inference.components import ClinicalSliceInferer

    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 2, 3, padding=1)  # random: a reordering would show
    vol = np.random.default_rng(1).random((2, 12, 10, 8)).astype(np.float32)
    inferer = ClinicalSliceInferer(patch_size=None, slice_axis=2)
    out = inferer(torch.from_numpy(vol)[None], net)  # a plain tensor, as training's validation batches
    np.testing.assert_allclose(np.asarray(out[0]), restore_planes(net, vol, (2,)), atol=1e-6)


def _slabs(tmp_path: Path) -> dict[str, Path]:
    """A 'routine session': FLAIR axial 4 mm oblique slab, T2 3 mm slab shifted by 2 mm."""
    flair = _head((40, 40, 6)) * 300
    t2 = _head((40, 40, 8), seed=3) * 900
    a2 = _oblique_affine((1.0, 1.0, 3.0))
    a2[:3, 3] += [2.0, 0.0, 0.0]
    return {
        "flair": write_nifti(tmp_path / "in_flair.nii.gz", flair, _oblique_affine()),
        "t2": write_nifti(tmp_path / "in_t2.nii.gz", t2, a2),
    }


def test_a_near_isotropic_reference_is_said_to_leave_the_planes_a_guess(tmp_path, caplog):
    import logging

    from mtsr_monai.inference.clinical import _model_outputs, prepare_routine_scans

    scans = _slabs(tmp_path)
    iso = write_nifti(tmp_path / "iso.nii.gz", _head((20, 20, 20)) * 300, _oblique_affine((2.0, 2.0, 2.0)))
    thick = prepare_routine_scans({"flair": scans["flair"]}, None, 2.0, register=False)
    resampled = prepare_routine_scans({"flair": iso}, None, 2.0, register=False)
    assert not thick["near_isotropic"] and resampled["near_isotropic"]
    ckpt = {"modalities": ["flair"], "network": torch.nn.Identity()}
    for prepared, told in ((thick, False), (resampled, True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            _model_outputs(ckpt, prepared, {"flair": "f"}, None, False, 2, "cpu", False)
        assert ("no thick axis" in caplog.text) == told


def test_inference_clips_inputs_at_their_scaling_level_before_the_headroom_in_both_paths(tmp_path):
    from mtsr_monai.inference.clinical import _model_outputs, prepare_routine_scans
    from mtsr_monai.inference.components import ClinicalSliceInferer

    flair = _head((40, 40, 6)) * 300
    flair[18:22, 18:22, 2:4] = 1.3 * flair.max()  # a lesion above the 99.5 % level
    scan = write_nifti(tmp_path / "flair.nii.gz", flair, _oblique_affine())
    prepared = prepare_routine_scans({"flair": scan}, None, 2.0, register=False)
    scaled = prepared["interpolated"]["flair"]
    assert scaled.max() > 1.1
    ckpt = {"modalities": ["flair"], "network": torch.nn.Identity(), "intensity_headroom": 1.25}
    out = _model_outputs(ckpt, prepared, {"flair": "f"}, 2, False, 2, "cpu", False)[0]["flair"]
    np.testing.assert_allclose(out, np.clip(scaled, 0.0, 1.0), atol=1e-5)
    bundle = ClinicalSliceInferer(patch_size=None, headroom=1.25, slice_axis=2)
    item = torch.from_numpy(np.clip(scaled, 0.0, None))[None, None]
    np.testing.assert_allclose(np.asarray(bundle(item, torch.nn.Identity())[0, 0]), out, atol=1e-5)


def test_clinical_sr_interpolation_writes_one_volume_per_input_on_the_like_grid(tmp_path, capsys):
    from mtsr_monai.io import load_volume

    scans = _slabs(tmp_path)
    like = write_nifti(
        tmp_path / "like.nii.gz", np.ones((30, 32, 20), np.float32), _oblique_affine((1.2, 1.2, 1.2))
    )
    out = tmp_path / "out"
    rc = cli_main(
        [
            "clinical-sr",
            "--flair",
            str(scans["flair"]),
            "--t2",
            str(scans["t2"]),
            "--like",
            str(like),
            "--output-dir",
            str(out),
            "--method",
            "bspline",
        ]
    )
    assert rc in (0, None)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "clinical_sr.json",
        "flair.nii.gz",
        "flair_consistency.nii.gz",
        "t2.nii.gz",
        "t2_consistency.nii.gz",
    ]
    ref = load_volume(like, validate=False)
    for name in ("flair", "t2"):
        vol = load_volume(out / f"{name}.nii.gz")
        assert vol.shape == ref.shape
        np.testing.assert_allclose(np.asarray(vol.affine), np.asarray(ref.affine), atol=1e-4)
    assert float(load_volume(out / "flair.nii.gz").max()) > 100  # back in the input's intensity scale
    err = capsys.readouterr().err
    for stage in ("scans onto the target grid", "data consistency", "write"):  # progress names each step
        assert stage in err, stage


def _tiny_checkpoint(path: Path) -> Path:
    from mtsr_monai.networks.attention_unet import AttentionGatedUNet
    from mtsr_monai.networks.critic import Critic

    torch.manual_seed(0)
    net_args = {
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 3,
        "filters": 4,
        "depth": 3,
        "residual": True,
    }
    critic_args = {"spatial_dims": 2, "in_channels": 3, "input_size": 16, "filters": 4, "dropout": 0.5}
    torch.save(
        {
            "model": {k: v.half() for k, v in AttentionGatedUNet(**net_args).state_dict().items()},
            "critic": Critic(**critic_args).state_dict(),
            "network": net_args,
            "critic_args": critic_args,
            "modalities": ["flair", "t1", "t2"],
            "patch_size": 16,
        },
        path,
    )
    return path


def test_clinical_sr_model_and_explain_write_volumes_maps_and_png(tmp_path):
    from mtsr_monai.io import load_volume

    scans = _slabs(tmp_path)
    ckpt = _tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    rc = cli_main(
        [
            "explain",
            "--flair",
            str(scans["flair"]),
            "--t2",
            str(scans["t2"]),
            "--spacing",
            "2",
            "--output-dir",
            str(out),
            "--model",
            str(ckpt),
        ]
    )
    assert rc in (0, None)
    names = {p.name for p in out.iterdir()}
    assert {
        "flair.nii.gz",
        "t2.nii.gz",
        "attention_gate1.nii.gz",
        "attention_gate2.nii.gz",
        "gradcam.nii.gz",
        "explain.png",
        "critic_score.txt",
    } <= names
    assert "t1.nii.gz" not in names  # only the sequences given
    gate = load_volume(out / "attention_gate1.nii.gz", validate=False).numpy()
    assert gate.shape == load_volume(out / "flair.nii.gz").shape and 0 <= gate.min() and gate.max() <= 1
    assert 0 < float((out / "critic_score.txt").read_text()) < 1
    summary = json.loads((out / "clinical_sr.json").read_text())
    assert (
        len(summary["slice_axes"]) == 2 and summary["slice_axis"] == summary["slice_axes"][0]
    )  # both planes


def _exit_code(argv: list[str]) -> int:
    try:
        return cli_main(argv) or 0
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = write_nifti(tmp_path / "constant.nii.gz", np.ones((8, 8, 4), np.float32))
    out = tmp_path / "out"
    argv = [
        "clinical-sr",
        "--flair",
        str(bad),
        "--spacing",
        "1",
        "--output-dir",
        str(out),
        "--method",
        "trilinear",
    ]
    assert _exit_code(argv) == 2
    assert "constant.nii.gz" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert _exit_code(["clinical-sr", "--spacing", "1", "--output-dir", str(out)]) == 2
    assert _exit_code(["clinical-sr", "--flair", str(bad), "--output-dir", str(out)]) == 2  # no target grid


def _field_mm(volume) -> np.ndarray:
    """The extent in mm, along each world axis, of the voxel centres' bounding box."""
    import itertools

    shape = np.asarray(volume.shape[-3:]) - 1
    corners = np.array([c * shape for c in itertools.product((0, 1), repeat=3)], dtype=float)
    world = corners @ volume.affine.numpy()[:3, :3].T
    return world.max(0) - world.min(0)


def test_real_clinical_slabs_restore_onto_the_asked_grid_over_the_slabs_field_in_their_intensity_scale(
    shared_data, tmp_path
):
    """TCGA-FG-6692 raw T2 + FLAIR slabs (5.5 mm, on different grids) through the shipped model: their 10
    middle slices (55 mm of the 143), headers kept, so the test takes about half the time."""
    import nibabel as nib

    from mtsr_monai.inference.clinical import default_model_path
    from mtsr_monai.io import load_volume

    if not default_model_path().exists():
        pytest.skip("shipped weights not present")
    folder = shared_data / "tcga_lgg_fg6692_brainles"
    flair, t2 = tmp_path / "flair_slab.nii.gz", tmp_path / "t2_slab.nii.gz"
    for pattern, path in (("*FLAIR*.nii.gz", flair), ("MRHR_T2*.nii.gz", t2)):
        nib.save(nib.load(next(folder.glob(pattern))).slicer[:, :, 8:18], path)
    out = tmp_path / "out"
    rc = cli_main(
        ["clinical-sr", "--flair", str(flair), "--t2", str(t2), "--spacing", "2", "--output-dir", str(out)]
    )
    assert rc in (0, None)
    restored, src = load_volume(out / "flair.nii.gz"), load_volume(flair)
    np.testing.assert_allclose(nib.affines.voxel_sizes(restored.affine.numpy()), 2.0, atol=1e-4)
    assert _field_mm(restored) == pytest.approx(_field_mm(src), abs=4.0)  # within a 2 mm voxel each side
    restored, src = restored.numpy(), src.numpy()
    assert np.isfinite(restored).all() and restored.max() > 0.3 * src.max()
    assert restored.max() < 2.0 * src.max()  # stays in the input's intensity scale


def test_clinical_weights_that_do_not_fit_their_network_are_refused_in_one_line(tmp_path, capsys):
    from mtsr_monai.networks.attention_unet import AttentionGatedUNet

    args = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "filters": 8, "depth": 2}
    state = {k: v.half() for k, v in AttentionGatedUNet(**args).state_dict().items()}
    bad = tmp_path / "bad.pt"
    torch.save({"model": state, "network": {**args, "filters": 16}, "modalities": ["flair"]}, bad)
    scans = _slabs(tmp_path)
    argv = ["clinical-sr", "--flair", str(scans["flair"]), "--spacing", "2", "--model", str(bad), "-o"]
    assert cli_main([*argv, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "do not fit" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_explain_refuses_a_slab_too_thin_for_the_coarsest_attention_map(tmp_path, capsys):
    thin = write_nifti(
        tmp_path / "w4_flair.nii.gz", _head((4, 30, 6)) * 100 + 50, np.diag([1.0, 1.0, 4.0, 1.0])
    )
    out = tmp_path / "out"
    assert cli_main(["explain", "--flair", str(thin), "--spacing", "1", "-o", str(out)]) == 2
    assert "too small to explain" in capsys.readouterr().err and not out.exists()


def test_figure_titles_show_file_names_with_dollar_signs_literally(tmp_path):
    from mtsr_monai.reporting.html import montage_figure

    vol = _head((12, 12, 12))
    path = montage_figure(
        {"p$_$1 reference": vol, "model": vol}, tmp_path / "m.png", (6, 6, 6), title="p$_$1"
    )
    assert path.is_file()  # mathtext would fail to parse "$_$"


def test_one_file_given_as_two_sequences_is_refused(tmp_path, capsys):
    scans = _slabs(tmp_path)
    argv = ["clinical-sr", "--t1", str(scans["t2"]), "--t2", str(scans["t2"]), "--spacing", "1", "-o"]
    assert cli_main([*argv, str(tmp_path / "out"), "--method", "trilinear"]) == 2
    assert "given as both --t1 and --t2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_sequence_given_twice_is_refused(tmp_path, capsys):
    scans = _slabs(tmp_path)
    argv = ["clinical-sr", "--flair", str(scans["flair"]), "--flair", str(scans["t2"]), "--spacing", "1"]
    assert _exit_code([*argv, "-o", str(tmp_path / "out"), "--method", "trilinear"]) == 2
    assert "--flair given twice" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_rerun_with_fewer_sequences_leaves_none_of_the_earlier_runs_outputs(tmp_path):
    scans = _slabs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    common = ["clinical-sr", "--spacing", "2", "--method", "trilinear", "--output-dir", str(out)]
    assert cli_main([*common, "--flair", str(scans["flair"]), "--t2", str(scans["t2"])]) in (0, None)
    assert (out / "t2.nii.gz").is_file()
    assert cli_main([*common, "--flair", str(scans["flair"])]) in (0, None)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["clinical_sr.json", "flair.nii.gz", "flair_consistency.nii.gz", "notes.txt"]


def test_an_earlier_output_given_as_an_input_of_the_next_run_is_kept(tmp_path):
    scans = _slabs(tmp_path)
    out = tmp_path / "out"
    common = ["clinical-sr", "--method", "trilinear", "--output-dir", str(out)]
    assert cli_main([*common, "--spacing", "2", "--flair", str(scans["flair"])]) in (0, None)
    like = out / "flair.nii.gz"  # the T2 put on the grid of the FLAIR restored just before
    assert cli_main([*common, "--like", str(like), "--t2", str(scans["t2"])]) in (0, None)
    assert like.is_file() and (out / "t2.nii.gz").is_file()
    assert not (out / "flair_consistency.nii.gz").exists()  # an earlier output that is no input goes


def test_a_registration_that_ends_worse_than_its_start_on_every_voxel_keeps_the_start(subject, monkeypatch):
    import SimpleITK as sitk

    from mtsr_monai.transforms import registration as reg

    fixed, moving = (sitk.ReadImage(str(subject[k])) for k in ("flair", "t1"))
    linear_stage = reg._linear_stage

    def drifting(*args, **kwargs):  # the optimiser ends 4 mm and 5 degrees off, as on thick small slabs
        transform, report = linear_stage(*args, **kwargs)
        transform.SetParameters((0.0, 0.09, 0.0, 0.0, -3.0, -4.0))
        return transform, report

    monkeypatch.setattr(reg, "_linear_stage", drifting)
    transform, report = reg.register(fixed, moving, kind="rigid", init="header")
    assert report["kept_start"] and report["start_metric_full"] < report["end_metric_full"]
    assert transform.GetParameters() == (0.0,) * 6


def test_a_best_model_file_of_any_layout_gives_the_plain_generator_state(tmp_path):
    from mtsr_monai.inference.clinical import generator_state

    weight = torch.ones(2)
    old_ddp, old_plain, checkpoint = (
        {"module.conv.weight": weight},
        {"conv.weight": weight},
        {"model": {"conv.weight": weight}},
    )
    for saved in (old_ddp, old_plain, checkpoint):
        torch.save(saved, tmp_path / "model_best.pt")
        assert list(generator_state(tmp_path / "model_best.pt")) == ["conv.weight"]


def test_a_file_that_is_not_a_clinical_checkpoint_is_refused_by_name(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.clinical import clinical_weights

    bare = tmp_path / "model_best.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bare)  # a bare state dict, as training's best-model file
    with pytest.raises(InputError, match="not a clinical_sr checkpoint"):
        clinical_weights(bare)


def test_a_scan_a_few_voxels_thick_is_restored_and_checked_for_consistency(tmp_path):
    rng = np.random.default_rng(0)
    scan = write_nifti(
        tmp_path / "t1.nii.gz", 100 + rng.random((5, 3, 3), np.float32), np.diag([4, 4, 1, 1.0])
    )
    out = tmp_path / "out"
    argv = ["clinical-sr", "--t1", str(scan), "--spacing", "1", "--method", "trilinear", "-o", str(out)]
    assert cli_main(argv) in (0, None)
    assert (out / "t1.nii.gz").is_file()


def test_a_scans_scaling_does_not_depend_on_how_far_the_target_grid_reaches_past_it(tmp_path):
    from mtsr_monai.inference.clinical import prepare_routine_scans

    rng = np.random.default_rng(1)
    head = np.abs(_head((24, 24, 12)) * 500 + rng.normal(0, 20, (24, 24, 12))).astype(np.float32)  # noisy air
    scan = write_nifti(tmp_path / "flair.nii.gz", head, np.diag([1, 1, 4, 1.0]))
    wide = write_nifti(tmp_path / "wide.nii.gz", np.zeros((40, 40, 60), np.float32), np.diag([1, 1, 1, 1.0]))
    tight = write_nifti(
        tmp_path / "tight.nii.gz", np.zeros((24, 24, 44), np.float32), np.diag([1, 1, 1, 1.0])
    )
    his = [
        prepare_routine_scans({"flair": scan}, like=g, register=False, progress=False)["bounds"]["flair"][1]
        for g in (tight, wide)
    ]
    assert his[0] == pytest.approx(his[1], rel=0.02)
