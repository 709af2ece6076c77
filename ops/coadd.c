/* coadd.c -- mosaics: reproject_and_coadd as one node of the lazy graph.
 *
 * reproject reprojects every input onto its own cutout of the target, keeps
 * all the cutouts, then adds them up.  Here a mosaic is a node whose inputs
 * are the reprojections themselves (data and footprint planes, and weight
 * maps), all on the target's pixel grid.  Each input carries a box: where
 * its edges, sampled at 11 points each and mapped into the target, say it
 * can land.  A block of the mosaic asks only the inputs whose box it meets,
 * for only that part, so a region computes only the blocks and input
 * windows it needs, and memory is bounded by one block of each input that
 * covers it.  Inputs are combined in their given order whatever the block,
 * so every block size gives the same bits.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reproject.h"
#include "sky.h"

/* Roles of the node's inputs, image by image. */
enum { ROLE_DATA = 0, ROLE_FOOTPRINT = 1, ROLE_WEIGHT = 2 };

typedef struct {
  int n;                   /* images */
  int combine;
  double blank;
  int *image;              /* per node input: its image */
  int *role;               /* per node input: ROLE_* */
  int *first;              /* per image: index of its data input */
  int *has_weight;         /* per image */
  int64_t (*box)[4];       /* per image: x0, x1, y0, y1 it may cover */
  double *offset;          /* per image, subtracted from its values */
} coadd_params_t;

static void params_free(tsr_ctx_t *ctx, void *p) {
  coadd_params_t *cp = p;
  if (cp == NULL)
    return;
  tsr__free(ctx, cp->image);
  tsr__free(ctx, cp->role);
  tsr__free(ctx, cp->first);
  tsr__free(ctx, cp->has_weight);
  tsr__free(ctx, cp->box);
  tsr__free(ctx, cp->offset);
  tsr__free(ctx, cp);
}

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const coadd_params_t *cp = n->params;
  tsr__buf_put_i64(b, cp->n);
  tsr__buf_put_i64(b, cp->combine);
  tsr__buf_put_f64(b, cp->blank);
  for (int i = 0; i < cp->n; i++) {
    tsr__buf_put_i64(b, cp->has_weight[i]);
    tsr__buf_put_f64(b, cp->offset[i]);
  }
}

static int coadd_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                              tsr_region_t *win, bool *empty) {
  const coadd_params_t *cp = n->params;
  const int64_t *bx = cp->box[cp->image[i]];
  (void)state;
  *win = *out;
  win->start[0] = out->start[0] > bx[0] ? out->start[0] : bx[0];
  win->stop[0] = out->stop[0] < bx[1] ? out->stop[0] : bx[1];
  win->start[1] = out->start[1] > bx[2] ? out->start[1] : bx[2];
  win->stop[1] = out->stop[1] < bx[3] ? out->stop[1] : bx[3];
  *empty = win->start[0] >= win->stop[0] || win->start[1] >= win->stop[1];
  return 0;
}

