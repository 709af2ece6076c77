/* reproject_exact.c -- flux-conserving reprojection by exact pixel overlap
 * (reproject_exact).
 *
 * Each output pixel is the overlap-weighted mean of the input pixels it
 * covers: value = sum(v_i f_i) / sum(f_i), where f_i is the fraction of the
 * output pixel's solid angle covered by input pixel i (pixels are the
 * spherical quadrilaterals with great-circle edges between their corners,
 * REFERENCE.md 3.3); the footprint is sum(f_i), in [0, 1].
 *
 * Per block: the input window is the input image's part that the block, grown
 * by one output pixel, maps into (plus a margin), so every input pixel that
 * meets the block is in it and the block transforms only that window's
 * corners, not the whole input as reproject does.  The corners
 * ((w+1) x (h+1) points at half-integer input pixels) are mapped into output
 * pixel coordinates through a tsr__map_t of a copy of the input WCS whose
 * CRPIX is shifted by half a pixel, so its integer pixels are the corners: a
 * homography for TAN -> TAN (exact to rounding), exact wcslib transforms
 * otherwise (mapping tolerance 0).  Each input pixel's candidate output
 * pixels are its corners' bounding box with reproject 0.10's rounding
 * ((int)(min + 0.5) .. (int)(max + 0.5)), clipped to the block.
 *
 * Two geometries, chosen once per node (in start, from a 9 x 9 sample of the
 * output grid) so that results never depend on the block size:
 * - pixel plane: when input and output pixels are all smaller than
 *   TSR__PLANAR_RAD (about 20 arcsec, reproject #589's planar criterion) and
 *   the output projection's area scale varies by less than PLANE_GRAD per
 *   pixel, the overlap is computed in output pixel coordinates: the input
 *   quadrilateral (corners mapped exactly) clipped against the unit square of
 *   the output pixel (Sutherland-Hodgman, axis-aligned).  A gnomonic (TAN)
 *   output maps great circles to straight lines, so the polygons are exact;
 *   for other projections the edge curvature and the area-scale variation
 *   over one pixel bound the error of the fraction by about PLANE_GRAD / 2.
 *   This is also precise for the tiniest pixels, where differences of unit
 *   vectors run out of digits.
 * - sphere: otherwise every pair is clipped with unit vectors (output corner
 *   vectors and pixel solid angles computed once per block; input corner
 *   vectors rotated into the output frame), in the gnomonic tangent plane
 *   for small pairs and on the sphere for large ones (overlap.c).
 *
 * Seams: an input pixel whose corners do not all map into output pixel
 * coordinates, or whose corners spread over more than seam_lim output pixels
 * (half the output, and several times the largest mapped input pixel), lies
 * across a projection seam (CAR/AIT at +-180 deg) or edge.  Its bounding box
 * would span the whole row, so instead its candidates are boxes of
 * `margin` output pixels around each corner that does map (merged where
 * they meet), and its overlaps are computed with unit vectors, which have no
 * seam.  An input pixel with an undefined corner in its own WCS is skipped.
 *
 * Accumulation runs over input pixels in global (y, x) order and the
 * fractions do not depend on the window, so each output pixel sums the same
 * terms in the same order whatever the block size.  The pair table (input
 * offset, output index, fraction) is built once per block and applied to
 * every plane of a cube.  NaN inputs: by default (TSR_NAN_PROPAGATE) an
 * output pixel is NaN when any candidate input pixel is NaN, as in
 * reproject 0.10, where value * 0 still adds a NaN; the footprint counts the
 * NaN inputs' fractions too.  TSR_NAN_IGNORE leaves NaN inputs out of both
 * sums, so the value is the mean over finite inputs and the footprint their
 * coverage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapping.h"
#include "reproject.h"
#include "overlap.h"
#include "sky.h"

#define NSAMPLE 9          /* per axis, for the geometry decision in start */
#define PLANE_GRAD 1e-6    /* largest relative area-scale change per output pixel for the pixel plane */
/* Overlaps below this fraction of an output pixel are rounding, not sky: on
 * aligned grids a neighbour's shared edge maps to within ~1e-10 px of it and
 * left a ring of finite pixels (footprint ~1e-11) where reproject 0.10 has
 * NaN.  A true overlap this small carries 1e-8 of a pixel's flux. */
#define MIN_FRAC 1e-8

