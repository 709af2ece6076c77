/* reproject_healpix.c -- reprojection from HEALPix maps
 * (reproject_from_healpix of reproject 0.10).
 *
 * From HEALPix: every output pixel centre goes through the target WCS to a
 * unit vector, the frame change into the map's frame, then either the
 * pixel that holds it (nearest) or astropy-healpix's four-neighbour
 * bilinear weights (sky/healpix.c).  A HEALPix map is a 1-D node, so an
 * output block's input window is an index range: the block's points,
 * sampled every SAMPLE pixels and on its edges, give a disc (centre, and
 * radius grown by the sample spacing and by the interpolation's reach),
 * and the disc an index range (tsr__hpx_disc_range).  Mapping is exact at
 * every pixel (no interpolated grid), as reproject does it: through wcslib,
 * or for plain TAN targets by the gnomonic projection's linear form
 * (fit_gnomonic), which is exact too and skips wcslib's trigonometry.
 * A block goes row by row: the row's unit vectors (as three arrays), then
 * for bilinear the four pixels and weights of every point
 * (tsr__hpx_bilinear, with a ring cache of the task's own), then the
 * gather from the map window, in a loop per way of reading it
 * (map_reader_t), then the output planes.  Nothing per run depends on the
 * map's size (no whole-map tables): a region costs its pixels plus the
 * run's start (the target's WCS, ~0.1 ms).
 *
 * To HEALPix is in reproject_to_healpix.c.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hpx.h"
#include "reproject.h"
#include "sky.h"

#define SAMPLE 8
#define HPX_CHUNK 65536

/* ------------------------------------------------------------------ */
/* From HEALPix                                                        */

typedef struct {
  tsr__reproject_params_t base; /* target, input name (no mapping: see from_state_t) */
  int order;
  int64_t nside;
  bool nested;
  char coordsys;
} from_params_t;

typedef struct {
  tsr__cel_t *cel;            /* the target's celestial WCS, this process's copy */
  tsr__frame_xform_t xf;      /* target frame -> map frame */
  bool tan;                   /* plain TAN target, frames a rotation apart: vectors from `gn` */
  double gn[4][3];            /* gnomonic: the map-frame direction of pixel (x, y) is along
                                 gn[1] + (x - gn[0][0]) gn[2] + (y - gn[0][1]) gn[3] */
} from_state_t;

static void from_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const from_params_t *fp = n->params;
  tsr__buf_put_i64(b, fp->order);
  tsr__buf_put_i64(b, fp->nside);
  tsr__buf_put_i64(b, fp->nested);
  tsr__buf_put_i64(b, fp->coordsys);
  tsr__reproject_params_encode(&fp->base, b);
}

/* Exact unit vectors (map frame) of n pixels, through wcslib. */
static void exact_vectors(from_state_t *st, size_t n, const double *x, const double *y, double *v) {
  tsr__cel_pix2vec(st->cel, n, x, y, v);
  if (!tsr__frame_identity(&st->xf))
    tsr__frame_apply(&st->xf, n, v);
}

/* A gnomonic (TAN) projection maps the plane to directions linearly: the
 * direction of pixel (x, y) is c + (x - x0) a1 + (y - y0) a2, with c the
 * unit vector of the tangent point (the reference pixel x0, y0) and a1, a2
 * in the tangent plane (perpendicular to c), and a rotation of frames
 * keeps that form.  So for plain TAN targets the vectors cost a few
 * multiplications instead of wcslib's trigonometry (most of this op's time
 * otherwise), exactly: a1 and a2 come from the exact vectors 1000 pixels
 * away (v / (v . c) - c, divided by 1000), and the result is checked
 * against wcslib at the corners and centre of the target (1e-12 rad, a
 * billionth of an nside-2^20 pixel); anything else keeps wcslib. */
