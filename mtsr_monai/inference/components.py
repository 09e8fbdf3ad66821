"""The pieces a bundle's ``inference.yaml`` declares, shared by the bundles, the CLI and the MONAI Label app.

Each bundle runs ``preprocessing`` (dictionary transforms from file paths to a channel-first ``MetaTensor``),
a whole-volume ``inferer`` (a MONAI :class:`~monai.inferers.Inferer` that cuts the volume into 2D slices,
runs the 2D network on them and stitches the volume back, with the output's geometry) and
``postprocessing`` (back to the input's intensities, then written). ``monai.bundle run inference`` feeds
them through a ``SupervisedEvaluator``; ``mtsr super-resolve`` / ``translate`` and MONAI Label apply the
very same objects to one item (:func:`mtsr_monai.inference.bundle.infer_item`). ``mtsr clinical-sr`` runs
:func:`~mtsr_monai.inference.clinical.restore_clinical`, which also reports each step's figures; its steps
are the functions the clinical objects here call (``prepare_routine_scans``, ``restore_planes``,
``to_scanner_units``, ``consistency_step``), and tests/test_bundle_inference.py checks that both write the
same volume.

The generic steps (reading, the training scaling and its inverse, writing one volume) are transforms of
:mod:`mtsr_monai.transforms.io` and :mod:`mtsr_monai.transforms.scale`; the task-specific ones are here.

Inferers take ``(B, C, X, Y, Z)`` batches (a MetaTensor carrying the affine) and return a MetaTensor batch
whose affine is that of the output grid, so a writer needs nothing else.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform, MaskIntensityd

from mtsr_monai.errors import InputError
from mtsr_monai.inference.brain_mask import (
    AUTO,
    AUTO_MASK_NAME,
    RUN_ONLY_OUTPUTS,
    auto_brain_mask,
    check_brain_mask,
    earlier_outputs,
    stale_auto_mask,
)
from mtsr_monai.inference.bundle import as_flag
from mtsr_monai.inference.clinical import (
    consistency_step,
    model_input,
    network_input,
    prepare_routine_scans,
    reference_sequence,
    restore_planes,
    slice_axes_for,
    to_scanner_units,
    transform_from_spec,
    transform_spec,
    warn_without_thick_axis,
)
from mtsr_monai.inference.defaults import MIN_ROI_SIZE, SR_ROI_SIZE
from mtsr_monai.inference.super_resolve import super_resolve_planes, window_inferer
from mtsr_monai.inference.translate import checked_codes, latent_codes, sample_statistics, translate_volume
from mtsr_monai.io import (
    atomic_file_set,
    atomic_write_text,
    check_spacing,
    load_volume,
    save_volume,
    volume_stem,
)
from mtsr_monai.io.outputs import OutputPlan

# LoadVolumed and SaveVolumed are defined with the other transforms; bundle configs written before the
# move name them here (as RobustScaled and IntensityRestored below)
from mtsr_monai.transforms.io import LoadVolumed, SaveVolumed, VolumeWriterd, item_affine, output_stem
from mtsr_monai.transforms.scale import RestoreIntensityd, RobustScaleIntensityd

__all__ = [
    "AutoBrainMaskd",
    "ClinicalConsistencyd",
    "ClinicalRestored",
    "ClinicalSliceInferer",
    "IntensityRestored",
    "LoadVolumed",
    "MaskOutsided",
    "PrepareRoutineScansd",
    "RestoreClinicalIntensityd",
    "RobustScaled",
    "SaveClinicald",
    "SaveTranslationsd",
    "SaveVolumed",
    "SliceSRInferer",
    "SliceTranslationInferer",
    "output_stem",
]

CODES_KEY = "mtsr_latent_codes"  # JSON {"seed", "codes"} of a translation, kept in the output's meta
REDUCED_KEY = "mtsr_reduced"  # "mean" in the meta of translations the inferer averaged (reduce="mean")
# JSON {"bounds", "thick_axis", "given", "modalities", "transforms"} of a routine session
CLINICAL_KEY = "mtsr_clinical"


def _batch(items: Sequence[MetaTensor]) -> MetaTensor:
    """Stack per-item MetaTensors into a batch whose affine and meta decollate back per item."""
    from monai.data.utils import collate_meta_tensor

    return collate_meta_tensor(list(items))


def _network_device(network: Any) -> torch.device:
    params = list(network.parameters()) if isinstance(network, torch.nn.Module) else []
    return params[0].device if params else torch.device("cpu")


# ------------------------------------------------------------------------------------------ transforms
class RobustScaled(RobustScaleIntensityd):
    """The name SR bundle configs written before session 45 use: the unclipped
    :class:`~mtsr_monai.transforms.scale.RobustScaleIntensityd`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, clip=False, allow_missing_keys=allow_missing_keys)


