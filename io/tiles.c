/* tiles.c -- a tile-compressed image checked before cfitsio decompresses it.
 *
 * cfitsio trusts the binary table that holds a compressed image: it parses
 * the image's keywords as soon as it reads the header and divides by some
 * (ZTILEn, the Rice block size); its Rice decoder looks for the end of a
 * tile's stream only after each block of pixels, so a corrupt stream reads
 * past its buffer; the PLIO and HCOMPRESS decoders get no length at all,
 * and HCOMPRESS writes as many pixels as the stream says; a corrupt GZIP
 * tile leaks its compressed bytes, and a truncated one grows its output
 * buffer until memory runs out.  So cfitsio sees only what was checked
 * here, in three steps:
 * - before cfitsio reads an extension header (tsr__tiles_precheck, called
 *   from fits.c for each HDU it passes), the keywords it divides by, and
 *   column names it would copy past a buffer;
 * - when the image is opened (tsr__tiles_open), the table's layout
 *   (ZCMPTYPE, ZBITPIX, ZNAXISn, ZTILEn, the P/Q descriptor columns,
 *   NAXIS1/NAXIS2/PCOUNT/THEAP, read from its own cards) and every tile
 *   descriptor against the heap, and the heap against the file (8 or 16
 *   bytes per tile: cheap);
 * - before a box is read (tsr__tiles_check), the stream of each tile it
 *   meets, once per tile and process: a walk that makes exactly the reads
 *   cfitsio's decoder makes, with bounds (RICE_1, PLIO_1, HCOMPRESS_1), or
 *   an inflate into a scratch buffer that must end the gzip stream at the
 *   tile's size (GZIP_1, GZIP_2).
 * Every walk ends exactly where a good stream ends (a stream one byte short
 * is refused; tests check it for each coding).  cfitsio still decodes: its
 * scaling, dithering and BLANK rules stay in one place, and the walks cost
 * less than decoding (4096^2 int16 RICE_1, CPU: 0.33 s read, 0.41 s with
 * the checks).  Bytes are read through cfitsio (fits_move_byte), so an
 * image inside a gzip file, which cfitsio inflates in memory, is read the
 * same way.  Single-threaded: one tsr__tiles_t per fitsfile.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "io.h"
#include "tiles.h"

/* Bigger tiles are refused: cfitsio counts a tile's pixels and bytes in int. */
#define MAX_TILE_PIXELS ((int64_t)1 << 28)

typedef struct {
  int64_t off, len; /* heap byte offset and length in bytes */
} span_t;

/* A variable-length column: where its descriptor sits in a row. */
typedef struct {
  int col;       /* 1-based, 0 if the table has none */
  int64_t at;    /* byte offset of the descriptor in the row */
  bool q;        /* 'Q' (two int64) rather than 'P' (two uint32) */
  char type;     /* TFORM letter of its elements */
  int esize;     /* bytes per array element */
} vcol_t;

struct tsr__tiles_s {
  fitsfile *f;                         /* borrowed */
  const char *path;                    /* borrowed, for messages */
  const char *cards;                   /* the table's header while it is read */
  int ncards;
  int hdu;
  int type;                            /* RICE_1, GZIP_1, ... as fitsio.h numbers them */
  char cmptype[72];                    /* ZCMPTYPE as written */
  int zbitpix;
  int naxis;
  int64_t shape[TSR_MAX_DIMS], tile[TSR_MAX_DIMS], ntiles[TSR_MAX_DIMS];
  int blocksize, bytepix;              /* RICE_1 */
  int64_t heap;                        /* byte position of the heap in the file */
  int64_t n;                           /* tiles */
  span_t *data;                        /* COMPRESSED_DATA, per tile */
  span_t *gz;                          /* GZIP_COMPRESSED_DATA per tile, or NULL */
  bool raw;                            /* an UNCOMPRESSED_DATA column */
  bool scaled;                         /* a ZSCALE or ZZERO column */
  bool lossless;                       /* floats stored unquantized (cfitsio's NO_QUANTIZE) */
  unsigned char *checked;              /* per tile: its stream passed */
  unsigned char *buf;                  /* one tile's compressed bytes */
  size_t cap;
  unsigned char *work;                 /* HCOMPRESS: see hcompress_ok */
  size_t work_cap;
};

static int corrupt(tsr_ctx_t *ctx, const tsr__tiles_t *t, int64_t tile, const char *fmt, ...)
    TSR__PRINTF(4, 5);
