"""librobot_models and librobot_training must work without ROS: they never import rclpy or *_msgs.
librobot_models also imports nothing else of ours (arrows only point towards it)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROS_FREE = ["librobot_models", "librobot_training"]
FORBIDDEN_ROOTS = ("rclpy", "rosidl_runtime_py", "launch", "launch_ros")


def forbidden(module: str) -> bool:
    root = module.split(".")[0]
    return root in FORBIDDEN_ROOTS or root.endswith("_msgs") or root.endswith("_srvs")


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", ROS_FREE)
def test_sources_never_import_ros(package):
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in sorted((SRC / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if forbidden(module)
    ]
    assert not offenders, "\n".join(offenders)


def test_models_import_no_other_librobot_package():
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in sorted((SRC / "librobot_models").rglob("*.py"))
        for line, module in imported_modules(path)
        if module.startswith("librobot") and module.split(".")[0] != "librobot_models"
    ]
    assert not offenders, "\n".join(offenders)


def test_forbidden_names_are_recognised():
    assert forbidden("rclpy.node") and forbidden("sensor_msgs.msg") and forbidden("librobot_msgs")
    assert not forbidden("torch") and not forbidden("librobot_drivers.embodiment")


# Imports every module of both packages in a fresh interpreter in which any attempt to import a
# ROS module fails, so that an import hidden behind a function call or importlib is caught too.
BLOCK_ROS_AND_IMPORT_ALL = r"""
import importlib, pkgutil, sys

FORBIDDEN_ROOTS = {forbidden_roots!r}

class BlockRos:
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root in FORBIDDEN_ROOTS or root.endswith(("_msgs", "_srvs")):
            raise ImportError(f"ROS module {{name!r}} imported by a ROS-free package")
        return None

sys.meta_path.insert(0, BlockRos())
for package in {packages!r}:
    top = importlib.import_module(package)
    for info in pkgutil.walk_packages(top.__path__, package + "."):
        importlib.import_module(info.name)
print("imported-ok")
"""


def test_modules_import_with_ros_unavailable():
    code = BLOCK_ROS_AND_IMPORT_ALL.format(forbidden_roots=FORBIDDEN_ROOTS, packages=ROS_FREE)
    paths = [str(SRC / p) for p in (*ROS_FREE, "librobot_drivers")]
    env = {"PYTHONPATH": ":".join(paths), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0 and "imported-ok" in result.stdout, result.stderr[-3000:]
