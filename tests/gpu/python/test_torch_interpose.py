"""PyTorch under LD_PRELOAD=libkvcached_shim.so (issue 3, H100 list a-c).

(a) a 4 GiB torch.empty passes through unchanged (no shim region) and computes correctly;
(b) a KV tensor allocated in a torch.cuda.MemPool on the shim's pluggable allocator is a lazy
    region: after acquiring ranges through the C API, torch kernels write and read them correctly,
    and torch.cuda.mem_get_info shows physical use growing only with the acquired ranges (and
    shrinking again after release + trim);
(c) (b) again with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True.

    python3 tests/gpu/python/test_torch_interpose.py            # all three, each in a child
    python3 tests/gpu/python/test_torch_interpose.py --case b   # one, in this process
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_common as G  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


def case_a() -> list[tuple[bool, str]]:
    import torch
    from kvcached_hook import capi

    api = capi.load()
    checks = []
    free0, total = torch.cuda.mem_get_info()
    x = torch.empty(4 * GiB, dtype=torch.uint8, device="cuda")
    free1, _ = torch.cuda.mem_get_info()
    in_region = api.region_info(x.data_ptr()) if api is not None else None
    checks.append((in_region is None, f"4 GiB torch.empty is not a shim region (region={in_region})"))
    checks.append((free0 - free1 >= 4 * GiB - 64 * MiB, f"physical use grew by {(free0 - free1) / GiB:.2f} GiB (>= 4 GiB)"))
    x.view(torch.int32).copy_(torch.arange(GiB, dtype=torch.int32, device="cuda"))
    expect = (GiB - 1) * GiB // 2
    got = int(x.view(torch.int32).sum(dtype=torch.int64).item())
    checks.append((got == expect, f"arange over 4 GiB sums to {got} (expect {expect})"))
    a = torch.randn(2048, 2048, device="cuda")
    ok = torch.allclose(a @ torch.eye(2048, device="cuda"), a)
    checks.append((ok, "matmul with identity"))
    del x
    torch.cuda.empty_cache()
    return checks


def case_b() -> list[tuple[bool, str]]:
    import torch
    from kvcached_hook import capi, torch_pool

    api = capi.load()
    if api is None:
        return [(False, f"the shim is not loaded (LD_PRELOAD={os.environ.get('LD_PRELOAD')})")]
    reason = torch_pool.available(api)
    if reason:
        return [(False, f"pluggable-allocator pool unavailable: {reason}")]
    checks = []
    torch.cuda.init()
    torch.empty(1, device="cuda")  # context + caching allocator up before measuring
    torch.cuda.synchronize()
    free0, _ = torch.cuda.mem_get_info()
    pool = torch_pool.make_pool(api)
    with torch_pool.use_pool(pool, torch.device("cuda", torch.cuda.current_device())):
        kv = torch.empty(4 * GiB // 2, dtype=torch.bfloat16, device="cuda")
    torch.cuda.synchronize()
    free1, _ = torch.cuda.mem_get_info()
    info = api.region_info(kv.data_ptr())
    checks.append((info is not None and info.kind == capi.REGION_LAZY, f"pool tensor is a lazy region ({info})"))
    if info is None:
        return checks
    page = info.page_size
    grew = free0 - free1
    checks.append((grew <= 256 * MiB, f"allocating 4 GiB in the pool used {grew / MiB:.0f} MiB physical (<= 256 MiB)"))
    states = {api.page_state(kv.data_ptr() + i * page) for i in range(0, 4 * GiB // page, 97)}
    checks.append((capi.PAGE_IN_USE not in states, f"no page IN_USE before acquire ({sorted(states)})"))

    # Acquire 1 GiB in two ranges (one C call), write through torch, read back.
    base = kv.data_ptr()
    ranges = [(base, 512 * MiB), (base + 2 * GiB, 512 * MiB)]
    status = api.acquire(ranges)
    checks.append((status == capi.OK, f"acquire 2 x 512 MiB -> {capi.STATUS_NAMES.get(status)} {api.last_error()}"))
    torch.cuda.synchronize()
    free2, _ = torch.cuda.mem_get_info()
    grew = free1 - free2
    checks.append((GiB - 64 * MiB <= grew <= GiB + 256 * MiB, f"acquiring 1 GiB used {grew / MiB:.0f} MiB physical"))
    half = 512 * MiB // 2  # bf16 elements per range
    lo, hi = kv[:half], kv[GiB:GiB + half]
    pattern = torch.randn(half, dtype=torch.bfloat16, device="cuda")
    lo.copy_(pattern)
    hi.copy_(pattern * 2)
    torch.cuda.synchronize()
    checks.append((torch.equal(lo, pattern) and torch.equal(hi, pattern * 2), "write/read back 2 x 512 MiB"))
    m = lo[: 4096 * 4096].view(4096, 4096).float()
    ok = torch.allclose(m @ torch.eye(4096, device="cuda"), m)
    checks.append((ok, "matmul reading the acquired range"))
    in_use = api.region_info(base).in_use_pages
    checks.append((in_use == GiB // page, f"{in_use} pages IN_USE (expect {GiB // page})"))
    # An ordinary allocation beside the pool (with expandable_segments: torch's own VMM path
    # through the interposed driver entry points) still works.
    plain = torch.ones(GiB // 4, dtype=torch.int32, device="cuda")
    total = int(plain.sum().item())
    in_region = api.region_info(plain.data_ptr())
    checks.append((total == GiB // 4 and in_region is None, f"1 GiB ordinary tensor sums to {total}, region={in_region}"))
    # Measure the give-back against what the driver reports just before the release, with
    # torch's own cached blocks (the 1 GiB tensor, the pattern, matmul temporaries) returned first:
    # they are not the shim's and would hide what the trim gives back.
    del plain, pattern
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free2, _ = torch.cuda.mem_get_info()

    # Release and trim: physical use returns.
    status = api.release(ranges)
    checks.append((status == capi.OK, f"release -> {capi.STATUS_NAMES.get(status)}"))
    api.trim(torch.cuda.current_device())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        free3, _ = torch.cuda.mem_get_info()
        if free3 >= free2 + GiB - 128 * MiB:
            break
        time.sleep(0.1)
    checks.append((free3 >= free2 + GiB - 128 * MiB, f"after release + trim {(free3 - free2) / MiB:.0f} MiB came back"))
    del kv, lo, hi, m
    del pool
    torch.cuda.empty_cache()
    return checks


CASES = {"a": case_a, "b": case_b, "c": case_b}


def run_case(case: str) -> int:
    import kvcached_hook  # noqa: F401  (as under the boot sitecustomize)

    failed = 0
    try:
        results = CASES[case]()
    except Exception as error:  # noqa: BLE001 - report, do not hide
        import traceback

        traceback.print_exc()
        results = [(False, f"{type(error).__name__}: {error}")]
    for ok, detail in results:
        G.report(f"torch_interpose.{case}", ok, detail)
        failed += not ok
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=sorted(CASES))
    args = parser.parse_args()
    if args.case:
        return run_case(args.case)
    usable, what = G.cuda_status()
    if not usable:
        print(f"SKIP torch_interpose: {what}")
        return 0
    if not os.path.isfile(G.shim_path()):
        G.report("torch_interpose", False, f"shim not built: {G.shim_path()} (set KVCACHED_SHIM_LIB)")
        return 1
    print(f"torch_interpose: {what}; shim {G.shim_path()}")
    out = G.out_dir("torch_interpose")
    rc = 0
    for case in ("a", "b", "c"):
        extra = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"} if case == "c" else {}
        env = G.child_env(True, **extra)
        child = G.Child([sys.executable, os.path.abspath(__file__), "--case", case], env, os.path.join(out, f"{case}.log"), case)
        code = child.wait(180)
        print(child.tail(40), end="")
        if code != 0:
            G.report(f"torch_interpose.{case}", False, f"child exited {code} (124 = timeout); log {child.log_path}")
            rc = 1
    return rc


def test_torch_interpose():  # pytest entry point (scripts/gpu/run-suite.sh)
    assert main() == 0


if __name__ == "__main__":
    sys.exit(main())
