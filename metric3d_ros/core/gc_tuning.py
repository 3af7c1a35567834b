"""Keep Python's cyclic garbage collector off the start-up objects: ``gc.freeze`` after configuring.

CPython's collector runs a full (generation 2) collection every so often, and a full collection visits every
container object the process holds: in the depth node, the engine process and the publisher processes that
is hundreds of thousands of objects made at start-up (modules, rclpy and message classes, the network's
Python objects), none of which will ever be garbage. Such a collection holds the interpreter lock for
milliseconds to tens of milliseconds at a random moment, which shows up as a latency spike for the frames
in flight. ``freeze_startup_objects`` collects once, then moves every surviving object into the permanent
generation, so later collections visit only objects made since. Objects made later are collected as usual.
"""
from __future__ import annotations

import gc


def freeze_startup_objects() -> int:
    """Collect, then exclude every object alive now from future collections; the number frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
