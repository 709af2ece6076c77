/* exec_mpi_load.c -- the MPI executor, loaded when a run first asks for it.
 *
 * DESIGN: the executor (exec_mpi.c) is a module, libtessera-mpi.so, linked
 * with Open MPI; libtessera is not.  Linking Open MPI into the library made
 * every program load 17 shared libraries instead of 10 (3.3 ms more to start
 * `tessera --version`, measured) and `pkg-config --cflags tessera` hand out
 * Open MPI's include paths, for an executor few runs use.  Now the module
 * is opened by tsr_mpi_init, or by the first run given an mpi_comm, and
 * never otherwise.  It is looked for beside this library, found with
 * dladdr: <dir>/tessera/libtessera-mpi.so as `meson install` lays it out,
 * then <dir>/libtessera-mpi.so as in the build tree, then at the build
 * tree's path compiled in (test programs link the engine statically, so
 * "beside this library" is beside the program).  It gets the engine's
 * functions as a table (mpi_module.h).  A build without MPI has no module,
 * and asking for MPI says how to get it.
 */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mpi_module.h"

#ifndef TSR_MPI_MODULE_BUILD_PATH
#define TSR_MPI_MODULE_BUILD_PATH ""
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static const tsr__mpi_module_t *module;
static char why[PATH_MAX + 256];

static void try_open(const char *path, void **lib) {
  if (*lib == NULL && path[0] != '\0' && access(path, F_OK) == 0 &&
      (*lib = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL)
    snprintf(why, sizeof why, "cannot load %s: %s", path, dlerror());
}

static void load(void) {
  static const tsr__engine_api_t engine = {
      tsr__err,          tsr_errmsg,         tsr__malloc,        tsr__calloc,
      tsr__mallocarray,  tsr__free,          tsr_dtype_size,     tsr_region_size,
      tsr__region_format, tsr__contiguous_strides, tsr__copy_box, tsr__run_new_local,
      tsr__run_free,     tsr__run_chunk,     tsr__scratch_release};
  char dir[PATH_MAX], path[PATH_MAX + 64];
  void *lib = NULL, *entry;
  tsr__mpi_module_fn fn;
  Dl_info info;

  if (!TSR_HAS_MPI_MODULE) {
    snprintf(why, sizeof why,
             "this tessera was built without MPI (install libopenmpi-dev and rebuild; meson "
             "option -Dmpi=enabled)");
    return;
  }
  snprintf(why, sizeof why, "the MPI executor module libtessera-mpi.so is missing (looked beside "
                            "libtessera and in %s)", TSR_MPI_MODULE_BUILD_PATH);
  if (dladdr(&once, &info) != 0 && info.dli_fname != NULL &&
      strlen(info.dli_fname) < sizeof dir) {
    char *slash;
    strcpy(dir, info.dli_fname);
    slash = strrchr(dir, '/');
    if (slash != NULL) {
      *slash = '\0';
      snprintf(path, sizeof path, "%s/tessera/libtessera-mpi.so", dir);
      try_open(path, &lib);
      snprintf(path, sizeof path, "%s/libtessera-mpi.so", dir);
      try_open(path, &lib);
    }
  }
  try_open(TSR_MPI_MODULE_BUILD_PATH, &lib);
  if (lib == NULL)
    return;
  /* dlsym returns void *; POSIX guarantees it converts to a function
   * pointer, which memcpy says without a cast ISO C forbids. */
  if ((entry = dlsym(lib, TSR__MPI_MODULE_ENTRY)) == NULL) {
    snprintf(why, sizeof why, "the MPI executor module has no %s", TSR__MPI_MODULE_ENTRY);
    return;
  }
  memcpy(&fn, &entry, sizeof fn);
  module = fn(&engine);
  if (module != NULL && module->abi != TSR__MPI_MODULE_ABI) {
    snprintf(why, sizeof why, "the MPI executor module has interface %d, this library %d",
             module->abi, TSR__MPI_MODULE_ABI);
    module = NULL;
  }
}

/* The module, loading it the first time; NULL with the reason on ctx (if
 * not NULL). */
static const tsr__mpi_module_t *get(tsr_ctx_t *ctx) {
  pthread_once(&once, load);
  if (module == NULL && ctx != NULL)
    tsr__err(ctx, TSR_ENOTSUP, "mpi: %s", why);
  return module;
}

int tsr_has_mpi(void) { return get(NULL) != NULL; }

int tsr_mpi_init(tsr_ctx_t *ctx, int *argc, char ***argv, void **comm, int *rank, int *size) {
  *comm = NULL, *rank = 0, *size = 1;
  tsr__api_check(ctx != NULL, "tsr_mpi_init: NULL context");
  return get(ctx) ? module->init(ctx, argc, argv, comm, rank, size) : TSR_ENOTSUP;
}

void tsr_mpi_finalize(void) {
  /* Nothing to end where nothing was loaded. */
  const tsr__mpi_module_t *m = module;
  if (m != NULL)
    m->finalize();
}

/* A run reaches the ones below only with an mpi_comm, which only a loaded
 * module (or a caller that started MPI itself) gives. */
int tsr__mpi_rank(const tsr_run_opts_t *opts) {
  return opts && opts->mpi_comm && get(NULL) ? module->rank(opts) : 0;
}

int tsr__mpi_open(tsr_ctx_t *ctx, const tsr_run_opts_t *opts, const tsr_node_t *root,
                  const tsr_region_t *r, tsr__mpi_t **out) {
  *out = NULL;
  return get(ctx) ? module->open(ctx, opts, root, r, out) : TSR_ENOTSUP;
}

int tsr__mpi_enter(tsr_graph_t *g, const tsr_run_opts_t *opts, const tsr_node_t *root,
                   const tsr_region_t *r, tsr__mpi_t **m, bool *served) {
  int rc;
  *m = NULL, *served = false;
  if (opts == NULL || opts->mpi_comm == NULL)
    return 0;
  if ((rc = tsr__mpi_open(g->ctx, opts, root, r, m)) != 0 || tsr__mpi_rank(opts) == 0)
    return rc;
  rc = tsr__mpi_serve(*m, g, opts);
  tsr__mpi_close(*m, rc);
  *m = NULL, *served = true;
  return rc;
}

/* An open tsr__mpi_t means the module is loaded. */
void tsr__mpi_attach(tsr__mpi_t *m, tsr__run_t *run) { module->attach(m, run); }

int tsr__mpi_serve(tsr__mpi_t *m, tsr_graph_t *g, const tsr_run_opts_t *opts) {
  return module->serve(m, g, opts);
}

int tsr__mpi_submit(tsr__mpi_t *m, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                    const int64_t *stride, int64_t *ticket) {
  return module->submit(m, n, region, dst, stride, ticket);
}

int tsr__mpi_wait(tsr__mpi_t *m, int64_t ticket) { return module->wait(m, ticket); }

void tsr__mpi_close(tsr__mpi_t *m, int status) {
  if (m != NULL)
    module->close(m, status);
}
