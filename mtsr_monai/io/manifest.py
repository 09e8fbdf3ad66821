"""A bundle's ``large_files.yml``: the weights files it ships, with their sha256 (MONAI model-zoo format)."""

from __future__ import annotations

import os
from pathlib import Path

MANIFEST_NAME = "large_files.yml"


def manifest_entries(bundle: str | os.PathLike) -> list[dict]:
    """The ``large_files`` entries of ``bundle``'s manifest (each a dict with ``path`` and usually
    ``hash_val`` / ``hash_type``); empty when the bundle has no manifest."""
    spec = Path(bundle) / MANIFEST_NAME
    if not spec.is_file():
        return []
    # lazy: yaml is needed only where a manifest is read
    import yaml

    entries = (yaml.safe_load(spec.read_text()) or {}).get("large_files") or []
    return [item for item in entries if item.get("path")]


def enclosing_bundle(folder: str | os.PathLike) -> Path | None:
    """The nearest of ``folder`` and its parents that holds a manifest, or None."""
    folder = Path(folder)
    return next((b for b in (folder, *folder.parents) if (b / MANIFEST_NAME).is_file()), None)
