# The two set-up commands of the README. Each creates .venv on first use and installs the
# project with everything its tests need; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: fuzz demo test bench clean

$(VENV)/.installed: setup.py constraints/ci.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/ci.txt -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/factoryedge demo

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# Every parser's property test (fe1, CSV, MQTT commands, profile YAML, manifest JSON, image frames) with
# 10,000 examples each; the suite runs a modest number of them.
fuzz: $(VENV)/.installed
	FACTORYEDGE_FUZZ_EXAMPLES=$${FACTORYEDGE_FUZZ_EXAMPLES:-10000} $(PY) -m pytest -m fuzz -q --durations=0 -p no:cacheprovider

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-run evaluation
