"""The SR benchmark scores the subjects that scripts/shared_splits.py sets aside, and no others."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_sr  # noqa: E402
import shared_splits  # noqa: E402


def _subjects(globs: tuple[str, ...]) -> set[str]:
    return {g.split("/")[1] for g in globs}  # "<source>/<subject>/<files>"


def test_heldout_volumes_come_from_held_out_subjects_only():
    assert _subjects(bench_sr.HELDOUT_GLOBS) <= set(shared_splits.HELD_OUT)


def test_validation_volumes_are_exactly_the_validation_subjects():
    assert _subjects(bench_sr.VALIDATION_GLOBS) == set(shared_splits.VALIDATION)


def test_validation_glob_picks_images_but_not_labels(tmp_path):
    case = tmp_path / "brats2018_tcia" / "Brats18_TCIA10_628_1"
    case.mkdir(parents=True)
    for name in ("t1", "t1ce", "t2", "flair", "seg"):
        (case / f"Brats18_TCIA10_628_1_{name}.nii.gz").touch()
    found = bench_sr.volumes_matching(tmp_path, bench_sr.VALIDATION_GLOBS)
    assert sorted(p.name.split("_")[-1] for p in found) == [
        "flair.nii.gz",
        "t1.nii.gz",
        "t1ce.nii.gz",
        "t2.nii.gz",
    ]
