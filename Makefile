# Thin wrappers over the documented commands. `make demo` and `make test` create the
# virtual environment when it is missing, so both work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
NMT := $(VENV)/bin/nmt
# CPU build cached on our machines; GPU users: make install TORCH_SPEC='torch>=2.3'
TORCH_SPEC ?= torch==2.13.0
export NMT_DATA ?= $(abspath ../shared/data)
export OMP_NUM_THREADS ?= 2
MULTI30K ?= configs/multi30k_de_en.yaml
TRAIN_ARGS ?=
WORKDIR = $(PY) -c "import sys; from nmt.config import load_config; print(load_config(sys.argv[1]).workdir)" $(MULTI30K)

.PHONY: install lt-venv demo test test-fast lint multi30k multi30k-multilingual bench clean

# Packages are not byte-compiled at install (all of torch, sympy and networkx would take
# ~25 s); one warm-up import then caches bytecode for exactly what nmt imports, so every
# later `nmt` process starts fast even with PYTHONDONTWRITEBYTECODE set.
PIP := $(PY) -m pip
WARM_UP := import nmt.cli, nmt.data.prepare, nmt.train.loop, nmt.decode.translate, nmt.evaluate.report

# runtime install (what the demo needs), then the dev extras (what the tests need)
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or make PYTHON=python3)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-compile "$(TORCH_SPEC)" -e .
	PYTHONDONTWRITEBYTECODE= $(PY) -c "$(WARM_UP)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || true
	touch $@

install: $(VENV)/.installed-dev

# The LibreTranslate test venv: the real LibreTranslate server and the Argos Translate client it installs
# (argos-translate-lt), from the package registry and nothing else, for the tests that run them against
# nmt's exports and server (tests/lt_server.py finds it here). The stamp holds the spec, so a re-run is
# a no-op and a changed LT_SPEC reinstalls. Not byte-compiled at install; the warm-up import caches
# bytecode for what the tests run (client, server, waitress), as for .venv above.
LT_VENV ?= .venv-lt
LT_SPEC ?= libretranslate==1.9.6
LT_WARM_UP := import argostranslate.translate, argostranslate.package, libretranslate.main, libretranslate.app, waitress
$(LT_VENV)/.installed: $(if $(filter $(LT_SPEC),$(shell cat $(LT_VENV)/.installed 2>/dev/null)),,lt-spec-changed)
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (or make PYTHON=python3)"; exit 1; }
	test -x $(LT_VENV)/bin/python || $(PYTHON) -m venv $(LT_VENV)
	$(LT_VENV)/bin/python -m pip install -q --no-compile "$(LT_SPEC)"
	warm=$$(mktemp -d) && XDG_DATA_HOME=$$warm XDG_CONFIG_HOME=$$warm XDG_CACHE_HOME=$$warm ARGOS_PACKAGES_DIR=$$warm/p \
	  PYTHONDONTWRITEBYTECODE= PYTHONWARNINGS=ignore $(LT_VENV)/bin/python -c "$(LT_WARM_UP)" && rm -rf $$warm
	echo "$(LT_SPEC)" > $@

.PHONY: lt-spec-changed
lt-spec-changed: ;

lt-venv: $(LT_VENV)/.installed

demo: $(VENV)/.installed
	bash scripts/demo.sh

# one pytest-xdist worker per core (each test runs torch on one thread); the test files that share a
# trained session fixture go to one worker (tests/conftest.py: xdist_groups). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

test: install lt-venv
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

lint: install
	$(VENV)/bin/ruff check nmt tests scripts
	$(VENV)/bin/ruff format --check nmt tests scripts

multi30k: install
	$(NMT) prepare $(MULTI30K)
	$(NMT) train $(MULTI30K) $(TRAIN_ARGS)
	$(NMT) average --last 5 $$($(WORKDIR))
	$(NMT) evaluate $(MULTI30K) --split test_2016_flickr --checkpoint averaged
	$(NMT) evaluate $(MULTI30K) --split test_2017_flickr --checkpoint averaged

# one model for de, fr, cs <-> en: every direction scored on both test sets (cs has no test_2017_flickr)
MULTILINGUAL ?= configs/multi30k_multilingual.yaml
multi30k-multilingual: install
	$(NMT) prepare $(MULTILINGUAL)
	$(NMT) train $(MULTILINGUAL) $(TRAIN_ARGS)
	$(NMT) evaluate $(MULTILINGUAL) --split test_2016_flickr
	$(NMT) evaluate $(MULTILINGUAL) --split test_2017_flickr

# CPU benchmarks for BENCHMARKS.md (needs a trained $(MULTI30K) experiment for the translation figures)
bench: install
	$(NMT) prepare $(MULTI30K)
	$(PY) scripts/bench_train.py $(MULTI30K) --steps 60 --set train.device=cpu
	$(PY) scripts/bench_translate.py $$($(WORKDIR))/checkpoints/best.pt --profile
	$(PY) scripts/bench_prepare.py --pairs 1M   # ~1 min; 10M pairs (~6 min, 3 GB of text): --pairs 10M

clean:
	rm -rf data/exp data/demo data/bench_prepare .pytest_cache build *.egg-info
