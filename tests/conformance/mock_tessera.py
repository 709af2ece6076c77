#!/usr/bin/python3
"""A stand-in for the tessera CLI built on reproject 0.10 itself, used to check that
conformance.py and ../cli/cli_tests.py detect what they should (not registered as a test).

    /usr/bin/python3 conformance.py --tessera ./mock_tessera.py          # all pass but #464 cases
    MOCK_NANCONFINE=1 /usr/bin/python3 conformance.py --tessera ./mock_tessera.py   # all pass
    MOCK_DX=1e-3 ...   # coordinates off by 1e-3 px: tol=0 cases and coordinate cases fail
    MOCK_DX=5e-3 ...   # also the default-tolerance NaN masks / nearest-neighbour cases fail

Environment: MOCK_DX (px added to every input x coordinate), MOCK_NANCONFINE=1 (orders 2/3:
NaN filled with 0 before the prefilter, output NaN where the support touches a NaN),
MOCK_BROKEN=region|block|footprint|dtype (inject a CLI bug).  --block is otherwise ignored."""
import os, sys, warnings, argparse
warnings.simplefilter("ignore")
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import pixel_to_pixel
from scipy.ndimage import map_coordinates
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conformance as C
C.import_stack(); C.install_ecliptic_mapping()

ORD = {"nearest-neighbor": 0, "bilinear": 1, "biquadratic": 2, "bicubic": 3, "0": 0, "1": 1, "2": 2, "3": 3}


class P(argparse.ArgumentParser):
    def error(self, msg):
        sys.stderr.write("tessera: %s\n" % msg)
        sys.exit(2)


def die(msg, code=1):
    sys.stderr.write("tessera: %s\n" % msg)
    sys.exit(code)


