/* reproject_healpix_exact.c -- flux-conserving reprojection from HEALPix
 * maps: exact overlap of HEALPix pixels with output pixels.
 *
 * An output pixel is the spherical quadrilateral with great-circle edges
 * between its corners (as in reproject_exact.c).  A HEALPix pixel's edges
 * are not great circles, so it is the polygon through points of its exact
 * edges (tsr__hpx_boundary_fine: each edge split in halves until every
 * piece's midpoint lies within TSR__HPX_EXACT_TOL pixel sizes of its chord),
 * joined by great-circle arcs.  Neighbours share their edge points, so the
 * polygons tile the sphere and a map pixel's overlaps with the output
 * pixels that cover it sum to its polygon's area.
 *
 * Every overlap is measured in the gnomonic plane tangent at the HEALPix
 * pixel's centre: gnomonic projection maps great circles to straight
 * lines, so both polygons are exactly their projections, the clip
 * (Sutherland-Hodgman of the map polygon, slightly concave, by the convex
 * output quadrilateral) is exact, and tsr__gnomonic_area gives the solid
 * angle of the result without approximation and without differences of
 * nearly equal unit vectors.  Output pixels whose four corners lie inside
 * the map polygon's inscribed circle (about the centre) are covered whole
 * and skip the clip.  Output pixel solid angles are measured the same way,
 * tangent at their own centre.
 *
 * Per block: the output corners (in the map's frame) bound a disc (centre,
 * largest distance, plus the gap between corner samples); the map pixels
 * whose centres lie within it plus two pixel sizes are the only ones that
 * can meet the block.  input_region turns that disc into an index range of
 * the map (tsr__hpx_disc_range), so a block reads only those rows; compute
 * lists the pixels ring by ring (tsr__hpx_disc_pixels), in ascending map
 * index.  Each map pixel's candidate output pixels are the bounding box
 * of its centre, corners and edge midpoints in output pixel coordinates,
 * padded for the edges' bulge; where those points do not all map, or
 * spread over more than seam_lim pixels (a CAR or AIT seam), boxes around
 * each point that maps instead (merged where they meet, so no output
 * pixel is visited twice for one map pixel).
 *
 * To HEALPix (tsr_reproject_to_healpix, method exact) is the same pair
 * geometry the other way round: each map pixel of a chunk gets sum(v A) /
 * sum(A) over the image pixels it overlaps, its footprint sum(A) over its
 * polygon's area.  The image's cap (the disc holding its corners) culls
 * map pixels (a chunk lists those of its index range that lie near it,
 * tsr__hpx_disc_pixels_in); a chunk's window is the union of its pixels'
 * candidate boxes in the image (centre, corners and edge midpoints mapped
 * into it, padded, or boxes around each of them across a seam), so a
 * chunk reads only the image pixels its own pixels can meet.  The image
 * corners of a window are mapped at most once per chunk, a candidate box
 * at a time as they are needed.
 *
 * Determinism: each overlap depends only on the two pixels (corners come
 * from the global output grid, the polygon from the map pixel), and every
 * output pixel sums its terms in ascending map index (each map pixel its
 * image pixels in the order of its candidate boxes, which do not depend
 * on the chunk), so every block size and executor gives the same bits.
 * Values: sum(v A) / sum(A); footprint sum(A) / output solid angle;
 * overlaps under MIN_FRAC of the output pixel are rounding along shared
 * edges and dropped.  NaN and UNSEEN values as tsr_nan_mode_t says (see
 * tessera.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hpx.h"
#include "overlap.h"
#include "reproject.h"
#include "sky.h"

#define SAMPLE 8           /* output corner sampling for the block disc */
#define NSAMPLE 9          /* per axis, for the output pixel size in start */
#define MIN_FRAC 1e-8      /* as reproject_exact.c */
#define MIN_COS 0.5        /* the plane takes points within 60 degrees of the map pixel's centre */
#define POLY_CAP (4 << TSR__HPX_MAX_DEPTH)
#define CLIP_CAP (2 * POLY_CAP + 64)

typedef struct {
  tsr_wcs_t *target;          /* from HEALPix: the output grid; NULL to HEALPix */
  int64_t nside;
  bool nested;
  char coordsys;
  int nan_mode;
  char in_what[160];          /* to HEALPix: 'input "a.fits"', for messages */
} hx_params_t;

/* The pixel grid paired with the map (the target from HEALPix, the image
 * to HEALPix), in one process. */
typedef struct {
  tsr__cel_t *cel;            /* its WCS, this process's copy */
  tsr__frame_xform_t to_map;  /* its frame -> the map's */
  tsr__frame_xform_t from_map;
  double hpx_px;              /* map pixel size in its pixels, at most (sampled): margins */
  double seam_lim;            /* spread (its pixels) that marks a map pixel across a seam */
} hx_grid_t;

/* A map pixel's polygon in the gnomonic plane at its centre. */
typedef struct {
  double c[3], e1[3], e2[3];  /* tangent point and plane axes */
  int nv;                     /* vertices in px, py */
  double lx, hx, ly, hy;      /* bounding box */
  double rin2;                /* squared radius of its inscribed circle about c */
  double area;                /* its solid angle */
  double *pv, *px, *py, *ox, *oy, *scratch;  /* vertices and clip buffers, one allocation */
} hx_poly_t;

typedef struct {
  hx_grid_t grid;
  hx_poly_t poly;
  /* Per-block scratch, reused. */
  double *ov, *oarea, *sum, *wsum;  /* corner vectors (map frame), solid angles, sums */
  unsigned char *spoil;
  size_t bcap;
  int64_t *cand;
  size_t ccap;
} hx_state_t;

