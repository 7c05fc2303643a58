# scalelab: `make demo` and `make test` do all the set-up themselves.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
STAMP  := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-slow demo bench clean

# torch first, pinned, so that nothing later pulls another build (see constraints.txt).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev,mlflow,tensorboard]'
	touch $(STAMP)

install: $(STAMP)

# Two test processes, one torch thread each (tests/conftest.py), whole files per process so that a
# file's module-scoped fixtures are built once: the suite's wall time on 2 cores about halves.
test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The whole pipeline on the embedded testbed, ending in demo/report.html: 11 min on 2 idle cores
# (docs/LOG.md, 2026-12-03); `scalelab demo --quick` is the 73-second smoke test.
demo: $(STAMP)
	$(VENV)/bin/scalelab demo

bench: $(STAMP)
	$(PIP) -e '.[dev,bench]'
	$(PY) benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
