/* internal.h -- what engine/ offers to ops/ and io/: allocation, errors,
 * graph and node structures, the op vtable, keys, regions and the run API.
 * Nothing here is installed; only tessera.h is public. */
#ifndef TSR_INTERNAL_H
#define TSR_INTERNAL_H

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tessera/tessera.h"

/* Hot loops built twice, for baseline x86-64 and for AVX2, at -O3, with the
 * version picked when the library loads (GCC function multiversioning).
 * AVX2 does not enable FMA, so floating-point results are the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TSR__MULTIVERSION __attribute__((target_clones("avx2", "default"), optimize("O3")))
#else
#define TSR__MULTIVERSION
#endif

#if defined(__GNUC__)
#define TSR__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TSR__UNUSED __attribute__((unused))
#else
#define TSR__PRINTF(f, a)
#define TSR__UNUSED
#endif

/* Programmer errors (NULL handles, impossible states) are asserts kept with
 * -Db_ndebug=false; user-data errors always return a code. */
#define tsr__api_check(cond, msg) assert((cond) && (msg))

#define TSR__ERRMSG_CAP 1024
#define TSR__INLINE_INPUTS 8   /* inputs held in the node itself; more are allocated */
#define TSR__MAX_INPUTS 100000 /* a mosaic's inputs, and a sanity bound */
#define TSR__MAX_PLANES 2

/* ------------------------------------------------------------------ */
/* Context, allocation, errors (engine/ctx.c)                         */

struct tsr_ctx_s {
  tsr_alloc_t alloc;                  /* never NULL functions after tsr_ctx_new */
  uint64_t id;                        /* unique in the process: names its messages (ctx.c) */
  /* Live objects made with this context, each freed through its allocator:
   * tsr_ctx_free with any of them alive is an API misuse (ctx.c). */
  _Atomic int n_graphs;               /* tsr_graph_new .. tsr_graph_free */
  _Atomic int n_wcs;                  /* tsr__wcs_new (every tsr_wcs_t) .. tsr_wcs_free */
  _Atomic int n_caches;               /* tsr_cache_open(_read_only) .. tsr_cache_close */
};

/* Objects of `ctx` still alive (graphs + WCS handles + caches): 0 when
 * tsr_ctx_free may be called. */
int tsr__ctx_live(const tsr_ctx_t *ctx);

void *tsr__malloc(tsr_ctx_t *ctx, size_t size);
/* Ask for transparent huge pages over the 2 MiB pages wholly inside
 * [p, p + n), for a large buffer about to be written whole: one page fault
 * per 2 MiB instead of 512 (page faults are most of the cost of a cache hit
 * on a virtual machine).  Advice only. */
void tsr__advise_huge(void *p, size_t n);
void *tsr__calloc(tsr_ctx_t *ctx, size_t n, size_t size);      /* overflow-checked, zeroed */
void *tsr__mallocarray(tsr_ctx_t *ctx, size_t n, size_t size); /* overflow-checked */
void *tsr__realloc(tsr_ctx_t *ctx, void *p, size_t size);
void  tsr__free(tsr_ctx_t *ctx, void *p);                      /* keeps errno */
char *tsr__strdup(tsr_ctx_t *ctx, const char *s);

/* Set the context's message and return `code`, so that callers can write
 * `return tsr__err(ctx, TSR_EINVAL, "...")`. */
int tsr__err(tsr_ctx_t *ctx, int code, const char *fmt, ...) TSR__PRINTF(3, 4);

/* Faults the tests inject.  All zero (off) unless a test sets them: the
 * library never does and reads no environment variable for them, and the
 * symbol is hidden, so only programs that link the engine's static
 * components -- the tests -- can reach it. */
typedef struct {
  const char *crash_chunk; /* "cx,cy[,always|hang]": a pool worker computing that chunk
                              (chunk grid indices) dies by SIGSEGV on the first attempt,
                              or on every one, or hangs (for timeouts) */
  long write_fail;         /* the N-th FITS data write of the process fails with ENOSPC,
                              as on a full disk (tmpfs quotas need privileges) */
  int no_tmpfile;          /* outputs act as on a filesystem without O_TMPFILE */
  int map_nothing;         /* FITS inputs are read with pread, as if too big to map, and
                              HEALPix tables are copied, not viewed in place */
  int count_healpix_rows;  /* HEALPix sources count the table rows their views touched
                              (tsr__healpix_rows_mapped, io/healpix.c) when a run ends */
} tsr__test_hooks_t;
extern tsr__test_hooks_t tsr__test_hooks;
int tsr__verr(tsr_ctx_t *ctx, int code, const char *fmt, va_list ap);
/* Prefix the current message with "what: " (adds context on the way up). */
void tsr__err_prefix(tsr_ctx_t *ctx, const char *fmt, ...) TSR__PRINTF(2, 3);
void tsr__err_clear(tsr_ctx_t *ctx);
/* strerror(err), except that running out of descriptors says which limit
 * was reached and how to raise it (EMFILE: "too many open files (the limit
 * is 900 descriptors; raise it with ulimit -n)"), since strerror's words
 * alone read as if tessera had leaked them.  Written into buf when needed. */
