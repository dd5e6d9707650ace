"""librobot_training.export: every exportable framework, as a tiny random checkpoint, exported to ONNX
and TorchScript and checked against eager PyTorch on the same noise; Policy(backend="onnxruntime")
against the eager Policy; what cannot be exported and a mismatched ONNX file refused with the reason.

ONNX export (torch.export + translation) takes ~10-40 s per tiny framework on one CPU thread, most
of it fixed cost; each checkpoint is exported once per format and the files are shared by the tests."""

import json
import shutil

import numpy as np
import pytest
import torch

from librobot_models.checkpoint import checkpoint_id, save_checkpoint
from librobot_models.exported import sidecar_path
from librobot_models.frameworks.common import VLMFrameworkConfig
from librobot_models.normalization import NormStats
from librobot_models.policy import Policy
from librobot_models.registry import get_vla_config
from librobot_training.export import RTOL, UsageError, export_checkpoint, main

SHAPES = {"state_dim": 4, "action_dim": 3, "chunk_size": 6, "camera_names": ("front", "wrist"), "image_size": (32, 32)}
EXPORTABLE = ["act", "custom", "octo", "groot", "pi0", "openvla", "rt2"]
OVERRIDES = {  # smaller samplers than the defaults: fewer unrolled steps to export
    "custom": {"head": "rectified_flow", "head_config": {"n_sample_steps": 3}},
    "octo": {"head": {"n_train_steps": 5, "hidden_dim": 32, "n_layers": 1, "n_heads": 2}},
    "groot": {"head": {"n_sample_steps": 2, "hidden_dim": 32, "n_layers": 1, "n_heads": 2}},
    "pi0": {"head": {"n_sample_steps": 2, "hidden_dim": 32, "n_layers": 1, "n_heads": 2}},
    "rt2": {"chunk_size": 2, "head": {"hidden_dim": 32, "n_layers": 1, "n_heads": 2, "n_bins": 16}},  # 6 tokens
}


