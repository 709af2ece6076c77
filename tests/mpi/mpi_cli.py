#!/usr/bin/python3
"""`tessera ... --executor mpi` under mpirun -n 3: the output equals the serial one byte
for byte (reproject and mosaic); a job killed halfway leaves no output, and a rerun
with the same --cache resumes from the stored blocks (cache hits) to the same bytes.

Usage: /usr/bin/python3 mpi_cli.py --tessera PATH --mpirun PATH [--workdir DIR]
Prints TAP.
"""
import filecmp
import os
import re
import sys

from mpi_common import kill_when_stored, report, run, setup

MPI = ["--allow-run-as-root", "--oversubscribe", "-n", "3"]


def main():
    got = setup("tsr-mpi-")
    if got is None:
        return 0
    a, t, work, sky = got
    results = []
    tgt = os.path.join(work, "target.hdr")
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
    killed, stored = kill_when_stored(cmd, cache, 150)
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

    return report(results, work)


if __name__ == "__main__":
    sys.exit(main())
