"""Registration to a template with SimpleITK: :func:`register`, the array transform
:class:`RegisterToTemplate` and its dictionary wrapper :class:`RegisterToTemplated`.

A SimpleITK transform found by ``register(fixed, moving)`` maps *fixed* physical points to *moving*
physical points, which is what resampling the moving image onto the fixed grid needs. Chaining
"modality -> reference -> template" therefore composes as ``T_mod(T_ref(p))`` for a template point p.
The MetaTensor <-> SimpleITK conversions live in :mod:`mtsr_monai.transforms.sitk_utils`.
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
from monai.transforms import MapTransform, Transform

from mtsr_monai.errors import InputError
from mtsr_monai.transforms.brain_mask import template_brain_mask
from mtsr_monai.transforms.foreground import is_skull_stripped
from mtsr_monai.transforms.keys import PARAMS_KEY, TO_TEMPLATE_KEY, TRANSFORMS_KEY
from mtsr_monai.transforms.sitk_utils import (
    channels_to_sitk,
    load_template,
    resample,
    same_grid,
    sitk_threads,
    stack_channels,
)

REGISTRATIONS = ("rigid", "affine", "nonlinear", "none")


# --------------------------------------------------------------------------------------------------
# registration helpers


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


def _initial_transform(fixed: sitk.Image, moving: sitk.Image, kind: str, init: str) -> sitk.Transform:
    """The rigid or affine starting point: centred on the grid (``header``), or by moments / geometry."""
    linear = sitk.Euler3DTransform() if kind == "rigid" else sitk.AffineTransform(3)
    if init == "header":
        centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in fixed.GetSize()])
        linear.SetCenter(centre)
        return linear
    mode = {
        "moments": sitk.CenteredTransformInitializerFilter.MOMENTS,
        "geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
    }[init]
    return sitk.CenteredTransformInitializer(fixed, moving, linear, mode)


def _registration_method(
    shrink_factors: Sequence[int],
    smoothing_sigmas: Sequence[float],
    sampling_percentage: float,
    histogram_bins: int,
    seed: int,
    fixed_mask: sitk.Image | None,
    threads: int | None,
) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information on a random voxel sample, linear interpolation, multi-resolution pyramid."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # SimpleITK reads seed 0 as 'seed from the wall clock': shift it so every seed is reproducible (the
    # largest, 2**32 - 1, wraps to 1: the seed is an unsigned 32-bit value)
    method.SetMetricSamplingPercentage(sampling_percentage, int(seed) % (2**32 - 1) + 1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
    method.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    if threads is not None:
        method.SetNumberOfThreads(int(threads))
    return method


def _linear_stage(
    method: sitk.ImageRegistrationMethod,
    fixed: sitk.Image,
    moving: sitk.Image,
    initial: sitk.Transform,
    kind: str,
    iterations: int,
) -> tuple[sitk.Transform, dict[str, Any]]:
    """Regular-step gradient descent of the rigid / affine transform; returns it unwrapped, and a report."""
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-4,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    linear = _execute(method, fixed, moving)
    report = {
        "linear_metric": float(method.GetMetricValue()),
        "linear_iterations_last_level": int(method.GetOptimizerIteration()),
        "linear_stop": method.GetOptimizerStopConditionDescription(),
    }
    # the returned composite wraps the optimised transform: unwrap so it is a plain Euler/affine
    if isinstance(linear, sitk.CompositeTransform) and linear.GetNumberOfTransforms() == 1:
        linear = linear.GetNthTransform(0)
    linear = sitk.Euler3DTransform(linear) if kind == "rigid" else sitk.AffineTransform(linear)
    return linear, report


def _bspline_stage(
    method: sitk.ImageRegistrationMethod,
    fixed: sitk.Image,
    moving: sitk.Image,
    linear: sitk.Transform,
    mesh_size: Sequence[int],
    iterations: int,
) -> tuple[sitk.Transform, dict[str, Any]]:
    """A coarse B-spline (LBFGSB) on top of ``linear``; returns the composite and a report."""
    bspline = sitk.BSplineTransformInitializer(fixed, [int(m) for m in mesh_size], order=3)
    method.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=4 * iterations,
    )
    method.SetMovingInitialTransform(linear)
    method.SetInitialTransform(bspline, inPlace=True)
    _execute(method, fixed, moving)
    report = {
        "bspline_metric": float(method.GetMetricValue()),
        "bspline_stop": method.GetOptimizerStopConditionDescription(),
    }
    # ITK applies the last added transform first: p -> B-spline -> affine -> moving point
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(linear)
    composite.AddTransform(bspline)
    return composite, report


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
    ``threads``: SimpleITK threads of every filter of the run (None: the global default, all cores). One
    makes reruns identical; with two, a clinical T1's affine to MNI152 moved by up to 2e-4 between runs
    (6e-8 with one thread in the metric alone). On images too small to register that noise decides
    whether the sample points fall outside the moving image, so those are refused.

    Raises :class:`RegistrationError` (an InputError and a RuntimeError) when an image has fewer than 4
    voxels along an axis (ITK's smoothing cannot run) or when the images end up not overlapping at all.
    """
    if kind not in ("rigid", "affine", "nonlinear"):
        raise ValueError(f"unknown registration {kind!r}; choose rigid, affine or nonlinear")
    for name, image in (("fixed", fixed), ("moving", moving)):
        check_registrable(image.GetSize(), shrink_factors, f"{name} image", minimum=ITK_MIN_VOXELS)
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    settings = (shrink_factors, smoothing_sigmas, sampling_percentage, histogram_bins, seed, fixed_mask)
    settings += (threads,)
    start = time.perf_counter()
    with sitk_threads(threads):  # every filter of the run, not the metric alone: see above
        transform, report = _register_stages(fixed, moving, kind, init, settings, iterations)
        if kind == "nonlinear":
            transform, bspline_report = _bspline_stage(
                _registration_method(*settings),
                fixed,
                moving,
                transform,
                bspline_mesh_size,
                bspline_iterations,
            )
            report.update(bspline_report)
    report["seconds"] = round(time.perf_counter() - start, 3)
    return transform, report


