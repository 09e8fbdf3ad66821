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
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monai.transforms import MapTransform, SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import strtobool

from mtsr_monai.errors import InputError, root_cause
from mtsr_monai.inference import components
from mtsr_monai.inference.bundle import verify_file
from mtsr_monai.io import is_volume_file, nifti_space, save_volume, volume_stem
from mtsr_monai.io.volume import NIFTI_SUFFIXES
from mtsr_monai.transforms.io import SaveVolumed

WRITERS = [SaveImaged, SaveVolumed, components.SaveTranslationsd, components.SaveClinicald]
SEQUENCES = ("flair", "t1", "t2")
MAX_SAMPLES = 50


def _option(request: Mapping[str, Any], name: str, kind: Callable[[str], Any], default: Any) -> Any:
    """``request[name]`` read by ``kind`` (request values may be strings); InputError naming the option."""
    value = request.get(name, default)
    try:
        return kind(str(value))
    except ValueError:
        raise InputError(f"option {name}: {value!r} is not a valid value") from None


def _flag(text: str) -> bool:
    return bool(strtobool(text))


def _whole_number(text: str) -> int:
    number = float(text)
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


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
        weights = Path(path) / "models" / "model.pt"
        if weights.is_file():
            verify_file(weights)  # the sha256 of large_files.yml, as `monai.bundle run` and mtsr check it
        if getattr(self, "_config", None) is None:  # no config or weights: the app refuses (is_valid)
            return
        # only models/model.pt fits network_def; the per-direction MT files have another layout
        self._config.pop("model_filename", None)
        self._config.update(self.options)

    def check_request(self, request: Mapping[str, Any]) -> None:
        """Refuse (InputError) bad options before any work; each task checks its own."""

    def __call__(self, request: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Bad input (options, image) answers HTTP 400 with the reason, not a bare 500."""
        try:
            image = request.get("image")
            if isinstance(image, str) and not (image and Path(image).exists()):  # an unknown id arrives as ""
                raise InputError("no such image in the studies folder: give a file name without extension")
            self.check_request(request)
            return super().__call__(request, *args, **kwargs)
        except Exception as err:
            cause = root_cause(err)
            if isinstance(cause, InputError):
                raise HTTPException(status_code=400, detail=str(cause)) from err
            raise

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        # the writer wants (X, Y, Z): drop the single channel left by the bundle's postprocessing
        return [*super().post_transforms(data), SqueezeDimd(keys="pred", dim=0)]

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[Any, Any]:
        """MONAI Label's file written again as the mtsr commands write theirs: xform codes of the input's
        space (MONAI Label's writer says 1, scanner, whatever the input said: an MNI-space input came back
        in scanner space), no qform for a sheared grid."""
        result, result_json = super().writer(data, extension, dtype)
        pred = data.get("pred")
        if isinstance(result, str) and result.lower().endswith(NIFTI_SUFFIXES) and hasattr(pred, "affine"):
            # the prediction's own affine: ITK's writer has made a sheared one orthogonal (6 mm off)
            save_volume(pred, result, space=nifti_space(data.get("image_path", "")))
        return result, result_json


class SuperResolutionTask(MTSRBundleTask):
    """``mtsr_sr``: x4 in-plane super-resolution on the refined grid (same field of view, exact affine)."""


class TranslationTask(MTSRBundleTask):
    """``mtsr_mt``: one translation drawn with the latent code of ``seed`` (as ``mtsr translate --samples
    1 --seed S``), or with ``mean`` the per-voxel mean of ``samples`` seeded draws; on the input's grid.
    ``brain_mask``: ``auto`` (a scan with its skull is translated inside a template brain mask, as ``mtsr
    translate``) or ``none``; not ``mask``, which MONAI Label would pass on as the item's mask file."""

    options = {"seed": 0, "mean": False, "samples": 5, "brain_mask": "auto"}

    def check_request(self, request: Mapping[str, Any]) -> None:
        if not 0 <= _option(request, "seed", _whole_number, 0) < 2**32:
            raise InputError("option seed must be 0 to 2**32 - 1")
        if (
            _option(request, "mean", _flag, False)
            and not 1 <= _option(request, "samples", _whole_number, 5) <= MAX_SAMPLES
        ):
            raise InputError(f"option samples must be 1 to {MAX_SAMPLES}")
        if str(request.get("brain_mask", "auto")) not in ("auto", "none"):
            raise InputError("option brain_mask must be auto or none")
        named = sequence_named(str(request.get("image", "")))
        if named not in (None, "t1"):  # an upload has a temporary name: taken as T1
            raise InputError(f"mtsr_mt translates T1 into FLAIR; this image's name says {named}")

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        pre = list(super().pre_transforms(data))
        for t in pre:
            if isinstance(t, components.AutoBrainMaskd):
                t.mode = str((data or {}).get("brain_mask", "auto"))
        return pre

    def inferer(self, data: Any = None) -> Any:
        inferer = super().inferer(data)
        data = data or {}
        mean = _option(data, "mean", _flag, False)
        inferer.codes, inferer.seed = None, _option(data, "seed", _whole_number, 0)
        inferer.samples = _option(data, "samples", _whole_number, 5) if mean else 1
        inferer.reduce = "mean" if mean else None
        return inferer


#: the name MONAI Label gives an uploaded image: ``tempfile.NamedTemporaryFile``'s, with the upload's suffix
UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[^/]*)?")


