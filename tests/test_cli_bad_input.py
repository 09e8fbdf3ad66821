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
