# Quick start: `make demo` runs the main job on CPU defaults; `make test` runs the whole test suite and
# `make test-fast` the fast lane (every package, without the tests marked slow or slurm); `make lab` opens the
# notebooks in JupyterLab. Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint lab smoke figures clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-ci.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-ci.txt
	$(PY) -m pip install -q -e '.[test,notebooks]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m theory.sample_efficiency

# The suite runs on every core, at most PYTEST_WORKERS (pytest-xdist); a test file stays on one worker, so its
# module fixtures (the Slurm reference sweep) are built once, and session fixtures (fixture datasets, the
# notebooks' smoke cache) once per worker that needs them.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL := -n auto --maxprocesses $(PYTEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow and not slurm"

lint: $(STAMP)
	$(PY) -m ruff check vapt theory tests notebooks

# JupyterLab in the project's environment, opened on notebooks/ (extra options: make lab LAB_ARGS="--no-browser").
LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m jupyterlab --notebook-dir=notebooks $(LAB_ARGS)

# Every paper experiment at toy scale on CPU, cached by code version (the stand-ins `make figures` may use).
smoke: $(STAMP)
	$(PY) -m vapt smoke

# Every figure from the runs under runs/, runs/bench.csv and the theory run in figures/; never trains. What those
# cannot support is drawn from the stand-ins of `make smoke` (labelled as smoke) when they exist, else skipped.
figures: $(STAMP)
	$(PY) -m vapt figures --runs runs --out figures --theory figures --bench runs/bench.csv --smoke

clean:
	rm -rf $(VENV) .pytest_cache
