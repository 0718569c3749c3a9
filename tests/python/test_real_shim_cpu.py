"""The hook with the real shim (on the fake CUDA driver, whose device memory is host memory) and the
real engine on the CPU: the KV tensors are placed in lazy shim regions, so the shim's own page
states, reference counts and budget decide. Outputs must equal a run without the hook; a budget
that refuses pages must make requests wait; an idle engine must give its pages back.

Runs when KVCACHED_TEST_SHIM (built libkvcached_shim.so) and KVCACHED_CUDA_DRIVER (fake
libcuda.so.1) are set and torch + transformers are importable; each case runs in a child process.
"""

import unittest

import real_shim_support as R

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    HAVE_ENGINE = True
except Exception:  # noqa: BLE001
    HAVE_ENGINE = False

CHILD = r"""
import json, os, sys
from unittest import mock
import torch, transformers
sys.path.insert(0, os.environ["TEST_DIR"])
from kvcached_hook import capi as C
from kvcached_hook.engines import transformers_cb as T
import real_shim_support as R
import test_transformers_cpu as H

transformers.logging.set_verbosity_error()
api = R.load_shim()
regions = []
empty = R.lazy_allocator(api, torch.empty, regions)  # the pool's stand-in: big torch.empty calls
T._Context.make_pool = lambda self: "regions"
T._Context.use_pool = lambda self, pool: mock.patch.object(torch, "empty", empty)
T.patch()
T._overrides.update(api=None, require_cuda=False, use_pool=True)

def model():
    torch.manual_seed(0)
    cfg = H.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
    cfg._attn_implementation = "sdpa"
    return H.LlamaForCausalLM(cfg).eval()

H.BLOCK_SIZE = 64   # 64 tokens x 4 heads x 64 dims x 4 bytes = 64 KiB per block: 32 blocks per 2 MiB page
m = model()
gen = torch.Generator().manual_seed(3)  # 32 prompts of 100-200 tokens (+64 new): ~115 blocks, 4+ pages per tensor
inputs = [torch.randint(1, 512, (int(n),), generator=gen).tolist() for n in torch.randint(100, 201, (32,), generator=gen)]
C.reset_for_tests()
T._overrides["api"] = None
os.environ.pop("KVCACHED_SHIM_PATH", None)
orig_load = C.load
C.load = lambda *a: None
base, errors, _ = H.run(m, inputs, max_new_tokens=64, num_blocks=256)
assert not errors
C.load = lambda *a: api
T._overrides["api"] = api
out, errors, snaps = H.run(m, inputs, max_new_tokens=64, num_blocks=256, keep_running_s=float(os.environ.get("KEEP_S", "0")))
assert not errors, errors
snap = snaps[0] if snaps else {}
in_use = sum(api.region_info(b).in_use_pages for b in regions)
print(json.dumps({"same": out == base, "n": len(out), "snap": snap, "in_use_pages_after": in_use,
                  "regions": len(regions), "stats": api.stats(0)}))
"""


@unittest.skipUnless(
    HAVE_ENGINE and R.have_shim(),
    "needs torch + transformers, KVCACHED_TEST_SHIM and KVCACHED_CUDA_DRIVER",
)
class RealShimEngineTest(unittest.TestCase):
    def run_child(self, **env):
        # Each case takes ~15 s; 240 s lets a hung one fail (and clean up) within ctest's 600 s for both.
        return R.run_child(self, CHILD, "pytest_realshim", [R.HOOKS, R.HERE], timeout=240, **env)

    def test_identical_outputs_and_pages_come_back(self):
        result = self.run_child(KVCACHED_HOOK_IDLE_TRIM_S="0.2", KEEP_S="1.5")
        self.assertTrue(result["same"], result)
        snap = result["snap"]
        self.assertTrue(snap, "the hook did not manage the cache")
        self.assertGreater(snap["pages_acquired_total"], 0)
        self.assertEqual(snap["errors"], 0)
        # After the idle trim only the padding pages (one per tensor) stay in use.
        self.assertLessEqual(result["in_use_pages_after"], result["regions"])

    def test_budget_refusals_make_requests_wait(self):
        result = self.run_child(
            KVCACHED_BUDGET="22M",  # 11 pages: 4 of padding, 7 for blocks (the zero memory is outside)
            KVCACHED_MAP_AHEAD_PAGES="0",
            KVCACHED_MIN_RESERVED_PAGES="0",
            KVCACHED_PAGE_PREALLOC_ENABLED="false",
        )
        self.assertTrue(result["same"], result)
        snap = result["snap"]
        self.assertGreater(snap["refusals"], 0, f"the budget never refused a page: {result}")
        self.assertEqual(snap["errors"], 0)


if __name__ == "__main__":
    unittest.main()
