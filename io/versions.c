/* versions.c -- the versions of the libraries this build of tessera runs
 * with, as loaded (not as compiled against), for `tessera --version` and
 * bug reports.  cfitsio is loaded to ask it. */
#include <png.h>
#include <pthread.h>
#include <stdio.h>
#include <uv.h>
#include <wcslib/wcs.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include "cfitsio.h"

static char versions[512];
static pthread_once_t versions_once = PTHREAD_ONCE_INIT;

static void versions_make(void) {
  char cfitsio[32] = "not loadable";
  unsigned xxh = XXH_versionNumber();
  tsr_ctx_t *ctx = NULL;
  const tsr__cfitsio_t *cf;
  if (tsr_ctx_new(&ctx, NULL) == 0 && (cf = tsr__cfitsio(ctx)) != NULL) {
    float v = 0;
    cf->get_version(&v);
    snprintf(cfitsio, sizeof cfitsio, "%.3g", (double)v);
  }
  tsr_ctx_free(ctx);
  snprintf(versions, sizeof versions,
           "libuv %s, wcslib %s, cfitsio %s, zstd %s, xxhash %u.%u.%u, libpng %s, zlib %s, "
           "MPI executor %s",
           uv_version_string(), wcslib_version(NULL), cfitsio, ZSTD_versionString(),
           xxh / 10000, xxh / 100 % 100, xxh % 100, png_get_libpng_ver(NULL), zlibVersion(),
           tsr_has_mpi() ? "available (loaded on demand)" : "not available");
}

const char *tsr_library_versions(void) {
  pthread_once(&versions_once, versions_make);
  return versions;
}
