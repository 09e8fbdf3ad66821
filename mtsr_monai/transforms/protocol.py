"""Routine 2D acquisition protocols: random simulation for training, and the forward model for consistency.

Two uses of one slice model (a slice = the 1 mm signal weighted by a slice profile across its thickness):

- **training** (:class:`SimulateProtocol`, :class:`RandSimulateProtocol` and their ``...d`` dictionary
  wrappers): a channel-first volume or block ``(C, X, Y, Z)`` on a fine grid is "acquired" with a routine
  protocol and brought back onto the same grid by linear interpolation (the same-size input of the clinical
  network). A protocol has a thick axis (an array axis), a slice thickness (3-7 mm), a gap between slices, a
  slice profile (Gaussian of FWHM = thickness, or a box of width = thickness), an in-plane voxel size
  (0.5-1.2 mm) along the two other axes, a random phase of the slice grid and optional noise. Every step is
  separable, so each axis is one small matrix (``acquire`` then ``back``), cheap enough to run per sample;
- **data consistency** (:func:`acquire_like`): a restored volume on its output grid is re-acquired on the
  grid of a routine input scan (oblique or not, in physical space, SimpleITK): resampled onto a grid that is
  the input's grid made fine along its slice axis, then integrated with the slice profile at the input's
  slice centres. ``acquire_like(restored) - input`` is the consistency residual of ``mtsr clinical-sr``.

:class:`RandChannelDropout` zeroes whole input channels (a sequence missing from a session), each with its
own probability. MONAI's conventions: array transforms plus thin dictionary wrappers, ``Rand`` for random
ones, ``prob`` = the probability of applying the transform at all (skipped: the input is returned as is,
i.e. a protocol as sharp as the 1 mm data, or no channel dropped).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from scipy.special import ndtr

from mtsr_monai.transforms.meta import wrap_like
from mtsr_monai.transforms.wrappers import SharedStreamWrapper, output_keys_for

if TYPE_CHECKING:
    import SimpleITK as sitk

PROFILES = ("gaussian", "boxcar")

__all__ = [
    "PROFILES",
    "ProtocolParams",
    "RandChannelDropout",
    "RandChannelDropoutd",
    "RandSimulateProtocol",
    "RandSimulateProtocold",
    "SimulateProtocol",
    "SimulateProtocold",
    "acquire_like",
    "interpolation_weights",
    "profile_weights",
    "simulate_protocol_array",
]


# ---------------------------------------------------------------------------------------------- weights
def profile_weights(
    centres: np.ndarray, n: int, spacing: float, thickness: float, profile: str = "gaussian"
) -> np.ndarray:
    """``(len(centres), n)``: a slice profile centred at each continuous index of ``centres``, integrated
    over each of ``n`` cells of ``spacing`` mm; rows sum to 1 (a row with no support in the cells takes the
    nearest cell).

    ``gaussian``: FWHM = ``thickness``; ``boxcar``: width = ``thickness`` (a box of width = the voxel size
    is also the area-averaging of an in-plane voxel)."""
    if thickness <= 0:
        raise ValueError(f"slice thickness must be > 0, got {thickness}")
    centres = np.asarray(centres, dtype=np.float64)
    lo = (np.arange(n)[None, :] - 0.5 - centres[:, None]) * spacing  # cell edges, mm from the centre
    hi = lo + spacing
    if profile == "gaussian":
        sigma = thickness / (2 * math.sqrt(2 * math.log(2)))
        w = ndtr(hi / sigma) - ndtr(lo / sigma)
    elif profile == "boxcar":
        w = np.clip(np.minimum(hi, thickness / 2) - np.maximum(lo, -thickness / 2), 0, None)
    else:
        raise ValueError(f"unknown slice profile {profile!r}; choose from {PROFILES}")
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    # a centre whose profile misses every cell (a spare sample beyond the field of view): the nearest cell,
    # the edge replicated, not 0 (which interpolating back would mix into the edge voxels)
    empty = np.flatnonzero(total[:, 0] <= 0)
    w[empty, np.clip(np.rint(centres[empty]).astype(int), 0, n - 1)] = 1.0
    return w


def interpolation_weights(positions: np.ndarray, n: int) -> np.ndarray:
    """``(len(positions), n)``: linear interpolation of ``n`` samples at continuous ``positions`` (indices),
    clamped to the first / last sample outside ``[0, n - 1]``."""
    pos = np.clip(np.asarray(positions, dtype=np.float64), 0.0, n - 1.0)
    left = np.minimum(np.floor(pos).astype(int), max(n - 2, 0))
    frac = pos - left
    w = np.zeros((pos.size, n))
    rows = np.arange(pos.size)
    w[rows, left] += 1.0 - frac
    if n > 1:
        w[rows, left + 1] += frac
    return w


def _sample_positions(n: int, step: float, offset: float) -> np.ndarray:
    """Continuous indices ``offset + k * step`` that cover ``[0, n - 1]`` with one sample to spare each side
    (so that interpolating back never extrapolates)."""
    first = offset - step * math.ceil(offset / step + 1e-9)
    count = int(math.ceil((n - 1 - first) / step + 1e-9)) + 2
    return first + step * np.arange(count)


# ---------------------------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class ProtocolParams:
    """One routine 2D acquisition of a channel on a grid of ``spacing`` mm voxels.

    ``axis``: the thick (slice) array axis; ``thickness`` / ``gap`` mm; ``profile``: ``gaussian`` |
    ``boxcar``; ``inplane``: voxel size in mm along the two other axes (the 1 mm data are interpolated onto
    it, box-averaged when coarser); ``phase``: position of the slice grid as a fraction of its period (and of
    the in-plane voxel); ``noise``: Gaussian noise std added to the acquired samples, in image units."""

    axis: int
    thickness: float
    gap: float = 0.0
    profile: str = "gaussian"
    inplane: float = 1.0
    phase: float = 0.0
    noise: float = 0.0


def _axis_operators(
    n: int, spacing: float, params: ProtocolParams, axis: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(acquire, back)`` matrices of one axis: ``acquire`` (m, n) samples the fine data on the protocol's
    grid, ``back`` (n, m) interpolates linearly back to the fine grid; None where the axis is untouched."""
    if axis == params.axis:
        step_mm = params.thickness + params.gap
        centres = _sample_positions(n, step_mm / spacing, params.phase * step_mm / spacing)
        acquire = profile_weights(centres, n, spacing, params.thickness, params.profile)
    else:
        step_mm = float(params.inplane)
        if abs(step_mm - spacing) < 1e-6 and params.phase == 0.0:
            return None
        centres = _sample_positions(n, step_mm / spacing, params.phase * step_mm / spacing)
        if step_mm > spacing:  # a coarser voxel averages the fine signal over its width
            acquire = profile_weights(centres, n, spacing, step_mm, "boxcar")
        else:  # a finer voxel holds nothing the fine grid lacks: interpolate
            acquire = interpolation_weights(centres, n)
    back = interpolation_weights((np.arange(n) - centres[0]) / (centres[1] - centres[0]), centres.size)
    return acquire, back


