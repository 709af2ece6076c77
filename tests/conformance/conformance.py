#!/usr/bin/python3
"""Conformance of `tessera reproject` with astropy reproject 0.10's reproject_interp.

Usage:
    /usr/bin/python3 conformance.py --tessera PATH/TO/tessera [--workdir DIR]
                                    [--only SUBSTRING] [--slow] [--list] [--keep]

Prints TAP (1..N, ok/not ok lines, '#' detail lines, a final '# N passed, N failed')
and exits 1 if anything failed.  Skips (TAP '1..0 # SKIP') when astropy/reproject
cannot be imported.  Run it with Debian's /usr/bin/python3 (python3-reproject 0.10.0,
astropy 5.2, scipy 1.10, numpy 1.24).

Inputs are generated deterministically (numpy seeded): smooth sky-like images (sum of
Gaussians + gradient + a little noise), FITS inputs and `.hdr` targets (astropy
Header.totextfile) written with astropy.  The reference is
reproject.reproject_interp(hdu, header, order=...) of 0.10, whose edge handling pads the
image by one edge pixel and sets NaN beyond half a pixel outside (REFERENCE.md 3.2).

Tolerances (never loosened to make tessera pass; a failure is a finding):
  * --mapping-tolerance 0: max|diff| <= 1e-6 x (input max - min) over pixels finite in
    both, NaN masks identical.
  * default tolerance (1e-4 px grid approximation): max|diff| <= 1e-3 x range, NaN masks
    identical except on pixels whose *reference* input coordinate (astropy
    pixel_to_pixel) lies within 1e-3 px of the -0.5 / n-0.5 edge, or whose round-trip
    error lies within 1e-3 of the 1 px threshold: there the answer flips under any
    coordinate error, so a 1e-4 px approximation may legitimately flip it.
  * nearest-neighbour (order 0) only: a value mismatch is likewise allowed on a pixel whose
    reference input coordinate lies within 1e-3 px (default tolerance) / 1e-4 px (exact
    mapping; that is 0.1 mas at 1"/px, the coordinate accuracy required below) of a
    half-integer, i.e. of a nearest-pixel decision boundary.  Every allowed pixel is
    counted in the '#' lines.

Ecliptic frames.  astropy 5.2's wcs_to_celestial_frame has no ecliptic mapping
(astropy issue #6483, still open): for CTYPE ELON/ELAT, wcslib fills in RADESYS=ICRS
(FK5 if EQUINOX is given), and astropy then returns ICRS() (FK5), i.e. it silently
treats ecliptic longitude/latitude as RA/Dec.  reproject 0.10 out of the box therefore
does no rotation at all for a Galactic->ecliptic or ICRS->ecliptic reprojection, which is
physically wrong by tens of degrees.  This script does NOT use that as the truth.  It
registers (ahead of astropy's built-in mapping) a frame mapping ELON/ELAT ->
astropy's BarycentricMeanEcliptic(equinox=J2000) (equinox from EQUINOX if present),
the IAU 2006 mean ecliptic and equinox of J2000 on ICRS, and runs reproject under it.
The ecliptic coordinate-accuracy case additionally reports, as '#' diagnostics, how far
tessera is from the other conventions one might implement (astropy-5.2-naive ICRS
interpretation; the IAU 1976 obliquity 84381.448" applied to FK5 J2000 or to ICRS as
wcslib's sphx2s would), to show which one tessera follows.
"""

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))

TOL_EXACT = 1e-6      # x range, --mapping-tolerance 0
TOL_DEFAULT = 1e-3    # x range, default mapping tolerance
EDGE_EPS = 1e-3       # px: reference coordinate this close to a decision boundary may flip
NN_EPS_EXACT = 1e-4   # px: nearest-neighbour flip allowance with exact mapping
COORD_MAS = 0.1       # mas: coordinate accuracy, exact mapping
COORD_PX_DEFAULT = 1e-4  # px: coordinate accuracy, default mapping tolerance

ORDERS = ["nearest-neighbor", "bilinear", "biquadratic", "bicubic"]
ORDER_NUM = {o: i for i, o in enumerate(ORDERS)}


class CaseFailure(Exception):
    pass


class Check:
    """Collects '#' detail lines and failures of one TAP test."""

    def __init__(self):
        self.notes = []
        self.failed = False

    def note(self, msg):
        self.notes.append(msg)

    def fail(self, msg):
        self.failed = True
        self.notes.append("FAIL: " + msg)

    def expect(self, cond, msg):
        if not cond:
            self.fail(msg)
        return cond


# ---------------------------------------------------------------------------
# Environment

def import_stack():
    global np, fits, WCS, pixel_to_pixel, reproject_interp, u, coords, ndimage, cKDTree
    import numpy as np  # noqa: F811
    from astropy.io import fits  # noqa: F811
    from astropy.wcs import WCS  # noqa: F811
    from astropy.wcs.utils import pixel_to_pixel  # noqa: F811
    import astropy.units as u  # noqa: F811
    import astropy.coordinates as coords  # noqa: F811
    from scipy import ndimage  # noqa: F811
    from scipy.spatial import cKDTree  # noqa: F811
    from reproject import reproject_interp  # noqa: F811
    globals().update(np=np, fits=fits, WCS=WCS, pixel_to_pixel=pixel_to_pixel,
                     u=u, coords=coords, ndimage=ndimage, cKDTree=cKDTree,
                     reproject_interp=reproject_interp)


def install_ecliptic_mapping():
    """ELON/ELAT -> BarycentricMeanEcliptic, ahead of astropy's built-in mapping
    (which returns ICRS/FK5 for them; see the module docstring)."""
    import astropy.wcs.utils as wu
    from astropy.time import Time

    def ecliptic_frame(wcs):
        try:
            lng, lat = wcs.wcs.lng, wcs.wcs.lat
        except Exception:
            return None
        if lng < 0 or lat < 0:
            return None
        if wcs.wcs.ctype[lng][:4] != "ELON" or wcs.wcs.ctype[lat][:4] != "ELAT":
            return None
        eq = wcs.wcs.equinox
        if eq is None or not np.isfinite(eq):
            eq = 2000.0
        return coords.BarycentricMeanEcliptic(equinox=Time(eq, format="jyear"))

    if not any(ecliptic_frame in s for s in wu.WCS_FRAME_MAPPINGS):
        wu.WCS_FRAME_MAPPINGS.insert(0, [ecliptic_frame])


# ---------------------------------------------------------------------------
# Deterministic inputs

def sky_image(ny, nx, seed, ngauss=30):
    """Sum of Gaussians + gradient + a little noise; values roughly 1..8."""
    rs = np.random.RandomState(seed)
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    img = 1.0 + 0.6 * x / nx + 0.4 * y / ny + 0.3 * np.sin(x / nx * 3.1 + y / ny * 1.7)
    for _ in range(ngauss):
        x0 = rs.uniform(-0.1, 1.1) * nx
        y0 = rs.uniform(-0.1, 1.1) * ny
        sx = rs.uniform(1.5, 0.12 * max(nx, ny))
        sy = sx * rs.uniform(0.5, 1.5)
        amp = rs.uniform(0.2, 4.0)
        img += amp * np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))
    img += rs.normal(0.0, 0.01, img.shape)
    return img


