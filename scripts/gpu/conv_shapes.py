"""Every convolution of the bf16-cast network, timed alone, and the decoder rewrites measured against it.

Records each F.conv2d / F.conv_transpose2d call of one eager forward of the network (input/weight shapes,
stride, padding, groups, calls per forward), then times each distinct call with cuDNN (bf16, channels_last,
median of CUDA-event-timed loops) and prints time per forward and TFLOP/s, worst first. Then times
alternatives for the shapes the decoder's fast path rewrites (CHANGELOG.md, 2026-11-22, second session).

Usage: PYTHONPATH=. python3 scripts/gpu/conv_shapes.py [small|large] [batch]   (writes $OUT/conv_shapes.json)
"""
import json
import os
import sys
from collections import Counter

import torch
import torch.nn.functional as F
from gpu_timing import cuda_ms

from metric3d_ros.core.model import load_metric3d
from metric3d_ros.core.model.synthetic import synthetic_state_dict

VARIANT = sys.argv[1] if len(sys.argv) > 1 else 'small'
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 8
OUT = os.environ.get('OUT', '/tmp/out')
os.makedirs(OUT, exist_ok=True)
DEV = torch.device('cuda')
DT = torch.bfloat16
CL = torch.channels_last


def timed(fn):
    return cuda_ms(fn, iters=40, warmup=5, repeats=5)


def rand(*shape):
    return torch.randn(*shape, device=DEV, dtype=DT).contiguous(memory_format=CL) if len(shape) == 4 else \
        torch.randn(*shape, device=DEV, dtype=DT)