static void fit_gnomonic(from_state_t *st, const tsr_wcs_t *target) {
  double x[7], y[7], v[21], crpix[2];
  int64_t nx = target->shape[0], ny = target->shape[1];
  st->tan = false;
  if (!tsr__cel_is_plain_tan(st->cel) || !tsr__frame_is_rotation(&st->xf))
    return;
  tsr__cel_crpix(st->cel, crpix);
  x[0] = crpix[0], y[0] = crpix[1];
  x[1] = crpix[0] + 1000, y[1] = crpix[1];
  x[2] = crpix[0], y[2] = crpix[1] + 1000;
  x[3] = 0, y[3] = 0;
  x[4] = (double)nx - 1, y[4] = 0;
  x[5] = 0, y[5] = (double)ny - 1;
  x[6] = (double)nx - 1, y[6] = (double)ny - 1;
  exact_vectors(st, 7, x, y, v);
  for (int k = 0; k < 21; k++)
    if (v[k] != v[k])
      return;
  st->gn[0][0] = crpix[0], st->gn[0][1] = crpix[1], st->gn[0][2] = 0;
  for (int a = 0; a < 3; a++)
    st->gn[1][a] = v[a];
  for (int j = 1; j <= 2; j++) {
    const double *w = v + 3 * j;
    double d = w[0] * v[0] + w[1] * v[1] + w[2] * v[2];
    if (!(d > 1e-3))
      return;
    for (int a = 0; a < 3; a++)
      st->gn[1 + j][a] = (w[a] / d - v[a]) / 1000.0;
  }
  st->tan = true;
  for (int k = 3; k < 7 && st->tan; k++) {
    double g[3], err = 0;
    for (int a = 0; a < 3; a++)
      g[a] = st->gn[1][a] + (x[k] - crpix[0]) * st->gn[2][a] + (y[k] - crpix[1]) * st->gn[3][a];
    double norm = sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]);
    for (int a = 0; a < 3; a++)
      err = fmax(err, fabs(g[a] / norm - v[3 * k + a]));
    if (!(err < 1e-12))
      st->tan = false;
  }
}

static void from_stop(tsr_node_t *n, void *state) {
  from_state_t *st = state;
  if (st == NULL)
    return;
  tsr__cel_free(st->cel);
  tsr__free(n->graph->ctx, st);
}

static int from_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  from_params_t *fp = n->params;
  from_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  tsr__frame_t to;
  int rc;
  *state = NULL;
  if (st == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  /* RING bilinear needs no libchealpix (sky/healpix.c: loading it costs
   * more than a small region's reprojection). */
  if ((fp->order == 0 || fp->nested) &&
      (rc = tsr__hpx_load(ctx)) != 0) {
    tsr__err_prefix(ctx, "%s", n->name);
    from_stop(n, st);
    return rc;
  }
  if ((rc = tsr__cel_new(ctx, fp->base.target, "target", &st->cel)) != 0) {
    from_stop(n, st);
    return rc;
  }
  tsr__hpx_frame(fp->coordsys, &to);
  tsr__frame_xform(tsr__cel_frame(st->cel), &to, &st->xf);
  fit_gnomonic(st, fp->base.target);
  *state = st;
  return 0;
}

/* Unit vectors (map frame) of the k points (xs[i], ys[i]), as three
 * arrays vx, vy, vz (NaN off the projection); `scratch` holds 3 k. */
static void point_vectors(from_state_t *st, size_t k, const double *xs, const double *ys,
                          double *restrict vx, double *restrict vy, double *restrict vz,
                          double *scratch) {
  if (st->tan) {
    double(*gn)[3] = st->gn;
    for (size_t i = 0; i < k; i++) {
      double dx = xs[i] - gn[0][0], dy = ys[i] - gn[0][1];
      double g0 = gn[1][0] + dx * gn[2][0] + dy * gn[3][0];
      double g1 = gn[1][1] + dx * gn[2][1] + dy * gn[3][1];
      double g2 = gn[1][2] + dx * gn[2][2] + dy * gn[3][2];
      double inv = 1.0 / sqrt(g0 * g0 + g1 * g1 + g2 * g2);
      vx[i] = g0 * inv, vy[i] = g1 * inv, vz[i] = g2 * inv;
    }
    return;
  }
  exact_vectors(st, k, xs, ys, scratch);
  for (size_t i = 0; i < k; i++)
    vx[i] = scratch[3 * i], vy[i] = scratch[3 * i + 1], vz[i] = scratch[3 * i + 2];
}

