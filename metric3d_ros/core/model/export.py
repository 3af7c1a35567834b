"""Export a Metric3D network to one ONNX file with dynamic batch, height and width.

    from metric3d_ros.core.model.export import ExportOptions, export_metric3d
    report = export_metric3d(ExportOptions(variant='small', weights='synthetic', output='vit_s.onnx'))

The graph takes the raw image (``image``: (B, 3, H, W) RGB 0..255, float32 or uint8) and folds the
normalization in; it returns ``depth`` (canonical, metres at focal 1000 px), ``confidence`` and ``normal``
(xyz + kappa). See :mod:`metric3d_ros.core.model.onnx_metadata` for the whole contract and the metadata.

How it is made: the network is traced once with the TorchScript-based exporter (``dynamo=False``) at a
small trace size (308 x 364, batch 1). The network's export path (``is_exporting()``) computes every size
from the input's shape with tensor arithmetic, including the bicubic positional-embedding interpolation
(``resample.bicubic_pos_grid``), so nothing of the trace size is baked in; :func:`export_metric3d` proves it
on every export: ``onnx.checker`` (full check), strict shape inference, a scan for trace-size constants, and
a parity run of ONNX Runtime (CPU) against the PyTorch model at another size and batch (default 2 x 280 x
392), printed as agreement numbers. An fp32 file that misses the conformance criterion is not written.
Half precision (``fp16=True``) converts the traced fp32 graph (``onnx_transforms.convert_to_mixed_fp16``);
its deviation from the fp32 PyTorch model is reported, not enforced.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

import metric3d_ros
from metric3d_ros.core.model import load_metric3d
from metric3d_ros.core.model.onnx_checks import (
    Agreement,
    ExportCheckError,
    agreement,
    check_graph,
    find_baked_sizes,
    inferred_output_shapes,
)
from metric3d_ros.core.model.onnx_metadata import (
    INPUT_DTYPES,
    INPUT_NAME,
    MEAN_RGB,
    OUTPUT_NAMES,
    STD_RGB,
    OnnxModelInfo,
)
from metric3d_ros.core.model.onnx_transforms import FP16_OPS, convert_to_mixed_fp16, set_input_dtype
from metric3d_ros.core.model.specs import get_spec

LOG = logging.getLogger(__name__)

SYNTHETIC = 'synthetic'
MIN_OPSET = 17
#: Trace input size: its derived numbers (11, 13, 22, 26, 44, 52, 77, 91, ...) occur nowhere else in the
#: graphs of the three variants (unlike 224 x 308, whose 16 x 22 token grid collides with ViT-L's 16 heads).
DEFAULT_TRACE_HW = (308, 364)
DEFAULT_CHECK_HW = (280, 392)
#: protobuf cannot hold more than 2 GiB; larger graphs (giant2) keep their weights in ``<file>.data``.
_INLINE_LIMIT_BYTES = 1_900_000_000
_OUTPUT_CHANNELS = (1, 1, 4)  # depth, confidence, normal


@dataclass(frozen=True)
class ExportOptions:
    """What ``metric3d_export`` writes.

    variant: 'small' | 'large' | 'giant2' ('vit_small' etc. accepted).
    weights: checkpoint path, or 'synthetic' for the deterministic synthetic weights.
    output: the .onnx path (giant2 also writes ``<output>.data``).
    fp16: convolutions and matrix products in float16 (see ``onnx_transforms``), I/O float32.
    opset: ONNX opset, 17 or newer.
    input_dtype: element type of the ``image`` input, 'float32' or 'uint8' (values 0..255 either way).
    check_hw: network size of the parity run (multiples of 28); None skips the parity run.
    check_batch: batch size of the parity run (other than the trace batch 1, to prove the batch is dynamic).
    trace_hw: size traced at (multiples of 28, not equal to check_hw).
    """

    variant: str
    weights: str
    output: str
    fp16: bool = False
    opset: int = MIN_OPSET
    input_dtype: str = 'float32'
    check_hw: tuple[int, int] | None = DEFAULT_CHECK_HW
    check_batch: int = 2
    trace_hw: tuple[int, int] = DEFAULT_TRACE_HW

    def __post_init__(self) -> None:
        object.__setattr__(self, 'variant', get_spec(self.variant).name)
        if not self.weights:
            raise ValueError("weights must be a checkpoint path or 'synthetic'")
        if not str(self.output).endswith('.onnx'):
            raise ValueError(f'output must be a .onnx path, got {self.output!r}')
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset < MIN_OPSET:
            raise ValueError(f'opset must be an integer >= {MIN_OPSET}, got {self.opset!r}')
        if self.input_dtype not in INPUT_DTYPES:
            raise ValueError(f'input_dtype must be one of {INPUT_DTYPES}, got {self.input_dtype!r}')
        for name in ('trace_hw', 'check_hw'):
            hw = getattr(self, name)
            if hw is None and name == 'check_hw':
                continue
            if len(hw) != 2 or any(int(v) <= 0 or int(v) % 28 for v in hw):
                raise ValueError(f'{name} must be two positive multiples of 28 (e.g. 280x392), got {hw!r}')
            object.__setattr__(self, name, (int(hw[0]), int(hw[1])))
        if self.check_hw is not None and self.check_hw == self.trace_hw:
            raise ValueError(f'check_hw {self.check_hw} equals trace_hw: the parity run needs another size')
        batch = self.check_batch
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f'check_batch must be a positive integer, got {self.check_batch!r}')


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and measured."""

    path: Path
    info: OnnxModelInfo
    file_bytes: int
    output_shapes: dict[str, tuple[str | int, ...]]
    parity: dict[str, Agreement] = field(default_factory=dict)
    parity_hw: tuple[int, int] | None = None
    parity_batch: int = 0
    export_s: float = 0.0
    parity_s: float = 0.0

    def lines(self) -> list[str]:
        """Human-readable summary, parity last."""
        out = [f'wrote {self.path} ({self.file_bytes / 1e6:.1f} MB): {self.info.describe()}',
               f'outputs after shape inference: {self.output_shapes}',
               f'export and graph checks took {self.export_s:.1f} s']
        if self.parity_hw is not None:
            h, w = self.parity_hw
            out.append(f'parity ONNX Runtime CPU vs PyTorch fp32 at {self.parity_batch}x3x{h}x{w} '
                       f'({self.parity_s:.1f} s):')
            out.extend(f'  {name}: {stats.describe()}' for name, stats in self.parity.items())
            if self.info.precision == 'fp16':
                out.append('  (fp16: deviation from fp32 reported, not enforced; see docs/ONNX.md)')
        return out


