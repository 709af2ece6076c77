/* healpix.c -- HEALPix FITS binary tables as lazy sources.
 *
 * The layout is the HEALPix convention (Gorski et al. 2005, "HEALPix
 * primer", and what healpy and astropy write): a BINTABLE with PIXTYPE =
 * 'HEALPIX', ORDERING RING or NESTED, NSIDE, COORDSYS G/C/E, and either the
 * implicit scheme (row r, element e holds pixel FIRSTPIX + r * repeat + e;
 * vector columns of 1024 values are usual) or the explicit one (INDXSCHM =
 * 'EXPLICIT': a PIXEL column gives each row's pixel, for partial skies).
 *
 * The node is 1-D over all 12 nside^2 pixels, in the file's ordering; its
 * WCS holds the HEALPix cards (tsr_reproject_from_healpix reads them).  The
 * table is read by this file alone, with pread of whole rows: the header
 * walk, the column layout and the row arithmetic are simple, and reading
 * exactly the rows a window needs is what makes a small region of a big
 * map cheap.  Pixels the file does not hold, UNSEEN values (-1.6375e30),
 * TNULL integers and non-finite values are NaN.  The explicit scheme's
 * PIXEL column is read whole when the node is built (it says where every
 * pixel is); values are read only as windows need them. */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hpx.h"
#include "io.h"

#define BLOCK 2880
#define CHUNK_PIXELS 65536

/* Rows of value columns read by every HEALPix source of the process (the
 * tests count them to check that a region reads only what it needs). */
_Atomic int64_t tsr__healpix_rows_read;

typedef struct {
  char *path, *real;
  tsr__identity_t id;            /* of the file when built */
  int hdu;                      /* 1-based, resolved */
  int64_t data_off;             /* byte offset of the table's rows */
  int64_t row_bytes, n_rows;    /* NAXIS1, NAXIS2 */
  int64_t col_off, repeat;      /* value column: byte offset in a row, values per row */
  char type;                    /* TFORM letter: E D J I K B */
  double scale, zero;           /* TSCAL, TZERO */
  bool has_null;
  int64_t tnull;
  int64_t nside;
  bool nested;
  char coordsys;                /* 'G', 'C', 'E' */
  int64_t first;                /* implicit: pixel of row 0, element 0 */
  int64_t n_held;               /* implicit: values held (n_rows x repeat, cut at LASTPIX) */
  int64_t *pix, *slot;          /* explicit: pixels held, ascending, and their value index
                                   (row x repeat + element); n_held of each */
  char column[72];              /* TTYPE of the value column */
} hpx_params_t;

/* ------------------------------------------------------------------ */
/* Header walk                                                         */

typedef struct {
  char *cards;
  int n;
} header_t;

static const char *find_card(const header_t *h, const char *kw) {
  size_t len = strlen(kw);
  for (int i = 0; i < h->n; i++) {
    const char *c = h->cards + (size_t)i * 80;
    if (memcmp(c, kw, len) == 0 && (len == 8 || c[len] == ' ') && c[8] == '=')
      return c;
  }
  return NULL;
}

/* Value text of a card: a string without quotes and trailing blanks, or
 * the bare token. */
static bool card_str(const header_t *h, const char *kw, char *out, size_t cap) {
  const char *c = find_card(h, kw);
  size_t k = 0;
  if (c == NULL)
    return false;
  const char *p = c + 10, *e = c + 80;
  while (p < e && *p == ' ')
    p++;
  if (p < e && *p == '\'') {
    for (p++; p < e; p++) {
      if (*p == '\'') {
        if (p + 1 < e && p[1] == '\'')
          p++;
        else
          break;
      }
      if (k + 1 < cap)
        out[k++] = *p;
    }
    while (k > 0 && out[k - 1] == ' ')
      k--;
  } else {
    while (p < e && *p != ' ' && *p != '/' && k + 1 < cap)
      out[k++] = *p++;
  }
  out[k] = '\0';
  return true;
}

static bool card_int(const header_t *h, const char *kw, int64_t *v) {
  char buf[72], *end;
  if (!card_str(h, kw, buf, sizeof buf) || buf[0] == '\0')
    return false;
  errno = 0;
  long long x = strtoll(buf, &end, 10);
  if (*end == '.' ) { /* "2048." is read as cfitsio reads it */
    double d = strtod(buf, &end);
    if (*end != '\0' || d != floor(d) || fabs(d) > 9e18)
      return false;
    x = (long long)d;
  } else if (*end != '\0' || errno != 0)
    return false;
  *v = x;
  return true;
}

static bool card_real(const header_t *h, const char *kw, double *v) {
  char buf[72], *end;
  if (!card_str(h, kw, buf, sizeof buf) || buf[0] == '\0')
    return false;
  for (char *p = buf; *p; p++)
    if (*p == 'D' || *p == 'd')
      *p = 'E';
  *v = strtod(buf, &end);
  return *end == '\0';
}

