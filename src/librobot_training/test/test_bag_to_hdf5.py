"""rosbag2 -> HDF5 conversion on real recordings (fixtures/) and on small bags written here.

The fixtures were recorded by the real `ros2 bag record` (see fixtures/rosbag2/README.md): every raw
front image carries its header stamp in its first 8 bytes, and joint positions follow known sine
formulas, so synchronisation can be checked against ground truth rather than against the converter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from librobot_drivers.embodiment import load_embodiment
from librobot_training.bag_to_hdf5 import ConversionOptions, convert, main
from librobot_training.conversion.base import ConversionError
from librobot_training.conversion.messages import TrajectoryCommand, message_to_rgb
from librobot_training.conversion.sync import make_grid
from librobot_training.conversion.unclosed import storage_files

# Recorded by the real `ros2 bag record`; shipped with the tests (fixtures/rosbag2/README.md).
FIXTURES = Path(os.environ.get("LIBROBOT_ROSBAG_FIXTURES", Path(__file__).parent / "fixtures/rosbag2"))
BAGS = {"mcap": FIXTURES / "so100_demo_mcap", "sqlite3": FIXTURES / "so100_demo_sqlite3"}
CAMERAS = {"front": "/camera/front/image_raw", "wrist": "/camera/wrist/image_raw/compressed"}
CAMERA_ARGS = [f"--camera={name}={topic}" for name, topic in CAMERAS.items()]
SO100_YAML = Path(__file__).resolve().parents[2] / "librobot_drivers/config/embodiments/so100.yaml"
EPISODE_EVENT_MSG = Path(__file__).resolve().parents[2] / "librobot_msgs/msg/EpisodeEvent.msg"
SPEC = load_embodiment(SO100_YAML)
LEROBOT_NAMES = [
    "shoulder_pan",
    "shoulder_lift",
    "elbow_flex",
    "wrist_flex",
    "wrist_roll",
    "gripper",
]
S = 1_000_000_000  # ns per second



def require_fixtures():
    """The real-recorder bags are part of the contract: their absence is a failure, not a skip."""
    missing = [str(p) for p in BAGS.values() if not p.is_dir()]
    assert not missing, f"rosbag2 fixtures not found: {missing} (set LIBROBOT_ROSBAG_FIXTURES)"


needs_fixtures = pytest.mark.usefixtures("fixtures_present")


@pytest.fixture(scope="module")
def fixtures_present():
    require_fixtures()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def read_raw(bag: Path) -> dict[str, dict[str, np.ndarray]]:
    """Header and receive stamps (ns) and joint positions per topic, read with rosbags directly."""
    out: dict[str, dict[str, list]] = {}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        for conn, receive_ns, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            rows = out.setdefault(
                conn.topic, {"header": [], "receive": [], "position": [], "embedded": []}
            )
            rows["receive"].append(receive_ns)
            if hasattr(msg, "header"):
                rows["header"].append(msg.header.stamp.sec * S + msg.header.stamp.nanosec)
            if conn.topic == "/joint_states":
                rows["position"].append(np.asarray(msg.position))
            if conn.msgtype == "sensor_msgs/msg/Image":
                rows["embedded"].append(int(np.frombuffer(msg.data[:8].tobytes(), "<i8")[0]))
    return {topic: {k: np.array(v) for k, v in rows.items()} for topic, rows in out.items()}


def fixture_formula(t_s: np.ndarray) -> np.ndarray:
    """README ground truth (T, 6): 0.6 sin(0.8 t + i) for the arm, 0.5 + 0.5 sin(0.5 t) gripper."""
    t = np.asarray(t_s, dtype=np.float64)[:, None]
    return np.hstack([0.6 * np.sin(0.8 * t + np.arange(5)), 0.5 + 0.5 * np.sin(0.5 * t)])


def publisher_start_ns(raw: dict) -> float:
    """The publisher's t = 0 on the bag clock, from the first joint state (0.6 sin 0.8 t)."""
    first = raw["/joint_states"]
    return first["header"][0] - np.arcsin(first["position"][0][0] / 0.6) / 0.8 * S


def h5(path: Path) -> dict:
    """Every dataset of an episode file as numpy, plus its root attributes under 'attrs'."""
    data: dict = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                data.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        data["attrs"] = dict(f.attrs)
        data["chunks"] = {
            cam: f[f"observations/images/{cam}"].chunks for cam in f["observations/images"]
        }
    return data


def outputs(directory: Path) -> list[str]:
    """Names of episode files and leftovers (temporary files included) in ``directory``."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def typestore_with_episode_event():
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(
        get_types_from_msg(EPISODE_EVENT_MSG.read_text(), "librobot_msgs/msg/EpisodeEvent")
    )
    return store


TS = typestore_with_episode_event()
Time = TS.types["builtin_interfaces/msg/Time"]
Header = TS.types["std_msgs/msg/Header"]


def header(t_ns: int, frame_id: str = "") -> object:
    return Header(stamp=Time(sec=t_ns // S, nanosec=t_ns % S), frame_id=frame_id)


def joint_state(t_ns: int, names=LEROBOT_NAMES, t0: int = 0) -> object:
    """Positions (t - t0) seconds + 10 i for the i-th name; velocity i; no effort."""
    rel = (t_ns - t0) / S
    return TS.types["sensor_msgs/msg/JointState"](
        header=header(t_ns),
        name=list(names),
        position=np.array([rel + 10 * LEROBOT_NAMES.index(n) for n in names], dtype=np.float64),
        velocity=np.array([float(LEROBOT_NAMES.index(n)) for n in names], dtype=np.float64),
        effort=np.zeros(0, dtype=np.float64),
    )


def stamped_image(t_ns: int, width=6, height=4, encoding="rgb8", pad=2) -> object:
    """An rgb8 image with ``pad`` bytes of row padding whose first 8 bytes are its stamp."""
    channels = {"rgb8": 3, "16UC1": 2}[encoding]
    step = width * channels + pad
    data = np.full(step * height, 50, dtype=np.uint8)
    data[:8] = np.frombuffer(np.int64(t_ns).tobytes(), np.uint8)
    return TS.types["sensor_msgs/msg/Image"](
        header=header(t_ns, "front_camera"),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )


def episode_event(
    t_ns: int, event: int, index: int, seed=0, instruction="", success=False
) -> object:
    return TS.types["librobot_msgs/msg/EpisodeEvent"](
        header=header(t_ns),
        event=event,
        episode_index=index,
        seed=seed,
        instruction=instruction,
        success=success,
    )


def write_bag(
    path: Path, messages: list[tuple[str, str, int, object]], storage=StoragePlugin.MCAP
) -> Path:
    """Write (topic, msgtype, receive_ns, message) tuples into a rosbag2 bag at ``path``."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for topic, msgtype, receive_ns, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(connections[topic], receive_ns, TS.serialize_cdr(msg, msgtype))
    return path


