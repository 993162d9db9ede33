#!/usr/bin/env bash
# A TPU VM pod slice driven by gcloud: create, setup, run, logs, status, ssh, delete.
# See usage below; every command is printed before it runs, --dry_run only prints.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh SUBCOMMAND [flags] [-- ARGS]

  create   gcloud compute tpus tpu-vm create (--accelerator, --runtime_version;
           --spot or --preemptible for cheaper, preemptible capacity)
  setup    copy the code to every worker (git clone of --git_url at --git_ref, else a
           tarball of this working tree: tracked and untracked, not ignored, files), then
           `make .venv/.installed` and jax[tpu] at the version requirements.lock pins
  run      on every worker, in the background under nohup:
             DOREMI_DISTRIBUTED=auto .venv/bin/python -m MODULE ARGS
           (MODULE: --module, default doremi_jax.pipeline); ARGS after `--` are passed
           as written, e.g. -- --gin_file=experiments/pile.gin
           --gin.PREPARED_DIR='"/data/pile_prepared"'. Each worker appends to
           REMOTE_DIR/logs/<hostname>.log; a worker already running one refuses (exit 2).
  logs     the last --lines (50) lines of each worker's log; --follow keeps following
  status   the TPU's state, and whether each worker's run is alive
  stop     SIGTERM to each worker's run: it writes a checkpoint and exits; `run` resumes
  ssh      run the shell command in ARGS on the workers (mounts, checks)
  delete   gcloud compute tpus tpu-vm delete

Preempted (a spot/preemptible slice is stopped; state PREEMPTED), or a run killed? Run
the same `run` command again (after delete, create and setup if the slice is gone):
the pipeline reuses finished stages (fingerprints checked) and resumes an interrupted
one from its last checkpoint (a single doremi_jax.train run: add --gin.RESUME=True). For that the experiment dir (and anything a run must
find again) has to live on storage that outlives the VMs, e.g. a Filestore NFS mount.

Settings (flag, else environment variable):
  --name TPU_NAME  --zone ZONE  --project PROJECT (else gcloud's default project)
  --accelerator ACCELERATOR (e.g. v4-64)  --runtime_version RUNTIME_VERSION
    (e.g. tpu-ubuntu2204-base for v4)
  --git_url GIT_URL  --git_ref GIT_REF (default: the remote's HEAD)
  --python PYTHON (default python3.11; installed with apt when missing)
  --remote_dir REMOTE_DIR (default doremi-jax, under the workers' home)
  --worker all|N (default all)  --env NAME=VALUE (run; repeatable)
  --dry_run   print the commands, run nothing
EOF
}

NAME=${TPU_NAME:-} ZONE=${ZONE:-} PROJECT=${PROJECT:-}
ACCELERATOR=${ACCELERATOR:-} RUNTIME_VERSION=${RUNTIME_VERSION:-}
GIT_URL=${GIT_URL:-} GIT_REF=${GIT_REF:-HEAD} PYTHON=${PYTHON:-python3.11}
REMOTE_DIR=${REMOTE_DIR:-doremi-jax} WORKER=all CAPACITY=()
SWITCHES="--spot --preemptible"

set_flag() {
  case $1 in
    --name) NAME=$2 ;;
    --zone) ZONE=$2 ;;
    --project) PROJECT=$2 ;;
    --accelerator) ACCELERATOR=$2 ;;
    --runtime_version) RUNTIME_VERSION=$2 ;;
    --git_url) GIT_URL=$2 ;;
    --git_ref) GIT_REF=$2 ;;
    --python) PYTHON=$2 ;;
    --remote_dir) REMOTE_DIR=$2 ;;
    --worker) WORKER=$2 ;;
    *) unknown_flag "$1" ;;
  esac
}

set_switch() {  # --spot or --preemptible
  CAPACITY=("$1")
}

parse_args "$@"
take_subcommand "create setup run logs status stop ssh delete"
need "$NAME" --name TPU_NAME
need "$ZONE" --zone ZONE

