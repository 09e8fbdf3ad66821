"""Synthetic low-resolution MRI: second-order blur/resize/noise chain, k-space truncation, thick slices.

Three layers, each usable alone:

- array functions on torch tensors of 2D slices ``(N, C, H, W)`` (:func:`second_order_degrade`,
  :func:`kspace_truncate`) and on numpy volumes along one axis (:func:`thick_slice_weights`);
- volume functions ``degrade_volume_*(volume, affine, ...) -> (lr, lr_affine)`` used by ``mtsr degrade``:
  they run slice by slice in the plane normal to ``axis`` and return the affine of the low-resolution grid;
- MONAI dictionary transforms (:class:`RandSecondOrderDegradationd`, :class:`KSpaceTruncationd`,
  :class:`ThickSliceDegradationd`) that accept a channel-first 2D slice ``(C, H, W)`` for on-the-fly
  training or a 3D volume ``(C, H, W, D)``, and write the low-resolution image under a new key.

Geometry convention (all modes): an input whose in-plane size is not a multiple of ``scale`` is first
centre-cropped to the largest multiple (``floor(n / scale) * scale``), so the output has exactly
``floor(n / scale)`` voxels and low-resolution voxel ``i`` summarises high-resolution voxels
``start + i*scale ... start + i*scale + scale - 1``; its centre sits at the centre of that block. The
returned affine scales the in-plane columns by ``scale`` and moves the origin to that block centre, so the
low-resolution image overlays the input in any viewer.

Randomness comes only from ``self.R`` (``numpy.random.RandomState``) as in MONAI: noise tensors are drawn
from a ``torch.Generator`` seeded by ``R``, so ``set_random_state(seed)`` reproduces outputs byte for byte.
Noise standard deviations are fractions of the intensity range (max - min) of the image handed to the
transform: the 2D slice in training (scaled to [0, 1] there), the whole volume in the CLI, so that one
volume gets one noise level, as a scanner gives.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from mtsr_monai.transforms import kernels

# the geometry helpers live in a module without MONAI (commands that only need them start faster)
from mtsr_monai.transforms.geometry import PLANE_WORLD_AXIS, resampled_affine, resolve_axis  # noqa: F401

RESIZE_MODES = ("area", "bilinear", "bicubic")

__all__ = [
    "KSpaceTruncationd",
    "RandSecondOrderDegradationd",
    "SecondOrderDegradation",
    "ThickSliceDegradationd",
    "centre_crop_to_multiple",
    "degrade_volume_kspace",
    "degrade_volume_second_order",
    "degrade_volume_thick_slice",
    "kspace_truncate",
    "resampled_affine",
    "resolve_axis",
    "second_order_degrade",
    "thick_slice_centres",
    "thick_slice_weights",
]


# --------------------------------------------------------------------------------------------- geometry
def centre_crop_to_multiple(
    x: torch.Tensor, dims: Sequence[int], scale: int
) -> tuple[torch.Tensor, dict[int, int]]:
    """Centre-crop tensor dims to a multiple of ``scale``; returns the crop and the start index per dim."""
    starts = {}
    for d in dims:
        n = x.shape[d]
        keep = (n // scale) * scale
        if keep < scale:
            raise ValueError(f"size {n} is smaller than the scale {scale}")
        start = (n - keep) // 2
        starts[d] = start
        x = x.narrow(d, start, keep)
    return x, starts


def _block_centre_offset(start: int, scale: int) -> float:
    return start + (scale - 1) / 2.0


def _lr_grid(
    affine: np.ndarray, inplane: Sequence[int], starts: Mapping[int, int], scale: int
) -> tuple[np.ndarray, dict[int, int]]:
    """Affine of the x``scale`` in-plane grid whose voxels summarise HR blocks beginning at ``starts[axis]``,
    and those starts by spatial axis (``starts`` is keyed by tensor axis, channel first)."""
    offsets = {d: starts[d + 1] for d in inplane}
    lr_affine = resampled_affine(
        affine, {d: scale for d in inplane}, {d: _block_centre_offset(s, scale) for d, s in offsets.items()}
    )
    return lr_affine, offsets


def _noise_seed(rng: np.random.RandomState) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))


def _intensity_range(x: torch.Tensor) -> float:
    r = float(x.max() - x.min())
    return r if r > 0 else 1.0


# -------------------------------------------------------------------------------- second-order chain
def _filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Convolve every (N, C) plane with one 2D kernel, reflect padding (replicate when too small)."""
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    mode = "reflect" if pad < h and pad < w else "replicate"
    flat = F.pad(x.reshape(n * c, 1, h, w), (pad, pad, pad, pad), mode=mode)
    weight = torch.as_tensor(kernel, dtype=x.dtype).reshape(1, 1, k, k)
    return F.conv2d(flat, weight).reshape(n, c, h, w)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, int(size[0])), max(1, int(size[1])))
    if tuple(x.shape[-2:]) == size:
        return x
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **kwargs)


