/* drizzle.c -- Fruchter & Hook's drizzle (tsr_drizzle) and its context
 * images (tsr_drizzle_context), as STScI's drizzle 1.13 computes them.
 *
 * drizzle walks each input image pixel by pixel and drops the pixel, shrunk
 * by pixfrac, onto the output grid through a kernel; an output pixel keeps
 * the weighted mean of the drops that land in it, updated as each drop
 * arrives (value = (value * w + dow * d) / (w + dow) in float32, weight
 * w += dow), so its bits depend on the order of its drops.  Here the output
 * is computed by blocks instead of by inputs: a block takes, for each input
 * in order, the input window whose drops can land in it -- the block's
 * boundary mapped back into the input (tsr__reproject_window), grown by the
 * kernel's reach in output pixels -- and replays that window's drops in
 * row order, keeping only those inside the block.  Every output pixel so
 * sees its drops in drizzle's order (input 0's pixels row by row, then
 * input 1's, ...), and a region, any block size and any executor give the
 * same bits as the whole image.
 *
 * The drop geometry is drizzle's.  The input pixel centres are mapped
 * into output pixels (drizzle's pixmap; pixmap() says how, within the
 * node's mapping tolerance; 0 maps every pixel exactly with wcslib, as
 * astropy computes it).  The square kernel's corners are interpolated from
 * that pixmap as drizzle 1.13's interpolate_point does: along one row (for
 * x) or one column (for y) of centres, from four valid neighbours around
 * the corner; each corner coordinate, shared by neighbouring pixels, is
 * computed once.  (drizzle 1.13.5 later changed this to bilinear
 * interpolation, which moves drops by up to half the pixmap's cross
 * derivative; tessera keeps 1.13's so that it reproduces python3-drizzle
 * 1.13.4 and the reference images.)  Since that interpolation reads
 * centres up to five
 * pixels away, a block asks for its windows PM pixels wider than the drops
 * it replays and replays only the inner part, except where the window
 * meets the image's edge.  drizzle's overlap tests (check_image_overlap and
 * check_line_overlap, which only skip lines and pixels whose drops miss the
 * output) are not needed: a block replays what its window holds (and
 * drizzle 1.13.4's misjudge an input's last line, drizzle#89).
 *
 * Arithmetic follows drizzle's types so that values agree to float32
 * rounding: float input values and weights, float scale^2 where drizzle
 * uses float, double overlaps, the float update above.  Departures: an
 * input pixel whose value or weight is NaN drops nothing (drizzle 1.13
 * would spread the NaN), and `counts` inputs are divided by their own
 * exposure time (drizzle 1.13's tdriz reads an uninitialised field there).
 *
 * Context planes are nodes of their own (the same op, context_plane >= 0):
 * they replay the same drops of their 32 inputs and set bit k % 32 where
 * a drop of input k has a positive weight; values are float64 holding
 * drizzle's int32 words.  So are the variance and the output DQ
 * (tsr_drizzle_product): the same drops, accumulating sum(w) and
 * sum(w^2 var) in double, or ORing the DQ word of each input pixel that
 * drops a nonzero weight.  SWarp's weight kinds and the DQ masks are
 * applied pixel by pixel as a window is replayed (ops/weights.h), so a
 * flagged or bad pixel drops nothing in every product alike; BACKGROUND
 * weights come from a tsr_variance_map node of the image, read as a
 * variance.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drizzle.h"
#include "mapping.h"
#include "reproject.h"
#include "sky.h"
#include "weights.h"

#define PM 7                /* input pixels read around the replayed ones (corner interpolation) */
#define PG 16               /* pixmap grid step, input pixels */
#define LANCZOS_NLUT 512    /* drizzle's table: 512 entries 0.01 px apart */
#define LANCZOS_DEL 0.01f

/* What a node of the op computes besides context planes. */
enum { PRODUCT_SCIENCE = TSR_DRIZZLE_OUT_SCIENCE, PRODUCT_VARIANCE = TSR_DRIZZLE_OUT_VARIANCE,
       PRODUCT_DQ = TSR_DRIZZLE_OUT_DQ };

/* How a weight map's values read: drizzle's inwht as given, or a SWarp
 * kind (tsr_weight_type_t MAP_*; BACKGROUND's maps are variances). */
#define WKIND_RAW (-1)

typedef struct {
  tsr_wcs_t *target;
  int n;                   /* inputs */
  int *wslot;              /* n: node input index of input k's weights, or -1 */
  int *dslot;              /* n: node input index of input k's DQ map, or -1 */
  double *thresh;          /* n: WEIGHT_THRESH of input k's map (SWarp kinds) */
  int wkind;               /* WKIND_RAW or TSR_WEIGHT_MAP_WEIGHT .. MAP_RMS */
  uint32_t dq_bits;        /* 0 = any nonzero DQ value is bad */
  int product;             /* PRODUCT_* (context planes: PRODUCT_SCIENCE) */
  double *expin;           /* n: exposure times, s */
  double *scale;           /* n: output pixel scale / input pixel scale (drizzle's pix_ratio) */
  float *wscale;           /* n: weight scale (wt_scl) */
  tsr_drizzle_opts_t o;    /* as given (o.expin not kept) */
  double exptime_sum;      /* sum of expin: out_units counts */
  int context_plane;       /* -1: science + weight; else the context plane this node is */
} drz_params_t;

typedef struct {
  tsr__map_t **imap;       /* n: target pixel -> input pixel (windows), made on first use */
  tsr__map_t **fmap;       /* n: input pixel -> target pixel (drizzle's pixmap) */
  double *px, *py;         /* pixmap of the current window */
  size_t pcap;
  double *corner[4];       /* the square kernel's corner tables (job_t) */
  size_t ccap;
  float *od, *oc;          /* block accumulators: value and weight */
  uint32_t *bits;          /* block context or DQ words */
  double *sw, *sv;         /* block variance accumulators: sum(w), sum(w^2 var) */
  size_t bcap;
  float lut[LANCZOS_NLUT]; /* Lanczos drop table of the node's kernel */
} drz_state_t;

static void params_free(tsr_ctx_t *ctx, void *p) {
  drz_params_t *dp = p;
  if (dp == NULL)
    return;
  tsr_wcs_free(dp->target);
  tsr__free(ctx, dp->wslot);
  tsr__free(ctx, dp->dslot);
  tsr__free(ctx, dp->thresh);
  tsr__free(ctx, dp->expin);
  tsr__free(ctx, dp->scale);
  tsr__free(ctx, dp->wscale);
  tsr__free(ctx, dp);
}

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const drz_params_t *dp = n->params;
  tsr__buf_put_i64(b, dp->n);
  tsr__buf_put_i64(b, dp->context_plane);
  tsr__buf_put_i64(b, (int64_t)dp->o.kernel);
  tsr__buf_put_f64(b, dp->o.pixfrac);
  tsr__buf_put_i64(b, dp->o.in_units_counts);
  tsr__buf_put_i64(b, dp->o.out_units_counts);
  tsr__buf_put_f64(b, dp->o.fillval);
  tsr__buf_put_f64(b, dp->o.mapping_tolerance);
  tsr__buf_put_i64(b, dp->product);
  tsr__buf_put_i64(b, dp->wkind);
  tsr__buf_put_i64(b, dp->dq_bits);
  for (int k = 0; k < dp->n; k++) {
    tsr__buf_put_i64(b, dp->wslot[k]);
    tsr__buf_put_i64(b, dp->dslot[k]);
    tsr__buf_put_f64(b, dp->thresh[k]);
    tsr__buf_put_f64(b, dp->expin[k]);
    tsr__buf_put_f64(b, (double)dp->wscale[k]);
  }
  tsr__wcs_encode(dp->target, b);
}

void tsr__drizzle_lanczos_lut(int order, int n, float del, float *lut) {
  const float forder = (float)order;
  lut[0] = 1.0f;
  for (int i = 1; i < n; i++) {
    float poff = (float)(M_PI * (double)(float)i * (double)del);
    if (poff < M_PI * forder) {
      float pq = poff / forder;
      lut[i] = (float)(sin(poff) / poff * sin(pq) / pq);
    } else {
      lut[i] = 0.0f;
    }
  }
}

