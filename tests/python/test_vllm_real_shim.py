"""The vLLM adapter with the real shim (on the fake CUDA driver, device memory = host memory): vLLM's
real allocation function puts the KV tensors in real lazy regions, vLLM's real Scheduler runs a load
larger than a 10 MiB budget, and the shim's own page states decide: at every step every held block
is IN_USE, the budget refuses pages and requests are preempted (never an exception), all requests
finish, and once idle only the null block's pages stay in use.

Runs in a child process (the shim starts once per process with the budget) when KVCACHED_TEST_SHIM
and KVCACHED_CUDA_DRIVER are set and vLLM is importable.
"""

import os
import unittest

import real_shim_support as R

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except Exception:  # noqa: BLE001
    HAVE_VLLM = False

CHILD = r"""
import json, os, sys
from unittest import mock
sys.path.insert(0, os.environ["TEST_DIR"])
import torch
import real_shim_support as R
import vllm_support as V
from kvcached_hook import capi as C
from kvcached_hook.engines import vllm as A
from kvcached_hook.engines.vllm import scheduler_side, worker

api = R.load_shim()
regions = []
zeros = R.lazy_allocator(api, torch.zeros, regions)  # the pool's stand-in: big torch.zeros calls

worker.overrides.update(api=api, require_cuda=False, use_pool=False)
scheduler_side.overrides["idle_thread"] = False
assert A.patch(), A.PATCHES.reason
# The 8 MiB-page test grows these: a page there spans 128 of the "big" shape's 64 KiB blocks.
vllm_config = V.make_vllm_config(int(os.environ.get("NUM_BLOCKS", "256")),
                                 max_num_seqs=int(os.environ.get("MAX_SEQS", "8")))
config = V.kv_cache_config(vllm_config, "big")
with mock.patch.object(torch, "zeros", zeros):
    V.build_worker_cache(vllm_config, config)
scheduler = V.make_scheduler(vllm_config, config)
adapter = scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"]
layout = adapter.tracker.layout
requests = [V.make_request(f"r{i}", [1 + i] * 200, 100) for i in range(int(os.environ.get("NUM_REQUESTS", "12")))]
for request in requests:
    scheduler.add_request(request)
violations = []
break_at = int(os.environ.get("BREAK_AT_STEP", "0"))  # release a held page behind the tracker's back
broken = []

def check(stage, _out):
    if break_at and not broken and stage == "processed" and adapter.tracker.step >= break_at:
        block = max(b for b in adapter.held_blocks() if b != 0)
        addr, _ = layout.block_ranges(block)[0]
        page = api.stats(0)["page_size"]
        assert api.release([(addr - addr % page, page)]) == C.OK, api.last_error()  # the tracker still counts it
        broken.append(block)
    if broken:
        return
    for block in adapter.held_blocks():
        for addr, length in layout.block_ranges(block):
            for probe in (addr, addr + length - 1):
                if api.page_state(probe) != C.PAGE_IN_USE:
                    violations.append(f"{stage} step {adapter.tracker.step}: block {block} at {probe:#x}")

V.run_loop(scheduler, check=check, max_steps=5000)
adapter.hooks.idle_tick(now=0.0)
adapter.hooks.idle_tick(now=1e6)
scheduler.shutdown()
snap = adapter.snapshot()
observer = adapter.hooks.observer
sanity = observer.sanity
print(json.dumps({
    "violations": violations[:5], "unfinished": scheduler.get_num_unfinished_requests(),
    "page_size": api.stats(0)["page_size"],
    "refusals": snap["refusals"], "errors": snap["errors"], "preemptions": sum(r.num_preemptions for r in requests),
    "in_use_after": sum(api.region_info(b).in_use_pages for b in regions),
    "null_pages": len(adapter.entry.pinned_units) * len(regions), "regions": len(regions),
    "acquire_calls": snap["acquire_calls"], "release_calls": snap["release_calls"], "steps": snap["steps"],
    "sanity_checks": sanity.checks if sanity else None, "sanity_violations": sanity.violations[:3] if sanity else None,
    "broken": broken, "report_status": api.report_engine_steps(0, snap["steps"], 0, 0),
    "step_reports": snap["step_reports"], "reporter_active": observer.reporter.active,
}))
"""


