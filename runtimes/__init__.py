"""The device runtime: sources, backends, scorer, sinks. Never imports torch or exporters."""
