"""Paired data for the clinical SR bundle, the paper's way (same-size restoration on the HR grid).

For each high-resolution (HR) subject and sequence (FLAIR, T1, T2):

1. simulate the routine 2D protocol of that sequence with the foundation's thick-slice model
   (:func:`mtsr_monai.transforms.degradation.degrade_volume_thick_slice`): a slab of ``thickness`` mm slices
   along ``axis``, on its own coarse grid with a correct header;
2. bring it back onto the HR grid with SimpleITK in physical space, either through the header alone
   (``pairing="header"``, exact for simulated data) or after a ``rigid`` / ``affine`` registration of the
   LR scan to the HR scan (the paper's two linear pairings), with trilinear, B-spline or windowed-sinc
   interpolation (the paper's baselines);
3. scale each volume to [0, 1] on its own (robust percentiles,
   :func:`mtsr_monai.transforms.intensity.robust_scale`), as an inference pipeline must (it never sees the
   HR scale);
4. stack the sequences as channels (fused, C = number of sequences, order FLAIR, T1, T2) or keep one
   (split, C = 1), crop to the brain's bounding box, and cache as ``.npy`` (float16) for fast reuse.

Why the default protocols are *sagittal* slabs: BraTS volumes are resampled to 1 mm but most were acquired
as thick axial slices, so their z detail is not a trustworthy target (``grad_ratio_xyz`` in the data
manifest). Thick slices along x (left-right) remove detail that the HR reference really has; the network
sees that blur within axial and coronal training slices (random transposes make the blur direction
either image axis), and at inference on real axial protocols it is run on slices containing z.

:class:`ClinicalSliceDataset` draws random patches or full slices (zero-padded per batch by
:func:`pad_collate`) from the cached volumes, along any of the three axes.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import (
    Compose,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandLambdad,
    Randomizable,
    RandScaleIntensityd,
    SpatialPadd,
    ThresholdIntensityd,
)
from monai.utils import MAX_SEED, convert_to_tensor
from tqdm import tqdm

from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_write_text, check_same_grid, load_volume
from mtsr_monai.transforms.crop import foreground_box
from mtsr_monai.transforms.degradation import degrade_volume_thick_slice
from mtsr_monai.transforms.intensity import robust_range, robust_scale
from mtsr_monai.transforms.protocol import (
    ProtocolParams,
    RandChannelDropoutd,
    RandSimulateProtocol,
    SimulateProtocol,
)

#: channel order of the fused model (the paper's order)
MODALITIES = ("flair", "t1", "t2")
PAIRINGS = ("header", "rigid", "affine")


@dataclass(frozen=True)
class Protocol:
    """A routine 2D acquisition: slices ``thickness`` mm thick, ``gap`` mm apart, through-plane ``axis``."""

    thickness: float
    axis: str = "sagittal"
    gap: float = 0.0
    profile: str = "gaussian"


#: one protocol per sequence, as in real clinics (thicker FLAIR); see the module docstring for the axis
DEFAULT_PROTOCOLS: dict[str, Protocol] = {
    "flair": Protocol(5.0),
    "t1": Protocol(4.0),
    "t2": Protocol(4.0),
}


def as_protocols(spec: Mapping[str, Any] | None) -> dict[str, Protocol]:
    """Protocols from a config mapping ``{modality: {thickness, axis, ...}}`` (or Protocol objects)."""
    if spec is None:
        return dict(DEFAULT_PROTOCOLS)
    out = {}
    for key, value in spec.items():
        out[key] = value if isinstance(value, Protocol) else Protocol(**dict(value))
    return out


def simulate_protocol(
    hr: np.ndarray, affine: np.ndarray, protocol: Protocol, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The HR volume as acquired with ``protocol``: ``(data, affine)`` on the protocol's own coarse grid."""
    return degrade_volume_thick_slice(
        hr,
        affine,
        thickness=protocol.thickness,
        gap=protocol.gap,
        axis=protocol.axis,
        profile=protocol.profile,
        seed=seed,
    )


