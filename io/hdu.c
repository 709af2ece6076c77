/* hdu.c -- finding a plain float image in a FITS file without cfitsio.
 *
 * DESIGN: most inputs are uncompressed files whose image is IEEE floats
 * stored as they are used (no BSCALE/BZERO), and for those a source needs
 * only the header cards and where the data start: a walk over the 2880-byte
 * header blocks, HDU by HDU, gives both without loading cfitsio (see
 * cfitsio.h for what loading it costs).  The walk declines everything else
 * -- integer or scaled data, tile-compressed images, random groups, unknown
 * extension types, any header not laid out exactly as the standard says
 * (mandatory keywords out of order, no END, bytes outside printable ASCII)
 * -- and then cfitsio reads the file as it always did, with the same results
 * and the same messages.  So this is a fast path and not a second opinion,
 * with one exception: cfitsio 4.2 overruns memory opening a header with more
 * than about 100 axes, so a walk that meets NAXIS > 99 in any HDU up to the
 * one asked for (or NAXIS above TSR_MAX_DIMS in that one) reports it and the
 * file never reaches cfitsio.  The cards come out as cfitsio's
 * fits_convert_hdr2str gives them (every card through END, verbatim, blank
 * cards just before END dropped), so a node's key does not depend on which
 * path read it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#include "io.h"

#define BLOCK 2880
/* A header longer than this is left to cfitsio (40 000 cards). */
#define MAX_HEADER ((size_t)BLOCK * 1111)

double tsr__io_naxis_card(const char *card) {
  char val[72], *e;
  double v;
  if (memcmp(card, "NAXIS   =", 9) != 0)
    return -1;
  tsr__card_value(card, val, sizeof val);
  for (char *p = val; *p; p++)
    if (*p == 'D' || *p == 'd')
      *p = 'E';
  v = strtod(val, &e);
  return e == val || v != v ? -1 : v;
}

bool tsr__io_card_blank(const char *card) {
  for (int i = 0; i < TSR__CARD; i++)
    if (card[i] != ' ')
      return false;
  return true;
}

/* The file being walked: read with pread, or inflated (gzip), where each
 * read starts at or after the end of the previous one (gzseek forward). */
typedef struct {
  int fd;
  gzFile gz;
} source_t;

static ssize_t source_read(source_t *s, void *buf, size_t n, int64_t off) {
  ssize_t got;
  if (s->gz == NULL) {
    do
      got = pread(s->fd, buf, n, (off_t)off);
    while (got < 0 && errno == EINTR);
    return got;
  }
  if (gzseek(s->gz, (z_off_t)off, SEEK_SET) != (z_off_t)off)
    return -1;
  return gzread(s->gz, buf, (unsigned)n);
}

/* Read the header that starts at `off` into *buf (grown as needed) up to
 * and including its END card.  Returns the number of cards through END,
 * or 0 when there is no END card before the end of the file (or the cap),
 * or TSR_ENOMEM. */
static int read_header(tsr_ctx_t *ctx, source_t *src, int64_t off, char **buf, size_t *cap) {
  size_t len = 0;
  for (;;) {
    if (len + BLOCK > MAX_HEADER)
      return 0;
    if (len + BLOCK > *cap) {
      size_t ncap = *cap ? *cap * 4 : (size_t)BLOCK * 4;
      char *nb = tsr__realloc(ctx, *buf, ncap);
      if (nb == NULL)
        return tsr__err(ctx, TSR_ENOMEM, "fits: out of memory reading a header");
      *buf = nb;
      *cap = ncap;
    }
    if (source_read(src, *buf + len, BLOCK, off + (int64_t)len) != BLOCK)
      return 0;
    for (size_t c = len; c < len + BLOCK; c += TSR__CARD)
      if (memcmp(*buf + c, "END     ", 8) == 0) {
        for (size_t i = 8; i < TSR__CARD; i++)
          if ((*buf)[c + i] != ' ')
            return 0; /* an END card with something after it */
        return (int)(c / TSR__CARD) + 1;
      }
    len += BLOCK;
  }
}

