"""The four tasks of ``mtsr bids``: what each makes from a participant's images, and with which model.

Each task turns a participant's images into *items* (an image, or a session for clinical-sr), and an item
into output images written by the per-file functions of :mod:`mtsr_monai.inference`
(:func:`~mtsr_monai.inference.super_resolve.super_resolve_file`,
:func:`~mtsr_monai.inference.clinical.restore_clinical`,
:func:`~mtsr_monai.inference.translate.translate_file`) with the model loaded once per process
(:meth:`Task.model`). Outputs whose writer names files its own way are
written into a hidden work folder beside their final place and renamed into it (``os.replace``: atomic).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtsr_monai.bids.derivatives import WORK_PREFIX, derivative_stem, file_sha256, output_folder, sidecar_path
from mtsr_monai.bids.layout import BIDSImage
from mtsr_monai.data.datalist import BIDS_SUFFIX_MODALITY
from mtsr_monai.errors import InputError
from mtsr_monai.inference.brain_mask import AUTO as AUTO_MASK
from mtsr_monai.inference.bundle import bundle_dir, load_bundle_network
from mtsr_monai.inference.defaults import SR_ROI_SIZE
from mtsr_monai.io import fine_input_warning

TASKS = ("super-resolve", "clinical-sr", "translate", "qc")
MODALITY_SUFFIX = {v: k for k, v in BIDS_SUFFIX_MODALITY.items()}


@dataclass
class Product:
    """One output image: its final path, the input it derives from (for QC), its sidecar extras."""

    path: Path
    source: BIDSImage
    description: str
    quality: bool = True  # compute IQMs (and consistency, if the task keeps the contrast)
    extra: dict[str, Any] = field(default_factory=dict)
    # the raw image whose scanner space the output is in (its sidecar's SpatialReference); None: ``source``
    space: BIDSImage | None = None

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)


@dataclass
class Item:
    """A unit of work inside a participant: its inputs and the output images it will write."""

    name: str
    sources: list[BIDSImage]
    outputs: list[Path]


def _bundle_identity(root: Path, weights: Path) -> dict[str, Any]:
    meta_file = root / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    if not weights.is_file():
        raise InputError("model weights not found", weights)
    return {
        "Bundle": {"Name": meta.get("name", root.name), "Version": meta.get("version"), "Folder": root.name},
        "Weights": weights.name,
        "WeightsSha256": file_sha256(weights),
    }


class Task:
    """Base class: parameters, model identity (hashed once), selection of the images, items, outputs."""

    name = ""
    keeps_contrast = True  # outputs in the input's contrast: input/output consistency is meaningful

    def __init__(self, suffixes: Sequence[str] | None = None, device: str = "cpu") -> None:
        self.suffixes = list(suffixes) if suffixes else None
        self.device = device
        self._identity: dict[str, Any] | None = None
        self._model: Any = None
        self.warnings: list[str] = []  # one line per input that ran but deserves a look; also in its sidecar

    def parameters(self) -> dict[str, Any]:
        return {"device": self.device.split(":")[0]}

    def identity(self) -> dict[str, Any]:
        """Bundle name / version and weights sha256 (``{}`` for a task without a model); computed once."""
        if self._identity is None:
            self._identity = self._compute_identity()
        return self._identity

    def _compute_identity(self) -> dict[str, Any]:
        return {}

    def model(self) -> Any:
        """The network, loaded on first use and kept for the rest of the process."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        return None

    def select(self, images: Sequence[BIDSImage]) -> list[BIDSImage]:
        """The images this task uses; InputError when a requested modality is missing from a session."""
        usable = [im for im in images if self.usable(im)]
        if not usable:
            wanted = ", ".join(self.suffixes or BIDS_SUFFIX_MODALITY)
            raise InputError(f"no {wanted} image to process")
        for session in sorted({im.session or "" for im in images} or {""}):
            have = {im.suffix for im in usable if (im.session or "") == session}
            missing = [s for s in self.suffixes or () if s not in have]
            if missing:
                where = f" in session {session}" if session else ""
                raise InputError(f"missing modality {', '.join(missing)}{where}")
        return usable

    def usable(self, image: BIDSImage) -> bool:
        return self.suffixes is None or image.suffix in self.suffixes

    def plan(self, images: Sequence[BIDSImage], output_dir: Path) -> list[Item]:
        """One item per selected image by default."""
        items = []
        for im in self.select(images):
            outputs = [output_folder(output_dir, im) / f"{n}.nii.gz" for n in self.output_stems(im)]
            items.append(Item(im.stem, [im], outputs))
        return items

    def output_stems(self, image: BIDSImage) -> list[str]:
        return []

    def run(self, item: Item) -> list[Product]:
        return []


