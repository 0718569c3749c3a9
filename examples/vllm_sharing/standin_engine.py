#!/usr/bin/env python3
"""A stand-in for `vllm serve` (CPU, stdlib only): the benchmark driver's plumbing can be proven
without a GPU by putting this program where the driver would start vLLM.

    standin_engine.py serve MODEL_DIR --port P [--kv-cache-memory-bytes N] [--max-num-seqs S]
                      [--block-size B] [--served-model-name NAME] [any other vllm flag: ignored]

It answers GET /health, GET /metrics (vllm:kv_cache_usage_perc, vllm:num_requests_running,
vllm:num_requests_waiting) and POST /v1/completions (streamed as server-sent events in chunked
HTTP, like vLLM: one chunk per token with `token_ids`, a last chunk with `usage`).

Its "engine" is a scheduler loop with one step every STANDIN_STEP_MS (default 10) ms: every
running request gets one token per step, a request is admitted when blocks for its prompt can be
had, and a request that cannot get a block for its next token preempts the newest running request
(recomputed later), as vLLM does. KV blocks follow vLLM's layout: one tensor per layer
(MODEL_DIR/config.json gives layers, KV heads and head size), block b at bytes [b*P, (b+1)*P) of each.

With the kvcached shim preloaded (LD_PRELOAD; on the build machine with the fake CUDA driver) the
tensors are lazy shim regions: the pages under the blocks in use are acquired and released through
the C API, one batched call per step each way, the page under the null block (block 0) of every
layer stays backed, and the sharing verdict is asked every step (stop admitting; preempt the newest
requests until `give_bytes` are freed). Without the shim the blocks are only counted (a static cache).
Under the shim the engine also does what the real hook does around each step, with the hook's own
classes: it reports its step totals (kvcached_report_engine_steps, so `kvctl list --json` shows
engine_steps, engine_hook_ns, engine_hook_c_calls) and, with KVCACHED_SANITY_CHECK=1, checks before
every step that each block a request holds is backed (IN_USE) in the shim; the checker's summary
line is logged at exit. scripts/gpu/vllm/dryrun.sh runs it as a fake `vllm` (tests/support/fake_vllm).

STANDIN_CORE=vllm replaces that scheduler by vLLM's own (standin_vllm.py: vLLM's real Scheduler, or
AsyncScheduler with STANDIN_ASYNC=1, and under the shim the real engine hook with its sharing
policy); only the model is simulated (STANDIN_STEP_MS per step plus STANDIN_TOKEN_US per scheduled
token). It needs vLLM importable; the HTTP side is the same.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "hooks", "python"))


class Request:
    def __init__(self, rid: int, prompt_len: int, max_tokens: int, prompt: list[int] | None = None):
        self.rid, self.prompt_len, self.max_tokens, self.prompt = rid, prompt_len, max_tokens, prompt
        self.generated = 0
        self.sent = 0  # tokens streamed to the client
        self.blocks: list[int] = []
        self.queue: asyncio.Queue = asyncio.Queue()
        self.admitted_at = 0.0

    def prompt_ids(self) -> list[int]:
        """The prompt's token ids: the client's, or distinct ones (no prefix shared by chance)."""
        if self.prompt and all(isinstance(t, int) for t in self.prompt):
            return list(self.prompt)
        return [1] + [(self.rid * 7919 + k) % 30000 + 100 for k in range(self.prompt_len - 1)]

    def tokens_needed(self) -> int:  # KV slots once the next token is written
        return self.prompt_len + self.generated + 1


class KvCache:
    """Blocks of a static cache (counted) or of lazy shim regions (pages acquired on demand)."""

    def __init__(self, num_blocks: int, block_bytes_per_layer: int, layers: int, api):
        self.num_blocks, self.block_bytes, self.layers, self.api = num_blocks, block_bytes_per_layer, layers, api
        self.free = list(range(1, num_blocks))  # block 0 is the null block (never handed out)
        heapq.heapify(self.free)
        self.c_calls = self.refusals = 0
        self.c_ns = 0  # time spent in the shim's C calls (the step report's hook time)
        self.is_free = bytearray(b"\x01") * num_blocks
        self.is_free[0] = 0
        if api is None:
            return
        from kvcached_hook import capi as C

        self.page = api.stats(0)["page_size"]
        if self.page % block_bytes_per_layer:
            raise SystemExit(f"standin: block of {block_bytes_per_layer} B does not divide the page {self.page} B")
        self.per_page = self.page // block_bytes_per_layer
        size = -(-num_blocks * block_bytes_per_layer // self.page) * self.page
        self.bases = [api.region_create(0, size, C.REGION_LAZY) for _ in range(layers)]
        self.page_users = [0] * (size // self.page)
        self.page_users[0] = 1  # the null block's page stays backed (vLLM's adapter pins it)
        status = api.acquire([(b, self.page) for b in self.bases])
        if status != C.OK:
            raise SystemExit(f"standin: backing the null block failed: {api.status_string(status)}")

    def used_blocks(self) -> int:
        return self.num_blocks - 1 - len(self.free)

    def allocate(self, n: int) -> list[int] | None:
        """n blocks, lowest first, with their pages backed; None (nothing changed) when refused."""
        if n > len(self.free):
            return None
        blocks = [heapq.heappop(self.free) for _ in range(n)]
        for b in blocks:
            self.is_free[b] = 0
        if self.api is None:
            return blocks
        new_pages = sorted({b // self.per_page for b in blocks if self.page_users[b // self.per_page] == 0})
        if new_pages:
            self.c_calls += 1
            t0 = time.perf_counter_ns()
            status = self.api.acquire([(base + p * self.page, self.page) for p in new_pages for base in self.bases])
            self.c_ns += time.perf_counter_ns() - t0
            if status != 0:
                self.refusals += 1
                for b in blocks:
                    heapq.heappush(self.free, b)
                    self.is_free[b] = 1
                return None
        for b in blocks:
            self.page_users[b // self.per_page] += 1
        return blocks

    def release(self, blocks: list[int]) -> int:
        """Frees blocks; pages left empty go back to the shim. Returns the bytes given back."""
        emptied = []
        for b in blocks:
            heapq.heappush(self.free, b)
            self.is_free[b] = 1
            if self.api is not None:
                p = b // self.per_page
                self.page_users[p] -= 1
                if self.page_users[p] == 0:
                    emptied.append(p)
        if not emptied:
            return 0
        self.c_calls += 1
        t0 = time.perf_counter_ns()
        self.api.release([(base + p * self.page, self.page) for p in emptied for base in self.bases])
        self.c_ns += time.perf_counter_ns() - t0
        return len(emptied) * self.page * len(self.bases)

    def sanity_view(self):
        """What the hook's SanityChecker reads of an engine's page tracker (kvcached_hook.tracker):
        the layout of the KV tensors, which blocks are free, which pages are acquired. One page of
        every layer's tensor is one unit (the blocks of a page share it in every layer)."""
        from kvcached_hook.pages import KVLayout, TensorSpan

        size = len(self.page_users) * self.page
        spans = [TensorSpan(base, size, base, f"KV[{i}]", (i,)) for i, base in enumerate(self.bases)]
        view = type("StandinTracker", (), {})()
        view.layout = KVLayout(spans, self.block_bytes, self.num_blocks, self.page)
        view.managed = self.num_blocks
        view.acq = view.count = self.page_users  # a page is acquired exactly while blocks on it are used
        view.is_free = lambda block: bool(self.is_free[block])
        return view


