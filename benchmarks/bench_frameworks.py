"""Every registered framework in one table: parameters (total / trainable) and CPU latency per chunk.

    python benchmarks/bench_frameworks.py [--runs 20] [--threads 1] [--vlm NAME] [--frameworks act pi0 ...]

Each framework is built from its default config (a VLM framework on the tiny variant of its own VLM
family, or of --vlm), in eval mode, and `sample_actions` is timed on a batch of one (default shapes:
one 96x128 camera, state and action dims 6, chunk 20), median over --runs calls after 2 warm-up calls.
Models are timed as deployed: Octo on its whole observation window (as Policy hands it over),
Helix's median call reusing its cached System-2 latent (the VLM runs on one call in fast/slow rate);
the column "after reset" times a call that starts an episode (Helix runs its VLM). "vs ACT" is the
latency ratio to ACT, the baseline. Random weights: the numbers are about architecture cost, not quality.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from librobot_models.frameworks.common import VLMFrameworkConfig
from librobot_models.registry import get_vla_config, list_vlas
from timing import call_ms  # benchmarks/timing.py

BASELINE = "act"


def measure(name: str, runs: int, vlm: str | None) -> dict[str, object]:
    config = get_vla_config(name)
    if vlm is not None and isinstance(config, VLMFrameworkConfig):
        config = config.replace(vlm=vlm)
    torch.manual_seed(0)
    model = config.create().eval()
    obs = config.fake_batch(1)
    obs.pop("actions"), obs.pop("action_is_pad")
    reset = getattr(model, "reset", lambda: None)

    def call() -> None:
        with torch.inference_mode():
            model.sample_actions(obs)

    def call_after_reset() -> None:
        reset()
        call()

    reset()
    return {
        "framework": name,
        "vlm": f"{config.vlm} (tiny)" if isinstance(config, VLMFrameworkConfig) else "-",
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "ms": statistics.median(call_ms(call, runs)),
        "ms_reset": statistics.median(call_ms(call_after_reset, max(3, runs // 4))),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per framework (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--vlm", default=None, help="one tiny VLM for every VLM framework")
    parser.add_argument("--frameworks", nargs="*", default=None, help=f"subset of {list_vlas()}")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = args.frameworks or list_vlas()
    unknown = sorted(set(names) - set(list_vlas()))
    if unknown:
        parser.error(f"unknown frameworks {unknown}; expected some of {list_vlas()}")
    if BASELINE not in names:
        names = [BASELINE, *names]

    rows = [measure(name, args.runs, args.vlm) for name in names]
    base = next(r["ms"] for r in rows if r["framework"] == BASELINE)
    threads = torch.get_num_threads()
    print(f"CPU, batch 1, {threads} thread(s), median of {args.runs} calls, torch {torch.__version__}")
    columns = f"{'params':>9}{'trainable':>11}{'ms/chunk':>10}{'vs ACT':>8}{'after reset':>13}"
    header = f"{'framework':<10}{'VLM':<24}{columns}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['framework']:<10}{r['vlm']:<24}{r['total'] / 1e6:>8.2f}M{r['trainable'] / 1e6:>10.2f}M"
            f"{r['ms']:>10.1f}{r['ms'] / base:>7.2f}x{r['ms_reset']:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
