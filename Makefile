# nfork: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCES := $(shell find nfork twisted -name '*.py' 2>/dev/null) pyproject.toml setup.cfg

.PHONY: demo test lint typecheck pytest bench clean

# The virtualenv with runtime and test dependencies (rebuilt when they change).
$(VENV)/.deps: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "setuptools>=77" wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check ".[test]"
	touch $@

# nfork itself, installed as a regular (non-editable) package so that twistd
# finds the plugin in site-packages/twisted/plugins exactly as users get it.
# build/ is removed first: setuptools would package a moved module's stale copy.
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	rm -rf build
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--no-deps --no-build-isolation --force-reinstall .
	touch $@

demo: $(VENV)/.installed
	$(BIN)/twistd --nodaemon --pidfile= nfork --demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# Then the end-to-end tests (those that start twistd, marked automatically)
# again, with two worker processes behind each twistd.
pytest: $(VENV)/.installed
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m twistd --nfork-workers 2

test: lint typecheck pytest

# Not part of `test`: needs wrk and nginx (apt-get install -y wrk nginx-light;
# BENCH_INSTALL=1 installs them when run as root) and takes about 5 minutes.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--scenarios 3,6.3 --rounds 1".
bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.tools
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