static int from_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                             tsr_region_t *win, bool *empty) {
  from_state_t *st = state;
  from_params_t *fp = n->params;
  tsr_ctx_t *ctx = n->graph->ctx;
  int64_t x0 = out->start[0], x1 = out->stop[0], y0 = out->start[1], y1 = out->stop[1];
  int64_t nxs = (x1 - x0 + SAMPLE - 1) / SAMPLE + 1, nys = (y1 - y0 + SAMPLE - 1) / SAMPLE + 1;
  size_t np = (size_t)(nxs * nys);
  /* The sample points' x and y, their vectors (v, as point_vectors
   * writes them: three arrays), then point_vectors' scratch. */
  double *xs = tsr__mallocarray(ctx, np, 8 * sizeof(double));
  double c[3] = {0, 0, 0}, radius = 0, step = 0;
  size_t good = 0, bad = 0;
  int rc = 0;
  (void)i;
  if (xs == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
    goto out;
  }
  double *ys = xs + np, *vx = ys + np, *vy = vx + np, *vz = vy + np;
  for (int64_t j = 0; j < nys; j++)
    for (int64_t k = 0; k < nxs; k++) {
      int64_t x = x0 + k * SAMPLE, y = y0 + j * SAMPLE;
      xs[j * nxs + k] = (double)(x < x1 ? x : x1 - 1);
      ys[j * nxs + k] = (double)(y < y1 ? y : y1 - 1);
    }
  point_vectors(st, np, xs, ys, vx, vy, vz, vz + np);
  for (size_t k = 0; k < np; k++) {
    if (vx[k] == vx[k]) {
      c[0] += vx[k], c[1] += vy[k], c[2] += vz[k];
      good++;
    } else
      bad++;
  }
  *win = *out;
  if (good == 0) {
    *empty = true;
    goto out;
  }
  {
    double norm = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    if (bad > 0 || norm < 1e-9 * (double)good) {
      radius = M_PI; /* off the projection in part, or all around the sphere: all of it */
    } else {
      for (int a = 0; a < 3; a++)
        c[a] /= norm;
      for (size_t k = 0; k < np; k++) {
        double d = c[0] * vx[k] + c[1] * vy[k] + c[2] * vz[k];
        double ang = acos(d > 1 ? 1 : d);
        if (ang > radius)
          radius = ang;
        /* The widest gap between neighbouring samples bounds how far an
         * unsampled pixel strays outside them. */
        if (k % (size_t)nxs + 1 < (size_t)nxs) {
          double g = acos(fmin(1, vx[k] * vx[k + 1] + vy[k] * vy[k + 1] + vz[k] * vz[k + 1]));
          step = g > step ? g : step;
        }
        if (k + (size_t)nxs < np) {
          size_t b = k + (size_t)nxs;
          double g = acos(fmin(1, vx[k] * vx[b] + vy[k] * vy[b] + vz[k] * vz[b]));
          step = g > step ? g : step;
        }
      }
      radius += step + 3 * tsr__hpx_pixel_size(fp->nside);
    }
  }
  tsr__hpx_disc_range(fp->nside, fp->nested, c, radius, &win->start[0], &win->stop[0]);
  win->start[1] = 0, win->stop[1] = 1;
  if (win->start[0] >= win->stop[0])
    *empty = true;
out:
  tsr__free(ctx, xs);
  return rc;
}

/* How from_compute reads its map window: a copy in the map node's dtype,
 * or a HEALPix table in place (tsr__op_t.view: big-endian, UNSEEN and
 * non-finite values still in it, made NaN here as the copy would). */
typedef struct {
  const unsigned char *p;
  int mode;                 /* 0, 1: a float32, float64 copy; 2, 3: float32, float64 in place */
  uint32_t lo_bits, span;   /* mode 2: UNSEEN's float32 range [lo, hi] as bit patterns:
                               u - lo_bits <= span (negative floats order as their bits) */
} map_reader_t;

