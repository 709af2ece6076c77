/* hips.c -- HiPS directories (IVOA HiPS 1.0) written from lazy images.
 *
 * DESIGN: the tiles of order k are the T x T boxes of one all-sky image in
 * the HEALPix projection (HPX, H = 4, K = 3, CRVAL 0 0, CD rotating the
 * HEALPix diamonds square, 5 2^k T pixels a side: reproject's map_header),
 * and each tile's own WCS (reproject 0.21's tile_header) differs from that
 * map's only in CRPIX by a multiple of T.  So one lazy reprojection of the
 * inputs onto the map (a mosaic of them for several inputs) holds every
 * deepest tile, and a row of neighbouring tiles is one region of it:
 * computed on the run's executor, chunk by chunk, from the input windows
 * it needs, cached under the map's key, while memory stays one row of up
 * to ROW_TILES tiles wide.  A tile's place is found as reproject finds its
 * CRPIX (the world -> pixel of the point (0.75, 0.25) of its HEALPix
 * pixel), so the tiles near the projection's seams are what reproject
 * makes of them: those whose corners land more than T apart are "border"
 * tiles, the NaN-ignoring mean of two boxes (reproject's two headers).
 * Candidates come from a disc around each input (its sampled edges), found
 * by descending the HEALPix tree, then kept only where the tile, mapped
 * into an input's pixels, meets the image; a candidate whose box holds no
 * data is not written.  Lower orders are the 2x2 NaN-ignoring means of the four
 * children read back from their FITS files (reproject's block_reduce, and
 * hipsgen's default), in the quadrants reproject puts them: cheaper than
 * reprojecting each order and the same box filter, since a parent's box is
 * exactly its children's boxes in the map twice as fine.  The directory
 * must be new or empty, so that everything in it is this run's: each file
 * is written to "NAME.tsr-PID.tmp" and renamed, `properties` last, and a
 * failed or cancelled run removes what it wrote.
 *
 * Every region (the input samples for the PNG cut, the rows of tiles) is
 * computed on one run of the caller's options, so that a pool is forked
 * once, not once a row, and so that MPI works as it does for
 * tsr_write_fits: every rank makes the same call and builds the same
 * map; then the ranks other than 0 serve that map's block-tasks until
 * rank 0 closes the session with its status, which they return.  Rank 0
 * alone chooses the tiles and writes every file.  Not each rank its own
 * tiles: the blocks come back to rank 0 anyway (the executor hands tasks
 * out on demand and collects them), lower orders and Allsky read the
 * deepest tiles back, which would ask for a file system that every rank
 * sees coherently after a barrier, and one process that wrote everything
 * can remove everything when the run fails.  Only a shared cache
 * directory, for resuming, need be seen by every rank.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io.h"

#define ROW_TILES 16          /* tiles computed together, along a row of the map */
#define ALLSKY_MAX_ORDER 3    /* HiPS: Allsky files for orders 0..3 */
#define ALLSKY_TILE 64        /* an Allsky tile's side (at most the tile width) */
#define PNG_ZLEVEL 1          /* tiles are many and small: zlib's fastest level */

typedef struct {
  const char *name;           /* hips_frame value */
  const char *ctype1, *ctype2;
  const char *radesys;        /* or NULL */
  char coordsys;              /* MOC COORDSYS */
  tsr__frame_t frame;
} hips_frame_t;

typedef struct {
  int64_t idx;                /* NESTED index at the order */
  int64_t bx, by;             /* box, in tiles from the map's pixel 0 */
  int64_t b2x, b2y;           /* the second box of a border tile */
  bool border, has2;          /* has2: the second box lies in the map */
  double crpix[2];            /* the tile's CRPIX (reproject's header[0]) */
} tile_t;

typedef struct {
  tsr_ctx_t *ctx;
  const char *dir;
  int T, k;                   /* tile width, deepest order */
  hips_frame_t hf;
  tsr_hips_opts_t o;
  tsr_run_opts_t run;         /* the caller's, without progress (reported in tiles) */
  tsr__run_t *exec;           /* the one run every region is computed on (rank 0's) */
  double cut[2];
  double dmin, dmax;          /* data range of the deepest tiles */
  float *tile;                /* T x T scratch */
  double *dtile;              /* T x T, for PNG */
  unsigned char *row;         /* 2 T, for PNG */
  unsigned char *fbuf;        /* FITS data being written, fbuf_cap bytes; grown as needed */
  size_t fbuf_cap;
} hips_t;

/* ------------------------------------------------------------------ */
/* HEALPix pixels in the HPX plane                                     */

static const int jrll[12] = {2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4};
static const int jpll[12] = {1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7};

static int64_t deinterleave(int64_t v) {
  int64_t x = 0;
  for (int b = 0; b < 31; b++)
    x |= ((v >> (2 * b)) & 1) << b;
  return x;
}

/* The unit vector of the point (dx, dy) in [0, 1]^2 of NESTED pixel idx
 * at `order`, with astropy-healpix's offsets (dx along the pixel's x, from
 * its south corner toward the east one).  The pixel's face coordinates are
 * laid on the HEALPix projection plane, which is linear in them, and
 * projected back (Calabretta & Roukema 2007, HPX with H = 4, K = 3). */
static void pixel_point(int order, int64_t idx, double dx, double dy, double v[3]) {
  int64_t ns = (int64_t)1 << order, p = idx & (ns * ns - 1);
  int f = (int)(idx >> (2 * order));
  double x = ((double)deinterleave(p) + dx) / (double)ns;
  double y = ((double)deinterleave(p >> 1) + dy) / (double)ns;
  double xs = M_PI / 4 * (jpll[f] + x - y), ys = M_PI / 4 * (3 - jrll[f] + x + y - 1);
  double phi, z;
  if (fabs(ys) <= M_PI / 4) {
    phi = xs;
    z = ys * 8.0 / (3.0 * M_PI);
  } else {
    double s = 2.0 - fabs(ys) / (M_PI / 4), xc = M_PI / 4 * jpll[f];
    phi = s > 0 ? xc + (xs - xc) / s : xc;
    z = copysign(1.0 - s * s / 3.0, ys);
  }
  double st = sqrt(fmax(0.0, (1.0 - z) * (1.0 + z)));
  v[0] = st * cos(phi), v[1] = st * sin(phi), v[2] = z;
}

static double angle_between(const double a[3], const double b[3]) {
  double c[3] = {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
  return atan2(sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]), a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
}

/* ------------------------------------------------------------------ */
/* Headers                                                             */

static int frame_of(tsr_ctx_t *ctx, const char *name, hips_frame_t *hf) {
  memset(hf, 0, sizeof *hf);
  if (name == NULL || strcmp(name, "equatorial") == 0) {
    *hf = (hips_frame_t){"equatorial", "RA---HPX", "DEC--HPX", "ICRS", 'C',
                         tsr__frame_default(TSR__SKY_ICRS)};
  } else if (strcmp(name, "galactic") == 0) {
    *hf = (hips_frame_t){"galactic", "GLON-HPX", "GLAT-HPX", NULL, 'G',
                         tsr__frame_default(TSR__SKY_GALACTIC)};
  } else if (strcmp(name, "ecliptic") == 0) {
    *hf = (hips_frame_t){"ecliptic", "ELON-HPX", "ELAT-HPX", NULL, 'E',
                         tsr__frame_default(TSR__SKY_ECLIPTIC)};
  } else {
    return tsr__err(ctx, TSR_EINVAL, "hips: frame \"%s\": expected equatorial, galactic or "
                                     "ecliptic", name);
  }
  return 0;
}

typedef struct {
  char *p;
  size_t len, cap;            /* bytes used, and the buffer's size */
  int n;
  bool full;                  /* a card did not fit (and was left out) */
} cards_t;

/* One 80-column card: "KEY     = value" (value right-aligned in 11..30 for
 * numbers, as fixed-format FITS, quoted and left-aligned for strings). */
