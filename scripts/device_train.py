#!/usr/bin/env python
"""Train every bundle from its shipped weights on a GPU machine in one time-boxed call (issue 19, part 3).

Run it through ``scripts/device_train_all.sh``, which installs the payload's wheels first. The device call
(after ``python scripts/pack_device_payload.py`` here; see docs/sr.md, "Training on a GPU"):

    run(command="bash scripts/device_train_all.sh --minutes 8", carry=[".device"], timeout_s=570)

made slim: ``pack_device_payload.py --slim`` and ``scripts/device_slim.sh on`` before, ``off`` after (the
shipped weights exceed the call's 64 MiB; their 8-bit copies travel in ``.device/init``).

Four jobs, each one
``python -m monai.bundle run training`` of a bundle's own ``train.yaml`` plus a generated override file (kept
in the returned logs), all started at once on the one GPU (``--sequential`` splits the budget instead):

- ``sr``: ``bundles/mtsr_sr``, fine-tuned from ``models/model.pt`` (``init_checkpoint``; the global skip read
  from ``inference.yaml``, so it matches the shipped weights), L1 phase, VGG weight 0;
- ``mt_t1_flair``, ``mt_t1_t2``: ``bundles/mtsr_mt``, the generator started from the shipped
  ``<source>_to_<target>.pt`` (its meta gives nz, ngf, image size, width cap and native resolution), encoder
  and discriminators fresh; a cVAE start (meta ``code_prior``, T1 -> T2 since bundle 0.4.0) keeps its recipe
  (no GAN terms, batch 4) and comes back as its last checkpoint with a new ``code_prior``; an L1-only start
  (T1 -> FLAIR since bundle 0.4.2, :func:`trained_with_gan`) stays in the L1 phase;
- ``clinical``: ``bundles/clinical_sr``, generator and critic from ``models/model.pt`` (its network arguments,
  modalities, patch size and protocols are passed as overrides). Its data pairs need SimpleITK, which the GPU
  image lacks (a 53 MB wheel): without it the header pairing's trilinear resampling is done by
  :func:`resample_linear` (same rule as ITK's, checked against it in tests/test_device_payload.py).

Each job validates the shipped weights first (so the exported file is never worse than the shipped one on
the validation data), then trains with AMP (``precision auto``: fp16 + GradScaler on CUDA) until a wall-clock
deadline, validating every ``--val-every`` seconds (an epoch ends early by Ignite's ``terminate_epoch``)
and once more at the end. Weights (fp16), logs, TensorBoard scalars as JSON, figures and ``summary.json``
go to ``--out`` within the device tool's return limits (8 files, 16 MiB each, 64 MiB in all): weights over
15 MiB are split into ``.partN`` files (``cat NAME.part* > NAME``; the sha256 of the whole is in the
summary); where the fp16 file would leave no room for the jobs still running, it comes back as 8-bit
``NAME.int8`` (``scripts/device_weights.py unpack``). A failing job loses only its own outputs. While jobs
run, their logs are live in ``OUT/live/``, so that a killed command still returns them.

``python scripts/device_train.py gpu-image-venv DIR`` makes a venv holding only the packages of the GPU
image (as listed in the device docs) linked from this environment: the CPU rehearsal runs in it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
MIB = 1 << 20
#: the shipped weights each job starts from, relative to the repository (a ``--slim`` payload carries
#: their 8-bit copies: scripts/device_weights.py)
START_WEIGHTS = {
    "sr": "bundles/mtsr_sr/models/model.pt",
    "sr_b": "bundles/mtsr_sr/models/model.pt",  # a second SR recipe beside the first (--sr-b-args): an A/B
    "mt_t1_flair": "bundles/mtsr_mt/models/t1_to_flair.pt",
    "mt_t1_t2": "bundles/mtsr_mt/models/t1_to_t2.pt",
    "clinical": "bundles/clinical_sr/models/model.pt",
}
#: the device tool's return limits, and the part size under its 16 MiB per file
MAX_FILES, MAX_FILE, MAX_TOTAL, PART = 8, 16 * MIB, 64 * MIB, 15 * MIB
LOGS_CAP = 6 * MIB
SUMMARY = "summary.json"
INT8_WEIGHTS_MAX = 10 * MIB  # the largest 8-bit weight file (an MT generator: 9.5 MiB)
#: seconds kept after training for exports, figures and packing; seconds a bundle run has, after its
#: wall-clock handler's deadline, for the last validation, checkpoint and exit before it is killed
POST_RESERVE_S, KILL_GRACE_S = 40.0, 25.0
#: what the GPU image's Python holds (the device docs' list; distribution names, normalised)
GPU_IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch
grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()


# ------------------------------------------------------------------------------- inside the bundle runs
def fast_cuda() -> None:
    """cuDNN autotuning back on (the bundles' ``set_determinism`` turns it off): speed over repeatability."""
    import torch

    if torch.cuda.is_available():
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def load_generator(generator, path: str) -> None:
    """The shipped MT generator (``{"generator": fp16 state dict, "meta": ...}``) into the bundle's."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["generator"]
    generator.load_state_dict({k: v.float() for k, v in state.items()})
    print(f"device_train: generator initialised from {path}", flush=True)


def load_clinical(network, critic, path: str) -> None:
    """The shipped clinical generator and critic (fp16) into the bundle's networks."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
    if "critic" in ckpt:
        critic.load_state_dict({k: v.float() for k, v in ckpt["critic"].items()})
    print(f"device_train: generator and critic initialised from {path}", flush=True)


def resample_linear(
    moving: np.ndarray, moving_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray
) -> np.ndarray:
    """``moving`` on the grid ``(shape, affine)`` by trilinear interpolation in physical space, as ITK's
    linear ``Resample`` with an identity transform does: 0 where the continuous index falls outside
    ``[-0.5, n - 0.5)`` of the moving volume, the border voxel's value between it and that edge."""
    from scipy.ndimage import map_coordinates

    to_moving = np.linalg.inv(np.asarray(moving_affine, float)) @ np.asarray(affine, float)
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    coords = to_moving[:3, :3] @ grid + to_moving[:3, 3:4]
    size = np.asarray(moving.shape, dtype=np.float64)[:, None]
    inside = np.all((coords >= -0.5) & (coords < size - 0.5), axis=0)
    out = map_coordinates(np.asarray(moving, np.float32), coords, order=1, mode="nearest")
    out[~inside] = 0.0
    return out.reshape(shape).astype(np.float32)


def pair_onto_grid_numpy(lr, lr_affine, hr, hr_affine, pairing: str = "header", method: str = "trilinear"):
    """:func:`mtsr_monai.data.clinical.pair_onto_grid` for header pairing and trilinear interpolation,
    without SimpleITK."""
    if pairing != "header" or method not in ("trilinear", "linear"):
        raise RuntimeError(f"without SimpleITK only header pairing + trilinear works, not {pairing}/{method}")
    return resample_linear(lr, lr_affine, hr.shape, hr_affine)


def clinical_pairs(subjects, cache_dir, modalities, protocols, pairing, interpolation) -> list:
    """The clinical bundle's ``cached_pairs``; where SimpleITK is missing (the GPU image), its resampling
    is replaced by :func:`pair_onto_grid_numpy`."""
    import mtsr_monai.data.clinical as clinical

    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        clinical.pair_onto_grid = pair_onto_grid_numpy
        print("device_train: no SimpleITK, clinical pairs resampled with scipy", flush=True)
    return clinical.cached_pairs(
        subjects, cache_dir, modalities, protocols, pairing, interpolation, progress=False
    )


# ---------------------------------------------------------------------------------- jobs and overrides
@dataclass
class Job:
    name: str
    bundle: str
    share: float  # of the budget when run one after another
    settings: dict[str, Any]
    threads: int = 2
    extra: dict[str, Any] = field(default_factory=dict)  # --sr-args etc.: over everything else

    def setting(self, key: str) -> Any:
        return self.extra.get(key, self.settings.get(key))


def extra_overrides(text: str) -> dict[str, Any]:
    """A job's extra overrides (``--sr-args`` etc.: ``--key value`` pairs), read as every training script
    reads them, so they travel in the override file with exact types."""
    # lazy: the package is importable once the payload's install step has run
    from mtsr_monai.inference.bundle import parse_overrides

    return parse_overrides(shlex.split(text))


def _absolute(entries: list[dict], data: Path) -> list[dict]:
    return [{k: (v if k == "subject" else str(data / v)) for k, v in e.items()} for e in entries]


def write_datalists(payload: Path, run_dir: Path, max_train: int | None) -> dict[str, Path]:
    """Datalists with absolute paths (the SR bundle opens validation paths as they are): subjects (MT, plus
    the payload's tumour-free ``mt_training`` pairs, which train MT only), volumes (SR: one ``hr`` per
    contrast) and subjects having all three contrasts and not held out by the clinical bundle's datalist
    (clinical)."""
    data = payload / "data"
    listing = json.loads((data / "subjects.json").read_text())
    subjects = {
        split: _absolute(listing.get(split, [])[: max_train if split == "training" else None], data)
        for split in ("training", "validation")
    }
    volumes = {
        split: [
            {"subject": s["subject"], "modality": c, "hr": s[c]}
            for s in entries
            for c in ("t1", "t2", "flair")
            if c in s
        ]
        for split, entries in subjects.items()
    }
    # the clinical bundle has its own split: its test subjects (TCGA-FG-6692 trains SR and MT) stay unseen
    clinical_test = clinical_held_out()
    clinical = {
        split: [
            s
            for s in entries
            if all(c in s for c in ("t1", "t2", "flair")) and s["subject"] not in clinical_test
        ]
        for split, entries in subjects.items()
    }
    subjects["training"] += _absolute(listing.get("mt_training", []), data)  # after SR's and clinical's lists
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, content in (("subjects", subjects), ("volumes", volumes), ("clinical", clinical)):
        out[name] = run_dir / f"{name}.json"
        out[name].write_text(json.dumps(content, indent=1))
    return out


def clinical_held_out() -> set[str]:
    """The test subjects of the clinical bundle's own datalist."""
    listing = json.loads((BUNDLES / "clinical_sr" / "configs" / "datalist.json").read_text())
    return {s["subject"] for s in listing.get("test", [])}


def data_workers(wanted: int) -> int:
    """DataLoader workers hand batches over through /dev/shm; where it is small (some VMs) they crash,
    so then the data is made in the training process."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        free = 0
    if free < 2 * 1024**3:
        print(f"device_train: /dev/shm has {free / MIB:.0f} MiB free: no DataLoader workers")
        return 0
    return wanted


def shipped_global_skip() -> str | None:
    import yaml

    return yaml.safe_load((BUNDLES / "mtsr_sr" / "configs" / "inference.yaml").read_text()).get("global_skip")


def mt_meta(source: str, target: str) -> dict:
    import torch

    path = REPO / START_WEIGHTS[f"mt_{source}_{target}"]
    return dict(torch.load(path, map_location="cpu", weights_only=True).get("meta", {}))


def trained_with_gan(meta: dict) -> bool:
    """Whether an MT start went through BicycleGAN iterations. An L1-only generator (bundle 0.4.2's
    t1_to_flair, whose meta ``phase`` says so) is not: on the H200 (session 35) fresh discriminators took
    its validation PSNR from 25.7 to 16.8 dB in 6 minutes, so its job stays in the L1 phase."""
    return "no BicycleGAN iterations" not in str(meta.get("phase", ""))


def clinical_shipped() -> dict:
    import torch

    ckpt = torch.load(REPO / START_WEIGHTS["clinical"], map_location="cpu", weights_only=True)
    return {k: v for k, v in ckpt.items() if k not in ("model", "critic")}


def stop_hook(end_at: float, val_every_s: float, run_dir: Path) -> str:
    report = str(run_dir / "wallclock.json")
    stop = f"mtsr_monai.engines.handlers.WallClockStop({end_at!r}, {val_every_s!r}, {report!r})"
    return f"${stop}.attach(@train#trainer)"


def pairs_expr(split: str) -> str:
    """The clinical bundle's pairs of ``split``, through :func:`clinical_pairs`."""
    args = f"@{split}#subjects, @cache_dir, @modalities, @protocols, @pairing, @interpolation"
    return f"$device_train.clinical_pairs({args})"


def smallest_slab_side(payload: Path) -> int | None:
    """The smallest in-plane side of the slabs SR trains and validates on (None without a payload manifest);
    the MT jobs' ``mt_training`` pairs, cropped to their brains, do not count."""
    manifest = payload / "data" / "manifest.json"
    if not manifest.exists():
        return None
    kept = json.loads(manifest.read_text())["kept"]
    entries = [entry for split in ("training", "validation") for entry in kept.get(split, [])]
    boxes = [entry["_box"] for entry in entries if "_box" in entry]
    return min((min(b[0][1] - b[0][0], b[1][1] - b[1][0]) for b in boxes), default=None)


def sr_patch_for(payload: Path, wanted: int = 192, fallback: int = 128) -> int:
    """The SR job's default HR patch: ``wanted`` where every slab of the payload holds it (whole planes,
    ``--full-plane``, or no payload manifest), else ``fallback`` (brain-box slabs can be narrower)."""
    side = smallest_slab_side(payload)
    return wanted if side is None or side >= wanted else fallback


def check_sr_patch(hr_patch: int, payload: Path) -> None:
    """Refuse an SR patch larger than the payload's slabs: the sampler would pad each slice to the patch,
    so every patch of a slice is the same whole slice (session 35's GPU run with ``--hr_patch 192``)."""
    side = smallest_slab_side(payload)
    if side is not None and hr_patch > side:
        print(f"device_train: --hr_patch {hr_patch} exceeds the payload's slab side {side}", file=sys.stderr)
        raise SystemExit(2)


def sr_job(args: argparse.Namespace, name: str = "sr") -> Job:
    """The SR bundle run ``name``: "sr" with ``--sr-args``, or "sr_b" (a second recipe in the same call)
    with ``--sr-b-args``."""
    smoke = args.cpu_smoke
    settings = {
        "init_checkpoint": str(REPO / START_WEIGHTS["sr"]),
        "global_skip": shipped_global_skip(),
        "loss_weights#vgg": 0,  # no VGG19 ImageNet weights on the machine
        # the shipped weights' recipe (docs/sr.md): foreground-weighted MSE, generator moving average
        "pretrain_loss": "$mtsr_monai.losses.ForegroundWeightedLoss(background_weight=0.1)",
        "ema_momentum": 0.002,
        # 0.4.5's own recipe: on the GPU (session 37) it kept climbing from 0.4.5 where 128-pixel patches at
        # lr 1e-4 fell; 32 patches a step cost about what 16 do there (an iteration's time is overhead)
        "learning_rate": 5e-5,
        "pretrain_epochs": 10**6,  # epochs are time slices here: the pixel-loss phase throughout
        "batch_size": 1 if smoke else 16,
        "samples_per_volume": 2,
        "hr_patch": 64 if smoke else sr_patch_for(args.payload),
        "num_workers": data_workers(2 if smoke else 8),
        "epoch_length": 3 if smoke else 500,
        "val_slices_per_volume": 1 if smoke else 8,  # 40 slices of the spread layout: about 3 s on the H200
        "checkpoint_every": 10**6,  # resume checkpoints at epoch ends only
        # baseline validation: the shipped weights' score; model.pt starts as them, so it is never worse
        "+initialize": ["$@validate#evaluator.run()"],
    }
    job = Job(
        name,
        "mtsr_sr",
        0.4,
        settings,
        1 if smoke else 2,
        extra_overrides(args.sr_b_args if name == "sr_b" else args.sr_args),
    )
    check_sr_patch(int(job.setting("hr_patch")), args.payload)
    return job


def mt_job(args: argparse.Namespace, source: str, target: str) -> Job:
    smoke = args.cpu_smoke
    meta = mt_meta(source, target)
    weights = REPO / START_WEIGHTS[f"mt_{source}_{target}"]
    settings = {
        "source": source,
        "target": target,
        "nz": int(meta.get("nz", 8)),
        "ngf": int(meta.get("ngf", 64)),
        "image_size": int(meta.get("image_size", 128)),
        "max_mult": int(meta.get("max_mult", 8)),
        "upsample": str(meta.get("upsample", "basic")),
        # the target scaling the weights were trained with (median since session 8; robust before)
        "target_scaling": str(meta.get("target_scaling", "robust")),
        "pretrain_iterations": 0,  # the shipped generator is past its L1 warm start: BicycleGAN throughout
        # weights trained before native-resolution patches existed were trained on resized whole slices
        "native_resolution": bool(meta.get("native_resolution", False)),
        "num_workers": data_workers(0 if smoke else 3),
        "epoch_length": 3 if smoke else 1000,
        "checkpoint_every": 3 if smoke else 1000,  # also the image-grid interval
        # then the baseline validation, which exports the shipped generator as the first best
        "+initialize": [
            f"$device_train.load_generator(@generator, {str(weights)!r})",
            "$@validate#evaluator.run()",
        ],
    }
    if "code_prior" in meta:  # a cVAE (docs/mt.md, session 21): its own recipe, no GAN terms
        settings.update(lambda_gan=0.0, lambda_gan2=0.0, batch_size=2 if smoke else 4)
    elif not trained_with_gan(meta):  # an L1 generator keeps its L1 recipe
        settings["pretrain_iterations"] = 10**9
    extra = extra_overrides(args.mt_args)
    return Job(f"mt_{source}_{target}", "mtsr_mt", 0.2, settings, 1 if smoke else 2, extra)


def clinical_job(args: argparse.Namespace) -> Job:
    smoke = args.cpu_smoke
    shipped = clinical_shipped()
    net, critic = shipped["network"], shipped["critic_args"]
    weights = REPO / START_WEIGHTS["clinical"]
    settings = {
        "modalities": list(shipped["modalities"]),
        "protocols": {k: dict(v) for k, v in shipped["protocols"].items()},
        "patch_size": int(shipped["patch_size"]),
        "filters": int(net["filters"]),
        "depth": int(net["depth"]),
        "residual": bool(net["residual"]),
        "critic_filters": int(critic["filters"]),
        "critic_dropout": float(critic["dropout"]),
        "batch_size": 4 if smoke else 16,
        # sampling (7-13 ms a sample through MONAI's crop and flips) would otherwise bound the GPU step
        "num_workers": data_workers(1 if smoke else 4),
        "samples_per_scan": 8 if smoke else 64,
        "epoch_length": 3 if smoke else 300,
        "checkpoint_every": 10**6,
        "train#pairs": pairs_expr("train"),
        "validate#pairs": pairs_expr("validate"),
        # then the baseline validation: model_best.pt starts as the shipped generator
        "+initialize": [
            f"$device_train.load_clinical(@network, @critic, {str(weights)!r})",
            "$@validate#evaluator.run()",
        ],
    }
    extra = extra_overrides(args.clinical_args)
    return Job("clinical", "clinical_sr", 0.2, settings, 1 if smoke else 2, extra)


def write_overrides(job: Job, run_dir: Path, paths: dict[str, Path], end_at: float, args) -> Path:
    """The override file merged after the bundle's ``train.yaml`` (``+`` keys append to its lists)."""
    import yaml

    settings = dict(job.settings)
    datalist = {"mtsr_sr": "volumes", "mtsr_mt": "subjects", "clinical_sr": "clinical"}[job.bundle]
    settings.update(
        output_dir=str(run_dir),
        datalist=str(paths[datalist]),
        precision=args.precision,
        max_epochs=10**6,  # the wall clock ends the run
    )
    # each call its own random stream: seeded alike, every call (each a fresh run from the shipped weights)
    # would train on the same first patches and degradations as the last one did; a job's --*-args may fix it
    settings.setdefault("seed", args.seed)
    if job.bundle == "clinical_sr":
        settings["dataset_dir"] = str(run_dir)  # the datalist's paths are absolute
    else:
        settings["num_threads"] = job.threads
    settings.update(job.extra)  # the call's --*-args win, as they did when they came last on the command line
    init = ["$device_train.fast_cuda()", *settings.pop("+initialize", [])]
    init.append(stop_hook(end_at, args.val_every, run_dir))
    settings["+imports"] = ["$import device_train"]
    settings["+initialize"] = init
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "device_overrides.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False, width=200))
    return path


def bundle_command(job: Job, overrides: Path, python: str) -> list[str]:
    configs = BUNDLES / job.bundle / "configs"
    return [
        python, "-m", "monai.bundle", "run", "training",
        "--config_file", repr([str(configs / "train.yaml"), str(overrides)]),
        "--bundle_root", str(BUNDLES / job.bundle),
        "--meta_file", str(configs / "metadata.json"),
        "--logging_file", str(configs / "logging.conf"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------- exports
def _fp16(state: dict) -> dict:
    return {k.removeprefix("module."): (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def export_sr(run_dir: Path, dest: Path) -> dict:
    """The best validated generator (``model.pt``: the shipped one if training never beat it) as fp16."""
    import torch

    best = run_dir / "model.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best}: no validated SR weights")
    state = torch.load(best, map_location="cpu", weights_only=True)
    for key in ("model", "ema", "generator"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    torch.save(_fp16(state), dest)
    return {"from": "model.pt (best val_brain_psnr, shipped weights included)"}


def export_mt(run_dir: Path, dest: Path, source: str, target: str) -> dict:
    """The generator file the bundle's validation handler wrote at its best PSNR (fp16 with its meta); for
    a cVAE start, :func:`export_mt_cvae`."""
    import torch

    start_meta = mt_meta(source, target)
    if "code_prior" in start_meta:
        return export_mt_cvae(run_dir, dest, start_meta)
    src = run_dir / f"{source}_to_{target}.pt"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no validated MT weights")
    shutil.copyfile(src, dest)
    meta = torch.load(dest, map_location="cpu", weights_only=True)["meta"]
    return {
        "from": src.name,
        "iterations_at_best": meta.get("iterations"),
        "validation": meta.get("validation"),
    }


def export_mt_cvae(run_dir: Path, dest: Path, start_meta: dict) -> dict:
    """A cVAE start (meta ``code_prior``): the last checkpoint's generator, with the start file's meta (its
    tissue prior kept) and the aggregate posterior of the last checkpoint's encoder as ``code_prior``
    (``scripts/set_code_prior.py``, on the run's training datalist). Not the validation export: that scores
    G(A, z = 0), and this encoder puts its codes elsewhere (docs/mt.md, session 21)."""
    import torch
    import yaml
    from set_code_prior import code_prior_of

    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: no MT checkpoint")
    trained = int(checkpoint.stem.split("_")[1])
    meta = {k: v for k, v in start_meta.items() if k != "code_prior"}
    meta["iterations"] = int(start_meta.get("iterations", 0)) + trained
    meta["phase"] = (
        f"{start_meta.get('phase', 'cVAE')}; then {trained} cVAE iterations (scripts/device_train.py)"
    )
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    datalist = Path(yaml.safe_load((run_dir / "device_overrides.yaml").read_text())["datalist"])
    meta["code_prior"] = {**code_prior_of(saved["encoder"], meta, datalist), "checkpoint": checkpoint.name}
    torch.save({"generator": _fp16(saved["generator"]), "meta": meta}, dest)
    return {"from": checkpoint.name, "iterations_trained": trained, "code_prior": meta["code_prior"]}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest resume checkpoint of a run (``checkpoint_<iteration>.pt`` in its ``checkpoints``)."""
    # lazy: torch, Ignite and MONAI load only when a step needs them, as elsewhere in this script
    from mtsr_monai.engines.handlers import latest_checkpoint as newest

    return newest(run_dir / "checkpoints")


#: what the clinical bundle's model_best.pt records of its run (train.yaml, validate#export#meta)
BEST_MODEL_META = ("network", "modalities", "patch_size", "intensity_headroom")


def export_clinical(run_dir: Path, dest: Path) -> dict:
    """As ``scripts/train_clinical.py export``: the best generator and the last critic, fp16, with the
    network arguments, modalities, patch size and headroom of model_best.pt, the run's recipe.json, and the
    shipped file's protocols and critic arguments."""
    import torch

    best = run_dir / "model_best.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best}: no validated clinical weights")
    from mtsr_monai.inference.clinical import best_model_meta, generator_state  # lazy: arguments first

    shipped = torch.load(REPO / START_WEIGHTS["clinical"], map_location="cpu", weights_only=True)
    ckpt_path = latest_checkpoint(run_dir)
    critic, iterations = shipped.get("critic"), 0
    if ckpt_path is not None:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        critic, iterations = _fp16(ckpt["discriminator"]), int(ckpt["trainer"]["iteration"])
    out = {k: v for k, v in shipped.items() if k not in ("model", "critic")}
    # what this run trained with (--clinical-args may change the headroom or the recipe), not the start's
    meta = best_model_meta(best)
    out.update({k: meta[k] for k in BEST_MODEL_META if k in meta})
    if (run_dir / "recipe.json").is_file():
        out["recipe"] = json.loads((run_dir / "recipe.json").read_text())
    out.update(
        model=_fp16(generator_state(best)),
        critic=critic,
        iterations=int(shipped.get("iterations", 0)) + iterations,
    )
    torch.save(out, dest)
    return {
        "from": "model_best.pt (best val PSNR, shipped weights included)",
        "device_iterations": iterations,
    }


def tensorboard_digest(run_dir: Path, figures: Path) -> dict:
    """All scalars of the run's TensorBoard files (to ``scalars.json``), the newest image of each image tag
    and a plot of the validation curves (PNG in ``figures``); returns first / best / last validation values
    (in event order: the baseline validation shares step 1 with the first one in the SR bundle)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list] = {}
    figures.mkdir(parents=True, exist_ok=True)
    for folder in sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder), size_guidance={"images": 1, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            scalars.setdefault(tag, []).extend([e.step, e.value, e.wall_time] for e in acc.Scalars(tag))
        for tag in acc.Tags().get("images", []):
            image = acc.Images(tag)[-1]
            (figures / f"{tag.replace('/', '_')}_it{image.step}.png").write_bytes(image.encoded_image_string)
    scalars = {t: sorted(v, key=lambda e: (e[0], e[2])) for t, v in scalars.items()}
    (run_dir / "scalars.json").write_text(json.dumps(scalars))
    val = {t: v for t, v in scalars.items() if "val" in t.lower() and "interpolated" not in t}
    if val:
        plot_curves(val, figures / "validation_curves.png")
    return {
        t: {"first": v[0][1], "best": max(x[1] for x in v), "last": v[-1][1], "n": len(v)}
        for t, v in val.items()
    }


def plot_curves(curves: dict[str, list], path: Path) -> None:
    from mtsr_monai.reporting.views import pyplot, save_figure

    fig, axes = pyplot().subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (tag, points) in zip(axes[0], curves.items(), strict=True):
        ax.plot([e[0] for e in points], [e[1] for e in points], marker="o")
        ax.set_title(tag)
        ax.set_xlabel("step (SR: validation number, else iteration)")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


# ------------------------------------------------------------------------------ the returned folder
class OutBox:
    """Files for the returned folder within the tool's limits; ``reserved`` files and bytes are kept for
    the summary and the logs archive. Live logs (``live/``) are left out of the count: they go at the end."""

    def __init__(self, out: Path, reserved_files: int = 2, reserved_bytes: int = LOGS_CAP + MIB) -> None:
        self.out, self.reserved_files, self.reserved_bytes = out, reserved_files, reserved_bytes
        self.pending_weights = 0  # jobs whose weights are still to come (each keeps room for an 8-bit file)

    def usage(self) -> tuple[int, int]:
        # summary.json is written while jobs run; it is one of the reserved files, so not counted twice
        files = [
            p
            for p in self.out.rglob("*")
            if p.is_file() and "live" not in p.relative_to(self.out).parts and p.name != SUMMARY
        ]
        return len(files), sum(p.stat().st_size for p in files)

    def put(self, src: Path, name: str, keep_files: int = 0, keep_bytes: int = 0) -> list[str]:
        """Copy ``src`` as ``name`` (split into ``name.partN`` above 15 MiB); returns the names written.
        Raises ``RuntimeError`` when it would not come back with ``keep_files`` / ``keep_bytes`` to spare."""
        size = src.stat().st_size
        parts = max(1, math.ceil(size / PART))
        files, used = self.usage()
        files, used = files + keep_files + self.reserved_files, used + keep_bytes + self.reserved_bytes
        if files + parts > MAX_FILES or used + size > MAX_TOTAL:
            raise RuntimeError(f"{name} ({size / MIB:.1f} MiB, {parts} files) exceeds the return limits")
        if parts == 1:
            shutil.copyfile(src, self.out / name)
            return [name]
        names = []
        with open(src, "rb") as f:
            for i in range(parts):
                names.append(f"{name}.part{i}")
                (self.out / names[-1]).write_bytes(f.read(PART))
        return names


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ driver
@dataclass
class Running:
    job: Job
    run_dir: Path
    proc: subprocess.Popen
    log: Path
    kill_at: float
    started: float


def start(job: Job, args, paths: dict[str, Path], kill_at: float, summary: dict) -> Running | None:
    """Launch one bundle run; None (recorded in ``summary``) when it cannot even start."""
    try:
        return _start(job, args, paths, kill_at)
    except Exception as err:
        summary["jobs"][job.name] = {"start_error": repr(err)}
        print(f"{job.name}: could not start: {err!r}")
        return None


def _start(job: Job, args, paths: dict[str, Path], kill_at: float) -> Running:
    run_dir = args.work / job.name
    end_at = kill_at - KILL_GRACE_S
    overrides = write_overrides(job, run_dir, paths, end_at, args)
    log = args.out / "live" / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(job.threads), PYTHONUNBUFFERED="1")
    cmd = bundle_command(job, overrides, sys.executable)
    with open(log, "w") as f:
        f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    left = kill_at - time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {job.name}: started (pid {proc.pid}), {left:.0f} s to train")
    return Running(job, run_dir, proc, log, kill_at, time.time())


def stop(run: Running) -> int:
    """Wait for the job until its kill time, then end its process group (data workers included)."""
    try:
        return run.proc.wait(timeout=max(run.kill_at - time.time(), 0.0))
    except subprocess.TimeoutExpired:
        print(f"{run.job.name}: past its time, stopped")
        os.killpg(run.proc.pid, signal.SIGTERM)
        try:
            return run.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            return run.proc.wait()


def put_weights(box: OutBox, weights: Path, name: str) -> dict:
    """The fp16 file into the returned folder, or where it would not fit (the four jobs' weights are
    about 72 MiB, the return limit 64) its 8-bit copy (``scripts/device_weights.py``; here: ``unpack DIR
    --into FOLDER`` writes the fp16 file back)."""
    from device_weights import pack

    others = max(box.pending_weights - 1, 0)  # each still running job keeps room for its 8-bit file
    keep = {"keep_files": others, "keep_bytes": others * INT8_WEIGHTS_MAX}
    try:
        return {"files": box.put(weights, name, **keep), "format": "fp16"}
    except RuntimeError:
        small = pack(weights.parent / "int8", [weights.name], weights.parent)[0]
        files = box.put(small, f"{name}.int8", **keep)
        return {"files": files, "format": "8-bit: python scripts/device_weights.py unpack DIR --into FOLDER"}


def finish(run: Running, rc: int, box: OutBox, summary: dict) -> None:
    """Export weights, digest logs into figures and JSON; record everything in ``summary``."""
    job, run_dir = run.job, run.run_dir
    entry: dict[str, Any] = {"returncode": rc, "wall_seconds": round(time.time() - run.started, 1)}
    shutil.move(run.log, run_dir / "train.log")
    wallclock = run_dir / "wallclock.json"
    if wallclock.is_file():
        entry["training"] = json.loads(wallclock.read_text())
    try:
        entry["validation"] = tensorboard_digest(run_dir, run_dir / "figures")
    except Exception as err:  # a missing digest must not cost the weights
        entry["validation_error"] = repr(err)
    if job.bundle == "mtsr_sr":  # sr and sr_b
        name = f"mtsr_{job.name}_model.pt"
    elif job.name == "clinical":
        name = "clinical_sr_model.pt"
    else:
        name = f"mtsr_mt_{job.settings['source']}_to_{job.settings['target']}.pt"
    weights = run_dir / f"export_{name}"
    try:
        if job.bundle == "mtsr_sr":
            entry["weights"] = export_sr(run_dir, weights)
        elif job.name == "clinical":
            entry["weights"] = export_clinical(run_dir, weights)
        else:
            entry["weights"] = export_mt(run_dir, weights, job.settings["source"], job.settings["target"])
        entry["weights"].update(sha256=sha256(weights), bytes=weights.stat().st_size)
        entry["weights"].update(put_weights(box, weights, name))
    except Exception as err:
        entry["weights_error"] = repr(err)
    summary["jobs"][job.name] = entry
    print(f"[{time.strftime('%H:%M:%S')}] {job.name}: rc {rc}, {json.dumps(entry.get('training', {}))}")


def pack_logs(work: Path, out: Path, cap: int = LOGS_CAP) -> dict:
    """``logs.tar.gz``: per job its log, overrides, datalists, JSON and figures, and its TensorBoard files
    while the archive stays under ``cap``."""
    small = [
        p for p in sorted(work.rglob("*")) if p.is_file() and p.suffix in (".log", ".yaml", ".json", ".png")
    ]
    events = sorted(work.rglob("events.out.tfevents.*"))
    target = out / "logs.tar.gz"
    for with_events in (True, False):
        with tarfile.open(target, "w:gz") as tar:
            for p in small + (events if with_events else []):
                tar.add(p, arcname=str(p.relative_to(work)))
        if target.stat().st_size <= cap:
            return {"file": target.name, "bytes": target.stat().st_size, "tensorboard_files": with_events}
    target.unlink()
    return {"error": f"logs over {cap / MIB:.0f} MiB even without TensorBoard files"}


def write_summary(out: Path, summary: dict) -> None:
    tmp = out / f"{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    tmp.replace(out / SUMMARY)


def job_makers(args) -> dict[str, Any]:
    """The selected jobs' constructors (each reads its shipped weights), in ``--only`` order."""
    table = {
        "sr": lambda: sr_job(args),
        "sr_b": lambda: sr_job(args, "sr_b"),
        "mt_t1_flair": lambda: mt_job(args, "t1", "flair"),
        "mt_t1_t2": lambda: mt_job(args, "t1", "t2"),
        "clinical": lambda: clinical_job(args),
    }
    unknown = [n for n in args.only if n not in table]
    if unknown:
        raise SystemExit(f"unknown job(s) {unknown}; choose from {sorted(table)}")
    return {n: table[n] for n in args.only}


def jobs_for(args) -> list[Job]:
    return [make() for make in job_makers(args).values()]


def environment() -> dict:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    for name in ("monai", "ignite", "nibabel"):
        try:
            info[name] = __import__(name).__version__
        except ImportError as err:
            info[name] = f"missing: {err}"
    return info


def train_all(args) -> int:
    deadline = args.started_at + args.minutes * 60.0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.work.exists():  # a stale run would be resumed by the bundles
        shutil.rmtree(args.work)
    box = OutBox(args.out)
    summary: dict[str, Any] = {"started_at": args.started_at, "minutes": args.minutes, "seed": args.seed}
    summary["jobs"] = {}
    summary["payload"] = json.loads((args.payload / "data" / "manifest.json").read_text())["kept"]
    jobs = []
    for name, make in job_makers(args).items():
        try:  # a job that cannot be set up (e.g. unreadable weights) must not stop the others
            jobs.append(make())
        except Exception as err:
            summary["jobs"][name] = {"setup_error": repr(err)}
    box.pending_weights = len(jobs)
    paths = write_datalists(args.payload, args.work, 2 if args.cpu_smoke else None)
    train_end = deadline - POST_RESERVE_S
    if args.sequential:
        summary["environment"] = environment()
        for job in jobs:
            remaining = sum(j.share for j in jobs[jobs.index(job) :])
            run = start(
                job, args, paths, time.time() + (train_end - time.time()) * job.share / remaining, summary
            )
            if run is not None:
                safe_finish(run, stop(run), box, summary)
            write_summary(args.out, summary)
    else:
        pending = [run for run in (start(job, args, paths, train_end, summary) for job in jobs) if run]
        summary["environment"] = environment()  # while the jobs start
        write_summary(args.out, summary)
        while pending:
            for run in list(pending):
                rc = run.proc.poll()
                if rc is None and time.time() < run.kill_at:
                    continue
                safe_finish(run, rc if rc is not None else stop(run), box, summary)
                write_summary(args.out, summary)
                pending.remove(run)
            time.sleep(1.0)
    summary["logs"] = pack_logs(args.work, args.out)
    shutil.rmtree(args.out / "live", ignore_errors=True)
    summary["wall_seconds"] = round(time.time() - args.started_at, 1)
    write_summary(args.out, summary)
    brief = {n: {k: e.get(k) for k in ("returncode", "training")} for n, e in summary["jobs"].items()}
    print(json.dumps(brief))
    print(f"done in {summary['wall_seconds']} s; {args.out}: {sorted(p.name for p in args.out.iterdir())}")
    failed = [n for n, e in summary["jobs"].items() if "weights" not in e]
    return 1 if failed else 0


def safe_finish(run: Running, rc: int, box: OutBox, summary: dict) -> None:
    try:
        finish(run, rc, box, summary)
    except Exception as err:  # keep the other jobs' outputs
        summary["jobs"].setdefault(run.job.name, {})["finish_error"] = repr(err)
    finally:
        box.pending_weights -= 1


def gpu_image_venv(target: Path) -> int:
    """A venv whose site-packages links exactly the GPU image's packages from this environment."""
    from importlib import metadata

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    site = next((target / "lib").glob("python3*/site-packages"))
    wanted = {n.replace("_", "-").lower() for n in GPU_IMAGE_PACKAGES}
    linked = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"].replace("_", "-").lower()
        if name not in wanted or name in linked:
            continue
        linked.add(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(dist.locate_file(top))
            dst = site / top
            if src.exists() and not dst.exists() and top != "__pycache__":
                dst.symlink_to(src)
    print(f"{target}: {len(linked)} packages linked; absent here: {sorted(wanted - linked)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gpu-image-venv"]:
        return gpu_image_venv(Path(argv[1]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the whole command")
    p.add_argument(
        "--started-at", type=float, default=time.time(), help="epoch seconds the budget counts from"
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "device_out")))
    p.add_argument("--payload", type=Path, default=REPO / ".device")
    p.add_argument("--work", type=Path, default=Path("/tmp/mtsr_device"), help="run folders (emptied first)")
    p.add_argument(
        "--only", type=lambda s: s.split(","), default=["sr", "mt_t1_flair", "mt_t1_t2", "clinical"]
    )
    p.add_argument("--sequential", action="store_true", help="one job after another, budget split")
    p.add_argument("--val-every", type=float, default=60.0, help="seconds of training between validations")
    p.add_argument(
        "--precision", default="auto", help="auto: fp16 + GradScaler on CUDA, bf16 on a CPU with it"
    )
    p.add_argument("--cpu-smoke", action="store_true", help="tiny batches and epochs, 2 training subjects")
    p.add_argument("--seed", type=int, help="the bundles' seed (default: from the start time, new each call)")
    p.add_argument(
        "--sr-args", default="", help="more overrides for the SR bundle, e.g. '--ema_momentum 0.001'"
    )
    p.add_argument(
        "--sr-b-args",
        default="",
        help="job sr_b (--only sr,sr_b): a second SR recipe in the same call, e.g. '--hr_patch 192'",
    )
    p.add_argument("--mt-args", default="", help="more overrides for both MT bundle runs")
    p.add_argument("--clinical-args", default="", help="more overrides for the clinical bundle")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.val_every = min(args.val_every, 20.0)
    if args.seed is None:
        args.seed = int(args.started_at) % 2**31
    return train_all(args)


if __name__ == "__main__":
    sys.exit(main())