static void map_reader(const tsr__window_t *w, map_reader_t *m) {
  float lo, hi;
  uint32_t ulo, uhi;
  m->p = w->data;
  m->mode = (w->node->dtype == TSR_F32 ? 0 : 1) + (w->view && w->big_endian ? 2 : 0);
  tsr__hpx_unseen_bounds(&lo, &hi);
  memcpy(&ulo, &lo, 4);
  memcpy(&uhi, &hi, 4);
  /* Both negative: the larger magnitude, lo, has the larger pattern. */
  m->lo_bits = uhi, m->span = ulo - uhi;
}

static inline double map_value(const map_reader_t *m, size_t k) {
  switch (m->mode) {
  case 0:
    return ((const float *)(const void *)m->p)[k];
  case 1:
    return ((const double *)(const void *)m->p)[k];
  case 2: {
    uint32_t u;
    float f;
    memcpy(&u, m->p + 4 * k, 4);
    u = __builtin_bswap32(u);
    memcpy(&f, &u, 4);
    /* Not finite (exponent all ones) or UNSEEN: NaN, as the copy. */
    bool bad = (u & 0x7f800000u) == 0x7f800000u || u - m->lo_bits <= m->span;
    return bad ? NAN : (double)f;
  }
  default: {
    uint64_t u;
    double d;
    memcpy(&u, m->p + 8 * k, 8);
    u = __builtin_bswap64(u);
    memcpy(&d, &u, 8);
    return tsr__hpx_unseen_nan(d);
  }
  }
}

/* A HEALPix source's table is read in place (io/healpix.c says when it
 * can be): a block then touches only the pages of the pixels it looks up.
 * Only HEALPix sources: map_value makes UNSEEN NaN, which a 1-D FITS image
 * given as a map keeps. */
static bool from_takes_view(const tsr_node_t *n, int i) {
  const tsr_node_t *in = n->inputs[i];
  return in->op != NULL && strcmp(in->op->name, "healpix") == 0;
}

/* Bilinear: out[k] = sum of w[4k + q] x the map at ring[4k + q] (RING
 * indices, converted when the map is NESTED), NaN when a neighbour lies
 * outside the window [lo, hi) or the point off the sky.  One loop per
 * reading mode (the switch in map_value folds away). */
static inline __attribute__((always_inline)) void
gather_mode(const map_reader_t *m, int mode, bool nested, int64_t nside, int64_t lo, int64_t hi,
            size_t n, const int64_t *restrict ring, const double *restrict w, double *restrict out) {
  map_reader_t mm = *m;
  mm.mode = mode;
  uint64_t len = (uint64_t)(hi - lo);
  for (size_t k = 0; k < n; k++) {
    const int64_t *pk = ring + 4 * k;
    uint64_t o[4];
    if (pk[0] < 0) {
      out[k] = NAN;
      continue;
    }
    for (int q = 0; q < 4; q++)
      o[q] = (uint64_t)((nested ? tsr__hpx_ring2nest_fast(nside, pk[q]) : pk[q]) - lo);
    /* Offsets below lo wrap to huge: one unsigned test per neighbour. */
    if ((o[0] < len) & (o[1] < len) & (o[2] < len) & (o[3] < len))
      out[k] = map_value(&mm, o[0]) * w[4 * k] + map_value(&mm, o[1]) * w[4 * k + 1] +
               map_value(&mm, o[2]) * w[4 * k + 2] + map_value(&mm, o[3]) * w[4 * k + 3];
    else
      out[k] = NAN;
  }
}

static void gather_bilinear(const map_reader_t *m, bool nested, int64_t nside, int64_t lo,
                            int64_t hi, size_t n, const int64_t *ring, const double *w,
                            double *out) {
  switch (m->mode) {
  case 0:
    gather_mode(m, 0, nested, nside, lo, hi, n, ring, w, out);
    break;
  case 1:
    gather_mode(m, 1, nested, nside, lo, hi, n, ring, w, out);
    break;
  case 2:
    gather_mode(m, 2, nested, nside, lo, hi, n, ring, w, out);
    break;
  default:
    gather_mode(m, 3, nested, nside, lo, hi, n, ring, w, out);
    break;
  }
}

