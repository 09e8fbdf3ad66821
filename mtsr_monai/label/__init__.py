"""A MONAI Label app serving the three mtsr bundles (``mtsr label-server --studies DIR``).

MONAI Label 0.8.5 pins numpy < 2, pydicom < 3, pynetdicom < 3 and dicomweb-client < 0.60, which this
package's own environment does not, so the server runs from a separate virtual environment with the
``label`` extra (``pip install -e ".[label]"``); this module and :mod:`mtsr_monai.label.tasks` are imported
by the server only. ``APP_DIR`` is the app folder to pass to ``monailabel start_server --app``.
"""

from __future__ import annotations

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent / "app"

__all__ = ["APP_DIR"]
