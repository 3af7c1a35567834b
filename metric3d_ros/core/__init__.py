"""ROS-free core of metric3d_ros.

Nothing under this package may import rclpy or any ``*_msgs`` package, and importing
``metric3d_ros.core`` must not import torch (test/test_architecture.py enforces both).
Sub-packages: geometry (numpy), model (torch), engine, batching.
"""
