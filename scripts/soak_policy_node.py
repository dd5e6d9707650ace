"""Soak the policy node: three 640x480 rgb8 cameras at 30 Hz and joint states at 200 Hz for
--minutes, then report its memory, missed control ticks and latency over time.

    source scripts/env.sh && python scripts/soak_policy_node.py --minutes 10

The node runs as its own process (python -m librobot_policy_node.policy_node, the shipped ACT
checkpoint unless --checkpoint) on an SO-100 embodiment with a third camera, so it subscribes to
and buffers all three streams; this process publishes them over real DDS and listens to the
chunks. Memory: the node's resident set (VmRSS) every 5 s; growth is measured from the end of the
first minute (warm-up). A missed tick: a gap between two chunks longer than 1.5 replanning
periods. Latency: the chunks' inference time and camera-stamp-to-publish age, per minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "src/librobot_bringup/checkpoints/act_so100"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def three_camera_embodiment(directory: Path, width: int, height: int) -> Path:
    from librobot_drivers.resources import share_path

    spec = yaml.safe_load(share_path("config", "embodiments", "so100.yaml").read_text())
    spec["name"] = "so100_soak"
    spec["cameras"] = [{"name": name, "topic": f"/camera/{name}/image_raw", "width": width,
                        "height": height, "rate_hz": 30.0} for name in ("front", "wrist", "side")]
    path = directory / "so100_soak.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="soak_policy_node", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)

    import rclpy
    from librobot_msgs.msg import ActionChunk
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState

    from librobot_drivers import messages
    from librobot_drivers.embodiment import load_embodiment
    from librobot_drivers.robot import JointReading

    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory(prefix="librobot-soak-") as tmp:
        spec_path = three_camera_embodiment(Path(tmp), args.width, args.height)
        spec = load_embodiment(spec_path)
        log = open(Path(tmp) / "policy.log", "wb")
        node = subprocess.Popen(
            [sys.executable, "-m", "librobot_policy_node.policy_node", "--ros-args",
             "-p", f"checkpoint:={args.checkpoint}", "-p", f"embodiment:={spec_path}",
             "-p", "max_step:=10.0"], env=env, stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        feeder = Node("soak_feeder")
        cameras = [feeder.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in spec.cameras]
        joints = feeder.create_publisher(JointState, spec.topic("joint_states"), qos_profile_sensor_data)
        frames = [messages.image_msg(np.random.default_rng(i).integers(0, 255, (args.height, args.width, 3),
                                                                      dtype=np.uint8),
                                     messages.time_from_ns(0), c.name) for i, c in enumerate(spec.cameras)]
        zero = np.zeros(spec.dof)
        reading = JointReading(zero, zero, zero)
        chunks, memory = [], []  # (receive time s, age ms, inference ms); (time s, MB)

        def publish_frames():
            stamp = feeder.get_clock().now().to_msg()
            for publisher, frame in zip(cameras, frames):
                frame.header.stamp = stamp
                publisher.publish(frame)

        feeder.create_timer(1 / 30, publish_frames)
        feeder.create_timer(1 / 200, lambda: joints.publish(
            messages.joint_state_msg(spec, reading, feeder.get_clock().now().to_msg())))
        feeder.create_subscription(ActionChunk, "/policy/action_chunk", lambda m: chunks.append(
            (time.monotonic(), m.observation_age_ms, m.inference_latency_ms)), 50)
        feeder.create_timer(5.0, lambda: memory.append((time.monotonic(), rss_mb(node.pid))))
        executor = SingleThreadedExecutor()
        executor.add_node(feeder)
        start = time.monotonic()
        try:
            while time.monotonic() - start < args.minutes * 60:
                executor.spin_once(timeout_sec=0.05)
                if node.poll() is not None:
                    print(f"soak: the policy node exited with {node.returncode}:\n"
                          + (Path(tmp) / "policy.log").read_text()[-3000:], file=sys.stderr)
                    return 1
        finally:
            node.send_signal(2)
            node.wait(timeout=30)
            executor.shutdown()
            feeder.destroy_node()
            rclpy.try_shutdown()

    if len(chunks) < 10 or len(memory) < 4:
        print(f"soak: only {len(chunks)} chunks and {len(memory)} memory samples", file=sys.stderr)
        return 1
    times = np.array([c[0] for c in chunks]) - start
    period = 4 / spec.control_rate_hz  # the default replan_steps = 4
    gaps = np.diff(times)
    missed = int(np.sum(gaps > 1.5 * period))
    mem_t = np.array([m[0] for m in memory]) - start
    mem = np.array([m[1] for m in memory])
    warm = mem[mem_t >= 60.0] if np.any(mem_t >= 60.0) else mem
    growth = (warm[-1] - warm[0]) / warm[0] * 100
    print(f"soak: {args.minutes:g} min, 3 cameras {args.width}x{args.height} at 30 Hz, joint states at 200 Hz")
    print(f"memory: {mem[0]:.0f} MB at 5 s, {warm[0]:.0f} MB after warm-up, {mem[-1]:.0f} MB at the end "
          f"(growth after warm-up {growth:+.1f}%)")
    print(f"chunks: {len(chunks)}, expected every {period * 1e3:.0f} ms; gaps over 1.5x: {missed} "
          f"({missed / len(gaps):.1%}); longest gap {gaps.max() * 1e3:.0f} ms")
    print(f"{'minute':>6}{'chunks':>8}{'infer p50':>11}{'infer p99':>11}{'age p50':>9}{'age p99':>9}")
    for minute in range(int(np.ceil(args.minutes))):
        rows = [c for c, t in zip(chunks, times) if minute * 60 <= t < (minute + 1) * 60]
        if rows:
            ages, infers = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
            print(f"{minute + 1:>6}{len(rows):>8}{np.percentile(infers, 50):>11.1f}"
                  f"{np.percentile(infers, 99):>11.1f}{np.percentile(ages, 50):>9.1f}"
                  f"{np.percentile(ages, 99):>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
