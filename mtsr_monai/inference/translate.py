"""Modality translation of whole volumes with a BicycleGAN generator: several plausible outputs per input.

A volume is scaled to [0, 1] by robust percentiles (the training scaling,
:func:`mtsr_monai.transforms.intensity.robust_scale`), brought to the models' training array order (L, P, S:
flips and axis swaps only, undone on the outputs), cut into 2D slices normal to ``axis`` (axial from the
header by default), each slice zero-padded and translated with ``G(A, z)`` at its own voxel size (weights with
``native_resolution``, as shipped: padded to a multiple of ``image_size``; older weights: padded to a square,
resized to ``image_size`` and back), then un-padded, so the output is on exactly the input's grid (same shape
and affine). One latent code ``z`` is used for all the slices of a sample, so each sample is one coherent
volume; N codes give N samples, their per-voxel mean and standard deviation (where the model is unsure).
Outputs are in [0, 1] (target modality, arbitrary units); voxels that are background in the input (zero after
scaling, e.g. outside a skull-stripped brain) stay 0.

Weights files (``bundles/mtsr_mt/models/<source>_to_<target>.pt``) hold ``{"generator": fp16 state dict,
"meta": {source, target, method, nz, ngf, image_size, ...}}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtsr_monai.data.datalist import check_translation_pair
from mtsr_monai.engines.bicyclegan import export_generator  # noqa: F401 (the weights format, public here)
from mtsr_monai.errors import InputError
from mtsr_monai.inference.brain_mask import brain_mask_for
from mtsr_monai.inference.bundle import bundle_components, infer_item, read_weights, weights_path
from mtsr_monai.inference.slicewise import busy_batches
from mtsr_monai.io.geometry import AxisOrder, resolve_axis
from mtsr_monai.io.validation import check_volume_array
from mtsr_monai.io.volume import voxel_sizes
from mtsr_monai.networks.bicyclegan import LatentUNetGenerator
from mtsr_monai.precision import autocast
from mtsr_monai.transforms.intensity import MEDIAN_LEVEL, robust_range, robust_scale, scale_to_range

#: how weights files are made: the bundle's training config (scripts/train_mt.py runs it on the shared data)
TRAIN_HINT = (
    "train one with `python -m monai.bundle run training --config_file bundles/mtsr_mt/configs/train.yaml`, "
    "or scripts/train_mt.py, which runs that config on the shared data's split"
)

#: pixels the generator sees at once: 16 padded BraTS slices (256 x 256), the batch BraTS volumes always had
MAX_BATCH_PIXELS = 16 * 256 * 256


def bundle_dir() -> Path:
    """The MT bundle folder, ``mtsr_mt`` under :func:`mtsr_monai.inference.bundle.bundles_root`."""
    return weights_path("mtsr_mt", "")


def default_weights(source: str, target: str) -> Path:
    """The shipped ``source -> target`` weights file of the MT bundle (checked when read)."""
    return weights_path("mtsr_mt", f"models/{source}_to_{target}.pt")


def generator_from_meta(meta: Mapping[str, Any]) -> LatentUNetGenerator:
    """The (untrained) generator a weights file's ``meta`` describes: the one place the MT architecture is
    built from weights, for :func:`load_translator` and ``configs/inference.yaml#network_def`` alike, so the
    network the zoo's tools check is the one inference runs. Files older than ``max_mult`` / ``upsample``
    were trained with 8 and ``basic``. InputError when the meta lacks the generator's size."""
    try:
        sizes = {k: int(meta[k]) for k in ("nz", "ngf", "image_size")}
    except (KeyError, TypeError, ValueError) as err:
        # the bundle's network_def meets a foreign file here, before load_translator's own check
        raise InputError(
            f"not a translation weights file: no usable nz, ngf, image_size in its meta ({err!r})"
        ) from err
    return LatentUNetGenerator(
        **sizes, max_mult=int(meta.get("max_mult", 8)), upsample=str(meta.get("upsample", "basic"))
    )


