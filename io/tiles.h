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

/* Check the keywords of a tile-compressed image's table (`ncards` cards of
 * 80 columns) that cfitsio reads, and divides by, whenever it passes the
 * HDU: ZCMPTYPE, ZBITPIX, ZNAXIS, ZNAXISn, ZTILEn, RICE_1's block size.
 * Call before cfitsio sees the file.  @return 0, or TSR_EFITS /
 * TSR_ENOTSUP naming `path` and `hdu`. */
int tsr__tiles_header_check(tsr_ctx_t *ctx, const char *path, int hdu, const char *cards,
                            int ncards);

/* Check the compressed stream of every tile that the box [start, stop)
 * (0-based pixels, FITS axis order) meets, except those checked before.
 * @return 0, or TSR_EFITS naming the file, HDU and tile (1-based, the
 * table row), or TSR_ENOMEM. */
int tsr__tiles_check(tsr_ctx_t *ctx, tsr__tiles_t *t, const int64_t start[TSR_MAX_DIMS],
                     const int64_t stop[TSR_MAX_DIMS]);

/* Accepts NULL. */
void tsr__tiles_free(tsr_ctx_t *ctx, tsr__tiles_t *t);

/* The stream checks, exposed for tests: true if cfitsio's decoder would
 * decode `npix` pixels from the `len` bytes at `c` without reading past
 * them; otherwise false with a reason in why[cap]. */
bool tsr__tiles_rice_ok(const unsigned char *c, int64_t len, int bytepix, int blocksize,
                        int64_t npix, char *why, size_t cap);

#endif