static int drz_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  drz_params_t *dp = n->params;
  drz_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  *state = NULL;
  if (st == NULL || (st->imap = tsr__calloc(ctx, (size_t)dp->n, sizeof *st->imap)) == NULL ||
      (st->fmap = tsr__calloc(ctx, (size_t)dp->n, sizeof *st->fmap)) == NULL) {
    if (st)
      tsr__free(ctx, st->imap);
    tsr__free(ctx, st);
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  }
  if (dp->o.kernel == TSR_DRIZZLE_LANCZOS2 || dp->o.kernel == TSR_DRIZZLE_LANCZOS3)
    tsr__drizzle_lanczos_lut(dp->o.kernel == TSR_DRIZZLE_LANCZOS2 ? 2 : 3, LANCZOS_NLUT,
                             LANCZOS_DEL, st->lut);
  *state = st;
  return 0;
}

static void drz_stop(tsr_node_t *n, void *state) {
  drz_state_t *st = state;
  tsr_ctx_t *ctx = n->graph->ctx;
  drz_params_t *dp = n->params;
  if (st == NULL)
    return;
  for (int k = 0; k < dp->n; k++) {
    tsr__map_free(st->imap[k]);
    tsr__map_free(st->fmap[k]);
  }
  tsr__free(ctx, st->imap);
  tsr__free(ctx, st->fmap);
  tsr__free(ctx, st->px);
  tsr__free(ctx, st->py);
  for (int c = 0; c < 4; c++)
    tsr__free(ctx, st->corner[c]);
  tsr__free(ctx, st->od);
  tsr__free(ctx, st->oc);
  tsr__free(ctx, st->bits);
  tsr__free(ctx, st->sw);
  tsr__free(ctx, st->sv);
  tsr__free(ctx, st);
}

/* The maps of input k, made when first needed: a run touches only the
 * inputs its blocks meet. */
static int input_maps(tsr_ctx_t *ctx, tsr_node_t *n, drz_state_t *st, int k) {
  const drz_params_t *dp = n->params;
  const tsr_node_t *in = n->inputs[k];
  char what[160];
  int rc;
  if (st->imap[k] != NULL)
    return 0;
  snprintf(what, sizeof what, "input %s", in->name);
  if ((rc = tsr__map_new(ctx, dp->target, "target", in->wcs, what, 1e-4, false, &st->imap[k])) != 0)
    return rc;
  if ((rc = tsr__map_new(ctx, in->wcs, what, dp->target, "target", dp->o.mapping_tolerance, false,
                         &st->fmap[k])) != 0) {
    tsr__map_free(st->imap[k]);
    st->imap[k] = NULL;
    return rc;
  }
  return 0;
}

/* How far (output pixels) a drop of input k reaches from its centre,
 * generously: the kernel's half-width, the corners' interpolation
 * offsets and rounding. */
static double reach(const drz_params_t *dp, int k) {
  double s = dp->scale[k], pf = dp->o.pixfrac, r;
  switch (dp->o.kernel) {
  case TSR_DRIZZLE_POINT: r = 1.0; break;
  case TSR_DRIZZLE_GAUSSIAN: r = fmax(2.5 * pf / 2.3548 / s, 1.2 / s); break;
  case TSR_DRIZZLE_LANCZOS2: r = 2.0 * pf / s + 1.0; break;
  case TSR_DRIZZLE_LANCZOS3: r = 3.0 * pf / s + 1.0; break;
  case TSR_DRIZZLE_SQUARE: r = (0.5 * pf + 1.0) * 1.5 / s; break;
  default: r = pf / s / 2.0; break;
  }
  return r * 1.5 + 3.0;
}

static int drz_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                            tsr_region_t *win, bool *empty) {
  const drz_params_t *dp = n->params;
  drz_state_t *st = state;
  int k = i, rc;
  if (i >= dp->n) {
    /* A weight or DQ map: the window of its image. */
    for (k = 0; k < dp->n && dp->wslot[k] != i && dp->dslot[k] != i; k++)
      ;
  }
  if (dp->context_plane >= 0 && k / 32 != dp->context_plane) {
    *empty = true;
    return 0;
  }
  if ((rc = input_maps(n->graph->ctx, n, st, k)) != 0)
    return rc;
  return tsr__reproject_window(st->imap[k], out, (int64_t)ceil(reach(dp, k)), n->inputs[k],
                               PM + 2.0, win, empty);
}

/* ------------------------------------------------------------------ */
/* One input's drops into one block                                    */

typedef struct {
  const double *px, *py;        /* pixmap over the window, row-major */
  int64_t wx0, wy0, nwx, nwy;   /* the window */
  int64_t nx, ny;               /* the input image */
  int64_t ox, oy;               /* the output image */
  int64_t bx0, bx1, by0, by1;   /* the block, half-open */
  int mode;                     /* MODE_* */
  float *od, *oc;               /* block accumulators (science) */
  uint32_t *bits;               /* block context or DQ words */
  uint32_t bit;                 /* ORed where a drop lands: the input's context bit, the
                                   pixel's DQ word */
  double *sw, *sv;              /* block variance accumulators */
  double var;                   /* variance of the current pixel's drop value */
  /* Square kernel: the corners' coordinates, each computed once (corners
   * are shared by neighbouring pixels), or xl NULL to interpolate each
   * corner as it comes (an integral dh, where drizzle reads the pixmap
   * directly instead). */
  const double *xl, *xr;        /* x of corner i -/+ dh on line r: [(r - r0) * cw + i - c0] */
  const double *yu, *yd;        /* y of corner k +/- dh on column c: [(c - l0) * ch + k - k0] */
  int64_t c0, cw, k0, ch, r0, l0;
} job_t;

static inline const double *pm(const job_t *j, int idim) { return idim ? j->py : j->px; }
static inline double pm_at(const job_t *j, int idim, int64_t x, int64_t y) {
  return pm(j, idim)[(y - j->wy0) * j->nwx + (x - j->wx0)];
}

static inline int64_t clamp_start(double v, int64_t dim) {
  double f = floor(v);
  return f < 0 ? 0 : f > (double)(dim - 2) ? dim - 2 : (int64_t)f;
}

/* One output coordinate idim of drizzle 1.13's interpolate_point at input
 * coordinate `c` along axis idim, on the line (row for idim 0, column for
 * idim 1) `line` = floor of the other coordinate, clamped: four valid
 * pixmap values at offsets 0, 1, -1, 2, -2, ... from floor(c) (the next
 * line if this one has too few), linear interpolation between the first
 * two and between the last two, and between those two results.  NaN when
 * fewer than four are valid. */
static double interp_dim(const job_t *j, int idim, double c, int64_t line) {
  int64_t dims[2] = {j->nx, j->ny};
  int jdim = 1 - idim;
  int64_t start = clamp_start(c, dims[idim]), pts[4];
  double part[4];
  int npt = 0;
  if (start >= 1 && start + 2 < dims[idim] && line < dims[jdim]) {
    /* Away from the edges, with all four defined, the points are start, +1,
     * -1, +2: the same arithmetic as below without the search. */
    double v[4];
    int64_t off[4] = {0, 1, -1, 2};
    for (int k = 0; k < 4; k++)
      v[k] = idim ? pm_at(j, 1, line, start + off[k]) : pm_at(j, 0, start + off[k], line);
    if (v[0] == v[0] && v[1] == v[1] && v[2] == v[2] && v[3] == v[3]) {
      double f0 = (c - (double)start) / 1.0, f1 = (c - (double)(start - 1)) / 3.0;
      double a = (1.0 - f0) * v[0] + f0 * v[1], b = (1.0 - f1) * v[2] + f1 * v[3];
      return (1.0 - f0) * a + f0 * b;
    }
  }
  for (int side = 0; side < 2 && npt < 4; side++) {
    int64_t xy[2];
    int d = 0;
    xy[jdim] = line + side;
    while (npt < 4) {
      xy[idim] = start + d;
      if (xy[idim] >= 0 && xy[idim] < dims[idim] && xy[jdim] < dims[jdim]) {
        double v = pm_at(j, idim, xy[0], xy[1]);
        if (v == v) {
          pts[npt] = xy[idim];
          part[npt++] = v;
        }
      }
      if (d > 0) {
        d = -d;
      } else {
        d = 1 - d;
        if (d > 4)
          break;
      }
    }
  }
  if (npt < 4)
    return NAN;
  for (int m = 4; m > 1; m /= 2)
    for (int a = 0, b = 0; a < m; a += 2, b++) {
      double frac = (c - (double)pts[a]) / (double)(pts[a + 1] - pts[a]);
      part[b] = (1.0 - frac) * part[a] + frac * part[a + 1];
    }
  return part[0];
}

