"""The README's typical research run, end to end on a tiny BraTS tree: datalist -> preprocess -> SR bundle
training (a few iterations) -> degrade -> super-resolve -> evaluate -> qc; and a bundle run that fails ends
with one line naming the cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mtsr_monai.cli import main as mtsr
from tests.conftest import REPO, write_nifti

SR_CONFIGS = REPO / "bundles" / "mtsr_sr" / "configs"
# a few iterations of a small network: the run's plumbing is under test, not the model
TINY_TRAINING = [
    "--network_def#features", "8", "--network_def#growth", "4", "--network_def#num_blocks", "2",
    "--keep_blocks", "[0]", "--discriminator_def#features", "8", "--epoch_length", "2", "--max_epochs", "1",
    "--pretrain_epochs", "1", "--hr_patch", "32", "--samples_per_volume", "2", "--batch_size", "1",
    "--val_slices_per_volume", "1", "--loss_weights#vgg", "0", "--num_threads", "1",
]  # fmt: skip


def _train(datalist: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run training`` of the SR bundle, as the README writes it."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(SR_CONFIGS / "train.yaml"), "--datalist", str(datalist),
        "--output_dir", str(output_dir), *TINY_TRAINING, *extra,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO, env=env)


def _tiny_brats_tree(shared_data: Path, root: Path, n: int = 3) -> Path:
    """``n`` BraTS cases (t1, flair) in BraTS naming, centre-cropped to 160 x 192 x 96 voxels (speed)."""
    import nibabel as nib

    for case in sorted((shared_data / "brats2018_tcia").iterdir())[:n]:
        (root / case.name).mkdir(parents=True)
        for modality in ("t1", "flair"):
            image = nib.load(case / f"{case.name}_{modality}.nii.gz")
            crop = (slice(40, 200), slice(24, 216), slice(30, 126))
            affine = image.affine.copy()
            affine[:3, 3] = image.affine[:3, :3] @ [40, 24, 30] + image.affine[:3, 3]
            data = np.asarray(image.dataobj)[crop]
            write_nifti(root / case.name / f"{case.name}_{modality}.nii.gz", data, affine)
    return root


def _coarse_mni(root: Path) -> list[str]:
    """``--template`` / ``--template-mask`` options: the MNI152 T1 and its GM+WM brain at 2 mm (a
    preprocessed volume 8x smaller than at 1 mm, so the test's training and SR stay short)."""
    import nibabel as nib

    from mtsr_monai.io.template import template_path

    t1 = nib.load(template_path("t1"))
    affine = t1.affine.copy()
    affine[:3, :3] *= 2
    brain = sum(np.asarray(nib.load(template_path(k)).dataobj, np.float32) for k in ("gm", "wm"))
    template = write_nifti(root / "mni_2mm.nii.gz", np.asarray(t1.dataobj, np.float32)[::2, ::2, ::2], affine)
    mask = write_nifti(
        root / "mni_2mm_mask.nii.gz", (brain[::2, ::2, ::2] > 0.3 * brain.max()).astype(np.uint8), affine
    )
    return ["--template", str(template), "--template-mask", str(mask)]


@pytest.mark.real_data
@pytest.mark.slow
def test_readme_research_run_from_scans_to_qc(shared_data, tmp_path):
    tree = _tiny_brats_tree(shared_data, tmp_path / "brats")
    datalist, prep, run = tmp_path / "brats.json", tmp_path / "prep", tmp_path / "runs" / "sr"
    assert mtsr(["datalist", "--root", str(tree), "--output", str(datalist)]) == 0
    quick = ["--iterations", "20", "--shrink-factors", "4", "--n4-iterations", "5,5", "--no-progress"]
    quick += _coarse_mni(tmp_path)
    argv = ["preprocess", "--datalist", str(datalist), "--output", str(prep), "--k-divisible", "4"]
    assert mtsr(argv + quick) == 0

    trained = _train(prep / "datalist.json", run)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run / "model.pt").is_file()  # the best validation PSNR's weights

    subject = json.loads((prep / "datalist.json").read_text())["test"][0]["subject"]
    t1, mask = str(prep / subject / "t1.nii.gz"), str(prep / subject / "brain_mask.nii.gz")
    lr, sr = str(tmp_path / "lr.nii.gz"), str(tmp_path / "sr.nii.gz")
    bundle = str(REPO / "bundles" / "mtsr_sr")
    steps = [
        ["degrade", "--input", t1, "--output", lr, "--mode", "second-order", "--seed", "0"],
        ["super-resolve", "--input", lr, "--output", sr, "--bundle", bundle],
        ["evaluate", "--pred", sr, "--ref", t1, "--mask", mask, "--json", str(tmp_path / "eval.json")],
        ["qc", "--input", sr, "--json", str(tmp_path / "qc.json")],
    ]
    for argv in steps:
        assert mtsr(argv) == 0, argv[0]
    assert json.loads((tmp_path / "eval.json").read_text())["brain"]["psnr"] > 15
    assert json.loads((tmp_path / "qc.json").read_text())


def test_bundle_run_without_the_modality_ends_with_one_line_naming_it(tmp_path):
    vol = np.zeros((32, 32, 8), np.float32)
    vol[8:24, 8:24] = 1.0
    t1 = write_nifti(tmp_path / "t1.nii.gz", vol)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"subject": "a", "t1": str(t1)}], "validation": []}))
    failed = _train(datalist, tmp_path / "run", "--modality", "['flair']")
    assert failed.returncode == 2  # bad input, as for the mtsr commands
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("mtsr bundle run: error: "), last
    assert "no subject of split 'training' has all of hr; it has t1" in last, last
    assert not (tmp_path / "run").exists()  # refused before any file, recipe.json included
