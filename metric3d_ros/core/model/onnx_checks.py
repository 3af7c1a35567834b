"""Export-time checks of a Metric3D ONNX graph (onnx + numpy; no torch).

- :func:`check_graph`: ``onnx.checker`` with ``full_check`` (which includes strict shape inference);
- :func:`inferred_output_shapes`: the output shapes after shape inference, symbolic dims by name;
- :func:`find_baked_sizes`: constants that encode the size of the trace input (e.g. the token grid or the
  Resize target of a 308 x 364 trace), and non-symbolic input dims. A graph that passes runs at any size;
- :func:`agreement`: the conformance criterion of ``shared/reference/metric3d/README.md`` as numbers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

#: Criterion of the reference README: >= 99.9 % of elements within 1e-3 + 1e-3 |ref|, none off by > 1 % range.
ELEMENT_ATOL = 1e-3
ELEMENT_RTOL = 1e-3
MIN_FRACTION_OK = 0.999
MAX_DIFF_OVER_RANGE = 0.01

_SMALL = 16  # constants with more elements than this are weights, not shapes
_SIZE_DIVISORS = (1, 2, 4, 7, 14, 28)  # input, 1/2, the decoder's 1/4 and 1/7 grids, tokens, 1/28
_POS_GRID = 37
_POS_OFFSET = 0.1


class ExportCheckError(RuntimeError):
    """An exported graph failed a check; the message says which and what to change."""


@dataclass(frozen=True)
class BakedConstant:
    """A constant whose values include a number derived from the trace input size."""

    where: str  # 'Constant node <name>', 'initializer <name>', 'attribute <node>.<attr>' or 'input dim'
    values: tuple[float, ...]
    matches: tuple[float, ...]

    def describe(self) -> str:
        return f'{self.where}: values {list(self.values)} contain trace-size numbers {list(self.matches)}'


@dataclass(frozen=True)
class Agreement:
    """How far ``ours`` is from ``ref``: criterion fraction, largest absolute and range-relative deviation."""

    fraction_ok: float
    max_abs: float
    max_over_range: float
    median_rel: float = 0.0  # median |ours - ref| / max(|ref|, 1e-6)

    @property
    def meets_criterion(self) -> bool:
        return self.fraction_ok >= MIN_FRACTION_OK and self.max_over_range <= MAX_DIFF_OVER_RANGE

    def describe(self) -> str:
        return (f'{100.0 * self.fraction_ok:.4f} % within 1e-3+1e-3|ref|, max |diff| {self.max_abs:.3g} '
                f'({100.0 * self.max_over_range:.4f} % of range), median relative {self.median_rel:.2e}')


def agreement(ours: np.ndarray, ref: np.ndarray) -> Agreement:
    """The reference README's criterion applied to ``ours`` against ``ref`` (same shape); NaN/inf fail it."""
    ours64 = np.asarray(ours, dtype=np.float64)
    ref64 = np.asarray(ref, dtype=np.float64)
    if ours64.shape != ref64.shape:
        raise ValueError(f'shape mismatch: {ours64.shape} vs reference {ref64.shape}')
    if not np.isfinite(ours64).all():
        return Agreement(0.0, math.inf, math.inf, math.inf)
    diff = np.abs(ours64 - ref64)
    fraction = float(np.mean(diff <= ELEMENT_ATOL + ELEMENT_RTOL * np.abs(ref64)))
    worst = float(diff.max()) if diff.size else 0.0
    span = float(ref64.max() - ref64.min()) if ref64.size else 0.0
    ratio = worst / span if span > 0 else (0.0 if worst == 0 else math.inf)
    median_rel = float(np.median(diff / np.maximum(np.abs(ref64), 1e-6))) if diff.size else 0.0
    return Agreement(fraction, worst, ratio, median_rel)