def punch_nan_holes(img, seed, nholes=6, nsingles=20):
    rs = np.random.RandomState(seed)
    ny, nx = img.shape[-2:]
    out = img.copy()
    y, x = np.mgrid[0:ny, 0:nx]
    for _ in range(nholes):
        x0 = rs.uniform(0.1, 0.9) * nx
        y0 = rs.uniform(0.1, 0.9) * ny
        r = rs.uniform(1.5, 7.0)
        out[..., (x - x0) ** 2 + (y - y0) ** 2 <= r * r] = np.nan
    for _ in range(nsingles):
        out[..., rs.randint(0, ny), rs.randint(0, nx)] = np.nan
    # a short column and a row segment touching the image edge
    out[..., 0:5, rs.randint(10, nx - 10)] = np.nan
    out[..., rs.randint(10, ny - 10), nx - 4:nx] = np.nan
    return out


FRAMES = {
    # name: (lon prefix, lat prefix, extra cards)
    "icrs": ("RA--", "DEC-", {"RADESYS": "ICRS"}),
    "fk5": ("RA--", "DEC-", {"RADESYS": "FK5", "EQUINOX": 2000.0}),
    "fk5eq": ("RA--", "DEC-", {"EQUINOX": 2000.0}),   # FK5 by the FITS default rule
    "gal": ("GLON", "GLAT", {}),
    "ecl": ("ELON", "ELAT", {}),
    "fk4eq": ("RA--", "DEC-", {"EQUINOX": 1950.0}),   # FK4 by the FITS default rule
    "fk4": ("RA--", "DEC-", {"RADESYS": "FK4", "EQUINOX": 1950.0}),
    "fk4noe": ("RA--", "DEC-", {"RADESYS": "FK4-NO-E", "EQUINOX": 1950.0}),
    "fk5_1975": ("RA--", "DEC-", {"RADESYS": "FK5", "EQUINOX": 1975.0}),
}

# astropy's own test file: a RICE tile-compressed NGC 1316 image whose ZTENSION card is
# the last of its header, FK4 B1950 by EQUINOX alone (Debian python3-astropy).
COMP_FITS = "/usr/lib/python3/dist-packages/astropy/io/fits/tests/data/comp.fits"


def cel_header(proj, nx, ny, crval, scale_arcsec, rot_deg=0.0, crpix=None,
               frame="icrs", yscale=1.0, extra=None, flipx=False, skew_deg=0.0, use_cd=False):
    lonp, latp, cards = FRAMES[frame]
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"] = nx
    h["NAXIS2"] = ny
    h["CTYPE1"] = lonp + "-" + proj
    h["CTYPE2"] = latp + "-" + proj
    h["CUNIT1"] = "deg"
    h["CUNIT2"] = "deg"
    if crpix is None:
        crpix = ((nx + 1) / 2.0 + 0.137, (ny + 1) / 2.0 - 0.291)
    h["CRPIX1"] = float(crpix[0])
    h["CRPIX2"] = float(crpix[1])
    h["CRVAL1"] = float(crval[0])
    h["CRVAL2"] = float(crval[1])
    h["CDELT1"] = (1.0 if flipx else -1.0) * scale_arcsec / 3600.0
    h["CDELT2"] = scale_arcsec * yscale / 3600.0
    t = math.radians(rot_deg)
    k = math.tan(math.radians(skew_deg))
    # PC = R(rot) @ [[1, k], [0, 1]]
    h["PC1_1"] = math.cos(t)
    h["PC1_2"] = math.cos(t) * k - math.sin(t)
    h["PC2_1"] = math.sin(t)
    h["PC2_2"] = math.sin(t) * k + math.cos(t)
    if use_cd:   # CDi_j = CDELTi * PCi_j (TPV headers come with CD matrices)
        for i in (1, 2):
            for j in (1, 2):
                h["CD%d_%d" % (i, j)] = h["CDELT%d" % i] * h["PC%d_%d" % (i, j)]
        for k in ("CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2"):
            del h[k]
    for k, v in cards.items():
        h[k] = v
    for k, v in (extra or {}).items():
        h[k] = v
    return h


def write_fits(path, data, header, dtype):
    h = header.copy()
    for k in ("NAXIS", "NAXIS1", "NAXIS2", "NAXIS3"):
        h.remove(k, ignore_missing=True)
    hdu = fits.PrimaryHDU(np.asarray(data, dtype=dtype), header=h)
    hdu.writeto(path, overwrite=True)


def write_hdr(path, header):
    if os.path.exists(path):
        os.unlink(path)
    header.totextfile(path)


# ---------------------------------------------------------------------------
# Running tessera and the reference

class Env:
    def __init__(self, tessera, workdir, timeout=300):
        self.tessera = tessera
        self.workdir = workdir
        self.timeout = timeout
        self.cache = {}
        self.tessera_time = 0.0
        self.ref_time = 0.0

    def path(self, name):
        return os.path.join(self.workdir, name)

    def memo(self, key, fn):
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def run_tessera(self, inp, target, out, order, tol=None, extra=(), hdu=None):
        if os.path.exists(out):
            os.unlink(out)
        cmd = [self.tessera, "reproject", inp, "--target", target, "-o", out,
               "--order", order, "--quiet"]
        if tol is not None:
            cmd += ["--mapping-tolerance", repr(float(tol)) if tol else "0"]
        if hdu is not None:
            cmd += ["--hdu", str(hdu)]
        cmd += list(extra)
        t0 = time.time()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise CaseFailure("tessera timed out after %ds: %s" % (self.timeout, " ".join(cmd)))
        except OSError as e:
            raise CaseFailure("cannot run tessera: %s" % e)
        finally:
            self.tessera_time += time.time() - t0
        if r.returncode != 0:
            raise CaseFailure("tessera exited %d: %s\n  command: %s"
                              % (r.returncode, r.stderr.strip()[:500], " ".join(cmd)))
        if not os.path.exists(out):
            raise CaseFailure("tessera exited 0 but wrote no %s (command: %s)" % (out, " ".join(cmd)))
        with fits.open(out, memmap=False) as hl:
            data = hl[0].data
            if data is None:
                raise CaseFailure("%s has no data in its primary HDU" % out)
            return np.array(data, dtype=np.float64), hl[0].header.copy()

    def reference(self, key, data, wcs_in, header_out, order, roundtrip=True):
        """reproject 0.10 reproject_interp; data may have leading extra axes."""
        def go():
            t0 = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr, _ = reproject_interp((np.asarray(data, dtype=np.float64), wcs_in),
                                          header_out, order=ORDER_NUM[order],
                                          roundtrip_coords=roundtrip)
            self.ref_time += time.time() - t0
            return arr
        return self.memo(("ref", key, order, roundtrip), go)


def read_hdr(path):
    return fits.Header.fromtextfile(path)


def mapping_info(wcs_out, wcs_in, shape_out, shape_in):
    """Reference input coordinates of every output pixel and its round-trip error."""
    ny, nx = shape_out
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xin, yin = pixel_to_pixel(wcs_out, wcs_in, x.ravel(), y.ravel())
        xb, yb = pixel_to_pixel(wcs_in, wcs_out, xin, yin)
    rt = np.maximum(np.abs(xb - x.ravel()), np.abs(yb - y.ravel()))
    nyi, nxi = shape_in
    return {
        "xin": xin.reshape(ny, nx), "yin": yin.reshape(ny, nx),
        "rt": rt.reshape(ny, nx), "nx_in": nxi, "ny_in": nyi,
    }


