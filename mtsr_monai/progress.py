"""Progress of long work made of named stages (a qc run, a subject's preprocessing, the demo): a tqdm bar on
stderr that advances per stage and names the stage now running, so a minute inside one step does not look
like a hang. Light: tqdm only."""

from __future__ import annotations

from typing import Any

__all__ = ["StageBar"]


class StageBar:
    """``bar.next("tissue segmentation")`` finishes the running stage (if any) and shows the new one;
    ``close()`` (or leaving the ``with`` block) finishes the last. ``enabled=False`` prints nothing."""

    def __init__(self, total: int, desc: str, enabled: bool = True, unit: str = "stage") -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=True)
        self._running = False

    def next(self, stage: str) -> None:
        if self._running:
            self._bar.update(1)
        self._bar.set_postfix_str(stage, refresh=True)
        self._running = True

    def skip(self, steps: int, note: str = "") -> None:
        """Advance ``steps`` stages at once (work already done, e.g. a subject skipped)."""
        if self._running:
            self._bar.update(1)
            self._running = False
        self._bar.update(steps)
        if note:
            self._bar.set_postfix_str(note, refresh=True)

    def close(self) -> None:
        if self._running:
            self._bar.update(1)
            self._running = False
        self._bar.close()

    def __enter__(self) -> StageBar:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:  # the running stage failed: not counted as done
            self._running = False
        self.close()