def check_graph(model: onnx.ModelProto | str | os.PathLike[str]) -> None:
    """``onnx.checker.check_model(full_check=True)`` on a model or a file (files may exceed 2 GiB);
    raises ExportCheckError with the checker's message."""
    what = 'the exported graph' if isinstance(model, onnx.ModelProto) else os.fspath(model)
    target = model if isinstance(model, onnx.ModelProto) else os.fspath(model)
    try:
        onnx.checker.check_model(target, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportCheckError(f'onnx.checker rejected {what}: {exc}') from exc


def inferred_output_shapes(model: onnx.ModelProto) -> dict[str, tuple[str | int, ...]]:
    """Output name -> shape after strict shape inference (symbolic dims as their names, unknown as '?')."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ExportCheckError(f'shape inference failed on the exported graph: {exc}') from exc
    shapes = {}
    for out in inferred.graph.output:
        dims = out.type.tensor_type.shape.dim
        shapes[out.name] = tuple(d.dim_param or (d.dim_value if d.HasField('dim_value') else '?')
                                 for d in dims)
    return shapes


def trace_size_numbers(height_px: int, width_px: int) -> tuple[set[int], set[float]]:
    """Integers and floats that a graph traced at height x width would hold if it had baked that size in.

    Integers: each side divided by 1, 2, 4, 7, 14, 28 (input, decoder grids, token grid), the token count
    (h * w, plus the class token, plus the 4 registers) and the 1/4-grid pixel count. Floats: the same
    integers, and the positional-embedding scale factors (n + 0.1) / 37 and their inverses.
    """
    ints: set[int] = set()
    for side in (height_px, width_px):
        for divisor in _SIZE_DIVISORS:
            if side % divisor == 0:
                ints.add(side // divisor)
    h_tok, w_tok = height_px // 14, width_px // 14
    tokens = h_tok * w_tok
    ints.update({tokens, tokens + 1, tokens + 5, (height_px // 4) * (width_px // 4), height_px * width_px})
    floats: set[float] = {float(v) for v in ints}
    for n in (h_tok, w_tok):
        scale = (n + _POS_OFFSET) / _POS_GRID
        floats.update({scale, 1.0 / scale})
    return ints, floats


def find_baked_sizes(model: onnx.ModelProto, trace_height_px: int, trace_width_px: int,
                     input_name: str = 'image') -> list[BakedConstant]:
    """Constants (Constant nodes, small initializers, int attributes) that hold trace-size numbers, the
    ``sizes`` input of Resize nodes when it is a constant, and input dims that are fixed instead of symbolic.

    Pick a trace size whose numbers occur nowhere else in the graph (the exporter's 308 x 364 gives 11, 13,
    22, 26, 44, 52, 77, 91, ..., which no Metric3D graph holds); an empty list means no size was baked in.
    """
    ints, floats = trace_size_numbers(trace_height_px, trace_width_px)
    found: list[BakedConstant] = []
    constants: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if _numel(init.dims) <= _SMALL:
            constants[init.name] = numpy_helper.to_array(init)
            _scan(found, f'initializer {init.name}', constants[init.name], ints, floats)
    for node in model.graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value' and _numel(attr.t.dims) <= _SMALL:
                    value = numpy_helper.to_array(attr.t)
                    constants[node.output[0]] = value
                    _scan(found, f'Constant node {node.name or node.output[0]}', value, ints, floats)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.INTS and attr.name not in ('perm', 'axes'):
                _scan(found, f'attribute {node.name}.{attr.name}', np.array(attr.ints), ints, floats)
    for node in model.graph.node:
        if node.op_type == 'Resize' and len(node.input) > 3 and node.input[3] in constants:
            sizes = constants[node.input[3]]
            found.append(BakedConstant(f'Resize {node.name} sizes (a constant)',
                                       tuple(float(v) for v in sizes.ravel()), ()))
    for value in model.graph.input:
        if value.name != input_name:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis in (0, 2, 3):
            if axis < len(dims) and not dims[axis].dim_param:
                found.append(BakedConstant(f'input dim {axis} of {input_name}',
                                           (float(dims[axis].dim_value),), ()))
    return found


def _scan(found: list[BakedConstant], where: str, value: np.ndarray, ints: set[int],
          floats: set[float]) -> None:
    flat = value.ravel()
    if flat.size == 0 or flat.size > _SMALL:
        return
    if flat.dtype.kind in 'iu':
        hits = sorted({int(v) for v in flat if int(v) in ints})
    elif flat.dtype.kind == 'f':
        hits = sorted({float(v) for v in flat
                       if any(math.isclose(float(v), f, rel_tol=1e-6, abs_tol=0.0) for f in floats)})
    else:
        return
    if hits:
        found.append(BakedConstant(where, tuple(float(v) for v in flat), tuple(float(h) for h in hits)))


def _numel(dims) -> int:
    return int(np.prod(list(dims))) if len(dims) else 1
