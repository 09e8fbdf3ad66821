#!/usr/bin/env python
"""Benchmark of the SR generator and whole-volume inference (not a test: numbers depend on the machine).

1. Speed of the 12-block (every other) vs the 23-block RRDB generator on the same input, in one run: forward
   passes interleaved, the median of ``--repeats`` timings each, and their ratio, in fp32 and in the precision
   ``mtsr super-resolve`` picks by default (bf16 where the CPU has it).
2. Whole-volume x4 SR with the shipped weights: a real held-out 240x240x155 BraTS volume is degraded x4
   in-plane to 60x60x155 (``--degradation second-order``, the training chain with a fixed seed, or ``area``
   block averaging) and super-resolved back to 240x240x155 by ``super_resolve_file``
   (the CLI's path: read, scale, sliding windows, write); wall time and peak RSS (``resource.getrusage``).
3. PSNR / SSIM of SR and bicubic against the original volume, inside the brain (non-zero voxels) and over the
   whole image, 2D SSIM averaged over axial slices, for that held-out volume.
4. With ``--heldout``: 2 and 3 on every volume of the shipped model's held-out subjects (10 volumes, seed =
   index), means and the number of volumes where SR beats bicubic; with ``--validation`` as well, on the 6
   validation volumes instead (for inference choices; the held-out ones are for the final report);
   ``--against BASE.json`` (an earlier run's ``--json`` on the same set and precision) adds the per-volume
   brain PSNR gains over it, their mean and how many volumes gained, as a ship decision reads them.

Usage: python scripts/bench_sr.py [--volume PATH | --heldout [--validation] [--against BASE.json]]
       [--weights W.pt] [--precision auto|fp32|bf16] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from shared_splits import DATA_ROOT as DATA  # noqa: E402  ../shared/data, or $MTSR_SHARED_DATA

CASE = "Brats18_TCIA10_639_1"  # held out from the shipped model's training
DEFAULT_VOLUME = DATA / "brats2018_tcia" / CASE / f"{CASE}_t2.nii.gz"
#: the bench's held-out subjects, 3 of ``shared_splits.HELD_OUT`` (final reports only, never trained on or
#: chosen with); their 10 volumes and seeds are the ones every reported held-out figure was measured on
HELDOUT_SUBJECTS = ("Brats18_TCIA10_637_1", "Brats18_TCIA10_639_1", "Brats18_CBICA_AOO_1")


def split_volumes(split: str, subjects: tuple[str, ...], data: Path = DATA) -> list[Path]:
    """Every volume that ``shared_splits`` puts in ``split`` for ``subjects``, subject by subject in the given
    order, each subject's paths sorted (the bench seeds each volume's degradation with its index)."""
    from shared_splits import volume_datalist

    entries = volume_datalist(root=data)[split]
    return [Path(p) for s in subjects for p in sorted(e["hr"] for e in entries if e["subject"] == s)]


def heldout_volumes(data: Path = DATA) -> list[Path]:
    return split_volumes("test", HELDOUT_SUBJECTS, data)


def validation_volumes(data: Path = DATA) -> list[Path]:
    """The validation subjects' volumes: inference choices are made on these."""
    from shared_splits import VALIDATION

    return split_volumes("validation", VALIDATION, data)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def generator_speed(repeats: int, size: int, batch: int) -> dict:
    """Median forward time of both generators on one input, in fp32 and in the inference default precision
    (``auto``: bf16 on CPUs with native bf16), each network prepared as ``mtsr super-resolve`` runs it."""
    import torch

    from mtsr_monai.inference.super_resolve import autocast_dtype, prepare_network, resolve_precision
    from mtsr_monai.networks.rrdb import RRDBNet

    device = torch.device("cpu")
    nets = {"rrdb23": RRDBNet(), "rrdb12": RRDBNet(keep_blocks="every_other")}
    params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    runs = {k: prepare_network(n, device) for k, n in nets.items()}
    x = torch.rand(batch, 1, size, size)
    report: dict = {"input": [batch, 1, size, size], "repeats": repeats, "parameters": params}
    for precision in dict.fromkeys(["fp32", resolve_precision("auto", device)]):
        dtype = autocast_dtype(precision, device)
        times: dict[str, list[float]] = {k: [] for k in runs}
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            for run in runs.values():  # warm-up (oneDNN picks and caches its kernels)
                run(x)
            for _ in range(repeats):
                for name, run in runs.items():  # interleaved so load changes hit both alike
                    t = time.perf_counter()
                    run(x)
                    times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        report[precision] = {
            "median_s": med,
            "min_s": {k: min(v) for k, v in times.items()},
            "speedup_12_vs_23": med["rrdb23"] / med["rrdb12"],
            "speedup_12_vs_23_min": min(times["rrdb23"]) / min(times["rrdb12"]),
        }
    return report