/* Read the header starting at byte `off`: its cards (END excluded) and the
 * offset just after it.  0, or TSR_EFITS/TSR_EIO/TSR_ENOMEM. */
static int read_header(tsr_ctx_t *ctx, int fd, int64_t fsize, int64_t off, const char *path,
                       int hdu, header_t *h, int64_t *data_off) {
  char block[BLOCK];
  h->cards = NULL;
  h->n = 0;
  for (int64_t pos = off;; pos += BLOCK) {
    if (pos + BLOCK > fsize)
      return tsr__err(ctx, TSR_EFITS,
                      "healpix: \"%s\" is truncated: header of HDU %d has no END card "
                      "(the file ends at byte %lld)",
                      path, hdu, (long long)fsize);
    if (pread(fd, block, BLOCK, pos) != BLOCK)
      return tsr__err(ctx, TSR_EIO, "healpix: cannot read \"%s\": %s", path, strerror(errno));
    char *grown = tsr__realloc(ctx, h->cards, (size_t)(h->n + 36) * 80);
    if (grown == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "healpix: out of memory reading \"%s\"", path);
    h->cards = grown;
    for (int i = 0; i < 36; i++) {
      const char *c = block + i * 80;
      if (memcmp(c, "END     ", 8) == 0) {
        *data_off = pos + BLOCK;
        return 0;
      }
      memcpy(h->cards + (size_t)h->n * 80, c, 80);
      h->n++;
    }
    if (pos == off && memcmp(block, off == 0 ? "SIMPLE  " : "XTENSION", 8) != 0)
      return tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d does not start with %s", path,
                      hdu, off == 0 ? "SIMPLE" : "XTENSION");
  }
}

/* Bytes of the data of an HDU, padded to whole blocks. */
static bool data_bytes(const header_t *h, int64_t *bytes) {
  int64_t naxis = 0, bitpix = 8, pcount = 0, gcount = 1, n = 1;
  if (!card_int(h, "NAXIS", &naxis) || !card_int(h, "BITPIX", &bitpix) || naxis < 0 ||
      naxis > 999)
    return false;
  card_int(h, "PCOUNT", &pcount);
  card_int(h, "GCOUNT", &gcount);
  if (naxis == 0) {
    *bytes = 0;
    return true;
  }
  for (int a = 1; a <= naxis; a++) {
    char kw[9];
    int64_t len;
    snprintf(kw, sizeof kw, "NAXIS%d", a);
    if (!card_int(h, kw, &len) || len < 0 || (len > 0 && n > INT64_MAX / 16 / len))
      return false;
    n *= len;
  }
  n = (n + pcount) * gcount * (bitpix < 0 ? -bitpix : bitpix) / 8;
  *bytes = (n + BLOCK - 1) / BLOCK * BLOCK;
  return true;
}

static int parse_tform(const char *s, int64_t *repeat, char *type) {
  char *end;
  long long r = 1;
  if (*s >= '0' && *s <= '9')
    r = strtoll(s, &end, 10);
  else
    end = (char *)s;
  *repeat = r;
  *type = *end;
  return 0;
}

static int type_bytes(char t) {
  switch (t) {
  case 'E': case 'J': return 4;
  case 'D': case 'K': return 8;
  case 'I': return 2;
  case 'B': case 'L': case 'A': case 'X': return 1;
  case 'C': return 8;
  case 'M': case 'Q': return 16;
  case 'P': return 8;
  default: return -1;
  }
}

static void params_free(tsr_ctx_t *ctx, void *p) {
  hpx_params_t *hp = p;
  if (hp == NULL)
    return;
  tsr__free(ctx, hp->path);
  free(hp->real);
  tsr__free(ctx, hp->pix);
  tsr__free(ctx, hp->slot);
  tsr__free(ctx, hp);
}

static double load_be(const unsigned char *p, char type) {
  uint64_t u = 0;
  int nb = type_bytes(type);
  for (int i = 0; i < nb; i++)
    u = u << 8 | p[i];
  switch (type) {
  case 'E': { uint32_t w = (uint32_t)u; float f; memcpy(&f, &w, 4); return f; }
  case 'D': { double d; memcpy(&d, &u, 8); return d; }
  case 'J': return (double)(int32_t)(uint32_t)u;
  case 'I': return (double)(int16_t)(uint16_t)u;
  case 'K': return (double)(int64_t)u;
  default: return (double)(uint8_t)u;
  }
}

/* A stored value as the node gives it: scaled, NaN for nulls and UNSEEN. */
static double convert(const hpx_params_t *hp, const unsigned char *p) {
  double v = load_be(p, hp->type);
  if (hp->type != 'E' && hp->type != 'D') {
    if (hp->has_null && v == (double)hp->tnull)
      return NAN;
  }
  v = v * hp->scale + hp->zero;
  /* healpy's test: within 1e-5 relative of UNSEEN (float32 rounds it). */
  if (!isfinite(v) || fabs(v / TSR__HPX_UNSEEN - 1.0) < 1e-5)
    return NAN;
  return v;
}

