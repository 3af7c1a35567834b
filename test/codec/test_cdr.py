"""codec/cdr.py: the CDR byte format by hand, ``read_header`` of every message kind, bad bytes."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from metric3d_ros.codec.camera_info import camera_info_cdr
from metric3d_ros.codec.cdr import CdrError, CdrReader, read_header, split_stamp_ns
from metric3d_ros.codec.cloud import pointcloud2_cdr
from metric3d_ros.codec.compressed import compressed_cdr
from metric3d_ros.codec.image import image_cdr, read_image_cdr
from metric3d_ros.core.geometry.camera_info import CameraInfoFields
from metric3d_ros.core.geometry.intrinsics import Intrinsics

STAMP_NS = 1_234_567_999_999_999


def _every_kind(stamp_ns: int, frame_id: str) -> dict[str, bytes]:
    info = CameraInfoFields.from_intrinsics(Intrinsics(5.0, 5.0, 2.0, 1.5), 4, 3)
    return {
        'image': image_cdr(np.zeros((3, 4), np.float32), '32FC1', stamp_ns, frame_id),
        'compressed': compressed_cdr(np.zeros((3, 4, 3), np.uint8), stamp_ns, frame_id, format='png'),
        'camera_info': camera_info_cdr(info, stamp_ns, frame_id),
        'cloud': pointcloud2_cdr(np.zeros((3, 4, 3), np.float32), stamp_ns, frame_id),
    }


def test_image_bytes_match_the_hand_computed_layout():
    raw = image_cdr(np.array([[0x0102, 0x0304]], dtype=np.uint16), '16UC1', 3_000_000_007, 'ab')
    want = (b'\x00\x01\x00\x00'                      # encapsulation: CDR little endian
            + struct.pack('<iI', 3, 7)              # stamp sec, nanosec
            + struct.pack('<I', 3) + b'ab\x00'      # frame_id (length counts the NUL)
            + b'\x00'                               # align to 4 (offset 15 -> 16)
            + struct.pack('<II', 1, 2)              # height, width
            + struct.pack('<I', 6) + b'16UC1\x00'   # encoding
            + b'\x00'                               # is_bigendian (offset 34)
            + b'\x00'                               # align to 4 (offset 35 -> 36)
            + struct.pack('<I', 4)                  # step
            + struct.pack('<I', 4) + bytes([0x02, 0x01, 0x04, 0x03]))  # data, little endian
    assert raw == want


def test_float64_values_are_aligned_to_eight_bytes():
    info = CameraInfoFields.from_intrinsics(Intrinsics(5.0, 5.0, 2.0, 1.5), 4, 3, distortion_model='abc')
    raw = camera_info_cdr(info, 0, '')
    # header 4 + 4 + (4 + 1) = 13 -> height at 16, width 20, model at 24: 4 + 4 = 32, d count 32..36,
    # d's first double aligned from 36 to 40 (payload offsets, after the 4-byte encapsulation header).
    assert struct.unpack_from('<I', raw, 4 + 32)[0] == 5
    assert raw[4 + 36:4 + 40] == b'\x00' * 4
    assert struct.unpack_from('<5d', raw, 4 + 40) == info.d
    assert struct.unpack_from('<9d', raw, 4 + 80) == info.k


@pytest.mark.parametrize('frame_id', ['', 'a', 'cam_front_optical_frame', 'kamera_ö'])
def test_read_header_of_every_kind(frame_id):
    for kind, raw in _every_kind(STAMP_NS, frame_id).items():
        assert read_header(raw) == (STAMP_NS, frame_id), kind
        assert read_header(memoryview(raw)) == (STAMP_NS, frame_id), kind
        assert read_header(bytearray(raw)) == (STAMP_NS, frame_id), kind


def test_stamps_split_into_sec_and_nanosec():
    assert split_stamp_ns(1_234_567_890_123_456_789) == (1_234_567_890, 123_456_789)
    assert split_stamp_ns(0) == (0, 0)
    with pytest.raises(CdrError, match='stamps must be'):
        split_stamp_ns(-1)
    with pytest.raises(CdrError, match='stamps must be'):
        split_stamp_ns(2**31 * 1_000_000_000)
    with pytest.raises(CdrError, match='stamps must be'):
        image_cdr(np.zeros((1, 1), np.uint8), 'mono8', -1, 'f')


def test_big_endian_encapsulation_is_read():
    payload = struct.pack('>iI', 12, 34) + struct.pack('>I', 4) + b'cam\x00'
    assert read_header(b'\x00\x00\x00\x00' + payload) == (12_000_000_034, 'cam')
    assert CdrReader(b'\x00\x00\x00\x00' + payload).big_endian


def test_truncated_and_foreign_bytes_are_rejected():
    raw = image_cdr(np.zeros((4, 4), np.float32), '32FC1', STAMP_NS, 'x')
    with pytest.raises(CdrError, match='truncated'):
        read_image_cdr(raw[:-3])
    with pytest.raises(CdrError, match='truncated'):
        read_header(raw[:10])
    with pytest.raises(CdrError, match='not a plain CDR message'):
        read_image_cdr(b'\x00\x07\x00\x00' + raw[4:])  # XCDR2 / other encapsulations
    with pytest.raises(CdrError, match='not a plain CDR message'):
        read_header(b'\x00')
    with pytest.raises(CdrError, match='bytes-like'):
        read_header('not bytes')
    no_nul = bytearray(raw)
    no_nul[4 + 13] = ord('y')  # the frame_id's terminating NUL (payload bytes 12, 13: 'x', NUL)
    with pytest.raises(CdrError, match='malformed string'):
        read_header(bytes(no_nul))
