#!/usr/bin/env python
"""Build ``.device/``: what a GPU machine without network needs to train the bundles (git-ignored).

    python scripts/pack_device_payload.py [--budget-mib 64] [--reserve-mib 1.0] [--slab 48] [--val-slab 24]
                                          [--levels 256] [--tracked-only] [--slim]

The GPU machine (see docs/sr.md, "Training on a GPU") has Python 3.12 with torch, numpy, scipy, scikit-image,
tensorboard, pyyaml and tqdm, but not monai, pytorch-ignite, nibabel or fire, and it cannot download. The
folder travels with the working tree (named in the device call's ``carry``), and tree + folder must stay
under 64 MiB. It holds:

- ``wheels/``: the pure-Python wheels the training path imports that the machine lacks (monai,
  pytorch-ignite, nibabel without its test data, fire and its termcolor), at the versions installed here,
  downloaded for CPython 3.12;
- ``data/``: T1, T2 and FLAIR of training and validation subjects of ``scripts/shared_splits.py`` (never a
  held-out one) as int16 NIfTI slabs: cropped to the brain's in-plane box and to the ``--slab`` contiguous
  axial slices with the most brain (1 mm, so the clinical model's 3D thick-slice simulation still holds),
  affines kept (moved to the crop's corner; validation subjects get ``--val-slab`` slices: the run's own
  validation only picks its best weights, the real evaluation is done here afterwards); intensities rounded
  to a power-of-two step that keeps at least ``--levels`` levels below the 99.5th percentile (0: exact
  integers; with 256 a voxel moves by at most half a step, under 0.2 % of that percentile). T1ce is left
  out (it serves only the SR model and costs a subject's worth of space). Subjects are added in a fixed
  order while they fit the space left; ``data/manifest.json`` lists what was kept and what was dropped, and
  ``data/subjects.json`` is the datalist (paths relative to ``data/``). ``--mt-pairs`` adds whole T1 / FLAIR
  pairs of tumour-free brains (``scripts/prepare_open_ms_pairs.py``) first, as ``mt_training``: the device's
  MT jobs train on them beside the BraTS subjects, the other jobs never see them.

The space left is measured, not assumed: 64 MiB minus what travels anyway (tracked files and untracked files
git does not ignore, at their size on disk now), minus ``--reserve-mib`` for work in progress. Run this again
right before a device call if weights or other files grew. Since the MT bundle's 64-filter generators the
shipped weights alone (about 130 MiB) exceed the limit: ``--slim`` packs ``init/`` (8-bit copies of the four
weight files the jobs start from, see ``scripts/device_weights.py``; exact fp16 with ``--init-bits 16``) and
sizes the data on the tree without the weights, which ``scripts/device_slim.sh on`` hides from the call
(``off`` afterwards).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import shared_splits  # noqa: E402

MIB = 1 << 20
#: the shipped weight files, which ``--slim`` leaves behind (scripts/device_slim.sh)
SHIPPED_WEIGHTS = "bundles/*/models/*.pt"
#: distributions the training path imports that the GPU image lacks (found by running the bundles' training
#: in a venv holding only what that image has; see tests/test_device_payload.py and docs/sr.md)
WHEELS = ("monai", "pytorch-ignite", "nibabel", "fire", "termcolor")
#: platform tags of the device machine (x86-64, glibc); pure-Python wheels match any of them
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
CONTRASTS = ("t1", "t2", "flair")
#: subject order when space runs out: validation first, then training subjects with all three contrasts
#: alternating between the sources (scanner variety), then those with T1 and FLAIR only
PRIORITY = (
    "Brats18_TCIA10_628_1",
    "Brats18_TCIA01_201_1",
    "TCGA-DU-7294",
    "Brats18_TCIA02_135_1",
    "Brats18_TCIA03_265_1",
    "TCGA-FG-6692",
    "Brats18_TCIA01_378_1",
    "Brats18_TCIA02_370_1",
    "Brats18_TCIA01_425_1",
    "Brats18_CBICA_AAB_1",
    "Brats18_TCIA02_471_1",
    "Brats18_CBICA_ARW_1",
    "Brats18_CBICA_ASK_1",
    "Brats18_CBICA_ATV_1",
)


def git_lines(*args: str) -> list[str]:
    out = subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout
    return [line for line in out.split("\0") if line]


def travelling_files(untracked: bool = True) -> dict[str, int]:
    """Size on disk of each file a device call sends besides carried paths: tracked files and (``untracked``)
    untracked files that git does not ignore."""
    args = ["ls-files", "-z", "--cached"] + (["--others", "--exclude-standard"] if untracked else [])
    names = set(git_lines(*args))
    return {n: (REPO / n).stat().st_size for n in names if (REPO / n).is_file()}


def ensure_ignored(folder: str) -> None:
    """Add ``/<folder>/`` to the repository's ``info/exclude`` (a local ignore, never committed)."""
    exclude = REPO / git_lines("rev-parse", "--git-path", "info/exclude")[0].strip()
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if f"/{folder}/" not in lines:
        exclude.write_text("\n".join([*lines, f"/{folder}/"]) + "\n")


