"""Cross-camera batching inside the node, with a slow test backend: the max_wait_ms deadline, max_batch_size,
drops counted when inference is slower than the cameras, and a silent camera that does not stall the others.

Timing bounds are one-sided where it matters (a batch cannot go out *before* its deadline) and generous
otherwise: the machine is shared with other test runs.
"""
from __future__ import annotations

import time

import pytest
from node_support import (
    Harness,
    assert_accounted,
    group_of,
    ros_env,
    stamp_ns_of,
    start_node,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

W, H = 96, 72


@pytest.fixture(scope='module')
def harness():
    env = ros_env(37)
    from metric3d_ros.core.engine.backend import register_backend
    from metric3d_ros.core.engine.test_backends import FakeBackend, SlowBackend

    def slow(config, device):
        return SlowBackend(FakeBackend(device), delay_ms=300.0)

    register_backend('slow_fake_300ms', slow)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('batching'))
    yield h
    h.close()


def _send(harness, node, sub_ns, cams, stamp_ns=None):
    from node_support import rgb_image

    stamp_ns = node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
    for cam in cams:
        harness.publish_frame(f'{sub_ns}/{cam}', rgb_image(W, H), stamp_ns)
    return stamp_ns


def _latency_ms(harness, topic, stamp_ns, receive_times) -> float:
    return (receive_times[(topic, stamp_ns)] - stamp_ns) / 1e6


def test_deadline_when_a_camera_is_late_and_immediate_when_all_arrive(harness):
    sub_ns = 'deadline'
    cams = ['a', 'b']
    node = start_node(harness, sub_ns, {c: (W, H) for c in cams}, {c: ('depth/image',) for c in cams},
                      max_wait_ms=400.0, camera_timeout_ms=5000.0, max_batch_size=4)
    batches = []
    infer = node.engine.infer

    def spy(frames, requests):
        batches.append((time.monotonic(), sorted(f.camera_id for f in frames)))
        return infer(frames, requests)

    node.engine.infer = spy
    def published(cam, stamp_ns):
        return stamp_ns in [stamp_ns_of(m) for m in harness.messages(f'{sub_ns}/{cam}/depth/image')]

    # A camera is waited for once it has delivered: after a first tick, both cameras share a batch.
    t0 = _send(harness, node, sub_ns, cams)
    assert wait_until(lambda: all(published(c, t0) for c in cams), 10.0)
    time.sleep(0.1)
    batches.clear()
    t0 = _send(harness, node, sub_ns, cams)
    assert wait_until(lambda: all(published(c, t0) for c in cams), 10.0)
    assert [b for _, b in batches] == [['a', 'b']]
    # Only 'a' delivers while 'b' is still active: the batch waits max_wait_ms (400 ms) for 'b'.
    time.sleep(0.2)
    batches.clear()
    sent_s = time.monotonic()
    t1 = _send(harness, node, sub_ns, ['a'])
    assert wait_until(lambda: published('a', t1), 10.0)
    dispatched_s, members = batches[0]
    assert members == ['a']
    waited_ms = (dispatched_s - sent_s) * 1e3
    assert waited_ms >= 400.0 - 30.0, f'dispatched after {waited_ms:.0f} ms, before the 400 ms deadline'
    assert waited_ms < 3000.0
    # 'b' arrives within the wait: the batch goes out with both, before the deadline.
    batches.clear()
    sent_s = time.monotonic()
    t2 = _send(harness, node, sub_ns, ['a'])
    time.sleep(0.05)
    _send(harness, node, sub_ns, ['b'], stamp_ns=t2)
    assert wait_until(lambda: published('b', t2), 10.0)
    assert batches[0][1] == ['a', 'b']
    assert (batches[0][0] - sent_s) * 1e3 < 400.0 + 200.0
    assert_accounted(node)  # every input published or a counted drop


def test_max_batch_size_and_batch_statistics(harness):
    sub_ns = 'maxbatch'
    cams = ['c1', 'c2', 'c3']
    node = start_node(harness, sub_ns, {c: (W, H) for c in cams}, {c: ('depth/image',) for c in cams},
                      max_batch_size=2, max_wait_ms=100.0)
    stamps = []
    for _ in range(4):
        stamps.append(_send(harness, node, sub_ns, cams))
        time.sleep(0.15)
    def counts():
        return [len(harness.messages(f'{sub_ns}/{c}/depth/image')) for c in cams]

    assert wait_until(lambda: min(counts()) >= 3, 15.0), counts()
    snap = group_of(node).stats.batch_snapshot()
    assert max(snap.batch_size_histogram) == 2
    assert snap.batches_total >= 4
    values = {kv.key: kv.value for kv in node.diagnostics_message().status[0].values}
    assert values['max_batch_size'] == '2' and values['batch_size_histogram'].startswith(('1:', '2:'))
    assert_accounted(node)


