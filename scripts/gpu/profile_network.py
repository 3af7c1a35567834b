"""Kernel profile of the compiled bf16-cast network (TorchBackend with CUDA graphs), Inductor option A/B,
and a registered-host-memory transfer check (docs/BENCHMARKS.md, 2026-11-22).

Usage: PYTHONPATH=. python3 scripts/gpu/profile_network.py CONFIG [CONFIG ...]
CONFIG: 'registered', or variant:batch:flags with flags '+'-separated among freezing, mm1x1, cudnnbench,
unfused (Metric3DNet.set_fused(False)), nogelu (fused, but fc1 and GELU apart), mmauto (max_autotune_gemm),
prof (kernel profile with other flags), ops (the aten ops behind the copy kernels, from a profile of one
compiled call outside the graph, with input shapes), none.
Writes $OUT/prof2.json and $OUT/k_*.txt (kernel tables)."""
import json
import os
import re
import sys
import time
import traceback

import numpy as np
import torch

from metric3d_ros.core.engine.torch_backend import TorchBackend
from metric3d_ros.core.model import load_metric3d
from metric3d_ros.core.model.synthetic import synthetic_state_dict

OUT = os.environ.get('OUT', '/tmp/out')
os.makedirs(OUT, exist_ok=True)
RES = {}
T0 = time.time()


def log(*a):
    print(f'[{time.time() - T0:6.1f}s]', *a, flush=True)


def save():
    with open(f'{OUT}/prof2.json', 'w') as f:
        json.dump(RES, f, indent=1)


CATS = [('attention', r'fmha|flash|attn|sdpa|cudnn_.*mha'),
        ('conv', r'conv|implicit|fprop|xmma_fprop|dgrad|wgrad|winograd|nhwc'),
        ('gemm', r'gemm|nvjet|cutlass|sm90_xmma|cublas|matmul|ampere_bf16|sm80_xmma'),
        ('triton', r'triton'),
        ('copy', r'copy|memcpy|memset|elementwise|vectorized|unrolled')]


def categorize(name):
    low = name.lower()
    for cat, rx in CATS:
        if re.search(rx, low):
            return cat
    return 'other'


def dev_time(e):
    for attr in ('self_device_time_total', 'self_cuda_time_total'):
        v = getattr(e, attr, None)
        if v is not None:
            return v
    return 0.0


