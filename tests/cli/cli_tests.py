#!/usr/bin/python3
"""Tests of the `tessera` command line tool: regions, block sizes, footprints, dtypes,
`tessera info`, and the bad-input catalogue.

Usage:
    /usr/bin/python3 cli_tests.py --tessera PATH/TO/tessera [--workdir DIR]
                                  [--only SUBSTRING] [--slow] [--list] [--keep]

Prints TAP and exits 1 if anything failed; skips ('1..0 # SKIP') when astropy cannot be
imported.  Shares its input generators and helpers with ../conformance/conformance.py.
"""

import argparse
import gzip
import os
import re
import resource
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "conformance"))

import conformance as C  # noqa: E402

ORDERS = C.ORDERS


def load():
    C.import_stack()
    C.install_ecliptic_mapping()
    global np, fits, WCS
    np, fits, WCS = C.np, C.fits, C.WCS


class Ctx:
    def __init__(self, tessera, workdir):
        self.tessera = tessera
        self.workdir = workdir
        self.cache = {}
        self.n = 0

    def path(self, *names):
        return os.path.join(self.workdir, *names)

    def memo(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def run(self, args, cwd=None, timeout=300, env=None, max_file=None, max_fds=None, **kw):
        """max_file: a file size limit in bytes (writes past it fail with EFBIG), so that a
        regression cannot fill the disk; max_fds: a limit on open descriptors (ulimit -n);
        kw: more subprocess.run arguments (user=...)."""
        cmd = [self.tessera] + list(args)

        def limits():
            if max_file:
                limit_file_size(max_file)
            if max_fds:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               cwd=cwd or self.workdir, env=env,
                               preexec_fn=limits if max_file or max_fds else None, **kw)
        except subprocess.TimeoutExpired:
            raise C.CaseFailure("timed out after %ds: %s" % (timeout, " ".join(cmd)))
        except OSError as e:
            raise C.CaseFailure("cannot run %s: %s" % (self.tessera, e))
        r.cmd = " ".join(cmd)
        return r

    def reproject(self, inp, tgt, out, extra=(), quiet=True):
        """Run `tessera reproject`; raise unless it succeeds; return (raw data, header)."""
        if os.path.exists(out):
            os.unlink(out)
        args = ["reproject", inp, "--target", tgt, "-o", out] + (["--quiet"] if quiet else []) + list(extra)
        r = self.run(args)
        if r.returncode != 0:
            raise C.CaseFailure("tessera exited %d: %s\n  command: %s" % (r.returncode, r.stderr.strip()[:500], r.cmd))
        return read_raw(out)


def limit_file_size(nbytes):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def read_raw(path):
    """Data as stored (dtype as in the file, no scaling) and the header."""
    if not os.path.exists(path):
        raise C.CaseFailure("%s was not written" % path)
    with fits.open(path, memmap=False, do_not_scale_image_data=True) as hl:
        d = hl[0].data
        if d is None:
            raise C.CaseFailure("%s has no data" % path)
        return np.array(d), hl[0].header.copy()


def bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def expect_same(chk, got, ref, label, what="bit-identical to the reference"):
    if bits_equal(got, ref):
        chk.note("%s: %s" % (label, what))
    else:
        describe_diff(chk, got, ref, label)


def describe_diff(chk, a, b, what):
    """Why a (tested) and b (expected) are not bit-identical."""
    if a.shape != b.shape:
        chk.fail("%s: shape %s, expected %s" % (what, a.shape, b.shape))
        return
    if a.dtype != b.dtype:
        chk.fail("%s: dtype %s, expected %s" % (what, a.dtype, b.dtype))
        return
    af, bf = a.astype(np.float64), b.astype(np.float64)
    an, bn = np.isnan(af), np.isnan(bf)
    nmask = int((an != bn).sum())
    d = np.where(~an & ~bn, np.abs(af - bf), 0.0)
    nval = int((d > 0).sum())
    msg = "%s: not bit-identical: %d NaN mask differences, %d value differences" % (what, nmask, nval)
    if nval:
        k = np.unravel_index(np.argmax(d), d.shape)
        msg += ", max |diff| %.3g at %s (%.9g vs %.9g)" % (d[k], C.fmt_pix(k), af[k], bf[k])
    if nmask:
        k = tuple(np.argwhere(an != bn)[0])
        msg += "; first mask difference at %s (%r vs %r)" % (C.fmt_pix(k), af[k], bf[k])
    if nmask == 0 and nval == 0:
        msg += " (only NaN payload bits differ)"
    chk.fail(msg)


# ---------------------------------------------------------------------------
# Scenarios

def scenario_main(ctx):
    """NaN holes + partial overlap + rotation: exercises edges and NaN handling in every block."""
    def make():
        nx, ny = 260, 240
        hin = C.cel_header("TAN", nx, ny, (150.0, 30.0), 3.0, rot_deg=4.0)
        hout = C.cel_header("ZEA", 300, 260, (150.0 + 0.05, 30.0 - 0.03), 2.7, rot_deg=-33.0)
        img = C.punch_nan_holes(C.sky_image(ny, nx, 101), 102)
        inp = ctx.path("main.fits")
        tgt = ctx.path("main.hdr")
        C.write_fits(inp, img, hin, np.float32)
        C.write_hdr(tgt, hout)
        return dict(inp=inp, tgt=tgt, hin=hin, hout=hout, img=img, nx=300, ny=260)
    return ctx.memo("main", make)


def full_output(ctx, order="bilinear", tol=None, block=None):
    sc = scenario_main(ctx)
    extra = ["--order", order]
    if tol is not None:
        extra += ["--mapping-tolerance", str(tol)]
    if block:
        extra += ["--block", block]
    key = ("full", order, tol, block)

    def go():
        out = ctx.path("full.%s.%s.%s.fits" % (order, "dflt" if tol is None else tol, block or "noblock"))
        return ctx.reproject(sc["inp"], sc["tgt"], out, extra)
    return ctx.memo(key, go)


