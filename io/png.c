/* png.c -- previews: a 2-D node as an 8-bit PNG with astropy's scalings.
 *
 * The image is shown max_size pixels on its longer side when it is larger:
 * every step-th pixel, with the largest integer step that keeps at least
 * max_size pixels, taken from the node's rows of chunks that hold a kept
 * row, one row of chunks at a time (memory stays one band wide, and only
 * the engine is asked, never ops/), then averaged down to exactly max_size
 * by box filtering (each output pixel the overlap-weighted mean of the
 * finite kept pixels it covers; NaN where none is).  It is scaled to [0, 1] by an interval (IRAF's zscale as astropy's
 * ZScaleInterval, min-max, or a central percentile), stretched (linear,
 * sqrt, log, asinh, with astropy's default parameters), and written as grey
 * plus alpha: NaN pixels are transparent.  FITS rows go bottom-up, PNG rows
 * top-down, so the rows are flipped.  The output is checked and created
 * (output.c) before anything is computed, and renamed when complete.
 */
#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

int tsr__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* astropy's ZScaleInterval(n_samples=1000, contrast=0.25, max_reject=0.5,
 * min_npixels=5, krej=2.5, max_iterations=5) on the n finite values v. */
static void zscale(tsr_ctx_t *ctx, const double *v, size_t n, double *lo, double *hi) {
  size_t stride = (size_t)fmax(1.0, (double)n / 1000.0), npix = 0;
  double *s = tsr__mallocarray(ctx, 1000, sizeof *s);
  unsigned char *bad = NULL, *grown = NULL;
  double slope = 0, icpt = 0;
  size_t ngood, last, minpix, ngrow;
  if (s == NULL)
    return;
  for (size_t k = 0; k < n && npix < 1000; k += stride)
    s[npix++] = v[k];
  qsort(s, npix, sizeof *s, tsr__cmp_double);
  *lo = s[0], *hi = s[npix - 1];
  minpix = (size_t)fmax(5.0, (double)(size_t)((double)npix * 0.5));
  ngrow = (size_t)fmax(1.0, (double)(size_t)((double)npix * 0.01));
  bad = tsr__calloc(ctx, npix, 1);
  grown = tsr__calloc(ctx, npix, 1);
  if (bad == NULL || grown == NULL)
    goto out;
  ngood = npix, last = npix + 1;
  for (int it = 0; it < 5; it++) {
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, mean = 0, var = 0, thr;
    size_t cnt = 0;
    if (ngood >= last || ngood < minpix)
      break;
    for (size_t k = 0; k < npix; k++)
      if (!bad[k]) {
        double x = (double)k;
        sw += 1, sx += x, sy += s[k], sxx += x * x, sxy += x * s[k];
      }
    slope = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
    icpt = (sy - slope * sx) / sw;
    for (size_t k = 0; k < npix; k++)
      if (!bad[k])
        mean += s[k] - (icpt + slope * (double)k), cnt++;
    mean /= (double)cnt;
    for (size_t k = 0; k < npix; k++)
      if (!bad[k]) {
        double d = s[k] - (icpt + slope * (double)k) - mean;
        var += d * d;
      }
    thr = 2.5 * sqrt(var / (double)cnt);
    for (size_t k = 0; k < npix; k++) {
      double f = s[k] - (icpt + slope * (double)k);
      if (f < -thr || f > thr)
        bad[k] = 1;
    }
    /* np.convolve(bad, ones(ngrow), mode='same'): grow each rejection. */
    for (size_t k = 0; k < npix; k++) {
      size_t a = k + (ngrow - 1) / 2 >= ngrow - 1 ? k + (ngrow - 1) / 2 - (ngrow - 1) : 0;
      size_t b = k + (ngrow - 1) / 2 < npix ? k + (ngrow - 1) / 2 : npix - 1;
      grown[k] = 0;
      for (size_t j = a; j <= b; j++)
        grown[k] |= bad[j];
    }
    memcpy(bad, grown, npix);
    last = ngood;
    ngood = 0;
    for (size_t k = 0; k < npix; k++)
      ngood += !bad[k];
  }
  if (ngood >= minpix) {
    double median = npix % 2 ? s[npix / 2] : 0.5 * (s[npix / 2 - 1] + s[npix / 2]);
    double center = (double)((npix - 1) / 2);
    slope /= 0.25;
    *lo = fmax(*lo, median - (center - 1) * slope);
    *hi = fmin(*hi, median + ((double)npix - center) * slope);
  }
out:
  tsr__free(ctx, s);
  tsr__free(ctx, bad);
  tsr__free(ctx, grown);
}

double tsr__percentile(const double *s, size_t n, double p) {
  double r = p / 100.0 * (double)(n - 1);
  size_t i = (size_t)r;
  return i + 1 < n ? s[i] + (r - (double)i) * (s[i + 1] - s[i]) : s[n - 1];
}

