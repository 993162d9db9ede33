# Helpers sourced by the launch scripts: flag parsing, printing each command before it
# runs, --dry_run, one-line errors. Not run on its own.
# shellcheck shell=bash disable=SC2034  # variables are read by the sourcing script

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=0 MODULE=doremi_jax.pipeline ENVS=() LINES=50 FOLLOW=0
# Filled by parse_args.
POSITIONAL=() PASSTHROUGH=() SUBCOMMAND=

die() {
  echo "error: $*" >&2
  exit 2
}

# Quotes words so that a printed command can be pasted into a shell as it is.
shq() {
  local out=() word q="'\\''"
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//\'/$q}'")
    fi
  done
  echo "${out[*]}"
}

# Prints `+ command` and runs it, unless --dry_run.
run_cmd() {
  echo "+ $(shq "$@")"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# The same for a shell line with pipes or redirections, printed as written.
run_sh() {
  echo "+ $1"
  if [ "$DRY_RUN" = 0 ]; then bash -c "$1"; fi
}

need() {  # need VALUE FLAG ENV_VAR [hint]
  [ -n "$1" ] || die "$2 is not set; pass $2=... or set $3${4:+ ($4)}"
}

# The version pinned in requirements.lock, so that accelerator wheels match it.
pinned_version() {
  local version
  version=$(sed -n "s/^$1==//p" "$ROOT/requirements.lock")
  [ -n "$version" ] || die "$1 is not pinned in $ROOT/requirements.lock; add $1==VERSION there"
  echo "$version"
}

# Splits --name=value / --name value / switches. The flags common to the scripts are
# handled here, others by the script's set_flag NAME VALUE and set_switch NAME (its
# switches are the names listed in SWITCHES). Words after `--` go to PASSTHROUGH.
parse_args() {
  while (($#)); do
    case $1 in
      --) shift; PASSTHROUGH=("$@"); return 0 ;;
      -h | --help | help) usage; exit 0 ;;
      --dry_run) DRY_RUN=1 ;;
      --follow) FOLLOW=1 ;;
      --*=*) common_flag "${1%%=*}" "${1#*=}" ;;
      --*)
        if [[ " $SWITCHES " == *" $1 "* ]]; then
          set_switch "$1"
        else
          (($# >= 2)) || die "$1 needs a value; see $0 --help"
          common_flag "$1" "$2"
          shift
        fi ;;
      *) POSITIONAL+=("$1") ;;
    esac
    shift
  done
}

common_flag() {
  case $1 in
    --module) MODULE=$2 ;;
    --lines)
      [[ $2 =~ ^[0-9]+$ ]] || die "--lines wants a number, got '$2'"
      LINES=$2 ;;
    --env)
      [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got '$2'"
      ENVS+=("$2") ;;
    *) set_flag "$@" ;;
  esac
}

# Sets SUBCOMMAND from the one word that is not a flag, if it is one of "$1".
take_subcommand() {
  SUBCOMMAND=${POSITIONAL[0]:-}
  local choices=${1// /, }
  [ -n "$SUBCOMMAND" ] || die "no subcommand; give one of $choices (see $0 --help)"
  [[ " $1 " == *" $SUBCOMMAND "* ]] || die "unknown subcommand '$SUBCOMMAND'; give one of $choices"
  ((${#POSITIONAL[@]} == 1)) || die "unexpected argument '${POSITIONAL[1]}'; arguments for the run go after --"
}

# RUN_ARGV: env [SETTINGS] [--env settings] PYTHON -m MODULE [ARGS after --].
set_run_argv() {  # PYTHON [NAME=VALUE...]
  local python=$1
  shift
  RUN_ARGV=(env "$@" ${ENVS[@]+"${ENVS[@]}"} "$python" -m "$MODULE"
            ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"})
}

# Shell lines for a run in the background under nohup, with BASE.log and BASE.pid; the TPU
# script runs them on each worker, the GPU script here. BASE may hold $(hostname).
# A pid file, not pgrep: the shell running these lines names the module too.
# ps -ww: the whole command line; a set COLUMNS (e.g. under pytest-xdist) would cut it.
alive_test() {  # BASE
  echo "[ -f $1.pid ] && ps -ww -p \"\$(cat $1.pid)\" -o args= | grep -q doremi_jax"
}

start_line() {  # BASE COMMAND
  echo "set -e; mkdir -p \"\$(dirname $1)\"; if $(alive_test "$1"); then echo \"error: \$(hostname) already runs pid \$(cat $1.pid) (log: $1.log); wait for it or kill it\" >&2; exit 2; fi; echo \"== \$(date -u +%FT%TZ) start\" >> $1.log; nohup $2 >> $1.log 2>&1 < /dev/null & echo \$! > $1.pid; echo \"\$(hostname): started pid \$!, log $1.log\""
}

status_line() {  # BASE
  echo "if $(alive_test "$1"); then echo \"\$(hostname): running, pid \$(cat $1.pid)\"; else echo \"\$(hostname): not running\"; fi; tail -n 1 $1.log 2>/dev/null || true"
}

# SIGTERM, as a preemption would send: the run writes a checkpoint and exits 143.
stop_line() {  # BASE
  echo "if $(alive_test "$1"); then kill \"\$(cat $1.pid)\"; echo \"\$(hostname): sent SIGTERM to pid \$(cat $1.pid); it checkpoints, then exits\"; else echo \"\$(hostname): not running\"; fi"
}

tail_line() {  # BASE LINES FOLLOW
  echo "tail -n $2$([ "$3" = 1 ] && echo " -F") $1.log | sed -u \"s/^/\$(hostname): /\""
}

unknown_flag() {
  die "unknown flag $1; see $0 --help"
}