def test_slow_inference_drops_oldest_frames_and_counts_them(harness):
    sub_ns = 'slow'
    cams = ['s1', 's2']
    node = start_node(harness, sub_ns, {c: (W, H) for c in cams}, {c: ('depth/image',) for c in cams},
                      backend='slow_fake_300ms', max_wait_ms=10.0, queue_depth=1)
    sent = []
    start = time.monotonic()
    while time.monotonic() - start < 2.0:  # 20 Hz for 2 s against ~3 batches per second
        sent.append(_send(harness, node, sub_ns, cams))
        time.sleep(0.05)

    def settled():
        stats = group_of(node).stats
        return group_of(node).scheduler.idle() and all(
            sum(stats.drop_counts(c).values()) + stats.counts(c)[1] == stats.counts(c)[0] for c in cams)

    assert wait_until(settled, 10.0)
    for cam in cams:
        inputs, outputs = group_of(node).stats.counts(cam)
        drops = group_of(node).stats.drop_counts(cam)
        # reliable input (FAST_NODE): every frame sent arrives; a loaded machine just sends fewer in 2 s
        assert len(sent) >= 8 and inputs >= 0.8 * len(sent), (inputs, len(sent))
        assert drops.get('queue_overflow', 0) >= inputs // 2, drops
        assert 3 <= outputs <= 12, outputs
        got = [stamp_ns_of(m) for m in harness.messages(f'{sub_ns}/{cam}/depth/image')]
        assert got == sorted(got) and set(got) <= set(sent)
    snap = {s.camera_id: s for s in group_of(node).stats.snapshots()}
    assert snap['s1'].inference_mean_ms >= 290.0
    status = next(s for s in node.diagnostics_message().status if s.hardware_id == 's1')
    assert status.level == b'\x01' and 'dropped' in status.message  # WARN: most inputs dropped


def test_sim_time_jumping_back_restarts_the_stamp_order_even_with_a_frame_in_flight(harness):
    """A looping bag (use_sim_time): /clock jumps back and the stamps start over. The stamp gate and the
    publish order restart; a frame of the old timeline still in inference when the clock jumps is not
    published afterwards (it would block every frame of the new loop as an out-of-order result)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    sub_ns = 'simloop'
    clock_pub = harness.helper.create_publisher(
        Clock, '/clock', QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def set_clock(stamp_ns):
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        clock_pub.publish(msg)

    node = start_node(harness, sub_ns, {'cam': (W, H)}, {'cam': ('depth/image',)}, backend='slow_fake_300ms',
                      use_sim_time=True, max_wait_ms=10.0)
    assert wait_until(lambda: clock_pub.get_subscription_count() > 0, 10.0)
    first_loop_ns = 1000 * 10**9

    def clock_at(stamp_ns):
        set_clock(stamp_ns)
        return node.get_clock().now().nanoseconds == stamp_ns

    assert wait_until(lambda: clock_at(first_loop_ns), 10.0, period_s=0.1)

    def published():
        return [stamp_ns_of(m) for m in harness.messages(f'{sub_ns}/cam/depth/image')]

    _send(harness, node, sub_ns, ['cam'], stamp_ns=first_loop_ns + 100_000_000)
    assert wait_until(lambda: first_loop_ns + 100_000_000 in published(), 10.0)
    # The next frame of the first loop is in inference (300 ms) when the bag loops.
    in_flight_ns = first_loop_ns + 200_000_000
    _send(harness, node, sub_ns, ['cam'], stamp_ns=in_flight_ns)
    scheduler = group_of(node).scheduler
    assert wait_until(lambda: not scheduler.idle() and scheduler.pending_count() == 0, 5.0)
    second_loop_ns = 10 * 10**9
    set_clock(second_loop_ns)
    assert wait_until(lambda: node.get_clock().now().nanoseconds == second_loop_ns, 5.0)
    new_stamps = []
    for i in range(1, 6):
        new_stamps.append(second_loop_ns + i * 100_000_000)
        set_clock(new_stamps[-1])
        _send(harness, node, sub_ns, ['cam'], stamp_ns=new_stamps[-1])
        time.sleep(0.4)
    assert wait_until(lambda: len(set(new_stamps) & set(published())) >= 3, 10.0), \
        (published(), group_of(node).stats.drop_counts('cam'))
    got = published()
    assert got[0] == first_loop_ns + 100_000_000 and in_flight_ns not in got, got
    assert group_of(node).stats.drop_counts('cam').get('out_of_order_result', 0) <= 1
    assert_accounted(node)  # the frame of the old timeline in flight is a counted drop, not a loss
    harness.on_executor(lambda: harness.helper.destroy_publisher(clock_pub))