static void params_free(tsr_ctx_t *ctx, void *p) {
  hx_params_t *hp = p;
  if (hp == NULL)
    return;
  tsr_wcs_free(hp->target);
  tsr__free(ctx, hp);
}

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const hx_params_t *hp = n->params;
  tsr__buf_put_i64(b, hp->nside);
  tsr__buf_put_i64(b, hp->nested);
  tsr__buf_put_i64(b, hp->coordsys);
  tsr__buf_put_i64(b, hp->nan_mode);
  tsr__buf_put_i64(b, (int64_t)llround(TSR__HPX_EXACT_TOL * 1e12));
  if (hp->target)
    tsr__wcs_encode(hp->target, b);
}

static double angle(const double *a, const double *b) {
  double cx = a[1] * b[2] - a[2] * b[1], cy = a[2] * b[0] - a[0] * b[2],
         cz = a[0] * b[1] - a[1] * b[0];
  return atan2(sqrt(cx * cx + cy * cy + cz * cz), a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
}

/* Unit vectors (map frame) of n pixel positions of the grid. */
static void grid_vecs(hx_grid_t *gr, size_t n, const double *x, const double *y, double *v) {
  tsr__cel_pix2vec(gr->cel, n, x, y, v);
  if (!tsr__frame_identity(&gr->to_map))
    tsr__frame_apply(&gr->to_map, n, v);
}

/* Open the grid of WCS w (nx x ny pixels) against a map of nside in frame
 * `coordsys`: the largest map-pixel size in grid pixels over a 9 x 9
 * sample, for the margins of seam pixels' candidate boxes. */
static int grid_open(tsr_ctx_t *ctx, hx_grid_t *gr, const tsr_wcs_t *w, const char *what,
                     int64_t nside, char coordsys, int64_t nx, int64_t ny) {
  tsr__frame_t map;
  double worst = 0;
  int rc = tsr__cel_new(ctx, w, what, &gr->cel);
  if (rc != 0)
    return rc;
  tsr__hpx_frame(coordsys, &map);
  tsr__frame_xform(tsr__cel_frame(gr->cel), &map, &gr->to_map);
  tsr__frame_xform(&map, tsr__cel_frame(gr->cel), &gr->from_map);
  for (int b = 0; b < NSAMPLE; b++)
    for (int a = 0; a < NSAMPLE; a++) {
      double x = floor((double)(nx - 1) * a / (NSAMPLE - 1) + 0.5);
      double y = floor((double)(ny - 1) * b / (NSAMPLE - 1) + 0.5);
      double px[3] = {x, x + 1, x}, py[3] = {y, y, y + 1}, v[9];
      grid_vecs(gr, 3, px, py, v);
      if (!isfinite(v[0] + v[3] + v[6]))
        continue;
      double s = fmin(angle(v, v + 3), angle(v, v + 6));
      if (s > 0)
        worst = fmax(worst, tsr__hpx_pixel_size(nside) / s);
    }
  gr->hpx_px = worst > 0 ? worst : 1.0;
  gr->seam_lim = fmax(0.5 * (double)(nx > ny ? nx : ny), 4.0 * gr->hpx_px + 4.0);
  return 0;
}

static int poly_alloc(tsr_ctx_t *ctx, hx_poly_t *P) {
  /* The polygon (3 per vertex), its plane coordinates and the clip's
   * buffers. */
  P->pv = tsr__mallocarray(ctx, 5 * (size_t)POLY_CAP + 6 * (size_t)CLIP_CAP, sizeof(double));
  if (P->pv == NULL)
    return TSR_ENOMEM;
  P->px = P->pv + 3 * (size_t)POLY_CAP;
  P->py = P->px + POLY_CAP;
  P->ox = P->py + POLY_CAP;
  P->oy = P->ox + CLIP_CAP;
  P->scratch = P->oy + CLIP_CAP;
  return 0;
}

static void state_free(tsr_ctx_t *ctx, hx_state_t *st) {
  if (st == NULL)
    return;
  tsr__cel_free(st->grid.cel);
  tsr__free(ctx, st->ov);
  tsr__free(ctx, st->oarea);
  tsr__free(ctx, st->sum);
  tsr__free(ctx, st->wsum);
  tsr__free(ctx, st->spoil);
  tsr__free(ctx, st->cand);
  tsr__free(ctx, st->poly.pv);
  tsr__free(ctx, st);
}

static int hx_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  hx_params_t *hp = n->params;
  hx_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  int rc = TSR_ENOMEM;
  *state = NULL;
  if (st == NULL || poly_alloc(ctx, &st->poly) != 0) {
    tsr__err(ctx, rc, "%s: out of memory", n->name);
    goto out;
  }
  /* Pixel boundaries and centres come from libchealpix: loaded here, in
   * the process that runs the op (constructors no longer load it: a RING
   * bilinear run does without). */
  if ((rc = tsr__hpx_load(ctx)) != 0)
    goto out;
  if ((rc = grid_open(ctx, &st->grid, hp->target, "target", hp->nside, hp->coordsys,
                      n->shape[0], n->shape[1])) != 0)
    goto out;
  *state = st;
  st = NULL;
  rc = 0;
out:
  state_free(ctx, st);
  return rc;
}

static void hx_stop(tsr_node_t *n, void *state) { state_free(n->graph->ctx, state); }

/* The disc (map frame) holding the corners of box `out` sampled every
 * `every` pixels and on its edges, those that map: its radius is their
 * largest distance from the centre plus the widest gap between
 * neighbouring samples (or pi when they surround the sphere).  Counts the
 * corners that map and those that do not. */
