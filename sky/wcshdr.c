/* wcshdr.c -- WCS headers: text to a validated tsr_wcs_t, and queries on it.
 *
 * DESIGN: a WCS enters tessera as FITS header cards, from a FITS file
 * (fits.c), a header text file or caller text.  Whatever the source, the
 * cards are normalised to 80 columns, stopped at END, and validated once,
 * here, with wcslib (wcspih, the fixes astropy also applies that keep the
 * meaning of a header, then wcsset), so a broken header fails when the graph
 * is built, with wcslib's own words, the keyword it is about, and the name of
 * the file.  The tsr_wcs_t keeps the cards as read; wcslib structures never
 * outlive a call, which keeps the engine free of wcslib and every process
 * free to build its own copies.  wcslib keeps a little global state (the
 * wcserr switch), so these functions are used by one thread at a time, as
 * the rest of a context is.
 *
 * Header text comes in two forms: a FITS header block (80-column cards back
 * to back, no newlines) or one card per line as astropy's Header.totextfile
 * and Montage templates write it; lines may end in "\r\n", be shorter than
 * 80 columns, or be written loosely ("NAXIS = 2"), and such a line is
 * re-spaced into a standard card, as astropy does, rather than silently
 * ignored by wcslib.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wcslib/wcs.h>
#include <wcslib/wcserr.h>
#include <wcslib/wcsfix.h>
#include <wcslib/wcshdr.h>
#include <wcslib/wcsmath.h>
#include <wcslib/wcsunits.h>

#include "internal.h"
#include "sky.h"

/* ------------------------------------------------------------------ */
/* Cards                                                              */

/* "CTYPE" followed by 1-2 digits and nothing else: a primary-WCS CTYPEn. */
static bool is_ctype(const char *kw) {
  size_t n = strlen(kw);
  if (strncmp(kw, "CTYPE", 5) != 0 || n < 6 || n > 7)
    return false;
  for (size_t i = 5; i < n; i++)
    if (!isdigit((unsigned char)kw[i]))
      return false;
  return kw[5] != '0';
}

/* FITS keywords are upper case, but astropy reads "crval1  = 10" as
 * CRVAL1 (and fixes the card), so a lower-case keyword is taken as its
 * upper-case self wherever it comes from: a header file or a FITS input.
 * Only a keyword field of letters, digits, - and _ followed by blanks is
 * changed; anything else is left for tsr__card_check to refuse. */
static void keyword_upcase(char *card) {
  char up[8];
  int n = 0;
  while (n < 8 && card[n] != ' ') {
    char ch = card[n];
    if (!isalnum((unsigned char)ch) && ch != '-' && ch != '_')
      return;
    up[n++] = (char)toupper((unsigned char)ch);
  }
  for (int i = n; i < 8; i++)
    if (card[i] != ' ')
      return;
  memcpy(card, up, (size_t)n);
}

bool tsr__sky_has_ctype(const char *cards, int ncards) {
  char card[TSR__CARD], kw[9];
  for (int i = 0; i < ncards; i++) {
    memcpy(card, cards + (size_t)i * TSR__CARD, TSR__CARD);
    keyword_upcase(card);
    tsr__card_keyword(card, kw);
    if (is_ctype(kw))
      return true;
  }
  return false;
}

static bool card_blank(const char *card) {
  for (int i = 0; i < TSR__CARD; i++)
    if (card[i] != ' ')
      return false;
  return true;
}

static bool card_is_end(const char *card) {
  char kw[9];
  tsr__card_keyword(card, kw);
  return strcmp(kw, "END") == 0;
}

/* A card written loosely ("naxis = 2": '=' before column 9, or a lower-case
 * keyword) is re-spaced into "NAXIS   = 2": wcspih would otherwise drop it
 * without a word, and astropy reads such lines the same way. */
static void card_normalise(char *card) {
  const char *eq = memchr(card, '=', 9);
  char kw[9], value[TSR__CARD + 1];
  int k = 0;

  if (eq == NULL)
    return;
  for (const char *p = card; p < eq; p++) {
    if (*p == ' ')
      continue;
    if (k > 0 && p[-1] == ' ')
      return; /* blank inside the keyword: not a keyword */
    if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
      return;
    kw[k++] = (char)toupper((unsigned char)*p);
  }
  if (k == 0)
    return;
  kw[k] = '\0';
  if (eq - card == 8 && card[9] == ' ') {
    char head[TSR__CARD + 1];
    snprintf(head, sizeof head, "%-8s", kw); /* '= ' already in place */
    memcpy(card, head, 8);
    return;
  }
  {
    const char *v = eq + 1;
    while (v < card + TSR__CARD && *v == ' ')
      v++;
    memcpy(value, v, (size_t)(card + TSR__CARD - v));
    value[card + TSR__CARD - v] = '\0';
  }
  snprintf(card, TSR__CARD + 1, "%-8s= %-70.70s", kw, value);
}

/* Check one line or card for bytes a FITS header cannot hold. */
static int check_ascii(tsr_ctx_t *ctx, const char *what, const char *unit, int num,
                       const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 32 || c > 126)
      return tsr__err(ctx, TSR_EINVAL,
                      "%s: %s %d, column %zu: byte 0x%02x is not printable ASCII "
                      "(a FITS header is ASCII text)",
                      what, unit, num, i + 1, c);
  }
  return 0;
}

/* Split header text into 80-column cards up to END (exclusive), dropping
 * blank cards.  *out (allocated, ncards x 80) and *nums (the line, or card,
 * number of each, for messages) belong to the caller; *unit says which. */