static bool card_is(const char *card, const char *kw) {
  size_t n = strlen(kw);
  if (memcmp(card, kw, n) != 0)
    return false;
  for (size_t i = n; i < 8; i++)
    if (card[i] != ' ')
      return false;
  return true;
}

/* The value of a mandatory card "KW      = value": an integer, a logical
 * (returned as 1 or 0) or a string (into str).  False if the card is not
 * exactly that. */
static bool card_value(const char *card, const char *kw, int64_t *iv, char *str, size_t cap) {
  char val[72], *e;
  if (!card_is(card, kw) || card[8] != '=' || card[9] != ' ')
    return false;
  tsr__card_value(card, val, sizeof val);
  if (str != NULL) {
    size_t n = strlen(val);
    if (n < 2 || val[0] != '\'' || val[n - 1] != '\'' || n - 2 >= cap)
      return false;
    memcpy(str, val + 1, n - 2);
    while (n > 2 && str[n - 3] == ' ')
      n--;
    str[n - 2] = '\0';
    return true;
  }
  if (strcmp(val, "T") == 0 || strcmp(val, "F") == 0) {
    *iv = val[0] == 'T';
    return true;
  }
  errno = 0;
  long long v = strtoll(val, &e, 10);
  if (e == val || *e != '\0' || errno != 0)
    return false;
  *iv = v;
  return true;
}

/* BSCALE and BZERO, if present, must say "no scaling". */
static bool unscaled(const char *cards, int n) {
  for (int i = 0; i < n; i++) {
    const char *c = cards + (size_t)i * TSR__CARD;
    bool scale = card_is(c, "BSCALE");
    if (scale || card_is(c, "BZERO")) {
      char val[72], *e;
      if (c[8] != '=')
        return false;
      tsr__card_value(c, val, sizeof val);
      errno = 0;
      double v = strtod(val, &e);
      if (e == val || *e != '\0' || errno != 0 || v != (scale ? 1.0 : 0.0))
        return false;
    }
  }
  return true;
}

static bool printable(const char *cards, int n) {
  for (size_t i = 0; i < (size_t)n * TSR__CARD; i++)
    if (cards[i] < 0x20 || cards[i] > 0x7e)
      return false;
  return true;
}

static bool is_zimage(const char *cards, int n) {
  int64_t v;
  for (int i = 0; i < n; i++)
    if (card_value(cards + (size_t)i * TSR__CARD, "ZIMAGE", &v, NULL, 0))
      return v == 1;
  return false;
}

bool tsr__plain_hdu_off;

/* The string value of card `kw` in the header, trailing blanks dropped, or
 * false. */
static bool string_card(const char *cards, int n, const char *kw, char *val, size_t cap) {
  for (int i = 0; i < n; i++) {
    const char *c = cards + (size_t)i * TSR__CARD;
    char v[72];
    size_t len;
    if (!card_is(c, kw) || c[8] != '=')
      continue;
    tsr__card_value(c, v, sizeof v);
    len = strlen(v);
    if (len < 2 || v[0] != '\'' || v[len - 1] != '\'')
      return false;
    len -= 2; /* the characters v[1..len] */
    while (len > 0 && v[len] == ' ')
      len--;
    snprintf(val, cap, "%.*s", (int)len, v + 1);
    return true;
  }
  return false;
}

bool tsr__io_hdu_named(const char *cards, int n, const tsr__hdu_sel_t *sel) {
  char name[72] = "", want[72];
  size_t len;
  int64_t ver = 1;
  if (sel->extname == NULL)
    return false;
  snprintf(want, sizeof want, "%s", sel->extname);
  for (len = strlen(want); len > 0 && want[len - 1] == ' ';)
    want[--len] = '\0';
  if (!(string_card(cards, n, "EXTNAME", name, sizeof name) && strcasecmp(name, want) == 0) &&
      !(string_card(cards, n, "HDUNAME", name, sizeof name) && strcasecmp(name, want) == 0))
    return false;
  if (sel->extver == 0)
    return true;
  for (int i = 0; i < n; i++)
    if (card_value(cards + (size_t)i * TSR__CARD, "EXTVER", &ver, NULL, 0))
      break;
  return ver == sel->extver;
}

