#!/usr/bin/env bash
# Installs everything chaosloco needs into ./.venv, idempotently: a second run
# with unchanged requirements does nothing but check a stamp.
#   ./install.sh            Python deps + the project (editable) + headless Chromium
#   CHAOSLOCO_NO_APT=1 ./install.sh   skip the Debian packages (no root, no reports browser test)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "install: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi

stamp_want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .install-stamp 2>/dev/null)" != "$stamp_want" ]; then
    echo "install: Python packages (torch is a large download the first time)"
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
    .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
    echo "$stamp_want" > .install-stamp
fi

# Headless Chromium renders reports in the browser test. Debian's package only.
if [ -z "${CHAOSLOCO_NO_APT:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install: Debian's chromium (for the report rendering test)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "install: chromium not installed (needs root and apt-get); the browser test will skip" >&2
    fi
fi
echo "install: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
