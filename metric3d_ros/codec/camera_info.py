"""sensor_msgs/CameraInfo: CDR bytes or message objects <-> ``CameraInfoFields`` (core.geometry.camera_info).

Usage::

    stamp_ns, frame_id, fields = read_camera_info_cdr(raw)
    fields = camera_info_from_msg(msg)                     # rclpy or rosbags message object
    raw = camera_info_cdr(fields, stamp_ns, 'cam_optical_frame')
"""
from __future__ import annotations

from metric3d_ros.codec.cdr import CdrReader, CdrWriter
from metric3d_ros.core.geometry.camera_info import CameraInfoFields, Roi


def read_camera_info_cdr(raw: bytes | memoryview) -> tuple[int, str, CameraInfoFields]:
    """(stamp_ns, frame_id, fields) of a serialized sensor_msgs/CameraInfo.

    Raises ``CdrError`` on bad bytes, ``CalibrationError`` (a ValueError) on values ``CameraInfoFields``
    refuses.
    """
    r = CdrReader(raw)
    stamp_ns, frame_id = r.header()
    height, width, model = r.u32(), r.u32(), r.string()
    d = r.f64_array()
    k, rect, p = r.f64_array(9), r.f64_array(9), r.f64_array(12)
    binning_x, binning_y = r.u32(), r.u32()
    roi = Roi(x_offset=r.u32(), y_offset=r.u32(), height=r.u32(), width=r.u32(), do_rectify=bool(r.u8()))
    fields = CameraInfoFields(width=width, height=height, distortion_model=model, d=d, k=k, r=rect, p=p,
                              binning_x=binning_x, binning_y=binning_y, roi=roi)
    return stamp_ns, frame_id, fields


def camera_info_from_msg(msg: object) -> CameraInfoFields:
    """Every calibration field of a sensor_msgs/CameraInfo message object (rclpy or rosbags; duck-typed;
    the header is not part of it). Raises ``CalibrationError`` when K, R or P have the wrong length."""
    roi = msg.roi
    return CameraInfoFields(
        width=int(msg.width), height=int(msg.height), distortion_model=str(msg.distortion_model),
        d=msg.d, k=msg.k, r=msg.r, p=msg.p, binning_x=int(msg.binning_x), binning_y=int(msg.binning_y),
        roi=Roi(x_offset=int(roi.x_offset), y_offset=int(roi.y_offset), height=int(roi.height),
                width=int(roi.width), do_rectify=bool(roi.do_rectify)),
    )


def camera_info_cdr(fields: CameraInfoFields, stamp_ns: int, frame_id: str) -> bytes:
    """A serialized sensor_msgs/CameraInfo carrying ``fields`` (TypeError for anything else)."""
    if not isinstance(fields, CameraInfoFields):
        raise TypeError(f'fields must be a CameraInfoFields, got {type(fields).__name__}')
    w = CdrWriter()
    w.header(stamp_ns, frame_id)
    w.u32(fields.height)
    w.u32(fields.width)
    w.string(fields.distortion_model)
    w.f64_array(fields.d, sequence=True)
    w.f64_array(fields.k, sequence=False)
    w.f64_array(fields.r, sequence=False)
    w.f64_array(fields.p, sequence=False)
    w.u32(fields.binning_x)
    w.u32(fields.binning_y)
    roi = fields.roi
    for value in (roi.x_offset, roi.y_offset, roi.height, roi.width):
        w.u32(value)
    w.u8(roi.do_rectify)
    return w.bytes()
