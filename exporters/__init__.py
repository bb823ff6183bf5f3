"""Exporters: trained torch models to ONNX bundles (and, on the device, TensorRT engines)."""
