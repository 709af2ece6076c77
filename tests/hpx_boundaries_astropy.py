#!/usr/bin/python3
"""Reference pixel boundaries for test-healpix, computed by astropy-healpix
now: HEALPix.boundaries_lonlat(pixels, step=k) for pixels everywhere (the
polar rings, the cap-belt transition rings, the equator, random ones) in
both orderings and several nside.  Exits 1 when astropy-healpix cannot be
imported: the test must fail, not skip.

Output lines:
  B <nside> <nested 0|1> <pixel> <k>   then 4 k lines: <lon_rad> <lat_rad>
"""
import sys

try:
    import numpy as np
    from astropy_healpix import HEALPix
except Exception as e:  # noqa: BLE001
    print("astropy-healpix cannot be imported: %s" % e, file=sys.stderr)
    sys.exit(1)

rng = np.random.default_rng(7)
for nside, nested_ok in [(1, True), (2, True), (4, False), (64, True),
                         (1024, False), (1 << 20, True)]:
    for nested in ([0, 1] if nested_ok else [0]):
        hp = HEALPix(nside=nside, order="nested" if nested else "ring")
        ring = HEALPix(nside=nside, order="ring")
        # RING indices of chosen rings' first pixels, then random ones.
        rings = sorted({1, 2, max(1, nside - 1), nside, nside + 1, 2 * nside, 3 * nside,
                        4 * nside - 1} & set(range(1, 4 * nside)))
        pix = []
        for r in rings:
            if r < nside:
                first, count = 2 * r * (r - 1), 4 * r
            elif r <= 3 * nside:
                first, count = 2 * nside * (nside - 1) + 4 * nside * (r - nside), 4 * nside
            else:
                s = 4 * nside - r
                first, count = 12 * nside * nside - 2 * s * (s + 1), 4 * s
            pix += [first, first + count - 1, first + int(rng.integers(count))]
        pix += list(rng.integers(12 * nside * nside, size=10))
        pix = np.array(pix, dtype=np.int64)
        if nested:
            pix = ring.ring_to_nested(pix)
        for k in (1, 3):
            lon, lat = hp.boundaries_lonlat(pix, step=k)
            for i, p in enumerate(pix):
                print("B %d %d %d %d" % (nside, nested, p, k))
                for a, b in zip(lon[i].rad, lat[i].rad):
                    print("%.17g %.17g" % (a, b))
