"""Closed-loop evaluation of a checkpoint on the simulated SO-100, without ROS.

    python -m librobot_training.evaluate --checkpoint runs/act_so100 --episodes 20

The same Policy.infer the policy node calls, on the same MuJoCo twin, with the timing of the ROS
loop: one observation every `replan_steps` control periods, the simulation running on while the
model infers (`--latency-ms`: a fixed delay, or `measured`), chunks turned into targets by an
executor (`--execution`: receding, temporal_ensemble, rtc), checked by the safety layer and
followed by the driver's trajectory follower. Stepped as fast as the CPU allows; useful while training. The ROS graph
version is `librobot_bringup.demo`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from librobot_drivers.episodes import EpisodeManager, EpisodeSchedule
from librobot_drivers.sim.so100_sim import SO100Sim
from librobot_drivers.trajectory import TrajectoryFollower, chunk_velocities
from librobot_models.execution import MODES, make_executor
from librobot_models.policy import Policy
from librobot_models.safety import SafetyFilter, SafetyLimits, UnsafeCommand


@dataclass(frozen=True)
class Rollout:
    seed: int
    success: bool
    duration_s: float
    inference_ms: list[float]
    frames: list[np.ndarray]  # front camera at every observation, when recorded
    commands: np.ndarray  # (ticks, D) the joint target at the end of every control period
    refused_chunks: int  # plans the safety layer refused (the arm held instead)

    def smoothness(self, period: float) -> tuple[float, float]:
        """(largest change of a joint target in one control period, rad; mean absolute jerk of
        the targets, rad/s^3): what chunk boundaries do to the motion."""
        if len(self.commands) < 4:
            return 0.0, 0.0
        largest = float(np.abs(np.diff(self.commands, axis=0)).max())
        jerk = float(np.abs(np.diff(self.commands, n=3, axis=0)).mean()) / period**3
        return largest, jerk


def rollout(
    policy: Policy, sim: SO100Sim, seed: int, time_limit_s: float = 15.0, replan_steps: int = 4,
    keep_frames: bool = False, latency_s: float | None = 0.0, execution: str = "receding",
    guidance: bool = True,
) -> Rollout:
    """One episode, timed like the policy node: an observation every `replan_steps` control
    periods (or, when inference is slower, at the first period after the last chunk arrived);
    the simulation keeps running while the model infers, and the chunk takes effect `latency_s`
    after its observation (None: the measured inference time). The executor (`execution`, see
    librobot_models.execution) turns the chunks into the targets the follower tracks; with rtc
    and a flow-matching or DDPM/DDIM policy the chunks are sampled with RTC's guidance (`guidance=False`: the
    blend alone, for comparison)."""
    period = 1.0 / policy.rate_hz
    episodes = EpisodeManager(EpisodeSchedule(episodes=1, first_seed=seed, time_limit_s=time_limit_s,
                                              pause_s=0.0))
    episodes.update(0.0, False)  # starts the episode
    sim.reset(seed)
    policy.reset()
    follower = TrajectoryFollower(sim.read_joints().position)
    executor = make_executor(execution, period)
    spec = sim.spec
    safety = SafetyFilter(SafetyLimits(spec.lower_limits, spec.upper_limits, spec.velocity_limits))
    refused = 0
    inference_ms, frames, commands = [], [], []
    pending = None  # (chunk, observation time, arrival time) of the chunk being "computed"
    next_inference, t = 0.0, 0.0

    def observation() -> dict:
        images = {cam: sim.read_camera(cam) for cam in policy.camera_names}
        return {"images": images, "state": sim.read_joints().position, "time_s": t}

    while True:
        if pending is None and t >= next_inference - 1e-9:
            obs = observation()
            if keep_frames:
                frames.append(obs["images"][policy.camera_names[0]].copy())
            started = time.perf_counter()
            # rtc with a policy whose head can be guided: the chunk is sampled to agree with the plan
            inpaint = (executor.inpainting(t, policy.chunk_size)
                       if guidance and policy.supports_inpainting else None)
            chunk = policy.infer(obs, inpaint=inpaint)["actions"]
            inference_ms.append((time.perf_counter() - started) * 1e3)
            delay = inference_ms[-1] * 1e-3 if latency_s is None else latency_s
            pending = (sim.spec.clip(chunk), t, t + delay)
            next_inference = t + replan_steps * period
        elif policy.observation_history > 1:
            policy.observe(observation())  # the steps in between, for the model's history
        end = t + period
        if pending is not None and pending[2] < end - 1e-9:
            chunk, observed, arrival = pending
            sim.follow(follower, max(0.0, arrival - t))  # the old targets until the chunk is there
            executor.add(chunk, observed, arrival)
            times, targets = executor.plan(arrival)
            try:  # as the node publishes it: through the safety layer, stamped now, ending at
                # rest, cubic through the targets; a refused plan holds the arm where it is going
                targets = safety.filter(times, targets, sim.read_joints().position, arrival)
                follower.set_trajectory(sim.time, sim.time, times - arrival, targets,
                                        chunk_velocities(targets, period))
            except UnsafeCommand:
                follower.hold(follower.sample(sim.time)[0])
                refused += 1
            sim.follow(follower, end - arrival)
            pending = None
        else:
            sim.follow(follower, period)
        t = end
        commands.append(follower.positions_at(np.array([sim.time]))[0])
        event = episodes.update(t, sim.task_success())
        if event is not None:
            return Rollout(seed, event.success, t, inference_ms, frames, np.array(commands), refused)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="librobot-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    parser.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    parser.add_argument("--time-limit", type=float, default=15.0, help="seconds per episode")
    parser.add_argument("--replan-steps", type=int, default=4, help="control periods per inference (default 4)")
    parser.add_argument("--latency-ms", default="0",
                        help="delay from observation to chunk while the simulation runs on: "
                             "milliseconds, or 'measured' for the inference time (default 0)")
    parser.add_argument("--execution", choices=MODES, default="receding",
                        help="how overlapping chunks become targets (default receding)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        policy = Policy.from_checkpoint(args.checkpoint)
    except (OSError, ValueError) as err:
        print(f"librobot-evaluate: error: {err}", file=sys.stderr)
        return 2
    if not 1 <= args.replan_steps < policy.chunk_size:
        print(f"librobot-evaluate: error: --replan-steps {args.replan_steps}: expected 1 to "
              f"{policy.chunk_size - 1} (the chunk has {policy.chunk_size} steps, the first is now)",
              file=sys.stderr)
        return 2
    if args.latency_ms == "measured":
        latency_s = None
    else:
        try:
            latency_s = float(args.latency_ms) * 1e-3
        except ValueError:
            latency_s = -1.0
        if not latency_s >= 0:
            print(f"librobot-evaluate: error: --latency-ms {args.latency_ms}: expected milliseconds "
                  ">= 0 or 'measured'", file=sys.stderr)
            return 2
    sim = SO100Sim(render_cameras=tuple(policy.camera_names))
    sim.connect()
    results = []
    with tqdm(range(args.seed, args.seed + args.episodes), unit="episode") as seeds:
        for seed in seeds:
            results.append(rollout(policy, sim, seed, args.time_limit, args.replan_steps,
                                   latency_s=latency_s, execution=args.execution))
            seeds.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    latencies = [ms for r in results for ms in r.inference_ms]
    successes = sum(r.success for r in results)
    print(f"success rate: {successes}/{len(results)} = {successes / len(results):.0%}")
    refused = sum(r.refused_chunks for r in results)
    if refused:
        print(f"safety layer: refused {refused} chunks (the arm held instead)")
    print(f"inference latency: p50 {np.percentile(latencies, 50):.1f} ms, "
          f"p99 {np.percentile(latencies, 99):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
