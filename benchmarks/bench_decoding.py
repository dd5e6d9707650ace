"""Autoregressive action decoding with the KV cache against re-running the decoder over the whole
prefix at every step, measured in one run (CPU).

    python benchmarks/bench_decoding.py [--chunk 20] [--action-dim 6] [--threads 2]

The head is RT-2's default (256 bins, width 256, 2 layers), conditioned on 64 tokens; one chunk is
chunk * action_dim tokens decoded one by one. Both paths give the same tokens (checked here too).
"""

import argparse
import statistics
import sys

import torch

from librobot_models.heads import Conditioning
from librobot_models.registry import get_vla_config
from timing import call_ms  # benchmarks/timing.py


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=20, help="actions per chunk (default 20)")
    parser.add_argument("--action-dim", type=int, default=6, help="values per action (default 6)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=10, help="timed chunks per path (default 10)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = get_vla_config("rt2", chunk_size=args.chunk, action_dim=args.action_dim).head
    head = config.create().eval()
    cond = Conditioning(tokens=torch.randn(1, 64, config.cond_dim))
    assert torch.equal(head.sample(cond), head.sample(cond, use_cache=False)), "the two paths disagree"

    cached = statistics.median(call_ms(lambda: head.sample(cond), args.runs, warmup=1))
    uncached = statistics.median(call_ms(lambda: head.sample(cond, use_cache=False), args.runs, warmup=1))
    print(f"autoregressive head: {head.seq_len} tokens per chunk, {args.threads} thread(s), "
          f"median of {args.runs}")
    print(f"{'':<28}{'ms/chunk':>10}")
    print(f"{'full prefix every step':<28}{uncached:>10.1f}")
    print(f"{'KV cache':<28}{cached:>10.1f}")
    print(f"speed-up: {uncached / cached:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
