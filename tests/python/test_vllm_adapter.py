"""The vLLM adapter against vLLM's real classes on the CPU (run once per supported vLLM release):
the patch surface is found and a changed signature patches nothing; KV configs made by vLLM's own
sizing (uniform, sliding-window hybrid, MLA) go through vLLM's real allocation function and its
real Scheduler, and at every step every held block's bytes lie in acquired pages; a budget refusal
makes allocate_slots answer None and the scheduler preempt, never raise; no page is released while
a batch that used it is in flight (asynchronous scheduling); prefix hits need no acquire; the prefix
cache goes back when idle and under another process's pressure; a layout that is not blocks first
is backed fully; sleep mode and multi-process workers are left alone.

Skipped (ctest SKIP) when vLLM is not importable.
"""

import collections
import gc
import os
import unittest

import vllm_support as V
from fake_capi import FakeCApi, SharedBudget

if V.HAVE_VLLM:
    from kvcached_hook import capi as C
    from kvcached_hook.engines import vllm as adapter_pkg
    from kvcached_hook.engines.vllm import registry, scheduler_side, worker
    from kvcached_hook.engines.vllm import tp as tp_mod
    from kvcached_hook.patching import PatchSet, Target
    import torch
    from vllm.v1.core import block_pool, kv_cache_manager

PAGE = 8192  # uniform block = 2 x 16 tokens x 2 heads x 16 x 2 bytes = 2 KiB: 4 blocks per page


def pinned_pages(api, adapter):
    layout = adapter.tracker.layout
    return {p for u in adapter.entry.pinned_units for a, n in layout.unit_ranges(u) for p in api.pages_of(a, n)}


def dict_made(obj, attr: str) -> bool:
    """Whether CPython keeps obj's attributes in a dict (made when something read obj.__dict__)
    rather than inline, told without reading it: the garbage collector then sees the dict, not the
    values. `attr` names one of obj's attributes."""
    value = getattr(obj, attr)
    return any(type(r) is dict and r.get(attr, dict_made) is value for r in gc.get_referents(obj))


def dict_probe_works() -> bool:
    probe = type("Probe", (), {})()
    probe.x = []
    inline = not dict_made(probe, "x")
    vars(probe)
    return inline and dict_made(probe, "x")


class _Local:
    """pinned_pages() over a worker's own entry."""

    def __init__(self, entry):
        self.entry = entry
        self.tracker = type("T", (), {"layout": entry.layout})()


def held_ranges(adapter):
    layout = adapter.tracker.layout
    return {b: layout.block_ranges(b) for b in adapter.held_blocks()}


