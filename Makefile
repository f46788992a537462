# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
MC := $(VENV)/bin/mathcorpus
DEMO_OUT ?= demo_out

.PHONY: venv dev demo test bench clean sample

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.base

dev: $(VENV)/.dev

## demo: create the venv, install, and run the main job on the bundled sample
demo: $(VENV)/.base
	$(MC) pipeline run demo/pipeline.yaml --workdir $(DEMO_OUT)

## test: install the dev dependencies and run the test suite
test: $(VENV)/.dev
	$(PY) -m pytest -q -p no:cacheprovider

## bench: every speed/memory target with its peer, as recorded in BENCHMARKS.md (long)
bench: $(VENV)/.dev
	$(PY) bench/stats.py
	$(PY) bench/decontam.py
	$(PY) bench/fuzzy.py
	$(PY) bench/recall.py
	$(PY) bench/dedup.py
	$(PY) bench/export.py
	$(PY) bench/synth.py answers --workers 2
	$(PY) bench/faults.py
	$(PY) bench/extract_speed.py

sample:
	$(PY) demo/build_sample.py
	$(PY) demo/build_warc.py

clean:
	rm -rf $(DEMO_OUT) bench/out tests/artifacts