T0 = 1_000 * S  # synthetic bags start at t = 1000 s


def synthetic_messages(
    seconds=6.0, camera_gap=(2.0, 2.6), events=True, image_kwargs=None, names=LEROBOT_NAMES
):
    """Joint states at 100 Hz, an rgb8 camera at 20 Hz with a gap, an instruction and events.

    Receive times are header stamps + 1 ms (joints) / + 5 ms (images), all exact in ns.
    """
    msgs = [
        (
            "/instruction",
            "std_msgs/msg/String",
            T0,
            TS.types["std_msgs/msg/String"](data="global instruction"),
        )
    ]
    for k in range(int(seconds * 100)):
        t = T0 + k * 10_000_000
        msgs.append(
            (
                "/joint_states",
                "sensor_msgs/msg/JointState",
                t + 1_000_000,
                joint_state(t, names, T0),
            )
        )
    for k in range(int(seconds * 20)):
        rel = k * 0.05
        if camera_gap[0] < rel < camera_gap[1]:
            continue
        t = T0 + k * 50_000_000
        kwargs = (image_kwargs or (lambda k: {}))(k)
        msgs.append(
            (
                "/camera/front/image_raw",
                "sensor_msgs/msg/Image",
                t + 5_000_000,
                stamped_image(t, **kwargs),
            )
        )
    if events:
        for rel, args in (
            (0.5, (0, 0, 7, "stack the cubes")),
            (2.9, (1, 0, 7, "", True)),
            (3.0, (0, 1, 8, "")),
            (4.5, (1, 1, 8, "", False)),
            (5.0, (0, 2, 9, "last one")),
        ):
            t = T0 + int(rel * S)
            msgs.append(
                ("/episode_events", "librobot_msgs/msg/EpisodeEvent", t, episode_event(t, *args))
            )
    return msgs


def front_only(**kwargs) -> ConversionOptions:
    return ConversionOptions(cameras={"front": "/camera/front/image_raw"}, **kwargs)


# --------------------------------------------------------------------------------------------
# real recordings
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_outputs(tmp_path_factory):
    """Both fixture bags converted once with the front camera raw and the wrist camera JPEG."""
    require_fixtures()
    result = {}
    for fmt, bag in BAGS.items():
        out = tmp_path_factory.mktemp(f"out_{fmt}")
        summary = convert([bag], out, ConversionOptions(cameras=CAMERAS), spec=SPEC)
        result[fmt] = {
            "dir": out,
            "summary": summary,
            "data": h5(out / "episode_000000.hdf5"),
            "raw": read_raw(bag),
        }
    return result


@needs_fixtures
@pytest.mark.parametrize("fmt", BAGS)
def test_fixture_layout_and_attributes(fixture_outputs, fmt):
    run = fixture_outputs[fmt]
    data, T = run["data"], run["data"]["attrs"]["num_frames"]
    assert outputs(run["dir"]) == ["dataset.json", "episode_000000.hdf5"]
    assert 28 <= T <= 30  # 3 s at 10 Hz
    for key in ("observations/qpos", "observations/qvel", "observations/effort", "action"):
        assert data[key].shape == (T, 6) and data[key].dtype == np.float32, key
    for cam in CAMERAS:
        assert data[f"observations/images/{cam}"].shape == (T, 120, 160, 3)
        assert data[f"observations/images/{cam}"].dtype == np.uint8
        assert data["chunks"][cam] == (1, 120, 160, 3)
    for key in (
        "sample_ns",
        "joint_states/header_ns",
        "joint_states/receive_ns",
        "action/header_ns",
        "images/front/header_ns",
        "images/wrist/receive_ns",
    ):
        assert (
            data[f"timestamps/{key}"].shape == (T,) and data[f"timestamps/{key}"].dtype == np.int64
        )
    attrs = data["attrs"]
    assert attrs["sim"] == False  # noqa: E712  (numpy bool)
    assert attrs["embodiment"] == "so100" and attrs["rate_hz"] == 10.0
    assert list(attrs["joint_names"]) == SPEC.joint_names
    assert list(attrs["camera_names"]) == ["front", "wrist"]
    assert attrs["instruction"] == "pick up the red cube"
    assert (
        attrs["source_bag"] == str(BAGS[fmt])
        and attrs["episode_index"] == 0
        and attrs["success"] == -1
    )
    np.testing.assert_allclose(data["observations/effort"], 0.1, rtol=1e-6)
    assert np.all(np.diff(data["timestamps/sample_ns"]) == 100_000_000)


@needs_fixtures
@pytest.mark.parametrize("fmt", BAGS)
def test_joint_states_follow_ground_truth_and_are_latest_at_or_before_each_sample(
    fixture_outputs, fmt
):
    data, raw = fixture_outputs[fmt]["data"], fixture_outputs[fmt]["raw"]
    sample = data["timestamps/sample_ns"]
    stamps = data["timestamps/joint_states/header_ns"]
    joints = raw["/joint_states"]["header"]
    assert np.all(stamps <= sample)
    np.testing.assert_array_equal(stamps, joints[np.searchsorted(joints, sample, side="right") - 1])
    t = (stamps - publisher_start_ns(raw)) / S
    np.testing.assert_allclose(data["observations/qpos"], fixture_formula(t), atol=1e-4)


@needs_fixtures
@pytest.mark.parametrize("fmt", BAGS)
def test_each_front_image_is_the_latest_at_or_before_its_sample_never_a_future_one(
    fixture_outputs, fmt
):
    data, raw = fixture_outputs[fmt]["data"], fixture_outputs[fmt]["raw"]["/camera/front/image_raw"]
    sample = data["timestamps/sample_ns"]
    header_ns = data["timestamps/images/front/header_ns"]
    pixels = data["observations/images/front"].reshape(len(sample), -1)
    embedded = np.ascontiguousarray(pixels[:, :8]).view("<i8")[:, 0]
    np.testing.assert_array_equal(embedded, header_ns)  # the recorded stamp is the picture's own
    assert np.all(header_ns <= sample)  # never from the future
    latest = raw["header"][np.searchsorted(raw["header"], sample, side="right") - 1]
    np.testing.assert_array_equal(header_ns, latest)  # and the newest one available
    np.testing.assert_array_equal(raw["embedded"], raw["header"])  # (ground truth holds)
    by_stamp = dict(zip(raw["header"].tolist(), raw["receive"].tolist()))
    assert data["timestamps/images/front/receive_ns"].tolist() == [
        by_stamp[h] for h in header_ns.tolist()
    ]


@needs_fixtures
@pytest.mark.parametrize("fmt", BAGS)
def test_jpeg_wrist_frames_match_the_raw_front_frames(fixture_outputs, fmt):
    data = fixture_outputs[fmt]["data"]
    np.testing.assert_array_equal(
        data["timestamps/images/wrist/header_ns"], data["timestamps/images/front/header_ns"]
    )
    front = data["observations/images/front"].astype(np.int16)
    wrist = data["observations/images/wrist"].astype(np.int16)
    diff = np.abs(front - wrist).mean(axis=(1, 2, 3))
    assert diff.max() < 3.0, diff
    assert np.allclose(red_bar_column(front), red_bar_column(wrist), atol=1.0)  # same place


