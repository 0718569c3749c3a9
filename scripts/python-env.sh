#!/usr/bin/env bash
# Creates, or reuses, the virtual environment the engine-hook tests run in (torch, transformers
# and vLLM from PyPI, as pinned in tests/python/requirements-cpu.txt), and prints its python.
# The environment lives outside the checkout, keyed by the requirements and the interpreter, so
# fresh clones on the same machine (CI) reuse it; the first install downloads a few GB.
#   KVCACHED_PYENV_ROOT   where environments live (default ~/.cache/kvcached-shim)
# vLLM releases other than the pinned one are installed beside it without dependencies, one
# overlay folder each ($venv/overlays/vllm-X.Y.Z), put first on PYTHONPATH by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/python/requirements-cpu.txt
overlays=(0.24.0)
py_base=""
for cand in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 python3; do
  if "$cand" -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; then
    py_base=$(command -v "$cand"); break
  fi
done
[ -n "$py_base" ] || { echo "python-env: no python3 >= 3.10 found; install python3" >&2; exit 1; }
key=$( (cat "$req"; echo "${overlays[*]}"; "$py_base" -VV) | sha256sum | cut -c1-12)
root=${KVCACHED_PYENV_ROOT:-$HOME/.cache/kvcached-shim}
venv=$root/pyenv-$key
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9  # one installer at a time; the others wait and then reuse
if [ ! -f "$venv/.complete" ]; then
  echo "python-env: creating $venv with $("$py_base" -V) (torch, transformers, vLLM; a few GB, a few minutes the first time)" >&2
  rm -rf "$venv"
  "$py_base" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q --progress-bar off -r "$req" >&2
  for v in "${overlays[@]}"; do
    "$venv/bin/python" -m pip install -q --no-deps --progress-bar off --target "$venv/overlays/vllm-$v" "vllm==$v" >&2
  done
  touch "$venv/.complete"
  echo "python-env: ready" >&2
fi
echo "$venv/bin/python"
