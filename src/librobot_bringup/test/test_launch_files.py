"""What can be checked of the launch files without launch_ros: syntax, files and names they use."""

import ast
import re
from pathlib import Path

import pytest
import yaml

SRC = Path(__file__).resolve().parents[2]
BRINGUP = SRC / "librobot_bringup"


def launch_nodes(path: Path) -> list[dict]:
    """package/executable keyword values of every Node(...) call in a launch file."""
    nodes = []
    for call in ast.walk(ast.parse(path.read_text())):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node":
            kw = {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
            nodes.append(kw)
    return nodes


def console_scripts(package: str) -> set[str]:
    setup = (SRC / package / "setup.py").read_text()
    return set(re.findall(r'"(\w+) = [\w.]+:main"', setup))


def declared_parameters(module: Path) -> set[str]:
    return set(re.findall(r'declare_parameter\(\s*"(\w+)"', module.read_text()))


def test_launch_files_parse_and_define_a_launch_description():
    for path in sorted((BRINGUP / "launch").glob("*.launch.py")):
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description"
                   for n in tree.body), path


def test_our_nodes_exist_as_ros2_run_executables_and_modules(tmp_path):
    """The launch file and demo/record start system.py's nodes: by executable and by module."""
    import importlib

    from librobot_bringup import system

    launch = (BRINGUP / "launch" / "robot.launch.py").read_text()
    assert not [n for n in launch_nodes(BRINGUP / "launch" / "robot.launch.py")
                if n.get("package", "").startswith("librobot_")], "our nodes come from system.py"
    for spec in (system.policy_node("so100", tmp_path), system.sim_driver_node("so100"),
                 system.hardware_driver_node("so100"), system.expert_node(), system.drive_node("wheel_loader")):
        assert spec.executable in console_scripts(spec.package), spec
        assert callable(importlib.import_module(spec.module).main), spec


@pytest.mark.parametrize("robot", ["so100", "humanoid", "wheel_loader"])
def test_parameter_files_only_set_declared_parameters(robot):
    from librobot_policy_node.policy_node import PARAMETERS

    params = yaml.safe_load((BRINGUP / "config" / f"{robot}_policy.yaml").read_text())
    assert set(params["policy"]["ros__parameters"]) <= set(PARAMETERS)
    assert params["policy"]["ros__parameters"]["embodiment"] == robot
    sim = yaml.safe_load((BRINGUP / "config" / f"{robot}_sim.yaml").read_text())
    declared = declared_parameters(SRC / "librobot_drivers/librobot_drivers/driver_node.py")
    assert set(sim["driver"]["ros__parameters"]) <= declared
    assert sim["driver"]["ros__parameters"]["robot"] == f"{robot}_sim"


def test_a_robot_with_a_drive_gets_the_drive_node_with_its_parameter_file():
    from librobot_bringup import system

    assert system.machine_nodes("so100") == [] and system.machine_nodes("humanoid") == []
    (drive,) = system.machine_nodes("wheel_loader")
    assert drive.name == "drive"
    params = yaml.safe_load((BRINGUP / "config" / "wheel_loader_drive.yaml").read_text())
    declared = declared_parameters(SRC / "librobot_drivers/librobot_drivers/drive_node.py")
    assert set(params["drive"]["ros__parameters"]) <= declared


@pytest.mark.parametrize("robot, camera", [("so100", "front"), ("humanoid", "head"), ("wheel_loader", "cab")])
def test_files_robot_launch_finds_for_each_robot_exist(robot, camera):
    """robot.launch.py finds a robot's files by its name (see its docstring); the per-robot
    launch file is robot.launch.py with robot set."""
    assert (SRC / f"librobot_drivers/config/embodiments/{robot}.yaml").is_file()
    assert (SRC / f"librobot_drivers/description/urdf/{robot}.urdf.xacro").is_file()
    assert (SRC / f"librobot_drivers/config/{robot}_controllers.yaml").is_file()
    for name in (f"config/{robot}_policy.yaml", f"config/{robot}_sim.yaml", f"config/{robot}.rviz",
                 f"launch/{robot}.launch.py"):
        assert (BRINGUP / name).is_file(), name
    assert (BRINGUP / f"checkpoints/act_{robot}/config.json").is_file()  # the launch's default policy
    assert f'launch_arguments={{"robot": "{robot}"}}' in (BRINGUP / "launch" / f"{robot}.launch.py").read_text()
    rviz = yaml.safe_load((BRINGUP / "config" / f"{robot}.rviz").read_text())
    topics = [d.get("Topic", {}).get("Value") for d in rviz["Visualization Manager"]["Displays"]]
    assert f"/camera/{camera}/image_raw" in topics