def conv_ms(n, cin, h, w, cout, k, groups=1, stride=1, transpose=False):
    x = rand(n, cin, h, w)
    if transpose:
        wt = rand(cin, cout // groups, k, k)
        return timed(lambda: F.conv_transpose2d(x, wt, None, stride=stride))
    wt = rand(cout, cin // groups, k, k)
    return timed(lambda: F.conv2d(x, wt, None, stride=stride, padding=k // 2, groups=groups))


def record_network():
    net = load_metric3d(synthetic_state_dict(VARIANT), variant=VARIANT, device=DEV, fused_attention=True)
    net = net.to(DT).to(memory_format=CL).eval()
    net.set_fused(True)
    calls = Counter()
    orig_conv, orig_tconv = F.conv2d, F.conv_transpose2d

    def rec_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        calls[('conv', tuple(x.shape), tuple(w.shape), stride, padding, groups)] += 1
        return orig_conv(x, w, b, stride, padding, dilation, groups)

    def rec_tconv(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        calls[('tconv', tuple(x.shape), tuple(w.shape), stride, padding, groups)] += 1
        return orig_tconv(x, w, b, stride, padding, output_padding, groups, dilation)

    F.conv2d, F.conv_transpose2d = rec_conv, rec_tconv
    try:
        with torch.inference_mode():
            x = torch.randn(BATCH, 3, 616, 1064, device=DEV, dtype=DT).contiguous(memory_format=CL)
            net(x)
    finally:
        F.conv2d, F.conv_transpose2d = orig_conv, orig_tconv
    return calls


def main():
    torch.backends.cudnn.benchmark = False
    results = {'variant': VARIANT, 'batch': BATCH, 'device': torch.cuda.get_device_name(),
               'torch': torch.__version__, 'cudnn': torch.backends.cudnn.version(), 'calls': [], 'alts': {}}
    calls = record_network()
    rows = []
    with torch.inference_mode():
        for (kind, xs, ws, stride, padding, groups), count in calls.items():
            x = rand(*xs)
            wt = rand(*ws)
            if kind == 'conv':
                def call(x=x, wt=wt, st=stride, pd=padding, g=groups):
                    return orig_conv2d(x, wt, None, st, pd, 1, g)
            else:
                def call(x=x, wt=wt, st=stride):
                    return F.conv_transpose2d(x, wt, None, st)
            ms = timed(call)
            # each output element sums over (input channels per group) x kernel taps; for the transposed
            # conv the weight's first dimension holds the inputs: the same count per input element
            taps = ws[1] * ws[2] * ws[3]
            flops = 2 * taps * (call().numel() if kind == 'conv' else x.numel() // xs[1] * ws[0])
            rows.append({'kind': kind, 'x': xs, 'w': ws, 'stride': stride, 'padding': padding,
                         'groups': groups, 'count': count, 'ms_call': ms, 'ms_total': ms * count,
                         'tflops': flops / ms / 1e9})
    rows.sort(key=lambda r: -r['ms_total'])
    total = sum(r['ms_total'] for r in rows)
    print(f'{VARIANT} b{BATCH}: {sum(calls.values())} conv calls, {total:.2f} ms of cuDNN time (alone)')
    for r in rows:
        print(f"{r['ms_total']:7.3f} ms {r['count']:3d}x {r['ms_call']:.4f} {r['tflops']:6.0f} TF/s "
              f"{r['kind']} x{r['x']} w{r['w']} s{r['stride']} p{r['padding']} g{r['groups']}")
    results['calls'] = rows
    results['total_ms'] = total

    # alternatives (ViT-S shapes unless the variant's hidden width differs)
    hid = 48 if VARIANT == 'small' else 128
    c4 = 96 if VARIANT == 'small' else 256
    n = BATCH
    p4, p7, p14 = (154, 266), (88, 152), (44, 76)
    alts = {}
    with torch.inference_mode():
        alts['gru08_zrq_in_102'] = conv_ms(n, 2 * hid + 6, *p4, 3 * hid, 3)
        alts['gru08_zrq_in_pad8'] = conv_ms(n, 2 * hid + 8, *p4, 3 * hid, 3)
        alts['flow_conv1_separate_2x'] = 2 * conv_ms(n, hid, *p4, hid, 3)
        alts['flow_conv1_merged'] = conv_ms(n, hid, *p4, 2 * hid, 3)
        alts['flow_conv2_separate'] = conv_ms(n, hid, *p4, 2, 3) + conv_ms(n, hid, *p4, 4, 3)
        alts['flow_conv2_blockdiag_out8'] = conv_ms(n, 2 * hid, *p4, 8, 3)
        alts['flow_conv2_grouped_out8'] = conv_ms(n, 2 * hid, *p4, 8, 3, groups=2)
        alts['ctx4_conv1_separate_2x'] = 2 * conv_ms(n, c4, *p4, hid, 3)
        alts['ctx4_conv1_merged'] = conv_ms(n, c4, *p4, 2 * hid, 3)
        alts['ctx4_conv2_separate_2x'] = 2 * conv_ms(n, hid, *p4, hid, 3)
        alts['ctx4_conv2_blockdiag'] = conv_ms(n, 2 * hid, *p4, 2 * hid, 3)
        alts['ctx4_conv2_grouped'] = conv_ms(n, 2 * hid, *p4, 2 * hid, 3, groups=2)
        alts['ctx7_conv2_separate_2x'] = 2 * conv_ms(n, hid, *p7, hid, 3)
        alts['ctx7_conv2_blockdiag'] = conv_ms(n, 2 * hid, *p7, 2 * hid, 3)
        alts['heads_separate'] = conv_ms(n, c4, *p4, 256, 3) + conv_ms(n, c4, *p4, 128, 3)
        alts['heads_merged'] = conv_ms(n, c4, *p4, 384, 3)
        alts['normal_out3'] = conv_ms(n, 128, *p4, 3, 1)
        alts['normal_out8'] = conv_ms(n, 128, *p4, 8, 1)
        c7 = 2 * c4
        x7 = rand(n, c7, *p7)
        w1 = rand(c4 + 2, c7, 1, 1)
        w1p = rand(c4 + 8, c7, 1, 1)
        size4 = (p7[0] * 7 // 4, p7[1] * 7 // 4)
        alts['upconv1_upsample_then_1x1'] = timed(lambda: F.conv2d(
            F.interpolate(x7, size=size4, mode='bilinear', align_corners=True), w1))
        alts['upconv1_1x1_then_upsample'] = timed(lambda: F.interpolate(
            F.conv2d(x7, w1), size=size4, mode='bilinear', align_corners=True))
        alts['upconv1_1x1pad8_then_upsample'] = timed(lambda: F.interpolate(
            F.conv2d(x7, w1p), size=size4, mode='bilinear', align_corners=True))
        dim = 384 if VARIANT == 'small' else 1024
        alts['read1_tconv'] = conv_ms(n, dim, *p14, c7, 2, stride=2, transpose=True)
        alts['read1_1x1_4x_then_shuffle'] = timed(lambda: F.pixel_shuffle(
            F.conv2d(xs14, w14), 2)) if (xs14 := rand(n, dim, *p14)) is not None and (
            w14 := rand(4 * c7, dim, 1, 1)) is not None else 0.0
        alts['qh7_48'] = conv_ms(n, hid, *p7, hid, 3)
        alts['qh7_out64'] = conv_ms(n, hid, *p7, 64, 3)
        alts['qh7_in64_out64'] = conv_ms(n, 64, *p7, 64, 3)
        alts['qh4_48'] = conv_ms(n, hid, *p4, hid, 3)
        alts['qh4_out64'] = conv_ms(n, hid, *p4, 64, 3)
        alts['qh14_48'] = conv_ms(n, hid, *p14, hid, 3)
        alts['qh14_out64'] = conv_ms(n, hid, *p14, 64, 3)
        for out in (16, 32, 64):
            alts[f'flow_conv2_blockdiag_out{out}'] = conv_ms(n, 2 * hid, *p4, out, 3)
        alts['mask1x1_48_144'] = conv_ms(n, hid, *p4, 144, 1)
        alts['flow1_merged_96'] = conv_ms(n, hid, *p4, 2 * hid, 3)
        torch.backends.cudnn.benchmark = True
        alts['bench_qh7_48'] = conv_ms(n, hid, *p7, hid, 3)
        alts['bench_qh4_48'] = conv_ms(n, hid, *p4, hid, 3)
        alts['bench_qh14_48'] = conv_ms(n, hid, *p14, hid, 3)
        alts['bench_gru08_zrq_pad8'] = conv_ms(n, 2 * hid + 8, *p4, 3 * hid, 3)
        alts['bench_gru16_zrq'] = conv_ms(n, 3 * hid, *p7, 3 * hid, 3)
        torch.backends.cudnn.benchmark = False
    for k, v in alts.items():
        print(f'{v:8.4f} ms  {k}')
    results['alts'] = alts
    with open(f'{OUT}/conv_shapes_{VARIANT}_b{BATCH}.json', 'w') as f:
        json.dump(results, f, indent=1)


orig_conv2d = F.conv2d

if __name__ == '__main__':
    main()
