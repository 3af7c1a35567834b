"""GPU check of the fused preprocessing kernel (core/engine/fused_preprocess.py) against the torch path.

For several frame sizes (down- and upscaling, odd sizes) and batch sizes: the torch path
(``Preprocessor.fill`` + ``normalize_``) and the fused kernel (``fill_normalized``) must give bit-identical
batches; then both are timed for eight 720p frames and for the 4-camera mix. Usage: PYTHONPATH=. python3
scripts/gpu/fused_preprocess_check.py (prints one JSON line, also written to $OUT/fused_preprocess.json).
"""
import numpy as np
import torch
from gpu_timing import cuda_ms, report

from metric3d_ros.core.engine import fused_preprocess
from metric3d_ros.core.engine.preprocess import Preprocessor
from metric3d_ros.core.geometry.letterbox import compute_letterbox

DEV = torch.device('cuda')
NET = (616, 1064)
rng = np.random.default_rng(0)


def groups_of(sizes):
    groups, start = [], 0
    for _hw, n in sizes:
        groups.append((start, start + n))
        start += n
    return groups


def frames_for(sizes):
    images = []
    for (h, w), n in sizes:
        images += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    return images


def both(pre, sizes):
    images = frames_for(sizes)
    letterboxes = [compute_letterbox(im.shape[0], im.shape[1], *NET) for im in images]
    groups = groups_of(sizes)
    b = len(images)
    staged = pre.stage(images, letterboxes, groups)
    ref = torch.empty((b, 3, *NET), device=DEV)
    pre.fill(ref, staged, letterboxes, groups)
    pre.normalize_(ref)
    fused = torch.full((b, 3, *NET), float('nan'), device=DEV)
    done = pre.fill_normalized(fused, staged, letterboxes, groups)
    torch.cuda.synchronize()
    return done, ref, fused, (images, letterboxes, groups)


def main():
    pre = Preprocessor(NET, DEV, 'device_exact')
    out = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__,
           'available': fused_preprocess.available('cuda'), 'cases': []}
    cases = [[((720, 1280), 8)], [((720, 1280), 1)], [((1080, 1920), 1), ((720, 1280), 2), ((480, 640), 1)],
             [((123, 457), 3)], [((300, 200), 2)], [((616, 1064), 1)], [((1, 1), 1), ((2000, 33), 1)]]
    all_equal = True
    for sizes in cases:
        done, ref, fused, _ = both(pre, sizes)
        equal = bool(done and torch.equal(ref, fused))
        all_equal &= equal
        out['cases'].append({'sizes': sizes, 'fused_ran': done, 'bit_identical': equal,
                             'max_abs_diff': float((ref - fused).abs().max()) if done else None})
    out['all_bit_identical'] = all_equal
    for name, sizes in (('vit_s_8x720p', [((720, 1280), 8)]), ('mixed_4cam_x2', [((1080, 1920), 2),
                                                                                 ((720, 1280), 4),
                                                                                 ((480, 640), 2)])):
        _, ref, fused, (images, letterboxes, groups) = both(pre, sizes)
        staged = pre.stage(images, letterboxes, groups)
        torch.cuda.synchronize()

        def torch_path(ref=ref, staged=staged, letterboxes=letterboxes, groups=groups):
            pre.fill(ref, staged, letterboxes, groups)
            pre.normalize_(ref)

        def fused_path(fused=fused, staged=staged, letterboxes=letterboxes, groups=groups):
            pre.fill_normalized(fused, staged, letterboxes, groups)

        out[name] = {'torch_ms': cuda_ms(torch_path), 'fused_ms': cuda_ms(fused_path)}
    report('fused_preprocess', out)


if __name__ == '__main__':
    main()
