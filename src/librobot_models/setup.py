from setuptools import find_packages, setup

package_name = "librobot_models"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={package_name: ["serving/*.proto"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
    ],
    install_requires=["numpy", "torch", "safetensors", "pyyaml", "transformers", "tokenizers", "peft",
                      "grpcio", "grpcio-tools", "protobuf", "fastapi", "uvicorn"],
    extras_require={"test": ["pytest"], "qlora": ["bitsandbytes"]},
    entry_points={"console_scripts": ["serve = librobot_models.serve:main"]},
    zip_safe=False,  # policy.proto is read from the package directory
    maintainer="LibroBot maintainers",
    maintainer_email="maintainers@librobot.dev",
    description="LibroBot models: VLM backbones, action heads and VLA frameworks (pure Python + torch).",
    license="Apache-2.0",
)
