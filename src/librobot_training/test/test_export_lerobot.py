"""LeRobot v3.0 export, read back with pyarrow and PyAV only (no LeRobot installed): every value of
the data files, the episode index, the tasks, the statistics, and the decoded video frames."""

import json
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from librobot_training.export_lerobot import main

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_episodes import make_synthetic_episodes  # noqa: E402

FPS = 10


@pytest.fixture(scope="module")
def episodes_dir(tmp_path_factory):
    """Three episodes of 14, 9 and 14 frames, two cameras, two distinct instructions."""
    path = tmp_path_factory.mktemp("hdf5")
    make_synthetic_episodes(path, n_episodes=3, length=14, state_dim=5, camera_names=("front", "wrist"),
                            image_shape=(48, 64), rate_hz=FPS)
    with h5py.File(path / "episode_0001.hdf5", "a") as f:  # a shorter episode
        for key in ("observations/qpos", "action", "observations/images/front", "observations/images/wrist"):
            data = f[key][:9]
            del f[key]
            f.create_dataset(key, data=data)
    with h5py.File(path / "episode_0002.hdf5", "a") as f:
        f.attrs["instruction"] = "put it back"
        wrist = f["observations/images/wrist"][()]
        f["observations/images/wrist"][...] = 255 - wrist  # the wrist camera sees something else
    return path


def _episodes(path):
    out = []
    for file in sorted(path.glob("*.hdf5")):
        with h5py.File(file) as f:
            out.append({"state": f["observations/qpos"][()], "action": f["action"][()],
                        "front": f["observations/images/front"][()], "wrist": f["observations/images/wrist"][()],
                        "instruction": f.attrs["instruction"]})
    return out


