"""Registration to a template with SimpleITK: helpers and the dictionary transform ``RegisterToTemplated``.

Conventions. MONAI MetaTensors hold arrays indexed (i, j, k) with a RAS affine; SimpleITK images hold
LPS geometry (origin, spacing, direction) and numpy views indexed (k, j, i). ``metatensor_to_sitk`` and
``sitk_to_metatensor`` convert exactly between the two (oblique grids included).

A SimpleITK transform found by ``register(fixed, moving)`` maps *fixed* physical points to *moving*
physical points, which is what resampling the moving image onto the fixed grid needs. Chaining
"modality -> reference -> template" therefore composes as ``T_mod(T_ref(p))`` for a template point p.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from mtsr_monai.errors import InputError

#: data-dict key holding the SimpleITK transforms (modality -> transform from output grid to its input)
TRANSFORMS_KEY = "preprocess_transforms"
#: data-dict key holding the transform from the current output grid's physical space to template space
TO_TEMPLATE_KEY = "preprocess_to_template"
#: data-dict key holding the parameters every preprocessing step applied (for the JSON sidecar)
PARAMS_KEY = "preprocess_params"

REGISTRATIONS = ("rigid", "affine", "nonlinear", "none")
_LPS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------------------------------
# MetaTensor <-> SimpleITK


def _as_affine(affine: Any) -> np.ndarray:
    if isinstance(affine, torch.Tensor):
        affine = affine.detach().cpu().numpy()
    return np.asarray(affine, dtype=np.float64)


def array_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A 3D (i, j, k) array with a RAS affine as a SimpleITK image with the same physical geometry."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    affine = _as_affine(affine)
    lps = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in direction.ravel()])
    image.SetOrigin([float(o) for o in _LPS @ affine[:3, 3]])
    return image


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The RAS 4x4 affine of a SimpleITK image (index (i, j, k) -> RAS mm)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return affine


def metatensor_to_sitk(image: torch.Tensor | np.ndarray, affine: np.ndarray | None = None) -> sitk.Image:
    """A 3D or single-channel (1, X, Y, Z) MetaTensor as a float32 SimpleITK image (LPS geometry)."""
    if affine is None:
        if not isinstance(image, MetaTensor):
            raise ValueError("metatensor_to_sitk needs an affine for a plain array or tensor")
        affine = image.affine
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(f"expected one channel, got shape {array.shape}; convert channels one at a time")
        array = array[0]
    return array_to_sitk(array.astype(np.float32, copy=False), affine)


def sitk_to_metatensor(
    image: sitk.Image, channel_first: bool = True, meta: Mapping | None = None
) -> MetaTensor:
    """A SimpleITK image as a MetaTensor (1, X, Y, Z) (or (X, Y, Z)) with its RAS affine."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    if channel_first:
        array = array[None]
    affine = torch.as_tensor(sitk_affine(image), dtype=torch.float64)
    out = MetaTensor(torch.as_tensor(np.ascontiguousarray(array)), affine=affine, meta=dict(meta or {}))
    out.affine = affine  # meta["affine"] from a copied dict must not win over the new geometry
    return out


# --------------------------------------------------------------------------------------------------
# registration helpers


def load_template(path: str | Path | None = None) -> sitk.Image:
    """The registration target as float32: the MNI152 2009a 1 mm T1 from nilearn unless ``path`` is given."""
    from mtsr_monai.data.template import template_path
    from mtsr_monai.io import load_volume

    volume = load_volume(template_path("t1") if path is None else path)
    return metatensor_to_sitk(volume)


def looks_skull_stripped(image: sitk.Image, fraction: float = 0.3) -> bool:
    """True when a large share of voxels sits exactly at the minimum (a masked background)."""
    array = sitk.GetArrayViewFromImage(image)
    return bool((array == array.min()).mean() > fraction)


class RegistrationError(InputError, RuntimeError):
    """The input cannot be registered (too small, or no overlap): a refusal (exit 2) for the commands, and
    a RuntimeError for callers that fall back to the headers when a registration fails."""


