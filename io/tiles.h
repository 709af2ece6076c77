/* tiles.h -- private to io/: a tile-compressed image checked before
 * cfitsio decompresses it (see tiles.c for why).  Not installed. */
#ifndef TSR_IO_TILES_H
#define TSR_IO_TILES_H

#include "cfitsio.h"

typedef struct tsr__tiles_s tsr__tiles_t;

/* Read the layout of the compressed image at the current HDU of `f`
 * (a tile-compressed image, fits_is_compressed_image) and check every tile
 * descriptor against its heap and, when `file_size` >= 0, the table against
 * the file.  `path` and `hdu` name the image in messages.  @return 0 and
 * *out (free with tsr__tiles_free), or TSR_EFITS / TSR_ENOTSUP /
 * TSR_ENOMEM with *out = NULL and the message on ctx. */
int tsr__tiles_open(tsr_ctx_t *ctx, fitsfile *f, const char *path, int hdu, int64_t file_size,
                    tsr__tiles_t **out);

/* Before cfitsio moves to HDU `hdu` of `f`, whose header starts at byte
 * `pos` (the end of the HDU before it, as fits_get_hduaddrll gives it):
 * if that HDU is a tile-compressed image, check the keywords that cfitsio
 * reads, and divides by, as soon as it reads the header (ZCMPTYPE,
 * ZBITPIX, ZNAXIS, ZNAXISn, ZTILEn, RICE_1's block size: a 0 was a
 * SIGFPE).  @return 0 (also when there is no header there for cfitsio to
 * fail on), or TSR_EFITS / TSR_ENOTSUP naming `path` and `hdu`, or
 * TSR_ENOMEM. */
int tsr__tiles_precheck(tsr_ctx_t *ctx, fitsfile *f, const char *path, int hdu, int64_t pos);

/* Check the compressed stream of every tile that the box [start, stop)
 * (0-based pixels, FITS axis order) meets, except those checked before.
 * @return 0, or TSR_EFITS naming the file, HDU and tile (1-based, the
 * table row), or TSR_ENOMEM. */
int tsr__tiles_check(tsr_ctx_t *ctx, tsr__tiles_t *t, const int64_t start[TSR_MAX_DIMS],
                     const int64_t stop[TSR_MAX_DIMS]);

/* The header of the image that a compressed image's table header `table`
 * (n cards through END, as fits_hdr2str gives them) stands for, translated
 * card by card as cfitsio's imcomp_copy_comp2img does (ZTENSION ->
 * XTENSION, ZBITPIX -> BITPIX, ...; the table's own structure and the
 * compression keywords dropped), in the table's order, END last.  cfitsio
 * reads its own translation back as a FITS header, which fails when the
 * Z keywords are not in the order of the mandatory ones; this does not
 * depend on their order.  @return 0 and *out (n_out cards; tsr__free), or
 * TSR_ENOMEM. */
int tsr__tiles_image_cards(tsr_ctx_t *ctx, const char *table, int n, char **out, int *n_out);

/* Accepts NULL. */
void tsr__tiles_free(tsr_ctx_t *ctx, tsr__tiles_t *t);

/* The stream checks, exposed for tests: true if cfitsio's decoder would
 * decode `npix` pixels from the `len` bytes at `c` without reading past
 * them; otherwise false with a reason in why[cap]. */
bool tsr__tiles_rice_ok(const unsigned char *c, int64_t len, int bytepix, int blocksize,
                        int64_t npix, char *why, size_t cap);

#endif
