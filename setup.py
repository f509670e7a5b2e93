"""qiot: a Mininet testbed for QKD-keyed, software-defined IoT (Mavromatis et al., ECOC 2018)."""
from setuptools import find_packages, setup

setup(
    name="qiot",
    version="0.1.0",
    description="Mininet testbed comparing QKD-delivered keys with on-device ECC key generation for IoT",
    packages=find_packages(include=["harness", "harness.*", "topologies", "topologies.*",
                                    "controllers", "controllers.*"]),
    package_data={"harness": ["analysis/*.html.j2"]},
    python_requires=">=3.11",
    install_requires=[
        "click>=8.1",
        "pandas>=2.0",
        "numpy>=1.24",
        "scapy>=2.5",
        "paho-mqtt>=2.0",
        "cryptography>=41",
        "os-ken>=4.0",
        "NetfilterQueue>=1.1",
        "matplotlib>=3.7",
        "scipy>=1.10",
        "jinja2>=3.1",
    ],
    extras_require={"test": ["pytest>=7", "pyyaml>=6"]},
    entry_points={"console_scripts": ["qiot=harness.cli:main"]},
)
