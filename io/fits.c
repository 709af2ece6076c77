/* fits.c -- FITS images as lazy sources (fits_write.c writes them).
 *
 * DESIGN: a FITS source reads only the header when the node is built: the
 * image's shape and equivalent BITPIX, its cards (validated as a WCS by
 * header.c when they name one), and the file's identity (real path, size,
 * mtime in ns, inode), which together with the header cards make the node
 * key, so an edited file is a different node.  Data are read when a run asks
 * for a region, by each process for itself (op->start), which holds at most
 * a bounded number of inputs open at a time, however many the graph has
 * (see "The pool of open inputs").  Plain IEEE float
 * images -- most inputs -- are found by hdu.c and read by mapping the file
 * (up to 256 MiB) or with pread (larger, where mapping windows cost more
 * than it saved): a window is a byte swap from the page cache, or no copy
 * at all for ops that read big-endian values in place (fits_view: the
 * spline orders, on mapped files), and cfitsio is never loaded.
 * Everything else goes to cfitsio (loaded on first use, see cfitsio.h),
 * which reads exactly the task's box with fits_read_subset, as float,
 * applying BSCALE/BZERO and turning BLANK into NaN; tile-compressed images
 * decompress only the tiles the box meets, each checked by tiles.c first.  We never ask cfitsio to parse
 * user paths (fits_open_diskfile), and every cfitsio status is turned into a
 * message naming the file at this boundary, with cfitsio's message stack
 * cleared so that it never leaks into a later, unrelated error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cfitsio.h"
#include "io.h"
#include "tiles.h"

tsr__identity_t tsr__identity_of(const struct stat *st) {
  tsr__identity_t id = {(int64_t)st->st_size,
                        (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
                        (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec,
                        (int64_t)st->st_ino};
  return id;
}

bool tsr__identity_same(const tsr__identity_t *a, const tsr__identity_t *b) {
  return a->size == b->size && a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns &&
         a->ino == b->ino;
}

void tsr__identity_encode(const tsr__identity_t *id, tsr__buf_t *b) {
  tsr__buf_put_i64(b, id->size);
  tsr__buf_put_i64(b, id->mtime_ns);
  tsr__buf_put_i64(b, id->ctime_ns);
  tsr__buf_put_i64(b, id->ino);
}

static bool fd_shortage(int e) { return e == EMFILE || e == ENFILE; }

/* "fits: cannot open "x.fits": <why>", where running out of descriptors
 * names the limit (tsr__strerror_fd). */
static int open_fail(tsr_ctx_t *ctx, const char *path, int e) {
  char why[160];
  return tsr__err(ctx, TSR_EIO, "fits: cannot open \"%s\": %s", path,
                  tsr__strerror_fd(e, why, sizeof why));
}

/* cfitsio could not open `path` (status, and errno `e` right after): when
 * fopen ran out of descriptors say so, not cfitsio's "could not open the
 * named file". */
static int cfitsio_open_fail(tsr_ctx_t *ctx, int status, int e, const char *path, int hdu) {
  if (status == FILE_NOT_OPENED && fd_shortage(e)) {
    tsr__cfitsio_loaded()->clear_errmsg();
    return open_fail(ctx, path, e);
  }
  return hdu > 0 ? tsr__cfitsio_fail(ctx, status, "cannot open HDU %d of \"%s\"", hdu, path)
                 : tsr__cfitsio_fail(ctx, status, "cannot open \"%s\"", path);
}

const char *tsr__base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

/* ------------------------------------------------------------------ */
/* Opening an image HDU                                               */

typedef struct {
  fitsfile *f;               /* open at the chosen HDU, or NULL */
  struct stat st;            /* of the file when opened */
  int hdu;                   /* 1-based, resolved */
  int naxis;
  int64_t shape[TSR_MAX_DIMS];
  int bitpix;                /* BITPIX as stored */
  int equiv;                 /* equivalent BITPIX (fits_get_img_equivtype) */
  char *raw;                 /* every card as read, END included */
  int nraw;
  bool raw_cfitsio;          /* raw is cfitsio's (fits_free_memory), else tsr__malloc */
  char *cards;               /* NAXIS, NAXISn, then the descriptive cards; tsr__malloc */
  int ncards;
  int64_t raw_offset;        /* byte offset of plain IEEE float data, or -1 */
} image_t;

static void image_close(tsr_ctx_t *ctx, image_t *im) {
  const tsr__cfitsio_t *cf = tsr__cfitsio_loaded();
  int status = 0;
  if (im->raw && im->raw_cfitsio)
    cf->free_memory(im->raw, &status);
  else
    tsr__free(ctx, im->raw);
  if (im->f)
    cf->close_file(im->f, &status);
  if (cf)
    cf->clear_errmsg();
  tsr__free(ctx, im->cards);
  im->raw = NULL;
  im->f = NULL;
  im->cards = NULL;
}

/* Cards that describe the file's layout or the stored integers rather than
 * the image: the node's data are floats with scaling applied, and a written
 * file gets its own.  cfitsio's two boilerplate COMMENT cards are dropped
 * too, or every round trip would add another pair. */
bool tsr__card_structural(const char *card) {
  static const char *const exact[] = {"",       "END",      "SIMPLE",  "XTENSION", "BITPIX",
                                      "NAXIS",  "EXTEND",   "PCOUNT",  "GCOUNT",   "BSCALE",
                                      "BZERO",  "BLANK",    "DATAMIN", "DATAMAX",  "CHECKSUM",
                                      "DATASUM", "ZIMAGE",  "ZBITPIX", "ZCMPTYPE", "ZQUANTIZ",
                                      "ZDITHER0", "ZSIMPLE", "ZEXTEND", "ZBLOCKED", "ZPCOUNT",
                                      "ZGCOUNT", "ZHECKSUM", "ZDATASUM", "ZTENSION", "TFIELDS"};
  static const char *const numbered[] = {"NAXIS", "ZNAXIS", "ZTILE", "ZNAME", "ZVAL",
                                         "TTYPE", "TFORM"};
  char kw[9];
  tsr__card_keyword(card, kw);
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strcmp(kw, exact[i]) == 0)
      return true;
  for (size_t i = 0; i < sizeof numbered / sizeof numbered[0]; i++) {
    size_t n = strlen(numbered[i]);
    if (strncmp(kw, numbered[i], n) == 0 && kw[n] >= '0' && kw[n] <= '9') {
      const char *p = kw + n;
      while (*p >= '0' && *p <= '9')
        p++;
      if (*p == '\0')
        return true;
    }
  }
  if (strcmp(kw, "COMMENT") == 0 &&
      (strncmp(card + 10, "FITS (Flexible Image Transport System) format is", 48) == 0 ||
       strncmp(card + 10, "and Astrophysics', volume 376, page 359;", 40) == 0))
    return true;
  return false;
}

/* Build im->cards: NAXIS and NAXISn as the image has them (a compressed
 * image's table keywords are converted by cfitsio), then the rest. */
static int image_cards(tsr_ctx_t *ctx, image_t *im) {
  char *c;
  im->cards = tsr__mallocarray(ctx, (size_t)im->nraw + TSR_MAX_DIMS + 1, TSR__CARD + 1);
  if (im->cards == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "fits: out of memory for %d header cards", im->nraw);
  c = im->cards;
  /* snprintf writes a NUL after each card; the next card overwrites it. */
  snprintf(c, TSR__CARD + 1, "%-8s= %20d%-50s", "NAXIS", im->naxis, "");
  c += TSR__CARD;
  for (int a = 0; a < im->naxis; a++, c += TSR__CARD) {
    char kw[9];
    snprintf(kw, sizeof kw, "NAXIS%d", a + 1);
    snprintf(c, TSR__CARD + 1, "%-8s= %20" PRId64 "%-50s", kw, im->shape[a], "");
  }
  for (int i = 0; i < im->nraw; i++) {
    const char *card = im->raw + (size_t)i * TSR__CARD;
    if (tsr__card_structural(card))
      continue;
    memcpy(c, card, TSR__CARD);
    c += TSR__CARD;
  }
  im->ncards = (int)((c - im->cards) / TSR__CARD);
  return 0;
}