static int corrupt(tsr_ctx_t *ctx, const tsr__tiles_t *t, int64_t tile, const char *fmt, ...) {
  char why[TSR__ERRMSG_CAP / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  if (tile < 0)
    return tsr__err(ctx, TSR_EFITS,
                    "fits: \"%s\" HDU %d: the compressed image's table is corrupt (%s)", t->path,
                    t->hdu, why);
  return tsr__err(ctx, TSR_EFITS,
                  "fits: \"%s\" HDU %d: tile %" PRId64 " of the compressed image is corrupt (%s)",
                  t->path, t->hdu, tile + 1, why);
}

/* The card with keyword `kw`, NULL when there is none, or *bad set when
 * it is there more than once or is not "KEYWORD = value".  cfitsio finds a
 * keyword from where it last read (so either of two) and reads a value
 * from column 10 on where the standard says 11: only a card that all
 * readers read alike is used.  Keywords compare as cfitsio's do (case
 * aside, ended by a blank or '='). */
/* A card's keyword as cfitsio names it when it looks one up (ffgknm):
 * an ESO "HIERARCH " card is named by what follows, up to its '='; any
 * other by its characters up to a blank, '=' or NUL, even past column 8.
 * Upper case: cfitsio compares names so. */
static void cfitsio_name(const char *c, char name[72]) {
  size_t n = 0;
  if (memcmp(c, "HIERARCH ", 9) == 0) {
    const char *eq = memchr(c, '=', TSR__CARD), *p = c + 9;
    if (eq == NULL) {
      strcpy(name, "HIERARCH");
      return;
    }
    while (p < eq && *p == ' ')
      p++;
    while (p < eq && n < 71 && *p != '\0')
      name[n++] = (char)toupper((unsigned char)*p++);
    while (n > 0 && name[n - 1] == ' ')
      n--;
  } else {
    while (n < 71 && n < TSR__CARD && c[n] != ' ' && c[n] != '=' && c[n] != '\0')
      name[n] = (char)toupper((unsigned char)c[n]), n++;
  }
  name[n] = '\0';
}

/* The card cfitsio would read for keyword `kw` (upper case).  Keywords
 * are found by the name cfitsio gives a card, so that none it reads is
 * missed here; *bad when there are several (cfitsio reads whichever its
 * search meets first) or one we do not read as cfitsio does: not
 * "KEYWORD = value" from column 9, a HIERARCH card. */
static const char *find_card(const tsr__tiles_t *t, const char *kw, bool *bad) {
  const char *found = NULL;
  char name[72];
  *bad = false;
  for (int i = 0; i < t->ncards; i++) {
    const char *c = t->cards + (size_t)i * TSR__CARD;
    cfitsio_name(c, name);
    if (strcmp(name, kw) != 0)
      continue;
    if (found != NULL || c[8] != '=' || c[9] != ' ' || memcmp(c, "HIERARCH ", 9) == 0)
      *bad = true;
    found = c;
  }
  return *bad ? NULL : found;
}

/* An integer keyword; `def` when it is absent and def >= 0, else an error. */
static int key_i64(tsr_ctx_t *ctx, const tsr__tiles_t *t, const char *kw, int64_t def,
                   int64_t *v) {
  bool bad;
  const char *c = find_card(t, kw, &bad);
  char val[72], *e;
  if (bad)
    return corrupt(ctx, t, -1, "%s is there twice, or not as \"%s = value\"", kw, kw);
  if (c == NULL) {
    *v = def;
    return def >= 0 ? 0 : corrupt(ctx, t, -1, "no %s keyword", kw);
  }
  tsr__card_value(c, val, sizeof val);
  errno = 0;
  long long x = strtoll(val, &e, 10);
  if (e == val || *e != '\0' || errno != 0)
    return corrupt(ctx, t, -1, "%s = %s is not an integer", kw, val);
  *v = (int64_t)x;
  return 0;
}

/* A string keyword, quotes and trailing blanks dropped; "" when absent, or
 * an error as for key_i64. */
static int key_str(tsr_ctx_t *ctx, const tsr__tiles_t *t, const char *kw, char val[72]) {
  bool bad;
  const char *c = find_card(t, kw, &bad);
  size_t n;
  val[0] = '\0';
  if (bad)
    return corrupt(ctx, t, -1, "%s is there twice, or not as \"%s = value\"", kw, kw);
  if (c == NULL)
    return 0;
  tsr__card_value(c, val, 72);
  n = strlen(val);
  if (n >= 2 && val[0] == '\'' && val[n - 1] == '\'') {
    memmove(val, val + 1, n - 2);
    val[n - 2] = '\0';
  }
  for (n = strlen(val); n > 0 && val[n - 1] == ' '; n--)
    val[n - 1] = '\0';
  return 0;
}

/* Bytes per element of a TFORM type letter, 0 if unknown ('X': bits, as 1). */
static int type_size(char c) {
  switch (c) {
  case 'L': case 'X': case 'B': case 'A': return 1;
  case 'I': return 2;
  case 'J': case 'E': return 4;
  case 'K': case 'D': case 'C': case 'P': return 8;
  case 'M': case 'Q': return 16;
  default: return 0;
  }
}

/* Walk TFORM1..TFORMn: the row width they add up to, and where the
 * variable-length columns we read sit. */
static int read_columns(tsr_ctx_t *ctx, tsr__tiles_t *t, int64_t naxis1, vcol_t *data, vcol_t *gz,
                        vcol_t *raw) {
  int64_t nfields = 0, at = 0;
  int rc = key_i64(ctx, t, "TFIELDS", -1, &nfields);
  if (rc != 0)
    return rc;
  if (nfields < 1 || nfields > 999)
    return corrupt(ctx, t, -1, "TFIELDS = %" PRId64 "; expected 1 to 999", nfields);
  for (int c = 1; c <= nfields; c++) {
    char kw[9], form[72], name[72], *p;
    int64_t repeat = 1;
    snprintf(kw, sizeof kw, "TFORM%d", c);
    if ((rc = key_str(ctx, t, kw, form)) != 0)
      return rc;
    snprintf(kw, sizeof kw, "TTYPE%d", c);
    if ((rc = key_str(ctx, t, kw, name)) != 0)
      return rc;
    p = form;
    if (*p >= '0' && *p <= '9') {
      repeat = 0;
      for (; *p >= '0' && *p <= '9' && repeat < (INT64_C(1) << 40); p++)
        repeat = repeat * 10 + (*p - '0');
    }
    int size = type_size(*p);
    if (size == 0 || repeat > (INT64_C(1) << 40))
      return corrupt(ctx, t, -1, "TFORM%d = '%s' is not a binary table column format", c, form);
    /* cfitsio finds columns by name, case aside. */
    vcol_t *v = strcasecmp(name, "COMPRESSED_DATA") == 0        ? data
                : strcasecmp(name, "GZIP_COMPRESSED_DATA") == 0 ? gz
                : strcasecmp(name, "UNCOMPRESSED_DATA") == 0    ? raw
                                                                : NULL;
    t->scaled |= strcasecmp(name, "ZSCALE") == 0 || strcasecmp(name, "ZZERO") == 0;
    if (v != NULL && v->col != 0)
      return corrupt(ctx, t, -1, "two columns are named %s", name);
    if (v != NULL) {
      if ((*p != 'P' && *p != 'Q') || repeat != 1 || type_size(p[1]) == 0 || p[1] == 'P' ||
          p[1] == 'Q')
        return corrupt(ctx, t, -1, "column %s has TFORM%d = '%s'; expected 1PB or 1QB", name, c,
                       form);
      *v = (vcol_t){.col = c, .at = at, .q = *p == 'Q', .type = p[1], .esize = type_size(p[1])};
    }
    at += *p == 'X' ? (repeat + 7) / 8 : repeat * size;
  }
  if (at != naxis1)
    return corrupt(ctx, t, -1, "its columns add up to %" PRId64 " bytes per row, NAXIS1 = %" PRId64,
                   at, naxis1);
  if (data->col == 0)
    return corrupt(ctx, t, -1, "no COMPRESSED_DATA column");
  /* cfitsio reads these columns as bytes (PLIO's as 16-bit words) and
   * would convert other types: the bytes checked would not be the ones
   * decoded. */
  if (data->type != (t->type == PLIO_1 ? 'I' : 'B') || (gz->col && gz->type != 'B'))
    return corrupt(ctx, t, -1, "its compressed data are not of type 1P%c",
                   t->type == PLIO_1 ? 'I' : 'B');
  return 0;
}

static int read_bytes(tsr_ctx_t *ctx, const tsr__tiles_t *t, int64_t pos, int64_t n, void *dst,
                      const char *what) {
  const tsr__cfitsio_t *cf = tsr__cfitsio_loaded();
  int status = 0;
  if (cf->move_byte(t->f, (LONGLONG)pos, 0 /* REPORT_EOF */, &status) ||
      cf->get_bytes(t->f, (LONGLONG)n, dst, &status))
    return tsr__cfitsio_fail(ctx, status, "cannot read %s of \"%s\" HDU %d", what, t->path, t->hdu);
  return 0;
}

static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* Pixels in tile `i` (row i + 1): the tile size, clipped at the image's edge. */
static int64_t tile_pixels(const tsr__tiles_t *t, int64_t i) {
  int64_t n = 1;
  for (int a = 0; a < t->naxis; a++) {
    int64_t k = i % t->ntiles[a], left = t->shape[a] - k * t->tile[a];
    i /= t->ntiles[a];
    n *= left < t->tile[a] ? left : t->tile[a];
  }
  return n;
}

/* A descriptor of column `v` in `row`: its array's place in the heap. */
static int descriptor(tsr_ctx_t *ctx, const tsr__tiles_t *t, const unsigned char *row,
                      const vcol_t *v, int64_t tile, int64_t heap_len, span_t *out) {
  int64_t count, off;
  if (v->q) {
    count = (int64_t)be(row + v->at, 8);
    off = (int64_t)be(row + v->at + 8, 8);
  } else {
    count = (int64_t)be(row + v->at, 4);
    off = (int64_t)be(row + v->at + 4, 4);
  }
  if (count < 0 || off < 0 || count > heap_len / v->esize || off > heap_len - count * v->esize)
    return corrupt(ctx, t, tile,
                   "its descriptor says %" PRId64 " elements of %d bytes at heap offset %" PRId64
                   ", past the heap's %" PRId64 " bytes",
                   count, v->esize, off, heap_len);
  /* No coding here takes more than 8 bytes and a few bits per pixel:
   * a longer stream is not one, and would only cost memory to check. */
  int64_t npix = tile_pixels(t, tile);
  if (count * v->esize > 16 * npix + 4096)
    return corrupt(ctx, t, tile, "its %" PRId64 " compressed bytes for %" PRId64
                   " pixels are more than any coding takes", count * v->esize, npix);
  out->off = off;
  out->len = count * v->esize;
  return 0;
}

static int read_layout(tsr_ctx_t *ctx, tsr__tiles_t *t) {
  int64_t v = 0, nt = 1;
  char kw[9], name2[72];
  int rc;
  if ((rc = key_str(ctx, t, "ZCMPTYPE", t->cmptype)) != 0)
    return rc;
  if (strcmp(t->cmptype, "RICE_1") == 0 || strcmp(t->cmptype, "RICE_ONE") == 0)
    t->type = RICE_1;
  else if (strcmp(t->cmptype, "GZIP_1") == 0)
    t->type = GZIP_1;
  else if (strcmp(t->cmptype, "GZIP_2") == 0)
    t->type = GZIP_2;
  else if (strcmp(t->cmptype, "PLIO_1") == 0)
    t->type = PLIO_1;
  else if (strcmp(t->cmptype, "HCOMPRESS_1") == 0)
    t->type = HCOMPRESS_1;
  else
    return tsr__err(ctx, TSR_ENOTSUP,
                    "fits: \"%s\" HDU %d: compression ZCMPTYPE = '%s' is not supported (RICE_1, "
                    "GZIP_1, GZIP_2, PLIO_1 and HCOMPRESS_1 are)",
                    t->path, t->hdu, t->cmptype);
  if ((rc = key_i64(ctx, t, "ZBITPIX", -1, &v)) != 0)
    return rc;
  if (v != 8 && v != 16 && v != 32 && v != 64 && v != -32 && v != -64)
    return corrupt(ctx, t, -1, "ZBITPIX = %" PRId64 "; expected 8, 16, 32, 64, -32 or -64", v);
  t->zbitpix = (int)v;
  if ((rc = key_i64(ctx, t, "ZNAXIS", -1, &v)) != 0)
    return rc;
  if (v < 1 || v > TSR_MAX_DIMS)
    return tsr__err(ctx, TSR_ENOTSUP, "fits: \"%s\" HDU %d has %" PRId64
                    " axes; 1 to %d are supported", t->path, t->hdu, v, TSR_MAX_DIMS);
  t->naxis = (int)v;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    t->shape[a] = t->tile[a] = t->ntiles[a] = 1;
  for (int a = 0; a < t->naxis; a++) {
    snprintf(kw, sizeof kw, "ZNAXIS%d", a + 1);
    if ((rc = key_i64(ctx, t, kw, -1, &t->shape[a])) != 0)
      return rc;
    if (t->shape[a] < 1 || t->shape[a] > (INT64_C(1) << 40))
      return corrupt(ctx, t, -1, "%s = %" PRId64 "; expected 1 to 2^40", kw, t->shape[a]);
    snprintf(kw, sizeof kw, "ZTILE%d", a + 1);
    if ((rc = key_i64(ctx, t, kw, a == 0 ? t->shape[0] : 1, &t->tile[a])) != 0)
      return rc;
    if (t->tile[a] < 1)
      return corrupt(ctx, t, -1, "%s = %" PRId64 "; expected at least 1", kw, t->tile[a]);
    if (t->tile[a] > t->shape[a])
      t->tile[a] = t->shape[a]; /* what cfitsio reads of it */
    t->ntiles[a] = (t->shape[a] + t->tile[a] - 1) / t->tile[a];
    if (__builtin_mul_overflow(nt, t->ntiles[a], &nt) || nt > (INT64_C(1) << 40))
      return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" HDU %d: image too large (more than 2^40 tiles)",
                      t->path, t->hdu);
  }
  int64_t tp = 1;
  for (int a = 0; a < t->naxis; a++)
    if (__builtin_mul_overflow(tp, t->tile[a], &tp) || tp > MAX_TILE_PIXELS)
      return tsr__err(ctx, TSR_ENOTSUP,
                      "fits: \"%s\" HDU %d: tiles of more than 2^28 pixels are not supported",
                      t->path, t->hdu);
  t->n = nt;
  if (t->type == RICE_1) {
    /* As cfitsio reads them, old files' quirks included. */
    int64_t bs = 0, bp = 4;
    if ((rc = key_i64(ctx, t, "ZVAL1", -1, &bs)) != 0)
      return rc;
    if ((rc = key_str(ctx, t, "ZNAME2", name2)) != 0)
      return rc;
    /* Which decoder cfitsio runs depends on it: it must read as we do. */
    rc = key_i64(ctx, t, "ZVAL2", 4, &bp);
    if (strcmp(name2, "NOISEBIT") == 0)
      bp = 4;
    else if (rc != 0)
      return rc;
    if (bs < 16 && bp > 8) {
      int64_t s = bs;
      bs = bp;
      bp = s;
    }
    if (bs < 1 || bs > MAX_TILE_PIXELS)
      return corrupt(ctx, t, -1, "Rice block size ZVAL1 = %" PRId64 "; expected 16 or 32", bs);
    t->blocksize = (int)bs;
    t->bytepix = bp == 1 || bp == 2 ? (int)bp : 4;
  }
  return 0;
}

