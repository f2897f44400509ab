"""ament_python package `async_vla_ros` (the repository root).

Installs the Python package, the ament index marker, package.xml, launch/ and config/ so that
`ros2 launch async_vla_ros ...` and `get_package_share_directory('async_vla_ros')` work after a
colcon build or a non-editable pip install. `make setup` installs editable for development and
links the share files itself (an editable install skips `data_files`).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "async_vla_ros"

# Console scripts: the CLI plus one executable per ROS node (`ros2 run async_vla_ros <node>`).
NODE_SCRIPTS = {
    # name -> module with a main(); extended as nodes land (see async_vla_ros/nodes/).
    "recorder": f"{PACKAGE}.nodes.recorder",
    "dashboard": f"{PACKAGE}.nodes.dashboard",
    "sim_node": f"{PACKAGE}.nodes.sim_node",
    "camera_ingestion": f"{PACKAGE}.nodes.camera_ingestion",
    "policy_node": f"{PACKAGE}.nodes.policy_node",
    "policy_container": f"{PACKAGE}.nodes.policy_container",
    "scheduler_node": f"{PACKAGE}.nodes.scheduler_node",
    "correction_node": f"{PACKAGE}.nodes.correction_node",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={
        PACKAGE: [
            "checkpoints/*.pt",
            "checkpoints/*.json",
            # the multi-task VLA and its REMAC: LeRobot policy folders with their tiny VLM (config, tokenizer)
            *(f"checkpoints/{f}/{sub}*" for f in ("vla", "vla_remac") for sub in ("", "vlm/")),
            "web/*",
        ]
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.perspective") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml"],
    extras_require={"test": ["pytest", "hypothesis"]},
    zip_safe=False,
    maintainer="async_vla_ros maintainers",
    maintainer_email="maintainers@async-vla-ros.dev",
    description="Real-time action chunking (RTC, REMAC, A2C2) for Franka arms on ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"async-vla-ros = {PACKAGE}.cli:main"]
        + [f"{name} = {module}:main" for name, module in NODE_SCRIPTS.items()],
    },
)