static inline double value_at(const tsr__window_t *w, int64_t x, int64_t y) {
  return tsr__window_value(w, (size_t)((x - w->win.start[0]) + (y - w->win.start[1]) * w->stride[1]));
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void store(tsr__task_t *t, int p, size_t off, double v) {
  if (t->planes[p] == NULL)
    return;
  if (t->node->dtype == TSR_F32)
    ((float *)t->planes[p])[off] = (float)v;
  else
    ((double *)t->planes[p])[off] = v;
}

static int coadd_compute(tsr__task_t *t) {
  const tsr_node_t *n = t->node;
  const coadd_params_t *cp = n->params;
  int64_t x0 = t->out.start[0], y0 = t->out.start[1];
  int64_t bw = t->out.stop[0] - x0, bh = t->out.stop[1] - y0;
  size_t npix = (size_t)bw * (size_t)bh;
  double *acc = NULL, *accf = NULL, *vals = NULL;
  int *cnt = NULL, nimg = 0, rc = 0;

  /* The images this block reads (their data windows), in input order. */
  for (int i = 0; i < cp->n; i++)
    nimg += t->in[cp->first[i]].data != NULL;
  acc = tsr__calloc(t->ctx, npix, sizeof *acc);
  accf = tsr__calloc(t->ctx, npix, sizeof *accf);
  cnt = tsr__calloc(t->ctx, npix, sizeof *cnt);
  if (cp->combine == TSR_COMBINE_MEDIAN && nimg > 0)
    vals = tsr__mallocarray(t->ctx, npix * (size_t)nimg, sizeof *vals);
  if (acc == NULL || accf == NULL || cnt == NULL ||
      (cp->combine == TSR_COMBINE_MEDIAN && nimg > 0 && vals == NULL)) {
    rc = tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for a block of %zu pixels", n->name, npix);
    goto out;
  }
  for (int i = 0; i < cp->n; i++) {
    const tsr__window_t *wd = &t->in[cp->first[i]], *wf = wd + 1;
    const tsr__window_t *ww = cp->has_weight[i] ? wd + 2 : NULL;
    if (wd->data == NULL)
      continue;
    for (int64_t y = wd->win.start[1]; y < wd->win.stop[1]; y++)
      for (int64_t x = wd->win.start[0]; x < wd->win.stop[0]; x++) {
        double a = value_at(wd, x, y), f = value_at(wf, x, y);
        size_t k = (size_t)((y - y0) * bw + (x - x0));
        if (a != a || !(f == f))
          continue; /* reproject: NaN values get footprint 0 */
        if (ww) {
          double w = ww->data ? value_at(ww, x, y) : 0.0;
          f *= w == w ? w : 0.0;
        }
        /* mean and sum add any nonzero footprint, as reproject does; the
         * others take the inputs that cover the pixel. */
        if (f == 0 || (!(f > 0) && cp->combine != TSR_COMBINE_MEAN &&
                       cp->combine != TSR_COMBINE_SUM))
          continue;
        a -= cp->offset[i];
        switch (cp->combine) {
        case TSR_COMBINE_MEAN:
        case TSR_COMBINE_SUM:
          acc[k] += a * f;
          accf[k] += f;
          cnt[k] = 1;
          break;
        case TSR_COMBINE_FIRST:
          if (!cnt[k])
            acc[k] = a, accf[k] = f, cnt[k] = 1;
          break;
        case TSR_COMBINE_LAST:
          acc[k] = a, accf[k] = f, cnt[k] = 1;
          break;
        case TSR_COMBINE_MIN:
          if (!cnt[k] || a < acc[k])
            acc[k] = a, accf[k] = f, cnt[k] = 1;
          break;
        case TSR_COMBINE_MAX:
          if (!cnt[k] || a > acc[k])
            acc[k] = a, accf[k] = f, cnt[k] = 1;
          break;
        case TSR_COMBINE_MEDIAN:
          vals[k * (size_t)nimg + (size_t)cnt[k]++] = a;
          accf[k] += f;
          break;
        }
      }
  }
  for (int64_t y = 0; y < bh; y++)
    for (int64_t x = 0; x < bw; x++) {
      size_t k = (size_t)(y * bw + x), off = tsr__task_offset(t, x, y, 0, 0);
      double v = cp->blank;
      if (cnt[k]) {
        switch (cp->combine) {
        case TSR_COMBINE_MEAN:
          v = accf[k] != 0 ? acc[k] / accf[k] : cp->blank;
          break;
        case TSR_COMBINE_MEDIAN: {
          double *s = vals + k * (size_t)nimg;
          int c = cnt[k];
          qsort(s, (size_t)c, sizeof *s, cmp_double);
          v = c % 2 ? s[c / 2] : 0.5 * (s[c / 2 - 1] + s[c / 2]);
          break;
        }
        default:
          v = acc[k];
        }
      }
      store(t, 0, off, v);
      store(t, 1, off, accf[k]);
    }
out:
  tsr__free(t->ctx, acc);
  tsr__free(t->ctx, accf);
  tsr__free(t->ctx, cnt);
  tsr__free(t->ctx, vals);
  return rc;
}

static const tsr__op_t coadd_op = {
    .name = "coadd",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = coadd_input_region,
    .compute = coadd_compute,
    .encode = params_encode,
    .free_params = params_free,
};

int tsr_combine_parse(const char *s) {
  static const char *const names[] = {"mean", "sum", "first", "last", "min", "max", "median"};
  for (int i = 0; s && i < 7; i++)
    if (strcmp(s, names[i]) == 0)
      return i;
  return -1;
}

const char *tsr_combine_name(tsr_combine_t c) {
  static const char *const names[] = {"mean", "sum", "first", "last", "min", "max", "median"};
  return c >= 0 && c < 7 ? names[c] : "unknown";
}

/* The box of the target's pixels that reprojection `r` may cover: its
 * input's edges sampled at 11 points each (corners included, at the pixel
 * edges), mapped into the target, rounded as reproject does; the whole
 * target when a sample has no position or r is not a reprojection. */
static int cover_box(tsr_ctx_t *ctx, const tsr_node_t *r, int64_t box[4]) {
  const tsr_node_t *o = r->owner, *src;
  tsr__cel_t *cin = NULL, *cout = NULL;
  double x[44], y[44], v[44 * 3], lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
  int rc = 0;

  box[0] = 0, box[1] = r->shape[0], box[2] = 0, box[3] = r->shape[1];
  if (!(o->op && (o->op->flags & TSR__OP_REPROJECT)) || o->inputs[0]->wcs == NULL || o->wcs == NULL)
    return 0;
  src = o->inputs[0];
  if ((rc = tsr__cel_open(ctx, src->wcs, "mosaic input", true, &cin)) != 0 ||
      (rc = tsr__cel_open(ctx, o->wcs, "mosaic target", true, &cout)) != 0)
    goto out;
  for (int k = 0; k < 11; k++) {
    double fx = -0.5 + (double)src->shape[0] * k / 10.0, fy = -0.5 + (double)src->shape[1] * k / 10.0;
    x[k] = fx, y[k] = -0.5;
    x[11 + k] = fx, y[11 + k] = (double)src->shape[1] - 0.5;
    x[22 + k] = -0.5, y[22 + k] = fy;
    x[33 + k] = (double)src->shape[0] - 0.5, y[33 + k] = fy;
  }
  tsr__cel_pix2vec(cin, 44, x, y, v);
  {
    tsr__frame_xform_t xf;
    tsr__frame_xform(tsr__cel_frame(cin), tsr__cel_frame(cout), &xf);
    tsr__frame_apply(&xf, 44, v);
  }
  tsr__cel_vec2pix(cout, 44, v, x, y);
  for (int k = 0; k < 44; k++) {
    if (!(isfinite(x[k]) && isfinite(y[k])))
      goto out; /* off the target's valid region: the whole target */
    lo[0] = fmin(lo[0], x[k]), hi[0] = fmax(hi[0], x[k]);
    lo[1] = fmin(lo[1], y[k]), hi[1] = fmax(hi[1], y[k]);
  }
  for (int a = 0; a < 2; a++) {
    double l = floor(lo[a] + 0.5), h = ceil(hi[a] + 0.5);
    box[2 * a] = l < 0 ? 0 : l > (double)r->shape[a] ? r->shape[a] : (int64_t)l;
    box[2 * a + 1] = h < 0 ? 0 : h > (double)r->shape[a] ? r->shape[a] : (int64_t)h;
  }
out:
  tsr__cel_free(cin);
  tsr__cel_free(cout);
  return rc;
}

static bool same_grid(const tsr_node_t *a, const tsr_node_t *b) {
  /* 2-D images on one target grid, or 1-D HEALPix maps of one layout. */
  if (a->shape[0] != b->shape[0] || a->shape[1] != b->shape[1] || a->ndim != b->ndim ||
      a->ndim > 2)
    return false;
  if ((a->wcs == NULL) != (b->wcs == NULL))
    return false;
  return a->wcs == NULL || (a->wcs->ncards == b->wcs->ncards &&
                            memcmp(a->wcs->cards, b->wcs->cards, (size_t)a->wcs->ncards * 80) == 0);
}

tsr_node_t *tsr_coadd(tsr_graph_t *g, int n, tsr_node_t *const *inputs, tsr_node_t *const *weights,
                      const tsr_coadd_opts_t *opts) {
  tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
  coadd_params_t *cp;
  tsr_node_t *node;
  tsr_ctx_t *ctx;
  int nin = 0, k = 0;
  bool f64 = false;

  if (!tsr__graph_check(g))
    return NULL;
  ctx = g->ctx;
  if (opts)
    o = *opts;
  if (n < 1 || inputs == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "coadd: %d inputs; expected at least 1", n);
  if ((int)o.combine < TSR_COMBINE_MEAN || (int)o.combine > TSR_COMBINE_MEDIAN)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "coadd: combine %d out of range (mean, sum, first, last, min, max, median)",
                           o.combine);
  if (o.dtype != 0 && o.dtype != TSR_F32 && o.dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "coadd: dtype %d is not float32 or float64", o.dtype);
  for (int a = 0; a < 2; a++)
    if (o.block[a] < 0 || o.block[a] > (1 << 20))
      return tsr__graph_fail(g, TSR_EINVAL, "coadd: block size %lld out of range [1, 1048576]",
                             (long long)o.block[a]);
  for (int i = 0; i < n; i++) {
    tsr_node_t *in = inputs[i], *w = weights ? weights[i] : NULL;
    if (in == NULL)
      return tsr__graph_fail(g, TSR_EINVAL, "coadd: input %d is NULL", i + 1);
    if (in->owner != in || in->n_planes < 2)
      return tsr__graph_fail(g, TSR_EINVAL,
                             "coadd: input %d (%s) is not the data node of a reprojection (it has "
                             "no footprint plane)",
                             i + 1, in->name);
    if (!same_grid(in, inputs[0]))
      return tsr__graph_fail(g, TSR_EINVAL,
                             "coadd: input %d (%s, %lld x %lld) is not on the pixel grid of input 1 "
                             "(%s, %lld x %lld): reproject every input onto the same 2-D target (or "
                             "HEALPix map: nside, ordering and frame)",
                             i + 1, in->name, (long long)in->shape[0], (long long)in->shape[1],
                             inputs[0]->name, (long long)inputs[0]->shape[0],
                             (long long)inputs[0]->shape[1]);
    if (w && (w->shape[0] != in->shape[0] || w->shape[1] != in->shape[1] || w->ndim != in->ndim))
      return tsr__graph_fail(g, TSR_EINVAL,
                             "coadd: weight %d (%s, %lld x %lld) does not match its input's shape "
                             "%lld x %lld",
                             i + 1, w->name, (long long)w->shape[0], (long long)w->shape[1],
                             (long long)in->shape[0], (long long)in->shape[1]);
    if (o.offsets && !isfinite(o.offsets[i]))
      return tsr__graph_fail(g, TSR_EINVAL, "coadd: offset %d is not finite", i + 1);
    nin += 2 + (w != NULL);
    f64 |= in->dtype == TSR_F64;
  }
  cp = tsr__calloc(ctx, 1, sizeof *cp);
  if (cp == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "coadd: out of memory");
  cp->n = n;
  cp->combine = o.combine;
  cp->blank = o.blank;
  cp->image = tsr__calloc(ctx, (size_t)nin, sizeof *cp->image);
  cp->role = tsr__calloc(ctx, (size_t)nin, sizeof *cp->role);
  cp->first = tsr__calloc(ctx, (size_t)n, sizeof *cp->first);
  cp->has_weight = tsr__calloc(ctx, (size_t)n, sizeof *cp->has_weight);
  cp->box = tsr__calloc(ctx, (size_t)n, sizeof *cp->box);
  cp->offset = tsr__calloc(ctx, (size_t)n, sizeof *cp->offset);
  if (!cp->image || !cp->role || !cp->first || !cp->has_weight || !cp->box || !cp->offset) {
    params_free(ctx, cp);
    return tsr__graph_fail(g, TSR_ENOMEM, "coadd: out of memory");
  }
  for (int i = 0; i < n; i++) {
    int rc = cover_box(ctx, inputs[i], cp->box[i]);
    if (rc != 0) {
      tsr__err_prefix(ctx, "coadd: input %d", i + 1);
      params_free(ctx, cp);
      return tsr__graph_fail_ctx(g, rc);
    }
    cp->offset[i] = o.offsets ? o.offsets[i] : 0.0;
  }
  node = tsr__node_alloc(g, &coadd_op, cp);
  if (node == NULL)
    return NULL;
  if (tsr__node_set_inputs(node, nin) != 0) {
    tsr__node_discard(node);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    tsr_node_t *fp = tsr_footprint(g, inputs[i]);
    tsr_node_t *w = weights ? weights[i] : NULL;
    if (fp == NULL) {
      tsr__node_discard(node);
      return NULL;
    }
    cp->first[i] = k;
    cp->image[k] = i, cp->role[k] = ROLE_DATA, node->inputs[k++] = inputs[i];
    cp->image[k] = i, cp->role[k] = ROLE_FOOTPRINT, node->inputs[k++] = fp;
    if (w) {
      cp->has_weight[i] = 1;
      cp->image[k] = i, cp->role[k] = ROLE_WEIGHT, node->inputs[k++] = w;
    }
  }
  node->ndim = inputs[0]->ndim;
  node->n_planes = 2;
  node->dtype = o.dtype ? (tsr_dtype_t)o.dtype : f64 ? TSR_F64 : TSR_F32;
  node->shape[0] = inputs[0]->shape[0];
  node->shape[1] = inputs[0]->shape[1];
  node->chunk[0] = o.block[0] ? o.block[0] : inputs[0]->chunk[0];
  node->chunk[1] = o.block[1] ? o.block[1] : inputs[0]->chunk[1];
  if (inputs[0]->wcs && tsr_wcs_copy(ctx, inputs[0]->wcs, &node->wcs) != 0) {
    tsr__node_discard(node);
    return tsr__graph_fail(g, TSR_ENOMEM, "coadd: out of memory");
  }
  return tsr__node_finish(node);
}

