"""Page math for a paged KV cache: which shim pages each engine block touches, in every tensor.

An engine keeps its KV cache in one or more tensors (one per layer and K/V in transformers, one
big tensor in others). Block b occupies bytes [b * block_bytes, (b + 1) * block_bytes) from the
start of each tensor. The shim backs memory in pages of `page_size` bytes, counted from the base
of the region the tensor lives in.

Tensors whose start lies at the same offset inside a page ("phase") have identical block-to-page
maps, so they form one class. A *unit* is one page index of one class: backing a unit means
acquiring that page in every tensor of the class, in one C call together with the other units of
the step. Nearly always there is a single class (every tensor starts on a page boundary).

Pure Python, no torch: the unit tests exercise it with made-up addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TensorSpan:
    """One KV tensor as the shim sees it."""

    addr: int  # first byte (tensor.data_ptr())
    nbytes: int
    region_base: int  # base of the shim region containing it (page grid origin)
    name: str = ""  # for reports: "K[3]" ...
    layers: tuple[int, ...] = field(default=())  # model layers that read/write this tensor
    block_bytes: int = 0  # bytes per block in this tensor; 0: the layout's (tensors may differ)


class KVLayout:
    """Block <-> unit <-> byte-range arithmetic for a set of tensors sharing one block numbering.

    Block b is bytes [b * B, (b + 1) * B) of each tensor, where B is the layout's block_bytes or
    the tensor's own (TensorSpan.block_bytes; vLLM's hybrid models give each tensor its own).
    Tensors with the same phase and the same B form one class.
    """

    def __init__(self, spans: list[TensorSpan], block_bytes: int, num_blocks: int, page_size: int) -> None:
        if page_size <= 0 or block_bytes <= 0 or num_blocks <= 0:
            raise ValueError(f"bad layout: page_size={page_size} block_bytes={block_bytes} num_blocks={num_blocks}")
        if not spans:
            raise ValueError("bad layout: no tensors")
        self.span_block_bytes = [span.block_bytes or block_bytes for span in spans]
        for span, bb in zip(spans, self.span_block_bytes):
            if bb <= 0 or span.nbytes < num_blocks * bb:
                raise ValueError(
                    f"tensor {span.name or hex(span.addr)} holds {span.nbytes} bytes, "
                    f"fewer than {num_blocks} blocks x {bb} bytes"
                )
            if span.addr < span.region_base:
                raise ValueError(f"tensor {span.name or hex(span.addr)} starts before its region")
        self.spans = list(spans)
        self.block_bytes = block_bytes
        self.num_blocks = num_blocks
        self.page_size = page_size
        keys: list[tuple[int, int]] = []
        self.class_spans: list[list[int]] = []
        for index, (span, bb) in enumerate(zip(spans, self.span_block_bytes)):
            key = ((span.addr - span.region_base) % page_size, bb)
            if key not in keys:
                keys.append(key)
                self.class_spans.append([])
            self.class_spans[keys.index(key)].append(index)
        self.phases = [phase for phase, _ in keys]
        self.class_block_bytes = [bb for _, bb in keys]
        # Pages per class: enough for every block (unit ids are class * stride + page).
        self.pages_per_class = max((phase + num_blocks * bb + page_size - 1) // page_size for phase, bb in keys)
        self.num_units = len(keys) * self.pages_per_class
        only = keys[0]
        self._single_aligned = len(keys) == 1 and only[0] == 0 and page_size % only[1] == 0
        self._blocks_per_page = page_size // only[1] if self._single_aligned else 0
        self._ranges: dict[int, list[tuple[int, int]]] = {}  # unit_ranges, as asked for

    @property
    def blocks_per_page(self) -> int:
        """Blocks in each unit when every block lies in exactly one unit (block // this is its
        unit: one class, page-aligned, whole blocks a page); 0 otherwise."""
        return self._blocks_per_page

    # ---- block -> units ----
    def block_units(self, block: int) -> list[int]:
        """Units (pages in every class) that block `block` touches, ascending."""
        if self._single_aligned:
            return [block // self._blocks_per_page]
        units = []
        for cls, phase in enumerate(self.phases):
            bb = self.class_block_bytes[cls]
            start = block * bb
            end = start + bb - 1
            base = cls * self.pages_per_class
            units.extend(range(base + (phase + start) // self.page_size, base + (phase + end) // self.page_size + 1))
        return units

    # ---- unit -> blocks ----
    def unit_blocks(self, unit: int) -> range:
        """Blocks (among the first num_blocks) that touch `unit`."""
        if self._single_aligned:
            first = unit * self._blocks_per_page
            return range(first, min(first + self._blocks_per_page, self.num_blocks))
        cls, page = divmod(unit, self.pages_per_class)
        phase, bb = self.phases[cls], self.class_block_bytes[cls]
        lo = page * self.page_size - phase  # tensor-relative byte range of the page
        hi = lo + self.page_size
        first = max(0, lo // bb) if lo >= 0 else 0
        last = min(self.num_blocks - 1, (hi - 1) // bb)
        return range(first, last + 1) if last >= first else range(0)

    def smallest_unit_bytes(self) -> int:
        """The least an engine on this layout takes or gives: one page in every tensor of its
        smallest class (published to the sharing policy: kvcached_share_set_unit)."""
        return min(len(spans) for spans in self.class_spans) * self.page_size

    # ---- unit -> byte ranges ----
    def unit_span_ranges(self, unit: int) -> list[tuple[int, int, int]]:
        """(span index, addr, length) of the unit's page in each tensor of its class, clipped to
        the tensor (a page at either end of a tensor may stick out of it)."""
        cls, page = divmod(unit, self.pages_per_class)
        phase = self.phases[cls]
        out = []
        for index in self.class_spans[cls]:
            span = self.spans[index]
            start = span.addr - phase + page * self.page_size
            lo, hi = max(start, span.addr), min(start + self.page_size, span.addr + span.nbytes)
            if hi > lo:
                out.append((index, lo, hi - lo))
        return out

    def unit_ranges(self, unit: int) -> list[tuple[int, int]]:
        """(addr, length) of the unit's page in each tensor of its class (the caller must not
        change the list: it is kept, since every acquire and release of the unit asks for it)."""
        ranges = self._ranges.get(unit)
        if ranges is None:
            ranges = self._ranges[unit] = [(addr, length) for _, addr, length in self.unit_span_ranges(unit)]
        return ranges

    def unit_bytes(self, unit: int) -> int:
        """Bytes of shim pages the unit backs: one page in each tensor of its class (a page shared
        with a neighbour tensor counted in each)."""
        return len(self.unit_ranges(unit)) * self.page_size

    def block_ranges(self, block: int) -> list[tuple[int, int]]:
        """(addr, length) of block `block` in every tensor."""
        return [(span.addr + block * bb, bb) for span, bb in zip(self.spans, self.span_block_bytes)]

    def locate(self, addr: int) -> tuple[int, int] | None:
        """(span index, block) holding byte `addr`, or None."""
        for index, span in enumerate(self.spans):
            if span.addr <= addr < span.addr + span.nbytes:
                return index, (addr - span.addr) // self.span_block_bytes[index]
        return None

    def describe_unit(self, unit: int) -> str:
        cls, page = divmod(unit, self.pages_per_class)
        return f"page {page}" + (f" of class {cls}" if len(self.phases) > 1 else "")
