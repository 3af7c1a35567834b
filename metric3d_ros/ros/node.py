"""The Metric3D depth node: rclpy lifecycle node ``metric3d_depth``, console script ``depth_node``.

Lifecycle (this file is lifecycle and wiring only; the work is in ``ros.layout``):

- *configure*: read and validate the parameters (``params.py``), resolve every camera's topic names
  (namespace and remappings), build the process layout (``process_layout``: ``in_process`` or
  ``group_workers``) and let it build each camera group's engine on its device (weights, warm-up). A
  problem fails the transition with a message that says what to change.
- *activate*: the groups create their output publishers, batching workers and subscriptions
  (``<cam>/image`` or ``<cam>/image/compressed``, and ``<cam>/camera_info``); /diagnostics starts.
- *deactivate*: the groups stop receiving and destroy their publishers.
- *cleanup*: the layout closes the engines (and worker processes).
- ``autostart`` (default true): configure and activate at start-up for plain ``ros2 run`` use.

A camera group (``ros.layout.group.CameraGroup``) pairs images with CameraInfo, batches frames across its
cameras into one inference and publishes each camera's outputs in stamp order with the input image's stamp
and frame_id. Outputs without subscribers are not computed; a camera none of whose outputs has a
subscriber costs no inference. Bad input drops the frame with a reason: counted, shown in /diagnostics,
logged at most once per ``log_throttle_s`` per reason and camera; never a crash, never an output computed
from it.
"""
from __future__ import annotations

import signal
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.parameter import Parameter

from metric3d_ros.core.outputs import OUTPUTS
from metric3d_ros.ros.diagnostics import (
    NodeExtras,
    camera_status,
    diagnostic_array,
    engine_status,
    status_line,
)
from metric3d_ros.ros.fused import FUSED_TOPIC
from metric3d_ros.ros.layout import CameraTopics, Layout, make_layout
from metric3d_ros.ros.params import (
    SPECS,
    ConfigError,
    NodeConfig,
    declare_extrinsics,
    declare_parameters,
    read_node_config,
    unknown_overrides,
)
from metric3d_ros.ros.publishers import output_topics
from metric3d_ros.ros.qos import diagnostics_qos
from metric3d_ros.ros.timers import steady_timer

try:  # rclpy >= Humble; guarded so that an older rclpy still gets a clean exit on Ctrl-C
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    class ExternalShutdownException(Exception):  # noqa: N818 - mirrors rclpy's name
        """Stand-in for rclpy.executors.ExternalShutdownException."""

NODE_NAME = 'metric3d_depth'
SYNTHETIC_WEIGHTS = 'synthetic'
SYNTHETIC_WARNING = ("weights: synthetic -- THE DEPTH IS MEANINGLESS: deterministic fake weights for tests "
                     "and benchmarks. Set weights to a checkpoint path or '' (the official checkpoint) for "
                     "real depth.")


