"""Process helpers of the tools: stopping a child process (the depth node started by the demo and the node
benchmark), and the fixed-rate pacing of the camera and output simulators (``Pacer``)."""
from __future__ import annotations

import signal
import subprocess
import time


def interrupt_and_wait(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """Ctrl-C ``process`` (if still running), wait up to ``timeout_s``, kill it if it hangs; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10.0)
    return int(process.returncode)


class Pacer:
    """Ticks at a fixed rate on the monotonic clock: ``wait()`` sleeps until the next tick is due. A caller
    that fell behind starts again from now instead of bursting to catch up."""

    def __init__(self, rate_hz: float) -> None:
        self._period_s = 1.0 / rate_hz
        self._next_s = time.monotonic()

    def wait(self) -> None:
        self._next_s += self._period_s
        delay_s = self._next_s - time.monotonic()
        if delay_s > 0.0:
            time.sleep(delay_s)
        else:
            self._next_s = time.monotonic()
