"""The depth engine in a child process, fed through shared memory: ``ProcessEngine``.

Why: in a ROS node the executor thread (receiving images), the inference worker and the publisher share
one interpreter lock. Every torch call of the worker gives the lock up and must win it back, so under
image traffic the GPU waits for Python. ``ProcessEngine`` runs ``DepthEngine`` in its own process (the
``spawn`` start method, so CUDA starts cleanly there): the calling thread only copies the frames' pixels
into shared memory (numpy copies run without the lock) and waits on a pipe, and the child process owns
the device alone. The calling process does not even import torch.

It has ``DepthEngine``'s interface: ``infer(frames, request)`` returns one ``FrameResult`` per frame in
order, with per-frame errors (a bad frame fails alone); ``warmup()``, ``close()``, ``device``, ``config``.

Transfers: pixels of well-formed frames ((H, W, 3) uint8 arrays) go through an input arena (shared memory
created by this process, grown when a batch needs more) and reach ``DepthEngine`` in the child as
zero-copy views; other frames are pickled as they are, so the child's ``DepthEngine`` rejects them with its
usual message. The child writes every output array into an output arena (created by the child, grown as
needed) and sends back where each array lies; this process copies them out, so results own their memory
exactly like ``DepthEngine``'s.

``malloc_tuning`` (default on) applies ``core.malloc_tuning.keep_large_allocations`` in the child. Timings:
each result's ``timings_ms`` adds ``ipc_write_in`` (pixels into shared memory), ``ipc_wait`` (request to
reply, the child's whole work), ``ipc_write_out`` (the child copying the outputs into shared memory, part
of ``ipc_wait``) and ``ipc_read_out`` (copying them out here), in ms per batch.

Failures: if the child dies (a crashed driver, killed by the OOM killer), the call in progress raises
``EngineProcessError`` and the next ``infer`` starts a new child (loads and warms up again) before it runs;
``restarts`` counts them. The child ignores SIGINT: Ctrl-C in a terminal reaches the whole process group,
and shutting the engine down is the parent's job (``close``). If the parent dies, the child sees its pipe
close and exits.

Backends must be importable by name in the child: the built-in ones and the test backend 'fake' are; a
backend registered at run time with ``register_backend`` exists only in the process that registered it.
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from metric3d_ros.core.child_process import requests, stop_child
from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine import host_memory
from metric3d_ros.core.engine.host_memory import HostRegistration
from metric3d_ros.core.engine.types import Frame, FrameResult, OutputRequest, expand_requests
from metric3d_ros.core.geometry.cloud import padded_xyz
from metric3d_ros.core.malloc_tuning import keep_large_allocations
from metric3d_ros.core.parallel_copy import copy_parallel

LOG = logging.getLogger(__name__)

_ALIGN_B = 64
_ARRAY_FIELDS = ('depth_m', 'confidence', 'normals', 'points_xyz', 'points_rgb')


@dataclass(frozen=True)
class SharedArray:
    """Where an output array lies in an engine process's output arena (``FrameResult.shared``)."""

    arena: str
    offset: int
    shape: tuple[int, ...]
    dtype: str
    padded: bool = False


class EngineProcessError(RuntimeError):
    """The engine process failed to start, died, or did not answer."""


def _aligned(offset: int) -> int:
    return (offset + _ALIGN_B - 1) // _ALIGN_B * _ALIGN_B


def attach_block(name: str) -> shared_memory.SharedMemory:
    """Open an existing block without registering it with this process's resource tracker a second time
    (its creator unlinks it)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        # Older Pythons register on attach too; the spawned child shares its parent's tracker, where a name
        # is a set entry, so the creator's unlink still unregisters it exactly once.
        return shared_memory.SharedMemory(name=name)


def _is_plain_image(image: object) -> bool:
    return (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0)


@dataclass(frozen=True)
class _Packed:
    """Where a frame's pixels lie in the input arena (or the frame itself, pickled, when not plain)."""

    offset: int
    shape: tuple[int, ...]
    intrinsics: Any
    camera_id: str
    stamp_ns: int
    frame_id: str
    inline: Frame | None = None


