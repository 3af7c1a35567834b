"""Graph edits applied to an exported fp32 Metric3D graph (onnx only, no torch).

- :func:`set_input_dtype`: make the ``image`` input uint8 (a Cast to float32 is prepended); the values and
  therefore the results are the same as feeding the float32 file with integral 0..255 values.
- :func:`convert_to_mixed_fp16`: autocast-style half precision. Convolutions and matrix products (the
  arithmetic that dominates the cost) run in float16 with float16 weights; everything numerically sensitive
  stays in float32: softmax (attention and the 256 depth bins), LayerNorm, the resizes, the positional
  embedding interpolation, the depth-bin expectation, the GRU state updates and the output clamps. Inputs
  and outputs keep their types (float32 out). A plain whole-graph float16 conversion would store depth as
  ``(d - 200) / 100`` and add 200 back in float16, quantizing every output depth to 0.125 m steps.

Both edits return a copy and leave the input model untouched, unless ``inplace=True`` (which saves a copy of
the weights: giant2 holds 5.5 GB).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Op types that run in float16 in a mixed-precision file.
FP16_OPS: tuple[str, ...] = ('Conv', 'ConvTranspose', 'MatMul', 'Gemm')
_FP16_MAX = float(np.finfo(np.float16).max)


def set_input_dtype(model: onnx.ModelProto, input_name: str, dtype: str,
                    inplace: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` whose float32 input ``input_name`` has element type ``dtype`` ('float32'|'uint8').

    For 'uint8' the input is declared uint8 and a ``Cast`` to float32 feeds the original consumers.
    """
    if dtype not in ('float32', 'uint8'):
        raise ValueError(f"input dtype must be 'float32' or 'uint8', got {dtype!r}")
    out = model if inplace else _copy(model)
    if dtype == 'float32':
        return out
    graph = out.graph
    inputs = [i for i in graph.input if i.name == input_name]
    if not inputs:
        raise ValueError(f'model has no input named {input_name!r} (inputs: {[i.name for i in graph.input]})')
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError(f'input {input_name!r} is not float32; set_input_dtype expects a float32 export')
    tensor_type.elem_type = TensorProto.UINT8
    as_float = f'{input_name}_as_float32'
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = as_float
    cast = helper.make_node('Cast', [input_name], [as_float], name=f'{input_name}_to_float32',
                            to=TensorProto.FLOAT)
    nodes = [cast, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def convert_to_mixed_fp16(model: onnx.ModelProto, ops: Iterable[str] = FP16_OPS,
                          inplace: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` in which nodes of type ``ops`` compute in float16 (see the module docstring).

    Float32 initializers feeding those nodes are stored as float16 (values beyond the float16 range raise
    ValueError); float32 activations get a Cast to float16 (one per tensor, shared by its consumers), and
    every output of a converted node is cast back to float32 under its original name. A float16 value that
    only round-trips through float32 into another converted node is passed on directly, which is exact.
    """
    ops = frozenset(ops)
    out = model if inplace else _copy(model)
    graph = out.graph
    types = _float_tensors(out)
    initializers = {init.name: init for init in graph.initializer}
    half_initializers: dict[str, str] = {}
    half_of: dict[str, str] = {}  # float32 tensor -> the float16 tensor holding the same values
    nodes: list[onnx.NodeProto] = []

    def half_input(name: str) -> str:
        if name in half_of:
            return half_of[name]
        init = initializers.get(name)
        if init is not None:
            if name not in half_initializers:
                values = numpy_helper.to_array(init)
                peak = float(np.abs(values).max()) if values.size else 0.0
                if peak > _FP16_MAX:
                    raise ValueError(f'initializer {name} holds {peak:g}, beyond the float16 range')
                half_name = f'{name}_fp16'
                graph.initializer.append(numpy_helper.from_array(values.astype(np.float16), half_name))
                half_initializers[name] = half_name
            return half_initializers[name]
        half_name = f'{name}_fp16'
        nodes.append(helper.make_node('Cast', [name], [half_name], name=f'{name}_cast_fp16',
                                      to=TensorProto.FLOAT16))
        half_of[name] = half_name
        return half_name

    for node in graph.node:
        convertible = node.op_type in ops and node.domain in ('', 'ai.onnx') and all(
            not name or name in types for name in node.input)
        if not convertible:
            nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if name:
                node.input[k] = half_input(name)
        back_casts = []
        for k, name in enumerate(node.output):
            half_name = f'{name}_fp16'
            node.output[k] = half_name
            half_of[name] = half_name
            back_casts.append(helper.make_node('Cast', [half_name], [name], name=f'{name}_cast_fp32',
                                               to=TensorProto.FLOAT))
        nodes.append(node)
        nodes.extend(back_casts)

    del graph.node[:]
    graph.node.extend(_without_dead_casts(nodes, {o.name for o in graph.output}))
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the float32 tensors of ``model`` (after shape inference, run on a copy without the weights so
    that graphs over protobuf's 2 GiB limit work too)."""
    graph = model.graph
    names = {init.name for init in graph.initializer if init.data_type == TensorProto.FLOAT}
    declared = {value.name for value in graph.input}
    weights = [helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
               for init in graph.initializer if init.name not in declared]
    light = helper.make_model(
        helper.make_graph(graph.node, graph.name, [*graph.input, *weights], graph.output,
                          value_info=graph.value_info),
        opset_imports=model.opset_import, ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(light).graph
    for value in (*inferred.input, *inferred.value_info, *inferred.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            names.add(value.name)
    return names


def _without_dead_casts(nodes: list[onnx.NodeProto], graph_outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop Cast nodes inserted here whose output nobody reads (repeatedly, consumers first)."""
    inserted = ('_cast_fp16', '_cast_fp32')
    while True:
        used = {name for node in nodes for name in node.input} | graph_outputs
        kept = [n for n in nodes
                if not (n.op_type == 'Cast' and n.name.endswith(inserted) and n.output[0] not in used)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