static int text_to_cards(tsr_ctx_t *ctx, const char *text, size_t len, const char *what,
                         char **out, int **nums, const char **unit, int *ncards) {
  const char *end = text + len, *p = text;
  const char *nl = memchr(text, '\n', len < TSR__CARD + 1 ? len : TSR__CARD + 1);
  bool lines;
  size_t cap = 1;
  char *cards = NULL, line[TSR__CARD + 1];
  int *lnum = NULL, n = 0, num = 0, rc = 0;

  *out = NULL;
  *nums = NULL;
  *ncards = 0;
  /* A FITS block has no newline in its first card; a text file has one
   * within 81 bytes unless its first line is too long, which the line
   * reader reports.  A block that turns out to hold a newline before END is
   * read as lines too. */
  lines = nl != NULL;
  if (!lines && memchr(text, '\n', len) != NULL) {
    for (const char *e = text; e < end; e += TSR__CARD) {
      size_t m = (size_t)(end - e) < TSR__CARD ? (size_t)(end - e) : TSR__CARD;
      if (memchr(e, '\n', m) != NULL) {
        lines = true;
        break;
      }
      if (m == TSR__CARD && card_is_end(e))
        break;
    }
  }
  for (const char *q = text; q < end; q++)
    cap += *q == '\n';
  if (!lines)
    cap = len / TSR__CARD + 1;
  rc = TSR_ENOMEM;
  *unit = lines ? "line" : "card";
  cards = tsr__mallocarray(ctx, cap, TSR__CARD);
  lnum = tsr__mallocarray(ctx, cap, sizeof *lnum);
  if (cards == NULL || lnum == NULL) {
    tsr__err(ctx, rc, "%s: out of memory for %zu header cards", what, cap);
    goto out;
  }
  while (p < end) {
    size_t ln;
    const char *next;
    num++;
    if (lines) {
      const char *e = memchr(p, '\n', (size_t)(end - p));
      next = e ? e + 1 : end;
      ln = (size_t)((e ? e : end) - p);
      if (ln > 0 && p[ln - 1] == '\r')
        ln--;
      while (ln > TSR__CARD && (p[ln - 1] == ' ' || p[ln - 1] == '\t'))
        ln--;
      if (ln > TSR__CARD) {
        rc = tsr__err(ctx, TSR_EINVAL,
                      "%s: line %d is %zu characters long; a header card has at most 80", what,
                      num, ln);
        goto out;
      }
    } else {
      ln = (size_t)(end - p) < TSR__CARD ? (size_t)(end - p) : TSR__CARD;
      next = p + ln;
    }
    memcpy(line, p, ln);
    /* Tabs in hand-written header files are spacing, not content. */
    for (size_t i = 0; lines && i < ln; i++)
      if (line[i] == '\t')
        line[i] = ' ';
    if ((rc = check_ascii(ctx, what, lines ? "line" : "card", num, line, ln)) != 0)
      goto out;
    memset(line + ln, ' ', TSR__CARD - ln);
    line[TSR__CARD] = '\0';
    p = next;
    if (card_blank(line))
      continue;
    if (lines)
      card_normalise(line);
    keyword_upcase(line);
    if (card_is_end(line))
      break;
    if ((rc = tsr__card_check(ctx, what, *unit, num, line)) != 0)
      goto out;
    memcpy(cards + (size_t)n * TSR__CARD, line, TSR__CARD);
    lnum[n++] = num;
  }
  *out = cards;
  *nums = lnum;
  *ncards = n;
  cards = NULL;
  lnum = NULL;
  rc = 0;
out:
  tsr__free(ctx, cards);
  tsr__free(ctx, lnum);
  return rc;
}

/* Integer value of a card ("2048", also "2048." as some writers put it). */
static bool card_int(const char *card, int64_t *v) {
  char val[72], *e;
  double d;
  tsr__card_value(card, val, sizeof val);
  if (val[0] == '\0')
    return false;
  errno = 0;
  d = strtod(val, &e);
  if (e == val || *e != '\0' || errno != 0 || d != floor(d) || fabs(d) > 9.0e15)
    return false;
  *v = (int64_t)d;
  return true;
}

static int find_card(const char *cards, int ncards, const char *keyword) {
  char kw[9];
  for (int i = 0; i < ncards; i++) {
    tsr__card_keyword(cards + (size_t)i * TSR__CARD, kw);
    if (strcmp(kw, keyword) == 0)
      return i;
  }
  return -1;
}

/* ------------------------------------------------------------------ */
/* Values of the WCS keywords                                          */

/* wcslib takes any double, so a header with CRVAL1 = 1e400 (which reads as
 * infinity) or CRPIX1 = 1e300 gave an all-NaN image, and an output header
 * that astropy then refused.  The numbers that place and scale the primary
 * WCS are checked here, with the line and keyword, before wcslib sees them
 * (ranges also in README.md, "Deliberate differences"):
 *   every one finite, and written as a FITS number;
 *   |CRPIXi| <= 1e12: far beyond any image, far below where a double
 *     stops resolving a pixel (2^53);
 *   a celestial CRVALi in degrees: latitude in [-90, 90], longitude within
 *     +-1e6 (beyond it a double places the reference point no better than
 *     a micro-arcsecond);
 *   CDELTi nonzero unless a CD matrix stands in for it (CD and PC are
 *     checked as a whole: see matrix_singular);
 *   NAXISi, for i <= NAXIS, a whole number in [1, 2^40]. */
#define MAX_CRPIX 1e12
#define MAX_CRVAL_LON 1e6

/* `val` as a number of FITS' fixed or exponential form ([+-]digits[.digits]
 * [E|D[+-]digits], as astropy reads it) into *v: 1 if it is one, -1 if it
 * reads as infinite or NaN (1e400 overflows; nan and inf are no FITS
 * numbers, but the message should say what matters), 0 otherwise. */
static int fits_number(const char *val, double *v) {
  char tok[72], *e;
  const char *p = val;
  bool digits = false;
  size_t n = strlen(val);

  *v = 0;
  if (n == 0 || n >= sizeof tok)
    return 0;
  for (size_t i = 0; i <= n; i++)
    tok[i] = val[i] == 'D' || val[i] == 'd' ? 'E' : val[i];
  errno = 0;
  *v = strtod(tok, &e);
  if (e != tok && *e == '\0' && !isfinite(*v))
    return -1;
  if (*p == '+' || *p == '-')
    p++;
  for (; isdigit((unsigned char)*p); p++)
    digits = true;
  if (*p == '.')
    for (p++; isdigit((unsigned char)*p); p++)
      digits = true;
  if (digits && strchr("EeDd", *p) != NULL && *p != '\0') {
    p++;
    if (*p == '+' || *p == '-')
      p++;
    digits = isdigit((unsigned char)*p);
    while (isdigit((unsigned char)*p))
      p++;
  }
  return digits && *p == '\0' && e != tok && *e == '\0';
}

