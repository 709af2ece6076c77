/* fits_write.c -- FITS files as band-by-band sinks (fits.c reads them).
 *
 * DESIGN: tsr_write_fits computes the request band by band (a band spans the whole
 * region in x, one chunk row in y and one chunk along the other axes) into
 * one buffer per output plane, so memory is one band per plane plus what the
 * run holds, never the whole image.  Files are created as output.c says
 * (unnamed temporaries beside their targets, checked, created and measured
 * against the free space before anything is computed, so a bad path or a
 * full disk fails at once), named and renamed only when every file is
 * complete; on any error or cancel the temporaries are dropped and existing
 * outputs are left as they were.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"

/* Bands of ops that compute any sub-box (sources, reprojections) are cut
 * to about this many bytes per plane: a band buffer that stays in L2 and
 * faults in few fresh pages is written faster (2048^2 float64 outputs,
 * measured: nearest 52 -> 42 ms, bicubic 114 -> 103 ms against 16 MB
 * bands), but never flatter than half a chunk wide (see band_rows) while
 * that fits in BAND_MAX_BYTES. */
#define BAND_TARGET_BYTES ((int64_t)2 << 20)
#define BAND_MAX_BYTES ((int64_t)16 << 20)

/* Native values to big-endian bytes, for writing. */
TSR__MULTIVERSION
static void to_big_endian32(unsigned char *restrict o, const unsigned char *restrict p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, p + 4 * i, 4);
    u = __builtin_bswap32(u);
    memcpy(o + 4 * i, &u, 4);
  }
}

TSR__MULTIVERSION
static void to_big_endian64(unsigned char *restrict o, const unsigned char *restrict p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t u;
    memcpy(&u, p + 8 * i, 8);
    u = __builtin_bswap64(u);
    memcpy(o + 8 * i, &u, 8);
  }
}

/* ------------------------------------------------------------------ */
/* Writing                                                            */

/* With MPI, band b + 1 computes on the ranks while band b is written here:
 * two sets of band buffers, used in turn.  (A pool's workers write their
 * own bands: see band_job.) */
#define MAX_SETS 2

typedef struct {
  const char *path;        /* final name, as given */
  tsr__out_t out;          /* the file being written (out.fd, shared with pool workers) */
  int64_t data_off;        /* bytes of header before the data */
  tsr_node_t *node;
  void *band[MAX_SETS];    /* borrowed: the band buffers of (node->owner, node->plane) */
} out_file_t;

typedef struct {
  tsr_node_t *owner;
  void *dst[MAX_SETS][TSR__MAX_PLANES]; /* band buffers, owned; NULL if not written */
  int64_t ticket[MAX_SETS]; /* the computation filling each set */
} out_owner_t;

typedef struct {
  tsr_ctx_t *ctx;
  tsr_region_t r;          /* the region written */
  const tsr_run_opts_t *opts;
  tsr__run_t *run;
  int n, n_owners;
  out_file_t *files;
  out_owner_t *owners;
  int64_t rows;            /* band height when no owner imposes chunk rows */
  int64_t max_band;        /* elements in the largest band */
  int64_t total;           /* tasks over all bands and owners */
  unsigned char *swap;     /* SWAP_BYTES of scratch for big-endian data */
  int n_sets;              /* band buffer sets: MAX_SETS when the run is asynchronous */
  bool band_jobs;          /* the pool's workers compute and write whole bands */
  tsr_region_t *bands;     /* every band in file order (band_jobs) */
  int64_t n_bands, cap_bands;
  tsr_region_t band[MAX_SETS]; /* the band each set holds */
  int64_t stride[MAX_SETS][TSR_MAX_DIMS];
} writer_t;

/* Data are converted to big-endian through a scratch buffer of this size,
 * so that band buffers stay native and may be shared by several outputs. */
#define SWAP_BYTES (1 << 20)

/* Rows per band of sub-box ops.  A band cuts their chunks into tasks as
 * tall as the band; a task much flatter than wide reads a window many times
 * its size once the mapping rotates (a 16384^2 run with 512^2 chunks in
 * 32-row bands took 25% longer), so tasks are kept at least half as tall as
 * a chunk is wide. */
