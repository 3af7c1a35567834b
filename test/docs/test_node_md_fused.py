"""docs/NODE.md's fused point cloud section: its params block is a valid configuration of the node (every
key a parameter, the static extrinsics complete and right), and its Nav2 block reads fused_points as a
PointCloud2 with the node's height band and range."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros  # the parameters live in ros/params.py (rclpy descriptors)

NODE_MD = Path(__file__).resolve().parents[2] / 'docs' / 'NODE.md'


def _blocks() -> tuple[dict, dict]:
    section = NODE_MD.read_text().split('## Fused point cloud', 1)[1].split('\n## ', 1)[0]
    blocks = [yaml.safe_load(b) for b in re.findall(r'```yaml\n(.*?)```', section, flags=re.S)]
    node = next(b for b in blocks if '/**' in b)
    costmap = next(b for b in blocks if 'local_costmap' in b)
    return node, costmap


def _flatten(prefix: str, mapping: dict):
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _flatten(f'{prefix}{key}.', value)
        else:
            yield f'{prefix}{key}', value


def test_fused_params_block_configures_the_node():
    from metric3d_ros.ros.params import SPECS, config_from_values

    node, _ = _blocks()
    values = dict(_flatten('', node['/**']['ros__parameters']))
    assert [k for k in values if k not in SPECS and not k.startswith('extrinsics.')] == []
    config = config_from_values(values)
    fused = config.fused
    assert fused is not None and fused.source == 'static' and set(fused.static) == set(config.cameras)
    # the comments say where each camera looks: front along base_link x, left along y
    np.testing.assert_allclose(fused.static['front'].rotation_matrix()[:, 2], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(fused.static['left'].rotation_matrix()[:, 2], [0, 1, 0], atol=1e-6)


def test_nav2_block_reads_fused_points_with_the_node_band():
    node, costmap = _blocks()
    fused = node['/**']['ros__parameters']['fused']
    layers = costmap['local_costmap']['local_costmap']['ros__parameters']
    layer = next(v for v in layers.values() if isinstance(v, dict) and 'observation_sources' in v)
    (name,) = layer['observation_sources'].split()
    source = layer[name]
    assert source['topic'].endswith('/fused_points') and source['data_type'] == 'PointCloud2'
    assert source['sensor_frame'] == fused.get('base_frame', 'base_link')
    assert source['min_obstacle_height'] == fused['min_height_m']
    assert source['max_obstacle_height'] == fused['max_height_m']
    assert source['obstacle_max_range'] <= fused['max_range_m']
