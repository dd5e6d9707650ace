"""The framework zoo: train every framework on the same demonstrations and measure each the same way.

    python -m librobot_training.zoo --dataset data/so100_sim/hdf5            # make zoo-eval
    python -m librobot_training.zoo --dataset ... --frameworks act pi0 --reuse

A manifest (default: config/so100_zoo.yaml of this package) lists the frameworks, the training
config of each, the execution mode it is evaluated with, and the evaluation settings. For each
framework the zoo trains a checkpoint into OUTPUT/<name> (`--reuse`: keeps one already there),
then measures it (`--reuse` also keeps a measurement made before with the same weights and
settings): parameters, training time and final loss from its log, open-loop action L1 on
the episodes its training held out (`evaluate.offline_errors`), closed-loop success on unseen
seeds and inference latency (`evaluate.rollout`, the simulation running while the model infers).
The table goes to stdout and to OUTPUT/results.md, every figure with the settings behind it to
OUTPUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

# every key of a training log line that is not a loss component
LOG_BOOKKEEPING = {"step", "lr", "loss", "grad_norm", "time_s"}
MEASUREMENT = "zoo_measurement.json"  # kept beside each checkpoint, for --reuse


@dataclass(frozen=True)
class Evaluation:
    episodes: int = 20
    first_seed: int = 1000
    time_limit_s: float = 15.0
    replan_steps: int = 4
    latency_ms: float | str = 0
    offline_stride: int = 5

    def __post_init__(self) -> None:
        for name in ("episodes", "replan_steps", "offline_stride"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"evaluation.{name} = {value!r}: expected an int >= 1")
        if not (isinstance(self.first_seed, int) and self.first_seed >= 0):
            raise ValueError(f"evaluation.first_seed = {self.first_seed!r}: expected an int >= 0")
        if not (isinstance(self.time_limit_s, (int, float)) and self.time_limit_s > 0):
            raise ValueError(f"evaluation.time_limit_s = {self.time_limit_s!r}: expected seconds > 0")
        if self.latency_ms != "measured" and not (
            isinstance(self.latency_ms, (int, float)) and self.latency_ms >= 0
        ):
            raise ValueError(f"evaluation.latency_ms = {self.latency_ms!r}: expected milliseconds >= 0 "
                             "or 'measured'")

    @property
    def latency_s(self) -> float | None:
        return None if self.latency_ms == "measured" else float(self.latency_ms) * 1e-3


@dataclass(frozen=True)
class Entry:
    name: str
    config: Path  # the training config
    execution: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    evaluation: Evaluation
    entries: tuple[Entry, ...]


def load_manifest(path: str | Path) -> Manifest:
    """The manifest at `path`; ValueError names the first bad field."""
    from librobot_models.execution import MODES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"zoo manifest {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"evaluation", "frameworks"}
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected evaluation, frameworks")
    try:
        evaluation = Evaluation(**(data.get("evaluation") or {}))
    except TypeError as err:
        raise ValueError(f"{path}: evaluation: {err}") from None
    frameworks = data.get("frameworks")
    if not isinstance(frameworks, dict) or not frameworks:
        raise ValueError(f"{path}: frameworks must map names to {{config, execution, overrides}}")
    entries = []
    for name, fields in frameworks.items():
        fields = fields or {}
        if "config" not in fields:
            raise ValueError(f"{path}: frameworks.{name} has no config")
        execution = fields.get("execution", "receding")
        if execution not in MODES:
            raise ValueError(f"{path}: frameworks.{name}.execution = {execution!r}: expected one of {list(MODES)}")
        overrides = fields.get("overrides", [])
        if not (isinstance(overrides, list) and all(isinstance(o, str) and "=" in o for o in overrides)):
            raise ValueError(f"{path}: frameworks.{name}.overrides = {overrides!r}: expected a list of key=value")
        config = path.parent / fields["config"]
        if not config.is_file():
            raise ValueError(f"{path}: frameworks.{name}.config: {config} does not exist")
        entries.append(Entry(str(name), config, execution, tuple(overrides)))
    return Manifest(evaluation, tuple(entries))


@dataclass
class Result:
    framework: str
    checkpoint: str
    execution: str
    parameters: int
    train_steps: int
    train_time_s: float
    final_loss: float
    loss_terms: str  # what the loss adds up, e.g. "l1+kl"
    heldout_episodes: list[int]
    open_loop_l1: float  # mean over joints, robot units (rad)
    successes: int
    episodes: int
    seeds: list[int]
    inference_p50_ms: float
    inference_p99_ms: float
    safety_refusals: int
    rollout_time_s: float
    per_seed: list[bool] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes


def training_summary(checkpoint: Path) -> tuple[int, float, float, str]:
    """(steps, seconds, final loss, loss terms) from the checkpoint's train_log.jsonl."""
    log = checkpoint / "train_log.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"{checkpoint} has no train_log.jsonl (not trained by librobot_training.train?)")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "loss" in line), None)
    if last is None:
        raise ValueError(f"{log} records no training step")
    terms = [k for k in last if k not in LOG_BOOKKEEPING and not k.startswith("val_")
             and k != "token_accuracy"]
    return int(last["step"]), float(last["time_s"]), float(last["loss"]), "+".join(terms) or "loss"