class SuperResolveTask(Task):
    name = "super-resolve"

    def __init__(
        self,
        suffixes: Sequence[str] | None = None,
        device: str = "cpu",
        bundle: str | None = None,
        method: str = "model",
        batch_size: int = 8,
        roi_size: int = SR_ROI_SIZE,
        axis: str = "axial",
        precision: str = "auto",
    ) -> None:
        super().__init__(suffixes, device)
        self.bundle, self.method, self.batch_size, self.roi_size = bundle, method, batch_size, roi_size
        self.axis, self.precision = axis, precision

    def parameters(self) -> dict[str, Any]:
        # lazy: keeps torch out of this module's import
        from mtsr_monai.precision import resolve_precision

        precision = resolve_precision(self.precision, self.device) if self.method == "model" else None
        return {
            **super().parameters(),
            "method": self.method,
            "scale": 4,
            "axis": self.axis,
            "batch_size": self.batch_size,
            "roi_size": self.roi_size,
            "precision": precision,
        }

    def _compute_identity(self) -> dict[str, Any]:
        if self.method != "model":
            return {}

        root = bundle_dir(self.bundle)
        return _bundle_identity(root, root / "models" / "model.pt")

    def _load_model(self) -> Any:
        return load_bundle_network(self.bundle, device=self.device)[0] if self.method == "model" else None

    def output_stems(self, image: BIDSImage) -> list[str]:
        # a baseline's outputs beside the model's, not over them: desc-mtsrSR, desc-mtsrSRBicubic, ...
        label = "mtsrSR" if self.method == "model" else f"mtsrSR{self.method.capitalize()}"
        return [derivative_stem(image, label)]

    def run(self, item: Item) -> list[Product]:
        # lazy: keeps torch out of this module's import
        from mtsr_monai.inference.super_resolve import super_resolve_file

        source, out = item.sources[0], item.outputs[0]
        axis = int(self.axis) if self.axis.lstrip("-").isdigit() else self.axis
        warning = fine_input_warning(source.path, axis, 4) if self.method == "model" else None
        summary = super_resolve_file(
            str(source.path),
            str(out),
            method=self.method,
            network=self.model(),
            device=self.device,
            batch_size=self.batch_size,
            roi_size=self.roi_size,
            axis=axis,
            progress=False,
            precision=self.precision,
        )
        text = f"x4 in-plane super-resolution ({self.method}) of the source by mtsr-monai"
        # "auto" as it resolved for this image
        extra: dict[str, Any] = {
            "SliceAxis": {"ArrayAxis": summary["slice_axis"], "Plane": summary["slice_plane"]}
        }
        if warning is not None:
            self.warnings.append(f"{source.relpath}: {warning}")
            extra["Warnings"] = [warning]
        return [Product(out, source, text, extra=extra)]


#: the warnings this package raises about an input: recorded for every image, not once per process
_OWN_INPUT_WARNINGS = ("always", None, UserWarning, re.compile(r"mtsr_monai\."), 0)