static int from_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  from_params_t *fp = n->params;
  from_state_t *st = t->state;
  const tsr__window_t *w = &t->in[0];
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0];
  size_t bw = (size_t)(x1 - x0);
  int64_t lo = w->data ? w->win.start[0] : 0, hi = w->data ? w->win.stop[0] : 0;
  bool f32 = n->dtype == TSR_F32, bilinear = fp->order == 1;
  /* Per row: x, y, the vectors' three arrays, point_vectors' scratch (3),
   * the values, and for bilinear 4 indices and 4 weights; then the ring
   * cache. */
  size_t nd = 9 + (bilinear ? 8 : 0);
  double *xs = tsr__mallocarray(t->ctx, bw, nd * sizeof(double));
  tsr__hpx_rings_t *rings = bilinear ? tsr__malloc(t->ctx, sizeof *rings) : NULL;
  map_reader_t mr;
  int rc = 0;

  if (xs == NULL || (bilinear && rings == NULL)) {
    rc = tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
    goto out;
  }
  double *ys = xs + bw, *vx = ys + bw, *vy = vx + bw, *vz = vy + bw, *scratch = vz + bw;
  double *val = scratch + 3 * bw, *wt = val + bw;
  int64_t *ring = (int64_t *)(void *)(wt + 4 * bw);
  if (bilinear)
    tsr__hpx_rings_init(rings, fp->nside);
  map_reader(w, &mr);
  for (size_t k = 0; k < bw; k++)
    xs[k] = (double)x0 + (double)k;
  for (int64_t y = t->out.start[1]; y < t->out.stop[1]; y++) {
    size_t off = tsr__task_offset(t, 0, y - t->out.start[1], 0, 0);
    if (w->data == NULL) {
      for (size_t k = 0; k < bw; k++)
        val[k] = vx[k] = NAN;
    } else {
      for (size_t k = 0; k < bw; k++)
        ys[k] = (double)y;
      point_vectors(st, bw, xs, ys, vx, vy, vz, scratch);
      if (bilinear) {
        tsr__hpx_bilinear(rings, bw, vx, vy, vz, ring, wt);
        gather_bilinear(&mr, fp->nested, fp->nside, lo, hi, bw, ring, wt, val);
      } else {
        for (size_t k = 0; k < bw; k++) {
          const double v[3] = {vx[k], vy[k], vz[k]};
          int64_t p = v[0] == v[0] ? tsr__hpx_vec2pix(fp->nside, fp->nested, v) : -1;
          val[k] = p >= lo && p < hi ? map_value(&mr, (size_t)(p - lo)) : NAN;
        }
      }
    }
    /* The footprint is 1 wherever the pixel is on the sky. */
    if (t->planes[0] && f32)
      for (size_t k = 0; k < bw; k++)
        ((float *)t->planes[0])[off + k] = (float)val[k];
    else if (t->planes[0])
      memcpy((double *)t->planes[0] + off, val, bw * sizeof(double));
    if (t->planes[1] && f32)
      for (size_t k = 0; k < bw; k++)
        ((float *)t->planes[1])[off + k] = vx[k] == vx[k] ? 1.0f : 0.0f;
    else if (t->planes[1])
      for (size_t k = 0; k < bw; k++)
        ((double *)t->planes[1])[off + k] = vx[k] == vx[k] ? 1.0 : 0.0;
  }
out:
  tsr__free(t->ctx, rings);
  tsr__free(t->ctx, xs);
  return rc;
}

static const tsr__op_t from_op = {
    .name = "reproject_from_healpix",
    .version = 2, /* 2: the shared reprojection parameters' encoding */
    .flags = TSR__OP_SUBBOX,
    .input_region = from_input_region,
    .start = from_start,
    .stop = from_stop,
    .compute = from_compute,
    .encode = from_encode,
    .free_params = tsr__reproject_params_free,
    .takes_view = from_takes_view,
};

/* The map's nside, ordering and frame: the source's HEALPix cards, as
 * overridden by the options.  false with the error on the graph. */
