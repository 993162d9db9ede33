#!/usr/bin/env bash
# Builds the peers' pinned virtual environments (levanter, nanodo) for benchmarks/step_time.py,
# so that their step times are measured on this machine instead of quoted from elsewhere.
#
#   benchmarks/peers/build_envs.sh [levanter] [nanodo]     # default: both
#
# Sources: LEVANTER_GIT / NANODO_GIT, a git URL or a local git dir (bare or not) holding the
# pinned commit; PEERS_DIR (default .bench/peers), PEER_PYTHON (default python3, 3.10-3.12).
# Dependencies come from PyPI, pinned in levanter.lock / nanodo.lock (see README.md here).
# Idempotent: a stamp per venv records the commit and the lock it was built from.
# A peer whose source or packages cannot be fetched is skipped with one line; exit 0.
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
PEERS_DIR="${PEERS_DIR:-$HERE/../../.bench/peers}"
PEER_PYTHON="${PEER_PYTHON:-python3}"
LEVANTER_GIT="${LEVANTER_GIT:-https://github.com/stanford-crfm/levanter.git}"
NANODO_GIT="${NANODO_GIT:-https://github.com/google-deepmind/nanodo.git}"
LEVANTER_COMMIT=83f3f34640122476e4fd3955d66b603c82d1e1e3
NANODO_COMMIT=10aefdeed40a63293daf112b91a5538cd24fa3a4
# Paths taken from each tree (the levanter mirror here lacks some docs blobs), and the dir
# that goes on sys.path.
LEVANTER_PATHS="src pyproject.toml LICENSE"
NANODO_PATHS="nanodo pyproject.toml LICENSE"
LEVANTER_IMPORT_ROOT=src
NANODO_IMPORT_ROOT=.

log() { echo "peers: $*" >&2; }

# fetch_tree NAME SOURCE COMMIT PATHS DEST: export the commit's PATHS into DEST.
fetch_tree() {
  local name="$1" src="$2" commit="$3" paths="$4" dest="$5" gitdir
  if [ -d "$src" ]; then
    gitdir="$(git -C "$src" rev-parse --git-dir 2>/dev/null)" || gitdir="$src"
    case "$gitdir" in /*) ;; *) gitdir="$src/$gitdir" ;; esac
  else
    gitdir="$PEERS_DIR/$name.git"
    if ! git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null; then
      rm -rf "$gitdir" && git init -q --bare "$gitdir" &&
        git --git-dir="$gitdir" fetch -q --depth 1 "$src" "$commit" 2>/dev/null
    fi
  fi
  if ! git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null; then
    local var; var="$(echo "$name" | tr a-z A-Z)_GIT"
    log "$name not built: commit ${commit:0:8} not found in $src; set $var to a git URL or" \
      "local clone that has it"
    return 1
  fi
  rm -rf "$dest" && mkdir -p "$dest"
  # git archive may complain about blobs outside PATHS that a partial clone lacks; the file
  # count below is what says whether the tree came out whole.
  # shellcheck disable=SC2086
  git --git-dir="$gitdir" archive "$commit" $paths 2>/dev/null | tar -x -C "$dest"
  local want got
  # shellcheck disable=SC2086
  want="$(git --git-dir="$gitdir" ls-tree -r --name-only "$commit" -- $paths | wc -l)"
  got="$(find "$dest" -type f | wc -l)"
  if [ "$want" != "$got" ] || [ "$want" = 0 ]; then
    log "$name not built: exported $got of $want files of ${commit:0:8} from $src"
    return 1
  fi
}

# build NAME SOURCE COMMIT PATHS IMPORT_ROOT
build() {
  local name="$1" src="$2" commit="$3" paths="$4" root="$5"
  local venv="$PEERS_DIR/$name-venv" lock="$HERE/$name.lock"
  local want; want="$commit $(sha256sum "$lock" | cut -d' ' -f1)"
  if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$want" ]; then
    log "$name up to date ($venv)"
    return 0
  fi
  fetch_tree "$name" "$src" "$commit" "$paths" "$PEERS_DIR/$name-src" || return 0
  rm -rf "$venv"
  "$PEER_PYTHON" -m venv "$venv" || { log "$name not built: $PEER_PYTHON -m venv failed"; return 0; }
  log "$name: installing $(grep -c '^[A-Za-z]' "$lock") pinned packages into $venv"
  # (grep drops the notes pip prints for this machine's extra index dirs, if any.)
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$lock" 2>&1 \
    | { grep -v 'is ignored: it is neither' >&2 || true; }
  if [ "${PIPESTATUS[0]}" != 0 ]; then
    log "$name not built: pip could not install $lock (is PyPI reachable?)"
    return 0
  fi
  # The peer's own source on sys.path, as an editable install would put it.
  local site; site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  (cd "$PEERS_DIR/$name-src/$root" && pwd) > "$site/$name-src.pth"
  if ! JAX_PLATFORMS=cpu "$venv/bin/python" -c "import $name, jax; assert jax.__version__ == '0.4.38'"; then
    log "$name not built: import $name failed in $venv"
    return 0
  fi
  echo "$want" > "$venv/.installed"
  log "$name built ($venv, commit ${commit:0:8})"
}

mkdir -p "$PEERS_DIR"
PEERS_DIR="$(cd "$PEERS_DIR" && pwd)"
for peer in "${@:-levanter nanodo}"; do
  for p in $peer; do
    case "$p" in
      levanter) build levanter "$LEVANTER_GIT" $LEVANTER_COMMIT "$LEVANTER_PATHS" $LEVANTER_IMPORT_ROOT ;;
      nanodo) build nanodo "$NANODO_GIT" $NANODO_COMMIT "$NANODO_PATHS" $NANODO_IMPORT_ROOT ;;
      *) log "unknown peer $p (levanter, nanodo)"; exit 2 ;;
    esac
  done
done
exit 0
