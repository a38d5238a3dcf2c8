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
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
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

pytest: $(VENV)/.installed
	$(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
