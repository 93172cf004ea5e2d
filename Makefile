# Two commands do all the set-up (see README.md):
#   make pipeline   create .venv and run the whole DVC pipeline on the default data set
#   make test       create .venv if needed and run the test suite (make test-unit: the unit tests alone)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Stages are run by DVC as `python stages/<name>.py`: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

# `dvc plots show` fills this page (.dvc/config); Vega is inlined from npm so it renders offline.
PLOTS_TEMPLATE := build/plots-template.html
REV ?= main

.PHONY: venv pipeline params test test-unit test-all test-readme lint-workflows report plots-template lock clean-venv

venv: $(VENV)/.installed $(PLOTS_TEMPLATE)

# Torch goes first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps torch==2.13.0
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

$(PLOTS_TEMPLATE): scripts/offline_plots_template.py
	$(PYTHON) scripts/offline_plots_template.py $@

# Rebuild it, e.g. after installing npm (without npm the page falls back to a CDN).
plots-template:
	$(PYTHON) scripts/offline_plots_template.py $(PLOTS_TEMPLATE)

pipeline: venv
	$(BIN)/dvc repro

# params.yaml composed from conf/ as `dvc exp run -S` composes it, for a plain `dvc repro`:
# `make params SET="profile=ml-1m train.seed=1"` (docs/data.md, "Profiles").
params: venv
	$(BIN)/python -m movielens_pipeline.profiles $(SET)

# Two worker processes (pytest-xdist), one CPU each, tests grouped as tests/conftest.py says: the 2-core machines
# CI runs on.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test: venv
	$(PYTEST)

# The library's unit tests, under a minute: no DVC runs, no temp git repos.
test-unit: venv
	$(PYTEST) tests/unit

# Includes the tests marked slow.
test-all: venv
	$(PYTEST) -m ''

# Every README block the tests run, the slow experiments block too.
test-readme: venv
	$(PYTEST) -m '' tests/e2e/test_readme.py

# The GitHub workflows against GitHub's schema and zizmor's security audits (offline), with pinned tools
# in a venv of their own (.ci/run runs it before the tests).
LINT_VENV := build/lint-venv
lint-workflows: $(LINT_VENV)/.installed
	$(LINT_VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(LINT_VENV)/bin/zizmor --offline .github/workflows/

$(LINT_VENV)/.installed: requirements-lint.lock
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-lint.lock
	touch $@

# What the pull-request comment will say: the workspace against REV (default main), in report/.
report: venv
	$(BIN)/python -m movielens_pipeline.report $(REV)

# Re-resolve the newest versions the ranges in pyproject.toml allow and pin them.
lock:
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/python -m pip install --quiet torch==2.13.0
	/tmp/lock-venv/bin/python -m pip install --quiet .
	# boto3 (tests) would drag botocore past what aiobotocore (dvc-s3) accepts: hold botocore where it is.
	/tmp/lock-venv/bin/python -m pip freeze | grep -i '^botocore==' > /tmp/lock-venv/constraints.txt
	/tmp/lock-venv/bin/python -m pip install --quiet '.[test]' -c /tmp/lock-venv/constraints.txt
	{ printf '# Exact pins of every direct and transitive dependency, Python 3.11, CPU.\n# Installed with --no-deps after torch (see the Makefile); regenerate with `make lock`.\n'; \
	  /tmp/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^(pip|wheel|movielens-pipeline)[=@ ]' | sed 's/+cpu$$//'; } > requirements.lock

clean-venv:
	rm -rf $(VENV)