/* ------------------------------------------------------------------ */
/* Background matching                                                 */

/* Values of node n (data plane or another) over region r, as doubles. */
static int fetch(tsr_graph_t *g, tsr_node_t *n, const tsr_region_t *r, const tsr_run_opts_t *run,
                 double *out) {
  size_t count = (size_t)tsr_region_size(r);
  if (n->dtype == TSR_F64)
    return tsr_compute(g, n, r, out, count * sizeof(double), run);
  {
    /* float32 into the top half, widened in place from the start: out[k]
     * overwrites only floats of index below k, already read. */
    float *f = (float *)out + count;
    int rc = tsr_compute(g, n, r, f, count * sizeof(float), run);
    for (size_t k = 0; rc == 0 && k < count; k++)
      out[k] = (double)f[k];
    return rc;
  }
}

/* Solve the dense m x m system A x = b in place (Gaussian elimination with
 * partial pivoting); false if singular. */
static bool solve(double *A, double *b, int m) {
  for (int c = 0; c < m; c++) {
    int p = c;
    for (int r = c + 1; r < m; r++)
      if (fabs(A[r * m + c]) > fabs(A[p * m + c]))
        p = r;
    if (!(fabs(A[p * m + c]) > 1e-300))
      return false;
    if (p != c) {
      for (int k = 0; k < m; k++) {
        double t = A[c * m + k];
        A[c * m + k] = A[p * m + k], A[p * m + k] = t;
      }
      double t = b[c];
      b[c] = b[p], b[p] = t;
    }
    for (int r = c + 1; r < m; r++) {
      double f = A[r * m + c] / A[c * m + c];
      for (int k = c; k < m; k++)
        A[r * m + k] -= f * A[c * m + k];
      b[r] -= f * b[c];
    }
  }
  for (int c = m - 1; c >= 0; c--) {
    double s = b[c];
    for (int k = c + 1; k < m; k++)
      s -= A[c * m + k] * b[k];
    b[c] = s / A[c * m + c];
  }
  return true;
}