int tsr__tiles_open(tsr_ctx_t *ctx, fitsfile *f, const char *path, int hdu, int64_t file_size,
                    tsr__tiles_t **out) {
  const tsr__cfitsio_t *cf = tsr__cfitsio_loaded();
  tsr__tiles_t *t;
  vcol_t data = {0}, gz = {0}, raw = {0};
  int64_t naxis1 = 0, naxis2 = 0, pcount = 0, theap = 0, heap_len, table;
  LONGLONG head, start, end;
  unsigned char *rows = NULL;
  char *hdr = NULL, zquantiz[72];
  int status = 0, rc = TSR_ENOMEM;

  *out = NULL;
  t = tsr__calloc(ctx, 1, sizeof *t);
  if (t == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "fits: out of memory opening \"%s\"", path);
    goto out;
  }
  t->f = f;
  t->path = path;
  t->hdu = hdu;
  /* The table's own cards: cfitsio's keyword calls would show the image's. */
  if (cf->get_hduaddrll(f, &head, &start, &end, &status)) {
    rc = tsr__cfitsio_fail(ctx, status, "cannot read the layout of \"%s\" HDU %d", path, hdu);
    goto out;
  }
  if (start - head > (LONGLONG)TSR__CARD * 100000) {
    rc = corrupt(ctx, t, -1, "a header of %lld bytes", (long long)(start - head));
    goto out;
  }
  if ((hdr = tsr__malloc(ctx, (size_t)(start - head))) == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "fits: out of memory reading \"%s\" HDU %d", path, hdu);
    goto out;
  }
  if ((rc = read_bytes(ctx, t, (int64_t)head, (int64_t)(start - head), hdr, "the header")) != 0)
    goto out;
  t->cards = hdr;
  t->ncards = (int)((start - head) / TSR__CARD);
  if ((rc = read_layout(ctx, t)) != 0 || (rc = key_i64(ctx, t, "NAXIS1", -1, &naxis1)) != 0 ||
      (rc = key_i64(ctx, t, "NAXIS2", -1, &naxis2)) != 0 ||
      (rc = key_i64(ctx, t, "PCOUNT", 0, &pcount)) != 0)
    goto out;
  rc = TSR_EFITS;
  if (naxis1 < 8 || naxis1 > (INT64_C(1) << 30) || pcount < 0 || pcount > (INT64_C(1) << 60)) {
    rc = corrupt(ctx, t, -1, "NAXIS1 = %" PRId64 ", PCOUNT = %" PRId64, naxis1, pcount);
    goto out;
  }
  if (naxis2 != t->n) {
    rc = corrupt(ctx, t, -1, "NAXIS2 = %" PRId64 " rows for %" PRId64 " tiles", naxis2, t->n);
    goto out;
  }
  if (__builtin_mul_overflow(naxis1, naxis2, &table) || table > (INT64_C(1) << 60)) {
    rc = corrupt(ctx, t, -1, "NAXIS1 = %" PRId64 " x NAXIS2 = %" PRId64 " bytes", naxis1, naxis2);
    goto out;
  }
  if ((rc = key_i64(ctx, t, "THEAP", table, &theap)) != 0)
    goto out;
  if (theap < table || theap > table + pcount) {
    rc = corrupt(ctx, t, -1, "THEAP = %" PRId64 " is outside the data (%" PRId64 " bytes)", theap,
                 table + pcount);
    goto out;
  }
  heap_len = table + pcount - theap;
  if ((rc = read_columns(ctx, t, naxis1, &data, &gz, &raw)) != 0 ||
      (rc = key_str(ctx, t, "ZQUANTIZ", zquantiz)) != 0)
    goto out;
  /* cfitsio reads the tiles of unquantized floats as floats or doubles
   * whatever the coding gave: 1 or 2 bytes per pixel overran its buffer
   * (found by fuzzing), so only codings that give 4 or 8 are let through. */
  t->lossless = t->zbitpix < 0 && (!t->scaled || strcmp(zquantiz, "NONE") == 0);
  if (t->lossless && t->type == RICE_1 && t->bytepix != 4) {
    rc = corrupt(ctx, t, -1, "unquantized floats Rice-coded with %d bytes per pixel", t->bytepix);
    goto out;
  }
  t->heap = (int64_t)start + theap;
  t->raw = raw.col != 0;
  if (file_size >= 0 && (int64_t)start + table + pcount > file_size) {
    rc = tsr__err(ctx, TSR_EFITS,
                  "fits: \"%s\" is truncated: HDU %d's compressed image needs %" PRId64
                  " bytes ending at byte %" PRId64 ", the file ends after %" PRId64,
                  path, hdu, table + pcount, (int64_t)start + table + pcount, file_size);
    goto out;
  }

  /* Every descriptor, read a batch of rows at a time. */
  int64_t batch = ((int64_t)1 << 20) / naxis1 + 1;
  t->data = tsr__mallocarray(ctx, (size_t)t->n, sizeof *t->data);
  t->gz = gz.col ? tsr__mallocarray(ctx, (size_t)t->n, sizeof *t->gz) : NULL;
  t->checked = tsr__calloc(ctx, (size_t)t->n, 1);
  rows = tsr__mallocarray(ctx, (size_t)(batch < t->n ? batch : t->n), (size_t)naxis1);
  if (t->data == NULL || (gz.col && t->gz == NULL) || t->checked == NULL || rows == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "fits: out of memory for the %" PRId64 " tiles of \"%s\"",
                  t->n, path);
    goto out;
  }
  for (int64_t i0 = 0; i0 < t->n; i0 += batch) {
    int64_t nr = t->n - i0 < batch ? t->n - i0 : batch;
    if ((rc = read_bytes(ctx, t, (int64_t)start + i0 * naxis1, nr * naxis1, rows,
                         "the tile table")) != 0)
      goto out;
    for (int64_t i = i0; i < i0 + nr; i++) {
      const unsigned char *row = rows + (i - i0) * naxis1;
      span_t s;
      if ((rc = descriptor(ctx, t, row, &data, i, heap_len, &t->data[i])) != 0 ||
          (gz.col && (rc = descriptor(ctx, t, row, &gz, i, heap_len, &t->gz[i])) != 0))
        goto out;
      /* cfitsio reads an uncompressed tile straight into the tile's
       * buffer: it must not hold more than the tile. */
      if (raw.col) {
        if ((rc = descriptor(ctx, t, row, &raw, i, heap_len, &s)) != 0)
          goto out;
        if (s.len / raw.esize > tile_pixels(t, i)) {
          rc = corrupt(ctx, t, i, "%" PRId64 " uncompressed values for its %" PRId64 " pixels",
                       s.len / raw.esize, tile_pixels(t, i));
          goto out;
        }
      }
    }
  }
  t->cards = NULL;
  t->ncards = 0;
  *out = t;
  t = NULL;
  rc = 0;
