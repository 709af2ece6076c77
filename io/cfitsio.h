/* cfitsio.h -- private to io/: cfitsio, loaded when a file first needs it.
 *
 * libtessera does not link cfitsio: it pulls in libcurl and through it
 * GnuTLS, Kerberos, LDAP and some thirty other shared libraries, whose
 * loading cost every process about 3 ms -- as long as computing a 256^2
 * region.  Plain float images are read without it (hdu.c); the first file
 * that needs it (integers, scaling, tile compression, gzip, an unusual
 * header) loads it with dlopen, once per process, and every call goes
 * through this table.  Not installed.
 */
#ifndef TSR_IO_CFITSIO_H
#define TSR_IO_CFITSIO_H

#include <fitsio.h>

#include "internal.h"

/* fitsio2.h's, which fitsio.h leaves out: read bytes at the position
 * fits_move_byte (ffmbyt) set.  tiles.c reads a table's heap with it, so
 * that an image inside a gzip file (inflated in memory) reads the same way. */
int ffgbyt(fitsfile *fptr, LONGLONG nbytes, void *buffer, int *status);

/* The cfitsio functions tessera calls, named as in fitsio.h's long names
 * without "fits_" (fits_movabs_hdu is movabs_hdu). */
typedef struct {
  __typeof__(ffdkopn) *open_diskfile;
  __typeof__(ffclos) *close_file;
  __typeof__(ffmahd) *movabs_hdu;
  __typeof__(ffthdu) *get_num_hdus;
  __typeof__(ffgidm) *get_img_dim;
  __typeof__(ffgiszll) *get_img_sizell;
  __typeof__(ffgidt) *get_img_type;
  __typeof__(ffgiet) *get_img_equivtype;
  __typeof__(fits_is_compressed_image) *is_compressed_image;
  __typeof__(ffghadll) *get_hduaddrll;
  __typeof__(ffgky) *read_key;
  __typeof__(ffcnvthdr2str) *convert_hdr2str;
  __typeof__(ffhdr2str) *hdr2str;
  __typeof__(fffree) *free_memory;
  __typeof__(ffgsv) *read_subset;
  __typeof__(ffgerr) *get_errstatus;
  __typeof__(ffcmsg) *clear_errmsg;
  __typeof__(ffmbyt) *move_byte;
  __typeof__(ffgbyt) *get_bytes;
  __typeof__(ffvers) *get_version;
} tsr__cfitsio_t;

/* cfitsio's functions, loading the library on the first call in this
 * process (thread-safe; a failed load is tried again at the next call).
 * @return the table (static, never freed), or NULL with a message naming
 * the library and dlerror() on ctx: TSR_ENOTSUP, or TSR_EIO with errno set
 * to EMFILE or ENFILE when the process or the system was out of file
 * descriptors. */
const tsr__cfitsio_t *tsr__cfitsio(tsr_ctx_t *ctx);

/* Translate a cfitsio status into an error on ctx, "fits: <what>: cfitsio
 * 104 (could not open the named file)", and clear cfitsio's message stack
 * so that it never shows in a later, unrelated error.  Call only after a
 * cfitsio call (cfitsio is loaded).  @return TSR_EFITS, or TSR_ENOMEM for
 * cfitsio's MEMORY_ALLOCATION. */
int tsr__cfitsio_fail(tsr_ctx_t *ctx, int status, const char *fmt, ...) TSR__PRINTF(3, 4);

/* The table if cfitsio is loaded already, else NULL; never loads it (for
 * cleanup paths, and for tests that check it stayed unloaded). */
const tsr__cfitsio_t *tsr__cfitsio_loaded(void);

#endif
