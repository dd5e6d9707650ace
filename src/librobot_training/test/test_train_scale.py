"""Training at scale, on tiny models and synthetic episodes: precision, gradient accumulation and
checkpointing, resuming, TensorBoard, QLoRA, and DDP/FSDP under torchrun (2 CPU processes, gloo)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from librobot_models.policy import Policy
from librobot_training.train import TRAINING_STATE_FILE, ShardedSampler, Ranks, main

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402

ACT = [
    "framework=act", "model.state_dim=null", "model.action_dim=null", "model.image_size=[32,32]",
    "model.vision_channels=[16,32]", "model.dim_model=32", "model.n_heads=4", "model.dim_feedforward=64",
    "model.n_encoder_layers=1", "model.n_vae_encoder_layers=1", "model.chunk_size=6",
    "train.lr=1e-3", "train.warmup_steps=2", "train.cpu_threads=1",
]
# Without padded action steps (chunk 1), noise (VAE) or dropout, the loss of a batch is the mean of
# the losses of its halves: two processes with batch B then compute exactly what one does with 2B.
DETERMINISTIC = ["model.chunk_size=1", "model.use_vae=false", "model.dropout=0.0"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    make_synthetic_episodes(path, n_episodes=3, length=20, state_dim=5)  # 60 frames
    return path


def _run(dataset_dir, out, *overrides):
    assert main([f"dataset={dataset_dir}", f"output_dir={out}", *ACT, *overrides]) == 0
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _losses(log):
    return np.array([r["loss"] for r in log])


def test_the_sampler_deals_one_permutation_out_to_the_ranks():
    alone = ShardedSampler(10, seed=3)
    pair = [ShardedSampler(10, seed=3, ranks=Ranks(rank, 2, rank)) for rank in (0, 1)]
    orders = []
    for epoch in (0, 1):
        for sampler in (alone, *pair):
            sampler.set_epoch(epoch)
        order = list(alone)
        assert sorted(order) == list(range(10)) and list(pair[0]) == order[0::2] and list(pair[1]) == order[1::2]
        orders.append(order)
    assert orders[0] != orders[1]  # a new order every pass
    alone.set_epoch(1, start=4)
    assert list(alone) == orders[1][4:]
    assert len(ShardedSampler(11, seed=0, ranks=Ranks(1, 2, 1))) == 5  # the odd sample out is dropped


def test_resume_continues_the_loss_curve_exactly(tmp_path, dataset_dir):
    """ACT with dropout, its VAE's noise and held-out evaluation: 8 steps straight, or 4 then a resume
    from the step-4 checkpoint, log the same numbers and end with the same weights."""
    common = ["train.steps=8", "train.batch_size=4", "train.log_every=3", "train.eval.episodes=1",
              "train.eval.every=3", "train.eval.batches=2"]
    straight = _run(dataset_dir, tmp_path / "a", *common, "train.save_every=4")
    step_4 = tmp_path / "a" / "checkpoints" / "step_000004"
    assert (step_4 / TRAINING_STATE_FILE).is_file()
    assert Policy.from_checkpoint(step_4).chunk_size == 6  # a step checkpoint is a policy too

    resumed = _run(dataset_dir, tmp_path / "b", *common, f"train.resume={step_4}")
    assert [r["step"] for r in straight] == [3, 6, 8] and [r["step"] for r in resumed] == [6, 8]
    for key in ("loss", "l1", "kl", "grad_norm", "val_loss", "lr"):  # step 6 averages steps 4-6: 4 before the cut
        assert [r.get(key) for r in resumed] == [r.get(key) for r in straight[1:]], key
    final = [Policy.from_checkpoint(tmp_path / name).model.state_dict() for name in ("a", "b")]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])

    # --resume into the run's own directory appends to its log
    assert main([f"dataset={dataset_dir}", f"output_dir={tmp_path / 'a'}", *ACT, *common,
                 "--resume", str(step_4)]) == 0
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 8, 6, 8] and log[3]["loss"] == straight[1]["loss"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.resume=/no/such"], f"train.resume = /no/such: no {TRAINING_STATE_FILE} there"),
        (["train.resume=STEP", "model.dim_feedforward=32"], "differs from this run's (act) in ['dim_feedforward']"),
        (["train.resume=STEP", "train.batch_size=2"], "saved with {'world_size': 1, 'seed': 0, 'batch_size': 4"),
        (["train.resume=STEP", "train.steps=2"], "is at step 2, not before train.steps = 2"),
        (["train.precision=fp16"], "train.precision = fp16 needs CUDA (loss scaling with GradScaler); on cpu"),
        (["train.precision=fp8"], "TrainSettings.precision = 'fp8' is invalid: expected one of ['fp32', 'bf16',"),
        (["train.grad_accum_steps=0"], "TrainSettings.grad_accum_steps = 0 is invalid: expected an int > 0"),
        (["train.qlora=nf4"], "train.qlora = 'nf4', but framework 'act' has no VLM"),
        (["train.qlora=nf8"], "TrainSettings.qlora = 'nf8' is invalid: expected null or one of ['nf4', 'fp4']"),
    ],
)
def test_bad_scale_settings_fail_before_a_step(tmp_path, dataset_dir, capsys, overrides, message):
    step_2 = tmp_path / "first" / "checkpoints" / "step_000002"
    if any("STEP" in o for o in overrides):
        _run(dataset_dir, tmp_path / "first", "train.steps=3", "train.batch_size=4", "train.save_every=2")
        capsys.readouterr()
    overrides = [o.replace("STEP", str(step_2)) for o in overrides]
    args = [f"dataset={dataset_dir}", f"output_dir={tmp_path / 'run'}", *ACT, "train.steps=2",
            "train.batch_size=4", *overrides]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_gradient_checkpointing_needs_something_to_checkpoint(tmp_path, dataset_dir, capsys):
    args = [f"dataset={dataset_dir}", f"output_dir={tmp_path / 'run'}", "framework=custom",
            "model.head=mlp_oft", "model.image_size=[32,32]", "train.gradient_checkpointing=true"]
    assert main(args) == 2
    assert "framework 'custom' has no VLM or transformer stack to checkpoint" in capsys.readouterr().err


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, dataset_dir):
    common = ["train.steps=6", "train.log_every=1", *DETERMINISTIC]
    big = _losses(_run(dataset_dir, tmp_path / "big", *common, "train.batch_size=8"))
    accumulated = _losses(_run(dataset_dir, tmp_path / "acc", *common, "train.batch_size=4",
                               "train.grad_accum_steps=2"))
    assert len(big) == 6 and np.abs(big - accumulated).max() < 1e-5


def test_gradient_checkpointing_changes_memory_not_results(tmp_path, dataset_dir, monkeypatch):
    """ACT's transformer stacks recompute in backward; dropout masks are replayed, so the losses agree."""
    import librobot_models.layers.transformer as transformer

    common = ["train.steps=4", "train.log_every=1", "train.batch_size=4"]
    plain = _losses(_run(dataset_dir, tmp_path / "plain", *common))
    calls = []
    monkeypatch.setattr(transformer, "checkpoint",
                        lambda *args, **kw: calls.append(1) or torch.utils.checkpoint.checkpoint(*args, **kw))
    recomputed = _losses(_run(dataset_dir, tmp_path / "ckpt", *common, "train.gradient_checkpointing=true"))
    assert np.abs(plain - recomputed).max() < 1e-5
    assert len(calls) == 4 * 3  # every step: 1 encoder layer, 1 VAE encoder layer, 1 decoder layer