@contextlib.contextmanager
def _input_warnings(into: list[str]) -> Iterator[None]:
    """The warnings this package raises about an input while a task works on it, appended to ``into`` as
    lines (the run log and the sidecar then name the file); any other warning is shown as it would be (once
    per place, by the process's filters)."""
    if _OWN_INPUT_WARNINGS not in warnings.filters:  # once: each change of the filters resets their memory
        warnings.filterwarnings("always", category=UserWarning, module=_OWN_INPUT_WARNINGS[3].pattern)
    show = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        if issubclass(category, UserWarning) and "mtsr_monai" in Path(filename).parts:
            into.append(str(message))
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = record
    try:
        yield
    finally:
        warnings.showwarning = show


def _work_folder(final: Path) -> tempfile.TemporaryDirectory:
    """A hidden work folder beside ``final`` (same file system: the rename into place is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{final.name}.", dir=final.parent)


class ClinicalSRTask(Task):
    """One item per session: its T1w / T2w / FLAIR restored together on a common isotropic grid."""

    name = "clinical-sr"

    def __init__(
        self,
        suffixes: Sequence[str] | None = None,
        device: str = "cpu",
        model_path: str | None = None,
        method: str = "model",
        spacing: float = 1.0,
        batch_size: int = 8,
        patches: bool = True,
        planes: int = 2,
    ) -> None:
        super().__init__(suffixes, device)
        self.model_path, self.method, self.spacing = model_path, method, spacing
        self.batch_size, self.patches, self.planes = batch_size, patches, planes

    def parameters(self) -> dict[str, Any]:
        model = self.method == "model"
        return {
            **super().parameters(),
            "method": self.method,
            "spacing_mm": self.spacing,
            "batch_size": self.batch_size,
            "patches": self.patches,
            "planes": self.planes if model else None,
            "intensity_steps": ["gain", "curve"] if model else [],
            "registration": "rigid to the reference (FLAIR, else T1w, else T2w)",
        }

    def _weights(self) -> Path:
        # lazy: keeps torch out of this module's import
        from mtsr_monai.inference.clinical import default_model_path

        return Path(self.model_path) if self.model_path else default_model_path()

    def _compute_identity(self) -> dict[str, Any]:
        if self.method != "model":
            return {}
        weights = self._weights()
        root = weights.parents[1] if not self.model_path else weights.parent
        return _bundle_identity(root, weights)

    def _load_model(self) -> Any:
        # lazy: keeps torch out of this module's import
        from mtsr_monai.inference.clinical import load_clinical_model

        return load_clinical_model(self._weights(), self.device) if self.method == "model" else None

    def usable(self, image: BIDSImage) -> bool:
        return image.modality in ("t1", "t2", "flair") and super().usable(image)

    def plan(self, images: Sequence[BIDSImage], output_dir: Path) -> list[Item]:
        sessions: dict[str, list[BIDSImage]] = {}
        for im in self.select(images):
            sessions.setdefault(im.session or "", []).append(im)
        items = []
        for session, ims in sorted(sessions.items()):
            suffixes = [im.suffix for im in ims]
            dupes = [im.path.name for im in ims if suffixes.count(im.suffix) > 1]
            if dupes:  # runs / acquisitions of one contrast: which one to fuse is the user's choice
                raise InputError(
                    f"session {session or '-'} has several scans of one contrast ({', '.join(dupes)}): "
                    "clinical-sr fuses one per contrast; choose one with --bids-filter-file (e.g. "
                    '{"flair": {"run": 1}}) or leave that contrast out with --modality'
                )
            # a baseline's outputs beside the model's, not over them: desc-mtsrClinicalSRTrilinear
            label = "mtsrClinicalSR" + ("" if self.method == "model" else self.method.capitalize())
            outputs = [output_folder(output_dir, im) / f"{derivative_stem(im, label)}.nii.gz" for im in ims]
            items.append(Item(f"ses-{session}" if session else "session", ims, outputs))
        return items

    def run(self, item: Item) -> list[Product]:
        # lazy: keeps torch out of this module's import
        from mtsr_monai.inference.clinical import restore_clinical

        inputs = {im.modality: im.path for im in item.sources}
        with _work_folder(item.outputs[0]) as work:
            written = restore_clinical(
                inputs,
                work,
                spacing=self.spacing,
                method=self.method,
                checkpoint=self.model(),
                patches=self.patches,
                batch_size=self.batch_size,
                device=self.device,
                progress=False,
                planes=self.planes,
            )
            for im, out in zip(item.sources, item.outputs, strict=True):
                os.replace(written[im.modality], out)
        ref = next(m for m in ("flair", "t1", "t2") if m in inputs)
        names = ", ".join(MODALITY_SUFFIX[m] for m in inputs)
        how = f"fused over {names}" if self.method == "model" else f"each of {names} interpolated alone"
        text = (
            f"clinical-protocol restoration ({self.method}) on a {self.spacing} mm grid covering the "
            f"session's {MODALITY_SUFFIX[ref]}, {how}"
        )
        # every sequence was registered to the reference: its output is in the reference's space, not its own
        space = next(im for im in item.sources if im.modality == ref)
        return [
            Product(out, im, text, space=space) for im, out in zip(item.sources, item.outputs, strict=True)
        ]


class TranslateTask(Task):
    """One item per source image with weights to ``target``: N samples, their mean and per-voxel std."""

    name = "translate"
    keeps_contrast = False

    def __init__(
        self,
        suffixes: Sequence[str] | None = None,
        device: str = "cpu",
        target: str = "FLAIR",
        samples: int = 5,
        seed: int = 0,
        axis: str = "axial",
    ) -> None:
        super().__init__(suffixes, device)
        if target not in ("T1w", "T2w", "FLAIR", "PDw"):
            raise InputError(f"unknown --target {target!r}; choose from T1w, T2w, FLAIR")
        if suffixes and set(suffixes) <= {target}:  # else every participant would fail for want of a source
            raise InputError(f"--target {target} is the --modality to translate; choose another target")
        self.target, self.samples, self.seed, self.axis = target, samples, seed, axis
        self._models: dict[str, Any] = {}
        for suffix in set(suffixes or ()) & set(BIDS_SUFFIX_MODALITY) - {target}:  # named: each needs weights
            weights = self._weights(BIDS_SUFFIX_MODALITY[suffix])
            if not weights.is_file():
                raise InputError(f"no weights to translate --modality {suffix} to {target}", weights)

    def parameters(self) -> dict[str, Any]:
        return {
            **super().parameters(),
            "target": self.target,
            "samples": self.samples,
            "seed": self.seed,
            "axis": self.axis,
            "mask": AUTO_MASK,
        }

    def _weights(self, modality: str) -> Path:
        # lazy: keeps ignite, monai, torch out of this module's import
        from mtsr_monai.inference.translate import default_weights

        return default_weights(modality, BIDS_SUFFIX_MODALITY[self.target])

    def usable(self, image: BIDSImage) -> bool:
        return (
            image.suffix != self.target and self._weights(image.modality).is_file() and super().usable(image)
        )

    def _compute_identity(self) -> dict[str, Any]:
        # lazy: keeps ignite, monai, torch out of this module's import
        from mtsr_monai.inference.translate import bundle_dir as mt_bundle_dir

        root = mt_bundle_dir()
        pairs = sorted(p for p in (root / "models").glob(f"*_to_{BIDS_SUFFIX_MODALITY[self.target]}.pt"))
        if not pairs:
            raise InputError(f"no translation weights to {self.target}", root / "models")
        ident = _bundle_identity(root, pairs[0])
        ident["Weights"] = {p.name: file_sha256(p) for p in pairs}
        ident["WeightsSha256"] = file_sha256(pairs[0]) if len(pairs) == 1 else None
        return ident

    def translator(self, modality: str) -> Any:
        """(generator, metadata) for ``modality`` -> target, loaded once per process."""
        if modality not in self._models:
            # lazy: keeps ignite, monai, torch out of this module's import
            from mtsr_monai.inference.translate import load_translator

            self._models[modality] = load_translator(self._weights(modality), self.device)
        return self._models[modality]

    def _remove_extra_samples(self, image: BIDSImage, folder: Path) -> None:
        """Samples beyond this run's number that an earlier run with more samples left (and their sidecars):
        they would sit beside a mean and std they are not part of."""
        k = self.samples
        while True:
            stem = derivative_stem(image, f"mtsrFrom{image.suffix}Sample{k}", self.target)
            extra = [folder / f"{stem}.nii.gz", folder / f"{stem}.json"]
            if not any(p.exists() for p in extra):
                return
            for p in extra:
                p.unlink(missing_ok=True)
            k += 1

    def output_stems(self, image: BIDSImage) -> list[str]:
        base = f"mtsrFrom{image.suffix}"
        names = [f"{base}Sample{i}" for i in range(self.samples)] + [f"{base}Mean", f"{base}Std"]
        return [derivative_stem(image, n, self.target) for n in names]

    def run(self, item: Item) -> list[Product]:
        # lazy: keeps ignite, monai, torch out of this module's import
        from mtsr_monai.inference.translate import translate_file

        source = item.sources[0]
        target = BIDS_SUFFIX_MODALITY[self.target]
        noted: list[str] = []
        with _work_folder(item.outputs[0]) as work, _input_warnings(noted):
            summary = translate_file(
                source.path,
                source.modality,
                target,
                work,
                samples=self.samples,
                seed=self.seed,
                axis=self.axis,
                device=self.device,
                progress=False,
                mask_path=AUTO_MASK,
                translator=self.translator(source.modality),
            )
            written = [*summary["outputs"]["samples"], summary["outputs"]["mean"], summary["outputs"]["std"]]
            for path, out in zip(written, item.outputs, strict=True):
                os.replace(path, out)
        if summary["mask_failed"]:
            noted.append(summary["mask_note"])
        self.warnings += [f"{source.relpath}: {text}" for text in noted]
        self._remove_extra_samples(source, item.outputs[0].parent)
        return self._products(item, source, summary, noted)

    def _products(self, item: Item, source: BIDSImage, summary: dict, noted: list[str]) -> list[Product]:
        import numpy as np

        arrays = summary["_arrays"]
        fg = arrays["mean"] > 0
        std = arrays["std"][fg] if fg.any() else np.zeros(1)
        uncertainty = {
            "mean_std_in_foreground": float(std.mean()),
            "p95_std_in_foreground": float(np.percentile(std, 95)),
        }
        what = f"translation of the source {source.suffix} to {self.target} (BicycleGAN, mtsr-monai)"
        warned = {"Warnings": list(noted)} if noted else {}
        samples = zip(item.outputs[: self.samples], summary["codes"], strict=True)
        products = [
            Product(
                out, source, f"sample {i} of the {what}", quality=False, extra={"LatentCode": code, **warned}
            )
            for i, (out, code) in enumerate(samples)
        ]
        spread = {"Uncertainty": uncertainty, "BrainMask": summary["mask_note"], **warned}
        products.append(
            Product(item.outputs[-2], source, f"per-voxel mean of the samples of the {what}", extra=spread)
        )
        products.append(
            Product(
                item.outputs[-1],
                source,
                f"per-voxel standard deviation of the samples of the {what}",
                quality=False,
                extra=spread,
            )
        )
        return products


class QCTask(Task):
    """IQMs of the inputs only (the runner writes them for every task; here they are the whole output)."""

    name = "qc"


def make_task(name: str, **kwargs: Any) -> Task:
    """The task called ``name`` with its keyword arguments (those it does not take are ignored)."""
    import inspect

    classes = {
        "super-resolve": SuperResolveTask,
        "clinical-sr": ClinicalSRTask,
        "translate": TranslateTask,
        "qc": QCTask,
    }
    if name not in classes:
        raise InputError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    cls = classes[name]
    accepted = set(inspect.signature(cls.__init__).parameters) | {"suffixes", "device"}
    return cls(**{k: v for k, v in kwargs.items() if k in accepted})
