#!/usr/bin/env python3
"""Reproduce (and fix) the loss of messages from reliable keep-last publishers to a reliable subscriber.

A publisher process publishes, per batch, K cameras x (depth image 32FC1, CameraInfo, organized
PointCloud2) back to back as serialized bytes, as the depth node does (default: the 6-camera 1936x1216
rig, cloud stride 2: 9.4 MB image, 9.4 MB cloud, 113 MB a batch). A subscriber process (a recorder: one
process with a reliable keep-last-10 subscription on every topic, like ``ros2 bag record`` in Jazzy)
counts the header stamps it receives and the samples the middleware reports lost (message_lost event).
Every run is a fresh pair of processes with the project's Fast DDS profile (config/fastdds_shm.xml,
segment and port queue overridable); ROS_DOMAIN_ID is taken from the environment (default 44).

The loss needs a receiver that lags behind the burst, as on a host that also runs inference: on an
idle box nothing is lost. ``--cpu-load 1 --sub-nice 5`` makes that lag repeatable (one busy process while
publishing, the subscriber at nice 5). Usage (Kilted or Jazzy venv; ~13 s a run on a 2-core box):

    # the old profile (64 MiB segment, Fast DDS's 512-descriptor port): keep last 1 loses, 10 does not
    python scripts/qos_loss.py --segment-mib 64 --port-queue 0 --pub-depth 1 10 --cpu-load 1 --sub-nice 5
    # the shipped profile (256 MiB, 8192): nothing lost
    python scripts/qos_loss.py --pub-depth 1 10 --cpu-load 1 --sub-nice 5 --runs 4
    # 6 cameras as fast as the box publishes
    python scripts/qos_loss.py --rate-hz 30 --batches 15 --pub-depth 1 10 --runs 3

Options: --cameras K (6), --batches per run (3), --rate-hz batches a second (2), --pub-depth keep-last
depths of the publishers to compare (0 = keep all), --sub-depth of the subscriber (10; 0 = keep all),
--segment-mib shared-memory segments to compare (default: as in config/fastdds_shm.xml; 0 = no profile,
Fast DDS's builtin transports), --port-queue SHM port_queue_capacity (default: as in the profile; 0 =
Fast DDS's 512), --heartbeat-ms writer heartbeat period (0 = Fast DDS's 3 s), --per-topic (one
subscriber process per topic instead of one recorder), --record-to-disk (the subscriber writes every
message to a file, as a recorder does), --cpu-load N (N busy processes while publishing), --sub-nice N
(the subscriber process at nice N).

Prints per run, e.g.
    depth=1 seg=64MiB portq=512 subdepth=10 cpuload=1 subnice=5 run 1: received 46/54 lost 8 (lost
    events 8; publish 299 ms/batch, 1.3 batches/s, late 2, publisher rss 517 MiB) lost per batch [4, 4, 0]
    short: /cam1/depth, ...
and per configuration, e.g.
    depth=1 seg=64MiB portq=512 subdepth=10 cpuload=1 subnice=5: lost 74/216 messages over 4 runs, runs
    with loss 4/4
"lost events" counts the samples Fast DDS reported lost to the subscriber (GAP from the writer);
"late" counts batches that started after their slot because publishing the previous one took longer.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / 'config' / 'fastdds_shm.xml'
KINDS = ('depth', 'camera_info', 'points')


def topics(cameras: int) -> list[tuple[str, str]]:
    """(topic, kind) of every output of a K-camera rig, in publishing order."""
    return [(f'/cam{c}/{k}', k) for c in range(cameras) for k in KINDS]


def qos(depth: int):
    """Reliable, volatile, keep last ``depth`` (0: keep all)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    if depth == 0:
        return QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def msg_type(kind: str):
    """The sensor_msgs class of an output ``kind``."""
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    return {'depth': Image, 'camera_info': CameraInfo, 'points': PointCloud2}[kind]


