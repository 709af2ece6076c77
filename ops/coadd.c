/* coadd.c -- mosaics: reproject_and_coadd as one node of the lazy graph,
 * with reproject's and SWarp's ways of combining.
 *
 * reproject reprojects every input onto its own cutout of the target, keeps
 * all the cutouts, then adds them up; SWarp resamples every input to disk,
 * then reads back a buffer of output lines from all of them at once.  Here
 * a mosaic is a node whose inputs are the reprojections themselves (data
 * and footprint planes, weight maps, data-quality maps), all on the target's
 * pixel grid.  Each input carries a box: where its edges, sampled at 11
 * points each and mapped into the target, say it can land.  A block of the
 * mosaic asks only the inputs whose box it meets, for only that part, so a
 * region computes only the blocks and input windows it needs, and memory is
 * bounded by one block of each input that covers it: a median or clipped
 * combine gathers the stack of one pixel at a time from those windows (the
 * stack is as deep as the inputs covering the block), never the inputs
 * whole.  Inputs are combined in their given order whatever the block, so
 * every block size gives the same bits.
 *
 * SWarp carries variances, not weights: a weight w is a variance 1/w, and
 * its combines (coadd_line in SWarp 2.41's coadd.c) are written here from
 * that reading, one pixel at a time (combine_pixel).  The weight map,
 * variance and data quality of a mosaic are the same op with another
 * `product` parameter: each is a node of its own (tsr_coadd_product), so the
 * cache and regions treat them as any other; asking for several computes
 * the combine once for each.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "reproject.h"
#include "sky.h"

/* Roles of the node's inputs, image by image. */
enum { ROLE_DATA = 0, ROLE_FOOTPRINT = 1, ROLE_WEIGHT = 2, ROLE_DQ = 3 };

/* SWarp's BIG: a variance at least this large is no weight at all. */
#define SWARP_BIG 1e30

typedef struct {
  int n;                   /* images */
  int combine;             /* tsr_combine_t */
  int product;             /* tsr_coadd_product_t */
  double blank;
  double clip_sigma, clip_ampfrac;
  int *image;              /* per node input: its image */
  int *role;               /* per node input: ROLE_* */
  int *first;              /* per image: index of its data input */
  int *has_weight;         /* per image */
  int *has_dq;             /* per image */
  int64_t (*box)[4];       /* per image: x0, x1, y0, y1 it may cover */
  double *offset;          /* per image, subtracted from its values */
  double *inv_gain;        /* per image: 1 / gain, 0 for an infinite (or unknown) gain */
} coadd_params_t;

static void params_free(tsr_ctx_t *ctx, void *p) {
  coadd_params_t *cp = p;
  if (cp == NULL)
    return;
  tsr__free(ctx, cp->image);
  tsr__free(ctx, cp->role);
  tsr__free(ctx, cp->first);
  tsr__free(ctx, cp->has_weight);
  tsr__free(ctx, cp->has_dq);
  tsr__free(ctx, cp->box);
  tsr__free(ctx, cp->offset);
  tsr__free(ctx, cp->inv_gain);
  tsr__free(ctx, cp);
}

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const coadd_params_t *cp = n->params;
  tsr__buf_put_i64(b, cp->n);
  tsr__buf_put_i64(b, cp->combine);
  tsr__buf_put_i64(b, cp->product);
  tsr__buf_put_f64(b, cp->blank);
  tsr__buf_put_f64(b, cp->clip_sigma);
  tsr__buf_put_f64(b, cp->clip_ampfrac);
  for (int i = 0; i < cp->n; i++) {
    tsr__buf_put_i64(b, cp->has_weight[i]);
    tsr__buf_put_i64(b, cp->has_dq[i]);
    tsr__buf_put_f64(b, cp->offset[i]);
    tsr__buf_put_f64(b, cp->inv_gain[i]);
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
  *empty = win->start[0] >= win->stop[0] || win->start[1] >= win->stop[1] ||
           (cp->role[i] == ROLE_DQ && cp->product != TSR_COADD_DQ);
  return 0;
}

