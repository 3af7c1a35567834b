"""The depth node in process over Fast DDS: per-camera outputs, headers, resolutions, CameraInfo, cloud
layout, 16UC1 and network resolution, and outputs that nobody subscribes to are not computed."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from node_support import (
    Harness,
    assert_accounted,
    camera_info_msg,
    group_of,
    message_at,
    newest_common_stamp,
    publish_ticks,
    publish_until,
    rgb_image,
    ros_env,
    snapshots,
    stamp_ns_of,
    start_node,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

CAMERAS = {'front': (320, 240), 'left': (200, 100), 'rear': (96, 128)}  # width, height
OUTPUTS = ('depth/image', 'depth/camera_info', 'points', 'normals/image', 'confidence/image')


@pytest.fixture(scope='module')
def harness():
    env = ros_env(11)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('outputs'))
    yield h
    h.close()


LAYOUTS = {
    'in_process': dict(process_layout='in_process'),
    'in_process_two_groups': dict(process_layout='in_process', camera_groups=['front rear', 'left']),
    'group_workers': dict(process_layout='group_workers'),
    'in_process_two_in_flight': dict(process_layout='in_process', pipeline_depth=2),
    'group_workers_two_groups': dict(process_layout='group_workers', camera_groups=['front', 'left, rear'],
                                     group_devices=['cpu', 'cpu']),
}


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_three_cameras_of_different_resolutions(harness, layout):
    sub_ns = f'three_{layout}'
    wanted = {cam: OUTPUTS for cam in CAMERAS}
    # max_wait_ms 500: a loaded 2-core machine may deliver a tick's second camera more than FAST_NODE's 30 ms
    # after its first, and the batch must still wait for it (the cross-camera batching asserted below). A
    # batch whose cameras have all arrived goes out at once, so the wait costs nothing otherwise.
    node = start_node(harness, sub_ns, CAMERAS, wanted, cloud_stride=2, cloud_rgb=True, max_wait_ms=500.0,
                      **LAYOUTS[layout])
    groups = len(node.config.groups)
    assert groups == (2 if 'two_groups' in layout else 1)
    if layout.startswith('in_process'):
        assert type(node.engine).__name__ == 'DepthEngine'
    else:
        assert node.engine is None and node.layout.engines() == []  # nothing infers in the node process

    def complete():
        return all(len(harness.messages(f'{sub_ns}/{cam}/{out}')) >= 3 for cam in CAMERAS for out in OUTPUTS)

    stamps = publish_until(harness, node, sub_ns, CAMERAS, complete, timeout_s=60.0)
    wait_until(complete, 10.0)
    counts = {f'{c}/{o}': len(harness.messages(f'{sub_ns}/{c}/{o}')) for c in CAMERAS for o in OUTPUTS}
    assert complete(), f'{counts}; drops {[s.drops_total for s in snapshots(node).values()]}'
    for cam, (w, h) in CAMERAS.items():
        frame_id = f'{sub_ns}/{cam}_optical_frame'
        by_out = {out: harness.messages(f'{sub_ns}/{cam}/{out}') for out in OUTPUTS}
        for out, msgs in by_out.items():
            for msg in msgs:
                assert msg.header.frame_id == frame_id, (cam, out)
                assert stamp_ns_of(msg) in stamps, (cam, out)
            got = [stamp_ns_of(m) for m in msgs]
            assert got == sorted(got) and len(set(got)) == len(got), f'{cam}/{out} not in stamp order'
        # the newest frame every output of this camera has arrived for (a message may still be in flight)
        stamp = newest_common_stamp(harness, [f'{sub_ns}/{cam}/{out}' for out in OUTPUTS])
        depth, info, cloud, normals, conf = (message_at(harness, f'{sub_ns}/{cam}/{out}', stamp)
                                             for out in OUTPUTS)
        assert (depth.encoding, depth.width, depth.height, depth.step) == ('32FC1', w, h, 4 * w)
        depth_m = np.frombuffer(bytes(depth.data), dtype='<f4').reshape(h, w)
        assert np.isfinite(depth_m).all() and (depth_m > 0).all() and (depth_m < 300).all()
        # Camera resolution: the depth CameraInfo is the input one (same size and K/P).
        ref = camera_info_msg(w, h, 0, frame_id)
        assert (info.width, info.height) == (w, h)
        np.testing.assert_allclose(info.k, ref.k, rtol=1e-12)
        np.testing.assert_allclose(info.p, ref.p, rtol=1e-12)
        # Organized xyzrgb cloud, depth_image_proc layout, stride 2, z equals the depth it samples.
        assert (cloud.width, cloud.height) == (math.ceil(w / 2), math.ceil(h / 2))
        assert [(f.name, f.offset) for f in cloud.fields] == [('x', 0), ('y', 4), ('z', 8), ('rgb', 16)]
        assert cloud.point_step == 32 and cloud.row_step == 32 * cloud.width and not cloud.is_dense
        points = np.frombuffer(bytes(cloud.data), dtype='<f4').reshape(cloud.height, cloud.width, 8)
        np.testing.assert_allclose(points[:, :, 2], depth_m[::2, ::2], rtol=1e-6)
        fx = 0.8 * w
        u = np.arange(0, w, 2)
        expected_x = (u - (w - 1) / 2) * points[0, :, 2] / fx
        np.testing.assert_allclose(points[0, :, 0], expected_x, rtol=1e-5, atol=1e-6)
        assert (normals.encoding, normals.width, normals.height, normals.step) == ('32FC3', w, h, 12 * w)
        n = np.frombuffer(bytes(normals.data), dtype='<f4').reshape(h, w, 3)
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-4)
        assert (conf.encoding, conf.width, conf.height) == ('32FC1', w, h)
    assert wait_until(lambda: all(s.outputs_total >= 2 for s in snapshots(node).values()), 5.0)
    assert set(snapshots(node)) == set(CAMERAS)
    # One inference served several cameras (cross-camera batching) in the group with two cameras.
    assert max(max(r.batch.batch_size_histogram) for r in node.layout.reports()) >= 2
    assert_accounted(node)  # every input published or a counted drop


def test_network_resolution_and_16uc1(harness):
    sub_ns = 'network'
    cams = {'wide': (320, 160)}
    node = start_node(harness, sub_ns, cams, {'wide': ('depth/image', 'depth/camera_info')},
                      output_resolution='network', depth_encoding='16UC1')
    def done():
        return (len(harness.messages(f'{sub_ns}/wide/depth/image')) >= 2
                and len(harness.messages(f'{sub_ns}/wide/depth/camera_info')) >= 2)

    publish_until(harness, node, sub_ns, cams, done, timeout_s=60.0)
    assert wait_until(done, 10.0)
    topics = [f'{sub_ns}/wide/depth/image', f'{sub_ns}/wide/depth/camera_info']
    stamp = newest_common_stamp(harness, topics)
    depth, info = (message_at(harness, topic, stamp) for topic in topics)
    # Network 112x140: scale s = min(112 / 160, 140 / 320) = 0.4375 -> 140 x 70 without padding.
    assert (depth.encoding, depth.width, depth.height) == ('16UC1', 140, 70)
    assert (info.width, info.height) == (140, 70)
    fx_in = 0.8 * 320
    assert info.k[0] == pytest.approx(fx_in * 140 / 320)
    assert info.k[4] == pytest.approx(fx_in * 70 / 160)
    # principal point moved with the pixel centres: (cx + 0.5) * sx - 0.5 (docs/NODE.md, Topics)
    assert info.k[2] == pytest.approx(((320 - 1) / 2 + 0.5) * 140 / 320 - 0.5)
    assert info.k[5] == pytest.approx(((160 - 1) / 2 + 0.5) * 70 / 160 - 0.5)
    mm = np.frombuffer(bytes(depth.data), dtype='<u2').reshape(70, 140)
    assert (mm > 0).all()
    assert_accounted(node)  # every input published or a counted drop


def test_outputs_without_subscribers_are_not_computed(harness):
    sub_ns = 'lazy'
    cams = {'busy': (160, 120), 'idle': (160, 120)}
    node = start_node(harness, sub_ns, cams, {'busy': ('depth/image',)})
    requests = []
    infer = node.engine.infer

    def spy(frames, request):
        requests.extend((f.camera_id, r) for f, r in zip(frames, request, strict=True))
        return infer(frames, request)

    node.engine.infer = spy
    def busy_done():
        return len(harness.messages(f'{sub_ns}/busy/depth/image')) >= 3

    publish_until(harness, node, sub_ns, cams, busy_done, timeout_s=60.0, min_ticks=4)
    assert wait_until(busy_done, 10.0)
    time.sleep(0.3)
    assert requests and {cam for cam, _ in requests} == {'busy'}, 'the idle camera must cost no inference'
    for _, req in requests:
        assert req.outputs == frozenset({'depth'})
    for out in ('points', 'normals/image', 'confidence/image', 'depth/camera_info'):
        assert harness.messages(f'{sub_ns}/busy/{out}') == []
    diag = {s.hardware_id: s for s in node.diagnostics_message().status}
    assert 'idle' in diag['idle'].message
    values = {kv.key: kv.value for kv in diag['idle'].values}
    assert int(values['skipped_no_subscriber']) >= 3 and values['outputs_total'] == '0'
    # With no subscriber at all, no inference runs.
    harness.unsubscribe(f'{sub_ns}/busy/depth/image')
    assert wait_until(lambda: group_of(node).outputs('busy').wanted_request() is None, 10.0)
    requests.clear()
    publish_ticks(harness, node, sub_ns, cams, ticks=3)
    time.sleep(0.3)
    assert requests == []
    assert_accounted(node)  # skipped for want of a subscriber counts too


@pytest.mark.slow
def test_real_torch_network_with_synthetic_weights(harness):
    """The real ViT-S network (torch backend, synthetic weights) at a small network size, end to end."""
    sub_ns = 'torch'
    cams = {'cam': (200, 150)}
    wanted = {'cam': ('depth/image', 'depth/camera_info', 'confidence/image')}
    node = start_node(harness, sub_ns, cams, wanted, backend='torch', variant='small', weights='synthetic',
                      net_height_px=112, net_width_px=140, warmup_iters=1)
    assert type(node.engine.backend).__module__.endswith('torch_backend')
    def done():
        return len(harness.messages(f'{sub_ns}/cam/depth/image')) >= 2

    stamps = publish_until(harness, node, sub_ns, cams, done, timeout_s=120.0, period_s=0.3)
    assert wait_until(done, 30.0)
    depth = harness.messages(f'{sub_ns}/cam/depth/image')[-1]
    assert (depth.width, depth.height, depth.encoding) == (200, 150, '32FC1')
    assert stamp_ns_of(depth) in stamps
    values = np.frombuffer(bytes(depth.data), dtype='<f4')
    finite = values[np.isfinite(values)]
    assert ((finite > 0) & (finite <= 300)).all()  # invalid depth is NaN, never 0 or negative
    assert wait_until(lambda: len(harness.messages(f'{sub_ns}/cam/confidence/image')) >= 1, 10.0)
    assert_accounted(node)  # every input published or a counted drop


def _unproject(depth_m: np.ndarray, info) -> np.ndarray:
    """(H, W, 3) points from depth and its CameraInfo, as depth_image_proc computes them (from P)."""
    fx, cx, fy, cy = info.p[0], info.p[2], info.p[5], info.p[6]
    v, u = np.mgrid[0:depth_m.shape[0], 0:depth_m.shape[1]]
    return np.stack([(u - cx) * depth_m / fx, (v - cy) * depth_m / fy, depth_m], axis=-1)


@pytest.mark.parametrize('resolution', ['camera', 'network'])
def test_cloud_is_the_depth_unprojected_with_the_published_camera_info(harness, resolution):
    """A consumer unprojecting the published depth with the published depth CameraInfo gets the published
    cloud, at either output resolution, also for a binned ROI and a P that differs from K."""
    from sensor_msgs.msg import RegionOfInterest

    sub_ns = f'unproject_{resolution}'
    cams = {'plain': (320, 160), 'binned': (200, 100)}
    wanted = {cam: ('depth/image', 'depth/camera_info', 'points') for cam in cams}
    node = start_node(harness, sub_ns, cams, wanted, output_resolution=resolution, cloud_stride=1)
    infos = {}
    for cam, (w, h) in cams.items():
        if cam == 'binned':  # a 400x200 ROI at (100, 60) of a 640x480 calibration, binned 2x2
            info = camera_info_msg(640, 480, 0, '', focal_px=500.0)
            info.roi = RegionOfInterest(x_offset=100, y_offset=60, width=400, height=200)
            info.binning_x = info.binning_y = 2
        else:  # rectified P (alpha) that differs from K
            info = camera_info_msg(w, h, 0, '')
            p = list(info.p)
            p[0], p[5], p[2], p[6] = 0.9 * p[0], 0.9 * p[5], p[2] + 3.0, p[6] - 2.0
            info.p = p
        infos[cam] = info

    def publish(stamp_ns):
        from node_support import image_msg, rgb_image
        from sensor_msgs.msg import CameraInfo, Image

        for cam, (w, h) in cams.items():
            info = infos[cam]
            info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            info.header.frame_id = f'{cam}_optical_frame'
            harness.publisher(CameraInfo, f'{sub_ns}/{cam}/camera_info').publish(info)
            harness.publisher(Image, f'{sub_ns}/{cam}/image').publish(
                image_msg(rgb_image(w, h), 'rgb8', stamp_ns, f'{cam}_optical_frame'))

    def done():
        return all(len(harness.messages(f'{sub_ns}/{cam}/{out}')) >= 1 for cam in cams for out in wanted[cam])

    deadline = time.monotonic() + 60.0
    while not done() and time.monotonic() < deadline:
        publish(node.get_clock().now().nanoseconds)
        time.sleep(0.2)
    assert wait_until(done, 10.0), {c: group_of(node).stats.drop_counts(c) for c in cams}
    for cam in cams:
        topics = [f'{sub_ns}/{cam}/{out}' for out in ('depth/image', 'depth/camera_info', 'points')]
        stamp = newest_common_stamp(harness, topics)
        depth, info, cloud = (message_at(harness, topic, stamp) for topic in topics)
        assert (info.width, info.height) == (depth.width, depth.height) == (cloud.width, cloud.height)
        frame_ids = {info.header.frame_id, depth.header.frame_id, cloud.header.frame_id}
        assert frame_ids == {f'{cam}_optical_frame'}
        if resolution == 'camera':
            assert (depth.width, depth.height) == cams[cam]
        depth_m = np.frombuffer(bytes(depth.data), dtype='<f4').reshape(depth.height, depth.width)
        points = np.frombuffer(bytes(cloud.data), dtype='<f4').reshape(cloud.height, cloud.width, 4)[..., :3]
        np.testing.assert_allclose(points, _unproject(depth_m, info), rtol=1e-5, atol=1e-5, err_msg=cam)
    assert_accounted(node)  # every input published or a counted drop


def _intrinsics_caches():
    """The two per-camera calibration caches (CameraInfo -> intrinsics, CameraInfo -> depth CameraInfo)."""
    from types import SimpleNamespace

    from metric3d_ros.core.outputs import OUTPUTS as CATALOGUE
    from metric3d_ros.ros.layout.group import CameraGroup, _Camera
    from metric3d_ros.ros.params import OutputConfig, config_from_values
    from metric3d_ros.ros.publishers import CameraOutputs, output_topics

    fake_node = SimpleNamespace(create_publisher=lambda *a, **k: None)
    topics = output_topics('cam', CATALOGUE)
    outputs = CameraOutputs(fake_node, 'cam', CATALOGUE, topics, OutputConfig(), None)
    config = config_from_values({'cameras': ['cam'], 'backend': 'fake', 'device': 'cpu'})
    cam_topics = SimpleNamespace(image='cam/image', compressed='cam/image/compressed')
    stub = SimpleNamespace(_config=config, _topics={'cam': cam_topics},
                           _node=SimpleNamespace(get_logger=lambda: SimpleNamespace(warning=lambda *_: None)))
    cam = _Camera('cam', config)

    def node_intrinsics(fields, width, height):
        return CameraGroup._intrinsics(stub, cam, fields, width, height).intrinsics.fx_px

    def depth_info(fields, width, height):
        return outputs.depth_camera_info(fields, width, height).k[0]

    return {'node_intrinsics': node_intrinsics, 'depth_camera_info': depth_info}


@pytest.mark.parametrize('cache', ['node_intrinsics', 'depth_camera_info'])
def test_calibration_caches_never_serve_another_camera_infos_values(cache):
    """The caches were keyed by id(): once the cached CameraInfo was freed (the pairer keeps the last 8), a
    new CameraInfo with other values (a moved ROI, a new calibration) at the same address got the old
    intrinsics, so the cloud and the depth CameraInfo were computed with the wrong camera."""
    from collections import deque

    from metric3d_ros.core.geometry.camera_info import CameraInfoFields
    from metric3d_ros.core.geometry.intrinsics import Intrinsics

    lookup = _intrinsics_caches()[cache]
    buffer = deque(maxlen=8)  # like the pairer: the last 8 CameraInfo are kept
    for i in range(200):
        fields = CameraInfoFields.from_intrinsics(Intrinsics(100.0 + i, 100.0, 50.0, 40.0), 100, 80)
        buffer.append(fields)
        if i % 9 == 0:  # an image is paired now and then; CameraInfo keeps arriving in between
            assert lookup(fields, 100, 80) == pytest.approx(100.0 + i), f'CameraInfo {i}'
        del fields


@pytest.mark.slow
def test_onnxruntime_backend_by_configuration_alone(harness, tmp_path):
    """Issue 5 acceptance: the node runs an exported file on ONNX Runtime with parameters only."""
    from metric3d_ros.core.model.export import ExportOptions, export_metric3d

    path = tmp_path / 'vit_s.onnx'
    export_metric3d(ExportOptions(variant='small', weights='synthetic', output=str(path), check_hw=None))
    sub_ns = 'onnx'
    cams = {'cam': (160, 120)}
    node = start_node(harness, sub_ns, cams, {'cam': ('depth/image', 'depth/camera_info')},
                      backend='onnxruntime', **{'onnx.model_path': str(path),
                                                'onnx.providers': ['CPUExecutionProvider']})
    assert node.engine.backend.name == 'onnxruntime'

    def done():
        return len(harness.messages(f'{sub_ns}/cam/depth/image')) >= 2

    publish_until(harness, node, sub_ns, cams, done, timeout_s=120.0)
    assert wait_until(done, 20.0)
    depth = harness.messages(f'{sub_ns}/cam/depth/image')[-1]
    assert (depth.encoding, depth.width, depth.height) == ('32FC1', 160, 120)
    values = np.frombuffer(bytes(depth.data), dtype='<f4')
    assert np.isfinite(values).all() and (values > 0).all()
    assert_accounted(node)  # every input published or a counted drop


def test_a_killed_group_worker_is_restarted_and_its_frames_counted(harness):
    """A group worker that dies is restarted off the other groups' path: the other group keeps publishing
    meanwhile, the dead group's frames in flight are counted (worker_died), /diagnostics names the group,
    and its outputs come back."""
    import os
    import signal

    sub_ns = 'workerkill'
    cams = {'one': (160, 120), 'two': (96, 64)}
    wanted = {cam: ('depth/image',) for cam in cams}
    node = start_node(harness, sub_ns, cams, wanted, process_layout='group_workers',
                      camera_groups=['one', 'two'])

    def got(cam, n):
        return lambda: len(harness.messages(f'{sub_ns}/{cam}/depth/image')) >= n

    publish_until(harness, node, sub_ns, cams, lambda: got('one', 2)() and got('two', 2)(), timeout_s=60.0)
    victim = node.layout._groups['group0'].worker
    os.kill(victim.process.pid, signal.SIGKILL)
    victim.process.join(10.0)
    def failed_status():
        diag = {s.name.rsplit(' ', 2)[-2]: s for s in node.diagnostics_message().status
                if s.name.endswith(': engine')}
        return diag if diag['group0:'].level == bytes([2]) else None

    diag = None
    deadline = time.monotonic() + 10.0
    while diag is None and time.monotonic() < deadline:  # the restart takes seconds: the ERROR shows first
        diag = failed_status()
        time.sleep(0.01)
    assert diag is not None, 'the dead group is named in /diagnostics'
    assert 'worker process died' in diag['group0:'].message and 'group0' not in diag['group1:'].message
    before_two = len(harness.messages(f'{sub_ns}/two/depth/image'))
    before_one = len(harness.messages(f'{sub_ns}/one/depth/image'))
    publish_until(harness, node, sub_ns, cams,
                  lambda: got('two', before_two + 3)() and got('one', before_one + 2)(), timeout_s=90.0)
    assert got('one', before_one + 2)(), 'the restarted group publishes again'

    def reports():
        return {r.name: r for r in node.layout.reports()}

    def restarted():  # the new worker publishes as soon as it is active, a moment before it is installed
        report = reports()
        return report['group0'].restarts == 1 and report['group0'].state == 'active'

    assert wait_until(restarted, 10.0), reports()['group0']
    report = reports()
    assert report['group1'].restarts == 0 and not report['group0'].error
    # Accounted as far as the node can know: the other group whole, the restarted group since its restart
    # (the dead worker's frames in flight at its last report are counted as worker_died; frames it received
    # after that report are unknown to the node)
    assert_accounted(node)


def test_a_registered_output_is_published_in_every_layout(harness):
    """A new output is one catalogue entry and its postprocess function: it is computed, published on
    <cam>/<topic> with the input header, in process and in group workers."""
    from node_test_outputs import inverse_depth_registered

    with inverse_depth_registered():  # the catalogue is process-wide: restored for the other tests
        for layout in ('in_process', 'group_workers'):
            _check_inverse_depth_published(harness, layout)


def _check_inverse_depth_published(harness, layout: str) -> None:
    from sensor_msgs.msg import Image

    cams = {'cam': (160, 120)}
    sub_ns = f'extra_{layout}'
    harness.subscribe(Image, f'{sub_ns}/cam/inverse_depth/image')
    node = start_node(harness, sub_ns, cams, {'cam': ('depth/image',)}, process_layout=layout)

    def done():
        return len(harness.messages(f'{sub_ns}/cam/inverse_depth/image')) >= 2 and \
            len(harness.messages(f'{sub_ns}/cam/depth/image')) >= 2

    stamps = publish_until(harness, node, sub_ns, cams, done, timeout_s=60.0)
    assert wait_until(done, 10.0), layout
    topics = [f'{sub_ns}/cam/inverse_depth/image', f'{sub_ns}/cam/depth/image']
    stamp = newest_common_stamp(harness, topics)
    inv, depth = (message_at(harness, topic, stamp) for topic in topics)
    assert stamp_ns_of(inv) in stamps and inv.header.frame_id == f'{sub_ns}/cam_optical_frame'
    assert (inv.encoding, inv.width, inv.height) == ('32FC1', 160, 120)
    d = np.frombuffer(bytes(depth.data), dtype='<f4')
    i = np.frombuffer(bytes(inv.data), dtype='<f4')
    np.testing.assert_allclose(i, 1.0 / d, rtol=1e-5)
    assert_accounted(node)  # every input published or a counted drop
    harness.on_executor(lambda: node.release())


def test_two_camera_groups_give_the_outputs_of_one_group(harness):
    """Issue 18: the same frames through one group and through two groups (each with its own engine, here
    both on the CPU) give the same depth and clouds, stamp for stamp."""
    cams = {'a': (160, 120), 'b': (96, 64), 'c': (128, 96)}
    wanted = {cam: ('depth/image', 'points') for cam in cams}
    layouts = {'one_group': {},
               'two_groups': {'camera_groups': ['a c', 'b'], 'group_devices': ['cpu', 'cpu']}}
    nodes = {name: start_node(harness, f'groups_{name}', cams, wanted, cloud_stride=2, **params)
             for name, params in layouts.items()}

    def done():
        return all(len(harness.messages(f'groups_{name}/{cam}/{out}')) >= 3
                   for name in layouts for cam in cams for out in wanted[cam])

    deadline = time.monotonic() + 60.0
    node = nodes['one_group']
    while not done() and time.monotonic() < deadline:
        stamp_ns = node.get_clock().now().nanoseconds
        for index, (cam, (w, h)) in enumerate(cams.items()):
            image = rgb_image(w, h, seed=index)
            for name in layouts:
                harness.publish_frame(f'groups_{name}/{cam}', image, stamp_ns)
        time.sleep(0.1)
    assert wait_until(done, 10.0)
    compared = 0
    for cam in cams:
        for out in wanted[cam]:
            one = {stamp_ns_of(m): bytes(m.data) for m in harness.messages(f'groups_one_group/{cam}/{out}')}
            two = {stamp_ns_of(m): bytes(m.data) for m in harness.messages(f'groups_two_groups/{cam}/{out}')}
            common = set(one) & set(two)
            assert common, (cam, out)
            for stamp in common:
                assert one[stamp] == two[stamp], f'{cam}/{out} at {stamp} differs between the layouts'
                compared += 1
    assert compared >= 2 * len(cams) * 2
    for node in nodes.values():
        assert_accounted(node)
