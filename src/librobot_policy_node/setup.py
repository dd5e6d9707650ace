from setuptools import find_packages, setup

package_name = "librobot_policy_node"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["numpy"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="LibroBot maintainers",
    maintainer_email="maintainers@librobot.dev",
    description="LibroBot policy node: runs a VLA policy on camera and joint-state topics and publishes action chunks.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["policy_node = librobot_policy_node.policy_node:main"]},
)
