"""Clinical-protocol restoration: routine thick-slice scans -> one target grid -> fused attention U-Net.

Pipeline of :func:`restore_clinical` (used by ``mtsr clinical-sr``):

1. load each routine scan on its own grid (raw headers, oblique slabs: all geometry stays in SimpleITK
   physical space);
2. the target grid: the grid of ``like`` or an isotropic ``spacing`` grid covering the reference scan's
   field of view (reference = FLAIR if given, else T1, else T2), axis-aligned with that scan's direction
   cosines so an oblique slab stays oblique;
3. rigid registration of every other sequence to the reference (intra-subject; the scanner header is the
   starting point), then resampling onto the target grid with the chosen interpolation;
4. per sequence robust scaling to [0, 1]; missing sequences of the fused model are zero-filled;
5. ``method="model"``: slice-wise (or sliding-window patch) inference in the two planes that contain the
   thick direction of the input, averaged (``planes=1``: the first only); the output is mapped back to the
   sequence's intensity scale;
6. data consistency: each output is re-acquired on its input's grid with the input's slice profile
   (:func:`mtsr_monai.transforms.protocol.acquire_like`); a model output is multiplied by the one
   ratio-of-sums gain (sum of the input / sum of that re-acquisition) that makes it match the input (the gain
   step: the output keeps the input's intensity scale), then through the intensity curve that gives the
   re-acquisition the input's intensity distribution (the curve step: an L1-trained network pulls rare bright
   tissue such as lesions toward the mean, which darkens the output; the acquired input still holds those
   levels), and ``re-acquired - input`` of what is written is saved as ``<seq>_consistency.nii.gz`` (input
   grid, input units) with summary numbers in ``clinical_sr.json``: large residuals mark detail the input does
   not support;
7. one volume per input sequence, named after it (``t1.nii.gz`` ...), written atomically on the target grid.
The interpolation methods ``trilinear`` / ``bspline`` / ``sinc`` skip step 5, the gain and the curve (the
paper's baselines).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtsr_monai.errors import InputError
from mtsr_monai.inference.bundle import load_weights_into, read_weights, weights_path
from mtsr_monai.inference.explain import explain_volume, write_explanations
from mtsr_monai.inference.slicewise import busy_batches
from mtsr_monai.io import (
    atomic_file_set,
    atomic_write_text,
    check_grid_size,
    check_spacing,
    load_volume,
    nifti_space,
    read_json_object,
    save_volume,
)
from mtsr_monai.io.geometry import AxisOrder
from mtsr_monai.io.outputs import glob_escape, same_file
from mtsr_monai.metrics.image import mae, nmse, psnr, ssim
from mtsr_monai.progress import StageBar
from mtsr_monai.transforms.foreground import object_mask
from mtsr_monai.transforms.intensity import robust_range, scale_to_range

#: the run summary written beside the outputs
SUMMARY_NAME = "clinical_sr.json"

if TYPE_CHECKING:
    import SimpleITK as sitk
    from ignite.engine import Engine
    from ignite.metrics import Average

logger = logging.getLogger(__name__)

METHODS = ("model", "trilinear", "bspline", "sinc")


# --------------------------------------------------------------------------------------- network side
@torch.no_grad()
def restore_volume(
    network: torch.nn.Module,
    volume: np.ndarray,
    axis: int,
    batch_size: int = 8,
    patch_size: int | None = None,
    overlap: float = 0.25,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "restoring",
) -> np.ndarray:
    """Run a 2D same-size network over a (C, X, Y, Z) volume in [0, 1], slice by slice along ``axis``.

    ``patch_size``: sliding-window inference with ``patch_size`` square patches (Gaussian-weighted stitching,
    MONAI ``sliding_window_inference``); None: full slices (the network pads them itself).
    Slices with no signal at all are passed through (zeros), without the network
    (:func:`~mtsr_monai.inference.slicewise.busy_batches`).
    """

    network.eval()
    device = torch.device(device)
    volume = np.asarray(volume, dtype=np.float32)
    out = np.zeros_like(volume)
    slices, out_slices = np.moveaxis(volume, axis + 1, 0), np.moveaxis(out, axis + 1, 0)  # n, C, h, w views
    for idx in busy_batches(slices, batch_size, 0.0, progress, desc):
        xs = torch.from_numpy(np.ascontiguousarray(slices[idx])).to(device)
        if patch_size:
            from monai.inferers import sliding_window_inference

            roi = (int(patch_size), int(patch_size))
            y = sliding_window_inference(xs, roi, 64, network, overlap=overlap, mode="gaussian")
        else:
            y = network(xs)
        out_slices[idx] = y.float().cpu().numpy()
    return out


def slice_axis_for(thick_axis: int, affine: Any = None) -> int:
    """The array axis to cut 2D slices along so that each slice contains the thick (blurred) axis: axial
    slices for a thick x or y, coronal slices for a thick z. Without the grid's ``affine`` the array axes
    are taken as x, y, z (axial 2, coronal 1); with it, the anatomical axes are found in whatever order the
    array stores them (a sagittal slab stored SAR gets axial slices too)."""
    if affine is None:
        return 1 if thick_axis == 2 else 2
    order = AxisOrder(affine)
    first = slice_axis_for(order.axis(thick_axis))
    return next(a for a in range(3) if order.axis(a) == first)


def slice_axes_for(thick_axis: int, planes: int = 2, affine: Any = None) -> tuple[int, ...]:
    """The slicing axes of the ``planes`` (1 or 2) planes that contain the thick axis: first
    :func:`slice_axis_for`'s (given the grid's ``affine``, in anatomical terms), then the other one."""
    if planes not in (1, 2):
        raise ValueError(f"planes must be 1 or 2, not {planes}")
    first = slice_axis_for(thick_axis, affine)
    other = next(a for a in range(3) if a not in (thick_axis, first))
    return (first, other)[:planes]


def restore_planes(
    network: torch.nn.Module,
    volume: np.ndarray,
    axes: Sequence[int],
    affine: np.ndarray | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """:func:`restore_volume` slice by slice along each of ``axes``, averaged (multi-planar fusion: each plane
    sees the thick axis against a different in-plane axis; their errors are partly independent). With the
    grid's ``affine``, the slices are cut in the training array order (flips and axis swaps only, undone on
    the output), so the same session stored in another axis order is restored alike."""
    desc = kwargs.pop("desc", "restoring")
    if affine is not None:
        order = AxisOrder(affine)
        out = restore_planes(network, order.apply(volume), [order.axis(a) for a in axes], desc=desc, **kwargs)
        return order.undo(out)

    def one_plane(k: int) -> np.ndarray:  # each pass named on its progress bar
        named = f"{desc}, plane {k + 1} of {len(axes)} (axis {axes[k]})" if len(axes) > 1 else desc
        return restore_volume(network, volume, axes[k], desc=named, **kwargs)

    out = one_plane(0)
    for k in range(1, len(axes)):  # summed in place: one plane costs no copy, two hold two volumes, not three
        out += one_plane(k)
    return out / len(axes) if len(axes) > 1 else out


def volume_metrics(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, channels: Sequence[int] | None = None
) -> dict[str, float]:
    """Brain-masked MAE, NMSE, PSNR (data range 1) and 3D SSIM averaged over ``channels`` (default all)."""

    rows = []
    for c in range(pred.shape[0]) if channels is None else channels:
        p, r = np.asarray(pred[c], np.float32), np.asarray(ref[c], np.float32)
        m = np.asarray(mask, bool)
        rows.append(
            {
                "mae": mae(p, r, m),
                "nmse": nmse(p, r, m),
                "psnr": psnr(p, r, m, 1.0),
                "ssim": ssim(p, r, m, 1.0),
            }
        )
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


def score_against_pair(pred: Any, pair: Mapping[str, Any]) -> dict[str, float]:
    """Metrics of a (C, X, Y, Z) output against a validation pair's ``hr``: mapped first by the pair's
    ``out_scale`` (into the reference's scale: an intensity drift costs PSNR; pairs of the fixed recipe
    have none) and restricted to its ``score_channels`` (the sequences given)."""
    pred = np.asarray(pred, np.float32)
    scale = pair.get("out_scale")
    if scale is not None:
        pred = pred * np.asarray(scale, np.float32)[:, None, None, None]
    return volume_metrics(pred, pair["hr"], pair["mask"], pair.get("score_channels"))


def volume_pair_batch(
    pair: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, Mapping[str, Any]]:
    """The evaluator's ``prepare_batch`` for one validation pair (the clinical evaluator runs unbatched):
    the interpolated input as a batch of one ``(1, C, X, Y, Z)``, and the pair itself as the target."""
    return torch.from_numpy(np.asarray(pair["lr"], np.float32))[None], pair


def score_restoration(data: dict[str, Any]) -> dict[str, Any]:
    """Evaluator postprocessing: ``scores`` = :func:`score_against_pair` of the restored volume (``pred``,
    a batch of one) against the pair in ``label``; the metrics average them over the pairs."""
    pred = data["pred"][0]
    pred = pred.detach().cpu().numpy() if torch.is_tensor(pred) else pred
    return {**data, "scores": score_against_pair(pred, data["label"])}


def mean_score(name: str, counts: Callable[[Mapping[str, Any]], bool] | None = None) -> Average:
    """Ignite's ``Average`` of score ``name`` of :func:`score_restoration` over the scored pairs (all-reduced
    across ranks when the pairs are shared out): training's validation metrics and the held-out evaluation's
    (:func:`~mtsr_monai.inference.heldout.mean_scores`). ``counts``: only the pairs (``label``) it accepts
    count (the held-out baselines' evaluator scores every interpolation's pairs). Ignite's
    ``NotComputableError`` when no pair counted. The sum runs in float64, in order."""
    from ignite.metrics import Average

    class PairAverage(Average):
        def update(self, output: float | None) -> None:
            if output is not None:  # None: a pair that does not count
                super().update(output)

    def score(output: Mapping[str, Any]) -> float | None:
        if counts is not None and not counts(output["label"]):
            return None
        return float(output["scores"][name])

    return PairAverage(output_transform=score)


class InterpolationBaseline:
    """Evaluator handler: the scores of the interpolated inputs themselves (the trilinear baseline),
    computed at the first validation and logged, then added to every validation's metrics as
    ``val_<name>_interpolated`` (attach it before the stats handlers that log the metrics)."""

    def __init__(self, pairs: Sequence[Mapping[str, Any]]) -> None:
        self.pairs = list(pairs)
        self.scores: dict[str, float] | None = None

    def attach(self, evaluator: Engine) -> None:
        from ignite.engine import Events

        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, evaluator) -> None:
        if self.scores is None and self.pairs:
            rows = [score_against_pair(p["lr"], p) for p in self.pairs]
            self.scores = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            logger.info("validation, interpolated input: %s", self.scores)
        for name, value in (self.scores or {}).items():
            evaluator.state.metrics[f"val_{name}_interpolated"] = value


# ------------------------------------------------------------------------------------ routine scans side
def isotropic_grid(reference: sitk.Image, spacing: float) -> sitk.Image:
    """An empty SimpleITK grid of ``spacing`` mm (InputError outside the accepted range, or for a grid too
    large to hold) with ``reference``'s direction covering its field of view,
    centred on it, so an oblique slab keeps its orientation and the same scan stored in another axis order
    gets the same grid. A field of view within 1/1000 of a voxel of a whole number of voxels (a float32
    voxel size: 0.7187503 mm x 128) gets that number, not one more, empty, row."""
    import SimpleITK as sitk

    check_spacing(spacing, "spacing")
    old_sp = np.asarray(reference.GetSpacing(), dtype=float)
    old_size = np.asarray(reference.GetSize(), dtype=float)
    size = [max(int(np.ceil(e / spacing - 1e-3)), 1) for e in old_sp * old_size]
    check_grid_size(size, f"the {spacing:g} mm grid over the reference scan")
    direction = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3)
    centre = np.asarray(reference.GetOrigin(), dtype=float) + direction @ (old_sp * (old_size - 1) / 2)
    origin = centre - direction @ (spacing * (np.asarray(size, dtype=float) - 1) / 2)
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing([float(spacing)] * 3)
    grid.SetDirection(reference.GetDirection())
    grid.SetOrigin([float(o) for o in origin])
    return grid


#: a scan whose largest voxel side is below this ratio of its smallest has no thick axis to restore
ISOTROPIC_RATIO = 1.5


def is_near_isotropic(image: sitk.Image) -> bool:
    """True for a scan without a thick slice direction (e.g. an already resampled 1 mm volume)."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    return float(spacing.max() / spacing.min()) < ISOTROPIC_RATIO


