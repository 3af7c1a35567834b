"""config/metric3d.rviz: parses as YAML, and shows per camera of config/depth.yaml the node's depth image,
cloud and normals topics (named as the node names them: ``ros.publishers.output_topics``), subscribed with
a reliability the node's outputs serve, with the first camera's optical frame as the fixed frame; and the
fused cloud ``fused_points``, off."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros  # the node's topic naming lives in ros/publishers.py (rclpy messages)

REPO = Path(__file__).resolve().parents[2]
DISPLAY_CLASS = {'depth': 'rviz_default_plugins/Image', 'points': 'rviz_default_plugins/PointCloud2',
                 'normals': 'rviz_default_plugins/Image'}


def _cameras() -> list[str]:
    params = yaml.safe_load((REPO / 'config' / 'depth.yaml').read_text())
    return params['/**']['ros__parameters']['cameras']


def _displays(displays: list[dict]) -> list[dict]:
    """Every display, groups flattened."""
    out = []
    for display in displays:
        out.append(display)
        out.extend(_displays(display.get('Displays', [])))
    return out


def test_rviz_config_shows_every_camera_of_the_default_params():
    from metric3d_ros.core.outputs import OUTPUTS
    from metric3d_ros.ros.fused import FUSED_TOPIC
    from metric3d_ros.ros.params import SPECS
    from metric3d_ros.ros.publishers import output_topics

    rviz = yaml.safe_load((REPO / 'config' / 'metric3d.rviz').read_text())
    manager = rviz['Visualization Manager']
    cameras = _cameras()
    assert manager['Global Options']['Fixed Frame'] == f'{cameras[0]}_optical_frame'
    displays = _displays(manager['Displays'])
    by_topic = {d['Topic']['Value']: d for d in displays if isinstance(d.get('Topic'), dict)}
    node_topics = {f'/{topic}' for cam in cameras for topic in output_topics(cam, OUTPUTS).values()}
    node_topics.add(f'/{FUSED_TOPIC}')  # one camera group: <ns>/fused_points
    assert set(by_topic) <= node_topics, set(by_topic) - node_topics
    output_reliability = SPECS['qos.output.reliability'].default
    reliability = {'reliable': 'Reliable', 'best_effort': 'Best Effort'}[output_reliability]
    for cam in cameras:
        topics = output_topics(cam, OUTPUTS)
        for key, cls in DISPLAY_CLASS.items():
            display = by_topic.get(f'/{topics[key]}')
            assert display is not None, f'no display of /{topics[key]}'
            assert display['Class'] == cls
            # a reliable subscriber gets nothing from a best-effort publisher: subscribe as the node publishes
            assert display['Topic']['Reliability Policy'] in (reliability, 'Best Effort')
        assert by_topic[f'/{topics["depth"]}']['Enabled'] and by_topic[f'/{topics["points"]}']['Enabled']
        # RViz 2's Image display cannot show 32FC3: the normals display is there but off
        assert OUTPUTS['normals'].encoding == '32FC3'
        assert by_topic[f'/{topics["normals"]}']['Enabled'] is False
    # the fused cloud (issue 17): off (it subscribes, and costs the node work, only when enabled), coloured by
    # the point's camera index field
    fused = by_topic[f'/{FUSED_TOPIC}']
    assert fused['Class'] == 'rviz_default_plugins/PointCloud2' and fused['Enabled'] is False
    assert fused['Color Transformer'] == 'Intensity' and fused['Channel Name'] == 'camera'
    assert fused['Topic']['Reliability Policy'] in (reliability, 'Best Effort')


def test_setup_installs_the_rviz_config():
    assert "glob('config/*.rviz')" in (REPO / 'setup.py').read_text()