/* The (first) number if `kw` is `prefix` and a number (and "_" and a
 * second number when `pair`), as primary-WCS keywords are; else -1.  SIP's
 * A_0_2 gives 0; CRPIX0 does too, and names no axis. */
static int keyword_axis(const char *kw, const char *prefix, bool pair) {
  size_t n = strlen(prefix);
  const char *p = kw + n;
  int axis = 0;
  if (strncmp(kw, prefix, n) != 0 || !isdigit((unsigned char)*p))
    return -1;
  for (; isdigit((unsigned char)*p) && axis < 1000; p++)
    axis = axis * 10 + (*p - '0');
  if (pair) {
    if (*p++ != '_' || !isdigit((unsigned char)*p))
      return -1;
    while (isdigit((unsigned char)*p))
      p++;
  }
  return *p == '\0' ? axis : -1;
}

/* 1 if pixel axis `axis` (1-based) is a celestial longitude in degrees by
 * its CTYPEi and CUNITi, 2 a latitude, else 0 (other units are converted,
 * and then checked, by wcslib). */
static int celestial_axis(const char *cards, int ncards, int axis) {
  char kw[12], val[72];
  const char *t;
  int i;
  snprintf(kw, sizeof kw, "CUNIT%d", axis);
  if ((i = find_card(cards, ncards, kw)) >= 0) {
    tsr__card_value(cards + (size_t)i * TSR__CARD, val, sizeof val);
    if (strncmp(val, "'deg", 4) != 0 || strspn(val + 4, " ") != strlen(val + 4) - 1)
      return 0;
  }
  snprintf(kw, sizeof kw, "CTYPE%d", axis);
  if ((i = find_card(cards, ncards, kw)) < 0)
    return 0;
  tsr__card_value(cards + (size_t)i * TSR__CARD, val, sizeof val);
  if (val[0] != '\'' || strlen(val) < 6)
    return 0;
  t = val + 1;
  if (strncmp(t, "RA--", 4) == 0 || strncmp(t + 1, "LON", 3) == 0 || strncmp(t + 2, "LN", 2) == 0)
    return 1;
  if (strncmp(t, "DEC-", 4) == 0 || strncmp(t + 1, "LAT", 3) == 0 || strncmp(t + 2, "LT", 2) == 0)
    return 2;
  return 0;
}

/* wcslib's lexer takes "1.05D+01" for a number but converts only "1.05"
 * (astropy.wcs reads such a CRVAL1 as 1.05, astropy.io.fits as 10.5): a D
 * exponent in a number becomes an E, which means the same in FITS. */
static void d_exponent_to_e(char *card, const char *val) {
  double v;
  char *p = card + 10;
  if (strpbrk(val, "Dd") == NULL || fits_number(val, &v) != 1)
    return;
  while (*p == ' ')
    p++;
  for (size_t j = 0; val[j] != '\0'; j++)
    if (p[j] == 'D' || p[j] == 'd')
      p[j] = 'E';
}

/* Refuse the first number of the primary WCS that is out of the ranges
 * above, and write D exponents as E for wcslib.  `nums` (may be NULL) gives
 * each card's line or card number, named by `unit`, for the message; axes
 * past `naxis` (when >= 0) have no NAXISi to check. */
