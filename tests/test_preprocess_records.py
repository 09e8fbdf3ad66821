"""The preprocessing array transforms record what they found in their output's meta; the dictionary
wrappers copy those records into the data's preprocessing record (the ``preprocess.json`` sidecar)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from mtsr_monai.transforms.keys import CROP_KEY, MASK_KEY, PARAMS_KEY, PERCENTILES_KEY
from tests.conftest import write_nifti


def _image(array: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.as_tensor(array[None]), affine=torch.eye(4, dtype=torch.float64))


def _blob(shape=(20, 22, 18)) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    rel = (grid - np.array([s / 2 for s in shape])[:, None, None, None]) / 6.0
    return (100.0 * ((rel**2).sum(0) < 1) + 1.0).astype(np.float32)


def test_percentile_scaling_records_each_channels_percentiles_in_the_meta():
    from mtsr_monai.transforms.scale import ScaleIntensityPercentilesInMask, ScaleIntensityPercentilesInMaskd

    two = np.stack([np.linspace(0, 10, 1000), np.linspace(5, 25, 1000)]).reshape(2, 10, 10, 10)
    image = MetaTensor(torch.as_tensor(two, dtype=torch.float32), affine=torch.eye(4))
    out = ScaleIntensityPercentilesInMask(lower=0.0, upper=100.0)(image)
    assert out.meta[PERCENTILES_KEY] == [[0.0, 10.0], [5.0, 25.0]]
    plain = ScaleIntensityPercentilesInMask(lower=0.0, upper=100.0)(two[0])  # MONAI: meta is tracked
    assert plain.meta[PERCENTILES_KEY] == [[0.0, 10.0]]
    d = ScaleIntensityPercentilesInMaskd(["a", "b"], mask_key=None, lower=0.0, upper=100.0)(
        {"a": image, "b": image[:1]}
    )
    assert d[PARAMS_KEY]["intensity"]["percentile_values"] == {
        "a": [[0.0, 10.0], [5.0, 25.0]],
        "b": [0.0, 10.0],
    }


def test_crop_records_its_box_in_the_meta_and_the_wrapper_copies_it():
    from mtsr_monai.transforms.crop import CropToMaskBox, CropToMaskBoxd

    mask = np.zeros((30, 30, 30), np.uint8)
    mask[5:15, 8:20, 10:13] = 1
    image = _image(np.random.default_rng(0).random((30, 30, 30)).astype(np.float32))
    out = CropToMaskBox(margin=1)(image, _image(mask))
    box = {"box_start": [4, 7, 9], "box_end": [16, 21, 14], "shape_before": [30, 30, 30]}
    assert out.meta[CROP_KEY] == {**box, "shape_after": [12, 14, 5]}
    d = CropToMaskBoxd("t1", margin=1)({"t1": image, "brain_mask": _image(mask)})
    assert d[PARAMS_KEY]["crop"] == {
        "mask_key": "brain_mask",
        "margin_voxels": 1,
        "k_divisible": 1,
        **out.meta[CROP_KEY],
    }


def test_brain_mask_records_its_source_and_size_in_the_meta(tmp_path: Path):
    from mtsr_monai.transforms.brain_mask import BrainMaskFromTemplate, BrainMaskFromTemplated

    template = write_nifti(tmp_path / "template.nii.gz", _blob())
    image = _image(_blob())
    mask = BrainMaskFromTemplate(template=template)(image)
    found = mask.meta[MASK_KEY]
    assert found["mask_voxels"] == int(np.count_nonzero(mask.numpy())) > 0
    assert found["carried_by"] == "identity (template grid)" and found["source"] == str(template)
    d = BrainMaskFromTemplated("t1", template=template, skull_strip=True)({"t1": image})
    record = d[PARAMS_KEY]["brain_mask"]
    assert list(record)[-2:] == ["skull_strip", "mask_voxels"] and record["skull_strip"] is True
    assert {k: v for k, v in record.items() if k != "skull_strip"} == found
