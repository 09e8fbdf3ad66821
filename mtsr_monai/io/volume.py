"""Load single 3D volumes (NIfTI through MONAI's LoadImage, ITK files through SimpleITK); save them with
nibabel or SimpleITK."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtsr_monai.errors import InputError
from mtsr_monai.io.atomic import atomic_output
from mtsr_monai.io.geometry import SHEAR_TOLERANCE_DEGREES, resolve_axis, shear_degrees
from mtsr_monai.io.sitk_geometry import array_to_sitk, sitk_affine
from mtsr_monai.io.validation import check_nifti_header, mm_per_unit, validate_volume

if TYPE_CHECKING:
    from monai.data import MetaTensor

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: what :func:`save_volume` writes: the single-file types (a .nhdr or .mhd header would be renamed from its
#: temporary name without its data file); lower case, as the writer is chosen by the suffix
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def has_volume_suffix(name: str) -> bool:
    """Whether a file name ends as a volume :func:`load_volume` reads (any case), hidden names included."""
    return name.lower().endswith(NIFTI_SUFFIXES + ITK_SUFFIXES)


def is_volume_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name ends as a volume :func:`load_volume` reads (any case); hidden files are not."""
    name = Path(path).name
    return has_volume_suffix(name) and not name.startswith(".")


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without its volume suffix (``case1_t1.nii.gz`` -> ``case1_t1``)."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES + ITK_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_readable_type(path: Path) -> None:
    if not has_volume_suffix(path.name):
        raise InputError("unsupported file type (expected .nii, .nii.gz, .nrrd, .mha or .mhd)", path)


def _reader_detail(err: Exception) -> str:
    """A reader's error as one short line; SimpleITK's start with its C++ source file and an object address,
    and say what went wrong in their first and last lines."""
    text = str(err)
    if "ERROR:" in text:
        text = re.sub(r"\w+\(0x[0-9a-f]+\):\s*", "", text.split("ERROR:", 1)[1])
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return " ".join(text.split())[:160]


def _read_nifti(path: Path) -> MetaTensor:
    """The image with the affine nibabel reads from the header (the sform when its code is set): MONAI's
    reader replaces a valid sform by the qform, or by the voxel sizes, where they disagree with pixdim."""
    import nibabel as nib
    import torch
    from monai.transforms import LoadImage  # lazy: MONAI takes seconds to import

    image = LoadImage(reader="NibabelReader", image_only=True, dtype=np.float32)(str(path))
    affine = torch.as_tensor(nib.load(str(path)).affine, dtype=torch.float64)
    if not torch.allclose(torch.as_tensor(image.affine, dtype=torch.float64), affine):
        image.affine = affine
        image.meta["original_affine"] = affine.clone()
    return image


def _read_itk(path: Path) -> MetaTensor:
    """A .nrrd / .nhdr / .mha / .mhd file through SimpleITK, which reads every pixel type (ITK's Python
    wrapping has no int8 or int64 readers) and loads in a fraction of ``itk``'s import time."""
    import SimpleITK as sitk  # lazy: only these file types need it
    import torch
    from monai.data import MetaTensor

    image = sitk.ReadImage(str(path))
    components, size = image.GetNumberOfComponentsPerPixel(), image.GetSize()
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError("complex data: give the magnitude image", path)
    if components != 1:
        raise InputError(f"expected a scalar image, got {components} values a voxel (colour or vector)", path)
    if len(size) == 4 and size[3] == 1:
        image = image[:, :, :, 0]
    elif len(size) == 4:
        raise InputError(f"expected a 3D volume, got 4D data with {size[3]} volumes", path)
    elif len(size) != 3:
        raise InputError(f"expected a 3D volume, got {len(size)}D data of shape {tuple(size)}", path)
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    affine = torch.as_tensor(sitk_affine(image), dtype=torch.float64)
    meta = {"filename_or_obj": str(path), "spatial_shape": np.asarray(array.shape)}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=affine, meta=meta)


