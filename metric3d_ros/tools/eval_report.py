"""Evaluation report output: report.json, report.md and PNG figures (depth/error panels, histograms, bars).

Panels are drawn with OpenCV; the histogram and bar charts use matplotlib's Agg backend when matplotlib is
installed (the ``dev`` extra) and are skipped with a note otherwise.

Depth figures are readable alone: every depth image carries a colour bar in metres, and one ``DepthScale``
is shared by every depth image of a camera set (the cameras of one evaluation or demo run: the same colour is
the same depth in every figure), not each image's own percentiles. A figure made from meaningless depth
(synthetic weights) carries ``SYNTHETIC_FIGURE_WARNING`` in a red band on top (``warning_banner``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metric3d_ros.core.metrics import METRIC_NAMES

TILE_WIDTH_PX = 480
COLOUR_BAR_WIDTH_PX = 96
#: Drawn on every figure made from synthetic weights.
SYNTHETIC_FIGURE_WARNING = 'SYNTHETIC WEIGHTS: DEPTH VALUES ARE MEANINGLESS'
#: Candidate colour bar ticks (metres).
_TICKS_M = (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 4, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 150, 200, 300,
            500, 1000)
_HEADERS = {
    'abs_rel': 'AbsRel', 'sq_rel': 'SqRel', 'rmse_m': 'RMSE [m]', 'rmse_log': 'RMSE log', 'log10': 'log10',
    'silog': 'SILog', 'delta1': 'δ<1.25', 'delta2': 'δ<1.25²', 'delta3': 'δ<1.25³',
}


def json_safe(value: Any) -> Any:
    """``value`` with NaN/Inf floats replaced by None and numpy scalars by Python numbers (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Images


def colourise_depth(depth_m: np.ndarray, lo_m: float, hi_m: float) -> np.ndarray:
    """BGR uint8 turbo colouring of inverse depth between ``lo_m`` (red, near) and ``hi_m`` (blue, far)."""
    depth = np.asarray(depth_m, dtype=np.float64)
    lo, hi = max(lo_m, 1e-3), max(hi_m, lo_m * 1.001 + 1e-3)
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (1.0 / depth - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
    valid = np.isfinite(t) & (depth > 0)
    idx = np.clip(np.nan_to_num(t) * 255.0, 0, 255).astype(np.uint8)
    out = cv2.applyColorMap(idx, cv2.COLORMAP_TURBO)
    out[~valid] = 0
    return out


@dataclass(frozen=True)
class DepthScale:
    """The depth range of a set of depth figures: ``lo_m`` (red, near) to ``hi_m`` (blue, far), coloured in
    inverse depth (``colourise_depth``)."""

    lo_m: float
    hi_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo_m) and math.isfinite(self.hi_m) and 0.0 < self.lo_m < self.hi_m):
            raise ValueError(f'a depth scale needs 0 < lo_m < hi_m, got {self.lo_m}, {self.hi_m}')

    @classmethod
    def of(cls, depths_m: Sequence[np.ndarray], low_pct: float = 2.0, high_pct: float = 98.0,
           default: tuple[float, float] = (0.5, 10.0)) -> DepthScale:
        """One scale for all of ``depths_m`` (the images of a camera set): the ``low_pct`` and ``high_pct``
        percentiles of their finite positive values together; ``default`` when there are none."""
        values = [d[np.isfinite(d) & (d > 0)] for d in (np.asarray(a, dtype=np.float64) for a in depths_m)]
        pooled = np.concatenate(values) if values else np.zeros(0)
        if pooled.size == 0:
            return cls(*default)
        lo, hi = float(np.percentile(pooled, low_pct)), float(np.percentile(pooled, high_pct))
        lo = max(lo, 1e-3)
        return cls(lo, max(hi, lo * 1.01))

    def colourise(self, depth_m: np.ndarray) -> np.ndarray:
        return colourise_depth(depth_m, self.lo_m, self.hi_m)

    def row_of(self, depth_m: float, height_px: int) -> int:
        """The colour bar row of ``depth_m`` (top: ``lo_m``, bottom: ``hi_m``)."""
        t = (1.0 / depth_m - 1.0 / self.hi_m) / (1.0 / self.lo_m - 1.0 / self.hi_m)
        return round((1.0 - min(max(t, 0.0), 1.0)) * (height_px - 1))