static void card(cards_t *c, const char *key, const char *fmt, ...) TSR__PRINTF(3, 4);
static void card(cards_t *c, const char *key, const char *fmt, ...) {
  char val[72], line[81];
  va_list ap;
  if (c->len + 82 > c->cap) { /* 80 columns, and snprintf's NUL */
    c->full = true;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(val, sizeof val, fmt, ap);
  va_end(ap);
  if (val[0] == '\'' || key[0] == '\0' || strcmp(key, "END") == 0)
    snprintf(line, sizeof line, strcmp(key, "END") == 0 ? "END" : "%-8.8s= %s", key, val);
  else
    snprintf(line, sizeof line, "%-8.8s= %20s", key, val);
  snprintf(c->p + c->len, 82, "%-80s", line);
  c->len += 80;
  c->n++;
}

/* The WCS cards of a box of the map of `order` with reference pixel crpix
 * (the map's own: 5 2^order T / 2 + 0.5 on both axes). */
static void wcs_cards(cards_t *c, const hips_t *h, int order, const double crpix[2]) {
  double res = 45.0 / h->T / ldexp(1.0, order);
  card(c, "WCSAXES", "%d", 2);
  card(c, "CRPIX1", "%.17G", crpix[0]);
  card(c, "CRPIX2", "%.17G", crpix[1]);
  card(c, "CD1_1", "%.17G", -res);
  card(c, "CD1_2", "%.17G", -res);
  card(c, "CD2_1", "%.17G", res);
  card(c, "CD2_2", "%.17G", -res);
  card(c, "CUNIT1", "'deg     '");
  card(c, "CUNIT2", "'deg     '");
  card(c, "CTYPE1", "'%s'", h->hf.ctype1);
  card(c, "CTYPE2", "'%s'", h->hf.ctype2);
  card(c, "CRVAL1", "%.1f", 0.0);
  card(c, "CRVAL2", "%.1f", 0.0);
  card(c, "PV2_1", "%.1f", 4.0);
  card(c, "PV2_2", "%.1f", 3.0);
  card(c, "LONPOLE", "%.1f", 0.0);
  card(c, "LATPOLE", "%.1f", 90.0);
  if (h->hf.radesys)
    card(c, "RADESYS", "'%s'", h->hf.radesys);
}

/* The map of `order` as a tsr_wcs_t (*w, may be NULL) and a wcslib copy. */
static int map_wcs(hips_t *h, int order, tsr_wcs_t **w, tsr__cel_t **cel) {
  char buf[40 * 81];
  cards_t c = {buf, 0, sizeof buf, 0, false};
  tsr_wcs_t *tmp = NULL;
  int64_t S = 5 * ((int64_t)1 << order) * h->T;
  double crpix[2] = {(double)S / 2 + 0.5, (double)S / 2 + 0.5};
  int rc;
  card(&c, "NAXIS", "%d", 2);
  card(&c, "NAXIS1", "%lld", (long long)S);
  card(&c, "NAXIS2", "%lld", (long long)S);
  wcs_cards(&c, h, order, crpix);
  if ((rc = tsr_wcs_parse(h->ctx, buf, c.len, "HiPS map", 1, &tmp)) == 0)
    rc = tsr__cel_new(h->ctx, tmp, "HiPS map", cel);
  if (rc == 0 && w != NULL)
    *w = tmp;
  else
    tsr_wcs_free(tmp);
  return rc;
}

/* Where tile idx of `order` lies in the map of that order (whose wcslib
 * copy is cel): reproject's tile_header, in the map's pixels. */
static int place_tile(const hips_t *h, tsr__cel_t *cel, int order, int64_t idx, tile_t *t) {
  static const double dx[6] = {0.5, 0.9, 0.9, 0.1, 0.1, 0.75}, dy[6] = {0.5, 0.1, 0.9, 0.9, 0.1, 0.25};
  double v[18], px[6], py[6], T = h->T, far = 0;
  int64_t S = 5 * ((int64_t)1 << order) * h->T;
  double cm = (double)S / 2 + 0.5, bx, by;
  for (int i = 0; i < 6; i++)
    pixel_point(order, idx, dx[i], dy[i], v + 3 * i);
  tsr__cel_vec2pix(cel, 6, v, px, py);
  for (int i = 1; i < 5; i++)
    far = fmax(far, hypot(px[i] - px[0], py[i] - py[0]));
  memset(t, 0, sizeof *t);
  t->idx = idx;
  /* 0-based map pixel p of the point: reproject's CRPIX is T/4 + 0.5 - u
   * where p = cm - 1 + u, so the box starts at cm - CRPIX = p + 0.5 - T/4. */
  bx = round(px[5] + 0.5 - T / 4), by = round(py[5] + 0.5 - T / 4);
  if (!isfinite(bx) || !isfinite(by) || fmod(bx, T) != 0 || fmod(by, T) != 0 || bx < 0 ||
      by < 0 || bx > (double)S - T || by > (double)S - T)
    return tsr__err(h->ctx, TSR_EWCS, "hips: tile %lld of order %d falls at map pixel (%.3f, %.3f), "
                    "not on the grid of %d-pixel tiles", (long long)idx, order, px[5], py[5], h->T);
  t->bx = (int64_t)(bx / T), t->by = (int64_t)(by / T);
  t->crpix[0] = cm - bx, t->crpix[1] = cm - by;
  t->border = far > T || isnan(far);
  if (t->border) {
    /* reproject's second header: CRPIX' = (T + 1 - CRPIX2, T + 1 - CRPIX1). */
    double b2x = cm - (T + 1 - t->crpix[1]), b2y = cm - (T + 1 - t->crpix[0]);
    t->has2 = b2x >= 0 && b2y >= 0 && b2x <= (double)S - T && b2y <= (double)S - T &&
              fmod(b2x, T) == 0 && fmod(b2y, T) == 0;
    t->b2x = (int64_t)(b2x / T), t->b2y = (int64_t)(b2y / T);
  }
  return 0;
}

int tsr__hips_tile_crpix(tsr_ctx_t *ctx, const char *frame, int order, int tile_width,
                         int64_t idx, double crpix[2], bool *border, double crpix2[2]) {
  hips_t h;
  tsr__cel_t *cel = NULL;
  tile_t t;
  int rc;
  memset(&h, 0, sizeof h);
  h.ctx = ctx, h.T = tile_width, h.k = order;
  if ((rc = frame_of(ctx, frame, &h.hf)) != 0 || (rc = map_wcs(&h, order, NULL, &cel)) != 0)
    return rc;
  if ((rc = place_tile(&h, cel, order, idx, &t)) == 0) {
    crpix[0] = t.crpix[0], crpix[1] = t.crpix[1];
    *border = t.border;
    crpix2[0] = t.border ? tile_width + 1 - t.crpix[1] : 0;
    crpix2[1] = t.border ? tile_width + 1 - t.crpix[0] : 0;
  }
  tsr__cel_free(cel);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */

/* Write n bytes atomically as dir/rel: "rel.tsr-PID.tmp", then rename. */
static int write_file(hips_t *h, const char *rel, const void *a, size_t na, const void *b,
                      size_t nb) {
  char path[PATH_MAX], tmp[PATH_MAX];
  int fd, rc = 0;
  if (snprintf(path, sizeof path, "%s/%s", h->dir, rel) >= (int)sizeof path ||
      snprintf(tmp, sizeof tmp, "%s.tsr-%ld.tmp", path, (long)getpid()) >= (int)sizeof tmp)
    return tsr__err(h->ctx, TSR_EIO, "hips: cannot write \"%s/%s\": %s", h->dir, rel,
                    strerror(ENAMETOOLONG));
  if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0)
    return tsr__err(h->ctx, TSR_EIO, "hips: cannot create \"%s\": %s", tmp, strerror(errno));
  for (int part = 0; part < 2 && rc == 0; part++) {
    const char *p = part ? b : a;
    size_t left = part ? nb : na;
    while (left > 0) {
      ssize_t w = write(fd, p, left);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0) {
        rc = tsr__err(h->ctx, TSR_EIO, "hips: cannot write \"%s\": %s", path,
                      w < 0 ? strerror(errno) : "no progress");
        break;
      }
      p += w, left -= (size_t)w;
    }
  }
  if (close(fd) != 0 && rc == 0)
    rc = tsr__err(h->ctx, TSR_EIO, "hips: cannot write \"%s\": %s", path, strerror(errno));
  if (rc == 0 && rename(tmp, path) != 0)
    rc = tsr__err(h->ctx, TSR_EIO, "hips: cannot rename \"%s\" to \"%s\": %s", tmp, path,
                  strerror(errno));
  if (rc != 0)
    unlink(tmp);
  return rc;
}