def red_bar_column(images: np.ndarray) -> np.ndarray:
    """Mean column (T,) of the red bar's pixels, skipping row 0 (which holds the stamp bytes)."""
    body = images[:, 1:]
    red = (body[..., 0] > 150) & (body[..., 1] < 80) & (body[..., 2] < 80)
    columns = np.arange(images.shape[2])
    return (red * columns).sum(axis=(1, 2)) / red.sum(axis=(1, 2))


@needs_fixtures
@pytest.mark.parametrize("fmt", BAGS)
def test_actions_are_the_commanded_trajectory_at_each_sample(fixture_outputs, fmt):
    data, raw = fixture_outputs[fmt]["data"], fixture_outputs[fmt]["raw"]
    sample, command_stamp = data["timestamps/sample_ns"], data["timestamps/action/header_ns"]
    commands = raw["/arm_controller/joint_trajectory"]["header"]
    np.testing.assert_array_equal(
        command_stamp, commands[np.searchsorted(commands, sample, side="right") - 1]
    )
    # the recorded chunks are the ground-truth motion at stamp + 50 ms, 100 ms, ... 500 ms
    error = np.abs(data["action"] - fixture_formula((sample - publisher_start_ns(raw)) / S)).max(
        axis=1
    )
    inside = sample - command_stamp >= 50_000_000  # before the first point the first point is held
    assert inside.sum() >= len(sample) - 3
    assert error[inside].max() < 1e-3 and error.max() < 0.03


