#!/usr/bin/env python3
"""What the vLLM engine hook costs per engine step, on the CPU (a benchmark, not a test).

Drives vLLM's real Scheduler (scheduler.schedule() + update_from_output() with fake model
outputs, as tests/python/vllm_support.py does) through one load, with the hook (fake C API,
tests/python/fake_capi.py) and without it (vLLM unpatched), alternating, several repeats, for
synchronous and asynchronous scheduling. Per step it reports:

  hook      the hook's own count (StepHooks.hook_ns_total / steps: what kvctl shows as
            engine_hook_ns / engine_steps);
  wall      time in schedule() + update_from_output() per schedule() call, with and without the
            hook, and their difference (everything the hook adds, the BlockPool wrappers included).

Medians over the repeats with their spread (min..max). Run it with the project's environment:

  $(scripts/python-env.sh) bench/vllm_hook_cost.py                  # vLLM 0.26 (pinned)
  PYTHONPATH=$(dirname $(scripts/python-env.sh))/../overlays/vllm-0.24.0 \
      $(scripts/python-env.sh) bench/vllm_hook_cost.py              # vLLM 0.24

--profile prints a cProfile of the hooked runs (hook package lines first; sorted by cumulative time,
or by PROFILE_SORT=tottime for each function's own time).

--parts times the parts of the hook's step (StepHooks.before_schedule and what it calls, the step
bound, after_schedule, the tracker's acquires) with a timer around each, and prints their us per
step and calls per step over all hooked runs: where the phases' time goes (each timer adds ~0.3 us
a call, so totals read a little high).

--clock thread times the two calls with the scheduler thread's CPU time instead of the wall clock:
on a shared machine (this 2-core VM), time other processes take no longer widens the spread.

PROFILE_DIFF=cumulative (with --profile) compares each function with what it calls; PROFILE_CALLERS
(a regex over function names) prints who calls those functions in the hooked runs.

--real-shim runs the hooked runs against the built shim (build/lib/libkvcached_shim.so, or --shim) on
the fake CUDA driver (build/fakecuda), as the real-shim tests do: the KV tensors are lazy regions, and
the C calls (acquires, the sharing verdict, the pressure signal) go through ctypes to the shim and its
ledger in /dev/shm, which the fake C API leaves out. Its pages are the shim's (2 MiB unless
KVCACHED_PAGE_SIZE_MB says otherwise), so --blocks-per-page does not apply.

--plain-blocks N gives the unpatched runs a KV cache of N blocks instead of --blocks: the static
equivalent of a budget (an engine whose KV cache is fixed at what the budget allows), since under a
binding budget (KVCACHED_BUDGET below --blocks' bytes) the hooked runs hold far fewer blocks than
--blocks, and an unpatched run of --blocks then admits and batches more than they do: not the
same load. `--plain-blocks budget` derives N from KVCACHED_BUDGET: its bytes over a block's bytes in
all layers, in whole pages per KV tensor, less the page per tensor that the null block keeps
pinned (with --real-shim the shim's page, else --blocks-per-page). The "wall added" column then
compares an elastic engine with the fixed one it replaces (the GPU runs' static/shim comparison).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import os
import pstats
import statistics
import sys
import time

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM's per-config INFO lines, once per run
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
if "--hooks" in sys.argv:  # another tree's hook package (a before/after comparison): imported first
    sys.path.insert(0, sys.argv[sys.argv.index("--hooks") + 1])
    import kvcached_hook  # noqa: E402,F401 - fake_capi then finds this one in sys.modules

import vllm_support as V  # noqa: E402
from fake_capi import FakeCApi, SharedBudget  # noqa: E402

if not V.HAVE_VLLM:
    sys.exit(f"vllm_hook_cost: {V.SKIP_REASON}")

import torch  # noqa: E402
from kvcached_hook.engines import vllm as adapter_pkg  # noqa: E402
from kvcached_hook.engines.vllm import registry, scheduler_side, worker  # noqa: E402
from vllm.v1.core import kv_cache_utils  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec  # noqa: E402
from vllm.v1.outputs import ModelRunnerOutput  # noqa: E402


class RegionPerTensor(FakeCApi):
    """Every KV tensor starts its own shim region, as the shim's MemPool gives it on a GPU (one
    page-aligned class of blocks); the plain fake puts the page grid at absolute addresses, so
    CPU tensors would land at odd phases and take the layout's slower many-class path."""

    def region_info(self, addr: int):
        return dataclasses.replace(super().region_info(addr), base=addr)


