"""The policy node: latest camera frames + joint state -> Policy.infer -> stamped action chunk.

Subscriptions only store the newest message (ObservationBuffer); inference runs on a thread of its
own, so a slow model never blocks the inputs (and no executor thread busy-waits on a timer whose
callback is still running, which starved inference of the GIL). The thread ticks at the control
rate and infers every `replan_steps` ticks; the ticks in between pass their observation to
Policy.observe for models with a history window (Octo), which expect consecutive control steps.
Each chunk goes to the joint_trajectory_controller as a JointTrajectory (stamped with the
observation time, points already in the past dropped, velocities for cubic interpolation) and to
~/action_chunk as a librobot_msgs/ActionChunk. Without a fresh, complete observation no chunk is sent and the
controller holds the last target. `ros2 param set /policy checkpoint <dir>` swaps the model live.

    ros2 run librobot_policy_node policy_node --ros-args -p checkpoint:=/path/to/checkpoint
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from librobot_msgs.msg import ActionChunk, EpisodeEvent, PolicyStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.images import decode_image
from librobot_drivers.ros_common import EPISODE_EVENTS, LATCHED, run_node
from librobot_policy_node.chunking import LatencyWindow, schedule_chunk
from librobot_policy_node.observation import ObservationBuffer, ObservationNotReady



def check_checkpoint_dir(path: str) -> str | None:
    """Why `path` is not a checkpoint directory, or None if it looks like one."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return f"{path!r} is not a checkpoint directory (no config.json)"
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as err:
        return f"{config} is unreadable: {err}"
    return None