LOG="logs/\$(hostname)"  # under REMOTE_DIR; expanded on each worker
GCLOUD_ARGS=("--zone=$ZONE")
if [ -n "$PROJECT" ]; then GCLOUD_ARGS+=("--project=$PROJECT"); fi

tpu() {  # tpu VERB [args]: gcloud compute tpus tpu-vm VERB NAME --zone ... [args]
  local verb=$1
  shift
  run_cmd gcloud compute tpus tpu-vm "$verb" "$NAME" "${GCLOUD_ARGS[@]}" "$@"
}

on_workers() {
  tpu ssh "--worker=$WORKER" "--command=$1"
}

create() {
  need "$ACCELERATOR" --accelerator ACCELERATOR "e.g. v4-64"
  need "$RUNTIME_VERSION" --runtime_version RUNTIME_VERSION "e.g. tpu-ubuntu2204-base for v4"
  tpu create "--accelerator-type=$ACCELERATOR" "--version=$RUNTIME_VERSION" ${CAPACITY[@]+"${CAPACITY[@]}"}
}

setup() {
  local dir fetch py
  dir=$(shq "$REMOTE_DIR")
  py=$(shq "$PYTHON")
  if [ -n "$GIT_URL" ]; then
    fetch="{ test -d $dir/.git || git clone -q $(shq "$GIT_URL") $dir; }; git -C $dir fetch -q origin $(shq "$GIT_REF"); git -C $dir checkout -q FETCH_HEAD"
  else
    local tarball="${TMPDIR:-/tmp}/doremi-jax-$NAME.tar.gz"
    run_sh "git -C $(shq "$ROOT") ls-files -z -co --exclude-standard | tar -czf $(shq "$tarball") -C $(shq "$ROOT") --null -T -"
    run_cmd gcloud compute tpus tpu-vm scp "$tarball" "$NAME:doremi-jax.tar.gz" "${GCLOUD_ARGS[@]}" "--worker=$WORKER"
    fetch="mkdir -p $dir; tar -xzf doremi-jax.tar.gz -C $dir"
  fi
  # The lock's numpy needs Python >= 3.11; TPU images may ship only 3.10 (and no make).
  on_workers "set -e; $fetch; pkgs=; command -v make >/dev/null || pkgs=make; $py -c 'import ensurepip' 2>/dev/null || pkgs=\"\$pkgs $py $py-venv\"; if [ -n \"\$pkgs\" ]; then sudo apt-get update -qq; sudo apt-get install -y -qq \$pkgs; fi; cd $dir; make .venv/.installed PYTHON=$py; .venv/bin/pip install -q $(shq "jax[tpu]==$(pinned_version jax)")"
}

run() {
  set_run_argv .venv/bin/python DOREMI_DISTRIBUTED=auto
  on_workers "cd $(shq "$REMOTE_DIR") || exit 1; $(start_line "$LOG" "$(shq "${RUN_ARGV[@]}")")"
}

logs() {
  on_workers "cd $(shq "$REMOTE_DIR") || exit 1; $(tail_line "$LOG" "$LINES" "$FOLLOW")"
}

status() {
  tpu describe "--format=table(name.basename(),acceleratorType,state,health)"
  on_workers "cd $(shq "$REMOTE_DIR") || exit 1; $(status_line "$LOG")"
}

stop() {
  on_workers "cd $(shq "$REMOTE_DIR") || exit 1; $(stop_line "$LOG")"
}

ssh_workers() {
  ((${#PASSTHROUGH[@]})) || die "ssh needs a command after --, e.g. -- 'df -h /runs'"
  on_workers "${PASSTHROUGH[*]}"
}

delete() {
  tpu delete
}

case $SUBCOMMAND in
  create | setup | run | logs | status | stop | delete) "$SUBCOMMAND" ;;
  ssh) ssh_workers ;;
esac
