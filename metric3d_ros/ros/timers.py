"""The node's periodic work on the steady clock.

A node timer runs on the node's clock by default, which is ROS time: with ``use_sim_time`` it advances
only with /clock, so a paused, slow or finished bag froze /diagnostics and the held-image expiry (the
figures they show are on the monotonic clock anyway). ``steady_timer`` is ``node.create_timer`` on a
steady clock: its period is wall time whatever ROS time does. Message stamps keep ROS time.
"""
from __future__ import annotations

from collections.abc import Callable

from rclpy.clock import Clock, ClockType


def steady_timer(node, period_s: float, callback: Callable[[], object]):
    """``node.create_timer(period_s, callback)`` on a steady clock (wall-time period, sim time or not);
    destroy it with ``node.destroy_timer``."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
