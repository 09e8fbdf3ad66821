"""The per-subject preprocessing pipeline behind ``mtsr preprocess``.

For each subject of a datalist: load the modalities (validated), N4 bias-field correction, registration
to the template (other modalities rigidly to the reference first), brain mask from the template, optional
skull stripping, crop to the template's intracranial box, robust [0, 1] scaling inside the mask. Writes
``DIR/<subject>/<modality>.nii.gz``, ``brain_mask.nii.gz``, ``transform_<modality>.tfm`` and the sidecar
``preprocess.json`` (every parameter, package versions, timings); the sidecar is written last, so a
subject whose sidecar says ``done`` with the same configuration is skipped on the next run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtsr_monai import __version__
from mtsr_monai.errors import InputError
from mtsr_monai.io import (
    atomic_output,
    atomic_write_text,
    file_stamp,
    has_volume_suffix,
    load_volume,
    nifti_space,
    read_json_object,
    save_volume,
    volume_stem,
)
from mtsr_monai.progress import StageBar
from mtsr_monai.transforms.keys import PARAMS_KEY, TRANSFORMS_KEY

SIDECAR = "preprocess.json"
SPLITS = ("training", "validation", "test")
#: keys resampled with nearest neighbour and written as uint8 (segmentations)
LABEL_KEYS = ("label", "seg")
#: datalist keys of brain masks (``brain_mask``, IXI's ``brain_mask_t1`` ...): not inputs of preprocessing
MASK_KEY_PREFIX = "brain_mask"
#: an image file of a format not read here (FreeSurfer, Analyze, DICOM, MINC, PAR/REC, arrays) or a renamed
#: NIfTI (``.nii.gz.bak``): refused rather than dropped; other strings are notes (a date, a site, a URL)
_OTHER_IMAGE = re.compile(r"\.(mgz|mgh|img|hdr|dcm|ima|mnc|par|rec|npy|npz)$|\.nii(\.gz)?\.[^/\\]+$", re.I)
#: files a datalist may list beside its images without them being images
_SIDECAR = re.compile(r"\.(json|txt|tsv|csv|bval|bvec|md)$", re.I)


def _not_read_here(value: str, base: Path) -> bool:
    """A listed value that names an image this reader cannot read: another image format, or an existing
    file that is no sidecar (``.tif``, an extensionless DICOM); notes and sidecars are not."""
    if _OTHER_IMAGE.search(value):
        return True
    path = Path(_listed_path(value, base))
    try:
        return path.is_file() and not _SIDECAR.search(value)
    except OSError:  # a note too long to be a path
        return False


@dataclass
class PreprocessConfig:
    """Every knob of the pipeline; it is written whole into each sidecar."""

    registration: str = "affine"  # rigid | affine | nonlinear | none
    template: str | None = None  # None: MNI152 2009a 1 mm T1 from nilearn
    template_mask: str | None = None  # intracranial mask of a user template
    reference: str = "t1"
    n4: bool = True
    n4_shrink_factor: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 30, 20)
    align_modalities: bool | str = "auto"  # rigid alignment to the reference: auto = when grids differ
    template_brain_only: bool | str = "auto"
    shrink_factors: tuple[int, ...] = (4, 2)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0)
    iterations: int = 200
    sampling_percentage: float = 0.15
    bspline_mesh_size: tuple[int, ...] = (4, 4, 4)
    bspline_iterations: int = 20
    seed: int = 0
    registration_threads: int | None = None  # None: all cores; 1: identical reruns (register's docstring)
    skull_strip: bool = False
    crop: bool = True
    crop_margin: int = 2
    k_divisible: int = 1
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    clip: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


# --------------------------------------------------------------------------------------------------
# datalist


def _listed_path(value: str, base: Path) -> str:
    """A datalist's path as ``monai.data.load_decathlon_datalist`` reads it: relative ones joined to the
    datalist's folder and normalised lexically (``lists_link/../data`` stays beside the link)."""
    return value if Path(value).is_absolute() else os.path.normpath(base / value)


