"""Record expert demonstrations of the simulated SO-100 into a rosbag2 bag, through ROS.

    python -m librobot_bringup.record --output data/bag --episodes 50   (or: ros2 run librobot_bringup record ...)

Starts the MuJoCo driver and the scripted expert as ROS nodes and records what a user would
record with `ros2 bag record`: camera images, joint states, the commanded trajectories, the
instruction and the episode events (boundaries and outcome).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from librobot_bringup.system import config_file, expert_node


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="librobot-record", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="bag directory to create")
    parser.add_argument("--robot", default="so100",
                        help="robot with a simulated twin: config/<robot>_sim.yaml (default so100)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes to record (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--time-limit", type=float, default=15.0, help="seconds per episode")
    parser.add_argument("--cameras", nargs="+", default=["front"], help="cameras to render")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.episodes < 1:
        print(f"librobot-record: error: --episodes must be >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    if args.output.exists():
        print(f"librobot-record: error: {args.output} already exists", file=sys.stderr)
        return 2

    from librobot_msgs.msg import EpisodeEvent
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from librobot_bringup.recorder import BagRecorder, reliable
    from librobot_bringup.session import run_sim_episodes
    from librobot_drivers.embodiment import load_embodiment

    try:
        spec = load_embodiment(args.robot)
        config_file(f"{args.robot}_sim.yaml")  # the robot has a simulated twin
    except (ValueError, FileNotFoundError) as err:
        print(f"librobot-record: error: {err}", file=sys.stderr)
        return 2
    topics = {
        spec.topic("joint_states"): (JointState, reliable()),
        spec.command_topic: (JointTrajectory, reliable()),
        spec.topic("instruction"): (String, reliable(1, latched=True)),
        spec.topic("episode_events"): (EpisodeEvent, reliable(100, latched=True)),
        **{spec.camera(cam).topic: (Image, reliable(20)) for cam in args.cameras},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    recorders = []

    def attach_recorder(node):
        recorders.append(BagRecorder(node, args.output, topics, storage=args.storage))

    try:
        results = run_sim_episodes(
            [expert_node(embodiment=args.robot)], args.robot, args.episodes, first_seed=args.seed,
            time_limit_s=args.time_limit, cameras=tuple(args.cameras), setup=attach_recorder, description="recording",
        )
    finally:
        for recorder in recorders:
            recorder.close()
    successes = sum(r.success for r in results)
    print(f"recorded {len(results)} episodes to {args.output} ({args.storage}); "
          f"expert success {successes}/{len(results)}")
    for topic, count in recorders[0].counts.items():
        print(f"  {topic}: {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