@unittest.skipUnless(
    HAVE_VLLM and R.have_shim(),
    "needs vLLM, KVCACHED_TEST_SHIM and KVCACHED_CUDA_DRIVER",
)
class VllmRealShimTest(unittest.TestCase):
    def run_engine(self, **env):
        # The caller's PYTHONPATH first: ctest puts a vLLM overlay release there.
        path = [p for p in (os.environ.get("PYTHONPATH"), R.HOOKS, R.HERE) if p]
        settings = dict(
            KVCACHED_BUDGET="10M",  # 5 pages (the zero memory is outside the budget)
            KVCACHED_MAP_AHEAD_PAGES="0",
            KVCACHED_MIN_RESERVED_PAGES="0",
            KVCACHED_PAGE_PREALLOC_ENABLED="false",
            KVCACHED_AUTOPATCH="0",
        )
        settings.update(env)
        result = R.run_child(self, CHILD, "pytest_vllmshim", path, timeout=900, **settings)
        print(result)
        return result

    def assert_budget_pressed_and_every_held_block_backed(self, result):
        self.assertEqual(result["violations"], [])
        self.assertEqual(result["unfinished"], 0)
        self.assertEqual(result["errors"], 0)
        self.assertGreater(result["refusals"], 0, f"the budget never refused: {result}")
        self.assertGreater(result["preemptions"], 0, f"no request was preempted: {result}")
        self.assertLessEqual(result["in_use_after"], result["null_pages"], result)

    def test_held_blocks_are_in_use_pages_and_a_small_budget_preempts(self):
        result = self.run_engine()
        self.assertIsNone(result["sanity_checks"], "the sanity check ran without KVCACHED_SANITY_CHECK")
        # Per-step costs: reported when the shim has kvcached_report_engine_steps, silently not otherwise.
        self.assertIn(result["report_status"], (0, 7), "kvcached_report_engine_steps: OK or ERR_UNSUPPORTED")
        self.assertEqual(result["reporter_active"], result["report_status"] == 0)
        if result["report_status"] == 0:
            self.assertGreater(result["step_reports"], 0)
        self.assert_budget_pressed_and_every_held_block_backed(result)

    def test_with_8_mib_pages_held_blocks_stay_in_use_and_the_budget_still_preempts(self):
        # KVCACHED_PAGE_SIZE_MB=8 (the faster growth measured on an H100): a page spans 4x the
        # blocks of a 2 MiB one, so the tracker's block -> page arithmetic changes for every block.
        # 24 requests of 300 tokens at once: ~450 blocks, 4 pages a tensor, 8 in all, over a budget
        # of 5 pages (the null block's page of each tensor is one of them).
        result = self.run_engine(KVCACHED_PAGE_SIZE_MB="8", KVCACHED_BUDGET="40M", NUM_BLOCKS="1024",
                                 NUM_REQUESTS="24", MAX_SEQS="32")
        self.assertEqual(result["page_size"], 8 << 20)
        self.assert_budget_pressed_and_every_held_block_backed(result)

    def test_sanity_check_zero_violations_then_a_released_held_page_is_reported(self):
        clean = self.run_engine(KVCACHED_SANITY_CHECK="1")
        self.assertEqual(clean["violations"], [])
        self.assertEqual(clean["sanity_violations"], [])
        self.assertEqual(clean["unfinished"], 0)
        self.assertGreater(clean["sanity_checks"], 50)
        self.assertEqual(clean["sanity_checks"], clean["steps"], "not one check per schedule()")
        self.assertGreater(clean["refusals"], 0, "the budget never refused: the run proves little")
        broken = self.run_engine(KVCACHED_SANITY_CHECK="1", BREAK_AT_STEP="20")
        self.assertEqual(len(broken["broken"]), 1)
        self.assertTrue(broken["sanity_violations"], "a held page released behind the tracker was not reported")
        first = broken["sanity_violations"][0]
        self.assertIn("expected IN_USE", first)
        self.assertIn("request r", first)  # the owner is named


if __name__ == "__main__":
    unittest.main()