def near_decision(mi, eps, nearest=False, roundtrip=True):
    """Pixels whose reference answer flips under a coordinate error of eps px."""
    xin, yin, rt = mi["xin"], mi["yin"], mi["rt"]
    with np.errstate(invalid="ignore"):
        m = (np.abs(xin + 0.5) < eps) | (np.abs(xin - (mi["nx_in"] - 0.5)) < eps)
        m |= (np.abs(yin + 0.5) < eps) | (np.abs(yin - (mi["ny_in"] - 0.5)) < eps)
        if roundtrip:
            m |= np.abs(rt - 1.0) < eps
        if nearest:
            m |= np.abs((xin - np.floor(xin)) - 0.5) < eps
            m |= np.abs((yin - np.floor(yin)) - 0.5) < eps
    return m


def fmt_pix(idx):
    return "(" + ",".join(str(int(i)) for i in idx) + ")"


def compare(chk, ref, got, rng, rel_tol, mi=None, mask_allow=None, value_allow=None, label=""):
    """NaN masks and values of got (tessera) against ref (reproject)."""
    pre = (label + ": ") if label else ""
    if ref.shape != got.shape:
        chk.fail("%sshape %s, reference %s" % (pre, got.shape, ref.shape))
        return
    ninf = int(np.isinf(got).sum())
    chk.expect(ninf == 0, "%s%d infinite values in tessera output" % (pre, ninf))
    rn = np.isnan(ref)
    gn = ~np.isfinite(got)
    mism = rn != gn
    allowed = np.zeros_like(mism)
    if mask_allow is not None:
        allowed = mism & np.broadcast_to(mask_allow, mism.shape)
    bad = mism & ~allowed
    chk.note("%sNaN mask mismatches: %d (reference NaN/tessera finite %d, reference finite/tessera NaN %d),"
             " %d allowed as edge/round-trip ambiguous; reference NaN %d of %d"
             % (pre, int(mism.sum()), int((rn & ~gn).sum()), int((~rn & gn).sum()),
                int(allowed.sum()), int(rn.sum()), rn.size))
    if bad.any():
        idx = np.argwhere(bad)
        chk.fail("%s%d NaN mask mismatches" % (pre, len(idx)))
        for p in idx[:6]:
            p = tuple(p)
            s = "  at %s reference %s tessera %s" % (fmt_pix(p), ref[p], got[p])
            if mi is not None:
                q = p[-2:]
                s += "; reference input coord x=%.6f y=%.6f (n=%d,%d) round-trip err %.3g" % (
                    mi["xin"][q], mi["yin"][q], mi["nx_in"], mi["ny_in"], mi["rt"][q])
            chk.note(s)
    both = ~rn & ~gn
    d = np.where(both, np.abs(ref - got), 0.0)
    nallow = 0
    if value_allow is not None:
        va = np.broadcast_to(value_allow, d.shape)
        over = (d > rel_tol * rng) & va
        nallow = int(over.sum())
        d = np.where(over, 0.0, d)
    if both.any():
        k = np.unravel_index(np.argmax(d), d.shape)
        mx = float(d[k])
        rms = float(np.sqrt(np.mean((ref[both] - got[both]) ** 2)))
        where = (" at %s (reference %.9g, tessera %.9g)" % (fmt_pix(k), ref[k], got[k])) if mx > 0 else ""
        chk.note("%smax|diff|/range = %.3g (tol %.0e)%s; rms/range %.3g; over %d pixels finite in both;"
                 " range %.6g%s"
                 % (pre, mx / rng, rel_tol, where, rms / rng, int(both.sum()), rng,
                    ("; %d nearest-pixel ties allowed" % nallow) if value_allow is not None else ""))
        if mx > rel_tol * rng:
            chk.fail("%smax|diff|/range %.3g > %.0e" % (pre, mx / rng, rel_tol))
            nbad = int((d > rel_tol * rng).sum())
            chk.note("  %d pixels over tolerance" % nbad)
            if mi is not None:
                q = k[-2:]
                chk.note("  worst pixel reference input coord x=%.6f y=%.6f round-trip err %.3g"
                         % (mi["xin"][q], mi["yin"][q], mi["rt"][q]))
    else:
        chk.note("%sno pixel finite in both" % pre)


# ---------------------------------------------------------------------------
# Case definitions

class Scenario:
    """An input image + a target; its reference per order is memoised."""

    def __init__(self, env, key, data, header_in, header_out, dtype="float32", wcs_in=None,
                 in_header_full=None):
        self.env = env
        self.key = key
        self.data = data
        self.header_in = in_header_full if in_header_full is not None else header_in
        self.wcs_in = wcs_in if wcs_in is not None else WCS(header_in)
        self.header_out = header_out
        self.dtype = dtype
        self.inp = env.path(key + ".fits")
        self.tgt = env.path(key + ".hdr")
        self._written = False
        self._mi = None

    def write(self):
        if not self._written:
            write_fits(self.inp, self.data, self.header_in, self.dtype)
            write_hdr(self.tgt, self.header_out)
            self._written = True

    def stored(self):
        """The input as tessera reads it (after the dtype cast)."""
        return np.asarray(np.asarray(self.data, dtype=self.dtype), dtype=np.float64)

    @property
    def rng(self):
        d = self.stored()
        return float(np.nanmax(d) - np.nanmin(d))

    def reference(self, order, roundtrip=True):
        self.write()
        return self.env.reference(self.key, self.stored(), self.wcs_in, read_hdr(self.tgt), order,
                                  roundtrip=roundtrip)

    def mapinfo(self):
        if self._mi is None:
            wo = WCS(read_hdr(self.tgt))
            ny, nx = self.header_out["NAXIS2"], self.header_out["NAXIS1"]
            self._mi = mapping_info(wo, self.wcs_in, (ny, nx), self.data.shape[-2:])
        return self._mi

    def tessera(self, order, tol, tag=None, extra=()):
        self.write()
        out = self.env.path("%s.%s.%s%s.out.fits" % (self.key, order, "exact" if tol == 0 else "dflt",
                                                      ("." + tag) if tag else ""))
        return self.env.run_tessera(self.inp, self.tgt, out, order, tol=tol, extra=extra)


def standard_check(sc, order, exact, extra=(), tag=None, roundtrip=True):
    """The two tolerance regimes of the brief."""
    def fn():
        chk = Check()
        ref = sc.reference(order, roundtrip=roundtrip)
        opts = list(extra) + ([] if roundtrip else ["--no-roundtrip"])
        got, _ = sc.tessera(order, 0 if exact else None, tag=tag, extra=opts)
        if opts:
            chk.note("tessera options: " + " ".join(opts))
        if not roundtrip:
            n = int((np.isnan(sc.reference(order)) & ~np.isnan(ref)).sum())
            chk.note("pixels NaN in reproject with roundtrip_coords=True but finite without: %d" % n)
        mi = sc.mapinfo()
        nearest = order == "nearest-neighbor"
        if exact:
            value_allow = near_decision(mi, NN_EPS_EXACT, nearest=True, roundtrip=roundtrip) if nearest else None
            compare(chk, ref, got, sc.rng, TOL_EXACT, mi=mi, value_allow=value_allow)
        else:
            mask_allow = near_decision(mi, EDGE_EPS, roundtrip=roundtrip)
            value_allow = near_decision(mi, EDGE_EPS, nearest=True, roundtrip=roundtrip) if nearest else None
            compare(chk, ref, got, sc.rng, TOL_DEFAULT, mi=mi, mask_allow=mask_allow,
                    value_allow=value_allow)
        return chk
    return fn


