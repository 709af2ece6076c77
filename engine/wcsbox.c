/* wcsbox.c -- the engine's view of a WCS: header cards plus a pixel shape.
 *
 * DESIGN: the engine never parses coordinates.  It keeps the cards exactly as
 * they were read (80 columns each) so that every process, and wcslib in ops/
 * and io/, sees the same text, and it encodes the cards that matter for
 * coordinates in a canonical order for node keys.  Editing (NAXISn of a
 * region, CRPIX shifts) happens on cards so that a written FITS header is the
 * WCS we computed with, card for card.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int tsr__wcs_new(tsr_ctx_t *ctx, const char *cards, int ncards, int naxis, const int64_t *shape,
                 tsr_wcs_t **out) {
  tsr_wcs_t *w = tsr__calloc(ctx, 1, sizeof *w);
  *out = NULL;
  if (w == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "wcs: out of memory");
  w->ctx = ctx;
  w->cards = tsr__malloc(ctx, (size_t)ncards * 80 + 1);
  if (w->cards == NULL) {
    tsr__free(ctx, w);
    return tsr__err(ctx, TSR_ENOMEM, "wcs: out of memory");
  }
  ctx->n_wcs++;
  memcpy(w->cards, cards, (size_t)ncards * 80);
  w->cards[(size_t)ncards * 80] = '\0';
  w->ncards = ncards;
  w->naxis = naxis;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    w->shape[a] = a < naxis ? (shape ? shape[a] : 0) : 1;
  *out = w;
  return 0;
}

int tsr_wcs_copy(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, tsr_wcs_t **out) {
  tsr__api_check(ctx != NULL && wcs != NULL && out != NULL, "tsr_wcs_copy: NULL argument");
  return tsr__wcs_new(ctx, wcs->cards, wcs->ncards, wcs->naxis, wcs->shape, out);
}

void tsr_wcs_free(tsr_wcs_t *w) {
  if (w == NULL)
    return;
  w->ctx->n_wcs--;
  tsr__free(w->ctx, w->cards);
  tsr__free(w->ctx, w);
}

int tsr_wcs_naxis(const tsr_wcs_t *w) { return w->naxis; }

int64_t tsr_wcs_shape(const tsr_wcs_t *w, int axis) {
  return axis >= 0 && axis < TSR_MAX_DIMS ? w->shape[axis] : 1;
}

const char *tsr_wcs_cards(const tsr_wcs_t *w, int *ncards) {
  if (ncards)
    *ncards = w->ncards;
  return w->cards;
}

void tsr__card_keyword(const char *card, char kw[9]) {
  int n = 8;
  memcpy(kw, card, 8);
  while (n > 0 && kw[n - 1] == ' ')
    n--;
  kw[n] = '\0';
}

int tsr__wcs_find(const tsr_wcs_t *w, const char *keyword) {
  char kw[9];
  for (int i = 0; i < w->ncards; i++) {
    tsr__card_keyword(w->cards + (size_t)i * 80, kw);
    if (strcmp(kw, keyword) == 0)
      return i;
  }
  return -1;
}

void tsr__card_value(const char *card, char *buf, size_t cap) {
  const char *p = card + 10, *end = card + 80;
  size_t n = 0;
  if (cap == 0)
    return;
  buf[0] = '\0';
  if (card[8] != '=')
    return;
  while (p < end && *p == ' ')
    p++;
  if (p < end && *p == '\'') {
    /* A string: copy through the closing quote ('' is an escaped quote). */
    buf[n++] = *p++;
    while (p < end && n + 1 < cap) {
      if (*p == '\'' && (p + 1 >= end || p[1] != '\'')) {
        buf[n++] = *p++;
        break;
      }
      if (*p == '\'')
        buf[n++] = *p++;
      buf[n++] = *p++;
    }
  } else {
    while (p < end && *p != '/' && n + 1 < cap)
      buf[n++] = *p++;
    while (n > 0 && buf[n - 1] == ' ')
      n--;
  }
  buf[n] = '\0';
}

