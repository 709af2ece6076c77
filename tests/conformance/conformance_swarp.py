#!/usr/bin/python3
"""Conformance of `tessera mosaic`'s SWarp combine types with SWarp 2.41 itself.

Usage:
    /usr/bin/python3 conformance_swarp.py --tessera PATH/TO/tessera [--swarp /usr/bin/SWarp]
                                          [--workdir DIR] [--only SUBSTRING] [--keep]

Prints TAP, exits 1 if anything failed; skips (1..0) without SWarp or astropy.

Four overlapping 150 x 120 images (fractional pixel offsets, the target's pixel scale, a
GAIN keyword, constant MAP_WEIGHT maps of different levels, planted outliers) are coadded by
SWarp with the options that make the comparison exact -- PROJECTION_ERR 0,
FSCALASTRO_TYPE NONE, SUBTRACT_BACK N, RESCALE_WEIGHTS N, a fixed .head target,
WEIGHT_TYPE MAP_WEIGHT -- and by tessera onto the same target, for each combine type:

  * resampled: ours from SWarp's own resampled images (RESAMPLE Y, COMBINE N: the
    .resamp.fits and their .resamp.weight.fits placed on the target, nearest-neighbour
    copies) against SWarp's coadd.  This tests the combine itself, so it must agree
    wherever both define a value (SWarp's output weight > 0): 1e-5 of the data range for
    the values, 1e-5 relative for the output weight maps, and the same clip log.
  * bilinear, end to end: ours from the original images (--order bilinear,
    --mapping-tolerance 0) against SWarp's RESAMPLING_TYPE BILINEAR coadd.  Our bilinear
    interpolation equals SWarp's (checked on its own, first) except within a pixel of an
    input's edge, where reproject interpolates up to the edge and SWarp leaves the pixel out;
    so the end-to-end values are compared where both define a value and every input is
    either inside or outside in both (its resampled weight > 0 exactly where our footprint
    is).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conformance import Check  # noqa: E402

TOL = 1e-5
NX, NY = 150, 120
SCALE = 2.0 / 3600          # degrees per pixel, inputs and target alike (SWarp scales the
                            # gain by the pixel scale ratio otherwise)
OFFSETS = [(0.0, 0.0), (61.3, 7.6), (23.7, 48.2), (88.4, 52.9)]
WEIGHTS = [1.0, 0.25, 2.0, 0.5]
COMBINES = ["WEIGHTED", "AVERAGE", "MEDIAN", "MIN", "MAX", "SUM", "CHI_OLD", "CHI-MODE",
            "CHI-MEAN", "CLIPPED"]


def header(nx, ny, crpix1, crpix2):
    h = fits.Header()
    for k, v in (("NAXIS", 2), ("NAXIS1", nx), ("NAXIS2", ny), ("CTYPE1", "RA---TAN"),
                 ("CTYPE2", "DEC--TAN"), ("CRVAL1", 30.0), ("CRVAL2", 10.0), ("CRPIX1", crpix1),
                 ("CRPIX2", crpix2), ("CD1_1", -SCALE), ("CD1_2", 0.0), ("CD2_1", 0.0),
                 ("CD2_2", SCALE), ("EQUINOX", 2000.0), ("RADESYS", "ICRS")):
        h[k] = v
    return h


class Scene:
    """The inputs, their weight maps and the target, written once into `d`."""

    def __init__(self, d, swarp, tessera):
        self.d, self.swarp, self.tessera = d, swarp, tessera
        rng = np.random.default_rng(22)
        self.inputs = []
        for i, (ox, oy) in enumerate(OFFSETS):
            h = header(NX, NY, 1 - ox, 1 - oy)
            h["GAIN"] = 4.0
            y, x = np.mgrid[0:NY, 0:NX]
            img = 100 + 20 * np.sin((x + ox) / 13.0) * np.cos((y + oy) / 17.0)
            img = img + rng.normal(0, 1 / np.sqrt(WEIGHTS[i]), img.shape)
            for _ in range(12):   # cosmic rays for the clipped combine
                img[rng.integers(2, NY - 2), rng.integers(2, NX - 2)] += 3000
            p = os.path.join(d, "in%d.fits" % i)
            fits.PrimaryHDU(img.astype(np.float32), h).writeto(p, overwrite=True)
            fits.PrimaryHDU(np.full((NY, NX), WEIGHTS[i], np.float32), h).writeto(
                os.path.join(d, "in%d.weight.fits" % i), overwrite=True)
            self.inputs.append(p)
            # Flag images (32-bit integers) with unit integer weights, for and/nand/or/nor.
            flags = rng.integers(0, 16, img.shape) | (1 << (8 + i)) | (rng.integers(0, 2, img.shape) << 31)
            fits.PrimaryHDU(flags.astype(np.uint32).view(np.int32), h).writeto(
                os.path.join(d, "flag%d.fits" % i), overwrite=True)
            fits.PrimaryHDU(np.ones(img.shape, np.int32), h).writeto(
                os.path.join(d, "flag%d.weight.fits" % i), overwrite=True)
            # Weight maps as the data, for weighted_weight and median_weight.
            wmap = WEIGHTS[i] * (1 + 0.5 * np.sin((x + ox) / 9.0) ** 2) * (rng.random(img.shape) > 0.01)
            fits.PrimaryHDU(wmap.astype(np.float32), h).writeto(os.path.join(d, "wmap%d.fits" % i), overwrite=True)
            shutil.copy(os.path.join(d, "in%d.weight.fits" % i), os.path.join(d, "wmap%d.weight.fits" % i))
        self.tw, self.th = 250, 180
        t = header(self.tw, self.th, 1.0, 1.0)
        self.target = os.path.join(d, "target.hdr")
        t.totextfile(self.target, overwrite=True)
        self.head = t

    def files(self, kind):
        """The input images of a kind: "in" (sky), "flag" or "wmap" (weight maps)."""
        return [os.path.join(self.d, "%s%d.fits" % (kind, i)) for i in range(len(OFFSETS))]

    def run_swarp(self, tag, combine, resampling, extra=(), kind="in"):
        """SWarp's coadd into <tag>/: coadd.fits, coadd.weight.fits, the .resamp files."""
        out = os.path.join(self.d, tag)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "coadd.head"), "w") as f:
            for c in self.head.cards:
                if c.keyword != "NAXIS":
                    f.write(c.image + "\n")
            f.write("END\n")
        cmd = [self.swarp] + self.files(kind) + [
            "-IMAGEOUT_NAME", "coadd.fits", "-WEIGHTOUT_NAME", "coadd.weight.fits",
            "-COMBINE_TYPE", combine, "-RESAMPLING_TYPE", resampling, "-PROJECTION_ERR", "0",
            "-FSCALASTRO_TYPE", "NONE", "-SUBTRACT_BACK", "N", "-RESCALE_WEIGHTS", "N",
            "-WEIGHT_TYPE", "MAP_WEIGHT", "-WEIGHT_SUFFIX", ".weight.fits", "-BLANK_BADPIXELS", "N",
            "-COMBINE_BUFSIZE", "64", "-NTHREADS", "1", "-RESAMPLE_DIR", ".", "-DELETE_TMPFILES", "N",
            "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET", "-GAIN_KEYWORD", "GAIN"] + list(extra)
        r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("SWarp failed (%d): %s" % (r.returncode, r.stderr[-600:]))
        return out

    def run_tessera(self, args):
        r = subprocess.run([self.tessera] + args, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("tessera %s failed (%d): %s" % (" ".join(args), r.returncode, r.stderr[-600:]))


def compare(chk, label, ours, ref, mask, rtol_range=TOL):
    n = int(mask.sum())
    if not chk.expect(n > 1000, "%s: only %d pixels to compare" % (label, n)):
        return
    rng = float(np.ptp(ref[mask])) or 1.0
    d = np.abs(ours[mask].astype(float) - ref[mask].astype(float))
    worst = float(d.max())
    chk.note("%s: %d pixels, max |diff| %.3g (%.2g of range %.4g)" % (label, n, worst, worst / rng, rng))
    chk.expect(worst <= rtol_range * rng, "%s: max |diff| %.3g > %g of the range %.4g" % (label, worst, rtol_range, rng))


def read_clip_log(path):
    rows = []
    for line in open(path):
        f = line.split()
        rows.append((int(f[0]), int(f[1]), int(f[2]), float(f[3])))
    return rows


def resampled_case(sc, combine, kind="in"):
    def fn():
        chk = Check()
        extra = ["-CLIP_WRITELOG", "Y", "-CLIP_LOGNAME", "clip.log"] if combine == "CLIPPED" else []
        sw = sc.run_swarp("resampled-" + combine, combine, "BILINEAR", extra, kind)
        ref = fits.getdata(os.path.join(sw, "coadd.fits"))
        refw = fits.getdata(os.path.join(sw, "coadd.weight.fits"))
        rs = [os.path.join(sw, "%s%d.resamp.fits" % (kind, i)) for i in range(len(OFFSETS))]
        args = ["mosaic"] + rs + ["--target", sc.target, "--order", "nearest-neighbor",
                                  "--combine-type", combine, "--weight-type", "MAP_WEIGHT",
                                  "--gain-keyword", "GAIN", "--quiet", "-o", os.path.join(sw, "ours.fits"),
                                  "--weight-out", os.path.join(sw, "ours.weight.fits")]
        for p in rs:
            args += ["--weight", p.replace(".resamp.fits", ".resamp.weight.fits")]
        if combine == "CLIPPED":
            args += ["--clip-log", os.path.join(sw, "ours.log")]
        sc.run_tessera(args)
        got = fits.getdata(os.path.join(sw, "ours.fits"))
        gotw = fits.getdata(os.path.join(sw, "ours.weight.fits"))
        both = (refw > 0) & np.isfinite(got)
        if kind == "flag":
            # 32-bit flags: SWarp writes them signed.
            a = got[both].astype(np.int64) & 0xFFFFFFFF
            b = ref[both].astype(np.int64) & 0xFFFFFFFF
            chk.note("flags: %d pixels, %d differ" % (both.sum(), int(np.sum(a != b))))
            chk.expect(both.sum() > 1000 and np.array_equal(a, b), "flag values differ")
        else:
            compare(chk, "values", got, ref, both)
        chk.expect(not np.any((refw > 0) & ~np.isfinite(got)),
                   "%d pixels SWarp defines and we do not" % int(np.sum((refw > 0) & ~np.isfinite(got))))
        ok = both & (refw > 0)
        rel = np.abs(gotw[ok] / refw[ok] - 1)
        chk.note("weights: max relative diff %.3g" % rel.max())
        chk.expect(rel.max() <= TOL, "output weight maps differ by %.3g relative" % rel.max())
        if combine == "CLIPPED":
            theirs = read_clip_log(os.path.join(sw, "clip.log"))
            mine = read_clip_log(os.path.join(sw, "ours.log"))
            chk.note("clip log: SWarp %d lines, ours %d" % (len(theirs), len(mine)))
            chk.expect(len(theirs) > 10, "SWarp rejected only %d pixels" % len(theirs))
            # SWarp's pair case prints x one too far (its pointer has moved on): compare
            # input, y and mu exactly, x within 1.
            key = lambda r: (r[2], r[0], round(r[3], 3))  # noqa: E731
            a, b = sorted(theirs, key=key), sorted(mine, key=key)
            same = len(a) == len(b) and all(p[0] == q[0] and p[2] == q[2] and abs(p[1] - q[1]) <= 1 and
                                            abs(p[3] - q[3]) <= 1e-3 * max(1, abs(p[3])) for p, q in zip(a, b))
            chk.expect(same, "clip logs differ: SWarp %s... ours %s..." % (a[:3], b[:3]))
        return chk
    return fn


def bilinear_resampling(sc):
    """One image through our bilinear and SWarp's BILINEAR agree away from its edges."""
    def fn():
        chk = Check()
        sw = sc.run_swarp("one", "WEIGHTED", "BILINEAR")
        ref = fits.getdata(os.path.join(sw, "in1.resamp.fits"))
        h = fits.getheader(os.path.join(sw, "in1.resamp.fits"))
        refw = fits.getdata(os.path.join(sw, "in1.resamp.weight.fits"))
        t = header(h["NAXIS1"], h["NAXIS2"], h["CRPIX1"], h["CRPIX2"])
        tp = os.path.join(sw, "cut.hdr")
        t.totextfile(tp, overwrite=True)
        sc.run_tessera(["reproject", sc.inputs[1], "--target", tp, "-o", os.path.join(sw, "ours.fits"),
                        "--order", "bilinear", "--mapping-tolerance", "0", "--quiet"])
        got = fits.getdata(os.path.join(sw, "ours.fits"))
        compare(chk, "bilinear", got, ref, (refw > 0) & np.isfinite(got))
        extra = int(np.sum((refw == 0) & np.isfinite(got)))
        chk.note("pixels we interpolate and SWarp leaves out (input edges): %d" % extra)
        chk.expect(not np.any((refw > 0) & ~np.isfinite(got)), "SWarp defines pixels we do not")
        return chk
    return fn


def end_to_end_case(sc, combine):
    def fn():
        chk = Check()
        sw = sc.run_swarp("bilinear-" + combine, combine, "BILINEAR")
        ref = fits.getdata(os.path.join(sw, "coadd.fits"))
        refw = fits.getdata(os.path.join(sw, "coadd.weight.fits"))
        out = os.path.join(sw, "ours.fits")
        sc.run_tessera(["mosaic"] + sc.inputs + [
            "--target", sc.target, "--order", "bilinear", "--mapping-tolerance", "0",
            "--combine-type", combine, "--weight-type", "MAP_WEIGHT", "--weight-suffix", ".weight.fits",
            "--quiet", "-o", out])
        got = fits.getdata(out)
        agree = (refw > 0) & np.isfinite(got)
        # Each input inside or outside in both: its SWarp weight > 0 where our footprint is.
        for i, p in enumerate(sc.inputs):
            rp = os.path.join(sw, "in%d.resamp.weight.fits" % i)
            rh = fits.getheader(rp)
            inside_sw = np.zeros(got.shape, bool)
            x0, y0 = int(round(1 - rh["CRPIX1"])), int(round(1 - rh["CRPIX2"]))
            w = fits.getdata(rp) > 0
            inside_sw[y0:y0 + w.shape[0], x0:x0 + w.shape[1]] = w
            fp = os.path.join(sw, "fp%d.fits" % i)
            sc.run_tessera(["reproject", p, "--target", sc.target, "--order", "bilinear",
                            "--mapping-tolerance", "0", "--quiet", "-o", os.path.join(sw, "r%d.fits" % i),
                            "--footprint", fp])
            agree &= inside_sw == (fits.getdata(fp) > 0)
        compare(chk, "values", got, ref, agree)
        return chk
    return fn


def background_case(sc):
    """WEIGHT_TYPE BACKGROUND: the background RMS we find equals SWarp's (1% median, 10% at
    worst: our mesh RMS is interpolated bilinearly, SExtractor's with a spline).  SWarp 2.41
    keeps that RMS as the variance (its weight_to_var copies the RMS line without squaring
    it), so its weight is 1/RMS where ours is 1/RMS^2."""
    def fn():
        chk = Check()
        d = os.path.join(sc.d, "background")
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(9)
        y, x = np.mgrid[0:300, 0:400]
        img = 100 + rng.normal(0, 1, x.shape) * (2 + x / 400.0)   # noise rising along x
        for _ in range(40):   # stars
            cx, cy = rng.uniform(0, 400), rng.uniform(0, 300)
            img += 500 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 4.0)
        h = header(400, 300, 200.5, 150.5)
        p = os.path.join(d, "bg.fits")
        fits.PrimaryHDU(img.astype(np.float32), h).writeto(p, overwrite=True)
        h.totextfile(os.path.join(d, "t.hdr"), overwrite=True)
        with open(os.path.join(d, "coadd.head"), "w") as f:
            f.write("".join(c.image + "\n" for c in h.cards if c.keyword != "NAXIS") + "END\n")
        r = subprocess.run([sc.swarp, p, "-IMAGEOUT_NAME", "coadd.fits", "-WEIGHTOUT_NAME", "coadd.weight.fits",
                            "-COMBINE_TYPE", "WEIGHTED", "-RESAMPLING_TYPE", "NEAREST", "-PROJECTION_ERR", "0",
                            "-FSCALASTRO_TYPE", "NONE", "-SUBTRACT_BACK", "N", "-WEIGHT_TYPE", "BACKGROUND",
                            "-NTHREADS", "1", "-WRITE_XML", "N", "-VERBOSE_TYPE", "QUIET"],
                           cwd=d, capture_output=True, text=True, timeout=300)
        if not chk.expect(r.returncode == 0, "SWarp failed: %s" % r.stderr[-400:]):
            return chk
        sc.run_tessera(["mosaic", p, "--target", os.path.join(d, "t.hdr"), "--order", "nearest-neighbor",
                        "--combine-type", "WEIGHTED", "--weight-type", "BACKGROUND", "--quiet",
                        "-o", os.path.join(d, "ours.fits"), "--rms-out", os.path.join(d, "rms.fits")])
        theirs = 1.0 / fits.getdata(os.path.join(d, "coadd.weight.fits"))
        ours = fits.getdata(os.path.join(d, "rms.fits"))
        ratio = ours / theirs
        med, lo, hi = np.median(ratio), ratio.min(), ratio.max()
        chk.note("background RMS, ours / SWarp's: median %.4f, from %.4f to %.4f" % (med, lo, hi))
        chk.expect(abs(med - 1) < 0.01 and lo > 0.9 and hi < 1.1, "background RMS differs from SWarp's")
        truth = 2 + x[150] / 400.0
        chk.expect(np.all(np.abs(ours[150, 40:360] / truth[40:360] - 1) < 0.1),
                   "background RMS is not the noise's (row 150: %s)" % ours[150, ::80])
        return chk
    return fn