def _degrade(hr, degradation: str, seed: int):
    import numpy as np
    import torch

    hr_np = np.asarray(hr, dtype=np.float32)
    if degradation == "area":
        from mtsr_monai.transforms.degradation import centre_crop_to_multiple

        # x4 in-plane area downsampling (the clean LR a 4 mm in-plane acquisition would give) of the central
        # crop to a multiple of 4, as the second-order chain crops: the scoring crops the HR alike
        cropped, starts = centre_crop_to_multiple(torch.from_numpy(hr_np), (0, 1), 4)
        lr = torch.nn.functional.avg_pool2d(cropped.permute(2, 0, 1)[:, None], 4)[:, 0]
        lr_affine = np.asarray(hr.affine, dtype=np.float64).copy()
        lr_affine[:3, :2] *= 4
        first_centre = [starts[0] + 1.5, starts[1] + 1.5, 0]  # of the 4 x 4 HR voxels each LR voxel averages
        lr_affine[:3, 3] = np.asarray(hr.affine)[:3, :3] @ first_centre + np.asarray(hr.affine)[:3, 3]
        return lr.permute(1, 2, 0).numpy(), lr_affine
    # the training degradation, one seeded draw for the volume (as `mtsr degrade`)
    from mtsr_monai.transforms.degradation import degrade_volume_second_order

    return degrade_volume_second_order(hr_np, np.asarray(hr.affine), scale=4, seed=seed)


def _scores(pred, ref, brain, data_range: float) -> dict:
    from mtsr_monai.metrics.image import psnr, ssim

    return {
        "brain": {
            "psnr": psnr(pred, ref, brain, data_range),
            "ssim": ssim(pred, ref, brain, data_range, axis=2),
        },
        "image": {
            "psnr": psnr(pred, ref, None, data_range),
            "ssim": ssim(pred, ref, None, data_range, axis=2),
        },
    }


def whole_volume(
    volume: Path,
    batch_size: int,
    degradation: str = "second-order",
    seed: int = 0,
    network=None,
    precision: str = "auto",
) -> dict:
    """Degrade one HR volume x4 in-plane, super-resolve it through the CLI's path, score SR and bicubic.

    Scores inside the brain (HR > 0; BraTS volumes are skull-stripped) and over the whole image, both with
    the brain's intensity range as the PSNR/SSIM data range; SSIM is 2D, averaged over axial slices.
    """
    import numpy as np

    from mtsr_monai.inference.super_resolve import super_resolve_file, super_resolve_volume
    from mtsr_monai.io import load_volume, save_volume

    hr = load_volume(volume)
    hr_np = np.asarray(hr, dtype=np.float32)
    lr_np, lr_affine = _degrade(hr, degradation, seed)
    with tempfile.TemporaryDirectory() as tmp:
        lr_path, sr_path = Path(tmp) / "lr.nii.gz", Path(tmp) / "sr.nii.gz"
        save_volume(lr_np, lr_path, affine=lr_affine)
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        summary = super_resolve_file(
            str(lr_path),
            str(sr_path),
            network=network,
            batch_size=batch_size,
            progress=False,
            precision=precision,
        )
        wall = time.perf_counter() - t
        sr = np.asarray(load_volume(sr_path), dtype=np.float32)
    bicubic, _ = super_resolve_volume(lr_np, lr_affine, method="bicubic", progress=False)
    # both degradations centre-crop in-plane sizes to a multiple of 4 (e.g. 150 -> 148): score that crop
    crop = zip(hr_np.shape, sr.shape, strict=True)
    hr_np = hr_np[tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in crop)]
    brain = hr_np > 0
    data_range = float(hr_np[brain].max() - hr_np[brain].min())
    return {
        "volume": str(volume),
        "degradation": degradation if degradation == "area" else f"second-order (seed {seed})",
        "lr_shape": list(lr_np.shape),
        "sr_shape": list(sr.shape),
        "seconds_total": wall,
        "seconds_network": summary["seconds"],
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_before_sr": rss_before,
        "batch_size": batch_size,
        "precision": summary["precision"],
        "sr": _scores(sr, hr_np, brain, data_range),
        "bicubic": _scores(bicubic, hr_np, brain, data_range),
    }


