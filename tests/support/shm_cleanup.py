"""Removal of ledger segments that killed test runs left in /dev/shm (standard library only).

A test names its segment kvcached_<prefix>_<pid>_<rest> after its own process and removes it in a
finally block; a run killed by ctest's timeout (SIGKILL) never gets there. The next run of the
same tests calls remove_orphaned_segments(prefix): every such segment whose <pid> is gone, and
that is older than any run (a pid seen from another pid namespace may name a live one), goes.
"""

import contextlib
import os
import re
import time

SHM_DIR = "/dev/shm"
# Longer than any test's ctest timeout (600 s), so a live run's segment is never taken.
ORPHAN_AGE_S = 900


def remove_orphaned_segments(prefix, shm_dir=SHM_DIR, min_age_s=None):
    """Removes kvcached_<prefix>_<pid>_* of processes that are gone; returns the names removed."""
    min_age = ORPHAN_AGE_S if min_age_s is None else min_age_s
    pattern = re.compile(r"kvcached_%s_(\d+)_" % re.escape(prefix))
    removed = []
    for entry in sorted(os.listdir(shm_dir)):
        m = pattern.match(entry)
        if not m or int(m.group(1)) == os.getpid() or os.path.exists("/proc/%s" % m.group(1)):
            continue
        path = os.path.join(shm_dir, entry)
        with contextlib.suppress(OSError):  # another user's, or removed meanwhile
            if time.time() - os.lstat(path).st_ctime >= min_age:
                os.unlink(path)
                removed.append(entry)
    return removed
