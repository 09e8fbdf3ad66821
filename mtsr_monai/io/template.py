"""The MNI152 ICBM 2009a (nonlinear symmetric) 1 mm template shipped inside the ``nilearn`` wheel.

nilearn carries the T1 template and grey- and white-matter probability maps (uint8, 0-255), 197x233x189
at 1 mm; no download is needed, so the embedded demo and the default registration target work offline.
Reference: Fonov et al., NeuroImage 2011 (ICBM 2009a); Fonov et al., NeuroImage 2009.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from mtsr_monai.errors import InputError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@lru_cache(maxsize=1)
def template_dir() -> Path:
    """Folder of nilearn's bundled data (found without importing nilearn, which is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the MNI template comes from the 'nilearn' package, which is not installed (pip install nilearn)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def template_path(kind: str = "t1") -> Path:
    """Path of the template's ``t1``, ``gm`` or ``wm`` map."""
    if kind not in TEMPLATE_FILES:
        raise ValueError(f"unknown template map {kind!r}; choose from {sorted(TEMPLATE_FILES)}")
    path = template_dir() / TEMPLATE_FILES[kind]
    if not path.is_file():
        raise InputError("MNI152 2009a map missing from the nilearn installation", path)
    return path