/* Parse and check the table; fills *hp (path fields set by the caller)
 * and, when `list` is not NULL, its column list and EXTNAME (for
 * tsr_healpix_info: the only caller that describes what it does not read). */
static int open_table(tsr_ctx_t *ctx, int fd, int64_t fsize, const tsr_healpix_opts_t *o,
                      hpx_params_t *hp, tsr_healpix_info_t *list) {
  const char *path = hp->path;
  header_t h = {NULL, 0};
  int64_t off = 0, doff = 0, dbytes;
  int rc = 0, hdu = 0;
  char val[72];

  for (hdu = 1;; hdu++) {
    if (off >= fsize) {
      rc = o->hdu > 0 ? tsr__err(ctx, TSR_EINVAL, "healpix: \"%s\" has %d HDUs; HDU %d asked for",
                                 path, hdu - 1, o->hdu)
                      : tsr__err(ctx, TSR_EFITS,
                                 "healpix: \"%s\" has no binary table (a HEALPix map is a "
                                 "BINTABLE extension with PIXTYPE = 'HEALPIX')",
                                 path);
      goto out;
    }
    tsr__free(ctx, h.cards);
    if ((rc = read_header(ctx, fd, fsize, off, path, hdu, &h, &doff)) != 0)
      goto out;
    if (!data_bytes(&h, &dbytes)) {
      rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d: bad NAXIS, NAXISn, BITPIX or PCOUNT",
                    path, hdu);
      goto out;
    }
    bool is_table = hdu > 1 && card_str(&h, "XTENSION", val, sizeof val) &&
                    strcmp(val, "BINTABLE") == 0;
    if (o->hdu == hdu || (o->hdu <= 0 && is_table)) {
      if (!is_table) {
        rc = tsr__err(ctx, TSR_EFITS,
                      "healpix: \"%s\" HDU %d is not a binary table; a HEALPix map is a "
                      "BINTABLE extension",
                      path, hdu);
        goto out;
      }
      break;
    }
    off = doff + dbytes;
  }
  hp->hdu = hdu;
  hp->data_off = doff;
  if (list != NULL)
    card_str(&h, "EXTNAME", list->extname, sizeof list->extname);

  if (find_card(&h, "PIXTYPE") == NULL && find_card(&h, "NSIDE") == NULL) {
    rc = tsr__err(ctx, TSR_EFITS,
                  "healpix: \"%s\" HDU %d is not a HEALPix table (it has neither PIXTYPE = "
                  "'HEALPIX' nor NSIDE)",
                  path, hdu);
    goto out;
  }
  if (card_str(&h, "PIXTYPE", val, sizeof val) && strcmp(val, "HEALPIX") != 0) {
    rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d: PIXTYPE = '%s'; expected 'HEALPIX'",
                  path, hdu, val);
    goto out;
  }
  /* ORDERING */
  if (o->nested >= 0) {
    hp->nested = o->nested != 0;
  } else if (!card_str(&h, "ORDERING", val, sizeof val)) {
    rc = tsr__err(ctx, TSR_EFITS,
                  "healpix: \"%s\" HDU %d has no ORDERING keyword (RING or NESTED); give the "
                  "ordering (--nested / --ring)",
                  path, hdu);
    goto out;
  } else if (strcasecmp(val, "RING") == 0) {
    hp->nested = false;
  } else if (strcasecmp(val, "NESTED") == 0 || strcasecmp(val, "NEST") == 0) {
    hp->nested = true;
  } else {
    rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d: ORDERING = '%s'; expected RING or NESTED",
                  path, hdu, val);
    goto out;
  }
  /* COORDSYS */
  {
    const char *cs = o->coordsys;
    if (cs == NULL) {
      if (!card_str(&h, "COORDSYS", val, sizeof val)) {
        rc = tsr__err(ctx, TSR_EFITS,
                      "healpix: \"%s\" HDU %d has no COORDSYS keyword (G, C or E); give the "
                      "frame (--frame)",
                      path, hdu);
        goto out;
      }
      cs = val;
    }
    if (strcasecmp(cs, "G") == 0 || strcasecmp(cs, "GALACTIC") == 0)
      hp->coordsys = 'G';
    else if (strcasecmp(cs, "C") == 0 || strcasecmp(cs, "Q") == 0 || strcasecmp(cs, "ICRS") == 0 ||
             strcasecmp(cs, "CELESTIAL") == 0 || strcasecmp(cs, "EQUATORIAL") == 0)
      hp->coordsys = 'C';
    else if (strcasecmp(cs, "E") == 0 || strcasecmp(cs, "ECLIPTIC") == 0)
      hp->coordsys = 'E';
    else {
      rc = tsr__err(ctx, TSR_EFITS,
                    "healpix: \"%s\" HDU %d: COORDSYS = '%s'; expected G (Galactic), C "
                    "(celestial, ICRS) or E (ecliptic)",
                    path, hdu, cs);
      goto out;
    }
  }
  /* NSIDE */
  if (!card_int(&h, "NSIDE", &hp->nside)) {
    rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d has no integer NSIDE keyword", path, hdu);
    goto out;
  }
  if (!tsr__hpx_nside_ok(hp->nside, hp->nested)) {
    rc = tsr__err(ctx, TSR_EFITS,
                  "healpix: \"%s\" HDU %d: NSIDE = %lld; expected %s in [1, 2^29]", path, hdu,
                  (long long)hp->nside, hp->nested ? "a power of 2 (NESTED)" : "an integer");
    goto out;
  }
  /* Columns */
  {
    int64_t tfields = 0, colpos = 0, pixcol = -1, pixoff = 0;
    char pixtype = 0;
    int64_t pixrep = 0;
    bool explicit_ = card_str(&h, "INDXSCHM", val, sizeof val) && strcasecmp(val, "EXPLICIT") == 0;
    int want = -1, seen = 0;
    if (!card_int(&h, "NAXIS1", &hp->row_bytes) || !card_int(&h, "NAXIS2", &hp->n_rows) ||
        !card_int(&h, "TFIELDS", &tfields) || hp->row_bytes < 1 || hp->n_rows < 0 ||
        tfields < 1 || tfields > 999) {
      rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d: bad NAXIS1, NAXIS2 or TFIELDS", path,
                    hdu);
      goto out;
    }
    for (int c = 1; c <= tfields; c++) {
      char kw[9], form[72], name[72] = "";
      int64_t rep;
      char type;
      snprintf(kw, sizeof kw, "TFORM%d", c);
      if (!card_str(&h, kw, form, sizeof form)) {
        rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d has no %s", path, hdu, kw);
        goto out;
      }
      parse_tform(form, &rep, &type);
      if (type_bytes(type) < 0 || rep < 0) {
        rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d: %s = '%s' is not a FITS column format",
                      path, hdu, kw, form);
        goto out;
      }
      snprintf(kw, sizeof kw, "TTYPE%d", c);
      card_str(&h, kw, name, sizeof name);
      bool is_pix = explicit_ && pixcol < 0 && (strcasecmp(name, "PIXEL") == 0 || c == 1);
      if (is_pix) {
        pixcol = c, pixoff = colpos, pixtype = type, pixrep = rep;
        if (list != NULL)
          snprintf(list->pixel_column, sizeof list->pixel_column, "%s", name);
      } else {
        bool match = o->field_name ? strcasecmp(name, o->field_name) == 0 : seen == o->field;
        if (list != NULL && seen < TSR_HEALPIX_MAX_FIELDS) {
          snprintf(list->fields[seen].name, sizeof list->fields[seen].name, "%s", name);
          list->fields[seen].type = type;
          list->fields[seen].repeat = rep;
        }
        if (match && want < 0) {
          want = c;
          if (list != NULL)
            list->field = seen;
          hp->col_off = colpos;
          hp->repeat = rep;
          hp->type = type;
          snprintf(hp->column, sizeof hp->column, "%s", name[0] ? name : "(unnamed)");
        }
        seen++;
      }
      colpos += rep * type_bytes(type);
    }
    if (list != NULL)
      list->n_fields = seen;
    if (colpos != hp->row_bytes) {
      rc = tsr__err(ctx, TSR_EFITS,
                    "healpix: \"%s\" HDU %d: the columns take %lld bytes a row but NAXIS1 = %lld",
                    path, hdu, (long long)colpos, (long long)hp->row_bytes);
      goto out;
    }
    if (want < 0) {
      if (o->field_name)
        rc = tsr__err(ctx, TSR_EINVAL, "healpix: \"%s\" HDU %d has no column named \"%s\"", path,
                      hdu, o->field_name);
      else
        rc = tsr__err(ctx, TSR_EINVAL,
                      "healpix: \"%s\" HDU %d: field %d asked for; it has %d value column%s "
                      "(fields 0 to %d)",
                      path, hdu, o->field, seen, seen == 1 ? "" : "s", seen - 1);
      goto out;
    }
    if (strchr("EDJIKB", hp->type) == NULL || hp->repeat < 1) {
      rc = tsr__err(ctx, TSR_EFITS,
                    "healpix: \"%s\" HDU %d: column %d (%s) has format %lld%c; expected numbers "
                    "(E, D, J, I, K or B)",
                    path, hdu, want, hp->column, (long long)hp->repeat, hp->type);
      goto out;
    }
    {
      char kw[9];
      snprintf(kw, sizeof kw, "TSCAL%d", want);
      if (!card_real(&h, kw, &hp->scale))
        hp->scale = 1.0;
      snprintf(kw, sizeof kw, "TZERO%d", want);
      if (!card_real(&h, kw, &hp->zero))
        hp->zero = 0.0;
      snprintf(kw, sizeof kw, "TNULL%d", want);
      hp->has_null = card_int(&h, kw, &hp->tnull);
    }
    if (doff + hp->row_bytes * hp->n_rows > fsize) {
      rc = tsr__err(ctx, TSR_EFITS,
                    "healpix: \"%s\" is truncated: HDU %d's table needs %lld rows of %lld bytes "
                    "from byte %lld; the file ends at byte %lld",
                    path, hdu, (long long)hp->n_rows, (long long)hp->row_bytes, (long long)doff,
                    (long long)fsize);
      goto out;
    }
    int64_t npix = tsr__hpx_npix(hp->nside), held = hp->n_rows * hp->repeat;
    if (explicit_) {
      if (pixcol < 0 || strchr("JK", pixtype) == NULL || pixrep != hp->repeat) {
        rc = tsr__err(ctx, TSR_EFITS,
                      "healpix: \"%s\" HDU %d: INDXSCHM = 'EXPLICIT' needs an integer PIXEL "
                      "column (J or K) with as many values a row as column %s",
                      path, hdu, hp->column);
        goto out;
      }
      hp->n_held = held;
      hp->pix = tsr__mallocarray(ctx, (size_t)(held ? held : 1), sizeof(int64_t));
      hp->slot = tsr__mallocarray(ctx, (size_t)(held ? held : 1), sizeof(int64_t));
      unsigned char *row = tsr__malloc(ctx, (size_t)hp->row_bytes);
      if (hp->pix == NULL || hp->slot == NULL || row == NULL) {
        tsr__free(ctx, row);
        rc = tsr__err(ctx, TSR_ENOMEM, "healpix: out of memory for the PIXEL column of \"%s\"",
                      path);
        goto out;
      }
      bool sorted = true;
      for (int64_t r = 0; r < hp->n_rows && rc == 0; r++) {
        if (pread(fd, row, (size_t)hp->row_bytes, doff + r * hp->row_bytes) != hp->row_bytes) {
          rc = tsr__err(ctx, TSR_EIO, "healpix: cannot read \"%s\": %s", path, strerror(errno));
          break;
        }
        for (int64_t e = 0; e < hp->repeat; e++) {
          int64_t k = r * hp->repeat + e;
          int64_t p = (int64_t)load_be(row + pixoff + e * type_bytes(pixtype), pixtype);
          if (p < 0 || p >= npix) {
            rc = tsr__err(ctx, TSR_EFITS,
                          "healpix: \"%s\" HDU %d: row %lld has PIXEL %lld; expected [0, %lld) "
                          "for NSIDE %lld",
                          path, hdu, (long long)r + 1, (long long)p, (long long)npix,
                          (long long)hp->nside);
            break;
          }
          hp->pix[k] = p;
          hp->slot[k] = k;
          if (k > 0 && hp->pix[k - 1] >= p)
            sorted = false;
        }
      }
      tsr__free(ctx, row);
      if (rc != 0)
        goto out;
      if (!sorted) {
        /* Insertion of (pixel, slot) pairs by a simple heap sort on pixel. */
        int64_t n = held;
        for (int64_t start = n / 2 - 1, end = n - 1; end > 0;) {
          int64_t root;
          if (start >= 0)
            root = start--;
          else {
            int64_t t = hp->pix[0]; hp->pix[0] = hp->pix[end]; hp->pix[end] = t;
            t = hp->slot[0]; hp->slot[0] = hp->slot[end]; hp->slot[end] = t;
            end--;
            root = 0;
          }
          for (int64_t child; (child = 2 * root + 1) <= end; root = child) {
            if (child + 1 <= end && hp->pix[child] < hp->pix[child + 1])
              child++;
            if (hp->pix[root] >= hp->pix[child])
              break;
            int64_t t = hp->pix[root]; hp->pix[root] = hp->pix[child]; hp->pix[child] = t;
            t = hp->slot[root]; hp->slot[root] = hp->slot[child]; hp->slot[child] = t;
          }
        }
        for (int64_t k = 1; k < n; k++)
          if (hp->pix[k] == hp->pix[k - 1]) {
            rc = tsr__err(ctx, TSR_EFITS, "healpix: \"%s\" HDU %d: pixel %lld is listed twice",
                          path, hdu, (long long)hp->pix[k]);
            goto out;
          }
      }
    } else {
      int64_t first = 0, last = npix - 1;
      card_int(&h, "FIRSTPIX", &first);
      card_int(&h, "LASTPIX", &last);
      if (first < 0 || last >= npix || last < first) {
        rc = tsr__err(ctx, TSR_EFITS,
                      "healpix: \"%s\" HDU %d: FIRSTPIX = %lld, LASTPIX = %lld; expected 0 <= "
                      "FIRSTPIX <= LASTPIX < %lld (12 NSIDE^2)",
                      path, hdu, (long long)first, (long long)last, (long long)npix);
        goto out;
      }
      int64_t want_n = last - first + 1;
      if (held < want_n || held - want_n >= hp->repeat) {
        rc = tsr__err(ctx, TSR_EFITS,
                      "healpix: \"%s\" HDU %d: %lld rows of %lld values hold %lld pixels; NSIDE "
                      "%lld with FIRSTPIX %lld and LASTPIX %lld needs %lld (%lld rows)",
                      path, hdu, (long long)hp->n_rows, (long long)hp->repeat, (long long)held,
                      (long long)hp->nside, (long long)first, (long long)last, (long long)want_n,
                      (long long)((want_n + hp->repeat - 1) / hp->repeat));
        goto out;
      }
      hp->first = first;
      hp->n_held = want_n;
    }
  }