static double stretch(int kind, double v) {
  switch (kind) {
  case TSR_STRETCH_SQRT: return sqrt(v);
  case TSR_STRETCH_LOG: return log(1000.0 * v + 1.0) / log(1001.0);
  case TSR_STRETCH_ASINH: return asinh(v / 0.1) / asinh(10.0);
  default: return v;
  }
}

int tsr__png_encode(FILE *f, const double *img, int64_t nx, int64_t ny, double lo, double hi,
                    int kind, bool bottom_up, int zlevel, unsigned char *row) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (info == NULL) {
    png_destroy_write_struct(&png, NULL);
    return -1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return -1;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)nx, (png_uint_32)ny, 8, PNG_COLOR_TYPE_GRAY_ALPHA,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (zlevel >= 0) {
    /* Asked for speed: one filter, not libpng's per-row search of five
     * (half of its time on tiles). */
    png_set_compression_level(png, zlevel);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
  }
  png_write_info(png, info);
  for (int64_t k = 0; k < ny; k++) {
    int64_t y = bottom_up ? ny - 1 - k : k;
    for (int64_t x = 0; x < nx; x++) {
      double v = img[y * nx + x];
      if (!isfinite(v)) {
        row[2 * x] = 0, row[2 * x + 1] = 0;
        continue;
      }
      v = hi > lo ? (v - lo) / (hi - lo) : 0.0;
      v = stretch(kind, v < 0 ? 0 : v > 1 ? 1 : v);
      row[2 * x] = (unsigned char)lround(255.0 * (v < 0 ? 0 : v > 1 ? 1 : v));
      row[2 * x + 1] = 255;
    }
    png_write_row(png, row);
  }
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return 0;
}

/* Average src (snx x sny, NaN = no data) into dst (dnx x dny, each no larger
 * than its source axis): every destination pixel covers an equal interval
 * of source pixels, and takes the overlap-weighted mean of the finite ones
 * in its box. */
static void box_resample(const double *src, int64_t snx, int64_t sny, double *dst, int64_t dnx,
                         int64_t dny) {
  double fx = (double)snx / (double)dnx, fy = (double)sny / (double)dny;
  for (int64_t j = 0; j < dny; j++) {
    double y0 = (double)j * fy, y1 = y0 + fy;
    for (int64_t i = 0; i < dnx; i++) {
      double x0 = (double)i * fx, x1 = x0 + fx, sum = 0, wsum = 0;
      for (int64_t y = (int64_t)y0; y < sny && (double)y < y1; y++) {
        double wy = fmin(y1, (double)y + 1) - fmax(y0, (double)y);
        for (int64_t x = (int64_t)x0; x < snx && (double)x < x1; x++) {
          double v = src[y * snx + x], w = wy * (fmin(x1, (double)x + 1) - fmax(x0, (double)x));
          if (isfinite(v) && w > 0)
            sum += w * v, wsum += w;
        }
      }
      dst[j * dnx + i] = wsum > 0 ? sum / wsum : NAN;
    }
  }
}