typedef struct {
  tsr__reproject_params_t base; /* target, input name; the window mapping's tolerance 1e-4 */
  tsr_wcs_t *corners;      /* the input WCS, CRPIX + 0.5: pixel (i, j) is corner (i - 0.5, j - 0.5) */
  int nan_mode;            /* TSR_NAN_PROPAGATE or TSR_NAN_IGNORE */
} exact_params_t;

typedef struct {
  uint32_t in;             /* element offset of the input pixel in the window's plane */
  uint32_t out;            /* index in the block, row-major */
  double f;                /* fraction of the output pixel covered */
} pair_t;

typedef struct {
  tsr__reproject_state_t base; /* output pixel -> input pixel: windows */
  tsr__map_t *cmap;        /* input corner index -> output pixel */
  tsr__cel_t *cin, *cout;
  tsr__frame_xform_t fwd;  /* input frame -> output frame (reproject's direction) */
  tsr__frame_xform_t back; /* output frame -> input frame */
  bool pixel_plane;        /* geometry (see the top of the file) */
  double seam_lim;         /* corner spread (output px) that marks a seam pixel */
  double margin;           /* candidate half-size around each corner of a seam pixel */
  /* Per-block scratch, reused. */
  double *cx, *cy, *tx, *ty, *iv;
  size_t ccap;
  double *ov, *oarea, *sum, *wsum;
  unsigned char *spoil;
  size_t bcap;
  pair_t *pairs;
  size_t npairs, pcap;
} exact_state_t;

static void params_free(tsr_ctx_t *ctx, void *p) {
  exact_params_t *ep = p;
  if (ep != NULL)
    tsr_wcs_free(ep->corners);
  tsr__reproject_params_free(ctx, ep);
}

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const exact_params_t *ep = n->params;
  tsr__buf_put_i64(b, ep->nan_mode);
  tsr__reproject_params_encode(&ep->base, b);
}

/* Unit vectors (output frame) of n input pixel positions. */
static void in_vecs(exact_state_t *st, size_t n, const double *x, const double *y, double *v) {
  tsr__cel_pix2vec(st->cin, n, x, y, v);
  tsr__frame_apply(&st->fwd, n, v);
}

static double chord(const double *a, const double *b) {
  double d[3] = {a[0] - b[0], a[1] - b[1], a[2] - b[2]};
  return sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
}

/* Decide the geometry and the seam limits from a sample of the output grid:
 * pixel sizes on the sky, the variation of the output's area scale, and how
 * large input pixels look in output pixels. */
