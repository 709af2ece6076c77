/* healpix_write.c -- HEALPix maps out to FITS binary tables
 * (tsr_write_healpix), the layout tsr_source_healpix (healpix.c), healpy,
 * astropy-healpix and reproject read.
 *
 * The file is an empty primary HDU and one BINTABLE.  Full-sky (implicit)
 * maps hold the values in index order, 1024 a row when the count allows
 * (else one), so each band of pixels is one contiguous run of the file and
 * is written at its place as soon as it is computed.  Partial (explicit)
 * maps hold (PIXEL, value) rows for the pixels with a finite value, in
 * index order; their count is known only at the end, so the rows are
 * appended band by band and NAXIS2, a fixed-width card, is written last.
 * Bands are whole chunks of the node, about BAND_VALUES values, computed on
 * one run (so a pool forks once), which bounds memory by a band whatever
 * the nside.  The file goes through output.c: a temporary, renamed over
 * the path when complete, never a half-written map under the final name.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hpx.h"
#include "io.h"

#define BLOCK 2880
#define BAND_VALUES ((int64_t)1 << 22)

typedef struct {
  tsr_ctx_t *ctx;
  tsr__out_t out;
  int64_t off;              /* where the next bytes go */
} hw_file_t;

static int put(hw_file_t *f, const void *p, size_t n) {
  const unsigned char *q = p;
  while (n > 0) {
    ssize_t k = pwrite(f->out.fd, q, n, (off_t)f->off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return tsr__err(f->ctx, TSR_EIO, "healpix: cannot write \"%s\": %s", f->out.path,
                      strerror(k < 0 ? errno : EIO));
    q += k, f->off += k, n -= (size_t)k;
  }
  return 0;
}

/* Zeros up to the next multiple of 2880 bytes (data padding). */
static int pad(hw_file_t *f, char fill) {
  char z[BLOCK];
  size_t n = (size_t)((BLOCK - f->off % BLOCK) % BLOCK);
  memset(z, fill, sizeof z);
  return n ? put(f, z, n) : 0;
}

/* Append an 80-column card to a header being built in h (at most cap
 * cards). */
static void card(char *h, int *k, const char *fmt, ...) TSR__PRINTF(3, 4);
static void card(char *h, int *k, const char *fmt, ...) {
  char c[81];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c, sizeof c, fmt, ap);
  va_end(ap);
  memset(h + (size_t)*k * 80, ' ', 80);
  memcpy(h + (size_t)*k * 80, c, strlen(c));
  (*k)++;
}

static void to_be(void *p, size_t n, size_t es) {
  unsigned char *b = p;
  for (size_t i = 0; i < n; i++, b += es) {
    if (es == 4) {
      uint32_t u;
      memcpy(&u, b, 4);
      u = __builtin_bswap32(u);
      memcpy(b, &u, 4);
    } else {
      uint64_t u;
      memcpy(&u, b, 8);
      u = __builtin_bswap64(u);
      memcpy(b, &u, 8);
    }
  }
}

