"""``--mask auto`` of ``mtsr translate`` / ``mtsr run``: which inputs get a brain mask, and where it lies."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mtsr_monai.inference import brain_mask
from tests.conftest import SHARED_DATA, ellipsoid, write_nifti

SHAPE = (40, 44, 36)  # voxels of the synthetic heads


def _head_with_skull() -> tuple[np.ndarray, np.ndarray]:
    """(head, brain): a brain inside a dark skull and a bright scalp, with air noise around them."""
    brain, head = ellipsoid(SHAPE, 0.6), ellipsoid(SHAPE, 0.8)
    noise = np.abs(np.random.default_rng(0).normal(0, 3, brain.shape))
    return (np.where(brain, 80.0, np.where(head & ~ellipsoid(SHAPE, 0.7), 150.0, 5.0)) + noise), brain


def _skull_stripped() -> np.ndarray:
    """A brain alone on an exactly zero background, as skull stripping leaves it."""
    return np.where(ellipsoid(SHAPE, 0.7), 100.0, 0.0).astype(np.float32)


def test_a_skull_stripped_input_gets_no_mask(tmp_path):
    stripped = write_nifti(tmp_path / "brain.nii.gz", _skull_stripped())
    choice = brain_mask.resolve_brain_mask(stripped, brain_mask.AUTO, tmp_path)
    assert choice.path is None and "skull-stripped" in choice.note


def test_a_given_mask_or_none_is_used_as_is(tmp_path):
    assert brain_mask.resolve_brain_mask("in.nii.gz", tmp_path / "m.nii.gz", tmp_path).path == str(
        tmp_path / "m.nii.gz"
    )
    assert brain_mask.resolve_brain_mask("in.nii.gz", None, tmp_path).path is None


def test_an_image_the_template_cannot_fit_gets_no_mask(tmp_path, phantom_file):
    choice = brain_mask.resolve_brain_mask(phantom_file, brain_mask.AUTO, tmp_path)
    assert choice.path is None and "did not fit" in choice.note
    assert not list(tmp_path.glob("brain_mask*"))


def test_an_estimated_mask_is_kept_beside_the_outputs_only_on_success(tmp_path, monkeypatch):
    head, brain = _head_with_skull()
    path = write_nifti(tmp_path / "head.nii.gz", head.astype(np.float32))
    monkeypatch.setattr(brain_mask, "estimate_brain_mask", lambda volume, contrast, progress: brain)  # slow
    failed, done = tmp_path / "failed", tmp_path / "done"
    with pytest.raises(RuntimeError), brain_mask.brain_mask_for(path, brain_mask.AUTO, failed) as choice:
        assert choice.estimated
        raise RuntimeError("the translation failed")
    assert not failed.exists() or not any(failed.iterdir())
    with brain_mask.brain_mask_for(path, brain_mask.AUTO, done) as choice:
        pass
    assert choice.path == str(done / "brain_mask.nii.gz")
    assert [p.name for p in done.iterdir() if not p.name.startswith(".")] == ["brain_mask.nii.gz"]


@pytest.mark.real_data  # reads ../shared/data by path
@pytest.mark.parametrize("sequence", ["T1W", "T2W", "FLAIR"])
def test_a_clinical_head_gets_a_mask_inside_its_skull(sequence):
    from scipy import ndimage

    from mtsr_monai.io import load_volume, voxel_sizes
    from mtsr_monai.transforms.foreground import head_mask

    path = SHARED_DATA / "open_ms_longitudinal_raw" / "patient12_study1" / f"study1_{sequence}.nii.gz"
    if not path.is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}; skipping real-data test")
    volume = load_volume(path)
    auto = brain_mask.auto_brain_mask(volume, {"T1W": "t1", "T2W": "t2", "FLAIR": "flair"}[sequence])
    assert auto.mask is not None, auto.note
    head = head_mask(volume.numpy(), classes=3)  # a FLAIR's dim scalp included
    head = np.stack([ndimage.binary_fill_holes(head[..., k]) for k in range(head.shape[2])], -1)
    inner = ndimage.binary_erosion(head, np.ones((3, 3, 1)), round(3 / voxel_sizes(volume.affine)[0]))
    middle = slice(head.shape[2] // 3, 2 * head.shape[2] // 3)
    scalp, mask, head = (head & ~inner)[..., middle], auto.mask[..., middle], head[..., middle]
    # measured 0.01 / 0.15 / 0.35 of the ring (T1 / T2 / FLAIR) and 0.71 / 0.75 / 0.84 of the head; the
    # template's brain stretched onto a T1 head's outline gave 0.80 of the ring. A FLAIR's ring also takes
    # in the brain's edge, where its dim scalp is patchy
    assert (scalp & mask).sum() / scalp.sum() < (0.45 if sequence == "FLAIR" else 0.3)
    assert 0.5 < mask.sum() / head.sum() < 0.9


def _loaded(path) -> dict:
    from mtsr_monai.transforms.io import LoadVolumed

    return LoadVolumed(keys="image")({"image": str(path)})


def test_the_bundle_step_masks_a_head_and_the_writer_keeps_its_mask(tmp_path, monkeypatch):
    from mtsr_monai.inference.components import AutoBrainMaskd, MaskOutsided, SaveTranslationsd

    head, brain = _head_with_skull()
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    path = write_nifti(tmp_path / "head.nii.gz", head.astype(np.float32), affine)
    monkeypatch.setattr(brain_mask, "estimate_brain_mask", lambda volume, contrast, progress: brain)  # slow
    d = MaskOutsided(keys="image")(AutoBrainMaskd(keys="image")(_loaded(path)))
    assert "template" in d["mask_note"]
    np.testing.assert_allclose(np.asarray(d["mask"].affine), affine)
    assert (d["image"][0].numpy()[~brain] == 0).all() and (d["image"][0].numpy()[brain] > 0).all()
    d["pred"] = d["image"].repeat(2, 1, 1, 1)
    SaveTranslationsd(keys="pred", output_dir=str(tmp_path / "out"))(d)
    saved = nib.load(str(tmp_path / "out" / "head" / "brain_mask.nii.gz"))
    np.testing.assert_array_equal(saved.get_fdata() > 0, brain)


def test_the_bundle_step_leaves_a_stripped_image_a_given_mask_and_mode_none_alone(tmp_path, monkeypatch):
    from mtsr_monai.inference.components import AutoBrainMaskd

    stripped = write_nifti(tmp_path / "brain.nii.gz", _skull_stripped())
    d = AutoBrainMaskd(keys="image")(_loaded(stripped))
    assert "mask" not in d and "skull-stripped" in d["mask_note"]
    head = write_nifti(tmp_path / "head.nii.gz", _head_with_skull()[0].astype(np.float32))
    monkeypatch.setattr(
        brain_mask, "estimate_brain_mask", lambda volume, contrast, progress: pytest.fail("estimated")
    )
    assert "mask" not in AutoBrainMaskd(keys="image", mode="none")(_loaded(head))
    given = {**_loaded(head), "mask": "given"}
    assert AutoBrainMaskd(keys="image")(given)["mask"] == "given"


def test_the_bundle_step_refuses_an_unknown_mask_mode(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.components import AutoBrainMaskd

    stripped = write_nifti(tmp_path / "brain.nii.gz", _skull_stripped())
    with pytest.raises(InputError, match="'auto' or 'none'"):
        AutoBrainMaskd(keys="image", mode="yes")(_loaded(stripped))


@pytest.mark.real_data  # reads ../shared/data by path
def test_the_registration_behind_an_estimated_mask_is_the_same_on_every_run():
    from mtsr_monai.io import load_volume
    from mtsr_monai.transforms.registration import TO_TEMPLATE_KEY, RegisterToTemplated

    t1 = SHARED_DATA / "open_ms_longitudinal_raw" / "patient01_study1" / "study1_T1W.nii.gz"
    if not t1.is_file():
        pytest.skip(f"real data not found at {SHARED_DATA}; skipping real-data test")
    volume = load_volume(t1)[None]
    register = RegisterToTemplated(["image"], "image", registration="none", threads=1)
    first, second = (np.array(register({"image": volume})[TO_TEMPLATE_KEY].GetParameters()) for _ in "ab")
    # with two threads this affine moved by up to 2e-4 between runs
    np.testing.assert_array_equal(first, second)


def test_a_t2_template_orders_its_tissues_as_a_t2_does():
    import SimpleITK as sitk
    from scipy import ndimage

    from mtsr_monai.io.template import template_path
    from mtsr_monai.transforms.brain_mask import contrast_template

    assert contrast_template("t1") is None and contrast_template("flair") is None  # the MNI152 T1 itself
    wm = sitk.GetArrayFromImage(sitk.ReadImage(str(template_path("wm")))) > 230
    gm = sitk.GetArrayFromImage(sitk.ReadImage(str(template_path("gm")))) > 230
    template, mask = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in contrast_template("t2"))
    csf = (mask > 0) & ~ndimage.binary_erosion(mask > 0, iterations=6) & ~(wm | gm)  # the outer CSF
    levels = [float(np.median(template[r])) for r in (csf, gm, wm)]
    assert levels[0] > levels[1] > levels[2]  # CSF > GM > WM


def test_estimating_a_mask_names_each_stage_it_runs_and_stops_before_the_intensity_scaling(
    monkeypatch, capsys
):
    import torch

    from mtsr_monai.data import preprocess

    head, brain = _head_with_skull()
    ran = []

    def stage(name):
        def run(data):  # the real stages register for about 25 s; their names and order are what is shown
            ran.append(name)
            return {**data, "brain_mask": torch.from_numpy(brain[None])} if name == "brain_mask" else data

        return name, run

    names = ("n4", "registration", "brain_mask", "intensity")
    monkeypatch.setattr(preprocess, "build_stages", lambda config, images, labels: [stage(n) for n in names])
    mask = brain_mask.estimate_brain_mask(torch.from_numpy(head), "t1", progress=True)
    np.testing.assert_array_equal(mask, brain)
    assert ran == ["n4", "registration", "brain_mask"]
    err = capsys.readouterr().err
    assert "brain mask" in err and "registration" in err and "3/3" in err


def test_the_bundle_writer_plans_no_mask_output_when_the_item_gives_its_mask(tmp_path):
    from mtsr_monai.inference.components import SaveTranslationsd

    writer = SaveTranslationsd(keys="pred", output_dir=str(tmp_path / "out"))
    given = writer.planned_outputs(
        {"image": "a.nii.gz", "mask": str(tmp_path / "out" / "a" / "brain_mask.nii.gz")}
    )
    estimated = writer.planned_outputs({"image": "a.nii.gz"})
    assert "brain_mask.nii.gz" not in [f.name for f in given.files]
    assert "brain_mask.nii.gz" in [f.name for f in estimated.files]
