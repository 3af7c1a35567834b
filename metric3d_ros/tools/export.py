"""metric3d_export: write a Metric3D network to one ONNX file with dynamic batch, height and width.

The file takes the raw image, ``image`` (B, 3, H, W), RGB, values 0..255, float32 (default) or uint8
(``--input-dtype uint8``), with the normalization folded in; H and W should be multiples of 28. It returns
``depth`` (canonical camera, focal 1000 px, metres), ``confidence`` and ``normal`` (unit xyz + kappa), and
carries its variant, precision, input contract, opset, package version and the checkpoint's sha256 in
``metadata_props``. Every export is checked (onnx.checker, shape inference, no trace-size constants) and ends
with a parity run of ONNX Runtime (CPU) against the PyTorch model at ``--check-size`` (batch 2), printed as
agreement numbers; an fp32 file that misses the conformance criterion is not written. See docs/ONNX.md.

Examples::

    metric3d_export --variant vit_small --weights metric_depth_vit_small_800k.pth --output vit_s.onnx
    metric3d_export --variant small --weights synthetic --output vit_s_fp16.onnx --fp16 --input-dtype uint8
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from metric3d_ros.core.config import add_engine_arguments, parse_net_size


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='metric3d_export', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument('--weights', required=True, help="checkpoint file (.pth), or 'synthetic'")
    p.add_argument('--output', required=True, help='the .onnx file to write')
    p.add_argument('--fp16', action='store_true',
                   help='convolutions and matrix products in float16 (inputs/outputs stay as they are)')
    p.add_argument('--opset', type=int, default=17, help='ONNX opset, 17 or newer (default 17)')
    p.add_argument('--input-dtype', default='float32', choices=['float32', 'uint8'],
                   help='element type of the image input, values 0..255 either way (default float32)')
    p.add_argument('--check-size', default='280x392',
                   help="network size HxW of the parity run (multiples of 28; default 280x392; 'none' skips)")
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (default: torch default)')
    add_engine_arguments(p, include=('variant',), defaults={'variant': None})
    args = p.parse_args(argv)
    if args.variant is None:
        p.error('--variant is required (a name of the variant table, e.g. small)')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        check_hw = None if args.check_size.lower() == 'none' else parse_net_size(args.check_size)
        import torch

        from metric3d_ros.core.model.export import ExportOptions, export_metric3d

        if args.threads > 0:
            torch.set_num_threads(args.threads)
        options = ExportOptions(variant=args.variant, weights=args.weights, output=args.output,
                                fp16=args.fp16, opset=args.opset, input_dtype=args.input_dtype,
                                check_hw=check_hw)
        export_metric3d(options, log=print)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f'metric3d_export: error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
