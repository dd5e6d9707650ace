"""The policy node: latest camera frames + joint state -> Policy.infer -> safe, stamped trajectory.

The node is wiring over ROS-free parts that `evaluate` drives alike: the observation buffer
(observation.py), the Policy, a chunk executor (librobot_models.execution: `execution` =
receding, temporal_ensemble or rtc), the safety layer (librobot_models.safety: limits, max step
from the measured joints, ramp-in, latched e-stop) and the trajectory it publishes
(chunking.py). Subscriptions only store the newest message; inference runs on a thread of its
own, so a slow model never blocks the inputs (and no executor thread busy-waits on a timer whose
callback is still running, which starved inference of the GIL). The thread ticks at the control
rate and infers every `replan_steps` ticks; the ticks in between pass their observation to
Policy.observe for models with a history window (Octo). With `inference_trigger` frame (the
default) an inference waits for the first camera's next frame and runs on it at once, so an
observation is as old as its transport and the model, not that plus up to a tick.

Each plan goes to the joint_trajectory_controller as a JointTrajectory (stamped now, one point
per control period, velocities for cubic interpolation, ending at rest) and to ~/action_chunk.
A vehicle's wheel trajectory goes to its drive node, whose deadman wants a command more often
than a plan may come: between two inferences the node sends it again every period, while its
inputs are fresh.
Without a fresh, complete observation, or when the safety layer refuses a plan, the node sends
one hold. It is a lifecycle node (configure loads, activate commands, deactivate holds;
`autostart` does both at start-up); ~/estop (std_msgs/Bool topic, std_srvs/Trigger service)
latches an e-stop that only ~/release clears; `dry_run` computes without commanding.
`ros2 param set /policy checkpoint <dir>` (or `framework <name>` with a `models` directory)
loads a model in the background and swaps it in between two chunks. With `policy_endpoint`
(grpc://host:port or grpcs://, a `python -m librobot_models.serve` on a GPU box) the model runs
there instead: a call slower than `policy_timeout_s`, or a server that is gone, holds the arm,
and the node goes on as soon as the server answers again. /diagnostics reports the policy and
every input; ~/markers draws the end effector's path of each chunk for RViz.

    ros2 run librobot_policy_node policy_node --ros-args -p checkpoint:=/path/to/checkpoint
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
import time

import numpy as np

from diagnostic_msgs.msg import DiagnosticArray
from librobot_msgs.msg import ActionChunk, EpisodeEvent, PolicyStatus
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.images import decode_image
from librobot_drivers.kinematics import UrdfKinematics
from librobot_drivers.ros_common import EPISODE_EVENTS, LATCHED, run_node
from librobot_models.checkpoint import read_checkpoint_header
from librobot_models.execution import MODES, ChunkExecutor, make_executor
from librobot_models.safety import DEFAULT_MAX_STEP, SafetyFilter, SafetyLimits
from librobot_models.serving import PolicyUnavailable
from librobot_models.serving.client import SCHEMES, canonical_endpoint
from librobot_policy_node import diagnostics
from librobot_policy_node.loading import BackgroundLoader
from librobot_policy_node.markers import DEFAULT_REACH, chunk_markers
from librobot_policy_node.chunking import LatencyWindow, ScheduledChunk, schedule_chunk
from librobot_policy_node.observation import ObservationBuffer, ObservationNotReady

# The instruction also from publishers that do not latch (`ros2 topic pub`'s default QoS): a
# transient-local subscription never matches a volatile publisher, so a second one listens to them.
LIVE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)


def _integer(description: str, low: int, high: int) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description, integer_range=[IntegerRange(from_value=low, to_value=high, step=1)]
    )


def _seconds(description: str, low: float, high: float) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        floating_point_range=[FloatingPointRange(from_value=low, to_value=high, step=0.0)],
    )


TRIGGERS = ("frame", "timer")
FRESH_FRAME_S = 0.005  # a frame younger than this is fresh enough to infer on at once

# name -> (default, descriptor); ranges and read-only flags are enforced by rclpy on every set.
PARAMETERS = {
    "embodiment": ("so100", ParameterDescriptor(
        description="robot embodiment spec: a name (so100) or a YAML path", read_only=True)),
    "device": ("cpu", ParameterDescriptor(
        description="torch device the policy runs on (cpu, cuda, cuda:1)", read_only=True)),
    "checkpoint": ("", ParameterDescriptor(
        description="checkpoint directory; setting it loads the model in the background and swaps "
                    "it in at the next inference, the old model driving until then")),
    "models": ("", ParameterDescriptor(
        description="directory of checkpoints (one per subdirectory) that `framework` chooses from")),
    "framework": ("", ParameterDescriptor(
        description="load the checkpoint of this framework (act, pi0, ...) from `models`, live")),
    "policy_endpoint": ("", ParameterDescriptor(
        description="grpc://host:port or grpcs://host:port of a policy server (librobot_models.serve) "
                    "that runs the model instead of this node; the token comes from $"
                    + "LIBROBOT_POLICY_TOKEN; empty: the local checkpoint")),
    "policy_timeout_s": (0.5, _seconds(
        "a remote inference that takes longer holds the arm (the next one tries again)", 0.01, 60.0)),
    "policy_root_cert": ("", ParameterDescriptor(
        description="PEM root certificate a grpcs:// policy server is checked against (empty: the "
                    "system's)", read_only=True)),
    # Small policies on a CPU shared with the driver: one thread avoids OpenMP threads waiting on
    # each other (measured 7x slower steps with 2 threads on a busy 2-core CPU).
    "torch_threads": (1, _integer("CPU threads for inference (0: torch's default)", 0, 256)),
    "replan_steps": (4, _integer(
        "control periods between two inferences; fewer than the checkpoint's chunk length", 1, 1000)),
    "max_observation_age_s": (0.5, _seconds(
        "older camera or joint inputs: no new chunk, the arm holds", 0.001, 60.0)),
    "execution": ("receding", ParameterDescriptor(
        description="how overlapping chunks become the published trajectory: "
                    + ", ".join(MODES) + " (librobot_models.execution)",
        additional_constraints="one of " + ", ".join(MODES))),
    "inference_trigger": ("frame", ParameterDescriptor(
        description="frame: an inference that is due waits (up to one control period) for the "
                    "policy's first camera's next frame and runs on it at once, and the control "
                    "ticks follow from there; timer: inferences on the fixed tick schedule, on "
                    "the newest frame however old",
        additional_constraints="one of " + ", ".join(("frame", "timer")))),
    "max_step": (DEFAULT_MAX_STEP, _seconds(
        "rad: a plan whose first target is further than this from the measured joints is refused "
        "(a drive's speed channel is not checked: it is reached at its acceleration limit)",
        0.01, 10.0)),
    "ramp_in_s": (1.0, _seconds(
        "blend from the measured joints into the plans after activation and e-stop release",
        0.0, 30.0)),
    "dry_run": (False, ParameterDescriptor(
        description="compute and publish chunks on ~/action_chunk, command nothing")),
    "min_lead_s": (0.0, _seconds(
        "also drop the chunk's points due sooner than this after publishing (transport delay)",
        0.0, 10.0)),
    "autostart": (True, ParameterDescriptor(
        description="configure and activate at start-up (false: wait for `ros2 lifecycle set`)",
        read_only=True)),
}


class PolicyNode(LifecycleNode):
    """A managed node: configure loads the checkpoint, activate commands the robot (ramping in
    from where it is), deactivate holds it, cleanup unloads. With `autostart` (the default) it
    configures and activates itself."""

    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        values = {
            name: self.declare_parameter(name, default, descriptor).value
            for name, (default, descriptor) in PARAMETERS.items()
        }
        # the commanded joint groups: the policy's state and action (a humanoid's legs are held)
        self.spec = load_embodiment(values["embodiment"]).commanded()
        self.device = values["device"]
        self.torch_threads = values["torch_threads"]
        self.replan_steps = values["replan_steps"]
        self.max_age_s = values["max_observation_age_s"]
        self.min_lead_s = values["min_lead_s"]
        if values["execution"] not in MODES:
            raise ValueError(f"parameter execution = {values['execution']!r}: expected one of "
                             + ", ".join(MODES))
        self.execution = values["execution"]
        if values["inference_trigger"] not in TRIGGERS:
            raise ValueError(f"parameter inference_trigger = {values['inference_trigger']!r}: "
                             f"expected one of {', '.join(TRIGGERS)}")
        self.inference_trigger = values["inference_trigger"]
        # Every checkpoint runs at the embodiment's control rate (_checkpoint_problem), so one
        # executor serves every model; a new one when `execution` changes.
        self._executor: ChunkExecutor = make_executor(self.execution, self.spec.control_period)
        self.dry_run = values["dry_run"]
        self.safety = SafetyFilter(self._limits(values["max_step"]), values["ramp_in_s"])
        self.safety.activate()

        self.policy = None
        self.models = values["models"]
        self.policy_endpoint = values["policy_endpoint"]
        self.policy_timeout_s = values["policy_timeout_s"]
        self.policy_root_cert = values["policy_root_cert"] or None
        self._loader = BackgroundLoader(self._load_policy)
        self._threads_applied = -1  # torch_threads as last applied on the inference thread
        self._last_chunk: ScheduledChunk | None = None  # the chunk the controller follows
        self._holding = False
        self._sequence = 0
        self._latency = LatencyWindow()
        self._state, self._message = PolicyStatus.STATE_UNCONFIGURED, "no checkpoint loaded"
        self._observation_age_ms = 0.0
        self._buffer: ObservationBuffer | None = None
        self._period = 0.1  # s between ticks; the control period once loaded
        self._ticks_to_inference = 0  # ticks that only observe before the next inference
        self._frame_arrival: float | None = None  # monotonic s: the trigger camera's newest frame
        self._frame_event = threading.Event()
        self._reset_requested = False
        self._stop = threading.Event()
        self._command_lock = threading.Lock()  # e-stop and hold vs. publishing a chunk

        self._chunk_pub = self.create_publisher(ActionChunk, "~/action_chunk", 10)
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # RViz: each end effector's path for the current and the previous chunk, and the status,
        # once the robot_description (robot_state_publisher, latched) gives the kinematics.
        self._markers_pub = self.create_publisher(MarkerArray, "~/markers", 10)
        self._kinematics: UrdfKinematics | None = None
        self._reach = 0.0  # m, the farthest end effector from the description's root, at zero
        self._previous_paths: dict[str, np.ndarray] | None = None
        if self.spec.end_effector_links:
            self.create_subscription(String, "/robot_description", self._on_robot_description, LATCHED)
        self.create_subscription(
            JointState, self.spec.topic("joint_states"), self._on_joint_state,
            qos_profile_sensor_data,
        )
        for qos in (LATCHED, LIVE):
            self.create_subscription(String, self.spec.topic("instruction"), self._on_instruction, qos)
        self.create_subscription(
            EpisodeEvent, self.spec.topic("episode_events"), self._on_episode_event,
            EPISODE_EVENTS,
        )
        # Every camera of the robot; the buffer keeps those the loaded policy uses.
        for camera in self.spec.cameras:
            self.create_subscription(
                Image, camera.topic, lambda msg, cam=camera.name: self._put(cam, msg),
                qos_profile_sensor_data,
            )
        self._instruction = ""
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # The e-stop latches from a topic (any std_msgs/Bool true) or a service; only the release
        # service unlatches it.
        self.create_subscription(Bool, "~/estop", self._on_estop_topic, LIVE)
        self.create_service(Trigger, "~/estop", self._on_estop_service)
        self.create_service(Trigger, "~/release", self._on_release_service)
        self._active = False  # lifecycle: only an active node commands the robot
        # Made on the first activation, after the model loaded: a simulated driver waits for a
        # publisher on its command topic before it starts the first episode.
        self._trajectory_pubs = None  # group -> its controller's trajectory topic, once active
        self._drive_command: JointTrajectory | None = None  # a vehicle's newest wheel trajectory
        self.create_timer(1.0, self._publish_status)
        self._worker = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self._worker.start()
        # Configure (load) before offering commands: a driver that waits for someone to command
        # the robot then starts with a policy that is ready.
        if values["autostart"] and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the start-up checkpoint (`checkpoint`, or `framework` from `models`); without
        one the node configures empty and a later `checkpoint` set loads it."""
        checkpoint = self.get_parameter("checkpoint").value
        framework = self.get_parameter("framework").value
        start, problem = checkpoint, None
        if self.policy_endpoint:  # a policy server runs the model
            try:
                start = self.policy_endpoint = canonical_endpoint(self.policy_endpoint)
            except ValueError as err:
                problem = str(err)
        elif not start and framework:
            start, problem = self._framework_checkpoint(framework, self.models)
        if not problem and start:
            self._apply_torch_threads()
            try:
                self._install(self._load_policy(start), start)
            except Exception as err:  # stays unconfigured, says why
                problem = f"could not load {start}: {err}"
        if problem:
            self._set_state(PolicyStatus.STATE_ERROR, problem)
            self.get_logger().error(self._message)
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self._trajectory_pubs is None:
            self._trajectory_pubs = {g.name: self.create_publisher(JointTrajectory, g.command_topic, 10)
                                     for g in self.spec.groups}
        self.safety.activate()  # the first plans ramp in from where the robot is
        self._active = True
        self.get_logger().info("active: commanding the robot")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._hold(self.get_clock().now().nanoseconds)
        self._set_state(PolicyStatus.STATE_HOLDING, "inactive: holding the robot")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.policy, self._buffer, self._last_chunk = None, None, None
        self._executor.reset()
        self._set_state(PolicyStatus.STATE_UNCONFIGURED, "no checkpoint loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return TransitionCallbackReturn.SUCCESS

    # -- model loading ---------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        """Check every change (rclpy already enforced types, ranges and read-only flags), then
        apply them all: each parameter takes effect live, or the set is refused with the reason."""
        changes = {param.name: param.value for param in params}
        checkpoint = changes.get("checkpoint")
        replan = changes.get("replan_steps", self.replan_steps)
        problem = None
        if changes.get("framework"):
            checkpoint, problem = self._framework_checkpoint(changes["framework"],
                                                             changes.get("models", self.models))
        endpoint = changes.get("policy_endpoint", self.policy_endpoint)
        if "policy_endpoint" in changes:  # to a server, or ("") back to the local checkpoint
            if endpoint:
                try:
                    endpoint = canonical_endpoint(endpoint)
                except ValueError as err:
                    problem = str(err)
            elif not (checkpoint or self.get_parameter("checkpoint").value):
                problem = "policy_endpoint '': no local checkpoint to return to (set checkpoint first)"
            else:
                checkpoint = checkpoint or self.get_parameter("checkpoint").value
        elif checkpoint and endpoint:
            problem = (f"a policy server ({endpoint}) runs the model: set policy_endpoint to '' to "
                       "drive with a local checkpoint")
        if checkpoint and not problem:
            problem = self._checkpoint_problem(checkpoint, replan)
        elif self.policy is not None and replan >= self.policy.chunk_size:
            problem = (f"replan_steps {replan}: the loaded chunks have {self.policy.chunk_size} "
                       f"steps; expected 1 to {self.policy.chunk_size - 1}")
        if changes.get("execution", self.execution) not in MODES:
            problem = f"execution {changes['execution']!r}: expected one of {', '.join(MODES)}"
        if changes.get("inference_trigger", self.inference_trigger) not in TRIGGERS:
            problem = (f"inference_trigger {changes['inference_trigger']!r}: expected one of "
                       f"{', '.join(TRIGGERS)}")
        if problem:
            return SetParametersResult(successful=False, reason=problem)
        self.models = changes.get("models", self.models)
        self.policy_endpoint = endpoint
        self.policy_timeout_s = changes.get("policy_timeout_s", self.policy_timeout_s)
        if "policy_timeout_s" in changes and hasattr(self.policy, "timeout_s"):
            self.policy.timeout_s = self.policy_timeout_s
        if endpoint and "policy_endpoint" in changes:
            self._loader.request(endpoint)  # connects in the background; the current model drives
        elif checkpoint:
            self._loader.request(checkpoint)  # the current model drives until it is ready
        self.replan_steps = changes.get("replan_steps", self.replan_steps)
        self.max_age_s = changes.get("max_observation_age_s", self.max_age_s)
        self.min_lead_s = changes.get("min_lead_s", self.min_lead_s)
        self.torch_threads = changes.get("torch_threads", self.torch_threads)  # applied per tick
        self.execution = changes.get("execution", self.execution)  # a new executor next inference
        self.inference_trigger = changes.get("inference_trigger", self.inference_trigger)
        if "max_step" in changes:
            self.safety.limits = self._limits(changes["max_step"])
        self.safety.ramp_in_s = changes.get("ramp_in_s", self.safety.ramp_in_s)
        if changes.get("dry_run", self.dry_run) != self.dry_run:
            self.dry_run = changes["dry_run"]
            if self.dry_run:
                self._hold(self.get_clock().now().nanoseconds)  # stop where the robot is going
            else:
                self.safety.activate()
        self.get_logger().info("set " + ", ".join(f"{name} {value}" for name, value in changes.items()))
        return SetParametersResult(successful=True)

    def _apply_torch_threads(self) -> None:
        if self.torch_threads != self._threads_applied:
            import torch

            if self.torch_threads > 0:
                torch.set_num_threads(self.torch_threads)
            self._threads_applied = self.torch_threads

    def _checkpoint_problem(self, path: str, replan_steps: int) -> str | None:
        """Why the checkpoint in `path` cannot drive this robot (None if it can), from its
        config.json alone: fast enough for the parameter callback."""
        try:
            header = read_checkpoint_header(path)
        except ValueError as err:
            return str(err)
        model = {"chunk_size": header["model"].get("chunk_size", 0)}
        return self._fit_problem(path, {**header, **model}, replan_steps)

    def _fit_problem(self, path: str, header: dict, replan_steps: int) -> str | None:
        """Why a model described by `header` (joint_names, camera_names, rate_hz, chunk_size: a
        checkpoint's, or a policy server's metadata) cannot drive this robot."""
        joints, cameras = header.get("joint_names"), header.get("camera_names", [])
        chunk = header.get("chunk_size", 0)
        if not header.get("rate_hz") or not joints:
            return f"{path}: the model records no rate_hz or joint_names"
        if list(joints) != self.spec.joint_names:
            return (f"{path}: checkpoint joints {list(joints)} differ from the {self.spec.name} "
                    f"joints {self.spec.joint_names}")
        if abs(float(header["rate_hz"]) - self.spec.control_rate_hz) > 1e-6:
            return (f"{path}: the checkpoint runs at {header['rate_hz']} Hz, the {self.spec.name} "
                    f"is controlled at {self.spec.control_rate_hz} Hz")
        unknown = [cam for cam in cameras if cam not in self.spec.camera_names]
        if unknown:
            return f"{path}: cameras {unknown} are not {self.spec.name} cameras {self.spec.camera_names}"
        if replan_steps >= chunk:
            return (f"{path}: its chunks have {chunk} steps, replan_steps is {replan_steps} (expected "
                    "fewer than the chunk, so a new chunk comes before the last one ends)")
        return None

    def _framework_checkpoint(self, name: str, models: str) -> tuple[str | None, str | None]:
        """(checkpoint directory of framework `name` for this robot in the `models` directory,
        None) or (None, why not, listing the frameworks found there). Checkpoints of another
        embodiment (the shipped directory holds every robot's) are not this robot's frameworks."""
        found = {}
        if models and Path(models).is_dir():
            for directory in sorted(p for p in Path(models).iterdir() if p.is_dir()):
                try:
                    header = read_checkpoint_header(directory)
                except (ValueError, KeyError):  # not a checkpoint: ignored
                    continue
                if header.get("embodiment") in (None, self.spec.name) and "framework" in header:
                    found.setdefault(header["framework"], str(directory))
        if name in found:
            return found[name], None
        return None, (f"framework {name!r}: no {self.spec.name} checkpoint of it in models {models!r} "
                      f"(found: {', '.join(found) or 'none'})")

    def _load_policy(self, source: str):
        """Load and warm up a checkpoint, or connect to a policy server (`source` grpc://...), on
        the loader thread or at start-up; raises with the reason when it cannot drive this robot."""
        if source.startswith(SCHEMES):
            from librobot_models.serving.client import RemotePolicy

            policy = RemotePolicy(source, timeout_s=self.policy_timeout_s, root_cert=self.policy_root_cert,
                                  token=os.environ.get("LIBROBOT_POLICY_TOKEN") or None)
            problem = self._fit_problem(source, policy.metadata, self.replan_steps)
            if problem:
                policy.close()
                raise ValueError(problem)
            policy.timeout_s = max(self.policy_timeout_s, 10.0)  # a server's first inference may be slow
            try:
                self._warm_up(policy)
            finally:
                policy.timeout_s = self.policy_timeout_s
            return policy
        from librobot_models.policy import Policy  # the model classes, only when a model loads

        problem = self._checkpoint_problem(source, self.replan_steps)
        if problem:
            raise ValueError(problem)
        policy = Policy.from_checkpoint(source, device=self.device)
        self._warm_up(policy)
        return policy

    def _take_loaded(self) -> None:
        """Swap in a model the loader finished (on the inference thread, between two chunks)."""
        done = self._loader.take()
        if done is None:
            return
        path, result = done
        if isinstance(result, Exception):
            message = f"could not load {path}: {result}"
            if self.policy is None:
                self._set_state(PolicyStatus.STATE_ERROR, message)
            self.get_logger().error(message + ("; the current model keeps control" if self.policy else ""))
            return
        self._install(result, path)

    def _install(self, policy, path: str) -> None:
        """Make `policy` the one that drives, with its observation buffer; the executor hands over
        from the old model's plan."""
        old, self.policy = self.policy, policy
        if old is not None and old is not policy and hasattr(old, "close"):
            old.close()  # a policy server's channel
        self._buffer = ObservationBuffer(
            policy.camera_names,
            decode_state=lambda msg: messages.joint_positions(self.spec, msg),
            decode_image=decode_image,
        )
        self._buffer.instruction = self._instruction
        self._period = 1.0 / policy.rate_hz
        self._ticks_to_inference = 0
        self._latency = LatencyWindow()
        self._set_state(PolicyStatus.STATE_WAITING, "waiting for observations")
        self.get_logger().info(
            f"loaded {policy.framework} checkpoint {policy.checkpoint_id} from {path}: "
            f"chunk {policy.chunk_size} at {policy.rate_hz:g} Hz, cameras {policy.camera_names}, "
            f"replanning every {self.replan_steps * self._period * 1e3:.0f} ms"
        )

    def _warm_up(self, policy) -> None:
        """One inference on a blank observation, so the first real chunk is not late."""
        blank = {
            "images": {
                cam: np.zeros((self.spec.camera(cam).height, self.spec.camera(cam).width, 3), np.uint8)
                for cam in policy.camera_names
            },
            "state": np.clip(np.zeros(self.spec.dof), self.spec.lower_limits, self.spec.upper_limits),
        }
        policy.infer(blank)
        policy.reset()

    # -- safety ----------------------------------------------------------------------------------
    def _limits(self, max_step: float) -> SafetyLimits:
        return SafetyLimits.for_robot(self.spec, max_step)

    def _estop(self, reason: str) -> None:
        if not self.safety.estopped:
            self.get_logger().error(f"e-stop latched: {reason}; the arm holds until ~/release")
        with self._command_lock:  # no chunk is published between the latch and the hold
            self.safety.estop(reason)
        self._hold(self.get_clock().now().nanoseconds)
        self._set_state(PolicyStatus.STATE_HOLDING, f"e-stop latched: {self.safety.estop_reason}")

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._estop("e-stop topic")

    def _on_estop_service(self, request, response):
        self._estop("e-stop service")
        response.success, response.message = True, f"e-stop latched: {self.safety.estop_reason}"
        return response

    def _on_release_service(self, request, response):
        if not self.safety.estopped:
            response.success, response.message = False, "the e-stop is not latched"
            return response
        self.safety.release()
        self._reset_requested = True  # fresh observations and chunks, none from before the e-stop
        self.get_logger().warn("e-stop released: commanding again, ramping in from the arm's position")
        response.success, response.message = True, "released; ramping in from the measured position"
        return response

    # -- RViz ------------------------------------------------------------------------------------
    def _on_robot_description(self, msg: String) -> None:
        try:
            kinematics = UrdfKinematics(msg.data)
            at_zero = [kinematics.link_positions(link, [], np.zeros((1, 0)))[0]
                       for link in self.spec.end_effector_links]
        except ValueError as err:
            self.get_logger().error(f"no chunk markers: {err}")
            return
        self._reach = max(float(np.linalg.norm(p)) for p in at_zero) or DEFAULT_REACH
        self._kinematics = kinematics

    def _publish_markers(self, chunk: ScheduledChunk) -> None:
        kinematics = self._kinematics
        if kinematics is None:
            return
        paths = {link: kinematics.link_positions(link, self.spec.joint_names, chunk.positions)
                 for link in self.spec.end_effector_links}
        text = (f"{self.policy.framework} {self.execution} #{self._sequence} "
                f"{self._latency.percentile(50):.0f} ms" + (" DRY RUN" if self.dry_run else ""))
        self._markers_pub.publish(chunk_markers(
            kinematics.root, self.get_clock().now().to_msg(), paths, self._previous_paths, text, self._reach))
        self._previous_paths = paths

    # -- inputs ----------------------------------------------------------------------------------
    def _put(self, key: str, msg) -> None:
        buffer = self._buffer
        if buffer is not None and (key == "state" or key in buffer.cameras):
            stamp = messages.to_nanoseconds(msg.header.stamp)
            received = self.get_clock().now().nanoseconds
            buffer.put(key, msg, stamp or received, received)
            if buffer.cameras and key == buffer.cameras[0]:  # the trigger camera: an inference may be waiting for it
                self._frame_arrival = time.monotonic()
                self._frame_event.set()

    def _on_joint_state(self, msg: JointState) -> None:
        self._put("state", msg)

    def _on_instruction(self, msg: String) -> None:
        if msg.data != self._instruction:
            self.get_logger().info(f"instruction: {msg.data!r}")
        self._instruction = msg.data
        if self._buffer is not None:
            self._buffer.instruction = msg.data

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            self._reset_requested = True  # done by the inference thread, between two inferences

    # -- inference -------------------------------------------------------------------------------
    def _inference_loop(self) -> None:
        """Tick every control period on a fixed schedule (late ticks are skipped, not bunched).
        With inference_trigger=frame, a tick that infers first waits for a fresh frame, and the
        schedule restarts from it: the ticks then fall just after the camera's frames."""
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.inference_trigger == "frame" and self._inference_due():
                    # a vehicle's wheels get their command first: a period's tick, this wait and
                    # the inference together can outlast its drive node's deadman
                    self._renew_drive_command()
                    self._await_fresh_frame()
                    next_tick = time.monotonic()
                self._on_tick()
            except Exception as err:  # never let the thread die silently: report and hold
                if not self.context.ok():
                    return  # Ctrl-C shut the context down before destroy_node stopped this thread
                self._set_state(PolicyStatus.STATE_ERROR, f"inference failed: {err!r}")
                self.get_logger().error(self._message, throttle_duration_sec=2.0)
            next_tick += self._period
            now = time.monotonic()
            if next_tick < now:
                next_tick = now
            self._stop.wait(next_tick - now)

    def _inference_due(self) -> bool:
        return (self._ticks_to_inference == 0 and self.policy is not None and self._active
                and self._buffer is not None and bool(self._buffer.cameras))

    def _await_fresh_frame(self) -> None:
        """Return at once if the trigger camera's newest frame arrived less than FRESH_FRAME_S
        ago, else when the next one arrives (the freshest there can be, however long this thread
        then waits for the GIL), or after 1.5 camera periods without any (a late frame is still
        caught; without frames the tick goes on, and stale inputs hold)."""
        self._frame_event.clear()  # before the check: a frame arriving after it still wakes us
        arrived = self._frame_arrival
        if arrived is not None and time.monotonic() - arrived <= FRESH_FRAME_S:
            return
        camera = self.spec.camera(self._buffer.cameras[0])
        self._frame_event.wait(1.5 * max(self._period, 1.0 / camera.rate_hz))

    def destroy_node(self) -> None:
        self._stop.set()
        self._frame_event.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=5.0)
        super().destroy_node()

    def _on_tick(self) -> None:
        self._take_loaded()
        if self.policy is None or self.safety.estopped or not self._active:
            return  # nothing to run, or nothing may move (e-stop latched, or inactive)
        self._apply_torch_threads()
        if self._reset_requested:
            self._reset_requested = False
            self.policy.reset()
            self._buffer.clear()
            self._ticks_to_inference = 0
            self._last_chunk = None  # the driver reset the robot and holds it
            self._executor.reset()
        if self._ticks_to_inference > 0:
            self._ticks_to_inference -= 1
            if self.policy.observation_history > 1:
                self._observe()
            self._renew_drive_command()
            return
        now_ns = self.get_clock().now().nanoseconds
        try:
            snapshot = self._buffer.snapshot(now_ns, self.max_age_s)
        except ObservationNotReady as why:
            state = PolicyStatus.STATE_HOLDING if self._sequence else PolicyStatus.STATE_WAITING
            self._hold_and_report(now_ns, state, str(why))
            return
        started = time.perf_counter()
        try:
            # rtc with a policy whose head can be guided: the chunk is sampled to agree with the plan
            inpaint = (self._executor.inpainting(snapshot.stamp_ns * 1e-9, self.policy.chunk_size)
                       if self.policy.supports_inpainting and self._executor.mode == self.execution else None)
            actions = self.policy.infer(self._with_time(snapshot), inpaint=inpaint)["actions"]
        except ValueError as err:  # bad observation: hold, keep running
            self._hold(self.get_clock().now().nanoseconds)
            self._set_state(PolicyStatus.STATE_HOLDING, f"rejected observation: {err}")
            self.get_logger().error(self._message, throttle_duration_sec=2.0)
            return
        except PolicyUnavailable as err:  # the policy server is gone or slow: hold, try again next tick
            self._hold_and_report(self.get_clock().now().nanoseconds, PolicyStatus.STATE_HOLDING,
                                  f"{err}; holding, retrying")
            self.get_logger().error(self._message, throttle_duration_sec=2.0)
            return
        latency_ms = (time.perf_counter() - started) * 1e3
        self._latency.add(latency_ms)
        now_ns = self.get_clock().now().nanoseconds
        if self._executor.mode != self.execution:
            self._executor = make_executor(self.execution, self._period)
        if self._holding and not self.dry_run:
            self.safety.activate()  # resuming: ramp in from where the arm stopped
        try:
            chunk = schedule_chunk(self._executor, actions, snapshot.stamp_ns, now_ns, self.min_lead_s,
                                   self.safety, snapshot.observation["state"], self._commanded_velocity(now_ns))
        except ValueError as err:  # refused by the safety layer, or malformed: the arm holds
            self._hold(now_ns)
            if self.safety.estopped:
                return
            self._set_state(PolicyStatus.STATE_HOLDING, f"refused chunk: {err}")
            self.get_logger().error(self._message, throttle_duration_sec=2.0)
            return
        if chunk is None:
            self._hold(now_ns)
            self._set_state(PolicyStatus.STATE_HOLDING, "inference slower than the whole chunk")
            return
        trajectory = messages.trajectory_msg(
            self.spec.joint_names, chunk.start_ns, chunk.time_from_start, chunk.positions,
            chunk.velocities,
        )
        with self._command_lock:
            if self.safety.estopped:
                return  # latched while this chunk was computed: it never reaches the robot
            if not self.dry_run:
                self._publish_trajectory(chunk.start_ns, chunk.time_from_start, chunk.positions,
                                         chunk.velocities)
                self._last_chunk, self._holding = chunk, False
        self._ticks_to_inference = self.replan_steps - 1
        self._observation_age_ms = (now_ns - snapshot.stamp_ns) * 1e-6
        self._publish_chunk(trajectory, latency_ms)
        self._publish_markers(chunk)
        self._set_state(PolicyStatus.STATE_RUNNING,
                        "dry run: commanding nothing" if self.dry_run else self.safety.last_report)

    def _commanded_velocity(self, now_ns: int) -> np.ndarray | None:
        """The joint speeds the published trajectory asks for now (None: the arm holds), where the
        acceleration limit starts the next plan from."""
        chunk = self._last_chunk
        if chunk is None or self._holding:
            return None
        return chunk.sample(now_ns)[1]

    def _hold(self, now_ns: int) -> None:
        """Stop the arm where the last chunk has it now (a vehicle's wheels: stopped), once:
        without this the controller would play the rest of that chunk open loop (up to its
        length) on inputs that went stale. A one-point trajectory at rest, which every
        joint_trajectory_controller version holds."""
        with self._command_lock:
            chunk = self._last_chunk
            if chunk is None or self._holding or self._trajectory_pubs is None:
                return
            position, _ = chunk.sample(now_ns)
            period = 1.0 / self.policy.rate_hz
            # positions where they are; a vehicle's ground speed to zero (its wheels stop)
            self._publish_trajectory(now_ns, np.array([period]), self.spec.at_rest(position)[None],
                                     np.zeros((1, self.spec.dof)))
            self._holding = True
        self.get_logger().warn("holding the arm where it is", throttle_duration_sec=2.0)

    def _hold_and_report(self, now_ns: int, state: int, message: str) -> None:
        """Hold the robot (see _hold) and report why; the next chunk starts from where it stopped,
        not from the plan it was following."""
        self._hold(now_ns)
        self._executor.reset()
        self._set_state(state, message)

    def _renew_drive_command(self) -> None:
        """A vehicle's drive node stops the wheels without a fresh command within its deadman
        (0.25 s for the wheel loader), which can be shorter than `replan_steps` periods: between
        two inferences, and before an inference waits for its frame, the wheel trajectory being
        driven is sent again every period, as long as
        this thread ticks and the inputs are fresh (stale or missing ones hold, as they would at
        an inference). A hung model, a dead node or lost sensors still trip the deadman."""
        if (self.spec.drive is None or self._last_chunk is None or self._holding or self.dry_run
                or self._reset_requested):  # the robot was reset: its old plan is void
            return
        now_ns = self.get_clock().now().nanoseconds
        try:
            self._buffer.check(now_ns, self.max_age_s)
        except ObservationNotReady as why:
            self._hold_and_report(now_ns, PolicyStatus.STATE_HOLDING, str(why))
            return
        with self._command_lock:  # a hold or an e-stop may have come meanwhile
            if not (self._holding or self.safety.estopped or self._last_chunk is None):
                self._trajectory_pubs[self.spec.drive.group].publish(self._drive_command)

    def _publish_trajectory(self, start_ns: int, time_from_start: np.ndarray, positions: np.ndarray,
                            velocities: np.ndarray | None) -> None:
        """One JointTrajectory per commanded group's controller, all with the same stamp (the
        observation's plan start) and times, published back to back."""
        for group, msg in messages.group_trajectory_msgs(self.spec, start_ns, time_from_start,
                                                         positions, velocities):
            self._trajectory_pubs[group.name].publish(msg)
            if self.spec.drive is not None and group.name == self.spec.drive.group:
                self._drive_command = msg  # the last chunk's (a hold's is never sent again)

    @staticmethod
    def _with_time(snapshot) -> dict:
        """The policy's observation, with its time (a model with rates of its own measures them on it)."""
        return {**snapshot.observation, "time_s": snapshot.stamp_ns * 1e-9}

    def _observe(self) -> None:
        """A tick between two inferences: the newest observation joins the model's history window.
        A missing or bad one is skipped here; the next inference reports it."""
        try:
            snapshot = self._buffer.snapshot(self.get_clock().now().nanoseconds, self.max_age_s)
            self.policy.observe(self._with_time(snapshot))
        except (ObservationNotReady, ValueError, PolicyUnavailable):
            pass

    def _publish_chunk(self, trajectory: JointTrajectory, latency_ms: float) -> None:
        msg = ActionChunk()
        msg.header.stamp = trajectory.header.stamp
        msg.sequence = self._sequence
        msg.framework = self.policy.framework
        msg.checkpoint_id = self.policy.checkpoint_id
        msg.trajectory = trajectory
        msg.control_period = messages.duration(1.0 / self.policy.rate_hz)
        msg.inference_latency_ms = latency_ms
        msg.observation_age_ms = self._observation_age_ms
        self._chunk_pub.publish(msg)
        self._sequence += 1

    # -- status ----------------------------------------------------------------------------------
    def _set_state(self, state: int, message: str) -> None:
        changed = state != self._state
        self._state, self._message = state, message
        if changed:
            self._publish_status()

    STATE_NAMES = {PolicyStatus.STATE_UNCONFIGURED: "unconfigured", PolicyStatus.STATE_WAITING: "waiting",
                   PolicyStatus.STATE_RUNNING: "running", PolicyStatus.STATE_HOLDING: "holding",
                   PolicyStatus.STATE_ERROR: "error"}

    def _publish_diagnostics(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        snap = diagnostics.PolicySnapshot(
            state=self.STATE_NAMES[self._state], message=self._message,
            framework=self.policy.framework if self.policy else "",
            checkpoint_id=self.policy.checkpoint_id if self.policy else "",
            execution=self.execution, delay_steps=self._executor.delay_steps, estop_reason=self.safety.estop_reason, dry_run=self.dry_run,
            latency_ms=(self._latency.percentile(50), self._latency.percentile(99), self._latency.max),
            chunks_published=self._sequence,
            dropped_frames=self._buffer.dropped_frames if self._buffer else 0,
            streams=self._buffer.stream_stats(now_ns) if self._buffer else {},
            max_age_ms=self.max_age_s * 1e3,
        )
        self._diagnostics_pub.publish(messages.diagnostic_array(
            diagnostics.reports(self.get_fully_qualified_name(), snap), self.spec.name,
            self.get_clock().now().to_msg()))

    def _publish_status(self) -> None:
        self._publish_diagnostics()
        msg = PolicyStatus()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.state, msg.message = self._state, self._message
        if self.policy is not None:
            msg.framework, msg.checkpoint_id = self.policy.framework, self.policy.checkpoint_id
        msg.latency_p50_ms = self._latency.percentile(50)
        msg.latency_p99_ms = self._latency.percentile(99)
        msg.latency_max_ms = self._latency.max
        msg.observation_age_ms = self._observation_age_ms
        msg.chunks_published = self._sequence
        msg.dropped_frames = self._buffer.dropped_frames if self._buffer else 0
        self._status_pub.publish(msg)


def main(args=None) -> int:
    return run_node(PolicyNode, "policy_node", args=args)


if __name__ == "__main__":
    sys.exit(main())