class ImageToCanonical(nn.Module):
    """The exported function: raw RGB 0..255 (B, 3, H, W) -> (depth, confidence, normal)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.register_buffer('mean', torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(STD_RGB, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.network((image.to(torch.float32) - self.mean) / self.std)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def load_network(variant: str, weights: str) -> tuple[nn.Module, str]:
    """(network in eval mode on the CPU, checkpoint sha256 or 'synthetic') for ``weights``."""
    if weights == SYNTHETIC:
        from metric3d_ros.core.model.synthetic import synthetic_state_dict

        return load_metric3d(synthetic_state_dict(variant), variant=variant), SYNTHETIC
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist: pass a checkpoint or 'synthetic'")
    return load_metric3d(weights, variant=variant), file_sha256(weights)


def trace_to_onnx(network: nn.Module, opset: int = MIN_OPSET,
                  trace_hw: tuple[int, int] = DEFAULT_TRACE_HW) -> onnx.ModelProto:
    """The fp32 graph of ``network`` with the normalization folded in, float32 input, no metadata."""
    wrapper = ImageToCanonical(network).eval()
    example = torch.full((1, 3, *trace_hw), 128.0, dtype=torch.float32)
    dims = {0: 'batch', 2: 'height', 3: 'width'}
    out_dims = {0: 'batch', 2: 'out_height', 3: 'out_width'}
    with tempfile.TemporaryDirectory(prefix='metric3d_export_') as tmp:
        path = Path(tmp) / 'traced.onnx'
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
            warnings.filterwarnings('ignore', message='.*Constant folding - Only steps=1.*')
            warnings.filterwarnings('ignore', category=DeprecationWarning, module=r'torch\.onnx')
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: dims, **{name: out_dims for name in OUTPUT_NAMES}},
                do_constant_folding=True,
            )
        return onnx.load(str(path))  # pulls in external data, if torch wrote any


def finish_graph(traced: onnx.ModelProto, info: OnnxModelInfo) -> onnx.ModelProto:
    """Apply the input dtype and precision of ``info`` to a traced fp32 graph and attach its metadata."""
    props = {p.key: p.value for p in traced.metadata_props}
    if props.get('precision', 'fp32') != 'fp32' or props.get('input_dtype', 'float32') != 'float32':
        raise ValueError('finish_graph needs an fp32 graph with float32 input, got a '
                         f"{props.get('precision')} file with {props.get('input_dtype')} input")
    model = set_input_dtype(traced, INPUT_NAME, info.input_dtype)  # the one copy of the weights made here
    if info.precision == 'fp16':
        model = convert_to_mixed_fp16(model, inplace=True)
    for output, channels in zip(model.graph.output, _OUTPUT_CHANNELS, strict=True):
        output.type.tensor_type.shape.dim[1].dim_value = channels  # (B, 1|4, H, W), not a symbol
    model.producer_name = 'metric3d_ros'
    model.producer_version = info.package_version
    model.doc_string = (f'Metric3D v2 {info.variant}: image (B,3,H,W) RGB 0-255 {info.input_dtype} -> '
                        'depth (canonical), confidence, normal (xyz+kappa); H, W multiples of 28')
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, info.to_props())
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save inline, or with the weights in ``<name>.data`` beside it when over protobuf's 2 GiB limit."""
    weight_bytes = sum(len(init.raw_data) for init in model.graph.initializer)
    if weight_bytes < _INLINE_LIMIT_BYTES:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f'{path.name}.data')