const char *tsr__strerror_fd(int err, char *buf, size_t cap);

/* ------------------------------------------------------------------ */
/* A growable byte buffer, for canonical encodings (engine/key.c)     */

typedef struct {
  tsr_ctx_t *ctx;
  unsigned char *p;
  size_t len, cap;
  int oom;                 /* sticky: an append failed; the buffer is unusable */
} tsr__buf_t;

void tsr__buf_init(tsr__buf_t *b, tsr_ctx_t *ctx);
void tsr__buf_release(tsr__buf_t *b);
void tsr__buf_put(tsr__buf_t *b, const void *p, size_t n);
void tsr__buf_put_str(tsr__buf_t *b, const char *s);      /* length-prefixed */
void tsr__buf_put_i64(tsr__buf_t *b, int64_t v);          /* little-endian */
void tsr__buf_put_f64(tsr__buf_t *b, double v);           /* bit pattern, -0 and NaN canonical */

/* XXH3-128 of bytes; key[16] little-endian low64 then high64. */
void tsr__hash128(const void *p, size_t n, uint8_t key[16]);

/* ------------------------------------------------------------------ */
/* WCS container (engine/wcsbox.c).  Validation and wcslib parsing live in
 * io/ (reading) and ops/ (mapping); the engine only stores the cards.      */

struct tsr_wcs_s {
  tsr_ctx_t *ctx;          /* allocator owner */
  char *cards;             /* ncards x 80 chars, no END, no NUL inside */
  int ncards;
  int naxis;               /* NAXIS */
  int64_t shape[TSR_MAX_DIMS]; /* NAXISn, 0 if unknown (axes >= naxis are 1) */
};

/* Take a copy of `ncards` cards. */
int tsr__wcs_new(tsr_ctx_t *ctx, const char *cards, int ncards, int naxis,
                 const int64_t *shape, tsr_wcs_t **out);
/* Find a card by keyword (exact, <= 8 chars); returns its index or -1. */
int tsr__wcs_find(const tsr_wcs_t *w, const char *keyword);
/* The keyword of an 80-column card (columns 1-8, trailing blanks dropped). */
void tsr__card_keyword(const char *card, char kw[9]);
/* Value text of card i (after "= ", comment stripped, quotes kept) into buf. */
void tsr__card_value(const char *card, char *buf, size_t cap);
/* Set or add a card "KEYWORD = value" (value text already formatted). */
int tsr__wcs_set(tsr_wcs_t *w, const char *keyword, const char *value);
/* Pixel axis `axis` becomes pixels start, start + step, ... (n of them):
 * CRPIX, the axis's column of CD (or PC) and NAXIS follow.  0 or TSR_ENOMEM. */
int tsr__wcs_slice_axis(tsr_wcs_t *w, int axis, int64_t start, int64_t step, int64_t n);
/* Remove every card whose keyword matches exactly. */
void tsr__wcs_del(tsr_wcs_t *w, const char *keyword);
/* Check one 80-column card before wcslib reads it: a value card
 * ("KEYWORD = value / comment") must hold a FITS value (a closed string, T,
 * F, a number or nothing), its keyword A-Z, 0-9, - and _.  wcslib's parser
 * overruns buffers or leaks on others (found by fuzzing).  0, or TSR_EWCS
 * with "<what>: <unit> <num>: ..." on ctx; with ctx NULL only -1. */
int tsr__card_check(tsr_ctx_t *ctx, const char *what, const char *unit, int num,
                    const char *card);
/* Copy into `out` (room for ncards cards) the cards that may go to wcspih:
 * printable ASCII value cards with a value that pass tsr__card_check,
 * without the DSS plate-solution keywords.  Returns how many.  Both io/
 * (validation) and ops/ (mapping) parse through it, so they see the same
 * WCS. */
