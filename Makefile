# The README's commands. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PLOTS_STAMP := $(VENV)/.installed-plots
# make golden: its own venv with torch and the authors' packages (pyproject's `reference` extra).
GOLDEN_VENV := .venv-golden
GOLDEN_PY := $(GOLDEN_VENV)/bin/python
GOLDEN_STAMP := $(GOLDEN_VENV)/.installed
GOLDEN_TF_VENV := .venv-golden-tf
GOLDEN_TF_STAMP := $(GOLDEN_TF_VENV)/.installed
GOLDEN_SOURCES ?=
GOLDEN_FLAGS ?=
GOLDEN_TF ?=

.PHONY: run demo test bench lint format golden clean schedules-gallery optax-harness

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

## make test: the quick tier (not the tests marked slow in tests/conftest.py);
## make test FULL=1: everything, as CI runs it (.ci/run).
test: $(DEV_STAMP)
	$(PY) -m pytest -n 2 -q tests --doctest-modules optlib schedules $(if $(FULL),,-m "not slow")

## make bench: step time against optax and the memory floor; writes a table to stdout.
bench: $(STAMP)
	$(PY) -m experiments.benchmarks.step_time

## make optax-harness: optax's own AliasTest and ScheduleAsLearningRateTest on our optimizers.
optax-harness: $(DEV_STAMP)
	$(PY) tools/optax_harness.py -n 2

## make schedules-gallery: plot every schedule family into docs/schedules_gallery.png.
schedules-gallery: $(PLOTS_STAMP)
	$(PY) -m schedules.gallery --out docs/schedules_gallery.png

# Only the extra's own requirements: the scripts never import optlib, so jax and the rest of
# the main dependencies stay out of this venv.
EXTRA_REQUIREMENTS = -c 'import sys, tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"][sys.argv[1]]))'

$(GOLDEN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(GOLDEN_VENV)
	$(GOLDEN_PY) -m pip install --quiet --upgrade pip
	$(GOLDEN_PY) $(EXTRA_REQUIREMENTS) reference > $(GOLDEN_VENV)/reference.txt
	$(GOLDEN_PY) -m pip install --quiet -r $(GOLDEN_VENV)/reference.txt
	touch $@

$(GOLDEN_TF_STAMP): pyproject.toml
	$(PYTHON) -m venv $(GOLDEN_TF_VENV)
	$(GOLDEN_TF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GOLDEN_TF_VENV)/bin/python $(EXTRA_REQUIREMENTS) reference-tf > $(GOLDEN_TF_VENV)/reference.txt
	$(GOLDEN_TF_VENV)/bin/python -m pip install --quiet -r $(GOLDEN_TF_VENV)/reference.txt
	touch $@

## make golden: rerun the authors' code that made tests/testdata/*.json and compare
##   (~3 CPU-minutes; see tools/golden/README.md). Sources not on PyPI are checkouts:
##   GOLDEN_SOURCES="tvlars=DIR prospect=DIR adaptive_scheduling=DIR". GOLDEN_TF=1 also runs
##   TF-Addons' LAMB (its own venv). GOLDEN_FLAGS=--write overwrites tests/testdata.
golden: $(GOLDEN_STAMP) $(if $(GOLDEN_TF),$(GOLDEN_TF_STAMP))
	@tmp=$$(mktemp -d); \
	$(GOLDEN_PY) tools/golden/regenerate.py --out $$tmp $(addprefix --source ,$(GOLDEN_SOURCES)) && \
	$(if $(GOLDEN_TF),$(GOLDEN_TF_VENV)/bin/python tools/golden/lamb_tf_addons.py --out $$tmp &&) \
	$(GOLDEN_PY) tools/golden/compare.py $$tmp tests/testdata $(GOLDEN_FLAGS); \
	status=$$?; rm -rf $$tmp; exit $$status

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck -x tpu/*.sh

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(GOLDEN_VENV) $(GOLDEN_TF_VENV) .pytest_cache build *.egg-info
