#!/usr/bin/python3
"""`tessera hips --executor mpi` under mpirun -n 2: every file of the HiPS equals the serial
run's byte for byte (properties but for its run's UUID and date); a job killed halfway
leaves its partial DIR, and a rerun into a new DIR with the same --cache resumes from the
stored blocks (cache hits) to the same files; a run that fails on rank 0 (DIR not empty)
ends every rank with exit 1, one message, and DIR as it was.

Usage: /usr/bin/python3 mpi_hips.py --tessera PATH --mpirun PATH [--workdir DIR]
Prints TAP (a skip where mpirun is missing).
"""
import os
import re
import sys

from mpi_common import kill_when_stored, report, run, setup

MPI = ["--allow-run-as-root", "--oversubscribe", "-n", "2"]
RUN_LINES = ("creator_did", "hips_release_date")   # differ from run to run


def tree(root):
    """{relative path: bytes} of every file under root, properties without its run lines."""
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                data = fh.read()
            if f == "properties":
                data = b"".join(line for line in data.splitlines(True)
                                if not line.startswith(tuple(k.encode() for k in RUN_LINES)))
            out[os.path.relpath(p, root)] = data
    return out


def differences(a, b):
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def main():
    got = setup("tsr-mpi-hips-")
    if got is None:
        return 0
    a, t, work, sky = got
    results = []
    # 128-pixel tiles: some 500 deepest tiles and 1300 files from the 2048^2 sample.
    opts = ["--tile-width", "128", "--title", "sample", "--quiet"]
    ref = os.path.join(work, "ref")
    r = run([t, "hips", sky, "-o", ref, "-j", "1"] + opts)
    assert r.returncode == 0, r.stderr
    want = tree(ref)

    # 1. Every file equals the serial one.
    out = os.path.join(work, "mpi")
    r = run([a.mpirun] + MPI + [t, "hips", sky, "-o", out, "--executor", "mpi"] + opts)
    got = tree(out) if os.path.isdir(out) else {}
    diff = differences(want, got)
    ok = r.returncode == 0 and r.stderr == "" and not diff and len(want) > 1000
    results.append((ok, "hips --executor mpi: all %d files equal the serial run's" % len(want),
                    "rc=%d differ=%s stderr=%s" % (r.returncode, diff[:5], r.stderr.strip()[-400:])))

    # 2. Killed halfway: the rerun into a new DIR resumes from the cache, same files.
    #    Exact coordinates (--mapping-tolerance 0) make the job long enough to stop; order
    #    10 (a quarter of the pixels, about 100 blocks) keeps it short.
    slow = ["--mapping-tolerance", "0", "--level", "10"]
    ref0 = os.path.join(work, "ref0")
    r = run([t, "hips", sky, "-o", ref0, "-j", "1"] + opts + slow)
    assert r.returncode == 0, r.stderr
    want0 = tree(ref0)
    cache = os.path.join(work, "cache")
    part, resumed = os.path.join(work, "part"), os.path.join(work, "resumed")
    base = [a.mpirun] + MPI + [t, "hips", sky, "--executor", "mpi", "--cache", cache] + opts + slow
    killed, stored = kill_when_stored(base + ["-o", part], cache, 20)
    r = run(base + ["-o", resumed])
    st = run([t, "cache", "stats", cache])
    hits = re.search(r"hits\D*(\d+)", st.stdout)
    diff = differences(want0, tree(resumed)) if os.path.isdir(resumed) else ["(no DIR)"]
    ok = (killed and r.returncode == 0 and not diff and hits is not None
          and int(hits.group(1)) >= 15)
    results.append((ok, "killed after %d stored blocks; the rerun resumes from the cache to the "
                        "serial files" % stored,
                    "killed=%s rc=%d differ=%s stats=%r stderr=%s"
                    % (killed, r.returncode, diff[:5], st.stdout.strip()[:300],
                       r.stderr.strip()[-300:])))

    # 3. A failure on rank 0 (DIR not empty) ends every rank: exit 1, one message, DIR kept.
    full = os.path.join(work, "full")
    os.makedirs(full)
    with open(os.path.join(full, "keep.txt"), "w") as f:
        f.write("mine")
    r = run([a.mpirun] + MPI + [t, "hips", sky, "-o", full, "--executor", "mpi", "--tile-width",
                                "128"])
    ok = (r.returncode == 1 and r.stderr.count("not empty") == 1
          and os.listdir(full) == ["keep.txt"])
    results.append((ok, "hips --executor mpi into a non-empty DIR: exit 1 on every rank, one "
                        "message, DIR untouched",
                    "rc=%d list=%s stderr=%s" % (r.returncode, os.listdir(full),
                                                 r.stderr.strip()[-400:])))

    return report(results, work)


if __name__ == "__main__":
    sys.exit(main())
