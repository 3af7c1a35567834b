"""``metric3d_eval``: replay a rosbag2 through the depth engine offline and score it against ground truth.

    metric3d_eval BAG [--backend torch|onnxruntime|gt] [--variant small] [--weights PATH|synthetic]
                  [--net-size 616x1064] [--output-dir eval_output] [--output-bag OUT] ...

The engine flags (``--variant``, ``--precision``, ``--device``, ``--onnx-model-path``, ...) derive from their
declaration (``metric3d_ros.core.config.EngineConfig``, see ``--help``).

Cameras are found from the bag's topics: every ``<ns>/camera_info`` (sensor_msgs/CameraInfo) with an image
at ``<ns>/image`` (Image) or ``<ns>/image/compressed`` (CompressedImage) is a camera named ``<ns>``;
``<ns>/depth_gt`` (32FC1 metres or 16UC1 millimetres, NaN / 0 = none) is its ground truth.

Deterministic replay: the bag is read twice. The first pass indexes the image stamps (read from the CDR
header, no decoding) and the CameraInfos; every image becomes a frame (no drops). Frames are sorted by
(stamp, camera) and cut into batches greedily: a batch holds at most ``max_batch_size`` frames, at most one
per camera, all within ``--sync-tolerance-ms`` of its first frame (synchronized cameras share a batch). The
second pass decodes frames and runs each batch as soon as it is complete. The batches depend only on the
bag's content, so the same bag (in sqlite3 or mcap) gives the same results.

CameraInfo pairing: the one with the image's exact stamp, else the nearest in time (static publishers).
Metrics (``metric3d_ros.core.metrics``) are computed at the camera resolution on the valid ground-truth
pixels in ``[--min-depth-m, --max-depth-m]``; per camera and overall they are means over frames.
``--output-resolution network`` asks the engine for the outputs at the network resolution, as the node
publishes them with ``output_resolution: network``; they are scored at the ground truth's pixels through
the depth CameraInfo the node publishes with them (``scale_camera_info``: principal point at
(c + 0.5) * s - 0.5; ``core.metrics.depth_at_camera_pixels``), so a wrong CameraInfo shows in the figures.
The cloud check unprojects the depth through that CameraInfo too.
``--median-scaled`` adds median-scaled metrics, reported separately.

Outputs in ``--output-dir``: report.json, report.md, figures/ (depth and error panels of the first frames of
each camera, error histograms, per-camera bars). ``--output-bag`` writes what the node publishes for every
frame: every output of the catalogue (``metric3d_ros.core.outputs.OUTPUTS``: ``/<cam>/depth/image`` 32FC1,
``/<cam>/confidence/image``, ``/<cam>/normals/image`` when the backend gives normals, ``/<cam>/points``, and
any registered one) and ``/<cam>/depth/camera_info``, with the input image's header.

The ``gt`` backend (``metric3d_ros.core.engine.gt_backend``) replaces the network by the canonical depth the
ground truth implies: its error is the resampling error of the pipeline alone (the geometry proof).

Multi-camera consistency (``--rig-file``, a rig JSON with camera-to-base extrinsics such as
``shared/data/ddad_rig/rig.json``; definitions in ``metric3d_ros.core.rig_metrics``): per batch of cameras
with ground truth, every ordered camera pair's overlap (ground-truth points of one camera that project into
the other), the ground-truth matches in it, and the 3-D distance between the two cameras' predicted points
of each match relative to the range (``multi_camera.pairs``, ``multi_camera.overall``); and the fused cloud
(``core.geometry.fusion.fuse_depths`` at ``--fused-stride``, on the engine's device) projected back into
every camera against its ground truth (``multi_camera.fused_vs_gt``: own camera's points, other cameras').
With the ``gt`` backend this proves the extrinsics path (the figure is at the interpolation error's level);
with real weights it measures the network's cross-camera consistency.
"""
from __future__ import annotations

import argparse
import bisect
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metric3d_ros.codec.camera_info import read_camera_info_cdr
from metric3d_ros.codec.cdr import read_header
from metric3d_ros.codec.compressed import compressed_to_rgb8, read_compressed_cdr
from metric3d_ros.codec.image import image_to_depth_m, image_to_rgb8, read_image_cdr
from metric3d_ros.core.config import add_engine_arguments, engine_values_from_args
from metric3d_ros.core.geometry.camera_info import (
    CalibrationError,
    CameraInfoFields,
    intrinsics_from_camera_info,
    scale_camera_info,
)
from metric3d_ros.core.geometry.cloud import unproject_organized
from metric3d_ros.core.geometry.fusion import (
    CameraDepth,
    FusionConfig,
    RigidTransform,
    fuse_depths,
    read_rig_extrinsics,
)
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.metrics import (
    DepthMetrics,
    MetricsConfig,
    aggregate,
    compute_metrics,
    depth_at_camera_pixels,
    evaluated_values,
)
from metric3d_ros.core.outputs import DEPTH_INFO_TOPIC, OUTPUTS
from metric3d_ros.core.rig_metrics import RigView, cross_camera_pairs, fused_lidar_errors, summarize
from metric3d_ros.tools import eval_report
from metric3d_ros.tools.bagio import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    STORAGES,
    BagReader,
    BagWriter,
)