static void analyse(exact_state_t *st, int64_t nx, int64_t ny) {
  double area[NSAMPLE][NSAMPLE], sx[NSAMPLE], sy[NSAMPLE];
  double dout = 0, din = 0, ext = 1.0, grad = 0;
  double s = 0.25 * (double)(nx < ny ? nx : ny) / (NSAMPLE - 1);
  int nvalid = 0;
  s = s < 0.5 ? 0.5 : s > 64 ? 64 : s;
  for (int a = 0; a < NSAMPLE; a++) {
    sx[a] = floor((double)(nx - 1) * a / (NSAMPLE - 1) + 0.5);
    sy[a] = floor((double)(ny - 1) * a / (NSAMPLE - 1) + 0.5);
  }
  for (int b = 0; b < NSAMPLE; b++)
    for (int a = 0; a < NSAMPLE; a++) {
      double x = sx[a], y = sy[b];
      double px[9] = {x - 0.5, x + 0.5, x + 0.5, x - 0.5, x - s, x + s, x + s, x - s, x};
      double py[9] = {y - 0.5, y - 0.5, y + 0.5, y + 0.5, y - s, y - s, y + s, y + s, y};
      double v[27], u[2], w[2], iv[12], ox[4], oy[4];
      area[b][a] = NAN;
      tsr__cel_pix2vec(st->cout, 9, px, py, v);
      if (!isfinite(v[0] + v[3] + v[6] + v[9] + v[12] + v[15] + v[18] + v[21] + v[24]))
        continue;
      nvalid++;
      dout = fmax(dout, fmax(chord(v, v + 6), chord(v + 3, v + 9)));
      area[b][a] = tsr__sph_area(v + 12, 4) / (4 * s * s);
      /* The input pixel under this output pixel. */
      {
        double c[3] = {v[24], v[25], v[26]};
        tsr__frame_apply(&st->back, 1, c);
        tsr__cel_vec2pix(st->cin, 1, c, &u[0], &u[1]);
      }
      if (!isfinite(u[0] + u[1]))
        continue;
      {
        double cxp[4] = {u[0] - 0.5, u[0] + 0.5, u[0] + 0.5, u[0] - 0.5};
        double cyp[4] = {u[1] - 0.5, u[1] - 0.5, u[1] + 0.5, u[1] + 0.5};
        in_vecs(st, 4, cxp, cyp, iv);
        if (!isfinite(iv[0] + iv[3] + iv[6] + iv[9]))
          continue;
        din = fmax(din, fmax(chord(iv, iv + 6), chord(iv + 3, iv + 9)));
        tsr__cel_vec2pix(st->cout, 4, iv, ox, oy);
        if (!isfinite(ox[0] + ox[1] + ox[2] + ox[3] + oy[0] + oy[1] + oy[2] + oy[3]))
          continue;
        w[0] = fmax(fmax(ox[0], ox[1]), fmax(ox[2], ox[3])) - fmin(fmin(ox[0], ox[1]), fmin(ox[2], ox[3]));
        w[1] = fmax(fmax(oy[0], oy[1]), fmax(oy[2], oy[3])) - fmin(fmin(oy[0], oy[1]), fmin(oy[2], oy[3]));
        /* A sample on a seam itself would look huge; ignore those. */
        if (w[0] < 0.25 * (double)nx && w[1] < 0.25 * (double)ny)
          ext = fmax(ext, fmax(w[0], w[1]));
      }
    }
  for (int b = 0; b < NSAMPLE; b++)
    for (int a = 0; a < NSAMPLE; a++) {
      double A = area[b][a];
      if (!(A > 0))
        continue;
      if (a + 1 < NSAMPLE && area[b][a + 1] > 0 && sx[a + 1] > sx[a])
        grad = fmax(grad, fabs(area[b][a + 1] - A) / (0.5 * (A + area[b][a + 1])) / (sx[a + 1] - sx[a]));
      if (b + 1 < NSAMPLE && area[b + 1][a] > 0 && sy[b + 1] > sy[b])
        grad = fmax(grad, fabs(area[b + 1][a] - A) / (0.5 * (A + area[b + 1][a])) / (sy[b + 1] - sy[b]));
    }
  st->pixel_plane = nvalid > 0 && dout <= TSR__PLANAR_RAD && din <= TSR__PLANAR_RAD &&
                    grad <= PLANE_GRAD;
  st->seam_lim = fmax(0.5 * (double)(nx > ny ? nx : ny), 4.0 * ext + 4.0);
  st->margin = 2.0 * ext + 2.0;
}

static void exact_stop(tsr_node_t *n, void *state) {
  exact_state_t *st = state;
  tsr_ctx_t *ctx = n->graph->ctx;
  if (st == NULL)
    return;
  tsr__map_free(st->cmap);
  tsr__cel_free(st->cin);
  tsr__cel_free(st->cout);
  tsr__free(ctx, st->cx);
  tsr__free(ctx, st->cy);
  tsr__free(ctx, st->tx);
  tsr__free(ctx, st->ty);
  tsr__free(ctx, st->iv);
  tsr__free(ctx, st->ov);
  tsr__free(ctx, st->oarea);
  tsr__free(ctx, st->sum);
  tsr__free(ctx, st->wsum);
  tsr__free(ctx, st->spoil);
  tsr__free(ctx, st->pairs);
  tsr__reproject_state_free(n, st);
}

static int exact_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  const exact_params_t *ep = n->params;
  exact_state_t *st;
  int rc = tsr__reproject_state_new(n, sizeof *st, state);
  if (rc != 0)
    return rc;
  st = *state;
  if ((rc = tsr__map_new(ctx, ep->corners, ep->base.in_what, ep->base.target, "target", 0.0,
                         false, &st->cmap)) != 0 ||
      (rc = tsr__cel_new(ctx, n->inputs[0]->wcs, ep->base.in_what, &st->cin)) != 0 ||
      (rc = tsr__cel_new(ctx, ep->base.target, "target", &st->cout)) != 0) {
    exact_stop(n, st);
    *state = NULL;
    return rc;
  }
  tsr__frame_xform(tsr__cel_frame(st->cin), tsr__cel_frame(st->cout), &st->fwd);
  tsr__frame_xform(tsr__cel_frame(st->cout), tsr__cel_frame(st->cin), &st->back);
  analyse(st, n->shape[0], n->shape[1]);
  return 0;
}

