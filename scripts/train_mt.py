#!/usr/bin/env python
"""Train one modality-translation model (BicycleGAN, or pix2pix + noise with --no-encoder) on axial slices.

Example (what shipped the bundle's weights; CPU, one thread, minutes of budget):
    python scripts/train_mt.py --source t1 --target flair --minutes 7 \
        --run-dir /root/mtsr_runs/mt/t1_to_flair \
        --export bundles/mtsr_mt/models/t1_to_flair.pt

Running the same command again resumes from the newest checkpoint in --run-dir. Subjects come from the
BraTS folders of the shared data, split by ``scripts/shared_splits.py``: its training split is trained on, its
validation split is validated on; the held-out subjects (``HELD_OUT``) are never used here and are the ones
``scripts/reproduce_mtsr_table2.py`` evaluates.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "mtsr_mt"

from shared_splits import DATA_ROOT, HELD_OUT, split_of, subjects  # noqa: E402


def subjects_for(source: str, target: str, split: str = "training", root: Path = DATA_ROOT) -> list[dict]:
    """Subjects of one ``shared_splits`` split (``training`` / ``validation`` / ``test``) having both
    modalities, as ``{"subject", source, target}`` dicts."""
    return [
        {"subject": s["subject"], source: s[source], target: s[target]}
        for s in subjects(root)
        if source in s and target in s and split_of(s["subject"]) == split
    ]


def slice_dataset(subjects: list[dict], source: str, target: str, size: int, min_brain_fraction: float = 0.1):
    """Axial slices of both modalities, each volume scaled to [0, 1] by robust percentiles, resized to
    ``size`` x ``size`` (area) and mapped to [-1, 1] (the generator's tanh range)."""
    from monai.transforms import Resized, ScaleIntensityRanged

    from mtsr_monai.data.slices import SliceDataset

    keys = [source, target]
    return SliceDataset(
        subjects,
        keys=keys,
        axis="axial",
        min_brain_fraction=min_brain_fraction,
        transform=[
            Resized(keys, spatial_size=(size, size), mode="area"),
            ScaleIntensityRanged(keys, a_min=0.0, a_max=1.0, b_min=-1.0, b_max=1.0),
        ],
        cache="memory",
        progress=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--export", type=Path, help="write the fp16 generator here at the end")
    p.add_argument("--no-encoder", action="store_true", help="pix2pix with noise injection (baseline)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--nz", type=int, default=8)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--nef", type=int, default=16)
    p.add_argument("--ndf", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--epoch-length", type=int, default=200)
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of this invocation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision", default="fp32", help="auto | fp32 | bf16 | fp16 (fp32: as the shipped runs)"
    )
    return p.parse_args(argv)


def build_trainer(args: argparse.Namespace, loader, device):
    """BicycleGAN (or pix2pix + noise) networks and their trainer."""
    import torch

    from mtsr_monai.engines.bicyclegan import BicycleGANTrainer
    from mtsr_monai.networks.bicyclegan import build_networks

    use_encoder = not args.no_encoder
    sizes = dict(nz=args.nz, ngf=args.ngf, nef=args.nef, ndf=args.ndf, image_size=args.image_size)
    nets = build_networks(**sizes, use_encoder=use_encoder)
    nets = {k: (v.to(device) if v is not None else None) for k, v in nets.items()}

    def adam(net):
        return torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.5, 0.999)) if net is not None else None

    trainer = BicycleGANTrainer(
        device=device, max_epochs=args.max_epochs, train_data_loader=loader, use_encoder=use_encoder,
        generator=nets["generator"], discriminator=nets["discriminator"], encoder=nets["encoder"],
        discriminator2=nets["discriminator2"], g_optimizer=adam(nets["generator"]),
        d_optimizer=adam(nets["discriminator"]), e_optimizer=adam(nets["encoder"]),
        d2_optimizer=adam(nets["discriminator2"]), nz=args.nz, input_key=args.source, target_key=args.target,
        epoch_length=args.epoch_length, amp=device.type == "cuda", precision=args.precision,
    )  # fmt: skip
    return trainer


