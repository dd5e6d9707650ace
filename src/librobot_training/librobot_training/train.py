"""Train any registered framework on recorded episodes: one loop, the model's compute_loss only.

    python -m librobot_training.train --config src/librobot_training/config/act_so100.yaml train.steps=200 model.chunk_size=10

The YAML (every key can also be given or overridden as a dotted `key=value`, values parsed as YAML):
    framework: act                 # a name or alias from librobot_models.registry
    dataset: data/so100_sim/hdf5   # directory of HDF5 episodes (relative to the working directory),
                                   # or rlds:DIR (a TFDS/RLDS dataset, e.g. Open X-Embodiment), or dummy
    dataset_options: {...}         # rlds: rate_hz (required), cameras {rlds key: name}, state [keys],
                                   #   action [keys], instruction key, shapes, joint_names, split,
                                   #   verify_crc (librobot_training.rlds.RLDSOptions);
                                   # dummy: episodes, length, state_dim, action_dim, cameras,
                                   #   image_size [H, W], rate_hz, instruction, seed (datasets.DummyOptions);
                                   # HDF5 takes none
    output_dir: runs/act_so100     # final checkpoint, train_log.jsonl, checkpoints/step_N
    vlm_pretrained: /models/pg     # optional: initial VLM weights (save_pretrained layout)
    model: {...}                   # the framework's config fields; state_dim, action_dim and
                                   # camera_names come from the dataset when null or absent
    train: {...}                   # TrainSettings below

Writes <output_dir>/train_log.jsonl (one JSON object per log line) and the final checkpoint into
<output_dir> itself, so `Policy.from_checkpoint(output_dir)` loads the result.

At scale (TrainSettings, train.*):
    precision: bf16                # autocast, CPU or CUDA, weights stay fp32; fp16 adds a GradScaler
                                   # (CUDA only). bf16 pays on GPUs and CPUs with AVX512-BF16/AMX; on
                                   # an AVX2-only CPU ACT trained 24x slower than in fp32
    grad_accum_steps: 4            # micro-batches per optimizer step; the loss of each is divided by 4
                                   # and a log line holds their mean (steps count optimizer steps)
    gradient_checkpointing: true   # VLMs (transformers) and our transformer stacks recompute activations
    qlora: nf4                     # VLM frameworks with model.vlm_lora_rank > 0: the LoRA'd layers in
                                   # 4 bits (bitsandbytes); checkpoints hold them dequantised
    resume: runs/x/checkpoints/step_000100   # or --resume DIR: weights, optimizer, schedule, RNG
                                   # states and data position; the log is appended to
    tensorboard: true              # the logged scalars also in <output_dir>/tensorboard/
A step checkpoint (save_every) is a policy checkpoint plus training_state.pt (torch.save, loaded
with weights_only=True), which resuming needs.

Several processes: `torchrun --standalone --nproc_per_node N -m librobot_training.train ...` runs
train.distributed (ddp, or fsdp: FSDP2 fully_shard) over gloo on CPU or NCCL on CUDA (one GPU per
process). batch_size is per process: the effective batch is batch_size x grad_accum_steps x N. Each
pass over the data is one seeded permutation dealt out to the processes (ShardedSampler), so N
processes see the samples one process sees with N times the batch. Rank 0 alone writes.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml
from safetensors.torch import load_model
from tqdm import tqdm

from librobot_models.adapters import QUANT_TYPES, apply_qlora
from librobot_models.backbones.base import VLMBackbone
from librobot_models.checkpoint import WEIGHTS_FILE, read_checkpoint_header, save_checkpoint
from librobot_models.config import Config, VLAConfig, is_int, is_number
from librobot_models.layers import TransformerDecoder, TransformerEncoder
from librobot_models.normalization import NormStats
from librobot_models.policy import Normalize
from librobot_models.registry import get_vla_config
from librobot_training.datasets import EpisodeDataset, describe_dataset, open_source
from librobot_training.distributed import Ranks, ShardedSampler, barrier, distribute, mean_over_ranks, no_sync

DERIVED_MODEL_FIELDS = ("state_dim", "action_dim", "camera_names")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name -> autocast dtype
TRAINING_STATE_FILE = "training_state.pt"  # beside a step checkpoint's model files: what resuming needs


@dataclass(frozen=True)
class EvalSettings(Config):
    every: int = 0  # evaluate the held-out loss every N steps (0: never)
    episodes: int = 0  # episodes held out of training, picked with the seed
    batches: int = 10  # batches averaged per evaluation

    def validate(self) -> None:
        for name in ("every", "episodes", "batches"):
            self.check(name, is_int(getattr(self, name)) and getattr(self, name) >= 0, "an int >= 0")


@dataclass(frozen=True)
class TrainSettings(Config):
    # -- optimisation ---------------------------------------------------------------------------
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    lr_backbone: float | None = None  # learning rate of parameters under `backbone.` (None: lr)
    weight_decay: float = 1e-4  # AdamW, on weight matrices only (not biases or norms)
    grad_clip: float | None = 10.0  # max global gradient norm (None: no clipping)
    schedule: str = "cosine"  # "cosine" (to 0 at the last step) or "constant", after warmup
    warmup_steps: int = 100
    # -- data and machine -----------------------------------------------------------------------
    seed: int = 0
    num_workers: int = 0
    cache_dataset: bool = False  # read every episode into RAM first
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    cpu_threads: int | None = None  # torch intra-op threads (None: torch's default); 1 on a busy CPU
    # -- scale --------------------------------------------------------------------------------
    precision: str = "fp32"  # "fp32", "bf16" (autocast, CPU or CUDA) or "fp16" (autocast + GradScaler, CUDA)
    grad_accum_steps: int = 1  # micro-batches per optimizer step (effective batch: batch_size x this x ranks)
    gradient_checkpointing: bool = False  # recompute activations in backward (VLMs and our transformer stacks)
    qlora: str | None = None  # "nf4" or "fp4": the VLM's LoRA'd layers stored in 4 bits (model.vlm_lora_rank > 0)
    distributed: str = "ddp"  # under torchrun: "ddp" or "fsdp" (FSDP2 fully_shard); batch_size is per rank
    resume: str | None = None  # a step checkpoint directory (checkpoints/step_N) to continue from
    # -- output -------------------------------------------------------------------------------
    log_every: int = 20
    save_every: int = 0  # also save <output_dir>/checkpoints/step_N every N steps (0: final only)
    tensorboard: bool = True  # also write the logged scalars to <output_dir>/tensorboard/
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every", "grad_accum_steps"):
            self.check(name, is_int(getattr(self, name)) and getattr(self, name) > 0, "an int > 0")
        self.check("precision", self.precision in tuple(PRECISIONS), f"one of {list(PRECISIONS)}")
        self.check("qlora", self.qlora is None or self.qlora in QUANT_TYPES, f"null or one of {list(QUANT_TYPES)}")
        self.check("distributed", self.distributed in ("ddp", "fsdp"), '"ddp" or "fsdp"')
        self.check("resume", self.resume is None or (isinstance(self.resume, str) and self.resume != ""),
                   "null or a step checkpoint directory")
        for name in ("gradient_checkpointing", "tensorboard"):
            self.check(name, isinstance(getattr(self, name), bool), "true or false")
        for name in ("warmup_steps", "seed", "num_workers", "save_every"):
            self.check(name, is_int(getattr(self, name)) and getattr(self, name) >= 0, "an int >= 0")
        self.check(
            "cpu_threads",
            self.cpu_threads is None or (is_int(self.cpu_threads) and self.cpu_threads > 0),
            "null or an int > 0",
        )
        self.check("lr", is_number(self.lr) and self.lr > 0, "a number > 0")
        for name in ("lr_backbone", "grad_clip"):
            value = getattr(self, name)
            self.check(name, value is None or (is_number(value) and value > 0), "null or a number > 0")
        self.check("weight_decay", is_number(self.weight_decay) and self.weight_decay >= 0, "a number >= 0")
        self.check("schedule", self.schedule in ("cosine", "constant"), '"cosine" or "constant"')
        self.check("cache_dataset", isinstance(self.cache_dataset, bool), "true or false")
        self.check("eval", isinstance(self.eval, EvalSettings), "a mapping with every, episodes, batches")
        try:
            ok = self.device == "auto" or torch.device(self.device).type in ("cpu", "cuda", "mps")
        except (RuntimeError, TypeError):
            ok = False
        self.check("device", ok, '"cpu", "cuda", "cuda:N" or "auto"')


@dataclass(frozen=True)
class RunConfig(Config):
    dataset: str
    output_dir: str
    framework: str = "act"
    dataset_options: dict = field(default_factory=dict)  # the source's options (see the module docstring)
    model: dict = field(default_factory=dict)
    train: TrainSettings = field(default_factory=TrainSettings)
    # Where the initial weights come from; not part of the model config (a checkpoint holds them all).
    vlm_pretrained: str | None = None  # local directory of a pretrained VLM (VLM frameworks only)

    def validate(self) -> None:
        for name in ("dataset", "output_dir", "framework"):
            self.check(
                name, isinstance(getattr(self, name), str) and getattr(self, name), "a non-empty string"
            )
        self.check("model", isinstance(self.model, dict), "a mapping of the framework's config fields")
        self.check("dataset_options", isinstance(self.dataset_options, dict), "a mapping of dataset options")
        self.check("train", isinstance(self.train, TrainSettings), "a mapping of training settings")
        self.check("vlm_pretrained", self.vlm_pretrained is None or
                   (isinstance(self.vlm_pretrained, str) and Path(self.vlm_pretrained).is_dir()),
                   "null or an existing directory of a pretrained VLM")


def resolve_device(name: str) -> torch.device:
    """The device of train.device; "cuda" without an index is this process's LOCAL_RANK GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device = {name!r} but CUDA is not available here (use cpu or auto)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


