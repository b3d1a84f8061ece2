# `make test` and `make study` set up everything on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test study bench mutate setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/benchmarks

study: $(STAMP)
	$(PY) -m svdgrad sweep --quick

# Regenerates reports/performance/; refused if it holds results: `make bench BENCH_ARGS=--overwrite`.
# Then rebuilds the README's which-method block from the new numbers (a test checks that the committed block
# matches the committed reports; a bench re-run without this step failed CI once).
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m svdgrad bench $(BENCH_ARGS)
	$(PY) studies/which_method.py

# Mutation test of the numerical core and the long jobs -> reports/mutation/REPORT.md (a standing habit: run it
# after changing svdgrad/; about 50 min on 2 cores for both suites; --suite core|jobs runs one).
mutate: $(STAMP)
	$(PY) tools/mutate.py

clean:
	rm -rf $(VENV) .hypothesis