#: ``--output-resolution``: the engine's ``OutputRequest.resolution`` values (the node's output_resolution).
OUTPUT_RESOLUTIONS = ('camera', 'network')
SYNTHETIC_WARNING = ('SYNTHETIC WEIGHTS: the network runs with deterministic random weights; its depth '
                     'values are MEANINGLESS and the metrics say nothing about Metric3D\'s accuracy')


@dataclass(frozen=True)
class CameraTopics:
    """Topics of one camera in a bag."""

    name: str
    image_topic: str
    compressed: bool
    info_topic: str
    gt_topic: str | None


@dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate_bag`` does besides running the engine (see the module docstring)."""

    cameras: tuple[str, ...] = ()
    info_suffix: str = 'camera_info'
    image_suffix: str = 'image'
    gt_suffix: str = 'depth_gt'
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    median_scaled: bool = False
    sync_tolerance_ns: int = 0
    max_batch_size: int = 8
    cloud_stride: int = 4
    output_resolution: str = 'camera'
    max_frames: int = 0
    figures: bool = True
    figure_frames_per_camera: int = 2
    output_bag: Path | None = None
    output_storage: str = 'sqlite3'
    overwrite: bool = False
    rig_file: Path | None = None
    fused_stride: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.fused_stride, bool) or not isinstance(self.fused_stride, int) \
                or not 1 <= self.fused_stride <= 64:
            raise ValueError(f'fused_stride must be an integer in [1, 64], got {self.fused_stride!r}')
        if self.sync_tolerance_ns < 0:
            raise ValueError(f'sync tolerance must be >= 0, got {self.sync_tolerance_ns} ns')
        if self.max_batch_size < 1:
            raise ValueError(f'max_batch_size must be >= 1, got {self.max_batch_size}')
        if self.cloud_stride < 0:
            raise ValueError(f'cloud_stride must be >= 0 (0 = no cloud), got {self.cloud_stride}')
        if self.output_resolution not in OUTPUT_RESOLUTIONS:
            raise ValueError(f'output_resolution must be one of {OUTPUT_RESOLUTIONS}, got '
                             f'{self.output_resolution!r}')
        if self.max_frames < 0:
            raise ValueError(f'max_frames must be >= 0 (0 = all), got {self.max_frames}')
        if self.output_storage not in STORAGES:
            raise ValueError(f'output_storage must be one of {STORAGES}, got {self.output_storage!r}')


# ---------------------------------------------------------------------------------------------------------
# Bag indexing and batch planning


def discover_cameras(topics: dict[str, str], options: EvalOptions) -> list[CameraTopics]:
    """Cameras of a bag (see the module docstring), sorted by name; ``options.cameras`` selects some."""
    found: dict[str, CameraTopics] = {}
    suffix = '/' + options.info_suffix
    for topic, msgtype in topics.items():
        if msgtype != CAMERA_INFO or not topic.endswith(suffix):
            continue
        ns = topic[: -len(suffix)]
        image = f'{ns}/{options.image_suffix}'
        if topics.get(image) == IMAGE:
            compressed = False
        elif topics.get(image + '/compressed') == COMPRESSED_IMAGE:
            image, compressed = image + '/compressed', True
        else:
            continue
        gt = f'{ns}/{options.gt_suffix}'
        name = ns.lstrip('/')
        found[name] = CameraTopics(name, image, compressed, topic, gt if topics.get(gt) == IMAGE else None)
    if not found:
        raise ValueError(f'no camera found: the bag needs <ns>/{options.info_suffix} with <ns>/'
                         f'{options.image_suffix} (or .../compressed); its topics are {sorted(topics)}')
    if options.cameras:
        missing = [c for c in options.cameras if c not in found]
        if missing:
            raise ValueError(f'cameras {missing} are not in the bag; it has {sorted(found)}')
        return [found[c] for c in options.cameras]
    return [found[c] for c in sorted(found)]


@dataclass
class BagIndex:
    """Frames (stamp, camera) of a bag, its CameraInfos and which frames have ground truth."""

    frames: list[tuple[int, str]]
    infos: dict[str, dict[int, CameraInfoFields]]
    gt_keys: set[tuple[str, int]]
    duplicates: int


def index_bag(reader: BagReader, cameras: Sequence[CameraTopics]) -> BagIndex:
    """First pass: image stamps (from the CDR header), CameraInfos, ground-truth stamps."""
    by_topic: dict[str, tuple[str, str]] = {}
    for cam in cameras:
        by_topic[cam.image_topic] = (cam.name, 'image')
        by_topic[cam.info_topic] = (cam.name, 'info')
        if cam.gt_topic:
            by_topic[cam.gt_topic] = (cam.name, 'gt')
    seen: set[tuple[str, int]] = set()
    frames: list[tuple[int, str]] = []
    infos: dict[str, dict[int, CameraInfoFields]] = {cam.name: {} for cam in cameras}
    gt_keys: set[tuple[str, int]] = set()
    duplicates = 0
    for message in reader.messages(by_topic):
        name, kind = by_topic[message.topic]
        stamp = read_header(message.data)[0]
        if kind == 'image':
            if (name, stamp) in seen:
                duplicates += 1
                continue
            seen.add((name, stamp))
            frames.append((stamp, name))
        elif kind == 'info':
            infos[name].setdefault(stamp, read_camera_info_cdr(message.data)[2])
        else:
            gt_keys.add((name, stamp))
    return BagIndex(frames, infos, gt_keys, duplicates)


def plan_batches(frames: Sequence[tuple[int, str]], camera_order: Sequence[str], max_batch_size: int,
                 sync_tolerance_ns: int) -> list[list[tuple[int, str]]]:
    """Greedy batches of frames sorted by (stamp, camera): <= max_batch_size, one frame per camera, stamps
    within ``sync_tolerance_ns`` of the batch's first frame."""
    rank = {name: i for i, name in enumerate(camera_order)}
    ordered = sorted(frames, key=lambda f: (f[0], rank[f[1]]))
    batches: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for stamp, name in ordered:
        full = len(current) >= max_batch_size
        same_camera = any(n == name for _, n in current)
        too_late = bool(current) and stamp - current[0][0] > sync_tolerance_ns
        if current and (full or same_camera or too_late):
            batches.append(current)
            current = []
        current.append((stamp, name))
    if current:
        batches.append(current)
    return batches


