"""Evaluation report output: report.json, report.md and PNG figures (depth/error panels, histograms, bars).

Panels are drawn with OpenCV; the histogram and bar charts use matplotlib's Agg backend when matplotlib is
installed (the ``dev`` extra) and are skipped with a note otherwise.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metric3d_ros.core.metrics import METRIC_NAMES

TILE_WIDTH_PX = 480
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
    (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(tile, (0, 0), (text_w + 12, text_h + 12), (0, 0, 0), -1)
    cv2.putText(tile, label, (6, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def depth_panel(rgb: np.ndarray, pred_m: np.ndarray, gt_m: np.ndarray | None, valid: np.ndarray | None,
                title: str) -> np.ndarray:
    """A 2x2 BGR panel: image, prediction, ground truth, relative error (the last two when there is GT)."""
    finite = pred_m[np.isfinite(pred_m)]
    ref = gt_m[valid] if gt_m is not None and valid is not None and valid.any() else finite
    lo, hi = (np.percentile(ref, 2), np.percentile(ref, 98)) if ref.size else (0.5, 10.0)
    tiles = [_tile(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), title),
             _tile(colourise_depth(pred_m, lo, hi), f'prediction {lo:.1f}-{hi:.1f} m')]
    if gt_m is not None and valid is not None:
        gt_img = _visible_sparse(colourise_depth(np.where(valid, gt_m, np.nan), lo, hi), valid)
        tiles += [_tile(gt_img, 'ground truth'), _tile(error_map(pred_m, gt_m, valid), '|err|/gt 0..0.5')]
    rows = [np.concatenate(tiles[i:i + 2], axis=1) for i in range(0, len(tiles), 2)]
    return np.concatenate(rows, axis=0)


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


def save_error_histograms(log_ratios: Mapping[str, np.ndarray], path: Path) -> bool:
    """Histogram of ln(pred / gt) per camera on valid pixels; False when matplotlib is unavailable."""
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def save_camera_bars(per_camera: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    """Bars of AbsRel, RMSE and delta1 per camera; False when matplotlib is unavailable."""
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
    fig.suptitle('Per-camera metrics')
    fig.tight_layout()
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