def serialized(kind: str, width: int, height: int, stride: int) -> bytes:
    """One serialized message of ``kind`` (stamp 0) of the sizes the depth node publishes."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
    if kind == 'depth':
        m = Image(height=height, width=width, encoding='32FC1', step=width * 4)
        m.data = bytes(width * height * 4)
    elif kind == 'camera_info':
        m = CameraInfo(height=height, width=width, distortion_model='plumb_bob')
    else:
        w, h = width // stride, height // stride
        m = PointCloud2(height=h, width=w, point_step=16, row_step=16 * w, is_dense=False)
        m.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                    for i, n in enumerate('xyz')]
        m.data = bytes(16 * w * h)
    m.header.frame_id = 'cam'
    return serialize_message(m)


def with_stamp(body: bytes, stamp_ns: int) -> bytes:
    """``body`` with header.stamp set (CDR: 4-byte encapsulation, then sec int32, nanosec uint32)."""
    return body[:4] + struct.pack('<iI', stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000) + body[12:]


def stamp_of(data: bytes) -> int:
    """header.stamp (ns) of a serialized message."""
    sec, nsec = struct.unpack_from('<iI', data, 4)
    return sec * 1_000_000_000 + nsec


def run_publisher(a: argparse.Namespace) -> None:
    """Publish ``a.batches`` batches at ``a.rate_hz`` once every subscriber matched; print timings as JSON."""
    import rclpy
    rclpy.init()
    node = rclpy.create_node('qos_loss_pub')
    tps = topics(a.cameras)
    pubs = [node.create_publisher(msg_type(k), t, qos(a.pub_depth)) for t, k in tps]
    bodies = {k: serialized(k, a.width, a.height, a.stride) for k in KINDS}
    deadline = time.monotonic() + 30.0
    matched = [Path(f) for f in a.matched_file.split(',')]
    while (min(p.get_subscription_count() for p in pubs) < a.expect_subs
           or not all(f.exists() for f in matched)):
        if time.monotonic() > deadline:
            print(json.dumps({'error': 'subscribers did not match'}), flush=True)
            sys.exit(2)
        time.sleep(0.05)
    time.sleep(2.0)  # both sides matched: let discovery traffic settle
    period = 1.0 / a.rate_hz
    t0 = time.monotonic()
    publish_s = []
    late = 0
    last_start = t0
    for b in range(a.batches):
        stamp = 1_000_000_000 + b * 1_000_000
        batch = [with_stamp(bodies[k], stamp) for _, k in tps]
        wait = t0 + b * period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        elif b > 0:
            late += 1
        ts = last_start = time.monotonic()
        for p, buf in zip(pubs, batch, strict=True):
            p.publish(buf)
        publish_s.append(time.monotonic() - ts)
    time.sleep(a.linger_s)  # the node keeps running; give repairs the time they would have
    print(json.dumps({'publish_ms_mean': 1000 * sum(publish_s) / len(publish_s),
                      'publish_ms_max': 1000 * max(publish_s), 'late_batches': late,
                      'batches_per_s': (a.batches - 1) / (last_start - t0) if last_start > t0 else 0.0,
                      'max_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(a: argparse.Namespace) -> None:
    """Subscribe (raw bytes) until every message came or none for ``a.idle_s``; print stamps as JSON."""
    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    rclpy.init()
    node = rclpy.create_node(f'qos_loss_sub_{os.getpid()}')
    tps = [tk for tk in topics(a.cameras) if a.topic is None or tk[0] == a.topic]
    got: dict[str, set[int]] = {t: set() for t, _ in tps}
    lost: dict[str, int] = {t: 0 for t, _ in tps}
    last = [time.monotonic()]

    bag = open(a.record, 'wb') if a.record else None  # closed below

    def on_msg(topic):
        def cb(data: bytes) -> None:
            got[topic].add(stamp_of(data))
            if bag is not None:  # a recorder's work: every message to storage
                bag.write(data)
            last[0] = time.monotonic()
        return cb

    def on_lost(topic):
        def cb(info) -> None:
            lost[topic] += info.total_count_change
        return cb

    subs = [node.create_subscription(msg_type(k), t, on_msg(t), qos(a.sub_depth), raw=True,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost(t)))
            for t, k in tps]
    print('ready', flush=True)
    expected = a.batches * len(tps)
    deadline = time.monotonic() + a.timeout_s
    matched = False
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
        if not matched and min(s.get_publisher_count() for s in subs) >= 1:
            matched = True
            Path(a.matched_file).touch()
        n = sum(len(s) for s in got.values())
        if n >= expected or (n > 0 and time.monotonic() - last[0] > a.idle_s):
            break
    print(json.dumps({'received': {t: sorted(s) for t, s in got.items()}, 'lost_events': lost}), flush=True)
    if bag is not None:
        bag.close()
        os.unlink(a.record)
    del subs
    node.destroy_node()
    rclpy.shutdown()


def profile_file(segment_mib: int | None, heartbeat_ms: int, port_queue: int | None,
                 tmp: Path) -> Path | None:
    """The project's profile with another segment size (None: as shipped), port queue (None: as shipped,
    0: Fast DDS's 512) and writer heartbeat period (0: Fast DDS's 3 s); None for segment 0 (builtin
    transports, no profile)."""
    if segment_mib == 0:
        return None
    xml = PROFILE.read_text()
    if segment_mib is not None:
        segment = f'<segment_size>{segment_mib << 20}</segment_size>'
        xml, n = re.subn(r'<segment_size>\d+</segment_size>', segment, xml)
        if n != 1:
            raise RuntimeError(f'{PROFILE}: expected one <segment_size>')
    if port_queue is not None:
        xml = re.sub(r'\s*<port_queue_capacity>\d+</port_queue_capacity>', '', xml)
        if port_queue:
            xml = xml.replace('</segment_size>', f'</segment_size><port_queue_capacity>{port_queue}'
                                                 '</port_queue_capacity>')
    if heartbeat_ms:
        sec, ms = divmod(heartbeat_ms, 1000)
        tag = 'heartbeat_period' if fast_dds_3() else 'heartbeatPeriod'  # the XML name changed in 3.0
        writer = ('  <data_writer profile_name="qos_loss_writer" is_default_profile="true"><times>'
                  f'<{tag}><sec>{sec}</sec><nanosec>{ms * 1_000_000}</nanosec></{tag}>'
                  '</times></data_writer>\n</profiles>')
        xml = xml.replace('</profiles>', writer)
    path = tmp / f'profile_{segment_mib}_{heartbeat_ms}_{port_queue}.xml'
    path.write_text(xml)
    return path


def fast_dds_3() -> bool:
    """Whether this environment's Fast DDS is 3.x (Kilted: FASTDDS_DEFAULT_PROFILES_FILE) or 2.x."""
    from importlib.metadata import PackageNotFoundError, version
    for dist in ('ros-fastdds', 'ros-fastrtps'):
        try:
            return not version(dist).startswith('2.')
        except PackageNotFoundError:
            continue
    return True


