"""KVPageTracker + PageAwareFreeList against the fake C API: exact pages, page-aware order,
batching (one C call per step), delayed release, and refusal -> "no free blocks" (never raises)."""

import random
import unittest

from fake_capi import FakeCApi, SharedBudget
from kvcached_hook import capi as C
from kvcached_hook.freelist import PageAwareFreeList
from kvcached_hook.pages import KVLayout, TensorSpan
from kvcached_hook.tracker import BackingRefused, KVPageTracker, percentile

MiB = 1 << 20
PS = 2 * MiB
BB = 512 * 1024  # 4 blocks per page



def with_prefix_cache(tracker, free) -> list:
    """Gives the tracker a prefix cache: the returned list holds cached blocks, which eviction
    moves back to the free list."""
    cached = []

    def evict(k):
        n = min(k, len(cached))
        for _ in range(n):
            free.append(cached.pop())
        return n

    tracker.evict_cached = evict
    tracker.cached_count = lambda: len(cached)
    return cached

def make(num_blocks=32, tensors=4, budget_pages=None, delay=0, prefer_cached=True, phase=0, bb=BB):
    api = FakeCApi(PS, SharedBudget(budget_pages))
    spans = []
    for i in range(tensors):
        base = (1 << 32) + i * (1 << 28)
        spans.append(TensorSpan(base + phase, num_blocks * bb + phase, base, name=f"T{i}"))
    layout = KVLayout(spans, bb, num_blocks, PS)
    tracker = KVPageTracker(layout, api, num_blocks, release_delay_steps=delay, prefer_cached=prefer_cached, name="t")
    tracker.adopt(range(num_blocks))
    return api, layout, tracker, PageAwareFreeList(tracker)


def expected_pages(api, layout, held):
    """Fake page numbers that must be backed for the held blocks."""
    pages = set()
    for block in held:
        for addr, length in layout.block_ranges(block):
            pages.update(api.pages_of(addr, length))
    return pages


class FreeListTest(unittest.TestCase):
    def test_deque_surface(self):
        _, _, tracker, free = make(num_blocks=8)
        self.assertEqual(len(free), 8)
        self.assertTrue(free)
        self.assertIn(3, free)
        self.assertEqual(list(free), list(range(8)))
        with self.assertRaises(ValueError):
            free.remove(99)
        tracker.ensure(8)
        blocks = [free.popleft() for _ in range(8)]
        self.assertEqual(sorted(blocks), list(range(8)))
        self.assertFalse(free)
        with self.assertRaises(IndexError):
            free.popleft()
        free.extend([5, 1])
        free.append(2)
        self.assertEqual(list(free), [1, 2, 5])

    def test_lowest_backed_block_first(self):
        api, layout, tracker, free = make(num_blocks=16)
        self.assertTrue(tracker.ensure(1))  # backs page 0 (blocks 0..3)
        self.assertEqual(api.acquire_calls, 1)
        taken = [free.popleft() for _ in range(4)]
        self.assertEqual(taken, [0, 1, 2, 3])
        free.append(1)
        # Block 1 (backed page) comes before block 4 (unbacked), although 1 was freed last.
        self.assertEqual(free.popleft(), 1)

    def test_double_free_is_reported_not_counted(self):
        _, _, tracker, free = make(num_blocks=8)
        tracker.ensure(1)
        block = free.popleft()
        free.append(block)
        free.append(block)
        self.assertEqual(tracker.double_frees, 1)
        self.assertEqual(len(free), 8)


