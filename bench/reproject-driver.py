#!/usr/bin/python3
"""reproject-driver.py -- astropy reproject as a whole-process peer for bench/compare.

Loads a FITS image, reprojects it onto a target (a .hdr header text file or a
FITS file) with reproject_interp / reproject_adaptive / reproject_exact, and
writes the result to a FITS file, like `tessera reproject` does.  The whole
process (interpreter start, imports, I/O) is what bench/compare times.

    reproject-driver.py IN.fits TARGET.hdr OUT.fits [--method interp] [--order bilinear]

Run it with /usr/bin/python3 (Debian's python3-reproject 0.10).
"""
import argparse
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("target")
    ap.add_argument("output")
    ap.add_argument("--method", choices=["interp", "adaptive", "exact"], default="interp")
    ap.add_argument("--order", default="bilinear",
                    help="interp order: nearest-neighbor, bilinear, biquadratic, bicubic")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                    help="output BITPIX (reproject computes in float64)")
    a = ap.parse_args(argv)

    from astropy.io import fits
    import reproject

    if a.target.endswith((".fits", ".fit", ".fts")):
        th = fits.getheader(a.target)
    else:
        th = fits.Header.fromtextfile(a.target)
    naxis = th["NAXIS"]
    shape = tuple(th["NAXIS%d" % i] for i in range(naxis, 0, -1))

    with fits.open(a.input) as hl:
        hdu = next(h for h in hl if h.data is not None)
        if a.method == "interp":
            arr, _fp = reproject.reproject_interp(hdu, th, shape_out=shape, order=a.order)
        elif a.method == "adaptive":
            arr, _fp = reproject.reproject_adaptive(hdu, th, shape_out=shape)
        else:
            arr, _fp = reproject.reproject_exact(hdu, th, shape_out=shape)
    fits.PrimaryHDU(arr.astype(a.dtype, copy=False), header=th).writeto(a.output, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
