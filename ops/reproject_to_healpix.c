/* reproject_to_healpix.c -- reprojection of an image onto a HEALPix map
 * (reproject_to_healpix of reproject 0.10).
 *
 * Semantics: every map pixel centre, in the map's frame, goes into the
 * image's frame and pixels, where scipy.ndimage.map_coordinates (mode
 * 'constant', cval NaN) gives its value: a centre outside [0, n - 1] on an
 * image axis is NaN (reproject_interp's half-pixel edge clamp is not
 * applied here, as reproject does not apply it); order 0 takes the pixel
 * at floor(x + 0.5); order 1 the 2 x 2 pixels from floor(x), the second
 * one mirrored back inside at the last pixel (scipy reads index n - 2
 * there), a NaN among them spoiling the value even at zero weight.
 * Orders 2 and 3 use reproject_interp's splines (spline.c).
 *
 * The node is 1-D: chunks are runs of pixel indices, each cut into parts
 * that have a window (an input) of their own, so that a window covers a
 * compact patch of sky.  A RING chunk is a band of rings, which crosses a
 * tilted image diagonally (the box around a diagonal strip is as wide as
 * it is long), so its parts are longitude sectors about as wide as the
 * band is high (chunk_for); a NESTED chunk is a nested cell, its parts
 * sub-cells.  A part is a list of pieces with a simple shape on the sky:
 * arcs of rings, or nested cells with their centre and radius.  Each run
 * first samples the image on a grid of cells (GRID_STEP pixels; each
 * cell's centre and the radius holding its corners, in the map's frame,
 * sorted by colatitude) and the cap that holds the whole image.  A part
 * none of whose pieces comes within the cap reads and maps nothing;
 * otherwise its window is the pixel box of the cells some piece comes
 * within reach of, plus the interpolation's reach.  So a chunk off the
 * image costs a few distance tests, and one on it reads only what its
 * pixels can fall in.  Sources in memory or FITS files are read in place
 * (takes_view): no copy of the windows at all.
 *
 * Inside a part, only the pixels whose centres are within the cap are
 * mapped: in a ring these form one longitude interval, found in closed
 * form.  A plain TAN image (no distortions) with a frame change that is a
 * rotation is a projective map of unit vectors, pixel ~ P v, fitted from
 * four points and checked against wcslib on the whole grid (to 1e-7
 * pixel); any other image goes through wcslib at every pixel.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hpx.h"
#include "reproject.h"
#include "sky.h"
#include "spline.h"

#define GRID_STEP 8            /* image pixels between footprint grid points */
#define CHUNK_MAX ((int64_t)1 << 24)
#define HOMOG_TOL 1e-7          /* pixels: the projective fit must agree with wcslib to this */
#define NESTED_PARTS 16         /* parts of a NESTED chunk (nested cells) */
#define RING_PARTS_MAX 256      /* longitude sectors of a RING chunk, at most */
#define RING_CHUNK_MAX ((int64_t)1 << 21)
#define SPLINE_CHUNK 65536      /* orders 2, 3: one window a chunk, so smaller chunks */

typedef struct {
  int method;
  int order;
  int parts;                    /* parts of a chunk, each with its own window (input) */
  int64_t nside;
  bool nested;
  char coordsys;
  char in_what[160];            /* 'input "a.fits"', for messages */
} to_params_t;

typedef struct {
  double c[3];                  /* centre, unit vector in the map's frame */
  double theta, phi;            /* the same as colatitude and longitude */
  double radius, cosr;          /* every point of the cell lies within radius of c (rad) */
  int64_t x0, x1, y0, y1;       /* the cell's pixel bounds (grid points, inclusive) */
} cell_t;

/* A part of a chunk with a simple shape on the sky. */
typedef struct {
  bool ring;
  /* RING: pixels first + j, j in [j0, j1), of a ring of `count` pixels at
   * colatitude theta, pixel j at longitude phi0 + j dphi. */
  int64_t first, count, j0, j1;
  double theta, z, stheta, phi0, dphi;
  double va[3], vb[3];          /* the arc's first and last pixel centres */
  /* NESTED: pixels [lo, hi), a nested cell with centre c and every pixel
   * centre within radius of it. */
  int64_t lo, hi;
  double c[3], radius;
} piece_t;

typedef struct {
  tsr__cel_t *cel;              /* the image's WCS, this process's copy */
  tsr__frame_xform_t to_img;    /* map frame -> image frame */
  bool homog;                   /* P holds */
  double P[9];                  /* map-frame unit vector -> homogeneous image pixel */
  double cap_c[3], cap_theta, cap_phi, cap_r, cap_cosr; /* the image's cap; cap_r >= pi: all
                                                           the sky, < 0: nothing */
  cell_t *cells;                /* sorted by theta */
  size_t ncells;
  double max_radius;            /* the largest cell radius */
  int64_t nx, ny;
  /* Scratch of the chunk being computed. */
  double *v, *x, *y;
  int64_t *k;
  size_t cap;
  tsr__spline_t *spline;        /* orders 2, 3 */
} to_state_t;

