"""metric3d_bag: bags from the shared data sets, from a single camera, and from the synthetic scene."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from metric3d_ros.codec.camera_info import camera_info_from_msg
from metric3d_ros.codec.cdr import stamp_ns_of
from metric3d_ros.codec.compressed import compressed_from_msg, compressed_to_rgb8
from metric3d_ros.codec.image import image_from_msg, image_to_depth_m, image_to_rgb8
from metric3d_ros.core.geometry.intrinsics import Intrinsics
from metric3d_ros.core.synthetic_scene import CameraSpec, SceneConfig, render_sequence
from metric3d_ros.tools import bag_builder as bb
from metric3d_ros.tools.bagio import BagReader, typestore


def _read(path: Path) -> dict[str, list]:
    """topic -> [(log time, rosbags message object)] (read with the codec's duck-typed readers)."""
    out: dict[str, list] = {}
    store = typestore()
    with BagReader(path) as r:
        for m in r.messages():
            out.setdefault(m.topic, []).append((m.log_time_ns, store.deserialize_cdr(m.data, m.msgtype)))
    return out


def test_stamps_from_file_ids():
    # DDAD ids have 17 digits: 100 ns ticks (1556919593.841523 s, May 2019).
    assert bb.stamp_from_id('15569195938415230') == 1_556_919_593_841_523_000
    assert bb.stamp_from_id('1556919593841523') == 1_556_919_593_841_523_000  # microseconds
    assert bb.stamp_from_id('1556919593841523000') == 1_556_919_593_841_523_000  # nanoseconds
    assert bb.stamp_from_id('1556919593') == 1_556_919_593_000_000_000  # seconds
    assert bb.stamp_from_id('0000000005') is None  # KITTI frame index, not a time
    assert bb.stamp_from_id('rgb_00000') is None
    assert bb.assign_stamps(['0000000005', '0000000006'], 'auto', 10.0, 100) == [100, 100_000_100]
    assert bb.assign_stamps(['1556919593', '1556919594'], 'auto', 10.0, 0) == [
        1_556_919_593_000_000_000, 1_556_919_594_000_000_000]
    with pytest.raises(ValueError, match='not epoch times'):
        bb.assign_stamps(['5'], 'name', 10.0, 0)
    with pytest.raises(ValueError, match='rate_hz'):
        bb.assign_stamps(['5'], 'rate', 0.0, 0)


@pytest.mark.parametrize(('preset', 'scale', 'fx'), [('nyu', 1000.0, 518.8579), ('kitti', 256.0, 721.5377)])
def test_single_frame_presets(tmp_path, shared_dir, preset, scale, fx):
    data = shared_dir / 'data'
    cams = bb.cameras_from_preset(preset, data)
    bb.write_camera_bag(tmp_path / preset, cams, bb.BagOptions(storage='mcap'))
    topics = _read(tmp_path / preset)
    assert set(topics) == {f'/{preset}/image', f'/{preset}/camera_info', f'/{preset}/depth_gt'}
    frame = cams[0].frames[0]
    (_, img), = topics[f'/{preset}/image']
    (_, info), = topics[f'/{preset}/camera_info']
    (_, gt), = topics[f'/{preset}/depth_gt']
    expected_rgb = cv2.cvtColor(cv2.imread(str(frame.image_path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(image_to_rgb8(image_from_msg(img)), expected_rgb)
    raw = cv2.imread(str(frame.depth_path), cv2.IMREAD_UNCHANGED)
    depth = image_to_depth_m(image_from_msg(gt))
    assert np.array_equal(np.isnan(depth), raw == 0)
    np.testing.assert_allclose(depth[raw > 0], raw[raw > 0] / scale, rtol=1e-6)
    fields = camera_info_from_msg(info)
    assert fields.k[0] == fx and (fields.width, fields.height) == expected_rgb.shape[1::-1]
    assert img.header.frame_id == gt.header.frame_id == info.header.frame_id == f'{preset}_optical_frame'
    assert stamp_ns_of(img.header) == stamp_ns_of(gt.header) == bb.DEFAULT_START_NS


def test_ddad_rig_bag(tmp_path, shared_dir):
    rig_dir = shared_dir / 'data' / 'ddad_rig'
    rig = json.loads((rig_dir / 'rig.json').read_text())['cameras']
    cams = bb.cameras_from_preset('ddad', shared_dir / 'data')
    summary = bb.write_camera_bag(tmp_path / 'ddad', cams, bb.BagOptions(image_format='jpeg'))
    assert summary['cameras'] == ['CAMERA_01', 'CAMERA_05', 'CAMERA_06']
    topics = _read(tmp_path / 'ddad')
    expected_stamps = [1_556_919_593_841_523_000, 1_556_919_593_941_523_000, 1_556_919_594_041_524_200]
    log_times = []
    for cam in summary['cameras']:
        infos = topics[f'/{cam}/camera_info']
        images = topics[f'/{cam}/image/compressed']
        gts = topics[f'/{cam}/depth_gt']
        assert [stamp_ns_of(m.header) for _, m in images] == expected_stamps
        assert [stamp_ns_of(m.header) for _, m in gts] == expected_stamps
        fields = camera_info_from_msg(infos[0][1])
        assert fields.k[0] == rig[cam]['fx'] and fields.k[2] == rig[cam]['cx']
        assert fields.k[4] == rig[cam]['fy'] and fields.k[5] == rig[cam]['cy']
        assert fields.p[0] == rig[cam]['fx'] and list(fields.d) == [float(v) for v in rig[cam]['D']]
        rgb = compressed_to_rgb8(compressed_from_msg(images[0][1]))
        assert rgb.shape == (rig[cam]['height'], rig[cam]['width'], 3)
        depth = image_to_depth_m(image_from_msg(gts[0][1]))
        valid = np.isfinite(depth)
        assert 0.001 < valid.mean() < 0.2  # sparse LiDAR
        assert images[0][1].header.frame_id == f'{cam}_optical_frame'
        log_times += [t for t, _ in images]
    with BagReader(tmp_path / 'ddad') as r:
        all_times = [m.log_time_ns for m in r.messages()]
    assert all_times == sorted(all_times)
    assert sorted(set(log_times)) == expected_stamps


def test_synthetic_bag_holds_exact_depth(tmp_path):
    cams = (CameraSpec('a', 32, 24, Intrinsics(30.0, 30.0, 15.5, 11.5)),
            CameraSpec('b', 40, 20, Intrinsics(25.0, 26.0, 19.0, 10.0), yaw_deg=90.0))
    cfg = SceneConfig(cameras=cams, rate_hz=20.0, start_stamp_ns=5_000)
    bb.write_synthetic_bag(tmp_path / 's', cfg, 2, bb.BagOptions(storage='mcap'))
    topics = _read(tmp_path / 's')
    views = [v for frame in render_sequence(cfg, 2) for v in frame]
    for view in views:
        def at_stamp(topic, stamp=view.stamp_ns):
            (msg,) = [m for _, m in topics[topic] if stamp_ns_of(m.header) == stamp]
            return msg

        gt = at_stamp(f'/{view.camera}/depth_gt')
        img = at_stamp(f'/{view.camera}/image')
        assert np.array_equal(image_to_depth_m(image_from_msg(gt)), view.depth_m)
        assert np.array_equal(image_to_rgb8(image_from_msg(img)), view.image_rgb)
    assert sorted({stamp_ns_of(m.header) for _, m in topics['/a/image']}) == [5_000, 50_005_000]


def test_camera_command_line(tmp_path, shared_dir, capsys):
    nyu = shared_dir / 'data' / 'nyu'
    out = tmp_path / 'cli'
    rc = bb.main(['camera', '--name', 'kinect', '--images', str(nyu / 'rgb_00000.jpg'), '--fx', '500',
                  '--fy', '501', '--cx', '320', '--cy', '240', '--depth-scale', '1000', '--image-regex',
                  r'rgb_(?P<key>\d+)\.jpg', '--depth-template', 'sync_depth_00000.png', '-o', str(out),
                  '--stamps', 'rate', '--start-ns', '42'])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary['topics']['kinect']['depth_gt'] == '/kinect/depth_gt'
    topics = _read(out)
    (_, info), = topics['/kinect/camera_info']
    assert camera_info_from_msg(info).k[:6] == (500.0, 0.0, 320.0, 0.0, 501.0, 240.0)
    assert stamp_ns_of(info.header) == 42
    assert '/kinect/depth_gt' in topics
    # Writing again needs --overwrite.
    assert bb.main(['preset', 'nyu', '--data-root', str(shared_dir / 'data'), '-o', str(out)]) == 2
    assert 'exists' in capsys.readouterr().err


def test_bad_sources_raise(tmp_path, shared_dir):
    rig = tmp_path / 'rig.json'
    rig.write_text(json.dumps({'cameras': {'cam': {'fx': 1, 'fy': 1, 'cx': 1, 'cy': 1, 'width': 10,
                                                   'height': 10}}}))
    (tmp_path / 'cam').mkdir()
    with pytest.raises(ValueError, match='no image'):
        bb.cameras_from_rig(rig)
    with pytest.raises(ValueError, match='not in'):
        bb.cameras_from_rig(rig, names=['other'])
    src = cv2.imread(str(shared_dir / 'data' / 'nyu' / 'rgb_00000.jpg'))
    cv2.imwrite(str(tmp_path / 'cam' / '1556919593.png'), src)
    cams = bb.cameras_from_rig(rig)
    with pytest.raises(ValueError, match='described'):
        bb.write_camera_bag(tmp_path / 'b', cams, bb.BagOptions())
    with pytest.raises(ValueError, match='uint16'):
        bb.read_depth_png(tmp_path / 'cam' / '1556919593.png', 256.0)
    with pytest.raises(ValueError, match='storage'):
        bb.BagOptions(storage='bag')
    with pytest.raises(ValueError, match='unknown preset'):
        bb.cameras_from_preset('tum', shared_dir / 'data')


def _mixed_folder(tmp_path: Path, shared_dir: Path) -> Path:
    """A folder like a data set's: camera images <k>.jpg and 16-bit depth PNGs <k>_depth.png side by side."""
    folder = tmp_path / 'mixed'
    folder.mkdir()
    rgb = cv2.imread(str(shared_dir / 'data' / 'nyu' / 'rgb_00000.jpg'))
    depth = cv2.imread(str(shared_dir / 'data' / 'nyu' / 'sync_depth_00000.png'), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and depth.ndim == 2
    for key in ('100', '101'):
        cv2.imwrite(str(folder / f'{key}.jpg'), rgb)
        cv2.imwrite(str(folder / f'{key}_depth.png'), depth)
    return folder


def test_is_depth_png_reads_the_header(tmp_path, shared_dir):
    folder = _mixed_folder(tmp_path, shared_dir)
    rgb_png = tmp_path / 'rgb.png'
    cv2.imwrite(str(rgb_png), cv2.imread(str(folder / '100.jpg')))
    mono8 = tmp_path / 'mono8.png'
    cv2.imwrite(str(mono8), np.zeros((4, 4), np.uint8))
    assert bb.is_depth_png(folder / '100_depth.png')
    assert not bb.is_depth_png(rgb_png)
    assert not bb.is_depth_png(mono8)
    assert not bb.is_depth_png(folder / '100.jpg')


def test_camera_refuses_depth_pngs_among_camera_images(tmp_path, shared_dir, capsys):
    folder = _mixed_folder(tmp_path, shared_dir)
    base = ['camera', '--name', 'cam', '--images', str(folder), '--fx', '500', '--fy', '500', '--cx', '320',
            '--cy', '240', '--stamps', 'rate']
    assert bb.main([*base, '-o', str(tmp_path / 'refused')]) == 2
    err = capsys.readouterr().err
    assert '100_depth.png' in err and 'depth images' in err and '--image-regex' in err
    assert not (tmp_path / 'refused').exists()
    # The single-file form refuses a depth PNG too.
    assert bb.main([*base[:4], str(folder / '100_depth.png'), *base[5:], '-o', str(tmp_path / 'one')]) == 2
    # With the depth template, the depth files are ground truth, not frames.
    out = tmp_path / 'ok'
    assert bb.main([*base, '--depth-template', '{key}_depth.png', '-o', str(out)]) == 0
    topics = _read(out)
    assert len(topics['/cam/image']) == 2 and len(topics['/cam/depth_gt']) == 2


def test_depth_scale_without_template_is_an_argument_error(tmp_path, shared_dir, capsys):
    nyu = shared_dir / 'data' / 'nyu'
    args = ['camera', '--name', 'cam', '--images', str(nyu / 'rgb_00000.jpg'), '--fx', '500', '--fy', '500',
            '--cx', '320', '--cy', '240', '--depth-scale', '1000', '-o', str(tmp_path / 'b')]
    with pytest.raises(SystemExit) as exc:
        bb.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert '--depth-scale' in err and '--depth-template' in err
    assert not (tmp_path / 'b').exists()


def test_depth_template_naming_no_file_is_an_error(tmp_path, shared_dir):
    folder = _mixed_folder(tmp_path, shared_dir)
    with pytest.raises(ValueError, match='names no file'):
        bb.camera_from_folder('cam', folder, Intrinsics(500, 500, 320, 240), 1000.0, r'(?P<key>\d+)\.jpg',
                              '{key}_gt.png')
