"""The audit corpus through every image-reading command: each case exits 0 or 2 as designed (never 1),
no input is overwritten and no partial file is left; a refusal is one line and writes nothing.

Cases come from a 32x32x16 crop of a real BraTS T1 (tests/corpus.py). Refused inputs run through all
ten commands (they stop at reading, in well under a second). Accepted inputs run through the four
cheap commands; the six expensive ones (models, EM segmentation, registration) run on the accepted
inputs that test something of theirs (listed in EXPENSIVE), so the corpus stays within CI's budget.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtsr_monai.cli import main
from tests.corpus import CASES, real_crop

GOOD, OUTLIERS, OBLIQUE, ANISO = (
    "good int16",
    "int16 with +-32767 outliers",
    "oblique 20 degrees",
    "anisotropic 1x1x3 mm",
)
TINY, SLAB = "8x8x8", "3-slice slab"

#: accepted inputs each expensive command runs on (the others share its reader with the cheap commands)
EXPENSIVE = {
    "translate": {GOOD, OBLIQUE, ANISO, "4D with one volume", TINY, SLAB},
    "run": {GOOD, ANISO, TINY, SLAB},
    "explain": {GOOD, OBLIQUE, ANISO, TINY, SLAB},
    "qc": {GOOD, OUTLIERS, "negative offset", "huge scale", TINY},
    "evaluate-clinical": {GOOD, OUTLIERS},
    "preprocess": {GOOD, OBLIQUE, "NRRD", TINY, SLAB},
}
#: the designed refusals of inputs too small for a command (its minimum size is in the message)
TOO_SMALL = {
    TINY: {"explain": "needs one side of at least 17", "preprocess": "at least 16 voxels per axis"},
    SLAB: {"preprocess": "at least 16 voxels per axis"},  # its 32 x 32 slices are enough to explain
}
COMMANDS = ("degrade", "super-resolve", "clinical-sr", "evaluate", *EXPENSIVE)


def _argv(command: str, src: Path, out: Path) -> list[str]:
    """One run of ``command`` on ``src`` writing under ``out`` (fast options: bicubic SR, one sample)."""
    s, o = str(src), str(out)
    args = {
        "degrade": ["--input", s, "--output", f"{o}/lr.nii.gz", "--mode", "kspace", "--scale", "2"],
        "super-resolve": ["--input", s, "--output", f"{o}/sr.nii.gz", "--method", "bicubic"],
        "translate": [
            "--input",
            s,
            "--source",
            "t1",
            "--target",
            "flair",
            "--samples",
            "1",
            "--seed",
            "0",
            "-o",
            o,
        ],
        "run": ["--input", s, "--source", "t1", "--target", "flair", "--samples", "1", "--seed", "0", "-o", o]
        + ["--sr-method", "bicubic"],
        "clinical-sr": ["--t1", s, "--spacing", "1", "--method", "trilinear", "-o", o],
        "explain": ["--t1", s, "--spacing", "1", "-o", o],
        "evaluate": ["--pred", s, "--ref", s, "--json", f"{o}/eval.json"],
        "qc": ["--input", s, "--json", f"{o}/qc.json"],
        "evaluate-clinical": [
            "--pred-dir",
            str(src.parent / "pred"),
            "--ref-dir",
            str(src.parent / "ref"),
            "-o",
            o,
        ],
        "preprocess": ["--datalist", str(src.parent / "datalist.json"), "--output", o, "--no-progress"]
        + ["--iterations", "20", "--n4-iterations", "5,5", "--shrink-factors", "4"],
    }[command]
    return [command, *args]


def _prepare(command: str, src: Path) -> None:
    """The folders and datalist that evaluate-clinical and preprocess read the case from."""
    if command == "evaluate-clinical":
        for name in ("pred", "ref"):
            (src.parent / name).mkdir()
            if src.is_file():
                shutil.copy(src, src.parent / name / src.name)
    if command == "preprocess":
        (src.parent / "datalist.json").write_text(
            json.dumps({"training": [{"subject": "s1", "t1": str(src)}]})
        )


def _expected(case: str, command: str) -> int:
    design = CASES[case][1]
    if design == "bad" or command in TOO_SMALL.get(case, {}):
        return 2
    return 0


def _params():
    for case, (_, design) in CASES.items():
        for command in COMMANDS:
            if design == "bad" or command not in EXPENSIVE or case in EXPENSIVE[command]:
                yield pytest.param(case, command, id=f"{command}-{case}")


@pytest.fixture(scope="module")
def crop(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    t1 = sorted((shared_data / "brats2018_tcia").glob("*/*_t1.nii.gz"))
    if not t1:
        pytest.skip(f"no BraTS T1 under {shared_data}: the corpus is built from one")
    return real_crop(t1[0], (32, 32, 16))


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@pytest.mark.parametrize("case, command", list(_params()))
def test_corpus_case_exits_as_designed_and_leaves_no_partial_or_overwritten_file(
    tmp_path, crop, case, command, capsys
):
    data, affine = crop
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = CASES[case][0](inputs, data, affine)
    _prepare(command, src)
    before = {p: _digest(p) for p in inputs.rglob("*")}
    out = tmp_path / "out"
    code = main(_argv(command, src, out))
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mtsr ")]
    assert code == _expected(case, command), err
    assert {p: _digest(p) for p in inputs.rglob("*")} == before  # nothing changed next to the inputs
    assert not [p for p in tmp_path.rglob("*") if ".part" in p.name]
    if code == 2:
        assert len(err) == 1 and "error:" in err[0]
        assert not out.exists() or not any(out.rglob("*"))
        for phrase in [TOO_SMALL.get(case, {}).get(command)]:
            assert phrase is None or phrase in err[0]
    else:
        assert out.is_dir() and any(p.is_file() for p in out.rglob("*"))