out:
  tsr__free(ctx, hdr);
  tsr__free(ctx, rows);
  tsr__tiles_free(ctx, t);
  return rc;
}

void tsr__tiles_free(tsr_ctx_t *ctx, tsr__tiles_t *t) {
  if (t == NULL)
    return;
  tsr__free(ctx, t->data);
  tsr__free(ctx, t->gz);
  tsr__free(ctx, t->checked);
  tsr__free(ctx, t->buf);
  tsr__free(ctx, t->work);
  tsr__free(ctx, t);
}

/* cfitsio ends a header at the first card whose keyword (up to a blank) is
 * END, whatever follows it. */
static bool end_card(const char *c) {
  return memcmp(c, "END", 3) == 0 && (c[3] == ' ' || c[3] == '=');
}

int tsr__tiles_precheck(tsr_ctx_t *ctx, fitsfile *f, const char *path, int hdu, int64_t pos) {
  tsr__tiles_t t = {.f = f, .path = path, .hdu = hdu};
  char *cards = NULL;
  size_t len = 0;
  bool zimage = false;
  int rc = 0;
  for (;;) {
    char *nc;
    const tsr__cfitsio_t *cf = tsr__cfitsio_loaded();
    int status = 0;
    /* cfitsio gives up on longer headers; let it say so. */
    if (len >= (size_t)2880 * 1000 || (nc = tsr__realloc(ctx, cards, len + 2880)) == NULL) {
      rc = len >= (size_t)2880 * 1000 ? 0 : tsr__err(ctx, TSR_ENOMEM, "fits: out of memory");
      goto out;
    }
    cards = nc;
    /* A last block cut short fails the first read, but cfitsio keeps what
     * it got, reads the header from it all the same, and so does a second
     * read; no header at all (the end of the file) is for cfitsio to
     * report. */
    for (int tries = 0; tries < 2; tries++) {
      status = 0;
      if (!cf->move_byte(f, (LONGLONG)(pos + (int64_t)len), 0, &status) &&
          !cf->get_bytes(f, 2880, cards + len, &status))
        break;
      cf->clear_errmsg();
    }
    if (status)
      goto out;
    if (len == 0 && memcmp(cards, "XTENSION", 8) != 0)
      goto out;
    for (size_t c = len; c < len + 2880; c += TSR__CARD) {
      char name[72];
      cfitsio_name(cards + c, name);
      zimage |= strcmp(name, "ZIMAGE") == 0;
      /* cfitsio copies a table's column names into 70 bytes with strcpy:
       * an unquoted value of 70 characters overran them (found by
       * fuzzing; glibc aborts).  The standard wants a quoted string,
       * which is at most 68. */
      char val[72];
      tsr__card_value(cards + c, val, sizeof val);
      if (tsr__io_naxis_card(cards + c) > TSR__CFITSIO_MAX_AXES) {
        rc = tsr__err(ctx, TSR_ENOTSUP,
                      "fits: \"%s\" HDU %d has NAXIS = %s; at most %d axes are supported", path,
                      hdu, val, TSR_MAX_DIMS);
        goto out;
      }
      if (strncasecmp(cards + c, "TTYPE", 5) == 0 && cards[c + 5] >= '0' && cards[c + 5] <= '9' &&
          (cards[c + 8] != '=' || cards[c + 9] != ' ' || val[0] != '\'')) {
        char kw[9];
        tsr__card_keyword(cards + c, kw);
        rc = tsr__err(ctx, TSR_EFITS,
                      "fits: \"%s\" HDU %d: %s is not a column name (expected %s = 'name')",
                      path, hdu, kw, kw);
        goto out;
      }
      if (end_card(cards + c)) {
        t.cards = cards;
        t.ncards = (int)(c / TSR__CARD);
        rc = zimage ? read_layout(ctx, &t) : 0;
        goto out;
      }
    }
    len += 2880;
  }
out:
  tsr__free(ctx, cards);
  return rc;
}