static int64_t band_rows(const writer_t *w, size_t maxes) {
  int64_t row_bytes = (int64_t)maxes * (w->r.stop[0] - w->r.start[0]);
  int64_t rows = BAND_TARGET_BYTES / row_bytes, most = BAND_MAX_BYTES / row_bytes;
  for (int i = 0; i < w->n_owners; i++) {
    const tsr_node_t *o = w->owners[i].owner;
    int64_t half = (o->chunk[0] + 1) / 2;
    if (o->ndim < 2)
      continue;
    if (half > o->chunk[1])
      half = o->chunk[1]; /* a whole chunk row is enough */
    if (half > most)
      half = most;
    if (half > rows)
      rows = half;
  }
  return rows < 1 ? 1 : rows;
}

/* End of the band that starts at `pos` on axis a: the next chunk boundary
 * of any owner that computes whole chunks (a band that cut its chunks would
 * compute them twice), else `rows` rows (axis 1) or one plane.  With a chunk
 * cache every owner computes whole chunks (to store them). */
static int64_t band_end(const writer_t *w, int a, int64_t pos) {
  int64_t e = INT64_MAX;
  for (int i = 0; i < w->n_owners; i++) {
    const tsr_node_t *o = w->owners[i].owner;
    if ((o->op->flags & TSR__OP_SUBBOX) && !(w->opts && w->opts->cache))
      continue;
    int64_t b = (pos / o->chunk[a] + 1) * o->chunk[a];
    if (b < e)
      e = b;
  }
  if (e == INT64_MAX)
    e = pos + (a == 1 ? w->rows : 1);
  return e < w->r.stop[a] ? e : w->r.stop[a];
}

/* Pixel keywords follow the region: CRPIXn[a] and IRAF's LTVn move by
 * -start of their axis.  Returns the 0-based axis or -1. */
static int shifted_axis(const char *kw, int ndim) {
  const char *p;
  if (strncmp(kw, "CRPIX", 5) == 0)
    p = kw + 5;
  else if (strncmp(kw, "LTV", 3) == 0)
    p = kw + 3;
  else
    return -1;
  if (*p < '1' || *p > '9')
    return -1;
  int a = *p++ - '1';
  if (*p >= 'A' && *p <= 'Z' && kw[0] == 'C')
    p++; /* alternate WCS: CRPIX1A */
  if (*p != '\0' || a >= ndim)
    return -1;
  return a;
}

/* A numeric card "KEYWORD = <value %.17g> / <original comment>". */
static void number_card(char card[TSR__CARD + 1], const char *kw, double v, const char *old) {
  char num[32], comment[TSR__CARD + 1] = "";
  const char *slash = old ? memchr(old + 10, '/', TSR__CARD - 10) : NULL;
  snprintf(num, sizeof num, "%.17g", v);
  if (slash) {
    int n = (int)(old + TSR__CARD - slash - 1);
    snprintf(comment, sizeof comment, "%.*s", n, slash + 1);
    for (char *e = comment + strlen(comment); e > comment && e[-1] == ' ';)
      *--e = '\0';
  }
  if (comment[0])
    snprintf(card, TSR__CARD + 1, "%-8.8s= %20s /%-.48s", kw, num, comment);
  else
    snprintf(card, TSR__CARD + 1, "%-8.8s= %20s", kw, num);
  memset(card + strlen(card), ' ', TSR__CARD - strlen(card));
  card[TSR__CARD] = '\0';
}

/* Append one 80-column card (NUL-terminated, shorter is blank-padded) to a
 * growing header. */
static int put_card(tsr__buf_t *b, const char *card) {
  char c[TSR__CARD];
  size_t n = strlen(card);
  memset(c, ' ', sizeof c);
  memcpy(c, card, n < TSR__CARD ? n : TSR__CARD);
  tsr__buf_put(b, c, TSR__CARD);
  return b->oom ? TSR_ENOMEM : 0;
}

/* The header is written directly: the node's cards are already FITS cards
 * (validated by wcslib when read), and the structural ones are fixed
 * formats.  cfitsio would also zero-fill the whole data unit when the file
 * is closed, writing every output twice. */
