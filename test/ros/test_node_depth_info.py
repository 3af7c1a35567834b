"""What a subscriber to ``<cam>/depth/camera_info`` gets, as docs/NODE.md states it: the depth CameraInfo is
published with every frame whose depth is computed, i.e. when ``depth/image`` or an output that needs the
depth (``points``) has a subscriber; a subscriber to it alone (or beside normals/confidence only) gets
nothing, and alone it costs no inference (the camera is idle, its frames skipped)."""
from __future__ import annotations

import pytest
from node_support import (
    Harness,
    assert_accounted,
    publish_until,
    ros_env,
    snapshots,
    start_node,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

W, H = 96, 72


@pytest.fixture(scope='module')
def harness():
    env = ros_env(49)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('depthinfo'))
    yield h
    h.close()


def test_depth_camera_info_comes_with_the_depth_or_the_cloud_only(harness):
    sub_ns = 'which'
    wanted = {'alone': ('depth/camera_info',),
              'normals': ('depth/camera_info', 'normals/image'),
              'points': ('depth/camera_info', 'points'),
              'depth': ('depth/camera_info', 'depth/image')}
    cams = {cam: (W, H) for cam in wanted}
    node = start_node(harness, sub_ns, cams, wanted)

    def count(cam, out):
        return len(harness.messages(f'{sub_ns}/{cam}/{out}'))

    stamps = publish_until(harness, node, sub_ns, cams, timeout_s=30.0, min_ticks=4, done=lambda: (
        count('points', 'depth/camera_info') >= 3 and count('depth', 'depth/camera_info') >= 3
        and count('normals', 'normals/image') >= 3))
    assert_accounted(node)
    assert count('points', 'depth/camera_info') == count('points', 'points') >= 3
    assert count('depth', 'depth/camera_info') == count('depth', 'depth/image') >= 3
    assert count('normals', 'normals/image') >= 3
    assert count('normals', 'depth/camera_info') == 0
    assert count('alone', 'depth/camera_info') == 0
    snap = snapshots(node)['alone']
    extras = next(e for r in node.layout.reports() for s, e in r.cameras if s.camera_id == 'alone')
    assert extras.idle and snap.outputs_total == 0
    assert wait_until(lambda: next(e for r in node.layout.reports() for s, e in r.cameras
                                   if s.camera_id == 'alone').skipped_no_subscriber == len(stamps), 10.0)