#: ITK's Gaussian smoothing, run on every image of a registration, needs 4 voxels along each axis
ITK_MIN_VOXELS = 4


def min_voxels(shrink_factors: Sequence[int] = (4, 2)) -> int:
    """Voxels per axis for 4 voxels at the pyramid's coarsest level: what ``mtsr preprocess`` asks of its
    inputs, so that registering them to a whole-head template is not left to a few voxels."""
    return ITK_MIN_VOXELS * max(int(s) for s in shrink_factors)


def check_registrable(
    size: Sequence[int],
    shrink_factors: Sequence[int] = (4, 2),
    what: str = "image",
    path: str | Path | None = None,
    minimum: int | None = None,
) -> None:
    """Refuse (:class:`RegistrationError`) an image with fewer than ``minimum`` voxels along an axis
    (default :func:`min_voxels` of the shrink factors)."""
    need = min_voxels(shrink_factors) if minimum is None else int(minimum)
    if min(size) < need:
        why = f"pyramid shrink factor {max(shrink_factors)}" if minimum is None else "ITK's smoothing"
        raise RegistrationError(
            f"the {what} ({' x '.join(str(int(n)) for n in size)} voxels) is too small to register: "
            f"at least {need} voxels per axis are needed ({why})",
            path,
        )


def _execute(method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image):
    try:
        return method.Execute(fixed, moving)
    except RuntimeError as err:
        if "outside moving image buffer" not in str(err):
            raise
        raise RegistrationError(
            "registration failed: the images stopped overlapping (is the field of view large enough, and "
            "is it a head?)"
        ) from err


