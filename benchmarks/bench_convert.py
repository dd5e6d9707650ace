"""Converter throughput against the bare cost of reading the same bag, measured in one run.

    python benchmarks/bench_convert.py [BAG ...]   (default: the shared fixture bags)

Baseline: iterate every message of the bag with rosbags (raw bytes, no deserialisation).
Measured: the full bag -> HDF5 conversion (deserialise, sync, decode images, write HDF5).
The ratio says how much the conversion costs over the unavoidable read.
"""

import sys
import tempfile
import time
from pathlib import Path

from rosbags.highlevel import AnyReader

from librobot_training.bag_to_hdf5 import ConversionOptions, convert

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared/fixtures/rosbag2"
CAMERAS = {"front": "/camera/front/image_raw", "wrist": "/camera/wrist/image_raw/compressed"}


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_all(bag: Path) -> int:
    with AnyReader([bag]) as reader:
        return sum(len(raw) for _, _, raw in reader.messages())


def main(argv: list[str]) -> int:
    bags = [Path(a) for a in argv] or sorted(FIXTURES.glob("so100_demo_*"))
    print(f"{'bag':<28}{'MB':>7}{'read s':>9}{'convert s':>11}{'ratio':>8}{'MB/s':>8}")
    for bag in bags:
        size_mb = read_all(bag) / 1e6
        read_s = best_of(5, lambda: read_all(bag))
        cameras = CAMERAS if "so100_demo" in bag.name else None

        def run_conversion():
            with tempfile.TemporaryDirectory() as out:
                convert([bag], Path(out) / "hdf5", ConversionOptions(cameras=cameras))

        convert_s = best_of(5, run_conversion)
        print(f"{bag.name:<28}{size_mb:>7.1f}{read_s:>9.3f}{convert_s:>11.3f}"
              f"{convert_s / read_s:>7.1f}x{size_mb / convert_s:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
