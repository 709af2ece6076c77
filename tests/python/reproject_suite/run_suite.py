#!/usr/bin/python3
"""Run astropy reproject's own test suite with tessera's functions.

Copies Debian's python3-reproject package tree (its tests are inside it) to a
work directory, runs it there under pytest with tessera_reproject_plugin
(which substitutes tessera's reproject_interp, reproject_adaptive,
reproject_exact, reproject_and_coadd, find_optimal_celestial_wcs and
reproject_from_healpix for reproject's, before collection), with reproject's reference images compared
(pytest-arraydiff, FITS format, as reproject's own setup.cfg configures it).

Prints one TAP line per test.  A test that calls a substituted function must
pass, unless it is listed in excused.txt (a test of reproject internals we do
not replace, or a documented deliberate difference) or in
native-failures.txt (it fails with reproject's own functions too).  Tests
that call no substituted function test reproject's internals only: they are
run and reported as skipped.  The last line sums up:

    # substituted tests: N passed, N failed, N excused

Exit status 0 when no substituted test failed.

    run_suite.py [--workdir DIR] [--native] [-k EXPR] [--pythonpath DIR]...
"""

import argparse
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from record_results import report_no_tests, run_pytest, tap_comment  # noqa: E402
REPROJECT = "/usr/lib/python3/dist-packages/reproject"


def read_list(path):
    """`test id  reason` lines (blank lines and # comments skipped)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            nodeid, _, reason = line.partition(" ")
            out[nodeid] = reason.strip() or "(no reason given)"
    return out


def copy_package(workdir):
    """A private copy of the installed package: pytest writes caches and
    arraydiff writes result files next to the tests, and the system tree is
    not ours to write in."""
    dst = os.path.join(workdir, "reproject")
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    shutil.copytree(REPROJECT, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=None,
                    help="where the copy of reproject goes (default: a temporary directory)")
    ap.add_argument("--native", action="store_true",
                    help="baseline: run reproject's own functions, substituting nothing")
    ap.add_argument("--pythonpath", action="append", default=[],
                    help="directory to put on PYTHONPATH (where `import tessera` is found)")
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    args = ap.parse_args()

    if not os.path.isdir(REPROJECT):
        print("1..0 # SKIP python3-reproject is not installed (%s)" % REPROJECT)
        return 0

    workdir = args.workdir or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), "tessera-reproject-suite-%d" % os.getpid())
    os.makedirs(workdir, exist_ok=True)
    copy_package(workdir)
    results = os.path.join(workdir, "results.jsonl")
    log = os.path.join(workdir, "pytest.log")

    env = dict(os.environ)
    # The copy first, so `import reproject` anywhere (the plugin's
    # pytest_configure included) is the copy the tests are collected from.
    env["PYTHONPATH"] = os.pathsep.join([workdir, HERE] + args.pythonpath +
                                        [p for p in [env.get("PYTHONPATH")] if p])
    env["MPLBACKEND"] = "Agg"
    pytest_args = ["reproject", "-p", "tessera_reproject_plugin", "-q", "-rN", "--arraydiff",
                   "--arraydiff-default-format=fits"]
    if args.native:
        pytest_args.append("--tessera-native")
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    t0 = time.monotonic()
    rc, tests = run_pytest(pytest_args, log, results, env=env, cwd=workdir)
    elapsed = time.monotonic() - t0
    if not tests:
        return report_no_tests(rc, log)

    excused = read_list(os.path.join(HERE, "excused.txt"))
    native_failures = read_list(os.path.join(HERE, "native-failures.txt"))
    mode = "native reproject" if args.native else "tessera"
    print("# reproject's test suite with %s's functions; log: %s" % (mode, log))
    print("1..%d" % len(tests))
    n = {"passed": 0, "failed": 0, "excused": 0, "skipped": 0, "native": 0,
         "other_passed": 0, "other_failed": 0, "other_skipped": 0}
    stale = []
    for i, t in enumerate(tests, 1):
        nodeid, outcome = t["id"], t["outcome"]
        if not t["substituted"]:
            n["other_" + outcome] += 1
            print("ok %d - %s # SKIP calls no substituted function (%s)" % (i, nodeid, outcome))
            continue
        if outcome == "skipped":
            n["skipped"] += 1
            print("ok %d - %s # SKIP %s" % (i, nodeid, t["message"].strip()[:200]))
        elif nodeid in native_failures:
            n["native"] += 1
            print("ok %d - %s # SKIP fails with reproject's own functions too (%s): %s"
                  % (i, nodeid, outcome, native_failures[nodeid]))
        elif outcome == "passed":
            n["passed"] += 1
            print("ok %d - %s" % (i, nodeid))
            if nodeid in excused:
                stale.append(nodeid)
        elif nodeid in excused:
            n["excused"] += 1
            print("not ok %d - %s # TODO excused: %s" % (i, nodeid, excused[nodeid]))
        else:
            n["failed"] += 1
            print("not ok %d - %s" % (i, nodeid))
            print(tap_comment(t["message"]))
    leaks = [t for t in tests if t["substituted"] and t.get("reproject_cores")]
    for t in leaks:
        print("# %s called a substituted function but also reached reproject's %s"
              % (t["id"], ", ".join(t["reproject_cores"])))
    for nodeid in stale:
        print("# %s passes but is listed in excused.txt: remove it from the list" % nodeid)
    print("# %d tests in %.0f s (pytest exit status %d)" % (len(tests), elapsed, rc))
    print("# tests calling no substituted function: %d passed, %d failed, %d skipped"
          % (n["other_passed"], n["other_failed"], n["other_skipped"]))
    print("# substituted tests failing with reproject's own functions too: %d" % n["native"])
    print("# substituted tests skipped (missing optional packages): %d" % n["skipped"])
    print("# substituted tests that also reached reproject's own cores: %d" % len(leaks))
    print("# substituted tests: %d passed, %d failed, %d excused"
          % (n["passed"], n["failed"], n["excused"]))
    if args.workdir is None and n["failed"] == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if n["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