static int corner_disc(tsr_ctx_t *ctx, hx_grid_t *gr, const tsr_region_t *out, int64_t every,
                       double c[3], double *radius, size_t *good, size_t *bad) {
  int64_t x0 = out->start[0], x1 = out->stop[0], y0 = out->start[1], y1 = out->stop[1];
  int64_t nxs = (x1 - x0 + every - 1) / every + 1, nys = (y1 - y0 + every - 1) / every + 1;
  size_t np = (size_t)(nxs * nys);
  double *xy = tsr__mallocarray(ctx, np, 5 * sizeof(double)), step = 0, r = 0, norm;
  if (xy == NULL)
    return TSR_ENOMEM;
  double *xs = xy, *ys = xy + np, *v = xy + 2 * np;
  for (int64_t j = 0; j < nys; j++)
    for (int64_t k = 0; k < nxs; k++) {
      int64_t x = x0 + k * every, y = y0 + j * every;
      xs[j * nxs + k] = (double)(x < x1 ? x : x1) - 0.5;
      ys[j * nxs + k] = (double)(y < y1 ? y : y1) - 0.5;
    }
  grid_vecs(gr, np, xs, ys, v);
  c[0] = c[1] = c[2] = 0;
  *good = *bad = 0;
  for (size_t k = 0; k < np; k++)
    if (isfinite(v[3 * k] + v[3 * k + 1] + v[3 * k + 2])) {
      c[0] += v[3 * k], c[1] += v[3 * k + 1], c[2] += v[3 * k + 2];
      (*good)++;
    } else
      (*bad)++;
  *radius = M_PI;
  norm = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
  if (*good > 0 && norm > 1e-9 * (double)*good) {
    for (int a = 0; a < 3; a++)
      c[a] /= norm;
    for (size_t k = 0; k < np; k++) {
      if (!isfinite(v[3 * k]))
        continue;
      r = fmax(r, angle(c, v + 3 * k));
      if (k % (size_t)nxs + 1 < (size_t)nxs && isfinite(v[3 * k + 3]))
        step = fmax(step, angle(v + 3 * k, v + 3 * (k + 1)));
      if (k + (size_t)nxs < np && isfinite(v[3 * (k + (size_t)nxs)]))
        step = fmax(step, angle(v + 3 * k, v + 3 * (k + (size_t)nxs)));
    }
    *radius = fmin(M_PI, r + (every > 1 ? step : 0.0));
  }
  if (*radius >= M_PI)
    c[0] = 0, c[1] = 0, c[2] = 1;
  tsr__free(ctx, xy);
  return 0;
}

/* The disc that holds every output pixel of box `out` (pixels are the
 * quadrilaterals between their corners; one with a corner off the
 * projection is left out).  Corners sampled every SAMPLE pixels bound the
 * unsampled ones by the gap between samples; where some corner is off the
 * projection that bound fails (pixels stretch at a projection's edge), so
 * every corner is taken.  *none when no corner maps. */
static int block_disc(tsr_ctx_t *ctx, hx_grid_t *gr, const tsr_region_t *out, double c[3],
                      double *radius, bool *none) {
  size_t good = 0, bad = 0;
  int rc;
  *radius = 0;
  rc = corner_disc(ctx, gr, out, SAMPLE, c, radius, &good, &bad);
  if (rc == 0 && bad > 0)
    rc = corner_disc(ctx, gr, out, 1, c, radius, &good, &bad);
  *none = good == 0;
  /* A cap wider than a hemisphere is not convex: it need not hold the
   * pixels between its points. */
  if (rc == 0 && !*none && *radius >= M_PI / 2)
    *radius = M_PI, c[0] = 0, c[1] = 0, c[2] = 1;
  return rc;
}

/* Map pixels whose centres lie this far outside the block's disc cannot
 * reach it: a centre-to-corner distance is under 1.5 pixel sizes. */
static double reach(const hx_params_t *hp, double radius) {
  return fmin(M_PI, radius + 2.0 * tsr__hpx_pixel_size(hp->nside));
}

static int hx_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                           tsr_region_t *win, bool *empty) {
  hx_state_t *st = state;
  hx_params_t *hp = n->params;
  double c[3], radius;
  bool none;
  int rc = block_disc(n->graph->ctx, &st->grid, out, c, &radius, &none);
  (void)i;
  if (rc != 0)
    return tsr__err(n->graph->ctx, rc, "%s: out of memory", n->name);
  *win = *out;
  if (none) {
    *empty = true;
    return 0;
  }
  tsr__hpx_disc_range(hp->nside, hp->nested, c, reach(hp, radius), &win->start[0],
                      &win->stop[0]);
  win->start[1] = 0, win->stop[1] = 1;
  if (win->start[0] >= win->stop[0])
    *empty = true;
  return 0;
}

/* Tangent-plane basis at unit vector c: east = z x c (x x c at a pole),
 * north = c x east. */
static void tangent_basis(const double c[3], double e1[3], double e2[3]) {
  double r;
  if (fabs(c[2]) < 0.9)
    e1[0] = -c[1], e1[1] = c[0], e1[2] = 0;
  else
    e1[0] = 0, e1[1] = -c[2], e1[2] = c[1];
  r = sqrt(e1[0] * e1[0] + e1[1] * e1[1] + e1[2] * e1[2]);
  e1[0] /= r, e1[1] /= r, e1[2] /= r;
  e2[0] = c[1] * e1[2] - c[2] * e1[1];
  e2[1] = c[2] * e1[0] - c[0] * e1[2];
  e2[2] = c[0] * e1[1] - c[1] * e1[0];
}

/* Gnomonic coordinates of v about c; false when v is further than
 * acos(MIN_COS) from c (the plane would distort or fold it). */
static inline bool gnomonic(const double c[3], const double e1[3], const double e2[3],
                            const double *v, double *x, double *y) {
  double d = v[0] * c[0] + v[1] * c[1] + v[2] * c[2];
  if (!(d >= MIN_COS))
    return false;
  *x = (v[0] * e1[0] + v[1] * e1[1] + v[2] * e1[2]) / d;
  *y = (v[0] * e2[0] + v[1] * e2[1] + v[2] * e2[2]) / d;
  return true;
}

