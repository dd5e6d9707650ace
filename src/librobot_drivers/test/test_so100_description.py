"""The SO-100 description agrees with itself: URDF, ros2_control, controllers, spec and MuJoCo."""

import xml.etree.ElementTree as ET

import mujoco
import numpy as np
import pytest
import xacro

from librobot_drivers.kinematics import UrdfKinematics
import yaml

from librobot_drivers.embodiment import load_embodiment
from librobot_drivers.resources import share_path
from librobot_drivers.sim.so100_sim import SCENE_PATH

URDF_XACRO = share_path("description", "urdf", "so100.urdf.xacro")
CONTROLLERS = share_path("config", "so100_controllers.yaml")
LINKS = [
    "shoulder_link", "upper_arm_link", "lower_arm_link", "wrist_link", "gripper_link", "jaw_link"
]


@pytest.fixture(scope="module")
def spec():
    return load_embodiment("so100")


def expand(use_mock_hardware: bool) -> ET.Element:
    mappings = {"use_mock_hardware": str(use_mock_hardware).lower()}
    return ET.fromstring(xacro.process_file(str(URDF_XACRO), mappings=mappings).toxml())


@pytest.fixture(scope="module")
def urdf() -> ET.Element:
    return expand(use_mock_hardware=True)


@pytest.fixture(scope="module")
def scene() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(SCENE_PATH))


def params(element: ET.Element) -> dict[str, str]:
    return {p.get("name"): p.text for p in element.findall("param")}


def floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


# -- (a) names, order and limits agree ------------------------------------------------------------
def test_urdf_joints_match_the_embodiment_spec(urdf, spec):
    joints = [j for j in urdf.findall("joint") if j.get("type") == "revolute"]
    assert [j.get("name") for j in joints] == spec.joint_names
    for joint, expected in zip(joints, spec.joints):
        limit = joint.find("limit")
        assert float(limit.get("lower")) == expected.lower, joint.get("name")
        assert float(limit.get("upper")) == expected.upper, joint.get("name")
        assert float(limit.get("velocity")) == expected.velocity, joint.get("name")
        assert float(limit.get("effort")) == expected.effort, joint.get("name")


@pytest.mark.parametrize(
    "use_mock_hardware, plugin, hardware_params",
    [
        (True, "mock_components/GenericSystem", {"calculate_dynamics": "true"}),
        (
            False,
            "topic_based_ros2_control/TopicBasedSystem",
            {
                "joint_commands_topic": "/so100/joint_commands",
                "joint_states_topic": "/so100/joint_states",
            },
        ),
    ],
)
def test_ros2_control_block_selects_the_hardware(use_mock_hardware, plugin, hardware_params):
    (block,) = expand(use_mock_hardware).findall("ros2_control")
    assert block.get("type") == "system"
    assert block.find("hardware/plugin").text == plugin
    assert params(block.find("hardware")) == hardware_params


@pytest.mark.parametrize("use_mock_hardware", [True, False])
def test_ros2_control_joints_command_positions_within_the_limits(use_mock_hardware, spec):
    joints = expand(use_mock_hardware).findall("ros2_control/joint")
    assert [j.get("name") for j in joints] == spec.joint_names
    rest = spec.clip(np.zeros(spec.dof))
    for joint, expected, rest_position in zip(joints, spec.joints, rest):
        (command,) = joint.findall("command_interface")
        assert command.get("name") == "position"
        assert params(command) == {"min": str(expected.lower), "max": str(expected.upper)}
        states = joint.findall("state_interface")
        assert [s.get("name") for s in states] == ["position", "velocity"]
        assert float(params(states[0])["initial_value"]) == rest_position


def test_controllers_drive_every_joint_of_the_spec_in_order(spec):
    with open(CONTROLLERS) as f:
        config = yaml.safe_load(f)
    manager = config["controller_manager"]["ros__parameters"]
    assert manager["update_rate"] == 100
    broadcaster = manager["joint_state_broadcaster"]["type"]
    assert broadcaster == "joint_state_broadcaster/JointStateBroadcaster"
    assert [g.joints for g in spec.groups] == [tuple(spec.joint_names)]
    group = spec.groups[0]
    assert manager[group.controller]["type"] == group.controller_type
    arm = config[group.controller]["ros__parameters"]
    assert arm["joints"] == spec.joint_names
    assert arm["command_interfaces"] == ["position"]
    assert arm["state_interfaces"] == ["position", "velocity"]
    assert arm["allow_partial_joints_goal"] is False
    assert arm["set_last_command_interface_value_as_state_on_activation"] is False


def test_mujoco_joints_and_actuators_match_the_spec(scene, spec):
    for expected in spec.joints:
        joint = scene.joint(expected.name)
        assert joint.range.tolist() == [expected.lower, expected.upper], expected.name
        (actuator,) = [a for a in range(scene.nu) if scene.actuator_trnid[a, 0] == joint.id]
        assert scene.actuator_ctrlrange[actuator].tolist() == [expected.lower, expected.upper]


# -- (b) forward kinematics of the URDF equals MuJoCo's ------------------------------------------
def test_urdf_forward_kinematics_equals_mujoco(urdf, scene, spec):
    """librobot_drivers.kinematics on the URDF against MuJoCo's kinematics of the scene."""
    fk = UrdfKinematics(ET.tostring(urdf, encoding="unicode"))
    assert fk.root == "world"
    data = mujoco.MjData(scene)
    qs = np.random.default_rng(0).uniform(spec.lower_limits, spec.upper_limits, size=(10, spec.dof))
    poses = {link: fk.link_poses(link, spec.joint_names, qs) for link in [*LINKS, "tcp_link"]}
    for i, q in enumerate(qs):
        for name, angle in zip(spec.joint_names, q):
            data.qpos[scene.joint(name).qposadr[0]] = angle
        mujoco.mj_kinematics(scene, data)
        for link in LINKS:
            positions, rotations = poses[link]
            assert np.allclose(positions[i], data.body(link).xpos, atol=1e-3), (link, q)
            assert np.allclose(rotations[i], data.body(link).xmat.reshape(3, 3), atol=1e-6), (link, q)
        assert np.allclose(poses["tcp_link"][0][i], data.site("tcp").xpos, atol=1e-3), q


def test_the_acceleration_limits_are_the_servos_ramp_and_a_partial_set_is_refused(spec):
    from librobot_drivers.embodiment import embodiment_from_dict

    # Acceleration 254 (x 100 steps/s^2, 4096 steps a turn) as config/hardware/so100_feetech.yaml sets it
    np.testing.assert_allclose(spec.acceleration_limits, 254 * 100 * 2 * np.pi / 4096, rtol=2e-3)
    data = yaml.safe_load((share_path("config", "embodiments", "so100.yaml")).read_text())
    del data["joints"][2]["acceleration"]
    with pytest.raises(ValueError, match="acceleration limits for .* only"):
        embodiment_from_dict(data)
