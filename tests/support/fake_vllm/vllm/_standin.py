"""Finds examples/vllm_sharing/standin_engine.py in the checkout this package lives in."""

import os
import sys

_EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "examples", "vllm_sharing")
if _EXAMPLES not in sys.path:
    sys.path.insert(0, _EXAMPLES)

import standin_engine  # noqa: E402,F401  (re-exported)


def kv_bytes(gpu_memory_utilization: float) -> int:
    """KV cache size for a memory fraction: vLLM takes that share of the GPU (weights and
    activations are left out here; the stand-in has neither)."""
    return int(gpu_memory_utilization * int(os.environ.get("FAKE_VLLM_GPU_MB", "4096"))) << 20