# -- configuration -------------------------------------------------------------------------------
def apply_override(data: dict, override: str) -> None:
    """Set `a.b.c=value` in nested dicts; the value is parsed as YAML (numbers, lists, null)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ValueError(f"override {override!r} is invalid: expected key.path=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[leaf] = yaml.safe_load(text)


def load_run_config(path: str | None, overrides: Sequence[str]) -> RunConfig:
    data: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    for override in overrides:
        apply_override(data, override)
    return RunConfig.from_dict(data)


def model_config(run: RunConfig) -> VLAConfig:
    """The framework config from run.model, filling state/action dims and cameras from the dataset."""
    info = describe_dataset(run.dataset, run.dataset_options)
    derived = {"state_dim": info.state_dim, "action_dim": info.action_dim, "camera_names": info.camera_names}
    fields = {k: v for k, v in run.model.items() if not (k in DERIVED_MODEL_FIELDS and v is None)}
    config = get_vla_config(run.framework, **{**derived, **fields})
    for name in ("state_dim", "action_dim"):
        if getattr(config, name) != derived[name]:
            raise ValueError(f"model.{name} = {getattr(config, name)} but the dataset has {derived[name]}")
    return config


# -- training pieces -----------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parameter_groups(model: torch.nn.Module, settings: TrainSettings) -> list[dict]:
    """AdamW groups: `backbone.*` at lr_backbone, the rest at lr; decay on weight matrices only."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name.startswith("backbone."), param.ndim >= 2), []).append(param)
    lr_backbone = settings.lr_backbone if settings.lr_backbone is not None else settings.lr
    return [
        {
            "params": params,
            "lr": lr_backbone if is_backbone else settings.lr,
            "weight_decay": settings.weight_decay if decay else 0.0,
        }
        for (is_backbone, decay), params in groups.items()
    ]


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Multiplier of the base learning rates at `step` (0-based): linear warmup, then cosine or constant."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    if settings.schedule == "constant":
        return 1.0
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def batches(loader: torch.utils.data.DataLoader, start: int = 0) -> Iterator[dict]:
    """Endless batches of a loader over a ShardedSampler, a new order every pass, beginning with
    batch `start` of that endless sequence (a resumed run continues where the first one stopped)."""
    epoch, skip = divmod(start, len(loader))
    while True:
        loader.sampler.set_epoch(epoch, skip * loader.batch_size)
        yield from loader
        epoch, skip = epoch + 1, 0