/* The 4 corner vectors of output pixel (i, j) of a block bw wide. */
static void out_quad(const hx_state_t *st, int64_t bw, int64_t i, int64_t j, const double *q[4]) {
  size_t c0 = (size_t)(j * (bw + 1) + i), c3 = c0 + (size_t)(bw + 1);
  q[0] = st->ov + 3 * c0;
  q[1] = st->ov + 3 * (c0 + 1);
  q[2] = st->ov + 3 * (c3 + 1);
  q[3] = st->ov + 3 * c3;
}

/* Output corner vectors and pixel solid angles of the block (NaN where a
 * corner is off the projection). */
static int block_corners(tsr__task_t *t, hx_state_t *st, int64_t bw, int64_t bh) {
  size_t nc = (size_t)(bw + 1) * (size_t)(bh + 1);
  double *xs = tsr__mallocarray(t->ctx, nc, 2 * sizeof(double));
  if (xs == NULL)
    return TSR_ENOMEM;
  double *ys = xs + nc;
  for (int64_t j = 0; j <= bh; j++)
    for (int64_t i = 0; i <= bw; i++) {
      xs[(size_t)(j * (bw + 1) + i)] = (double)(t->out.start[0] + i) - 0.5;
      ys[(size_t)(j * (bw + 1) + i)] = (double)(t->out.start[1] + j) - 0.5;
    }
  grid_vecs(&st->grid, nc, xs, ys, st->ov);
  tsr__free(t->ctx, xs);
  for (int64_t j = 0; j < bh; j++)
    for (int64_t i = 0; i < bw; i++) {
      const double *q[4];
      double c[3] = {0, 0, 0}, e1[3], e2[3], qx[4], qy[4], a = NAN;
      bool ok = true;
      out_quad(st, bw, i, j, q);
      for (int k = 0; k < 4; k++)
        c[0] += q[k][0], c[1] += q[k][1], c[2] += q[k][2];
      double norm = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
      if (isfinite(norm) && norm > 0) {
        c[0] /= norm, c[1] /= norm, c[2] /= norm;
        tangent_basis(c, e1, e2);
        for (int k = 0; k < 4 && ok; k++)
          ok = gnomonic(c, e1, e2, q[k], &qx[k], &qy[k]);
        if (ok)
          a = fabs(tsr__gnomonic_area(qx, qy, 4));
      }
      st->oarea[j * bw + i] = a > 0 ? a : NAN;
    }
  return 0;
}

static inline int64_t floor_clamp(double x) {
  return (int64_t)floor(fmax(-4e15, fmin(4e15, x)));
}

/* Candidate boxes of grid pixels (inclusive, clipped to [bx0, bx1] x [by0,
 * by1]) of map pixel p with centre `centre`: see the top of the file.
 * Returns their number (0..9). */
static int candidates(hx_grid_t *gr, const hx_params_t *hp, int64_t p, const double centre[3],
                      int64_t bx0, int64_t bx1, int64_t by0, int64_t by1, tsr__box_t box[9]) {
  double v[27], x[9], y[9], lx = INFINITY, hx = -INFINITY, ly = INFINITY, hy = -INFINITY;
  int nb = 0, good = 0;
  tsr__hpx_boundary(hp->nside, hp->nested, p, 2, v);
  memcpy(v + 24, centre, 3 * sizeof(double));
  if (!tsr__frame_identity(&gr->from_map))
    tsr__frame_apply(&gr->from_map, 9, v);
  tsr__cel_vec2pix(gr->cel, 9, v, x, y);
  for (int k = 0; k < 9; k++)
    if (isfinite(x[k]) && isfinite(y[k])) {
      lx = fmin(lx, x[k]), hx = fmax(hx, x[k]), ly = fmin(ly, y[k]), hy = fmax(hy, y[k]);
      good++;
    }
  if (good == 0)
    return 0;
  if (good == 9 && hx - lx <= gr->seam_lim && hy - ly <= gr->seam_lim) {
    /* Edges bulge past their midpoints by well under a fifth of the
     * pixel; projections bend great circles a little more. */
    double pad = 0.2 * fmax(hx - lx, hy - ly) + 1.0;
    box[nb++] = (tsr__box_t){floor_clamp(lx - pad + 0.5), floor_clamp(hx + pad + 0.5),
                             floor_clamp(ly - pad + 0.5), floor_clamp(hy + pad + 0.5)};
  } else {
    double m = 1.5 * gr->hpx_px + 2.0;
    for (int k = 0; k < 9; k++)
      if (isfinite(x[k]) && isfinite(y[k]))
        box[nb++] = (tsr__box_t){floor_clamp(x[k] - m + 0.5), floor_clamp(x[k] + m + 0.5),
                                 floor_clamp(y[k] - m + 0.5), floor_clamp(y[k] + m + 0.5)};
  }
  return tsr__boxes_merge_clip(box, nb, bx0, bx1, by0, by1);
}

/* Map pixel p's polygon in the plane at its centre (P->c set by the
 * caller).  0, or TSR_EINVAL when a vertex lies too far from the centre
 * (a pixel of nside 1 does not: its vertices are within 50 degrees). */
static int poly_of(hx_poly_t *P, const hx_params_t *hp, int64_t p) {
  double rin2 = INFINITY;
  P->nv = tsr__hpx_boundary_fine(hp->nside, hp->nested, p, TSR__HPX_EXACT_TOL, TSR__HPX_MAX_DEPTH,
                                 P->pv, POLY_CAP);
  tangent_basis(P->c, P->e1, P->e2);
  P->lx = P->ly = INFINITY, P->hx = P->hy = -INFINITY;
  for (int k = 0; k < P->nv; k++) {
    if (!gnomonic(P->c, P->e1, P->e2, P->pv + 3 * k, &P->px[k], &P->py[k]))
      return TSR_EINVAL;
    P->lx = fmin(P->lx, P->px[k]), P->hx = fmax(P->hx, P->px[k]);
    P->ly = fmin(P->ly, P->py[k]), P->hy = fmax(P->hy, P->py[k]);
  }
  /* The inscribed circle about the centre: the nearest edge piece. */
  for (int k = 0; k < P->nv; k++) {
    int k1 = k + 1 < P->nv ? k + 1 : 0;
    double ax = P->px[k], ay = P->py[k], dx = P->px[k1] - ax, dy = P->py[k1] - ay;
    double l2 = dx * dx + dy * dy, s = l2 > 0 ? -(ax * dx + ay * dy) / l2 : 0;
    s = s < 0 ? 0 : s > 1 ? 1 : s;
    double qx = ax + s * dx, qy = ay + s * dy;
    rin2 = fmin(rin2, qx * qx + qy * qy);
  }
  P->rin2 = rin2 * (1 - 1e-9);
  P->area = fabs(tsr__gnomonic_area(P->px, P->py, P->nv));
  return 0;
}