static int make_dir(hips_t *h, const char *rel) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", h->dir, rel);
  if (mkdir(path, 0777) != 0 && errno != EEXIST)
    return tsr__err(h->ctx, TSR_EIO, "hips: cannot create directory \"%s\": %s", path,
                    strerror(errno));
  return 0;
}

/* A float32 FITS image: the header cards in c (END added here) and n
 * values, big-endian, each block padded to 2880 bytes. */
static int write_fits(hips_t *h, const char *rel, cards_t *c, const float *data, int64_t n) {
  size_t hbytes, dbytes = (size_t)n * 4, pad = (2880 - dbytes % 2880) % 2880;
  unsigned char *d;
  card(c, "END", "%s", "");
  hbytes = (c->len + 2879) / 2880 * 2880;
  /* The header is padded in place: every caller's buffer holds whole blocks. */
  if (hbytes > c->cap || c->full)
    return tsr__err(h->ctx, TSR_EINVAL, "hips: the header of \"%s\" outgrew its buffer", rel);
  memset(c->p + c->len, ' ', hbytes - c->len);
  if (h->fbuf_cap < dbytes + pad) {
    tsr__free(h->ctx, h->fbuf);
    h->fbuf_cap = 0;
    if ((h->fbuf = tsr__malloc(h->ctx, dbytes + pad)) == NULL)
      return tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory writing \"%s\"", rel);
    h->fbuf_cap = dbytes + pad;
  }
  d = h->fbuf;
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, data + i, 4);
    d[4 * i] = (unsigned char)(u >> 24), d[4 * i + 1] = (unsigned char)(u >> 16);
    d[4 * i + 2] = (unsigned char)(u >> 8), d[4 * i + 3] = (unsigned char)u;
  }
  memset(d + dbytes, 0, pad);
  return write_file(h, rel, c->p, hbytes, d, dbytes + pad);
}

/* Read back a tile this run wrote (T x T float32 after a header). */
static int read_tile(hips_t *h, const char *rel, float *out) {
  char path[PATH_MAX], block[2880];
  size_t n = (size_t)h->T * (size_t)h->T;
  unsigned char *d = (unsigned char *)out;
  bool end = false;
  int rc = 0;
  FILE *f;
  snprintf(path, sizeof path, "%s/%s", h->dir, rel);
  if ((f = fopen(path, "rb")) == NULL)
    return tsr__err(h->ctx, TSR_EIO, "hips: cannot read back \"%s\": %s", path, strerror(errno));
  while (!end) {
    if (fread(block, 1, sizeof block, f) != sizeof block) {
      rc = tsr__err(h->ctx, TSR_EIO, "hips: \"%s\" ends inside its header", path);
      goto out;
    }
    for (int k = 0; k < 36 && !end; k++)
      end = memcmp(block + 80 * k, "END     ", 8) == 0;
  }
  if (fread(d, 4, n, f) != n) {
    rc = tsr__err(h->ctx, TSR_EIO, "hips: \"%s\" holds fewer than %d x %d values", path, h->T,
                  h->T);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)d[4 * i] << 24 | (uint32_t)d[4 * i + 1] << 16 |
                 (uint32_t)d[4 * i + 2] << 8 | d[4 * i + 3];
    memcpy(out + i, &u, 4);
  }
out:
  fclose(f);
  return rc;
}

/* The PNG is made in memory (a tile is a few hundred kB) and written as
 * every other file is. */
static int write_png(hips_t *h, const char *rel, const double *img, int64_t nx, int64_t ny,
                     bool bottom_up, unsigned char *row) {
  char *mem = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&mem, &len);
  int rc = 0;
  if (f == NULL)
    return tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory for \"%s\"", rel);
  if (tsr__png_encode(f, img, nx, ny, h->cut[0], h->cut[1], (int)h->o.stretch, bottom_up,
                      PNG_ZLEVEL, row) != 0)
    rc = tsr__err(h->ctx, TSR_EIO, "hips: cannot encode \"%s\" (libpng failed)", rel);
  if (fclose(f) != 0 && rc == 0)
    rc = tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory for \"%s\"", rel);
  if (rc == 0)
    rc = write_file(h, rel, mem, len, NULL, 0);
  free(mem);
  return rc;
}

static void tile_rel(char *buf, size_t cap, int order, int64_t idx, const char *ext) {
  snprintf(buf, cap, "Norder%d/Dir%lld/Npix%lld.%s", order, (long long)(idx / 10000 * 10000),
           (long long)idx, ext);
}

/* Tile idx of `order` (data T x T in h->tile, its CRPIX) as FITS and PNG. */
static int write_tile(hips_t *h, int order, int64_t idx, const double crpix[2]) {
  char rel[96], buf[40 * 81];
  cards_t c = {buf, 0, sizeof buf, 0, false};
  int64_t n = (int64_t)h->T * h->T;
  int rc;
  snprintf(rel, sizeof rel, "Norder%d", order);
  if ((rc = make_dir(h, rel)) != 0)
    return rc;
  snprintf(rel, sizeof rel, "Norder%d/Dir%lld", order, (long long)(idx / 10000 * 10000));
  if ((rc = make_dir(h, rel)) != 0)
    return rc;
  card(&c, "SIMPLE", "T");
  card(&c, "BITPIX", "%d", -32);
  card(&c, "NAXIS", "%d", 2);
  card(&c, "NAXIS1", "%d", h->T);
  card(&c, "NAXIS2", "%d", h->T);
  wcs_cards(&c, h, order, crpix);
  card(&c, "ORDER", "%d", order);
  card(&c, "NPIX", "%lld", (long long)idx);
  tile_rel(rel, sizeof rel, order, idx, "fits");
  if ((rc = write_fits(h, rel, &c, h->tile, n)) != 0)
    return rc;
  if (h->o.formats & TSR_HIPS_PNG) {
    for (int64_t i = 0; i < n; i++)
      h->dtile[i] = h->tile[i];
    tile_rel(rel, sizeof rel, order, idx, "png");
    if ((rc = write_png(h, rel, h->dtile, h->T, h->T, true, h->row)) != 0)
      return rc;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Which tiles                                                         */

typedef struct {
  double c[3];                /* centre, unit vector in the HiPS frame */
  double r;                   /* radius, radians; > pi = all sky */
} disc_t;

/* A disc holding input `in`: its centre pixel and 64 samples of its edges,
 * taken into the HiPS frame.  An edge off the sky (an all-sky image) or a
 * disc wider than 120 degrees (reproject's limit) gives the whole sky.
 * icrs: the centre in ICRS, for hips_initial_ra/dec. */
static int input_disc(hips_t *h, int i, tsr_node_t *in, disc_t *d, double icrs[3]) {
  enum { NS = 16, NP = 4 * NS + 1 };
  double x[NP], y[NP], v[3 * NP], c2[3];
  int64_t nx = in->shape[0], ny = in->shape[1];
  tsr__cel_t *cel = NULL;
  tsr__frame_xform_t xf;
  char what[64];
  int rc;
  snprintf(what, sizeof what, "input %d", i);
  if ((rc = tsr__cel_new(h->ctx, in->wcs, what, &cel)) != 0)
    return rc;
  x[0] = (double)(nx - 1) / 2, y[0] = (double)(ny - 1) / 2;
  for (int s = 0; s < NS; s++) {
    double f = (double)s / NS;
    x[1 + s] = -0.5 + f * (double)nx, y[1 + s] = -0.5;
    x[1 + NS + s] = nx - 0.5, y[1 + NS + s] = -0.5 + f * (double)ny;
    x[1 + 2 * NS + s] = nx - 0.5 - f * (double)nx, y[1 + 2 * NS + s] = ny - 0.5;
    x[1 + 3 * NS + s] = -0.5, y[1 + 3 * NS + s] = ny - 0.5 - f * (double)ny;
  }
  tsr__cel_pix2vec(cel, NP, x, y, v);
  memcpy(c2, v, sizeof c2);
  tsr__frame_xform(tsr__cel_frame(cel), &(tsr__frame_t){TSR__SKY_ICRS, 0, 0}, &xf);
  tsr__frame_apply(&xf, 1, c2);
  memcpy(icrs, c2, sizeof c2);
  tsr__frame_xform(tsr__cel_frame(cel), &h->hf.frame, &xf);
  tsr__frame_apply(&xf, NP, v);
  tsr__cel_free(cel);
  memcpy(d->c, v, sizeof d->c);
  d->r = 0;
  for (int p = 1; p < NP; p++)
    d->r = fmax(d->r, isnan(v[3 * p]) || isnan(v[0]) ? 4 * M_PI : angle_between(v, v + 3 * p));
  if (d->r > 120 * M_PI / 180)
    d->r = 4 * M_PI;
  return 0;
}

typedef struct {
  int64_t *v;
  size_t n, cap;
} idxlist_t;

static int push(tsr_ctx_t *ctx, idxlist_t *l, int64_t x) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 1024;
    int64_t *p = tsr__realloc(ctx, l->v, cap * sizeof *p);
    if (p == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "hips: out of memory listing tiles");
    l->v = p, l->cap = cap;
  }
  l->v[l->n++] = x;
  return 0;
}