def warn_without_thick_axis(near_isotropic: bool, axes: Sequence[int]) -> None:
    """Say that the planes the model runs in were a guess: the reference scan has no thick axis."""
    if near_isotropic:
        logger.warning(
            "the reference scan is near-isotropic: it has no thick axis to restore, so the model runs in the "
            "planes through array axis %s of the target grid by default; give the slice axis of the thick "
            "acquisition (--slice-axis) or its original scan",
            ", ".join(str(a) for a in axes),
        )


def thick_axis_on_grid(image: sitk.Image, grid: sitk.Image) -> int:
    """Array axis of ``grid`` closest to the thickest voxel direction of ``image`` (its slice direction)."""
    sp = np.asarray(image.GetSpacing(), dtype=float)
    d_img = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    d_grid = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3)
    thick = d_img[:, int(np.argmax(sp))]
    return int(np.argmax(np.abs(d_grid.T @ thick)))


def _rigid_to_reference(images: Mapping[str, Any], m: str, reference: str) -> tuple[Any, Any]:
    """``(transform, report)`` of the rigid registration of scan ``m`` to the reference scan, from the
    headers' alignment; ``(None, None)`` (the headers, with a warning) where the registration fails."""
    # lazy: keeps SimpleITK, monai out of this module's import
    from mtsr_monai.transforms import registration as reg

    try:
        return reg.register(images[reference], images[m], kind="rigid", init="header")
    except RuntimeError as err:  # keep the header alignment rather than fail
        logger.warning("rigid registration of %s to %s failed (%s); using the headers", m, reference, err)
        return None, None


