"""Start ROS nodes as child processes from Python: the nodes the launch files start (system.py).

For machines without launch/launch_ros (and for tests and the demo): each node runs as
`python -m <module> --ros-args --params-file <yaml>...` in an environment that keeps DDS on
loopback unless the caller chose otherwise, and inherits this run's ROS_DOMAIN_ID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DDS_DEFAULTS = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}


def ros_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a ROS child process: `base` (default os.environ) + loopback DDS."""
    env = dict(os.environ if base is None else base)
    for key, value in DDS_DEFAULTS.items():
        env.setdefault(key, value)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class NodeSpec:
    """A node of the system, as both the launch files (launch_ros Node) and NodeGraph (a child
    process) start it: package and executable (its `ros2 run` entry point), the Python module
    with the same `main` (empty for a node that is not ours: NodeGraph then uses `ros2 run`), the node name, parameter files, then parameters that override them."""

    package: str
    executable: str
    module: str
    name: str
    param_files: tuple[Path, ...] = ()
    parameters: dict = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    def command(self, params_file: Path) -> list[str]:
        """`python -m <module>` with the node name, remappings, the parameter files and then
        `params_file` (holding `parameters`), so later values win as in launch_ros."""
        program = [sys.executable, "-m", self.module] if self.module else ["ros2", "run", self.package, self.executable]
        args = [*program, "--ros-args", "-r", f"__node:={self.name}"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        for path in self.param_files:
            args += ["--params-file", str(path)]
        return args + ["--params-file", str(params_file)]


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


class NodeGraph:
    """Context manager running a list of NodeSpecs as child processes; stops them on exit, also
    when this process is told to stop by SIGTERM (a service manager, `kill`): the children run
    in sessions of their own (a terminal's Ctrl-C reaches only this process, which then stops
    them in order), so nothing else would."""

    def __init__(self, nodes: list[NodeSpec], log_dir: Path | None = None, env: dict | None = None):
        self.nodes = nodes
        self.env = ros_environment(env)
        self._tmp = tempfile.TemporaryDirectory(prefix="librobot-graph-")
        self.log_dir = Path(log_dir) if log_dir else Path(self._tmp.name)
        self.processes: dict[str, subprocess.Popen] = {}
        self._previous_sigterm = None

    def __enter__(self) -> NodeGraph:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            for node in self.nodes:
                params = Path(self._tmp.name) / f"{node.name}.yaml"
                params.write_text(yaml.safe_dump({node.name: {"ros__parameters": node.parameters}}))
                log = open(self.log_dir / f"{node.name}.log", "wb")
                self.processes[node.name] = subprocess.Popen(
                    node.command(params), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                log.close()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raise RuntimeError with the node's log tail if a node has exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = self.log_tail(name)
                raise RuntimeError(f"node {name!r} exited with code {process.returncode}:\n{tail}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._tmp.cleanup()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
