import os
from glob import glob

from setuptools import find_packages, setup

package_name = "librobot_drivers"


def tree(directory):
    """data_files entries installing every file under directory into share/<package>/directory."""
    entries = {}
    for path in glob(f"{directory}/**/*", recursive=True):
        if os.path.isfile(path):
            entries.setdefault(f"share/{package_name}/{os.path.dirname(path)}", []).append(path)
    return sorted(entries.items())


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        *tree("config"),
        *tree("description"),
    ],
    install_requires=["numpy", "pyyaml"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="LibroBot maintainers",
    maintainer_email="maintainers@librobot.dev",
    description="LibroBot drivers: ROS-free robot classes (SO-100, simulated twins), robot descriptions and a generic driver node.",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        "driver_node = librobot_drivers.driver_node:main",
        "drive_node = librobot_drivers.drive_node:main",
        "expert_node = librobot_drivers.expert_node:main",
        "teleop_node = librobot_drivers.teleop_node:main",
        "calibrate = librobot_drivers.calibrate:main",
        "feetech_emulator = librobot_drivers.feetech.emulator:main",
    ]},
)