def load_real_shim(args):
    """The built shim on the fake driver, started with a ledger segment of its own (removed at exit)."""
    import atexit

    root = os.path.join(HERE, "..", "build")
    shim = args.shim or os.path.join(root, "lib", "libkvcached_shim.so")
    driver = os.environ.setdefault("KVCACHED_CUDA_DRIVER", os.path.join(root, "fakecuda", "libcuda.so.1"))
    for path, what in ((shim, "--shim"), (driver, "KVCACHED_CUDA_DRIVER")):
        if not os.path.isfile(path):
            sys.exit(f"vllm_hook_cost: {path} not found: build the project first (scripts/test.sh) or set {what}")
    name = os.environ.setdefault("KVCACHED_IPC_NAME", f"vllm_hook_cost_{os.getpid()}")
    # The segment is removed at exit while the shim still runs, which it reports as a warning.
    os.environ.setdefault("KVCACHED_LOG_LEVEL", "error")
    atexit.register(lambda: os.path.exists(f"/dev/shm/kvcached_{name}") and os.remove(f"/dev/shm/kvcached_{name}"))
    os.environ["KVCACHED_TEST_SHIM"] = shim
    import real_shim_support as R

    return R.load_shim()


def make_config(args):
    config = V.make_vllm_config(args.num_blocks, async_scheduling=args.async_sched,
                                max_num_seqs=args.max_num_seqs or args.concurrency,
                                max_tokens_per_step=args.tokens_per_step)
    # Room for prompt + output (vllm_support's tiny model config stops at 512).
    max_len = args.prompt + args.output + V.BLOCK
    config.model_config.max_model_len = max_len
    config.scheduler_config.max_model_len = max_len
    return config


def block_bytes(args) -> int:
    """Bytes per block and layer: 16 tokens x K,V x KV heads x head size x fp16. The default (1 head
    of 8: 512 bytes) keeps CPU tensors small; with --real-shim the page is the shim's, so the
    blocks a page holds (which decide how often the cache grows and whether a step's bound fits in
    the free backed blocks) follow from this: --kv-heads 8 --head-size 64 is the GPU runs' small
    model (32 KiB, 64 blocks in a 2 MiB page), --kv-heads 8 --head-size 128 the 8B shape."""
    return V.BLOCK * 2 * args.kv_heads * args.head_size * 2


def kv_config(vllm_config, args):
    """`args.layers` full-attention layers of block_bytes(args) per block; --blocks-per-page sets
    the page (without --real-shim)."""
    specs = {f"layers.{i}.attn": FullAttentionSpec(block_size=V.BLOCK, num_kv_heads=args.kv_heads,
                                                   head_size=args.head_size, dtype=torch.float16)
             for i in range(args.layers)}
    per_block = sum(spec.page_size_bytes for spec in specs.values())
    blocks = vllm_config.cache_config.num_gpu_blocks_override
    return kv_cache_utils.get_kv_cache_configs(vllm_config, [specs], [per_block * (blocks + 8)])[0]


def requests(args):
    # Distinct prompts (no prefix hits), as a load generator with random prompts makes.
    out = []
    for i in range(args.requests):
        prompt = [(i * 7919 + j * 31) % 500 + 1 for j in range(args.prompt)]
        out.append(V.make_request(f"r{i}", prompt, args.output))
    return out


def budget_blocks(args, per_page: int) -> int:
    """--plain-blocks budget: the blocks KVCACHED_BUDGET holds, in whole pages per KV tensor (one
    tensor per layer), less the null block's pinned page (see the docstring)."""
    import re

    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", os.environ.get("KVCACHED_BUDGET", ""), re.I)
    if match is None:
        sys.exit("vllm_hook_cost: --plain-blocks budget needs KVCACHED_BUDGET (bytes, or with K, M, G)")
    nbytes = int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2].upper()]
    pages = nbytes // (per_page * block_bytes(args)) // args.layers  # pages per tensor
    return max(1, (pages - 1) * per_page)


