"""``metric3d_bag``: build a rosbag2 from image folders (plus intrinsics) or from the synthetic scene.

For every camera ``<cam>`` the bag holds, per frame and with one stamp:

- ``/<cam>/camera_info``  sensor_msgs/CameraInfo (K = P[:, :3], R = I; D from the rig description)
- ``/<cam>/image``        sensor_msgs/Image rgb8, or ``/<cam>/image/compressed`` (``--image-format jpeg|png``)
- ``/<cam>/depth_gt``     sensor_msgs/Image 32FC1 ground-truth depth in metres, NaN where there is none

all with ``frame_id = <cam>_optical_frame``. Messages are written in stamp order (camera_info, image,
depth_gt per camera and stamp) with the log time equal to the stamp, so a player reproduces the timing.

Sources (sub-commands):

- ``rig``: a rig description such as ``shared/data/ddad_rig/rig.json`` (``cameras: {name: {fx, fy, cx, cy,
  width, height, D, distortion_model}}``) with one folder per camera beside it holding ``<id>.jpg`` and
  ``<id>_depth.png``;
- ``camera``: one camera's image folder (or single image) and ``--fx --fy --cx --cy``; ground truth with
  ``--depth-template`` (and ``--depth-scale``, an error without a template). A depth PNG (16-bit
  single-channel) among the camera images is refused: it would become a garbled camera frame;
- ``preset nyu|kitti|ddad``: the shared data sets with their documented intrinsics and depth scales
  (NYU metres = value / 1000; KITTI and DDAD metres = value / 256; 0 = no depth);
- ``synthetic``: the ray-cast multi-camera scene of ``metric3d_ros.core.synthetic_scene`` (exact depth).

Stamps: ``--stamps name`` reads them from numeric file ids (the unit is inferred so that the time falls in
1990..2100: DDAD's 17-digit ids are 100 ns ticks), ``--stamps rate`` uses ``--start-ns + i / --rate-hz``
(frames of one index share a stamp across cameras), ``auto`` (default) takes names when every id is such a
time and the rate otherwise.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from metric3d_ros.core.geometry.camera_info import CameraInfoFields
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.synthetic_scene import SceneConfig, render_sequence
from metric3d_ros.tools.bagio import DEFAULT_DISTRO, DISTROS, STORAGES, BagWriter

DEFAULT_START_NS = 1_700_000_000_000_000_000
#: Plausible epoch range for stamps read from file names: 1990-01-01 .. 2100-01-01.
_EPOCH_MIN_NS = 631_152_000 * 10**9
_EPOCH_MAX_NS = 4_102_444_800 * 10**9
#: Candidate tick lengths in ns for numeric file ids: ns, 100 ns, us, ms, s.
_TICKS_NS = (1, 100, 1_000, 1_000_000, 1_000_000_000)
IMAGE_FORMATS = ('raw', 'jpeg', 'png')
#: ``metric3d_bag camera``'s depth PNG value per metre (millimetres).
CAMERA_DEPTH_SCALE = 1000.0


@dataclass(frozen=True)
class FramePaths:
    """One frame of one camera: its id (from the file name), image file and optional depth file."""

    frame_key: str
    image_path: Path
    depth_path: Path | None


@dataclass(frozen=True)
class CameraSource:
    """A camera's frames and calibration for the bag.

    depth_scale: ground-truth PNG value per metre (1000 for millimetres, 256 for KITTI/DDAD).
    """

    name: str
    intrinsics: Intrinsics
    width_px: int
    height_px: int
    frames: tuple[FramePaths, ...]
    depth_scale: float = 256.0
    distortion_model: str = 'plumb_bob'
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def frame_id(self) -> str:
        return f'{self.name}_optical_frame'

    def camera_info(self) -> CameraInfoFields:
        base = CameraInfoFields.from_intrinsics(self.intrinsics, self.width_px, self.height_px,
                                                self.distortion_model)
        return CameraInfoFields(base.width, base.height, base.distortion_model, self.distortion, base.k,
                                base.r, base.p)


@dataclass(frozen=True)
class BagOptions:
    """How the bag is written."""

    storage: str = 'sqlite3'
    image_format: str = 'raw'
    jpeg_quality: int = 95
    distro: str = DEFAULT_DISTRO
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f'storage must be one of {STORAGES}, got {self.storage!r}')
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f'image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}')
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f'jpeg_quality must be in 1..100, got {self.jpeg_quality}')
        if self.distro not in DISTROS:
            raise ValueError(f'distro must be one of {sorted(DISTROS)}, got {self.distro!r}')


def camera_topics(camera: str, image_format: str = 'raw') -> dict[str, str]:
    """Topic names of a camera in the bags this tool writes."""
    image = f'/{camera}/image' if image_format == 'raw' else f'/{camera}/image/compressed'
    return {'image': image, 'camera_info': f'/{camera}/camera_info', 'depth_gt': f'/{camera}/depth_gt'}


# ---------------------------------------------------------------------------------------------------------
# Stamps and files


def stamp_from_id(frame_key: str) -> int | None:
    """Nanoseconds since the epoch encoded by a numeric file id, or None when it is not such a time.

    The unit is the first of ns, 100 ns, us, ms, s that puts the time between 1990 and 2100.
    """
    if not frame_key.isdigit():
        return None
    value = int(frame_key)
    for tick_ns in _TICKS_NS:
        if _EPOCH_MIN_NS <= value * tick_ns <= _EPOCH_MAX_NS:
            return value * tick_ns
    return None


def assign_stamps(keys: Sequence[str], mode: str, rate_hz: float, start_ns: int) -> list[int]:
    """Stamps for frame ids ``keys`` (see the module docstring for ``mode``)."""
    if mode not in ('auto', 'name', 'rate'):
        raise ValueError(f"stamps mode must be 'auto', 'name' or 'rate', got {mode!r}")
    from_names = [stamp_from_id(k) for k in keys]
    if mode == 'name' or (mode == 'auto' and keys and all(s is not None for s in from_names)):
        bad = [k for k, s in zip(keys, from_names, strict=True) if s is None]
        if bad:
            raise ValueError(f'file ids {bad[:3]} are not epoch times; use --stamps rate')
        return [int(s) for s in from_names]  # type: ignore[arg-type]
    if not rate_hz > 0:
        raise ValueError(f'rate_hz must be positive, got {rate_hz}')
    return [int(start_ns) + round(i * 1e9 / rate_hz) for i in range(len(keys))]


def discover_frames(folder: Path, image_regex: str, depth_template: str | None) -> list[FramePaths]:
    """Image files of ``folder`` whose names match ``image_regex`` (its ``key`` group, else the stem, is the
    frame id), with the depth file named by ``depth_template.format(key=...)`` when it exists.

    A matched file that is another frame's depth file is not a frame. Raises ValueError when a remaining
    match is a depth PNG (16-bit single-channel, ``is_depth_png``): it would become a garbled camera frame.
    """
    if not folder.is_dir():
        raise ValueError(f'image folder {folder} does not exist')
    pattern = re.compile(image_regex)
    frames = []
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        key = match.groupdict().get('key') or path.stem
        depth = None
        if depth_template:
            candidate = folder / depth_template.format(key=key)
            depth = candidate if candidate.is_file() else None
        frames.append(FramePaths(key, path, depth))
    depth_files = {f.depth_path for f in frames if f.depth_path is not None}
    frames = [f for f in frames if f.image_path not in depth_files]
    if not frames:
        raise ValueError(f'no image in {folder} matches {image_regex!r}')
    refuse_depth_images([f.image_path for f in frames])
    return frames


def is_depth_png(path: Path) -> bool:
    """Whether ``path`` is a PNG of 16-bit single-channel (greyscale) pixels, the format of depth images;
    read from its header alone."""
    with open(path, 'rb') as f:
        head = f.read(26)
    # signature (8), IHDR length (4), b'IHDR' (4), width (4), height (4), bit depth (1), colour type (1)
    return (len(head) == 26 and head[:8] == b'\x89PNG\r\n\x1a\n' and head[12:16] == b'IHDR'
            and head[24] == 16 and head[25] == 0)


def refuse_depth_images(image_paths: Sequence[Path]) -> None:
    """Raise ValueError naming the depth PNGs among ``image_paths`` (see ``is_depth_png``), if any."""
    depth_like = [p.name for p in image_paths if p.suffix.lower() == '.png' and is_depth_png(p)]
    if depth_like:
        more = len(depth_like) - 3
        shown = ', '.join(depth_like[:3]) + (f' and {more} more' if more > 0 else '')
        raise ValueError(
            f'{len(depth_like)} of the {len(image_paths)} camera images are 16-bit single-channel PNGs, i.e. '
            f'depth images ({shown}): give --image-regex matching the camera images only, and '
            f'--depth-template naming the depth file of each (e.g. "{{key}}_depth.png") for ground truth'
        )


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'cannot read image {path}')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth_png(path: Path, depth_scale: float) -> np.ndarray:
    """(H, W) float32 metres from a uint16 depth PNG (value / depth_scale), NaN where the value is 0."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f'cannot read depth image {path}')
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f'depth image {path} must be single-channel uint16, got {raw.dtype} {raw.shape}')
    if not depth_scale > 0:
        raise ValueError(f'depth_scale must be positive, got {depth_scale}')
    depth = (raw.astype(np.float64) / depth_scale).astype(np.float32)
    depth[raw == 0] = np.nan
    return depth


