#!/usr/bin/python3
"""Conformance of `tessera reproject --method adaptive` with reproject 0.10's reproject_adaptive.

Usage:
    /usr/bin/python3 conformance_adaptive.py --tessera PATH/TO/tessera [--workdir DIR]
                                             [--only SUBSTRING] [--slow] [--list]

Prints TAP and exits 1 if anything failed; skips (TAP '1..0 # SKIP') when astropy or
reproject cannot be imported.  Run with Debian's /usr/bin/python3 (python3-reproject 0.10).

Each case writes a deterministic input (smooth sky + noise, optionally NaN holes) and a
`.hdr` target, runs reproject_adaptive(..., **options) of 0.10 and tessera with the same
options, `--dtype float64` and `--mapping-tolerance 0` (exact transforms, like reproject),
and requires max |diff| <= 1e-5 x (input max - min) over pixels finite in both, and
identical NaN masks.  Projection pairs cover the TAN->TAN homography, the interpolated grid
(SIN, ZEA, CAR targets, Galactic frame), down- and up-sampling and rotation; options cover
both kernels, every boundary mode, centred and uncentred Jacobians, conserve_flux, cyclic
axes, kernel and sample-region widths and --no-roundtrip.  Not compared, on purpose:
the Hann kernel on an orientation-reversing pair (tessera pads |s| and keeps the sign,
reproject pads the signed value; see README), and bad_value_mode / despike_jacobian, which
0.10 lacks (tests/test-adaptive.c checks their documented behaviour).  One case also runs
the default mapping tolerance (1e-4 px grid) and reports how close it is.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

TOL = 1e-5

CLI = {
    "kernel": "--kernel", "kernel_width": "--kernel-width",
    "sample_region_width": "--sample-region-width", "boundary_mode": "--boundary-mode",
    "boundary_fill_value": "--boundary-fill-value",
    "boundary_ignore_threshold": "--boundary-ignore-threshold", "x_cyclic": "--x-cyclic",
    "y_cyclic": "--y-cyclic", "center_jacobian": "--center-jacobian",
    "conserve_flux": "--conserve-flux", "roundtrip_coords": None,
}


def header(np, nx, ny, proj, crval, scale_arcsec, rot=0.0, flip=False, frame="eq",
           shift=(0.0, 0.0)):
    from astropy.io import fits
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    a, b = ("RA--", "DEC-") if frame == "eq" else ("GLON", "GLAT")
    h["CTYPE1"] = a + "-" + proj
    h["CTYPE2"] = b + "-" + proj
    h["CRVAL1"] = crval[0]
    h["CRVAL2"] = crval[1]
    h["CRPIX1"] = nx / 2 + 0.5 + shift[0]
    h["CRPIX2"] = ny / 2 + 0.5 + shift[1]
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    sx = scale_arcsec / 3600 * (1 if flip else -1)
    sy = scale_arcsec / 3600
    h["CD1_1"] = sx * c
    h["CD1_2"] = -sy * s
    h["CD2_1"] = sx * s
    h["CD2_2"] = sy * c
    if frame == "eq":
        h["RADESYS"] = "ICRS"
    return h


def sky(np, nx, ny, seed, holes=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    d = 10 + 2 * np.sin(0.21 * xx + seed) + 1.5 * np.cos(0.17 * yy) + 0.01 * xx
    for _ in range(12):
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        d += rng.uniform(2, 20) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * rng.uniform(1, 5) ** 2))
    d += rng.normal(0, 0.3, d.shape)
    if holes:
        for _ in range(5):
            x0, y0 = rng.integers(5, nx - 5), rng.integers(5, ny - 5)
            d[y0:y0 + rng.integers(1, 4), x0:x0 + rng.integers(1, 4)] = np.nan
    return d


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--only", default=None)
    ap.add_argument("--slow", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    try:
        warnings.simplefilter("ignore")
        import numpy as np
        from astropy.io import fits
        from reproject import reproject_adaptive
    except Exception as e:  # noqa: BLE001
        print(f"1..0 # SKIP astropy/reproject not importable: {e}")
        return 0
    work = args.workdir or tempfile.mkdtemp(prefix="tsr-adaptive-")
    os.makedirs(work, exist_ok=True)
    tessera = os.path.abspath(args.tessera)

    n = 300 if args.slow else 110
    scen = {
        # name: (input header, output header, holes)
        "tan-rot": (header(np, n, n, "TAN", (150, 2), 1.0),
                    header(np, int(n * 0.8), int(n * 0.75), "TAN", (150.003, 2.002), 1.3, rot=25), False),
        "sin-gal-down": (header(np, n, n, "TAN", (150, 2), 1.0),
                         header(np, int(n / 2.1), int(n / 2.3), "SIN", (236.9546, 41.9051), 2.1,
                                rot=-17, frame="gal"), False),
        "zea-up": (header(np, n, n, "SIN", (83, -5), 1.0),
                   header(np, int(n * 1.3), int(n * 1.2), "ZEA", (83.002, -5.001), 0.6, rot=40), False),
        "car-flip": (header(np, n, n, "TAN", (20, 30), 1.0),
                     header(np, int(n * 1.1), int(n * 1.1), "CAR", (20.001, 30), 0.9, rot=12,
                            flip=True), False),
        "car-flip-down": (header(np, n, n, "TAN", (20, 30), 1.0),
                          header(np, n // 2, n // 2, "CAR", (20.001, 30), 1.7, rot=12, flip=True),
                          False),
        "tan-holes": (header(np, n, n, "TAN", (150, 2), 1.0, shift=(3.3, -2.1)),
                      header(np, n, n, "TAN", (150, 2), 1.2, rot=8), True),
    }
    B = "boundary_mode"
    option_sets = [
        {}, {"kernel": "hann"}, {"center_jacobian": True}, {"conserve_flux": True},
        {"kernel": "hann", "center_jacobian": True, "conserve_flux": True},
        {B: "constant", "boundary_fill_value": 3.5}, {B: "grid-constant", "boundary_fill_value": -2},
        {B: "ignore"}, {B: "ignore_threshold", "boundary_ignore_threshold": 0.3},
        {B: "nearest"}, {B: "nearest", "kernel": "hann"}, {"x_cyclic": True, B: "ignore"},
        {"y_cyclic": True, "kernel": "hann"}, {"kernel_width": 2.0, "sample_region_width": 6},
        {"roundtrip_coords": False},
    ]
    cases = []
    for sname in scen:
        for opts in option_sets:
            if sname == "car-flip-down":
                continue
            if sname == "car-flip" and opts.get("kernel") == "hann":
                continue  # the documented sign-of-singular-value difference
            cases.append((sname, opts, "0"))
    cases.append(("sin-gal-down", {}, None))
    # Flipped and down-sampled: reproject pads the negative singular value to +1 and
    # under-smooths; tessera pads its magnitude.  Expected to differ (by design).
    cases.append(("car-flip-down", {}, "differ"))
    if args.only:
        cases = [c for c in cases if args.only in f"{c[0]} {c[1]}"]
    if args.list:
        for c in cases:
            print(c)
        return 0

    inputs = {}
    for sname, (hin, hout, holes) in scen.items():
        d = sky(np, hin["NAXIS1"], hin["NAXIS2"], len(sname), holes)
        fits.writeto(os.path.join(work, f"{sname}.fits"), d, hin, overwrite=True)
        hout.totextfile(os.path.join(work, f"{sname}.hdr"), overwrite=True)
        inputs[sname] = (d, hin, hout)

    print(f"1..{len(cases)}")
    failed = 0
    t0 = time.time()
    for i, (sname, opts, tol) in enumerate(cases, 1):
        d, hin, hout = inputs[sname]
        label = f"{sname} {opts or 'defaults'}" + (" default-tolerance" if tol is None else
                                                   " expected-difference" if tol == "differ" else "")
        try:
            ref, _ = reproject_adaptive((d, hin), hout, shape_out=(hout["NAXIS2"], hout["NAXIS1"]), **opts)
            out = os.path.join(work, f"out{i}.fits")
            cmd = [tessera, "reproject", os.path.join(work, f"{sname}.fits"), "--target",
                   os.path.join(work, f"{sname}.hdr"), "-o", out, "--method", "adaptive",
                   "--quiet", "--dtype", "float64"]
            if tol is not None:
                cmd += ["--mapping-tolerance", "0" if tol == "differ" else tol]
            for k, v in opts.items():
                if k == "roundtrip_coords":
                    cmd += [] if v else ["--no-roundtrip"]
                elif v is True:
                    cmd.append(CLI[k])
                else:
                    cmd += [CLI[k], str(v)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"tessera exit {r.returncode}: {r.stderr.strip()}")
            got = fits.getdata(out)
            rng = float(np.nanmax(d) - np.nanmin(d))
            both = np.isfinite(ref) & np.isfinite(got)
            diff = float(np.max(np.abs(ref - got)[both])) / rng if both.any() else 0.0
            mism = int(np.sum(np.isnan(ref) != np.isnan(got)))
            nfin = int(both.sum())
            if tol == "differ":
                ok = diff > 1e-3 and mism == 0
                print(f"# {label}: documented difference (|s| padding): max|diff| {diff:.2e} x "
                      f"range (expected > 1e-3), {mism} NaN-mask differences")
            elif tol is None:
                # The 1e-4 px grid: box edges (ceil/floor of c +- h) may flip where c +- h
                # lies within 1e-4 px of an integer; report, and bound loosely.
                close = float(np.mean(np.abs(ref - got)[both] <= TOL * rng)) if nfin else 1.0
                ok = close >= 0.995 and mism <= 0.005 * ref.size
                print(f"# {label}: {nfin} finite, max|diff| {diff:.2e} x range, "
                      f"{100 * close:.2f}% within {TOL:g}, {mism} NaN-mask differences")
            else:
                ok = diff <= TOL and mism == 0 and nfin > 0
                print(f"# {label}: {nfin} finite, max|diff| {diff:.2e} x range, "
                      f"{mism} NaN-mask differences")
        except Exception as e:  # noqa: BLE001
            ok = False
            print(f"# {label}: {e}")
        if not ok:
            failed += 1
        print(f"{'ok' if ok else 'not ok'} {i} - {label}")
        sys.stdout.flush()
    print(f"# {len(cases) - failed} passed, {failed} failed ({time.time() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
