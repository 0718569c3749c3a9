#!/usr/bin/env bash
# Runs on the GPU machine: driver facts + the software there (versions, transformers' continuous
# batching sources copied to $OUT for reading offline).
set -u
OUT=${OUT:-/tmp/probe-out}; mkdir -p "$OUT"
nvidia-smi -L; nvidia-smi --query-gpu=driver_version,memory.total --format=csv
ldd --version | head -1; nvcc --version | tail -1; cmake --version | head -1
g++ -O2 -I/usr/local/cuda/include scripts/probe/vmm_semantics.cpp -o /tmp/vmm -lcuda -ldl && /tmp/vmm
python3 - <<'PY'
import sys, torch, transformers, importlib, os
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__)
import transformers.generation.continuous_batching as cb
d = os.path.dirname(cb.__file__)
print("continuous_batching at", d, sorted(os.listdir(d)))
PY
d=$(python3 -c "import transformers.generation.continuous_batching as cb,os;print(os.path.dirname(cb.__file__))")
tar czf "$OUT/continuous_batching_src.tgz" -C "$(dirname "$d")" "$(basename "$d")" 2>/dev/null
t=$(python3 -c "import transformers,os;print(os.path.dirname(transformers.__file__))")
tar czf "$OUT/transformers_gen_cache_src.tgz" -C "$t" generation/utils.py cache_utils.py integrations/sdpa_paged.py integrations/flash_paged.py integrations/eager_paged.py models/llama/modeling_llama.py 2>/dev/null
python3 -c "import torch;print(torch.cuda.get_device_name(0), torch.cuda.mem_get_info())"
ls /opt/torch/.venv/lib/python3*/site-packages | grep -i -E "matplotlib|numpy|pytest" | head
ldd $(python3 -c "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib','libc10_cuda.so'))") | grep -i cuda
ls -la /dev/shm; df -h /dev/shm
