"""Convert rosbag2 recordings (sqlite3 or MCAP) into ALOHA/ACT-style HDF5 episodes.

    python -m librobot_training.bag_to_hdf5 BAG [BAG ...] --output DIR [--embodiment so100] [--rate HZ]
        [--camera NAME[=TOPIC] ...] [--time-source header|receive] [--max-age S]
        [--action-source auto|command|measured] [--compression none|lzf|gzip] [--sim]
        [--successful-only] [--overwrite] [--no-progress]

What it does, in order:

1. read each bag once (``rosbags``; message types come from the definitions stored in the bag, so
   ``librobot_msgs``/``control_msgs`` types need no ROS install) and keep, per topic, the stamps and
   the small payloads; image messages are kept undecoded (a zero-copy view of the raw bytes).
   A bag its recorder did not close (killed: no metadata.yaml, an MCAP file without its end) is
   read as far as its messages are complete, with one warning line saying what was lost; its
   episodes end where every sampled stream is still complete, and dataset.json marks them
   ``"truncated": true``;
2. split the bag into episodes at ``librobot_msgs/msg/EpisodeEvent`` START/END messages (no events:
   the whole bag is one episode); with ``--successful-only`` only the episodes whose END reported
   success are kept (a scripted expert's failed tries left out of its demonstrations);
3. sample every episode on a fixed grid at ``rate`` Hz that starts when every required stream has a
   sample: for each grid time ``t`` and stream, the latest message with time <= t (never a future
   one); a grid step where a stream's newest message is older than its maximum age is skipped and
   counted as dropped for that stream;
4. the action at ``t`` is the setpoint for time ``t``: the commanded JointTrajectory (as-of ``t``)
   evaluated at ``t``, or, without a command topic (``measured``), the measured joint positions
   at ``t`` (the observation's own);
5. decode only the selected images and write ``episode_NNNNNN.hdf5`` files atomically (temporary
   name, then ``os.replace``) plus ``dataset.json``.

Layout of one episode file (T frames, D joints, readable by plain h5py)::

    attrs: sim, embodiment, joint_names, camera_names, rate_hz, instruction, source_bag,
           episode_index, success (1, 0, -1 unknown), num_frames, time_source, action_source
    /observations/qpos, /observations/qvel, /observations/effort   (T, D) float32
    /observations/images/<cam>                                      (T, H, W, 3) uint8 RGB
    /action                                                         (T, D) float32
    /timestamps/sample_ns                                           (T,) int64 grid times
    /timestamps/joint_states/{header_ns,receive_ns}                 (T,) int64
    /timestamps/images/<cam>/{header_ns,receive_ns}                 (T,) int64
    /timestamps/action/{header_ns,receive_ns}                       (T,) int64 of the command, or
                                                                    of the joint state (measured)

All times are int64 nanoseconds on the bag's clock. Pure Python: no rclpy, no message packages.
The stages live in librobot_training.conversion (base, messages, sync, reading, unclosed,
writing); this module runs them (convert) and is the command line (main).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from tqdm import tqdm

from librobot_drivers.embodiment import Embodiment, load_embodiment
from librobot_training.conversion.base import (
    ACTION_SOURCES,
    COMPRESSIONS,
    INT64_MAX,
    ConversionError,
    RESERVED_CAMERA_NAMES,
    STOP_REQUESTED,
    TIME_SOURCES,
)
from librobot_training.conversion.sync import (
    EpisodePlan,
    EpisodeWindow,
    Recording,
    default_max_age_ns,
    plan_episode,
    split_episodes,
)
from librobot_training.conversion.reading import read_bag
from librobot_training.conversion.writing import EpisodeMeta, atomic_output, instruction_for, write_episode

# The stages' own names (ConversionError, make_grid, message_to_rgb, ...) are imported from where
# they live, librobot_training.conversion.*; this module exports the conversion run and its command line.
__all__ = ["ConversionOptions", "ConversionSummary", "convert", "main"]


LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversionOptions:
    """Conversion settings; None means "from the embodiment spec / the data".

    rate_hz: grid rate (default spec.control_rate_hz). max_age_s: maximum age of a sensor's newest
    message at a grid step (default per stream: max(2/rate, 2 x the stream's median period)).
    cameras: name -> topic override (None: the spec topic); None converts all spec cameras.
    successful_only: keep only the episodes whose END event reported success.
    """

    embodiment: str = "so100"
    rate_hz: float | None = None
    max_age_s: float | None = None
    time_source: str = "header"
    cameras: Mapping[str, str | None] | None = None
    compression: str = "none"
    sim: bool = False
    action_source: str = "auto"
    successful_only: bool = False
    overwrite: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.rate_hz is not None and not self.rate_hz > 0:
            raise ConversionError(f"rate must be > 0 Hz, got {self.rate_hz}")
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ConversionError(f"max age must be > 0 s, got {self.max_age_s}")
        for value, choices, what in (
            (self.time_source, TIME_SOURCES, "time source"),
            (self.action_source, ACTION_SOURCES, "action source"),
            (self.compression, COMPRESSIONS, "compression"),
        ):
            if value not in choices:
                raise ConversionError(f"unknown {what} {value!r}; expected one of {list(choices)}")
        for name in self.cameras or {}:
            if name in RESERVED_CAMERA_NAMES or not name or "/" in name:
                raise ConversionError(f"invalid camera name {name!r}")


@dataclass
class ConversionSummary:
    """What convert() wrote, how fast it read the bags, and the warnings it logged (one line per
    bag its recorder did not close)."""

    output: Path
    dataset: dict
    messages: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    warnings: list[str] = dataclasses.field(default_factory=list)
    left_out: int = 0  # episodes not successful, with ConversionOptions.successful_only

    @property
    def episodes(self) -> list[dict]:
        return self.dataset["episodes"]

    def line(self) -> str:
        frames = sum(e["frames"] for e in self.episodes)
        dropped = sum(sum(e["dropped"].values()) for e in self.episodes)
        rate = self.messages / self.seconds if self.seconds > 0 else float("inf")
        mbps = self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else float("inf")
        left_out = f", left out {self.left_out} unsuccessful" if self.left_out else ""
        return (
            f"wrote {len(self.episodes)} episodes ({frames} frames, {dropped} grid steps "
            f"dropped{left_out}) to {self.output} in {self.seconds:.2f} s: {self.messages} "
            f"messages, {rate:.0f} msg/s, {mbps:.1f} MB/s"
        )


def _existing_outputs(output: Path) -> list[Path]:
    if not output.is_dir():
        return []
    return sorted([*output.glob("episode_*.hdf5"), *output.glob("dataset.json")])


def _write_json(path: Path, data: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _episode_plans(
    rec: Recording, rate_hz: float, options: ConversionOptions, use_command: bool
) -> tuple[list[tuple[EpisodeWindow, EpisodePlan]], list[str]]:
    """Plan every episode of a bag before writing any, so a bad bag leaves no files.

    Returns the plans and the labels of the episodes skipped. In a truncated bag every episode
    ends by the time all sampled streams are complete (Recording.complete_until_ns), so its frames
    are those the whole bag would give; an episode that has no complete sample before then is
    skipped, unless no episode is left. So is one without a complete sample that began before the
    recording did (`ros2 bag record` started in the middle of it) or had not ended when the
    recording stopped.
    """
    sensors = rec.sensors()
    if options.max_age_s is not None:
        max_age = {name: int(round(options.max_age_s * 1e9)) for name in sensors}
    else:
        max_age = {name: default_max_age_ns(s, rate_hz) for name, s in sensors.items()}
    complete_until = rec.complete_until_ns(use_command)
    recorded_from = int(rec.joint_states.time_ns[0]) if len(rec.joint_states) else complete_until
    plans, skipped, failure = [], [], None
    for number, window in enumerate(split_episodes(rec.events)):
        label = f"episode {window.source_index if window.source_index is not None else number}"
        if window.end_ns < recorded_from:
            # Its events came from the topic's transient-local history: a recorder started late
            # (`ros2 bag record` of a running system) stores episodes that ended before it.
            skipped.append(f"{label} (ended before the recording)")
            continue
        cut = dataclasses.replace(window, end_ns=min(window.end_ns, complete_until))
        try:
            plan = plan_episode(
                sensors, cut, rate_hz, max_age, rec.command if use_command else None
            )
        except ConversionError as err:
            failure = ConversionError(f"bag {rec.path}, {label}: {err}")
            # Incomplete because the recording began during it (a recorder started late) or ended
            # during it (a truncated bag, or one stopped before the episode's END): skipped; any
            # other episode that cannot be sampled fails.
            began_before = window.start_ns < recorded_from
            never_ended = window.end_ns == INT64_MAX
            if cut.end_ns == window.end_ns and not began_before and not never_ended:
                raise failure from None
            skipped.append(f"{label} (began before the recording)" if began_before else
                           f"{label} (the recording stopped during it)" if never_ended else label)
            continue
        plans.append((window, plan))
    if not plans:  # every episode was skipped: report the last one's failure
        raise failure
    return plans, skipped


def _write_bag_episodes(
    rec: Recording,
    plans: list[tuple[EpisodeWindow, EpisodePlan]],
    spec: Embodiment,
    options: ConversionOptions,
    dataset: dict,
    output: Path,
) -> None:
    """Write one file per planned episode, numbering on from ``dataset["episodes"]``, and keep
    ``output``/dataset.json listing exactly the files written so far."""
    action_source = "command" if rec.command is not None else "measured"
    compression = None if options.compression == "none" else options.compression
    topics = {name: s.topic for name, s in rec.sensors().items()}
    if rec.command is not None:
        topics["command"] = rec.command.topic
    for window, plan in tqdm(
        plans, unit="episode", desc="episodes", disable=not options.progress, leave=False
    ):
        number = len(dataset["episodes"])
        meta = EpisodeMeta(
            embodiment=spec.name,
            joint_names=spec.joint_names,
            rate_hz=dataset["rate_hz"],
            instruction=instruction_for(rec, window, int(plan.sample_ns[0])),
            source_bag=str(rec.path),
            episode_index=number,
            success=window.success,
            sim=options.sim,
            time_source=options.time_source,
            action_source=action_source,
            seed=window.seed,
        )
        name = f"episode_{number:06d}.hdf5"
        write_episode(output / name, rec, plan, meta, compression, options.progress)
        dataset["episodes"].append(
            {
                "file": name,
                "source_bag": str(rec.path),
                "source_episode_index": window.source_index,
                "frames": len(plan.sample_ns),
                "grid_steps": plan.grid_steps,
                "dropped": plan.dropped,
                "success": window.success,
                "instruction": meta.instruction,
                "action_source": action_source,
                "topics": topics,
                "start_ns": int(plan.sample_ns[0]),
                "end_ns": int(plan.sample_ns[-1]),
                "truncated": rec.truncation is not None,
                "truncation": rec.truncation,
            }
        )
        _write_json(output / "dataset.json", dataset)


def _load_spec(name: str) -> Embodiment:
    try:
        return load_embodiment(name)
    except (ValueError, OSError) as err:
        raise ConversionError(f"embodiment {name!r}: {err}") from None


def convert(
    bags: Sequence[str | Path],
    output: str | Path,
    options: ConversionOptions = ConversionOptions(),
    spec: Embodiment | None = None,
) -> ConversionSummary:
    """Convert ``bags`` into ``output``/episode_NNNNNN.hdf5 + dataset.json; return a summary.

    Episodes are numbered across bags in order; every bag is read and planned before any of its
    files is written. A bag its recorder did not close is converted as far as it is complete and
    logs one warning line (also kept in the summary's ``warnings``). Raises ConversionError (one
    line) on user errors; files already complete stay valid and dataset.json always lists exactly
    the written episodes.
    """
    if not bags:
        raise ConversionError("no bags given")
    # the embodiment as the policy sees it: state and action are the commanded groups' joints
    spec = (spec or _load_spec(options.embodiment)).commanded()
    output = Path(output)
    stale = _existing_outputs(output)
    if stale and not options.overwrite:
        raise ConversionError(
            f"output directory {output} already holds {len(stale)} episode/dataset files; "
            "pass --overwrite to replace them"
        )
    rate_hz = options.rate_hz or spec.control_rate_hz
    dataset: dict = {
        "format": "aloha-hdf5",
        "embodiment": spec.name,
        "joint_names": spec.joint_names,
        "camera_names": [],
        "rate_hz": rate_hz,
        "time_source": options.time_source,
        "sim": options.sim,
        "episodes": [],
    }
    summary = ConversionSummary(output, dataset)
    cameras = options.cameras
    began = time.perf_counter()
    for bag in bags:
        rec = read_bag(
            bag, spec, cameras, options.action_source, options.time_source, options.progress
        )
        if cameras is None:  # later bags must provide the cameras the first one had
            cameras = {name: None for name in rec.cameras}
        dataset["camera_names"] = list(rec.cameras)
        summary.messages += rec.message_count
        summary.bytes_read += rec.bytes_read
        plans, skipped = _episode_plans(rec, rate_hz, options, rec.command is not None)
        if options.successful_only:
            kept = [(window, plan) for window, plan in plans if window.success == 1]
            summary.left_out += len(plans) - len(kept)
            plans = kept
        if rec.truncation is not None or skipped:
            notes = [rec.truncation] if rec.truncation is not None else []
            if skipped:
                notes.append(
                    f"{', '.join(skipped)} had no complete sample in the recording and "
                    f"{'was' if len(skipped) == 1 else 'were'} skipped"
                )
            warning = f"bag {rec.path}: " + "; ".join(notes)
            LOG.warning(warning)
            summary.warnings.append(warning)
        if not plans:  # no successful episode in this bag: nothing of it to write
            continue
        output.mkdir(parents=True, exist_ok=True)
        for path in stale:  # only once a bag proved convertible
            path.unlink(missing_ok=True)
        stale = []
        _write_bag_episodes(rec, plans, spec, options, dataset, output)
    if not dataset["episodes"]:  # only with successful_only: a bag without episodes raised above
        raise ConversionError(
            f"none of the {summary.left_out} episodes in the bags reported success; nothing written"
        )
    summary.seconds = time.perf_counter() - began
    return summary


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def parse_camera(text: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME=TOPIC`` -> (name, topic or None)."""
    name, sep, topic = text.partition("=")
    if not name or (sep and not topic.startswith("/")):
        raise argparse.ArgumentTypeError(f"expected NAME or NAME=/topic, got {text!r}")
    return name, topic or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="librobot-bag-to-hdf5",
        description="Convert rosbag2 recordings (sqlite3 or MCAP) into ALOHA/ACT HDF5 episodes.",
    )
    parser.add_argument(
        "bags", nargs="+", type=Path, help="rosbag2 directories (or .mcap/.db3 files)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--embodiment", default="so100", help="embodiment name or YAML path (default: so100)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="sampling rate in Hz (default: the spec's control rate)",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=None,
        help="max age in seconds of a sensor's newest message at a sample, else the step is "
        "dropped "
        "(default per stream: max(2/rate, 2 periods of the stream))",
    )
    parser.add_argument(
        "--time-source",
        choices=TIME_SOURCES,
        default="header",
        help="message time for sync: header stamp or bag receive time (default: header)",
    )
    parser.add_argument(
        "--camera",
        action="append",
        type=parse_camera,
        metavar="NAME[=TOPIC]",
        help="camera to convert, optionally with its topic (repeatable; default: spec cameras)",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="none",
        help="image compression (default: none)",
    )
    parser.add_argument("--sim", action="store_true", help="set the root attribute sim=True")
    parser.add_argument(
        "--action-source",
        choices=ACTION_SOURCES,
        default="auto",
        help="the action at each sample t is the setpoint for time t: command: the commanded "
        "trajectory evaluated at t; measured: the joint positions measured at t; "
        "auto: command if the command topic is recorded, else measured (default)",
    )
    parser.add_argument(
        "--successful-only",
        action="store_true",
        help="keep only the episodes whose END event reported success (default: all)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace episodes and dataset.json already in --output",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _options_from_args(args: argparse.Namespace) -> ConversionOptions:
    cameras = dict(args.camera) if args.camera else None
    return ConversionOptions(
        embodiment=args.embodiment,
        rate_hz=args.rate,
        max_age_s=args.max_age,
        time_source=args.time_source,
        cameras=cameras,
        compression=args.compression,
        sim=args.sim,
        action_source=args.action_source,
        successful_only=args.successful_only,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
    )


@contextlib.contextmanager
def _signals_stop_at_safe_points() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM ask the conversion to stop at its next message or
    frame (KeyboardInterrupt there), so temporary files are removed; a second signal stops at once.

    Raising from the handler itself could land inside a finalizer, where Python ignores it.
    """
    STOP_REQUESTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        STOP_REQUESTED.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOP_REQUESTED.clear()


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Within the block, this module's warnings are printed to stderr as ``warning: ...`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    LOG.addHandler(handler)
    try:
        yield
    finally:
        LOG.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns 0 on success, 2 on a conversion error, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    try:
        with _signals_stop_at_safe_points(), _warnings_to_stderr():
            summary = convert(args.bags, args.output, _options_from_args(args))
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no partial episode file was left behind", file=sys.stderr)
        return 130
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
