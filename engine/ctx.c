/* ctx.c -- contexts, allocation hooks and error messages.
 *
 * DESIGN: a context carries the allocator (per context, like Lua's lua_Alloc
 * and zstd's customMem) and the message of the last failed call.  Every
 * allocation in the library goes through tsr__malloc and friends, so a test
 * can fail the k-th allocation and the library must answer TSR_ENOMEM, never
 * abort.
 *
 * Messages belong to a (thread, context) pair, so that calls of several
 * threads on one context never see each other's errors: each thread keeps
 * the messages of the last TSR__ERR_SLOTS contexts it used in thread-local
 * slots, named by the context's id (unique for the life of the process, so
 * a context allocated where a freed one was does not inherit its message).
 * A message is formatted once, into a fixed buffer, so reporting an
 * out-of-memory error never needs memory beyond the thread's slots, which
 * are allocated at its first error (libc, not the context's allocator) and
 * freed when it exits.  They are not thread-local arrays: 8 KiB of TLS in a
 * library that also has an initial-exec TLS variable (guard.c) must come
 * from the static TLS surplus, which glibc keeps to a few hundred bytes, and
 * a dlopen of the library (the Python extension) then fails with "cannot
 * allocate memory in static TLS block".  A thread whose slots cannot be
 * allocated writes into one process-wide emergency slot instead.  The allocator hooks are called
 * from any thread that computes; they must be thread-safe if threads are
 * used.  Nothing here is global except the id counter and the static error
 * tables.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "internal.h"

tsr__test_hooks_t tsr__test_hooks;

const char *tsr_version_string(void) {
#define TSR__STR2(x) #x
#define TSR__STR(x) TSR__STR2(x)
  return TSR__STR(TSR_VERSION_MAJOR) "." TSR__STR(TSR_VERSION_MINOR) "." TSR__STR(
      TSR_VERSION_PATCH);
}

const char *tsr_err_name(int err) {
  switch (err) {
#define TSR__ERR_NAME(name, val, text) \
  case TSR_##name:                     \
    return #name;
    TSR_ERRNO_MAP(TSR__ERR_NAME)
#undef TSR__ERR_NAME
  case 0:
    return "OK";
  default:
    return "UNKNOWN";
  }
}

const char *tsr_strerror(int err) {
  switch (err) {
#define TSR__ERR_TEXT(name, val, text) \
  case TSR_##name:                     \
    return text;
    TSR_ERRNO_MAP(TSR__ERR_TEXT)
#undef TSR__ERR_TEXT
  case 0:
    return "success";
  default:
    return "unknown error";
  }
}

static void *libc_malloc(void *ud, size_t n) { (void)ud; return malloc(n); }
static void *libc_realloc(void *ud, void *p, size_t n) { (void)ud; return realloc(p, n); }
static void libc_free(void *ud, void *p) { (void)ud; free(p); }

#define TSR__ERR_SLOTS 8

typedef struct {
  uint64_t ctx_id;   /* 0: free */
  uint64_t used;     /* this thread's clock when last written */
  char msg[TSR__ERRMSG_CAP];
} err_slot_t;

static _Thread_local err_slot_t *err_slots;   /* TSR__ERR_SLOTS, or NULL before the first error */
static _Thread_local uint64_t err_clock;
static err_slot_t err_emergency;                /* when a thread's slots cannot be allocated */
static pthread_key_t err_key;                   /* frees a thread's slots when it exits */
static pthread_once_t err_key_once = PTHREAD_ONCE_INIT;

static void err_key_make(void) { (void)pthread_key_create(&err_key, free); }
static _Atomic uint64_t next_ctx_id = 1;

/* The calling thread's slot of ctx, or NULL; with `take`, a slot is made
 * for it, reusing the least recently written one. */
static err_slot_t *err_slot(const tsr_ctx_t *ctx, bool take) {
  err_slot_t *oldest;
  if (err_slots == NULL) {
    if (!take)
      return err_emergency.ctx_id == ctx->id ? &err_emergency : NULL;
    pthread_once(&err_key_once, err_key_make);
    err_slots = calloc(TSR__ERR_SLOTS, sizeof *err_slots);
    if (err_slots == NULL || pthread_setspecific(err_key, err_slots) != 0) {
      free(err_slots);
      err_slots = NULL;
      err_emergency.ctx_id = ctx->id;
      err_emergency.msg[0] = '\0';
      return &err_emergency;
    }
  }
  oldest = &err_slots[0];
  for (int i = 0; i < TSR__ERR_SLOTS; i++) {
    if (err_slots[i].ctx_id == ctx->id)
      return &err_slots[i];
    if (err_slots[i].used < oldest->used)
      oldest = &err_slots[i];
  }
  if (!take)
    return NULL;
  oldest->ctx_id = ctx->id;
  oldest->msg[0] = '\0';
  return oldest;
}

