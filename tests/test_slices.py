"""Volume -> slice / patch datasets: axis, brain-fraction filter, alignment of paired keys, caching."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mtsr_monai.data.slices import SliceDataset, build_slice_dataset_from_datalist, extract_slices
from mtsr_monai.io.geometry import resolve_axis
from mtsr_monai.transforms.intensity import median_scale, robust_range, robust_scale
from tests.conftest import write_nifti


@pytest.fixture
def subject(tmp_path: Path) -> dict:
    """A 24x20x12 subject: 'brain' only in z 3..8, a second contrast 2x the first, a mask in z 4..7."""
    rng = np.random.default_rng(0)
    t1 = np.zeros((24, 20, 12), np.float32)
    t1[4:20, 3:17, 3:9] = 1.0 + rng.random((16, 14, 6)).astype(np.float32)
    mask = np.zeros_like(t1, dtype=np.uint8)
    mask[4:20, 3:17, 4:8] = 1
    return {
        "subject": "s1",
        "t1": str(write_nifti(tmp_path / "t1.nii.gz", t1)),
        "t2": str(write_nifti(tmp_path / "t2.nii.gz", 2 * t1)),
        "brain_mask": str(write_nifti(tmp_path / "mask.nii.gz", mask)),
    }


def test_axial_axis_is_resolved_from_the_affine() -> None:
    permuted = np.array(
        [[0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]]
    )  # array axis 1 -> world S
    assert resolve_axis(np.eye(4), "axial") == 2
    assert resolve_axis(permuted, "axial") == 1
    assert resolve_axis(permuted, "sagittal") == 2
    assert resolve_axis(permuted, 0) == 0


def test_robust_scale_keeps_zero_background_and_maps_to_unit_range() -> None:
    x = torch.zeros(1, 10, 10, 10)
    x[0, 2:8, 2:8, 2:8] = torch.linspace(100, 900, 216).reshape(6, 6, 6)
    y = robust_scale(x)
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0
    assert bool((y[x == 0] == 0).all()) and bool((y[x > 0] > 0).all())


def test_median_scale_puts_the_foreground_median_at_its_level_whatever_the_bright_tail() -> None:
    tissue = torch.linspace(100, 200, 1000)
    with_lesion = torch.cat([torch.zeros(100), tissue, torch.full((20,), 900.0)])
    without = torch.cat([torch.zeros(100), tissue])
    for x in (with_lesion, without):
        y = median_scale(x, level=0.35)
        assert float(y[x > 0].median()) == pytest.approx(0.35, abs=1e-3)
        assert bool((y[x == 0] == 0).all()) and float(y.max()) <= 1.0
    # the robust scaling puts the same tissue at different levels depending on the lesion
    assert (
        float(robust_scale(with_lesion)[100:1100].median())
        < 0.5
        < float(robust_scale(without)[100:].median())
    )


def test_median_keys_scale_the_target_by_its_median(subject: dict) -> None:
    ds = SliceDataset([subject], keys=["t1", "t2"], median_keys=["t2"], progress=False)
    t1 = torch.cat([ds[i]["t1"].flatten() for i in range(len(ds))])
    t2 = torch.cat([ds[i]["t2"].flatten() for i in range(len(ds))])
    assert float(t1.max()) == pytest.approx(1.0, abs=1e-3)  # robust: 99.5 % level at 1
    assert float(t2[t2 > 0].median()) == pytest.approx(0.35, abs=0.02)


def test_noisy_background_gets_the_scaling_of_its_clean_counterpart() -> None:
    # a skull-stripped "brain" (3 % of a large field of view); then Rician noise everywhere, as a real LR scan
    rng = np.random.default_rng(0)
    clean = np.zeros((80, 80, 20), np.float32)
    clean[30:50, 30:50, 5:15] = rng.uniform(400, 1000, (20, 20, 10))
    sigma = 60.0
    noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))
    lo_clean, hi_clean = robust_range(clean)
    lo_noisy, hi_noisy = robust_range(noisy)
    assert lo_clean == lo_noisy == 0.0  # magnitude images keep 0 at 0
    assert abs(hi_noisy - hi_clean) < 0.1 * hi_clean  # the noise itself lifts the top tail a little
    # the 99.5th percentile over all voxels would have fallen deep inside the brain's intensities
    assert np.percentile(noisy, 99.5) < 0.93 * hi_clean


def test_signed_images_keep_a_lower_percentile_and_zero_mean_noise_keeps_zero() -> None:
    rng = np.random.default_rng(0)
    zscored = np.full((20, 20, 20), -0.8)  # z-scored head: the air (most voxels) well below 0
    zscored[5:15, 5:15, 5:15] = rng.uniform(0.0, 3.0, (10, 10, 10))
    lo, hi = robust_range(zscored)
    assert lo == pytest.approx(np.percentile(zscored, 0.5)) and hi > 2.5
    noisy = np.where(zscored > -0.8, zscored + 1.0, 0.0) + rng.normal(
        0, 0.1, zscored.shape
    )  # air at 0 +- noise
    assert robust_range(noisy)[0] == 0.0
    stripped = np.zeros((20, 20, 20))  # a z-scored brain on a zero background: the median voxel is air
    stripped[5:15, 5:15, 5:15] = rng.normal(0.0, 1.0, (10, 10, 10))
    lo = robust_range(stripped)[0]
    assert lo == pytest.approx(np.percentile(stripped, 0.5)) and lo < -1.0
    # a skull-stripped magnitude scan downsampled without antialiasing: undershoot at its edges, not a sign
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 31.3) ** 2 + (xx - 30.6) ** 2 < 21.3**2
    brain = np.where(disc, np.random.default_rng(0).uniform(300, 1000, (64, 64)), 0).astype(np.float32)
    lr = torch.nn.functional.interpolate(
        torch.from_numpy(brain)[None, None], scale_factor=0.25, mode="bicubic"
    )[0, 0]
    lr = np.repeat(lr.numpy()[..., None], 3, axis=2)
    assert np.mean(lr[lr != 0] < -0.05 * np.percentile(np.abs(lr[lr != 0]), 99.5)) > 0.01  # is_signed's share
    assert robust_range(lr)[0] == 0.0


def test_extract_slices_skips_slices_with_little_foreground() -> None:
    vol = torch.zeros(1, 8, 8, 6)
    vol[0, :, :, 1] = 1.0  # full slice
    vol[0, :2, :2, 3] = 1.0  # 4/64 = 6 % of the slice
    kept = extract_slices(vol, axis=2, min_foreground_fraction=0.1)
    assert [k for k, _ in kept] == [1] and kept[0][1].shape == (1, 8, 8)
    both = extract_slices({"a": vol, "b": 3 * vol}, axis=2, min_foreground_fraction=0.05)
    assert [d["slice_index"] for d in both] == [1, 3]
    assert torch.equal(both[1]["b"], 3 * both[1]["a"])


def test_brain_mask_decides_which_slices_are_kept(subject: dict) -> None:
    with_mask = SliceDataset([subject], keys=["t1"], min_brain_fraction=0.1, progress=False)
    assert [k for _, k in with_mask.slice_index] == [4, 5, 6, 7]
    no_mask = {k: v for k, v in subject.items() if k != "brain_mask"}
    without = SliceDataset([no_mask], keys=["t1"], min_brain_fraction=0.1, progress=False)
    assert [k for _, k in without.slice_index] == [3, 4, 5, 6, 7, 8]
    item = without[0]
    assert item["t1"].shape == (1, 24, 20) and item["subject"] == "s1" and item["slice_index"] == 3
    assert 0.0 <= float(item["t1"].min()) and float(item["t1"].max()) <= 1.0


def test_full_slices_are_padded_to_a_multiple(subject: dict) -> None:
    ds = SliceDataset([subject], keys=["t1", "t2"], pad_to_multiple=16, progress=False)
    assert ds[0]["t1"].shape == (1, 32, 32) and ds[0]["t2"].shape == (1, 32, 32)


def test_multimodal_patches_share_one_crop_window(subject: dict) -> None:
    ds = SliceDataset(
        [subject], keys=["t1", "t2"], mode="patch", patch_size=(8, 8), normalize=False, progress=False
    )
    ds.set_random_state(seed=0)
    items = [ds[i] for i in range(len(ds))]
    assert sum(float(item["t1"].sum()) for item in items) > 0  # not only empty windows
    for item in items:
        assert item["t1"].shape == (1, 8, 8)
        assert torch.allclose(item["t2"], 2 * item["t1"])  # t2 = 2 t1 voxelwise: same window in both


def test_lr_made_by_a_random_transform_is_aligned_with_its_hr_patch(subject: dict) -> None:
    from monai.data import DataLoader, list_data_collate
    from monai.transforms import CopyItemsd, Resized

    make_lr = [CopyItemsd(keys="t1", names="lr"), Resized(keys="lr", spatial_size=(4, 4), mode="area")]
    ds = SliceDataset(
        [subject],
        keys=["t1"],
        mode="patch",
        patch_size=(8, 8),
        patches_per_slice=3,
        random_transform=make_lr,
        progress=False,
    )
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=list_data_collate)))
    assert batch["t1"].shape == (6, 1, 8, 8) and batch["lr"].shape == (6, 1, 4, 4)
    pooled = torch.nn.functional.avg_pool2d(torch.as_tensor(batch["t1"]), 2)
    assert torch.allclose(torch.as_tensor(batch["lr"]), pooled, atol=1e-5)


def test_disk_cache_serves_slices_after_the_sources_are_gone(subject: dict, tmp_path: Path) -> None:
    src = tmp_path / "copy"
    src.mkdir()
    moved = {k: (str(shutil.copy(v, src)) if k != "subject" else v) for k, v in subject.items()}
    cache = tmp_path / "cache"
    first = SliceDataset([moved], keys=["t1", "t2"], cache="disk", cache_dir=cache, progress=False)
    memory = SliceDataset([moved], keys=["t1", "t2"], cache="memory", progress=False)
    expected = [first[i]["t2"].clone() for i in range(len(first))]
    shutil.rmtree(src)  # the second dataset must come entirely from the cache
    again = SliceDataset([moved], keys=["t1", "t2"], cache="disk", cache_dir=cache, progress=False)
    assert again.slice_index == memory.slice_index
    for i in range(len(again)):
        assert torch.equal(torch.as_tensor(again[i]["t2"]), torch.as_tensor(expected[i]))
        assert torch.equal(torch.as_tensor(memory[i]["t2"]), torch.as_tensor(expected[i]))


def test_disk_cache_built_with_other_padding_or_patches_is_not_served(subject: dict, tmp_path: Path) -> None:
    def first_shape(**kwargs) -> tuple:
        ds = SliceDataset([subject], keys=["t1"], cache="disk", cache_dir=tmp_path, progress=False, **kwargs)
        return tuple(ds[0]["t1"].shape)

    assert first_shape(pad_to_multiple=16) != first_shape(pad_to_multiple=64)
    assert first_shape(mode="patch", patch_size=(96, 96)) == (1, 96, 96)
    from monai.transforms import Compose, ScaleIntensityd

    def signature() -> str:  # the same settings in a Compose: the same cache, not a new one each time
        ds = SliceDataset(
            [subject],
            keys=["t1"],
            transform=Compose([ScaleIntensityd("t1")]),
            cache="disk",
            cache_dir=tmp_path,
            progress=False,
        )
        return ds.dataset.data[0]["_params"]

    assert signature() == signature()


def test_dataset_from_a_datalist_split(subject: dict, tmp_path: Path) -> None:
    import json

    listing = {"training": [subject], "validation": [{"subject": "s2", "t2": subject["t2"]}]}
    path = tmp_path / "dl.json"
    path.write_text(json.dumps(listing))
    ds = build_slice_dataset_from_datalist(path, "training", keys=["t1"], cache=None, progress=False)
    assert len(ds) == 4 and ds[0]["t1"].shape == (1, 24, 20)
    from mtsr_monai.errors import InputError

    with pytest.warns(UserWarning, match="lack one of"), pytest.raises(InputError, match="no subject"):
        build_slice_dataset_from_datalist(path, "validation", keys=["t1"], progress=False)


def test_real_brats_case_axial_slices(brats_case: dict) -> None:
    subject = {"subject": "brats", "t1": str(brats_case["t1"]), "flair": str(brats_case["flair"])}
    ds = SliceDataset([subject], keys=["t1", "flair"], min_brain_fraction=0.1, cache=None, progress=False)
    assert 40 < len(ds) < 155  # the axial axis of a 240x240x155 BraTS volume, empty slices skipped
    item = ds[len(ds) // 2]
    assert item["t1"].shape == (1, 240, 240) and item["flair"].shape == (1, 240, 240)
    assert float(item["flair"].max()) == pytest.approx(1.0) and float(item["flair"][0, 0, 0]) == 0.0


def test_typical_brain_level_is_the_median_of_the_training_volumes_robust_brain_medians(
    tmp_path: Path,
) -> None:
    import json

    from mtsr_monai.data.slices import typical_brain_level

    levels, items = [], []
    for i, top in enumerate((100.0, 200.0, 400.0)):  # different bright tails, one tissue
        vol = np.zeros((20, 20, 20), np.float32)
        vol[2:18, 2:18, 2:18] = np.linspace(50, 100, 16**3).reshape(16, 16, 16)
        vol[8:10, 8:10, 8:10] = top
        items.append({"subject": f"s{i}", "t1": str(write_nifti(tmp_path / f"t1_{i}.nii.gz", vol))})
        x = robust_scale(torch.as_tensor(vol))
        levels.append(float(x[x > 0].median()))
    items.append({"subject": "no_t1", "flair": items[0]["t1"]})  # skipped: no t1
    (tmp_path / "d.json").write_text(json.dumps({"training": items, "validation": items[:1]}))
    assert typical_brain_level(tmp_path / "d.json", "t1") == pytest.approx(float(np.median(levels)), abs=1e-6)
    assert typical_brain_level(tmp_path / "d.json", "t1", split="validation") == pytest.approx(
        levels[0], abs=1e-6
    )


def test_spaced_brain_slices_take_the_ends_or_the_centres_of_equal_parts():
    import torch

    from mtsr_monai.data.slices import spaced_brain_slices

    stack = torch.zeros(12, 4, 4)
    stack[2:10] = 1.0  # slices 2..9 hold the brain
    stack[1, 0, 0] = 1.0  # a sliver: under half the largest area
    assert spaced_brain_slices(stack, 3).tolist() == [2, 6, 9]
    assert spaced_brain_slices(stack, 2, include_ends=False).tolist() == [4, 8]
    assert spaced_brain_slices(stack, 1, include_ends=False).tolist() == [6]
