"""Each bad input of the I/O contract: exit 2, one line naming the file and the problem, no output."""

import gzip

import numpy as np
import pytest

from mtsr_monai.cli import main
from tests.conftest import write_nifti


def _truncated(tmp_path, good):
    raw = gzip.decompress(good.read_bytes())
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return path


BAD = {
    "2D image": lambda tmp, good: write_nifti(tmp / "bad.nii.gz", np.random.rand(16, 16).astype(np.float32)),
    "4D, 2 volumes": lambda tmp, good: write_nifti(
        tmp / "bad.nii.gz", np.random.rand(8, 8, 8, 2).astype(np.float32)
    ),
    "NaN voxels": lambda tmp, good: write_nifti(tmp / "bad.nii.gz", np.full((8, 8, 8), np.nan, np.float32)),
    "constant": lambda tmp, good: write_nifti(tmp / "bad.nii.gz", np.ones((8, 8, 8), np.float32)),
    "absurd voxel size": lambda tmp, good: write_nifti(
        tmp / "bad.nii.gz", np.random.rand(8, 8, 8).astype(np.float32), np.diag([0.001, 1, 1, 1])
    ),
    "truncated": _truncated,
    "not an image": lambda tmp, good: (tmp / "bad.nii.gz").write_bytes(b"hello") and tmp / "bad.nii.gz",
}
PROBLEM = {
    "2D image": "3D",
    "4D, 2 volumes": "4D",
    "NaN voxels": "NaN",
    "constant": "constant",
    "absurd voxel size": "voxel size",
    "truncated": "unreadable or truncated",
    "not an image": "unreadable or truncated",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_degrade_refuses_bad_input_with_exit_2_and_no_output(tmp_path, phantom_file, case, capsys):
    bad = BAD[case](tmp_path, phantom_file)
    out = tmp_path / "out" / "lr.nii.gz"
    code = main(["degrade", "--input", str(bad), "--output", str(out), "--mode", "kspace", "--scale", "2"])
    # the refusal is the last line of stderr: a progress bar (\r-updated) may stand before it
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.strip()]
    message = lines[-1]
    assert code == 2
    assert not out.exists() and not list(tmp_path.glob("out/*"))
    assert not any("Traceback" in ln for ln in lines)
    assert "bad.nii.gz" in message and PROBLEM[case] in message


def test_evaluate_refuses_modalities_on_different_grids(tmp_path, phantom, capsys):
    pred = write_nifti(tmp_path / "pred.nii.gz", phantom)
    ref = write_nifti(tmp_path / "ref.nii.gz", phantom[:, :, :8])
    out = tmp_path / "eval.json"
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--json", str(out)])
    assert code == 2 and not out.exists()
    assert "grid" in capsys.readouterr().err


def test_a_missing_input_is_refused_before_the_command_starts(tmp_path, monkeypatch, capsys):
    from mtsr_monai.cli.commands import super_resolve

    monkeypatch.setattr(super_resolve, "run", lambda args: pytest.fail("the command started"))
    out = tmp_path / "sr.nii.gz"
    code = main(["super-resolve", "-i", str(tmp_path / "absent.nii.gz"), "-o", str(out)])
    assert code == 2 and not out.exists()
    assert "absent.nii.gz: no such file" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, whether argparse (SystemExit) or the command refused."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def _refuse_start(monkeypatch, module: str) -> None:
    """Make ``mtsr_monai.cli.commands.<module>.run`` fail the test: the refusal must come before it."""
    import importlib

    command = importlib.import_module(f"mtsr_monai.cli.commands.{module}")
    monkeypatch.setattr(command, "run", lambda args: pytest.fail("the command started"))


