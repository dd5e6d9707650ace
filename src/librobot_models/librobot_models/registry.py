"""Framework registry: names (and aliases) -> config classes whose `create()` builds the module.

    @register_vla("act", aliases=("aloha_act",))
    @dataclass(frozen=True)
    class ACTConfig(VLAConfig): ...

    model = create_vla("act", chunk_size=10)           # config with overrides, then create()
    config = get_vla_config("aloha_act", dim_model=64)  # aliases resolve to the same class
    list_vlas()                                         # ['act', ...]
    vla_config_class("act")                             # ACTConfig

Built-in frameworks register when `librobot_models.frameworks` is imported; third-party packages
add theirs through the entry-point group "librobot.frameworks", e.g. in setup.py

    entry_points={"librobot.frameworks": ["my_vla = my_pkg.my_vla:MyVLAConfig"]}

where the target is a module (registering through the decorator on import) or a config class
(registered under the entry-point name if it did not register itself). Both load lazily, on the
first lookup.
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from importlib import metadata
from typing import Any, Callable, TypeVar

import torch

from librobot_models.config import VLAConfig

ENTRY_POINT_GROUP = "librobot.frameworks"

_CONFIGS: dict[str, type[VLAConfig]] = {}  # canonical name -> config class
_ALIASES: dict[str, str] = {}  # alias -> canonical name
_loaded = False

C = TypeVar("C", bound=type[VLAConfig])


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _add(name: str, aliases: tuple[str, ...], cls: type[VLAConfig]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, VLAConfig)):
        raise TypeError(f"register_vla({name!r}): {cls!r} is not a VLAConfig subclass")
    canonical = _key(name)
    previous = _CONFIGS.get(canonical)
    if previous is not None and _qualified(previous) != _qualified(cls):  # same class re-imported is fine
        raise ValueError(f"framework name {name!r} is already taken by {_qualified(previous)}")
    if canonical in _ALIASES and _ALIASES[canonical] != canonical:
        raise ValueError(f"framework name {name!r} is already an alias of {_ALIASES[canonical]!r}")
    for alias in map(_key, aliases):
        if alias in _CONFIGS or _ALIASES.get(alias, canonical) != canonical:
            raise ValueError(f"alias {alias!r} of {name!r} is already taken")
    _CONFIGS[canonical] = cls
    _ALIASES.update({_key(a): canonical for a in aliases})
    cls.framework = canonical


def register_vla(name: str, aliases: tuple[str, ...] = ()) -> Callable[[C], C]:
    """Class decorator: make a VLAConfig subclass available by `name` and its `aliases`."""

    aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)

    def decorator(cls: C) -> C:
        _add(name, aliases, cls)
        return cls

    return decorator


def _load_plugins() -> None:
    """Import the built-in frameworks and every "librobot.frameworks" entry point, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("librobot_models.frameworks")
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = entry_point.load()
        except Exception as err:  # a broken plugin must not hide the working frameworks
            warnings.warn(
                f"librobot framework plugin {entry_point.value!r} failed to load: {err!r}", stacklevel=3
            )
            continue
        if isinstance(target, type) and target not in _CONFIGS.values():
            _add(entry_point.name, (), target)


def vla_config_class(name: str) -> type[VLAConfig]:
    """The config class registered under `name` or alias; unknown names raise ValueError."""
    _load_plugins()
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key in _CONFIGS:
        return _CONFIGS[key]
    known = sorted(_CONFIGS) + sorted(_ALIASES)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f" Did you mean {_ALIASES.get(close[0], close[0])!r}?" if close else ""
    raise ValueError(f"unknown framework {name!r}.{hint} Available: {', '.join(list_vlas())}")


def list_vlas() -> list[str]:
    """Canonical names of every registered framework (aliases not included)."""
    _load_plugins()
    return sorted(_CONFIGS)


def get_vla_config(name: str, **overrides: Any) -> VLAConfig:
    """The default config of framework `name` (or alias) with `overrides`; bad values raise ValueError."""
    return vla_config_class(name).from_dict(overrides)


def create_vla(name_or_config: str | VLAConfig, **overrides: Any) -> torch.nn.Module:
    """Build a framework's module from its name or from a config, with optional field overrides."""
    if isinstance(name_or_config, VLAConfig):
        config = name_or_config.replace(**overrides) if overrides else name_or_config
    else:
        config = get_vla_config(name_or_config, **overrides)
    return config.create()