class BackingTest(unittest.TestCase):
    def test_exact_pages_of_held_blocks(self):
        api, layout, tracker, free = make(num_blocks=32, delay=0)
        tracker.step_begin()
        tracker.ensure(6)
        held = [free.popleft() for _ in range(6)]
        tracker.step_end()
        self.assertEqual(api.in_use_pages(), expected_pages(api, layout, held))

    def test_one_acquire_call_for_a_whole_step(self):
        api, layout, tracker, free = make(num_blocks=64, tensors=8)
        tracker.step_begin()
        self.assertTrue(tracker.ensure(40))
        for _ in range(40):
            free.popleft()
        tracker.step_end()
        self.assertEqual(api.acquire_calls, 1)
        self.assertEqual(api.ranges_acquired, 10 * 8)  # 10 pages x 8 tensors, one range each

    def test_release_waits_for_the_delay_and_is_one_call(self):
        api, layout, tracker, free = make(num_blocks=32, delay=2)
        tracker.step_begin()
        tracker.ensure(12)
        held = [free.popleft() for _ in range(12)]
        tracker.step_end()
        tracker.step_begin()
        free.extend(held)  # all three pages empty now
        tracker.step_end()
        self.assertEqual(api.release_calls, 0)
        tracker.step_begin()
        tracker.step_end()
        self.assertEqual(api.release_calls, 0)
        tracker.step_begin()
        tracker.step_end()
        self.assertEqual(api.release_calls, 1)
        self.assertEqual(api.in_use_pages(), set())

    def test_a_page_reused_before_the_flush_costs_no_call(self):
        api, _, tracker, free = make(num_blocks=32, delay=1)
        tracker.step_begin()
        tracker.ensure(1)
        block = free.popleft()
        tracker.step_end()
        tracker.step_begin()
        free.append(block)
        tracker.ensure(1)
        self.assertEqual(free.popleft(), block)
        tracker.step_end()
        for _ in range(3):
            tracker.step_begin()
            tracker.step_end()
        self.assertEqual((api.acquire_calls, api.release_calls), (1, 0))

    def test_a_retired_unit_hands_out_nothing_and_goes_at_the_fence_without_the_delay(self):
        api, layout, tracker, free = make(num_blocks=32, delay=3)
        lost = []
        tracker.on_release = lambda: lost.append(tracker.step)
        tracker.step_begin()
        tracker.ensure(12)
        held = [free.popleft() for _ in range(12)]  # units 0-2, lowest first
        tracker.step_end()
        tracker.fence = tracker.step - 1  # the step that used them is still in flight
        tracker.step_begin()
        free.extend(held[:4])  # unit 0 empty
        self.assertEqual(tracker.flush(force=True), 0, "released past the fence")
        self.assertEqual(tracker.retire([0, 1]), 1, "retired a unit with blocks in use")
        self.assertEqual(lost, [tracker.step], "the engine's arranged blocks were not dropped")
        self.assertEqual(tracker.nbfree, 0)
        self.assertTrue(tracker.ensure(1))  # backs a new unit: the retired one is not backed any more
        self.assertEqual(free.popleft(), 12, "handed out a block of the retired unit")
        tracker.step_end()
        self.assertEqual(api.release_calls, 0, "released before the fence")
        tracker.fence = tracker.step  # processed: no release delay for a retired unit
        tracker.step_begin()
        tracker.step_end()
        self.assertEqual(api.release_calls, 1)
        self.assertFalse(tracker.acq[0])
        self.assertEqual((tracker.nretiring, tracker.retiring[0]), (0, 0))
        self.assertEqual(api.in_use_pages(), expected_pages(api, layout, held[4:] + [12]))

    def test_a_retired_unit_handed_out_anyway_is_kept(self):
        api, layout, tracker, free = make(num_blocks=32, delay=3)
        tracker.step_begin()
        tracker.ensure(8)
        held = [free.popleft() for _ in range(8)]
        free.extend(held[:4])
        tracker.fence = 0
        tracker.retire([0])
        free.remove(2)  # vLLM took it without the hook's choice
        self.assertEqual(tracker.nretiring, 0)
        self.assertEqual(tracker.sync_backings, 0, "backed again although it never went")
        self.assertEqual([b for b in range(4) if tracker.fb[b]], [0, 1, 3], "its other blocks not backed again")
        tracker.fence = None
        for _ in range(5):
            tracker.step_begin()
            tracker.step_end()
        self.assertTrue(tracker.acq[0])
        self.assertEqual(api.in_use_pages(), expected_pages(api, layout, [2] + held[4:]))

    def test_units_kept_after_a_give_stay_until_the_hold_ends_or_a_forced_flush(self):
        api, _, tracker, free = make(num_blocks=32, delay=0)
        tracker.step_begin()
        tracker.ensure(12)
        held = [free.popleft() for _ in range(12)]  # units 0-2
        free.extend(held[4:8])  # unit 1 empty: what a give emptied beyond what it gave
        tracker.keep.add(1)
        tracker.step_end()
        for _ in range(3):
            tracker.step_begin()
            tracker.step_end()
        self.assertTrue(tracker.acq[1], "a kept unit was released during the hold")
        self.assertEqual(api.release_calls, 0)
        tracker.keep.clear()  # the hold ended
        tracker.step_begin()
        tracker.step_end()
        self.assertFalse(tracker.acq[1])
        tracker.step_begin()
        free.extend(held[8:])
        tracker.keep.add(2)
        self.assertEqual(tracker.flush(force=True), 1, "a forced flush (the idle trim) keeps nothing")

    def test_pins_are_never_released(self):
        # Like an engine's padding blocks: the last two blocks of the layout are not managed.
        api = FakeCApi(PS)
        layout = KVLayout([TensorSpan(1 << 32, 16 * BB, 1 << 32)], BB, 16, PS)
        tracker = KVPageTracker(layout, api, 14, release_delay_steps=0)
        tracker.adopt(range(14))
        tracker.pin_blocks([14, 15])
        for _ in range(3):
            tracker.step_begin()
            tracker.step_end()
        self.assertEqual(api.in_use_pages(), expected_pages(api, layout, [14, 15]))
        # The pinned page's managed blocks (12, 13) count as backed.
        self.assertEqual(tracker.nbfree, 2)
        self.assertEqual(PageAwareFreeList(tracker).popleft(), 12)

    def test_straddling_blocks_back_both_pages(self):
        api, layout, tracker, free = make(num_blocks=20, phase=4096, bb=3 * MiB // 2)
        tracker.step_begin()
        tracker.ensure(5)
        held = [free.popleft() for _ in range(5)]
        tracker.step_end()
        self.assertTrue(expected_pages(api, layout, held) <= api.in_use_pages())


class TakeFreeTest(unittest.TestCase):
    def test_take_free_matches_take_one_by_one_and_leaves_held_blocks(self):
        """The batch form used after an engine handed out several blocks: same counts, same pages,
        same C calls as take() per block; a block already held is left alone, not an error."""
        results = []
        for batch in (False, True):
            api, layout, tracker, _ = make(num_blocks=16)
            self.assertTrue(layout.blocks_per_page)  # take_free's inline path
            self.assertTrue(tracker.ensure(4))  # blocks 0-3 in a backed page, 4.. not backed
            tracker.take(2)
            tracker.give(2)  # page 0 empty now: waiting for its release
            self.assertIn(0, tracker.empty_since)
            tracker.take(9)  # held already (backed on the spot)
            blocks = [0, 1, 9, 5]  # two backed, one held, one in an unbacked page
            if batch:
                tracker.take_free(blocks)
            else:
                for block in blocks:
                    if tracker.is_free(block):
                        tracker.take(block)
            results.append((tracker.nfree, tracker.nbfree, list(tracker.count), api.acquire_calls,
                            tracker.sync_backings, sorted(api.in_use_pages()), bytes(tracker.fb),
                            bytes(tracker.fu), dict(tracker.empty_since)))
            self.assertFalse(any(tracker.is_free(b) for b in blocks))
            self.assertEqual(sorted(api.in_use_pages()), sorted(expected_pages(api, layout, [0, 1, 5, 9])))
        self.assertEqual(results[0], results[1])

    def test_take_free_of_a_block_outside_the_cache_raises(self):
        _, _, tracker, _ = make(num_blocks=8)
        with self.assertRaises(ValueError):
            tracker.take_free([8])


class PlanTest(unittest.TestCase):
    def test_the_one_unit_plan_chooses_as_the_general_one(self):
        """ensure's plan when each block lies in one unit (its fast form) chooses the same units as
        the general form, for random free, held and backed blocks, deficits and a cache that
        ends inside a page."""
        rng = random.Random(7)
        plans = 0
        for num_blocks in (16, 30, 64):
            for _ in range(50):
                _, layout, tracker, _ = make(num_blocks=num_blocks)
                self.assertTrue(layout.blocks_per_page)
                held = [block for block in range(num_blocks) if rng.random() < 0.3]
                for block in held:  # backs their pages
                    tracker.take(block)
                for block in held:
                    if rng.random() < 0.5:
                        tracker.give(block)
                tracker.flush(force=True)  # pages left empty go back: their blocks free unbacked
                for deficit in (1, 2, 3, 5, 9, num_blocks):
                    plan = tracker._plan_any(deficit)
                    plans += bool(plan)
                    self.assertEqual(tracker._plan_one_unit_blocks(deficit), plan,
                                     f"{num_blocks} blocks, deficit {deficit}, fu {list(tracker.fu)}")
        self.assertGreater(plans, 100, "too few plans chose a unit: the test proves little")


class RefusalTest(unittest.TestCase):
    def test_refusal_is_no_free_blocks_not_an_exception(self):
        api, _, tracker, free = make(num_blocks=64, tensors=2, budget_pages=4)  # 2 pages per unit
        tracker.step_begin()
        self.assertTrue(tracker.ensure(8))  # 2 units = 4 pages: the whole budget
        self.assertFalse(tracker.ensure(9))
        self.assertTrue(tracker.pressure)
        self.assertTrue(tracker.refused_this_step)
        self.assertEqual(tracker.effective_free(64), 8)
        self.assertEqual(tracker.refusals, 1)
        tracker.step_end()
        tracker.step_begin()  # a new step tries again
        self.assertFalse(tracker.pressure)
        self.assertEqual(tracker.effective_free(64), 64)

    def test_a_cap_on_units_holds_acquires_back_like_a_refusal_without_a_call(self):
        api, _, tracker, free = make(num_blocks=64, tensors=2)  # 4 blocks a unit, no budget
        tracker.step_begin()
        self.assertTrue(tracker.ensure(8))  # 2 units
        self.assertEqual(tracker.held_units, 2)
        tracker.max_units = 3
        self.assertTrue(tracker.ensure(12))  # a third unit fits under the cap
        calls = api.acquire_calls
        self.assertFalse(tracker.ensure(13), "a fourth unit passed the cap")
        self.assertEqual(api.acquire_calls, calls, "the cap made a C call")
        self.assertTrue(tracker.pressure)
        self.assertEqual(tracker.effective_free(64), 12)
        tracker.step_end()
        tracker.step_begin()
        self.assertFalse(tracker.ensure(13, best_effort=True))
        self.assertFalse(tracker.pressure, "a best-effort hold-back entered pressure")
        tracker.max_units = None
        self.assertTrue(tracker.ensure(13))
        self.assertEqual(tracker.held_units, 4)
        self.assertEqual(tracker.held_units, sum(tracker.acq))
        tracker.step_end()
        # Releases count down: all four units empty and released (delay 0).
        tracker.step_begin()
        tracker.step_end()
        self.assertEqual(tracker.held_units, sum(tracker.acq))

    def test_after_a_refusal_the_budget_is_asked_again_after_the_retry_time_or_an_own_release(self):
        api, _, tracker, free = make(num_blocks=64, tensors=2, budget_pages=4)  # a unit: 4 blocks, 2 pages
        api.headroom_supported = False  # a shim without kvcached_budget_headroom_get
        tracker.retry_ns = 3_600 * 10**9  # an hour: only the clock hand below or a release ends it
        tracker.step_begin()
        self.assertTrue(tracker.ensure(8))  # the whole budget
        taken = [free.popleft() for _ in range(8)]
        self.assertFalse(tracker.ensure(4))
        calls = api.acquire_calls
        tracker.step_end()
        # Another engine gives its pages back: the budget would say yes, but within the retry
        # time this engine does not ask; it behaves as refused, without a C call.
        api.budget.pages = 6
        for _ in range(3):
            tracker.step_begin()
            self.assertFalse(tracker.ensure(4))
            self.assertTrue(tracker.pressure)
            self.assertFalse(tracker.ensure(4, best_effort=True))
            tracker.step_end()
        self.assertEqual(api.acquire_calls, calls, "asked the budget within the retry time")
        self.assertEqual(tracker.refusals_assumed, 3)
        # The retry time over: it asks, and gets the pages.
        tracker._refused_ns -= tracker.retry_ns
        tracker.step_begin()
        self.assertTrue(tracker.ensure(4))
        self.assertEqual(api.acquire_calls, calls + 1)
        taken += [free.popleft() for _ in range(4)]
        # Refused again; then it releases a unit of its own: its next ask goes to the budget.
        self.assertFalse(tracker.ensure(4))
        calls = api.acquire_calls
        tracker.step_end()
        for block in taken[:4]:
            free.append(block)
        tracker.step_begin()
        tracker.step_end()  # delay 0: the emptied unit goes back
        self.assertEqual(tracker.units_released, 1)
        tracker.step_begin()
        self.assertTrue(tracker.ensure(4))
        self.assertEqual(api.acquire_calls, calls + 1, "an own release did not end the wait")

    def refused_within_an_hour_long_retry_time(self):
        """An engine that holds the whole budget (4 pages: two units of 2 pages) and was just
        refused a third unit; only the headroom query can end its wait. (api, tracker, calls)."""
        api, _, tracker, free = make(num_blocks=64, tensors=2, budget_pages=4)
        tracker.retry_ns = 3_600 * 10**9
        tracker.step_begin()
        self.assertTrue(tracker.ensure(8))
        for _ in range(8):
            free.popleft()
        self.assertFalse(tracker.ensure(4))
        tracker.step_end()
        return api, tracker, api.acquire_calls

    def test_within_the_retry_time_an_engine_asks_at_once_when_the_budget_has_room_again(self):
        api, tracker, calls = self.refused_within_an_hour_long_retry_time()
        api.budget.pages = 6  # another engine gave two pages back: room for the unit
        tracker.step_begin()
        self.assertTrue(tracker.ensure(4))
        self.assertEqual(api.acquire_calls, calls + 1)
        self.assertEqual(tracker.refusals_assumed, 0)
        self.assertEqual(api.headroom_calls, 1)
        self.assertFalse(tracker.pressure)

    def test_within_the_retry_time_an_engine_without_room_waits_without_an_acquire(self):
        api, tracker, calls = self.refused_within_an_hour_long_retry_time()
        for pages in (4, 5):  # none free, then one page: less than the unit's two
            api.budget.pages = pages
            tracker.step_begin()
            self.assertFalse(tracker.ensure(4))
            self.assertTrue(tracker.pressure)
            tracker.step_end()
        self.assertEqual(api.acquire_calls, calls, "asked the budget without room")
        self.assertEqual(tracker.refusals_assumed, 2)
        self.assertEqual(api.headroom_calls, 2, "one headroom query per waiting step")

    def test_an_ask_on_the_headrooms_word_refused_anyway_is_not_repeated_within_the_retry_time(self):
        api, tracker, calls = self.refused_within_an_hour_long_retry_time()
        api.budget.pages = 6
        api.fail_next = [C.ERR_NO_MEMORY]  # the GPU itself is full, or another engine was quicker
        tracker.step_begin()
        self.assertFalse(tracker.ensure(4))
        tracker.step_end()
        self.assertEqual(api.acquire_calls, calls + 1)
        for _ in range(3):
            tracker.step_begin()
            self.assertFalse(tracker.ensure(4))
            tracker.step_end()
        self.assertEqual(api.acquire_calls, calls + 1, "the headroom was trusted again after being wrong")
        tracker._refused_ns -= tracker.retry_ns  # the retry time over: asks, and gets the pages
        tracker.step_begin()
        self.assertTrue(tracker.ensure(4))
        self.assertEqual(api.acquire_calls, calls + 2)

    def test_without_a_retry_time_every_step_asks_the_budget(self):
        api, _, tracker, free = make(num_blocks=64, tensors=2, budget_pages=4)
        self.assertEqual(tracker.retry_ns, 0)
        tracker.step_begin()
        self.assertTrue(tracker.ensure(8))
        self.assertFalse(tracker.ensure(12))
        tracker.step_end()
        calls = api.acquire_calls
        api.budget.pages = 8
        tracker.step_begin()
        self.assertTrue(tracker.ensure(12))
        self.assertEqual(api.acquire_calls, calls + 1)

    def test_best_effort_refusal_does_not_enter_pressure(self):
        api, _, tracker, _ = make(num_blocks=64, tensors=2, budget_pages=2)
        tracker.step_begin()
        self.assertFalse(tracker.ensure(20, best_effort=True))
        self.assertFalse(tracker.pressure)

    def test_other_errors_are_treated_as_no_memory(self):
        api, _, tracker, _ = make(num_blocks=16)
        api.fail_next = [C.ERR_DRIVER]
        tracker.step_begin()
        self.assertFalse(tracker.ensure(1))
        self.assertTrue(tracker.pressure)
        self.assertEqual(tracker.errors, 1)

    def test_take_of_unbacked_block_refused_raises_backing_refused(self):
        api, _, tracker, free = make(num_blocks=16, budget_pages=0)
        with self.assertRaises(BackingRefused):
            free.popleft()
        self.assertEqual(len(free), 16)  # nothing changed

    def test_cached_blocks_are_evicted_first_when_elastic(self):
        api, _, tracker, free = make(num_blocks=16, prefer_cached=True)
        cached = with_prefix_cache(tracker, free)
        tracker.ensure(4)
        cached.extend(free.popleft() for _ in range(4))  # a request finished: its blocks are cached
        calls = api.acquire_calls
        self.assertTrue(tracker.ensure(2))
        self.assertEqual(api.acquire_calls, calls)  # reused cached blocks, no new page
        self.assertEqual(len(cached), 2)

    def test_cached_blocks_are_kept_until_refusal_with_keep(self):
        api, _, tracker, free = make(num_blocks=16, tensors=1, budget_pages=1, prefer_cached=False)
        cached = with_prefix_cache(tracker, free)
        tracker.ensure(4)
        cached.extend(free.popleft() for _ in range(4))
        self.assertTrue(tracker.ensure(2))  # page 1 refused (budget 1) -> falls back to the cache
        self.assertEqual(tracker.refusals, 1)
        self.assertEqual(len(cached), 2)


class RandomisedInvariantTest(unittest.TestCase):
    """Random engine-like traffic: after every step, the fake's backed pages are exactly those of
    held blocks plus pages emptied within the release delay; nothing is released twice."""

    def test_invariants(self):
        rng = random.Random(7)
        for trial in range(20):
            delay = rng.choice([0, 1, 2, 3])
            api, layout, tracker, free = make(
                num_blocks=rng.choice([16, 40, 64]),
                tensors=rng.choice([1, 3]),
                budget_pages=rng.choice([None, 12, 30]),
                delay=delay,
                phase=rng.choice([0, 4096]),
            )
            held: list[int] = []
            for step in range(200):
                tracker.step_begin()
                for _ in range(rng.randint(0, 5)):
                    if held and rng.random() < 0.45:
                        free.append(held.pop(rng.randrange(len(held))))
                    else:
                        n = rng.randint(1, 4)
                        if n <= len(free) and tracker.ensure(n):
                            held.extend(free.popleft() for _ in range(n))
                tracker.step_end()
                must = expected_pages(api, layout, held)
                backed = api.in_use_pages()
                self.assertTrue(must <= backed, f"trial {trial} step {step}: held block on an unbacked page")
                extra = backed - must
                # Extra pages belong to units emptied less than `delay` steps ago.
                allowed = set()
                for unit, since in tracker.empty_since.items():
                    for addr, length in layout.unit_ranges(unit):
                        allowed.update(api.pages_of(addr, length))
                self.assertTrue(extra <= allowed, f"trial {trial} step {step}: page kept with no reason")
                self.assertEqual(len(free) + len(held), layout.num_blocks)
            self.assertEqual(api.release_errors, 0)


class PercentileTest(unittest.TestCase):
    def test_nearest_rank(self):
        self.assertEqual(percentile([], 50), 0.0)
        self.assertEqual(percentile([3, 1, 2], 50), 2)
        self.assertEqual(percentile(list(range(1, 101)), 99), 99)
        self.assertEqual(percentile([5], 99), 5)


if __name__ == "__main__":
    unittest.main()
