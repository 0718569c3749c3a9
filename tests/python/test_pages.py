"""Page math: which shim pages each engine block touches, in every KV tensor."""

import random
import unittest

import fake_capi  # noqa: F401  (puts hooks/python on sys.path)
from kvcached_hook.pages import KVLayout, TensorSpan

MiB = 1 << 20


def spans_at(addrs, nbytes, page_size, bases=None):
    out = []
    for i, addr in enumerate(addrs):
        base = bases[i] if bases else addr - addr % page_size
        out.append(TensorSpan(addr, nbytes, base, name=f"T{i}"))
    return out


def pages_touched(addr, length, base, page_size):
    return set(range((addr - base) // page_size, (addr + length - 1 - base) // page_size + 1))


class AlignedLayoutTest(unittest.TestCase):
    """The common case: tensors start on page boundaries, blocks divide pages."""

    def setUp(self):
        self.ps = 2 * MiB
        self.bb = 256 * 1024  # 8 blocks per page
        self.layout = KVLayout(spans_at([64 * MiB, 128 * MiB], 40 * self.bb, self.ps), self.bb, 40, self.ps)

    def test_block_to_unit(self):
        self.assertEqual(self.layout.block_units(0), [0])
        self.assertEqual(self.layout.block_units(7), [0])
        self.assertEqual(self.layout.block_units(8), [1])
        self.assertEqual(self.layout.block_units(39), [4])

    def test_unit_to_blocks_is_clipped_to_the_cache(self):
        self.assertEqual(list(self.layout.unit_blocks(1)), list(range(8, 16)))
        self.assertEqual(list(self.layout.unit_blocks(4)), list(range(32, 40)))

    def test_unit_ranges_cover_the_page_in_every_tensor(self):
        self.assertEqual(self.layout.unit_ranges(1), [(64 * MiB + 2 * MiB, 2 * MiB), (128 * MiB + 2 * MiB, 2 * MiB)])

    def test_last_page_is_clipped_to_the_tensor(self):
        layout = KVLayout(spans_at([64 * MiB], 9 * self.bb, self.ps), self.bb, 9, self.ps)
        self.assertEqual(layout.unit_ranges(1), [(64 * MiB + 2 * MiB, self.bb)])


class IrregularLayoutTest(unittest.TestCase):
    """Tensors at odd offsets inside pages (several classes), blocks straddling pages, blocks
    larger than pages: the maps must agree with brute force for every block."""

    def check(self, layout, num_blocks):
        ps, bb = layout.page_size, layout.block_bytes
        for block in range(num_blocks):
            units = layout.block_units(block)
            self.assertEqual(units, sorted(units))
            for unit in units:
                self.assertIn(block, layout.unit_blocks(unit), f"block {block} unit {unit}")
            # The union of the block's units' ranges covers exactly the pages the block touches.
            covered = {}
            for unit in units:
                for index, addr, length in layout.unit_span_ranges(unit):
                    span = layout.spans[index]
                    covered.setdefault(index, set()).update(pages_touched(addr, length, span.region_base, ps))
            for index, span in enumerate(layout.spans):
                expect = pages_touched(span.addr + block * bb, bb, span.region_base, ps)
                self.assertEqual(covered.get(index, set()), expect, f"block {block} tensor {index}")
        for unit in range(layout.num_units):
            for block in layout.unit_blocks(unit):
                self.assertIn(unit, layout.block_units(block), f"unit {unit} block {block}")

    def test_random_layouts_match_brute_force(self):
        rng = random.Random(1234)
        for _ in range(300):
            ps = rng.choice([2, 4, 8]) * 4096
            bb = rng.choice([512, 1000, 4096, 3 * 4096, 5 * 4096, 20 * 4096])
            num_blocks = rng.randint(1, 40)
            count = rng.randint(1, 4)
            spans = []
            cursor = 1 << 30
            for i in range(count):
                base = cursor
                addr = base + rng.choice([0, 64, 4096, ps // 2, ps - 64])
                nbytes = num_blocks * bb + rng.randint(0, 3) * 64
                spans.append(TensorSpan(addr, nbytes, base, name=f"T{i}"))
                cursor = base + ((addr - base + nbytes) // ps + 2) * ps
            layout = KVLayout(spans, bb, num_blocks, ps)
            self.check(layout, num_blocks)

    def test_tensors_with_their_own_block_sizes_match_brute_force(self):
        # vLLM's hybrid models: every tensor has the same number of blocks, not the same block size.
        rng = random.Random(99)
        for _ in range(300):
            ps = rng.choice([2, 4, 8]) * 4096
            num_blocks = rng.randint(1, 40)
            spans = []
            cursor = 1 << 30
            for i in range(rng.randint(1, 4)):
                bb = rng.choice([512, 768, 4096, 3 * 4096, 20 * 4096])
                base = cursor
                addr = base + rng.choice([0, 64, ps // 2])
                spans.append(TensorSpan(addr, num_blocks * bb, base, name=f"T{i}", block_bytes=bb))
                cursor = base + ((addr - base + num_blocks * bb) // ps + 2) * ps
            layout = KVLayout(spans, spans[0].block_bytes, num_blocks, ps)
            for block in range(num_blocks):
                want = {(i, p) for i, s in enumerate(spans)
                        for p in pages_touched(s.addr + block * s.block_bytes, s.block_bytes, s.region_base, ps)}
                got = {(i, (a - spans[i].region_base) // ps)
                       for u in layout.block_units(block) for i, a, _ in layout.unit_span_ranges(u)}
                self.assertTrue(want <= got, f"block {block}: pages {sorted(want - got)} not covered")
                for u in layout.block_units(block):
                    self.assertIn(block, layout.unit_blocks(u))
            self.assertEqual(layout.block_ranges(0), [(s.addr, s.block_bytes) for s in spans])

    def test_classes_group_tensors_by_phase(self):
        ps = 2 * MiB
        spans = [
            TensorSpan(10 * ps, 8 * MiB, 10 * ps),
            TensorSpan(20 * ps + 4096, 8 * MiB, 20 * ps),
            TensorSpan(30 * ps, 8 * MiB, 30 * ps),
        ]
        layout = KVLayout(spans, 1 * MiB, 8, ps)
        self.assertEqual(layout.phases, [0, 4096])
        self.assertEqual(layout.class_spans, [[0, 2], [1]])

    def test_rejects_a_tensor_too_small(self):
        with self.assertRaises(ValueError):
            KVLayout([TensorSpan(0, 100, 0)], 64, 2, 4096)


if __name__ == "__main__":
    unittest.main()