def download_wheels(target: Path) -> list[Path]:
    """The wheels in ``WHEELS`` at the versions installed here, for CPython 3.12 on x86-64 Linux."""
    target.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    missing = [p for p in pins if not list(target.glob(_wheel_glob(p)))]
    if missing:
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(target), *missing]
        subprocess.run(cmd, check=True)
    wheels = sorted(target.glob("*.whl"))
    for wheel in wheels:
        if wheel.name.startswith("nibabel-"):
            strip_tests(wheel)
    return wheels


def _wheel_glob(pin: str) -> str:
    name, version = pin.split("==")
    return f"{name.replace('-', '_')}-{version}-*.whl"


def strip_tests(wheel: Path) -> None:
    """Drop a wheel's ``tests/`` folders (nibabel ships 7 MB of test data) and their RECORD lines."""
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        drop = {n for n in names if "/tests/" in n}
        if not drop:
            return
        tmp = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                if info.filename in drop:
                    continue
                data = src.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    kept = [ln for ln in data.decode().splitlines() if ln.split(",")[0] not in drop]
                    data = ("\n".join(kept) + "\n").encode()
                dst.writestr(info, data)
    tmp.replace(wheel)


def quantize(arr: np.ndarray, levels: int) -> tuple[np.ndarray, float]:
    """``(int16 array, step)`` with ``array * step`` close to ``arr``: exact when ``levels`` is 0 and ``arr``
    holds int16 integers; else a power-of-two step keeping ``levels`` levels below the 99.5th percentile
    of the foreground (4096 levels for non-integer data in exact mode)."""
    integral = np.array_equal(arr, np.round(arr)) and arr.min() >= -32768 and arr.max() <= 32767
    if levels == 0 and integral:
        return arr.astype(np.int16), 1.0
    positive = arr[arr > 0]
    hi = float(np.percentile(positive, 99.5)) if positive.size else float(np.abs(arr).max() or 1.0)
    step = 2.0 ** math.floor(math.log2(hi / (levels or 4096)))
    if integral:
        step = max(step, 1.0)
    q = np.round(arr / step)
    if np.abs(q).max() > 32767:  # a long bright tail: widen the step until it fits int16
        step *= 2.0 ** math.ceil(math.log2(np.abs(q).max() / 32767))
        q = np.round(arr / step)
    return q.astype(np.int16), step


def slab_box(
    mask: np.ndarray, slab: int, spread: bool = False, full_plane: bool = False
) -> tuple[slice, slice, slice]:
    """The brain's in-plane box (the whole plane with ``full_plane``) and ``slab`` axial slices (last axis):
    the contiguous ones with the most brain, or with ``spread`` every k-th across the brain's extent.

    Session 36 found a model trained on box-cropped central slabs better on such slabs but worse on whole
    volumes (the benchmark's input): ``spread`` and ``full_plane`` give the 2D SR job whole-volume slices."""
    xs, ys = (np.flatnonzero(mask.any(axis=other)) for other in ((1, 2), (0, 2)))
    per_z = mask.sum(axis=(0, 1))
    n = min(slab, len(per_z)) if slab > 0 else len(per_z)
    if spread:
        zs = np.flatnonzero(per_z)
        step = -(-(int(zs[-1]) - int(zs[0]) + 1) // n)  # ceil: the whole extent, at most n slices
        count = len(range(int(zs[0]), int(zs[-1]) + 1, step))
        z = slice(int(zs[0]), int(zs[0]) + step * count, step)
    else:
        z0 = int(np.argmax(np.convolve(per_z, np.ones(n, dtype=np.int64), mode="valid")))
        z = slice(z0, z0 + n)
    if full_plane:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1]), z
    return slice(int(xs[0]), int(xs[-1]) + 1), slice(int(ys[0]), int(ys[-1]) + 1), z