def replay_ms(backend, bucket, iters=30):
    graph, _ = backend._graphs[(0, bucket)]
    for _ in range(3):
        graph.replay()
    times = []
    for _ in range(6):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters // 6):
            graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / (iters // 6))
    times.sort()
    return times[len(times) // 2]


def profile(backend, bucket, name, n=3):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof_ctx
    graph, _ = backend._graphs[(0, bucket)]
    with prof_ctx(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            graph.replay()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if str(getattr(e, 'device_type', '')).endswith('CUDA')]
    kernels.sort(key=lambda e: -dev_time(e))
    total = sum(dev_time(e) for e in kernels) / 1000 / n
    cats = {}
    for e in kernels:
        c = categorize(e.key)
        cats[c] = cats.get(c, 0.0) + dev_time(e) / 1000 / n
    launches = sum(e.count for e in kernels) / n
    ranked = sorted(cats.items(), key=lambda kv: -kv[1])
    lines = [f'== {name}: kernels {total:.2f} ms per forward, {launches:.0f} launches',
             'categories: ' + ', '.join(f'{k} {v:.2f}' for k, v in ranked)]
    for e in kernels[:45]:
        per_call = dev_time(e) / 1000 / n
        lines.append(f'{per_call:8.3f} ms {e.count / n:6.1f}x [{categorize(e.key)}] {e.key[:160]}')
    text = '\n'.join(lines)
    with open(f'{OUT}/k_{name}.txt', 'w') as f:
        f.write(text)
    print(text, flush=True)
    return total, cats


def op_profile(backend, bucket, name):
    """The CPU-side ops of one compiled call (no graph) with input shapes, ranked by their device time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof_ctx
    static = backend._static()[:bucket]
    with torch.inference_mode():
        backend._fn(static)
        torch.cuda.synchronize()
        with prof_ctx(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            backend._fn(static)
            torch.cuda.synchronize()
    rows = prof.key_averages(group_by_input_shape=True).table(sort_by='self_cuda_time_total', row_limit=400,
                                                               max_name_column_width=60,
                                                               max_shapes_column_width=160)
    with open(f'{OUT}/ops_{name}.txt', 'w') as f:
        f.write(rows)
    pattern = re.compile(r'aten::(copy_|contiguous|clone|_to_copy|to) ')
    copies = [line for line in rows.splitlines() if pattern.search(line)]
    print('\n'.join(copies[:30]), flush=True)


def run_config(spec):
    variant, batch, flags = spec.split(':')
    batch = int(batch)
    flags = set(flags.split('+')) - {'none', ''}
    name = f'{variant}_b{batch}_{"-".join(sorted(flags)) or "base"}'
    import torch._dynamo
    import torch._inductor.config as icfg
    torch._dynamo.reset()
    icfg.freezing = 'freezing' in flags
    icfg.conv_1x1_as_mm = 'mm1x1' in flags
    torch.backends.cudnn.benchmark = 'cudnnbench' in flags
    if 'coord' in flags:
        icfg.coordinate_descent_tuning = True
    icfg.max_autotune_gemm = 'mmauto' in flags  # Triton GEMM templates (epilogue fusion), convs stay cuDNN
    if 'mmauto' in flags:
        icfg.max_autotune_gemm_backends = 'ATEN,TRITON'

    t = time.time()
    net = load_metric3d(synthetic_state_dict(variant), variant=variant, device='cuda', fused_attention=True)
    be = TorchBackend(net, 'cuda', (616, 1064), precision='bf16', max_batch_size=batch, cuda_graphs=True,
                      channels_last=True, compile_mode='default', autocast_scope='cast',
                      batch_bucket_sizes=(batch,))
    if 'unfused' in flags:
        be.module.net.set_fused(False)
    if 'nogelu' in flags:
        be.module.net.depth_model.encoder.set_gelu_epilogue(False)
    be._static().normal_()
    be.warmup([batch])
    ct = time.time() - t
    if not be._graphs:
        raise RuntimeError(f'no graph: {be.graph_error}')
    ms = replay_ms(be, batch)
    log(name, f'warm-up {ct:.0f} s, {ms:.3f} ms per batch, {batch * 1000 / ms:.1f} frames/s')
    RES[name] = {'ms': ms, 'fps': batch * 1000 / ms, 'warmup_s': ct}
    save()
    if 'prof' in flags or not flags - {'prof'}:
        total, cats = profile(be, batch, name)
        RES[name].update(kernel_ms=total, categories=cats)
        save()
    if 'ops' in flags:
        op_profile(be, batch, name)
    be.close()
    del be, net
    torch.cuda.empty_cache()


def registered_check():
    """Upload from / download into cudaHostRegister'ed shared memory vs pinned vs pageable."""
    from multiprocessing import shared_memory
    n = 4 * 720 * 1280 * 3
    shm = shared_memory.SharedMemory(create=True, size=n + 64 * 1024 * 1024)
    try:
        arr = np.ndarray((n,), np.uint8, shm.buf)
        arr[:] = 7
        t_cpu = torch.from_numpy(arr)
        cudart = torch.cuda.cudart()
        ptr = t_cpu.data_ptr()
        page = 4096
        base = ptr - ptr % page
        size = (ptr + shm.size - base + page - 1) // page * page
        r = {'pinned_before': t_cpu.is_pinned()}
        err = cudart.cudaHostRegister(base, min(size, shm.size), 0)
        r['register_rc'] = int(err) if not isinstance(err, tuple) else [int(x) for x in err]
        r['pinned_after'] = t_cpu.is_pinned()
        dev = torch.empty(n, dtype=torch.uint8, device='cuda')
        pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        pageable = torch.empty(n, dtype=torch.uint8)

        def timed(fn, k=20):
            fn()
            torch.cuda.synchronize()
            ts = []
            for _ in range(k):
                s = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                ts.append((time.perf_counter() - s) * 1e3)
            ts.sort()
            return ts[len(ts) // 2]
        r['h2d_registered_ms'] = timed(lambda: dev.copy_(t_cpu, non_blocking=True))
        r['h2d_pinned_ms'] = timed(lambda: dev.copy_(pinned, non_blocking=True))
        r['h2d_pageable_ms'] = timed(lambda: dev.copy_(pageable, non_blocking=True))
        r['d2h_registered_ms'] = timed(lambda: t_cpu.copy_(dev, non_blocking=True))
        r['d2h_pinned_ms'] = timed(lambda: pinned.copy_(dev, non_blocking=True))
        r['d2h_pageable_ms'] = timed(lambda: pageable.copy_(dev))
        r['np_copy_11MB_ms'] = timed(lambda: np.copyto(pageable.numpy(), arr))
        r['equal'] = bool(torch.equal(dev.cpu(), t_cpu))
        r['unregister_rc'] = int(cudart.cudaHostUnregister(base))
        log('registered', r)
        RES['registered'] = r
        save()
    finally:
        shm.close()
        shm.unlink()


log(torch.__version__, torch.cuda.get_device_name())
torch.backends.cuda.matmul.allow_tf32 = True
for spec in sys.argv[1:]:
    try:
        if spec == 'registered':
            registered_check()
        else:
            run_config(spec)
    except Exception:  # noqa: BLE001
        tb = traceback.format_exc()
        log('FAILED', spec, tb[-3000:])
        RES[spec + '_error'] = tb[-3000:]
        save()
log('done')
print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'categories'} if isinstance(v, dict) else v
                  for k, v in RES.items()}, indent=1))