#: the name SR bundle configs written before session 45 use for the inverse of the scaling
IntensityRestored = RestoreIntensityd


#: item key saying where the item's mask came from: :data:`~mtsr_monai.inference.brain_mask.AUTO` when
#: :class:`AutoBrainMaskd` estimated it (the writer then keeps it beside the outputs)
MASK_SOURCE_KEY = "mask_source"


class AutoBrainMaskd(MapTransform):
    """``mask: auto`` of the MT bundle: an item with no ``mask_key`` whose image still has its skull gets
    the brain mask of :func:`~mtsr_monai.inference.brain_mask.auto_brain_mask` (the models saw skull-stripped
    brains only, and paint a whole head with the scalp's level). A skull-stripped image, or one the template
    cannot fit (a warning), gets none; ``mode`` ``none`` turns it off. ``contrast``: the image's (the
    bundle's ``source``), which picks the template. The note goes to ``<mask_key>_note``. ``progress``: a
    bar naming the estimation's stage (about 25 s)."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        mode: str = AUTO,
        contrast: str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(keys)
        self.mask_key, self.mode, self.contrast = mask_key, mode, contrast
        self.progress = as_flag(progress, "progress")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        if self.mode not in (AUTO, "none"):  # checked here: MONAI Label sets it per request
            raise InputError(f"mask must be '{AUTO}' or 'none', not {self.mode!r}")
        d = dict(data)
        if self.mode != AUTO or d.get(self.mask_key) is not None:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            auto = auto_brain_mask(img[0], self.contrast, self.progress)
            d[f"{self.mask_key}_note"] = auto.note
            name = str(img.meta.get("filename_or_obj", key))
            if auto.failed:
                warnings.warn(f"{name}: {auto.note}", stacklevel=2)
            else:
                logging.getLogger(__name__).info("%s: %s", name, auto.note)
            if auto.mask is not None:
                mask = torch.from_numpy(auto.mask[None].astype(np.uint8))
                d[self.mask_key] = MetaTensor(mask, affine=img.affine, meta={"filename_or_obj": AUTO})
                d[MASK_SOURCE_KEY] = AUTO
        return d


class MaskOutsided(MaskIntensityd):
    """Zero each key outside ``mask_key`` (a brain mask on the same grid), when the item has one: a
    non-skull-stripped input then looks like the skull-stripped training data. MONAI's ``MaskIntensityd``
    (a single-channel mask applies to every channel) after :func:`check_brain_mask`, which refuses a mask
    that is empty or off the image's grid: masking compares shapes only, not affines. The name is the one
    the MT bundle's ``inference.yaml`` declares."""

    def __init__(self, keys: KeysCollection, mask_key: str = "mask") -> None:
        super().__init__(keys, mask_key=mask_key, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        mask = data.get(self.mask_key)
        if mask is None:  # the mask is optional: AutoBrainMaskd leaves a skull-stripped input without one
            return dict(data)
        for key in self.key_iterator(data):
            img = data[key]
            names = (str(img.meta.get("filename_or_obj", key)), str(mask.meta.get("filename_or_obj", "mask")))
            check_brain_mask(
                np.asarray(mask.detach().cpu())[0],
                item_affine(mask, 0),
                tuple(img.shape[1:]),
                item_affine(img, 0),
                names,
            )
        return super().__call__(data)


class SaveTranslationsd(VolumeWriterd):
    """Write the N translations in ``keys`` (``(N, X, Y, Z)``) as ``sample_0..N-1``, their ``mean`` and
    per-voxel ``std``, and ``codes.json`` (the latent codes, to reproduce a sample) into the item's
    ``path_key`` folder, else ``output_dir/<input name>/``; with them the item's ``mask_key`` as
    ``brain_mask.nii.gz`` when :class:`AutoBrainMaskd` estimated it. All in the NIfTI space of the item's
    ``ref_key`` image, which also names the folder."""

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str = ".",
        path_key: str = "output",
        mask_key: str = "mask",
        ref_key: str = "image",
    ) -> None:
        super().__init__(keys, output_dir, path_key, ref_key)
        self.mask_key = mask_key

    def output_folder(self, d: Mapping[Hashable, Any]) -> Path:
        return Path(d.get(self.path_key) or Path(self.output_dir) / self.output_name(d))

    def planned_outputs(self, d: Mapping[Hashable, Any]) -> OutputPlan:
        """What writing item ``d`` will create (its folder, the files in it): checked before a bundle run."""
        out = self.output_folder(d)
        given = d.get(self.mask_key) not in (None, AUTO)  # a mask file is an input, kept: no output of ours
        mask = () if given else (AUTO_MASK_NAME,)
        names = ("sample_*.nii.gz", "mean.nii.gz", "std.nii.gz", "codes.json", *RUN_ONLY_OUTPUTS, *mask)
        return OutputPlan(files=[out / n for n in names], folders=[out])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            out = self.output_folder(d)
            pred = d[key]
            affine, space = item_affine(pred, 0), self.space(d)
            samples = pred.detach().cpu().numpy()
            mean, std = sample_statistics(samples)
            volumes = {f"sample_{i}.nii.gz": v for i, v in enumerate(samples)}
            volumes.update({"mean.nii.gz": mean, "std.nii.gz": std})
            reduced = pred.meta.get(REDUCED_KEY) == "mean"
            if reduced:  # the inferer kept only the samples' mean: no sample, no spread to write
                volumes = {"mean.nii.gz": samples[0]}
            codes = json.loads(pred.meta.get(CODES_KEY, '{"seed": null, "codes": null}'))
            keep_mask = d.get(MASK_SOURCE_KEY) == AUTO  # estimated here: kept so that it can be checked
            # all of them or none, and no sample, spread or mask of an earlier run left beside them
            replaced = ("sample_*.nii.gz", "std.nii.gz") if reduced else ("sample_*.nii.gz",)
            stale = (*replaced, *RUN_ONLY_OUTPUTS, *stale_auto_mask(out, d.get(self.mask_key)))
            with atomic_file_set(out, stale=stale, earlier=earlier_outputs(out)) as staging:
                for name, volume in volumes.items():
                    save_volume(volume, staging / name, affine, space=space)
                if keep_mask:
                    mask = np.asarray(d[self.mask_key].detach().cpu().numpy()[0], dtype=np.uint8)
                    save_volume(mask, staging / AUTO_MASK_NAME, affine, dtype=np.uint8, space=space)
                atomic_write_text(staging / "codes.json", json.dumps(codes, indent=1))
            paths = {
                name[: -len(".nii.gz")]: str(out / name) for name in volumes if not name.startswith("sample")
            }
            paths["samples"] = [str(out / name) for name in volumes if name.startswith("sample")]
            if keep_mask:
                paths["brain_mask"] = str(out / AUTO_MASK_NAME)
            d[f"{key}_paths"] = paths
            d[f"{key}_statistics"] = {"mean": mean, "std": None if reduced else std}
        return d


