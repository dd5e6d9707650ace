"""package.xml files are valid format 3 and declare what the code imports (honest dependencies)."""

import ast
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGES = sorted(p.parent for p in SRC.glob("*/package.xml"))

# Python module -> rosdep key that provides it.
ROSDEP_KEY = {
    "numpy": "python3-numpy",
    "torch": "python3-torch",
    "yaml": "python3-yaml",
    "h5py": "python3-h5py",
    "cv2": "python3-opencv",
    "tqdm": "python3-tqdm",
    "rosbags": "python3-rosbags-pip",
    "mujoco": "python3-mujoco-pip",
    "transformers": "python3-transformers-pip",
    "rcl_interfaces": "rcl_interfaces",
    "serial": "python3-serial",
    "grpc": "python3-grpcio",
    "fastapi": "python3-fastapi",
    "uvicorn": "python3-uvicorn",
}
# Modules without a rosdep key: installed by pip from requirements/python.txt (documented there).
PIP_ONLY = {"safetensors", "peft", "tokenizers", "bitsandbytes", "xacro", "catkin_pkg", "scservo_sdk",
            "pyarrow", "av", "onnx", "onnxruntime", "ml_dtypes"}


def imports_of(package_dir: Path) -> set[str]:
    modules = set()
    code = package_dir / package_dir.name
    for path in code.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("package_dir", PACKAGES, ids=lambda p: p.name)
def test_manifest_is_valid_format_3(package_dir):
    package = parse_package(str(package_dir / "package.xml"))
    package.validate()
    assert package.package_format == 3 and package.name == package_dir.name


@pytest.mark.parametrize(
    "package_dir", [p for p in PACKAGES if (p / p.name).is_dir()], ids=lambda p: p.name
)
def test_every_import_is_a_declared_dependency(package_dir):
    package = parse_package(str(package_dir / "package.xml"))
    declared = {d.name for d in package.exec_depends + package.build_export_depends}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    missing = []
    for module in sorted(imports_of(package_dir) - stdlib - PIP_ONLY - {package_dir.name}):
        key = ROSDEP_KEY.get(module, module)
        if key not in declared:
            missing.append(f"{module} (rosdep key {key})")
    assert not missing, f"{package_dir.name}/package.xml does not declare: {missing}"