int tsr__cards_for_wcslib(const char *cards, int ncards, char *out);
/* Encode the cards that matter for coordinates (not COMMENT, HISTORY, blank,
 * nor data-only keywords), sorted, for keys. */
void tsr__wcs_encode(const tsr_wcs_t *w, tsr__buf_t *b);

/* ------------------------------------------------------------------ */
/* Regions (engine/region.c)                                           */

bool tsr__region_empty(const tsr_region_t *r, int ndim);
/* r = a ∩ b; returns false if empty. */
bool tsr__region_intersect(const tsr_region_t *a, const tsr_region_t *b,
                           tsr_region_t *r, int ndim);
/* The region is inside [0, shape) and non-empty on every axis. */
bool tsr__region_within(const tsr_region_t *r, int ndim, const int64_t *shape);
void tsr__region_full(tsr_region_t *r, int ndim, const int64_t *shape);
/* "[x0:x1, y0:y1]" (0-based, half-open) for messages. */
void tsr__region_format(const tsr_region_t *r, int ndim, char *buf, size_t cap);

/* The largest array a node may describe, in bytes per plane.  Every node is
 * checked against it when it is built (tsr__node_finish), so that any product
 * of sizes within a node -- elements, bytes, offsets, two planes -- fits in
 * int64_t without further checks.  1 EiB is far beyond any disk or memory. */
#define TSR__MAX_BYTES ((int64_t)1 << 60)
/* Bytes of an array of `shape` (ndim axes, each >= 0) with `elem_bytes` per
 * value into *bytes; false when that exceeds TSR__MAX_BYTES (or overflows). */
bool tsr__array_bytes(int ndim, const int64_t *shape, int64_t elem_bytes, int64_t *bytes);
/* "2147483648 x 2147483648" for messages. */
void tsr__shape_format(int ndim, const int64_t *shape, char *buf, size_t cap);

/* ------------------------------------------------------------------ */
/* Ops                                                                 */

typedef struct tsr__task_s tsr__task_t;

/* One op kernel.  A node's op computes n_planes arrays of the node's shape
 * and dtype together (a reprojection's data and footprint). */
typedef struct tsr__op_s {
  const char *name;          /* "reproject_interp" */
  unsigned version;          /* bump when numerics change: it is in the key */
  unsigned flags;            /* TSR__OP_* */
  /* Window of input `i` that output region `out` needs.  Set *win, or
   * *empty = true when nothing of the input is needed (the task gets
   * in[i].data = NULL).  May set a window larger than the input; the engine
   * clips it.  Called in the process that plans. */
  int (*input_region)(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                      tsr_region_t *win, bool *empty);
  /* Per-run state of the node in this process (wcsprm copies, tables).
   * Optional. */
  int (*start)(tsr_node_t *n, void **state);
  void (*stop)(tsr_node_t *n, void *state);
  /* Compute task->out into task->planes; inputs are in task->in. */
  int (*compute)(tsr__task_t *t);
  /* Canonical encoding of the parameters, for the key. */
  void (*encode)(const tsr_node_t *n, tsr__buf_t *b);
  /* Release n->params. */
  void (*free_params)(tsr_ctx_t *ctx, void *params);
  /* Sources, optional: window `win` in place, valid until recheck gives it
   * back (a mapping of the whole file), instead of a copy: set *data, its
   * element strides and whether the values are big-endian, and return
   * true; false when there is none (the engine copies the window then).
   * Values are as stored: non-finite ones are not made NaN. */
  bool (*view)(tsr_node_t *n, void *state, const tsr_region_t *win, const void **data,
               int64_t stride[TSR_MAX_DIMS], bool *big_endian);
  /* Sources with views: called once for every view handed out, when its
   * consumer's task is done with it, which gives the view back.  With
   * `check` (the task has succeeded so far): 0 if the data are still those
   * the node's key stands for, else an error on the context (the task fails
   * and stores nothing).  Without, the task failed already: only give the
   * view back, leaving the message alone.  Sources check their copies
   * themselves, in compute. */
  int (*recheck)(tsr_node_t *n, void *state, bool check);
  /* Consumers, optional: may input `i` come as a view?  An op that says
   * yes reads big-endian values and treats every non-finite one as NaN. */
  bool (*takes_view)(const tsr_node_t *n, int i);
} tsr__op_t;

enum {
  TSR__OP_SOURCE = 1u << 0,  /* no inputs; compute reads any region directly */
  TSR__OP_SUBBOX = 1u << 1,  /* any sub-box of a chunk is computed bit-identically */
  TSR__OP_REPROJECT = 1u << 2, /* inputs[0] mapped onto the node's WCS; NaN off its edges */
};

