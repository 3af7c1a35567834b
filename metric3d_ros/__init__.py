"""metric3d_ros: real-time multi-camera metric depth (Metric3D v2) for ROS 2.

Layout:
  metric3d_ros.core   ROS-free: configuration, geometry, model, engine, batching.
                      Imports neither rclpy nor message packages; torch only where used.
  metric3d_ros.codec  ROS-free message codec: Image, CompressedImage, CameraInfo, PointCloud2 as CDR
                      bytes or message objects <-> numpy; used by the node and the bag tools.
  metric3d_ros.ros    The thin ROS 2 layer (rclpy, messages, node, conversions).
  metric3d_ros.tools  Command-line tools: export, bags, evaluation, benchmarks, demo.
"""

__version__ = '0.1.0'
