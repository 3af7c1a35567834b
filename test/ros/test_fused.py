"""ros/fused.py without a node: the tf2 path through a buffer stand-in (lookup_transform(target, source,
time, timeout) raising its own exception class for a missing transform), the stamp policy, counting and
throttled logs, and no work at all without a subscriber."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip('rclpy')

from metric3d_ros.codec.cloud import read_pointcloud2_cdr  # noqa: E402
from metric3d_ros.core.batching import reasons  # noqa: E402
from metric3d_ros.core.engine.types import FrameResult, OutputRequest  # noqa: E402
from metric3d_ros.core.geometry.fusion import (  # noqa: E402
    CameraDepth,
    FusionConfig,
    RigidTransform,
    fuse_depths,
)
from metric3d_ros.core.geometry.intrinsics import Intrinsics  # noqa: E402
from metric3d_ros.ros.fused import (  # noqa: E402
    ExtrinsicMissing,
    FusedOutput,
    StaticExtrinsics,
    TfExtrinsics,
    make_extrinsics,
    with_depth,
)
from metric3d_ros.ros.params import FusedSettings, OutputConfig  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('isolated_ros_env')]

CAMERAS = ('front', 'left', 'rear')
INTR = Intrinsics(20.0, 20.0, 15.5, 11.5)
POSES = {'front_optical': RigidTransform((0.3, 0.0, 1.0), (-0.5, 0.5, -0.5, 0.5)),
         'left_optical': RigidTransform((0.0, 0.2, 1.0), (-0.7071067811865476, 0.0, 0.0, 0.7071067811865476))}
MS = 1_000_000


class TransformMissing(Exception):
    """The stand-in's "no such transform" (tf2_ros.LookupException / ExtrapolationException)."""


class FakeBuffer:
    """tf2_ros.Buffer's lookup_transform: known child frames give their pose, others raise."""

    def __init__(self, poses):
        self.poses = dict(poses)
        self.calls = []

    def lookup_transform(self, target_frame, source_frame, time, timeout):
        self.calls.append((target_frame, source_frame, time.nanoseconds, timeout.nanoseconds))
        pose = self.poses.get(source_frame)
        if pose is None:
            raise TransformMissing(f'"{source_frame}" passed to lookupTransform argument source_frame does '
                                   'not exist')
        t, q = pose.translation_m, pose.rotation_xyzw
        return SimpleNamespace(transform=SimpleNamespace(
            translation=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
            rotation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])))


class FakePublisher:
    def __init__(self, subscribers=1):
        self.subscribers = subscribers
        self.sent = []

    def get_subscription_count(self):
        return self.subscribers

    def publish(self, data):
        self.sent.append(data)


def _settings(**fusion):
    return FusedSettings(FusionConfig(stride=2, **fusion), 'tf', 5.0, {},
                         {cam: i for i, cam in enumerate(CAMERAS)})


def _output(buffer, publisher, settings=None, throttle_s=60.0, clock=time.monotonic_ns):
    errors, warnings = [], []
    settings = settings or _settings()
    extrinsics = TfExtrinsics(buffer, settings.fusion.base_frame, settings.tf_timeout_ms,
                              missing_errors=(TransformMissing,))
    out = FusedOutput(publisher, settings, extrinsics, 'cpu', log_error=errors.append,
                      log_warning=warnings.append, log_throttle_s=throttle_s, topic='/robot/fused_points',
                      monotonic_ns=clock)
    return out, errors, warnings


def _depth(seed):
    return np.random.default_rng(seed).uniform(1.0, 4.0, (24, 32)).astype(np.float32)


def _batch(stamps, frame_ids=None, ok=None):
    """Items (frame, job) and results of one batch of CAMERAS[:len(stamps)]."""
    items, results = [], []
    for i, stamp in enumerate(stamps):
        cam = CAMERAS[i]
        frame_id = frame_ids[i] if frame_ids else f'{cam}_optical'
        frame = SimpleNamespace(image_rgb=np.zeros((24, 32, 3), np.uint8))
        items.append((frame, SimpleNamespace(camera_id=cam, stamp_ns=stamp, frame_id=frame_id)))
        if ok is None or ok[i]:
            results.append(FrameResult(cam, stamp, frame_id, INTR, {'depth_m': _depth(i)}))
        else:
            results.append(FrameResult(cam, stamp, frame_id, error='out of memory'))
    return items, results


def test_tf_lookup_at_the_image_stamp_into_the_base_frame():
    buffer, publisher = FakeBuffer(POSES), FakePublisher()
    out, errors, _ = _output(buffer, publisher)
    out.publish_batch(*_batch([1000 * MS, 1010 * MS]))
    assert buffer.calls == [('base_link', 'front_optical', 1000 * MS, 5 * MS),
                            ('base_link', 'left_optical', 1010 * MS, 5 * MS)]
    assert len(publisher.sent) == 1 and not errors
    cloud = read_pointcloud2_cdr(publisher.sent[0])
    assert cloud.stamp_ns == 1010 * MS and cloud.frame_id == 'base_link'  # the batch's newest stamp
    want = fuse_depths([CameraDepth(0, _depth(0), INTR, POSES['front_optical']),
                        CameraDepth(1, _depth(1), INTR, POSES['left_optical'])], FusionConfig(stride=2))
    np.testing.assert_array_equal(cloud.xyz[0], want.xyz)
    np.testing.assert_array_equal(cloud.channels['camera'][0], want.camera_index)
    report = out.report()
    assert report['fused_published'] == '1' and report['fused_points_last'] == str(len(want))
    assert report['fused_omitted'] == '' and report['fused_subscribed'] == 'true'


