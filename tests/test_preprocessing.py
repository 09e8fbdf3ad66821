"""Preprocessing transforms and ``mtsr preprocess``: tiny synthetic volumes, plus one real BraTS subject."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_nifti

SIZE = (36, 40, 32)  # voxels of the synthetic template, 2 mm


def _head(shape=SIZE, shift_vox=(0.0, 0.0, 0.0)) -> np.ndarray:
    """An asymmetric synthetic 'head': an ellipsoid with off-centre blobs, smoothed for registration."""
    from scipy import ndimage

    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    centre = np.array([s / 2 for s in shape])[:, None, None, None] + np.array(shift_vox)[:, None, None, None]
    rel = (grid - centre) / np.array([0.38 * shape[0], 0.36 * shape[1], 0.34 * shape[2]])[:, None, None, None]
    vol = 100.0 * ((rel**2).sum(0) < 1)
    for offset, radius, value in (((0.3, 0.1, 0.1), 0.18, 80.0), ((-0.2, -0.35, 0.0), 0.12, -60.0)):
        d = rel - np.array(offset)[:, None, None, None]
        vol = vol + value * ((d**2).sum(0) < radius**2)
    return ndimage.gaussian_filter(vol, 1.0).astype(np.float32)


def _affine(spacing=2.0, origin=(-36.0, -40.0, -32.0), angle_deg=0.0) -> np.ndarray:
    theta = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([spacing] * 3 if np.isscalar(spacing) else spacing)
    affine[:3, 3] = origin
    return affine


def _channel_first(array: np.ndarray, affine: np.ndarray):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.as_tensor(array[None]), affine=torch.as_tensor(affine))


def _corr(a, b) -> float:
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture
def template_file(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "template.nii.gz", _head(), _affine())


FAST = {
    "shrink_factors": (2, 1),
    "smoothing_sigmas": (1.0, 0.0),
    "iterations": 100,
    "sampling_percentage": 0.5,
}


# ---------------------------------------------------------------------------- RAS <-> LPS conversion


def test_metatensor_sitk_round_trip_keeps_oblique_affine_and_voxels():
    from mtsr_monai.transforms.sitk_utils import metatensor_to_sitk, sitk_to_metatensor

    rng = np.random.default_rng(0)
    array = rng.random((5, 6, 7)).astype(np.float32)
    affine = _affine(spacing=(0.9, 1.1, 3.0), origin=(10.0, -20.0, 5.0), angle_deg=17.0)
    image = metatensor_to_sitk(_channel_first(array, affine))
    # a voxel's physical point in SimpleITK (LPS) is the RAS point with x, y negated
    ras = affine @ np.array([1, 2, 3, 1.0])
    assert np.allclose(image.TransformIndexToPhysicalPoint((1, 2, 3)), ras[:3] * [-1, -1, 1])
    assert image.GetPixel(1, 2, 3) == pytest.approx(float(array[1, 2, 3]))
    back = sitk_to_metatensor(image)
    assert back.shape == (1, 5, 6, 7)
    assert np.allclose(back.affine.numpy(), affine)
    assert np.array_equal(back[0].numpy(), array)


def test_chain_applies_first_transform_then_second():
    import SimpleITK as sitk

    from mtsr_monai.transforms.registration import chain

    shift = sitk.TranslationTransform(3, (1.0, 0.0, 0.0))
    scale = sitk.ScaleTransform(3, (2.0, 2.0, 2.0))
    assert np.allclose(chain(shift, scale).TransformPoint((1.0, 1.0, 1.0)), (4.0, 2.0, 2.0))


# ---------------------------------------------------------------------------- N4


def test_n4_removes_smooth_multiplicative_bias_and_keeps_affine():
    from mtsr_monai.transforms.bias import N4BiasFieldCorrectiond

    shape = (40, 40, 40)
    truth = np.where(_head(shape) > 50, 100.0, 0.0).astype(np.float32)  # uniform tissue
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    biased = truth * np.exp(0.4 * x).astype(np.float32)
    affine = _affine(spacing=1.5, angle_deg=10.0)
    out = N4BiasFieldCorrectiond("t1", shrink_factor=2, iterations=(30, 20, 20))(
        {"t1": _channel_first(biased, affine)}
    )
    inside = truth > 0
    cv = lambda v: float(v[inside].std() / v[inside].mean())  # noqa: E731
    corrected = out["t1"][0].numpy()
    assert cv(corrected) < 0.5 * cv(biased)
    assert np.allclose(out["t1"].affine.numpy(), affine)
    assert out["preprocess_params"]["n4"]["shrink_factor"] == 2


# ---------------------------------------------------------------------------- registration


def test_register_to_template_aligns_shifted_t1_and_other_grid_t2(template_file: Path):
    from mtsr_monai.transforms.registration import RegisterToTemplated

    template = _head()
    # t1: the head 3 voxels (6 mm) off centre and rotated 6 degrees in its header
    t1 = _head(shift_vox=(3, -2, 1))
    t1_affine = _affine(angle_deg=6.0)
    # t2: other contrast on another grid (2.5 mm), same scanner space as t1
    t2_affine = _affine(spacing=2.5, origin=(-30.0, -35.0, -28.0), angle_deg=6.0)
    from scipy import ndimage

    to_t1 = np.linalg.inv(t1_affine) @ t2_affine
    t2 = ndimage.affine_transform(t1, to_t1[:3, :3], to_t1[:3, 3], output_shape=(30, 34, 26), order=1)
    t2 = (t2.max() - t2) * (t2 > 5)  # inverted contrast, background kept at 0
    label = (t1 > 150).astype(np.uint8) * 2
    data = {
        "t1": _channel_first(t1, t1_affine),
        "t2": _channel_first(t2.astype(np.float32), t2_affine),
        "label": _channel_first(label, t1_affine),
    }
    before = _corr(ndimage.affine_transform(t1, np.eye(3), 0, output_shape=SIZE), template)
    out = RegisterToTemplated(["t1", "t2", "label"], template=template_file, registration="rigid", **FAST)(
        data
    )

    assert out["t1"].shape[1:] == SIZE
    assert np.allclose(out["t1"].affine.numpy(), _affine())  # the template's grid
    assert np.allclose(out["t2"].affine.numpy(), _affine())
    after = _corr(out["t1"][0], template)
    assert after > 0.97 and after > before + 0.1
    t1_head = _head(shift_vox=(3, -2, 1))
    expected_t2 = (t1_head.max() - template) * (template > 5)  # the template in t2's inverted contrast
    assert _corr(out["t2"][0], expected_t2) > 0.9
    assert set(np.unique(out["label"].numpy())) <= {0, 2}  # nearest neighbour: no blended labels
    params = out["preprocess_params"]["registration"]
    assert params["per_key"]["t2"]["kind"] == "rigid" and params["per_key"]["t2"]["to"] == "t1"


def test_registration_none_stays_native_and_mask_follows_inverse(template_file: Path):
    from mtsr_monai.transforms.brain_mask import BrainMaskFromTemplated
    from mtsr_monai.transforms.registration import RegisterToTemplated

    t1, affine = _head(shift_vox=(3, 0, 0)), _affine(angle_deg=5.0)
    data = {"t1": _channel_first(t1, affine)}
    none = {"registration": "none", "template_brain_only": True, **FAST}  # this blob is a brain
    out = RegisterToTemplated("t1", template=template_file, **none)(data)
    out = BrainMaskFromTemplated("t1", template=template_file)(out)
    assert np.allclose(out["t1"].affine.numpy(), affine)
    assert np.array_equal(out["t1"][0].numpy(), t1)  # not moved
    mask = out["brain_mask"][0].numpy() > 0
    assert out["brain_mask"].shape == out["t1"].shape
    # the carried template mask sits on the (shifted) head of this subject
    head = t1 > 20
    dice = 2 * (mask & head).sum() / (mask.sum() + head.sum())
    assert dice > 0.9


def _brain_in_head(shift_vox=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(head, brain mask): the blob of ``_head`` as a brain, in a dark skull, a bright scalp and air noise."""
    from scipy import ndimage

    shape = (44, 48, 40)
    brain = _head(shape, shift_vox)
    inside = brain > 50

    skull = ndimage.binary_dilation(inside, iterations=2) & ~inside
    scalp = ndimage.binary_dilation(inside, iterations=4) & ~ndimage.binary_dilation(inside, iterations=2)
    noise = np.abs(np.random.default_rng(0).normal(0, 4, shape))
    head = np.where(inside, brain, 0) + 10 * skull + 160 * scalp + noise
    return head.astype(np.float32), inside