static inline double value_at(const tsr__window_t *w, int64_t x, int64_t y) {
  return tsr__window_value(w, (size_t)((x - w->win.start[0]) + (y - w->win.start[1]) * w->stride[1]));
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median of s[0..n), n > 0, reordering s; an even count averages the
 * middle two (SWarp's fast_median gives the same). */
static double median_of(double *s, int n) {
  if (n < 16) {
    for (int i = 1; i < n; i++) {
      double v = s[i];
      int j = i;
      for (; j > 0 && s[j - 1] > v; j--)
        s[j] = s[j - 1];
      s[j] = v;
    }
  } else {
    qsort(s, (size_t)n, sizeof *s, cmp_double);
  }
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* SWarp's variance of the median of n values of variances summing to
 * `sum_var`, whose inverse standard deviations sum to `sum_isigma`
 * (Gaussian noise). */
static double median_variance(int n, double sum_isigma, double sum_var) {
  const double pi = 3.14159265358979323846;
  if (n > 2)
    return pi * n * n / (2 * sum_isigma * sum_isigma * (n + ((n & 1) ? pi / 2 - 1 : pi - 2)));
  return sum_var / ((double)n * n);
}

/* SWarp's chi_bias: the mean of a chi distribution of n degrees of freedom. */
static double chi_bias(int n) {
  double v = n * 0.5;
  return 1.41421356237 * exp(lgamma(v + 0.5) - lgamma(v));
}

/* One input at one output pixel. */
typedef struct {
  double v;      /* value, offset removed */
  double f;      /* footprint */
  double W;      /* weight map value (1 without one) */
  double w;      /* f W; SWarp's variance is 1 / w */
  double dq;     /* data quality (0 without) */
  int org;       /* image number */
} item_t;

/* What a pixel's combine gives. */
typedef struct {
  double value, fp, weight, var, dq;
  int defined;
} pix_t;

/* Where clip rejections go (tsr_coadd_clip_log), or NULL. */
typedef struct {
  tsr_clip_fn fn;
  void *ud;
  int rc;        /* fn's first nonzero code */
} clip_sink_t;

static void clip_emit(clip_sink_t *sink, int org, int64_t x, int64_t y, double mu) {
  if (sink && sink->rc == 0)
    sink->rc = sink->fn(sink->ud, org, x, y, mu);
}

static uint32_t as_flags(double v) {
  return v >= 0 && v < 4294967296.0 ? (uint32_t)v : (uint32_t)(int64_t)v;
}

/* Combine the n items of one pixel (x, y) into *o; tmp has room for n
 * doubles (and more: n again). */
static void combine_pixel(const coadd_params_t *cp, item_t *s, int n, double *tmp, pix_t *o,
                          clip_sink_t *sink, int64_t x, int64_t y) {
  double sw = 0, swv = 0, sv = 0, svar = 0;
  uint32_t dq = 0;
  o->value = cp->blank, o->fp = 0, o->weight = 0, o->var = NAN, o->dq = 0, o->defined = 0;
  if (n == 0)
    return;
  for (int i = 0; i < n; i++)
    dq |= as_flags(s[i].dq);
  o->defined = 1;
  o->dq = dq;
  switch (cp->combine) {
  case TSR_COMBINE_MEAN:
  case TSR_COMBINE_SUM:
    for (int i = 0; i < n; i++) {
      sw += s[i].w, swv += s[i].w * s[i].v;
      svar += s[i].w * s[i].w / s[i].W;
    }
    o->fp = sw;
    if (cp->combine == TSR_COMBINE_SUM) {
      o->value = swv, o->var = svar;
    } else if (sw != 0) {
      o->value = swv / sw, o->var = svar / (sw * sw);
    } else {
      o->defined = 0, o->value = cp->blank;
    }
    break;
  case TSR_COMBINE_FIRST:
  case TSR_COMBINE_LAST:
  case TSR_COMBINE_MIN:
  case TSR_COMBINE_MAX: {
    int k = 0;
    for (int i = 1; i < n; i++)
      if (cp->combine == TSR_COMBINE_LAST || (cp->combine == TSR_COMBINE_MIN && s[i].v < s[k].v) ||
          (cp->combine == TSR_COMBINE_MAX && s[i].v > s[k].v))
        k = i;
    o->value = s[k].v, o->fp = s[k].w, o->dq = as_flags(s[k].dq);
    if (cp->combine == TSR_COMBINE_FIRST || cp->combine == TSR_COMBINE_LAST)
      o->var = 1.0 / s[k].W;
    break;
  }
  case TSR_COMBINE_MEDIAN: {
    double ssig = 0;
    for (int i = 0; i < n; i++) {
      tmp[i] = s[i].v;
      sw += s[i].w, ssig += sqrt(s[i].w), svar += 1.0 / s[i].w;
    }
    o->value = median_of(tmp, n);
    o->fp = sw;
    o->var = median_variance(n, ssig, svar);
    break;
  }
  case TSR_COMBINE_WEIGHTED:
    for (int i = 0; i < n; i++)
      sw += s[i].w, swv += s[i].w * s[i].v;
    o->value = swv / sw, o->fp = sw, o->var = 1.0 / sw;
    break;
  case TSR_COMBINE_AVERAGE:
  case TSR_COMBINE_SUM_UNWEIGHTED:
    for (int i = 0; i < n; i++)
      sw += s[i].w, sv += s[i].v, svar += 1.0 / s[i].w;
    o->fp = sw;
    if (cp->combine == TSR_COMBINE_AVERAGE)
      o->value = sv / n, o->var = svar / ((double)n * n);
    else
      o->value = sv, o->var = svar;
    break;
  case TSR_COMBINE_CHI_OLD:
  case TSR_COMBINE_CHI_MODE:
  case TSR_COMBINE_CHI_MEAN: {
    double chi2 = 0;
    for (int i = 0; i < n; i++)
      sw += s[i].w, chi2 += s[i].v * s[i].v * s[i].w;
    o->fp = sw;
    if (cp->combine == TSR_COMBINE_CHI_OLD) {
      o->value = sqrt(chi2 / n);
    } else if (n == 1) {
      o->value = s[0].v * sqrt(s[0].w);
    } else {
      double mu = chi_bias(n);
      o->value = (sqrt(chi2) - (cp->combine == TSR_COMBINE_CHI_MODE ? sqrt(n - 1.0) : mu)) /
                 sqrt(n - mu * mu);
    }
    break;
  }
  case TSR_COMBINE_CLIPPED: {
    const double cs = cp->clip_sigma, af = cp->clip_ampfrac;
    if (n == 1) {
      o->value = s[0].v, o->fp = s[0].w, o->var = 1.0 / s[0].w;
      break;
    }
    if (n == 2) {
      double v1 = 1.0 / s[0].w, v2 = 1.0 / s[1].w, m = fabs(s[0].v + s[1].v) / 2;
      double sig = sqrt(v1 + v2 + m * (cp->inv_gain[s[0].org] + cp->inv_gain[s[1].org]));
      double d = s[0].v - s[1].v;
      if (fabs(d) <= cs * sig + af * m) {
        o->value = (s[0].v * v2 + s[1].v * v1) / (v1 + v2);
        o->var = v1 * v2 / (v1 + v2);
        o->fp = s[0].w + s[1].w;
      } else {
        double mu = (d > 0 ? 1.0 : -1.0) * (fabs(d) - af * m) / sig;
        clip_emit(sink, s[0].org, x, y, mu);
        clip_emit(sink, s[1].org, x, y, -mu);
        o->defined = 0, o->value = cp->blank, o->dq = 0;
      }
      break;
    }
    for (int i = 0; i < n; i++)
      tmp[i] = s[i].v;
    {
      double m = median_of(tmp, n), am = fabs(m);
      dq = 0;
      for (int i = 0; i < n; i++) {
        double var = 1.0 / s[i].w, sig = sqrt(var + am * cp->inv_gain[s[i].org]);
        double d = s[i].v - m;
        if (fabs(d) <= cs * sig + af * am) {
          sw += s[i].w, swv += s[i].w * s[i].v;
          dq |= as_flags(s[i].dq);
        } else {
          clip_emit(sink, s[i].org, x, y, (d > 0 ? 1.0 : -1.0) * fabs(fabs(d) - af * am) / sig);
        }
      }
    }
    if (sw > 0) {
      o->value = swv / sw, o->fp = sw, o->var = 1.0 / sw, o->dq = dq;
    } else {
      o->defined = 0, o->value = cp->blank, o->dq = 0;
    }
    break;
  }
  case TSR_COMBINE_WEIGHTED_WEIGHT:
  case TSR_COMBINE_MEDIAN_WEIGHT: {
    /* The values are weight maps: SWarp turns them into variances (BIG
     * where not positive) and gives the weight of the combined image. */
    double acc = 0, ssig = 0, swsig = 0, swvar = 0, var;
    for (int i = 0; i < n; i++) {
      double fv = s[i].v > 1.0 / SWARP_BIG ? 1.0 / s[i].v : SWARP_BIG;
      sw += s[i].w;
      acc += fv * s[i].w * s[i].w;
      ssig += 1.0 / sqrt(fv), svar += fv;
      swsig += sqrt(s[i].w), swvar += 1.0 / s[i].w;
    }
    o->fp = sw;
    if (cp->combine == TSR_COMBINE_WEIGHTED_WEIGHT) {
      var = acc / (sw * sw);
      o->weight = sw;
    } else {
      var = median_variance(n, ssig, svar);
      o->weight = 1.0 / median_variance(n, swsig, swvar);
    }
    o->value = var < SWARP_BIG / 1000.0 ? 1.0 / var : 0.0;
    return;
  }
  case TSR_COMBINE_AND:
  case TSR_COMBINE_NAND:
  case TSR_COMBINE_OR:
  case TSR_COMBINE_NOR: {
    int is_and = cp->combine == TSR_COMBINE_AND || cp->combine == TSR_COMBINE_NAND;
    uint32_t v = is_and ? 0xFFFFFFFFu : 0u;
    for (int i = 0; i < n; i++) {
      v = is_and ? v & as_flags(s[i].v) : v | as_flags(s[i].v);
      sw += s[i].w;
    }
    if (is_and && !(sw > 0))
      v = 0;
    if (cp->combine == TSR_COMBINE_NAND || cp->combine == TSR_COMBINE_NOR)
      v = ~v;
    o->value = v, o->fp = sw, o->weight = sw;
    return;
  }
  }
  if (!o->defined)
    return;
  switch (cp->combine) {
  case TSR_COMBINE_MIN:
  case TSR_COMBINE_MAX:
  case TSR_COMBINE_CHI_OLD:
  case TSR_COMBINE_CHI_MODE:
  case TSR_COMBINE_CHI_MEAN:
    o->weight = 1.0; /* SWarp's: these have no variance */
    break;
  default:
    o->weight = o->var > 0 ? 1.0 / o->var : 0.0;
  }
}

/* Does input item (value a, footprint f, weight w) count for this combine? */
static inline bool counts(int combine, double f, double w) {
  if (combine == TSR_COMBINE_MEAN || combine == TSR_COMBINE_SUM)
    return w != 0;
  if (combine >= TSR_COMBINE_AND)
    return f > 0;
  return w > 0;
}

/* Combine the box [x0, x0 + bw) x [y0, y0 + bh) from the windows `in` (one
 * per node input, as a task gets them): each pixel's result to `put`
 * (may be NULL) and rejections to `sink` (may be NULL).  0 or TSR_ENOMEM. */
typedef void (*put_fn)(void *ud, int64_t x, int64_t y, const pix_t *p);

static int combine_box(tsr_ctx_t *ctx, const char *name, const coadd_params_t *cp,
                       const tsr__window_t *in, int64_t x0, int64_t y0, int64_t bw, int64_t bh,
                       put_fn put, void *put_ud, clip_sink_t *sink) {
  item_t *st = tsr__mallocarray(ctx, (size_t)cp->n, sizeof *st);
  double *tmp = tsr__mallocarray(ctx, (size_t)cp->n, sizeof *tmp);
  int *act = tsr__mallocarray(ctx, (size_t)cp->n, sizeof *act);
  int rc = 0;
  if (st == NULL || tmp == NULL || act == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "%s: out of memory for a stack of %d inputs", name, cp->n);
    goto out;
  }
  for (int64_t y = y0; y < y0 + bh && (sink == NULL || sink->rc == 0); y++) {
    int m = 0;
    /* The images whose windows hold row y, in input order. */
    for (int i = 0; i < cp->n; i++) {
      const tsr__window_t *wd = &in[cp->first[i]];
      if (wd->data != NULL && y >= wd->win.start[1] && y < wd->win.stop[1])
        act[m++] = i;
    }
    for (int64_t x = x0; x < x0 + bw; x++) {
      pix_t p;
      int ns = 0;
      for (int k = 0; k < m; k++) {
        int i = act[k];
        const tsr__window_t *wd = &in[cp->first[i]], *wf = wd + 1;
        double a, f, W = 1.0;
        if (x < wd->win.start[0] || x >= wd->win.stop[0])
          continue;
        a = value_at(wd, x, y), f = value_at(wf, x, y);
        if (a != a || !(f == f))
          continue; /* reproject: NaN values get footprint 0 */
        if (cp->has_weight[i]) {
          const tsr__window_t *ww = wd + 2;
          W = ww->data ? value_at(ww, x, y) : 0.0;
          W = W == W ? W : 0.0;
        }
        if (!counts(cp->combine, f, f * W))
          continue;
        st[ns].v = cp->combine >= TSR_COMBINE_AND ? a : a - cp->offset[i];
        st[ns].f = f, st[ns].W = W, st[ns].w = f * W, st[ns].org = i;
        st[ns].dq = 0;
        if (cp->has_dq[i]) {
          const tsr__window_t *wq = wd + 2 + cp->has_weight[i];
          st[ns].dq = wq->data ? value_at(wq, x, y) : 0.0;
          st[ns].dq = st[ns].dq == st[ns].dq ? st[ns].dq : 0.0;
        }
        ns++;
      }
      combine_pixel(cp, st, ns, tmp, &p, sink, x, y);
      if (put)
        put(put_ud, x, y, &p);
    }
  }
out:
  tsr__free(ctx, st);
  tsr__free(ctx, tmp);
  tsr__free(ctx, act);
  return rc;
}

static void store(tsr__task_t *t, int p, size_t off, double v) {
  if (t->planes[p] == NULL)
    return;
  if (t->node->dtype == TSR_F32)
    ((float *)t->planes[p])[off] = (float)v;
  else
    ((double *)t->planes[p])[off] = v;
}

static void put_task(void *ud, int64_t x, int64_t y, const pix_t *p) {
  tsr__task_t *t = ud;
  const coadd_params_t *cp = t->node->params;
  size_t off = tsr__task_offset(t, x - t->out.start[0], y - t->out.start[1], 0, 0);
  double v = p->value;
  switch (cp->product) {
  case TSR_COADD_WEIGHT: v = p->weight; break;
  case TSR_COADD_VARIANCE: v = p->defined ? p->var : NAN; break;
  case TSR_COADD_DQ: v = p->dq; break;
  }
  store(t, 0, off, v);
  store(t, 1, off, p->fp);
}

static int coadd_compute(tsr__task_t *t) {
  const coadd_params_t *cp = t->node->params;
  return combine_box(t->ctx, t->node->name, cp, t->in, t->out.start[0], t->out.start[1],
                     t->out.stop[0] - t->out.start[0], t->out.stop[1] - t->out.start[1],
                     put_task, t, NULL);
}

static const tsr__op_t coadd_op = {
    .name = "coadd",
    .version = 2,
    .flags = TSR__OP_SUBBOX,
    .input_region = coadd_input_region,
    .compute = coadd_compute,
    .encode = params_encode,
    .free_params = params_free,
};

#define N_COMBINE (TSR_COMBINE_NOR + 1)
static const char *const combine_names[N_COMBINE] = {
    "mean",     "sum",      "first",    "last",    "min",             "max",          "median",
    "weighted", "average",  "sum-unweighted",      "chi-old",         "chi-mode",     "chi-mean",
    "clipped",  "weighted_weight",     "median_weight", "and",        "nand",         "or",
    "nor"};

int tsr_combine_parse(const char *s) {
  for (int i = 0; s && i < N_COMBINE; i++)
    if (strcasecmp(s, combine_names[i]) == 0)
      return i;
  return -1;
}

const char *tsr_combine_name(tsr_combine_t c) {
  return (int)c >= 0 && (int)c < N_COMBINE ? combine_names[c] : "unknown";
}

int tsr_combine_parse_swarp(const char *s) {
  static const struct {
    const char *name;
    int combine;
  } k[] = {{"MEDIAN", TSR_COMBINE_MEDIAN},     {"AVERAGE", TSR_COMBINE_AVERAGE},
           {"MIN", TSR_COMBINE_MIN},           {"MAX", TSR_COMBINE_MAX},
           {"WEIGHTED", TSR_COMBINE_WEIGHTED}, {"CLIPPED", TSR_COMBINE_CLIPPED},
           {"CHI_OLD", TSR_COMBINE_CHI_OLD},   {"CHI-OLD", TSR_COMBINE_CHI_OLD},
           {"CHI-MODE", TSR_COMBINE_CHI_MODE}, {"CHI-MEAN", TSR_COMBINE_CHI_MEAN},
           {"SUM", TSR_COMBINE_SUM_UNWEIGHTED}, {"WEIGHTED_WEIGHT", TSR_COMBINE_WEIGHTED_WEIGHT},
           {"MEDIAN_WEIGHT", TSR_COMBINE_MEDIAN_WEIGHT}, {"AND", TSR_COMBINE_AND},
           {"NAND", TSR_COMBINE_NAND},         {"OR", TSR_COMBINE_OR},
           {"NOR", TSR_COMBINE_NOR}};
  for (size_t i = 0; s && i < sizeof k / sizeof k[0]; i++)
    if (strcasecmp(s, k[i].name) == 0)
      return k[i].combine;
  return -1;
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

/* The mosaic node of `product`: tsr_coadd's checks and construction.  `box`
 * (may be NULL) gives the inputs' boxes when they are known already. */
static tsr_node_t *build(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                         tsr_node_t *const *weights, const tsr_coadd_opts_t *opts, int product,
                         const int64_t (*box)[4]) {
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
  if ((int)o.combine < 0 || (int)o.combine >= N_COMBINE)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "coadd: combine %d out of range [0, %d] (mean .. nor; see tsr_combine_t)",
                           (int)o.combine, N_COMBINE - 1);
  if (o.dtype != 0 && o.dtype != TSR_F32 && o.dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "coadd: dtype %d is not float32 or float64", o.dtype);
  if (!(o.clip_sigma >= 0 && o.clip_sigma < INFINITY) ||
      !(o.clip_ampfrac >= 0 && o.clip_ampfrac < INFINITY))
    return tsr__graph_fail(g, TSR_EINVAL,
                           "coadd: clip_sigma %g and clip_ampfrac %g: expected finite values >= 0",
                           o.clip_sigma, o.clip_ampfrac);
  if (product == TSR_COADD_DQ && o.dq == NULL)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "coadd: a data-quality product needs data-quality inputs (opts.dq)");
  for (int a = 0; a < 2; a++)
    if (o.block[a] < 0 || o.block[a] > (1 << 20))
      return tsr__graph_fail(g, TSR_EINVAL, "coadd: block size %lld out of range [1, 1048576]",
                             (long long)o.block[a]);
  for (int i = 0; i < n; i++) {
    tsr_node_t *in = inputs[i], *w = weights ? weights[i] : NULL, *q = o.dq ? o.dq[i] : NULL;
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
    for (int r = 0; r < 2; r++) {
      tsr_node_t *x = r ? q : w;
      if (x && (x->shape[0] != in->shape[0] || x->shape[1] != in->shape[1] || x->ndim != in->ndim))
        return tsr__graph_fail(g, TSR_EINVAL,
                               "coadd: %s %d (%s, %lld x %lld) does not match its input's shape "
                               "%lld x %lld",
                               r ? "data-quality map" : "weight", i + 1, x->name,
                               (long long)x->shape[0], (long long)x->shape[1],
                               (long long)in->shape[0], (long long)in->shape[1]);
    }
    if (o.offsets && !isfinite(o.offsets[i]))
      return tsr__graph_fail(g, TSR_EINVAL, "coadd: offset %d is not finite", i + 1);
    if (o.gains && !(o.gains[i] >= 0 && o.gains[i] < INFINITY))
      return tsr__graph_fail(g, TSR_EINVAL,
                             "coadd: gain %d is %g; expected e-/ADU >= 0 (0 = infinite)", i + 1,
                             o.gains[i]);
    nin += 2 + (w != NULL) + (q != NULL);
    f64 |= in->dtype == TSR_F64;
  }
  cp = tsr__calloc(ctx, 1, sizeof *cp);
  if (cp == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "coadd: out of memory");
  cp->n = n;
  cp->combine = o.combine;
  cp->product = product;
  cp->blank = o.blank;
  cp->clip_sigma = o.clip_sigma;
  cp->clip_ampfrac = o.clip_ampfrac;
  cp->image = tsr__calloc(ctx, (size_t)nin, sizeof *cp->image);
  cp->role = tsr__calloc(ctx, (size_t)nin, sizeof *cp->role);
  cp->first = tsr__calloc(ctx, (size_t)n, sizeof *cp->first);
  cp->has_weight = tsr__calloc(ctx, (size_t)n, sizeof *cp->has_weight);
  cp->has_dq = tsr__calloc(ctx, (size_t)n, sizeof *cp->has_dq);
  cp->box = tsr__calloc(ctx, (size_t)n, sizeof *cp->box);
  cp->offset = tsr__calloc(ctx, (size_t)n, sizeof *cp->offset);
  cp->inv_gain = tsr__calloc(ctx, (size_t)n, sizeof *cp->inv_gain);
  if (!cp->image || !cp->role || !cp->first || !cp->has_weight || !cp->has_dq || !cp->box ||
      !cp->offset || !cp->inv_gain) {
    params_free(ctx, cp);
    return tsr__graph_fail(g, TSR_ENOMEM, "coadd: out of memory");
  }
  for (int i = 0; i < n; i++) {
    int rc = 0;
    if (box)
      memcpy(cp->box[i], box[i], sizeof cp->box[i]);
    else
      rc = cover_box(ctx, inputs[i], cp->box[i]);
    if (rc != 0) {
      tsr__err_prefix(ctx, "coadd: input %d", i + 1);
      params_free(ctx, cp);
      return tsr__graph_fail_ctx(g, rc);
    }
    cp->offset[i] = o.offsets ? o.offsets[i] : 0.0;
    cp->inv_gain[i] = o.gains && o.gains[i] > 0 ? 1.0 / o.gains[i] : 0.0;
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
    tsr_node_t *w = weights ? weights[i] : NULL, *q = o.dq ? o.dq[i] : NULL;
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
    if (q) {
      cp->has_dq[i] = 1;
      cp->image[k] = i, cp->role[k] = ROLE_DQ, node->inputs[k++] = q;
    }
  }
  node->ndim = inputs[0]->ndim;
  node->n_planes = 2;
  /* Flags are 32-bit integers: float32 would round them. */
  node->dtype = o.dtype                                                          ? (tsr_dtype_t)o.dtype
                : f64 || o.combine >= TSR_COMBINE_AND || product == TSR_COADD_DQ ? TSR_F64
                                                                                 : TSR_F32;
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

tsr_node_t *tsr_coadd(tsr_graph_t *g, int n, tsr_node_t *const *inputs, tsr_node_t *const *weights,
                      const tsr_coadd_opts_t *opts) {
  return build(g, n, inputs, weights, opts, TSR_COADD_VALUE, NULL);
}

/* The inputs, weights, data-quality maps and options mosaic node `m` was
 * built from, into arrays of cp->n (the caller frees them). */
typedef struct {
  tsr_node_t **in, **w, **q;
  double *gains;
  tsr_coadd_opts_t o;
} unbuilt_t;

static void unbuilt_free(tsr_ctx_t *ctx, unbuilt_t *u) {
  tsr__free(ctx, u->in);
  tsr__free(ctx, u->w);
  tsr__free(ctx, u->q);
  tsr__free(ctx, u->gains);
}

static int unbuild(tsr_ctx_t *ctx, const tsr_node_t *m, unbuilt_t *u) {
  const coadd_params_t *cp = m->params;
  tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
  bool any_dq = false;
  memset(u, 0, sizeof *u);
  u->in = tsr__calloc(ctx, (size_t)cp->n, sizeof *u->in);
  u->w = tsr__calloc(ctx, (size_t)cp->n, sizeof *u->w);
  u->q = tsr__calloc(ctx, (size_t)cp->n, sizeof *u->q);
  u->gains = tsr__calloc(ctx, (size_t)cp->n, sizeof *u->gains);
  if (!u->in || !u->w || !u->q || !u->gains) {
    unbuilt_free(ctx, u);
    return tsr__err(ctx, TSR_ENOMEM, "coadd: out of memory");
  }
  for (int k = 0; k < m->n_inputs; k++) {
    int i = cp->image[k];
    switch (cp->role[k]) {
    case ROLE_DATA: u->in[i] = m->inputs[k]; break;
    case ROLE_WEIGHT: u->w[i] = m->inputs[k]; break;
    case ROLE_DQ: u->q[i] = m->inputs[k], any_dq = true; break;
    }
  }
  for (int i = 0; i < cp->n; i++)
    u->gains[i] = cp->inv_gain[i] > 0 ? 1.0 / cp->inv_gain[i] : 0.0;
  o.combine = (tsr_combine_t)cp->combine;
  o.blank = cp->blank;
  o.dtype = m->dtype;
  o.block[0] = m->chunk[0], o.block[1] = m->chunk[1];
  o.offsets = cp->offset;
  o.clip_sigma = cp->clip_sigma;
  o.clip_ampfrac = cp->clip_ampfrac;
  o.gains = u->gains;
  o.dq = any_dq ? u->q : NULL;
  u->o = o;
  return 0;
}

static bool is_mosaic(const tsr_node_t *m) {
  return m != NULL && m->owner == m && m->op == &coadd_op;
}

tsr_node_t *tsr_coadd_product(tsr_graph_t *g, tsr_node_t *mosaic, tsr_coadd_product_t what) {
  const coadd_params_t *cp;
  tsr_node_t *r;
  unbuilt_t u;
  bool any_w = false;
  if (!tsr__graph_check(g))
    return NULL;
  if (!is_mosaic(mosaic) || mosaic->graph != g)
    return tsr__graph_fail(g, TSR_EINVAL, "coadd_product: %s is not a mosaic (tsr_coadd) of this graph",
                           mosaic ? mosaic->name : "NULL");
  if ((int)what < TSR_COADD_VALUE || (int)what > TSR_COADD_DQ)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "coadd_product: product %d out of range (value, weight, variance, dq)",
                           (int)what);
  cp = mosaic->params;
  if ((int)what == cp->product)
    return mosaic;
  if (unbuild(g->ctx, mosaic, &u) != 0)
    return tsr__graph_fail_ctx(g, TSR_ENOMEM);
  for (int i = 0; i < cp->n; i++)
    any_w |= u.w[i] != NULL;
  /* A value product keeps the mosaic's dtype; the others follow the rule
   * of their own (DQ: float64). */
  if (what != TSR_COADD_VALUE && what != (tsr_coadd_product_t)cp->product)
    u.o.dtype = what == TSR_COADD_DQ ? TSR_F64 : mosaic->dtype;
  r = build(g, cp->n, u.in, any_w ? u.w : NULL, &u.o, what, (const int64_t(*)[4])cp->box);
  unbuilt_free(g->ctx, &u);
  return r;
}

/* Values of node n (data plane or another) over region r, as doubles. */
static int fetch(tsr_graph_t *g, tsr_node_t *n, const tsr_region_t *r, const tsr_run_opts_t *run,
                 double *out);

int tsr_coadd_clip_log(tsr_graph_t *g, tsr_node_t *mosaic, const tsr_region_t *region,
                       const tsr_run_opts_t *run, tsr_clip_fn fn, void *ud) {
  const coadd_params_t *cp;
  tsr_ctx_t *ctx;
  tsr_region_t all;
  tsr__window_t *win = NULL;
  double **bufs = NULL;
  clip_sink_t sink = {fn, ud, 0};
  /* Rows per band: enough that the per-input runs cost little, few enough
   * that a band of every input covering it stays small. */
  const int64_t band = 32;
  int rc = 0;

  tsr__api_check(g != NULL && fn != NULL, "tsr_coadd_clip_log: NULL argument");
  ctx = g->ctx;
  if (!tsr__graph_check(g))
    return tsr__err(ctx, TSR_ESTATE, "clip_log: the graph has an error: %s", g->errmsg);
  if (!is_mosaic(mosaic) || mosaic->graph != g ||
      ((const coadd_params_t *)mosaic->params)->combine != TSR_COMBINE_CLIPPED)
    return tsr__err(ctx, TSR_EINVAL, "clip_log: %s is not a clipped mosaic of this graph",
                    mosaic ? mosaic->name : "NULL");
  cp = mosaic->params;
  all = tsr_region_of(mosaic);
  if (region) {
    if (!tsr__region_within(region, 2, mosaic->shape))
      return tsr__err(ctx, TSR_EINVAL, "clip_log: the region is not inside the %lld x %lld mosaic",
                      (long long)mosaic->shape[0], (long long)mosaic->shape[1]);
    all = *region;
  }
  win = tsr__calloc(ctx, (size_t)mosaic->n_inputs, sizeof *win);
  bufs = tsr__calloc(ctx, (size_t)mosaic->n_inputs, sizeof *bufs);
  if (win == NULL || bufs == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "clip_log: out of memory");
    goto out;
  }
  for (int64_t y0 = all.start[1]; y0 < all.stop[1] && rc == 0 && sink.rc == 0; y0 += band) {
    tsr_region_t b = all;
    static const tsr_node_t f64 = {.dtype = TSR_F64};
    b.stop[1] = y0 + band < all.stop[1] ? y0 + band : all.stop[1];
    b.start[1] = y0;
    for (int k = 0; k < mosaic->n_inputs; k++) {
      bool empty;
      tsr__free(ctx, bufs[k]);
      bufs[k] = NULL;
      memset(&win[k], 0, sizeof win[k]);
      coadd_input_region(mosaic, NULL, k, &b, &win[k].win, &empty);
      if (empty || cp->role[k] == ROLE_DQ)
        continue;
      bufs[k] = tsr__mallocarray(ctx, (size_t)tsr_region_size(&win[k].win), sizeof(double));
      if (bufs[k] == NULL) {
        rc = tsr__err(ctx, TSR_ENOMEM, "clip_log: out of memory for a band of input %d",
                      cp->image[k] + 1);
        goto out;
      }
      if ((rc = fetch(g, mosaic->inputs[k], &win[k].win, run, bufs[k])) != 0)
        goto out;
      win[k].data = bufs[k];
      win[k].node = &f64;
      win[k].stride[0] = 1;
      win[k].stride[1] = win[k].win.stop[0] - win[k].win.start[0];
    }
    rc = combine_box(ctx, "clip_log", cp, win, b.start[0], b.start[1], b.stop[0] - b.start[0],
                     b.stop[1] - b.start[1], NULL, NULL, &sink);
  }
  if (rc == 0)
    rc = sink.rc;
out:
  for (int k = 0; bufs && k < mosaic->n_inputs; k++)
    tsr__free(ctx, bufs[k]);
  tsr__free(ctx, bufs);
  tsr__free(ctx, win);
  return rc;
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