def _decode(path):
    """Frames (N, H, W, 3) RGB and their timestamps (N,) in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * Fraction(stream.time_base)))
    return np.stack(frames), np.array(times)


@pytest.mark.parametrize("vcodec, codec_name", [("libsvtav1", "av1"), ("h264", "h264")])
def test_export_reads_back_with_pyarrow_and_pyav(episodes_dir, tmp_path, capsys, vcodec, codec_name):
    out = tmp_path / "lerobot"
    scheduling = os.sched_getscheduler(0), os.sched_getparam(0)
    assert main(["--dataset", str(episodes_dir), "--output", str(out), "--repo-id", "me/so100_sim",
                 "--vcodec", vcodec, "--no-progress"]) == 0
    assert "exported 3 episodes, 37 frames, 2 tasks" in capsys.readouterr().out
    # the encoder (SVT-AV1 run as root) must not leave the process on real-time scheduling
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == scheduling
    source = _episodes(episodes_dir)
    lengths = [len(e["state"]) for e in source]

    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and info["robot_type"] == "synthetic"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 37, 2)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert info["splits"] == {"train": "0:3"}
    features = info["features"]
    assert features["observation.state"] == {"dtype": "float32", "shape": [5], "names": [f"joint_{i}" for i in range(5)]}
    assert features["action"]["names"] == features["observation.state"]["names"]
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[name]["shape"] == [1] and features[name]["names"] is None
    assert features["timestamp"]["dtype"] == "float32" and features["index"]["dtype"] == "int64"
    for cam in ("front", "wrist"):
        video = features[f"observation.images.{cam}"]
        assert video["dtype"] == "video" and video["shape"] == [48, 64, 3]
        assert video["names"] == ["height", "width", "channels"]
        assert {k: video["info"][k] for k in ("video.height", "video.width", "video.codec", "video.pix_fmt",
                                              "video.fps", "video.channels", "has_audio", "is_depth_map")} == {
            "video.height": 48, "video.width": 64, "video.codec": codec_name, "video.pix_fmt": "yuv420p",
            "video.fps": FPS, "video.channels": 3, "has_audio": False, "is_depth_map": False}

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.column_names == ["observation.state", "action", "timestamp", "frame_index", "episode_index",
                                 "index", "task_index"]
    state_type = data.schema.field("observation.state").type  # a fixed-length Sequence for Hugging Face datasets
    assert pa.types.is_fixed_size_list(state_type) and state_type.list_size == 5
    assert state_type.value_type == pa.float32()
    assert str(data.schema.field("timestamp").type) == "float" and str(data.schema.field("index").type) == "int64"
    assert data.num_rows == 37 == info["total_frames"]
    rows = data.to_pydict()
    np.testing.assert_array_equal(np.array(rows["observation.state"], np.float32),
                                  np.concatenate([e["state"] for e in source]))
    np.testing.assert_array_equal(np.array(rows["action"], np.float32), np.concatenate([e["action"] for e in source]))
    frame_index = np.concatenate([np.arange(n) for n in lengths])
    assert rows["frame_index"] == frame_index.tolist() and rows["index"] == list(range(37))
    np.testing.assert_array_equal(np.array(rows["timestamp"], np.float32), (frame_index / FPS).astype(np.float32))
    assert rows["episode_index"] == [0] * 14 + [1] * 9 + [2] * 14
    assert rows["task_index"] == [0] * 23 + [1] * 14

    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0, 1], "task": ["reach the target", "put it back"]}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]

    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in episodes] == [0, 1, 2] and [e["length"] for e in episodes] == lengths
    assert [e["tasks"] for e in episodes] == [["reach the target"], ["reach the target"], ["put it back"]]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 14), (14, 23), (23, 37)]
    assert all(e["data/chunk_index"] == e["data/file_index"] == e["meta/episodes/file_index"] == 0 for e in episodes)
    np.testing.assert_allclose(episodes[1]["stats/observation.state/mean"], source[1]["state"].mean(0), rtol=1e-6)
    assert episodes[2]["stats/action/count"] == [14]
    assert np.array(episodes[0]["stats/observation.images.front/mean"]).shape == (3, 1, 1)

    stats = json.loads((out / "meta/stats.json").read_text())
    state = np.concatenate([e["state"] for e in source]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["q50"], np.quantile(state, 0.5, axis=0), rtol=1e-6)
    assert stats["observation.state"]["count"] == [37] and stats["action"]["max"] == state_max(source)
    assert set(stats) == set(features)
    image = np.array(stats["observation.images.front"]["mean"])
    assert image.shape == (3, 1, 1) and 0 < image.min() and image.max() < 1
    np.testing.assert_allclose(image.ravel(), np.concatenate([e["front"] for e in source]).mean((0, 1, 2)) / 255,
                               atol=1e-6)  # every frame sampled: episodes are shorter than 100 frames

    for cam in ("front", "wrist"):
        key = f"observation.images.{cam}"
        frames, times = _decode(out / f"videos/{key}/chunk-000/file-000.mp4")
        assert len(frames) == 37
        np.testing.assert_allclose(times, np.arange(37) / FPS, atol=1e-6)
        for e, row in enumerate(episodes):
            assert (row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]) == (0, 0)
            selected = (times >= row[f"videos/{key}/from_timestamp"] - 1e-4) & (times < row[f"videos/{key}/to_timestamp"] - 1e-4)
            assert selected.sum() == lengths[e]
            error = np.abs(frames[selected].astype(int) - source[e][cam].astype(int)).mean()
            assert error < 4.0, (cam, e, error)  # lossy, but the same pictures in the same order
            wrong = np.abs(frames[selected][::-1].astype(int) - source[e][cam].astype(int)).mean()
            assert wrong > 2 * error

    card = (out / "README.md").read_text()
    assert "# me/so100_sim" in card and "data_files: data/*/*.parquet" in card
    assert [p.name for p in tmp_path.iterdir()] == ["lerobot"]  # no temporary directory left


def state_max(source):
    return np.concatenate([e["action"] for e in source]).astype(np.float64).max(0).tolist()


def test_dummy_source_exports_and_bad_inputs_are_one_line(tmp_path, capsys):
    out = tmp_path / "dummy"
    args = ["--dataset", "dummy", "--dataset-option", "episodes=2", "--dataset-option", "length=5",
            "--dataset-option", "cameras=[top]", "--dataset-option", "image_size=[32, 32]", "--no-progress"]
    assert main([*args, "--output", str(out)]) == 0
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_frames"] == 10 and list(info["features"])[2] == "observation.images.top"
    assert info["robot_type"] is None
    capsys.readouterr()

    def fails(argv, message):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err

    fails([*args, "--output", str(out)], f"output {out} already exists")
    fails(["--dataset", str(tmp_path / "nothing"), "--output", str(tmp_path / "x")], "does not exist")
    fails([*args, "--dataset-option", "rate_hz=7.5", "--output", str(tmp_path / "y")],
          "rate 7.5 Hz is not a whole number of frames per second")
    fails([*args, "--dataset-option", "image_size=[33, 32]", "--output", str(tmp_path / "z")],
          "must have an even height and width")
    fails([*args, "--dataset-option", "oops", "--output", str(tmp_path / "z")], "expected KEY=VALUE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dummy"]


def test_a_failure_half_way_leaves_nothing(episodes_dir, tmp_path, capsys):
    """The third episode's camera has another size: the export stops there and removes what it wrote."""
    data = tmp_path / "mixed"
    data.mkdir()
    for path in sorted(episodes_dir.glob("*.hdf5")):
        (data / path.name).write_bytes(path.read_bytes())
    with h5py.File(data / "episode_0002.hdf5", "a") as f:
        for cam in ("front", "wrist"):
            small = f[f"observations/images/{cam}"][:, :32, :32]
            del f[f"observations/images/{cam}"]
            f.create_dataset(f"observations/images/{cam}", data=small)
    assert main(["--dataset", str(data), "--output", str(tmp_path / "out"), "--vcodec", "h264", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "episode 2: observation.images.front images are (32, 32), but earlier episodes' are (48, 64)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]


def test_image_stats_from_histograms_equal_numpy_on_the_pixels():
    from librobot_training.export_lerobot import image_stats, pixel_histogram, vector_stats

    frames = np.random.default_rng(0).integers(0, 256, (5, 7, 9, 3), dtype=np.uint8)
    frames[..., 2] = frames[..., 2] // 3 + 50  # another range in one channel
    ours = image_stats(pixel_histogram(frames), len(frames))
    reference = vector_stats(frames.reshape(-1, 3) / 255.0)  # np.quantile, mean, std over every pixel
    for key, value in reference.items():
        if key != "count":
            assert ours[key].shape == (3, 1, 1)
            np.testing.assert_allclose(ours[key].ravel(), value, atol=1e-12, err_msg=key)
    assert ours["count"].tolist() == [5]


def test_full_files_roll_over_to_the_next_file_and_chunk(episodes_dir, tmp_path, monkeypatch):
    """With tiny size limits every episode starts a new data and video file; 2 files per chunk."""
    from librobot_training import export_lerobot

    monkeypatch.setattr(export_lerobot, "DATA_FILES_SIZE_IN_MB", 0)
    monkeypatch.setattr(export_lerobot, "VIDEO_FILES_SIZE_IN_MB", 0)
    monkeypatch.setattr(export_lerobot, "CHUNKS_SIZE", 2)
    out = tmp_path / "rolled"
    assert main(["--dataset", str(episodes_dir), "--output", str(out), "--vcodec", "h264", "--no-progress"]) == 0
    source = _episodes(episodes_dir)
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    places = [(0, 0), (0, 1), (1, 0)]
    assert [(e["data/chunk_index"], e["data/file_index"]) for e in episodes] == places
    key = "observation.images.wrist"
    assert [(e[f"videos/{key}/chunk_index"], e[f"videos/{key}/file_index"]) for e in episodes] == places
    for e, (chunk, file) in zip(episodes, places):
        data = pq.read_table(out / f"data/chunk-{chunk:03d}/file-{file:03d}.parquet").to_pydict()
        assert data["index"] == list(range(e["dataset_from_index"], e["dataset_to_index"]))
        np.testing.assert_array_equal(np.array(data["action"], np.float32), source[e["episode_index"]]["action"])
        assert e[f"videos/{key}/from_timestamp"] == 0.0 and e[f"videos/{key}/to_timestamp"] == e["length"] / FPS
        frames, _ = _decode(out / f"videos/{key}/chunk-{chunk:03d}/file-{file:03d}.mp4")
        assert len(frames) == e["length"]
        assert np.abs(frames.astype(int) - source[e["episode_index"]]["wrist"].astype(int)).mean() < 4.0
