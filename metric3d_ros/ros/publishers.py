"""The output publishers of one camera: which outputs are wanted now, and their messages from a result.

Topics (relative to the node's namespace, remappable), all stamped with the input image's header:

- ``<cam>/depth/image``: 32FC1 metres (NaN invalid) or 16UC1 millimetres (0 invalid)
- ``<cam>/depth/camera_info``: the input CameraInfo rescaled to the depth image (published with the depth
  image or the cloud; alone it does not make the node infer)
- ``<cam>/points``: organized PointCloud2 (xyz or xyzrgb, depth_image_proc layout)
- ``<cam>/normals/image``: 32FC3 unit normals in the optical frame
- ``<cam>/confidence/image``: 32FC1

An output whose publisher has no subscriber is neither computed nor published (``wanted_request``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from metric3d_ros.core.engine.types import FrameResult, OutputRequest
from metric3d_ros.core.geometry.camera_info import CameraInfoFields, scale_camera_info
from metric3d_ros.core.geometry.depth import encode_depth_16uc1
from metric3d_ros.ros import cdr
from metric3d_ros.ros.cloud_conv import xyz_to_pointcloud2_cdr
from metric3d_ros.ros.conversions import (
    array_to_image,
    fields_to_camera_info,
    xyz_to_pointcloud2,
)
from metric3d_ros.ros.image_conv import array_to_image_cdr
from metric3d_ros.ros.params import OutputConfig

OUTPUT_TOPICS = {
    'depth': 'depth/image',
    'depth_info': 'depth/camera_info',
    'points': 'points',
    'normals': 'normals/image',
    'confidence': 'confidence/image',
}


def _normals_array(normals: np.ndarray) -> np.ndarray:
    """(H, W, 3) float unit normals as float32 (the 32FC3 image's array)."""
    arr = np.asarray(normals)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype.kind != 'f':
        raise ValueError(f'normals must be a float (H, W, 3) array, got {arr.dtype} {arr.shape}')
    return arr.astype(np.float32, copy=False)


@dataclass(frozen=True)
class Job:
    """One paired input frame on its way through the scheduler (what ``publish`` needs besides the result)."""

    camera_id: str
    header: Header
    info: CameraInfoFields
    request: OutputRequest


class CameraOutputs:
    """Publishers of one camera's outputs (created at activate, destroyed at deactivate)."""

    def __init__(self, node, camera_id: str, outputs: OutputConfig, qos_profile,
                 topics: dict[str, str] | None = None) -> None:
        """``topics``: output key -> topic name, default ``<camera_id>/<OUTPUT_TOPICS[key]>`` (relative to the
        node's namespace); a publisher process passes the node's resolved names."""
        self.camera_id = camera_id
        self._node = node
        self._config = outputs
        names = {key: f'{camera_id}/{topic}' for key, topic in OUTPUT_TOPICS.items()}
        names.update(topics or {})
        types = {'depth': Image, 'depth_info': CameraInfo, 'points': PointCloud2, 'normals': Image,
                 'confidence': Image}
        self.publishers = {key: node.create_publisher(types[key], names[key], qos_profile)
                           for key in OUTPUT_TOPICS}
        self._info_cache: tuple[CameraInfoFields, int, int, CameraInfoFields] | None = None
        # images and clouds go out as serialized bytes (no Python message building and conversion) when
        # this middleware reads our serialization back into the same messages (cdr.matches_middleware)
        self.serialized = cdr.matches_middleware()

    def destroy(self) -> None:
        """Destroy every publisher of this camera."""
        for pub in self.publishers.values():
            self._node.destroy_publisher(pub)
        self.publishers = {}

    def topic_names(self) -> dict[str, str]:
        """Output key -> fully qualified topic name (namespace and remappings applied)."""
        return {key: pub.topic_name for key, pub in self.publishers.items()}

    def subscribed(self) -> dict[str, bool]:
        """Which outputs have at least one subscriber now."""
        return {key: pub.get_subscription_count() > 0 for key, pub in self.publishers.items()}

    def wanted_request(self) -> OutputRequest | None:
        """The ``OutputRequest`` for the outputs that have subscribers; None when nothing needs inference."""
        subs = self.subscribed()
        if not (subs['depth'] or subs['points'] or subs['normals'] or subs['confidence']):
            return None
        cfg = self._config
        cloud = subs['points']
        return OutputRequest(
            depth=subs['depth'] or cloud,
            confidence=subs['confidence'],
            normals=subs['normals'],
            cloud=cloud,
            cloud_rgb=cloud and cfg.cloud_rgb,
            resolution=cfg.resolution,
            cloud_stride=cfg.cloud_stride,
            min_depth_m=cfg.min_depth_m,
            max_depth_m=cfg.max_depth_m,
        )

    def depth_camera_info(self, info: CameraInfoFields, width: int, height: int) -> CameraInfoFields:
        """``info`` rescaled to a ``width`` x ``height`` output (cached for an unchanged CameraInfo)."""
        # Keyed by the object itself (held, compared with `is`): an id() of a freed CameraInfo can be reused.
        cached = self._info_cache
        if cached is not None and cached[0] is info and cached[1:3] == (width, height):
            return cached[3]
        scaled = scale_camera_info(info, width, height)
        self._info_cache = (info, width, height, scaled)
        return scaled

    def publish(self, job: Job, result: FrameResult, only: frozenset[str] | None = None) -> None:
        """Publish every requested output of ``result`` with the input image's header (``only``: just these
        output keys, for publisher processes that share a camera's outputs)."""
        req = job.request
        header = job.header
        pubs = self.publishers

        def wanted(key: str) -> bool:
            return only is None or key in only

        if result.depth_m is not None and (req.depth or req.cloud):
            height, width = result.depth_m.shape[:2]
            if wanted('depth_info') and pubs['depth_info'].get_subscription_count() > 0:
                fields = self.depth_camera_info(job.info, width, height)
                pubs['depth_info'].publish(fields_to_camera_info(fields, header))
            if wanted('depth') and req.depth and pubs['depth'].get_subscription_count() > 0:
                if self._config.depth_encoding == '16UC1':
                    depth, encoding = encode_depth_16uc1(result.depth_m), '16UC1'
                else:
                    # The engine already marks invalid depth (non-finite, <= 0, out of range) as NaN, which
                    # is REP 117's 32FC1: no re-encoding copy needed.
                    depth, encoding = np.asarray(result.depth_m, dtype=np.float32), '32FC1'
                pubs['depth'].publish(self._image(depth, encoding, header))
        if wanted('points') and req.cloud and result.points_xyz is not None:
            rgb = result.points_rgb if req.cloud_rgb else None
            to_cloud = xyz_to_pointcloud2_cdr if self.serialized else xyz_to_pointcloud2
            pubs['points'].publish(to_cloud(result.points_xyz, header, rgb=rgb))
        if wanted('normals') and req.normals and result.normals is not None:
            pubs['normals'].publish(self._image(_normals_array(result.normals), '32FC3', header))
        if wanted('confidence') and req.confidence and result.confidence is not None:
            conf = np.asarray(result.confidence, dtype=np.float32)
            pubs['confidence'].publish(self._image(conf, '32FC1', header))

    def _image(self, arr: np.ndarray, encoding: str, header: Header):
        """The Image to publish: serialized bytes or a message object (see ``serialized``)."""
        if self.serialized:
            return array_to_image_cdr(arr, encoding, header)
        return array_to_image(arr, encoding, header)
