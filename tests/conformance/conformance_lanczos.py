#!/usr/bin/python3
"""Conformance of `tessera reproject --order lanczos2|3|4` with SWarp 2.41's own output.

Usage:
    /usr/bin/python3 conformance_lanczos.py --tessera PATH/TO/tessera [--workdir DIR]
                                          [--only SUBSTRING] [--list] [--keep]

Prints TAP and exits 1 if anything failed; skips (1..0) without SWarp or astropy.
Inputs are made with the helpers of conformance.py (same directory).

SWarp runs on one float32 TAN input (with NaN holes) for each RESAMPLING_TYPE
LANCZOS2/3/4, onto the target given as a .head file beside IMAGEOUT_NAME, with:
    COMBINE N            only the resampled image (RESAMPLE_DIR/in.resamp.fits) and its
                         weight map; no coaddition
    PROJECTION_ERR 0     exact transforms at every pixel (no grid approximation)
    FSCALASTRO_TYPE NONE no multiplication by the pixel-area ratio
    FSCALE_KEYWORD NO_FSCALE, FSCALE_DEFAULT 1
                         no photometric scale (the keyword is absent from the input)
    OVERSAMPLING 1       one sample per output pixel (0, the default, oversamples when
                         output pixels are larger than input ones: the 1.6x case would
                         average 2 x 2 samples, 1.4e-2 of the range away, measured)
    SUBTRACT_BACK N, WEIGHT_TYPE NONE, NTHREADS 1
SWarp writes the resampled image framed to the input's footprint: its header is the
target's with NAXISn cut and CRPIXn shifted by COMINn - 1, which is checked card by
card (CTYPE, CRVAL, the CD matrix against the target's PC x CDELT, CRPIX + COMIN - 1)
before the image is placed on the target grid.  FLASCALE must be 1.

Agreement (never loosened to make tessera pass):
  * coverage: SWarp's weight > 0 exactly where tessera's output is finite.  SWarp gives
    weight 0 (and writes a partial sum or 0) where the 2a x 2a support leaves the input
    or holds a bad pixel (NaN); tessera writes NaN there (footprint 0).  The one edge
    convention that differs: tessera takes a sample within 1e-5 px of a pixel centre as
    that pixel from either side, SWarp only from above (x - floor(x) < 1e-5), so a
    sample up to 1e-5 px below the lowest allowed pixel centre is inside for tessera
    and outside for SWarp (and integer positions flip with rounding there).  A mask
    difference is allowed only on a pixel whose input coordinate (astropy) lies within
    2e-5 px of a pixel centre; none occur in these cases.
  * values: |tessera - SWarp| <= 1e-5 x (input max - min) on every pixel both cover,
    edges included (SWarp computes in float32: expect ~1e-7).  With the default mapping
    tolerance (1e-4 px) too.
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conformance as C  # noqa: E402

TOL = 1e-5          # x input range
SNAP_EPS = 2e-5     # px: a mask difference is allowed this close to a pixel centre
ORDERS = ("lanczos2", "lanczos3", "lanczos4")


def import_stack():
    C.import_stack()
    global np, fits, WCS, pixel_to_pixel
    import numpy as np  # noqa: F811
    from astropy.io import fits  # noqa: F811
    from astropy.wcs import WCS  # noqa: F811
    from astropy.wcs.utils import pixel_to_pixel  # noqa: F811
    globals().update(np=np, fits=fits, WCS=WCS, pixel_to_pixel=pixel_to_pixel)


class Case:
    """One input and target; SWarp's outputs are made once per RESAMPLING_TYPE."""

    def __init__(self, env, key, hin, hout, seed):
        self.env, self.key, self.hin, self.hout = env, key, hin, hout
        ny, nx = hin["NAXIS2"], hin["NAXIS1"]
        self.data = C.punch_nan_holes(C.sky_image(ny, nx, seed), seed + 1).astype(np.float32)
        self.dir = env.path(key)
        os.makedirs(self.dir, exist_ok=True)
        self.inp = os.path.join(self.dir, "in.fits")
        self.tgt = os.path.join(self.dir, "target.hdr")
        C.write_fits(self.inp, self.data, hin, np.float32)
        C.write_hdr(self.tgt, hout)
        self.shape = (hout["NAXIS2"], hout["NAXIS1"])
        self.rng = float(np.nanmax(self.data) - np.nanmin(self.data))
        self._swarp = {}
        self._coords = None

    def coords(self):
        """Input pixel coordinates (0-based) of every output pixel, from astropy."""
        if self._coords is None:
            y, x = np.mgrid[0:self.shape[0], 0:self.shape[1]].astype(float)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xi, yi = pixel_to_pixel(WCS(self.hout), WCS(self.hin), x, y)
            self._coords = (np.asarray(xi), np.asarray(yi))
        return self._coords

    def swarp(self, order, chk):
        if order in self._swarp:
            return self._swarp[order]
        d = os.path.join(self.dir, "swarp-" + order)
        os.makedirs(d, exist_ok=True)
        # SWarp reads the output grid from the .head file beside IMAGEOUT_NAME.
        self.hout.totextfile(os.path.join(d, "coadd.head"), overwrite=True)
        cmd = ["SWarp", self.inp, "-IMAGEOUT_NAME", os.path.join(d, "coadd.fits"),
               "-WEIGHTOUT_NAME", os.path.join(d, "coadd.weight.fits"),
               "-COMBINE", "N", "-RESAMPLE", "Y", "-RESAMPLE_DIR", d,
               "-RESAMPLING_TYPE", order.upper(), "-PROJECTION_ERR", "0",
               "-FSCALASTRO_TYPE", "NONE", "-FSCALE_KEYWORD", "NO_FSCALE", "-FSCALE_DEFAULT", "1",
               "-OVERSAMPLING", "1", "-SUBTRACT_BACK", "N", "-WEIGHT_TYPE", "NONE",
               "-NTHREADS", "1", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET"]
        t0 = time.time()
        r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=300)
        self.env.ref_time += time.time() - t0
        if r.returncode != 0:
            raise C.CaseFailure("SWarp exited %d: %s\n  command: %s"
                                % (r.returncode, r.stderr.strip()[-500:], " ".join(cmd)))
        img = os.path.join(d, "in.resamp.fits")
        wgt = os.path.join(d, "in.resamp.weight.fits")
        with fits.open(img) as hl:
            arr, h = np.array(hl[0].data, dtype=np.float64), hl[0].header.copy()
        with fits.open(wgt) as hl:
            w = np.array(hl[0].data, dtype=np.float64)
        self.check_header(chk, h)
        x0, y0 = int(h["COMIN1"]) - 1, int(h["COMIN2"]) - 1
        full = np.full(self.shape, np.nan)
        ny, nx = arr.shape
        full[y0:y0 + ny, x0:x0 + nx] = np.where(w > 0, arr, np.nan)
        self._swarp[order] = full
        return full

    def check_header(self, chk, h):
        """SWarp's frame is the target's, cut to the input and shifted by COMIN - 1."""
        t = self.hout
        bad = []
        for a in (1, 2):
            if h["CTYPE%d" % a].strip() != t["CTYPE%d" % a].strip():
                bad.append("CTYPE%d %r != %r" % (a, h["CTYPE%d" % a], t["CTYPE%d" % a]))
            if not math.isclose(h["CRVAL%d" % a], t["CRVAL%d" % a], rel_tol=0, abs_tol=1e-10):
                bad.append("CRVAL%d %r != %r" % (a, h["CRVAL%d" % a], t["CRVAL%d" % a]))
            crpix = h["CRPIX%d" % a] + h["COMIN%d" % a] - 1
            if not math.isclose(crpix, t["CRPIX%d" % a], rel_tol=0, abs_tol=1e-9):
                bad.append("CRPIX%d + COMIN%d - 1 = %r != %r" % (a, a, crpix, t["CRPIX%d" % a]))
            if h["COMIN%d" % a] + h["NAXIS%d" % a] - 1 > t["NAXIS%d" % a]:
                bad.append("axis %d runs past the target" % a)
            for b in (1, 2):
                cd = t["CDELT%d" % a] * t["PC%d_%d" % (a, b)]
                if not math.isclose(h["CD%d_%d" % (a, b)], cd, rel_tol=1e-8, abs_tol=1e-15):
                    bad.append("CD%d_%d %r != %r" % (a, b, h["CD%d_%d" % (a, b)], cd))
        if float(h.get("FLASCALE", 1.0)) != 1.0:
            bad.append("FLASCALE %r: SWarp rescaled by the pixel area" % h["FLASCALE"])
        chk.expect(not bad, "SWarp's output header is not the target's: " + "; ".join(bad))
        if not bad:
            chk.note("SWarp header = target (CRPIX shifted by COMIN %d,%d; %dx%d of %dx%d)"
                     % (h["COMIN1"], h["COMIN2"], h["NAXIS1"], h["NAXIS2"],
                        t["NAXIS1"], t["NAXIS2"]))


