"""The vLLM adapter with the real shim (on the fake CUDA driver, device memory = host memory): vLLM's
real allocation function puts the KV tensors in real lazy regions, vLLM's real Scheduler runs a load
larger than a 24 MiB budget, and the shim's own page states decide: at every step every held block
is IN_USE, the budget refuses pages and requests are preempted (never an exception), all requests
finish, and once idle only the null block's pages stay in use.

Runs in a child process (the shim starts once per process with the budget) when KVCACHED_TEST_SHIM
and KVCACHED_CUDA_DRIVER are set and vLLM is importable.
"""

import contextlib
import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HOOKS = os.path.join(HERE, "..", "..", "hooks", "python")
SHIM = os.environ.get("KVCACHED_TEST_SHIM", "")

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except Exception:  # noqa: BLE001
    HAVE_VLLM = False

CHILD = r"""
import contextlib, ctypes, json, os, sys
from unittest import mock
sys.path.insert(0, os.environ["TEST_DIR"])
import torch
import vllm_support as V
from kvcached_hook import capi as C
from kvcached_hook.engines import vllm as A
from kvcached_hook.engines.vllm import scheduler_side, worker

api = C.load(os.environ["KVCACHED_TEST_SHIM"])
assert api is not None and api.enabled(), "shim did not start: " + (api.last_error() if api else "not loadable")
PAGE = api.stats(0)["page_size"]
regions = []
real_zeros = torch.zeros

def zeros(*size, dtype=None, device=None, **kw):
    # Stand-in for the shim's MemPool on a CPU: a big allocation becomes a lazy region (reads zeros).
    shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
    shape = torch.Size(shape)
    item = real_zeros((), dtype=dtype).element_size()
    nbytes = shape.numel() * item
    if nbytes < PAGE:
        return real_zeros(*size, dtype=dtype, device=device, **kw)
    base = api.region_create(0, (nbytes + PAGE - 1) // PAGE * PAGE, C.REGION_LAZY)
    regions.append(base)
    raw = (ctypes.c_byte * nbytes).from_address(base)
    return torch.frombuffer(raw, dtype=torch.uint8).view(dtype or torch.float32).view(shape)

worker.overrides.update(api=api, require_cuda=False, use_pool=False)
scheduler_side.overrides["idle_thread"] = False
assert A.patch(), A.PATCHES.reason
vllm_config = V.make_vllm_config(256)
config = V.kv_cache_config(vllm_config, "big")
with mock.patch.object(torch, "zeros", zeros):
    V.build_worker_cache(vllm_config, config)
scheduler = V.make_scheduler(vllm_config, config)
adapter = scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"]
layout = adapter.tracker.layout
requests = [V.make_request(f"r{i}", [1 + i] * 200, 100) for i in range(12)]
for request in requests:
    scheduler.add_request(request)
violations = []

def check(stage, _out):
    for block in adapter.held_blocks():
        for addr, length in layout.block_ranges(block):
            for probe in (addr, addr + length - 1):
                if api.page_state(probe) != C.PAGE_IN_USE:
                    violations.append(f"{stage} step {adapter.tracker.step}: block {block} at {probe:#x}")

V.run_loop(scheduler, check=check, max_steps=5000)
adapter.hooks.idle_tick(now=0.0)
adapter.hooks.idle_tick(now=1e6)
snap = adapter.snapshot()
print(json.dumps({
    "violations": violations[:5], "unfinished": scheduler.get_num_unfinished_requests(),
    "refusals": snap["refusals"], "errors": snap["errors"], "preemptions": sum(r.num_preemptions for r in requests),
    "in_use_after": sum(api.region_info(b).in_use_pages for b in regions),
    "null_pages": len(adapter.entry.pinned_units) * len(regions), "regions": len(regions),
    "acquire_calls": snap["acquire_calls"], "release_calls": snap["release_calls"], "steps": snap["steps"],
}))
"""


@unittest.skipUnless(
    HAVE_VLLM and SHIM and os.path.isfile(SHIM) and os.environ.get("KVCACHED_CUDA_DRIVER"),
    "needs vLLM, KVCACHED_TEST_SHIM and KVCACHED_CUDA_DRIVER",
)
class VllmRealShimTest(unittest.TestCase):
    def test_held_blocks_are_in_use_pages_and_a_small_budget_preempts(self):
        name = f"pytest_vllmshim_{os.getpid()}_{time.monotonic_ns() % 10**9}"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([p for p in (os.environ.get("PYTHONPATH"), HOOKS, HERE) if p]),
            TEST_DIR=HERE,
            KVCACHED_IPC_NAME=name,
            KVCACHED_BUDGET="24M",
            KVCACHED_MAP_AHEAD_PAGES="0",
            KVCACHED_MIN_RESERVED_PAGES="0",
            KVCACHED_PAGE_PREALLOC_ENABLED="false",
            KVCACHED_AUTOPATCH="0",
        )
        try:
            done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=900)
        finally:
            with contextlib.suppress(OSError):
                os.remove(f"/dev/shm/kvcached_{name}")
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(result)
        self.assertEqual(result["violations"], [])
        self.assertEqual(result["unfinished"], 0)
        self.assertEqual(result["errors"], 0)
        self.assertGreater(result["refusals"], 0, f"the budget never refused: {result}")
        self.assertGreater(result["preemptions"], 0, f"no request was preempted: {result}")
        self.assertLessEqual(result["in_use_after"], result["null_pages"], result)


if __name__ == "__main__":
    unittest.main()
