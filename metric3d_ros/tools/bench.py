"""metric3d_bench: throughput and latency of the Metric3D depth engine, next to an upstream-style baseline.

Modes (``--modes``, any subset, each run for every backend x precision x batch size):

``baseline``  upstream hub style: per-image CPU preprocessing (cv2 resize + mean padding + normalization, as
              ``hubconf.py``), one upload of the batch, plain eager forward (upstream's softmax attention,
              fp32, or whole-network autocast for bf16/fp16), per-image postprocessing (un-pad, upsample,
              scale, clamp) and a host copy per image. No CUDA graphs, no channels_last.
``network``   the backend's network call alone on a prepared batch (what the issue's baseline numbers
              measure: "model forward only").
``engine``    the whole DepthEngine: frames in, metric depth at camera resolution out (plus an organized
              cloud at stride 2 with ``--mixed-cameras``), including upload, device pre/post-processing and
              the device-to-host copies. With ``--pipeline-depth N`` (N > 1) the engine keeps N calls in
              flight (``DepthEngine.submit``, ``EngineConfig.pipeline_depth``): frames/s is then the
              frames of all timed calls over the wall time from the first submit to the last result, and
              the latency of a call runs from its submit to its result.

Frames: ``--image-size HxW`` synthetic frames (default 720x1280), or with ``--mixed-cameras`` the 4-camera
mix 1920x1080, 2 x 1280x720, 640x480 repeated to fill the batch (batch 4 = one of each), producing depth at
camera resolution and a stride-2 organized XYZ cloud on the host. ``--host-frames registered`` puts them in
host memory pinned with cudaHostRegister (uploaded by DMA straight from it, no staging copy).

Output: one line per configuration with frames/s, latency per call (median, p95), the median stage split
(upload, preprocess, network, postprocess, cloud, download; CUDA events on a GPU, perf_counter on the CPU)
and the peak GPU memory; ``--json FILE`` writes everything with the environment (torch, GPU, CPU, date,
command). Reduced-precision runs also print their deviation from fp32 on the same input (network mode).

Weights: ``--weights synthetic`` (default: the deterministic synthetic weights of
``metric3d_ros.core.model.synthetic``; speed does not depend on the values), a checkpoint file, or '' (the
official checkpoint from the cache or a download).

Engine options (``--variant``, ``--backend``, ``--precision``, ``--device``, ``--net-size``, ``--compile``,
``--pipeline-depth``, ``--onnx-model-path``, ...) are derived from their declaration
(``metric3d_ros.core.config.EngineConfig``); ``--backend`` and ``--precision`` take several values (swept).
``--outputs`` names what the engine mode computes, from the output catalogue (``metric3d_ros.core.outputs``).

Examples::

    metric3d_bench --device cuda --precision fp32 bf16 --batch-sizes 1 4 8 --json h100.json
    metric3d_bench --device cuda --mixed-cameras --modes baseline engine --precision bf16 --batch-sizes 4 8
    metric3d_bench --device cpu --net-size 280x504 --batch-sizes 1 --iters 5 --warmup 1
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metric3d_ros.core.config import add_engine_arguments, engine_values_from_args
from metric3d_ros.core.outputs import OUTPUTS

STAGES = ('upload', 'preprocess', 'network', 'postprocess', 'cloud', 'download')
MIXED_CAMERAS = ((1080, 1920), (720, 1280), (720, 1280), (480, 640))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='metric3d_bench', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 8], help='frames per call (default 1 8)')
    p.add_argument('--iters', type=int, default=30, help='timed calls per configuration (default 30)')
    p.add_argument('--warmup', type=int, default=5, help='untimed calls first (default 5)')
    p.add_argument('--modes', nargs='+', default=['baseline', 'network', 'engine'],
                   choices=['baseline', 'network', 'engine'], help='what to time (default all three)')
    p.add_argument('--outputs', nargs='+', default=None, choices=list(OUTPUTS),
                   help='outputs the engine mode computes (the output catalogue; default depth, with '
                        '--mixed-cameras depth and points)')
    p.add_argument('--mixed-cameras', action='store_true',
                   help='frames from the 4-camera mix (1920x1080, 2x1280x720, 640x480), '
                        'depth + stride-2 cloud')
    p.add_argument('--image-size', default='720x1280', help='frame size HxW without --mixed-cameras')
    p.add_argument('--host-frames', default='pageable', choices=['pageable', 'registered'],
                   help="where the engine's input frames lie: 'pageable' numpy arrays (default; uploaded "
                        "through the engine's pinned staging buffer) or 'registered': one host block pinned "
                        'with cudaHostRegister (uploaded by DMA straight from it, no staging copy)')
    p.add_argument('--cudnn-benchmark', action='store_true',
                   help='torch.backends.cudnn.benchmark = True (cuDNN times its algorithms at warm-up)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (default: torch default)')
    p.add_argument('--json', default='', help='write all results and the environment to this file')
    # every engine option from its declaration; backend and precision are swept, the batch size is
    # --batch-sizes; weights 'synthetic' by default (speed does not depend on the values)
    add_engine_arguments(p, exclude=('max_batch_size', 'batch_buckets'), multi=('backend', 'precision'),
                         defaults={'device': 'auto', 'precision': ['fp32', 'bf16'], 'weights': 'synthetic'})
    args = p.parse_args(argv)
    # Bad values are usage errors (exit 2 with a message), not a traceback per configuration; the engine
    # options were checked by their declared types, choices and ranges.
    try:
        _hw(args.image_size)
    except ValueError as exc:
        p.error(str(exc))
    bad = [b for b in args.batch_sizes if b < 1]
    if bad:
        p.error(f'--batch-sizes must be >= 1, got {bad}')
    if args.iters < 1:
        p.error(f'--iters must be >= 1, got {args.iters}')
    if args.warmup < 0:
        p.error(f'--warmup must be >= 0, got {args.warmup}')
    return args


# ----------------------------------------------------------------------------------------------- helpers
def _hw(text: str) -> tuple[int, int]:
    parts = text.lower().split('x')
    try:
        h, w = int(parts[0]), int(parts[1])
        if len(parts) != 2 or h < 1 or w < 1:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f'sizes look like HxW, positive integers (e.g. 720x1280), got {text!r}') from None
    return h, w


def _environment(torch: Any, device: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': ' '.join(sys.argv),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'device': str(device),
        'cpu': _cpu_model(),
        'cpu_threads': torch.get_num_threads(),
    }
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return env


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def _synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth, textured uint8 RGB image (natural-image-like statistics, deterministic)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.integers(-8, 9, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def _frames(batch: int, mixed: bool, image_hw: tuple[int, int]) -> list[Any]:
    from metric3d_ros.core.engine.types import Frame
    from metric3d_ros.core.geometry.intrinsics import Intrinsics

    frames = []
    for i in range(batch):
        h, w = MIXED_CAMERAS[i % len(MIXED_CAMERAS)] if mixed else image_hw
        k = Intrinsics(0.8 * w, 0.8 * w, (w - 1) / 2.0, (h - 1) / 2.0)
        frames.append(Frame(_synthetic_image(h, w, i), k, f'cam{i}', i))
    return frames


class _PinnedBlock:
    """An anonymous page-aligned host block and its cudaHostRegister registration. ``close`` unpins the block
    before it may be unmapped (a freed block still registered would make CUDA refuse the next one mapped
    at the same address)."""

    def __init__(self, block: Any, registration: Any) -> None:
        self.block = block
        self.registration = registration

    def close(self) -> None:
        self.registration.close()


def _registered_copies(frames: list[Any]) -> tuple[list[Any], _PinnedBlock]:
    """The frames with their images copied into one page-aligned host block pinned with cudaHostRegister
    (``host_memory.register``); returns (frames, pinned block)."""
    import dataclasses
    import mmap

    from metric3d_ros.core.engine.host_memory import register

    sizes = [(f.image_rgb.nbytes + 63) // 64 * 64 for f in frames]
    block = mmap.mmap(-1, sum(sizes))
    registration = register(block)
    if registration is None:
        raise RuntimeError('cudaHostRegister refused the frame block (no CUDA, or `ulimit -l` too low)')
    memory = np.frombuffer(block, dtype=np.uint8)
    out, offset = [], 0
    for frame, size in zip(frames, sizes, strict=True):
        view = memory[offset:offset + frame.image_rgb.nbytes].reshape(frame.image_rgb.shape)
        view[...] = frame.image_rgb
        out.append(dataclasses.replace(frame, image_rgb=view))
        offset += size
    return out, _PinnedBlock(block, registration)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float('nan')


class _Weights:
    """State dict loaded once, reused by every configuration (each gets its own network copy)."""

    def __init__(self, variant: str, path: str) -> None:
        self.variant = variant
        self.path = path
        self.source = ''
        self._state: Any = None

    def network(self, device: Any, fused_attention: bool) -> Any:

        from metric3d_ros.core.model import load_metric3d

        if self._state is None:
            t0 = time.perf_counter()
            if self.path == 'synthetic':
                from metric3d_ros.core.model.synthetic import synthetic_state_dict

                self._state = synthetic_state_dict(self.variant)
                self.source = 'synthetic (metric3d_ros.core.model.synthetic)'
            else:
                from metric3d_ros.core.model.checkpoint import read_checkpoint
                from metric3d_ros.core.model.weights import resolve_weights

                path = resolve_weights(self.variant, self.path or None)
                self._state = read_checkpoint(path)
                self.source = str(path)
            print(f'# weights: {self.source} ({time.perf_counter() - t0:.1f} s to prepare)', flush=True)
        return load_metric3d(self._state, variant=self.variant, device=device,
                             fused_attention=fused_attention)


def _sync(torch: Any, device: Any) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


# -------------------------------------------------------------------------------------------------- modes
def _bench_engine(engine: Any, frames: list[Any], request: Any, iters: int, warmup: int,
                  depth: int = 1) -> dict[str, Any]:
    """Sequential ``infer`` calls (depth 1), or ``depth`` ``submit`` calls in flight (module docstring)."""
    for _ in range(warmup):
        engine.infer(frames, request)
    lat, stages = [], {s: [] for s in STAGES}

    def check(results: list[Any]) -> None:
        errors = [r.error for r in results if r.error]
        if errors:
            raise RuntimeError(f'engine returned errors: {errors[0]}')
        for s in STAGES:
            stages[s].append(results[0].timings_ms.get(s, 0.0))

    start = time.perf_counter()
    in_flight: list[tuple[float, Any]] = []
    for _ in range(iters):
        t0 = time.perf_counter()
        if depth == 1:
            results = engine.infer(frames, request)
            lat.append((time.perf_counter() - t0) * 1e3)
            check(results)
            continue
        in_flight.append((t0, engine.submit(frames, request)))
        if len(in_flight) >= depth:
            t_submit, ticket = in_flight.pop(0)
            results = ticket.result()
            lat.append((time.perf_counter() - t_submit) * 1e3)
            check(results)
    for t_submit, ticket in in_flight:
        results = ticket.result()
        lat.append((time.perf_counter() - t_submit) * 1e3)
        check(results)
    wall_s = time.perf_counter() - start
    out = {'latency_ms': lat, 'stages_ms': {s: statistics.median(v) for s, v in stages.items()}}
    if depth > 1:
        out['fps'] = len(frames) * iters / wall_s
    return out


def _bench_network(torch: Any, backend: Any, batch: Any, metas: list[Any], iters: int, warmup: int,
                   device: Any) -> dict[str, Any]:
    for _ in range(warmup):
        backend.run(batch, metas)
    _sync(torch, device)
    lat = []
    for _ in range(iters):
        t0 = time.perf_counter()
        backend.run(batch, metas)
        _sync(torch, device)
        lat.append((time.perf_counter() - t0) * 1e3)
    return {'latency_ms': lat, 'stages_ms': {'network': statistics.median(lat)}}


def _bench_baseline(torch: Any, net: Any, frames: list[Any], net_hw: tuple[int, int], precision: str,
                    cloud_stride: int, iters: int, warmup: int, device: Any) -> dict[str, Any]:
    """Upstream hub-style pipeline (see module docstring), timed per stage with perf_counter + sync.

    With a cloud stride the depth is unprojected on the host with numpy (``unproject_organized``), as a
    hub user would do it.
    """
    from metric3d_ros.core.engine.reference import (
        reference_letterbox_u8,
        reference_normalize,
        reference_postprocess,
    )
    from metric3d_ros.core.geometry.cloud import unproject_organized

    dtype = {'fp32': None, 'tf32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]

    def once() -> dict[str, float]:
        t0 = time.perf_counter()
        inputs, boxes = [], []
        for f in frames:
            u8, lb = reference_letterbox_u8(f.image_rgb, *net_hw)
            inputs.append(reference_normalize(u8))
            boxes.append(lb)
        t1 = time.perf_counter()
        x = torch.cat(inputs).to(device)
        _sync(torch, device)
        t2 = time.perf_counter()
        with torch.inference_mode():
            if dtype is None:
                depth = net(x)[0]
            else:
                with torch.autocast(device.type, dtype=dtype):
                    depth = net(x)[0]
            depth = depth.float()
            _sync(torch, device)
            t3 = time.perf_counter()
            outs = []
            for i, (f, lb) in enumerate(zip(frames, boxes, strict=True)):
                metric = reference_postprocess(depth[i], lb, f.intrinsics.fx_px * lb.scale)
                outs.append(metric)
            _sync(torch, device)
            t4 = time.perf_counter()
            hosts = [metric.cpu().numpy() for metric in outs]
            t5 = time.perf_counter()
            if cloud_stride:
                for f, host in zip(frames, hosts, strict=True):
                    unproject_organized(host, f.intrinsics, stride=cloud_stride)
            t6 = time.perf_counter()
        return {'preprocess': (t1 - t0) * 1e3, 'upload': (t2 - t1) * 1e3, 'network': (t3 - t2) * 1e3,
                'postprocess': (t4 - t3) * 1e3, 'download': (t5 - t4) * 1e3, 'cloud': (t6 - t5) * 1e3,
                'total': (t6 - t0) * 1e3}

    for _ in range(warmup):
        once()
    runs = [once() for _ in range(iters)]
    return {'latency_ms': [r['total'] for r in runs],
            'stages_ms': {s: statistics.median(r[s] for r in runs) for s in STAGES if s in runs[0]}}


def _deviation(torch: Any, reference: Any, ours: Any) -> dict[str, float]:
    """How far reduced-precision canonical depth is from fp32 on the same input."""
    ref = reference.float().cpu().numpy().astype(np.float64)
    out = ours.float().cpu().numpy().astype(np.float64)
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-6)
    ok = np.abs(out - ref) <= 1e-3 + 1e-3 * np.abs(ref)
    return {'median_rel': float(np.median(rel)), 'p99_rel': float(np.percentile(rel, 99)),
            'max_abs_over_range': float(np.abs(out - ref).max() / max(ref.max() - ref.min(), 1e-12)),
            'fraction_within_criterion': float(ok.mean())}


# ---------------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    import torch

    from metric3d_ros.core.config import EngineConfig, parse_net_size
    from metric3d_ros.core.engine.backend import FrameMeta, create_backend
    from metric3d_ros.core.engine.engine import DepthEngine, resolve_device
    from metric3d_ros.core.engine.reference import reference_letterbox_u8, reference_normalize
    from metric3d_ros.core.engine.torch_backend import TorchBackend
    from metric3d_ros.core.engine.types import OutputRequest
    from metric3d_ros.core.geometry.letterbox import compute_letterbox

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    net_hw = parse_net_size(args.net_size)
    image_hw = _hw(args.image_size)
    device = resolve_device(args.device)
    env = _environment(torch, device)
    weights = _Weights(args.variant, args.weights)
    print('# metric3d_bench ' + json.dumps(env), flush=True)
    print(f'# variant={weights.variant} net={net_hw[0]}x{net_hw[1]} frames='
          f'{"mixed 1920x1080,1280x720,1280x720,640x480" if args.mixed_cameras else image_hw} '
          f'iters={args.iters} warmup={args.warmup}', flush=True)
    header = (f'{"mode":9s}{"backend":12s}{"prec":6s}{"batch":>6s}{"fps":>9s}{"med_ms":>9s}{"p95_ms":>9s}'
              + ''.join(f'{s[:8]:>9s}' for s in STAGES) + f'{"peakGiB":>9s}')
    print(header, flush=True)
    records: list[dict[str, Any]] = []
    outputs = args.outputs or (['depth', 'points'] if args.mixed_cameras else ['depth'])
    request = OutputRequest(outputs=set(outputs), cloud_stride=2)
    fp32_depth: dict[int, Any] = {}

    def report(mode: str, backend: str, precision: str, batch: int, result: dict[str, Any] | None,
               error: str | None, extra: dict[str, Any] | None = None) -> None:
        rec: dict[str, Any] = {'mode': mode, 'backend': backend, 'precision': precision, 'batch': batch,
                               'net_hw': list(net_hw), 'mixed_cameras': args.mixed_cameras}
        if error is not None:
            rec['error'] = error
            print(f'{mode:9s}{backend:12s}{precision:6s}{batch:6d}  ERROR {error}', flush=True)
        else:
            lat = result['latency_ms']
            med, p95 = statistics.median(lat), _percentile(lat, 95)
            fps = result.get('fps', batch * len(lat) / (sum(lat) / 1e3))
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else float('nan')
            rec.update(fps=fps, latency_median_ms=med, latency_p95_ms=p95,
                       stages_median_ms=result['stages_ms'], peak_gpu_memory_gib=peak, latency_ms=lat)
            stages = ''.join(f'{result["stages_ms"].get(s, float("nan")):9.2f}' for s in STAGES)
            print(f'{mode:9s}{backend:12s}{precision:6s}{batch:6d}{fps:9.1f}{med:9.2f}{p95:9.2f}{stages}{peak:9.2f}',
                  flush=True)
        if extra:
            rec.update(extra)
            print(f'#   {json.dumps(extra)}', flush=True)
        records.append(rec)

    def fresh() -> None:
        gc.collect()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)

    if args.host_frames == 'registered' and device.type != 'cuda':
        print('error: --host-frames registered needs --device cuda (it pins host memory for the GPU)',
              file=sys.stderr)
        return 2
    pinned = []  # every pinned frame block stays mapped and registered until the end of the run
    for batch in args.batch_sizes:
        frames = _frames(batch, args.mixed_cameras, image_hw)
        if args.host_frames == 'registered':
            frames, block = _registered_copies(frames)
            pinned.append(block)
        for precision in args.precision:
            if 'baseline' in args.modes:
                fresh()
                try:
                    net = weights.network(device, fused_attention=False)
                    res = _bench_baseline(torch, net, frames, net_hw, precision,
                                          2 if args.mixed_cameras else 0, args.iters, args.warmup, device)
                    report('baseline', 'torch-eager', precision, batch, res, None)
                except Exception as exc:  # noqa: BLE001 - keep benchmarking the other configurations
                    traceback.print_exc()
                    report('baseline', 'torch-eager', precision, batch, None, f'{type(exc).__name__}: {exc}')
                net = None
            for backend_name in args.backend:
                if not {'network', 'engine'} & set(args.modes):
                    break
                fresh()
                try:
                    config = EngineConfig.from_mapping({
                        **engine_values_from_args(args), 'backend': backend_name, 'precision': precision,
                        'device': str(device), 'max_batch_size': batch,
                    })
                    if backend_name == 'torch':
                        fused = config.attention in ('sdpa', 'auto')
                        backend = TorchBackend(
                            weights.network(device, fused), device, net_hw, precision=precision,
                            max_batch_size=batch, cuda_graphs=config.cuda_graphs,
                            channels_last=config.channels_last, compile_mode=config.compile,
                            autocast_scope=config.autocast_scope, warmup_iters=config.warmup_iters)
                    else:
                        backend = create_backend(config, device)
                    engine = DepthEngine(config, backend)
                    t0 = time.perf_counter()
                    engine.warmup([batch], image_hw=sorted({f.image_rgb.shape[:2] for f in frames}))
                    print(f'#   warm-up {time.perf_counter() - t0:.1f} s'
                          + (f' (CUDA graphs off: {backend.graph_error})'
                             if getattr(backend, 'graph_error', None) else ''), flush=True)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    for mode in ('network', 'engine'):
                        if mode in args.modes:
                            report(mode, backend_name, precision, batch, None, f'{type(exc).__name__}: {exc}')
                    continue
                if 'network' in args.modes:
                    try:
                        lb = compute_letterbox(*net_hw, *net_hw)
                        k = frames[0].intrinsics
                        metas = [FrameMeta(i, f'cam{i}', 0, '', k, lb, k) for i in range(batch)]
                        buf = getattr(backend, 'input_buffer', lambda b: None)(batch)
                        x = buf if buf is not None else torch.empty((batch, 3, *net_hw), device=device)
                        u8, _ = reference_letterbox_u8(frames[0].image_rgb, *net_hw)
                        x.copy_(reference_normalize(u8).expand(batch, -1, -1, -1))
                        res = _bench_network(torch, backend, x, metas, args.iters, args.warmup, device)
                        depth = backend.run(x, metas).depth.detach().clone()
                        extra = None
                        if precision == 'fp32':
                            fp32_depth[batch] = depth.cpu()
                        elif batch in fp32_depth:
                            extra = {'deviation_from_fp32': _deviation(torch, fp32_depth[batch], depth)}
                        report('network', backend_name, precision, batch, res, None, extra)
                    except Exception as exc:  # noqa: BLE001
                        traceback.print_exc()
                        report('network', backend_name, precision, batch, None,
                               f'{type(exc).__name__}: {exc}')
                if 'engine' in args.modes:
                    try:
                        res = _bench_engine(engine, frames, request, args.iters, args.warmup,
                                            args.pipeline_depth)
                        report('engine', backend_name, precision, batch, res, None,
                               {'pipeline_depth': args.pipeline_depth} if args.pipeline_depth > 1 else None)
                    except Exception as exc:  # noqa: BLE001
                        traceback.print_exc()
                        report('engine', backend_name, precision, batch, None, f'{type(exc).__name__}: {exc}')
                engine.close()
                engine = backend = None
    for block in pinned:
        block.close()
    if args.json:
        Path(args.json).write_text(json.dumps({'environment': env, 'weights': weights.source,
                                               'results': records}, indent=1))
        print(f'# wrote {args.json}', flush=True)
    return 1 if any('error' in r for r in records) else 0


if __name__ == '__main__':
    sys.exit(main())