int tsr_coadd_match_background(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                               tsr_node_t *const *weights, int reference,
                               const tsr_run_opts_t *run, double *offsets) {
  tsr_ctx_t *ctx;
  int64_t (*box)[4] = NULL;
  double *O = NULL, *A = NULL, *b = NULL, *buf = NULL, *diff = NULL;
  int *comp = NULL, *idx = NULL;
  int rc = 0;

  tsr__api_check(g != NULL && offsets != NULL, "tsr_coadd_match_background: NULL argument");
  ctx = g->ctx;
  if (!tsr__graph_check(g))
    return tsr__err(ctx, TSR_ESTATE, "match_background: the graph has an error: %s", g->errmsg);
  if (n < 1 || inputs == NULL)
    return tsr__err(ctx, TSR_EINVAL, "match_background: %d inputs; expected at least 1", n);
  if (reference >= n)
    return tsr__err(ctx, TSR_EINVAL,
                    "match_background: reference %d out of range [1, %d] (or none)", reference + 1, n);
  for (int i = 0; i < n; i++) {
    offsets[i] = 0.0;
    if (inputs[i] == NULL || inputs[i]->owner != inputs[i] || inputs[i]->n_planes < 2 ||
        !same_grid(inputs[i], inputs[0]))
      return tsr__err(ctx, TSR_EINVAL,
                      "match_background: input %d is not a reprojection onto input 1's grid", i + 1);
  }
  box = tsr__calloc(ctx, (size_t)n, sizeof *box);
  O = tsr__mallocarray(ctx, (size_t)n * (size_t)n, sizeof *O);
  comp = tsr__calloc(ctx, (size_t)n, sizeof *comp);
  idx = tsr__calloc(ctx, (size_t)n, sizeof *idx);
  if (!box || !O || !comp || !idx) {
    rc = tsr__err(ctx, TSR_ENOMEM, "match_background: out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++)
    if ((rc = cover_box(ctx, inputs[i], box[i])) != 0)
      goto out;
  /* The median difference over each overlap, where both footprints (times
   * the weights) are > 0 and both values are finite. */
  for (int i = 0; i < n * n; i++)
    O[i] = NAN;
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) {
      tsr_region_t r = tsr_region_of(inputs[i]);
      size_t count, nd = 0;
      r.start[0] = box[i][0] > box[j][0] ? box[i][0] : box[j][0];
      r.stop[0] = box[i][1] < box[j][1] ? box[i][1] : box[j][1];
      r.start[1] = box[i][2] > box[j][2] ? box[i][2] : box[j][2];
      r.stop[1] = box[i][3] < box[j][3] ? box[i][3] : box[j][3];
      if (r.start[0] >= r.stop[0] || r.start[1] >= r.stop[1])
        continue;
      count = (size_t)tsr_region_size(&r);
      tsr__free(ctx, buf);
      tsr__free(ctx, diff);
      buf = tsr__mallocarray(ctx, count * 6, sizeof *buf);
      diff = tsr__mallocarray(ctx, count, sizeof *diff);
      if (buf == NULL || diff == NULL) {
        rc = tsr__err(ctx, TSR_ENOMEM, "match_background: out of memory for an overlap of %zu pixels",
                      count);
        goto out;
      }
      {
        tsr_node_t *nodes[6] = {inputs[i], tsr_footprint(g, inputs[i]), inputs[j],
                                tsr_footprint(g, inputs[j]), weights ? weights[i] : NULL,
                                weights ? weights[j] : NULL};
        for (int q = 0; q < 6; q++) {
          double *dst = buf + (size_t)q * count;
          if (nodes[q] == NULL) {
            for (size_t k = 0; k < count; k++)
              dst[k] = 1.0;
          } else if ((rc = fetch(g, nodes[q], &r, run, dst)) != 0) {
            goto out;
          }
        }
      }
      for (size_t k = 0; k < count; k++) {
        double ai = buf[k], fi = buf[count + k], aj = buf[2 * count + k], fj = buf[3 * count + k];
        double wi = buf[4 * count + k], wj = buf[5 * count + k];
        fi *= wi == wi ? wi : 0.0;
        fj *= wj == wj ? wj : 0.0;
        if (ai == ai && aj == aj && fi > 0 && fj > 0)
          diff[nd++] = ai - aj;
      }
      if (nd == 0)
        continue;
      qsort(diff, nd, sizeof *diff, cmp_double);
      O[i * n + j] = nd % 2 ? diff[nd / 2] : 0.5 * (diff[nd / 2 - 1] + diff[nd / 2]);
      O[j * n + i] = -O[i * n + j];
    }
  /* Least squares, component by component of the overlap graph: each has
   * its offsets fixed by the reference, or by a zero mean. */
  for (int i = 0; i < n; i++)
    comp[i] = -1;
  for (int s = 0, nc = 0; s < n; s++) {
    int m = 0, ref = -1;
    if (comp[s] >= 0)
      continue;
    /* Gather the component of s (a breadth-first walk over idx). */
    comp[s] = nc;
    idx[m++] = s;
    for (int h = 0; h < m; h++)
      for (int j = 0; j < n; j++)
        if (comp[j] < 0 && O[idx[h] * n + j] == O[idx[h] * n + j])
          comp[j] = nc, idx[m++] = j;
    nc++;
    if (m == 1)
      continue; /* overlaps nothing: no offset */
    tsr__free(ctx, A);
    tsr__free(ctx, b);
    A = tsr__calloc(ctx, (size_t)m * (size_t)m, sizeof *A);
    b = tsr__calloc(ctx, (size_t)m, sizeof *b);
    if (A == NULL || b == NULL) {
      rc = tsr__err(ctx, TSR_ENOMEM, "match_background: out of memory");
      goto out;
    }
    for (int p = 0; p < m; p++) {
      if (idx[p] == reference)
        ref = p;
      for (int q = 0; q < m; q++) {
        double o = O[idx[p] * n + idx[q]];
        if (p != q && o == o) {
          A[p * m + p] += 1.0;
          A[p * m + q] -= 1.0;
          b[p] += o;
        }
      }
    }
    if (ref >= 0) {
      for (int q = 0; q < m; q++)
        A[ref * m + q] = q == ref;
      b[ref] = 0.0;
    } else {
      for (int k = 0; k < m * m; k++)
        A[k] += 1.0; /* 1^T c = 0: the rows of the Laplacian sum to zero */
    }
    if (!solve(A, b, m)) {
      rc = tsr__err(ctx, TSR_EINVAL, "match_background: the offsets have no unique solution");
      goto out;
    }
    for (int p = 0; p < m; p++)
      offsets[idx[p]] = b[p];
  }
out:
  tsr__free(ctx, box);
  tsr__free(ctx, O);
  tsr__free(ctx, A);
  tsr__free(ctx, b);
  tsr__free(ctx, buf);
  tsr__free(ctx, diff);
  tsr__free(ctx, comp);
  tsr__free(ctx, idx);
  return rc;
}
