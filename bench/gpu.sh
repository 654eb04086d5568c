#!/usr/bin/env bash
# `make bench-gpu`: GLO's worker on one GPU, in one command that stays inside 8 minutes.
#
#   bash bench/gpu.sh [OUT_DIR]        (default: $OUT, else out/)
#
# Run it from a checkout on a GPU machine.  It carries its own data: `make bench-gpu-prepare` (run where the
# data is) copies mnist.npz into .bench-gpu/data/, an ignored folder to send along with the tree.  It needs a
# Python with TensorFlow that sees the GPU, found in this order: $PYTHON, .venv/bin/python, python3; failing
# those it installs TensorFlow -- from wheels carried in .bench-gpu/wheels/ when there are any (no registry
# needed), else from the package registry (`pip install tensorflow[and-cuda]`).  Results: OUT_DIR/bench-gpu.json
# and OUT_DIR/bench-gpu.md (a table with the device's name for bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-out}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 GLO_DATA_DOWNLOAD=0
if [ -z "${GLO_DATA_DIR:-}" ] && [ -f .bench-gpu/data/mnist.npz ]; then export GLO_DATA_DIR="$PWD/.bench-gpu/data"; fi
if [ -z "${GLO_DATA_DIR:-}" ] && [ "${GLO_BENCH_GPU_SYNTHETIC:-0}" != 1 ]; then
  echo "bench-gpu: no MNIST: run 'make bench-gpu-prepare' where mnist.npz is, send .bench-gpu/ along, or set GLO_DATA_DIR" >&2
  exit 66
fi

has_tf() { "$1" -c 'import tensorflow' >/dev/null 2>&1; }
PY=""
for cand in "${PYTHON:-}" .venv/bin/python python3; do
  if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && has_tf "$cand"; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
  PY=$(command -v python3)
  site=/tmp/glo-bench-site
  if ls .bench-gpu/wheels/*.whl >/dev/null 2>&1; then
    echo "bench-gpu: installing TensorFlow from .bench-gpu/wheels" >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .bench-gpu/wheels/*.whl
  else
    echo "bench-gpu: installing TensorFlow from the package registry" >&2
    "$PY" -m pip install -q --target "$site" 'tensorflow[and-cuda]>=2.16' || {
      echo "bench-gpu: no Python with TensorFlow here and none could be installed (no registry, no .bench-gpu/wheels)" >&2
      exit 69; }
  fi
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  has_tf "$PY" || { echo "bench-gpu: TensorFlow still does not import" >&2; exit 69; }
fi
"$PY" - <<'PY'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"bench-gpu: TensorFlow {tf.__version__}, GPUs: {[g.name for g in gpus] or 'none (the numbers are the CPU)'}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout "${GLO_BENCH_GPU_TIMEOUT_S:-470}" "$PY" -m tests.bench.gpu --out "$OUT_DIR/bench-gpu.json" --markdown "$OUT_DIR/bench-gpu.md"
