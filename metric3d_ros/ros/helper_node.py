"""The ROS node of a helper process (publisher, receiver): its own rclpy context, no parameter services."""
from __future__ import annotations


def start_helper_node(node_name: str, namespace: str, domain_id: int):
    """A node in a new rclpy context on ``domain_id`` (no parameter services: the depth node owns those)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=domain_id)
    return rclpy.create_node(node_name, namespace=namespace, context=context, start_parameter_services=False)


def stop_helper_node(node) -> None:
    """Destroy ``node`` and shut its context down."""
    import rclpy

    context = node.context
    node.destroy_node()
    rclpy.shutdown(context=context)