def run_once(args, hooked: bool, profiler=None) -> dict:
    registry.clear()
    if not hooked and args.plain_blocks:
        args = argparse.Namespace(**{**vars(args), "num_blocks": args.plain_blocks})
    vllm_config = make_config(args)
    config = kv_config(vllm_config, args)
    regions = []
    if hooked and args.real_api is not None:
        import real_shim_support as R
        from unittest import mock

        worker.overrides["api"] = args.real_api
        with mock.patch.object(torch, "zeros", R.lazy_allocator(args.real_api, torch.zeros, regions)):
            V.build_worker_cache(vllm_config, config)
    elif hooked:
        api = (FakeCApi if args.unaligned else RegionPerTensor)(page_size=args.blocks_per_page * block_bytes(args), budget=SharedBudget(None))
        worker.overrides["api"] = api
        V.build_worker_cache(vllm_config, config)
    scheduler = V.make_scheduler(vllm_config, config)
    # getattr, not __dict__: reading an object's __dict__ slows vLLM's lookups on it (scheduler_side.py).
    if hooked and getattr(scheduler.kv_cache_manager.block_pool, "_kvcached", None) is None:
        sys.exit("vllm_hook_cost: the hook did not take the BlockPool")
    # All at once (a queue the scheduler admits from), or with --max-num-seqs a closed loop: a
    # client that keeps `concurrency` requests in flight, each finished one replaced at once.
    queue = requests(args)
    if not args.max_num_seqs:
        for request in queue:
            scheduler.add_request(request)
        queue = []
    else:
        for request in queue[: args.concurrency]:
            scheduler.add_request(request)
        queue = queue[args.concurrency:]
    queue.reverse()

    in_flight = 2 if args.async_sched else 1
    empty = ModelRunnerOutput(req_ids=[], req_id_to_index={})
    pending = []
    schedules = 0
    spent = 0
    in_schedule = 0
    # --clock thread: the scheduler thread's CPU time, which time other processes (or the shim's
    # threads) take from a shared machine does not inflate: tighter spreads on a busy 2-core VM.
    perf = time.thread_time_ns if args.clock == "thread" else time.perf_counter_ns
    gc.collect()
    if args.gc == "freeze":
        gc.freeze()  # as vLLM's EngineCore does once it is built (vllm.utils.gc_utils.freeze_gc_heap)
    elif args.gc == "off":
        gc.disable()
    gc_ns = [0, 0]  # [time in collections, start of the current one]

    def on_gc(phase, _info):
        if phase == "start":
            gc_ns[1] = perf()
        else:
            gc_ns[0] += perf() - gc_ns[1]

    gc.callbacks.append(on_gc)
    if profiler is not None:
        profiler.enable()
    # The loop of vllm_support.run_loop, timing only the scheduler's two calls.
    while scheduler.has_requests() or pending:
        scheduled = False
        if len(pending) < in_flight and scheduler.has_requests():
            t0 = perf()
            out = scheduler.schedule()
            t1 = perf()
            spent += t1 - t0
            in_schedule += t1 - t0
            schedules += 1
            if out.total_num_scheduled_tokens > 0:
                pending.append((out, V.fake_output(scheduler, out)))
                scheduled = True
            elif not pending:
                t0 = perf()
                scheduler.update_from_output(out, empty)
                spent += perf() - t0
        if pending and (len(pending) >= in_flight or not scheduled):
            out, result = pending.pop(0)
            t0 = perf()
            scheduler.update_from_output(out, result)
            spent += perf() - t0
            while queue and scheduler.get_num_unfinished_requests() < args.concurrency:
                scheduler.add_request(queue.pop())
    if profiler is not None:
        profiler.disable()
    gc.callbacks.remove(on_gc)
    gc.enable()
    gc.unfreeze()  # the next run's objects are not this one's
    # Collections that ran inside the two timed calls are in wall_us; gc_us counts all of them.
    result = {"steps": schedules, "wall_us": spent / 1000 / schedules, "gc_us": gc_ns[0] / 1000 / schedules,
              "schedule_us": in_schedule / 1000 / schedules, "update_us": (spent - in_schedule) / 1000 / schedules}
    hooks = getattr(scheduler, "_kvcached_steps", None)
    if hooked:
        tracker = hooks.adapter.tracker
        result.update(phases=[ns / 1000 / hooks.steps for ns in hooks.phase_ns])
        result.update(hook_us=hooks.hook_ns_total / 1000 / hooks.steps,
                      c_calls=(tracker.acquire_calls + tracker.release_calls) / hooks.steps,
                      whole=getattr(hooks.adapter, "whole_steps", 0) / hooks.steps,
                      running_only=getattr(hooks.adapter, "running_steps", 0) / hooks.steps)
    for base in regions:  # --real-shim: this run's KV tensors (nothing reads them any more)
        args.real_api.region_destroy(base)
    return result


