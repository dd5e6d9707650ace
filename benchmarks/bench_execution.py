"""Chunk execution under latency: success and smoothness per execution mode and injected delay.

    python benchmarks/bench_execution.py [--checkpoint DIR] [--episodes 20] [--seed 1000]
        [--delays-ms 0 100 200 300] [--modes receding temporal_ensemble rtc]

`librobot_training.evaluate`'s rollout on the MuJoCo twin, the simulation running on while the
model "infers" for the injected delay. Per mode and delay: success rate over the seeds (unseen in
training from 1000 on), the largest change of a joint target in one control period (chunk
boundaries show up here) and the mean absolute jerk of the targets. A policy whose head can be
guided (flow matching, DDPM/DDIM) gets two rtc rows: with RTC's guided inpainting and with the blend alone. The ratios compare each row's
jerk and largest step with the baseline measured in the same run: receding at the first delay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from librobot_drivers.sim.so100_sim import SO100Sim
from librobot_models.execution import MODES
from librobot_models.policy import Policy
from librobot_training.evaluate import rollout

DEFAULT = Path(__file__).resolve().parents[1] / "src/librobot_bringup/checkpoints/act_so100"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench_execution", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT, help="checkpoint (default: shipped ACT)")
    parser.add_argument("--episodes", type=int, default=20, help="seeds per cell (default 20)")
    parser.add_argument("--seed", type=int, default=1000, help="first seed (default 1000)")
    parser.add_argument("--time-limit", type=float, default=15.0, help="seconds per episode")
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0, 100, 200, 300])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--replan-steps", type=int, default=4)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    policy = Policy.from_checkpoint(args.checkpoint)
    period = 1.0 / policy.rate_hz
    sim = SO100Sim(render_cameras=tuple(policy.camera_names))
    sim.connect()
    rows = []
    # a policy whose head can be guided runs rtc twice: with RTC's guided inpainting, and the blend alone
    variants = [(mode, True) for mode in args.modes]
    if "rtc" in args.modes and policy.supports_inpainting:
        variants.append(("rtc", False))
    cells = [(mode, guided, delay) for mode, guided in variants for delay in args.delays_ms]
    for mode, guided, delay in tqdm(cells, unit="cell"):
        results = [rollout(policy, sim, seed, args.time_limit, args.replan_steps,
                           latency_s=delay * 1e-3, execution=mode, guidance=guided)
                   for seed in range(args.seed, args.seed + args.episodes)]
        steps, jerks = zip(*(r.smoothness(period) for r in results))
        label = mode if guided or mode != "rtc" else "rtc (blend only)"
        if mode == "rtc" and guided and policy.supports_inpainting:
            label = "rtc (guided)"
        rows.append((label, delay, sum(r.success for r in results), max(steps), float(np.mean(jerks))))
    _, _, _, base_step, base_jerk = rows[0]
    print(f"{policy.framework} {args.checkpoint.name}: {args.episodes} seeds from {args.seed}, "
          f"replanning every {args.replan_steps} periods of {period * 1e3:.0f} ms")
    print(f"{'mode':<20}{'delay ms':>9}{'success':>9}{'max step rad':>14}{'jerk rad/s3':>13}"
          f"{'step ratio':>12}{'jerk ratio':>12}")
    for mode, delay, success, step, jerk in rows:
        print(f"{mode:<20}{delay:>9.0f}{f'{success}/{args.episodes}':>9}{step:>14.3f}{jerk:>13.1f}"
              f"{step / base_step:>12.2f}{jerk / base_jerk:>12.2f}")
    print(f"ratios against {rows[0][0]} at {rows[0][1]:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
