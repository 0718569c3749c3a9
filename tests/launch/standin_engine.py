#!/usr/bin/env python3
"""A stand-in engine for the `kvctl launch` tests: behaves like a serving engine in the ways the
launcher cares about (start-up delay, a port or a log line when ready, crashing, ignoring
SIGTERM, worker children, GPU memory through the shim's C API) without being one.

Every event is appended to --stamp as "LABEL EVENT PID MONOTONIC_SECONDS".
"""
import argparse
import ctypes
import os
import signal
import socket
import sys
import time


def stamp(args, event):
    if args.stamp:
        with open(args.stamp, "a") as f:
            f.write(f"{args.label} {event} {os.getpid()} {time.clock_gettime(time.CLOCK_MONOTONIC):.3f}\n")


def use_memory(args):
    """Region + acquires through the preloaded shim (the fake driver stands in for the GPU)."""
    shim = ctypes.CDLL(None)
    shim.kvcached_region_create.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_int,
                                            ctypes.POINTER(ctypes.c_uint64)]
    shim.kvcached_acquire.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    shim.kvcached_last_error.restype = ctypes.c_char_p
    base = ctypes.c_uint64()
    rc = shim.kvcached_region_create(0, 256 << 20, 0, ctypes.byref(base))
    print(f"region: status {rc}", flush=True)
    if args.expect_limit_mib:
        # Wait (bounded) for the launcher to set `limit:` on this process: kvcached_stats_get's
        # budget_limit_bytes (the 10th field) is the limit once one is set.
        stats = (ctypes.c_uint64 * 14)()
        end = time.monotonic() + args.alloc_wait
        while time.monotonic() < end:
            shim.kvcached_stats_get(0, stats)
            if stats[9] <= args.expect_limit_mib << 20:
                print(f"limit seen: {stats[9] >> 20} MiB", flush=True)
                break
            time.sleep(0.05)
        else:
            print("limit not seen", flush=True)
    else:
        time.sleep(args.alloc_wait)
    offset = 0
    for mib in args.alloc_mib:
        rc = shim.kvcached_acquire(base.value + offset, mib << 20)
        print(f"acquire {mib} MiB: status {rc}", flush=True)
        if rc == 0:
            offset += mib << 20


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--label", default=os.environ.get("KVCACHED_LABEL", "?"))
    p.add_argument("--stamp")
    p.add_argument("--delay", type=float, default=0.0, help="start-up time before ready")
    p.add_argument("--port", type=int, help="listen here once ready")
    p.add_argument("--ready-line", help="print this once ready")
    p.add_argument("--crash-after", type=float, help="exit with --exit-code this long after ready")
    p.add_argument("--exit-code", type=int, default=3)
    p.add_argument("--run", type=float, default=3600.0, help="exit 0 after this long")
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--worker", action="store_true", help="start a child process that sleeps")
    p.add_argument("--alloc-mib", type=int, nargs="*", default=[])
    p.add_argument("--alloc-wait", type=float, default=1.5, help="before the acquires")
    p.add_argument("--expect-limit-mib", type=int, help="end the wait once this limit is set")
    args = p.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    else:
        signal.signal(signal.SIGTERM, lambda *_: (stamp(args, "term"), sys.exit(0)))
    stamp(args, "start")
    print(f"starting, env LD_PRELOAD={os.environ.get('LD_PRELOAD', '')} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
    if args.worker:
        pid = os.fork()
        if pid == 0:
            stamp(args, "worker")
            signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_term else signal.SIG_DFL)
            time.sleep(3600)
            os._exit(0)
    if args.alloc_mib:
        use_memory(args)
    time.sleep(args.delay)
    server = None
    if args.port:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", args.port))
        server.listen(8)
    stamp(args, "ready")
    if args.ready_line:
        print(args.ready_line, flush=True)
    end = time.monotonic() + (args.crash_after if args.crash_after is not None else args.run)
    while time.monotonic() < end:
        time.sleep(0.05)
    if args.crash_after is not None:
        print(f"crashing with status {args.exit_code}", flush=True)
        stamp(args, "crash")
        os._exit(args.exit_code)
    stamp(args, "done")


if __name__ == "__main__":
    main()
