"""The shared patching base: all-or-nothing, version-gated, signature-checked, reversible."""

import os
import sys
import types
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "hooks", "python"))

from kvcached_hook import patching as P  # noqa: E402


def _make_module(name="kv_test_engine"):
    module = types.ModuleType(name)

    class Pool:
        def get(self, n, owner=None):
            return ["block"] * n

        def free(self, blocks):
            return len(blocks)

        @staticmethod
        def helper(x):
            return x + 1

    module.Pool = Pool
    sys.modules[name] = module
    return module


def _times_ten(fn):
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        return result * 10 if isinstance(result, int) else result

    return wrapper


class PatchSetTest(unittest.TestCase):
    def setUp(self):
        self.module = _make_module()

    def tearDown(self):
        sys.modules.pop("kv_test_engine", None)

    def patchset(self, targets, version="0.25.0"):
        return P.PatchSet("test-engine", targets, version=lambda: version, lowest="0.24", below="0.27")

    def test_matching_targets_are_all_wrapped_and_revert_restores_them(self):
        original_free = self.module.Pool.free
        ps = self.patchset([
            P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten),
            P.Target("kv_test_engine", "Pool", "helper", ("x",), _times_ten),
            P.Target("kv_test_engine", "Pool", "get", ("self", "n")),  # checked only
        ])
        self.assertEqual(ps.problems(), [])
        self.assertTrue(ps.apply())
        self.assertTrue(ps.applied)
        self.assertEqual(self.module.Pool().free([1, 2]), 20)
        self.assertEqual(self.module.Pool.helper(1), 20)  # a staticmethod stays static
        self.assertEqual(self.module.Pool().get(2), ["block"] * 2)
        self.assertTrue(ps.apply())  # idempotent: not wrapped twice
        self.assertEqual(self.module.Pool().free([1]), 10)
        ps.revert()
        self.assertIs(self.module.Pool.free, original_free)
        self.assertEqual(self.module.Pool.helper(1), 2)

    def test_a_changed_signature_patches_nothing(self):
        original_free = self.module.Pool.free
        ps = self.patchset([
            P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten),
            P.Target("kv_test_engine", "Pool", "get", ("self", "num_blocks"), _times_ten),
        ])
        self.assertFalse(ps.apply())
        self.assertIn("Pool.get", ps.reason)
        self.assertIs(self.module.Pool.free, original_free)  # all or nothing

    def test_a_missing_method_or_module_patches_nothing(self):
        for target in (P.Target("kv_test_engine", "Pool", "gone", ()), P.Target("kv_no_such_module", "X", "y", ())):
            ps = self.patchset([P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten), target])
            self.assertFalse(ps.apply())
            self.assertEqual(self.module.Pool().free([1]), 1)

    def test_versions_outside_the_range_patch_nothing(self):
        for version in ("0.23.9", "0.27.0", "1.0", "", "unknown"):
            ps = self.patchset([P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten)], version)
            self.assertFalse(ps.apply(), version)
            self.assertIn("outside", ps.reason)
        self.assertTrue(self.patchset([P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten)],
                                      "0.26.5.dev1+gabc").apply())

    def test_a_refusal_from_the_engine_patches_nothing(self):
        ps = P.PatchSet("test-engine", [P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten)],
                        version=lambda: "0.25", refuse=lambda: "sleep mode is on")
        self.assertFalse(ps.apply())
        self.assertEqual(ps.reason, "sleep mode is on")
        self.assertEqual(self.module.Pool().free([1]), 1)

    def test_apply_called_again_while_applying_answers_at_once(self):
        # apply() imports target modules; an import hook may call apply() again on the same thread.
        nested = []
        ps = None

        def refuse():
            nested.append(ps.apply())  # would deadlock on a non-reentrant lock
            return None

        ps = P.PatchSet("test-engine", [P.Target("kv_test_engine", "Pool", "free", ("self", "blocks"), _times_ten)],
                        version=lambda: "0.25", refuse=refuse)
        self.assertTrue(ps.apply())
        self.assertEqual(nested, [False])
        self.assertEqual(self.module.Pool().free([1]), 10)

    def test_version_parsing(self):
        self.assertEqual(P.parse_version("0.24.1.dev3+gabc"), (0, 24, 1))
        self.assertEqual(P.parse_version("v1.2"), (1, 2))
        self.assertEqual(P.parse_version("junk"), ())
        self.assertTrue(P.version_in("0.26.0", "0.24", "0.27"))
        self.assertFalse(P.version_in("0.27.0", "0.24", "0.27"))


if __name__ == "__main__":
    unittest.main()