out:
  tsr__free(ctx, h.cards);
  return rc;
}

/* ------------------------------------------------------------------ */
/* The node                                                            */

typedef struct {
  int fd;
} hpx_state_t;

static int hpx_start(tsr_node_t *n, void **state) {
  hpx_params_t *hp = n->params;
  tsr_ctx_t *ctx = n->graph->ctx;
  hpx_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  struct stat sb;
  *state = NULL;
  if (st == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "healpix: out of memory");
  st->fd = open(hp->real, O_RDONLY | O_CLOEXEC);
  if (st->fd < 0 || fstat(st->fd, &sb) != 0) {
    int e = errno;
    if (st->fd >= 0)
      close(st->fd);
    tsr__free(ctx, st);
    return tsr__err(ctx, TSR_EIO, "healpix: cannot open \"%s\": %s", hp->path, strerror(e));
  }
  tsr__identity_t now = tsr__identity_of(&sb);
  if (!tsr__identity_same(&now, &hp->id)) {
    close(st->fd);
    tsr__free(ctx, st);
    return tsr__err(ctx, TSR_EIO,
                    "healpix: \"%s\" changed since the graph was built; build it again", hp->path);
  }
  *state = st;
  return 0;
}

static void hpx_stop(tsr_node_t *n, void *state) {
  hpx_state_t *st = state;
  if (st == NULL)
    return;
  close(st->fd);
  tsr__free(n->graph->ctx, st);
}