/* ------------------------------------------------------------------ */
/* The streams                                                        */

static bool fail_why(char *why, size_t cap, const char *fmt, ...) TSR__PRINTF(3, 4);
static bool fail_why(char *why, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, cap, fmt, ap);
  va_end(ap);
  return false;
}

/* 8 big-endian bytes, as one load. */
static inline uint64_t load_be64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

/* cfitsio's fits_rdecomp{,_short,_byte} read the first pixel raw, then one
 * byte ahead, then per block of `blocksize` pixels a code of fsbits bits:
 * 0 for a block of equal pixels, fsmax + 1 for pixels stored in full
 * (8 << (bytepix / 2) bits each), else fs = code - 1 and per pixel a unary
 * run of zeros ended by a one, then fs bits.  They take a byte only when
 * they need one of its bits, so counting bits tells which bytes they read. */
bool tsr__tiles_rice_ok(const unsigned char *c, int64_t len, int bytepix, int blocksize,
                        int64_t npix, char *why, size_t cap) {
  int fsbits = bytepix == 1 ? 3 : bytepix == 2 ? 4 : 5;
  int fsmax = bytepix == 1 ? 6 : bytepix == 2 ? 14 : 25;
  int bbits = 1 << fsbits, first = bytepix == 1 || bytepix == 2 ? bytepix : 4;
  const unsigned char *s = c + first;
  int64_t bits, pos = 0, i = 0;

  if (len < first + 1 || blocksize < 1)
    return fail_why(why, cap, "its Rice stream of %" PRId64 " bytes is too short", len);
  bits = 8 * (len - first);
  for (; i < npix; i += blocksize) {
    int64_t m = npix - i < blocksize ? npix - i : blocksize;
    if (bits - pos < fsbits)
      break;
    unsigned code = 0;
    for (int j = 0; j < fsbits; j++, pos++)
      code = code << 1 | (s[pos / 8] >> (7 - pos % 8) & 1);
    if (code == 0)
      continue;
    int fs = (int)code - 1;
    if (fs > fsmax)
      return fail_why(why, cap, "its Rice stream has the invalid block code %d at byte %" PRId64,
                      code, first + pos / 8);
    if (fs == fsmax) {
      if ((bits - pos) / bbits < m)
        break;
      pos += m * bbits;
      continue;
    }
    int64_t k = 0;
    /* While 8 whole bytes remain, a pixel is one 64-bit load: its unary
     * run (at most 56 zeros fit after the bits already used in the first
     * byte) and its fs bits. */
    for (uint64_t p = (uint64_t)pos, end = (uint64_t)bits / 8; k < m && p / 8 + 8 <= end; k++) {
      uint64_t w = load_be64(s + p / 8) << (p % 8);
      uint64_t next = p + (uint64_t)__builtin_clzll(w | 1) + 1 + (uint64_t)fs;
      if (w == 0 || next > (uint64_t)bits)
        break; /* the loop below takes it, and fails it */
      pos = (int64_t)(p = next);
    }
    for (; k < m && pos < bits; k++) {
      /* The unary run: skip zero bits up to the next one. */
      unsigned b = s[pos / 8] & (0xffu >> (pos % 8));
      while (b == 0 && (pos = (pos / 8 + 1) * 8) < bits)
        b = s[pos / 8];
      if (b == 0)
        break;
      pos = pos / 8 * 8 + (__builtin_clz(b) - 24) + 1;
      if (bits - pos < fs)
        break;
      pos += fs;
    }
    if (k < m)
      break;
  }
  if (i < npix)
    return fail_why(why, cap, "its Rice stream ends before its %" PRId64 " pixels", npix);
  return true;
}

