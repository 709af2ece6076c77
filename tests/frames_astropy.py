#!/usr/bin/python3
"""Reference values for test-sky's frames test, computed by astropy now.

Prints the frames (kind, equinox and obstime as TT Julian dates, so that the C
side builds exactly the same ones), a grid of points over the whole sky, and for
every ordered pair of frames the unit vectors astropy gives, transforming as
reproject does (SkyCoord.transform_to a frame instance).  Exits 1 when astropy
cannot be imported: the test must fail, not skip.

Output lines:
  F <index> <kind> <equinox_jd> <obstime_jd>
  P <lon_deg> <lat_deg>
  T <from> <to> then one line per point: <x> <y> <z>
"""
import sys

try:
    import numpy as np
    from astropy import units as u
    from astropy.coordinates import (FK4, FK5, ICRS, BarycentricMeanEcliptic, FK4NoETerms,
                                     Galactic, SkyCoord, Supergalactic)
    from astropy.time import Time
except Exception as e:  # noqa: BLE001
    print("astropy cannot be imported: %s" % e, file=sys.stderr)
    sys.exit(1)

# Kinds as in sky/sky.h (tsr__frame_kind_t).
ICRS_K, FK5_K, FK4_K, FK4NOE_K, GAL_K, SGAL_K, ECL_K = 1, 2, 3, 4, 5, 6, 7


def b(y):
    return Time(y, format="byear", scale="tt")


def j(y):
    return Time(y, format="jyear", scale="tt")


FRAMES = [
    (ICRS_K, ICRS()),
    (FK5_K, FK5(equinox=j(2000))),
    (FK5_K, FK5(equinox=j(1975))),
    (FK5_K, FK5(equinox=j(2060.5))),
    (FK4_K, FK4(equinox=b(1950))),
    (FK4_K, FK4(equinox=b(1950), obstime=j(1991.25))),
    (FK4_K, FK4(equinox=b(1900))),
    (FK4NOE_K, FK4NoETerms(equinox=b(1950))),
    (FK4NOE_K, FK4NoETerms(equinox=b(1975), obstime=b(1983))),
    (GAL_K, Galactic()),
    (SGAL_K, Supergalactic()),
    (ECL_K, BarycentricMeanEcliptic(equinox=j(2000))),
    (ECL_K, BarycentricMeanEcliptic(equinox=j(1950))),
]


def jd(t):
    return repr(float(t.tt.jd1) + float(t.tt.jd2))


def main():
    out = []
    for i, (kind, f) in enumerate(FRAMES):
        eq = getattr(f, "equinox", None)
        ob = getattr(f, "obstime", None)
        out.append("F %d %d %s %s" % (i, kind, jd(eq) if eq is not None else "0",
                                      jd(ob) if ob is not None else "0"))
    # Every 15 deg of longitude, every 10 deg of latitude poles included, and a
    # few irregular points.
    lon, lat = np.meshgrid(np.arange(0.0, 360.0, 15.0), np.arange(-90.0, 90.1, 10.0))
    lon = np.concatenate([lon.ravel(), [0.1234, 187.654, 266.4168, 359.999]])
    lat = np.concatenate([lat.ravel(), [-89.99, 12.3456, -28.9361, 89.999]])
    for lo, la in zip(lon, lat):
        out.append("P %r %r" % (float(lo), float(la)))
    for i, (_, fa) in enumerate(FRAMES):
        for k, (_, fb) in enumerate(FRAMES):
            if i == k:
                continue
            c = SkyCoord(lon * u.deg, lat * u.deg, frame=fa).transform_to(fb)
            xyz = c.cartesian.xyz.value
            out.append("T %d %d" % (i, k))
            for p in range(len(lon)):
                out.append("%r %r %r" % (float(xyz[0, p]), float(xyz[1, p]), float(xyz[2, p])))
    sys.stdout.write("\n".join(out) + "\n")


main()