def _on_grid(image, grid, method: str, transform) -> tuple[np.ndarray, np.ndarray]:
    """``(scan resampled onto grid with method, zero outside the scan; inside mask)`` as (X, Y, Z) arrays,
    ``transform`` mapping grid points into the scan (None: the headers)."""
    import SimpleITK as sitk

    # lazy: keeps SimpleITK, monai out of this module's import
    from mtsr_monai.transforms import sitk_utils

    ones = sitk.Image(image.GetSize(), sitk.sitkFloat32) + 1.0
    ones.CopyInformation(image)  # a coverage mask: where this scan has data on the grid
    out = sitk_utils.resample(image, grid, transform, method, float32=True)
    coverage = sitk_utils.resample(ones, grid, transform, "nearest", float32=True)
    inside = sitk.GetArrayFromImage(coverage).transpose(2, 1, 0) > 0.5
    arr = sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(np.float32)
    arr[~inside] = 0.0
    return arr, inside


def reference_sequence(inputs: Mapping[str, Any], reference: str | None = None) -> str:
    """The sequence whose scan the others are registered to and whose name the outputs take."""
    return _scan_order(inputs, reference)[0]


def _scan_order(inputs: Mapping[str, Any], reference: str | None) -> list[str]:
    """The sequences given, the reference first: ``reference``, else the first given of FLAIR, T1, T2."""
    if not inputs:
        raise InputError("give at least one of --t1, --t2, --flair")
    if reference is not None and reference not in inputs:
        raise InputError(f"the reference {reference!r} is not among the scans given ({', '.join(inputs)})")
    routine = ("flair", "t1", "t2")
    order = [m for m in routine if m in inputs] + [m for m in inputs if m not in routine]
    return [reference, *[m for m in order if m != reference]] if reference else order


