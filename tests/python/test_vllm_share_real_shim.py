"""The vLLM adapter acting on the sharing policy with the real shim and its real ledger (on the fake
CUDA driver, device memory = host memory): engine A (vLLM's real Scheduler, its KV cache in real
lazy regions) fills a 64 MiB budget; then process B, a small program on the C API, asks for
memory and is refused. A's verdicts come from the ledger: A stops admitting, gives cached blocks
and/or preempts requests, and B, asking again after each of A's steps, gets its fair
share within a bounded number of A's steps (exactly: A publishes its unit, one page in each KV tensor, and shares are in each
engine's units), after which the episode ends (A's verdict is ok again); A never goes below its
own share, every block A holds
is IN_USE at every step, and all of A's requests finish with their full output.

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

# Process B: asks for pages up to its fair share whenever told to ("grow"), keeps what it gets.
HELPER = r"""
import json, os, sys
from kvcached_hook import capi as C
api = C.load(os.environ["KVCACHED_TEST_SHIM"])
assert api is not None and api.enabled(), api.last_error() if api else "no shim"
page = api.stats(0)["page_size"]
base = api.region_create(0, 64 * page, C.REGION_LAZY)
held = refused = 0
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if line.strip() != "grow":
        break
    while True:
        verdict = api.share_verdict(0)  # held and share in bytes (its zero memory is outside)
        if verdict.held_bytes + page > verdict.fair_share_bytes:
            break
        if api.acquire([(base + held * page, page)]) != C.OK:
            refused += 1
            break
        held += 1
    verdict = api.share_verdict(0)
    print(json.dumps({"held": verdict.held_bytes // page, "share": verdict.fair_share_bytes // page,
                      "refused": refused, "action": verdict.action}), flush=True)
"""

CHILD = r"""
import json, os, subprocess, sys, time
from unittest import mock
sys.path.insert(0, os.environ["TEST_DIR"])
import torch
import real_shim_support as R
import vllm_support as V
from kvcached_hook import capi as C
from kvcached_hook.engines import vllm as A
from kvcached_hook.engines.vllm import scheduler_side, worker

api = R.load_shim()
page = api.stats(0)["page_size"]
regions = []
zeros = R.lazy_allocator(api, torch.zeros, regions)
worker.overrides.update(api=api, require_cuda=False, use_pool=False)
scheduler_side.overrides["idle_thread"] = False
assert A.patch(), A.PATCHES.reason
vllm_config = V.make_vllm_config(768, max_num_seqs=64, max_tokens_per_step=1024)
config = V.kv_cache_config(vllm_config, "big")  # 64 KiB blocks: 32 per 2 MiB page
with mock.patch.object(torch, "zeros", zeros):
    V.build_worker_cache(vllm_config, config)
scheduler = V.make_scheduler(vllm_config, config)
adapter = scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"]
layout = adapter.tracker.layout
violations = []

def check(stage, _out):
    for block in adapter.held_blocks():
        for addr, length in layout.block_ranges(block):
            for probe in (addr, addr + length - 1):
                if api.page_state(probe) != C.PAGE_IN_USE:
                    violations.append(f"{stage} step {adapter.tracker.step}: block {block} at {probe:#x}")

def step():
    out = scheduler.schedule()
    check("scheduled", out)
    scheduler.update_from_output(out, V.fake_output(scheduler, out))
    check("processed", out)

# B starts first (its region exists; its zero memory is outside the budget) and waits.
helper = subprocess.Popen([sys.executable, "-c", os.environ["SHARE_HELPER"]], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=os.environ)
assert json.loads(helper.stdout.readline())["ready"]

# A: short requests that finish (their blocks stay cached), then more long ones than the budget holds.
short = [V.make_request(f"s{i}", [300 + i] * 64, 2) for i in range(8)]
for request in short:
    scheduler.add_request(request)
for _ in range(6):
    step()
long = [V.make_request(f"r{i}", [1 + i] * 200, 100) for i in range(30)]
for request in long:
    scheduler.add_request(request)
fill_steps = 0
while adapter.tracker.refusals == 0 and fill_steps < 200:
    step()
    fill_steps += 1
full = api.share_verdict(0)

# B asks for its share and is refused; then after each of A's steps it asks again.
def grow():
    helper.stdin.write("grow\n")
    helper.stdin.flush()
    return json.loads(helper.stdout.readline())