def make_checkpoint(directory, name, seed=0, **overrides):
    config = get_vla_config(name, **{**SHAPES, **OVERRIDES.get(name, {}), **overrides})
    if isinstance(config, VLMFrameworkConfig):
        config = config.replace(vlm="internvl2-2b", vlm_tiny=True)
    rng = np.random.default_rng(seed)
    norm_stats = {
        "state": NormStats.from_array(rng.normal(0.5, 2.0, size=(64, config.state_dim))),
        "actions": NormStats.from_array(rng.normal(-1.0, 0.5, size=(64, config.action_dim))),
    }
    torch.manual_seed(seed)
    return save_checkpoint(directory, config.create().eval(), config, norm_stats, {"rate_hz": 10.0})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(framework, format) -> (checkpoint dir, ExportResult), exported on first use."""
    root, done = tmp_path_factory.mktemp("export"), {}

    def get(name, fmt):
        if (name, fmt) not in done:
            checkpoint = root / name
            if not checkpoint.exists():
                make_checkpoint(checkpoint, name)
            output = checkpoint / ("model.onnx" if fmt == "onnx" else "model.pt")
            done[name, fmt] = checkpoint, export_checkpoint(checkpoint, fmt, output, log=lambda _: None)
        return done[name, fmt]

    return get


def numpy_obs(rng, state_dim=4):
    return {
        "images": {"front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                   "wrist": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)},
        "state": rng.normal(size=state_dim),
        "instruction": "pick up the red cube",
    }


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_matches_eager(exported, name, fmt):
    checkpoint, result = exported(name, fmt)
    assert result.max_abs_diff <= result.tolerance
    output = checkpoint / ("model.onnx" if fmt == "onnx" else "model.pt")
    sidecar = json.loads(sidecar_path(output).read_text())
    assert sidecar["format"] == fmt and sidecar["dtype"] == "float32" and sidecar["framework"] == name
    assert sidecar["checkpoint_id"] == checkpoint_id(checkpoint)
    window = [2] if name == "octo" else []  # Octo sees a history window of 2 steps
    assert sidecar["inputs"][0] == {"name": "images", "shape": [1, *window, 2, 3, 32, 32], "dtype": "float32"}
    assert sidecar["max_abs_diff"] == result.max_abs_diff
    assert not [p.name for p in checkpoint.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("name", ["act", "custom", "groot", "octo"])
def test_policy_on_onnxruntime_gives_the_eager_actions(exported, name):
    """Same observations, same global RNG: the ONNX policy's chunks are the eager policy's (custom:
    flow noise; groot: instruction tokens; octo: the observation window, DDPM noise drawn per step
    by eager sampling and all at once by the ONNX backend, so only the shapes are compared)."""
    checkpoint, _ = exported(name, "onnx")
    eager = Policy.from_checkpoint(checkpoint)
    onnx = Policy.from_checkpoint(checkpoint, backend="onnxruntime")
    assert not onnx.supports_inpainting and onnx.checkpoint_id == eager.checkpoint_id
    rng = np.random.default_rng(0)
    eager.reset(), onnx.reset()
    for _ in range(2):  # the second call meets the observation window (octo)
        obs = numpy_obs(rng)
        torch.manual_seed(5)
        expected = eager.infer(obs)["actions"]
        torch.manual_seed(5)
        actual = onnx.infer(obs)["actions"]
        assert actual.shape == expected.shape == (6, 3) and actual.dtype == np.float32
        if name != "octo":
            scale = RTOL["float32"] * max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(actual, expected, rtol=0, atol=scale * eager._action_stats.std.max())


def test_fp16_onnx_from_the_command_line_and_bf16_torchscript(tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "act", "act")
    output = tmp_path / "act16.onnx"
    assert main(["--checkpoint", str(checkpoint), "--format", "onnx", "--output", str(output), "--dtype", "fp16"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[0].startswith("exporting act") and ": ok;" in printed[1]
    half = json.loads(sidecar_path(output).read_text())
    assert half["dtype"] == "float16" and half["inputs"][1]["dtype"] == "float16"
    assert half["max_abs_diff"] <= half["tolerance"]
    policy = Policy.from_checkpoint(checkpoint, backend="onnxruntime", onnx_file=tmp_path / "act16.onnx")
    eager = Policy.from_checkpoint(checkpoint)
    obs = numpy_obs(np.random.default_rng(1))
    np.testing.assert_allclose(policy.infer(obs)["actions"], eager.infer(obs)["actions"], atol=0.05)
    brain = export_checkpoint(checkpoint, "torchscript", tmp_path / "act_bf16.pt", "bfloat16", log=lambda _: None)
    assert brain.max_abs_diff <= brain.tolerance


def test_a_framework_that_cannot_be_exported_says_why(tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "helix", "helix")
    with pytest.raises(UsageError, match="caches its System-2 VLM latent"):
        export_checkpoint(checkpoint, "onnx", tmp_path / "helix.onnx")
    assert main(["--checkpoint", str(checkpoint), "--format", "torchscript", "--output", str(tmp_path / "h.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "System-2" in err and "Traceback" not in err
    assert not (tmp_path / "h.pt").exists()


def test_user_mistakes_are_one_line_with_exit_2(tmp_path, capsys):
    missing = ["--checkpoint", str(tmp_path / "missing"), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]
    assert main(missing) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path), "--format", "tflite", "--output", "x"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--dtype" in capsys.readouterr().out


def test_a_mismatched_onnx_file_is_refused(exported, tmp_path):
    checkpoint, _ = exported("act", "onnx")
    other = make_checkpoint(tmp_path / "act3", "act", seed=1, state_dim=5)
    shutil.copy(checkpoint / "model.onnx", other / "model.onnx")
    shutil.copy(sidecar_path(checkpoint / "model.onnx"), sidecar_path(other / "model.onnx"))
    with pytest.raises(ValueError, match="was exported from checkpoint .*, not from this one"):
        Policy.from_checkpoint(other, backend="onnxruntime")
    sidecar = json.loads(sidecar_path(other / "model.onnx").read_text())  # a sidecar edited to fit
    sidecar_path(other / "model.onnx").write_text(json.dumps({**sidecar, "checkpoint_id": checkpoint_id(other)}))
    with pytest.raises(ValueError, match=r"model.onnx does not match checkpoint \(act\): its inputs are "
                                         r"\[images float32\[1, 2, 3, 32, 32\], state float32\[1, 4\]\], "
                                         r"expected \[.*state float32\[1, 5\]\]"):
        Policy.from_checkpoint(other, backend="onnxruntime")
    with pytest.raises(FileNotFoundError, match="no exported ONNX graph for checkpoint"):
        Policy.from_checkpoint(make_checkpoint(tmp_path / "bare", "act"), backend="onnxruntime")
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        Policy.from_checkpoint(checkpoint, backend="tensorrt")
