"""The humanoid description agrees with itself: URDF, ros2_control, controllers, spec and MuJoCo."""

import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import xacro
import yaml

from librobot_drivers.embodiment import embodiment_from_dict, load_embodiment
from librobot_drivers.kinematics import UrdfKinematics
from librobot_drivers.resources import share_path
from librobot_drivers.sim.humanoid_sim import HumanoidSim

URDF_XACRO = share_path("description", "urdf", "humanoid.urdf.xacro")
CONTROLLERS = share_path("config", "humanoid_controllers.yaml")


@pytest.fixture(scope="module")
def spec():
    return load_embodiment("humanoid")


def expand(use_mock_hardware: bool) -> ET.Element:
    mappings = {"use_mock_hardware": str(use_mock_hardware).lower()}
    return ET.fromstring(xacro.process_file(str(URDF_XACRO), mappings=mappings).toxml())


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return expand(use_mock_hardware=True)


@pytest.fixture(scope="module")
def sim(spec):
    return HumanoidSim(spec, render_cameras=())


def params(element: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.text for p in element.findall("param")}


# -- the spec: a G1-like body in groups ----------------------------------------------------------
def test_the_spec_has_the_g1_joints_in_groups_and_the_policy_commands_the_upper_body(spec):
    assert spec.dof == 31  # 29 of the G1 and a gripper per hand
    sizes = {g.name: len(g.joints) for g in spec.groups}
    assert sizes == {"legs": 12, "waist": 3, "left_arm": 7, "left_gripper": 1, "right_arm": 7, "right_gripper": 1}
    assert [g.name for g in spec.groups if not g.commanded] == ["legs"]
    policy = spec.commanded()
    assert policy.dof == 19 and not any("hip" in n or "knee" in n or "ankle" in n for n in policy.joint_names)
    assert policy.joint_names == [n for n in spec.joint_names if n in policy.joint_names]  # spec order
    assert [g.command_topic for g in policy.groups] == [
        "/waist_controller/joint_trajectory", "/left_arm_controller/joint_trajectory",
        "/left_gripper_controller/joint_trajectory", "/right_arm_controller/joint_trajectory",
        "/right_gripper_controller/joint_trajectory"]
    with pytest.raises(ValueError, match="5 commanded groups"):
        policy.command_topic  # noqa: B018 - one topic only exists for a one-group robot


def test_groups_that_miss_or_repeat_a_joint_or_command_nothing_are_refused():
    data = yaml.safe_load(share_path("config", "embodiments", "humanoid.yaml").read_text())
    broken = dict(data, groups=data["groups"][1:])  # the legs in no group
    with pytest.raises(ValueError, match="every joint .* exactly once"):
        embodiment_from_dict(broken)
    broken = dict(data, groups=[*data["groups"], data["groups"][1]])  # the waist twice
    with pytest.raises(ValueError, match="exactly once"):
        embodiment_from_dict(broken)
    broken = dict(data, groups=[dict(g, commanded=False) for g in data["groups"]])
    with pytest.raises(ValueError, match="no group is commanded"):
        embodiment_from_dict(broken)
    broken = dict(data, groups=[dict(data["groups"][0], joints=["left_knee"]), *data["groups"][1:]])
    with pytest.raises(ValueError, match="unknown joints \\['left_knee'\\]"):
        embodiment_from_dict(broken)



def test_end_effectors_are_a_list_or_the_one_link_of_the_older_key():
    data = yaml.safe_load(share_path("config", "embodiments", "humanoid.yaml").read_text())
    assert embodiment_from_dict(data).end_effector_links == ("left_tcp_link", "right_tcp_link")
    one = {k: v for k, v in data.items() if k != "end_effector_links"}
    assert embodiment_from_dict(dict(one, end_effector_link="right_tcp_link")).end_effector_links == ("right_tcp_link",)
    assert embodiment_from_dict(one).end_effector_links == ()  # no markers
    with pytest.raises(ValueError, match="not both"):
        embodiment_from_dict(dict(data, end_effector_link="right_tcp_link"))
    with pytest.raises(ValueError, match="list of URDF link names, got \\[3\\]"):
        embodiment_from_dict(dict(data, end_effector_links=[3]))

# -- URDF, ros2_control and controllers agree with the spec --------------------------------------
def test_urdf_joints_match_the_embodiment_spec(urdf, spec):
    moving = [j for j in urdf.findall("joint") if j.get("type") != "fixed" and j.find("mimic") is None]
    assert [j.get("name") for j in moving] == spec.joint_names
    for joint, expected in zip(moving, spec.joints):
        limit = joint.find("limit")
        assert [float(limit.get(k)) for k in ("lower", "upper", "velocity", "effort")] == [
            expected.lower, expected.upper, expected.velocity, expected.effort], expected.name
    kinds = {j.get("name"): j.get("type") for j in moving}
    assert kinds["left_gripper_joint"] == kinds["right_gripper_joint"] == "prismatic"
    mimics = {j.get("name"): j.find("mimic").get("joint") for j in urdf.findall("joint") if j.find("mimic") is not None}
    assert mimics == {"left_mirror_finger_joint": "left_gripper_joint",
                      "right_mirror_finger_joint": "right_gripper_joint"}


