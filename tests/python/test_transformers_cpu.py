"""The transformers adapter on the real engine (continuous batching on CPU, a tiny random Llama) with
the fake C API: outputs identical with and without the hook, every KV row the engine reads or writes
lies in an acquired page, a budget that refuses pages makes requests wait (never an exception), an
idle engine gives its pages back, and the sanity check sees a page that goes missing.

Skipped when torch or transformers (with continuous batching) is not installed.
"""

import os
import re
import time
import unittest

from fake_capi import FakeCApi, SharedBudget

try:
    import torch
    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
    from transformers.generation.continuous_batching import cache as cb_cache

    HAVE_ENGINE = True
except Exception as _error:  # noqa: BLE001
    HAVE_ENGINE = False
    SKIP_REASON = f"torch/transformers continuous batching not importable: {_error}"

from kvcached_hook.engines import transformers_cb

PAGE = 8192  # small fake pages: block = 16 tokens x 2 heads x 16 dims x 4 bytes = 2 KiB -> 4 per page
BLOCK_SIZE = 16
NUM_BLOCKS = 96


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def prompts(n=24, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 8 + (i * 7) % 40
        out.append(torch.randint(1, 512, (length,), generator=gen).tolist())
    return out


def run(model, inputs, max_new_tokens=12, num_blocks=NUM_BLOCKS, keep_running_s=0.0, timeout=120.0):
    """Greedy generation through the CB manager; requests are queued before the loop starts, so the
    batches are the same on every run. Returns ({request: tokens}, manager)."""
    gen = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=-1, pad_token_id=0)
    cb = ContinuousBatchingConfig(block_size=BLOCK_SIZE, num_blocks=num_blocks, max_batch_tokens=256)
    manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
    ids = manager.add_requests(inputs, max_new_tokens=max_new_tokens)
    manager.start()
    results = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(ids) and time.monotonic() < deadline:
        result = manager.get_result(timeout=1)
        if result is not None and result.is_finished():
            results[result.request_id] = result
        elif result is None and not manager.is_running():
            break
    if keep_running_s:
        time.sleep(keep_running_s)
    cache = getattr(manager.batch_processor, "cache", None)
    adapter = cache.__dict__.get("_kvcached") if cache is not None else None
    adapters_snapshot = [adapter.snapshot()] if adapter is not None else []
    manager.stop(block=True, timeout=30)
    errors = {r: res.error for r, res in results.items() if res.error}
    run.last_adapter = adapter  # strong reference for tests that inspect it after the run
    return {r: res.generated_tokens for r, res in results.items()}, errors, adapters_snapshot


class StartWaitTest(unittest.TestCase):
    """Start-up backing waits while another engine holds the budget (no torch needed)."""

    class Api:
        def __init__(self, refusals):
            self.refusals, self.calls = refusals, 0

        def acquire(self, ranges):
            self.calls += 1
            return transformers_cb.C.ERR_NO_MEMORY if self.calls <= self.refusals else transformers_cb.C.OK

        def last_error(self):
            return "budget refused 2 MiB on GPU 0"

    def context(self, api, wait_s):
        ctx = transformers_cb._Context(api, transformers_cb.HookSettings(), None, 0)
        ctx.settings.start_wait_s = wait_s
        return ctx

    def test_waits_until_memory_comes_back(self):
        api = self.Api(refusals=3)
        status = transformers_cb._acquire_waiting(self.context(api, 5.0), [(0, 1)], "padding")
        self.assertEqual(status, transformers_cb.C.OK)
        self.assertEqual(api.calls, 4)

    def test_gives_up_after_the_start_wait(self):
        api = self.Api(refusals=10**9)
        start = time.monotonic()
        status = transformers_cb._acquire_waiting(self.context(api, 0.3), [(0, 1)], "padding")
        self.assertEqual(status, transformers_cb.C.ERR_NO_MEMORY)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)
        self.assertLess(time.monotonic() - start, 2.0)


