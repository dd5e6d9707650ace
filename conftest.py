"""Workspace-wide pytest setup: every ROS process a test starts stays on loopback, in its own domain."""

import os
import random
import signal

# Before anything imports rclpy or mujoco: DDS discovery on loopback only (Fast DDS multicasts out
# of every interface otherwise), a ROS domain of this test run's own, headless rendering.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "LIBROBOT_TEST_DOMAIN_ID" not in os.environ:
    # 1..101 keeps every participant's ports inside the range Fast DDS computes for Linux.
    os.environ["LIBROBOT_TEST_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
os.environ["ROS_DOMAIN_ID"] = os.environ["LIBROBOT_TEST_DOMAIN_ID"]
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")

# A job a non-interactive shell starts in the background (`.ci/run &`) has SIGINT ignored, and an
# ignored signal stays ignored in every child: the `ros2 launch` a test stops with Ctrl-C would
# sit through it. A handled signal is reset to the default in a child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    return (
        f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}"
    )


import pytest  # noqa: E402


@pytest.fixture
def ros_context():
    """A fresh, initialised rclpy context, shut down after the test (rclpy imported lazily)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


def spin_until(executor, predicate, timeout_s: float = 10.0) -> bool:
    """Spin `executor` until `predicate()` is true or `timeout_s` passes; returns predicate()."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


@pytest.fixture
def spin():
    return spin_until


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised SO-100 ACT checkpoint (10-step chunks, front camera, 10 Hz):
    small enough to load and run in milliseconds, real in every other respect."""
    return _tiny_act(tmp_path_factory, "so100", "front")


@pytest.fixture(scope="session")
def tiny_humanoid_checkpoint(tmp_path_factory):
    """A randomly initialised humanoid ACT checkpoint: the 19 commanded joints (waist, arms,
    grippers) as state and action, 10-step chunks, the head camera, 10 Hz."""
    return _tiny_act(tmp_path_factory, "humanoid", "head")


@pytest.fixture(scope="session")
def tiny_wheel_loader_checkpoint(tmp_path_factory):
    """A randomly initialised wheel loader ACT checkpoint: articulation, ground speed, boom and
    bucket as state and action, 10-step chunks, the cab camera, 10 Hz."""
    return _tiny_act(tmp_path_factory, "wheel_loader", "cab")


def _tiny_act(tmp_path_factory, robot: str, camera: str):
    import numpy as np
    import torch

    from librobot_drivers.embodiment import load_embodiment
    from librobot_models.checkpoint import save_checkpoint
    from librobot_models.frameworks.act import ACTConfig
    from librobot_models.normalization import NormStats

    spec = load_embodiment(robot).commanded()
    config = ACTConfig(
        state_dim=spec.dof, action_dim=spec.dof, chunk_size=10, camera_names=(camera,), image_size=(32, 32),
        vision_channels=(8, 16), dim_model=32, n_heads=4, dim_feedforward=64,
        n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=4,
    )
    rng = np.random.default_rng(0)
    # Its targets stay within about 0.2 of 0: every robot's safety layer accepts a first target
    # from the start pose (a first target more than max_step 0.5 from it is refused, and an
    # unseeded random model got there now and then).
    stats = {"state": NormStats.from_array(rng.uniform(-0.5, 0.5, size=(100, spec.dof))),
             "actions": NormStats.from_array(rng.uniform(-0.1, 0.1, size=(100, spec.dof)))}
    path = tmp_path_factory.mktemp("checkpoints") / f"act_tiny_{robot}"
    metadata = {"embodiment": robot, "joint_names": spec.joint_names,
                "camera_names": [camera], "rate_hz": 10.0}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = config.create()
    save_checkpoint(path, model, config, stats, metadata)
    return path


@pytest.fixture(scope="session")
def tiny_octo_checkpoint(tmp_path_factory):
    """A randomly initialised SO-100 Octo checkpoint with a 2-step history window (6-step chunks,
    front camera, 10 Hz): a model that needs every control step's observation."""
    import numpy as np

    from librobot_drivers.embodiment import load_embodiment
    from librobot_models.checkpoint import save_checkpoint
    from librobot_models.normalization import NormStats
    from librobot_models.registry import get_vla_config

    spec = load_embodiment("so100")
    config = get_vla_config(
        "octo", state_dim=6, action_dim=6, chunk_size=6, camera_names=("front",), image_size=(32, 32),
        vision_channels=(8, 16), dim=32, n_layers=1, history_window=2,
    )
    stats = NormStats.from_array(np.random.default_rng(0).uniform(-0.5, 0.5, size=(50, 6)))
    path = tmp_path_factory.mktemp("checkpoints") / "octo_tiny"
    metadata = {"embodiment": "so100", "joint_names": spec.joint_names,
                "camera_names": ["front"], "rate_hz": 10.0}
    save_checkpoint(path, config.create(), config, {"state": stats, "actions": stats}, metadata)
    return path