static int exact_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                              tsr_region_t *win, bool *empty) {
  exact_state_t *st = state;
  /* Grown by one output pixel: the block's outer pixel edges, and reproject's
   * rounded candidate boxes, reach half a pixel and more past the centres;
   * two input pixels cover an input pixel's half-diagonal plus rounding. */
  return tsr__reproject_window(st->base.map, out, 1, n->inputs[i], 2.0, win, empty);
}

/* Truncation toward zero after +0.5, as reproject's (int)(x + .5), on a
 * value first kept in a range where the conversion is defined. */
static inline int64_t rp_round(double x) {
  x += 0.5;
  if (x > 4e15)
    x = 4e15;
  if (x < -4e15)
    x = -4e15;
  return (int64_t)x;
}

/* Candidate output boxes (inclusive, clipped to the block [bx0, bx1] x
 * [by0, by1]) of the input pixel with output-pixel corners (qx, qy).  Returns
 * the number of boxes (0..4); *seam says whether the pixel needed the seam
 * treatment (its overlaps must then use unit vectors). */
static int candidates(const exact_state_t *st, const double qx[4], const double qy[4], int64_t bx0,
                      int64_t bx1, int64_t by0, int64_t by1, tsr__box_t box[4], bool *seam) {
  double lx = qx[0], hx = qx[0], ly = qy[0], hy = qy[0];
  int nb = 0;
  for (int k = 1; k < 4; k++) {
    lx = qx[k] < lx ? qx[k] : lx;
    hx = qx[k] > hx ? qx[k] : hx;
    ly = qy[k] < ly ? qy[k] : ly;
    hy = qy[k] > hy ? qy[k] : hy;
  }
  *seam = !isfinite(qx[0] + qx[1] + qx[2] + qx[3] + qy[0] + qy[1] + qy[2] + qy[3]) ||
          hx - lx > st->seam_lim || hy - ly > st->seam_lim;
  if (!*seam) {
    tsr__box_t b = {rp_round(lx), rp_round(hx), rp_round(ly), rp_round(hy)};
    if (b.x0 < bx0) b.x0 = bx0;
    if (b.x1 > bx1) b.x1 = bx1;
    if (b.y0 < by0) b.y0 = by0;
    if (b.y1 > by1) b.y1 = by1;
    if (b.x0 > b.x1 || b.y0 > b.y1)
      return 0;
    box[0] = b;
    return 1;
  }
  for (int k = 0; k < 4; k++) {
    if (!isfinite(qx[k]) || !isfinite(qy[k]))
      continue;
    tsr__box_t b = {rp_round(qx[k] - st->margin), rp_round(qx[k] + st->margin),
                rp_round(qy[k] - st->margin), rp_round(qy[k] + st->margin)};
    box[nb++] = b;
  }
  /* Merged, so that no output pixel is visited twice. */
  return tsr__boxes_merge_clip(box, nb, bx0, bx1, by0, by1);
}

static int push_pair(tsr_ctx_t *ctx, exact_state_t *st, uint32_t in, uint32_t out, double f) {
  if (st->npairs == st->pcap) {
    size_t cap = st->pcap ? 2 * st->pcap : 65536;
    pair_t *p = tsr__realloc(ctx, st->pairs, cap * sizeof *p);
    if (p == NULL)
      return TSR_ENOMEM;
    st->pairs = p;
    st->pcap = cap;
  }
  st->pairs[st->npairs].in = in;
  st->pairs[st->npairs].out = out;
  st->pairs[st->npairs++].f = f;
  return 0;
}