static int write_header(writer_t *w, out_file_t *of) {
  const tsr_node_t *n = of->node;
  const tsr_wcs_t *wcs = n->wcs;
  bool have_crpix[TSR_MAX_DIMS] = {false, false, false, false};
  char card[TSR__CARD + 1], text[TSR__ERRMSG_CAP / 2], where[160];
  tsr__buf_t b;
  int rc = 0;

  tsr__buf_init(&b, w->ctx);
  put_card(&b, "SIMPLE  =                    T / conforms to FITS standard");
  snprintf(card, sizeof card, "BITPIX  = %20d / IEEE %s", n->dtype == TSR_F64 ? -64 : -32,
           n->dtype == TSR_F64 ? "double" : "single");
  put_card(&b, card);
  snprintf(card, sizeof card, "NAXIS   = %20d", n->ndim);
  put_card(&b, card);
  for (int a = 0; a < n->ndim; a++) {
    char kw[9];
    snprintf(kw, sizeof kw, "NAXIS%d", a + 1);
    snprintf(card, sizeof card, "%-8s= %20" PRId64, kw, w->r.stop[a] - w->r.start[a]);
    put_card(&b, card);
  }
  put_card(&b, "EXTEND  =                    T");
  for (int i = 0; wcs != NULL && i < wcs->ncards; i++) {
    const char *c = wcs->cards + (size_t)i * TSR__CARD;
    char kw[9], val[72];
    int a;
    tsr__card_keyword(c, kw);
    if (tsr__card_structural(c) || strcmp(kw, "ORIGIN") == 0 || strcmp(kw, "EXTEND") == 0)
      continue;
    memcpy(card, c, TSR__CARD);
    card[TSR__CARD] = '\0';
    if ((a = shifted_axis(kw, n->ndim)) >= 0) {
      if (kw[0] == 'C' && kw[6] == '\0')
        have_crpix[a] = true;
      if (w->r.start[a] != 0) {
        char *e;
        double v;
        tsr__card_value(c, val, sizeof val);
        v = strtod(val, &e);
        if (e != val)
          number_card(card, kw, v - (double)w->r.start[a], c);
      }
    }
    put_card(&b, card);
  }
  /* CRPIX defaults to 0; a region that starts elsewhere needs it written. */
  for (int a = 0; wcs != NULL && a < n->ndim; a++) {
    if (have_crpix[a] || w->r.start[a] == 0)
      continue;
    char kw[9];
    snprintf(kw, sizeof kw, "CRPIX%d", a + 1);
    number_card(card, kw, -(double)w->r.start[a], NULL);
    put_card(&b, card);
  }
  snprintf(card, sizeof card, "ORIGIN  = 'tessera %s' / written by tessera", tsr_version_string());
  put_card(&b, card);
  tsr__region_format(&w->r, n->ndim, where, sizeof where);
  snprintf(text, sizeof text, "tessera: %s, region %s (0-based, half-open)", n->name, where);
  for (size_t off = 0, len = strlen(text); off < len; off += 72) {
    snprintf(card, sizeof card, "HISTORY %.72s", text + off);
    put_card(&b, card);
  }
  put_card(&b, "END");
  while (b.len % 2880 != 0 && !b.oom)
    tsr__buf_put(&b, "                                        ", 40);
  if (b.oom) {
    rc = tsr__err(w->ctx, TSR_ENOMEM, "fits: out of memory writing the header of \"%s\"", of->path);
    goto out;
  }
  for (size_t done = 0; done < b.len;) {
    ssize_t k = pwrite(of->out.fd, b.p + done, b.len - done, (off_t)done);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      rc = tsr__err(w->ctx, TSR_EIO, "fits: cannot write \"%s\": %s", of->path,
                    strerror(k < 0 ? errno : EIO));
      goto out;
    }
    done += (size_t)k;
  }
  of->data_off = (int64_t)b.len;
out:
  tsr__buf_release(&b);
  return rc;
}

/* pwrite all of p[0, n) at off. */
/* With the test hook tsr__test_hooks.write_fail = N, the N-th data write of
 * the process fails. */
static ssize_t data_pwrite(int fd, const void *p, size_t n, off_t off) {
  static long count;
  long fail_at = tsr__test_hooks.write_fail;
  if (fail_at > 0 && ++count == fail_at) {
    errno = ENOSPC;
    return -1;
  }
  return pwrite(fd, p, n, off);
}