# ------------------------------------------------------------------------------------------- inferers
class SliceWindowInferer(Inferer):
    """A batch of LR slices ``(B, 1, H, W)`` through the SR network as ``mtsr super-resolve`` runs them
    (:func:`~mtsr_monai.inference.super_resolve.window_inferer`): the bundle's validation and evaluation
    score what the command writes."""

    def __init__(self, roi_size: int = SR_ROI_SIZE, sw_batch_size: int = 8) -> None:
        super().__init__()
        self.roi_size, self.sw_batch_size = int(roi_size), int(sw_batch_size)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        windows = window_inferer(tuple(inputs.shape[-2:]), self.roi_size, self.sw_batch_size)
        return windows(inputs, network, *args, **kwargs)


class SliceSRInferer(Inferer):
    """Whole-volume x ``scale`` in-plane super-resolution: each batch item ``(1, X, Y, Z)`` (scaled by
    :class:`~mtsr_monai.transforms.scale.RobustScaleIntensityd`) is cut into slices normal to ``axis`` (found
    from its affine), super-resolved by
    :func:`~mtsr_monai.inference.super_resolve.super_resolve_scaled` (LR sliding windows of ``roi_size``,
    at most the slice, Gaussian blending; background slices skipped) and returned with the refined grid's
    affine (same field of view, in-plane voxel size / ``scale``). ``method`` other than ``model``
    interpolates instead (the baselines)."""

    def __init__(
        self,
        scale: int = 4,
        axis: str | int = "axial",
        roi_size: int = SR_ROI_SIZE,
        sw_batch_size: int = 8,
        method: str = "model",
        precision: str = "auto",
        progress: bool = False,
        window_inferer: Any = None,
    ) -> None:
        super().__init__()
        sizes = (roi_size, sw_batch_size)
        whole = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in sizes)
        if not whole or roi_size < MIN_ROI_SIZE or sw_batch_size < 1:  # as mtsr super-resolve refuses them
            raise InputError(f"roi_size must be an integer >= {MIN_ROI_SIZE} and batch_size >= 1, got "
                             f"{roi_size!r}, {sw_batch_size!r}")  # fmt: skip
        self.scale, self.axis, self.roi_size, self.sw_batch_size = int(scale), axis, roi_size, sw_batch_size
        self.method, self.precision, self.progress, self.window_inferer = (
            method,
            precision,
            as_flag(progress, "progress"),
            window_inferer,
        )

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> MetaTensor:
        outs = []
        for b in range(inputs.shape[0]):
            vol = inputs[b, 0].detach().cpu().numpy().astype(np.float32, copy=False)
            out, grid = super_resolve_planes(
                vol,
                item_affine(inputs, b),
                self.axis,
                scale=self.scale,
                method=self.method,
                network=network if self.method == "model" else None,
                batch_size=self.sw_batch_size,
                roi_size=self.roi_size,
                device=_network_device(network),
                progress=self.progress,
                inferer=self.window_inferer,
                precision=self.precision,
            )
            out = out[None]
            outs.append(MetaTensor(torch.from_numpy(out), affine=torch.as_tensor(grid)))
        return _batch(outs)


