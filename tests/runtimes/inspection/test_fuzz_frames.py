"""Frames of any size, dtype and channel count through the device's image model and sorter.

A camera driver, a misconfigured pipeline or a corrupt file can hand the station anything.
``ImageModel.score`` must return a finite score for a usable image and raise DataError (the
sorter's ``corrupt_frame``, a fail-safe decision) for anything else: never another exception,
never a crash of the scoring worker. ``make fuzz`` runs it with 10,000 examples.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from factoryedge.errors import DataError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.runtimes.inspection.image_model import ImageModel
from tests.support.fuzz import examples
from tests.support.image_bundle import make_image_bundle

pytestmark = pytest.mark.fuzz

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.float32, np.float64, np.bool_])
SHAPES = st.one_of(
    st.tuples(st.integers(0, 96)),  # 1-D
    st.tuples(st.integers(0, 96), st.integers(0, 96)),  # grey
    st.tuples(st.integers(0, 96), st.integers(0, 96), st.integers(0, 5)),  # 0..5 channels
    st.tuples(st.integers(0, 4), st.integers(0, 40), st.integers(0, 40), st.integers(1, 3)),  # a batch by mistake
)
FRAMES = st.one_of(
    SHAPES.flatmap(lambda shape: DTYPES.flatmap(lambda dt: arrays(dt, shape))),
    st.sampled_from([None, 3, "frame", b"\x89PNG", [[1, 2], [3, 4]]]),  # not arrays at all
)


@pytest.fixture(scope="module", params=["fixed", "native-tiles"])
def model(request, tmp_path_factory):
    spec = None
    if request.param == "native-tiles":  # the frame's own size, cut into tiles: shape matters more here
        spec = ImagePreprocessingSpec(resize="none", tile=32, multiple=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    kw = {"spec": spec} if spec is not None else {}
    bundle = make_image_bundle(tmp_path_factory.mktemp(request.param) / "b", **kw)
    with ImageModel.load(bundle.path, backend="onnxruntime") as m:
        yield m


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
@given(frame=FRAMES)
def test_any_frame_is_scored_or_refused_with_a_data_error(model, frame):
    try:
        result = model.score(frame)
    except DataError as e:
        assert str(e) and "\n" not in str(e)  # one line a log and a decision's detail can carry
        return
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.size > 0
    assert math.isfinite(result.score) and isinstance(result.is_anomalous, bool)
