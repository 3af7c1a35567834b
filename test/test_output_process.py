"""OutputProcessPool bookkeeping without processes: a dead helper releases what it held at once."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip('rclpy')

from std_msgs.msg import Header  # noqa: E402

from metric3d_ros.core.engine.types import FrameResult, OutputRequest  # noqa: E402
from metric3d_ros.ros.output_process import _Frame, _Worker  # noqa: E402
from metric3d_ros.ros.publishers import Job  # noqa: E402

pytestmark = pytest.mark.ros


class _DeadPipe:
    def recv(self):
        raise EOFError

    def send(self, msg):
        raise BrokenPipeError


def _bare_worker(done):
    worker = object.__new__(_Worker)  # no process: only the bookkeeping is under test
    worker.spec = type('Spec', (), {'index': 0})()
    worker._on_done = done
    worker._send_lock = threading.Lock()
    worker._pending = {}
    worker._pending_lock = threading.Lock()
    worker.proc = None
    worker.conn = _DeadPipe()
    worker.closed = False
    worker._retry_after_s = float('inf')  # a restart is never tried here
    return worker


def _frame(parts=1):
    job = Job('cam', Header(frame_id='cam_optical_frame'), None, OutputRequest())
    return _Frame(job, FrameResult(camera_id='cam', stamp_ns=7), parts)


def test_a_dead_helper_fails_what_it_held_and_later_parts_at_once():
    done = []
    worker = _bare_worker(lambda job, result, ms, error, end_ns: done.append((result.stamp_ns, error)))
    held = _frame()
    worker._pending[1] = held
    worker._read(worker.conn)  # EOF: the process is gone
    assert done == [(7, 'the publisher process exited')] and worker.pending() == 0
    worker.submit(2, _frame(), None)  # down, restart backing off: fails at once, does not block
    assert len(done) == 2 and 'down' in done[1][1]


def test_a_frame_split_over_two_helpers_completes_once_with_the_first_error():
    done = []
    frame = _frame(parts=2)
    worker = _bare_worker(lambda job, result, ms, error, end_ns: done.append((ms, error, end_ns)))
    worker._finish(frame, 3.0, None, 200)
    assert done == []
    worker._finish(frame, 5.0, 'boom', 100)
    assert done == [(5.0, 'boom', 200)]  # the slower part's time, the first error, the last part's end


def test_a_failing_callback_does_not_end_the_acknowledgement_thread():
    def explode(*_):
        raise RuntimeError('callback bug')

    worker = _bare_worker(explode)
    worker._finish(_frame(), 1.0, None)  # logged, not raised