class SliceTranslationInferer(Inferer):
    """Whole-volume modality translation with a BicycleGAN generator ``G(A, z)``: each batch item
    ``(1, X, Y, Z)`` goes through :func:`~mtsr_monai.inference.translate.translate_volume` (robust [0, 1]
    scaling, slices normal to ``axis``, padded to a multiple of ``image_size`` when ``native_resolution``
    else resized to it) once per latent code, on the input's grid. The codes: ``codes``, else ``samples``
    draws seeded by ``seed`` from N(0, I), or from ``code_prior``. Returns ``(B, N, X, Y, Z)``, or with
    ``reduce="mean"`` their per-voxel mean ``(B, 1, X, Y, Z)``; the codes go to the output's meta
    (``CODES_KEY``). ``target_scaling``, ``target_level``, ``tissue_prior`` and ``code_prior`` are the
    weights' meta keys (``translate.volume_settings``)."""

    def __init__(
        self,
        image_size: int,
        native_resolution: bool = False,
        nz: int = 8,
        samples: int = 5,
        seed: int | None = 0,
        codes: Sequence[Sequence[float]] | None = None,
        axis: str | int = "axial",
        batch_size: int = 16,
        reduce: str | None = None,
        progress: bool = False,
        target_scaling: str = "robust",
        target_level: float | None = None,
        tissue_prior: dict | None = None,
        code_prior: dict | None = None,
    ) -> None:
        super().__init__()
        self.code_prior = code_prior
        self.target_scaling, self.target_level, self.tissue_prior = target_scaling, target_level, tissue_prior
        self.image_size, self.native_resolution, self.nz = int(image_size), bool(native_resolution), int(nz)
        self.samples, self.seed, self.codes, self.axis = int(samples), seed, codes, axis
        self.batch_size, self.reduce = int(batch_size), reduce
        self.progress = as_flag(progress, "progress")

    def latent_codes(self) -> np.ndarray:
        if self.codes is not None:  # one code may be given as a flat list
            return checked_codes(np.atleast_2d(np.asarray(self.codes, dtype=object)), self.nz)
        return latent_codes(self.samples, self.nz, self.seed, self.code_prior)

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> MetaTensor:
        codes = self.latent_codes()
        outs = []
        for b in range(inputs.shape[0]):
            affine = item_affine(inputs, b)
            out = translate_volume(
                inputs[b, 0].detach().cpu().numpy(),
                affine,
                network,
                self.image_size,
                codes,
                self.axis,
                batch_size=self.batch_size,
                progress=self.progress,
                native_resolution=self.native_resolution,
                target_scaling=self.target_scaling,
                target_level=self.target_level,
                tissue_prior=self.tissue_prior,
            )
            out = out.mean(axis=0, keepdims=True) if self.reduce == "mean" else out
            item = MetaTensor(torch.from_numpy(np.ascontiguousarray(out)), affine=torch.as_tensor(affine))
            # a JSON string: collation and decollation pass strings through unchanged
            item.meta[CODES_KEY] = json.dumps({"seed": self.seed, "codes": codes.tolist()})
            item.meta[REDUCED_KEY] = self.reduce or ""
            outs.append(item)
        return _batch(outs)