static int write_all(tsr_ctx_t *ctx, const out_file_t *of, const void *p, size_t n, int64_t off) {
  const unsigned char *q = p;
  while (n > 0) {
    ssize_t k = data_pwrite(of->out.fd, q, n, (off_t)off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return tsr__err(ctx, TSR_EIO, "fits: cannot write \"%s\": %s", of->path,
                      strerror(k < 0 ? errno : EIO));
    q += k, off += k, n -= (size_t)k;
  }
  return 0;
}

/* Write `band` (laid out contiguously at src) to its place in the file:
 * bands span the region's whole x extent, so each (y range, plane) is one
 * contiguous run of the file.  `swap` is SWAP_BYTES of scratch.  Errors go
 * to ctx: the writer's, or a worker's. */
static int write_band(const writer_t *w, tsr_ctx_t *ctx, const out_file_t *of,
                      const tsr_region_t *band, const unsigned char *src, unsigned char *swap) {
  size_t es = tsr_dtype_size(of->node->dtype);
  int64_t ext[TSR_MAX_DIMS], rext[TSR_MAX_DIMS];
  int rc;

  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    ext[a] = band->stop[a] - band->start[a];
    rext[a] = w->r.stop[a] - w->r.start[a];
  }
  for (int64_t q = 0; q < ext[3]; q++)
    for (int64_t z = 0; z < ext[2]; z++) {
      int64_t first = (((band->start[3] - w->r.start[3] + q) * rext[2] + (band->start[2] - w->r.start[2] + z)) *
                           rext[1] + (band->start[1] - w->r.start[1])) * rext[0];
      size_t bytes = (size_t)(ext[1] * ext[0]) * es;
      int64_t off = of->data_off + first * (int64_t)es;
      for (size_t done = 0; done < bytes;) {
        size_t n = bytes - done < SWAP_BYTES ? bytes - done : SWAP_BYTES;
        if (es == 4)
          to_big_endian32(swap, src + done, n / 4);
        else
          to_big_endian64(swap, src + done, n / 8);
        if ((rc = write_all(ctx, of, swap, n, off + (int64_t)done)) != 0)
          return rc;
        done += n;
      }
      src += bytes;
    }
  return 0;
}

/* Job item i of a parallel run (tsr__run_submit_jobs): a band (below) of
 * owner i % n_owners, computed by this worker's own serial run into its
 * own band buffers (tsr__run_buffer: a pool worker's, or a thread's) and
 * written to the owner's files, as a serial run would: no other worker
 * touches the band, and the writes of the workers go on side by side as
 * their computing does. */
static int band_job(tsr__run_t *run, const void *args, int64_t i) {
  tsr_ctx_t *ctx = tsr__run_ctx(run);
  const writer_t *w;
  const out_owner_t *o;
  const tsr_region_t *band;
  int64_t st[TSR_MAX_DIMS];
  void *planes[TSR__MAX_PLANES] = {0};
  unsigned char *swap;
  int rc;

  memcpy(&w, args, sizeof w);
  o = &w->owners[i % w->n_owners];
  for (int f = 0; f < w->n; f++) {
    const tsr_node_t *nd = w->files[f].node;
    if (nd->owner == o->owner &&
        (planes[nd->plane] = tsr__run_buffer(run, nd->plane, (size_t)w->max_band *
                                                                tsr_dtype_size(nd->dtype))) == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "write_fits: out of memory for a band of %" PRId64
                                       " values of %s", w->max_band, nd->name);
  }
  if ((swap = tsr__run_buffer(run, TSR__MAX_PLANES, SWAP_BYTES)) == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "write_fits: out of memory");
  {
    /* Items run outward from the middle band: the pool's even workers go
     * through the first half of the items, up from the middle, the odd
     * ones through the second half from its end, down from the middle.
     * Each still moves through neighbouring bands, and the last items of
     * the run are the edge bands, often partly outside the input and
     * cheap, so that one worker does not finish a costly middle band long
     * after the other ran out (measured: 2.8 -> 1.1 ms apart). */
    int64_t k = i / w->n_owners, h = w->n_bands / 2;
    k = k < h ? h - 1 - k : w->n_bands - 1 - (k - h);
    band = &w->bands[k];
  }
  tsr__contiguous_strides(band, st);
  tsr__run_set_request(run, 0, w->files[0].node, &w->r); /* sparse as the caller's run */
  rc = tsr__run_region(run, o->owner, band, planes, st);
  for (int f = 0; f < w->n; f++) {
    const out_file_t *of = &w->files[f];
    if (of->node->owner != o->owner)
      continue;
    if (rc != 0) {
      if (rc != TSR_ECANCELED)
        tsr__err_prefix(ctx, "fits: writing \"%s\"", of->path);
      return rc;
    }
    if ((rc = write_band(w, ctx, of, band, planes[of->node->plane], swap)) != 0)
      return rc;
  }
  return 0;
}

