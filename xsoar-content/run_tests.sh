#!/usr/bin/env bash
# Runs the Python tests of the XSOAR content pack (standard library only: needs just python3 >= 3.10).
# Used by .ci/run. Extra arguments go to the runner, e.g. -v or -k Signing.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONDONTWRITEBYTECODE=1
exec python3 test_support/run_all.py "$@"