def heldout(
    volumes: list[Path], batch_size: int, degradation: str, network=None, precision: str = "auto"
) -> dict:
    """:func:`whole_volume` on every volume of a set (seed = its index), then means and SR-vs-bicubic wins."""
    from tqdm import tqdm

    rows = [
        whole_volume(v, batch_size, degradation, seed=i, network=network, precision=precision)
        for i, v in enumerate(tqdm(volumes, desc="volumes", unit="volume"))
    ]
    summary: dict = {"volumes": len(rows)}
    for region in ("brain", "image"):
        for metric in ("psnr", "ssim"):
            sr = [r["sr"][region][metric] for r in rows]
            bic = [r["bicubic"][region][metric] for r in rows]
            summary[f"{region}_{metric}"] = {
                "sr_mean": statistics.fmean(sr),
                "bicubic_mean": statistics.fmean(bic),
                "sr_wins": sum(a > b for a, b in zip(sr, bic, strict=True)),
            }
    return {"summary": summary, "per_volume": rows}


def heldout_markdown(result: dict) -> str:
    """The per-volume table of :func:`heldout` (SR / bicubic), as in docs/sr.md."""
    lines = [
        "| volume | draw | brain PSNR | brain SSIM | image PSNR | image SSIM |",
        "|---|---|---|---|---|---|",
    ]
    cells = [("brain", "psnr", 2), ("brain", "ssim", 3), ("image", "psnr", 2), ("image", "ssim", 3)]
    for row in result["per_volume"]:
        name = Path(row["volume"])
        label = f"{name.parent.name.removeprefix('Brats18_')} {name.name.split('_')[-1].split('.')[0]}"
        scores = [f"{row['sr'][r][m]:.{d}f} / {row['bicubic'][r][m]:.{d}f}" for r, m, d in cells]
        seed = row["degradation"].removeprefix("second-order (").removesuffix(")")
        lines.append(f"| {label} | {seed} | " + " | ".join(scores) + " |")
    summary = result["summary"]
    means = [
        f"**{summary[f'{r}_{m}']['sr_mean']:.{d}f} / {summary[f'{r}_{m}']['bicubic_mean']:.{d}f} "
        f"({summary[f'{r}_{m}']['sr_wins']}/{summary['volumes']})**"
        for r, m, d in cells
    ]
    lines.append("| **mean (SR wins)** | | " + " | ".join(means) + " |")
    return "\n".join(lines)


def compare_brain_psnr(result: dict, baseline: dict) -> dict:
    """Per-volume SR brain PSNR of ``result`` minus ``baseline`` (two :func:`heldout` results on the same
    volumes and draws, e.g. a candidate's and the shipped weights'), their mean and how many volumes gained:
    the figures a ship decision reads. Refuses results of other volumes, draws or precisions (ValueError)."""
    rows, base = result["per_volume"], baseline["per_volume"]
    keys = [(r["volume"], r["degradation"], r["precision"]) for r in rows]
    base_keys = [(r["volume"], r["degradation"], r["precision"]) for r in base]
    if keys != base_keys:
        raise ValueError("the two results score different volumes, draws or precisions")
    gains = [a["sr"]["brain"]["psnr"] - b["sr"]["brain"]["psnr"] for a, b in zip(rows, base, strict=True)]
    return {"gains": gains, "mean_gain": statistics.fmean(gains), "ahead": sum(g > 0 for g in gains)}


