"""Demonstrations on hardware, with the arms emulated: `librobot-record --teleop` runs the real
follower driver and the leader's teleop node over two emulated Feetech buses, takes episode
boundaries from the keyboard (stdin), and `bag_to_hdf5` converts the bag with no extra flags; a
servo that drops off the bus mid-episode costs the samples of its absence, nothing else."""

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image

from librobot_drivers import messages
from librobot_drivers.embodiment import load_embodiment
from librobot_training.bag_to_hdf5 import main as bag_to_hdf5

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "librobot_drivers" / "test"))
from feetech_arm import PhysicalArm, start_arm, write_calibration  # noqa: E402

SPEC = load_embodiment("so100")


class Camera:
    """A camera driver stand-in: 160x120 rgb8 frames at 10 Hz on the front camera's topic."""

    def __init__(self, context):
        self.node = Node("front_camera", context=context)
        self.pub = self.node.create_publisher(Image, SPEC.camera("front").topic, 5)
        self.node.create_timer(0.1, self._publish)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _publish(self):
        frame = np.full((120, 160, 3), 90, np.uint8)
        self.pub.publish(messages.image_msg(frame, self.node.get_clock().now().to_msg(), "front_camera"))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


class Keyboard:
    """The record process, its stdin as the keyboard and its stdout read line by line."""

    def __init__(self, argv):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, text, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from record; it printed:\n" + "\n".join(self.seen))

    def press(self, key=""):
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()


def test_teleoperated_episodes_are_recorded_and_convert_without_flags(tmp_path, ros_context):
    follower_cal = write_calibration(tmp_path / "follower.json", SPEC)
    leader_cal = write_calibration(tmp_path / "leader.json", SPEC)
    bag, out = tmp_path / "bag", tmp_path / "hdf5"
    camera = Camera(ros_context)
    with start_arm() as follower, start_arm() as leader:
        hand = PhysicalArm(leader)
        keyboard = Keyboard([
            sys.executable, "-m", "librobot_bringup.record", "--teleop", "--output", str(bag),
            "--instruction", "wave to the camera", "--camera-driver", "none",
            "--port", follower.port, "--calibration", follower_cal,
            "--leader-port", leader.port, "--leader-calibration", leader_cal, "--log-dir", str(tmp_path / "logs")])
        try:
            keyboard.wait_for("ready: 'wave to the camera'")
            keyboard.press()
            keyboard.wait_for("episode 0: recording")
            for angle in np.linspace(0.0, 0.6, 25):  # the user moves the leader's shoulder pan
                hand.set_joint(0, angle)
                time.sleep(0.08)
            time.sleep(1.0)
            keyboard.press()
            keyboard.wait_for("episode 0: success")
            keyboard.press()
            keyboard.wait_for("episode 1: recording")
            for step, angle in enumerate(np.linspace(0.6, -0.3, 20)):
                hand.set_joint(0, angle)
                time.sleep(0.08)
                if step == 5:  # the follower's elbow servo drops off the bus for a moment
                    follower.fault(3, silent=True)
                if step == 12:
                    follower.fault(3, silent=False)
            time.sleep(0.5)
            keyboard.press("f")
            keyboard.wait_for("episode 1: failure")
            keyboard.press("q")
            keyboard.wait_for("recorded 2 episodes")
            assert keyboard.process.wait(timeout=30) == 0
            follower_pan = PhysicalArm(follower).joints()[0]
        finally:
            if keyboard.process.poll() is None:
                keyboard.process.kill()
            camera.close()
    assert abs(follower_pan - (-0.3)) < 0.01  # the follower went where the leader went

    assert bag_to_hdf5([str(bag), "--output", str(out), "--no-progress"]) == 0
    with h5py.File(out / "episode_000000.hdf5") as first, h5py.File(out / "episode_000001.hdf5") as second:
        assert (first.attrs["success"], second.attrs["success"]) == (1, 0)
        assert first.attrs["instruction"] == "wave to the camera" and not first.attrs["sim"]
        action, qpos = first["/action"][()], first["/observations/qpos"][()]
        assert first["/observations/images/front"].shape[1:] == (120, 160, 3)
        assert abs(action[-1, 0] - 0.6) < 0.02 and abs(qpos[-1, 0] - 0.6) < 0.02
        assert np.ptp(action[:, 0]) > 0.5  # the commands followed the leader through the episode
        assert abs(second["/action"][()][-1, 0] - (-0.3)) < 0.02
    # the servo's absence: no joint states then (steps dropped, counted), the episode kept
    summary = json.loads((out / "dataset.json").read_text())["episodes"]
    assert summary[0]["dropped"]["joint_states"] == 0 and summary[1]["dropped"]["joint_states"] >= 3
    driver_log = (tmp_path / "logs" / "driver.log").read_text()
    assert "hardware not answering" in driver_log and "answering again" in driver_log
