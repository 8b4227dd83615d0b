# Developer entry points. `make` alone lists them.
# Everything runs inside a private virtualenv, so it also works where the system pip
# refuses to install (Debian's externally-managed Python).

VENV ?= .venv
PY = $(VENV)/bin/python
BASE_PYTHON ?= python3

# Stamp written after a successful install: `make test` reinstalls only when the
# packaging files change (the install is editable, so code edits need no reinstall).
INSTALLED = $(VENV)/.installed

# Benchmarks drop OpenBLAS overrides a shell may carry, so BLAS picks its kernels
# from the CPU it finds, as a user's run would.
BENCH_ENV = env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint demo corpus shakespeare chinese bench bench-corpus \
        bench-quality install-mpi bench-mpi clean distclean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' \
		$(MAKEFILE_LIST)

install: $(INSTALLED) ## create the venv and pip install -e '.[test,plot,mpi]' into it

# Re-running venv on an existing directory repairs one left without pip. The mpi extra
# (mpi4py, MPICH) lets the suite run its mpiexec tests; where it cannot install, charrnn
# works without it and those tests are skipped. The plot extra (matplotlib) lets it draw.
$(INSTALLED): setup.cfg pyproject.toml
	@$(PY) -m pip --version >/dev/null 2>&1 || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[test,plot,mpi]' || { \
		echo "make: the mpi extra (mpi4py, mpich) did not install; going on without it:" \
		     "the MPI tests will be skipped" >&2; \
		$(PY) -m pip install -e '.[test,plot]'; }
	@touch $@

test: install ## run the test suite
	$(PY) -m pytest -q

test-fast: install ## the tests not marked slow or mpi (about 20 s on a warm kernel cache)
	$(PY) -m pytest -q -m "not slow and not mpi"

lint: install ## ruff over the package and the tests (ruff.toml)
	$(PY) -m ruff check charrnn tests data

demo: install data/default.txt ## train 60 s on the default corpus, then sample
	$(VENV)/bin/charrnn train data/default.txt -o demo.ckpt --force --time-limit 60 --val-chars 50000 --seed 1
	$(VENV)/bin/charrnn sample demo.ckpt -n 600 --temperature 0.8 --seed 7

corpus: data/default.txt ## build data/default.txt from this Python's stdlib source

shakespeare: data/tinyshakespeare.txt ## fetch tiny shakespeare into data/

chinese: data/chinese.txt ## build data/chinese.txt from Debian's manpages-zh (apt-get download, once)

# No prerequisites: built only when missing (`make clean` to rebuild).
data/default.txt:
	$(BASE_PYTHON) data/build_default_corpus.py --out $@

data/tinyshakespeare.txt:
	$(BASE_PYTHON) data/get_tinyshakespeare.py --out $@

data/chinese.txt:
	$(BASE_PYTHON) data/build_chinese_corpus.py --out $@

# Every benchmark is `python -m charrnn.bench.NAME` (charrnn/bench/); the speed one is
# also the `charrnn bench` command.
bench: install ## training and sampling chars/s of every config (charrnn.bench.speed)
	$(BENCH_ENV) $(PY) -m charrnn.bench.speed --config all

bench-corpus: install ## peak RSS on 10 MB and 1 GB corpora; chars/s with 6,000 chars, full and adaptive softmax, vs PyTorch (charrnn.bench.corpus)
	$(BENCH_ENV) $(PY) -m charrnn.bench.corpus

bench-quality: install ## validation nats/char at fixed budgets vs PyTorch (charrnn.bench.quality)
	$(BENCH_ENV) $(PY) -m charrnn.bench.quality

install-mpi: install ## add mpi4py and an MPICH build to the venv (failing if they cannot)
	$(PY) -m pip install -e '.[mpi]'

bench-mpi: install ## chars/s: 1 process x 2 threads vs 2 MPI ranks x 1 thread (charrnn.bench.mpi)
	$(BENCH_ENV) $(PY) -m charrnn.bench.mpi

clean: ## remove build output, caches, checkpoints and derived corpora
	rm -rf build dist *.egg-info .pytest_cache demo.ckpt demo.best.ckpt demo.ckpt.tmp* \
		data/default.txt data/tinyshakespeare.txt data/chinese.txt data/cache
	find . \( -path ./.git -o -path './$(VENV)' \) -prune -o \
		\( -name __pycache__ -type d -prune -exec rm -rf {} + \) -o \
		\( \( -name '*.nbi' -o -name '*.nbc' \) -type f -exec rm -f {} + \)

distclean: clean ## clean, and remove the venv too
	rm -rf $(VENV)
