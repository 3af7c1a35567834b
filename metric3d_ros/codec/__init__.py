"""The one ROS-free message codec: sensor_msgs Image, CompressedImage, CameraInfo and PointCloud2 to and
from numpy, as serialized CDR bytes (raw subscriptions, ``Publisher.publish(bytes)``, rosbag2 records) or
as message objects (rclpy or rosbags, duck-typed, read only).

Modules: ``cdr`` (the CDR reader / writer, ``read_header``), ``image``, ``compressed``, ``camera_info``,
``cloud``. Imports numpy, OpenCV and ``metric3d_ros.core`` only; never rclpy, rosbags or message packages.
"""
