#!/usr/bin/env bash
# Creates bench/.venv with the Python peers (gevent, gipc) of the benchmark. Idempotent: a venv that
# already has the pinned versions is left as it is. Prints the versions it ends with. gevent and
# greenlet must come as wheels (no C build here); gipc is pure Python and PyPI has only its sdist.
set -euo pipefail

GEVENT_VERSION=26.9.0
GIPC_VERSION=1.8.0   # pure Python, published as an sdist only

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi

if ! "$venv/bin/python" - "$GEVENT_VERSION" "$GIPC_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("gevent"), version("gipc")) == (sys.argv[1], sys.argv[2]) else 1)
PY
then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --only-binary=gevent,greenlet \
        "gevent==$GEVENT_VERSION" "gipc==$GIPC_VERSION"
fi

# wrk drives the HTTP row (a Debian package).
if ! command -v wrk >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
            || echo "setup.sh: could not install wrk: the HTTP row will fail" >&2
    else
        echo "setup.sh: wrk is missing and apt-get is not available: the HTTP row will fail" >&2
    fi
fi

"$venv/bin/python" - <<'PY'
import platform
from importlib.metadata import version
print(f"python {platform.python_version()} ({platform.python_implementation()})")
for name in ("gevent", "greenlet", "gipc"):
    print(f"{name} {version(name)}")
PY