int tsr__wcs_set(tsr_wcs_t *w, const char *keyword, const char *value) {
  char card[81];
  int i = tsr__wcs_find(w, keyword);
  snprintf(card, sizeof card, "%-8.8s= %20s", keyword, value);
  memset(card + strlen(card), ' ', 80 - strlen(card));
  if (i < 0) {
    char *p = tsr__realloc(w->ctx, w->cards, (size_t)(w->ncards + 1) * 80 + 1);
    if (p == NULL)
      return tsr__err(w->ctx, TSR_ENOMEM, "wcs: out of memory");
    w->cards = p;
    i = w->ncards++;
    w->cards[(size_t)w->ncards * 80] = '\0';
  }
  memcpy(w->cards + (size_t)i * 80, card, 80);
  return 0;
}

void tsr__wcs_del(tsr_wcs_t *w, const char *keyword) {
  char kw[9];
  int j = 0;
  for (int i = 0; i < w->ncards; i++) {
    tsr__card_keyword(w->cards + (size_t)i * 80, kw);
    if (strcmp(kw, keyword) == 0)
      continue;
    if (i != j)
      memmove(w->cards + (size_t)j * 80, w->cards + (size_t)i * 80, 80);
    j++;
  }
  w->ncards = j;
  w->cards[(size_t)j * 80] = '\0';
}

/* Keywords that describe the data or the file, not coordinates. */
static bool keyword_ignored(const char *kw) {
  static const char *const skip[] = {"",       "COMMENT", "HISTORY", "SIMPLE", "BITPIX",
                                     "EXTEND", "BSCALE",  "BZERO",   "BLANK",  "CHECKSUM",
                                     "DATASUM", "ORIGIN", "DATE",    "END",    "DATAMIN",
                                     "DATAMAX", "XTENSION", "PCOUNT", "GCOUNT", "EXTNAME"};
  for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
    if (strcmp(kw, skip[i]) == 0)
      return true;
  return false;
}

typedef struct {
  char kw[9];
  char val[72];
} card_kv;

static int cmp_kv(const void *a, const void *b) {
  const card_kv *x = a, *y = b;
  int c = strcmp(x->kw, y->kw);
  return c ? c : strcmp(x->val, y->val);
}

void tsr__wcs_encode(const tsr_wcs_t *w, tsr__buf_t *b) {
  card_kv *kv = tsr__calloc(w->ctx, (size_t)w->ncards + 1, sizeof *kv);
  int n = 0;
  if (kv == NULL) {
    b->oom = 1;
    return;
  }
  for (int i = 0; i < w->ncards; i++) {
    const char *card = w->cards + (size_t)i * 80;
    tsr__card_keyword(card, kv[n].kw);
    if (keyword_ignored(kv[n].kw))
      continue;
    tsr__card_value(card, kv[n].val, sizeof kv[n].val);
    n++;
  }
  qsort(kv, (size_t)n, sizeof *kv, cmp_kv);
  tsr__buf_put_str(b, "wcs");
  tsr__buf_put_i64(b, w->naxis);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    tsr__buf_put_i64(b, w->shape[a]);
  tsr__buf_put_i64(b, n);
  for (int i = 0; i < n; i++) {
    tsr__buf_put_str(b, kv[i].kw);
    tsr__buf_put_str(b, kv[i].val);
  }
  tsr__free(w->ctx, kv);
}

/* Pixel axis `axis` (0-based) of w becomes pixels start, start + step, ...
 * (n of them): CRPIX moves and the axis's column of the linear transform
 * (CDi_j, or PCi_j with CDELT) scales by step; NAXIS follows. */
