"""Clinical-protocol restoration: routine thick-slice scans -> one target grid -> fused attention U-Net.

Pipeline of :func:`restore_clinical` (used by ``mtsr clinical-sr``):

1. load each routine scan on its own grid (raw headers, oblique slabs: all geometry stays in SimpleITK
   physical space);
2. the target grid: the grid of ``like`` or an isotropic ``spacing`` grid covering the reference scan's
   field of view (reference = FLAIR if given, else T1, else T2), axis-aligned with that scan's direction
   cosines so an oblique slab stays oblique;
3. rigid registration of every other sequence to the reference (intra-subject; the scanner header is the
   starting point), then resampling onto the target grid with the chosen interpolation;
4. per sequence robust scaling to [0, 1]; missing sequences of the fused model are zero-filled;
5. ``method="model"``: slice-wise (or sliding-window patch) inference along a plane that contains the thick
   direction of the input; the output is mapped back to the sequence's intensity scale;
6. one volume per input sequence, named after it (``t1.nii.gz`` ...), written atomically on the target grid.
The interpolation methods ``trilinear`` / ``bspline`` / ``sinc`` stop after step 4 (the paper's baselines).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

METHODS = ("model", "trilinear", "bspline", "sinc")


# --------------------------------------------------------------------------------------- network side
def _slices_to_batch(volume: np.ndarray, axis: int, start: int, stop: int) -> torch.Tensor:
    """(C, X, Y, Z) -> (n, C, h, w) slices ``start:stop`` along spatial ``axis``."""
    part = np.take(volume, np.arange(start, stop), axis=axis + 1)  # C, ..., n at axis
    part = np.moveaxis(part, axis + 1, 0)  # n, C, h, w
    return torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))


@torch.no_grad()
def restore_volume(
    network: torch.nn.Module,
    volume: np.ndarray,
    axis: int,
    batch_size: int = 8,
    patch_size: int | None = None,
    overlap: float = 0.25,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "restoring",
) -> np.ndarray:
    """Run a 2D same-size network over a (C, X, Y, Z) volume in [0, 1], slice by slice along ``axis``.

    ``patch_size``: sliding-window inference with ``patch_size`` square patches (Gaussian-weighted stitching,
    MONAI ``sliding_window_inference``); None: full slices (the network pads them itself).
    Slices with no signal at all are passed through (zeros).
    """
    from tqdm import tqdm

    network.eval()
    device = torch.device(device)
    volume = np.asarray(volume, dtype=np.float32)
    out = np.zeros_like(volume)
    n = volume.shape[axis + 1]
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        stop = min(start + batch_size, n)
        x = _slices_to_batch(volume, axis, start, stop).to(device)
        keep = x.flatten(1).amax(1) > 0
        y = torch.zeros_like(x)
        if keep.any():
            xs = x[keep]
            if patch_size:
                from monai.inferers import sliding_window_inference

                roi = (int(patch_size), int(patch_size))
                y[keep] = sliding_window_inference(xs, roi, len(xs), network, overlap=overlap, mode="gaussian")
            else:
                y[keep] = network(xs)
        y_np = np.moveaxis(y.float().cpu().numpy(), 0, axis + 1)
        index = [slice(None)] * 4
        index[axis + 1] = slice(start, stop)
        out[tuple(index)] = y_np
    return out


def slice_axis_for(thick_axis: int) -> int:
    """The array axis to cut 2D slices along so that each slice contains the thick (blurred) axis:
    axial (2) slices for a thick x or y, coronal (1) slices for a thick z."""
    return 1 if thick_axis == 2 else 2


def volume_metrics(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Brain-masked MAE, NMSE, PSNR (data range 1) and 3D SSIM averaged over channels."""
    from mtsr_monai.metrics.image import mae, nmse, psnr, ssim

    rows = []
    for c in range(pred.shape[0]):
        p, r = np.asarray(pred[c], np.float32), np.asarray(ref[c], np.float32)
        m = np.asarray(mask, bool)
        rows.append(
            {
                "mae": mae(p, r, m),
                "nmse": nmse(p, r, m),
                "psnr": psnr(p, r, m, 1.0),
                "ssim": ssim(p, r, m, 1.0),
            }
        )
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


class ClinicalValidation:
    """Ignite handler: every ``interval`` epochs, restore held-out volumes and log brain MAE/NMSE/PSNR/SSIM
    (and those of the interpolated input, the trilinear baseline, once); keep the best generator weights
    (by PSNR) in ``best_path`` as a plain fp32 state dict."""

    def __init__(
        self,
        pairs: Sequence[Mapping[str, Any]],
        network: torch.nn.Module,
        axis: int = 2,
        interval: int = 1,
        best_path: str | Path | None = None,
        log_dir: str | Path | None = None,
        patch_size: int | None = None,
        batch_size: int = 8,
    ) -> None:
        self.pairs, self.network, self.axis, self.interval = list(pairs), network, int(axis), int(interval)
        self.best_path = Path(best_path) if best_path else None
        self.log_dir, self.patch_size, self.batch_size = log_dir, patch_size, batch_size
        self.best = -np.inf
        self.baseline: dict[str, float] | None = None
        self.history: list[dict[str, Any]] = []
        self._writer = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if self.pairs:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def evaluate(self, device: str | torch.device = "cpu") -> dict[str, float]:
        rows = []
        for p in self.pairs:
            pred = restore_volume(
                self.network, p["lr"], self.axis, self.batch_size, self.patch_size, device=device
            )
            rows.append(volume_metrics(pred, p["hr"], p["mask"]))
        self.network.train()
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    def __call__(self, engine) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        if self.baseline is None:
            rows = [volume_metrics(np.asarray(p["lr"]), p["hr"], p["mask"]) for p in self.pairs]
            self.baseline = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            logger.info("validation, interpolated input: %s", self.baseline)
        metrics = self.evaluate(engine.state.device)
        engine.state.metrics.update({f"val_{k}": v for k, v in metrics.items()})
        self.history.append({"epoch": engine.state.epoch, "iteration": engine.state.iteration, **metrics})
        logger.info("validation epoch %d: %s (input: %s)", engine.state.epoch, metrics, self.baseline)
        if self.log_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = self._writer or SummaryWriter(str(self.log_dir))
            for k, v in metrics.items():
                self._writer.add_scalar(f"val/{k}", v, engine.state.iteration)
                self._writer.add_scalar(f"val/{k}_interpolated", self.baseline[k], engine.state.iteration)
            self._writer.flush()
        if self.best_path and metrics["psnr"] > self.best:
            self.best = metrics["psnr"]
            from mtsr_monai.io import atomic_output

            self.best_path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
            with atomic_output(self.best_path) as tmp:
                torch.save(state, tmp)
