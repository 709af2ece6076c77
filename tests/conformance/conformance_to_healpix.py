#!/usr/bin/python3
"""Reprojection to HEALPix: `tessera to-healpix` against reproject 0.10's
reproject_to_healpix, nearest and bilinear, within 1e-6 of the reference's
range with identical NaN masks: RING and NESTED, Galactic, ICRS and
ecliptic maps, TAN (the projective path) and SIN, CAR, ZEA images (wcslib
at every pixel), images over a pole and across longitude 0, float32 and
float64, NaN pixels.  Also: the written table read back by reproject's
reader and astropy.table; a partial (explicit) map read back by astropy
and by `tessera reproject`; an image -> HEALPix -> image round trip; a
mosaic of two images against reproject's maps combined by hand.  Prints
TAP."""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS
    from reproject import reproject_from_healpix, reproject_to_healpix
    import conformance_healpix as ch
except ImportError as e:  # pragma: no cover
    print("1..0 # SKIP needs numpy, astropy, astropy-healpix, reproject: %s" % e)
    sys.exit(0)

check, compare = ch.check, ch.compare
FRAMES = {"G": "galactic", "C": "icrs", "E": "barycentricmeanecliptic"}


def make_image(path, n, ctype, crval, cdelt, rot=25.0, dtype=np.float32, seed=1, smooth=False):
    w = WCS(naxis=2)
    w.wcs.ctype = list(ctype)
    w.wcs.crval = list(crval)
    w.wcs.crpix = [n[1] / 2 + 0.5, n[0] / 2 + 0.3]
    t = np.deg2rad(rot)
    w.wcs.cd = np.array([[-cdelt * np.cos(t), cdelt * np.sin(t)],
                         [cdelt * np.sin(t), cdelt * np.cos(t)]])
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n[0], 0:n[1]]
    d = np.sin(x / 17.0) + np.cos(y / 23.0)
    if not smooth:
        d = d + 0.1 * rng.standard_normal(n)
        d[rng.integers(0, n[0], 25), rng.integers(0, n[1], 25)] = np.nan
    fits.PrimaryHDU(d.astype(dtype), w.to_header()).writeto(path, overwrite=True)