def prepare_routine_scans(
    inputs: Mapping[str, str | Path],
    like: str | Path | None = None,
    spacing: float | None = None,
    method: str = "trilinear",
    register: bool = True,
    progress: bool = True,
    reference: str | None = None,
) -> dict[str, Any]:
    """Steps 1-4 of the module docstring, the others registered to ``reference`` (default: the first given
    of FLAIR, T1, T2), whose field of view a ``spacing`` grid covers. Returns ``{"grid", "affine",
    "volumes": {mod: (X,Y,Z) in [0,1]}, "interpolated": {mod: the same scaling, unclipped},
    "bounds": {mod: (lo, hi)}, "coverage": (X,Y,Z) bool, "thick_axis", "near_isotropic", "reference",
    "registration", "images": {mod: input SimpleITK image}, "transforms": {mod: grid -> input points, or
    None}, "space" / "input_spaces": xform codes of grid / inputs}``; InputError for bad inputs."""
    from tqdm import tqdm

    # lazy: keeps SimpleITK, monai out of this module's import
    from mtsr_monai.transforms import sitk_utils

    if (like is None) == (spacing is None):
        raise InputError("give exactly one of --like and --spacing")
    order = _scan_order(inputs, reference)
    images = {m: sitk_utils.metatensor_to_sitk(load_volume(inputs[m])) for m in order}
    reference = order[0]
    like_grid = sitk_utils.metatensor_to_sitk(load_volume(like, validate=False)) if like is not None else None
    grid = like_grid if like_grid is not None else isotropic_grid(images[reference], float(spacing))
    volumes, interpolated, bounds, reports, transforms = {}, {}, {}, {}, {}
    coverage = None
    for m in tqdm(order, desc="to target grid", disable=not progress, unit="scan"):
        transform = None
        if register and m != reference:
            transform, report = _rigid_to_reference(images, m, reference)
            if report is not None:
                reports[m] = report
        transforms[m] = transform
        arr, inside = _on_grid(images[m], grid, method, transform)
        if not inside.any():
            raise InputError(f"{m} does not overlap the target grid", path=str(inputs[m]))
        lo, hi = robust_range(arr[inside])  # its own field: a wider grid's zeros would pick the rule
        volumes[m] = scale_to_range(arr, lo, hi)
        interpolated[m] = scale_to_range(arr, lo, hi, clip=False)  # the baselines: nothing clipped
        bounds[m] = (lo, hi)
        coverage = inside if coverage is None else coverage | inside
    return {
        "grid": grid,
        "affine": sitk_utils.sitk_affine(grid),
        "volumes": volumes,
        "interpolated": interpolated,
        "bounds": bounds,
        "coverage": coverage,
        "thick_axis": thick_axis_on_grid(images[reference], grid),
        "near_isotropic": is_near_isotropic(images[reference]),
        "reference": reference,
        "space": nifti_space(like if like is not None else inputs[reference]),
        "input_spaces": {m: nifti_space(inputs[m]) for m in order},  # of the consistency maps (input grids)
        "registration": reports,
        "images": images,
        "transforms": transforms,
    }


def transform_spec(transform: Any) -> dict[str, list[float]] | None:
    """A linear SimpleITK transform (the rigid registrations of :func:`prepare_routine_scans`) as JSON-able
    ``{"matrix", "translation", "center"}``, so it can ride in a MetaTensor's meta through a DataLoader."""
    if transform is None:
        return None
    return {
        "matrix": list(transform.GetMatrix()),
        "translation": list(transform.GetTranslation()),
        "center": list(transform.GetCenter()),
    }


def transform_from_spec(spec: Mapping[str, Sequence[float]] | None) -> Any:
    """The transform of :func:`transform_spec` back, as a SimpleITK ``AffineTransform`` (same mapping)."""
    if spec is None:
        return None
    import SimpleITK as sitk

    return sitk.AffineTransform(list(spec["matrix"]), list(spec["translation"]), list(spec["center"]))