def attach_handlers(trainer, args: argparse.Namespace, val_loader) -> list[dict]:
    """Resume checkpoints, logs, image grids, validation each epoch and the wall-clock budget; returns the
    validation history (filled while training)."""
    from ignite.engine import Events
    from monai.handlers import StatsHandler, TensorBoardStatsHandler, ValidationHandler

    from mtsr_monai.engines.bicyclegan import sample_panels, translation_evaluator
    from mtsr_monai.engines.handlers import ImageGridHandler, ResumeCheckpoint
    from mtsr_monai.engines.paired import scalar_losses
    from mtsr_monai.engines.validation import validation_summary

    args.run_dir.mkdir(parents=True, exist_ok=True)
    tb_dir = args.run_dir / "tensorboard"
    ResumeCheckpoint(
        args.run_dir / "checkpoints", trainer.checkpoint_objects(), every_n_iterations=100
    ).attach(trainer)
    StatsHandler(name="mt", output_transform=scalar_losses, iteration_log=50).attach(trainer)
    TensorBoardStatsHandler(log_dir=str(tb_dir), output_transform=scalar_losses, iteration_log=10).attach(
        trainer
    )
    ImageGridHandler(tb_dir, sample_panels, every_n_iterations=100).attach(trainer)
    val_handlers = [
        StatsHandler(iteration_log=False),
        TensorBoardStatsHandler(log_dir=str(tb_dir), iteration_log=False),
    ]
    evaluator = translation_evaluator(
        trainer.generator, val_loader, args.source, args.target, args.nz, trainer.state.device, val_handlers
    )
    ValidationHandler(interval=1, validator=evaluator).attach(trainer)
    history: list[dict] = []

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _record(engine):
        summary = validation_summary(engine.state.metrics)
        history.append({**summary, "epoch": trainer.state.epoch, "iteration": trainer.state.iteration})

    start = time.monotonic()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _budget(engine):
        if time.monotonic() - start > args.minutes * 60:
            print(f"time budget reached at iteration {engine.state.iteration}")
            engine.terminate()

    return history


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch
    from monai.utils import set_determinism

    from mtsr_monai.engines.bicyclegan import export_generator
    from mtsr_monai.engines.run_safety import check_training_setup, exit_if_interrupted
    from mtsr_monai.engines.validation import first_items  # the validation's 8 batches of 8
    from mtsr_monai.inference.bundle import declare_weights

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    set_determinism(args.seed)
    device = torch.device(args.device)
    check_training_setup(args.run_dir, args.precision, device)

    train_subjects = subjects_for(args.source, args.target)
    val_subjects = subjects_for(args.source, args.target, split="validation")
    print(f"{len(train_subjects)} training subjects, validation on {[s['subject'] for s in val_subjects]}")
    train_ds = slice_dataset(train_subjects, args.source, args.target, args.image_size)
    val_ds = slice_dataset(val_subjects, args.source, args.target, args.image_size, min_brain_fraction=0.2)
    print(f"{len(train_ds)} training slices, {len(val_ds)} validation slices")
    loader = torch.utils.data.DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, num_workers=0)
    val_loader = torch.utils.data.DataLoader(
        first_items(val_ds, 64), batch_size=8, shuffle=False, num_workers=0
    )

    trainer = build_trainer(args, loader, device)
    history = attach_handlers(trainer, args, val_loader)
    trainer.run()
    exit_if_interrupted(trainer)  # Ctrl-C / SIGTERM: checkpoint saved, nothing exported
    (args.run_dir / "validation.json").write_text(json.dumps(history, indent=1))
    if args.export:
        meta = dict(
            source=args.source,
            target=args.target,
            method="pix2pix_noise" if args.no_encoder else "bicyclegan",
            nz=args.nz,
            ngf=args.ngf,
            image_size=args.image_size,
            iterations=int(trainer.state.iteration),
            training_subjects=[s["subject"] for s in train_subjects],
            validation_subjects=[s["subject"] for s in val_subjects],
            held_out=list(HELD_OUT),
            validation=history[-1] if history else None,
        )
        export_generator(trainer.generator, args.export, meta)
        if args.export.resolve().parent == (BUNDLE / "models").resolve():  # accepted by the bundle's check
            declare_weights(BUNDLE, f"models/{args.export.name}")
            if args.export.name == "t1_to_flair.pt":  # the zoo's model.pt follows the default direction
                from make_mt_model_pt import make_model_pt

                make_model_pt(BUNDLE)
        print(f"exported {args.export}")
    return 0


if __name__ == "__main__":
    from mtsr_monai.errors import exit_code_of

    sys.exit(exit_code_of(main, "train_mt.py"))
