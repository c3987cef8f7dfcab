# randsmooth_nb: two commands.
#   make test       set up .venv (first time), check notebooks are clean and exported, run all tests
#   make reproduce  set up .venv (first time), regenerate the paper's tables and figures in paper_figures/
#                   (CIFAR-10/100 are downloaded into the cache when no DATA_DIR is given and they are not there;
#                   REPRO_ARGS=--no-download stops instead; non-zero exit when a notebook failed or nothing ran)
#   make docs       static HTML site of every notebook in _docs/ (offline)
#   make plan       what PRESET will cost per notebook (models to train or cached, passes, ETA here); runs nothing
#   make nbs-run    execute the library notebooks in place (a few minutes on a CPU), so they carry their outputs
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PRESET ?= quick
DATA_DIR ?=
REPRO_ARGS ?=

.PHONY: install test reproduce plan docs readme readme-check sync-check clean-check nbtest pytest bench nbs-run outputs-check

$(VENV)/.installed: settings.ini setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]"
	# torchattacks 3.5.1 pins requests~=2.25.1; it is only a test oracle, so keep our environment.
	$(PY) -m pip install -q --no-deps "torchattacks==3.5.1"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name python3 >/dev/null
	touch $@

install: $(VENV)/.installed

# Fails when a notebook in nbs/ is not clean (nbdev_clean changes it).
clean-check: install
	@md5sum nbs/*.ipynb > .clean.before
	@$(BIN)/nbdev_clean
	@md5sum nbs/*.ipynb > .clean.after
	@if ! cmp -s .clean.before .clean.after; then diff .clean.before .clean.after; rm -f .clean.*; \
	  echo "FAIL: notebooks above were not clean; nbdev_clean has now cleaned them: commit the result."; exit 1; fi
	@rm -f .clean.*

# Fails when randsmooth_nb/ differs from what the notebooks export.
sync-check: install
	@find randsmooth_nb -name '*.py' | sort | xargs md5sum > .sync.before
	@$(BIN)/nbdev_export
	@find randsmooth_nb -name '*.py' | sort | xargs md5sum > .sync.after
	@if ! cmp -s .sync.before .sync.after; then diff .sync.before .sync.after; rm -f .sync.*; \
	  echo "FAIL: the package was out of sync with nbs/; nbdev_export has now updated it: commit the result."; exit 1; fi
	@rm -f .sync.*

nbtest: install
	$(BIN)/nbdev_test --n_workers 2

pytest: install
	$(BIN)/pytest -q tests

# README.md is generated from nbs/index.ipynb (tools/build_readme.py): fails when they drift.
readme-check: install
	$(PY) tools/build_readme.py --check

# Execute nbs/index.ipynb (seconds) and regenerate README.md from it.
readme: install
	$(PY) tools/build_readme.py
	$(BIN)/nbdev_clean --fname nbs/index.ipynb

# Execute every library notebook in place (tools/run_nbs.py: seeded, #| slow/gpu/notest cells skipped), then
# clean them and regenerate README.md from the executed home page.
nbs-run: install
	$(PY) tools/run_nbs.py
	$(BIN)/nbdev_clean
	$(PY) tools/build_readme.py --no-run

# Fails when a committed library notebook lacks the outputs a reader should see (nothing is executed).
outputs-check: install
	$(PY) tools/run_nbs.py --check

# Static HTML site in _docs/ (Sphinx + MyST-NB, offline, local MathJax): every notebook with its committed
# outputs (none is executed), the API reference of every exported name, and the results page.
docs: install
	$(PY) docs/build.py

test: clean-check sync-check readme-check outputs-check nbtest pytest

reproduce: install
	$(BIN)/randsmooth-reproduce --preset $(PRESET) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(REPRO_ARGS)

# What PRESET will cost, per notebook (models to train or cached, passes, ETA from a short calibration); runs nothing.
plan: install
	$(BIN)/randsmooth-reproduce --preset $(PRESET) --plan $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(REPRO_ARGS)

bench: install
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/eot_attack.py
	$(PY) benchmarks/mc_predict.py
	$(PY) benchmarks/apgd.py
	$(PY) benchmarks/min_norm.py
	$(PY) benchmarks/eot_grouping.py
