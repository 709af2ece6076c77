#!/usr/bin/python3
"""`tessera ... --executor mpi` under mpirun -n 3: the output equals the serial one byte
for byte (reproject and mosaic); a job killed halfway leaves no output, and a rerun
with the same --cache resumes from the stored blocks (cache hits) to the same bytes.

Usage: /usr/bin/python3 mpi_cli.py --tessera PATH --mpirun PATH [--workdir DIR]
Prints TAP.
"""
import argparse
import filecmp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MPI = ["--allow-run-as-root", "--oversubscribe", "-n", "3"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--mpirun", required=True)
    ap.add_argument("--workdir")
    a = ap.parse_args()
    t = os.path.abspath(a.tessera)
    work = a.workdir or tempfile.mkdtemp(prefix="tsr-mpi-")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    results = []

    def run(cmd, **kw):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)

    r = run([t, "sample", work])
    if r.returncode != 0:
        print("1..0 # SKIP cannot make the sample: %s" % r.stderr.strip())
        return 0
    sky, tgt = os.path.join(work, "sky.fits"), os.path.join(work, "target.hdr")
    opts = ["--order", "bicubic", "--mapping-tolerance", "0", "--block", "64x64", "--quiet"]
    ref = os.path.join(work, "ref.fits")
    r = run([t, "reproject", sky, "--target", tgt, "-o", ref, "-j", "1"] + opts)
    assert r.returncode == 0, r.stderr

    # 1. Same bytes as serial.
    out = os.path.join(work, "mpi.fits")
    r = run([a.mpirun] + MPI + [t, "reproject", sky, "--target", tgt, "-o", out, "--executor", "mpi"] + opts)
    ok = r.returncode == 0 and filecmp.cmp(ref, out, shallow=False)
    results.append((ok, "reproject --executor mpi: the serial bytes", r.stderr.strip()[-400:]))

    # 2. Killed halfway: no output; the rerun resumes from the cache, same bytes.
    cache = os.path.join(work, "cache")
    out2 = os.path.join(work, "resumed.fits")
    cmd = [a.mpirun] + MPI + [t, "reproject", sky, "--target", tgt, "-o", out2, "--executor", "mpi",
                              "--cache", cache] + opts
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    stored, t0 = 0, time.time()
    while p.poll() is None and time.time() - t0 < 120:
        stored = sum(len(fs) for d, _, fs in os.walk(cache) if not d.endswith("tmp"))
        if stored >= 150:
            break
        time.sleep(0.01)
    killed = p.poll() is None
    if killed:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    none_left = not os.path.exists(out2)
    r = run(cmd)
    st = run([t, "cache", "stats", cache])
    hits = re.search(r"hits\D*(\d+)", st.stdout)
    ok = (killed and none_left and r.returncode == 0 and filecmp.cmp(ref, out2, shallow=False)
          and hits is not None and int(hits.group(1)) >= 100)
    results.append((ok, "killed after %d stored blocks: no output; rerun resumes from the cache to "
                        "the serial bytes" % stored,
                    "killed=%s none_left=%s rc=%d stats=%r stderr=%s"
                    % (killed, none_left, r.returncode, st.stdout.strip()[:300], r.stderr.strip()[-300:])))

    # 3. A mosaic of two cutouts, serial and under MPI.
    import numpy as np  # noqa: F401  (only to fail early without the stack)
    from astropy.io import fits
    with fits.open(sky) as hl:
        d, h = hl[0].data, hl[0].header
        tiles = []
        for k, (x0, y0) in enumerate(((0, 0), (700, 500))):
            hs = h.copy()
            hs["CRPIX1"] -= x0
            hs["CRPIX2"] -= y0
            p2 = os.path.join(work, "tile%d.fits" % k)
            fits.PrimaryHDU(d[y0:y0 + 1000, x0:x0 + 1100], header=hs).writeto(p2, overwrite=True)
            tiles.append(p2)
    m1, m2 = os.path.join(work, "m-ser.fits"), os.path.join(work, "m-mpi.fits")
    r1 = run([t, "mosaic"] + tiles + ["--target", tgt, "-o", m1, "-j", "1", "--quiet",
                                      "--match-background"])
    r2 = run([a.mpirun] + MPI + [t, "mosaic"] + tiles + ["--target", tgt, "-o", m2, "--quiet",
                                                          "--match-background", "--executor", "mpi"])
    ok = r1.returncode == 0 and r2.returncode == 0 and filecmp.cmp(m1, m2, shallow=False)
    results.append((ok, "mosaic --match-background --executor mpi: the serial bytes",
                    (r1.stderr + r2.stderr).strip()[-400:]))

    print("1..%d" % len(results))
    nfail = 0
    for i, (ok, name, detail) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        if not ok:
            nfail += 1
            for line in detail.splitlines():
                print("# " + line)
    if not nfail:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
