"""Every benchmark runs and prints its ratio against the baseline it measures (tiny settings here:
the figures themselves come from `make bench`)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    if str(BENCHMARKS) not in sys.path:  # as when run as a script: their shared helpers sit beside them
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "argv", "ratio_line"),
    [
        ("bench_decoding", ["--chunk", "2", "--action-dim", "3", "--runs", "1", "--threads", "1"], "speed-up:"),
        ("bench_frameworks", ["--runs", "1", "--threads", "1"], "vs ACT"),  # every framework
        ("bench_policy", [], "overhead ratio:"),
        ("bench_convert", [], "ratio"),
        ("bench_node", ["--runs", "3", "--seconds", "20", "--width", "64", "--height", "48"], "over DDS"),
        ("bench_execution", ["--episodes", "1", "--time-limit", "2", "--delays-ms", "0", "200"], "ratios against"),
        ("bench_feetech", ["--cycles", "50"], "ours / floor"),
        ("bench_twins", ["--robots", "so100", "--seconds", "0.5"], "times real time"),
    ],
)
def test_benchmark_runs_and_reports_a_ratio(name, argv, ratio_line, capsys):
    assert load(name).main(argv) == 0
    assert ratio_line in capsys.readouterr().out
