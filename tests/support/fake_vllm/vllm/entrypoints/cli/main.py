"""`python -m vllm.entrypoints.cli.main serve MODEL ...`: the stand-in engine's server, its KV cache
sized from --gpu-memory-utilization as vLLM would (default 0.9); other vLLM flags are ignored."""

import sys

from vllm import _standin


def main() -> int:
    argv = sys.argv[1:]
    util = 0.9
    if "--gpu-memory-utilization" in argv:
        util = float(argv[argv.index("--gpu-memory-utilization") + 1])
    sys.argv = ["vllm", *argv, "--kv-cache-memory-bytes", str(_standin.kv_bytes(util))]
    return _standin.standin_engine.main()


if __name__ == "__main__":
    sys.exit(main())
