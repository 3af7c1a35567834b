"""metric3d_ros.core.engine."""
