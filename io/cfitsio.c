/* cfitsio.c -- loading cfitsio on first use; see cfitsio.h for why.
 *
 * The soname is the one meson found at build time (TSR_CFITSIO_SONAME), so
 * the library loaded is the one the code was compiled against; the
 * unversioned name is tried after it, for a build tree moved to a machine
 * with only the development symlink.  Loading happens under a mutex, and
 * the table is complete or not published at all.  A failed load is tried
 * again by the next file that needs cfitsio: a process out of descriptors
 * (a mosaic of many inputs under a low ulimit -n) cannot open the library,
 * and a one-time failure would break every later file of the process.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cfitsio.h"

#ifndef TSR_CFITSIO_SONAME
#define TSR_CFITSIO_SONAME "libcfitsio.so"
#endif

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static tsr__cfitsio_t table;
static _Atomic(const tsr__cfitsio_t *) loaded;  /* set once, under lock, when complete */
static char why[512];                           /* the last failure; under lock */
static int why_errno;                           /* EMFILE or ENFILE when that was it, else 0 */

static void load(void) {
  static const char *const names[] = {TSR_CFITSIO_SONAME, "libcfitsio.so"};
  void *lib = NULL;
  why_errno = 0;
  for (size_t i = 0; i < sizeof names / sizeof names[0] && lib == NULL; i++) {
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL && i == 0)
      snprintf(why, sizeof why, "%s", dlerror());
  }
  if (lib == NULL) {
    /* dlopen leaves errno alone, but its message ends with strerror's. */
    if (strstr(why, strerror(ENFILE)) != NULL) /* "Too many open files in system" */
      why_errno = ENFILE;
    else if (strstr(why, strerror(EMFILE)) != NULL)
      why_errno = EMFILE;
    return;
  }
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
  BIND(hdr2str, ffhdr2str);
  BIND(free_memory, fffree);
  BIND(read_subset, ffgsv);
  BIND(get_errstatus, ffgerr);
  BIND(clear_errmsg, ffcmsg);
  BIND(move_byte, ffmbyt);
  BIND(get_bytes, ffgbyt);
  BIND(get_version, ffvers);
#undef BIND
  atomic_store_explicit(&loaded, &table, memory_order_release);
}

const tsr__cfitsio_t *tsr__cfitsio(tsr_ctx_t *ctx) {
  const tsr__cfitsio_t *cf = atomic_load_explicit(&loaded, memory_order_acquire);
  char text[160];
  int e;
  if (cf != NULL)
    return cf;
  pthread_mutex_lock(&lock);
  if ((cf = atomic_load_explicit(&loaded, memory_order_relaxed)) == NULL)
    load();
  cf = atomic_load_explicit(&loaded, memory_order_relaxed);
  e = why_errno;
  if (cf == NULL && e != 0)
    tsr__err(ctx, TSR_EIO, "fits: cannot load cfitsio (%s), which this file needs: %s",
             TSR_CFITSIO_SONAME, tsr__strerror_fd(e, text, sizeof text));
  else if (cf == NULL)
    tsr__err(ctx, TSR_ENOTSUP, "fits: cannot load cfitsio (%s), which this file needs: %s",
             TSR_CFITSIO_SONAME, why);
  pthread_mutex_unlock(&lock);
  if (cf == NULL && e != 0)
    errno = e;
  return cf;
}

const tsr__cfitsio_t *tsr__cfitsio_loaded(void) {
  return atomic_load_explicit(&loaded, memory_order_acquire);
}

int tsr__cfitsio_fail(tsr_ctx_t *ctx, int status, const char *fmt, ...) {
  const tsr__cfitsio_t *cf = tsr__cfitsio_loaded();
  char head[TSR__ERRMSG_CAP / 2], text[FLEN_STATUS];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  cf->get_errstatus(status, text);
  cf->clear_errmsg();
  return tsr__err(ctx, status == MEMORY_ALLOCATION ? TSR_ENOMEM : TSR_EFITS,
                  "fits: %s: cfitsio %d (%s)", head, status, text);
}