/* cfitsio inflates a GZIP tile into the tile's buffer, growing it without
 * limit while the stream has not ended, and takes a tile of 1, 2, 4 or 8
 * bytes per pixel (`sizes` says which, as bits 1 << bytes). */
static bool gzip_ok(const unsigned char *c, int64_t len, int64_t npix, unsigned sizes, char *why,
                    size_t cap) {
  unsigned char sink[16384];
  z_stream z;
  int zr;
  memset(&z, 0, sizeof z);
  if (len > (int64_t)UINT32_MAX)
    return fail_why(why, cap, "its gzip stream is too long");
  if (inflateInit2(&z, 15 + 16) != Z_OK)
    return fail_why(why, cap, "zlib cannot start inflating");
  z.next_in = (unsigned char *)c;
  z.avail_in = (uInt)len;
  do {
    z.next_out = sink;
    z.avail_out = sizeof sink;
    zr = inflate(&z, Z_NO_FLUSH);
  } while (zr == Z_OK && z.total_out <= (uLong)(8 * npix));
  uLong got = z.total_out;
  inflateEnd(&z);
  if (zr != Z_STREAM_END)
    return fail_why(why, cap, "its gzip stream %s",
                    zr == Z_OK ? "inflates past its size"
                    : zr == Z_BUF_ERROR ? "ends early"
                                        : "does not inflate");
  for (int bytes = 1; bytes <= 8; bytes *= 2)
    if ((sizes & 1u << bytes) && got == (uLong)(bytes * npix))
      return true;
  return fail_why(why, cap, "its gzip stream inflates to %lu bytes for %" PRId64 " pixels", got,
                  npix);
}

/* pl_l2pi reads a line list of 16-bit words (its length in its own
 * header) and, after an opcode-1 word, the word after it. */
static bool plio_ok(const unsigned char *c, int64_t len, char *why, size_t cap) {
  int64_t n = len / 2, used, first;
#define WORD(i) ((int16_t)be(c + 2 * ((i)-1), 2)) /* 1-based, as pl_l2pi counts */
  if (n < 7)
    return fail_why(why, cap, "its PLIO line list of %" PRId64 " words is too short", n);
  if (WORD(3) > 0) {
    used = WORD(3);
    first = 4;
  } else {
    used = (int64_t)WORD(5) * 32768 + WORD(4);
    first = (int64_t)WORD(2) + 1;
  }
  if (used <= 0)
    return true; /* pl_l2pi reads no further */
  if (used > n || first < 1 || first > used + 1)
    return fail_why(why, cap, "its PLIO line list claims %" PRId64 " words, it has %" PRId64, used,
                    n);
  for (int64_t ip = first; ip <= used; ip++)
    if (WORD(ip) / 4096 == 1 && ip++ == n)
      return fail_why(why, cap, "its PLIO line list ends inside an instruction");
#undef WORD
  return true;
}

/* HCOMPRESS.  cfitsio's decoder gets no length: it reads a header (magic,
 * nx, ny, scale, sum, three bit-plane counts) and writes nx * ny pixels,
 * then reads each quadrant's bit planes, each either a bitmap (4 bits per
 * 2 x 2 block) or a quadtree of Huffman codes whose shape depends on the
 * codes read so far, then an end code, then a sign bit per nonzero pixel.
 * So checking it means decoding which pixels are nonzero, as it does; a
 * bit reader (bits_t) that refuses to pass the end stands in for its
 * unbounded one.  Its bit buffer drops the rest of a byte when it restarts
 * (start_inputing_bits), which `align` mirrors. */
typedef struct {
  const unsigned char *s;
  int64_t pos, bits;     /* next bit, and how many there are */
  bool over;             /* a read went past the end */
} bits_t;

static unsigned take(bits_t *in, int n) {
  uint64_t p = (uint64_t)in->pos;
  unsigned v = 0;
  if (in->bits - in->pos < n) {
    in->over = true;
    in->pos = in->bits;
    return 0;
  }
  in->pos += n;
  if (p / 8 + 8 <= (uint64_t)in->bits / 8) /* n <= 8: one load holds them */
    return (unsigned)(load_be64(in->s + p / 8) << (p % 8) >> (64 - n));
  for (int j = 0; j < n; j++, p++)
    v = v << 1 | (in->s[p / 8] >> (7 - p % 8) & 1);
  return v;
}

static void align(bits_t *in) { in->pos = (in->pos + 7) / 8 * 8; }

/* cfitsio's input_huffman: a quadtree code of 3 to 6 bits. */
static unsigned huffman(bits_t *in) {
  static const unsigned char four[5] = {3, 5, 10, 12, 15}, five[5] = {6, 7, 9, 11, 13};
  unsigned c = take(in, 3);
  if (c < 4)
    return 1u << c;
  c = c << 1 | take(in, 1);
  if (c < 13)
    return four[c - 8];
  c = c << 1 | take(in, 1);
  if (c < 31)
    return five[c - 26];
  return (c << 1 | take(in, 1)) == 62 ? 0 : 14;
}

