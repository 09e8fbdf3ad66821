"""mtsr run (SR then N translations) and mtsr demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mtsr_monai.inference.translate import export_generator
from mtsr_monai.networks.bicyclegan import LatentUNetGenerator
from tests.conftest import write_nifti


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    return export_generator(
        LatentUNetGenerator(nz=4, ngf=4, image_size=32),
        tmp_path / "w.pt",
        {"source": "t1", "target": "t2", "nz": 4, "ngf": 4, "image_size": 32},
    )


def _cli(*args: str) -> int:
    from mtsr_monai.cli import main

    return main(list(args))


def _run(image, weights, out, *extra: str, source: str = "t1", target: str = "t2") -> int:
    """``mtsr run`` of ``image`` (``source`` -> ``target``) with translation ``weights`` into ``out``."""
    args = ["-i", str(image), "--source", source, "--target", target, "-o", str(out)]
    return _cli("run", *args, "--weights", str(weights), *extra)


def test_run_writes_sr_samples_stats_montage_and_summary(
    tiny_weights, phantom_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MTSR_SR_WEIGHTS", str(tmp_path / "absent.pt"))
    out = tmp_path / "run"
    assert _run(phantom_file, tiny_weights, out, "-n", "3", "--seed", "1") == 0
    lr = nib.load(phantom_file)
    sr = nib.load(out / "sr.nii.gz")
    assert sr.shape == (128, 128, 16)  # x4 in-plane, slices kept (axial = third axis here)
    np.testing.assert_allclose(
        nib.affines.voxel_sizes(sr.affine), nib.affines.voxel_sizes(lr.affine) / [4, 4, 1]
    )
    for name in ("sample_0", "sample_2", "mean", "std"):
        img = nib.load(out / f"{name}.nii.gz")
        assert img.shape == sr.shape and np.allclose(img.affine, sr.affine)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["super_resolution"].startswith("bicubic (SR weights not found")
    assert len(summary["codes"]) == 3 and summary["seed"] == 1
    assert summary["outputs"]["mean"] == "mean.nii.gz"  # relative: the folder can be moved
    assert summary["outputs"]["samples"] == [f"sample_{i}.nii.gz" for i in range(3)]
    png = (out / "montage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    err = capsys.readouterr().err
    for stage in ("start-up", "read", "super-resolution", "translation", "write volumes, montage"):
        assert stage in err, stage  # progress names each step


def test_run_is_reproducible_with_a_seed(tiny_weights, phantom_file, tmp_path):
    for name in ("a", "b"):
        args = ("-n", "2", "--seed", "3", "--sr-method", "bicubic")
        assert _run(phantom_file, tiny_weights, tmp_path / name, *args) == 0
    a, b = (nib.load(tmp_path / n / "sample_1.nii.gz").get_fdata() for n in ("a", "b"))
    np.testing.assert_array_equal(a, b)


def test_run_bad_input_exits_2_without_outputs(tiny_weights, tmp_path, capsys):
    bad = write_nifti(tmp_path / "nan.nii.gz", np.full((8, 8, 4), np.nan, np.float32))
    out = tmp_path / "out"
    assert _run(bad, tiny_weights, out) == 2
    assert "nan.nii.gz" in capsys.readouterr().err
    assert not out.exists()
    assert _cli("run", "-i", str(bad), "--source", "t1", "--target", "t1", "-o", str(out)) == 2


def test_run_refuses_weights_of_another_translation_like_translate(
    tiny_weights, phantom_file, tmp_path, capsys
):
    out = tmp_path / "out"
    assert _run(phantom_file, tiny_weights, out, source="t1", target="flair") == 2  # the weights are t1 -> t2
    assert "not t1 -> flair" in capsys.readouterr().err
    assert not out.exists()


def test_run_refuses_codes_kept_in_its_own_output_folder_instead_of_removing_them(
    tiny_weights, phantom_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("MTSR_SR_WEIGHTS", str(tmp_path / "absent.pt"))
    out = tmp_path / "out"
    translate = f"translate -i {phantom_file} --source t1 --target t2 -o {out} --weights {tiny_weights} -n 2"
    assert _cli(*translate.split()) == 0
    codes = (out / "codes.json").read_bytes()
    assert _run(phantom_file, tiny_weights, out, "--codes", str(out / "codes.json")) == 2
    assert (out / "codes.json").read_bytes() == codes


def test_run_refuses_a_scale_the_sr_model_does_not_make_before_any_work(
    tiny_weights, phantom_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("MTSR_SR_WEIGHTS", raising=False)  # the shipped x4 model
    out = tmp_path / "out"
    assert _run(phantom_file, tiny_weights, out, "--scale", "2") == 2
    err = capsys.readouterr().err
    assert "upsamples x4, not x2" in err and "start-up" not in err and not out.exists()


def test_demo_end_to_end_with_shipped_weights(tmp_path):
    from mtsr_monai.inference.pipeline import run_demo
    from mtsr_monai.inference.translate import default_weights

    if not default_weights("t1", "flair").is_file():
        pytest.skip("no shipped t1_to_flair weights")
    report = run_demo(tmp_path, samples=2, seed=3, slices=4, progress=False)
    m = report["metrics"]
    assert np.isfinite(m["sr"]["psnr"]) and np.isfinite(m["bicubic"]["psnr"])
    assert len(m["translation"]["psnr_samples"]) == 2
    html = (tmp_path / "report.html").read_text()
    assert "run/montage.png" in html and "PSNR" in html
    assert "has no lesion" in html  # the FLAIR model can invent one: said beside its samples
    assert (tmp_path / "run" / "montage.png").is_file()
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["slices"] == 4 and saved["html"] == "report.html" and saved["montage"] == "run/montage.png"
    assert saved["seed"] == 3 and "drawn with seed\n3" in html  # not only the degradation's seed 0
    # input, bicubic, SR and truth side by side; every path relative to the output folder
    assert 'src="figures/sr_comparison.png"' in html
    assert (tmp_path / "figures" / "sr_comparison.png").is_file()
    assert str(tmp_path) not in html
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())  # built in a staging folder
    assert summary["input"] == str(tmp_path / "lr_t1.nii.gz") and Path(report["html"]).is_file()


def test_a_demo_stopped_half_way_leaves_an_earlier_demo_as_it_was_and_a_new_folder_empty(
    tmp_path, monkeypatch
):
    from mtsr_monai.inference import pipeline
    from mtsr_monai.inference.translate import default_weights

    if not default_weights("t1", "flair").is_file():
        pytest.skip("no shipped t1_to_flair weights")
    pipeline.run_demo(tmp_path / "done", samples=2, slices=4, progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "done").rglob("*") if p.is_file()}

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "demo_figures", stop)
    for folder, samples in (("done", 1), ("new", 1)):  # a rerun with another sample count; a first run
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_demo(tmp_path / folder, samples=samples, slices=8, progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "done").rglob("*") if p.is_file()} == before
    assert not [p for p in (tmp_path / "new").rglob("*") if p.is_file()]  # nothing of it left


def test_mtsr_run_refuses_an_empty_brain_mask(tmp_path):
    from mtsr_monai.errors import InputError
    from mtsr_monai.inference.pipeline import _load_input

    image = write_nifti(tmp_path / "t1.nii.gz", np.random.default_rng(0).random((8, 8, 4)).astype(np.float32))
    empty = write_nifti(tmp_path / "mask.nii.gz", np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(InputError, match="empty"):
        _load_input(image, empty)


def test_the_demo_figure_names_the_bicubic_fallback_and_the_cli_prints_no_diversity_for_one_sample(
    tmp_path, monkeypatch, capsys
):
    from mtsr_monai.cli import main
    from mtsr_monai.inference import pipeline
    from mtsr_monai.reporting import demo_report

    panels = []
    monkeypatch.setattr(demo_report, "sr_comparison_figure", lambda items, *a, **k: panels.extend(items))
    monkeypatch.setattr(demo_report, "axial_montage", lambda *a, **k: None)
    slab = {"hr_affine": np.eye(4), "brain": np.ones((4, 4, 2)), "lr": 0, "lr_affine": 0, "hr": 0,
            "truth_b": np.ones((4, 4, 2), np.float32)}  # fmt: skip
    arrays = {"sr": 0, "samples": [0], "mean": 0, "std": 0}
    demo_report.demo_figures(tmp_path, slab, arrays, 0, "t1", "flair", sr_method="bicubic")
    assert [p[0] for p in panels][2] == "SR: bicubic (no model)"
    translation = {"psnr_mean": 20.0, "ssim_mean": 0.8}
    report = {"super_resolution": "model (x)", "seed": 3, "lpips": {"available": False, "reason": "no"},
              "montage": "m.png", "figures": {}, "html": "r.html", "seconds": 1.0,
              "metrics": {"sr": {"psnr": 1.0, "ssim": 1.0}, "bicubic": {"psnr": 1.0, "ssim": 1.0},
                          "translation": translation}}  # fmt: skip
    monkeypatch.setattr(pipeline, "run_demo", lambda *a, **k: report)
    assert main(["demo", "-o", str(tmp_path / "d"), "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "n/a (one sample)" in out and "0.0000" not in out and "seed 3" in out


@pytest.mark.slow
def test_a_demo_rerun_from_another_contrast_leaves_none_of_the_first_ones_scans(tmp_path):
    from mtsr_monai.inference.pipeline import run_demo
    from mtsr_monai.inference.translate import default_weights

    if not (default_weights("t1", "flair").is_file() and default_weights("t2", "t1").is_file()):
        pytest.skip("no shipped t1_to_flair / t2_to_t1 weights")
    run_demo(tmp_path, samples=1, slices=2, progress=False)
    (tmp_path / "lr_mine.nii.gz").write_bytes(b"a user's own file")
    run_demo(tmp_path, source="t2", target="t1", samples=1, slices=2, progress=False)
    scans = sorted(p.name for p in tmp_path.glob("*.nii.gz"))
    assert scans == ["hr_t2.nii.gz", "lr_brain_mask.nii.gz", "lr_mine.nii.gz", "lr_t2.nii.gz"]


def test_a_run_interrupted_at_its_summary_leaves_the_earlier_runs_folder_and_mask_whole(
    tiny_weights, tmp_path, monkeypatch
):
    from mtsr_monai.inference import brain_mask, pipeline
    from tests.conftest import ellipsoid

    monkeypatch.setenv("MTSR_SR_WEIGHTS", str(tmp_path / "absent.pt"))
    shape = (40, 44, 16)
    brain, head = ellipsoid(shape, 0.6), ellipsoid(shape, 0.8)
    image = np.where(brain, 80.0, np.where(head & ~ellipsoid(shape, 0.7), 150.0, 5.0)).astype(np.float32)
    path = write_nifti(tmp_path / "head.nii.gz", image, np.diag([4.0, 4.0, 1.0, 1.0]))  # with its skull
    monkeypatch.setattr(brain_mask, "estimate_brain_mask", lambda *a, **k: brain)  # registration: slow
    out = tmp_path / "run"
    assert _run(path, tiny_weights, out, "-n", "3", "--seed", "1", "--mask", "auto") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "brain_mask.nii.gz" in before and "summary.json" in before

    def interrupted(*args, **kwargs):  # Ctrl-C as the summary is made, the volumes and mask staged
        raise KeyboardInterrupt

    real_copy = shutil.copyfile

    def copy_interrupted(src, dst, *args, **kwargs):  # Ctrl-C while the estimated mask is kept
        if Path(src).name == "brain_mask.nii.gz" or Path(dst).name == "brain_mask.nii.gz":
            raise KeyboardInterrupt
        return real_copy(src, dst, *args, **kwargs)

    for target, name, stop in (
        (pipeline, "_summary_text", interrupted),
        (shutil, "copyfile", copy_interrupted),
    ):
        with monkeypatch.context() as patched:
            patched.setattr(target, name, stop)
            assert _run(path, tiny_weights, out, "-n", "2", "--seed", "9", "--mask", "auto") == 130
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