/* A truncated file opens fine (only the header is read) and would fail
 * chunk by chunk later; say so now. */
static int check_size(tsr_ctx_t *ctx, const char *path, const image_t *im, int64_t data) {
  int64_t bytes, end;
  if (!tsr__array_bytes(im->naxis, im->shape, (im->bitpix < 0 ? -im->bitpix : im->bitpix) / 8,
                        &bytes) ||
      __builtin_add_overflow(data, bytes, &end)) {
    char dims[128];
    tsr__shape_format(im->naxis, im->shape, dims, sizeof dims);
    return tsr__err(ctx, TSR_EFITS,
                    "fits: \"%s\" HDU %d: image too large: %s values of BITPIX %d is more than "
                    "2^60 bytes (the file has %" PRId64 " bytes)",
                    path, im->hdu, dims, im->bitpix, (int64_t)im->st.st_size);
  }
  if ((int64_t)im->st.st_size < end)
    return tsr__err(ctx, TSR_EFITS,
                    "fits: \"%s\" is truncated: HDU %d needs %" PRId64
                    " bytes of data ending at byte %" PRId64 ", the file ends after %" PRId64,
                    path, im->hdu, bytes, end, (int64_t)im->st.st_size);
  return 0;
}

/* A plain float image, found without cfitsio: 1 if hdu.c took the file,
 * 0 if cfitsio must read it, or an error.  A gzip file is only walked for
 * headers cfitsio cannot take (see hdu.c). */
static int image_open_plain(tsr_ctx_t *ctx, const char *path, int fd, bool gz,
                            const tsr__hdu_sel_t *sel, image_t *im, int *named) {
  tsr__plain_hdu_t ph;
  int rc = gz ? tsr__gzip_hdu_axes(ctx, fd, sel, &ph)
              : tsr__plain_hdu(ctx, fd, (int64_t)im->st.st_size, sel, &ph);
  *named = ph.named;
  if (rc == TSR_ENOTSUP)
    return tsr__err(ctx, rc, "fits: \"%s\" HDU %d has NAXIS = %d; at most %d axes are supported",
                    path, ph.hdu, ph.naxis, TSR_MAX_DIMS);
  if (rc <= 0)
    return rc;
  im->hdu = ph.hdu;
  im->naxis = ph.naxis;
  memcpy(im->shape, ph.shape, sizeof im->shape);
  im->bitpix = im->equiv = ph.bitpix;
  im->raw = ph.cards;
  im->nraw = ph.ncards;
  im->raw_offset = ph.data_off;
  if ((rc = check_size(ctx, path, im, ph.data_off)) != 0)
    return rc;
  return (rc = image_cards(ctx, im)) != 0 ? rc : 1;
}

/* Move `f` from HDU h - 1, where it is, to HDU h.  cfitsio parses a
 * tile-compressed image's keywords as soon as it reads the header, and
 * divides by some (a ZTILEn of 0 was a SIGFPE), so tiles.c checks the
 * header at the end of HDU h - 1 first.  @return 0, cfitsio's status
 * (also in *status), or our negative error with the message on ctx. */
static int next_hdu(tsr_ctx_t *ctx, const tsr__cfitsio_t *cf, fitsfile *f, const char *path,
                    int h, int *type, int *status) {
  LONGLONG head, data, end;
  int st = 0, rc;
  if (h > 1 && cf->get_hduaddrll(f, &head, &data, &end, &st) == 0 &&
      (rc = tsr__tiles_precheck(ctx, f, path, h, (int64_t)end)) != 0)
    return rc;
  cf->clear_errmsg();
  return cf->movabs_hdu(f, h, type, status);
}

/* The HDU named by sel, found with cfitsio (the walk of hdu.c stopped
 * before it): its number in *hdu, or an error listing the names there are. */
static int find_named(tsr_ctx_t *ctx, const tsr__cfitsio_t *cf, fitsfile *f, const char *path,
                      const tsr__hdu_sel_t *sel, int *hdu) {
  char seen[400] = "";
  size_t used = 0;
  int rc, status = 0, type = 0;
  for (int h = 1;; h++) {
    char *cards = NULL, name[72] = "";
    int n = 0;
    if ((rc = next_hdu(ctx, cf, f, path, h, &type, &status)) != 0) {
      if (rc < 0)
        return rc;
      if (status != END_OF_FILE)
        return tsr__cfitsio_fail(ctx, status, "cannot read HDU %d of \"%s\"", h, path);
      cf->clear_errmsg();
      break;
    }
    if (cf->hdr2str(f, 0, NULL, 0, &cards, &n, &status))
      return tsr__cfitsio_fail(ctx, status, "cannot read the header of \"%s\" HDU %d", path, h);
    if (tsr__io_hdu_named(cards, n, sel)) {
      cf->free_memory(cards, &status);
      *hdu = h;
      return 0;
    }
    {
      int st = 0;
      cf->read_key(f, TSTRING, "EXTNAME", name, NULL, &st);
      cf->clear_errmsg();
    }
    if (name[0] != '\0' && used + 1 < sizeof seen)
      used += (size_t)snprintf(seen + used, sizeof seen - used, "%s%d '%s'", used ? ", " : "", h,
                               name);
    cf->free_memory(cards, &status);
  }
  if (sel->extver != 0)
    return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" has no HDU with EXTNAME = '%s' and EXTVER = %d%s%s",
                    path, sel->extname, sel->extver, used ? "; its named HDUs: " : "", seen);
  return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" has no HDU with EXTNAME = '%s'%s%s", path,
                  sel->extname, used ? "; its named HDUs: " : " (no HDU has an EXTNAME)", seen);
}

/* Open `path` at the image HDU `sel` names (see tsr__hdu_sel_t) and read
 * what a source needs; see tsr_source_fits for the rules.  On error the
 * message is on ctx; image_close() releases *im either way. */
