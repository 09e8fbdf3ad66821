"""bench_sr --against: a candidate's per-volume brain PSNR against a baseline run on the same volumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import bench_sr  # noqa: E402


def _scores(brain_psnr: float) -> dict:
    return {"brain": {"psnr": brain_psnr, "ssim": 0.5}, "image": {"psnr": 30.0, "ssim": 0.8}}


def _result(psnrs: list[float], precision: str = "bf16") -> dict:
    """A heldout() result of SR brain PSNRs ``psnrs`` (bicubic 20 dB), one volume each."""
    rows = [
        {"volume": f"v{i}.nii.gz", "degradation": f"second-order (seed {i})", "precision": precision,
         "sr": _scores(p), "bicubic": _scores(20.0)}
        for i, p in enumerate(psnrs)
    ]  # fmt: skip
    summary = {"volumes": len(rows)}
    summary |= {f"{r}_{m}": {"sr_mean": 0.0, "bicubic_mean": 0.0, "sr_wins": 0} for r in ("brain", "image")
                for m in ("psnr", "ssim")}  # fmt: skip
    return {"summary": summary, "per_volume": rows}


def test_gains_are_the_candidates_brain_psnr_minus_the_baselines_per_volume():
    comparison = bench_sr.compare_brain_psnr(_result([24.0, 22.5, 25.0]), _result([23.9, 22.6, 24.7]))
    assert comparison["gains"] == pytest.approx([0.1, -0.1, 0.3])
    assert comparison["mean_gain"] == pytest.approx(0.1)
    assert comparison["ahead"] == 2
    assert "ahead on 2 of 3" in bench_sr.comparison_line(comparison)


@pytest.mark.parametrize("baseline", [_result([23.0, 22.0]), _result([23.0, 22.0, 24.0], precision="fp32")])
def test_a_baseline_of_other_volumes_or_precision_is_refused(baseline):
    with pytest.raises(ValueError, match="different volumes"):
        bench_sr.compare_brain_psnr(_result([24.0, 22.5, 25.0]), baseline)


def test_against_a_file_without_a_heldout_result_exits_2_before_any_work(tmp_path, capsys):
    speed_only = tmp_path / "speed.json"
    speed_only.write_text(json.dumps({"threads": 2, "generator_speed": {}}))
    with pytest.raises(SystemExit) as exit_info:
        bench_sr.main(["--heldout", "--validation", "--against", str(speed_only)])
    assert exit_info.value.code == 2
    assert "not a --heldout --json result" in capsys.readouterr().err


def test_against_without_heldout_exits_2(tmp_path):
    baseline = tmp_path / "base.json"
    baseline.write_text(json.dumps({"heldout": _result([23.0])}))
    with pytest.raises(SystemExit) as exit_info:
        bench_sr.main(["--skip-speed", "--against", str(baseline)])
    assert exit_info.value.code == 2


def test_a_baseline_found_unlike_after_the_run_exits_2_with_the_runs_scores_written(tmp_path, monkeypatch):
    baseline = tmp_path / "base.json"
    baseline.write_text(json.dumps({"heldout": _result([23.0], precision="fp32")}))
    monkeypatch.setattr(bench_sr, "validation_volumes", lambda: [Path("v0.nii.gz")])
    monkeypatch.setattr(bench_sr, "heldout", lambda *args: _result([24.0]))  # the scores a bf16 run gave
    out = tmp_path / "out.json"
    argv = ["--skip-speed", "--heldout", "--validation", "--against", str(baseline), "--json", str(out)]
    assert bench_sr.main(argv) == 2
    assert json.loads(out.read_text())["heldout"]["per_volume"][0]["sr"]["brain"]["psnr"] == 24.0