# ----------------------------------------------------------------------------------- clinical sessions
class PrepareRoutineScansd(MapTransform):
    """Routine scans of one session (``keys``: FLAIR / T1 / T2 paths, each on its own grid; missing ones
    are allowed) -> ``output_key``: ``(C, X, Y, Z)`` in ``modalities`` order on the target grid (an
    isotropic ``spacing`` grid over the reference scan, or the grid of the item's ``like_key`` file), each
    rigidly registered to the reference (the sequence the item's ``reference_key`` names, when given; else
    the first given of FLAIR, T1, T2), interpolated, scaled to [0, 1]; sequences not given are zero.
    ``coverage`` (where any scan has data) goes to ``coverage_key``; intensity bounds, the thick axis, the
    given sequences and their registrations to the reference to the meta (see
    :func:`mtsr_monai.inference.clinical.prepare_routine_scans`)."""

    def __init__(
        self,
        keys: KeysCollection = ("flair", "t1", "t2"),
        modalities: Sequence[str] = ("flair", "t1", "t2"),
        spacing: float | None = 1.0,
        like_key: str = "like",
        interpolation: str = "trilinear",
        register: bool = True,
        output_key: str = "image",
        coverage_key: str = "coverage",
        progress: bool = False,
        reference_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        check_spacing(spacing, "spacing")  # a bundle's --spacing, refused before any session is read
        self.modalities, self.spacing, self.like_key = list(modalities), spacing, like_key
        self.reference_key = reference_key
        self.interpolation = interpolation
        self.register, self.progress = as_flag(register, "register"), as_flag(progress, "progress")
        self.output_key, self.coverage_key = output_key, coverage_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        inputs = {k: d[k] for k in self.key_iterator(d) if d[k] is not None}
        like = d.get(self.like_key)
        named = d.get(self.reference_key) if self.reference_key else None
        spacing = None if like else self.spacing
        prepared = prepare_routine_scans(
            inputs, like, spacing, self.interpolation, self.register, self.progress, reference=named
        )
        affine = torch.as_tensor(np.asarray(prepared["affine"], dtype=np.float64))
        image = MetaTensor(torch.from_numpy(model_input(prepared, self.modalities)), affine=affine)
        reference = inputs[prepared["reference"]]
        image.meta["filename_or_obj"] = str(reference)
        image.meta["sform_code"] = prepared["space"]  # the grid's space, which the writer keeps
        info = {
            "bounds": {m: [float(v) for v in b] for m, b in prepared["bounds"].items()},
            "thick_axis": int(prepared["thick_axis"]),
            "near_isotropic": bool(prepared["near_isotropic"]),
            "given": list(inputs),
            "modalities": self.modalities,
            "transforms": {m: transform_spec(t) for m, t in prepared["transforms"].items()},
        }
        image.meta[CLINICAL_KEY] = json.dumps(info)
        d[self.output_key] = image
        d[self.coverage_key] = MetaTensor(torch.from_numpy(prepared["coverage"][None]), affine=affine)
        return d


def _clinical_info(image: Any) -> dict[str, Any]:
    return json.loads(image.meta[CLINICAL_KEY])


class ClinicalSliceInferer(Inferer):
    """The fused clinical network over each batch item ``(C, X, Y, Z)`` (from :class:`PrepareRoutineScansd`)
    slice by slice along ``slice_axis`` (default: the mean over the ``planes`` planes containing the reference
    scan's thick axis), in ``patch_size`` sliding windows (None: whole slices), by
    :func:`~mtsr_monai.inference.clinical.restore_planes`; same grid out. ``headroom`` (a checkpoint's
    ``intensity_headroom``, the random training recipe) divides the input (clipped to [0, 1] first) and
    multiplies the output (:func:`~mtsr_monai.inference.clinical.network_input`)."""

    def __init__(
        self,
        patch_size: int | None = 64,
        batch_size: int = 8,
        overlap: float = 0.25,
        slice_axis: int | None = None,
        progress: bool = False,
        headroom: float = 1.0,
        planes: int = 2,
    ) -> None:
        super().__init__()
        self.patch_size, self.batch_size, self.overlap = patch_size, int(batch_size), float(overlap)
        self.slice_axis, self.headroom = slice_axis, float(headroom)
        self.progress = as_flag(progress, "progress")
        self.planes = int(planes)
        if self.planes not in (1, 2) or slice_axis not in (None, 0, 1, 2):
            raise InputError(f"planes must be 1 or 2, slice_axis 0, 1, 2 or null: not {planes}, {slice_axis}")

    def axes_for(self, image: Any, affine: Any = None) -> tuple[int, ...]:
        if self.slice_axis is not None:
            return (int(self.slice_axis),)
        info = _clinical_info(image)
        axes = slice_axes_for(info["thick_axis"], self.planes, affine)
        warn_without_thick_axis(info.get("near_isotropic", False), axes)
        return axes

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> MetaTensor:
        outs = []
        for b in range(inputs.shape[0]):
            item = inputs[b]
            # a validation batch is a plain tensor in the training order: no affine, no reordering
            grid = item_affine(inputs, b) if isinstance(inputs, MetaTensor) else None
            out = self.headroom * restore_planes(
                network,
                network_input(item.detach().cpu().numpy(), self.headroom),
                self.axes_for(item, grid),
                grid,
                batch_size=self.batch_size,
                patch_size=self.patch_size,
                overlap=self.overlap,
                device=_network_device(network),
                progress=self.progress,
                desc="restoring",
            )
            restored = MetaTensor(torch.from_numpy(out), affine=torch.as_tensor(item_affine(inputs, b)))
            if isinstance(item, MetaTensor) and CLINICAL_KEY in item.meta:  # absent in validation batches
                restored.meta[CLINICAL_KEY] = item.meta[CLINICAL_KEY]
            outs.append(restored)
        return _batch(outs)


class RestoreClinicalIntensityd(MapTransform):
    """Each channel of ``keys`` back to its sequence's intensities (bounds from ``ref_key``'s meta), zero
    outside the scans' coverage and, for a given sequence, at its input's empty background
    (:func:`~mtsr_monai.inference.clinical.to_scanner_units`, as ``mtsr clinical-sr``): the clinical
    counterpart of :class:`~mtsr_monai.transforms.scale.RestoreIntensityd`."""

    def __init__(
        self, keys: KeysCollection = "pred", ref_key: str = "image", coverage_key: str = "coverage"
    ) -> None:
        super().__init__(keys)
        self.ref_key, self.coverage_key = ref_key, coverage_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        info = _clinical_info(d[self.ref_key])
        coverage = torch.as_tensor(d[self.coverage_key])[0].bool().cpu().numpy()
        image = torch.as_tensor(d[self.ref_key]).detach().cpu().numpy()
        for key in self.key_iterator(d):
            pred = d[key]
            out = pred.clone()
            for c, m in enumerate(info["modalities"]):
                bounds = info["bounds"].get(m, (0.0, 1.0))
                scaled_input = image[c] if m in info["given"] else None
                restored = to_scanner_units(pred[c].detach().cpu().numpy(), bounds, coverage, scaled_input)
                out[c] = torch.from_numpy(restored)
            d[key] = out
        return d


#: the name clinical_sr inference.yaml files written before MONAI's naming (a key-based dictionary
#: transform ends in ``d``) use, as ``IntensityRestored`` above
ClinicalRestored = RestoreClinicalIntensityd


class ClinicalConsistencyd(MapTransform):
    """The data-consistency gain step, after :class:`RestoreClinicalIntensityd`: each given sequence's
    channel of ``keys`` (scanner units, target grid) is multiplied by the one gain under which it,
    re-acquired with its input's slice profile (``profile``, ``thickness`` mm per sequence; default the slice
    spacing) on the input's grid, carries the input's signal
    (:func:`~mtsr_monai.inference.clinical.consistency_step`, which ``mtsr clinical-sr`` runs too), then,
    with ``curve``, mapped through the intensity curve that gives the re-acquired output its input's
    intensity distribution. ``gain=False, curve=False`` only measures.
    The gains, curves and consistency summaries go to ``<key>_consistency``; the inputs are re-read from
    the item's sequence paths."""

    def __init__(
        self,
        keys: KeysCollection = "pred",
        ref_key: str = "image",
        coverage_key: str = "coverage",
        gain: bool = True,
        profile: str = "gaussian",
        thickness: Mapping[str, float] | None = None,
        curve: bool = True,
    ) -> None:
        super().__init__(keys)
        self.ref_key, self.coverage_key = ref_key, coverage_key
        self.gain, self.curve = as_flag(gain, "intensity_gain"), as_flag(curve, "intensity_curve")
        self.profile, self.thickness = profile, thickness

    def session(self, d: Mapping[Hashable, Any], pred: Any) -> dict[str, Any]:
        """What :func:`~mtsr_monai.inference.clinical.consistency_check` reads of a prepared session."""
        # lazy: keeps SimpleITK out of this module's import
        from mtsr_monai.transforms.sitk_utils import metatensor_to_sitk

        info = _clinical_info(d[self.ref_key])
        return {
            "images": {m: metatensor_to_sitk(load_volume(d[m])) for m in info["given"]},
            "transforms": {m: transform_from_spec(t) for m, t in info.get("transforms", {}).items()},
            "affine": item_affine(pred, 0),
            "coverage": np.asarray(torch.as_tensor(d[self.coverage_key])[0].bool().cpu()),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        info = _clinical_info(d[self.ref_key])
        for key in self.key_iterator(d):
            pred = d[key]
            order = info["modalities"]
            outputs = {m: pred[order.index(m)].detach().cpu().float().numpy() for m in info["given"]}
            scaled, report = consistency_step(
                outputs, self.session(d, pred), self.gain, self.profile, self.thickness, self.curve
            )
            out = pred.clone()
            for m, vol in scaled.items():
                out[order.index(m)] = torch.from_numpy(vol).to(out.device, out.dtype)
            d[key] = out
            d[f"{key}_consistency"] = {
                m: {k: v for k, v in r.items() if k not in ("residual", "affine")} for m, r in report.items()
            }
        return d


class SaveClinicald(VolumeWriterd):
    """Write one volume per given sequence as ``<folder>/<sequence>.nii.gz`` from the channels of ``keys``,
    all of them or none, and no sequence of an earlier run left beside them; the folder is the item's
    ``path_key`` entry, else ``output_dir/<the item's session name or reference scan name>``. The paths go
    to ``<key>_paths``."""

    #: the sequences a session may hold, each written as ``<sequence>.nii.gz``
    SEQUENCES = ("flair", "t1", "t2")

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str = ".",
        path_key: str = "output",
        ref_key: str = "image",
    ) -> None:
        super().__init__(keys, output_dir, path_key, ref_key)

    def output_name(self, d: Mapping[Hashable, Any]) -> str:
        if isinstance(d.get(self.ref_key), MetaTensor):
            return super().output_name(d)
        # planned before the scans are read: the reference scan will name the folder then too
        given = {m: d[m] for m in self.SEQUENCES if d.get(m)}
        return volume_stem(str(given[reference_sequence(given)])) if given else super().output_name(d)

    def output_folder(self, d: Mapping[Hashable, Any]) -> Path:
        name = d.get("session") or self.output_name(d)
        return Path(d.get(self.path_key) or Path(self.output_dir) / str(name))

    def planned_outputs(self, d: Mapping[Hashable, Any]) -> OutputPlan:
        """What writing session ``d`` will create, checked before a bundle run."""
        out = self.output_folder(d)
        return OutputPlan(files=[out / f"{m}.nii.gz" for m in self.SEQUENCES if d.get(m)], folders=[out])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        info = _clinical_info(d[self.ref_key])
        out = self.output_folder(d)
        for key in self.key_iterator(d):
            pred = d[key]
            affine, space = item_affine(pred, 0), self.space(d)
            given = [(c, m) for c, m in enumerate(info["modalities"]) if m in info["given"]]
            with atomic_file_set(out, stale=tuple(f"{m}.nii.gz" for m in self.SEQUENCES)) as staging:
                for c, m in given:
                    save_volume(pred[c].float(), staging / f"{m}.nii.gz", affine, space=space)
            d[f"{key}_paths"] = {m: str(out / f"{m}.nii.gz") for _, m in given}
        return d
