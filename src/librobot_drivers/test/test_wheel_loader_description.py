"""The wheel loader's spec, description and controllers agree: joints, the velocity-commanded
wheels, the drive's geometry, the policy's view (articulation, ground speed, boom, bucket)."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import xacro
import yaml

from librobot_drivers import messages
from librobot_drivers.articulated import ground_speed
from librobot_drivers.embodiment import embodiment_from_dict, load_embodiment
from librobot_drivers.kinematics import UrdfKinematics
from librobot_drivers.resources import share_path

URDF_XACRO = share_path("description", "urdf", "wheel_loader.urdf.xacro")
CONTROLLERS = share_path("config", "wheel_loader_controllers.yaml")
SPEC_YAML = share_path("config", "embodiments", "wheel_loader.yaml")
SPEC = load_embodiment("wheel_loader")
WHEELS = ["front_left_wheel_joint", "front_right_wheel_joint", "rear_left_wheel_joint", "rear_right_wheel_joint"]


def expand(use_mock_hardware: bool) -> ET.Element:
    mappings = {"use_mock_hardware": str(use_mock_hardware).lower()}
    return ET.fromstring(xacro.process_file(str(URDF_XACRO), mappings=mappings).toxml())


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return expand(use_mock_hardware=True)


def params(element: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.text for p in element.findall("param")}


def origin(urdf, joint_name):
    joint = next(j for j in urdf.findall("joint") if j.get("name") == joint_name)
    return np.array([float(v) for v in joint.find("origin").get("xyz").split()])


# -- the policy's view -----------------------------------------------------------------------------
def test_the_policy_sees_articulation_ground_speed_boom_and_bucket():
    view = SPEC.commanded()
    assert view.joint_names == ["articulation_joint", "ground_speed", "boom_joint", "bucket_joint"]
    assert view.commanded() is view
    assert [(g.name, g.joints, g.command_topic) for g in view.groups] == [
        ("hydraulics", ("articulation_joint", "boom_joint", "bucket_joint"), "/hydraulics_controller/joint_trajectory"),
        ("wheels", ("ground_speed",), "/drive/joint_trajectory")]
    speed = view.joints[1]
    assert (speed.lower, speed.upper, speed.velocity) == (-3.0, 3.0, 1.5)  # m/s, m/s^2
    assert np.isinf(SPEC.lower_limits[1:5]).all() and SPEC.joints[1].continuous


def test_the_state_has_the_measured_ground_speed_and_a_hold_stops_the_wheels():
    view = SPEC.commanded()
    names = SPEC.joint_names[::-1]  # any order
    position = [0.4, -0.2, 11.0, 12.0, 13.0, 14.0, 0.3][::-1]
    velocity = np.array([0.0, 2.0, 2.0, 2.5, 2.5, 0.0, 0.0])[::-1]
    state = view.state_values(names, position, velocity)
    assert state.tolist() == pytest.approx([0.4, 2.5 * 0.78, 14.0, 0.3])
    assert view.at_rest(state).tolist() == pytest.approx([0.4, 0.0, 14.0, 0.3])
    with pytest.raises(ValueError, match="velocities; the wheels' velocities give the ground_speed"):
        view.state_values(names, position, [])
    assert SPEC.state_values(names, position).tolist() == pytest.approx(position[::-1])  # the full spec: positions


def test_a_plan_becomes_one_trajectory_per_controller_with_wheel_speeds_for_the_speed():
    view = SPEC.commanded()
    plan = np.array([[0.0, 1.0, -0.5, 0.2], [0.1, 2.0, -0.4, 0.2], [0.2, 2.0, -0.3, 0.2]])
    rates = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    (hydraulics, implements), (wheels, drive) = messages.group_trajectory_msgs(view, 5, np.array([0.1, 0.2, 0.3]), plan, rates)
    assert (hydraulics.name, wheels.name) == ("hydraulics", "wheels")
    assert implements.header.stamp == drive.header.stamp
    assert [list(p.positions) for p in implements.points] == [[0.0, -0.5, 0.2], [0.1, -0.4, 0.2], [0.2, -0.3, 0.2]]
    assert list(drive.joint_names) == WHEELS
    assert all(len(p.positions) == 0 for p in drive.points)
    speeds = np.array([p.velocities for p in drive.points])
    assert ground_speed(SPEC.drive.geometry, speeds) == pytest.approx([1.0, 2.0, 2.0])
    # articulating at +1 rad/s while rolling: the front frame yaws left, so its right wheel outruns its left
    assert speeds[0, 1] > speeds[0, 0]


def test_a_plan_may_start_at_a_speed_the_machine_has_not_reached_but_not_at_another_angle():
    """The safety layer's first-target check: positions within max_step of the measurement, the
    speed channel anywhere in its range (reached at its acceleration limit, not jumped to)."""
    from librobot_models.safety import SafetyFilter, SafetyLimits, UnsafeCommand

    view = SPEC.commanded()
    steps = view.first_target_steps(0.5)
    assert steps[view.speed_index] == SPEC.drive.speed.upper - SPEC.drive.speed.lower
    assert np.all(np.delete(steps, view.speed_index) == 0.5)
    assert np.all(load_embodiment("so100").first_target_steps(0.5) == 0.5)
    safety = SafetyFilter(SafetyLimits.for_robot(view, 0.5), ramp_in_s=0.0)
    times = 0.1 * np.arange(1, 11)
    start = np.zeros((10, view.dof))
    start[:, view.speed_index] = 2.0  # drive off at 2 m/s from standstill
    speeds = safety.filter(times, start, np.zeros(view.dof), 0.0)[:, view.speed_index]
    np.testing.assert_allclose(speeds, np.minimum(2.0, SPEC.drive.speed.velocity * times))
    turn = np.zeros((10, view.dof))
    turn[:, view.joint_names.index("articulation_joint")] = 0.6
    with pytest.raises(UnsafeCommand, match="max_step 0.5"):
        safety.filter(times, turn, np.zeros(view.dof), 0.0)


def test_a_velocity_group_needs_a_drive_and_a_drive_needs_its_wheels():
    data = yaml.safe_load(SPEC_YAML.read_text())
    with pytest.raises(ValueError, match="velocity groups \\['wheels'\\]; expected exactly the drive's wheels \\[\\]"):
        embodiment_from_dict({k: v for k, v in data.items() if k != "drive"})
    broken = dict(data, drive=dict(data["drive"], wheels={"front_left": "front_left_wheel_joint"}))
    with pytest.raises(ValueError, match="expected one joint for each of"):
        embodiment_from_dict(broken)
    broken = dict(data, drive=dict(data["drive"], command_timeout_s=2.0))
    with pytest.raises(ValueError, match="command_timeout_s 2.0"):
        embodiment_from_dict(broken)
    broken = dict(data, groups=[dict(g, interface="torque") for g in data["groups"]])
    with pytest.raises(ValueError, match="interface 'torque'"):
        embodiment_from_dict(broken)


# -- description ------------------------------------------------------------------------------------
def test_urdf_joints_and_limits_match_the_spec(urdf):
    moving = [j for j in urdf.findall("joint") if j.get("type") != "fixed"]
    assert [j.get("name") for j in moving] == SPEC.joint_names
    for joint, expected in zip(moving, SPEC.joints):
        limit = joint.find("limit")
        assert [float(limit.get(k)) for k in ("velocity", "effort")] == [expected.velocity, expected.effort]
        if expected.continuous:
            assert joint.get("type") == "continuous" and limit.get("lower") is None
        else:
            assert joint.get("type") == "revolute"
            assert [float(limit.get(k)) for k in ("lower", "upper")] == [expected.lower, expected.upper]
    links = {link.get("name") for link in urdf.findall("link")}
    assert {"base_link", "cab_camera_link", "cab_camera_optical_frame", *SPEC.end_effector_links} <= links


def test_the_wheels_sit_where_the_drive_geometry_says(urdf):
    drive = SPEC.drive
    geometry = drive.geometry
    hinge = origin(urdf, "articulation_joint")
    assert hinge.tolist() == pytest.approx([geometry.rear_axle, 0, 0])  # base_link: the rear axle centre
    assert origin(urdf, "rear_left_wheel_joint").tolist() == pytest.approx([0, geometry.track / 2, 0])
    assert origin(urdf, "rear_right_wheel_joint").tolist() == pytest.approx([0, -geometry.track / 2, 0])
    assert origin(urdf, "front_left_wheel_joint").tolist() == pytest.approx([geometry.front_axle, geometry.track / 2, 0])
    radii = {float(c.get("radius")) for link in urdf.findall("link") if "wheel" in link.get("name")
             for c in link.iter("cylinder")}
    assert radii == {geometry.wheel_radius}
    for joint in urdf.findall("joint"):
        if joint.get("name") in WHEELS:
            assert joint.find("axis").get("xyz") == "0 1 0"  # + rolls forward


def test_the_bucket_lies_flat_on_the_ground_with_the_arm_down(urdf):
    kinematics = UrdfKinematics(ET.tostring(urdf, encoding="unicode"))
    names = ["boom_joint", "bucket_joint"]
    lowest = SPEC.lower_limits[SPEC.joint_names.index("boom_joint")]
    tip = kinematics.link_positions("bucket_tip_link", names, np.array([[lowest, 0.0], [0.5, 0.0]]))
    axle_height = SPEC.drive.geometry.wheel_radius
    assert tip[0, 2] + axle_height == pytest.approx(0.0, abs=0.05)  # the cutting edge at the ground
    assert tip[0, 0] > SPEC.drive.geometry.rear_axle + SPEC.drive.geometry.front_axle + SPEC.drive.geometry.wheel_radius
    assert tip[1, 2] + axle_height > 2.5  # raised


@pytest.mark.parametrize("use_mock_hardware, plugin", [
    (True, "mock_components/GenericSystem"), (False, "topic_based_ros2_control/TopicBasedSystem")])
def test_ros2_control_commands_the_wheels_by_velocity_and_the_rest_by_position(use_mock_hardware, plugin):
    (block,) = expand(use_mock_hardware).findall("ros2_control")
    assert block.find("hardware/plugin").text == plugin
    if not use_mock_hardware:  # a cycle without a position change must still send the wheel speeds
        assert params(block.find("hardware"))["trigger_joint_command_threshold"] == "-1.0"
    joints = block.findall("joint")
    assert [j.get("name") for j in joints] == SPEC.joint_names
    for joint, expected in zip(joints, SPEC.joints):
        (command,) = joint.findall("command_interface")
        if expected.name in WHEELS:
            assert command.get("name") == "velocity"
            assert params(command) == {"min": str(-expected.velocity), "max": str(expected.velocity)}
        else:
            assert command.get("name") == "position"
            assert params(command) == {"min": str(expected.lower), "max": str(expected.upper)}
        assert [s.get("name") for s in joint.findall("state_interface")] == ["position", "velocity"]


def test_a_trajectory_controller_for_the_hydraulics_and_a_velocity_controller_for_the_wheels():
    config = yaml.safe_load(CONTROLLERS.read_text())
    manager = config["controller_manager"]["ros__parameters"]
    controllers = [name for name in manager if isinstance(manager[name], dict) and name != "joint_state_broadcaster"]
    assert controllers == [g.controller for g in SPEC.groups]
    for group in SPEC.groups:
        assert manager[group.controller]["type"] == group.controller_type
        assert config[group.controller]["ros__parameters"]["joints"] == list(group.joints)
    assert SPEC.group("wheels").controller_type == "forward_command_controller/ForwardCommandController"
    assert config["hydraulics_controller"]["ros__parameters"]["command_interfaces"] == ["position"]
    assert config["wheels_controller"]["ros__parameters"]["interface_name"] == "velocity"


def test_topic_based_hardware_commands_are_split_by_interface():
    """The topic-based interface names every joint but lists positions only for the position-
    commanded joints and velocities only for the velocity-commanded ones, each in name order."""
    from sensor_msgs.msg import JointState

    msg = JointState(name=SPEC.joint_names, position=[0.1, -0.2, 0.3], velocity=[1.0, 2.0, 3.0, 4.0])
    positions, velocities = messages.hardware_commands(SPEC, msg)
    assert np.allclose(positions[[0, 5, 6]], [0.1, -0.2, 0.3]) and np.isnan(positions[1:5]).all()
    assert velocities.tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="3 positions and 2 velocities"):
        messages.hardware_commands(SPEC, JointState(name=SPEC.joint_names, position=[0.1, -0.2, 0.3], velocity=[1.0, 2.0]))
    so100 = load_embodiment("so100")
    positions, velocities = messages.hardware_commands(so100, JointState(name=so100.joint_names, position=[0.5] * 6))
    assert positions.tolist() == [0.5] * 6 and velocities.size == 0