def check(case, order, tol):
    def fn():
        chk = C.Check()
        ref = case.swarp(order, chk)
        out = os.path.join(case.dir, "tessera-%s-%s.fits" % (order, tol))
        got, _ = case.env.run_tessera(case.inp, case.tgt, out, order, tol, extra=["-j", "1"])
        xi, yi = case.coords()
        near = lambda v: np.abs(v - np.round(v)) < SNAP_EPS  # noqa: E731
        allow = near(xi) | near(yi)
        C.compare(chk, ref, got, case.rng, TOL, mask_allow=allow,
                  label="%s vs SWarp %s" % (order, order.upper()))
        cover = np.isfinite(ref)
        chk.note("SWarp covers %d of %d pixels; %d pixels with a coordinate within %g px of a "
                 "pixel centre" % (int(cover.sum()), cover.size, int(allow.sum()), SNAP_EPS))
        chk.expect(cover.sum() > cover.size // 3, "degenerate case: SWarp covers too little")
        chk.expect((~cover).sum() > 0, "degenerate case: no edge inside the target")
        return chk
    return fn


def build_tests(env):
    hin = C.cel_header("TAN", 300, 260, (150.0, 30.0), 1.0)
    cases = [
        # rotated 23 deg, pixels 1.13x larger, shifted so two input edges cross the target
        Case(env, "tan-rot", hin, C.cel_header("TAN", 280, 250, (150.0 + 40 / 3600, 30.0 - 25 / 3600),
                                                1.13, rot_deg=23.0), 11),
        # upsampling: 0.7x pixels, SIN, rotated -12 deg, the input inside the target
        Case(env, "sin-up", hin, C.cel_header("SIN", 480, 420, (150.0 - 10 / 3600, 30.0 + 6 / 3600),
                                               0.7, rot_deg=-12.0), 21),
        # 1.6x larger pixels, ZEA: SWarp would oversample 2 x 2 without OVERSAMPLING 1
        Case(env, "zea-down", hin, C.cel_header("ZEA", 200, 180, (150.0 + 15 / 3600, 30.0),
                                                 1.6, rot_deg=61.0), 31),
    ]
    tests = []
    for case in cases:
        for order in ORDERS:
            for tol in (0, None):
                tests.append(("%s %s vs SWarp %s, mapping tolerance %s"
                              % (case.key, order, order.upper(), "0" if tol == 0 else "default"),
                              check(case, order, tol)))
    return tests


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("SWarp") is None:
        print("1..0 # SKIP no SWarp on PATH (Debian package swarp; tools/bootstrap.sh)")
        return 0
    try:
        import_stack()
    except Exception as e:  # noqa: BLE001
        print("1..0 # SKIP no /usr/bin/python3 with astropy (%s: %s)" % (type(e).__name__, e))
        return 0
    warnings.simplefilter("ignore")
    tessera = os.path.abspath(args.tessera) if os.path.sep in args.tessera else args.tessera
    env = C.Env(tessera, None)
    workdir = C.open_workdir(args.workdir, "tsr-conformance-lanczos-")
    env.workdir = workdir
    tests = C.select_tests(build_tests(env), args.only, args.list)
    if tests is None:
        C.close_workdir(workdir, False, args.keep)
        return 0
    return C.run_tap(tests, workdir, args.keep,
                     summary=lambda: "; tessera %.1f s, SWarp %.1f s"
                     % (env.tessera_time, env.ref_time))


if __name__ == "__main__":
    sys.exit(main())
