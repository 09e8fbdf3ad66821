"""A MONAI Label app serving the three mtsr bundles (``mtsr label-server --studies DIR``).

MONAI Label 0.8.5 pins numpy < 2, pydicom < 3, pynetdicom < 3 and dicomweb-client < 0.60, which this
package's own environment does not, so the server runs from a separate virtual environment with the
``label`` extra (``pip install -e ".[label]"``); this module and :mod:`mtsr_monai.label.tasks` are imported
by the server only. ``APP_DIR`` is the app folder to pass to ``monailabel start_server --app``.
"""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"
MODELS = ("mtsr_sr", "mtsr_mt", "clinical_sr")
MODEL_ALIASES = {"sr": "mtsr_sr", "mt": "mtsr_mt", "clinical": "clinical_sr"}

__all__ = ["APP_DIR", "MODELS", "MODEL_ALIASES", "served_models"]


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
