"""`mtsr evaluate-clinical`: report contents on tiny synthetic subjects, and refusals with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mtsr_monai.cli import main
from tests.conftest import write_nifti


def _flair_subject(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FLAIR-like nested spheres (CSF dark, WM < GM) with one bright lesion; returns (image, lesion label)."""
    rng = np.random.default_rng(seed)
    g = np.indices((36, 36, 28)).astype(np.float64) - np.array([17.5, 17.5, 13.5])[:, None, None, None]
    r = np.sqrt((g**2).sum(0)) + rng.uniform(-1, 1)
    labels = np.zeros(r.shape, np.uint8)
    labels[r < 13] = 1
    labels[r < 11] = 2
    labels[r < 7] = 3
    img = np.array([0.0, 100.0, 400.0, 300.0])[labels] + 12 * rng.standard_normal(r.shape)
    lesion = ((g - np.array([3, 2, 0])[:, None, None, None]) ** 2).sum(0) < 6.0
    img = np.where(lesion, 800.0, img)
    return np.where(labels > 0, img, 0.0).astype(np.float32), lesion.astype(np.uint8)


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {k: tmp_path / k for k in ("ref", "sr", "trilinear", "labels")}
    for s in range(3):
        img, lesion = _flair_subject(s)
        brain = img > 0
        blurred = np.where(brain, ndimage.gaussian_filter(img, (0, 0, 1.5)), 0).astype(np.float32)
        sr = np.where(brain, img + 8 * np.random.default_rng(10 + s).standard_normal(img.shape), 0)
        for key, data in (("ref", img), ("sr", sr.astype(np.float32)), ("trilinear", blurred)):
            (out[key] / f"sub{s}").mkdir(parents=True, exist_ok=True)
            write_nifti(out[key] / f"sub{s}" / "flair.nii.gz", data)
        (out["labels"] / f"sub{s}").mkdir(parents=True, exist_ok=True)
        write_nifti(out["labels"] / f"sub{s}" / f"sub{s}_seg.nii.gz", lesion)
    return out


def test_report_has_every_section_and_number(dirs, tmp_path):
    report_dir = tmp_path / "report"
    code = main(["evaluate-clinical", "--pred-dir", str(dirs["sr"]), "--ref-dir", str(dirs["ref"]),
                 "--baseline-dir", str(dirs["trilinear"]), "--labels-dir", str(dirs["labels"]),
                 "--output", str(report_dir)])  # fmt: skip
    assert code == 0
    data = json.loads((report_dir / "report.json").read_text())
    assert [s["key"] for s in data["subjects"]] == ["sub0/flair", "sub1/flair", "sub2/flair"]
    sub = data["subjects"][0]
    assert set(sub["methods"]) == {"sr", "trilinear"}
    m = sub["methods"]["sr"]
    for key in ("cjv", "efc", "fwhm_avg", "wm2max", "cnr"):
        assert key in m["iqm"] and key in m["iqm_difference"]
    assert m["iqm_difference"]["fwhm_avg"] == pytest.approx(
        m["iqm"]["fwhm_avg"] - sub["iqm_reference"]["fwhm_avg"]
    )
    assert {"dice", "jaccard", "tpf", "ppv", "tnf"} <= set(m["agreement"]["wm"])
    assert {"mae", "psnr", "ssim"} <= set(m["fidelity"])
    # the blurred baseline is less faithful than the lightly noisy "SR" and smoother (larger FWHM)
    fid = data["summary"]["fidelity"]
    assert fid["sr"]["psnr"]["mean"] > fid["trilinear"]["psnr"]["mean"]
    assert sub["methods"]["trilinear"]["iqm"]["fwhm_z"] > m["iqm"]["fwhm_z"]
    # the lesion is found by the hyperintensity rule on the reference and compared with the label
    assert sub["hyperintensity_vs_tumour_reference"]["dice"] > 0.7
    assert "hyperintensity_vs_tumour" in data["summary"]
    for tissue in ("csf", "gm", "wm", "hyperintensity"):
        assert (report_dir / "figures" / f"bland_altman_{tissue}.png").is_file()
        assert set(data["summary"]["bland_altman"][tissue]) == {"sr", "trilinear"}
    page = (report_dir / "index.html").read_text()
    assert (
        page.count("data:image/png;base64,") == 4 + 2 * 3
    )  # Bland-Altman + montage and difference per subject
    assert "Bland-Altman" in page and "whole-tumour" in page
    assert all(f"<h3>{key}</h3>" in page for key in ("sub0/flair", "sub1/flair", "sub2/flair"))  # not stems