int tsr__wcs_slice_axis(tsr_wcs_t *w, int axis, int64_t start, int64_t step, int64_t n) {
  char kw[16], val[40], buf[72];
  int i;
  double crpix = 0.0;
  snprintf(kw, sizeof kw, "CRPIX%d", axis + 1);
  if ((i = tsr__wcs_find(w, kw)) >= 0) {
    tsr__card_value(w->cards + (size_t)i * 80, buf, sizeof buf);
    crpix = strtod(buf, NULL);
  }
  snprintf(val, sizeof val, "%.17g", (crpix - 1.0 - (double)start) / (double)step + 1.0);
  if (tsr__wcs_set(w, kw, val) != 0)
    return TSR_ENOMEM;
  if (step != 1) {
    bool cd = false;
    for (int r = 1; r <= (w->naxis > 0 ? w->naxis : 2); r++) {
      snprintf(kw, sizeof kw, "CD%d_%d", r, axis + 1);
      if ((i = tsr__wcs_find(w, kw)) >= 0) {
        cd = true;
        tsr__card_value(w->cards + (size_t)i * 80, buf, sizeof buf);
        snprintf(val, sizeof val, "%.17g", strtod(buf, NULL) * (double)step);
        if (tsr__wcs_set(w, kw, val) != 0)
          return TSR_ENOMEM;
      }
    }
    for (int r = 1; !cd && r <= (w->naxis > 0 ? w->naxis : 2); r++) {
      double v = r == axis + 1 ? 1.0 : 0.0;
      snprintf(kw, sizeof kw, "PC%d_%d", r, axis + 1);
      if ((i = tsr__wcs_find(w, kw)) >= 0) {
        tsr__card_value(w->cards + (size_t)i * 80, buf, sizeof buf);
        v = strtod(buf, NULL);
      }
      if (v != 0.0) {
        snprintf(val, sizeof val, "%.17g", v * (double)step);
        if (tsr__wcs_set(w, kw, val) != 0)
          return TSR_ENOMEM;
      }
    }
  }
  if (axis < TSR_MAX_DIMS)
    w->shape[axis] = n;
  snprintf(kw, sizeof kw, "NAXIS%d", axis + 1);
  if (tsr__wcs_find(w, kw) >= 0) {
    snprintf(val, sizeof val, "%lld", (long long)n);
    if (tsr__wcs_set(w, kw, val) != 0)
      return TSR_ENOMEM;
  }
  return 0;
}

/* A value card ("KEYWORD = value / comment") must hold a FITS value: a
 * string in quotes (doubled quotes inside) that is closed, T or F, or a
 * number, or nothing.  wcslib's header parser overruns its buffers on some
 * malformed values (an unclosed string, found by fuzzing), so nothing else
 * reaches it.  (Contract in internal.h.) */
/* Does a value card hold a value?  "KEY     =" alone is legal FITS (an
 * undefined value), but wcslib's lexer, finding no value, echoed the card's
 * remains to stdout (found by fuzzing: blank lines before the error
 * message), and an undefined value tells wcslib nothing. */
static bool has_value(const char *card) {
  for (int j = 10; j < 80; j++)
    if (card[j] != ' ')
      return card[j] != '/';
  return false;
}

