"""Message <-> numpy conversions of the ROS layer, in one import (no cv_bridge needed).

The work is done in small modules: ``image_conv`` (Image), ``compressed_conv`` (CompressedImage),
``cloud_conv`` (PointCloud2) and ``camera_info_conv`` (CameraInfo).
"""
from metric3d_ros.ros.camera_info_conv import camera_info_to_fields, fields_to_camera_info
from metric3d_ros.ros.cloud_conv import (
    POINT_STEP_XYZ_B,
    POINT_STEP_XYZRGB_B,
    RGB_OFFSET_B,
    CloudArrays,
    CloudConversionError,
    pointcloud2_to_array,
    xyz_to_pointcloud2,
)
from metric3d_ros.ros.compressed_conv import CompressedFormat, compressed_to_rgb8, parse_compressed_format
from metric3d_ros.ros.image_conv import (
    ENCODINGS,
    EncodingInfo,
    ImageConversionError,
    array_bytes,
    array_to_image,
    encoding_info,
    image_to_array,
    image_to_rgb8,
)

__all__ = [
    'ENCODINGS',
    'POINT_STEP_XYZRGB_B',
    'POINT_STEP_XYZ_B',
    'RGB_OFFSET_B',
    'CloudArrays',
    'CloudConversionError',
    'CompressedFormat',
    'EncodingInfo',
    'ImageConversionError',
    'array_bytes',
    'array_to_image',
    'camera_info_to_fields',
    'compressed_to_rgb8',
    'encoding_info',
    'fields_to_camera_info',
    'image_to_array',
    'image_to_rgb8',
    'parse_compressed_format',
    'pointcloud2_to_array',
    'xyz_to_pointcloud2',
]
