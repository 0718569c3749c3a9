"""The transformers adapter patches continuous batching only where it really runs.

transformers' continuous-batching module is imported by every import of PreTrainedModel (through
integrations/eager_paged.py), so vLLM's processes import it too; there it is left alone entirely.
Elsewhere importing it must only arm the adapter (one trigger on PagedAttentionCache.__init__); the first PagedAttentionCache built installs
the whole patch set and is itself managed; a transformers the adapter does not know is reported
when a cache is built, not at import. Each case runs in a fresh interpreter (import state).

Needs torch and transformers (and vLLM for the vLLM case): the environment of scripts/python-env.sh.
"""

import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HOOKS = os.path.join(HERE, "..", "..", "hooks", "python")

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    HAVE_ENGINE = True
except Exception:  # noqa: BLE001
    HAVE_ENGINE = False

# Prints, as JSON, which continuous-batching methods carry a kvcached wrapper.
STATE = r"""
import json, sys
from transformers.generation.continuous_batching import cache, cache_manager, continuous_api
def state(fn):
    return "arming" if getattr(fn, "_kvcached_arming", False) else "wrapped" if getattr(fn, "_kvcached_wrapped", False) else "plain"
print(json.dumps({
    "cb_imported": True,
    "init": state(cache.PagedAttentionCache.__dict__["__init__"]),
    "allocate_blocks": state(cache.PagedAttentionCache.allocate_blocks),
    "get_num_free_blocks": state(cache.PagedAttentionCache.get_num_free_blocks),
    "get_free_blocks": state(cache_manager.BlockManager.get_free_blocks),
    "prepare_next_batch": state(continuous_api.ContinuousBatchProcessor.prepare_next_batch),
    **RESULT,
}))
"""

# Builds one continuous-batching cache (a tiny random Llama, 4 prompts) with the fake C API.
GENERATE = r"""
import test_transformers_cpu as H
from fake_capi import FakeCApi
from kvcached_hook.engines import transformers_cb as T
H.transformers.logging.set_verbosity_error()
T._overrides.update(api=FakeCApi(H.PAGE), require_cuda=False, use_pool=False)
BEFORE_RUN
outputs, errors, snaps = H.run(H.tiny_model(), H.prompts(4), max_new_tokens=4)
RESULT.update(outputs=len(outputs), errors=len(errors), managed=bool(snaps))
"""


@unittest.skipUnless(HAVE_ENGINE, "needs torch and transformers (scripts/python-env.sh)")
class LazyPatchingTest(unittest.TestCase):
    def run_child(self, body: str) -> tuple[dict, str]:
        # Keep the caller's PYTHONPATH after ours: ctest puts a vLLM overlay release there.
        path = [HOOKS, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        for name in ("LD_PRELOAD", "KVCACHED_SHIM_PATH", "KVCACHED_LOG_LEVEL", "KVCACHED_AUTOPATCH", "ENABLE_KVCACHED"):
            env.pop(name, None)
        # kvcached_hook first, as the shim's sitecustomize does at interpreter start.
        code = "RESULT = {}\nimport kvcached_hook\n" + body + STATE
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    def assertOnlyArmed(self, state: dict) -> None:
        self.assertEqual(state["init"], "arming")
        for name in ("allocate_blocks", "get_num_free_blocks", "get_free_blocks", "prepare_next_batch"):
            self.assertEqual(state[name], "plain", name)

    def test_importing_pretrained_model_only_arms_the_adapter(self):
        state, stderr = self.run_child(
            "import sys\nfrom transformers import PreTrainedModel\n"
            "RESULT['cb_by_model_import'] = 'transformers.generation.continuous_batching' in sys.modules\n"
        )
        self.assertTrue(state["cb_by_model_import"], "PreTrainedModel no longer imports continuous batching")
        self.assertOnlyArmed(state)
        self.assertNotIn("kvcached[", stderr)

    def test_first_cache_installs_the_whole_patch_set_and_is_managed(self):
        state, stderr = self.run_child(GENERATE.replace("BEFORE_RUN", ""))
        self.assertEqual((state["outputs"], state["errors"]), (4, 0))
        self.assertTrue(state["managed"], "the cache that triggered patching was not managed")
        self.assertEqual(state["init"], "wrapped")
        for name in ("allocate_blocks", "get_num_free_blocks", "get_free_blocks", "prepare_next_batch"):
            self.assertEqual(state[name], "wrapped", name)

    def test_unknown_transformers_is_reported_when_a_cache_is_built_not_at_import(self):
        # sys.modules' entry, right before use: transformers replaces its lazy module while importing.
        version = "sys.modules['transformers'].__version__ = '6.0.0'\n"
        state, stderr = self.run_child("import sys, transformers\n" + version + "from transformers import PreTrainedModel\n")
        self.assertOnlyArmed(state)
        self.assertNotIn("kvcached[", stderr)
        state, stderr = self.run_child("import sys\n" + GENERATE.replace("BEFORE_RUN", version))
        self.assertEqual((state["outputs"], state["errors"]), (4, 0))
        self.assertFalse(state["managed"])
        self.assertEqual(state["init"], "plain")  # the trigger is gone, nothing else was installed
        self.assertEqual(state["allocate_blocks"], "plain")
        self.assertIn("transformers-cb: not patched (version 6.0.0 is outside the supported 5.0 <= v < 6)", stderr)
        self.assertEqual(stderr.count("not patched"), 1)

    def test_vllm_process_keeps_transformers_continuous_batching_unpatched(self):
        try:
            import vllm  # noqa: F401
        except Exception as error:  # noqa: BLE001
            self.skipTest(f"vLLM not importable: {error}")
        state, stderr = self.run_child(
            "import sys, vllm\nfrom vllm.model_executor.models import registry\n"
            "RESULT['cb_by_vllm'] = 'transformers.generation.continuous_batching' in sys.modules\n"
            "RESULT['vllm'] = vllm.__version__\n"
        )
        print(f"vLLM {state['vllm']}", file=sys.stderr)
        self.assertTrue(state["cb_by_vllm"], "vLLM no longer imports transformers' continuous batching")
        # Not even armed: only the engine that runs in the process (vLLM) is touched.
        for name in ("init", "allocate_blocks", "get_num_free_blocks", "get_free_blocks", "prepare_next_batch"):
            self.assertEqual(state[name], "plain", name)
        self.assertNotIn("kvcached[", stderr)


if __name__ == "__main__":
    unittest.main()
