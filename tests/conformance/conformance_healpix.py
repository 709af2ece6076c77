#!/usr/bin/python3
"""HEALPix conformance: `tessera reproject` of HEALPix tables against
reproject 0.10's reproject_from_healpix (nearest and bilinear), within 1e-6
of the reference's range with identical NaN masks, for RING and NESTED maps,
Galactic and ICRS frames, vector and scalar columns, explicit partial maps,
and UNSEEN values (read as NaN; reproject is given NaN there).  Also checks
astropy-healpix's own geometry through the same path (nearest-neighbour
values equal the pixel astropy-healpix finds) and the error messages of bad
files.  Prints TAP."""
import argparse
import os
import subprocess
import sys

try:
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy_healpix import HEALPix
    from reproject import reproject_from_healpix
except ImportError as e:  # pragma: no cover
    print("1..0 # SKIP needs numpy, astropy, astropy-healpix, reproject: %s" % e)
    sys.exit(0)

UNSEEN = -1.6375e30
results = []


def check(name, ok, diag=""):
    results.append((name, bool(ok), diag))


def print_tap():
    """Print the checks so far as TAP; the exit status (0 if all passed)."""
    print("1..%d" % len(results))
    for i, (name, ok, diag) in enumerate(results, 1):
        print("%s %d - %s" % ("ok" if ok else "not ok", i, name))
        if not ok and diag:
            print("# " + diag.replace("\n", "\n# "))
    return 0 if all(ok for _, ok, _ in results) else 1


