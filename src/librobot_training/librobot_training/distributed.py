"""Training on several processes (torchrun): which process this is, the data each one sees, and
the model wrapped for DDP or sharded by FSDP2. Alone (no torchrun) every piece is a no-op."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from librobot_models.backbones.base import VLMBackbone
from librobot_models.layers import TransformerDecoder, TransformerEncoder


@dataclass(frozen=True)
class Ranks:
    """This process among those torchrun started (RANK, WORLD_SIZE, LOCAL_RANK); alone: 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        """The process that writes logs and checkpoints."""
        return self.rank == 0


class ShardedSampler(torch.utils.data.Sampler[int]):
    """Sample indices for one rank: every pass a permutation of the whole dataset seeded with
    (seed, epoch), cut to a multiple of `world_size` and dealt out, rank r taking positions
    r, r + world_size, ... So batch k of all ranks together holds the samples of batch k of a single
    process whose batch is world_size times larger: any number of processes sees the same data.
    `set_epoch(epoch, start)` picks the pass and skips this rank's first `start` samples of it."""

    def __init__(self, n: int, seed: int, ranks: Ranks = Ranks()) -> None:
        self.n, self.seed, self.ranks = n, seed, ranks
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.ranks.world_size

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        mine = order[: len(self) * self.ranks.world_size][self.ranks.rank :: self.ranks.world_size]
        return iter(mine[self.start :].tolist())


class LossModule(torch.nn.Module):
    """`forward(batch)` is the model's compute_loss: DistributedDataParallel synchronises gradients
    through forward, so under DDP the model is wrapped in this."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.compute_loss(batch)


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers FSDP shards one by one (each gathered only while it runs): VLM decoder layers and
    the layers of our transformer stacks."""
    units: list[torch.nn.Module] = []
    for module in model.modules():
        if isinstance(module, VLMBackbone):
            units.extend(module.language_layers())
        elif isinstance(module, (TransformerEncoder, TransformerDecoder)):
            units.extend(module.layers)
    return units


def distribute(model: torch.nn.Module, strategy: str, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """Alone: the model. Under torchrun: DDP around a LossModule, or the model sharded in place by
    FSDP2 (fully_shard on every shard_units layer, then the whole; compute_loss gathers like forward)."""
    if ranks.world_size == 1:
        return model
    if strategy == "ddp":
        device_ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(LossModule(model), device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for unit in shard_units(model):
        fully_shard(unit)
    fully_shard(model)
    register_fsdp_forward_method(model, "compute_loss")
    return model


def no_sync(wrapped: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on the micro-batches before the last of an optimizer step."""
    if isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext() if sync else wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each value over all processes (every rank must call it); alone: the values."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    keys = sorted(values)
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return {k: v / torch.distributed.get_world_size() for k, v in zip(keys, total.tolist())}


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