class Engine:
    def __init__(self, cache: KvCache, block_size: int, max_seqs: int, step_s: float, api):
        self.cache, self.block_size, self.max_seqs, self.step_s, self.api = cache, block_size, max_seqs, step_s, api
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.steps = self.preemptions = 0
        self.sanity = self.reporter = None
        if api is not None:
            from kvcached_hook.step_report import StepReporter

            self.reporter = StepReporter(api, 0)
            if os.environ.get("KVCACHED_SANITY_CHECK", "0") not in ("", "0"):
                from kvcached_hook.sanity import SanityChecker

                self.sanity = SanityChecker(cache.sanity_view(), api, os.environ.get("KVCACHED_LABEL", "standin"))

    def submit(self, req: Request) -> None:
        self.waiting.append(req)

    def gauges(self) -> dict:
        return {"usage": self.cache.used_blocks() / max(1, self.cache.num_blocks - 1), "running": len(self.running),
                "waiting": len(self.waiting), "steps": self.steps, "c_calls": self.cache.c_calls,
                "preemptions": self.preemptions}

    def abort(self, req: Request) -> None:
        """The client went away (vLLM aborts such a request too): its blocks go back."""
        if req in self.running:
            self.running.remove(req)
            self.cache.release(req.blocks)
            req.blocks = []
        elif req in self.waiting:
            self.waiting.remove(req)

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _preempt(self, req: Request) -> int:
        self.running.remove(req)
        freed = self.cache.release(req.blocks)
        req.blocks, req.generated = [], 0  # recomputed from the prompt when admitted again
        req.queue.put_nowait(("preempted", None))
        self.waiting.insert(0, req)
        self.preemptions += 1
        return freed

    def _grow(self, req: Request) -> bool:
        """Makes room for req's next token; preempts the newest running requests when refused."""
        while len(req.blocks) < self._blocks_for(req.tokens_needed()):
            got = self.cache.allocate(1)
            if got is not None:
                req.blocks += got
                continue
            victim = max(self.running, key=lambda r: r.admitted_at)
            self._preempt(victim)
            if victim is req:
                return False
        return True

    def report(self, final: bool = False) -> None:
        """The step totals to the shim, rate-limited as the real hook does (StepReporter)."""
        if self.reporter is not None:
            totals = (self.steps, self.cache.c_ns, self.cache.c_calls)
            if final:
                self.reporter.flush(*totals, force=True)
            else:
                self.reporter.step(*totals)

    def step(self) -> None:
        self.steps += 1
        admit = True
        if self.sanity is not None:  # before the step, as the hook's check in vLLM's scheduler
            self.sanity.checks += 1
            self.sanity.check_held({b: f"request {r.rid}" for r in self.running for b in r.blocks})
            self.sanity.check_pinned([0])
        if self.api is not None:
            t0 = time.perf_counter_ns()
            verdict = self.api.share_verdict(0)
            self.cache.c_ns += time.perf_counter_ns() - t0
            if verdict is not None and verdict.action != "ok":
                admit = False
                if verdict.action == "preempt":
                    freed = n = 0
                    while freed < verdict.give_bytes and self.running:
                        freed += self._preempt(max(self.running, key=lambda r: r.admitted_at))
                        n += 1
                    self.api.share_report(0, freed, n)
        for req in list(self.running):
            if req in self.running:
                self._grow(req)
        while admit and self.waiting and len(self.running) < self.max_seqs:
            req = self.waiting[0]
            blocks = self.cache.allocate(self._blocks_for(req.tokens_needed()))
            if blocks is None:
                break
            self.waiting.pop(0)
            req.blocks, req.admitted_at = blocks, time.monotonic()
            self.running.append(req)
        for req in list(self.running):
            req.generated += 1
            req.queue.put_nowait(("token", req.generated))  # position; after a preemption it counts again
            if req.generated >= req.max_tokens:
                self.running.remove(req)
                self.cache.release(req.blocks)
                req.blocks = []
                req.queue.put_nowait(("done", None))
        self.report()

    async def loop(self) -> None:
        nxt = time.monotonic()
        while True:
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a broken stand-in must fail loudly, not hang its clients
                import traceback

                traceback.print_exc()
                os._exit(70)
            nxt += self.step_s
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))


