#!/usr/bin/env bash
# One command for the demo: installs what is missing, builds, and runs examples/demo on the GPU
# when there is one, else on the fake CUDA driver.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
exec examples/demo/run.sh build
