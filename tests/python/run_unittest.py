"""Runs one unittest module for ctest and reports honestly.

Exit 0 when every test ran and passed, 77 (ctest's SKIP_RETURN_CODE for these tests) when none
failed but at least one skipped, 1 on any failure or error. The last line says how many tests
ran and skipped, with each skip reason, so a skip is never mistaken for a pass.

    python run_unittest.py MODULE [TAG]

TAG (optional) names the run in the summary line, e.g. "vllm 0.24.0".
"""

import os
import sys
import unittest

SKIP_EXIT = 77


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    module, tag = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    suite = unittest.defaultTestLoader.loadTestsFromName(module)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    ran, skipped = result.testsRun, len(result.skipped)
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    name = f"{module}{f' ({tag})' if tag else ''}"
    print(f"[engine-tests] {name}: {ran - skipped} ran, {skipped} skipped, {bad} failed")
    for test, reason in result.skipped:
        print(f"[engine-tests]   skipped {test.id()}: {reason}")
    if bad or ran == 0:
        return 1
    return SKIP_EXIT if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