static int check_wcs_values(tsr_ctx_t *ctx, char *cards, int ncards, const int *nums,
                            const char *unit, const char *what, int naxis) {
  static const char *const finite_pairs[] = {"CD", "PC", "PV", "A_", "B_", "AP_", "BP_"};
  bool has_cd = false;
  char kw[9], val[72], where[32] = "";
  int i;

  for (i = 0; i < ncards && !has_cd; i++) {
    tsr__card_keyword(cards + (size_t)i * TSR__CARD, kw);
    has_cd = keyword_axis(kw, "CD", true) > 0;
  }
  for (i = 0; i < ncards; i++) {
    char *card = cards + (size_t)i * TSR__CARD;
    bool finite, crpix, cdelt;
    int crval, nax, num;
    double v;

    tsr__card_keyword(card, kw);
    tsr__card_value(card, val, sizeof val);
    if (val[0] != '\'')
      d_exponent_to_e(card, val);
    finite = strcmp(kw, "LONPOLE") == 0 || strcmp(kw, "LATPOLE") == 0 ||
             keyword_axis(kw, "CROTA", false) > 0;
    for (size_t k = 0; !finite && k < sizeof finite_pairs / sizeof finite_pairs[0]; k++)
      finite = keyword_axis(kw, finite_pairs[k], true) >= 0;
    crpix = keyword_axis(kw, "CRPIX", false) > 0;
    cdelt = keyword_axis(kw, "CDELT", false) > 0;
    crval = keyword_axis(kw, "CRVAL", false); /* the axis, or <= 0 */
    nax = keyword_axis(kw, "NAXIS", false);
    if (naxis >= 0 && nax > naxis)
      nax = 0; /* past NAXIS: names no axis of the image */
    if (!finite && !crpix && !cdelt && crval <= 0 && nax <= 0)
      continue;
    if (val[0] == '\0')
      continue; /* an undefined value: wcslib's default stands */
    if (nums != NULL)
      snprintf(where, sizeof where, "%s %d: ", unit, nums[i]);
    if (nax > 0) {
      int64_t len;
      if (!card_int(card, &len))
        return tsr__err(ctx, TSR_EINVAL, "%s: %s%s = %s is not an integer", what, where, kw, val);
      if (len < 1)
        return tsr__err(ctx, TSR_EINVAL, "%s: %s%s = %s: zero-size axis (expected >= 1)", what,
                        where, kw, val);
      if (len > (INT64_C(1) << 40))
        return tsr__err(ctx, TSR_ERANGE, "%s: %s%s = %s is out of range [1, 2^40]", what, where,
                        kw, val);
      continue;
    }
    if ((num = fits_number(val, &v)) < 0)
      return tsr__err(ctx, TSR_EWCS, "%s: %s%s = %s is not a finite number", what, where, kw,
                      val);
    if (num == 0)
      return tsr__err(ctx, TSR_EWCS,
                      "%s: %s%s = %s is not a number (expected FITS' form: digits with an "
                      "optional sign, '.' and E or D exponent)",
                      what, where, kw, val);
    if (crpix && fabs(v) > MAX_CRPIX)
      return tsr__err(ctx, TSR_ERANGE,
                      "%s: %s%s = %s is out of range [-1e12, 1e12] (a reference pixel "
                      "within 10^12 pixels of the image)",
                      what, where, kw, val);
    if (cdelt && v == 0 && !has_cd)
      return tsr__err(ctx, TSR_EWCS,
                      "%s: %s%s = %s is not a pixel scale (expected a nonzero number, or a CD "
                      "matrix)",
                      what, where, kw, val);
    if (crval > 0) {
      int cel = celestial_axis(cards, ncards, crval);
      if (cel == 2 && fabs(v) > 90)
        return tsr__err(ctx, TSR_ERANGE,
                        "%s: %s%s = %s is not a latitude (expected -90 to 90 degrees)", what,
                        where, kw, val);
      if (cel == 1 && fabs(v) > MAX_CRVAL_LON)
        return tsr__err(ctx, TSR_ERANGE,
                        "%s: %s%s = %s is out of range [-1e6, 1e6] (a longitude in degrees)",
                        what, where, kw, val);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* wcslib                                                             */

/* The messages wcslib may have left in a wcsprm and its parts.  celfix's
 * wcsset sets one in the celprm, and a later wcsset re-initialises the
 * celprm without freeing it (a leak found by fuzzing). */
static void clear_errors(struct wcsprm *w) {
  wcserr_clear(&w->err);
  wcserr_clear(&w->lin.err);
  wcserr_clear(&w->cel.err);
  wcserr_clear(&w->cel.prj.err);
  wcserr_clear(&w->spc.err);
}

/* True if the projection code of some CTYPEi is `code` ("NCP"). */
static bool has_projection(const struct wcsprm *w, const char *code) {
  for (int i = 0; i < w->naxis; i++)
    if (strlen(w->ctype[i]) >= 8 && w->ctype[i][4] == '-' && strncmp(w->ctype[i] + 5, code, 3) == 0)
      return true;
  return false;
}

/* The fixes astropy's WCS() applies by default (Wcsprm.fix: wcsfix with
 * translate_units ''), so that a header astropy reads is read the same way
 * here: CDi_j rows or columns left out (cdfix), dates (datfix), OBSGEO-
 * (obsfix), unit spellings such as 'DEG' or 'Degrees' (unitfix: case aside,
 * but not 's', 'h' or 'd', which astropy leaves alone too), and spectral
 * codes (spcfix).  cylfix, which moves the reference point, is left out
 * (the mapping is the same).  Their own failures are not errors: wcsset
 * reports whatever still matters. */
static void apply_fixes(struct wcsprm *w) {
  /* Each fix may leave a message, and wcslib overwrites the next one
   * without freeing it: clear as we go. */
  cdfix(w);
  clear_errors(w);
  datfix(w);
  clear_errors(w);
  obsfix(0, w);
  clear_errors(w);
  unitfix(0, w);
  clear_errors(w);
  spcfix(w);
  clear_errors(w);
  /* celfix translates the AIPS codes NCP (to SIN with PV2_2) and GLS (to
   * SFL).  It runs a wcsset of its own, whose allocations leak when a
   * distortion is present (found by fuzzing), and which our wcsset would
   * repeat on every other header: so only for those codes, and only
   * without distortions; an NCP with distortions is refused by wcsset as
   * an unknown projection. */
  if ((has_projection(w, "NCP") || has_projection(w, "GLS")) && w->lin.dispre == NULL &&
      w->lin.disseq == NULL) {
    celfix(w);
    clear_errors(w);
  }
}

/* A singular CD/PC matrix passes wcsset (matinv rarely sees an exact zero
 * pivot) yet makes world -> pixel meaningless, so check it ourselves with
 * rows scaled to unit size and partial pivoting. */
static bool matrix_singular(const struct wcsprm *w, int k) {
  double m[16];
  if (k > 4)
    k = 4;
  for (int i = 0; i < k; i++) {
    double big = 0;
    for (int j = 0; j < k; j++) {
      m[i * k + j] = w->cdelt[i] * w->pc[i * w->naxis + j];
      if (fabs(m[i * k + j]) > big)
        big = fabs(m[i * k + j]);
    }
    if (!(big > 0) || !isfinite(big))
      return true;
    for (int j = 0; j < k; j++)
      m[i * k + j] /= big;
  }
  for (int c = 0; c < k; c++) {
    int piv = c;
    for (int i = c + 1; i < k; i++)
      if (fabs(m[i * k + c]) > fabs(m[piv * k + c]))
        piv = i;
    if (fabs(m[piv * k + c]) < 1e-12)
      return true;
    if (piv != c)
      for (int j = 0; j < k; j++) {
        double t = m[c * k + j];
        m[c * k + j] = m[piv * k + j];
        m[piv * k + j] = t;
      }
    for (int i = c + 1; i < k; i++) {
      double f = m[i * k + c] / m[c * k + c];
      for (int j = c; j < k; j++)
        m[i * k + j] -= f * m[c * k + j];
    }
  }
  return false;
}

/* Append "; the header has KEY = value" for keywords that a wcslib message
 * names (CTYPE1, PV2_1, ...), or for every CTYPEn when it names none, so the
 * message shows what was received. */
static void describe_keywords(const char *msg, const char *cards, int ncards, char *buf,
                              size_t cap) {
  size_t used = 0;
  int named = 0;
  buf[0] = '\0';
  for (const char *p = msg; *p;) {
    char tok[16];
    size_t t = 0;
    if (!isupper((unsigned char)*p) || (p > msg && isalnum((unsigned char)p[-1]))) {
      p++;
      continue;
    }
    while ((isupper((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_') && t < 15)
      tok[t++] = *p++;
    tok[t] = '\0';
    if (t > 8 || !isdigit((unsigned char)tok[t - 1]))
      continue;
    int i = find_card(cards, ncards, tok);
    if (i >= 0 && used < cap) {
      char val[72];
      tsr__card_value(cards + (size_t)i * TSR__CARD, val, sizeof val);
      used += (size_t)snprintf(buf + used, cap - used, "%s%s = %s", named ? ", " : "; the header has ",
                               tok, val);
      named++;
    }
  }
  if (named > 0)
    return;
  for (int i = 0; i < ncards && used < cap; i++) {
    char kw[9], val[72];
    tsr__card_keyword(cards + (size_t)i * TSR__CARD, kw);
    if (!is_ctype(kw))
      continue;
    tsr__card_value(cards + (size_t)i * TSR__CARD, val, sizeof val);
    used += (size_t)snprintf(buf + used, cap - used, "%s%s = %s", named ? ", " : "; the header has ",
                             kw, val);
    named++;
  }
}

/* Free wcspih's structures.  wcsfree leaves the messages that a failed
 * wcsset stored in the sub-structures (celprm, prjprm, ...) behind, so they
 * are cleared first; wcserr_clear resets each pointer, so nothing is freed
 * twice. */
void tsr__sky_wcsprm_free(int *nwcs, struct wcsprm **all) {
  if (*all == NULL)
    return;
  for (int i = 0; i < *nwcs; i++) {
    struct wcsprm *w = &(*all)[i];
    wcserr_clear(&w->lin.err);
    wcserr_clear(&w->cel.err);
    wcserr_clear(&w->cel.prj.err);
    wcserr_clear(&w->spc.err);
  }
  wcsvfree(nwcs, all);
}

/* Parse cards with wcslib and set up the primary WCS.  On success *all and
 * *nwcs are wcspih's array (free with wcs_free_all) and *prim points into it. */
int tsr__sky_wcsprm(tsr_ctx_t *ctx, const char *cards, int ncards, const char *what,
                     struct wcsprm **all, int *nwcs, struct wcsprm **prim) {
  char *hdr = NULL;
  int nreject = 0, status, rc;
  struct wcsprm *w = NULL;

  *all = NULL;
  *nwcs = 0;
  *prim = NULL;
  /* wcslib's messaging is one global switch, and the transforms in ops/
   * turn it off (failing points are expected there): turn it on for each
   * parse, whose messages the user sees. */
  wcserr_enable(1);
  rc = TSR_ENOMEM;
  /* wcspih may edit the header it is given (ctrl < 0), so give it a copy. */
  hdr = tsr__mallocarray(ctx, (size_t)ncards + 1, TSR__CARD);
  if (hdr == NULL) {
    tsr__err(ctx, rc, "%s: out of memory", what);
    goto out;
  }
  {
    /* wcspih trusts NAXIS: one that is not a small whole number made it
     * write out of bounds (found by fuzzing).  (A later NAXIS card may
     * override an earlier one, as a later card does.) */
    for (int i = 0; i < ncards; i++) {
      const char *c = cards + (size_t)i * TSR__CARD;
      int64_t v;
      if (memcmp(c, "NAXIS   =", 9) != 0)
        continue;
      if (!card_int(c, &v) || v < 0 || v > 99) {
        rc = tsr__err(ctx, TSR_EWCS, "%s: NAXIS = %.20s: expected one whole number from 0 to 99",
                      what, c + 10);
        goto out;
      }
    }
  }
  {
    /* Cards from a FITS file were never checked: only those wcslib can
     * take safely go to it (see tsr__cards_for_wcslib). */
    int k = tsr__cards_for_wcslib(cards, ncards, hdr);
    memset(hdr + (size_t)k * TSR__CARD, ' ', TSR__CARD);
    status = wcspih(hdr, k, WCSHDR_all, 0, &nreject, nwcs, all);
  }
  if (status != 0) {
    rc = tsr__err(ctx, status == 2 ? TSR_ENOMEM : TSR_EWCS,
                  "%s: wcslib: cannot parse the header (wcspih status %d)", what, status);
    goto out;
  }
  for (int i = 0; i < *nwcs; i++)
    if ((*all)[i].alt[0] == ' ' || (*all)[i].alt[0] == '\0')
      w = &(*all)[i];
  if (w == NULL) {
    rc = tsr__err(ctx, TSR_EWCS, "%s: no WCS (no primary CTYPEn keywords)", what);
    goto out;
  }
  /* wcslib drops the message it allocates for a unit string it cannot
   * parse (a leak, found by fuzzing), so the fixes and a first wcsset run
   * with messages off (wcserr_set then allocates nothing); units are
   * checked the same way, and only a failure for another reason runs
   * wcsset again with messages, for its words. */
  wcserr_enable(0);
  apply_fixes(w);
  {
    /* A failed wcsset leaves allocations that a second one on the same
     * struct leaks: keep a fresh copy for the run that gives the words. */
    struct wcsprm fresh;
    memset(&fresh, 0, sizeof fresh);
    fresh.flag = -1;
    bool have_fresh = wcssub(1, w, 0x0, 0x0, &fresh) == 0;
    status = wcsset(w);
    for (int i = 0; status != 0 && i < w->naxis; i++) {
      static const char *const angular[] = {"RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT"};
      int func;
      double scale, offset, power, units[WCSUNITS_NTYPE];
      bool angle = false;
      if (!w->cunit[i][0])
        continue;
      for (int k = 0; k < 6; k++)
        angle |= strncmp(w->ctype[i], angular[k], 4) == 0;
      if (wcsulexe(w->cunit[i], &func, &scale, units, NULL) != 0 ||
          (angle && wcsunitse(w->cunit[i], "deg", &scale, &offset, &power, NULL) != 0)) {
        wcserr_enable(1);
        if (have_fresh)
          wcsfree(&fresh);
        rc = tsr__err(ctx, TSR_EWCS, "%s: CUNIT%d = '%s' is not %s", what, i + 1, w->cunit[i],
                      angle ? "an angle (deg, rad, arcmin, arcsec, ...)" : "a unit wcslib can read");
        goto out;
      }
    }
    wcserr_enable(1);
    if (status != 0 && have_fresh) {
      int st = wcsset(&fresh);
      if (st != 0 && fresh.err && fresh.err->msg) {
        /* Take the words; w keeps the status. */
        wcserr_clear(&w->err);
        w->err = fresh.err;
        fresh.err = NULL;
      }
    }
    if (have_fresh)
      wcsfree(&fresh);
  }
  if (status != 0) {
    char keys[512];
    const char *msg = w->err && w->err->msg ? w->err->msg : wcs_errmsg[status];
    describe_keywords(msg, cards, ncards, keys, sizeof keys);
    rc = tsr__err(ctx, status == WCSERR_MEMORY ? TSR_ENOMEM : TSR_EWCS, "%s: wcslib: %s%s%s", what,
                  msg, keys,
                  strstr(msg, "projection code")
                      ? "; expected a FITS projection code (TAN, SIN, ARC, ZEA, STG, CAR, MER, "
                        "CEA, AIT, MOL, HPX, ...)"
                      : "");
    goto out;
  }
  if (matrix_singular(w, w->naxis)) {
    rc = tsr__err(ctx, TSR_EWCS,
                  "%s: the linear transformation (CDi_j, or PCi_j times CDELTi) is singular; "
                  "each pixel axis must map to an independent direction",
                  what);
    goto out;
  }
  *prim = w;
  rc = 0;
out:
  if (rc != 0)
    tsr__sky_wcsprm_free(nwcs, all);
  tsr__free(ctx, hdr);
  return rc;
}

/* tsr__sky_wcs_make, for cards whose line numbers are known (nums, unit:
 * see check_wcs_values). */
static int wcs_make(tsr_ctx_t *ctx, char *cards, int ncards, const int *nums,
                    const char *unit, const char *what, int need_shape, tsr_wcs_t **out) {
  static const char need[] = "a target header needs NAXIS and NAXISn (the output shape)";
  struct wcsprm *all = NULL, *w = NULL;
  int nwcs = 0, naxis = -1, rc;
  int64_t shape[TSR_MAX_DIMS] = {0, 0, 0, 0}, v;
  int i;

  *out = NULL;
  if ((i = find_card(cards, ncards, "NAXIS")) >= 0) {
    if (!card_int(cards + (size_t)i * TSR__CARD, &v) || v < 0) {
      char val[72];
      tsr__card_value(cards + (size_t)i * TSR__CARD, val, sizeof val);
      return tsr__err(ctx, TSR_EINVAL, "%s: NAXIS = %s is not a count of axes", what, val);
    }
    if (v > TSR_MAX_DIMS)
      return tsr__err(ctx, TSR_ENOTSUP, "%s: NAXIS = %" PRId64 "; at most %d axes are supported",
                      what, v, TSR_MAX_DIMS);
    naxis = (int)v;
  }
  if (need_shape && naxis < 0)
    return tsr__err(ctx, TSR_EINVAL, "%s: NAXIS missing; %s", what, need);
  if (need_shape && naxis == 0)
    return tsr__err(ctx, TSR_EINVAL, "%s: NAXIS = 0; %s", what, need);
  if ((rc = check_wcs_values(ctx, cards, ncards, nums, unit, what, naxis)) != 0)
    return rc;
  for (int a = 0; a < naxis; a++) {
    char kw[9];
    snprintf(kw, sizeof kw, "NAXIS%d", a + 1);
    /* Every NAXISi present was checked above (the first one counts). */
    if ((i = find_card(cards, ncards, kw)) >= 0 && card_int(cards + (size_t)i * TSR__CARD, &v))
      shape[a] = v;
    else if (i < 0 && need_shape)
      return tsr__err(ctx, TSR_EINVAL, "%s: %s missing; %s", what, kw, need);
  }
  if (!tsr__sky_has_ctype(cards, ncards))
    return tsr__err(ctx, TSR_EWCS, "%s: no WCS (no CTYPEn keywords)", what);
  if ((rc = tsr__sky_wcsprm(ctx, cards, ncards, what, &all, &nwcs, &w)) != 0)
    return rc;
  if (naxis < 0) {
    /* No NAXIS: the axes the WCS keywords describe, of unknown length. */
    naxis = w->naxis;
    if (naxis > TSR_MAX_DIMS) {
      rc = tsr__err(ctx, TSR_ENOTSUP, "%s: the WCS has %d axes; at most %d are supported", what,
                    naxis, TSR_MAX_DIMS);
      goto out;
    }
  }
  rc = tsr__wcs_new(ctx, cards, ncards, naxis, shape, out);
  if (rc != 0)
    tsr__err_prefix(ctx, "%s", what);
out:
  tsr__sky_wcsprm_free(&nwcs, &all);
  return rc;
}

int tsr__sky_wcs_make(tsr_ctx_t *ctx, const char *cards, int ncards, const char *what,
                     int need_shape, tsr_wcs_t **out) {
  /* A FITS file's cards as stored: keywords are taken in upper case, as
   * header text is (see keyword_upcase), in a copy that the new WCS keeps,
   * so its key and any header written from it do not depend on the case. */
  char *up = tsr__mallocarray(ctx, (size_t)ncards + 1, TSR__CARD);
  int rc;
  *out = NULL;
  if (up == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory for %d header cards", what, ncards);
  memcpy(up, cards, (size_t)ncards * TSR__CARD);
  for (int i = 0; i < ncards; i++)
    keyword_upcase(up + (size_t)i * TSR__CARD);
  rc = wcs_make(ctx, up, ncards, NULL, NULL, what, need_shape, out);
  tsr__free(ctx, up);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Public                                                             */

int tsr_wcs_parse(tsr_ctx_t *ctx, const char *text, size_t len, const char *what, int need_shape,
                  tsr_wcs_t **out) {
  char *cards = NULL;
  const char *unit = NULL;
  int *nums = NULL, ncards = 0, rc;

  tsr__api_check(ctx != NULL && out != NULL, "tsr_wcs_parse: NULL argument");
  *out = NULL;
  if (what == NULL)
    what = "header";
  if (text == NULL)
    return tsr__err(ctx, TSR_EINVAL, "%s: header text is NULL", what);
  if ((rc = text_to_cards(ctx, text, len, what, &cards, &nums, &unit, &ncards)) != 0)
    return rc;
  if (ncards == 0)
    rc = tsr__err(ctx, TSR_EINVAL, "%s: empty header (no cards before END)", what);
  else
    rc = wcs_make(ctx, cards, ncards, nums, unit, what, need_shape, out);
  tsr__free(ctx, cards);
  tsr__free(ctx, nums);
  return rc;
}

int tsr_wcs_read_hdr(tsr_ctx_t *ctx, const char *path, tsr_wcs_t **out) {
  /* A header file is small; anything past this is not one. */
  enum { MAX_HDR_BYTES = 64 << 20 };
  char what[TSR__ERRMSG_CAP / 2];
  char *text = NULL;
  FILE *fp = NULL;
  size_t len = 0, cap = 0;
  int rc;

  tsr__api_check(ctx != NULL && out != NULL, "tsr_wcs_read_hdr: NULL argument");
  *out = NULL;
  if (path == NULL)
    return tsr__err(ctx, TSR_EINVAL, "target: header path is NULL");
  snprintf(what, sizeof what, "target \"%s\"", path);
  fp = fopen(path, "rb");
  if (fp == NULL) {
    rc = tsr__err(ctx, TSR_EIO, "%s: cannot open: %s", what, strerror(errno));
    goto out;
  }
  for (;;) {
    size_t got;
    if (len == cap) {
      char *t;
      cap = cap ? 2 * cap : 16384;
      if (cap > MAX_HDR_BYTES) {
        rc = tsr__err(ctx, TSR_EINVAL, "%s: larger than %d MiB; not a header file", what,
                      MAX_HDR_BYTES >> 20);
        goto out;
      }
      t = tsr__realloc(ctx, text, cap);
      if (t == NULL) {
        rc = tsr__err(ctx, TSR_ENOMEM, "%s: out of memory reading the header", what);
        goto out;
      }
      text = t;
    }
    got = fread(text + len, 1, cap - len, fp);
    len += got;
    if (got == 0) {
      if (ferror(fp)) {
        rc = tsr__err(ctx, TSR_EIO, "%s: cannot read: %s", what, strerror(errno));
        goto out;
      }
      break;
    }
  }
  if (len == 0) {
    rc = tsr__err(ctx, TSR_EINVAL, "%s: the file is empty; expected FITS header cards", what);
    goto out;
  }
  rc = tsr_wcs_parse(ctx, text, len, what, 1, out);
out:
  if (fp != NULL)
    fclose(fp);
  tsr__free(ctx, text);
  return rc;
}

/* The celestial frame, as a reader would name it. */
static void frame_name(const struct wcsprm *w, char *buf, size_t cap) {
  if (strncmp(w->lngtyp, "GLON", 4) == 0)
    snprintf(buf, cap, "Galactic");
  else if (strncmp(w->lngtyp, "ELON", 4) == 0)
    snprintf(buf, cap, "Ecliptic");
  else if (strncmp(w->lngtyp, "RA", 2) == 0) {
    if (strncmp(w->radesys, "FK5", 3) == 0)
      snprintf(buf, cap, "FK5(J%g)", undefined(w->equinox) ? 2000.0 : w->equinox);
    else if (strncmp(w->radesys, "FK4", 3) == 0)
      snprintf(buf, cap, "%s(B%g)", w->radesys, undefined(w->equinox) ? 1950.0 : w->equinox);
    else
      snprintf(buf, cap, "%s", w->radesys[0] ? w->radesys : "ICRS");
  } else {
    char lng[8], lat[8];
    int n = 0;
    while (n < 4 && w->lngtyp[n] && w->lngtyp[n] != ' ')
      n++;
    snprintf(lng, sizeof lng, "%.*s", n, w->lngtyp);
    n = 0;
    while (n < 4 && w->lattyp[n] && w->lattyp[n] != ' ')
      n++;
    snprintf(lat, sizeof lat, "%.*s", n, w->lattyp);
    snprintf(buf, cap, "%s/%s", lng, lat);
  }
}

int tsr_wcs_describe(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, char *buf, size_t cap) {
  struct wcsprm *all = NULL, *w = NULL;
  int nwcs = 0, rc;
  size_t used = 0;
  char shape[128] = "", *s = shape;

  tsr__api_check(ctx != NULL && wcs != NULL && buf != NULL, "tsr_wcs_describe: NULL argument");
  if (cap == 0)
    return tsr__err(ctx, TSR_EINVAL, "wcs_describe: buffer capacity is 0");
  buf[0] = '\0';
  if ((rc = tsr__sky_wcsprm(ctx, wcs->cards, wcs->ncards, "wcs", &all, &nwcs, &w)) != 0)
    return rc;
  for (int a = 0; a < wcs->naxis; a++) {
    size_t left = sizeof shape - (size_t)(s - shape);
    if (wcs->shape[a] > 0)
      s += snprintf(s, left, "%s%" PRId64, a ? " x " : "", wcs->shape[a]);
    else
      s += snprintf(s, left, "%s?", a ? " x " : "");
  }
  if (w->lng >= 0 && w->lat >= 0) {
    char proj[72], frame[80];
    const char *code = w->ctype[w->lng] + 5;
    int lng = w->lng, lat = w->lat;
    double m00 = w->cdelt[lng] * w->pc[lng * w->naxis + lng];
    double m01 = w->cdelt[lng] * w->pc[lng * w->naxis + lat];
    double m10 = w->cdelt[lat] * w->pc[lat * w->naxis + lng];
    double m11 = w->cdelt[lat] * w->pc[lat * w->naxis + lat];
    double scale = sqrt(fabs(m00 * m11 - m01 * m10)) * 3600.0; /* arcsec per pixel */
    double pix[8] = {0}, img[8], world[8], phi, theta;
    int stat = 0;
    /* The celestial axes may be any of a header's (up to 99): shapes are
     * kept for the first four only. */
    bool have_shape = wcs->naxis >= 2 && lng < TSR_MAX_DIMS && lat < TSR_MAX_DIMS &&
                      wcs->shape[lng] > 0 && wcs->shape[lat] > 0;

    while (*code == '-')
      code++;
    snprintf(proj, sizeof proj, "%s", *code ? code : "linear");
    for (char *e = proj + strlen(proj); e > proj && e[-1] == ' ';)
      *--e = '\0';
    frame_name(w, frame, sizeof frame);
    used += (size_t)snprintf(buf, cap, "%s %s, %s", proj, frame, shape);
    if (used < cap) {
      if (scale >= 3600.0)
        used += (size_t)snprintf(buf + used, cap - used, ", %.3f deg/px", scale / 3600.0);
      else if (scale >= 60.0)
        used += (size_t)snprintf(buf + used, cap - used, ", %.3f arcmin/px", scale / 60.0);
      else
        used += (size_t)snprintf(buf + used, cap - used, ", %.3f arcsec/px", scale);
    }
    /* World coordinates of the image centre, or of the reference pixel
     * when the shape is unknown. */
    for (int a = 0; a < w->naxis && a < 8; a++)
      pix[a] = a < wcs->naxis && wcs->shape[a] > 0 && have_shape ? 0.5 * (double)(wcs->shape[a] + 1)
                                                                  : w->crpix[a];
    if (w->naxis <= 8 && wcsp2s(w, 1, w->naxis, pix, img, &phi, &theta, world, &stat) == 0 &&
        used < cap) {
      const char *ln = strncmp(w->lngtyp, "RA", 2) == 0     ? "RA"
                       : strncmp(w->lngtyp, "GLON", 4) == 0 ? "l"
                       : strncmp(w->lngtyp, "ELON", 4) == 0 ? "lon"
                                                             : "lon";
      const char *lt = strncmp(w->lngtyp, "RA", 2) == 0     ? "Dec"
                       : strncmp(w->lngtyp, "GLON", 4) == 0 ? "b"
                                                             : "lat";
      used += (size_t)snprintf(buf + used, cap - used, ", %s %s %.5f %s %.5f",
                               have_shape ? "centre" : "reference", ln, world[lng], lt,
                               world[lat]);
    }
  } else {
    used += (size_t)snprintf(buf, cap, "non-celestial (");
    for (int a = 0; a < w->naxis && used < cap; a++) {
      char t[72];
      snprintf(t, sizeof t, "%s", w->ctype[a]);
      for (char *e = t + strlen(t); e > t && e[-1] == ' ';)
        *--e = '\0';
      used += (size_t)snprintf(buf + used, cap - used, "%s%s", a ? ", " : "", t[0] ? t : "?");
    }
    if (used < cap)
      used += (size_t)snprintf(buf + used, cap - used, "), %s", shape);
  }
  rc = used < cap ? 0 : tsr__err(ctx, TSR_ERANGE, "wcs_describe: %zu bytes are too few", cap);
  tsr__sky_wcsprm_free(&nwcs, &all);
  return rc;
}

int tsr_wcs_pix2world(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, size_t n, const double *x,
                      const double *y, double *lon, double *lat) {
  enum { BATCH = 256 };
  struct wcsprm *all = NULL, *w = NULL;
  double *pix = NULL, *img = NULL, *world = NULL, *phi = NULL, *theta = NULL;
  int *stat = NULL;
  int nwcs = 0, rc, nel;

  tsr__api_check(ctx != NULL && wcs != NULL, "tsr_wcs_pix2world: NULL argument");
  if (n == 0)
    return 0;
  if (x == NULL || y == NULL || lon == NULL || lat == NULL)
    return tsr__err(ctx, TSR_EINVAL, "wcs_pix2world: NULL coordinate array");
  if ((rc = tsr__sky_wcsprm(ctx, wcs->cards, wcs->ncards, "wcs", &all, &nwcs, &w)) != 0)
    return rc;
  if (w->lng < 0 || w->lat < 0) {
    rc = tsr__err(ctx, TSR_EWCS, "wcs_pix2world: the WCS has no celestial axes");
    goto out;
  }
  nel = w->naxis;
  rc = TSR_ENOMEM;
  /* Zeroed: wcslib reads phi and theta back even for points its projection
   * step rejected (the results are then discarded by stat). */
  pix = tsr__calloc(ctx, (size_t)BATCH * (size_t)nel, sizeof *pix);
  img = tsr__calloc(ctx, (size_t)BATCH * (size_t)nel, sizeof *img);
  world = tsr__calloc(ctx, (size_t)BATCH * (size_t)nel, sizeof *world);
  phi = tsr__calloc(ctx, BATCH, sizeof *phi);
  theta = tsr__calloc(ctx, BATCH, sizeof *theta);
  stat = tsr__mallocarray(ctx, BATCH, sizeof *stat);
  if (!pix || !img || !world || !phi || !theta || !stat) {
    tsr__err(ctx, rc, "wcs_pix2world: out of memory");
    goto out;
  }
  for (size_t i0 = 0; i0 < n; i0 += BATCH) {
    int m = (int)(n - i0 < BATCH ? n - i0 : BATCH), status;
    /* The first two pixel axes carry the image; any others sit at pixel 0
     * (1 in wcslib's 1-based convention). */
    for (int k = 0; k < m; k++) {
      for (int a = 0; a < nel; a++)
        pix[k * nel + a] = 1.0;
      pix[k * nel + 0] = x[i0 + (size_t)k] + 1.0;
      if (nel > 1)
        pix[k * nel + 1] = y[i0 + (size_t)k] + 1.0;
    }
    status = wcsp2s(w, m, nel, pix, img, phi, theta, world, stat);
    if (status != 0 && status != WCSERR_BAD_PIX) {
      rc = tsr__err(ctx, TSR_EWCS, "wcs_pix2world: wcslib: %s",
                    w->err && w->err->msg ? w->err->msg : wcs_errmsg[status]);
      goto out;
    }
    for (int k = 0; k < m; k++) {
      bool ok = (status == 0 || stat[k] == 0) && isfinite(world[k * nel + w->lng]) &&
                isfinite(world[k * nel + w->lat]);
      lon[i0 + (size_t)k] = ok ? world[k * nel + w->lng] : NAN;
      lat[i0 + (size_t)k] = ok ? world[k * nel + w->lat] : NAN;
    }
  }
  rc = 0;
out:
  tsr__free(ctx, pix);
  tsr__free(ctx, img);
  tsr__free(ctx, world);
  tsr__free(ctx, phi);
  tsr__free(ctx, theta);
  tsr__free(ctx, stat);
  tsr__sky_wcsprm_free(&nwcs, &all);
  return rc;
}
