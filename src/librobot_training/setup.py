from glob import glob

from setuptools import find_packages, setup

package_name = "librobot_training"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    install_requires=[
        "numpy", "torch", "h5py", "rosbags", "pyyaml", "tqdm", "opencv-python-headless", "pyarrow", "av",
    ],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="LibroBot maintainers",
    maintainer_email="maintainers@librobot.dev",
    description="LibroBot training: rosbag2 to HDF5 conversion, datasets, training and evaluation without ROS.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "bag_to_hdf5 = librobot_training.bag_to_hdf5:main",
            "train = librobot_training.train:main",
            "evaluate = librobot_training.evaluate:main",
            "export_lerobot = librobot_training.export_lerobot:main",
            "export = librobot_training.export:main",
            "zoo = librobot_training.zoo:main",
        ]
    },
)
