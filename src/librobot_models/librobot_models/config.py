"""Frozen, validated dataclass configs with a JSON round trip, and the shared VLA input fields.

A config is plain data: sizes, names and switches. It never reads files or talks to a hub; the
checkpoint module stores it as JSON and the trainer builds it from YAML.

    @dataclass(frozen=True)
    class HeadConfig(Config):
        width: int = 256          # hidden size

        def validate(self) -> None:
            self.check("width", is_int(self.width) and self.width > 0, "an int > 0")

    HeadConfig(width=-1)   # ValueError: HeadConfig.width = -1 is invalid: expected an int > 0
    HeadConfig.from_dict({"width": 64, "depth": 2})   # ValueError: ... unknown keys ['depth'] ...

`VLAConfig` adds the fields every framework shares (what goes in and out of the model) and the
fake batch used by tests, so a test needs no data. Every framework config derives from it.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import types
import typing
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import torch


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_str_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, str) and v for v in value)


def _strip_optional(annotation: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _coerce(annotation: Any, value: Any) -> Any:
    """Bring JSON/YAML values to the declared type: lists -> tuples, ints and numeric strings -> floats,
    dicts -> configs. Anything else is left for validate() to judge."""
    annotation = _strip_optional(annotation)
    if isinstance(value, list) and typing.get_origin(annotation) is tuple:
        return tuple(value)
    if annotation is float and is_int(value):
        return float(value)
    if annotation is float and isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(annotation, type) and issubclass(annotation, Config) and isinstance(value, Mapping):
        return annotation.from_dict(value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config: subclasses are `@dataclass(frozen=True)` and override `validate()`."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(hints[f.name], value)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError (through `check`) when a field has a bad value."""

    def check(self, name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(
                f"{type(self).__name__}.{name} = {getattr(self, name)!r} is invalid: expected {expected}"
            )

    # -- dict / JSON ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples become lists, nested configs become dicts)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Config):
                return value.to_dict()
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown keys {unknown}; expected some of {sorted(names)}")
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ValueError(f"{cls.__name__}: missing required keys {missing}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again); unknown names raise ValueError."""
        return type(self).from_dict({**self.to_dict(), **changes})


@dataclasses.dataclass(frozen=True)
class VLAConfig(Config, abc.ABC):
    """Fields every framework shares: the shapes of the batch that goes in and the chunk that comes out.

    The batch contract (all tensors already normalised by the caller):
        images:        (B, N_cam, 3, H, W) float in [0, 1], cameras in `camera_names` order,
                       any H, W (the model resizes to `image_size`)
        state:         (B, state_dim) float
        actions:       (B, chunk_size, action_dim) float     (training only)
        action_is_pad: (B, chunk_size) bool, True past the episode end   (training only)
        instruction:   list[str] of length B                  (optional; language models use it)
        time_s:        float, the observation's time in seconds (optional, inference: a model with
                       rates of its own, Helix, measures them on it)
    A framework that sees earlier steps (observation_history T > 1) gets a time axis after B, the
    last step the current one: images (B, T, N_cam, 3, H, W), state (B, T, state_dim), and
        observation_is_pad: (B, T) bool, True on steps before the episode start
    """

    framework: ClassVar[str] = ""  # set by registry.register_vla

    # -- inputs and outputs ------------------------------------------------------------------------
    state_dim: int = 6  # proprioceptive state size (joint positions, robot units before normalising)
    action_dim: int = 6  # action size per step
    chunk_size: int = 20  # actions predicted per inference call
    camera_names: tuple[str, ...] = ("front",)  # image inputs, in the order they are stacked
    image_size: tuple[int, int] = (96, 128)  # (H, W) images are resized to inside the model

    def validate(self) -> None:
        for name in ("state_dim", "action_dim", "chunk_size"):
            value = getattr(self, name)
            self.check(name, is_int(value) and value > 0, "an int > 0")
        self.check(
            "camera_names",
            is_str_tuple(self.camera_names) and len(set(self.camera_names)) == len(self.camera_names),
            "a list of distinct non-empty camera names",
        )
        self.check(
            "image_size",
            isinstance(self.image_size, tuple)
            and len(self.image_size) == 2
            and all(is_int(v) and v >= 16 for v in self.image_size),
            "(height, width), both ints >= 16",
        )

    @property
    def observation_history(self) -> int:
        """Observation steps per training sample, the current one included (see the contract)."""
        return 1

    # The framework's nn.Module, taking this config first: set by @builds on that class.
    model_class: ClassVar[type[torch.nn.Module] | None] = None

    def create(self) -> torch.nn.Module:
        """Build the framework's module (randomly initialised) from this config."""
        return self._model_class()(self)

    def _model_class(self) -> type[torch.nn.Module]:
        model_class = type(self).model_class
        if model_class is None:
            raise TypeError(f"{type(self).__name__}: no module is declared for it (decorate the "
                            f"framework's nn.Module with @builds({type(self).__name__}))")
        return model_class

    def fake_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, Any]:
        """A random batch in the contract above, with the last steps of the first sample padded and,
        with a history, its earlier steps too (its episode starts now)."""
        g = torch.Generator().manual_seed(seed)
        h, w = self.image_size
        T = self.observation_history
        steps = (T,) if T > 1 else ()
        action_is_pad = torch.zeros(batch_size, self.chunk_size, dtype=torch.bool)
        action_is_pad[0, self.chunk_size // 2 :] = True
        batch = {
            "images": torch.rand(batch_size, *steps, len(self.camera_names), 3, h, w, generator=g),
            "state": torch.randn(batch_size, *steps, self.state_dim, generator=g),
            "actions": torch.randn(batch_size, self.chunk_size, self.action_dim, generator=g),
            "action_is_pad": action_is_pad,
            "instruction": ["pick up the cube"] * batch_size,
        }
        if T > 1:
            batch["observation_is_pad"] = torch.zeros(batch_size, T, dtype=torch.bool)
            batch["observation_is_pad"][0, :-1] = True
        return batch


M = TypeVar("M", bound=type)


def builds(config_class: type[VLAConfig]) -> Callable[[M], M]:
    """Class decorator of a framework's nn.Module: `config_class(...).create()` builds it."""
    def declare(model_class: M) -> M:
        config_class.model_class = model_class
        return model_class
    return declare