def test_names_option_and_flat_layout(tmp_path):
    ref, pred = tmp_path / "hr", tmp_path / "model_out"
    for s in range(2):
        img, _ = _flair_subject(s)
        write_nifti((ref.mkdir(exist_ok=True), ref)[1] / f"s{s}_flair.nii.gz", img)
        write_nifti((pred.mkdir(exist_ok=True), pred)[1] / f"s{s}_flair.nii.gz", img * 1.01)
    write_nifti(ref / "extra_flair.nii.gz", _flair_subject(5)[0])  # no prediction for it: listed as unmatched
    out = tmp_path / "rep"
    assert main(["evaluate-clinical", "--pred-dir", str(pred), "--ref-dir", str(ref), "--names", "ESRGAN",
                 "--output", str(out)]) == 0  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert list(data["methods"]) == ["ESRGAN"] and data["unmatched"] == {"extra_flair": ["ESRGAN"]}


def test_refuses_missing_dir_unmatched_subjects_and_other_grids(dirs, tmp_path, capsys):
    out = tmp_path / "never"
    base = ["evaluate-clinical", "--ref-dir", str(dirs["ref"]), "--output", str(out)]
    assert main([*base, "--pred-dir", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    write_nifti(other / "zzz.nii.gz", _flair_subject(0)[0])
    assert main([*base, "--pred-dir", str(other)]) == 2
    assert "no subject matched" in capsys.readouterr().err
    shifted = tmp_path / "shifted"
    for s in range(3):
        (shifted / f"sub{s}").mkdir(parents=True)
        write_nifti(shifted / f"sub{s}" / "flair.nii.gz", _flair_subject(s)[0][:, :, :-2])
    assert main([*base, "--pred-dir", str(shifted)]) == 2
    assert "not on the grid" in capsys.readouterr().err
    assert not out.exists()


def test_a_subject_failing_half_way_leaves_the_earlier_report_as_it_was(dirs, tmp_path):
    report_dir = tmp_path / "report"
    argv = ["evaluate-clinical", "--ref-dir", str(dirs["ref"]), "--output", str(report_dir)]
    assert main([*argv, "--pred-dir", str(dirs["sr"])]) == 0
    before = {p: p.read_bytes() for p in report_dir.rglob("*") if p.is_file()}
    bad = dirs["sr"].parent / "bad"
    for s in range(3):  # the last subject's prediction holds a NaN voxel: found after two subjects' figures
        img = np.asarray(nib.load(str(dirs["sr"] / f"sub{s}" / "flair.nii.gz")).dataobj, np.float32)
        img[0, 0, 0] = np.nan if s == 2 else img[0, 0, 0]
        (bad / f"sub{s}").mkdir(parents=True)
        write_nifti(bad / f"sub{s}" / "flair.nii.gz", img)
    assert main([*argv, "--pred-dir", str(bad)]) == 2
    assert {p: p.read_bytes() for p in report_dir.rglob("*") if p.is_file()} == before


def test_a_reference_row_is_shown_but_not_ranked_for_bold():
    from mtsr_monai.reporting.html import html_table

    rows = [["reference", 0.9], ["model", 0.5], ["trilinear", 0.4]]
    table = html_table(["image", "Dice"], rows, [None, "max"], unranked=1)
    assert "<b>0.5" in table and "<b>0.9" not in table


def test_a_head_mask_that_leaves_out_tissue_is_warned_about_and_one_that_leaves_out_air_is_not():
    from mtsr_monai.reporting.clinical import _tissue_outside_head

    rng = np.random.default_rng(0)
    image = rng.normal(100, 5, (20, 20, 20)).astype(np.float32)  # brain from edge to edge (a tight crop)
    head = np.zeros(image.shape, bool)
    head[:, :10] = True
    assert "leaves out voxels at 100%" in _tissue_outside_head(image, head)[0]
    image[:, 10:] = np.abs(rng.normal(0, 3, (20, 10, 20)))  # air noise outside instead
    assert _tissue_outside_head(image, head) == []
