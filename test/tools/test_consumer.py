"""The benchmark's consumer process: the stamp read from serialized bytes and its configuration."""
from __future__ import annotations

import struct

import pytest

from metric3d_ros.codec.cdr import read_header
from metric3d_ros.tools.consumer import ConsumerConfig, TopicRecord, parse_args


@pytest.mark.ros
@pytest.mark.parametrize('type_name', ['Image', 'PointCloud2', 'CameraInfo'])
@pytest.mark.parametrize('frame_id', ['', 'cam0_optical_frame'])
def test_stamp_from_serialized_header(type_name, frame_id):
    pytest.importorskip('rclpy')
    from rclpy.serialization import serialize_message
    from sensor_msgs import msg as sensor_msgs

    msg = getattr(sensor_msgs, type_name)()
    msg.header.stamp.sec = 1795300827
    msg.header.stamp.nanosec = 478474983
    msg.header.frame_id = frame_id
    assert read_header(serialize_message(msg))[0] == 1795300827_478474983


def test_stamp_big_endian_and_too_short():
    raw = b'\x00\x00\x00\x00' + struct.pack('>iII', 12, 345, 1) + b'\x00' + b'\x00' * 3
    assert read_header(raw) == (12_000_000_345, '')
    assert read_header(memoryview(raw))[0] == 12_000_000_345
    with pytest.raises(ValueError):
        read_header(raw[:11])


def test_record_keeps_stamp_receive_and_size_and_counts_bad_messages():
    rec = TopicRecord('Image')
    on_message = rec.callback()
    on_message(b'\x00\x01\x00\x00' + struct.pack('<iII', 3, 4, 1) + b'\x00' * 16)  # frame_id ''
    on_message(b'\x00\x01')
    assert rec.stamp_ns == [3_000_000_004] and rec.size == [32] and len(rec.receive_ns) == 1 and rec.bad == 1
    assert set(rec.to_json()) == {'type', 'stamp_ns', 'receive_ns', 'size', 'bad'}


def test_config_checks():
    with pytest.raises(ValueError, match='at least one'):
        ConsumerConfig(topics=())
    with pytest.raises(ValueError, match='unknown message types'):
        ConsumerConfig(topics=(('a', 'Imag'),))
    with pytest.raises(ValueError, match='reliability'):
        ConsumerConfig(topics=(('a', 'Image'),), reliability='sometimes')
    with pytest.raises(ValueError, match='executor'):
        ConsumerConfig(topics=(('a', 'Image'),), executor='multi')
    config, report = parse_args(['--topic', 'cam0/points:PointCloud2', '--depth', '3', '--report', '-'])
    assert config.topics == (('cam0/points', 'PointCloud2'),) and config.depth == 3 and report == '-'
    assert config.executor == 'events' and config.reliability == 'reliable'