def heldout_episodes(checkpoint: Path, dataset: str, n_episodes: int) -> list[int]:
    """The episodes of `dataset` the checkpoint's training held out (its own split), or every
    episode when it was trained on another dataset."""
    from librobot_models.checkpoint import read_checkpoint_header
    from librobot_training.train import split_episodes

    config = read_checkpoint_header(checkpoint)
    train = config.get("train", {})
    n_val = int(train.get("eval", {}).get("episodes", 0))
    if Path(config.get("dataset", "")).resolve() != Path(dataset).resolve() or n_val == 0:
        return list(range(n_episodes))
    return split_episodes(n_episodes, n_val, int(train.get("seed", 0)))[1]


def measure(name: str, checkpoint: Path, dataset: str, evaluation: Evaluation, execution: str) -> Result:
    """Every figure of the table for one trained checkpoint."""
    from librobot_models.policy import Policy
    from librobot_training.datasets import open_source
    from librobot_training.evaluate import offline_errors, rollout, simulated_twin

    policy = Policy.from_checkpoint(checkpoint)
    parameters = sum(p.numel() for p in policy.model.parameters())
    steps, train_time, loss, terms = training_summary(checkpoint)
    source = open_source(dataset)
    n_episodes = len(source)
    source.close()
    heldout = heldout_episodes(checkpoint, dataset, n_episodes)
    errors = offline_errors(policy, dataset, heldout, stride=evaluation.offline_stride)

    sim = simulated_twin(policy)
    sim.connect()
    seeds = list(range(evaluation.first_seed, evaluation.first_seed + evaluation.episodes))
    started = time.monotonic()
    rollouts = []
    with tqdm(seeds, desc=f"{name} closed loop", unit="episode") as progress:
        for seed in progress:
            rollouts.append(rollout(policy, sim, seed, evaluation.time_limit_s, evaluation.replan_steps,
                                    latency_s=evaluation.latency_s, execution=execution))
            progress.set_postfix(success=f"{sum(r.success for r in rollouts)}/{len(rollouts)}")
    latencies = [ms for r in rollouts for ms in r.inference_ms]
    return Result(
        framework=name, checkpoint=str(checkpoint), execution=execution, parameters=parameters,
        train_steps=steps, train_time_s=train_time, final_loss=loss, loss_terms=terms,
        heldout_episodes=heldout, open_loop_l1=float(errors.l1.mean()),
        successes=sum(r.success for r in rollouts), episodes=len(rollouts), seeds=seeds,
        inference_p50_ms=float(np.percentile(latencies, 50)),
        inference_p99_ms=float(np.percentile(latencies, 99)),
        safety_refusals=sum(r.refused_chunks for r in rollouts),
        rollout_time_s=time.monotonic() - started, per_seed=[bool(r.success) for r in rollouts],
    )


def measurement_key(checkpoint: Path, dataset: str, evaluation: Evaluation, execution: str) -> dict:
    """What a measurement depends on: with --reuse an equal key means the stored one still holds."""
    from librobot_models.checkpoint import read_checkpoint_header

    config = read_checkpoint_header(checkpoint)
    return {"weights_sha256": config.get("weights_sha256"), "dataset": str(Path(dataset).resolve()),
            "evaluation": asdict(evaluation), "execution": execution}


def results_table(results: list[Result]) -> str:
    """A Markdown table, one framework a row."""
    lines = ["| framework | parameters | training | final loss | open-loop L1 (rad) | closed loop | "
             "execution | inference p50 |",
             "|---|---:|---:|---|---:|---:|---|---:|"]
    for r in results:
        lines.append(
            f"| {r.framework} | {r.parameters / 1e6:.2f} M | {r.train_steps} steps, {r.train_time_s / 60:.1f} min | "
            f"{r.final_loss:.3f} ({r.loss_terms}) | {r.open_loop_l1:.3f} | "
            f"{r.successes}/{r.episodes} = {r.success_rate:.0%} | {r.execution} | {r.inference_p50_ms:.0f} ms |"
        )
    return "\n".join(lines)


