"""The batching decisions, with no thread and no clock of its own (times are passed in, so it is tested
with fake clocks): which frames wait, when a batch is due, and which frames it holds."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from metric3d_ros.core.batching.config import SchedulerConfig
from metric3d_ros.core.batching.stamps import is_stale

Item = TypeVar('Item')


@dataclass(frozen=True, eq=False)
class Pending(Generic[Item]):
    """A frame waiting for dispatch. ``received_ns`` is on the monotonic clock, ``stamp_ns`` on the stamp
    clock; ``epoch`` is the scheduler's stamp epoch at submission (see ``BatchScheduler.reset_stamps``).
    Compared by identity (items may be numpy arrays)."""

    camera_id: str
    item: Item
    stamp_ns: int
    received_ns: int
    epoch: int = 0


class BatchPlanner(Generic[Item]):
    """Per-camera bounded slots and the dispatch rule. Not thread-safe: the scheduler holds its lock.

    A batch is due when frames are pending and
      * every active camera has a pending frame, or
      * ``max_batch_size`` frames are pending, or
      * ``max_wait_ms`` has passed since the oldest pending frame arrived.
    A camera is active while its last frame arrived less than ``camera_timeout_ms`` ago.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self._config = config
        self._max_age_ns = config.max_input_age_ns
        self._queues: dict[str, deque[Pending[Item]]] = {}
        self._last_received_ns: dict[str, int] = {}

    @property
    def config(self) -> SchedulerConfig:
        return self._config

    def add(
        self, camera_id: str, item: Item, stamp_ns: int, now_ns: int, epoch: int = 0
    ) -> list[Pending[Item]]:
        """Queue a frame received at monotonic ``now_ns``; return the frames it pushed out (oldest first)."""
        queue = self._queues.setdefault(camera_id, deque())
        queue.append(Pending(camera_id, item, stamp_ns, now_ns, epoch))
        self._last_received_ns[camera_id] = now_ns
        overflow = []
        while len(queue) > self._config.queue_depth:
            overflow.append(queue.popleft())
        return overflow

    def pending_count(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def pending_stamps_ns(self, camera_id: str) -> list[int]:
        """Stamps of the frames of ``camera_id`` waiting for dispatch, oldest first."""
        return [pending.stamp_ns for pending in self._queues.get(camera_id, ())]

    def is_active(self, camera_id: str, now_ns: int) -> bool:
        last_ns = self._last_received_ns.get(camera_id)
        return last_ns is not None and now_ns - last_ns < self._config.camera_timeout_ns

    def active_cameras(self, now_ns: int) -> list[str]:
        return sorted(camera_id for camera_id in self._last_received_ns if self.is_active(camera_id, now_ns))

    def _waited_for(self, now_ns: int) -> list[str]:
        """Active cameras that have no pending frame."""
        return [
            camera_id
            for camera_id in self._last_received_ns
            if not self._queues.get(camera_id) and self.is_active(camera_id, now_ns)
        ]

    def _oldest_received_ns(self) -> int | None:
        heads = [queue[0].received_ns for queue in self._queues.values() if queue]
        return min(heads) if heads else None

    def ready(self, now_ns: int) -> bool:
        """True when a batch is due at monotonic ``now_ns`` (see the class docstring)."""
        oldest_ns = self._oldest_received_ns()
        if oldest_ns is None:
            return False
        if self.pending_count() >= self._config.max_batch_size:
            return True
        if now_ns - oldest_ns >= self._config.max_wait_ns:
            return True
        return not self._waited_for(now_ns)

    def next_deadline_ns(self, now_ns: int) -> int | None:
        """The monotonic time at which ``ready`` may next turn true without a new frame (None: never).

        That is the pending batch's ``max_wait_ms`` deadline or the earliest time a waited-for camera
        stops being active, whichever comes first.
        """
        oldest_ns = self._oldest_received_ns()
        if oldest_ns is None:
            return None
        deadline_ns = oldest_ns + self._config.max_wait_ns
        for camera_id in self._waited_for(now_ns):
            deadline_ns = min(deadline_ns, self._last_received_ns[camera_id] + self._config.camera_timeout_ns)
        return deadline_ns

    def take(self, stamp_now_ns: int) -> tuple[list[Pending[Item]], list[Pending[Item]]]:
        """Remove and return ``(batch, stale)``.

        Frames older than ``max_input_age_ms`` at ``stamp_now_ns`` (stamp clock) are dropped into ``stale``.
        The batch holds at most ``max_batch_size`` of the rest: the oldest frame of each camera first
        (oldest stamp first across cameras), then each camera's second oldest, and so on; frames left
        over stay pending for the next batch.
        """
        stale: list[Pending[Item]] = []
        for queue in self._queues.values():
            kept = []
            for pending in queue:
                if is_stale(pending.stamp_ns, stamp_now_ns, self._max_age_ns):
                    stale.append(pending)
                else:
                    kept.append(pending)
            if len(kept) != len(queue):
                queue.clear()
                queue.extend(kept)
        ranked = sorted(
            ((rank, pending.stamp_ns, pending.received_ns, pending.camera_id)
             for queue in self._queues.values() for rank, pending in enumerate(queue)),
        )[: self._config.max_batch_size]
        counts: dict[str, int] = {}
        for _, _, _, camera_id in ranked:
            counts[camera_id] = counts.get(camera_id, 0) + 1
        batch: list[Pending[Item]] = []
        for camera_id, count in counts.items():
            queue = self._queues[camera_id]
            batch.extend(queue.popleft() for _ in range(count))
        batch.sort(key=lambda pending: (pending.stamp_ns, pending.received_ns, pending.camera_id))
        stale.sort(key=lambda pending: (pending.stamp_ns, pending.camera_id))
        return batch, stale

    def clear(self) -> list[Pending[Item]]:
        """Remove and return every pending frame (cameras stay known, for activity)."""
        dropped = [pending for queue in self._queues.values() for pending in queue]
        for queue in self._queues.values():
            queue.clear()
        return dropped

    def forget_camera(self, camera_id: str) -> list[Pending[Item]]:
        """Stop tracking ``camera_id`` (it is no longer waited for); return its pending frames."""
        self._last_received_ns.pop(camera_id, None)
        return list(self._queues.pop(camera_id, ()))
