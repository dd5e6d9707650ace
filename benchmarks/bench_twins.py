"""Real-time factor of each MuJoCo twin driven by its scripted expert, as the driver node runs it:
the plan followed at the control rate, the cameras rendered at their rate. The baseline is the
wall clock (factor 1.0 = exactly real time; above 1 the twin keeps up with ROS on this machine);
the physics alone, without cameras, is measured in the same run.

    python benchmarks/bench_twins.py [--robots so100 humanoid wheel_loader] [--seconds 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")

from librobot_drivers.embodiment import load_embodiment  # noqa: E402
from librobot_drivers.robots import make_robot  # noqa: E402
from librobot_drivers.sim.experts import make_expert  # noqa: E402
from librobot_drivers.trajectory import GroupFollowers  # noqa: E402

CAMERAS = {"so100": ("front",), "humanoid": ("head",), "wheel_loader": ("cab",)}


def run_expert(robot: str, seconds: float, cameras: tuple[str, ...], seed: int) -> tuple[float, float]:
    """(simulated s, wall s) of `seconds` of the expert's episode `seed`, `cameras` rendered at
    their rate; the twin's construction and reset are not timed."""
    spec = load_embodiment(robot)
    sim = make_robot(f"{robot}_sim", spec, render_cameras=cameras)
    sim.connect()
    try:
        sim.reset(seed)
        expert = make_expert(spec, sim.object_pose()[:3], sim.read_joints().position)
        view = sim.view
        period = view.control_period
        ticks = int(min(seconds, expert.duration) / period)
        times = period * np.arange(1, ticks + 1)
        plan = np.stack([expert.positions_at(t) for t in times])
        followers = GroupFollowers.for_embodiment(view, sim.policy_state())
        for group in view.groups:
            followers.set_trajectory(group.name, sim.time, sim.time, times, plan[:, view.group_index(group)])
        frame_every = {name: max(1, round(1.0 / (spec.camera(name).rate_hz * period))) for name in cameras}
        start_sim, start = sim.time, time.perf_counter()
        for tick in range(ticks):
            sim.follow(followers, period)
            for name, every in frame_every.items():
                if tick % every == 0:
                    sim.read_camera(name)
        return sim.time - start_sim, time.perf_counter() - start
    finally:
        sim.disconnect()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", nargs="+", default=list(CAMERAS), choices=list(CAMERAS))
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds per robot (default 20)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"{'twin':<14}{'physics only':>16}{'with cameras':>16}   (times real time; baseline: the wall clock)")
    for robot in args.robots:
        factors = []
        for cameras in ((), CAMERAS[robot]):
            simulated, wall = run_expert(robot, args.seconds, cameras, args.seed)
            factors.append(simulated / wall)
        print(f"{robot:<14}{factors[0]:>15.2f}x{factors[1]:>15.2f}x   ({simulated:.1f} s simulated, "
              f"cameras {', '.join(CAMERAS[robot])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