/* drizzle 1.13's interpolate_point at xyin; false when it has too few
 * valid neighbours. */
static bool interp_point(const job_t *j, const double xyin[2], double xyout[2]) {
  xyout[0] = interp_dim(j, 0, xyin[0], clamp_start(xyin[1], j->ny));
  xyout[1] = interp_dim(j, 1, xyin[1], clamp_start(xyin[0], j->nx));
  return xyout[0] == xyout[0] && xyout[1] == xyout[1];
}

/* drizzle's map_pixel: the pixmap at an integer pixel, interpolated where
 * it is NaN. */
static bool map_pixel(const job_t *j, int64_t i, int64_t k, double xyout[2]) {
  xyout[0] = pm_at(j, 0, i, k);
  xyout[1] = pm_at(j, 1, i, k);
  if (xyout[0] == xyout[0] && xyout[1] == xyout[1])
    return true;
  double xyin[2] = {(double)i, (double)k};
  return interp_point(j, xyin, xyout);
}

/* drizzle's map_point: direct for integral points on the image. */
static bool map_point(const job_t *j, const double xyin[2], double xyout[2]) {
  double fx = floor(xyin[0]), fy = floor(xyin[1]);
  if (fx == xyin[0] && fy == xyin[1] && fx >= 0 && fx < (double)j->nx && fy >= 0 &&
      fy < (double)j->ny)
    return map_pixel(j, (int64_t)fx, (int64_t)fy, xyout);
  return interp_point(j, xyin, xyout);
}

/* Area of the quadrilateral (x, y) (clockwise after the caller's swap)
 * inside the unit output pixel centred on (is, js): drizzle's compute_area,
 * the signed areas under each edge clipped to three sides of the pixel
 * (widths are negative along two edges, so the outside cancels). */
static double box_area(double is, double js, const double x[4], const double y[4]) {
  double lo[2] = {is - 0.5, js - 0.5}, hi[2] = {is + 0.5, js + 0.5};
  double area = 0.0;
  for (int p = 0; p < 4; p++) {
    int q = (p + 1) & 3;
    double s[2][2] = {{x[p], y[p]}, {x[q], y[q]}};
    int count = 3;
    bool skip = false;
    for (int dim = 0; dim < 2 && !skip; dim++)
      for (int side = 0; side < 2; side++, count--) {
        double border = side ? hi[dim] : lo[dim];
        double d0 = s[0][dim] - border, d1 = s[1][dim] - border;
        int p0 = d0 > 0.0, p1 = d1 > 0.0;
        if (p0 == p1) {
          if (p0 == side) {
            /* The segment lies outside this border. */
            if (count == 0) {
              area += s[1][0] - s[0][0];
            } else {
              skip = true;
              break;
            }
          } else if (count == 0) {
            area += 0.5 * (s[1][0] - s[0][0]) * ((1.0 + d0) + (1.0 + d1));
          }
        } else {
          int outside = side ? p1 : p0, jdim = 1 - dim;
          double mid[2];
          mid[dim] = border;
          mid[jdim] = (d1 * s[0][jdim] - d0 * s[1][jdim]) / (d1 - d0);
          if (count == 0) {
            if (outside == 0) {
              area += mid[0] - s[0][0];
              area += 0.5 * (s[1][0] - mid[0]) * (1.0 + (1.0 + d1));
            } else {
              area += s[1][0] - mid[0];
              area += 0.5 * (mid[0] - s[0][0]) * ((1.0 + d0) + 1.0);
            }
          } else {
            s[outside][0] = mid[0];
            s[outside][1] = mid[1];
          }
        }
      }
  }
  return fabs(area);
}

enum { MODE_SCIENCE = 0, MODE_CONTEXT, MODE_VARIANCE, MODE_DQ };

/* A drop of weight dow on output pixel o for the products other than the
 * science image. */
static void drop_other(const job_t *j, size_t o, float dow) {
  switch (j->mode) {
  case MODE_CONTEXT:
    if (dow > 0.0f)
      j->bits[o] |= j->bit;
    break;
  case MODE_DQ:
    if (dow != 0.0f)
      j->bits[o] |= j->bit;
    break;
  default:
    if (dow != 0.0f) {
      j->sw[o] += (double)dow;
      j->sv[o] += (double)dow * (double)dow * j->var;
    }
  }
}

/* drizzle's update_data (or the other products' update): a drop of value
 * d and weight dow on output pixel o of the block. */
static inline void drop(const job_t *j, size_t o, float d, float dow) {
  if (j->mode != MODE_SCIENCE) {
    drop_other(j, o, dow);
    return;
  }
  if (dow == 0.0f)
    return;
  float vc = j->oc[o];
  float vpd = vc + dow;
  if (vc == 0.0f)
    j->od[o] = d;
  else
    j->od[o] = (float)((double)(j->od[o] * vc + dow * d) / (double)vpd);
  j->oc[o] = vpd;
}

/* Output index range [lo, hi] of a drop, clipped to the output image (as
 * drizzle clips) and then to the block; false when empty. */
static inline bool clip_range(int64_t lo, int64_t hi, int64_t osz, int64_t b0, int64_t b1,
                              int64_t *a, int64_t *z) {
  if (lo < 0) lo = 0;
  if (hi > osz - 1) hi = osz - 1;
  if (lo < b0) lo = b0;
  if (hi > b1 - 1) hi = b1 - 1;
  *a = lo;
  *z = hi;
  return lo <= hi;
}

/* The output pixels within r of (cx, cy), drizzle's rounding, clipped as
 * clip_range clips; false when empty. */
static inline bool reach_box(const job_t *j, double cx, double cy, double r, int64_t *x0,
                             int64_t *x1, int64_t *y0, int64_t *y1) {
  return clip_range(tsr__nint(cy - r), tsr__nint(cy + r), j->oy, j->by0, j->by1, y0, y1) &&
         clip_range(tsr__nint(cx - r), tsr__nint(cx + r), j->ox, j->bx0, j->bx1, x0, x1);
}

#define BIDX(j, ii, jj) ((size_t)(((jj) - (j)->by0) * ((j)->bx1 - (j)->bx0) + ((ii) - (j)->bx0)))

/* Input pixel (i, k) with value v and weight w (float) through the node's
 * kernel. */
