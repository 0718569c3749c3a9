"""vLLM's attention sinks against the adapter, with vLLM's real classes on the CPU (run once per
supported vLLM release).

vLLM's SinkFullAttentionManager takes its sink blocks (1..n) from the BlockPool's free queue when
it is built, after BlockPool.__init__ (where the adapter adopts every block as free), and holds
them with ref 0 and no hash; its StaticSinkAttention layers write the sink KV there once, in
warm-up, before any scheduler exists. (In vLLM 0.24.0 and 0.26.0 that manager's __init__ does
not take the keywords its own coordinator passes, scheduler_block_size and needs_kv_cache_zeroing:
building a Scheduler for a sink cache raises TypeError, hook or not. The tests use its body with
the signature fixed, as a vLLM with that repaired runs it.) So:

- the worker side backs a cache with a sink spec fully at allocation, and the scheduler leaves it
  to vLLM (the sink KV survives warm-up);
- the scheduler side, should a manager hold blocks outside the queue in a cache it does manage,
  keeps them held: backed at every step, never released, never moved in vLLM's free queue.

Skipped (ctest SKIP) when vLLM is not importable or has no attention-sink KV cache.
"""

import unittest
from unittest import mock

import test_vllm_adapter as A
import vllm_support as V
from fake_capi import FakeCApi, SharedBudget

if V.HAVE_VLLM:
    import torch
    from kvcached_hook.engines.vllm import registry, worker
    from vllm.v1 import kv_cache_interface
    from vllm.v1.core import single_type_kv_cache_manager as managers

PAGE = 8192  # a block = 2 x 16 tokens x 2 heads x 16 x 2 bytes = 2 KiB: 4 blocks per page
SINK_LEN = 6 * V.BLOCK  # sink blocks 1..6: three share the null block's page, three the next one