def test_gradient_checkpointing_of_a_vlm_goes_through_transformers(tmp_path, dataset_dir, monkeypatch):
    from librobot_models.backbones.base import VLMBackbone

    common = [f"dataset={dataset_dir}", *VLM, "train.steps=2", "train.batch_size=2", "train.log_every=1",
              "train.cpu_threads=1"]
    assert main([*common, f"output_dir={tmp_path / 'plain'}"]) == 0
    enabled = []
    original = VLMBackbone.gradient_checkpointing_enable
    monkeypatch.setattr(VLMBackbone, "gradient_checkpointing_enable",
                        lambda self: original(self) or enabled.append(self.is_gradient_checkpointing))
    assert main([*common, f"output_dir={tmp_path / 'ckpt'}", "train.gradient_checkpointing=true"]) == 0
    assert enabled == [True]
    plain, recomputed = (_losses([json.loads(line) for line in (tmp_path / name / "train_log.jsonl")
                                  .read_text().splitlines()]) for name in ("plain", "ckpt"))
    assert np.abs(plain - recomputed).max() < 1e-5


def test_bf16_autocast_trains_close_to_fp32(tmp_path, dataset_dir):
    common = ["train.steps=6", "train.log_every=1", "train.batch_size=4", *DETERMINISTIC]
    fp32 = _losses(_run(dataset_dir, tmp_path / "fp32", *common))
    bf16 = _losses(_run(dataset_dir, tmp_path / "bf16", *common, "train.precision=bf16"))
    assert np.isfinite(bf16).all() and not np.array_equal(fp32, bf16)  # autocast did run in bf16
    assert np.abs(bf16 - fp32).max() < 0.05 * fp32.max()
    weights = Policy.from_checkpoint(tmp_path / "bf16").model.state_dict().values()
    assert {w.dtype for w in weights if w.is_floating_point()} == {torch.float32}  # autocast: fp32 weights


