"""Point the ros-jazzy-* wheels' exported CMake targets at this interpreter.

The wheels are built in a manylinux container, and their exported CMake targets name that
container's Python and NumPy include directories. Rewriting those two paths in the venv's
``share/**/*.cmake`` files lets ``rosidl_generate_interfaces`` configure here. Idempotent.

Usage: python fix_wheel_cmake.py VENV_PREFIX
"""

import re
import sys
import sysconfig
from pathlib import Path

import numpy

# /opt/python/cp311-cp311/include/python3.11 and .../site-packages/numpy/_core/include
BUILD_PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?")
BUILD_NUMPY_INCLUDE = re.compile(
    r"/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages/numpy/(?:_)?core/include"
)


def main(prefix: Path) -> int:
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        fixed = BUILD_NUMPY_INCLUDE.sub(numpy_include, text)
        fixed = BUILD_PYTHON_INCLUDE.sub(python_include, fixed)
        if fixed != text:
            path.write_text(fixed, errors="surrogateescape")
            changed += 1
    print(f"fix_wheel_cmake: rewrote include paths in {changed} file(s) under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