def build_tests(sc):
    tests = [("bilinear: one image, ours against SWarp's BILINEAR resampling", bilinear_resampling(sc))]
    for c in COMBINES:
        tests.append(("combine %s on SWarp's resampled images: values, weight map%s" %
                      (c, ", clip log" if c == "CLIPPED" else ""), resampled_case(sc, c)))
    for c in ("WEIGHTED_WEIGHT", "MEDIAN_WEIGHT"):
        tests.append(("combine %s of weight maps on SWarp's resampled ones: values, weight map" % c,
                      resampled_case(sc, c, "wmap")))
    for c in ("AND", "NAND", "OR", "NOR"):
        tests.append(("combine %s of flag images on SWarp's resampled ones: bits, weight map" % c,
                      resampled_case(sc, c, "flag")))
    for c in ("WEIGHTED", "MEDIAN", "CLIPPED", "AVERAGE"):
        tests.append(("combine %s end to end with bilinear resampling" % c, end_to_end_case(sc, c)))
    tests.append(("WEIGHT_TYPE BACKGROUND: the background RMS against SWarp's", background_case(sc)))
    return tests


def main(argv=None):
    global np, fits
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--swarp", default="/usr/bin/SWarp")
    ap.add_argument("--workdir")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    try:
        import numpy as np
        from astropy.io import fits
    except ImportError as e:
        print("1..0 # SKIP no /usr/bin/python3 with numpy and astropy (%s)" % e)
        return 0
    if not os.access(args.swarp, os.X_OK):
        print("1..0 # SKIP no SWarp at %s (tools/bootstrap.sh installs Debian's swarp)" % args.swarp)
        return 0
    d = args.workdir or tempfile.mkdtemp(prefix="tsr-swarp-")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    sc = Scene(d, args.swarp, os.path.abspath(args.tessera))
    tests = [t for t in build_tests(sc) if not args.only or any(s.lower() in t[0].lower() for s in args.only)]
    print("1..%d" % len(tests))
    nfail = 0
    for i, (name, fn) in enumerate(tests, 1):
        t0 = time.time()
        try:
            chk = fn()
        except Exception:  # noqa: BLE001
            chk = Check()
            chk.fail("exception:\n" + traceback.format_exc())
        nfail += chk.failed
        print("%s %d - %s" % ("not ok" if chk.failed else "ok", i, name))
        for n in chk.notes:
            for line in n.splitlines():
                print("# " + line)
        print("# (%.2f s)" % (time.time() - t0))
        sys.stdout.flush()
    if nfail or args.keep:
        print("# files kept in %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
