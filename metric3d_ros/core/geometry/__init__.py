"""ROS-free geometry core (numpy only): intrinsics, CameraInfo semantics, letterbox, depth, clouds."""
from metric3d_ros.core.geometry.camera_info import (
    CalibrationError,
    CameraInfoFields,
    CameraIntrinsics,
    Roi,
    intrinsics_from_camera_info,
    published_size,
    scale_camera_info,
)
from metric3d_ros.core.geometry.cloud import decimate, pack_rgb_float, unpack_rgb_float, unproject_organized
from metric3d_ros.core.geometry.depth import (
    CANONICAL_FOCAL_PX,
    MAX_DEPTH_16UC1_M,
    UPSTREAM_MAX_DEPTH_M,
    UPSTREAM_MIN_DEPTH_M,
    canonical_to_metric,
    clamp_depth,
    decode_depth_16uc1,
    encode_depth_16uc1,
    encode_depth_32fc1,
)
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.geometry.letterbox import PADDING_RGB, PADDING_RGB_UINT8, Letterbox, compute_letterbox

__all__ = [
    'CANONICAL_FOCAL_PX',
    'MAX_DEPTH_16UC1_M',
    'PADDING_RGB',
    'PADDING_RGB_UINT8',
    'UPSTREAM_MAX_DEPTH_M',
    'UPSTREAM_MIN_DEPTH_M',
    'CalibrationError',
    'CameraInfoFields',
    'CameraIntrinsics',
    'Intrinsics',
    'Letterbox',
    'Roi',
    'canonical_to_metric',
    'clamp_depth',
    'compute_letterbox',
    'decimate',
    'decode_depth_16uc1',
    'encode_depth_16uc1',
    'encode_depth_32fc1',
    'intrinsics_from_camera_info',
    'pack_rgb_float',
    'published_size',
    'scale_camera_info',
    'unpack_rgb_float',
    'unproject_organized',
]