int tsr__card_check(tsr_ctx_t *ctx, const char *what, const char *unit, int num,
                       const char *card) {
  const char *v = card + 10, *end = card + 80;
  char kw[9];
  bool blank = false;
  /* The keyword: A-Z, 0-9, - and _, then spaces (wcslib's lexer overran a
   * buffer on other bytes there, found by fuzzing). */
  for (int i = 0; i < 8; i++) {
    char ch = card[i];
    if (ch == ' ')
      blank = true;
    else if (blank || !((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
                        ch == '_'))
      return ctx ? tsr__err(ctx, TSR_EWCS,
                            "%s: %s %d: \"%.8s\" is not a FITS keyword (expected KEYWORD = "
                            "value, the keyword of A-Z, 0-9, - and _)",
                            what, unit, num, card)
                 : -1;
  }
  if (card[8] == '=' && card[9] != ' ')
    /* wcslib's lexer dereferenced NULL on "KEY     =4" (found by fuzzing). */
    return ctx ? tsr__err(ctx, TSR_EWCS,
                          "%s: %s %d: %.8s has no space after its '=' (expected \"= value\")",
                          what, unit, num, card)
               : -1;
  if (memcmp(card + 8, "= ", 2) != 0)
    return 0; /* commentary and other cards carry no value */
  memcpy(kw, card, 8);
  kw[8] = '\0';
  for (int i = 7; i >= 0 && kw[i] == ' '; i--)
    kw[i] = '\0';
  if (!has_value(card))
    return 0; /* no value: undefined */
  while (*v == ' ')
    v++;
  if (*v == '\'') {
    const char *q = v + 1;
    for (; q < end; q++)
      if (*q == '\'') {
        if (q + 1 < end && q[1] == '\'')
          q++; /* a doubled quote stands for one */
        else
          break;
      }
    if (q >= end)
      return ctx ? tsr__err(ctx, TSR_EWCS, "%s: %s %d: %s has a string value with no closing quote",
                            what, unit, num, kw)
                 : -1;
    /* wcslib leaks its message on a unit string it cannot parse (found by
     * fuzzing): let only unit characters through. */
    if (strncmp(kw, "CUNIT", 5) == 0)
      for (const char *u = v + 1; u < q; u++)
        if (!isalnum((unsigned char)*u) && !strchr(" .^*/()+-", *u))
          return ctx ? tsr__err(ctx, TSR_EWCS,
                                "%s: %s %d: %s = %.*s is not a unit (letters, digits and . ^ * / "
                                "( ) + - only)",
                                what, unit, num, kw, (int)(q - v + 1), v)
                     : -1;
    v = q + 1;
  } else {
    const char *s = v;
    while (v < end && *v != ' ' && *v != '/')
      v++;
    {
      char tok[80 + 1], *e;
      size_t n = (size_t)(v - s);
      memcpy(tok, s, n);
      tok[n] = '\0';
      for (size_t i = 0; i < n; i++)
        if (tok[i] == 'D' || tok[i] == 'd')
          tok[i] = 'E'; /* FITS allows a D exponent */
      if (!(n == 1 && (tok[0] == 'T' || tok[0] == 'F')) && (strtod(tok, &e), *e != '\0'))
        return ctx ? tsr__err(ctx, TSR_EWCS,
                              "%s: %s %d: %s = %.*s is not a FITS value (a number, 'a string', T "
                              "or F)",
                              what, unit, num, kw, (int)n, s)
                   : -1;
    }
  }
  while (v < end && *v == ' ')
    v++;
  if (v < end && *v != '/')
    return ctx ? tsr__err(ctx, TSR_EWCS,
                          "%s: %s %d: %s has text after its value (a comment starts with '/')",
                          what, unit, num, kw)
               : -1;
  return 0;
}

/* The Digitized Sky Survey plate-solution keywords.  wcspih turns them
 * into a distortion, but Debian's wcslib 7.12 reads uninitialised memory
 * doing so whenever the set is incomplete (found by fuzzing: one CNPIX2
 * made a valid TAN header singular), and even for a complete set; so they
 * are left out, and the CTYPEn/CDi_j solution such headers also carry is
 * used, as SWarp and Montage do. */
static bool is_dss_keyword(const char *card) {
  static const char *const exact[] = {"CNPIX1", "CNPIX2", "XPIXELSZ", "YPIXELSZ", "PLATEID"};
  char kw[9];
  tsr__card_keyword(card, kw);
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strcmp(kw, exact[i]) == 0)
      return true;
  return strncmp(kw, "PLT", 3) == 0 || strncmp(kw, "AMDX", 4) == 0 ||
         strncmp(kw, "AMDY", 4) == 0 ||
         (strncmp(kw, "PPO", 3) == 0 && kw[3] >= '1' && kw[3] <= '9' && kw[4] == '\0');
}

int tsr__cards_for_wcslib(const char *cards, int ncards, char *out) {
  int k = 0;
  for (int i = 0; i < ncards; i++) {
    const char *c = cards + (size_t)i * 80;
    bool ascii = true;
    for (int j = 0; j < 80; j++)
      ascii &= c[j] >= 32 && c[j] <= 126;
    /* Every WCS keyword is a value card, so only those go: wcslib's lexer
     * dereferenced NULL on a keyword it knows with no "= " after it, and
     * overran a buffer on a byte that is not printable ASCII (both found by
     * fuzzing). */
    if (ascii && memcmp(c + 8, "= ", 2) == 0 && has_value(c) && !is_dss_keyword(c) &&
        tsr__card_check(NULL, NULL, NULL, 0, c) == 0)
      memcpy(out + (size_t)k++ * 80, c, 80);
  }
  return k;
}