/* Solid angle of the overlap of polygon P with the quadrilateral of unit
 * vectors q (great-circle edges).  0; 1 when a corner of q lies too far
 * from P's centre for the plane; -1 when the clip overflows. */
static int poly_overlap(hx_poly_t *P, const double *const q[4], double *area) {
  double qx[4], qy[4];
  bool inside = true;
  *area = 0.0;
  for (int k = 0; k < 4; k++) {
    if (!gnomonic(P->c, P->e1, P->e2, q[k], &qx[k], &qy[k]))
      return 1;
    inside = inside && qx[k] * qx[k] + qy[k] * qy[k] < P->rin2;
  }
  if (fmax(fmax(qx[0], qx[1]), fmax(qx[2], qx[3])) <= P->lx ||
      fmin(fmin(qx[0], qx[1]), fmin(qx[2], qx[3])) >= P->hx ||
      fmax(fmax(qy[0], qy[1]), fmax(qy[2], qy[3])) <= P->ly ||
      fmin(fmin(qy[0], qy[1]), fmin(qy[2], qy[3])) >= P->hy)
    return 0;
  if (inside) {
    *area = fabs(tsr__gnomonic_area(qx, qy, 4));
    return 0;
  }
  int m = tsr__clip_convex_n(P->px, P->py, P->nv, qx, qy, 4, P->scratch, CLIP_CAP, P->ox, P->oy);
  if (m < 0)
    return -1;
  *area = m >= 3 ? fabs(tsr__gnomonic_area(P->ox, P->oy, m)) : 0.0;
  return 0;
}

/* The message of a failed poly_of / poly_overlap. */
static int pair_error(tsr_ctx_t *ctx, const tsr_node_t *n, int rc, int64_t p, const char *what,
                      int64_t i, int64_t j) {
  if (rc > 0)
    return tsr__err(ctx, TSR_EINVAL,
                    "%s: %s pixel (%lld, %lld) reaches more than 60 degrees from HEALPix pixel "
                    "%lld; the exact method needs smaller pixels",
                    n->name, what, (long long)i, (long long)j, (long long)p);
  return tsr__err(ctx, TSR_EINVAL,
                  "%s: clipping HEALPix pixel %lld by %s pixel (%lld, %lld) made more than %d "
                  "vertices",
                  n->name, (long long)p, what, (long long)i, (long long)j, CLIP_CAP);
}

/* Overlap every candidate output pixel with map pixel p (value val, NaN
 * for NaN and UNSEEN) and add it to the block's sums. */
static int add_pixel(tsr__task_t *t, hx_state_t *st, int64_t p, double val) {
  tsr_node_t *n = t->node;
  const hx_params_t *hp = n->params;
  int64_t bw = t->out.stop[0] - t->out.start[0];
  hx_poly_t *P = &st->poly;
  tsr__box_t box[9];
  int nb, rc;

  tsr__hpx_pix2vec(hp->nside, hp->nested, p, P->c);
  if ((nb = candidates(&st->grid, hp, p, P->c, t->out.start[0], t->out.stop[0] - 1,
                       t->out.start[1], t->out.stop[1] - 1, box)) == 0)
    return 0;
  if (poly_of(P, hp, p) != 0)
    return tsr__err(t->ctx, TSR_EINVAL, "%s: HEALPix pixel %lld is too large for the exact method",
                    n->name, (long long)p);
  for (int b = 0; b < nb; b++)
    for (int64_t jj = box[b].y0; jj <= box[b].y1; jj++)
      for (int64_t ii = box[b].x0; ii <= box[b].x1; ii++) {
        size_t o = (size_t)((jj - t->out.start[1]) * bw + (ii - t->out.start[0]));
        const double *q[4];
        double a;
        if (!(st->oarea[o] > 0))
          continue;
        out_quad(st, bw, ii - t->out.start[0], jj - t->out.start[1], q);
        if ((rc = poly_overlap(P, q, &a)) != 0)
          return pair_error(t->ctx, n, rc, p, "output", ii, jj);
        if (!(a > MIN_FRAC * st->oarea[o]))
          continue;
        if (val == val)
          st->sum[o] += val * a;
        else
          st->spoil[o] = 1;
        st->wsum[o] += a;
      }
  return 0;
}