def read_datalist(path: str | os.PathLike, masks: list[str] | None = None) -> list[dict[str, Any]]:
    """Subjects of all splits (``training``, ``validation``, ``test``) of a datalist, paths made absolute.
    Read here, not by MONAI's ``load_decathlon_datalist`` (:func:`~mtsr_monai.data.datalist.read_split`):
    ``mtsr preprocess`` checks its datalist before torch and MONAI load, and this keeps only image paths.

    Each item keeps its image keys (paths relative to the datalist's folder are resolved; brain masks,
    ``brain_mask*``, are left out with a warning: preprocessing makes its own from the template) and gets
    ``subject`` (derived from the first file name when missing) and ``split``; ``masks``, when given, gets
    the brain masks' paths (inputs too: never to be written over). Raises InputError for a missing file, bad
    JSON, a datalist without subjects, duplicate subject ids, and ids or keys that are no plain file names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such datalist", path)
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not valid JSON ({err})", path) from err
    if not isinstance(content, dict) or not any(isinstance(content.get(s), list) for s in SPLITS):
        raise InputError(f"a datalist needs at least one of the lists {', '.join(SPLITS)}", path)
    base = Path(os.path.abspath(path)).parent  # joined as MONAI joins: lexically, symlinked folders kept
    subjects: list[dict[str, Any]] = []
    unused: set[str] = set()
    for split in SPLITS:
        for n, item in enumerate(content.get(split) or []):
            if not isinstance(item, dict):
                raise InputError(f"{split}[{n}] is not an object of modality -> path", path)
            entry: dict[str, Any] = {"split": split}
            for key, value in item.items():
                if key == "subject":
                    entry["subject"] = str(value)
                elif key.startswith(MASK_KEY_PREFIX):  # masks are not images to correct and scale
                    unused.add(key)
                    if masks is not None and isinstance(value, str):
                        masks.append(_listed_path(value, base))
                elif isinstance(value, str) and has_volume_suffix(value):
                    entry[key] = _listed_path(value, base)
                elif isinstance(value, str) and _not_read_here(value, base):
                    raise InputError(f"{split}[{n}] {key}: {value} is not a supported image file", path)
            images = [k for k in entry if k not in ("split", "subject")]
            if not images:
                raise InputError(f"{split}[{n}] has no image path", path)
            if "subject" not in entry:
                entry["subject"] = _subject_from_name(Path(entry[images[0]]).name, images[0])
            subjects.append(entry)
    if not subjects:
        raise InputError("the datalist lists no subject", path)
    if unused:
        keys = ", ".join(sorted(unused))
        warnings.warn(
            f"{path}: {keys} not used: preprocess makes its brain mask from the template", stacklevel=2
        )
    ids = [s["subject"] for s in subjects]  # each names a folder under --output, each key a file in it
    _check_plain_names(ids, "subject ids must be plain folder names", path)
    _check_plain_names({k for s in subjects for k in s}, "image keys must be plain file names", path)
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate subject ids: {', '.join(dupes[:5])}", path)
    return subjects


def _check_plain_names(names: Iterable[str], rule: str, path: Path) -> None:
    unsafe = sorted(i for i in names if i in ("", ".", "..") or "/" in i or "\\" in i or i.startswith("."))
    if unsafe:
        raise InputError(f"{rule}, not {', '.join(map(repr, unsafe[:5]))}", path)


def _subject_from_name(name: str, key: str) -> str:
    stem = volume_stem(name)
    # drop a trailing modality tag: "case_t1" -> "case"
    stripped = re.sub(rf"[_-]{re.escape(key)}$", "", stem, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stripped or stem)


# --------------------------------------------------------------------------------------------------
# pipeline


# the stages take a cohort's keys; a subject without one of them (no T2) skips it
MAY_LACK = {"allow_missing_keys": True}


def build_stages(
    config: PreprocessConfig, image_keys: list[str], label_keys: list[str]
) -> list[tuple[str, Callable]]:
    """The named dictionary transforms in order (heavy imports happen here: SimpleITK and MONAI, so that
    ``mtsr preprocess`` checks its datalist without them). Over 60 lines only by the keyword arguments that
    hand each stage its part of ``config``."""
    # lazy: keeps SimpleITK, monai, torch out of this module's import
    from mtsr_monai.transforms.bias import N4BiasFieldCorrectiond

    # lazy: keeps SimpleITK, monai, torch out of this module's import
    from mtsr_monai.transforms.brain_mask import BrainMaskFromTemplated, contrast_template

    # lazy: keeps monai out of this module's import
    from mtsr_monai.transforms.crop import CropToMaskBoxd

    # lazy: keeps SimpleITK, monai, torch out of this module's import
    from mtsr_monai.transforms.registration import RegisterToTemplated

    # lazy: keeps monai, torch out of this module's import
    from mtsr_monai.transforms.scale import ScaleIntensityPercentilesInMaskd

    template, template_mask = config.template, config.template_mask
    painted = contrast_template(config.reference) if template is None and template_mask is None else None
    if painted is not None:  # a T2 reference meets the MNI152 brain painted as a T2
        template, template_mask = str(painted[0]), str(painted[1])
    stages: list[tuple[str, Callable]] = []
    if config.n4:
        stages.append(
            (
                "n4",
                N4BiasFieldCorrectiond(image_keys, config.n4_shrink_factor, config.n4_iterations, **MAY_LACK),
            )
        )
    stages.append(
        (
            "registration",
            RegisterToTemplated(
                image_keys + label_keys,
                reference_key=config.reference,
                template=template,
                registration=config.registration,
                nearest_keys=label_keys,
                align_modalities=config.align_modalities,
                template_brain_only=config.template_brain_only,
                template_mask=template_mask,
                shrink_factors=config.shrink_factors,
                smoothing_sigmas=config.smoothing_sigmas,
                iterations=config.iterations,
                sampling_percentage=config.sampling_percentage,
                bspline_mesh_size=config.bspline_mesh_size,
                bspline_iterations=config.bspline_iterations,
                seed=config.seed,
                threads=config.registration_threads,
                **MAY_LACK,
            ),
        )
    )
    stages.append(
        (
            "brain_mask",
            BrainMaskFromTemplated(
                image_keys,
                template=template,
                template_mask=template_mask,
                skull_strip=config.skull_strip,
                **MAY_LACK,
            ),
        )
    )
    if config.crop:
        stages.append(
            (
                "crop",
                CropToMaskBoxd(
                    image_keys + label_keys, "brain_mask", config.crop_margin, config.k_divisible, **MAY_LACK
                ),
            )
        )
    stages.append(
        (
            "intensity",
            ScaleIntensityPercentilesInMaskd(
                image_keys,
                "brain_mask",
                config.lower_percentile,
                config.upper_percentile,
                config.clip,
                **MAY_LACK,
            ),
        )
    )
    return stages


def build_stage_names(config: PreprocessConfig) -> list[str]:
    """Names of :func:`build_stages` for ``config``, without building (nor importing) the transforms."""
    names = ["n4"] if config.n4 else []
    names += ["registration", "brain_mask"] + (["crop"] if config.crop else [])
    return names + ["intensity"]


def _versions() -> dict[str, str]:
    import monai
    import numpy
    import SimpleITK
    import torch

    return {
        "mtsr_monai": __version__,
        "monai": monai.__version__,
        "SimpleITK": SimpleITK.Version.VersionString(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def _read_sidecar(folder: Path) -> dict[str, Any] | None:
    return read_json_object(folder / SIDECAR)


def is_done(subject: dict[str, Any], output_dir: str | os.PathLike, config: PreprocessConfig) -> bool:
    """True when the sidecar says done with this configuration and these inputs, and the outputs exist."""
    folder = Path(output_dir) / subject["subject"]
    sidecar = _read_sidecar(folder)
    if not sidecar or sidecar.get("status") != "done":
        return False
    if _settings(sidecar.get("config")) != _settings(config):
        return False
    inputs = {k: v for k, v in subject.items() if k not in ("subject", "split")}
    if sidecar.get("inputs") != inputs or sidecar.get("input_files") != input_files(inputs):
        return False  # other inputs, or the same paths holding other files
    return all((folder / name).is_file() for name in sidecar.get("outputs", {}).values())


def _settings(config: PreprocessConfig | dict | None) -> dict | None:
    """A configuration as ``is_done`` compares it: the thread count, which moves registrations by ~1e-12,
    does not make finished work out of date."""
    record = config.to_json() if isinstance(config, PreprocessConfig) else config
    return None if record is None else {k: v for k, v in record.items() if k != "registration_threads"}


def input_files(inputs: dict[str, str]) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of each input file (None where unreadable): a file replaced under the same path
    (another scan, a re-export) makes the subject's outputs out of date."""
    return {key: file_stamp(path) for key, path in inputs.items()}


