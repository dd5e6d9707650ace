"""Record demonstrations into a rosbag2 bag, through ROS: of the simulated SO-100 by its scripted
expert, or of the real arm teleoperated with a leader arm (--teleop).

    python -m librobot_bringup.record --output data/bag --episodes 50   (or: ros2 run librobot_bringup record ...)
    ros2 run librobot_bringup record --teleop --output data/real --instruction "put the cube in the bowl"

Records what a user would record with `ros2 bag record`: camera images, joint states, the
commanded trajectories, the instruction and the episode events (boundaries and outcome).
Simulation: the MuJoCo driver and the expert run as ROS nodes. Teleoperation: the follower's
driver node, the leader's teleop node and (--camera-driver v4l2) a v4l2_camera node per camera;
ports and calibrations from config/<robot>_hardware.yaml unless given; episodes start and end
from the keyboard. `bag_to_hdf5` converts both kinds of bag with no extra flags.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from librobot_bringup.system import expert_node, sim_settings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="librobot-record", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="bag directory to create")
    parser.add_argument("--robot", default="so100",
                        help="robot with a simulated twin: config/<robot>_sim.yaml (default so100)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes to record (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per episode (default: the twin's, config/<robot>_sim.yaml)")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="cameras to render / record (default: the twin's; with --teleop: the robot's)")
    teleop = parser.add_argument_group("teleoperation on hardware (--teleop)")
    teleop.add_argument("--teleop", action="store_true",
                        help="record the real follower arm driven by a leader arm; --episodes is "
                             "then a maximum (0: until q)")
    teleop.add_argument("--instruction", help="the task, in words (required with --teleop)")
    teleop.add_argument("--port", help="follower serial port (default: the hardware config's)")
    teleop.add_argument("--calibration", help="follower calibration file")
    teleop.add_argument("--leader-port", help="leader serial port")
    teleop.add_argument("--leader-calibration", help="leader calibration file")
    parser.add_argument("--log-dir", type=Path, help="keep the nodes' logs here (default: a temporary directory)")
    teleop.add_argument("--camera-driver", choices=["v4l2", "none"], default="v4l2",
                        help="v4l2: a v4l2_camera node per camera (/dev/video0, 1, ...); none: "
                             "the camera topics come from elsewhere")
    return parser.parse_args(argv)


def _topics(spec, cameras) -> dict:
    """What a demonstration bag holds: {topic: (message class, QoS)}."""
    from librobot_msgs.msg import EpisodeEvent
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from librobot_bringup.recorder import reliable

    return {
        spec.topic("joint_states"): (JointState, reliable()),
        **{g.command_topic: (JointTrajectory, reliable()) for g in spec.commanded_groups},
        # an articulated vehicle: what its drive node sent the wheels
        **({spec.drive.wheel_commands_topic: (JointState, reliable())} if spec.drive is not None else {}),
        spec.topic("instruction"): (String, reliable(1, latched=True)),
        spec.topic("episode_events"): (EpisodeEvent, reliable(100, latched=True)),
        **{spec.camera(cam).topic: (Image, reliable(20)) for cam in cameras},
    }


def _teleop_nodes(args, spec) -> list:
    from librobot_bringup.graph import NodeSpec
    from librobot_bringup.system import hardware_driver_node, teleop_node

    driver = {"command_interface": "trajectory"}
    if args.port:
        driver["port"] = args.port
    if args.calibration:
        driver["calibration"] = args.calibration
    leader = {}
    if args.leader_port:
        leader["leader_port"] = args.leader_port
    if args.leader_calibration:
        leader["leader_calibration"] = args.leader_calibration
    nodes = [hardware_driver_node(args.robot, **driver), teleop_node(args.robot, **leader)]
    if args.camera_driver == "v4l2":
        for index, name in enumerate(args.cameras):
            nodes.append(NodeSpec(
                package="v4l2_camera", executable="v4l2_camera_node", module="",
                name=f"{name}_camera", parameters={"video_device": f"/dev/video{index}", "output_encoding": "rgb8",
                                                   "camera_frame_id": f"{name}_camera"},
                remappings=(("image_raw", spec.camera(name).topic),)))
    return nodes


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.teleop:
        return record_teleop(args)
    if args.episodes < 1:
        print(f"librobot-record: error: --episodes must be >= 1, got {args.episodes}", file=sys.stderr)
        return 2
    if args.output.exists():
        print(f"librobot-record: error: {args.output} already exists", file=sys.stderr)
        return 2

    from librobot_bringup.recorder import BagRecorder
    from librobot_bringup.session import run_sim_episodes
    from librobot_drivers.embodiment import load_embodiment

    try:
        spec = load_embodiment(args.robot)
        cameras, time_limit = sim_settings(args.robot)  # the robot has a simulated twin
    except (ValueError, FileNotFoundError) as err:
        print(f"librobot-record: error: {err}", file=sys.stderr)
        return 2
    args.cameras = args.cameras or list(cameras)
    args.time_limit = args.time_limit or time_limit
    topics = _topics(spec, args.cameras)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    recorders = []

    def attach_recorder(node):
        recorders.append(BagRecorder(node, args.output, topics, storage=args.storage))

    try:
        results = run_sim_episodes(
            [expert_node(embodiment=args.robot)], args.robot, args.episodes, first_seed=args.seed,
            time_limit_s=args.time_limit, cameras=tuple(args.cameras), setup=attach_recorder, description="recording",
            log_dir=args.log_dir,
            first_pause_s=1.0,  # the expert waits for the START: the recorder matches everyone first
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


def record_teleop(args) -> int:
    if not args.instruction:
        print("librobot-record: error: --teleop needs --instruction (the task, in words)", file=sys.stderr)
        return 2
    if args.output.exists():
        print(f"librobot-record: error: {args.output} already exists", file=sys.stderr)
        return 2
    if args.camera_driver == "v4l2" and shutil.which("ros2") is None:
        print("librobot-record: error: --camera-driver v4l2 needs a ROS install with v4l2_camera; "
              "publish the cameras yourself and pass --camera-driver none", file=sys.stderr)
        return 2

    from librobot_bringup.recorder import BagRecorder
    from librobot_bringup.session import run_keyboard_episodes
    from librobot_drivers.embodiment import load_embodiment
    from librobot_drivers.episodes import KeyboardEpisodes

    try:
        spec = load_embodiment(args.robot)
        args.cameras = args.cameras or [c.name for c in spec.required_cameras]
        keys = KeyboardEpisodes(args.episodes if args.episodes > 0 else 0)
        nodes = _teleop_nodes(args, spec)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"librobot-record: error: {err}", file=sys.stderr)
        return 2
    topics = _topics(spec, args.cameras)
    # "ready" once the arm, the leader's commands and every camera arrive
    streams = [spec.topic("joint_states"), *(g.command_topic for g in spec.commanded_groups),
               *(spec.camera(c).topic for c in args.cameras)]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    recorders = []
    try:
        results = run_keyboard_episodes(
            nodes, spec, args.instruction, keys, sys.stdin, say=lambda text: print(text, flush=True),
            missing=lambda: [t for t in streams if not recorders or recorders[0].counts[t] == 0],
            setup=lambda node: recorders.append(BagRecorder(node, args.output, topics, storage=args.storage)),
            log_dir=args.log_dir)
    except (RuntimeError, TimeoutError) as err:
        print(f"librobot-record: error: {err}", file=sys.stderr)
        return 1
    finally:
        for recorder in recorders:
            recorder.close()
    print(f"recorded {len(results)} episodes to {args.output} ({args.storage}); "
          f"successes {sum(r.success for r in results)}/{len(results)}")
    for topic, count in recorders[0].counts.items():
        print(f"  {topic}: {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