def region_test(ctx, region, order="bilinear", block=None):
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        full, fh = full_output(ctx, order, None, block)
        (x1, x2), (y1, y2) = [[int(v) for v in p.split(":")] for p in region.split(",")]
        extra = ["--order", order, "--region", region] + (["--block", block] if block else [])
        out = ctx.path("region.%s.%s.%s.fits" % (region.replace(":", "_").replace(",", "-"), order, block or "noblock"))
        got, gh = ctx.reproject(sc["inp"], sc["tgt"], out, extra)
        want = full[y1 - 1:y2, x1 - 1:x2]
        chk.expect(gh.get("NAXIS1") == x2 - x1 + 1 and gh.get("NAXIS2") == y2 - y1 + 1,
                   "region file NAXIS1=%s NAXIS2=%s, expected %d %d"
                   % (gh.get("NAXIS1"), gh.get("NAXIS2"), x2 - x1 + 1, y2 - y1 + 1))
        if bits_equal(got, want):
            chk.note("bit-identical to full[%d:%d, %d:%d] (%d pixels, %d NaN)"
                     % (y1 - 1, y2, x1 - 1, x2, want.size, int(np.isnan(want.astype(float)).sum())))
        else:
            describe_diff(chk, got, want, "region %s" % region)
        # WCS: region pixel (i, j) is full pixel (x1-1+i, y1-1+j)
        wf = WCS(fh).celestial
        wr = WCS(gh).celestial
        h, w = y2 - y1 + 1, x2 - x1 + 1
        pts = [(0, 0), (w - 1, h - 1), (w - 1, 0), (0, h - 1), (w // 2, h // 2)]
        worst = 0.0
        for (i, j) in pts:
            a = wr.pixel_to_world(i, j)
            b = wf.pixel_to_world(x1 - 1 + i, y1 - 1 + j)
            worst = max(worst, a.separation(b).to_value("arcsec"))
        chk.note("CRPIX region %s/%s vs full %s/%s; max sky offset of matching pixels %.3g arcsec"
                 % (gh.get("CRPIX1"), gh.get("CRPIX2"), fh.get("CRPIX1"), fh.get("CRPIX2"), worst))
        chk.expect(worst < 1e-6, "region WCS is off by %.3g arcsec (CRPIX not shifted right?)" % worst)
        return chk
    return fn


def block_test(ctx, order, exact, block):
    def fn():
        chk = C.Check()
        tol = 0 if exact else None
        base, _ = full_output(ctx, order, tol, None)
        got, _ = full_output(ctx, order, tol, block)
        if bits_equal(got, base):
            chk.note("bit-identical to the default block size (%d NaN of %d)"
                     % (int(np.isnan(base.astype(float)).sum()), base.size))
        else:
            describe_diff(chk, got, base, "--block %s" % block)
        return chk
    return fn


def footprint_test(ctx, order, region=None):
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        tag = "%s.%s" % (order, (region or "all").replace(":", "_").replace(",", "-"))
        out = ctx.path("fpout.%s.fits" % tag)
        fp = ctx.path("fp.%s.fits" % tag)
        for p in (out, fp):
            if os.path.exists(p):
                os.unlink(p)
        extra = ["--order", order, "--footprint", fp] + (["--region", region] if region else [])
        data, dh = ctx.reproject(sc["inp"], sc["tgt"], out, extra)
        f, fh = read_raw(fp)
        if f.shape != data.shape:
            chk.fail("footprint shape %s, output %s" % (f.shape, data.shape))
            return chk
        fv = f.astype(np.float64)
        want = np.isfinite(data.astype(np.float64)).astype(np.float64)
        nbad = int((fv != want).sum())
        chk.note("footprint dtype %s BITPIX %s; %d ones, %d zeros, %d other values; %d differ from isfinite(output)"
                 % (f.dtype, fh.get("BITPIX"), int((fv == 1).sum()), int((fv == 0).sum()),
                    int(((fv != 0) & (fv != 1)).sum()), nbad))
        chk.expect(nbad == 0, "%d footprint pixels differ from isfinite(output)" % nbad)
        chk.expect(0 < want.sum() < want.size, "degenerate test: output all finite or all NaN")
        wd, wf = WCS(dh).celestial, WCS(fh).celestial
        a = wd.pixel_to_world(3, 5)
        b = wf.pixel_to_world(3, 5)
        sep = a.separation(b).to_value("arcsec")
        chk.expect(sep < 1e-6, "footprint WCS differs from the output's by %.3g arcsec" % sep)
        return chk
    return fn


def lanczos_formula_test(ctx):
    """The main scenario through --order lanczosN against the formula computed here
    from astropy's pixel mapping: 2a x 2a taps from floor(x) + 1 - a, weights
    sinc(d) sinc(d / a) normalised per axis, NaN where the support leaves the input
    or holds a NaN (SWarp's edges and bad pixels); float32 output."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        img = sc["img"].astype(np.float32).astype(np.float64)
        ny_in, nx_in = img.shape
        y, x = np.mgrid[0:sc["ny"], 0:sc["nx"]].astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xi, yi = C.pixel_to_pixel(WCS(sc["hout"]), WCS(sc["hin"]), x, y)
        rng = float(np.nanmax(img) - np.nanmin(img))
        for a, name in ((2, "lanczos2"), (3, "LANCZOS3"), (4, "lanczos4")):
            got, _ = ctx.reproject(sc["inp"], sc["tgt"], ctx.path("lanczos.%s.fits" % name),
                                   ["--order", name, "--mapping-tolerance", "0"])
            got = got.astype(np.float64)
            with np.errstate(invalid="ignore"):
                px, py = np.floor(xi), np.floor(yi)
                inside = (px >= a - 1) & (px <= nx_in - 1 - a) & (py >= a - 1) & (py <= ny_in - 1 - a)
            want = np.full(got.shape, np.nan)
            ii = np.nonzero(inside)
            fx, fy = (xi - px)[ii], (yi - py)[ii]
            bx, by = px[ii].astype(int) + 1 - a, py[ii].astype(int) + 1 - a
            taps = np.arange(2 * a)

            def weights(f):
                d = taps[None, :] - (a - 1) - f[:, None]
                w = np.sinc(d) * np.sinc(d / a)
                return w / w.sum(axis=1, keepdims=True)
            wx, wy = weights(fx), weights(fy)
            win = img[(by[:, None, None] + taps[None, :, None]), (bx[:, None, None] + taps[None, None, :])]
            want[ii] = np.einsum("nj,nk,njk->n", wy, wx, win)
            mism = np.isnan(want) != np.isnan(got)
            both = ~np.isnan(want) & ~np.isnan(got)
            err = float(np.max(np.abs(want[both] - got[both]))) / rng if both.any() else 0.0
            chk.note("%s: %d finite, %d NaN-mask mismatches, max|diff|/range %.3g"
                     % (name, int(both.sum()), int(mism.sum()), err))
            chk.expect(not mism.any(), "%s: %d NaN-mask mismatches" % (name, int(mism.sum())))
            chk.expect(err <= 1e-6, "%s: max|diff|/range %.3g > 1e-6" % (name, err))
            chk.expect(both.sum() > got.size // 3 and (~both).sum() > 0, "%s: degenerate case" % name)
        return chk
    return fn


def dtype_test(ctx, in_dtype, opt, want_bitpix):
    def fn():
        chk = C.Check()
        key = "dtype_%s" % in_dtype

        def make():
            nx, ny = 120, 110
            hin = C.cel_header("TAN", nx, ny, (20.0, -5.0), 2.0)
            hout = C.cel_header("TAN", 100, 100, (20.0 + 0.002, -5.0), 2.2, rot_deg=10.0)
            inp = ctx.path("%s.fits" % key)
            tgt = ctx.path("%s.hdr" % key)
            C.write_fits(inp, C.sky_image(ny, nx, 5), hin, in_dtype)
            C.write_hdr(tgt, hout)
            return inp, tgt
        inp, tgt = ctx.memo(key, make)
        out = ctx.path("%s.%s.out.fits" % (key, opt or "default"))
        data, h = ctx.reproject(inp, tgt, out, ["--dtype", opt] if opt else [])
        chk.note("input %s, option %s: output BITPIX %s, dtype %s"
                 % (in_dtype, opt or "(none)", h.get("BITPIX"), data.dtype))
        chk.expect(h.get("BITPIX") == want_bitpix, "BITPIX %s, expected %d" % (h.get("BITPIX"), want_bitpix))
        chk.expect("BSCALE" not in h and "BZERO" not in h, "float output carries BSCALE/BZERO")
        return chk
    return fn


def integer_input_test(ctx):
    """BITPIX 16 with BSCALE/BZERO/BLANK: read as float with scaling and BLANK -> NaN."""
    def fn():
        chk = C.Check()
        nx, ny = 140, 120
        hin = C.cel_header("TAN", nx, ny, (50.0, 10.0), 2.0)
        hout = C.cel_header("TAN", 120, 110, (50.0 + 0.003, 10.0 - 0.001), 2.3, rot_deg=-7.0)
        img = C.sky_image(ny, nx, 77)
        q = np.round((img - 4.0) / 0.001).astype(np.int16)
        q[30:34, 40:45] = -32768
        inp = ctx.path("int16.fits")
        tgt = ctx.path("int16.hdr")
        # write the raw integers, then add the scaling cards without touching the data
        C.write_fits(inp, q, hin, np.int16)
        with fits.open(inp, mode="update", do_not_scale_image_data=True) as hl:
            hl[0].header["BSCALE"] = 0.001
            hl[0].header["BZERO"] = 4.0
            hl[0].header["BLANK"] = -32768
        C.write_hdr(tgt, hout)
        rh = fits.getheader(inp)
        scaled = np.array(fits.getdata(inp), dtype=np.float64)
        chk.note("input BITPIX %s BSCALE %s BZERO %s BLANK %s; astropy reads it with %d NaN"
                 % (rh.get("BITPIX"), rh.get("BSCALE"), rh.get("BZERO"), rh.get("BLANK"),
                    int(np.isnan(scaled).sum())))
        chk.expect(rh.get("BITPIX") == 16 and int(np.isnan(scaled).sum()) == 20, "test input not as intended")
        out = ctx.path("int16.out.fits")
        data, oh = ctx.reproject(inp, tgt, out, ["--mapping-tolerance", "0"])
        chk.note("output BITPIX %s" % oh.get("BITPIX"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, _ = C.reproject_interp((scaled, WCS(hin)), fits.Header.fromtextfile(tgt), order=1)
        rng = float(np.nanmax(scaled) - np.nanmin(scaled))
        C.compare(chk, ref, data.astype(np.float64), rng, C.TOL_EXACT)
        return chk
    return fn


def degenerate_input_test(ctx, kind):
    """Inputs that are valid but degenerate must run and agree with reproject 0.10,
    not fail or invent values.  'nan': an image with no finite pixel gives an
    all-NaN output for every method, and the footprint reproject gives (0, but the
    covered fraction for exact).  'one': a 1x1 image onto a 32x32 target and onto
    a 1x1 target equals reproject for every order, exact, and adaptive with each
    boundary mode (the 32x32 grid is offset by a fraction of a pixel: on an aligned
    grid adaptive's sample-region edge falls exactly on input pixels, a tie that
    rounding decides)."""
    def fn():
        from reproject import reproject_adaptive, reproject_exact
        chk = C.Check()
        big = C.cel_header("TAN", 32, 32, (10.0, 20.0), 3.6, crpix=(16.3, 15.6))
        one = C.cel_header("TAN", 1, 1, (10.0, 20.0), 3.6, crpix=(1.0, 1.0))
        tgt_big, tgt_one = ctx.path("degen-32.hdr"), ctx.path("degen-1.hdr")
        C.write_hdr(tgt_big, big)
        C.write_hdr(tgt_one, one)
        runs = [("interp", o, ["--order", o]) for o in ORDERS] + [("exact", None, ["--method", "exact"])]
        runs += [("adaptive", m, ["--method", "adaptive", "--boundary-mode", m])
                 for m in ("strict", "ignore", "constant", "nearest")]

        def reference(inp, th, method, opt):
            shape = (th["NAXIS2"], th["NAXIS1"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if method == "interp":
                    return C.reproject_interp(inp, WCS(th), shape_out=shape, order=opt)
                if method == "exact":
                    return reproject_exact(inp, WCS(th), shape_out=shape)
                return reproject_adaptive(inp, WCS(th), shape_out=shape, boundary_mode=opt)

        if kind == "nan":
            inp, img = ctx.path("degen-nan.fits"), np.full((32, 32), np.nan)
            C.write_fits(inp, img, big, np.float32)
            for method, opt, extra in runs:
                out, fpo = ctx.path("degen-nan.out.fits"), ctx.path("degen-nan.fp.fits")
                data, _ = ctx.reproject(inp, tgt_big, out, extra + ["--footprint", fpo])
                fp, _ = read_raw(fpo)
                _, rfp = reference((img, WCS(big)), big, method, opt)
                chk.expect(np.isnan(data).all(), "%s %s: %d finite pixels from an all-NaN input"
                           % (method, opt, int(np.isfinite(data).sum())))
                d = float(np.abs(fp - rfp).max())
                chk.expect(d <= 1e-6, "%s %s: footprint differs from reproject's by %.3g" % (method, opt, d))
            return chk
        inp, img = ctx.path("degen-one.fits"), np.array([[5.0]])
        C.write_fits(inp, img, one, np.float32)
        for tgt, th in ((tgt_big, big), (tgt_one, one)):
            for method, opt, extra in runs:
                out = ctx.path("degen-one.out.fits")
                data, _ = ctx.reproject(inp, tgt, out, extra)
                ref, _ = reference((img, WCS(one)), th, method, opt)
                what = "%s %s onto %dx%d" % (method, opt or "", th["NAXIS1"], th["NAXIS2"])
                chk.expect(data.shape == ref.shape, "%s: shape %s, reproject %s" % (what, data.shape, ref.shape))
                if data.shape != ref.shape:
                    continue
                same_nan = (np.isnan(data) == np.isnan(ref)).all()
                chk.expect(same_nan, "%s: NaN masks differ (%d finite, reproject %d)"
                           % (what, int(np.isfinite(data).sum()), int(np.isfinite(ref).sum())))
                if same_nan and np.isfinite(ref).any():
                    d = float(np.nanmax(np.abs(data.astype(np.float64) - ref)))
                    chk.expect(d <= 1e-5 * 5.0, "%s: max |diff| %.3g against reproject" % (what, d))
        return chk
    return fn


def info_test(ctx, in_dtype, cube=False):
    def fn():
        chk = C.Check()
        nx, ny = 123, 97
        hin = C.cel_header("SIN", nx, ny, (83.63, 22.01), 4.0, frame="icrs")
        img = C.sky_image(ny, nx, 9)
        if cube:
            hin = hin.copy()
            hin["NAXIS"] = 3
            hin["NAXIS3"] = 4
            img = np.stack([img] * 4)
        path = ctx.path("info_%s%s.fits" % (in_dtype, "_cube" if cube else ""))
        C.write_fits(path, img, hin, in_dtype)
        r = ctx.run(["info", path])
        chk.note("exit %d; stdout:" % r.returncode)
        for line in r.stdout.splitlines():
            chk.note("  | " + line)
        if r.stderr.strip():
            chk.note("stderr: " + r.stderr.strip())
        chk.expect(r.returncode == 0, "exit status %d" % r.returncode)
        dims = [nx, ny] + ([4] if cube else [])
        pat = r"\b" + r"\D+".join(str(d) for d in dims) + r"\b"
        chk.expect(re.search(pat, r.stdout) is not None, "shape %s not printed (looked for /%s/)" % (dims, pat))
        chk.expect(in_dtype in r.stdout, "dtype %s not printed" % in_dtype)
        chk.expect("SIN" in r.stdout, "no WCS summary (projection SIN not mentioned)")
        chk.expect(re.search(r"ICRS|RA|equatorial", r.stdout, re.I) is not None, "no celestial frame in the WCS summary")
        return chk
    return fn


def healpix_info_test(ctx):
    """info on HEALPix maps: an implicit full-sky RING map with three vector columns and an
    EXTNAME, an explicit partial NESTED one, and a bad one (exit 1, the reader's message)."""
    def fn():
        chk = C.Check()
        nside = 16
        npix = 12 * nside * nside
        rows = npix // 256
        cols = [fits.Column(name="I_STOKES", format="256E",
                            array=np.arange(npix, dtype="f4").reshape(rows, 256)),
                fits.Column(name="Q_STOKES", format="256D", array=np.zeros((rows, 256))),
                fits.Column(name="HITS", format="256J", array=np.ones((rows, 256), dtype="i4"))]
        t = fits.BinTableHDU.from_columns(cols)
        t.header.update(PIXTYPE="HEALPIX", ORDERING="RING", NSIDE=nside, COORDSYS="G",
                        INDXSCHM="IMPLICIT", FIRSTPIX=0, LASTPIX=npix - 1, EXTNAME="xtension")
        full = ctx.path("hpx_info_full.fits")
        t.writeto(full, overwrite=True)
        pix = np.arange(1000, 1300, dtype="i4")
        t = fits.BinTableHDU.from_columns([fits.Column(name="PIXEL", format="J", array=pix),
                                           fits.Column(name="SIGNAL", format="D",
                                                       array=pix.astype("f8"))])
        t.header.update(PIXTYPE="HEALPIX", ORDERING="NESTED", NSIDE=nside, COORDSYS="C",
                        INDXSCHM="EXPLICIT")
        part = ctx.path("hpx_info_part.fits")
        t.writeto(part, overwrite=True)
        want = {
            full: ["(HEALPix map)", "hdu:   2 ", "EXTNAME = 'xtension'",
                   "NSIDE = 16, ORDERING = RING, COORDSYS = G (Galactic), 3072 pixels",
                   "index: implicit, 3072 pixels held (100% of the sky), first pixel 0, last pixel 3071",
                   "table: 12 rows x 256 values a row", "shape: 3072 ",
                   "field: 0, column 'I_STOKES', TFORM 256E, read as float32",
                   "fields: 3 value columns", "  0: 'I_STOKES' 256E", "  1: 'Q_STOKES' 256D",
                   "  2: 'HITS' 256J"],
            part: ["NSIDE = 16, ORDERING = NESTED, COORDSYS = C (ICRS)",
                   "index: explicit (INDXSCHM = 'EXPLICIT'), 300 pixels held (9.766% of the sky), "
                   "first pixel 1000, last pixel 1299", "pixel column: PIXEL",
                   "table: 300 rows x 1 value a row",
                   "field: 0, column 'SIGNAL', TFORM 1D, read as float64",
                   "fields: 1 value column", "  0: 'SIGNAL' 1D"],
        }
        for path, pats in want.items():
            for args in (["info", path], ["info", path, "--hdu", "2", "--quiet"]):
                r = ctx.run(args)
                chk.expect(r.returncode == 0 and r.stderr == "",
                           "%s: exit %d, stderr %r" % (" ".join(args), r.returncode, r.stderr))
                for p in pats:
                    chk.expect(p in r.stdout, "%s: no %r in\n%s" % (" ".join(args), p, r.stdout))
        with fits.open(full) as hl:
            hl[1].header["ORDERING"] = "SPIRAL"
            hl.writeto(ctx.path("hpx_info_bad.fits"), overwrite=True)
        r = ctx.run(["info", ctx.path("hpx_info_bad.fits")])
        chk.expect(r.returncode == 1 and r.stdout == "" and
                   "ORDERING = 'SPIRAL'; expected RING or NESTED" in r.stderr and
                   "hpx_info_bad.fits" in r.stderr and len(r.stderr.splitlines()) == 1,
                   "bad ORDERING: exit %d, %r %r" % (r.returncode, r.stdout, r.stderr))
        r = ctx.run(["info", full, "--hdu", "1"])
        chk.expect(r.returncode == 1 and "HDU 1 has no image data" in r.stderr,
                   "--hdu 1 (the primary HDU): exit %d, %r" % (r.returncode, r.stderr))
        return chk
    return fn


def fits_target_test(ctx):
    """TARGET given as a FITS file (its header and shape) = the same as the .hdr."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        ref, rh = full_output(ctx, "bilinear", None, None)
        tf = ctx.path("target_as_image.fits")
        h = sc["hout"].copy()
        for k in ("NAXIS", "NAXIS1", "NAXIS2"):
            h.remove(k, ignore_missing=True)
        fits.PrimaryHDU(np.zeros((sc["ny"], sc["nx"]), np.int16), header=h).writeto(tf, overwrite=True)
        got, gh = ctx.reproject(sc["inp"], tf, ctx.path("fits_target.out.fits"), ["--order", "bilinear"])
        if bits_equal(got, ref):
            chk.note("bit-identical to the .hdr target's output")
        else:
            describe_diff(chk, got, ref, "FITS target")
        return chk
    return fn


def fixed_header_test(ctx, kind):
    """Headers astropy's WCS() fixes by default: CUNITi = 'DEG' (unitfix), as input and
    as target; a cube whose CD matrix has no row for its spectral axis (cdfix), as input.
    The output equals that of the header as fixed."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        h = sc["hin"].copy()
        img = C.sky_image(h["NAXIS2"], h["NAXIS1"], 103)
        roles = ("input", "target")
        if kind == "DEG":
            fixed = h.copy()
            h["CUNIT1"], h["CUNIT2"] = "DEG", "Degrees"
            fixed["CUNIT1"], fixed["CUNIT2"] = "deg", "deg"
        else:
            w = WCS(h)
            cd = w.wcs.cd if w.wcs.has_cd() else w.wcs.get_pc() * w.wcs.cdelt[:, None]
            for k in ("CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CROTA2"):
                h.remove(k, ignore_missing=True)
            for i in range(2):
                for j in range(2):
                    h["CD%d_%d" % (i + 1, j + 1)] = float(cd[i, j])
            h["NAXIS"], h["NAXIS3"] = 3, 2
            h["CTYPE3"], h["CRVAL3"], h["CRPIX3"], h["CUNIT3"] = "FREQ", 1.4e9, 1.0, "Hz"
            fixed = h.copy()
            fixed["CD3_3"] = 1.0
            img = np.stack([img, 2 * img])
            roles = ("input",)
        for name, hdr in (("odd", h), ("fixed", fixed)):
            C.write_fits(ctx.path("fix_%s_%s.fits" % (kind, name)), img, hdr, np.float32)
            C.write_hdr(ctx.path("fix_%s_%s.hdr" % (kind, name)), hdr)
        for role in roles:
            outs = []
            for name in ("odd", "fixed"):
                if role == "input":
                    args = (ctx.path("fix_%s_%s.fits" % (kind, name)), sc["tgt"])
                else:
                    args = (sc["inp"], ctx.path("fix_%s_%s.hdr" % (kind, name)))
                outs.append(ctx.reproject(args[0], args[1],
                                          ctx.path("fix_%s_%s_%s.out.fits" % (kind, role, name)))[0])
            finite = int(np.isfinite(outs[1]).sum())
            chk.expect(finite > outs[1].size // 4, "as %s: only %d finite pixels" % (role, finite))
            expect_same(chk, outs[0], outs[1], "as " + role, "bit-identical to the fixed header's output")
        return chk
    return fn


def reorder_compressed(src, dst, how):
    """Copy FITS file `src` to `dst` with the header of its HDU 2 (a tile-compressed
    image) in another legal order: the binary table's mandatory XTENSION..TFIELDS stay
    first; the other cards are rearranged, with ZTENSION/ZPCOUNT/ZGCOUNT added where
    `how` says (astropy's comp.fits has them last)."""
    raw = open(src, "rb").read()

    def ncards(at):            # cards through END of the header starting at `at`
        i = 0
        while raw[at + 80 * i:at + 80 * i + 8] != b"END     ":
            i += 1
        return i + 1

    start = -(-ncards(0) * 80 // 2880) * 2880     # the primary HDU has no data
    n = ncards(start)
    cards = [raw[start + 80 * i:start + 80 * i + 80] for i in range(n)]
    body = [c for c in cards[8:-1] if c.strip()]
    ext = [fits.Card(k, v).image.encode() for k, v in
           (("ZTENSION", "IMAGE"), ("ZPCOUNT", 0), ("ZGCOUNT", 1))]
    if how == "ztension-last":
        body = body + ext
    elif how == "ztension-first":
        body = ext + body
    elif how == "reversed":
        body = body[::-1]
        body = body[:len(body) // 2] + ext[::-1] + body[len(body) // 2:]
    elif how == "wcs-first":
        z = [c for c in body if c[:1] in (b"Z", b"T")]
        body = [c for c in body if c[:1] not in (b"Z", b"T")] + z + ext
    hdr = b"".join(cards[:8] + body) + b"END" + b" " * 77
    hdr += b" " * (-len(hdr) % 2880)
    old = -(-n * 80 // 2880) * 2880
    open(dst, "wb").write(raw[:start] + hdr + raw[start + old:])


def compressed_order_test(ctx):
    """A tile-compressed image whose Z keywords stand in other legal orders (ZTENSION
    last as in astropy's comp.fits, first, reversed, after the WCS) reads as the
    original: `info` and a reprojection bit-identical."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        h, ny, nx = image_header(sc)
        h["EXTNAME"] = "SCI"
        img = C.sky_image(ny, nx, 104).astype(np.float32)
        orig = ctx.path("comp_orig.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img, header=h)]).writeto(orig, overwrite=True)
        ref, _ = ctx.reproject(orig, sc["tgt"], ctx.path("comp_orig.out.fits"))
        info = ctx.run(["info", orig])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(orig) as f:       # quantized: not img itself
                stored = f[1].data.copy()
        for how in ("ztension-last", "ztension-first", "reversed", "wcs-first"):
            path = ctx.path("comp_%s.fits" % how)
            reorder_compressed(orig, path, how)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path) as f:   # astropy reads it as the original
                    chk.expect(np.array_equal(f[1].data, stored), "%s: astropy reads other data" % how)
            r = ctx.run(["info", path])
            chk.expect(r.returncode == 0, "%s: info exited %d: %s" % (how, r.returncode, r.stderr.strip()))
            chk.expect(r.stdout.replace(path, "") == info.stdout.replace(orig, ""),
                       "%s: info differs:\n%s\nvs\n%s" % (how, r.stdout, info.stdout))
            got, _ = ctx.reproject(path, sc["tgt"], ctx.path("comp_%s.out.fits" % how))
            expect_same(chk, got, ref, how, "bit-identical to the original order's output")
        return chk
    return fn


def hdu_test(ctx):
    """An image in extension 1 (empty primary): default HDU and --hdu 2 both find it."""
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        ref, _ = ctx.reproject(b["good"], b["tgt"], ctx.path("hdu_single.out.fits"))
        for label, extra in (("default --hdu", []), ("--hdu 2", ["--hdu", "2"])):
            got, _ = ctx.reproject(b["mef"], b["tgt"], ctx.path("hdu_mef.out.fits"), extra)
            expect_same(chk, got, ref, label, "bit-identical to the single-HDU file's output")
        return chk
    return fn


def image_header(sc):
    """The main scenario's input header without NAXISn (astropy sets them), and (ny, nx)."""
    h = sc["hin"].copy()
    for k in ("NAXIS", "NAXIS1", "NAXIS2"):
        h.remove(k, ignore_missing=True)
    return h, sc["hin"]["NAXIS2"], sc["hin"]["NAXIS1"]


def hdu_name_test(ctx):
    """--hdu by EXTNAME and EXTVER (case aside), plain and tile-compressed extensions,
    against the same HDUs by number; a name no HDU has lists the names there are."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        h, ny, nx = image_header(sc)
        imgs = [C.sky_image(ny, nx, 110 + k).astype(np.float32) for k in range(3)]
        hdus = [fits.PrimaryHDU()]
        for name, ver, img in (("SCI", 1, imgs[0]), ("ERR", 1, imgs[1]), ("SCI", 2, imgs[2])):
            hh = h.copy()
            hh["EXTNAME"], hh["EXTVER"] = name, ver
            hdus.append(fits.ImageHDU(img, header=hh))
        hc = h.copy()
        hc["EXTNAME"] = "CSCI"
        hdus.append(fits.CompImageHDU((imgs[0] * 100).astype(np.int16), header=hc))
        mef = ctx.path("names.fits")
        fits.HDUList(hdus).writeto(mef, overwrite=True)
        for by_name, by_number in (("SCI", "2"), ("sci,1", "2"), ("SCI,2", "4"), ("ERR", "3"),
                                   ("CSCI", "5")):
            a, _ = ctx.reproject(mef, sc["tgt"], ctx.path("names_%s.out.fits" % by_name.replace(",", "_")),
                                 ["--hdu", by_name])
            b, _ = ctx.reproject(mef, sc["tgt"], ctx.path("names_%s.out.fits" % by_number), ["--hdu", by_number])
            expect_same(chk, a, b, "--hdu %s" % by_name, "bit-identical to --hdu %s" % by_number)
        r = ctx.run(["info", mef, "--hdu", "SCI,2"])
        chk.expect(r.returncode == 0 and "hdu:   4" in r.stdout and "EXTNAME = 'SCI', EXTVER = 2" in r.stdout,
                   "info --hdu SCI,2: %s %s" % (r.stdout, r.stderr))
        for bad, pat in (("NOPE", "no HDU with EXTNAME = 'NOPE'; its named HDUs: 2 'SCI', 3 'ERR', 4 'SCI', 5 'CSCI'"),
                         ("ERR,2", "no HDU with EXTNAME = 'ERR' and EXTVER = 2"),
                         ("SCI,0", "expected EXTNAME,EXTVER with EXTVER >= 1")):
            r = ctx.run(["info", mef, "--hdu", bad])
            chk.expect(r.returncode != 0 and pat in r.stderr, "--hdu %s: exit %d, %r" % (bad, r.returncode, r.stderr))
        return chk
    return fn


def stored_type_test(ctx):
    """info shows the stored BITPIX, the scaling and the dtype it is read as; gzip
    (.fits.gz) and tile-compressed (.fz) files read as the plain file."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        h, ny, nx = image_header(sc)
        raw16 = (C.sky_image(ny, nx, 120) * 1000).astype(np.int16)
        raw16[5, 7] = -32768
        plain = ctx.path("stored16.fits")
        hdu = fits.PrimaryHDU(raw16, header=h)
        hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 100.0, -32768
        hdu.writeto(plain, overwrite=True)
        with open(plain, "rb") as f, gzip.open(plain + ".gz", "wb") as g:
            g.write(f.read())
        fz = ctx.path("stored16.fz")
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw16, header=hdu.header.copy())]).writeto(fz, overwrite=True)
        want = {plain: ["BITPIX = 16 (int16)", "BSCALE = 0.5, BZERO = 100, BLANK = -32768", "dtype: float32"],
                plain + ".gz": ["BITPIX = 16 (int16), gzip file", "BSCALE = 0.5", "dtype: float32"],
                fz: ["BITPIX = 16 (int16), tile-compressed RICE_1", "dtype: float32"]}
        ref, _ = ctx.reproject(plain, sc["tgt"], ctx.path("stored16.out.fits"))
        chk.expect(np.isfinite(ref).sum() > ref.size // 4, "the plain file's output is mostly NaN")
        for path, pats in want.items():
            r = ctx.run(["info", path])
            for p in pats:
                chk.expect(p in r.stdout, "info %s: no %r in %r %r" % (os.path.basename(path), p, r.stdout, r.stderr))
            if path != plain:
                got, _ = ctx.reproject(path, sc["tgt"], ctx.path(os.path.basename(path) + ".out.fits"))
                expect_same(chk, got, ref, os.path.basename(path), "bit-identical to the plain file's output")
        p32 = ctx.path("stored32.fits")
        fits.PrimaryHDU(raw16.astype(np.int32), header=h).writeto(p32, overwrite=True)
        r = ctx.run(["info", p32])
        chk.expect("BITPIX = 32 (int32)" in r.stdout and "dtype: float64" in r.stdout,
                   "int32 image: %r" % r.stdout)
        return chk
    return fn


def quiet_test(ctx):
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        out = ctx.path("quiet.out.fits")
        r = ctx.run(["reproject", b["good"], "--target", b["tgt"], "-o", out, "--quiet"])
        chk.note("--quiet: exit %d, stdout %r, stderr %r" % (r.returncode, r.stdout, r.stderr))
        chk.expect(r.returncode == 0, "exit %d" % r.returncode)
        chk.expect(r.stdout == "" and r.stderr == "", "--quiet printed something")
        os.unlink(out)
        r = ctx.run(["reproject", b["good"], "--target", b["tgt"], "-o", out])
        chk.note("default: exit %d, stdout %r, stderr %r" % (r.returncode, r.stdout, r.stderr))
        chk.expect(r.returncode == 0, "exit %d" % r.returncode)
        chk.expect("\r" not in r.stderr, "a progress bar was drawn on a non-terminal stderr")
        return chk
    return fn


def drizzle_cli_test(ctx):
    """reproject IN... --method drizzle: --region is the slice of the whole output (CRPIX
    shifted) for science, weight and context; -j 1, -j 2 and --block 37x29 write the same
    bytes; --quiet prints nothing; 33 inputs make a context cube of two planes; blot
    likewise for --region and -j."""
    def fn():
        chk = C.Check()
        d = ctx.path("drizzle-cli")
        os.makedirs(d, exist_ok=True)
        ins = []
        for k in range(3):
            h = C.cel_header("TAN", 90, 70, (10.0 + 0.003 * k, 10.0 - 0.002 * k), 2.0, rot_deg=9.0 * k)
            p = os.path.join(d, "in%d.fits" % k)
            C.write_fits(p, C.sky_image(70, 90, 5 + k), h, np.float32)
            ins.append(p)
        tgt = os.path.join(d, "tgt.hdr")
        C.write_hdr(tgt, C.cel_header("TAN", 130, 110, (10.003, 9.998), 1.7, rot_deg=3.0))
        outs = {}
        for tag, extra in (("j1", ["-j", "1"]), ("j2", ["-j", "2"]), ("blk", ["--block", "37x29"]),
                           ("reg", ["--region", "21:90,11:75"])):
            paths = [os.path.join(d, "%s-%s.fits" % (tag, w)) for w in ("sci", "wht", "ctx")]
            r = ctx.run(["reproject"] + ins + ["--method", "drizzle", "--kernel", "turbo",
                                               "--pixfrac", "0.7", "--target", tgt, "-o", paths[0],
                                               "--weight-out", paths[1], "--context-out", paths[2],
                                               "--quiet"] + extra)
            chk.expect(r.returncode == 0 and r.stdout == "" and r.stderr == "",
                       "%s: exit %d, output %r %r" % (tag, r.returncode, r.stdout, r.stderr))
            outs[tag] = paths
        for w in range(3):
            full, hfull = read_raw(outs["j1"][w])
            for tag in ("j2", "blk"):
                chk.expect(read_raw(outs[tag][w])[0].tobytes() == full.tobytes(),
                           "%s plane %d differs from -j 1" % (tag, w))
            part, hpart = read_raw(outs["reg"][w])
            chk.expect(bits_equal(part, full[10:75, 20:90]), "--region plane %d is not the slice" % w)
            chk.expect(abs(hpart["CRPIX1"] - (hfull["CRPIX1"] - 20)) < 1e-9 and
                       abs(hpart["CRPIX2"] - (hfull["CRPIX2"] - 10)) < 1e-9, "CRPIX not shifted")
        wht = read_raw(outs["j1"][1])[0]
        chk.expect(np.sum(wht > 0) > 5000, "the drizzled inputs cover %d pixels" % np.sum(wht > 0))
        # 33 inputs: two context planes, a cube.
        many = ins * 11
        cpath = os.path.join(d, "ctx33.fits")
        r = ctx.run(["reproject"] + many + ["--method", "drizzle", "--target", tgt, "-o",
                                            os.path.join(d, "sci33.fits"), "--context-out", cpath,
                                            "--quiet"])
        chk.expect(r.returncode == 0, "33 inputs: exit %d: %s" % (r.returncode, r.stderr))
        if r.returncode == 0:
            c = fits.getdata(cpath)
            chk.expect(c.shape == (2, 110, 130), "context cube shape %s" % (c.shape,))
            # Input 32 (in2 again) is plane 1's bit 0, set where input 2 set plane 0's bit 2.
            c0, c1 = c[0].astype(np.int64), c[1].astype(np.int64)
            chk.expect(np.array_equal(c1, (c0 >> 2) & 1) and np.sum(c1) > 1000,
                       "plane 1 is not input 2's bit again")
        # blot back onto the first input's grid.
        bl = {}
        for tag, extra in (("j1", ["-j", "1"]), ("j2", ["-j", "2", "--block", "23x31"]),
                           ("reg", ["--region", "5:60,7:50"])):
            bl[tag] = os.path.join(d, "blot-%s.fits" % tag)
            r = ctx.run(["blot", outs["j1"][0], "--target", ins[0], "-o", bl[tag], "--quiet",
                         "--interp", "poly3"] + extra)
            chk.expect(r.returncode == 0 and r.stderr == "", "blot %s: exit %d %r" % (tag, r.returncode, r.stderr))
        if all(os.path.exists(p) for p in bl.values()):
            b1 = read_raw(bl["j1"])[0]
            chk.expect(read_raw(bl["j2"])[0].tobytes() == b1.tobytes(), "blot -j 2 differs")
            chk.expect(bits_equal(read_raw(bl["reg"])[0], b1[6:50, 4:60]), "blot --region differs")
        return chk
    return fn


def drizzle_weights_cli_test(ctx):
    """reproject --method drizzle with SWarp's weights and DQ masks: --weight-type MAP_RMS,
    --dq with --dq-bits, --variance-out, --rms-out and --dq-out; -j 2 and --block write the
    same bytes as -j 1 and --region the slice, for every output; --rms-out is the square root
    of --variance-out; the output DQ holds only the bits not flagged; MAP_RMS rms equals
    MAP_WEIGHT 1/rms^2 and MAP_VARIANCE rms^2."""
    def fn():
        chk = C.Check()
        d = ctx.path("drizzle-weights-cli")
        os.makedirs(d, exist_ok=True)
        ins, rms, wts, vrs, dqs = [], [], [], [], []
        for k in range(2):
            h = C.cel_header("TAN", 90, 70, (10.0 + 0.003 * k, 10.0 - 0.002 * k), 2.0, rot_deg=9.0 * k)
            p = os.path.join(d, "in%d.fits" % k)
            C.write_fits(p, C.sky_image(70, 90, 11 + k), h, np.float32)
            ins.append(p)
            r = (0.5 + 0.01 * np.arange(90)[None, :] + 0.02 * np.arange(70)[:, None] + 0.3 * k)
            for lst, name, a in ((rms, "rms", r), (wts, "wht", 1.0 / r ** 2), (vrs, "var", r ** 2)):
                lst.append(os.path.join(d, "%s%d.fits" % (name, k)))
                C.write_fits(lst[-1], a, h, np.float64)
            q = np.zeros((70, 90), np.int32)
            q.flat[k::13] = 4
            q.flat[k::7] |= 1
            dqs.append(os.path.join(d, "dq%d.fits" % k))
            fits.writeto(dqs[-1], q, h, overwrite=True)
        tgt = os.path.join(d, "tgt.hdr")
        C.write_hdr(tgt, C.cel_header("TAN", 130, 110, (10.003, 9.998), 1.7, rot_deg=3.0))
        names = ("sci", "wht", "var", "rms", "dq")
        outs = {}
        for tag, kind, maps, extra in (
                ("j1", "MAP_RMS", rms, ["-j", "1"]), ("j2", "MAP_RMS", rms, ["-j", "2"]),
                ("blk", "MAP_RMS", rms, ["--block", "37x29"]),
                ("reg", "MAP_RMS", rms, ["--region", "21:90,11:75"]),
                ("wt", "MAP_WEIGHT", wts, []), ("vr", "MAP_VARIANCE", vrs, [])):
            paths = [os.path.join(d, "%s-%s.fits" % (tag, w)) for w in names]
            args = ["reproject"] + ins + ["--method", "drizzle", "--pixfrac", "0.8", "--target", tgt,
                                          "-o", paths[0], "--weight-out", paths[1], "--variance-out",
                                          paths[2], "--rms-out", paths[3], "--dq-out", paths[4],
                                          "--weight-type", kind, "--dq-bits", "4", "--quiet"]
            for m, q in zip(maps, dqs):
                args += ["--weight", m, "--dq", q]
            r = ctx.run(args + extra)
            chk.expect(r.returncode == 0 and r.stdout == "" and r.stderr == "",
                       "%s: exit %d, output %r %r" % (tag, r.returncode, r.stdout, r.stderr))
            outs[tag] = paths
        if chk.failed:
            return chk
        for w in range(len(names)):
            full, hfull = read_raw(outs["j1"][w])
            for tag in ("j2", "blk"):
                chk.expect(read_raw(outs[tag][w])[0].tobytes() == full.tobytes(),
                           "%s %s differs from -j 1" % (tag, names[w]))
            part = read_raw(outs["reg"][w])[0]
            chk.expect(bits_equal(part, full[10:75, 20:90]), "--region %s is not the slice" % names[w])
        sci, wht, var, rmso, dq = (fits.getdata(p).astype(np.float64) for p in outs["j1"])
        seen = wht > 0
        chk.expect(np.sum(seen) > 5000, "the drizzled inputs cover %d pixels" % np.sum(seen))
        chk.expect(np.all(np.isfinite(var[seen]) & (var[seen] > 0)) and np.all(np.isnan(var[~seen])),
                   "variance not finite and positive exactly where drops landed")
        chk.expect(np.allclose(rmso[seen], np.sqrt(var[seen]), rtol=1e-6), "--rms-out is not sqrt(var)")
        words = dq.astype(np.int64)
        chk.expect(np.all(words & ~1 == 0) and np.sum(words == 1) > 500,
                   "DQ out holds flagged bits or too few unflagged ones: %s" % np.unique(words))
        for tag in ("wt", "vr"):
            for w in (0, 1, 2):
                a, b = fits.getdata(outs["j1"][w]), fits.getdata(outs[tag][w])
                chk.expect(np.allclose(b[seen], a[seen], rtol=2e-6, atol=0),
                           "%s %s differs from MAP_RMS by %g" %
                           (tag, names[w], np.max(np.abs(b[seen] - a[seen]) / np.abs(a[seen]))))
        return chk
    return fn


def cube_region_test(ctx):
    """A 3-plane cube with a 2-D target: NAXIS3 kept; a region is the slice of every plane."""
    def fn():
        chk = C.Check()

        def make():
            nx, ny, nz = 150, 140, 3
            hin = C.cel_header("TAN", nx, ny, (210.8, 54.35), 3.0)
            full = hin.copy()
            full["NAXIS"] = 3
            full["NAXIS3"] = nz
            full["CTYPE3"] = "FREQ"
            full["CUNIT3"] = "Hz"
            full["CRVAL3"] = 1.4204e9
            full["CDELT3"] = 1.0e5
            full["CRPIX3"] = 1.0
            data = np.stack([C.punch_nan_holes(C.sky_image(ny, nx, 60 + k), 61 + k) for k in range(nz)])
            inp, tgt = ctx.path("cube.fits"), ctx.path("cube.hdr")
            C.write_fits(inp, data, full, np.float32)
            C.write_hdr(tgt, C.cel_header("TAN", 130, 120, (210.8 + 0.003, 54.35), 3.3, rot_deg=-19.0))
            return inp, tgt
        inp, tgt = ctx.memo("cube", make)
        fp = ctx.path("cube.fp.fits")
        a, ah = ctx.reproject(inp, tgt, ctx.path("cube.out.fits"), ["--order", "bicubic", "--block", "40x30",
                                                                     "--footprint", fp])
        chk.expect(ah.get("NAXIS") == 3 and ah.get("NAXIS3") == 3 and a.shape == (3, 120, 130),
                   "output NAXIS %s shape %s, expected 3 planes of 130 x 120" % (ah.get("NAXIS"), a.shape))
        f, _ = read_raw(fp)
        chk.expect(f.shape == a.shape, "footprint shape %s, output %s" % (f.shape, a.shape))
        if f.shape == a.shape:
            nbad = int((f.astype(float) != np.isfinite(a.astype(float))).sum())
            chk.expect(nbad == 0, "cube footprint differs from isfinite(output) at %d pixels" % nbad)
        region = "21:90,35:101"
        b, bh = ctx.reproject(inp, tgt, ctx.path("cube.region.fits"), ["--order", "bicubic", "--region", region])
        want = a[:, 34:101, 20:90]
        if bits_equal(b, want):
            chk.note("region %s bit-identical to the slice of all 3 planes" % region)
        else:
            describe_diff(chk, b, want, "cube region %s" % region)
        return chk
    return fn


# ---------------------------------------------------------------------------
# Bad-input catalogue

def bad_inputs(ctx):
    """Files for the catalogue, made once."""
    def make():
        d = ctx.path("bad")
        os.makedirs(d, exist_ok=True)
        nx, ny = 100, 100
        hin = C.cel_header("TAN", nx, ny, (10.0, 10.0), 2.0)
        img = C.sky_image(ny, nx, 3)
        good = os.path.join(d, "good.fits")
        C.write_fits(good, img, hin, np.float32)
        tgt = os.path.join(d, "target.hdr")
        C.write_hdr(tgt, C.cel_header("TAN", 100, 100, (10.0, 10.0), 2.1, rot_deg=5.0))
        text = os.path.join(d, "notfits.fits")
        with open(text, "w") as f:
            f.write("This is a plain text file, not FITS.\n" * 20)
        # truncated: header + half of the data
        trunc = os.path.join(d, "cut.fits")
        big = C.sky_image(400, 400, 4)
        C.write_fits(trunc, big, C.cel_header("TAN", 400, 400, (10.0, 10.0), 0.5), np.float32)
        with fits.open(trunc) as hl:
            datloc = hl[0].fileinfo()["datLoc"]
        size = os.path.getsize(trunc)
        with open(trunc, "r+b") as f:
            f.truncate(datloc + (size - datloc) // 2)
        nowcs = os.path.join(d, "nowcs.fits")
        fits.PrimaryHDU(img.astype(np.float32)).writeto(nowcs, overwrite=True)
        xyz = os.path.join(d, "badproj.fits")
        hx = hin.copy()
        hx["CTYPE1"] = "RA---XYZ"
        hx["CTYPE2"] = "DEC--XYZ"
        C.write_fits(xyz, img, hx, np.float32)
        non2 = os.path.join(d, "noshape.hdr")
        h2 = C.cel_header("TAN", 100, 100, (10.0, 10.0), 2.1)
        del h2["NAXIS2"]
        C.write_hdr(non2, h2)
        mef = os.path.join(d, "mef.fits")
        h = hin.copy()
        for k in ("NAXIS", "NAXIS1", "NAXIS2"):
            h.remove(k, ignore_missing=True)
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(img.astype(np.float32), header=h, name="SCI")]).writeto(mef, overwrite=True)
        # Truncated files of every BITPIX (header whole, data cut).
        cut = {}
        for bp, dt in ((8, np.uint8), (16, ">i2"), (32, ">i4"), (64, ">i8"), (-64, ">f8")):
            p = os.path.join(d, "cut%d%s.fits" % (abs(bp), "f" if bp < 0 else ""))
            fits.PrimaryHDU((big * 10).astype(dt), header=C.cel_header("TAN", 400, 400, (10.0, 10.0), 0.5)).writeto(p, overwrite=True)
            with fits.open(p) as hl:
                loc = hl[0].fileinfo()["datLoc"]
            with open(p, "r+b") as f:
                f.truncate(loc + 2880)
            cut[bp] = p
        # A zero-length axis, an absurd NAXIS, a singular CD matrix, a target
        # with its shape but no WCS.
        zero = os.path.join(d, "zero.hdr")
        hz = C.cel_header("TAN", 100, 100, (10.0, 10.0), 2.1)
        hz["NAXIS1"] = 0
        C.write_hdr(zero, hz)
        absurd = os.path.join(d, "absurd.hdr")
        with open(absurd, "w") as f:
            f.write("NAXIS   = 1000\nNAXIS1  = 10\nNAXIS2  = 10\nCTYPE1  = 'RA---TAN'\n"
                    "CTYPE2  = 'DEC--TAN'\n")
        sing = os.path.join(d, "singular.hdr")
        hs = C.cel_header("TAN", 100, 100, (10.0, 10.0), 2.1, use_cd=True)
        hs["CD1_1"], hs["CD1_2"], hs["CD2_1"], hs["CD2_2"] = 1e-3, 2e-3, 2e-3, 4e-3
        C.write_hdr(sing, hs)
        shapeonly = os.path.join(d, "shapeonly.hdr")
        with open(shapeonly, "w") as f:
            f.write("NAXIS   = 2\nNAXIS1  = 100\nNAXIS2  = 100\n")
        # CTYPE1 with an undefined value (legal FITS): wcslib echoed such cards to stdout.
        undef = os.path.join(d, "undefined.hdr")
        with open(undef, "w") as f:
            f.write("NAXIS   = 2\nNAXIS1  = 100\nNAXIS2  = 100\nCTYPE1 =\nCTYPE2  =\n")
        # A gzip file whose trailer claims 4 GiB (cfitsio would allocate it).
        gzbad = os.path.join(d, "damaged.fits.gz")
        with open(good, "rb") as f:
            raw = gzip.compress(f.read())
        with open(gzbad, "wb") as f:
            f.write(raw[:-4] + b"\xff\xff\xff\xff")
        # A 20 KB file declaring 2^31 x 2^31 float32 pixels (its size arithmetic
        # overflowed), a file with NAXIS = 999 (cfitsio crashed opening it) and a
        # target of 2^40 x 2^40 pixels.
        def raw_fits(path, cards, nbytes):
            text = "".join(("%-8s= %20s" % kv).ljust(80) for kv in cards) + "END".ljust(80)
            text += " " * (-len(text) % 2880)
            with open(path, "wb") as f:
                f.write(text.encode() + b"\0" * nbytes)
        wcs_cards = [(k, str(v) if not isinstance(v, str) else "'%s'" % v)
                     for k, v in hin.items() if k.startswith(("CTYPE", "CRVAL", "CRPIX", "CDELT"))]
        huge = os.path.join(d, "huge.fits")
        raw_fits(huge, [("SIMPLE", "T"), ("BITPIX", "-32"), ("NAXIS", "2"), ("NAXIS1", str(2**31)),
                        ("NAXIS2", str(2**31))] + wcs_cards, 17280)
        axes999 = os.path.join(d, "axes999.fits")
        raw_fits(axes999, [("SIMPLE", "T"), ("BITPIX", "-32"), ("NAXIS", "999")] +
                 [("NAXIS%d" % (a + 1), "1") for a in range(999)], 2880)
        hugetgt = os.path.join(d, "huge.hdr")
        hh = C.cel_header("TAN", 100, 100, (10.0, 10.0), 2.1)
        hh["NAXIS1"] = hh["NAXIS2"] = 2**40
        C.write_hdr(hugetgt, hh)
        # A 10^6 x 10^6 target: a 4 TB float32 output, more than any test disk holds.
        huge4tb = os.path.join(d, "huge4tb.hdr")
        C.write_hdr(huge4tb, C.cel_header("TAN", 10 ** 6, 10 ** 6, (10.0, 10.0), 2.1))
        # Bad numbers in the target (issue 16): each a copy of target.hdr with one card
        # changed (astropy refuses to write NaN, so the text is edited).
        with open(tgt) as f:
            tlines = f.read().splitlines()
        badnum = {}
        for name, kw, val in (("crvalnan", "CRVAL1", "nan"), ("crvalinf", "CRVAL1", "1e400"),
                              ("crpixfar", "CRPIX1", "1e300"), ("cdeltzero", "CDELT2", "0")):
            i = next(k for k, line in enumerate(tlines) if line.startswith(kw + " "))
            badnum[name] = os.path.join(d, name + ".hdr")
            with open(badnum[name], "w") as f:
                f.write("\n".join(tlines[:i] + ["%-8s= %s" % (kw, val)] + tlines[i + 1:]) + "\n")
        # ... and in an input's header: CRVAL1 = 1e400 written over the card.
        badnum["input"] = os.path.join(d, "crvalinf.fits")
        with open(good, "rb") as f:
            raw = bytearray(f.read())
        i = raw.index(b"CRVAL1  =")
        raw[i:i + 80] = b"%-80s" % b"CRVAL1  = 1e400"
        with open(badnum["input"], "wb") as f:
            f.write(raw)
        # A symbolic link to the input, and a hard link named like a PNG (outputs that are inputs).
        good_link = os.path.join(d, "good-link.fits")
        os.symlink("good.fits", good_link)
        good_png = os.path.join(d, "good-as.png")
        os.link(good, good_png)
        small = os.path.join(d, "small.fits")   # a weight map of the wrong shape (drizzle)
        C.write_fits(small, img[:40, :50], C.cel_header("TAN", 50, 40, (10.0, 10.0), 2.0), np.float32)
        return dict(dir=d, good=good, small=small, good_link=good_link, good_png=good_png, tgt=tgt, text=text, trunc=trunc, nowcs=nowcs, xyz=xyz, non2=non2,
                    mef=mef, cut=cut, zero=zero, absurd=absurd, sing=sing, shapeonly=shapeonly, undef=undef,
                    gzbad=gzbad, huge=huge, axes999=axes999, hugetgt=hugetgt, huge4tb=huge4tb,
                    badnum=badnum)
    return ctx.memo("bad", make)


# Each case: (name, args builder, expected exit, regexes that stderr must all match).
# The comment above each case records the stderr observed from the CLI at the time of
# writing (paths under the work directory shortened to bad/ and badrun-*/).
def bad_cases():
    g = lambda b, o, *more: ["reproject", b["good"], "--target", b["tgt"], "-o", o] + list(more)  # noqa: E731
    return [
        # tessera: fits: cannot open "bad/missing.fits": No such file or directory
        ("missing input file",
         lambda b, o: ["reproject", os.path.join(b["dir"], "missing.fits"), "--target", b["tgt"], "-o", o],
         1, [r"missing\.fits", r"(?i)no such file"]),
        # tessera: fits: "bad/notfits.fits" is not a FITS file (it does not begin with "SIMPLE  =")
        ("input not FITS (a text file)",
         lambda b, o: ["reproject", b["text"], "--target", b["tgt"], "-o", o],
         1, [r"notfits\.fits", r"(?i)not a FITS file"]),
        # tessera: fits: "bad/cut.fits" is truncated: HDU 1 needs 640000 bytes of data ending at
        # byte 642880, the file ends after 324000
        ("truncated FITS input (cut in the middle of its data)",
         lambda b, o: ["reproject", b["trunc"], "--target", b["tgt"], "-o", o],
         1, [r"cut\.fits", r"(?i)truncated|end of file|ends after"]),
        # tessera: fits: "bad/damaged.fits.gz" is a damaged gzip file: its trailer claims
        # 4294967295 bytes inflated from 30012 (deflate expands at most 1032 to 1)
        ("gzip input with a damaged trailer",
         lambda b, o: ["reproject", b["gzbad"], "--target", b["tgt"], "-o", o],
         1, [r"damaged\.fits\.gz", r"damaged gzip file: its trailer claims 4294967295 bytes",
             r"deflate expands at most 1032 to 1"]),
        # tessera: reproject_interp: input fits#1("nowcs.fits") has no WCS
        ("input without WCS",
         lambda b, o: ["reproject", b["nowcs"], "--target", b["tgt"], "-o", o],
         1, [r"nowcs\.fits", r"(?i)no (celestial )?WCS"]),
        # tessera: fits: "bad/badproj.fits" HDU 1: wcslib: Unrecognized projection code (XYZ in
        # CTYPE1); the header has CTYPE1 = 'RA---XYZ'; expected a FITS projection code (TAN, SIN, ...)
        ("unknown projection CTYPE1='RA---XYZ'",
         lambda b, o: ["reproject", b["xyz"], "--target", b["tgt"], "-o", o],
         1, [r"badproj\.fits", r"XYZ", r"(?i)projection"]),
        # tessera: target "bad/noshape.hdr": NAXIS2 missing; a target header needs NAXIS and NAXISn
        # (the output shape)
        ("target .hdr without NAXIS2",
         lambda b, o: ["reproject", b["good"], "--target", b["non2"], "-o", o],
         1, [r"noshape\.hdr", r"NAXIS2"]),
        # tessera: target "bad/nope.hdr": cannot open: No such file or directory
        ("missing target file",
         lambda b, o: ["reproject", b["good"], "--target", os.path.join(b["dir"], "nope.hdr"), "-o", o],
         1, [r"nope\.hdr", r"(?i)no such file"]),
        # tessera: --region 1:10,5000:5010 is outside the output, which is 100 x 100; expected
        # 1 <= X1 <= X2 <= 100 and 1 <= Y1 <= Y2 <= 100
        # (an earlier build said "compute: region [0:10, 4999:5010] is outside reproject_interp#2,
        # whose extent is [0:100, 0:100]", naming neither --region nor what the user typed)
        ("--region 1:10,5000:5010 outside a 100x100 output",
         lambda b, o: g(b, o, "--region", "1:10,5000:5010"),
         1, [r"--region", r"(?i)outside"]),
        # tessera: --region 10:5,1:10 is empty: expected X1 <= X2 and Y1 <= Y2 (see 'tessera help')
        # (the argument alone says so: a usage error, exit 2)
        ("zero-size --region 10:5,1:10",
         lambda b, o: g(b, o, "--region", "10:5,1:10"),
         2, [r"--region", r"(?i)empty|zero"]),
        # tessera: reproject: -o '.../good.fits' is INPUT ('.../good.fits'); expected a path that
        # is not an input
        ("-o naming the input itself",
         lambda b, o: ["reproject", b["good"], "--target", b["tgt"], "-o", b["good"]],
         2, [r"good\.fits", r"is INPUT"]),
        ("-o naming the input through a symbolic link",
         lambda b, o: ["reproject", b["good"], "--target", b["tgt"], "-o", b["good_link"]],
         2, [r"good-link\.fits", r"is INPUT"]),
        ("--footprint naming the target",
         lambda b, o: g(b, o, "--footprint", b["tgt"]),
         2, [r"--footprint", r"is TARGET"]),
        ("-o and --footprint naming the same file",
         lambda b, o: g(b, o, "--footprint", o),
         2, [r"-o and --footprint name the same file"]),
        ("preview -o not ending in .png",
         lambda b, o: ["preview", b["good"], "-o", o.replace(".fits", ".jpg")],
         2, [r"\.jpg", r"(?i)expected a file name ending in \.png"]),
        ("preview -o naming its input",
         lambda b, o: ["preview", b["good_png"], "-o", b["good_png"]],
         2, [r"is the input itself"]),
        ("demo with an unknown option (never taken for a directory)",
         lambda b, o: ["demo", "--frobnicate"],
         2, [r"demo: unknown option '--frobnicate'"]),
        ("sample with two directories",
         lambda b, o: ["sample", "a", "b"],
         2, [r"sample: unexpected argument 'b'"]),
        ("help of an unknown command",
         lambda b, o: ["help", "frobnicate"],
         2, [r"help: unknown command 'frobnicate'"]),
        # tessera: fits: cannot create "/nonexistent-dir/x.fits": No such file or directory
        ("unwritable output path -o /nonexistent-dir/x.fits",
         lambda b, o: ["reproject", b["good"], "--target", b["tgt"], "-o", "/nonexistent-dir/x.fits"],
         1, [r"/nonexistent-dir/x\.fits", r"(?i)no such file|cannot create"]),
        # tessera: reproject: unknown option '--frobnicate' (see 'tessera help')
        ("unknown option --frobnicate",
         lambda b, o: g(b, o, "--frobnicate"),
         2, [r"--frobnicate", r"(?i)unknown option"]),
        # tessera: reproject: missing -o OUT (see 'tessera help')
        ("missing -o",
         lambda b, o: ["reproject", b["good"], "--target", b["tgt"]],
         2, [r"-o\b", r"(?i)missing"]),
        # tessera: --order 'trilinear': expected nearest-neighbor, bilinear, biquadratic or bicubic
        # (see 'tessera help')
        ("bad --order value trilinear",
         lambda b, o: g(b, o, "--order", "trilinear"),
         2, [r"--order", r"trilinear"]),
        # tessera: reproject: --order 'lanczos5': expected nearest-neighbor, ..., lanczos3 or lanczos4
        ("bad --order value lanczos5",
         lambda b, o: g(b, o, "--order", "lanczos5"),
         2, [r"--order", r"'lanczos5'", r"lanczos2", r"lanczos4"]),
        # tessera: --block '0x5': expected WxH with 1 <= W, H <= 1048576 (see 'tessera help')
        ("bad --block value 0x5",
         lambda b, o: g(b, o, "--block", "0x5"),
         2, [r"--block", r"0x5"]),
        # --method adaptive options (usage errors name the option and the accepted values)
        ("bad --method value bicubic",
         lambda b, o: g(b, o, "--method", "bicubic"),
         2, [r"--method", r"bicubic", r"adaptive"]),
        ("bad --kernel value lanczos",
         lambda b, o: g(b, o, "--method", "adaptive", "--kernel", "lanczos"),
         2, [r"--kernel", r"lanczos", r"gaussian", r"hann"]),
        ("bad --boundary-mode value wrap",
         lambda b, o: g(b, o, "--method", "adaptive", "--boundary-mode", "wrap"),
         2, [r"--boundary-mode", r"wrap", r"grid-constant", r"ignore_threshold", r"nearest"]),
        ("bad --bad-value-mode value zero",
         lambda b, o: g(b, o, "--method", "adaptive", "--bad-value-mode", "zero"),
         2, [r"--bad-value-mode", r"zero", r"strict", r"ignore", r"constant"]),
        ("--kernel-width 0 out of range",
         lambda b, o: g(b, o, "--method", "adaptive", "--kernel-width", "0"),
         2, [r"--kernel-width", r"\(0, 100\]"]),
        ("--sample-region-width abc",
         lambda b, o: g(b, o, "--method", "adaptive", "--sample-region-width", "abc"),
         2, [r"--sample-region-width", r"abc"]),
        ("--boundary-ignore-threshold 1.5 out of range",
         lambda b, o: g(b, o, "--method", "adaptive", "--boundary-ignore-threshold", "1.5"),
         2, [r"--boundary-ignore-threshold", r"\[0, 1\]"]),
        ("--boundary-fill-value nan",
         lambda b, o: g(b, o, "--method", "adaptive", "--boundary-fill-value", "nan"),
         2, [r"--boundary-fill-value", r"(?i)finite"]),
        ("--bad-fill-value missing its value",
         lambda b, o: g(b, o, "--method", "adaptive", "--bad-fill-value"),
         2, [r"--bad-fill-value", r"(?i)needs a value"]),
        ("adaptive option --kernel with --method interp",
         lambda b, o: g(b, o, "--kernel", "hann"),
         2, [r"--kernel", r"(?i)adaptive only"]),
        ("adaptive option --conserve-flux without --method",
         lambda b, o: g(b, o, "--conserve-flux"),
         2, [r"--conserve-flux", r"(?i)adaptive only"]),
        ("interp option --order with --method adaptive",
         lambda b, o: g(b, o, "--method", "adaptive", "--order", "bicubic"),
         2, [r"--order", r"(?i)interp only"]),
        # --method exact options
        ("bad --nan-mode value zero",
         lambda b, o: g(b, o, "--method", "exact", "--nan-mode", "zero"),
         2, [r"--nan-mode", r"zero", r"propagate", r"ignore"]),
        ("exact option --nan-mode with --method interp",
         lambda b, o: g(b, o, "--nan-mode", "ignore"),
         2, [r"--nan-mode", r"(?i)exact only"]),
        ("interp option --order with --method exact",
         lambda b, o: g(b, o, "--method", "exact", "--order", "bicubic"),
         2, [r"--order", r"(?i)does not apply to --method exact"]),
        ("--mapping-tolerance with --method exact",
         lambda b, o: g(b, o, "--method", "exact", "--mapping-tolerance", "0"),
         2, [r"--mapping-tolerance", r"(?i)does not apply to --method exact"]),
        # (beyond the brief's list) --hdu naming an HDU without data, and one that does not exist
        # tessera: fits: "bad/mef.fits" HDU 1 has no image data (NAXIS = 0)
        ("--hdu 1 of a file whose primary HDU is empty",
         lambda b, o: ["reproject", b["mef"], "--target", b["tgt"], "-o", o, "--hdu", "1"],
         1, [r"mef\.fits", r"(?i)HDU 1|hdu 1"]),
        # tessera: fits: "bad/mef.fits" has no HDU 7 (it has 2)
        ("--hdu 7 of a file with 2 HDUs",
         lambda b, o: ["reproject", b["mef"], "--target", b["tgt"], "-o", o, "--hdu", "7"],
         1, [r"mef\.fits", r"7"]),
        # tessera: --cache-max-bytes '0': expected bytes with an optional K, M, G or T suffix, in [1M, 2^62] (see 'tessera help')
        ("--cache-max-bytes 0", lambda b, o: g(b, o, "--cache", "c", "--cache-max-bytes", "0"),
         2, [r"--cache-max-bytes '0'", r"\[1M, 2\^62\]"]),
        ("--cache-max-bytes 12X", lambda b, o: g(b, o, "--cache", "c", "--cache-max-bytes", "12X"),
         2, [r"--cache-max-bytes '12X'", r"K, M, G or T"]),
        ("--cache-max-bytes 100K (below 1M)",
         lambda b, o: g(b, o, "--cache", "c", "--cache-max-bytes", "100K"), 2, [r"'100K'"]),
        # tessera: cache: expected stats, trim or clear, got 'purge' (see 'tessera help')
        ("cache purge", lambda b, o: ["cache", "purge", b["dir"]], 2, [r"stats, trim or clear"]),
        # tessera: cache stats: "bad/nocache" is not a cache directory
        ("cache stats of a missing directory",
         lambda b, o: ["cache", "stats", os.path.join(b["dir"], "nocache")], 1,
         [r"nocache", r"not a cache directory"]),
        # foreign entries in a cache (issue 16, item 7)
        # tessera: cache clear: removed 1 file; could not remove 3:
        # "cachefx-blocked/ab/0123...-0.0.0.0.tsc": Permission denied
        ("cache clear of chunk files it cannot remove",
         lambda b, o: blocked_cache(b), 1,
         [r"cache clear: removed 1 file; could not remove 3: ", r"cachefx-blocked/ab/",
          r"Permission denied"]),
        # tessera: cache stats: "cachefx-fifo" is not a cache directory
        ("cache stats of a FIFO (must not hang)",
         lambda b, o: ["cache", "stats", fifo_at(b, "cachefx-fifo")], 1,
         [r"cachefx-fifo", r"not a cache directory"]),
        # tessera: cache: "cachefx-tmpfifo/tmp" is not a directory (a symlink or another
        # foreign entry); chunks will not be stored
        ("cache clear with a FIFO in place of DIR/tmp",
         lambda b, o: ["cache", "clear", fake_cache(b, "cachefx-tmpfifo", tmp_fifo=True)], 1,
         [r"cachefx-tmpfifo/tmp\" is not a directory", r"foreign"]),
        # truncated files of each BITPIX
        ("truncated BITPIX 8 input", lambda b, o: ["reproject", b["cut"][8], "--target", b["tgt"], "-o", o],
         1, [r"cut8\.fits", r"(?i)truncat|end of file|short"]),
        ("truncated BITPIX 16 input", lambda b, o: ["reproject", b["cut"][16], "--target", b["tgt"], "-o", o],
         1, [r"cut16\.fits", r"(?i)truncat|end of file|short"]),
        ("truncated BITPIX 32 input", lambda b, o: ["reproject", b["cut"][32], "--target", b["tgt"], "-o", o],
         1, [r"cut32\.fits", r"(?i)truncat|end of file|short"]),
        ("truncated BITPIX 64 input", lambda b, o: ["reproject", b["cut"][64], "--target", b["tgt"], "-o", o],
         1, [r"cut64\.fits", r"(?i)truncat|end of file|short"]),
        ("truncated BITPIX -64 input", lambda b, o: ["reproject", b["cut"][-64], "--target", b["tgt"], "-o", o],
         1, [r"cut64f\.fits", r"(?i)truncat|end of file|short"]),
        ("target with a zero-length axis", lambda b, o: ["reproject", b["good"], "--target", b["zero"], "-o", o],
         1, [r"zero\.hdr", r"NAXIS1"]),
        ("target with NAXIS = 1000", lambda b, o: ["reproject", b["good"], "--target", b["absurd"], "-o", o],
         1, [r"absurd\.hdr", r"NAXIS = 1000", r"at most 4 axes"]),
        ("target with a singular CD matrix", lambda b, o: ["reproject", b["good"], "--target", b["sing"], "-o", o],
         1, [r"singular\.hdr", r"singular"]),
        ("target with NAXISn but no WCS", lambda b, o: ["reproject", b["good"], "--target", b["shapeonly"], "-o", o],
         1, [r"shapeonly\.hdr", r"(?i)wcs|ctype"]),
        ("target whose CTYPEn have no value", lambda b, o: ["reproject", b["good"], "--target", b["undef"], "-o", o],
         1, [r"no celestial axes", r"CTYPE1 = ''"]),
        # tessera: target "bad/crvalnan.hdr": line 10: CRVAL1 = nan is not a finite number
        # (an earlier build wrote an all-NaN image whose header astropy could not read)
        ("target with CRVAL1 = nan",
         lambda b, o: ["reproject", b["good"], "--target", b["badnum"]["crvalnan"], "-o", o], 1,
         [r"crvalnan\.hdr\": line \d+: CRVAL1 = nan is not a finite number"]),
        # tessera: target "bad/crvalinf.hdr": line 10: CRVAL1 = 1e400 is not a finite number
        ("target with CRVAL1 = 1e400 (overflows a double)",
         lambda b, o: ["reproject", b["good"], "--target", b["badnum"]["crvalinf"], "-o", o], 1,
         [r"crvalinf\.hdr\": line \d+: CRVAL1 = 1e400 is not a finite number"]),
        # tessera: target "bad/crpixfar.hdr": line 8: CRPIX1 = 1e300 is out of range [-1e12, 1e12]
        # (a reference pixel within 10^12 pixels of the image)
        ("target with CRPIX1 = 1e300",
         lambda b, o: ["reproject", b["good"], "--target", b["badnum"]["crpixfar"], "-o", o], 1,
         [r"crpixfar\.hdr\": line \d+: CRPIX1 = 1e300 is out of range \[-1e12, 1e12\]"]),
        # tessera: target "bad/cdeltzero.hdr": line 13: CDELT2 = 0 is not a pixel scale (expected a
        # nonzero number, or a CD matrix)
        ("target with CDELT2 = 0",
         lambda b, o: ["reproject", b["good"], "--target", b["badnum"]["cdeltzero"], "-o", o], 1,
         [r"cdeltzero\.hdr\": line \d+: CDELT2 = 0 is not a pixel scale"]),
        # tessera: fits: "bad/crvalinf.fits" HDU 1: CRVAL1 = 1e400 is not a finite number
        ("input with CRVAL1 = 1e400",
         lambda b, o: ["reproject", b["badnum"]["input"], "--target", b["tgt"], "-o", o], 1,
         [r"crvalinf\.fits\" HDU 1: CRVAL1 = 1e400 is not a finite number"]),
        ("negative --block -64x64", lambda b, o: g(b, o, "--block", "-64x64"), 2, [r"--block '-64x64'"]),
        ("huge --block 2000000x64", lambda b, o: g(b, o, "--block", "2000000x64"), 2,
         [r"--block '2000000x64'", r"1048576"]),
        # tessera: fits: "bad/huge.fits" HDU 1: image too large: 2147483648 x 2147483648 values of
        # BITPIX -32 is more than 2^60 bytes (the file has 20160 bytes)
        # (an earlier build showed it in `info`, then died with SIGSEGV in the reproject run)
        ("info of a 20 KB file declaring 2^31 x 2^31 pixels",
         lambda b, o: ["info", b["huge"]], 1, [r"huge\.fits", r"image too large", r"2147483648 x 2147483648"]),
        ("reproject of a 20 KB file declaring 2^31 x 2^31 pixels",
         lambda b, o: ["reproject", b["huge"], "--target", b["tgt"], "-o", o, "-j", "1"], 1,
         [r"huge\.fits", r"image too large"]),
        ("preview of a 20 KB file declaring 2^31 x 2^31 pixels",
         lambda b, o: ["preview", b["huge"], "-o", o + ".png"], 1, [r"huge\.fits", r"image too large"]),
        # tessera: reproject_interp#2: image too large: 1099511627776 x 1099511627776 float32 values
        # is more than 2^60 bytes (1 EiB)
        ("target of 2^40 x 2^40 pixels",
         lambda b, o: ["reproject", b["good"], "--target", b["hugetgt"], "-o", o], 1,
         [r"image too large: 1099511627776 x 1099511627776"]),
        # tessera: fits: "bad/axes999.fits" HDU 1 has NAXIS = 999; at most 4 axes are supported
        # (cfitsio crashed opening it)
        ("info of a file with NAXIS = 999",
         lambda b, o: ["info", b["axes999"]], 1, [r"axes999\.fits", r"NAXIS = 999; at most 4 axes"]),
        # tessera: fits: writing "badrun-.../out.fits": coadd#5 chunk [0:100, 0:100]:
        # reproject_interp#2 chunk [0:100, 0:100]: fits: cannot open "bad/good.fits": too many
        # open files (the limit is 5 descriptors; raise it with ulimit -n)
        # (an earlier build said "cannot load cfitsio (libcfitsio.so.10), which this file needs:
        # ...: Too many open files", for a file that does not need cfitsio)
        ("mosaic under ulimit -n 5 (no descriptor left for an input)",
         lambda b, o: (["mosaic", b["good"], b["good"], "--target", b["tgt"], "-o", o, "-j", "1"],
                       dict(max_fds=5)), 1,
         [r"good\.fits", r"too many open files \(the limit is 5 descriptors; raise it with ulimit -n\)"]),
        # tessera: fits: writing "badrun-.../out.fits": executor: cannot create an event loop:
        # too many open files (the limit is 8 descriptors; raise it with ulimit -n)
        # (an earlier build died of SIGABRT in libuv, which aborts when it cannot make its
        # signal pipe)
        ("mosaic -j 2 --executor processes under ulimit -n 8 (no descriptor left for the event loop)",
         lambda b, o: (["mosaic", b["good"], b["good"], "--target", b["tgt"], "-o", o, "-j", "2",
                        "--executor", "processes"],
                       dict(max_fds=8)), 1,
         [r"executor: cannot create an event loop: too many open files \(the limit is 8 descriptors"]),
        # --retries and --task-timeout need worker processes
        ("--task-timeout with --executor threads",
         lambda b, o: g(b, o, "-j", "2", "--executor", "threads", "--task-timeout", "5"), 2,
         [r"option '--task-timeout' applies to --executor processes, not threads"]),
        ("--executor fibers",
         lambda b, o: g(b, o, "--executor", "fibers"), 2,
         [r"--executor 'fibers': expected local, processes, threads or mpi"]),
        # mosaic and preview
        ("mosaic without a target",
         lambda b, o: ["mosaic", b["good"], "-o", o], 2,
         [r"exactly one of --target TARGET and --auto"]),
        ("mosaic with both --target and --auto",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "--auto", "-o", o], 2,
         [r"exactly one of --target TARGET and --auto"]),
        ("mosaic --combine averag",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--combine", "averag"], 2,
         [r"--combine 'averag': expected mean, sum, first, last, min, max, median, weighted, average"]),
        ("mosaic --combine-type CLIP (not a SWarp COMBINE_TYPE)",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--combine-type", "CLIP"], 2,
         [r"--combine-type 'CLIP': expected one of SWarp's COMBINE_TYPE: MEDIAN, AVERAGE"]),
        ("mosaic --clip-sigma -1",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--combine", "clipped",
                       "--clip-sigma", "-1"], 2, [r"--clip-sigma '-1': expected a number >= 0"]),
        ("mosaic --clip-log without clipped",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--clip-log", o + ".log"], 2,
         [r"--clip-log goes with --combine clipped"]),
        ("mosaic --weight-type MAP_WEIGHTS",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--weight-type", "MAP_WEIGHTS"],
         2, [r"--weight-type 'MAP_WEIGHTS': expected MAP_WEIGHT, MAP_VARIANCE, MAP_RMS or BACKGROUND"]),
        ("mosaic --weight-type MAP_RMS without weight maps",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--weight-type", "MAP_RMS"],
         2, [r"--weight-type MAP_RMS needs the weight maps"]),
        ("mosaic --weight-thresh 1,x",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--weight-type", "BACKGROUND",
                       "--weight-thresh", "1,x"], 2, [r"--weight-thresh '1,x': expected T or T1,T2"]),
        ("mosaic with 1 --dq for 2 inputs",
         lambda b, o: ["mosaic", b["good"], b["good"], "--target", b["tgt"], "-o", o, "--dq", b["good"]],
         2, [r"1 --dq for 2 inputs: expected one per input"]),
        ("mosaic --dq-bits 2^32",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--dq", b["good"],
                       "--dq-bits", "4294967296"], 2, [r"--dq-bits '4294967296': expected a bit mask"]),
        ("mosaic --weight-out naming -o",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--weight-out", o], 2,
         [r"-o and --weight-out name the same file"]),
        ("mosaic --variance-out naming an input",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--variance-out", b["good"]], 2,
         [r"--variance-out '.*' is the input"]),
        ("mosaic with 1 weight for 2 inputs",
         lambda b, o: ["mosaic", b["good"], b["good"], "--target", b["tgt"], "-o", o,
                       "--weights", b["good"]], 2,
         [r"1 --weights for 2 inputs: expected one per input"]),
        ("mosaic --background-reference 3 of 2 inputs",
         lambda b, o: ["mosaic", b["good"], b["good"], "--target", b["tgt"], "-o", o,
                       "--match-background", "--background-reference", "3"], 2,
         [r"--background-reference 3: there are 2 inputs"]),
        ("mosaic --projection with --target",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--projection", "SIN"], 2,
         [r"go with --auto, not --target"]),
        ("mosaic of an input without WCS",
         lambda b, o: ["mosaic", b["good"], b["nowcs"], "--target", b["tgt"], "-o", o], 1,
         [r"nowcs\.fits", r"(?i)wcs"]),
        ("mosaic of a truncated input",
         lambda b, o: ["mosaic", b["good"], b["trunc"], "--target", b["tgt"], "-o", o], 1,
         [r"cut\.fits"]),
        ("mosaic-header --resolution -1",
         lambda b, o: ["mosaic-header", b["good"], "-o", o, "--resolution", "-1"], 2,
         [r"--resolution '-1': expected arcseconds per pixel > 0"]),
        ("mosaic-header --combine (not a header option)",
         lambda b, o: ["mosaic-header", b["good"], "-o", o, "--combine", "sum"], 2,
         [r"option '--combine' does not apply"]),
        ("mosaic-header of a non-FITS file",
         lambda b, o: ["mosaic-header", b["text"], "-o", o], 1, [r"notfits\.fits"]),
        ("preview --stretch gamma",
         lambda b, o: ["preview", b["good"], "-o", o, "--stretch", "gamma"], 2,
         [r"--stretch 'gamma': expected linear, sqrt, log or asinh"]),
        ("preview --scale 150",
         lambda b, o: ["preview", b["good"], "-o", o, "--scale", "150"], 2,
         [r"--scale '150': expected zscale, minmax or a percentage"]),
        ("preview of a non-FITS file",
         lambda b, o: ["preview", b["text"], "-o", o.replace(".fits", ".png")], 1, [r"notfits\.fits"]),
        # Outputs that exist and are not regular files (as root, -o /dev/full replaced the device
        # with a 13 MB file; bad_test checks that /dev/full is still a character device).
        # tessera: fits: output "/dev/full" exists and is a character device; expected a regular
        # file or a new path
        ("-o /dev/full (a character device)", lambda b, o: g(b, "/dev/full"), 1, [DEV_FULL]),
        ("--footprint /dev/full", lambda b, o: g(b, o, "--footprint", "/dev/full"), 1, [DEV_FULL]),
        ("mosaic -o /dev/full",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", "/dev/full"], 1, [DEV_FULL]),
        ("mosaic --footprint /dev/full",
         lambda b, o: ["mosaic", b["good"], "--target", b["tgt"], "-o", o, "--footprint", "/dev/full"],
         1, [DEV_FULL]),
        # tessera: preview: -o '/dev/full': expected a file name ending in .png
        # (a device named .png is refused as a device: see special_outputs_test)
        ("preview -o /dev/full", lambda b, o: ["preview", b["good"], "-o", "/dev/full"], 2,
         [r"^tessera: preview: -o '/dev/full': expected a file name ending in \.png"]),
        # tessera: header: output "/dev/full" exists and is a character device; ...
        # (it said "cannot write" and then deleted the node with remove())
        ("mosaic-header -o /dev/full", lambda b, o: ["mosaic-header", b["good"], "-o", "/dev/full"], 1,
         [r"^tessera: header: " + DEV_FULL]),
        # tessera: fits: output "badrun-.../" exists and is a directory; expected a regular file or a
        # new path
        ("-o a directory", lambda b, o: g(b, os.path.dirname(o)), 1,
         [r"exists and is a directory; expected a regular file or a new path"]),
        # tessera: fits: output "badrun-.../out.fits" needs 4.0 TB, 85 GB free on /work/...
        # (it ran until the disk was full: ENOSPC on a 50 MB filesystem)
        ("10^6 x 10^6 target (a 4 TB output) on a smaller disk",
         lambda b, o: ["reproject", b["good"], "--target", b["huge4tb"], "-o", o], 1,
         [r'out\.fits" needs 4\.0 TB, [0-9.]+ (bytes|[kMGT]B) free on /']),
        # Tile-compressed inputs with one tile spoiled: cfitsio's Rice decoder read past the
        # stream (SEGV under ASan), a corrupt GZIP tile leaked in cfitsio.
        # tessera: fits: writing "badrun-.../out.fits": reproject_interp#2 chunk [0:100, 0:100]:
        # fits: "bad-tiles/rice.fits" HDU 2: tile 2 of the compressed image is corrupt (its Rice
        # stream has the invalid block code 31 at byte 4)
        ("corrupt RICE_1 tile",
         lambda b, o: ["reproject", tile_inputs(b)["rice"], "--target", b["tgt"], "-o", o, "-j", "1"],
         1, [r"rice\.fits\" HDU 2: tile 2 of the compressed image is corrupt \(its Rice stream"]),
        # ... fits: "bad-tiles/gzip.fits" HDU 2: tile 2 of the compressed image is corrupt (its
        # gzip stream does not inflate)
        ("corrupt GZIP_1 tile",
         lambda b, o: ["reproject", tile_inputs(b)["gzip"], "--target", b["tgt"], "-o", o, "-j", "1"],
         1, [r"gzip\.fits\" HDU 2: tile 2 of the compressed image is corrupt \(its gzip stream"]),
        # tessera: fits: "bad-tiles/desc.fits" HDU 2: tile 2 of the compressed image is corrupt
        # (its descriptor says 93 elements of 1 bytes at heap offset 1073741824, past the heap's
        # 3605 bytes)
        ("info on a compressed image whose tile descriptor points past the heap",
         lambda b, o: ["info", tile_inputs(b)["desc"]],
         1, [r"desc\.fits\" HDU 2: tile 2 of the compressed image is corrupt \(its descriptor says "
             r"\d+ elements of 1 bytes at heap offset 1073741824, past the heap's \d+ bytes\)"]),
        # to-healpix: argument errors exit 2, before anything is read or written.
        ("to-healpix without --nside",
         lambda b, o: ["to-healpix", b["good"], "-o", o], 2, [r"to-healpix: missing --nside N"]),
        ("to-healpix --nside 0",
         lambda b, o: ["to-healpix", b["good"], "--nside", "0", "-o", o], 2,
         [r"--nside '0': expected 1 to 2\^29"]),
        ("to-healpix --nested with nside 12",
         lambda b, o: ["to-healpix", b["good"], "--nside", "12", "--nested", "-o", o], 2,
         [r"--nside 12 with --nested: expected a power of 2"]),
        ("to-healpix --frame fk5",
         lambda b, o: ["to-healpix", b["good"], "--nside", "16", "--frame", "fk5", "-o", o], 2,
         [r"--frame 'fk5': expected galactic, icrs or ecliptic"]),
        ("to-healpix --range past the map",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "--range", "0:192", "-o", o], 2,
         [r"--range 0:192 is outside the map, whose pixels are 0 to 191"]),
        ("to-healpix --range backwards",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "--range", "9:3", "-o", o], 2,
         [r"--range '9:3': expected FIRST:LAST"]),
        ("to-healpix --combine with one input",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "--combine", "max", "-o", o], 2,
         [r"--combine goes with two or more inputs"]),
        ("to-healpix --order cubic",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "--order", "cubic", "-o", o], 2,
         [r"--order 'cubic': expected nearest-neighbor"]),
        ("to-healpix --block (a reproject option)",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "--block", "8x8", "-o", o], 2,
         [r"to-healpix: unknown option '--block'"]),
        ("to-healpix -o the input",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "-o", b["good"]], 2,
         [r"-o '.*' is the input"]),
        # tessera: reproject_to_healpix: input fits#1("nowcs.fits") has no WCS
        ("to-healpix of an input without WCS",
         lambda b, o: ["to-healpix", b["nowcs"], "--nside", "4", "-o", o], 1,
         [r"reproject_to_healpix: input .*nowcs\.fits.* has no WCS"]),
        ("to-healpix of a missing input",
         lambda b, o: ["to-healpix", os.path.join(b["dir"], "missing.fits"), "--nside", "4",
                       "-o", o], 1, [r"missing\.fits", r"(?i)no such file"]),
        ("to-healpix into a missing directory",
         lambda b, o: ["to-healpix", b["good"], "--nside", "4", "-o", "/nonexistent-dir/x.fits"],
         1, [r"healpix: cannot create \"/nonexistent-dir/x\.fits\": No such file or directory"]),
    ] + drizzle_bad_cases()


