"""Checks that refuse volumes no model should see, each raising :class:`InputError` naming the problem."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.errors import InputError
from mtsr_monai.io.geometry import SHEAR_TOLERANCE_DEGREES, shear_degrees

#: voxel sizes outside this range (mm) are header errors, not MRI (0.05 mm .. 20 mm)
MIN_VOXEL_MM, MAX_VOXEL_MM = 0.05, 20.0


#: the isotropic voxel sizes (mm) a resampling target grid may have (clinical SR's ``--spacing``)
SPACING_RANGE_MM = (0.1, 10.0)
#: the most voxels a target grid may have: 2^28 (a 1 GB float32 channel, 0.4 mm over a 256 mm cube); finer
#: grids of a whole head would need tens of GB per volume
MAX_GRID_VOXELS = 2**28


def check_spacing(spacing: float | None, option: str = "--spacing") -> None:
    """InputError unless ``spacing`` (mm; None: not given) is a number in :data:`SPACING_RANGE_MM`."""
    low, high = SPACING_RANGE_MM
    if spacing is not None and not low <= float(spacing) <= high:
        raise InputError(f"{option} {spacing} mm is outside {low:g}-{high:g} mm")


def check_grid_size(size: Sequence[int], what: str = "the target grid") -> None:
    """InputError for a grid of more than :data:`MAX_GRID_VOXELS` voxels (it could not be held in memory)."""
    voxels = int(np.prod([int(n) for n in size], dtype=np.int64))
    if voxels > MAX_GRID_VOXELS:
        dims = " x ".join(str(int(n)) for n in size)
        raise InputError(
            f"{what} would have {dims} = {voxels / 1e6:.0f} M voxels (at most "
            f"{MAX_GRID_VOXELS / 1e6:.0f} M): give a coarser --spacing"
        )


def validate_grid(shape: Sequence[int], affine: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse a grid that is not 3D (at least 2 voxels per axis), or whose affine is not a valid mapping:
    non-finite, singular, or with voxel sizes outside 0.05-20 mm."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume, got {len(shape)}D data of shape {shape}", path)
    if min(shape) < 2:
        raise InputError(f"expected a 3D volume, got shape {shape} (a 2D image?)", path)
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError("the voxel-to-world affine is not a finite 4x4 matrix: check the header", path)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if spacing.min() < MIN_VOXEL_MM or spacing.max() > MAX_VOXEL_MM:
        raise InputError(
            f"absurd voxel size {tuple(round(float(s), 4) for s in spacing)} mm "
            f"(accepted {MIN_VOXEL_MM}-{MAX_VOXEL_MM} mm): check the header",
            path,
        )
    # columns of equal length can still be (nearly) parallel: a degenerate grid
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(spacing)):
        raise InputError("the affine is singular (voxel axes are not independent): check the header", path)


def check_volume_array(array: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse (:class:`InputError`) an array that is not 3D or holds NaN/Inf voxels: what the Python API's
    volume functions take (a NaN voxel made a whole SR output NaN)."""
    if array.size == 0:  # readers flatten a header shape such as (32, 0, 8) to (0,)
        raise InputError("the image has no voxels (a dimension of size 0)", path)
    if array.ndim != 3:
        hint = "; drop the channel axis (array[0])" if array.ndim == 4 and array.shape[0] == 1 else ""
        raise InputError(
            f"expected a 3D volume, got {array.ndim}D data of shape {tuple(array.shape)}{hint}", path
        )
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"{int(array.size - finite.sum())} voxels are NaN or Inf", path)


def validate_volume(
    array: np.ndarray, affine: np.ndarray, path: str | Path | None = None, allow_constant: bool = False
) -> None:
    """Refuse non-3D data, NaN/Inf voxels, constant images (unless ``allow_constant``) and invalid grids
    (:func:`validate_grid`); warn about an image with no positive voxel (MRI magnitude images have air near 0
    and tissue above it: every model and measure here assumes so)."""
    check_volume_array(array, path)
    validate_grid(array.shape, affine, path)
    if allow_constant:
        return
    if float(array.max()) == float(array.min()):
        raise InputError(f"the image is constant (every voxel is {float(array.min())})", path)
    if float(array.max()) <= 0:
        import warnings

        name = Path(path).name if path is not None else "the image"
        warnings.warn(f"{name} has no positive intensity (at most {float(array.max()):g}): the models and "
                      "measures expect a magnitude image (air near 0, tissue above); results will not mean "
                      "much", stacklevel=2)  # fmt: skip


#: millimetres per NIfTI spatial unit (xyzt_units & 7): metre, micron; mm and "unknown" (taken as mm) are 1
MM_PER_UNIT = {1: 1000.0, 3: 0.001}


def mm_per_unit(header: Any) -> float:
    """Millimetres per unit of a NIfTI ``header``'s spatial unit (:data:`MM_PER_UNIT`)."""
    return MM_PER_UNIT.get(int(header["xyzt_units"]) & 7, 1.0)