def _register_stages(
    fixed: sitk.Image, moving: sitk.Image, kind: str, init: str, settings: tuple, iterations: int
) -> tuple[sitk.Transform, dict[str, Any]]:
    """The initialisation and the linear stage of :func:`register` (float32 images; ``settings``: its
    metric settings)."""
    initial = _initial_transform(fixed, moving, kind, init)
    transform, linear_report = _linear_stage(
        _registration_method(*settings), fixed, moving, initial, kind, iterations
    )
    # the optimiser sees a sample of smoothed, shrunk images; judged on every voxel it can end worse than
    # where it started (thick slabs of a small field of view drifted 5 degrees and 4 mm from a true header
    # alignment): keep the start then
    start, end = (_full_metric(fixed, moving, t, settings) for t in (initial, transform))
    checked = {"start_metric_full": start, "end_metric_full": end, "kept_start": end > start}
    if end > start:
        transform = sitk.Euler3DTransform(initial) if kind == "rigid" else sitk.AffineTransform(initial)
    return transform, {"kind": kind, "init": init, **linear_report, **checked}


def _full_metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, settings: tuple) -> float:
    """The registration's metric (``settings``: its metric settings, fixed mask included) of ``moving``
    under ``transform`` on every voxel of ``fixed`` at full resolution: lower is better."""
    method = _registration_method(*settings)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInitialTransform(transform)
    return float(method.MetricEvaluate(fixed, moving))


def chain(first: sitk.Transform, then: sitk.Transform) -> sitk.Transform:
    """The transform p -> ``then``(``first``(p)) (SimpleITK composes last-added first), flat: a composite
    inside a composite (a non-linear registration's) cannot be written to a ``.tfm`` file."""
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(then)
    composite.AddTransform(first)
    composite.FlattenTransform()
    return composite


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
# array transform


