"""factoryedge: anomaly-detection models from training to factory hardware.

Importing this package is cheap and torch-free: the core (errors, bundle format, features,
data loaders, scoring rules) needs only numpy, scipy and pydantic.
"""
__version__ = "0.1.0"
