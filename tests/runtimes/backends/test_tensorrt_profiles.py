"""TensorRT optimisation profiles, decided without TensorRT: which shapes an engine is built for."""
import pytest

from factoryedge.errors import BundleError
from factoryedge.runtimes.backends.tensorrt_build import _profile_shapes


def test_dynamic_batch_spans_one_to_max():
    assert _profile_shapes("input", (-1, 64), 8, 64) == ((1, 64), (8, 64), (64, 64))


def test_dla_profile_is_fixed_at_the_batch():
    # build_engine passes max_batch = batch for DLA
    assert _profile_shapes("input", (-1, 64), 8, 8, static=True) == ((8, 64), (8, 64), (8, 64))


def test_whole_frame_image_model_is_built_for_the_golden_frame_size():
    shapes = _profile_shapes("input", (-1, 3, -1, -1), 1, 4, item_shape=(3, 320, 448))
    assert shapes == ((1, 3, 320, 448), (1, 3, 320, 448), (4, 3, 320, 448))


def test_dynamic_feature_axes_without_golden_shape_are_refused():
    with pytest.raises(BundleError, match="only the batch axis"):
        _profile_shapes("input", (-1, 3, -1, -1), 1, 4)
    with pytest.raises(BundleError, match="does not fit"):
        _profile_shapes("input", (-1, 3, -1, -1), 1, 4, item_shape=(1, 320, 448))