def register(
    fixed: sitk.Image,
    moving: sitk.Image,
    kind: str = "affine",
    init: str = "moments",
    shrink_factors: Sequence[int] = (4, 2),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0),
    iterations: int = 200,
    sampling_percentage: float = 0.15,
    histogram_bins: int = 32,
    bspline_mesh_size: Sequence[int] = (4, 4, 4),
    bspline_iterations: int = 20,
    seed: int = 0,
    fixed_mask: sitk.Image | None = None,
    threads: int | None = None,
) -> tuple[sitk.Transform, dict[str, Any]]:
    """Register ``moving`` onto ``fixed``; return the transform (fixed points -> moving points) and a report.

    ``kind``: ``rigid`` (6 DoF Euler), ``affine`` (12 DoF) or ``nonlinear`` (affine then a B-spline on a
    coarse mesh, LBFGSB). Mattes mutual information on a random voxel sample, regular-step gradient
    descent, multi-resolution pyramid (shrink factors with Gaussian smoothing in voxels).
    ``init``: ``moments`` (centres of mass), ``geometry`` (grid centres) or ``header`` (identity: the two
    images already share a scanner space, as modalities of one session do).
    ``threads``: ITK threads of the optimisation (None: ITK's default, all cores). Identical runs
    agree to about 1e-12 in the transform parameters, with one thread or several (measured on a real
    64x64x48 crop): that run-to-run noise only matters on images too small to register, where it
    decides whether the sample points fall outside the moving image, so those are refused.

    Raises :class:`RegistrationError` (an InputError and a RuntimeError) when an image has fewer than 4
    voxels along an axis (ITK's smoothing cannot run) or when the images end up not overlapping at all.
    """
    if kind not in ("rigid", "affine", "nonlinear"):
        raise ValueError(f"unknown registration {kind!r}; choose rigid, affine or nonlinear")
    for name, image in (("fixed", fixed), ("moving", moving)):
        check_registrable(image.GetSize(), shrink_factors, f"{name} image", minimum=ITK_MIN_VOXELS)
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    start = time.perf_counter()
    linear = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    if init == "header":
        centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in fixed.GetSize()])
        linear.SetCenter(centre)
        initial = linear
    else:
        mode = {
            "moments": sitk.CenteredTransformInitializerFilter.MOMENTS,
            "geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
        }[init]
        initial = sitk.CenteredTransformInitializer(fixed, moving, linear, mode)

    def _method(levels_shrink: Sequence[int], levels_sigma: Sequence[float]) -> sitk.ImageRegistrationMethod:
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=histogram_bins)
        method.SetMetricSamplingStrategy(method.RANDOM)
        # SimpleITK reads seed 0 as 'seed from the wall clock': shift it so every seed is reproducible
        method.SetMetricSamplingPercentage(sampling_percentage, int(seed) + 1)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetShrinkFactorsPerLevel([int(s) for s in levels_shrink])
        method.SetSmoothingSigmasPerLevel([float(s) for s in levels_sigma])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        if fixed_mask is not None:
            method.SetMetricFixedMask(fixed_mask)
        if threads is not None:
            method.SetNumberOfThreads(int(threads))
        return method

    method = _method(shrink_factors, smoothing_sigmas)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-4,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    linear_out = _execute(method, fixed, moving)
    report: dict[str, Any] = {
        "kind": kind,
        "init": init,
        "linear_metric": float(method.GetMetricValue()),
        "linear_iterations_last_level": int(method.GetOptimizerIteration()),
        "linear_stop": method.GetOptimizerStopConditionDescription(),
    }
    # the returned composite wraps the optimised transform: unwrap so it is a plain Euler/affine
    if isinstance(linear_out, sitk.CompositeTransform) and linear_out.GetNumberOfTransforms() == 1:
        linear_out = linear_out.GetNthTransform(0)
    linear_out = sitk.Euler3DTransform(linear_out) if kind == "rigid" else sitk.AffineTransform(linear_out)
    transform: sitk.Transform = linear_out
    if kind == "nonlinear":
        bspline = sitk.BSplineTransformInitializer(fixed, [int(m) for m in bspline_mesh_size], order=3)
        method = _method(shrink_factors, smoothing_sigmas)
        method.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=bspline_iterations,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=4 * bspline_iterations,
        )
        method.SetMovingInitialTransform(linear_out)
        method.SetInitialTransform(bspline, inPlace=True)
        _execute(method, fixed, moving)
        report["bspline_metric"] = float(method.GetMetricValue())
        report["bspline_stop"] = method.GetOptimizerStopConditionDescription()
        # ITK applies the last added transform first: p -> B-spline -> affine -> moving point
        composite = sitk.CompositeTransform(3)
        composite.AddTransform(linear_out)
        composite.AddTransform(bspline)
        transform = composite
    report["seconds"] = round(time.perf_counter() - start, 3)
    return transform, report


def chain(first: sitk.Transform, then: sitk.Transform) -> sitk.Transform:
    """The transform p -> ``then``(``first``(p)) (SimpleITK composes last-added first)."""
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(then)
    composite.AddTransform(first)
    return composite