static bool map_layout(tsr_graph_t *g, const char *op, const tsr_node_t *src, int nested,
                       const char *coordsys, int64_t *nside, bool *nest, char *cs) {
  bool has = src->wcs && tsr__hpx_from_cards(src->wcs, nside, nest, cs);
  if (src->ndim != 1) {
    tsr__graph_fail(g, TSR_EINVAL, "%s: input %s has %d axes; a HEALPix map is 1-D", op,
                    src->name, src->ndim);
    return false;
  }
  if (!has) {
    *nside = tsr__hpx_nside_of(src->shape[0]);
    if (*nside < 0) {
      tsr__graph_fail(g, TSR_EINVAL, "%s: input %s has %lld values; a HEALPix map has 12 nside^2",
                      op, src->name, (long long)src->shape[0]);
      return false;
    }
    if (nested < 0 || coordsys == NULL) {
      tsr__graph_fail(g, TSR_EINVAL,
                      "%s: input %s is not a HEALPix source; give its ordering (nested) and "
                      "frame (coordsys)",
                      op, src->name);
      return false;
    }
  }
  if (nested >= 0)
    *nest = nested != 0;
  if (coordsys != NULL && (*cs = tsr__hpx_coordsys_parse(coordsys)) == 0) {
    tsr__graph_fail(g, TSR_EINVAL, "%s: coordsys \"%s\"; expected G, C or E (galactic, icrs, ecliptic)",
                    op, coordsys);
    return false;
  }
  if (!tsr__hpx_nside_ok(*nside, *nest)) {
    tsr__graph_fail(g, TSR_EINVAL, "%s: nside %lld cannot be NESTED (not a power of 2)", op,
                    (long long)*nside);
    return false;
  }
  return true;
}

tsr_node_t *tsr_reproject_from_healpix(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                       const tsr_from_healpix_opts_t *opts) {
  tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
  from_params_t *fp;
  tsr__cel_t *probe = NULL;
  int64_t nside;
  bool nested;
  char coordsys;
  int rc;
  const char *op = "reproject_from_healpix";

  if (!tsr__graph_check(g))
    return NULL;
  if (opts)
    o = *opts;
  if (!tsr__reproject_check_args(g, op, src, target, o.dtype, o.block))
    return NULL;
  if (o.method != TSR_HEALPIX_INTERP && o.method != TSR_HEALPIX_EXACT)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: method %d is not TSR_HEALPIX_INTERP (0) or TSR_HEALPIX_EXACT (1)",
                           op, (int)o.method);
  if (o.method == TSR_HEALPIX_EXACT && o.nan_mode != TSR_NAN_PROPAGATE &&
      o.nan_mode != TSR_NAN_IGNORE)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: nan_mode %d is not TSR_NAN_PROPAGATE (0) or TSR_NAN_IGNORE (1)",
                           op, (int)o.nan_mode);
  if (o.method == TSR_HEALPIX_INTERP && o.order != 0 && o.order != 1)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: order %d; only nearest-neighbor (0) and bilinear (1) are "
                           "defined on HEALPix maps",
                           op, o.order);
  if (!map_layout(g, op, src, o.nested, o.coordsys, &nside, &nested, &coordsys))
    return NULL;
  if (target->naxis != 2 || target->shape[0] < 1 || target->shape[1] < 1)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: target needs 2 celestial axes with NAXIS1 and NAXIS2; it has "
                           "NAXIS = %d",
                           op, target->naxis);
  if ((rc = tsr__cel_new(g->ctx, target, "target", &probe)) != 0) {
    tsr__err_prefix(g->ctx, "%s", op);
    return tsr__graph_fail_ctx(g, rc);
  }
  tsr__cel_free(probe);
  if (o.method == TSR_HEALPIX_EXACT)
    return tsr__from_healpix_exact(g, src, target, &o, nside, nested, coordsys);
  /* The pixel centres are taken to the sky exactly (no mapping grid). */
  fp = tsr__reproject_params_new(g, op, sizeof *fp, src, target, 0.0, false);
  if (fp == NULL)
    return NULL;
  fp->order = o.order;
  fp->nside = nside;
  fp->nested = nested;
  fp->coordsys = coordsys;
  return tsr__reproject_node(g, &from_op, fp, src, target, o.dtype, o.block);
}
