"""The policy node's own cost per observation, against the model's: in process and over real DDS.

    python benchmarks/bench_node.py [--checkpoint DIR] [--seconds 20] [--width 640 --height 480]

1. In process (no DDS): what the node does per inference besides the model, for two rgb8 cameras
   of --width x --height and a joint state -- store the messages, take the snapshot (decode both
   frames), run the chunk executor and the safety layer, build the JointTrajectory and the
   ActionChunk -- against Policy.infer of the checkpoint (the baseline; its own image resizing
   counts as the model's). Ratio: node overhead / inference.
2. Over real DDS: the policy node (its own process, rclpy, Fast DDS) fed both cameras at 30 Hz
   and joint states at 100 Hz by this process; from each ActionChunk, the camera stamp -> trajectory publish time
   (observation_age_ms) against the inference time in the same chunk. Beside it, in the same
   run, the transport floor: a plain rclpy subscriber in a process of its own (`--probe`) takes
   the same front frames, and its stamp -> callback time is what DDS and rclpy cost a frame
   before any node code runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.images import decode_image
from librobot_drivers.robot import JointReading
from librobot_models.execution import make_executor
from librobot_models.policy import Policy
from librobot_models.safety import SafetyFilter, SafetyLimits
from librobot_policy_node.chunking import schedule_chunk
from librobot_policy_node.observation import ObservationBuffer
from timing import call_ms  # benchmarks/timing.py

DEFAULT = Path(__file__).resolve().parents[1] / "src/librobot_bringup/checkpoints/act_so100"
CAMERAS = ("front", "wrist")


def percentiles(values) -> tuple[float, float]:
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


def in_process(policy: Policy, width: int, height: int, runs: int) -> tuple[list[float], list[float]]:
    from librobot_msgs.msg import ActionChunk

    spec = load_embodiment("so100")
    rng = np.random.default_rng(0)
    frames = {cam: messages.image_msg(rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
                                      messages.time_from_ns(0), cam) for cam in CAMERAS}
    zero = np.zeros(spec.dof)
    state = messages.joint_state_msg(spec, JointReading(zero, zero, zero), messages.time_from_ns(0))
    buffer = ObservationBuffer(list(CAMERAS), lambda m: messages.joint_positions(spec, m), decode_image)
    executor = make_executor("receding", 1.0 / policy.rate_hz)
    safety = SafetyFilter(SafetyLimits(spec.lower_limits, spec.upper_limits, spec.velocity_limits,
                                       max_step=10.0))
    actions = np.zeros((policy.chunk_size, spec.dof))
    clock = {"ns": 10**9}

    def node_work():
        clock["ns"] += 100_000_000
        now = clock["ns"]
        for cam in CAMERAS:
            buffer.put(cam, frames[cam], now)
        buffer.put("state", state, now)
        snapshot = buffer.snapshot(now, 1.0)
        chunk = schedule_chunk(executor, actions, now, now + 1_000_000, 0.0, safety,
                               snapshot.observation["state"])
        trajectory = messages.trajectory_msg(spec.joint_names, chunk.start_ns, chunk.time_from_start,
                                             chunk.positions, chunk.velocities)
        ActionChunk(trajectory=trajectory)

    obs = {"images": {cam: np.zeros((height, width, 3), np.uint8) for cam in policy.camera_names},
           "state": np.zeros(spec.dof, np.float32)}
    return call_ms(node_work, runs), call_ms(lambda: policy.infer(obs), runs)


def probe(seconds: float) -> int:
    """The transport floor: print the stamp -> callback milliseconds of the front camera's frames
    received by a plain subscriber in this process, one per line, for `seconds`."""
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node("bench_probe")
    topic = load_embodiment("so100").camera("front").topic
    node.create_subscription(Image, topic, lambda m: print(
        (node.get_clock().now().nanoseconds - messages.to_nanoseconds(m.header.stamp)) * 1e-6, flush=True),
        qos_profile_sensor_data)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return 0


def over_dds(checkpoint: Path, width: int, height: int, seconds: float) -> tuple[list[tuple[float, float]], list[float]]:
    """(observation_age_ms, inference_latency_ms) of every ActionChunk in `seconds`: the policy
    node in a process of its own (as deployed), the cameras and joint states from this one; and
    the transport floor (probe) of the same frames."""
    import os
    import subprocess

    import rclpy
    from librobot_msgs.msg import ActionChunk
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    spec = load_embodiment("so100")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    node = subprocess.Popen([sys.executable, "-m", "librobot_policy_node.policy_node", "--ros-args",
                             "-p", f"checkpoint:={checkpoint}", "-p", "max_step:=10.0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prober = subprocess.Popen([sys.executable, __file__, "--probe", str(seconds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    context = Context()
    rclpy.init(context=context)
    feeder = Node("bench_feeder", context=context)
    cameras = {cam: feeder.create_publisher(Image, spec.camera(cam).topic, qos_profile_sensor_data)
               for cam in CAMERAS}
    joints = feeder.create_publisher(JointState, spec.topic("joint_states"), qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    frames = {cam: messages.image_msg(rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
                                      messages.time_from_ns(0), cam) for cam in CAMERAS}
    zero = np.zeros(spec.dof)
    reading = JointReading(zero, zero, zero)
    samples = []
    feeder.create_subscription(ActionChunk, "/policy/action_chunk",
                               lambda m: samples.append((m.observation_age_ms, m.inference_latency_ms)), 50)

    def publish_frames():
        stamp = feeder.get_clock().now().to_msg()
        for cam, publisher in cameras.items():
            frames[cam].header.stamp = stamp
            publisher.publish(frames[cam])

    feeder.create_timer(1 / 30, publish_frames)
    feeder.create_timer(1 / 100, lambda: joints.publish(
        messages.joint_state_msg(spec, reading, feeder.get_clock().now().to_msg())))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(feeder)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and node.poll() is None:
            executor.spin_once(timeout_sec=0.05)
    finally:
        node.send_signal(2)
        node.wait(timeout=30)
        executor.shutdown()
        feeder.destroy_node()
        context.try_shutdown()
    transit = [float(line) for line in prober.communicate(timeout=60)[0].split()]
    return samples[2:], transit[10:]  # the first chunks and frames include discovery


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="of the DDS part (0: skip it)")
    parser.add_argument("--probe", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        return probe(args.probe)
    policy = Policy.from_checkpoint(args.checkpoint)
    node_ms, infer_ms = in_process(policy, args.width, args.height, args.runs)
    (n50, n99), (i50, i99) = percentiles(node_ms), percentiles(infer_ms)
    print(f"{policy.framework}, two {args.width}x{args.height} rgb8 cameras, {args.runs} runs")
    print(f"{'':<34}{'p50 ms':>8}{'p99 ms':>8}")
    print(f"{'node work per inference':<34}{n50:>8.2f}{n99:>8.2f}")
    print(f"{'Policy.infer (baseline)':<34}{i50:>8.2f}{i99:>8.2f}")
    print(f"overhead ratio: {n50 / i50:.3f} of the inference")
    if args.seconds > 0:
        samples, transit = over_dds(args.checkpoint, args.width, args.height, args.seconds)
        if len(samples) < 2 or len(transit) < 2:
            print("over DDS: fewer than two chunks or frames; raise --seconds")
            return 1
        ages, infers = zip(*samples)
        (a50, a99), (m50, m99), (t50, t99) = percentiles(ages), percentiles(infers), percentiles(transit)
        print(f"over DDS, {len(samples)} chunks: camera stamp -> trajectory publish p50 {a50:.1f} / "
              f"p99 {a99:.1f} ms; inference p50 {m50:.1f} / p99 {m99:.1f} ms; "
              f"p99 margin {a99 - m99:.1f} ms")
        print(f"  transport floor (a plain subscriber process, same frames): p50 {t50:.1f} / p99 "
              f"{t99:.1f} ms; margin beyond it p50 {a50 - m50 - t50:.1f} / p99 {a99 - m99 - t99:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
