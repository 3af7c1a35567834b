"""A known publish stream shaped like the depth node's outputs, for checking the benchmark's consumers.

    python -m metric3d_ros.tools.output_sim --cameras cam0 --size 1280x720 --rate-hz 30 --duration-s 20 \
        --outputs depth,depth_info,points --cloud-stride 2 --summary-json /tmp/out.json

Per camera ``<name>`` and tick it publishes, stamped with the tick's time (system clock), what the node
publishes for one frame: ``<name>/depth/image`` (32FC1, the camera size), ``<name>/depth/camera_info``,
``<name>/points`` (organized x y z + pad, point_step 16, every ``--cloud-stride``-th row and column),
``<name>/normals/image`` (32FC3), ``<name>/confidence/image`` (32FC1), whichever ``--outputs`` names. The
messages are serialized once at start-up; a tick only writes the stamp into the bytes and publishes them
(``Publisher.publish(bytes)``), reliable, keep last ``--qos-depth`` like the node's defaults.
``metric3d_node_bench --check`` runs one process of it per camera in place of the simulator and the node:
whatever the consumers miss of this stream is the measurement's own limit.

At exit (duration reached, SIGINT/SIGTERM) it prints one JSON line (frames published per camera, ticks,
elapsed) and with ``--summary-json`` also writes it with every published stamp (``stamps_ns``), in the
format of ``metric3d_camera_sim``'s summary.
"""
from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import time

import numpy as np

from metric3d_ros.tools.camera_sim import parse_size
from metric3d_ros.tools.processes import Pacer

OUTPUT_TOPICS = {
    'depth': 'depth/image',
    'depth_info': 'depth/camera_info',
    'points': 'points',
    'normals': 'normals/image',
    'confidence': 'confidence/image',
}


def _image(width_px: int, height_px: int, encoding: str, channels: int):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.height, msg.width, msg.encoding = height_px, width_px, encoding
    msg.step = width_px * 4 * channels
    msg.data = np.full(height_px * msg.step, 0x3F, np.uint8).tobytes()
    return msg


def _cloud(width_px: int, height_px: int, stride: int):
    from sensor_msgs.msg import PointCloud2, PointField

    msg = PointCloud2()
    msg.height, msg.width = len(range(0, height_px, stride)), len(range(0, width_px, stride))
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, n in enumerate('xyz')]
    msg.point_step = 16
    msg.row_step = 16 * msg.width
    msg.is_dense = False
    msg.data = np.full(msg.height * msg.row_step, 0x3F, np.uint8).tobytes()
    return msg


def _camera_info(width_px: int, height_px: int):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.width, msg.height = width_px, height_px
    focal_px = 0.8 * width_px
    msg.k = [focal_px, 0.0, width_px / 2.0, 0.0, focal_px, height_px / 2.0, 0.0, 0.0, 1.0]
    msg.distortion_model = 'plumb_bob'
    return msg


def serialized_outputs(camera: str, width_px: int, height_px: int, outputs: list[str],
                       cloud_stride: int) -> dict[str, bytearray]:
    """Serialized messages per output name (stamp 0, frame_id ``<camera>_optical_frame``)."""
    from rclpy.serialization import serialize_message

    builders = {
        'depth': lambda: _image(width_px, height_px, '32FC1', 1),
        'depth_info': lambda: _camera_info(width_px, height_px),
        'points': lambda: _cloud(width_px, height_px, cloud_stride),
        'normals': lambda: _image(width_px, height_px, '32FC3', 3),
        'confidence': lambda: _image(width_px, height_px, '32FC1', 1),
    }
    serialized = {}
    for name in outputs:
        msg = builders[name]()
        msg.header.frame_id = f'{camera}_optical_frame'
        serialized[name] = bytearray(serialize_message(msg))
    return serialized


def set_stamp(buffer: bytearray, stamp_ns: int) -> None:
    """Write ``stamp_ns`` into the header of a serialized (little-endian CDR) message."""
    if not buffer[1] & 1:
        raise ValueError('only little-endian CDR is written here')
    struct.pack_into('<iI', buffer, 4, stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)


