"""The audit corpus: bad and edge-case inputs built from one small crop of a real scan.

Each case is ``name -> (builder, expected)``: ``builder(folder, crop, affine)`` writes the input file and
returns its path; ``expected`` is ``"ok"`` (every command accepts it), ``"bad"`` (every command refuses it
with exit 2) or ``"size"`` (refused by the commands whose minimum size it is below, named in
tests/test_corpus.py, and accepted by the others).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np


def real_crop(t1_path: Path, size: tuple[int, int, int] = (48, 48, 20)) -> tuple[np.ndarray, np.ndarray]:
    """A centred crop of a real T1 (int16, scanner units) and its affine, origin moved to the crop."""
    import nibabel as nib

    img = nib.load(str(t1_path))
    data = np.asarray(img.dataobj)
    nz = np.argwhere(data > 0)
    centre = ((nz.min(0) + nz.max(0)) // 2).astype(int)
    lo = [max(0, c - s // 2) for c, s in zip(centre, size, strict=True)]
    crop = data[tuple(slice(a, a + s) for a, s in zip(lo, size, strict=True))]
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ np.asarray(lo, float) + img.affine[:3, 3]
    return np.ascontiguousarray(crop), affine


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def _header_case(path: Path, data: np.ndarray, affine: np.ndarray, sform: np.ndarray | None) -> Path:
    """Write with a hand-set header: qform from ``affine``; sform code 1 with matrix ``sform``."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header.set_qform(affine, code=1)
    if sform is None:
        header["sform_code"] = 0
    else:
        header.set_sform(affine, code=1)
        header["srow_x"][:], header["srow_y"][:], header["srow_z"][:] = sform[0], sform[1], sform[2]
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


def _itk(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.transpose(data.astype(np.float32), (2, 1, 0)))
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(0))
    image.SetSpacing(tuple(float(s) for s in spacing))
    # NIfTI affines are RAS, ITK's are LPS
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    image.SetDirection(tuple((ras_to_lps @ affine[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(ras_to_lps @ affine[:3, 3]))
    sitk.WriteImage(image, str(path))
    return path


def _truncated(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    whole = _nifti(path.with_name("whole_" + path.name), data, affine)
    raw = gzip.decompress(whole.read_bytes())
    whole.unlink()
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return path


def _oblique(affine: np.ndarray, degrees: float = 20.0) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    out = affine.copy()
    out[:3, :3] = rot @ affine[:3, :3]
    return out


def _spiked(data: np.ndarray) -> np.ndarray:
    out = data.astype(np.int16).copy()
    rng = np.random.default_rng(0)
    idx = rng.choice(out.size, 12, replace=False)
    out.flat[idx] = np.tile([32767, -32767], 6)
    return out


def _singular(affine: np.ndarray) -> np.ndarray:
    out = affine.copy()
    out[:3, 1] = out[:3, 0]
    return out


Builder = Callable[[Path, np.ndarray, np.ndarray], Path]

CASES: dict[str, tuple[Builder, object]] = {
    # accepted inputs
    "good int16": (lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.int16), a), "ok"),
    "float32": (lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float32), a), "ok"),
    "float64 scaled to [0, 1]": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d / float(d.max()), a),
        "ok",
    ),
    "uint8": (lambda p, d, a: _nifti(p / "t1.nii.gz", (255 * (d / d.max())).astype(np.uint8), a), "ok"),
    "4D with one volume": (lambda p, d, a: _nifti(p / "t1.nii.gz", d[..., None].astype(np.float32), a), "ok"),
    "uncompressed .nii": (lambda p, d, a: _nifti(p / "t1.nii", d.astype(np.float32), a), "ok"),
    "flipped axes (LAS)": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d[::-1].astype(np.float32), a @ np.diag([-1.0, 1, 1, 1])),
        "ok",
    ),
    "oblique 20 degrees": (lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float32), _oblique(a)), "ok"),
    "anisotropic 1x1x3 mm": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float32), a @ np.diag([1.0, 1, 3, 1])),
        "ok",
    ),
    "negative offset": (lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float32) - 500.0, a), "ok"),
    "huge scale": (lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float64) * 1e6, a), "ok"),
    "int16 with +-32767 outliers": (lambda p, d, a: _nifti(p / "t1.nii.gz", _spiked(d), a), "ok"),
    "qform only (sform_code 0)": (
        lambda p, d, a: _header_case(p / "t1.nii.gz", d.astype(np.float32), a, None),
        "ok",
    ),
    "NRRD": (lambda p, d, a: _itk(p / "t1.nrrd", d, a), "ok"),
    "MetaImage .mha": (lambda p, d, a: _itk(p / "t1.mha", d, a), "ok"),
    # too small for some commands: they refuse with their minimum size, the others accept
    "8x8x8": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d[20:28, 20:28, 6:14].astype(np.float32), a),
        "size",
    ),
    "3-slice slab": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d[:, :, 8:11].astype(np.float32), a),
        "size",
    ),
    # refused by every command
    "2D image": (lambda p, d, a: _nifti(p / "t1.nii.gz", d[:, :, 10].astype(np.float32), a), "bad"),
    "one slice": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d[:, :, 10:11].astype(np.float32), a),
        "bad",
    ),
    "4D with two volumes": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", np.stack([d, d], -1).astype(np.float32), a),
        "bad",
    ),
    "NaN voxels": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", np.where(d > d.mean(), np.nan, d).astype(np.float32), a),
        "bad",
    ),
    "Inf voxels": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", np.where(d > d.mean(), np.inf, d).astype(np.float32), a),
        "bad",
    ),
    "constant": (lambda p, d, a: _nifti(p / "t1.nii.gz", np.full(d.shape, 7, np.float32), a), "bad"),
    "all zeros": (lambda p, d, a: _nifti(p / "t1.nii.gz", np.zeros(d.shape, np.float32), a), "bad"),
    "voxel size 0.001 mm": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float32), a @ np.diag([0.001, 1, 1, 1])),
        "bad",
    ),
    "voxel size 100 mm": (
        lambda p, d, a: _nifti(p / "t1.nii.gz", d.astype(np.float32), a @ np.diag([100.0, 1, 1, 1])),
        "bad",
    ),
    "void sform (sform_code 1, all zeros)": (
        lambda p, d, a: _header_case(p / "t1.nii.gz", d.astype(np.float32), a, np.zeros((3, 4))),
        "bad",
    ),
    "singular affine": (
        lambda p, d, a: _header_case(p / "t1.nii.gz", d.astype(np.float32), a, _singular(a)[:3]),
        "bad",
    ),
    "truncated gzip": (lambda p, d, a: _truncated(p / "t1.nii.gz", d.astype(np.float32), a), "bad"),
    "not an image": (lambda p, d, a: _text(p / "t1.nii.gz", "hello"), "bad"),
    "empty file": (lambda p, d, a: _text(p / "t1.nii.gz", ""), "bad"),
    "unsupported extension": (lambda p, d, a: _text(p / "t1.txt", "1 2 3"), "bad"),
    "missing file": (lambda p, d, a: p / "t1.nii.gz", "bad"),
    "a folder": (lambda p, d, a: _folder(p / "t1.nii.gz"), "bad"),
}


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path