static int image_open(tsr_ctx_t *ctx, const char *path, const tsr__hdu_sel_t *sel, image_t *im) {
  const tsr__cfitsio_t *cf;
  unsigned char magic[9] = {0};
  ssize_t got;
  bool gz, compressed = false;
  int fd, rc, status = 0, type = 0, hdu = sel->hdu, named = 0;
  LONGLONG naxes[TSR_MAX_DIMS];

  memset(im, 0, sizeof *im);
  im->raw_offset = -1;
  if (path == NULL || path[0] == '\0')
    return tsr__err(ctx, TSR_EINVAL, "fits: the path is NULL or empty");
  if (sel->extname != NULL && (sel->extname[0] == '\0' || sel->extver < 0))
    return tsr__err(ctx, TSR_EINVAL,
                    "fits: HDU name '%s' version %d for \"%s\": expected a non-empty EXTNAME "
                    "and an EXTVER >= 0 (0 = any)",
                    sel->extname, sel->extver, path);
  if (sel->extname == NULL && hdu < 0)
    return tsr__err(ctx, TSR_EINVAL,
                    "fits: HDU %d of \"%s\" is out of range; HDUs count from 1 (0 = the first "
                    "image with data)",
                    hdu, path);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return open_fail(ctx, path, errno);
  if (fstat(fd, &im->st) != 0 || S_ISDIR(im->st.st_mode)) {
    int e = S_ISDIR(im->st.st_mode) ? EISDIR : errno;
    close(fd);
    return tsr__err(ctx, TSR_EIO, "fits: cannot open \"%s\": %s", path, strerror(e));
  }
  got = read(fd, magic, sizeof magic);
  if (im->st.st_size == 0) {
    close(fd);
    return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" is empty (0 bytes), not a FITS file", path);
  }
  /* cfitsio would say "could not interpret the first keyword"; a FITS file
   * begins with SIMPLE in column 1.  gzip files are left to cfitsio, which
   * inflates them in memory. */
  gz = got >= 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  if (gz) {
    /* cfitsio allocates what the gzip trailer claims (the size modulo
     * 2^32) before inflating: a damaged trailer made it ask for 4 GiB for a
     * 40-byte file (found by fuzzing).  Deflate expands at most 1032 to 1,
     * so a larger claim cannot be true. */
    unsigned char t[4];
    uint32_t isize;
    if (im->st.st_size < 18 || pread(fd, t, 4, im->st.st_size - 4) != 4) {
      close(fd);
      return tsr__err(ctx, TSR_EFITS,
                      "fits: \"%s\" is a truncated gzip file (%lld bytes; expected at least 18)",
                      path, (long long)im->st.st_size);
    }
    isize = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    if ((double)isize > 1032.0 * (double)im->st.st_size + 1024.0) {
      close(fd);
      return tsr__err(ctx, TSR_EFITS,
                      "fits: \"%s\" is a damaged gzip file: its trailer claims %" PRIu32
                      " bytes inflated from %lld (deflate expands at most 1032 to 1)",
                      path, isize, (long long)im->st.st_size);
    }
  }
  if (!gz && (got < 9 || memcmp(magic, "SIMPLE  =", 9) != 0)) {
    close(fd);
    return tsr__err(ctx, TSR_EFITS,
                    "fits: \"%s\" is not a FITS file (it does not begin with \"SIMPLE  =\")", path);
  }
  rc = image_open_plain(ctx, path, fd, gz, sel, im, &named);
  close(fd);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  if ((cf = tsr__cfitsio(ctx)) == NULL)
    return TSR_ENOTSUP;
  errno = 0;
  if (cf->open_diskfile(&im->f, path, READONLY, &status))
    return cfitsio_open_fail(ctx, status, errno, path, 0);

  /* A name becomes a number: found by the walk, or by cfitsio. */
  if (sel->extname != NULL) {
    hdu = named;
    if (hdu == 0 && (rc = find_named(ctx, cf, im->f, path, sel, &hdu)) != 0)
      return rc;
  }
  if (hdu == 0) {
    for (int h = 1;; h++) {
      if ((rc = next_hdu(ctx, cf, im->f, path, h, &type, &status)) != 0) {
        if (rc < 0)
          return rc;
        if (status == END_OF_FILE && h > 1) {
          cf->clear_errmsg();
          return tsr__err(ctx, TSR_EFITS,
                          "fits: \"%s\" has no image HDU with data (NAXIS > 0) among its %d HDUs",
                          path, h - 1);
        }
        return tsr__cfitsio_fail(ctx, status, "cannot read HDU %d of \"%s\"", h, path);
      }
      if (type != IMAGE_HDU)
        continue;
      if (cf->get_img_dim(im->f, &im->naxis, &status))
        return tsr__cfitsio_fail(ctx, status, "cannot read HDU %d of \"%s\"", h, path);
      if (im->naxis > 0) {
        im->hdu = h;
        break;
      }
    }
  } else {
    for (int h = 1; h <= hdu && rc == 0; h++)
      rc = next_hdu(ctx, cf, im->f, path, h, &type, &status);
    if (rc != 0) {
      int nhdu = 0, st2 = 0;
      if (rc < 0)
        return rc;
      if (status != END_OF_FILE)
        return tsr__cfitsio_fail(ctx, status, "cannot read HDU %d of \"%s\"", hdu, path);
      cf->clear_errmsg();
      cf->get_num_hdus(im->f, &nhdu, &st2);
      cf->clear_errmsg();
      return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" has no HDU %d (it has %d)", path, hdu, nhdu);
    }
    if (type != IMAGE_HDU)
      return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" HDU %d is %s, not an image", path, hdu,
                      type == BINARY_TBL ? "a binary table" : "an ASCII table");
    if (cf->get_img_dim(im->f, &im->naxis, &status))
      return tsr__cfitsio_fail(ctx, status, "cannot read HDU %d of \"%s\"", hdu, path);
    if (im->naxis == 0)
      return tsr__err(ctx, TSR_EFITS, "fits: \"%s\" HDU %d has no image data (NAXIS = 0)", path,
                      hdu);
    im->hdu = hdu;
  }
  if (im->naxis > TSR_MAX_DIMS)
    return tsr__err(ctx, TSR_ENOTSUP, "fits: \"%s\" HDU %d has NAXIS = %d; at most %d axes are supported",
                    path, im->hdu, im->naxis, TSR_MAX_DIMS);
  if (cf->get_img_sizell(im->f, im->naxis, naxes, &status) ||
      cf->get_img_type(im->f, &im->bitpix, &status) ||
      cf->get_img_equivtype(im->f, &im->equiv, &status))
    return tsr__cfitsio_fail(ctx, status, "cannot read the image size of \"%s\" HDU %d", path, im->hdu);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    im->shape[a] = a < im->naxis ? (int64_t)naxes[a] : 1;
  for (int a = 0; a < im->naxis; a++)
    if (im->shape[a] < 1 || im->shape[a] > (INT64_C(1) << 40))
      return tsr__err(ctx, TSR_EINVAL,
                      "fits: \"%s\" HDU %d: NAXIS%d = %" PRId64 ": %s", path, im->hdu, a + 1,
                      im->shape[a], im->shape[a] < 1 ? "zero-size axis" : "axis longer than 2^40");

  /* Compressed images keep their data in a table heap, checked by
   * tiles.c, and gzip files are inflated, so only plain images are checked
   * against the file size here. */
  compressed = cf->is_compressed_image(im->f, &status) != 0;
  if (compressed) {
    tsr__tiles_t *tiles;
    rc = tsr__tiles_open(ctx, im->f, path, im->hdu, gz ? -1 : (int64_t)im->st.st_size, &tiles);
    tsr__tiles_free(ctx, tiles);
    if (rc != 0)
      return rc;
  } else if (!gz) {
    LONGLONG head, data, end;
    if (!cf->get_hduaddrll(im->f, &head, &data, &end, &status)) {
      if ((rc = check_size(ctx, path, im, (int64_t)data)) != 0)
        return rc;
      /* IEEE floats stored as they will be used (no scaling, no BLANK) can
       * be copied straight from the page cache. */
      if ((im->bitpix == FLOAT_IMG || im->bitpix == DOUBLE_IMG) && im->equiv == im->bitpix) {
        double bscale = 1.0, bzero = 0.0;
        int st2 = 0;
        cf->read_key(im->f, TDOUBLE, "BSCALE", &bscale, NULL, &st2);
        st2 = 0;
        cf->read_key(im->f, TDOUBLE, "BZERO", &bzero, NULL, &st2);
        cf->clear_errmsg();
        if (bscale == 1.0 && bzero == 0.0)
          im->raw_offset = (int64_t)data;
      }
    }
    if (status)
      return tsr__cfitsio_fail(ctx, status, "cannot read the layout of \"%s\" HDU %d", path, im->hdu);
  }
  im->raw_cfitsio = true;
  if (cf->convert_hdr2str(im->f, 0, NULL, 0, &im->raw, &im->nraw, &status) &&
      compressed) {
    /* cfitsio translates a compressed image's table header card by card,
     * in place, and then reads its translation back as a FITS header,
     * which fails when ZTENSION (or ZBITPIX, ...) does not stand where the
     * mandatory keyword it becomes must (astropy's comp.fits has ZTENSION
     * last; the convention fixes no order).  The same translation,
     * without reading it back, from the table's own cards: */
    char *table = NULL;
    int ntable = 0;
    status = 0;
    cf->clear_errmsg();
    /* The failed conversion may leave its string allocated. */
    if (im->raw != NULL)
      cf->free_memory(im->raw, &status);
    im->raw = NULL, im->nraw = 0;
    status = 0;
    if (cf->hdr2str(im->f, 0, NULL, 0, &table, &ntable, &status) == 0) {
      im->raw_cfitsio = false;
      rc = tsr__tiles_image_cards(ctx, table, ntable, &im->raw, &im->nraw);
      cf->free_memory(table, &status);
      if (rc != 0)
        return rc;
    }
  }
  if (status)
    return tsr__cfitsio_fail(ctx, status, "cannot read the header of \"%s\" HDU %d", path, im->hdu);
  return image_cards(ctx, im);
}

