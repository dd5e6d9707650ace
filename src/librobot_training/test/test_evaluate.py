"""Closed-loop evaluation without ROS: the shipped checkpoint on the MuJoCo twin, and the calls a
history-window model gets."""

from pathlib import Path

import pytest

from librobot_drivers.sim import SO100Sim
from librobot_models.policy import Policy
from librobot_training.evaluate import main, rollout
from librobot_training.zoo import load_manifest

CHECKPOINTS = Path(__file__).resolve().parents[2] / "librobot_bringup" / "checkpoints"
SHIPPED = CHECKPOINTS / "act_so100"
ZOO = load_manifest(Path(__file__).resolve().parents[1] / "config" / "so100_zoo.yaml")
SHIPPED_ZOO = [e for e in ZOO.entries if e.name != "act" and (CHECKPOINTS / f"{e.name}_so100").is_dir()]


def test_the_shipped_checkpoint_solves_episodes(capsys):
    assert main(["--checkpoint", str(SHIPPED), "--episodes", "2", "--seed", "1000"]) == 0
    out = capsys.readouterr().out
    assert "success rate: 2/2 = 100%" in out and "inference latency: p50" in out


@pytest.mark.parametrize("entry", SHIPPED_ZOO, ids=[e.name for e in SHIPPED_ZOO])
def test_each_shipped_framework_checkpoint_solves_episodes(entry, capsys):
    """The other frameworks' shipped checkpoints (make zoo-eval's runs, README table), each with
    the execution mode the zoo measured it with, on two of its seeds."""
    checkpoint = CHECKPOINTS / f"{entry.name}_so100"
    assert Policy.from_checkpoint(checkpoint).framework == entry.name
    assert main(["--checkpoint", str(checkpoint), "--episodes", "2", "--seed", "1000",
                 "--execution", entry.execution]) == 0
    out = capsys.readouterr().out
    assert "success rate: 1/2" in out or "success rate: 2/2" in out, out


def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--checkpoint", str(SHIPPED), "--replan-steps", "0"]) == 2
    assert "--replan-steps 0: expected 1 to" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path)]) == 2
    assert "librobot-evaluate: error:" in capsys.readouterr().err


def test_a_history_window_model_observes_every_control_step(tiny_octo_checkpoint):
    policy = Policy.from_checkpoint(tiny_octo_checkpoint)
    assert policy.observation_history == 2
    calls = []
    observe, infer = policy.observe, policy.infer
    policy.observe = lambda obs: calls.append("observe") or observe(obs)
    policy.infer = lambda obs, **kw: calls.append("infer") or infer(obs, **kw)
    sim = SO100Sim(render_cameras=("front",))
    sim.connect()
    result = rollout(policy, sim, seed=0, time_limit_s=1.0, replan_steps=3)
    assert result.duration_s >= 1.0 and not result.success
    assert calls[:7] == ["infer", "observe", "observe"] * 2 + ["infer"]