def run(args: argparse.Namespace, ros_args: list[str] | None = None) -> dict:
    """Publish until the duration or a signal; return the summary."""
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    stop = {'flag': False}

    def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
        stop['flag'] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    node = rclpy.create_node('metric3d_output_sim', enable_rosout=False)
    types = {'depth': Image, 'depth_info': CameraInfo, 'points': PointCloud2, 'normals': Image,
             'confidence': Image}
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=args.qos_depth,
                     reliability=ReliabilityPolicy.RELIABLE)
    width_px, height_px = parse_size(args.size)
    cameras = [c.strip() for c in args.cameras.split(',') if c.strip()]
    streams = []  # (camera, publisher, buffer)
    for cam in cameras:
        buffers = serialized_outputs(cam, width_px, height_px, args.outputs, args.cloud_stride)
        for name in args.outputs:
            publisher = node.create_publisher(types[name], f'{cam}/{OUTPUT_TOPICS[name]}', qos)
            streams.append((cam, publisher, buffers[name]))
    try:
        deadline = time.monotonic() + args.wait_for_subscribers_s
        while time.monotonic() < deadline and not stop['flag']:
            if all(p.get_subscription_count() > 0 for _, p, _ in streams):
                break
            time.sleep(0.05)
        if args.start_at_unix_s > 0.0:
            time.sleep(max(0.0, args.start_at_unix_s - time.time()))
        published = dict.fromkeys(cameras, 0)
        stamps_ns = []
        pacer = Pacer(args.rate_hz)
        start_s = time.monotonic()
        while not stop['flag'] and time.monotonic() - start_s < args.duration_s:
            stamp_ns = time.time_ns()
            for _, publisher, buffer in streams:
                set_stamp(buffer, stamp_ns)
                publisher.publish(bytes(buffer))
            for cam in cameras:
                published[cam] += 1
            stamps_ns.append(stamp_ns)
            pacer.wait()
        summary = {'published': published, 'ticks': len(stamps_ns),
                   'elapsed_s': round(time.monotonic() - start_s, 3), 'rate_hz': args.rate_hz}
        print(json.dumps(summary), flush=True)
        if args.summary_json:
            with open(args.summary_json, 'w', encoding='utf-8') as f:
                json.dump({**summary, 'stamps_ns': stamps_ns}, f)
        return summary
    finally:
        node.destroy_node()
        rclpy.shutdown()


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line arguments (ROS arguments already removed)."""
    parser = argparse.ArgumentParser(prog='metric3d_output_sim', description=__doc__.split('\n')[0])
    parser.add_argument('--cameras', default='camera', help='comma-separated camera names')
    parser.add_argument('--size', default='640x480', help='WIDTHxHEIGHT of every camera')
    parser.add_argument('--rate-hz', type=float, default=10.0)
    parser.add_argument('--duration-s', type=float, default=10.0)
    parser.add_argument('--outputs', default='depth,depth_info,points', help=f'of {",".join(OUTPUT_TOPICS)}')
    parser.add_argument('--cloud-stride', type=int, default=2)
    parser.add_argument('--qos-depth', type=int, default=1)
    parser.add_argument('--wait-for-subscribers-s', type=float, default=0.0,
                        help='wait this long at most for a subscriber on every topic')
    parser.add_argument('--start-at-unix-s', type=float, default=0.0,
                        help='first tick at this wall-clock time')
    parser.add_argument('--summary-json', default='')
    args = parser.parse_args(argv)
    args.outputs = [o.strip() for o in args.outputs.split(',') if o.strip()]
    unknown = sorted(set(args.outputs) - set(OUTPUT_TOPICS))
    if unknown or not args.outputs:
        parser.error(f'--outputs: unknown {unknown}; choose from {",".join(OUTPUT_TOPICS)}')
    if not args.rate_hz > 0.0 or args.cloud_stride < 1:
        parser.error('--rate-hz must be > 0 and --cloud-stride >= 1')
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point (``python -m metric3d_ros.tools.output_sim``)."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    run(parse_args(remove_ros_args(argv)[1:]), ros_args=argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
