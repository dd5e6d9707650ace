from setuptools import find_packages, setup

package_name = "librobot_models"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["numpy", "torch", "safetensors", "pyyaml", "transformers", "tokenizers", "peft"],
    extras_require={"test": ["pytest"], "qlora": ["bitsandbytes"]},
    zip_safe=True,
    maintainer="LibroBot maintainers",
    maintainer_email="maintainers@librobot.dev",
    description="LibroBot models: VLM backbones, action heads and VLA frameworks (pure Python + torch).",
    license="Apache-2.0",
)
