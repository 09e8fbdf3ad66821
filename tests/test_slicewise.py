"""Slice-by-slice inference runs the network on the slices holding signal only, in batches."""

import numpy as np
import torch

from mtsr_monai.inference.slicewise import busy_batches, busy_slices


def test_only_slices_with_signal_are_batched_in_order():
    slices = np.zeros((7, 4, 4), np.float32)
    slices[[1, 2, 5], 1, 1] = 0.5
    assert [b.tolist() for b in busy_batches(slices, batch_size=2)] == [[1, 2], [5]]


def test_background_level_and_torch_tensors():
    slices = torch.full((4, 3, 3), -1.0)
    slices[2, 0, 0] = 0.0
    assert busy_slices(slices, background=-1.0).tolist() == [2]
    assert list(busy_batches(torch.zeros(3, 2, 2), batch_size=8)) == []