def is_upload(path: Any) -> bool:
    """Whether ``path`` is an image a client uploaded: MONAI Label keeps it as ``tmp<8 random>.<ext>``
    directly in the temporary folder. Its random name says nothing of its sequence (``tmp1mc7u_pd``)."""
    if not isinstance(path, (str, Path)) or not str(path):
        return False
    path = Path(path)
    in_temp = path.parent.resolve() == Path(tempfile.gettempdir()).resolve()
    return in_temp and UPLOAD_NAME.fullmatch(path.name) is not None


def sequence_named(path: str | Path) -> str | None:
    """The sequence a study file's name says (``modality_from_name`` of its stem); None for an upload."""
    from mtsr_monai.data.datalist import modality_from_name

    return None if is_upload(path) else modality_from_name(volume_stem(path))


def study_sequences(path: str | Path) -> dict[str, str]:
    """The routine sequences of the study holding ``path``: volume files beside it whose name differs only by
    the sequence token, wherever it stands (``case1_flair.nii.gz`` -> ``case1_t1.nii.gz``,
    ``p1_FLAIR_ax.nrrd`` -> ``p1_T1_ax.nrrd``)."""
    from mtsr_monai.data.datalist import ALIASES

    def rest(p: Path) -> list[str]:  # the name's tokens but the one naming a sequence
        tokens = [t for t in re.split(r"[_\-. ]+", volume_stem(p).lower()) if t]
        return [t for t in tokens if ALIASES.get(t) not in SEQUENCES]

    path = Path(path)
    found = {}
    for f in sorted(p for p in path.parent.iterdir() if is_volume_file(p)):
        mod = sequence_named(f)
        if mod in SEQUENCES and rest(f) == rest(path) and mod not in found:
            found[mod] = str(f)
    return found


class StudySequencesd(MapTransform):
    """The requested image as its sequence (``sequence``, or with ``auto`` the one its name says: FLAIR, T1
    or T2, else InputError), plus with ``others`` the other sequences of its study, found by name (none for a
    name that names no sequence, such as an upload's); records the sequence to return in ``sequence_key``."""

    def __init__(
        self,
        keys: str = "image",
        others: bool = True,
        sequence_key: str = "mtsr_sequence",
        sequence: str = "auto",
    ) -> None:
        super().__init__(keys)
        self.others, self.sequence_key, self.sequence = others, sequence_key, sequence

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = str(d[key])
            named = sequence_named(path)
            sequence = named if self.sequence == "auto" else self.sequence
            if named in SEQUENCES and sequence != named:  # it would stand in for the study's real one
                raise InputError(f"the image's name says {named}, the option sequence says {sequence}")
            if sequence not in SEQUENCES:
                raise InputError(
                    f"clinical_sr restores FLAIR, T1 or T2, and this image's name says {named or 'none'}: "
                    "give the option sequence (flair, t1 or t2)"
                )
            found = study_sequences(path) if self.others and named is not None else {}
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
    """``clinical_sr``: the requested routine scan (``sequence``: FLAIR, T1 or T2, by default from its name)
    restored on an isotropic ``spacing`` grid over its field of view, alone or, with ``other_sequences``,
    fused with the other sequences of its study (registered to it: the result overlays the requested scan)."""

    options = {"spacing": 1.0, "other_sequences": True, "sequence": "auto"}

    def check_request(self, request: Mapping[str, Any]) -> None:
        if not 0.25 <= _option(request, "spacing", float, 1.0) <= 5.0:
            raise InputError("option spacing must be 0.25 to 5 (mm)")
        _option(request, "other_sequences", _flag, True)
        if str(request.get("sequence", "auto")) not in ("auto", *SEQUENCES):
            raise InputError(f"option sequence must be auto or one of {', '.join(SEQUENCES)}")

    def pre_transforms(self, data: Any = None) -> Sequence[Callable]:
        data = data or {}
        pre = list(super().pre_transforms(data))
        for t in pre:
            if isinstance(t, components.PrepareRoutineScansd):
                t.spacing = float(data.get("spacing", 1.0))
                t.reference_key = "mtsr_sequence"  # the requested scan's space and field of view
        others = _flag(str(data.get("other_sequences", True)))
        sequence = str(data.get("sequence", "auto"))
        return [StudySequencesd(keys="image", others=others, sequence=sequence), *pre]

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        post = list(super().post_transforms(data))
        return [*post[:-1], SelectSequenced(keys="pred"), post[-1]]