def resample(
    moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None, nearest: bool = False
) -> sitk.Image:
    """``moving`` on ``reference``'s grid (linear, or nearest neighbour for masks and labels); 0 outside."""
    transform = sitk.Transform(3, sitk.sitkIdentity) if transform is None else transform
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(moving, reference, transform, interpolator, 0.0, moving.GetPixelID())


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-3) -> bool:
    """True when two images share size, spacing, origin and direction."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def transform_description(transform: sitk.Transform) -> dict[str, Any]:
    """A JSON-friendly summary: the class and, for linear transforms, the 4x4 matrix in LPS mm."""
    desc: dict[str, Any] = {"class": transform.GetName()}
    if transform.GetName() in ("Euler3DTransform", "AffineTransform", "TranslationTransform"):
        matrix = np.eye(4)
        affine = sitk.AffineTransform(3)
        affine.SetMatrix(transform.GetMatrix() if hasattr(transform, "GetMatrix") else np.eye(3).ravel())
        matrix[:3, :3] = np.asarray(affine.GetMatrix()).reshape(3, 3)
        centre = np.asarray(transform.GetCenter()) if hasattr(transform, "GetCenter") else np.zeros(3)
        translation = np.asarray(transform.GetTranslation())
        matrix[:3, 3] = translation + centre - matrix[:3, :3] @ centre
        desc["matrix_lps"] = np.round(matrix, 6).tolist()
    return desc


# --------------------------------------------------------------------------------------------------
# dictionary transform


def _channels_to_sitk(image: torch.Tensor) -> list[sitk.Image]:
    affine = image.affine if isinstance(image, MetaTensor) else None
    if affine is None:
        raise ValueError("registration needs MetaTensors with an affine (use LoadImaged)")
    array = image.detach().cpu().numpy().astype(np.float32)
    if array.ndim == 3:
        array = array[None]
    return [array_to_sitk(channel, affine) for channel in array]


def _stack(images: Sequence[sitk.Image], meta: Mapping | None, dtype: torch.dtype) -> MetaTensor:
    arrays = [sitk.GetArrayFromImage(im).transpose(2, 1, 0) for im in images]
    affine = torch.as_tensor(sitk_affine(images[0]), dtype=torch.float64)
    meta = {k: v for k, v in dict(meta or {}).items() if k not in ("affine", "spatial_shape")}
    out = MetaTensor(
        torch.as_tensor(np.ascontiguousarray(np.stack(arrays))).to(dtype), affine=affine, meta=meta
    )
    out.affine = affine
    out.meta["spatial_shape"] = np.asarray(arrays[0].shape)
    return out


class RegisterToTemplated(MapTransform):
    """Register a subject to a template and resample its modalities onto one grid.

    The reference modality (``reference_key``; the first present key if absent) is registered to the
    template (``rigid`` / ``affine`` / ``nonlinear``). Every other modality is first aligned rigidly to
    the reference (only when it lies on a different grid with ``align_modalities="auto"``), then all move
    with the reference's transform onto the template grid: linear interpolation for images, nearest
    neighbour for ``nearest_keys`` (labels). The output affine is the template's.

    With ``registration="none"`` nothing is moved to the template: the modalities are brought onto the
    reference grid, and an affine registration to the template is still computed (not applied) so that
    :class:`BrainMaskFromTemplated` can carry the template's brain mask to native space through its inverse.

    ``template_brain_only="auto"`` registers against the template multiplied by its brain mask when the
    reference looks skull-stripped (so a stripped brain is not pulled towards a skull).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "t1",
        template: str | Path | None = None,
        registration: str = "affine",
        nearest_keys: Sequence[str] = ("label",),
        align_modalities: bool | str = "auto",
        template_brain_only: bool | str = "auto",
        template_mask: str | Path | None = None,
        shrink_factors: Sequence[int] = (4, 2),
        smoothing_sigmas: Sequence[float] = (2.0, 1.0),
        iterations: int = 200,
        sampling_percentage: float = 0.15,
        bspline_mesh_size: Sequence[int] = (4, 4, 4),
        bspline_iterations: int = 20,
        seed: int = 0,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        registration = "nonlinear" if registration == "bspline" else registration
        if registration not in REGISTRATIONS:
            raise ValueError(f"unknown registration {registration!r}; choose from {REGISTRATIONS}")
        self.reference_key = reference_key
        self.template = None if template is None else Path(template)
        self.registration = registration
        self.nearest_keys = tuple(nearest_keys)
        self.align_modalities = align_modalities
        self.template_brain_only = template_brain_only
        self.template_mask = None if template_mask is None else Path(template_mask)
        self.options = {
            "shrink_factors": list(shrink_factors),
            "smoothing_sigmas": list(smoothing_sigmas),
            "iterations": int(iterations),
            "sampling_percentage": float(sampling_percentage),
            "bspline_mesh_size": list(bspline_mesh_size),
            "bspline_iterations": int(bspline_iterations),
            "seed": int(seed),
        }
        self._template_cache: sitk.Image | None = None

    def _template(self) -> sitk.Image:
        if self._template_cache is None:
            self._template_cache = load_template(self.template)
        return self._template_cache

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from mtsr_monai.transforms.brain_mask import template_brain_mask

        d = dict(data)
        present = [k for k in self.key_iterator(d)]
        if not present:
            return d
        images = [k for k in present if k not in self.nearest_keys]
        if not images:
            raise ValueError("RegisterToTemplated needs at least one image key besides the label keys")
        ref_key = self.reference_key if self.reference_key in images else images[0]
        grids = {k: _channels_to_sitk(d[k]) for k in present}
        ref = grids[ref_key][0]
        template = self._template()
        stripped = looks_skull_stripped(ref)
        brain_only = stripped if self.template_brain_only == "auto" else bool(self.template_brain_only)
        target = template
        if brain_only:
            mask = template_brain_mask(
                template_mask=self.template_mask, template=self.template, reference=template
            )
            target = sitk.Mask(template, sitk.Cast(mask, sitk.sitkUInt8))

        # 1. reference -> template (an affine even for "none": the template mask needs it)
        kind = "affine" if self.registration == "none" else self.registration
        to_ref, ref_report = register(target, ref, kind=kind, init="moments", **self.options)

        # 2. each other modality -> reference (rigid, header-initialised: one session's scanner space)
        to_mod: dict[str, sitk.Transform | None] = {}
        reports: dict[str, Any] = {ref_key: {"to": "template", **ref_report}}
        for key in present:
            if key == ref_key or key in self.nearest_keys:
                continue
            image = grids[key][0]
            align = self.align_modalities
            if align == "auto":
                align = not same_grid(image, ref)
            if align:
                opts = {**self.options, "iterations": min(self.options["iterations"], 100)}
                opts.pop("bspline_mesh_size"), opts.pop("bspline_iterations")
                tx, rep = register(ref, image, kind="rigid", init="header", **opts)
                to_mod[key] = tx
                reports[key] = {"to": ref_key, **rep, "matrix": transform_description(tx)}
            else:
                to_mod[key] = None
                reports[key] = {"to": ref_key, "kind": "none (same grid as the reference)"}

        # 3. resample everything onto one grid
        registered = self.registration != "none"
        out_grid = template if registered else ref
        transforms: dict[str, sitk.Transform] = {}
        for key in present:
            if registered:
                tx = to_ref if to_mod.get(key) is None else chain(to_ref, to_mod[key])
            else:
                tx = to_mod.get(key) or sitk.Transform(3, sitk.sitkIdentity)
            transforms[key] = tx
            if not registered and to_mod.get(key) is None and same_grid(grids[key][0], ref):
                continue  # already on the output grid: no resampling, no interpolation blur
            nearest = key in self.nearest_keys
            moved = [resample(ch, out_grid, tx, nearest=nearest) for ch in grids[key]]
            dtype = d[key].dtype if isinstance(d[key], torch.Tensor) else torch.float32
            d[key] = _stack(moved, getattr(d[key], "meta", None), dtype if nearest else torch.float32)

        d[TRANSFORMS_KEY] = {**d.get(TRANSFORMS_KEY, {}), **transforms}
        # maps output-grid points to template points: identity on the template grid, else the inverse affine
        d[TO_TEMPLATE_KEY] = sitk.Transform(3, sitk.sitkIdentity) if registered else to_ref.GetInverse()
        params = dict(d.get(PARAMS_KEY, {}))
        params["registration"] = {
            "registration": self.registration,
            "template": str(self.template) if self.template else "MNI152 2009a 1 mm T1 (nilearn)",
            "reference_key": ref_key,
            "reference_looks_skull_stripped": stripped,
            "template_brain_only": brain_only,
            "output_space": "template" if registered else f"native ({ref_key} grid)",
            "metric": "Mattes mutual information",
            "optimizer": "regular step gradient descent (linear), LBFGSB (B-spline)",
            **self.options,
            "reference_matrix": transform_description(to_ref)
            if kind != "nonlinear"
            else {"class": "composite"},
            "per_key": reports,
        }
        d[PARAMS_KEY] = params
        return d