static void put(tsr__task_t *t, int64_t p, double v) {
  size_t off = (size_t)((p - t->out.start[0]) * t->stride[0]);
  if (t->node->dtype == TSR_F32)
    ((float *)t->planes[0])[off] = (float)v;
  else
    ((double *)t->planes[0])[off] = v;
}

/* Read rows [r0, r1) and store the values of slots they hold, by `each`. */
static int read_rows(tsr__task_t *t, int fd, int64_t r0, int64_t r1, unsigned char **buf,
                     size_t *cap) {
  hpx_params_t *hp = t->node->params;
  size_t need = (size_t)((r1 - r0) * hp->row_bytes);
  if (need > *cap) {
    tsr__free(t->ctx, *buf);
    *buf = tsr__malloc(t->ctx, need);
    *cap = *buf ? need : 0;
    if (*buf == NULL)
      return tsr__err(t->ctx, TSR_ENOMEM, "healpix: out of memory reading \"%s\"", hp->path);
  }
  int got = tsr__pread_full(fd, *buf, need, (off_t)(hp->data_off + r0 * hp->row_bytes));
  if (got != 0)
    return tsr__err(t->ctx, TSR_EIO, "healpix: cannot read rows %lld-%lld of \"%s\": %s",
                    (long long)r0 + 1, (long long)r1, hp->path,
                    got < 0 ? strerror(errno) : "the file is shorter than its header says");
  atomic_fetch_add(&tsr__healpix_rows_read, r1 - r0);
  return 0;
}