def cumulative_sort(sort: str) -> bool:
    return sort == "cumulative"


def print_profile_diff(hooked, plain, hooked_steps: int, plain_steps: int, top: int = 30) -> None:
    """Each function's own time (tottime) per step with the hook less without it, largest first:
    where the wall difference goes, vLLM's functions included (the hook can make vLLM do more).
    PROFILE_DIFF=cumulative compares the time in each function and what it calls instead."""
    sort = os.environ.get("PROFILE_DIFF", "tottime")
    def per_step(profiler, steps):
        stats = pstats.Stats(profiler).stats
        cumulative = cumulative_sort(sort)
        return {f"{os.path.basename(f)}:{line}({name})": ((ct if cumulative else tt) * 1e6 / steps, nc / steps)
                for (f, line, name), (_cc, nc, tt, ct, _callers) in stats.items()}

    with_hook, without = per_step(hooked, hooked_steps), per_step(plain, plain_steps)
    rows = sorted(((us - without.get(key, (0.0, 0.0))[0], key) for key, (us, _) in with_hook.items()), reverse=True)
    print(f"---- {sort} time per step, with the hook less unpatched (cProfile: inflated), top {top} ----")
    print(f"{'us/step added':>13} {'us/step hooked':>14} {'calls/step hooked':>17} {'unpatched':>9}  function")
    for added, key in rows[:top]:
        us, calls = with_hook[key]
        print(f"{added:13.1f} {us:14.1f} {calls:17.2f} {without.get(key, (0, 0))[1]:9.2f}  {key}")
    if not cumulative_sort(sort):
        total = sum(us for us, _ in with_hook.values()) - sum(us for us, _ in without.values())
        print(f"{total:13.1f} in all")


def spread(values) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}..{max(values):.1f})"


# --parts: (owner, attribute, label) of each timed part; the owners are resolved in time_parts().
PARTS = (
    ("StepHooks", "before_schedule", "before_schedule (all of it)"),
    ("StepHooks", "after_schedule", "after_schedule (all of it)"),
    ("KVPageTracker", "ensure", "  acquire ahead (tracker.ensure)"),
    ("KVPageTracker", "flush", "  release (tracker.flush)"),
    ("SharePolicy", "before_schedule", "  sharing policy"),
    ("StepHooks", "give_stale_cached", "  stale cached blocks"),
    ("StepHooks", "predict", "  prediction"),
    ("PoolAdapter", "arrange_head", "  arranging the head"),
    ("allocation", "room", "step bound: room"),
    ("allocation", "whole_step", "step bound: whole_step"),
    ("allocation", "running_step", "step bound: running_step"),
    ("allocation", "unhook_for_step", "step bound: unhook"),
    ("allocation", "restore_after_step", "step bound: restore"),
    ("PoolAdapter", "settle", "settle (every caller)"),
    ("allocation", "allocate_exactly", "block calls: allocate_slots, exact"),
    ("PoolAdapter", "choose", "block calls: choose (slow get_new_blocks)"),
    ("PoolAdapter", "freed", "block calls: freed (free_blocks)"),
    ("PoolAdapter", "sync", "block calls: sync (touch, evict)"),
)