/* Mark the pixels of an nqx x nqy quadrant (rows of n in `nz`) that the
 * 4-bit codes of its 2 x 2 blocks (rows of (nqy + 1) / 2 in `code`) set:
 * bit 3 the block's first pixel, 2 the next in its row, 1 and 0 the row
 * below (qtree_bitins). */
static void mark(const unsigned char *code, int64_t nqx, int64_t nqy, unsigned char *nz,
                 int64_t n) {
  for (int64_t i = 0, k = 0; i < nqx; i += 2)
    for (int64_t j = 0; j < nqy; j += 2, k++) {
      unsigned v = code[k];
      nz[n * i + j] |= v >> 3 & 1;
      if (j + 1 < nqy)
        nz[n * i + j + 1] |= v >> 2 & 1;
      if (i + 1 < nqx) {
        nz[n * (i + 1) + j] |= v >> 1 & 1;
        if (j + 1 < nqy)
          nz[n * (i + 1) + j + 1] |= v & 1;
      }
    }
}

/* qtree_copy then qtree_expand: each code of `a` ((nx + 1) / 2 x (ny + 1)
 * / 2) becomes its four bits in `b` (nx x ny), and each nonzero one is
 * replaced by a code read from the stream, last pixel first. */
static void expand(bits_t *in, const unsigned char *a, int64_t nx, int64_t ny, unsigned char *b) {
  memset(b, 0, (size_t)(nx * ny));
  mark(a, nx, ny, b, ny);
  for (int64_t i = nx * ny - 1; i >= 0 && !in->over; i--)
    if (b[i])
      b[i] = (unsigned char)huffman(in);
}

/* qtree_decode for one quadrant. */
static bool quadrant(bits_t *in, unsigned char *nz, int64_t n, int64_t nqx, int64_t nqy, int planes,
                     unsigned char *s1, unsigned char *s2, char *why, size_t cap) {
  int64_t nqx2 = (nqx + 1) / 2, nqy2 = (nqy + 1) / 2, nqmax = nqx > nqy ? nqx : nqy;
  int log2n = 0;
  while (((int64_t)1 << log2n) < nqmax)
    log2n++;
  for (int bit = planes - 1; bit >= 0 && !in->over; bit--) {
    unsigned b = take(in, 4);
    if (b == 0) {
      for (int64_t i = 0; i < nqx2 * nqy2; i++)
        s1[i] = (unsigned char)take(in, 4);
    } else if (b != 0xf || nqx2 * nqy2 == 0) {
      /* cfitsio would leak its scratch buffer, or write past it. */
      return fail_why(why, cap, "its HCOMPRESS stream has the bad bit plane code %u", b);
    } else {
      unsigned char *a = s1, *t;
      int64_t nx = 1, ny = 1, nfx = nqx, nfy = nqy, c = (int64_t)1 << log2n;
      a[0] = (unsigned char)huffman(in);
      for (int k = 1; k < log2n && !in->over; k++) {
        c >>= 1;
        nx = nx * 2 - (nfx <= c);
        ny = ny * 2 - (nfy <= c);
        nfx -= nfx > c ? c : 0;
        nfy -= nfy > c ? c : 0;
        expand(in, a, nx, ny, a == s1 ? s2 : s1);
        t = a == s1 ? s2 : s1;
        a = t;
      }
      if (a != s1)
        memcpy(s1, a, (size_t)(nqx2 * nqy2));
    }
    mark(s1, nqx, nqy, nz, n);
  }
  return true;
}

static bool hcompress_ok(const unsigned char *c, int64_t len, int64_t npix, int zbitpix,
                         unsigned char *work, char *why, size_t cap) {
  int64_t nx, ny, nx2, ny2;
  int limit = zbitpix == 8 || zbitpix == 16 ? 32 : 64;
  const unsigned char *planes = c + 22;
  bits_t in = {.s = c, .pos = 25 * 8, .bits = 8 * len};
  if (len < 25 || c[0] != 0xdd || c[1] != 0x99)
    return fail_why(why, cap, "its HCOMPRESS stream has no valid header");
  nx = (int32_t)be(c + 2, 4);
  ny = (int32_t)be(c + 6, 4);
  if (nx < 1 || ny < 1 || nx * ny != npix)
    return fail_why(why, cap, "its HCOMPRESS stream is %" PRId64 " x %" PRId64 " for %" PRId64
                    " pixels", nx, ny, npix);
  for (int q = 0; q < 3; q++)
    if (planes[q] > limit)
      return fail_why(why, cap, "its HCOMPRESS stream claims %d bit planes", planes[q]);
  /* work: the nonzero map, then two arrays of a quadrant's codes (fewer
   * than npix + 4 each). */
  unsigned char *nz = work, *s1 = work + npix, *s2 = s1 + npix + 4;
  memset(nz, 0, (size_t)npix);
  nx2 = (nx + 1) / 2;
  ny2 = (ny + 1) / 2;
  if (!quadrant(&in, nz, ny, nx2, ny2, planes[0], s1, s2, why, cap) ||
      !quadrant(&in, nz + ny2, ny, nx2, ny / 2, planes[1], s1, s2, why, cap) ||
      !quadrant(&in, nz + ny * nx2, ny, nx / 2, ny2, planes[1], s1, s2, why, cap) ||
      !quadrant(&in, nz + ny * nx2 + ny2, ny, nx / 2, ny / 2, planes[2], s1, s2, why, cap))
    return false;
  if (!in.over && take(&in, 4) != 0)
    return fail_why(why, cap, "its HCOMPRESS stream has no end code after its bit planes");
  align(&in);
  for (int64_t i = 0; i < npix && !in.over; i++)
    if (nz[i])
      take(&in, 1);
  if (in.over)
    return fail_why(why, cap, "its HCOMPRESS stream ends before its %" PRId64 " pixels", npix);
  return true;
}

static int grow(tsr_ctx_t *ctx, const tsr__tiles_t *t, unsigned char **buf, size_t *cap,
                size_t need) {
  if (need > *cap) {
    unsigned char *nb = tsr__realloc(ctx, *buf, need);
    if (nb == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "fits: out of memory checking the tiles of \"%s\"",
                      t->path);
    *buf = nb;
    *cap = need;
  }
  return 0;
}

