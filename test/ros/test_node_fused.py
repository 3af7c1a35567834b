"""The depth node's fused_points (issue 17) over Fast DDS, in both process layouts: the fused cloud of a batch
equals its cameras' depth images fused with the static extrinsics, a camera beyond the stamp tolerance is
left out and counted (not dropped), and the output costs nothing without a subscriber."""
from __future__ import annotations

import numpy as np
import pytest
from node_support import (
    Harness,
    assert_accounted,
    publish_until,
    rgb_image,
    ros_env,
    snapshots,
    stamp_ns_of,
    start_node,
    unique_namespace,
    wait_until,
)

from metric3d_ros.codec.cloud import pointcloud2_from_msg
from metric3d_ros.core.geometry.fusion import CameraDepth, FusionConfig, RigidTransform, fuse_depths
from metric3d_ros.core.geometry.intrinsics import Intrinsics

pytestmark = pytest.mark.ros

CAMERAS = {'front': (160, 120), 'left': (120, 80)}  # width, height
POSES = {'front': RigidTransform((0.2, 0.0, 1.0), (-0.5, 0.5, -0.5, 0.5)),   # looking along x
         'left': RigidTransform((0.0, 0.1, 1.0), (-0.7071067811865476, 0.0, 0.0, 0.7071067811865476))}
STRIDE = 3


@pytest.fixture(scope='module')
def harness():
    env = ros_env(23)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('fused'))
    yield h
    h.close()


def _fused_params(**extra):
    values = {'fused.enabled': True, 'fused.stride': STRIDE, 'fused.stamp_tolerance_ms': 50.0,
              'max_wait_ms': 500.0}  # a batch waits for both cameras (the stale check needs them together)
    for cam, pose in POSES.items():
        values[f'extrinsics.{cam}.parent_frame'] = 'base_link'
        values[f'extrinsics.{cam}.translation_m'] = list(pose.translation_m)
        values[f'extrinsics.{cam}.rotation_xyzw'] = list(pose.rotation_xyzw)
    return {**values, **extra}


def _fused_report(node) -> dict:
    return node.layout.reports()[0].fused


def _depth(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), dtype='<f4').reshape(msg.height, msg.width)


@pytest.mark.parametrize('layout', ['in_process', 'group_workers'])
def test_fused_cloud_is_the_batch_fused_with_the_extrinsics_and_stale_cameras_are_counted(harness, layout):
    sub_ns = f'fused_{layout}'
    node = start_node(harness, sub_ns, CAMERAS, {cam: ('depth/image',) for cam in CAMERAS},
                      process_layout=layout, **_fused_params())
    from sensor_msgs.msg import PointCloud2

    topic = f'{sub_ns}/fused_points'
    harness.subscribe(PointCloud2, topic)
    assert wait_until(lambda: _fused_report(node).get('fused_subscribed') == 'true', 20.0)
    assert _fused_report(node)['fused_topic'] == f'{harness.namespace}/{sub_ns}/fused_points'

    def both(msg) -> bool:
        return set(np.unique(pointcloud2_from_msg(msg).channels['camera'])) == {0, 1}

    def complete():  # two batches with both cameras (the first frames may go out alone) and their depth
        got = {c: {stamp_ns_of(m) for m in harness.messages(f'{sub_ns}/{c}/depth/image')} for c in CAMERAS}
        return sum(1 for m in harness.messages(topic)
                   if both(m) and all(stamp_ns_of(m) in got[c] for c in CAMERAS)) >= 2

    stamps = publish_until(harness, node, sub_ns, CAMERAS, complete, timeout_s=60.0)
    assert wait_until(complete, 10.0)
    clouds = {stamp_ns_of(m): m for m in harness.messages(topic)}
    depths = {c: {stamp_ns_of(m): m for m in harness.messages(f'{sub_ns}/{c}/depth/image')} for c in CAMERAS}
    checked = 0
    for stamp, msg in clouds.items():
        assert stamp in stamps and msg.header.frame_id == 'base_link' and msg.height == 1
        assert [(f.name, f.offset) for f in msg.fields] == [('x', 0), ('y', 4), ('z', 8), ('camera', 12)]
        cloud = pointcloud2_from_msg(msg)
        present = set(np.unique(cloud.channels['camera']).tolist())
        cams = []
        for index, (cam, (w, h)) in enumerate(CAMERAS.items()):
            if index not in present or stamp not in depths[cam]:
                continue
            intr = Intrinsics(0.8 * w, 0.8 * w, (w - 1) / 2.0, (h - 1) / 2.0)  # node_support's CameraInfo
            cams.append(CameraDepth(index, _depth(depths[cam][stamp]), intr, POSES[cam]))
        if len(cams) != len(present):
            continue  # a depth image still on its way
        want = fuse_depths(cams, FusionConfig(stride=STRIDE))
        np.testing.assert_array_equal(cloud.channels['camera'][0], want.camera_index)
        np.testing.assert_allclose(cloud.xyz[0], want.xyz, rtol=1e-6, atol=1e-6)
        checked += len(cams) == 2
    assert checked >= 2
    # group workers report every diagnostics.period_s
    assert wait_until(lambda: int(_fused_report(node)['fused_published']) >= 2, 10.0)

    # the left camera lags 200 ms behind the front one (front stamped ahead, so that no camera's stamps go
    # back): left is left out of the fused cloud and counted
    harness.clear()
    lagging = []
    for tick in range(4):
        stamp = node.get_clock().now().nanoseconds + 200_000_000
        lagging.append(stamp)
        harness.publish_frame(f'{sub_ns}/front', rgb_image(160, 120, seed=tick), stamp)
        harness.publish_frame(f'{sub_ns}/left', rgb_image(120, 80, seed=tick), stamp - 200_000_000)
        wait_until(lambda n=tick + 1: len(harness.messages(topic)) >= n, 10.0)

    def stale():
        return int(_fused_report(node)['fused_omitted_fused_stale'])

    assert wait_until(lambda: stale() >= 3, 10.0), _fused_report(node)
    late = [m for m in harness.messages(topic) if stamp_ns_of(m) in lagging]
    assert late
    for msg in late:
        assert set(np.unique(pointcloud2_from_msg(msg).channels['camera'])) == {0}
    assert 'left:fused_stale=' in _fused_report(node)['fused_omitted']
    # left out of the cloud is no drop of the camera (its own outputs went out)
    drops = {c: s.drops_total for c, s in snapshots(node).items()}
    assert not any(r.startswith('fused') or r == 'transform_missing' for d in drops.values() for r in d)
    assert_accounted(node)
    harness.unsubscribe(topic)


