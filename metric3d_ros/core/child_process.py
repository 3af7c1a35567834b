"""Stopping a ``multiprocessing`` child that serves requests over a pipe (engine and publisher processes)."""
from __future__ import annotations

import threading


def stop_child(proc, conn, timeout_s: float, send_lock: threading.Lock | None = None) -> None:
    """Ask the child to close over ``conn``, wait ``timeout_s``, then terminate and finally kill it.

    ``proc`` / ``conn`` may be None (nothing started, or already stopped); ``conn`` is not closed here.
    """
    if conn is not None:
        try:
            if send_lock is None:
                conn.send(('close',))
            else:
                with send_lock:
                    conn.send(('close',))
        except (OSError, ValueError):
            pass  # already gone
    if proc is None:
        return
    proc.join(timeout_s)
    for stop in (proc.terminate, proc.kill):
        if not proc.is_alive():
            break
        stop()
        proc.join(5.0)
