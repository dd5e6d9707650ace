"""Integration tests against a full ROS 2 Jazzy: the real `ros2 launch`, `ros2 param`, `ros2 topic`,
`ros2 bag`, controller_manager and joint_trajectory_controller.

They run on the workspace built against the full ROS by scripts/setup_full_ros.sh (`make test`
runs it): `.ros/env.bash` gives their environment. Without a full ROS they skip, saying so; CI
fails such a skip when ../shared/ros2_jazzy is there (.ci/run).

The test process itself observes over DDS with the rclpy of the wheels (.venv): same middleware,
same domain, loopback only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_FILE = REPO / ".ros" / "env.bash"
NO_FULL_ROS = "no full ROS 2 Jazzy (run scripts/setup_full_ros.sh; it needs /opt/ros/jazzy or ../shared/ros2_jazzy)"


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


_modules_started = 0


@pytest.fixture(scope="module")
def ros_env() -> dict[str, str]:
    """The environment of a shell with the full ROS and this workspace sourced, DDS on loopback,
    in a ROS domain of this test module's own: nodes that earlier tests killed linger in the
    DDS graph until their lease ends, and a ghost named /policy confuses `ros2 node info` and
    `ros2 service call`. The test process's own contexts (the observer) join the same domain."""
    global _modules_started
    if not ENV_FILE.is_file():
        pytest.skip(NO_FULL_ROS)
    out = subprocess.run(["bash", "-c", f"source {ENV_FILE} >/dev/null && env -0"], check=True,
                         capture_output=True, cwd=REPO).stdout
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    _modules_started += 1
    base = int(os.environ["LIBROBOT_TEST_DOMAIN_ID"])
    domain = str((base - 1 + 17 * _modules_started) % 101 + 1)  # 1..101, never the unit tests'
    previous = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_DOMAIN_ID"] = domain
    env.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    try:
        yield env
    finally:
        subprocess.run(["ros2", "daemon", "stop"], env=env, capture_output=True, timeout=30)
        os.environ["ROS_DOMAIN_ID"] = previous


def ros2(env: dict, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run `ros2 <args>` of the full ROS; returns the completed process (text, stderr in stdout).
    A node the CLI's graph cache has not discovered yet ("Node not found") is asked again."""
    deadline = time.monotonic() + 20.0
    while True:
        done = subprocess.run(["ros2", *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if not re.search("Node not found|Unable to find node", done.stdout) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if check and done.returncode != 0:
        raise AssertionError(f"ros2 {' '.join(args)} exited {done.returncode}:\n{done.stdout}")
    return done


class Launched:
    """A process started in its own session (`ros2 launch ...`, `ros2 bag record ...`) with its
    output in a log file."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not in the log within {timeout_s} s:\n{self.log()[-4000:]}")

    def interrupt(self, timeout_s: float = 30.0, group: bool = False) -> int:
        """SIGINT to the command (`kill -INT`), or with `group` to its whole process group as a
        terminal's Ctrl-C does; returns its exit code. Raises if anything it started is still
        running afterwards (an orphan)."""
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, signal.SIGINT)
            else:
                self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout_s)
        finally:
            self._log.close()
            orphans = _session_processes(self.process.pid)
            for pid in orphans:
                os.kill(pid, signal.SIGKILL)
        assert not orphans, f"processes left running after Ctrl-C: {orphans}\n{self.log()[-3000:]}"
        return code

    def kill(self, group: bool = False) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would stop it (no clean-up); with `group`
        everything it started too (`ros2 run` runs the node as its child)."""
        if group:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.kill()
        self.process.wait()
        self._log.close()


def _session_processes(session: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":  # session id; zombies are gone already
            pids.append(int(stat.parent.name))
    return pids


@contextmanager
def launched(env: dict, log: Path, *args: str, launch_file: str = "so100.launch.py"):
    """`ros2 launch librobot_bringup <launch_file> rviz:=false <args>`, stopped with Ctrl-C;
    fails if the shutdown left a traceback or a process behind."""
    process = Launched(["ros2", "launch", "librobot_bringup", launch_file, "rviz:=false", *args],
                       env, log)
    try:
        yield process
    finally:
        process.interrupt()
        assert "Traceback" not in process.log(), process.log()[-4000:]


@pytest.fixture
def observer(ros_context):
    """A node of the test process (wheels' rclpy) and a function spinning it until a condition."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node("integration_observer", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)

    def spin_until(predicate, timeout_s: float, step=None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            if step is not None:
                step()
            executor.spin_once(timeout_sec=0.02)
        return predicate()

    node.spin_until = spin_until
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()


@pytest.fixture(scope="module")
def cli(ros_env):
    """The helpers the tests use: cli.ros2(*args), cli.launch(log, *args[, launch_file=...]),
    cli.start(args, log)."""

    class Cli:
        env = ros_env

        @staticmethod
        def ros2(*args, **kwargs):
            return ros2(ros_env, *args, **kwargs)

        @staticmethod
        def launch(log, *args, launch_file="so100.launch.py"):
            return launched(ros_env, log, *args, launch_file=launch_file)

        @staticmethod
        def start(args, log):
            return Launched(args, ros_env, log)

    return Cli