struct tsr_node_s {
  tsr_graph_t *graph;
  int id;                         /* 1-based creation order in the graph */
  const tsr__op_t *op;            /* NULL for a plane view */
  void *params;                   /* op-owned, freed with op->free_params */
  int n_inputs;
  tsr_node_t **inputs;            /* inputs_inline, or allocated by tsr__node_set_inputs */
  tsr_node_t *inputs_inline[TSR__INLINE_INPUTS];
  int ndim;
  int64_t shape[TSR_MAX_DIMS];    /* axes >= ndim are 1 */
  int64_t chunk[TSR_MAX_DIMS];    /* chunk shape; axes >= ndim are 1 */
  tsr_dtype_t dtype;
  tsr_wcs_t *wcs;                 /* owned, or NULL */
  int n_planes;                   /* planes the op computes together (>= 1) */
  tsr_node_t *owner;              /* the node whose op computes this plane (self for plane 0) */
  int plane;                      /* which plane of owner this node is */
  tsr_node_t *planes[TSR__MAX_PLANES]; /* on the owner: its plane nodes, created on demand */
  uint8_t key[16];
  char name[96];                  /* for messages */
  tsr_node_t *next;               /* graph's list */
};

struct tsr_graph_s {
  tsr_ctx_t *ctx;
  tsr_node_t *first, *last;
  int n_nodes;
  int status;                     /* first build error, 0 if none */
  char errmsg[TSR__ERRMSG_CAP];
  _Atomic int running;            /* runs using it, from any thread; >0 forbids freeing */
};

/* Graph building (engine/graph.c).  tsr__node_alloc makes a node of op `op`
 * with params (ownership passes to the node, even on failure).  The caller
 * fills shape etc., then calls tsr__node_finish, which computes the key,
 * merges it with an identical existing node (freeing the new one) and
 * returns the node to use, or NULL on error. */
bool tsr__graph_check(tsr_graph_t *g);            /* false if the graph has an error */
tsr_node_t *tsr__node_alloc(tsr_graph_t *g, const tsr__op_t *op, void *params);
tsr_node_t *tsr__node_finish(tsr_node_t *n);
void tsr__node_discard(tsr_node_t *n);            /* free an unfinished node */
/* Room for `count` inputs (n->inputs[0..count)), set n_inputs; 0 or TSR_ENOMEM
 * (recorded on the graph). */
int tsr__node_set_inputs(tsr_node_t *n, int count);
/* Record a build error on the graph (and the ctx); returns NULL. */
tsr_node_t *tsr__graph_fail(tsr_graph_t *g, int code, const char *fmt, ...) TSR__PRINTF(3, 4);
/* Move the ctx's message onto the graph as its build error. */
tsr_node_t *tsr__graph_fail_ctx(tsr_graph_t *g, int code);
/* Extra bytes for a source's identity (file path, size, mtime) in its key. */
typedef void (*tsr__encode_fn)(const tsr_node_t *n, tsr__buf_t *b);

/* ------------------------------------------------------------------ */
/* Tasks and running (engine/plan.c, engine/exec_serial.c)              */

typedef struct {
  const void *data;              /* element win.start; NULL when the op said the input is not needed */
  tsr_region_t win;              /* the window held, in the input's pixels (clipped) */
  int64_t stride[TSR_MAX_DIMS];  /* element strides of data; stride[0] = 1 */
  const tsr_node_t *node;
  /* A view (op->view): data lie in place in the source's file mapping, not
   * in a copy the task owns, and are big-endian (FITS order) when
   * big_endian.  Only ops whose takes_view said yes get views. */
  bool view, big_endian;
} tsr__window_t;

/* Element k of an input window, as a double. */
static inline double tsr__window_value(const tsr__window_t *w, size_t k) {
  return w->node->dtype == TSR_F32 ? (double)((const float *)w->data)[k]
                                   : ((const double *)w->data)[k];
}

struct tsr__task_s {
  tsr_ctx_t *ctx;
  tsr_node_t *node;              /* the owner node being computed */
  void *state;                   /* from op->start, in this process */
  tsr_region_t out;              /* region of node computed by this task */
  void *planes[TSR__MAX_PLANES]; /* destination of each plane (NULL = not wanted) */
  int64_t stride[TSR_MAX_DIMS];  /* destination strides in elements; stride[0] = 1 */
  int n_in;
  tsr__window_t *in;             /* n_in windows, one per input */
  /* The run asks for a small part of its output (under 1/16): its windows
   * are scattered, so a source should read exactly them and not read
   * ahead around them. */
  bool sparse;
  /* The planes already hold the node's blank (NaN data, 0 footprint) over
   * out: they are the caller's destinations, given with dst_blank
   * (tsr_run_opts_t).  An op that would write the blank first may skip
   * it, and the pixels that get none. */
  bool dst_blank;
};

