/* io.h -- private to io/: what its files offer each other.  Not installed;
 * ops/ never sees it.  WCS headers are sky/'s (sky.h). */
#ifndef TSR_IO_H
#define TSR_IO_H

#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "internal.h"
#include "sky.h"


/* The NAXIS a "NAXIS   = v" card declares, read as leniently as cfitsio
 * reads it (a decimal point or a D exponent still make a number), or -1 if
 * the card is not one or its value is no number. */
double tsr__io_naxis_card(const char *card);

/* True if all 80 columns of the card are blank. */
bool tsr__io_card_blank(const char *card);

/* The HDU a source asks for: by number, or by EXTNAME and EXTVER. */
typedef struct {
  int hdu;                     /* 1-based; 0 = the first image with NAXIS > 0 */
  const char *extname;         /* or NULL; see tsr_hdu_t */
  int extver;                  /* with extname; 0 = any */
} tsr__hdu_sel_t;

/* True if the header `cards` (n of them) is the HDU named by sel (EXTNAME,
 * else HDUNAME, case aside and trailing blanks ignored, as cfitsio's
 * fits_movnam_hdu; EXTVER 1 when absent). */
bool tsr__io_hdu_named(const char *cards, int n, const tsr__hdu_sel_t *sel);

/* A plain float image HDU as hdu.c found it. */
typedef struct {
  int named;                   /* the HDU the name matched (1-based), or 0 */
  int hdu;                     /* 1-based */
  int naxis;                   /* 1..TSR_MAX_DIMS */
  int64_t shape[TSR_MAX_DIMS]; /* 1 beyond naxis */
  int bitpix;                  /* -32 or -64 */
  int64_t data_off;            /* byte offset of the data in the file */
  char *cards;                 /* every card through END, as cfitsio gives them; tsr__malloc */
  int ncards;                  /* END included */
} tsr__plain_hdu_t;

/* Find the image HDU `sel` names of the open FITS file `fd` of `size`
 * bytes without cfitsio, if it is IEEE floats stored unscaled in a header
 * laid out exactly as the standard says.  A name matched by an HDU the
 * walk then declines is still given in out->named.
 * @return 1 with *out filled (the caller frees out->cards with tsr__free),
 * 0 when cfitsio must read this file, TSR_ENOTSUP without a message when
 * a header it walks has more axes than cfitsio or tessera can take (that
 * HDU and its NAXIS in out->hdu and out->naxis), or TSR_ENOMEM. */
int tsr__plain_hdu(tsr_ctx_t *ctx, int fd, int64_t size, const tsr__hdu_sel_t *sel,
                   tsr__plain_hdu_t *out);

/* The same walk over a gzip file `fd` (inflated as it goes, up to the HDU
 * asked for), only to refuse headers with too many axes as above: 0, or
 * TSR_ENOTSUP with out->hdu and out->naxis, or TSR_ENOMEM. */
int tsr__gzip_hdu_axes(tsr_ctx_t *ctx, int fd, const tsr__hdu_sel_t *sel, tsr__plain_hdu_t *out);

/* The most axes a header may declare before cfitsio reads it: cfitsio 4.2
 * overruns memory opening a header of about 104 axes or more (hdu.c,
 * tiles.c check every header cfitsio would read). */
#define TSR__CFITSIO_MAX_AXES 99

/* Tests set this to send every file to cfitsio, to compare the two paths
 * (the walk still refuses headers cfitsio cannot take). */
extern bool tsr__plain_hdu_off;

/* An output file being written (output.c): every writer creates, publishes
 * and gives up its files through these, so that special files are refused,
 * symbolic links are followed, a killed run leaves nothing behind and a
 * failed one deletes only what it created. */
typedef struct {
  const char *path;        /* as given; names the output in messages */
  char *final;             /* the file replaced: path, or where its links lead; tsr__malloc */
  const char *base;        /* final's last component (inside final) */
  int dirfd;               /* final's directory (O_PATH), or -1 */
  int fd;                  /* the temporary, open for writing; inherited by pool workers; or -1 */
  char tmp[NAME_MAX + 1];  /* the temporary's name in dirfd while it has one, else "" */
} tsr__out_t;

