/* io.h -- private to io/: what header.c offers fits.c.
 *
 * Both a header file and a FITS image end as an array of 80-column cards
 * that must pass the same wcslib validation, so that a broken WCS is
 * reported the same way (naming the file and the keyword) whichever way it
 * arrived.  Not installed; ops/ never sees it.
 */
#ifndef TSR_IO_H
#define TSR_IO_H

#include "internal.h"

#define TSR__CARD 80

/* The keyword of an 80-column card (columns 1-8, trailing blanks dropped). */
void tsr__io_keyword(const char *card, char kw[9]);

/* True if all 80 columns of the card are blank. */
bool tsr__io_card_blank(const char *card);

/* True if some card is a primary CTYPEn (n = 1..99), i.e. the header claims a WCS. */
bool tsr__io_has_ctype(const char *cards, int ncards);

/* Validate `ncards` cards (80 columns each, no END) with wcslib and make a
 * new tsr_wcs_t holding a copy of them.  NAXIS and NAXISn are taken from the
 * cards; they are required when `need_shape`.  `what` prefixes every message
 * ("target \"t.hdr\"").  @return 0 and *out (caller frees with
 * tsr_wcs_free), or TSR_EWCS / TSR_EINVAL / TSR_ENOTSUP / TSR_ENOMEM with
 * *out = NULL and the message on ctx.  The cards are only read. */
int tsr__io_wcs_make(tsr_ctx_t *ctx, const char *cards, int ncards, const char *what,
                     int need_shape, tsr_wcs_t **out);

/* A plain float image HDU as hdu.c found it. */
typedef struct {
  int hdu;                     /* 1-based */
  int naxis;                   /* 1..TSR_MAX_DIMS */
  int64_t shape[TSR_MAX_DIMS]; /* 1 beyond naxis */
  int bitpix;                  /* -32 or -64 */
  int64_t data_off;            /* byte offset of the data in the file */
  char *cards;                 /* every card through END, as cfitsio gives them; tsr__malloc */
  int ncards;                  /* END included */
} tsr__plain_hdu_t;

/* Find image HDU `hdu` (0 = the first with NAXIS > 0) of the open FITS
 * file `fd` of `size` bytes without cfitsio, if it is IEEE floats stored
 * unscaled in a header laid out exactly as the standard says.
 * @return 1 with *out filled (the caller frees out->cards with tsr__free),
 * 0 when cfitsio must read this file (never an error about the file), or
 * TSR_ENOMEM with the message on ctx. */
int tsr__plain_hdu(tsr_ctx_t *ctx, int fd, int64_t size, int hdu, tsr__plain_hdu_t *out);

/* Tests set this to send every file to cfitsio, to compare the two paths. */
extern bool tsr__plain_hdu_off;

#endif
