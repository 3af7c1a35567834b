"""Shared by the GPU timing scripts beside it: CUDA-event timing and the one-JSON-line report."""
import json
import os

import torch


def cuda_ms(fn, iters: int = 50, warmup: int = 5, repeats: int = 1) -> float:
    """Mean time per call of ``fn`` over ``iters`` back-to-back calls (CUDA events), the median of
    ``repeats`` such loops, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / iters)
    times.sort()
    return times[len(times) // 2]


def report(name: str, result: dict) -> None:
    """Print ``result`` as one JSON line and write it to $OUT/<name>.json."""
    line = json.dumps(result)
    print(line)
    out_dir = os.environ.get('OUT', '/tmp/out')
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f'{name}.json'), 'w') as f:
        f.write(line + '\n')