def _along(x: np.ndarray, matrix: np.ndarray, dim: int) -> np.ndarray:
    # numpy: torch's small-tensor contractions are ~100x slower on a busy CPU (measured here)
    return np.moveaxis(np.tensordot(x, matrix.astype(x.dtype), axes=([dim], [1])), -1, dim)


def simulate_protocol_array(
    img: np.ndarray | torch.Tensor,
    params: ProtocolParams,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    rng: np.random.Generator | None = None,
    plane: tuple[int, int] | None = None,
) -> np.ndarray:
    """A channel-first image ``(C, *spatial)`` acquired with ``params`` (all channels alike) and
    interpolated back onto its own grid, float32.

    ``plane = (axis, index)``: return only the slice ``index`` along spatial ``axis`` (``(C, *other)``), the
    same values as slicing the whole result (the operators are separable) but far cheaper: the training
    dataset cuts one plane out of a block. Noise (``params.noise``) is drawn on the acquisition grid."""
    x = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    x = x.astype(np.float32, copy=False)
    spatial = x.ndim - 1
    if not 0 <= params.axis < spatial:
        raise ValueError(f"thick axis {params.axis} out of range for {spatial} spatial dimensions")
    ops = {a: _axis_operators(x.shape[a + 1], float(spacing[a]), params, a) for a in range(spatial)}
    noise_gain = 1.0
    if plane is not None:
        axis, index = int(plane[0]), int(plane[1])
        op = ops.pop(axis)
        row = np.eye(x.shape[axis + 1])[index] if op is None else op[1][index] @ op[0]
        noise_gain = 1.0 if op is None else float(np.sqrt((op[1][index] ** 2).sum()))
        x = np.tensordot(x, row.astype(np.float32), axes=([axis + 1], [0]))
        ops = {(a if a < axis else a - 1): o for a, o in ops.items()}
    ops = {a: o for a, o in ops.items() if o is not None}
    for a, (acquire, _) in ops.items():
        x = _along(x, acquire, a + 1)
    if params.noise > 0:
        rng = rng if rng is not None else np.random.default_rng(0)
        x = x + (params.noise * noise_gain) * rng.standard_normal(x.shape, dtype=np.float32)
    for a, (_, back) in ops.items():
        x = _along(x, back, a + 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _tensor(img: Any) -> torch.Tensor:
    """``img`` as a tensor (a MetaTensor stays one, with its meta)."""
    return torch.as_tensor(np.ascontiguousarray(img) if not isinstance(img, torch.Tensor) else img)


def _unchanged(img: Any, plane: tuple[int, int] | None = None) -> torch.Tensor:
    """What a skipped random protocol gives: the input as float32 (only the slice ``plane = (axis, index)``
    when given)."""
    x = _tensor(img).to(torch.float32)
    return x if plane is None else x.select(int(plane[0]) + 1, int(plane[1]))


class SimulateProtocol(Transform):
    """Array transform: ``(C, *spatial)`` -> the same image acquired with a routine protocol and interpolated
    back onto its grid. ``params``: one :class:`ProtocolParams` for every channel, or one per channel.
    ``spacing``: voxel size of the input in mm (the 1 mm training data: the default; a MetaTensor's affine is
    not read). ``plane = (axis, index)``: return only that slice of the result (see
    :func:`simulate_protocol_array`). A MetaTensor comes back as one, with its meta, when the grid is kept
    (no ``plane``)."""

    def __init__(
        self,
        params: ProtocolParams | Sequence[ProtocolParams],
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        seed: int = 0,
        plane: tuple[int, int] | None = None,
    ) -> None:
        self.params = params
        self.spacing = tuple(float(s) for s in spacing)
        self.seed = int(seed)
        self.plane = plane

    def __call__(self, img: Any) -> torch.Tensor:
        x = _tensor(img)
        params = self.params
        if isinstance(params, ProtocolParams):
            params = [params] * x.shape[0]
        if len(params) != x.shape[0]:
            raise ValueError(f"{len(params)} protocols for {x.shape[0]} channels")
        rng = np.random.default_rng(self.seed)
        out = [
            simulate_protocol_array(x[c : c + 1], p, self.spacing, rng, self.plane)
            for c, p in enumerate(params)
        ]
        result = torch.from_numpy(np.concatenate(out))
        if isinstance(img, MetaTensor) and self.plane is None:  # same grid: the input's affine and meta hold
            return wrap_like(result, img)
        return result


class RandSimulateProtocol(RandomizableTransform):
    """Array transform: a random routine protocol per call (per channel with ``per_channel``), then
    :class:`SimulateProtocol`. With probability ``1 - prob`` the image is returned unchanged.

    Ranges are ``(low, high)`` drawn uniformly: ``thickness`` (mm), ``gap`` (mm, drawn with probability
    ``gap_prob``, else 0), ``inplane`` (mm), ``noise`` (std, image units); ``profiles``: drawn with equal
    probability; ``axes``: the array axes a thick axis may lie along (the 1 mm data's axes whose detail is
    true: never an axis that was itself interpolated from thick slices). ``same_axis``: every channel of a
    call shares the first channel's thick axis (a routine session is usually all axial or all sagittal).
    """

    def __init__(
        self,
        thickness: Sequence[float] = (3.0, 7.0),
        gap: Sequence[float] = (0.0, 1.5),
        gap_prob: float = 0.3,
        profiles: Sequence[str] = PROFILES,
        inplane: Sequence[float] = (0.5, 1.2),
        axes: Sequence[int] = (0, 1),
        noise: Sequence[float] = (0.0, 0.0),
        per_channel: bool = True,
        same_axis: bool = True,
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown or not profiles:
            raise ValueError(f"unknown slice profiles {unknown or profiles}; choose from {PROFILES}")
        if not axes:
            raise ValueError("give at least one thick axis")
        self.thickness, self.gap, self.gap_prob = tuple(thickness), tuple(gap), float(gap_prob)
        self.profiles, self.inplane, self.axes = tuple(profiles), tuple(inplane), tuple(int(a) for a in axes)
        self.noise, self.per_channel, self.same_axis = tuple(noise), per_channel, same_axis
        self.spacing = tuple(float(s) for s in spacing)
        self.params: list[ProtocolParams] = []
        self.seed = 0

    def _draw(self, axis: int | None) -> ProtocolParams:
        r = self.R
        return ProtocolParams(
            axis=int(axis if axis is not None else self.axes[r.randint(len(self.axes))]),
            thickness=float(r.uniform(*self.thickness)),
            gap=float(r.uniform(*self.gap)) if r.rand() < self.gap_prob else 0.0,
            profile=str(self.profiles[r.randint(len(self.profiles))]),
            inplane=float(r.uniform(*self.inplane)),
            phase=float(r.uniform(0.0, 1.0)),
            noise=float(r.uniform(*self.noise)),
        )

    def randomize(self, num_channels: int = 1) -> None:
        """Draw whether to apply, and the protocol(s): ``self.params`` holds one per channel."""
        super().randomize(None)
        first = self._draw(None)
        if not self.per_channel:
            self.params = [first] * num_channels
        else:
            axis = first.axis if self.same_axis else None
            self.params = [first] + [self._draw(axis) for _ in range(num_channels - 1)]
        self.seed = int(self.R.randint(0, 2**31 - 1))

    @property
    def thick_axis(self) -> int | None:
        """The first channel's thick axis of the last draw (None if skipped or not drawn yet)."""
        return self.params[0].axis if self.params and self._do_transform else None

    def __call__(
        self, img: Any, randomize: bool = True, plane: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``plane = (axis, index)``: only that slice of the result (cheap; see SimulateProtocol)."""
        x = _tensor(img)
        if randomize:
            self.randomize(x.shape[0])
        if not self._do_transform:
            return _unchanged(x, plane)
        params = self.params if len(self.params) == x.shape[0] else [self.params[0]] * x.shape[0]
        return SimulateProtocol(params, self.spacing, self.seed, plane)(x)

    def describe(self) -> list[dict[str, Any]]:
        """The last draw as plain dicts (for logs)."""
        return [asdict(p) for p in self.params] if self._do_transform else []


class RandChannelDropout(RandomizableTransform):
    """Array transform: zero whole channels of ``(C, ...)``, channel ``c`` with probability ``probs[c]`` (or
    one ``probs`` for all), never all of them (one is kept at random), applied with probability ``prob``.
    Models a sequence missing from a session (T2 often is), which the inference zero-fills."""

    def __init__(self, probs: float | Sequence[float] = 0.1, prob: float = 1.0) -> None:
        RandomizableTransform.__init__(self, prob)
        self.probs = probs
        self.dropped: np.ndarray = np.zeros(0, bool)

    def randomize(self, num_channels: int = 1) -> None:
        super().randomize(None)
        probs = np.broadcast_to(np.asarray(self.probs, dtype=float), (num_channels,))
        drop = self.R.rand(num_channels) < probs
        if drop.all():
            drop[self.R.randint(num_channels)] = False
        self.dropped = drop if self._do_transform else np.zeros(num_channels, bool)

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        x = _tensor(img)
        if randomize:
            self.randomize(x.shape[0])
        if not self.dropped.any():
            return x
        x = x.clone()
        x[torch.as_tensor(self.dropped)] = 0
        return x


# --------------------------------------------------------------------------------- dictionary wrappers
class SimulateProtocold(MapTransform):
    """Dictionary wrapper of :class:`SimulateProtocol`: the acquired copy of each key goes to
    ``output_keys`` (default ``key + lr_suffix``); the input stays as the target."""

    def __init__(
        self,
        keys: KeysCollection,
        params: ProtocolParams | Sequence[ProtocolParams],
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        seed: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = output_keys_for(self.keys, output_keys, lr_suffix)
        self.transform = SimulateProtocol(params, spacing, seed)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.transform(d[key])
        return d


class RandSimulateProtocold(SharedStreamWrapper):
    """Dictionary wrapper of :class:`RandSimulateProtocol` (same arguments): one draw per call shared by all
    keys, the acquired copies under ``output_keys`` (default ``key + lr_suffix``). ``prob``: apply or skip
    (skipped: the outputs are float32 copies of the inputs). MONAI's convention: the wrapper draws whether to
    apply, the array transform (``prob=1``) the protocols, both from one random stream."""

    inner = "simulate"

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, RandSimulateProtocol(prob=1.0, **kwargs), prob, allow_missing_keys)
        self.output_keys = output_keys_for(self.keys, output_keys, lr_suffix)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        self.randomize(None)
        if not self._do_transform:
            for key, out_key in self.key_iterator(d, self.output_keys):
                d[out_key] = _unchanged(d[key]).clone()  # a copy: the input and output keys must not alias
            return d
        self.simulate.randomize(int(np.shape(d[first])[0]))
        for key, out_key in self.key_iterator(d, self.output_keys):
            d[out_key] = self.simulate(d[key], randomize=False)
        return d


class RandChannelDropoutd(SharedStreamWrapper):
    """Dictionary wrapper of :class:`RandChannelDropout`: the same channels are zeroed in every key. MONAI's
    convention: the wrapper draws whether to apply (``prob``; skipped: the keys come back as tensors,
    unchanged), the array transform (``prob=1``) the channels, both from one random stream."""

    inner = "dropout"

    def __init__(
        self,
        keys: KeysCollection,
        probs: float | Sequence[float] = 0.1,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, RandChannelDropout(probs, prob=1.0), prob, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        self.randomize(None)
        if not self._do_transform:
            for key in self.key_iterator(d):
                d[key] = _tensor(d[key])  # the type of an applied call, whatever the draw
            return d
        self.dropout.randomize(int(np.shape(d[first])[0]))
        for key in self.key_iterator(d):
            d[key] = self.dropout(d[key], randomize=False)
        return d


# ------------------------------------------------------------------------ forward model (consistency)
def _fine_slice_grid(image, fine_step: float, margin: int):
    """The grid of ``image`` with its slice (largest-spacing) axis sampled every ~``fine_step`` mm and
    ``margin`` slices added each side; returns the grid, the axis, the refinement factor ``r`` and the
    fine index of input slice 0 (input slice ``i`` sits at fine index ``first + r * i``)."""
    import SimpleITK as sitk  # here: training with this module runs where SimpleITK may be missing

    sp = np.asarray(image.GetSpacing(), dtype=float)
    axis = int(np.argmax(sp))
    r = max(int(math.ceil(sp[axis] / fine_step - 1e-6)), 1)
    size = np.asarray(image.GetSize(), dtype=int)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    fine_sp, fine_size = sp.copy(), size.copy()
    fine_sp[axis] = sp[axis] / r
    fine_size[axis] = (size[axis] - 1 + 2 * margin) * r + 1
    origin = np.asarray(image.GetOrigin(), dtype=float) - direction[:, axis] * sp[axis] * margin
    grid = sitk.Image([int(s) for s in fine_size], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in fine_sp])
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin([float(o) for o in origin])
    return grid, axis, r, margin * r


def acquire_like(
    volume: sitk.Image,
    like: sitk.Image,
    transform: sitk.Transform | None = None,
    thickness: float | None = None,
    profile: str = "gaussian",
) -> np.ndarray:
    """Re-acquire ``volume`` (SimpleITK image, e.g. a restored output) on the grid of the routine scan
    ``like``: an (X, Y, Z) array on ``like``'s grid, in ``volume``'s units.

    The slice axis of ``like`` is its largest spacing; slices are ``thickness`` mm thick (default: that
    spacing, i.e. contiguous slices) with a ``gaussian`` (FWHM) or ``boxcar`` profile. ``transform`` maps
    ``like``'s physical points to ``volume``'s (the inverse of a registration of ``like`` onto the output's
    reference; None: same space). When ``like`` is coarser in-plane than ``volume``, ``volume`` is first
    smoothed by a Gaussian of the missing width (isotropic: an approximation of the in-plane voxel)."""
    import SimpleITK as sitk  # here: training with this module runs where SimpleITK may be missing

    # lazy: keeps SimpleITK out of this module's import
    from mtsr_monai.transforms.sitk_utils import resample

    sp = np.asarray(like.GetSpacing(), dtype=float)
    out_sp = float(min(volume.GetSpacing()))
    thickness = float(sp.max() if thickness is None else thickness)
    inplane = float(np.sort(sp)[1])
    src = sitk.Cast(volume, sitk.sitkFloat32)
    if inplane > out_sp * 1.05:
        sigma = math.sqrt(inplane**2 - out_sp**2) / (2 * math.sqrt(2 * math.log(2)))
        if min(src.GetSize()) >= 4:
            src = sitk.SmoothingRecursiveGaussian(src, [sigma] * 3)
        else:  # the recursive filter needs 4 voxels along every axis; the kernel one takes any size
            src = sitk.DiscreteGaussian(src, [sigma**2] * 3, 32, 0.01, True)
    reach = 1.5 * thickness if profile == "gaussian" else 0.5 * thickness  # the profile's support, mm
    margin = int(math.ceil(reach / sp.max())) + 1
    grid, axis, r, first = _fine_slice_grid(like, min(out_sp, sp.max()), margin)
    fine = resample(src, grid, transform, "trilinear", float32=True)
    fine = sitk.GetArrayFromImage(fine).transpose(2, 1, 0)
    n_slices = like.GetSize()[axis]
    centres = first + r * np.arange(n_slices)
    weights = profile_weights(centres, fine.shape[axis], sp[axis] / r, thickness, profile)
    out = np.tensordot(fine.astype(np.float64), weights, axes=([axis], [1]))
    return np.moveaxis(out, -1, axis).astype(np.float32)
