"""Reports: the clinical evaluation (:func:`mtsr_monai.reporting.clinical.evaluate_clinical`) and its
HTML page and figures (:mod:`mtsr_monai.reporting.html`). Nothing heavy is imported here."""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_clinical"]


def evaluate_clinical(*args: Any, **kwargs: Any) -> dict:
    """See :func:`mtsr_monai.reporting.clinical.evaluate_clinical`."""
    # lazy: keeps the package import light (numpy and the figure helpers load on first use)
    from mtsr_monai.reporting.clinical import evaluate_clinical as run

    return run(*args, **kwargs)
