"""Network conformance: synthetic weights + upstream reference outputs (../shared/reference/metric3d).

For every reference file the network, loaded strictly with the synthetic checkpoint, maps the normalized
``input_u8`` to depth, confidence and normal that meet the README criterion: >= 99.9 % of elements within
1e-3 + 1e-3 |ref| and no element off by more than 1 % of the reference tensor's range.
Measured agreement is printed per tensor (``pytest -s`` shows it).
"""
from __future__ import annotations

import gc
import time

import numpy as np
import pytest
import torch
from model_refs import agreement, load_reference, meets_criterion, synthetic_network

from metric3d_ros.core.model.specs import get_spec

# (reference file, marks): heavy cases carry the slow marker but run in CI
CASES = [
    pytest.param('ref_vit_small_b2_280x392', id='small_b2_280x392'),
    pytest.param('ref_vit_small_b1_616x1064', id='small_616x1064_nyu', marks=pytest.mark.slow),
    pytest.param('ref_vit_small_b1_616x1064_kitti', id='small_616x1064_kitti', marks=pytest.mark.slow),
    pytest.param('ref_vit_large_b1_280x392', id='large_280x392', marks=pytest.mark.slow),
    pytest.param('ref_vit_giant2_b1_140x196', id='giant2_140x196', marks=pytest.mark.slow),
]


class OneNetwork:
    """Holds the synthetic network of one variant at a time (giant2 alone is 5.5 GB)."""

    def __init__(self, shared_dir) -> None:
        self.shared_dir = shared_dir
        self.variant: str | None = None
        self.net = None

    def get(self, variant: str):
        if variant != self.variant:
            self.release()
            self.net = synthetic_network(self.shared_dir, variant)
            self.variant = variant
        return self.net

    def release(self) -> None:
        self.net, self.variant = None, None
        gc.collect()


@pytest.fixture(scope='module')
def networks(shared_dir):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    holder = OneNetwork(shared_dir)
    yield holder
    holder.release()


@pytest.mark.parametrize('name', CASES)
def test_network_matches_upstream_reference(name, shared_dir, networks):
    ref = load_reference(shared_dir, name)
    spec = get_spec(ref.variant)
    net = networks.get(ref.variant)
    x = torch.from_numpy(ref.network_input())
    start = time.perf_counter()
    with torch.inference_mode():
        depth, confidence, normal = net(x)
    seconds = time.perf_counter() - start

    batch, height, width = ref.arrays['input_u8'].shape[:3]
    assert depth.shape == (batch, 1, height, width)
    assert confidence.shape == (batch, 1, height, width)
    assert normal.shape == (batch, 4, height, width)

    results = {}
    for key, ours in (('depth', depth), ('confidence', confidence), ('normal', normal)):
        if key in ref.arrays:
            results[key] = agreement(ours, ref.arrays[key])
    assert 'depth' in results
    report = ', '.join(f'{k}: {100 * f:.4f} % ok, max diff {r:.2e} of range' for k, (f, r) in results.items())
    print(f'\n[{name}] {spec.name}, forward {seconds:.1f} s '
          f'(upstream {ref.meta.get("forward_seconds_cpu_2threads")} s): {report}')
    failing = {k: v for k, v in results.items() if not meets_criterion(*v)}
    assert not failing, f'{name}: outside the criterion: {failing}'
    # depth stays in upstream's clamp range
    assert float(depth.min()) >= spec.decoder.min_depth - 1e-6
    assert float(depth.max()) <= spec.decoder.max_depth + 1e-4
    # normals are unit vectors, kappa >= 0.01
    xyz = normal[:, :3].double()
    assert np.allclose(xyz.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert float(normal[:, 3].min()) >= 0.01 - 1e-6