def write_subject(
    subject: dict, out_dir: Path, slab: int, levels: int, spread: bool = False, full_plane: bool = False
) -> dict:
    """Crop every contrast of one subject to one box (:func:`slab_box`) and write int16 NIfTI; the datalist
    entry."""
    import nibabel as nib

    images = {c: nib.load(subject[c]) for c in CONTRASTS if c in subject}
    arrays = {c: np.asarray(img.dataobj, dtype=np.float64) for c, img in images.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or any(a.ndim != 3 for a in arrays.values()):
        raise ValueError(f"{subject['subject']}: contrasts are not 3D volumes on one grid: {shapes}")
    mask = np.any([a > 0 for a in arrays.values()], axis=0)
    box = slab_box(mask, slab, spread, full_plane)
    entry: dict = {"subject": subject["subject"]}
    steps = {}
    for c, arr in arrays.items():
        affine = images[c].affine.copy()
        affine[:3, 3] = affine[:3, :3] @ np.array([b.start for b in box]) + affine[:3, 3]
        affine[:3, 2] *= box[2].step or 1  # spread slices: the slab's spacing is k slices
        data, step = quantize(arr[box], levels)
        img = nib.Nifti1Image(data, affine)
        img.set_data_dtype(np.int16)
        if step != 1.0:  # stored integers times the step: the reader's float values
            img.header.set_slope_inter(step, 0.0)
        name = f"{subject['subject']}_{c}.nii.gz"
        nib.save(img, out_dir / name)
        entry[c] = name
        steps[c] = step
    entry["_box"] = [[b.start, b.stop, b.step or 1] for b in box]
    entry["_steps"] = steps
    return entry


def _write_if_fits(
    subject: dict, out_dir: Path, n_slices: int, levels: int, layout: dict, space_left: int
) -> tuple[dict | None, int]:
    """:func:`write_subject` into ``out_dir`` when its files take at most ``space_left`` bytes; (the
    datalist entry or None, their bytes)."""
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        entry = write_subject(subject, Path(tmp), n_slices, levels, **layout)
        files = [Path(tmp) / entry[c] for c in CONTRASTS if c in entry]
        size = sum(f.stat().st_size for f in files)
        if size > space_left:
            return None, size
        for f in files:
            shutil.move(f, out_dir / f.name)
    entry["_bytes"] = size
    return entry, size


def pack_data(
    out_dir: Path,
    space: int,
    slab: int,
    val_slab: int,
    levels: int,
    root: Path,
    layout: dict[str, bool] | None = None,
    mt_pairs: list[dict] | None = None,
) -> dict:
    """Write subjects in ``PRIORITY`` order while they fit in ``space`` bytes; the manifest. ``layout``:
    :func:`slab_box`'s ``spread`` and ``full_plane``. ``mt_pairs`` (subject dicts with ``t1`` and ``flair``,
    see ``--mt-pairs``) go first, whole, into ``mt_training``: the MT jobs' extra training subjects."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    available = {s["subject"]: s for s in shared_splits.subjects(root)}
    kept: dict[str, list] = {"training": [], "validation": [], "mt_training": []}
    dropped, used = [], 0
    queue = [(s, "mt_training", 0, {}) for s in mt_pairs or []]
    for sid in PRIORITY:
        split = shared_splits.split_of(sid)
        if split == "test":  # guard: the held-out subjects never leave this machine for training
            raise RuntimeError(f"{sid} is held out and must not be in PRIORITY")
        if sid not in available:
            dropped.append({"subject": sid, "why": "not in the shared data"})
            continue
        queue.append((available[sid], split, val_slab if split == "validation" else slab, layout or {}))
    for subject, split, n_slices, how in queue:
        entry, size = _write_if_fits(subject, out_dir, n_slices, levels, how, space - used)
        if entry is None:
            dropped.append({"subject": subject["subject"], "why": f"no space ({size / MIB:.2f} MiB)"})
            continue
        used += size
        kept[split].append(entry)
    datalist = {
        split: [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]
        for split, entries in kept.items()
    }
    (out_dir / "subjects.json").write_text(json.dumps(datalist, indent=1))
    manifest = {
        "slab": slab,
        "val_slab": val_slab,
        "levels": levels,
        "layout": layout or {},
        "contrasts": list(CONTRASTS),
        "data_bytes": used,
        "kept": kept,
        "dropped": dropped,
        "held_out_never_included": list(shared_splits.HELD_OUT),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def slim_tree(
    files: dict[str, int],
    out: Path,
    jobs: list[str] | None = None,
    bits: int = 8,
    starts_from: dict[str, Path] | None = None,
) -> tuple[dict[str, int], int]:
    """For ``--slim``: the tree without the shipped weights (``scripts/device_slim.sh on`` hides them from
    the call), and the bytes of their ``bits``-bit copies in ``out/init`` (what the device jobs start from):
    those of ``jobs`` only, when given, which leaves the room to data. ``starts_from`` (job -> file) packs
    another file for a job, such as the weights a previous call returned."""
    from device_train import START_WEIGHTS
    from device_weights import pack

    unknown = sorted((set(jobs or []) | set(starts_from or {})) - set(START_WEIGHTS))
    if unknown:
        raise SystemExit(f"unknown job(s) {unknown}; choose from {sorted(START_WEIGHTS)}")
    starts = list(dict.fromkeys(path for job, path in START_WEIGHTS.items() if jobs is None or job in jobs))
    sources: dict[str, Path] = {}
    for job, path in (starts_from or {}).items():  # sr and sr_b share one start file on the device
        if sources.setdefault(START_WEIGHTS[job], Path(path)) != Path(path):
            raise SystemExit(f"--start: jobs sharing {START_WEIGHTS[job]} must start from one file")
    init = pack(out / "init", starts, REPO, bits, sources)
    kept = {n: size for n, size in files.items() if not fnmatch.fnmatch(n, SHIPPED_WEIGHTS)}
    return kept, sum(f.stat().st_size for f in init)


def _add_slim_options(p: argparse.ArgumentParser) -> None:
    """``--slim`` and the options that only work with it."""
    p.add_argument(
        "--slim",
        action="store_true",
        help="the shipped weights stay behind (scripts/device_slim.sh on before the call); the four the "
        "jobs start from travel as 8-bit copies in OUT/init (scripts/device_weights.py)",
    )
    p.add_argument(
        "--only",
        type=lambda text: text.split(","),
        help="with --slim: the jobs the call will run (e.g. sr); only their start weights travel, so more "
        "subjects fit (pass the same --only to device_train_all.sh)",
    )
    p.add_argument(
        "--init-bits",
        type=int,
        choices=(8, 16),
        default=8,
        help="with --slim: 16 sends the start weights exact (fp16, twice the bytes of 8), so a call "
        "continues from the weights a previous call returned without a quantization step",
    )
    p.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="JOB=FILE",
        help="with --slim: the job starts from FILE (e.g. sr=W.pt, the weights a previous call returned) "
        "instead of its shipped weights; the shipped file is never touched",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=".device", help="folder under the repository root (git-ignored)")
    p.add_argument("--budget-mib", type=float, default=64.0, help="the device call's working-tree limit")
    p.add_argument("--reserve-mib", type=float, default=1.0, help="kept free for files still growing")
    p.add_argument("--slab", type=int, default=48, help="contiguous axial slices per volume (0: all)")
    p.add_argument("--val-slab", type=int, default=24, help="the same for validation subjects")
    p.add_argument("--levels", type=int, default=256, help="intensity levels kept (0: exact int16)")
    p.add_argument("--data-root", type=Path, default=shared_splits.DATA_ROOT)
    p.add_argument(
        "--tracked-only",
        action="store_true",
        help="size the data on tracked files alone (untracked, not ignored files must then be gone or "
        "ignored before the device call, or it is refused as too large)",
    )
    _add_slim_options(p)
    p.add_argument(
        "--spread",
        action="store_true",
        help="slab slices every k-th across the brain's extent, not the contiguous centre (2D jobs: sr)",
    )
    p.add_argument(
        "--full-plane",
        action="store_true",
        help="keep the whole axial plane, not the brain's box: SR then trains on slices like the whole "
        "volumes it is benchmarked on (zeros compress to little)",
    )
    p.add_argument(
        "--mt-pairs",
        type=Path,
        help="the pairs.json of scripts/prepare_open_ms_pairs.py: whole T1 / FLAIR pairs of brains without a "
        "tumour, packed first and trained on by the MT jobs only (the T1 -> FLAIR model needs them)",
    )
    return p


def checked_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Path]:
    """``--start JOB=FILE`` items as a job -> file map; usage errors (exit 2) for options that cannot work
    together."""
    if (args.only or args.init_bits != 8 or args.start) and not args.slim:
        p.error("--only, --init-bits and --start need --slim (without it every shipped weight travels)")
    if args.spread and (not args.only or "clinical" in args.only):
        p.error("--spread thins the slices: for 2D jobs only (--only without clinical, which trains in 3D)")
    if args.mt_pairs and args.only and not any(job.startswith("mt_") for job in args.only):
        p.error("--mt-pairs trains the MT jobs only: --only must name one")
    bad = [item for item in args.start if "=" not in item]
    if bad:
        p.error(f"--start takes JOB=FILE, not {bad}")
    starts_from = {job: Path(path) for job, path in (item.split("=", 1) for item in args.start)}
    if args.only and set(starts_from) - set(args.only):
        p.error(f"--start names jobs the call does not run: {sorted(set(starts_from) - set(args.only))}")
    given = [*starts_from.values(), *filter(None, [args.mt_pairs])]
    missing = [str(path) for path in given if not path.is_file()]
    if missing:
        p.error(f"--start / --mt-pairs: no such file {missing}")
    return starts_from


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    starts_from = checked_options(p, args)

    out = REPO / args.out
    if out.parent != REPO or out.name.startswith(".git"):
        p.error("--out must be a folder directly under the repository root")
    ensure_ignored(out.name)
    files = travelling_files(untracked=not args.tracked_only)
    init_bytes = 0
    shutil.rmtree(out / "init", ignore_errors=True)  # a stale one would be unpacked over the weights
    if args.slim:  # first: an unknown --only job stops here, before any download
        files, init_bytes = slim_tree(files, out, args.only, args.init_bits, starts_from)
    wheels = download_wheels(out / "wheels")
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    tree = sum(files.values())
    space = int(args.budget_mib * MIB - args.reserve_mib * MIB) - tree - wheel_bytes - init_bytes
    print(f"travelling tree {tree / MIB:.2f} MiB, wheels {wheel_bytes / MIB:.2f} MiB", end=", ")
    print(f"{args.init_bits}-bit initial weights {init_bytes / MIB:.2f} MiB", end=", ")
    print(f"{space / MIB:.2f} MiB left for data")
    if space <= 0:
        largest = sorted(files.items(), key=lambda kv: -kv[1])[:5]
        hint = "" if args.slim else " (--slim leaves the shipped weights behind)"
        print(f"no space left for data{hint}; largest travelling files:", file=sys.stderr)
        for name, size in largest:
            print(f"  {size / MIB:9.2f} MiB  {name}", file=sys.stderr)
        return 1
    layout = {"spread": args.spread, "full_plane": args.full_plane}
    pairs = json.loads(args.mt_pairs.read_text()) if args.mt_pairs else None
    manifest = pack_data(
        out / "data", space, args.slab, args.val_slab, args.levels, args.data_root, layout, pairs
    )
    manifest.update(tree_bytes=tree, wheel_bytes=wheel_bytes, wheels=[w.name for w in wheels])
    manifest.update(slim=args.slim, init_bytes=init_bytes, init_bits=args.init_bits, jobs=args.only or "all")
    manifest["starts_from"] = {job: str(path.resolve()) for job, path in starts_from.items()}
    manifest["payload_bytes"] = wheel_bytes + init_bytes + manifest["data_bytes"]
    manifest["total_bytes"] = tree + manifest["payload_bytes"]
    (out / "data" / "manifest.json").write_text(json.dumps(manifest, indent=1))
    counts = {k: [e["subject"] for e in v] for k, v in manifest["kept"].items()}
    print(f"data {manifest['data_bytes'] / MIB:.2f} MiB: {json.dumps(counts)}")
    print(f"dropped: {[d['subject'] for d in manifest['dropped']]}")
    payload, total = manifest["payload_bytes"] / MIB, manifest["total_bytes"] / MIB
    print(f"payload {payload:.2f} MiB; tree + payload {total:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