def test_a_head_with_its_skull_gets_a_brain_mask_from_a_brain_only_template(tmp_path):
    from mtsr_monai.transforms.brain_mask import BrainMaskFromTemplated
    from mtsr_monai.transforms.registration import RegisterToTemplated

    shape = (44, 48, 40)
    template = write_nifti(
        tmp_path / "brain_template.nii.gz", np.where(_head(shape) > 50, _head(shape), 0), _affine()
    )
    head, brain = _brain_in_head(shift_vox=(2, 0, 0))
    data = {"t1": _channel_first(head, _affine(angle_deg=4.0))}
    out = RegisterToTemplated("t1", template=template, registration="none", **FAST)(data)
    out = BrainMaskFromTemplated("t1", template=template)(out)
    assert out["preprocess_params"]["registration"]["metric_in_template_brain"]
    mask = out["brain_mask"][0].numpy() > 0
    # 0.90 here; 0.59 when the whole template is matched: its brain is stretched to the scalp
    assert 2 * (mask & brain).sum() / (mask.sum() + brain.sum()) > 0.8


def test_nonlinear_registration_returns_bspline_composite(template_file: Path):
    from mtsr_monai.transforms.keys import PARAMS_KEY, TRANSFORMS_KEY
    from mtsr_monai.transforms.registration import RegisterToTemplated

    data = {"t1": _channel_first(_head(shift_vox=(1, 1, 0)), _affine())}
    out = RegisterToTemplated(
        "t1",
        template=template_file,
        registration="nonlinear",
        bspline_iterations=3,
        bspline_mesh_size=(2, 2, 2),
        **FAST,
    )(data)
    assert out[TRANSFORMS_KEY]["t1"].GetName() == "CompositeTransform"
    assert "bspline_metric" in out[PARAMS_KEY]["registration"]["per_key"]["t1"]
    assert _corr(out["t1"][0], _head()) > 0.97


