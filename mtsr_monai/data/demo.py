"""The embedded demo subject: T1w, T2w, PD and FLAIR synthesised from the MNI152 2009a template.

Tissue fractions per voxel come from the template (1 mm, 197x233x189):

- GM and WM: the template's probability maps (0-255 -> 0-1);
- CSF: the complement of GM + WM inside a brain envelope. The envelope is the GM + WM map smoothed
  (sigma 1.5 mm), thresholded at 0.2, closed (radius 3) and hole-filled, so it holds the ventricles and the
  sulcal CSF; its edge is softened (sigma 1 mm) so CSF fades out instead of stepping;
- non-brain (scalp, skull, neck): whatever fraction is left. Its intensity is the template T1 itself,
  scaled by the signal of subcutaneous fat in each contrast (bone stays dark, fat bright, air zero).
  nilearn ships the brain-extracted 2009a T1, so in practice this term only touches the brain's edge and
  the demo subject is skull-stripped, like the BraTS data.

Signal per voxel = sum over tissues of fraction x S(PD, T1, T2) with

- spin echo: ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``;
- inversion recovery: ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``; FLAIR's TI defaults to the
  CSF null point ``TI = T1_csf ln(2 / (1 + exp(-TR/T1_csf)))``.

Everything is deterministic (no noise): the same call gives the same bytes. Intensities are in arbitrary
units (PD x 1000).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mtsr_monai.io import atomic_file_set, save_volume  # loads torch and MONAI: inside a stage already shown
from mtsr_monai.io.template import template_path
from mtsr_monai.progress import StageBar

CONTRASTS = ("t1", "t2", "flair", "pd")


@dataclass(frozen=True)
class Tissue:
    """Proton density (relative to water) and relaxation times (ms)."""

    pd: float
    t1: float
    t2: float


# Relaxation times at 3 T.
# GM, WM: Stanisz et al., "T1, T2 relaxation and magnetization transfer in tissue at 3T", MRM 54:507 (2005):
#   WM T1 1084 ms, T2 69 ms; GM T1 1820 ms, T2 99 ms.
# CSF: T1 4163 ms (Lu et al., "Routine clinical brain MRI sequences for use at 3.0 Tesla", JMRI 22:13 (2005));
#   T2 ~2000 ms (free-water-like CSF T2 is reported between about 1.5 and 2.5 s; approximate).
# PD: water content WM ~0.69, GM ~0.80 (e.g. Neeb et al., NeuroImage 31:1156 (2006)); CSF ~1.
# Fat (scalp): subcutaneous fat T1 371 ms, T2 133 ms at 3 T (Gold et al., AJR 183:343 (2004)); PD ~0.9.
TISSUES: dict[str, Tissue] = {
    "gm": Tissue(pd=0.80, t1=1820.0, t2=99.0),
    "wm": Tissue(pd=0.69, t1=1084.0, t2=69.0),
    "csf": Tissue(pd=1.00, t1=4163.0, t2=2000.0),
    "fat": Tissue(pd=0.90, t1=371.0, t2=133.0),
}


@dataclass(frozen=True)
class Sequence:
    """A spin-echo (``ti is None``) or inversion-recovery sequence; times in ms. For FLAIR, ``ti=None`` means
    'null CSF'."""

    kind: str  # "se" or "ir"
    tr: float
    te: float
    ti: float | None = None


# Defaults: T1w = short-TR/short-TE spin echo (not MPRAGE); T2w, PD = long-TR spin echoes (long / short TE);
# FLAIR = long-TR inversion recovery with TI at the CSF null (about 2.4 s for TR 9 s at 3 T).
SEQUENCES: dict[str, Sequence] = {
    "t1": Sequence("se", tr=500.0, te=10.0),
    "t2": Sequence("se", tr=4000.0, te=100.0),
    "pd": Sequence("se", tr=5000.0, te=15.0),
    "flair": Sequence("ir", tr=9000.0, te=100.0, ti=None),
}


def spin_echo(tissue: Tissue, tr: float, te: float) -> float:
    """Spin-echo signal of ``tissue``: PD (1 - exp(-TR/T1)) exp(-TE/T2), times in ms."""
    return tissue.pd * (1 - math.exp(-tr / tissue.t1)) * math.exp(-te / tissue.t2)


def inversion_recovery(tissue: Tissue, tr: float, te: float, ti: float) -> float:
    """Magnitude inversion-recovery signal of ``tissue`` (FLAIR with a long ``ti``), times in ms."""
    return (
        tissue.pd
        * abs(1 - 2 * math.exp(-ti / tissue.t1) + math.exp(-tr / tissue.t1))
        * math.exp(-te / tissue.t2)
    )


def null_ti(t1: float, tr: float) -> float:
    """Inversion time that nulls a tissue of longitudinal relaxation ``t1`` at repetition time ``tr``."""
    return t1 * math.log(2 / (1 + math.exp(-tr / t1)))


def resolve_sequences(**overrides: float | None) -> dict[str, Sequence]:
    """Default sequences with overrides named ``{tr,te,ti}_{contrast}``, e.g. ``tr_t2=5000, ti_flair=2500``.
    FLAIR's ``ti`` left as ``None`` becomes the CSF null point."""
    sequences = dict(SEQUENCES)
    for name, value in overrides.items():
        if value is None:
            continue
        param, _, contrast = name.partition("_")
        if contrast not in sequences or param not in ("tr", "te", "ti"):
            raise ValueError(
                f"unknown sequence parameter {name!r} (expected tr_/te_/ti_ + one of {CONTRASTS})"
            )
        if param == "ti" and sequences[contrast].kind != "ir":
            raise ValueError(f"{contrast} is a spin echo: it has no inversion time")
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
        sequences[contrast] = replace(sequences[contrast], **{param: float(value)})
    flair = sequences["flair"]
    if flair.ti is None:
        sequences["flair"] = replace(flair, ti=null_ti(TISSUES["csf"].t1, flair.tr))
    for contrast, seq in sequences.items():
        if seq.te >= seq.tr or (seq.ti is not None and seq.ti >= seq.tr):
            raise ValueError(f"{contrast}: need TE < TR and TI < TR, got {seq}")
    return sequences


