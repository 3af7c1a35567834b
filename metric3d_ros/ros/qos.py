"""QoS settings of the depth node as typed configuration, and their rclpy profiles.

Inputs default to best effort, keep last 1: a camera driver publishing faster than the node infers must
never queue old frames (the node always wants the newest image; a reliable subscription would also make a
reliable driver retransmit frames that are already obsolete). A best-effort subscription matches both
best-effort and reliable publishers.

Outputs default to reliable, keep last 10: reliable publishers match both reliable subscribers (RViz's
default, recorders) and best-effort ones, and keep a sample whose fragments a lagging subscriber lost long
enough to repair it (keep last 1 replaced it with the next frame first: docs/NODE.md QoS).
"""
from __future__ import annotations

from dataclasses import dataclass

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITIES: tuple[str, ...] = ('best_effort', 'reliable')
DURABILITIES: tuple[str, ...] = ('volatile', 'transient_local')
MAX_QOS_DEPTH = 1000

_RELIABILITY = {'best_effort': ReliabilityPolicy.BEST_EFFORT, 'reliable': ReliabilityPolicy.RELIABLE}
_DURABILITY = {'volatile': DurabilityPolicy.VOLATILE, 'transient_local': DurabilityPolicy.TRANSIENT_LOCAL}


@dataclass(frozen=True)
class QosSettings:
    """One QoS choice: reliability, keep-last depth, durability (names as in the ROS parameters)."""

    reliability: str = 'best_effort'
    depth: int = 1
    durability: str = 'volatile'

    def __post_init__(self) -> None:
        if self.reliability not in RELIABILITIES:
            raise ValueError(
                f"QoS reliability must be 'best_effort' or 'reliable', got {self.reliability!r}"
            )
        if self.durability not in DURABILITIES:
            raise ValueError(
                f"QoS durability must be 'volatile' or 'transient_local', got {self.durability!r}"
            )
        depth = self.depth
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_QOS_DEPTH:
            raise ValueError(f'QoS depth (keep last N) must be in [1, {MAX_QOS_DEPTH}], got {depth!r}')

    def profile(self) -> QoSProfile:
        """The rclpy ``QoSProfile`` (history keep-last ``depth``)."""
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=self.depth,
            reliability=_RELIABILITY[self.reliability],
            durability=_DURABILITY[self.durability],
        )


def diagnostics_qos() -> QoSProfile:
    """/diagnostics as diagnostic_updater publishes it: reliable, keep last 10, volatile."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
