"""GPU check of the Triton convex upsampling (core/model/convex_cuda.py) against the torch function.

Random state and bf16 channels_last logits as the fused decoder produces them: relative difference and max
absolute difference to ``gru.convex_upsample`` (float32), then the time of the compiled torch function and of
the kernel (alone and inside a compiled function), batch 8 and 1 at 616x1064 output. Usage: PYTHONPATH=.
python3 scripts/gpu/convex_check.py (one JSON line, also $OUT/convex_check.json).
"""
import torch
from gpu_timing import cuda_ms, report

from metric3d_ros.core.model import convex_cuda
from metric3d_ros.core.model.gru import convex_upsample

DEV = torch.device('cuda')


def main():
    out = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__,
           'available': convex_cuda.available('cuda'), 'cases': {}}
    gen = torch.Generator(device=DEV).manual_seed(0)
    for n, h, w in ((2, 7, 10), (1, 1, 1), (8, 154, 266), (1, 154, 266)):
        flow = torch.randn(n, 6, h, w, device=DEV, generator=gen)
        mask = (0.25 * torch.randn(n, 144, h, w, device=DEV, generator=gen) * 4).to(torch.bfloat16)
        mask = mask.contiguous(memory_format=torch.channels_last)
        ref = convex_upsample(flow, mask, 4)
        got = convex_cuda.convex_upsample_op(flow, mask, 4)
        rel = float((got.double() - ref.double()).norm() / ref.double().norm())
        case = {'rel': rel, 'max_abs': float((got - ref).abs().max()), 'shape_ok': got.shape == ref.shape}
        if n * h * w > 1000:
            compiled_torch = torch.compile(lambda f, m: convex_upsample(f, m, 4), dynamic=False)
            compiled_op = torch.compile(lambda f, m: convex_cuda.convex_upsample_op(f, m, 4) * 1.0,
                                        dynamic=False)
            args = (flow, mask)
            case['torch_compiled_ms'] = cuda_ms(lambda fn=compiled_torch, a=args: fn(*a))
            case['kernel_ms'] = cuda_ms(lambda a=args: convex_cuda.convex_upsample_op(*a, 4))
            case['kernel_in_compile_ms'] = cuda_ms(lambda fn=compiled_op, a=args: fn(*a))
            case['compiled_equal_kernel'] = bool(torch.equal(compiled_op(flow, mask), got))
        out['cases'][f'{n}x{h}x{w}'] = case
    report('convex_check', out)


if __name__ == '__main__':
    main()
