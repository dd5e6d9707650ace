"""Checkpoint directories: safetensors weights + JSON config + JSON normalisation stats. No pickle.

    <dir>/model.safetensors   the module's state dict (tied tensors stored once)
    <dir>/config.json         {"format_version", "framework", "model": config.to_dict(),
                               "weights_sha256", plus metadata: embodiment, joint_names,
                               camera_names, rate_hz, train, ...}
    <dir>/norm_stats.json     {"state": NormStats, "actions": NormStats}

Files are written to a temporary directory beside the target, then moved in: a new checkpoint
appears whole by one rename; an existing one has its three files replaced one by one, config.json
last. Because config.json records the SHA-256 of the weights, a torn or corrupt checkpoint is
refused at load time instead of silently producing wrong actions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from librobot_models.config import VLAConfig
from librobot_models.normalization import NormStats, norm_stats_from_json, norm_stats_to_json
from librobot_models.registry import vla_config_class

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NORM_STATS_FILE = "norm_stats.json"
# The VLM tokenizer (frameworks with a `backbone`): token ids are part of what the weights learned.
TOKENIZER_DIR = "vlm_tokenizer"
FORMAT_VERSION = 1
_RESERVED = ("format_version", "framework", "model", "weights_sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    """Let metadata hold numpy values and paths."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint metadata value {value!r} ({type(value).__name__}) is not JSON serialisable")


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    config: VLAConfig,
    norm_stats: Mapping[str, NormStats],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of `model` built from `config` into `directory` (created if needed)."""
    directory = Path(directory)
    metadata = dict(metadata or {})
    clash = [key for key in _RESERVED if key in metadata]
    if clash:
        raise ValueError(f"checkpoint metadata may not use the reserved keys {clash}")
    if not config.framework or vla_config_class(config.framework) is not type(config):
        raise ValueError(f"{type(config).__name__} is not the registered config of a framework")

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_model(model, str(staging / WEIGHTS_FILE))
        document = {
            "format_version": FORMAT_VERSION,
            "framework": config.framework,
            "model": config.to_dict(),
            "weights_sha256": _sha256(staging / WEIGHTS_FILE),
            **metadata,
        }
        (staging / CONFIG_FILE).write_text(json.dumps(document, indent=2, default=_json_default))
        (staging / NORM_STATS_FILE).write_text(norm_stats_to_json(norm_stats))
        tokenizer = _vlm_tokenizer(model)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging / TOKENIZER_DIR)
        if not directory.exists():
            os.rename(staging, directory)
        else:
            if tokenizer is not None:
                shutil.rmtree(directory / TOKENIZER_DIR, ignore_errors=True)
                os.replace(staging / TOKENIZER_DIR, directory / TOKENIZER_DIR)
            for name in (WEIGHTS_FILE, NORM_STATS_FILE, CONFIG_FILE):
                os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _vlm_tokenizer(model: torch.nn.Module) -> Any:
    """The tokenizer of the model's VLM backbone, if it has one."""
    return getattr(getattr(model, "backbone", None), "tokenizer", None)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint file {path} is corrupt (not valid JSON: {err})") from None


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, VLAConfig, dict[str, NormStats], dict[str, Any]]:
    """(model in eval mode on `device`, config, norm_stats, metadata) from a checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    document = _read_json(directory / CONFIG_FILE)
    missing = [key for key in _RESERVED if key not in document]
    if missing:
        raise ValueError(f"{directory / CONFIG_FILE} lacks the keys {missing}; is it a LibroBot checkpoint?")
    if document["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{directory}: checkpoint format {document['format_version']} is not supported "
            f"(this version reads format {FORMAT_VERSION})"
        )
    try:
        config = vla_config_class(document["framework"]).from_dict(document["model"])
    except ValueError as err:
        raise ValueError(f"{directory / CONFIG_FILE}: {err}") from None

    try:
        norm_stats = norm_stats_from_json((directory / NORM_STATS_FILE).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {directory / NORM_STATS_FILE} is missing") from None
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"checkpoint file {directory / NORM_STATS_FILE} is corrupt: {err}") from None

    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint file {weights} is missing")
    if _sha256(weights) != document["weights_sha256"]:
        raise ValueError(
            f"{weights} does not match the SHA-256 recorded in config.json: corrupt or half-written"
        )

    if (directory / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer  # only checkpoints with a VLM need transformers

        model = config.create(vlm_tokenizer=AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR))
    else:
        model = config.create()
    model = model.to(device)
    try:
        missing_keys, unexpected_keys = load_model(model, str(weights), strict=False, device=str(device))
    except Exception as err:  # safetensors and torch raise several types for bad headers or shapes
        raise ValueError(f"cannot load {weights} into {type(model).__name__}: {err}") from None
    if missing_keys or unexpected_keys:
        raise ValueError(
            f"{weights} does not fit {type(model).__name__}: missing {sorted(missing_keys)}, "
            f"unexpected {sorted(unexpected_keys)}"
        )
    metadata = {key: value for key, value in document.items() if key not in _RESERVED}
    return model.eval(), config, norm_stats, metadata


def checkpoint_id(directory: str | Path) -> str:
    """Short content hash of a checkpoint: config.json (which embeds the weights' SHA-256) and norm stats.

    Two directories with the same id hold the same weights, config and normalisation.
    """
    directory = Path(directory)
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, NORM_STATS_FILE):
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} is missing")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]



def read_checkpoint_header(directory: str | Path) -> dict[str, Any]:
    """config.json of a checkpoint directory, checked to be one, without loading the weights.

    A cheap look for command lines and the policy node's parameter callback (framework, model
    config with its chunk_size, joint_names, camera_names, rate_hz). ValueError (one line) if
    `directory` is not a LibroBot checkpoint.
    """
    config = Path(directory) / CONFIG_FILE
    if not config.is_file():
        raise ValueError(f"{str(directory)!r} is not a checkpoint directory (no {CONFIG_FILE})")
    try:
        document = json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{config} is unreadable: {err}") from None
    if not isinstance(document, dict) or any(key not in document for key in _RESERVED):
        raise ValueError(f"{config} lacks the keys {list(_RESERVED)}; is it a LibroBot checkpoint?")
    return document
