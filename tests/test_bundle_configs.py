"""Every config of every bundle runs as its docs say, on tiny data (in-process ``monai.bundle.run``; the SR
training configs, inference configs and the CycleGAN merge are run by tests/test_sr_bundle.py,
tests/test_bundle_inference.py and tests/test_cyclegan.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtsr_monai.inference.bundle import override_args
from tests.conftest import REPO, write_nifti
from tests.test_bundle_zoo import _head, _train_overrides


def _configs(bundle: str, *names: str) -> dict:
    root = REPO / "bundles" / bundle
    files = [str(root / "configs" / n) for n in names]
    return {
        "config_file": files if len(files) > 1 else files[0],
        "meta_file": str(root / "configs" / "metadata.json"),
        "logging_file": str(root / "configs" / "logging.conf"),
        "bundle_root": str(root),
    }


def _one_rank_run(bundle: str, configs: list[str], overrides: dict) -> None:
    """``monai.bundle run training`` in a child process with the environment torchrun gives one rank (gloo on
    the CPU): the process group and Ignite's distributed state stay out of this test process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    env["OMP_NUM_THREADS"] = "1"
    c = _configs(bundle, *configs)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(c["config_file"])]
    cmd += [
        "--meta_file",
        c["meta_file"],
        "--logging_file",
        c["logging_file"],
        "--bundle_root",
        c["bundle_root"],
    ]
    cmd += override_args(overrides)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_sr_evaluate_writes_metrics_of_the_shipped_weights(tmp_path):
    from monai.bundle import run

    overrides = _train_overrides("mtsr_sr", tmp_path)
    for key in ("network_def#features", "network_def#growth", "network_def#num_blocks", "keep_blocks"):
        overrides.pop(key)  # the shipped weights' network
    datalist = json.loads(Path(overrides["datalist"]).read_text())
    datalist["test"] = datalist["training"]  # a held-out subject other than the validation one
    Path(overrides["datalist"]).write_text(json.dumps(datalist))
    from mtsr_monai.inference.bundle import bundle_parser

    untrained = tmp_path / "untrained.pt"  # the same network, as initialised
    torch.save(bundle_parser("mtsr_sr").get_parsed_content("network_def").state_dict(), untrained)
    psnr = {}
    for name, weights in (("shipped", {}), ("untrained", {"checkpoint": str(untrained)})):
        overrides["output_dir"] = str(tmp_path / name)
        configs = _configs("mtsr_sr", "train.yaml", "evaluate.yaml")
        run("evaluating", **configs, **overrides, **weights, val_slices_per_volume=1)
        rows = dict(line.split(",") for line in (tmp_path / name / "metrics.csv").read_text().splitlines())
        assert {"val_brain_psnr", "val_psnr", "val_ssim"} <= set(rows)
        psnr[name] = float(rows["val_psnr"])
    assert psnr["shipped"] > psnr["untrained"] + 3  # the shipped weights are the ones scored
    scored = (tmp_path / "shipped" / "val_psnr_raw.csv").read_text()
    assert "s0_hr" in scored and "s1_hr" not in scored  # the test split, not the validation one


def _mt_train(tmp_path: Path, *configs: str) -> Path:
    from monai.bundle import run

    overrides = _train_overrides("mtsr_mt", tmp_path)
    budget = {"epoch_length": 2, "max_epochs": 1, "checkpoint_every": 1, "num_threads": 1}
    run("training", **_configs("mtsr_mt", *configs), **overrides, **budget)
    return tmp_path / "run" / "t1_to_flair.pt"


