"""Train any registered framework on HDF5 episodes: one loop, the model's compute_loss only.

    python -m librobot_training.train --config src/librobot_training/config/act_so100.yaml train.steps=200 model.chunk_size=10

The YAML (every key can also be given or overridden as a dotted `key=value`, values parsed as YAML):
    framework: act                 # a name or alias from librobot_models.registry
    dataset: data/so100_sim/hdf5   # directory of episodes (paths are relative to the working directory)
    output_dir: runs/act_so100     # final checkpoint, train_log.jsonl, checkpoints/step_N
    vlm_pretrained: /models/pg     # optional: initial VLM weights (save_pretrained layout)
    model: {...}                   # the framework's config fields; state_dim, action_dim and
                                   # camera_names come from the dataset when null or absent
    train: {...}                   # TrainSettings below

Writes <output_dir>/train_log.jsonl (one JSON object per log line) and the final checkpoint into
<output_dir> itself, so `Policy.from_checkpoint(output_dir)` loads the result.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml
from tqdm import tqdm

from librobot_models.checkpoint import save_checkpoint
from librobot_models.config import Config, VLAConfig, is_int, is_number
from librobot_models.normalization import NormStats
from librobot_models.policy import Normalize
from librobot_models.registry import get_vla_config
from librobot_training.datasets import EpisodeDataset, describe_dataset, episode_paths

DERIVED_MODEL_FIELDS = ("state_dim", "action_dim", "camera_names")


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
    # -- output -------------------------------------------------------------------------------
    log_every: int = 20
    save_every: int = 0  # also save <output_dir>/checkpoints/step_N every N steps (0: final only)
    eval: EvalSettings = field(default_factory=EvalSettings)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            self.check(name, is_int(getattr(self, name)) and getattr(self, name) > 0, "an int > 0")
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
        self.check("train", isinstance(self.train, TrainSettings), "a mapping of training settings")
        self.check("vlm_pretrained", self.vlm_pretrained is None or
                   (isinstance(self.vlm_pretrained, str) and Path(self.vlm_pretrained).is_dir()),
                   "null or an existing directory of a pretrained VLM")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device = {name!r} but CUDA is not available here (use cpu or auto)")
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
    info = describe_dataset(run.dataset)
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


def batches(loader: torch.utils.data.DataLoader) -> Iterator[dict]:
    """Endless batches, reshuffled every pass."""
    while True:
        yield from loader


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
    model: torch.nn.Module, stream: Iterator[dict], n_batches: int, normalize: Normalize, device: torch.device
) -> dict[str, float]:
    model.eval()
    totals: dict[str, float] = {}
    for _ in range(n_batches):
        _, logs = model.compute_loss(to_model_batch(next(stream), normalize, device))
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + value / n_batches
    model.train()
    return {f"val_{key}": value for key, value in totals.items()}


def split_episodes(root: str, n_val: int, seed: int) -> tuple[list[int], list[int]]:
    n = len(episode_paths(root))
    if n_val >= n:
        raise ValueError(f"train.eval.episodes = {n_val} leaves no training episodes out of {n}")
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def make_loader(dataset: EpisodeDataset, settings: TrainSettings, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(dataset) >= settings.batch_size,
        num_workers=settings.num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=settings.num_workers > 0,
    )


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


def build(run: RunConfig) -> Setup:
    """Everything that can fail on bad input, before any training step."""
    settings = run.train
    config = model_config(run)
    train_eps, val_eps = split_episodes(run.dataset, settings.eval.episodes, settings.seed)

    def dataset(episodes: list[int]) -> EpisodeDataset:
        return EpisodeDataset(
            run.dataset, config.chunk_size, config.camera_names, episodes, settings.cache_dataset,
            history=config.observation_history,
        )

    train_set = dataset(train_eps)
    norm_stats = train_set.compute_norm_stats()
    info = train_set.info
    seed_everything(settings.seed)
    if settings.cpu_threads is not None:
        torch.set_num_threads(settings.cpu_threads)
    device = resolve_device(settings.device)
    if run.vlm_pretrained is not None:
        if "vlm_pretrained" not in inspect.signature(config.create).parameters:
            raise ValueError(f"vlm_pretrained is set, but framework {run.framework!r} has no VLM")
        model = config.create(vlm_pretrained=run.vlm_pretrained)
    else:
        model = config.create()
    model = model.to(device).train()
    metadata = {
        "embodiment": info.embodiment,
        "joint_names": info.joint_names,
        "camera_names": list(config.camera_names),
        "rate_hz": info.rate_hz,
        "dataset": str(run.dataset),
    }
    return Setup(
        config=config,
        model=model,
        train_loader=make_loader(train_set, settings, settings.seed),
        val_loader=make_loader(dataset(val_eps), settings, settings.seed + 1) if val_eps else None,
        norm_stats=norm_stats,
        metadata=metadata,
        device=device,
    )


def train(run: RunConfig, setup: Setup) -> Path:
    settings, model, device = run.train, setup.model, setup.device
    output_dir = Path(run.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(parameter_groups(model, settings))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, settings))
    normalize = Normalize({"state": setup.norm_stats["state"], "actions": setup.norm_stats["actions"]})
    stream = batches(setup.train_loader)
    val_stream = batches(setup.val_loader) if setup.val_loader is not None else None
    n_params = sum(p.numel() for p in model.parameters())

    def checkpoint(directory: Path, step: int, logs: dict[str, float]) -> None:
        train_info = {**settings.to_dict(), "step": step, "last_logs": logs, "n_parameters": n_params}
        save_checkpoint(
            directory, model, setup.config, setup.norm_stats, {**setup.metadata, "train": train_info}
        )

    window: dict[str, float] = {}  # sums since the last log line
    n_window = 0
    last: dict[str, float] = {}
    start = time.monotonic()
    with (
        open(output_dir / "train_log.jsonl", "w") as log,
        tqdm(
            range(1, settings.steps + 1),
            desc=f"train {setup.config.framework}",
            disable=None,
            dynamic_ncols=True,
        ) as progress,
    ):
        for step in progress:
            loss, logs = model.compute_loss(to_model_batch(next(stream), normalize, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()
            optimizer.step()
            scheduler.step()

            for key, value in {**logs, "grad_norm": grad_norm}.items():
                window[key] = window.get(key, 0.0) + value
            n_window += 1
            log_now = step % settings.log_every == 0 or step == settings.steps
            eval_now = val_stream is not None and settings.eval.every and step % settings.eval.every == 0
            if log_now or eval_now:
                record = {"step": step, "lr": settings.lr * lr_factor(step - 1, settings)}  # this step's lr
                if log_now:  # means over the steps since the previous line
                    last = {key: total / n_window for key, total in window.items()}
                    record.update(last)
                    window, n_window = {}, 0
                    progress.set_postfix(loss=f"{last['loss']:.4f}")
                if eval_now:
                    record.update(evaluate(model, val_stream, settings.eval.batches, normalize, device))
                record["time_s"] = round(time.monotonic() - start, 3)
                log.write(json.dumps(record) + "\n")
                log.flush()
            if settings.save_every and step % settings.save_every == 0 and step < settings.steps:
                checkpoint(output_dir / "checkpoints" / f"step_{step:06d}", step, last)
    checkpoint(output_dir, settings.steps, last)
    return output_dir


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="librobot-train",
        description="Train a LibroBot framework on a directory of HDF5 episodes.",
        epilog="example: python -m librobot_training.train --config src/librobot_training/config/act_so100.yaml "
        "train.steps=200 model.chunk_size=10",
    )
    parser.add_argument("--config", help="YAML file with framework, dataset, output_dir, model and train")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="dotted overrides, values as YAML"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run = load_run_config(args.config, args.overrides)
        setup = build(run)
    except (ValueError, OSError, yaml.YAMLError) as err:
        print(f"librobot-train: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    output_dir = train(run, setup)
    print(f"checkpoint written to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