def drizzle_bad_cases():
    """reproject --method drizzle and blot: drizzle's options under drizzle's names."""
    d = lambda b, o, *more: (["reproject", b["good"], "--method", "drizzle", "--target",  # noqa: E731
                              b["tgt"], "-o", o] + list(more))
    return [
        ("drizzle --kernel hann (an adaptive kernel)", lambda b, o: d(b, o, "--kernel", "hann"),
         2, [r"--kernel 'hann': expected square, point, turbo, gaussian, lanczos2, lanczos3 or tophat"]),
        ("drizzle --pixfrac 0", lambda b, o: d(b, o, "--pixfrac", "0"),
         2, [r"--pixfrac '0'", r"\(0, 10\]"]),
        ("drizzle --wt-scl bogus", lambda b, o: d(b, o, "--wt-scl", "bogus"),
         2, [r"--wt-scl 'bogus': expected exptime, expsq or a number > 0"]),
        ("drizzle --expin with two times for one input", lambda b, o: d(b, o, "--expin", "1,2"),
         2, [r"--expin '1,2'", r"or 1 of them"]),
        ("drizzle --in-units electrons", lambda b, o: d(b, o, "--in-units", "electrons"),
         2, [r"--in-units 'electrons': expected cps or counts"]),
        ("drizzle with one --weight for two inputs",
         lambda b, o: ["reproject", b["good"], b["good"], "--method", "drizzle", "--target", b["tgt"],
                       "-o", o, "--weight", b["good"]],
         2, [r"1 --weight maps for 2 inputs"]),
        ("drizzle --order bicubic", lambda b, o: d(b, o, "--order", "bicubic"),
         2, [r"'--order' does not apply to --method drizzle"]),
        ("drizzle --weight-out naming the input", lambda b, o: d(b, o, "--weight-out", b["good"]),
         2, [r"--weight-out '.*good\.fits' is an input"]),
        ("drizzle --context-out naming -o", lambda b, o: d(b, o, "--context-out", o),
         2, [r"-o and --context-out name the same file"]),
        ("drizzle input without WCS",
         lambda b, o: ["reproject", b["nowcs"], "--method", "drizzle", "--target", b["tgt"], "-o", o],
         1, [r"drizzle: input fits#1\(\".*nowcs\.fits\"\) has no WCS"]),
        ("drizzle weight map of another shape", lambda b, o: d(b, o, "--weight", b["small"]),
         1, [r"weight map 0 .*small\.fits.* is 50 x 40 but input .* is 100 x 100; expected the "
             r"input's shape"]),
        ("drizzle --weight-type MAP_WEIGHTS", lambda b, o: d(b, o, "--weight-type", "MAP_WEIGHTS"),
         2, [r"reproject: --weight-type 'MAP_WEIGHTS': expected MAP_WEIGHT, MAP_VARIANCE, MAP_RMS or "
             r"BACKGROUND"]),
        ("drizzle --weight-type MAP_RMS without weight maps",
         lambda b, o: d(b, o, "--weight-type", "MAP_RMS"),
         2, [r"reproject: --weight-type MAP_RMS needs the weight maps"]),
        ("drizzle --weight-type BACKGROUND with --weight",
         lambda b, o: d(b, o, "--weight-type", "BACKGROUND", "--weight", b["good"]),
         2, [r"--weight-type BACKGROUND takes the weights from the images themselves"]),
        ("drizzle --weight-thresh without --weight-type", lambda b, o: d(b, o, "--weight-thresh", "1"),
         2, [r"reproject: --weight-thresh goes with --weight-type"]),
        ("drizzle --dq of another shape (with every output asked for)",
         lambda b, o: d(b, o, "--dq", b["small"], "--dq-out", o.replace("out.fits", "dq.fits"),
                        "--variance-out", o.replace("out.fits", "var.fits"), "--rms-out",
                        o.replace("out.fits", "rms.fits"), "--weight-out",
                        o.replace("out.fits", "wht.fits")),
         1, [r"drizzle: data-quality map 0 .*small\.fits.* is 50 x 40 but input .* is 100 x 100; "
             r"expected the input's shape"]),
        ("drizzle two --dq for one input", lambda b, o: d(b, o, "--dq", b["good"], "--dq", b["good"]),
         2, [r"reproject: 2 --dq for 1 inputs: expected one per input"]),
        ("drizzle --dq-out without --dq", lambda b, o: d(b, o, "--dq-out", o.replace("out.fits", "dq.fits")),
         2, [r"reproject: --dq-out goes with --dq"]),
        ("drizzle --dq-bits -1", lambda b, o: d(b, o, "--dq", b["good"], "--dq-bits", "-1"),
         2, [r"reproject: --dq-bits '-1': expected a bit mask, 0 to 4294967295"]),
        ("drizzle --variance-out naming the input", lambda b, o: d(b, o, "--variance-out", b["good"]),
         2, [r"--variance-out '.*good\.fits' is an input"]),
        ("drizzle --dq-out naming its --dq",
         lambda b, o: d(b, o, "--dq", b["small"], "--dq-out", b["small"]),
         2, [r"--dq-out '.*small\.fits' is an input"]),
        ("drizzle --rms-out naming -o", lambda b, o: d(b, o, "--rms-out", o),
         2, [r"-o and --rms-out name the same file"]),
        ("mosaic --method drizzle",
         lambda b, o: ["mosaic", b["good"], "--method", "drizzle", "--target", b["tgt"], "-o", o],
         2, [r"mosaic: --method drizzle coadds by itself: use 'tessera reproject IN\.\.\. --method "
             r"drizzle'"]),
        ("blot --interp cubic",
         lambda b, o: ["blot", b["good"], "--target", b["tgt"], "-o", o, "--interp", "cubic"],
         2, [r"blot: --interp 'cubic': expected nearest, linear, poly3, poly5, sinc, lan3 or lan5"]),
        ("blot without --target", lambda b, o: ["blot", b["good"], "-o", o],
         2, [r"blot: missing --target TARGET"]),
        ("blot --footprint", lambda b, o: ["blot", b["good"], "--target", b["tgt"], "-o", o,
                                           "--footprint", o + ".fp"],
         2, [r"blot: --method, --order, --footprint"]),
    ]


