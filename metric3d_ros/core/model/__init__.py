"""metric3d_ros.core.model."""