/* Output corner vectors and pixel solid angles of the block. */
static int block_vectors(tsr_ctx_t *ctx, exact_state_t *st, int64_t x0, int64_t y0, int64_t bw,
                         int64_t bh) {
  size_t nc = (size_t)(bw + 1) * (size_t)(bh + 1);
  double *xs = tsr__mallocarray(ctx, nc, sizeof(double));
  double *ys = tsr__mallocarray(ctx, nc, sizeof(double));
  if (xs == NULL || ys == NULL) {
    tsr__free(ctx, xs);
    tsr__free(ctx, ys);
    return TSR_ENOMEM;
  }
  for (int64_t j = 0; j <= bh; j++)
    for (int64_t i = 0; i <= bw; i++) {
      xs[(size_t)(j * (bw + 1) + i)] = (double)(x0 + i) - 0.5;
      ys[(size_t)(j * (bw + 1) + i)] = (double)(y0 + j) - 0.5;
    }
  tsr__cel_pix2vec(st->cout, nc, xs, ys, st->ov);
  tsr__free(ctx, xs);
  tsr__free(ctx, ys);
  for (int64_t j = 0; j < bh; j++)
    for (int64_t i = 0; i < bw; i++) {
      double q[12];
      size_t c0 = (size_t)(j * (bw + 1) + i), c3 = c0 + (size_t)(bw + 1);
      memcpy(q, st->ov + 3 * c0, 3 * sizeof(double));
      memcpy(q + 3, st->ov + 3 * (c0 + 1), 3 * sizeof(double));
      memcpy(q + 6, st->ov + 3 * (c3 + 1), 3 * sizeof(double));
      memcpy(q + 9, st->ov + 3 * c3, 3 * sizeof(double));
      st->oarea[j * bw + i] = tsr__sph_area(q, 4);
    }
  return 0;
}

static void out_quad(const exact_state_t *st, int64_t bw, int64_t i, int64_t j, double q[12]) {
  size_t c0 = (size_t)(j * (bw + 1) + i), c3 = c0 + (size_t)(bw + 1);
  memcpy(q, st->ov + 3 * c0, 3 * sizeof(double));
  memcpy(q + 3, st->ov + 3 * (c0 + 1), 3 * sizeof(double));
  memcpy(q + 6, st->ov + 3 * (c3 + 1), 3 * sizeof(double));
  memcpy(q + 9, st->ov + 3 * c3, 3 * sizeof(double));
}

/* Build the block's pair table. */
static int build_pairs(tsr__task_t *t, exact_state_t *st) {
  tsr_node_t *n = t->node;
  const tsr__window_t *w = &t->in[0];
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0], y0 = t->out.start[1], y1 = t->out.stop[1];
  int64_t bw = x1 - x0;
  int64_t wx0 = w->win.start[0], wy0 = w->win.start[1];
  int64_t nwx = w->win.stop[0] - wx0, nwy = w->win.stop[1] - wy0;
  int64_t ncx = nwx + 1;
  bool have_ov = false;
  int rc;

  st->npairs = 0;
  if (!st->pixel_plane) {
    /* Input corner vectors of the whole window. */
    size_t nc = (size_t)ncx * (size_t)(nwy + 1);
    for (int64_t j = 0; j <= nwy; j++)
      for (int64_t i = 0; i <= nwx; i++) {
        st->tx[(size_t)(j * ncx + i)] = (double)(wx0 + i) - 0.5;
        st->ty[(size_t)(j * ncx + i)] = (double)(wy0 + j) - 0.5;
      }
    in_vecs(st, nc, st->tx, st->ty, st->iv);
    if ((rc = block_vectors(t->ctx, st, x0, y0, bw, y1 - y0)) != 0)
      return tsr__err(t->ctx, rc, "%s: out of memory", n->name);
    have_ov = true;
  }
  for (int64_t j = 0; j < nwy; j++) {
    const double *cx0 = st->cx + (size_t)(j * ncx), *cx1 = cx0 + ncx;
    const double *cy0 = st->cy + (size_t)(j * ncx), *cy1 = cy0 + ncx;
    for (int64_t i = 0; i < nwx; i++) {
      double qx[4] = {cx0[i], cx0[i + 1], cx1[i + 1], cx1[i]};
      double qy[4] = {cy0[i], cy0[i + 1], cy1[i + 1], cy1[i]};
      tsr__box_t box[4];
      bool seam;
      int nb = candidates(st, qx, qy, x0, x1 - 1, y0, y1 - 1, box, &seam);
      uint32_t in = (uint32_t)(j * w->stride[1] + i);
      double p[12];
      if (nb == 0)
        continue;
      if (st->pixel_plane && !seam) {
        for (int64_t jj = box[0].y0; jj <= box[0].y1; jj++) {
          double ry[4] = {qy[0] - (double)jj, qy[1] - (double)jj, qy[2] - (double)jj, qy[3] - (double)jj};
          for (int64_t ii = box[0].x0; ii <= box[0].x1; ii++) {
            double rx[4] = {qx[0] - (double)ii, qx[1] - (double)ii, qx[2] - (double)ii, qx[3] - (double)ii};
            double f = tsr__quad_box_area(rx, ry, -0.5, 0.5, -0.5, 0.5);
            if (f > MIN_FRAC && (rc = push_pair(t->ctx, st, in, (uint32_t)((jj - y0) * bw + (ii - x0)),
                                         f > 1.0 ? 1.0 : f)) != 0)
              return tsr__err(t->ctx, rc, "%s: out of memory for the overlap table", n->name);
          }
        }
        continue;
      }
      /* Unit vectors for this input pixel. */
      if (st->pixel_plane) {
        double cxp[4] = {(double)(wx0 + i) - 0.5, (double)(wx0 + i) + 0.5, (double)(wx0 + i) + 0.5,
                         (double)(wx0 + i) - 0.5};
        double cyp[4] = {(double)(wy0 + j) - 0.5, (double)(wy0 + j) - 0.5, (double)(wy0 + j) + 0.5,
                         (double)(wy0 + j) + 0.5};
        in_vecs(st, 4, cxp, cyp, p);
        if (!have_ov) {
          if ((rc = block_vectors(t->ctx, st, x0, y0, bw, y1 - y0)) != 0)
            return tsr__err(t->ctx, rc, "%s: out of memory", n->name);
          have_ov = true;
        }
      } else {
        size_t c0 = (size_t)(j * ncx + i), c3 = c0 + (size_t)ncx;
        memcpy(p, st->iv + 3 * c0, 3 * sizeof(double));
        memcpy(p + 3, st->iv + 3 * (c0 + 1), 3 * sizeof(double));
        memcpy(p + 6, st->iv + 3 * (c3 + 1), 3 * sizeof(double));
        memcpy(p + 9, st->iv + 3 * c3, 3 * sizeof(double));
      }
      if (!isfinite(p[0] + p[1] + p[2] + p[3] + p[4] + p[5] + p[6] + p[7] + p[8] + p[9] + p[10] + p[11]))
        continue;
      for (int b = 0; b < nb; b++)
        for (int64_t jj = box[b].y0; jj <= box[b].y1; jj++)
          for (int64_t ii = box[b].x0; ii <= box[b].x1; ii++) {
            double q[12];
            size_t o = (size_t)((jj - y0) * bw + (ii - x0));
            out_quad(st, bw, ii - x0, jj - y0, q);
            if (!isfinite(q[0] + q[3] + q[6] + q[9] + q[1] + q[4] + q[7] + q[10] + q[2] + q[5] + q[8] + q[11]))
              continue;
            double f = tsr__sph_overlap_frac(p, q, st->oarea[o]);
            if (f > MIN_FRAC && (rc = push_pair(t->ctx, st, in, (uint32_t)o, f)) != 0)
              return tsr__err(t->ctx, rc, "%s: out of memory for the overlap table", n->name);
          }
    }
  }
  return 0;
}