def to_healpix_test(ctx):
    """to-healpix: the table's cards; -j 2 on threads and processes, --chunk, and a cache rerun
    bit-identical to serial; --range writes FIRSTPIX..LASTPIX of the full map; --partial holds
    the finite pixels; --nested equals the RING map reordered; a mosaic of two; the map read
    back by `tessera reproject`."""
    def fn():
        chk = C.Check()
        from astropy_healpix import HEALPix
        d = ctx.path("to-healpix")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        h = C.cel_header("TAN", 80, 60, (30.0, 10.0), 300.0)
        ins = []
        for i in range(2):
            hh = h.copy()
            hh["CRPIX1"] = hh["CRPIX1"] - 30 * i
            p = os.path.join(d, "in%d.fits" % i)
            C.write_fits(p, C.sky_image(60, 80, 5 + i), hh, np.float32)
            ins.append(p)

        def make(name, *args, inputs=None):
            out = os.path.join(d, name)
            r = ctx.run(["to-healpix"] + (inputs or ins[:1]) + ["--nside", "256", "-o", out,
                                                                "--quiet"] + list(args))
            chk.expect(r.returncode == 0 and r.stderr == "", "%s: exit %d %r"
                       % (" ".join(args), r.returncode, r.stderr))
            return out if r.returncode == 0 else None

        ref = make("ref.fits", "-j", "1")
        if ref is None:
            return chk
        hdr = fits.getheader(ref, 1)
        chk.expect(hdr["PIXTYPE"] == "HEALPIX" and hdr["ORDERING"] == "RING" and
                   hdr["NSIDE"] == 256 and hdr["COORDSYS"] == "C" and hdr["INDXSCHM"] == "IMPLICIT"
                   and hdr["FIRSTPIX"] == 0 and hdr["LASTPIX"] == 786431 and
                   hdr["TFORM1"].strip() == "1024E", "cards: %r" % hdr)
        full = fits.getdata(ref, 1)["SIGNAL"].ravel()
        chk.expect(np.isfinite(full).sum() > 100, "%d finite pixels" % np.isfinite(full).sum())
        cache = os.path.join(d, "cache")
        for name, args in [("threads.fits", ["-j", "2", "--executor", "threads"]),
                           ("procs.fits", ["-j", "2", "--executor", "processes"]),
                           ("chunk.fits", ["--chunk", "1000"]),
                           ("cache1.fits", ["--cache", cache]),
                           ("cache2.fits", ["--cache", cache])]:
            out = make(name, *args)
            chk.expect(out is not None and open(out, "rb").read() == open(ref, "rb").read(),
                       "%s differs from the serial map" % " ".join(args))
        lo = int(np.flatnonzero(np.isfinite(full))[0]) - 100
        out = make("range.fits", "--range", "%d:%d" % (lo, lo + 10239))
        if out:
            rh, part = fits.getheader(out, 1), fits.getdata(out, 1)["SIGNAL"].ravel()
            chk.expect(rh["FIRSTPIX"] == lo and rh["LASTPIX"] == lo + 10239 and
                       np.isfinite(part).any() and
                       np.array_equal(part, full[lo:lo + 10240], equal_nan=True),
                       "--range: FIRSTPIX %s LASTPIX %s" % (rh["FIRSTPIX"], rh["LASTPIX"]))
        out = make("partial.fits", "--partial")
        if out:
            t = fits.getdata(out, 1)
            want = np.flatnonzero(np.isfinite(full))
            chk.expect(fits.getheader(out, 1)["INDXSCHM"] == "EXPLICIT" and
                       np.array_equal(t["PIXEL"], want) and np.array_equal(t["SIGNAL"], full[want]),
                       "--partial rows are not the finite pixels")
        out = make("nested.fits", "--nested")
        if out:
            nest = fits.getdata(out, 1)["SIGNAL"].ravel()
            ring_index = HEALPix(nside=256, order="nested").nested_to_ring(np.arange(full.size))
            chk.expect(np.array_equal(nest, full[ring_index], equal_nan=True),
                       "--nested is not the RING map reordered")
        out = make("mosaic.fits", "--combine", "max", inputs=ins)
        if out:
            one = make("one.fits", inputs=ins[1:])
            m, a = fits.getdata(out, 1)["SIGNAL"].ravel(), fits.getdata(one, 1)["SIGNAL"].ravel()
            with np.errstate(invalid="ignore"):
                want = np.where(np.isnan(full), a, np.where(np.isnan(a), full, np.maximum(full, a)))
            chk.expect(np.array_equal(m, want, equal_nan=True), "--combine max differs")
        back = os.path.join(d, "back.fits")
        r = ctx.run(["reproject", ref, "--target", ins[0], "-o", back, "--quiet"])
        # The map's 0.23 deg pixels are NaN past the image's edge pixel centres,
        # so the bilinear values within a map pixel of the edges are NaN too.
        chk.expect(r.returncode == 0 and np.isfinite(fits.getdata(back)[10:-10, 10:-10]).all(),
                   "reproject of the written map: exit %d %r" % (r.returncode, r.stderr))
        return chk
    return fn


