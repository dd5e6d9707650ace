"""Run episodes through the real ROS graph and collect what happened.

Used by `librobot-record` (expert in the loop, bag out) and `librobot-demo` (policy in the loop,
success rate and latency out): both start the simulated driver and a commander as child
processes (graph.NodeGraph), watch librobot_msgs/EpisodeEvent from this process, and stop once
the requested number of episodes has ended. On hardware (`librobot-record --teleop`) the episodes
come from the keyboard instead: this process publishes their events and the instruction.
"""

from __future__ import annotations

import select
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

import rclpy
from librobot_msgs.msg import EpisodeEvent
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from tqdm import tqdm

from librobot_bringup.graph import NodeGraph, NodeSpec
from librobot_bringup.system import machine_nodes, on_sim_time, sim_clock, sim_driver_node, sim_settings
from librobot_drivers import episodes as episode_keys
from librobot_drivers.embodiment import Embodiment
from librobot_drivers.ros_common import EPISODE_EVENTS, LATCHED

STARTUP_ALLOWANCE_S = 120.0  # model loading and DDS discovery before the first episode
SIM_CLOCK_SLOWDOWN = 3.0  # a twin that is the clock: wall seconds allowed per simulated second
SETTLE_S = 0.5  # after the last episode, for every subscriber to take its last messages


@contextmanager
def _session():
    """This process's node and executor in a context of their own, shut down on exit."""
    context = Context()
    rclpy.init(context=context)
    node = Node("librobot_session", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()


@dataclass(frozen=True)
class EpisodeResult:
    index: int
    seed: int
    success: bool
    duration_s: float


def _settle(executor) -> None:
    """Spin a moment longer: the last END reached our own subscription, but those that `setup`
    attached (a bag recorder) are served by the same executor, possibly on a later spin."""
    until = time.monotonic() + SETTLE_S
    while time.monotonic() < until:
        executor.spin_once(timeout_sec=0.05)


def run_sim_episodes(
    commanders: list[NodeSpec],
    robot: str,
    episodes: int,
    first_seed: int = 0,
    time_limit_s: float | None = None,
    cameras: tuple[str, ...] | None = None,
    setup: Callable[[Node], None] | None = None,
    log_dir: Path | None = None,
    description: str = "episodes",
    first_pause_s: float = 0.0,
) -> list[EpisodeResult]:
    """Start `robot`'s simulated twin with `commanders` and return once `episodes` have ended.

    `time_limit_s` and `cameras` (rendered) default to the twin's config/<robot>_sim.yaml;
    `first_pause_s`: the driver's wait before the first episode, once a commander is there.

    `setup(node)` runs before the graph starts, so that recorders and monitors it attaches to
    `node` see the first message of the first episode.
    """
    default_cameras, default_limit = sim_settings(robot)
    cameras = default_cameras if cameras is None else cameras
    time_limit_s = default_limit if time_limit_s is None else time_limit_s
    results: list[EpisodeResult] = []
    started: dict[int, float] = {}

    def on_event(msg: EpisodeEvent) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if msg.event == EpisodeEvent.START:
            started[msg.episode_index] = stamp
        else:
            duration = stamp - started.get(msg.episode_index, stamp)
            results.append(EpisodeResult(msg.episode_index, msg.seed, msg.success, duration))
            progress.update(1)
            progress.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")

    with _session() as (node, executor):
        if setup is not None:
            setup(node)
        node.create_subscription(EpisodeEvent, "/episode_events", on_event, EPISODE_EVENTS)
        driver = sim_driver_node(robot, episodes=episodes, first_seed=first_seed,
                                 episode_time_limit_s=time_limit_s, cameras=list(cameras),
                                 first_episode_pause_s=first_pause_s)
        others = [*machine_nodes(robot), *commanders]
        # a twin that is the clock may run slower than the wall: allow it SIM_CLOCK_SLOWDOWN
        slowdown = 1.0
        if sim_clock(robot):
            others, slowdown = [on_sim_time(n) for n in others], SIM_CLOCK_SLOWDOWN
        nodes = [driver, *others]
        deadline = time.monotonic() + STARTUP_ALLOWANCE_S + episodes * (time_limit_s + 3.0) * slowdown
        with NodeGraph(nodes, log_dir=log_dir) as graph, tqdm(
            total=episodes, desc=description, unit="episode"
        ) as progress:
            while len(results) < episodes:
                executor.spin_once(timeout_sec=0.1)
                graph.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(results)} of {episodes} episodes ended before the time limit; "
                        f"driver log:\n{graph.log_tail('driver')}"
                    )
            _settle(executor)
    return results


def run_keyboard_episodes(
    nodes: list[NodeSpec],
    spec: Embodiment,
    instruction: str,
    keys: episode_keys.KeyboardEpisodes,
    stdin: TextIO,
    say: Callable[[str], None],
    missing: Callable[[], list[str]],
    setup: Callable[[Node], None] | None = None,
    log_dir: Path | None = None,
    ready_timeout_s: float = 60.0,
) -> list[EpisodeResult]:
    """Start `nodes` (the hardware), wait until `missing()` (the streams not arriving yet) is
    empty, then publish the episode events the keys on `stdin` give (librobot_msgs/EpisodeEvent,
    with `instruction`) until the keys are done. `setup(node)` runs first, as in
    run_sim_episodes."""
    from std_msgs.msg import String

    results: list[EpisodeResult] = []
    started: dict[int, float] = {}
    with _session() as (node, executor):
        if setup is not None:
            setup(node)
        events = node.create_publisher(EpisodeEvent, spec.topic("episode_events"), EPISODE_EVENTS)
        instruction_pub = node.create_publisher(String, spec.topic("instruction"), LATCHED)
        with NodeGraph(nodes, log_dir=log_dir) as graph:
            deadline = time.monotonic() + ready_timeout_s
            while missing():
                executor.spin_once(timeout_sec=0.1)
                graph.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"nothing on {', '.join(missing())} after {ready_timeout_s:.0f} s; "
                                       f"driver log:\n{graph.log_tail('driver')}")
            instruction_pub.publish(String(data=instruction))
            say(f"ready: {instruction!r}\n{keys.HELP}")
            while not keys.done:
                executor.spin_once(timeout_sec=0.02)
                graph.check_alive()
                if not select.select([stdin], [], [], 0)[0]:
                    continue
                line = stdin.readline()
                for event in keys.key(line if line else None):
                    now = node.get_clock().now()
                    msg = EpisodeEvent()
                    msg.header.stamp = now.to_msg()
                    msg.event = EpisodeEvent.START if event.kind == "start" else EpisodeEvent.END
                    msg.episode_index, msg.seed = event.index, event.seed
                    msg.instruction, msg.success = instruction, event.success
                    events.publish(msg)
                    t = now.nanoseconds * 1e-9
                    if event.kind == "start":
                        started[event.index] = t
                        say(f"episode {event.index}: recording")
                    else:
                        results.append(EpisodeResult(event.index, event.seed, event.success,
                                                     t - started[event.index]))
                        say(f"episode {event.index}: {'success' if event.success else 'failure'} "
                            f"({results[-1].duration_s:.1f} s)")
            _settle(executor)
    return results
