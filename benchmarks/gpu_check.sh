#!/usr/bin/env bash
# The prepared one-GPU run of benchmarks/gpu_step.py, and its CPU smoke mode (a default test).
#
#   OUT=DIR benchmarks/gpu_check.sh               # the H200: JSON, log and nvidia-smi in DIR
#   OUT=DIR benchmarks/gpu_check.sh --cpu-smoke   # here: tiny model on the CPU, seconds
#
# Installs nothing but carried wheels: where the python (PYTHON, default python3) lacks
# gin-config (core imports it; the device image has jax, flax and optax but not gin), it is
# installed with --no-index from GPU_WHEELS (default .bench/wheels, `make gpu-wheels`) into
# a folder on PYTHONPATH. The device run is bounded: GPU_BUDGET_S (default 420) for
# gpu_step.py's cells, and a hard stop at 470 s, inside an 8-minute device command.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT to the folder for the JSON and the log}
WHEELS=${GPU_WHEELS:-$ROOT/.bench/wheels}
SITE=${GPU_SITE:-/tmp/gpu_check_site}
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# gin.configurable, not a bare import: the repo's gin/ folder imports as an empty namespace.
if ! "$PY" -c 'import gin; gin.configurable' 2>/dev/null; then
  if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "error: $PY has no gin-config and $WHEELS holds no wheels (make gpu-wheels, then" \
         "carry .bench/wheels)" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi

case ${1:-} in
  --cpu-smoke)
    JAX_PLATFORMS=cpu timeout 120 "$PY" "$ROOT/benchmarks/gpu_step.py" --smoke \
      --json "$OUT/gpu_step_smoke.json" 2>&1 | tee "$OUT/gpu_step_smoke.log"
    ;;
  "")
    # Read-only queries: the card as found (clocks, power, memory), never a setting.
    query=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw
    nvidia-smi --query-gpu="$query,power.limit,temperature.gpu" --format=csv \
      >"$OUT/nvidia-smi.csv" 2>&1 || echo "nvidia-smi failed" >>"$OUT/nvidia-smi.csv"
    timeout 470 "$PY" "$ROOT/benchmarks/gpu_step.py" --measure-matmul-peak \
      --budget-s "${GPU_BUDGET_S:-420}" --json "$OUT/gpu_step.json" 2>&1 | tee "$OUT/gpu_step.log"
    ;;
  *)
    echo "usage: OUT=DIR $0 [--cpu-smoke]" >&2
    exit 2
    ;;
esac