_tile_files = {}


def tile_inputs(b):
    """Tile-compressed images with one tile spoiled, next to (not in) the catalogue's
    directory, which bad_test watches for leftovers."""
    d = os.path.join(os.path.dirname(b["dir"]), "bad-tiles")
    if d in _tile_files:
        return _tile_files[d]
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(16)
    files = {}
    for key, data, ctype in (("rice", rng.normal(0, 1, (40, 64)).astype(np.float32), "RICE_1"),
                             ("gzip", rng.normal(0, 300, (40, 64)).astype(np.int16), "GZIP_1"),
                             ("desc", rng.normal(0, 300, (40, 64)).astype(np.int16), "RICE_1")):
        p = os.path.join(d, "%s.fits" % key)
        hdr = C.cel_header("TAN", 64, 40, (10.0, 10.0), 2.0)
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=hdr, compression_type=ctype)]).writeto(
            p, overwrite=True)
        with fits.open(p, disable_image_compression=True) as hl:
            loc, h = hl[1].fileinfo()["datLoc"], hl[1].header
            assert h["TTYPE1"] == "COMPRESSED_DATA"
            row, heap = h["NAXIS1"], loc + h.get("THEAP", h["NAXIS1"] * h["NAXIS2"])
        with open(p, "r+b") as f:
            # Tile 2 (the table's second row): its descriptor is the row's first 8 bytes.
            f.seek(loc + row)
            count, off = struct.unpack(">ii", f.read(8))
            if key == "desc":
                f.seek(loc + row)
                f.write(struct.pack(">ii", count, 1 << 30))
            else:
                # Past the first pixel (Rice) or the gzip header: all ones, or flipped bits.
                f.seek(heap + off + 4)
                tail = f.read(count - 4)
                f.seek(heap + off + 4)
                f.write(b"\xff" * len(tail) if key == "rice" else bytes(x ^ 0x5a for x in tail))
        files[key] = p
    _tile_files[d] = files
    return files


DEV_FULL = r'output "/dev/full" exists and is a character device; expected a regular file or a new path'


def fake_cache(b, name, n=3, tmp_fifo=False):
    """A fresh cache directory beside the catalogue's inputs holding n files named like chunk
    files (clear deletes by name) in subdirectory ab/, and tmp/ (a FIFO with tmp_fifo)."""
    d = os.path.join(os.path.dirname(b["dir"]), name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "ab"))
    for i in range(n):
        with open(os.path.join(d, "ab", "%032x-%d.0.0.0.tsc" % (0x0123456789abcdef, i)), "wb") as f:
            f.write(b"TSRC")
    if tmp_fifo:
        os.mkfifo(os.path.join(d, "tmp"))
    else:
        os.makedirs(os.path.join(d, "tmp"))
    return d


def fifo_at(b, name):
    p = os.path.join(os.path.dirname(b["dir"]), name)
    if os.path.lexists(p):
        os.unlink(p)
    os.mkfifo(p)
    return p


