"""tests/support/shm_cleanup.py: the segments that killed test runs leave in /dev/shm are removed by
the next run, and nothing of a live process, of another prefix or younger than the age bound."""

import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import shm_cleanup  # noqa: E402


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class RemoveOrphanedSegmentsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="kvcached-shm-cleanup-")
        self.addCleanup(self.dir.cleanup)

    def touch(self, name):
        open(os.path.join(self.dir.name, name), "w").close()
        return name

    def remaining(self):
        return set(os.listdir(self.dir.name))

    def test_removes_only_dead_runs_of_the_prefix(self):
        gone = dead_pid()
        orphan = self.touch("kvcached_pytest_realshim_%d_12345" % gone)
        live = self.touch("kvcached_pytest_realshim_%d_1" % os.getppid())
        mine = self.touch("kvcached_pytest_realshim_%d_2" % os.getpid())
        other = self.touch("kvcached_preload_test_%d_meminfo_process" % gone)
        real = self.touch("kvcached_gpu_GPU-1234")
        removed = shm_cleanup.remove_orphaned_segments("pytest_realshim", self.dir.name, min_age_s=0)
        self.assertEqual(removed, [orphan])
        self.assertEqual(self.remaining(), {live, mine, other, real})
        self.assertEqual(shm_cleanup.remove_orphaned_segments("preload_test", self.dir.name, min_age_s=0),
                         [other])

    def test_a_young_segment_is_kept(self):
        # A pid from another pid namespace may look gone here: only old files are taken.
        young = self.touch("kvcached_pytest_realshim_%d_7" % dead_pid())
        self.assertEqual(shm_cleanup.remove_orphaned_segments("pytest_realshim", self.dir.name), [])
        self.assertEqual(self.remaining(), {young})
        self.assertGreaterEqual(shm_cleanup.ORPHAN_AGE_S, 600, "below the tests' ctest timeout")


if __name__ == "__main__":
    unittest.main()
