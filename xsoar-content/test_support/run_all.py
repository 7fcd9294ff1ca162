#!/usr/bin/env python3
"""Runs every *_test.py under xsoar-content with the standard library's unittest.

The pack keeps XSOAR's layout (no __init__.py in its folders), so `unittest discover` cannot walk
it in one go; this runner discovers each folder that holds tests on its own, with that folder as the
top level, and runs everything in one process. Exit status 0 only when all tests pass.

    python3 xsoar-content/test_support/run_all.py [-v] [-k PATTERN]
"""
import argparse
import os
import sys
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUPPORT = os.path.join(ROOT, "test_support")


def test_dirs():
    dirs = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        if any(f.endswith("_test.py") for f in filenames):
            dirs.append(dirpath)
    return dirs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("-k", dest="patterns", action="append", help="only tests matching this substring")
    opts = ap.parse_args()
    sys.path.insert(0, SUPPORT)
    suite = unittest.TestSuite()
    for d in test_dirs():
        if d not in sys.path:
            sys.path.insert(0, d)
        loader = unittest.TestLoader()
        if opts.patterns:
            loader.testNamePatterns = [f"*{p}*" for p in opts.patterns]
        suite.addTests(loader.discover(start_dir=d, pattern="*_test.py", top_level_dir=d))
    result = unittest.TextTestRunner(verbosity=2 if opts.verbose else 1).run(suite)
    print(f"xsoar-content: {result.testsRun} tests, {len(result.failures)} failures, "
          f"{len(result.errors)} errors, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
