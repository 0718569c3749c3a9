"""Import-time behaviour: importing kvcached_hook is cheap and inert; the post-import hook runs a
patch exactly once when the engine module is imported, never breaks an import, and the engine
adapter refuses an engine layout it does not know instead of crashing."""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

import fake_capi  # noqa: F401  (puts hooks/python on sys.path)
from kvcached_hook import importhook

HOOKS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "hooks", "python"))


def run_python(code, extra_path="", **env):
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, HOOKS) if p)
    if "KVCACHED_LOG_LEVEL" not in env:
        full.pop("KVCACHED_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60)


def write_package(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(text))


class InertImportTest(unittest.TestCase):
    def test_import_is_inert(self):
        code = textwrap.dedent(
            """
            import sys
            before = set(sys.modules)
            import kvcached_hook
            loaded = sorted(set(sys.modules) - before)
            heavy = [m for m in loaded if m.split('.')[0] in ('torch', 'transformers', 'logging', 'threading', 'ctypes')]
            import threading
            print(len(heavy), heavy, threading.active_count(), kvcached_hook.is_enabled())
            """
        )
        result = run_python(code)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split()[0], "0", result.stdout)
        self.assertTrue(result.stdout.strip().endswith("1 True"), result.stdout)
        self.assertEqual(result.stderr, "")

    def test_autopatch_off_installs_nothing(self):
        code = "import sys, kvcached_hook; print(kvcached_hook.is_enabled(), any(type(f).__name__ == '_PostImportFinder' for f in sys.meta_path))"
        result = run_python(code, KVCACHED_AUTOPATCH="0")
        self.assertEqual(result.stdout.strip(), "False False", result.stderr)


class PostImportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        sys.path.insert(0, self.tmp.name)
        self.calls = []

    def tearDown(self):
        importhook.uninstall()
        sys.path.remove(self.tmp.name)
        for name in [m for m in sys.modules if m.startswith("kvh_demo")]:
            del sys.modules[name]
        self.tmp.cleanup()

    def test_callback_runs_once_after_the_module_executed(self):
        write_package(self.tmp.name, {"kvh_demo/__init__.py": "", "kvh_demo/engine.py": "VALUE = 42\n"})
        importhook.when_imported("kvh_demo.engine", lambda m: self.calls.append(m.VALUE))
        import kvh_demo.engine  # noqa: F401

        import importlib

        importlib.reload(sys.modules["kvh_demo"])
        self.assertEqual(self.calls, [42])
        module = sys.modules["kvh_demo.engine"]
        self.assertNotIn("Patching", type(module.__loader__).__name__)  # the real loader is visible

    def test_failing_callback_does_not_break_the_import(self):
        write_package(self.tmp.name, {"kvh_demo2/__init__.py": "X = 1\n"})

        def boom(module):
            raise RuntimeError("patch failed")

        importhook.when_imported("kvh_demo2", boom)
        with self.assertLogs("kvcached", level="ERROR"):
            import kvh_demo2  # noqa: F401
        self.assertEqual(sys.modules["kvh_demo2"].X, 1)
        del sys.modules["kvh_demo2"]

    def test_already_imported_module_is_patched_at_once(self):
        import json  # noqa: F401

        importhook.when_imported("json", lambda m: self.calls.append(m.__name__))
        self.assertEqual(self.calls, ["json"])


class EngineDetectionTest(unittest.TestCase):
    def test_unknown_engine_layout_is_refused_with_a_message(self):
        """A module named like transformers' continuous batching, but not its layout: the hook finds
        it, says at debug level that it patches it, then refuses clearly; the import still works."""
        with tempfile.TemporaryDirectory() as tmp:
            write_package(
                tmp,
                {
                    "transformers/__init__.py": "__version__ = '0.0-fake'\n",
                    "transformers/generation/__init__.py": "",
                    "transformers/generation/continuous_batching/__init__.py": "from . import cache\n",
                    "transformers/generation/continuous_batching/cache.py": "class PagedAttentionCache:\n    pass\n",
                    "transformers/generation/continuous_batching/cache_manager.py": "",
                    "transformers/generation/continuous_batching/continuous_api.py": "",
                    "transformers/generation/continuous_batching/requests.py": "",
                },
            )
            # kvcached_hook first, as the shim's sitecustomize does at interpreter start.
            code = (
                "import kvcached_hook\n"
                "import transformers.generation.continuous_batching as cb\n"
                "print('imported', cb.cache.PagedAttentionCache.__name__)"
            )
            result = run_python(code, extra_path=tmp, KVCACHED_LOG_LEVEL="debug")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("imported PagedAttentionCache", result.stdout)
        self.assertIn("engine module transformers.generation.continuous_batching imported", result.stderr)
        self.assertIn("elastic KV cache disabled", result.stderr)


if __name__ == "__main__":
    unittest.main()