def main():
    if len(sys.argv) < 2:
        die("usage: tessera reproject|info ...", 2)
    cmd = sys.argv[1]
    if cmd == "info":
        f = sys.argv[2]
        try:
            with fits.open(f) as hl:
                d = hl[0]
                print("%s: %s %s" % (f, d.data.shape[::-1], d.data.dtype))
                print(WCS(d.header).celestial)
        except Exception as e:
            die("%s: %s" % (f, e))
        return
    if cmd != "reproject":
        die("unknown command %s" % cmd, 2)
    p = P()
    p.add_argument("input")
    p.add_argument("--target", required=True)
    p.add_argument("-o", dest="out", required=True)
    p.add_argument("--hdu", type=int, default=0)
    p.add_argument("--method", default="interp")
    p.add_argument("--order", default="bilinear")
    p.add_argument("--region")
    p.add_argument("--block")
    p.add_argument("--mapping-tolerance", type=float, default=1e-4)
    p.add_argument("--no-roundtrip", action="store_true")
    p.add_argument("--footprint")
    p.add_argument("--dtype")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(sys.argv[2:])
    if a.order not in ORD:
        die("--order: unknown order '%s'" % a.order, 2)
    if a.block:
        try:
            bw, bh = [int(v) for v in a.block.split("x")]
            assert bw > 0 and bh > 0
        except Exception:
            die("--block: bad value '%s' (expected WxH, positive)" % a.block, 2)
    order = ORD[a.order]
    if not os.path.exists(a.input):
        die("%s: no such file" % a.input)
    try:
        with fits.open(a.input) as hl:
            hdu = hl[a.hdu]
            data = np.array(hdu.data)
            hin = hdu.header.copy()
    except Exception as e:
        die("%s: cannot read FITS: %s" % (a.input, e))
    try:
        win = WCS(hin).celestial
        if not win.has_celestial:
            die("%s: no celestial WCS" % a.input)
    except SystemExit:
        raise
    except Exception as e:
        die("%s: bad WCS: %s" % (a.input, e))
    if a.target.endswith(".hdr"):
        try:
            hout = fits.Header.fromtextfile(a.target)
        except Exception as e:
            die("%s: %s" % (a.target, e))
        if "NAXIS2" not in hout:
            die("%s: missing NAXIS2" % a.target)
    else:
        with fits.open(a.target) as hl:
            hout = hl[0].header.copy()
    wout = WCS(hout).celestial
    nx, ny = hout["NAXIS1"], hout["NAXIS2"]
    x1, x2, y1, y2 = 1, nx, 1, ny
    if a.region:
        try:
            xs, ys = a.region.split(",")
            x1, x2 = [int(v) for v in xs.split(":")]
            y1, y2 = [int(v) for v in ys.split(":")]
        except Exception:
            die("--region: bad value '%s'" % a.region, 2)
        if x2 < x1 or y2 < y1:
            die("--region %s: empty region" % a.region, 2)
        if x1 < 1 or y1 < 1 or x2 > nx or y2 > ny:
            die("--region %s: outside the output (%d x %d)" % (a.region, nx, ny))
    oy, ox = np.mgrid[y1 - 1:y2, x1 - 1:x2].astype(float)
    xin, yin = [np.array(v, dtype=float) for v in pixel_to_pixel(wout, win, ox.ravel(), oy.ravel())]
    if not a.no_roundtrip:
        xb, yb = pixel_to_pixel(win, wout, xin, yin)
        bad = (np.abs(xb - ox.ravel()) > 1) | (np.abs(yb - oy.ravel()) > 1)
        xin[bad] = np.nan; yin[bad] = np.nan
    xin = xin + float(os.environ.get("MOCK_DX", "0"))
    cc = np.array([yin, xin])
    planes = data.reshape((-1,) + data.shape[-2:]).astype(np.float64)
    outs = []
    for pl in planes:
        if order >= 2 and os.environ.get("MOCK_NANCONFINE"):
            nanm = np.isnan(pl)
            v = map_coordinates(np.pad(np.where(nanm, 0, pl), 1, "edge"), cc + 1, order=order, mode="constant", cval=np.nan)
            import scipy.ndimage as nd
            grown = nd.binary_dilation(nanm, iterations=2) if order == 3 else nd.binary_dilation(nanm, iterations=1)
            touch = map_coordinates(np.pad(grown.astype(float), 1, "edge"), cc + 1, order=0, mode="constant", cval=1) > 0
            v[touch] = np.nan
            for i in range(2):
                v[(cc[i] < -0.5) | (cc[i] > pl.shape[i] - 0.5)] = np.nan
        else:
            from reproject.array_utils import map_coordinates as rmc
            v = rmc(pl, cc, order=order, cval=np.nan, mode="constant")
        outs.append(v.reshape(oy.shape))
    res = np.array(outs).reshape(data.shape[:-2] + oy.shape)
    dt = a.dtype or ("float64" if data.dtype.itemsize == 8 and data.dtype.kind == "f" else "float32")
    if os.environ.get("MOCK_BROKEN") == "dtype":
        dt = "float64"
    h = wout.to_header()
    h["CRPIX1"] -= (x1 - 1)
    h["CRPIX2"] -= (y1 - 1)
    if os.environ.get("MOCK_BROKEN") == "region":
        h["CRPIX1"] += (x1 - 1)
    odir = os.path.dirname(os.path.abspath(a.out))
    if not os.path.isdir(odir):
        die("%s: cannot create: No such file or directory" % a.out)
    if os.environ.get("MOCK_BROKEN") == "block" and a.block:
        res = res + 1e-7
    fits.PrimaryHDU(res.astype(dt), header=h).writeto(a.out, overwrite=True)
    if a.footprint:
        fp = np.isfinite(res).astype(dt)
        if os.environ.get("MOCK_BROKEN") == "footprint":
            fp[0, 0] = 1 - fp[0, 0]
        fits.PrimaryHDU(fp, header=h).writeto(a.footprint, overwrite=True)


main()
