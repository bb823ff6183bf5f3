"""Property tests for the files a user hands the device: profile YAML and a bundle's manifest JSON.

Whatever they hold, loading gives a profile or a bundle, or the project's clear error
(ConfigError, BundleError): never another exception.
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factoryedge.bundle import load_bundle
from factoryedge.errors import BundleError, ConfigError
from factoryedge.runtimes.profile import load_profile
from tests.support.fuzz import examples
from tests.support.tiny_bundle import tiny_bundle

pytestmark = pytest.mark.fuzz

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                    max_leaves=12)
SECTIONS = ["identity", "sensor", "model", "mqtt", "scoring", "logging", "kind", "inspection", "camera", "trigger"]
PROFILE = Path(__file__).resolve().parents[1] / "firmware-config" / "profiles" / "condition-monitoring.yaml"
SHIPPED = yaml.safe_load(PROFILE.read_text())  # parsed once: the pure-Python parser is most of an example's time


def _leaves(obj, path=()):
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _replaced(obj, path, value):
    if not path:
        return value
    obj[path[0]] = _replaced(obj[path[0]], path[1:], value)
    return obj


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1")),
                      st.dictionaries(st.sampled_from(SECTIONS), JSON, max_size=6).map(yaml.safe_dump)))
def test_any_profile_text_loads_or_is_a_config_error(work, text):
    p = work / "profile.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_profile(p)
    except ConfigError:
        pass


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_shipped_profile_with_any_value_changed_loads_or_is_a_config_error(work, data):
    raw = copy.deepcopy(SHIPPED)
    path = data.draw(st.sampled_from(sorted(_leaves(raw), key=str)))
    p = work / "edited.yaml"
    p.write_text(yaml.safe_dump(_replaced(raw, path, data.draw(JSON))))
    try:
        load_profile(p)
    except ConfigError:
        pass


@pytest.fixture(scope="module")
def bundle_dir(work):
    return tiny_bundle(work / "bundle").path


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_manifest_with_any_value_changed_loads_or_is_a_bundle_error(bundle_dir, work, data):
    target = work / "edited-bundle"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(bundle_dir, target)
    raw = json.loads((target / "manifest.json").read_text())
    path = data.draw(st.sampled_from(sorted(_leaves(raw), key=str)))
    edited = _replaced(raw, path, data.draw(JSON))
    text = json.dumps(edited, allow_nan=True) if data.draw(st.booleans()) else data.draw(st.text(max_size=200))
    (target / "manifest.json").write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_bundle(target)
    except BundleError:
        pass