/* Mark every output pixel that a NaN input pixel of this plane is a
 * candidate for (reproject 0.10 adds value * fraction even at fraction 0). */
static void spoil_nans(tsr__task_t *t, exact_state_t *st, const char *src, size_t es) {
  const tsr__window_t *w = &t->in[0];
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0], y0 = t->out.start[1], y1 = t->out.stop[1];
  int64_t bw = x1 - x0;
  int64_t nwx = w->win.stop[0] - w->win.start[0], nwy = w->win.stop[1] - w->win.start[1];
  int64_t ncx = nwx + 1;
  for (int64_t j = 0; j < nwy; j++) {
    const char *row = src + (size_t)(j * w->stride[1]) * es;
    for (int64_t i = 0; i < nwx; i++) {
      double v = es == 4 ? (double)((const float *)row)[i] : ((const double *)row)[i];
      if (v == v)
        continue;
      const double *cx0 = st->cx + (size_t)(j * ncx), *cx1 = cx0 + ncx;
      const double *cy0 = st->cy + (size_t)(j * ncx), *cy1 = cy0 + ncx;
      double qx[4] = {cx0[i], cx0[i + 1], cx1[i + 1], cx1[i]};
      double qy[4] = {cy0[i], cy0[i + 1], cy1[i + 1], cy1[i]};
      tsr__box_t box[4];
      bool seam;
      int nb = candidates(st, qx, qy, x0, x1 - 1, y0, y1 - 1, box, &seam);
      for (int b = 0; b < nb; b++)
        for (int64_t jj = box[b].y0; jj <= box[b].y1; jj++)
          for (int64_t ii = box[b].x0; ii <= box[b].x1; ii++)
            st->spoil[(jj - y0) * bw + (ii - x0)] = 1;
    }
  }
}