int tsr_write_png(tsr_graph_t *g, tsr_node_t *n, const char *path, const tsr_preview_opts_t *opts) {
  tsr_preview_opts_t o = TSR_PREVIEW_OPTS_INIT;
  tsr_ctx_t *ctx;
  double *img = NULL, *fin = NULL, lo = 0, hi = 1;
  void *band = NULL;
  unsigned char *row = NULL;
  tsr__out_t out = {.fd = -1, .dirfd = -1};
  FILE *f = NULL;
  int64_t nx, ny, ox, oy, band_rows, step = 1, fit_x = 0, fit_y = 0;
  size_t nfin = 0;
  int rc = 0;

  tsr__api_check(g != NULL && path != NULL, "tsr_write_png: NULL argument");
  ctx = g->ctx;
  if (opts)
    o = *opts;
  if (!tsr__graph_check(g))
    return tsr__err(ctx, TSR_ESTATE, "preview: the graph has an error: %s", g->errmsg);
  if (n == NULL || n->ndim != 2)
    return tsr__err(ctx, TSR_EINVAL, "preview: expected a 2-D image%s%s",
                    n ? "; got one with axes: " : "", n ? (n->ndim > 2 ? "more than 2" : "1") : "");
  if ((int)o.stretch < TSR_STRETCH_LINEAR || o.stretch > TSR_STRETCH_ASINH || (int)o.scale < TSR_SCALE_ZSCALE ||
      o.scale > TSR_SCALE_PERCENT || (o.scale == TSR_SCALE_PERCENT && !(o.percent > 0 && o.percent <= 100)) ||
      o.max_size < 1)
    return tsr__err(ctx, TSR_EINVAL, "preview: bad options (stretch %d, scale %d, percent %g, "
                                     "max size %d)", o.stretch, o.scale, o.percent, o.max_size);
  nx = n->shape[0], ny = n->shape[1];
  {
    /* The largest step that keeps at least max_size on the longer side;
     * the box filter below takes it to exactly max_size. */
    int64_t longer = nx > ny ? nx : ny;
    if (longer > o.max_size) {
      step = longer / o.max_size;
      fit_x = nx >= ny ? o.max_size : (int64_t)fmax(1.0, round((double)nx * o.max_size / (double)longer));
      fit_y = ny > nx ? o.max_size : (int64_t)fmax(1.0, round((double)ny * o.max_size / (double)longer));
    }
  }
  ox = (nx + step - 1) / step, oy = (ny + step - 1) / step;
  /* A strided view (every step-th pixel from 0, as a[::step, ::step]) read
   * band by band: each band is one row of the node's chunks, so no chunk
   * is computed twice and memory stays one band wide. */
  band_rows = tsr_node_chunk(n, 1) < ny ? tsr_node_chunk(n, 1) : ny;
  img = tsr__mallocarray(ctx, (size_t)(ox * oy), sizeof *img);
  fin = tsr__mallocarray(ctx, (size_t)(ox * oy), sizeof *fin);
  row = tsr__mallocarray(ctx, (size_t)ox, 2);
  band = tsr__mallocarray(ctx, (size_t)(nx * band_rows), tsr_dtype_size(n->dtype));
  if (!img || !fin || !row || !band) {
    rc = tsr__err(ctx, TSR_ENOMEM, "preview: out of memory for %lld x %lld pixels", (long long)ox,
                  (long long)oy);
    goto out;
  }
  if ((rc = tsr__out_open(ctx, "preview", path, &out)) != 0)
    goto out;
  for (int64_t y0 = 0; y0 < ny; y0 += band_rows) {
    int64_t y1 = y0 + band_rows < ny ? y0 + band_rows : ny;
    int64_t ya = (y0 + step - 1) / step * step, yb = (y1 - 1) / step * step;
    tsr_region_t r = tsr_region_of(n);
    if (ya > yb)
      continue; /* no kept row in this band */
    r.start[1] = ya, r.stop[1] = yb + 1;
    if ((rc = tsr_compute(g, n, &r, band, (size_t)(nx * (yb + 1 - ya)) * tsr_dtype_size(n->dtype),
                          o.run)) != 0)
      goto out;
    for (int64_t y = ya; y <= yb; y += step) {
      double *dst = img + (y / step) * ox;
      if (n->dtype == TSR_F64) {
        const double *src = (const double *)band + (y - ya) * nx;
        for (int64_t x = 0; x < ox; x++)
          dst[x] = src[x * step];
      } else {
        const float *src = (const float *)band + (y - ya) * nx;
        for (int64_t x = 0; x < ox; x++)
          dst[x] = src[x * step];
      }
    }
  }
  nx = ox, ny = oy;
  if (fit_x > 0 && (fit_x != nx || fit_y != ny)) {
    /* fin is as large as img and not yet used: the averaged image goes there. */
    double *t;
    box_resample(img, nx, ny, fin, fit_x, fit_y);
    t = img, img = fin, fin = t;
    nx = fit_x, ny = fit_y;
  }
  for (int64_t k = 0; k < nx * ny; k++)
    if (isfinite(img[k]))
      fin[nfin++] = img[k];
  if (nfin > 0) {
    if (o.scale == TSR_SCALE_ZSCALE) {
      zscale(ctx, fin, nfin, &lo, &hi);
    } else {
      qsort(fin, nfin, sizeof *fin, tsr__cmp_double);
      lo = fin[0], hi = fin[nfin - 1];
      if (o.scale == TSR_SCALE_PERCENT) {
        lo = tsr__percentile(fin, nfin, (100.0 - o.percent) / 2);
        hi = tsr__percentile(fin, nfin, 100.0 - (100.0 - o.percent) / 2);
      }
    }
  }
  if ((f = tsr__out_stream(ctx, "preview", &out)) == NULL) {
    rc = TSR_EIO;
    goto out;
  }
  if (tsr__png_encode(f, img, nx, ny, lo, hi, o.stretch, true, -1, row) != 0) {
    rc = tsr__err(ctx, TSR_EIO, "preview: cannot write \"%s\" (libpng failed)", path);
    goto out;
  }
  if (fclose(f) != 0) {
    f = NULL;
    rc = tsr__err(ctx, TSR_EIO, "preview: cannot write \"%s\": %s", path, strerror(errno));
    goto out;
  }
  f = NULL;
  if ((rc = tsr__out_seal(ctx, "preview", &out)) == 0)
    rc = tsr__out_commit(ctx, "preview", &out);
out:
  if (f)
    fclose(f);
  tsr__out_discard(ctx, &out);
  tsr__free(ctx, img);
  tsr__free(ctx, fin);
  tsr__free(ctx, row);
  tsr__free(ctx, band);
  return rc;
}
