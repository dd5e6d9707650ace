"""The framework zoo: train from a manifest, measure every framework the same way, write the table."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from librobot_models.policy import Policy
from librobot_training.evaluate import offline_errors
from librobot_training.train import split_episodes
from librobot_training.zoo import load_manifest, main

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402

TINY_ACT = {
    "framework": "act", "dataset": "unused", "output_dir": "unused",
    "model": {"image_size": [32, 32], "vision_channels": [16, 32], "dim_model": 32, "n_heads": 4,
              "dim_feedforward": 64, "n_encoder_layers": 1, "n_vae_encoder_layers": 1, "chunk_size": 4},
    "train": {"steps": 30, "batch_size": 8, "lr": 1e-3, "warmup_steps": 5, "log_every": 10, "cpu_threads": 1,
              "seed": 3, "eval": {"every": 0, "episodes": 1, "batches": 1}},
}


def write_manifest(root: Path, frameworks: dict, evaluation: dict | None = None) -> Path:
    (root / "tiny_act.yaml").write_text(yaml.safe_dump(TINY_ACT))
    manifest = root / "zoo.yaml"
    manifest.write_text(yaml.safe_dump({"evaluation": evaluation or {"episodes": 2, "time_limit_s": 1.0},
                                        "frameworks": frameworks}))
    return manifest


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    data = root / "data"
    make_synthetic_episodes(data, n_episodes=3, length=20, state_dim=6, embodiment="so100")  # rolled out on its twin
    manifest = write_manifest(root, {
        "act": {"config": "tiny_act.yaml", "execution": "temporal_ensemble"},
        "act_short": {"config": "tiny_act.yaml", "execution": "receding", "overrides": ["train.steps=10"]},
    })
    out = root / "runs"
    code = main(["--dataset", str(data), "--output", str(out), "--manifest", str(manifest)])
    assert code == 0
    return data, manifest, out


def test_every_framework_is_trained_and_measured(zoo, capsys):
    data, _, out = zoo
    report = json.loads((out / "results.json").read_text())
    act, short = report["results"]
    assert [r["framework"] for r in report["results"]] == ["act", "act_short"]
    assert act["train_steps"] == 30 and short["train_steps"] == 10  # the entry's override applied
    assert act["execution"] == "temporal_ensemble" and short["execution"] == "receding"

    policy = Policy.from_checkpoint(out / "act")
    assert act["parameters"] == sum(p.numel() for p in policy.model.parameters())
    log = [json.loads(line) for line in (out / "act" / "train_log.jsonl").read_text().splitlines()]
    assert act["final_loss"] == pytest.approx(log[-1]["loss"]) and act["loss_terms"] == "l1+kl"
    # open-loop L1 on the episode the training held out (seed 3's split of 3 episodes)
    heldout = split_episodes(3, 1, 3)[1]
    assert act["heldout_episodes"] == heldout
    expected = offline_errors(policy, data, heldout, stride=5).l1.mean()
    assert act["open_loop_l1"] == pytest.approx(expected)
    # closed loop on the simulated arm, seeds 1000-1001
    assert act["seeds"] == [1000, 1001] and len(act["per_seed"]) == 2
    assert act["successes"] == sum(act["per_seed"]) and act["inference_p50_ms"] > 0

    table = (out / "results.md").read_text()
    assert "| act | " in table and "| act_short | " in table and "seeds 1000-1001" in table
    assert f"{act['successes']}/2" in table


def test_reuse_measures_the_existing_checkpoint_without_training(zoo, capsys):
    data, manifest, out = zoo
    weights = (out / "act" / "model.safetensors").stat().st_mtime_ns
    before = json.loads((out / "results.json").read_text())["results"][0]
    assert main(["--dataset", str(data), "--output", str(out), "--manifest", str(manifest), "--reuse",
                 "--frameworks", "act", "--episodes", "1"]) == 0
    assert (out / "act" / "model.safetensors").stat().st_mtime_ns == weights
    after = json.loads((out / "results.json").read_text())["results"]
    assert len(after) == 1 and after[0]["episodes"] == 1
    assert after[0]["open_loop_l1"] == pytest.approx(before["open_loop_l1"])
    assert "training" not in capsys.readouterr().out.split("evaluating")[0].split("== act:")[-1]

    # the same weights and settings again: the stored measurement stands, nothing is rolled out
    assert main(["--dataset", str(data), "--output", str(out), "--manifest", str(manifest), "--reuse",
                 "--frameworks", "act", "--episodes", "1"]) == 0
    out_text = capsys.readouterr().out
    assert "measured before" in out_text and "evaluating" not in out_text
    assert json.loads((out / "results.json").read_text())["results"] == after


def test_a_second_run_without_reuse_refuses_to_overwrite(zoo, capsys):
    data, manifest, out = zoo
    assert main(["--dataset", str(data), "--output", str(out), "--manifest", str(manifest),
                 "--frameworks", "act"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--reuse" in err and err.count("\n") == 1


@pytest.mark.parametrize("frameworks, message", [
    ({"act": {"config": "tiny_act.yaml", "execution": "fastest"}}, "execution = 'fastest'"),
    ({"act": {"config": "missing.yaml"}}, "missing.yaml does not exist"),
    ({"act": {"execution": "receding"}}, "frameworks.act has no config"),
    ({"act": {"config": "tiny_act.yaml", "overrides": "train.steps=3"}}, "expected a list of key=value"),
])
def test_a_bad_manifest_names_the_bad_field(tmp_path, frameworks, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_manifest(write_manifest(tmp_path, frameworks))


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    manifest = write_manifest(tmp_path, {"act": {"config": "tiny_act.yaml"}})
    cases = [
        (["--dataset", str(tmp_path / "none"), "--manifest", str(manifest)], "record demonstrations first"),
        (["--dataset", str(tmp_path), "--manifest", str(manifest), "--frameworks", "octo"], "--frameworks ['octo']"),
        (["--dataset", str(tmp_path), "--manifest", str(manifest), "--episodes", "0"], "episodes = 0"),
        (["--dataset", str(tmp_path), "--manifest", str(tmp_path / "no.yaml")], "no.yaml does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_the_shipped_manifest_names_all_eight_frameworks():
    from librobot_drivers.resources import share_path

    manifest = load_manifest(share_path("config", "so100_zoo.yaml", package="librobot_training"))
    names = [e.name for e in manifest.entries]
    assert sorted(names) == sorted(["act", "custom", "pi0", "groot", "octo", "openvla", "rt2", "helix"])
    for entry in manifest.entries:  # each config trains that framework
        assert yaml.safe_load(entry.config.read_text())["framework"] == entry.name
    assert manifest.evaluation.first_seed >= 50 and np.isfinite(manifest.evaluation.time_limit_s)


def test_a_failed_training_stops_the_run_and_keeps_what_was_measured(zoo, tmp_path, capsys):
    data, _, out = zoo
    manifest = write_manifest(tmp_path, {
        "act": {"config": "tiny_act.yaml", "execution": "receding"},
        "broken": {"config": "tiny_act.yaml", "overrides": ["train.steps=0"]},
    }, evaluation={"episodes": 1, "time_limit_s": 1.0})
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "act").symlink_to(out / "act")  # already trained
    assert main(["--dataset", str(data), "--output", str(runs), "--manifest", str(manifest), "--reuse"]) == 2
    assert "training broken failed" in capsys.readouterr().err
    kept = json.loads((runs / "results.json").read_text())["results"]
    assert [r["framework"] for r in kept] == ["act"]
