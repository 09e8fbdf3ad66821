"""3D volumes -> 2D slice (or patch) samples for the SR and MT bundles.

A subject dict (``{"subject": id, "t1": path, "flair": path, "brain_mask": path, ...}``, as in a datalist)
is loaded once, scaled per volume to [0, 1] by robust percentiles, cut into 2D slices along an axis resolved
from the affine, and slices with too little brain are skipped. Each sample is a dict
``{key: tensor (1, H, W), "subject": id, "slice_index": k}``; all keys of a sample come from the same slice
and, in patch mode, the same crop window, so paired (LR, HR) and multi-modal samples stay aligned.

Caching follows MONAI: the deterministic part (load, scale, slice, pad, user ``transform``) is cached in
memory (``CacheDataset`` of the slice list) or on disk (``PersistentDataset``, one file per slice); the
random part (patch crop, then ``random_transform``, e.g. the SR bundle's on-the-fly degradation that writes
the LR key) runs on every access, after the cache.
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import json
import os
import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import (
    Compose,
    DivisiblePadd,
    RandSpatialCropd,
    RandSpatialCropSamplesd,
    SpatialPadd,
    Transform,
)
from tqdm.auto import tqdm

from mtsr_monai.data.datalist import read_split
from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_write_text, check_same_grid, load_volume
from mtsr_monai.io.geometry import resolve_axis
from mtsr_monai.transforms.intensity import median_scale, robust_scale

DEFAULT_LABEL_KEYS = ("label", "seg", "brain_mask")


def foreground_fractions(volume: Any, axis: int, threshold: float = 0.0) -> np.ndarray:
    """Per slice along ``axis`` of a (C, X, Y, Z) or (X, Y, Z) array: the fraction of pixels where any channel
    exceeds ``threshold`` (for a brain mask: the brain fraction)."""
    x = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if x.ndim == 4:
        fg = (np.abs(x) > threshold).any(axis=0)
    elif x.ndim == 3:
        fg = np.abs(x) > threshold
    else:
        raise ValueError(f"expected a 3D or (C, X, Y, Z) volume, got shape {x.shape}")
    other = tuple(a for a in range(3) if a != axis)
    return fg.mean(axis=other)


def spaced_brain_slices(
    slices: torch.Tensor, count: int, min_share: float = 0.5, include_ends: bool = True
) -> torch.Tensor:
    """Indices of ``count`` evenly spaced slices of ``slices`` (S, H, W) among those whose positive area is
    at least ``min_share`` of the largest: the evaluations' slices. ``include_ends``: the first and last
    such slice are picked; else the centres of ``count`` equal parts (1 slice: the middle one)."""
    area = (slices > 0).flatten(1).sum(1)
    candidates = torch.nonzero(area >= min_share * area.max().double()).flatten()  # float64, as numpy's
    if include_ends:
        return candidates[torch.linspace(0, len(candidates) - 1, count).round().long()]
    centres = (torch.arange(count, dtype=torch.float64) + 0.5) / count * len(candidates)
    return candidates[centres.long()]


def extract_slices(
    volume: torch.Tensor | Mapping[str, torch.Tensor],
    axis: int,
    min_foreground_fraction: float = 0.0,
    mask: torch.Tensor | None = None,
    keys: Sequence[str] | None = None,
) -> list:
    """Cut a (C, X, Y, Z) tensor, or a dict of such tensors on one grid, into 2D slices along array ``axis``.

    Slices whose foreground fraction (of ``mask`` when given, else of the non-zero voxels of the tensor or of
    the ``keys`` of the dict, any channel) is below ``min_foreground_fraction`` are skipped. A tensor gives
    ``[(k, tensor (C, H, W))]``; a dict gives ``[{key: tensor (C, H, W), ..., "slice_index": k}]``.
    """
    if isinstance(volume, Mapping):
        keys = (
            list(keys) if keys is not None else [k for k, v in volume.items() if isinstance(v, torch.Tensor)]
        )
        tensors = {k: torch.as_tensor(volume[k]) for k in keys}
        shapes = {tuple(t.shape[1:]) for t in tensors.values()}
        if len(shapes) != 1:
            raise ValueError(f"keys {keys} are not on one grid: spatial shapes {sorted(shapes)}")
        fg_source = mask if mask is not None else torch.cat([t.float() for t in tensors.values()], dim=0)
    else:
        tensors = {None: torch.as_tensor(volume)}
        fg_source = mask if mask is not None else tensors[None]
    fractions = foreground_fractions(fg_source, axis)
    out: list = []
    for k in np.flatnonzero(fractions >= min_foreground_fraction):
        k = int(k)
        # clone: a view would keep the whole volume alive in the cache
        cut = {key: t.select(axis + 1, k).clone() for key, t in tensors.items()}
        if None in cut:
            out.append((k, cut[None]))
        else:
            out.append({**cut, "slice_index": k})
    return out


def load_subject(
    subject: Mapping[str, Any],
    keys: Sequence[str],
    mask_key: str | None = "brain_mask",
    label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
    normalize: bool = True,
    percentiles: Sequence[float] = (0.5, 99.5),
    median_keys: Sequence[str] = (),
) -> dict:
    """Load ``keys`` (+ ``mask_key`` when the subject has it) of one subject as (1, X, Y, Z) float tensors on
    one grid; images (keys not in ``label_keys``) scaled by :func:`robust_scale` when ``normalize``, those in
    ``median_keys`` by :func:`median_scale` (translation targets).
    Returns the tensors plus ``"affine"`` (RAS, of the first key). Raises :class:`InputError` for a missing
    key, an unreadable file or keys on different grids."""
    sid = subject.get("subject", "?")
    wanted = list(keys) + ([mask_key] if mask_key and mask_key in subject and mask_key not in keys else [])
    missing = [k for k in wanted if k not in subject]
    if missing:
        raise InputError(f"subject {sid} has no {', '.join(missing)} (has {', '.join(map(str, subject))})")
    vols = {}
    for key in wanted:
        is_label = key in label_keys or key == mask_key
        vols[key] = load_volume(subject[key], validate=not is_label)
    check_same_grid(
        [tuple(v.shape) for v in vols.values()],
        [np.asarray(v.affine) for v in vols.values()],
        [str(subject[k]) for k in wanted],
    )
    out: dict = {"affine": np.asarray(vols[wanted[0]].affine)}
    for key, v in vols.items():
        t = torch.as_tensor(v.numpy(), dtype=torch.float32)[None]
        if normalize and key in median_keys:
            t = median_scale(t)
        elif normalize and key not in label_keys and key != mask_key:
            t = robust_scale(t, *percentiles)
        out[key] = t
    return out


class _LoadSliced(Transform):
    """First, deterministic step of the disk / uncached modes: record -> slice dict (one volume in memory)."""

    def __init__(self, loader: Callable[[int], dict], axis_of: Callable[[int], int], keys: Sequence[str]):
        self.loader, self.axis_of, self.keys = loader, axis_of, list(keys)

    def __call__(self, record: Mapping[str, Any]) -> dict:
        vol = self.loader(int(record["_subject_index"]))
        axis, k = self.axis_of(int(record["_subject_index"])), int(record["slice_index"])
        out = {key: vol[key].select(axis + 1, k).clone() for key in self.keys}
        return {**out, "subject": record["subject"], "slice_index": k}


class SliceDataset(torch.utils.data.Dataset):
    """2D slice or patch samples from a list of subject dicts (see the module docstring).

    Args:
        data: subject dicts with a ``subject`` id and a path per key (a datalist split).
        keys: keys to load and return, all on one grid (e.g. ``["t1", "flair"]``, or ``["hr"]``).
        axis: ``"axial"`` / ``"coronal"`` / ``"sagittal"`` (resolved per subject from the affine) or 0/1/2.
        transform: deterministic dict transform(s) applied after slicing and cached.
        random_transform: random dict transform(s) applied after the cache on every access (e.g. the LR
            degradation); in patch mode after the crop, so it sees the HR patch.
        min_brain_fraction: skip slices whose brain fraction is below this; the brain is ``mask_key`` when the
            subject has it, else the non-zero voxels of any image key.
        cache: ``"memory"`` (CacheDataset), ``"disk"`` (PersistentDataset in ``cache_dir``) or None.
        mode: ``"full"`` slices (padded to ``pad_to_multiple``) or random ``"patch"`` crops of ``patch_size``
            (same window for all ``keys``), ``patches_per_slice`` per access (>1 returns a list of dicts:
            use ``monai.data.list_data_collate``).
        normalize: scale images per volume to [0, 1] by percentiles ``percentiles`` (False for data already
            preprocessed); labels and the mask are never scaled.
        median_keys: images scaled instead by their brain median (:func:`median_scale`).
    """

    def __init__(
        self,
        data: Sequence[Mapping[str, Any]],
        keys: Sequence[str] = ("t1",),
        axis: str | int = "axial",
        transform: Callable | Sequence[Callable] | None = None,
        random_transform: Callable | Sequence[Callable] | None = None,
        min_brain_fraction: float = 0.1,
        cache: str | None = "memory",
        cache_dir: str | os.PathLike | None = None,
        mode: str = "full",
        patch_size: Sequence[int] = (64, 64),
        patches_per_slice: int = 1,
        pad_to_multiple: int | None = None,
        normalize: bool = True,
        percentiles: Sequence[float] = (0.5, 99.5),
        median_keys: Sequence[str] = (),
        mask_key: str | None = "brain_mask",
        label_keys: Sequence[str] = DEFAULT_LABEL_KEYS,
        progress: bool = True,
    ) -> None:
        if isinstance(keys, str):
            keys = [keys]
        if mode not in ("full", "patch"):
            raise ValueError(f"mode must be 'full' or 'patch', got {mode!r}")
        if cache not in ("memory", "disk", None, "none"):
            raise ValueError(f"cache must be 'memory', 'disk' or None, got {cache!r}")
        cache = None if cache == "none" else cache
        if cache == "disk" and cache_dir is None:
            raise ValueError("cache='disk' needs a cache_dir")
        self.subjects = [dict(s) for s in data]
        if not self.subjects:
            raise InputError("no subjects given to SliceDataset")
        self.keys, self.axis, self.mode, self.cache = list(keys), axis, mode, cache
        self._load_kwargs = dict(
            keys=self.keys,
            mask_key=mask_key,
            label_keys=tuple(label_keys),
            normalize=normalize,
            percentiles=tuple(percentiles),
            median_keys=tuple(median_keys),
        )
        self._axes: dict[int, int] = {}
        self._memo: tuple[int, dict] | None = None
        self.min_brain_fraction = float(min_brain_fraction)
        self.mask_key = mask_key
        self._index_was_cached = False

        det, rand = _slice_transforms(
            self.keys, mode, patch_size, patches_per_slice, pad_to_multiple, transform, random_transform
        )
        self._cached_steps = _signature(det)
        records = self._index(cache_dir, progress)
        if not records:
            raise InputError(
                f"no slice of the {len(self.subjects)} subjects has a brain fraction "
                f">= {self.min_brain_fraction}"
            )
        self.dataset = self._dataset(records, det, rand, cache_dir, progress)

    def _dataset(
        self, records: list[dict], det: list, rand: list, cache_dir: str | os.PathLike | None, progress: bool
    ) -> Dataset:
        """MONAI's dataset of the slice records for the cache mode: the deterministic part cached."""
        if self.cache == "memory":
            return CacheDataset(
                records, Compose(det + rand), cache_rate=1.0, num_workers=1, progress=False, copy_cache=True
            )
        load = _LoadSliced(self._volume, self._axis_of, self.keys)
        pipeline = Compose([load] + det + rand)
        if self.cache != "disk":
            return Dataset(records, pipeline)
        dataset = PersistentDataset(records, pipeline, cache_dir=cache_dir)
        if not self._index_was_cached:
            self._warm_disk_cache(progress, dataset)
        return dataset

    # -- loading and indexing ------------------------------------------------------------------------
    def _volume(self, index: int) -> dict:
        # one subject kept in memory: the disk / uncached modes read slices subject by subject
        if self._memo is None or self._memo[0] != index:
            self._memo = (index, load_subject(self.subjects[index], **self._load_kwargs))
            self._axes[index] = resolve_axis(self._memo[1]["affine"], self.axis)
        return self._memo[1]

    def _axis_of(self, index: int) -> int:
        if index not in self._axes:
            self._volume(index)
        return self._axes[index]

    def _kept(self, vol: dict, axis: int) -> list[int]:
        if self.mask_key and self.mask_key in vol:
            fg = vol[self.mask_key]
        else:
            images = [k for k in self.keys if k not in self._load_kwargs["label_keys"]] or self.keys
            fg = torch.cat([vol[k] for k in images], dim=0)
        return [int(k) for k in np.flatnonzero(foreground_fractions(fg, axis) >= self.min_brain_fraction)]

    def _index(self, cache_dir: str | os.PathLike | None, progress: bool) -> list[dict]:
        index_file = None
        if self.cache == "disk":
            key = json.dumps(
                [self.subjects, self._load_kwargs, str(self.axis), self.min_brain_fraction], sort_keys=True
            )
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            index_file = Path(cache_dir) / f"slice_index_{digest}.json"
            if index_file.is_file():
                stored = json.loads(index_file.read_text())
                self._axes = {int(k): v for k, v in stored["axes"].items()}
                self._index_was_cached = True
                return self._records(stored["kept"], None)
        kept: dict[int, list[int]] = {}
        sliced: dict[int, dict] = {}
        iterator = range(len(self.subjects))
        if progress:
            iterator = tqdm(iterator, desc="slicing volumes", unit="subject", leave=False)
        for i in iterator:
            vol = self._volume(i)
            axis = self._axes[i]
            kept[i] = self._kept(vol, axis)
            if self.cache == "memory":
                sliced[i] = {
                    k: {key: vol[key].select(axis + 1, k).clone() for key in self.keys} for k in kept[i]
                }
                self._memo = None  # free the volume: only kept slices stay in memory
        if index_file is not None:
            atomic_write_text(index_file, json.dumps({"kept": kept, "axes": self._axes}))
        return self._records({str(i): v for i, v in kept.items()}, sliced if self.cache == "memory" else None)

    def _records(self, kept: Mapping[str, list[int]], sliced: dict[int, dict] | None) -> list[dict]:
        records = []
        for i_str, slices in sorted(kept.items(), key=lambda kv: int(kv[0])):
            i = int(i_str)
            subject = self.subjects[i]
            for k in slices:
                rec: dict[str, Any] = {"subject": str(subject.get("subject", i)), "slice_index": int(k)}
                if sliced is not None:
                    rec.update(sliced[i][k])
                else:
                    # everything the cached slice depends on, so the disk cache key changes with it
                    rec["_subject_index"] = i
                    rec["_source"] = {key: str(subject[key]) for key in self.keys if key in subject}
                    rec["_params"] = json.dumps(
                        [self._load_kwargs, str(self.axis), self._cached_steps], sort_keys=True
                    )
                records.append(rec)
        return records

    def _warm_disk_cache(self, progress: bool, dataset: PersistentDataset) -> None:
        # fill the cache in subject order once: a shuffled first epoch would reload a volume per slice
        data = dataset.data
        iterator = range(len(data))
        if progress:
            iterator = tqdm(iterator, desc="caching slices", unit="slice", leave=False)
        for i in iterator:
            dataset._cachecheck(data[i])
        self._memo = None

    # -- Dataset API ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return _strip(item)

    def set_random_state(self, seed: int | None = None) -> SliceDataset:
        """Seed the random transforms (patch crop, ``random_transform``) for reproducible samples."""
        self.dataset.transform.set_random_state(seed=seed)
        return self

    @property
    def slice_index(self) -> list[tuple[str, int]]:
        """(subject, slice index) of every sample, in order."""
        return [(r["subject"], r["slice_index"]) for r in self.dataset.data]