@pytest.mark.parametrize("axis", ["bogus", "5"])
@pytest.mark.parametrize("command", ["super-resolve", "translate", "bids"])
def test_an_unknown_axis_is_refused_before_any_work(
    tmp_path, phantom_file, monkeypatch, capsys, command, axis
):
    _refuse_start(monkeypatch, command.replace("-", "_"))
    out = tmp_path / "out"
    argv = {
        "super-resolve": ["super-resolve", "-i", str(phantom_file), "-o", str(tmp_path / "sr.nii.gz")],
        "translate": [
            "translate",
            "-i",
            str(phantom_file),
            "--source",
            "t1",
            "--target",
            "flair",
            "-o",
            str(out),
        ],
        "bids": ["bids", str(tmp_path), str(out), "participant", "--task", "super-resolve"],
    }[command]
    assert _exit_code([*argv, "--axis", axis]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom.nii.gz"]
    assert f"--axis {axis}" in capsys.readouterr().err


def test_an_unknown_sr_axis_of_run_is_refused_before_any_work(tmp_path, phantom_file, monkeypatch, capsys):
    _refuse_start(monkeypatch, "run")
    argv = ["run", "-i", str(phantom_file), "--source", "t1", "--target", "flair", "-o", str(tmp_path / "o")]
    assert _exit_code([*argv, "--sr-axis", "9"]) == 2
    assert "--sr-axis 9" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["degrade", "--mode", "kspace", "-o", "{tmp}/a.txt"],
        ["degrade", "--mode", "kspace", "-o", "{tmp}/a"],
        ["degrade", "--mode", "kspace", "-o", "{tmp}/a.mhd"],
        ["super-resolve", "--method", "bicubic", "-o", "{tmp}/sr.txt"],
        ["qc", "--save-tissues", "{tmp}/t.txt"],
    ],
)
def test_an_unsupported_output_type_is_refused_before_any_work(
    tmp_path, phantom_file, monkeypatch, capsys, argv
):
    _refuse_start(monkeypatch, argv[0].replace("-", "_"))
    argv = [a.format(tmp=tmp_path) for a in argv] + ["-i", str(phantom_file)]
    assert _exit_code(argv) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom.nii.gz"]
    assert "unsupported output type: write .nii, .nii.gz" in capsys.readouterr().err


@pytest.mark.parametrize("gap", ["inf", "40"])  # 40 mm: one 4 mm slice in the 32 mm field of view
def test_thick_slices_need_a_finite_gap_and_two_slices(tmp_path, phantom_file, capsys, gap):
    out = tmp_path / "lr.nii.gz"
    argv = ["degrade", "-i", str(phantom_file), "-o", str(out), "--mode", "thick-slice", "--thickness", "4"]
    assert main([*argv, "--gap", gap, "--no-progress"]) == 2
    assert not out.exists()
    expected = "--gap must be a finite number" if gap == "inf" else "leave 1 slice"
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--scale", "0"], ["--scale", "-2"], ["--sr-method", "foo"]])
def test_run_refuses_a_bad_scale_or_sr_method_before_start_up(tmp_path, phantom_file, monkeypatch, bad):
    from mtsr_monai.inference import pipeline

    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: pytest.fail("the run started"))
    out = tmp_path / "out"
    argv = ["run", "-i", str(phantom_file), "--source", "t1", "--target", "flair", "-o", str(out)]
    assert _exit_code([*argv, *bad]) == 2
    assert not out.exists()


@pytest.mark.parametrize("command", ["explain", "clinical-sr"])
def test_a_spacing_outside_the_accepted_range_is_refused(
    tmp_path, phantom_file, monkeypatch, capsys, command
):
    from mtsr_monai.inference import clinical

    monkeypatch.setattr(clinical, "restore_clinical", lambda *a, **k: pytest.fail("the restoration started"))
    out = tmp_path / "out"
    assert main([command, "--t1", str(phantom_file), "--spacing", "0", "-o", str(out)]) == 2
    assert not out.exists()
    assert "--spacing 0.0 mm is outside 0.1-10 mm" in capsys.readouterr().err