def projection_scenarios(env, slow=False):
    """(name, scenario factory).  Realistic small fields, 1-10 arcsec/px, plus all-sky."""
    S = 1 if not slow else 4   # linear size factor for --slow
    out = []

    def add(name, key, seed, nin, hin_args, hout_args, dtype=np.float32):
        key = key + ("_big" if slow else "")

        def make():
            nx, ny = nin
            hin = cel_header(nx=nx, ny=ny, **hin_args)
            hout = cel_header(**hout_args)
            return Scenario(env, key, sky_image(ny, nx, seed), hin, hout, dtype=dtype)
        out.append((name, key, make))

    add("TAN->TAN rotated+scaled+shifted", "tan_tan", 1, (240 * S, 220 * S),
        dict(proj="TAN", crval=(150.1, 2.2), scale_arcsec=2.0 / S),
        dict(proj="TAN", nx=210 * S, ny=200 * S, crval=(150.1 + 25 / 3600, 2.2 - 18 / 3600),
             scale_arcsec=2.37 / S, rot_deg=23.0))
    add("SIN->TAN", "sin_tan", 2, (200 * S, 230 * S),
        dict(proj="SIN", crval=(83.63, 22.01), scale_arcsec=5.0 / S, rot_deg=-4.0),
        dict(proj="TAN", nx=190 * S, ny=200 * S, crval=(83.63 - 40 / 3600, 22.01 + 31 / 3600),
             scale_arcsec=5.31 / S, rot_deg=-12.5))
    add("TAN->ZEA", "tan_zea", 3, (220 * S, 200 * S),
        dict(proj="TAN", crval=(201.37, 61.2), scale_arcsec=3.0 / S),
        dict(proj="ZEA", nx=180 * S, ny=190 * S, crval=(201.37 + 0.01, 61.2 - 0.004),
             scale_arcsec=3.7 / S, rot_deg=40.0))
    add("ZEA->CAR", "zea_car", 4, (200 * S, 200 * S),
        dict(proj="ZEA", crval=(10.68, -35.27), scale_arcsec=8.0 / S, rot_deg=7.0),
        dict(proj="CAR", nx=190 * S, ny=170 * S, crval=(10.68 + 0.05, -35.27 + 0.02),
             scale_arcsec=8.9 / S))
    add("CAR->AIT", "car_ait", 5, (210 * S, 190 * S),
        dict(proj="CAR", crval=(266.4, -29.0), scale_arcsec=1.0 / S),
        dict(proj="AIT", nx=200 * S, ny=200 * S, crval=(266.4 - 12 / 3600, -29.0 + 9 / 3600),
             scale_arcsec=1.13 / S, rot_deg=-31.0))
    add("AIT->TAN", "ait_tan", 6, (200 * S, 210 * S),
        dict(proj="AIT", crval=(45.0, 74.5), scale_arcsec=10.0 / S),
        dict(proj="TAN", nx=200 * S, ny=190 * S, crval=(45.0 + 0.1, 74.5 + 0.05),
             scale_arcsec=9.1 / S, rot_deg=15.0))
    # all-sky-ish: CAR input covering 240 x 150 deg at 0.6 deg/px, AIT target covering the
    # whole sphere at 0.9 deg/px (ellipse edge, input edges, round trip all show)
    add("all-sky CAR->AIT 0.6 deg/px", "allsky_car_ait", 7, (400 * S, 250 * S),
        dict(proj="CAR", crval=(20.0, 0.0), scale_arcsec=0.6 * 3600 / S, frame="gal",
             crpix=(200.5 * S + 0.3, 125.5 * S - 0.2)),
        dict(proj="AIT", nx=380 * S, ny=190 * S, crval=(0.0, 0.0), scale_arcsec=0.9 * 3600 / S,
             frame="gal", crpix=(190.5 * S + 0.21, 95.5 * S - 0.13)))
    # distortions: SIP on the input (world->pixel needs the iterative inverse), SIP on the
    # target header, TPV on the input
    sip = {"A_ORDER": 3, "A_2_0": 2.0e-5, "A_0_2": -1.5e-5, "A_1_1": 3.0e-5, "A_3_0": 1.0e-7,
           "A_1_2": -8.0e-8, "B_ORDER": 3, "B_0_2": 2.5e-5, "B_2_0": -1.0e-5, "B_1_1": 1.0e-5,
           "B_0_3": -1.0e-7, "B_2_1": 6.0e-8}
    sip_s = {k: (v if k.endswith("ORDER") else v / S ** (int(k[2]) + int(k[4]) - 1)) for k, v in sip.items()}
    add("TAN-SIP input -> TAN", "sip_tan", 8, (240 * S, 220 * S),
        dict(proj="TAN-SIP", crval=(53.16, -27.79), scale_arcsec=1.5 / S, rot_deg=12.0, extra=sip_s),
        dict(proj="TAN", nx=220 * S, ny=220 * S, crval=(53.16 + 0.004, -27.79 - 0.002),
             scale_arcsec=1.6 / S, rot_deg=-20.0))
    sip_t = {k: (v if k.endswith("ORDER") else 0.5 * v) for k, v in sip_s.items()}
    add("TAN -> TAN-SIP target", "tan_sip", 9, (230 * S, 230 * S),
        dict(proj="TAN", crval=(189.2, 62.2), scale_arcsec=1.5 / S),
        dict(proj="TAN-SIP", nx=210 * S, ny=200 * S, crval=(189.2 - 0.003, 62.2 + 0.004),
             scale_arcsec=1.45 / S, rot_deg=33.0, extra=sip_t))
    tpv = {"PV1_0": 0.0, "PV1_1": 1.0, "PV1_2": 0.0, "PV1_4": 0.2, "PV1_5": -0.15, "PV1_6": 0.1,
           "PV1_7": 2.0, "PV2_0": 0.0, "PV2_1": 1.0, "PV2_2": 0.0, "PV2_4": 0.1, "PV2_5": 0.25,
           "PV2_6": -0.2, "PV2_10": 1.5}
    add("TPV input -> ZEA", "tpv_zea", 10, (200 * S, 200 * S),
        dict(proj="TPV", crval=(150.5, 2.5), scale_arcsec=2.0 / S, extra=tpv, use_cd=True, rot_deg=-6.0),
        dict(proj="ZEA", nx=200 * S, ny=190 * S, crval=(150.5 + 0.01, 2.5 - 0.005),
             scale_arcsec=2.1 / S, rot_deg=9.0))
    add("TAN across the north celestial pole -> SIN", "pole", 11, (220 * S, 220 * S),
        dict(proj="TAN", crval=(0.0, 89.99), scale_arcsec=2.0 / S),
        dict(proj="SIN", nx=200 * S, ny=200 * S, crval=(123.0, 89.995), scale_arcsec=2.2 / S,
             rot_deg=50.0))
    add("TAN flipped x, non-square, skewed -> TAN", "flip", 12, (200 * S, 180 * S),
        dict(proj="TAN", crval=(300.0, -60.0), scale_arcsec=3.0 / S, flipx=True, yscale=1.3,
             skew_deg=8.0),
        dict(proj="TAN", nx=220 * S, ny=200 * S, crval=(300.0 + 0.005, -60.0), scale_arcsec=3.1 / S,
             rot_deg=-70.0))
    # all-sky AIT centred on l=0 onto a CAR centred on l=180, 400 deg wide: the input's seam
    # runs through the middle of the output, and 40 deg of longitude are covered twice
    # (NaN by the round-trip check; finite with --no-roundtrip)
    add("all-sky AIT(l=0) -> CAR(l=180) 400 deg wide", "allsky_ait_car", 15, (380 * S, 190 * S),
        dict(proj="AIT", crval=(0.0, 0.0), scale_arcsec=0.95 * 3600 / S, frame="gal",
             crpix=(190.5 * S + 0.23, 95.5 * S - 0.31)),
        dict(proj="CAR", nx=400 * S, ny=170 * S, crval=(180.0, 0.0), scale_arcsec=1.0 * 3600 / S,
             frame="gal", crpix=(200.5 * S + 0.17, 85.5 * S + 0.11)))
    # all-sky CAR onto a tangential spherical cube (TSC) layout: part of the layout outside
    # the six faces maps to sky that maps back onto another face, so the round-trip check
    # (roundtrip_coords) NaNs thousands of pixels that --no-roundtrip keeps
    add("all-sky CAR -> TSC (round trip matters)", "allsky_car_tsc", 16, (360 * S, 180 * S),
        dict(proj="CAR", crval=(30.0, 10.0), scale_arcsec=1.0 * 3600 / S, frame="gal",
             crpix=(180.5 * S + 0.3, 90.5 * S + 0.2)),
        dict(proj="TSC", nx=400 * S, ny=200 * S, crval=(0.0, 0.0), scale_arcsec=1.0 * 3600 / S,
             frame="gal", crpix=(200.5 * S + 0.37, 100.5 * S + 0.21)))
    # HEALPix projection (Planck-style all-sky maps); like TSC/CSC/QSC its pixel->world in
    # wcslib 7.12 goes wrong when every pixel of one wcsp2s call has the same y
    add("all-sky CAR -> HPX", "allsky_car_hpx", 17, (360 * S, 180 * S),
        dict(proj="CAR", crval=(-40.0, 5.0), scale_arcsec=1.0 * 3600 / S, frame="gal",
             crpix=(180.5 * S - 0.3, 90.5 * S + 0.4)),
        dict(proj="HPX", nx=380 * S, ny=200 * S, crval=(0.0, 0.0), scale_arcsec=1.0 * 3600 / S,
             frame="gal", crpix=(190.5 * S + 0.29, 100.5 * S - 0.17)))
    return out


