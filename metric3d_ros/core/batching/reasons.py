"""Names of the reasons a frame is dropped (shared by pairing, stamp checks, scheduler and diagnostics).

Every input frame ends in exactly one place: published, or dropped with one of these reasons (the node
adds its own, e.g. for bad encodings, through ``BatchScheduler.reject``). The last three name why a frame is
left out of the fused cloud, which is no drop.
"""
from __future__ import annotations

NO_CAMERA_INFO = 'no_camera_info'
"""No CameraInfo has been received for the camera yet."""
CAMERA_INFO_TOO_OLD = 'camera_info_too_old'
"""Every buffered CameraInfo is older than the image by more than ``info_tolerance_ms``."""
CAMERA_INFO_TOO_NEW = 'camera_info_too_new'
"""Every buffered CameraInfo near the image in time is newer than it by more than ``info_tolerance_ms``."""
DUPLICATE_STAMP = 'duplicate_stamp'
"""The image has the same stamp as the last accepted image of its camera."""
OUT_OF_ORDER_STAMP = 'out_of_order_stamp'
"""The image is older than the last accepted image of its camera (by at most ``stamp_restart_ms``)."""
FUTURE_STAMP = 'future_stamp'
"""The image is stamped later than the stamp clock's now by more than ``max_future_ms``."""
NEGATIVE_STAMP = 'negative_stamp'
"""The image's stamp is before 1970 (negative seconds: legal in a message, meaningless for a camera)."""
STALE = 'stale'
"""The image is older than ``max_input_age_ms`` (at submission or at dispatch)."""
QUEUE_OVERFLOW = 'queue_overflow'
"""A newer image of the same camera replaced it in its bounded slot before it was dispatched."""
OUT_OF_ORDER_RESULT = 'out_of_order_result'
"""Publishing it would have put an older stamp after a newer one on the camera's outputs."""
PROCESS_ERROR = 'process_error'
"""``process_batch`` raised (or returned the wrong number of results) for the batch holding it."""
PUBLISH_ERROR = 'publish_error'
"""``publish`` raised for it."""

# Why a camera's frame is left out of a fused multi-camera cloud (``fused_points``, ``ros.fused``). These are
# not frame drops: the frame's own outputs were published; they are counted apart from the camera's drops.
FUSED_NO_DEPTH = 'fused_no_depth'
"""The frame has no depth to fuse (its inference failed, or it was submitted before the fused subscriber)."""
FUSED_STALE = 'fused_stale'
"""The frame is older than the batch's newest image by more than ``fused.stamp_tolerance_ms``."""
TRANSFORM_MISSING = 'transform_missing'
"""No extrinsic for the frame's camera at its stamp (tf2 lookup failed, or no static extrinsics)."""