static int hx_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const hx_params_t *hp = n->params;
  hx_state_t *st = t->state;
  const tsr__window_t *w = &t->in[0];
  int64_t bw = t->out.stop[0] - t->out.start[0], bh = t->out.stop[1] - t->out.start[1];
  size_t nb = (size_t)bw * (size_t)bh, nc;
  double c[3], radius;
  bool none;
  int rc;

  if (w->data == NULL) {
    tsr__task_fill(t, 0, NAN);
    tsr__task_fill(t, 1, 0.0);
    return 0;
  }
  if (nb > st->bcap) {
    rc = tsr__scratch_grow(t->ctx, (void **)&st->ov, (size_t)(bw + 1) * (size_t)(bh + 1), 3 * sizeof(double));
    rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->oarea, nb, sizeof(double));
    rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->sum, nb, sizeof(double));
    rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->wsum, nb, sizeof(double));
    rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->spoil, nb, 1);
    st->bcap = rc ? 0 : nb;
    if (rc)
      return tsr__err(t->ctx, rc, "%s: out of memory for a %lld x %lld block", n->name,
                      (long long)bw, (long long)bh);
  }
  if ((rc = block_corners(t, st, bw, bh)) != 0 ||
      (rc = block_disc(t->ctx, &st->grid, &t->out, c, &radius, &none)) != 0)
    return tsr__err(t->ctx, rc, "%s: out of memory", n->name);
  memset(st->sum, 0, nb * sizeof(double));
  memset(st->wsum, 0, nb * sizeof(double));
  memset(st->spoil, 0, nb);
  nc = tsr__hpx_disc_pixels(hp->nside, hp->nested, c, reach(hp, radius), st->cand, st->ccap);
  if (nc > st->ccap) {
    if ((rc = tsr__scratch_grow(t->ctx, (void **)&st->cand, nc, sizeof(int64_t))) != 0)
      return tsr__err(t->ctx, rc, "%s: out of memory for %zu map pixels", n->name, nc);
    st->ccap = nc;
    nc = tsr__hpx_disc_pixels(hp->nside, hp->nested, c, reach(hp, radius), st->cand, st->ccap);
  }
  for (size_t k = 0; k < nc; k++) {
    int64_t p = st->cand[k];
    double v;
    if (p < w->win.start[0] || p >= w->win.stop[0])
      continue;
    v = tsr__window_value(w, (size_t)(p - w->win.start[0]));
    if (!isfinite(v) || fabs(v / TSR__HPX_UNSEEN - 1.0) < 1e-5)
      v = NAN;
    if (v != v && hp->nan_mode == TSR_NAN_IGNORE)
      continue;
    if ((rc = add_pixel(t, st, p, v)) != 0)
      return rc;
  }
  for (int64_t y = 0; y < bh; y++) {
    size_t off = tsr__task_offset(t, 0, y, 0, 0);
    for (int64_t x = 0; x < bw; x++) {
      size_t o = (size_t)(y * bw + x);
      double ws = st->wsum[o], area = st->oarea[o];
      double v = ws > 0 && !st->spoil[o] ? st->sum[o] / ws : NAN;
      double fp = area > 0 ? fmin(1.0, ws / area) : 0.0;
      tsr__task_put2(t, off + (size_t)x, v, fp);
    }
  }
  return 0;
}

static const tsr__op_t hx_op = {
    .name = "reproject_from_healpix_exact",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = hx_input_region,
    .start = hx_start,
    .stop = hx_stop,
    .compute = hx_compute,
    .encode = params_encode,
    .free_params = params_free,
};

