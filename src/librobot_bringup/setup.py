import os
from glob import glob

from setuptools import find_packages, setup

package_name = "librobot_bringup"


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
        *tree("launch"),
        *tree("config"),
        *tree("checkpoints"),
    ],
    install_requires=[],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="LibroBot maintainers",
    maintainer_email="maintainers@librobot.dev",
    description="LibroBot bringup: launch files, parameters and RViz configurations.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "record = librobot_bringup.record:main",
            "demo = librobot_bringup.demo:main",
        ]
    },
)
