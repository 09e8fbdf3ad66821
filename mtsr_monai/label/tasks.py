"""MONAI Label inference tasks over the mtsr bundles (imported by the server's environment only).

Each task is MONAI Label's ``BundleInferTask`` on a bundle folder: MONAI Label itself reads the bundle's
``network_def`` with ``models/model.pt``, its ``preprocessing``, ``inferer`` and ``postprocessing`` (the
objects ``python -m monai.bundle run inference`` and the ``mtsr`` commands use), leaves out the bundle's
file writers (MONAI Label writes the result), and adds no ``Restored`` step (``add_post_restore=False``):
the result keeps the grid the inferer gave it (x4 in-plane for SR, the 1 mm grid for clinical SR) with its
own affine, so it overlays the input in 3D Slicer. The type is ``others``: an image comes back, not labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.transforms import MapTransform, SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import strtobool

from mtsr_monai.inference import components

WRITERS = [SaveImaged, components.SaveVolumed, components.SaveTranslationsd, components.SaveClinicald]
SEQUENCES = ("flair", "t1", "t2")


class MTSRBundleTask(BundleInferTask):
    """A bundle served as an image-to-image ("others") task returning one 3D volume with its own affine."""

    options: dict[str, Any] = {}

    def __init__(self, path: str, conf: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(
            path,
            conf,
            type=InferType.OTHERS,
            add_post_restore=False,
            post_filter=WRITERS,
            load_strict=True,
            **kwargs,
        )
        self.dimension = 3  # whole volumes, though the network sees 2D slices (metadata's spatial_shape)
        # only models/model.pt fits network_def; the per-direction MT files have another layout
        self._config.pop("model_filename", None)
        self._config.update(self.options)

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        # the writer wants (X, Y, Z): drop the single channel left by the bundle's postprocessing
        return [*super().post_transforms(data), SqueezeDimd(keys="pred", dim=0)]


class SuperResolutionTask(MTSRBundleTask):
    """``mtsr_sr``: x4 in-plane super-resolution on the refined grid (same field of view, exact affine)."""


class TranslationTask(MTSRBundleTask):
    """``mtsr_mt``: one translation drawn with the latent code of ``seed`` (as ``mtsr translate --samples
    1 --seed S``), or with ``mean`` the per-voxel mean of ``samples`` seeded draws; on the input's grid.
    ``brain_mask``: ``auto`` (a scan with its skull is translated inside a template brain mask, as ``mtsr
    translate``) or ``none``; not ``mask``, which MONAI Label would pass on as the item's mask file."""

    options = {"seed": 0, "mean": False, "samples": 5, "brain_mask": "auto"}

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        pre = list(super().pre_transforms(data))
        for t in pre:
            if isinstance(t, components.AutoBrainMaskd):
                t.mode = str((data or {}).get("brain_mask", "auto"))
        return pre

    def inferer(self, data: Any = None) -> Any:
        inferer = super().inferer(data)
        data = data or {}
        mean = strtobool(str(data.get("mean", False)))
        inferer.codes, inferer.seed = None, int(data.get("seed", 0))
        inferer.samples = max(1, int(data.get("samples", 5))) if mean else 1
        inferer.reduce = "mean" if mean else None
        return inferer


def study_sequences(path: str | Path) -> dict[str, str]:
    """The routine sequences of the study holding ``path``: files beside it whose name differs only by the
    sequence token (``case1_flair.nii.gz`` -> ``case1_t1.nii.gz``, ``case1_t2.nii.gz``)."""
    from mtsr_monai.data.datalist import modality_from_name

    def split(p: Path) -> tuple[str | None, list[str]]:
        stem = p.name.split(".nii")[0]
        return modality_from_name(stem), [t for t in re.split(r"[_\-. ]+", stem.lower()) if t][:-1]

    path = Path(path)
    _, prefix = split(path)
    found = {}
    for f in sorted(path.parent.glob("*.nii*")):
        mod, tokens = split(f)
        if mod in SEQUENCES and tokens == prefix and mod not in found:
            found[mod] = str(f)
    return found


class StudySequencesd(MapTransform):
    """The requested image as its sequence (from its name, FLAIR when the name does not say), plus with
    ``others`` the other sequences of its study; records the sequence to return in ``sequence_key``."""

    def __init__(self, keys: str = "image", others: bool = True, sequence_key: str = "mtsr_sequence") -> None:
        super().__init__(keys)
        self.others, self.sequence_key = others, sequence_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from mtsr_monai.data.datalist import modality_from_name

        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            sequence = modality_from_name(Path(path).name.split(".nii")[0])
            sequence = sequence if sequence in SEQUENCES else "flair"
            found = study_sequences(path) if self.others else {}
            found[sequence] = path
            d.update(found)
            d[self.sequence_key] = sequence
        return d


class SelectSequenced(MapTransform):
    """Keep the channel of ``keys`` holding the sequence named in ``sequence_key``, as ``(1, X, Y, Z)``."""

    def __init__(
        self, keys: str = "pred", sequence_key: str = "mtsr_sequence", ref_key: str = "image"
    ) -> None:
        super().__init__(keys)
        self.sequence_key, self.ref_key = sequence_key, ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        import json

        d = dict(data)
        modalities = json.loads(d[self.ref_key].meta[components.CLINICAL_KEY])["modalities"]
        index = modalities.index(d[self.sequence_key])
        for key in self.key_iterator(d):
            d[key] = d[key][index : index + 1]
        return d


class ClinicalSRTask(MTSRBundleTask):
    """``clinical_sr``: the requested routine scan (FLAIR, or T1 / T2 by its name) restored on an isotropic
    ``spacing`` grid over its field of view, alone or, with ``other_sequences``, fused with the other
    sequences of its study (registered to it)."""

    options = {"spacing": 1.0, "other_sequences": True}

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        data = data or {}
        pre = list(super().pre_transforms(data))
        for t in pre:
            if isinstance(t, components.PrepareRoutineScansd):
                t.spacing = float(data.get("spacing", 1.0))
        others = strtobool(str(data.get("other_sequences", True)))
        return [StudySequencesd(keys="image", others=others), *pre]

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        post = list(super().post_transforms(data))
        return [*post[:-1], SelectSequenced(keys="pred"), post[-1]]
