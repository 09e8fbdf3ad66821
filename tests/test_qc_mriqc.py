"""`mtsr qc` against MRIQC 24.0.2's own IQM functions (mriqc.qc.anatomical), on real scans and on blurred
and noisy versions of them, with the same masks on both sides. Skips where mriqc does not import."""

from __future__ import annotations

import importlib
import logging
import sys
import types

import numpy as np
import pytest
from scipy import ndimage

from mtsr_monai.metrics import qc

TOLERANCE = 0.01  # the bar: within 1%


@pytest.fixture(scope="module")
def mriqc_iqms():
    """``mriqc.qc.anatomical`` with ``mriqc.config`` replaced by a logger-only stand-in.

    ``mriqc.config`` reads templateflow's version at import, and the IQM functions use it only for
    ``config.loggers.interface`` (a warning in ``snr_dietrich``).
    """
    for name in ("mriqc", "statsmodels", "nipype"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} not installed (pip install mriqc==24.0.2 --no-deps nipype statsmodels)")
    shim = types.ModuleType("mriqc.config")
    shim.loggers = types.SimpleNamespace(interface=logging.getLogger("mriqc.interface"))
    saved = sys.modules.get("mriqc.config")
    sys.modules["mriqc.config"] = shim
    try:
        sys.modules.pop("mriqc.qc.anatomical", None)
        yield importlib.import_module("mriqc.qc.anatomical")
    finally:
        sys.modules.pop("mriqc.qc.anatomical", None)
        if saved is None:
            sys.modules.pop("mriqc.config", None)
        else:
            sys.modules["mriqc.config"] = saved


def _versions(img: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The scan, a blurred and a noisy copy, stored as integers like the scanner's own."""
    rng = np.random.default_rng(seed)
    sigma = 0.03 * np.percentile(img, 99)
    noisy = np.hypot(img + sigma * rng.standard_normal(img.shape), sigma * rng.standard_normal(img.shape))
    return {
        "original": img,
        "blurred": np.rint(ndimage.gaussian_filter(img, 1.0)),
        "noisy": np.rint(noisy),
    }


def _mriqc_values(mq, img: np.ndarray, tissues: np.ndarray, head: np.ndarray, air: np.ndarray) -> dict:
    """The IQMs as MRIQC's StructuralQC interface combines its functions (hard tissue masks as pvms)."""
    pvms = {name: (tissues == label).astype(np.float32) for name, label in qc.LABELS.items()}
    pvms["bg"] = air.astype(np.uint8)
    stats = mq.summary_stats(img, pvms)
    padding = (~head & (img == 0)).astype(np.uint8)  # what MRIQC's rotation mask removes
    out = {
        "cjv": mq.cjv(stats["wm"]["median"], stats["gm"]["median"], stats["wm"]["mad"], stats["gm"]["mad"]),
        "efc": mq.efc(img),
        "wm2max": mq.wm2max(img, stats["wm"]["median"]),
        "cnr": mq.cnr(
            stats["wm"]["median"],
            stats["gm"]["median"],
            stats["bg"]["stdv"] if air.any() else 0.0,
            stats["wm"]["stdv"],
            stats["gm"]["stdv"],
        ),
        "fber": mq.fber(img, head.astype(np.uint8), padding),
    }
    for name in qc.LABELS:
        out[f"snr_{name}"] = mq.snr(stats[name]["median"], stats[name]["stdv"], stats[name]["n"])
        if air.any():
            out[f"snrd_{name}"] = mq.snr_dietrich(
                stats[name]["median"], mad_air=stats["bg"]["mad"], sigma_air=stats["bg"]["stdv"]
            )
    return out


def _compare(mq, img: np.ndarray, tissues: np.ndarray, head: np.ndarray, air: np.ndarray) -> dict:
    ours = qc.compute_iqms(img, tissues, head, air=air, head=head)
    theirs = _mriqc_values(mq, img, tissues, head, air)
    return {key: (ours[key], value) for key, value in theirs.items()}


def _segment(img: np.ndarray, brain: np.ndarray) -> np.ndarray:
    from mtsr_monai.metrics.segmentation import segment_tissues

    return segment_tissues(img, brain, ("t1",), max_fit_voxels=50_000)


def test_iqms_equal_mriqc_on_an_unstripped_clinical_t1(mriqc_iqms, shared_data):
    import nibabel as nib

    path = next((shared_data / "tcga_lgg_fg6692_brainles").glob("T1_AX_*.nii.gz"))
    img = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
    head = qc.head_mask(img)
    assert not qc.is_skull_stripped(img, head)
    air = qc.air_mask(img)
    tissues = _segment(img, ndimage.binary_erosion(head, iterations=8))
    for version, x in _versions(img).items():
        for key, (ours, theirs) in _compare(mriqc_iqms, x, tissues, head, air).items():
            assert ours == pytest.approx(theirs, rel=TOLERANCE), f"{version} {key}"


def test_iqms_equal_mriqc_on_a_skull_stripped_t1(mriqc_iqms, brats_case):
    import nibabel as nib

    img = np.asarray(nib.load(str(brats_case["t1"])).dataobj, dtype=np.float64)[:, :, 50:100]
    brain = qc.default_brain_mask(img)
    tissues = _segment(img, brain)
    no_air = np.zeros(img.shape, bool)
    for version, x in _versions(img).items():
        compared = _compare(mriqc_iqms, x, tissues, brain, no_air)
        for key in ("cjv", "efc", "wm2max", "cnr", "snr_csf", "snr_gm", "snr_wm"):
            ours, theirs = compared[key]
            assert ours == pytest.approx(theirs, rel=TOLERANCE), f"{version} {key}"
    # no background signal: MRIQC's FBER says -1 where ours says "undefined"
    assert mriqc_iqms.fber(img, brain.astype(np.uint8)) == -1.0
    assert qc.compute_iqms(img, tissues, brain)["fber"] is None