class PolicyNode(Node):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        self.spec = load_embodiment(self.declare_parameter("embodiment", "so100").value)
        self.device = self.declare_parameter("device", "cpu").value
        # Small policies on a CPU shared with the driver: one thread avoids OpenMP threads
        # waiting on each other (measured 7x slower steps with 2 threads on a busy 2-core CPU).
        self.torch_threads = self.declare_parameter("torch_threads", 1).value
        self.replan_steps = self.declare_parameter("replan_steps", 4).value
        self.max_age_s = self.declare_parameter("max_observation_age_s", 0.5).value
        self.min_lead_s = self.declare_parameter("min_lead_s", 0.0).value
        checkpoint = self.declare_parameter("checkpoint", "").value
        for name, ok, expected in (
            ("replan_steps", isinstance(self.replan_steps, int) and self.replan_steps >= 1, "an int >= 1"),
            ("torch_threads", isinstance(self.torch_threads, int) and self.torch_threads >= 0, "an int >= 0"),
            ("max_observation_age_s", self.max_age_s > 0, "a number of seconds > 0"),
        ):
            if not ok:
                raise ValueError(f"parameter {name} = {self.get_parameter(name).value!r}: expected {expected}")

        self.policy = None
        self._pending_checkpoint: str | None = checkpoint or None
        self._sequence = 0
        self._latency = LatencyWindow()
        self._state, self._message = PolicyStatus.STATE_UNCONFIGURED, "no checkpoint loaded"
        self._observation_age_ms = 0.0
        self._buffer: ObservationBuffer | None = None
        self._period = 0.1  # s between ticks; the control period once loaded
        self._ticks_to_inference = 0  # ticks that only observe before the next inference
        self._reset_requested = False
        self._stop = threading.Event()

        self._chunk_pub = self.create_publisher(ActionChunk, "~/action_chunk", 10)
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self.create_subscription(
            JointState, self.spec.topic("joint_states"), self._on_joint_state,
            qos_profile_sensor_data,
        )
        self.create_subscription(
            String, self.spec.topic("instruction"), self._on_instruction, LATCHED
        )
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
        # Load a start-up checkpoint before offering commands: a driver that waits for someone to
        # command the robot then starts with a policy that is ready (later swaps load in _on_tick).
        if self._pending_checkpoint:
            path, self._pending_checkpoint = self._pending_checkpoint, None
            self._load(path)
        self._trajectory_pub = self.create_publisher(JointTrajectory, self.spec.command_topic, 10)
        self.create_timer(1.0, self._publish_status)
        self._worker = threading.Thread(target=self._inference_loop, name="inference", daemon=True)
        self._worker.start()

    # -- model loading ---------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "checkpoint" and param.value:
                problem = check_checkpoint_dir(param.value)
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
                self._pending_checkpoint = param.value
            elif param.name in ("embodiment", "device"):
                return SetParametersResult(
                    successful=False, reason=f"{param.name} is fixed at start-up"
                )
        return SetParametersResult(successful=True)

    def _load(self, path: str) -> None:
        import torch

        from librobot_models.policy import Policy  # torch is imported here, not at node start

        if self.torch_threads > 0:
            torch.set_num_threads(self.torch_threads)

        try:
            policy = Policy.from_checkpoint(path, device=self.device)
            if not policy.rate_hz or not policy.joint_names:
                raise ValueError("the checkpoint records no rate_hz or joint_names")
            if list(policy.joint_names) != self.spec.joint_names:
                raise ValueError(
                    f"checkpoint joints {list(policy.joint_names)} differ from the "
                    f"{self.spec.name} joints {self.spec.joint_names}"
                )
            for cam in policy.camera_names:
                self.spec.camera(cam)
            if self.replan_steps >= policy.chunk_size:
                raise ValueError(
                    f"its chunks have {policy.chunk_size} steps, replan_steps is {self.replan_steps} "
                    f"(expected fewer than the chunk, so a new chunk comes before the last one ends)"
                )
        except Exception as err:  # keep running with the previous policy, say why
            self._set_state(PolicyStatus.STATE_ERROR, f"could not load {path}: {err}")
            self.get_logger().error(self._message)
            return
        self._warm_up(policy)
        self.policy = policy
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

    # -- inputs ----------------------------------------------------------------------------------
    def _put(self, key: str, msg) -> None:
        buffer = self._buffer
        if buffer is not None and (key == "state" or key in buffer.cameras):
            stamp = messages.to_nanoseconds(msg.header.stamp)
            buffer.put(key, msg, stamp or self.get_clock().now().nanoseconds)

    def _on_joint_state(self, msg: JointState) -> None:
        self._put("state", msg)

    def _on_instruction(self, msg: String) -> None:
        self._instruction = msg.data
        if self._buffer is not None:
            self._buffer.instruction = msg.data

    def _on_episode_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            self._reset_requested = True  # done by the inference thread, between two inferences

    # -- inference -------------------------------------------------------------------------------
    def _inference_loop(self) -> None:
        """Tick every control period on a fixed schedule (late ticks are skipped, not bunched)."""
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                self._on_tick()
            except Exception as err:  # never let the thread die silently: report and hold
                self._set_state(PolicyStatus.STATE_ERROR, f"inference failed: {err!r}")
                self.get_logger().error(self._message, throttle_duration_sec=2.0)
            next_tick += self._period
            now = time.monotonic()
            if next_tick < now:
                next_tick = now
            self._stop.wait(next_tick - now)

    def destroy_node(self) -> None:
        self._stop.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=5.0)
        super().destroy_node()

    def _on_tick(self) -> None:
        if self._pending_checkpoint:
            path, self._pending_checkpoint = self._pending_checkpoint, None
            self._load(path)
        if self.policy is None:
            return
        if self._reset_requested:
            self._reset_requested = False
            self.policy.reset()
            self._buffer.clear()
            self._ticks_to_inference = 0
        if self._ticks_to_inference > 0:
            self._ticks_to_inference -= 1
            if self.policy.observation_history > 1:
                self._observe()
            return
        now_ns = self.get_clock().now().nanoseconds
        try:
            snapshot = self._buffer.snapshot(now_ns, self.max_age_s)
        except ObservationNotReady as why:
            self._set_state(PolicyStatus.STATE_HOLDING if self._sequence else
                            PolicyStatus.STATE_WAITING, str(why))
            return
        started = time.perf_counter()
        try:
            actions = self.policy.infer(self._with_time(snapshot))["actions"]
        except ValueError as err:  # bad observation: hold, keep running
            self._set_state(PolicyStatus.STATE_HOLDING, f"rejected observation: {err}")
            self.get_logger().error(self._message, throttle_duration_sec=2.0)
            return
        latency_ms = (time.perf_counter() - started) * 1e3
        self._latency.add(latency_ms)
        now_ns = self.get_clock().now().nanoseconds
        chunk = schedule_chunk(
            actions, snapshot.stamp_ns, now_ns, 1.0 / self.policy.rate_hz, self.min_lead_s,
            self.spec.lower_limits, self.spec.upper_limits,
        )
        if chunk is None:
            self._set_state(PolicyStatus.STATE_HOLDING, "inference slower than the whole chunk")
            return
        trajectory = messages.trajectory_msg(
            self.spec.joint_names, chunk.start_ns, chunk.time_from_start, chunk.positions,
            chunk.velocities,
        )
        self._trajectory_pub.publish(trajectory)
        self._ticks_to_inference = self.replan_steps - 1
        self._observation_age_ms = (now_ns - snapshot.stamp_ns) * 1e-6
        self._publish_chunk(trajectory, latency_ms)
        self._set_state(PolicyStatus.STATE_RUNNING, "")

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
        except (ObservationNotReady, ValueError):
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

    def _publish_status(self) -> None:
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
