"""The manifest of a model bundle: everything the device needs, and nothing it must guess.

Plain JSON with a ``schema_version``. A reader refuses versions it does not know rather
than guessing what new fields mean.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.features.vibration import VibrationFeatureSpec, VibrationFrameSpec

SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TensorSpec(_Strict):
    """One model input or output. A string dimension (e.g. "batch") is dynamic."""

    name: str
    shape: list[int | str]
    dtype: Literal["float32", "float16", "int64", "uint8"] = "float32"


class ModelInfo(_Strict):
    architecture: str
    file: str = "model.onnx"
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: dict = Field(default_factory=dict, description="architecture hyper-parameters")


class ScoreStats(_Strict):
    """Distribution of anomaly scores on held-out normal windows."""

    n: int
    mean: float
    std: float
    median: float
    q90: float
    q99: float
    max: float


class ThresholdRule(_Strict):
    """threshold = median + margin * (quantile(q) - median) of held-out normal scores."""

    quantile: float = Field(0.99, gt=0.5, lt=1.0)
    margin: float = Field(3.0, ge=1.0)


class FalseRejectBudget(_Strict):
    """threshold: at most floor(max_false_reject * n) of n held-out good scores are anomalous.

    The rule of an on-line sorter judged at one operating point: reject at most this share
    of good parts. The threshold lies midway between the last held-out good score allowed to
    be rejected and the first that must pass (``factoryedge.scoring.budget_threshold``).
    """

    max_false_reject: float = Field(gt=0.0, lt=1.0, description="largest share of good parts rejected, e.g. 0.01")


class FalseRejectEstimate(_Strict):
    """How often the threshold rejects good parts, estimated on held-out good scores.

    ``expected`` is ``n_exceeding / n``; ``upper_bound`` is the one-sided Clopper-Pearson
    bound at ``confidence``: with few good images it stays well above ``expected`` (0 of 100
    exceeding still only says the rate is below about 3 %).
    """

    n: int = Field(ge=1, description="held-out good scores the estimate rests on")
    n_exceeding: int = Field(ge=0, description="how many of them the threshold rejects")
    expected: float = Field(ge=0.0, le=1.0)
    upper_bound: float = Field(ge=0.0, le=1.0)
    confidence: float = 0.95
    source: str = Field("", description="which good images: fold-held-out training images, a held-out split, a folder")


class ScoreInfo(_Strict):
    output: str = Field("score", description="the model output that holds the anomaly score")
    definition: str
    higher_is_anomalous: bool = True
    threshold: float
    rule: ThresholdRule | FalseRejectBudget | None = Field(
        description="how the threshold came from held-out normal scores; None for a supervised "
        "classifier whose operating point was chosen on labelled data (see provenance.training)"
    )
    calibration: ScoreStats
    false_reject: FalseRejectEstimate | None = Field(
        None, description="expected false-reject rate at the threshold (image bundles; absent in older bundles)")
    detail_output: str | None = Field(None, description="per-feature or per-step residuals, for interpretation")
    detail_names: list[str] = Field(default_factory=list)


class ParityRecord(_Strict):
    """How closely the exported ONNX model reproduces the training framework's outputs."""

    reference: str
    runtime: str
    n_inputs: int
    tolerance: float
    max_abs_diff: dict[str, float]
    decisions_changed: int = 0


class BaselineInfo(_Strict):
    """A shallow baseline shipped for side-by-side evaluation on the same windows.

    It has its own preprocessing (classic features), so a deep model on raw frames is still
    compared with a feature-based baseline. Its output is negated to make higher anomalous.
    """

    architecture: str
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    score_output: str
    negate: bool = True
    threshold: float
    calibration: ScoreStats
    preprocessing: VibrationFeatureSpec
    parameters: dict = Field(default_factory=dict)


class DataRecord(_Strict):
    source: str
    label: str
    sample_rate: float
    n_samples: int
    sha256: str
    split: str


class Recalibration(_Strict):
    """One ``factoryedge calibrate`` run: the threshold set again on a line's own good parts."""

    created_utc: str
    source: str = Field(description="the folder of good images")
    data_fingerprint: str = Field(description="files_sha256 of the images scored")
    n_images: int
    previous_threshold: float
    previous_rule: ThresholdRule | FalseRejectBudget | None
    threshold: float
    rule: ThresholdRule | FalseRejectBudget


class Provenance(_Strict):
    created_utc: str
    factoryedge_version: str
    framework: str
    data: list[DataRecord] = Field(default_factory=list)
    data_fingerprint: str = ""
    split: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    metrics: dict = Field(default_factory=dict)
    recalibrations: list[Recalibration] = Field(default_factory=list, description="oldest first")


Preprocessing = Annotated[
    VibrationFeatureSpec | VibrationFrameSpec | ImagePreprocessingSpec, Field(discriminator="type")
]


class EngineParity(_Strict):
    """How closely a TensorRT engine reproduces the bundle's golden ONNX Runtime outputs.

    An output passes where ``|engine - reference| <= atol + tolerance * |reference|`` for every
    golden input; ``decisions_changed`` counts golden inputs whose normal/anomalous decision
    at the bundle's threshold differs from the reference.
    """

    n_inputs: int
    tolerance: float = Field(description="relative tolerance")
    atol: float = Field(description="absolute tolerance")
    max_abs_diff: dict[str, float]
    decisions_changed: int = 0


class EngineRecord(_Strict):
    """A TensorRT plan built on a device, valid only for the exact TensorRT version and GPU.

    ``file`` is relative to the bundle (or to the engine cache when the bundle is read-only):
    ``engines/<key>.plan``, the key naming the ONNX sha256, TensorRT version, compute
    capability, precision and DLA core the plan was built for.
    """

    file: str = Field(pattern=r"^engines/[A-Za-z0-9_.-]+\.plan$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tensorrt_version: str
    compute_capability: str = Field(pattern=r"^[0-9]+\.[0-9]+$", description='e.g. "8.7" for Jetson Orin')
    device_name: str
    precision: Literal["fp32", "fp16", "int8"]
    dla_core: int | None = Field(None, ge=0)
    max_batch: int = Field(ge=1)
    built_utc: str
    build_seconds: float = Field(ge=0)
    parity: EngineParity
    forced: bool = Field(False, description="parity failed and the user forced the engine into use")


class Manifest(_Strict):
    """``manifest.json``: everything the device needs to run a bundle, and nothing it must guess.

    Model name, version and kind; the ONNX model's inputs and outputs; the full preprocessing
    recipe (``preprocessing``: window, hop, sample rate and features, or image size, colour,
    tiles and normalisation); the score definition, direction and calibrated threshold
    (``score``); training provenance (data fingerprints, split, metrics); parity records; and
    every artefact's sha256, which ``bundle.load_bundle`` verifies before anything runs.
    Unknown keys are refused, so a typo in a hand-edited manifest is an error, not a default.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str
    kind: Literal["vibration", "image"]
    description: str = ""
    model: ModelInfo
    preprocessing: Preprocessing
    score: ScoreInfo
    parity: ParityRecord | None = None
    baseline: BaselineInfo | None = None
    provenance: Provenance
    golden: str | None = Field("golden.npz", description="golden inputs and reference outputs")
    artefacts: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")
    engines: list[EngineRecord] = Field(default_factory=list, description="TensorRT plans built on devices")