def make_map(path, nside, order, frame="G", column_format="1024E", explicit=False, seed=0):
    hp = HEALPix(nside=nside, order=order)
    lon, lat = hp.healpix_to_lonlat(np.arange(hp.npix))
    rng = np.random.default_rng(seed)
    v = (np.sin(3 * lon.rad) * np.cos(2 * lat.rad) + 0.01 * lat.deg +
         0.05 * rng.standard_normal(hp.npix)).astype(np.float32)
    v[::97] = np.nan
    v[5::101] = UNSEEN
    ref = v.astype(float)
    ref[np.abs(ref / UNSEEN - 1) < 1e-5] = np.nan
    if explicit:
        keep = np.sort(rng.choice(hp.npix, hp.npix // 3, replace=False))
        order_rows = rng.permutation(keep.size)   # rows in any order
        cols = [fits.Column(name="PIXEL", format="J", array=keep[order_rows]),
                fits.Column(name="SIGNAL", format="E", array=v[keep][order_rows])]
        full = np.full(hp.npix, np.nan)
        full[keep] = ref[keep]
        ref = full
    else:
        rep = int(column_format[:-1] or 1)
        cols = [fits.Column(name="I_STOKES", format=column_format, array=v.reshape(-1, rep)
                            if rep > 1 else v)]
    h = fits.BinTableHDU.from_columns(cols)
    h.header["PIXTYPE"] = "HEALPIX"
    h.header["ORDERING"] = order.upper()
    h.header["NSIDE"] = nside
    h.header["COORDSYS"] = frame
    h.header["INDXSCHM"] = "EXPLICIT" if explicit else "IMPLICIT"
    if not explicit:
        h.header["FIRSTPIX"] = 0
        h.header["LASTPIX"] = hp.npix - 1
    fits.HDUList([fits.PrimaryHDU(), h]).writeto(path, overwrite=True)
    return ref


def target(path, ctype, crval, shape, cdelt):
    lines = ["NAXIS   = 2", "NAXIS1  = %d" % shape[1], "NAXIS2  = %d" % shape[0],
             "CTYPE1  = '%s'" % ctype[0], "CTYPE2  = '%s'" % ctype[1],
             "CRPIX1  = %r" % ((shape[1] + 1) / 2), "CRPIX2  = %r" % ((shape[0] + 1) / 2),
             "CRVAL1  = %r" % crval[0], "CRVAL2  = %r" % crval[1],
             "CDELT1  = %r" % -cdelt, "CDELT2  = %r" % cdelt]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return fits.Header.fromtextfile(path)


def compare(name, got, ref):
    mg, mr = np.isnan(got), np.isnan(ref)
    rng = np.nanmax(ref) - np.nanmin(ref) if (~mr).any() else 1.0
    d = np.abs(got - ref)[~mg & ~mr]
    err = d.max() / rng if d.size else 0.0
    check(name, (mg == mr).all() and err <= 1e-6,
          "NaN masks differ at %d pixels; max |diff| / range = %.3g" % ((mg != mr).sum(), err))


def quad_areas(hdr, shape, sub=1):
    """Solid angles of the pixels of `hdr` (the quadrilaterals between their
    corners, great-circle edges), each split into sub x sub sub-pixels: an
    array (ny * sub, nx * sub), and the sub-pixel centres' (lon, lat)."""
    ny, nx = shape
    wcs = WCS(hdr)
    f = np.arange(nx * sub + 1) / sub - 0.5
    g = np.arange(ny * sub + 1) / sub - 0.5
    xx, yy = np.meshgrid(f, g)
    c = wcs.pixel_to_world(xx, yy)
    sph = c.spherical
    lon, lat = sph.lon.rad, sph.lat.rad
    v = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)

    def tri(a, b, c):  # Oosterom-Strackee
        num = np.einsum("...i,...i", a, np.cross(b, c))
        den = 1 + np.einsum("...i,...i", a, b) + np.einsum("...i,...i", b, c) + \
            np.einsum("...i,...i", c, a)
        return 2 * np.arctan2(num, den)
    p0, p1, p2, p3 = v[:-1, :-1], v[:-1, 1:], v[1:, 1:], v[1:, :-1]
    area = np.abs(tri(p0, p1, p2) + tri(p0, p2, p3))
    cx, cy = np.meshgrid((np.arange(nx * sub) + 0.5) / sub - 0.5,
                         (np.arange(ny * sub) + 0.5) / sub - 0.5)
    return area, wcs.pixel_to_world(cx, cy)


def exact_checks(a, w):
    """--method exact on HEALPix maps: flux conserved, a brute-force
    reference sampled with astropy-healpix's pixel lookup, NaN/UNSEEN
    handling, and the CLI's usage errors."""
    def run(*args):
        return subprocess.run([a.tessera, "reproject", *args, "--quiet"], capture_output=True,
                              text=True)

    # Flux: a map that is 0 outside a 2 degree disc about the image centre.
    nside = 64
    from astropy.coordinates import Galactic, ICRS, SkyCoord
    import astropy.units as u
    hp = HEALPix(nside=nside, order="ring", frame=Galactic())
    lon, lat = hp.healpix_to_lonlat(np.arange(hp.npix))
    rng = np.random.default_rng(3)
    v = 2 + np.sin(5 * lon.rad) * np.cos(3 * lat.rad) + 0.3 * rng.random(hp.npix)
    centre = SkyCoord(40.3 * u.deg, 12.7 * u.deg, frame="galactic")
    v[hp.healpix_to_skycoord(np.arange(hp.npix)).separation(centre).deg > 2.0] = 0
    h = fits.BinTableHDU.from_columns([fits.Column(name="T", format="1024D",
                                                   array=v.reshape(-1, 1024))])
    h.header.update(PIXTYPE="HEALPIX", ORDERING="RING", NSIDE=nside, COORDSYS="G",
                    INDXSCHM="IMPLICIT")
    fits.HDUList([fits.PrimaryHDU(), h]).writeto(w("flux64.fits"), overwrite=True)
    shape = (130, 150)
    hdr = target(w("flux.hdr"), ("GLON-TAN", "GLAT-TAN"), (40.3, 12.7), shape, 0.05)
    r = run(w("flux64.fits"), "--target", w("flux.hdr"), "-o", w("flux_out.fits"),
            "--method", "exact", "--dtype", "float64", "--footprint", w("flux_fp.fits"),
            "-j", "2", "--block", "64x48")
    if r.returncode != 0:
        check("exact: flux conserved", False, r.stderr.strip())
    else:
        got = fits.getdata(w("flux_out.fits"))
        area, _ = quad_areas(hdr, shape)
        flux = np.sum(got * area)
        want = np.sum(v) * 4 * np.pi / hp.npix
        fp = fits.getdata(w("flux_fp.fits"))
        check("exact: flux conserved to 1e-6 (sum out x solid angle vs sum v x 4 pi / npix)",
              abs(flux / want - 1) < 1e-6, "%.12g vs %.12g" % (flux, want))
        check("exact: footprint 1 over a full-sky map", np.abs(fp - 1).max() < 1e-7,
              "max |fp - 1| = %.3g" % np.abs(fp - 1).max())

    # Brute force: 0.5 deg pixels over nside 16 (3.7 deg) split into 40 x 40
    # sub-pixels, each worth its solid angle and given the value of the
    # pixel astropy-healpix finds at its centre; NESTED, ICRS map, Galactic
    # target (a frame change on the way).
    nside, sub = 16, 40
    hp = HEALPix(nside=nside, order="nested", frame=ICRS())
    lon, lat = hp.healpix_to_lonlat(np.arange(hp.npix))
    v = 2 + np.sin(5 * lon.rad) * np.cos(3 * lat.rad) + 0.3 * rng.random(hp.npix)
    h = fits.BinTableHDU.from_columns([fits.Column(name="T", format="D", array=v)])
    h.header.update(PIXTYPE="HEALPIX", ORDERING="NESTED", NSIDE=nside, COORDSYS="C")
    fits.HDUList([fits.PrimaryHDU(), h]).writeto(w("brute16.fits"), overwrite=True)
    shape = (20, 24)
    hdr = target(w("brute.hdr"), ("GLON-TAN", "GLAT-TAN"), (200.0, 55.0), shape, 0.5)
    r = run(w("brute16.fits"), "--target", w("brute.hdr"), "-o", w("brute_out.fits"),
            "--method", "exact", "--dtype", "float64")
    if r.returncode != 0:
        check("exact: agrees with a brute-force sampled reference", False, r.stderr.strip())
    else:
        got = fits.getdata(w("brute_out.fits"))
        area, c = quad_areas(hdr, shape, sub)
        vals = v[hp.skycoord_to_healpix(c)]
        ref = (vals * area).reshape(shape[0], sub, shape[1], sub).sum((1, 3)) / \
            area.reshape(shape[0], sub, shape[1], sub).sum((1, 3))
        d = np.abs(got - ref)
        check("exact: agrees with a brute-force sampled reference (astropy-healpix lookups)",
              d.max() < 3e-3 and np.sqrt((d ** 2).mean()) < 5e-4,
              "max %.3g rms %.3g" % (d.max(), np.sqrt((d ** 2).mean())))

    # NaN and UNSEEN: propagate spoils exactly the outputs that ignore sees
    # partly uncovered; ignore leaves no NaN where anything covers.
    nm = w("ring32_C_scalar.fits")
    outs = {}
    for mode in ("propagate", "ignore"):
        r = run(nm, "--target", w("tan_orion.hdr"), "-o", w("nan_%s.fits" % mode), "--method",
                "exact", "--nan-mode", mode, "--footprint", w("nan_fp_%s.fits" % mode),
                "--dtype", "float64")
        if r.returncode != 0:
            check("exact: --nan-mode %s" % mode, False, r.stderr.strip())
            return
        outs[mode] = (fits.getdata(w("nan_%s.fits" % mode)), fits.getdata(w("nan_fp_%s.fits" % mode)))
    (vp, fpp), (vi, fpi) = outs["propagate"], outs["ignore"]
    # Overlaps under 1e-8 of an output pixel are dropped as rounding: a bad
    # pixel that touches less is neither spoiling nor missing.
    spoiled, touched = fpi < 1 - 1e-7, fpi < 1 - 5e-9
    check("exact: NaN/UNSEEN map pixels spoil exactly the outputs they overlap (propagate)",
          spoiled.any() and (np.isnan(vp) <= touched).all() and (spoiled <= np.isnan(vp)).all()
          and np.abs(fpp - 1).max() < 1e-7,
          "%d NaN, %d partly uncovered" % (np.isnan(vp).sum(), spoiled.sum()))
    check("exact: --nan-mode ignore gives the mean of the rest",
          (np.isfinite(vi) == (fpi > 0)).all() and np.allclose(vi[~touched], vp[~touched],
                                                               rtol=0, atol=1e-12))

    # Usage errors (exit 2): interp-only and adaptive options on a HEALPix map.
    for args, msg in [(["--method", "exact", "--order", "bilinear"], "--order"),
                      (["--method", "adaptive"], "or --method exact, applies")]:
        r = run(nm, "--target", w("tan_orion.hdr"), "-o", w("usage_out.fits"), *args)
        check("exact: %s is a usage error" % " ".join(args),
              r.returncode == 2 and msg in r.stderr and not os.path.exists(w("usage_out.fits")),
              "exit %d: %s" % (r.returncode, r.stderr.strip()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    w = lambda n: os.path.join(a.workdir, n)
    frames = {"G": "galactic", "C": "icrs"}

    cases = [
        ("ring64_G_vector", 64, "ring", "G", "1024E", False),
        ("nested64_G_vector", 64, "nested", "G", "1024E", False),
        ("ring32_C_scalar", 32, "ring", "C", "E", False),
        ("nested16_C_explicit", 16, "nested", "C", "E", True),
        ("ring16_G_explicit", 16, "ring", "G", "E", True),
    ]
    targets = [
        ("tan_orion", ("RA---TAN", "DEC--TAN"), (83.6, 22.0), (120, 160), 0.1),
        ("tan_northpole", ("GLON-TAN", "GLAT-TAN"), (30.0, 89.0), (100, 100), 0.08),
        # Off the round degrees: a pixel centre exactly on a HEALPix pixel
        # edge (lon 45 deg) is a tie that one ulp of the coordinate path
        # (wcslib unit vectors here, astropy's degrees there) settles either way.
        ("car_allsky", ("GLON-CAR", "GLAT-CAR"), (0.3, 0.2), (90, 180), 2.0),
        ("tan_southpole", ("RA---TAN", "DEC--TAN"), (200.0, -89.5), (80, 80), 0.1),
    ]
    for cname, nside, order, frame, form, explicit in cases:
        path = w(cname + ".fits")
        ref_map = make_map(path, nside, order, frame, form, explicit)
        for tname, ctype, crval, shape, cdelt in targets:
            hdr = target(w(tname + ".hdr"), ctype, crval, shape, cdelt)
            for o in ("nearest-neighbor", "bilinear"):
                out = w("%s_%s_%s.fits" % (cname, tname, o))
                r = subprocess.run([a.tessera, "reproject", path, "--target", w(tname + ".hdr"),
                                    "-o", out, "--order", o, "--dtype", "float64", "--quiet",
                                    "-j", "2"], capture_output=True, text=True)
                name = "%s %s %s" % (cname, tname, o)
                if r.returncode != 0:
                    check(name, False, r.stderr.strip())
                    continue
                got = fits.getdata(out)
                ref, _ = reproject_from_healpix((ref_map, frames[frame]), hdr, shape_out=shape,
                                                order=o, nested=(order == "nested"))
                compare(name, got, ref)

    # Pixel lookups equal astropy-healpix's at nside 2^29 (through a tiny map
    # is impossible; instead check nearest-neighbour on nside 1024 positions).
    hp = HEALPix(nside=128, order="nested")
    path = w("index128.fits")
    idx = np.arange(hp.npix, dtype=np.float64)
    h = fits.BinTableHDU.from_columns([fits.Column(name="IDX", format="1024D",
                                                   array=idx.reshape(-1, 1024))])
    h.header.update(PIXTYPE="HEALPIX", ORDERING="NESTED", NSIDE=128, COORDSYS="G")
    fits.HDUList([fits.PrimaryHDU(), h]).writeto(path, overwrite=True)
    hdr = target(w("idx.hdr"), ("GLON-TAN", "GLAT-TAN"), (123.4, -45.6), (64, 64), 0.07)
    r = subprocess.run([a.tessera, "reproject", path, "--target", w("idx.hdr"), "-o",
                        w("idx_out.fits"), "--order", "nearest", "--quiet"], capture_output=True,
                       text=True)
    if r.returncode == 0:
        got = fits.getdata(w("idx_out.fits")).astype(np.int64)
        yy, xx = np.indices((64, 64))
        c = WCS(hdr).pixel_to_world(xx, yy)
        want = hp.lonlat_to_healpix(c.l, c.b)
        check("nearest pixel index equals astropy-healpix's", (got == want).all(),
              "%d of 4096 differ" % (got != want).sum())
    else:
        check("nearest pixel index equals astropy-healpix's", False, r.stderr)

    exact_checks(a, w)

    # Bad files: clear errors, exit status 1.
    good = w("ring32_C_scalar.fits")
    bad = [
        ("NSIDE", 33, "NESTED", "ORDERING", "NSIDE = 33; expected a power of 2"),
        ("ORDERING", "SPIRAL", None, None, "ORDERING = 'SPIRAL'; expected RING or NESTED"),
        ("COORDSYS", "X", None, None, "COORDSYS = 'X'; expected G"),
        ("NSIDE", 0, None, None, "NSIDE = 0"),
    ]
    for i, (kw, val, kw2val, kw2, msg) in enumerate(bad):
        with fits.open(good) as hl:
            hl[1].header[kw] = val
            if kw2:
                hl[1].header[kw2] = kw2val
            p = w("bad%d.fits" % i)
            hl.writeto(p, overwrite=True)
        r = subprocess.run([a.tessera, "reproject", p, "--target", w("tan_orion.hdr"), "-o",
                            w("bad_out.fits"), "--quiet"], capture_output=True, text=True)
        check("bad %s=%s is refused clearly" % (kw, val), r.returncode == 1 and msg in r.stderr,
              "exit %d: %s" % (r.returncode, r.stderr.strip()))
    # Wrong row count (NSIDE says more pixels than the rows hold).
    with fits.open(good) as hl:
        hl[1].header["NSIDE"] = 64
        hl[1].header["LASTPIX"] = 12 * 64 * 64 - 1
        hl.writeto(w("badrows.fits"), overwrite=True)
    r = subprocess.run([a.tessera, "reproject", w("badrows.fits"), "--target",
                        w("tan_orion.hdr"), "-o", w("bad_out.fits"), "--quiet"],
                       capture_output=True, text=True)
    check("wrong row count is refused clearly", r.returncode == 1 and "needs 49152" in r.stderr,
          r.stderr.strip())
    # Truncated table.
    data = open(good, "rb").read()
    open(w("trunc.fits"), "wb").write(data[:len(data) - 2880 * 2])
    r = subprocess.run([a.tessera, "reproject", w("trunc.fits"), "--target", w("tan_orion.hdr"),
                        "-o", w("bad_out.fits"), "--quiet"], capture_output=True, text=True)
    check("truncated table is refused clearly", r.returncode == 1 and "truncated" in r.stderr,
          r.stderr.strip())

    return print_tap()


if __name__ == "__main__":
    sys.exit(main())