@pytest.mark.slow
def test_mt_train_exports_weights_that_evaluate_and_inference_mtsr_read(tmp_path):
    from monai.bundle import run

    weights = _mt_train(tmp_path, "train.yaml")
    assert weights.is_file()
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    datalist["test"] = datalist["training"]  # a held-out subject other than the validation one
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    out = tmp_path / "eval"
    evaluate = {
        "datalist": str(tmp_path / "datalist.json"),
        "checkpoint": str(weights),
        "output_dir": str(out),
    }
    run("evaluating", **_configs("mtsr_mt", "evaluate.yaml"), **evaluate, samples=2, slices_per_volume=1)
    metrics = json.loads((out / "t1_to_flair_metrics.json").read_text())
    assert [s["subject"] for s in metrics["subjects"]] == ["s0"]  # the test split, not the validation one
    assert metrics["summary"]["psnr_mean"] > 0
    lr = write_nifti(tmp_path / "lr_t1.nii.gz", _head((16, 16, 3), 0))
    chain = {"input_files": [str(lr)], "checkpoint": str(weights), "output_dir": str(tmp_path / "mtsr")}
    run("inference", **_configs("mtsr_mt", "inference_mtsr.yaml"), **chain, samples=2)
    written = {p.name for p in (tmp_path / "mtsr" / "lr_t1").iterdir()}
    assert {"sr.nii.gz", "sample_0.nii.gz", "sample_1.nii.gz", "mean.nii.gz", "std.nii.gz"} <= written


@pytest.mark.slow
def test_mt_multi_gpu_train_runs_under_a_process_group(tmp_path):
    budget = {"epoch_length": 2, "max_epochs": 1, "checkpoint_every": 1, "num_threads": 1}
    _one_rank_run(
        "mtsr_mt", ["train.yaml", "multi_gpu_train.yaml"], {**_train_overrides("mtsr_mt", tmp_path), **budget}
    )
    assert (tmp_path / "run" / "t1_to_flair.pt").is_file()


CLINICAL_BUDGET = {"epoch_length": 1, "max_epochs": 1, "checkpoint_every": 1, "batch_size": 2}


@pytest.mark.slow
def test_clinical_train_keeps_the_best_validated_weights(tmp_path):
    from monai.bundle import run

    overrides = _train_overrides("clinical_sr", tmp_path)
    run("training", **_configs("clinical_sr", "train.yaml"), **overrides, **CLINICAL_BUDGET)
    from mtsr_monai.inference.clinical import load_clinical_model

    best = load_clinical_model(tmp_path / "run" / "model_best.pt")  # as inference.yaml reads --checkpoint
    assert best["modalities"] == ["flair", "t1", "t2"] and "psnr" in str(best["validation"])
    import torch

    saved = torch.load(tmp_path / "run" / "model_best.pt", weights_only=True)
    assert saved["iterations"] == 1  # the trainer's count when this generator was validated best


@pytest.mark.slow
def test_clinical_multi_gpu_train_runs_under_a_process_group(tmp_path):
    overrides = {**_train_overrides("clinical_sr", tmp_path), **CLINICAL_BUDGET}
    _one_rank_run("clinical_sr", ["train.yaml", "multi_gpu_train.yaml"], overrides)
    from mtsr_monai.inference.clinical import load_clinical_model

    assert load_clinical_model(tmp_path / "run" / "model_best.pt")["modalities"] == ["flair", "t1", "t2"]


@pytest.mark.slow
def test_clinical_evaluate_scores_the_shipped_model_against_interpolation(tmp_path):
    from monai.bundle import run

    overrides = _train_overrides("clinical_sr", tmp_path)
    evaluate = {k: overrides[k] for k in ("datalist", "dataset_dir", "output_dir", "cache_dir")}
    run("evaluating", **_configs("clinical_sr", "evaluate.yaml"), **evaluate, baselines=["trilinear"])
    summary = json.loads((tmp_path / "run" / "heldout.json").read_text())
    assert {"model", "trilinear"} <= set(summary) and summary["model"]["psnr"] > 0


def _train_mt_script():
    import importlib

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        return importlib.import_module("train_mt")
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_train_mt_options_are_overrides_of_keys_train_yaml_declares(tmp_path):
    import yaml

    train_mt = _train_mt_script()
    declared = set(yaml.safe_load((REPO / "bundles/mtsr_mt/configs/train.yaml").read_text()))
    argv = ["--source", "t1", "--target", "t2", "--run-dir", str(tmp_path), "--no-encoder", "--device", "cpu"]
    for option in set(train_mt.OPTION_KEYS) - {"source", "target", "precision"}:
        argv += [f"--{option.replace('_', '-')}", "1"]
    extra = ["--", "--upsample", "bilinear", "--lambda_kl", "0"]
    args = train_mt.parse_args([*argv, "--precision", "fp32", *extra])
    overrides = train_mt.bundle_overrides(args, tmp_path / "datalist.json")
    assert set(overrides) <= declared  # a misspelt key would be ignored by the bundle
    assert overrides["use_encoder"] is False and overrides["learning_rate"] == 1.0
    assert overrides["max_minutes"] == 1.0 and overrides["precision"] == "fp32"
    assert overrides["upsample"] == "bilinear" and overrides["lambda_kl"] == 0


