"""metric3d_ros.core.geometry."""
