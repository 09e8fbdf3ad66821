"""The choices the CLI offers without importing torch are the ones the code behind it accepts."""

from __future__ import annotations

import numpy as np

from mtsr_monai.cli import arguments


def test_cli_choices_equal_the_constants_of_the_code_they_drive():
    from mtsr_monai.inference import brain_mask, clinical, super_resolve
    from mtsr_monai.precision import PRECISIONS
    from mtsr_monai.transforms.protocol import PROFILES

    assert arguments.SR_METHODS == super_resolve.METHODS
    assert arguments.CLINICAL_METHODS == clinical.METHODS
    assert arguments.PRECISIONS == PRECISIONS
    assert arguments.SLICE_PROFILES == PROFILES
    assert arguments.MASK_AUTO == brain_mask.AUTO


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


def test_label_server_refuses_an_unknown_model_before_the_server_starts(tmp_path, capsys):
    import sys

    from mtsr_monai.cli import main

    args = ["label-server", "--studies", str(tmp_path), "--python", sys.executable, "--dryrun"]
    args += ["--app-dir", str(tmp_path.parent / f"{tmp_path.name}_app")]  # not inside the studies
    assert main([*args, "--models", "sr,foo"]) == 2
    assert "unknown models ['foo']" in capsys.readouterr().err
    assert main([*args, "--models", "sr,mt"]) == 0


def test_label_server_refuses_missing_weights_before_the_server_starts(tmp_path, capsys, monkeypatch):
    import sys

    from mtsr_monai.cli import main

    (tmp_path / "bundles" / "mtsr_sr" / "models").mkdir(parents=True)  # a bundle copy without its weights
    monkeypatch.setenv("MTSR_BUNDLES", str(tmp_path / "bundles"))
    args = ["label-server", "--studies", str(tmp_path), "--python", sys.executable, "--dryrun"]
    assert main([*args, "--models", "sr", "--app-dir", str(tmp_path.parent / f"{tmp_path.name}_app")]) == 2
    assert "model.pt: bundle file not found" in capsys.readouterr().err


def test_label_server_refuses_a_python_that_does_not_exist(tmp_path, capsys):
    from mtsr_monai.cli import main

    args = ["label-server", "--studies", str(tmp_path), "--python", str(tmp_path / "nope"), "--dryrun"]
    assert main(args) == 2
    assert "--python: no such file" in capsys.readouterr().err


def test_label_server_runs_the_app_from_a_copy_in_its_app_dir_never_from_the_package(tmp_path, capsys):
    import sys

    from mtsr_monai.cli import main
    from mtsr_monai.label import APP_DIR

    app, studies = tmp_path / "app", tmp_path / "studies"
    studies.mkdir()
    args = ["label-server", "--studies", str(studies), "--python", sys.executable, "--app-dir", str(app)]
    assert main([*args, "--dryrun"]) == 0
    command = capsys.readouterr().out.split()
    assert command[command.index("--app") + 1] == str(app.resolve())
    assert (app / "main.py").read_text() == (APP_DIR / "main.py").read_text()
    (app / "main.py").write_text('"""MONAI Label app: x4 super-resolution, an older version"""')
    (app / "logs").mkdir()  # MONAI Label's own files stay
    assert main([*args, "--dryrun"]) == 0
    assert (app / "main.py").read_text() == (APP_DIR / "main.py").read_text() and (app / "logs").is_dir()
    (tmp_path / "file").write_text("x")
    assert main([*args[:-1], str(tmp_path / "file"), "--dryrun"]) == 2
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "main.py").write_text("# another MONAI Label app")  # never replaced
    for where in (tmp_path / "theirs", studies / "app", APP_DIR):
        assert main([*args[:-1], str(where), "--dryrun"]) == 2, where
    assert (tmp_path / "theirs" / "main.py").read_text() == "# another MONAI Label app"
    assert not (studies / "app").exists()


def test_sigterm_to_label_server_lets_the_server_shut_down_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    fake = tmp_path / "python"  # stands for the MONAI Label environment: notes a clean shutdown on SIGTERM
    fake.write_text(f"#!/bin/sh\ntrap 'echo clean > {tmp_path}/stopped; exit 0' TERM\n"
                    f"touch {tmp_path}/started\nwhile :; do sleep 0.05; done\n")  # fmt: skip
    fake.chmod(0o755)
    args = [
        "label-server",
        "--studies",
        str(tmp_path),
        "--python",
        str(fake),
        "--app-dir",
        str(tmp_path.parent / f"{tmp_path.name}_app"),  # not inside the studies
    ]
    proc = subprocess.Popen([sys.executable, "-m", "mtsr_monai", *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143 and (tmp_path / "stopped").read_text().strip() == "clean"


def test_warnings_keep_the_command_prefix_after_a_library_replaces_the_warning_format(capsys, monkeypatch):
    import warnings

    from mtsr_monai.cli import _one_line_warnings

    with _one_line_warnings("explain"):
        monkeypatch.setattr(warnings, "formatwarning", lambda *a, **k: "bare\n")  # as itk does when it loads
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("no t1 given", stacklevel=1)
    assert capsys.readouterr().err == "mtsr explain: warning: no t1 given\n"


def test_translate_takes_the_bids_names_of_the_contrasts(tmp_path):
    import argparse

    from mtsr_monai.cli.commands.translate import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["-i", "x.nii.gz", "-o", str(tmp_path), "--source", "T1w", "--target", "FLAIR"])
    assert (args.source, args.target) == ("t1", "flair")
    assert parser.parse_args(["-i", "x", "-o", "y", "--source", "T9", "--target", "t2"]).source == "t9"