int tsr_write_healpix(tsr_graph_t *g, tsr_node_t *n, const char *path, const tsr_region_t *region,
                      const tsr_healpix_write_opts_t *opts) {
  tsr_healpix_write_opts_t o = TSR_HEALPIX_WRITE_OPTS_INIT;
  tsr_ctx_t *ctx;
  tsr__run_t *run = NULL;
  tsr__mpi_t *mpi = NULL;
  hw_file_t f;
  tsr_region_t r;
  int64_t nside, count, repeat, band, naxis2_card = -1, rows = 0, data_start, rows_end;
  bool nested, wide;
  char coordsys, *hdr = NULL;
  unsigned char *buf = NULL, *rowbuf = NULL;
  size_t es;
  int rc, k = 0;

  tsr__api_check(g != NULL, "tsr_write_healpix: graph is NULL");
  ctx = g->ctx;
  memset(&f, 0, sizeof f);
  f.ctx = ctx;
  f.out.fd = f.out.dirfd = -1;
  if (opts)
    o = *opts;
  if (n == NULL || n->graph != g)
    return tsr__err(ctx, TSR_EINVAL, "write_healpix: node is NULL or from another graph");
  if (path == NULL || path[0] == '\0')
    return tsr__err(ctx, TSR_EINVAL, "write_healpix: path is NULL or empty");
  if (o.partial != 0 && o.partial != 1)
    return tsr__err(ctx, TSR_EINVAL, "write_healpix: partial %d; expected 0 (full sky) or 1", o.partial);
  if (o.column != NULL && (o.column[0] == '\0' || strlen(o.column) > 68 || strchr(o.column, '\'')))
    return tsr__err(ctx, TSR_EINVAL,
                    "write_healpix: column name \"%s\"; expected 1 to 68 characters without quotes",
                    o.column);
  if (n->ndim != 1 || !tsr__hpx_from_cards(n->wcs, &nside, &nested, &coordsys) ||
      n->shape[0] != tsr__hpx_npix(nside))
    return tsr__err(ctx, TSR_EINVAL,
                    "write_healpix: %s is not a HEALPix map (a 1-D node of 12 nside^2 values with "
                    "HEALPix cards: tsr_reproject_to_healpix, tsr_source_healpix or a mosaic of them)",
                    n->name);
  if ((rc = tsr__check_request(g, n, region, &r)) != 0)
    return rc;
  {
    bool served;
    if ((rc = tsr__mpi_enter(g, o.run, n, &r, &mpi, &served)) != 0 || served)
      return rc;
  }
  es = tsr_dtype_size(n->dtype);
  count = r.stop[0] - r.start[0];
  repeat = !o.partial && count % 1024 == 0 ? 1024 : 1;
  wide = tsr__hpx_npix(nside) > INT32_MAX;
  band = (BAND_VALUES + n->chunk[0] - 1) / n->chunk[0] * n->chunk[0];

  rc = TSR_ENOMEM;
  hdr = tsr__malloc(ctx, 2 * BLOCK);
  buf = tsr__mallocarray(ctx, (size_t)(band < count ? band : count), es);
  if (o.partial)
    rowbuf = tsr__mallocarray(ctx, (size_t)(band < count ? band : count), es + (wide ? 8 : 4));
  if (hdr == NULL || buf == NULL || (o.partial && rowbuf == NULL)) {
    tsr__err(ctx, rc, "write_healpix: out of memory");
    goto out;
  }
  if ((rc = tsr__out_open(ctx, "healpix", path, &f.out)) != 0)
    goto out;

  /* Primary HDU: no data. */
  card(hdr, &k, "SIMPLE  = %20s", "T");
  card(hdr, &k, "BITPIX  = %20d", 8);
  card(hdr, &k, "NAXIS   = %20d", 0);
  card(hdr, &k, "EXTEND  = %20s", "T");
  card(hdr, &k, "END");
  while (k % 36)
    card(hdr, &k, "%s", "");
  if ((rc = put(&f, hdr, (size_t)k * 80)) != 0)
    goto out;
  k = 0;
  {
    const char *col = o.column ? o.column : "SIGNAL";
    char vform = es == 4 ? 'E' : 'D';
    int64_t rowbytes = o.partial ? (wide ? 8 : 4) + (int64_t)es : repeat * (int64_t)es;
    card(hdr, &k, "XTENSION= 'BINTABLE'           / binary table extension");
    card(hdr, &k, "BITPIX  = %20d", 8);
    card(hdr, &k, "NAXIS   = %20d", 2);
    card(hdr, &k, "NAXIS1  = %20" PRId64 " / bytes a row", rowbytes);
    naxis2_card = k;
    card(hdr, &k, "NAXIS2  = %20" PRId64 " / rows", o.partial ? (int64_t)0 : count / repeat);
    card(hdr, &k, "PCOUNT  = %20d", 0);
    card(hdr, &k, "GCOUNT  = %20d", 1);
    card(hdr, &k, "TFIELDS = %20d", o.partial ? 2 : 1);
    if (o.partial) {
      card(hdr, &k, "TTYPE1  = 'PIXEL   '");
      card(hdr, &k, "TFORM1  = '%c       '", wide ? 'K' : 'J');
      card(hdr, &k, "TTYPE2  = '%-8s'", col);
      card(hdr, &k, "TFORM2  = '%c       '", vform);
    } else {
      card(hdr, &k, "TTYPE1  = '%-8s'", col);
      char form[24];
      snprintf(form, sizeof form, "%" PRId64 "%c", repeat, vform);
      card(hdr, &k, "TFORM1  = '%-8s'", form);
    }
    card(hdr, &k, "EXTNAME = 'xtension'");
    card(hdr, &k, "PIXTYPE = 'HEALPIX '           / HEALPIX pixelisation");
    card(hdr, &k, "ORDERING= '%-8s'           / pixel ordering scheme", nested ? "NESTED" : "RING");
    card(hdr, &k, "COORDSYS= '%c       '           / G galactic, C ICRS, E ecliptic", coordsys);
    card(hdr, &k, "NSIDE   = %20" PRId64 " / resolution parameter", nside);
    card(hdr, &k, "FIRSTPIX= %20" PRId64 " / first pixel # (0 based)", r.start[0]);
    card(hdr, &k, "LASTPIX = %20" PRId64 " / last pixel # (0 based)", r.stop[0] - 1);
    card(hdr, &k, "INDXSCHM= '%-8s'           / indexing: implicit or explicit",
         o.partial ? "EXPLICIT" : "IMPLICIT");
    card(hdr, &k, "OBJECT  = '%-8s'", o.partial ? "PARTIAL" : count == n->shape[0] ? "FULLSKY" : "PARTIAL");
    card(hdr, &k, "END");
    while (k % 36)
      card(hdr, &k, "%s", "");
  }
  data_start = rows_end = BLOCK + (int64_t)k * 80;
  if ((rc = put(&f, hdr, (size_t)k * 80)) != 0)
    goto out;
  if (!o.partial) {
    int64_t total = data_start + count * (int64_t)es;
    total += (BLOCK - total % BLOCK) % BLOCK;
    if ((rc = tsr__out_room(ctx, "healpix", &f.out, total, "")) != 0)
      goto out;
  }

  if ((rc = tsr__run_new(g, o.run, &run)) != 0)
    goto out;
  if (mpi)
    tsr__mpi_attach(mpi, run);
  tsr__run_set_request(run, tsr__run_count_tasks(run, n, &r), n, &r);
  for (int64_t s = r.start[0]; s < r.stop[0];) {
    /* Bands end on chunk boundaries, so no chunk is computed twice. */
    int64_t e = (s / band + 1) * band;
    tsr_region_t b = r;
    int64_t stride[TSR_MAX_DIMS];
    void *planes[TSR__MAX_PLANES] = {0};
    e = e < r.stop[0] ? e : r.stop[0];
    b.start[0] = s, b.stop[0] = e;
    tsr__contiguous_strides(&b, stride);
    planes[n->plane] = buf;
    if ((rc = tsr__run_region(run, n->owner, &b, planes, stride)) != 0)
      goto out;
    if (!o.partial) {
      to_be(buf, (size_t)(e - s), es);
      f.off = data_start + (s - r.start[0]) * (int64_t)es;
      if ((rc = put(&f, buf, (size_t)(e - s) * es)) != 0)
        goto out;
    } else {
      unsigned char *q = rowbuf;
      for (int64_t i = 0; i < e - s; i++) {
        double v = es == 4 ? (double)((float *)buf)[i] : ((double *)buf)[i];
        if (!isfinite(v))
          continue;
        if (wide) {
          uint64_t p = __builtin_bswap64((uint64_t)(s + i));
          memcpy(q, &p, 8), q += 8;
        } else {
          uint32_t p = __builtin_bswap32((uint32_t)(s + i));
          memcpy(q, &p, 4), q += 4;
        }
        memcpy(q, buf + (size_t)i * es, es);
        to_be(q, 1, es);
        q += es;
        rows++;
      }
      f.off = rows_end;
      if ((rc = put(&f, rowbuf, (size_t)(q - rowbuf))) != 0)
        goto out;
      rows_end = f.off;
    }
    s = e;
  }
  if (o.partial) {
    char c[81];
    snprintf(c, sizeof c, "NAXIS2  = %20" PRId64 " / rows", rows);
    memset(c + strlen(c), ' ', 80 - strlen(c));
    f.off = BLOCK + naxis2_card * 80;
    if ((rc = put(&f, c, 80)) != 0)
      goto out;
    f.off = data_start + rows * (int64_t)(es + (wide ? 8 : 4));
  } else {
    f.off = data_start + count * (int64_t)es;
  }
  if ((rc = pad(&f, 0)) != 0)
    goto out;
  tsr__run_succeeded(run);
  if ((rc = tsr__out_seal(ctx, "healpix", &f.out)) == 0)
    rc = tsr__out_commit(ctx, "healpix", &f.out);
out:
  tsr__mpi_close(mpi, rc);
  tsr__run_free(run);
  tsr__out_discard(ctx, &f.out);
  tsr__free(ctx, hdr);
  tsr__free(ctx, buf);
  tsr__free(ctx, rowbuf);
  return rc;
}
