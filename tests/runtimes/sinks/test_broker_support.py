"""The test broker's own rule: a missing binary skips, except under CI=true, where it fails."""
from __future__ import annotations

import pytest

from tests.support.broker import require_binary


def test_missing_binary_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_binary("factoryedge-no-such-broker")


def test_missing_binary_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must provide it"):
        require_binary("factoryedge-no-such-broker")
