# The two commands of the README: `make demo` and `make test`; for teaching, `make site`
# (the notebooks as an offline HTML site in site/) and `make lab` (JupyterLab on them).
# All create the virtual environment .venv when needed (Python 3.12+ and make are all
# they need) and install the project with the pinned versions of constraints.txt.

# The first Python >= 3.12 that runs: python3.14, python3.13, python3.12, python3, then
# pyenv's installed versions (newest first).  A candidate is run, not just found on the
# PATH, so a pyenv shim that cannot start its version is passed over.
PY_CANDIDATES := python3.14 python3.13 python3.12 python3 \
	$(shell ls -1d $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV)
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach p,$(PY_CANDIDATES),$(shell $(p) -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && echo $(p))))
endif
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= out/demo
# pytest processes for `make test`: the test files are shared out whole (--dist loadgroup,
# one group per file: tests/conftest.py), so a file's module fixtures (a cluster, a
# reference study) are built once; each notebook run is a group of its own
TEST_WORKERS ?= 2

.PHONY: demo test test-all bench site lab venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "make: no Python 3.12 or newer found (tried python3.14, python3.13, python3.12, python3 and ~/.pyenv/versions); install one or run make PYTHON=/path/to/python3.12" >&2; exit 2; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 12))' || { echo "make: $(PYTHON) is older than Python 3.12, which the project needs" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,star,dask,site]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/classsize demo --out $(DEMO_DIR) --force

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-all: $(STAMP)
	CLASSSIZE_SLOW=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,star,dask,bench]'
	$(BIN)/python bench/simulate_bench.py
	$(BIN)/python bench/fit_bench.py

# the teaching notebooks as an offline static site in site/ (from their stored outputs)
site: $(STAMP)
	$(BIN)/python notebooks/build_site.py --out site

# JupyterLab on the notebooks folder, with this environment's kernel
lab: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[lab]'
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(VENV) out site .pytest_cache
