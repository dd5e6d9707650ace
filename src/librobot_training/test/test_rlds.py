"""RLDS episodes from TFRecord shards without TensorFlow: CRCs, the Example wire format, the key
mapping, samples through EpisodeDataset, bad inputs, and a training run on an RLDS directory."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from librobot_training.datasets import EpisodeDataset, describe_dataset, open_source
from librobot_training.rlds import CorruptRecordError, crc32c, masked_crc32c, parse_example
from librobot_training.train import main as train_main

sys.path.insert(0, str(Path(__file__).parent))
from rlds_episodes import encode_example, make_rlds_dataset, tfrecord  # noqa: E402


def test_crc32c_matches_the_published_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    data = np.random.default_rng(0).integers(0, 256, 70_001, dtype=np.uint8).tobytes()  # the lane path
    register = 0xFFFFFFFF  # byte-at-a-time reference
    for byte in data:
        register ^= byte
        for _ in range(8):
            register = (register >> 1) ^ (0x82F63B78 if register & 1 else 0)
    assert crc32c(data) == register ^ 0xFFFFFFFF
    assert masked_crc32c(b"") == ((0 >> 15 | 0 << 17) + 0xA282EAD8) & 0xFFFFFFFF


def _example_class():
    """tf.train.Example built at runtime from a descriptor (the protobuf package's own encoder)."""
    f = descriptor_pb2.FileDescriptorProto(name="example_for_test.proto", package="t", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", T.TYPE_BYTES), ("FloatList", T.TYPE_FLOAT), ("Int64List", T.TYPE_INT64)):
        f.message_type.add(name=name).field.add(name="value", number=1, label=T.LABEL_REPEATED, type=kind)
    feature = f.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
        (("bytes_list", ".t.BytesList"), ("float_list", ".t.FloatList"), ("int64_list", ".t.Int64List")), 1
    ):
        feature.field.add(name=name, number=number, label=T.LABEL_OPTIONAL, type=T.TYPE_MESSAGE,
                          type_name=type_name, oneof_index=0)
    features = f.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=T.LABEL_OPTIONAL, type=T.TYPE_STRING)
    entry.field.add(name="value", number=2, label=T.LABEL_OPTIONAL, type=T.TYPE_MESSAGE, type_name=".t.Feature")
    features.field.add(name="feature", number=1, label=T.LABEL_REPEATED, type=T.TYPE_MESSAGE,
                       type_name=".t.Features.FeatureEntry")
    f.message_type.add(name="Example").field.add(name="features", number=1, label=T.LABEL_OPTIONAL,
                                                 type=T.TYPE_MESSAGE, type_name=".t.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Example"))


def test_parse_example_reads_what_protobuf_writes_and_both_list_encodings():
    Example = _example_class()
    message = Example()
    message.features.feature["a/img"].bytes_list.value.extend([b"\x00\x01jpeg", b"", b"png"])
    message.features.feature["a/state"].float_list.value.extend([0.5, -1.25, 3.0])
    message.features.feature["a/flags"].int64_list.value.extend([0, 1, -7, 2**40])
    message.features.feature["empty"].int64_list.value.extend([])
    parsed = parse_example(message.SerializeToString())
    assert [bytes(b) for b in parsed["a/img"]] == [b"\x00\x01jpeg", b"", b"png"]
    np.testing.assert_array_equal(parsed["a/state"], np.float32([0.5, -1.25, 3.0]))
    assert parsed["a/flags"].tolist() == [0, 1, -7, 2**40] and len(parsed["empty"]) == 0
    assert set(parse_example(message.SerializeToString(), keys=["a/state"])) == {"a/state"}
    for packed in (True, False):  # our test encoder: protobuf reads it back the same
        data = encode_example({"x": np.float32([1.5, 2.5]), "n": np.int64([3, -4]), "s": [b"hi"]}, packed)
        back = Example.FromString(data)
        assert list(back.features.feature["x"].float_list.value) == [1.5, 2.5]
        assert list(back.features.feature["n"].int64_list.value) == [3, -4]
        ours = parse_example(data)
        assert ours["x"].tolist() == [1.5, 2.5] and ours["n"].tolist() == [3, -4] and bytes(ours["s"][0]) == b"hi"