static void drop_pixel(const drz_params_t *dp, const drz_state_t *st, const job_t *j, double scale,
                       int64_t i, int64_t k, float v, float w) {
  double pf = dp->o.pixfrac;
  int64_t x0, x1, y0, y1;
  double xy[2];
  switch (dp->o.kernel) {
  case TSR_DRIZZLE_SQUARE: {
    double dh = 0.5 * pf, xin[4] = {i - dh, i + dh, i + dh, i - dh};
    double yin[4] = {k + dh, k + dh, k - dh, k - dh}, xo[4], yo[4];
    float scale2 = (float)(scale * scale);
    if (j->xl != NULL) {
      int64_t ru = clamp_start(k + dh, j->ny) - j->r0, rd = clamp_start(k - dh, j->ny) - j->r0;
      int64_t cl = clamp_start(i - dh, j->nx) - j->l0, cr = clamp_start(i + dh, j->nx) - j->l0;
      int64_t ic = i - j->c0, kc = k - j->k0;
      xo[0] = j->xl[ru * j->cw + ic], yo[0] = j->yu[cl * j->ch + kc];
      xo[1] = j->xr[ru * j->cw + ic], yo[1] = j->yu[cr * j->ch + kc];
      xo[2] = j->xr[rd * j->cw + ic], yo[2] = j->yd[cr * j->ch + kc];
      xo[3] = j->xl[rd * j->cw + ic], yo[3] = j->yd[cl * j->ch + kc];
      if (!(xo[0] == xo[0] && xo[1] == xo[1] && xo[2] == xo[2] && xo[3] == xo[3] &&
            yo[0] == yo[0] && yo[1] == yo[1] && yo[2] == yo[2] && yo[3] == yo[3]))
        return;
    } else {
      for (int c = 0; c < 4; c++) {
        double p[2] = {xin[c], yin[c]};
        if (!map_point(j, p, xy))
          return;
        xo[c] = xy[0];
        yo[c] = xy[1];
      }
    }
    double jaco = 0.5f * ((xo[1] - xo[3]) * (yo[0] - yo[2]) - (xo[0] - xo[2]) * (yo[1] - yo[3]));
    if (jaco < 0.0) {
      double t;
      jaco = -jaco;
      t = xo[1], xo[1] = xo[3], xo[3] = t;
      t = yo[1], yo[1] = yo[3], yo[3] = t;
    }
    if (!(jaco > 0.0))
      return;
    float d = v * scale2;
    double wd = (double)w;
    double mnx = xo[0], mxx = xo[0], mny = yo[0], mxy = yo[0];
    for (int c = 1; c < 4; c++) {
      mnx = xo[c] < mnx ? xo[c] : mnx;
      mxx = xo[c] > mxx ? xo[c] : mxx;
      mny = yo[c] < mny ? yo[c] : mny;
      mxy = yo[c] > mxy ? yo[c] : mxy;
    }
    if (!clip_range(tsr__nint(mny), tsr__nint(mxy), j->oy, j->by0, j->by1, &y0, &y1) ||
        !clip_range(tsr__nint(mnx), tsr__nint(mxx), j->ox, j->bx0, j->bx1, &x0, &x1))
      return;
    for (int64_t jj = y0; jj <= y1; jj++)
      for (int64_t ii = x0; ii <= x1; ii++) {
        double dover = box_area((double)ii, (double)jj, xo, yo);
        if (dover > 0.0) {
          dover /= jaco;
          drop(j, BIDX(j, ii, jj), d, (float)(dover * wd));
        }
      }
    return;
  }
  case TSR_DRIZZLE_POINT: {
    float scale2 = (float)(scale * scale);
    if (!map_pixel(j, i, k, xy))
      return;
    int64_t ii = tsr__nint(xy[0]), jj = tsr__nint(xy[1]);
    if (ii < j->bx0 || ii >= j->bx1 || jj < j->by0 || jj >= j->by1)
      return;
    drop(j, BIDX(j, ii, jj), v * scale2, w);
    return;
  }
  case TSR_DRIZZLE_TOPHAT: {
    float scale2 = (float)(scale * scale);
    float pfo = (float)(pf / scale / 2.0), pfo2 = pfo * pfo;
    if (!map_pixel(j, i, k, xy))
      return;
    if (!reach_box(j, xy[0], xy[1], pfo, &x0, &x1, &y0, &y1))
      return;
    float d = v * scale2;
    for (int64_t jj = y0; jj <= y1; jj++) {
      double ddy = xy[1] - (double)jj;
      for (int64_t ii = x0; ii <= x1; ii++) {
        double ddx = xy[0] - (double)ii;
        if (ddx * ddx + ddy * ddy <= pfo2)
          drop(j, BIDX(j, ii, jj), d, w);
      }
    }
    return;
  }
  case TSR_DRIZZLE_GAUSSIAN: {
    double pfo = 2.5 * pf / 2.3548 / scale, ac = 1.0 / (pf * pf), scale2 = scale * scale;
    double efac = (2.3548 * 2.3548) * scale2 * ac / 2.0, es = efac / M_PI;
    if (pfo < 1.2 / scale)
      pfo = 1.2 / scale;
    if (!map_pixel(j, i, k, xy))
      return;
    if (!reach_box(j, xy[0], xy[1], pfo, &x0, &x1, &y0, &y1))
      return;
    float d = (float)((double)v * scale2);
    double wd = (double)w;
    for (int64_t jj = y0; jj <= y1; jj++) {
      double ddy = xy[1] - (double)jj;
      for (int64_t ii = x0; ii <= x1; ii++) {
        double ddx = xy[0] - (double)ii;
        double dover = es * exp(-(ddx * ddx + ddy * ddy) * efac);
        drop(j, BIDX(j, ii, jj), d, (float)((double)(float)dover * wd));
      }
    }
    return;
  }
  case TSR_DRIZZLE_LANCZOS2:
  case TSR_DRIZZLE_LANCZOS3: {
    int order = dp->o.kernel == TSR_DRIZZLE_LANCZOS2 ? 2 : 3;
    float scale2 = (float)(scale * scale);
    double pfo = (double)order * pf / scale;
    double sdp = scale / (double)LANCZOS_DEL / pf;
    if (!map_pixel(j, i, k, xy))
      return;
    /* drizzle centres the search box one pixel low (its dx = dy = 1). */
    if (!reach_box(j, xy[0] - 1.0, xy[1] - 1.0, pfo, &x0, &x1, &y0, &y1))
      return;
    float d = v * scale2;
    double wd = (double)w;
    for (int64_t jj = y0; jj <= y1; jj++) {
      int64_t iy = tsr__nint(fabs(xy[1] - (double)jj) * sdp) + 1;
      for (int64_t ii = x0; ii <= x1; ii++) {
        int64_t ix = tsr__nint(fabs(xy[0] - (double)ii) * sdp) + 1;
        /* Past the table the kernel is 0 (drizzle would read past it). */
        double dover = ix < LANCZOS_NLUT && iy < LANCZOS_NLUT ? (double)(st->lut[ix] * st->lut[iy])
                                                              : 0.0;
        drop(j, BIDX(j, ii, jj), d, (float)(dover * wd));
      }
    }
    return;
  }
  case TSR_DRIZZLE_TURBO: {
    double ac = 1.0 / (pf * pf), pfo = pf / scale / 2.0, scale2 = scale * scale;
    if (!map_pixel(j, i, k, xy))
      return;
    double xxi = xy[0] - pfo, xxa = xy[0] + pfo, yyi = xy[1] - pfo, yya = xy[1] + pfo;
    if (!reach_box(j, xy[0], xy[1], pfo, &x0, &x1, &y0, &y1))
      return;
    float d = v * (float)scale2;
    double wd = (double)w;
    for (int64_t jj = y0; jj <= y1; jj++)
      for (int64_t ii = x0; ii <= x1; ii++) {
        double hx = (double)ii + 0.5, lx = (double)ii - 0.5;
        double hy = (double)jj + 0.5, ly = (double)jj - 0.5;
        double dx = (xxa < hx ? xxa : hx) - (xxi > lx ? xxi : lx);
        double dy = (yya < hy ? yya : hy) - (yyi > ly ? yyi : ly);
        if (dx > 0.0 && dy > 0.0) {
          double dover = dx * dy * scale2 * ac;
          drop(j, BIDX(j, ii, jj), d, (float)(dover * wd));
        }
      }
    return;
  }
  }
}