def verify_file(path: Path, trace_hw: tuple[int, int]) -> dict[str, tuple[str | int, ...]]:
    """onnx.checker (full), shape inference and the baked-size scan on a saved file; returns output shapes."""
    check_graph(path)
    graph = onnx.load(str(path), load_external_data=False)
    shapes = inferred_output_shapes(graph)
    baked = find_baked_sizes(graph, *trace_hw)
    if baked:
        listing = '\n  '.join(b.describe() for b in baked)
        raise ExportCheckError(
            f'the exported graph holds sizes of the {trace_hw[0]}x{trace_hw[1]} trace input, so it would not '
            f'run correctly at other sizes:\n  {listing}\nthe network must compute these from the input '
            'shape (see metric3d_ros.core.model.resample)')
    return shapes


def parity_input(batch: int, height_px: int, width_px: int, dtype: str) -> np.ndarray:
    """A deterministic smooth RGB test image batch (B, 3, H, W) in 0..255, integral values."""
    rows = np.linspace(0.0, 1.0, height_px, dtype=np.float64)[:, None]
    cols = np.linspace(0.0, 1.0, width_px, dtype=np.float64)[None, :]
    frames = []
    for b in range(batch):
        channels = [127.5 + 100.0 * np.sin(2.0 * np.pi * ((1 + c + b) * rows + (2 + c) * cols) + b)
                    + 20.0 * np.cos(9.0 * np.pi * rows * cols * (c + 1)) for c in range(3)]
        frames.append(np.stack(channels))
    image = np.clip(np.rint(np.stack(frames)), 0, 255)
    return image.astype(np.uint8 if dtype == 'uint8' else np.float32)


