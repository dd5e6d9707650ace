"""Evaluation of a checkpoint without ROS: closed loop on the simulated twin of the checkpoint's
robot (SO-100, humanoid, wheel loader), or offline on episodes.

    python -m librobot_training.evaluate --checkpoint runs/act_so100 --episodes 20

The same Policy.infer the policy node calls, on the same MuJoCo twin, with the timing of the ROS
loop: one observation every `replan_steps` control periods, the simulation running on while the
model infers (`--latency-ms`: a fixed delay, or `measured`), chunks turned into targets by an
executor (`--execution`: receding, temporal_ensemble, rtc), checked by the safety layer and
followed by the driver's trajectory follower. Stepped as fast as the CPU allows; useful while training. The ROS graph
version is `librobot_bringup.demo`.

    python -m librobot_training.evaluate --checkpoint runs/act_so100 --offline data/so100_sim/hdf5 \
        --offline-episodes 3 7

Offline instead: the policy's chunks against the recorded actions of held-out episodes, action MSE
and L1 per joint in robot units, printed as a table (`offline_errors`, usable on its own).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from librobot_drivers.episodes import EpisodeManager, EpisodeSchedule
from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.robot import SimulatedRobot
from librobot_drivers.robots import make_robot
from librobot_drivers.trajectory import GroupFollowers, chunk_velocities
from librobot_models.execution import MODES, make_executor
from librobot_models.policy import Policy
from librobot_models.safety import SafetyFilter, SafetyLimits, UnsafeCommand
from librobot_training.datasets import open_source


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


def simulated_twin(policy: Policy) -> SimulatedRobot:
    """The MuJoCo twin of the robot `policy` was trained for (its checkpoint's embodiment; the
    SO-100 for a checkpoint that names none), rendering the policy's cameras."""
    spec = load_embodiment(policy.metadata.get("embodiment") or "so100")
    return make_robot(f"{spec.name}_sim", spec, render_cameras=tuple(policy.camera_names))


def rollout(
    policy: Policy, sim: SimulatedRobot, seed: int, time_limit_s: float = 15.0, replan_steps: int = 4,
    keep_frames: bool = False, latency_s: float | None = 0.0, execution: str = "receding",
    guidance: bool = True,
) -> Rollout:
    """One episode, timed like the policy node: an observation every `replan_steps` control
    periods (or, when inference is slower, at the first period after the last chunk arrived);
    the simulation keeps running while the model infers, and the chunk takes effect `latency_s`
    after its observation (None: the measured inference time). The executor (`execution`, see
    librobot_models.execution) turns the chunks into the targets the follower tracks; with rtc
    and a flow-matching or diffusion policy the chunks are sampled with RTC's guidance
    (`guidance=False`: the blend alone, for comparison)."""
    period = 1.0 / policy.rate_hz
    episodes = EpisodeManager(EpisodeSchedule(episodes=1, first_seed=seed, time_limit_s=time_limit_s,
                                              pause_s=0.0))
    episodes.update(0.0, False)  # starts the episode
    sim.reset(seed)
    policy.reset()
    torch.manual_seed(seed)  # a sampling head draws the same noise for the same episode: reproducible figures
    # one follower per commanded controller (a drive's speed as the drive node ramps it); the
    # twin holds the other groups
    spec = sim.view
    follower = GroupFollowers.for_embodiment(spec, sim.policy_state())
    executor = make_executor(execution, period)
    safety = SafetyFilter(SafetyLimits.for_robot(spec))
    refused = 0
    inference_ms, frames, commands = [], [], []
    pending = None  # (chunk, observation time, arrival time) of the chunk being "computed"
    next_inference, t = 0.0, 0.0

    def observation() -> dict:
        images = {cam: sim.read_camera(cam) for cam in policy.camera_names}
        return {"images": images, "state": sim.policy_state(), "time_s": t}

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
            pending = (spec.clip(chunk), t, t + delay)
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
                targets = safety.filter(times, targets, sim.policy_state(), arrival,
                                        follower.sample(sim.time)[1])
                velocities = chunk_velocities(targets, period)
                for group in spec.groups:  # one trajectory per controller, as the node publishes
                    columns = spec.group_index(group)
                    follower.set_trajectory(group.name, sim.time, sim.time, times - arrival,
                                            targets[:, columns], velocities[:, columns])
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


@dataclass(frozen=True)
class OfflineErrors:
    """How far a policy's chunks are from the recorded actions, per joint, in robot units.

    At every `stride`-th frame of each episode the policy gets the recorded observation; each step
    of its chunk is compared with the action recorded that many frames later, steps past the
    episode's end left out."""

    joint_names: list[str]
    mse: np.ndarray  # (action_dim,) mean squared error
    l1: np.ndarray  # (action_dim,) mean absolute error
    episodes: int
    observations: int  # chunks predicted
    steps: int  # chunk steps compared (each joint counted once)

    def table(self) -> str:
        width = max(8, *map(len, self.joint_names))
        lines = [f"offline action error: {self.episodes} episodes, {self.observations} observations, "
                 f"{self.steps} chunk steps (robot units)",
                 f"{'joint':<{width}}  {'MSE':>11}  {'L1':>11}"]
        rows = [*zip(self.joint_names, self.mse, self.l1), ("mean", self.mse.mean(), self.l1.mean())]
        lines += [f"{name:<{width}}  {mse:>11.4e}  {l1:>11.4e}" for name, mse, l1 in rows]
        return "\n".join(lines)