def clinical_weights(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a clinical_sr weights file (``model``, ``network``, ``modalities``, ...), as the
    bundle configs read it; :class:`InputError` for a file that is missing, unreadable, not matching its
    declared sha256, or not a clinical_sr checkpoint (a bare state dict, another bundle's weights)."""
    ckpt = read_weights(path)
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in ("model", "network", "modalities")):
        raise InputError("not a clinical_sr checkpoint (needs 'model', 'network' and 'modalities')", path)
    return ckpt


def write_best_generator(network: torch.nn.Module, path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """The writer of the clinical bundle's ``ExportOnBest``: the best generator (fp32) with ``meta`` (its
    ``network`` arguments, ``modalities``, ``patch_size``, ``intensity_headroom``; the evaluator's
    ``validation`` scores), a checkpoint the bundle's inference and evaluation read as they read the shipped
    one (no critic: ``scripts/train_clinical.py export`` adds it and halves the weights for shipping)."""
    # lazy: the engines (Ignite) load only where training writes
    from mtsr_monai.engines.validation import save_state_dict

    return save_state_dict(network, path, meta, key="model")


def generator_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The generator state dict of a best-model file: a checkpoint of :func:`write_best_generator`, or the
    plain state dict that runs before session 48 wrote (DDP's ``module.`` prefix removed)."""
    saved = _saved_dict(path)
    state = saved["model"] if isinstance(saved.get("model"), dict) else saved
    return {k.removeprefix("module."): v for k, v in state.items()}  # an older multi-GPU run's DDP keys


def best_model_meta(path: str | Path) -> dict[str, Any]:
    """What a best-model file of :func:`write_best_generator` records besides the generator (``network``,
    ``modalities``, ``patch_size``, ``intensity_headroom``, ``iterations``, ...); ``{}`` for the plain state
    dict that runs before session 48 wrote."""
    saved = _saved_dict(path)
    return {k: v for k, v in saved.items() if k != "model"} if isinstance(saved.get("model"), dict) else {}


def _saved_dict(path: str | Path) -> dict:
    """The dict a weights file holds (:func:`read_weights`); InputError naming the file otherwise."""
    saved = read_weights(path)
    if not isinstance(saved, dict):
        raise InputError("holds no state dict", path)
    return saved


def _built(network_class: type, arguments: Mapping[str, Any], state: Mapping, path: str | Path) -> Any:
    """``network_class(**arguments)`` with the fp32 of ``state``; InputError naming ``path`` when the file's
    arguments or weights do not make that network (exit 2, not a traceback)."""
    try:
        network = network_class(**arguments)
    except (TypeError, ValueError) as exc:
        raise InputError(f"its arguments do not build a {network_class.__name__}: {exc}", path) from exc
    return load_weights_into(network, {k: v.float() for k, v in state.items()}, path)


def load_clinical_model(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Shipped checkpoint -> ``{"network", "critic", "modalities", "patch_size", ...}`` (fp32, eval mode).

    The file holds ``model`` (generator state dict, fp16), ``critic`` (state dict), ``network`` and
    ``critic_args`` (constructor arguments), ``modalities`` (channel order) and ``patch_size``."""
    # lazy: keeps monai out of this module's import
    from mtsr_monai.networks.attention_unet import AttentionGatedUNet

    # lazy: keeps monai out of this module's import
    from mtsr_monai.networks.critic import Critic

    ckpt = clinical_weights(path)
    out = dict(ckpt)
    out["network"] = _built(AttentionGatedUNet, ckpt["network"], ckpt["model"], path).to(device).eval()
    if "critic" in ckpt and "critic_args" in ckpt:
        out["critic"] = _built(Critic, ckpt["critic_args"], ckpt["critic"], path).to(device).eval()
    else:
        out["critic"] = None
    return out


def default_model_path() -> Path:
    """``clinical_sr/models/model.pt`` under :func:`mtsr_monai.inference.bundle.bundles_root`."""

    return weights_path("clinical_sr")


def network_input(volumes: np.ndarray, headroom: float = 1.0) -> np.ndarray:
    """Prepared volumes (1 at their 99.5 % level) -> the network's input: clipped to [0, 1], then divided
    by the checkpoint's ``intensity_headroom``. Training pairs keep voxels up to headroom x that level;
    passing those at inference scored lower on the validation subjects (session 53, docs/clinical_sr.md:
    FLAIR PSNR [0, 1] -0.24 dB, the output's bright tail compressed), so inference clips at the level and
    the validation pairs (:func:`~mtsr_monai.data.clinical.protocol_pair`) are scaled the same way."""
    return np.clip(np.asarray(volumes, np.float32), 0.0, 1.0) / float(headroom)


def model_input(prepared: Mapping[str, Any], modalities: Sequence[str]) -> np.ndarray:
    """(C, X, Y, Z) in the model's channel order; sequences not given are zero-filled."""
    shape = next(iter(prepared["volumes"].values())).shape
    return np.stack([prepared["volumes"].get(m, np.zeros(shape, np.float32)) for m in modalities])


def _model_outputs(
    ckpt: Mapping[str, Any],
    prepared: Mapping[str, Any],
    inputs: Mapping[str, Any],
    slice_axis: int | None,
    patches: bool,
    batch_size: int,
    device: str,
    progress: bool,
    planes: int = 2,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, tuple[int, ...]]:
    """Step 5: the network on the model's channels; returns ``({mod: output in the [0, 1] units of
    prepared["volumes"]}, model input, model output, slice axes)``. ``slice_axis`` None: the mean
    over the ``planes`` planes through the thick axis (:func:`slice_axes_for`). A checkpoint's
    ``intensity_headroom`` (the random recipe) divides the input and multiplies the output, as in its
    training."""

    modalities = list(ckpt["modalities"])
    unknown = [m for m in inputs if m not in modalities]
    if unknown:
        raise InputError(f"the model restores {modalities}, not {unknown}")
    headroom = float(ckpt.get("intensity_headroom", 1.0))
    x = network_input(model_input(prepared, modalities), headroom)
    if slice_axis is None:
        axes = slice_axes_for(prepared["thick_axis"], planes, prepared["affine"])
    else:
        axes = (int(slice_axis),)
    warn_without_thick_axis(slice_axis is None and prepared["near_isotropic"], axes)
    y = restore_planes(
        ckpt["network"],
        x,
        axes,
        prepared["affine"],
        batch_size=batch_size,
        patch_size=ckpt.get("patch_size") if patches else None,
        device=device,
        progress=progress,
        desc="restoring",
    )
    results = {m: y[c] * headroom for c, m in enumerate(modalities) if m in prepared["volumes"]}
    return results, x, y, tuple(axes)


def consistency_check(
    output: np.ndarray,
    prepared: Mapping[str, Any],
    modality: str,
    thickness: float | None = None,
    profile: str = "gaussian",
) -> dict[str, Any]:
    """The data consistency of one output (scanner units, on the target grid) with its routine input:
    ``acquire_like`` (the input's slice profile, on the input's grid) minus the input, where the input is
    first low-passed in-plane to the output grid's resolution when it is finer (so the map shows what the
    output changed through-plane, not in-plane detail a coarser grid cannot hold). Returns ``{"acquired",
    "input", "support"}`` arrays on the input's grid (support: inside the output's field of view and the
    input's foreground grown by 2 voxels)."""
    import SimpleITK as sitk
    from scipy.ndimage import binary_dilation, gaussian_filter

    # lazy: keeps monai, scipy out of this module's import
    from mtsr_monai.transforms.protocol import acquire_like

    # lazy: keeps SimpleITK, monai out of this module's import
    from mtsr_monai.transforms.sitk_utils import array_to_sitk

    image = prepared["images"][modality]
    transform = prepared["transforms"].get(modality)
    inverse = transform.GetInverse() if transform is not None else None
    out_img = array_to_sitk(np.asarray(output, np.float32), prepared["affine"])
    acquired = acquire_like(out_img, image, inverse, thickness, profile)
    inside = acquire_like(
        array_to_sitk(prepared["coverage"].astype(np.float32), prepared["affine"]),
        image,
        inverse,
        thickness,
        profile,
    )
    x = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    sp = np.asarray(image.GetSpacing(), float)
    out_sp = float(min(out_img.GetSpacing()))
    slice_ax = int(np.argmax(sp))
    sig = [
        0.0 if a == slice_ax or out_sp <= sp[a] else np.sqrt(out_sp**2 - sp[a] ** 2) / 2.3548 / sp[a]
        for a in range(3)
    ]
    x_lp = gaussian_filter(x, sig) if any(sig) else x
    # the object (the scaling's rule; exact zeros are background only where common) grown by 2 voxels:
    # signal the re-acquisition spreads past the object's edge (or that the output invented there) counts too
    core = (inside > 0.5) & object_mask(x, min_zero_share=0.05)
    support = core | ((inside > 0.5) & binary_dilation(core, iterations=2))
    # normalised by the profile's share inside the output's field of view (normalised convolution): a slice
    # at the edge of the field of view is not darkened by the zeros beyond it
    acquired = np.where(support, acquired / np.maximum(inside, 0.5), 0.0).astype(np.float32)
    return {"acquired": acquired, "input": x_lp, "support": support, "core": core}


def consistency_gain(check: Mapping[str, np.ndarray]) -> float:
    """The gain g that makes the re-acquired output carry the input's signal, ``sum(input) / sum(acquired)``
    over the support: the one intensity scale under which the output agrees with its input (the
    data-consistency gain step). A ratio of sums, not a least-squares fit: the slice profile and the
    interpolations preserve sums but not peaks, so a fit of ``g * acquired`` to the input would read the
    blur of a smooth output as a gain above 1."""
    a, x = check["acquired"][check["support"]], check["input"][check["support"]]
    den = float(a.sum(dtype=np.float64))
    return float(x.sum(dtype=np.float64) / den) if den > 0 else 1.0


#: where the intensity curve is read: the darkest 1 % of the foreground is partial volume at its edge, the
#: brightest 0.1 % single voxels; beyond these ends the curve continues as the end's ratio
CURVE_PERCENTILES = np.linspace(1.0, 99.9, 100)


#: the curve's points reported in ``clinical_sr.json``
SUMMARY_PERCENTILES = (1.0, 50.0, 99.0, 99.9)


def consistency_curve(
    check: Mapping[str, np.ndarray], gain: float = 1.0, percentiles: Sequence[float] = CURVE_PERCENTILES
) -> tuple[np.ndarray, np.ndarray]:
    """The monotone intensity map ``(levels of the output, levels of the input)`` under which ``gain *``
    the re-acquired output has the input's intensity distribution over the input's foreground (``core``:
    matched quantiles at ``percentiles``). Both sides are the same object voxels seen through the same
    slice profile, so the map corrects intensities, not resolution; the background and its edge stay out,
    as their share of the field of view would otherwise decide the darker quantiles."""
    core = check["core"]
    if not core.any():
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    levels = np.percentile(gain * check["acquired"][core], percentiles)
    targets = np.percentile(check["input"][core], percentiles)
    levels, first = np.unique(levels, return_index=True)
    return levels, np.maximum.accumulate(targets[first])


def apply_curve(volume: np.ndarray, curve: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``volume`` through the piecewise-linear ``curve`` (:func:`consistency_curve`); beyond the curve's
    ends, the end's ratio, so the map is continuous; values <= 0 (background) are kept."""
    levels, targets = curve
    v = np.asarray(volume, np.float32)
    ratio = [t / x if x > 0 else 1.0 for x, t in ((levels[0], targets[0]), (levels[-1], targets[-1]))]
    out = np.interp(v, levels, targets)
    out = np.where(v < levels[0], v * ratio[0], out)
    out = np.where(v > levels[-1], v * ratio[1], out)
    return np.where(v > 0, out, v).astype(np.float32)


def consistency_summary(check: Mapping[str, np.ndarray], gain: float = 1.0) -> dict[str, float]:
    """Summary numbers of ``gain * acquired - input`` over the support, in input units, and ``nrmse`` (RMSE
    over the input's robust 99.5 % level); ``median_ratio`` over the foreground itself."""

    sup, core = check["support"], check["core"]
    r = (gain * check["acquired"] - check["input"])[sup].astype(np.float64)
    if not r.size:
        return {"voxels": 0}
    level = robust_range(check["input"])[1]
    rmse = float(np.sqrt(np.mean(r**2)))
    return {
        "rmse": rmse,
        "nrmse": rmse / level,
        "bias": float(r.mean()),
        "p99_abs": float(np.percentile(np.abs(r), 99)),
        "median_ratio": float(np.median(gain * check["acquired"][core]) / np.median(check["input"][core])),
        "voxels": int(sup.sum()),
    }


def to_scanner_units(
    vol: np.ndarray,
    bounds: Sequence[float],
    coverage: np.ndarray,
    scaled_input: np.ndarray | None = None,
) -> np.ndarray:
    """A restored sequence from the [0, 1] units of the prepared scans back to its scanner units: zero outside
    the scans' ``coverage`` and, given the sequence's own ``scaled_input`` (same units and grid), at the exact
    zeros of a magnitude input (``lo`` 0: skull-stripped or masked scans and the padding around them). There
    the network leaves a faint haze (~1e-3 of the range) that would join the non-zero voxels, so every
    percentile taken over them downstream (robust [0, 1] scaling) would read the volume darker than it is.
    ``mtsr clinical-sr`` and the bundle's ``RestoreClinicalIntensityd`` both map through here."""
    lo, hi = (float(b) for b in bounds)
    keep = np.asarray(coverage, bool)
    if scaled_input is not None and lo == 0.0:
        keep = keep & (np.asarray(scaled_input) > 0)
    return np.where(keep, np.asarray(vol) * (hi - lo) + lo, 0.0).astype(np.float32)


def _to_scanner(vol: np.ndarray, prepared: Mapping[str, Any], m: str) -> np.ndarray:
    return to_scanner_units(vol, prepared["bounds"][m], prepared["coverage"], prepared["volumes"][m])


def consistency_step(
    outputs: Mapping[str, np.ndarray],
    prepared: Mapping[str, Any],
    gain_step: bool = True,
    profile: str = "gaussian",
    thickness: Mapping[str, float] | None = None,
    curve_step: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Step 6 for restored volumes ``{sequence: scanner units on the target grid}``: with ``gain_step`` each
    is multiplied by its :func:`consistency_gain`, with ``curve_step`` then mapped through its
    :func:`consistency_curve` (and re-acquired again, so the report describes what is returned). Returns
    ``(outputs, {sequence: {"gain", "curve" (when applied: output and input levels at the 1st, 50th, 99th
    and 99.9th percentiles), "residual": re-acquired output - input on the input's grid (zero outside the
    support), "affine": the input's, **consistency_summary}})``. The one implementation behind ``mtsr
    clinical-sr`` and the bundle's postprocessing (:class:`~mtsr_monai.inference.components.
    ClinicalConsistencyd`)."""
    # lazy: keeps SimpleITK, monai out of this module's import
    from mtsr_monai.transforms.sitk_utils import sitk_affine

    scaled: dict[str, np.ndarray] = {}
    report: dict[str, dict[str, Any]] = {}
    for m, vol in outputs.items():
        thick = (thickness or {}).get(m)
        check = consistency_check(vol, prepared, m, thick, profile)
        gain = consistency_gain(check) if gain_step else 1.0
        scaled[m] = np.asarray(vol, np.float32) * np.float32(gain)
        entry: dict[str, Any] = {"gain": gain}
        if curve_step:
            curve = consistency_curve(check, gain)
            scaled[m] = apply_curve(scaled[m], curve)
            levels, targets = consistency_curve(check, gain, SUMMARY_PERCENTILES)
            entry["curve"] = {"percentiles": list(SUMMARY_PERCENTILES), "output": levels.tolist()}
            entry["curve"]["input"] = targets.tolist()
            check, gain_left = consistency_check(scaled[m], prepared, m, thick, profile), 1.0
        else:
            gain_left = gain
        residual = np.where(check["support"], gain_left * check["acquired"] - check["input"], 0.0)
        report[m] = {
            **entry,
            "residual": residual.astype(np.float32),
            "affine": sitk_affine(prepared["images"][m]),
            **consistency_summary(check, gain_left),
        }
    return scaled, report


def _consistency_outputs(
    data: dict[str, np.ndarray],
    prepared: Mapping[str, Any],
    out_dir: Path,
    gain_step: bool,
    profile: str,
    thickness: Mapping[str, float] | None,
    reference: Mapping[str, np.ndarray] | None,
    curve_step: bool = False,
) -> dict[str, Any]:
    """:func:`consistency_step` (``gain_step``, ``curve_step``: change ``data`` in place), the consistency
    maps ``<m>_consistency.nii.gz`` (input grid, input units) and their summaries; ``reference``:
    the trilinear interpolation of the inputs (scanner units), whose consistency is reported alongside."""

    scaled, steps = consistency_step(data, prepared, gain_step, profile, thickness, curve_step)
    data.update(scaled)
    report: dict[str, Any] = {}
    for m, step in steps.items():
        residual, affine = step.pop("residual"), step.pop("affine")
        space = prepared.get("input_spaces", {}).get(m, 1)  # the map lies on its own input's grid
        path = save_volume(residual, out_dir / f"{m}_consistency.nii.gz", affine, space=space)
        entry = {"map": str(path), **step}
        if reference is not None:
            t = (thickness or {}).get(m)
            entry["trilinear"] = consistency_summary(consistency_check(reference[m], prepared, m, t, profile))
        report[m] = entry
    return report


def restore_clinical(
    inputs: Mapping[str, str | Path],
    output_dir: str | Path,
    like: str | Path | None = None,
    spacing: float | None = None,
    method: str = "model",
    model_path: str | Path | None = None,
    slice_axis: int | None = None,
    patches: bool = True,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    explain: bool = False,
    planes: int = 2,
    checkpoint: Mapping[str, Any] | None = None,
    register: bool = True,
    intensity_gain: bool = True,
    intensity_curve: bool = True,
    consistency: bool = True,
    slice_profile: str = "gaussian",
    slice_thickness: Mapping[str, float] | None = None,
) -> dict[str, Path]:
    """The whole pipeline (module docstring); returns ``{modality: written path}`` (and ``"json"``, the
    consistency maps ``"<m>_consistency"`` and explanation files).

    ``checkpoint``: the model already loaded by :func:`load_clinical_model` (load once, restore many
    sessions); ``model_path`` is then not read. ``intensity_gain``: the data-consistency gain step of model
    outputs (one ratio-of-sums gain per sequence so that the output, re-acquired with the input's slice
    profile, matches the input's intensities). ``intensity_curve``: the curve step of model outputs (the
    monotone intensity map giving the re-acquired output the input's intensity distribution, which undoes
    the network's dimming of bright tissue). ``consistency``: write ``<m>_consistency.nii.gz`` (re-acquired
    output minus input, input grid and units) and its summary in ``clinical_sr.json``; ``slice_profile``
    (``gaussian`` | ``boxcar``) and ``slice_thickness`` (mm per sequence; default: the slice spacing) describe
    the inputs' protocol. ``register=False``: trust the headers (simulated scans from one grid).
    ``planes``: without ``slice_axis``, the model runs in the 2 planes through the thick axis and their mean
    is kept (1: the first plane only, half the time).
    Over 60 lines: the module docstring's steps in order, each one call, under one progress bar that names
    the step running, kept in one place to read."""
    import time

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    start = time.time()
    model = method == "model"
    corrected = model and (intensity_gain or intensity_curve)
    measured = consistency or corrected
    stages = 2 + model * (1 + (checkpoint is None) + explain) + measured
    with StageBar(stages, "clinical-sr", enabled=progress) as bar:
        ckpt = None
        if model:
            if checkpoint is None:
                bar.next("model")
            ckpt = (
                checkpoint
                if checkpoint is not None
                else load_clinical_model(model_path or default_model_path(), device)
            )
        bar.next("scans onto the target grid")
        interp = "trilinear" if model else method
        prepared = prepare_routine_scans(inputs, like, spacing, interp, register=register, progress=progress)
        extra: dict[str, tuple[np.ndarray, Any]] = {}
        axes: tuple[int, ...] = ()
        if ckpt is None:
            results = dict(prepared["interpolated"])
        else:
            bar.next("restoring")
            results, x, y, axes = _model_outputs(
                ckpt, prepared, inputs, slice_axis, patches, batch_size, device, progress, planes
            )
            if explain:
                bar.next("attention maps, critic GradCAM")
                mods = list(ckpt["modalities"])
                grid = prepared["affine"]
                extra = explain_volume(
                    ckpt["network"],
                    ckpt["critic"],
                    x,
                    y,
                    axes[0],
                    mods,
                    device=device,
                    affine=grid,
                    patch_size=ckpt.get("patch_size") if patches else None,
                )
        out_dir = Path(output_dir)
        data = {m: _to_scanner(vol, prepared, m) for m, vol in results.items()}
        # all outputs or none, and none that an earlier run here wrote (another sequence, explanations) left
        earlier = _previous_outputs(out_dir, [*inputs.values(), like])
        stale = tuple(glob_escape(n) for n in earlier)
        with atomic_file_set(out_dir, stale=stale, earlier=earlier) as staging:
            report: dict[str, Any] = {}
            if measured:
                bar.next("data consistency" + (" and intensity" if corrected else ""))
                # the trilinear baseline as `--method trilinear` writes it (unclipped), not the clipped input
                reference = (
                    {m: _to_scanner(prepared["interpolated"][m], prepared, m) for m in data}
                    if ckpt is not None
                    else None
                )
                report = _consistency_outputs(
                    data,
                    prepared,
                    staging,
                    ckpt is not None and intensity_gain,
                    slice_profile,
                    slice_thickness,
                    reference,
                    ckpt is not None and intensity_curve,
                )
            bar.next("write")
            written: dict[str, Path] = {}
            for m, vol in data.items():
                written[m] = save_volume(
                    vol, staging / f"{m}.nii.gz", affine=prepared["affine"], space=prepared["space"]
                )
                if m in report:
                    written[f"{m}_consistency"] = Path(report[m]["map"])
            if extra:
                mods = list(ckpt["modalities"])
                maps = write_explanations(
                    extra, x, y, prepared["affine"], staging, mods, axes[0], space=prepared["space"]
                )
                written.update(maps)
            written = {k: out_dir / p.name for k, p in written.items()}  # where they will be
            for entry in report.values():
                entry["map"] = str(out_dir / Path(entry["map"]).name)
            summary = _run_summary(
                inputs, prepared, method, ckpt, model_path, axes, written, report, time.time() - start
            )
            written["json"] = out_dir / SUMMARY_NAME
            atomic_write_text(staging / SUMMARY_NAME, json.dumps(summary, indent=1))
    return written


def _previous_outputs(out_dir: Path, inputs: Sequence[Any] = ()) -> tuple[str, ...]:
    """The names of the files an earlier run wrote into ``out_dir``, as its summary lists them (only these
    are replaced or removed: a folder may hold other files); those that are this run's ``inputs`` now (an
    earlier output given as ``--like`` or a sequence) are kept."""
    outputs = (read_json_object(out_dir / SUMMARY_NAME) or {}).get("outputs", {})
    names = {Path(str(p)).name for p in outputs.values()} if isinstance(outputs, dict) else set()
    given = [p for p in inputs if isinstance(p, (str, os.PathLike))]

    def is_input(name: str) -> bool:
        return any(same_file(out_dir / name, g) for g in given)

    return tuple(n for n in sorted(names) if n != SUMMARY_NAME and not is_input(n))


def _run_summary(
    inputs: Mapping[str, Any],
    prepared: Mapping[str, Any],
    method: str,
    ckpt: Mapping[str, Any] | None,
    model_path: str | Path | None,
    axes: Sequence[int],
    written: Mapping[str, Path],
    report: Mapping[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """What ``clinical_sr.json`` holds: inputs and their grids, the target grid, the method, outputs, the
    consistency summaries (and gains), registration reports, run time."""
    grid = prepared["grid"]
    scans = {}
    for m, path in inputs.items():
        img = prepared["images"][m]
        scans[m] = {"path": str(path), "size": list(img.GetSize()), "spacing": list(img.GetSpacing())}
    return {
        "method": method,
        "model": None if ckpt is None else str(model_path or default_model_path()),
        "intensity_headroom": None if ckpt is None else float(ckpt.get("intensity_headroom", 1.0)),
        "inputs": scans,
        "reference": prepared["reference"],
        "grid": {"size": list(grid.GetSize()), "spacing": list(grid.GetSpacing())},
        "thick_axis": prepared["thick_axis"],
        "slice_axis": axes[0] if axes else None,  # the first plane's (the explanations' one)
        "slice_axes": list(axes),  # every plane the model ran in (empty: an interpolation)
        "outputs": {k: str(v) for k, v in written.items()},
        "consistency": report,
        "registration": {
            m: dict(r) if isinstance(r, Mapping) else str(r) for m, r in prepared["registration"].items()
        },
        "seconds": round(seconds, 1),
    }
