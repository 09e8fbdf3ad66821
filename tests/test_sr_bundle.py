"""The mtsr_sr bundle: a tiny training run that resumes, 2-process DDP (gloo); its metadata and network
checks are in tests/test_bundle_zoo.py, with the other bundles'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, write_nifti

BUNDLE = REPO / "bundles" / "mtsr_sr"
CONFIGS = BUNDLE / "configs"
TINY_NET = [
    "--network_def#features", "8", "--network_def#growth", "4", "--network_def#num_blocks", "2",
    "--keep_blocks", "[0]", "--discriminator_def#features", "8",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory) -> Path:
    """Three 48x48x6 synthetic 'heads' (zero background): two to train on, one held out."""
    root = tmp_path_factory.mktemp("sr_data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[-1:1:48j, -1:1:48j]
    items = []
    for i in range(3):
        head = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1).astype(np.float32)
        texture = np.stack([np.sin(8 * xx + k + i) * np.cos(6 * yy - k) for k in range(6)], -1)
        vol = head[..., None] * (100 + 30 * texture + 5 * rng.standard_normal((48, 48, 6)))
        path = write_nifti(root / f"s{i}.nii.gz", vol.astype(np.float32))
        items.append({"subject": f"s{i}", "hr": str(path)})
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": items[:2], "validation": items[2:]}))
    return path


def _bundle_run(args: list[str], launcher: list[str] | None = None, timeout: int = 240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = (launcher or [sys.executable]) + ["-m", "monai.bundle", "run", "training", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def _train_args(datalist: Path, out: Path, config_file: str, epochs: int) -> list[str]:
    return [
        "--config_file", config_file, "--meta_file", str(CONFIGS / "metadata.json"),
        "--logging_file", str(CONFIGS / "logging.conf"), "--datalist", str(datalist),
        "--output_dir", str(out), "--epoch_length", "2", "--max_epochs", str(epochs),
        "--pretrain_epochs", "1",
        "--hr_patch", "32", "--samples_per_volume", "2", "--batch_size", "1", "--checkpoint_every", "1",
        "--val_slices_per_volume", "2",
        "--loss_weights#vgg", "0", "--num_threads", "1", *TINY_NET,
    ]  # fmt: skip


@pytest.mark.slow
def test_bundle_training_runs_and_resumes_into_adversarial_phase(tiny_datalist, tmp_path):
    out = tmp_path / "run"
    first = _bundle_run(_train_args(tiny_datalist, out, str(CONFIGS / "train.yaml"), epochs=1))
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoints" / "checkpoint_2.pt").is_file() and (out / "model.pt").is_file()
    # same command with a larger budget: continues at iteration 2 (phase 2: generator + PatchGAN critic)
    second = _bundle_run(_train_args(tiny_datalist, out, str(CONFIGS / "train.yaml"), epochs=2))
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resumed from" in log and "checkpoint_2.pt" in log
    assert "d_loss" in log  # the adversarial phase ran
    assert (out / "checkpoints" / "checkpoint_4.pt").is_file()


@pytest.mark.slow
def test_generator_average_is_validated_saved_and_resumed(tiny_datalist, tmp_path):
    import torch

    out = tmp_path / "ema"
    args = _train_args(tiny_datalist, out, str(CONFIGS / "train.yaml"), epochs=1)
    result = _bundle_run([*args, "--pretrain_epochs", "2", "--ema_momentum", "0.5"])
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "checkpoint_2.pt", map_location="cpu", weights_only=True)
    average, last = ckpt["ema"], ckpt["generator"]
    assert any(not torch.equal(average[k], last[k]) for k in last)  # an average, not a copy
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(saved[k], average[k]) for k in average)  # model.pt is the validated average
    resumed = _bundle_run([*args[:-len(TINY_NET)], "--max_epochs", "2", "--pretrain_epochs", "2",
                           "--ema_momentum", "0.5", *TINY_NET])  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_two_process_ddp_training_with_gloo(tiny_datalist, tmp_path):
    out = tmp_path / "ddp"
    configs = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'multi_gpu_train.yaml'}']"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
    torchrun.append("--nproc_per_node=2")
    result = _bundle_run(_train_args(tiny_datalist, out, configs, epochs=2), launcher=torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoints" / "checkpoint_4.pt").is_file()
    assert "d_loss" in result.stdout + result.stderr
    # TensorBoard files (events.out.tfevents.<time>.<host>.<pid>.<n>) come from rank 0's process only
    assert len({f.name.split(".")[-2] for f in out.rglob("events.out.tfevents.*")}) == 1