# ---------------------------------------------------------------------------------------------------------
# Sources


def cameras_from_rig(rig_json: Path, root: Path | None = None, names: Sequence[str] | None = None,
                     depth_scale: float = 256.0, image_regex: str = r'(?P<key>\d+)\.(jpg|jpeg|png)',
                     depth_template: str = '{key}_depth.png') -> list[CameraSource]:
    """Cameras of a rig description (rig.json) whose frames are in ``root/<camera>/`` (root: its folder)."""
    try:
        rig = json.loads(Path(rig_json).read_text())
        described = rig['cameras']
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f'{rig_json} is not a rig description with a "cameras" mapping: {exc}') from exc
    root = Path(root) if root else Path(rig_json).parent
    chosen = list(names) if names else sorted(described)
    unknown = [n for n in chosen if n not in described]
    if unknown:
        raise ValueError(f'cameras {unknown} are not in {rig_json}; it describes {sorted(described)}')
    cameras = []
    for name in chosen:
        cam = described[name]
        try:
            intr = Intrinsics(cam['fx'], cam['fy'], cam['cx'], cam['cy'])
            width, height = int(cam['width']), int(cam['height'])
        except KeyError as exc:
            raise ValueError(f'camera {name} in {rig_json} lacks {exc}') from exc
        frames = discover_frames(root / name, image_regex, depth_template)
        cameras.append(CameraSource(
            name=_ros_name(name), intrinsics=intr, width_px=width, height_px=height, frames=tuple(frames),
            depth_scale=depth_scale, distortion_model=str(cam.get('distortion_model', 'plumb_bob')),
            distortion=tuple(float(v) for v in cam.get('D', (0.0,) * 5)),
        ))
    return cameras