def _strip(item: Any) -> Any:
    if isinstance(item, list):
        return [_strip(i) for i in item]
    return {k: v for k, v in item.items() if not str(k).startswith("_")}


def _slice_transforms(
    keys: Sequence[str],
    mode: str,
    patch_size: Sequence[int],
    patches_per_slice: int,
    pad_to_multiple: int | None,
    transform: Callable | Sequence[Callable] | None,
    random_transform: Callable | Sequence[Callable] | None,
) -> tuple[list, list]:
    """The deterministic (cached: padding, then ``transform``) and random (every access: the patch crop,
    then ``random_transform``) parts of a :class:`SliceDataset`'s pipeline after slicing."""
    keys = list(keys)
    det: list = []
    if mode == "full" and pad_to_multiple:
        det.append(DivisiblePadd(keys, k=int(pad_to_multiple)))
    if mode == "patch":
        det.append(SpatialPadd(keys, spatial_size=list(patch_size)))  # slices smaller than a patch
    det += _as_list(transform)
    rand: list = []
    if mode == "patch":
        if patches_per_slice > 1:
            crop = RandSpatialCropSamplesd(
                keys, roi_size=list(patch_size), num_samples=int(patches_per_slice), random_size=False
            )
        else:
            crop = RandSpatialCropd(keys, roi_size=list(patch_size), random_size=False)
        rand.append(crop)
    return det, rand + _as_list(random_transform)


