#!/usr/bin/env bash
# Simulate a multi-host pod on one machine: N processes x D CPU devices each, talking
# over gloo, all running the same command. Usage:
#   launch/local_multihost.sh 2 4 python -m doremi_jax.train --gin_file=... --gin.MODEL_DIR=...
set -euo pipefail
NPROC=$1; NDEV=$2; shift 2
PORT=${DOREMI_PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < NPROC; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$NDEV" \
  DOREMI_COORDINATOR="127.0.0.1:$PORT" DOREMI_NUM_PROCESSES=$NPROC DOREMI_PROCESS_ID=$i \
    "$@" &
  pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done
exit $rc