def pair_onto_grid(
    lr: np.ndarray,
    lr_affine: np.ndarray,
    hr: np.ndarray,
    hr_affine: np.ndarray,
    pairing: str = "header",
    method: str = "trilinear",
) -> np.ndarray:
    """Bring an LR volume onto the HR grid: header geometry only, or after rigid/affine registration."""
    # SimpleITK here, not at the top: the GPU training image has none (scripts/device_train.py swaps this)
    import SimpleITK as sitk

    # lazy: keeps SimpleITK out of this module's import
    from mtsr_monai.transforms.registration import register

    # lazy: keeps SimpleITK out of this module's import
    from mtsr_monai.transforms.sitk_utils import array_to_sitk, resample

    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; choose from {PAIRINGS}")
    moving = array_to_sitk(lr.astype(np.float32), lr_affine)
    fixed = array_to_sitk(hr.astype(np.float32), hr_affine)
    transform = None
    if pairing != "header":
        transform, _ = register(fixed, moving, kind=pairing, init="header", iterations=100)
    out = resample(moving, fixed, transform, method, float32=True)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(np.float32)


def make_pair(
    subject: Mapping[str, Any],
    modalities: Sequence[str] = MODALITIES,
    protocols: Mapping[str, Protocol] | None = None,
    pairing: str = "header",
    method: str = "trilinear",
    crop: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """One subject -> ``{"subject", "lr": (C,X,Y,Z), "hr": (C,X,Y,Z), "mask": (X,Y,Z) bool, "affine"}``.

    All sequences of a subject must share one HR grid (BraTS does); each is simulated with its own
    protocol, paired back onto the grid, and scaled to [0, 1] on its own.
    """
    protocols = as_protocols(protocols) if not isinstance(protocols, dict) else protocols
    volumes, affine = _load_subject_volumes(subject, modalities)
    lrs, hrs = [], []
    for m, hr in zip(modalities, volumes, strict=True):
        lr, lr_affine = simulate_protocol(hr, affine, protocols[m], seed=seed)
        lr_on_grid = pair_onto_grid(lr, lr_affine, hr, affine, pairing, method)
        hrs.append(robust_scale(torch.from_numpy(hr)).numpy())
        lrs.append(robust_scale(torch.from_numpy(lr_on_grid)).numpy())
    hr_all, lr_all = np.stack(hrs), np.stack(lrs)
    mask = (hr_all > 0).any(0)
    box = foreground_box(mask, 4) if crop else tuple(slice(0, s) for s in mask.shape)
    return {
        "subject": str(subject.get("subject", "subject")),
        "lr": lr_all[(slice(None),) + box],
        "hr": hr_all[(slice(None),) + box],
        "mask": mask[box],
        "affine": affine,
        "box": [(s.start, s.stop) for s in box],
    }


def _cache_key(subject: Mapping[str, Any], **params: Any) -> str:
    text = json.dumps({"subject": dict(subject), **params}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _cached_items(
    subjects: Sequence[Mapping[str, Any]],
    cache_dir: str | Path | None,
    params: Mapping[str, Any],
    make: Callable[[Mapping[str, Any]], dict[str, Any]],
    image_keys: Sequence[str],
    desc: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """``make(subject)`` for each subject; with a ``cache_dir``, stored once per subject and ``params``
    (``image_keys`` as float16 ``.npy``, the mask as it is, ``done.json`` written last so that an
    interrupted write is redone) and read back memory-mapped."""
    out = []
    for subject in tqdm(subjects, desc=desc, disable=not progress):
        if cache_dir is None:
            out.append(make(subject))
            continue
        folder = Path(cache_dir) / _cache_key(subject, **params)
        if not (folder / "done.json").exists():
            item = make(subject)
            folder.mkdir(parents=True, exist_ok=True)
            for key in image_keys:
                np.save(folder / f"{key}.npy", item[key].astype(np.float16))
            np.save(folder / "mask.npy", item["mask"])
            meta = {"subject": item["subject"], "affine": item["affine"].tolist(), "box": item["box"]}
            atomic_write_text(folder / "done.json", json.dumps(meta))  # whole or absent: a cut one would stay
        meta = json.loads((folder / "done.json").read_text())
        out.append(
            {
                "subject": meta["subject"],
                **{key: np.load(folder / f"{key}.npy", mmap_mode="r") for key in image_keys},
                "mask": np.load(folder / "mask.npy", mmap_mode="r"),
                "affine": np.asarray(meta["affine"]),
                "box": meta["box"],
            }
        )
    return out


def cached_pairs(
    subjects: Sequence[Mapping[str, Any]],
    cache_dir: str | Path | None,
    modalities: Sequence[str] = MODALITIES,
    protocols: Mapping[str, Any] | None = None,
    pairing: str = "header",
    method: str = "trilinear",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`make_pair` for each subject, cached as float16 ``.npy`` files (memory-mapped on reuse)."""
    protocols = as_protocols(protocols)
    params = {
        "modalities": list(modalities),
        "protocols": {m: asdict(protocols[m]) for m in modalities},
        "pairing": pairing,
        "method": method,
        "version": 1,
    }
    return _cached_items(
        subjects,
        cache_dir,
        params,
        lambda subject: make_pair(subject, modalities, protocols, pairing, method),
        ("lr", "hr"),
        desc=f"pairs ({pairing}, {method})",
        progress=progress,
    )


def select_channels(pairs: Sequence[Mapping[str, Any]], channels: Sequence[int]) -> list[dict[str, Any]]:
    """Split mode: the same pairs with only ``channels`` kept (C = 1 for one sequence)."""
    idx = list(channels)
    return [{**p, "lr": p["lr"][idx], "hr": p["hr"][idx]} for p in pairs]


SAMPLE_MODES = ("patch", "slice")


def _check_mode(mode: str) -> str:
    """``mode`` of a slice dataset, refused unless it is ``"patch"`` or ``"slice"``."""
    if mode not in SAMPLE_MODES:
        raise ValueError(f"mode must be 'patch' or 'slice', got {mode!r}")
    return mode


def _brain_slices(
    masks: Sequence[Any], axes: Sequence[int], min_fraction: float
) -> dict[tuple[int, int], np.ndarray]:
    """Per (volume, axis): the indices of the slices normal to ``axis`` whose brain fraction reaches
    ``min_fraction`` (the slices a dataset may draw; near-empty ones would train on background)."""
    valid: dict[tuple[int, int], np.ndarray] = {}
    for i, mask in enumerate(masks):
        mask = np.asarray(mask)
        for a in axes:
            fraction = mask.mean(axis=tuple(d for d in range(3) if d != a))
            valid[(i, a)] = np.nonzero(fraction >= min_fraction)[0]
    return valid


def _draw_plane(
    rng: np.random.RandomState, valid: Mapping[tuple[int, int], np.ndarray], item: int, axes: Sequence[int]
) -> tuple[int, int]:
    """``(axis, index)``: a random axis among ``axes``, then a random brain slice of volume ``item`` normal
    to it."""
    axis = axes[int(rng.randint(len(axes)))]
    choices = valid[(item, axis)]
    return axis, int(choices[int(rng.randint(len(choices)))])


def _swap_image_axes(x: torch.Tensor) -> torch.Tensor:
    """(C, h, w) -> (C, w, h)."""
    return x.transpose(-1, -2)


def _transpose_flips(keys: Sequence[str], transpose: bool, flip: bool) -> list[Randomizable]:
    """One random swap of the two image axes (``transpose``) and flips along each of them (``flip``), each
    with probability 0.5, applied alike to all ``keys`` (input, target and mask stay aligned). MONAI has no
    random transpose (RandRotate90 also reverses an axis), so RandLambdad draws the plain swap: the same
    outcomes as the earlier hand-written draws (with both on, each symmetry of the square w.p. 1/8)."""
    swap = [RandLambdad(keys, _swap_image_axes, prob=0.5)] if transpose else []
    return swap + ([RandFlipd(keys, prob=0.5, spatial_axis=a) for a in (1, 0)] if flip else [])


def _plain(sample: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Contiguous plain tensors (MONAI's transforms return MetaTensors, whose transform records the
    collate would stack for nothing)."""
    return {k: convert_to_tensor(v, track_meta=False).contiguous() for k, v in sample.items()}


class _RandomSlices(torch.utils.data.Dataset, Randomizable):
    """Base of the slice datasets: seeded as MONAI's transforms are. The dataset's own draws come from ``R``;
    ``set_random_state`` also reseeds its MONAI ``transforms``, each from a seed drawn from ``R`` (as MONAI's
    Compose does). ``monai.data.DataLoader`` calls it (``set_rnd``): without workers once, from the torch
    seed (so DDP ranks, seeded apart, draw apart); with workers in each worker, from that worker's seed (new
    every epoch unless workers persist), so no two workers draw one stream. A ``torch.utils.data.DataLoader``
    with workers needs ``worker_init_fn=monai.data.utils.worker_init_fn`` for that."""

    transforms: tuple[Randomizable, ...] = ()

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> _RandomSlices:
        super().set_random_state(seed, state)
        for transform in self.transforms:
            transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype=np.uint32)))
        return self


class ClinicalSliceDataset(_RandomSlices):
    """Random 2D samples ``{"lr": (C,h,w), "hr": (C,h,w), "mask": (1,h,w)}`` from cached paired volumes.

    ``mode="patch"``: ``samples_per_scan`` random ``patch_size`` patches per volume and epoch, centred on
    brain voxels; ``mode="slice"``: random full slices (padded later by :func:`pad_collate`).
    ``axes``: array axes the slices are cut along (0 sagittal, 1 coronal, 2 axial for RAS-like BraTS).
    ``transpose``: randomly swap the two image axes (the blur direction then appears along either).
    ``channel_dropout``: probability of zeroing an input channel (at least one kept), so a fused model
    also works when a sequence is missing (the clinical-sr command zero-fills it).
    Random draws: see :class:`_RandomSlices` (use ``monai.data.DataLoader``).
    """

    def __init__(
        self,
        pairs: Sequence[Mapping[str, Any]],
        mode: str = "patch",
        patch_size: int = 64,
        samples_per_scan: int = 64,
        axes: Sequence[int] = (2, 1),
        transpose: bool = True,
        flip: bool = True,
        channel_dropout: float = 0.0,
        min_brain_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.pairs, self.mode, self.patch_size = list(pairs), _check_mode(mode), int(patch_size)
        self.samples_per_scan, self.axes = int(samples_per_scan), [int(a) for a in axes]
        self.valid = _brain_slices([p["mask"] for p in self.pairs], self.axes, min_brain_fraction)
        keys, ps = ["lr", "hr", "mask"], self.patch_size
        # a patch centred on a random brain pixel (a random foreground centre: pos 1, neg 0), moved inside the
        # slice, which is first zero-padded at its end to at least a patch
        self.crop = Compose(
            [SpatialPadd(keys, ps, method="end"), RandCropByPosNegLabeld(keys, "mask", ps, pos=1, neg=0)]
        )
        dropout = RandChannelDropoutd("lr", probs=float(channel_dropout))
        self.augment = Compose([*_transpose_flips(keys, transpose, flip), dropout])
        self.transforms = (self.crop, self.augment)
        self.set_random_state(seed)

    def __len__(self) -> int:
        return len(self.pairs) * self.samples_per_scan

    def _slice(self, arr: np.ndarray, axis: int, k: int) -> np.ndarray:
        return np.take(arr, k, axis=axis + (arr.ndim - 3))

    def randomize(self, data: int) -> None:
        """The slice of volume ``data`` to sample, ``self.plane = (axis, index)``."""
        self.plane = _draw_plane(self.R, self.valid, data, self.axes)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = index % len(self.pairs)
        self.randomize(i)
        axis, k = self.plane
        sample = {
            key: torch.from_numpy(np.asarray(self._slice(self.pairs[i][key], axis, k), dtype=np.float32))
            for key in ("lr", "hr", "mask")
        }
        sample["mask"] = sample["mask"][None]
        if self.mode == "patch":
            with warnings.catch_warnings():  # an all-brain slice has no background, which neg=0 never uses
                warnings.filterwarnings("ignore", message=".*Num backgrounds 0")  # matched from the start
                sample = self.crop(sample)[0]  # a list of num_samples (one) patches
        return _plain(self.augment(sample))


def pad_collate(batch: Sequence[Mapping[str, torch.Tensor]], multiple: int = 16) -> dict[str, torch.Tensor]:
    """Stack samples, zero-padding each to the batch's largest size rounded up to ``multiple``."""
    h = max(b["lr"].shape[-2] for b in batch)
    w = max(b["lr"].shape[-1] for b in batch)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    out: dict[str, torch.Tensor] = {}
    for key in batch[0]:
        out[key] = torch.stack(
            [F.pad(b[key], (0, w - b[key].shape[-1], 0, h - b[key].shape[-2])) for b in batch]
        )
    return out


def training_panels(output: Mapping[str, Any], channel: int = 0) -> dict[str, torch.Tensor]:
    """The ``images_fn`` of the training's ``ImageGridHandler``: one sequence (``channel``, in the order of
    ``modalities``) of the trainer's output, as input, restored and target panels ``(B, 1, H, W)``."""
    shown = slice(channel, channel + 1)  # a slice keeps the channel axis the grid expects
    return {
        "input": output["input"][:, shown],
        "restored": output["pred"][:, shown],
        "target": output["target"][:, shown],
    }


# ------------------------------------------------------------------------ random protocols (new recipe)
def _load_subject_volumes(
    subject: Mapping[str, Any], modalities: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(C, X, Y, Z) float32 scanner-unit volumes of ``subject`` (one grid) and their affine."""
    missing = [m for m in modalities if m not in subject]
    if missing:
        raise InputError(f"subject {subject.get('subject')} lacks {missing}")
    vols = [load_volume(subject[m]) for m in modalities]
    check_same_grid(
        [v.shape for v in vols], [np.asarray(v.affine) for v in vols], [subject[m] for m in modalities]
    )
    return np.stack([v.numpy().astype(np.float32) for v in vols]), np.asarray(vols[0].affine, np.float64)


def scaled_volume(subject: Mapping[str, Any], modalities: Sequence[str], headroom: float = 1.25) -> dict:
    """One subject for :class:`ProtocolSliceDataset`: ``hr`` (C, X, Y, Z) cropped to the brain box, each
    channel divided by ``headroom`` x its robust 99.5 % level and clipped to [0, 1], and the brain ``mask``.

    Input and target of a training pair are both made from this one array, so they share one intensity
    scale and the network learns to keep it; ``headroom`` leaves the model's sigmoid room above the scaling
    level (an input scaled by its own, blurrier, 99.5 % level is brighter than its target)."""
    hr, affine = _load_subject_volumes(subject, modalities)
    scaled = np.empty_like(hr)
    for c in range(hr.shape[0]):
        lo, hi = robust_range(hr[c])
        scaled[c] = np.clip((hr[c] - lo) / ((hi - lo) * headroom), 0.0, 1.0)
    mask = (hr > 0).any(0)
    box = foreground_box(mask, 4)
    return {
        "subject": str(subject.get("subject", "subject")),
        "hr": scaled[(slice(None),) + box],
        "mask": mask[box],
        "affine": affine,
        "box": [(b.start, b.stop) for b in box],
    }


def cached_volumes(
    subjects: Sequence[Mapping[str, Any]],
    cache_dir: str | Path | None,
    modalities: Sequence[str] = MODALITIES,
    headroom: float = 1.25,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`scaled_volume` for each subject, cached as float16 ``.npy`` (memory-mapped on reuse)."""
    params = {"modalities": list(modalities), "headroom": float(headroom), "kind": "volumes", "version": 1}
    return _cached_items(
        subjects,
        cache_dir,
        params,
        lambda subject: scaled_volume(subject, modalities, headroom),
        ("hr",),
        desc="training volumes",
        progress=progress,
    )


def _padded_block(arr: np.ndarray, starts: Sequence[int], stops: Sequence[int]) -> np.ndarray:
    """``arr[..., starts:stops]`` over the last three axes, zero-filled where the window leaves the array."""
    lead = arr.ndim - 3
    inner = tuple(
        slice(max(a, 0), min(b, n)) for a, b, n in zip(starts, stops, arr.shape[lead:], strict=True)
    )
    part = np.asarray(arr[(slice(None),) * lead + inner], dtype=np.float32)
    pad = [(0, 0)] * lead + [(s.start - a, b - s.stop) for a, b, s in zip(starts, stops, inner, strict=True)]
    return np.pad(part, pad) if any(p != (0, 0) for p in pad) else part


class ProtocolSliceDataset(_RandomSlices):
    """2D training samples ``{"lr", "hr": (C, h, w), "mask": (1, h, w)}`` with a new random routine protocol
    per sample (:class:`~mtsr_monai.transforms.protocol.RandSimulateProtocol`), from :func:`cached_volumes`.

    Per sample: draw the protocol(s) (thick axis among ``simulator.axes``: the 1 mm data's axes whose detail
    is true), choose a slice plane that contains that thick axis (its normal among ``normals``), cut a block
    around a random brain patch (``mode="patch"``) or the whole plane (``mode="slice"``), acquire it with the
    protocol and interpolate it back (only the sampled plane is computed), then random transpose / flips,
    whole-channel dropout (``channel_dropout``: one probability per channel, e.g. T2 missing often) on the
    input, and one random gain ``1 + U(-intensity_gain, intensity_gain)`` on input and target alike
    (MONAI ``RandScaleIntensityd``; an input scaled at inference by its own 99.5 % level differs by such a
    factor from training), both clipped to [0, 1]. Random draws: see :class:`_RandomSlices` (use
    ``monai.data.DataLoader``).
    """

    def __init__(
        self,
        volumes: Sequence[Mapping[str, Any]],
        simulator: Any = None,
        mode: str = "patch",
        patch_size: int = 64,
        samples_per_scan: int = 64,
        normals: Sequence[int] = (2, 1, 0),
        channel_dropout: float | Sequence[float] = (0.1, 0.2, 0.5),
        intensity_gain: float = 0.2,
        transpose: bool = True,
        flip: bool = True,
        margin: int = 24,
        min_brain_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.volumes, self.mode, self.patch_size = list(volumes), _check_mode(mode), int(patch_size)
        self.samples_per_scan, self.normals = int(samples_per_scan), [int(a) for a in normals]
        self.margin = int(margin)
        if simulator is None or isinstance(simulator, Mapping):
            simulator = RandSimulateProtocol(**dict(simulator or {}))
        self.simulator = simulator
        self.post = Compose(
            [
                *_transpose_flips(["lr", "hr", "mask"], transpose, flip),
                RandChannelDropoutd(keys="lr", probs=channel_dropout),
                RandScaleIntensityd(keys=["lr", "hr"], factors=float(intensity_gain), prob=1.0),
                ThresholdIntensityd(keys=["lr", "hr"], threshold=1.0, above=False, cval=1.0),
            ]
        )
        self.transforms = (self.simulator, self.post)
        self.valid = _brain_slices([v["mask"] for v in self.volumes], range(3), min_brain_fraction)
        self.set_random_state(seed)

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_scan

    def _window(self, vol: Mapping[str, Any], normal: int, k: int) -> tuple[list[int], list[int]]:
        """Block start / stop per axis: the patch (or the whole plane) plus ``margin``, one plane thick plus
        ``margin`` along the normal."""
        shape = np.asarray(vol["mask"]).shape
        starts, stops = [0, 0, 0], list(shape)
        if self.mode == "patch":
            plane = np.take(np.asarray(vol["mask"]), k, axis=normal)
            ys, xs = np.nonzero(plane)
            j = int(self.R.randint(ys.size)) if ys.size else None
            for pos, a in zip((ys, xs), [d for d in range(3) if d != normal], strict=True):
                centre = int(pos[j]) if j is not None else int(self.R.randint(shape[a]))
                starts[a] = centre - self.patch_size // 2
                stops[a] = starts[a] + self.patch_size
        starts[normal], stops[normal] = k, k + 1
        return [s - self.margin for s in starts], [s + self.margin for s in stops]

    def randomize(self, data: int) -> None:
        """Volume ``data``'s protocol (``simulator``), then ``self.plane = (normal, index)``: a slice plane
        containing the protocol's thick axis."""
        self.simulator.randomize(int(np.shape(self.volumes[data]["hr"])[0]))
        thick = self.simulator.thick_axis
        normals = [n for n in self.normals if n != thick] or [n for n in range(3) if n != thick]
        self.plane = _draw_plane(self.R, self.valid, data, normals)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = index % len(self.volumes)
        self.randomize(i)
        normal, k = self.plane
        vol = self.volumes[i]
        starts, stops = self._window(vol, normal, k)
        block = _padded_block(vol["hr"], starts, stops)
        mask = _padded_block(np.asarray(vol["mask"], np.float32)[None], starts, stops)
        m = self.margin
        crop = tuple(slice(m, -m or None) for _ in range(2))  # margin 0: the whole window
        lr = self.simulator(block, randomize=False, plane=(normal, m)).numpy()[(slice(None),) + crop]
        hr = np.take(block, m, axis=normal + 1)[(slice(None),) + crop]
        mask = np.take(mask, m, axis=normal + 1)[(slice(None),) + crop]
        lr, hr, mask = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (lr, hr, mask))
        return _plain(self.post({"lr": lr.clamp(0.0, 1.0), "hr": hr, "mask": mask}))


def protocol_pair(
    subject: Mapping[str, Any],
    modalities: Sequence[str],
    params: Any,
    headroom: float = 1.25,
    missing: Sequence[str] = (),
) -> dict[str, Any]:
    """A validation (or benchmark) pair as deployment sees it: the 1 mm volumes acquired with the fixed
    protocol ``params`` (a :class:`~mtsr_monai.transforms.protocol.ProtocolParams` or its dict, for every
    channel) and interpolated back; the input scaled to [0, 1] by its own 99.5 % level, then divided by
    ``headroom`` (inference does this), ``missing`` sequences zero-filled; the target ``hr`` in the
    reference's [0, 1] scale (its own 99.5 % level, not clipped) and ``out_scale`` (C,) mapping a model
    output into that scale, so an intensity drift of the output costs PSNR. ``score_channels``: the
    channels given (scored)."""
    params = params if isinstance(params, ProtocolParams) else ProtocolParams(**dict(params))
    if params.axis == 2:
        raise ValueError("thick slices along array axis 2 (BraTS z) have no true 1 mm reference")
    hr, affine = _load_subject_volumes(subject, modalities)
    lr = SimulateProtocol(params)(hr).numpy()
    x, ref, scale = np.empty_like(lr), np.empty_like(hr), np.ones(len(modalities), np.float32)
    for c, m in enumerate(modalities):
        _, hi_lr = robust_range(lr[c])
        _, hi_hr = robust_range(hr[c])
        # as inference feeds the network (inference.clinical.network_input): clipped at the level, / headroom
        x[c] = 0.0 if m in missing else np.clip(lr[c] / hi_lr, 0.0, 1.0) / headroom
        ref[c], scale[c] = hr[c] / hi_hr, hi_lr * headroom / hi_hr
    mask = (hr > 0).any(0)
    box = foreground_box(mask, 4)
    return {
        "subject": str(subject.get("subject", "subject")),
        "lr": x[(slice(None),) + box],
        "hr": ref[(slice(None),) + box],
        "mask": mask[box],
        "affine": affine,
        "box": [(b.start, b.stop) for b in box],
        "out_scale": scale,
        "score_channels": [c for c, m in enumerate(modalities) if m not in missing],
        "protocol": {**asdict(params), "missing": list(missing)},
    }


def _per_modality(values: Mapping[str, float], modalities: Sequence[str]) -> list[float]:
    """``{sequence: value}`` as one value per channel, in the order of ``modalities``."""
    missing = [m for m in modalities if m not in values]
    if missing:
        raise ValueError(f"channel_dropout names no probability for {missing}; it has {sorted(values)}")
    return [float(values[m]) for m in modalities]


def training_dataset(
    simulation: str, subjects: Sequence[Mapping[str, Any]], cache_dir: Any, **kw: Any
) -> torch.utils.data.Dataset:
    """The bundle's training dataset: ``simulation="random"`` -> :class:`ProtocolSliceDataset` over
    :func:`cached_volumes` (keys ``modalities``, ``headroom``, ``simulator``, ``mode``, ``patch_size``,
    ``samples_per_scan``, ``normals``, ``channel_dropout``, ``intensity_gain``, ``seed``); ``"fixed"`` ->
    :class:`ClinicalSliceDataset` over :func:`cached_pairs` of the fixed per-sequence ``protocols`` (keys
    ``protocols``, ``pairing``, ``interpolation``, ``axes``, ``channel_dropout`` (a number), ...). Keys of
    the other recipe are ignored, so one config serves both (a factory: MONAI expressions resolve every
    reference they name, so a conditional in the config would build both caches)."""
    mods = kw.get("modalities", MODALITIES)
    common = {k: kw[k] for k in ("mode", "patch_size", "samples_per_scan", "seed") if k in kw}
    if isinstance(kw.get("channel_dropout"), Mapping):  # per sequence, for whichever sequences are trained
        kw["channel_dropout"] = _per_modality(kw["channel_dropout"], mods)
    if simulation == "random":
        vols = cached_volumes(subjects, cache_dir, mods, kw.get("headroom", 1.25))
        extra = {k: kw[k] for k in ("simulator", "normals", "channel_dropout", "intensity_gain") if k in kw}
        return ProtocolSliceDataset(vols, **common, **extra)
    if simulation != "fixed":
        raise ValueError(f"simulation must be 'random' or 'fixed', got {simulation!r}")
    pairs = cached_pairs(
        subjects,
        cache_dir,
        mods,
        kw.get("protocols"),
        kw.get("pairing", "header"),
        kw.get("interpolation", "trilinear"),
    )
    dropout = kw.get("channel_dropout", 0.1)
    dropout = float(np.max(dropout)) if not np.isscalar(dropout) else float(dropout)
    return ClinicalSliceDataset(pairs, axes=kw.get("axes", (2, 1)), channel_dropout=dropout, **common)


def validation_pairs(
    simulation: str, subjects: Sequence[Mapping[str, Any]], cache_dir: Any, **kw: Any
) -> list:
    """Validation pairs of either recipe (see :func:`training_dataset`): ``random`` -> :func:`protocol_pair`
    for every subject x ``val_protocols`` x ``val_missing`` (lists of missing sequences); ``fixed`` ->
    :func:`cached_pairs` of ``protocols``. No subject is an InputError: the best model is chosen on them."""
    if not subjects:
        raise InputError("the datalist's validation split has no subject: the best model is chosen on them")
    mods = kw.get("modalities", MODALITIES)
    if simulation == "random":
        return [
            protocol_pair(s, mods, p, kw.get("headroom", 1.25), missing)
            for s in subjects
            for p in kw.get("val_protocols", [{"axis": 0, "thickness": 5.0}, {"axis": 1, "thickness": 5.0}])
            for missing in kw.get("val_missing", [[]])
        ]
    return cached_pairs(
        subjects,
        cache_dir,
        mods,
        kw.get("protocols"),
        kw.get("pairing", "header"),
        kw.get("interpolation", "trilinear"),
    )