@pytest.fixture(scope="module")
def rlds(tmp_path_factory):
    return make_rlds_dataset(tmp_path_factory.mktemp("rlds"), n_episodes=3, length=12, state_dim=4)


def test_source_maps_the_common_keys_and_samples_equal_what_was_written(rlds):
    directory, episodes = rlds
    info = describe_dataset(f"rlds:{directory}", {"rate_hz": 5})
    assert info.camera_names == ["front", "wrist"] and (info.state_dim, info.action_dim) == (4, 4)
    assert info.rate_hz == 5.0 and info.joint_names == ["state_0", "state_1", "state_2", "state_3"]
    # the dataset's name directory picks its (only) version; a history window over two cameras
    dataset = EpisodeDataset(open_source(f"rlds:{directory.parent}", {"rate_hz": 5}), chunk_size=5, history=2)
    assert len(dataset) == 36 and [e.length for e in dataset.episodes] == [12, 12, 12]
    sample = dataset[12 + 3]  # second episode read (shard 0's second record), frame 3
    ep = episodes[1]
    np.testing.assert_array_equal(sample["state"], ep["state"][2:4])
    np.testing.assert_array_equal(sample["actions"], ep["action"][3:8])
    np.testing.assert_array_equal(sample["images"][:, 0], ep["images/image"][2:4].transpose(0, 3, 1, 2))  # PNG
    np.testing.assert_array_equal(sample["images"][:, 1], ep["images/wrist_image"][2:4].transpose(0, 3, 1, 2))
    assert sample["instruction"] == "reach the target" and not sample["observation_is_pad"].any()
    end = dataset[35]
    np.testing.assert_array_equal(end["action_is_pad"], [False, True, True, True, True])
    stats = dataset.compute_norm_stats()
    np.testing.assert_allclose(stats["actions"].max, np.concatenate([e["action"] for e in episodes]).max(0))


def test_user_mapping_unpacked_lists_and_jpeg(tmp_path):
    directory, episodes = make_rlds_dataset(tmp_path, n_episodes=2, length=6, state_dim=3, packed=False,
                                            fmt="jpeg", n_shards=1)
    options = {"rate_hz": 10, "cameras": {"steps/observation/wrist_image": "hand"},
               "state": ["steps/observation/state", "steps/reward"], "action": "steps/action",
               "instruction": "", "joint_names": ["a", "b", "c", "reward"]}
    dataset = EpisodeDataset(open_source(f"rlds:{directory}", options), chunk_size=2, cache_in_memory=True)
    assert dataset.info.camera_names == ["hand"] and dataset.info.state_dim == 4
    sample = dataset[6 + 2]
    np.testing.assert_array_equal(sample["state"], np.append(episodes[1]["state"][2], 0.0))
    assert sample["instruction"] == ""
    error = np.abs(sample["images"][0].astype(int) - episodes[1]["images/wrist_image"][2].transpose(2, 0, 1)).mean()
    assert error < 6  # JPEG is lossy


def test_a_corrupt_record_is_reported_with_its_file_and_offset(tmp_path):
    directory, _ = make_rlds_dataset(tmp_path, n_episodes=2, length=4, n_shards=1)
    shard = next(directory.glob("*.tfrecord-*"))
    data = bytearray(shard.read_bytes())
    second = 12 + int.from_bytes(data[:8], "little") + 4  # the second record's offset
    data[second + 40] ^= 0xFF  # a byte inside its data
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match=f"{shard}: bad data CRC in the record at offset {second}"):
        len(open_source(f"rlds:{directory}", {"rate_hz": 10}))
    shard.write_bytes(bytes(data[: second + 20]))  # cut inside the second record
    with pytest.raises(CorruptRecordError, match=f"file ends inside the data of the record at offset {second}"):
        len(open_source(f"rlds:{directory}", {"rate_hz": 10}))


