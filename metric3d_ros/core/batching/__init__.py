"""metric3d_ros.core.batching: pairing of images with CameraInfo, stamp checks and the batching scheduler.

ROS-free and torch-free. The node converts messages in executor callbacks, pairs them
(``CameraInfoPairer``), and ``submit``s them to a ``BatchScheduler`` whose single worker thread runs
``process_batch`` and publishes the results. Drop reasons are in ``reasons``; statistics for
/diagnostics in ``metric3d_ros.core.stats``.
"""
from metric3d_ros.core.batching import reasons
from metric3d_ros.core.batching.clock import ClockNs, FakeClock, monotonic_ns
from metric3d_ros.core.batching.config import SchedulerConfig
from metric3d_ros.core.batching.pairing import ANY_AGE_MS, CameraInfoPairer, PairingConfig, PairResult
from metric3d_ros.core.batching.planner import BatchPlanner, Pending
from metric3d_ros.core.batching.scheduler import PAUSED, STOPPED, BatchScheduler
from metric3d_ros.core.batching.stamps import StampGate, as_stamp_ns
from metric3d_ros.core.batching.throttle import Throttle

__all__ = [
    'ANY_AGE_MS',
    'PAUSED',
    'STOPPED',
    'BatchPlanner',
    'BatchScheduler',
    'CameraInfoPairer',
    'ClockNs',
    'FakeClock',
    'PairResult',
    'PairingConfig',
    'Pending',
    'SchedulerConfig',
    'StampGate',
    'Throttle',
    'as_stamp_ns',
    'monotonic_ns',
    'reasons',
]
