"""Registries: names (and aliases) -> registered objects, filled by decorators, built-in modules and
entry-point plugins. One `Registry` class serves every kind of component:

    FRAMEWORKS   framework configs (VLAConfig subclasses whose `create()` builds the module)
    VLMS         VLM backbone variants (callables returning a VLMConfig, see librobot_models.backbones)

Frameworks:

    @register_vla("act", aliases=("aloha_act",))
    @dataclass(frozen=True)
    class ACTConfig(VLAConfig): ...

    model = create_vla("act", chunk_size=10)           # config with overrides, then create()
    config = get_vla_config("aloha_act", dim_model=64)  # aliases resolve to the same class
    list_vlas()                                         # ['act', ...]
    vla_config_class("act")                             # ACTConfig

VLM backbones (`create_vlm`, `list_vlms`, `get_vlm_config` live in librobot_models.backbones, next to
the wrappers they build; `register_vlm` is here so that a plugin needs only this module):

    @register_vlm("qwen2-vl-2b", aliases=("qwen-vl",))
    def qwen2_vl_2b() -> Qwen2VLConfig: ...

Names match case-insensitively with "-" and "_" treated alike ("ALOHA-ACT" finds "aloha_act"); lists
show names as registered. Built-ins register when their package is imported, on the first lookup;
third-party packages add theirs through an entry-point group, e.g. in setup.py

    entry_points={"librobot.frameworks": ["my_vla = my_pkg.my_vla:MyVLAConfig"],
                  "librobot.vlms": ["my_vlm = my_pkg.my_vlm"]}

where the target is a module (registering through the decorator on import) or an object the
registry accepts (registered under the entry-point name if it did not register itself). Both load
lazily, on the first lookup; a plugin that fails to load is reported as a warning and skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import types
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

import torch

from librobot_models.config import VLAConfig

T = TypeVar("T")
C = TypeVar("C", bound=type[VLAConfig])
F = TypeVar("F", bound=Callable[..., Any])


def _key(name: str) -> str:
    """The lookup key of a name: case and "-" vs "_" do not matter."""
    return str(name).strip().lower().replace("-", "_")


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else repr(obj)


class Registry(Generic[T]):
    """Names and aliases -> objects of one kind, with lazy built-ins and entry-point plugins.

    kind:       what the entries are, for messages ("framework", "VLM")
    group:      entry-point group scanned on the first lookup ("librobot.frameworks")
    builtins:   module imported on the first lookup; importing it registers the built-in entries
    accepts:    predicate an object must pass to be registered
    expected:   what `accepts` wants, for the TypeError ("a VLAConfig subclass")
    on_register: called with (name, obj) after an entry is added
    """

    def __init__(
        self,
        kind: str,
        group: str,
        builtins: str,
        accepts: Callable[[Any], bool],
        expected: str,
        on_register: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self.builtins = builtins
        self._accepts = accepts
        self._expected = expected
        self._on_register = on_register
        self._entries: dict[str, tuple[str, T]] = {}  # key -> (name as registered, object)
        self._aliases: dict[str, str] = {}  # alias key -> canonical key
        self._loaded = False

    # -- registering --------------------------------------------------------------------------------
    def add(self, name: str, obj: T, aliases: tuple[str, ...] | str = (), *, caller: str = "register") -> T:
        """Register `obj` under `name` and `aliases`; a name taken by another object raises ValueError."""
        aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
        if not self._accepts(obj):
            raise TypeError(f"{caller}({name!r}): {obj!r} is not {self._expected}")
        canonical = _key(name)
        previous = self._entries.get(canonical)
        # the same object registering again (its module imported twice) is fine
        if previous is not None and _describe(previous[1]) != _describe(obj):
            raise ValueError(f"{self.kind} name {name!r} is already taken by {_describe(previous[1])}")
        if canonical in self._aliases and self._aliases[canonical] != canonical:
            owner = self._entries[self._aliases[canonical]][0]
            raise ValueError(f"{self.kind} name {name!r} is already an alias of {owner!r}")
        for alias in aliases:
            if _key(alias) in self._entries or self._aliases.get(_key(alias), canonical) != canonical:
                raise ValueError(f"alias {alias!r} of {name!r} is already taken")
        self._entries[canonical] = (str(name).strip(), obj)
        self._aliases.update({_key(a): canonical for a in aliases})
        if self._on_register is not None:
            self._on_register(str(name).strip(), obj)
        return obj

    def register(
        self, name: str, aliases: tuple[str, ...] | str = (), *, caller: str = "register"
    ) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def decorator(obj: T) -> T:
            return self.add(name, obj, aliases, caller=caller)

        return decorator

    # -- plugins ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Import the built-ins and every entry point of `group`, once."""
        if self._loaded:
            return
        self._loaded = True
        importlib.import_module(self.builtins)
        for entry_point in metadata.entry_points(group=self.group):
            try:
                target = entry_point.load()
                if isinstance(target, types.ModuleType):
                    continue  # it registered itself on import
                if not any(obj is target for _, obj in self._entries.values()):
                    self.add(entry_point.name, target, caller=f"entry point {self.group}")
            except Exception as err:  # a broken plugin must not hide the working entries
                warnings.warn(
                    f"librobot {self.kind} plugin {entry_point.value!r} failed to load: {err!r}", stacklevel=3
                )

    @property
    def loaded(self) -> bool:
        """Whether built-ins and plugins have been loaded (they load on the first lookup)."""
        return self._loaded

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Registry[T]]:
        """For tests: inside the block, registrations land on a copy and plugins are looked up again
        on the next lookup; the registry as it was comes back afterwards."""
        self.load()
        saved = (self._entries, self._aliases, self._loaded)
        self._entries, self._aliases, self._loaded = dict(self._entries), dict(self._aliases), False
        try:
            yield self
        finally:
            self._entries, self._aliases, self._loaded = saved

    # -- lookups ------------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name behind `name` or an alias; unknown names raise ValueError listing the
        choices and the closest match."""
        self.load()
        key = _key(name)
        key = self._aliases.get(key, key)
        if key in self._entries:
            return self._entries[key][0]
        close = difflib.get_close_matches(key, sorted(self._entries) + sorted(self._aliases), n=1, cutoff=0.5)
        hint = f" Did you mean {self._entries[self._aliases.get(close[0], close[0])][0]!r}?" if close else ""
        raise ValueError(f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        """The object registered under `name` or an alias (see `canonical` for unknown names)."""
        return self._entries[_key(self.canonical(name))][1]

    def names(self) -> list[str]:
        """Registered names, sorted (aliases not included)."""
        self.load()
        return sorted(name for name, _ in self._entries.values())

    def aliases(self) -> dict[str, str]:
        """alias -> registered name."""
        self.load()
        return {alias: self._entries[key][0] for alias, key in sorted(self._aliases.items())}

    def __contains__(self, name: object) -> bool:
        self.load()
        key = _key(str(name))
        return self._aliases.get(key, key) in self._entries


# -- frameworks ------------------------------------------------------------------------------------
ENTRY_POINT_GROUP = "librobot.frameworks"


def _set_framework_name(name: str, cls: type[VLAConfig]) -> None:
    cls.framework = _key(name)


FRAMEWORKS: Registry[type[VLAConfig]] = Registry(
    kind="framework",
    group=ENTRY_POINT_GROUP,
    builtins="librobot_models.frameworks",
    accepts=lambda obj: isinstance(obj, type) and issubclass(obj, VLAConfig),
    expected="a VLAConfig subclass",
    on_register=_set_framework_name,
)


def register_vla(name: str, aliases: tuple[str, ...] = ()) -> Callable[[C], C]:
    """Class decorator: make a VLAConfig subclass available by `name` and its `aliases`."""
    return FRAMEWORKS.register(name, aliases, caller="register_vla")


def vla_config_class(name: str) -> type[VLAConfig]:
    """The config class registered under `name` or alias; unknown names raise ValueError."""
    return FRAMEWORKS.get(name)


def list_vlas() -> list[str]:
    """Canonical names of every registered framework (aliases not included)."""
    return FRAMEWORKS.names()


def get_vla_config(name: str, **overrides: Any) -> VLAConfig:
    """The default config of framework `name` (or alias) with `overrides`; bad values raise ValueError."""
    return vla_config_class(name).from_dict(overrides)


def create_vla(name_or_config: str | VLAConfig, **overrides: Any) -> torch.nn.Module:
    """Build a framework's module from its name or from a config, with optional field overrides.

    `vlm` may be a VLM already built (create_vlm("qwen2-vl-2b", pretrained=...)): the framework then
    uses that module, and its config records the variant (vlm, vlm_tiny, vlm_dtype) to rebuild it."""
    vlm = overrides.get("vlm")
    built_vlm = vlm if isinstance(vlm, torch.nn.Module) else None
    if built_vlm is not None:
        from librobot_models.backbones import variant_of  # the backbones package imports this module

        cls = type(name_or_config) if isinstance(name_or_config, VLAConfig) else vla_config_class(name_or_config)
        if "vlm" not in {f.name for f in dataclasses.fields(cls)}:
            raise ValueError(f"framework {cls.framework!r} has no VLM: vlm = {type(vlm).__name__} is not for it")
        name, tiny = variant_of(built_vlm)
        overrides = {**overrides, "vlm": name, "vlm_tiny": tiny, "vlm_dtype": built_vlm.config.dtype}
    if isinstance(name_or_config, VLAConfig):
        config = name_or_config.replace(**overrides) if overrides else name_or_config
    else:
        config = get_vla_config(name_or_config, **overrides)
    return config.create() if built_vlm is None else config.create(vlm_pretrained=built_vlm)


# -- VLM backbones ---------------------------------------------------------------------------------
VLM_ENTRY_POINT_GROUP = "librobot.vlms"

VLMS: Registry[Callable[[], Any]] = Registry(
    kind="VLM",
    group=VLM_ENTRY_POINT_GROUP,
    builtins="librobot_models.backbones",
    accepts=callable,
    expected="a callable returning a VLMConfig (a function or a VLMConfig subclass)",
)


def register_vlm(name: str, aliases: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: make a VLM variant available by `name` and `aliases`. The decorated object is called
    with no arguments to get the variant's VLMConfig: a function, or a VLMConfig subclass whose
    defaults are the variant."""
    return VLMS.register(name, aliases, caller="register_vlm")


# -- action heads ----------------------------------------------------------------------------------
HEADS: Registry[type] = Registry(
    kind="action head",
    group="librobot.heads",
    builtins="librobot_models.heads",
    # duck-typed: importing heads.base here would import the heads package, which imports us
    accepts=lambda obj: isinstance(obj, type) and hasattr(obj, "create") and hasattr(obj, "from_dict"),
    expected="an action-head config class (HeadConfig subclass)",
)


def register_head(name: str, aliases: tuple[str, ...] = ()) -> Callable[[C], C]:
    """Class decorator: make a HeadConfig subclass available by `name` and its `aliases`."""
    return HEADS.register(name, aliases, caller="register_head")
