"""Export a checkpoint's `sample_actions` to ONNX or TorchScript, checked against eager PyTorch.

    python -m librobot_training.export --checkpoint runs/act_so100 --format onnx --output runs/act_so100/model.onnx
    python -m librobot_training.export --checkpoint DIR --format torchscript --output act.pt --dtype fp16

What is exported is librobot_models.exported.ExportGraph: `sample_actions` for a batch of one, with
the tokenizer's output, the observation window's padding and the noise of a stochastic head as
explicit inputs (the tokenizer, normalisation, resizing and temporal ensembling stay in Python, in
Policy). ONNX goes through torch.onnx.export(dynamo=True), TorchScript through torch.jit.trace.
fp16 / bf16 cast the whole model and its float inputs.

Check: the written file is loaded again (onnxruntime's CPU provider for ONNX, torch.jit.load for
TorchScript) and run on random inputs, noise included, next to the eager model in the same dtype; the
largest absolute difference of the actions must stay within rtol * max(1, max |eager actions|)
(rtol: fp32 1e-4, fp16 1e-2, bf16 5e-2, on normalised actions). The difference to the fp32 eager
model is printed too (what the lower precision costs). A file that fails the check, or that
onnxruntime cannot run, is not written.

Output: the graph (ONNX weights above 1 GiB in <output>.data beside it) and <output>.json, a sidecar
with the format, dtype, input names/shapes/dtypes, the checkpoint id and path, and the measured
difference. Both appear by rename from a temporary directory beside the output, the sidecar last.
Policy.from_checkpoint(dir, backend="onnxruntime") runs the ONNX file.

Exit status: 0 exported and checked; 1 the export or its check failed; 2 a usage error (bad
checkpoint, a framework that cannot be exported, a bad output path), reported in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from librobot_models.checkpoint import checkpoint_id, load_checkpoint, read_checkpoint_header
from librobot_models.exported import DTYPES, ExportGraph, not_exportable, sidecar_path

FORMATS = ("onnx", "torchscript")
DTYPE_FLAGS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
RTOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}  # of max(1, max |eager actions|)
PROG = "librobot-export"
EXTERNAL_DATA_BYTES = 1 << 30  # larger weights go to <output>.data beside the graph (protobuf's limit is 2 GB)


class UsageError(ValueError):
    """A mistake in what the user asked for: one line, exit status 2."""


class ExportFailed(RuntimeError):
    """The exporter or the check failed: exit status 1."""


@dataclass(frozen=True)
class ExportResult:
    path: str
    format: str
    dtype: str
    framework: str
    checkpoint_id: str
    max_abs_diff: float  # exported vs eager in the same dtype, normalised actions
    max_abs_diff_fp32: float  # exported vs eager float32
    tolerance: float
    seconds: float


def _quiet() -> contextlib.AbstractContextManager:
    """Silence the exporters' progress lines and warnings (kept short: the CLI prints its own)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript"):
        logger = logging.getLogger(name)
        previous = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, previous)
    return stack


@contextlib.contextmanager
def _transformers_checks_off() -> Iterator[None]:
    """transformers' run-time asserts (torch._check_tensor_all: image features fit the image
    placeholders) become aten._is_all_true, which has no ONNX translation; its documented switch
    turns them off while tracing. The prompt is built by the backbone itself, so they always hold."""
    previous = os.environ.get("TRANSFORMERS_DISABLE_TORCH_CHECK")
    os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"]
        else:
            os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] = previous


def _write_graph(graph: ExportGraph, inputs: tuple[torch.Tensor, ...], fmt: str, path: Path) -> None:
    """The graph into `path` (a file in a staging directory)."""
    with _quiet(), _transformers_checks_off():
        if fmt == "onnx":
            size = sum(t.numel() * t.element_size() for t in (*graph.parameters(), *graph.buffers()))
            torch.onnx.export(
                graph, inputs, str(path), dynamo=True, input_names=list(graph.spec.names),
                output_names=["actions"], external_data=size > EXTERNAL_DATA_BYTES, verbose=False,
            )
        else:
            traced = torch.jit.trace(graph, inputs, check_trace=False, strict=False)
            torch.jit.save(traced, str(path))