def test_tensorboard_holds_the_logged_scalars(tmp_path, dataset_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = _run(dataset_dir, tmp_path / "run", "train.steps=4", "train.log_every=2", "train.batch_size=4",
               "train.eval.episodes=1", "train.eval.every=4", "train.eval.batches=1")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"loss", "l1", "grad_norm", "lr", "val_loss"} <= set(events.Tags()["scalars"])
    for key in ("loss", "val_loss"):
        logged = [(r["step"], r[key]) for r in log if key in r]
        stored = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in stored] == [s for s, _ in logged]
        assert np.allclose([v for _, v in stored], [v for _, v in logged], rtol=1e-6)  # float32 events

    _run(dataset_dir, tmp_path / "off", "train.steps=1", "train.batch_size=4", "train.tensorboard=false")
    assert not (tmp_path / "off" / "tensorboard").exists()


VLM = ["framework=pi0", "model.vlm=internvl2-2b", "model.image_size=[32,32]", "model.chunk_size=4",
       "model.cond_dim=64"]


def test_qlora_trains_4bit_layers_and_saves_a_float_checkpoint(tmp_path, dataset_dir, capsys):
    """bitsandbytes quantises on CPU too; the checkpoint holds the dequantised weights with the LoRA
    layers, which Policy.from_checkpoint rebuilds from model.vlm_lora_rank alone."""
    import bitsandbytes

    common = [f"dataset={dataset_dir}", *VLM, "model.vlm_lora_rank=4", "train.steps=3", "train.batch_size=2",
              "train.log_every=1", "train.lr=1e-3", "train.cpu_threads=1"]
    assert main([*common, f"output_dir={tmp_path / 'q'}", "train.qlora=nf4", "train.save_every=2"]) == 0
    assert "QLoRA rank 4 on" in capsys.readouterr().err
    log = [json.loads(line) for line in (tmp_path / "q" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(np.isfinite(r["loss"]) for r in log)

    policy = Policy.from_checkpoint(tmp_path / "q")
    weights = policy.model.state_dict()
    lora_b = [k for k in weights if "lora_B" in k]
    assert lora_b and any(weights[k].abs().max() > 0 for k in lora_b)  # LoRA trained (B starts at 0)
    # a base weight is exactly representable in NF4 again: quantising it once more changes nothing
    base = weights[next(k for k in weights if k.endswith("q_proj.base_layer.weight"))]
    packed, state = bitsandbytes.functional.quantize_4bit(base, quant_type="nf4", blocksize=64)
    requantised = bitsandbytes.functional.dequantize_4bit(packed, state)
    assert torch.allclose(requantised, base, atol=1e-6)
    obs = {"images": {"front": np.zeros((48, 64, 3), np.uint8)}, "state": np.zeros(5), "instruction": "reach"}
    assert policy.infer(obs)["actions"].shape == (4, 5)

    assert main([*common, f"output_dir={tmp_path / 'x'}", "model.vlm_lora_rank=0", "train.qlora=nf4"]) == 2
    assert "needs model.vlm_lora_rank > 0" in capsys.readouterr().err
    assert main([*common, f"output_dir={tmp_path / 'x'}", "train.qlora=nf4",
                 f"train.resume={tmp_path / 'q' / 'checkpoints' / 'step_000002'}"]) == 2
    assert "train.resume with train.qlora is not supported" in capsys.readouterr().err


def test_lora_from_the_model_config_trains_only_adapters_and_loads(tmp_path, dataset_dir):
    common = [f"dataset={dataset_dir}", f"output_dir={tmp_path / 'l'}", *VLM, "model.vlm_lora_rank=4",
              "train.steps=2", "train.batch_size=2", "train.log_every=1", "train.cpu_threads=1"]
    assert main(common) == 0
    model = Policy.from_checkpoint(tmp_path / "l").model
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


# -- several processes (torchrun) -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(dataset_dir, out, *overrides, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
               "-m", "librobot_training.train", f"dataset={dataset_dir}", f"output_dir={out}", *ACT, *overrides]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_two_processes_follow_one_process_at_the_same_global_batch(tmp_path, dataset_dir, distributed):
    """2 ranks x batch 4 (gloo) against 1 process x batch 8: the same samples per step (ShardedSampler),
    the same losses to float rounding; rank 0 alone writes the log and checkpoints."""
    common = ["train.steps=6", "train.log_every=1", "train.save_every=3", "train.eval.episodes=1",
              "train.eval.every=3", "train.eval.batches=1", *DETERMINISTIC]
    one = _run(dataset_dir, tmp_path / "one", *common, "train.batch_size=8")
    two = _torchrun(dataset_dir, tmp_path / "two", *common, "train.batch_size=4",
                    f"train.distributed={distributed}")
    assert [r["step"] for r in two] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "grad_norm", "val_loss"):
        a, b = ([r[key] for r in log if key in r] for log in (one, two))
        assert len(a) == len(b) and np.abs(np.array(a) - np.array(b)).max() < 1e-5, (key, a, b)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step_000003"]
    weights = [Policy.from_checkpoint(tmp_path / name).model.state_dict() for name in ("one", "two")]
    # Adam divides by the root of tiny second moments, which magnifies summation-order rounding
    assert max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0]) < 1e-3

    # the two-process run resumes from its step checkpoint, with two processes again
    resumed = _torchrun(dataset_dir, tmp_path / "resumed", *common, "train.batch_size=4",
                        f"train.distributed={distributed}",
                        f"train.resume={tmp_path / 'two' / 'checkpoints' / 'step_000003'}")
    assert np.abs(_losses(resumed) - _losses(two)[3:]).max() < 1e-6


def test_qlora_where_bitsandbytes_cannot_run_is_one_line(tmp_path, dataset_dir, capsys, monkeypatch):
    import librobot_models.adapters as adapters

    def broken():
        raise RuntimeError("QLoRA needs bitsandbytes, which cannot run here: no native library")

    monkeypatch.setattr(adapters, "_bitsandbytes", broken)
    args = [f"dataset={dataset_dir}", f"output_dir={tmp_path / 'run'}", *VLM, "model.vlm_lora_rank=4",
            "train.qlora=nf4", "train.steps=1", "train.batch_size=2"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "train.qlora = 'nf4': QLoRA needs bitsandbytes, which cannot run here" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