static double angle_between(const double a[3], const double b[3]) {
  double cx = a[1] * b[2] - a[2] * b[1], cy = a[2] * b[0] - a[0] * b[2],
         cz = a[0] * b[1] - a[1] * b[0];
  return atan2(sqrt(cx * cx + cy * cy + cz * cz), a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
}

static void vec_of(double theta, double phi, double v[3]) {
  double s = sin(theta);
  v[0] = s * cos(phi), v[1] = s * sin(phi), v[2] = cos(theta);
}

static void theta_phi(const double v[3], double *theta, double *phi) {
  *theta = atan2(hypot(v[0], v[1]), v[2]);
  *phi = atan2(v[1], v[0]);
  if (*phi < 0)
    *phi += 2 * M_PI;
}

static bool normalise(double v[3]) {
  double r = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  if (!(r > 0))
    return false;
  v[0] /= r, v[1] /= r, v[2] /= r;
  return true;
}

/* ------------------------------------------------------------------ */
/* Pieces of a chunk                                                   */

/* How many pieces pixels [a, b) may make: a ring has at least 4 pixels,
 * and a run makes at most 6 nested cells a level. */
static size_t max_pieces(const to_params_t *tp, int64_t a, int64_t b) {
  int64_t rings = (b - a) / 4 + 2;
  return (size_t)((rings < 4 * tp->nside ? rings : 4 * tp->nside) + 200);
}

/* The pieces of pixels [a, b), at most max_pieces of them. */
static size_t pieces_of(const to_params_t *tp, int64_t a, int64_t b, piece_t *out) {
  size_t n = 0;
  if (!tp->nested) {
    int64_t r = tsr__hpx_ring_of(tp->nside, a), first, count;
    while (a < b) {
      piece_t *p = &out[n++];
      double lat;
      tsr__hpx_ring_span(tp->nside, r, &first, &count);
      p->ring = true;
      p->first = first, p->count = count;
      p->j0 = a - first;
      p->j1 = (b < first + count ? b : first + count) - first;
      tsr__hpx_pix2ang(tp->nside, false, first, &p->phi0, &lat);
      p->theta = M_PI / 2 - lat;
      p->z = sin(lat), p->stheta = cos(lat);
      p->dphi = 2 * M_PI / (double)count;
      vec_of(p->theta, p->phi0 + (double)p->j0 * p->dphi, p->va);
      vec_of(p->theta, p->phi0 + (double)(p->j1 - 1) * p->dphi, p->vb);
      a = first + p->j1;
      r++;
    }
    return n;
  }
  while (a < b) {
    /* The largest aligned block of 4^k pixels that starts at a and fits. */
    int k = 0;
    int64_t span = 1;
    while ((a % (span * 4)) == 0 && a + span * 4 <= b && span * 4 <= tp->nside * tp->nside)
      span *= 4, k++;
    piece_t *p = &out[n++];
    int64_t ns = tp->nside >> k;
    p->ring = false;
    p->lo = a, p->hi = a + span;
    tsr__hpx_pix2vec(ns, true, a / span, p->c);
    /* The cell's pixels form a 2^k x 2^k grid whose x and y bits
     * interleave in the index: its corner pixels are a, a + X, a + Y and
     * a + X + Y (X the even bits, Y the odd ones), and every pixel centre
     * lies within a tenth more than the farthest of theirs from the
     * cell's centre (the edges between them bend a little). */
    {
      int64_t xbits = 0, corners[4];
      double far = 0;
      for (int bit = 0; bit < k; bit++)
        xbits |= (int64_t)1 << (2 * bit);
      corners[0] = a, corners[1] = a + xbits, corners[2] = a + (xbits << 1);
      corners[3] = a + span - 1;
      for (int q = 0; q < 4; q++) {
        double v[3], d;
        tsr__hpx_pix2vec(tp->nside, true, corners[q], v);
        d = angle_between(p->c, v);
        far = d > far ? d : far;
      }
      p->radius = 1.1 * far + 1e-9;
    }
    a += span;
  }
  return n;
}

/* May a pixel centre of piece p lie within angle r of point c (colatitude
 * th, longitude ph; cosr = cos r)?  Conservative: true may be wrong, false
 * never is.  Called for every (cell, piece) pair of a chunk's candidate
 * cells, so the usual answer (too far in colatitude) costs one test. */
static bool piece_near(const piece_t *p, const double c[3], double th, double ph, double r,
                       double cosr) {
  if (!p->ring) {
    double reach = r + p->radius;
    return reach >= M_PI || c[0] * p->c[0] + c[1] * p->c[1] + c[2] * p->c[2] >= cos(reach);
  }
  if (fabs(p->theta - th) > r)
    return false;
  if (p->j1 - p->j0 >= p->count)
    return true;
  /* On a circle of latitude the point nearest c is at c's longitude: if
   * the arc holds it, the colatitude difference is the distance; else the
   * nearer end of the arc is the nearest point. */
  double rel = ph - (p->phi0 + (double)p->j0 * p->dphi);
  while (rel < 0)
    rel += 2 * M_PI;
  while (rel >= 2 * M_PI)
    rel -= 2 * M_PI;
  if (rel <= (double)(p->j1 - 1 - p->j0) * p->dphi)
    return true;
  return c[0] * p->va[0] + c[1] * p->va[1] + c[2] * p->va[2] >= cosr ||
         c[0] * p->vb[0] + c[1] * p->vb[1] + c[2] * p->vb[2] >= cosr;
}

/* The colatitude range [lo, hi] that holds every pixel centre of the pieces. */
static void pieces_theta(const piece_t *pc, size_t np, double *lo, double *hi) {
  *lo = M_PI, *hi = 0;
  for (size_t q = 0; q < np; q++) {
    double t0, t1;
    if (pc[q].ring) {
      t0 = t1 = pc[q].theta;
    } else {
      double th = atan2(hypot(pc[q].c[0], pc[q].c[1]), pc[q].c[2]);
      t0 = th - pc[q].radius, t1 = th + pc[q].radius;
    }
    *lo = t0 < *lo ? t0 : *lo;
    *hi = t1 > *hi ? t1 : *hi;
  }
}

/* A cap around every pixel centre of ring pieces pc, widened by `reach`:
 * its centre into c and the cosine of its radius returned (-2: the whole
 * sky).  A point of an arc is within half the arc's length of its middle,
 * so the radius is the farthest middle plus its half-length; a cell whose
 * centre lies outside (with its radius, at most reach) is near no piece.
 * Bands of rings cross the whole width of the image, most of whose cells
 * lie far outside the part's sector. */
static double part_cap(const piece_t *pc, size_t np, double reach, double c[3]) {
  double r = 0;
  c[0] = c[1] = c[2] = 0;
  for (size_t q = 0; q < np; q++)
    for (int a = 0; a < 3; a++)
      c[a] += pc[q].va[a] + pc[q].vb[a];
  if (!normalise(c))
    return -2;
  for (size_t q = 0; q < np; q++) {
    double m[3], half = 0.5 * (double)(pc[q].j1 - 1 - pc[q].j0) * pc[q].dphi * pc[q].stheta;
    vec_of(pc[q].theta, pc[q].phi0 + 0.5 * (double)(pc[q].j0 + pc[q].j1 - 1) * pc[q].dphi, m);
    double d = angle_between(c, m) + half;
    r = d > r ? d : r;
  }
  r += reach + 1e-6;
  return r >= M_PI ? -2 : cos(r);
}

/* The first of ring pieces in colatitude order with theta >= t. */
static size_t first_piece(const piece_t *pc, size_t np, double t) {
  size_t lo = 0, hi = np;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (pc[mid].theta < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* ------------------------------------------------------------------ */
/* Run state: the image's footprint on the sky                         */

static void params_free(tsr_ctx_t *ctx, void *p) { tsr__free(ctx, p); }

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const to_params_t *tp = n->params;
  tsr__buf_put_i64(b, tp->method);
  tsr__buf_put_i64(b, tp->order);
  tsr__buf_put_i64(b, tp->nside);
  tsr__buf_put_i64(b, tp->nested);
  tsr__buf_put_i64(b, tp->coordsys);
}

static void to_stop(tsr_node_t *n, void *state) {
  to_state_t *st = state;
  tsr_ctx_t *ctx = n->graph->ctx;
  if (st == NULL)
    return;
  tsr__cel_free(st->cel);
  tsr__spline_free(ctx, st->spline);
  tsr__free(ctx, st->cells);
  tsr__free(ctx, st->v);
  tsr__free(ctx, st->x);
  tsr__free(ctx, st->y);
  tsr__free(ctx, st->k);
  tsr__free(ctx, st);
}

static bool inv3(const double m[9], double out[9]) {
  double c0 = m[4] * m[8] - m[5] * m[7], c1 = m[5] * m[6] - m[3] * m[8],
         c2 = m[3] * m[7] - m[4] * m[6];
  double det = m[0] * c0 + m[1] * c1 + m[2] * c2;
  if (!(fabs(det) > 0))
    return false;
  out[0] = c0 / det, out[1] = (m[2] * m[7] - m[1] * m[8]) / det, out[2] = (m[1] * m[5] - m[2] * m[4]) / det;
  out[3] = c1 / det, out[4] = (m[0] * m[8] - m[2] * m[6]) / det, out[5] = (m[2] * m[3] - m[0] * m[5]) / det;
  out[6] = c2 / det, out[7] = (m[1] * m[6] - m[0] * m[7]) / det, out[8] = (m[0] * m[4] - m[1] * m[3]) / det;
  return true;
}

static void mul3v(const double m[9], const double v[3], double o[3]) {
  o[0] = m[0] * v[0] + m[1] * v[1] + m[2] * v[2];
  o[1] = m[3] * v[0] + m[4] * v[1] + m[5] * v[2];
  o[2] = m[6] * v[0] + m[7] * v[1] + m[8] * v[2];
}

/* The projective map of a plain TAN image: pixel (x, y, 1) is parallel to
 * Q^-1 v for the unit vector v it shows, so four pixels in general
 * position and their vectors fix Q up to scale (a projective basis:
 * columns of vectors scaled so that they add up to the fourth).  P = Q^-1
 * then takes a vector to (x w, y w, w), w > 0 on the image's hemisphere.
 * False when a point has no position or the system is singular. */
static bool fit_projective(to_state_t *st, const tsr__frame_xform_t *to_map, double P[9]) {
  double cx = (double)(st->nx - 1) / 2, cy = (double)(st->ny - 1) / 2;
  double d = (double)(st->nx > st->ny ? st->nx : st->ny) / 4 + 1;
  double px[4] = {cx - d, cx + d, cx - d, cx + d}, py[4] = {cy - d, cy - d, cy + d, cy + d};
  double v[12], Mp[9], Mv[9], iMp[9], iMv[9], a[3], b[3], A[9], B[9], iA[9], Q[9];
  tsr__cel_pix2vec(st->cel, 4, px, py, v);
  tsr__frame_apply(to_map, 4, v);
  for (int k = 0; k < 3; k++) {
    Mp[k] = px[k], Mp[3 + k] = py[k], Mp[6 + k] = 1;
    Mv[k] = v[3 * k], Mv[3 + k] = v[3 * k + 1], Mv[6 + k] = v[3 * k + 2];
  }
  if (!(v[9] == v[9]) || !(v[0] == v[0]) || !(v[3] == v[3]) || !(v[6] == v[6]))
    return false;
  if (!inv3(Mp, iMp) || !inv3(Mv, iMv))
    return false;
  {
    double p3[3] = {px[3], py[3], 1};
    mul3v(iMp, p3, a);
    mul3v(iMv, v + 9, b);
  }
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 3; c++) {
      A[3 * r + c] = Mp[3 * r + c] * a[c];
      B[3 * r + c] = Mv[3 * r + c] * b[c];
    }
  if (!inv3(A, iA))
    return false;
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 3; c++)
      Q[3 * r + c] = B[3 * r] * iA[c] + B[3 * r + 1] * iA[3 + c] + B[3 * r + 2] * iA[6 + c];
  if (!inv3(Q, P))
    return false;
  {
    /* The scale may have come out negative: make w > 0 at the image. */
    double u[3];
    mul3v(P, v, u);
    if (u[2] < 0)
      for (int k = 0; k < 9; k++)
        P[k] = -P[k];
  }
  return true;
}