def as_nobody(tree):
    """subprocess arguments that run tessera as nobody (uid 65534) owning `tree`, when we are
    root: root ignores permission bits, so a permission failure would not be real.  The
    directory holding `tree` (inside the work directory) is opened to traversal."""
    if os.geteuid() != 0:
        return {}
    for root, dirs, files in os.walk(tree):
        for n in dirs + files:
            os.lchown(os.path.join(root, n), 65534, 65534)
    os.lchown(tree, 65534, 65534)
    parent = os.path.dirname(os.path.abspath(tree))
    os.chmod(parent, os.stat(parent).st_mode | 0o011)
    return dict(user=65534, group=65534, extra_groups=[])


def blocked_cache(b):
    """`cache clear` of a cache whose chunk subdirectory is not writable: (args, run kwargs)."""
    d = fake_cache(b, "cachefx-blocked")
    with open(os.path.join(d, "stats"), "w") as f:
        f.write("tessera-cache-stats 1\n")
    kw = as_nobody(d)
    os.chmod(os.path.join(d, "ab"), 0o555)
    return ["cache", "clear", d], kw


def listing(d):
    out = set()
    for root, dirs, files in os.walk(d):
        for f in files + dirs:
            out.add(os.path.relpath(os.path.join(root, f), d))
    return out


COMMANDS = ["reproject", "mosaic", "mosaic-header", "to-healpix", "hips", "blot", "preview",
            "info", "cache", "sample", "demo", "version", "help"]


def unix_tool_test(ctx):
    """Every command takes -h/--help (its own usage on stdout, exit 0, nothing written, no
    option taken for a path) and --quiet; help COMMAND is that usage; --version names the
    libraries."""
    def fn():
        chk = C.Check()
        d = ctx.path("unix-tool")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for cmd in COMMANDS:
            for flag in ("-h", "--help"):
                r = ctx.run([cmd, flag], cwd=d)
                chk.expect(r.returncode == 0, "%s %s: exit %d" % (cmd, flag, r.returncode))
                chk.expect(r.stdout.startswith("usage: tessera " + cmd) or
                           (cmd == "version" and "usage: tessera version" in r.stdout),
                           "%s %s: stdout does not start with its usage: %r" % (cmd, flag, r.stdout[:80]))
                chk.expect(r.stderr == "", "%s %s: stderr %r" % (cmd, flag, r.stderr))
            r = ctx.run(["help", cmd], cwd=d)
            chk.expect(r.returncode == 0 and r.stdout == ctx.run([cmd, "--help"], cwd=d).stdout,
                       "help %s differs from %s --help" % (cmd, cmd))
            other = [c for c in COMMANDS if c != cmd and c != "help"]
            chk.expect(not any(("usage: tessera " + o + " ") in r.stdout for o in other),
                       "help %s shows other commands' usage" % cmd)
        # demo/sample with help before or after a directory still write nothing
        for args in (["demo", "x", "--help"], ["sample", "-h", "y"]):
            r = ctx.run(args, cwd=d)
            chk.expect(r.returncode == 0, "%s: exit %d" % (args, r.returncode))
        chk.expect(os.listdir(d) == [], "help wrote files: %s" % os.listdir(d))
        r = ctx.run(["help"], cwd=d)
        chk.expect(r.returncode == 0 and all(c in r.stdout for c in COMMANDS), "help lists every command")
        chk.expect(len(r.stdout.splitlines()) < 25, "help is an overview (%d lines)" % len(r.stdout.splitlines()))
        r = ctx.run(["--version"], cwd=d)
        chk.note("--version: %r" % r.stdout)
        for lib in ("libuv", "wcslib", "cfitsio", "zstd", "libpng"):
            chk.expect(re.search(r"\b%s \d" % lib, r.stdout) is not None, "--version does not name %s" % lib)
        # --quiet everywhere: files written, nothing printed
        b = bad_inputs(ctx)
        runs = [["sample", os.path.join(d, "s"), "--quiet"],
                ["demo", os.path.join(d, "dm"), "--quiet"],
                ["preview", b["good"], "-o", os.path.join(d, "p.png"), "--quiet"],
                ["mosaic-header", b["good"], "-o", os.path.join(d, "m.hdr"), "--quiet"],
                ["mosaic", b["good"], "--target", b["tgt"], "-o", os.path.join(d, "m.fits"), "--quiet"],
                ["to-healpix", b["good"], "--nside", "16", "-o", os.path.join(d, "h.fits"), "--quiet"],
                ["info", b["good"], "--quiet"],
                ["hips", b["good"], "-o", os.path.join(d, "hp"), "--quiet"],
                ["reproject", b["good"], "--target", b["tgt"], "-o", os.path.join(d, "r.fits"), "--quiet"],
                ["reproject", b["good"], "--method", "drizzle", "--target", b["tgt"], "-o",
                 os.path.join(d, "dz.fits"), "--quiet"],
                ["blot", b["good"], "--target", b["tgt"], "-o", os.path.join(d, "bl.fits"), "--quiet"]]
        for args in runs:
            r = ctx.run(args, cwd=d)
            chk.expect(r.returncode == 0, "%s: exit %d: %s" % (args[0], r.returncode, r.stderr.strip()))
            if args[0] != "info":
                chk.expect(r.stdout == "" and r.stderr == "", "%s --quiet printed %r %r"
                           % (args[0], r.stdout, r.stderr))
        for f in ("s/sky.fits", "dm/reprojected.fits", "p.png", "m.hdr", "m.fits", "r.fits",
                  "hp/properties", "dz.fits", "bl.fits"):
            chk.expect(os.path.exists(os.path.join(d, f)), "%s not written" % f)
        # without --quiet, every command that writes a file says so
        for args, out in ((["preview", b["good"], "-o", os.path.join(d, "p2.png")], "p2.png"),
                          (["mosaic-header", b["good"], "-o", os.path.join(d, "m2.hdr")], "m2.hdr")):
            r = ctx.run(args, cwd=d)
            chk.expect(r.returncode == 0 and re.search(r"wrote .*%s" % re.escape(out), r.stderr) is not None,
                       "%s does not say what it wrote: %r" % (args[0], r.stderr))
        # The installed tool has no test hooks: their old variables change nothing.
        env = dict(os.environ, TSR_TEST_WRITE_FAIL="1", TSR_TEST_CRASH_CHUNK="0,0,always",
                   TSR_TEST_NO_TMPFILE="1")
        r = ctx.run(["reproject", b["good"], "--target", b["tgt"], "-o", os.path.join(d, "h.fits"),
                     "-j", "2", "--executor", "processes", "--quiet"], cwd=d, env=env)
        chk.expect(r.returncode == 0 and os.path.exists(os.path.join(d, "h.fits")),
                   "the release tool obeyed a test hook's variable: exit %d %s" % (r.returncode, r.stderr))
        # info describes a .hdr target
        r = ctx.run(["info", b["tgt"]], cwd=d)
        chk.note("info TARGET.hdr: %r" % r.stdout)
        chk.expect(r.returncode == 0 and "shape:" in r.stdout and "wcs:" in r.stdout,
                   "info on a .hdr: exit %d, %r %r" % (r.returncode, r.stdout, r.stderr))
        return chk
    return fn


def tree(d):
    """Every path under d (relative), with each file's bytes for the regular files."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, d)] = open(p, "rb").read() if os.path.isfile(p) else None
    return out


def hips_cli_test(ctx):
    """hips: bad arguments exit 2 and write nothing; a non-empty DIR or a bad input exit 1 and
    leave it as it was; nothing is written outside DIR (nor in $TMPDIR); --progress and
    --quiet; -j 2 threads and processes give the tiles of -j 1 bit for bit; a rerun with
    --cache computes nothing (0 new misses) and writes the same tiles."""
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        d = ctx.path("hips-cli")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        out = os.path.join(d, "out")
        bad = [[], ["-o", out], [b["good"]], [b["good"], "-o", ""],
               [b["good"], "-o", out, "--level", "-1"], [b["good"], "-o", out, "--level", "x"],
               [b["good"], "-o", out, "--level", "18"],
               [b["good"], "-o", out, "--tile-width", "100"], [b["good"], "-o", out, "--frame", "fk5"],
               [b["good"], "-o", out, "--formats", "png"], [b["good"], "-o", out, "--cut", "3,1"],
               [b["good"], "-o", out, "--cut", "3"], [b["good"], "-o", out, "--stretch", "cubic"],
               [b["good"], "-o", out, "--order", "quartic"], [b["good"], "-o", out, "--combine", "avg"],
               [b["good"], "-o", out, "--region", "1:2,1:2"], [b["good"], "-o", out, "--dtype", "float64"],
               [b["good"], "-o", out, "--bogus"],
               [b["good"], "-o", out, "--title", ""], [b["good"], "-o", b["good"]]]
        for args in bad:
            r = ctx.run(["hips"] + args, cwd=d)
            chk.expect(r.returncode == 2 and r.stderr.startswith("tessera: ") and
                       ("hips:" in r.stderr or "--executor" in r.stderr),
                       "hips %s: exit %d, %r" % (" ".join(args), r.returncode, r.stderr.strip()))
        chk.expect(os.listdir(d) == [], "bad arguments wrote %s" % os.listdir(d))
        # A missing or bad input: exit 1, DIR not made.
        for inp in (os.path.join(d, "missing.fits"), b["nowcs"] if "nowcs" in b else None):
            if inp is None:
                continue
            r = ctx.run(["hips", inp, "-o", out], cwd=d)
            chk.expect(r.returncode == 1 and not os.path.exists(out),
                       "bad input %s: exit %d, %r" % (inp, r.returncode, r.stderr.strip()))
        # A non-empty DIR is refused and left alone.
        os.makedirs(out)
        with open(os.path.join(out, "keep.txt"), "w") as f:
            f.write("mine")
        r = ctx.run(["hips", b["good"], "-o", out], cwd=d)
        chk.expect(r.returncode == 1 and "not empty" in r.stderr and os.listdir(out) == ["keep.txt"],
                   "non-empty DIR: exit %d, %r, %s" % (r.returncode, r.stderr.strip(), os.listdir(out)))
        shutil.rmtree(out)
        # Nothing outside DIR (and the cache DIR named), nothing in $TMPDIR.
        tmp = os.path.join(d, "tmp")
        os.makedirs(tmp)
        env = dict(os.environ, TMPDIR=tmp)
        env.pop("TESSERA_CACHE", None)
        runs = {}
        for name, extra in (("j1", ["-j", "1"]), ("threads", ["-j", "2", "--executor", "threads"]),
                            ("procs", ["-j", "2", "--executor", "processes"]),
                            ("cached1", ["--cache", os.path.join(d, "cache")]),
                            ("cached2", ["--cache", os.path.join(d, "cache")])):
            dst = os.path.join(d, name)
            r = ctx.run(["hips", b["good"], "-o", dst, "--tile-width", "64", "--level", "9",
                         "--quiet"] + extra, cwd=d, env=env)
            chk.expect(r.returncode == 0 and r.stdout == "" and r.stderr == "",
                       "%s: exit %d %r" % (name, r.returncode, r.stderr.strip()))
            runs[name] = {k: v for k, v in tree(dst).items() if k not in ("properties", "index.html")}
            if name == "cached1":
                misses1 = ctx.run(["cache", "stats", os.path.join(d, "cache")]).stdout
        chk.expect(sorted(os.listdir(d)) == sorted(["tmp", "cache", "j1", "threads", "procs",
                                                    "cached1", "cached2"]),
                   "files outside DIR: %s" % sorted(os.listdir(d)))
        chk.expect(os.listdir(tmp) == [], "files in $TMPDIR: %s" % os.listdir(tmp))
        tiles = [k for k in runs["j1"] if k.endswith(".fits") and "Npix" in k]
        chk.note("%d tiles at every order" % len(tiles))
        chk.expect(len(tiles) >= 10, "only %d tiles" % len(tiles))
        for name in ("threads", "procs", "cached1", "cached2"):
            chk.expect(runs[name] == runs["j1"], "%s differs from -j 1: %s" % (
                name, sorted(k for k in set(runs[name]) | set(runs["j1"])
                             if runs[name].get(k) != runs["j1"].get(k))[:5]))
        stats = ctx.run(["cache", "stats", os.path.join(d, "cache")]).stdout
        m1 = re.search(r"misses:\s+(\d+)", misses1)
        m2 = re.search(r"misses:\s+(\d+)", stats)
        h2 = re.search(r"hits:\s+(\d+)", stats)
        chk.expect(m1 and m2 and h2 and m1.group(1) == m2.group(1) and int(h2.group(1)) > 0,
                   "the cached rerun computed blocks: %r then %r" % (misses1, stats))
        # --progress draws on stderr even on a pipe; the summary line says what was written.
        r = ctx.run(["hips", b["good"], "-o", os.path.join(d, "p"), "--progress", "--level", "7"],
                    cwd=d)
        chk.expect(r.returncode == 0 and "hips" in r.stderr and "wrote HiPS" in r.stderr,
                   "--progress: exit %d %r" % (r.returncode, r.stderr[-300:]))
        return chk
    return fn


def preview_size_test(ctx):
    """preview --max-size N gives N pixels on the longer side (not a power-of-two stride's)."""
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        import struct
        ny, nx = fits.getdata(b["good"]).shape
        for size in (7, 33, 50, max(nx, ny) - 1, max(nx, ny) + 5):
            out = ctx.path("size-%d.png" % size)
            r = ctx.run(["preview", b["good"], "-o", out, "--max-size", str(size), "--quiet"])
            chk.expect(r.returncode == 0, "--max-size %d: exit %d %s" % (size, r.returncode, r.stderr))
            w, h = struct.unpack(">II", open(out, "rb").read()[16:24])
            want = min(size, max(nx, ny))
            chk.note("%d x %d image, --max-size %d: %d x %d" % (nx, ny, size, w, h))
            chk.expect(max(w, h) == want, "--max-size %d gave %d x %d" % (size, w, h))
            chk.expect(abs(min(w, h) - min(nx, ny) * want / max(nx, ny)) <= 1, "aspect ratio kept")
        return chk
    return fn


def bad_test(ctx, name, build, want_rc, patterns):
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        run_dir = ctx.path("badrun-%s" % re.sub(r"\W+", "_", name))
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        out = os.path.join(run_dir, "out.fits")
        before_in = listing(b["dir"])
        args = build(b, out)
        args, kw = args if isinstance(args, tuple) else (args, {})   # kw: e.g. as_nobody()
        r = ctx.run(args, cwd=run_dir, timeout=120, max_file=64 << 20, **kw)
        err = r.stderr.rstrip("\n")
        lines = [l for l in err.splitlines() if l.strip()]
        chk.note("command: %s" % r.cmd.replace(ctx.workdir + os.sep, ""))
        chk.note("exit %d, stderr: %r" % (r.returncode, err))
        chk.expect(r.stdout == "", "stdout is not empty: %r" % r.stdout[:300])
        chk.expect(r.returncode == want_rc, "exit status %d, expected %d" % (r.returncode, want_rc))
        chk.expect(len(lines) == 1, "stderr has %d lines, expected one" % len(lines))
        for p in patterns:
            chk.expect(re.search(p, err) is not None, "stderr does not match /%s/" % p)
        chk.expect("Segmentation" not in err and r.returncode >= 0, "crashed (signal %d)" % -r.returncode)
        left = sorted(listing(run_dir))
        chk.expect(not left, "files left in the output directory: %s" % left)
        new_in = sorted(listing(b["dir"]) - before_in)
        chk.expect(not new_in, "files left next to the inputs: %s" % new_in)
        if os.path.isdir("/nonexistent-dir"):
            chk.fail("/nonexistent-dir exists")
        chk.expect(stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full is no longer a character device")
        return chk
    return fn


def mosaic_scene_dir(ctx, name):
    """An emptied work directory and the 60 x 50 input header the mosaic tests shift."""
    d = ctx.path(name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d, C.cel_header("TAN", 60, 50, (30.0, 10.0), 4.0)


def mosaic_options_test(ctx):
    """mosaic takes reproject's run options from the same table: --region gives the slice of
    the whole mosaic (CRPIX shifted), --retries/--task-timeout/--no-cache/--cache-max-bytes/
    --progress are accepted; --match-background prints the offsets it solved and
    --offsets-out writes them as CSV, equal to the printed ones."""
    def fn():
        chk = C.Check()
        d, h = mosaic_scene_dir(ctx, "mosaic-opts")
        ins = []
        for i, (shift, level) in enumerate(((0, 100.0), (25, 130.0))):
            hh = h.copy()
            hh["CRPIX1"] = hh["CRPIX1"] - shift
            img = C.sky_image(50, 60, 3 + i) + level
            p = os.path.join(d, "in%d.fits" % i)
            C.write_fits(p, img, hh, np.float32)
            ins.append(p)
        tgt = os.path.join(d, "t.hdr")
        C.write_hdr(tgt, C.cel_header("TAN", 90, 55, (30.0, 10.0), 4.0, crpix=(35.5, 28.0)))
        full = os.path.join(d, "full.fits")
        base = ["mosaic"] + ins + ["--target", tgt, "--match-background"]
        r = ctx.run(base + ["-o", full, "--offsets-out", os.path.join(d, "off.csv")])
        chk.expect(r.returncode == 0, "full mosaic: exit %d %s" % (r.returncode, r.stderr))
        printed = [float(m) for m in re.findall(r"background offset of input \d \(.*?\): (\S+)", r.stderr)]
        chk.note("printed offsets: %s" % printed)
        chk.expect(len(printed) == 2 and abs(printed[1] - printed[0]) > 20,
                   "two offsets about 30 apart printed: %r" % r.stderr)
        rows = open(os.path.join(d, "off.csv")).read().splitlines()
        chk.expect(rows[0] == "input,offset" and len(rows) == 3, "CSV: %r" % rows)
        csv = [float(x.rsplit(",", 1)[1]) for x in rows[1:]]
        chk.expect(all(abs(a - b) <= 1e-6 * max(1, abs(a)) for a, b in zip(csv, printed)),
                   "CSV %s differs from printed %s" % (csv, printed))
        r = ctx.run(base + ["-o", os.path.join(d, "q.fits"), "--quiet"])
        chk.expect(r.returncode == 0 and r.stderr == "", "--quiet printed %r" % r.stderr)
        part = os.path.join(d, "part.fits")
        r = ctx.run(base + ["-o", part, "--region", "20:70,10:40", "--retries", "1", "--task-timeout",
                            "60", "--no-cache", "--cache-max-bytes", "64M", "--quiet"])
        chk.expect(r.returncode == 0, "--region: exit %d %s" % (r.returncode, r.stderr))
        if r.returncode == 0:
            got, gh = read_raw(part)
            ref, rh = read_raw(full)
            chk.expect(got.shape == (31, 51), "region shape %s" % (got.shape,))
            if not bits_equal(got, ref[9:40, 19:70]):
                describe_diff(chk, got, ref[9:40, 19:70], "--region slice")
            chk.expect(gh["CRPIX1"] == rh["CRPIX1"] - 19 and gh["CRPIX2"] == rh["CRPIX2"] - 9,
                       "CRPIX not shifted")
        r = ctx.run(base + ["-o", os.path.join(d, "x.fits"), "--region", "80:100,1:10"])
        chk.expect(r.returncode == 1 and "outside the output" in r.stderr, "region outside: %r" % r.stderr)
        r = ctx.run(["mosaic"] + ins + ["--target", tgt, "-o", os.path.join(d, "y.fits"), "--offsets-out",
                                        os.path.join(d, "o.csv")])
        chk.expect(r.returncode == 2 and "--offsets-out goes with --match-background" in r.stderr,
                   "--offsets-out alone: %r" % r.stderr)
        return chk
    return fn


def swarp_options_test(ctx):
    """mosaic with SWarp's options: --combine-type CLIPPED with MAP_WEIGHT maps named by
    --weight-suffix gives the same mosaic as with --weight per input; --clip-log lists the
    rejected pixels of the planted outliers in SWarp's format; --weight-out is 1/--variance-out
    and --rms-out its square root where defined; --dq with --dq-bits blanks the flagged pixel
    and --dq-out is the OR of the contributors' other bits; BACKGROUND weights run."""
    def fn():
        chk = C.Check()
        d, h = mosaic_scene_dir(ctx, "mosaic-swarp")
        ins, wmaps, dqs = [], [], []
        for i, shift in enumerate((0, 12, 24)):
            hh = h.copy()
            hh["CRPIX1"] = hh["CRPIX1"] - shift
            hh["GAIN"] = 4.0
            img = C.sky_image(50, 60, 7 + i) * 0.01 + 100.0
            if i == 1:
                img[20:22, 30:32] = 5000.0   # a cosmic ray on input 1
            p = os.path.join(d, "in%d.fits" % i)
            C.write_fits(p, img, hh, np.float32)
            w = os.path.join(d, "in%d.weight.fits" % i)
            C.write_fits(w, np.full((50, 60), 0.25 * (i + 1)), hh, np.float32)
            q = os.path.join(d, "in%d.dq.fits" % i)
            dq = np.zeros((50, 60))
            dq[10, 5] = 4           # masked by --dq-bits 4
            dq[11, 5] = 8 << i      # informational bits, ORed
            C.write_fits(q, dq, hh, np.int32)
            ins.append(p), wmaps.append(w), dqs.append(q)
        tgt = os.path.join(d, "t.hdr")
        C.write_hdr(tgt, C.cel_header("TAN", 90, 50, (30.0, 10.0), 4.0, crpix=(30.5, 25.5)))
        out = {k: os.path.join(d, k + ".fits") for k in ("a", "b", "w", "v", "r", "q")}
        log = os.path.join(d, "clip.log")
        base = ["mosaic"] + ins + ["--target", tgt, "--order", "nearest-neighbor", "--combine-type",
                                   "CLIPPED", "--weight-type", "MAP_WEIGHT", "--quiet"]
        r = ctx.run(base + ["--weight-suffix", ".weight.fits", "-o", out["a"], "--clip-log", log,
                            "--weight-out", out["w"], "--variance-out", out["v"], "--rms-out", out["r"]])
        chk.expect(r.returncode == 0, "clipped: exit %d %s" % (r.returncode, r.stderr))
        argw = []
        for w in wmaps:
            argw += ["--weight", w]
        r = ctx.run(base + argw + ["-o", out["b"]])
        chk.expect(r.returncode == 0, "--weight: exit %d %s" % (r.returncode, r.stderr))
        if not chk.failed:
            a, _ = read_raw(out["a"])
            b, _ = read_raw(out["b"])
            chk.expect(bits_equal(a, b), "--weight-suffix and --weight differ")
            lines = open(log).read().splitlines()
            chk.note("%d clip log lines, first %r" % (len(lines), lines[:1]))
            fmt = re.compile(r"^ {0,3}\d{1,4} {1,6}\d{1,6} {1,6}\d{1,6} [ +-][ 0-9.e+-]{9}$")
            chk.expect(len(lines) >= 4 and all(fmt.match(x) for x in lines), "clip log format: %r" % lines[:3])
            rej = set((int(x.split()[1]), int(x.split()[2])) for x in lines)
            chk.expect(all(x.split()[0] == "1" for x in lines), "only input 1 rejected: %r" % lines[:3])
            chk.expect({(43, 21), (44, 22)} <= rej, "the cosmic ray's pixels are logged: %r" % sorted(rej))
            chk.expect(abs(a[20, 42] - 100.0) < 5, "the cosmic ray is clipped: %r" % a[20, 42])
            w, _ = read_raw(out["w"])
            v, _ = read_raw(out["v"])
            rr, _ = read_raw(out["r"])
            ok = np.isfinite(v)
            chk.expect(ok.sum() > 1000 and np.allclose(w[ok], 1 / v[ok], rtol=1e-6), "weight != 1/variance")
            chk.expect(np.allclose(rr[ok] ** 2, v[ok], rtol=1e-5), "rms^2 != variance")
            chk.expect(np.all(w[~ok] == 0), "weight where there is no value")
            # One input (weight 0.25): variance 4; two overlapping without clipping: 1/(0.25+0.5).
            chk.expect(abs(v[25, 5] - 4.0) < 1e-5 and abs(v[25, 20] - 1 / 0.75) < 1e-5,
                       "variances %r %r" % (v[25, 5], v[25, 20]))
        dqa = []
        for q in dqs:
            dqa += ["--dq", q]
        r = ctx.run(["mosaic"] + ins + ["--target", tgt, "--order", "nearest-neighbor", "--quiet",
                                        "-o", os.path.join(d, "m.fits"), "--dq-bits", "4", "--dq-out", out["q"]] + dqa)
        chk.expect(r.returncode == 0, "--dq: exit %d %s" % (r.returncode, r.stderr))
        if r.returncode == 0:
            m, _ = read_raw(os.path.join(d, "m.fits"))
            q, _ = read_raw(out["q"])
            # Input i's pixel x lands on target x + 12 i: input 0's flagged pixel only it covers.
            chk.expect(np.isnan(m[10, 5]) and np.isfinite(m[10, 17]) and np.isfinite(m[10, 29]),
                       "DQ-flagged pixels: %r" % m[10, [5, 17, 29]])
            chk.expect(list(q[11, [5, 17, 29]]) == [8, 16, 32] and q[11, 40] == 0,
                       "DQ OR: %r" % q[11, [5, 17, 29, 40]])
        r = ctx.run(["mosaic"] + ins + ["--target", tgt, "--quiet", "-o", os.path.join(d, "bg.fits"),
                                        "--weight-type", "BACKGROUND", "--combine-type", "WEIGHTED",
                                        "--variance-out", os.path.join(d, "bgv.fits")])
        chk.expect(r.returncode == 0, "BACKGROUND: exit %d %s" % (r.returncode, r.stderr))
        return chk
    return fn


def built_with_asan(exe):
    """True if the tessera binary (or the library beside it) is an AddressSanitizer build."""
    paths = [shutil.which(exe) or exe]
    paths.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(paths[0]))),
                              "libtessera.so"))
    for p in paths:
        try:
            with open(p, "rb") as f:
                if b"__asan_init" in f.read():
                    return True
        except OSError:
            pass
    return False


