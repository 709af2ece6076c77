#!/usr/bin/python3
"""`tessera preview` against astropy.visualization: the PNG's grey levels equal
round(255 * stretch(interval(data))) within 1 level, for every stretch (linear, sqrt,
log, asinh) and scale (zscale, minmax, a percentile), NaN pixels transparent and rows
flipped (FITS row 1 at the bottom); an image larger than --max-size is strided, then
box-averaged to exactly --max-size.

Usage: /usr/bin/python3 conformance_preview.py --tessera PATH [--workdir DIR] [--keep]
Prints TAP; skips (1..0) without astropy or PIL.
"""
import argparse
import os
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conformance as C  # noqa: E402


def box_weights(n_in, n_out):
    """w[i, k]: the overlap of output pixel i (an interval of n_in / n_out input pixels) with
    input pixel k."""
    import numpy as np
    f = n_in / n_out
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        for k in range(n_in):
            w[i, k] = max(0.0, min((i + 1) * f, k + 1) - max(i * f, k))
    return w


def box_average(img, ny, nx):
    """img averaged down to ny x nx, each output pixel the overlap-weighted mean of the finite
    input pixels in its box (NaN where there is none)."""
    import numpy as np
    wy, wx = box_weights(img.shape[0], ny), box_weights(img.shape[1], nx)
    fin = np.isfinite(img)
    num = wy @ np.where(fin, img, 0.0) @ wx.T
    den = wy @ fin.astype(float) @ wx.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    try:
        import numpy as np
        from astropy.io import fits
        from astropy.visualization import (ZScaleInterval, MinMaxInterval, PercentileInterval,
                                           LinearStretch, SqrtStretch, LogStretch, AsinhStretch)
        from PIL import Image
    except Exception as e:  # noqa: BLE001
        print("1..0 # SKIP no astropy/PIL (%s)" % e)
        return 0
    tessera = os.path.abspath(a.tessera)
    work = C.open_workdir(a.workdir, "tsr-preview-")
    rs = np.random.RandomState(5)
    img = rs.normal(100, 5, (90, 120)) + np.linspace(0, 40, 120)[None, :]
    img[10:14, 20:30] = np.nan
    img[50, 60] = 5000.0   # a star: zscale ignores it, minmax does not
    src = os.path.join(work, "img.fits")
    fits.PrimaryHDU(img.astype(np.float32)).writeto(src, overwrite=True)
    data = img.astype(np.float32).astype(np.float64)
    stretches = {"linear": LinearStretch(), "sqrt": SqrtStretch(), "log": LogStretch(),
                 "asinh": AsinhStretch()}
    scales = {"zscale": ZScaleInterval(), "minmax": MinMaxInterval(), "99.5": PercentileInterval(99.5)}
    tests = [(s, k) for s in stretches for k in scales] + [("max-size", None)]
    print("1..%d" % len(tests))
    nfail = 0
    for i, (st, sc) in enumerate(tests, 1):
        chk = C.Check()
        t0 = time.time()
        try:
            out = os.path.join(work, "p%d.png" % i)
            if st == "max-size":
                cmd = [tessera, "preview", src, "-o", out, "--max-size", "50", "--scale", "minmax"]
                # The largest stride keeping >= 50 columns (2: 60 x 45), then box-averaged to
                # exactly 50 columns and round(90 * 50 / 120) = 38 rows.
                ref_data = box_average(data[::2, ::2], 38, 50)
                interval, stretch = MinMaxInterval(), LinearStretch()
            else:
                cmd = [tessera, "preview", src, "-o", out, "--stretch", st, "--scale", sc]
                ref_data, interval, stretch = data, scales[sc], stretches[st]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            chk.expect(r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr.strip()))
            if not chk.failed:
                im = np.array(Image.open(out))
                grey, alpha = im[::-1, :, 0].astype(int), im[::-1, :, 1]
                chk.expect(grey.shape == ref_data.shape, "shape %s, expected %s"
                           % (grey.shape, ref_data.shape))
                finite = np.isfinite(ref_data)
                lo, hi = interval.get_limits(ref_data[finite])
                v = np.clip((ref_data - lo) / (hi - lo), 0, 1)
                want = np.round(255 * np.clip(stretch(np.nan_to_num(v)), 0, 1)).astype(int)
                d = np.abs(grey - want)[finite]
                chk.note("limits %.6g .. %.6g; max level difference %d" % (lo, hi, int(d.max())))
                chk.expect(int(d.max()) <= 1, "grey levels differ by up to %d" % int(d.max()))
                chk.expect(np.all(alpha[~finite] == 0) and np.all(alpha[finite] == 255),
                           "alpha is not 0 exactly on NaN pixels")
        except Exception:  # noqa: BLE001
            chk.fail(traceback.format_exc())
        print("%s %d - preview %s %s" % ("not ok" if chk.failed else "ok", i, st, sc or ""))
        for n in chk.notes:
            for line in str(n).splitlines():
                print("# " + line)
        print("# (%.2f s)" % (time.time() - t0))
        nfail += chk.failed
    C.close_workdir(work, nfail > 0, a.keep)
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
