#!/usr/bin/env bash
# One multi-GPU machine: setup, run, logs, status. See usage below; every command is
# printed before it runs, --dry_run only prints.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Overlap collectives (FSDP all-gathers, gradient reduce-scatters) with compute, and give
# them the highest-priority stream. Both are known to the pinned jaxlib (tests check);
# not measured here: no GPU was lent to this project.
DEFAULT_GPU_XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_highest_priority_async_stream=true"

usage() {
  cat <<EOF
Usage: launch/gpu_node.sh SUBCOMMAND [flags] [-- ARGS]

  setup    make .venv/.installed (the pinned environment), then jax[cuda12] at the version
           requirements.lock pins, then check that JAX sees the GPUs
  run      one process driving every local GPU (the mesh spans them all; no
           jax.distributed needed on one machine):
             XLA_FLAGS=... VENV/bin/python -m MODULE ARGS
           (MODULE: --module, default doremi_jax.pipeline), in the background under nohup
           with LOG_DIR/gpu_node.log and .pid, or attached with --foreground. ARGS after
           \`--\` are passed as written. A run already alive refuses a second (exit 2).
           Killed or interrupted? Run the same command again: finished stages are reused
           and an interrupted one resumes from its last checkpoint.
  logs     the last --lines (50) lines of the log; --follow keeps following
  status   whether the run is alive, and the log's last line
  stop     SIGTERM to the run: it writes a checkpoint and exits; \`run\` resumes

Settings (flag, else environment variable):
  --venv VENV (default .venv)  --log_dir LOG_DIR (default runs/logs)
  --module MODULE  --env NAME=VALUE (run; repeatable)
  GPU_XLA_FLAGS (default: $DEFAULT_GPU_XLA_FLAGS);
    XLA_FLAGS from the environment is appended, so its flags win
  CUDA_VISIBLE_DEVICES limits the GPUs as usual
  --dry_run   print the commands, run nothing
EOF
}

VENV=${VENV:-.venv} LOG_DIR=${LOG_DIR:-runs/logs} FOREGROUND=0
SWITCHES="--foreground"

set_flag() {
  case $1 in
    --venv) VENV=$2 ;;
    --log_dir) LOG_DIR=$2 ;;
    *) unknown_flag "$1" ;;
  esac
}

set_switch() {  # --foreground
  FOREGROUND=1
}

parse_args "$@"
take_subcommand "setup run logs status stop"
LOG="$(shq "$LOG_DIR")/gpu_node"
echo "+ cd $(shq "$ROOT")"
cd "$ROOT"

setup() {
  run_cmd make "VENV=$VENV" "$VENV/.installed"
  run_cmd "$VENV/bin/pip" install -q "jax[cuda12]==$(pinned_version jax)"
  run_cmd "$VENV/bin/python" -c 'import jax; d = jax.devices(); assert d[0].platform == "gpu", d; print(len(d), "x", d[0].device_kind)'
}

run() {
  set_run_argv "$VENV/bin/python" "XLA_FLAGS=${GPU_XLA_FLAGS-$DEFAULT_GPU_XLA_FLAGS}${XLA_FLAGS:+ $XLA_FLAGS}"
  if [ "$FOREGROUND" = 1 ]; then
    run_cmd "${RUN_ARGV[@]}"
  else
    run_sh "$(start_line "$LOG" "$(shq "${RUN_ARGV[@]}")")"
  fi
}

logs() {
  run_sh "$(tail_line "$LOG" "$LINES" "$FOLLOW")"
}

status() {
  run_sh "$(status_line "$LOG")"
}

stop() {
  run_sh "$(stop_line "$LOG")"
}

"$SUBCOMMAND"