def _ros_name(name: str) -> str:
    """A camera name usable as a ROS topic name part ([A-Za-z0-9_], not starting with a digit)."""
    cleaned = re.sub(r'[^A-Za-z0-9_]', '_', name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = f'cam_{cleaned}'
    return cleaned


@dataclass(frozen=True)
class Preset:
    """A shared data set: folder, file naming, depth scale, camera name and intrinsics (None: rig.json)."""

    folder: str
    camera: str
    image_regex: str
    depth_template: str
    depth_scale: float
    intrinsics: Intrinsics | None


PRESETS: dict[str, Preset] = {
    'nyu': Preset('nyu', 'nyu', r'rgb_(?P<key>\d+)\.jpg', 'sync_depth_{key}.png', 1000.0,
                  Intrinsics(518.8579, 519.46961, 325.58245, 253.73617)),
    'kitti': Preset('kitti', 'kitti', r'rgb_(?P<key>\d+)\.png', 'depth_{key}.png', 256.0,
                    Intrinsics(721.5377, 721.5377, 609.5593, 172.854)),
    'ddad': Preset('ddad_rig', '', r'(?P<key>\d+)\.(jpg|jpeg|png)', '{key}_depth.png', 256.0, None),
}


def cameras_from_preset(preset: str, data_root: Path) -> list[CameraSource]:
    """Cameras of a shared data set under ``data_root`` (the folder holding nyu/, kitti/, ddad_rig/)."""
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r}; use one of {sorted(PRESETS)}')
    spec = PRESETS[preset]
    folder = Path(data_root) / spec.folder
    if spec.intrinsics is None:
        return cameras_from_rig(folder / 'rig.json', folder, depth_scale=spec.depth_scale,
                                image_regex=spec.image_regex, depth_template=spec.depth_template)
    frames = discover_frames(folder, spec.image_regex, spec.depth_template)
    h, w = read_rgb(frames[0].image_path).shape[:2]
    return [CameraSource(spec.camera, spec.intrinsics, w, h, tuple(frames), spec.depth_scale)]


