"""kvcached_hook's package-level calls work for every registered engine, not one hard-coded adapter:
adapters() gathers each imported engine module's adapters, disable() unpatches each of them, and an
engine module that was never imported is neither imported nor asked."""

import sys
import types
import unittest
import os

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "hooks", "python"))

import kvcached_hook  # noqa: E402
from kvcached_hook import engines  # noqa: E402


def fake_engine(name: str, adapters: list) -> types.ModuleType:
    module = types.ModuleType(name)
    module.unpatched = 0
    module.adapters = lambda: list(adapters)

    def unpatch():
        module.unpatched += 1

    module.unpatch = unpatch
    return module


class EngineRegistryTest(unittest.TestCase):
    def setUp(self):
        self.saved = dict(engines.ENGINES)
        engines.ENGINES.clear()
        engines.ENGINES.update({
            "fake_engine_one": "kvcached_test_fake.one:arm",
            "fake_engine_two": "kvcached_test_fake.two:patch",
            "fake_engine_three": "kvcached_test_fake.three:patch",  # never imported
        })
        self.one = fake_engine("kvcached_test_fake.one", ["adapter-1a", "adapter-1b"])
        self.two = fake_engine("kvcached_test_fake.two", ["adapter-2"])
        sys.modules[self.one.__name__] = self.one
        sys.modules[self.two.__name__] = self.two

    def tearDown(self):
        engines.ENGINES.clear()
        engines.ENGINES.update(self.saved)
        for name in ("kvcached_test_fake.one", "kvcached_test_fake.two"):
            sys.modules.pop(name, None)

    def test_adapters_gathers_every_imported_engine(self):
        self.assertEqual(sorted(kvcached_hook.adapters()), ["adapter-1a", "adapter-1b", "adapter-2"])
        self.assertNotIn("kvcached_test_fake.three", sys.modules)

    def test_disable_unpatches_every_imported_engine(self):
        kvcached_hook.disable()
        self.assertEqual((self.one.unpatched, self.two.unpatched), (1, 1))
        self.assertFalse(kvcached_hook.is_enabled())
        self.assertNotIn("kvcached_test_fake.three", sys.modules)


if __name__ == "__main__":
    unittest.main()