/* Rows read at a time: a few hundred KB, reused, so that the buffer stays
 * in cache and is never a fresh mapping to fault in (a 4096-row buffer was
 * an mmap per task, and its page faults cost as much as the reading). */
#define MAX_READ_ROWS 64

/* Values [k0, k0 + n) of one row's column into the node's plane at `out`
 * (elements): plain float32 columns, the common case, by a loop the
 * compiler vectorises; the rest value by value through convert(). */
static void convert_run(const hpx_params_t *hp, const unsigned char *col, int64_t n, void *plane,
                        size_t out, bool f32) {
  int es = type_bytes(hp->type);
  if (hp->type == 'E' && hp->scale == 1.0 && hp->zero == 0.0 && f32) {
    /* convert()'s UNSEEN test, |v / UNSEEN - 1| < 1e-5, as float bounds:
     * the float values strictly inside (lo, hi), so that the loop is
     * branch-free and vectorises. */
    const double lo = TSR__HPX_UNSEEN * (1 + 1e-5), hi = TSR__HPX_UNSEEN * (1 - 1e-5);
    float flo = (float)lo, fhi = (float)hi;
    if ((double)flo <= lo)
      flo = nextafterf(flo, 0.0f);
    if ((double)fhi >= hi)
      fhi = nextafterf(fhi, -INFINITY);
    float *o = (float *)plane + out;
    for (int64_t k = 0; k < n; k++) {
      uint32_t u;
      float f;
      memcpy(&u, col + 4 * k, 4);
      u = __builtin_bswap32(u);
      memcpy(&f, &u, 4);
      int finite = fabsf(f) <= FLT_MAX;
      int bad = (finite == 0) | ((f >= flo) & (f <= fhi));
      o[k] = bad ? NAN : f;
    }
    return;
  }
  for (int64_t k = 0; k < n; k++) {
    double v = convert(hp, col + k * es);
    if (f32)
      ((float *)plane)[out + k] = (float)v;
    else
      ((double *)plane)[out + k] = v;
  }
}

