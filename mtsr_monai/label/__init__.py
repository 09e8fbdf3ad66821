"""A MONAI Label app serving the three mtsr bundles (``mtsr label-server --studies DIR``).

MONAI Label 0.8.5 pins numpy < 2, pydicom < 3, pynetdicom < 3 and dicomweb-client < 0.60, which this
package's own environment does not, so the server runs from a separate virtual environment with the
``label`` extra (``pip install -e ".[label]"``); this module and :mod:`mtsr_monai.label.tasks` are imported
by the server only. ``APP_DIR`` holds the app; MONAI Label writes ``model/``, ``lib/``, ``bin/`` and ``logs/``
into the folder it runs an app from, so the server runs it from a copy in a folder of the user's
(:func:`prepare_app_dir`; default :func:`default_app_dir`), never from the installed package.
"""

from __future__ import annotations

import os
from pathlib import Path

from mtsr_monai.errors import InputError
from mtsr_monai.io import atomic_write_text

APP_DIR = Path(__file__).resolve().parent / "app"
MODELS = ("mtsr_sr", "mtsr_mt", "clinical_sr")
MODEL_ALIASES = {"sr": "mtsr_sr", "mt": "mtsr_mt", "clinical": "clinical_sr"}

__all__ = ["APP_DIR", "MODELS", "MODEL_ALIASES", "default_app_dir", "prepare_app_dir", "served_models"]


def default_app_dir() -> Path:
    """``$XDG_DATA_HOME/mtsr-monai/label-app`` (``~/.local/share/...`` where it is unset): the user's own."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mtsr-monai" / "label-app"


#: the first words of every mtsr app's ``main.py``: a file without them is another app's, never replaced
APP_MARKER = "MONAI Label app: x4 super-resolution"


def prepare_app_dir(folder: str | os.PathLike, studies: str | os.PathLike | None = None) -> Path:
    """``folder`` made ready for ``monailabel start_server --app``: it holds the package's ``main.py`` (copied
    again where this version's differs); MONAI Label's own files there are kept between servers. InputError
    for the package's own app folder, a folder inside the ``studies`` (MONAI Label writes ``model/``,
    ``logs/`` ... into it) and a folder holding another app's ``main.py``."""
    folder = Path(folder).resolve()
    if folder.is_relative_to(APP_DIR.parents[1]):
        raise InputError("--app-dir: not inside the mtsr_monai package (the server writes there)", folder)
    if studies is not None and folder.is_relative_to(Path(studies).resolve()):
        raise InputError("--app-dir: not inside --studies (the server writes model/, logs/ there)", folder)
    source, target = (APP_DIR / "main.py").read_text(), folder / "main.py"
    if target.is_file() and APP_MARKER not in target.read_text(errors="replace")[:500]:
        raise InputError("--app-dir holds another app's main.py: give an empty or an mtsr app folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_text() != source:
        atomic_write_text(target, source)
    return folder


def served_models(text: str) -> list[str]:
    """The bundles a ``--models`` / ``conf models`` value names (comma list of :data:`MODELS`, their
    aliases or ``all``); ValueError naming an unknown one, so ``mtsr label-server`` refuses it before the
    server starts."""
    wanted = [m.strip() for m in str(text).split(",") if m.strip()]
    models = list(MODELS) if wanted in ([], ["all"]) else [MODEL_ALIASES.get(m, m) for m in wanted]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)} (or sr, mt, clinical, all)")
    return models