static int exact_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const exact_params_t *ep = n->params;
  exact_state_t *st = t->state;
  const tsr__window_t *w = &t->in[0];
  const tsr_node_t *in = n->inputs[0];
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0], y0 = t->out.start[1], y1 = t->out.stop[1];
  int64_t bw = x1 - x0, bh = y1 - y0;
  size_t nb = (size_t)bw * (size_t)bh;
  size_t es_in = tsr_dtype_size(in->dtype);
  int rc;

  if (w->data == NULL) {
    tsr__task_fill(t, 0, NAN);
    tsr__task_fill(t, 1, 0.0);
    return 0;
  }
  {
    int64_t nwx = w->win.stop[0] - w->win.start[0], nwy = w->win.stop[1] - w->win.start[1];
    size_t nc = (size_t)(nwx + 1) * (size_t)(nwy + 1);
    if ((double)nwy * (double)w->stride[1] >= 4294967295.0)
      return tsr__err(t->ctx, TSR_ENOTSUP,
                      "%s: input window %lld x %lld of %s is too large for one block; expected "
                      "fewer than 2^32 pixels (use a smaller --block)",
                      n->name, (long long)nwx, (long long)nwy, in->name);
    if (nc > st->ccap) {
      rc = tsr__scratch_grow(t->ctx, (void **)&st->cx, nc, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->cy, nc, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->tx, nc, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->ty, nc, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->iv, nc, 3 * sizeof(double));
      st->ccap = rc ? 0 : nc;
      if (rc)
        return tsr__err(t->ctx, rc, "%s: out of memory for %zu corners", n->name, nc);
    }
    if (nb > st->bcap) {
      size_t nbc = (size_t)(bw + 1) * (size_t)(bh + 1);
      rc = tsr__scratch_grow(t->ctx, (void **)&st->ov, nbc, 3 * sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->oarea, nb, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->sum, nb, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->wsum, nb, sizeof(double));
      rc = rc ? rc : tsr__scratch_grow(t->ctx, (void **)&st->spoil, nb, 1);
      st->bcap = rc ? 0 : nb;
      if (rc)
        return tsr__err(t->ctx, rc, "%s: out of memory for a %lld x %lld block", n->name,
                        (long long)bw, (long long)bh);
    }
    /* The window's corners in output pixels. */
    if ((rc = tsr__map_box(st->cmap, w->win.start[0], w->win.stop[0] + 1, w->win.start[1],
                           w->win.stop[1] + 1, st->cx, st->cy)) != 0)
      return rc;
  }
  if ((rc = build_pairs(t, st)) != 0)
    return rc;

  for (int64_t q = t->out.start[3]; q < t->out.stop[3]; q++)
    for (int64_t z = t->out.start[2]; z < t->out.stop[2]; z++) {
      const char *src = (const char *)w->data + (size_t)((q - w->win.start[3]) * w->stride[3] +
                                                          (z - w->win.start[2]) * w->stride[2]) *
                                                     es_in;
      const pair_t *pr = st->pairs;
      size_t np = st->npairs;
      double *sum = st->sum, *ws = st->wsum;
      memset(sum, 0, nb * sizeof(double));
      memset(ws, 0, nb * sizeof(double));
      memset(st->spoil, 0, nb);
      if (ep->nan_mode == TSR_NAN_IGNORE) {
        if (es_in == 4)
          for (size_t k = 0; k < np; k++) {
            double v = ((const float *)src)[pr[k].in];
            if (v == v)
              sum[pr[k].out] += v * pr[k].f, ws[pr[k].out] += pr[k].f;
          }
        else
          for (size_t k = 0; k < np; k++) {
            double v = ((const double *)src)[pr[k].in];
            if (v == v)
              sum[pr[k].out] += v * pr[k].f, ws[pr[k].out] += pr[k].f;
          }
      } else {
        if (es_in == 4)
          for (size_t k = 0; k < np; k++)
            sum[pr[k].out] += ((const float *)src)[pr[k].in] * pr[k].f, ws[pr[k].out] += pr[k].f;
        else
          for (size_t k = 0; k < np; k++)
            sum[pr[k].out] += ((const double *)src)[pr[k].in] * pr[k].f, ws[pr[k].out] += pr[k].f;
        spoil_nans(t, st, src, es_in);
      }
      for (int64_t y = 0; y < bh; y++) {
        size_t off = tsr__task_offset(t, 0, y, z - t->out.start[2], q - t->out.start[3]);
        for (int64_t x = 0; x < bw; x++) {
          size_t o = (size_t)(y * bw + x);
          double wv = ws[o];
          double v = wv > 0 && !st->spoil[o] ? sum[o] / wv : NAN;
          double fp = wv > 1.0 ? 1.0 : wv;
          tsr__task_put2(t, off + (size_t)x, v, fp);
        }
      }
    }
  return 0;
}