static inline int64_t floordiv(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* drizzle's pixmap (input pixel centres in output pixels) over the window
 * [x0, x1) x [y0, y1), row-major into px, py.  Exact transforms at every
 * pixel cost most of a distorted (SIP) input's time, and the bilinear
 * 32-pixel grid of tsr__map_box misses 1e-5 px by far on such a
 * distortion; so the map is taken exactly at nodes every PG input pixels,
 * anchored to the input's pixel grid (not the window, so values never
 * depend on the block), and interpolated by cubic Lagrange polynomials
 * over the 4 x 4 nodes around each cell (exact for the cubic part of a SIP
 * polynomial; a quartic term of ACS's size leaves 1e-10 px).  A cell whose
 * interpolated centre is off the exact one by more than `tol`, or that
 * meets an undefined node, is mapped exactly at every pixel.  Homographies
 * and tol 0 go straight to tsr__map_box. */
static int pixmap(tsr_ctx_t *ctx, tsr__map_t *m, double tol, int64_t x0, int64_t x1, int64_t y0,
                  int64_t y1, double *px, double *py) {
  double H[9];
  if (tol == 0 || tsr__map_homography(m, H))
    return tsr__map_box(m, x0, x1, y0, y1, px, py);
  int64_t cx0 = floordiv(x0, PG), cx1 = floordiv(x1 - 1, PG);
  int64_t cy0 = floordiv(y0, PG), cy1 = floordiv(y1 - 1, PG);
  int64_t ncx = cx1 - cx0 + 1, ncy = cy1 - cy0 + 1, nnx = ncx + 3, nny = ncy + 3;
  size_t nn = (size_t)(nnx * nny), nc = (size_t)(ncx * ncy), ne = (size_t)PG * PG;
  size_t tot = 2 * nn + 2 * nc + 4 * ne;
  double *buf = tsr__mallocarray(ctx, 2 * tot, sizeof(double)), w[PG][4];
  int rc = 0;
  if (buf == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "drizzle: out of memory for a pixmap grid");
  double *nxo = buf, *nyo = nxo + nn, *ncxo = nyo + nn, *ncyo = ncxo + nc;
  double *exo = ncyo + nc, *eyo = exo + ne, *exi = eyo + ne, *eyi = exi + ne;
  double *nxi = eyi + ne, *nyi = nxi + nn, *cxi = nyi + nn, *cyi = cxi + nc;
  /* Cubic Lagrange weights of nodes -1, 0, 1, 2 at t = k / PG. */
  for (int k = 0; k < PG; k++) {
    double t = (double)k / PG;
    w[k][0] = -t * (t - 1) * (t - 2) / 6;
    w[k][1] = (t + 1) * (t - 1) * (t - 2) / 2;
    w[k][2] = -(t + 1) * t * (t - 2) / 2;
    w[k][3] = (t + 1) * t * (t - 1) / 6;
  }
  for (int64_t j = 0; j < nny; j++)
    for (int64_t i = 0; i < nnx; i++) {
      nxo[j * nnx + i] = (double)((cx0 - 1 + i) * PG);
      nyo[j * nnx + i] = (double)((cy0 - 1 + j) * PG);
    }
  for (int64_t j = 0; j < ncy; j++)
    for (int64_t i = 0; i < ncx; i++) {
      ncxo[j * ncx + i] = (double)((cx0 + i) * PG) + PG / 2;
      ncyo[j * ncx + i] = (double)((cy0 + j) * PG) + PG / 2;
    }
  if ((rc = tsr__map_points(m, nn, nxo, nyo, nxi, nyi)) != 0 ||
      (rc = tsr__map_points(m, nc, ncxo, ncyo, cxi, cyi)) != 0)
    goto out;
  for (int64_t cj = 0; cj < ncy; cj++)
    for (int64_t ci = 0; ci < ncx; ci++) {
      int64_t gx0 = (cx0 + ci) * PG, gy0 = (cy0 + cj) * PG;
      int64_t bx0 = gx0 > x0 ? gx0 : x0, bx1 = gx0 + PG < x1 ? gx0 + PG : x1;
      int64_t by0 = gy0 > y0 ? gy0 : y0, by1 = gy0 + PG < y1 ? gy0 + PG : y1;
      const double *n0x = nxi + cj * nnx + ci, *n0y = nyi + cj * nnx + ci;
      bool ok = isfinite(cxi[cj * ncx + ci]) && isfinite(cyi[cj * ncx + ci]);
      for (int a = 0; a < 4 && ok; a++)
        for (int b = 0; b < 4; b++)
          ok = ok && isfinite(n0x[a * nnx + b]) && isfinite(n0y[a * nnx + b]);
      if (ok) {
        /* The centre, t = 1/2 on both axes. */
        double ex = 0, ey = 0;
        for (int a = 0; a < 4; a++)
          for (int b = 0; b < 4; b++) {
            double ww = w[PG / 2][a] * w[PG / 2][b];
            ex += ww * n0x[a * nnx + b];
            ey += ww * n0y[a * nnx + b];
          }
        ok = fabs(ex - cxi[cj * ncx + ci]) <= tol && fabs(ey - cyi[cj * ncx + ci]) <= tol;
      }
      if (ok) {
        for (int64_t y = by0; y < by1; y++) {
          const double *wy = w[y - gy0];
          double colx[4], coly[4];
          for (int b = 0; b < 4; b++) {
            colx[b] = wy[0] * n0x[b] + wy[1] * n0x[nnx + b] + wy[2] * n0x[2 * nnx + b] +
                      wy[3] * n0x[3 * nnx + b];
            coly[b] = wy[0] * n0y[b] + wy[1] * n0y[nnx + b] + wy[2] * n0y[2 * nnx + b] +
                      wy[3] * n0y[3 * nnx + b];
          }
          double *rx = px + (y - y0) * (x1 - x0), *ry = py + (y - y0) * (x1 - x0);
          for (int64_t x = bx0; x < bx1; x++) {
            const double *wx = w[x - gx0];
            rx[x - x0] = wx[0] * colx[0] + wx[1] * colx[1] + wx[2] * colx[2] + wx[3] * colx[3];
            ry[x - x0] = wx[0] * coly[0] + wx[1] * coly[1] + wx[2] * coly[2] + wx[3] * coly[3];
          }
        }
        continue;
      }
      size_t n = 0;
      for (int64_t y = by0; y < by1; y++)
        for (int64_t x = bx0; x < bx1; x++) {
          exo[n] = (double)x;
          eyo[n++] = (double)y;
        }
      if ((rc = tsr__map_points(m, n, exo, eyo, exi, eyi)) != 0)
        goto out;
      n = 0;
      for (int64_t y = by0; y < by1; y++)
        for (int64_t x = bx0; x < bx1; x++, n++) {
          px[(y - y0) * (x1 - x0) + (x - x0)] = exi[n];
          py[(y - y0) * (x1 - x0) + (x - x0)] = eyi[n];
        }
    }
out:
  tsr__free(ctx, buf);
  return rc;
}

static int grow_buf(tsr_ctx_t *ctx, void **p, size_t n, size_t size) {
  void *q = tsr__mallocarray(ctx, n, size);
  if (q == NULL)
    return TSR_ENOMEM;
  tsr__free(ctx, *p);
  *p = q;
  return 0;
}

/* Replay input k's window into the block.  Built for AVX2 too: without
 * FMA the arithmetic, so the bits, are the same. */
TSR__MULTIVERSION static int drizzle_input(tsr__task_t *t, drz_state_t *st, int k, job_t *j) {
  tsr_node_t *n = t->node;
  const drz_params_t *dp = n->params;
  const tsr__window_t *w = &t->in[k];
  const tsr__window_t *ww = dp->wslot[k] >= 0 ? &t->in[dp->wslot[k]] : NULL;
  const tsr__window_t *wq = dp->dslot[k] >= 0 ? &t->in[dp->dslot[k]] : NULL;
  const tsr_node_t *in = n->inputs[k];
  int64_t wx0 = w->win.start[0], wx1 = w->win.stop[0], wy0 = w->win.start[1], wy1 = w->win.stop[1];
  size_t np = (size_t)(wx1 - wx0) * (size_t)(wy1 - wy0);
  float ws = dp->wscale[k];
  float inv_exp = dp->o.in_units_counts ? 1.0f / (float)dp->expin[k] : 1.0f;
  /* A drop's value is the pixel's times inv_exp and scale^2: its variance
   * the pixel's times their squares. */
  double s2 = dp->scale[k] * dp->scale[k], vfac = (double)inv_exp * inv_exp * s2 * s2;
  int rc;

  if ((rc = input_maps(t->ctx, n, st, k)) != 0)
    return rc;
  if (np > st->pcap) {
    rc = grow_buf(t->ctx, (void **)&st->px, np, sizeof(double));
    rc = rc ? rc : grow_buf(t->ctx, (void **)&st->py, np, sizeof(double));
    st->pcap = rc ? 0 : np;
    if (rc)
      return tsr__err(t->ctx, rc, "%s: out of memory for a %lld x %lld window of %s", n->name,
                      (long long)(wx1 - wx0), (long long)(wy1 - wy0), in->name);
  }
  if ((rc = pixmap(t->ctx, st->fmap[k], dp->o.mapping_tolerance, wx0, wx1, wy0, wy1, st->px,
                   st->py)) != 0)
    return rc;
  j->px = st->px;
  j->py = st->py;
  j->wx0 = wx0;
  j->wy0 = wy0;
  j->nwx = wx1 - wx0;
  j->nwy = wy1 - wy0;
  j->nx = in->shape[0];
  j->ny = in->shape[1];
  /* Context: the input's bit; DQ: each pixel's word (none without a map). */
  j->bit = j->mode == MODE_CONTEXT ? 1u << (k % 32) : 0;
  {
    /* Replay only pixels whose corner interpolation reads inside the
     * window: PM in from every side that is not the image's own edge. */
    int64_t cx0 = wx0 == 0 ? 0 : wx0 + PM, cx1 = wx1 == j->nx ? wx1 : wx1 - PM;
    int64_t cy0 = wy0 == 0 ? 0 : wy0 + PM, cy1 = wy1 == j->ny ? wy1 : wy1 - PM;
    double dh = 0.5 * dp->o.pixfrac;
    j->xl = NULL;
    if (cx1 <= cx0 || cy1 <= cy0)
      return 0;
    if (dp->o.kernel == TSR_DRIZZLE_SQUARE && floor(dh) != dh) {
      /* Lines r0..r1 and columns l0..l1 that the corners' interpolation
       * starts from (clamped as drizzle clamps them). */
      int64_t r0 = clamp_start(cy0 - dh, j->ny), r1 = clamp_start(cy1 - 1 + dh, j->ny);
      int64_t l0 = clamp_start(cx0 - dh, j->nx), l1 = clamp_start(cx1 - 1 + dh, j->nx);
      int64_t cw = cx1 - cx0, ch = cy1 - cy0;
      size_t nxt = (size_t)(r1 - r0 + 1) * (size_t)cw, nyt = (size_t)(l1 - l0 + 1) * (size_t)ch;
      size_t need = nxt > nyt ? nxt : nyt;
      if (need > st->ccap) {
        for (int c = 0; c < 4 && rc == 0; c++)
          rc = grow_buf(t->ctx, (void **)&st->corner[c], need, sizeof(double));
        st->ccap = rc ? 0 : need;
        if (rc)
          return tsr__err(t->ctx, rc, "%s: out of memory for the corners of %s", n->name,
                          in->name);
      }
      for (int64_t r = r0; r <= r1; r++)
        for (int64_t x = cx0; x < cx1; x++) {
          st->corner[0][(r - r0) * cw + (x - cx0)] = interp_dim(j, 0, x - dh, r);
          st->corner[1][(r - r0) * cw + (x - cx0)] = interp_dim(j, 0, x + dh, r);
        }
      for (int64_t l = l0; l <= l1; l++)
        for (int64_t y = cy0; y < cy1; y++) {
          st->corner[2][(l - l0) * ch + (y - cy0)] = interp_dim(j, 1, y + dh, l);
          st->corner[3][(l - l0) * ch + (y - cy0)] = interp_dim(j, 1, y - dh, l);
        }
      j->xl = st->corner[0], j->xr = st->corner[1], j->yu = st->corner[2], j->yd = st->corner[3];
      j->c0 = cx0, j->cw = cw, j->k0 = cy0, j->ch = ch, j->r0 = r0, j->l0 = l0;
    }
    for (int64_t y = cy0; y < cy1; y++)
      for (int64_t x = cx0; x < cx1; x++) {
        size_t off = (size_t)((y - wy0) * w->stride[1] + (x - wx0));
        float v = (float)tsr__window_value(w, off);
        float wt = 1.0f;
        double var = 1.0;
        if (wq != NULL) {
          double q = tsr__window_value(wq, (size_t)((y - wy0) * wq->stride[1] + (x - wx0)));
          if (tsr__dq_bad(dp->dq_bits, q))
            continue;
          if (j->mode == MODE_DQ)
            j->bit = tsr__dq_word(q);
        }
        if (ww != NULL) {
          double m = tsr__window_value(ww, (size_t)((y - wy0) * ww->stride[1] + (x - wx0)));
          if (dp->wkind == WKIND_RAW) {
            wt = (float)m;
            var = 1.0 / (double)wt;
          } else {
            var = tsr__weight_to_variance(dp->wkind, dp->thresh[k], m);
            wt = (float)(1.0 / var);
          }
        }
        /* A pixel of weight 0 would drop weights of 0, which change nothing. */
        if (v != v || wt != wt || wt == 0.0f)
          continue;
        j->var = var * vfac;
        if (dp->o.in_units_counts)
          v *= inv_exp;
        drop_pixel(dp, st, j, dp->scale[k], x, y, v, wt * ws);
      }
  }
  return 0;
}

static int drz_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const drz_params_t *dp = n->params;
  drz_state_t *st = t->state;
  int64_t bw = t->out.stop[0] - t->out.start[0], bh = t->out.stop[1] - t->out.start[1];
  size_t nb = (size_t)bw * (size_t)bh;
  bool context = dp->context_plane >= 0;
  job_t j;
  int rc;

  if (nb > st->bcap) {
    rc = grow_buf(t->ctx, (void **)&st->od, nb, sizeof(float));
    rc = rc ? rc : grow_buf(t->ctx, (void **)&st->oc, nb, sizeof(float));
    rc = rc ? rc : grow_buf(t->ctx, (void **)&st->bits, nb, sizeof(uint32_t));
    rc = rc ? rc : grow_buf(t->ctx, (void **)&st->sw, nb, sizeof(double));
    rc = rc ? rc : grow_buf(t->ctx, (void **)&st->sv, nb, sizeof(double));
    st->bcap = rc ? 0 : nb;
    if (rc)
      return tsr__err(t->ctx, rc, "%s: out of memory for a %lld x %lld block", n->name,
                      (long long)bw, (long long)bh);
  }
  memset(&j, 0, sizeof j);
  j.mode = context                            ? MODE_CONTEXT
           : dp->product == PRODUCT_VARIANCE ? MODE_VARIANCE
           : dp->product == PRODUCT_DQ       ? MODE_DQ
                                             : MODE_SCIENCE;
  if (j.mode == MODE_SCIENCE) {
    memset(st->od, 0, nb * sizeof(float));
    memset(st->oc, 0, nb * sizeof(float));
  } else if (j.mode == MODE_VARIANCE) {
    memset(st->sw, 0, nb * sizeof(double));
    memset(st->sv, 0, nb * sizeof(double));
  } else {
    memset(st->bits, 0, nb * sizeof(uint32_t));
  }
  j.ox = n->shape[0];
  j.oy = n->shape[1];
  j.bx0 = t->out.start[0];
  j.bx1 = t->out.stop[0];
  j.by0 = t->out.start[1];
  j.by1 = t->out.stop[1];
  j.od = st->od;
  j.oc = st->oc;
  j.bits = st->bits;
  j.sw = st->sw;
  j.sv = st->sv;
  for (int k = 0; k < dp->n; k++) {
    if (t->in[k].data == NULL || (context && k / 32 != dp->context_plane))
      continue;
    if ((rc = drizzle_input(t, st, k, &j)) != 0)
      return rc;
  }
  {
    float fill = (float)dp->o.fillval;
    float oscale = dp->o.out_units_counts ? (float)dp->exptime_sum : 1.0f;
    double vscale = (double)oscale * (double)oscale;
    for (int64_t y = 0; y < bh; y++) {
      size_t off = tsr__task_offset(t, 0, y, 0, 0);
      for (int64_t x = 0; x < bw; x++) {
        size_t o = (size_t)(y * bw + x);
        switch (j.mode) {
        case MODE_CONTEXT:
          if (t->planes[0])
            ((double *)t->planes[0])[off + (size_t)x] = (double)(int32_t)st->bits[o];
          break;
        case MODE_DQ:
          if (t->planes[0])
            ((double *)t->planes[0])[off + (size_t)x] = (double)st->bits[o];
          break;
        case MODE_VARIANCE:
          if (t->planes[0])
            ((float *)t->planes[0])[off + (size_t)x] =
                st->sw[o] == 0.0 ? NAN
                                 : (float)(st->sv[o] / (st->sw[o] * st->sw[o]) * vscale);
          break;
        default:
          if (t->planes[0])
            ((float *)t->planes[0])[off + (size_t)x] =
                st->oc[o] == 0.0f ? fill : st->od[o] * oscale;
          if (t->planes[1])
            ((float *)t->planes[1])[off + (size_t)x] = st->oc[o];
        }
      }
    }
  }
  return 0;
}

