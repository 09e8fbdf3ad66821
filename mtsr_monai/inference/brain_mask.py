"""A brain mask for a translation input that still has its skull (``mtsr translate``/``run --mask auto``).

The translation models saw skull-stripped brains only: fed a whole head, they paint the brain with the
scalp's level and the output is not the target contrast. ``auto`` leaves a skull-stripped input alone, and
gives any other input the intracranial mask of ``mtsr preprocess --registration none``: N4, an affine
registration of the MNI152 template (sampled inside its brain; for a T2 source, the template's brain painted
as a T2 from its tissue maps), the template's mask carried back onto the input's grid. About 25 s for
a 320 x 320 x 39 clinical T1 on 2 cores, on one registration thread so that reruns agree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtsr_monai.errors import InputError
from mtsr_monai.io import (
    atomic_output,
    check_same_grid,
    load_volume,
    nifti_space,
    read_json_object,
    save_volume,
)
from mtsr_monai.io.atomic import record_written
from mtsr_monai.io.outputs import same_file
from mtsr_monai.progress import StageBar
from mtsr_monai.transforms.foreground import head_mask, is_skull_stripped

#: the ``mask`` value that asks for :func:`resolve_brain_mask`'s automatic choice
AUTO = "auto"
#: file name of an automatic mask, beside the outputs it was used for
AUTO_MASK_NAME = "brain_mask.nii.gz"


def check_brain_mask(
    mask: np.ndarray, mask_affine: Any, shape: tuple[int, ...], affine: Any, names: tuple[str, str]
) -> np.ndarray:
    """A brain ``mask`` (3D) for an image of ``shape`` / ``affine``, as bool: InputError when it is not on
    the image's grid or is empty (nothing would be translated). ``names``: (image, mask), for messages."""
    check_same_grid(
        [tuple(shape), tuple(mask.shape)],
        [np.asarray(affine), np.asarray(mask_affine)],
        names,
        hint="the mask must be on the input's grid (make it from this scan, or --mask auto)",
    )
    if not (mask > 0).any():
        raise InputError("the brain mask is empty", names[1])
    return mask > 0


@dataclass
class MaskChoice:
    """The mask a translation uses (a file on the input's grid, or None) and, for ``auto``, why."""

    path: str | None
    note: str | None = None
    estimated: bool = False  # a mask was made here (``auto`` on an input with its skull)
    failed: bool = False  # ``auto`` on an input with its skull, but no mask could be made: worth a warning


def estimate_brain_mask(volume: Any, contrast: str | None = None, progress: bool = False) -> np.ndarray:
    """The intracranial mask (bool, on the grid of ``volume``, a 3D MetaTensor) of
    :mod:`mtsr_monai.data.preprocess`'s ``registration="none"`` pipeline with ``volume`` as its reference
    of ``contrast`` (None: T1), so registered to the MNI152 T1 or, for a T2, to its brain painted as one.
    ``progress``: a bar on stderr naming the stage running (about 25 s in all). Raises InputError when the
    image cannot be registered."""
    # lazy: preprocess's stages import SimpleITK and MONAI transforms, needed only for a head with its skull
    from mtsr_monai.data.preprocess import PreprocessConfig, build_stages

    # the contrast names the reference, so the pipeline picks the template painted in it (T2);
    # one registration thread: the same input then gets the same mask, and codes.json the same samples
    reference = str(contrast or "t1").lower()
    config = PreprocessConfig(registration="none", reference=reference, crop=False, registration_threads=1)
    data = {reference: volume.unsqueeze(0)}
    stages = [(name, stage) for name, stage in build_stages(config, [reference], []) if name != "intensity"]
    with StageBar(len(stages), "brain mask", enabled=progress) as bar:  # the mask is all this needs
        for name, stage in stages:
            bar.next(name)
            data = stage(data)
    return data["brain_mask"][0].numpy() > 0


#: share of an estimated brain mask that may lie outside the head: 0.09-0.23 of the two-class Otsu head on
#: the open-MS and TCGA clinical heads (the template's brain reaches into the dark skull base and the slab's
#: ends); 0.00-0.14 of the three-class head that auto_brain_mask measures on the 12 open-MS scans
MAX_OUTSIDE_HEAD = 0.4


def template_misfit(brain: np.ndarray, head: np.ndarray) -> str | None:
    """Why a brain mask carried from the template cannot be this head's (empty, larger than the head, or
    largely outside it: a registration that failed, or an image that is not a head), else None."""
    if not brain.any():
        return "empty mask"
    if brain.sum() > head.sum():
        return f"mask {int(brain.sum())} voxels, head {int(head.sum())}"
    outside = float((brain & ~head).sum() / brain.sum())
    return f"{outside:.0%} of the mask outside the head" if outside > MAX_OUTSIDE_HEAD else None


@dataclass
class AutoMask:
    """What ``auto`` made of one volume: its brain mask (bool, on the volume's grid) or None, and why."""

    mask: np.ndarray | None
    note: str
    failed: bool = False  # the input has its skull but no mask could be made: worth a warning