def to_model_batch(raw: dict, normalize: Normalize, device: torch.device) -> dict[str, Any]:
    """Collated dataset samples -> the model contract: float images in [0, 1], normalised state/actions."""
    batch = {
        "images": raw["images"].to(device).float() / 255.0,  # (B, [T,] N, 3, H, W)
        "state": raw["state"].to(device),  # (B, [T,] state_dim)
        "actions": raw["actions"].to(device),  # (B, chunk, action_dim)
        "action_is_pad": raw["action_is_pad"].to(device),  # (B, chunk)
        "instruction": list(raw["instruction"]),
    }
    if "observation_is_pad" in raw:  # a history window (B, T)
        batch["observation_is_pad"] = raw["observation_is_pad"].to(device)
    return normalize(batch)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, stream: Iterator[dict], n_batches: int, normalize: Normalize, device: torch.device,
    precision: str = "fp32",
) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    for _ in range(n_batches):
        with autocast(device, precision):
            _, logs = model.compute_loss(to_model_batch(next(stream), normalize, device))
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + value / n_batches
    model.train()
    return {f"val_{key}": value for key, value in totals.items()}


def split_episodes(n: int, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    """(training, held-out) episode indices out of `n`, `n_val` held out at random from the seed."""
    if n_val >= n:
        raise ValueError(f"train.eval.episodes = {n_val} leaves no training episodes out of {n}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def make_loader(
    dataset: EpisodeDataset, settings: TrainSettings, seed: int, ranks: Ranks | None = None
) -> torch.utils.data.DataLoader:
    """Batches of `settings.batch_size` (per rank) over this rank's ShardedSampler shard."""
    sampler = ShardedSampler(len(dataset), seed, ranks or Ranks.from_env())
    if len(sampler) == 0:
        raise ValueError(f"{len(dataset)} samples cannot be shared among {sampler.ranks.world_size} processes")
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        drop_last=len(sampler) >= settings.batch_size,
        num_workers=settings.num_workers,
        generator=torch.Generator().manual_seed(seed),  # worker seeds; keeps the global RNG untouched
        persistent_workers=settings.num_workers > 0,
    )