/* Element pointer into a task's plane p at index (x, y, z, w) relative to out.start. */
static inline size_t tsr__task_offset(const tsr__task_t *t, int64_t x, int64_t y,
                                      int64_t z, int64_t w) {
  return (size_t)(x * t->stride[0] + y * t->stride[1] + z * t->stride[2] + w * t->stride[3]);
}

/* Fill region of a plane destination with NaN (dtype of the node). */
void tsr__fill_nan(void *dst, tsr_dtype_t dt, const tsr_region_t *r, const int64_t *stride);

/* Compute `region` of owner node `n` into plane destinations dst[p] (NULL =
 * not wanted) with element strides `stride`.  Serial, in this process.
 * `progress` may be NULL. */
typedef struct tsr__run_s tsr__run_t;
int tsr__run_new(tsr_graph_t *g, const tsr_run_opts_t *opts, tsr__run_t **out);
void tsr__run_free(tsr__run_t *run);
/* Mark the run as successful before tsr__run_free, which then leaves the
 * cache's last warning of the run (if any) as the ctx message; a failed run
 * keeps its error message. */
void tsr__run_succeeded(tsr__run_t *run);
/* Number of tasks that computing `region` of `n` will run (for progress). */
int64_t tsr__run_count_tasks(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region);
/* Record the request: `total` top-level tasks (for progress) for region r of
 * node n.  A region much smaller than its node makes the run sparse (see
 * tsr__task_t). */
void tsr__run_set_request(tsr__run_t *run, int64_t total, const tsr_node_t *n,
                          const tsr_region_t *r);
/* Validate a request (graph status, region inside the node, non-empty) and
 * resolve NULL to the whole node; sets the ctx message on error. */
int tsr__check_request(tsr_graph_t *g, tsr_node_t *node, const tsr_region_t *region,
                       tsr_region_t *r);
/* Run fn(arg) so that a SIGBUS inside it (a mapped file truncated under
 * us) returns TSR_EIO with *bus = true instead of killing the process;
 * else fn's result, *bus = false.  See guard.c. */
int tsr__sigbus_guard(int (*fn)(void *), void *arg, bool *bus);
/* Copy box `sub` (absolute indices) from a buffer laid over region `from`
 * with element strides sf into one laid over region `to` with strides st. */
void tsr__copy_box(void *dst, const tsr_region_t *to, const int64_t *st, const void *src,
                   const tsr_region_t *from, const int64_t *sf, const tsr_region_t *sub,
                   size_t esize);
/* All n bytes from / to a descriptor, through short reads and writes and
 * EINTR: true, or false with errno (a read that meets the end of the file
 * early, and a write that writes nothing, fail with errno EIO and ENOSPC). */
bool tsr__read_full(int fd, void *p, size_t n);
bool tsr__write_full(int fd, const void *p, size_t n);
/* Read len bytes at offset off into dst, through short reads and EINTR: 0,
 * 1 when the file ends first, or -1 with errno. */
int tsr__pread_full(int fd, void *dst, size_t len, off_t off);

/* Step chunk index c to the next in the box of chunk indices [lo, hi),
 * axis 0 fastest (FITS order, as every executor numbers chunks); false
 * after the last, with c back at lo. */
static inline bool tsr__chunk_next(int64_t c[TSR_MAX_DIMS], const int64_t *lo, const int64_t *hi) {
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    if (++c[a] < hi[a])
      return true;
    c[a] = lo[a];
  }
  return false;
}

/* Strides (elements) of a buffer laid contiguously over r, axis 0 fastest. */
void tsr__contiguous_strides(const tsr_region_t *r, int64_t stride[TSR_MAX_DIMS]);
int tsr__run_region(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                    void *const *dst, const int64_t *stride);
/* The same in two steps, so a caller can overlap its own work (writing the
 * previous band) with the computation: submit returns a ticket at once on a
 * pool (dst and the region must stay valid until the wait) and computes
 * before returning on a serial run (ticket 0).  At most 32 in flight. */
