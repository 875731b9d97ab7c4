#!/usr/bin/env bash
# The device check for a GPU machine (about 5 minutes on one GPU, not yet measured: the
# machines this was written on have none). From the repository root, after the README's
# test command has made .venv:
#
#   bash benchmarks/gpu_check.sh
#
# 1. the tests that touch devices (strategies, towers, multi-worker), on the GPU;
# 2. two replicas on one GPU split into two logical devices: both models train a few
#    iterations with --num_gpu 2 through main.py (benchmarks/gpu_check.py);
# 3. images/s of both models at 64x64 against a convolution baseline measured in the same
#    run (benchmarks/bench_began.py, benchmarks/bench_dcgan.py).
# Without a GPU it says so and exits 0. Exit code: non-zero when any part fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export TF_CPP_MIN_LOG_LEVEL=2

gpus=$("$PY" -c "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))" 2>/dev/null)
if [ -z "$gpus" ]; then
  echo "gpu_check: cannot import TensorFlow with $PY; make .venv with the README's test command first" >&2
  exit 2
fi
if [ "$gpus" -eq 0 ]; then
  echo "gpu_check: TensorFlow finds no GPU on this machine; skipped (nothing to check)"
  exit 0
fi
echo "gpu_check: $gpus GPU(s)"
failed=0
"$PY" -m pytest -q -n0 tests/test_trainer.py tests/test_began_towers.py tests/test_trainer_multiworker.py || failed=1
"$PY" -m benchmarks.gpu_check || failed=1
"$PY" -m benchmarks.bench_began --sizes reference --repeats 2 || failed=1
"$PY" -m benchmarks.bench_dcgan --sizes reference --repeats 2 || failed=1
[ "$failed" -eq 0 ] && echo "gpu_check: all parts passed" || echo "gpu_check: some part failed (see above)"
exit "$failed"