static int check_tile(tsr_ctx_t *ctx, tsr__tiles_t *t, int64_t i) {
  const span_t *s = &t->data[i];
  int64_t npix = tile_pixels(t, i);
  char why[160] = "";
  bool ok;
  int rc;
  if (s->len == 0) {
    /* cfitsio's fallbacks: a float tile gzipped whole, or stored as is
     * (UNCOMPRESSED_DATA, checked at open). */
    if ((t->gz == NULL || t->gz[i].len == 0) && t->raw)
      return 0;
    if (t->gz == NULL || t->gz[i].len == 0)
      return corrupt(ctx, t, i, "it has no data");
    if (t->zbitpix != -32 && t->zbitpix != -64)
      return corrupt(ctx, t, i, "a gzipped tile of floats in an image of ZBITPIX = %d",
                     t->zbitpix);
    s = &t->gz[i];
  }
  if ((rc = grow(ctx, t, &t->buf, &t->cap, (size_t)s->len)) != 0)
    return rc;
  char what[64];
  snprintf(what, sizeof what, "tile %" PRId64, i + 1);
  if ((rc = read_bytes(ctx, t, t->heap + s->off, s->len, t->buf, what)) != 0)
    return rc;
  if (s != &t->data[i])
    ok = gzip_ok(t->buf, s->len, npix, 1u << (t->zbitpix == -64 ? 8 : 4), why, sizeof why);
  else if (t->type == RICE_1)
    ok = tsr__tiles_rice_ok(t->buf, s->len, t->bytepix, t->blocksize, npix, why, sizeof why);
  else if (t->type == GZIP_1 || t->type == GZIP_2)
    ok = gzip_ok(t->buf, s->len, npix,
                 t->lossless ? 1u << 4 | 1u << 8 : 1u << 1 | 1u << 2 | 1u << 4 | 1u << 8, why,
                 sizeof why);
  else if (t->type == PLIO_1)
    ok = plio_ok(t->buf, s->len, why, sizeof why);
  else if ((rc = grow(ctx, t, &t->work, &t->work_cap, 3 * (size_t)npix + 8)) != 0)
    return rc;
  else
    ok = hcompress_ok(t->buf, s->len, npix, t->zbitpix, t->work, why, sizeof why);
  return ok ? 0 : corrupt(ctx, t, i, "%s", why);
}

int tsr__tiles_check(tsr_ctx_t *ctx, tsr__tiles_t *t, const int64_t start[TSR_MAX_DIMS],
                     const int64_t stop[TSR_MAX_DIMS]) {
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS], k[TSR_MAX_DIMS];
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    if (stop[a] <= start[a])
      return 0;
    lo[a] = k[a] = a < t->naxis ? start[a] / t->tile[a] : 0;
    hi[a] = a < t->naxis ? (stop[a] - 1) / t->tile[a] : 0;
  }
  for (;;) {
    int64_t i = 0;
    for (int a = t->naxis - 1; a >= 0; a--)
      i = i * t->ntiles[a] + k[a];
    if (!t->checked[i]) {
      int rc = check_tile(ctx, t, i);
      if (rc != 0)
        return rc;
      t->checked[i] = 1;
    }
    int a = 0;
    for (; a < t->naxis; a++) {
      if (++k[a] <= hi[a])
        break;
      k[a] = lo[a];
    }
    if (a >= t->naxis)
      return 0;
  }
}

/* "KEY" or "KEYm" (m: one or more digits) matching `pattern`, where a
 * trailing 'm' in the pattern stands for the digits, as in cfitsio's
 * fits_translate_keywords. */
static bool keyword_matches(const char *kw, const char *pattern) {
  size_t n = strlen(pattern);
  if (pattern[n - 1] != 'm')
    return strcmp(kw, pattern) == 0;
  if (strncmp(kw, pattern, n - 1) != 0 || kw[n - 1] < '0' || kw[n - 1] > '9')
    return false;
  for (const char *p = kw + n - 1; *p; p++)
    if (*p < '0' || *p > '9')
      return false;
  return true;
}

int tsr__tiles_image_cards(tsr_ctx_t *ctx, const char *table, int n, char **out, int *n_out) {
  /* imcomp_copy_comp2img's table: renamed, then dropped, the rest copied. */
  static const char *const renamed[][2] = {
      {"ZSIMPLE", "SIMPLE"},   {"ZTENSION", "XTENSION"}, {"ZBITPIX", "BITPIX"},
      {"ZNAXIS", "NAXIS"},     {"ZNAXISm", "NAXISm"},    {"ZEXTEND", "EXTEND"},
      {"ZBLOCKED", "BLOCKED"}, {"ZPCOUNT", "PCOUNT"},    {"ZGCOUNT", "GCOUNT"},
      {"ZHECKSUM", "CHECKSUM"}, {"ZDATASUM", "DATASUM"}};
  static const char *const dropped[] = {
      "XTENSION", "BITPIX",   "NAXIS", "NAXISm", "PCOUNT", "GCOUNT", "TFIELDS",
      "TTYPEm",   "TFORMm",   "THEAP", "ZIMAGE", "ZQUANTIZ", "ZDITHER0", "ZTILEm",
      "ZCMPTYPE", "ZBLANK",   "ZNAMEm", "ZVALm", "CHECKSUM", "DATASUM", "END"};
  char *cards = tsr__mallocarray(ctx, (size_t)n + 1, TSR__CARD), kw[9];
  int k = 0;

  *out = NULL;
  *n_out = 0;
  if (cards == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "fits: out of memory for %d header cards", n);
  for (int i = 0; i < n; i++) {
    const char *card = table + (size_t)i * TSR__CARD;
    const char *to = NULL;
    bool drop = false;
    tsr__card_keyword(card, kw);
    for (size_t r = 0; r < sizeof renamed / sizeof renamed[0] && to == NULL; r++)
      if (keyword_matches(kw, renamed[r][0]))
        to = renamed[r][1];
    for (size_t d = 0; d < sizeof dropped / sizeof dropped[0] && to == NULL && !drop; d++)
      drop = keyword_matches(kw, dropped[d]);
    /* cfitsio names the image after the table unless the table has the
     * default name. */
    if (strcmp(kw, "EXTNAME") == 0 && strncmp(card, "EXTNAME = 'COMPRESSED_IMAGE'", 28) == 0)
      drop = true;
    if (drop)
      continue;
    memcpy(cards + (size_t)k * TSR__CARD, card, TSR__CARD);
    if (to != NULL) {
      char name[9];
      if (to[strlen(to) - 1] == 'm') /* ZNAXIS12 -> NAXIS12 */
        snprintf(name, sizeof name, "%s", kw + 1);
      else
        snprintf(name, sizeof name, "%s", to);
      memset(cards + (size_t)k * TSR__CARD, ' ', 8);
      memcpy(cards + (size_t)k * TSR__CARD, name, strlen(name));
    }
    k++;
  }
  memset(cards + (size_t)k * TSR__CARD, ' ', TSR__CARD);
  memcpy(cards + (size_t)k * TSR__CARD, "END", 3);
  *out = cards;
  *n_out = k + 1;
  return 0;
}
