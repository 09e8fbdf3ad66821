"""Shared fixtures: tiny synthetic volumes, and the real data in ../shared/data when it exists."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MTSR_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n N``), one compute thread per worker, set before torch loads: N workers with
    a thread per core each would spin in OpenMP barriers against one another and slow every test down."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = "1"


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def unit_grid(shape: Sequence[int]) -> list[np.ndarray]:
    """Each voxel's coordinates, -1 to 1 across each axis (``ij`` order): the synthetic heads' frame."""
    return np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")


def ellipsoid(shape: Sequence[int], radii: float | Sequence[float] = 1.0) -> np.ndarray:
    """True inside the centred ellipsoid of semi-axes ``radii`` (one, or one per axis), in units of each
    axis's half-width: the outline of the tests' synthetic heads and brains."""
    radii = np.broadcast_to(radii, (len(shape),))
    return sum((g / r) ** 2 for g, r in zip(unit_grid(shape), radii, strict=True)) < 1


@pytest.fixture
def phantom() -> np.ndarray:
    """A 32x32x16 ellipsoid 'head' with an inner 'brain' of another intensity, deterministic."""
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), np.linspace(-1, 1, 16), indexing="ij"
    )
    r = z**2 + y**2 + x**2
    vol = np.where(r < 0.8, 0.6, 0.0) + np.where(r < 0.4, 0.4, 0.0)
    return (vol + 0.01 * np.random.default_rng(0).standard_normal(vol.shape)).astype(np.float32)


@pytest.fixture
def phantom_file(tmp_path: Path, phantom: np.ndarray) -> Path:
    return write_nifti(tmp_path / "phantom.nii.gz", phantom, np.diag([1.0, 1.0, 2.0, 1.0]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that reads ../shared/data through ``shared_data`` (directly or through another fixture)
    carries the ``real_data`` marker, so ``-m "not real_data"`` leaves them all out."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set MTSR_SHARED_DATA); skipping real-data test")
    return SHARED_DATA


@pytest.fixture
def brats_case(shared_data: Path) -> dict[str, Path]:
    """One real BraTS 2018 case (t1, t1ce, t2, flair, seg on one 240x240x155 grid)."""
    case = sorted((shared_data / "brats2018_tcia").iterdir())[0]
    return {p.name.split("_")[-1].split(".")[0]: p for p in case.glob("*.nii.gz")}
