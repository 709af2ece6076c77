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

#endif