def test_fused_output_costs_nothing_without_a_subscriber(harness):
    sub_ns = 'fused_idle'
    node = start_node(harness, sub_ns, CAMERAS, {'front': ('depth/image',)}, **_fused_params())
    assert _fused_report(node)['fused_subscribed'] == 'false'

    def done():
        return len(harness.messages(f'{sub_ns}/front/depth/image')) >= 3

    publish_until(harness, node, sub_ns, CAMERAS, done, timeout_s=60.0)
    assert wait_until(done, 10.0)
    assert_accounted(node)
    report = node.layout.reports()[0]
    extras = {snap.camera_id: extra for snap, extra in report.cameras}
    snaps = snapshots(node)
    # left has no subscriber of its own and fused_points has none: never inferred
    assert extras['left'].skipped_no_subscriber == snaps['left'].inputs_total > 0
    assert snaps['left'].outputs_total == 0
    assert extras['left'].idle
    assert report.fused['fused_published'] == '0' and report.fused['fused_omitted'] == ''
    assert 'fused_mean_ms' not in report.timing  # the batch stage did not run
    # and front's request stayed its own (depth only; no output added for the fused cloud)
    group = node.layout.groups[0]
    assert group.outputs('front').wanted_request().request.outputs == frozenset({'depth'})

    # once fused_points has a subscriber, left is inferred for it alone and is not idle any more
    from sensor_msgs.msg import PointCloud2

    topic = f'{sub_ns}/fused_points'
    harness.subscribe(PointCloud2, topic)
    assert wait_until(lambda: _fused_report(node).get('fused_subscribed') == 'true', 20.0)

    def left_fused():
        return any(1 in pointcloud2_from_msg(m).channels['camera'] for m in harness.messages(topic))

    publish_until(harness, node, sub_ns, CAMERAS, left_fused, timeout_s=60.0)
    assert wait_until(left_fused, 10.0)
    report = node.layout.reports()[0]
    assert not {snap.camera_id: extra for snap, extra in report.cameras}['left'].idle
    assert snapshots(node)['left'].outputs_total > 0 and 'fused_mean_ms' in report.timing  # in process
    assert_accounted(node)
    harness.unsubscribe(topic)
