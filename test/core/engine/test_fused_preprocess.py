"""fused_preprocess: the one-kernel ``device_exact`` letterbox + normalization
(``Preprocessor.fill_normalized``) against the torch path (``Preprocessor.fill`` + ``normalize_``), and the
CPU keeping the torch path.

Tolerance (fused_preprocess.py docstring, docs/BENCHMARKS.md 2026-11-22): bit-identical batches, for frames
scaled down and up, odd sizes, a frame already of the network size, 1x1 and very thin frames, several groups
of frame sizes in one batch.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metric3d_ros.core.engine import fused_preprocess
from metric3d_ros.core.engine.preprocess import Preprocessor
from metric3d_ros.core.geometry.letterbox import compute_letterbox

NET_HW = (616, 1064)

# each case: (frame size, frame count) per group of one batch
CASES = {
    '8x720p': [((720, 1280), 8)],
    '1x720p': [((720, 1280), 1)],
    'camera_mix': [((1080, 1920), 1), ((720, 1280), 2), ((480, 640), 1)],
    'odd_123x457': [((123, 457), 3)],
    'upscaled_300x200': [((300, 200), 2)],
    'network_size': [((616, 1064), 1)],
    '1x1_and_2000x33': [((1, 1), 1), ((2000, 33), 1)],
}


def test_fused_preprocessing_is_cuda_only_and_the_cpu_keeps_the_torch_path():
    assert fused_preprocess.available('cpu') is False
    pre = Preprocessor((56, 84), torch.device('cpu'), 'device_exact')
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    lb = compute_letterbox(30, 40, 56, 84)
    staged = pre.stage([image], [lb], [(0, 1)])
    batch = torch.full((1, 3, 56, 84), 7.0)
    assert pre.fill_normalized(batch, staged, [lb], [(0, 1)]) is False
    assert torch.all(batch == 7.0)  # nothing written: the engine then runs fill + normalize_


@pytest.mark.cuda
@pytest.mark.parametrize('case', sorted(CASES))
def test_fused_preprocessing_is_bit_identical_to_the_torch_path_on_cuda(case):
    assert fused_preprocess.available('cuda')
    dev = torch.device('cuda')
    pre = Preprocessor(NET_HW, dev, 'device_exact')
    rng = np.random.default_rng(sorted(CASES).index(case))
    images, groups = [], []
    for (h, w), count in CASES[case]:
        groups.append((len(images), len(images) + count))
        images += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]
    letterboxes = [compute_letterbox(im.shape[0], im.shape[1], *NET_HW) for im in images]
    staged = pre.stage(images, letterboxes, groups)
    ref = torch.empty((len(images), 3, *NET_HW), device=dev)
    pre.fill(ref, staged, letterboxes, groups)
    pre.normalize_(ref)
    fused = torch.full_like(ref, float('nan'))  # every element must be written
    assert pre.fill_normalized(fused, staged, letterboxes, groups) is True
    torch.cuda.synchronize()
    assert torch.equal(fused, ref)


@pytest.mark.cuda
def test_fused_preprocessing_leaves_a_non_contiguous_batch_to_the_torch_path_on_cuda():
    dev = torch.device('cuda')
    pre = Preprocessor((56, 84), dev, 'device_exact')
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    lb = compute_letterbox(30, 40, 56, 84)
    staged = pre.stage([image], [lb], [(0, 1)])
    batch = torch.full((1, 3, 56, 84), 7.0, device=dev).contiguous(memory_format=torch.channels_last)
    assert pre.fill_normalized(batch, staged, [lb], [(0, 1)]) is False
    assert torch.all(batch == 7.0)