def check_nifti_header(path: str | Path) -> float:
    """Refuse a NIfTI header whose sform is in force (sform_code > 0) but all zeros or singular; warn when
    the header has no spatial codes or its qform and sform place the image apart (readers then disagree on
    where it is: nibabel and MONAI take the sform, ITK the qform). Returns the millimetres per unit of the
    header's spatial unit (``MM_PER_UNIT``; 1 for mm): the affine read from the file is multiplied by it,
    because nibabel and MONAI ignore the unit that ITK honours.

    NIfTI says the sform, when its code is set, maps voxels to world; readers given a void one fall
    back silently to a stale qform or to pixdim with the origin at 0, misplacing the image by centimetres.
    No fallback is taken here: the message says how to fix the header. A file whose header nibabel
    cannot read is refused in nibabel's words (MONAI's loader would only say that no reader suits it).
    """
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for non-NIfTI bytes
        detail = " ".join(str(err).replace(str(path), Path(path).name).split())[:160]
        raise InputError(f"unreadable or truncated image (nibabel: {detail})", path) from err
    if header.get_data_dtype().kind == "c":
        raise InputError("complex data: give the magnitude image", path)
    if header.get_data_dtype().fields:  # RGB / RGBA: a structured type, one field a channel
        channels = len(header.get_data_dtype().fields)
        raise InputError(f"expected a scalar image, got {channels} values a voxel (colour or vector)", path)
    if not isinstance(header, nib.Nifti1Header):
        return 1.0
    _check_sform(header, path)
    _check_voxel_size(header, path)
    _warn_about_codes(header, path)
    _warn_about_shear(header, path)
    return mm_per_unit(header)


def _check_sform(header: Any, path: str | Path) -> None:
    if int(header["sform_code"]) <= 0:
        return
    sform = np.asarray(header.get_sform(), dtype=float)
    if np.all(np.isfinite(sform)) and abs(np.linalg.det(sform[:3, :3])) > 1e-12:
        return
    what = "all zeros" if not np.any(sform[:3]) else "singular or not finite"
    raise InputError(
        f"the sform is {what} though sform_code is {int(header['sform_code'])}: the header has no valid "
        f"voxel-to-world mapping; fix it (or set sform_code to 0 to use the qform, "
        f"qform_code {int(header['qform_code'])})",
        path,
    )


def _check_voxel_size(header: Any, path: str | Path) -> None:
    """Without an sform in force the voxel size comes from pixdim, which must be non-zero and finite:
    nibabel silently takes a zero as 1 mm, so the image would be read with the wrong shape in space."""
    if int(header["sform_code"]) > 0:
        return
    pixdim = _raw_pixdim(path, type(header))
    if pixdim is not None and not (np.all(np.isfinite(pixdim)) and np.all(pixdim != 0)):
        raise InputError(
            f"pixdim[1:4] is {tuple(float(v) for v in pixdim)} and no sform is in force: the header has no "
            "valid voxel size; fix pixdim (or give an sform)",
            path,
        )


def _raw_pixdim(path: str | Path, kind: type) -> np.ndarray | None:
    """The spatial pixdim as stored in the file, one per spatial dimension the image has (at most 3), read
    with the header class ``kind`` (NIfTI-1 or -2): nibabel's loaded header has already replaced a zero by 1.
    A negative value is taken as its magnitude by nibabel, as here."""
    import nibabel as nib

    try:
        with nib.openers.ImageOpener(str(path)) as f:
            raw = kind.from_fileobj(f, check=False)
    except Exception:  # noqa: BLE001 - an odd file: left to nibabel's own checks
        return None
    spatial = min(max(int(raw["dim"][0]), 1), 3)  # a 2D image is refused as 2D, not for its third size
    return np.asarray(raw["pixdim"][1 : 1 + spatial], dtype=float)


def _warn_about_shear(header: Any, path: str | Path) -> None:
    import warnings

    shear = shear_degrees(header.get_sform()) if int(header["sform_code"]) > 0 else 0.0
    if shear > SHEAR_TOLERANCE_DEGREES:
        message = (
            f"{Path(path).name}: its voxel axes are sheared ({shear:.2f} degrees from perpendicular); "
            "ITK-based tools refuse or misplace such an image, and outputs carry the sheared sform only "
            "(qform_code 0)"
        )
        warnings.warn(message, stacklevel=3)


def _warn_about_codes(header: Any, path: str | Path) -> None:
    import warnings

    name = Path(path).name
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code <= 0 and qform_code <= 0:
        message = (
            f"{name}: the header has no spatial codes (qform and sform code 0), so its position in space is "
            "a guess that readers make differently; outputs carry that guess"
        )
        warnings.warn(message, stacklevel=3)
    elif sform_code > 0 and qform_code > 0:
        # the largest distance over the field of view's corners: a flip moves the edges, not the centre
        last = np.asarray(header.get_data_shape()[:3], float) - 1
        corners = np.array([[*(last * bits), 1.0] for bits in np.ndindex(2, 2, 2)]).T
        moved = (header.get_sform() - header.get_qform()) @ corners
        apart = float(np.linalg.norm(moved[:3], axis=0).max()) * mm_per_unit(header)
        if apart > 1.0:
            message = (
                f"{name}: its qform and sform place the image {apart:.1f} mm apart; mtsr uses the sform (as "
                "nibabel), ITK-based tools the qform, and outputs carry the sform only"
            )
            warnings.warn(message, stacklevel=3)


def check_same_grid(
    shapes: Sequence[Sequence[int]],
    affines: Sequence[np.ndarray],
    paths: Sequence[str | Path],
    atol_mm: float = 1e-3,
    hint: str = "register / resample the modalities first (mtsr preprocess)",
) -> None:
    """Refuse volumes of one subject that are not on one grid where a co-registered set is required;
    ``hint`` (what to do) ends the message."""
    ref_shape, ref_affine, ref_path = tuple(shapes[0]), np.asarray(affines[0]), paths[0]
    for shape, affine, path in zip(shapes[1:], affines[1:], paths[1:], strict=True):
        if tuple(shape) != ref_shape:
            raise InputError(
                f"not on the grid of {ref_path}: shape {tuple(shape)} != {ref_shape}; {hint}",
                path,
            )
        if not np.allclose(np.asarray(affine), ref_affine, atol=atol_mm):
            raise InputError(
                f"not on the grid of {ref_path}: the affines differ; {hint}",
                path,
            )