/* ------------------------------------------------------------------ */
/* The source op                                                      */

typedef struct {
  char *path;            /* as given: messages */
  char *real;            /* realpath: opening (immune to chdir) and the key */
  int hdu;               /* 1-based, resolved */
  int datatype;          /* TFLOAT or TDOUBLE, the node's dtype */
  tsr__identity_t id;         /* of the file when the node was built */
  char *header;          /* every card as read, for the key */
  size_t header_len;
  int64_t raw_offset;    /* plain big-endian IEEE data at this byte offset, or -1 */
  int64_t shape[TSR_MAX_DIMS];
} fits_params_t;

/* Per-run state in this process: the file open at the HDU in cfitsio, or
 * mapped read-only for plain IEEE data (reading a window is then a byte
 * swap from the page cache, several times faster than cfitsio's buffered
 * reads; only the pages of the window's rows are touched).  The file is
 * held open only while it is in the pool of open inputs (see "The pool of
 * open inputs" below): f, fd and map are valid only between pool_acquire
 * and pool_release. */
typedef struct fits_state_s fits_state_t;
struct fits_state_s {
  const fits_params_t *fp;
  tsr_ctx_t *ctx;        /* allocator of tiles (closed by whichever run trims the pool) */
  fitsfile *f;
  tsr__tiles_t *tiles;   /* when f is at a tile-compressed image */
  int fd;                /* >= 0: plain IEEE data, read by mapping windows */
  const unsigned char *map; /* the whole file, when small enough to map once */
  size_t map_len;
  bool open;             /* in the pool's list, holding f or fd (and map) */
  bool resident;         /* map may hold resident pages: counted in pool.resident */
  bool read;             /* data were read or viewed in this run: a change found
                          * on reopening may have mixed two versions */
  int busy;              /* reads and views in progress; never closed while > 0 */
  fits_state_t *prev, *next; /* the pool's list, most recently used first */
};

/* Files up to this size are mapped once per run, so each page faults in
 * once however many windows overlap it; larger ones are read with pread,
 * row by row (see pread_task), which keeps resident memory bounded by the
 * windows in flight.  Tests reach the pread path with small files through
 * tsr__test_hooks.map_nothing. */
#define MAP_WHOLE_BYTES ((size_t)256 << 20)

static size_t map_whole_bytes(void) {
  return tsr__test_hooks.map_nothing ? 0 : MAP_WHOLE_BYTES;
}

static void fits_free_params(tsr_ctx_t *ctx, void *params) {
  fits_params_t *fp = params;
  tsr__free(ctx, fp->path);
  tsr__free(ctx, fp->real);
  tsr__free(ctx, fp->header);
  tsr__free(ctx, fp);
}

static void fits_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const fits_params_t *fp = n->params;
  tsr__buf_put_str(b, fp->real);
  tsr__identity_encode(&fp->id, b);
  tsr__buf_put_i64(b, fp->hdu);
  tsr__buf_put_i64(b, fp->datatype);
  tsr__buf_put_i64(b, (int64_t)fp->header_len);
  tsr__buf_put(b, fp->header, fp->header_len);
}

/* The file (open as fd, or at its path when fd < 0) is still the one the
 * node's key stands for: reading another under that key would poison
 * caches.  `read` says the run has read from it already, so what it read
 * may mix two versions of the file: the task fails, and as its blocks are
 * stored only when it succeeds, nothing computed from them is kept. */
static int check_identity(tsr_ctx_t *ctx, const fits_params_t *fp, int fd, bool read) {
  struct stat st;
  tsr__identity_t id;
  if ((fd >= 0 ? fstat(fd, &st) : stat(fp->real, &st)) != 0)
    return tsr__err(ctx, TSR_EIO, "fits: cannot open \"%s\": %s", fp->path, strerror(errno));
  id = tsr__identity_of(&st);
  if (tsr__identity_same(&id, &fp->id))
    return 0;
  if (read)
    return tsr__err(ctx, TSR_EIO,
                    "fits: input \"%s\" changed while it was read (its size, modification or "
                    "change time or inode are not those it had when the graph was built); no "
                    "result computed from it was kept",
                    fp->path);
  return tsr__err(ctx, TSR_EIO,
                  "fits: \"%s\" changed since the graph was built (its size, modification or "
                  "change time or inode differ); build the graph again",
                  fp->path);
}

/* ------------------------------------------------------------------ */
/* The pool of open inputs                                            */

/* A mosaic of N files used to hold N descriptors (and N mappings or
 * cfitsio handles) until its run ended: 1000 inputs took 1003 descriptors,
 * and under ulimit -n 900 the run failed.  So each process keeps at most
 * `cap` inputs open, min(POOL_MAX_OPEN, RLIMIT_NOFILE's soft limit / 4)
 * and at least 1, which leaves most descriptors to the cache, the outputs,
 * cfitsio and the caller; to open another it closes the least recently
 * used.  A closed input is opened again when a task next reads it, and
 * checked to be the file the node was built from (check_identity), so a
 * reopened input never mixes two versions of a file.  If the process runs
 * out of descriptors all the same, every idle input is closed and the open
 * tried once more before the limit is reported as such.
 *
 * Invariant: an input in use -- read by fits_compute, or viewed in place by
 * a consumer between fits_view and fits_recheck -- is never closed, so a
 * run is correct whatever the cap, which only the inputs in use at once can
 * exceed.  They are few: a read holds its input only while it copies the
 * window out, and only reproject_interp takes views, of its one input, for
 * one task; a mosaic's task reads the windows of its inputs one after the
 * other (each through that input's reprojection), so it holds at most one
 * view and one read at a time, however many inputs it covers.
 *
 * Each process has its own pool: a forked worker inherits the parent's
 * list and closes its copies of those inputs as it needs room.  The pool is
 * global to the process because a graph may be computed from several
 * threads at once, each call its own run; the lock guards the list and
 * every state's open, busy, f, fd and map (which a state's own run reads
 * without it while busy > 0). */
#define POOL_MAX_OPEN 256

static struct {
  pthread_mutex_t lock;
  fits_state_t *head, *tail; /* open states, most recently used first */
  int n_open;
  int cap;                   /* taken again whenever the pool is empty (ulimit may change) */
  size_t resident;           /* map_len of the states with resident set */
} pool = {PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 0, 0};

