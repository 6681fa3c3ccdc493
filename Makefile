# Two entry points for a newcomer: `make demo` and `make test`. Each creates its own
# virtual environment (.venv) and installs the project with pip; nothing else is needed.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases this project is tested with; override for your CUDA.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2
# the extras `make install` adds (a variable: a comma can't stand inside $(call ...))
EXTRAS := torch,tensorboard,dev

.PHONY: install demo test test-slow test-numpy1 bench gpu-check clean

# A download from PyPI that drops (CI once lost OpenVINO's 59 MB wheel at 44.6 MB, six
# resumes without a byte) must not fail the install: pip resumes up to 20 times, and the
# whole command is tried three times, 20 s apart (a fresh try downloads from the start).
PIP_TRIES ?= 3
retry = for try in $$(seq $(PIP_TRIES)); do $(1) && break; \
	if [ $$try = $(PIP_TRIES) ]; then exit 1; fi; \
	echo "pip failed (try $$try of $(PIP_TRIES)); trying again in 20 s" >&2; sleep 20; done

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(call retry,$(PY) -m pip install -q --upgrade pip)
	$(call retry,$(PY) -m pip install -q --resume-retries 20 $(TORCH_SPEC))
	$(call retry,$(PY) -m pip install -q --resume-retries 20 -e '.[$(EXTRAS)]')
	touch $@

install: $(VENV)/.installed

# the real dev classes, where this checkout sits beside ../shared (a user's clone has none)
DEMO_REAL ?= $(wildcard ../shared/data/magnetic-tile-dev ../shared/data/glass-dev ../shared/data/pcb-dev)

demo: install
	$(VENV)/bin/metauas demo --out demo-out $(foreach d,$(DEMO_REAL),--real $(d))

# lint, format and type checks (ruff, mypy: configured in pyproject.toml), then the suite:
# everything not marked slow (the fault suite and the fuzz pass included), under ten
# minutes on 2 cores
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "not slow" tests

# the long variants: real kills, DDP, the demo, ONNX export, the browser page, the GPU
# check's CPU form, the commands of README.md, docs/api.md and docs/reproduce.md (CI runs
# them after `make test`). The long tests that drive real processes (xdist_group
# "processes": torchrun, the GPU check, `bench all`, the demo, the printed commands of README.md,
# docs/api.md and docs/reproduce.md) run after the others, one at a time, in a pytest
# process of their own: on CI and three times here an xdist worker that had first run
# in-process tests (ONNX/OpenVINO export, the page, the hub) died while it ran one of them
# (the GPU check's CPU form, docs/api.md's commands, once on CI `bench all`, its pools
# and DataLoader workers, and once on CI the demo, training with forked DataLoader
# workers), with nothing in the kernel log; apart, they pass
test-slow: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) -m "slow and not xdist_group" tests
	$(PY) -m pytest -q -m "slow and xdist_group" tests

# the metrics on NumPy 1.x (pyproject allows numpy>=1.24): base install + pytest, no torch
test-numpy1:
	python3 -m venv .venv-numpy1
	.venv-numpy1/bin/python -m pip install -q 'numpy<2' -e . pytest scikit-learn
	.venv-numpy1/bin/python -m pytest -q -p no:cacheprovider tests/evaluation/test_metrics.py tests/evaluation/test_metric_levels.py

bench: install
	$(VENV)/bin/metauas bench all

# on a CUDA machine: DDP + AMP training, loader and model benches, an evaluation (benchmarks/gpu_check.py)
gpu-check: install
	PYTHON=$(PY) bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) .venv-numpy1 demo-out .pytest_cache