tsr_node_t *tsr__from_healpix_exact(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                    const tsr_from_healpix_opts_t *o, int64_t nside, bool nested,
                                    char coordsys) {
  const char *op = "reproject_from_healpix";
  hx_params_t *hp = tsr__calloc(g->ctx, 1, sizeof *hp);
  tsr_node_t *n;
  if (hp == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  hp->nside = nside;
  hp->nested = nested;
  hp->coordsys = coordsys;
  hp->nan_mode = o->nan_mode;
  if (tsr_wcs_copy(g->ctx, target, &hp->target) != 0) {
    params_free(g->ctx, hp);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  if ((n = tsr__node_alloc(g, &hx_op, hp)) == NULL)
    return NULL;
  n->ndim = 2;
  n->n_inputs = 1;
  n->inputs[0] = src;
  n->n_planes = 2;
  n->dtype = o->dtype ? (tsr_dtype_t)o->dtype : src->dtype;
  n->shape[0] = target->shape[0];
  n->shape[1] = target->shape[1];
  n->chunk[0] = o->block[0] ? o->block[0] : TSR__DEFAULT_BLOCK;
  n->chunk[1] = o->block[1] ? o->block[1] : TSR__DEFAULT_BLOCK;
  if (tsr_wcs_copy(g->ctx, target, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  return tsr__node_finish(n);
}

/* ------------------------------------------------------------------ */
/* To HEALPix                                                           */

typedef struct {
  hx_grid_t grid;             /* the image */
  hx_poly_t poly;
  int64_t nx, ny;             /* image pixels */
  double cap_c[3], cap_r;     /* map pixels whose centres are outside it cannot meet the image */
  bool none;                  /* no image corner maps */
  int64_t *cand;              /* a chunk's map pixels near the image */
  size_t ccap;
  /* Per-chunk image corners of the window (map frame), a row at a time. */
  double *wc;
  unsigned char *ready;       /* per corner of wc: mapped already */
  size_t wccap;
  double *rx;                 /* a box's missing corners: x, y, and their index in wc */
  size_t rxcap;
} to_state_t;

/* Corner caches past this many corners are not kept: corners are then
 * mapped per pair (slower, the same numbers). */
#define WC_MAX ((size_t)1 << 23)

static void to_state_free(tsr_ctx_t *ctx, to_state_t *st) {
  if (st == NULL)
    return;
  tsr__cel_free(st->grid.cel);
  tsr__free(ctx, st->poly.pv);
  tsr__free(ctx, st->wc);
  tsr__free(ctx, st->ready);
  tsr__free(ctx, st->cand);
  tsr__free(ctx, st->rx);
  tsr__free(ctx, st);
}

static int to_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  hx_params_t *hp = n->params;
  const tsr_node_t *in = n->inputs[0];
  to_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  tsr_region_t all;
  double radius;
  int rc = TSR_ENOMEM;
  *state = NULL;
  if (st == NULL || poly_alloc(ctx, &st->poly) != 0) {
    tsr__err(ctx, rc, "%s: out of memory", n->name);
    goto out;
  }
  if ((rc = tsr__hpx_load(ctx)) != 0)
    goto out;
  st->nx = in->shape[0], st->ny = in->shape[1];
  if ((rc = grid_open(ctx, &st->grid, in->wcs, hp->in_what, hp->nside, hp->coordsys, st->nx,
                      st->ny)) != 0)
    goto out;
  tsr__region_full(&all, 2, in->shape);
  if ((rc = block_disc(ctx, &st->grid, &all, st->cap_c, &radius, &st->none)) != 0) {
    tsr__err(ctx, rc, "%s: out of memory", n->name);
    goto out;
  }
  /* A map pixel meets the image only if its centre is within its
   * centre-to-corner distance (< 1.5 pixel sizes) of the image's cap. */
  st->cap_r = reach(hp, radius);
  *state = st;
  st = NULL;
  rc = 0;
out:
  to_state_free(ctx, st);
  return rc;
}

static void to_stop(tsr_node_t *n, void *state) { to_state_free(n->graph->ctx, state); }

/* The map pixels of [a, b) that may meet the image (ascending), into
 * st->cand; their number, or -1 out of memory. */
static int64_t to_near(tsr_ctx_t *ctx, to_state_t *st, const hx_params_t *hp, int64_t a,
                       int64_t b) {
  size_t n;
  if (st->none)
    return 0;
  n = tsr__hpx_disc_pixels_in(hp->nside, hp->nested, st->cap_c, st->cap_r, a, b, st->cand,
                              st->ccap);
  if (n > st->ccap) {
    if (tsr__scratch_grow(ctx, (void **)&st->cand, n, sizeof(int64_t)) != 0)
      return -1;
    st->ccap = n;
    n = tsr__hpx_disc_pixels_in(hp->nside, hp->nested, st->cap_c, st->cap_r, a, b, st->cand,
                                st->ccap);
  }
  return (int64_t)n;
}

static int to_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                           tsr_region_t *win, bool *empty) {
  to_state_t *st = state;
  const hx_params_t *hp = n->params;
  int64_t x0 = INT64_MAX, x1 = -1, y0 = INT64_MAX, y1 = -1;
  int64_t nc = to_near(n->graph->ctx, st, hp, out->start[0], out->stop[0]);
  (void)i;
  if (nc < 0)
    return tsr__err(n->graph->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  for (int64_t k = 0; k < nc; k++) {
    double c[3];
    tsr__box_t box[9];
    int nb;
    tsr__hpx_pix2vec(hp->nside, hp->nested, st->cand[k], c);
    nb = candidates(&st->grid, hp, st->cand[k], c, 0, st->nx - 1, 0, st->ny - 1, box);
    for (int b = 0; b < nb; b++) {
      x0 = box[b].x0 < x0 ? box[b].x0 : x0, x1 = box[b].x1 > x1 ? box[b].x1 : x1;
      y0 = box[b].y0 < y0 ? box[b].y0 : y0, y1 = box[b].y1 > y1 ? box[b].y1 : y1;
    }
  }
  tsr__region_full(win, 2, n->inputs[0]->shape);
  if (x1 < x0) {
    *empty = true;
    return 0;
  }
  win->start[0] = x0, win->stop[0] = x1 + 1;
  win->start[1] = y0, win->stop[1] = y1 + 1;
  return 0;
}

/* Map the corners of box b (pixels b.x0..b.x1 x b.y0..b.y1) that the
 * chunk's corner cache lacks, in one call (wcslib's per-call overhead is
 * paid once).  Corner (i, j) is pixel (i, j)'s lower-left corner, (i - 0.5,
 * j - 0.5).  0, or TSR_ENOMEM. */
static int to_corners(tsr_ctx_t *ctx, to_state_t *st, const tsr__window_t *w, tsr__box_t b) {
  int64_t wx = w->win.stop[0] - w->win.start[0] + 1;
  size_t need = (size_t)(b.x1 - b.x0 + 2) * (size_t)(b.y1 - b.y0 + 2), m = 0;
  if (need > st->rxcap) {
    if (tsr__scratch_grow(ctx, (void **)&st->rx, need, 3 * sizeof(double)) != 0)
      return TSR_ENOMEM;
    st->rxcap = need;
  }
  double *xs = st->rx, *ys = xs + need, *at = ys + need, v[3 * 64];
  for (int64_t j = b.y0; j <= b.y1 + 1; j++)
    for (int64_t i = b.x0; i <= b.x1 + 1; i++) {
      size_t k = (size_t)((j - w->win.start[1]) * wx + (i - w->win.start[0]));
      if (st->ready[k])
        continue;
      xs[m] = (double)i - 0.5, ys[m] = (double)j - 0.5, at[m++] = (double)k;
      st->ready[k] = 1;
    }
  for (size_t a = 0; a < m; a += 64) {
    size_t c = m - a < 64 ? m - a : 64;
    grid_vecs(&st->grid, c, xs + a, ys + a, v);
    for (size_t k = 0; k < c; k++)
      memcpy(st->wc + 3 * (size_t)at[a + k], v + 3 * k, 3 * sizeof(double));
  }
  return 0;
}

/* Corner (i, j) from the cache (to_corners first), or mapped now when the
 * window is too large to cache. */
static const double *to_corner(to_state_t *st, const tsr__window_t *w, int64_t i, int64_t j,
                               double tmp[3]) {
  int64_t wx = w->win.stop[0] - w->win.start[0] + 1;
  if (st->wc == NULL) {
    double x = (double)i - 0.5, y = (double)j - 0.5;
    grid_vecs(&st->grid, 1, &x, &y, tmp);
    return tmp;
  }
  return st->wc + 3 * (size_t)((j - w->win.start[1]) * wx + (i - w->win.start[0]));
}

static int to_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const hx_params_t *hp = n->params;
  to_state_t *st = t->state;
  const tsr__window_t *w = &t->in[0];
  hx_poly_t *P = &st->poly;
  int64_t nc;
  int rc;

  if (w->data == NULL) {
    tsr__task_fill(t, 0, NAN);
    tsr__task_fill(t, 1, 0.0);
    return 0;
  }
  {
    size_t wx = (size_t)(w->win.stop[0] - w->win.start[0] + 1);
    size_t wy = (size_t)(w->win.stop[1] - w->win.start[1] + 1);
    if (wx * wy <= WC_MAX) {
      if (wx * wy > st->wccap) {
        if (tsr__scratch_grow(t->ctx, (void **)&st->wc, wx * wy, 3 * sizeof(double)) != 0 ||
            tsr__scratch_grow(t->ctx, (void **)&st->ready, wx * wy, 1) != 0)
          return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for %zu image corners", n->name,
                          wx * wy);
        st->wccap = wx * wy;
      }
      memset(st->ready, 0, wx * wy);
    } else {
      tsr__free(t->ctx, st->wc);
      st->wc = NULL, st->wccap = 0;
    }
  }
  tsr__task_fill(t, 0, NAN);
  tsr__task_fill(t, 1, 0.0);
  if ((nc = to_near(t->ctx, st, hp, t->out.start[0], t->out.stop[0])) < 0)
    return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  for (int64_t k = 0; k < nc; k++) {
    int64_t p = st->cand[k];
    size_t off = tsr__task_offset(t, p - t->out.start[0], 0, 0, 0);
    double sum = 0, ws = 0;
    bool spoil = false;
    tsr__box_t box[9];
    int nb;
    tsr__hpx_pix2vec(hp->nside, hp->nested, p, P->c);
    nb = candidates(&st->grid, hp, p, P->c, w->win.start[0], w->win.stop[0] - 1,
                    w->win.start[1], w->win.stop[1] - 1, box);
    if (nb == 0)
      continue;
    if (poly_of(P, hp, p) != 0)
      return tsr__err(t->ctx, TSR_EINVAL, "%s: HEALPix pixel %lld is too large for the exact method",
                      n->name, (long long)p);
    for (int b = 0; b < nb && st->wc; b++)
      if (to_corners(t->ctx, st, w, box[b]) != 0)
        return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
    for (int b = 0; b < nb; b++)
      for (int64_t jj = box[b].y0; jj <= box[b].y1; jj++)
        for (int64_t ii = box[b].x0; ii <= box[b].x1; ii++) {
          double v = tsr__window_value(w, (size_t)((ii - w->win.start[0]) +
                                                   (jj - w->win.start[1]) * w->stride[1]));
          double tmp[4][3], a;
          const double *q[4];
          if (!isfinite(v)) {
            if (hp->nan_mode == TSR_NAN_IGNORE)
              continue;
            v = NAN;
          }
          q[0] = to_corner(st, w, ii, jj, tmp[0]);
          q[1] = to_corner(st, w, ii + 1, jj, tmp[1]);
          q[2] = to_corner(st, w, ii + 1, jj + 1, tmp[2]);
          q[3] = to_corner(st, w, ii, jj + 1, tmp[3]);
          if (!isfinite(q[0][0] + q[1][0] + q[2][0] + q[3][0]))
            continue;
          if ((rc = poly_overlap(P, q, &a)) != 0)
            return pair_error(t->ctx, n, rc, p, "image", ii, jj);
          if (!(a > MIN_FRAC * P->area))
            continue;
          if (v == v)
            sum += v * a;
          else
            spoil = true;
          ws += a;
        }
    if (ws > 0 || !t->dst_blank) /* else NaN and 0, the blank */
      tsr__task_put2(t, off, ws > 0 && !spoil ? sum / ws : NAN, fmin(1.0, ws / P->area));
  }
  return 0;
}

static const tsr__op_t to_op = {
    .name = "reproject_to_healpix_exact",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = to_input_region,
    .start = to_start,
    .stop = to_stop,
    .compute = to_compute,
    .encode = params_encode,
    .free_params = params_free,
};

/* Default chunks: a nested cell of at most 16384 pixels, or about one
 * equatorial ring (1024 to 65536 pixels) in RING order.  Each map pixel
 * costs microseconds here, so chunks stay small enough to spread over the
 * workers, and their windows (one a chunk) compact. */
static int64_t exact_chunk(int64_t nside, bool nested) {
  int64_t npix = tsr__hpx_npix(nside), c = 1;
  if (nested) {
    while (c * 4 <= 16384 && c * 4 <= npix)
      c *= 4;
    return c;
  }
  c = 4 * nside < 1024 ? 1024 : 4 * nside > 65536 ? 65536 : 4 * nside;
  return c < npix ? c : npix;
}

tsr_node_t *tsr__to_healpix_exact(tsr_graph_t *g, tsr_node_t *src, int64_t nside,
                                  const tsr_to_healpix_opts_t *o, char coordsys) {
  const char *op = "reproject_to_healpix";
  hx_params_t *hp = tsr__calloc(g->ctx, 1, sizeof *hp);
  int64_t chunk = o->chunk ? o->chunk : exact_chunk(nside, o->nested != 0);
  tsr_node_t *n;
  if (hp == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  hp->nside = nside;
  hp->nested = o->nested != 0;
  hp->coordsys = coordsys;
  hp->nan_mode = o->nan_mode;
  snprintf(hp->in_what, sizeof hp->in_what, "input %s", src->name);
  if ((n = tsr__node_alloc(g, &to_op, hp)) == NULL)
    return NULL;
  n->ndim = 1;
  n->n_inputs = 1;
  n->inputs[0] = src;
  n->n_planes = 2;
  n->dtype = o->dtype ? (tsr_dtype_t)o->dtype : src->dtype == TSR_F64 ? TSR_F64 : TSR_F32;
  n->shape[0] = tsr__hpx_npix(nside);
  n->chunk[0] = chunk;
  if (tsr__hpx_cards(g->ctx, nside, hp->nested, coordsys, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail_ctx(g, TSR_ENOMEM);
  }
  return tsr__node_finish(n);
}