/* The pages of mapped inputs count in the process's resident set for as
 * long as they stay mapped, and a mosaic of many inputs touches every one
 * of them: 64 inputs and their weight maps of 1024^2 held 512 MB.  So the
 * mappings of the inputs used longest ago are dropped (MADV_DONTNEED: the
 * pages stay in the page cache, a later use faults them in again, minor
 * faults) once the mapped inputs in use lately pass this many bytes. */
#define MAP_RESIDENT_BYTES ((size_t)128 << 20)

/* A process forked while another thread holds the lock (the pool's
 * workers, forked by one thread while others compute) would find it held
 * for ever: fork() takes it first and both sides release it. */
static void pool_lock(void) { pthread_mutex_lock(&pool.lock); }
static void pool_unlock(void) { pthread_mutex_unlock(&pool.lock); }
static pthread_once_t pool_atfork_once = PTHREAD_ONCE_INIT;
static void pool_atfork(void) { pthread_atfork(pool_lock, pool_unlock, pool_unlock); }

static int pool_cap(void) {
  struct rlimit rl;
  int cap = POOL_MAX_OPEN;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur / 4 < (rlim_t)cap)
    cap = (int)(rl.rlim_cur / 4);
  return cap < 1 ? 1 : cap;
}

static void pool_unlink(fits_state_t *fs) {
  *(fs->prev ? &fs->prev->next : &pool.head) = fs->next;
  *(fs->next ? &fs->next->prev : &pool.tail) = fs->prev;
  fs->prev = fs->next = NULL;
}

static void pool_push(fits_state_t *fs) {
  fs->prev = NULL;
  fs->next = pool.head;
  *(pool.head ? &pool.head->prev : &pool.tail) = fs;
  pool.head = fs;
}

/* Close an open state's file; under the lock. */
static void state_close(fits_state_t *fs) {
  int status = 0;
  pool_unlink(fs);
  pool.n_open--;
  fs->open = false;
  tsr__tiles_free(fs->ctx, fs->tiles); /* it borrows fs->f */
  fs->tiles = NULL;
  if (fs->f) {
    /* An open fitsfile means cfitsio is loaded. */
    const tsr__cfitsio_t *cf = tsr__cfitsio_loaded();
    cf->close_file(fs->f, &status);
    cf->clear_errmsg();
    fs->f = NULL;
  }
  if (fs->fd >= 0)
    close(fs->fd);
  if (fs->map)
    munmap((void *)fs->map, fs->map_len);
  if (fs->resident)
    pool.resident -= fs->map_len;
  fs->resident = false;
  fs->fd = -1;
  fs->map = NULL;
  fs->map_len = 0;
}

/* Close the least recently used idle inputs until at most `keep` are open
 * (fewer cannot be: those in use stay); under the lock. */
static void pool_trim(int keep) {
  fits_state_t *prev;
  for (fits_state_t *fs = pool.tail; fs != NULL && pool.n_open > keep; fs = prev) {
    prev = fs->prev;
    if (fs->busy == 0)
      state_close(fs);
  }
}

/* Open the state's file as the node was built from it; under the lock.
 * 0, or an error on ctx with *shortage = the errno when descriptors ran
 * out (EMFILE, ENFILE), else 0. */
static int state_open(tsr_ctx_t *ctx, fits_state_t *fs, int *shortage) {
  const fits_params_t *fp = fs->fp;
  const tsr__cfitsio_t *cf;
  int status = 0, type, rc, e;

  *shortage = 0;
  if ((rc = check_identity(ctx, fp, -1, fs->read)) != 0)
    return rc;
  if (fp->raw_offset >= 0) {
    if ((fs->fd = open(fp->real, O_RDONLY | O_CLOEXEC)) < 0) {
      e = errno;
      *shortage = fd_shortage(e) ? e : 0;
      return open_fail(ctx, fp->path, e);
    }
    /* The path may name another file by now. */
    if ((rc = check_identity(ctx, fp, fs->fd, fs->read)) != 0) {
      close(fs->fd);
      fs->fd = -1;
      return rc;
    }
    if ((size_t)fp->id.size <= map_whole_bytes()) {
      void *m = mmap(NULL, (size_t)fp->id.size, PROT_READ, MAP_SHARED, fs->fd, 0);
      if (m != MAP_FAILED) {
        fs->map = m;
        fs->map_len = (size_t)fp->id.size;
      }
    }
    return 0;
  }
  errno = 0;
  if ((cf = tsr__cfitsio(ctx)) == NULL) {
    *shortage = fd_shortage(errno) ? errno : 0;
    return *shortage ? TSR_EIO : TSR_ENOTSUP;
  }
  if (cf->open_diskfile(&fs->f, fp->real, READONLY, &status) ||
      cf->movabs_hdu(fs->f, fp->hdu, &type, &status)) {
    e = errno;
    *shortage = fs->f == NULL && fd_shortage(e) ? e : 0;
    rc = cfitsio_open_fail(ctx, status, fs->f == NULL ? e : 0, fp->path, fp->hdu);
    status = 0;
    if (fs->f)
      cf->close_file(fs->f, &status);
    cf->clear_errmsg();
    fs->f = NULL;
    return rc;
  }
  /* A compressed image's tiles are checked before cfitsio decompresses
   * them (tiles.c); the layout is read again with every open. */
  if (cf->is_compressed_image(fs->f, &status) &&
      (rc = tsr__tiles_open(ctx, fs->f, fp->path, fp->hdu, -1, &fs->tiles)) != 0) {
    status = 0;
    cf->close_file(fs->f, &status);
    cf->clear_errmsg();
    fs->f = NULL;
    return rc;
  }
  return 0;
}

/* Have the state's file open, and keep it so until pool_release: 0, or an
 * error on ctx.  `reading` says data will be read (or viewed). */
static int pool_acquire(tsr_ctx_t *ctx, fits_state_t *fs, bool reading) {
  int rc = 0, shortage;
  pthread_once(&pool_atfork_once, pool_atfork);
  pthread_mutex_lock(&pool.lock);
  if (fs->open) {
    pool_unlink(fs);
  } else {
    if (pool.n_open == 0)
      pool.cap = pool_cap();
    pool_trim(pool.cap - 1);
    rc = state_open(ctx, fs, &shortage);
    /* Short of descriptors below our cap (the caller's files, the cache's
     * and outputs' hold the rest): give back every idle one, once. */
    if (rc != 0 && shortage != 0) {
      int before = pool.n_open;
      pool_trim(0);
      if (pool.n_open < before)
        rc = state_open(ctx, fs, &shortage);
    }
    if (rc == 0) {
      fs->open = true;
      pool.n_open++;
    }
  }
  if (rc == 0) {
    pool_push(fs);
    fs->busy++;
    fs->read = fs->read || reading;
    if (fs->map && reading && !fs->resident) {
      fs->resident = true;
      pool.resident += fs->map_len;
    }
    /* Past the budget, drop the pages of idle inputs, least recent first. */
    for (fits_state_t *o = pool.tail; o != NULL && pool.resident > MAP_RESIDENT_BYTES; o = o->prev)
      if (o->busy == 0 && o->resident) {
        madvise((void *)o->map, o->map_len, MADV_DONTNEED);
        o->resident = false;
        pool.resident -= o->map_len;
      }
  }
  pthread_mutex_unlock(&pool.lock);
  return rc;
}

static void pool_release(fits_state_t *fs) {
  pthread_mutex_lock(&pool.lock);
  fs->busy--;
  pthread_mutex_unlock(&pool.lock);
}

/* Per-run state of a source: opened at once, so that a missing or changed
 * file fails the run before any task, then left to the pool. */