class DepthNode(LifecycleNode):
    """Metric depth for several cameras with cross-camera batching (see the module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self._startup_problems: dict[str, str] = {}
        for problem in declare_parameters(self):
            self._startup_problems[problem.split(':', 1)[0]] = problem
        try:  # extrinsics.<camera>.* of the cameras given at start-up (configure declares later ones)
            cameras = self.get_parameter('cameras').value
        except ParameterUninitializedException:  # unset in a params file: configure names it
            cameras = ()
        declare_extrinsics(self, cameras if isinstance(cameras, (list, tuple)) else ())
        unknown = unknown_overrides(self)
        if unknown:
            self.get_logger().warning(
                f'ignoring parameter(s) {", ".join(unknown)}: not parameters of this node (a typo in a '
                'params file or a launch file?); docs/NODE.md lists the parameters')
        self._config: NodeConfig | None = None
        self._layout: Layout | None = None
        self._diag_pub = None
        self._diag_timer = None
        self._status_timer = None
        self._state = 'unconfigured'
        self.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def state(self) -> str:
        """'unconfigured', 'inactive' or 'active' (as far as this node's resources are concerned)."""
        return self._state

    @property
    def config(self) -> NodeConfig | None:
        return self._config

    @property
    def layout(self) -> Layout | None:
        return self._layout

    @property
    def engine(self):
        """The engine of the first camera group running in this process (None with group workers)."""
        engines = self._layout.engines() if self._layout is not None else []
        return engines[0] if engines else None

    def autostart(self) -> bool:
        """Configure and activate through the lifecycle state machine; True when active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params) -> SetParametersResult:
        names = [p.name for p in params if p.name in SPECS or p.name.startswith('extrinsics.')]
        deleted = [p.name for p in params if p.name in SPECS and p.type_ == Parameter.Type.NOT_SET]
        if deleted:
            return SetParametersResult(
                successful=False,
                reason=(f'{", ".join(deleted)}: the parameters of this node cannot be deleted (configure '
                        'reads every one); set a value instead (ros2 param set)'),
            )
        if names and self._state != 'unconfigured':
            return SetParametersResult(
                successful=False,
                reason=(f'{", ".join(names)}: parameters are read at configure; deactivate and clean up the '
                        'node, set them, then configure again'),
            )
        for name in names:
            self._startup_problems.pop(name, None)
        return SetParametersResult(successful=True)

    def camera_topics(self, config: NodeConfig) -> dict[str, CameraTopics]:
        """Every camera's resolved input and output topic names."""
        resolve = self.resolve_topic_name
        return {cam: CameraTopics(
            image=resolve(f'{cam}/image'), compressed=resolve(f'{cam}/image/compressed'),
            camera_info=resolve(f'{cam}/camera_info'),
            outputs={key: resolve(topic) for key, topic in output_topics(cam, OUTPUTS).items()})
            for cam in config.cameras}

    def fused_topics(self, config: NodeConfig) -> dict[str, str]:
        """Group name -> resolved ``fused_points`` topic: ``<ns>/fused_points`` with one camera group,
        ``<ns>/<group>/fused_points`` with several (each group fuses its own batches); empty when
        ``fused.enabled`` is false."""
        if config.fused is None:
            return {}
        if len(config.groups) == 1:
            return {config.groups[0].name: self.resolve_topic_name(FUSED_TOPIC)}
        return {g.name: self.resolve_topic_name(f'{g.name}/{FUSED_TOPIC}') for g in config.groups}

    # ------------------------------------------------------------------------------------- transitions
    def on_configure(self, state) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            config = read_node_config(self, list(self._startup_problems.values()))
        except ConfigError as exc:
            log.error(f'configure failed: {exc}\nFix these parameters and configure again.')
            return TransitionCallbackReturn.FAILURE
        except Exception as exc:  # noqa: BLE001 - never a bare "lifecycle error"
            log.error(f'configure failed: reading the parameters raised {exc!r}; check the parameter it '
                      'names (ros2 param get / describe) and configure again')
            return TransitionCallbackReturn.FAILURE
        try:
            layout = make_layout(self, config, self.camera_topics(config), OUTPUTS, self.fused_topics(config))
            layout.configure()
        except Exception as exc:  # noqa: BLE001 - any failure to load must fail configure, not crash
            log.error(f'configure failed: {config.engine.backend!r} engine, variant {config.engine.variant}, '
                      f'process_layout {config.process_layout}: {exc}')
            return TransitionCallbackReturn.FAILURE
        self._config, self._layout, self._state = config, layout, 'inactive'
        groups = ', '.join(f'{g.name} {list(g.cameras)} on {g.device}' for g in config.groups)
        log.info(f'configured: {config.process_layout}, groups {groups}, backend {config.engine.backend}, '
                 f'variant {config.engine.variant}, network {config.engine.net_width_px}x'
                 f'{config.engine.net_height_px}, max batch {config.scheduler.max_batch_size}')
        if config.engine.weights == SYNTHETIC_WEIGHTS:
            log.warning(SYNTHETIC_WARNING)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        try:
            if self._layout is None or self._config is None:
                raise RuntimeError('activate before configure')
            self._layout.activate()
            self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', diagnostics_qos())
            # steady: /diagnostics keeps its period when ROS time (use_sim_time) pauses or crawls
            self._diag_timer = steady_timer(self, self._config.diagnostics_period_s,
                                            self._publish_diagnostics)
            if self._config.status_log_period_s > 0.0:
                self._status_timer = steady_timer(self, self._config.status_log_period_s, self.log_status)
            self._state = 'active'
        except Exception as exc:  # noqa: BLE001 - report and stay inactive
            self.get_logger().error(f'activate failed: {exc}')
            self._deactivate()
            return TransitionCallbackReturn.FAILURE
        outputs = self.camera_topics(self._config)
        first = next(iter(outputs.values()))
        self.get_logger().info(
            f'active: {len(self._config.cameras)} camera(s); publishing on <camera>/depth/image and the '
            f'other outputs once they have subscribers, e.g. {first.outputs["depth"]} (input {first.image}); '
            'see them with: ros2 topic list'
            + (f'; fused cloud on {", ".join(self.fused_topics(self._config).values())}'
               if self._config.fused is not None else ''))
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.release()
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        self.get_logger().error('lifecycle error: releasing everything and returning to unconfigured')
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Deactivate and clean up whatever is active or configured (also used at exit)."""
        self._deactivate()
        self._cleanup()

    def _deactivate(self) -> None:
        if self._layout is not None:
            self._layout.deactivate()
        for timer in (self._diag_timer, self._status_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._diag_timer = self._status_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if self._state == 'active':
            self._state = 'inactive'

    def _cleanup(self) -> None:
        layout, self._layout = self._layout, None
        self._config = None
        self._state = 'unconfigured'
        if layout is not None:
            try:
                layout.close()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                self.get_logger().error(f'closing the process layout raised: {exc!r}')

    # ------------------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        try:
            msg = self.diagnostics_message()
            if msg is not None and self._diag_pub is not None:
                self._diag_pub.publish(msg)
        except Exception as exc:  # noqa: BLE001 - diagnostics must not take the node down
            self.get_logger().error(f'publishing diagnostics failed: {exc!r}')

    def log_status(self) -> None:
        """Log one INFO line per camera (``status_line``); every ``status_log_period_s`` while active."""
        try:
            layout = self._layout
            if layout is None or self._state != 'active':
                return
            for report in layout.reports():
                for snap, extras in report.cameras:
                    self.get_logger().info(status_line(snap, extras))
        except Exception as exc:  # noqa: BLE001 - the status log must not take the node down
            self.get_logger().error(f'logging the status failed: {exc!r}')

    def diagnostics_message(self):
        """The DiagnosticArray for now (None before activation): one status per camera, one per group."""
        layout, config = self._layout, self._config
        if layout is None or config is None or self._state != 'active':
            return None
        name = self.get_fully_qualified_name()
        engine_cfg = config.engine
        reports = layout.reports()
        statuses = []
        for report in reports:
            title = name if len(reports) == 1 else f'{name} {report.name}'
            extras = NodeExtras(state=report.state if not report.error else f'{report.state}: {report.error}',
                                values={
                'group': report.name,
                'cameras': ','.join(next((g.cameras for g in config.groups if g.name == report.name), ())),
                'process_layout': config.process_layout, 'backend': engine_cfg.backend,
                'variant': engine_cfg.variant, 'device': report.device,
                'net_size_px': f'{engine_cfg.net_width_px}x{engine_cfg.net_height_px}',
                'max_batch_size': str(config.scheduler.max_batch_size),
                'max_wait_ms': f'{config.scheduler.max_wait_ms:g}',
                'worker_restarts': str(report.restarts), 'drops_worker_died': str(report.lost),
                **report.timing, **report.fused})
            statuses.append(engine_status(title, report.batch, list(report.cameras), extras,
                                          failed=report.error))
        for report in reports:
            statuses.extend(camera_status(name, snap, extras) for snap, extras in report.cameras)
        return diagnostic_array(self.get_clock().now().to_msg(), statuses)


def _autostart(node: DepthNode) -> bool:
    """``node.autostart()``; False instead of rclpy's error when the context was shut down meanwhile (Ctrl-C
    during start-up: Jazzy's lifecycle state machine raises RCLError publishing the transition)."""
    try:
        return node.autostart()
    except Exception:
        if rclpy.ok():
            raise
        return False


USAGE = """usage: depth_node [-h] [--ros-args --params-file FILE [-p NAME:=VALUE ...] [-r __ns:=/NAMESPACE]]

Metric3D v2 metric depth for several cameras (ROS 2 lifecycle node {node}).

  ros2 launch metric3d_ros depth.launch.py params_file:=FILE [namespace:=NS] [camera_topics:=...]
  ros2 run metric3d_ros depth_node --ros-args --params-file FILE
  depth_node --ros-args --params-file config/depth.yaml -p backend:=fake   (no weights needed)

Per camera NAME it reads NAME/image (or NAME/image/compressed) and NAME/camera_info and publishes
NAME/depth/image, NAME/depth/camera_info, NAME/points, NAME/normals/image, NAME/confidence/image and
/diagnostics. With weights "" the official checkpoint is downloaded once into the cache at configure.

Parameters (default; constraints; [read-only] = only at start-up):
{parameters}
  extrinsics.NAME.parent_frame, extrinsics.NAME.translation_m, extrinsics.NAME.rotation_xyzw (unset)
      static extrinsics of camera NAME's optical frame in fused.base_frame, for fused_points

Docs: docs/NODE.md (topics, QoS, lifecycle, Fast DDS profile), config/depth.yaml (every parameter, commented).
"""


def usage() -> str:
    """The ``depth_node --help`` text: how to run it and every parameter with its default and range."""
    lines = []
    for spec in SPECS.values():
        limits = []
        if spec.choices:
            limits.append('one of ' + '|'.join(spec.choices))
        if spec.int_range is not None:
            limits.append(f'{spec.int_range[0]}..{spec.int_range[1]}')
        if spec.float_range is not None:
            limits.append(f'{spec.float_range[0]:g}..{spec.float_range[1]:g}')
        if spec.read_only:
            limits.append('[read-only]')
        head = f'  {spec.name} ({spec.default!r}' + (f'; {", ".join(limits)}' if limits else '') + ')'
        lines.append(f'{head}\n      {spec.description}')
    return USAGE.format(node=NODE_NAME, parameters='\n'.join(lines))


def _wants_help(args: list[str]) -> bool:
    """-h/--help among the arguments before ``--ros-args`` (after it they belong to ROS)."""
    own = args[:args.index('--ros-args')] if '--ros-args' in args else args
    return any(a in ('-h', '--help') for a in own)


def main(args: list[str] | None = None) -> int:
    """Console entry point ``depth_node``: ``depth_node --ros-args --params-file config/depth.yaml``;
    ``depth_node --help`` prints the usage and every parameter and exits 0 without starting the node."""
    if _wants_help(list(sys.argv[1:] if args is None else args[1:])):
        print(usage())
        return 0
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = DepthNode()
        # SingleThreadedExecutor: callbacks only convert and enqueue; inference has its own thread.
        # (rclpy.experimental.EventsExecutor hung in our tests with this node; MultiThreadedExecutor is
        # slower for image traffic.)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if node.get_parameter('autostart').value and not _autostart(node):
            if rclpy.ok():
                node.get_logger().fatal('autostart: configure/activate failed (see the errors above); exit')
                code = 1
            else:  # Ctrl-C (or an external shutdown) during start-up: a requested exit, not a failure
                node.get_logger().info('shutdown requested during start-up; exiting')
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:  # Ctrl-C shut the context down while spin built its wait set: rclpy raises RCLError
        if rclpy.ok():
            raise
    finally:
        # a second Ctrl-C (terminal and launch both send one) must not cut the release of the camera groups
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if node is not None:
            node.release()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == '__main__':
    sys.exit(main())