def colour_bar(scale: DepthScale, height_px: int, width_px: int = COLOUR_BAR_WIDTH_PX) -> np.ndarray:
    """BGR colour bar of ``scale``, ``height_px`` tall: near (``lo_m``) at the top, ticks in metres."""
    height_px = int(height_px)
    if height_px < 2:
        raise ValueError(f'a colour bar needs a height of 2 px or more, got {height_px}')
    rows = np.arange(height_px, dtype=np.float64)
    t = 1.0 - rows / (height_px - 1)
    inv = t * (1.0 / scale.lo_m - 1.0 / scale.hi_m) + 1.0 / scale.hi_m
    column = scale.colourise((1.0 / inv)[:, None])
    bar = np.full((height_px, width_px, 3), 255, np.uint8)
    bar[:, 6:30] = column
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    min_gap = 14  # px between labels
    bottom = scale.row_of(scale.hi_m, height_px)
    ticks = [(0, scale.lo_m)]
    for value in _TICKS_M:  # round values between the ends, where their labels do not collide
        row = scale.row_of(value, height_px)
        if scale.lo_m < value < scale.hi_m and row - ticks[-1][0] >= min_gap and bottom - row >= min_gap:
            ticks.append((row, value))
    ticks.append((bottom, scale.hi_m))
    for row, value in ticks:
        cv2.line(bar, (30, row), (36, row), (0, 0, 0), 1)
        label = f'{value:.2f} m' if value < 10 else f'{value:.0f} m'
        y = min(max(row + 4, 10), height_px - 3)
        cv2.putText(bar, label, (38, y), font, size, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def warning_banner(image_bgr: np.ndarray, text: str) -> np.ndarray:
    """``image_bgr`` with a red band on top holding ``text`` in white (scaled to fit the width)."""
    w = image_bgr.shape[1]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 2
    (text_w, _), _ = cv2.getTextSize(text, font, 1.0, thickness)
    size = min(1.0, (w - 16) / max(text_w, 1))
    if size < 0.35:
        thickness = 1
    (text_w, text_h), _ = cv2.getTextSize(text, font, size, thickness)
    band = np.zeros((text_h + 16, w, 3), np.uint8)
    band[:] = (0, 0, 200)  # BGR red
    cv2.putText(band, text, (max((w - text_w) // 2, 4), text_h + 8), font, size, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return np.concatenate([band, image_bgr], axis=0)


def depth_figure(depth_m: np.ndarray, scale: DepthScale, title: str, warning: str = '') -> np.ndarray:
    """A BGR depth figure: the depth coloured with ``scale`` (``title`` in its corner), its colour bar in
    metres on the right and, when ``warning`` is given, a red warning band on top."""
    image = scale.colourise(depth_m)
    _label(image, title)
    figure = np.concatenate([image, colour_bar(scale, image.shape[0])], axis=1)
    return warning_banner(figure, warning) if warning else figure


def _label(image_bgr: np.ndarray, label: str) -> None:
    (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(image_bgr, (0, 0), (text_w + 12, text_h + 12), (0, 0, 0), -1)
    cv2.putText(image_bgr, label, (6, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)


def _visible_sparse(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Grow sparse valid pixels (LiDAR) to 5x5 blobs so that they can be seen at small scale."""
    if valid.mean() > 0.2:
        return image
    grown = cv2.dilate(image, np.ones((5, 5), np.uint8))
    mask = cv2.dilate(valid.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    out = np.zeros_like(image)
    out[mask] = grown[mask]
    out[valid] = image[valid]
    return out


def error_map(pred_m: np.ndarray, gt_m: np.ndarray, valid: np.ndarray, max_rel: float = 0.5) -> np.ndarray:
    """BGR map of |pred - gt| / gt at ``valid`` pixels (0 blue .. >= ``max_rel`` red), black elsewhere."""
    with np.errstate(invalid='ignore', divide='ignore'):
        rel = np.abs(pred_m.astype(np.float64) - gt_m) / gt_m
    ok = valid & np.isfinite(rel)
    idx = np.clip(np.nan_to_num(rel) / max_rel * 255.0, 0, 255).astype(np.uint8)
    out = cv2.applyColorMap(idx, cv2.COLORMAP_TURBO)
    out[~ok] = 0
    return _visible_sparse(out, ok)


def _tile(image_bgr: np.ndarray, label: str) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    height = max(1, round(h * TILE_WIDTH_PX / w))
    tile = cv2.resize(image_bgr, (TILE_WIDTH_PX, height), interpolation=cv2.INTER_AREA)
    _label(tile, label)
    return tile


def depth_panel(rgb: np.ndarray, pred_m: np.ndarray, gt_m: np.ndarray | None, valid: np.ndarray | None,
                title: str, scale: DepthScale, warning: str = '') -> np.ndarray:
    """A 2x2 BGR panel: image, prediction, ground truth, relative error (the last two when there is GT),
    depth coloured with ``scale`` (the camera set's), with its colour bar in metres on the right and the
    ``warning`` band on top when given."""
    tiles = [_tile(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), title), _tile(scale.colourise(pred_m), 'prediction')]
    if gt_m is not None and valid is not None:
        gt_img = _visible_sparse(scale.colourise(np.where(valid, gt_m, np.nan)), valid)
        tiles += [_tile(gt_img, 'ground truth'), _tile(error_map(pred_m, gt_m, valid), '|err|/gt 0..0.5')]
    rows = [np.concatenate(tiles[i:i + 2], axis=1) for i in range(0, len(tiles), 2)]
    panel = np.concatenate(rows, axis=0)
    panel = np.concatenate([panel, colour_bar(scale, panel.shape[0])], axis=1)
    return warning_banner(panel, warning) if warning else panel


def save_png(path: Path, image_bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image_bgr):
        raise OSError(f'could not write {path}')


# ---------------------------------------------------------------------------------------------------------
# Charts


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def _chart_warning(fig, warning: str) -> None:
    if warning:
        fig.text(0.5, 0.995, warning, ha='center', va='top', color='white', fontsize=11, fontweight='bold',
                 bbox={'facecolor': 'red', 'edgecolor': 'none', 'pad': 3})


def save_error_histograms(log_ratios: Mapping[str, np.ndarray], path: Path, warning: str = '') -> bool:
    """Histogram of ln(pred / gt) per camera on valid pixels (``warning`` on top when given); False when
    matplotlib is unavailable."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    span = max([float(np.percentile(np.abs(v), 99)) for v in log_ratios.values() if v.size] + [1e-3])
    bins = np.linspace(-span, span, 81)
    for camera, values in log_ratios.items():
        if values.size:
            ax.hist(values, bins=bins, histtype='step', density=True, label=f'{camera} (n={values.size})')
    ax.set_xlabel('ln(predicted / ground truth)')
    ax.set_ylabel('density (log scale)')
    ax.set_yscale('log')
    ax.set_title('Depth error distribution on valid ground-truth pixels')
    ax.axvline(0.0, color='k', lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93) if warning else None)
    _chart_warning(fig, warning)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def save_camera_bars(per_camera: Mapping[str, Mapping[str, Any]], path: Path, warning: str = '') -> bool:
    """Bars of AbsRel, RMSE and delta1 per camera (``warning`` on top when given); False when matplotlib is
    unavailable."""
    plt = _pyplot()
    if plt is None:
        return False
    names = list(per_camera)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.5), dpi=100)
    for ax, key in zip(axes, ('abs_rel', 'rmse_m', 'delta1'), strict=True):
        values = [per_camera[n].get(key) for n in names]
        values = [float('nan') if v is None else float(v) for v in values]
        ax.bar(range(len(names)), values, color='tab:blue')
        ax.set_xticks(range(len(names)), names, rotation=30, ha='right', fontsize=8)
        ax.set_title(_HEADERS[key])
    fig.suptitle('Per-camera metrics', y=0.9 if warning else 0.98)
    fig.tight_layout(rect=(0, 0, 1, 0.88) if warning else None)
    _chart_warning(fig, warning)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any, digits: int = 4, scientific: bool = True) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        if not math.isfinite(value):
            return '-'
        if scientific and value != 0.0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
            return f'{value:.2e}'
        return f'{value:.{digits}f}'
    return str(value)


def metrics_table(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown table lines of the metric dicts ``rows`` (name -> metrics)."""
    cols = [*METRIC_NAMES, 'scale_ratio', 'coverage', 'n_pixels']
    heads = [_HEADERS.get(c, c) for c in cols]
    lines = ['| camera | frames | ' + ' | '.join(heads) + ' |', '|---' * (len(cols) + 2) + '|']
    for name, m in rows.items():
        values = [_fmt(m.get(c)) for c in cols]
        lines.append(f'| {name} | {m.get("frames", "-")} | ' + ' | '.join(values) + ' |')
    return lines


def latency_table(stages: Mapping[str, Mapping[str, float]]) -> list[str]:
    lines = ['| stage | mean | p50 | p95 | max |', '|---|---|---|---|---|']
    for stage, s in stages.items():
        values = ' | '.join(_fmt(s.get(k), 2, scientific=False) for k in ('mean', 'p50', 'p95', 'max'))
        lines.append(f'| {stage} | {values} |')
    return lines


def rig_consistency_lines(rig: Mapping[str, Any] | None) -> list[str]:
    """The multi-camera section of report.md (``metric3d_ros.core.rig_metrics``); none without a rig."""
    if not rig:
        return []
    lines = ['', '## Multi-camera consistency', '', f'Rig `{rig["rig_file"]}`, {rig["batches"]} batches. '
             f'{rig["definition"]}.', '',
             '| pair | overlap | matched | pred_rel median | pred_rel p90 | within 1 % | gt_rel median |',
             '|---|---|---|---|---|---|---|']
    for name, p in {**rig['pairs'], 'all': rig['overall']}.items():
        pred, gt = p['pred_rel'], p['gt_rel']
        lines.append(f'| {name} | {p["overlap"]} | {p["matched"]} | {_fmt(pred.get("median"))} | '
                     f'{_fmt(pred.get("p90"))} | {_fmt(pred.get("within_1pct"), 3, scientific=False)} | '
                     f'{_fmt(gt.get("median"))} |')
    fused = rig['fused_vs_gt']
    lines += ['', f'Fused cloud (stride {fused["stride"]}) projected into each camera against its ground '
              'truth, |z - g| / g:', '', '| points | count | median | p90 | within 5 % |',
              '|---|---|---|---|---|']
    for name in ('own', 'other'):
        f = fused[name]
        lines.append(f'| {name} camera | {f["count"]} | {_fmt(f.get("median"))} | {_fmt(f.get("p90"))} | '
                     f'{_fmt(f.get("within_5pct"), 3, scientific=False)} |')
    return lines


def _resolution_line(resolution: str) -> str:
    if resolution == 'network':
        return ('- outputs at the network resolution, scored at the ground-truth pixels through the '
                'published depth CameraInfo')
    return '- outputs at the camera resolution (the ground truth\'s)'


def write_markdown(report: Mapping[str, Any], path: Path, figures: Sequence[str]) -> None:
    """report.md: setup, metric tables, latency tables, figure links."""
    eng = report['engine']
    lines = [f'# Depth evaluation of `{report["bag"]}`', '']
    for warning in report.get('warnings', []):
        lines += [f'> **WARNING:** {warning}', '']
    lines += [
        f'- engine: backend `{eng.get("backend")}`, variant `{eng.get("variant")}`, weights '
        f'`{eng.get("weights") or "official"}`, network input '
        f'{eng.get("net_height_px")}x{eng.get("net_width_px")}, device `{eng.get("device")}`, '
        f'precision `{eng.get("precision")}`, max batch {eng.get("max_batch_size")}',
        f'- frames: {report["counts"]["frames"]} inferred in {report["counts"]["batches"]} batches, '
        f'{report["counts"]["frames_with_gt"]} with ground truth, {report["counts"]["errors"]} failed',
        f'- evaluated depth range [{report["metrics_config"]["min_depth_m"]}, '
        f'{report["metrics_config"]["max_depth_m"]}] m, prediction clamped: '
        f'{report["metrics_config"]["clamp_prediction"]}; metrics are means over frames',
        _resolution_line(report.get('output_resolution', 'camera')),
        f'- storage `{report["storage"]}`; CameraInfo pairing: {report["counts"]["info_exact"]} exact, '
        f'{report["counts"]["info_nearest"]} nearest',
        '', '## Metrics (metric scale)', '',
    ]
    lines += metrics_table({**report['metrics']['cameras'], 'all': report['metrics']['overall']})
    if report.get('metrics_median_scaled'):
        lines += ['', '## Median-scaled metrics (per-frame scale removed; not metric)', '']
        ms = report['metrics_median_scaled']
        lines += metrics_table({**ms['cameras'], 'all': ms['overall']})
    cloud = report.get('cloud_check')
    if cloud:
        lines += ['', 'Cloud check: the organized clouds equal the unprojection of the published depth with '
                      f'the CameraInfo intrinsics to {_fmt(cloud.get("max_abs_diff_m"))} m (max over all '
                      'points).']
    lines += rig_consistency_lines(report.get('multi_camera'))
    lat = report['latency_ms']
    lines += ['', '## Latency per batch (ms)', '', *latency_table(lat['stages']), '',
              f'Throughput: {_fmt(lat.get("frames_per_s"), 2)} frames/s over the engine time.', '',
              '### Per camera (engine total of the batches holding the camera, plus decoding)', '',
              '| camera | frames | p50 | p95 |', '|---|---|---|---|']
    for cam, s in lat['cameras'].items():
        p50, p95 = _fmt(s.get('p50'), 2, scientific=False), _fmt(s.get('p95'), 2, scientific=False)
        lines.append(f'| {cam} | {s["frames"]} | {p50} | {p95} |')
    if figures:
        lines += ['', '## Figures', '']
        lines += [f'![{Path(f).stem}]({f})' for f in figures]
    path.write_text('\n'.join(lines) + '\n')


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(json_safe(report), indent=1, sort_keys=False) + '\n')