def frame_scenarios(env):
    out = []

    def add(name, key, seed, fin, fout, crval_in, scale=2.0, rot=11.0):
        def make():
            nx, ny = 200, 190
            hin = cel_header("TAN", nx, ny, crval_in, scale, frame=fin, rot_deg=3.0)
            # same sky position in the output frame
            wi = WCS(hin)
            c = wi.pixel_to_world((nx - 1) / 2 + 7.3, (ny - 1) / 2 - 4.1)
            fo = WCS(cel_header("TAN", 10, 10, (0, 0), 1.0, frame=fout))
            from astropy.wcs.utils import wcs_to_celestial_frame
            co = c.transform_to(wcs_to_celestial_frame(fo))
            sph = co.represent_as(coords.UnitSphericalRepresentation)
            crval = (sph.lon.deg, sph.lat.deg)
            hout = cel_header("TAN", 190, 200, crval, scale * 1.07, rot_deg=rot, frame=fout)
            return Scenario(env, key, sky_image(ny, nx, seed), hin, hout, dtype=np.float64)
        out.append((name, key, make))

    add("ICRS->Galactic", "icrs_gal", 11, "icrs", "gal", (266.40, -28.94))
    add("FK5(J2000)->ICRS", "fk5_icrs", 12, "fk5", "icrs", (10.6847, 41.2690), scale=1.0)
    add("Galactic->ecliptic(BarycentricMeanEcliptic J2000)", "gal_ecl", 13, "gal", "ecl", (121.17, -21.57))
    add("FK5 by EQUINOX=2000 (no RADESYS)->Galactic", "fk5eq_gal", 14, "fk5eq", "gal", (83.82, -5.39))
    add("FK4 B1950 by EQUINOX=1950 (no RADESYS)->ICRS", "fk4eq_icrs", 15, "fk4eq", "icrs", (50.67, -37.21))
    add("FK4 B1950->Galactic", "fk4_gal", 16, "fk4", "gal", (299.59, 35.12))
    add("FK5 J1975->ICRS", "fk5_1975_icrs", 17, "fk5_1975", "icrs", (148.89, 69.07), scale=1.0)
    add("FK5 J1975->Galactic", "fk5_1975_gal", 18, "fk5_1975", "gal", (6.02, -72.08))
    add("ICRS->FK4 B1950", "icrs_fk4", 19, "icrs", "fk4", (201.37, -43.02))
    add("FK4-NO-E B1950->FK5 J2000", "fk4noe_fk5", 20, "fk4noe", "fk5", (83.63, 22.01))
    return out


