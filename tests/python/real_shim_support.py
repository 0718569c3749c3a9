"""Shared set-up of the tests that run an engine with the real shim on the fake CUDA driver (device
memory = host memory): test_real_shim_cpu (transformers) and test_vllm_real_shim (vLLM).

Parent side: whether the shim is there, and one child process per case with a fresh ledger segment
(the shim starts once per process, with the budget of its environment). Child side (the child puts
TEST_DIR on sys.path and imports this module): the shim loaded, and the stand-in for the shim's
MemPool on a CPU, an allocation function whose allocations of a page or more become lazy regions.
"""

import contextlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import shm_cleanup  # noqa: E402
HOOKS = os.path.join(HERE, "..", "..", "hooks", "python")
SHIM = os.environ.get("KVCACHED_TEST_SHIM", "")


def have_shim() -> bool:
    """KVCACHED_TEST_SHIM names a built shim and KVCACHED_CUDA_DRIVER the fake driver."""
    return bool(SHIM and os.path.isfile(SHIM) and os.environ.get("KVCACHED_CUDA_DRIVER"))


def run_child(test, code: str, prefix: str, pythonpath: list, timeout: float, **env) -> dict:
    """Runs `code` in a child process with its own ledger segment (a segment that exists keeps the
    budget it was made with), asserts it exited 0 and returns the JSON object on its last line."""
    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    shm_cleanup.remove_orphaned_segments(prefix)  # of earlier runs killed by ctest's timeout
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath), TEST_DIR=HERE, KVCACHED_IPC_NAME=name, **env)
    try:
        done = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=timeout)
    finally:
        with contextlib.suppress(OSError):
            os.remove(f"/dev/shm/kvcached_{name}")
    test.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- child side


def load_shim():
    """The shim of KVCACHED_TEST_SHIM, started (fails the child otherwise)."""
    from kvcached_hook import capi as C

    api = C.load(os.environ["KVCACHED_TEST_SHIM"])
    assert api is not None and api.enabled(), "shim did not start: " + (api.last_error() if api else "not loadable")
    return api


def lazy_allocator(api, real, regions: list):
    """`real` (torch.empty or torch.zeros) where an allocation of a page or more becomes a lazy shim
    region (it reads zeros), the stand-in for the shim's MemPool on a CPU; each region's base is
    appended to `regions`."""
    import ctypes

    import torch
    from kvcached_hook import capi as C

    page = api.stats(0)["page_size"]

    def allocate(*size, dtype=None, device=None, **kw):
        shape = torch.Size(size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size)
        dtype = dtype or torch.get_default_dtype()
        nbytes = shape.numel() * real((), dtype=dtype).element_size()
        if nbytes < page:
            return real(*size, dtype=dtype, device=device, **kw)
        base = api.region_create(0, (nbytes + page - 1) // page * page, C.REGION_LAZY)
        regions.append(base)
        raw = (ctypes.c_byte * nbytes).from_address(base)
        return torch.frombuffer(raw, dtype=torch.uint8).view(dtype).view(shape)

    return allocate
