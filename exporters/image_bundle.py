"""A trained image model to a verified bundle: ONNX with its preprocessing, parity, golden data.

Every image architecture (PatchCore, f-AnoGAN, the convolutional autoencoder, the defect
classifier) goes through here, so the device sees one contract: input ``input`` float32
(N, 3, H, W) as ``ImagePreprocessor`` makes it from the manifest's ``preprocessing``, output
``score`` (N,) and, where the model has one, ``heatmap`` (N, h, w) over the input inside the
margin. Models that take whole images of varying size (no tiles, no fixed resize) are
exported with dynamic height and width in steps of the spec's ``multiple``.

Golden data: the first group of same-size inputs is stored as ``input`` / ``output_<name>``
(what a TensorRT build on the device checks against); further sizes as ``group<i>_input`` /
``group<i>_output_<name>``, so parity covers the dynamic shapes too.
"""
from __future__ import annotations

import datetime as dt
import io
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import factoryedge
from factoryedge.bundle import Bundle, load_bundle, write_bundle
from factoryedge.errors import ExportError
from factoryedge.exporters.onnx_export import EXPORT_TOLERANCE, OPSET, check_parity, export_onnx, tensor_specs
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor
from factoryedge.manifest import Manifest, ModelInfo, ParityRecord, Provenance, ScoreInfo
from factoryedge.parity import Tolerance
from factoryedge.scoring import ScoreRule, false_reject_estimate
from factoryedge.training.image_common import TrainedImageModel

OUTPUTS = ("score", "heatmap")


def is_variable_size(spec: ImagePreprocessingSpec) -> bool:
    """True when the model input's height and width follow each image (no tiles, no fixed size)."""
    return spec.tile is None and spec.resize != "fixed"


def golden_groups(
    spec: ImagePreprocessingSpec, images: list[np.ndarray], n_groups: int = 2, per_group: int = 4
) -> list[np.ndarray]:
    """Preprocessed inputs in batches of one size, the most common sizes first.

    Pass good and defective images alike, so parity is checked on both sides of the
    threshold. Tiled and fixed-size specs give one group.
    """
    if not images:
        raise ExportError("golden data needs at least one image")
    pre = ImagePreprocessor(spec)
    groups: dict[tuple, list[np.ndarray]] = defaultdict(list)
    for img in images:
        x = pre(img)
        for item in x:
            groups[item.shape].append(item)
    ranked = sorted(groups.values(), key=len, reverse=True)[:n_groups]
    return [np.stack(g[:per_group]).astype(np.float32) for g in ranked]


def _output_names(module: torch.nn.Module, example: np.ndarray) -> list[str]:
    with torch.no_grad():
        out = module(torch.as_tensor(example[:1]))
    n = len(out) if isinstance(out, (tuple, list)) else 1
    if n not in (1, 2):
        raise ExportError(f"{type(module).__name__} returns {n} outputs; an image model returns (score,) or (score, heatmap)")
    return list(OUTPUTS[:n])


def _merge(records: list[ParityRecord]) -> ParityRecord:
    first = records[0]
    diffs = {k: max(r.max_abs_diff[k] for r in records) for k in first.max_abs_diff}
    return first.model_copy(update={
        "n_inputs": sum(r.n_inputs for r in records),
        "max_abs_diff": diffs,
        "decisions_changed": sum(r.decisions_changed for r in records),
    })


def export_image_onnx(
    module: torch.nn.Module,
    spec: ImagePreprocessingSpec,
    golden: list[np.ndarray],
    path: Path,
    threshold: float,
    tolerance: Tolerance = EXPORT_TOLERANCE,
) -> list[tuple[ParityRecord, dict[str, np.ndarray]]]:
    """Export an image model to ``path`` and check parity on every golden group; one (record, outputs) per group.

    The one export path of every image architecture (``build_image_bundle`` writes its
    result into a bundle; the experiments call it directly). A spec that follows each
    image's size exports dynamic height and width in steps of the spec's ``multiple``, so
    the groups of several sizes all go through the one graph. Scores are higher-is-anomalous
    (the image-model contract in ``factoryedge.training.image_common``).
    """
    if not golden:
        raise ExportError("exporting an image model needs golden inputs; make them with golden_groups(spec, images)")
    module = module.eval()
    names = _output_names(module, golden[0])
    multiple = spec.multiple if is_variable_size(spec) else None
    if multiple is not None and multiple < 2:
        multiple = None  # a size-1 "multiple" would let every size through; export at fixed size instead
        if len({g.shape[1:] for g in golden}) > 1:
            raise ExportError("golden groups of several sizes need a spec with multiple >= 2 (the model's stride)")
    export_onnx(module, golden[0], path, output_names=names, size_multiple=multiple)
    return [check_parity(module, path, g, threshold, tolerance) for g in golden]


