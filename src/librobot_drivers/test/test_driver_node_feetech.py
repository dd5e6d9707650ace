"""The driver node on the real SO-100's driver (So100Feetech) over the emulated bus, on real
rclpy: trajectories reach the servos, health goes to /diagnostics, an unplugged servo stops the
joint states and the node recovers holding the measured pose."""

import sys
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

sys.path.insert(0, str(Path(__file__).parent))
from feetech_arm import PhysicalArm, TICKS_PER_RAD, start_arm, write_calibration  # noqa: E402

from librobot_drivers import messages  # noqa: E402
from librobot_drivers.driver_node import DriverNode  # noqa: E402
from librobot_drivers.embodiment import load_embodiment  # noqa: E402
from librobot_drivers.feetech import protocol as p  # noqa: E402

SPEC = load_embodiment("so100")


def test_driver_node_drives_the_servos_reports_health_and_survives_an_unplugged_servo(ros_context, spin, tmp_path):
    with start_arm() as emu:
        calibration = write_calibration(tmp_path / "follower.json", SPEC)
        params = {"robot": "so100_feetech", "port": emu.port, "calibration": calibration,
                  "on_shutdown": "hold", "max_relative_target": 0.5}
        driver = DriverNode(context=ros_context,
                            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        client = Node("client", context=ros_context)
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(driver)
        executor.add_node(client)
        states, diagnostics = [], []
        client.create_subscription(JointState, "/joint_states", states.append, 50)
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        command = client.create_publisher(JointTrajectory, SPEC.command_topic, 10)
        clear = client.create_client(Trigger, "/driver/clear_faults")
        arm = PhysicalArm(emu)
        try:
            assert spin(executor, lambda: len(states) >= 5 and diagnostics, timeout_s=20.0)
            assert list(states[-1].name) == SPEC.joint_names
            names = {s.name: s for s in diagnostics[-1].status}
            assert names["so100 servo gripper_joint"].level == bytes([0])
            assert dict((kv.key, kv.value) for kv in names["so100 servo gripper_joint"].values)["voltage V"] == "7.4"

            target = np.array([0.3, -0.2, 0.4, 0.0, 0.0, 0.5])
            assert spin(executor, lambda: command.get_subscription_count() > 0)
            command.publish(messages.trajectory_msg(SPEC.joint_names, 0, np.array([0.6]), target[None]))
            reached = lambda: np.allclose(arm.joints(), target, atol=2 / TICKS_PER_RAD)
            assert spin(executor, reached, timeout_s=10.0), arm.joints()
            measured = lambda: np.allclose(messages.joint_positions(SPEC, states[-1]), target, atol=0.005)
            assert spin(executor, measured, timeout_s=2.0)

            emu.fault(2, silent=True)  # unplugged: no more joint states, the others hold
            spin(executor, lambda: False, timeout_s=0.5)
            count = len(states)
            spin(executor, lambda: False, timeout_s=1.5)
            assert len(states) == count
            assert np.allclose(arm.joints()[[0, 2]], target[[0, 2]], atol=2 / TICKS_PER_RAD)
            emu.fault(2, silent=False)  # plugged back: states again, holding where the arm is
            assert spin(executor, lambda: len(states) > count + 5, timeout_s=5.0)
            assert np.allclose(arm.goal_joints(), target, atol=2 / TICKS_PER_RAD)

            emu.fault(5, error=p.OVERLOAD)  # a fault: ERROR on /diagnostics, motion refused
            diagnostics.clear()
            faulted = lambda: any(s.name == "so100 servo wrist_roll_joint" and s.level == bytes([2])
                                  for d in diagnostics for s in d.status)
            assert spin(executor, faulted, timeout_s=5.0)
            command.publish(messages.trajectory_msg(SPEC.joint_names, 0, np.array([0.3]), np.zeros((1, 6))))
            spin(executor, lambda: False, timeout_s=1.0)
            assert np.allclose(arm.goal_joints(), target, atol=2 / TICKS_PER_RAD)  # not moved
            assert clear.wait_for_service(timeout_sec=5.0)
            future = clear.call_async(Trigger.Request())
            assert spin(executor, future.done)
            assert not future.result().success and "overload" in future.result().message
            emu.fault(5, error=0)
            future = clear.call_async(Trigger.Request())
            assert spin(executor, future.done)
            assert future.result().success
        finally:
            executor.shutdown()
            driver.destroy_node()
            client.destroy_node()
        assert emu.state(1)["registers"]["Torque_Enable"] == 1  # on_shutdown hold