static int cmp_theta(const void *a, const void *b) {
  double x = ((const cell_t *)a)->theta, y = ((const cell_t *)b)->theta;
  return (x > y) - (x < y);
}

/* The first cell (of cells sorted by theta) with theta >= t. */
static size_t first_cell(const to_state_t *st, double t) {
  size_t lo = 0, hi = st->ncells;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (st->cells[mid].theta < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static int to_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  const to_params_t *tp = n->params;
  const tsr_node_t *in = n->inputs[0];
  to_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  tsr__frame_t map_frame;
  tsr__frame_xform_t to_map;
  double *gx = NULL, *gy = NULL, *gv = NULL, *px = NULL, *py = NULL;
  int64_t mx, my;
  size_t ng;
  int rc;

  *state = NULL;
  if (st == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  st->nx = in->shape[0], st->ny = in->shape[1];
  if ((rc = tsr__cel_new(ctx, in->wcs, tp->in_what, &st->cel)) != 0)
    goto out;
  if (tp->order >= 2 && (rc = tsr__spline_new(ctx, &st->spline)) != 0)
    goto out;
  tsr__hpx_frame(tp->coordsys, &map_frame);
  tsr__frame_xform(&map_frame, tsr__cel_frame(st->cel), &st->to_img);
  tsr__frame_xform(tsr__cel_frame(st->cel), &map_frame, &to_map);

  /* Grid points at every GRID_STEP pixels over [0, n - 1], the last at n - 1. */
  mx = (st->nx - 1 + GRID_STEP - 1) / GRID_STEP, my = (st->ny - 1 + GRID_STEP - 1) / GRID_STEP;
  mx = mx < 1 ? 1 : mx, my = my < 1 ? 1 : my;
  ng = (size_t)((mx + 1) * (my + 1));
  rc = TSR_ENOMEM;
  gx = tsr__mallocarray(ctx, ng, sizeof *gx);
  gy = tsr__mallocarray(ctx, ng, sizeof *gy);
  gv = tsr__mallocarray(ctx, ng, 3 * sizeof *gv);
  px = tsr__mallocarray(ctx, ng, sizeof *px);
  py = tsr__mallocarray(ctx, ng, sizeof *py);
  st->cells = tsr__mallocarray(ctx, (size_t)(mx * my), sizeof *st->cells);
  if (!gx || !gy || !gv || !px || !py || !st->cells) {
    tsr__err(ctx, rc, "%s: out of memory for the footprint grid", n->name);
    goto out;
  }
  for (int64_t j = 0; j <= my; j++)
    for (int64_t i = 0; i <= mx; i++) {
      size_t q = (size_t)(j * (mx + 1) + i);
      gx[q] = (double)(i * GRID_STEP < st->nx - 1 ? i * GRID_STEP : st->nx - 1);
      gy[q] = (double)(j * GRID_STEP < st->ny - 1 ? j * GRID_STEP : st->ny - 1);
    }
  tsr__cel_pix2vec(st->cel, ng, gx, gy, gv);
  tsr__frame_apply(&to_map, ng, gv);
  {
    double maxr = 0, sum[3] = {0, 0, 0};
    size_t good = 0;
    for (int64_t j = 0; j < my; j++)
      for (int64_t i = 0; i < mx; i++) {
        cell_t *c = &st->cells[st->ncells];
        size_t q[4] = {(size_t)(j * (mx + 1) + i), (size_t)(j * (mx + 1) + i + 1),
                       (size_t)((j + 1) * (mx + 1) + i), (size_t)((j + 1) * (mx + 1) + i + 1)};
        int nv = 0;
        memset(c->c, 0, sizeof c->c);
        for (int k = 0; k < 4; k++)
          if (gv[3 * q[k]] == gv[3 * q[k]]) {
            for (int a = 0; a < 3; a++)
              c->c[a] += gv[3 * q[k] + a];
            nv++;
          }
        if (nv == 0 || !normalise(c->c))
          continue; /* off the sky: no position can fall in it */
        c->radius = 0;
        for (int k = 0; k < 4; k++)
          if (gv[3 * q[k]] == gv[3 * q[k]]) {
            double d = angle_between(c->c, gv + 3 * q[k]);
            c->radius = d > c->radius ? d : c->radius;
          }
        /* A quarter more for the bulge of the edges between corners; a
         * cell cut by the projection's edge gets a flag (-1) and twice the
         * largest radius below. */
        c->radius = nv == 4 ? 1.25 * c->radius + 1e-9 : -1;
        theta_phi(c->c, &c->theta, &c->phi);
        c->x0 = (int64_t)gx[q[0]], c->x1 = (int64_t)gx[q[1]];
        c->y0 = (int64_t)gy[q[0]], c->y1 = (int64_t)gy[q[2]];
        maxr = c->radius > maxr ? c->radius : maxr;
        st->ncells++;
      }
    for (size_t k = 0; k < st->ncells; k++) {
      cell_t *c = &st->cells[k];
      if (c->radius < 0)
        c->radius = 2 * maxr + 1e-6;
      c->cosr = cos(c->radius);
      st->max_radius = c->radius > st->max_radius ? c->radius : st->max_radius;
    }
    qsort(st->cells, st->ncells, sizeof *st->cells, cmp_theta);
    for (size_t q = 0; q < ng; q++)
      if (gv[3 * q] == gv[3 * q]) {
        for (int a = 0; a < 3; a++)
          sum[a] += gv[3 * q + a];
        good++;
      }
    st->cap_r = M_PI;
    memcpy(st->cap_c, sum, sizeof sum);
    if (good > 0 && sqrt(sum[0] * sum[0] + sum[1] * sum[1] + sum[2] * sum[2]) > 1e-6 * (double)good &&
        normalise(st->cap_c)) {
      double r = 0;
      for (size_t k = 0; k < st->ncells; k++) {
        double d = angle_between(st->cap_c, st->cells[k].c) + st->cells[k].radius;
        r = d > r ? d : r;
      }
      st->cap_r = r + 1e-9;
    }
    theta_phi(st->cap_c, &st->cap_theta, &st->cap_phi);
    st->cap_cosr = cos(st->cap_r);
    if (good == 0)
      st->cap_r = -1; /* the image has no position at all: nothing maps into it */
  }
  /* The projective shortcut: plain TAN, a frame change without E-terms,
   * and agreement with wcslib at every grid point. */
  if (tsr__cel_is_plain_tan(st->cel) && tsr__frame_is_rotation(&st->to_img) &&
      fit_projective(st, &to_map, st->P)) {
    double err = 0;
    {
      /* wcslib wants image-frame vectors. */
      double *iv = tsr__mallocarray(ctx, ng, 3 * sizeof *iv);
      if (iv == NULL) {
        tsr__err(ctx, rc, "%s: out of memory for the footprint grid", n->name);
        goto out;
      }
      memcpy(iv, gv, ng * 3 * sizeof *iv);
      tsr__frame_apply(&st->to_img, ng, iv);
      tsr__cel_vec2pix(st->cel, ng, iv, px, py);
      tsr__free(ctx, iv);
    }
    for (size_t q = 0; q < ng && err <= HOMOG_TOL; q++) {
      double u[3];
      if (!(gv[3 * q] == gv[3 * q]))
        continue;
      mul3v(st->P, gv + 3 * q, u);
      if (!(u[2] > 0)) {
        err = INFINITY;
        break;
      }
      double ex = fabs(u[0] / u[2] - px[q]), ey = fabs(u[1] / u[2] - py[q]);
      err = fmax(err, fmax(ex, ey));
      if (!(err == err))
        err = INFINITY;
    }
    st->homog = err <= HOMOG_TOL;
  }
  *state = st;
  st = NULL;
  rc = 0;
out:
  tsr__free(ctx, gx);
  tsr__free(ctx, gy);
  tsr__free(ctx, gv);
  tsr__free(ctx, px);
  tsr__free(ctx, py);
  if (st != NULL)
    to_stop(n, st);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Windows                                                             */

/* Image pixels beyond a cell's bounds that the interpolation reads. */
static int64_t reach(int order) { return order <= 1 ? 1 : 3; }

/* The pieces of part i of a chunk's pixels [start, stop): each part has
 * its own window (input i), so the windows follow compact patches of sky
 * rather than the chunk's whole extent.  A NESTED part is a run of
 * indices, a nested cell.  A RING chunk is a band of rings, long strips
 * that cross a tilted image diagonally (the box of a diagonal strip is as
 * wide as it is long), so a RING part is a longitude sector of the band,
 * 2 pi / parts wide, about as wide as the band is high (see parts_for).
 * Every pixel of the chunk is in exactly one part. */
static size_t part_pieces(const to_params_t *tp, int64_t start, int64_t stop, int i,
                          piece_t *pc) {
  if (tp->nested || tp->parts == 1) {
    int64_t step = (stop - start + tp->parts - 1) / tp->parts;
    int64_t a = start + step * i, b = a + step < stop ? a + step : stop;
    return a < b ? pieces_of(tp, a, b, pc) : 0;
  }
  size_t n = pieces_of(tp, start, stop, pc), m = 0;
  double s0 = 2 * M_PI * i / tp->parts, s1 = 2 * M_PI * (i + 1) / tp->parts;
  for (size_t q = 0; q < n; q++) {
    piece_t p = pc[q];
    /* Pixel j is in the sector when s0 <= phi0 + j dphi < s1. */
    int64_t lo = (int64_t)ceil((s0 - p.phi0) / p.dphi), hi = (int64_t)ceil((s1 - p.phi0) / p.dphi);
    if (i == tp->parts - 1)
      hi = p.count; /* the last sector ends at 2 pi, past every pixel */
    p.j0 = p.j0 > lo ? p.j0 : lo;
    p.j1 = p.j1 < hi ? p.j1 : hi;
    if (p.j0 >= p.j1)
      continue;
    vec_of(p.theta, p.phi0 + (double)p.j0 * p.dphi, p.va);
    vec_of(p.theta, p.phi0 + (double)(p.j1 - 1) * p.dphi, p.vb);
    pc[m++] = p;
  }
  return m;
}

/* Does part i of RING pixels [start, stop) surely miss the image's cap?
 * Its pixels lie between the colatitudes of its first and last rings, and
 * (several parts) in the longitude sector [2 pi i / parts, 2 pi (i + 1) /
 * parts); a cap clear of the poles spans longitudes within asin(sin r /
 * sin theta) of its centre's.  Most parts of a chunk miss a small image:
 * this spares them their pieces (a sine and a cosine a ring each), and
 * answers as piece_near would for every one of them (margins of 1e-9). */
static bool part_misses_cap(const to_params_t *tp, const to_state_t *st, int64_t start,
                            int64_t stop, int i) {
  double lon, lat, ta, tb, eps = 1e-9;
  tsr__hpx_pix2ang(tp->nside, false, start, &lon, &lat);
  ta = M_PI / 2 - lat;
  tsr__hpx_pix2ang(tp->nside, false, stop - 1, &lon, &lat);
  tb = M_PI / 2 - lat;
  if (tb < st->cap_theta - st->cap_r - eps || ta > st->cap_theta + st->cap_r + eps)
    return true;
  if (tp->parts > 1 && st->cap_r + eps < st->cap_theta && st->cap_r + eps < M_PI - st->cap_theta) {
    double half = asin(sin(st->cap_r) / sin(st->cap_theta)) + eps;
    double s0 = 2 * M_PI * i / tp->parts, s1 = 2 * M_PI * (i + 1) / tp->parts;
    /* The cap's longitudes from s0, in [0, 2 pi): they meet [s0, s1] when
     * the interval starts inside it or wraps past 2 pi. */
    double from = fmod(st->cap_phi - half - s0, 2 * M_PI);
    if (from < 0)
      from += 2 * M_PI;
    return half < M_PI / 2 && from > s1 - s0 + eps && from + 2 * half < 2 * M_PI - eps;
  }
  return false;
}

static int to_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                           tsr_region_t *win, bool *empty) {
  to_state_t *st = state;
  const to_params_t *tp = n->params;
  tsr_ctx_t *ctx = n->graph->ctx;
  size_t np;
  piece_t *pc;
  int64_t lo[2] = {INT64_MAX, INT64_MAX}, hi[2] = {-1, -1};
  bool near = false;

  *win = *out;
  *empty = true;
  if (st->cap_r < 0 ||
      (st->cap_r < M_PI && !tp->nested && part_misses_cap(tp, st, out->start[0], out->stop[0], i)))
    return 0;
  pc = tsr__mallocarray(ctx, max_pieces(tp, out->start[0], out->stop[0]), sizeof *pc);
  if (pc == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  np = part_pieces(tp, out->start[0], out->stop[0], i, pc);
  for (size_t q = 0; q < np && !near; q++)
    near = st->cap_r >= M_PI ||
           piece_near(&pc[q], st->cap_c, st->cap_theta, st->cap_phi, st->cap_r, st->cap_cosr);
  if (near) {
    /* Only cells within reach in colatitude can meet a piece. */
    double t0, t1;
    pieces_theta(pc, np, &t0, &t1);
    bool by_theta = !tp->nested;
    double part_c[3] = {0, 0, 0}, part_cos = -2;
    for (size_t q = 1; q < np && by_theta; q++)
      by_theta = pc[q - 1].theta <= pc[q].theta;
    if (by_theta)
      part_cos = part_cap(pc, np, st->max_radius, part_c);
    for (size_t k = first_cell(st, t0 - st->max_radius);
         k < st->ncells && st->cells[k].theta <= t1 + st->max_radius; k++) {
      const cell_t *c = &st->cells[k];
      size_t q0 = 0, q1 = np;
      /* A cell inside the box found so far cannot widen it: once the box
       * has grown, most cells of the band end here. */
      if (c->x0 >= lo[0] && c->x1 <= hi[0] && c->y0 >= lo[1] && c->y1 <= hi[1])
        continue;
      if (c->c[0] * part_c[0] + c->c[1] * part_c[1] + c->c[2] * part_c[2] < part_cos)
        continue;
      if (by_theta) {
        /* Rings come in colatitude order: only those within the cell's
         * radius of it can be near (piece_near still decides; the margin
         * keeps its own test the only one that rounds). */
        q0 = first_piece(pc, np, c->theta - c->radius - 1e-9);
        q1 = first_piece(pc, np, c->theta + c->radius + 1e-9);
        q1 = q1 < np ? q1 + 1 : np;
      }
      for (size_t q = q0; q < q1; q++)
        if (piece_near(&pc[q], c->c, c->theta, c->phi, c->radius, c->cosr)) {
          lo[0] = c->x0 < lo[0] ? c->x0 : lo[0], hi[0] = c->x1 > hi[0] ? c->x1 : hi[0];
          lo[1] = c->y0 < lo[1] ? c->y0 : lo[1], hi[1] = c->y1 > hi[1] ? c->y1 : hi[1];
          break;
        }
    }
  }
  tsr__free(ctx, pc);
  if (hi[0] < 0)
    return 0;
  *empty = false;
  for (int ax = 0; ax < 2; ax++) {
    win->start[ax] = lo[ax] - reach(tp->order);
    win->stop[ax] = hi[ax] + reach(tp->order) + 1;
  }
  for (int ax = 2; ax < TSR_MAX_DIMS; ax++)
    win->start[ax] = 0, win->stop[ax] = 1;
  if (tp->order >= 2) {
    const tsr_node_t *in = n->inputs[0];
    if (win->start[0] < 0)
      win->start[0] = 0;
    if (win->start[1] < 0)
      win->start[1] = 0;
    if (win->stop[0] > in->shape[0])
      win->stop[0] = in->shape[0];
    if (win->stop[1] > in->shape[1])
      win->stop[1] = in->shape[1];
    tsr__spline_window(st->spline, win, in->shape, 0, 1);
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Computing a chunk                                                   */

static int scratch(tsr_ctx_t *ctx, to_state_t *st, size_t n) {
  if (n <= st->cap)
    return 0;
  tsr__free(ctx, st->v);
  tsr__free(ctx, st->x);
  tsr__free(ctx, st->y);
  tsr__free(ctx, st->k);
  st->v = tsr__mallocarray(ctx, n, 3 * sizeof *st->v);
  st->x = tsr__mallocarray(ctx, n, sizeof *st->x);
  st->y = tsr__mallocarray(ctx, n, sizeof *st->y);
  st->k = tsr__mallocarray(ctx, n, sizeof *st->k);
  st->cap = st->v && st->x && st->y && st->k ? n : 0;
  return st->cap ? 0 : TSR_ENOMEM;
}

/* Collect the pixels of the chunk whose centres lie in the image's cap:
 * their offsets in the chunk into st->k, their unit vectors (map frame)
 * into st->v.  Returns how many. */
static size_t collect(const to_params_t *tp, to_state_t *st, int64_t a, const piece_t *pc,
                      size_t np) {
  double cosr = st->cap_r >= M_PI ? -2 : cos(st->cap_r);
  size_t m = 0;
  for (size_t q = 0; q < np; q++) {
    const piece_t *p = &pc[q];
    if (st->cap_r < M_PI &&
        !piece_near(p, st->cap_c, st->cap_theta, st->cap_phi, st->cap_r, st->cap_cosr))
      continue;
    if (p->ring) {
      /* On the ring, cos(angle to the cap centre) = z zc + s sc cos(dphi),
       * so the pixels within the cap are those with cos(dphi) >= t. */
      /* The cap's longitude interval [k0, k1] (in pixel steps from the
       * ring's first, wrapping around it) as up to two runs of the ring,
       * each cut to the piece's [j0, j1). */
      int64_t runs[2][2] = {{p->j0, p->j1}, {0, 0}};
      double sc = sin(st->cap_theta), zc = cos(st->cap_theta), den = p->stheta * sc;
      if (st->cap_r < M_PI && den > 1e-12) {
        double t = (cosr - p->z * zc) / den;
        if (t > 1)
          continue;
        if (t > -1) {
          double delta = acos(t) + 1e-9;
          int64_t k0 = (int64_t)ceil((st->cap_phi - delta - p->phi0) / p->dphi);
          int64_t k1 = (int64_t)floor((st->cap_phi + delta - p->phi0) / p->dphi);
          if (k1 - k0 + 1 < p->count) {
            int64_t s0 = ((k0 % p->count) + p->count) % p->count, e0 = s0 + (k1 - k0) + 1;
            runs[0][0] = s0, runs[0][1] = e0 < p->count ? e0 : p->count;
            runs[1][0] = 0, runs[1][1] = e0 > p->count ? e0 - p->count : 0;
            for (int r = 0; r < 2; r++) {
              runs[r][0] = runs[r][0] > p->j0 ? runs[r][0] : p->j0;
              runs[r][1] = runs[r][1] < p->j1 ? runs[r][1] : p->j1;
            }
          }
        }
      }
      for (int r = 0; r < 2; r++)
        for (int64_t j = runs[r][0]; j < runs[r][1]; j++) {
          double phi = p->phi0 + (double)j * p->dphi, *v = st->v + 3 * m;
          v[0] = p->stheta * cos(phi), v[1] = p->stheta * sin(phi), v[2] = p->z;
          st->k[m++] = p->first + j - a;
        }
    } else {
      for (int64_t pix = p->lo; pix < p->hi; pix++) {
        double *v = st->v + 3 * m;
        tsr__hpx_pix2vec(tp->nside, true, pix, v);
        if (v[0] * st->cap_c[0] + v[1] * st->cap_c[1] + v[2] * st->cap_c[2] < cosr)
          continue;
        st->k[m++] = pix - a;
      }
    }
  }
  return m;
}

/* Value at image pixel (ix, iy) of window w: NaN outside the window (it
 * holds every pixel a position can read, see to_input_region), and for
 * any non-finite value (as a view's contract asks). */
static inline double pix_at(const tsr__window_t *w, int64_t ix, int64_t iy) {
  int64_t dx = ix - w->win.start[0], dy = iy - w->win.start[1];
  if (dx < 0 || dy < 0 || ix >= w->win.stop[0] || iy >= w->win.stop[1])
    return NAN;
  size_t off = (size_t)(dx + dy * w->stride[1]);
  double v;
  if (w->node->dtype == TSR_F32) {
    uint32_t u;
    float f;
    memcpy(&u, (const float *)w->data + off, 4);
    if (w->big_endian)
      u = __builtin_bswap32(u);
    memcpy(&f, &u, 4);
    v = f;
  } else {
    uint64_t u;
    memcpy(&u, (const double *)w->data + off, 8);
    if (w->big_endian)
      u = __builtin_bswap64(u);
    memcpy(&v, &u, 8);
  }
  return isfinite(v) ? v : NAN;
}

static void store(tsr__task_t *t, int p, int64_t k, double v) {
  if (t->planes[p] == NULL)
    return;
  size_t off = tsr__task_offset(t, k, 0, 0, 0);
  if (t->node->dtype == TSR_F32)
    ((float *)t->planes[p])[off] = (float)v;
  else
    ((double *)t->planes[p])[off] = v;
}

/* Map and interpolate the pixels of part i of the task's chunk with window w. */
static int compute_part(tsr__task_t *t, const tsr__window_t *w, int i) {
  tsr_node_t *n = t->node;
  const to_params_t *tp = n->params;
  to_state_t *st = t->state;
  int64_t c0 = t->out.start[0], len = t->out.stop[0] - c0;
  double xmax = (double)(st->nx - 1), ymax = (double)(st->ny - 1);
  piece_t *pc = tsr__mallocarray(t->ctx, max_pieces(tp, c0, c0 + len), sizeof *pc);
  size_t np, m, most = tp->order >= 2 ? (size_t)len : 0;

  if (pc == NULL)
    return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  np = part_pieces(tp, c0, c0 + len, i, pc);
  for (size_t q = 0; q < np; q++)
    most += (size_t)(pc[q].ring ? pc[q].j1 - pc[q].j0 : pc[q].hi - pc[q].lo);
  if (scratch(t->ctx, st, most) != 0) {
    tsr__free(t->ctx, pc);
    return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for %zu pixels", n->name, most);
  }
  m = collect(tp, st, c0, pc, np);
  tsr__free(t->ctx, pc);

  /* Image pixel coordinates of the collected centres. */
  if (st->homog) {
    for (size_t q = 0; q < m; q++) {
      double u[3];
      mul3v(st->P, st->v + 3 * q, u);
      if (u[2] > 0) {
        double r = 1.0 / u[2];
        st->x[q] = u[0] * r, st->y[q] = u[1] * r;
      } else {
        st->x[q] = st->y[q] = NAN;
      }
    }
  } else {
    if (!tsr__frame_identity(&st->to_img))
      tsr__frame_apply(&st->to_img, m, st->v);
    tsr__cel_vec2pix(st->cel, m, st->v, st->x, st->y);
  }

  if (tp->order >= 2) {
    /* The splines take a coordinate per output pixel (one part: the
     * chunk): NaN where none. */
    double *xs = st->v, *ys = st->v + len; /* v has room for 3 len */
    for (int64_t k = 0; k < len; k++)
      xs[k] = ys[k] = NAN;
    for (size_t q = 0; q < m; q++)
      if (st->x[q] >= 0 && st->x[q] <= xmax && st->y[q] >= 0 && st->y[q] <= ymax)
        xs[st->k[q]] = st->x[q], ys[st->k[q]] = st->y[q];
    return tsr__spline_run(t->ctx, &st->spline, tp->order, w->data, w->stride[1],
                           w->node->dtype, w->big_endian, &w->win, w->node->shape, xs, ys, len,
                           1, t, 0, 0, 0);
  }
  for (size_t q = 0; q < m; q++) {
    double x = st->x[q], y = st->y[q], val;
    if (!(x >= 0 && x <= xmax && y >= 0 && y <= ymax))
      continue;
    if (tp->order == 0) {
      val = pix_at(w, (int64_t)(x + 0.5), (int64_t)(y + 0.5));
    } else {
      int64_t i0 = (int64_t)x, j0 = (int64_t)y;
      /* scipy mirrors the second pixel back inside at the last one. */
      int64_t i1 = i0 + 1 <= st->nx - 1 ? i0 + 1 : st->nx >= 2 ? st->nx - 2 : 0;
      int64_t j1 = j0 + 1 <= st->ny - 1 ? j0 + 1 : st->ny >= 2 ? st->ny - 2 : 0;
      double fx = x - (double)i0, fy = y - (double)j0;
      double v00 = pix_at(w, i0, j0), v10 = pix_at(w, i1, j0);
      double v01 = pix_at(w, i0, j1), v11 = pix_at(w, i1, j1);
      val = (1 - fy) * ((1 - fx) * v00 + fx * v10) + fy * ((1 - fx) * v01 + fx * v11);
    }
    /* Into blank destinations a NaN is left to the blank: a page that
     * gets no value is never written (most of a map is blank). */
    if (val == val || !t->dst_blank) {
      store(t, 0, st->k[q], val);
      store(t, 1, st->k[q], val == val ? 1.0 : 0.0);
    }
  }
  return 0;
}

static int to_compute(tsr__task_t *t) {
  int rc = 0;

  /* NaN and footprint 0 everywhere first: most of a chunk is usually off
   * the image (tsr__task_fill leaves destinations that hold them already,
   * dst_blank, untouched: for a map of one image, most of two planes). */
  tsr__task_fill(t, 0, NAN);
  tsr__task_fill(t, 1, 0.0);
  for (int i = 0; i < t->n_in && rc == 0; i++)
    if (t->in[i].data != NULL)
      rc = compute_part(t, &t->in[i], i);
  return rc;
}

/* Sources show their windows in place: a RING chunk's box can be wide
 * (a strip across a tilted image) while its pixels touch a thin part. */
static bool to_takes_view(const tsr_node_t *n, int i) {
  (void)n, (void)i;
  return true;
}

static const tsr__op_t to_op = {
    .name = "reproject_to_healpix",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = to_input_region,
    .start = to_start,
    .stop = to_stop,
    .compute = to_compute,
    .encode = params_encode,
    .free_params = params_free,
    .takes_view = to_takes_view,
};

/* Chunk length and parts.  NESTED: 4^k <= 65536 pixels (a nested cell)
 * in NESTED_PARTS runs.  RING: a band of L pixels in `parts` longitude
 * sectors, each about as wide as the band is high, so that its window is
 * a compact patch.  In the equatorial belt rings are 2 / (3 nside) rad
 * apart and hold 4 nside pixels, so a band of L pixels is L / (6 nside^2)
 * rad high against sectors 2 pi / parts wide: parts = 37.7 nside^2 / L,
 * with L up to RING_CHUNK_MAX (8 MiB of float32 a plane) and at most
 * RING_PARTS_MAX sectors (and 16 pixels a sector).  Orders 2 and 3 read
 * one window a chunk: one part, and chunks of SPLINE_CHUNK. */
static void chunk_for(int64_t nside, bool nested, int order, int64_t given, int64_t *chunk,
                      int *parts) {
  int64_t npix = tsr__hpx_npix(nside), c = given;
  double want = 12 * M_PI * (double)nside * (double)nside;
  if (nested) {
    if (c == 0)
      for (c = 1; c * 4 <= 65536 && c * 4 <= npix;)
        c *= 4;
    *chunk = c;
    *parts = order >= 2 ? 1 : (int)(c < NESTED_PARTS ? c : NESTED_PARTS);
    return;
  }
  if (order >= 2) {
    *chunk = c ? c : SPLINE_CHUNK < npix ? SPLINE_CHUNK : npix;
    *parts = 1;
    return;
  }
  if (c == 0) {
    double p = ceil(want / (double)RING_CHUNK_MAX);
    p = p < 16 ? 16 : p > RING_PARTS_MAX ? RING_PARTS_MAX : p;
    c = (int64_t)fmin(want / p, (double)RING_CHUNK_MAX);
    c = c < 1024 ? 1024 : c;
    c = c < npix ? c : npix;
  }
  {
    double p = ceil(want / (double)c), cap = fmin(RING_PARTS_MAX, fmax(1, (double)(c / 16)));
    *chunk = c;
    *parts = (int)(p < 1 ? 1 : p > cap ? cap : p);
  }
}

tsr_node_t *tsr_reproject_to_healpix(tsr_graph_t *g, tsr_node_t *src, int64_t nside,
                                     const tsr_to_healpix_opts_t *opts) {
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  const char *op = "reproject_to_healpix";
  to_params_t *tp;
  tsr__cel_t *probe = NULL;
  tsr_node_t *n;
  char frame[64];
  int64_t chunk;
  int rc;

  if (!tsr__graph_check(g))
    return NULL;
  if (opts)
    o = *opts;
  if (src == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: input is NULL", op);
  if ((int)o.method != TSR_TO_HEALPIX_INTERP && (int)o.method != TSR_TO_HEALPIX_EXACT)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: method %d unknown; expected %d (interpolation) or %d (exact)", op,
                           (int)o.method, TSR_TO_HEALPIX_INTERP, TSR_TO_HEALPIX_EXACT);
  if (o.method == TSR_TO_HEALPIX_EXACT && o.nan_mode != TSR_NAN_PROPAGATE &&
      o.nan_mode != TSR_NAN_IGNORE)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: nan_mode %d is not TSR_NAN_PROPAGATE (0) or TSR_NAN_IGNORE (1)",
                           op, (int)o.nan_mode);
  if (o.method == TSR_TO_HEALPIX_INTERP && ((int)o.order < 0 || (int)o.order > 3))
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: order %d out of range [0, 3] (nearest-neighbor, bilinear, "
                           "biquadratic, bicubic)",
                           op, (int)o.order);
  if (o.nested != 0 && o.nested != 1)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: nested %d; expected 0 (RING) or 1 (NESTED)", op,
                           o.nested);
  if (!tsr__hpx_nside_ok(nside, o.nested != 0))
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: nside %lld out of range; expected 1 to 2^29%s", op,
                           (long long)nside, o.nested ? ", a power of 2 for NESTED" : "");
  if (o.dtype != 0 && o.dtype != TSR_F32 && o.dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: dtype %d is not float32 or float64", op, o.dtype);
  if (o.chunk < 0 || o.chunk > CHUNK_MAX)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: chunk %lld out of range [1, %lld] (0 = default)",
                           op, (long long)o.chunk, (long long)CHUNK_MAX);
  if (src->wcs == NULL)
    return tsr__graph_fail(g, TSR_EWCS, "%s: input %s has no WCS", op, src->name);
  if (src->ndim < 2 || (src->ndim > 2 && (src->shape[2] != 1 || src->shape[3] != 1)))
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: input %s has %d axes; expected a 2-D image with a celestial WCS "
                           "(take a plane of a cube with tsr_slice first)",
                           op, src->name, src->ndim);
  if ((rc = tsr__hpx_load(g->ctx)) != 0)
    return tsr__graph_fail_ctx(g, rc);
  tp = tsr__calloc(g->ctx, 1, sizeof *tp);
  if (tp == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  snprintf(tp->in_what, sizeof tp->in_what, "input %s", src->name);
  if ((rc = tsr__cel_new(g->ctx, src->wcs, tp->in_what, &probe)) != 0) {
    params_free(g->ctx, tp);
    tsr__err_prefix(g->ctx, "%s", op);
    return tsr__graph_fail_ctx(g, rc);
  }
  tsr__frame_name(tsr__cel_frame(probe), frame, sizeof frame);
  if (o.coordsys != NULL) {
    tp->coordsys = tsr__hpx_coordsys_parse(o.coordsys);
    if (tp->coordsys == 0) {
      tsr__cel_free(probe);
      params_free(g->ctx, tp);
      return tsr__graph_fail(g, TSR_EINVAL,
                             "%s: coordsys \"%s\"; expected G, C or E (galactic, icrs, ecliptic)",
                             op, o.coordsys);
    }
  } else if ((tp->coordsys = tsr__hpx_coordsys_of(tsr__cel_frame(probe))) == 0) {
    tsr__cel_free(probe);
    params_free(g->ctx, tp);
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: input %s is in %s, which has no HEALPix COORDSYS; give the "
                           "map's frame (coordsys G, C or E)",
                           op, src->name, frame);
  }
  tsr__cel_free(probe);
  if (o.method == TSR_TO_HEALPIX_EXACT) {
    char cs = tp->coordsys;
    params_free(g->ctx, tp);
    return tsr__to_healpix_exact(g, src, nside, &o, cs);
  }
  tp->method = o.method;
  tp->order = o.order;
  tp->nside = nside;
  tp->nested = o.nested != 0;
  chunk_for(nside, tp->nested, tp->order, o.chunk, &chunk, &tp->parts);
  if ((n = tsr__node_alloc(g, &to_op, tp)) == NULL)
    return NULL;
  n->ndim = 1;
  if (tsr__node_set_inputs(n, tp->parts) != 0) {
    tsr__node_discard(n);
    return NULL;
  }
  for (int i = 0; i < tp->parts; i++)
    n->inputs[i] = src;
  n->n_planes = 2;
  n->dtype = o.dtype ? (tsr_dtype_t)o.dtype : src->dtype == TSR_F64 ? TSR_F64 : TSR_F32;
  n->shape[0] = tsr__hpx_npix(nside);
  n->chunk[0] = chunk;
  if (tsr__hpx_cards(g->ctx, nside, tp->nested, tp->coordsys, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail_ctx(g, TSR_ENOMEM);
  }
  return tsr__node_finish(n);
}