/* Start computing band set `set` for owner i. */
static int band_submit(writer_t *w, int i, int set) {
  out_owner_t *o = &w->owners[i];
  int rc = tsr__run_submit(w->run, o->owner, &w->band[set], o->dst[set], w->stride[set],
                           &o->ticket[set]);
  if (rc != 0 && rc != TSR_ECANCELED) {
    int f = 0;
    while (w->files[f].node->owner != o->owner)
      f++;
    tsr__err_prefix(w->ctx, "fits: writing \"%s\"", w->files[f].path);
  }
  return rc;
}

/* Wait for band set `set` and write it to every file. */
static int band_finish(writer_t *w, int set) {
  int rc;
  for (int i = 0; i < w->n_owners; i++) {
    out_owner_t *o = &w->owners[i];
    if ((rc = tsr__run_wait(w->run, o->ticket[set])) != 0) {
      if (rc != TSR_ECANCELED) {
        int f = 0;
        while (w->files[f].node->owner != o->owner)
          f++;
        tsr__err_prefix(w->ctx, "fits: writing \"%s\"", w->files[f].path);
      }
      return rc;
    }
    o->ticket[set] = 0;
  }
  for (int i = 0; i < w->n; i++)
    if ((rc = write_band(w, w->ctx, &w->files[i], &w->band[set], w->files[i].band[set], w->swap)) != 0)
      return rc;
  return 0;
}

/* Visit every band in file order.  Without a run, only measure: the
 * largest band, the number of tasks, and the list of bands (band jobs).
 * With one, compute each band once per owner (planes of one owner
 * together) and write it to every file. */
static int for_each_band(writer_t *w, bool compute) {
  tsr_region_t b = w->r;
  int rc, set = 0;
  int in_flight = 0;
  for (int64_t w0 = w->r.start[3], w1; w0 < w->r.stop[3]; w0 = w1) {
    w1 = band_end(w, 3, w0);
    for (int64_t z0 = w->r.start[2], z1; z0 < w->r.stop[2]; z0 = z1) {
      z1 = band_end(w, 2, z0);
      for (int64_t y0 = w->r.start[1], y1; y0 < w->r.stop[1]; y0 = y1) {
        int64_t st[TSR_MAX_DIMS];
        y1 = band_end(w, 1, y0);
        b.start[1] = y0, b.stop[1] = y1;
        b.start[2] = z0, b.stop[2] = z1;
        b.start[3] = w0, b.stop[3] = w1;
        /* Sources are one task per band, so the run never sees a cancel
         * between them, and measuring a huge output is a long loop of its
         * own: check here too. */
        if (w->opts && w->opts->cancel && *w->opts->cancel)
          return tsr__err(w->ctx, TSR_ECANCELED, "run: canceled");
        if (!compute) {
          if (tsr_region_size(&b) > w->max_band)
            w->max_band = tsr_region_size(&b);
          if (w->n_bands == w->cap_bands) {
            int64_t cap = w->cap_bands ? 2 * w->cap_bands : 64;
            tsr_region_t *nb = tsr__realloc(w->ctx, w->bands, (size_t)cap * sizeof *nb);
            if (nb == NULL)
              return tsr__err(w->ctx, TSR_ENOMEM, "write_fits: out of memory");
            w->bands = nb;
            w->cap_bands = cap;
          }
          w->bands[w->n_bands++] = b;
          for (int i = 0; i < w->n_owners; i++)
            w->total += tsr__run_count_tasks(w->run, w->owners[i].owner, &b);
          continue;
        }
        tsr__contiguous_strides(&b, st);
        memcpy(w->stride[set], st, sizeof st);
        w->band[set] = b;
        for (int i = 0; i < w->n_owners; i++)
          if ((rc = band_submit(w, i, set)) != 0)
            return rc;
        /* With every set in use, write the oldest band while the others
         * compute (on a pool; serially, the one just computed). */
        if (++in_flight == w->n_sets) {
          if ((rc = band_finish(w, (set + 1) % w->n_sets)) != 0)
            return rc;
          in_flight--;
        }
        set = (set + 1) % w->n_sets;
      }
    }
  }
  for (; in_flight > 0; in_flight--)
    if ((rc = band_finish(w, (set - in_flight + w->n_sets) % w->n_sets)) != 0)
      return rc;
  return 0;
}

