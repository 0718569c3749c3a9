"""Engine adapters, keyed by the module whose import triggers them.

Each entry: module name -> "package.module:function". The function receives the imported module
and arms or patches the engine; the adapter is imported only when that engine is imported, so an
engine the process never uses costs nothing. An adapter is a module or package exposing the
trigger function, `unpatch()` and `adapters()` (kvcached_hook.disable/adapters reach every
registered engine through them), and patches through kvcached_hook.patching.PatchSet (version-
and signature-gated, all or nothing). See docs/engine-hook.md.
"""

ENGINES = {
    # Armed at import (vLLM and any `from transformers import PreTrainedModel` import this module);
    # patched only when a continuous-batching cache is really built.
    "transformers.generation.continuous_batching": "kvcached_hook.engines.transformers:arm",
    "vllm.v1.worker.gpu_worker": "kvcached_hook.engines.vllm:patch",
    "vllm.v1.executor.multiproc_executor": "kvcached_hook.engines.vllm:patch_tp",  # opt-in TP
}