/* NESTED pixels of `order` under pixel idx of order o whose sky may meet a
 * disc: a pixel's centre is within 1.5 sqrt(4 pi / npix) of all its points. */
static int descend(hips_t *h, const disc_t *d, int nd, int o, int64_t idx, idxlist_t *out) {
  double c[3], reach = 1.5 * sqrt(4 * M_PI / (12.0 * ldexp(1.0, 2 * o)));
  bool meets = false;
  pixel_point(o, idx, 0.5, 0.5, c);
  for (int i = 0; i < nd && !meets; i++)
    meets = d[i].r > M_PI || angle_between(c, d[i].c) <= d[i].r + reach;
  if (!meets)
    return 0;
  if (o == h->k)
    return push(h->ctx, out, idx);
  for (int s = 0; s < 4; s++) {
    int rc = descend(h, d, nd, o + 1, 4 * idx + s, out);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Keep the candidates whose tile meets an input's pixels: 25 points of the
 * tile (a 5 x 5 grid of its HEALPix pixel, edges included) taken into each
 * input's pixels, their bounding box grown by a quarter of its size (the
 * tile's edges curve between the points) and 2 pixels, against the image.
 * A point off the input's projection keeps the tile (undecided).  The disc
 * only bounds an input's sky; this is its footprint, so that the tiles of
 * the disc's corners beyond the image cost nothing, not even empty blocks
 * in the cache. */
static int cull_tiles(hips_t *h, int n, tsr_node_t *const *inputs, idxlist_t *cand) {
  enum { G = 5, NP = G * G };
  double v[3 * NP], x[NP], y[NP];
  tsr__cel_t **cel = tsr__calloc(h->ctx, (size_t)n, sizeof *cel);
  tsr__frame_xform_t *xf = tsr__calloc(h->ctx, (size_t)n, sizeof *xf);
  size_t kept = 0;
  int rc = 0;
  if (cel == NULL || xf == NULL) {
    rc = tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++) {
    if ((rc = tsr__cel_new(h->ctx, inputs[i]->wcs, inputs[i]->name, &cel[i])) != 0)
      goto out;
    tsr__frame_xform(&h->hf.frame, tsr__cel_frame(cel[i]), &xf[i]);
  }
  for (size_t t = 0; t < cand->n; t++) {
    bool meets = false;
    for (int i = 0; i < n && !meets; i++) {
      double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY, gx, gy;
      bool undecided = false;
      for (int p = 0; p < NP; p++)
        pixel_point(h->k, cand->v[t], (double)(p % G) / (G - 1), (double)(p / G) / (G - 1),
                    v + 3 * p);
      tsr__frame_apply(&xf[i], NP, v);
      tsr__cel_vec2pix(cel[i], NP, v, x, y);
      for (int p = 0; p < NP; p++) {
        undecided |= !isfinite(x[p]) || !isfinite(y[p]);
        x0 = fmin(x0, x[p]), x1 = fmax(x1, x[p]), y0 = fmin(y0, y[p]), y1 = fmax(y1, y[p]);
      }
      gx = (x1 - x0) / 4 + 2, gy = (y1 - y0) / 4 + 2;
      meets = undecided || (x1 + gx >= -0.5 && x0 - gx <= (double)inputs[i]->shape[0] - 0.5 &&
                            y1 + gy >= -0.5 && y0 - gy <= (double)inputs[i]->shape[1] - 0.5);
    }
    if (meets)
      cand->v[kept++] = cand->v[t];
  }
  cand->n = kept;
out:
  for (int i = 0; cel && i < n; i++)
    tsr__cel_free(cel[i]);
  tsr__free(h->ctx, cel);
  tsr__free(h->ctx, xf);
  return rc;
}

static int cmp_rows(const void *a, const void *b) {
  const tile_t *x = a, *y = b;
  if (x->border != y->border)
    return x->border - y->border;
  if (x->by != y->by)
    return x->by < y->by ? -1 : 1;
  return (x->bx > y->bx) - (x->bx < y->bx);
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* ------------------------------------------------------------------ */
/* The deepest order                                                   */

/* Region r of node n into dst (contiguous) on the call's run: its
 * executor, its cache and, under MPI, the ranks that serve it.  Sparse or
 * not as a tsr_compute of the region alone would be (how sources read). */
static int compute(hips_t *h, tsr_node_t *n, const tsr_region_t *r, void *dst) {
  void *planes[TSR__MAX_PLANES] = {0};
  int64_t stride[TSR_MAX_DIMS];
  planes[n->plane] = dst;
  tsr__contiguous_strides(r, stride);
  tsr__run_set_request(h->exec, 0, n, r);
  return tsr__run_region(h->exec, n->owner, r, planes, stride);
}

/* The 0.5 and 99.5 percentiles of a sample of every input: up to 64 rows
 * evenly spaced, every step-th value of each (about 512 a row), so that
 * the sample reads 64 rows of each file, never the whole of it.  One grey
 * scale for every PNG tile, so that tiles match. */
static int sample_cut(hips_t *h, int n, tsr_node_t *const *inputs) {
  double *all = NULL;
  size_t nall = 0, cap = 0;
  void *row = NULL;
  int rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    tsr_node_t *in = inputs[i];
    int64_t nx = in->shape[0], ny = in->shape[1], rows = ny < 64 ? ny : 64;
    int64_t step = nx > 512 ? (nx + 511) / 512 : 1;
    size_t es = tsr_dtype_size(in->dtype);
    tsr__free(h->ctx, row);
    row = tsr__mallocarray(h->ctx, (size_t)nx, es);
    {
      double *p = tsr__realloc(h->ctx, all, (cap += (size_t)(rows * (nx / step + 1))) * sizeof *all);
      if (p != NULL)
        all = p;
      if (row == NULL || p == NULL) {
        rc = tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory sampling the inputs");
        break;
      }
    }
    for (int64_t k = 0; k < rows && rc == 0; k++) {
      int64_t y = rows > 1 ? k * (ny - 1) / (rows - 1) : 0;
      tsr_region_t r = {{0, y, 0, 0}, {nx, y + 1, 1, 1}};
      if ((rc = compute(h, in, &r, row)) != 0)
        break;
      for (int64_t x = 0; x < nx; x += step) {
        double v = in->dtype == TSR_F64 ? ((double *)row)[x] : ((float *)row)[x];
        if (isfinite(v))
          all[nall++] = v;
      }
    }
  }
  if (rc == 0) {
    h->cut[0] = 0, h->cut[1] = 1;
    if (nall > 0) {
      qsort(all, nall, sizeof *all, tsr__cmp_double);
      h->cut[0] = tsr__percentile(all, nall, 0.5);
      h->cut[1] = tsr__percentile(all, nall, 99.5);
    }
  }
  tsr__free(h->ctx, row);
  tsr__free(h->ctx, all);
  return rc;
}

static bool any_finite(const float *p, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (isfinite(p[i]))
      return true;
  return false;
}

static void report_progress(const tsr_hips_opts_t *o, int64_t done, int64_t total) {
  if (o->run && o->run->progress)
    o->run->progress(o->run->progress_ud, done, total);
}

static bool cancelled(const tsr_hips_opts_t *o) {
  return o->run && o->run->cancel && *o->run->cancel;
}

/* The deepest tiles: rows of up to ROW_TILES neighbouring boxes computed
 * as one region of `map`; a border tile is the NaN-ignoring mean of its
 * two boxes, computed alone.  Tiles with data are written and listed. */
static int deepest(hips_t *h, tsr_node_t *map, const tile_t *tiles, size_t nt, idxlist_t *out) {
  int64_t T = h->T, TT = T * T;
  float *buf = tsr__mallocarray(h->ctx, (size_t)(ROW_TILES * TT), sizeof *buf);
  float *two = tsr__mallocarray(h->ctx, (size_t)TT, sizeof *two);
  int rc = 0;
  if (buf == NULL || two == NULL) {
    rc = tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory for a row of %d tiles", ROW_TILES);
    goto out;
  }
  for (size_t i = 0, j; i < nt; i = j) {
    const tile_t *a = &tiles[i];
    tsr_region_t r = {{a->bx * T, a->by * T, 0, 0}, {0, a->by * T + T, 1, 1}};
    int64_t w;
    if (cancelled(&h->o)) {
      rc = tsr__err(h->ctx, TSR_ECANCELED, "hips: cancelled");
      goto out;
    }
    for (j = i + 1; !a->border && j < nt && j - i < ROW_TILES && !tiles[j].border &&
                    tiles[j].by == a->by && tiles[j].bx == tiles[j - 1].bx + 1;)
      j++;
    w = (int64_t)(j - i);
    r.stop[0] = (a->bx + w) * T;
    if ((rc = compute(h, map, &r, buf)) != 0)
      goto out;
    for (size_t t = i; t < j; t++) {
      for (int64_t y = 0; y < T; y++)
        memcpy(h->tile + y * T, buf + y * w * T + (int64_t)(t - i) * T, (size_t)T * sizeof *buf);
      if (tiles[t].border && tiles[t].has2) {
        tsr_region_t r2 = {{tiles[t].b2x * T, tiles[t].b2y * T, 0, 0},
                           {tiles[t].b2x * T + T, tiles[t].b2y * T + T, 1, 1}};
        if ((rc = compute(h, map, &r2, two)) != 0)
          goto out;
        for (int64_t p = 0; p < TT; p++) {
          float u = h->tile[p], v = two[p];
          h->tile[p] = isnan(u) ? v : isnan(v) ? u : (u + v) / 2;
        }
      }
      if (!any_finite(h->tile, TT))
        continue;
      for (int64_t p = 0; p < TT; p++)
        if (isfinite(h->tile[p]))
          h->dmin = fmin(h->dmin, h->tile[p]), h->dmax = fmax(h->dmax, h->tile[p]);
      if ((rc = write_tile(h, h->k, tiles[t].idx, tiles[t].crpix)) != 0 ||
          (rc = push(h->ctx, out, tiles[t].idx)) != 0)
        goto out;
    }
    report_progress(&h->o, (int64_t)j, (int64_t)nt);
  }
  if (out->n > 0)
    qsort(out->v, out->n, sizeof *out->v, cmp_i64);
out:
  tsr__free(h->ctx, buf);
  tsr__free(h->ctx, two);
  return rc;
}

/* The 2x2 NaN-ignoring means of src (n x n) into dst (n/2 x n/2, row
 * stride `stride`): astropy's block_reduce with np.nanmean. */
static void halve(const float *src, int64_t n, float *dst, int64_t stride) {
  for (int64_t y = 0; y < n / 2; y++)
    for (int64_t x = 0; x < n / 2; x++) {
      double s = 0;
      int c = 0;
      for (int k = 0; k < 4; k++) {
        float v = src[(2 * y + k / 2) * n + 2 * x + k % 2];
        if (!isnan(v))
          s += v, c++;
      }
      dst[y * stride + x] = c ? (float)(s / c) : NAN;
    }
}

/* Order o from the sorted tiles `child` of order o + 1: each parent is its
 * four children halved, child s in the quadrant reproject gives it (x high
 * for s = 2, 3; y high for s = 0, 2). */
static int lower(hips_t *h, int o, const idxlist_t *child, idxlist_t *out) {
  int64_t T = h->T, half = T / 2;
  float *c = tsr__mallocarray(h->ctx, (size_t)(T * T), sizeof *c);
  tsr__cel_t *cel = NULL;
  int rc;
  if (c == NULL)
    return tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory");
  if ((rc = map_wcs(h, o, NULL, &cel)) != 0)
    goto out;
  for (size_t i = 0; i < child->n;) {
    int64_t p = child->v[i] / 4;
    tile_t t;
    for (int64_t q = 0; q < T * T; q++)
      h->tile[q] = NAN;
    for (; i < child->n && child->v[i] / 4 == p; i++) {
      int s = (int)(child->v[i] % 4);
      char rel[96];
      tile_rel(rel, sizeof rel, o + 1, child->v[i], "fits");
      if ((rc = read_tile(h, rel, c)) != 0)
        goto out;
      halve(c, T, h->tile + (s & 1 ? 0 : half) * T + ((s >> 1) & 1) * half, T);
    }
    if ((rc = place_tile(h, cel, o, p, &t)) != 0 || (rc = write_tile(h, o, p, t.crpix)) != 0 ||
        (rc = push(h->ctx, out, p)) != 0)
      goto out;
  }
out:
  tsr__cel_free(cel);
  tsr__free(h->ctx, c);
  return rc;
}

/* Norder{o}/Allsky.fits and .png: every tile of order o shrunk to at most
 * ALLSKY_TILE pixels (NaN-ignoring means of power-of-two blocks), laid in
 * NESTED order in floor(sqrt(12 4^o)) columns, as the HiPS standard and
 * reproject lay them; each block of the PNG is its tile as the tile's PNG
 * shows it (north up). */
static int allsky(hips_t *h, int o, const idxlist_t *l) {
  int64_t T = h->T, f = 1, a, ntiles = 12 * ((int64_t)1 << (2 * o)), W, H, nx, ny;
  float *m = NULL, *c = NULL, *tmp = NULL;
  double *d = NULL;
  unsigned char *row = NULL;
  char buf[2881], rel[64];
  cards_t cc = {buf, 0, sizeof buf, 0, false};
  int rc = 0;
  if (l->n == 0)
    return 0;
  while (T / (2 * f) >= ALLSKY_TILE)
    f *= 2;
  a = T / f;
  W = (int64_t)floor(sqrt((double)ntiles));
  while (W * W > ntiles)
    W--;
  H = (ntiles + W - 1) / W;
  nx = W * a, ny = H * a;
  m = tsr__mallocarray(h->ctx, (size_t)(nx * ny), sizeof *m);
  c = tsr__mallocarray(h->ctx, (size_t)(T * T), sizeof *c);
  tmp = tsr__mallocarray(h->ctx, (size_t)(T * T), sizeof *tmp);
  d = tsr__mallocarray(h->ctx, (size_t)(nx * ny), sizeof *d);
  row = tsr__mallocarray(h->ctx, (size_t)nx, 2);
  if (!m || !c || !tmp || !d || !row) {
    rc = tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory for Norder%d/Allsky", o);
    goto out;
  }
  for (int64_t q = 0; q < nx * ny; q++)
    m[q] = NAN;
  for (size_t i = 0; i < l->n; i++) {
    int64_t r = l->v[i] / W, col = l->v[i] % W, n = T;
    tile_rel(rel, sizeof rel, o, l->v[i], "fits");
    if ((rc = read_tile(h, rel, c)) != 0)
      goto out;
    for (; n > a; n /= 2) {
      halve(c, n, tmp, n / 2);
      memcpy(c, tmp, (size_t)(n / 2 * n / 2) * sizeof *c);
    }
    for (int64_t y = 0; y < a; y++)
      memcpy(m + (r * a + y) * nx + col * a, c + y * a, (size_t)a * sizeof *m);
  }
  card(&cc, "SIMPLE", "T");
  card(&cc, "BITPIX", "%d", -32);
  card(&cc, "NAXIS", "%d", 2);
  card(&cc, "NAXIS1", "%lld", (long long)nx);
  card(&cc, "NAXIS2", "%lld", (long long)ny);
  snprintf(rel, sizeof rel, "Norder%d/Allsky.fits", o);
  if ((rc = write_fits(h, rel, &cc, m, nx * ny)) != 0)
    goto out;
  if (h->o.formats & TSR_HIPS_PNG) {
    for (int64_t y = 0; y < ny; y++) {
      int64_t src = y / a * a + (a - 1 - y % a);
      for (int64_t x = 0; x < nx; x++)
        d[y * nx + x] = m[src * nx + x];
    }
    snprintf(rel, sizeof rel, "Norder%d/Allsky.png", o);
    rc = write_png(h, rel, d, nx, ny, false, row);
  }
out:
  tsr__free(h->ctx, m);
  tsr__free(h->ctx, c);
  tsr__free(h->ctx, tmp);
  tsr__free(h->ctx, d);
  tsr__free(h->ctx, row);
  return rc;
}

/* Moc.fits (MOC 1.1): the coverage of the deepest tiles with data as a
 * NUNIQ list (4 4^order + index), each complete set of four siblings
 * merged into its parent, sorted, in a binary table of 64-bit integers. */
static int write_moc(hips_t *h, const idxlist_t *deep) {
  idxlist_t cur = {0}, up = {0}, uniq = {0};
  char *buf = NULL;
  size_t hdr = 2 * 2880, n, bytes;
  int rc = 0;
  for (size_t i = 0; i < deep->n && rc == 0; i++)
    rc = push(h->ctx, &cur, deep->v[i]);
  for (int L = h->k; L >= 0 && rc == 0; L--) {
    up.n = 0;
    for (size_t i = 0; i < cur.n && rc == 0;) {
      int64_t v = cur.v[i];
      if (L > 0 && v % 4 == 0 && i + 3 < cur.n && cur.v[i + 3] == v + 3) {
        rc = push(h->ctx, &up, v / 4);
        i += 4;
      } else {
        rc = push(h->ctx, &uniq, 4 * ((int64_t)1 << (2 * L)) + v);
        i++;
      }
    }
    idxlist_t t = cur;
    cur = up, up = t;
  }
  if (rc != 0)
    goto out;
  qsort(uniq.v, uniq.n, sizeof *uniq.v, cmp_i64);
  n = uniq.n;
  bytes = hdr + (n * 8 + 2879) / 2880 * 2880;
  if ((buf = tsr__calloc(h->ctx, bytes, 1)) == NULL) {
    rc = tsr__err(h->ctx, TSR_ENOMEM, "hips: out of memory for Moc.fits");
    goto out;
  }
  {
    cards_t c = {buf, 0, 2881, 0, false};
    card(&c, "SIMPLE", "T");
    card(&c, "BITPIX", "%d", 8);
    card(&c, "NAXIS", "%d", 0);
    card(&c, "EXTEND", "T");
    card(&c, "END", "%s", "");
    memset(buf + c.len, ' ', 2880 - c.len);
    c = (cards_t){buf + 2880, 0, 2881, 0, false};
    card(&c, "XTENSION", "'BINTABLE'");
    card(&c, "BITPIX", "%d", 8);
    card(&c, "NAXIS", "%d", 2);
    card(&c, "NAXIS1", "%d", 8);
    card(&c, "NAXIS2", "%zu", n);
    card(&c, "PCOUNT", "%d", 0);
    card(&c, "GCOUNT", "%d", 1);
    card(&c, "TFIELDS", "%d", 1);
    card(&c, "TTYPE1", "'UNIQ    '");
    card(&c, "TFORM1", "'1K      '");
    card(&c, "PIXTYPE", "'HEALPIX '");
    card(&c, "ORDERING", "'NUNIQ   '");
    card(&c, "COORDSYS", "'%c       '", h->hf.coordsys);
    card(&c, "MOCORDER", "%d", h->k);
    card(&c, "MOCTOOL", "'tessera %s'", tsr_version_string());
    card(&c, "END", "%s", "");
    memset(buf + 2880 + c.len, ' ', 2880 - c.len);
  }
  for (size_t i = 0; i < n; i++)
    for (int b = 0; b < 8; b++)
      buf[hdr + 8 * i + (size_t)b] = (char)((uint64_t)uniq.v[i] >> (56 - 8 * b));
  rc = write_file(h, "Moc.fits", buf, bytes, NULL, 0);
out:
  tsr__free(h->ctx, buf);
  tsr__free(h->ctx, cur.v);
  tsr__free(h->ctx, up.v);
  tsr__free(h->ctx, uniq.v);
  return rc;
}

static int write_index(hips_t *h, const char *raw_title) {
  char html[2048], title[128];
  size_t n = 0;
  /* The title goes into HTML text and a JavaScript string: keep it to
   * characters that mean nothing in either. */
  for (const char *p = raw_title; *p && n + 1 < sizeof title; p++)
    title[n++] = (isalnum((unsigned char)*p) || strchr(" ._-+()[]", *p)) ? *p : '_';
  title[n] = '\0';
  int len = snprintf(html, sizeof html,
      "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>%s</title>\n"
      "<script src=\"https://aladin.cds.unistra.fr/AladinLite/api/v3/latest/aladin.js\" "
      "charset=\"utf-8\"></script>\n</head>\n<body>\n"
      "<p>HiPS \"%s\" (order %d, %s frame, %d-pixel tiles), written by tessera; "
      "its metadata are in <a href=\"properties\">properties</a>.</p>\n"
      "<div id=\"sky\" style=\"width: 100%%; height: 80vh\"></div>\n"
      "<script>\nA.init.then(() => {\n  const a = A.aladin('#sky', {fullScreen: false});\n"
      "  a.setImageSurvey(a.createImageSurvey('%s', '%s', window.location.href.replace(/\\/[^/]*$/, ''), "
      "'%s', %d, {imgFormat: 'png'}));\n});\n</script>\n</body>\n</html>\n",
      title, title, h->k, h->hf.name, h->T, title, title, h->hf.name, h->k);
  return write_file(h, "index.html", html, (size_t)len, NULL, 0);
}

static int write_properties(hips_t *h, const char *title, const double icrs[3], double fov_deg) {
  char text[4096], uuid[40], date[32];
  unsigned char r[16];
  time_t now = time(NULL);
  struct tm tm;
  double ra = atan2(icrs[1], icrs[0]) * 180 / M_PI, dec = asin(fmax(-1, fmin(1, icrs[2]))) * 180 / M_PI;
  double scale = sqrt(4 * M_PI / 12.0) / ldexp((double)h->T, h->k) * 180 / M_PI;
  size_t len = 0;
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
    for (int i = 0; i < 16; i++)
      r[i] = (unsigned char)(rand() ^ (int)now ^ (int)getpid());
  r[6] = (unsigned char)((r[6] & 0x0f) | 0x40), r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
  snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
           r[14], r[15]);
  gmtime_r(&now, &tm);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%MZ", &tm);
  if (ra < 0)
    ra += 360;
#define PROP(key, ...)                                                                    \
  do {                                                                                    \
    len += (size_t)snprintf(text + len, sizeof text - len, "%-20s = ", key);              \
    len += (size_t)snprintf(text + len, sizeof text - len, __VA_ARGS__);                  \
    len += (size_t)snprintf(text + len, sizeof text - len, "\n");                         \
  } while (0)
  PROP("creator_did", "ivo://tessera/P/%s", uuid);
  PROP("obs_title", "%s", title);
  PROP("dataproduct_type", "image");
  PROP("hips_version", "1.4");
  PROP("hips_release_date", "%s", date);
  PROP("hips_status", "public master clonableOnce");
  PROP("hips_tile_format", "%s", h->o.formats & TSR_HIPS_PNG ? "fits png" : "fits");
  PROP("hips_tile_width", "%d", h->T);
  PROP("hips_order", "%d", h->k);
  PROP("hips_order_min", "0");
  PROP("hips_frame", "%s", h->hf.name);
  PROP("hips_builder", "tessera %s", tsr_version_string());
  PROP("hips_initial_ra", "%.10g", ra);
  PROP("hips_initial_dec", "%.10g", dec);
  PROP("hips_initial_fov", "%.10g", fov_deg);
  PROP("hips_pixel_bitpix", "-32");
  PROP("hips_pixel_cut", "%.9g %.9g", h->cut[0], h->cut[1]);
  PROP("hips_data_range", "%.9g %.9g", h->dmin, h->dmax);
  PROP("hips_pixel_scale", "%.10g", scale);
#undef PROP
  if (len >= sizeof text)
    return tsr__err(h->ctx, TSR_EINVAL, "hips: properties too long (title of %zu characters)",
                    strlen(title));
  return write_file(h, "properties", text, len, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* The call                                                            */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  if (ftw->level == 0)
    return 0;
  if (flag == FTW_DP)
    rmdir(path);
  else if (flag == FTW_F || flag == FTW_SL)
    unlink(path);
  return 0;
}

/* The directory: new (made here) or empty, so that everything in it is
 * this run's to write and, on failure, to remove. */
static int open_dir(tsr_ctx_t *ctx, const char *dir, bool *made) {
  struct stat st;
  *made = false;
  if (stat(dir, &st) == 0) {
    DIR *d;
    struct dirent *e;
    int entries = 0;
    if (!S_ISDIR(st.st_mode))
      return tsr__err(ctx, TSR_EINVAL, "hips: \"%s\" exists and is not a directory; expected a "
                                       "new or empty directory", dir);
    if ((d = opendir(dir)) == NULL)
      return tsr__err(ctx, TSR_EIO, "hips: cannot read directory \"%s\": %s", dir, strerror(errno));
    while ((e = readdir(d)) != NULL)
      entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    if (entries > 0)
      return tsr__err(ctx, TSR_EINVAL, "hips: directory \"%s\" is not empty (%d entries); "
                                       "expected a new or empty directory", dir, entries);
    if (access(dir, W_OK) != 0)
      return tsr__err(ctx, TSR_EIO, "hips: cannot write in \"%s\": %s", dir, strerror(errno));
    return 0;
  }
  if (mkdir(dir, 0777) != 0)
    return tsr__err(ctx, TSR_EIO, "hips: cannot create directory \"%s\": %s%s", dir,
                    strerror(errno), errno == ENOENT ? " (its parent must exist)" : "");
  *made = true;
  return 0;
}

static int check_opts(tsr_ctx_t *ctx, const tsr_hips_opts_t *o) {
  int T = o->tile_width;
  if (T != 0 && (T < 8 || T > 4096 || (T & (T - 1)) != 0))
    return tsr__err(ctx, TSR_EINVAL, "hips: tile width %d: expected a power of two from 8 to 4096",
                    T);
  T = T ? T : 512;
  /* The map of order k is 5 2^k T pixels a side: 2^k T <= 2^26 keeps it
   * within what a node may hold (2^60 bytes), pixels of 3 milliarcseconds. */
  int kmax = 26 - (int)lround(log2(T));
  if (o->level < -1 || o->level > kmax)
    return tsr__err(ctx, TSR_EINVAL, "hips: order %d out of range [0, %d] for %d-pixel tiles "
                                     "(or -1 = from the inputs' resolution)", o->level, kmax, T);
  if ((int)o->order < TSR_ORDER_NEAREST || o->order > TSR_ORDER_BICUBIC)
    return tsr__err(ctx, TSR_EINVAL, "hips: interpolation order %d: expected 0 to 3", (int)o->order);
  if (!(o->mapping_tolerance >= 0 && o->mapping_tolerance <= 1))
    return tsr__err(ctx, TSR_EINVAL, "hips: mapping tolerance %g out of range [0, 1] pixels",
                    o->mapping_tolerance);
  if ((int)o->combine < TSR_COMBINE_MEAN || o->combine > TSR_COMBINE_MEDIAN)
    return tsr__err(ctx, TSR_EINVAL, "hips: combine %d: expected a tsr_combine_t", (int)o->combine);
  if ((o->formats & ~(TSR_HIPS_FITS | TSR_HIPS_PNG)) != 0 || (o->formats && !(o->formats & TSR_HIPS_FITS)))
    return tsr__err(ctx, TSR_EINVAL, "hips: formats %d: expected TSR_HIPS_FITS, optionally | "
                                     "TSR_HIPS_PNG (FITS tiles are always written: lower orders "
                                     "are made from them)", o->formats);
  if (o->has_cut && !(isfinite(o->cut[0]) && isfinite(o->cut[1]) && o->cut[0] < o->cut[1]))
    return tsr__err(ctx, TSR_EINVAL, "hips: cut [%g, %g]: expected finite values, low < high",
                    o->cut[0], o->cut[1]);
  if (o->title != NULL) {
    size_t len = strlen(o->title);
    bool ctl = false;
    for (const char *p = o->title; *p; p++)
      ctl |= iscntrl((unsigned char)*p) != 0;
    if (len == 0 || len > 1000 || ctl)
      return tsr__err(ctx, TSR_EINVAL, "hips: title of %zu characters%s: expected 1 to 1000 "
                      "printable characters (it is a line of properties)", len,
                      ctl ? " with control characters" : "");
  }
  if ((int)o->stretch < TSR_STRETCH_LINEAR || o->stretch > TSR_STRETCH_ASINH)
    return tsr__err(ctx, TSR_EINVAL, "hips: stretch %d: expected a tsr_stretch_t", (int)o->stretch);
  return 0;
}

/* The lowest order whose pixels, sqrt(4 pi / (12 (T 2^k)^2)), are no
 * larger than the finest input's (the geometric mean of its two axes). */
static int auto_level(hips_t *h, int n, tsr_node_t *const *inputs) {
  double finest = INFINITY;
  int kmax = 26 - (int)lround(log2(h->T)), k = 0;
  for (int i = 0; i < n; i++) {
    tsr__cel_t *cel;
    double s[2];
    int rc = tsr__cel_new(h->ctx, inputs[i]->wcs, "input", &cel);
    if (rc != 0)
      return rc;
    tsr__cel_scales(cel, s);
    tsr__cel_free(cel);
    finest = fmin(finest, sqrt(s[0] * s[1]));
  }
  while (k < kmax && sqrt(M_PI / 3) / ldexp((double)h->T, k) * 180 / M_PI > finest * (1 + 1e-9))
    k++;
  return k;
}

int tsr_write_hips(tsr_graph_t *g, int n, tsr_node_t *const *inputs, const char *dir,
                   const tsr_hips_opts_t *opts, tsr_hips_report_t *report) {
  tsr_hips_opts_t dflt = TSR_HIPS_OPTS_INIT;
  hips_t h;
  tsr_ctx_t *ctx;
  tsr_wcs_t *mw = NULL;
  tsr__cel_t *mcel = NULL;
  tsr_node_t **reps = NULL, *map = NULL;
  tsr__mpi_t *mpi = NULL;
  disc_t *discs = NULL;
  tile_t *tiles = NULL;
  idxlist_t cand = {0}, *levels = NULL;
  double icrs[3] = {0, 0, 0}, fov = 0;
  const char *title;
  char base[NAME_MAX + 1];
  bool made = false, started = false;
  int rc;

  tsr__api_check(g != NULL && dir != NULL && (n == 0 || inputs != NULL),
                 "tsr_write_hips: NULL argument");
  ctx = g->ctx;
  memset(&h, 0, sizeof h);
  h.ctx = ctx, h.dir = dir;
  h.o = opts ? *opts : dflt;
  h.dmin = INFINITY, h.dmax = -INFINITY;
  if (h.o.formats == 0)
    h.o.formats = TSR_HIPS_FITS | TSR_HIPS_PNG;
  if (!tsr__graph_check(g))
    return tsr__err(ctx, TSR_ESTATE, "hips: the graph has an error: %s", g->errmsg);
  if (n < 1)
    return tsr__err(ctx, TSR_EINVAL, "hips: expected at least one input, got %d", n);
  if (dir[0] == '\0')
    return tsr__err(ctx, TSR_EINVAL, "hips: expected a directory name, got \"\"");
  if ((rc = check_opts(ctx, &h.o)) != 0 || (rc = frame_of(ctx, h.o.frame, &h.hf)) != 0)
    return rc;
  for (int i = 0; i < n; i++) {
    tsr__cel_t *cel = NULL;
    if (inputs[i] == NULL || inputs[i]->graph != g)
      return tsr__err(ctx, TSR_EINVAL, "hips: input %d is %s", i,
                      inputs[i] ? "a node of another graph" : "NULL");
    if (inputs[i]->ndim != 2 || inputs[i]->wcs == NULL)
      return tsr__err(ctx, TSR_EINVAL, "hips: input %d (%s) is %s; expected a 2-D image with a "
                      "celestial WCS (take a plane of a cube with tsr_slice)", i,
                      inputs[i]->name, inputs[i]->wcs == NULL ? "without a WCS" : "not 2-D");
    if ((rc = tsr__cel_new(ctx, inputs[i]->wcs, inputs[i]->name, &cel)) != 0)
      return rc;
    tsr__cel_free(cel);
  }
  h.T = h.o.tile_width ? h.o.tile_width : 512;
  h.k = h.o.level >= 0 ? h.o.level : auto_level(&h, n, inputs);
  if (h.k < 0)
    return h.k;
  h.run = h.o.run ? *h.o.run : (tsr_run_opts_t){0};
  h.run.progress = NULL;
  title = h.o.title;
  if (title == NULL) {
    /* The directory's name, as reproject's obs_title: "a/b/" names b. */
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/')
      l--;
    const char *s = dir + l;
    while (s > dir && s[-1] != '/')
      s--;
    snprintf(base, sizeof base, "%.*s", (int)(dir + l - s), s);
    title = base;
  }

  /* The lazy map, built alike on every rank of an MPI run. */
  if ((reps = tsr__calloc(ctx, (size_t)n, sizeof *reps)) == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "hips: out of memory");
    goto out;
  }
  if ((rc = map_wcs(&h, h.k, &mw, &mcel)) != 0)
    goto out;
  for (int i = 0; i < n; i++) {
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    io.order = h.o.order;
    io.mapping_tolerance = h.o.mapping_tolerance;
    io.dtype = TSR_F32;
    io.block[0] = io.block[1] = h.T < 256 ? h.T : 256;
    if ((reps[i] = tsr_reproject_interp(g, inputs[i], mw, &io)) == NULL) {
      rc = tsr__err(ctx, tsr_graph_status(g), "hips: %s", tsr_graph_errmsg(g));
      goto out;
    }
  }
  if (n > 1) {
    tsr_coadd_opts_t co = TSR_COADD_OPTS_INIT;
    co.combine = h.o.combine;
    co.dtype = TSR_F32;
    co.block[0] = co.block[1] = h.T < 256 ? h.T : 256;
    map = tsr_coadd(g, n, reps, NULL, &co);
    if (map == NULL) {
      rc = tsr__err(ctx, tsr_graph_status(g), "hips: %s", tsr_graph_errmsg(g));
      goto out;
    }
  } else {
    map = reps[0];
  }
  {
    /* Under MPI the other ranks serve the map's blocks from here on and
     * return rank 0's status (see DESIGN). */
    tsr_region_t full;
    bool served;
    tsr__region_full(&full, map->ndim, map->shape);
    if ((rc = tsr__mpi_enter(g, &h.run, map, &full, &mpi, &served)) != 0 || served) {
      if (rc == 0 && report) {
        memset(report, 0, sizeof *report);
        report->level = h.k, report->tile_width = h.T;
      }
      goto out;
    }
  }
  if ((rc = tsr__run_new(g, &h.run, &h.exec)) != 0)
    goto out;
  if (mpi)
    tsr__mpi_attach(mpi, h.exec);

  /* The tiles the map may hold, before anything is written. */
  discs = tsr__calloc(ctx, (size_t)n, sizeof *discs);
  levels = tsr__calloc(ctx, (size_t)h.k + 1, sizeof *levels);
  h.tile = tsr__mallocarray(ctx, (size_t)h.T * (size_t)h.T, sizeof *h.tile);
  h.dtile = tsr__mallocarray(ctx, (size_t)h.T * (size_t)h.T, sizeof *h.dtile);
  h.row = tsr__mallocarray(ctx, (size_t)h.T, 2);
  if (!discs || !levels || !h.tile || !h.dtile || !h.row) {
    rc = tsr__err(ctx, TSR_ENOMEM, "hips: out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++) {
    double c[3];
    if ((rc = input_disc(&h, i, inputs[i], &discs[i], c)) != 0)
      goto out;
    for (int a = 0; a < 3; a++)
      icrs[a] += c[a];
    fov = fmax(fov, discs[i].r);
  }
  for (int64_t b = 0; b < 12; b++)
    if ((rc = descend(&h, discs, n, 0, b, &cand)) != 0)
      goto out;
  if ((rc = cull_tiles(&h, n, inputs, &cand)) != 0)
    goto out;
  tiles = tsr__mallocarray(ctx, cand.n ? cand.n : 1, sizeof *tiles);
  if (tiles == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "hips: out of memory for %zu tiles", cand.n);
    goto out;
  }
  for (size_t i = 0; i < cand.n; i++)
    if ((rc = place_tile(&h, mcel, h.k, cand.v[i], &tiles[i])) != 0)
      goto out;
  qsort(tiles, cand.n, sizeof *tiles, cmp_rows);
  if (h.o.has_cut)
    h.cut[0] = h.o.cut[0], h.cut[1] = h.o.cut[1];
  else if ((rc = sample_cut(&h, n, inputs)) != 0)
    goto out;

  if ((rc = open_dir(ctx, dir, &made)) != 0)
    goto out;
  started = true;
  if ((rc = deepest(&h, map, tiles, cand.n, &levels[h.k])) != 0)
    goto out;
  if (levels[h.k].n == 0) {
    rc = tsr__err(ctx, TSR_EINVAL, "hips: no tile of order %d has data: the inputs are NaN "
                  "wherever they meet the %zu tiles they reach", h.k, cand.n);
    goto out;
  }
  for (int o = h.k - 1; o >= 0; o--) {
    if (cancelled(&h.o)) {
      rc = tsr__err(ctx, TSR_ECANCELED, "hips: cancelled");
      goto out;
    }
    if ((rc = lower(&h, o, &levels[o + 1], &levels[o])) != 0)
      goto out;
  }
  for (int o = 0; o <= h.k && o <= ALLSKY_MAX_ORDER; o++)
    if ((rc = allsky(&h, o, &levels[o])) != 0)
      goto out;
  if (h.o.moc && (rc = write_moc(&h, &levels[h.k])) != 0)
    goto out;
  {
    double norm = sqrt(icrs[0] * icrs[0] + icrs[1] * icrs[1] + icrs[2] * icrs[2]);
    for (int a = 0; a < 3; a++)
      icrs[a] = norm > 0 ? icrs[a] / norm : (a == 0);
  }
  if ((rc = write_index(&h, title)) != 0 ||
      (rc = write_properties(&h, title, icrs, fov > M_PI ? 180.0 : fov * 180 / M_PI)) != 0)
    goto out;
  if (report) {
    memset(report, 0, sizeof *report);
    report->level = h.k;
    report->tile_width = h.T;
    report->candidates = (int64_t)cand.n;
    report->tiles_deepest = (int64_t)levels[h.k].n;
    for (int o = 0; o <= h.k; o++)
      report->tiles_total += (int64_t)levels[o].n;
    report->cut[0] = h.cut[0], report->cut[1] = h.cut[1];
  }
out:
  if (rc != 0 && started) {
    /* Everything under dir is this run's (it was new or empty). */
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (made)
      rmdir(dir);
  }
  if (rc == 0 && h.exec)
    tsr__run_succeeded(h.exec);
  /* After the removal: the other ranks return when this says so. */
  tsr__mpi_close(mpi, rc);
  tsr__run_free(h.exec);
  if (levels)
    for (int o = 0; o <= h.k; o++)
      tsr__free(ctx, levels[o].v);
  tsr__free(ctx, levels);
  tsr__free(ctx, cand.v);
  tsr__free(ctx, tiles);
  tsr__free(ctx, discs);
  tsr__free(ctx, reps);
  tsr__free(ctx, h.tile);
  tsr__free(ctx, h.dtile);
  tsr__free(ctx, h.row);
  tsr__free(ctx, h.fbuf);
  tsr__cel_free(mcel);
  tsr_wcs_free(mw);
  return rc;
}
