"""Locate the package's data files (robot descriptions, configs) with or without ROS.

Installed by colcon or apt, they live in the package's share directory, found through the ament
index. Run from a source checkout (tests, notebooks without a sourced workspace), they live next
to this package.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

PACKAGE = "librobot_drivers"


@lru_cache(maxsize=None)
def share_dir(package: str = PACKAGE) -> Path:
    """The share directory of `package` (a librobot package): from the ament index, else the
    package's source directory."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            return Path(get_package_share_directory(package))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} is neither in the ament index nor importable")
    return Path(spec.origin).resolve().parent.parent


def share_path(*parts: str, package: str = PACKAGE) -> Path:
    return share_dir(package).joinpath(*parts)