static int fits_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  fits_state_t *fs;
  int rc;

  *state = NULL;
  fs = tsr__calloc(ctx, 1, sizeof *fs);
  if (fs == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "fits: out of memory opening \"%s\"",
                    ((const fits_params_t *)n->params)->path);
  fs->fp = n->params;
  fs->ctx = ctx;
  fs->fd = -1;
  if ((rc = pool_acquire(ctx, fs, false)) != 0) {
    tsr__free(ctx, fs);
    return rc;
  }
  pool_release(fs);
  *state = fs;
  return 0;
}

static void fits_stop(tsr_node_t *n, void *state) {
  fits_state_t *fs = state;
  if (fs == NULL)
    return;
  pthread_mutex_lock(&pool.lock);
  if (fs->open)
    state_close(fs);
  pthread_mutex_unlock(&pool.lock);
  tsr__free(n->graph->ctx, fs);
}

/* Integer forms of the byte-swap loops, so that compilers vectorise them
 * (reading: swap, then replace every value whose exponent is all ones, inf
 * or NaN, with the canonical quiet NaN).  TSR__MULTIVERSION builds them for
 * baseline x86-64 and for AVX2 (byte shuffles). */

TSR__MULTIVERSION
static void swap_values32(uint32_t *restrict o, const unsigned char *restrict p, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, p + 4 * i, 4);
    u = __builtin_bswap32(u);
    o[i] = (u & 0x7f800000u) == 0x7f800000u ? 0x7fc00000u : u;
  }
}

TSR__MULTIVERSION
static void swap_values64(uint64_t *restrict o, const unsigned char *restrict p, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t u;
    memcpy(&u, p + 8 * i, 8);
    u = __builtin_bswap64(u);
    o[i] = (u & 0x7ff0000000000000u) == 0x7ff0000000000000u ? 0x7ff8000000000000u : u;
  }
}

/* The same in place, for values read straight into their destination. */
TSR__MULTIVERSION
static void swap_inplace32(uint32_t *o, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = __builtin_bswap32(o[i]);
    o[i] = (u & 0x7f800000u) == 0x7f800000u ? 0x7fc00000u : u;
  }
}

TSR__MULTIVERSION
static void swap_inplace64(uint64_t *o, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    uint64_t u = __builtin_bswap64(o[i]);
    o[i] = (u & 0x7ff0000000000000u) == 0x7ff0000000000000u ? 0x7ff8000000000000u : u;
  }
}

/* Byte-swap n big-endian IEEE values to native, making non-finite ones NaN. */
static void swap_values(void *dst, const unsigned char *p, int64_t n, bool f32) {
  if (f32)
    swap_values32(dst, p, n);
  else
    swap_values64(dst, p, n);
}

/* Called for each plane (z, w) of a region with `base`, the mapped data of
 * the region's first row in that plane (whole rows follow). */
typedef void (*plane_fn)(void *arg, const unsigned char *base, int64_t z, int64_t w);

/* Copy a plane's rows of task->out from the mapped data. */
static void copy_task_rows(void *arg, const unsigned char *base, int64_t z, int64_t w) {
  tsr__task_t *t = arg;
  const fits_params_t *fp = t->node->params;
  const tsr_region_t *r = &t->out;
  bool f32 = fp->datatype == TFLOAT;
  size_t es = f32 ? 4 : 8;
  for (int64_t y = r->start[1]; y < r->stop[1]; y++) {
    const unsigned char *p = base + (size_t)((y - r->start[1]) * fp->shape[0] + r->start[0]) * es;
    size_t dst = tsr__task_offset(t, 0, y - r->start[1], z - r->start[2], w - r->start[3]);
    swap_values((char *)t->planes[0] + dst * es, p, r->stop[0] - r->start[0], f32);
  }
}

/* The rows of a region, from a file mapped whole for the run.  A file
 * truncated by someone else meanwhile raises SIGBUS on access:
 * tsr__sigbus_guard turns that into an error naming the file. */
typedef struct {
  const fits_params_t *fp;
  const fits_state_t *fs;
  const tsr_region_t *r;
  plane_fn fn;
  void *arg;
} planes_job_t;

static int map_planes(void *job) {
  planes_job_t *j = job;
  const fits_params_t *fp = j->fp;
  const tsr_region_t *r = j->r;
  size_t es = fp->datatype == TFLOAT ? 4 : 8;
  for (int64_t w = r->start[3]; w < r->stop[3]; w++)
    for (int64_t z = r->start[2]; z < r->stop[2]; z++) {
      size_t first = (size_t)fp->raw_offset +
                     (size_t)(((w * fp->shape[2] + z) * fp->shape[1] + r->start[1]) * fp->shape[0]) * es;
      j->fn(j->arg, j->fs->map + first, z, w);
    }
  return 0;
}

static int truncated_while_read(tsr_ctx_t *ctx, const fits_params_t *fp, const tsr_region_t *r,
                                int ndim) {
  char where[160];
  tsr__region_format(r, ndim, where, sizeof where);
  return tsr__err(ctx, TSR_EIO, "fits: \"%s\" was truncated while being read (reading %s of HDU %d)",
                  fp->path, where, fp->hdu);
}

static int raw_planes(tsr_ctx_t *ctx, const fits_params_t *fp, const fits_state_t *fs,
                      const tsr_region_t *r, int ndim, plane_fn fn, void *arg) {
  planes_job_t j = {fp, fs, r, fn, arg};
  bool bus;
  int rc = tsr__sigbus_guard(map_planes, &j, &bus);
  return bus ? truncated_while_read(ctx, fp, r, ndim) : rc;
}


/* A narrow window of long rows, not all in the page cache: the kernel's
 * read-ahead on each missing row would fetch far more than the row (up to
 * 128 KiB: 33 MB of a 1 GiB input for a 256^2 window).  So ask for
 * exactly the rows' pages, all at once, so that the reads queue together
 * and every pread after finds its pages.  Whether the first row is cached
 * is asked without waiting (RWF_NOWAIT); where the kernel cannot say, the
 * rows are asked for anyway.  Advice only: errors are ignored. */
static void fetch_rows(int fd, void *probe, size_t first, int64_t stride, int64_t width,
                       int64_t rows) {
  struct iovec v = {probe, (size_t)width};
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (preadv2(fd, &v, 1, (off_t)first, RWF_NOWAIT) == (ssize_t)width)
    return;
  for (int64_t y = 0; y < rows; y++) {
    size_t at = first + (size_t)(y * stride), at0 = at / page * page;
    (void)posix_fadvise(fd, (off_t)at0, (off_t)(at + (size_t)width - at0), POSIX_FADV_WILLNEED);
  }
}

/* Read task->out from a file too big to map whole, with pread straight into
 * the task's plane, swapped in place there.  Mapping each window instead
 * (as this did) cost ten times more for a 770 x 770 window of a 16384-wide
 * float32 image in the page cache (measured: 16-19 ms against 1.5-1.8 ms):
 * every row faulted its pages in and every unmap flushed the TLBs of all
 * the process's threads, under its mmap lock, for which threads reading
 * windows at once queued.  A file truncated meanwhile gives a short read.
 * Whole rows of a plane that lie together in the destination are read in
 * one call. */