def sink_config(vllm_config):
    """A two-layer cache of sink attention layers, sized by vLLM's own get_kv_cache_configs."""
    spec_cls = kv_cache_interface.SinkFullAttentionSpec
    specs = {f"layers.{i}.attn": spec_cls(block_size=V.BLOCK, num_kv_heads=2, head_size=16, dtype=torch.float16,
                                          sink_len=SINK_LEN) for i in range(2)}
    per_block = sum(spec.page_size_bytes for spec in specs.values())
    blocks = vllm_config.cache_config.num_gpu_blocks_override
    available = per_block * (max(blocks, vllm_config.model_config.max_model_len // V.BLOCK) + 8)
    return V.kv_cache_utils.get_kv_cache_configs(vllm_config, [specs], [available])[0]


def sink_manager_init(self, kv_cache_spec, **kwargs):
    """vLLM's SinkFullAttentionManager.__init__ (0.24-0.26) taking every keyword its coordinator
    passes to the base class."""
    managers.FullAttentionManager.__init__(self, kv_cache_spec, **kwargs)
    sink_len = kv_cache_spec.sink_len
    assert sink_len is not None and sink_len > 0 and sink_len % self.block_size == 0
    self.sink_blocks = self.block_pool.free_block_queue.popleft_n(sink_len // self.block_size)


def queue_problems(pool, outside) -> list[str]:
    """vLLM's free queue walked link by link: each block once, links both ways, its count equal to
    num_free_blocks and to get_num_free_blocks, none of `outside` in it."""
    queue = pool.free_block_queue
    problems, seen = [], set()
    prev, node = queue.fake_free_list_head, queue.fake_free_list_head.next_free_block
    while node is not queue.fake_free_list_tail:
        if node is None or node.prev_free_block is not prev or node.block_id in seen:
            problems.append(f"broken free queue after block {prev.block_id}")
            break
        seen.add(node.block_id)
        prev, node = node, node.next_free_block
    if len(seen) != queue.num_free_blocks or pool.get_num_free_blocks() != queue.num_free_blocks:
        problems.append(f"queue walk {len(seen)} blocks, num_free_blocks {queue.num_free_blocks}, "
                        f"get_num_free_blocks {pool.get_num_free_blocks()}")
    problems += [f"sink block {b} in the free queue" for b in sorted(seen & set(outside))]
    return problems


@unittest.skipUnless(V.HAVE_VLLM, V.SKIP_REASON if not V.HAVE_VLLM else "")
class VllmSinkTest(A.PatchedVllmTest):

    def setUp(self):
        if getattr(kv_cache_interface, "SinkFullAttentionSpec", None) is None:
            self.skipTest(f"vLLM {V.vllm.__version__} has no attention-sink KV cache (SinkFullAttentionSpec)")
        manager_cls = getattr(managers, "SinkFullAttentionManager", None)
        if manager_cls is None:
            self.skipTest(f"vLLM {V.vllm.__version__} has no attention-sink manager (SinkFullAttentionManager)")
        patcher = mock.patch.object(manager_cls, "__init__", sink_manager_init)
        patcher.start()
        self.addCleanup(patcher.stop)
        registry.clear()
        self.api = FakeCApi(page_size=PAGE, budget=SharedBudget(None))
        worker.overrides["api"] = self.api

    def build(self):
        vllm_config = V.make_vllm_config(64)
        config = sink_config(vllm_config)
        V.build_worker_cache(vllm_config, config)
        return vllm_config, config

    def sink_blocks(self, scheduler) -> list[int]:
        managers = scheduler.kv_cache_manager.coordinator.single_type_managers
        ids = [b.block_id for m in managers for b in getattr(m, "sink_blocks", ())]
        self.assertEqual(ids, list(range(1, SINK_LEN // V.BLOCK + 1)), "vLLM's sink blocks are not 1..n")
        return ids

    def assert_sink_backed(self, layout, ids, where):
        for bid in ids:
            for addr, length in layout.block_ranges(bid):
                self.assertTrue(self.api.backed(addr, length), f"{where}: sink block {bid} not backed")

    def add(self, scheduler):
        for i in range(10):
            scheduler.add_request(V.make_request(f"r{i}", [1 + i] * 70, 20))

    def test_a_sink_cache_is_backed_fully_before_warm_up_and_vllm_keeps_it(self):
        vllm_config, config = self.build()
        (entry,) = registry.caches()
        self.assertFalse(entry.managed, "a cache with attention sinks was left elastic")
        for span in entry.layout.spans:  # before warm-up writes the sink KV
            self.assertTrue(self.api.backed(span.addr, span.nbytes), "the sink cache is not backed fully")
        self.assertIsNone(worker.written_before_scheduler(V.kv_cache_config(vllm_config, "uniform")))
        scheduler = V.make_scheduler(vllm_config, config)
        pool = scheduler.kv_cache_manager.block_pool
        self.assertIsNone(getattr(pool, "_kvcached", None), "the scheduler drives a fully backed cache")
        sinks = self.sink_blocks(scheduler)
        self.add(scheduler)

        def check(stage, _out):
            self.assertEqual(queue_problems(pool, sinks), [], stage)

        V.run_loop(scheduler, check=check)
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assert_sink_backed(entry.layout, sinks, "after the run")

    def test_blocks_a_manager_holds_outside_the_free_queue_stay_backed_and_out_of_it(self):
        # A cache the worker side does not back fully (a manager it does not know): the scheduler
        # side must still see the sink blocks as held.
        with mock.patch.object(worker, "written_before_scheduler", lambda _config: None):
            vllm_config, config = self.build()
        scheduler = V.make_scheduler(vllm_config, config)
        pool = scheduler.kv_cache_manager.block_pool
        adapter = getattr(pool, "_kvcached", None)
        self.assertIsNotNone(adapter, "the scheduler's BlockPool was not given the worker's cache")
        sinks = self.sink_blocks(scheduler)
        layout = adapter.tracker.layout
        self.add(scheduler)
        stages = []

        def check(stage, _out):
            where = f"{stage} step {adapter.tracker.step}"
            stages.append(stage)
            self.assert_sink_backed(layout, sinks, where)
            self.assertFalse(any(adapter.tracker.is_free(b) for b in sinks), f"{where}: a sink block counted free")
            self.assertEqual(queue_problems(pool, sinks), [], where)
            self.assertEqual(adapter.mismatches(), [], where)
            for block, ranges in ((b, layout.block_ranges(b)) for b in adapter.held_blocks()):
                self.assertTrue(all(self.api.backed(a, n) for a, n in ranges), f"{where}: held block {block} not backed")

        V.run_loop(scheduler, check=check)
        self.assertFalse(scheduler.has_requests(), "requests did not finish")
        self.assertGreater(len(stages), 20)
        # vLLM refuses (it counts the sink blocks as in use); its wrapper syncs every block anyway.
        pool.reset_prefix_cache()
        check("reset_prefix_cache", None)
        adapter.hooks.idle_tick(now=1e6)  # idle long: every page without a held block goes back
        adapter.hooks.idle_tick(now=2e6)
        check("idle", None)
        kept = {p for b in [0] + sinks for a, n in layout.block_ranges(b) for p in self.api.pages_of(a, n)}
        self.assertEqual(self.api.in_use_pages(), kept, "idle, pages other than the null and sink blocks' stay")


if __name__ == "__main__":
    unittest.main()
