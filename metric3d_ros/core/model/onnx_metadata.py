"""What a Metric3D ONNX file says about itself: the ``metadata_props`` written by ``metric3d_export``.

The exported graph takes the raw image and folds Metric3D's normalization in, so a runtime needs nothing but
the file and this contract:

- input ``image``: (B, 3, H, W), NCHW, RGB, values 0..255, float32 or uint8 (``input_dtype``); B >= 1 and
  H, W multiples of 28 (other sizes run, but return 4 * floor(3.5 * ceil(H / 14)) rows, like upstream);
- outputs ``depth`` (B, 1, H, W) canonical-camera depth in metres (focal ``canonical_focal_px``),
  ``confidence`` (B, 1, H, W), ``normal`` (B, 4, H, W): unit xyz in the camera optical frame + kappa.

Every value in ``metadata_props`` is a string; :class:`OnnxModelInfo` converts them both ways and refuses
files that lack a key, so that a foreign or damaged file is caught before it is run. This module imports
neither torch nor onnx.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: Value of the ``format`` key; a reader refuses other formats.
FORMAT = 'metric3d_ros.onnx/1'
INPUT_NAME = 'image'
OUTPUT_NAMES: tuple[str, str, str] = ('depth', 'confidence', 'normal')
#: Metric3D's ImageNet normalization (RGB, 0..255 scale), folded into the exported graph.
MEAN_RGB: tuple[float, float, float] = (123.675, 116.28, 103.53)
STD_RGB: tuple[float, float, float] = (58.395, 57.12, 57.375)
CANONICAL_FOCAL_PX = 1000.0
SIZE_MULTIPLE_PX = 28
INPUT_LAYOUT = 'NCHW'
CHANNEL_ORDER = 'RGB'
INPUT_RANGE = '0-255'
NORMALIZATION = 'folded'
OUTPUTS_DESCRIPTION = ('depth: canonical depth (B,1,H,W) in metres at focal canonical_focal_px; '
                       'confidence: (B,1,H,W); normal: (B,4,H,W) unit xyz (camera optical frame) + kappa')

InputDtype = Literal['float32', 'uint8']
Precision = Literal['fp32', 'fp16']
INPUT_DTYPES: tuple[str, ...] = ('float32', 'uint8')
PRECISIONS: tuple[str, ...] = ('fp32', 'fp16')


class OnnxModelError(RuntimeError):
    """An ONNX file that cannot be used as configured (unreadable, foreign, or of another variant)."""


@dataclass(frozen=True)
class OnnxModelInfo:
    """The metadata of an exported Metric3D graph.

    variant: 'small', 'large' or 'giant2'.
    precision: 'fp32', or 'fp16' (convolutions and matrix products in float16, the rest in float32; see
        ``onnx_transforms.convert_to_mixed_fp16``); inputs and outputs are float32 either way.
    input_dtype: 'float32' or 'uint8' element type of the ``image`` input (values 0..255 in both).
    opset: ONNX opset of the default domain.
    checkpoint_sha256: sha256 of the source checkpoint file, or 'synthetic'.
    package_version: ``metric3d_ros.__version__`` of the exporter.
    fp16_ops: op types that run in float16 ('' for fp32 files).
    """

    variant: str
    precision: Precision
    input_dtype: InputDtype
    opset: int
    checkpoint_sha256: str
    package_version: str
    canonical_focal_px: float = CANONICAL_FOCAL_PX
    mean_rgb: tuple[float, float, float] = MEAN_RGB
    std_rgb: tuple[float, float, float] = STD_RGB
    size_multiple_px: int = SIZE_MULTIPLE_PX
    fp16_ops: str = ''

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        if self.input_dtype not in INPUT_DTYPES:
            raise ValueError(f'input_dtype must be one of {INPUT_DTYPES}, got {self.input_dtype!r}')
        if self.opset < 17:
            raise ValueError(f'opset must be 17 or newer, got {self.opset}')
        if len(self.mean_rgb) != 3 or len(self.std_rgb) != 3:
            raise ValueError('mean_rgb and std_rgb must hold 3 values (R, G, B)')

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (all strings)."""
        return {
            'format': FORMAT,
            'variant': self.variant,
            'precision': self.precision,
            'fp16_ops': self.fp16_ops,
            'canonical_focal_px': _number(self.canonical_focal_px),
            'mean_rgb': ','.join(_number(v) for v in self.mean_rgb),
            'std_rgb': ','.join(_number(v) for v in self.std_rgb),
            'input_name': INPUT_NAME,
            'input_layout': INPUT_LAYOUT,
            'input_channel_order': CHANNEL_ORDER,
            'input_dtype': self.input_dtype,
            'input_range': INPUT_RANGE,
            'normalization': NORMALIZATION,
            'size_multiple_px': str(self.size_multiple_px),
            'outputs': OUTPUTS_DESCRIPTION,
            'opset': str(self.opset),
            'package_version': self.package_version,
            'checkpoint_sha256': self.checkpoint_sha256,
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = 'ONNX file') -> OnnxModelInfo:
        """Parse ``metadata_props``; OnnxModelError naming ``source`` when a key is missing or wrong."""
        if props.get('format') != FORMAT:
            found = props.get('format')
            raise OnnxModelError(
                f'{source} was not written by metric3d_export (metadata format {found!r}, expected '
                f'{FORMAT!r}): export it with `metric3d_export --variant ... --weights ... --output ...`'
            )
        required = ('variant', 'precision', 'input_dtype', 'opset', 'checkpoint_sha256', 'package_version',
                    'canonical_focal_px', 'mean_rgb', 'std_rgb', 'input_layout', 'input_channel_order',
                    'input_range', 'normalization', 'size_multiple_px')
        missing = [key for key in required if key not in props]
        if missing:
            raise OnnxModelError(f'{source} lacks metadata {missing}: re-export it with metric3d_export')
        fixed = {'input_layout': INPUT_LAYOUT, 'input_channel_order': CHANNEL_ORDER,
                 'input_range': INPUT_RANGE, 'normalization': NORMALIZATION, 'input_name': INPUT_NAME}
        for key, expected in fixed.items():
            if props.get(key, expected) != expected:
                raise OnnxModelError(
                    f'{source} declares {key}={props[key]!r}; this package reads only {key}={expected!r}')
        try:
            return cls(
                variant=props['variant'],
                precision=props['precision'],  # type: ignore[arg-type]
                input_dtype=props['input_dtype'],  # type: ignore[arg-type]
                opset=int(props['opset']),
                checkpoint_sha256=props['checkpoint_sha256'],
                package_version=props['package_version'],
                canonical_focal_px=float(props['canonical_focal_px']),
                mean_rgb=_triple(props['mean_rgb']),
                std_rgb=_triple(props['std_rgb']),
                size_multiple_px=int(props['size_multiple_px']),
                fp16_ops=props.get('fp16_ops', ''),
            )
        except ValueError as exc:
            raise OnnxModelError(f'{source} has malformed metadata: {exc}') from exc

    def describe(self) -> str:
        """One line for logs."""
        return (f'Metric3D {self.variant} {self.precision}, input {self.input_dtype} {INPUT_LAYOUT} '
                f'{CHANNEL_ORDER} {INPUT_RANGE}, opset {self.opset}, '
                f'checkpoint {self.checkpoint_sha256[:12]}, '
                f'exported by metric3d_ros {self.package_version}')


def _number(value: float) -> str:
    return repr(float(value))


def _triple(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(',')]
    if len(parts) != 3:
        raise ValueError(f'expected 3 comma-separated numbers, got {text!r}')
    return (parts[0], parts[1], parts[2])
