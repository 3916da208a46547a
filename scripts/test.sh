#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run them.
#   bash scripts/test.sh [extra pytest args]
# System packages (Debian): chromium for the browser test, poppler-utils for PDF rendering checks.
# Python packages: a virtual environment in .venv with requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ $status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
[ $status -eq 0 ] || exit $status

# The load script against the real server, small and bounded (loopback only).
.venv/bin/python scripts/load_test.py --spawn --clients 4 --requests 3 --timeout 120
