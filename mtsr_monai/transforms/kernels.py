"""2D blur kernels for the second-order degradation: Gaussian families and the circular sinc.

All kernels are odd-sized ``float64`` numpy arrays that sum to 1. A Gaussian-family kernel is built from
the quadratic form ``q(x) = x^T C^{-1} x`` with covariance ``C = R(theta) diag(sx^2, sy^2) R(theta)^T``:

- Gaussian: ``exp(-q / 2)``;
- generalized Gaussian: ``exp(-q^beta / 2)`` (beta = 1 is the Gaussian; beta < 1 heavier tails,
  beta > 1 a flatter top; this is the parametrisation whose range [0.5, 4] Real-ESRGAN samples);
- plateau: ``1 / (1 + q^beta)`` (a flat top with polynomial tails).

The 2D sinc is the ideal circular low-pass filter ``h(r) = wc J1(wc r) / (2 pi r)`` truncated to the
kernel size: it mimics the Gibbs ringing of a truncated k-space. ``wc`` is the cut-off in radians per
pixel (pi = Nyquist).

Parameter ranges and probabilities follow Real-ESRGAN (Wang et al., ICCVW 2021), but beta is drawn
uniformly over its range (BasicSR: below or above 1 with p 0.5 each); ``docs/degradation.md`` lists the
departures. Sampling takes a ``numpy.random.RandomState`` so that MONAI's
``set_random_state`` makes every draw reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Gaussian-family kernel types and the Real-ESRGAN probabilities of drawing each
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
KERNEL_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
#: odd kernel sizes 7..21
KERNEL_SIZES = tuple(range(7, 22, 2))


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``x^T C^{-1} x`` on the centred pixel grid of a ``size`` x ``size`` kernel (rows = y, columns = x)."""
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"sigmas must be positive, got {sigma_x}, {sigma_y}")
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    c, s = np.cos(theta), np.sin(theta)
    # rotate the grid into the kernel's principal axes instead of inverting C explicitly
    u = c * x + s * y
    v = -s * x + c * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalise(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> np.ndarray:
    """Anisotropic (or, with ``sigma_y=None``, isotropic) Gaussian kernel rotated by ``theta``."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(np.exp(-0.5 * q))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Generalized Gaussian ``exp(-q^beta / 2)``; ``beta = 1`` equals :func:`gaussian_kernel`."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(np.exp(-0.5 * q**beta))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """Plateau-shaped kernel ``1 / (1 + q^beta)``."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    return _normalise(1.0 / (1.0 + q**beta))


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """Circular low-pass (2D sinc / Airy) kernel with cut-off ``cutoff`` rad/pixel in (0, pi]."""
    from scipy.special import j1

    _check_size(size)
    if not 0 < cutoff <= np.pi:
        raise ValueError(f"sinc cut-off must lie in (0, pi], got {cutoff}")
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * j1(cutoff * r) / (2 * np.pi * r)
    kernel[half, half] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
    return _normalise(kernel)


def random_kernel_size(rng: np.random.RandomState, sizes: Sequence[int] = KERNEL_SIZES) -> int:
    return int(sizes[rng.randint(len(sizes))])


def random_sinc_kernel(rng: np.random.RandomState, size: int | None = None) -> np.ndarray:
    """Sinc kernel with Real-ESRGAN's cut-off range: U[pi/3, pi] below size 13, else U[pi/5, pi]."""
    size = random_kernel_size(rng) if size is None else size
    low = np.pi / 3 if size < 13 else np.pi / 5
    return sinc_kernel(size, float(rng.uniform(low, np.pi)))


def random_gaussian_family_kernel(
    rng: np.random.RandomState,
    size: int,
    kernel_types: Sequence[str] = KERNEL_TYPES,
    kernel_probs: Sequence[float] = KERNEL_PROBS,
    sigma_range: tuple[float, float] = (0.2, 3.0),
    rotation_range: tuple[float, float] = (-np.pi, np.pi),
    beta_gaussian_range: tuple[float, float] = (0.5, 4.0),
    beta_plateau_range: tuple[float, float] = (1.0, 2.0),
) -> np.ndarray:
    """Draw one kernel type by ``kernel_probs``, then its sigmas, rotation and shape parameter."""
    probs = np.asarray(kernel_probs, dtype=np.float64)
    kind = kernel_types[rng.choice(len(kernel_types), p=probs / probs.sum())]
    sigma_x = float(rng.uniform(*sigma_range))
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(*sigma_range))
        theta = float(rng.uniform(*rotation_range))
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(
            size, sigma_x, sigma_y, theta, float(rng.uniform(*beta_gaussian_range))
        )
    if kind.startswith("plateau"):
        return plateau_kernel(size, sigma_x, sigma_y, theta, float(rng.uniform(*beta_plateau_range)))
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


def random_blur_kernel(
    rng: np.random.RandomState,
    sinc_prob: float = 0.1,
    sizes: Sequence[int] = KERNEL_SIZES,
    **gaussian_kwargs: Any,
) -> np.ndarray:
    """One Real-ESRGAN blur kernel: a sinc with probability ``sinc_prob``, else a Gaussian-family kernel."""
    size = random_kernel_size(rng, sizes)
    if rng.uniform() < sinc_prob:
        return random_sinc_kernel(rng, size)
    return random_gaussian_family_kernel(rng, size, **gaussian_kwargs)