def mapped_inputs_rss_test(ctx):
    """A mosaic of 48 overlapping 1024^2 float32 inputs (192 MB, every one mapped whole) keeps
    at most 128 MiB of them resident: the pages of the inputs used longest ago are dropped
    (before, every input stayed resident, and this run peaked above 200 MB)."""
    def fn():
        chk = C.Check()
        d = ctx.path("mapped-rss")
        tgt = os.path.join(d, "t.hdr")
        ins = [os.path.join(d, "in%02d.fits" % i) for i in range(48)]
        if not os.path.exists(tgt):
            os.makedirs(d, exist_ok=True)
            h = C.cel_header("TAN", 1024, 1024, (30.0, 10.0), 1.0)
            img = np.random.default_rng(48).random((1024, 1024)).astype(np.float32)
            for i, p in enumerate(ins):
                hh = h.copy()
                hh["CRPIX1"] += (i % 7) * 0.37
                C.write_fits(p, img + i, hh, np.float32)
            C.write_hdr(tgt, C.cel_header("TAN", 1000, 1000, (30.0, 10.0), 1.0))
        out = os.path.join(d, "out.fits")
        rss = os.path.join(d, "rss")
        # Under GNU time for the peak RSS (%M, KiB).
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss, ctx.tessera, "mosaic"] + ins +
                           ["--target", tgt, "-o", out, "--quiet", "-j", "1"],
                           capture_output=True, text=True, timeout=300)
        chk.expect(r.returncode == 0, "mosaic: exit %d %s" % (r.returncode, r.stderr[-400:]))
        if r.returncode == 0:
            mb = float(open(rss).read().split()[-1]) / 1024
            chk.note("peak RSS %.1f MB for 192 MB of mapped inputs" % mb)
            chk.expect(mb < 175, "peak RSS %.1f MB: the mapped inputs stayed resident" % mb)
            m, _ = read_raw(out)
            chk.expect(abs(float(np.nanmean(m)) - (0.5 + 23.5)) < 0.05, "mosaic mean %r" % np.nanmean(m))
        return chk
    return fn