static int pread_task(tsr__task_t *t, const fits_state_t *fs) {
  const fits_params_t *fp = t->node->params;
  const tsr_region_t *r = &t->out;
  bool f32 = fp->datatype == TFLOAT;
  size_t es = f32 ? 4 : 8;
  int64_t width = r->stop[0] - r->start[0], rows = r->stop[1] - r->start[1];
  bool whole = width == fp->shape[0] && (rows == 1 || t->stride[1] == width);
  bool narrow = t->sparse && (size_t)width * 4 < (size_t)fp->shape[0];
  for (int64_t w = r->start[3]; w < r->stop[3]; w++)
    for (int64_t z = r->start[2]; z < r->stop[2]; z++) {
      size_t first = (size_t)fp->raw_offset +
                     (size_t)((((w * fp->shape[2] + z) * fp->shape[1] + r->start[1]) * fp->shape[0] +
                               r->start[0]) * (int64_t)es);
      int64_t per = whole ? rows : 1;
      for (int64_t y = 0; y < rows; y += per) {
        char *dst = (char *)t->planes[0] +
                    tsr__task_offset(t, 0, y, z - r->start[2], w - r->start[3]) * es;
        size_t len = (size_t)(width * per) * es;
        int rc;
        if (narrow && y == 0)
          fetch_rows(fs->fd, dst, first, fp->shape[0] * (int64_t)es, width * (int64_t)es, rows);
        rc = tsr__pread_full(fs->fd, dst, len, (off_t)(first + (size_t)(y * fp->shape[0]) * es));
        if (rc > 0)
          return truncated_while_read(t->ctx, fp, r, t->node->ndim);
        if (rc < 0)
          return tsr__err(t->ctx, TSR_EIO, "fits: cannot read \"%s\": %s", fp->path, strerror(errno));
        if (f32)
          swap_inplace32((uint32_t *)(void *)dst, width * per);
        else
          swap_inplace64((uint64_t *)(void *)dst, width * per);
      }
    }
  return 0;
}

/* The window in place in the run's mapping of the whole file, for ops that
 * read big-endian values (see tsr__op_t.view).  The file stays open for the
 * consumer until fits_recheck gives the view back. */
static bool fits_view(tsr_node_t *n, void *state, const tsr_region_t *win, const void **data,
                      int64_t stride[TSR_MAX_DIMS], bool *big_endian) {
  const fits_params_t *fp = n->params;
  fits_state_t *fs = state;
  size_t es = fp->datatype == TFLOAT ? 4 : 8, off = 0;
  tsr_region_t full;
  /* Failing to open, we leave the message for the copy, which reports it. */
  if (fs == NULL || fp->raw_offset < 0 || pool_acquire(n->graph->ctx, fs, true) != 0)
    return false;
  if (fs->map == NULL) {
    pool_release(fs);
    return false;
  }
  tsr__region_full(&full, TSR_MAX_DIMS, fp->shape);
  tsr__contiguous_strides(&full, stride);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    off += (size_t)(win->start[a] * stride[a]);
  *data = fs->map + fp->raw_offset + off * es;
  *big_endian = true;
  return true;
}

/* Read task->out into plane 0.  The leading axes over which the destination
 * is laid out contiguously are read in one fits_read_subset call; the
 * others are looped over.  The state's file is open (fits_compute). */
static int read_task(tsr__task_t *t) {
  const tsr_node_t *n = t->node;
  const fits_params_t *fp = n->params;
  const tsr_region_t *r = &t->out;
  const fits_state_t *fs = t->state;
  fitsfile *f = fs->f;
  size_t es = tsr_dtype_size(n->dtype);
  int64_t ext[TSR_MAX_DIMS], cstride[TSR_MAX_DIMS], idx[TSR_MAX_DIMS] = {0, 0, 0, 0};
  float fnan = NAN;
  double dnan = NAN;
  int k, rc, status = 0;

  if (t->planes[0] == NULL)
    return 0;
  if (fs->fd >= 0) {
    rc = fs->map ? raw_planes(t->ctx, fp, fs, &t->out, n->ndim, copy_task_rows, t)
                 : pread_task(t, fs);
    return rc != 0 ? rc : check_identity(t->ctx, fp, fs->fd, true);
  }
  /* cfitsio decompresses every tile the box meets: check them first. */
  if (fs->tiles && (rc = tsr__tiles_check(t->ctx, fs->tiles, r->start, r->stop)) != 0)
    return rc;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    ext[a] = r->stop[a] - r->start[a];
  cstride[0] = 1;
  for (int a = 1; a < TSR_MAX_DIMS; a++)
    cstride[a] = cstride[a - 1] * ext[a - 1];
  for (k = 1; k < TSR_MAX_DIMS; k++)
    if (ext[k] > 1 && t->stride[k] != cstride[k])
      break;
  for (;;) {
    long fpix[TSR_MAX_DIMS], lpix[TSR_MAX_DIMS], inc[TSR_MAX_DIMS] = {1, 1, 1, 1};
    int64_t off = 0, count = 1;
    int anynul = 0;
    char *dst;

    for (int a = 0; a < TSR_MAX_DIMS; a++) {
      if (a < k) {
        count *= ext[a];
        fpix[a] = (long)r->start[a] + 1;
        lpix[a] = (long)r->stop[a];
      } else {
        fpix[a] = lpix[a] = (long)(r->start[a] + idx[a]) + 1;
        off += idx[a] * t->stride[a];
      }
    }
    dst = (char *)t->planes[0] + (size_t)off * es;
    if (tsr__cfitsio_loaded()->read_subset(f, fp->datatype, fpix, lpix, inc,
                         fp->datatype == TFLOAT ? (void *)&fnan : (void *)&dnan, dst, &anynul,
                         &status)) {
      char where[160];
      tsr__region_format(r, n->ndim, where, sizeof where);
      return tsr__cfitsio_fail(t->ctx, status, "cannot read %s of \"%s\" HDU %d", where, fp->path, fp->hdu);
    }
    /* Infinities are no more usable than BLANK: make them NaN. */
    if (fp->datatype == TFLOAT) {
      float *p = (float *)dst;
      for (int64_t i = 0; i < count; i++)
        if (!isfinite(p[i]))
          p[i] = NAN;
    } else {
      double *p = (double *)dst;
      for (int64_t i = 0; i < count; i++)
        if (!isfinite(p[i]))
          p[i] = NAN;
    }
    int a = k;
    for (; a < TSR_MAX_DIMS; a++) {
      if (++idx[a] < ext[a])
        break;
      idx[a] = 0;
    }
    if (a >= TSR_MAX_DIMS)
      break;
  }
  return check_identity(t->ctx, fp, -1, true);
}

static int fits_compute(tsr__task_t *t) {
  fits_state_t *fs = t->state;
  int rc;
  if (t->planes[0] == NULL)
    return 0;
  if ((rc = pool_acquire(t->ctx, fs, true)) != 0)
    return rc;
  rc = read_task(t);
  pool_release(fs);
  return rc;
}

/* A consumer is done with a view of the file (fits_view). */
static int fits_recheck(tsr_node_t *n, void *state, bool check) {
  fits_state_t *fs = state;
  int rc = check ? check_identity(n->graph->ctx, n->params, fs->fd, true) : 0;
  pool_release(fs);
  return rc;
}

static const tsr__op_t fits_op = {
    .name = "fits",
    .version = 1,
    .flags = TSR__OP_SOURCE | TSR__OP_SUBBOX,
    .start = fits_start,
    .stop = fits_stop,
    .compute = fits_compute,
    .encode = fits_encode,
    .free_params = fits_free_params,
    .view = fits_view,
    .recheck = fits_recheck,
};

/* float64 where float32 cannot hold every value: 32- and 64-bit integers
 * (signed or not, scaled or not) and doubles. */
static bool reads_as_double(const image_t *im) {
  return im->equiv == DOUBLE_IMG || im->equiv == LONG_IMG || im->equiv == ULONG_IMG ||
         im->equiv == LONGLONG_IMG || im->equiv == ULONGLONG_IMG || im->bitpix == LONG_IMG ||
         im->bitpix == LONGLONG_IMG || im->bitpix == DOUBLE_IMG;
}