class RegisterToTemplate(Transform):
    """Array transform: register a channel-first MetaTensor (its first channel) to a template and resample
    every channel onto the template grid (linear interpolation, or nearest neighbour with ``nearest=True``
    for labels). The output affine is the template's; ``registration="none"`` returns the input unchanged.

    The steps are methods so that :class:`RegisterToTemplated` can register several modalities with one
    transform estimated on a reference: :meth:`estimate` (reference -> template; an affine even for
    ``"none"``, whose inverse carries the template's brain mask to native space), :meth:`align` (another
    modality of the session -> the reference, rigid), :meth:`output_grid` and :meth:`resample_onto`.

    ``template_brain_only="auto"`` registers against the template multiplied by its brain mask when the
    reference looks skull-stripped (so a stripped brain is not pulled towards a skull).
    """

    def __init__(
        self,
        template: str | Path | None = None,
        registration: str = "affine",
        template_brain_only: bool | str = "auto",
        template_mask: str | Path | None = None,
        shrink_factors: Sequence[int] = (4, 2),
        smoothing_sigmas: Sequence[float] = (2.0, 1.0),
        iterations: int = 200,
        sampling_percentage: float = 0.15,
        bspline_mesh_size: Sequence[int] = (4, 4, 4),
        bspline_iterations: int = 20,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        registration = "nonlinear" if registration == "bspline" else registration
        if registration not in REGISTRATIONS:
            raise ValueError(f"unknown registration {registration!r}; choose from {REGISTRATIONS}")
        self.template = None if template is None else Path(template)
        self.registration = registration
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
            "threads": None if threads is None else int(threads),
        }
        self._template_cache: sitk.Image | None = None
        self._template_stripped: bool | None = None

    @property
    def moves(self) -> bool:
        """Whether the output lies on the template grid (every registration but ``"none"``)."""
        return self.registration != "none"

    @property
    def kind(self) -> str:
        """The registration :meth:`estimate` runs: ``"none"`` still estimates an affine."""
        return "affine" if self.registration == "none" else self.registration

    def template_image(self) -> sitk.Image:
        """The template (loaded once)."""
        if self._template_cache is None:
            self._template_cache = load_template(self.template)
        return self._template_cache

    def template_is_brain_only(self) -> bool:
        """Whether the template is skull-stripped (nilearn's MNI152 is); computed once."""
        if self._template_stripped is None:
            self._template_stripped = is_skull_stripped(sitk.GetArrayViewFromImage(self.template_image()))
        return self._template_stripped

    def target(self, reference: sitk.Image) -> tuple[sitk.Image, sitk.Image | None, bool, bool]:
        """The registration target, the region of it the metric samples (None: all of it), whether the
        reference looks skull-stripped, and whether the target is brain only.

        A skull-stripped reference is registered to the template masked to its brain. A reference with its
        skull, on a brain-only template, is sampled inside the template's brain only: otherwise the
        template's brain is stretched onto the head's outline and the brain mask carried back covers skull
        and scalp (the template's empty surround must not be sampled, so the mask is not dilated)."""
        template = self.template_image()
        stripped = is_skull_stripped(sitk.GetArrayViewFromImage(reference))
        brain_only = stripped if self.template_brain_only == "auto" else bool(self.template_brain_only)
        if not brain_only and not self.template_is_brain_only():
            return template, None, stripped, brain_only
        mask = sitk.Cast(
            template_brain_mask(template_mask=self.template_mask, template=self.template, reference=template),
            sitk.sitkUInt8,
        )
        if not brain_only:
            return template, mask, stripped, brain_only
        return sitk.Mask(template, mask), None, stripped, brain_only

    def estimate(self, reference: sitk.Image) -> tuple[sitk.Transform, dict[str, Any], dict[str, bool]]:
        """Register ``reference`` to the template: the transform (template points -> reference points), the
        report of :func:`register`, and how the target was chosen."""
        target, metric_mask, stripped, brain_only = self.target(reference)
        transform, report = register(
            target, reference, kind=self.kind, init="moments", fixed_mask=metric_mask, **self.options
        )
        choice = {
            "reference_looks_skull_stripped": stripped,
            "template_brain_only": brain_only,
            "metric_in_template_brain": metric_mask is not None,
        }
        return transform, report, choice

    def align(self, moving: sitk.Image, reference: sitk.Image) -> tuple[sitk.Transform, dict[str, Any]]:
        """Another modality of the session -> the reference: rigid, header-initialised (one scanner space),
        at most 100 iterations; the transform and a report with its matrix."""
        opts = {**self.options, "iterations": min(self.options["iterations"], 100)}
        opts.pop("bspline_mesh_size"), opts.pop("bspline_iterations")
        transform, report = register(reference, moving, kind="rigid", init="header", **opts)
        return transform, {**report, "matrix": transform_description(transform)}

    def output_grid(self, reference: sitk.Image) -> sitk.Image:
        """The grid every modality ends on: the template's, or the reference's for ``"none"``."""
        return self.template_image() if self.moves else reference

    def resample_onto(
        self,
        img: Any,
        transform: sitk.Transform,
        grid: sitk.Image,
        nearest: bool = False,
        channels: Sequence[sitk.Image] | None = None,
    ) -> MetaTensor:
        """Every channel of ``img`` (or its SimpleITK ``channels``, already converted) on ``grid`` through
        ``transform`` (grid points -> ``img`` points): float32 and linear, or nearest neighbour keeping the
        dtype."""
        channels = channels_to_sitk(img) if channels is None else channels
        moved = [resample(ch, grid, transform, "nearest" if nearest else "linear") for ch in channels]
        dtype = img.dtype if isinstance(img, torch.Tensor) else torch.float32
        return stack_channels(moved, getattr(img, "meta", None), dtype if nearest else torch.float32)

    def __call__(self, img: Any, nearest: bool = False) -> Any:
        if not self.moves:
            return img
        channels = channels_to_sitk(img)
        transform, _, _ = self.estimate(channels[0])
        return self.resample_onto(img, transform, self.template_image(), nearest, channels)