def test_bad_options_and_data_name_the_bad_value(tmp_path, rlds):
    directory, _ = rlds
    with pytest.raises(ValueError, match="rate_hz = None: expected the control rate"):
        open_source(f"rlds:{directory}")
    with pytest.raises(ValueError, match=r"camera key 'steps/observation/top' is not a image feature; its image "
                                         r"features are \['steps/observation/image', 'steps/observation/wrist_image'\]"):
        open_source(f"rlds:{directory}", {"rate_hz": 10, "cameras": {"steps/observation/top": "top"}})
    with pytest.raises(ValueError, match=r"action key 'steps/actions' is not a tensor feature"):
        open_source(f"rlds:{directory}", {"rate_hz": 10, "action": ["steps/actions"]})
    with pytest.raises(ValueError, match=r"unknown keys \['camera'\]"):
        open_source(f"rlds:{directory}", {"rate_hz": 10, "camera": {}})
    with pytest.raises(ValueError, match=r"cameras \['top'\] are not in the dataset"):
        EpisodeDataset(open_source(f"rlds:{directory}", {"rate_hz": 10}), chunk_size=2, camera_names=["top"])
    wrong = open_source(f"rlds:{directory}", {"rate_hz": 10, "shapes": {"steps/observation/state": [5]}})
    with pytest.raises(ValueError, match=r"steps/observation/state holds 48 values, expected 12 steps x 5"):
        EpisodeDataset(wrong, chunk_size=2)[0]
    small = open_source(f"rlds:{directory}", {"rate_hz": 10, "shapes": {"steps/observation/image": [16, 16, 3]}})
    with pytest.raises(ValueError, match=r"steps/observation/image step 0 decodes to \(32, 32, 3\), expected \(16, 16, 3\)"):
        EpisodeDataset(small, chunk_size=2)[0]
    missing = tmp_path / "missing_key"
    directory2, _ = make_rlds_dataset(missing, n_episodes=1, length=4, n_shards=1)
    features = json.loads((directory2 / "features.json").read_text())
    steps = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    steps["observation"]["featuresDict"]["features"]["depth"] = steps["observation"]["featuresDict"]["features"]["image"]
    (directory2 / "features.json").write_text(json.dumps(features))
    source = open_source(f"rlds:{directory2}", {"rate_hz": 10, "cameras": {"steps/observation/depth": "depth"}})
    with pytest.raises(ValueError, match=r"record at offset 0: the episode lacks \['steps/observation/depth'\]"):
        EpisodeDataset(source, chunk_size=2)[0]
    garbage = tmp_path / "garbage"
    directory3, _ = make_rlds_dataset(garbage, n_episodes=1, length=4, n_shards=1)
    next(directory3.glob("*.tfrecord-*")).write_bytes(tfrecord(b"\x0a\x05abc"))  # a field longer than its message
    with pytest.raises(ValueError, match=r"record at offset 0: not a tf.train.Example \(field 1 runs past the end"):
        len(open_source(f"rlds:{directory3}", {"rate_hz": 10}))
    with pytest.raises(FileNotFoundError, match="has no features.json"):
        open_source(f"rlds:{tmp_path}", {"rate_hz": 10})


def test_training_runs_on_an_rlds_directory(tmp_path, rlds):
    directory, _ = rlds
    out = tmp_path / "run"
    args = [f"dataset=rlds:{directory}", "dataset_options.rate_hz=5", f"output_dir={out}", "framework=act",
            "model.image_size=[32,32]", "model.vision_channels=[16,32]", "model.dim_model=32", "model.n_heads=4",
            "model.dim_feedforward=64", "model.n_encoder_layers=1", "model.n_vae_encoder_layers=1",
            "model.chunk_size=4", "train.steps=3", "train.batch_size=4", "train.log_every=1",
            "train.eval.episodes=1", "train.eval.every=3", "train.eval.batches=1"]
    assert train_main(args) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    from librobot_models.policy import Policy

    policy = Policy.from_checkpoint(out)
    assert policy.config.camera_names == ("front", "wrist") and policy.config.state_dim == 4
    assert train_main([*args[:1], f"output_dir={tmp_path / 'bad'}"]) == 2  # no rate_hz: one clear line


def test_a_pickled_source_reopens_its_shards_and_gives_the_same_samples(rlds):
    import pickle

    directory, _ = rlds
    dataset = EpisodeDataset(open_source(f"rlds:{directory}", {"rate_hz": 10, "verify_crc": False}), chunk_size=3)
    first = dataset[20]  # opens a shard and keeps the parsed record
    clone = pickle.loads(pickle.dumps(dataset))  # as a spawned DataLoader worker gets it
    assert clone.source._handles == {} and len(clone.source._parsed) == 0
    for key in ("images", "state", "actions"):
        np.testing.assert_array_equal(clone[20][key], first[key])
    dataset.close()