static const tsr__op_t drizzle_op = {
    .name = "drizzle",
    .version = 1,
    .flags = 0,
    .input_region = drz_input_region,
    .start = drz_start,
    .stop = drz_stop,
    .compute = drz_compute,
    .encode = params_encode,
    .free_params = params_free,
};

/* ------------------------------------------------------------------ */
/* Construction                                                         */

int tsr_drizzle_kernel_parse(const char *s) {
  static const char *const names[] = {"square", "point", "turbo", "gaussian",
                                      "lanczos2", "lanczos3", "tophat"};
  if (s == NULL)
    return -1;
  for (int k = 0; k < 7; k++)
    if (strcmp(s, names[k]) == 0)
      return k;
  return -1;
}

const char *tsr_drizzle_kernel_name(tsr_drizzle_kernel_t k) {
  static const char *const names[] = {"square", "point", "turbo", "gaussian",
                                      "lanczos2", "lanczos3", "tophat"};
  return (int)k >= 0 && (int)k < 7 ? names[k] : "unknown";
}

/* A copy of dp for another node (the context planes). */
static drz_params_t *params_copy(tsr_ctx_t *ctx, const drz_params_t *dp) {
  drz_params_t *c = tsr__calloc(ctx, 1, sizeof *c);
  if (c == NULL)
    return NULL;
  *c = *dp;
  c->target = NULL;
  c->wslot = NULL, c->dslot = NULL, c->thresh = NULL, c->expin = NULL, c->scale = NULL;
  c->wscale = NULL;
  if (tsr_wcs_copy(ctx, dp->target, &c->target) != 0 ||
      (c->wslot = tsr__mallocarray(ctx, (size_t)dp->n, sizeof(int))) == NULL ||
      (c->dslot = tsr__mallocarray(ctx, (size_t)dp->n, sizeof(int))) == NULL ||
      (c->thresh = tsr__mallocarray(ctx, (size_t)dp->n, sizeof(double))) == NULL ||
      (c->expin = tsr__mallocarray(ctx, (size_t)dp->n, sizeof(double))) == NULL ||
      (c->scale = tsr__mallocarray(ctx, (size_t)dp->n, sizeof(double))) == NULL ||
      (c->wscale = tsr__mallocarray(ctx, (size_t)dp->n, sizeof(float))) == NULL) {
    params_free(ctx, c);
    return NULL;
  }
  memcpy(c->wslot, dp->wslot, (size_t)dp->n * sizeof(int));
  memcpy(c->dslot, dp->dslot, (size_t)dp->n * sizeof(int));
  memcpy(c->thresh, dp->thresh, (size_t)dp->n * sizeof(double));
  memcpy(c->expin, dp->expin, (size_t)dp->n * sizeof(double));
  memcpy(c->scale, dp->scale, (size_t)dp->n * sizeof(double));
  memcpy(c->wscale, dp->wscale, (size_t)dp->n * sizeof(float));
  return c;
}