def test_a_nonlinear_transform_of_a_modality_on_its_own_grid_can_be_written(template_file: Path, tmp_path):
    import SimpleITK as sitk

    from mtsr_monai.transforms.keys import TRANSFORMS_KEY
    from mtsr_monai.transforms.registration import RegisterToTemplated

    coarse = np.diag([2.0, 2.0, 2.0, 1.0])  # T2 on a grid of its own: moved to T1, then with T1's transform
    data = {
        "t1": _channel_first(_head(shift_vox=(1, 1, 0)), _affine()),
        "t2": _channel_first(_head(tuple(s // 2 for s in SIZE)), coarse),
    }
    out = RegisterToTemplated(
        ["t1", "t2"], template=template_file, registration="nonlinear", bspline_iterations=2,
        bspline_mesh_size=(2, 2, 2), **FAST,
    )(data)  # fmt: skip
    sitk.WriteTransform(out[TRANSFORMS_KEY]["t2"], str(tmp_path / "t2.tfm"))  # refused when nested
    assert sitk.ReadTransform(str(tmp_path / "t2.tfm")).GetName() == "CompositeTransform"


# ---------------------------------------------------------------------------- mask, crop, scaling


def test_mni_brain_mask_is_intracranial_sized_and_covers_template_brain():
    import SimpleITK as sitk

    from mtsr_monai.io.template import template_path
    from mtsr_monai.transforms.brain_mask import template_brain_mask

    mask = sitk.GetArrayFromImage(template_brain_mask()) > 0
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(template_path("t1")))) > 0
    assert 1.4e6 < mask.sum() < 2.2e6  # voxels of 1 mm^3: an adult intracranial volume in mL
    assert mask[brain].mean() > 0.99


def test_skull_strip_zeroes_everything_outside_the_mask(template_file: Path):
    from mtsr_monai.transforms.brain_mask import BrainMaskFromTemplated

    noisy = _head() + 30.0  # non-zero background everywhere
    out = BrainMaskFromTemplated("t1", template=template_file, skull_strip=True)(
        {"t1": _channel_first(noisy, _affine())}
    )
    mask = out["brain_mask"][0].numpy() > 0
    assert 0 < mask.mean() < 0.8
    assert np.all(out["t1"][0].numpy()[~mask] == 0) and np.all(out["t1"][0].numpy()[mask] > 0)


def test_crop_to_mask_box_keeps_world_positions_and_k_divisible():
    from mtsr_monai.transforms.crop import CropToTemplateBoxd

    affine = _affine(spacing=1.5, angle_deg=20.0)
    image = np.random.default_rng(1).random((30, 30, 30)).astype(np.float32)
    mask = np.zeros((30, 30, 30), np.uint8)
    mask[5:15, 8:20, 10:13] = 1
    data = {"t1": _channel_first(image, affine), "brain_mask": _channel_first(mask, affine)}
    out = CropToTemplateBoxd("t1", margin=1, k_divisible=4)(data)
    start = out["preprocess_params"]["crop"]["box_start"]
    assert all(s % 4 == 0 for s in out["t1"].shape[1:])
    assert out["brain_mask"].shape == out["t1"].shape
    assert out["brain_mask"].sum() == mask.sum()
    # voxel (0, 0, 0) of the crop is the same physical point as voxel `start` of the input
    assert np.allclose(out["t1"].affine.numpy() @ [0, 0, 0, 1], affine @ [*start, 1])
    assert out["t1"][0, 0, 0, 0] == image[tuple(start)]


def test_a_k_divisible_box_larger_than_the_array_is_zero_padded_in_place():
    from mtsr_monai.transforms.crop import CropToTemplateBoxd

    affine = _affine(spacing=1.5, angle_deg=20.0)
    image = np.random.default_rng(1).random((30, 30, 21)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[5:15, 8:20, 1:20] = 1  # z needs 32 voxels, the array has 21
    data = {"t1": _channel_first(image, affine), "brain_mask": _channel_first(mask, affine)}
    out = CropToTemplateBoxd("t1", margin=1, k_divisible=16)(data)
    start = out["preprocess_params"]["crop"]["box_start"]
    assert all(s % 16 == 0 for s in out["t1"].shape[1:]) and start[2] < 0
    # every input voxel inside the box is where it was in space, zeros beyond the array
    inside = out["t1"][0, :, :, -start[2] : -start[2] + 21].numpy()
    np.testing.assert_array_equal(inside, image[start[0] : start[0] + 16, start[1] : start[1] + 16])
    assert np.allclose(out["t1"].affine.numpy() @ [0, 0, 0, 1], affine @ [*start, 1])
    assert float(np.abs(out["t1"][0, :, :, : -start[2]]).sum()) == 0.0


def test_a_mask_filling_the_array_crops_nothing_whatever_the_margin():
    from mtsr_monai.transforms.crop import mask_bounding_box

    full = np.ones((10, 12, 189), np.uint8)
    assert mask_bounding_box(full, margin=2) == ([0, 0, 0], [10, 12, 189])
    start, end = mask_bounding_box(full, margin=2, k_divisible=32)  # the least multiple of 32 over each axis
    assert [e - s for s, e in zip(start, end, strict=True)] == [32, 32, 192] and start == [-11, -10, -1]


def test_percentile_scaling_uses_mask_voxels_only():
    from mtsr_monai.transforms.scale import ScaleIntensityPercentilesInMaskd

    image = np.zeros((10, 10, 10), np.float32)
    image[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    image[0, 0, 0] = 10_000  # a hot voxel outside the mask must not set the scale
    mask = np.zeros_like(image, dtype=np.uint8)
    mask[2:8, 2:8, 2:8] = 1
    out = ScaleIntensityPercentilesInMaskd("t1", lower=0.0, upper=100.0)(
        {"t1": _channel_first(image, np.eye(4)), "brain_mask": _channel_first(mask, np.eye(4))}
    )
    scaled = out["t1"][0].numpy()
    assert scaled[2:8, 2:8, 2:8].min() == pytest.approx(0.0) and scaled[2:8, 2:8, 2:8].max() == pytest.approx(
        1.0
    )
    assert scaled.min() >= 0 and scaled.max() <= 1  # clipped
    assert out["preprocess_params"]["intensity"]["percentile_values"]["t1"] == [100.0, 200.0]


# ---------------------------------------------------------------------------- array + dictionary pairs


def test_register_to_template_array_equals_dictionary_on_one_image(template_file: Path):
    from mtsr_monai.transforms.registration import RegisterToTemplate, RegisterToTemplated

    image = _channel_first(_head(shift_vox=(2, -1, 0)), _affine(angle_deg=4.0))
    array = RegisterToTemplate(template=template_file, registration="rigid", **FAST)(image)
    mapped = RegisterToTemplated("t1", template=template_file, registration="rigid", **FAST)({"t1": image})
    assert np.allclose(array.affine.numpy(), _affine()) and array.shape == mapped["t1"].shape
    # ITK's threads leave ~1e-12 of run-to-run noise in the transform, hence allclose
    np.testing.assert_allclose(array.numpy(), mapped["t1"].numpy(), atol=1e-3)


def test_register_to_template_none_returns_the_image_unchanged(template_file: Path):
    from mtsr_monai.transforms.registration import RegisterToTemplate

    image = _channel_first(_head(), _affine(angle_deg=5.0))
    assert RegisterToTemplate(template=template_file, registration="none")(image) is image


def test_brain_mask_array_equals_dictionary_and_strips_like_it(template_file: Path):
    from mtsr_monai.transforms.brain_mask import BrainMaskFromTemplate, BrainMaskFromTemplated

    image = _channel_first(_head() + 30.0, _affine())
    mask = BrainMaskFromTemplate(template=template_file)(image)
    out = BrainMaskFromTemplated("t1", template=template_file, skull_strip=True)({"t1": image})
    assert mask.dtype == out["brain_mask"].dtype and np.array_equal(mask.numpy(), out["brain_mask"].numpy())
    assert np.array_equal(BrainMaskFromTemplate.strip(image, mask).numpy(), out["t1"].numpy())


def _crop_data():
    affine = _affine(spacing=1.5, angle_deg=20.0)
    image = np.random.default_rng(1).random((30, 30, 30)).astype(np.float32)
    mask = np.zeros((30, 30, 30), np.uint8)
    mask[5:15, 8:20, 10:13] = 1
    return {"t1": _channel_first(image, affine), "brain_mask": _channel_first(mask, affine)}


def test_crop_to_mask_box_array_equals_dictionary_on_every_key():
    from mtsr_monai.transforms.crop import CropToMaskBox, CropToMaskBoxd

    data = _crop_data()
    out = CropToMaskBoxd("t1", margin=1, k_divisible=4)(data)
    cropper = CropToMaskBox(margin=1, k_divisible=4)
    for key in ("t1", "brain_mask"):
        array = cropper(data[key], data["brain_mask"])
        assert np.array_equal(array.numpy(), out[key].numpy())
        assert np.array_equal(array.affine.numpy(), out[key].affine.numpy())


def test_old_crop_name_warns_and_crops_as_the_new_one():
    from mtsr_monai.transforms.crop import CropToMaskBoxd, CropToTemplateBoxd

    with pytest.warns(DeprecationWarning, match="CropToMaskBoxd"):
        old = CropToTemplateBoxd("t1", margin=1)
    assert np.array_equal(
        old(_crop_data())["t1"].numpy(), CropToMaskBoxd("t1", margin=1)(_crop_data())["t1"].numpy()
    )


# ---------------------------------------------------------------------------- the command


def _subject(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    t1 = _head(shift_vox=(2, -1, 0))
    write_nifti(folder / "s1_t1.nii.gz", t1, _affine(angle_deg=4.0))
    write_nifti(folder / "s1_t2.nii.gz", (t1.max() - t1) * (t1 > 5), _affine(angle_deg=4.0))
    write_nifti(folder / "s1_seg.nii.gz", (t1 > 150).astype(np.uint8), _affine(angle_deg=4.0))
    datalist = folder / "datalist.json"
    datalist.write_text(
        json.dumps({"training": [{"t1": "s1_t1.nii.gz", "t2": "s1_t2.nii.gz", "label": "s1_seg.nii.gz"}]})
    )
    return datalist


def _args(datalist: Path, out: Path, template: Path) -> list[str]:
    return [
        "preprocess",
        "--datalist",
        str(datalist),
        "--output",
        str(out),
        "--template",
        str(template),
        "--registration",
        "rigid",
        "--n4-shrink",
        "2",
        "--n4-iterations",
        "10,10",
        "--shrink-factors",
        "2,1",
        "--iterations",
        "60",
        "--no-progress",
    ]


def test_preprocess_command_writes_outputs_sidecar_and_skips_done_subjects(
    tmp_path: Path, template_file: Path
):
    import nibabel as nib

    from mtsr_monai.cli import main

    datalist, out = _subject(tmp_path), tmp_path / "out"
    assert main(_args(datalist, out, template_file) + ["--threads", "1"]) == 0
    subject = out / "s1"  # id derived from the file name
    for name in (
        "t1.nii.gz",
        "t2.nii.gz",
        "label.nii.gz",
        "brain_mask.nii.gz",
        "transform_t1.tfm",
        "transform_t2.tfm",
    ):
        assert (subject / name).is_file(), name
    sidecar = json.loads((subject / "preprocess.json").read_text())
    assert sidecar["status"] == "done" and sidecar["config"]["registration"] == "rigid"
    assert sidecar["config"]["registration_threads"] == 1  # recorded: --threads 1 gives identical reruns
    assert set(sidecar["steps"]) == {"n4", "registration", "brain_mask", "crop", "intensity"}
    assert {"n4", "registration", "total"} <= set(sidecar["seconds"]) and "SimpleITK" in sidecar["versions"]
    t1 = nib.load(subject / "t1.nii.gz")
    assert np.allclose(t1.affine, sidecar["output_affine_ras"])
    assert 0.0 <= t1.get_fdata().min() and t1.get_fdata().max() <= 1.0
    assert nib.load(subject / "label.nii.gz").get_data_dtype() == np.uint8
    assert json.loads((out / "datalist.json").read_text())["training"][0]["t1"] == "s1/t1.nii.gz"
    assert not list(out.rglob("*.part*"))  # nothing half-written left behind

    finished = sidecar["finished"]
    assert main(_args(datalist, out, template_file)) == 0
    assert json.loads((subject / "preprocess.json").read_text())["finished"] == finished  # skipped


@pytest.mark.parametrize("problem", ["missing datalist", "bad json", "missing image", "unreadable image"])
def test_preprocess_command_exits_2_on_bad_input(tmp_path: Path, template_file: Path, capsys, problem: str):
    from mtsr_monai.cli import main

    datalist = _subject(tmp_path)
    if problem == "missing datalist":
        datalist = tmp_path / "nope.json"
    elif problem == "bad json":
        datalist.write_text("{not json")
    elif problem == "missing image":
        (datalist.parent / "s1_t2.nii.gz").unlink()
    else:
        (datalist.parent / "s1_t2.nii.gz").write_bytes(b"\x1f\x8b garbage")
    assert main(_args(datalist, tmp_path / "out", template_file)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("mtsr preprocess: error:")
    if problem != "missing datalist":
        assert "datalist.json" in err[0] or "s1_t2.nii.gz" in err[0]
    assert not (tmp_path / "out" / "s1" / "preprocess.json").exists()


@pytest.mark.parametrize(
    "option", [["--reference", "pd"], ["--threads", "0"], ["--crop-margin", "-3"], ["--n4-shrink", "40"]]
)
def test_preprocess_refuses_a_reference_no_subject_has_and_options_out_of_range(tmp_path, capsys, option):
    from mtsr_monai.cli import main

    datalist = _subject(tmp_path)
    try:
        code = main(["preprocess", "--datalist", str(datalist), "-o", str(tmp_path / "out"), *option])
    except SystemExit as refused:  # argparse's refusal of an option's value
        code = refused.code
    assert code == 2 and option[0] in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- real data


def test_real_brats_subject_lands_on_mni_and_overlaps_template_brain(brats_case: dict, tmp_path: Path):
    import SimpleITK as sitk

    from mtsr_monai.data.preprocess import PreprocessConfig, preprocess_subject
    from mtsr_monai.io.template import template_path

    subject = {"subject": "brats", **{k: str(brats_case[k]) for k in ("t1", "flair")}}
    # N4 is tested above; here the registration, mask and writing on real data, kept fast (coarse pyramid)
    config = PreprocessConfig(
        n4=False,
        shrink_factors=(6,),
        smoothing_sigmas=(2.0,),
        iterations=80,
        sampling_percentage=0.05,
        crop=False,
    )
    sidecar = preprocess_subject(subject, tmp_path, config)
    t1 = sitk.ReadImage(str(tmp_path / "brats" / "t1.nii.gz"))
    template = sitk.Cast(sitk.ReadImage(str(template_path("t1"))), sitk.sitkFloat32)
    assert t1.GetSize() == template.GetSize()
    brain = sitk.GetArrayFromImage(template) > 0  # nilearn's template is brain-only

    def dice(image: sitk.Image) -> float:
        a = sitk.GetArrayFromImage(image) > 0  # BraTS is skull-stripped: non-zero = brain
        return float(2 * (a & brain).sum() / (a.sum() + brain.sum()))

    # baseline: centres of mass matched, no optimisation
    raw = sitk.ReadImage(str(brats_case["t1"]), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(
        template, raw, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    baseline = dice(sitk.Resample(raw, template, init, sitk.sitkNearestNeighbor, 0.0))
    assert dice(t1) > 0.9 and dice(t1) > baseline + 0.03
    assert sidecar["steps"]["registration"]["per_key"]["flair"]["kind"].startswith("none")  # same grid as t1


def test_datalist_brain_masks_are_not_preprocessed_as_images(tmp_path):
    import warnings

    from mtsr_monai.data.preprocess import read_datalist

    for name in ("t1.nii.gz", "mask_t1.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    item = {
        "subject": "IXI002",
        "t1": "t1.nii.gz",
        "brain_mask": "mask_t1.nii.gz",
        "brain_mask_t1": "mask_t1.nii.gz",
    }
    (tmp_path / "d.json").write_text(json.dumps({"training": [item]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subjects = read_datalist(tmp_path / "d.json")
    assert sorted(subjects[0]) == ["split", "subject", "t1"]
    assert any("brain_mask, brain_mask_t1 not used" in str(w.message) for w in caught)


def test_a_listed_brain_mask_where_the_output_mask_goes_is_refused_untouched(tmp_path, capsys):
    from mtsr_monai.cli import main

    subject = tmp_path / "out" / "s"  # the user's mask sits where preprocess writes s/brain_mask.nii.gz
    subject.mkdir(parents=True)
    write_nifti(tmp_path / "t1.nii.gz", _head())
    write_nifti(subject / "brain_mask.nii.gz", (_head() > 50).astype(np.uint8))
    before = (subject / "brain_mask.nii.gz").read_bytes()
    item = {"subject": "s", "t1": "t1.nii.gz", "brain_mask": "out/s/brain_mask.nii.gz"}
    (tmp_path / "d.json").write_text(json.dumps({"training": [item]}))
    assert main(["preprocess", "--datalist", str(tmp_path / "d.json"), "-o", str(tmp_path / "out")]) == 2
    assert (subject / "brain_mask.nii.gz").read_bytes() == before and "brain_mask" in capsys.readouterr().err


def test_label_numbers_beyond_255_are_kept_and_a_nan_label_is_refused(tmp_path, template_file):
    import nibabel as nib

    from mtsr_monai.cli import main

    datalist = _subject(tmp_path)
    seg = nib.load(datalist.parent / "s1_seg.nii.gz")
    numbers = np.where(seg.get_fdata() > 0, 1035, 0) + np.where(_head(shift_vox=(2, -1, 0)) > 50, 2, 0)
    write_nifti(datalist.parent / "s1_seg.nii.gz", numbers.astype(np.int32), seg.affine)
    assert main(_args(datalist, tmp_path / "out", template_file)) == 0
    values = set(np.unique(nib.load(tmp_path / "out" / "s1" / "label.nii.gz").get_fdata()))
    assert values <= {0, 2, 1035, 1037} and {1035, 1037} & values
    write_nifti(datalist.parent / "s1_seg.nii.gz", np.full(numbers.shape, np.nan, np.float32), seg.affine)
    assert main(_args(datalist, tmp_path / "out2", template_file)) == 2


def test_a_template_mask_that_covers_nothing_of_the_template_is_refused(tmp_path, template_file, capsys):
    from mtsr_monai.cli import main

    far = write_nifti(
        tmp_path / "far_mask.nii.gz", (_head() > 50).astype(np.uint8), _affine(origin=(500, 0, 0))
    )
    args = _args(_subject(tmp_path), tmp_path / "out", template_file) + ["--template-mask", str(far)]
    assert main(args) == 2 and "--template-mask covers no voxel" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "text_mask.nii.gz").write_text("not an image")
    args[-1] = str(tmp_path / "text_mask.nii.gz")
    assert main(args) == 2 and "--template-mask: unreadable image" in capsys.readouterr().err


def test_an_image_key_that_is_no_plain_file_name_is_refused(tmp_path):
    from mtsr_monai.data.preprocess import read_datalist
    from mtsr_monai.errors import InputError

    (tmp_path / "t1.nii.gz").write_bytes(b"")
    (tmp_path / "d.json").write_text(
        json.dumps({"training": [{"subject": "s", "../../escaped": "t1.nii.gz"}]})
    )
    with pytest.raises(InputError, match="image keys must be plain file names"):
        read_datalist(tmp_path / "d.json")


def test_a_listed_file_of_another_format_is_refused_and_notes_are_ignored(tmp_path):
    from mtsr_monai.data.preprocess import read_datalist
    from mtsr_monai.errors import InputError

    notes = {"field": "1.5T", "site": "St.Thomas", "date": "2019/03/01", "protocol": "T1/MPRAGE"}
    item = {"subject": "s", "t1": "t1.nii.gz", **notes, "t2": "sub/s_t2.mgz"}
    (tmp_path / "d.json").write_text(json.dumps({"training": [item]}))
    with pytest.raises(InputError, match=r"training\[0\] t2: sub/s_t2.mgz is not a supported image file"):
        read_datalist(tmp_path / "d.json")
    (tmp_path / "b.tif").touch()  # an existing file of a format not read here, though its name says nothing
    (tmp_path / "d.json").write_text(json.dumps({"training": [{**item, "t2": "b.tif"}]}))
    with pytest.raises(InputError, match="b.tif is not a supported image file"):
        read_datalist(tmp_path / "d.json")
    (tmp_path / "s_t1.json").touch()  # a sidecar listed beside the image is no image
    item = {**notes, "t1": "t1.nii.gz", "sidecar": "s_t1.json"}
    (tmp_path / "d.json").write_text(json.dumps({"training": [item]}))
    assert sorted(read_datalist(tmp_path / "d.json")[0]) == ["split", "subject", "t1"]


def test_a_registration_failure_names_the_subject_and_its_scan(tmp_path, capsys):
    from mtsr_monai.cli import main

    blob = np.exp(-np.sum(np.square(np.mgrid[-12:12, -12:12, -12:12] / 6.0), axis=0)).astype(np.float32)
    scan = write_nifti(tmp_path / "micro.nii.gz", 100 * blob + 1, np.diag([0.1, 0.1, 0.1, 1.0]))
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"subject": "a", "t1": str(scan)}]}))
    assert main(["preprocess", "--datalist", str(tmp_path / "d.json"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{scan}: subject a (t1), registration: registration failed" in err
    assert not (tmp_path / "o" / "a").exists()


def test_a_bad_scan_anywhere_in_the_cohort_is_refused_before_any_subject_is_written(tmp_path, capsys):
    from mtsr_monai.cli import main

    rng = np.random.default_rng(0)
    good = write_nifti(tmp_path / "a_t1.nii.gz", rng.random((20, 20, 20)).astype(np.float32))
    nan = rng.random((20, 20, 20)).astype(np.float32)
    nan[3, 3, 3] = np.nan
    bad = write_nifti(tmp_path / "b_t1.nii.gz", nan)
    items = [{"subject": "a", "t1": str(good)}, {"subject": "b", "t1": str(bad)}]
    (tmp_path / "d.json").write_text(json.dumps({"training": items}))
    out = tmp_path / "out"
    assert (
        main(["preprocess", "--datalist", str(tmp_path / "d.json"), "--output", str(out), "--no-progress"])
        == 2
    )
    assert "b_t1.nii.gz: 1 voxels are NaN" in capsys.readouterr().err and not out.exists()


def test_a_misspelled_key_is_an_error_by_default_as_in_monai():
    from mtsr_monai.transforms import N4BiasFieldCorrectiond, ScaleIntensityPercentilesInMaskd

    data = {"t1": np.ones((1, 8, 8, 8), np.float32)}
    for transform in (N4BiasFieldCorrectiond("T1"), ScaleIntensityPercentilesInMaskd("T1", mask_key=None)):
        with pytest.raises(KeyError):
            transform(data)  # it was silently skipped


def test_a_stopped_rerun_or_a_replaced_input_is_never_taken_as_done(tmp_path, template_file, monkeypatch):
    from mtsr_monai.cli import main
    from mtsr_monai.data import preprocess

    datalist, out = _subject(tmp_path), tmp_path / "out"
    assert main(_args(datalist, out, template_file)) == 0
    sidecar = out / "s1" / "preprocess.json"

    def stopped(*args, **kwargs):  # as a run killed while replacing the outputs
        raise RuntimeError("stopped")

    monkeypatch.setattr(preprocess, "_write_outputs", stopped)
    assert main([*_args(datalist, out, template_file), "--crop-margin", "4"]) != 0
    assert not sidecar.exists()  # no old record vouching for new outputs
    monkeypatch.undo()
    writes = []
    write = preprocess._write_outputs
    monkeypatch.setattr(preprocess, "_write_outputs", lambda *a, **k: writes.append(1) or write(*a, **k))
    assert main(_args(datalist, out, template_file)) == 0
    assert writes == [1]  # redone, not skipped (timestamps alone can fall in the same second)
    monkeypatch.undo()
    subject = json.loads(datalist.read_text())["training"][0]
    resolved = {"subject": "s1", **{k: str(datalist.parent / v) for k, v in subject.items()}}
    config = preprocess.PreprocessConfig(**json.loads(sidecar.read_text())["config"])
    assert preprocess.is_done(resolved, out, config)
    t2 = datalist.parent / "s1_t2.nii.gz"
    t2.write_bytes(t2.read_bytes() + b"\0")  # another file under the same path
    assert not preprocess.is_done(resolved, out, config)


def test_an_unreadable_label_anywhere_is_refused_before_any_subject_is_written(tmp_path, template_file):
    from mtsr_monai.cli import main

    datalist = _subject(tmp_path)
    folder = datalist.parent
    (folder / "s2_seg.nii.gz").write_bytes(b"\x1f\x8b truncated")
    second = {"t1": "s1_t1.nii.gz", "t2": "s1_t2.nii.gz", "label": "s2_seg.nii.gz", "subject": "s2"}
    listing = json.loads(datalist.read_text())
    listing["training"].append(second)
    datalist.write_text(json.dumps(listing))
    assert main(_args(datalist, tmp_path / "out", template_file)) == 2
    assert not list((tmp_path / "out").rglob("*.nii.gz"))


@pytest.mark.parametrize("subject_id", ["../x", "a/b", ".."])
def test_a_subject_id_that_is_a_path_is_refused(tmp_path, template_file, subject_id):
    from mtsr_monai.cli import main

    datalist = _subject(tmp_path)
    listing = json.loads(datalist.read_text())
    listing["training"][0]["subject"] = subject_id
    datalist.write_text(json.dumps(listing))
    assert main(_args(datalist, tmp_path / "out" / "inner", template_file)) == 2
    assert not list(tmp_path.rglob("preprocess.json"))


def test_a_listed_hidden_volume_is_read_and_a_subject_is_named_after_its_stem(tmp_path):
    from mtsr_monai.data.preprocess import read_datalist

    items = [{"subject": "s", "t1": ".s_t1.nii.gz"}, {"t1": "case7_T1.NII.GZ", "t2": "x/b.mha"}]
    (tmp_path / "d.json").write_text(json.dumps({"training": items}))
    subjects = read_datalist(tmp_path / "d.json")
    assert subjects[0]["t1"] == str(tmp_path / ".s_t1.nii.gz")
    assert subjects[1]["subject"] == "case7" and subjects[1]["t2"] == str(tmp_path / "x/b.mha")


@pytest.mark.parametrize("interpolation", ["bspline", "sinc"])
def test_smooth_resampling_fills_outside_the_moving_field_with_0_even_above_its_minimum(interpolation):
    import SimpleITK as sitk

    from mtsr_monai.transforms.sitk_utils import resample

    moving = sitk.GetImageFromArray(np.full((8, 8, 8), 100.0, np.float32))  # a scan whose minimum is 100
    reference = sitk.GetImageFromArray(np.zeros((16, 16, 16), np.float32))
    out = sitk.GetArrayFromImage(resample(moving, reference, interpolation=interpolation))
    assert out[12:, 12:, 12:].max() == 0 and out[2:6, 2:6, 2:6].min() == pytest.approx(100, abs=1)


def test_outputs_stay_in_the_inputs_nifti_space_or_go_to_the_templates(tmp_path):
    import nibabel as nib

    from mtsr_monai.data.preprocess import PreprocessConfig, _write_outputs, output_space

    mni = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    mni.set_sform(np.eye(4), code=4)
    mni.set_qform(np.eye(4), code=4)
    nib.save(mni, tmp_path / "mni.nii.gz")
    assert output_space(PreprocessConfig(registration="none"), tmp_path / "mni.nii.gz") == 4
    assert output_space(PreprocessConfig(template=str(tmp_path / "mni.nii.gz")), tmp_path / "x.nii.gz") == 4
    data = {"t1": _channel_first(np.ones((4, 4, 4), np.float32), np.eye(4))}
    data["brain_mask"] = data["t1"]
    _write_outputs(data, tmp_path / "out", ["t1"], [], space=4)
    header = nib.load(tmp_path / "out" / "t1.nii.gz").header
    assert int(header["sform_code"]) == int(header["qform_code"]) == 4  # not "scanner" (1)


def test_the_largest_seed_the_cli_takes_gives_a_registration_method():
    from mtsr_monai.transforms.registration import _registration_method

    # SimpleITK takes seeds below 2**32: seed + 1 overflowed
    _registration_method((2, 1), (1.0, 0.0), 0.1, 32, seed=2**32 - 1, fixed_mask=None, threads=1)


def test_the_unused_brain_mask_of_a_datalist_is_said_once(tmp_path, capsys):
    from mtsr_monai.cli import main

    write_nifti(tmp_path / "t1.nii.gz", _head((24, 24, 24)))
    write_nifti(tmp_path / "mask.nii.gz", (_head((24, 24, 24)) > 50).astype(np.uint8))
    item = {"subject": "s", "t1": str(tmp_path / "t1.nii.gz"), "brain_mask": str(tmp_path / "mask.nii.gz")}
    (tmp_path / "d.json").write_text(json.dumps({"training": [item]}))
    command = ["preprocess", "--datalist", str(tmp_path / "d.json"), "-o", str(tmp_path / "out")]
    assert main([*command, "--registration", "none", "--no-progress"]) == 0
    assert capsys.readouterr().err.count("brain_mask not used") == 1