bool tsr__run_async(const tsr__run_t *run);
/* Does [p, p + n) meet the memory of a tsr_source_buffer_ref node of g? */
bool tsr__buffer_overlaps(const tsr_graph_t *g, const void *p, size_t n);
/* Does the run compute on a process pool (running, or forked at its first
 * submission)? */
bool tsr__run_pooled(const tsr__run_t *run);
typedef struct tsr__mpi_s tsr__mpi_t;
/* The MPI executor (exec_mpi.c; without MPI these fail with TSR_ENOTSUP).
 * tsr__mpi_open is collective: every rank of opts->mpi_comm calls it with its
 * request, and it fails on every rank unless all requests have one key.
 * Then rank 0 attaches it to its run (submit / wait as the pool) and the
 * others call tsr__mpi_serve until rank 0's tsr__mpi_close(status), whose
 * status they return. */
int tsr__mpi_rank(const tsr_run_opts_t *opts);
int tsr__mpi_open(tsr_ctx_t *ctx, const tsr_run_opts_t *opts, const tsr_node_t *root,
                  const tsr_region_t *r, tsr__mpi_t **out);
void tsr__mpi_attach(tsr__mpi_t *m, tsr__run_t *run);
int tsr__mpi_serve(tsr__mpi_t *m, tsr_graph_t *g, const tsr_run_opts_t *opts);
int tsr__mpi_submit(tsr__mpi_t *m, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                    const int64_t *stride, int64_t *ticket);
int tsr__mpi_wait(tsr__mpi_t *m, int64_t ticket);
void tsr__mpi_close(tsr__mpi_t *m, int status);
/* The start of every call that may run on MPI: without opts->mpi_comm, 0
 * and *m = NULL.  With it, every rank comes here with the same request
 * (root, r); rank 0 gets 0 and *m to attach to its run, and every other
 * rank serves rank 0 until the run ends: *served = true and the run's
 * status returned, which the call returns. */
int tsr__mpi_enter(tsr_graph_t *g, const tsr_run_opts_t *opts, const tsr_node_t *root,
                   const tsr_region_t *r, tsr__mpi_t **m, bool *served);

int tsr__run_submit(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                    void *const *dst, const int64_t *stride, int64_t *ticket);
int tsr__run_wait(tsr__run_t *run, int64_t ticket);

/* Jobs: coarse work items that a caller hands to the run's pool workers
 * whole, fn(run, args, i) for i in [0, n), so that each worker does all of
 * an item's work (compute a band and write it) as a serial run would,
 * with no message per chunk and no other busy process beside it.  `run`
 * is the run of the process doing the item: a worker's own serial run
 * (whose chunk tasks still honour the crash hook, the task timeout and the
 * blame of the pool), or this run when it has no workers (serial, MPI).
 * Items go out on demand, the even workers taking them from the front and
 * the odd ones from the back, so each works through neighbouring items
 * (their inputs overlap) and they meet in the middle; a second one waits
 * in a worker's socket only while plenty are left.
 * A worker is a fork of this process, so fn and every pointer in args
 * must be valid there: code, and memory made before the run's first
 * submission and not changed since.  An item must be safe to do twice (a
 * worker that dies is replaced and its item retried).  fn returns 0 or a
 * negative TSR_E* code with the run's ctx message set.  `last`: no other
 * work follows in this request, so a worker with nothing left to take
 * exits at once rather than when the run ends.  args are copied (len <=
 * TSR__JOB_ARGS); `what` (copied) names the work in a failure.  Wait with
 * tsr__run_wait; without workers the items are done before this returns
 * (ticket 0). */
#define TSR__JOB_ARGS 128
typedef int (*tsr__job_fn)(tsr__run_t *run, const void *args, int64_t i);
/* Does the run compute on several workers, processes or threads?  (Then a
 * FITS writer hands out whole bands as jobs.) */
bool tsr__run_parallel(const tsr__run_t *run);
/* Buffer i (<= TSR__MAX_PLANES) of at least `bytes`, owned by the run of the
 * process or thread doing a job item and freed with it: what a job item
 * computes into (on the threads executor, items of one run run at once,
 * so they cannot share the caller's buffers).  NULL when out of memory. */
void *tsr__run_buffer(tsr__run_t *run, int i, size_t bytes);
int tsr__run_submit_jobs(tsr__run_t *run, tsr__job_fn fn, const void *args, size_t len,
                         int64_t n, bool last, const char *what, int64_t *ticket);
/* The context of a run (for a job's errors). */
tsr_ctx_t *tsr__run_ctx(tsr__run_t *run);

#endif