try:
    b = grow()
    b_first = b
    trace = []
    reached = None
    for n in range(1, 81):
        step()
        time.sleep(0.005)  # the preemption bound is measured in time (KVCACHED_SHARE_PREEMPT_MS)
        a_action = adapter.hooks.share.action
        b = grow()
        va = api.share_verdict(0)
        vs = adapter.hooks.share.verdict
        trace.append({"step": n, "a_action": a_action, "give": (vs.give_bytes // page) if vs else None,
                      "starved_ms": vs.starved_ms if vs else None, "a_preempted": adapter.hooks.share.preempted,
                      "a_given": adapter.hooks.share.given_bytes // page, "a_held": va.held_bytes // page,
                      "units": sum(adapter.tracker.acq), "acq_calls": adapter.tracker.acquire_calls,
                      "rel_units": adapter.tracker.units_released, "sync": adapter.tracker.sync_backings,
                      "a_share": va.fair_share_bytes // page, "a_verdict": va.action,
                      "b_held": b["held"], "b_share": b["share"], "b_action": b["action"]})
        if reached is None and b["held"] == b["share"]:  # exactly: shares are in each engine's units
            reached = n
        if reached is not None and n >= reached + 5:
            break
    # A finishes everything in what it has left.
    V.run_loop(scheduler, check=check, max_steps=5000)
    b_end = grow()
finally:
    helper.stdin.write("exit\n")
    helper.stdin.flush()
    helper.wait(timeout=30)
snap = adapter.snapshot()
print(json.dumps({
    "page": page, "fill_steps": fill_steps, "a_full_held": full.held_bytes // page, "b_first": b_first,
    "reached": reached, "trace": trace, "b_end": b_end, "violations": violations[:5],
    "unfinished": scheduler.get_num_unfinished_requests(),
    "outputs": sorted({len(r.output_token_ids) for r in long}),
    "share": {k: v for k, v in snap.items() if k.startswith("share_")}, "errors": snap["errors"],
    "a_unit_published": adapter.hooks.share.unit_published, "a_unit": adapter.hooks.share.unit_bytes() // page,
}))
"""


@unittest.skipUnless(HAVE_VLLM and R.have_shim(), "needs vLLM, KVCACHED_TEST_SHIM and KVCACHED_CUDA_DRIVER")
class VllmShareRealShimTest(unittest.TestCase):
    def test_a_refused_process_gets_its_share_from_the_vllm_engine_within_bounded_steps(self):
        # The caller's PYTHONPATH first: ctest puts a vLLM overlay release there.
        path = [p for p in (os.environ.get("PYTHONPATH"), R.HOOKS, R.HERE) if p]
        result = R.run_child(
            self, CHILD, "pytest_vllmshare", path, timeout=900,
            SHARE_HELPER=HELPER, KVCACHED_BUDGET="64M", KVCACHED_MAP_AHEAD_PAGES="0",
            KVCACHED_MIN_RESERVED_PAGES="0", KVCACHED_MAX_RESERVED_PAGES="1",
            KVCACHED_PAGE_PREALLOC_ENABLED="false", KVCACHED_AUTOPATCH="0", KVCACHED_SHARE_PREEMPT_MS="100",
        )
        trace = result.pop("trace")
        print(result)
        for row in trace:
            print(row)
        self.assertEqual(result["violations"], [])
        self.assertEqual(result["errors"], 0)
        b_first = result["b_first"]
        # A fills the 32 pages (within the shim's one spare page).
        self.assertGreaterEqual(result["a_full_held"] + b_first["held"], 31, f"A did not fill the budget: {result}")
        self.assertLess(b_first["held"], b_first["share"] - 1, f"B was not refused: {result}")
        self.assertGreater(b_first["refused"], 0, b_first)
        # A published its unit (one page in each of its two KV tensors): shares are in each
        # engine's units, so B can reach its share exactly.
        self.assertTrue(result["a_unit_published"], result)
        self.assertEqual(result["a_unit"], 2, result)
        # B gets its share (the ledger's fair share, exactly) within a bounded number of A's
        # steps: the preemption bound (100 ms at ~5 ms a step) plus a few steps.
        self.assertIsNotNone(result["reached"], f"B never got its share: {trace[-3:]}")
        self.assertLessEqual(result["reached"], 40, trace)
        self.assertGreaterEqual(b_first["share"], 15, b_first)  # half the budget, within a unit
        # A acted: admissions held back, pages given (cached blocks and/or preemptions).
        share = result["share"]
        self.assertGreater(share["share_stopped_steps"], 0, share)
        self.assertGreater(share["share_refused_admissions"], 0, share)
        self.assertGreater(share["share_given_bytes"], 0, share)
        self.assertGreater(share["share_cached_blocks_given"] + share["share_preempted_requests"], 0, share)
        actions = {row["a_action"] for row in trace}
        self.assertTrue(actions & {"give_cached", "preempt"}, actions)
        # A never went below its share.
        for row in trace:
            self.assertGreaterEqual(row["a_held"], row["a_share"], row)
        # The episode ends: once B has its share, A's verdict is ok again (from the ledger at once,
        # and in A's own next step), B's too; A gives and preempts nothing more, and B keeps its
        # pages.
        after = [row for row in trace if row["step"] >= result["reached"]]
        self.assertEqual({row["a_verdict"] for row in after}, {"ok"}, after)
        self.assertEqual({row["a_action"] for row in after if row["step"] > result["reached"]}, {"ok"}, after)
        self.assertEqual({row["b_action"] for row in after}, {"ok"}, after)
        self.assertEqual(share["share_action"], "ok", share)
        self.assertEqual(share["share_episodes"], 1, share)
        self.assertEqual({(row["a_given"], row["a_preempted"]) for row in after}, {(after[0]["a_given"], after[0]["a_preempted"])})
        self.assertEqual(result["b_end"]["held"], trace[-1]["b_held"])
        # A finished every request in full, in what it had left.
        self.assertEqual(result["unfinished"], 0)
        self.assertEqual(result["outputs"], [100])


if __name__ == "__main__":
    unittest.main()
