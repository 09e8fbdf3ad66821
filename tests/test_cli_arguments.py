"""The choices the CLI offers without importing torch are the ones the code behind it accepts."""

from __future__ import annotations

import numpy as np

from mtsr_monai.cli import arguments


def test_cli_choices_equal_the_constants_of_the_code_they_drive():
    from mtsr_monai.inference import clinical, super_resolve
    from mtsr_monai.precision import PRECISIONS
    from mtsr_monai.transforms.protocol import PROFILES

    assert arguments.SR_METHODS == super_resolve.METHODS
    assert arguments.CLINICAL_METHODS == clinical.METHODS
    assert arguments.PRECISIONS == PRECISIONS
    assert arguments.SLICE_PROFILES == PROFILES


def test_an_input_already_finer_than_2_mm_in_plane_is_warned_about(tmp_path):
    from tests.conftest import write_nifti

    volume = np.ones((8, 10, 4), np.float32)
    fine = write_nifti(tmp_path / "fine.nii.gz", volume, np.diag([0.8, 0.8, 3.0, 1.0]))
    message = arguments.fine_input_warning(fine, "axial", 4)
    assert "0.80 x 0.80 mm" in message and "0.20 x 0.20 mm" in message and "32 x 40 x 4 voxels" in message
    coarse = write_nifti(tmp_path / "coarse.nii.gz", volume, np.diag([4.0, 4.0, 1.0, 1.0]))
    assert arguments.fine_input_warning(coarse, "axial", 4) is None
    # the plane comes from the affine: sagittal slices of that coarse file are 4 x 1 mm, not fine
    assert arguments.fine_input_warning(coarse, "sagittal", 4) is None


def test_super_resolve_prints_the_warning_before_its_start_up(tmp_path, monkeypatch, capsys):
    from mtsr_monai.cli import main
    from mtsr_monai.inference import super_resolve
    from tests.conftest import write_nifti

    fine = write_nifti(tmp_path / "fine.nii.gz", np.ones((8, 8, 4), np.float32), np.diag([1, 1, 3, 1.0]))
    monkeypatch.setattr(super_resolve, "super_resolve_file", lambda *a, **k: {"stub": True})
    assert main(["super-resolve", "-i", str(fine), "-o", str(tmp_path / "sr.nii.gz")]) == 0
    err = capsys.readouterr().err
    assert err.index("warning: fine.nii.gz has 1.00 x 1.00 mm") < err.index("start-up")


def test_run_prints_the_warning_before_its_start_up(tmp_path, monkeypatch, capsys):
    from mtsr_monai.cli import main
    from mtsr_monai.inference import pipeline
    from tests.conftest import write_nifti

    fine = write_nifti(tmp_path / "fine.nii.gz", np.ones((8, 8, 4), np.float32), np.diag([1, 1, 3, 1.0]))
    summary = {"super_resolution": "stub", "outputs": {"samples": []}, "timings": {"total_s": 0.0}}
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: summary)
    args = ["run", "-i", str(fine), "--source", "t1", "--target", "flair", "-o", str(tmp_path / "out")]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.index("warning: fine.nii.gz has 1.00 x 1.00 mm") < err.index("start-up")