# -- scale: processes, precision, memory, resuming -------------------------------------------------
def create_model(run: RunConfig, config: VLAConfig) -> torch.nn.Module:
    """The framework's module, its VLM loaded from run.vlm_pretrained when set. With train.qlora the
    VLM is built without LoRA: prepare_training quantises its layers, then adds LoRA of
    model.vlm_lora_rank (adapters.apply_qlora)."""
    kwargs = {}
    if run.vlm_pretrained is not None:
        if "vlm_pretrained" not in inspect.signature(config.create).parameters:
            raise ValueError(f"vlm_pretrained is set, but framework {run.framework!r} has no VLM")
        kwargs["vlm_pretrained"] = run.vlm_pretrained
    if run.train.qlora is not None:
        rank = getattr(config, "vlm_lora_rank", None)
        if rank is None:
            raise ValueError(f"train.qlora = {run.train.qlora!r}, but framework {run.framework!r} has no VLM")
        if rank == 0:
            raise ValueError(f"train.qlora = {run.train.qlora!r} needs model.vlm_lora_rank > 0 "
                             "(the rank of the LoRA trained on the 4-bit layers)")
        config = config.replace(vlm_lora_rank=0)
    return config.create(**kwargs)


def enable_gradient_checkpointing(model: torch.nn.Module, framework: str) -> list[str]:
    """Recompute activations in the backward pass: VLM backbones through transformers, our
    transformer stacks (layers.transformer) through torch.utils.checkpoint. Returns the module
    names; ValueError when the model has neither."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, VLMBackbone):
            module.gradient_checkpointing_enable()
            names.append(name)
        elif isinstance(module, (TransformerEncoder, TransformerDecoder)):
            module.gradient_checkpointing = True
            names.append(name)
    if not names:
        raise ValueError(f"train.gradient_checkpointing is true, but framework {framework!r} has no VLM or "
                         "transformer stack to checkpoint")
    return names


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()  # plain ints: weights_only loads them
    return {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = {**state["numpy"], "state": dict(state["numpy"]["state"])}
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


# The settings a resumed run must share with the run it continues: they fix the data order (the
# sampler position is recomputed from the step) and each process's RNG state.
RESUME_MUST_MATCH = ("seed", "batch_size", "grad_accum_steps")


def read_resume_state(run: RunConfig, config: VLAConfig, ranks: Ranks) -> dict[str, Any]:
    """The training state of the step checkpoint train.resume, checked against this run."""
    settings = run.train
    directory = Path(settings.resume)
    path = directory / TRAINING_STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"train.resume = {settings.resume}: no {TRAINING_STATE_FILE} there "
                                "(expected a step checkpoint, <output_dir>/checkpoints/step_N)")
    header = read_checkpoint_header(directory)
    if header["framework"] != config.framework or header["model"] != config.to_dict():
        differ = sorted(k for k in set(header["model"]) | set(config.to_dict())
                        if header["model"].get(k) != config.to_dict().get(k))
        raise ValueError(f"train.resume = {settings.resume}: the checkpoint's model ({header['framework']}) "
                         f"differs from this run's ({config.framework}) in {differ or ['framework']}")
    if settings.qlora is not None:
        raise ValueError("train.resume with train.qlora is not supported: the step checkpoint holds the "
                         "dequantised weights, not the 4-bit ones the run trained")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path} is unreadable: {' '.join(str(err).split())[:200]}") from None
    saved = {"world_size": state["world_size"], **{k: state["settings"][k] for k in RESUME_MUST_MATCH}}
    now = {"world_size": ranks.world_size, **{k: getattr(settings, k) for k in RESUME_MUST_MATCH}}
    if saved != now:
        raise ValueError(f"train.resume = {settings.resume}: saved with {saved}, this run has {now}; "
                         "they must match to continue the same data order")
    if state["step"] >= settings.steps:
        raise ValueError(f"train.resume = {settings.resume} is at step {state['step']}, not before "
                         f"train.steps = {settings.steps}")
    return state


def load_weights(model: torch.nn.Module, directory: Path, device: torch.device) -> None:
    """The model.safetensors of a checkpoint directory into `model`, every tensor accounted for."""
    weights = directory / WEIGHTS_FILE
    missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")


def _is_4bit(module: torch.nn.Module) -> bool:
    return getattr(getattr(module, "weight", None), "quant_state", None) is not None


def model_to_save(model: torch.nn.Module, config: VLAConfig, fsdp: bool) -> torch.nn.Module | None:
    """What save_checkpoint stores: the model itself, or, when its weights are sharded (FSDP) or in
    4 bits (QLoRA), a copy with full float weights built on the meta device (the 4-bit ones
    dequantised), the module `config.create()` makes and load_checkpoint fills. Under FSDP every
    rank must call it; ranks other than 0 get None."""
    quantized = {name: m for name, m in model.named_modules() if _is_4bit(m)}
    if not fsdp and not quantized:
        return model
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if torch.distributed.get_rank() != 0:
            return None
    else:
        state = model.state_dict()
    tokenizer = getattr(getattr(model, "backbone", None), "tokenizer", None)
    with torch.device("meta"):
        copy = config.create(vlm_tokenizer=tokenizer) if tokenizer is not None else config.create()
    weights = {}
    for key, like in copy.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in quantized and leaf == "weight":
            import bitsandbytes

            layer = quantized[module]
            value = bitsandbytes.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
            weights[key] = value.to(like.dtype)
        else:
            weights[key] = state[key].detach().clone()  # own storage: gathered shards can be views of one buffer
    copy.load_state_dict(weights, assign=True)
    return copy


def prepare_training(run: RunConfig, setup: Setup) -> Setup:
    """The scale settings on a built Setup, each checked before the first step: processes (torchrun),
    precision, QLoRA, gradient checkpointing, the optimizer and schedule, and resuming."""
    settings, config, device, model = run.train, setup.config, setup.device, setup.model
    ranks = Ranks.from_env()
    if settings.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision = fp16 needs CUDA (loss scaling with GradScaler); on "
                         f"{device.type} use bf16")
    if settings.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.precision = bf16, but this GPU has no bfloat16 support: use fp16")
    fsdp = ranks.world_size > 1 and settings.distributed == "fsdp"
    if settings.qlora is not None and fsdp:
        raise ValueError("train.qlora with train.distributed = fsdp is not supported (FSDP cannot shard "
                         "4-bit weights): use ddp")
    resume = read_resume_state(run, config, ranks) if settings.resume is not None else None
    if resume is not None:
        load_weights(model, Path(settings.resume), device)
    if settings.qlora is not None:
        try:
            rank = config.vlm_lora_rank
            report = apply_qlora(model.backbone, rank=rank, alpha=2 * rank, quant_type=settings.qlora)
        except RuntimeError as err:
            raise ValueError(f"train.qlora = {settings.qlora!r}: {err}") from None
        if ranks.main:
            print(report, file=sys.stderr)
    if settings.gradient_checkpointing:
        enable_gradient_checkpointing(model, run.framework)

    if ranks.world_size > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        seed_everything(settings.seed + ranks.rank)  # the same weights everywhere, then each its own noise
    wrapped = distribute(model, settings.distributed, ranks, device)
    optimizer = torch.optim.AdamW(parameter_groups(model, settings))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, settings))
    scaler = torch.amp.GradScaler("cuda") if settings.precision == "fp16" else None
    if resume is not None:
        if fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, resume["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume["scaler"]:
            scaler.load_state_dict(resume["scaler"])
    setup.ranks, setup.wrapped, setup.resume = ranks, wrapped, resume
    setup.optimizer, setup.scheduler, setup.scaler = optimizer, scheduler, scaler
    return setup


def training_state(setup: Setup, settings: TrainSettings, step: int, log: dict[str, Any]) -> dict | None:
    """What resuming at `step` needs beside the weights: optimizer, schedule, loss scaler, every
    process's RNG state and the open log window. Every rank must call it; ranks other than 0 get None."""
    rngs = [_rng_state()]
    if setup.ranks.world_size > 1:
        rngs = [None] * setup.ranks.world_size
        torch.distributed.all_gather_object(rngs, _rng_state())
    if setup.ranks.world_size > 1 and settings.distributed == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optimizer = get_optimizer_state_dict(setup.model, setup.optimizer,
                                             options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        optimizer = setup.optimizer.state_dict()
    if not setup.ranks.main:
        return None
    return {
        "step": step,
        "world_size": setup.ranks.world_size,
        "settings": {k: getattr(settings, k) for k in RESUME_MUST_MATCH},
        "optimizer": optimizer,
        "scheduler": setup.scheduler.state_dict(),
        "scaler": setup.scaler.state_dict() if setup.scaler is not None else {},
        "rng": rngs,
        "log": log,
    }


# -- the loop ------------------------------------------------------------------------------------
@dataclass
class Setup:
    config: VLAConfig
    model: torch.nn.Module
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader | None
    norm_stats: dict[str, NormStats]
    metadata: dict[str, Any]
    device: torch.device
    # set by prepare_training:
    ranks: Ranks = field(default_factory=Ranks)
    wrapped: torch.nn.Module | None = None  # what the loss runs through: the model, or DDP around it
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    resume: dict[str, Any] | None = None  # the training state train.resume continues from


def build(run: RunConfig) -> Setup:
    """Everything that can fail on bad input, before any training step."""
    settings = run.train
    config = model_config(run)
    source = open_source(run.dataset, run.dataset_options)  # shared by both splits
    train_eps, val_eps = split_episodes(len(source), settings.eval.episodes, settings.seed)

    def dataset(episodes: list[int]) -> EpisodeDataset:
        return EpisodeDataset(
            source, config.chunk_size, config.camera_names, episodes, settings.cache_dataset,
            history=config.observation_history,
        )

    train_set = dataset(train_eps)
    norm_stats = train_set.compute_norm_stats()
    info = train_set.info
    seed_everything(settings.seed)
    if settings.cpu_threads is not None:
        torch.set_num_threads(settings.cpu_threads)
    device = resolve_device(settings.device)
    model = create_model(run, config).to(device).train()
    metadata = {
        "embodiment": info.embodiment,
        "joint_names": info.joint_names,
        "camera_names": list(config.camera_names),
        "rate_hz": info.rate_hz,
        "dataset": str(run.dataset),
    }
    setup = Setup(
        config=config,
        model=model,
        train_loader=make_loader(train_set, settings, settings.seed),
        val_loader=make_loader(dataset(val_eps), settings, settings.seed + 1) if val_eps else None,
        norm_stats=norm_stats,
        metadata=metadata,
        device=device,
    )
    return prepare_training(run, setup)


def train(run: RunConfig, setup: Setup) -> Path:
    """Run the steps of a prepared Setup (see prepare_training); rank 0 writes the log and checkpoints."""
    settings, model, device, ranks = run.train, setup.model, setup.device, setup.ranks
    optimizer, scheduler, scaler = setup.optimizer, setup.scheduler, setup.scaler
    fsdp = ranks.world_size > 1 and settings.distributed == "fsdp"
    output_dir = Path(run.output_dir)
    if ranks.main:
        output_dir.mkdir(parents=True, exist_ok=True)
    normalize = Normalize({"state": setup.norm_stats["state"], "actions": setup.norm_stats["actions"]})
    compute_loss = setup.wrapped if setup.wrapped is not model else model.compute_loss
    resume = setup.resume or {}
    first = resume.get("step", 0) + 1
    accum = settings.grad_accum_steps
    stream = batches(setup.train_loader, (first - 1) * accum)  # batches the steps before consumed
    val_stream = None
    if setup.val_loader is not None:
        evaluated = (first - 1) // settings.eval.every * settings.eval.batches if settings.eval.every else 0
        val_stream = batches(setup.val_loader, evaluated)
    n_params = sum(p.numel() for p in model.parameters())

    def checkpoint(directory: Path, step: int, logs: dict[str, float], state: dict | None = None) -> None:
        saved = model_to_save(model, setup.config, fsdp)  # every rank under FSDP
        training = training_state(setup, settings, step, state) if state is not None else None
        if ranks.main:
            train_info = {**settings.to_dict(), "step": step, "last_logs": logs, "n_parameters": n_params}
            save_checkpoint(directory, saved, setup.config, setup.norm_stats, {**setup.metadata, "train": train_info})
            if training is not None:
                torch.save(training, directory / f".{TRAINING_STATE_FILE}.tmp")
                os.replace(directory / f".{TRAINING_STATE_FILE}.tmp", directory / TRAINING_STATE_FILE)
        barrier()

    log_state = resume.get("log", {})
    window: dict[str, float] = dict(log_state.get("window", {}))  # sums since the last log line
    n_window = log_state.get("n_window", 0)
    last: dict[str, float] = dict(log_state.get("last", {}))
    start = time.monotonic() - log_state.get("elapsed_s", 0.0)
    log = writer = None
    if ranks.main:
        log = open(output_dir / "train_log.jsonl", "a" if resume else "w")  # a resumed run appends
        if settings.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if not resume:  # a new run replaces the events of an earlier one, as it does the JSONL log
                for stale in (output_dir / "tensorboard").glob("events.out.tfevents.*"):
                    stale.unlink()

            # purge_step: TensorBoard hides events of an earlier run at steps >= the first one now
            writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=first if resume else None)
    if resume:
        _set_rng_state(resume["rng"][ranks.rank])
    try:
        with tqdm(
            range(first, settings.steps + 1),
            initial=first - 1,
            total=settings.steps,
            desc=f"train {setup.config.framework}",
            disable=None if ranks.main else True,
            dynamic_ncols=True,
        ) as progress:
            for step in progress:
                step_logs: dict[str, float] = {}
                for micro in range(accum):  # the loss of each micro-batch / accum: gradients of their mean
                    with no_sync(setup.wrapped, sync=micro == accum - 1):
                        with autocast(device, settings.precision):
                            loss, logs = compute_loss(to_model_batch(next(stream), normalize, device))
                        loss = loss / accum
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    for key, value in logs.items():
                        step_logs[key] = step_logs.get(key, 0.0) + value / accum
                if scaler is not None:
                    scaler.unscale_(optimizer)
                max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                grad_norm = (grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm).item()
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()

                for key, value in {**step_logs, "grad_norm": grad_norm}.items():
                    window[key] = window.get(key, 0.0) + value
                n_window += 1
                log_now = step % settings.log_every == 0 or step == settings.steps
                eval_now = val_stream is not None and settings.eval.every and step % settings.eval.every == 0
                if log_now or eval_now:
                    record = {"step": step, "lr": settings.lr * lr_factor(step - 1, settings)}  # this step's lr
                    if log_now:  # means over the steps since the previous line, and over the processes
                        last = mean_over_ranks({key: total / n_window for key, total in window.items()}, device)
                        record.update(last)
                        window, n_window = {}, 0
                        progress.set_postfix(loss=f"{last['loss']:.4f}")
                    if eval_now:
                        val = evaluate(model, val_stream, settings.eval.batches, normalize, device, settings.precision)
                        record.update(mean_over_ranks(val, device))
                    record["time_s"] = round(time.monotonic() - start, 3)
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    if writer is not None:
                        for key, value in record.items():
                            if key not in ("step", "time_s"):
                                writer.add_scalar(key, value, step)
                        writer.flush()
                if settings.save_every and step % settings.save_every == 0 and step < settings.steps:
                    elapsed = time.monotonic() - start
                    state = {"window": window, "n_window": n_window, "last": last, "elapsed_s": elapsed}
                    checkpoint(output_dir / "checkpoints" / f"step_{step:06d}", step, last, state)
        checkpoint(output_dir, settings.steps, last)
    finally:
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()
    return output_dir


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="librobot-train",
        description="Train a LibroBot framework on a directory of HDF5 episodes.",
        epilog="example: python -m librobot_training.train --config src/librobot_training/config/act_so100.yaml "
        "train.steps=200 model.chunk_size=10; on N processes: torchrun --standalone --nproc_per_node N "
        "-m librobot_training.train --config ... (train.batch_size is per process)",
    )
    parser.add_argument("--config", help="YAML file with framework, dataset, output_dir, model and train")
    parser.add_argument("--resume", metavar="DIR",
                        help="continue from a step checkpoint, e.g. runs/x/checkpoints/step_000100 "
                        "(the same as train.resume=DIR)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="dotted overrides, values as YAML"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = [*args.overrides, *([f"train.resume={args.resume}"] if args.resume is not None else [])]
    try:
        try:
            run = load_run_config(args.config, overrides)
            setup = build(run)
        except (ValueError, OSError, yaml.YAMLError) as err:
            print(f"librobot-train: error: {' '.join(str(err).split())}", file=sys.stderr)
            return 2
        output_dir = train(run, setup)
        if setup.ranks.main:
            print(f"checkpoint written to {output_dir}")
        return 0
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