@unittest.skipUnless(HAVE_ENGINE, SKIP_REASON if not HAVE_ENGINE else "")
class TransformersAdapterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        transformers.logging.set_verbosity_error()
        transformers_cb.patch()
        cls.model = tiny_model()
        cls.inputs = prompts()
        transformers_cb._overrides.update(api=None, require_cuda=False, use_pool=False)
        # Baseline: no shim in the process -> the hook leaves the cache alone.
        from kvcached_hook import capi

        capi.reset_for_tests()
        os.environ.pop("LD_PRELOAD", None)
        os.environ.pop("KVCACHED_SHIM_PATH", None)
        cls.baseline, errors, snaps = run(cls.model, cls.inputs)
        assert not errors and not snaps, (errors, snaps)
        assert len(cls.baseline) == len(cls.inputs)

    @classmethod
    def tearDownClass(cls):
        transformers_cb._overrides.update(api=None, require_cuda=True, use_pool=True)

    def setUp(self):
        for name in ("KVCACHED_SANITY_CHECK", "KVCACHED_HOOK_IDLE_TRIM_S", "KVCACHED_HOOK_PREFIX_CACHE"):
            os.environ.pop(name, None)
        self.checks = {"rows": 0, "unbacked": 0}
        self._orig_update = cb_cache.PagedAttentionCache.update
        test = self

        def checked_update(cache, key_states, value_states, layer_idx, read_index, write_index):
            api = transformers_cb._overrides["api"]
            if api is None:  # a baseline run: nothing to check
                return test._orig_update(cache, key_states, value_states, layer_idx, read_index, write_index)
            group, j = cache.layer_index_to_group_indices[layer_idx]
            for tensor in (cache.key_cache[j], cache.value_cache[j]):
                row = tensor.stride(0) * tensor.element_size()
                for index in (write_index[group], read_index[group]):
                    for r in set(index.tolist()):
                        test.checks["rows"] += 1
                        if not api.backed(tensor.data_ptr() + r * row, row):
                            test.checks["unbacked"] += 1
            return test._orig_update(cache, key_states, value_states, layer_idx, read_index, write_index)

        cb_cache.PagedAttentionCache.update = checked_update

    def tearDown(self):
        cb_cache.PagedAttentionCache.update = self._orig_update

    def use_fake(self, budget_pages=None):
        api = FakeCApi(PAGE, SharedBudget(budget_pages))
        transformers_cb._overrides["api"] = api
        return api

    def test_outputs_identical_and_every_row_backed(self):
        api = self.use_fake()
        started = time.monotonic()
        outputs, errors, snaps = run(self.model, self.inputs)
        elapsed = time.monotonic() - started
        self.assertEqual(errors, {})
        self.assertEqual(outputs, self.baseline)
        self.assertGreater(self.checks["rows"], 1000)
        self.assertEqual(self.checks["unbacked"], 0, "the engine touched KV rows on unacquired pages")
        self.assertEqual(api.release_errors, 0)
        self.assertEqual(len(snaps), 1)
        snap = snaps[0]
        self.assertGreater(snap["acquire_calls"], 0)
        self.assertEqual(snap["refusals"], 0)
        # Batching: the C calls are per step, not per block or per request.
        self.assertLessEqual(snap["acquire_calls"] + snap["release_calls"], 2 * snap["steps"])
        self.assertLess(snap["acquire_calls"], snap["pages_acquired_total"])
        # Per-step costs for kvctl (kvcached_report_engine_steps): rate-limited, cumulative, and the
        # last totals are the steps that ran, the hook's time in them and its C calls.
        reports = api.step_reports
        self.assertGreaterEqual(len(reports), 1)
        # At most one report per 0.5 s of running, plus the idle and final ones: a bound in time, not
        # in steps (on a loaded machine a step can take longer than the period).
        # (test_vllm_observe checks the rate limit itself with a fake clock).
        self.assertLessEqual(len(reports), elapsed / 0.5 + 3, "not rate-limited")
        self.assertEqual([r[1] for r in reports], sorted(r[1] for r in reports))
        adapter = run.last_adapter
        timing, tracker = adapter.timing, adapter.tracker
        adapter.reporter.flush(timing.counted_steps, timing.counted_ns, tracker.acquire_calls + tracker.release_calls, force=True)
        _, steps, hook_ns, c_calls = api.step_reports[-1]
        self.assertEqual(steps, len(timing.per_step_us))
        self.assertGreater(steps, 10)
        self.assertEqual(c_calls, snap["acquire_calls"] + snap["release_calls"])
        self.assertAlmostEqual(hook_ns / 1e3, sum(timing.per_step_us), delta=1.0)

    def test_unpatch_and_patch_alternate_between_plain_and_managed_caches(self):
        # The GPU throughput check alternates both kinds of run in one process.
        self.use_fake()
        try:
            for managed in (False, True, False, True):
                (transformers_cb.patch if managed else transformers_cb.unpatch)()
                outputs, errors, snaps = run(self.model, self.inputs)
                self.assertEqual(errors, {})
                self.assertEqual(bool(snaps), managed)
                self.assertEqual(outputs, self.baseline)
        finally:
            transformers_cb.patch()

    def test_budget_refusals_make_requests_wait(self):
        # Each fake page holds 4 blocks of one tensor; the cache has 4 tensors. A budget of 48 pages
        # backs 12 pages per tensor = 48 blocks of the 96: requests must wait for each other.
        api = self.use_fake(budget_pages=48)
        outputs, errors, snaps = run(self.model, self.inputs, max_new_tokens=24)
        baseline, _, _ = self._baseline(max_new_tokens=24)
        self.assertEqual(errors, {})
        self.assertEqual(set(outputs), set(baseline))
        self.assertEqual(outputs, baseline)
        self.assertGreater(api.refusals, 0, "the budget never refused: the test did not exercise waiting")
        self.assertLessEqual(api.peak_pages, 48)
        self.assertEqual(self.checks["unbacked"], 0)
        self.assertEqual(api.release_errors, 0)

    def _baseline(self, **kwargs):
        saved = transformers_cb._overrides["api"]
        transformers_cb._overrides["api"] = None
        try:
            return run(self.model, self.inputs, **kwargs)
        finally:
            transformers_cb._overrides["api"] = saved

    def test_idle_engine_gives_pages_back(self):
        os.environ["KVCACHED_HOOK_IDLE_TRIM_S"] = "0.2"
        api = self.use_fake()
        outputs, errors, snaps = run(self.model, self.inputs, keep_running_s=1.5)
        self.assertEqual(errors, {})
        self.assertEqual(outputs, self.baseline)
        self.assertEqual(snaps[0]["held_blocks"], 0)
        self.assertGreater(snaps[0]["idle_trims"], 0)
        # Only the pages of the 2 padding blocks (per tensor) stay backed.
        self.assertLessEqual(len(api.in_use_pages()), 4 * 2)
        self.assertGreater(api.peak_pages, 8)

    def test_unmanageable_cache_is_backed_fully_instead(self):
        class EagerRegions(FakeCApi):  # the tensors are not lazy regions: the hook must not manage them
            def region_info(self, addr):
                info = super().region_info(addr)
                return info.__class__(**dict(info.__dict__, kind=1))

        api = EagerRegions(PAGE)
        transformers_cb._overrides["api"] = api
        outputs, errors, snaps = run(self.model, self.inputs)
        self.assertEqual(errors, {})
        self.assertEqual(outputs, self.baseline)
        self.assertEqual(snaps, [])  # not managed
        self.assertEqual(self.checks["unbacked"], 0)  # but every row was backed

    def test_sanity_check_clean_run_then_missing_page_is_reported(self):
        os.environ["KVCACHED_SANITY_CHECK"] = "1"
        os.environ["KVCACHED_HOOK_PREFIX_CACHE"] = "keep"
        os.environ["KVCACHED_HOOK_IDLE_TRIM_S"] = "off"
        api = self.use_fake()
        outputs, errors, snaps = run(self.model, self.inputs)
        self.assertEqual(outputs, self.baseline)
        self.assertGreater(snaps[0]["sanity_checks"], 5)
        self.assertEqual(snaps[0]["sanity_violations"], 0)
        # Plant a fault: the shim loses a page under a block the engine still holds (its prefix cache).
        adapter = run.last_adapter
        self.assertIs(adapter.api, api)
        held = adapter.held_blocks()
        self.assertTrue(held, "no held blocks to check")
        block = sorted(held)[0]
        addr, length = adapter.layout.block_ranges(block)[1]
        page = addr // PAGE
        refs = api.refs.pop(page)
        try:
            found = adapter.sanity.check_held(held)
        finally:
            api.refs[page] = refs
        self.assertGreaterEqual(found, 1)
        # The report names the page's first held block in the engine's own order: any held block
        # on that page (several share one; which comes first varies between runs).
        on_page = [b for b in held if any(a // PAGE == page for a, _ in adapter.layout.block_ranges(b))]
        self.assertIn(block, on_page)
        last = adapter.sanity.violations[-1]
        self.assertTrue(any(f"block {b} (" in last for b in on_page), last)
        self.assertIn("is ZERO", last)
        self.assertEqual(int(re.search(r"page at (0x[0-9a-f]+)", last).group(1), 16) // PAGE, page, last)


if __name__ == "__main__":
    unittest.main()
