"""Exported graphs against eager PyTorch, measured in one run (CPU): time per model call.

    python benchmarks/bench_export.py [ACT_CHECKPOINT_DIR]   (default: the shipped SO-100 ACT)

Two models: the ACT checkpoint, and a small flow-matching policy (custom framework, rectified flow,
10 Euler steps, random weights) at the same shapes. Each is exported with librobot_training.export
(files in a temporary directory, each checked against eager on the way) and called on the same
prepared batch of one:
    eager             model.sample_actions(batch) under inference_mode (the baseline)
    torchscript       the traced graph (torch.jit.load)
    onnxruntime       the ONNX graph on onnxruntime's CPU provider, fp32 and fp16
Then Policy.infer end to end (checks, normalisation, resize, unnormalise) with the torch and the
onnxruntime backends. Both runtimes use torch.get_num_threads() threads (OMP_NUM_THREADS).
"""

import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from librobot_models.checkpoint import load_checkpoint, read_checkpoint_header, save_checkpoint
from librobot_models.exported import ExportGraph, OnnxRuntimeModel
from librobot_models.policy import Policy
from librobot_models.registry import get_vla_config
from librobot_training.export import ExportFailed, export_checkpoint
from timing import call_ms  # benchmarks/timing.py

DEFAULT = Path(__file__).resolve().parents[1] / "src/librobot_bringup/checkpoints/act_so100"


def p50_p99_ms(fn, runs: int) -> tuple[float, float]:
    samples = call_ms(fn, runs=runs, warmup=3)
    return statistics.median(samples), float(np.percentile(samples, 99))


def flow_checkpoint(act_dir: Path, directory: Path) -> Path:
    """A small rectified-flow policy (custom framework, random weights) at the ACT checkpoint's shapes."""
    shapes = {k: read_checkpoint_header(act_dir)["model"][k]
              for k in ("state_dim", "action_dim", "chunk_size", "camera_names", "image_size")}
    config = get_vla_config("custom", head="rectified_flow", head_config={"n_sample_steps": 10}, **shapes)
    norm_stats = load_checkpoint(act_dir)[2]
    torch.manual_seed(0)
    return save_checkpoint(directory, config.create().eval(), config, norm_stats, {})


def bench(checkpoint: Path, work: Path, runs: int) -> None:
    policy = Policy.from_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    obs = {
        "images": {cam: rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for cam in policy.camera_names},
        "state": rng.normal(size=policy.config.state_dim).astype(np.float32),
        "instruction": "pick up the cube",
    }
    batch = policy._preprocess(obs)  # the model's own input, prepared once
    model, config = policy.model, policy.config
    params = sum(p.numel() for p in model.parameters())
    print(f"\n{config.framework} {checkpoint.name} ({params / 1e6:.2f} M params, {torch.get_num_threads()} threads)")

    def eager():
        with torch.inference_mode():
            model.sample_actions(batch)

    rows = [("eager", *p50_p99_ms(eager, runs), "")]
    for fmt, dtype in (("torchscript", "float32"), ("onnx", "float32"), ("onnx", "float16")):
        output = work / f"{config.framework}_{dtype}.{'onnx' if fmt == 'onnx' else 'pt'}"
        name = "torchscript fp32" if fmt == "torchscript" else f"onnxruntime {dtype.replace('float', 'fp')}"
        try:
            result = export_checkpoint(checkpoint, fmt, output, dtype, log=lambda _: None)
        except ExportFailed as err:
            print(f"{name}: not measured: {err}")
            continue
        if fmt == "torchscript":
            graph = ExportGraph(load_checkpoint(checkpoint)[0], config)
            traced = torch.jit.load(str(output))
            inputs = [graph.feeds(batch)[n] for n in graph.spec.names]

            def call():
                with torch.inference_mode():
                    traced(*inputs)
        else:
            runner = OnnxRuntimeModel(output, load_checkpoint(checkpoint)[0], config, policy.checkpoint_id)
            feeds = {n: t.numpy() for n, t in runner.graph.feeds(batch).items()}

            def call():
                runner.session.run(None, feeds)

        rows.append((name, *p50_p99_ms(call, runs), f"max |diff| {result.max_abs_diff_fp32:.1e}"))

    base = rows[0][1]
    print(f"{'model call':<20}{'p50 ms':>8}{'p99 ms':>8}{'vs eager':>10}  check (vs eager fp32)")
    for name, p50, p99, note in rows:
        print(f"{name:<20}{p50:>8.2f}{p99:>8.2f}{p50 / base:>9.2f}x  {note}")

    onnx_file = work / f"{config.framework}_float32.onnx"
    if onnx_file.is_file():
        on_ort = Policy.from_checkpoint(checkpoint, backend="onnxruntime", onnx_file=onnx_file)
        torch_p50, _ = p50_p99_ms(lambda: policy.infer(obs), runs)
        ort_p50, _ = p50_p99_ms(lambda: on_ort.infer(obs), runs)
        print(f"Policy.infer p50: torch {torch_p50:.2f} ms, onnxruntime {ort_p50:.2f} ms "
              f"({ort_p50 / torch_p50:.2f}x)")


def main(argv: list[str]) -> int:
    act = Path(argv[0]) if argv else DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bench(act, work, runs=50)
        bench(flow_checkpoint(act, work / "flow_small"), work, runs=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
