#!/usr/bin/python3
"""HiPS conformance: `tessera hips` against reproject 0.21's reproject_to_hips
conventions, rebuilt here from its documented rules (0.21 is not installed):

- each tile's WCS is reproject's tile_header: HPX (PV2_1 = 4, PV2_2 = 3),
  CRVAL 0 0, CD [[-r, -r], [r, -r]] with r = 45 / T / 2^k degrees, CRPIX
  putting the point (0.75, 0.25) of the tile's HEALPix pixel (astropy-healpix
  offsets) at pixel (T/4, T/4); a tile whose corners land more than T apart
  ("border") also has the header with CRPIX' = (T + 1 - CRPIX2, T + 1 -
  CRPIX1), and its data are the footprint-weighted mean of both;
- the deepest tiles' data equal reproject 0.10's reproject_interp onto those
  headers (bilinear), the set of tiles written equals the set whose
  reprojection has data, lower orders are the 2x2 nanmean of their children in
  reproject's quadrants, Allsky files lay tiles in NESTED order in
  floor(sqrt(12 4^o)) columns, Moc.fits covers exactly the deepest tiles, and
  `properties` has reproject's keys.
Frames equatorial and galactic, polar tiles, border tiles on the seam, an all-sky
CAR map, one and two inputs.
Prints TAP."""
import argparse
import math
import os
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS
    from astropy_healpix import HEALPix
    from PIL import Image
    from reproject import reproject_interp
    import conformance_healpix as ch
except ImportError as e:  # pragma: no cover
    print("1..0 # SKIP needs numpy, astropy, astropy-healpix, PIL, reproject: %s" % e)
    sys.exit(0)

check = ch.check
warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN blocks


def base_wcs(frame, level, T):
    w = WCS(naxis=2)
    if frame == "galactic":
        w.wcs.ctype = ["GLON-HPX", "GLAT-HPX"]
    elif frame == "ecliptic":
        w.wcs.ctype = ["ELON-HPX", "ELAT-HPX"]
    else:
        w.wcs.ctype = ["RA---HPX", "DEC--HPX"]
        w.wcs.radesys = "ICRS"
    w.wcs.crval = 0.0, 0.0
    res = 45 / T / 2 ** level
    w.wcs.cd = [[-res, -res], [res, -res]]
    w.wcs.set_pv([(2, 1, 4), (2, 2, 3)])
    return w


def tile_wcs(frame, level, index, T):
    """reproject 0.21's tile_header_2d, from its rules: (header, second header or None)."""
    hp = HEALPix(nside=2 ** level, order="nested")
    w = base_wcs(frame, level, T)
    lon, lat = hp.healpix_to_lonlat(index, dx=[0.5, 0.9, 0.9, 0.1, 0.1],
                                    dy=[0.5, 0.1, 0.9, 0.9, 0.1])
    ox, oy = w.wcs_world2pix(lon.deg, lat.deg, 0)
    border = np.max(np.hypot(ox[1:] - ox[0], oy[1:] - oy[0])) > T
    lon, lat = hp.healpix_to_lonlat(index, dx=0.75, dy=0.25)
    ox, oy = w.wcs_world2pix(lon.deg, lat.deg, 0)
    w.wcs.crpix = [-ox - 0.5 + T / 4, -oy - 0.5 + T / 4]
    w.pixel_shape = (T, T)
    w2 = None
    if border:
        w2 = w.deepcopy()
        w2.wcs.crpix = [-w.wcs.crpix[1] + T + 1, -w.wcs.crpix[0] + T + 1]
    return w, w2


def reference_tile(inputs, frame, level, index, T):
    """reproject_to_hips's tile: reproject_interp onto the header(s), the two
    headers' results combined by their footprints; several inputs: mean."""
    w, w2 = tile_wcs(frame, level, index, T)
    num = np.zeros((T, T))
    den = np.zeros((T, T))
    for data, wcs in inputs:
        for hw in (w, w2):
            if hw is None:
                continue
            a, f = reproject_interp((data, wcs), hw, shape_out=(T, T), order="bilinear")
            num += np.nan_to_num(a) * f
            den += f
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den == 0] = np.nan
    return out


