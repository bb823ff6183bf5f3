"""The device install has no torch, no exporters' dependencies and maybe no hardware libraries.

In a fresh interpreter with torch, cv2, serial, paho, tensorrt and pycuda made unimportable,
every module outside training, exporters and the training CLI commands must still import.
"""
import subprocess
import sys
import textwrap

# package_dir maps four folders into one package: walk each, since an editable install
# does not nest them on disk.
TOPS = ("factoryedge", "factoryedge.runtimes", "factoryedge.firmware_config")
TRAINING_ONLY = ("factoryedge.training", "factoryedge.exporters", "factoryedge.cli.train", "factoryedge.cli.export")


def test_device_modules_import_without_torch_or_hardware_libraries():
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for blocked in ("torch", "cv2", "serial", "paho", "paho.mqtt", "tensorrt", "pycuda", "sklearn", "matplotlib"):
            sys.modules[blocked] = None
        names = []
        for top in {TOPS!r}:
            pkg = importlib.import_module(top)
            names.append(top)
            for m in pkgutil.walk_packages(pkg.__path__, top + "."):
                if m.name.startswith({TRAINING_ONLY!r}) or m.name.endswith("__main__") or m.name in names:
                    continue
                importlib.import_module(m.name)
                names.append(m.name)
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print(len(names))
        print("\\n".join(names))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    imported = set(names[1:])
    assert int(names[0]) == len(imported) >= 10
    for must in ("factoryedge.bundle", "factoryedge.features.vibration", "factoryedge.runtimes.monitoring.recordings",
                 "factoryedge.runtimes.backends.onnxruntime", "factoryedge.cli.evaluate", "factoryedge.firmware_config"):
        assert must in imported


def test_training_side_does_use_torch():
    """The boundary test above is only meaningful if the excluded modules are the torch users."""
    import factoryedge.exporters.onnx_export as exp
    import factoryedge.training.models as models

    assert models.torch.__name__ == "torch" and exp.torch.__name__ == "torch"
