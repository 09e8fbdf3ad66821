"""Lay scans out as a raw BIDS dataset, optionally cropped and coarsened (small cohorts for tests).

A crop is a box in *world* millimetres around one point (by default the centre of the first image's field of
view), so scans of one session that share a space (co-registered, or acquired in one scanner frame) stay
aligned after cropping even when their grids differ. Coarsening averages blocks of whole voxels and fixes the
affine so the coarse voxel covers exactly its block.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def crop_world(
    data: np.ndarray, affine: np.ndarray, centre_mm: Sequence[float], size_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The voxels whose centres lie in the axis-aligned (in voxel space) box around ``centre_mm``."""
    inv = np.linalg.inv(affine)
    half = np.asarray(size_mm, float) / 2
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    idx = (inv[:3, :3] @ (np.asarray(centre_mm, float) + corners).T + inv[:3, 3:4]).T
    lo = np.clip(np.ceil(idx.min(axis=0)).astype(int), 0, np.asarray(data.shape) - 1)
    hi = np.clip(np.floor(idx.max(axis=0)).astype(int) + 1, lo + 1, np.asarray(data.shape))
    out = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    new = affine.copy()
    new[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return out, new


def coarsen(data: np.ndarray, affine: np.ndarray, factors: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over blocks of ``factors`` voxels (trailing partial blocks dropped); affine of the block grid."""
    f = np.asarray(factors, int)
    shape = np.asarray(data.shape) // f
    cut = data[: shape[0] * f[0], : shape[1] * f[1], : shape[2] * f[2]]
    blocks = cut.reshape(shape[0], f[0], shape[1], f[1], shape[2], f[2]).mean(axis=(1, 3, 5))
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * f[None, :]
    new[:3, 3] = affine[:3, :3] @ ((f - 1) / 2.0) + affine[:3, 3]
    return blocks.astype(np.float32), new


def write_bids_tree(
    subjects: Sequence[Mapping[str, Any]],
    root: str | Path,
    name: str = "mtsr-monai sample cohort",
    size_mm: Sequence[float] | None = None,
    factors: Sequence[int] = (1, 1, 1),
    authors: Sequence[str] = ("mtsr-monai",),
) -> Path:
    """Write ``root`` as a raw BIDS dataset. Each subject: ``{"label": "01", "session": None or "1",
    "images": {"T1w": path, "T2w": path, "FLAIR": path}}``; with ``size_mm`` every image of a session is
    cropped around the centre of its first image's field of view, then coarsened by ``factors``."""
    import nibabel as nib

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    description = {
        "Name": name,
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "Authors": list(authors),
        "License": "see the sources of the scans",
    }
    (root / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    (root / "README").write_text(f"{name}: scans laid out by mtsr_monai.bids.convert.write_bids_tree.\n")
    rows = ["participant_id"]
    for subject in subjects:
        label, session = subject["label"], subject.get("session")
        folder = root / f"sub-{label}" / (f"ses-{session}" if session else "") / "anat"
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"sub-{label}" + (f"_ses-{session}" if session else "")
        centre = None
        for suffix, path in subject["images"].items():
            img = nib.load(str(path))
            data, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()
            if size_mm is not None:
                if centre is None:
                    centre = affine[:3, :3] @ ((np.asarray(data.shape) - 1) / 2.0) + affine[:3, 3]
                data, affine = crop_world(data, affine, centre, size_mm)
            data, affine = coarsen(data, affine, factors)
            out = nib.Nifti1Image(data, affine)
            out.header.set_xyzt_units("mm")
            nib.save(out, str(folder / f"{prefix}_{suffix}.nii.gz"))
        rows.append(f"sub-{label}")
    (root / "participants.tsv").write_text("\n".join(dict.fromkeys(rows)) + "\n")
    return root


def shared_cohort(shared: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Subjects with T1w, T2w and FLAIR in the development data (``../shared/data``): the BraTS 2018 TCIA
    cases, the two TCGA cases in BraTS space, and the four Ljubljana MS sessions (clinical thick slices, each
    contrast on its own grid), in that order; ``limit`` keeps the first ones."""
    shared = Path(shared)
    subjects = []
    for case in sorted((shared / "brats2018_tcia").glob("Brats18_*")):
        files = {k: next(case.glob(f"*_{k}.nii.gz")) for k in ("t1", "t2", "flair")}
        label = "brats" + "".join(case.name.split("_")[1:3])
        subjects.append(
            {"label": label, "images": {"T1w": files["t1"], "T2w": files["t2"], "FLAIR": files["flair"]}}
        )
    for case in sorted((shared / "tcga_brainles").glob("TCGA-*")):
        label = "tcga" + case.name.split("-", 1)[1].replace("-", "")
        images = {"T1w": case / "t1.nii.gz", "T2w": case / "t2.nii.gz", "FLAIR": case / "flair.nii.gz"}
        subjects.append({"label": label, "images": images})
    for case in sorted((shared / "open_ms_longitudinal_raw").glob("patient*_study*")):
        patient, study = case.name.split("_")
        stem = study + "_"
        images = {
            "T1w": case / f"{stem}T1W.nii.gz",
            "T2w": case / f"{stem}T2W.nii.gz",
            "FLAIR": case / f"{stem}FLAIR.nii.gz",
        }
        subjects.append(
            {
                "label": "ms" + patient.removeprefix("patient"),
                "session": study.removeprefix("study"),
                "images": images,
            }
        )
    return subjects[:limit] if limit else subjects