/* The node of params dp over `inputs` (n_in nodes): science + weight, a
 * context plane, the variance or the DQ. */
static tsr_node_t *make_node(tsr_graph_t *g, drz_params_t *dp, tsr_node_t *const *inputs,
                             int n_in) {
  tsr_node_t *node = tsr__node_alloc(g, &drizzle_op, dp);
  if (node == NULL)
    return NULL;
  if (tsr__node_set_inputs(node, n_in) != 0) {
    tsr__node_discard(node);
    return NULL;
  }
  for (int i = 0; i < n_in; i++)
    node->inputs[i] = inputs[i];
  node->ndim = 2;
  node->shape[0] = dp->target->shape[0];
  node->shape[1] = dp->target->shape[1];
  node->chunk[0] = dp->o.block[0] ? dp->o.block[0] : TSR__DEFAULT_BLOCK;
  node->chunk[1] = dp->o.block[1] ? dp->o.block[1] : TSR__DEFAULT_BLOCK;
  node->n_planes = dp->context_plane < 0 && dp->product == PRODUCT_SCIENCE ? 2 : 1;
  node->dtype = dp->context_plane >= 0 || dp->product == PRODUCT_DQ ? TSR_F64 : TSR_F32;
  if (tsr_wcs_copy(g->ctx, dp->target, &node->wcs) != 0) {
    tsr__node_discard(node);
    return tsr__graph_fail(g, TSR_ENOMEM, "drizzle: out of memory");
  }
  return tsr__node_finish(node);
}

/* Is map m (a `what` of input k, may be NULL) a node of g of its input's
 * shape?  false after failing the graph. */
static bool map_fits(tsr_graph_t *g, const char *what, int k, const tsr_node_t *m,
                     const tsr_node_t *in) {
  if (m == NULL)
    return true;
  if (m->graph != g) {
    tsr__graph_fail(g, TSR_EINVAL, "drizzle: %s %d is a node of another graph", what, k);
    return false;
  }
  if (m->shape[0] != in->shape[0] || m->shape[1] != in->shape[1]) {
    tsr__graph_fail(g, TSR_EINVAL, "drizzle: %s %d %s is %lld x %lld but input %s is %lld x %lld; "
                    "expected the input's shape", what, k, m->name, (long long)m->shape[0],
                    (long long)m->shape[1], in->name, (long long)in->shape[0],
                    (long long)in->shape[1]);
    return false;
  }
  return true;
}