@pytest.mark.slow
def test_train_mt_script_runs_the_bundle_resumes_and_exports_its_best(tmp_path):
    import torch

    train_mt = _train_mt_script()
    tiny = _train_overrides("mtsr_mt", tmp_path)
    run_dir, export = tmp_path / "run", tmp_path / "models" / "t1_to_flair.pt"
    argv = ["--source", "t1", "--target", "flair", "--run-dir", str(run_dir), "--datalist", tiny["datalist"]]
    argv += ["--image-size", "32", "--ngf", "8", "--nef", "8", "--ndf", "8", "--epoch-length", "2"]
    argv += ["--threads", "1", "--device", "cpu", "--export", str(export)]
    extra = ["--", "--checkpoint_every", "1"]
    assert train_mt.main([*argv, "--max-epochs", "1", *extra]) == 0
    assert train_mt.main([*argv, "--max-epochs", "2", *extra]) == 0  # resumed: 2 more iterations
    assert (run_dir / "checkpoints" / "checkpoint_4.pt").is_file()
    best, saved = (torch.load(p, weights_only=True) for p in (run_dir / "t1_to_flair.pt", export))
    subjects = {"training_subjects": ["s0"], "validation_subjects": ["s1"], "held_out": ["s1"]}
    assert saved["meta"] == {**best["meta"], **subjects}
    assert saved["meta"]["native_resolution"] is True and saved["meta"]["target_scaling"] == "median"
    assert all(torch.equal(saved["generator"][k], v) for k, v in best["generator"].items())


@pytest.mark.parametrize("bundle", ["mtsr_sr", "mtsr_mt", "clinical_sr"])
def test_every_rank_of_a_multi_gpu_run_draws_its_own_random_patches(bundle):
    """DistributedSampler splits the items only: ranks seeded alike would draw the same crops, flips and
    degradations (MONAI's DataLoader seeds the transforms from the torch seed)."""
    config = yaml.safe_load((REPO / "bundles" / bundle / "configs" / "multi_gpu_train.yaml").read_text())
    seeding = [step for step in config["initialize"] if "set_determinism" in str(step)]
    assert seeding == ["$monai.utils.set_determinism(seed=@seed + @rank)"]


@pytest.mark.parametrize("bundle", ["mtsr_sr", "mtsr_mt", "clinical_sr"])
def test_amp_false_trains_in_fp32_unless_a_precision_is_given(bundle):
    from monai.bundle import ConfigParser

    def precision(**overrides):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.yaml"))
        parser.update(overrides)
        return parser.get_parsed_content("precision")

    assert precision(amp=False) == "fp32" and precision() == "auto"
    assert precision(amp=False, precision="bf16") == "bf16"


def test_the_sr_bundles_validation_and_evaluation_score_the_windows_the_command_runs():
    from monai.bundle import ConfigParser

    from mtsr_monai.inference.super_resolve import super_resolve_scaled
    from mtsr_monai.networks.rrdb import RRDBNet

    torch.manual_seed(0)
    net = RRDBNet(features=8, growth=4, num_blocks=1).eval()
    lr = torch.rand(1, 1, 40, 300) + 0.5  # wider than one 256 window: the windows and their blending show
    command = super_resolve_scaled(lr[0].numpy(), network=net, progress=False, precision="fp32")
    for names in (("train.yaml",), ("train.yaml", "evaluate.yaml")):
        parser = ConfigParser()
        parser.read_config([str(REPO / "bundles" / "mtsr_sr" / "configs" / n) for n in names])
        with torch.no_grad():
            scored = parser.get_parsed_content("validate#inferer")(lr, net)
        np.testing.assert_allclose(scored[0].clamp_min(0).numpy(), command, atol=1e-5)  # the floor: 0