def camera_from_folder(name: str, images: Path, intrinsics: Intrinsics,
                       depth_scale: float = CAMERA_DEPTH_SCALE,
                       image_regex: str = r'(?P<key>.+)\.(jpg|jpeg|png)',
                       depth_template: str | None = None) -> CameraSource:
    """One camera from an image folder (or a single image file) and its intrinsics.

    Raises ValueError when a camera image is a depth PNG (``discover_frames``), or when ``depth_template``
    names no existing file (the bag would silently hold no ground truth).
    """
    images = Path(images)
    if images.is_file():
        key = images.stem
        depth = images.parent / depth_template.format(key=key) if depth_template else None
        frames = [FramePaths(key, images, depth if depth is not None and depth.is_file() else None)]
        refuse_depth_images([images])
    else:
        frames = discover_frames(images, image_regex, depth_template)
    if depth_template and not any(f.depth_path for f in frames):
        raise ValueError(f'depth template {depth_template!r} names no file beside the {len(frames)} '
                         f'images of {images}')
    h, w = read_rgb(frames[0].image_path).shape[:2]
    return CameraSource(_ros_name(name), intrinsics, w, h, tuple(frames), depth_scale)


# ---------------------------------------------------------------------------------------------------------
# Writing


def write_camera_bag(output: Path, cameras: Sequence[CameraSource], options: BagOptions,
                     stamps: str = 'auto', rate_hz: float = 10.0, start_ns: int = DEFAULT_START_NS) -> dict:
    """Write the bag of ``cameras``; returns a summary (topics, frames, stamps)."""
    if not cameras:
        raise ValueError('no camera to write')
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise ValueError(f'camera names must be unique, got {names}')
    events = []  # (stamp, camera index, frame)
    for ci, cam in enumerate(cameras):
        cam_stamps = assign_stamps([f.frame_key for f in cam.frames], stamps, rate_hz, start_ns)
        events.extend((s, ci, f) for s, f in zip(cam_stamps, cam.frames, strict=True))
    events.sort(key=lambda e: (e[0], e[1]))
    with BagWriter(output, options.storage, options.distro, options.overwrite) as writer:
        for stamp, ci, frame in events:
            cam = cameras[ci]
            rgb = read_rgb(frame.image_path)
            if rgb.shape[:2] != (cam.height_px, cam.width_px):
                raise ValueError(
                    f'{frame.image_path} is {rgb.shape[1]}x{rgb.shape[0]} but camera {cam.name} is described '
                    f'as {cam.width_px}x{cam.height_px}'
                )
            depth = read_depth_png(frame.depth_path, cam.depth_scale) if frame.depth_path else None
            if depth is not None and depth.shape != rgb.shape[:2]:
                raise ValueError(f'{frame.depth_path} is {depth.shape[::-1]}, its image {rgb.shape[1::-1]}')
            _write_frame(writer, cam.name, cam.frame_id, cam.camera_info(), rgb, depth, stamp, options)
    return _summary(output, options, names, [s for s, _, _ in events])


def _write_frame(writer: BagWriter, camera: str, frame_id: str, info: CameraInfoFields, rgb: np.ndarray,
                 depth_m: np.ndarray | None, stamp_ns: int, options: BagOptions) -> None:
    topics = camera_topics(camera, options.image_format)
    writer.write_camera_info(topics['camera_info'], info, stamp_ns, frame_id)
    if options.image_format == 'raw':
        writer.write_image(topics['image'], rgb, 'rgb8', stamp_ns, frame_id)
    else:
        writer.write_compressed(topics['image'], rgb, stamp_ns, frame_id, options.image_format,
                                options.jpeg_quality)
    if depth_m is not None:
        writer.write_depth(topics['depth_gt'], depth_m, stamp_ns, frame_id)


def write_synthetic_bag(output: Path, config: SceneConfig, n_frames: int, options: BagOptions) -> dict:
    """Render ``n_frames`` of the synthetic rig and write them (exact ground-truth depth)."""
    stamps = []
    with BagWriter(output, options.storage, options.distro, options.overwrite) as writer:
        for views in render_sequence(config, n_frames):
            for view, spec in zip(views, config.cameras, strict=True):
                info = CameraInfoFields.from_intrinsics(spec.intrinsics, spec.width_px, spec.height_px)
                _write_frame(writer, view.camera, view.frame_id, info, view.image_rgb, view.depth_m,
                             view.stamp_ns, options)
                stamps.append(view.stamp_ns)
    return _summary(output, options, [c.name for c in config.cameras], stamps)


def _summary(output: Path, options: BagOptions, cameras: list[str], stamps: list[int]) -> dict:
    return {
        'bag': str(output), 'storage': options.storage, 'cameras': cameras,
        'topics': {c: camera_topics(c, options.image_format) for c in cameras},
        'messages_per_topic': len(stamps) // max(len(cameras), 1),
        'first_stamp_ns': min(stamps) if stamps else None, 'last_stamp_ns': max(stamps) if stamps else None,
    }


