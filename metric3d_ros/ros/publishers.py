"""The output publishers of one camera: which outputs are wanted now, and their messages from a result.

Topics come from the output catalogue (``core.outputs.OUTPUTS``: ``<cam>/<spec.topic>``) plus
``<cam>/depth/camera_info`` (the input CameraInfo rescaled to the depth image, published with the depth
image or the cloud; alone it does not make the node infer). Every message carries the input image's stamp
and frame_id. Messages are written by the codec (``metric3d_ros.codec``) and published as serialized bytes:
one copy of each array into its message, no Python message objects.

An output whose publisher has no subscriber is neither computed nor published (``wanted_request``). The
subscription counts are read once per frame, when its image is received: the frame's ``Wanted`` says what is
computed and what is published (a subscriber that left meanwhile costs one unread message; one that joined
meanwhile gets the next frame).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from metric3d_ros.codec.camera_info import camera_info_cdr
from metric3d_ros.codec.cloud import pointcloud2_cdr
from metric3d_ros.codec.image import image_cdr
from metric3d_ros.core.engine.types import FrameResult, OutputRequest
from metric3d_ros.core.geometry.camera_info import CameraInfoFields, scale_camera_info
from metric3d_ros.core.geometry.depth import encode_depth_16uc1
from metric3d_ros.core.outputs import DEPTH_INFO_TOPIC, OutputSpec
from metric3d_ros.ros.params import OutputConfig

_MESSAGE_TYPES = {'image': Image, 'cloud': PointCloud2}
DEPTH_INFO = 'depth_info'
"""Key of the depth CameraInfo publisher beside the catalogue's outputs."""


def output_topics(camera_id: str, catalogue: Mapping[str, OutputSpec]) -> dict[str, str]:
    """Output key -> topic relative to the node's namespace (``<cam>/<suffix>``), depth CameraInfo
    included."""
    topics = {name: f'{camera_id}/{spec.topic}' for name, spec in catalogue.items()}
    topics[DEPTH_INFO] = f'{camera_id}/{DEPTH_INFO_TOPIC}'
    return topics


@dataclass(frozen=True)
class Wanted:
    """What one received frame is computed and published for (subscription counts read once, at receipt).

    request: the engine's request (the subscribed outputs and those they require).
    publish: the output keys with a subscriber (catalogue names, ``DEPTH_INFO``): what is published.
    """

    request: OutputRequest
    publish: frozenset[str]


@dataclass(frozen=True)
class Job:
    """One paired input frame on its way through the scheduler (what ``publish`` needs besides the result)."""

    camera_id: str
    stamp_ns: int
    frame_id: str
    info: CameraInfoFields
    wanted: Wanted


def _image_array(spec: OutputSpec, arr: np.ndarray, settings: OutputConfig) -> tuple[np.ndarray, str]:
    """The array and encoding an image output is published with (depth: 32FC1 metres or 16UC1 mm)."""
    if spec.name == 'depth' and settings.depth_encoding == '16UC1':
        return encode_depth_16uc1(arr), '16UC1'
    dtype = np.float32 if spec.encoding.startswith('32F') else None
    return (np.asarray(arr, dtype=dtype) if dtype is not None else np.asarray(arr)), spec.encoding


class CameraOutputs:
    """Publishers of one camera's outputs (created at activate, destroyed at deactivate).

    topics: output key -> topic name (``output_topics``; fully resolved names where the caller resolved them).
    """

    def __init__(self, node, camera_id: str, catalogue: Mapping[str, OutputSpec], topics: Mapping[str, str],
                 settings: OutputConfig, qos_profile) -> None:
        self.camera_id = camera_id
        self._node = node
        self._catalogue = dict(catalogue)
        self._settings = settings
        self.publishers = {
            name: node.create_publisher(_MESSAGE_TYPES[spec.message], topics[name], qos_profile)
            for name, spec in self._catalogue.items()}
        self.publishers[DEPTH_INFO] = node.create_publisher(CameraInfo, topics[DEPTH_INFO], qos_profile)
        self._info_cache: tuple[CameraInfoFields, int, int, CameraInfoFields] | None = None

    def destroy(self) -> None:
        """Destroy every publisher of this camera."""
        for pub in self.publishers.values():
            self._node.destroy_publisher(pub)
        self.publishers = {}

    def subscribed(self) -> dict[str, bool]:
        """Which outputs have at least one subscriber now."""
        return {key: pub.get_subscription_count() > 0 for key, pub in self.publishers.items()}

    def wanted_request(self) -> Wanted | None:
        """What a frame received now is computed and published for (``Wanted``, one subscription count per
        publisher); None when no output needs inference."""
        subs = self.subscribed()
        published = frozenset(key for key, yes in subs.items() if yes)
        names = {name for name in self._catalogue if name in published}
        if not names:
            return None
        for name in list(names):
            names.update(self._catalogue[name].requires)
        cfg = self._settings
        return Wanted(OutputRequest(
            outputs=frozenset(names),
            resolution=cfg.resolution,
            cloud_stride=cfg.cloud_stride,
            cloud_rgb=cfg.cloud_rgb and 'points' in names,
            min_depth_m=cfg.min_depth_m,
            max_depth_m=cfg.max_depth_m,
        ), published)

    def depth_camera_info(self, info: CameraInfoFields, width: int, height: int) -> CameraInfoFields:
        """``info`` rescaled to a ``width`` x ``height`` output (cached for an unchanged CameraInfo)."""
        # Keyed by the object itself (held, compared with `is`): an id() of a freed CameraInfo can be reused.
        cached = self._info_cache
        if cached is not None and cached[0] is info and cached[1:3] == (width, height):
            return cached[3]
        scaled = scale_camera_info(info, width, height)
        self._info_cache = (info, width, height, scaled)
        return scaled

    def publish(self, job: Job, result: FrameResult) -> int:
        """Publish the outputs of ``result`` that ``job.wanted`` names with the input image's stamp and
        frame_id; returns the number of messages the middleware took (raises on a failed publish)."""
        stamp_ns, frame_id = job.stamp_ns, job.frame_id
        pubs = self.publishers
        arrays = result.arrays
        publish, request = job.wanted.publish, job.wanted.request
        sent = 0
        depth = arrays.get('depth_m')
        if depth is not None and DEPTH_INFO in publish:
            height, width = depth.shape[:2]
            fields = self.depth_camera_info(job.info, width, height)
            pubs[DEPTH_INFO].publish(camera_info_cdr(fields, stamp_ns, frame_id))
            sent += 1
        for name, spec in self._catalogue.items():
            arr = arrays.get(spec.array)
            if name not in publish or arr is None:
                continue
            if spec.message == 'cloud':
                rgb = arrays.get('points_rgb') if request.cloud_rgb else None
                data = pointcloud2_cdr(arr, stamp_ns, frame_id, rgb=rgb)
            else:
                image, encoding = _image_array(spec, arr, self._settings)
                data = image_cdr(image, encoding, stamp_ns, frame_id)
            pubs[name].publish(data)
            sent += 1
        return sent