def pair_camera_info(
    infos: dict[int, CameraInfoFields], stamp_ns: int
) -> tuple[CameraInfoFields, bool] | None:
    """The CameraInfo with ``stamp_ns``, else the nearest in time (earlier on a tie); ``(info, exact)``."""
    if not infos:
        return None
    if stamp_ns in infos:
        return infos[stamp_ns], True
    stamps = sorted(infos)
    i = bisect.bisect_left(stamps, stamp_ns)
    candidates = [s for s in (stamps[i - 1] if i > 0 else None, stamps[i] if i < len(stamps) else None)
                  if s is not None]
    best = min(candidates, key=lambda s: (abs(s - stamp_ns), s))
    return infos[best], False


# ---------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class FrameRecord:
    """What the evaluation keeps of one frame."""

    camera: str
    stamp_ns: int
    batch: int
    has_gt: bool
    error: str | None = None
    metrics: DepthMetrics | None = None
    metrics_median_scaled: DepthMetrics | None = None
    cloud_max_abs_diff_m: float | None = None
    decode_ms: float = 0.0
    engine_ms: float | None = None  # total time of the engine call this frame ran in (None: it did not run)


@dataclass(frozen=True)
class _Panel:
    """A frame kept for its depth panel (drawn when every panel's depth is known: one scale for all)."""

    path: str
    rgb: np.ndarray
    pred: np.ndarray
    gt: np.ndarray
    valid: np.ndarray
    title: str


@dataclass
class _Loaded:
    rgb: np.ndarray | None = None
    frame_id: str = ''
    gt: np.ndarray | None = None


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {}
    return {'mean': float(arr.mean()), 'p50': float(np.percentile(arr, 50)),
            'p95': float(np.percentile(arr, 95)), 'max': float(arr.max()), 'n': int(arr.size)}


