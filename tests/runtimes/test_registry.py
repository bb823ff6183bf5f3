import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes import registry


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        registry.open_source("modbus://plc:502")
    msg = str(err.value)
    assert "unknown source scheme 'modbus'" in msg and "serial" in msg and "replay" in msg


def test_not_a_uri():
    with pytest.raises(ConfigError, match="is not a URI"):
        registry.resolve("sink", "/dev/ttyUSB0")


def test_builtin_tables_point_at_importable_classes():
    for kind in ("source", "sink"):
        for scheme in registry.known(kind):
            cls = registry.resolve(kind, f"{scheme}://x")
            assert hasattr(cls, "from_uri"), (kind, scheme)
