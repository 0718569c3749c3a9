#!/usr/bin/env python3
"""Checks the project's layering by its #include lines (ctest label "layering").

    hooks -> core -> driver: the core knows nothing of interposition, and the lower layers of the
    core know nothing of the Runtime facade built on them.

Rules (a violation names the file, the line and the rule):
  - core/{region,pool,ledger,budget,driver,common} never include core/runtime/;
  - core/ never includes hooks/ or shim/;
  - hooks/ never includes shim/;
  - no project file cites the design guide kept outside the repository, or the folder beside
    the checkout that holds it (OUTSIDE_DOCS below).

    check_layering.py SOURCE_DIR
"""

import os
import subprocess
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
CODE_EXT = (".h", ".hpp", ".cpp", ".cc", ".c", ".cu", ".def", ".inc")
LOWER_CORE = ("core/region/", "core/pool/", "core/ledger/", "core/budget/", "core/driver/",
              "core/common/")
# Files that may name the forbidden references: this checker and its own test data.
# Spelled in pieces so that this checker does not itself cite what it looks for.
OUTSIDE_DOCS = ("DESIGN" + ".md", "../" + "shared")
SELF = {"tests/layering/check_layering.py"}
SKIP_DIRS = {".git", "build", "__pycache__", ".venv", "venv", "node_modules"}


def rules_for(path):
    """(forbidden include prefix, rule text) pairs for a source file at `path` (relative)."""
    rules = []
    if path.startswith(LOWER_CORE):
        rules.append(("core/runtime/", "core's lower layers never include the Runtime facade"))
    if path.startswith("core/"):
        rules.append(("hooks/", "core knows nothing of interposition (hooks/)"))
        rules.append(("shim/", "core knows nothing of the shim"))
    if path.startswith("hooks/"):
        rules.append(("shim/", "hooks never reach into the shim"))
    return rules


def walk(source_dir):
    # The project's files as git sees them (tracked, or new and not ignored): payloads, virtual
    # environments and build trees that git ignores are other projects' code, not ours.
    try:
        listed = subprocess.run(
            ["git", "-C", source_dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True, capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = None  # not a git checkout (a source tarball): walk the tree
    if listed is not None:
        for rel in filter(None, listed):
            full = os.path.join(source_dir, rel)
            if os.path.isfile(full):
                yield rel, full
        return
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith("build")]
        for name in files:
            full = os.path.join(root, name)
            yield os.path.relpath(full, source_dir).replace(os.sep, "/"), full


def main():
    source_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    problems = []
    checked = 0
    for rel, full in walk(source_dir):
        try:
            with open(full, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except OSError:
            continue
        if rel.endswith(CODE_EXT):
            checked += 1
            rules = rules_for(rel)
            for number, line in enumerate(lines, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                for prefix, rule in rules:
                    if m.group(1).startswith(prefix):
                        problems.append(f"{rel}:{number}: includes {m.group(1)}: {rule}")
        if rel in SELF:
            continue
        for number, line in enumerate(lines, 1):
            for cited in OUTSIDE_DOCS:
                if cited in line:
                    problems.append(f"{rel}:{number}: cites {cited}, a document outside the "
                                    f"repository; docs/architecture.md is the design")
    if checked < 50:
        problems.append(f"only {checked} source files found under {source_dir}: wrong folder?")
    for p in problems:
        print(p)
    print(f"check_layering: {checked} source files, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