def run_parity(path: Path, network: nn.Module, batch: int, hw: tuple[int, int],
               input_dtype: str) -> dict[str, Agreement]:
    """ONNX Runtime (CPU) on ``path`` vs the PyTorch ``network`` (fp32) on :func:`parity_input`."""
    import onnxruntime as ort

    image = parity_input(batch, hw[0], hw[1], input_dtype)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    ours = session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})
    with torch.no_grad():
        theirs = ImageToCanonical(network).eval()(torch.from_numpy(image))
    return {name: agreement(o, t.numpy()) for name, o, t in zip(OUTPUT_NAMES, ours, theirs, strict=True)}


def export_network(network: nn.Module, variant: str, output: str | os.PathLike[str], *,
                   checkpoint_sha256: str, fp16: bool = False, opset: int = MIN_OPSET,
                   input_dtype: str = 'float32', check_hw: tuple[int, int] | None = DEFAULT_CHECK_HW,
                   check_batch: int = 2, trace_hw: tuple[int, int] = DEFAULT_TRACE_HW,
                   traced: onnx.ModelProto | None = None) -> ExportReport:
    """Export an already loaded ``network`` (see :func:`export_metric3d`). ``traced`` reuses an fp32 graph of
    the same network with float32 input (a :func:`trace_to_onnx` result, or an fp32 float32 file written
    here), so that the fp16 and uint8 files need no second trace."""
    started = time.perf_counter()
    info = OnnxModelInfo(
        variant=get_spec(variant).name, precision='fp16' if fp16 else 'fp32', input_dtype=input_dtype,
        opset=opset, checkpoint_sha256=checkpoint_sha256, package_version=metric3d_ros.__version__,
        fp16_ops=','.join(FP16_OPS) if fp16 else '',
    )
    if traced is None:
        traced = trace_to_onnx(network, opset=opset, trace_hw=trace_hw)
    model = finish_graph(traced, info)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{output.name}.', dir=output.parent))
    try:
        staged = staging / output.name
        save_model(model, staged)
        del model
        shapes = verify_file(staged, trace_hw)
        export_s = time.perf_counter() - started
        parity: dict[str, Agreement] = {}
        parity_s = 0.0
        if check_hw is not None:
            started = time.perf_counter()
            parity = run_parity(staged, network, check_batch, check_hw, input_dtype)
            parity_s = time.perf_counter() - started
            failed = [name for name, stats in parity.items() if not stats.meets_criterion]
            if failed and not fp16:
                listing = '; '.join(f'{n}: {parity[n].describe()}' for n in failed)
                raise ExportCheckError(
                    f'ONNX Runtime disagrees with PyTorch on {listing}; {output} not written')
        for item in staging.iterdir():
            os.replace(item, output.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in (output, output.parent / f'{output.name}.data') if p.exists())
    return ExportReport(path=output, info=info, file_bytes=size, output_shapes=shapes, parity=parity,
                        parity_hw=check_hw, parity_batch=check_batch if check_hw else 0,
                        export_s=export_s, parity_s=parity_s)


def export_metric3d(options: ExportOptions, log: Callable[[str], None] | None = None) -> ExportReport:
    """Load the weights, export, check, run the parity check, and log the report's lines."""
    log = log or LOG.info
    log(f'loading Metric3D {options.variant} weights from {options.weights}')
    network, sha = load_network(options.variant, options.weights)
    h, w = options.trace_hw
    log(f'tracing at 1x3x{h}x{w} (opset {options.opset}, dynamic batch, height and width)')
    report = export_network(
        network, options.variant, options.output, checkpoint_sha256=sha, fp16=options.fp16,
        opset=options.opset, input_dtype=options.input_dtype, check_hw=options.check_hw,
        check_batch=options.check_batch, trace_hw=options.trace_hw,
    )
    for line in report.lines():
        log(line)
    return report