def check_output_type(path: str | os.PathLike) -> Path:
    """``path`` as a Path; InputError unless :func:`save_volume` writes its type (:data:`WRITE_SUFFIXES`)."""
    path = Path(path)
    if not path.name.endswith(WRITE_SUFFIXES):
        raise InputError(f"unsupported output type: write {', '.join(WRITE_SUFFIXES)}", path)
    return path


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) along the three array axes of a 4x4 affine."""
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def image_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray | None] | None:
    """The array shape (a trailing axis of 1 dropped) and, for a 3D file, the RAS affine, from the header
    alone; None when the file cannot be read: :func:`load_volume` then gives the message."""
    path = Path(path)
    affine = None
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            import nibabel as nib

            image = nib.load(str(path))
            shape, affine = tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=np.float64)
            affine[:3] *= mm_per_unit(image.header)  # as load_volume
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            shape = tuple(int(n) for n in reader.GetSize())
            if len(shape) == 3:
                affine = sitk_affine(reader)  # the reader answers the image's geometry questions
    except Exception:  # noqa: BLE001 - unreadable: load_volume reports it in one line
        return None
    return (shape[:-1] if len(shape) == 4 and shape[-1] == 1 else shape), affine


#: in-plane voxel size (mm) under which ``x4`` super-resolution has little of its task left: the model
#: restores what a 4x coarser acquisition lost (trained from 4 mm to 1 mm); 2 mm already gives 0.5 mm
FINE_INPLANE_MM = 2.0


def fine_input_warning(path: str | Path, axis: str | int, scale: int) -> str | None:
    """One line warning that ``path``'s in-plane voxels (normal to ``axis``) are already finer than
    :data:`FINE_INPLANE_MM`, or None (also for a file whose header gives no affine: the command refuses
    bad files itself). Read from the header alone, before the command's start-up."""
    header = image_header(path)
    if header is None or header[1] is None or len(header[0]) != 3:
        return None
    shape, affine = header
    try:
        through = resolve_axis(affine, axis)
    except ValueError:
        return None
    inplane = [k for k in range(3) if k != through]
    sizes = voxel_sizes(affine)
    if max(sizes[k] for k in inplane) >= FINE_INPLANE_MM:
        return None
    grid = " x ".join(str(n * scale if k in inplane else n) for k, n in enumerate(shape))
    fine = " x ".join(f"{sizes[k]:.2f}" for k in inplane)
    finer = " x ".join(f"{sizes[k] / scale:.2f}" for k in inplane)
    return (
        f"{Path(path).name} has {fine} mm in-plane voxels: x{scale} makes them {finer} mm ({grid} "
        f"voxels, slow). The model restores detail a {scale}x coarser acquisition lost (trained from 4 mm to "
        "1 mm); on a scan this fine it has little to restore. For thick slices use `mtsr clinical-sr`."
    )


def image_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The array shape from the header alone (see :func:`image_header`), or None when unreadable."""
    header = image_header(path)
    return None if header is None else header[0]


def check_image_file(path: str | os.PathLike) -> None:
    """InputError unless ``path`` exists and is not a folder: a folder (a DICOM series) is named as one, not
    as missing. Pipes pass (``--codes <(...)``)."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, not a file (a DICOM series? convert it to NIfTI first, e.g. "
                         "with dcm2niix)", path)  # fmt: skip
    if not path.exists():
        raise InputError("no such file", path)


def load_volume(path: str | os.PathLike, validate: bool = True, allow_constant: bool = False) -> MetaTensor:
    """Read one 3D volume as a float32 ``MetaTensor`` (no channel axis), affine in RAS mm.

    NIfTI is read by MONAI's ``LoadImage`` (nibabel), .nrrd / .nhdr / .mha / .mhd by SimpleITK. A 4D file
    holding a single volume is squeezed to 3D. Raises :class:`InputError` for a missing, unreadable or
    truncated file, a NIfTI header whose sform is in force but void, and everything
    :func:`validate_volume` refuses (``allow_constant``: but a constant image, e.g. a prediction to score).
    """
    path = Path(path)
    check_image_file(path)
    _check_readable_type(path)
    nifti = path.name.lower().endswith(NIFTI_SUFFIXES)
    # before MONAI, which would fall back silently on a void sform and ignores the header's unit
    unit_mm = check_nifti_header(path) if nifti else 1.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = _read_nifti(path) if nifti else _read_itk(path)
    except InputError:
        raise
    except Exception as err:  # nibabel/ITK raise many types for corrupt data
        detail = _reader_detail(err).replace(str(path), path.name)
        raise InputError(f"unreadable or truncated image ({type(err).__name__}: {detail})", path) from err
    if unit_mm != 1.0:  # a header in metres or microns: the affine in mm, as outputs are written
        image.affine = _in_mm(image.affine, unit_mm)
    if image.ndim == 4 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 4:
        raise InputError(f"expected a 3D volume, got 4D data with {image.shape[-1]} volumes", path)
    if validate:
        array = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
        validate_volume(array, image.affine, path, allow_constant=allow_constant)
    return image


