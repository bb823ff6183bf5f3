"""The inspection path as the device runs it, against bare ONNX Runtime on the same tensors.

    python benchmarks/image_runtime.py [--json PATH] [--images 24] [--repeats 5] [--no-train]

The device path: JPEG bytes decoded by OpenCV (``cv2.imdecode(..., IMREAD_ANYCOLOR)``, as the
``dir://`` camera does) -> ``ImageModel.score`` (the manifest's preprocessing, the backend's
input checks, ONNX Runtime, the score rule), without and with the stitched heatmap. The
reference: ``InferenceSession.run`` of the very session the model opened (same options and
threads) on the tensors the preprocessing made beforehand. The paths run interleaved, image
by image; each path's time is the sum over images of its best of ``--repeats`` passes.

The bundle is PatchCore trained on the magnetic-tile images in ``../shared/data``, cached by
``bench_bundles.py`` (trained first if missing, minutes; ``--no-train`` falls back instead),
scoring real test images of varied sizes; without the data, the tests' small template bundle
on synthetic parts. Prints images/s and a per-stage breakdown; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_bundles import image_bundle, magnetic_tile_images  # benchmarks/: on sys.path when run as a script
from report import entry, table, write

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_frames(n: int, patchcore: bool) -> tuple[list[bytes], str]:
    """JPEG/PNG bytes of ``n`` images: magnetic-tile test images spread over the classes, else synthetic parts."""
    import cv2

    files = magnetic_tile_images()
    if patchcore and files:
        step = max(1, len(files) // n)
        chosen = files[::step][:n]
        return [f.read_bytes() for f in chosen], f"{len(chosen)} magnetic-tile test images (every {step}th, JPEG)"
    from tests.support.image_bundle import uniform_part

    frames = [cv2.imencode(".png", uniform_part(seed=i, defect=i % 4 == 1))[1].tobytes() for i in range(n)]
    return frames, f"{n} synthetic 128x96 parts (PNG)"


def measure(bundle: Path, blobs: list[bytes], repeats: int) -> dict:
    import cv2

    from factoryedge.runtimes.inspection.image_model import ImageModel

    model = ImageModel.load(bundle, backend="onnxruntime")
    session = model.backend.session
    names = model.backend.output_names
    input_name = model.backend.inputs[0].name

    def decode(b: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_ANYCOLOR)

    frames = [decode(b) for b in blobs]
    tensors = [model.preprocess(f)[0] for f in frames]

    def device(i):
        return model.score(decode(blobs[i])).score

    def device_heatmap(i):
        return model.score(decode(blobs[i])).heatmap

    def bare(i):
        session.run(names, {input_name: tensors[i]})

    def decode_only(i):
        decode(blobs[i])

    def preprocess_only(i):
        model.preprocess(frames[i])

    results = [model.score(f) for f in frames]

    def heatmap_only(i):
        results[i]._heatmap = None
        return results[i].heatmap

    paths = {"device": device, "device_heatmap": device_heatmap, "bare_ort": bare, "decode": decode_only,
             "preprocess": preprocess_only, "heatmap": heatmap_only}
    for i in range(len(blobs)):  # warm-up: ORT allocates per input shape on first sight
        device(i), bare(i)
    # Interleaved per image: every path runs on image i back to back, so a busy moment on the
    # shared machine hits them alike, in an order that rotates each pass (what ran just before,
    # e.g. spinning thread pools, must not favour one path); per path and image the best of
    # the passes, summed over images.
    best = {k: [float("inf")] * len(blobs) for k in paths}
    order = list(paths)
    for r in range(repeats):
        for i in range(len(blobs)):
            for k in order[r % len(order):] + order[: r % len(order)]:
                t = time.perf_counter()
                paths[k](i)
                best[k][i] = min(best[k][i], time.perf_counter() - t)
    best = {k: sum(v) for k, v in best.items()}
    n = len(blobs)
    shapes = sorted({tuple(x.shape[2:]) for x in tensors})
    info = {"model": f"{model.name} {model.version}", "providers": model.backend.providers,
            "ort_threads": os.environ.get("FACTORYEDGE_ORT_THREADS") or "onnxruntime default",
            "input_hw_min_max": [list(shapes[0]), list(shapes[-1])], "items_per_image": int(tensors[0].shape[0]),
            "heatmap_output": model._heatmap_output}
    model.close()
    return {"n": n, "per_image_ms": {k: v / n * 1e3 for k, v in best.items()}, **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--no-train", action="store_true", help="never train PatchCore; use the test bundle if uncached")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fe-bench-img-") as tmp:
        bundle, what = image_bundle(Path(tmp) / "bundle", train=not args.no_train)
        blobs, images = load_frames(args.images, "PatchCore" in what)
        r = measure(bundle, blobs, args.repeats)
    ms = r["per_image_ms"]
    print(f"bundle: {what}\nimages: {images}; model input {r['input_hw_min_max'][0]}..{r['input_hw_min_max'][1]}, "
          f"{r['providers']}, threads {r['ort_threads']}; per image the best of {args.repeats} interleaved passes\n")
    labels = {"device": "device path: decode -> ImageModel.score (no heatmap)",
              "device_heatmap": "device path with the heatmap", "bare_ort": "bare InferenceSession.run on tensors",
              "decode": "  stage: OpenCV decode", "preprocess": "  stage: ImageModel.preprocess",
              "heatmap": "  stage: heatmap (stitch)"}
    for k, label in labels.items():
        print(f"{label:<56}{ms[k]:8.2f} ms/image  {1e3 / ms[k]:8.1f} images/s")
    overhead = ms["device"] - ms["bare_ort"]
    print(f"\ndevice path overhead over bare ORT: {overhead:.2f} ms/image "
          f"(decode {ms['decode']:.2f} + preprocess {ms['preprocess']:.2f} + the rest "
          f"{overhead - ms['decode'] - ms['preprocess']:.2f})")
    value, ref = 1e3 / ms["device"], 1e3 / ms["bare_ort"]
    results = {"image_runtime_vs_bare_ort": entry(
        value, "images/s", "bare onnxruntime InferenceSession.run on the preprocessed tensors, same session",
        ref, value / ref, goal=0.9, bundle=what, images=images, with_heatmap_images_s=1e3 / ms["device_heatmap"],
        heatmap_ms=ms["heatmap"], stage_ms={k: round(v, 3) for k, v in ms.items()},
        **{k: v for k, v in r.items() if k not in ("per_image_ms",)})}
    print()
    print(table(results))
    write(args.json, results)


if __name__ == "__main__":
    main()