def run(a, *args):
    return subprocess.run([a.tessera, *args], capture_output=True, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    w = lambda n: os.path.join(a.workdir, n)

    images = [
        ("tan_icrs", (150, 180), ("RA---TAN", "DEC--TAN"), (83.6, 22.0), 0.05, np.float32),
        ("tan_gal_pole", (120, 120), ("GLON-TAN", "GLAT-TAN"), (30.0, 88.5), 0.06, np.float32),
        ("sin_ra0", (100, 140), ("RA---SIN", "DEC--SIN"), (0.4, -30.0), 0.08, np.float64),
        ("car_gal", (90, 200), ("GLON-CAR", "GLAT-CAR"), (10.3, 5.2), 0.2, np.float32),
        ("zea_south", (110, 110), ("RA---ZEA", "DEC--ZEA"), (200.0, -87.0), 0.1, np.float64),
    ]
    maps = [(64, "ring", "G"), (128, "nested", "C"), (32, "ring", "E"), (256, "nested", "E"),
            (512, "ring", "C")]
    for iname, shape, ctype, crval, cdelt, dt in images:
        path = w(iname + ".fits")
        make_image(path, shape, ctype, crval, cdelt, dtype=dt)
        for nside, ordering, frame in maps:
            for order in ("nearest-neighbor", "bilinear"):
                name = "%s nside %d %s %s %s" % (iname, nside, ordering, frame, order)
                out = w("%s_%d_%s_%s_%s.fits" % (iname, nside, ordering, frame, order))
                args = ["to-healpix", path, "--nside", str(nside), "--frame", frame,
                        "--order", order, "--dtype", "float64", "--quiet", "-j", "2", "-o", out]
                if ordering == "nested":
                    args.append("--nested")
                r = run(a, *args)
                if r.returncode != 0:
                    check(name, False, r.stderr.strip())
                    continue
                got = fits.getdata(out, 1)["SIGNAL"].ravel()
                ref, fp = reproject_to_healpix(path, FRAMES[frame], nside=nside, order=order,
                                               nested=ordering == "nested")
                compare(name, got, ref)

    # The table as reproject and astropy read it.
    out = w("tan_icrs_64_ring_G_bilinear.fits")
    hdr = fits.getheader(out, 1)
    check("header cards", hdr["PIXTYPE"] == "HEALPIX" and hdr["ORDERING"] == "RING" and
          hdr["NSIDE"] == 64 and hdr["COORDSYS"] == "G" and hdr["INDXSCHM"] == "IMPLICIT" and
          hdr["FIRSTPIX"] == 0 and hdr["LASTPIX"] == 12 * 64 * 64 - 1 and
          hdr["TFORM1"].strip() == "1024D", repr(hdr))
    t = Table.read(out, hdu=1)
    full = np.asarray(t["SIGNAL"]).ravel()
    target = w("tan_icrs.fits")
    theirs, _ = reproject_from_healpix(out, fits.getheader(target), order="bilinear")
    r = run(a, "reproject", out, "--target", target, "--order", "bilinear", "--dtype", "float64",
            "--quiet", "-o", w("back_tessera.fits"))
    if r.returncode == 0:
        compare("reproject_from_healpix reads the written map as tessera does",
                fits.getdata(w("back_tessera.fits")), theirs)
    else:
        check("reproject_from_healpix reads the written map as tessera does", False, r.stderr)

    # Partial map: the finite pixels, read back by astropy.table and tessera.
    r = run(a, "to-healpix", w("tan_icrs.fits"), "--nside", "64", "--frame", "G", "--partial",
            "--dtype", "float64", "--quiet", "-o", w("partial.fits"))
    if r.returncode == 0:
        t = Table.read(w("partial.fits"), hdu=1)
        ph = fits.getheader(w("partial.fits"), 1)
        want = np.flatnonzero(np.isfinite(full))
        check("partial map holds exactly the finite pixels",
              ph["INDXSCHM"] == "EXPLICIT" and np.array_equal(np.asarray(t["PIXEL"]), want) and
              np.array_equal(np.asarray(t["SIGNAL"]), full[want]),
              "%d rows, %d finite pixels" % (len(t), want.size))
        r = run(a, "reproject", w("partial.fits"), "--target", target, "--order", "bilinear",
                "--dtype", "float64", "--quiet", "-o", w("back_partial.fits"))
        ok = r.returncode == 0
        if ok:
            compare("partial map reprojects back as the full one",
                    fits.getdata(w("back_partial.fits")), fits.getdata(w("back_tessera.fits")))
        else:
            check("partial map reprojects back as the full one", False, r.stderr)
    else:
        check("partial map written", False, r.stderr)

    # Round trip: a smooth image at 0.05 deg/px through nside 4096 (0.014
    # deg) and back agrees with itself to bilinear accuracy.
    make_image(w("smooth.fits"), (100, 100), ("RA---TAN", "DEC--TAN"), (210.0, 54.0), 0.05,
               smooth=True, dtype=np.float64)
    r = run(a, "to-healpix", w("smooth.fits"), "--nside", "4096", "--partial", "--quiet",
            "--dtype", "float64", "-o", w("smooth_hpx.fits"))
    r2 = r.returncode == 0 and run(a, "reproject", w("smooth_hpx.fits"), "--target",
                                   w("smooth.fits"), "--dtype", "float64", "--quiet", "-o",
                                   w("smooth_back.fits"))
    if r.returncode == 0 and r2.returncode == 0:
        orig, back = fits.getdata(w("smooth.fits")), fits.getdata(w("smooth_back.fits"))
        inner = (slice(3, -3), slice(3, -3))
        err = np.nanmax(np.abs(orig[inner] - back[inner]))
        check("round trip image -> nside 4096 -> image within 2e-3",
              err < 2e-3 and not np.isnan(back[inner]).any(), "max |diff| %.3g" % err)
    else:
        check("round trip image -> nside 4096 -> image", False, r.stderr + (r2.stderr if r2 else ""))

    # A mosaic of two overlapping images: mean, min and first of reproject's maps.
    make_image(w("m1.fits"), (80, 80), ("RA---TAN", "DEC--TAN"), (120.0, 10.0), 0.1, seed=3)
    make_image(w("m2.fits"), (80, 80), ("RA---TAN", "DEC--TAN"), (123.0, 11.0), 0.1, seed=4,
               rot=-40)
    r1, _ = reproject_to_healpix(w("m1.fits"), "icrs", nside=128)
    r2, _ = reproject_to_healpix(w("m2.fits"), "icrs", nside=128)
    s = np.stack([r1, r2])
    f = np.isfinite(s)
    with np.errstate(invalid="ignore"):
        refs = {"mean": np.where(f.any(0), np.nansum(s, 0) / np.maximum(f.sum(0), 1), np.nan),
                "min": np.nanmin(np.where(f, s, np.inf), 0),
                "first": np.where(f[0], s[0], s[1])}
    refs["min"][~f.any(0)] = np.nan
    for comb, ref in refs.items():
        r = run(a, "to-healpix", w("m1.fits"), w("m2.fits"), "--nside", "128", "--combine", comb,
                "--dtype", "float64", "--quiet", "-o", w("mosaic_%s.fits" % comb))
        if r.returncode != 0:
            check("mosaic %s" % comb, False, r.stderr)
            continue
        compare("mosaic %s of two images" % comb,
                fits.getdata(w("mosaic_%s.fits" % comb), 1)["SIGNAL"].ravel(), ref)

    exact_checks(a, w)
    return ch.print_tap()


def exact_checks(a, w):
    """--method exact: flux conserved, a brute-force reference sampled with
    astropy-healpix's pixel lookup, and the usage errors."""
    from astropy_healpix import HEALPix
    from astropy.coordinates import Galactic
    # Flux: an image that fades to 0 over its outer 8 pixels (0.4 deg, more
    # than a map pixel of nside 256), so partly covered map pixels hold 0.
    n = (90, 110)
    make_image(w("xflux.fits"), n, ("RA---TAN", "DEC--TAN"), (150.0, 30.0), 0.05, smooth=True,
               dtype=np.float64)
    with fits.open(w("xflux.fits")) as hl:
        d, hdr = hl[0].data + 3.0, hl[0].header
        y, x = np.mgrid[0:n[0], 0:n[1]]
        edge = np.minimum(np.minimum(x, n[1] - 1 - x), np.minimum(y, n[0] - 1 - y))
        d[edge < 8] = 0
        fits.PrimaryHDU(d, hdr).writeto(w("xflux.fits"), overwrite=True)
    r = run(a, "to-healpix", w("xflux.fits"), "--nside", "256", "--method", "exact", "--frame",
            "G", "--nested", "--dtype", "float64", "--quiet", "-o", w("xflux_hpx.fits"), "-j", "2")
    if r.returncode != 0:
        check("exact: flux conserved", False, r.stderr.strip())
    else:
        m = fits.getdata(w("xflux_hpx.fits"), 1)["SIGNAL"].ravel()
        area, _ = ch.quad_areas(hdr, n)
        want = np.sum(d * area)
        got = np.nansum(m) * 4 * np.pi / m.size
        check("exact: flux conserved to 1e-6 (sum v x 4 pi / npix vs sum image x solid angle)",
              abs(got / want - 1) < 1e-6, "%.12g vs %.12g" % (got, want))

    # Brute force: 0.4 deg image pixels onto nside 32 (1.8 deg), each image
    # pixel split into 24 x 24 sub-pixels worth their solid angle, given to
    # the map pixel astropy-healpix finds at their centre (Galactic map of
    # an ICRS image).
    n, sub, nside = (36, 40), 24, 32
    make_image(w("xbrute.fits"), n, ("RA---TAN", "DEC--TAN"), (300.0, -40.0), 0.4, smooth=True,
               dtype=np.float64)
    r = run(a, "to-healpix", w("xbrute.fits"), "--nside", str(nside), "--method", "exact",
            "--frame", "G", "--dtype", "float64", "--quiet", "-o", w("xbrute_hpx.fits"))
    if r.returncode != 0:
        check("exact: agrees with a brute-force sampled reference", False, r.stderr.strip())
        return
    m = fits.getdata(w("xbrute_hpx.fits"), 1)["SIGNAL"].ravel()
    img, hdr = fits.getdata(w("xbrute.fits")), fits.getheader(w("xbrute.fits"))
    area, c = ch.quad_areas(hdr, n, sub)
    hp = HEALPix(nside=nside, order="ring", frame=Galactic())
    pix = hp.skycoord_to_healpix(c).ravel()
    vals = np.repeat(np.repeat(img, sub, 0), sub, 1).ravel()
    num = np.bincount(pix, area.ravel() * vals, hp.npix)
    den = np.bincount(pix, area.ravel(), hp.npix)
    cover = den / (4 * np.pi / hp.npix)
    sel = cover > 0.1
    with np.errstate(invalid="ignore"):
        d = np.abs(m[sel] - num[sel] / den[sel])
    check("exact: agrees with a brute-force sampled reference (astropy-healpix lookups)",
          sel.sum() > 10 and d.max() < 2e-3 and (np.isnan(m) == (den == 0)).all(),
          "%d pixels, max %.3g" % (sel.sum(), d.max()))

    for args, msg in [(["--method", "adaptive"], "expected interp or exact"),
                      (["--nan-mode", "ignore"], "applies to --method exact only"),
                      (["--method", "exact", "--order", "bilinear"], "--order")]:
        r = run(a, "to-healpix", w("xbrute.fits"), "--nside", "8", "-o", w("xusage.fits"), *args)
        check("exact: to-healpix %s is a usage error" % " ".join(args),
              r.returncode == 2 and msg in r.stderr and not os.path.exists(w("xusage.fits")),
              "exit %d: %s" % (r.returncode, r.stderr.strip()))


if __name__ == "__main__":
    sys.exit(main())