def comp_fits_scenarios(env):
    """astropy's comp.fits HDU 2 read by tessera from the compressed file itself, onto
    ICRS and Galactic targets; the reference reprojects what astropy decompresses."""
    out = []

    def add(name, key, fout, rot):
        def make():
            if not os.path.exists(COMP_FITS):
                raise CaseFailure("%s is missing (Debian python3-astropy ships it)" % COMP_FITS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(COMP_FITS) as hl:
                    data = np.array(hl[1].data, dtype=np.float32)
                    hin = hl[1].header.copy()
                wi = WCS(hin)
                ny, nx = data.shape
                c = wi.pixel_to_world((nx - 1) / 2 + 5.2, (ny - 1) / 2 - 3.7)
                from astropy.wcs.utils import wcs_to_celestial_frame
                fo = WCS(cel_header("TAN", 10, 10, (0, 0), 1.0, frame=fout))
                sph = c.transform_to(wcs_to_celestial_frame(fo)).represent_as(
                    coords.UnitSphericalRepresentation)
            hout = cel_header("TAN", 420, 300, (sph.lon.deg, sph.lat.deg), 7.0 * 1.09, rot_deg=rot,
                              frame=fout)
            sc = Scenario(env, key, data, hin, hout, dtype=np.float32, wcs_in=wi)
            sc.inp = COMP_FITS
            write_hdr(sc.tgt, hout)
            sc._written = True
            return sc
        out.append((name, key, make))

    add("astropy's comp.fits (RICE, ZTENSION last, FK4 by EQUINOX 1950, SIN)->ICRS", "comp_icrs", "icrs", 9.0)
    add("astropy's comp.fits (RICE, ZTENSION last, FK4 by EQUINOX 1950, SIN)->Galactic", "comp_gal", "gal", -14.0)
    return out


def ramp_scenarios(env):
    """Inputs whose value is the x (y) pixel coordinate, 1 arcsec/px, float64."""
    out = []
    for name, key, fin, fout, crval in [
            ("ICRS->Galactic", "icrs_gal", "icrs", "gal", (150.12, 2.21)),
            ("FK5->Galactic", "fk5_gal", "fk5", "gal", (280.33, -12.4)),
            ("ICRS->ecliptic", "icrs_ecl", "icrs", "ecl", (45.2, 18.9)),
            ("FK5->ICRS", "fk5_icrs", "fk5", "icrs", (201.1, 71.4)),
            ("FK4 B1950->Galactic", "fk4_gal", "fk4", "gal", (83.8, 22.0)),
            ("ICRS->FK4 B1950 by EQUINOX", "icrs_fk4eq", "icrs", "fk4eq", (310.4, -60.3)),
            ("FK5 J1975->ICRS", "fk5_1975_icrs", "fk5_1975", "icrs", (12.5, 85.1))]:
        out.append((name, key, fin, fout, crval))
    return out


def make_ramp_case(env, key, fin, fout, crval):
    def make():
        nx, ny = 200, 200
        hin = cel_header("TAN", nx, ny, crval, 1.0, frame=fin, rot_deg=2.0)
        wi = WCS(hin)
        c = wi.pixel_to_world((nx - 1) / 2 + 3.3, (ny - 1) / 2 - 2.7)
        fo = WCS(cel_header("TAN", 10, 10, (0, 0), 1.0, frame=fout))
        from astropy.wcs.utils import wcs_to_celestial_frame
        co = c.transform_to(wcs_to_celestial_frame(fo))
        sph = co.represent_as(coords.UnitSphericalRepresentation)
        hout = cel_header("TAN", 180, 170, (sph.lon.deg, sph.lat.deg), 1.1, rot_deg=17.0, frame=fout)
        y, x = np.mgrid[0:ny, 0:nx].astype(float)
        inx = env.path("ramp_%s_x.fits" % key)
        iny = env.path("ramp_%s_y.fits" % key)
        tgt = env.path("ramp_%s.hdr" % key)
        write_fits(inx, x, hin, np.float64)
        write_fits(iny, y, hin, np.float64)
        write_hdr(tgt, hout)
        wo = WCS(read_hdr(tgt))
        oy, ox = np.mgrid[0:170, 0:180].astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xin, yin = pixel_to_pixel(wo, wi, ox.ravel(), oy.ravel())
        return dict(inx=inx, iny=iny, tgt=tgt, hin=hin, hout=hout, wi=wi, wo=wo,
                    xin=xin.reshape(oy.shape), yin=yin.reshape(oy.shape), shape_in=(ny, nx))
    return env.memo(("ramp", key), make)


def ecliptic_alternatives(rc):
    """Input pixel coordinates of every output pixel under other ecliptic conventions."""
    wo, wi = rc["wo"], rc["wi"]
    ny, nx = rc["xin"].shape
    oy, ox = np.mgrid[0:ny, 0:nx].astype(float)
    w = wo.wcs_pix2world(ox.ravel(), oy.ravel(), 0)
    lam, bet = np.radians(w[0]), np.radians(w[1])
    v = np.array([np.cos(bet) * np.cos(lam), np.cos(bet) * np.sin(lam), np.sin(bet)])
    eps = math.radians(84381.448 / 3600.0)
    ce, se = math.cos(eps), math.sin(eps)
    q = np.array([v[0], ce * v[1] - se * v[2], se * v[1] + ce * v[2]])
    ra = np.degrees(np.arctan2(q[1], q[0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(q[2], -1, 1)))
    res = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # IAU 1976 obliquity about FK5 J2000's equator, then FK5 -> ICRS
        c = coords.SkyCoord(ra * u.deg, dec * u.deg, frame=coords.FK5(equinox="J2000")).icrs
        x, y = wi.world_to_pixel(c)
        res["IAU1976 obliquity on FK5 J2000 (wcslib-style)"] = (x.reshape(ny, nx), y.reshape(ny, nx))
        # same rotation taken as ICRS directly
        x, y = wi.wcs_world2pix(ra, dec, 0)
        res["IAU1976 obliquity on ICRS (no frame bias)"] = (x.reshape(ny, nx), y.reshape(ny, nx))
        # astropy 5.2 out of the box: ELON/ELAT read as ICRS RA/Dec
        x, y = wi.wcs_world2pix(w[0], w[1], 0)
        res["astropy-5.2-naive: ELON/ELAT treated as ICRS RA/Dec"] = (x.reshape(ny, nx), y.reshape(ny, nx))
    return res


def ramp_check(env, name, key, fin, fout, crval, exact):
    def fn():
        chk = Check()
        rc = make_ramp_case(env, key, fin, fout, crval)
        tol = 0 if exact else None
        tag = "exact" if exact else "dflt"
        gx, _ = env.run_tessera(rc["inx"], rc["tgt"], env.path("ramp_%s_x.%s.out.fits" % (key, tag)),
                                "bilinear", tol=tol, extra=["--dtype", "float64"])
        gy, _ = env.run_tessera(rc["iny"], rc["tgt"], env.path("ramp_%s_y.%s.out.fits" % (key, tag)),
                                "bilinear", tol=tol, extra=["--dtype", "float64"])
        xin, yin = rc["xin"], rc["yin"]
        ny_in, nx_in = rc["shape_in"]
        if gx.shape != xin.shape or gy.shape != xin.shape:
            chk.fail("output shapes %s %s, expected %s" % (gx.shape, gy.shape, xin.shape))
            return chk
        # bilinear interpolation of a ramp is exact only between pixel centres
        m = 5e-3
        inside = ((xin >= m) & (xin <= nx_in - 1 - m) & (yin >= m) & (yin <= ny_in - 1 - m))
        ninside = int(inside.sum())
        nnan = int((inside & ~(np.isfinite(gx) & np.isfinite(gy))).sum())
        chk.expect(ninside > 1000, "only %d output pixels map inside the input" % ninside)
        chk.expect(nnan == 0, "%d pixels mapping inside the input are NaN in tessera's output" % nnan)
        ok = inside & np.isfinite(gx) & np.isfinite(gy)
        err = np.hypot(gx - xin, gy - yin)
        err = np.where(ok, err, 0.0)
        k = np.unravel_index(np.argmax(err), err.shape)
        mx = float(err[k])
        scale = 1.0  # arcsec/px of the input
        chk.note("%s: max coordinate error %.3g px = %.3g mas at output %s (astropy x=%.6f y=%.6f,"
                 " tessera x=%.6f y=%.6f); mean %.3g px over %d pixels"
                 % ("exact" if exact else "default tolerance", mx, mx * scale * 1000, fmt_pix(k),
                    xin[k], yin[k], gx[k], gy[k], float(err[ok].mean()) if ok.any() else 0, int(ok.sum())))
        if exact:
            chk.expect(mx * scale * 1000 < COORD_MAS, "max error %.3g mas >= %.2g mas" % (mx * scale * 1000, COORD_MAS))
        else:
            chk.expect(mx < COORD_PX_DEFAULT, "max error %.3g px >= %.0e px" % (mx, COORD_PX_DEFAULT))
        if fout == "ecl":
            for label, (ax, ay) in ecliptic_alternatives(rc).items():
                e = np.where(ok, np.hypot(gx - ax, gy - ay), np.nan)
                if np.isfinite(e).any():
                    chk.note("  vs %s: max %.4g mas, median %.4g mas"
                             % (label, np.nanmax(e) * 1000, np.nanmedian(e) * 1000))
        return chk
    return fn


def nan_spline_check(env, sc, clean, order):
    """Orders 2/3 with NaN holes: tessera confines NaN to the spline support (#464)."""
    def fn():
        chk = Check()
        data = sc.stored()
        got, _ = sc.tessera(order, None)
        mi = sc.mapinfo()
        xin, yin = mi["xin"], mi["yin"]
        ny_in, nx_in = data.shape
        with np.errstate(invalid="ignore"):
            inside = ((xin >= -0.5) & (xin <= nx_in - 0.5) & (yin >= -0.5) & (yin <= ny_in - 0.5)
                      & (mi["rt"] <= 1.0))
        nanpix = np.argwhere(np.isnan(data))           # (y, x)
        tree = cKDTree(nanpix[:, ::-1].astype(float))  # (x, y)
        pts = np.stack([np.where(inside, xin, 0.0).ravel(), np.where(inside, yin, 0.0).ravel()], axis=1)
        # Chebyshev (max-norm) distance: the spline support is a square (order+1)^2 stencil
        dist = tree.query(pts, p=np.inf)[0].reshape(xin.shape)
        dist = np.where(inside, dist, np.inf)
        gn = np.isnan(got)
        # 1. every tessera NaN is near an input NaN or outside the input
        bad1 = gn & inside & (dist > 2.5)
        chk.note("tessera NaN pixels: %d; inside the input: %d; of those farther than 2.5 px (max-norm) from an"
                 " input NaN: %d" % (int(gn.sum()), int((gn & inside).sum()), int(bad1.sum())))
        if bad1.any():
            chk.fail("%d NaN pixels far from any input NaN" % int(bad1.sum()))
            for p in np.argwhere(bad1)[:5]:
                p = tuple(p)
                chk.note("  at %s input coord x=%.3f y=%.3f, nearest NaN %.2f px" % (fmt_pix(p), xin[p], yin[p], dist[p]))
        # 2. pixels far (> 3 px) from any NaN and inside the input are finite
        far = inside & (dist > 3.0)
        bad2 = far & gn
        chk.note("pixels inside the input and > 3 px from any NaN: %d, NaN among them: %d" % (int(far.sum()), int(bad2.sum())))
        if bad2.any():
            chk.fail("%d pixels far from NaN holes are NaN" % int(bad2.sum()))
        # pixels outside the input must be NaN as for reproject (half a pixel rule)
        with np.errstate(invalid="ignore"):
            outside = ~(((xin >= -0.5 + EDGE_EPS) & (xin <= nx_in - 0.5 - EDGE_EPS) & (yin >= -0.5 + EDGE_EPS)
                         & (yin <= ny_in - 0.5 - EDGE_EPS) & (mi["rt"] <= 1.0 - EDGE_EPS))
                        | near_decision(mi, EDGE_EPS))
        bad3 = outside & ~gn & ~near_decision(mi, EDGE_EPS)
        chk.expect(not bad3.any(), "%d pixels outside the input are finite" % int(bad3.sum()))
        # 3. where reproject itself is finite, values agree to 1e-3 of range
        ref = sc.reference(order)
        rf = np.isfinite(ref)
        chk.note("reproject 0.10 finite pixels: %d of %d (its prefilter spreads any NaN, #464)"
                 % (int(rf.sum()), rf.size))
        both = rf & ~gn
        if both.any():
            d = float(np.max(np.abs(ref[both] - got[both])))
            chk.note("where reproject is finite: max|diff|/range %.3g (tol 1e-3)" % (d / sc.rng))
            chk.expect(d <= TOL_DEFAULT * sc.rng, "max|diff|/range %.3g > 1e-3 where reproject is finite" % (d / sc.rng))
        # 3b. reproject on the same image without holes, far (> 8 px) from any hole: the spline
        # coefficients there are insensitive (geometric decay 0.27^d) to how the holes are filled
        refc = clean.reference(order)
        far8 = inside & (dist > 8.0) & ~gn & np.isfinite(refc)
        if far8.any():
            d = np.abs(refc - got)[far8]
            k = int(np.argmax(d))
            chk.note("vs reproject on the hole-free image, > 8 px from holes: max|diff|/range %.3g (tol 1e-3) over %d px"
                     % (float(d[k]) / sc.rng, int(far8.sum())))
            chk.expect(float(d[k]) <= TOL_DEFAULT * sc.rng,
                       "> 8 px from NaN holes, differs from reproject on the hole-free image by %.3g of range"
                       % (float(d[k]) / sc.rng))
        return chk
    return fn


def cube_check(env, sc, order, exact):
    """Each plane of a 3-plane cube against reproject's broadcast result."""
    def fn():
        chk = Check()
        ref = sc.reference(order)
        got, hdr = sc.tessera(order, 0 if exact else None)
        chk.expect(hdr.get("NAXIS") == 3 and hdr.get("NAXIS3") == sc.data.shape[0],
                   "output NAXIS=%s NAXIS3=%s, expected 3 and %d"
                   % (hdr.get("NAXIS"), hdr.get("NAXIS3"), sc.data.shape[0]))
        mi = sc.mapinfo()
        nearest = order == "nearest-neighbor"
        if ref.shape != got.shape:
            chk.fail("shape %s, reference %s" % (got.shape, ref.shape))
            return chk
        for p in range(ref.shape[0]):
            if exact:
                compare(chk, ref[p], got[p], sc.rng, TOL_EXACT, mi=mi,
                        value_allow=near_decision(mi, NN_EPS_EXACT, True) if nearest else None,
                        label="plane %d" % p)
            else:
                compare(chk, ref[p], got[p], sc.rng, TOL_DEFAULT, mi=mi,
                        mask_allow=near_decision(mi, EDGE_EPS),
                        value_allow=near_decision(mi, EDGE_EPS, True) if nearest else None,
                        label="plane %d" % p)
        return chk
    return fn


def build_tests(env, slow):
    tests = []   # (name, fn)

    def lazy(make_key, make):
        return lambda: env.memo(("sc", make_key), make)

    # 1. projection pairs x every order x both tolerance regimes
    for name, key, make in projection_scenarios(env, slow=False):
        get = lazy(key, make)
        for order in ORDERS:
            for exact in (True, False):
                tests.append(("projection %s order=%s %s" % (name, order, "tol=0" if exact else "tol=default"),
                              (lambda g=get, o=order, e=exact: standard_check(g(), o, e)())))
    if slow:
        for name, key, make in projection_scenarios(env, slow=True):
            get = lazy(key, make)
            for order in ORDERS:
                for exact in (True, False):
                    tests.append(("slow: big projection %s order=%s %s" % (name, order, "tol=0" if exact else "tol=default"),
                                  (lambda g=get, o=order, e=exact: standard_check(g(), o, e)())))

    # 1b. the same with small odd blocks (input windows per block, seams inside blocks)
    for name, key, make in projection_scenarios(env, slow=False):
        get = lazy(key, make)
        for order in ("nearest-neighbor", "bicubic"):
            tests.append(("projection %s order=%s tol=default --block 37x23" % (name, order),
                          (lambda g=get, o=order: standard_check(g(), o, False, extra=["--block", "37x23"],
                                                                 tag="b37x23")())))
    # 1c. --no-roundtrip against roundtrip_coords=False, where the round trip matters
    for name, key, make in projection_scenarios(env, slow=False):
        if key not in ("allsky_car_ait", "allsky_car_tsc"):
            continue
        get = lazy(key, make)
        for order in ("bilinear", "bicubic"):
            for exact in (True, False):
                tests.append(("projection %s order=%s %s --no-roundtrip" % (name, order, "tol=0" if exact else "tol=default"),
                              (lambda g=get, o=order, e=exact: standard_check(g(), o, e, tag="nort", roundtrip=False)())))

    # 2. frame changes x every order x both tolerance regimes
    for name, key, make in frame_scenarios(env):
        get = lazy(key, make)
        for order in ORDERS:
            for exact in (True, False):
                tests.append(("frame %s order=%s %s" % (name, order, "tol=0" if exact else "tol=default"),
                              (lambda g=get, o=order, e=exact: standard_check(g(), o, e)())))

    # 2b. astropy's tile-compressed comp.fits, read from the file itself
    for name, key, make in comp_fits_scenarios(env):
        get = lazy(key, make)
        for order in ORDERS:
            for exact in (True, False):
                tests.append(("%s order=%s %s" % (name, order, "tol=0" if exact else "tol=default"),
                              (lambda g=get, o=order, e=exact: standard_check(g(), o, e)())))

    # 3. NaN holes, orders 0/1: identical NaN masks
    def make_holes():
        nx, ny = 230, 210
        hin = cel_header("TAN", nx, ny, (30.0, -10.0), 3.0)
        hout = cel_header("TAN", 220, 220, (30.0 + 0.003, -10.0 - 0.002), 2.6, rot_deg=-28.0)
        img = punch_nan_holes(sky_image(ny, nx, 21), 22)
        return Scenario(env, "nanholes", img, hin, hout)
    get_holes = lazy("nanholes", make_holes)
    for order in ORDERS[:2]:
        for exact in (True, False):
            tests.append(("NaN holes order=%s %s" % (order, "tol=0" if exact else "tol=default"),
                          (lambda o=order, e=exact: standard_check(get_holes(), o, e)())))

    # 4. partial overlap: target half outside the input
    def make_partial():
        nx, ny = 200, 200
        hin = cel_header("TAN", nx, ny, (120.0, 45.0), 4.0)
        hout = cel_header("TAN", 200, 180, (120.0 + 100 * 4.0 / 3600 / math.cos(math.radians(45)), 45.0 + 0.01),
                          3.8, rot_deg=8.0)
        return Scenario(env, "partial", sky_image(ny, nx, 31), hin, hout)
    get_partial = lazy("partial", make_partial)
    for order in ORDERS:
        for exact in (True, False):
            tests.append(("partial overlap order=%s %s" % (order, "tol=0" if exact else "tol=default"),
                          (lambda o=order, e=exact: standard_check(get_partial(), o, e)())))

    # 5. cubes with a 2-D target: NAXIS3 spectral, and NAXIS3 a bare plane axis
    def make_cube(spectral):
        def make():
            nx, ny, nz = 180, 170, 3
            hin = cel_header("TAN", nx, ny, (210.8, 54.35), 3.0, rot_deg=5.0)
            full = hin.copy()
            full["NAXIS"] = 3
            full["NAXIS3"] = nz
            if spectral:
                full["CTYPE3"] = "FREQ"
                full["CUNIT3"] = "Hz"
                full["CRVAL3"] = 1.4204e9
                full["CDELT3"] = 1.0e5
                full["CRPIX3"] = 1.0
            hout = cel_header("TAN", 170, 160, (210.8 + 0.004, 54.35 - 0.003), 3.3, rot_deg=-19.0)
            data = np.stack([sky_image(ny, nx, 40 + k) * (1 + k) for k in range(nz)])
            key = "cube_spec" if spectral else "cube_plain"
            return Scenario(env, key, data, hin, hout, wcs_in=WCS(hin), in_header_full=full)
        return make
    for spectral in (True, False):
        get = lazy("cube%d" % spectral, make_cube(spectral))
        for order in ORDERS:
            for exact in (True, False):
                tests.append(("cube (3 planes, NAXIS3 %s) 2-D target order=%s %s"
                              % ("FREQ" if spectral else "plain", order, "tol=0" if exact else "tol=default"),
                              (lambda g=get, o=order, e=exact: cube_check(env, g(), o, e)())))

    # 6. orders 2/3 with NaN holes: tessera confines NaN (#464)
    def make_clean():
        sc = get_holes()
        return Scenario(env, "nanholes_clean", sky_image(210, 230, 21), sc.header_in, sc.header_out)
    get_clean = lazy("nanholes_clean", make_clean)
    for order in ORDERS[2:]:
        tests.append(("NaN holes order=%s: NaN confined to the spline support" % order,
                      (lambda o=order: nan_spline_check(env, get_holes(), get_clean(), o)())))

    # 7. coordinate accuracy of frame changes (ramp images)
    for name, key, fin, fout, crval in ramp_scenarios(env):
        for exact in (True, False):
            tests.append(("coordinates %s %s" % (name, "tol=0 < 0.1 mas" if exact else "tol=default < 1e-4 px"),
                          ramp_check(env, name, key, fin, fout, crval, exact)))
    return tests


# ---------------------------------------------------------------------------
# Work directories

WORKDIR_MARKER = ".tessera-test-workdir"


def open_workdir(path, prefix):
    """A fresh temporary directory, or `path`: emptied first if an earlier run made it
    (it holds our marker file), created if missing, used as it is otherwise."""
    if not path:
        d = tempfile.mkdtemp(prefix=prefix)
    else:
        d = os.path.abspath(path)
        if os.path.exists(os.path.join(d, WORKDIR_MARKER)):
            shutil.rmtree(d)
        os.makedirs(d, exist_ok=True)
    if not os.listdir(d):
        open(os.path.join(d, WORKDIR_MARKER), "w").close()
    return d


def close_workdir(d, failed, keep):
    """Remove a work directory we made, unless something failed or --keep."""
    if failed or keep or not os.path.exists(os.path.join(d, WORKDIR_MARKER)):
        print("# files kept in %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


def select_tests(tests, only, list_only):
    """The (name, fn) tests whose names hold one of the strings `only` (any case; all of
    them when it is empty); with list_only, their names are printed and None returned."""
    if only:
        tests = [t for t in tests if any(s.lower() in t[0].lower() for s in only)]
    if list_only:
        for name, _ in tests:
            print(name)
        return None
    return tests


def run_tap(tests, workdir, keep, header=None, summary=None):
    """Run (name, fn) tests, each fn returning a Check (or raising), printing TAP with
    each test's notes as '#' lines (and `header`, and summary() after the totals);
    close workdir.  Returns the exit status."""
    print("1..%d" % len(tests))
    if header:
        print("# " + header)
    sys.stdout.flush()
    npass = nfail = 0
    t_start = time.time()
    for i, (name, fn) in enumerate(tests, 1):
        t0 = time.time()
        try:
            chk = fn()
        except CaseFailure as e:
            chk = Check()
            chk.fail(str(e))
        except Exception:  # noqa: BLE001
            chk = Check()
            chk.fail("exception:\n" + traceback.format_exc())
        print("%s %d - %s" % ("not ok" if chk.failed else "ok", i, name))
        nfail += chk.failed
        npass += not chk.failed
        for n in chk.notes:
            for line in str(n).splitlines():
                print("# " + line)
        print("# (%.2f s)" % (time.time() - t0))
        sys.stdout.flush()
    print("# %d passed, %d failed (%.1f s%s)"
          % (npass, nfail, time.time() - t_start, summary() if summary else ""))
    close_workdir(workdir, nfail > 0, keep)
    return 1 if nfail else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tessera", required=True, help="path to the tessera CLI")
    ap.add_argument("--workdir", help="directory for generated files (default: a temporary one, removed)")
    ap.add_argument("--only", action="append", default=[], help="run tests whose name contains SUBSTRING (repeatable)")
    ap.add_argument("--slow", action="store_true", help="add the heavier variants")
    ap.add_argument("--list", action="store_true", help="list test names and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    args = ap.parse_args(argv)

    try:
        import_stack()
    except Exception as e:  # noqa: BLE001
        print("1..0 # SKIP no /usr/bin/python3 with astropy/reproject (%s: %s)" % (type(e).__name__, e))
        return 0
    warnings.simplefilter("ignore")
    install_ecliptic_mapping()

    tessera = os.path.abspath(args.tessera) if os.path.sep in args.tessera else args.tessera
    env = Env(tessera, None)
    tests = select_tests(build_tests(env, args.slow), args.only, args.list)
    if tests is None:
        return 0
    env.workdir = workdir = open_workdir(args.workdir, "tsr-conformance-")
    return run_tap(tests, workdir, args.keep,
                   header="tessera: %s; workdir: %s" % (tessera, workdir),
                   summary=lambda: "; tessera %.1f s, reference %.1f s"
                   % (env.tessera_time, env.ref_time))


if __name__ == "__main__":
    sys.exit(main())