def load_translator(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Generator (eval mode, float32) and its metadata from a weights file; InputError if unusable."""

    ckpt = read_weights(path, f"no such weights file ({TRAIN_HINT})")
    try:
        meta = dict(ckpt.get("meta", {}))
        net = generator_from_meta(meta)
        net.load_state_dict({k: v.float() for k, v in ckpt["generator"].items()})
    except InputError as err:
        raise InputError(err.problem, path) from err
    except (KeyError, RuntimeError, ValueError, EOFError, OSError) as err:
        raise InputError(f"not a translation weights file: {err}", path) from err
    return net.to(device).eval(), meta


def latent_codes(
    n: int, nz: int, seed: int | None = None, prior: Mapping[str, Sequence[float]] | None = None
) -> np.ndarray:
    """``n`` codes from N(0, I), reproducible with ``seed``. With ``prior`` (a weights file's meta
    ``code_prior``: per-dimension ``mean`` and ``std``) they are drawn from N(mean, diag(std^2)) instead:
    where the encoder puts real targets, which N(0, I) can miss when the KL term is weak (docs/mt.md,
    Session 21). The same seed gives the same standard draws either way. InputError for ``n < 1`` or a
    negative seed."""
    if int(n) < 1:
        raise InputError(f"--samples must be >= 1, got {n}")
    if seed is not None and int(seed) < 0:  # numpy's generators take seeds >= 0 only
        raise InputError(f"--seed must be >= 0, got {seed}")
    codes = np.random.default_rng(seed).standard_normal((int(n), nz))
    if prior:
        mean, std = check_code_prior(prior, nz)
        codes = mean + std * codes
    return codes.astype(np.float32)


def check_code_prior(prior: Mapping[str, Sequence[float]], nz: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` of a ``code_prior``, each ``nz`` finite numbers, std > 0; InputError otherwise."""
    try:
        mean = np.asarray(prior["mean"], dtype=np.float64)
        std = np.asarray(prior["std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"code_prior needs numeric 'mean' and 'std' lists: {err}") from err
    if mean.shape != (nz,) or std.shape != (nz,):
        raise InputError(f"code_prior mean and std must have {nz} values, got {mean.shape} and {std.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise InputError("code_prior mean must be finite and std finite and > 0")
    return mean, std


def _to_square(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    h, w = x.shape[-2:]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    pad = (left, s - w - left, top, s - h - top)
    return torch.nn.functional.pad(x, pad), pad


def translate_slices(
    generator: torch.nn.Module,
    slices: torch.Tensor,
    codes: torch.Tensor,
    image_size: int,
    batch_size: int = 16,
    native_resolution: bool = False,
    precision: str = "auto",
) -> torch.Tensor:
    """(S, H, W) slices in [0, 1] and (N, nz) codes -> (N, S, H, W) translations in [0, 1].

    ``precision``: ``auto`` runs the generator in bf16 on a CPU with native bf16 (about 2x faster) and fp16
    on CUDA (:mod:`mtsr_monai.precision`).
    ``native_resolution``: the model was trained on patches at the data's own voxel size (1 mm), so each
    slice is only zero-padded to a multiple of ``image_size`` (the U-Net's depth), never resized.
    """
    import torch.nn.functional as F

    device = next(generator.parameters()).device
    n_slices, h, w = slices.shape
    out = torch.zeros((codes.shape[0], n_slices, h, w), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, n_slices, batch_size):
            x = slices[start : start + batch_size, None].to(device)
            sq, (left, right, top, bottom) = _to_square(x)
            s = sq.shape[-1]
            if native_resolution:
                extra = -s % image_size
                small = F.pad(sq, (0, extra, 0, extra)) * 2 - 1
            else:
                mode = "area" if s > image_size else "bilinear"
                small = F.interpolate(sq, size=(image_size, image_size), mode=mode) * 2 - 1
            for i, z in enumerate(codes):
                with autocast(device, precision):
                    y = generator(small, z[None].expand(small.shape[0], -1).to(device)).float()
                if native_resolution:
                    y = (y[..., :s, :s] + 1) / 2
                else:
                    y = F.interpolate((y + 1) / 2, size=(s, s), mode="bilinear", align_corners=False)
                out[i, start : start + x.shape[0]] = y[:, 0, top : s - bottom, left : s - right].float().cpu()
    return out.clamp_(0.0, 1.0)


def volume_settings(meta: dict) -> dict[str, Any]:
    """The :func:`translate_volume` keywords a weights file's meta decides (older files lack some keys)."""
    return {
        "native_resolution": bool(meta.get("native_resolution", False)),
        "target_scaling": str(meta.get("target_scaling", "robust")),
        "target_level": None if meta.get("target_level") is None else float(meta["target_level"]),
        "tissue_prior": meta.get("tissue_prior"),
    }


def restore_target_scaling(
    samples: np.ndarray, target_scaling: str = "robust", target_level: float | None = None
) -> np.ndarray:
    """(N, ...) samples (background 0) in the robust convention of every other volume in [0, 1].

    A model trained on median-scaled targets (``target_scaling: median`` in its meta) writes tissue at one
    level. Without ``target_level`` each sample is scaled by its own 99.5 % level, as the real target would
    be, so a predicted lesion or CSF sets the scale as the real one does (FLAIR, T2). With it (the weights'
    meta: the training targets' typical brain median in the robust convention,
    :func:`~mtsr_monai.data.slices.typical_brain_level`), the tissue level is mapped there: a T1's 99.5 %
    level is white matter, which a sample only approximates, so its own level would misplace the volume."""
    if target_scaling == "robust":
        return samples
    if target_scaling != "median":
        raise InputError(f"unknown target scaling {target_scaling!r} in the weights' metadata")
    if target_level is not None:
        return np.clip(samples * (float(target_level) / MEDIAN_LEVEL), 0.0, 1.0).astype(np.float32)
    return np.stack([robust_scale(torch.as_tensor(s)).numpy() for s in samples])


def object_scaling(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scaled, inside)``: ``volume`` scaled to [0, 1] by :func:`robust_range` inside its object, 0 outside
    (the training data's background). The object is what is above 0 in a magnitude image, what is not 0 in
    a signed one (a z-scored brain on a zero background, whose dark tissue lies below 0)."""
    lo, hi = robust_range(volume)
    inside = volume > 0 if lo == 0 else volume != 0
    return np.where(inside, scale_to_range(volume, lo, hi, clip=True), 0.0).astype(np.float32), inside


def warn_about_pixels(affine: np.ndarray, through: int, native_resolution: bool) -> None:
    """Warn when the slices to translate have pixels unlike the training slices' (1 x 1 mm, square): the
    generator sees each slice as an image of square pixels (and, for weights trained at their native
    resolution, of 1 mm ones), so a 4 x 1 mm slice comes out stretched."""
    import warnings

    sizes = sorted(float(voxel_sizes(np.asarray(affine))[k]) for k in range(3) if k != through)
    unlike = sizes[1] / sizes[0] > 1.5 or (native_resolution and not 0.5 <= sizes[0] <= sizes[1] <= 2.0)
    if unlike:
        warnings.warn(
            f"the slices to translate have {sizes[0]:.2f} x {sizes[1]:.2f} mm pixels, the training slices "
            "1 x 1 mm: the outputs will be distorted; resample the input in-plane to about 1 mm first",
            stacklevel=3,
        )


def translate_volume(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    generator: torch.nn.Module,
    image_size: int,
    codes: np.ndarray,
    axis: str | int = "axial",
    batch_size: int = 16,
    progress: bool = True,
    mask: np.ndarray | None = None,
    native_resolution: bool = False,
    precision: str = "auto",
    target_scaling: str = "robust",
    target_level: float | None = None,
    tissue_prior: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Translate a 3D volume with each code: returns (N, X, Y, Z) float32 in [0, 1] on the input's grid.

    ``target_scaling``, ``target_level``: the weights' meta keys (:func:`restore_target_scaling`).
    ``tissue_prior`` (meta key; None: the generator alone): each sample is averaged with the input's tissue
    lookup (:func:`mtsr_monai.inference.tissue_lookup.blend_with_tissue_lookup`).

    ``mask`` (brain mask on the same grid): voxels outside are set to 0 before scaling and in the outputs, so
    a non-skull-stripped or noisy-background input looks like the skull-stripped training data.
    """

    arr = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    check_volume_array(arr)
    codes = checked_codes(codes, getattr(generator, "nz", None))
    if mask is not None:
        if np.shape(mask) != arr.shape:
            raise InputError(f"mask shape {np.shape(mask)} differs from the image's {arr.shape}")
        arr = np.where(np.asarray(mask) > 0, arr, 0).astype(np.float32)
    # the generators are not flip- or transpose-invariant: the training array order (flips, swaps; undone)
    order = AxisOrder(affine)
    warn_about_pixels(affine, resolve_axis(np.asarray(affine), axis), native_resolution)
    through = order.axis(resolve_axis(np.asarray(affine), axis))
    arr = order.apply(arr)
    slices, foreground = (
        torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, through, 0))) for v in object_scaling(arr)
    )
    codes_t = torch.as_tensor(codes, dtype=torch.float32)
    out = torch.zeros((len(codes_t), *slices.shape), dtype=torch.float32)
    # the generator's memory grows with the pixels of a batch: the padded square it sees
    side = max(slices.shape[1:]) + (-max(slices.shape[1:]) % image_size) if native_resolution else image_size
    batches = busy_batches(slices, batch_size, 0.0, progress, "translate", MAX_BATCH_PIXELS, side * side)
    for batch in batches:
        idx = torch.from_numpy(batch)
        out[:, idx] = translate_slices(generator, slices[idx], codes_t, image_size, batch_size,
                                       native_resolution=native_resolution, precision=precision)  # fmt: skip
    out = (out * foreground[None]).numpy()  # background stays 0
    out = restore_target_scaling(out, target_scaling, target_level)
    out = np.moveaxis(out, 1, through + 1)
    if tissue_prior:
        # lazy: the EM segmentation is needed only by weights with a tissue prior
        from mtsr_monai.inference.tissue_lookup import blend_with_tissue_lookup

        out = blend_with_tissue_lookup(out, arr, tissue_prior)
    return order.undo(out)


def sample_statistics(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and (population) standard deviation across the first axis."""
    return samples.mean(axis=0), samples.std(axis=0)


def prepare_translation(
    source: str,
    target: str,
    weights: str | os.PathLike | None = None,
    codes: np.ndarray | Sequence[Sequence[float]] | None = None,
    samples: int = 5,
    seed: int | None = None,
    device: str = "cpu",
    translator: tuple[torch.nn.Module, dict] | None = None,
) -> tuple[torch.nn.Module, dict, np.ndarray, Path]:
    """What every translation checks and loads before any long computation: ``(generator, meta, codes,
    weights path)``. The modalities must be known and differ; the generator (``translator``, already loaded
    by :func:`load_translator`, or loaded from ``weights``, default the shipped ``source_to_target.pt``)
    must translate ``source -> target``; the codes are ``codes`` (``nz``-vectors) or ``samples`` draws
    seeded by ``seed``. InputError otherwise."""
    check_translation_pair(source, target)
    weights = Path(weights) if weights else default_weights(source, target)
    generator, meta = translator if translator is not None else load_translator(weights, device)
    if meta.get("source", source) != source or meta.get("target", target) != target:
        raise InputError(
            f"weights translate {meta.get('source')} -> {meta.get('target')}, not {source} -> {target}",
            weights,
        )
    nz = int(meta["nz"])
    if codes is None:
        codes = latent_codes(samples, nz, seed, meta.get("code_prior"))
    return generator, meta, checked_codes(codes, nz), weights


#: the largest latent value accepted: codes are draws of N(0, I) (or of the encoder's posterior), and one
#: far outside it is a typing error, not a sample (1e300, NaN gave NaN volumes)
MAX_CODE = 100.0


class CodesFromFile(np.ndarray):
    """Latent codes read from a file, which they remember (``source``), so that the check against the
    model's ``nz``, made only once the model is loaded, still names the file."""

    source: Path | None = None

    @classmethod
    def of(cls, codes: np.ndarray, source: str | os.PathLike) -> CodesFromFile:
        array = np.asarray(codes).view(cls)
        array.source = Path(source)
        return array


def checked_codes(codes: Any, nz: int | None, path: str | os.PathLike | None = None) -> np.ndarray:
    """``codes`` as an ``(N, nz)`` float32 array (any width for ``nz`` None) of finite numbers within
    +-:data:`MAX_CODE`; InputError otherwise, naming ``path`` (the file they came from: by default the
    ``source`` of :class:`CodesFromFile` codes) when given."""
    path = path if path is not None else getattr(codes, "source", None)
    try:
        array = np.asarray(codes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(f"latent codes must be numbers: {err}", path) from err
    width = array.shape[-1] if nz is None and array.ndim == 2 else nz
    if array.ndim != 2 or array.shape[1] != width or len(array) == 0:
        what = f"{nz}-vectors (the model's nz)" if nz else "vectors of one length"
        raise InputError(f"latent codes must be a list of {what}, got shape {array.shape}", path)
    if not np.isfinite(array).all() or np.abs(array).max() > MAX_CODE:
        raise InputError(f"latent codes must be finite numbers within +-{MAX_CODE:g}", path)
    return np.asarray(array, dtype=np.float32)


def translate_file(
    input_path: str | os.PathLike,
    source: str,
    target: str,
    output_dir: str | os.PathLike,
    samples: int = 5,
    seed: int | None = None,
    codes: np.ndarray | Sequence[Sequence[float]] | None = None,
    weights: str | os.PathLike | None = None,
    axis: str | int = "axial",
    device: str = "cpu",
    progress: bool = True,
    mask_path: str | os.PathLike | None = None,
    translator: tuple[torch.nn.Module, dict] | None = None,
) -> dict[str, Any]:
    """``mtsr translate``: write ``sample_0..N-1``, ``mean`` and ``std`` NIfTIs (input geometry) and
    ``codes.json`` (the latent codes used, to reproduce a sample). Nothing is written on bad input.
    ``mask_path``: a brain mask on the input's grid, None, or ``"auto"`` (one is estimated for an input
    with its skull and written as ``brain_mask.nii.gz``: :mod:`~mtsr_monai.inference.brain_mask`).
    Returns a summary dict with the output paths. ``translator``: ``(generator, meta)`` already loaded by
    :func:`load_translator` (load once, translate many volumes); ``weights`` is then only recorded."""
    generator, meta, codes, weights = prepare_translation(
        source, target, weights, codes, samples, seed, device, translator
    )
    # the bundle's own preprocessing / inferer / postprocessing (configs/inference.yaml), as
    # `python -m monai.bundle run inference` and MONAI Label run them, with this call's settings

    overrides = {"mt_meta": dict(meta), "checkpoint": str(weights), "source": source, "target": target}
    overrides.update({"codes": codes.tolist(), "seed": seed, "axis": axis, "progress": progress})
    overrides["mask"] = "none"  # resolved here (brain_mask_for): the bundle's own `mask: auto` step is off
    components = bundle_components(bundle_dir(), overrides, inferer="SliceTranslationInferer")
    item = {"image": str(input_path), "output": str(output_dir)}
    with brain_mask_for(input_path, mask_path, output_dir, source, progress) as mask:
        if mask.path is not None:
            item["mask"] = mask.path
        done = infer_item(components, item, generator)
    result = done["pred"].detach().cpu().numpy()
    mean, std = done["pred_statistics"]["mean"], done["pred_statistics"]["std"]
    summary = {
        "input": str(input_path),
        "source": source,
        "target": target,
        "weights": str(weights),
        "method": meta.get("method"),
        "seed": seed,
        "codes": codes.tolist(),
        "outputs": done["pred_paths"],
        "mean_std_in_foreground": float(std[mean > 0].mean()) if (mean > 0).any() else 0.0,
        "mask": mask.path,
        "mask_note": mask.note,
        "mask_failed": mask.failed,
    }
    affine = np.asarray(done["pred"].affine, dtype=np.float64)
    summary["_arrays"] = {"samples": result, "mean": mean, "std": std, "affine": affine}
    return summary
