"""sensor_msgs/CameraInfo <-> the ROS-free ``CameraInfoFields`` mirror of the geometry core."""
from __future__ import annotations

import array

from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from metric3d_ros.core.geometry.camera_info import CameraInfoFields, Roi


def camera_info_to_fields(msg: CameraInfo) -> CameraInfoFields:
    """Every calibration field of ``msg`` (the header is not part of it).

    Raises ``CalibrationError`` (a ValueError) when K, R or P have the wrong number of values.
    """
    roi = msg.roi
    return CameraInfoFields(
        width=msg.width,
        height=msg.height,
        distortion_model=msg.distortion_model,
        d=msg.d,
        k=msg.k,
        r=msg.r,
        p=msg.p,
        binning_x=msg.binning_x,
        binning_y=msg.binning_y,
        roi=Roi(
            x_offset=roi.x_offset,
            y_offset=roi.y_offset,
            height=roi.height,
            width=roi.width,
            do_rectify=roi.do_rectify,
        ),
    )


def fields_to_camera_info(fields: CameraInfoFields, header: Header | None = None) -> CameraInfo:
    """A CameraInfo message carrying ``fields``; ``header`` is copied in (default: an empty header)."""
    if not isinstance(fields, CameraInfoFields):
        raise TypeError(f'fields must be a CameraInfoFields, got {type(fields).__name__}')
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width = fields.width
    msg.height = fields.height
    msg.distortion_model = fields.distortion_model
    msg.d = array.array('d', fields.d)
    msg.k = list(fields.k)
    msg.r = list(fields.r)
    msg.p = list(fields.p)
    msg.binning_x = fields.binning_x
    msg.binning_y = fields.binning_y
    msg.roi = RegionOfInterest(
        x_offset=fields.roi.x_offset,
        y_offset=fields.roi.y_offset,
        height=fields.roi.height,
        width=fields.roi.width,
        do_rectify=fields.roi.do_rectify,
    )
    return msg
