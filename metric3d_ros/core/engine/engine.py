"""``DepthEngine``: batched Metric3D inference for many cameras, ROS-free.

    from metric3d_ros.core.config import EngineConfig
    from metric3d_ros.core.engine.engine import DepthEngine
    from metric3d_ros.core.engine.types import Frame, OutputRequest

    engine = DepthEngine.from_config(EngineConfig(device='cuda', precision='bf16'))
    engine.warmup()
    results = engine.infer(frames, OutputRequest(outputs={'depth', 'points'}, cloud_stride=2))
    engine.close()

``infer(frames, request)`` returns one ``FrameResult`` per frame, in the same order. Frames may have any
mix of resolutions and intrinsics; ``request`` is one ``OutputRequest`` for all frames or one per frame
(mixed output resolutions are fine). Frames are processed in chunks of ``config.max_batch_size``; within a
chunk one network call serves all frames.

Per-frame errors: a frame whose image is not (H, W, 3) uint8 with H, W > 0, whose intrinsics are not finite
and positive, whose ``stamp_ns`` is not an integer, or whose request is invalid, gets ``FrameResult.error``
set (arrays None) and is left out of the batch; the other frames are unaffected. An exception inside a batch
(e.g. out of device memory) sets the error of every frame of that chunk (and is logged); postprocessing
failures affect only their group.

Outputs: ``request.outputs`` names entries of the output catalogue (``metric3d_ros.core.outputs.OUTPUTS``);
the engine computes them (and what they require) by calling each entry's postprocess function per group of
frames, in catalogue order, and ``FrameResult.arrays[spec.array]`` holds the requested ones (see
``types.py``). For ``request.resolution``:

- ``'camera'``: arrays at the source image size (H, W); ``intrinsics`` = the frame's own intrinsics.
- ``'network'``: arrays at the letterbox's un-padded size (rh, rw) = (int(H * s), int(W * s)),
  s = min(net_h / H, net_w / W), i.e. what the network saw without its padding; ``intrinsics`` = the
  intrinsics of that image, exactly: with the factors the pixels were really resampled by, sx = rw / W and
  sy = rh / H (rh, rw are truncated, so these differ from upstream's s by < 1 / rw, resp. 1 / rh), fx * sx,
  fy * sy and the principal point where the resize put it, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
  (pixel centres at integers: ``Intrinsics.resampled``, the rule ``scale_camera_info`` applies to the
  CameraInfo the node publishes). The cloud is unprojected with them. The depth values use upstream's
  de-canonical focal fx * s (``FrameMeta.network_intrinsics``) at either resolution.

Built-in outputs: ``depth_m`` (float32 metres): canonical depth * (fx * s) / canonical_focal_px, never
clamped: NaN where the network's canonical output saturates its range (the variant decoder's [0.1, 200]
clamp, detected on the device before the resize, see ``postprocess``), where not finite, <= 0, or outside the
request's [min_depth_m, max_depth_m] (upstream instead clamps to [0, 300] m; every value it leaves unclamped
is reproduced). ``confidence``: the network's confidence resized likewise.
``normals`` (H, W, 3): unit normals in the camera optical frame (resized, then re-normalized).
``points_xyz`` (ceil(H / k), ceil(W / k), 3): organized cloud of the depth at rows/cols 0, k, 2k, ...
(k = ``cloud_stride``), NaN where the depth is NaN; ``points_rgb`` the matching uint8 colours
(``request.cloud_rgb``).
``timings_ms``: the chunk's stage times (shared by its frames): upload, preprocess, network, postprocess,
cloud, download (CUDA events on a GPU, ``perf_counter`` on the CPU) and total (host wall time).

Pipelining: ``submit(frames, request)`` enqueues the work and returns an ``EngineTicket`` whose ``result()``
waits for it (``infer`` is ``submit(...).result()``). With ``config.pipeline_depth`` n > 1 (and a backend
with lanes, see ``torch_backend``) up to n batches are in flight, each in its own lane (CUDA stream, CUDA
graphs, staging and batch buffers): the next batch's upload and preprocessing run while the previous
batch's network runs. An idle lane is used first (round-robin); with none idle, the next lane's batch is
collected first (its results stay in its ticket). Results never alias another batch's buffers. The frames'
arrays must stay unchanged until ``result()`` returns (registered host memory is uploaded by DMA while the
batch is in flight). On the CPU lanes run one after the other and buy nothing.

The engine is safe to call from several threads (calls are serialized); it is not re-entrant.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metric3d_ros.core.config import EngineConfig
from metric3d_ros.core.engine import postprocess as post
from metric3d_ros.core.engine.backend import Backend, FrameMeta, create_backend
from metric3d_ros.core.engine.preprocess import Preprocessor
from metric3d_ros.core.engine.timing import StageTimer
from metric3d_ros.core.engine.transfer import PendingDownload
from metric3d_ros.core.engine.types import Frame, FrameResult, OutputRequest, expand_requests
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import Letterbox, compute_letterbox
from metric3d_ros.core.model.specs import get_spec
from metric3d_ros.core.outputs import CLOUD_RGB_ARRAY, OUTPUTS, OutputSpec, resolve_outputs

LOG = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``torch.device`` for a config string; 'auto' is CUDA when available, else CPU."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was configured but CUDA is not available: use device='cpu'")
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())
    return device


@dataclass
class _Lane:
    """What one batch in flight owns: the backend (or its lane view), preprocessing staging buffers, stage
    timer, CUDA stream (None: the current stream) and the chunk it is running, until collected."""

    index: int
    backend: Backend
    pre: Preprocessor
    timer: StageTimer
    stream: torch.cuda.Stream | None = None
    batch: torch.Tensor | None = None  # the batch buffer when the backend offers none
    running: _InFlight | None = None


@dataclass
class _InFlight:
    """A chunk whose device work is enqueued: what ``_collect`` needs to build its results.

    It refers to its ticket's result list, not to the ticket: no reference cycle, so a dropped ticket frees
    its host buffers at once instead of at the next garbage collection (pinned blocks kept alive that long
    made the caching host allocator pin new memory every few batches: stalls of ~100 ms)."""

    results: list[FrameResult | None]
    lane: _Lane
    chunk: list[_Item]
    ordered: list[_Item]
    post_groups: list
    failed: dict[int, str]
    #: per group: (spec, index within the download of its array) of every requested output
    index: dict[int, list[tuple[OutputSpec, int]]]
    rgb_index: dict[int, int]
    download: PendingDownload
    #: camera-resolution cloud colours, copied from the frames at enqueue time (the caller may reuse its
    #: image buffers once the results are in, not later than that), by (group, row in group)
    colours: dict[tuple[int, int], np.ndarray]
    collected: bool = False

    def release(self) -> None:
        """Drop the frames and device/host buffers once the results are built (the ticket may live on)."""
        self.chunk, self.ordered, self.post_groups, self.colours = [], [], [], {}
        self.download = PendingDownload(self.download.device)


class EngineTicket:
    """The results of one ``DepthEngine.submit`` call: ``result()`` waits for them (module docstring)."""

    def __init__(self, engine: DepthEngine, results: list[FrameResult | None]) -> None:
        self._engine = engine
        self._results = results
        self._chunks: list[_InFlight] = []

    def done(self) -> bool:
        """True when every chunk has been collected (``result()`` then returns without waiting)."""
        return all(c.collected for c in self._chunks)

    def result(self) -> list[FrameResult]:
        """A ``FrameResult`` per submitted frame, same order; waits for the device work of this call."""
        self._engine._collect_ticket(self)
        return [r for r in self._results if r is not None]


@dataclass
class _Item:
    """A validated frame on its way through a chunk."""

    position: int  # index in the caller's list
    frame: Frame
    request: OutputRequest
    image: np.ndarray
    intrinsics: Intrinsics
    letterbox: Letterbox


def _check_request(req: object) -> str | None:
    if not isinstance(req, OutputRequest):
        return f'request must be an OutputRequest, got {type(req).__name__}'
    names = req.outputs
    if not isinstance(names, frozenset) or not names:
        return (f'request.outputs must name at least one output of {", ".join(OUTPUTS)} '
                f'(a set of names), got {names!r}')
    unknown = sorted(str(n) for n in names if n not in OUTPUTS)
    if unknown:
        return f'request.outputs: unknown output(s) {unknown}; known are {", ".join(OUTPUTS)}'
    if req.resolution not in ('camera', 'network'):
        return f"request.resolution must be 'camera' or 'network', got {req.resolution!r}"
    stride = req.cloud_stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        return f'request.cloud_stride must be an integer >= 1, got {stride!r}'
    lo, hi = req.min_depth_m, req.max_depth_m
    try:
        lo_f, hi_f = float(lo), float(hi)
    except (TypeError, ValueError):
        return f'request depth range must be numbers, got [{lo!r}, {hi!r}]'
    if math.isnan(lo_f) or math.isnan(hi_f) or lo_f < 0.0 or hi_f <= lo_f:
        return f'request depth range must satisfy 0 <= min_depth_m < max_depth_m, got [{lo}, {hi}]'
    if req.cloud_rgb and not _has_cloud(req):
        clouds = [s.name for s in OUTPUTS.values() if s.message == 'cloud']
        return f'request.cloud_rgb needs a cloud output in request.outputs ({", ".join(clouds)})'
    return None


def _has_cloud(req: OutputRequest) -> bool:
    return any(OUTPUTS[name].message == 'cloud' for name in req.outputs)


def _check_frame(frame: object) -> tuple[str | None, np.ndarray | None, Intrinsics | None]:
    image = getattr(frame, 'image_rgb', None)
    if not isinstance(image, np.ndarray):
        return f'image_rgb must be a numpy array, got {type(image).__name__}', None, None
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        return (f'image_rgb must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}: convert it '
                '(e.g. cv2.cvtColor for BGR/mono, scaling for 16-bit) before inference'), None, None
    if image.shape[0] < 1 or image.shape[1] < 1:
        return f'image_rgb is empty: shape {image.shape}', None, None
    k = getattr(frame, 'intrinsics', None)
    try:
        values = [float(getattr(k, name)) for name in ('fx_px', 'fy_px', 'cx_px', 'cy_px')]
    except (TypeError, ValueError, AttributeError):
        return f'intrinsics must have numeric fx_px, fy_px, cx_px, cy_px, got {k!r}', None, None
    if not all(math.isfinite(v) for v in values) or values[0] <= 0.0 or values[1] <= 0.0:
        return (f'intrinsics must be finite with positive focal lengths, got fx={values[0]}, fy={values[1]}, '
                f'cx={values[2]}, cy={values[3]} (is the CameraInfo calibrated?)'), None, None
    stamp = getattr(frame, 'stamp_ns', None)
    if isinstance(stamp, bool) or not isinstance(stamp, (int, np.integer)):
        return (f'stamp_ns must be an integer (nanoseconds), got {stamp!r}: convert the header stamp with '
                'sec * 10**9 + nanosec'), None, None
    intr = k if isinstance(k, Intrinsics) else Intrinsics(*values)
    return None, np.ascontiguousarray(image), intr


class DepthEngine:
    """Batched multi-camera metric depth (see the module docstring for inputs, outputs and errors)."""

    def __init__(self, config: EngineConfig, backend: Backend | None = None) -> None:
        if not isinstance(config, EngineConfig):
            raise TypeError(f'config must be an EngineConfig, got {type(config).__name__}')
        self.config = config
        if backend is None:
            device = resolve_device(config.device)
            backend = create_backend(config, device)
        self.backend = backend
        self.device = torch.device(backend.device)
        mode = config.preprocess
        if mode == 'auto':
            mode = 'device_exact' if self.device.type == 'cuda' else 'reference'
        self.preprocess_mode = mode
        decoder = get_spec(config.variant).decoder
        self._canonical_range = (float(decoder.min_depth), float(decoder.max_depth))
        depth = config.pipeline_depth
        set_lanes = getattr(backend, 'set_lanes', None)
        if depth > 1 and set_lanes is None:
            LOG.warning('backend %r has no lanes: pipeline_depth %d runs one batch at a time',
                        getattr(backend, 'name', backend), depth)
            depth = 1
        if depth > 1:
            depth = set_lanes(depth)
        cuda = self.device.type == 'cuda'
        self._lanes = [
            _Lane(i, backend.lane(i) if depth > 1 else backend,
                  Preprocessor(config.net_hw, self.device, mode), StageTimer(self.device),
                  torch.cuda.Stream(self.device) if cuda and depth > 1 else None)
            for i in range(depth)
        ]
        self._next_lane = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, config: EngineConfig) -> DepthEngine:
        """An engine with the backend named by ``config.backend`` on ``config.device``."""
        return cls(config)

    # ---------------------------------------------------------------------------------------- lifecycle
    def warmup(self, batch_sizes: Sequence[int] | None = None,
               image_hw: Sequence[tuple[int, int]] = ((480, 640),)) -> None:
        """Prepare the backend for ``batch_sizes`` and run the whole pipeline once per batch size and image
        size so that the first real call is not slow.

        Default batch sizes: on CUDA the configured buckets (``EngineConfig.buckets``: one CUDA graph and
        torch.compile specialization each); on the CPU only 1 (nothing is captured or autotuned there,
        and a batch-8 pass at 616x1064 takes minutes on a small CPU).
        """
        if batch_sizes is not None:
            sizes = list(batch_sizes)
        elif self.device.type == 'cuda':
            sizes = self.config.buckets
        else:
            sizes = [1]
        for b in sizes:
            if not 1 <= b <= self.config.max_batch_size:
                raise ValueError(f'warm-up batch size {b} is outside 1..{self.config.max_batch_size}')
        with self._lock:
            self._check_open()
            with torch.inference_mode():
                self.backend.warmup(sizes)
        for h, w in image_hw:
            image = np.full((int(h), int(w), 3), 128, dtype=np.uint8)
            frame = Frame(image, Intrinsics(0.8 * w, 0.8 * w, w / 2.0, h / 2.0), 'warmup', 0)
            for b in sizes:
                # each lane once on CUDA (round-robin; lanes have their own graphs and buffers); on the CPU
                # lanes hold nothing to warm
                for _ in self._lanes if self.device.type == 'cuda' else self._lanes[:1]:
                    self.infer([frame] * b, OutputRequest(outputs={'depth', 'confidence', 'points'}))

    def close(self) -> None:
        """Release the backend and the engine's device buffers; further calls raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            for lane in self._lanes:  # batches still in flight finish into their tickets
                if lane.running is not None:
                    self._collect(lane.running)
            self._closed = True
            try:
                self.backend.close()
            finally:
                for lane in self._lanes:
                    lane.batch = None
                    lane.pre = Preprocessor(self.config.net_hw, torch.device('cpu'), 'reference')
                if self.device.type == 'cuda':
                    torch.cuda.empty_cache()

    def __enter__(self) -> DepthEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError('this DepthEngine was closed')

    # ---------------------------------------------------------------------------------------- inference
    def infer(self, frames: Sequence[Frame],
              request: OutputRequest | Sequence[OutputRequest] | None = None) -> list[FrameResult]:
        """A ``FrameResult`` per frame, same order (module docstring); ``request`` defaults to depth only."""
        return self.submit(frames, request).result()

    def submit(self, frames: Sequence[Frame],
               request: OutputRequest | Sequence[OutputRequest] | None = None) -> EngineTicket:
        """Enqueue ``frames`` and return at once (module docstring, "Pipelining"); ``ticket.result()``
        returns what ``infer`` would."""
        frames = list(frames)
        requests = expand_requests(len(frames), request)
        results: list[FrameResult | None] = [None] * len(frames)
        items: list[_Item] = []
        net_h, net_w = self.config.net_hw
        for i, (frame, req) in enumerate(zip(frames, requests, strict=True)):
            error, image, intr = _check_frame(frame)
            if error is None:
                error = _check_request(req)
            letterbox = None
            if error is None:
                try:
                    letterbox = compute_letterbox(image.shape[0], image.shape[1], net_h, net_w)
                except ValueError as exc:
                    error = str(exc)
            if error is not None:
                results[i] = self._failed(frame, error)
                continue
            items.append(_Item(i, frame, req, image, intr, letterbox))
        ticket = EngineTicket(self, results)
        with self._lock:
            self._check_open()
            step = self.config.max_batch_size
            with torch.inference_mode():
                for begin in range(0, len(items), step):
                    chunk = items[begin:begin + step]
                    lane = self._pick_lane()
                    if lane.running is not None:  # the lane's previous batch first (into its ticket)
                        self._collect(lane.running)
                    try:
                        with self._on_stream(lane):
                            running = self._enqueue(chunk, lane, results)
                    except Exception as exc:  # noqa: BLE001 - reported per frame, logged with traceback
                        self._fail_chunk(lane, chunk, results, exc)
                        continue
                    lane.running = running
                    ticket._chunks.append(running)
        return ticket

    def _pick_lane(self) -> _Lane:
        """The next idle lane in round-robin order, else the next lane (its batch is collected first)."""
        count = len(self._lanes)
        order = [self._lanes[(self._next_lane + k) % count] for k in range(count)]
        lane = next((candidate for candidate in order if candidate.running is None), order[0])
        self._next_lane = (lane.index + 1) % count
        return lane

    def _on_stream(self, lane: _Lane):
        return torch.cuda.stream(lane.stream) if lane.stream is not None else contextlib.nullcontext()

    def _collect_ticket(self, ticket: EngineTicket) -> None:
        # wait for the device without the lock (another thread may submit to an idle lane meanwhile), then
        # build the results under it
        for running in list(ticket._chunks):
            if not running.collected:
                running.download.wait()
        with self._lock:
            for running in ticket._chunks:
                if not running.collected:
                    self._collect(running)

    def _collect(self, running: _InFlight) -> None:
        """Wait for a chunk's device work and store its results in its ticket (errors per frame)."""
        lane = running.lane
        if lane.running is running:
            lane.running = None
        results = running.results
        try:
            with torch.inference_mode(), self._on_stream(lane):
                for position, result in self._finish(running):
                    results[position] = result
        except Exception as exc:  # noqa: BLE001 - reported per frame, logged with traceback
            self._fail_chunk(lane, running.chunk, results, exc)
        finally:
            running.release()
            running.collected = True  # after the results are stored: done() is True only then

    def _fail_chunk(self, lane: _Lane, chunk: list[_Item], results: list[FrameResult | None],
                    exc: Exception) -> None:
        """Log a chunk's failure (with traceback), wait for its copies, and fail each of its frames."""
        LOG.exception('depth engine batch of %d frames failed', len(chunk))
        self._drain(lane)
        for item in chunk:
            results[item.position] = self._failed(item.frame, f'{type(exc).__name__}: {exc}')

    def _drain(self, lane: _Lane) -> None:
        """Wait for the copies a failed chunk may have left in flight (they may read the caller's registered
        host memory, which the caller reuses once ``infer`` returns)."""
        if self.device.type != 'cuda':
            return
        try:
            (lane.stream or torch.cuda.current_stream(self.device)).synchronize()
        except Exception:  # noqa: BLE001 - a broken device already failed the chunk; nothing more to do
            LOG.exception('waiting for the device after a failed batch failed')

    @staticmethod
    def _failed(frame: object, error: str) -> FrameResult:
        stamp = getattr(frame, 'stamp_ns', 0)
        return FrameResult(
            camera_id=str(getattr(frame, 'camera_id', '')),
            stamp_ns=int(stamp) if isinstance(stamp, (int, np.integer)) else 0,
            frame_id=str(getattr(frame, 'frame_id', '')),
            error=error,
        )

    def _batch_tensor(self, lane: _Lane, size: int) -> torch.Tensor:
        provider = getattr(lane.backend, 'input_buffer', None)
        if provider is not None:
            buf = provider(size)
            if buf is not None:
                return buf
        if lane.batch is None:
            h, w = self.config.net_hw
            lane.batch = torch.empty((self.config.max_batch_size, 3, h, w), dtype=torch.float32,
                                     device=self.device)
        return lane.batch[:size]

    def _enqueue(self, chunk: list[_Item], lane: _Lane, results: list[FrameResult | None]) -> _InFlight:
        """Enqueue a chunk's device work on the current stream, up to its device-to-host copies."""
        # order the batch so that frames of equal size and request are consecutive (one resize per group)
        keys: dict[tuple, int] = {}
        for item in chunk:
            keys.setdefault((item.image.shape[:2], item.request), len(keys))
        gids = [keys[(it.image.shape[:2], it.request)] for it in chunk]
        order = sorted(range(len(chunk)), key=lambda i: gids[i])
        ordered = [chunk[i] for i in order]
        groups: list[tuple[int, int]] = []
        for row, i in enumerate(order):
            if groups and gids[order[groups[-1][0]]] == gids[i]:
                groups[-1] = (groups[-1][0], row + 1)
            else:
                groups.append((row, row + 1))
        b = len(ordered)
        metas = [
            FrameMeta(row, str(it.frame.camera_id), int(it.frame.stamp_ns),
                      str(getattr(it.frame, 'frame_id', '')), it.intrinsics, it.letterbox,
                      it.letterbox.scale_intrinsics(it.intrinsics))
            for row, it in enumerate(ordered)
        ]
        images = [it.image for it in ordered]
        letterboxes = [it.letterbox for it in ordered]
        timer = lane.timer
        pre = lane.pre
        backend = lane.backend
        timer.start()
        batch = self._batch_tensor(lane, b)
        staged = pre.stage(images, letterboxes, groups)
        timer.mark('upload')
        post_groups = []
        for start, stop in groups:
            first = ordered[start]
            req = first.request
            # Geometry of the output image: at network resolution the un-padded (rh, rw) image is the source
            # resampled by (rw / W, rh / H) with pixel centres at integers, the same rule as the CameraInfo
            # the node publishes for it (scale_camera_info); the de-canonical transform keeps upstream's
            # fx * s (network_intrinsics).
            out_intr = tuple(
                it.intrinsics if req.resolution == 'camera'
                else it.intrinsics.resampled(*it.letterbox.resize_factors)
                for it in ordered[start:stop]
            )
            post_groups.append(post.PostGroup(
                start, stop, first.letterbox, req,
                tuple(metas[r].network_intrinsics.fx_px for r in range(start, stop)), out_intr,
            ))
        download = PendingDownload(self.device)
        rgb_index: dict[int, int] = {}
        rgb_groups = [gi for gi, g in enumerate(post_groups)
                      if g.request.cloud_rgb and g.request.resolution == 'network']
        normalized = backend.input_format == 'normalized'
        # one kernel per group where it can (CUDA, device_exact); the colours of a network-resolution cloud
        # are read from the 0..255 batch, so those batches take the unfused path
        if not (normalized and not rgb_groups
                and pre.fill_normalized(batch, staged, letterboxes, groups)):
            pre.fill(batch, staged, letterboxes, groups)
            for gi in rgb_groups:
                network_rgb = post.decimated_rgb_network(batch, post_groups[gi])
                rgb_index[gi] = download.add(CLOUD_RGB_ARRAY, network_rgb)
            if normalized:
                pre.normalize_(batch)
        timer.mark('preprocess')

        out = backend.run(batch, metas)
        timer.mark('network')

        focal = self.config.canonical_focal_px
        canonical_range = self._canonical_range
        failed: dict[int, str] = {}
        index: dict[int, list[tuple[OutputSpec, int]]] = {gi: [] for gi in range(len(post_groups))}
        computed: list[dict[str, torch.Tensor]] = [{} for _ in post_groups]
        plans = [resolve_outputs(g.request.outputs) for g in post_groups]
        for stage in ('image', 'cloud'):  # timing stages 'postprocess' and 'cloud'
            for gi, g in enumerate(post_groups):
                if gi in failed:
                    continue
                try:
                    for spec in plans[gi]:
                        if spec.message != stage:
                            continue
                        ctx = post.PostContext(out, g, computed[gi], focal, canonical_range)
                        tensor = spec.postprocess(ctx)
                        computed[gi][spec.array] = tensor
                        if spec.name in g.request.outputs:
                            index[gi].append((spec, download.add(spec.array, tensor)))
                except Exception as exc:  # noqa: BLE001 - only this group's frames fail
                    LOG.exception('postprocessing failed for %d frame(s)', g.stop - g.start)
                    failed[gi] = f'{type(exc).__name__}: {exc}'
            timer.mark('postprocess' if stage == 'image' else 'cloud')
        download.start()
        timer.mark('download')
        colours = {
            (gi, k): ordered[row].image[::g.request.cloud_stride, ::g.request.cloud_stride].copy()
            for gi, g in enumerate(post_groups)
            if g.request.cloud_rgb and g.request.resolution != 'network'
            for k, row in enumerate(range(g.start, g.stop))
        }
        return _InFlight(results, lane, chunk, ordered, post_groups, failed, index, rgb_index, download,
                         colours)

    def _finish(self, running: _InFlight) -> list[tuple[int, FrameResult]]:
        """Wait for a chunk's copies and build its results."""
        host = running.download.finish()
        timings = running.lane.timer.elapsed_ms()
        ordered, post_groups, failed = running.ordered, running.post_groups, running.failed
        index, rgb_index = running.index, running.rgb_index
        results = []
        for gi, g in enumerate(post_groups):
            req = g.request
            for k, row in enumerate(range(g.start, g.stop)):
                item = ordered[row]
                frame = item.frame
                if gi in failed:
                    results.append((item.position, self._failed(frame, failed[gi])))
                    continue
                res = FrameResult(
                    camera_id=str(frame.camera_id), stamp_ns=int(frame.stamp_ns),
                    frame_id=str(getattr(frame, 'frame_id', '')), intrinsics=g.output_intrinsics[k],
                    timings_ms=dict(timings),
                )
                for spec, at in index[gi]:
                    array = host[spec.array][at][k]
                    res.arrays[spec.array] = array if spec.host_view is None else spec.host_view(array)
                if req.cloud_rgb:
                    res.arrays[CLOUD_RGB_ARRAY] = (
                        host[CLOUD_RGB_ARRAY][rgb_index[gi]][k] if req.resolution == 'network'
                        else running.colours[(gi, k)])
                results.append((item.position, res))
        return results
