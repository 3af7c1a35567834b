"""Bilinear (align_corners=True) resizes of the fused ViT-S decoder's GRU states on the H100: Inductor's
decomposition (torch.compile) vs PyTorch's own CUDA kernel (eager aten) vs the Triton kernel of
core/model/resize_cuda.py, bf16 channels_last, and how far apart their outputs are (docs/BENCHMARKS.md,
2026-11-22, third session).
Usage: PYTHONPATH=. python3 scripts/gpu/resize_check.py (one JSON line, also $OUT/resize_check.json)."""
import torch
import torch.nn.functional as F
from gpu_timing import cuda_ms, report

from metric3d_ros.core.model import resize_cuda

CASES = [((8, 48, 88, 152), (154, 266)), ((8, 48, 44, 76), (88, 152)), ((8, 48, 44, 76), (154, 266)),
         ((1, 48, 88, 152), (154, 266))]


def resize(x, size):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=True)


compiled = torch.compile(resize, dynamic=False)
result = {'gpu': torch.cuda.get_device_name(), 'torch': torch.__version__}
for shape, size in CASES:
    x = torch.randn(shape, device='cuda').to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    eager_out = resize(x, size)
    compiled_out = compiled(x, size)
    kernel_out = resize_cuda.resize_op(x, *size)
    key = f'{list(shape)}->{list(size)}'
    result[key] = {
        'eager_ms': round(cuda_ms(lambda x=x, size=size: resize(x, size), repeats=5), 4),
        'compiled_ms': round(cuda_ms(lambda x=x, size=size: compiled(x, size), repeats=5), 4),
        'kernel_ms': round(cuda_ms(lambda x=x, size=size: resize_cuda.resize_op(x, *size), repeats=5), 4),
        'max_abs_diff': float((eager_out.float() - compiled_out.float()).abs().max()),
        'kernel_max_abs_diff': float((eager_out.float() - kernel_out.float()).abs().max()),
        'kernel_fp32_max_abs_diff': float((resize(x.float(), size) - resize_cuda.resize_op(x.float(), *size))
                                          .abs().max()),
        'eager_channels_last': eager_out.is_contiguous(memory_format=torch.channels_last),
        'compiled_channels_last': compiled_out.is_contiguous(memory_format=torch.channels_last),
    }
report('resize_check', result)
