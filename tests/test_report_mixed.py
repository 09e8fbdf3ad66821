"""`mtsr evaluate-clinical` on a cohort mixing FLAIR and T1 images: hyperintensities summarised over FLAIR."""

from __future__ import annotations

import json
import shutil

from mtsr_monai.cli import main
from tests.test_report import dirs  # noqa: F401 (the fixture)


def test_mixed_contrasts_summarise_hyperintensities_over_the_flair_subjects(dirs, tmp_path):  # noqa: F811
    for key in ("ref", "sr", "trilinear"):  # sub0 also has a "T1" (the same array: contrast from the name)
        shutil.copy(dirs[key] / "sub0" / "flair.nii.gz", dirs[key] / "sub0" / "t1.nii.gz")
    report_dir = tmp_path / "report"
    argv = ["evaluate-clinical", "--pred-dir", str(dirs["sr"]), "--ref-dir", str(dirs["ref"])]
    assert main([*argv, "--baseline-dir", str(dirs["trilinear"]), "--output", str(report_dir)]) == 0
    data = json.loads((report_dir / "report.json").read_text())
    contrasts = sorted(s["contrast"] for s in data["subjects"])
    assert contrasts == ["flair", "flair", "flair", "t1"]
    assert len(data["summary"]["bland_altman"]["hyperintensity"]["sr"]["difference"]) == 3