def test_urdf_has_a_frame_for_every_camera_and_hand(urdf, spec):
    links = {link.get("name") for link in urdf.findall("link")}
    for camera in spec.cameras:
        assert {f"{camera.name}_camera_link", f"{camera.name}_camera_optical_frame"} <= links
    assert set(spec.end_effector_links) == {"left_tcp_link", "right_tcp_link"} and set(spec.end_effector_links) <= links


@pytest.mark.parametrize("use_mock_hardware, plugin, hardware_params", [
    (True, "mock_components/GenericSystem", {"calculate_dynamics": "true"}),
    (False, "topic_based_ros2_control/TopicBasedSystem",
     {"joint_commands_topic": "/humanoid/joint_commands", "joint_states_topic": "/humanoid/joint_states"}),
])
def test_ros2_control_block_selects_the_hardware_and_commands_every_joint(
        use_mock_hardware, plugin, hardware_params, spec):
    (block,) = expand(use_mock_hardware).findall("ros2_control")
    assert block.find("hardware/plugin").text == plugin
    assert params(block.find("hardware")) == hardware_params
    joints = block.findall("joint")
    assert [j.get("name") for j in joints] == spec.joint_names  # the mimic finger is not an interface
    for joint, expected in zip(joints, spec.joints):
        (command,) = joint.findall("command_interface")
        assert params(command) == {"min": str(expected.lower), "max": str(expected.upper)}


def test_one_trajectory_controller_per_group_with_its_joints_in_order(spec):
    config = yaml.safe_load(CONTROLLERS.read_text())
    manager = config["controller_manager"]["ros__parameters"]
    assert manager["joint_state_broadcaster"]["type"] == "joint_state_broadcaster/JointStateBroadcaster"
    controllers = [name for name in manager if isinstance(manager[name], dict) and name != "joint_state_broadcaster"]
    assert controllers == [g.controller for g in spec.groups]
    for group in spec.groups:
        assert manager[group.controller]["type"] == group.controller_type
        parameters = config[group.controller]["ros__parameters"]
        assert parameters["joints"] == list(group.joints)
        assert parameters["command_interfaces"] == ["position"]
        assert parameters["set_last_command_interface_value_as_state_on_activation"] is False


# -- the MuJoCo twin has the URDF's kinematics ---------------------------------------------------
def test_twin_joints_and_servos_match_the_spec(sim, spec):
    model = sim.model
    for expected in spec.joints:
        joint = model.joint(expected.name)
        assert joint.range.tolist() == pytest.approx([expected.lower, expected.upper]), expected.name
        (actuator,) = [a for a in range(model.nu) if model.actuator_trnid[a, 0] == joint.id]
        assert model.actuator_forcerange[actuator].tolist() == [-expected.effort, expected.effort]
    for camera in spec.cameras:
        assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera.name) >= 0


def test_urdf_forward_kinematics_equals_the_twins(urdf, sim, spec):
    """librobot_drivers.kinematics on the URDF against MuJoCo's kinematics of the twin, for every
    link a spec joint moves, the hands' grasp points and the cameras."""
    fk = UrdfKinematics(ET.tostring(urdf, encoding="unicode"))
    assert fk.root == "world"
    model, data = sim.model, mujoco.MjData(sim.model)
    links = [j.find("child").get("link") for j in urdf.findall("joint")
             if j.get("type") != "fixed" and j.find("mimic") is None]
    links += ["left_tcp_link", "right_tcp_link", "head_camera_optical_frame", "right_wrist_camera_optical_frame"]
    qs = np.random.default_rng(0).uniform(spec.lower_limits, spec.upper_limits, size=(8, spec.dof))
    poses = {link: fk.link_poses(link, spec.joint_names, qs) for link in links}
    for i, q in enumerate(qs):
        data.qpos[[model.joint(n).qposadr[0] for n in spec.joint_names]] = q
        mujoco.mj_kinematics(model, data)
        for link in links:
            positions, rotations = poses[link]
            assert np.allclose(positions[i], data.body(link).xpos, atol=1e-6), link
            assert np.allclose(rotations[i], data.body(link).xmat.reshape(3, 3), atol=1e-6), link


def test_the_head_camera_looks_along_its_optical_frame(sim):
    """A MuJoCo camera looks along its -z with y up; the ROS optical frame along z with y down."""
    model, data = sim.model, sim.data
    mujoco.mj_kinematics(model, data)
    camera = data.cam("head").xmat.reshape(3, 3)
    optical = data.body("head_camera_optical_frame").xmat.reshape(3, 3)
    assert np.allclose(-camera[:, 2], optical[:, 2], atol=1e-6)  # the same viewing direction
    assert np.allclose(camera[:, 1], -optical[:, 1], atol=1e-6)
    assert optical[2, 2] < -0.5  # looking down at the table