def _load_inputs(inputs: dict[str, str], label_keys: list[str]) -> dict[str, Any]:
    """Each input as a channel-first volume, as ``LoadImaged(ensure_channel_first=True)`` gives it."""
    data: dict[str, Any] = {}
    for key, path in inputs.items():
        volume = load_volume(path, allow_constant=key in label_keys)  # an all-background label is legal
        if key in label_keys and volume.ndim != 3:
            raise InputError(f"expected a 3D label, got shape {tuple(volume.shape)}", path)
        data[key] = volume.unsqueeze(0)
    return data


def output_space(config: PreprocessConfig, reference_input: str | os.PathLike) -> int:
    """The NIfTI space code of a subject's outputs: the reference input's without registration, else the
    template's (the MNI152 file's for the built-in templates, painted ones included)."""
    if config.registration == "none":
        return nifti_space(reference_input)
    # lazy: nilearn's data folder is looked up only where a template is used
    from mtsr_monai.io.template import template_path

    return nifti_space(config.template or template_path("t1"))


def _write_outputs(
    data: dict[str, Any], folder: Path, image_keys: list[str], label_keys: list[str], space: int = 1
) -> dict[str, str]:
    """The preprocessed images, labels (uint8, or int32 where a label is outside 0-255: FreeSurfer's
    numbers), brain mask and transforms of one subject, in NIfTI space ``space``; returns the file name of
    each output."""
    import numpy as np
    import SimpleITK as sitk

    outputs: dict[str, str] = {}
    for key in image_keys:
        save_volume(data[key][0], folder / f"{key}.nii.gz", space=space)
        outputs[key] = f"{key}.nii.gz"
    for key in label_keys:
        label = data[key][0].round()  # resampled with nearest neighbour: whole numbers already
        small = bool(label.min() >= 0 and label.max() <= 255)
        save_volume(label, folder / f"{key}.nii.gz", dtype=np.uint8 if small else np.int32, space=space)
        outputs[key] = f"{key}.nii.gz"
    save_volume(data["brain_mask"][0], folder / "brain_mask.nii.gz", dtype=np.uint8, space=space)
    outputs["brain_mask"] = "brain_mask.nii.gz"
    for key, transform in data.get(TRANSFORMS_KEY, {}).items():
        name = f"transform_{key}.tfm"
        with atomic_output(folder / name) as tmp:
            sitk.WriteTransform(transform, str(tmp))
        outputs[f"transform_{key}"] = name
    return outputs


