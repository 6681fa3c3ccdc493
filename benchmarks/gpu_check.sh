#!/usr/bin/env bash
# Run first on any CUDA machine: DDP training with AMP on 1-2 GPUs, the loader bench,
# bench model and an evaluation, each as a user would type it; prints one table and exits
# non-zero on the first failure (benchmarks/gpu_check.py says what each step covers).
#
#   benchmarks/gpu_check.sh                  # CUDA, a few hundred steps (minutes on one GPU)
#   benchmarks/gpu_check.sh --gpus 1         # one GPU
#   benchmarks/gpu_check.sh --cpu --tiny     # the CPU form the test suite runs
#
# Uses $PYTHON, else .venv/bin/python (make install), else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
exec "$PY" benchmarks/gpu_check.py "$@"
