#!/usr/bin/env bash
# One command for the tests: installs what is missing, builds, and runs every test this machine
# can run (GPU tests skip cleanly where there is no GPU). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 600 "$@"