def _run_stages(
    data: dict[str, Any],
    stages: Sequence[tuple[str, Callable[[Any], Any]]],
    on_stage: Callable[[str], None],
    timings: dict[str, float],
    subject: Mapping[str, Any],
) -> dict[str, Any]:
    """The stages in order, each timed; a refusal that names no file (a failed registration) is given the
    subject's name and first scan, so that in a cohort it says whose it is."""
    for name, stage in stages:
        on_stage(name)
        t0 = time.perf_counter()
        try:
            data = stage(data)
        except InputError as err:
            if err.path is not None:
                raise
            scans = [k for k in subject if k not in ("subject", "split") and k not in LABEL_KEYS]
            where = f"subject {subject['subject']} ({', '.join(scans)}), {name}"
            raise InputError(f"{where}: {err}", subject[scans[0]]) from err
        timings[name] = round(time.perf_counter() - t0, 3)
    return data


def preprocess_subject(
    subject: dict[str, Any],
    output_dir: str | os.PathLike,
    config: PreprocessConfig,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the pipeline on one subject and write its outputs and sidecar; return the sidecar dict.
    ``on_stage(name)`` is called as each stage starts (``load``, the stages, ``write``): progress."""
    import numpy as np

    start = time.perf_counter()
    folder = Path(output_dir) / subject["subject"]
    inputs = {k: v for k, v in subject.items() if k not in ("subject", "split")}
    label_keys = [k for k in inputs if k in LABEL_KEYS]
    image_keys = [k for k in inputs if k not in LABEL_KEYS]
    if not image_keys:
        raise InputError(f"subject {subject['subject']} has only labels, no image")
    timings: dict[str, float] = {}
    on_stage = on_stage or (lambda name: None)
    on_stage("load")
    t0 = time.perf_counter()
    data = _load_inputs(inputs, label_keys)
    timings["load"] = round(time.perf_counter() - t0, 3)
    data = _run_stages(data, build_stages(config, image_keys, label_keys), on_stage, timings, subject)
    on_stage("write")
    t0 = time.perf_counter()
    # the sidecar goes first: a run stopped between the outputs must not leave the old one vouching for them
    (folder / SIDECAR).unlink(missing_ok=True)
    space = output_space(config, inputs.get(config.reference, inputs[image_keys[0]]))
    outputs = _write_outputs(data, folder, image_keys, label_keys, space)
    timings["write"] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(time.perf_counter() - start, 3)

    reference = data[image_keys[0]]
    sidecar = {
        "subject": subject["subject"],
        "split": subject.get("split"),
        "status": "done",
        "inputs": inputs,
        "input_files": input_files(inputs),
        "outputs": outputs,
        "output_shape": [int(s) for s in reference.shape[-3:]],
        "output_affine_ras": np.asarray(reference.affine, dtype=float).round(6).tolist(),
        "transform_convention": "SimpleITK: output-grid physical points (LPS mm) -> input physical points",
        "config": config.to_json(),
        "steps": _jsonable(data.get(PARAMS_KEY, {})),
        "seconds": timings,
        "versions": _versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(folder / SIDECAR, json.dumps(sidecar, indent=2))
    return sidecar


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def check_inputs(subjects: Iterable[dict[str, Any]]) -> None:
    """Refuse the run before any work when a listed file is missing."""
    for subject in subjects:
        for key, path in subject.items():
            if key not in ("subject", "split") and not Path(path).is_file():
                what = "a folder, not an image file" if Path(path).is_dir() else "missing"
                raise InputError(f"listed for subject {subject['subject']} ({key}) but {what}", path)


def check_contents(subjects: Sequence[dict[str, Any]], progress: bool = False) -> None:
    """Refuse the run before any work when an image to process is unusable (NaN voxels, constant, not 3D:
    :func:`~mtsr_monai.io.load_volume`'s checks) or a label unreadable, so that one bad file cannot stop a
    cohort half-way."""
    with StageBar(len(subjects), "preprocess: checking the inputs", enabled=progress) as bar:
        for subject in subjects:
            bar.next(str(subject["subject"]))
            for key, path in subject.items():
                if key not in ("subject", "split"):
                    load_volume(path, allow_constant=key in LABEL_KEYS)  # a label may be all background


def preprocess_datalist(
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: PreprocessConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess every subject of a datalist; returns a summary, writes ``DIR/datalist.json`` of the outputs.

    Subjects already done with the same configuration are skipped unless ``overwrite``; the images of the
    others are read and checked before any of them is processed (:func:`check_contents`).
    """

    config = config or PreprocessConfig()
    subjects = read_datalist(datalist)
    check_inputs(subjects)
    output_dir = Path(output_dir)
    todo = [s for s in subjects if overwrite or not is_done(s, output_dir, config)]
    check_contents(todo, progress)
    done, skipped = [], []
    # one step per stage of each subject (load, N4, registration, ..., write): a subject takes minutes
    n_stages = len(build_stage_names(config)) + 2
    with StageBar(len(subjects) * n_stages, "preprocess", enabled=progress) as bar:
        for n, subject in enumerate(subjects, start=1):
            sid = f"subject {n}/{len(subjects)} {subject['subject']}"
            if not overwrite and is_done(subject, output_dir, config):
                skipped.append(subject["subject"])
                bar.skip(n_stages, f"{sid}: done before")
                continue
            sidecar = preprocess_subject(subject, output_dir, config, lambda s, i=sid: bar.next(f"{i}: {s}"))
            done.append({"subject": subject["subject"], "seconds": sidecar["seconds"]["total"]})
    # a datalist of the outputs, relative to DIR, in the input's splits: ready for training
    out_list: dict[str, list] = {split: [] for split in SPLITS}
    for subject in subjects:
        sidecar = _read_sidecar(output_dir / subject["subject"]) or {}
        entry = {"subject": subject["subject"]}
        for key, name in sidecar.get("outputs", {}).items():
            if not key.startswith("transform_"):
                entry[key] = f"{subject['subject']}/{name}"
        out_list[subject["split"]].append(entry)
    atomic_write_text(output_dir / "datalist.json", json.dumps(out_list, indent=2))
    return {"processed": done, "skipped": skipped, "output": str(output_dir)}
