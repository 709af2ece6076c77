#!/usr/bin/python3
"""Conformance of `tessera mosaic` and `tessera mosaic-header` with reproject 0.10's
reproject_and_coadd and find_optimal_celestial_wcs.

Usage:
    /usr/bin/python3 conformance_coadd.py --tessera PATH/TO/tessera [--workdir DIR]
                                          [--only SUBSTRING] [--list] [--keep]

Prints TAP and exits 1 if anything failed; skips (1..0) without astropy/reproject.

  * mosaic-header against find_optimal_celestial_wcs: same NAXISn, CRPIX, CRVAL, CDELT
    and PC (1e-9), for several frames, projections, resolutions and auto-rotation.
  * mosaic against reproject_and_coadd for every combine function 0.10 has (mean, sum),
    with interp (bilinear, bicubic), exact and adaptive inputs, with and without weight
    maps (with their own WCS): max |diff| <= 1e-5 of the data range, the same NaN mask
    (mean) and the same footprint.
  * first, last, min, max and median (not in 0.10) against the same rules applied with
    numpy to reproject_interp's individual reprojections.
  * a 3 x 3 grid of overlapping tiles cut from one image reassembles it to 1e-9;
    with additive offsets on the tiles, --match-background with a reference recovers
    the image to 1e-6.
"""

import argparse
import math
import os
import subprocess
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conformance as C  # noqa: E402

TOL = 1e-5


def import_stack():
    C.import_stack()
    global np, fits, WCS, reproject_interp, reproject_exact, reproject_adaptive
    global reproject_and_coadd, find_optimal_celestial_wcs
    import numpy as np  # noqa: F811
    from astropy.io import fits  # noqa: F811
    from astropy.wcs import WCS  # noqa: F811
    from reproject import reproject_interp, reproject_exact, reproject_adaptive  # noqa: F811
    from reproject.mosaicking import reproject_and_coadd, find_optimal_celestial_wcs  # noqa: F811
    import shapely  # noqa: F401  (auto_rotate needs it)
    globals().update(np=np, fits=fits, WCS=WCS, reproject_interp=reproject_interp,
                     reproject_exact=reproject_exact, reproject_adaptive=reproject_adaptive,
                     reproject_and_coadd=reproject_and_coadd,
                     find_optimal_celestial_wcs=find_optimal_celestial_wcs)


class Env:
    def __init__(self, tessera):
        self.tessera, self.workdir = tessera, None

    def path(self, name):
        return os.path.join(self.workdir, name)

    def run(self, args, expect_rc=0):
        cmd = [self.tessera] + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != expect_rc:
            raise C.CaseFailure("tessera exited %d (expected %d): %s\n  command: %s"
                                % (r.returncode, expect_rc, r.stderr.strip()[:600], " ".join(cmd)))
        return r


def tiles_scene(env, key, specs, frame="icrs"):
    """Input images from (nx, ny, crval, scale, rot, seed) specs; returns paths,
    arrays and headers."""
    out = []
    for i, (nx, ny, crval, scale, rot, seed) in enumerate(specs):
        h = C.cel_header("TAN", nx, ny, crval, scale, rot_deg=rot, frame=frame)
        data = C.sky_image(ny, nx, seed)
        p = env.path("%s-in%d.fits" % (key, i))
        C.write_fits(p, data, h, "float64")
        out.append((p, data, h))
    return out


SPECS = [(120, 100, (150.00, 2.00), 2.0, 0.0, 1),
         (110, 130, (150.03, 2.02), 2.2, 17.0, 2),
         (100, 100, (149.98, 2.04), 1.8, -31.0, 3),
         (90, 80, (150.10, 1.96), 2.5, 5.0, 4)]


def header_of_target(env, key, inputs, extra=()):
    tgt = env.path(key + ".hdr")
    if os.path.exists(tgt):
        os.unlink(tgt)
    env.run(["mosaic-header"] + [p for p, _, _ in inputs] + ["-o", tgt] + list(extra))
    return fits.Header.fromtextfile(tgt), tgt