def auto_brain_mask(volume: Any, contrast: str | None = None, progress: bool = False) -> AutoMask:
    """``auto`` on a loaded 3D volume (MetaTensor) in ``contrast`` (``t1``, ``t2``, ``flair``; None: taken
    for a T1): no mask for a skull-stripped input, else :func:`estimate_brain_mask`'s; none, ``failed`` and
    why, when the input is too small to register or the template does not fit it (:func:`template_misfit`,
    against the head's three-class extent, which keeps a FLAIR's dim scalp). ``progress``: the
    estimation's stage bar."""
    if is_skull_stripped(volume.numpy()):
        return AutoMask(None, "the input is skull-stripped: no mask needed")
    try:
        brain = estimate_brain_mask(volume, contrast, progress)
    except (InputError, RuntimeError) as err:  # too small to register, or ITK gave up: not worth a failure
        reason = " ".join(str(err).split())[:160]  # ITK's messages run over several long lines
        return AutoMask(None, f"no brain mask could be estimated ({reason}): translated without one", True)
    # lazy: SimpleITK and MONAI, needed only for a head with its skull
    from mtsr_monai.transforms.brain_mask import CONTRAST_LEVELS

    painted = str(contrast).lower() in CONTRAST_LEVELS
    template = "MNI152 template" + (f" in {str(contrast).upper()} contrast" if painted else "")
    misfit = template_misfit(brain, head_mask(volume.numpy(), classes=3))
    if misfit:
        note = f"the {template} did not fit this image ({misfit}): translated without a mask"
        return AutoMask(None, note, True)
    note = f"the input has its skull: brain mask from the {template} ({int(brain.sum())} voxels)"
    return AutoMask(brain, note)


def resolve_brain_mask(
    input_path: str | os.PathLike,
    mask: str | os.PathLike | None,
    work_dir: str | os.PathLike,
    contrast: str | None = None,
    progress: bool = False,
) -> MaskChoice:
    """``mask`` as given (a path, or None), or for :data:`AUTO`: :func:`auto_brain_mask` of the input (in
    ``contrast``, with its stage bar if ``progress``), an estimated mask written into ``work_dir``."""
    if mask is None or str(mask) != AUTO:
        return MaskChoice(None if mask is None else str(mask))
    volume = load_volume(input_path)
    auto = auto_brain_mask(volume, contrast, progress)
    if auto.mask is None:
        return MaskChoice(None, auto.note, failed=auto.failed)
    path = Path(work_dir) / AUTO_MASK_NAME
    affine, space = np.asarray(volume.affine), nifti_space(volume)
    save_volume(auto.mask.astype(np.uint8), path, affine=affine, dtype=np.uint8, space=space)
    return MaskChoice(str(path), auto.note, estimated=True)


def stale_auto_mask(output_dir: str | os.PathLike, mask: Any) -> tuple[str, ...]:
    """The estimated mask an earlier run kept in ``output_dir``, to remove with that run's other outputs;
    nothing when this run's ``mask`` (a path, or a loaded mask whose meta names its file) is that file."""
    if hasattr(mask, "meta"):
        mask = mask.meta.get("filename_or_obj")
    given = mask is not None and str(mask) != AUTO and same_file(str(mask), Path(output_dir) / AUTO_MASK_NAME)
    return () if given else (AUTO_MASK_NAME,)


#: what ``mtsr run`` writes beside a translation's files: a translation into its folder removes them (a
#: summary.json naming another input and run, a montage of other samples, an SR the samples no longer follow)
RUN_ONLY_OUTPUTS = ("sr.nii.gz", "montage.png", "summary.json")


def earlier_outputs(output_dir: str | os.PathLike) -> list[str]:
    """The files an earlier ``mtsr translate`` / ``run`` wrote into ``output_dir`` by its own account (the
    codes of its ``codes.json``, the outputs of its ``summary.json``): what a folder written before the
    record of :func:`~mtsr_monai.io.atomic.atomic_file_set` existed may have replaced."""
    folder, names = Path(output_dir), []
    codes = read_json_object(folder / "codes.json")
    if isinstance((codes or {}).get("codes"), list):
        names += [f"sample_{i}.nii.gz" for i in range(len(codes["codes"]))]
        names += ["mean.nii.gz", "std.nii.gz", "codes.json", AUTO_MASK_NAME]
    outputs = (read_json_object(folder / "summary.json") or {}).get("outputs")
    if isinstance(outputs, dict):
        for value in outputs.values():
            names += [Path(str(p)).name for p in (value if isinstance(value, list) else [value])]
        names.append(AUTO_MASK_NAME)
    return names


@contextmanager
def brain_mask_for(
    input_path: str | os.PathLike,
    mask: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    contrast: str | None = None,
    progress: bool = False,
    keep: bool = True,
) -> Iterator[MaskChoice]:
    """:func:`resolve_brain_mask` for the duration of a translation; an estimated mask is kept as
    ``output_dir/brain_mask.nii.gz`` (so it can be checked) only once the block has succeeded. ``keep``
    False: the block stages it with its other outputs itself (one all-or-nothing set)."""
    with tempfile.TemporaryDirectory(prefix="mtsr_mask_") as work:
        choice = resolve_brain_mask(input_path, mask, work, contrast, progress)
        yield choice
        if choice.estimated and keep:
            final = Path(output_dir) / AUTO_MASK_NAME
            with atomic_output(final) as tmp:
                shutil.copyfile(str(choice.path), tmp)
            record_written(output_dir, [AUTO_MASK_NAME])  # an output of this run: the next may replace it
            choice.path = str(final)