# --------------------------------------------------------------------------------------------------
# dictionary transform


class RegisterToTemplated(MapTransform):
    """Dictionary wrapper of :class:`RegisterToTemplate`: register a subject to a template and resample its
    modalities onto one grid.

    The reference modality (``reference_key``; the first present key if absent) is registered to the
    template (``rigid`` / ``affine`` / ``nonlinear``). Every other modality is first aligned rigidly to
    the reference (only when it lies on a different grid with ``align_modalities="auto"``), then all move
    with the reference's transform onto the template grid: linear interpolation for images, nearest
    neighbour for ``nearest_keys`` (labels). The output affine is the template's.

    With ``registration="none"`` nothing is moved to the template: the modalities are brought onto the
    reference grid, and an affine registration to the template is still computed (not applied) so that
    :class:`BrainMaskFromTemplated` can carry the template's brain mask to native space through its inverse.

    The transforms go to ``data[TRANSFORMS_KEY]`` and ``data[TO_TEMPLATE_KEY]``, the settings and reports to
    ``data[PARAMS_KEY]["registration"]``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "t1",
        *,
        nearest_keys: Sequence[str] = ("label",),
        align_modalities: bool | str = "auto",
        allow_missing_keys: bool = False,
        **settings: Any,
    ) -> None:
        """``settings``: the keyword arguments of :class:`RegisterToTemplate` (``template``, ``registration``,
        ``template_brain_only``, ``template_mask``, ``shrink_factors``, ``smoothing_sigmas``, ``iterations``,
        ``sampling_percentage``, ``bspline_mesh_size``, ``bspline_iterations``, ``seed``, ``threads``)."""
        super().__init__(keys, allow_missing_keys)
        self.registrar = RegisterToTemplate(**settings)
        self.reference_key = reference_key
        self.nearest_keys = tuple(nearest_keys)
        self.align_modalities = align_modalities

    def _to_reference(
        self, grids: Mapping[str, list[sitk.Image]], ref_key: str, present: Sequence[str]
    ) -> tuple[dict[str, sitk.Transform | None], dict[str, Any]]:
        """Each other modality -> the reference (:meth:`RegisterToTemplate.align`), or None where it is not
        aligned; and a report per key."""
        ref = grids[ref_key][0]
        to_mod: dict[str, sitk.Transform | None] = {}
        reports: dict[str, Any] = {}
        for key in present:
            if key == ref_key or key in self.nearest_keys:
                continue
            image = grids[key][0]
            align = self.align_modalities
            if align == "auto":
                align = not same_grid(image, ref)
            if align:
                to_mod[key], report = self.registrar.align(image, ref)
                reports[key] = {"to": ref_key, **report}
            else:
                to_mod[key] = None
                reports[key] = {"to": ref_key, "kind": "none (same grid as the reference)"}
        return to_mod, reports

    def _resample_all(
        self,
        d: dict[Hashable, Any],
        grids: Mapping[str, list[sitk.Image]],
        ref: sitk.Image,
        to_ref: sitk.Transform,
        to_mod: Mapping[str, sitk.Transform | None],
        present: Sequence[str],
    ) -> dict[str, sitk.Transform]:
        """Every key onto one grid (:meth:`RegisterToTemplate.output_grid`), in place in ``d``; returns the
        transform of each key (output grid -> its input)."""
        moves = self.registrar.moves
        out_grid = self.registrar.output_grid(ref)
        transforms: dict[str, sitk.Transform] = {}
        for key in present:
            if moves:
                tx = to_ref if to_mod.get(key) is None else chain(to_ref, to_mod[key])
            else:
                tx = to_mod.get(key) or sitk.Transform(3, sitk.sitkIdentity)
            transforms[key] = tx
            if not moves and to_mod.get(key) is None and same_grid(grids[key][0], ref):
                continue  # already on the output grid: no resampling, no interpolation blur
            nearest = key in self.nearest_keys
            d[key] = self.registrar.resample_onto(d[key], tx, out_grid, nearest, grids[key])
        return transforms

    def _params(
        self, ref_key: str, target: Mapping[str, bool], to_ref: sitk.Transform, per_key: dict[str, Any]
    ) -> dict[str, Any]:
        """The sidecar's record of this registration."""
        registrar = self.registrar
        return {
            "registration": registrar.registration,
            "template": str(registrar.template) if registrar.template else "MNI152 2009a 1 mm T1 (nilearn)",
            "reference_key": ref_key,
            **target,
            "output_space": "template" if registrar.moves else f"native ({ref_key} grid)",
            "metric": "Mattes mutual information",
            "optimizer": "regular step gradient descent (linear), LBFGSB (B-spline)",
            **registrar.options,
            "reference_matrix": transform_description(to_ref)
            if registrar.kind != "nonlinear"
            else {"class": "composite"},
            "per_key": per_key,
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = [k for k in self.key_iterator(d)]
        if not present:
            return d
        images = [k for k in present if k not in self.nearest_keys]
        if not images:
            raise ValueError("RegisterToTemplated needs at least one image key besides the label keys")
        ref_key = self.reference_key if self.reference_key in images else images[0]
        grids = {k: channels_to_sitk(d[k]) for k in present}
        ref = grids[ref_key][0]
        # 1. reference -> template (an affine even for "none": the template mask needs it)
        to_ref, ref_report, target = self.registrar.estimate(ref)
        # 2. each other modality -> reference; 3. everything onto one grid
        to_mod, reports = self._to_reference(grids, ref_key, present)
        transforms = self._resample_all(d, grids, ref, to_ref, to_mod, present)
        d[TRANSFORMS_KEY] = {**d.get(TRANSFORMS_KEY, {}), **transforms}
        # maps output-grid points to template points: identity on the template grid, else the inverse affine
        moved = self.registrar.moves
        d[TO_TEMPLATE_KEY] = sitk.Transform(3, sitk.sitkIdentity) if moved else to_ref.GetInverse()
        params = dict(d.get(PARAMS_KEY, {}))
        per_key = {ref_key: {"to": "template", **ref_report}, **reports}
        params["registration"] = self._params(ref_key, target, to_ref, per_key)
        d[PARAMS_KEY] = params
        return d
