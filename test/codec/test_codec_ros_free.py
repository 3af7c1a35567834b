"""The codec is ROS-free: it imports numpy, OpenCV and metric3d_ros.core only (never rclpy, rosbags, message
packages, torch or the ros / tools layers), in its sources and at import."""
from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO_ROOT

CODEC = REPO_ROOT / 'metric3d_ros' / 'codec'
ALLOWED_TOP = {'__future__', 'struct', 'dataclasses', 'collections', 'numpy', 'cv2', 'metric3d_ros'}


def test_codec_sources_import_only_numpy_opencv_and_the_core():
    offenders = []
    sources = sorted(CODEC.rglob('*.py'))
    assert {p.name for p in sources} >= {'__init__.py', 'cdr.py', 'image.py', 'compressed.py',
                                         'camera_info.py', 'cloud.py'}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split('.')[0]
                internal_ok = name.startswith(('metric3d_ros.core', 'metric3d_ros.codec'))
                if top not in ALLOWED_TOP or (top == 'metric3d_ros' and not internal_ok):
                    offenders.append(f'{path.relative_to(REPO_ROOT)}: {name}')
    assert not offenders, 'the codec must stay ROS-free:\n' + '\n'.join(offenders)


def test_importing_the_codec_loads_no_ros_and_no_torch():
    code = (
        'import sys\n'
        'import metric3d_ros.codec.cdr, metric3d_ros.codec.image, metric3d_ros.codec.compressed\n'
        'import metric3d_ros.codec.camera_info, metric3d_ros.codec.cloud\n'
        'bad = sorted(m for m in sys.modules\n'
        '             if m.split(".")[0] in ("rclpy", "rosbags", "torch") or m.endswith("_msgs"))\n'
        'print(",".join(bad))\n'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT)
    assert out.stdout.strip() == '', f'importing the codec pulled in: {out.stdout.strip()}'
