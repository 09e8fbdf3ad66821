"""The SR benchmark scores the subjects that scripts/shared_splits.py sets aside, and no others."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_sr  # noqa: E402
import shared_splits  # noqa: E402


def test_heldout_volumes_come_from_held_out_subjects_only():
    assert set(bench_sr.HELDOUT_SUBJECTS) <= set(shared_splits.HELD_OUT)


def test_validation_volumes_are_the_validation_subjects_images_in_a_fixed_order(tmp_path):
    for sid in ("Brats18_TCIA10_628_1", "Brats18_TCIA01_201_1"):  # a validation and a training subject
        case = tmp_path / "brats2018_tcia" / sid
        case.mkdir(parents=True)
        for name in ("t1", "t1ce", "t2", "flair", "seg"):
            (case / f"{sid}_{name}.nii.gz").touch()
    case = tmp_path / "brats2018_t1_flair" / "Brats18_CBICA_ATV_1"
    case.mkdir(parents=True)
    for name in ("T1", "FLAIR", "GT_W"):
        (case / f"{name}.nii.gz").touch()
    found = [f"{p.parent.name}/{p.name}" for p in bench_sr.validation_volumes(tmp_path)]
    assert found == [
        "Brats18_TCIA10_628_1/Brats18_TCIA10_628_1_flair.nii.gz",
        "Brats18_TCIA10_628_1/Brats18_TCIA10_628_1_t1.nii.gz",
        "Brats18_TCIA10_628_1/Brats18_TCIA10_628_1_t1ce.nii.gz",
        "Brats18_TCIA10_628_1/Brats18_TCIA10_628_1_t2.nii.gz",
        "Brats18_CBICA_ATV_1/FLAIR.nii.gz",
        "Brats18_CBICA_ATV_1/T1.nii.gz",
    ]
    assert shared_splits.VALIDATION == ("Brats18_TCIA10_628_1", "Brats18_CBICA_ATV_1")


def test_writing_a_datalist_without_shared_data_exits_2_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(shared_splits, "DATA_ROOT", tmp_path / "absent")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        shared_splits.main(["volumes"])
    assert stop.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_clinical_benchmark_refuses_an_output_folder_made_with_other_weights(tmp_path):
    import bench_clinical

    settings = {"model_sha256": "a" * 64, "thickness": 5.0, "register": False, "planes": 2, "fit_subjects": 2}
    bench_clinical.check_cached_settings(tmp_path / "out", settings)  # a new folder: recorded
    bench_clinical.check_cached_settings(tmp_path / "out", settings)  # the same settings: reused
    for changed in ({"model_sha256": "b" * 64}, {"thickness": 3.0}):
        with pytest.raises(SystemExit) as stop:
            bench_clinical.check_cached_settings(tmp_path / "out", {**settings, **changed})
        assert stop.value.code == 2


def test_clinical_benchmark_refuses_a_subject_name_that_is_not_in_its_split(monkeypatch):
    import argparse

    import bench_clinical

    subject = "Brats18_TCIA10_637_1"
    monkeypatch.setattr(bench_clinical, "split_subjects", lambda seen, split: [{"subject": subject}])
    parser = argparse.ArgumentParser()
    typo = argparse.Namespace(subjects=["Brats18_TCIA10_637"], split="test")
    with pytest.raises(SystemExit) as stop:
        bench_clinical.chosen_subjects(parser, typo, set())
    assert stop.value.code == 2
    named = argparse.Namespace(subjects=[subject], split="test")
    assert [s["subject"] for s in bench_clinical.chosen_subjects(parser, named, set())] == [subject]


def test_the_area_benchmark_pools_the_hr_region_it_scores_against():
    import numpy as np
    from monai.data import MetaTensor

    hr = np.zeros((10, 8, 2), np.float32)
    hr[1:5, 0:4] = 1.0  # the first 4 x 4 block of the central 8 x 8 crop (10 -> rows 1-8)
    lr, lr_affine = bench_sr._degrade(MetaTensor(hr, affine=np.eye(4)), "area", seed=0)
    assert lr.shape == (2, 2, 2) and lr[0, 0, 0] == 1.0 and lr[1, 0, 0] == 0.0
    np.testing.assert_allclose(lr_affine[:3, 3], [2.5, 1.5, 0.0])  # the centre of HR rows 1-4, columns 0-3


def test_every_benchmark_reads_the_data_folder_mtsr_shared_data_names(tmp_path):
    import os
    import subprocess

    code = "import bench_sr as b, reproduce_mtsr_tables as r, qc_real_data as q; print(b.DATA,r.DATA,q.DATA)"
    env = dict(os.environ, MTSR_SHARED_DATA=str(tmp_path), PYTHONPATH=str(REPO / "scripts"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(tmp_path)] * 2 + [str(tmp_path / "brats2018_tcia")]