static const tsr__op_t exact_op = {
    .name = "reproject_exact",
    .version = 2, /* 2: the window mapping's tolerance and roundtrip flag are in the key */
    .flags = TSR__OP_REPROJECT,
    .input_region = exact_input_region,
    .start = exact_start,
    .stop = exact_stop,
    .compute = exact_compute,
    .encode = params_encode,
    .free_params = params_free,
};


/* The input WCS with CRPIX1/2 + 0.5 and NAXIS1/2 + 1: its integer pixels are
 * the input's pixel corners.  Distortions (SIP, TPV) are functions of
 * pixel - CRPIX or of intermediate coordinates, so they shift along. */
static tsr_wcs_t *corner_wcs(tsr_ctx_t *ctx, const tsr_wcs_t *src) {
  tsr_wcs_t *w = NULL;
  if (tsr_wcs_copy(ctx, src, &w) != 0)
    return NULL;
  for (int a = 0; a < 2; a++) {
    char kw[16], val[72];
    double crpix = 0.0;
    snprintf(kw, sizeof kw, "CRPIX%d", a + 1);
    int i = tsr__wcs_find(w, kw);
    if (i >= 0) {
      tsr__card_value(w->cards + (size_t)i * 80, val, sizeof val);
      crpix = strtod(val, NULL);
    }
    snprintf(val, sizeof val, "%.17g", crpix + 0.5);
    if (tsr__wcs_set(w, kw, val) != 0) {
      tsr_wcs_free(w);
      return NULL;
    }
    if (w->shape[a] > 0)
      w->shape[a] += 1;
    snprintf(kw, sizeof kw, "NAXIS%d", a + 1);
    if (tsr__wcs_find(w, kw) >= 0) {
      snprintf(val, sizeof val, "%lld", (long long)w->shape[a]);
      if (tsr__wcs_set(w, kw, val) != 0) {
        tsr_wcs_free(w);
        return NULL;
      }
    }
  }
  return w;
}

tsr_node_t *tsr_reproject_exact(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                const tsr_exact_opts_t *opts) {
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  exact_params_t *ep;
  tsr_ctx_t *ctx;

  if (!tsr__graph_check(g))
    return NULL;
  ctx = g->ctx;
  if (opts)
    o = *opts;
  if (o.nan_mode != TSR_NAN_PROPAGATE && o.nan_mode != TSR_NAN_IGNORE)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "reproject_exact: nan_mode %d is not TSR_NAN_PROPAGATE (0) or "
                           "TSR_NAN_IGNORE (1)",
                           o.nan_mode);
  if (!tsr__reproject_check(g, "reproject_exact", src, target, o.dtype, o.block))
    return NULL;
  {
    /* Overlaps are areas on the sphere: the linear WCSs that the shared
     * check lets through for interp and adaptive have none. */
    tsr__cel_t *ci = NULL, *co = NULL;
    int rc = tsr__cel_new(ctx, src->wcs, src->name, &ci);
    if (rc == 0)
      rc = tsr__cel_new(ctx, target, "target", &co);
    tsr__cel_free(ci);
    tsr__cel_free(co);
    if (rc != 0) {
      tsr__err_prefix(ctx, "reproject_exact");
      return tsr__graph_fail_ctx(g, rc);
    }
  }
  /* The window mapping needs no more than 1e-4 px: windows get a margin. */
  ep = tsr__reproject_params_new(g, "reproject_exact", sizeof *ep, src, target, 1e-4, false);
  if (ep == NULL)
    return NULL;
  ep->nan_mode = o.nan_mode;
  if ((ep->corners = corner_wcs(ctx, src->wcs)) == NULL) {
    params_free(ctx, ep);
    return tsr__graph_fail(g, TSR_ENOMEM, "reproject_exact: out of memory");
  }
  return tsr__reproject_node(g, &exact_op, ep, src, target, o.dtype, o.block);
}
