"""Workspace-wide pytest setup: every ROS process a test starts stays on loopback, in its own domain."""

import os
import random

# Before anything imports rclpy or mujoco: DDS discovery on loopback only (Fast DDS multicasts out
# of every interface otherwise), a ROS domain of this test run's own, headless rendering.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if "LIBROBOT_TEST_DOMAIN_ID" not in os.environ:
    # 1..101 keeps every participant's ports inside the range Fast DDS computes for Linux.
    os.environ["LIBROBOT_TEST_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
os.environ["ROS_DOMAIN_ID"] = os.environ["LIBROBOT_TEST_DOMAIN_ID"]
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")


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
