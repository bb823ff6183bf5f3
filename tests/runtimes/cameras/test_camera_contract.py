"""Every camera class in the registry meets ``contracts.Camera`` and checks options without opening anything."""
from __future__ import annotations

import sys
from collections.abc import Mapping

import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes import contracts, registry
from factoryedge.runtimes.options import OptionError

# one URI per scheme naming hardware or files that do not exist: validating must not look
URIS = {
    "csi": "csi://0",
    "v4l2": "v4l2:///dev/video-absent",
    "rtsp": "rtsp://127.0.0.1:9/absent",
    "file": "file:///absent/parts.mp4",
    "dir": "dir:///absent/shots",
}


def test_every_builtin_scheme_has_an_example_here():
    assert set(URIS) == set(registry.BUILTIN["camera"])


@pytest.mark.parametrize("scheme", sorted(URIS))
def test_camera_class_meets_the_contract(scheme):
    cls = registry.resolve("camera", URIS[scheme])
    assert cls.__name__ == registry.BUILTIN["camera"][scheme].rpartition(":")[2]
    assert isinstance(cls.OPTIONS, Mapping) and cls.OPTIONS and all(callable(c) for c in cls.OPTIONS.values())
    assert callable(cls.from_uri) and callable(cls.validate)
    cam = cls.from_uri(URIS[scheme])
    assert isinstance(cam, contracts.Camera)
    assert cam.uri == URIS[scheme] and not cam.is_open
    assert cam.stats["frames"] == 0 and cam.stats["reconnects"] == 0
    cam.close()  # closing a camera never opened is harmless
    assert list(cam.frames()) == []


@pytest.mark.parametrize("scheme", sorted(URIS))
def test_validate_rejects_a_bad_option_without_opening_anything(scheme, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # opening would need OpenCV; validating must not
    cls = registry.resolve("camera", URIS[scheme])
    cls.validate(URIS[scheme])
    with pytest.raises(OptionError, match=r"unknown option 'no_such_option'") as err:
        cls.validate(URIS[scheme], no_such_option=1)
    assert err.value.key == "no_such_option"
    with pytest.raises(OptionError, match=r"reconnect_min='soon' must be a number") as err:
        cls.validate(URIS[scheme], reconnect_min="soon")
    assert err.value.key == "reconnect_min"
    # as `factoryedge run --check` reports it: the profile key path of the bad option
    with pytest.raises(ConfigError, match=r"^inspection\.camera_options\.reconnect_min: "):
        registry.check("camera", URIS[scheme], {"reconnect_min": "soon"}, at="inspection.camera",
                       options_at="inspection.camera_options")


@pytest.mark.parametrize("scheme", sorted(URIS))
def test_a_class_refuses_another_schemes_uri(scheme):
    cls = registry.resolve("camera", URIS[scheme])
    other = URIS["dir" if scheme != "dir" else "file"]
    with pytest.raises(ConfigError, match=rf"is not a camera URI for {cls.__name__}; use {scheme}://"):
        cls(other)