class _Arena:
    """A growable shared-memory block owned (created, unlinked) by one process; with ``register`` (the
    engine process on CUDA) pinned for DMA while it lives (``host_memory``)."""

    def __init__(self, register: bool = False) -> None:
        self.block: shared_memory.SharedMemory | None = None
        self.register = register
        self.registration: HostRegistration | None = None

    @property
    def name(self) -> str:
        return self.block.name if self.block is not None else ''

    def reserve(self, size_b: int) -> shared_memory.SharedMemory:
        """The block, replaced by a larger one when it holds fewer than ``size_b`` bytes."""
        if self.block is None or self.block.size < size_b:
            self.release()
            grown = max(int(size_b * 1.25), 1 << 20)
            self.block = shared_memory.SharedMemory(create=True, size=grown)
            if self.register:
                self.registration = host_memory.register(self.block.buf)
        return self.block

    def allocator(self) -> _ArenaAllocator | None:
        """Pieces of the (registered) block for the engine's downloads; None when it is not registered."""
        if self.block is None or self.registration is None:
            return None
        return _ArenaAllocator(self.block)

    def release(self) -> None:
        block, self.block = self.block, None
        registration, self.registration = self.registration, None
        if registration is not None:
            registration.close()
        if block is not None:
            close_block(block)
            unlink_block(block)


class _ArenaAllocator:
    """Consecutive 64-byte aligned pieces of an output arena, as CPU tensors (``transfer.HostAllocator``):
    the engine downloads its outputs straight into the arena. Returns None once the arena is full."""

    def __init__(self, block: shared_memory.SharedMemory) -> None:
        self.buffer = block.buf
        self.size_b = block.size
        self.used_b = 0

    def __call__(self, numel: int, dtype):
        import torch

        nbytes = int(numel) * dtype.itemsize
        start = _aligned(self.used_b)
        if nbytes == 0 or start + nbytes > self.size_b:
            return None
        self.used_b = start + nbytes
        return torch.frombuffer(self.buffer, dtype=dtype, count=int(numel), offset=start)


def close_block(block: shared_memory.SharedMemory) -> None:
    """Unmap ``block`` (not while a view of it may still be read: see ``_Viewer.close``)."""
    try:
        block.close()
    except BufferError:  # an exported buffer is still alive; the mapping goes with its last user
        pass


def unlink_block(block: shared_memory.SharedMemory) -> None:
    try:
        block.unlink()
    except FileNotFoundError:  # already removed (by the other side, or the resource tracker)
        pass


class _Viewer:
    """This process's view of the other side's arena (re-attached when the other side grows it)."""

    def __init__(self, register: bool = False) -> None:
        self.block: shared_memory.SharedMemory | None = None
        self.register = register
        self.registration: HostRegistration | None = None

    def get(self, name: str) -> shared_memory.SharedMemory:
        if self.block is None or self.block.name != name.lstrip('/'):
            self.close()
            self.block = attach_block(name)
            if self.register:
                self.registration = host_memory.register(self.block.buf)
        return self.block

    def close(self, after: object | None = None) -> None:
        """Unmap the block, or (``after`` given) only once ``after`` is garbage: numpy views of the block do
        not keep the mapping alive, so unmapping under a live view would let it read freed memory."""
        block, self.block = self.block, None
        registration, self.registration = self.registration, None
        if registration is not None:
            registration.close()
        if block is None:
            return
        if after is not None:
            weakref.finalize(after, close_block, block)
        else:
            close_block(block)

    def unlink(self) -> None:
        """Remove the block's name (when its creator can no longer do it)."""
        if self.block is not None:
            unlink_block(self.block)


