"""Run simulated episodes through the real ROS graph and collect what happened.

Used by `librobot-record` (expert in the loop, bag out) and `librobot-demo` (policy in the loop,
success rate and latency out): both start the simulated driver and a commander as child
processes (graph.NodeGraph), watch librobot_msgs/EpisodeEvent from this process, and stop once
the requested number of episodes has ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import rclpy
from librobot_msgs.msg import EpisodeEvent
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from tqdm import tqdm

from librobot_bringup.graph import NodeGraph, NodeSpec
from librobot_bringup.system import sim_driver_node
from librobot_drivers.ros_common import EPISODE_EVENTS

STARTUP_ALLOWANCE_S = 120.0  # model loading and DDS discovery before the first episode


@dataclass(frozen=True)
class EpisodeResult:
    index: int
    seed: int
    success: bool
    duration_s: float


def run_sim_episodes(
    commanders: list[NodeSpec],
    robot: str,
    episodes: int,
    first_seed: int = 0,
    time_limit_s: float = 15.0,
    cameras: tuple[str, ...] = ("front",),
    setup: Callable[[Node], None] | None = None,
    log_dir: Path | None = None,
    description: str = "episodes",
) -> list[EpisodeResult]:
    """Start `robot`'s simulated twin with `commanders` and return once `episodes` have ended.

    `setup(node)` runs before the graph starts, so that recorders and monitors it attaches to
    `node` see the first message of the first episode.
    """
    context = Context()
    rclpy.init(context=context)
    node = Node("librobot_session", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
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

    try:
        if setup is not None:
            setup(node)
        node.create_subscription(EpisodeEvent, "/episode_events", on_event, EPISODE_EVENTS)
        driver = sim_driver_node(robot, episodes=episodes, first_seed=first_seed,
                                 episode_time_limit_s=time_limit_s, cameras=list(cameras))
        nodes = [driver, *commanders]
        deadline = time.monotonic() + STARTUP_ALLOWANCE_S + episodes * (time_limit_s + 3.0)
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
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
    return results
