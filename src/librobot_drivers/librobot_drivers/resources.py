"""Locate the package's data files (robot descriptions, configs) with or without ROS.

Installed by colcon or apt, they live in the package's share directory, found through the ament
index. Run from a source checkout (tests, notebooks without a sourced workspace), they live next
to this package.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE = "librobot_drivers"


@lru_cache(maxsize=1)
def share_dir() -> Path:
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent


def share_path(*parts: str) -> Path:
    return share_dir().joinpath(*parts)
