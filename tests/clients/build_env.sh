#!/usr/bin/env bash
# Builds a consumer's pinned virtual environment for `make test-clients`:
#
#   tests/clients/build_env.sh maxtext      # -> $CLIENTS_DIR/maxtext (default .clients/)
#
# MaxText 0.2.5 needs Python >= 3.12: CLIENT_PYTHON, else pyenv's 3.12.x, else python3.12.
# Packages come from the registry, pinned in tests/clients/<name>.lock. Idempotent: a stamp
# records the lock it was built from. Prints the venv's python on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
NAME="${1:?usage: build_env.sh maxtext}"
LOCK="$HERE/$NAME.lock"
CLIENTS_DIR="${CLIENTS_DIR:-$(cd "$HERE/../.." && pwd)/.clients}"
VENV="$CLIENTS_DIR/$NAME"
STAMP="$VENV/.built-from"

if [ ! -f "$LOCK" ]; then
  echo "error: no lock file $LOCK" >&2
  exit 2
fi
want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
python="${CLIENT_PYTHON:-}"
if [ -z "$python" ] && command -v pyenv > /dev/null; then
  version="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | tail -1 || true)"
  [ -n "$version" ] && python="$(pyenv root)/versions/$version/bin/python"
fi
python="${python:-python3.12}"
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 12)' 2> /dev/null; then
  echo "error: $NAME needs Python >= 3.12; set CLIENT_PYTHON=/path/to/python3.12" >&2
  exit 2
fi
echo "clients: building $VENV from $(basename "$LOCK") with $python" >&2
rm -rf "$VENV"
"$python" -m venv "$VENV"
set +e
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$LOCK" 2>&1 |
  grep -v "is ignored: it is neither" >&2
status="${PIPESTATUS[0]}"
set -e
if [ "$status" -ne 0 ]; then
  echo "error: installing $(basename "$LOCK") into $VENV failed (pip exit $status)" >&2
  exit 1
fi
echo "$want" > "$STAMP"
echo "$VENV/bin/python"