def many_inputs_test(ctx):
    """A mosaic of 1000 tiny inputs (float32 read by mapping, int16 through cfitsio) under
    ulimit -n 200, serial and -j 2, is bit-identical to one without the limit: the inputs are
    kept open in a bounded pool, not one descriptor each for the whole run (before, 1000 inputs
    held 1003 descriptors, and the run failed under ulimit -n 900)."""
    def fn():
        chk = C.Check()
        d = ctx.path("many")
        tgt = os.path.join(d, "many.hdr")
        if not os.path.exists(tgt):
            os.makedirs(d, exist_ok=True)
            rng = np.random.default_rng(16)
            h = C.cel_header("TAN", 16, 16, (40.0, 20.0), 3.6)
            for k in ("NAXIS", "NAXIS1", "NAXIS2"):
                h.remove(k)
            for i in range(1000):
                h["CRPIX1"], h["CRPIX2"] = 8.5 - 12 * (i % 40), 8.5 - 12 * (i // 40)
                img = rng.random((16, 16)) * 1000
                data = img.astype(np.float32) if i % 2 else img.astype(np.int16)
                fits.PrimaryHDU(data, header=h).writeto(os.path.join(d, "in%04d.fits" % i))
            C.write_hdr(tgt, C.cel_header("TAN", 490, 310, (40.0, 20.0), 3.6, crpix=(11.5, 11.5)))
        inputs = sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith("in"))
        outs = {}
        for name, jobs, fds in (("free", "1", None), ("limited", "1", 200), ("limited-j2", "2", 200)):
            out = os.path.join(d, "%s.fits" % name)
            t0 = time.time()
            r = ctx.run(["mosaic"] + inputs + ["--target", tgt, "-o", out, "-j", jobs, "--quiet"],
                        max_fds=fds)
            chk.note("%s (-j %s, ulimit -n %s): exit %d in %.2f s %s" % (
                name, jobs, fds or "unchanged", r.returncode, time.time() - t0, r.stderr.strip()[:300]))
            chk.expect(r.returncode == 0, "%s: exit %d" % (name, r.returncode))
            if r.returncode == 0:
                outs[name] = read_raw(out)[0]
        if "free" in outs:
            ref = outs["free"]
            chk.expect(np.isfinite(ref).sum() > ref.size // 2, "the mosaic is mostly blank")
            for name in ("limited", "limited-j2"):
                if name in outs and not bits_equal(outs[name], ref):
                    describe_diff(chk, outs[name], ref, name)
        return chk
    return fn


def cache_stats(ctx, d):
    r = ctx.run(["cache", "stats", d])
    if r.returncode != 0:
        raise C.CaseFailure("cache stats exited %d: %s" % (r.returncode, r.stderr.strip()))
    vals = {}
    for line in r.stdout.splitlines():
        m = re.match(r"(entries|bytes|raw bytes|ratio|hits|misses|stores|evictions|dropped|foreign):\s+([0-9.]+)",
                     line)
        if m:
            vals[m.group(1)] = float(m.group(2))
    return vals, r.stdout


def restored_input_test(ctx):
    """An input edited in place, then given back its size and modification time (as `cp -p` of
    the original does): the cache must not serve the other version's blocks.  Before, the
    file's identity was (path, size, mtime, inode), all equal again, so the rerun was served
    from the cache; its change time (which no user can set) now tells them apart."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        d = ctx.path("cache-restored")
        shutil.rmtree(d, ignore_errors=True)
        inp = ctx.path("restored-in.fits")
        shutil.copy2(sc["inp"], inp)
        extra = ["--method", "exact", "--block", "64x64", "-j", "1", "--cache", d]
        first, _ = ctx.reproject(inp, sc["tgt"], ctx.path("restored-1.fits"), extra)
        st = os.stat(inp)
        with fits.open(inp) as hl:
            loc, n = hl[0].fileinfo()["datLoc"], hl[0].data.size
        with open(inp, "r+b") as f:   # other values, same size, same inode
            f.seek(loc)
            f.write((np.arange(n, dtype=">f4") % 97).tobytes())
        os.utime(inp, ns=(st.st_atime_ns, st.st_mtime_ns))
        st2 = os.stat(inp)
        chk.expect((st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns),
                   "the edit changed inode, size or mtime")
        second, _ = ctx.reproject(inp, sc["tgt"], ctx.path("restored-2.fits"), extra)
        clean, _ = ctx.reproject(inp, sc["tgt"], ctx.path("restored-3.fits"), extra[:-2])
        chk.expect(bits_equal(second, clean), "the rerun after the edit differs from a clean run "
                   "(served from the cache?)")
        chk.expect(not bits_equal(first, second), "the edit did not change the output")
        return chk
    return fn


def cache_test(ctx, method):
    """--cache: a rerun is served from the cache, bit-identical; stats, trim, clear; a
    corrupt block is recomputed with a warning; $TESSERA_CACHE; an unusable DIR."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        d = ctx.path("cache-%s" % method)
        shutil.rmtree(d, ignore_errors=True)
        extra = ["--method", method, "--block", "64x64", "-j", "1"]
        ref, _ = ctx.reproject(sc["inp"], sc["tgt"], ctx.path("cache-ref-%s.fits" % method), extra)
        out = ctx.path("cache-out-%s.fits" % method)
        a, _ = ctx.reproject(sc["inp"], sc["tgt"], out, extra + ["--cache", d])
        b, _ = ctx.reproject(sc["inp"], sc["tgt"], out, extra + ["-j", "2", "--cache", d])
        chk.expect(bits_equal(a, ref), "first run with --cache differs from a run without")
        chk.expect(bits_equal(b, ref), "second run (from the cache, -j 2) differs")
        v, text = cache_stats(ctx, d)
        chk.note(text.strip())
        n = 5 * 5   # 300 x 260 in 64 x 64 blocks
        chk.expect(v.get("entries") == n, "entries %s, expected %d" % (v.get("entries"), n))
        chk.expect(v.get("hits") == n and v.get("misses") == n,
                   "hits %s misses %s, expected %d each" % (v.get("hits"), v.get("misses"), n))
        chk.expect(v.get("ratio", 0) > 1.0, "compression ratio %s" % v.get("ratio"))
        # A corrupt block: recomputed, one warning line, same bits.
        files = sorted(f for f in listing(d) if f.endswith(".tsc"))
        victim = os.path.join(d, files[3])
        with open(victim, "r+b") as f:
            f.seek(200)
            f.write(b"\xff\x00\xff\x00")
        if os.path.exists(out):
            os.unlink(out)
        r = ctx.run(["reproject", sc["inp"], "--target", sc["tgt"], "-o", out, "--quiet", "--cache", d]
                    + extra)
        chk.note("after corrupting %s: exit %d, stderr %r" % (files[3], r.returncode, r.stderr.strip()))
        chk.expect(r.returncode == 0, "exit %d" % r.returncode)
        chk.expect("dropped chunk file" in r.stderr, "no warning about the corrupt block")
        chk.expect(bits_equal(read_raw(out)[0], ref), "result after a corrupt block differs")
        v, _ = cache_stats(ctx, d)
        chk.expect(v.get("dropped") == 1 and v.get("entries") == n,
                   "dropped %s entries %s after the rerun" % (v.get("dropped"), v.get("entries")))
        # $TESSERA_CACHE is the default; --no-cache ignores it.
        env = dict(os.environ, TESSERA_CACHE=d)
        r = subprocess.run([ctx.tessera, "reproject", sc["inp"], "--target", sc["tgt"], "-o", out,
                            "--quiet"] + extra, capture_output=True, text=True, env=env, timeout=300)
        chk.expect(r.returncode == 0, "with $TESSERA_CACHE: exit %d %s" % (r.returncode, r.stderr))
        v2, _ = cache_stats(ctx, d)
        chk.expect(v2.get("hits") == v.get("hits") + n, "$TESSERA_CACHE was not used")
        r = subprocess.run([ctx.tessera, "reproject", sc["inp"], "--target", sc["tgt"], "-o", out,
                            "--quiet", "--no-cache"] + extra, capture_output=True, text=True, env=env,
                           timeout=300)
        v3, _ = cache_stats(ctx, d)
        chk.expect(r.returncode == 0 and v3.get("hits") == v2.get("hits"), "--no-cache used the cache")
        # trim to 1M keeps at most 1 MiB; clear empties it.
        r = ctx.run(["cache", "trim", d, "--cache-max-bytes", "1M"])
        v, _ = cache_stats(ctx, d)
        chk.note("trim: %r" % r.stdout.strip())
        chk.expect(r.returncode == 0 and v.get("bytes", 1e99) <= 1 << 20, "trim left %s bytes" % v.get("bytes"))
        r = ctx.run(["cache", "clear", d])
        v, _ = cache_stats(ctx, d)
        chk.expect(r.returncode == 0 and v.get("entries") == 0, "clear left %s entries" % v.get("entries"))
        # A file where the directory should be: the run succeeds with a warning.
        r = ctx.run(["reproject", sc["inp"], "--target", sc["tgt"], "-o", out, "--quiet", "--cache",
                     sc["inp"]] + extra)
        chk.note("--cache FILE: exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
        chk.expect(r.returncode == 0, "--cache on a file: exit %d" % r.returncode)
        chk.expect("warning" in r.stderr and "without a cache" in r.stderr, "no warning for --cache FILE")
        chk.expect(bits_equal(read_raw(out)[0], ref), "result with an unusable cache differs")
        return chk
    return fn



# ---------------------------------------------------------------------------
# Outputs: special files, symbolic links, runs killed mid-write

def output_options(b, node, other):
    """Every output option of every subcommand, aimed at `node` (`other`: a normal path)."""
    g = ["reproject", b["good"], "--target", b["tgt"]]
    m = ["mosaic", b["good"], "--target", b["tgt"]]
    return [("reproject -o", g + ["-o", node]),
            ("reproject --footprint", g + ["-o", other, "--footprint", node]),
            ("mosaic -o", m + ["-o", node]),
            ("mosaic --footprint", m + ["-o", other, "--footprint", node]),
            ("preview -o", ["preview", b["good"], "-o", node]),
            ("mosaic-header -o", ["mosaic-header", b["good"], "-o", node])]


def special_outputs_test(ctx):
    """A character device, a FIFO, a socket or a directory given as any output is refused
    with one line, nothing is computed or left, the node keeps its type, and a FIFO does not
    hang the run.  (As root a private copy of /dev/full is used: the unfixed tool replaced the
    node.)"""
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        d = ctx.path("special-out")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        nodes = []
        # Named .png, as preview requires of its output's name.
        dev = os.path.join(d, "full-device.png")
        try:
            os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        except OSError:
            dev = "/dev/full"
        nodes.append((dev, "character device", stat.S_ISCHR))
        fifo = os.path.join(d, "fifo.png")
        os.mkfifo(fifo)
        nodes.append((fifo, "FIFO", stat.S_ISFIFO))
        sock = os.path.join(d, "socket.png")
        with socket.socket(socket.AF_UNIX) as so:
            so.bind(sock)
        nodes.append((sock, "socket", stat.S_ISSOCK))
        sub = os.path.join(d, "subdir.png")
        os.makedirs(sub)
        nodes.append((sub, "directory", stat.S_ISDIR))
        before = listing(d)
        for node, kind, is_kind in nodes:
            for opt, args in output_options(b, node, os.path.join(d, "other.fits")):
                t0 = time.time()
                r = ctx.run(args, cwd=d, timeout=60, max_file=64 << 20)
                lines = [l for l in r.stderr.splitlines() if l.strip()]
                what = "%s %s" % (opt, kind)
                chk.expect(r.returncode == 1, "%s: exit %d" % (what, r.returncode))
                chk.expect(len(lines) == 1 and re.search(
                    r'output "%s" exists and is a %s; expected a regular file or a new path'
                    % (re.escape(node), kind), lines[0]) is not None, "%s: stderr %r" % (what, r.stderr))
                chk.expect(r.stdout == "", "%s: stdout %r" % (what, r.stdout))
                chk.expect(is_kind(os.lstat(node).st_mode), "%s: the node is no longer a %s" % (what, kind))
                chk.expect(listing(d) == before, "%s: files changed: %s" % (what, sorted(listing(d) ^ before)))
                if time.time() - t0 > 10:
                    chk.fail("%s: took %.1f s" % (what, time.time() - t0))
        chk.note("%d refusals checked" % (len(nodes) * 6))
        return chk
    return fn


def written(good, path):
    """A regular file at path whose contents pass good()."""
    try:
        return os.path.isfile(path) and not os.path.islink(path) and good(path)
    except (OSError, ValueError):
        return False


def symlink_outputs_test(ctx):
    """An output that is a symbolic link: the file it leads to is replaced and the link stays a
    link, for every writer; a dangling link gets the file it names created."""
    def fn():
        chk = C.Check()
        b = bad_inputs(ctx)
        d = ctx.path("link-out")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "real"))
        direct = os.path.join(d, "direct.fits")
        ctx.reproject(b["good"], b["tgt"], direct)
        cases = [("reproject", lambda o: ["reproject", b["good"], "--target", b["tgt"], "-o", o, "--quiet"],
                  lambda p: read_raw(p)[0].tobytes() == read_raw(direct)[0].tobytes()),
                 ("preview", lambda o: ["preview", b["good"], "-o", o],
                  lambda p: open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"),
                 ("mosaic-header", lambda o: ["mosaic-header", b["good"], "-o", o],
                  lambda p: open(p).readline().startswith("NAXIS"))]
        for name, args, good in cases:
            target = os.path.join(d, "real", name + ".out")
            with open(target, "w") as f:
                f.write("previous contents\n")
            link = os.path.join(d, name + "-link" + (".png" if name == "preview" else ""))
            os.symlink(os.path.join("real", name + ".out"), link)
            r = ctx.run(args(link), cwd=d)
            chk.expect(r.returncode == 0, "%s -o link: exit %d %s" % (name, r.returncode, r.stderr.strip()))
            chk.expect(os.path.islink(link) and os.readlink(link) == os.path.join("real", name + ".out"),
                       "%s: the link was replaced" % name)
            chk.expect(written(good, target), "%s: the link's target was not written" % name)
            dang = os.path.join(d, name + "-dangling" + (".png" if name == "preview" else ""))
            made = os.path.join(d, "real", name + ".new")
            os.symlink(made, dang)
            r = ctx.run(args(dang), cwd=d)
            chk.expect(r.returncode == 0 and os.path.islink(dang) and written(good, made),
                       "%s -o dangling link: exit %d, target %s" % (name, r.returncode, os.path.exists(made)))
        left = sorted(f for f in listing(d) if ".tsr-" in f)
        chk.expect(not left, "temporaries left: %s" % left)
        return chk
    return fn


def kill_test(ctx, fallback):
    """SIGKILL a `reproject -j 2` at several moments of its run: nothing new is left in the
    output directory (O_TMPFILE).  With fallback (the tool built with the test hooks, under
    TSR_TEST_NO_TMPFILE=1: as on a filesystem without O_TMPFILE) a killed run leaves a named
    temporary, which the next run writing that output removes, with one of a fake dead PID,
    keeping one of a live process."""
    def fn():
        chk = C.Check()
        d = ctx.path("kill-%s" % ("named" if fallback else "unnamed"))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        inp, tgt = ctx.path("kill-in.fits"), ctx.path("kill-target.hdr")
        if not os.path.exists(inp):
            C.write_fits(inp, C.sky_image(1000, 1000, 31), C.cel_header("TAN", 1000, 1000, (40.0, 20.0), 1.0),
                         np.float32)
            C.write_hdr(tgt, C.cel_header("TAN", 1400, 1400, (40.0, 20.0), 0.7, rot_deg=20.0))
        env = dict(os.environ)
        exe = ctx.tessera
        if fallback:
            if not ctx.tessera_hooks:
                raise C.CaseFailure("needs --tessera-hooks (the tool built with the test hooks)")
            env["TSR_TEST_NO_TMPFILE"] = "1"
            exe = ctx.tessera_hooks
        out = os.path.join(d, "kill.fits")
        args = [exe, "reproject", inp, "--target", tgt, "-o", out, "-j", "2", "--method", "exact",
                "--quiet"]
        t0 = time.time()
        subprocess.run(args, env=env, check=True, capture_output=True, timeout=600)
        full = time.time() - t0
        os.unlink(out)
        killed = most = 0
        for frac in (0.1, 0.25, 0.4, 0.55, 0.7, 0.85):
            p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(full * frac)
            p.kill()
            killed += p.wait() == -signal.SIGKILL
            if os.path.exists(out):
                os.unlink(out)
            time.sleep(0.1)  # the workers die with their parent (PR_SET_PDEATHSIG)
            left = sorted(listing(d))
            most = max(most, len(left))
            if not fallback:
                chk.expect(not left, "a run killed at %.0f%% left %s" % (100 * frac, left))
        chk.note("a full run takes %.2f s; %d of 6 runs killed before they ended" % (full, killed))
        chk.expect(killed >= 3, "only %d runs were killed mid-run" % killed)
        if not fallback:
            return chk
        # Each run removed the temporary of the killed run before it.
        chk.expect(most == 1, "killed runs left up to %d temporaries at once" % most)
        fake = os.path.join(d, ".kill.fits.tsr-99999999.tmp")   # above the kernel's PID limit
        live = os.path.join(d, ".kill.fits.tsr-%d.tmp" % os.getpid())
        for f in (fake, live):
            with open(f, "w") as fh:
                fh.write("x")
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        chk.expect(r.returncode == 0, "rerun: exit %d %s" % (r.returncode, r.stderr.strip()))
        chk.expect(sorted(listing(d)) == sorted(["kill.fits", os.path.basename(live)]),
                   "after the rerun: %s" % sorted(listing(d)))
        return chk
    return fn


def tree_state(d):
    """Every entry under d with its kind, size and mtime (ns), not following symlinks."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, d)] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
    return out


def cache_foreign_test(ctx):
    """Foreign entries in a cache (issue 16, item 7): clear does not follow a symlinked
    subdirectory; a symlink to a 100 GB sparse file counts nothing and evicts nothing; FIFOs
    hang neither stats, trim, clear nor runs; stats works on a read-only cache and writes
    nothing; clear reports what it could not remove."""
    def fn():
        chk = C.Check()
        sc = scenario_main(ctx)
        extra = ["--block", "64x64", "-j", "1"]
        n = 5 * 5
        ref, _ = ctx.reproject(sc["inp"], sc["tgt"], ctx.path("foreign-ref.fits"), extra)
        out = ctx.path("foreign-out.fits")

        def fresh(name):
            d = ctx.path(name)
            shutil.rmtree(d, ignore_errors=True)
            ctx.reproject(sc["inp"], sc["tgt"], out, extra + ["--cache", d])
            subs = [e for e in os.listdir(d) if re.fullmatch(r"[0-9a-f]{2}", e)]
            if len(subs) != 1:
                raise C.CaseFailure("%s: chunk subdirectories %s, expected one" % (name, subs))
            return d, os.path.join(d, subs[0])

        def rerun(d, what, more=()):
            if os.path.exists(out):
                os.unlink(out)
            r = ctx.run(["reproject", sc["inp"], "--target", sc["tgt"], "-o", out, "--quiet",
                         "--cache", d] + extra + list(more), timeout=60)
            chk.expect(r.returncode == 0, "%s: run exit %d: %s" % (what, r.returncode, r.stderr.strip()))
            if r.returncode == 0:
                chk.expect(bits_equal(read_raw(out)[0], ref), "%s: result differs" % what)

        # The reported bug: a subdirectory replaced by a symlink to another directory.
        d, sub = fresh("foreign-symdir")
        other = ctx.path("foreign-elsewhere")
        shutil.rmtree(other, ignore_errors=True)
        os.rename(sub, other)
        os.symlink(other, sub)
        before = tree_state(other)
        rerun(d, "symlinked subdirectory")
        r = ctx.run(["cache", "clear", d])
        chk.note("clear: exit %d, %r" % (r.returncode, r.stdout.strip()))
        chk.expect(r.returncode == 0, "clear exit %d: %s" % (r.returncode, r.stderr.strip()))
        chk.expect("1 foreign entries left alone" in r.stdout, "clear does not report the symlink")
        chk.expect(tree_state(other) == before and len(before) == n,
                   "the directory behind a symlinked subdirectory changed")
        chk.expect(os.path.islink(sub), "the symlinked subdirectory was removed")

        # A chunk-named symlink to a 100 GB sparse file: not counted, nothing evicted.
        d, sub = fresh("foreign-sparse")
        huge = ctx.path("foreign-huge")
        with open(huge, "wb") as f:
            f.truncate(100 << 30)
        name = sorted(os.listdir(sub))[0]
        os.symlink(huge, os.path.join(sub, name.split("-")[0] + "-99.0.0.0.tsc"))
        rerun(d, "sparse symlink", ["--cache-max-bytes", "1G"])
        v, text = cache_stats(ctx, d)
        chk.note(text.strip())
        chk.expect(v.get("entries") == n and v.get("foreign") == 1 and v.get("bytes", 1e99) < 1 << 30,
                   "entries %s foreign %s bytes %s, expected %d, 1 and < 1 GiB"
                   % (v.get("entries"), v.get("foreign"), v.get("bytes"), n))
        chk.expect(v.get("evictions") == 0 and v.get("hits") == n,
                   "evictions %s hits %s: the sparse file pushed chunks out"
                   % (v.get("evictions"), v.get("hits")))
        chk.expect(os.path.getsize(huge) == 100 << 30, "the sparse file changed")

        # FIFOs where a chunk file, the stats file and a subdirectory go: nothing hangs.
        d, sub = fresh("foreign-fifo")
        victim = os.path.join(sub, sorted(os.listdir(sub))[0])
        fifos = [victim, os.path.join(d, "stats"), os.path.join(d, "ff")]
        for p in fifos:
            if os.path.lexists(p):
                os.unlink(p)
            os.mkfifo(p)
        rerun(d, "FIFOs in the cache")
        rerun(d, "FIFOs in the cache, -j 2", ["-j", "2"])
        for verb in ("stats", "trim", "clear"):
            r = ctx.run(["cache", verb, d], timeout=30)
            chk.expect(r.returncode == 0, "cache %s with FIFOs: exit %d: %s"
                       % (verb, r.returncode, r.stderr.strip()))
        chk.expect(all(os.path.exists(p) and not os.path.isfile(p) for p in fifos),
                   "a FIFO was removed or replaced")

        # stats on a read-only cache: works, and writes nothing (not even a stale temporary's
        # removal), run as nobody when we are root.
        d, sub = fresh("foreign-readonly")
        stale = os.path.join(d, "tmp", "x.999999999.tmp")
        open(stale, "w").close()
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        kw = as_nobody(d)
        subprocess.run(["chmod", "-R", "a-w", d], check=True)
        before = tree_state(d)
        r = ctx.run(["cache", "stats", d], **kw)
        chk.note("read-only stats: exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
        chk.expect(r.returncode == 0 and re.search(r"entries:\s+%d\n" % n, r.stdout) is not None,
                   "stats on a read-only cache: exit %d: %s" % (r.returncode, r.stderr.strip()))
        chk.expect(tree_state(d) == before, "stats changed the read-only cache")
        subprocess.run(["chmod", "-R", "u+w", d], check=True)

        # clear reports what it could not remove, and removes the rest.
        d, sub = fresh("foreign-blocked")
        kw = as_nobody(d)
        os.chmod(sub, 0o555)
        r = ctx.run(["cache", "clear", d], **kw)
        chk.note("blocked clear: exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
        chk.expect(r.returncode == 1, "clear that could not remove: exit %d" % r.returncode)
        chk.expect(re.fullmatch(r"tessera: cache clear: removed 1 file; could not remove %d: "
                                r"\"[^\n]*\.tsc\": Permission denied\n" % n, r.stderr) is not None,
                   "clear message %r" % r.stderr)
        chk.expect(len(os.listdir(sub)) == n and not os.path.exists(os.path.join(d, "stats")),
                   "clear did not keep going past what it could not remove")
        os.chmod(sub, 0o755)
        return chk
    return fn


# ---------------------------------------------------------------------------

def build_tests(ctx, slow):
    tests = []
    # regions
    for region, order, block in [
            ("1:40,231:260", "bilinear", None),         # corner (top left, partly outside the input)
            ("261:300,231:260", "bilinear", None),     # corner (top right)
            ("1:40,1:30", "bilinear", None),           # corner entirely outside the input (all NaN)
            ("57:130,71:149", "bilinear", None),       # interior
            ("1:300,100:100", "bilinear", None),       # one row
            ("150:150,1:260", "bilinear", None),       # one column
            ("150:150,200:200", "bilinear", None),     # one pixel
            ("60:200,60:130", "bilinear", "64x64"),    # crossing block borders
            ("60:200,60:130", "bicubic", "64x64"),
            ("60:200,60:130", "nearest-neighbor", "64x64"),
            ("60:200,60:130", "biquadratic", "64x64"),
            ("60:200,60:130", "lanczos3", "64x64"),
            ("1:40,231:260", "lanczos4", None)]:
        tests.append(("region %s order=%s%s equals the slice of the full output, CRPIX shifted"
                      % (region, order, (" --block " + block) if block else ""),
                      region_test(ctx, region, order, block)))
    # block sizes
    for order in ORDERS:
        for exact in (False, True):
            for block in ("32x32", "64x48", "512x512", "1000x7"):
                tests.append(("block %s bit-identical to default, order=%s %s"
                              % (block, order, "tol=0" if exact else "tol=default"),
                              block_test(ctx, order, exact, block)))
    for order in ("lanczos2", "lanczos3", "lanczos4"):
        for exact in (False, True):
            for block in ("32x32", "1000x7"):
                tests.append(("block %s bit-identical to default, order=%s %s"
                              % (block, order, "tol=0" if exact else "tol=default"),
                              block_test(ctx, order, exact, block)))
    tests.append(("--order lanczos2|3|4 (and LANCZOS3) is SWarp's kernel on astropy's mapping: "
                  "values, edges, NaN supports", lanczos_formula_test(ctx)))
    # footprint
    for order in ("bilinear", "bicubic", "nearest-neighbor", "lanczos3"):
        tests.append(("--footprint equals isfinite(output) order=%s" % order, footprint_test(ctx, order)))
    tests.append(("--footprint with --region 40:210,30:200", footprint_test(ctx, "bilinear", "40:210,30:200")))
    # dtypes
    for in_dtype, opt, bitpix in [("float32", None, -32), ("float64", None, -64),
                                  ("float32", "float64", -64), ("float64", "float32", -32),
                                  ("float32", "float32", -32)]:
        tests.append(("dtype: %s input, %s -> BITPIX %d" % (in_dtype, ("--dtype " + opt) if opt else "default", bitpix),
                      dtype_test(ctx, in_dtype, opt, bitpix)))
    tests.append(("integer input BITPIX 16 with BSCALE/BZERO/BLANK matches reproject", integer_input_test(ctx)))
    # targets, HDUs, verbosity, cubes
    tests.append(("TARGET as a FITS image equals the .hdr target", fits_target_test(ctx)))
    tests.append(("input in extension HDU: default and --hdu 2 equal the single-HDU result", hdu_test(ctx)))
    tests.append(("header with CUNIT 'DEG' (astropy's unitfix) as input and target", fixed_header_test(ctx, "DEG")))
    tests.append(("tile-compressed image with its Z keywords in other legal orders (ZTENSION last, "
                  "first, reversed, after the WCS)", compressed_order_test(ctx)))
    tests.append(("cube whose CD matrix has no spectral row (astropy's cdfix) as input",
                  fixed_header_test(ctx, "CD")))
    tests.append(("--hdu by EXTNAME[,EXTVER], plain and tile-compressed, equals --hdu by number; "
                  "unknown names listed", hdu_name_test(ctx)))
    tests.append(("info: stored BITPIX, scaling, dtype; .fits.gz and .fz read as the plain file",
                  stored_type_test(ctx)))
    tests.append(("--quiet prints nothing; default prints no progress bar on a pipe", quiet_test(ctx)))
    tests.append(("every command: -h/--help its own usage (exit 0, nothing written), --quiet, "
                  "help COMMAND, --version with libraries, info on a .hdr", unix_tool_test(ctx)))
    tests.append(("preview --max-size N: N pixels on the longer side, aspect kept", preview_size_test(ctx)))
    tests.append(("hips: bad arguments exit 2 writing nothing, non-empty DIR refused, nothing outside "
                  "DIR, executors bit-identical, cached rerun computes nothing", hips_cli_test(ctx)))
    tests.append(("mosaic: --region slice, reproject's run options, offsets printed and --offsets-out CSV",
                  mosaic_options_test(ctx)))
    tests.append(("mosaic with SWarp's options: clipped, weight maps, clip log, weight/variance/rms/DQ "
                  "outputs", swarp_options_test(ctx)))
    # Resident memory is the point of this one: AddressSanitizer's shadow and
    # quarantine add hundreds of MB of their own, so it runs on plain builds only.
    if os.access("/usr/bin/time", os.X_OK) and not built_with_asan(ctx.tessera):
        tests.append(("mosaic of 48 mapped 1024^2 inputs keeps at most 128 MiB of them resident",
                      mapped_inputs_rss_test(ctx)))
    tests.append(("to-healpix: cards, executors, --chunk and cache bit-identical, --range, --partial, "
                  "--nested, --combine, read back", to_healpix_test(ctx)))
    tests.append(("cube with 2-D target: NAXIS3 kept, footprint, --region slice of every plane",
                  cube_region_test(ctx)))
    # valid but degenerate inputs
    tests.append(("degenerate input: an all-NaN image gives an all-NaN output and reproject's footprint, every method",
                  degenerate_input_test(ctx, "nan")))
    tests.append(("degenerate input: a 1x1 image onto 32x32 and 1x1 targets equals reproject, every method",
                  degenerate_input_test(ctx, "one")))
    # info
    tests.append(("info on a float32 image", info_test(ctx, "float32")))
    tests.append(("info on a float64 image", info_test(ctx, "float64")))
    tests.append(("info on a 3-D cube", info_test(ctx, "float32", cube=True)))
    tests.append(("info on HEALPix maps: NSIDE, ordering, frame, index scheme, pixels held, "
                  "first/last pixel, rows x repeat, fields; a bad map's message", healpix_info_test(ctx)))
    # chunk cache
    for method in ("interp", "exact"):
        tests.append(("--cache %s: rerun from the cache bit-identical; stats, trim, clear, corrupt "
                      "block, $TESSERA_CACHE, unusable DIR" % method, cache_test(ctx, method)))
    tests.append(("--cache: an input edited in place, its size and mtime restored, is not served "
                  "from the cache", restored_input_test(ctx)))
    tests.append(("--cache with foreign entries: symlinked subdirectory, sparse symlink, FIFOs, "
                  "read-only stats, clear that cannot remove", cache_foreign_test(ctx)))
    tests.append(("drizzle: --region is the slice, -j and --block the same bytes, 33 inputs make a "
                  "context cube; blot --region and -j", drizzle_cli_test(ctx)))
    tests.append(("drizzle with --weight-type and --dq: variance, rms and DQ outputs the same bytes "
                  "for -j, --block and --region; MAP_RMS = MAP_WEIGHT 1/rms^2 = MAP_VARIANCE",
                  drizzle_weights_cli_test(ctx)))
    # bad input
    for name, build, rc, pats in bad_cases():
        tests.append(("bad input: %s -> exit %d, one-line message, no output" % (name, rc),
                      bad_test(ctx, name, build, rc, pats)))
    tests.append(("mosaic of 1000 inputs under ulimit -n 200, serial and -j 2, bit-identical to one "
                  "without the limit", many_inputs_test(ctx)))
    tests.append(("outputs: a device, FIFO, socket or directory as any output is refused and kept",
                  special_outputs_test(ctx)))
    tests.append(("outputs: a symlink's target is replaced, the link kept; a dangling link's target made",
                  symlink_outputs_test(ctx)))
    tests.append(("outputs: SIGKILLed -j 2 runs leave no temporary (O_TMPFILE)", kill_test(ctx, False)))
    tests.append(("outputs: without O_TMPFILE, the next run removes temporaries of dead runs only",
                  kill_test(ctx, True)))
    if slow:
        tests += slow_tests(ctx)
    return tests


def slow_tests(ctx):
    """A 2000 x 1800 output: block invariance and regions at a realistic size."""
    tests = []

    def make():
        nx, ny = 1500, 1400
        hin = C.cel_header("TAN", nx, ny, (280.0, -20.0), 1.0, rot_deg=2.0)
        hout = C.cel_header("TAN", 2000, 1800, (280.0 + 0.01, -20.0 + 0.02), 0.8, rot_deg=31.0, frame="gal")
        c = WCS(hin).pixel_to_world(750, 700).transform_to("galactic")
        hout["CRVAL1"], hout["CRVAL2"] = c.l.deg, c.b.deg
        img = C.punch_nan_holes(C.sky_image(ny, nx, 201, ngauss=80), 202, nholes=30, nsingles=200)
        inp, tgt = ctx.path("big.fits"), ctx.path("big.hdr")
        C.write_fits(inp, img, hin, np.float32)
        C.write_hdr(tgt, hout)
        return inp, tgt

    def big(order, tol, block, region=None):
        inp, tgt = ctx.memo("big", make)
        key = ("big", order, tol, block, region)

        def go():
            extra = ["--order", order] + (["--mapping-tolerance", str(tol)] if tol is not None else []) \
                + (["--block", block] if block else []) + (["--region", region] if region else [])
            out = ctx.path("big.%s.%s.%s.%s.fits" % (order, tol, block, (region or "all").replace(":", "_").replace(",", "-")))
            return ctx.reproject(inp, tgt, out, extra)
        return ctx.memo(key, go)

    for order in ORDERS:
        for tol in (None, 0):
            for block in ("1000x7", "97x131"):
                def fn(order=order, tol=tol, block=block):
                    chk = C.Check()
                    a, _ = big(order, tol, None)
                    b, _ = big(order, tol, block)
                    if bits_equal(a, b):
                        chk.note("bit-identical")
                    else:
                        describe_diff(chk, b, a, "--block %s" % block)
                    return chk
                tests.append(("slow: 2000x1800 block %s bit-identical, order=%s %s"
                              % (block, order, "tol=0" if tol == 0 else "tol=default"), fn))
    for region in ("1:2000,900:900", "513:1024,513:1024", "1999:2000,1:1800"):
        def fn(region=region):
            chk = C.Check()
            a, _ = big("bicubic", None, None)
            b, _ = big("bicubic", None, None, region)
            (x1, x2), (y1, y2) = [[int(v) for v in p.split(":")] for p in region.split(",")]
            want = a[y1 - 1:y2, x1 - 1:x2]
            if bits_equal(b, want):
                chk.note("bit-identical")
            else:
                describe_diff(chk, b, want, "region %s" % region)
            return chk
        tests.append(("slow: 2000x1800 region %s bicubic bit-identical" % region, fn))
    return tests


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--tessera-hooks", help="the tool built with the test hooks (tests/cli/hooks.c)")
    ap.add_argument("--workdir")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--slow", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    try:
        load()
    except Exception as e:  # noqa: BLE001
        print("1..0 # SKIP no /usr/bin/python3 with astropy/reproject (%s: %s)" % (type(e).__name__, e))
        return 0
    warnings.simplefilter("ignore")
    tessera = os.path.abspath(args.tessera) if os.path.sep in args.tessera else args.tessera
    ctx = Ctx(tessera, None)
    ctx.tessera_hooks = os.path.abspath(args.tessera_hooks) if args.tessera_hooks else None
    tests = C.select_tests(build_tests(ctx, args.slow), args.only, args.list)
    if tests is None:
        return 0
    ctx.workdir = workdir = C.open_workdir(args.workdir, "tsr-cli-")
    return C.run_tap(tests, workdir, args.keep,
                     header="tessera: %s; workdir: %s" % (tessera, workdir))


if __name__ == "__main__":
    sys.exit(main())