def check_optimal(name, inputs_fn, extra, kw):
    def run():
        chk = C.Check()
        env = ENV
        inputs = inputs_fn(env)
        got, _ = header_of_target(env, name, inputs, extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wref, shape = find_optimal_celestial_wcs([(d, WCS(h)) for _, d, h in inputs], **kw)
        ref = wref.to_header()
        chk.expect((got["NAXIS2"], got["NAXIS1"]) == tuple(shape),
                   "shape %s, reference %s" % ((got["NAXIS2"], got["NAXIS1"]), tuple(shape)))
        for k in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2"):
            a, b = float(got[k]), float(ref[k])
            tol = 1e-9 * max(1.0, abs(b))
            if k.startswith("CRVAL"):
                tol = 1e-9   # degrees
            chk.expect(abs(a - b) <= tol, "%s = %r, reference %r" % (k, a, b))
        for k in ("PC1_1", "PC1_2", "PC2_1", "PC2_2"):
            a = float(got.get(k, 1.0 if k in ("PC1_1", "PC2_2") else 0.0))
            b = float(ref.get(k, 1.0 if k in ("PC1_1", "PC2_2") else 0.0))
            chk.expect(abs(a - b) <= 1e-9, "%s = %r, reference %r" % (k, a, b))
        for k in ("CTYPE1", "CTYPE2"):
            chk.expect(got[k] == ref[k], "%s = %r, reference %r" % (k, got[k], ref[k]))
        return chk
    return name, run


def read(path):
    with fits.open(path, memmap=False) as hl:
        return np.array(hl[0].data, dtype=np.float64)


def mosaic(env, key, inputs, tgt, combine, method_args=(), weights=None, extra=()):
    out, fp = env.path(key + ".out.fits"), env.path(key + ".fp.fits")
    for f in (out, fp):
        if os.path.exists(f):
            os.unlink(f)
    args = ["mosaic"] + [p for p, _, _ in inputs] + ["--target", tgt, "-o", out, "--footprint", fp,
                                                      "--combine", combine, "--quiet"]
    for w in weights or ():
        args += ["--weights", w]
    env.run(args + list(method_args) + list(extra))
    return read(out), read(fp)


def check_coadd(name, combine, method, method_args, rp_kwargs, with_weights=False,
                tol=TOL, tol_fp=TOL, max_defects=0):
    """max_defects: pixels allowed beyond tol (reproject 0.10's exact kernel drops some
    overlaps: see conformance_exact.py), as a fraction of those compared."""
    def run():
        chk = C.Check()
        env = ENV
        inputs = tiles_scene(env, name, SPECS)
        hdr, tgt = header_of_target(env, name + "-t", inputs)
        weights = None
        wdata = []
        if with_weights:
            weights = []
            for i, (p, d, h) in enumerate(inputs):
                # reproject 0.10 takes weights on their input's grid (newer ones allow
                # their own WCS, as tessera does: a weight file carries its header).
                hw = h.copy()
                ny, nx = d.shape
                yy, xx = np.mgrid[0:ny, 0:nx]
                w = 0.5 + (xx + 2 * yy) / float(nx + 2 * ny) + 0.2 * i
                wp = env.path("%s-w%d.fits" % (name, i))
                C.write_fits(wp, w, hw, "float64")
                weights.append(wp)
                wdata.append(w)
        extra = ["--blank", "0"] if combine == "sum" else []
        got, gfp = mosaic(env, name, inputs, tgt, combine, method_args, weights, extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, rfp = reproject_and_coadd([(d, WCS(h)) for _, d, h in inputs], WCS(hdr),
                                           shape_out=(hdr["NAXIS2"], hdr["NAXIS1"]),
                                           input_weights=wdata if with_weights else None,
                                           reproject_function=method,
                                           combine_function=combine, **rp_kwargs)
        rng = max(float(np.nanmax(d) - np.nanmin(d)) for _, d, _ in inputs)
        chk.expect(got.shape == ref.shape, "shape %s, reference %s" % (got.shape, ref.shape))
        if chk.failed:
            return chk
        both = np.isfinite(got) & np.isfinite(ref)
        mism = int(np.sum(np.isfinite(got) != np.isfinite(ref)))
        diff = np.abs(got[both] - ref[both]) / rng
        fdiff = np.abs(gfp - rfp)
        bad = int(np.sum(diff > tol)) + int(np.sum(fdiff > tol_fp * max(1.0, float(rfp.max())))) + mism
        chk.note("max |diff| / range = %.3g over %d pixels; %d NaN-mask differences; footprint "
                 "max |diff| %.3g; %d pixels beyond tolerance"
                 % (float(diff.max()) if diff.size else 0.0, int(both.sum()), mism,
                    float(fdiff.max()), bad))
        chk.expect(both.sum() > 0.3 * got.size, "only %d pixels compared" % int(both.sum()))
        chk.expect(bad <= max_defects * both.sum(),
                   "%d pixels beyond %g (data, of range) / %g (footprint)" % (bad, tol, tol_fp))
        return chk
    return name, run


def individual(inputs, hdr):
    """reproject_interp of each input onto the whole target (values, footprints)."""
    shape = (hdr["NAXIS2"], hdr["NAXIS1"])
    arrs, fps = [], []
    for _, d, h in inputs:
        a, f = reproject_interp((d, WCS(h)), WCS(hdr), shape_out=shape)
        f = np.where(np.isnan(a), 0.0, f)
        arrs.append(a)
        fps.append(f)
    return np.array(arrs), np.array(fps)


def expected(combine, arrs, fps):
    cover = fps > 0
    n, ny, nx = arrs.shape
    val = np.full((ny, nx), np.nan)
    fp = np.zeros((ny, nx))
    a = np.where(cover, arrs, np.nan)
    if combine == "median":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            val = np.nanmedian(a, axis=0)
        fp = fps.sum(axis=0)
        return val, fp
    order = range(n) if combine != "last" else range(n)
    for i in order:
        c = cover[i]
        if combine == "first":
            take = c & np.isnan(val)
        elif combine == "last":
            take = c
        elif combine == "min":
            take = c & (np.isnan(val) | (arrs[i] < val))
        else:
            take = c & (np.isnan(val) | (arrs[i] > val))
        val[take] = arrs[i][take]
        fp[take] = fps[i][take]
    return val, fp


def check_rule(name, combine):
    def run():
        chk = C.Check()
        env = ENV
        inputs = tiles_scene(env, name, SPECS)
        hdr, tgt = header_of_target(env, name + "-t", inputs)
        got, gfp = mosaic(env, name, inputs, tgt, combine)
        arrs, fps = individual(inputs, hdr)
        ref, rfp = expected(combine, arrs, fps)
        rng = float(np.nanmax(arrs) - np.nanmin(arrs))
        mism = int(np.sum(np.isfinite(got) != np.isfinite(ref)))
        chk.expect(mism == 0, "%d pixels finite in one and NaN in the other" % mism)
        both = np.isfinite(got) & np.isfinite(ref)
        d = float(np.max(np.abs(got[both] - ref[both]))) / rng
        chk.note("max |diff| / range = %.3g over %d pixels" % (d, int(both.sum())))
        chk.expect(d <= TOL, "max |diff| %.3g of the range > %g" % (d, TOL))
        chk.expect(float(np.max(np.abs(gfp - rfp))) <= 1e-6, "footprints differ")
        return chk
    return name, run


def grid_tiles(env, key, offsets=None):
    """A 3 x 3 grid of overlapping cutouts of one image; the image's header is the
    target."""
    ny, nx = 150, 180
    h = C.cel_header("TAN", nx, ny, (210.0, -12.0), 3.0, rot_deg=12.0)
    img = C.sky_image(ny, nx, 11)
    tgt = env.path(key + ".hdr")
    C.write_hdr(tgt, h)
    inputs = []
    k = 0
    for ty in range(3):
        for tx in range(3):
            x0, y0 = tx * 55, ty * 45
            w, hh = 70, 60
            sub = img[y0:y0 + hh, x0:x0 + w]
            hs = h.copy()
            hs["CRPIX1"] = h["CRPIX1"] - x0
            hs["CRPIX2"] = h["CRPIX2"] - y0
            hs["NAXIS1"], hs["NAXIS2"] = sub.shape[1], sub.shape[0]
            off = offsets[k] if offsets else 0.0
            p = env.path("%s-tile%d.fits" % (key, k))
            C.write_fits(p, sub + off, hs, "float64")
            inputs.append((p, sub + off, hs))
            k += 1
    return img, inputs, tgt


def check_grid(name, offsets=None):
    def run():
        chk = C.Check()
        env = ENV
        img, inputs, tgt = grid_tiles(env, name, offsets)
        extra = ["--mapping-tolerance", "0"]
        tol = 1e-9
        if offsets:
            extra += ["--match-background", "--background-reference", "1"]
            tol = 1e-6
        got, _ = mosaic(env, name, inputs, tgt, "mean", extra=extra)
        d = float(np.nanmax(np.abs(got - img)))
        chk.note("max |mosaic - image| = %.3g" % d)
        chk.expect(np.isfinite(got).all(), "%d NaN pixels" % int(np.sum(~np.isfinite(got))))
        chk.expect(d <= tol, "max |mosaic - image| %.3g > %g" % (d, tol))
        return chk
    return name, run


def build_tests():
    t = []
    base = lambda env: tiles_scene(env, "opt", SPECS)  # noqa: E731
    gal = lambda env: tiles_scene(env, "optg", SPECS[:3], frame="gal")  # noqa: E731
    t.append(check_optimal("optimal-wcs default", base, [], {}))
    t.append(check_optimal("optimal-wcs galactic frame", base, ["--frame", "galactic"],
                           {"frame": "galactic"}))
    t.append(check_optimal("optimal-wcs galactic inputs", gal, [], {}))
    t.append(check_optimal("optimal-wcs CAR, 3 arcsec", base, ["--projection", "CAR",
                                                                "--resolution", "3"],
                           {"projection": "CAR", "resolution": 3.0 * __import__("astropy.units").units.arcsec}))
    t.append(check_optimal("optimal-wcs auto-rotate", base, ["--auto-rotate"], {"auto_rotate": True}))
    t.append(check_coadd("coadd mean bilinear", "mean", reproject_interp, [], {}))
    t.append(check_coadd("coadd sum bilinear", "sum", reproject_interp, [], {}))
    t.append(check_coadd("coadd mean bicubic", "mean", reproject_interp, ["--order", "bicubic"],
                         {"order": "bicubic"}))
    t.append(check_coadd("coadd mean weighted", "mean", reproject_interp, [], {}, with_weights=True))
    t.append(check_coadd("coadd sum weighted", "sum", reproject_interp, [], {}, with_weights=True))
    t.append(check_coadd("coadd mean exact", "mean", reproject_exact, ["--method", "exact"], {},
                         tol=2e-4, tol_fp=5e-3, max_defects=5e-3))
    t.append(check_coadd("coadd mean adaptive", "mean", reproject_adaptive, ["--method", "adaptive"],
                         {}))
    for comb in ("first", "last", "min", "max", "median"):
        t.append(check_rule("coadd %s" % comb, comb))
    t.append(check_grid("3x3 tiles reassemble the image"))
    t.append(check_grid("3x3 tiles with offsets, matched backgrounds",
                        offsets=[0.0, 0.5, -0.3, 1.2, 0.1, -0.7, 0.25, 0.9, -1.1]))
    return t


ENV = None


def main(argv=None):
    global ENV
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    try:
        import_stack()
    except Exception as e:  # noqa: BLE001
        print("1..0 # SKIP no /usr/bin/python3 with astropy/reproject/shapely (%s: %s)"
              % (type(e).__name__, e))
        return 0
    warnings.simplefilter("ignore")
    tessera = os.path.abspath(args.tessera) if os.path.sep in args.tessera else args.tessera
    ENV = Env(tessera)
    tests = C.select_tests(build_tests(), args.only, args.list)
    if tests is None:
        return 0
    ENV.workdir = C.open_workdir(args.workdir, "tsr-coadd-")
    return C.run_tap(tests, ENV.workdir, args.keep)


if __name__ == "__main__":
    sys.exit(main())
