"""Engine adapters, keyed by the module whose import triggers them.

Each entry: module name -> "package.module:function". The function receives the imported module
and patches the engine; it is imported only when that engine is imported, so an engine the
process never uses costs nothing. To add an engine, write engines/<name>.py with a `patch(module)`
function and list it here (see docs/engine-hook.md).
"""

ENGINES = {
    "transformers.generation.continuous_batching": "kvcached_hook.engines.transformers:arm",
}