@pytest.mark.parametrize("data_range", ["inf", "nan", "0"])
def test_evaluate_refuses_a_data_range_that_is_not_positive_and_finite(
    tmp_path, phantom_file, capsys, data_range
):
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--pred", str(phantom_file), "--ref", str(phantom_file), "--json", str(out)]
    assert main([*argv, "--data-range", data_range]) == 2
    assert not out.exists()
    assert "--data-range must be a positive finite number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad, problem",
    [
        (["--samples", "0"], "--samples"),
        (["--slices", "0"], "--slices"),
        (["--source", "foo"], "--source 'foo'"),
        (["--source", "pd"], "pd_to_flair"),  # a demo contrast without translation weights
    ],
)
def test_demo_refuses_bad_arguments_before_writing_anything(tmp_path, monkeypatch, capsys, bad, problem):
    from mtsr_monai.inference import pipeline

    monkeypatch.setattr(pipeline, "run_demo", lambda *a, **k: pytest.fail("the demo started"))
    assert _exit_code(["demo", "-o", str(tmp_path / "demo"), *bad]) == 2  # argparse or the command
    assert not list(tmp_path.iterdir())
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("level", [["participant", "--task", "qc"], ["group"]])
def test_bids_refuses_an_output_folder_that_is_an_existing_file(tmp_path, phantom_file, capsys, level):
    assert main(["bids", str(tmp_path), str(phantom_file), *level]) == 2
    assert "the output folder is an existing file" in capsys.readouterr().err


def test_the_debug_option_reraises_an_internal_error_with_its_traceback(tmp_path, phantom_file, monkeypatch):
    from mtsr_monai.cli.commands import degrade

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.delenv("MTSR_DEBUG", raising=False)
    monkeypatch.setattr(degrade, "run", broken)
    argv = ["degrade", "-i", str(phantom_file), "-o", str(tmp_path / "lr.nii.gz"), "--mode", "kspace"]
    assert main(argv) == 1
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--debug", *argv])


@pytest.mark.parametrize("command", ["explain", "clinical-sr"])
def test_a_device_that_is_not_there_is_refused_before_any_work(tmp_path, capsys, command):
    flair = write_nifti(tmp_path / "flair.nii.gz", np.random.rand(8, 8, 8).astype(np.float32))
    out = tmp_path / "out"
    argv = [command, "--flair", str(flair), "--spacing", "2", "--output-dir", str(out), "--device", "foo"]
    assert main(argv) == 2
    assert "names no torch device" in capsys.readouterr().err and not out.exists()


def test_a_folder_given_as_the_input_is_named_as_a_folder(tmp_path, capsys):
    series = tmp_path / "dicom"
    series.mkdir()
    out = tmp_path / "sr.nii.gz"
    assert _exit_code(["super-resolve", "-i", str(series), "-o", str(out), "--method", "bicubic"]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err and not out.exists()


def test_a_port_out_of_range_is_refused(tmp_path, capsys):
    assert _exit_code(["label-server", "--studies", str(tmp_path), "--port", "-1", "--dryrun"]) == 2
    assert "--port" in capsys.readouterr().err


def test_a_pipe_is_not_taken_for_a_missing_file(tmp_path):
    import os

    from mtsr_monai.io import check_image_file

    fifo = tmp_path / "codes.json"
    os.mkfifo(fifo)
    check_image_file(fifo)  # `--codes <(...)`: exists, not a folder


def test_run_and_translate_refuse_a_mistyped_huge_sample_count_before_start_up(
    tmp_path, phantom_file, monkeypatch, capsys
):
    from mtsr_monai.inference import pipeline

    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: pytest.fail("the run started"))
    for command in ("run", "translate"):
        out = tmp_path / command
        argv = [command, "-i", str(phantom_file), "--source", "t1", "--target", "flair", "-o", str(out)]
        assert _exit_code([*argv, "-n", "1000000000"]) == 2  # was a 60 GiB allocation, then exit 1
        assert not out.exists() and "expected an integer from 1 to 1000" in capsys.readouterr().err


@pytest.mark.parametrize("minutes", ["nan", "0", "-1", "inf"])
def test_bids_refuses_a_rank_timeout_that_is_not_a_positive_number_of_minutes(tmp_path, minutes, capsys):
    argv = ["bids", str(tmp_path), str(tmp_path / "out"), "participant", "--task", "qc"]
    assert _exit_code([*argv, "--dist-timeout-min", minutes]) == 2
    assert not (tmp_path / "out").exists() and "--dist-timeout-min" in capsys.readouterr().err
