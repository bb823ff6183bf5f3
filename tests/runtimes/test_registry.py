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


# set in each plugin's constructor, so not visible on the class
INSTANCE_ATTRIBUTES = ("sample_rate", "channels", "identity", "topics", "uri", "on_error")


def test_every_builtin_plugin_meets_its_contract():
    from factoryedge.runtimes import contracts

    protocol = {"source": contracts.SampleSource, "camera": contracts.Camera, "trigger": contracts.TriggerSource,
                "sink": contracts.Sink}
    for kind, table in registry.BUILTIN.items():
        for scheme in table:
            cls = registry.resolve(kind, scheme if kind == "trigger" and scheme == "mqtt" else f"{scheme}://x")
            assert callable(getattr(cls, "from_uri", None)) and callable(getattr(cls, "validate", None)), (kind, scheme)
            proto = protocol[kind]
            wanted = {n for n in vars(proto) if not n.startswith("_")} | set(proto.__annotations__)
            missing = [name for name in sorted(wanted) if not hasattr(cls, name)
                       and name not in INSTANCE_ATTRIBUTES]
            assert not missing, (kind, scheme, missing)


def test_check_names_the_key_path_of_a_bad_option():
    with pytest.raises(ConfigError, match=r"^sensor\.uri: option baud='fast' must be an integer"):
        registry.check("source", "serial:///dev/ttyUSB0?baud=fast", at="sensor.uri", options_at="sensor.options")
    with pytest.raises(ConfigError, match=r"^sensor\.options\.baud: option baud='fast'"):
        registry.check("source", "serial:///dev/ttyUSB0", {"baud": "fast"}, at="sensor.uri", options_at="sensor.options")
    with pytest.raises(ConfigError, match=r"^inspection\.trigger: option period_ms='0' must be a number > 0"):
        registry.check("trigger", "periodic://?period_ms=0", at="inspection.trigger")
    registry.check("trigger", "mqtt")  # the runtime's own connection: nothing to open, nothing to check