tsr_node_t *tsr_drizzle(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                        tsr_node_t *const *weights, const tsr_wcs_t *target,
                        const tsr_drizzle_opts_t *opts) {
  tsr_drizzle_opts_t o = TSR_DRIZZLE_OPTS_INIT;
  drz_params_t *dp = NULL;
  tsr_node_t **all = NULL, *node = NULL;
  tsr_ctx_t *ctx;
  tsr__cel_t *cout = NULL;
  double oscale[2];
  int n_in = 0, kind, rc;

  if (!tsr__graph_check(g))
    return NULL;
  ctx = g->ctx;
  if (opts)
    o = *opts;
  kind = (int)o.kernel;
  if (n < 1 || n > TSR__MAX_INPUTS || inputs == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: %d inputs; expected 1 to %d", n,
                           TSR__MAX_INPUTS);
  if (kind < 0 || kind > TSR_DRIZZLE_TOPHAT)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: kernel %d is not a tsr_drizzle_kernel_t "
                           "(0 square .. 6 tophat)", kind);
  if (!(o.pixfrac > 0.0 && o.pixfrac <= 10.0))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: pixfrac %g out of range (0, 10]", o.pixfrac);
  if ((int)o.wt_scl < 0 || (int)o.wt_scl > TSR_WT_SCL_VALUE)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: wt_scl %d is not exptime (0), expsq (1) or a "
                           "value (2)", (int)o.wt_scl);
  if (o.wt_scl == TSR_WT_SCL_VALUE && !(o.wt_scl_value > 0.0 && isfinite(o.wt_scl_value)))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: wt_scl value %g; expected a finite number > 0",
                           o.wt_scl_value);
  if (!(o.mapping_tolerance >= 0.0 && o.mapping_tolerance <= 1.0))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: mapping tolerance %g out of range [0, 1] "
                           "pixel", o.mapping_tolerance);
  if (isinf(o.fillval))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: fillval is infinite; expected a finite "
                           "number or NaN");
  if (o.weight_type < -1 || o.weight_type > TSR_WEIGHT_BACKGROUND)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: weight_type %d out of range: expected -1 "
                           "(drizzle's inwht) or a tsr_weight_type_t (MAP_WEIGHT .. BACKGROUND)",
                           o.weight_type);
  if (o.back_size < 0 || o.back_size > (1 << 16))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: back_size %lld out of range [1, 65536] (0 = "
                           "128)", (long long)o.back_size);
  if (o.weight_thresh && o.weight_type < 0)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle: weight_thresh goes with a weight_type "
                           "(SWarp's WEIGHT_THRESH)");
  if (o.weight_type == TSR_WEIGHT_BACKGROUND && weights)
    for (int k = 0; k < n; k++)
      if (weights[k])
        return tsr__graph_fail(g, TSR_EINVAL, "drizzle: weight map %d given with weight_type "
                               "BACKGROUND, which takes the weights from the images themselves", k);
  /* pixfrac this small is a point, as drizzle's tdriz says. */
  if (o.pixfrac <= 0.001)
    o.kernel = TSR_DRIZZLE_POINT;
  if (!tsr__reproject_check(g, "drizzle", inputs[0], target, 0, o.block))
    return NULL;
  if ((rc = tsr__cel_new(ctx, target, "target", &cout)) != 0) {
    tsr__err_prefix(ctx, "drizzle");
    return tsr__graph_fail_ctx(g, rc);
  }
  tsr__cel_scales(cout, oscale);
  tsr__cel_free(cout);
  if (target->naxis > 2)
    for (int a = 2; a < target->naxis; a++)
      if (target->shape[a] > 1)
        return tsr__graph_fail(g, TSR_EINVAL, "drizzle: target has %d axes of which NAXIS%d = "
                               "%lld; drizzle makes 2-D images", target->naxis, a + 1,
                               (long long)target->shape[a]);
  if ((dp = tsr__calloc(ctx, 1, sizeof *dp)) == NULL ||
      (dp->wslot = tsr__mallocarray(ctx, (size_t)n, sizeof(int))) == NULL ||
      (dp->dslot = tsr__mallocarray(ctx, (size_t)n, sizeof(int))) == NULL ||
      (dp->thresh = tsr__mallocarray(ctx, (size_t)n, sizeof(double))) == NULL ||
      (dp->expin = tsr__mallocarray(ctx, (size_t)n, sizeof(double))) == NULL ||
      (dp->scale = tsr__mallocarray(ctx, (size_t)n, sizeof(double))) == NULL ||
      (dp->wscale = tsr__mallocarray(ctx, (size_t)n, sizeof(float))) == NULL ||
      (all = tsr__mallocarray(ctx, 3 * (size_t)n, sizeof *all)) == NULL ||
      tsr_wcs_copy(ctx, target, &dp->target) != 0) {
    tsr__graph_fail(g, TSR_ENOMEM, "drizzle: out of memory for %d inputs", n);
    goto out;
  }
  dp->n = n;
  dp->o = o;
  dp->o.expin = NULL;
  dp->o.weight_thresh = NULL;
  dp->o.dq = NULL;
  dp->context_plane = -1;
  dp->product = PRODUCT_SCIENCE;
  /* BACKGROUND maps are tsr_variance_map's variances, already thresholded. */
  dp->wkind = o.weight_type == TSR_WEIGHT_BACKGROUND ? TSR_WEIGHT_MAP_VARIANCE : o.weight_type;
  dp->dq_bits = o.dq_bits;
  for (int k = 0; k < n; k++) {
    tsr_node_t *in = inputs[k], *wt = weights ? weights[k] : NULL, *q = o.dq ? o.dq[k] : NULL;
    double th = o.weight_thresh ? o.weight_thresh[k] : NAN;
    tsr__cel_t *ci = NULL;
    double s[2];
    if (in == NULL || in->graph != g) {
      tsr__graph_fail(g, TSR_EINVAL, "drizzle: input %d is %s", k,
                      in == NULL ? "NULL" : "a node of another graph");
      goto out;
    }
    if (k > 0 && !tsr__reproject_check(g, "drizzle", in, target, 0, o.block))
      goto out;
    for (int a = 2; a < in->ndim; a++)
      if (in->shape[a] > 1) {
        tsr__graph_fail(g, TSR_EINVAL, "drizzle: input %d %s has %d axes (NAXIS%d = %lld); "
                        "expected a 2-D image (take a plane with tsr_slice first)", k, in->name,
                        in->ndim, a + 1, (long long)in->shape[a]);
        goto out;
      }
    if ((rc = tsr__cel_new(ctx, in->wcs, in->name, &ci)) != 0) {
      tsr__err_prefix(ctx, "drizzle: input %d", k);
      tsr__graph_fail_ctx(g, rc);
      goto out;
    }
    tsr__cel_scales(ci, s);
    tsr__cel_free(ci);
    dp->scale[k] = oscale[0] / s[0];
    dp->expin[k] = o.expin ? o.expin[k] : 1.0;
    if (!(dp->expin[k] > 0.0 && isfinite(dp->expin[k]))) {
      tsr__graph_fail(g, TSR_EINVAL, "drizzle: expin[%d] = %g; expected an exposure time > 0 s", k,
                      dp->expin[k]);
      goto out;
    }
    dp->exptime_sum += dp->expin[k];
    dp->wscale[k] = o.wt_scl == TSR_WT_SCL_EXPTIME ? (float)dp->expin[k]
                    : o.wt_scl == TSR_WT_SCL_EXPSQ ? (float)(dp->expin[k] * dp->expin[k])
                                                   : (float)o.wt_scl_value;
    all[k] = in;
    dp->wslot[k] = -1;
    dp->dslot[k] = -1;
    if (th == th && !(th >= 0)) {
      tsr__graph_fail(g, TSR_EINVAL, "drizzle: weight_thresh[%d] = %g; expected >= 0 (or NaN for "
                      "the type's default)", k, th);
      goto out;
    }
    dp->thresh[k] = o.weight_type == TSR_WEIGHT_BACKGROUND ? INFINITY
                    : th == th                            ? th
                                                          : tsr__weight_thresh_default(o.weight_type);
    if (o.weight_type == TSR_WEIGHT_BACKGROUND) {
      tsr_weight_opts_t wo = TSR_WEIGHT_OPTS_INIT;
      wo.thresh = th;
      wo.back_size = o.back_size;
      if ((wt = tsr_variance_map(g, in, TSR_WEIGHT_BACKGROUND, NULL, &wo)) == NULL)
        goto out;
    } else if (o.weight_type >= 0 && wt == NULL) {
      tsr__graph_fail(g, TSR_EINVAL, "drizzle: input %d %s has no weight map; weight_type %s "
                      "needs one per input", k, in->name,
                      o.weight_type == TSR_WEIGHT_MAP_WEIGHT     ? "MAP_WEIGHT"
                      : o.weight_type == TSR_WEIGHT_MAP_VARIANCE ? "MAP_VARIANCE"
                                                                 : "MAP_RMS");
      goto out;
    }
    if (!map_fits(g, "data-quality map", k, q, in) || !map_fits(g, "weight map", k, wt, in))
      goto out;
    if (wt != NULL) {
      dp->wslot[k] = n + n_in;
      all[n + n_in++] = wt;
    }
    if (q != NULL) {
      dp->dslot[k] = n + n_in;
      all[n + n_in++] = q;
    }
  }
  node = make_node(g, dp, all, n + n_in);
  dp = NULL; /* the node's now, even on failure */
out:
  params_free(ctx, dp);
  tsr__free(ctx, all);
  return node;
}

int tsr_drizzle_context_planes(const tsr_node_t *drz) {
  if (drz == NULL || drz->op != &drizzle_op)
    return 0;
  const drz_params_t *dp = drz->params;
  return (dp->n + 31) / 32;
}

static bool is_science(const tsr_node_t *drz) {
  const drz_params_t *dp = drz ? drz->params : NULL;
  return drz != NULL && drz->op == &drizzle_op && dp->context_plane < 0 &&
         dp->product == PRODUCT_SCIENCE;
}

tsr_node_t *tsr_drizzle_product(tsr_graph_t *g, tsr_node_t *drz, tsr_drizzle_product_t what) {
  const drz_params_t *dp;
  drz_params_t *c;
  bool any_dq = false;
  if (!tsr__graph_check(g))
    return NULL;
  if (drz == NULL || drz->graph != g || !is_science(drz))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle_product: node %s is not a drizzle node (the "
                           "science image tsr_drizzle returned) of this graph",
                           drz == NULL ? "NULL" : drz->name);
  if ((int)what < TSR_DRIZZLE_OUT_SCIENCE || (int)what > TSR_DRIZZLE_OUT_DQ)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle_product: product %d out of range (science, "
                           "weight, variance, dq)", (int)what);
  if (what == TSR_DRIZZLE_OUT_SCIENCE)
    return drz;
  if (what == TSR_DRIZZLE_OUT_WEIGHT)
    return tsr_footprint(g, drz);
  dp = drz->params;
  for (int k = 0; k < dp->n; k++)
    any_dq |= dp->dslot[k] >= 0;
  if (what == TSR_DRIZZLE_OUT_DQ && !any_dq)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle_product: %s has no data-quality maps "
                           "(opts.dq): no DQ to give", drz->name);
  if ((c = params_copy(g->ctx, dp)) == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "drizzle_product: out of memory");
  c->product = (int)what;
  return make_node(g, c, drz->inputs, drz->n_inputs);
}

tsr_node_t *tsr_drizzle_context(tsr_graph_t *g, tsr_node_t *drz, int plane) {
  const drz_params_t *dp;
  drz_params_t *c;
  if (!tsr__graph_check(g))
    return NULL;
  if (drz == NULL || drz->graph != g || drz->op != &drizzle_op)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle_context: node %s is not a drizzle node",
                           drz == NULL ? "NULL" : drz->name);
  dp = drz->params;
  if (!is_science(drz))
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle_context: node %s is itself a context plane "
                           "or product", drz->name);
  if (plane < 0 || plane >= (dp->n + 31) / 32)
    return tsr__graph_fail(g, TSR_EINVAL, "drizzle_context: plane %d out of range [0, %d] for %d "
                           "inputs", plane, (dp->n + 31) / 32 - 1, dp->n);
  if ((c = params_copy(g->ctx, dp)) == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "drizzle_context: out of memory");
  c->context_plane = plane;
  return make_node(g, c, drz->inputs, drz->n_inputs);
}