static int hpx_compute(tsr__task_t *t) {
  hpx_params_t *hp = t->node->params;
  hpx_state_t *st = t->state;
  int64_t s = t->out.start[0], e = t->out.stop[0];
  int es = type_bytes(hp->type);
  unsigned char *buf = NULL;
  size_t cap = 0;
  int rc = 0;

  if (t->planes[0] == NULL)
    return 0;
  if (hp->pix == NULL) {
    int64_t a = s > hp->first ? s : hp->first;
    int64_t b = e < hp->first + hp->n_held ? e : hp->first + hp->n_held;
    /* NaN where the file holds no pixel: before FIRSTPIX, after LASTPIX. */
    for (int64_t p = s; p < e && p < a; p++)
      put(t, p, NAN);
    for (int64_t p = b > s ? b : s; p < e; p++)
      put(t, p, NAN);
    if (a < b) {
      int64_t ra = (a - hp->first) / hp->repeat, rb = (b - 1 - hp->first) / hp->repeat + 1;
      bool f32 = t->node->dtype == TSR_F32;
      for (int64_t r0 = ra; r0 < rb && rc == 0; r0 += MAX_READ_ROWS) {
        int64_t r1 = r0 + MAX_READ_ROWS < rb ? r0 + MAX_READ_ROWS : rb;
        if ((rc = read_rows(t, st->fd, r0, r1, &buf, &cap)) != 0)
          break;
        for (int64_t r = r0; r < r1; r++) {
          /* This row's pixels, cut to [a, b). */
          int64_t p0 = hp->first + r * hp->repeat, k0 = p0 < a ? a - p0 : 0;
          int64_t k1 = p0 + hp->repeat > b ? b - p0 : hp->repeat;
          convert_run(hp, buf + (r - r0) * hp->row_bytes + hp->col_off + k0 * es, k1 - k0,
                      t->planes[0], (size_t)(p0 + k0 - s), f32);
        }
      }
    }
  } else {
    /* Slots of the pixels in [s, e), read row by row, runs of rows
     * coalesced when they are consecutive; NaN where no pixel is held. */
    for (int64_t p = s; p < e; p++)
      put(t, p, NAN);
    int64_t lo = 0, hi = hp->n_held;
    while (lo < hi) {
      int64_t mid = lo + (hi - lo) / 2;
      if (hp->pix[mid] < s) lo = mid + 1; else hi = mid;
    }
    for (int64_t k = lo; k < hp->n_held && hp->pix[k] < e && rc == 0;) {
      int64_t r0 = hp->slot[k] / hp->repeat, r1 = r0 + 1, k1 = k + 1;
      while (k1 < hp->n_held && hp->pix[k1] < e && r1 - r0 < MAX_READ_ROWS) {
        int64_t r = hp->slot[k1] / hp->repeat;
        if (r == r1 - 1) { k1++; continue; }
        if (r != r1) break;
        r1++, k1++;
      }
      if ((rc = read_rows(t, st->fd, r0, r1, &buf, &cap)) != 0)
        break;
      for (; k < k1; k++) {
        int64_t r = hp->slot[k] / hp->repeat, el = hp->slot[k] % hp->repeat;
        put(t, hp->pix[k], convert(hp, buf + (r - r0) * hp->row_bytes + hp->col_off + el * es));
      }
    }
  }
  tsr__free(t->ctx, buf);
  return rc;
}

static void hpx_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const hpx_params_t *hp = n->params;
  tsr__buf_put_str(b, hp->real);
  tsr__identity_encode(&hp->id, b);
  tsr__buf_put_i64(b, hp->hdu);
  tsr__buf_put_i64(b, hp->col_off);
  tsr__buf_put_i64(b, hp->nested);
  tsr__buf_put_i64(b, hp->coordsys);
}