def offline_errors(policy: Policy, dataset: str | Path, episodes: list[int] | None = None, stride: int = 1,
                   seed: int = 0) -> OfflineErrors:
    """Action MSE and L1 of `policy` on recorded episodes of `dataset` (a spec for
    librobot_training.datasets.open_source, e.g. a directory of HDF5 episodes); `episodes`: indices
    in its order (None: all). Chunks are compared as the model samples them: a temporal ensembler is
    left out; the frames in between inferences are passed to `observe` (history windows); torch is
    seeded with seed + episode index before each episode (sampling heads)."""
    source = open_source(dataset)
    info = source.info
    if info.state_dim != policy.config.state_dim or info.action_dim != policy.action_dim:
        raise ValueError(f"dataset {dataset} has state/action dims {info.state_dim}/{info.action_dim}, the "
                         f"policy {policy.config.state_dim}/{policy.action_dim}")
    missing = [c for c in policy.camera_names if c not in info.camera_names]
    if missing:
        raise ValueError(f"dataset {dataset} lacks the policy's cameras {missing} (it has {info.camera_names})")
    indices = list(range(len(source))) if episodes is None else list(episodes)
    bad = [i for i in indices if not 0 <= i < len(source)]
    if bad or not indices:
        raise ValueError(f"episodes {bad or indices} are not in 0..{len(source) - 1} of dataset {dataset}")
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"stride = {stride!r}: expected an int >= 1")
    names = list(policy.joint_names or info.joint_names)
    if len(names) != policy.action_dim:
        names = [f"action_{i}" for i in range(policy.action_dim)]

    squared = np.zeros(policy.action_dim)
    absolute = np.zeros(policy.action_dim)
    observations = steps = 0
    ensembler, policy.ensembler = policy.ensembler, None
    try:
        for index in indices:
            fields = source.read(index, ["state", "action", *(f"images/{c}" for c in policy.camera_names)])
            actions = fields["action"].astype(np.float64)  # (T, action_dim)
            instruction = source.episode(index).instruction
            torch.manual_seed(seed + index)
            policy.reset()
            for t in range(len(actions)):
                obs = {"images": {c: fields[f"images/{c}"][t] for c in policy.camera_names},
                       "state": fields["state"][t], "instruction": instruction}
                if t % stride:
                    policy.observe(obs)
                    continue
                chunk = policy.infer(obs)["actions"]  # (k, action_dim)
                recorded = actions[t : t + len(chunk)]  # (valid, action_dim), shorter at the end
                error = chunk[: len(recorded)] - recorded
                squared += (error**2).sum(0)
                absolute += np.abs(error).sum(0)
                observations += 1
                steps += len(recorded)
    finally:
        policy.ensembler = ensembler
        source.close()
    return OfflineErrors(names, squared / steps, absolute / steps, len(indices), observations, steps)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="librobot-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    parser.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per episode (default: the twin's, 15 s for the SO-100, 20 s for the humanoid, "
                             "40 s for the wheel loader)")
    parser.add_argument("--replan-steps", type=int, default=4, help="control periods per inference (default 4)")
    parser.add_argument("--latency-ms", default="0",
                        help="delay from observation to chunk while the simulation runs on: "
                             "milliseconds, or 'measured' for the inference time (default 0)")
    parser.add_argument("--execution", choices=MODES, default="receding",
                        help="how overlapping chunks become targets (default receding)")
    offline = parser.add_argument_group("offline evaluation (recorded episodes instead of the simulation)")
    offline.add_argument("--offline", metavar="DATASET",
                         help="action MSE and L1 per joint against the recorded actions of DATASET "
                              "(a directory of HDF5 episodes, or another dataset spec of training)")
    offline.add_argument("--offline-episodes", type=int, nargs="+", metavar="I",
                         help="episode indices in the dataset's order (default: all), e.g. the held-out ones")
    offline.add_argument("--stride", type=int, default=1, help="predict at every N-th frame (default 1)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        policy = Policy.from_checkpoint(args.checkpoint)
    except (OSError, ValueError) as err:
        print(f"librobot-evaluate: error: {err}", file=sys.stderr)
        return 2
    if args.offline is not None:
        try:
            errors = offline_errors(policy, args.offline, args.offline_episodes, args.stride, args.seed)
        except (OSError, ValueError) as err:
            print(f"librobot-evaluate: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        print(errors.table())
        return 0
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
    sim = simulated_twin(policy)
    sim.connect()
    results = []
    with tqdm(range(args.seed, args.seed + args.episodes), unit="episode") as seeds:
        for seed in seeds:
            results.append(rollout(policy, sim, seed, args.time_limit or sim.episode_time_limit_s, args.replan_steps,
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
