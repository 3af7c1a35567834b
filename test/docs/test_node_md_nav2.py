"""docs/NODE.md's Nav2 recipe: its two YAML blocks (the depth node's params, the costmap's observation
sources) parse; the costmap reads each camera's cloud topic as the node names it (``output_topics``) for
the cameras the node's block lists, as PointCloud2; the node's block keeps the output QoS defaults."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros  # the node's topic naming lives in ros/publishers.py (rclpy messages)

NODE_MD = Path(__file__).resolve().parents[2] / 'docs' / 'NODE.md'


def _recipe_blocks() -> tuple[dict, dict]:
    text = NODE_MD.read_text()
    section = text.split('## RViz 2 and Nav2', 1)[1].split('\n## ', 1)[0]
    blocks = [yaml.safe_load(b) for b in re.findall(r'```yaml\n(.*?)```', section, flags=re.S)]
    node = next(b for b in blocks if '/**' in b)
    costmap = next(b for b in blocks if 'local_costmap' in b)
    return node, costmap


def test_nav2_recipe_reads_every_cloud_of_the_node():
    from metric3d_ros.core.outputs import OUTPUTS
    from metric3d_ros.ros.params import SPECS
    from metric3d_ros.ros.publishers import output_topics

    node, costmap = _recipe_blocks()
    params = node['/**']['ros__parameters']
    cameras = params['cameras']
    assert cameras
    assert params['qos']['output']['reliability'] == SPECS['qos.output.reliability'].default == 'reliable'
    assert params['qos']['output']['depth'] == SPECS['qos.output.depth'].default
    for name in ('cloud_stride', 'max_depth_m'):
        assert name in SPECS
    layers = costmap['local_costmap']['local_costmap']['ros__parameters']
    layer = next(v for k, v in layers.items() if isinstance(v, dict) and 'observation_sources' in v)
    sources = layer['observation_sources'].split()
    assert sources == cameras
    for cam in cameras:
        source = layer[cam]
        assert source['topic'] == f'/{output_topics(cam, OUTPUTS)["points"]}'
        assert source['data_type'] == 'PointCloud2'
        assert source['marking'] is True
        assert source['obstacle_max_range'] <= params['max_depth_m']