static const tsr__op_t hpx_op = {
    .name = "healpix",
    .version = 1,
    .flags = TSR__OP_SOURCE | TSR__OP_SUBBOX,
    .start = hpx_start,
    .stop = hpx_stop,
    .compute = hpx_compute,
    .encode = hpx_encode,
    .free_params = params_free,
};

static int build(tsr_ctx_t *ctx, const char *path, const tsr_healpix_opts_t *opts,
                 hpx_params_t **out, tsr_healpix_info_t *list) {
  tsr_healpix_opts_t o = TSR_HEALPIX_OPTS_INIT;
  hpx_params_t *hp = NULL;
  struct stat sb;
  int fd = -1, rc;

  *out = NULL;
  if (opts)
    o = *opts;
  if (path == NULL)
    return tsr__err(ctx, TSR_EINVAL, "healpix: path is NULL");
  if ((rc = tsr__hpx_load(ctx)) != 0)
    return rc;
  hp = tsr__calloc(ctx, 1, sizeof *hp);
  if (hp == NULL || (hp->path = tsr__strdup(ctx, path)) == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "healpix: out of memory");
    goto out;
  }
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &sb) != 0) {
    rc = tsr__err(ctx, TSR_EIO, "healpix: cannot open \"%s\": %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(sb.st_mode)) {
    rc = tsr__err(ctx, TSR_EIO, "healpix: \"%s\" is not a regular file", path);
    goto out;
  }
  {
    unsigned char magic[2];
    if (pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
      rc = tsr__err(ctx, TSR_ENOTSUP,
                    "healpix: \"%s\" is gzip-compressed; HEALPix tables are read in place, row "
                    "by row: gunzip it first",
                    path);
      goto out;
    }
  }
  hp->real = realpath(path, NULL);
  if (hp->real == NULL) {
    rc = tsr__err(ctx, TSR_EIO, "healpix: cannot resolve \"%s\": %s", path, strerror(errno));
    goto out;
  }
  hp->id = tsr__identity_of(&sb);
  rc = open_table(ctx, fd, hp->id.size, &o, hp, list);
out:
  if (fd >= 0)
    close(fd);
  if (rc != 0)
    params_free(ctx, hp);
  else
    *out = hp;
  return rc;
}

tsr_node_t *tsr_source_healpix(tsr_graph_t *g, const char *path, const tsr_healpix_opts_t *opts) {
  hpx_params_t *hp;
  tsr_node_t *n;
  int rc;
  const char *base;

  if (!tsr__graph_check(g))
    return NULL;
  if ((rc = build(g->ctx, path, opts, &hp, NULL)) != 0)
    return tsr__graph_fail_ctx(g, rc);
  if ((n = tsr__node_alloc(g, &hpx_op, hp)) == NULL)
    return NULL;
  base = strrchr(path, '/');
  snprintf(n->name, sizeof n->name, "healpix#%d(\"%.60s\")", g->n_nodes + 1, base ? base + 1 : path);
  n->ndim = 1;
  n->shape[0] = tsr__hpx_npix(hp->nside);
  n->chunk[0] = CHUNK_PIXELS;
  n->dtype = hp->type == 'D' || hp->type == 'J' || hp->type == 'K' ||
                     (hp->type != 'E' && (hp->scale != 1.0 || hp->zero != 0.0))
                 ? TSR_F64
                 : TSR_F32;
  if ((rc = tsr__hpx_cards(g->ctx, hp->nside, hp->nested, hp->coordsys, &n->wcs)) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail_ctx(g, rc);
  }
  return tsr__node_finish(n);
}

int tsr_healpix_info(tsr_ctx_t *ctx, const char *path, const tsr_healpix_opts_t *opts,
                     tsr_healpix_info_t *out) {
  hpx_params_t *hp;
  int rc;
  memset(out, 0, sizeof *out);
  if ((rc = build(ctx, path, opts, &hp, out)) != 0)
    return rc;
  out->hdu = hp->hdu;
  out->nside = hp->nside;
  out->nested = hp->nested;
  out->coordsys = hp->coordsys;
  out->explicit_index = hp->pix != NULL;
  out->n_pixels = hp->n_held;
  out->first_pixel = hp->pix ? (hp->n_held ? hp->pix[0] : 0) : hp->first;
  out->last_pixel = hp->pix ? (hp->n_held ? hp->pix[hp->n_held - 1] : -1)
                            : hp->first + hp->n_held - 1;
  out->n_rows = hp->n_rows;
  out->repeat = hp->repeat;
  out->type = hp->type;
  snprintf(out->column, sizeof out->column, "%s", hp->column);
  params_free(ctx, hp);
  return 0;
}