def model_geometry(model_dir: str) -> tuple[int, int, int]:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg["num_hidden_layers"], cfg.get("num_key_value_heads", cfg["num_attention_heads"]), head_dim


async def read_request(reader) -> tuple[str, str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return method, path, body


def plain(writer, status: str, body: bytes, ctype: str = "application/json") -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)


def chunk(writer, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


async def stream_tokens(req: Request, writer, stream: bool, created: int, name: str) -> None:
    """Sends each new token as it is made; after a preemption the recomputed ones are not resent."""
    while True:
        kind, position = await req.queue.get()
        if kind == "done":
            return
        if kind != "token" or position <= req.sent:
            continue
        req.sent = position
        if stream:
            piece = {"id": f"cmpl-{req.rid}", "object": "text_completion", "created": created, "model": name,
                     "choices": [{"index": 0, "text": "", "token_ids": [100 + position % 30000], "finish_reason": None}]}
            chunk(writer, b"data: " + json.dumps(piece).encode() + b"\n\n")
            await writer.drain()


_next_rid = 0


async def completions(engine, name: str, body: dict, writer) -> None:
    global _next_rid
    prompt = body.get("prompt") or []
    prompt_len = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
    _next_rid += 1
    req = Request(_next_rid, max(1, prompt_len), int(body.get("max_tokens") or 16),
                  prompt if isinstance(prompt, list) else None)
    engine.submit(req)
    created = int(time.time())
    stream = bool(body.get("stream"))
    if stream:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n")
    try:
        await stream_tokens(req, writer, stream, created, name)
    except (ConnectionError, asyncio.CancelledError):
        engine.abort(req)
        raise
    tokens = [100 + k % 30000 for k in range(1, req.sent + 1)]
    usage = {"prompt_tokens": req.prompt_len, "completion_tokens": len(tokens), "total_tokens": req.prompt_len + len(tokens)}
    if stream:
        last = {"id": f"cmpl-{req.rid}", "object": "text_completion", "created": created, "model": name,
                "choices": [], "usage": usage}
        chunk(writer, b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
        chunk(writer, b"")
    else:
        plain(writer, "200 OK", json.dumps({"id": f"cmpl-{req.rid}", "choices": [{"text": "", "token_ids": tokens}],
                                            "usage": usage}).encode())


def metrics_text(engine, name: str) -> bytes:
    g = engine.gauges()
    lines = [
        f'vllm:kv_cache_usage_perc{{model_name="{name}"}} {g["usage"]}',
        f'vllm:num_requests_running{{model_name="{name}"}} {g["running"]}',
        f'vllm:num_requests_waiting{{model_name="{name}"}} {g["waiting"]}',
        f'standin:steps_total {g["steps"]}',
        f'standin:kv_c_calls_total {g["c_calls"]}',
        f'standin:preemptions_total {g["preemptions"]}',
    ]
    # The vLLM core's adapter counters (standin_vllm.py), for diagnosis.
    lines += [f"standin:hook_{k} {v}" for k, v in sorted(g.get("extra", {}).items()) if isinstance(v, (int, float))]
    return ("\n".join(lines) + "\n").encode()


def make_engine(model_dir: str, kv_bytes: int, block_size: int, max_seqs: int, label: str,
                max_tokens_per_step: int = 2048):
    """The engine with its KV cache: in shim regions when the shim is preloaded, else counted;
    STANDIN_CORE=vllm puts vLLM's own Scheduler (and the real engine hook) in its place."""
    api = None
    if "libkvcached_shim" in os.environ.get("LD_PRELOAD", ""):
        from kvcached_hook import capi

        api = capi.load()
        if api is None or not api.enabled():
            raise SystemExit("standin: the shim is preloaded but did not start: " + (api.last_error() if api else "?"))
        api.set_label(os.environ.get("KVCACHED_LABEL", label))
    geometry = model_geometry(model_dir)
    core = os.environ.get("STANDIN_CORE", "standin")
    if core == "vllm":
        from standin_vllm import VllmCore

        return VllmCore(model_dir, kv_bytes, block_size, max_seqs, max_tokens_per_step, api, geometry)
    if core != "standin":
        raise SystemExit(f"standin: STANDIN_CORE={core!r} is not a core; use standin (the default) or vllm")
    layers, kv_heads, head_dim = geometry
    block_bytes = block_size * 2 * kv_heads * head_dim * 2  # K and V, bf16, per layer
    num_blocks = max(2, kv_bytes // (block_bytes * layers))
    cache = KvCache(num_blocks, block_bytes, layers, api)
    print(f"standin: GPU KV cache size: {(num_blocks - 1) * block_size:,} tokens "
          f"({num_blocks} blocks, {layers} layers, {'shim regions' if api else 'static'})", flush=True)
    return Engine(cache, block_size, max_seqs, float(os.environ.get("STANDIN_STEP_MS", "10")) / 1000, api)


async def main_async(args) -> None:
    engine = make_engine(args.model, args.kv_cache_memory_bytes, args.block_size, args.max_num_seqs,
                         args.served_model_name or "standin", args.max_num_batched_tokens)
    name = args.served_model_name or args.model

    async def handle(reader, writer):
        try:
            method, path, body = await read_request(reader)
            if path == "/health":
                plain(writer, "200 OK", b"")
            elif path == "/metrics":
                plain(writer, "200 OK", metrics_text(engine, name), "text/plain")
            elif method == "POST" and path == "/v1/completions":
                await completions(engine, name, json.loads(body or b"{}"), writer)
            else:
                plain(writer, "404 Not Found", b"{}")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    task = asyncio.create_task(engine.loop())
    async with server:
        await stop.wait()
    task.cancel()
    engine.report(final=True)  # the last totals, as the hook's shutdown flush


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--kv-cache-memory-bytes", type=int, default=64 << 20)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--served-model-name", default="")
    args, ignored = ap.parse_known_args()
    # vLLM's own start line (the harness records the version of each run's engines).
    print(f"standin: vLLM server version 0.0.0+standin, serving model {args.model}", flush=True)
    if ignored:
        print(f"standin: ignoring vllm flags {' '.join(ignored)}", flush=True)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
