"""Child processes of the tools (the depth node started by the demo and the node benchmark)."""
from __future__ import annotations

import signal
import subprocess


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