def tile_path(d, level, index, ext):
    return os.path.join(d, "Norder%d" % level, "Dir%d" % (index // 10000 * 10000),
                        "Npix%d.%s" % (index, ext))


def written(d, level):
    out = set()
    for root, _, files in os.walk(os.path.join(d, "Norder%d" % level)):
        for f in files:
            if f.startswith("Npix") and f.endswith(".fits"):
                out.add(int(f[4:-5]))
    return out


def make_image(path, ra, dec, n, scale_deg, rot=0.0, frame="icrs", seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    data = (np.sin(x / 7.0) * np.cos(y / 11.0) + 0.002 * x + 0.1 * rng.standard_normal((n, n)))
    data = data.astype(np.float32)
    data[n // 3:n // 3 + 3, n // 2:n // 2 + 5] = np.nan
    h = fits.Header()
    if frame == "galactic":
        h["CTYPE1"], h["CTYPE2"] = "GLON-TAN", "GLAT-TAN"
    else:
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
        h["RADESYS"] = "ICRS"
    h["CRPIX1"] = h["CRPIX2"] = (n + 1) / 2
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    h["CD1_1"], h["CD1_2"] = -scale_deg * c, scale_deg * s
    h["CD2_1"], h["CD2_2"] = scale_deg * s, scale_deg * c
    fits.PrimaryHDU(data, h).writeto(path, overwrite=True)
    return data.astype(float), WCS(h)


def make_car(path):
    """A 1-degree all-sky CAR map in ICRS, smooth, with a NaN patch."""
    y, x = np.mgrid[0:180, 0:360]
    data = (np.sin(np.radians(x) * 3) * np.cos(np.radians(y - 90)) + 0.01 * y).astype(np.float32)
    data[100:110, 200:215] = np.nan
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---CAR", "DEC--CAR"
    h["RADESYS"] = "ICRS"
    h["CRPIX1"], h["CRPIX2"] = 180.5, 90.5
    h["CRVAL1"], h["CRVAL2"] = 180.0, 0.0
    h["CDELT1"], h["CDELT2"] = -1.0, 1.0
    fits.PrimaryHDU(data, h).writeto(path, overwrite=True)
    return data.astype(float), WCS(h)


def candidates(inputs, frame, level, radius_deg):
    hp = HEALPix(nside=2 ** level, order="nested",
                 frame={"equatorial": "icrs", "galactic": "galactic"}[frame])
    out = set()
    import astropy.units as u
    for data, wcs in inputs:
        ny, nx = data.shape
        c = wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2)
        out |= set(int(i) for i in hp.cone_search_skycoord(c, radius=radius_deg * u.deg))
    return out


def run_case(a, name, inputs, files, level, T, frame, extra=(), radius=15):
    d = os.path.join(a.workdir, name)
    subprocess.run(["rm", "-rf", d], check=True)
    r = subprocess.run([a.tessera, "hips", *files, "-o", d, "--level", str(level),
                        "--tile-width", str(T), "--frame", frame, "-j", "2", "--quiet", *extra],
                       capture_output=True, text=True)
    check("%s: tessera hips runs" % name, r.returncode == 0, r.stderr.strip())
    if r.returncode != 0:
        return None
    got = written(d, level)
    cands = candidates(inputs, frame, level, radius)
    ref_set, worst, mask_bad, hdr_bad, nborder = set(), 0.0, [], [], 0
    rng = 0.0
    for data, _ in inputs:
        rng = max(rng, float(np.nanmax(data) - np.nanmin(data)))
    for idx in sorted(cands | got):
        ref = reference_tile(inputs, frame, level, idx, T)
        if np.isfinite(ref).any():
            ref_set.add(idx)
        if idx not in got:
            continue
        w, w2 = tile_wcs(frame, level, idx, T)
        nborder += w2 is not None
        with fits.open(tile_path(d, level, idx, "fits")) as hl:
            h = hl[0].header
            tile = hl[0].data.astype(float)
            tw = WCS(h)
        if (h["BITPIX"] != -32 or h["NPIX"] != idx or h["ORDER"] != level or
                np.abs(tw.wcs.crpix - w.wcs.crpix).max() > 1e-6 or
                np.abs(tw.wcs.cd - w.wcs.cd).max() > 1e-15 or list(tw.wcs.ctype) != list(w.wcs.ctype)
                or abs(h["PV2_1"] - 4) > 0 or abs(h["PV2_2"] - 3) > 0):
            hdr_bad.append(idx)
        fin = np.isfinite(ref)
        if (np.isfinite(tile) != fin).sum() > max(2, 1e-3 * fin.sum()):
            mask_bad.append((idx, int((np.isfinite(tile) != fin).sum())))
        both = fin & np.isfinite(tile)
        if both.any():
            worst = max(worst, float(np.abs(tile[both] - ref[both]).max()) / rng)
    check("%s: the tiles written are those with data (%d)" % (name, len(got)), got == ref_set,
          "only tessera: %s; only reproject: %s" % (sorted(got - ref_set)[:10],
                                                    sorted(ref_set - got)[:10]))
    check("%s: tile headers are reproject 0.21's (CRPIX, CD, CTYPE, PV, NPIX, ORDER)" % name,
          not hdr_bad, "bad: %s" % hdr_bad[:10])
    check("%s: tile data equal reproject_interp onto them within 1e-5 of range (max %.2e; %d "
          "border tiles)" % (name, worst, nborder), worst < 1e-5 and not mask_bad,
          "NaN masks differ: %s" % mask_bad[:10])
    return d, got


def check_pyramid(name, d, level, T, frame, deepest):
    # Lower orders: the 2x2 nanmean of the children, in reproject's quadrants.
    bad, cur = [], deepest
    for o in range(level - 1, -1, -1):
        parents = written(d, o)
        exp = set(i // 4 for i in cur)
        if parents != exp:
            bad.append("order %d: %d tiles, expected %d" % (o, len(parents), len(exp)))
        for p in sorted(parents)[:6]:
            arr = np.full((T, T), np.nan)
            h = T // 2
            for s in range(4):
                c = 4 * p + s
                if c not in cur:
                    continue
                t = fits.getdata(tile_path(d, o + 1, c, "fits")).astype(float)
                with np.errstate(invalid="ignore"):
                    blk = np.nanmean(t.reshape(h, 2, h, 2).transpose(0, 2, 1, 3).reshape(h, h, 4),
                                     axis=2)
                ys = slice(h, None) if s in (0, 2) else slice(None, h)
                xs = slice(h, None) if s in (2, 3) else slice(None, h)
                arr[ys, xs] = blk
            got = fits.getdata(tile_path(d, o, p, "fits")).astype(float)
            hdr = fits.getheader(tile_path(d, o, p, "fits"))
            w, _ = tile_wcs(frame, o, p, T)
            if not (np.array_equal(np.isnan(arr), np.isnan(got)) and
                    np.allclose(arr[~np.isnan(arr)], got[~np.isnan(got)], rtol=1e-6, atol=1e-6)):
                bad.append("order %d tile %d data" % (o, p))
            if np.abs(WCS(hdr).wcs.crpix - w.wcs.crpix).max() > 1e-6:
                bad.append("order %d tile %d header" % (o, p))
        cur = parents
    check("%s: lower orders are the 2x2 nanmeans of their children" % name, not bad, "; ".join(bad))

    # Allsky: tiles in NESTED order, floor(sqrt(12 4^o)) columns, 64-pixel tiles at most.
    bad = []
    for o in range(0, min(3, level) + 1):
        tiles = sorted(written(d, o))
        a = min(T, 64)
        n = 12 * 4 ** o
        wcol = math.isqrt(n)
        hrow = -(-n // wcol)
        m = fits.getdata(os.path.join(d, "Norder%d" % o, "Allsky.fits"))
        if m.shape != (hrow * a, wcol * a):
            bad.append("order %d Allsky shape %s" % (o, m.shape))
            continue
        png = np.array(Image.open(os.path.join(d, "Norder%d" % o, "Allsky.png")))
        for i in tiles[:4]:
            t = fits.getdata(tile_path(d, o, i, "fits")).astype(float)
            f = T // a
            with np.errstate(invalid="ignore"):
                t = np.nanmean(t.reshape(a, f, a, f).transpose(0, 2, 1, 3).reshape(a, a, f * f), axis=2)
            row, col = divmod(i, wcol)
            blk = m[row * a:(row + 1) * a, col * a:(col + 1) * a].astype(float)
            if not (np.array_equal(np.isnan(blk), np.isnan(t)) and
                    np.allclose(blk[~np.isnan(t)], t[~np.isnan(t)], rtol=1e-5, atol=1e-6)):
                bad.append("order %d tile %d in Allsky.fits" % (o, i))
            alpha = png[row * a:(row + 1) * a, col * a:(col + 1) * a, 1]
            if not np.array_equal(alpha > 0, np.isfinite(t)[::-1]):
                bad.append("order %d tile %d in Allsky.png" % (o, i))
    check("%s: Allsky.fits and .png lay the tiles as reproject does" % name, not bad, "; ".join(bad))

    # Moc.fits: NUNIQ cells covering exactly the deepest tiles.
    with fits.open(os.path.join(d, "Moc.fits")) as hl:
        t = hl[1]
        uniq = np.asarray(t.data["UNIQ"], dtype=np.int64)
        hdr = t.header
    cells = set()
    for u in uniq:
        o = (int(u).bit_length() - 3) // 2
        i = int(u) - 4 * 4 ** o
        cells |= set(range(i * 4 ** (level - o), (i + 1) * 4 ** (level - o)))
    check("%s: Moc.fits (MOC 1.1 NUNIQ) covers exactly the deepest tiles" % name,
          cells == deepest and hdr["ORDERING"] == "NUNIQ" and hdr["PIXTYPE"] == "HEALPIX"
          and hdr["MOCORDER"] == level and hdr["COORDSYS"] == {"equatorial": "C", "galactic": "G",
                                                               "ecliptic": "E"}[frame]
          and list(uniq) == sorted(uniq) and len(uniq) <= len(deepest),
          "%d cells vs %d tiles" % (len(cells), len(deepest)))

    # PNG tiles: grey + alpha, alpha = finite pixels, rows flipped (north up).
    bad = []
    for i in sorted(deepest)[:5]:
        img = np.array(Image.open(tile_path(d, level, i, "png")))
        t = fits.getdata(tile_path(d, level, i, "fits"))
        if img.shape != (T, T, 2) or not np.array_equal(img[:, :, 1] > 0, np.isfinite(t)[::-1]):
            bad.append(i)
    check("%s: PNG tiles are grey + alpha, transparent where NaN, north up" % name, not bad,
          str(bad))

    # properties: reproject's keys, parsed as reproject's load_properties does.
    props = {}
    with open(os.path.join(d, "properties")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            k, v = line.split("=", 1)
            props[k.strip()] = v.strip()
    need = ["creator_did", "obs_title", "dataproduct_type", "hips_version", "hips_release_date",
            "hips_status", "hips_tile_format", "hips_tile_width", "hips_order", "hips_frame",
            "hips_builder", "hips_initial_ra", "hips_initial_dec", "hips_initial_fov",
            "hips_pixel_bitpix", "hips_pixel_cut"]
    missing = [k for k in need if k not in props]
    check("%s: properties has reproject 0.21's keys and values" % name,
          not missing and props["hips_order"] == str(level) and
          props["hips_tile_width"] == str(T) and props["hips_frame"] == frame and
          props["dataproduct_type"] == "image" and props["hips_pixel_bitpix"] == "-32" and
          props["obs_title"] == os.path.basename(d) and
          set(props["hips_tile_format"].split()) == {"fits", "png"} and
          os.path.exists(os.path.join(d, "index.html")),
          "missing %s; %s" % (missing, props))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    w = lambda f: os.path.join(a.workdir, f)

    # 1. An equatorial field, 30"/px, rotated: order 4 with 64-pixel tiles.
    one = [make_image(w("orion.fits"), 83.8, -5.4, 300, 30 / 3600, rot=20, seed=1)]
    res = run_case(a, "equatorial", one, [w("orion.fits")], 4, 64, "equatorial", radius=4)
    if res:
        check_pyramid("equatorial", res[0], 4, 64, "equatorial", res[1])
    # 2. The same field as galactic tiles.
    res = run_case(a, "galactic", one, [w("orion.fits")], 4, 64, "galactic", radius=4)
    if res:
        check_pyramid("galactic", res[0], 4, 64, "galactic", res[1])
    # 3. Near the north pole, across the HPX projection's polar facets.
    polar = [make_image(w("polar.fits"), 40.0, 78.0, 200, 0.12, seed=2)]
    run_case(a, "polar", polar, [w("polar.fits")], 1, 32, "equatorial", radius=30)
    # 4. On the HPX projection's seam at RA 180 (face 6): border tiles, two headers each.
    seam = [make_image(w("seam.fits"), 180.0, -10.0, 200, 0.12, seed=5)]
    run_case(a, "seam", seam, [w("seam.fits")], 1, 32, "equatorial", radius=30)
    # 5. An all-sky CAR map as galactic tiles: every tile, the seams and poles, a frame change.
    allsky = [make_car(w("allsky.fits"))]
    res = run_case(a, "all-sky", allsky, [w("allsky.fits")], 1, 32, "galactic", radius=180)
    if res:
        check("all-sky: every tile of order 1 has data", len(res[1]) == 48, str(sorted(res[1])))
    # 6. Two overlapping inputs: the mean where both cover.
    two = [make_image(w("m1.fits"), 150.0, 2.0, 200, 40 / 3600, seed=3),
           make_image(w("m2.fits"), 150.9, 2.3, 200, 40 / 3600, rot=10, seed=4)]
    run_case(a, "mosaic", two, [w("m1.fits"), w("m2.fits")], 4, 64, "equatorial", radius=4)

    return ch.print_tap()


if __name__ == "__main__":
    sys.exit(main())