int tsr_ctx_new(tsr_ctx_t **out, const tsr_ctx_options_t *opts) {
  tsr_alloc_t a = {libc_malloc, libc_realloc, libc_free, NULL};
  tsr_ctx_t *ctx;

  tsr__api_check(out != NULL, "tsr_ctx_new: out is NULL");
  *out = NULL;
  if (opts != NULL && (opts->alloc.malloc_fn || opts->alloc.realloc_fn || opts->alloc.free_fn)) {
    if (!opts->alloc.malloc_fn || !opts->alloc.realloc_fn || !opts->alloc.free_fn)
      return TSR_EINVAL;
    a = opts->alloc;
  }
  ctx = a.malloc_fn(a.ud, sizeof *ctx);
  if (ctx == NULL)
    return TSR_ENOMEM;
  memset(ctx, 0, sizeof *ctx);
  ctx->alloc = a;
  ctx->id = atomic_fetch_add(&next_ctx_id, 1);
  *out = ctx;
  return 0;
}

void tsr_ctx_free(tsr_ctx_t *ctx) {
  if (ctx == NULL)
    return;
  /* Graphs, WCS handles and caches free themselves through ctx's allocator
   * and keep pointers to it: freeing ctx first would be a use-after-free. */
  tsr__api_check(tsr__ctx_live(ctx) == 0,
                 "tsr_ctx_free: graphs, tsr_wcs_t or tsr_cache_t made with it are still alive");
  /* With the check compiled out, leak the context rather than leave them
   * a dangling pointer. */
  if (tsr__ctx_live(ctx) != 0)
    return;
  err_slot_t *sl = err_slot(ctx, false);
  if (sl != NULL)
    sl->ctx_id = 0;
  ctx->alloc.free_fn(ctx->alloc.ud, ctx);
}

int tsr__ctx_live(const tsr_ctx_t *ctx) { return ctx->n_graphs + ctx->n_wcs + ctx->n_caches; }

const char *tsr_errmsg(const tsr_ctx_t *ctx) {
  const err_slot_t *sl;
  if (ctx == NULL)
    return "no context";
  sl = err_slot(ctx, false);
  return sl ? sl->msg : "";
}

void *tsr__malloc(tsr_ctx_t *ctx, size_t size) {
  return ctx->alloc.malloc_fn(ctx->alloc.ud, size ? size : 1);
}

void tsr__advise_huge(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
  const uintptr_t huge = (uintptr_t)2 << 20;
  uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = ((uintptr_t)p + n) & ~(huge - 1);
  if (hi > lo)
    (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
  (void)p, (void)n;
#endif
}

void *tsr__mallocarray(tsr_ctx_t *ctx, size_t n, size_t size) {
  if (size != 0 && n > SIZE_MAX / size)
    return NULL;
  return tsr__malloc(ctx, n * size);
}

void *tsr__calloc(tsr_ctx_t *ctx, size_t n, size_t size) {
  void *p = tsr__mallocarray(ctx, n, size);
  if (p != NULL)
    memset(p, 0, n * size == 0 ? 1 : n * size);
  return p;
}

void *tsr__realloc(tsr_ctx_t *ctx, void *p, size_t size) {
  return ctx->alloc.realloc_fn(ctx->alloc.ud, p, size ? size : 1);
}

void tsr__free(tsr_ctx_t *ctx, void *p) {
  int saved = errno;
  if (p != NULL)
    ctx->alloc.free_fn(ctx->alloc.ud, p);
  errno = saved;
}

char *tsr__strdup(tsr_ctx_t *ctx, const char *s) {
  size_t n = strlen(s) + 1;
  char *d = tsr__malloc(ctx, n);
  if (d != NULL)
    memcpy(d, s, n);
  return d;
}

int tsr__verr(tsr_ctx_t *ctx, int code, const char *fmt, va_list ap) {
  err_slot_t *sl = err_slot(ctx, true);
  vsnprintf(sl->msg, sizeof sl->msg, fmt, ap);
  sl->used = ++err_clock;
  return code;
}

int tsr__err(tsr_ctx_t *ctx, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tsr__verr(ctx, code, fmt, ap);
  va_end(ap);
  return code;
}

void tsr__err_prefix(tsr_ctx_t *ctx, const char *fmt, ...) {
  char head[TSR__ERRMSG_CAP], old[TSR__ERRMSG_CAP];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  err_slot_t *sl = err_slot(ctx, true);
  memcpy(old, sl->msg, sizeof old);
  snprintf(sl->msg, sizeof sl->msg, "%s: %s", head, old);
  sl->used = ++err_clock;
}

void tsr__err_clear(tsr_ctx_t *ctx) {
  err_slot_t *sl = err_slot(ctx, false);
  if (sl != NULL)
    sl->msg[0] = '\0';
}

const char *tsr__strerror_fd(int err, char *buf, size_t cap) {
  struct rlimit rl;
  if (err == EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    snprintf(buf, cap,
             "too many open files (the limit is %llu descriptors; raise it with ulimit -n)",
             (unsigned long long)rl.rlim_cur);
    return buf;
  }
  if (err == ENFILE) {
    snprintf(buf, cap, "too many open files in the system (the kernel's limit, fs.file-max)");
    return buf;
  }
  return strerror(err);
}

size_t tsr_dtype_size(tsr_dtype_t dt) {
  return dt == TSR_F32 ? 4 : dt == TSR_F64 ? 8 : 0;
}

const char *tsr_dtype_name(tsr_dtype_t dt) {
  return dt == TSR_F32 ? "float32" : dt == TSR_F64 ? "float64" : "unknown";
}