/* Check `path` (see output.c) and create its temporary; `what` prefixes
 * messages ("fits").  0, or TSR_EIO / TSR_EINVAL / TSR_ENOMEM with the
 * message on ctx and nothing left to discard. */
int tsr__out_open(tsr_ctx_t *ctx, const char *what, const char *path, tsr__out_t *o);
/* 0 if `bytes` fit in the space left to us on the output's filesystem, else
 * TSR_EIO: "<what>: output "x.fits" needs 4.0 TB<with>, 48 MB free on
 * /mnt/x" (`with` says what else the bytes count, or is ""). */
int tsr__out_room(tsr_ctx_t *ctx, const char *what, const tsr__out_t *o, int64_t bytes,
                  const char *with);
/* A stdio stream on a duplicate of o->fd (fclose it, and check that), or NULL. */
FILE *tsr__out_stream(tsr_ctx_t *ctx, const char *what, const tsr__out_t *o);
/* The contents are complete: name the temporary and close it. */
int tsr__out_seal(tsr_ctx_t *ctx, const char *what, tsr__out_t *o);
/* Rename the sealed temporary over the final name. */
int tsr__out_commit(tsr_ctx_t *ctx, const char *what, tsr__out_t *o);
/* Close, and remove the temporary if it is still there; never touches the
 * final name.  Safe after tsr__out_open, failed or not, and twice (but
 * not on a zeroed o: set fd and dirfd to -1 first). */
void tsr__out_discard(tsr_ctx_t *ctx, tsr__out_t *o);

/* nx x ny values of img (row y at img + y nx) as an 8-bit grey + alpha PNG
 * into f (png.c): [lo, hi] mapped to [0, 1], then stretched by `kind` (a
 * tsr_stretch_t); non-finite values are transparent.  `bottom_up` writes
 * row ny - 1 first (FITS rows go up, PNG rows down).  `zlevel` is zlib's
 * level (with the SUB filter alone, for speed), -1 for libpng's defaults.  `row` is scratch of 2 nx bytes.  0, or
 * -1 if libpng failed.  Kept apart from the callers so that none of their
 * locals lives across libpng's longjmp. */
int tsr__png_encode(FILE *f, const double *img, int64_t nx, int64_t ny, double lo, double hi,
                    int kind, bool bottom_up, int zlevel, unsigned char *row);

/* qsort's comparison of doubles; numpy's percentile (linear) p in [0, 100]
 * of the sorted values s[0..n), n >= 1 (png.c). */
int tsr__cmp_double(const void *a, const void *b);
double tsr__percentile(const double *s, size_t n, double p);

/* reproject 0.21's CRPIX of HiPS tile idx of `order` (tile_header_2d), for
 * tests (hips.c): *border when it has a second header, whose CRPIX goes to
 * crpix2.  0, or a negative code with the message on ctx. */
int tsr__hips_tile_crpix(tsr_ctx_t *ctx, const char *frame, int order, int tile_width,
                         int64_t idx, double crpix[2], bool *border, double crpix2[2]);

/* The file name of a path (after its last '/'). */
const char *tsr__base_name(const char *path);
/* Cards that describe a FITS file's layout or its stored integers rather
 * than the image (fits.c): the reader keeps them out of a node's cards, the
 * writer out of what it copies. */
bool tsr__card_structural(const char *card);

/* What says a file is the one a node was built from: size, inode, and the
 * modification and change times.  The change time is in it because no user
 * can set it: `cp -p` or `touch -r` restore an edited file's size and mtime,
 * but its ctime moves on every write (a restored original was served from
 * the cache under the edited file's key).  Every file source keys and
 * checks its file by it. */
typedef struct {
  int64_t size, mtime_ns, ctime_ns, ino;
} tsr__identity_t;
tsr__identity_t tsr__identity_of(const struct stat *st);
bool tsr__identity_same(const tsr__identity_t *a, const tsr__identity_t *b);
/* Its four numbers into a key. */
void tsr__identity_encode(const tsr__identity_t *id, tsr__buf_t *b);

#endif