def one_run(a: argparse.Namespace, pub_depth: int, segment_mib: int | None, tmp: Path) -> dict:
    """Start the subscriber process(es), then the publisher; return what the subscribers received."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(a.domain), RMW_FASTRTPS_USE_QOS_FROM_XML='0')
    env.pop('FASTRTPS_DEFAULT_PROFILES_FILE', None)
    env.pop('FASTDDS_DEFAULT_PROFILES_FILE', None)
    profile_var = 'FASTDDS_DEFAULT_PROFILES_FILE' if fast_dds_3() else 'FASTRTPS_DEFAULT_PROFILES_FILE'
    prof = profile_file(segment_mib, a.heartbeat_ms, a.port_queue, tmp)
    if prof is not None:
        env[profile_var] = str(prof)
    sub_depth = a.sub_depth
    common = ['--cameras', str(a.cameras), '--batches', str(a.batches), '--rate-hz', str(a.rate_hz),
              '--width', str(a.width), '--height', str(a.height), '--stride', str(a.stride)]
    me = [sys.executable, __file__]
    sub_topics = [t for t, _ in topics(a.cameras)] if a.per_topic else [None]
    timeout = a.batches / a.rate_hz + a.linger_s + 40
    subs = []
    matched_files = []
    for i, t in enumerate(sub_topics):
        matched_files.append(str(tmp / f'matched_{os.getpid()}_{time.monotonic_ns()}_{i}'))
        record = ['--record', str(tmp / f'bag_{i}')] if a.record_to_disk else []
        cmd = me + ['_sub', '--sub-depth', str(sub_depth), '--timeout-s', str(timeout), *record,
                    '--idle-s', str(a.linger_s + 2), '--matched-file', matched_files[-1]] + common + (
                        ['--topic', t] if t else [])
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True,
                             preexec_fn=(lambda: os.nice(a.sub_nice)) if a.sub_nice else None)
        subs.append(p)
    for p in subs:
        if p.stdout.readline().strip() != 'ready':
            raise RuntimeError('subscriber did not start')
    # other work on the host (the node's inference, a recorder's storage): busy processes while publishing
    busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(a.cpu_load)]
    pub_cmd = me + ['_pub', '--pub-depth', str(pub_depth), '--expect-subs', '1',
                    '--linger-s', str(a.linger_s), '--matched-file', ','.join(matched_files)] + common
    pub = subprocess.run(pub_cmd,
                         env=env, stdout=subprocess.PIPE, text=True, timeout=timeout + 30)
    for p in busy:
        p.kill()
        p.wait()
    pub_res = json.loads(pub.stdout.strip().splitlines()[-1])
    received: dict[str, list[int]] = {}
    lost_events = 0
    for p in subs:
        out, _ = p.communicate(timeout=timeout + 30)
        res = json.loads(out.strip().splitlines()[-1])
        received.update(res['received'])
        lost_events += sum(res['lost_events'].values())
    return {'received': received, 'lost_events': lost_events, 'pub': pub_res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('mode', nargs='?', default='run', choices=('run', '_pub', '_sub'))
    ap.add_argument('--cameras', type=int, default=6)
    ap.add_argument('--batches', type=int, default=3)
    ap.add_argument('--rate-hz', type=float, default=2.0)
    ap.add_argument('--width', type=int, default=1936)
    ap.add_argument('--height', type=int, default=1216)
    ap.add_argument('--stride', type=int, default=2)
    ap.add_argument('--pub-depth', type=int, nargs='+', default=[1, 10])
    ap.add_argument('--sub-depth', type=int, default=10)
    ap.add_argument('--segment-mib', type=int, nargs='+', default=[None])
    ap.add_argument('--heartbeat-ms', type=int, default=0)
    ap.add_argument('--port-queue', type=int, default=None)
    ap.add_argument('--per-topic', action='store_true')
    ap.add_argument('--record-to-disk', action='store_true')
    ap.add_argument('--cpu-load', type=int, default=0)
    ap.add_argument('--sub-nice', type=int, default=0)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--linger-s', type=float, default=5.0)
    ap.add_argument('--domain', type=int, default=int(os.environ.get('ROS_DOMAIN_ID', '44')))
    # internal
    ap.add_argument('--topic', default=None)
    ap.add_argument('--timeout-s', type=float, default=60.0)
    ap.add_argument('--idle-s', type=float, default=5.0)
    ap.add_argument('--expect-subs', type=int, default=1)
    ap.add_argument('--matched-file', default='')
    ap.add_argument('--record', default='')
    a = ap.parse_args()
    if a.mode == '_pub':
        a.pub_depth = a.pub_depth[0]
        run_publisher(a)
        return
    if a.mode == '_sub':
        run_subscriber(a)
        return
    n_topics = len(topics(a.cameras))
    with tempfile.TemporaryDirectory(prefix='qos_loss_') as tmp:
        for seg in a.segment_mib:
            for depth in a.pub_depth:
                segment = 'shipped' if seg is None else f'{seg}MiB'
                name = (f"depth={'all' if depth == 0 else depth} seg={segment}"
                        f"{f' hb={a.heartbeat_ms}ms' if a.heartbeat_ms else ''}"
                        f"{'' if a.port_queue is None else f' portq={a.port_queue or 512}'}"
                        f" subdepth={'all' if a.sub_depth == 0 else a.sub_depth}"
                        f"{' recording' if a.record_to_disk else ''}"
                        f"{f' cpuload={a.cpu_load}' if a.cpu_load else ''}"
                        f"{f' subnice={a.sub_nice}' if a.sub_nice else ''}")
                total_lost = runs_lost = 0
                for r in range(a.runs):
                    res = one_run(a, depth, seg, Path(tmp))
                    got = res['received']
                    short = [t for t, s in got.items() if len(s) < a.batches]
                    lost = a.batches * n_topics - sum(len(s) for s in got.values())
                    stamps = [1_000_000_000 + b * 1_000_000 for b in range(a.batches)]
                    per_batch = [sum(st not in s for s in got.values()) for st in stamps]
                    total_lost += lost
                    runs_lost += lost > 0
                    pub = res['pub']
                    total = a.batches * n_topics
                    detail = f' lost per batch {per_batch} short: {", ".join(short)}' if short else ''
                    print(f'{name} run {r}: received {total - lost}/{total} lost {lost} '
                          f'(lost events {res["lost_events"]}; '
                          f'publish {pub["publish_ms_mean"]:.0f} ms/batch, '
                          f'{pub["batches_per_s"]:.1f} batches/s, late {pub["late_batches"]}, '
                          f'publisher rss {pub["max_rss_mib"]:.0f} MiB){detail}', flush=True)
                print(f'{name}: lost {total_lost}/{a.runs * a.batches * n_topics} messages '
                      f'over {a.runs} runs, runs with loss {runs_lost}/{a.runs}', flush=True)


if __name__ == '__main__':
    main()