class _SettingsPickler(pickle.Pickler):
    """Pickles transforms by their settings: a random state (MONAI's ``R``, unseeded in ``Compose``) differs
    on every construction and says nothing about what a cached slice holds."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[np.random.RandomState] = lambda state: (np.random.RandomState, ())


def _signature(transforms: list) -> str:
    """A digest of the cached (deterministic) steps' settings, part of the disk cache key: padding, patch size
    and the user's ``transform`` change what a cached slice holds. A step that cannot be pickled (a lambda)
    is known by its class alone."""
    buffer = io.BytesIO()
    try:
        _SettingsPickler(buffer).dump(transforms)
        return hashlib.sha256(buffer.getvalue()).hexdigest()[:16]
    except (pickle.PicklingError, AttributeError, TypeError):
        return "|".join(f"{type(t).__module__}.{type(t).__qualname__}" for t in transforms)


def _as_list(transform: Callable | Sequence[Callable] | None) -> list:
    if transform is None:
        return []
    if isinstance(transform, Sequence):
        return list(transform)
    return [transform]


def expand_modalities(
    subjects: Sequence[Mapping[str, Any]], key: str, modalities: str | Sequence[str]
) -> list[dict[str, Any]]:
    """One item per subject and modality, ``key`` holding that modality's volume: a datalist of
    ``mtsr datalist`` / ``mtsr preprocess`` (keys ``t1``, ``t2``, ``flair`` ...) read by a bundle that wants
    one key (the SR bundle's ``hr``). Items get ``subject`` ``<id>_<modality>`` and ``modality``; an item
    that already holds ``key`` is kept as it is (a datalist written for the bundle)."""
    modalities = [modalities] if isinstance(modalities, str) else list(modalities)
    out: list[dict[str, Any]] = []
    for s in subjects:
        if key in s:
            out.append(dict(s))
            continue
        sid = s.get("subject", "?")
        out += [{**s, key: s[m], "subject": f"{sid}_{m}", "modality": m} for m in modalities if m in s]
    return out


def _missing_keys_error(
    path: Path, split: str, keys: Sequence[str], subjects: Sequence[Mapping]
) -> InputError:
    """One line naming what was wanted, what the datalist has, and the override that fixes it."""
    present = sorted({str(k) for s in subjects for k in s if k not in ("subject", "modality")})
    hint = (
        f"; it has {', '.join(present)}: choose with --modality (SR) or --source/--target (MT)"
        if present
        else ""
    )
    return InputError(f"no subject of split {split!r} has all of {', '.join(keys)}{hint}", path)


def datalist_volumes(
    datalist_path: str | os.PathLike,
    split: str,
    key: str,
    modalities: str | Sequence[str] = (),
    base_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Paths of one split's ``key`` volumes after :func:`expand_modalities` (relative paths joined with
    ``base_dir``, default the datalist's folder): the SR bundle's validation and held-out volumes. An empty
    result is an InputError naming what the split lacks."""
    path = Path(datalist_path)
    listed = read_split(path, split, base_dir)
    subjects = expand_modalities(listed, key, modalities)
    if not subjects:  # a run would train without ever validating, and export no best model
        wanted = [modalities] if isinstance(modalities, str) else list(modalities) or [key]
        if not listed:
            raise InputError(f"split {split!r} has no subject", path)
        raise _missing_keys_error(path, split, [" or ".join(wanted)], listed)
    return [str(s[key]) for s in subjects]


def typical_brain_level(
    datalist_path: str | os.PathLike,
    key: str,
    split: str = "training",
    base_dir: str | os.PathLike | None = None,
) -> float:
    """The median over a split's ``key`` volumes of their brain (non-zero) median after :func:`robust_scale`:
    where a median-scaled translation model's tissue level belongs in the robust convention (its export
    meta's ``target_level``, read by :func:`~mtsr_monai.inference.translate.restore_target_scaling`)."""
    levels = []
    for path in datalist_volumes(datalist_path, split, key, base_dir=base_dir):
        x = robust_scale(torch.as_tensor(load_volume(path).numpy(), dtype=torch.float32))
        levels.append(float(x[x > 0].median()))
    return float(np.median(levels))  # datalist_volumes refused an empty split


def build_slice_dataset_from_datalist(
    datalist_path: str | os.PathLike,
    split: str = "training",
    keys: Sequence[str] = ("t1",),
    base_dir: str | os.PathLike | None = None,
    key_map: Mapping[str, str | Sequence[str]] | None = None,
    **kwargs: Any,
) -> SliceDataset:
    """A :class:`SliceDataset` of one split (``training`` / ``validation`` / ``test``) of a datalist JSON.

    Relative paths are joined with ``base_dir`` (default: the datalist's folder, MONAI's convention).
    ``key_map`` ``{key: modalities}`` first gives one item per subject and modality with ``key`` set
    (:func:`expand_modalities`). Subjects lacking one of ``keys`` are skipped with a warning. Other arguments
    go to :class:`SliceDataset`.
    """
    path = Path(datalist_path)
    subjects = read_split(path, split, base_dir)
    for key, modalities in (key_map or {}).items():
        subjects = expand_modalities(subjects, key, modalities)
    keys = [keys] if isinstance(keys, str) else list(keys)
    usable = [s for s in subjects if all(k in s for k in keys)]
    if len(usable) < len(subjects):
        skipped = [str(s.get("subject", "?")) for s in subjects if s not in usable]
        warnings.warn(
            f"{path}: {len(skipped)} subjects lack one of {keys}: {', '.join(skipped[:5])}", stacklevel=2
        )
    if not usable:
        raise _missing_keys_error(path, split, keys, read_split(path, split, base_dir))
    return SliceDataset(usable, keys=keys, **kwargs)