# ---------------------------------------------------------------------------------------------------------
# Command line


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument('-o', '--output', required=True, type=Path, help='bag folder to create')
    p.add_argument('--storage', choices=STORAGES, default='sqlite3')
    p.add_argument('--image-format', choices=IMAGE_FORMATS, default='raw',
                   help='raw: sensor_msgs/Image rgb8 on /<cam>/image; jpeg|png: CompressedImage on '
                        '/<cam>/image/compressed')
    p.add_argument('--jpeg-quality', type=int, default=95)
    p.add_argument('--distro', choices=sorted(DISTROS), default=DEFAULT_DISTRO, help='message definitions')
    p.add_argument('--overwrite', action='store_true', help='replace an existing bag folder')
    p.add_argument('--stamps', choices=('auto', 'name', 'rate'), default='auto')
    p.add_argument('--rate-hz', type=float, default=10.0)
    p.add_argument('--start-ns', type=int, default=DEFAULT_START_NS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='metric3d_bag', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='source', required=True)
    rig = sub.add_parser('rig', help='cameras of a rig.json with one image folder per camera')
    rig.add_argument('--rig-json', required=True, type=Path)
    rig.add_argument('--root', type=Path, help='folder holding the camera folders (default: beside rig.json)')
    rig.add_argument('--cameras', help='comma-separated camera names (default: all)')
    rig.add_argument('--depth-scale', type=float, default=256.0, help='depth PNG value per metre')
    rig.add_argument('--image-regex', default=r'(?P<key>\d+)\.(jpg|jpeg|png)')
    rig.add_argument('--depth-template', default='{key}_depth.png')
    _add_common(rig)
    cam = sub.add_parser('camera', help='one camera: an image folder or file plus fx, fy, cx, cy')
    cam.add_argument('--name', required=True)
    cam.add_argument('--images', required=True, type=Path)
    for key in ('fx', 'fy', 'cx', 'cy'):
        cam.add_argument(f'--{key}', required=True, type=float, help=f'{key} in pixels')
    cam.add_argument('--depth-scale', type=float, default=None,
                     help=f'depth PNG value per metre (default {CAMERA_DEPTH_SCALE:g}); needs '
                          '--depth-template')
    cam.add_argument('--image-regex', default=r'(?P<key>.+)\.(jpg|jpeg|png)',
                     help='camera image file names (its key group is the frame id); a depth PNG (16-bit '
                          'single-channel) among the matches is an error')
    cam.add_argument('--depth-template', default=None,
                     help="ground-truth depth file of frame {key}, e.g. '{key}_depth.png' (default: no "
                          'depth)')
    _add_common(cam)
    preset = sub.add_parser('preset', help='a shared data set: nyu, kitti or ddad')
    preset.add_argument('name', choices=sorted(PRESETS))
    preset.add_argument('--data-root', required=True, type=Path,
                        help='folder holding nyu/, kitti/, ddad_rig/')
    _add_common(preset)
    syn = sub.add_parser('synthetic', help='the synthetic 3-camera room (exact depth)')
    syn.add_argument('--frames', type=int, default=5)
    syn.add_argument('--seed', type=int, default=0)
    _add_common(syn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.source == 'camera' and args.depth_scale is not None and args.depth_template is None:
        parser.error('argument --depth-scale: not allowed without --depth-template (without a template the '
                     'bag holds no ground-truth depth to scale)')
    try:
        options = BagOptions(args.storage, args.image_format, args.jpeg_quality, args.distro, args.overwrite)
        if args.source == 'synthetic':
            config = SceneConfig(seed=args.seed, rate_hz=args.rate_hz, start_stamp_ns=args.start_ns)
            summary = write_synthetic_bag(args.output, config, args.frames, options)
        else:
            if args.source == 'rig':
                names = [n.strip() for n in args.cameras.split(',')] if args.cameras else None
                cameras = cameras_from_rig(args.rig_json, args.root, names, args.depth_scale,
                                           args.image_regex, args.depth_template)
            elif args.source == 'camera':
                intr = Intrinsics(args.fx, args.fy, args.cx, args.cy)
                depth_scale = CAMERA_DEPTH_SCALE if args.depth_scale is None else args.depth_scale
                cameras = [camera_from_folder(args.name, args.images, intr, depth_scale,
                                              args.image_regex, args.depth_template)]
            else:
                cameras = cameras_from_preset(args.name, args.data_root)
            summary = write_camera_bag(args.output, cameras, options, args.stamps, args.rate_hz,
                                       args.start_ns)
    except ValueError as exc:
        print(f'metric3d_bag: error: {exc}', file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