def comparison_line(comparison: dict) -> str:
    gains = ", ".join(f"{g:+.3f}" for g in comparison["gains"])
    return (
        f"brain PSNR against the baseline: mean {comparison['mean_gain']:+.3f} dB, ahead on "
        f"{comparison['ahead']} of {len(comparison['gains'])} ({gains})"
    )


def _load_network(weights: Path | None):
    if weights is None:
        return None  # super_resolve_file loads the shipped bundle weights
    from mtsr_monai.inference.super_resolve import load_sr_model

    return load_sr_model(str(weights))[0]


def _read_baseline(parser: argparse.ArgumentParser, path: Path) -> dict:
    """The held-out (or validation) result stored in a --json file; exit 2 before any work if it has none."""
    try:
        return json.loads(path.read_text())["heldout"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"--against {path}: not a --heldout --json result ({type(err).__name__}: {err})")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME, help="a held-out 240x240x155 volume")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="LR size of the speed test (default 64)")
    parser.add_argument(
        "--batch", type=int, default=8, help="batch of the speed test (default 8, as super-resolve's windows)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="volume SR: LR pixels per network call in 64 x 64 windows (as mtsr super-resolve)",
    )
    parser.add_argument("--skip-volume", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--degradation", default="second-order", choices=["second-order", "area"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the second-order degradation")
    parser.add_argument(
        "--heldout", action="store_true", help="score every held-out volume (10) instead of --volume"
    )
    parser.add_argument(
        "--validation", action="store_true", help="with --heldout: the 6 validation volumes instead"
    )
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "bf16"], help="inference precision"
    )
    parser.add_argument("--weights", type=Path, default=None, help="SR weights (default: the shipped ones)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--against", type=Path, default=None,
        help="with --heldout: a --json of an earlier run on the same set (e.g. the shipped weights); prints "
        "the per-volume brain PSNR gains, their mean and how many volumes gained",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.validation and not args.heldout:
        parser.error("--validation goes with --heldout")
    if args.against and not args.heldout:
        parser.error("--against goes with --heldout")
    baseline = _read_baseline(parser, args.against) if args.against else None

    import torch

    torch.set_num_threads(args.threads)
    report: dict = {"threads": args.threads}
    status = 0
    if not args.skip_speed:
        report["generator_speed"] = generator_speed(args.repeats, args.size, args.batch)
        print(json.dumps(report["generator_speed"], indent=1), flush=True)
    if not args.skip_volume and args.heldout:
        volumes = validation_volumes() if args.validation else heldout_volumes()
        if not volumes:
            parser.error(f"no volumes of that set under {DATA}")
        network = _load_network(args.weights)
        report["heldout"] = heldout(volumes, args.batch_size, args.degradation, network, args.precision)
        print(json.dumps(report["heldout"]["summary"], indent=1), flush=True)
        print(heldout_markdown(report["heldout"]), flush=True)
        if baseline is not None:
            try:
                report["against"] = compare_brain_psnr(report["heldout"], baseline)
                print(comparison_line(report["against"]), flush=True)
            except ValueError as err:  # known only after the run: its scores are still written below
                print(f"bench_sr.py: --against {args.against}: {err}", file=sys.stderr)
                status = 2
    elif not args.skip_volume:
        report["whole_volume"] = whole_volume(
            args.volume,
            args.batch_size,
            args.degradation,
            args.seed,
            _load_network(args.weights),
            args.precision,
        )
        print(json.dumps(report["whole_volume"], indent=1), flush=True)
    if args.json:
        from mtsr_monai.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
