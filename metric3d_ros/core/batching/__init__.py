"""metric3d_ros.core.batching."""
