"""/diagnostics and the periodic status line under sim time: they run on the steady clock, so a /clock that
stops (a paused or finished bag) or crawls does not freeze them, while the stamps of the /diagnostics
messages and of the outputs keep ROS time.

Before, the node's /diagnostics timer, the group workers' report timer and the held-image expiry timer ran
on ROS time: with /clock stopped, /diagnostics went quiet or showed the figures of its first report (1 input,
0 outputs) while every frame was published.
"""
from __future__ import annotations

import time

import pytest
from node_support import (
    Harness,
    rgb_image,
    ros_env,
    snapshots,
    stamp_ns_of,
    start_node,
    unique_namespace,
    wait_until,
)

pytestmark = pytest.mark.ros

W, H = 96, 72
FRAMES = 5
SIM_START_NS = 1_000 * 10**9


@pytest.fixture(scope='module')
def harness():
    env = ros_env(43)
    h = Harness(int(env['ROS_DOMAIN_ID']), unique_namespace('simtime'))
    yield h
    h.close()


class _Recorder:
    """Wraps a node's logger, keeping the INFO lines."""

    def __init__(self, logger) -> None:
        self.logger = logger
        self.infos: list[str] = []

    def info(self, message, **kwargs):
        self.infos.append(message)
        return self.logger.info(message, **kwargs)

    def __getattr__(self, name):
        return getattr(self.logger, name)


def _camera_values(msg, camera: str) -> dict[str, str] | None:
    for status in msg.status:
        if status.hardware_id == camera:
            return {kv.key: kv.value for kv in status.values}
    return None


@pytest.mark.parametrize('layout', ['in_process', 'group_workers'])
@pytest.mark.parametrize('clock', ['stopped', 'crawling'])
def test_diagnostics_follow_wall_time_when_sim_time_stops_or_crawls(harness, layout, clock):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    sub_ns = f'{layout}_{clock}'
    clock_pub = harness.helper.create_publisher(
        Clock, '/clock', QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))

    def set_clock(stamp_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        clock_pub.publish(msg)

    harness.subscribe(DiagnosticArray, '/diagnostics')
    cam = 'cam'
    node = start_node(harness, sub_ns, {cam: (W, H)}, {cam: ('depth/image',)}, use_sim_time=True,
                      process_layout=layout, status_log_period_s=0.2)
    logger = _Recorder(node.get_logger())
    node.get_logger = lambda: logger
    assert wait_until(lambda: clock_pub.get_subscription_count() > 0, 10.0)

    def clock_at(stamp_ns: int) -> bool:
        set_clock(stamp_ns)
        return node.get_clock().now().nanoseconds == stamp_ns

    assert wait_until(lambda: clock_at(SIM_START_NS), 10.0, period_s=0.1)
    for _ in range(5):  # a group worker has its own /clock subscription: let it see the time as well
        set_clock(SIM_START_NS)
        time.sleep(0.1)
    # From here /clock is still (stopped) or moves 1 ms per frame sent, 0.2 s of wall time apart (crawling).
    sent = []
    for i in range(FRAMES):
        stamp_ns = SIM_START_NS + i * 1_000_000
        if clock == 'crawling':
            set_clock(stamp_ns)
        harness.publish_frame(f'{sub_ns}/{cam}', rgb_image(W, H, seed=i), stamp_ns)
        sent.append(stamp_ns)
        time.sleep(0.2)

    def published() -> list[int]:
        return [stamp_ns_of(m) for m in harness.messages(f'{sub_ns}/{cam}/depth/image')]

    assert wait_until(lambda: len(published()) == FRAMES, 20.0), (published(), {
        cam: snap.drops_total for cam, snap in snapshots(node).items()})
    assert published() == sent  # outputs carry the input stamps (ROS time)

    name = node.get_fully_qualified_name()

    def own(msgs) -> list:
        return [m for m in msgs if any(s.name.startswith(name) for s in m.status)]

    def latest_counts() -> tuple[str, str] | None:
        msgs = own(harness.messages('/diagnostics'))
        values = _camera_values(msgs[-1], cam) if msgs else None
        return None if values is None else (values['inputs_total'], values['outputs_total'])

    # /diagnostics shows every frame, though ROS time has (nearly) stood still since the first report
    assert wait_until(lambda: latest_counts() == (str(FRAMES), str(FRAMES)), 10.0), latest_counts()
    before = len(own(harness.messages('/diagnostics')))
    lines_before = len(logger.infos)
    wall_s = 1.5
    time.sleep(wall_s)
    after = own(harness.messages('/diagnostics'))
    period_s = node.config.diagnostics_period_s
    # period 0.2 s: about 7 messages in 1.5 s; at least 3 on a loaded machine
    assert len(after) - before >= 3, (len(after) - before, period_s)
    # their stamps are ROS time: the clock's last value, not the wall clock
    last_clock_ns = sent[-1] if clock == 'crawling' else SIM_START_NS
    assert stamp_ns_of(after[-1]) == last_clock_ns
    # the status line keeps its period too, and shows every frame
    lines = [line for line in logger.infos[lines_before:] if line.startswith(f'camera {cam}:')]
    assert len(lines) >= 3, logger.infos[lines_before:]
    assert f'since activation {FRAMES} in, {FRAMES} out, 0 dropped' in lines[-1], lines[-1]
    harness.on_executor(lambda: harness.helper.destroy_publisher(clock_pub))