def _run_written(fmt: str, path: Path, graph: ExportGraph, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The written file, loaded again and run on `inputs` -> actions (1, k, A) float32."""
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(*inputs).float()
    import onnxruntime as ort

    from librobot_models.exported import _to_numpy

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = torch.get_num_threads()  # as many as torch (OMP_NUM_THREADS)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (actions,) = session.run(None, {n: _to_numpy(t) for n, t in zip(graph.spec.names, inputs)})
    except Exception as err:  # onnxruntime raises its own types (NOT_IMPLEMENTED, INVALID_GRAPH, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportFailed(f"onnxruntime (CPU) cannot run the {graph.spec.dtype} graph: {first}") from None
    return torch.from_numpy(np.asarray(actions, dtype=np.float32))


def _cause(err: Exception) -> str:
    """The line of an exporter's error that names the cause, and where it was raised when it says so
    (torch.export wraps the cause in a page of advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    cause = next((lines[i + 1] for i, line in enumerate(lines[:-1]) if "Exception summary" in line),
                 lines[0] if lines else type(err).__name__)
    where = next((lines[i + 1] for i, line in enumerate(lines[:-1]) if "raised this error" in line), "")
    return f"{cause} ({where})" if where else cause


def _install(staging: Path, output: Path) -> None:
    """Move every file of `staging` next to `output`: external data first, the graph, the sidecar last."""
    sidecar = sidecar_path(output).name
    names = sorted(p.name for p in staging.iterdir())
    order = [n for n in names if n not in (output.name, sidecar)] + [output.name, sidecar]
    for name in order:
        os.replace(staging / name, output.parent / name)


def export_checkpoint(
    checkpoint: str | Path, fmt: str, output: str | Path, dtype: str = "float32", seed: int = 0,
    log=print,
) -> ExportResult:
    """Export, check and write; see the module docstring. UsageError for the caller's mistakes,
    ExportFailed when the exporter or the check fails (nothing is written then)."""
    checkpoint, output = Path(checkpoint), Path(output)
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {list(FORMATS)}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r}: expected one of {list(DTYPES)}")
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory: expected a file path (e.g. {output / 'model.onnx'})")
    try:
        read_checkpoint_header(checkpoint)
        model, config, _, _ = load_checkpoint(checkpoint)
        ckpt_id = checkpoint_id(checkpoint)
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    reason = not_exportable(model, config)
    if reason is not None:
        raise UsageError(f"cannot export {checkpoint}: {reason}")

    start = time.perf_counter()
    graph = ExportGraph(model, config, "float32")
    inputs32 = graph.example_inputs(seed)
    with torch.no_grad():
        reference32 = graph(*inputs32).float()  # (1, k, A)
    if dtype != "float32":
        graph = ExportGraph(model.to(DTYPES[dtype]), config, dtype)
    inputs = tuple(t.to(DTYPES[dtype]) if t.is_floating_point() else t for t in inputs32)
    try:
        with torch.no_grad():
            reference = graph(*inputs).float()
    except (RuntimeError, NotImplementedError) as err:  # an op without a CPU kernel in this dtype
        raise ExportFailed(f"eager {config.framework} in {dtype} does not run on the CPU ({_cause(err)}), "
                           "so the export cannot be checked") from None

    log(f"exporting {config.framework} ({ckpt_id}) to {fmt} {dtype}: {graph.spec.describe()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        try:
            _write_graph(graph, inputs, fmt, staging / output.name)
        except Exception as err:  # the exporters raise many types
            raise ExportFailed(f"{fmt} export of {config.framework} failed: {_cause(err)}") from None
        exported = _run_written(fmt, staging / output.name, graph, inputs)
        diff = float((exported - reference).abs().max())
        diff32 = float((exported - reference32).abs().max())
        tolerance = RTOL[dtype] * max(1.0, float(reference.abs().max()))
        if not diff <= tolerance:  # also catches NaN
            raise ExportFailed(
                f"{fmt} {dtype} graph of {config.framework} differs from eager by {diff:.3g} "
                f"(tolerance {tolerance:.3g}); not written"
            )
        result = ExportResult(str(output), fmt, dtype, config.framework, ckpt_id, diff, diff32, tolerance,
                              time.perf_counter() - start)
        sidecar = {
            **asdict(result),
            "checkpoint": str(checkpoint.resolve()),
            "exporter": "torch.onnx.export(dynamo=True)" if fmt == "onnx" else "torch.jit.trace",
            "torch_version": torch.__version__,
            "inputs": [i.to_dict() for i in graph.spec.inputs],
            "outputs": [{"name": "actions", "shape": list(graph.spec.output_shape), "dtype": dtype}],
        }
        del sidecar["path"], sidecar["seconds"]
        sidecar_path(staging / output.name).write_text(json.dumps(sidecar, indent=2))
        _install(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"max |exported - eager {dtype}| = {diff:.3g} (tolerance {tolerance:.3g}): ok; "
        f"vs eager float32: {diff32:.3g}")
    log(f"wrote {output} and {sidecar_path(output).name} in {result.seconds:.1f} s")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a checkpoint's sample_actions (batch of one) to ONNX or TorchScript and check "
        "the written file against eager PyTorch.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json, model.safetensors)")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx (onnxruntime) or torchscript")
    parser.add_argument("--output", required=True,
                        help="file to write, e.g. DIR/model.onnx; a .json sidecar goes beside it")
    parser.add_argument("--dtype", default="fp32", choices=tuple(DTYPE_FLAGS), help="cast the model (default fp32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random check inputs and noise")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # argparse: usage errors exit 2 in one line
    try:
        export_checkpoint(args.checkpoint, args.format, args.output, DTYPE_FLAGS[args.dtype], args.seed)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except ExportFailed as err:
        print(f"{PROG}: failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
