"""Remote inference over loopback against local inference, measured in one run (CPU).

    python benchmarks/bench_serve.py [--runs 50]

A small SO-100 ACT with two 224x224 cameras (random weights: the overhead is what this measures,
not the model), the observations 224x224 rgb8 as a camera sends them. The three ways are called in
turn, so a busy machine slows them alike.
Baseline: Policy.infer in this process. Measured: the same call through RemotePolicy (gRPC) and
through HTTP/JSON (base64 arrays), each to a PolicyServer on 127.0.0.1 in this process; the
overhead is their p50 minus the baseline's, and the ratio theirs over it.
"""

import argparse
import json
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from librobot_models.checkpoint import save_checkpoint
from librobot_models.frameworks.act import ACTConfig
from librobot_models.normalization import NormStats
from librobot_models.policy import Policy
from librobot_models.serving import wire
from librobot_models.serving.client import RemotePolicy
from librobot_models.serving.server import PolicyHost, PolicyServer, ServerSettings
from timing import call_ms  # benchmarks/timing.py

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


def two_camera_act(path: Path) -> Path:
    config = ACTConfig(state_dim=6, action_dim=6, chunk_size=20, camera_names=("front", "wrist"),
                       image_size=(224, 224), vision_channels=(16, 32, 64, 64), dim_model=128, n_heads=4,
                       dim_feedforward=256, n_encoder_layers=2, n_decoder_layers=2)
    stats = NormStats.from_array(np.random.default_rng(0).uniform(-1, 1, size=(100, 6)))
    metadata = {"embodiment": "so100", "joint_names": JOINTS, "camera_names": ["front", "wrist"], "rate_hz": 10.0}
    save_checkpoint(path, config.create(), config, {"state": stats, "actions": stats}, metadata)
    return path


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="bench_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = two_camera_act(Path(tmp) / "act")
        local = Policy.from_checkpoint(path)
        server = PolicyServer(PolicyHost.from_checkpoint(path), ServerSettings(grpc_port=0, http_port=0))
        server.start()
        remote = RemotePolicy(f"127.0.0.1:{server.grpc_port}", timeout_s=30.0)
        rng = np.random.default_rng(0)
        obs = {"images": {cam: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for cam in ("front", "wrist")},
               "state": rng.uniform(-0.5, 0.5, 6).astype(np.float32)}
        body = json.dumps({"session": "bench", "observation": wire.to_json_observation(obs)}).encode()

        def http_infer():
            request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/infer", data=body,
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as reply:
                wire.from_json_array(json.loads(reply.read())["actions"], "actions")

        calls = {"Policy.infer (local)": lambda: local.infer(obs), "gRPC RemotePolicy": lambda: remote.infer(obs),
                 "HTTP/JSON": http_infer}
        samples = {name: [] for name in calls}
        for _ in range(args.runs):
            for name, fn in calls.items():
                samples[name] += call_ms(fn, runs=1, warmup=0 if samples[name] else 3)
        rows = list(samples.items())
        remote.close()
        server.stop(0)
    base = statistics.median(rows[0][1])
    print(f"ACT, two 224x224 rgb8 cameras ({2 * 224 * 224 * 3 / 1024:.0f} KiB a request raw, "
          f"{len(body) / 1024:.0f} KiB as JSON), {args.runs} calls each, 1 torch thread, loopback")
    print(f"{'':<22}{'p50 ms':>8}{'p99 ms':>8}{'overhead ms':>13}{'ratio':>7}")
    for name, samples in rows:
        p50 = statistics.median(samples)
        print(f"{name:<22}{p50:>8.1f}{np.percentile(samples, 99):>8.1f}{p50 - base:>13.1f}{p50 / base:>7.2f}")
    print("ratios against local Policy.infer in the same run")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
