/* cfitsio.c -- loading cfitsio on first use; see cfitsio.h for why.
 *
 * The soname is the one meson found at build time (TSR_CFITSIO_SONAME), so
 * the library loaded is the one the code was compiled against; the
 * unversioned name is tried after it, for a build tree moved to a machine
 * with only the development symlink.  Loading happens under pthread_once,
 * and the table is complete or not published at all.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cfitsio.h"

#ifndef TSR_CFITSIO_SONAME
#define TSR_CFITSIO_SONAME "libcfitsio.so"
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static tsr__cfitsio_t table;
static const tsr__cfitsio_t *loaded;
static char why[512];

static void load(void) {
  static const char *const names[] = {TSR_CFITSIO_SONAME, "libcfitsio.so"};
  void *lib = NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && lib == NULL; i++) {
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL && i == 0)
      snprintf(why, sizeof why, "%s", dlerror());
  }
  if (lib == NULL)
    return;
  /* dlsym returns void *; POSIX guarantees it converts to a function
   * pointer, which memcpy says without a cast ISO C forbids. */
#define BIND(field, symbol)                                                         \
  do {                                                                              \
    void *s = dlsym(lib, #symbol);                                                  \
    if (s == NULL) {                                                                \
      snprintf(why, sizeof why, "%s has no %s", TSR_CFITSIO_SONAME, #symbol);       \
      dlclose(lib);                                                                 \
      return;                                                                       \
    }                                                                               \
    memcpy(&table.field, &s, sizeof s);                                             \
  } while (0)
  BIND(open_diskfile, ffdkopn);
  BIND(close_file, ffclos);
  BIND(movabs_hdu, ffmahd);
  BIND(get_num_hdus, ffthdu);
  BIND(get_img_dim, ffgidm);
  BIND(get_img_sizell, ffgiszll);
  BIND(get_img_type, ffgidt);
  BIND(get_img_equivtype, ffgiet);
  BIND(is_compressed_image, fits_is_compressed_image);
  BIND(get_hduaddrll, ffghadll);
  BIND(read_key, ffgky);
  BIND(convert_hdr2str, ffcnvthdr2str);
  BIND(free_memory, fffree);
  BIND(read_subset, ffgsv);
  BIND(get_errstatus, ffgerr);
  BIND(clear_errmsg, ffcmsg);
  BIND(move_byte, ffmbyt);
  BIND(get_bytes, ffgbyt);
#undef BIND
  loaded = &table;
}

const tsr__cfitsio_t *tsr__cfitsio(tsr_ctx_t *ctx) {
  pthread_once(&once, load);
  if (loaded == NULL)
    tsr__err(ctx, TSR_ENOTSUP, "fits: cannot load cfitsio (%s), which this file needs: %s",
             TSR_CFITSIO_SONAME, why);
  return loaded;
}

const tsr__cfitsio_t *tsr__cfitsio_loaded(void) { return loaded; }

int tsr__cfitsio_fail(tsr_ctx_t *ctx, int status, const char *fmt, ...) {
  char head[TSR__ERRMSG_CAP / 2], text[FLEN_STATUS];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  loaded->get_errstatus(status, text);
  loaded->clear_errmsg();
  return tsr__err(ctx, status == MEMORY_ALLOCATION ? TSR_ENOMEM : TSR_EFITS,
                  "fits: %s: cfitsio %d (%s)", head, status, text);
}