def _in_mm(affine: Any, unit_mm: float) -> Any:
    """``affine`` (voxel -> world in the header's unit) with world coordinates in millimetres."""
    scaled = affine.clone() if hasattr(affine, "clone") else np.array(affine, dtype=np.float64)
    scaled[:3] *= unit_mm
    return scaled


#: NIfTI xform codes an output keeps from its source: scanner, aligned, Talairach, MNI 152, template
NIFTI_SPACES = (1, 2, 3, 4, 5)


def nifti_space(source: Any) -> int:
    """The NIfTI xform code of the space an output made from ``source`` lies in: ``source``'s sform code,
    else its qform code, where one names a space (1 scanner, 2 aligned, 3 Talairach, 4 MNI 152, 5 template),
    else 1.
    ``source``: an image from :func:`load_volume` (its header fields) or a NIfTI path (its header)."""
    if isinstance(source, (str, os.PathLike)):
        if not str(source).lower().endswith(NIFTI_SUFFIXES):
            return 1
        import nibabel as nib  # lazy: nibabel is only needed for NIfTI files

        try:
            header = nib.load(str(source)).header
        except Exception:  # noqa: BLE001 - an unreadable file is refused where it is read, not here
            return 1
        codes = (header["sform_code"], header["qform_code"])
    else:
        meta = getattr(source, "meta", None) or {}
        codes = (meta.get("sform_code", 0), meta.get("qform_code", 0))
    return next((int(c) for c in codes if int(c) in NIFTI_SPACES), 1)


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, space: int = 1) -> None:
    import nibabel as nib  # lazy: nibabel is only needed when writing

    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=space)
    # a qform is a rotation: for sheared axes nibabel would store a nearby one, centimetres off at the edges,
    # which ITK-based readers would then take; the sform alone carries such an affine
    sheared = shear_degrees(affine) > SHEAR_TOLERANCE_DEGREES
    image.set_qform(None if sheared else affine, code=0 if sheared else space)
    image.header.set_xyzt_units("mm", "sec")  # as scanners write it (a 3D volume has no time axis to use it)
    nib.save(image, str(path))


def _write_itk(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk  # lazy: only the .nrrd / .mha outputs need it

    sitk.WriteImage(array_to_sitk(array, affine), str(path))


def _storable(array: np.ndarray) -> np.ndarray:
    """``array`` in a type both NIfTI and ITK files hold: bool as uint8, float16 as float32, 64-bit integers
    as int32 where they fit (NIfTI readers outside nibabel rarely take int64)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        info = np.iinfo(np.int32)
        if array.size == 0 or (int(array.min()) >= info.min and int(array.max()) <= info.max):
            return array.astype(np.int32)
        return array.astype(np.float64)
    return array


def save_volume(
    data: np.ndarray | MetaTensor,
    path: str | os.PathLike,
    affine: np.ndarray | None = None,
    dtype: np.dtype | type | None = np.float32,
    space: int = 1,
) -> Path:
    """Write a 3D array atomically, keeping ``affine`` (RAS, as ``load_volume``) exactly, in any axis order.

    ``affine`` defaults to the MetaTensor's own. ``dtype`` is the on-disk type: float32 for images,
    ``np.uint8`` for masks and labels. ``space``: the NIfTI qform and sform code (:func:`nifti_space` of
    the input: a scan in MNI space stays in it). Written with nibabel (NIfTI) or SimpleITK
    (.nrrd, .mha), not MONAI's ``SaveImage``: with ``resample=False`` that still resamples, and fails on an
    affine whose array axes are permuted against the world axes (LIA, sagittal scans).
    """
    import torch  # lazy: keeps `import mtsr_monai.io` light

    path = check_output_type(path)
    if affine is None:
        if not hasattr(data, "affine"):
            raise ValueError("save_volume needs an affine for a plain array")
        affine = data.affine
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if array.ndim != 3:
        raise ValueError(f"save_volume writes 3D volumes, got shape {array.shape}")
    affine = np.asarray(affine.cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    array = _storable(array.astype(dtype or array.dtype, copy=False))
    if array.dtype.kind == "f" and not np.isfinite(array).all():  # never a NaN volume with exit 0
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise InputError(
            f"the result holds {bad} NaN or infinite voxels, so it is not written: the input's intensities "
            "(or the computation on them) overflowed; rescale the input to a usual range and run again",
            path,
        )
    with atomic_output(path) as tmp:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            _write_nifti(array, affine, Path(tmp), space)
        else:
            _write_itk(array, affine, Path(tmp))
    return path