def time_parts():
    """Wraps each part of PARTS with a timer; returns (total ns, calls) counters by label."""
    import collections

    from kvcached_hook import tracker as tracker_mod
    from kvcached_hook.engines.vllm import allocation, blocks, share_policy, steps

    owners = {"StepHooks": steps.StepHooks, "KVPageTracker": tracker_mod.KVPageTracker,
              "SharePolicy": share_policy.SharePolicy, "PoolAdapter": blocks.PoolAdapter, "allocation": allocation}
    ns, calls = collections.Counter(), collections.Counter()
    for owner_name, attr, label in PARTS:
        owner = owners[owner_name]
        inner = getattr(owner, attr, None)
        if inner is None:  # --hooks: an older tree without that part
            continue

        def timed(*a, _inner=inner, _label=label, **k):
            t = time.perf_counter_ns()
            try:
                return _inner(*a, **k)
            finally:
                ns[_label] += time.perf_counter_ns() - t
                calls[_label] += 1

        setattr(owner, attr, timed)
    return ns, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="max_num_seqs, every request queued at once; with --max-num-seqs, requests in flight")
    parser.add_argument("--max-num-seqs", type=int, default=0,
                        help="vLLM's max_num_seqs, and a closed-loop client (a serving load: few waiting)")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    parser.add_argument("--output", type=int, default=128, help="output tokens")
    parser.add_argument("--blocks", default="4096,102400",
                        help="KV cache sizes in blocks, comma-separated (the H200 serve run had 102697)")
    parser.add_argument("--plain-blocks", default="",
                        help="KV cache blocks of the unpatched runs (default: --blocks); 'budget': what "
                             "KVCACHED_BUDGET holds (the static equivalent, see above)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=1, help="KV heads per layer (see block_bytes)")
    parser.add_argument("--head-size", type=int, default=8, help="head size (see block_bytes)")
    parser.add_argument("--blocks-per-page", type=int, default=128,
                        help="blocks per shim page (H200 serve run: 16 KiB blocks, 2 MiB pages: 128)")
    parser.add_argument("--tokens-per-step", type=int, default=8192, help="max_num_batched_tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("sync", "async", "both"), default="both")
    parser.add_argument("--unaligned", action="store_true",
                        help="page grid at absolute addresses (the plain fake: tensors at odd page phases)")
    parser.add_argument("--hooks", help="folder holding the kvcached_hook package to measure (default: this tree's)")
    parser.add_argument("--profile", action="store_true", help="cProfile the hooked runs")
    parser.add_argument("--parts", action="store_true", help="time the parts of the hook's step (see above)")
    parser.add_argument("--gc", choices=("freeze", "on", "off"), default="freeze",
                        help="the garbage collector during a run: freeze (the heap at the start frozen, as vLLM's "
                             "EngineCore does after start-up; default), on (no freeze), off")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="what the two calls' time is: wall (perf_counter) or the thread's CPU time")
    parser.add_argument("--real-shim", action="store_true",
                        help="the hooked runs against the built shim on the fake CUDA driver (see above)")
    parser.add_argument("--shim", help="with --real-shim: the shim library (default build/lib/libkvcached_shim.so)")
    args = parser.parse_args()
    args.real_api = load_real_shim(args) if args.real_shim else None

    worker.overrides.update(require_cuda=False, use_pool=False)
    scheduler_side.overrides["idle_thread"] = False  # off the step path; keeps runs deterministic
    import kvcached_hook

    parts = time_parts() if args.parts else None
    print(f"hook package: {os.path.dirname(os.path.dirname(os.path.abspath(kvcached_hook.__file__)))}")
    per_page = args.real_api.stats(0)["page_size"] // block_bytes(args) if args.real_api else args.blocks_per_page
    args.plain_blocks = (budget_blocks(args, per_page) if args.plain_blocks == "budget"
                         else int(args.plain_blocks or 0))
    loop = f" (closed loop, max_num_seqs {args.max_num_seqs})" if args.max_num_seqs else ""
    print(f"vLLM {V.vllm.__version__}, {args.requests} requests, {args.concurrency} concurrent{loop}, prompt "
          f"{args.prompt}, output {args.output}, blocks of {V.BLOCK} tokens ({per_page} per page), "
          f"{args.layers} layers, "
          f"{args.repeats} repeats (hooked/unhooked alternating), CPU ({os.cpu_count()} cores), "
          + (f"the shim on the fake driver ({args.real_api.stats(0)['page_size'] >> 20} MiB pages)" if args.real_api else "fake C API")
          + (f", unpatched runs of {args.plain_blocks} blocks" if args.plain_blocks else ""))
    rows = []
    cases = [(int(b), m) for b in args.blocks.split(",") for m in (("sync", "async") if args.mode == "both" else (args.mode,))]
    for blocks, mode in cases:
        args.async_sched, args.num_blocks = mode == "async", blocks
        profiler = cProfile.Profile() if args.profile else None
        plain_profiler = cProfile.Profile() if args.profile else None
        hooked, plain = [], []
        for rep in range(args.repeats + 1):  # the first pair warms up (imports, caches) and is dropped
            order = (True, False) if rep % 2 == 0 else (False, True)
            for with_hook in order:
                if with_hook:
                    if not adapter_pkg.patch():
                        sys.exit(f"vllm_hook_cost: not patched: {adapter_pkg.PATCHES.reason}")
                    res = run_once(args, True, profiler if rep else None)
                    adapter_pkg.unpatch()
                else:
                    res = run_once(args, False, plain_profiler if rep else None)
                if rep:
                    (hooked if with_hook else plain).append(res)
        diffs = [h["wall_us"] - p["wall_us"] for h, p in zip(hooked, plain)]
        rows.append((f"{mode} {blocks}", hooked[0]["steps"], [h["hook_us"] for h in hooked], [h["wall_us"] for h in hooked],
                     [p["wall_us"] for p in plain], diffs, statistics.median(h["c_calls"] for h in hooked),
                     [statistics.median(h["phases"][k] for h in hooked) for k in range(len(hooked[0]["phases"]))],
                     ([h["gc_us"] for h in hooked], [p["gc_us"] for p in plain]),
                     [[r[key] for r in runs] for runs in (hooked, plain) for key in ("schedule_us", "update_us")]
                     + [[p["steps"] for p in plain], [h["whole"] for h in hooked], [h["running_only"] for h in hooked]]))
        if profiler is not None:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats("kvcached_hook", 40)
            print(f"---- cProfile, {mode}, {blocks} blocks, hooked runs (cumulative) ----")
            print(text.getvalue())
            if os.environ.get("PROFILE_CALLERS"):  # who calls these (a regex over function names)
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).print_callers(os.environ["PROFILE_CALLERS"])
                print(text.getvalue())
            print_profile_diff(profiler, plain_profiler, sum(h["steps"] for h in hooked),
                               sum(p["steps"] for p in plain))
    print(f"per schedule() call, microseconds ({args.clock} clock for the wall columns): median (min..max)")
    print(f"{'mode blocks':12} {'steps':>5}  {'hook (own count)':>24}  {'wall with hook':>24}  {'wall unpatched':>24}"
          f"  {'wall added':>24}  C calls/step")
    for mode, steps, hook, with_hook, plain, diffs, calls, *_ in rows:
        print(f"{mode:12} {steps:5}  {spread(hook):>24}  {spread(with_hook):>24}  {spread(plain):>24}"
              f"  {spread(diffs):>24}  {calls:.3f}")
    # The own count by phase, as the shutdown cost line splits it (StepHooks.phase_ns).
    print("the hook's own count by phase, us per step (median of the repeats): release, sharing policy, "
          "prediction and step bound, after schedule(), in vLLM's block calls")
    for mode, *_, phases, _, _ in rows:
        print(f"{mode:12} " + "  ".join(f"{us:6.1f}" for us in phases))
    print("steps run with vLLM's own allocate_slots (no hook per request), a share of all: whole steps, "
          "running steps (until the first admission)")
    for mode, *_, split in rows:
        print(f"{mode:12} {statistics.median(split[-2]):.3f} {statistics.median(split[-1]):.3f}")
    print(f"garbage collection (--gc {args.gc}), us per step in all collections: with the hook / unpatched")
    for mode, *_, (gc_hooked, gc_plain), _ in rows:
        print(f"{mode:12} {spread(gc_hooked):>24}  {spread(gc_plain):>24}")
    # The GPU runs' steptimer splits the two calls: schedule() is where the hook's step bound, the
    # per-request wrapper and the block calls run; update_from_output frees blocks.
    print("wall by call, us per schedule() call: schedule() with hook / unpatched, update_from_output with hook / "
          "unpatched; unpatched steps")
    for mode, *_, split in rows:
        sched_h, upd_h, sched_p, upd_p, steps_p = split[:5]
        print(f"{mode:12} {spread(sched_h):>22} {spread(sched_p):>22} {spread(upd_h):>22} {spread(upd_p):>22}"
              f"  {statistics.median(steps_p):.0f}")
    if parts is not None:
        ns, calls = parts
        n = max(calls[PARTS[0][2]], 1)  # before_schedule: one a step
        print(f"parts of the hook's step over all hooked runs ({n} steps, warm-up included): us per step, calls per step")
        for _, _, label in PARTS:
            print(f"  {label:34} {ns[label] / n / 1000:7.1f}  {calls[label] / n:6.2f}")


if __name__ == "__main__":
    main()