# ----------------------------------------------------------------------------------------- child side
def _serve(config: EngineConfig, conn, torch_threads: int, malloc_tuning: bool) -> None:
    """Child process main: build the engine, then answer requests until 'close' or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if malloc_tuning:
        keep_large_allocations()
    try:
        import torch

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        from metric3d_ros.core.engine.engine import DepthEngine

        engine = DepthEngine(config)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(('error', f'{type(exc).__name__}: {exc}'))
        return
    conn.send(('ready', {'device': str(engine.device)}))
    # on CUDA the arenas are pinned: frames are uploaded from, and outputs downloaded into, shared memory
    register = engine.device.type == 'cuda'
    inputs = _Viewer(register)
    outputs: dict[int, _Arena] = {}
    try:
        for msg in requests(conn):  # until 'close' or the parent is gone
            kind = msg[0]
            try:
                if kind == 'warmup':
                    engine.warmup(msg[1], msg[2])
                    reply: tuple = ('ok', None)
                elif kind == 'infer':
                    slot, rest = msg[1], msg[2:]
                    arena = outputs.setdefault(slot, _Arena(register))
                    reply = ('results',) + _child_infer(engine, inputs, arena, *rest)
                else:
                    reply = ('error', f'unknown request {kind!r}')
            except Exception as exc:  # noqa: BLE001 - the parent decides
                LOG.exception('engine process: %s failed', kind)
                reply = ('error', f'{type(exc).__name__}: {exc}')
            conn.send(reply)
    finally:
        try:
            engine.close()
        finally:
            inputs.close()
            for arena in outputs.values():
                arena.release()
            conn.close()


def _child_infer(engine, inputs: _Viewer, outputs: _Arena, arena_name: str, packed: list[_Packed],
                 requests: list[OutputRequest]) -> tuple[str, list[dict]]:
    block = inputs.get(arena_name) if arena_name else None
    frames = []
    for p in packed:
        if p.inline is not None:
            frames.append(p.inline)
            continue
        image = np.ndarray(p.shape, dtype=np.uint8, buffer=block.buf, offset=p.offset)
        frames.append(Frame(image, p.intrinsics, p.camera_id, p.stamp_ns, p.frame_id))
    allocator = outputs.allocator()
    engine.output_allocator = allocator  # registered arena: the downloads land in it directly
    try:
        results = engine.infer(frames, requests)
    finally:
        engine.output_allocator = None
    del frames
    start_s = time.perf_counter()
    # Where every array goes: arrays already in the arena (downloaded into it) stay where they are, the
    # others are copied behind them; if they do not fit, the arena grows (a new block) and all are copied.
    placed: list[tuple[int, str, np.ndarray, bool, int | None]] = []  # result, field, array, padded, offset
    registration = outputs.registration
    for res_i, res in enumerate(results):
        for name in _ARRAY_FIELDS:
            arr = getattr(res, name)
            if arr is None:
                continue
            padded = padded_xyz(arr) if name == 'points_xyz' else None
            stored = arr if padded is None else padded
            offset = registration.offset_of(stored) if registration is not None else None
            placed.append((res_i, name, stored, padded is not None, offset))
    end = allocator.used_b if allocator is not None else 0
    layout = []
    for res_i, name, stored, padded, offset in placed:
        if offset is None:
            stored = np.ascontiguousarray(stored)
            offset = _aligned(end)
            end = offset + stored.nbytes
            layout.append((res_i, name, stored, padded, offset, True))
        else:
            layout.append((res_i, name, stored, padded, offset, False))
    if outputs.block is None or end > outputs.block.size:
        # the arrays in the old block must survive its replacement: take them out first (rare: growth), and
        # let no result keep a view of the block (tensors from torch.frombuffer do not keep it mapped)
        layout = [(r, n, a if copied else a.copy(), p, o, copied) for r, n, a, p, o, copied in layout]
        for res_i, name, _, _, _, copied in layout:
            if not copied:
                setattr(results[res_i], name, None)
        end = 0
        relaid = []
        for res_i, name, stored, padded, _, _ in layout:
            offset = _aligned(end)
            end = offset + stored.nbytes
            relaid.append((res_i, name, stored, padded, offset, True))
        layout = relaid
    block = outputs.reserve(max(end, 1))
    arrays: list[dict[str, SharedArray]] = [{} for _ in results]
    copies = []
    for res_i, name, stored, padded, offset, copied in layout:
        where = SharedArray(block.name, offset, tuple(stored.shape), stored.dtype.str, padded)
        if copied:
            copies.append((stored_array(block.buf, where), stored))
        arrays[res_i][name] = where
    copy_parallel(copies)
    del copies, layout, placed
    copy_ms = (time.perf_counter() - start_s) * 1e3
    specs = []
    for res, res_arrays in zip(results, arrays, strict=True):
        timings = res.timings_ms if res.error is not None else {**res.timings_ms, 'ipc_write_out': copy_ms}
        specs.append({'camera_id': res.camera_id, 'stamp_ns': res.stamp_ns, 'frame_id': res.frame_id,
                      'intrinsics': res.intrinsics, 'error': res.error, 'timings_ms': timings,
                      'arrays': res_arrays})
    return outputs.name, specs


# ---------------------------------------------------------------------------------------- parent side
class ProcessEngine:
    """``DepthEngine`` in a child process (see the module docstring)."""

    def __init__(self, config: EngineConfig, torch_threads: int = 0, malloc_tuning: bool = True,
                 output_slots: int = 4, start_timeout_s: float = 600.0) -> None:
        if not isinstance(config, EngineConfig):
            raise TypeError(f'config must be an EngineConfig, got {type(config).__name__}')
        self.config = config
        self.torch_threads = int(torch_threads)
        self.malloc_tuning = bool(malloc_tuning)
        self.start_timeout_s = float(start_timeout_s)
        self.device = ''
        self.restarts = 0
        self._ctx = multiprocessing.get_context('spawn')
        self._proc = None
        self._conn = None
        self._inputs = _Arena()
        if isinstance(output_slots, bool) or not isinstance(output_slots, int) or output_slots < 1:
            raise ValueError(f'output_slots must be an integer >= 1, got {output_slots!r}')
        self.output_slots = output_slots
        self._outputs = [_Viewer() for _ in range(output_slots + 1)]  # the last one: copy mode
        self._regions: list[weakref.ref | None] = [None] * output_slots
        self._lock = threading.Lock()
        self._closed = False
        self._warmup_args: tuple | None = None
        self._start()

    # -------------------------------------------------------------------------------------- process
    def _start(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, args=(self.config, child_conn, self.torch_threads,
                                                         self.malloc_tuning),
                                 name='metric3d-engine', daemon=True)
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        kind, payload = self._receive(self.start_timeout_s, 'starting')
        if kind != 'ready':
            self._stop_process()
            raise EngineProcessError(f'the engine process failed to start: {payload}')
        self.device = payload['device']

    def _receive(self, timeout_s: float | None, doing: str) -> tuple:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                if self._conn.poll(0.5):
                    return self._conn.recv()
            except (EOFError, OSError) as exc:
                raise self._died(doing) from exc
            if not self._proc.is_alive():
                raise self._died(doing)
            if deadline is not None and time.monotonic() > deadline:
                self._stop_process()
                raise EngineProcessError(
                    f'the engine process did not answer within {timeout_s:g} s ({doing})')

    def _died(self, doing: str) -> EngineProcessError:
        self._proc.join(1.0)
        code = self._proc.exitcode
        for viewer in self._outputs:  # the dead child's output arenas have nobody else to remove them
            viewer.unlink()
        self._stop_process()
        return EngineProcessError(f'the engine process exited (code {code}) while {doing}')

    def _stop_process(self, timeout_s: float = 10.0) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        for slot, viewer in enumerate(self._outputs):
            ref = self._regions[slot] if slot < self.output_slots else None
            viewer.close(after=ref() if ref is not None else None)  # results may still hold views
        self._regions = [None] * self.output_slots
        stop_child(proc, conn, timeout_s)
        if conn is not None:
            conn.close()

    def _ensure_running(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            return
        if self._proc is not None:  # died between calls
            for viewer in self._outputs:
                viewer.unlink()
            self._stop_process()
        LOG.warning('the engine process is gone: starting a new one')
        self.restarts += 1
        self._start()
        if self._warmup_args is not None:
            self._request(('warmup',) + self._warmup_args, None, 'warming up')

    def _request(self, msg: tuple, timeout_s: float | None, doing: str) -> tuple:
        try:
            self._conn.send(msg)
        except (OSError, ValueError) as exc:
            raise self._died(doing) from exc
        reply = self._receive(timeout_s, doing)
        if reply[0] == 'error':
            raise EngineProcessError(f'the engine process failed {doing}: {reply[1]}')
        return reply

    # ----------------------------------------------------------------------------------- interface
    @property
    def pid(self) -> int | None:
        """The child's process id (None while none runs)."""
        return self._proc.pid if self._proc is not None else None

    def warmup(self, batch_sizes: Sequence[int] | None = None,
               image_hw: Sequence[tuple[int, int]] = ((480, 640),)) -> None:
        """``DepthEngine.warmup`` in the child (repeated after a restart)."""
        args = (None if batch_sizes is None else [int(b) for b in batch_sizes],
                [(int(h), int(w)) for h, w in image_hw])
        with self._lock:
            self._check_open()
            self._ensure_running()
            self._request(('warmup',) + args, None, 'warming up')
            self._warmup_args = args

    def infer(self, frames: Sequence[Frame],
              request: OutputRequest | Sequence[OutputRequest] | None = None,
              timeout_s: float | None = None, shared: bool = False,
              slot_timeout_s: float | None = None) -> list[FrameResult]:
        """``DepthEngine.infer`` in the child; raises ``EngineProcessError`` if the child dies meanwhile or
        does not answer within ``timeout_s`` (None: wait as long as it lives; a first batch of a new size
        may compile for a minute).

        ``shared=True``: no copy out. The arrays are read-only views of one of ``output_slots`` output arenas
        in shared memory, and ``FrameResult.shared`` says where each lies (for another process to read). The
        arena is written again only after every array of this call is garbage; when all arenas are still
        referenced the call waits for one (up to ``slot_timeout_s``, then ``EngineProcessError``; keep
        results no longer than needed). Results outlive a restart or ``close`` of the engine process: their
        arena stays mapped until the last of them is gone.
        """
        frames = list(frames)
        requests = expand_requests(len(frames), request)
        with self._lock:
            self._check_open()
            self._ensure_running()
            slot = self._free_slot(slot_timeout_s) if shared else self.output_slots
            start_s = time.perf_counter()
            packed, failed = self._pack(frames)
            pack_ms = (time.perf_counter() - start_s) * 1e3
            sent = [i for i in range(len(frames)) if i not in failed]
            results: list[FrameResult | None] = [failed.get(i) for i in range(len(frames))]
            if sent:
                msg = ('infer', slot, self._inputs.name, [packed[i] for i in sent],
                       [requests[i] for i in sent])
                start_s = time.perf_counter()
                _, out_name, specs = self._request(msg, timeout_s, f'running a batch of {len(sent)}')
                wait_ms = (time.perf_counter() - start_s) * 1e3
                block = self._outputs[slot].get(out_name)
                region = None
                if shared:
                    region = np.ndarray((block.size,), dtype=np.uint8, buffer=block.buf)
                    region.flags.writeable = False  # so are its views
                    self._regions[slot] = weakref.ref(region)
                for i, spec in zip(sent, specs, strict=True):
                    results[i] = _unpack(spec, block, region)
                del region
                read_ms = (time.perf_counter() - start_s) * 1e3 - wait_ms
                for i in sent:
                    res = results[i]
                    if res.ok:
                        res.timings_ms = {**res.timings_ms, 'ipc_write_in': pack_ms, 'ipc_wait': wait_ms,
                                          'ipc_read_out': read_ms}
            return [r for r in results if r is not None]

    def _free_slot(self, timeout_s: float | None) -> int:
        """An output arena none of whose views is alive (views die with the results that hold them)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            for slot, ref in enumerate(self._regions):
                if ref is None or ref() is None:
                    return slot
            if deadline is not None and time.monotonic() > deadline:
                raise EngineProcessError(
                    f'all {self.output_slots} output arenas are still referenced by earlier results after '
                    f'{timeout_s:g} s: release results sooner or raise output_slots')
            time.sleep(0.0005)

    def _pack(self, frames: list) -> tuple[dict[int, _Packed], dict[int, FrameResult]]:
        """Copy plain frames into the input arena; a frame that cannot be pickled fails alone."""
        plain = {i: f for i, f in enumerate(frames) if _is_plain_image(getattr(f, 'image_rgb', None))}
        offsets = {}
        size = 0
        for i, f in plain.items():
            offsets[i] = size
            size = _aligned(size + f.image_rgb.nbytes)
        block = self._inputs.reserve(max(size, 1)) if plain else None
        packed: dict[int, _Packed] = {}
        failed: dict[int, FrameResult] = {}
        copies = []
        for i, f in enumerate(frames):
            if i in plain:
                image = f.image_rgb
                dst = np.ndarray(image.shape, dtype=np.uint8, buffer=block.buf, offset=offsets[i])
                candidate = _Packed(offsets[i], tuple(image.shape), f.intrinsics, f.camera_id, f.stamp_ns,
                                    getattr(f, 'frame_id', ''))
            else:
                candidate = _Packed(0, (), None, '', 0, '', inline=f)
            try:
                pickle.dumps(candidate)  # one unpicklable field must fail this frame, not the batch
            except Exception as exc:  # noqa: BLE001 - fails this frame only
                stamp = getattr(f, 'stamp_ns', 0)
                failed[i] = FrameResult(camera_id=str(getattr(f, 'camera_id', '')),
                                        stamp_ns=int(stamp) if isinstance(stamp, (int, np.integer)) else 0,
                                        frame_id=str(getattr(f, 'frame_id', '')),
                                        error=f'frame cannot be sent to the engine process: {exc}')
                continue
            if i in plain:
                copies.append((dst, np.ascontiguousarray(image)))
            packed[i] = candidate
        copy_parallel(copies)
        return packed, failed

    def close(self) -> None:
        """Stop the child (it frees its device memory) and release the shared memory."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_process()
            self._inputs.release()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError('this ProcessEngine was closed')

    def __enter__(self) -> ProcessEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unpack(spec: dict, block: shared_memory.SharedMemory, region: np.ndarray | None) -> FrameResult:
    """A FrameResult from the child's description: arrays copied out of ``block``, or (``region`` given:
    the whole arena as a read-only array) views of ``region``, with ``shared`` naming where they lie."""
    res = FrameResult(camera_id=spec['camera_id'], stamp_ns=spec['stamp_ns'], frame_id=spec['frame_id'],
                      intrinsics=spec['intrinsics'], error=spec['error'], timings_ms=spec['timings_ms'])
    arrays: dict[str, SharedArray] = spec['arrays']
    if region is not None and arrays:
        res.shared = dict(arrays)
    for name, where in arrays.items():
        stored = stored_array(block.buf, where).copy() if region is None else stored_array(region, where)
        setattr(res, name, _as_output(stored, where))
    return res


def stored_array(buffer, where: SharedArray) -> np.ndarray:
    """The array as stored at ``where`` in ``buffer`` (padded points with their 4th value)."""
    return np.ndarray(where.shape, dtype=where.dtype, buffer=buffer, offset=where.offset)


def _as_output(stored: np.ndarray, where: SharedArray) -> np.ndarray:
    return stored[..., :3] if where.padded else stored  # padded: 16-byte points, as the engine returns them


def shared_array_view(block: shared_memory.SharedMemory, where: SharedArray) -> np.ndarray:
    """The output array ``where`` describes, as a view of ``block`` (another process's attachment of the
    arena); for padded points the (H, W, 3) view of the 16-byte points."""
    return _as_output(stored_array(block.buf, where), where)
