# The README's commands. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PLOTS_STAMP := $(VENV)/.installed-plots

.PHONY: run demo test bench lint format golden clean schedules-gallery

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@ $(STAMP)

$(PLOTS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[plots]"
	touch $@ $(STAMP)

## make run: the default study: WSD branches vs cosine runs vs schedule-free on the char LM.
run: $(PLOTS_STAMP)
	$(PY) -m experiments.study

## make demo: every registered optimizer on toy problems over a small lr grid (~1 min).
demo: $(STAMP)
	$(PY) -m experiments.demo

## make test: the whole suite on CPU with 8 simulated devices.
test: $(DEV_STAMP)
	$(PY) -m pytest -n 2 -q tests --doctest-modules optlib schedules

## make bench: step time against optax and the memory floor; writes a table to stdout.
bench: $(STAMP)
	$(PY) -m experiments.benchmarks.step_time

## make schedules-gallery: plot every schedule family into docs/schedules_gallery.png.
schedules-gallery: $(PLOTS_STAMP)
	$(PY) -m schedules.gallery --out docs/schedules_gallery.png

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck -x tpu/*.sh

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
