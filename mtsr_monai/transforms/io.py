"""Dictionary transforms that read and write volumes with :mod:`mtsr_monai.io` (validated reading, atomic
writing in the input's NIfTI space), as MONAI's ``LoadImaged`` / ``SaveImaged`` do for its readers.

The bundles' ``inference.yaml`` declare them; the task-specific writers of
:mod:`mtsr_monai.inference.components` (translation samples, clinical sequences) build on
:class:`VolumeWriterd` and :func:`item_affine`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from mtsr_monai.io import load_volume, nifti_space, save_volume, volume_stem
from mtsr_monai.io.outputs import OutputPlan

__all__ = ["LoadVolumed", "SaveVolumed", "VolumeWriterd", "item_affine", "output_stem"]


def item_affine(x: torch.Tensor, index: int) -> np.ndarray:
    """The 4x4 affine of batch item ``index`` (identity for a plain tensor)."""
    if not isinstance(x, MetaTensor):
        return np.eye(4)
    a = x.affine
    a = a[index] if a.ndim == 3 else a
    return np.asarray(a.detach().cpu(), dtype=np.float64)


def output_stem(d: Mapping[Hashable, Any], key: str = "image") -> str:
    """Input file name without its extension, from the loaded image's meta or the item's path."""
    value = d.get(key)
    name = value.meta.get("filename_or_obj", "") if isinstance(value, MetaTensor) else value
    stem = volume_stem(str(name)) if name else ""
    return stem or "image"


class LoadVolumed(MapTransform):
    """Read each key's path with :func:`mtsr_monai.io.load_volume` (validated: an unusable file raises
    :class:`~mtsr_monai.errors.InputError` naming it) as a channel-first ``(1, X, Y, Z)`` MetaTensor."""

    def __init__(self, keys: KeysCollection, validate: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.validate = validate

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key] is None or isinstance(d[key], torch.Tensor):
                continue
            d[key] = load_volume(d[key], validate=self.validate)[None]
        return d


class VolumeWriterd(MapTransform):
    """Base of the writers: an item's outputs go to its ``path_key`` entry, else under ``output_dir``, named
    after its ``ref_key`` image (:meth:`output_name`), and are written in that image's NIfTI space
    (:meth:`space`). Each writer also says what it will create (``planned_outputs``), checked before a run."""

    def __init__(
        self, keys: KeysCollection, output_dir: str = ".", path_key: str = "output", ref_key: str = "image"
    ) -> None:
        super().__init__(keys)
        self.output_dir, self.path_key, self.ref_key = output_dir, path_key, ref_key

    def output_name(self, d: Mapping[Hashable, Any]) -> str:
        return output_stem(d, self.ref_key)

    def space(self, d: Mapping[Hashable, Any]) -> int:
        return nifti_space(d.get(self.ref_key))


class SaveVolumed(VolumeWriterd):
    """Write one key (``(1, X, Y, Z)`` or 3D, its own affine) atomically with
    :func:`mtsr_monai.io.save_volume` to the item's ``path_key`` entry, else to
    ``output_dir/<ref_key image's name>_<postfix>.nii.gz``, in the NIfTI space of that image. One key only:
    the path does not depend on the key, so a second key would overwrite the first one's file (use one
    writer per key, each with its own ``postfix``)."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str = ".",
        postfix: str = "",
        path_key: str = "output",
        ref_key: str = "image",
    ) -> None:
        super().__init__(keys, output_dir, path_key, ref_key)
        if len(self.keys) != 1:
            raise ValueError(
                f"SaveVolumed writes one key, not {list(self.keys)}: every key would go to the same file; "
                "use one SaveVolumed per key, each with its own postfix"
            )
        self.postfix = postfix

    def output_path(self, d: Mapping[Hashable, Any]) -> Path:
        if d.get(self.path_key):
            return Path(d[self.path_key])
        suffix = f"_{self.postfix}" if self.postfix else ""
        return Path(self.output_dir) / f"{self.output_name(d)}{suffix}.nii.gz"

    def planned_outputs(self, d: Mapping[Hashable, Any]) -> OutputPlan:
        """What writing item ``d`` (paths, before loading) will create: checked before a bundle run."""
        return OutputPlan(files=[self.output_path(d)])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = self.output_path(d)
            img = d[key]
            if img.ndim == 4 and img.shape[0] != 1:  # the writer holds one 3D volume: never drop channels
                raise ValueError(
                    f"{key}: {tuple(img.shape)} has {img.shape[0]} channels, SaveVolumed writes 1"
                )
            save_volume(
                img[0] if img.ndim == 4 else img, path, affine=item_affine(img, 0), space=self.space(d)
            )
            d[f"{key}_path"] = str(path)
        return d