def tissue_signal(tissue: Tissue, sequence: Sequence) -> float:
    """The signal of ``tissue`` in ``sequence`` (inversion recovery or spin echo, by ``sequence.kind``)."""
    if sequence.kind == "ir":
        return inversion_recovery(tissue, sequence.tr, sequence.te, float(sequence.ti))
    return spin_echo(tissue, sequence.tr, sequence.te)


def _load(kind: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(template_path(kind)))
    return np.asarray(image.dataobj, dtype=np.float32) / 255.0, image.affine


def tissue_fractions() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-voxel fractions ``gm, wm, csf, nonbrain`` (sum 1), the brain mask (bool), the template affine."""
    from scipy import ndimage

    gm, affine = _load("gm")
    wm, _ = _load("wm")
    brain = gm + wm
    over = brain > 1
    gm[over] /= brain[over]  # the two maps overlap slightly at boundaries: renormalise to a partition
    wm[over] /= brain[over]
    brain = np.minimum(brain, 1.0)
    envelope = ndimage.gaussian_filter(brain, 1.5) > 0.2
    envelope = ndimage.binary_closing(
        envelope, structure=ndimage.generate_binary_structure(3, 1), iterations=3
    )
    envelope = ndimage.binary_fill_holes(envelope)
    soft = np.clip(ndimage.gaussian_filter(envelope.astype(np.float32), 1.0), 0, 1)
    csf = np.clip(np.maximum(soft, brain) - brain, 0, 1)
    nonbrain = np.clip(1 - brain - csf, 0, 1)
    return {"gm": gm, "wm": wm, "csf": csf, "nonbrain": nonbrain}, envelope, affine


def synthesize_contrasts(
    contrasts: tuple[str, ...] = CONTRASTS, **sequence_overrides: float | None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Synthesise contrasts (float32 arrays) from the template; return ``(images, brain_mask_uint8, affine)``.

    ``sequence_overrides``: ``tr_t1``, ``te_t1``, ``tr_t2``, ``te_t2``, ``tr_pd``, ``te_pd``, ``tr_flair``,
    ``te_flair``, ``ti_flair`` in ms (see :data:`SEQUENCES` for the defaults).
    """
    sequences = resolve_sequences(**sequence_overrides)
    fractions, mask, affine = tissue_fractions()
    t1_template, _ = _load("t1")
    outside = fractions["nonbrain"] > 0.5
    # the template's scalp intensity, normalised so that bright fat ~ 1 (robust to the odd hot voxel)
    scalp = t1_template[outside & (t1_template > 0.05)]
    fat_level = float(np.percentile(scalp, 99)) if scalp.size >= 100 else 1.0
    head = np.clip(t1_template / fat_level, 0, 1.2)
    images = {}
    for contrast in contrasts:
        seq = sequences[contrast]
        signal = fractions["nonbrain"] * head * tissue_signal(TISSUES["fat"], seq)
        for name in ("gm", "wm", "csf"):
            signal = signal + fractions[name] * tissue_signal(TISSUES[name], seq)
        images[contrast] = (1000.0 * signal).astype(np.float32)
    return images, mask.astype(np.uint8), affine


def make_demo_subject(
    output_dir: str | os.PathLike, progress: bool = False, **sequence_overrides: float | None
) -> dict[str, Path]:
    """Write ``t1, t2, flair, pd, brain_mask`` ``.nii.gz`` into ``output_dir``, all of them or none (an
    interrupted run leaves no partial subject), and return their paths keyed by name; ``progress`` shows
    the stages on stderr."""
    out = Path(output_dir)
    with StageBar(len(CONTRASTS) + 2, "demo subject", enabled=progress) as bar:
        bar.next("tissue maps, signal equations")

        images, mask, affine = synthesize_contrasts(CONTRASTS, **sequence_overrides)
        with atomic_file_set(out) as staging:
            for name, array in images.items():
                bar.next(f"write {name}")
                save_volume(array, staging / f"{name}.nii.gz", affine=affine)
            bar.next("write brain_mask")
            save_volume(mask, staging / "brain_mask.nii.gz", affine=affine, dtype=np.uint8)
    return {name: out / f"{name}.nii.gz" for name in [*images, "brain_mask"]}
