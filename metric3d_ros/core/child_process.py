"""Starting and stopping ``multiprocessing`` children that serve requests over a pipe (engine, publisher and
receiver processes)."""
from __future__ import annotations

import multiprocessing
import threading


class ChildStartError(RuntimeError):
    """A child did not answer its start-up handshake with ('ready', ...)."""


def start_child(target, args: tuple, name: str, timeout_s: float, what: str):
    """Spawn ``target(child_conn, *args)`` (daemon, 'spawn' start method) and wait up to ``timeout_s`` for its
    ``('ready', detail)``; returns ``(process, parent_conn)``. Anything else (a timeout, an exit, an
    ``('error', reason)``) kills the child and raises ``ChildStartError`` naming ``what``."""
    ctx = multiprocessing.get_context('spawn')
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child_conn, *args), daemon=True, name=name)
    proc.start()
    child_conn.close()
    try:
        if not parent_conn.poll(timeout_s):
            raise ChildStartError(f'{what} did not start within {timeout_s:g} s')
        try:
            kind, detail = parent_conn.recv()
        except (EOFError, OSError) as exc:
            raise ChildStartError(f'{what} exited while starting') from exc
        except (TypeError, ValueError) as exc:  # not a (kind, detail) pair
            raise ChildStartError(f'{what} answered its start with something else: {exc}') from exc
        if kind != 'ready':
            raise ChildStartError(f'{what} failed to start: {detail}')
    except ChildStartError:
        if proc.is_alive():
            proc.kill()
        proc.join(5.0)
        parent_conn.close()
        raise
    return proc, parent_conn


def requests(conn):
    """The child side's request loop: every message from the parent until ``('close',)`` or the pipe ends
    (the parent is gone)."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == 'close':
            return
        yield msg


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