def build_image_bundle(
    trained: TrainedImageModel,
    out_dir: str | Path,
    name: str,
    golden: list[np.ndarray],
    version: str = "1.0.0",
    description: str = "",
    tolerance: Tolerance = EXPORT_TOLERANCE,
    metrics: dict | None = None,
    reports: dict[str, bytes | Path] | None = None,
    data_fingerprint: str = "",
    split: dict | None = None,
) -> Bundle:
    """Export, check parity on every golden group, and write the bundle; nothing is written if parity fails.

    ``golden`` comes from ``golden_groups``. ``tolerance`` bounds the absolute difference
    between torch and ONNX Runtime on any output: an entry of ``factoryedge.parity.TOLERANCES``
    (models that compute distances to a memory bank need ``export_memory_bank``; the
    architecture table in ``factoryedge.training.image_models`` names each one's).
    ``metrics`` (evaluation figures) go into the manifest's provenance; ``reports`` (plots,
    tables) under ``reports/``;
    ``data_fingerprint`` (``files_sha256`` of the training images) and ``split`` (counts per
    part of the data) say what the model learned from.
    """
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        checks = export_image_onnx(trained.module, trained.spec, golden, onnx_path, trained.threshold, tolerance)
        parity = _merge([record for record, _ in checks])
        inputs, outputs = tensor_specs(onnx_path)
        arrays: dict[str, np.ndarray] = {}
        for i, (g, (_, reference)) in enumerate(zip(golden, checks)):
            prefix = "" if i == 0 else f"group{i}_"
            arrays[f"{prefix}input"] = g
            arrays.update({f"{prefix}output_{k}": v for k, v in reference.items()})
        golden_buf = io.BytesIO()
        np.savez_compressed(golden_buf, **arrays)

        manifest = Manifest(
            name=name,
            version=version,
            kind="image",
            description=description,
            model=ModelInfo(architecture=trained.architecture, opset=OPSET, inputs=inputs, outputs=outputs,
                            parameters=trained.parameters),
            preprocessing=trained.spec,
            score=ScoreInfo(
                definition=trained.score_definition,
                threshold=float(trained.threshold),
                rule=trained.rule,
                calibration=trained.calibration,
                false_reject=_false_reject(trained),
                detail_output="heatmap" if "heatmap" in checks[0][1] else None,
            ),
            parity=parity,
            provenance=Provenance(
                created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                factoryedge_version=factoryedge.__version__,
                framework=f"torch {torch.__version__}",
                data_fingerprint=data_fingerprint,
                split=split or {},
                training=trained.info,
                metrics=metrics or {},
            ),
        )
        files: dict[str, Path | bytes] = {"model.onnx": onnx_path, "golden.npz": golden_buf.getvalue()}
        for fname, data in {**trained.curves, **(reports or {})}.items():
            files[f"reports/{Path(fname).name}"] = data
        write_bundle(out_dir, manifest, files)
    return load_bundle(out_dir)


def _false_reject(trained: TrainedImageModel):
    """The expected false-reject rate at the threshold, on the held-out good scores it came from.

    None for a supervised classifier (``rule`` None): its good calibration scores are not
    what its operating point was chosen on.
    """
    if trained.rule is None or not len(trained.calibration_scores):
        return None
    return false_reject_estimate(trained.calibration_scores, ScoreRule(float(trained.threshold)),
                                 source=trained.calibration_source)