def write_results(output: Path, results: list[Result], dataset: str, manifest: Path, evaluation: Evaluation,
                  entries: tuple[Entry, ...], train_overrides: list[str]) -> str:
    """results.md and results.json in `output`; returns the table."""
    table = results_table(results)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.md").write_text(
        f"{table}\n\nDataset {dataset}; {evaluation.episodes} closed-loop episodes on seeds "
        f"{evaluation.first_seed}-{evaluation.first_seed + evaluation.episodes - 1}, replanning every "
        f"{evaluation.replan_steps} periods, latency {evaluation.latency_ms} ms; open-loop L1 on the held-out "
        f"episodes, a chunk every {evaluation.offline_stride} frames.\n"
    )
    (output / "results.json").write_text(json.dumps(
        {"dataset": dataset, "manifest": str(manifest), "evaluation": asdict(evaluation),
         "configs": {e.name: {"config": str(e.config), "overrides": [*e.overrides, *train_overrides]}
                     for e in entries},
         "results": [asdict(r) for r in results]}, indent=2))
    return table


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="librobot-zoo", description=__doc__.split("\n\n")[0],
        epilog="Figures and settings: OUTPUT/results.md and OUTPUT/results.json.",
    )
    parser.add_argument("--dataset", default="data/so100_sim/hdf5",
                        help="recorded demonstrations every framework trains on (default %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("runs/zoo"),
                        help="a checkpoint per framework and the results (default %(default)s)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="frameworks, configs and evaluation settings (default: config/so100_zoo.yaml)")
    parser.add_argument("--frameworks", nargs="+", metavar="NAME", help="only these (default: all of the manifest)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a checkpoint already in OUTPUT/<name> instead of training it again, and its "
                             "measurement when the weights and settings are unchanged")
    parser.add_argument("--episodes", type=int, help="closed-loop episodes (default: the manifest's)")
    parser.add_argument("--time-limit", type=float, help="seconds per episode (default: the manifest's)")
    parser.add_argument("--train", nargs="*", default=[], metavar="key.path=value",
                        help="overrides for every training run, e.g. train.steps=200 for a quick try")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Console entry point: 0 when every framework was measured, 2 on bad input or a failed
    training, 130 when interrupted (results.md then holds the frameworks measured so far)."""
    try:
        return _main(parse_args(argv))
    except KeyboardInterrupt:
        print("librobot-zoo: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    from librobot_drivers.resources import share_path
    from librobot_training.train import main as train

    def fail(message: str) -> int:
        print(f"librobot-zoo: error: {' '.join(str(message).split())}", file=sys.stderr)
        return 2

    manifest_path = args.manifest or share_path("config", "so100_zoo.yaml", package="librobot_training")
    try:
        manifest = load_manifest(manifest_path)
    except (OSError, ValueError) as err:
        return fail(err)
    entries = manifest.entries
    if args.frameworks:
        known = {e.name for e in entries}
        unknown = [n for n in args.frameworks if n not in known]
        if unknown:
            return fail(f"--frameworks {unknown}: not in {manifest_path} (it has {sorted(known)})")
        entries = tuple(e for e in entries if e.name in args.frameworks)
    overrides = {k: v for k, v in (("episodes", args.episodes), ("time_limit_s", args.time_limit)) if v is not None}
    try:
        evaluation = Evaluation(**{**asdict(manifest.evaluation), **overrides})
    except ValueError as err:
        return fail(err)
    if not Path(args.dataset).exists():
        return fail(f"dataset {args.dataset} does not exist; record demonstrations first "
                    "(make pipeline, or librobot_bringup.record then librobot_training.bag_to_hdf5)")

    results = []
    for entry in entries:
        checkpoint = args.output / entry.name
        if not (args.reuse and (checkpoint / "config.json").is_file()):
            if checkpoint.exists() and any(checkpoint.iterdir()):
                return fail(f"{checkpoint} already holds a run; pass --reuse to measure it, or remove it")
            print(f"== {entry.name}: training ({entry.config.name})", flush=True)
            code = train(["--config", str(entry.config), f"dataset={args.dataset}", f"output_dir={checkpoint}",
                          *entry.overrides, *args.train])
            if code != 0:
                return fail(f"training {entry.name} failed (exit {code}); see the lines above")
        try:
            settings = measurement_key(checkpoint, args.dataset, evaluation, entry.execution)
        except ValueError as err:
            return fail(f"{entry.name}: {err}")
        stored = checkpoint / MEASUREMENT
        before = json.loads(stored.read_text()) if args.reuse and stored.is_file() else {}
        if before.get("settings") == settings:
            print(f"== {entry.name}: measured before with these weights and settings ({stored})", flush=True)
            results.append(Result(**before["result"]))
        else:
            print(f"== {entry.name}: evaluating {checkpoint}", flush=True)
            try:
                results.append(measure(entry.name, checkpoint, args.dataset, evaluation, entry.execution))
            except (OSError, ValueError) as err:
                return fail(f"{entry.name}: {err}")
            stored.write_text(json.dumps({"settings": settings, "result": asdict(results[-1])}, indent=2))
        print(results_table(results[-1:]).splitlines()[-1], flush=True)
        # written after every framework: a long run that stops keeps what it measured
        table = write_results(args.output, results, args.dataset, manifest_path, evaluation, entries, args.train)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