class Evaluation:
    """Runs one evaluation (use ``evaluate_bag``)."""

    def __init__(self, bag: Path, engine: Any, options: EvalOptions, output_dir: Path,
                 engine_description: dict[str, Any], needs_gt: bool = False, normals: bool = True) -> None:
        self.bag = Path(bag)
        self.engine = engine
        self.options = options
        self.output_dir = Path(output_dir)
        self.engine_description = engine_description
        self.needs_gt = needs_gt
        self.normals = normals
        self.gt_current: dict[tuple[str, int], np.ndarray] = {}
        self.records: list[FrameRecord] = []
        self.batch_timings: list[dict[str, float]] = []
        self._panels: list[_Panel] = []
        self.log_ratios: dict[str, list[np.ndarray]] = defaultdict(list)
        self.counts = {'info_exact': 0, 'info_nearest': 0, 'skipped_no_gt': 0}
        self._figure_count: dict[str, int] = defaultdict(int)
        self.rig: dict[str, RigidTransform] = (read_rig_extrinsics(options.rig_file) if options.rig_file
                                               else {})
        self.pairs: dict[tuple[str, str], dict[str, Any]] = {}
        self.fused_errors: dict[str, list[np.ndarray]] = {'own': [], 'other': []}
        self.rig_batches = 0

    def lookup_gt(self, meta: Any) -> np.ndarray | None:
        """Ground truth of the frame a backend is running (for the ``gt`` backend)."""
        return self.gt_current.get((str(meta.camera_id), int(meta.stamp_ns)))

    def run(self) -> dict[str, Any]:
        with BagReader(self.bag) as reader:
            cameras = discover_cameras(reader.topics, self.options)
            index = index_bag(reader, cameras)
            frames = index.frames
            if self.needs_gt:
                without = [f for f in frames if (f[1], f[0]) not in index.gt_keys]
                self.counts['skipped_no_gt'] = len(without)
                frames = [f for f in frames if (f[1], f[0]) in index.gt_keys]
            order = [c.name for c in cameras]
            batches = plan_batches(frames, order, self.options.max_batch_size, self.options.sync_tolerance_ns)
            if self.options.max_frames:
                kept, total = [], 0
                for b in batches:
                    if total >= self.options.max_frames:
                        break
                    kept.append(b[: self.options.max_frames - total])
                    total += len(kept[-1])
                batches = kept
            if not batches:
                raise ValueError(f'{self.bag} has no frame to evaluate (cameras {order})')
            writer = None
            if self.options.output_bag:
                writer = BagWriter(self.options.output_bag, self.options.output_storage,
                                   overwrite=self.options.overwrite)
                writer.open()
            try:
                self._replay(reader, cameras, index, batches, writer)
            finally:
                if writer is not None:
                    writer.close()
            storage = reader.storage
        return self._report(cameras, storage)

    def _replay(self, reader: BagReader, cameras: Sequence[CameraTopics], index: BagIndex,
                batches: list[list[tuple[int, str]]], writer: BagWriter | None) -> None:
        wanted = {key for b in batches for key in b}
        by_topic = {}
        for cam in cameras:
            by_topic[cam.image_topic] = (cam, 'image')
            if cam.gt_topic:
                by_topic[cam.gt_topic] = (cam, 'gt')
        loaded: dict[tuple[int, str], _Loaded] = {}
        decode_ms: dict[tuple[int, str], float] = defaultdict(float)
        next_batch = 0

        def complete(key: tuple[int, str]) -> bool:
            item = loaded.get(key)
            has_gt = (key[1], key[0]) in index.gt_keys
            return item is not None and item.rgb is not None and (item.gt is not None or not has_gt)

        for message in reader.messages(by_topic):
            cam, kind = by_topic[message.topic]
            stamp = read_header(message.data)[0]
            key = (stamp, cam.name)
            if key not in wanted:
                continue
            item = loaded.setdefault(key, _Loaded())
            if (kind == 'image' and item.rgb is not None) or (kind == 'gt' and item.gt is not None):
                continue  # duplicate message: the first one counts
            t0 = time.perf_counter()
            if kind == 'image':
                image = read_compressed_cdr(message.data) if cam.compressed else read_image_cdr(message.data)
                item.rgb = compressed_to_rgb8(image) if cam.compressed else image_to_rgb8(image)
                item.frame_id = image.frame_id
            else:
                item.gt = image_to_depth_m(read_image_cdr(message.data))
            decode_ms[key] += (time.perf_counter() - t0) * 1e3
            while next_batch < len(batches) and all(complete(k) for k in batches[next_batch]):
                batch = batches[next_batch]
                self._run_batch(next_batch, batch, [loaded.pop(k) for k in batch], index,
                                [decode_ms.pop(k, 0.0) for k in batch], writer)
                next_batch += 1
        if next_batch != len(batches):
            raise RuntimeError(f'{len(batches) - next_batch} batch(es) never became complete: the bag '
                               'changed between the two passes')

    def _run_batch(self, batch_index: int, batch: list[tuple[int, str]], items: list[_Loaded],
                   index: BagIndex, decode_ms: list[float], writer: BagWriter | None) -> None:
        from metric3d_ros.core.engine.types import Frame, OutputRequest

        frames, keep, infos = [], [], []
        for (stamp, name), item, dec in zip(batch, items, decode_ms, strict=True):
            record = FrameRecord(name, stamp, batch_index, (name, stamp) in index.gt_keys, decode_ms=dec)
            self.records.append(record)
            paired = pair_camera_info(index.infos[name], stamp)
            if paired is None:
                record.error = f'no CameraInfo for camera {name}'
                continue
            info, exact = paired
            self.counts['info_exact' if exact else 'info_nearest'] += 1
            h, w = item.rgb.shape[:2]
            try:
                intr = intrinsics_from_camera_info(info, w, h).intrinsics
            except CalibrationError as exc:
                record.error = f'CameraInfo: {exc}'
                continue
            frames.append(Frame(item.rgb, intr, name, stamp, frame_id=item.frame_id))
            keep.append((record, item, info, intr))
            infos.append(info)
            if item.gt is not None:
                self.gt_current[(name, stamp)] = item.gt
        if not frames:
            return
        stride = self.options.cloud_stride
        names = {'depth'} | ({'points'} if stride > 0 else set())
        if writer is not None:  # the output bag holds every output the backend can give
            names |= {n for n in OUTPUTS if n != 'normals' or self.normals}
        request = OutputRequest(outputs=names, resolution=self.options.output_resolution,
                                cloud_stride=max(stride, 1))
        results = self.engine.infer(frames, request)
        self.gt_current.clear()
        # the batch's stage times are shared by its frames that ran (a failed frame carries none)
        timings = next((dict(r.timings_ms) for r in results if r.ok and r.timings_ms), {})
        self.batch_timings.append(timings)
        for (record, item, info, intr), result in zip(keep, results, strict=True):
            if not result.ok:
                record.error = result.error
                continue
            record.engine_ms = timings.get('total')
            image_shape = item.rgb.shape[:2]
            if item.gt is not None and item.gt.shape != image_shape:
                record.error = (f'ground truth is {item.gt.shape[1]}x{item.gt.shape[0]} but the image is '
                                f'{image_shape[1]}x{image_shape[0]}: ground-truth depth '
                                'must be at the image resolution')
            else:
                self._score(record, item, info, intr, result)
            if writer is not None:
                self._write_outputs(writer, record, item, info, result)
        if self.rig:
            self._rig_consistency([(*kept, result) for kept, result in zip(keep, results, strict=True)])

    def _rig_consistency(self, frames: list[tuple]) -> None:
        """Cross-camera agreement and the fused cloud against the ground truth of one batch (module doc):
        the pairs on the depth at the camera's pixels, the fused cloud from the depth as published.
        ``frames``: (record, loaded frame, CameraInfo, camera intrinsics, result) of each frame."""
        order = {name: i for i, name in enumerate(sorted(self.rig))}
        views, depths = [], []
        for rec, item, info, camera, res in frames:
            if rec.error is not None or not res.ok or item.gt is None or rec.camera not in self.rig:
                continue
            published, pred = _camera_depth(res.arrays['depth_m'], info, camera, item.rgb.shape[:2])
            views.append(RigView(rec.camera, pred, item.gt, camera, self.rig[rec.camera].matrix(),
                                 order[rec.camera]))
            depths.append(CameraDepth(order[rec.camera], res.arrays['depth_m'], published,
                                      self.rig[rec.camera]))
        if len(views) < 2:
            return
        self.rig_batches += 1
        cfg = self.options.metrics
        for a in views:
            for b in views:
                if a is b:
                    continue
                m = cross_camera_pairs(a, b, cfg)
                acc = self.pairs.setdefault((a.camera, b.camera),
                                            {'overlap': 0, 'matched': 0, 'pred_rel': [], 'gt_rel': []})
                acc['overlap'] += m.overlap
                acc['matched'] += len(m.gt_rel)
                acc['pred_rel'].append(m.pred_rel)
                acc['gt_rel'].append(m.gt_rel)
        fusion = FusionConfig(base_frame='base', stride=self.options.fused_stride,
                              min_range_m=0.0, max_range_m=min(1000.0, cfg.max_depth_m))
        cloud = fuse_depths(depths, fusion, getattr(self.engine, 'device', 'cpu'))
        own, other = fused_lidar_errors(cloud.xyz, cloud.camera_index, views, cfg)
        self.fused_errors['own'].append(own)
        self.fused_errors['other'].append(other)

    def _rig_report(self) -> dict[str, Any] | None:
        if not self.rig:
            return None
        pairs = {}
        every_pred, every_gt, overlap, matched = [], [], 0, 0
        for (a, b), acc in sorted(self.pairs.items()):
            pred = np.concatenate(acc['pred_rel']) if acc['pred_rel'] else np.zeros(0)
            gt = np.concatenate(acc['gt_rel']) if acc['gt_rel'] else np.zeros(0)
            pairs[f'{a}->{b}'] = {'overlap': acc['overlap'], 'matched': acc['matched'],
                                  'match_rate': acc['matched'] / acc['overlap'] if acc['overlap'] else None,
                                  'pred_rel': summarize(pred), 'gt_rel': summarize(gt)}
            every_pred.append(pred)
            every_gt.append(gt)
            overlap += acc['overlap']
            matched += acc['matched']

        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0)

        return {
            'rig_file': str(self.options.rig_file), 'batches': self.rig_batches,
            'definition': 'pred_rel: 3-D distance between two cameras\' predicted points of the same '
                          'ground-truth surface point (matched within 2 px and 1 % of range), over the range '
                          'from the first camera; gt_rel: the same with ground-truth depth (quantization '
                          'floor); fused_vs_gt: |z - g| / g of the fused cloud projected into each camera',
            'pairs': pairs,
            'overall': {'overlap': overlap, 'matched': matched,
                        'match_rate': matched / overlap if overlap else None,
                        'pred_rel': summarize(joined(every_pred)), 'gt_rel': summarize(joined(every_gt))},
            'fused_vs_gt': {'stride': self.options.fused_stride,
                            'own': summarize(joined(self.fused_errors['own'])),
                            'other': summarize(joined(self.fused_errors['other']))},
        }

    def _score(self, record: FrameRecord, item: _Loaded, info: CameraInfoFields, camera: Intrinsics,
               result: Any) -> None:
        depth = result.arrays['depth_m']
        published, pred = _camera_depth(depth, info, camera, item.rgb.shape[:2])
        points = result.arrays.get('points_xyz')
        if points is not None:
            expected = unproject_organized(depth, published, self.options.cloud_stride)
            same_nan = np.array_equal(np.isnan(expected), np.isnan(points))
            diff = np.abs(np.nan_to_num(expected) - np.nan_to_num(points))
            record.cloud_max_abs_diff_m = float(diff.max()) if same_nan else float('inf')
        if item.gt is None:
            return
        cfg = self.options.metrics
        record.metrics = compute_metrics(pred, item.gt, cfg)
        if self.options.median_scaled:
            record.metrics_median_scaled = compute_metrics(pred, item.gt, cfg, median_scaled=True)
        p, g, _ = evaluated_values(pred, item.gt, cfg)
        if p.size:
            self.log_ratios[record.camera].append(np.log(p / g).astype(np.float32))
        if self.options.figures and self._figure_count[record.camera] < self.options.figure_frames_per_camera:
            self._figure_count[record.camera] += 1
            valid = np.isfinite(item.gt) & (item.gt >= cfg.min_depth_m) & (item.gt <= cfg.max_depth_m)
            # drawn by write() with one depth scale for every camera's panels
            self._panels.append(_Panel(f'figures/{record.camera}_{record.stamp_ns}.png', item.rgb, pred,
                                       item.gt, valid, f'{record.camera} {record.stamp_ns}'))

    def _write_outputs(self, writer: BagWriter, record: FrameRecord, item: _Loaded, info: CameraInfoFields,
                       result: Any) -> None:
        ns, stamp, frame_id = f'/{record.camera}', record.stamp_ns, item.frame_id
        h, w = result.arrays['depth_m'].shape
        writer.write_camera_info(f'{ns}/{DEPTH_INFO_TOPIC}', scale_camera_info(info, w, h), stamp, frame_id)
        for spec in OUTPUTS.values():  # the output catalogue: topic, message kind, encoding
            array = result.arrays.get(spec.array)
            if array is None:
                continue
            if spec.message == 'cloud':
                writer.write_points(f'{ns}/{spec.topic}', array, stamp, frame_id)
            else:
                writer.write_image(f'{ns}/{spec.topic}', np.ascontiguousarray(array), spec.encoding, stamp,
                                   frame_id)

    # ----------------------------------------------------------------------------------------- report
    def _report(self, cameras: Sequence[CameraTopics], storage: str) -> dict[str, Any]:
        names = [c.name for c in cameras]
        per_cam = {n: [r for r in self.records if r.camera == n] for n in names}

        def table(attr: str) -> dict[str, Any]:
            cams = {}
            for n in names:
                ms = [getattr(r, attr) for r in per_cam[n] if getattr(r, attr) is not None]
                cams[n] = {**aggregate(ms).as_dict(), 'frames': len(ms)}
            every = [getattr(r, attr) for r in self.records if getattr(r, attr) is not None]
            return {'cameras': cams, 'overall': {**aggregate(every).as_dict(), 'frames': len(every)}}

        stages: dict[str, list[float]] = defaultdict(list)
        for timing in self.batch_timings:
            for stage, ms in timing.items():
                stages[stage].append(ms)
        decode_total = [r.decode_ms for r in self.records]
        stage_stats = {s: _stats(v) for s, v in stages.items()}
        stage_stats['decode (per frame)'] = _stats(decode_total)
        engine_s = sum(t.get('total', 0.0) for t in self.batch_timings) / 1e3
        ok_frames = sum(1 for r in self.records if r.error is None)
        cam_latency = {}
        for n in names:
            values = [r.engine_ms + r.decode_ms for r in per_cam[n] if r.engine_ms is not None]
            cam_latency[n] = {'frames': len(per_cam[n]), **_stats(values)}
        cloud_diffs = [r.cloud_max_abs_diff_m for r in self.records if r.cloud_max_abs_diff_m is not None]
        warnings = []
        if self.engine_description.get('weights') == 'synthetic':
            warnings.append(SYNTHETIC_WARNING)
        errors = [r for r in self.records if r.error is not None]
        report = {
            'bag': str(self.bag), 'storage': storage, 'warnings': warnings,
            'engine': self.engine_description,
            'metrics_config': asdict(self.options.metrics),
            'output_resolution': self.options.output_resolution,
            'counts': {'frames': len(self.records), 'batches': len(self.batch_timings),
                       'frames_with_gt': sum(1 for r in self.records if r.metrics is not None),
                       'errors': len(errors), **self.counts},
            'metrics': table('metrics'),
            'metrics_median_scaled': table('metrics_median_scaled') if self.options.median_scaled else None,
            'cloud_check': {'max_abs_diff_m': max(cloud_diffs), 'stride': self.options.cloud_stride}
            if cloud_diffs else None,
            'latency_ms': {'stages': stage_stats, 'cameras': cam_latency,
                           'frames_per_s': ok_frames / engine_s if engine_s > 0 else None},
            'frames': [
                {'camera': r.camera, 'stamp_ns': r.stamp_ns, 'batch': r.batch, 'error': r.error,
                 'metrics': r.metrics.as_dict() if r.metrics else None,
                 'metrics_median_scaled':
                     r.metrics_median_scaled.as_dict() if r.metrics_median_scaled else None}
                for r in self.records
            ],
            'errors': [f'{r.camera} {r.stamp_ns}: {r.error}' for r in errors[:20]],
            'multi_camera': self._rig_report(),
        }
        return report

    def write(self, report: dict[str, Any]) -> list[str]:
        """report.json, report.md and the figures; returns the figure paths (relative). The depth panels of
        every camera share one depth scale (the ground truth's 2-98th percentiles over all of them); every
        figure carries the synthetic-weights warning when the weights are synthetic."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        figures = []
        warning = eval_report.SYNTHETIC_FIGURE_WARNING if SYNTHETIC_WARNING in report['warnings'] else ''
        if self.options.figures:
            scale = eval_report.DepthScale.of([p.gt[p.valid] if p.valid.any() else p.pred
                                               for p in self._panels])
            for p in self._panels:
                panel = eval_report.depth_panel(p.rgb, p.pred, p.gt, p.valid, p.title, scale, warning)
                eval_report.save_png(self.output_dir / p.path, panel)
                figures.append(p.path)
            ratios = {n: np.concatenate(v) if v else np.zeros(0) for n, v in self.log_ratios.items()}
            hist = self.output_dir / 'figures/error_histogram.png'
            if ratios and eval_report.save_error_histograms(ratios, hist, warning):
                figures.append('figures/error_histogram.png')
            cams = report['metrics']['cameras']
            bars = self.output_dir / 'figures/per_camera.png'
            if cams and eval_report.save_camera_bars(cams, bars, warning):
                figures.append('figures/per_camera.png')
        report['figures'] = figures
        eval_report.write_json(report, self.output_dir / 'report.json')
        eval_report.write_markdown(report, self.output_dir / 'report.md', figures)
        return figures


def evaluate_bag(bag: Path, engine: Any, options: EvalOptions, output_dir: Path,
                 engine_description: dict[str, Any] | None = None, needs_gt: bool = False,
                 normals: bool = True, write: bool = True) -> dict[str, Any]:
    """Evaluate ``bag`` with ``engine`` (a ``DepthEngine``); returns the report (and writes it)."""
    ev = Evaluation(bag, engine, options, output_dir, engine_description or {}, needs_gt, normals)
    report = ev.run()
    if write:
        ev.write(report)
    return report


def _camera_depth(depth: np.ndarray, info: CameraInfoFields, camera: Intrinsics,
                  image_hw: tuple[int, int]) -> tuple[Intrinsics, np.ndarray]:
    """The intrinsics of the depth CameraInfo the node publishes with ``depth`` (at camera resolution: the
    input's) and the depth at the camera image's pixels (``depth_at_camera_pixels`` for network-resolution
    depth)."""
    h, w = depth.shape
    published = intrinsics_from_camera_info(scale_camera_info(info, w, h), w, h).intrinsics
    height, width = image_hw
    if (h, w) == (height, width):
        return published, depth
    return published, depth_at_camera_pixels(depth, published, camera, width, height)


# ---------------------------------------------------------------------------------------------------------
# Engine construction and command line


def build_engine(backend: str, engine_options: dict[str, Any],
                 gt_lookup: Callable[[Any], np.ndarray | None] | None = None):
    """``(DepthEngine, description)``; backend 'gt' wraps ``GroundTruthBackend(gt_lookup)``."""
    from metric3d_ros.core.config import EngineConfig
    from metric3d_ros.core.engine.engine import DepthEngine

    config = EngineConfig.from_mapping({**engine_options, 'backend': backend})
    if backend == 'gt':
        from metric3d_ros.core.engine.gt_backend import GroundTruthBackend

        if gt_lookup is None:
            raise ValueError("backend 'gt' needs a ground-truth lookup")
        engine = DepthEngine(config, backend=GroundTruthBackend(gt_lookup, config.canonical_focal_px))
    else:
        engine = DepthEngine.from_config(config)
    description = {k: v for k, v in asdict(config).items() if k != 'onnx'}
    if backend == 'gt':
        description['weights'] = 'none (ground-truth backend)'
    return engine, description


def evaluate_with_backend(bag: Path, backend: str, engine_options: dict[str, Any], options: EvalOptions,
                          output_dir: Path, write: bool = True) -> dict[str, Any]:
    """Build the engine for ``backend`` and evaluate ``bag`` with it."""
    holder: dict[str, Evaluation] = {}

    def lookup(meta: Any) -> np.ndarray | None:
        return holder['ev'].lookup_gt(meta)

    engine, description = build_engine(backend, {**engine_options, 'max_batch_size': options.max_batch_size},
                                       lookup if backend == 'gt' else None)
    try:
        ev = Evaluation(bag, engine, options, output_dir, description, needs_gt=backend == 'gt',
                        normals=backend != 'gt')
        holder['ev'] = ev
        report = ev.run()
        if write:
            ev.write(report)
        return report
    finally:
        engine.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='metric3d_eval', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('bag', type=Path, help='rosbag2 folder (sqlite3 or mcap)')
    p.add_argument('--output-dir', type=Path, default=Path('eval_output'))
    p.add_argument('--cameras', default='', help='comma-separated camera names (default: all)')
    p.add_argument('--gt-suffix', default='depth_gt')
    p.add_argument('--min-depth-m', type=float, default=1e-3)
    p.add_argument('--max-depth-m', type=float, default=80.0)
    p.add_argument('--no-clamp', action='store_true',
                   help='do not clamp predictions into the evaluated range')
    p.add_argument('--median-scaled', action='store_true', help='also report median-scaled metrics')
    p.add_argument('--sync-tolerance-ms', type=float, default=0.0)
    p.add_argument('--cloud-stride', type=int, default=4, help='cloud decimation for the checks (0: none)')
    p.add_argument('--output-resolution', choices=OUTPUT_RESOLUTIONS, default='camera',
                   help="outputs at the 'camera' image size or the 'network' size (the node's "
                        'output_resolution); network outputs are scored at the ground-truth pixels through '
                        'the depth CameraInfo published with them')
    p.add_argument('--max-frames', type=int, default=0)
    p.add_argument('--no-figures', action='store_true')
    p.add_argument('--figure-frames', type=int, default=2, help='depth/error panels per camera')
    p.add_argument('--output-bag', type=Path, default=None, help="write the node's output topics here")
    p.add_argument('--output-storage', choices=STORAGES, default='sqlite3')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output bag')
    p.add_argument('--rig-file', type=Path, default=None,
                   help='rig JSON with camera-to-base extrinsics (e.g. shared/data/ddad_rig/rig.json): adds '
                        'the multi-camera consistency figures')
    p.add_argument('--fused-stride', type=int, default=4,
                   help='decimation of the fused cloud checked against the ground truth (with --rig-file)')
    # engine options from their declaration (--backend also takes 'gt', the ground-truth geometry proof);
    # --max-batch-size also bounds the replay's batches
    add_engine_arguments(p)
    return p


def options_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], EvalOptions]:
    engine = engine_values_from_args(args)
    options = EvalOptions(
        cameras=tuple(c.strip() for c in args.cameras.split(',') if c.strip()), gt_suffix=args.gt_suffix,
        metrics=MetricsConfig(args.min_depth_m, args.max_depth_m, not args.no_clamp),
        median_scaled=args.median_scaled, sync_tolerance_ns=round(args.sync_tolerance_ms * 1e6),
        max_batch_size=args.max_batch_size, cloud_stride=args.cloud_stride,
        output_resolution=args.output_resolution, max_frames=args.max_frames,
        figures=not args.no_figures, figure_frames_per_camera=args.figure_frames, output_bag=args.output_bag,
        output_storage=args.output_storage, overwrite=args.overwrite, rig_file=args.rig_file,
        fused_stride=args.fused_stride,
    )
    return engine, options


def print_summary(report: dict[str, Any], output_dir: Path, stream=None) -> None:
    """Per-camera table of the main metrics and latencies, and where the report is."""
    stream = stream or sys.stdout
    for warning in report.get('warnings', []):
        print(f'\n!!! {warning} !!!\n', file=stream)
    print(f'{"camera":<16}{"frames":>7}{"AbsRel":>10}{"RMSE m":>10}{"d1":>8}{"p50 ms":>10}{"p95 ms":>10}',
          file=stream)
    lat = report['latency_ms']['cameras']
    rows = {**report['metrics']['cameras'], 'all': report['metrics']['overall']}
    for name, m in rows.items():
        s = lat.get(name, {})

        def f(v, spec):
            return format(v, spec) if isinstance(v, (int, float)) and math.isfinite(v) else '-'

        print(f'{name:<16}{m["frames"]:>7}{f(m["abs_rel"], ".4f"):>10}{f(m["rmse_m"], ".3f"):>10}'
              f'{f(m["delta1"], ".3f"):>8}{f(s.get("p50"), ".1f"):>10}{f(s.get("p95"), ".1f"):>10}',
              file=stream)
    fps = report['latency_ms'].get('frames_per_s')
    print(f'throughput {fps:.2f} frames/s' if fps else 'throughput -', file=stream)
    rig = report.get('multi_camera')
    if rig:
        overall, fused = rig['overall'], rig['fused_vs_gt']
        print(f'multi-camera: {overall["matched"]} matched points in {overall["overlap"]} overlapping, '
              f'median relative disagreement {overall["pred_rel"].get("median", float("nan")):.2e} '
              f'(ground-truth floor {overall["gt_rel"].get("median", float("nan")):.2e}); fused cloud vs '
              f'ground truth: median {fused["own"].get("median", float("nan")):.2e} own camera, '
              f'{fused["other"].get("median", float("nan")):.2e} other cameras', file=stream)
    print(f'report: {output_dir / "report.md"}', file=stream)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        engine_options, options = options_from_args(args)
        report = evaluate_with_backend(args.bag, args.backend, engine_options, options, args.output_dir)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f'metric3d_eval: error: {exc}', file=sys.stderr)
        return 2
    print_summary(report, args.output_dir)
    return 0 if report['counts']['errors'] == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
