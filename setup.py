"""metric3d_ros: ament_python package, also pip-installable without ROS."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'metric3d_ros'

# The PyPI ROS 2 wheels (Kilted). Never needed on a system ROS install, where
# rclpy and the message packages come from the distribution.
ROS_WHEELS = [
    'ros-rclpy[fastrtps]',
    'ros-sensor-msgs',
    'ros-std-msgs',
    'ros-diagnostic-msgs',
    'ros-lifecycle-msgs',
    'ros-rcl-interfaces',
]

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml') + glob('config/*.rviz')),
    ],
    python_requires='>=3.10',
    install_requires=['setuptools', 'numpy', 'opencv-python-headless', 'pyyaml'],
    extras_require={
        # torch is listed separately so that setup scripts can pin the CPU build first.
        'torch': ['torch>=2.1'],
        'ros': ROS_WHEELS,
        'onnx': ['onnx>=1.15', 'onnxruntime>=1.17'],
        'bags': ['rosbags>=0.10'],
        'dev': [
            'torch>=2.1', 'rosbags>=0.10', 'pytest>=7', 'ruff>=0.4', 'matplotlib',
            'psutil',  # the launch and soak tests watch processes and their memory
            # colcon from PyPI: the tests build the package as an ament_python workspace;
            # package-selection for --packages-select, bash for install/setup.bash.
            'colcon-core', 'colcon-ros', 'colcon-python-setup-py', 'colcon-package-selection', 'colcon-bash',
        ],
    },
    zip_safe=True,
    maintainer='metric3d_ros maintainers',
    maintainer_email='maintainers@metric3d-ros.invalid',
    description='Real-time multi-camera metric depth (Metric3D v2) for ROS 2.',
    license='BSD-2-Clause',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'depth_node = metric3d_ros.ros.node:main',
            'metric3d_bench = metric3d_ros.tools.bench:main',
            'metric3d_export = metric3d_ros.tools.export:main',
            'metric3d_eval = metric3d_ros.tools.evaluate:main',
            'metric3d_play = metric3d_ros.tools.play:main',
            'metric3d_bag = metric3d_ros.tools.bag_builder:main',
            'metric3d_demo = metric3d_ros.tools.demo:main',
            'metric3d_camera_sim = metric3d_ros.tools.camera_sim:main',
            'metric3d_node_bench = metric3d_ros.tools.node_bench:main',
            'metric3d_fused_bench = metric3d_ros.tools.fused_bench:main',
        ],
    },
)
