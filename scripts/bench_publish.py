"""Publish cost of a 720p 32FC1 depth image and a 640x360 stride-2 cloud: message objects vs serialized bytes.

docs/NODE.md quotes it (2-core dev machine, 2026-11-22). Two processes, the ROS environment of .venv:
    .venv/bin/python scripts/bench_publish.py sub &   # a raw subscriber of both topics (14 s)
    .venv/bin/python scripts/bench_publish.py pub     # 2 x (60 messages each way), medians per publish
with FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml and one ROS_DOMAIN_ID for both.
"""
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header

from metric3d_ros.core.malloc_tuning import keep_large_allocations
from metric3d_ros.ros.cloud_conv import xyz_to_pointcloud2, xyz_to_pointcloud2_cdr
from metric3d_ros.ros.image_conv import array_to_image, array_to_image_cdr


def main(role: str) -> None:
    keep_large_allocations()
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    rclpy.init()
    node = rclpy.create_node(f'bench_publish_{role}')
    if role == 'sub':
        counts = {'depth': 0, 'points': 0}

        def counter(key):
            return lambda _raw: counts.__setitem__(key, counts[key] + 1)
        node.create_subscription(Image, 'depth', counter('depth'), qos, raw=True)
        node.create_subscription(PointCloud2, 'points', counter('points'), qos, raw=True)
        end = time.time() + 14
        while time.time() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        print('received', counts)
        return
    depth_pub = node.create_publisher(Image, 'depth', qos)
    cloud_pub = node.create_publisher(PointCloud2, 'points', qos)
    depth = np.random.rand(720, 1280).astype(np.float32)
    points = np.zeros((360, 640, 4), np.float32)
    points[..., :3] = np.random.rand(360, 640, 3)
    xyz = points[..., :3]
    header = Header(frame_id='cam')
    time.sleep(3)
    for mode in ('msg', 'raw', 'msg', 'raw'):
        depth_ms, cloud_ms = [], []
        for k in range(60):
            header.stamp.sec = k
            t0 = time.perf_counter()
            depth_pub.publish(array_to_image(depth, '32FC1', header) if mode == 'msg'
                              else array_to_image_cdr(depth, '32FC1', header))
            t1 = time.perf_counter()
            cloud_pub.publish(xyz_to_pointcloud2(xyz, header) if mode == 'msg'
                              else xyz_to_pointcloud2_cdr(xyz, header))
            t2 = time.perf_counter()
            depth_ms.append((t1 - t0) * 1e3)
            cloud_ms.append((t2 - t1) * 1e3)
            time.sleep(0.03)
        print(f'{mode}: depth {np.median(depth_ms):.2f} ms, cloud {np.median(cloud_ms):.2f} ms per publish')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'pub')
