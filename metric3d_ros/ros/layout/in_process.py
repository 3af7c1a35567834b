"""``process_layout: in_process``: every camera group in the node process (see ``ros.layout``)."""
from __future__ import annotations

from collections.abc import Mapping

from metric3d_ros.core.malloc_tuning import keep_large_allocations
from metric3d_ros.core.outputs import OutputSpec
from metric3d_ros.ros.layout.group import CameraGroup, CameraTopics, GroupReport
from metric3d_ros.ros.params import NodeConfig


class InProcessLayout:
    """The groups run on the node itself: its executor thread receives, each group's worker thread infers
    and publishes."""

    def __init__(self, node, config: NodeConfig, topics: Mapping[str, CameraTopics],
                 catalogue: Mapping[str, OutputSpec], fused_topics: Mapping[str, str]) -> None:
        self.groups = [
            CameraGroup(node, config, group, {cam: topics[cam] for cam in group.cameras}, catalogue,
                        fused_topics.get(group.name, ''))
            for group in config.groups]

    def configure(self) -> None:
        keep_large_allocations()  # frame-sized buffers stay mapped between frames (no page faults per frame)
        for group in self.groups:
            try:
                group.configure()
            except Exception as exc:
                self.close()
                raise RuntimeError(f'camera group {group.group.name} (device {group.group.device}): '
                                   f'building the engine raised: {exc}') from exc

    def activate(self) -> None:
        for group in self.groups:
            group.activate()

    def deactivate(self) -> None:
        for group in self.groups:
            group.deactivate()

    def close(self) -> None:
        for group in self.groups:
            group.close()

    def reports(self) -> list[GroupReport]:
        return [group.report() for group in self.groups]

    def engines(self) -> list:
        return [group.engine for group in self.groups if group.engine is not None]
