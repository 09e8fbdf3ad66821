"""Inference defaults that light modules (the CLI's parsers, the BIDS tasks) need without importing torch."""

from __future__ import annotations

#: LR sliding-window side of the SR network: a whole slice of any usual matrix in one pass. The network sees
#: far past a window's edge, so 64-pixel windows disagreed where they met: seams across 128-pixel slices
#: (session 51)
SR_ROI_SIZE = 256
#: the smallest LR window every SR entry point (mtsr super-resolve, mtsr bids, the bundle's inferer) accepts
MIN_ROI_SIZE = 8

__all__ = ["MIN_ROI_SIZE", "SR_ROI_SIZE"]