class PatchedVllmTest(unittest.TestCase):
    """vLLM patched for the class's tests, on the CPU (fake C API, no MemPool, no idle thread)."""

    @classmethod
    def setUpClass(cls):
        worker.overrides.update(require_cuda=False, use_pool=False)
        scheduler_side.overrides["idle_thread"] = False
        if not adapter_pkg.patch():
            raise AssertionError(f"vLLM {V.vllm.__version__} not patched: {adapter_pkg.PATCHES.reason}")

    @classmethod
    def tearDownClass(cls):
        adapter_pkg.unpatch()


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class VllmAdapterTest(PatchedVllmTest):

    def setUp(self):
        registry.clear()
        self.api = None

    # ---------------------------------------------------------------- helpers
    def engine(self, kind="uniform", num_blocks=64, budget_pages=None, page=PAGE, api_cls=None, **config):
        """Worker side (vLLM's allocation, on CPU) then vLLM's Scheduler, in this process."""
        self.api = (api_cls or FakeCApi)(page_size=page, budget=SharedBudget(budget_pages))
        worker.overrides["api"] = self.api
        vllm_config = V.make_vllm_config(num_blocks, **config)
        kv_config = V.kv_cache_config(vllm_config, kind)
        self.views = V.build_worker_cache(vllm_config, kv_config)
        scheduler = V.make_scheduler(vllm_config, kv_config)
        adapter = getattr(scheduler.kv_cache_manager.block_pool, "_kvcached", None)  # not __dict__: see dict_made
        self.assertIsNotNone(adapter, "the scheduler's BlockPool was not given the worker's cache")
        return scheduler, adapter

    def worker_cache(self, build=V.build_worker_cache, **build_args):
        """Worker side only: vLLM's allocation (build) of a 32-block cache on a fake shim without
        a budget. Returns (api, vllm_config, kv_cache_config)."""
        api = FakeCApi(page_size=PAGE)
        worker.overrides["api"] = api
        vllm_config = V.make_vllm_config(32)
        config = V.kv_cache_config(vllm_config, "uniform")
        build(vllm_config, config, **build_args)
        return api, vllm_config, config

    def assert_backed(self, adapter, where=""):
        for block, ranges in held_ranges(adapter).items():
            for addr, length in ranges:
                self.assertTrue(self.api.backed(addr, length), f"{where}: held block {block} not backed")
        self.assertEqual(adapter.mismatches(), [], where)

    def add(self, scheduler, n, prompt_len=40, max_tokens=12, **kw):
        requests = [V.make_request(f"r{i}", [1 + i] * prompt_len, max_tokens, **kw) for i in range(n)]
        for request in requests:
            scheduler.add_request(request)
        return requests

    def steps_remembering(self, scheduler, adapter, memo: bool, in_flight: int = 1, where: str = ""):
        """Runs the load to its end with refused admissions decided from memory (memo) or every try
        through the exact path; returns each step's record (scheduled tokens, preemptions, acquire
        calls, free backed blocks, cached blocks; every held block checked backed) and how many
        tries memory decided."""
        from kvcached_hook.engines.vllm import allocation

        steps = []

        def check(stage, output):
            if stage == "scheduled":
                steps.append((sorted(output.num_scheduled_tokens.items()), sorted(output.preempted_req_ids or ()),
                              self.api.acquire_calls, adapter.tracker.nbfree, sorted(adapter.cached)))
            self.assert_backed(adapter, f"{where} memo {memo} {stage}")

        decide = allocation._refused_again
        if not memo:
            allocation._refused_again = lambda *_args: False
        try:
            V.run_loop(scheduler, max_steps=4000, in_flight=in_flight, check=check)
        finally:
            allocation._refused_again = decide
        self.assertFalse(scheduler.has_requests(), f"{where} memo {memo}: requests did not finish")
        return steps, adapter.admissions_memo

    # ---------------------------------------------------------------- patch surface
    def test_patch_surface_is_found_for_this_vllm(self):
        self.assertEqual(adapter_pkg.PATCHES.problems(), [])
        self.assertTrue(adapter_pkg.PATCHES.applied)
        if V.EXPECTED_VERSION:
            self.assertEqual(V.vllm.__version__, V.EXPECTED_VERSION, "the overlay's vLLM is not the one imported")
        self.assertTrue(getattr(block_pool.BlockPool.get_new_blocks, "_kvcached_wrapped", False))

    def test_the_worker_process_sees_its_own_budget_unless_the_operator_chose(self):
        api = FakeCApi(page_size=PAGE, budget=SharedBudget(None))
        worker.overrides["api"] = api
        saved = os.environ.pop("KVCACHED_VIRTUAL_MEMINFO", None)
        try:
            adapter_pkg.use_process_meminfo()
            self.assertEqual(api.meminfo_mode, C.MEMINFO_PROCESS)
            api.meminfo_mode = None
            os.environ["KVCACHED_VIRTUAL_MEMINFO"] = "false"
            adapter_pkg.use_process_meminfo()
            self.assertIsNone(api.meminfo_mode, "an operator's KVCACHED_VIRTUAL_MEMINFO was overridden")
        finally:
            os.environ.pop("KVCACHED_VIRTUAL_MEMINFO", None)
            if saved is not None:
                os.environ["KVCACHED_VIRTUAL_MEMINFO"] = saved

    def test_a_changed_signature_patches_nothing(self):
        original_free = block_pool.BlockPool.__dict__["free_blocks"]
        targets = [Target(t.module, t.owner, t.name, t.params, t.wrap) for t in adapter_pkg.TARGETS]
        renamed = [Target(t.module, t.owner, t.name, ("self", "n_blocks") if t.name == "get_new_blocks" else t.params,
                          t.wrap) for t in targets]
        fresh = PatchSet("vllm-test", renamed, version=lambda: V.vllm.__version__, lowest="0.24", below="0.27")
        adapter_pkg.unpatch()
        try:
            self.assertFalse(fresh.apply())
            self.assertIn("get_new_blocks", fresh.reason)
            self.assertIs(block_pool.BlockPool.__dict__["free_blocks"], getattr(original_free, "__wrapped__", original_free))
            other = PatchSet("vllm-test", targets, version=lambda: "0.27.0", lowest="0.24", below="0.27")
            self.assertFalse(other.apply())
            self.assertIn("outside", other.reason)
        finally:
            self.assertTrue(adapter_pkg.patch())

    # ---------------------------------------------------------------- held blocks are backed
    def run_checked(self, kind, **config):
        scheduler, adapter = self.engine(kind, **config)
        self.add(scheduler, 10, prompt_len=70, max_tokens=20)
        checks = []

        def check(stage, _out):
            checks.append(stage)
            self.assert_backed(adapter, f"{kind} {stage} step {adapter.tracker.step}")

        V.run_loop(scheduler, check=check, in_flight=2 if config.get("async_scheduling") else 1)
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assertGreater(len(checks), 20)
        snap = adapter.snapshot()
        print(f"\n[{kind}{' async' if config.get('async_scheduling') else ''}] steps {snap['steps']} units {snap['units']} "
              f"peak-free units now {snap['units_acquired']} acquire calls {snap['acquire_calls']} release calls "
              f"{snap['release_calls']} max C calls/step {snap['c_calls_per_step_max']} refusals {snap['refusals']}")
        self.assertLess(snap["units_acquired"], snap["units"], "the whole cache was backed")
        # Page-aware choice: every block was handed out already backed (by the batched acquire),
        # none had to be backed on the spot.
        self.assertEqual(snap["sync_backings"], 0)
        # Only the null block's pages stay once everything is released; idle long enough, the
        # shim is asked once (per idle spell) to give back its pages mapped ahead and its reserve.
        trims = []
        self.api.trim = lambda device: trims.append(device) or C.OK
        adapter.hooks.idle_tick(now=0.0)
        self.assertEqual(trims, [], "trimmed before KVCACHED_HOOK_IDLE_TRIM_S")
        adapter.hooks.idle_tick(now=1e6)  # idle past KVCACHED_HOOK_IDLE_TRIM_S: the prefix cache goes too
        adapter.hooks.idle_tick(now=2e6)
        self.assertEqual(trims, [0], "not once per idle spell")
        self.assertEqual(self.api.in_use_pages(), pinned_pages(self.api, adapter))
        return scheduler, adapter

    def test_uniform_cache_held_blocks_are_backed_at_every_step(self):
        _, adapter = self.run_checked("uniform")
        self.assertEqual(len(adapter.tracker.layout.spans), 2)

    def test_hybrid_sliding_window_cache_held_blocks_are_backed_at_every_step(self):
        scheduler, adapter = self.run_checked("hybrid", num_blocks=192)  # two groups share the pool
        self.assertEqual(len(scheduler.kv_cache_manager.coordinator.single_type_managers), 2)

    def test_mla_cache_held_blocks_are_backed_at_every_step(self):
        self.run_checked("mla")

    def test_async_scheduling_held_blocks_are_backed_at_every_step(self):
        self.run_checked("uniform", async_scheduling=True)

    def test_null_block_is_backed_when_the_scheduler_takes_the_cache_and_not_before(self):
        # Before the scheduler exists vLLM zero-fills, warms up and captures graphs, writing all
        # over the cache; backing a page then would let the shim map pages ahead under those
        # writes (a context-killing fault on the GPU). Nothing is backed until the scheduler.
        api, vllm_config, config = self.worker_cache()
        (entry,) = registry.caches()
        self.assertTrue(entry.managed)
        self.assertEqual(api.acquire_calls, 0, "a page was backed during start-up")
        for span in entry.layout.spans:
            self.assertFalse(api.backed(span.addr, span.block_bytes), "block 0 backed during start-up")
        self.assertEqual(api.label, "vllm:" + os.path.basename(V.model_dir()))
        tensors = sorted(entry.tensors, key=lambda t: t.data_ptr())
        for span, tensor in zip(entry.layout.spans, tensors):  # warm-up's writes into the block
            tensor.view(-1).view(torch.uint8)[: span.block_bytes].fill_(7)
        V.make_scheduler(vllm_config, config)
        self.assertTrue(entry.pinned)
        for span, tensor in zip(entry.layout.spans, tensors):
            self.assertTrue(api.backed(span.addr, span.block_bytes), "block 0 not backed")
            self.assertFalse(api.backed(span.addr + 8 * span.block_bytes), "more than block 0's page backed")
            self.assertEqual(int(tensor.view(-1).view(torch.uint8)[: span.block_bytes].abs().sum()), 0,
                             "the null block does not read zeros")

    # ---------------------------------------------------------------- allocation fast path
    def run_bounded(self, kind="uniform", lookahead=0, prompts=None, prepare=None, **config):
        """Runs a load recording, for every allocate_slots call, allocation.py's bound, the blocks
        the call took from the pool and whether it took the fast path. Returns the records."""
        from kvcached_hook.engines.vllm import allocation

        scheduler, adapter = self.engine(kind, num_blocks=192, **config)
        if lookahead:
            scheduler.num_lookahead_tokens = lookahead  # as a speculative decoder sets it
        if prepare is not None:
            prepare(adapter)
        for i, prompt in enumerate(prompts or [[1 + i] * 70 for i in range(10)]):
            scheduler.add_request(V.make_request(f"r{i}", prompt, 20))
        hooked_allocate = kv_cache_manager.KVCacheManager.allocate_slots
        hooked_get = block_pool.BlockPool.get_new_blocks
        exact = allocation.allocate_exactly
        taken, exact_calls, records = [], [], []

        def get_new_blocks(self_, num_blocks, *args, **kwargs):
            taken.append(num_blocks)
            return hooked_get(self_, num_blocks, *args, **kwargs)

        def allocate_exactly(*args, **kwargs):
            exact_calls.append(1)
            return exact(*args, **kwargs)

        def allocate_slots(self_, request, num_new_tokens, *args, **kwargs):
            taken.clear()
            exact_calls.clear()
            result = hooked_allocate(self_, request, num_new_tokens, *args, **kwargs)
            records.append((allocation.bound(adapter, self_, request, num_new_tokens, kwargs), sum(taken),
                            not exact_calls))
            return result

        kv_cache_manager.KVCacheManager.allocate_slots = allocate_slots
        block_pool.BlockPool.get_new_blocks = get_new_blocks
        allocation.allocate_exactly = allocate_exactly
        try:
            V.run_loop(scheduler, check=lambda stage, _o: self.assert_backed(adapter, stage),
                       in_flight=2 if config.get("async_scheduling") else 1)
        finally:
            kv_cache_manager.KVCacheManager.allocate_slots = hooked_allocate
            block_pool.BlockPool.get_new_blocks = hooked_get
            allocation.allocate_exactly = exact
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        manager = scheduler.kv_cache_manager
        self.assertNotIn("get_num_blocks_to_allocate", vars(manager.coordinator), "the exact path left its hook")
        self.assertNotIn("get_num_free_blocks", vars(manager.block_pool), "the exact path left its hook")
        return records

    def assert_bound_holds(self, records, where):
        over = [(bound, took) for bound, took, _ in records if took > bound]
        self.assertEqual(over, [], f"{where}: calls that took more blocks than their bound")
        fast = sum(1 for *_, was_fast in records if was_fast)
        taken = sum(r[1] for r in records)
        print(f"\n[{where}] allocate_slots calls {len(records)}, fast path {fast}, blocks taken {taken}")
        self.assertGreater(fast, 0, f"{where}: the fast path was never taken")

    def test_no_allocation_takes_more_blocks_than_its_fast_path_bound(self):
        """The fast path runs vLLM's allocate_slots unhooked when the call's bound is free in
        backed or cached blocks: the bound must hold for every call vLLM makes, for each cache
        shape, with asynchronous scheduling, speculative lookahead slots and prefix hits."""
        self.assert_bound_holds(self.run_bounded("uniform"), "uniform")
        self.assert_bound_holds(self.run_bounded("hybrid"), "hybrid sliding window")
        self.assert_bound_holds(self.run_bounded("mla"), "mla")
        self.assert_bound_holds(self.run_bounded("uniform", async_scheduling=True), "uniform async")
        self.assert_bound_holds(self.run_bounded("uniform", lookahead=5), "uniform lookahead 5")
        shared = list(range(1, 49))  # three full blocks every prompt shares: prefix hits
        prompts = [shared + [100 + i] * 30 for i in range(10)]
        records = self.run_bounded("uniform", prompts=prompts)
        self.assert_bound_holds(records, "prefix hits")

    # ---------------------------------------------------------------- whole steps
    def run_whole(self, kind="uniform", lookahead=0, prompts=None, arrivals=(), budget_pages=None,
                  num_blocks=512, **config):
        """Runs a load recording, for every schedule(), whether it ran with vLLM's own
        allocate_slots (allocation.whole_step), the room it was judged against, the blocks it took
        and the acquire calls made inside it. `arrivals`: (step, prompt) pairs added mid-run, as a
        serving client does. Returns the records."""
        from kvcached_hook.engines.vllm import allocation

        config.setdefault("max_num_seqs", 24)  # enough running requests for the walk (allocation.py)
        scheduler, adapter = self.engine(kind, num_blocks=num_blocks, budget_pages=budget_pages, **config)
        if lookahead:
            scheduler.num_lookahead_tokens = lookahead  # as a speculative decoder sets it
        for i, prompt in enumerate(prompts or [[1 + i] * 70 for i in range(24)]):
            scheduler.add_request(V.make_request(f"r{i}", prompt, 20))
        judged = allocation.whole_step
        marks, records, later = [], [], sorted(arrivals, key=lambda a: a[0])
        turn = [0]

        def whole_step(adapter_, scheduler_):
            whole = judged(adapter_, scheduler_)
            marks.append((whole, adapter_.room, adapter_.taken_total, adapter_.tracker.acquire_calls))
            return whole

        def check(stage, _out):
            self.assert_backed(adapter, stage)
            if stage == "scheduled":
                whole, room, taken, acquires = marks.pop()
                records.append((whole, room, adapter.taken_total - taken, adapter.tracker.acquire_calls - acquires))
                turn[0] += 1
                while later and later[0][0] <= turn[0]:
                    _, prompt = later.pop(0)
                    scheduler.add_request(V.make_request(f"late{turn[0]}-{len(later)}", prompt, 20))

        allocation.whole_step = whole_step
        try:
            V.run_loop(scheduler, check=check, in_flight=2 if config.get("async_scheduling") else 1)
        finally:
            allocation.whole_step = judged
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assertNotIn("allocate_slots", vars(scheduler.kv_cache_manager), "a whole step left vLLM's method behind")
        self.assertEqual(adapter.whole_steps, sum(1 for r in records if r[0]))
        return records

    def assert_whole_steps_safe(self, records, where, expect_some=True):
        over = [(room, took) for whole, room, took, _ in records if whole and took > room]
        self.assertEqual(over, [], f"{where}: whole steps that took more blocks than their room")
        backing = [acq for whole, _, _, acq in records if whole and acq]
        self.assertEqual(backing, [], f"{where}: whole steps that had to back pages inside schedule()")
        whole = sum(1 for r in records if r[0])
        print(f"\n[{where}] schedule() calls {len(records)}, whole steps {whole}")
        if expect_some:
            self.assertGreater(whole, 0, f"{where}: no step ran whole")

    def test_a_whole_step_never_takes_more_than_its_room_nor_backs_a_page(self):
        """A schedule() run with vLLM's own allocate_slots (no hook per request) must find every
        block it takes backed already: for each cache shape, asynchronous scheduling, lookahead
        slots, prefix hits and requests arriving while others run."""
        self.assert_whole_steps_safe(self.run_whole("uniform"), "uniform")
        self.assert_whole_steps_safe(self.run_whole("hybrid"), "hybrid sliding window")
        self.assert_whole_steps_safe(self.run_whole("mla"), "mla")
        self.assert_whole_steps_safe(self.run_whole("uniform", async_scheduling=True), "uniform async")
        self.assert_whole_steps_safe(self.run_whole("uniform", lookahead=5), "uniform lookahead 5")
        shared = list(range(1, 49))  # three full blocks every prompt shares: prefix hits
        late = [(4 + k, shared + [300 + k] * 30) for k in range(12)]
        self.assert_whole_steps_safe(
            self.run_whole("uniform", prompts=[shared + [100 + i] * 30 for i in range(20)], arrivals=late),
            "prefix hits, arrivals")
        # A budget that refuses: steps short of room take the per-call path; none backs inside.
        records = self.run_whole("uniform", budget_pages=12, num_blocks=256)
        self.assert_whole_steps_safe(records, "small budget", expect_some=False)
        self.assertTrue(any(not r[0] for r in records), "small budget: every step ran whole")

    def run_running_steps(self, budget_pages, num_blocks=256, requests=40, prompt_len=70, **config):
        """Runs a queue longer than max_num_seqs under a budget (whole steps then decline: the
        queue's admissions need more than the room) recording, for every schedule() run with
        vLLM's own allocate_slots until the first admission (allocation.running_step), the room
        it was judged against and the blocks taken and acquire calls made before the first
        admission (its get_computed_blocks; nothing is allocated between the hook's return, at
        the admission loop's first turn, and that call) or the step's end. Returns (records,
        steps with an admission after a running phase)."""
        from unittest import mock

        from kvcached_hook.engines.vllm import allocation
        from vllm.v1.core.kv_cache_manager import KVCacheManager

        config.setdefault("max_num_seqs", 16)
        judged, found = allocation.running_step, KVCacheManager.get_computed_blocks
        marks, records, admitted = [], [], []

        def running_step(adapter_, scheduler_):
            running = judged(adapter_, scheduler_)
            if running:
                marks.append((adapter_.room, adapter_.taken_total, adapter_.tracker.acquire_calls))
            return running

        def close(adapter_):
            room, taken, acquires = marks.pop()
            records.append((room, adapter_.taken_total - taken, adapter_.tracker.acquire_calls - acquires))

        def get_computed_blocks(self_, request, *args, **kwargs):
            if marks:  # the first admission of a running step: the hook is back on from here
                adapter_ = getattr(self_.block_pool, "_kvcached")
                adapter_.settle()
                close(adapter_)
                self.assertNotIn("allocate_slots", vars(self_), "the admission met vLLM's own allocate_slots")
                admitted.append(request.request_id)
            return found(self_, request, *args, **kwargs)

        with mock.patch.object(KVCacheManager, "get_computed_blocks", get_computed_blocks):
            scheduler, adapter = self.engine(num_blocks=num_blocks, budget_pages=budget_pages, **config)
            for i in range(requests):
                scheduler.add_request(V.make_request(f"r{i}", [1 + i] * prompt_len, 20))

            def check(stage, _out):
                self.assert_backed(adapter, stage)
                if stage == "scheduled" and marks:  # no admission in that step
                    adapter.settle()
                    close(adapter)

            allocation.running_step = running_step
            try:
                V.run_loop(scheduler, check=check, in_flight=2 if config.get("async_scheduling") else 1)
            finally:
                allocation.running_step = judged
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        manager = scheduler.kv_cache_manager
        self.assertNotIn("allocate_slots", vars(manager), "a running step left vLLM's method behind")
        self.assertNotIn(allocation._SELECT, vars(scheduler), "a running step left its re-hook behind")
        self.assertEqual(adapter.running_steps, len(records))
        return records, admitted

    def test_a_running_step_takes_no_more_than_its_room_and_gives_admissions_the_hook(self):
        """Under a budget that binds with a queue longer than the free slots, schedule() runs
        vLLM's own allocate_slots for the running requests when their bound fits the room
        (allocation.running_step): they must take no more blocks than the room and back no page,
        and every admission after them must meet the hook again (its blocks backed: checked
        after every step and output), synchronous and asynchronous."""
        for config in ({}, {"async_scheduling": True}):
            where = f"budget 12 pages {config}"
            records, admitted = self.run_running_steps(12, **config)
            over = [(room, took) for room, took, _ in records if took > room]
            self.assertEqual(over, [], f"{where}: running steps that took more blocks than their room")
            self.assertEqual([acq for _, _, acq in records if acq], [],
                             f"{where}: running steps that backed pages before their first admission")
            print(f"\n[{where}] running steps {len(records)}, admissions after one {len(admitted)}")
            self.assertGreater(len(records), 0, f"{where}: no running step: the test proves less")
            self.assertGreater(len(admitted), 0, f"{where}: no admission in a running step: the test proves less")

    def test_most_blocks_come_from_the_arranged_head_and_its_count_never_overstates_it(self):
        """get_new_blocks takes its fast path (no choice, no tracker call) for the blocks counted
        good at the head of vLLM's free queue (blocks.py: the arranged head). After every step and
        every output the count is no more than the good blocks really leading the queue (free in
        backed pages, or cached), every held block is backed, and under a decode load most blocks
        are handed out that way: the prefix cache elastic and kept, synchronous and asynchronous,
        with a budget that refuses."""
        from unittest import mock

        from kvcached_hook.engines.vllm.blocks import PoolAdapter

        def good_head(adapter):
            queue, tracker, n = adapter.pool.free_block_queue, adapter.tracker, 0
            node = queue.fake_free_list_head.next_free_block
            while node is not None and node is not queue.fake_free_list_tail:
                bid = node.block_id
                if not (tracker.fb[bid] or (node.block_hash is not None and not tracker.is_free(bid))):
                    break
                n, node = n + 1, node.next_free_block
            return n

        for prefix_cache, budget, config in (("elastic", None, {}), ("keep", None, {}),
                                             ("elastic", None, {"async_scheduling": True}),
                                             ("elastic", 6, {"async_scheduling": True})):
            where = f"{prefix_cache} budget {budget} {config}"
            chosen = []
            original = PoolAdapter.choose

            def counting(self_, n, _original=original, _chosen=chosen):
                _chosen.append(n)
                return _original(self_, n)

            with V.env(KVCACHED_HOOK_PREFIX_CACHE=prefix_cache), mock.patch.object(PoolAdapter, "choose", counting):
                scheduler, adapter = self.engine(num_blocks=256, budget_pages=budget, **config)
                self.add(scheduler, 12, prompt_len=40, max_tokens=60)
                late = [V.make_request(f"late{i}", [50 + i] * 40, 30) for i in range(6)]

                def check(stage, _out, adapter=adapter, where=where):
                    if late and stage == "scheduled":
                        scheduler.add_request(late.pop())
                    self.assertLessEqual(adapter.head_ok, good_head(adapter), f"{where}, {stage}")
                    self.assert_backed(adapter, f"{where}, {stage}")

                V.run_loop(scheduler, check=check, in_flight=2 if config else 1)
            self.assertFalse(scheduler.has_requests(), where)
            adapter.settle()
            handed = adapter.taken_total
            if budget is None:
                self.assertLess(2 * sum(chosen), handed, f"{where}: {sum(chosen)} of {handed} blocks chosen one call at a time")

    def test_the_step_walks_shortcut_counts_as_the_general_formula(self):
        """whole_step's walk counts a decoding request's new blocks from the remainder of its
        computed tokens when it adds at most a block of tokens: the same counts as the general
        formula, for every remainder, block size and token count (computed tokens may run ahead
        with asynchronous scheduling)."""
        from kvcached_hook.engines.vllm import allocation

        Req = collections.namedtuple("Req", "num_computed_tokens num_tokens")

        def general(running, size, decode_tokens):
            long = edge = 0
            for request in running:
                computed = request.num_computed_tokens
                if request.num_tokens - computed > 1:
                    long += 1
                else:
                    edge += (computed + decode_tokens + size - 1) // size - (computed + size - 1) // size
            return long, edge

        for size in (1, 2, 3, 16, 64):
            running = [Req(c, c + extra) for c in range(4 * size + 1) for extra in (-2, -1, 0, 1, 2, 40) if c + extra >= 0]
            for decode_tokens in range(1, 2 * size + 3):
                where = f"block size {size}, {decode_tokens} tokens"
                full = general(running, size, decode_tokens)
                self.assertEqual(allocation.walk_running(running, size, decode_tokens), full, where)
                # With a limit (the room whole_step has left): the same counts while their sum fits,
                # else counts whose sum exceeds it (whole_step then refuses the step either way).
                total = sum(full)
                self.assertEqual(allocation.walk_running(running, size, decode_tokens, total), full, where)
                for limit in (0, total // 2, total - 1):
                    if limit >= 0:
                        self.assertGreater(sum(allocation.walk_running(running, size, decode_tokens, limit)), limit, where)

    def test_vllms_objects_keep_their_attributes_inline(self):
        """Reading an object's __dict__ makes CPython keep its attributes in a dict, and every
        lookup vLLM makes on it slower (scheduler_side.py): after a load with whole steps, exact
        calls (their per-call hooks on the coordinator and the pool) and prefix hits, vLLM's
        scheduler-side objects that kept theirs inline still do (the Scheduler has too many
        attributes for that: its own are in a dict from the start)."""
        from kvcached_hook.engines.vllm import allocation

        if not dict_probe_works():  # not CPython 3.12's inline attributes: a skip, never a pass
            self.skipTest("this interpreter keeps every object's attributes in a dict: nothing to check")
        scheduler, adapter = self.engine("uniform", num_blocks=512, max_num_seqs=24)
        manager = scheduler.kv_cache_manager
        objects = ((scheduler, "kv_cache_manager"), (manager, "coordinator"),
                   (manager.coordinator, "single_type_managers"), (manager.block_pool, "blocks"))
        before = [dict_made(obj, attr) for obj, attr in objects]
        self.assertEqual(before[1:], [False] * 3, "vLLM's manager, coordinator or pool had a dict before the load")
        shared = list(range(1, 49))  # three full blocks every prompt shares: prefix hits
        for i in range(30):
            scheduler.add_request(V.make_request(f"r{i}", shared + [100 + i] * 30, 20))
        exact, calls = allocation.allocate_exactly, []

        def allocate_exactly(*args):
            calls.append(1)
            return exact(*args)

        allocation.allocate_exactly = allocate_exactly
        try:
            V.run_loop(scheduler)
        finally:
            allocation.allocate_exactly = exact
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assertGreater(adapter.whole_steps, 0, "no whole step: the test proves less")
        self.assertGreater(len(calls), 0, "no exact call: the test proves less")
        for (obj, attr), had in zip(objects, before):
            self.assertEqual(dict_made(obj, attr), had, f"the hook read {type(obj).__name__}.__dict__")

    def test_a_cache_with_a_manager_without_a_bound_always_takes_the_exact_path(self):
        from kvcached_hook.engines.vllm import allocation

        def manager_of(*names):
            managers = [type(name, (), {"block_size": 16})() for name in names]
            return type("M", (), {"coordinator": type("C", (), {"single_type_managers": managers})()})()

        self.assertEqual(allocation.group_block_sizes(manager_of("FullAttentionManager", "SlidingWindowManager")),
                         (16, 16))
        self.assertEqual(allocation.group_block_sizes(manager_of("FullAttentionManager", "MambaManager")), ())
        self.assertEqual(allocation.group_block_sizes(manager_of("SinkFullAttentionManager")), ())

        def no_bound(adapter):
            adapter.group_sizes, adapter.single_size = (), 0  # as for a hybrid Mamba cache

        records = self.run_bounded("uniform", prepare=no_bound)
        self.assertGreater(len(records), 10)
        self.assertEqual([r for r in records if r[2]], [], "a call took the fast path")

    def test_a_step_that_admits_several_requests_backs_them_in_one_acquire(self):
        """The prediction before schedule() backs the step's admissions in one C call; without it
        each admission acquires on its own (allocate_slots' exact path)."""
        calls = {}
        for predict in (1, 0):
            registry.clear()
            with V.env(KVCACHED_HOOK_PREDICT=predict):
                scheduler, adapter = self.engine("uniform", page=2048)  # one block per page
            self.add(scheduler, 4, prompt_len=40)  # 3 blocks each, all admitted in the first step
            before = self.api.acquire_calls
            out = scheduler.schedule()
            self.assertEqual(len(out.scheduled_new_reqs), 4)
            calls[predict] = self.api.acquire_calls - before
            self.assert_backed(adapter, f"predict={predict}")
        self.assertEqual(calls[1], 1, "the predicted step did not back its admissions in one call")
        self.assertGreater(calls[0], 1, "without prediction the step made one call too: the test proves nothing")

    def test_cached_blocks_are_reused_before_a_page_is_acquired(self):
        """Blocks the prefix cache keeps sit in backed pages: a new request takes them (vLLM
        evicts them as it hands them out) before any page is acquired."""
        with V.env(KVCACHED_HOOK_RELEASE_DELAY_STEPS=1000, KVCACHED_HOOK_PREDICT=0):
            scheduler, adapter = self.engine("uniform", page=2048)  # one block per page
        scheduler.add_request(V.make_request("a", list(range(1, 81)), 4))  # 5 full blocks
        V.run_loop(scheduler)
        cached = set(adapter.cached)
        self.assertGreaterEqual(len(cached), 4, "the finished request left no cached blocks")
        calls, pages = self.api.acquire_calls, self.api.in_use_pages()
        request = V.make_request("b", [500 + i for i in range(60)], 4)  # no hit: 4 new blocks
        scheduler.add_request(request)
        scheduler.schedule()
        got = set(scheduler.kv_cache_manager.get_block_ids("b")[0])
        self.assertEqual(self.api.acquire_calls, calls, "a page was acquired while cached blocks were free")
        self.assertEqual(self.api.in_use_pages(), pages)
        self.assertTrue(got & cached, "the request got no cached block")
        for bid in got:
            self.assertNotIn(bid, adapter.cached)
        self.assert_backed(adapter, "after the reuse")

    # ---------------------------------------------------------------- refusal
    def test_a_refusal_makes_allocate_slots_answer_none_and_preempts_never_raises(self):
        results = []
        original = kv_cache_manager.KVCacheManager.allocate_slots

        def recording(self_, *args, **kwargs):
            result = original(self_, *args, **kwargs)
            results.append(result is None)
            return result

        # 64 blocks, but pages for about 24 blocks: two long requests at a time.
        scheduler, adapter = self.engine("uniform", budget_pages=2 + 6 * 2)
        kv_cache_manager.KVCacheManager.allocate_slots = recording
        try:
            requests = self.add(scheduler, 6, prompt_len=100, max_tokens=60)
            V.run_loop(scheduler, check=lambda stage, _o: self.assert_backed(adapter, stage))
        finally:
            kv_cache_manager.KVCacheManager.allocate_slots = original
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assertGreater(adapter.tracker.refusals, 0, "the budget never refused: the test proves nothing")
        self.assertIn(True, results, "allocate_slots never answered None")
        preempted = sum(r.num_preemptions for r in requests)
        self.assertGreater(preempted, 0, "no request was preempted")

    def test_after_a_refusal_calls_that_fit_the_backed_room_still_take_the_fast_path(self):
        """Under a binding budget the shim refuses in most steps; the calls after the refusal that
        fit the free backed and cached blocks need no page, so they run unhooked as before it."""
        from kvcached_hook.engines.vllm import allocation

        scheduler, adapter = self.engine("uniform", budget_pages=2 + 6 * 2)  # as the test above
        tracker, exact = adapter.tracker, allocation.allocate_exactly
        hooked = kv_cache_manager.KVCacheManager.allocate_slots
        calls, exact_calls = [], []

        def allocate_exactly(*args, **kwargs):
            exact_calls.append(1)
            return exact(*args, **kwargs)

        def allocate_slots(self_, *args, **kwargs):
            pressed, before = tracker.pressure, len(exact_calls)
            result = hooked(self_, *args, **kwargs)
            calls.append((pressed, len(exact_calls) == before))
            return result

        allocation.allocate_exactly = allocate_exactly
        kv_cache_manager.KVCacheManager.allocate_slots = allocate_slots
        try:
            # Many requests decoding at once, their prompts of different lengths: in most steps one
            # of them crosses into a new block and is refused, and the others, inside their last
            # block, are scheduled after it.
            for i in range(16):
                scheduler.add_request(V.make_request(f"r{i}", [1 + i] * (10 + 5 * i), 60))
            V.run_loop(scheduler, check=lambda stage, _o: self.assert_backed(adapter, stage))
        finally:
            allocation.allocate_exactly = exact
            kv_cache_manager.KVCacheManager.allocate_slots = hooked
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assertEqual(tracker.sync_backings, 0, "a block was handed out unbacked")
        after_refusal = [fast for pressed, fast in calls if pressed]
        self.assertGreater(len(after_refusal), 0, "no call came after a refusal: the test proves nothing")
        self.assertGreater(sum(after_refusal), 0, "every call after a refusal took the exact path")

    def test_random_loads_under_tight_budgets_never_raise_and_keep_held_blocks_backed(self):
        """The fast path must never let vLLM take a block that would need a page the shim then
        refuses (that would raise inside vLLM's schedule()): random loads, budgets from far too
        small to ample, both cache shapes, asynchronous scheduling, lookahead slots, prompts that
        share prefixes. Every request finishes, nothing raises, every held block stays backed."""
        import random

        refused = 0
        for seed in range(8):
            rng = random.Random(seed)
            registry.clear()
            kind = rng.choice(["uniform", "hybrid"])
            config = {"async_scheduling": rng.random() < 0.5}
            scheduler, adapter = self.engine(kind, num_blocks=192, budget_pages=rng.choice([12, 16, 24, 48, None]),
                                             **config)
            scheduler.num_lookahead_tokens = rng.choice([0, 0, 2, 5])
            shared = [rng.randint(1, 400) for _ in range(rng.choice([0, 16, 48]))]
            for i in range(rng.randint(6, 14)):
                prompt = shared + [rng.randint(1, 400) for _ in range(rng.randint(4, 120))]
                scheduler.add_request(V.make_request(f"s{seed}r{i}", prompt, rng.randint(4, 60)))
            where = f"seed {seed} ({kind}, {config}, lookahead {scheduler.num_lookahead_tokens})"
            V.run_loop(scheduler, max_steps=4000, in_flight=2 if config["async_scheduling"] else 1,
                       check=lambda stage, _o, w=where, a=adapter: self.assert_backed(a, f"{w} {stage}"))
            self.assertFalse(scheduler.has_requests(), f"{where}: requests did not finish")
            self.assertEqual(adapter.tracker.sync_backings, 0, f"{where}: a block was handed out unbacked")
            refused += adapter.tracker.refusals
        self.assertGreater(refused, 0, "no budget ever refused: the loads prove nothing about refusals")

    def test_a_refused_admission_tried_again_is_decided_as_the_exact_path_decides(self):
        """A queued request refused by the budget is tried again step after step; the hook then
        decides from the counts it remembered instead of calling vLLM (allocation.py: refused
        admissions). Every step must schedule the same requests with the same tokens, preempt the
        same, acquire the same and keep the same blocks cached, as with every try through the exact
        path: random loads under tight budgets, prompts that share prefixes (preempted requests come
        back with prefix hits), long prompts in chunks, asynchronous scheduling. The retry time is
        off so that every try asks the fake budget (no clock in the decisions)."""
        import random

        def run(seed, memo):
            rng = random.Random(seed)
            registry.clear()
            kind = rng.choice(["uniform", "uniform", "hybrid"])  # hybrid: sliding window, never remembered
            # A small token budget chunks long prompts: an admission's count for its first chunk is
            # then below the admission cap's count for its whole prompt.
            config = {"async_scheduling": rng.random() < 0.5, "max_tokens_per_step": rng.choice([16, 32, 64, 256])}
            with V.env(KVCACHED_HOOK_REFUSED_RETRY_MS=0):
                # Regions at the tensors: the same block -> page map in both runs.
                scheduler, adapter = self.engine(kind, num_blocks=192, budget_pages=rng.choice([24, 32, 48]),
                                                 api_cls=TensorRegionApi, **config)
            shared = [rng.randint(1, 400) for _ in range(rng.choice([0, 16, 48]))]
            for i in range(rng.randint(8, 14)):
                prompt = shared + [rng.randint(1, 400) for _ in range(rng.randint(20, 150))]
                scheduler.add_request(V.make_request(f"s{seed}r{i}", prompt, rng.randint(4, 60)))
            return self.steps_remembering(scheduler, adapter, memo, 2 if config["async_scheduling"] else 1,
                                          f"seed {seed}")

        decided = 0
        for seed in range(24):
            exact, none = run(seed, memo=False)
            remembered, hits = run(seed, memo=True)
            self.assertEqual(none, 0)
            for i, (a, b) in enumerate(zip(exact, remembered)):
                self.assertEqual(a, b, f"seed {seed}, step {i}: the remembered refusal decided otherwise")
            self.assertEqual(len(remembered), len(exact), f"seed {seed}: a different number of steps")
            decided += hits
        self.assertGreater(decided, 0, "no refused admission was tried again: the test proves nothing")

    def test_a_refused_admission_is_admitted_as_soon_as_the_budget_has_room(self):
        """The remembered refusal asks the budget again at every try (here: the retry time off),
        so a queued request is admitted in the first step after pages came back."""
        from kvcached_hook.engines.vllm import allocation

        with V.env(KVCACHED_HOOK_REFUSED_RETRY_MS=0):
            scheduler, adapter = self.engine("uniform", page=2048, budget_pages=8)  # a block: a page in each of 2 tensors
        scheduler.add_request(V.make_request("big", [3] * 150, 200))  # 10 blocks: more than the budget holds
        scheduler.add_request(V.make_request("next", [5] * 40, 4))  # 3 blocks
        decide, tried = allocation._refused_again, []

        def recording(adapter_, manager, request, key, kwargs):
            result = decide(adapter_, manager, request, key, kwargs)
            tried.append((key[0], result))
            return result

        allocation._refused_again = recording
        try:
            for _ in range(6):
                V.advance(scheduler, [], 1)
            self.assertIn(("big", True), tried, "the refused admission was not tried again from memory")
            self.assertNotIn("big", [r.request_id for r in scheduler.running])
            self.api.budget.pages += 24  # a neighbour gave pages back: room for 12 blocks more
            out, _ = V.advance(scheduler, [], 1)
        finally:
            allocation._refused_again = decide
        self.assertIn("big", out.num_scheduled_tokens, "admitted only later than the budget allowed")
        self.assert_backed(adapter, "after the admission")

    def test_an_admission_refused_by_vllms_own_cap_is_decided_as_vllm_decides(self):
        """vLLM's admission cap (the whole prompt must fit its free blocks) refuses a long prompt
        while a running request holds most of a small cache; its first chunk alone would fit. The
        tries after the first are decided from memory, and every step is the same as with every
        try through the exact path."""

        def run(memo):
            registry.clear()
            scheduler, adapter = self.engine("uniform", num_blocks=32, page=2048, max_tokens_per_step=32,
                                             api_cls=TensorRegionApi)
            scheduler.add_request(V.make_request("hog", [7] * 380, 100))  # 24 blocks, 30 at the end
            scheduler.add_request(V.make_request("big", [9] * 150, 8))  # 10 blocks: more than are free
            return self.steps_remembering(scheduler, adapter, memo)

        exact, _ = run(memo=False)
        remembered, decided = run(memo=True)
        self.assertEqual(remembered, exact)
        self.assertGreater(decided, 0, "no try refused by the cap was decided from memory")

    # ---------------------------------------------------------------- fence
    def test_no_page_is_released_while_a_batch_that_used_it_is_in_flight(self):
        with V.env(KVCACHED_HOOK_RELEASE_DELAY_STEPS=0):
            # One block per page, pages starting at each tensor: a freed block empties its page.
            scheduler, adapter = self.engine("uniform", async_scheduling=True, page=2048, api_cls=TensorRegionApi)
        layout = adapter.tracker.layout
        unit_of = {r: u for u in range(layout.num_units) for r in layout.unit_ranges(u)}
        in_flight: list[tuple[object, set, set]] = []
        violations = []
        held_back = []  # in-flight pages the tracker already sees empty: only the fence keeps them
        real_release = self.api.release

        def pages_of_blocks(blocks):
            return {u for b in blocks for u in layout.block_units(b)}

        def release(ranges):
            units = {unit_of[(a, n)] for a, n in ranges}
            for out, used, _ in in_flight:
                if units & used:
                    violations.append(sorted(units & used))
            return real_release(ranges)

        self.api.release = release

        def check(stage, out):
            if stage == "scheduled" and out.total_num_scheduled_tokens > 0:
                blocks = set()
                for rid in out.num_scheduled_tokens:
                    for group in scheduler.kv_cache_manager.get_block_ids(rid):
                        blocks.update(group)
                tracker = adapter.tracker
                for _, _, older in in_flight:
                    held_back.extend(u for b in older for u in layout.block_units(b) if tracker.count[u] == 0)
                in_flight.append((out, pages_of_blocks(blocks), blocks))
            elif stage == "processed":
                in_flight.pop(0)

        # Requests stop at unpredictable steps (a stop token), so the in-flight batch still holds
        # them when the previous batch's output frees their blocks.
        self.add(scheduler, 8, prompt_len=30, max_tokens=40, stop=[99])
        stoppers = {"r1": 3, "r4": 5, "r6": 9}  # request -> output count at which it emits the stop token

        def token_of(request):
            limit = stoppers.get(request.request_id)
            return 99 if limit is not None and request.num_output_tokens >= limit else 7

        V.run_loop(scheduler, check=check, in_flight=2, token_of=token_of)
        self.assertEqual(violations, [])
        self.assertTrue(held_back, "no page of an in-flight batch was ever empty: the test proves nothing")
        self.assertGreater(self.api.release_calls, 0, "nothing was released: the test proves nothing")

    # ---------------------------------------------------------------- prefix cache
    def test_a_prefix_hit_needs_no_acquire(self):
        with V.env(KVCACHED_HOOK_RELEASE_DELAY_STEPS=1000, KVCACHED_HOOK_PREDICT=0):
            scheduler, adapter = self.engine("uniform", page=2048)  # one block per page
        prompt = list(range(1, 65))  # 4 full blocks
        scheduler.add_request(V.make_request("a", prompt, 4))
        V.run_loop(scheduler)
        self.assertGreaterEqual(len(adapter.cached), 3, "the finished request left no cached blocks")
        calls = self.api.acquire_calls
        request = V.make_request("b", prompt, 4)
        scheduler.add_request(request)
        out = scheduler.schedule()
        self.assertLessEqual(out.num_scheduled_tokens["b"], 16, "no prefix hit: the test proves nothing")
        self.assertEqual(self.api.acquire_calls, calls, "a prefix hit acquired pages")
        self.assert_backed(adapter, "after the hit")

    def test_the_prefix_cache_is_given_back_when_idle(self):
        with V.env(KVCACHED_HOOK_IDLE_TRIM_S=5):
            scheduler, adapter = self.engine("uniform", page=2048)
        scheduler.add_request(V.make_request("a", list(range(1, 65)), 4))
        V.run_loop(scheduler)
        self.assertTrue(adapter.cached)
        adapter.hooks.idle_tick(now=100.0)
        self.assertTrue(adapter.cached, "trimmed before KVCACHED_HOOK_IDLE_TRIM_S")
        adapter.hooks.idle_tick(now=106.0)
        self.assertFalse(adapter.cached)
        self.assertEqual(self.api.in_use_pages(), pinned_pages(self.api, adapter), "pages beyond the null block's stay")

    def test_the_idle_thread_gives_pages_back_and_ends_with_its_scheduler(self):
        """The thread an engine gets (tests otherwise call its tick): once nothing runs it gives
        back every page but the null block's; it holds its scheduler weakly and ends after it."""
        import gc
        import time as clock

        from kvcached_hook.engines.vllm.steps import start_idle_thread

        with V.env(KVCACHED_HOOK_IDLE_TRIM_S=0):
            scheduler, adapter = self.engine("uniform", page=2048)
        scheduler.add_request(V.make_request("a", list(range(1, 65)), 4))
        V.run_loop(scheduler)
        self.assertGreater(len(self.api.in_use_pages()), len(pinned_pages(self.api, adapter)))
        thread = start_idle_thread(adapter.hooks, period_s=0.02)
        deadline = clock.monotonic() + 5
        while self.api.in_use_pages() != pinned_pages(self.api, adapter) and clock.monotonic() < deadline:
            clock.sleep(0.02)
        self.assertEqual(self.api.in_use_pages(), pinned_pages(self.api, adapter), "the idle thread gave nothing back")
        self.assertTrue(thread.is_alive())
        adapter.hooks = None
        del scheduler, adapter
        gc.collect()
        thread.join(timeout=5)
        self.assertFalse(thread.is_alive(), "the idle thread outlived its scheduler")

    def test_the_prefix_cache_is_given_back_when_another_process_is_refused(self):
        # A shim without the sharing policy (no verdict): the older pressure signal decides.
        # With a verdict, the policy does (test_vllm_share.py).
        scheduler, adapter = self.engine("uniform", page=2048)
        self.api.share_verdict = lambda device: None
        seq = [1]
        self.api.pressure = lambda device: (seq[0], os.getpid() + 1)
        scheduler.add_request(V.make_request("a", list(range(1, 65)), 4))
        V.run_loop(scheduler)
        self.assertTrue(adapter.cached)
        before = len(self.api.in_use_pages())
        seq[0] += 1
        scheduler.add_request(V.make_request("b", [5] * 20, 2))
        V.run_loop(scheduler)
        self.assertGreater(adapter.hooks.pressure_trims, 0)
        adapter.hooks.idle_tick(now=0.0)
        self.assertLess(len(self.api.in_use_pages()), before)

    # ---------------------------------------------------------------- layout and gating
    def test_a_view_that_is_not_blocks_first_backs_the_whole_cache(self):
        api, vllm_config, config = self.worker_cache(reshape=V.kv_first_views)
        (entry,) = registry.caches()
        self.assertFalse(entry.managed)
        for span in entry.layout.spans:
            self.assertTrue(api.backed(span.addr, span.nbytes))
        scheduler = V.make_scheduler(vllm_config, config)
        self.assertIsNone(scheduler.kv_cache_manager.block_pool.__dict__.get("_kvcached"))

    def test_a_cache_that_must_be_backed_fully_but_is_refused_stops_with_the_fix(self):
        # Views vLLM's attention cannot use page by page: backing the whole cache is refused.
        registry.clear()
        api = FakeCApi(page_size=PAGE)
        api.fail_next = [C.ERR_NO_MEMORY]
        worker.overrides["api"] = api
        vllm_config = V.make_vllm_config(32)
        with self.assertRaises(RuntimeError) as raised:
            V.build_worker_cache(vllm_config, V.kv_cache_config(vllm_config, "uniform"), reshape=V.kv_first_views)
        self.assertIn("must be backed fully", str(raised.exception))
        self.assertIn("raise the GPU's budget (kvctl)", str(raised.exception))
        self.assertEqual(api.fail_next, [])

    def test_a_refused_null_block_stops_the_engine_with_the_fix(self):
        registry.clear()
        api = FakeCApi(page_size=PAGE)
        worker.overrides["api"] = api
        vllm_config = V.make_vllm_config(32)
        config = V.kv_cache_config(vllm_config, "uniform")
        V.build_worker_cache(vllm_config, config)
        api.fail_next = [C.ERR_NO_MEMORY]
        with self.assertRaises(RuntimeError) as raised:
            V.make_scheduler(vllm_config, config)
        self.assertIn("null KV block", str(raised.exception))
        self.assertIn("budget is exhausted (see kvctl list)", str(raised.exception))

    def test_the_v1_runner_path_makes_the_same_lazy_cache(self):
        api, vllm_config, config = self.worker_cache(V.build_v1_worker_cache)
        (entry,) = registry.caches()
        self.assertTrue(entry.managed)
        self.assertEqual(api.acquire_calls, 0, "a page was backed before the scheduler exists")
        scheduler = V.make_scheduler(vllm_config, config)
        self.assertEqual(api.acquire_calls, 1, "the null block alone is backed when the scheduler takes the cache")
        self.assertIs(scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"].entry, entry)
        registry.clear()
        V.build_v1_worker_cache(vllm_config, config, reshape=V.kv_first_views)
        self.assertFalse(registry.caches()[0].managed, "the V1 path did not check the views")

    def test_the_kv_connector_allocation_makes_a_lazy_cache_when_blocks_are_outermost(self):
        """vLLM's KV-connector branch (allocate_uniform_kv_caches: one buffer for all layers) is
        managed when its blocks dimension is outermost (a block is one byte range across layers),
        and every held block is backed at every step; layers outermost backs it fully."""
        api, vllm_config, config = self.worker_cache(V.build_v1_connector_cache)
        (entry,) = registry.caches()
        self.assertTrue(entry.managed, "the cross-layer cache was not made lazy")
        self.assertEqual(len(entry.layout.spans), 1, "one buffer for all layers")
        self.assertEqual(entry.layout.spans[0].block_bytes, sum(t.size for t in config.kv_cache_tensors) // config.num_blocks)
        self.api = api
        scheduler = V.make_scheduler(vllm_config, config)
        adapter = scheduler.kv_cache_manager.block_pool.__dict__["_kvcached"]
        self.add(scheduler, 4)
        V.run_loop(scheduler, check=lambda stage, _o: self.assert_backed(adapter, stage))
        self.assertFalse(scheduler.has_requests())
        self.assertLess(adapter.tracker.snapshot()["units_acquired"], entry.layout.num_units, "backed fully")
        registry.clear()
        api, vllm_config, config = self.worker_cache(V.build_v1_connector_cache, blocks_first=False)
        (entry,) = registry.caches()
        self.assertFalse(entry.managed, "a layers-outermost buffer was managed page by page")
        for span in entry.layout.spans:
            self.assertTrue(api.backed(span.addr, span.nbytes), "not backed fully")

    def test_tensors_that_are_not_whole_blocks_back_the_whole_cache(self):
        import copy

        api = FakeCApi(page_size=PAGE)
        worker.overrides["api"] = api
        vllm_config = V.make_vllm_config(32)
        config = copy.copy(V.kv_cache_config(vllm_config, "uniform"))
        config.num_blocks = 33  # the tensors hold 32 blocks' bytes: 33 does not divide them
        views = V.build_worker_cache(vllm_config, config, reshape=lambda raw, _c: {k: t.view(-1) for k, t in raw.items()})
        self.assertEqual(registry.caches(), [])
        for tensor in views.values():
            self.assertTrue(api.backed(tensor.data_ptr(), tensor.numel() * tensor.element_size()))

    def test_sleep_mode_and_workers_in_other_processes_are_left_alone(self):
        vllm_config = V.make_vllm_config(32)
        self.assertIsNone(worker.refusal_reason(vllm_config))
        vllm_config.model_config.enable_sleep_mode = True
        self.assertIn("sleep mode", worker.refusal_reason(vllm_config))
        vllm_config.model_config.enable_sleep_mode = False
        vllm_config.parallel_config.world_size = 2
        self.assertIn("apart from the scheduler", worker.refusal_reason(vllm_config))
        api = FakeCApi(page_size=PAGE)
        worker.overrides["api"] = api
        config = V.kv_cache_config(V.make_vllm_config(32), "uniform")
        V.build_worker_cache(vllm_config, config)
        self.assertEqual(registry.caches(), [])
        self.assertEqual(api.acquire_calls, 0)


class TensorRegionApi(FakeCApi):
    """Each KV tensor its own region starting at the tensor, as the shim's no_split MemPool makes
    them on a GPU (every rank then has the same block -> page map)."""

    def region_info(self, addr):
        import dataclasses

        return dataclasses.replace(super().region_info(addr), base=addr)


class FakeWorker:
    def __init__(self, rank, entry):
        self.rank = rank
        self.kvcached_entry = entry


class FakeExecutor:
    """vLLM's collective_rpc(callable) contract: the function runs on every rank's worker, results in
    rank order."""

    def __init__(self, workers):
        self.workers = workers
        self.rpcs = 0

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.rpcs += 1
        return [method(worker, *args, **(kwargs or {})) for worker in self.workers]


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class VllmTensorParallelTest(PatchedVllmTest):
    """TP > 1 through a fake executor: two 'ranks' with their own fake shims and budgets."""

    def test_every_rank_backs_the_held_blocks_and_a_refusal_on_one_rank_backs_out_the_others(self):
        registry.clear()
        vllm_config = V.make_vllm_config(64)
        config = V.kv_cache_config(vllm_config, "uniform")
        apis, workers = [], []
        for rank, pages in enumerate((None, 2 + 6 * 2)):  # rank 1's GPU has a small budget
            api = TensorRegionApi(page_size=PAGE, budget=SharedBudget(pages))
            worker.overrides["api"] = api
            V.build_worker_cache(vllm_config, config)
            entry = registry.caches()[-1]
            entry.remote = True
            apis.append(api)
            workers.append(FakeWorker(rank, entry))
        registry.clear()  # the workers live "in other processes": the scheduler must use the executor
        executor = FakeExecutor(workers)
        registry.set_executor(executor)
        with V.env(KVCACHED_HOOK_VLLM_TP=1):
            scheduler = V.make_scheduler(vllm_config, config)
        adapter = scheduler.kv_cache_manager.block_pool.__dict__.get("_kvcached")
        self.assertIsNotNone(adapter, "the scheduler did not take the ranks' caches")
        requests = [V.make_request(f"r{i}", [1 + i] * 100, 60) for i in range(6)]
        for request in requests:
            scheduler.add_request(request)
        problems = []

        def check(stage, out):
            if stage == "scheduled":  # what Worker.execute_model does on every rank
                for w in workers:
                    tp_mod.before_execute(w, out)
            for w, api in zip(workers, apis):
                for block in adapter.held_blocks():
                    for addr, length in w.kvcached_entry.layout.block_ranges(block):
                        if not api.backed(addr, length):
                            problems.append(f"{stage}: rank {w.rank} block {block}")

        V.run_loop(scheduler, check=check)
        self.assertEqual(problems[:5], [])
        self.assertFalse(scheduler.has_requests())
        self.assertGreater(apis[1].refusals, 0, "rank 1 never refused: the test proves nothing")
        self.assertGreater(sum(r.num_preemptions for r in requests), 0)
        # All or nothing: once idle, every rank holds exactly the null block's pages (a refused
        # acquire left nothing behind on the rank that had succeeded).
        adapter.hooks.idle_tick(now=0.0)
        adapter.hooks.idle_tick(now=1e6)
        for w, api in zip(workers, apis):
            self.assertEqual(api.in_use_pages(), pinned_pages(api, _Local(w.kvcached_entry)), f"rank {w.rank}")

    def test_ranks_whose_layouts_differ_are_backed_fully(self):
        registry.clear()
        vllm_config = V.make_vllm_config(32)
        workers, apis = [], []
        for rank, kind in enumerate(("uniform", "mla")):
            api = TensorRegionApi(page_size=PAGE)
            worker.overrides["api"] = api
            V.build_worker_cache(V.make_vllm_config(32), V.kv_cache_config(vllm_config, kind))
            entry = registry.caches()[-1]
            entry.remote = True
            workers.append(FakeWorker(rank, entry))
            apis.append(api)
        registry.clear()
        executor = FakeExecutor(workers)  # the registry keeps a weak reference, as to vLLM's own
        registry.set_executor(executor)
        with V.env(KVCACHED_HOOK_VLLM_TP=1):
            scheduler = V.make_scheduler(vllm_config, V.kv_cache_config(vllm_config, "uniform"))
        self.assertIsNone(scheduler.kv_cache_manager.block_pool.__dict__.get("_kvcached"))
        for w, api in zip(workers, apis):
            self.assertFalse(w.kvcached_entry.managed)
            for span in w.kvcached_entry.layout.spans:
                self.assertTrue(api.backed(span.addr, span.nbytes))


if __name__ == "__main__":
    unittest.main()