def _add_noise(x: torch.Tensor, kind: str, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise, or Rician: the magnitude of the signal plus complex Gaussian noise."""
    n1 = torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma
    if kind == "gaussian":
        return x + n1
    n2 = torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma
    return torch.sqrt((x + n1) ** 2 + n2**2)


class SecondOrderDegradation:
    """Parameters and sampler of the MRI-adapted Real-ESRGAN chain (defaults = Real-ESRGAN x4plus).

    Dropped for MRI: JPEG, 8-bit rounding, Poisson noise, gray-noise (channels are contrasts, their
    noise is independent). Poisson is replaced by Rician noise at the same sigma range. Noise sigmas are
    fractions of the input's intensity range. No clamping: MRI intensities have no fixed range.
    """

    def __init__(
        self,
        scale: int = 4,
        sinc_prob: float = 0.1,
        kernel_probs: Sequence[float] = kernels.KERNEL_PROBS,
        blur_sigma: tuple[float, float] = (0.2, 3.0),
        beta_gaussian: tuple[float, float] = (0.5, 4.0),
        beta_plateau: tuple[float, float] = (1.0, 2.0),
        resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1),
        resize_range: tuple[float, float] = (0.15, 1.5),
        gaussian_noise_prob: float = 0.5,
        noise_range: tuple[float, float] = (1 / 255, 30 / 255),
        second_blur_prob: float = 0.8,
        sinc_prob2: float = 0.1,
        blur_sigma2: tuple[float, float] = (0.2, 1.5),
        beta_gaussian2: tuple[float, float] = (0.5, 4.0),
        beta_plateau2: tuple[float, float] = (1.0, 2.0),
        resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3),
        resize_range2: tuple[float, float] = (0.3, 1.2),
        gaussian_noise_prob2: float = 0.5,
        noise_range2: tuple[float, float] = (1 / 255, 25 / 255),
        final_sinc_prob: float = 0.8,
        kernel_sizes: Sequence[int] = kernels.KERNEL_SIZES,
    ) -> None:
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.kernel_sizes = tuple(kernel_sizes)
        self.stage1 = dict(
            sinc_prob=sinc_prob,
            kernel_probs=kernel_probs,
            sigma=blur_sigma,
            beta_g=beta_gaussian,
            beta_p=beta_plateau,
            resize_prob=resize_prob,
            resize_range=resize_range,
            gaussian_noise_prob=gaussian_noise_prob,
            noise_range=noise_range,
            blur_prob=1.0,
        )
        self.stage2 = dict(
            sinc_prob=sinc_prob2,
            kernel_probs=kernel_probs,
            sigma=blur_sigma2,
            beta_g=beta_gaussian2,
            beta_p=beta_plateau2,
            resize_prob=resize_prob2,
            resize_range=resize_range2,
            gaussian_noise_prob=gaussian_noise_prob2,
            noise_range=noise_range2,
            blur_prob=second_blur_prob,
        )
        self.final_sinc_prob = final_sinc_prob

    def _sample_stage(self, rng: np.random.RandomState, cfg: dict[str, Any]) -> dict[str, Any]:
        kernel = None
        if rng.uniform() < cfg["blur_prob"]:
            kernel = kernels.random_blur_kernel(
                rng,
                sinc_prob=cfg["sinc_prob"],
                sizes=self.kernel_sizes,
                kernel_probs=cfg["kernel_probs"],
                sigma_range=cfg["sigma"],
                beta_gaussian_range=cfg["beta_g"],
                beta_plateau_range=cfg["beta_p"],
            )
        updown = ("up", "down", "keep")[
            rng.choice(3, p=np.asarray(cfg["resize_prob"]) / sum(cfg["resize_prob"]))
        ]
        low, high = cfg["resize_range"]
        factor = {
            "up": lambda: rng.uniform(1, high),
            "down": lambda: rng.uniform(low, 1),
            "keep": lambda: 1.0,
        }[updown]()
        mode = RESIZE_MODES[rng.randint(len(RESIZE_MODES))]
        noise = "gaussian" if rng.uniform() < cfg["gaussian_noise_prob"] else "rician"
        sigma = float(rng.uniform(*cfg["noise_range"]))
        return dict(kernel=kernel, factor=float(factor), mode=mode, noise=noise, sigma=sigma)

    def sample(self, rng: np.random.RandomState) -> dict[str, Any]:
        """Draw every random choice of one degradation (kernels, resize factors and modes, noise, order)."""
        params = {
            "stage1": self._sample_stage(rng, self.stage1),
            "stage2": self._sample_stage(rng, self.stage2),
        }
        params["final_resize_first"] = bool(rng.uniform() < 0.5)
        params["final_mode"] = RESIZE_MODES[rng.randint(len(RESIZE_MODES))]
        params["final_sinc"] = (
            kernels.random_sinc_kernel(rng, kernels.random_kernel_size(rng, self.kernel_sizes))
            if rng.uniform() < self.final_sinc_prob
            else None
        )
        params["noise_seed"] = int(rng.randint(0, 2**31 - 1))
        return params


def second_order_degrade(
    x: torch.Tensor, params: Mapping[str, Any], scale: int, intensity_range: float | None = None
) -> torch.Tensor:
    """Apply a sampled second-order degradation to slices ``(N, C, H, W)`` with H, W multiples of ``scale``.

    Returns ``(N, C, H // scale, W // scale)``. The resize of stage 2 is relative to the final size, as in
    Real-ESRGAN. ``intensity_range`` (default: the range of ``x``) converts the noise fractions.
    """
    if x.ndim != 4:
        raise ValueError(f"expected slices (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    out_size = (h // scale, w // scale)
    scale_ref = _intensity_range(x) if intensity_range is None else intensity_range
    generator = torch.Generator().manual_seed(int(params["noise_seed"]))
    out = x
    for stage, target in (("stage1", None), ("stage2", out_size)):
        p = params[stage]
        if p["kernel"] is not None:
            out = _filter2d(out, p["kernel"])
        if target is None:
            size = (round(out.shape[-2] * p["factor"]), round(out.shape[-1] * p["factor"]))
        else:
            size = (int(target[0] * p["factor"]), int(target[1] * p["factor"]))
        out = _resize(out, size, p["mode"])
        out = _add_noise(out, p["noise"], p["sigma"] * scale_ref, generator)
    sinc = params["final_sinc"]
    if params["final_resize_first"]:
        out = _resize(out, out_size, params["final_mode"])
        out = _filter2d(out, sinc) if sinc is not None else out
    else:
        out = _filter2d(out, sinc) if sinc is not None else out
        out = _resize(out, out_size, params["final_mode"])
    return out


# ------------------------------------------------------------------------------------ k-space truncation
def kspace_truncate(
    x: torch.Tensor,
    scale: int,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
    keep_grid: bool = False,
) -> torch.Tensor:
    """Keep the central ``1/scale`` of the 2D k-space of the last two dims, add complex Gaussian noise there,
    and return the magnitude image (Rician noise, Gibbs ringing kept).

    ``keep_grid=False``: the output has ``H // scale`` x ``W // scale`` pixels (inputs must be multiples of
    ``scale``) and a half-block phase shift puts pixel ``i`` at the centre of high-resolution block ``i``.
    ``keep_grid=True``: same size as the input, k-space zero-filled. ``noise_std`` is the per-pixel standard
    deviation of each of the real and imaginary parts in the image, in image units.
    """
    h, w = x.shape[-2:]
    mh, mw = h // scale, w // scale
    if mh < 1 or mw < 1:
        raise ValueError(f"image {h}x{w} is smaller than the scale {scale}")
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.to(torch.float64), norm="ortho"), dim=(-2, -1))
    sh, sw = h // 2 - mh // 2, w // 2 - mw // 2  # keeps DC at the centre index of the smaller matrix
    kept = spectrum[..., sh : sh + mh, sw : sw + mw]
    noise_shape = kept.shape
    if keep_grid:
        full = torch.zeros_like(spectrum)
        full[..., sh : sh + mh, sw : sw + mw] = kept
        noise_scale = math.sqrt(h * w / (mh * mw))  # zero-filling spreads k-space noise over more pixels
        target, (oh, ow) = full, (sh, sw)
    else:
        # ortho FFTs of different sizes: rescale so that the mean intensity is unchanged
        kept = kept * math.sqrt(mh * mw / (h * w))
        ky = torch.arange(mh, dtype=torch.float64) - mh // 2
        kx = torch.arange(mw, dtype=torch.float64) - mw // 2
        shift = (scale - 1) / 2.0  # sample at HR block centres, i.e. HR index i*scale + (scale-1)/2
        phase = torch.exp(2j * math.pi * shift * (ky[:, None] / h + kx[None, :] / w))
        kept = kept * phase
        noise_scale = 1.0
        target, (oh, ow) = kept, (0, 0)
    if noise_std > 0:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        real = torch.randn(noise_shape, generator=gen, dtype=torch.float64)
        imag = torch.randn(noise_shape, generator=gen, dtype=torch.float64)
        target = target.clone()
        target[..., oh : oh + mh, ow : ow + mw] += noise_std * noise_scale * torch.complex(real, imag)
    image = torch.fft.ifft2(torch.fft.ifftshift(target, dim=(-2, -1)), norm="ortho")
    return image.abs().to(x.dtype)


# ------------------------------------------------------------------------------------------ thick slices
def thick_slice_centres(n: int, spacing: float, thickness: float, gap: float) -> np.ndarray:
    """Continuous input indices of the centres of the thick slices that fit in ``n`` voxels of ``spacing`` mm.

    Slices are ``thickness`` mm thick, ``thickness + gap`` mm apart; the stack is centred in the field of
    view.
    """
    period = thickness + gap
    if thickness <= 0 or period <= 0:
        raise ValueError(f"need thickness > 0 and thickness + gap > 0, got {thickness}, {gap}")
    fov = n * spacing
    if thickness > fov:
        raise ValueError(f"slice thickness {thickness} mm exceeds the field of view {fov:.1f} mm")
    count = int(math.floor((fov - thickness) / period + 1e-9)) + 1
    extent = (count - 1) * period + thickness
    first_mm = (fov - extent) / 2 + thickness / 2  # from the outer edge of voxel 0
    return -0.5 + (first_mm + period * np.arange(count)) / spacing


def thick_slice_weights(
    n: int, spacing: float, thickness: float, gap: float = 0.0, profile: str = "gaussian"
) -> tuple[np.ndarray, np.ndarray]:
    """Matrix ``(n_slices, n)`` averaging input voxels into thick slices, and the slice centres (indices).

    Each weight is the slice profile integrated over one input voxel: a Gaussian of FWHM ``thickness``
    or a boxcar of width ``thickness``; rows are normalised to sum to 1.
    """
    from scipy.special import ndtr

    centres = thick_slice_centres(n, spacing, thickness, gap)
    lo = (np.arange(n)[None, :] - 0.5 - centres[:, None]) * spacing  # voxel edges, mm from slice centre
    hi = lo + spacing
    if profile == "gaussian":
        sigma = thickness / (2 * math.sqrt(2 * math.log(2)))
        weights = ndtr(hi / sigma) - ndtr(lo / sigma)
    elif profile == "boxcar":
        weights = np.clip(np.minimum(hi, thickness / 2) - np.maximum(lo, -thickness / 2), 0, None)
    else:
        raise ValueError(f"unknown slice profile {profile!r}; choose 'gaussian' or 'boxcar'")
    return weights / weights.sum(axis=1, keepdims=True), centres


def _block_mean(x: torch.Tensor, dims: Sequence[int], scale: int) -> torch.Tensor:
    for d in dims:
        shape = list(x.shape)
        shape[d : d + 1] = [shape[d] // scale, scale]
        x = x.reshape(shape).mean(dim=d + 1)
    return x


def _apply_along(x: torch.Tensor, weights: np.ndarray, dim: int) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64)
    return torch.movedim(torch.tensordot(x.to(torch.float64), w, dims=([dim], [1])), -1, dim)


# ------------------------------------------------------------------------------ slice-wise plumbing
def _to_slices(x: torch.Tensor, through: int) -> tuple[torch.Tensor, Any]:
    """(C, *spatial3) -> (S, C, a, b) with S along spatial axis ``through``."""
    moved = torch.movedim(x, through + 1, 0)
    return moved, through


def _from_slices(slices: torch.Tensor, through: int) -> torch.Tensor:
    return torch.movedim(slices, 0, through + 1)


def _inplane(spatial_ndim: int, through: int | None) -> list[int]:
    return [d for d in range(spatial_ndim) if d != through] if spatial_ndim == 3 else [0, 1]


def _as_plain(x: Any) -> torch.Tensor:
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)


def _wrap_like(out: torch.Tensor, like: Any, affine: np.ndarray | None) -> Any:
    if isinstance(like, MetaTensor):
        meta = dict(like.meta)
        if affine is not None:
            meta["affine"] = torch.as_tensor(affine, dtype=torch.float64)
            meta["spatial_shape"] = np.asarray(out.shape[1:])
        return MetaTensor(out, meta=meta)
    if isinstance(like, np.ndarray):
        return out.numpy()
    return out


def _affine_of(x: Any, spatial_ndim: int) -> np.ndarray:
    if isinstance(x, MetaTensor):
        return np.asarray(x.affine.detach().cpu(), dtype=np.float64)
    return np.eye(max(spatial_ndim, 3) + 1)


def _apply_second_order(
    x: torch.Tensor,
    affine: np.ndarray,
    scale: int,
    through: int | None,
    params: Mapping[str, Any],
    intensity_range: float | None = None,
) -> tuple[torch.Tensor, np.ndarray, dict[int, int]]:
    """Channel-first x (C, H, W) or (C, H, W, D) -> LR tensor, LR affine, crop starts per spatial dim.
    Noise sigmas are fractions of ``intensity_range`` (default: max - min of x)."""
    spatial = x.ndim - 1
    inplane = _inplane(spatial, through)
    cropped, starts = centre_crop_to_multiple(x, [d + 1 for d in inplane], scale)
    rng_ref = _intensity_range(cropped) if intensity_range is None else float(intensity_range)
    if spatial == 2:
        lr = second_order_degrade(cropped[None].float(), params, scale, rng_ref)[0]
    else:
        slices, _ = _to_slices(cropped.float(), through)
        lr = _from_slices(second_order_degrade(slices, params, scale, rng_ref), through)
    return (lr, *_lr_grid(affine, inplane, starts, scale))


def _apply_kspace(
    x: torch.Tensor,
    affine: np.ndarray,
    scale: int,
    through: int | None,
    noise: float,
    generator: torch.Generator,
    keep_grid: bool,
) -> tuple[torch.Tensor, np.ndarray, dict[int, int]]:
    spatial = x.ndim - 1
    inplane = _inplane(spatial, through)
    if keep_grid:
        cropped, starts = x, {d + 1: 0 for d in inplane}
    else:
        cropped, starts = centre_crop_to_multiple(x, [d + 1 for d in inplane], scale)
    sigma = noise * _intensity_range(cropped)
    if spatial == 2:
        lr = kspace_truncate(cropped.float(), scale, sigma, generator, keep_grid)
    else:
        slices, _ = _to_slices(cropped.float(), through)
        lr = _from_slices(kspace_truncate(slices, scale, sigma, generator, keep_grid), through)
    if keep_grid:
        return lr, np.asarray(affine, dtype=np.float64), {}
    return (lr, *_lr_grid(affine, inplane, starts, scale))


def _apply_thick_slice(
    x: torch.Tensor,
    affine: np.ndarray,
    through: int,
    thickness: float,
    gap: float,
    profile: str,
    scale: int,
    noise: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, np.ndarray]:
    spatial = x.ndim - 1
    spacing = float(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:-1, through]))
    if thickness < spacing - 1e-6:
        raise ValueError(f"slice thickness {thickness} mm is below the input spacing {spacing:.3f} mm")
    weights, centres = thick_slice_weights(x.shape[through + 1], spacing, thickness, gap, profile)
    out = _apply_along(x, weights, through + 1)
    factors: dict[int, float] = {through: (thickness + gap) / spacing}
    offsets: dict[int, float] = {through: float(centres[0])}
    if scale > 1:
        inplane = [d for d in range(spatial) if d != through]
        out, starts = centre_crop_to_multiple(out, [d + 1 for d in inplane], scale)
        out = _block_mean(out, [d + 1 for d in inplane], scale)
        factors.update({d: float(scale) for d in inplane})
        offsets.update({d: _block_centre_offset(starts[d + 1], scale) for d in inplane})
    if noise > 0:
        sigma = noise * _intensity_range(x)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        out = _add_noise(out, "rician", sigma, gen)
    return out.to(torch.float32), resampled_affine(affine, factors, offsets)


# ------------------------------------------------------------------------------- volume-level API
def _volume_tensor(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    v = _as_plain(volume)
    if v.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {tuple(v.shape)}")
    return v.to(torch.float32)[None]


def degrade_volume_second_order(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    scale: int = 4,
    axis: str | int = "axial",
    seed: int = 0,
    **chain_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Second-order degradation of a 3D volume slice by slice in the plane normal to ``axis``.

    One draw of the chain's parameters for the whole volume (a scanner blurs every slice alike); noise is
    independent per voxel, its sigmas fractions of the volume's robust range (``robust_range``: 0 to the
    99.5th percentile of the brain), the range a training patch has after its volume's scaling; max - min of
    a raw volume is set by a few outlier voxels (up to 2x the robust range here). Returns the float32 LR
    volume and its affine.
    """
    from mtsr_monai.data.slices import robust_range

    chain = SecondOrderDegradation(scale=scale, **chain_kwargs)
    params = chain.sample(np.random.RandomState(seed))
    through = resolve_axis(affine, axis)
    lo, hi = robust_range(volume)
    lr, affine_lr, _ = _apply_second_order(
        _volume_tensor(volume), affine, chain.scale, through, params, intensity_range=hi - lo
    )
    return lr[0].numpy().astype(np.float32), affine_lr


def degrade_volume_kspace(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    scale: int = 4,
    axis: str | int = "axial",
    noise: float = 0.01,
    keep_grid: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Central in-plane k-space truncation by ``scale`` with complex Gaussian noise (fraction ``noise`` of the
    volume's intensity range); per slice 2D FFTs, which equals truncating the 3D k-space in-plane only."""
    through = resolve_axis(affine, axis)
    generator = _noise_seed(np.random.RandomState(seed))
    lr, affine_lr, _ = _apply_kspace(
        _volume_tensor(volume), affine, int(scale), through, noise, generator, keep_grid
    )
    return lr[0].numpy().astype(np.float32), affine_lr


def degrade_volume_thick_slice(
    volume: np.ndarray | torch.Tensor,
    affine: np.ndarray,
    thickness: float,
    gap: float = 0.0,
    axis: str | int = "axial",
    profile: str = "gaussian",
    scale: int = 1,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a 2D clinical protocol: thick slices (profile of FWHM/width ``thickness`` mm, ``gap`` mm
    apart) along ``axis``, optional in-plane block averaging by ``scale``, optional Rician noise."""
    through = resolve_axis(affine, axis)
    generator = _noise_seed(np.random.RandomState(seed))
    lr, affine_lr = _apply_thick_slice(
        _volume_tensor(volume), affine, through, thickness, gap, profile, int(scale), noise, generator
    )
    return lr[0].numpy().astype(np.float32), affine_lr


# --------------------------------------------------------------------------- dictionary transforms
class _DegradationBase(RandomizableTransform, MapTransform):
    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None,
        lr_suffix: str,
        axis: str | int,
        prob: float,
        allow_missing_keys: bool,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if output_keys is None:
            self.output_keys = tuple(f"{k}{lr_suffix}" for k in self.keys)
        else:
            self.output_keys = tuple([output_keys] if isinstance(output_keys, str) else output_keys)
        if len(self.output_keys) != len(self.keys):
            raise ValueError("output_keys must name one output per key")
        self.axis = axis

    def _through(self, img: Any, x: torch.Tensor) -> int | None:
        spatial = x.ndim - 1
        if spatial == 2:
            return None
        if spatial != 3:
            raise ValueError(f"expected (C, H, W) or (C, H, W, D), got shape {tuple(x.shape)}")
        return resolve_axis(_affine_of(img, 3), self.axis)


class RandSecondOrderDegradationd(_DegradationBase):
    """Second-order (Real-ESRGAN chain adapted to MRI) low-resolution copy of each key, stored under
    ``key + lr_suffix`` (or ``output_keys``).

    Accepts ``(C, H, W)`` slices or ``(C, H, W, D)`` volumes (degraded slice by slice normal to ``axis``).
    One parameter draw per call, shared by all keys (co-registered contrasts get the same blur), noise
    drawn independently. With probability ``1 - prob`` the LR is a clean area (block-mean) downsampling.
    ``crop_hr=True`` replaces each input by its centre crop to a multiple of ``scale`` so the pair aligns.
    Chain parameters (``sinc_prob``, ``blur_sigma``, ``noise_range``, ...) are those of
    :class:`SecondOrderDegradation`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        axis: str | int = "axial",
        crop_hr: bool = True,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
        **chain_kwargs: Any,
    ) -> None:
        super().__init__(keys, output_keys, lr_suffix, axis, prob, allow_missing_keys)
        self.chain = SecondOrderDegradation(scale=scale, **chain_kwargs)
        self.crop_hr = crop_hr
        self.params: dict[str, Any] | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.params = self.chain.sample(self.R) if self._do_transform else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        scale = self.chain.scale
        for key, out_key in self.key_iterator(d, self.output_keys):
            img = d[key]
            x = _as_plain(img)
            through = self._through(img, x)
            affine = _affine_of(img, x.ndim - 1)
            if self.params is not None:
                params = dict(self.params)
                params["noise_seed"] = int(self.R.randint(0, 2**31 - 1))  # independent noise per key
                lr, affine_lr, starts = _apply_second_order(x, affine, scale, through, params)
            else:
                inplane = _inplane(x.ndim - 1, through)
                cropped, st = centre_crop_to_multiple(x.float(), [k + 1 for k in inplane], scale)
                lr = _block_mean(cropped, [k + 1 for k in inplane], scale)
                affine_lr, starts = _lr_grid(affine, inplane, st, scale)
            d[out_key] = _wrap_like(lr.to(torch.float32), img, affine_lr)
            if self.crop_hr:
                hr = x
                for k, s in starts.items():
                    hr = hr.narrow(k + 1, s, (hr.shape[k + 1] // scale) * scale)
                d[key] = _wrap_like(
                    hr, img, resampled_affine(affine, {}, {k: float(s) for k, s in starts.items()})
                )
        return d


class KSpaceTruncationd(_DegradationBase):
    """Central k-space truncation by ``scale`` in-plane with complex Gaussian noise (Rician magnitude).

    ``noise`` is the noise standard deviation as a fraction of the image's intensity range; ``keep_grid``
    keeps the input matrix (zero-filled k-space) instead of the smaller LR matrix.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        noise: float = 0.01,
        keep_grid: bool = False,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        axis: str | int = "axial",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_keys, lr_suffix, axis, prob, allow_missing_keys)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale, self.noise, self.keep_grid = int(scale), float(noise), keep_grid

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        for key, out_key in self.key_iterator(d, self.output_keys):
            img = d[key]
            x = _as_plain(img)
            through = self._through(img, x)
            noise = self.noise if self._do_transform else 0.0
            lr, affine_lr, _ = _apply_kspace(
                x,
                _affine_of(img, x.ndim - 1),
                self.scale,
                through,
                noise,
                _noise_seed(self.R),
                self.keep_grid,
            )
            d[out_key] = _wrap_like(lr.to(torch.float32), img, affine_lr)
        return d


class ThickSliceDegradationd(_DegradationBase):
    """Thick-slice 2D protocol: slices of ``thickness`` mm, ``gap`` mm apart, along ``axis``.

    The input spacing along the axis comes from the MetaTensor affine (1 mm for plain tensors). ``scale``
    block-averages in-plane; ``noise`` (fraction of the intensity range) adds Rician noise, with probability
    ``prob``. Works on ``(C, H, W, D)``, or ``(C, H, W)`` with an integer ``axis``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        thickness: float,
        gap: float = 0.0,
        axis: str | int = "axial",
        profile: str = "gaussian",
        scale: int = 1,
        noise: float = 0.0,
        output_keys: KeysCollection | None = None,
        lr_suffix: str = "_lr",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, output_keys, lr_suffix, axis, prob, allow_missing_keys)
        if profile not in ("gaussian", "boxcar"):
            raise ValueError(f"unknown slice profile {profile!r}")
        self.thickness, self.gap, self.profile = float(thickness), float(gap), profile
        self.scale, self.noise = int(scale), float(noise)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        for key, out_key in self.key_iterator(d, self.output_keys):
            img = d[key]
            x = _as_plain(img)
            spatial = x.ndim - 1
            if spatial == 2:
                if not isinstance(self.axis, (int, np.integer)):
                    raise ValueError("a 2D slice needs an integer axis for thick-slice degradation")
                through = int(self.axis) % 2
            else:
                through = self._through(img, x)
            noise = self.noise if self._do_transform else 0.0
            lr, affine_lr = _apply_thick_slice(
                x,
                _affine_of(img, spatial),
                through,
                self.thickness,
                self.gap,
                self.profile,
                self.scale,
                noise,
                _noise_seed(self.R),
            )
            d[out_key] = _wrap_like(lr, img, affine_lr)
        return d