/* Close and publish every file; the renames come last, so a failure before
 * them leaves no output at all.  The rename makes an output appear whole or
 * not at all to readers and after a crash of this process; like SWarp and
 * astropy we leave durability across a power loss to the filesystem rather
 * than pay an fsync of every output. */
static int finish_files(writer_t *w) {
  static const unsigned char zeros[2880];
  for (int i = 0; i < w->n; i++) {
    out_file_t *of = &w->files[i];
    int64_t end = of->data_off + tsr_region_size(&w->r) * (int64_t)tsr_dtype_size(of->node->dtype);
    int rc;
    /* The data unit is padded with zeros to a multiple of 2880 bytes. */
    if (end % 2880 != 0 && (rc = write_all(w->ctx, of, zeros, (size_t)(2880 - end % 2880), end)) != 0)
      return rc;
    if ((rc = tsr__out_seal(w->ctx, "fits", &of->out)) != 0)
      return rc;
  }
  for (int i = 0; i < w->n; i++) {
    int rc = tsr__out_commit(w->ctx, "fits", &w->files[i].out);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Bytes of output file i once written (saturating: a size that does not fit
 * in int64 is never free space). */
static int64_t file_bytes(const writer_t *w, int i) {
  int64_t n = (int64_t)tsr_dtype_size(w->files[i].node->dtype);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    if (__builtin_mul_overflow(n, w->r.stop[a] - w->r.start[a], &n))
      return INT64_MAX;
  if (__builtin_add_overflow(n, 2879 + w->files[i].data_off, &n))
    return INT64_MAX;
  return n / 2880 * 2880;
}

/* Refuse outputs that cannot fit before anything is planned: a 10^6 x 10^6
 * target filled a small filesystem, a band at a time, before ENOSPC.  What
 * counts is the sum of the outputs that share a filesystem (data and
 * footprint).  Space others free or take meanwhile is the writes' to find. */
static int check_room(writer_t *w) {
  for (int i = 0; i < w->n; i++) {
    struct stat si, sj;
    int64_t need = 0;
    int others = 0;
    if (fstat(w->files[i].out.fd, &si) != 0)
      continue;
    for (int j = 0; j < w->n; j++)
      if (fstat(w->files[j].out.fd, &sj) == 0 && sj.st_dev == si.st_dev) {
        int64_t b = file_bytes(w, j);
        need = need > INT64_MAX - b ? INT64_MAX : need + b;
        others += j != i;
      }
    int rc = tsr__out_room(w->ctx, "fits", &w->files[i].out, need,
                           others ? " with the other outputs on that filesystem" : "");
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* The file a path names: where its symbolic links lead if it exists, else
 * its directory's real path and its base name, so that "a.fits",
 * "./a.fits" and a link to it are seen as one output. */
static char *canonical_name(tsr_ctx_t *ctx, const char *path) {
  const char *base = tsr__base_name(path);
  size_t dirlen = (size_t)(base - path);
  char dir[PATH_MAX], *real, *out;
  size_t cap;
  if ((real = realpath(path, NULL)) != NULL) {
    out = tsr__strdup(ctx, real);
    free(real);
    return out;
  }
  if (dirlen >= sizeof dir)
    return tsr__strdup(ctx, path);
  memcpy(dir, path, dirlen);
  dir[dirlen] = '\0';
  real = realpath(dirlen ? dir : ".", NULL);
  if (real == NULL)
    return tsr__strdup(ctx, path);
  cap = strlen(real) + strlen(base) + 2;
  out = tsr__malloc(ctx, cap);
  if (out)
    snprintf(out, cap, "%s/%s", real, base);
  free(real);
  return out;
}

int tsr_write_fits(tsr_graph_t *g, int n, tsr_node_t *const *nodes, const char *const *paths,
                   const tsr_region_t *region, const tsr_run_opts_t *opts) {
  tsr__mpi_t *mpi = NULL;
  tsr_ctx_t *ctx;
  writer_t w;
  char **canon = NULL;
  size_t maxes = 4;
  int rc;

  tsr__api_check(g != NULL, "tsr_write_fits: graph is NULL");
  ctx = g->ctx;
  memset(&w, 0, sizeof w);
  w.ctx = ctx;
  w.opts = opts;
  if (n < 1 || nodes == NULL || paths == NULL)
    return tsr__err(ctx, TSR_EINVAL, "write_fits: %d outputs; expected nodes and paths for 1 or more",
                    n);
  for (int i = 0; i < n; i++) {
    const tsr_node_t *a = nodes[i], *z = nodes[0];
    if (a == NULL || a->graph != g)
      return tsr__err(ctx, TSR_EINVAL, "write_fits: node %d is NULL or from another graph", i);
    if (paths[i] == NULL || paths[i][0] == '\0')
      return tsr__err(ctx, TSR_EINVAL, "write_fits: path %d is NULL or empty", i);
    if (a->ndim != z->ndim || memcmp(a->shape, z->shape, sizeof a->shape) != 0) {
      char sa[160], sz[160];
      tsr_region_t ra, rz;
      tsr__region_full(&ra, a->ndim, a->shape);
      tsr__region_full(&rz, z->ndim, z->shape);
      tsr__region_format(&ra, a->ndim, sa, sizeof sa);
      tsr__region_format(&rz, z->ndim, sz, sizeof sz);
      return tsr__err(ctx, TSR_EINVAL,
                      "write_fits: %s (for \"%s\") has extent %s but %s (for \"%s\") has %s; "
                      "outputs written together must have one shape",
                      a->name, paths[i], sa, z->name, paths[0], sz);
    }
  }
  if ((rc = tsr__check_request(g, nodes[0], region, &w.r)) != 0)
    return rc;
  {
    /* Rank 0 writes; the others compute blocks for it. */
    bool served;
    if ((rc = tsr__mpi_enter(g, opts, nodes[0], &w.r, &mpi, &served)) != 0 || served)
      return rc;
  }

  rc = TSR_ENOMEM;
  w.files = tsr__calloc(ctx, (size_t)n, sizeof *w.files);
  w.owners = tsr__calloc(ctx, (size_t)n, sizeof *w.owners);
  canon = tsr__calloc(ctx, (size_t)n, sizeof *canon);
  if (w.files == NULL || w.owners == NULL || canon == NULL) {
    tsr__err(ctx, rc, "write_fits: out of memory");
    goto out;
  }
  w.n = n;
  for (int i = 0; i < n; i++)
    w.files[i].out.fd = w.files[i].out.dirfd = -1;
  w.swap = tsr__malloc(ctx, SWAP_BYTES);
  if (w.swap == NULL) {
    tsr__err(ctx, rc, "write_fits: out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++) {
    if ((canon[i] = canonical_name(ctx, paths[i])) == NULL) {
      tsr__err(ctx, rc, "write_fits: out of memory");
      goto out;
    }
    for (int j = 0; j < i; j++)
      if (strcmp(canon[i], canon[j]) == 0) {
        rc = tsr__err(ctx, TSR_EINVAL, "write_fits: outputs %d and %d are the same file (\"%s\")",
                      j, i, paths[i]);
        goto out;
      }
  }

  /* Group the outputs by the node whose op computes them. */
  for (int i = 0; i < n; i++) {
    tsr_node_t *o = nodes[i]->owner;
    int k = 0;
    while (k < w.n_owners && w.owners[k].owner != o)
      k++;
    if (k == w.n_owners)
      w.owners[w.n_owners++].owner = o;
    w.files[i].path = paths[i];
    w.files[i].node = nodes[i];
    if (tsr_dtype_size(nodes[i]->dtype) > maxes)
      maxes = tsr_dtype_size(nodes[i]->dtype);
  }
  w.rows = band_rows(&w, maxes);

  /* Every output must be creatable, and fit, before anything is computed. */
  for (int i = 0; i < n; i++)
    if ((rc = tsr__out_open(ctx, "fits", paths[i], &w.files[i].out)) != 0)
      goto out;
  for (int i = 0; i < n; i++)
    if ((rc = write_header(&w, &w.files[i])) != 0)
      goto out;
  if ((rc = check_room(&w)) != 0)
    goto out;

  if ((rc = tsr__run_new(g, opts, &w.run)) != 0)
    goto out;
  if (mpi)
    tsr__mpi_attach(mpi, w.run);
  if ((rc = for_each_band(&w, false)) != 0)
    goto out;
  tsr__run_set_request(w.run, w.total, nodes[0], &w.r);
  /* On a pool each worker computes and writes whole bands; its own copy
   * of one band buffer per plane is all the memory it needs. */
  w.band_jobs = tsr__run_parallel(w.run);
  w.n_sets = !w.band_jobs && tsr__run_async(w.run) && w.n_owners <= 16 ? MAX_SETS : 1;
  /* With band jobs each worker computes into buffers of its own. */
  for (int i = 0; i < n && !w.band_jobs; i++) {
    out_owner_t *ow = w.owners;
    tsr_node_t *nd = nodes[i];
    while (ow->owner != nd->owner)
      ow++;
    for (int set = 0; set < w.n_sets; set++) {
      if (ow->dst[set][nd->plane] == NULL) {
        ow->dst[set][nd->plane] =
            tsr__mallocarray(ctx, (size_t)w.max_band, tsr_dtype_size(nd->dtype));
        if (ow->dst[set][nd->plane] != NULL)
          tsr__advise_huge(ow->dst[set][nd->plane],
                           (size_t)w.max_band * tsr_dtype_size(nd->dtype));
        if (ow->dst[set][nd->plane] == NULL) {
          rc = tsr__err(ctx, TSR_ENOMEM, "write_fits: out of memory for a band of %" PRId64
                                         " values of %s", w.max_band, nd->name);
          goto out;
        }
      }
      w.files[i].band[set] = ow->dst[set][nd->plane];
    }
  }
  if (w.band_jobs) {
    const writer_t *wp = &w;
    int64_t ticket;
    char what[PATH_MAX + 16];
    snprintf(what, sizeof what, "writing \"%s\"", w.files[0].path);
    if ((rc = tsr__run_submit_jobs(w.run, band_job, &wp, sizeof wp, w.n_bands * w.n_owners, true,
                                   what, &ticket)) != 0 ||
        (rc = tsr__run_wait(w.run, ticket)) != 0) {
      /* A job's own errors say which file already; a dead worker's name
       * the node, and the file when there is one owner. */
      if (rc == TSR_EWORKER && w.n_owners == 1)
        tsr__err_prefix(ctx, "fits: writing \"%s\"", w.files[0].path);
      goto out;
    }
  } else if ((rc = for_each_band(&w, true)) != 0) {
    goto out;
  }
  tsr__run_succeeded(w.run);
  rc = finish_files(&w);
out:
  /* The ranks learn the status only now: the files are renamed first. */
  tsr__mpi_close(mpi, rc);
  tsr__run_free(w.run);
  for (int i = 0; w.files && i < w.n; i++) {
    tsr__out_discard(ctx, &w.files[i].out);
  }
  tsr__free(ctx, w.swap);
  tsr__free(ctx, w.bands);
  for (int i = 0; w.owners && i < w.n_owners; i++)
    for (int set = 0; set < MAX_SETS; set++)
      for (int p = 0; p < TSR__MAX_PLANES; p++)
        tsr__free(ctx, w.owners[i].dst[set][p]);
  for (int i = 0; canon && i < n; i++)
    tsr__free(ctx, canon[i]);
  tsr__free(ctx, canon);
  tsr__free(ctx, w.owners);
  tsr__free(ctx, w.files);
  return rc;
}
