import json
import textwrap
from dataclasses import dataclass

import pytest
import torch

from librobot_models import registry
from librobot_models.config import Config, VLAConfig, is_int
from librobot_models.frameworks.act import ACT, ACTConfig
from librobot_models.registry import create_vla, get_vla_config, list_vlas, register_vla, vla_config_class


@dataclass(frozen=True)
class _Inner(Config):
    width: int = 8

    def validate(self) -> None:
        self.check("width", is_int(self.width) and self.width > 0, "an int > 0")


@dataclass(frozen=True)
class _Outer(Config):
    name: str
    sizes: tuple[int, ...] = (1, 2)
    scale: float = 1.0
    inner: _Inner = _Inner()


@pytest.fixture
def clean_registry():
    """A registry whose additions vanish after the test, with plugins not yet loaded."""
    with registry.FRAMEWORKS.scratch():
        yield


# -- config ------------------------------------------------------------------------------------
def test_validation_error_names_field_value_and_expectation():
    with pytest.raises(ValueError, match=r"_Inner.width = -3 is invalid: expected an int > 0"):
        _Inner(width=-3)
    with pytest.raises(ValueError, match=r"ACTConfig.dim_model = 100 .* multiple of n_heads \(6\)"):
        ACTConfig(dim_model=100)
    with pytest.raises(ValueError, match=r"ACTConfig.image_size = \(96,\) .* \(height, width\)"):
        ACTConfig(image_size=(96,))


def test_from_dict_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['depth', 'wdith'\]"):
        _Inner.from_dict({"wdith": 3, "depth": 2})
    with pytest.raises(ValueError, match=r"missing required keys \['name'\]"):
        _Outer.from_dict({"scale": 2.0})


def test_json_round_trip_restores_types_and_nested_configs():
    outer = _Outer(name="x", sizes=(3, 4, 5), scale=2, inner=_Inner(width=16))
    assert isinstance(outer.scale, float)  # ints from YAML/JSON become floats where declared
    assert _Outer(name="x", scale="1e-3").scale == 0.001  # PyYAML reads 1e-3 as a string
    data = json.loads(outer.to_json())
    assert data == {"name": "x", "sizes": [3, 4, 5], "scale": 2.0, "inner": {"width": 16}}
    again = _Outer.from_json(outer.to_json())
    assert again == outer and isinstance(again.sizes, tuple) and isinstance(again.inner, _Inner)

    act = ACTConfig(camera_names=["front", "wrist"], temporal_ensemble_coeff=0.01)
    assert ACTConfig.from_json(act.to_json()) == act
    assert act.camera_names == ("front", "wrist")


def test_replace_validates_again():
    config = ACTConfig()
    assert config.replace(chunk_size=7).chunk_size == 7
    with pytest.raises(ValueError, match="chunk_size = 0"):
        config.replace(chunk_size=0)
    with pytest.raises(ValueError, match="unknown keys"):
        config.replace(chunk=7)


def test_fake_batch_follows_the_contract(tiny_act_config):
    batch = tiny_act_config.fake_batch(3)
    assert batch["images"].shape == (3, 2, 3, 32, 32)
    assert 0.0 <= batch["images"].min() and batch["images"].max() <= 1.0
    assert batch["state"].shape == (3, 4)
    assert batch["actions"].shape == (3, 8, 3)
    assert batch["action_is_pad"].dtype == torch.bool and batch["action_is_pad"][0, -1]
    assert len(batch["instruction"]) == 3


# -- registry ----------------------------------------------------------------------------------
def test_create_by_name_and_alias_with_overrides():
    assert "act" in list_vlas()
    model = create_vla("act", chunk_size=5, dim_model=64, n_heads=4)
    assert isinstance(model, ACT) and model.config.chunk_size == 5
    assert type(get_vla_config("ALOHA-ACT")) is ACTConfig  # aliases, case and dashes normalised
    assert create_vla(ACTConfig(chunk_size=4), chunk_size=6).config.chunk_size == 6
    assert ACTConfig.framework == "act" and vla_config_class("aloha_act") is ACTConfig


def test_unknown_name_lists_choices_and_closest_match():
    with pytest.raises(ValueError, match=r"unknown framework 'actt'\. Did you mean 'act'\? Available: act"):
        get_vla_config("actt")
    with pytest.raises(ValueError, match=r"unknown framework 'zzz'\. Available: "):
        get_vla_config("zzz")


def test_unknown_override_is_a_value_error():
    with pytest.raises(ValueError, match=r"unknown keys \['chunksize'\]"):
        get_vla_config("act", chunksize=3)


def test_register_decorator_and_name_clashes(clean_registry):
    @register_vla("toy_vla", aliases=("toy",))
    @dataclass(frozen=True)
    class ToyConfig(VLAConfig):
        def create(self) -> torch.nn.Module:
            return torch.nn.Linear(self.state_dim, self.action_dim)

    assert "toy_vla" in list_vlas() and "toy" not in list_vlas()
    assert isinstance(create_vla("toy", state_dim=3), torch.nn.Linear)
    with pytest.raises(ValueError, match="already taken"):
        register_vla("act")(type("Other", (VLAConfig,), {}))
    with pytest.raises(ValueError, match="alias 'toy' .* already taken"):
        register_vla("other", aliases=("toy",))(type("Other2", (VLAConfig,), {}))
    with pytest.raises(ValueError, match="'aloha_act' is already an alias of 'act'"):
        register_vla("aloha_act")(type("Other3", (VLAConfig,), {}))
    with pytest.raises(TypeError, match="not a VLAConfig subclass"):
        register_vla("bad")(dict)


def test_entry_point_plugin_is_loaded_lazily(clean_registry, tmp_path, monkeypatch):
    (tmp_path / "librobot_toy_plugin.py").write_text(
        textwrap.dedent("""
        from dataclasses import dataclass
        import torch
        from librobot_models.config import VLAConfig

        @dataclass(frozen=True)
        class PluginConfig(VLAConfig):
            hidden: int = 4

            def create(self):
                return torch.nn.Linear(self.state_dim, self.hidden)
    """)
    )
    dist_info = tmp_path / "librobot_toy_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: librobot-toy-plugin\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        "[librobot.frameworks]\n"
        "toy_plugin = librobot_toy_plugin:PluginConfig\n"
        "broken_plugin = librobot_no_such_module:Nothing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not registry.FRAMEWORKS.loaded  # nothing loaded before the first lookup
    with pytest.warns(UserWarning, match="librobot_no_such_module"):
        names = list_vlas()
    assert "toy_plugin" in names and "act" in names
    model = create_vla("toy_plugin", state_dim=2, hidden=5)
    assert isinstance(model, torch.nn.Linear) and model.out_features == 5
    assert get_vla_config("toy_plugin").framework == "toy_plugin"


def test_a_framework_config_creates_the_module_declared_with_builds():
    from librobot_models.config import builds

    @dataclass(frozen=True)
    class LonelyConfig(VLAConfig):
        pass

    with pytest.raises(TypeError, match=r"decorate the framework's nn.Module with @builds\(LonelyConfig\)"):
        LonelyConfig().create()

    @builds(LonelyConfig)
    class Lonely(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

    model = LonelyConfig(chunk_size=3).create()
    assert isinstance(model, Lonely) and model.config.chunk_size == 3