@needs_fixtures
def test_storage_formats_give_the_same_arrays(fixture_outputs, tmp_path):
    """The same recording rewritten from MCAP into sqlite3 converts bit for bit identically; the two
    fixture recordings (two takes of the same scene) agree closely."""
    copy = tmp_path / "as_sqlite3"
    with (
        AnyReader([BAGS["mcap"]]) as reader,
        Writer(copy, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer,
    ):
        conns = {
            c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
            for c in reader.connections
        }
        for conn, receive_ns, raw in reader.messages():
            writer.write(conns[conn.id], receive_ns, raw)
    convert([copy], tmp_path / "out", ConversionOptions(cameras=CAMERAS), spec=SPEC)
    rewritten, mcap = h5(tmp_path / "out/episode_000000.hdf5"), fixture_outputs["mcap"]["data"]
    assert rewritten.keys() == mcap.keys()
    for key in mcap:
        if key not in ("attrs", "chunks"):
            np.testing.assert_array_equal(rewritten[key], mcap[key], err_msg=key)
    sqlite3 = fixture_outputs["sqlite3"]["data"]
    T = min(len(sqlite3["action"]), len(mcap["action"]))
    np.testing.assert_allclose(
        sqlite3["observations/qpos"][:T], mcap["observations/qpos"][:T], atol=0.01
    )
    front_diff = np.abs(
        sqlite3["observations/images/front"][:T].astype(int) - mcap["observations/images/front"][:T]
    )
    assert front_diff.mean() < 2.0


@needs_fixtures
@pytest.mark.parametrize("fmt", BAGS)
def test_dataset_json_reports_frames_and_dropped_counts(fixture_outputs, fmt):
    run = fixture_outputs[fmt]
    dataset = json.loads((run["dir"] / "dataset.json").read_text())
    assert dataset["embodiment"] == "so100" and dataset["rate_hz"] == 10.0
    assert dataset["camera_names"] == ["front", "wrist"]
    (episode,) = dataset["episodes"]
    assert episode["file"] == "episode_000000.hdf5" and episode["source_bag"] == str(BAGS[fmt])
    assert episode["frames"] == run["data"]["attrs"]["num_frames"] and episode["success"] == -1
    assert episode["dropped"] == {"joint_states": 0, "front": 0, "wrist": 0}
    assert episode["topics"]["wrist"] == "/camera/wrist/image_raw/compressed"
    assert run["summary"].messages == 406 and run["summary"].bytes_read > 2_500_000


@needs_fixtures
def test_a_tight_max_age_drops_steps_and_counts_them_per_stream(tmp_path):
    raw = read_raw(BAGS["mcap"])
    summary = convert(
        [BAGS["mcap"]], tmp_path, ConversionOptions(cameras=CAMERAS, max_age_s=0.03), spec=SPEC
    )
    (episode,) = summary.episodes
    # oracle: the same rule written as a plain loop over the raw stamps
    topics = {
        "joint_states": "/joint_states",
        "front": "/camera/front/image_raw",
        "wrist": "/camera/wrist/image_raw/compressed",
    }
    stamps = {name: raw[topic]["header"] for name, topic in topics.items()}
    start = max(
        max(s[0] for s in stamps.values()), raw["/arm_controller/joint_trajectory"]["header"][0]
    )
    end = max(s[-1] for s in stamps.values())
    expected, kept = dict.fromkeys(topics, 0), 0
    for t in range(start, end + 1, 100_000_000):
        stale = [name for name, s in stamps.items() if t - max(x for x in s if x <= t) > 30_000_000]
        for name in stale:
            expected[name] += 1
        kept += not stale
    assert (
        episode["dropped"] == expected and expected["front"] > 0 and expected["joint_states"] == 0
    )
    assert episode["frames"] == kept
    sample = h5(tmp_path / "episode_000000.hdf5")["timestamps/sample_ns"]
    assert len(sample) == kept and np.all(np.diff(sample) % 100_000_000 == 0)


@needs_fixtures
def test_receive_time_source_pairs_by_bag_log_time(tmp_path):
    raw = read_raw(BAGS["sqlite3"])["/camera/front/image_raw"]
    convert(
        [BAGS["sqlite3"]],
        tmp_path,
        ConversionOptions(cameras=CAMERAS, time_source="receive"),
        spec=SPEC,
    )
    data = h5(tmp_path / "episode_000000.hdf5")
    sample, receive = data["timestamps/sample_ns"], data["timestamps/images/front/receive_ns"]
    assert np.all(receive <= sample)
    np.testing.assert_array_equal(
        receive, raw["receive"][np.searchsorted(raw["receive"], sample, side="right") - 1]
    )
    assert data["attrs"]["time_source"] == "receive"


@needs_fixtures
def test_lzf_compression_and_sim_flag(tmp_path):
    convert(
        [BAGS["mcap"]], tmp_path, front_only(compression="lzf", sim=True, rate_hz=5.0), spec=SPEC
    )
    with h5py.File(tmp_path / "episode_000000.hdf5") as f:
        assert f["observations/images/front"].compression == "lzf"
        assert f.attrs["sim"] == True and f.attrs["rate_hz"] == 5.0  # noqa: E712
        assert np.all(np.diff(f["timestamps/sample_ns"][()]) == 200_000_000)


@needs_fixtures
def test_main_converts_and_prints_throughput(tmp_path, capsys):
    code = main(
        [
            str(BAGS["mcap"]),
            "-o",
            str(tmp_path),
            "--embodiment",
            str(SO100_YAML),
            "--no-progress",
            *CAMERA_ARGS,
            "--action-source",
            "measured",
        ]
    )
    assert code == 0
    assert "wrote 1 episodes" in capsys.readouterr().out
    data = h5(tmp_path / "episode_000000.hdf5")
    # the setpoint for time t is the position measured at t: the observation's own
    np.testing.assert_array_equal(data["action"], data["observations/qpos"])
    for stamp in ("header_ns", "receive_ns"):
        np.testing.assert_array_equal(
            data[f"timestamps/action/{stamp}"], data[f"timestamps/joint_states/{stamp}"]
        )
    assert data["attrs"]["action_source"] == "measured"


# --------------------------------------------------------------------------------------------
# errors: one line, no traceback, no output file
# --------------------------------------------------------------------------------------------
@needs_fixtures
def test_missing_topic_names_it_and_lists_the_topics_present(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as err:
        convert(
            [BAGS["mcap"]],
            out,
            ConversionOptions(cameras={"side": "/camera/side/image_raw"}),
            spec=SPEC,
        )
    message = str(err.value)
    assert (
        "/camera/side/image_raw" in message and "/joint_states" in message and "\n" not in message
    )
    assert "topics present" in message and str(BAGS["mcap"]) in message
    assert outputs(out) == []


@needs_fixtures
@pytest.mark.parametrize(
    "fmt, suffix, keep",
    [
        ("sqlite3", ".db3", lambda data: data[: len(data) // 3]),  # sqlite: "malformed"
        ("mcap", ".mcap", lambda data: data[:20]),  # cut inside the MCAP header record
        ("mcap", ".mcap", lambda data: bytes(reversed(data))),  # not MCAP at all
    ],
    ids=["sqlite3-cut", "mcap-cut-in-header", "mcap-garbage"],
)
def test_unreadable_bag_is_reported_and_leaves_no_output(tmp_path, fmt, suffix, keep):
    bag = tmp_path / "bag"
    shutil.copytree(BAGS[fmt], bag)
    (data_file,) = bag.glob(f"*{suffix}")
    data_file.chmod(0o644)
    data_file.write_bytes(keep(data_file.read_bytes()))
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="corrupt or truncated") as err:
        convert([bag], out, ConversionOptions(cameras=CAMERAS), spec=SPEC)
    assert str(bag) in str(err.value) and "\n" not in str(err.value)
    assert outputs(out) == []


@needs_fixtures
def test_ctrl_c_while_writing_exits_130_and_leaves_no_file(tmp_path):
    """A real SIGINT to the CLI while an episode file is being written (3000 Hz, gzip: slow)."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "librobot_training.bag_to_hdf5", str(BAGS["mcap"]), "-o",
               str(out), "--embodiment", str(SO100_YAML), "--camera", "front", "--rate", "3000",
               "--compression", "gzip", "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if out.is_dir() and any(out.glob(".episode_*.partial")):
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.startswith("error: interrupted") and "Traceback" not in err
    assert outputs(out) == []


def test_empty_bag_is_reported(tmp_path):
    bag = tmp_path / "empty"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=TS)
    with pytest.raises(ConversionError, match="empty"):
        convert([bag], tmp_path / "out", spec=SPEC)
    assert outputs(tmp_path / "out") == []


def test_missing_path_and_non_bag_directory_are_reported(tmp_path):
    with pytest.raises(ConversionError, match="does not exist"):
        convert([tmp_path / "nope"], tmp_path / "out", spec=SPEC)
    with pytest.raises(ConversionError, match="not a rosbag2 bag"):
        convert([tmp_path], tmp_path / "out", spec=SPEC)


def test_main_prints_one_line_error_and_exits_2(tmp_path, capsys):
    code = main(
        [str(tmp_path / "nope"), "-o", str(tmp_path / "out"), "--embodiment", str(SO100_YAML)]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.startswith("error: bag path ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_main_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    assert exit_help.value.code == 0 and "--time-source" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_usage:
        main(["bag"])  # --output is required
    assert exit_usage.value.code == 2


def test_joint_state_missing_a_joint_names_it(tmp_path):
    bag = write_bag(
        tmp_path / "bag", synthetic_messages(seconds=1.0, events=False, names=LEROBOT_NAMES[:5])
    )
    with pytest.raises(ConversionError, match="gripper_joint"):
        convert([bag], tmp_path / "out", front_only(), spec=SPEC)


def test_unsupported_encoding_is_a_one_line_error_via_main(tmp_path, capsys):
    messages = synthetic_messages(
        seconds=1.0, events=False, image_kwargs=lambda k: {"encoding": "16UC1"}
    )
    bag = write_bag(tmp_path / "bag", messages)
    code = main(
        [
            str(bag),
            "-o",
            str(tmp_path / "out"),
            "--embodiment",
            str(SO100_YAML),
            "--camera",
            "front",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'16UC1'" in err and "front" in err and err.count("\n") == 1
    assert outputs(tmp_path / "out") == []


def test_failure_while_writing_leaves_no_partial_file(tmp_path):
    """A camera that changes size mid-episode fails after the HDF5 file was started."""
    messages = synthetic_messages(
        seconds=2.0, events=False, image_kwargs=lambda k: {"width": 8 if k > 20 else 6}
    )
    bag = write_bag(tmp_path / "bag", messages)
    with pytest.raises(ConversionError, match="8x4 pixels, earlier frames 6x4"):
        convert([bag], tmp_path / "out", front_only(), spec=SPEC)
    assert outputs(tmp_path / "out") == []  # neither the episode nor its temporary file


def test_existing_output_needs_overwrite(tmp_path):
    bag = write_bag(tmp_path / "bag", synthetic_messages(seconds=1.0, events=False))
    out = tmp_path / "out"
    convert([bag], out, front_only(), spec=SPEC)
    with pytest.raises(ConversionError, match="--overwrite"):
        convert([bag], out, front_only(), spec=SPEC)
    convert([bag], out, front_only(overwrite=True), spec=SPEC)
    assert outputs(out) == ["dataset.json", "episode_000000.hdf5"]


# --------------------------------------------------------------------------------------------
# bags their recorder did not close: converted as far as complete, with one warning line
# --------------------------------------------------------------------------------------------
def mcap_summary_start(data: bytes) -> int:
    """Offset of a closed MCAP file's summary section, read from its footer record (the 37 bytes
    before the end: opcode, length, summary start, summary offset start, crc, closing magic)."""
    assert data[-8:] == b"\x89MCAP0\r\n"
    return struct.unpack_from("<Q", data, len(data) - 37 + 9)[0]


def assert_frames_are_a_prefix(part: dict, whole: dict) -> None:
    """Every array of episode ``part`` equals the first frames of the same array of ``whole``."""
    assert part.keys() == whole.keys()
    frames = len(part["timestamps/sample_ns"])
    assert 0 < frames <= len(whole["timestamps/sample_ns"])
    for key in whole:
        if key not in ("attrs", "chunks"):
            np.testing.assert_array_equal(part[key], whole[key][:frames], err_msg=key)


def bag_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "librobot_training.bag_to_hdf5" and r.levelno == logging.WARNING
    ]


@needs_fixtures
@pytest.mark.parametrize(
    "layout, cut",
    [
        ("directory", 0.5),  # inside an (uncompressed) chunk: its complete messages are kept
        ("directory", "summary"),  # the whole data section, no summary, footer or closing magic
        ("directory without metadata.yaml", 0.35),  # what a killed recorder leaves
        ("file", 0.75),  # the .mcap given on its own
    ],
)
def test_mcap_cut_short_converts_what_is_complete_with_one_warning(
    fixture_outputs, tmp_path, caplog, layout, cut
):
    caplog.set_level(logging.WARNING)
    bag = tmp_path / "bag"
    shutil.copytree(BAGS["mcap"], bag)
    (mcap,) = bag.glob("*.mcap")
    mcap.chmod(0o644)
    data = mcap.read_bytes()
    end = mcap_summary_start(data) if cut == "summary" else int(len(data) * cut)
    mcap.write_bytes(data[:end])
    if layout == "directory without metadata.yaml":
        (bag / "metadata.yaml").unlink()
    source = mcap if layout == "file" else bag
    out = tmp_path / "out"

    summary = convert([source], out, ConversionOptions(cameras=CAMERAS), spec=SPEC)

    full = fixture_outputs["mcap"]
    part = h5(out / "episode_000000.hdf5")
    assert_frames_are_a_prefix(part, full["data"])
    (warning,) = bag_warnings(caplog)
    assert warning.startswith(f"bag {source}: ") and "\n" not in warning
    assert summary.warnings == [warning]
    if cut == "summary":
        assert "no summary or footer; all its 406 messages were read" in warning
        assert summary.messages == 406
    else:
        assert f"truncated MCAP {mcap.name}: read " in warning and "was unreadable" in warning
        assert 0 < summary.messages < 406
        assert len(part["timestamps/sample_ns"]) < len(full["data"]["timestamps/sample_ns"])
    assert ("no metadata.yaml" in warning) == (layout == "directory without metadata.yaml")
    (episode,) = json.loads((out / "dataset.json").read_text())["episodes"]
    assert episode["truncated"] is True and episode["truncation"] in warning
    assert episode["frames"] == len(part["timestamps/sample_ns"])


@needs_fixtures
def test_sqlite3_bag_without_metadata_yaml_converts_with_one_warning(
    fixture_outputs, tmp_path, caplog
):
    caplog.set_level(logging.WARNING)
    bag = tmp_path / "bag"
    shutil.copytree(BAGS["sqlite3"], bag)
    (bag / "metadata.yaml").unlink()  # rosbag2 writes it only when it closes the bag
    out = tmp_path / "out"

    summary = convert([bag], out, ConversionOptions(cameras=CAMERAS), spec=SPEC)

    assert summary.messages == 406  # the database itself is complete
    assert_frames_are_a_prefix(h5(out / "episode_000000.hdf5"), fixture_outputs["sqlite3"]["data"])
    assert bag_warnings(caplog) == [
        f"bag {bag}: no metadata.yaml (its recorder did not close it); "
        "read so100_demo_sqlite3_0.db3 directly"
    ]
    (episode,) = json.loads((out / "dataset.json").read_text())["episodes"]
    assert episode["truncated"] is True and "no metadata.yaml" in episode["truncation"]


@needs_fixtures
def test_a_write_ahead_log_left_next_to_the_database_is_reported_as_not_read(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    bag = tmp_path / "bag"
    shutil.copytree(BAGS["sqlite3"], bag)
    (bag / "metadata.yaml").unlink()
    (bag / "so100_demo_sqlite3_0.db3-wal").write_bytes(b"\0" * 4096)  # rosbags reads the db only
    convert([bag], tmp_path / "out", ConversionOptions(cameras=CAMERAS), spec=SPEC)
    (warning,) = bag_warnings(caplog)
    assert warning.endswith(
        "; its write-ahead log so100_demo_sqlite3_0.db3-wal (4096 bytes) was not read"
    )


def test_storage_files_are_in_recording_order(tmp_path):
    names = ["rec_10.mcap", "rec_2.mcap", "rec_0.mcap", "rec_1.mcap", "notes.txt", "other.db3"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in storage_files(tmp_path)] == [
        "other.db3", "rec_0.mcap", "rec_1.mcap", "rec_2.mcap", "rec_10.mcap"
    ]  # fmt: skip


@needs_fixtures
@pytest.mark.parametrize("fmt, suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_a_closed_storage_file_given_directly_converts_like_its_bag(
    fixture_outputs, tmp_path, caplog, fmt, suffix
):
    caplog.set_level(logging.WARNING)
    (storage,) = BAGS[fmt].glob(f"*{suffix}")
    convert([storage], tmp_path, ConversionOptions(cameras=CAMERAS), spec=SPEC)
    data, whole = h5(tmp_path / "episode_000000.hdf5"), fixture_outputs[fmt]["data"]
    assert len(data["timestamps/sample_ns"]) == len(whole["timestamps/sample_ns"])
    assert_frames_are_a_prefix(data, whole)
    assert bag_warnings(caplog) == []
    (episode,) = json.loads((tmp_path / "dataset.json").read_text())["episodes"]
    assert episode["truncated"] is False and episode["truncation"] is None


@needs_fixtures
def test_main_prints_the_warning_as_one_line_on_stderr(tmp_path, capsys):
    bag = tmp_path / "bag"
    shutil.copytree(BAGS["mcap"], bag)
    (mcap,) = bag.glob("*.mcap")
    mcap.chmod(0o644)
    mcap.write_bytes(mcap.read_bytes()[:1_000_000])
    (bag / "metadata.yaml").unlink()
    code = main(
        [str(bag), "-o", str(tmp_path / "out"), "--embodiment", str(SO100_YAML), "--no-progress",
         *CAMERA_ARGS]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and "wrote 1 episodes" in captured.out
    assert captured.err.startswith(f"warning: bag {bag}: no metadata.yaml") and (
        captured.err.count("\n") == 1
    )
    assert "truncated MCAP" in captured.err and "bytes) was unreadable" in captured.err


def test_episode_without_a_complete_sample_before_the_cut_is_skipped(tmp_path, caplog):
    """The last episode starts after the camera's last message and never ends: in a closed bag the
    recorder was stopped during it (`ros2 bag record` stopped with Ctrl-C just after a START), in a
    truncated bag it is what was lost; skipped either way. An episode that did end, without a
    complete sample, is still an error."""
    caplog.set_level(logging.WARNING)
    messages = synthetic_messages(seconds=5.05, events=False)  # camera until 5.00 s, joints 5.04 s
    for rel, args in ((0.5, (0, 0, 7, "stack")), (2.9, (1, 0, 7, "", True)), (5.02, (0, 1, 8))):
        t = T0 + int(rel * S)
        messages.append(
            ("/episode_events", "librobot_msgs/msg/EpisodeEvent", t, episode_event(t, *args))
        )
    end = T0 + int(5.04 * S)
    ended = [*messages, ("/episode_events", "librobot_msgs/msg/EpisodeEvent", end, episode_event(end, 1, 1, 8, "", True))]
    with pytest.raises(ConversionError, match="episode 1: no complete sample"):
        convert([write_bag(tmp_path / "ended", ended)], tmp_path / "closed_ended", front_only(), spec=SPEC)
    bag = write_bag(tmp_path / "bag", messages)
    (closed,) = convert([bag], tmp_path / "closed", front_only(), spec=SPEC).episodes
    assert closed["source_episode_index"] == 0 and closed["success"] == 1
    (warning,) = bag_warnings(caplog)
    assert warning.endswith(": episode 1 (the recording stopped during it) had no complete sample in "
                            "the recording and was skipped")
    caplog.clear()
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: mcap_summary_start(data)])
    (bag / "metadata.yaml").unlink()

    summary = convert([bag], tmp_path / "out", front_only(), spec=SPEC)

    (episode,) = summary.episodes
    assert episode["source_episode_index"] == 0 and episode["success"] == 1
    assert episode["grid_steps"] == 25 and episode["frames"] == 22  # as in the closed bag
    assert episode["truncated"] is True
    (warning,) = bag_warnings(caplog)
    assert warning.endswith("; episode 1 (the recording stopped during it) had no complete sample in "
                            "the recording and was skipped")


def test_episodes_that_ended_before_a_late_recorder_started_are_skipped(tmp_path, caplog):
    """`ros2 bag record` of a running system stores the episode events of the topic's
    transient-local history: episodes that ended before the recording has any joint state."""
    caplog.set_level(logging.WARNING)
    messages = synthetic_messages(seconds=3.0, events=False)
    before = T0 - 10 * S
    for t, args in ((before, (0, 0, 7, "stack")), (before + S, (1, 0, 7, "", True)),
                    (T0 + S // 2, (0, 1, 8, "stack")), (T0 + int(2.9 * S), (1, 1, 8, "", True))):
        messages.append(("/episode_events", "librobot_msgs/msg/EpisodeEvent", t, episode_event(t, *args)))
    summary = convert([write_bag(tmp_path / "bag", messages)], tmp_path / "out", front_only(), spec=SPEC)
    (episode,) = summary.episodes
    assert episode["source_episode_index"] == 1 and episode["success"] == 1
    (warning,) = bag_warnings(caplog)
    assert warning.endswith("episode 0 (ended before the recording) had no complete sample in the "
                            "recording and was skipped")


def test_files_that_are_no_bag_are_still_refused(tmp_path):
    rng = np.random.default_rng(0)
    junk_file = tmp_path / "junk.mcap"
    junk_file.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    junk_dir = tmp_path / "junk_dir"
    junk_dir.mkdir()
    (junk_dir / "junk_dir_0.db3").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for path in (junk_file, junk_dir):
        with pytest.raises(ConversionError, match="corrupt or truncated") as err:
            convert([path], tmp_path / "out", spec=SPEC)
        assert str(err.value).startswith(f"bag {path}: ") and "\n" not in str(err.value)
    assert outputs(tmp_path / "out") == []


# --------------------------------------------------------------------------------------------
# episodes, synchronisation rules, conversions
# --------------------------------------------------------------------------------------------
def test_episode_events_split_a_bag_and_set_success(tmp_path):
    bag = write_bag(tmp_path / "bag", synthetic_messages(), storage=StoragePlugin.SQLITE3)
    summary = convert([bag], tmp_path / "out", front_only(), spec=SPEC)
    assert outputs(tmp_path / "out") == [
        "dataset.json",
        *(f"episode_00000{i}.hdf5" for i in range(3)),
    ]
    episodes = [h5(tmp_path / f"out/episode_00000{i}.hdf5") for i in range(3)]
    attrs = [e["attrs"] for e in episodes]
    assert [a["success"] for a in attrs] == [1, 0, -1]
    assert [a["episode_index"] for a in attrs] == [0, 1, 2]
    assert [a["seed"] for a in attrs] == [7, 8, 9]
    assert [a["instruction"] for a in attrs] == [
        "stack the cubes",
        "global instruction",
        "last one",
    ]
    # episode 0 spans 0.5 .. 2.9 s: 25 grid steps; the camera gap (2.0, 2.6) s leaves the newest
    # image older than 2 periods (0.2 s) at 2.3, 2.4 and 2.5 s -> 3 steps dropped
    assert [e["grid_steps"] for e in summary.episodes] == [25, 16, 10]
    assert [e["frames"] for e in summary.episodes] == [22, 16, 10]
    assert summary.episodes[0]["dropped"] == {"joint_states": 0, "front": 3}
    assert [e["source_episode_index"] for e in summary.episodes] == [0, 1, 2]
    sample = episodes[0]["timestamps/sample_ns"]
    rel = np.round((sample - T0) / 1e8).astype(int)
    assert rel.tolist() == [r for r in range(5, 30) if r not in (23, 24, 25)]
    camera = np.array([T0 + k * 50_000_000 for k in range(120) if not 2.0 < k * 0.05 < 2.6])
    for ep in episodes:
        sample, js = ep["timestamps/sample_ns"], ep["timestamps/joint_states/header_ns"]
        np.testing.assert_array_equal(js, sample)  # 100 Hz joints land exactly on the 10 Hz grid
        np.testing.assert_array_equal(ep["timestamps/joint_states/receive_ns"], js + 1_000_000)
        # positions (t - T0) + 10 i arrive in LeRobot names and leave in spec order
        expected = (js[:, None] - T0) / S + 10 * np.arange(6)
        np.testing.assert_allclose(ep["observations/qpos"], expected, rtol=1e-6)
        np.testing.assert_allclose(
            ep["observations/qvel"], np.broadcast_to(np.arange(6), (len(js), 6))
        )
        assert not ep["observations/effort"].any()  # absent in the messages -> zeros
        # no command topic: the action at t is the position measured at t
        np.testing.assert_array_equal(ep["action"], ep["observations/qpos"])
        img_stamp = ep["timestamps/images/front/header_ns"]
        embedded = np.ascontiguousarray(
            ep["observations/images/front"].reshape(len(js), -1)[:, :8]
        ).view("<i8")[:, 0]
        np.testing.assert_array_equal(embedded, img_stamp)
        latest = camera[np.searchsorted(camera, sample, side="right") - 1]
        np.testing.assert_array_equal(img_stamp, latest)  # newest image at or before, within 0.2 s
        assert np.all(sample - img_stamp <= 200_000_000)
        assert np.all(
            ep["observations/images/front"].reshape(len(js), -1)[:, 8:] == 50
        )  # padding dropped


def test_successful_only_keeps_the_episodes_that_reported_success(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", synthetic_messages(), storage=StoragePlugin.SQLITE3)
    summary = convert([bag], tmp_path / "out", front_only(successful_only=True), spec=SPEC)
    assert outputs(tmp_path / "out") == ["dataset.json", "episode_000000.hdf5"]
    assert h5(tmp_path / "out/episode_000000.hdf5")["attrs"]["seed"] == 7  # the first, success 1
    assert [(e["source_episode_index"], e["success"]) for e in summary.episodes] == [(0, 1)]
    assert summary.left_out == 2 and "left out 2 unsuccessful" in summary.line()
    listed = json.loads((tmp_path / "out/dataset.json").read_text())["episodes"]
    assert [e["file"] for e in listed] == ["episode_000000.hdf5"]
    # the same through the command line
    assert main([str(bag), "-o", str(tmp_path / "cli"), "--camera", "front=/camera/front/image_raw",
                 "--embodiment", str(SO100_YAML), "--successful-only", "--no-progress"]) == 0
    assert outputs(tmp_path / "cli") == ["dataset.json", "episode_000000.hdf5"]
    assert "wrote 1 episodes" in capsys.readouterr().out


def test_successful_only_without_a_success_writes_nothing_and_keeps_the_old_output(tmp_path):
    out = tmp_path / "out"
    convert([write_bag(tmp_path / "old", synthetic_messages(seconds=1.0, events=False))], out,
            front_only(), spec=SPEC)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    failed = write_bag(tmp_path / "failed", synthetic_messages(seconds=1.0, events=False))  # success unknown
    with pytest.raises(ConversionError, match="none of the 1 episodes .* reported success"):
        convert([failed], out, front_only(successful_only=True, overwrite=True), spec=SPEC)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def joint_trajectory(t_ns: int, points: int = 10, step_ns: int = 50_000_000) -> object:
    """A command stamped ``t_ns`` whose points lie on joint_state()'s ramp, ``step_ns`` apart."""
    point_type = TS.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    duration = TS.types["builtin_interfaces/msg/Duration"]
    empty = np.zeros(0, dtype=np.float64)
    return TS.types["trajectory_msgs/msg/JointTrajectory"](
        header=header(t_ns),
        joint_names=list(LEROBOT_NAMES),
        points=[
            point_type(
                positions=joint_state(t_ns + j * step_ns, t0=T0).position,
                velocities=empty,
                accelerations=empty,
                effort=empty,
                time_from_start=duration(sec=0, nanosec=j * step_ns),
            )
            for j in range(points)
        ],
    )


def test_command_and_measured_actions_agree_for_a_robot_that_tracks_its_commands(tmp_path):
    """Both action sources give the setpoint for the sample's own time: on a robot whose joint
    states are exactly its commands, they give the same actions at the same samples."""
    messages = synthetic_messages(seconds=2.0, events=False)  # joints on a ramp, 1 rad/s
    for k in range(10):  # 5 Hz commands, each 450 ms long, on the same ramp
        t = T0 + k * 200_000_000
        messages.append(
            ("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory",
             t + 2_000_000, joint_trajectory(t))
        )  # fmt: skip
    bag = write_bag(tmp_path / "bag", messages)
    episodes = {}
    for source in ("command", "measured"):
        convert([bag], tmp_path / source, front_only(action_source=source), spec=SPEC)
        episodes[source] = h5(tmp_path / source / "episode_000000.hdf5")
        assert episodes[source]["attrs"]["action_source"] == source
    command, measured = episodes["command"], episodes["measured"]
    np.testing.assert_array_equal(command["timestamps/sample_ns"], measured["timestamps/sample_ns"])
    assert len(command["timestamps/sample_ns"]) == 20
    assert np.abs(np.diff(command["action"], axis=0)).min() > 0.09  # one step apart is 0.1 rad
    np.testing.assert_allclose(measured["action"], command["action"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(measured["action"], measured["observations/qpos"])


def test_make_grid_and_trajectory_evaluation():
    np.testing.assert_array_equal(
        make_grid(10, 10 + 3 * S // 10, 10.0), [10 + k * S // 10 for k in range(4)]
    )
    assert len(make_grid(10, 9, 10.0)) == 0
    points = np.array([100, 200, 400])
    positions = np.array([[0.0, 10.0], [1.0, 20.0], [3.0, 0.0]])
    got = TrajectoryCommand(points, positions).targets_at(np.array([0, 100, 150, 300, 400, 999]))
    np.testing.assert_allclose(got, [[0, 10], [0, 10], [0.5, 15], [2, 10], [3, 0], [3, 0]])
    np.testing.assert_allclose(
        TrajectoryCommand(points[:1], positions[:1]).targets_at(np.array([0, 500])), [[0, 10]] * 2
    )
    # with velocities on every point: cubic Hermite, like the driver's follower and the controller
    cubic = TrajectoryCommand(np.array([0, S]), np.array([[0.0], [1.0]]), np.zeros((2, 1)))
    np.testing.assert_allclose(cubic.targets_at(np.array([0, S // 4, S // 2, S])),
                               [[0.0], [0.15625], [0.5], [1.0]])


@pytest.mark.parametrize(
    "encoding, channels, to_rgb",
    [
        ("rgb8", 3, lambda p: p),
        ("bgr8", 3, lambda p: p[..., ::-1]),
        ("rgba8", 4, lambda p: p[..., :3]),
        ("bgra8", 4, lambda p: p[..., 2::-1]),
        ("mono8", 1, lambda p: np.repeat(p, 3, axis=2)),
    ],
)
def test_raw_encodings_become_rgb_honouring_row_padding(encoding, channels, to_rgb):
    height, width, step = 3, 5, 5 * channels + 3
    rows = np.random.default_rng(0).integers(0, 255, (height, step), dtype=np.uint8)
    msg = TS.deserialize_cdr(
        TS.serialize_cdr(
            TS.types["sensor_msgs/msg/Image"](
                header=header(0),
                height=height,
                width=width,
                encoding=encoding,
                is_bigendian=0,
                step=step,
                data=rows.reshape(-1),
            ),
            "sensor_msgs/msg/Image",
        ),
        "sensor_msgs/msg/Image",
    )
    rgb = message_to_rgb(msg)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(
        rgb, to_rgb(rows[:, : width * channels].reshape(height, width, channels))
    )
    if encoding == "rgb8":
        assert np.shares_memory(rgb, msg.data)  # zero-copy view of the message buffer


def test_unsupported_encoding_error_names_it():
    msg = stamped_image(0, encoding="16UC1")
    with pytest.raises(ConversionError, match="unsupported image encoding '16UC1'"):
        message_to_rgb(msg)


def test_commands_of_several_controllers_merge_into_one_action_per_sample():
    """A robot of several controllers (the humanoid): each group's trajectories fill its own
    columns of the action; the merged stream starts once every group has been commanded."""
    from librobot_training.conversion.messages import TrajectoryCommand
    from librobot_training.conversion.sync import Stream, command_actions, merge_group_commands

    def stream(topic, times, positions):
        items = [TrajectoryCommand(np.array([t]), np.array([p], dtype=np.float64)) for t, p in zip(times, positions)]
        times = np.array(times, dtype=np.int64)
        return Stream(topic, times, times, times, items)

    arm = stream("/arm", [100, 300], [[1.0, 2.0], [3.0, 4.0]])  # joints 0 and 2
    gripper = stream("/gripper", [200], [[0.5]])  # joint 1
    merged = merge_group_commands({"arm": arm, "gripper": gripper},
                                  {"arm": np.array([0, 2]), "gripper": np.array([1])}, dof=3)
    assert merged.time_ns.tolist() == [200, 300]  # from the gripper's first command on
    assert merged.topic == "/arm + /gripper"
    actions = command_actions(merged, np.array([0, 1]), np.array([250, 350]))
    np.testing.assert_allclose(actions, [[1.0, 0.5, 2.0], [3.0, 0.5, 4.0]])


def test_an_articulated_vehicle_converts_to_its_policy_view(tmp_path):
    """The wheel loader: state and action are [articulation, ground_speed, boom, bucket]. The
    speed is measured from the wheels' velocities and commanded through the drive node's wheel
    trajectories (velocities only), interpolated linearly as the drive node does; the
    hydraulics' trajectories fill the other columns."""
    from librobot_drivers.articulated import wheel_speeds

    spec = load_embodiment("wheel_loader")
    drive = spec.drive
    point_type = TS.types["trajectory_msgs/msg/JointTrajectoryPoint"]
    duration = TS.types["builtin_interfaces/msg/Duration"]
    trajectory = TS.types["trajectory_msgs/msg/JointTrajectory"]
    empty = np.zeros(0, dtype=np.float64)

    def speed(t):  # m/s, a ramp from standstill: the machine's speed and its command
        return 0.5 * (t - T0) / S

    def gamma(t):  # rad
        return 0.1 * (t - T0) / S

    messages = []
    for k in range(300):  # 3 s of joint states at 100 Hz
        t = T0 + k * 10_000_000
        wheels = wheel_speeds(drive.geometry, np.array([speed(t)]), np.array([gamma(t)]), np.array([0.1]))[0]
        positions = np.zeros(spec.dof)
        positions[spec.joint_names.index("articulation_joint")] = gamma(t)
        positions[spec.joint_names.index("boom_joint")] = 0.2
        positions[spec.joint_names.index("bucket_joint")] = -0.3
        velocities = np.zeros(spec.dof)
        velocities[[spec.joint_names.index(w) for w in drive.wheels]] = wheels
        messages.append(("/joint_states", "sensor_msgs/msg/JointState", t + 1_000_000,
                         TS.types["sensor_msgs/msg/JointState"](
                             header=header(t), name=spec.joint_names, position=positions,
                             velocity=velocities, effort=empty)))
    for k in range(30):  # the cab camera at 10 Hz
        t = T0 + k * 100_000_000
        messages.append(("/camera/cab/image_raw", "sensor_msgs/msg/Image", t + 5_000_000, stamped_image(t)))
    for k in range(15):  # 5 Hz plans, 1 s long, on the same ramps
        t = T0 + k * 200_000_000
        offsets = np.arange(5) * 250_000_000
        gammas = [gamma(t + o) for o in offsets]
        wheel_points = wheel_speeds(drive.geometry, np.array([speed(t + o) for o in offsets]),
                                    np.array(gammas), np.full(5, 0.1))
        hydraulics = [point_type(positions=np.array([g, 0.4, -0.1]), velocities=empty, accelerations=empty,
                                 effort=empty, time_from_start=duration(sec=0, nanosec=int(o)))
                      for g, o in zip(gammas, offsets)]
        wheels = [point_type(positions=empty, velocities=w, accelerations=empty, effort=empty,
                             time_from_start=duration(sec=0, nanosec=int(o)))
                  for w, o in zip(wheel_points, offsets)]
        messages.append(("/hydraulics_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory",
                         t + 2_000_000, trajectory(header=header(t), joint_names=[
                             "articulation_joint", "boom_joint", "bucket_joint"], points=hydraulics)))
        messages.append((drive.trajectory_topic, "trajectory_msgs/msg/JointTrajectory", t + 2_000_000,
                         trajectory(header=header(t), joint_names=list(drive.wheels), points=wheels)))
    bag = write_bag(tmp_path / "bag", messages)
    convert([bag], tmp_path / "out", ConversionOptions(action_source="command"), spec=spec)
    ep = h5(tmp_path / "out" / "episode_000000.hdf5")
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert dataset["joint_names"] == ["articulation_joint", "ground_speed", "boom_joint", "bucket_joint"]
    t = ep["timestamps/sample_ns"]
    assert len(t) >= 25
    qpos, action = ep["observations/qpos"], ep["action"]
    np.testing.assert_allclose(qpos[:, 0], gamma(t), atol=1e-5)
    np.testing.assert_allclose(qpos[:, 1], speed(t), atol=1e-5)  # from the wheels
    np.testing.assert_allclose(qpos[:, 2:], np.tile([0.2, -0.3], (len(t), 1)), atol=1e-6)
    assert np.isnan(ep["observations/qvel"][:, 1]).all() and np.isnan(ep["observations/effort"][:, 1]).all()
    np.testing.assert_allclose(action[:, 1], speed(t), atol=1e-5)  # the commanded speed at t
    np.testing.assert_allclose(action[:, 0], gamma(t), atol=1e-5)
    np.testing.assert_allclose(action[:, 2:], np.tile([0.4, -0.1], (len(t), 1)), atol=1e-6)

    # a wheel trajectory without velocities is refused, naming what it lacks
    bad = [m for m in messages if m[0] != drive.trajectory_topic]
    bad.append((drive.trajectory_topic, "trajectory_msgs/msg/JointTrajectory", T0 + 2_000_000,
                trajectory(header=header(T0), joint_names=list(drive.wheels), points=[point_type(
                    positions=np.zeros(4), velocities=empty, accelerations=empty, effort=empty,
                    time_from_start=duration(sec=0, nanosec=0))])))
    with pytest.raises(ConversionError, match="without one velocity per joint"):
        convert([write_bag(tmp_path / "bad", bad)], tmp_path / "bad_out", ConversionOptions(action_source="command"),
                spec=spec)
    assert outputs(tmp_path / "bad_out") == []