/* The largest NAXIS of any "NAXIS   = n" card in the header at `off`, read
 * leniently (up to a card beginning with END, the end of the file or the
 * cap): a header the walk declines for its layout may still be one that
 * cfitsio reads (an END card followed by NUL bytes, found by fuzzing), and
 * cfitsio must not see NAXIS > TSR__CFITSIO_MAX_AXES in it either. */
static int64_t lenient_naxis(source_t *src, int64_t off) {
  char block[BLOCK];
  int64_t most = 0;
  for (size_t len = 0; len < MAX_HEADER; len += BLOCK) {
    if (source_read(src, block, BLOCK, off + (int64_t)len) != BLOCK)
      return most;
    for (size_t c = 0; c < BLOCK; c += TSR__CARD) {
      const char *card = block + c;
      if (memcmp(card, "END", 3) == 0)
        return most;
      double v = tsr__io_naxis_card(card);
      if (v > (double)most)
        most = v > 1e9 ? INT64_C(1000000000) : (int64_t)v;
    }
  }
  return most;
}

/* The walk (see above); with `gz`, only to check the axes. */
static int walk(tsr_ctx_t *ctx, source_t *src, int64_t size, const tsr__hdu_sel_t *sel, bool gz,
                tsr__plain_hdu_t *out) {
  int hdu = sel->hdu;
  char *buf = NULL;
  size_t cap = 0;
  int64_t off = 0, most;
  int rc = 0, h;

  memset(out, 0, sizeof *out);
  for (h = 1; off < size && h <= 100000; h++) {
    int ncards = read_header(ctx, src, off, &buf, &cap), k = 0, naxis;
    int64_t bitpix, v, pcount = 0, gcount = 1, elems = 1;
    int64_t shape[999];
    char xt[72] = "";
    bool image, named;

    if (ncards <= 0) {
      rc = ncards;
      goto out;
    }
    /* The mandatory keywords, in the standard's order. */
    if (h == 1 ? !card_value(buf, "SIMPLE", &v, NULL, 0) || v != 1
               : !card_value(buf, "XTENSION", NULL, xt, sizeof xt))
      goto out;
    if (++k >= ncards || !card_value(buf + k * TSR__CARD, "BITPIX", &bitpix, NULL, 0) ||
        (bitpix != 8 && bitpix != 16 && bitpix != 32 && bitpix != 64 && bitpix != -32 &&
         bitpix != -64))
      goto out;
    if (++k >= ncards || !card_value(buf + k * TSR__CARD, "NAXIS", &v, NULL, 0) || v < 0 ||
        v > 999)
      goto out;
    naxis = (int)v;
    image = h == 1 || strcmp(xt, "IMAGE") == 0;
    named = tsr__io_hdu_named(buf, ncards, sel);
    if (named && out->named == 0)
      out->named = h;
    if (naxis > TSR__CFITSIO_MAX_AXES ||
        (naxis > TSR_MAX_DIMS && image && (sel->extname ? named : hdu == 0 || h == hdu))) {
      out->hdu = h;
      out->naxis = naxis;
      rc = TSR_ENOTSUP;
      goto out;
    }
    for (int a = 0; a < naxis; a++) {
      char kw[9];
      snprintf(kw, sizeof kw, "NAXIS%d", a + 1);
      if (++k >= ncards || !card_value(buf + k * TSR__CARD, kw, &shape[a], NULL, 0) ||
          shape[a] < 0 || shape[a] > (INT64_C(1) << 40))
        goto out;
      if (__builtin_mul_overflow(elems, shape[a], &elems))
        goto out;
    }
    if (h > 1 && (++k >= ncards || !card_value(buf + k * TSR__CARD, "PCOUNT", &pcount, NULL, 0) ||
                  ++k >= ncards || !card_value(buf + k * TSR__CARD, "GCOUNT", &gcount, NULL, 0) ||
                  pcount < 0 || gcount < 0 || pcount > (INT64_C(1) << 50) ||
                  gcount > (INT64_C(1) << 20)))
      goto out;
    if (naxis == 0)
      elems = 0;
    if (h == 1 && naxis > 0 && shape[0] == 0)
      goto out; /* random groups */

    if (!image && strcmp(xt, "BINTABLE") != 0 && strcmp(xt, "TABLE") != 0)
      goto out; /* an extension cfitsio may know better */
    if (strcmp(xt, "BINTABLE") == 0 && is_zimage(buf, ncards))
      goto out; /* a tile-compressed image */
    if (sel->extname ? named : hdu == 0 ? image && naxis > 0 : h == hdu) {
      if (gz || tsr__plain_hdu_off || !image || naxis == 0 || naxis > TSR_MAX_DIMS || (bitpix != -32 && bitpix != -64) ||
          pcount != 0 || gcount != 1 || !printable(buf, ncards) || !unscaled(buf, ncards))
        goto out;
      for (int a = 0; a < naxis; a++)
        if (shape[a] < 1)
          goto out;
      /* Blank cards just before END are free space, not cards. */
      int keep = ncards - 1;
      while (keep > 0 && tsr__io_card_blank(buf + (size_t)(keep - 1) * TSR__CARD))
        keep--;
      memmove(buf + keep * TSR__CARD, buf + (ncards - 1) * TSR__CARD, TSR__CARD);
      out->hdu = h;
      out->naxis = naxis;
      for (int a = 0; a < TSR_MAX_DIMS; a++)
        out->shape[a] = a < naxis ? shape[a] : 1;
      out->bitpix = (int)bitpix;
      out->data_off = off + ((int64_t)ncards * TSR__CARD + BLOCK - 1) / BLOCK * BLOCK;
      out->cards = buf;
      out->ncards = keep + 1;
      buf = NULL;
      rc = 1;
      goto out;
    }
    /* On to the next HDU: header blocks, then the data padded to blocks. */
    int64_t bytes;
    if (__builtin_add_overflow(elems, pcount, &bytes) ||
        __builtin_mul_overflow(bytes, gcount * (bitpix < 0 ? -bitpix : bitpix) / 8, &bytes) ||
        bytes > (INT64_C(1) << 60))
      goto out;
    off += ((int64_t)ncards * TSR__CARD + BLOCK - 1) / BLOCK * BLOCK;
    off += (bytes + BLOCK - 1) / BLOCK * BLOCK;
  }
out:
  /* Declined at HDU h, whose header cfitsio will read next. */
  if (rc == 0 && out->cards == NULL && off < size &&
      (most = lenient_naxis(src, off)) > TSR__CFITSIO_MAX_AXES) {
    out->hdu = h;
    out->naxis = most > INT32_MAX ? INT32_MAX : (int)most;
    rc = TSR_ENOTSUP;
  }
  tsr__free(ctx, buf);
  return rc;
}

int tsr__plain_hdu(tsr_ctx_t *ctx, int fd, int64_t size, const tsr__hdu_sel_t *sel,
                   tsr__plain_hdu_t *out) {
  source_t src = {fd, NULL};
  return walk(ctx, &src, size, sel, false, out);
}

int tsr__gzip_hdu_axes(tsr_ctx_t *ctx, int fd, const tsr__hdu_sel_t *sel, tsr__plain_hdu_t *out) {
  source_t src = {-1, NULL};
  int rc, dfd = dup(fd);
  memset(out, 0, sizeof *out);
  /* The duplicate shares the file offset, which the caller may have moved. */
  if (dfd < 0 || lseek(dfd, 0, SEEK_SET) != 0 || (src.gz = gzdopen(dfd, "rb")) == NULL) {
    if (dfd >= 0)
      close(dfd);
    return 0; /* cfitsio will say what is wrong */
  }
  rc = walk(ctx, &src, INT64_MAX, sel, true, out);
  gzclose(src.gz);
  return rc;
}