def test_rgb_colours_come_from_each_frame_image():
    buffer, publisher = FakeBuffer(POSES), FakePublisher()
    out, errors, _ = _output(buffer, publisher, _settings(rgb=True))
    items, results = _batch([1000 * MS, 1000 * MS])
    for index, (frame, _) in enumerate(items):
        frame.image_rgb[:] = (10 * (index + 1), 20, 30)
    out.publish_batch(items, results)
    cloud = read_pointcloud2_cdr(publisher.sent[0])
    camera = cloud.channels['camera'][0]
    assert not errors and cloud.rgb is not None and set(np.unique(camera)) == {0, 1}
    for index, red in ((0, 10), (1, 20)):
        colours = cloud.rgb[0][camera == index]
        assert len(colours) and (colours == [red, 20, 30]).all()


def test_missing_transform_is_counted_every_time_and_logged_once_per_period():
    buffer, publisher = FakeBuffer(POSES), FakePublisher()
    now = [0]
    out, errors, _ = _output(buffer, publisher, throttle_s=5.0, clock=lambda: now[0])
    for k in range(5):  # rear_optical is on no tf tree
        out.publish_batch(*_batch([(1000 + k) * MS] * 3))
    assert out.omitted() == {('rear', reasons.TRANSFORM_MISSING): 5}
    assert len(errors) == 1
    assert errors[0].startswith('camera rear: left out of /robot/fused_points, transform_missing: no '
                                'transform base_link <- rear_optical at stamp 1.000000')
    assert 'does not exist' in errors[0] and 'is it on /tf or /tf_static?' in errors[0]
    # the other cameras are still fused
    assert len(publisher.sent) == 5
    assert set(np.unique(read_pointcloud2_cdr(publisher.sent[-1]).channels['camera'])) == {0, 1}
    now[0] += 5_000_000_000  # one period later
    out.publish_batch(*_batch([1010 * MS] * 3))
    assert len(errors) == 2 and errors[1].endswith('[4 similar not logged]')
    assert out.report()['fused_omitted_transform_missing'] == '6'
    assert out.report()['fused_omitted'] == 'rear:transform_missing=6'


def test_empty_frame_id_stale_camera_and_failed_inference_are_left_out_and_counted():
    buffer, publisher = FakeBuffer(POSES), FakePublisher()
    out, errors, warnings = _output(buffer, publisher, _settings(stamp_tolerance_ms=20.0))
    out.publish_batch(*_batch([1000 * MS, 1000 * MS], frame_ids=['front_optical', '']))
    assert "camera 'left': the image has an empty frame_id" in errors[0]
    out.publish_batch(*_batch([1100 * MS, 1050 * MS]))  # left 50 ms behind, tolerance 20 ms
    assert 'fused_stale: stamp 1.050000 is 50.0 ms before the batch\'s newest image' in warnings[0]
    out.publish_batch(*_batch([1200 * MS, 1200 * MS], ok=[True, False]))
    assert 'fused_no_depth: out of memory' in warnings[1]
    assert out.omitted() == {('left', reasons.TRANSFORM_MISSING): 1, ('left', reasons.FUSED_STALE): 1,
                             ('left', reasons.FUSED_NO_DEPTH): 1}
    assert len(publisher.sent) == 3  # front alone each time
    for data in publisher.sent:
        assert set(np.unique(read_pointcloud2_cdr(data).channels['camera'])) == {0}
    assert [read_pointcloud2_cdr(d).stamp_ns for d in publisher.sent] == [1000 * MS, 1100 * MS, 1200 * MS]


def test_no_subscriber_costs_nothing():
    buffer, publisher = FakeBuffer(POSES), FakePublisher(subscribers=0)
    out, errors, warnings = _output(buffer, publisher)
    items, results = _batch([1000 * MS, 1000 * MS, 1000 * MS])
    out.publish_batch(items, results)
    assert buffer.calls == [] and publisher.sent == [] and not errors and not warnings
    assert out.report()['fused_published'] == '0' and out.report()['fused_subscribed'] == 'false'
    out.publisher = None  # destroyed (deactivate): not wanted either
    assert not out.wanted()


def test_invalid_transform_from_tf_is_a_missing_one():
    bad = RigidTransform()
    object.__setattr__(bad, 'rotation_xyzw', (0.0, 0.0, 0.0, 0.0))  # a zero quaternion on /tf
    buffer = FakeBuffer({'front_optical': bad})
    extrinsics = TfExtrinsics(buffer, 'base_link', missing_errors=(TransformMissing,))
    with pytest.raises(ExtrinsicMissing, match='transform base_link <- front_optical is invalid'):
        extrinsics.lookup('front', 'front_optical', 5)


def test_static_extrinsics_and_depth_requests():
    settings = FusedSettings(FusionConfig(), 'static', 0.0, {'front': POSES['front_optical']}, {'front': 0})
    extrinsics, listener = make_extrinsics(None, settings)
    assert listener is None and isinstance(extrinsics, StaticExtrinsics)
    assert extrinsics.lookup('front', 'whatever', 1) == POSES['front_optical']
    with pytest.raises(ExtrinsicMissing, match="no static extrinsics for camera 'left'"):
        extrinsics.lookup('left', 'left_optical', 1)
    outputs = OutputConfig(resolution='network', min_depth_m=0.5, max_depth_m=40.0)
    alone = with_depth(None, outputs)
    assert alone == OutputRequest(outputs=frozenset({'depth'}), resolution='network', min_depth_m=0.5,
                                  max_depth_m=40.0)
    normals = OutputRequest(outputs=frozenset({'normals'}), cloud_stride=4)
    assert with_depth(normals, outputs) == OutputRequest(outputs=frozenset({'normals', 'depth'}),
                                                         cloud_stride=4)
    assert with_depth(alone, outputs) is alone
