import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from librobot_models.checkpoint import load_checkpoint
from librobot_models.policy import Policy
from librobot_training.train import (
    TrainSettings,
    apply_override,
    load_run_config,
    lr_factor,
    main,
    parameter_groups,
)

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402

TINY_MODEL = [
    "model.image_size=[32,32]",
    "model.vision_channels=[16,32]",
    "model.dim_model=32",
    "model.n_heads=4",
    "model.dim_feedforward=64",
    "model.n_encoder_layers=1",
    "model.n_vae_encoder_layers=1",
    "model.chunk_size=6",
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    make_synthetic_episodes(path, n_episodes=3, length=20, state_dim=5)
    return path


def _write_config(tmp_path, dataset_dir, **train):
    config = {
        "framework": "act",
        "dataset": str(dataset_dir),
        "output_dir": str(tmp_path / "run"),
        "model": {"state_dim": None, "action_dim": None},
        "train": {"steps": 20, "batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 5, **train},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_training_writes_a_loadable_checkpoint_and_the_loss_falls(tmp_path, dataset_dir):
    config = _write_config(tmp_path, dataset_dir, save_every=10)
    assert main(["--config", str(config), *TINY_MODEL, "train.eval.every=10", "train.eval.episodes=1"]) == 0

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"] and log[-1]["l1"] < log[0]["l1"]
    assert "val_loss" in log[1] and "val_loss" in log[3]

    model, config, norm_stats, metadata = load_checkpoint(run)
    assert (config.state_dim, config.action_dim, config.camera_names) == (5, 5, ("front",))
    assert metadata["joint_names"] == [f"joint_{i}" for i in range(5)] and metadata["rate_hz"] == 10.0
    assert metadata["train"]["step"] == 20 and metadata["train"]["lr"] == 1e-3
    assert (run / "checkpoints" / "step_000010" / "model.safetensors").is_file()
    assert Policy.from_checkpoint(run).chunk_size == 6


def test_a_vlm_framework_trains_on_the_same_loop(tmp_path, dataset_dir):
    """pi0 on a tiny VLM: compute_loss only, a loadable checkpoint, the VLM at lr_backbone."""
    config = _write_config(tmp_path, dataset_dir, steps=4, batch_size=4, log_every=2, lr_backbone=1e-5)
    model = ["model.vlm=internvl2-2b", "model.image_size=[32,32]", "model.chunk_size=4", "model.cond_dim=64"]
    assert main(["--config", str(config), "framework=pi0", *model]) == 0

    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(np.isfinite(r["loss"]) for r in log)
    policy = Policy.from_checkpoint(run)
    assert policy.framework == "pi0" and policy.config.vlm == "internvl2-2b" and policy.chunk_size == 4
    obs = {"images": {"front": np.zeros((48, 64, 3), np.uint8)}, "state": np.zeros(5), "instruction": "reach"}
    assert policy.infer(obs)["actions"].shape == (4, 5)

    groups = parameter_groups(policy.model, TrainSettings(lr=1e-3, lr_backbone=1e-5))
    vlm = {id(p) for n, p in policy.model.named_parameters() if n.startswith("backbone.") and p.requires_grad}
    assert vlm and {id(p) for g in groups if g["lr"] == 1e-5 for p in g["params"]} == vlm


def test_a_history_window_trains_on_windows_and_is_served_one_observation_at_a_time(tmp_path, dataset_dir):
    """Octo with history_window 2: the dataset gives 2-step windows, the policy remembers the step before."""
    config = _write_config(tmp_path, dataset_dir, steps=4, batch_size=4, log_every=2)
    model = ["model.history_window=2", "model.image_size=[32,32]", "model.vision_channels=[16,32]",
             "model.dim=32", "model.n_layers=1", "model.chunk_size=4"]
    assert main(["--config", str(config), "framework=octo", *model]) == 0

    policy = Policy.from_checkpoint(tmp_path / "run")
    assert policy.framework == "octo" and policy.config.observation_history == 2
    dark, bright = ({"images": {"front": np.full((48, 64, 3), v, np.uint8)}, "state": np.zeros(5)} for v in (0, 255))

    def infer(obs):
        torch.manual_seed(0)  # the same diffusion noise every call
        return policy.infer(obs)["actions"]

    first = infer(dark)
    after_dark = infer(dark)
    policy.reset()
    infer(bright)
    after_bright = infer(dark)
    assert first.shape == (4, 5) and np.isfinite(first).all()
    assert not np.allclose(after_bright, after_dark)  # the step before is part of the input


def test_same_seed_same_losses(tmp_path, dataset_dir):
    logs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert (
            main(
                [
                    f"dataset={dataset_dir}",
                    f"output_dir={out}",
                    *TINY_MODEL,
                    "train.steps=4",
                    "train.log_every=2",
                    "train.batch_size=4",
                ]
            )
            == 0
        )
        logs.append([json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()])
    assert logs[0] == logs[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset=/no/such/dir"], "dataset directory /no/such/dir does not exist"),
        (["model.n_heads=5"], "ACTConfig.dim_model = 192 is invalid: expected a multiple of n_heads (5)"),
        (["model.state_dim=7"], "model.state_dim = 7 but the dataset has 5"),
        (["train.lr=-1"], "TrainSettings.lr = -1.0 is invalid"),
        (["train.stepz=3"], "TrainSettings: unknown keys ['stepz']"),
        (["framework=actt"], "unknown framework 'actt'. Did you mean 'act'?"),
        (["oops"], "override 'oops' is invalid"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(tmp_path, dataset_dir, capsys, overrides, message):
    config = _write_config(tmp_path, dataset_dir)
    assert main(["--config", str(config), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_missing_config_file_and_help(capsys):
    assert main(["--config", "/no/such.yaml"]) == 2
    assert "config file /no/such.yaml does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "dotted overrides" in capsys.readouterr().out


def test_overrides_and_schedule():
    data = {"train": {"steps": 1}}
    apply_override(data, "train.eval.every=5")
    apply_override(data, "model.camera_names=[front, wrist]")
    assert data == {
        "train": {"steps": 1, "eval": {"every": 5}},
        "model": {"camera_names": ["front", "wrist"]},
    }
    settings = TrainSettings(steps=110, warmup_steps=10)
    assert lr_factor(0, settings) == pytest.approx(0.1)
    assert lr_factor(10, settings) == pytest.approx(1.0)
    assert lr_factor(60, settings) == pytest.approx(0.5)
    assert lr_factor(60, TrainSettings(steps=110, warmup_steps=10, schedule="constant")) == 1.0


EXAMPLE_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config").glob("*_so100.yaml"))


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=[p.stem for p in EXAMPLE_CONFIGS])
def test_example_configs_train_as_written(path, tmp_path, dataset_dir):
    """Each shipped config, only pointed at a small dataset and shortened, trains and saves a policy."""
    run = load_run_config(str(path), [])
    framework = path.stem.removesuffix("_so100")
    assert run.framework == framework and run.dataset == "data/so100_sim/hdf5"
    assert run.output_dir == f"runs/{framework}_so100" and run.model["state_dim"] is None
    short = [f"dataset={dataset_dir}", f"output_dir={tmp_path / 'run'}", "train.steps=2", "train.batch_size=2",
             "train.log_every=1", "train.eval.episodes=1", "train.eval.every=2", "train.eval.batches=1",
             "model.image_size=[32,32]"]
    assert main(["--config", str(path), *short]) == 0
    policy = Policy.from_checkpoint(tmp_path / "run")
    assert policy.framework == framework and policy.chunk_size == 20


def test_initial_vlm_weights_come_from_a_local_directory(tmp_path, dataset_dir, capsys):
    """vlm_pretrained loads a saved VLM (here a tiny one) into the framework before step 1."""
    import torch

    from librobot_models.backbones import create_vlm

    torch.manual_seed(1)
    pretrained = tmp_path / "internvl_tiny"
    create_vlm("internvl2-2b", tiny=True).save_pretrained(pretrained)
    config = _write_config(tmp_path, dataset_dir, steps=1, batch_size=2, log_every=1)
    model = ["model.vlm=internvl2-2b", "model.vlm_tiny=false", "model.image_size=[32,32]",
             "model.chunk_size=4", "model.cond_dim=64", "model.freeze_vlm=true", "model.vlm_lora_rank=0"]
    args = ["--config", str(config), "framework=openvla", *model]
    assert main([*args, f"vlm_pretrained={pretrained}"]) == 0
    from safetensors.torch import load_file

    trained = load_file(tmp_path / "run" / "model.safetensors")
    saved = load_file(next(pretrained.glob("*.safetensors")))
    # the frozen VLM inside the trained framework holds exactly the pretrained weights
    embedding = [k for k in saved if k.endswith("embed_tokens.weight")][0]
    ours = [k for k in trained if k.endswith(embedding.split("model.", 1)[-1]) and k.startswith("backbone.")]
    assert ours and torch.equal(trained[ours[0]], saved[embedding])

    assert main(["--config", str(config), "framework=act", f"vlm_pretrained={pretrained}"]) == 2
    assert "has no VLM" in capsys.readouterr().err
