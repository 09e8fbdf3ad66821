"""CycleGAN with noise: one iteration updates all four networks and resumes; unpaired sampling never aligns;
a tiny bundle run (train.yaml + train_cyclegan.yaml) exports weights that ``load_translator`` reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtsr_monai.data.unpaired import UnpairedDataset
from mtsr_monai.engines.cyclegan import CycleGANTrainer
from mtsr_monai.engines.handlers import ResumeCheckpoint
from mtsr_monai.networks.bicyclegan import LatentUNetGenerator, PooledMultiScaleDiscriminator
from tests.conftest import REPO, write_nifti

SIZE = 32
NETS = ("generator", "generator_ba", "discriminator", "discriminator_a")
CONFIGS = REPO / "bundles" / "mtsr_mt" / "configs"


def _trainer(max_epochs: int = 1, amp: bool = False) -> CycleGANTrainer:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    items = [{"A": torch.rand(1, SIZE, SIZE, generator=g), "B": torch.rand(1, SIZE, SIZE, generator=g)}
             for _ in range(2)]  # fmt: skip
    gens = [LatentUNetGenerator(nz=4, ngf=4, image_size=SIZE) for _ in range(2)]
    discs = [PooledMultiScaleDiscriminator(ndf=4, image_size=SIZE) for _ in range(2)]

    def adam(nets):
        return torch.optim.Adam([p for n in nets for p in n.parameters()], lr=1e-3, betas=(0.5, 0.999))

    loader = torch.utils.data.DataLoader(items, batch_size=1)
    return CycleGANTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=loader, nz=4, precision="auto", amp=amp,
        generator=gens[0], generator_ba=gens[1], discriminator=discs[0], discriminator_a=discs[1],
        g_optimizer=adam(gens), d_optimizer=adam(discs),
    )  # fmt: skip


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_one_iteration_updates_both_generators_and_both_discriminators():
    trainer = _trainer()
    before = {name: _params(getattr(trainer, name)) for name in NETS}
    trainer.run()
    out = trainer.state.output
    for key in ("loss_gan_ab", "loss_gan_ba", "loss_cycle_a", "loss_cycle_b", "loss_d_a", "loss_d_b"):
        assert np.isfinite(out[key]), key
    assert out["fake_B"].shape == out["rec_A"].shape == out["fake_A"].shape == (1, 1, SIZE, SIZE)
    for name, params in before.items():
        after = getattr(trainer, name).parameters()
        assert any(not torch.equal(a, b) for a, b in zip(params, after, strict=True)), name


@pytest.mark.parametrize("scales", [1, 2])
def test_gan_terms_are_the_sums_over_the_discriminator_scales(scales):
    trainer = _trainer()
    disc, loss = PooledMultiScaleDiscriminator(ndf=4, image_size=SIZE, num_scales=scales), trainer.gan_loss
    real, fake = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        per_real, per_fake = disc(real), disc(fake)
        assert len(per_fake) == scales
        g, d = trainer._g_gan(disc, fake), trainer._d_gan(disc, real, fake)
    assert torch.equal(g, sum(loss.generator(f) for f in per_fake))
    assert torch.equal(d, sum(loss.discriminator(r, f) for r, f in zip(per_real, per_fake, strict=True)))


def test_training_resumes_from_checkpoint_objects(tmp_path):
    first = _trainer(max_epochs=1)
    ResumeCheckpoint(tmp_path, first.checkpoint_objects(), every_n_iterations=1).attach(first)
    first.run()
    assert set(NETS) <= set(first.checkpoint_objects())
    resumed = _trainer(max_epochs=2)
    ResumeCheckpoint(tmp_path, resumed.checkpoint_objects(), every_n_iterations=1).attach(resumed)
    loaded = {}

    def snapshot(engine):  # right after the checkpoint is loaded, before any new step
        loaded.update(
            {name: _params(getattr(engine, name)) for name in NETS}, iteration=engine.state.iteration
        )

    from ignite.engine import Events

    resumed.add_event_handler(Events.STARTED, snapshot)
    resumed.run()
    assert loaded["iteration"] == 2 and resumed.state.iteration == 4
    for name in NETS:
        saved = getattr(first, name).parameters()
        assert all(torch.equal(a, b) for a, b in zip(loaded[name], saved, strict=True)), name


def _items(subjects: int, slices: int) -> list[dict]:
    # the target's value encodes where it comes from, so a returned target says whether it is aligned
    return [{"subject": f"s{s}", "slice_index": k, "A": torch.tensor([s, k]), "B": torch.tensor([s, k])}
            for s in range(subjects) for k in range(slices)]  # fmt: skip


@pytest.mark.parametrize("subjects", [1, 3])
def test_unpaired_dataset_never_returns_the_aligned_target(subjects):
    torch.manual_seed(0)
    data = UnpairedDataset(_items(subjects, 4), target_key="B")
    partners = set()
    for _ in range(20):
        for i in range(len(data)):
            item = data[i]
            assert not torch.equal(item["B"], item["A"])
            if subjects > 1:  # another subject altogether, not just another slice
                assert item["B"][0] != item["A"][0] and item["target_subject"] != item["subject"]
            assert item["B"].tolist() == [int(item["target_subject"][1:]), item["target_slice_index"]]
            partners.add(tuple(item["B"].tolist()))
    assert len(partners) == len(data)  # every slice serves as some source's target


def test_unpaired_dataset_refuses_a_single_slice():
    with pytest.raises(ValueError, match="two distinct"):
        UnpairedDataset(_items(1, 1), target_key="B")


@pytest.fixture(scope="module")
def tiny_pair_datalist(tmp_path_factory) -> Path:
    """Three 40x40x6 synthetic subjects with 't1' and 't2' (inverted contrast), zero background."""
    root = tmp_path_factory.mktemp("mt_data")
    yy, xx = np.mgrid[-1:1:40j, -1:1:40j]
    items = []
    for i in range(3):
        head = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1)[..., None]
        inner = ((yy / 0.5) ** 2 + (xx / (0.4 + 0.05 * i)) ** 2 < 1)[..., None] * np.ones((1, 1, 6))
        t1 = np.where(head, 60 + 40 * inner, 0).astype(np.float32)
        t2 = np.where(head, 100 - 50 * inner, 0).astype(np.float32)
        paths = {k: str(write_nifti(root / f"s{i}_{k}.nii.gz", v)) for k, v in (("t1", t1), ("t2", t2))}
        items.append({"subject": f"s{i}", **paths})
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": items[:2], "validation": items[2:]}))
    return path


def _bundle_run(datalist: Path, out: Path, epochs: int) -> subprocess.CompletedProcess:
    configs = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'train_cyclegan.yaml'}']"
    args = [
        "--config_file", configs, "--meta_file", str(CONFIGS / "metadata.json"),
        "--logging_file", str(CONFIGS / "logging.conf"), "--bundle_root", str(CONFIGS.parent),
        "--datalist", str(datalist), "--source", "t1", "--target", "t2", "--output_dir", str(out),
        "--image_size", "32", "--ngf", "4", "--ndf", "4", "--nz", "4", "--max_mult", "2",
        "--epoch_length", "2", "--max_epochs", str(epochs), "--checkpoint_every", "1", "--num_threads", "1",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_bundle_merge_trains_on_unpaired_slices(tiny_pair_datalist, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "train_cyclegan.yaml")])
    parser.update({"datalist": str(tiny_pair_datalist), "source": "t1", "target": "t2", "image_size": 32,
                   "output_dir": str(tmp_path)})  # fmt: skip
    dataset = parser.get_parsed_content("train#dataloader").dataset
    assert isinstance(dataset, UnpairedDataset)
    assert all(dataset[i]["target_subject"] != dataset[i]["subject"] for i in range(len(dataset)))
    assert parser.get_parsed_content("validate#export#meta")["method"] == "cyclegan_noise"


def test_resume_checkpoints_carry_the_best_psnr_of_both_directions(tiny_pair_datalist, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "train_cyclegan.yaml")])
    parser.update({"datalist": str(tiny_pair_datalist), "source": "t1", "target": "t2", "image_size": 32,
                   "output_dir": str(tmp_path)})  # fmt: skip
    trackers = parser.get_parsed_content("train#resume").objects["best_scores"].trackers
    forward, reverse = (
        parser.get_parsed_content("validate#evaluator"),
        parser.get_parsed_content("validate#reverse_evaluator"),
    )
    assert trackers == [forward, reverse]


@pytest.mark.slow
def test_tiny_bundle_run_exports_both_directions_and_resumes(tiny_pair_datalist, tmp_path):
    from mtsr_monai.inference.translate import load_translator, translate_slices

    out = tmp_path / "run"
    first = _bundle_run(tiny_pair_datalist, out, epochs=1)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "loss_cycle_a" in first.stdout + first.stderr
    for source, target in (("t1", "t2"), ("t2", "t1")):
        generator, meta = load_translator(out / f"{source}_to_{target}.pt")
        assert (meta["method"], meta["source"], meta["target"]) == ("cyclegan_noise", source, target)
        assert meta["native_resolution"] and meta["iterations"] == 2
        codes = torch.randn(2, int(meta["nz"]))
        y = translate_slices(generator, torch.rand(1, 40, 40), codes, 32, native_resolution=True)
        assert y.shape == (2, 1, 40, 40)
    second = _bundle_run(tiny_pair_datalist, out, epochs=2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stdout + second.stderr
    assert (out / "checkpoints" / "checkpoint_4.pt").is_file()


def test_both_generators_and_both_exports_take_the_upsample_option(tiny_pair_datalist, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "train_cyclegan.yaml")])
    parser.update({"datalist": str(tiny_pair_datalist), "source": "t1", "target": "t2", "image_size": 32,
                   "output_dir": str(tmp_path), "upsample": "bilinear"})  # fmt: skip
    for network in ("generator", "generator_ba"):  # bilinear decoders have no transposed convolution
        modules = parser.get_parsed_content(network).modules()
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in modules), network
    for export in ("validate#export#meta", "validate#reverse_export#meta"):
        assert parser.get_parsed_content(export)["upsample"] == "bilinear"


def test_a_relativistic_gan_loss_is_refused_where_the_generator_step_scores_no_real_images():
    from mtsr_monai.engines.base import AdversarialTrainerBase
    from mtsr_monai.engines.bicyclegan import BicycleGANTrainer
    from mtsr_monai.engines.cyclegan import CycleGANTrainer
    from mtsr_monai.engines.paired import PairedAdversarialTrainer
    from mtsr_monai.errors import InputError

    assert not (BicycleGANTrainer.relativistic_generator_step or CycleGANTrainer.relativistic_generator_step)
    assert PairedAdversarialTrainer.relativistic_generator_step  # passes the real logits (engines/paired.py)
    with pytest.raises(InputError, match="gan_mode 'ragan' is not available"):
        AdversarialTrainerBase("cpu", 1, [0], "lr", "hr", gan_loss="ragan")
    assert AdversarialTrainerBase("cpu", 1, [0], "lr", "hr", gan_loss="lsgan").gan_loss.mode == "lsgan"
