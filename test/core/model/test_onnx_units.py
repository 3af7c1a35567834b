"""ONNX pieces on tiny graphs: metadata, graph transforms, the baked-size scan, provider planning, the
backend's checks and run paths, and the export command's argument errors. The real ViT-S export is tested in
test_onnx_export.py."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from metric3d_ros.core.engine.onnxruntime_backend import OnnxRuntimeBackend, network_output_hw
from metric3d_ros.core.engine.ort_session import (
    CPU,
    CUDA,
    TENSORRT,
    SessionSettings,
    TrtProfile,
    check_file,
    plan_providers,
    provider_options,
)
from metric3d_ros.core.model.onnx_checks import agreement, find_baked_sizes, trace_size_numbers
from metric3d_ros.core.model.onnx_metadata import OnnxModelError, OnnxModelInfo
from metric3d_ros.core.model.onnx_transforms import convert_to_mixed_fp16, set_input_dtype
from metric3d_ros.tools import export as export_tool

torch.set_num_threads(2)


def _info(**overrides) -> OnnxModelInfo:
    values = dict(variant='small', precision='fp32', input_dtype='float32', opset=17,
                  checkpoint_sha256='synthetic', package_version='0.1.0')
    values.update(overrides)
    return OnnxModelInfo(**values)


def _fake_metric3d(path, info: OnnxModelInfo | None = None, input_type=TensorProto.FLOAT) -> None:
    """A graph with Metric3D's interface: depth = R/10 + 1, confidence = G/255, normal = (R, G, B, 1)/255."""
    dims = ['batch', 3, 'height', 'width']
    out_dims = {'depth': ['batch', 1, 'height', 'width'], 'confidence': ['batch', 1, 'height', 'width'],
                'normal': ['batch', 4, 'height', 'width']}
    inits = [numpy_helper.from_array(np.array([v], np.int64), name)
             for name, v in (('s0', 0), ('s1', 1), ('s2', 2), ('ax', 1))]
    inits += [
        numpy_helper.from_array(np.array(0.1, np.float32), 'tenth'),
        numpy_helper.from_array(np.array(1.0, np.float32), 'one'),
        numpy_helper.from_array(np.array(255.0, np.float32), 'full'),
    ]
    nodes = [helper.make_node('Cast', ['image'], ['x'], to=TensorProto.FLOAT)]
    nodes += [
        helper.make_node('Slice', ['x', 's0', 's1', 'ax'], ['r']),
        helper.make_node('Slice', ['x', 's1', 's2', 'ax'], ['g']),
        helper.make_node('Mul', ['r', 'tenth'], ['r10']),
        helper.make_node('Add', ['r10', 'one'], ['depth']),
        helper.make_node('Div', ['g', 'full'], ['confidence']),
        helper.make_node('Div', ['x', 'full'], ['unit']),
        helper.make_node('Shape', ['r'], ['rshape']),
        helper.make_node('ConstantOfShape', ['rshape'], ['ones'],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node('Concat', ['unit', 'ones'], ['normal'], axis=1),
    ]
    graph = helper.make_graph(
        nodes, 'fake_metric3d', [helper.make_tensor_value_info('image', input_type, dims)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, d) for name, d in out_dims.items()], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    if info is not None:
        helper.set_model_props(model, info.to_props())
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _settings(path, **kw) -> SessionSettings:
    return SessionSettings(model_path=str(path), providers=(CPU,), **kw)


# metadata -----------------------------------------------------------------------------------------


def test_metadata_round_trip_and_contents():
    info = _info(precision='fp16', input_dtype='uint8', fp16_ops='Conv,MatMul', checkpoint_sha256='ab' * 32)
    props = info.to_props()
    assert all(isinstance(v, str) for v in props.values())
    assert props['variant'] == 'small' and props['canonical_focal_px'] == '1000.0'
    assert props['mean_rgb'] == '123.675,116.28,103.53' and props['std_rgb'] == '58.395,57.12,57.375'
    layout = (props['input_layout'], props['input_channel_order'], props['input_range'])
    assert layout == ('NCHW', 'RGB', '0-255')
    assert props['normalization'] == 'folded' and props['opset'] == '17'
    assert OnnxModelInfo.from_props(props) == info


def test_metadata_refuses_foreign_and_incomplete_files():
    with pytest.raises(OnnxModelError, match=r"x\.onnx was not written by metric3d_export"):
        OnnxModelInfo.from_props({'producer': 'someone'}, source='x.onnx')
    props = _info().to_props()
    del props['checkpoint_sha256']
    with pytest.raises(OnnxModelError, match=r"lacks metadata \['checkpoint_sha256'\]"):
        OnnxModelInfo.from_props(props, source='x.onnx')
    props = _info().to_props()
    props['normalization'] = 'none'
    with pytest.raises(OnnxModelError, match="normalization='none'"):
        OnnxModelInfo.from_props(props, source='x.onnx')
    props = _info().to_props()
    props['opset'] = 'eleven'
    with pytest.raises(OnnxModelError, match='malformed metadata'):
        OnnxModelInfo.from_props(props, source='x.onnx')
    with pytest.raises(ValueError, match='opset must be 17 or newer'):
        _info(opset=11)


# graph transforms ---------------------------------------------------------------------------------


def _conv_chain(with_relu: bool) -> onnx.ModelProto:
    """x (1,3,8,8) -> Conv 3x3 -> [Relu] -> Conv 1x1 -> Softmax(axis 1) -> y."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), 'w1')
    b1 = numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), 'b1')
    w2 = numpy_helper.from_array(rng.normal(size=(5, 4, 1, 1)).astype(np.float32), 'w2')
    nodes = [helper.make_node('Conv', ['x', 'w1', 'b1'], ['c1'], name='conv1', pads=[1, 1, 1, 1])]
    mid = 'c1'
    if with_relu:
        nodes.append(helper.make_node('Relu', ['c1'], ['r1'], name='relu'))
        mid = 'r1'
    nodes += [helper.make_node('Conv', [mid, 'w2'], ['c2'], name='conv2'),
              helper.make_node('Softmax', ['c2'], ['y'], name='softmax', axis=1)]
    graph = helper.make_graph(nodes, 'chain',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 5, 8, 8])],
                              [w1, b1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    return session.run(None, feeds)


def test_mixed_fp16_keeps_sensitive_ops_and_io_in_float32():
    fp32 = _conv_chain(with_relu=True)
    half = convert_to_mixed_fp16(fp32)
    onnx.checker.check_model(half, full_check=True)
    inits = {i.name: i for i in half.graph.initializer}
    assert {n: TensorProto.DataType.Name(i.data_type) for n, i in inits.items()} == {
        'w1_fp16': 'FLOAT16', 'b1_fp16': 'FLOAT16', 'w2_fp16': 'FLOAT16'}
    by_name = {n.name: n for n in half.graph.node}
    assert by_name['relu'].input[0] == 'c1' and by_name['softmax'].input[0] == 'c2'  # float32 tensors
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert fp32.graph.initializer[0].data_type == TensorProto.FLOAT  # the input model is untouched
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    ours, ref = _run(half, {'x': x})[0], _run(fp32, {'x': x})[0]
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=5e-3)
    assert not np.array_equal(ours, ref)  # it really ran with float16 weights


def test_mixed_fp16_passes_float16_between_adjacent_converted_nodes():
    half = convert_to_mixed_fp16(_conv_chain(with_relu=False))
    casts = [(n.input[0], n.output[0]) for n in half.graph.node if n.op_type == 'Cast']
    # x -> fp16 before conv1; c1 stays fp16 into conv2 (no fp32 round trip); c2 back to fp32 for Softmax
    assert casts == [('x', 'x_fp16'), ('c2_fp16', 'c2')]
    conv2 = next(n for n in half.graph.node if n.name == 'conv2')
    assert conv2.input[0] == 'c1_fp16'


def test_uint8_input_gives_the_float_results(tmp_path):
    path = tmp_path / 'fake.onnx'
    _fake_metric3d(path, _info())
    model = onnx.load(str(path))
    as_u8 = set_input_dtype(model, 'image', 'uint8')
    onnx.checker.check_model(as_u8, full_check=True)
    assert as_u8.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    image = np.random.default_rng(2).integers(0, 256, size=(2, 3, 28, 56)).astype(np.uint8)
    for ours, ref in zip(_run(as_u8, {'image': image}), _run(model, {'image': image.astype(np.float32)}),
                         strict=True):
        np.testing.assert_array_equal(ours, ref)
    with pytest.raises(ValueError, match="'float32' or 'uint8'"):
        set_input_dtype(model, 'image', 'int16')
    with pytest.raises(ValueError, match='no input named'):
        set_input_dtype(model, 'rgb', 'uint8')


def test_save_model_moves_large_weights_to_a_data_file(tmp_path, monkeypatch):
    from metric3d_ros.core.model import export
    from metric3d_ros.core.model.onnx_checks import check_graph

    offset = np.arange(3 * 28 * 28, dtype=np.float32).reshape(1, 3, 28, 28)  # 9.4 kB: stored externally
    graph = helper.make_graph(
        [helper.make_node('Add', ['x', 'offset'], ['y'])], 'add',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 28, 28])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 28, 28])],
        [numpy_helper.from_array(offset, 'offset')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    monkeypatch.setattr(export, '_INLINE_LIMIT_BYTES', 0)  # pretend the graph exceeds 2 GiB
    target = tmp_path / 'big.onnx'
    export.save_model(model, target)
    assert (tmp_path / 'big.onnx.data').stat().st_size == offset.nbytes
    assert target.stat().st_size < offset.nbytes
    check_graph(target)
    x = np.ones((1, 3, 28, 28), np.float32)
    y = ort.InferenceSession(str(target), providers=[CPU]).run(['y'], {'x': x})[0]
    np.testing.assert_array_equal(y, offset + 1.0)


# baked sizes --------------------------------------------------------------------------------------


class _BakedResize(torch.nn.Module):
    def forward(self, x):
        return F.interpolate(x, size=(56, 77), mode='bilinear', align_corners=False)


class _DynamicResize(torch.nn.Module):
    def forward(self, x):
        h, w = x.shape[-2], x.shape[-1]
        return F.interpolate(x, size=(h // 4, w // 4), mode='bilinear', align_corners=False)


def _export_toy(module, tmp_path, dynamic: bool) -> onnx.ModelProto:
    path = tmp_path / f'{type(module).__name__}_{dynamic}.onnx'
    axes = {'image': {0: 'batch', 2: 'height', 3: 'width'}} if dynamic else None
    torch.onnx.export(module, (torch.zeros(1, 3, 224, 308),), str(path), dynamo=False, opset_version=17,
                      input_names=['image'], output_names=['out'], dynamic_axes=axes)
    return onnx.load(str(path))


def test_trace_size_numbers_of_the_default_trace():
    ints, floats = trace_size_numbers(224, 308)
    assert {224, 308, 112, 154, 56, 77, 32, 44, 16, 22, 8, 11, 352} <= ints
    assert any(abs(f - 16.1 / 37) < 1e-9 for f in floats) and any(abs(f - 37 / 22.1) < 1e-9 for f in floats)


@pytest.mark.filterwarnings('ignore::DeprecationWarning', 'ignore::UserWarning')
def test_find_baked_sizes_flags_a_fixed_resize_and_static_dims(tmp_path):
    baked = find_baked_sizes(_export_toy(_BakedResize(), tmp_path, dynamic=True), 224, 308)
    described = [b.describe() for b in baked]
    assert any(56.0 in b.matches and 77.0 in b.matches for b in baked), described
    static = find_baked_sizes(_export_toy(_DynamicResize(), tmp_path, dynamic=False), 224, 308)
    assert any(b.where.startswith('input dim') for b in static)
    assert find_baked_sizes(_export_toy(_DynamicResize(), tmp_path, dynamic=True), 224, 308) == []


def test_agreement_numbers():
    ref = np.linspace(0.0, 10.0, 1000)
    exact = agreement(ref, ref)
    assert exact.meets_criterion and exact.fraction_ok == 1.0 and exact.max_abs == 0.0
    off = ref.copy()
    off[:2] += 0.5  # 0.2 % of the elements, 5 % of the range
    stats = agreement(off, ref)
    assert stats.fraction_ok == pytest.approx(0.998) and stats.max_over_range == pytest.approx(0.05)
    assert not stats.meets_criterion
    assert not agreement(np.full(3, np.nan), np.zeros(3)).meets_criterion


# providers ----------------------------------------------------------------------------------------


def test_plan_providers_on_cpu_drops_gpu_providers_with_reasons():
    plan = plan_providers(['tensorrt', 'cuda', 'cpu'], [TENSORRT, CUDA, CPU], 'cpu')
    assert plan.chosen == (CPU,)
    assert dict(plan.notes)[TENSORRT].startswith("skipped: the engine device is 'cpu'")
    plan = plan_providers([TENSORRT, CUDA], ['AzureExecutionProvider', CPU], 'cpu')
    assert plan.chosen == (CPU,)
    assert 'not in this onnxruntime build' in dict(plan.notes)[CUDA]
    assert 'fallback' in dict(plan.notes)[CPU]


def test_plan_providers_on_cuda():
    plan = plan_providers([TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU], 'cuda')
    assert plan.chosen == (TENSORRT, CUDA, CPU) and plan.notes == ()
    plan = plan_providers(['cuda', 'Foo'], [CUDA, CPU], 'cuda')
    assert plan.chosen == (CUDA, CPU) and 'not in this onnxruntime build' in dict(plan.notes)['Foo']
    with pytest.raises(ValueError, match='onnxruntime-gpu'):
        plan_providers([TENSORRT, CUDA, CPU], [CPU], 'cuda')


def test_provider_options():
    profile = TrtProfile.for_engine(8, (616, 1064))
    settings = SessionSettings(model_path='m.onnx', device_type='cuda', device_id=1, trt_cache_dir='/tmp/trt',
                               trt_fp16=True, trt_profile=profile, cuda_stream=1234,
                               cudnn_conv_algo_search='HEURISTIC')
    trt = provider_options(TENSORRT, settings)
    assert trt['trt_profile_min_shapes'] == 'image:1x3x616x1064'
    assert trt['trt_profile_opt_shapes'] == trt['trt_profile_max_shapes'] == 'image:8x3x616x1064'
    assert trt['trt_fp16_enable'] == '1' and trt['trt_engine_cache_enable'] == '1'
    assert trt['trt_engine_cache_path'] == '/tmp/trt' and trt['device_id'] == '1'
    assert trt['user_compute_stream'] == '1234' and trt['has_user_compute_stream'] == '1'
    cuda = provider_options(CUDA, settings)
    assert cuda == {'device_id': '1', 'cudnn_conv_algo_search': 'HEURISTIC', 'has_user_compute_stream': '1',
                    'user_compute_stream': '1234', 'use_tf32': '0'}
    # TF32 only on request (precision 'tf32'): ORT's default TF32 broke fp32 conformance on the H100.
    tf32 = SessionSettings(model_path='m.onnx', device_type='cuda', cuda_tf32=True)
    assert provider_options(CUDA, tf32)['use_tf32'] == '1'
    assert provider_options(CPU, settings) == {}
    with pytest.raises(ValueError, match='cudnn_conv_algo_search'):
        SessionSettings(model_path='m.onnx', cudnn_conv_algo_search='FAST')
    with pytest.raises(ValueError, match='graph_optimization'):
        SessionSettings(model_path='m.onnx', graph_optimization='max')
    with pytest.raises(ValueError, match='min <= opt <= max'):
        TrtProfile((2, 3, 28, 28), (1, 3, 28, 28), (4, 3, 28, 28))


# backend on a tiny graph --------------------------------------------------------------------------


def test_check_file_names_the_file(tmp_path):
    with pytest.raises(OnnxModelError, match='set onnx.model_path'):
        check_file('')
    with pytest.raises(OnnxModelError, match=r'missing\.onnx does not exist'):
        check_file(tmp_path / 'missing.onnx')
    (tmp_path / 'empty.onnx').write_bytes(b'')
    with pytest.raises(OnnxModelError, match=r'empty\.onnx is empty'):
        check_file(tmp_path / 'empty.onnx')


def test_backend_runs_and_logs_providers(tmp_path, caplog):
    path = tmp_path / 'fake.onnx'
    _fake_metric3d(path, _info())
    settings = SessionSettings(model_path=str(path), providers=(TENSORRT, CUDA, CPU))
    with caplog.at_level(logging.INFO, logger='metric3d_ros.core.engine.ort_session'):
        backend = OnnxRuntimeBackend(settings, variant='small', device='cpu', net_hw=(28, 56))
    text = caplog.text
    assert 'requested providers' in text and 'available in this build' in text
    assert f"uses providers ['{CPU}']" in text
    assert backend.providers == (CPU,) and backend.input_format == 'rgb255'
    batch = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 28, 56)).astype(np.float32))
    out = backend.run(batch, [None, None])
    torch.testing.assert_close(out.depth, batch[:, :1] * 0.1 + 1.0)
    assert out.normal.shape == (2, 4, 28, 56)
    bound = backend._run_bound(batch)  # the IOBinding path of CUDA devices, with CPU pointers
    for a, b in ((out.depth, bound.depth), (out.confidence, bound.confidence), (out.normal, bound.normal)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match='does not match 3 frame'):
        backend.run(batch, [None] * 3)
    backend.warmup([1, 2])
    backend.close()
    with pytest.raises(RuntimeError, match='closed'):
        backend.run(batch, [None, None])


def test_backend_rounds_for_uint8_files(tmp_path):
    path = tmp_path / 'fake_u8.onnx'
    _fake_metric3d(path, _info(input_dtype='uint8'), input_type=TensorProto.UINT8)
    backend = OnnxRuntimeBackend(_settings(path), variant='small', device='cpu', net_hw=(28, 28))
    batch = torch.full((1, 3, 28, 28), 99.6)
    assert torch.equal(backend.run(batch, [None]).depth, torch.full((1, 1, 28, 28), 11.0))


def test_backend_refuses_mismatched_files(tmp_path):
    path = tmp_path / 'large.onnx'
    _fake_metric3d(path, _info(variant='large'))
    with pytest.raises(OnnxModelError, match=r"large\.onnx holds Metric3D 'large' but variant 'small'"):
        OnnxRuntimeBackend(_settings(path), variant='small', device='cpu', net_hw=(28, 28))
    bare = tmp_path / 'bare.onnx'
    _fake_metric3d(bare, None)
    with pytest.raises(OnnxModelError, match=r'bare\.onnx was not written by metric3d_export'):
        OnnxRuntimeBackend(_settings(bare), variant='small', device='cpu', net_hw=(28, 28))
    lying = tmp_path / 'lying.onnx'
    _fake_metric3d(lying, _info(input_dtype='uint8'))  # float32 graph input, uint8 in the metadata
    with pytest.raises(OnnxModelError, match='graph input is tensor\\(float\\)'):
        OnnxRuntimeBackend(_settings(lying), variant='small', device='cpu', net_hw=(28, 28))
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'\x08\x07not a protobuf at all' * 10)
    with pytest.raises(OnnxModelError, match=r'garbage\.onnx.*truncated or not an ONNX graph'):
        OnnxRuntimeBackend(_settings(garbage), variant='small', device='cpu', net_hw=(28, 28))


def test_network_output_hw():
    assert network_output_hw(616, 1064) == (616, 1064)
    assert network_output_hw(154, 280) == (152, 280)  # upstream's size for sides that are not multiples of 28


# export command arguments -------------------------------------------------------------------------


def test_export_command_rejects_bad_arguments(tmp_path, capsys):
    out = str(tmp_path / 'x.onnx')
    with pytest.raises(SystemExit) as exc:  # a usage error, checked by the variant table
        export_tool.main(['--variant', 'huge', '--weights', 'synthetic', '--output', out])
    assert exc.value.code == 2
    assert "unknown Metric3D variant 'huge'" in capsys.readouterr().err
    assert export_tool.main(['--variant', 'small', '--weights', 'synthetic', '--output', out,
                             '--check-size', '300x400']) == 2
    assert 'not a multiple of 28' in capsys.readouterr().err
    missing = str(tmp_path / 'no.pth')
    assert export_tool.main(['--variant', 'small', '--weights', missing, '--output', out]) == 2
    assert 'no.pth does not exist' in capsys.readouterr().err
    assert export_tool.main(['--variant', 'small', '--weights', 'synthetic', '--output', out,
                             '--opset', '11']) == 2
    assert 'opset must be an integer >= 17' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()
