"""Long commands show their stages on stderr (qc, degrade, preprocess, make-demo-data); can be silenced."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mtsr_monai.cli import main as mtsr
from mtsr_monai.progress import StageBar
from tests.conftest import write_nifti


def test_stage_bar_counts_finished_stages_and_names_the_running_one(capsys):
    with StageBar(3, "work") as bar:
        bar.next("first")
        bar.next("second")
        assert bar._bar.n == 1
        bar.skip(1, "third done before")
        assert bar._bar.n == 3
    err = capsys.readouterr().err
    assert "work" in err and "second" in err and "3/3" in err


def test_a_failing_stage_is_not_counted_done(capsys):
    try:
        with StageBar(2, "work") as bar:
            bar.next("first")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert bar._bar.n == 0


def test_qc_shows_its_stages(tmp_path, phantom, capsys):
    image = write_nifti(tmp_path / "t1.nii.gz", phantom * 1000, np.diag([1.0, 1.0, 2.0, 1.0]))
    mtsr(["qc", "--input", str(image), "--json", str(tmp_path / "qc.json")])  # exit code: not the point
    err = capsys.readouterr().err
    for stage in ("read", "brain mask", "tissue segmentation (EM)"):
        assert stage in err, err


def test_degrade_shows_its_stages_and_no_progress_hides_them(tmp_path, phantom, capsys):
    image = write_nifti(tmp_path / "hr.nii.gz", phantom * 1000, np.diag([1.0, 1.0, 2.0, 1.0]))
    argv = ["degrade", "-i", str(image), "--mode", "second-order"]
    assert mtsr([*argv, "-o", str(tmp_path / "lr.nii.gz")]) == 0
    err = capsys.readouterr().err
    assert "degrade" in err and "second-order" in err and "write" in err
    assert mtsr([*argv, "-o", str(tmp_path / "lr2.nii.gz"), "--no-progress"]) == 0
    assert "second-order" not in capsys.readouterr().err


def test_preprocess_counts_the_stages_it_builds():
    from mtsr_monai.data.preprocess import PreprocessConfig, build_stage_names, build_stages

    for config in (PreprocessConfig(), PreprocessConfig(n4=False, crop=False)):
        built = [name for name, _ in build_stages(config, ["t1"], [])]
        assert build_stage_names(config) == built


FIRST_STAGE_PROBE = """
import sys
from mtsr_monai import progress
original = progress.StageBar.next
def first_stage(self, stage):
    if not getattr(self, "probed", False):
        self.probed = True
        print("torch loaded at the first stage:", "torch" in sys.modules, file=sys.stderr)
    original(self, stage)
progress.StageBar.next = first_stage
from mtsr_monai.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["degrade", "--input", "junk.nii.gz", "--output", "lr.nii.gz", "--mode", "kspace"],
        ["qc", "--input", "junk.nii.gz"],
        ["evaluate", "--pred", "junk.nii.gz", "--ref", "junk.nii.gz"],
        ["preprocess", "--datalist", "datalist.json", "--output", "out"],
        ["super-resolve", "--input", "junk.nii.gz", "--output", "sr.nii.gz"],
        ["translate", "--input", "junk.nii.gz", "--source", "t1", "--target", "flair", "-o", "out"],
    ],
    ids=lambda argv: argv[0],
)
def test_the_bar_is_up_before_torch_loads(tmp_path, argv):
    # loading torch and MONAI takes seconds (minutes on a loaded machine): they load inside the first stage;
    # the input exists (a missing one is refused before any stage) but is no image: the command stops there
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image")
    (tmp_path / "datalist.json").write_text('{"training": [{"subject": "a", "t1": "junk.nii.gz"}]}')
    done = subprocess.run(
        [sys.executable, "-c", FIRST_STAGE_PROBE, *argv], capture_output=True, text=True, cwd=tmp_path
    )
    assert "torch loaded at the first stage: False" in done.stderr, done.stderr[-500:]
