# The two commands of the README: `make demo` and `make test`.
# Both create the virtual environment .venv when needed (Python 3.11+ and make are all
# they need) and install the project with the pinned versions of constraints.txt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= out/demo
# pytest processes for `make test`: the test files are shared out whole (--dist loadfile),
# so a file's module fixtures (a cluster, a reference study) are built once
TEST_WORKERS ?= 2

.PHONY: demo test test-all bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,star,dask]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/classsize demo --out $(DEMO_DIR) --force

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	CLASSSIZE_SLOW=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,star,dask,bench]'
	$(BIN)/python bench/simulate_bench.py
	$(BIN)/python bench/fit_bench.py

clean:
	rm -rf $(VENV) out .pytest_cache
