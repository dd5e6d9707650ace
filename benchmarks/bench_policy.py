"""Policy.infer latency against the bare model call it wraps, measured in one run (CPU).

    python benchmarks/bench_policy.py [CHECKPOINT_DIR]   (default: the shipped SO-100 ACT)

Baseline: model.sample_actions on an already normalised, batched tensor observation.
Measured: Policy.infer on a raw numpy observation (checks, normalisation, resize, unnormalise).
The ratio is the serving overhead; the node adds only message decoding on top.
"""

import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from librobot_models.policy import Policy
from timing import call_ms  # benchmarks/timing.py

DEFAULT = Path(__file__).resolve().parents[1] / "src/librobot_bringup/checkpoints/act_so100"


def p50_p99_ms(fn) -> tuple[float, float]:
    samples = call_ms(fn, runs=50, warmup=5)
    return statistics.median(samples), float(np.percentile(samples, 99))


def main(argv: list[str]) -> int:
    policy = Policy.from_checkpoint(argv[0] if argv else DEFAULT)
    rng = np.random.default_rng(0)
    obs = {
        "images": {cam: rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for cam in policy.camera_names},
        "state": rng.normal(size=policy.config.state_dim).astype(np.float32),
    }
    batch = policy._preprocess(obs)  # the model's own input, prepared once

    def bare():
        with torch.inference_mode():
            policy.model.sample_actions(batch)

    base_p50, base_p99 = p50_p99_ms(bare)
    full_p50, full_p99 = p50_p99_ms(lambda: policy.infer(obs))
    params = sum(p.numel() for p in policy.model.parameters())
    print(f"{policy.framework} ({params / 1e6:.2f} M params, {torch.get_num_threads()} threads)")
    print(f"{'':<22}{'p50 ms':>8}{'p99 ms':>8}")
    print(f"{'model.sample_actions':<22}{base_p50:>8.1f}{base_p99:>8.1f}")
    print(f"{'Policy.infer':<22}{full_p50:>8.1f}{full_p99:>8.1f}")
    print(f"overhead ratio: {full_p50 / base_p50:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
