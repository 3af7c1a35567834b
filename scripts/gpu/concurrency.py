"""Network throughput with several batches in flight (CHANGELOG.md, 2026-11-22, third session).

One compiled bf16-cast ViT-S network (TorchBackend, freezing), N CUDA graphs of the same batch size, each
captured on its own stream with its own memory pool and input; replays round-robin over the N streams.
Reports whether the concurrent outputs equal the sequential ones bit for bit (the test of that is
test/core/engine/test_engine_pipeline.py::test_cuda_lanes_with_graphs_give_the_sequential_results,
marker cuda).
Usage: PYTHONPATH=. python3 scripts/gpu/concurrency.py [variant] [batch] [max_streams] [big_batch]"""
import sys
import time

import torch
from gpu_timing import report

from metric3d_ros.core.engine.torch_backend import TorchBackend
from metric3d_ros.core.model import load_metric3d
from metric3d_ros.core.model.synthetic import synthetic_state_dict

variant = sys.argv[1] if len(sys.argv) > 1 else 'small'
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
max_streams = int(sys.argv[3]) if len(sys.argv) > 3 else 3
big = int(sys.argv[4]) if len(sys.argv) > 4 else 16
T0 = time.time()
torch.backends.cuda.matmul.allow_tf32 = True
net = load_metric3d(synthetic_state_dict(variant), variant=variant, device='cuda', fused_attention=True)
be = TorchBackend(net, 'cuda', (616, 1064), precision='bf16', max_batch_size=max(batch, big),
                  cuda_graphs=True, channels_last=True, compile_mode='default', autocast_scope='cast',
                  batch_bucket_sizes=(batch, big))
be.warmup([batch])
print(f'[{time.time() - T0:.0f}s] warm', flush=True)
gen = torch.Generator(device='cuda').manual_seed(0)
graphs = []
with torch.inference_mode():
    for _ in range(max_streams):
        stream = torch.cuda.Stream()
        x = torch.randn((batch, 3, 616, 1064), device='cuda', generator=gen)
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            be._fn(x)  # warm this stream's cuBLAS workspace
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=torch.cuda.graph_pool_handle(), stream=stream):
            outs = be._fn(x)
        graphs.append((g, stream, x, outs))
    torch.cuda.synchronize()
    print(f'[{time.time() - T0:.0f}s] captured {max_streams}', flush=True)

    def reference(i):
        g, s, x, outs = graphs[i]
        g.replay()
        torch.cuda.synchronize()
        return [o.clone() for o in outs]

    refs = [reference(i) for i in range(max_streams)]

    def run(n_streams, iters):
        main = torch.cuda.current_stream()
        for _, s, _, _ in graphs[:n_streams]:
            s.wait_stream(main)
        start = time.perf_counter()
        for k in range(iters):
            g, s, _, _ = graphs[k % n_streams]
            with torch.cuda.stream(s):
                g.replay()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3 / iters

    result = {'variant': variant, 'batch': batch, 'torch': torch.__version__,
              'gpu': torch.cuda.get_device_name()}
    for n in range(1, max_streams + 1):
        run(n, 6 * n)
        times = sorted(run(n, 12 * n) for _ in range(5))
        ms = times[2]
        same = all(torch.equal(a, b) for i in range(n) for a, b in zip(refs[i], graphs[i][3], strict=True))
        result[f'streams{n}'] = {'ms_per_batch': round(ms, 3), 'frames_per_s': round(batch * 1e3 / ms, 1),
                                 'outputs_equal_sequential': same}
        print(f'[{time.time() - T0:.0f}s] {n} stream(s): {ms:.3f} ms per batch, {batch * 1e3 / ms:.1f} fps, '
              f'equal {same}', flush=True)
    be.warmup([big])
    g, outs = be._graphs[(0, big)]
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        g.replay()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - start) * 1e3 / 20
    result[f'batch{big}'] = {'ms_per_batch': round(ms, 3), 'frames_per_s': round(big * 1e3 / ms, 1)}
    print(f'[{time.time() - T0:.0f}s] batch {big}: {ms:.3f} ms, {big * 1e3 / ms:.1f} fps', flush=True)
    result['peak_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
report(f'concurrency_{variant}_b{batch}', result)