static tsr__hdu_sel_t selection(const tsr_hdu_t *which) {
  tsr__hdu_sel_t sel = {0, NULL, 0};
  if (which != NULL) {
    sel.hdu = which->hdu;
    sel.extname = which->extname;
    sel.extver = which->extver;
  }
  return sel;
}

tsr_node_t *tsr_source_fits(tsr_graph_t *g, const char *path, int hdu) {
  tsr_hdu_t which = {hdu, NULL, 0};
  return tsr_source_fits_hdu(g, path, &which);
}

tsr_node_t *tsr_source_fits_hdu(tsr_graph_t *g, const char *path, const tsr_hdu_t *which) {
  tsr__hdu_sel_t sel = selection(which);
  tsr_ctx_t *ctx;
  image_t im;
  fits_params_t *fp = NULL;
  tsr_wcs_t *wcs = NULL;
  tsr_node_t *n = NULL;
  char *real;
  tsr_dtype_t dtype;
  int rc;

  if (!tsr__graph_check(g))
    return NULL;
  ctx = g->ctx;
  rc = image_open(ctx, path, &sel, &im);
  if (rc == 0 && tsr__sky_has_ctype(im.cards, im.ncards)) {
    char what[TSR__ERRMSG_CAP / 2];
    snprintf(what, sizeof what, "fits: \"%s\" HDU %d", path, im.hdu);
    rc = tsr__sky_wcs_make(ctx, im.cards, im.ncards, what, 1, &wcs);
  }
  if (rc != 0)
    goto out;
  fp = tsr__calloc(ctx, 1, sizeof *fp);
  real = realpath(path, NULL);
  if (fp != NULL) {
    fp->path = tsr__strdup(ctx, path);
    fp->real = tsr__strdup(ctx, real ? real : path);
    fp->header_len = (size_t)im.nraw * TSR__CARD;
    fp->header = tsr__malloc(ctx, fp->header_len);
  }
  free(real);
  if (fp == NULL || fp->path == NULL || fp->real == NULL || fp->header == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "fits: out of memory opening \"%s\"", path);
    goto out;
  }
  memcpy(fp->header, im.raw, fp->header_len);
  fp->hdu = im.hdu;
  fp->datatype = reads_as_double(&im) ? TDOUBLE : TFLOAT;
  fp->raw_offset = im.raw_offset;
  memcpy(fp->shape, im.shape, sizeof fp->shape);
  fp->id = tsr__identity_of(&im.st);
  dtype = fp->datatype == TDOUBLE ? TSR_F64 : TSR_F32;

  n = tsr__node_alloc(g, &fits_op, fp);
  fp = NULL; /* the node owns it now, even on failure */
  if (n == NULL) {
    rc = TSR_ENOMEM;
    goto out;
  }
  n->ndim = im.naxis;
  n->dtype = dtype;
  /* One chunk: a source reads any box directly, chunks only matter to
   * ops that compute whole ones. */
  for (int a = 0; a < im.naxis; a++)
    n->shape[a] = n->chunk[a] = im.shape[a];
  n->wcs = wcs;
  wcs = NULL;
  snprintf(n->name, sizeof n->name, "fits#%d(\"%.64s\")", g->n_nodes + 1, tsr__base_name(path));
out:
  image_close(ctx, &im);
  tsr_wcs_free(wcs);
  if (fp)
    fits_free_params(ctx, fp);
  /* A failed node_alloc has already put its error on the graph. */
  if (rc != 0)
    return tsr__graph_fail_ctx(g, rc);
  return tsr__node_finish(n);
}

int tsr_wcs_read_fits(tsr_ctx_t *ctx, const char *path, int hdu, tsr_wcs_t **out) {
  tsr_hdu_t which = {hdu, NULL, 0};
  return tsr_wcs_read_fits_hdu(ctx, path, &which, out);
}

int tsr_wcs_read_fits_hdu(tsr_ctx_t *ctx, const char *path, const tsr_hdu_t *which,
                          tsr_wcs_t **out) {
  tsr__hdu_sel_t sel = selection(which);
  image_t im;
  int rc;

  tsr__api_check(ctx != NULL && out != NULL, "tsr_wcs_read_fits: NULL argument");
  *out = NULL;
  rc = image_open(ctx, path, &sel, &im);
  if (rc == 0) {
    char what[TSR__ERRMSG_CAP / 2];
    snprintf(what, sizeof what, "fits: \"%s\" HDU %d", path, im.hdu);
    if (!tsr__sky_has_ctype(im.cards, im.ncards))
      rc = tsr__err(ctx, TSR_EWCS, "%s: no WCS (no CTYPEn keywords)", what);
    else
      rc = tsr__sky_wcs_make(ctx, im.cards, im.ncards, what, 1, out);
  }
  image_close(ctx, &im);
  return rc;
}

/* The value text of keyword `kw` among the raw cards, or NULL. */
static const char *raw_value(const image_t *im, const char *kw, char *buf, size_t cap) {
  char k[9];
  for (int i = 0; i < im->nraw; i++) {
    const char *c = im->raw + (size_t)i * TSR__CARD;
    tsr__card_keyword(c, k);
    if (strcmp(k, kw) == 0 && c[8] == '=') {
      tsr__card_value(c, buf, cap);
      return buf;
    }
  }
  return NULL;
}

int tsr_fits_info(tsr_ctx_t *ctx, const char *path, const tsr_hdu_t *which, tsr_fits_info_t *out) {
  tsr__hdu_sel_t sel = selection(which);
  const tsr__cfitsio_t *cf;
  image_t im;
  char v[72];
  int rc;

  tsr__api_check(ctx != NULL && out != NULL, "tsr_fits_info: NULL argument");
  memset(out, 0, sizeof *out);
  if ((rc = image_open(ctx, path, &sel, &im)) != 0)
    goto out;
  out->hdu = im.hdu;
  out->naxis = im.naxis;
  memcpy(out->shape, im.shape, sizeof out->shape);
  out->bitpix = im.bitpix;
  out->bscale = 1.0;
  out->extver = 1;
  if (raw_value(&im, "BSCALE", v, sizeof v))
    out->bscale = strtod(v, NULL);
  if (raw_value(&im, "BZERO", v, sizeof v))
    out->bzero = strtod(v, NULL);
  if (raw_value(&im, "BLANK", v, sizeof v)) {
    out->has_blank = 1;
    out->blank = strtoll(v, NULL, 10);
  }
  if (raw_value(&im, "EXTNAME", v, sizeof v) && v[0] == '\'') {
    size_t n = strlen(v);
    while (n > 1 && (v[n - 1] == '\'' || v[n - 1] == ' '))
      n--;
    snprintf(out->extname, sizeof out->extname, "%.*s", (int)(n - 1), v + 1);
  }
  if (raw_value(&im, "EXTVER", v, sizeof v))
    out->extver = atoi(v);
  if (im.f != NULL && (cf = tsr__cfitsio_loaded()) != NULL) {
    int status = 0;
    if (cf->is_compressed_image(im.f, &status)) {
      status = 0;
      cf->read_key(im.f, TSTRING, "ZCMPTYPE", out->compression, NULL, &status);
      cf->clear_errmsg();
      if (out->compression[0] == '\0')
        snprintf(out->compression, sizeof out->compression, "tiled");
    }
  }
  {
    unsigned char magic[2] = {0, 0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      out->gzip = read(fd, magic, 2) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
      close(fd);
    }
  }
  out->dtype = reads_as_double(&im) ? TSR_F64 : TSR_F32;
out:
  image_close(ctx, &im);
  return rc;
}

