"""Closed-loop evaluation of a policy on a robot's simulated twin, through the real ROS graph.

    python -m librobot_bringup.demo --episodes 10   (or: ros2 run librobot_bringup demo ...)
    python -m librobot_bringup.demo --robot humanoid

Starts the MuJoCo driver and the policy node as ROS nodes (the nodes and parameter files of
robot.launch.py, from system.py), runs the episodes and prints the
success rate and the control-loop latency (inference time, and observation-to-command age).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from librobot_bringup.system import policy_node, shipped_checkpoint


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="librobot-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="so100",
                        help="robot with a simulated twin: config/<robot>_sim.yaml (default so100)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint directory (default: the shipped checkpoints/act_<robot>)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default 10)")
    parser.add_argument("--seed", type=int, default=1000,
                        help="seed of the first episode (default 1000, unseen in training)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per episode (default: the twin's, config/<robot>_sim.yaml)")
    parser.add_argument("--replan-steps", type=int, default=None,
                        help="control periods between two inferences (default: config/<robot>_policy.yaml's)")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep node logs here")
    return parser.parse_args(argv)


def summarize(results, inference_ms: list[float], age_ms: list[float]) -> str:
    successes = sum(r.success for r in results)
    lines = [f"success rate: {successes}/{len(results)} = {successes / max(len(results), 1):.0%}"]
    for label, values in (("inference latency", inference_ms),
                          ("observation-to-command latency", age_ms)):
        if values:
            p50, p99 = np.percentile(values, [50, 99])
            lines.append(f"{label}: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(values)} chunks")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from librobot_models.checkpoint import read_checkpoint_header

    try:
        checkpoint = args.checkpoint or shipped_checkpoint(args.robot)
        read_checkpoint_header(checkpoint)
        overrides = {} if args.replan_steps is None else {"replan_steps": args.replan_steps}
        policy = policy_node(args.robot, checkpoint, **overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"librobot-demo: error: {err}", file=sys.stderr)
        return 2

    from librobot_msgs.msg import ActionChunk

    from librobot_bringup.session import run_sim_episodes

    inference_ms: list[float] = []
    age_ms: list[float] = []

    def watch_chunks(node):
        def on_chunk(msg: ActionChunk) -> None:
            inference_ms.append(msg.inference_latency_ms)
            age_ms.append(msg.observation_age_ms)

        node.create_subscription(ActionChunk, "/policy/action_chunk", on_chunk, 50)

    results = run_sim_episodes(
        [policy], args.robot, args.episodes, first_seed=args.seed, time_limit_s=args.time_limit,
        setup=watch_chunks, log_dir=args.log_dir, description="evaluating",
    )
    print(summarize(results, inference_ms, age_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
