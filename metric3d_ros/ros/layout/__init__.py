"""Where the node's work runs: the process layout, behind one interface (``Layout``), chosen by the
``process_layout`` parameter.

- ``in_process``: every camera group runs in the node process (``CameraGroup``: subscriptions, pairing,
  batching, its own engine and worker thread, publishing). For CPU and small rigs (about two 720p cameras
  at 30 Hz per process on a GPU host).
- ``group_workers``: each camera group runs in its own worker process (``ros.layout.workers``), a plain
  rclpy node ``<node>_<group>`` in the node's namespace that subscribes, pairs, batches, infers and publishes
  its cameras on the node's resolved topic names. No pixel crosses a process boundary inside the node: the
  DDS sample goes straight to the process that infers and publishes it. The node process keeps the
  lifecycle, the parameters and /diagnostics. Groups map onto devices (``group_devices``), so several GPUs
  serve one rig; a group whose worker dies is restarted (off every other group's path) and the frames it
  held are counted as ``worker_died``.

Both modes run the same ``CameraGroup`` code; a mode sets what its processes need (thread names, signal
handling) and nothing else is a parameter.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from metric3d_ros.core.outputs import OutputSpec
from metric3d_ros.ros.layout.group import CameraTopics, GroupReport
from metric3d_ros.ros.params import NodeConfig

LAYOUTS = ('in_process', 'group_workers')


class Layout(Protocol):
    """The node's view of where its camera groups run."""

    def configure(self) -> None:
        """Build every group's engine (raises with a message that names the group on failure)."""

    def activate(self) -> None:
        """Start receiving, inferring and publishing."""

    def deactivate(self) -> None:
        """Stop receiving; pending frames are discarded; publishers are destroyed."""

    def close(self) -> None:
        """Release everything (engines, worker processes); safe to call more than once."""

    def reports(self) -> list[GroupReport]:
        """Every group's latest state and statistics, for /diagnostics."""

    def engines(self) -> list:
        """The engines of the groups running in this process (empty for group workers)."""


def make_layout(node, config: NodeConfig, topics: Mapping[str, CameraTopics],
                catalogue: Mapping[str, OutputSpec], fused_topics: Mapping[str, str]) -> Layout:
    """The layout named by ``config.process_layout`` for ``node``; ``fused_topics``: group name -> resolved
    ``fused_points`` topic (empty when the fused cloud is off)."""
    if config.process_layout == 'in_process':
        from metric3d_ros.ros.layout.in_process import InProcessLayout

        return InProcessLayout(node, config, topics, catalogue, fused_topics)
    if config.process_layout == 'group_workers':
        from metric3d_ros.ros.layout.workers import GroupWorkersLayout

        return GroupWorkersLayout(node, config, topics, catalogue, fused_topics)
    raise ValueError(f'process_layout must be one of {LAYOUTS}, got {config.process_layout!r}')


__all__ = ['LAYOUTS', 'CameraTopics', 'GroupReport', 'Layout', 'make_layout']
