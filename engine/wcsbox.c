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
  memcpy(w->cards, cards, (size_t)ncards * 80);
  w->cards[(size_t)ncards * 80] = '\0';
  w->ncards = ncards;
  w->naxis = naxis;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    w->shape[a] = a < naxis ? (shape ? shape[a] : 0) : 1;
  *out = w;
  return 0;
}

tsr_wcs_t *tsr_wcs_copy(tsr_ctx_t *ctx, const tsr_wcs_t *wcs) {
  tsr_wcs_t *w = NULL;
  if (wcs == NULL)
    return NULL;
  if (tsr__wcs_new(ctx, wcs->cards, wcs->ncards, wcs->naxis, wcs->shape, &w) != 0)
    return NULL;
  return w;
}

void tsr_wcs_free(tsr_wcs_t *w) {
  if (w == NULL)
    return;
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

static void card_keyword(const char *card, char kw[9]) {
  int n = 8;
  memcpy(kw, card, 8);
  while (n > 0 && kw[n - 1] == ' ')
    n--;
  kw[n] = '\0';
}

int tsr__wcs_find(const tsr_wcs_t *w, const char *keyword) {
  char kw[9];
  for (int i = 0; i < w->ncards; i++) {
    card_keyword(w->cards + (size_t)i * 80, kw);
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
    card_keyword(w->cards + (size_t)i * 80, kw);
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
    card_keyword(card, kv[n].kw);
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
