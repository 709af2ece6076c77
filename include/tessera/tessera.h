/* tessera.h -- lazy dataflow engine for chunked arrays.  Public API.
 *
 * Build a deferred graph of chunked arrays (FITS images, caller memory,
 * reprojections of them onto a target WCS), then ask for a region of a node:
 * only the chunks that meet the region run, and they read only the input
 * windows they need.
 *
 * Conventions
 * - Functions return 0 or a negative TSR_E* code; the message is in
 *   tsr_errmsg(ctx).  Node constructors return NULL on error and keep the
 *   first error on the graph (tsr_graph_status / tsr_graph_errmsg); once a
 *   graph has an error every later constructor returns NULL at once, so a
 *   caller may build a whole graph and check once.  Such a graph is not
 *   the one the caller described, so running any of its nodes, also one
 *   built fine before the error, fails with TSR_ESTATE (tsr_compute,
 *   tsr_compute_planes, tsr_write_fits, tsr_write_png,
 *   tsr_coadd_match_background): a caller that skipped the check cannot
 *   take a half-built graph's results for the whole.  Build a new graph
 *   (or keep the good part in a graph of its own) to go on.
 * - Regions are zero-based, half-open boxes in FITS axis order: axis 0 is
 *   NAXIS1 (x, fastest varying).  Arrays in memory are C-contiguous with
 *   axis 0 fastest, exactly as FITS stores them.
 * - Every _free accepts NULL.  Constructors other than node constructors
 *   return 0 or a negative code and set an out-parameter (NULL on error).
 *   Graphs, tsr_wcs_t and tsr_cache_t belong to the context they are made
 *   with and are freed before it (tsr_ctx_free checks).  Each function says
 *   who owns its arguments and results: inputs are borrowed for the call
 *   (or copied) unless the name says _ref.
 * - Option structs start from their _INIT macro; a zeroed tsr_run_opts_t is
 *   also the default (serial).
 *
 * Threads
 * - Any number of threads may call tsr_compute, tsr_write_fits and
 *   tsr_write_png at the same time, on the same graph or on different ones,
 *   of one context or of several: each call is a run of its own, with its
 *   own per-run state (wcslib copies, open files, scratch), and its error
 *   message stays with the calling thread (tsr_errmsg).  A built graph is
 *   only read by runs.
 * - A graph is built (node constructors, tsr_graph_free) by one thread at a
 *   time, and not while any run uses it.  Contexts, WCS handles and caches
 *   may be shared; tsr_ctx_free, tsr_wcs_free and tsr_cache_close must come
 *   after every call that uses them has returned.
 * - The allocator hooks, map_blocks callbacks and progress callbacks may be
 *   called from several threads at once (progress never twice at once for
 *   one run): make them thread-safe when threads are used.
 * - An MPI run (mpi_comm) is the only one in its process at a time.
 * - The process pool forks the calling process: with other threads running
 *   at the time, prefer the threads executor (TSR_EXECUTOR_THREADS).
 */
#ifndef TESSERA_H
#define TESSERA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "tsr_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TSR_BUILDING_LIBRARY) && defined(__GNUC__)
#define TSR_API __attribute__((visibility("default")))
#else
#define TSR_API
#endif

#define TSR_VERSION_MAJOR 0
#define TSR_VERSION_MINOR 1
#define TSR_VERSION_PATCH 0
/** @return the library's version, "MAJOR.MINOR.PATCH" (a static string). */
TSR_API const char *tsr_version_string(void);
/** The versions of the libraries tessera runs with, as loaded: "libuv 1.44.2,
 *  wcslib 7.12, cfitsio 4.2, ...".  @return a static string (the library's). */
TSR_API const char *tsr_library_versions(void);

/* ------------------------------------------------------------------ */
/* Handles                                                            */

typedef struct tsr_ctx_s   tsr_ctx_t;   /* allocator, options, each thread's last error */
typedef struct tsr_graph_s tsr_graph_t; /* owns every node created in it */
typedef struct tsr_node_s  tsr_node_t;  /* borrowed from its graph; never freed alone */
typedef struct tsr_wcs_s   tsr_wcs_t;   /* a WCS header plus the pixel shape it describes */
typedef struct tsr_cache_s tsr_cache_t; /* an on-disk chunk cache; outlives the runs that use it */

/* ------------------------------------------------------------------ */
/* Errors                                                             */

typedef enum {
#define TSR__ERR_ENUM(name, val, text) TSR_##name = (val),
  TSR_ERRNO_MAP(TSR__ERR_ENUM)
#undef TSR__ERR_ENUM
  TSR_OK = 0
} tsr_errno_t;

/** Short symbolic name ("EINVAL") and generic text of an error code; any
 *  thread.  @return a static string; "UNKNOWN" / "unknown error" for a code
 *  that is not a TSR_E* value. */
TSR_API const char *tsr_err_name(int err);
TSR_API const char *tsr_strerror(int err);

/* ------------------------------------------------------------------ */
/* Context                                                            */

/** Allocator hooks (zstd's customMem, Lua's lua_Alloc).  All three functions
 *  or none.  free(ud, NULL) must be a no-op. */
typedef struct {
  void *(*malloc_fn)(void *ud, size_t size);
  void *(*realloc_fn)(void *ud, void *ptr, size_t size);
  void  (*free_fn)(void *ud, void *ptr);
  void *ud;
} tsr_alloc_t;

typedef struct {
  tsr_alloc_t alloc;     /* zeroed = libc malloc/realloc/free */
} tsr_ctx_options_t;

/** tsr_ctx_new() : create a context; `opts` may be NULL for defaults.
 *  @return 0 and sets *out, or TSR_ENOMEM / TSR_EINVAL with *out = NULL.
 *  Free with tsr_ctx_free().  Any thread. */
TSR_API int  tsr_ctx_new(tsr_ctx_t **out, const tsr_ctx_options_t *opts);
/** Free a context (NULL is a no-op).  Every graph, tsr_wcs_t and
 *  tsr_cache_t made with it belongs to it (they allocate and free through
 *  its allocator) and must be freed first, in any order; the context counts
 *  them.  Freeing it with any alive is an API misuse: an assertion fails
 *  (kept with -Db_ndebug=false), and with assertions compiled out nothing
 *  is freed (the context leaks rather than leave them dangling).  Call it
 *  after every other call on ctx has returned.  @return nothing. */
TSR_API void tsr_ctx_free(tsr_ctx_t *ctx);
/** @return the message of the calling thread's last failed call on `ctx`
 *  ("" if none; "no context" for NULL): calls of other threads never change
 *  it.  Owned by the library; valid until this thread's next call on ctx.
 *  A thread keeps the messages of the last 8 contexts it used. */
TSR_API const char *tsr_errmsg(const tsr_ctx_t *ctx);

/* ------------------------------------------------------------------ */
/* Arrays: dtypes and regions                                         */

#define TSR_MAX_DIMS 4

typedef enum {
  TSR_F32 = 1,
  TSR_F64 = 2
} tsr_dtype_t;

/** @return the bytes per element of `dt` (4 or 8), 0 for an unknown value;
 *  and its name ("float32", "float64"; a static string, "unknown" else). */
TSR_API size_t tsr_dtype_size(tsr_dtype_t dt);
TSR_API const char *tsr_dtype_name(tsr_dtype_t dt);

/** A box of index ranges: axis a covers [start[a], stop[a]).  Axes past a
 *  node's ndim must be [0, 1). */
typedef struct {
  int64_t start[TSR_MAX_DIMS];
  int64_t stop[TSR_MAX_DIMS];
} tsr_region_t;

/** @return the whole extent of `node` (borrowed), by value. */
TSR_API tsr_region_t tsr_region_of(const tsr_node_t *node);
/** @return the number of elements in `r` (0 if any axis is empty, INT64_MAX
 *  if the count does not fit in int64_t). */
TSR_API int64_t tsr_region_size(const tsr_region_t *r);

/* ------------------------------------------------------------------ */
/* WCS headers and targets                                            */

/** A tsr_wcs_t holds FITS header cards that describe a world coordinate
 *  system (as read, verbatim), the number of axes and the pixel shape.  It is
 *  both the WCS of an image and a reprojection target.  Every constructor
 *  validates the header with wcslib (unknown projections, singular matrices,
 *  missing NAXISn are errors, with the offending keyword in the message). */

/** Read a target from a header text file (`.hdr`: one card per line, as
 *  written by astropy's Header.totextfile or Montage; NAXISn required).
 *  @return 0 and a new *out (free with tsr_wcs_free), or TSR_EIO / TSR_EWCS /
 *  TSR_EINVAL / TSR_ENOMEM with *out = NULL and a message naming the file. */
TSR_API int tsr_wcs_read_hdr(tsr_ctx_t *ctx, const char *path, tsr_wcs_t **out);
/** Write the cards of `wcs` to a header text file (one card per line, no END,
 *  as astropy's Header.totextfile), which tsr_wcs_read_hdr reads back.  The
 *  file is written and replaced as tsr_write_fits writes its outputs.
 *  @return 0, or TSR_EIO / TSR_EINVAL / TSR_ENOMEM with the message on ctx. */
TSR_API int tsr_wcs_write_hdr(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, const char *path);
/** Take the WCS and shape of an image HDU of a FITS file; `hdu` is 1-based,
 *  0 = the first HDU with image data.  @return 0 and a new *out (free with
 *  tsr_wcs_free), or a negative code (TSR_EIO, TSR_EWCS, TSR_EINVAL,
 *  TSR_ENOMEM) with *out = NULL and a message naming the file. */
TSR_API int tsr_wcs_read_fits(tsr_ctx_t *ctx, const char *path, int hdu, tsr_wcs_t **out);
/** The same, the HDU chosen by number or name (tsr_hdu_t, below; `which`
 *  borrowed for the call, NULL = the first image with data).  @return as
 *  tsr_wcs_read_fits. */
struct tsr_hdu_s;
TSR_API int tsr_wcs_read_fits_hdu(tsr_ctx_t *ctx, const char *path, const struct tsr_hdu_s *which,
                                  tsr_wcs_t **out);
/** Parse header text of `len` bytes: either 80-column cards back to back
 *  (a FITS header block) or lines separated by '\n'.  `what` names the text in
 *  messages (e.g. a file name).  NAXISn are required when `need_shape`.
 *  `text` and `what` are borrowed for the call.  @return 0 and a new *out
 *  (free with tsr_wcs_free), or TSR_EWCS / TSR_EINVAL / TSR_ENOMEM with
 *  *out = NULL and a message naming `what` and the offending keyword. */
TSR_API int tsr_wcs_parse(tsr_ctx_t *ctx, const char *text, size_t len,
                          const char *what, int need_shape, tsr_wcs_t **out);
/** Deep copy of `wcs` (borrowed; not NULL), made with ctx.
 *  @return 0 and a new *out (the caller's; free with tsr_wcs_free), or
 *  TSR_ENOMEM with *out = NULL and the message on ctx. */
TSR_API int tsr_wcs_copy(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, tsr_wcs_t **out);
/** Free a WCS handle made by a tsr_wcs_* constructor or tsr_optimal_wcs
 *  (never one a node owns: tsr_node_wcs).  Accepts NULL.  Must come before
 *  tsr_ctx_free of the context it was made with.  @return nothing. */
TSR_API void tsr_wcs_free(tsr_wcs_t *wcs);
/** @return the number of pixel axes (NAXIS), and the length of axis a
 *  (0-based; 1 past NAXIS, 0 where the header gave none). */
TSR_API int     tsr_wcs_naxis(const tsr_wcs_t *wcs);
TSR_API int64_t tsr_wcs_shape(const tsr_wcs_t *wcs, int axis);
/** @return the header cards, `*ncards` (if not NULL) cards of 80
 *  characters back to back, without END; owned by wcs, valid until it is
 *  freed. */
TSR_API const char *tsr_wcs_cards(const tsr_wcs_t *wcs, int *ncards);
/** A one-line human summary ("TAN ICRS, 2048 x 2048, 1.000 arcsec/px at
 *  RA 10.68470 Dec 41.26875") into buf.  @return 0 or a negative code. */
TSR_API int tsr_wcs_describe(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, char *buf, size_t cap);
/** Pixel -> world of the celestial axes for `n` points (0-based pixels), in
 *  degrees in the WCS's own frame; NaN where undefined.  The arrays are
 *  the caller's (x, y read; lon, lat written, n each).
 *  @return 0, or a negative code (TSR_EWCS, TSR_ENOMEM) with the message on
 *  ctx. */
TSR_API int tsr_wcs_pix2world(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, size_t n,
                              const double *x, const double *y, double *lon, double *lat);

/* ------------------------------------------------------------------ */
/* Graphs and nodes                                                   */

/** Create an empty graph, which belongs to ctx (free it before
 *  tsr_ctx_free).  @return 0 and *out (the caller's; free with
 *  tsr_graph_free), or TSR_ENOMEM with *out = NULL. */
TSR_API int  tsr_graph_new(tsr_ctx_t *ctx, tsr_graph_t **out);
/** Free the graph and all its nodes (and their WCS).  Accepts NULL.  Not
 *  while a run uses it.  @return nothing. */
TSR_API void tsr_graph_free(tsr_graph_t *g);
/** @return the first error met while building (0 if none), and its
 *  message ("" if none; owned by g, valid until it is freed). */
TSR_API int         tsr_graph_status(const tsr_graph_t *g);
TSR_API const char *tsr_graph_errmsg(const tsr_graph_t *g);

/** Node properties.  Shapes are in FITS axis order.  @return the number of
 *  axes, the length and chunk length of axis `axis` (1 past ndim), the
 *  dtype. */
TSR_API int         tsr_node_ndim(const tsr_node_t *n);
TSR_API int64_t     tsr_node_shape(const tsr_node_t *n, int axis);
TSR_API int64_t     tsr_node_chunk(const tsr_node_t *n, int axis);
TSR_API tsr_dtype_t tsr_node_dtype(const tsr_node_t *n);
/** @return the node's WCS (owned by the node: never freed by the caller)
 *  or NULL. */
TSR_API const tsr_wcs_t *tsr_node_wcs(const tsr_node_t *n);
/** @return a short name for messages, owned by the node:
 *  "reproject_interp#3", "fits#1(\"a.fits\")". */
TSR_API const char *tsr_node_name(const tsr_node_t *n);
/** Write the node's 128-bit content key into the caller's `key`: equal
 *  keys mean equal data.  @return nothing. */
TSR_API void tsr_node_key(const tsr_node_t *n, uint8_t key[16]);

/** A lazy FITS image.  `hdu` is 1-based, 0 = the first HDU with image data.
 *  Any BITPIX is read as float (float64 for BITPIX -64 and 64/32 integers with
 *  scaling, else float32), with BSCALE/BZERO applied and BLANK and non-finite
 *  values made NaN.  Only the header is read now; data are read by subset
 *  when a computation needs them.  The file must not change while the graph
 *  is used (its identity is part of the node key).  `path` is copied.
 *  @return the node (owned by g), or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_source_fits(tsr_graph_t *g, const char *path, int hdu);

/** Which HDU of a FITS file: by number (extname NULL), or by name and
 *  version.  Numbers count from 1 as cfitsio does (the primary HDU is 1, the
 *  first extension 2); astropy and the Python package count from 0. */
typedef struct tsr_hdu_s {
  int hdu;               /* 1-based; 0 = the first image HDU with data; used when extname is NULL */
  const char *extname;   /* EXTNAME (or HDUNAME) to match, case aside, trailing blanks ignored,
                            as cfitsio's fits_movnam_hdu; the first HDU that matches */
  int extver;            /* with extname: EXTVER to match (an HDU without one is version 1);
                            0 = any version */
} tsr_hdu_t;

#define TSR_HDU_INIT { 0, NULL, 0 }

/** tsr_source_fits with the HDU chosen by `which` (NULL = the first image
 *  with data).  A name that no HDU has is an error listing the names there
 *  are; a named HDU that is not an image is an error too.  `path` and
 *  `which` are copied.  @return the node (owned by g), or NULL with the
 *  error on the graph. */
TSR_API tsr_node_t *tsr_source_fits_hdu(tsr_graph_t *g, const char *path, const tsr_hdu_t *which);

/** What an image HDU stores and how tsr_source_fits reads it. */
typedef struct {
  int     hdu;             /* 1-based, resolved */
  char    extname[72];     /* "" if none */
  int     extver;          /* 1 if none */
  int     naxis;
  int64_t shape[TSR_MAX_DIMS];
  int     bitpix;          /* as stored (the image's, ZBITPIX, for a tile-compressed one) */
  double  bscale, bzero;   /* 1 and 0 when absent */
  int     has_blank;       /* BLANK present (integer images): its value in blank */
  long long blank;
  char    compression[72]; /* ZCMPTYPE of a tile-compressed image ("RICE_1", ...), else "" */
  int     gzip;            /* the file is gzip-compressed (read through cfitsio) */
  tsr_dtype_t dtype;       /* the node's dtype: float64 for BITPIX -64 and 32/64-bit integers,
                              else float32 */
} tsr_fits_info_t;

/** Fill *out for the image HDU `which` names (NULL = the first with data).
 *  @return 0, or a negative code with the message on ctx (as tsr_source_fits). */
TSR_API int tsr_fits_info(tsr_ctx_t *ctx, const char *path, const tsr_hdu_t *which,
                          tsr_fits_info_t *out);

/** Caller memory as a node.  `data` holds prod(shape) values of `dtype`,
 *  axis 0 fastest.  `wcs` may be NULL; it is copied.  tsr_source_buffer copies
 *  the data; tsr_source_buffer_ref borrows it, and the memory must outlive the
 *  graph.  @return the node (owned by g), or NULL with the error on the
 *  graph. */
TSR_API tsr_node_t *tsr_source_buffer(tsr_graph_t *g, tsr_dtype_t dtype, int ndim,
                                      const int64_t *shape, const void *data,
                                      const tsr_wcs_t *wcs);
TSR_API tsr_node_t *tsr_source_buffer_ref(tsr_graph_t *g, tsr_dtype_t dtype, int ndim,
                                          const int64_t *shape, const void *data,
                                          const tsr_wcs_t *wcs);

/* ------------------------------------------------------------------ */
/* Reprojection                                                       */

/** Interpolation orders.  0-3 are reproject's (scipy's spline orders);
 *  the Lanczos kernels are SWarp's RESAMPLING_TYPE LANCZOS2/3/4: the
 *  windowed sinc L(d) = sinc(d) sinc(d / a) over the 2a x 2a input pixels
 *  around the point, the weights of each axis divided by their sum (so a
 *  constant image stays constant), an offset within 1e-5 pixel of a pixel
 *  centre taking that pixel alone.  As in SWarp, an output is NaN (footprint
 *  0) when its 2a x 2a support leaves the input or holds a NaN. */
typedef enum {
  TSR_ORDER_NEAREST   = 0,
  TSR_ORDER_BILINEAR  = 1,
  TSR_ORDER_BIQUADRATIC = 2,
  TSR_ORDER_BICUBIC   = 3,
  TSR_ORDER_LANCZOS2  = 4,  /* a = 2: 4 x 4 pixels */
  TSR_ORDER_LANCZOS3  = 5,  /* a = 3: 6 x 6 pixels (SWarp's default) */
  TSR_ORDER_LANCZOS4  = 6   /* a = 4: 8 x 8 pixels */
} tsr_order_t;

typedef struct {
  tsr_order_t order;          /* default bilinear */
  double  mapping_tolerance;  /* pixels; 0 = exact transform at every pixel; default 1e-4 */
  int     roundtrip;          /* 1 = NaN where output->input->output moves > 1 px (reproject's default) */
  int     dtype;              /* a tsr_dtype_t, or 0 = float32, or float64 when the input is
                                 float64 (an int: 0 is not a tsr_dtype_t value) */
  int64_t block[2];           /* output chunk shape (x, y); 0 = default (256 x 256; 512 x 512 for inputs over 256 MiB) */
} tsr_interp_opts_t;

#define TSR_INTERP_OPTS_INIT { TSR_ORDER_BILINEAR, 1e-4, 1, 0, { 0, 0 } }

/** Parse "nearest-neighbor" ("nearest"), "bilinear", "biquadratic",
 *  "bicubic" (or "0".."3"), "lanczos2", "lanczos3", "lanczos4" (case
 *  aside, as SWarp's LANCZOS3).  @return the order or -1; tsr_order_name:
 *  the name of an order (a static string, "unknown" for another value). */
TSR_API int tsr_order_parse(const char *s);
TSR_API const char *tsr_order_name(tsr_order_t order);

/** Reproject `src` onto `target` by interpolation (reproject_interp).
 *  The celestial axes of src are mapped; extra leading axes (cubes) are
 *  broadcast: the target gains them.  Two linear axes (no celestial pair:
 *  CTYPE '' or names wcslib does not know, as astropy's WCS(naxis=2)) map
 *  onto two linear axes in the same units, through their world values; a
 *  linear WCS never maps to a celestial one.  `target` is copied; `opts` may be NULL
 *  for defaults.  @return the data node (its footprint is tsr_footprint()),
 *  or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_reproject_interp(tsr_graph_t *g, tsr_node_t *src,
                                         const tsr_wcs_t *target,
                                         const tsr_interp_opts_t *opts);

/* Adaptive resampling (reproject_adaptive, DeForest 2004). */
typedef enum { TSR_KERNEL_GAUSSIAN = 0, TSR_KERNEL_HANN = 1 } tsr_kernel_t;

typedef enum {
  TSR_BOUNDARY_STRICT = 0,           /* NaN if any sample falls outside the input */
  TSR_BOUNDARY_CONSTANT = 1,         /* outside samples = fill value; NaN if none inside */
  TSR_BOUNDARY_GRID_CONSTANT = 2,    /* as constant, but all outside gives the fill value */
  TSR_BOUNDARY_IGNORE = 3,           /* drop outside samples; NaN if none inside */
  TSR_BOUNDARY_IGNORE_THRESHOLD = 4, /* ignore, unless the outside weight fraction > threshold */
  TSR_BOUNDARY_NEAREST = 5           /* outside samples take the nearest input pixel */
} tsr_boundary_t;

typedef enum {
  TSR_BAD_STRICT = 0,     /* NaN/inf inputs propagate */
  TSR_BAD_IGNORE = 1,     /* NaN/inf samples get no weight */
  TSR_BAD_CONSTANT = 2    /* NaN/inf samples take bad_fill_value */
} tsr_bad_value_t;

typedef struct {
  tsr_kernel_t kernel;                /* default gaussian */
  double  kernel_width;               /* Gaussian +-1 sigma, output pixels; default 1.3 */
  double  sample_region_width;        /* Gaussian truncation, output pixels; default 4 */
  tsr_boundary_t boundary_mode;       /* default strict */
  double  boundary_fill_value;        /* constant modes; default 0 */
  double  boundary_ignore_threshold;  /* ignore_threshold mode, [0, 1]; default 0.5 */
  int     x_cyclic, y_cyclic;         /* wrap that input axis (overrides boundary_mode) */
  int     center_jacobian;            /* 1 = Jacobian from exact transforms at +-0.5 px */
  int     despike_jacobian;           /* 1 = replace Jacobian spikes (all-sky wrap points) */
  int     conserve_flux;              /* 1 = multiply by |det J| (flux, not surface brightness) */
  tsr_bad_value_t bad_value_mode;     /* default strict */
  double  bad_fill_value;             /* bad_value_mode constant; default 0 */
  int     roundtrip;                  /* 1 = NaN where output->input->output moves > 1 px */
  double  mapping_tolerance;          /* pixels; 0 = exact transform at every pixel; default 1e-4 */
  int     dtype;                      /* as tsr_interp_opts_t.dtype (0 = by the input) */
  int64_t block[2];                   /* output chunk shape (x, y); 0 = default (256 x 256; 512 x 512 for inputs over 256 MiB) */
} tsr_adaptive_opts_t;

#define TSR_ADAPTIVE_OPTS_INIT                                                         \
  { TSR_KERNEL_GAUSSIAN, 1.3, 4.0, TSR_BOUNDARY_STRICT, 0.0, 0.5, 0, 0, 0, 0, 0,      \
    TSR_BAD_STRICT, 0.0, 1, 1e-4, 0, { 0, 0 } }

/** Parse "gaussian", "hann"/"hanning"; "strict", "constant", "grid-constant",
 *  "ignore", "ignore_threshold", "nearest"; "strict", "ignore", "constant"
 *  (case-insensitive).  @return the enum value or -1. */
TSR_API int tsr_kernel_parse(const char *s);
TSR_API int tsr_boundary_parse(const char *s);
TSR_API int tsr_bad_value_parse(const char *s);

/** Reproject `src` onto `target` by adaptive, anti-aliased resampling
 *  (reproject_adaptive): per output pixel the Jacobian of the output->input
 *  mapping, its singular values padded to at least 1 (magnitudes; the sign
 *  is kept, unlike reproject, so a flipped and down-sampled axis still
 *  averages), and a Gaussian or Hann kernel sampled over the input pixels of
 *  the resulting region.  Cubes and linear axes as for tsr_reproject_interp.
 *  Every block size gives the same bits.  `target` is copied; `opts` may be
 *  NULL for defaults.  @return the data node (footprint: tsr_footprint(), 1
 *  where the output is not NaN), or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_reproject_adaptive(tsr_graph_t *g, tsr_node_t *src,
                                           const tsr_wcs_t *target,
                                           const tsr_adaptive_opts_t *opts);

/* Exact overlap (reproject_exact). */
typedef enum {
  TSR_NAN_PROPAGATE = 0,  /* an output touching a NaN input is NaN (reproject) */
  TSR_NAN_IGNORE = 1      /* NaN inputs get no weight: mean over the finite ones */
} tsr_nan_mode_t;

typedef struct {
  tsr_nan_mode_t nan_mode; /* default propagate */
  int     dtype;          /* as tsr_interp_opts_t.dtype (0 = by the input) */
  int64_t block[2];       /* output chunk shape (x, y); 0 = default (256 x 256; 512 x 512 for inputs over 256 MiB) */
} tsr_exact_opts_t;

#define TSR_EXACT_OPTS_INIT { TSR_NAN_PROPAGATE, 0, { 0, 0 } }

/** Reproject `src` onto `target` by exact pixel overlap (reproject_exact):
 *  each output pixel is the mean of the input pixels it covers weighted by
 *  the fraction of its solid angle each covers (pixels are the spherical
 *  quadrilaterals between their corners); surface brightness is conserved.
 *  Both WCSs must be celestial (linear axes have no area on the sphere).
 *  Small pixels (under ~20 arcsec) are clipped in a plane, large ones on the
 *  sphere.  Cubes are broadcast as for tsr_reproject_interp.  Every block
 *  size gives the same result.  `target` is copied; `opts` may be NULL for
 *  defaults.  @return the data node (footprint: tsr_footprint(), the summed
 *  overlap fractions in [0, 1]), or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_reproject_exact(tsr_graph_t *g, tsr_node_t *src,
                                        const tsr_wcs_t *target,
                                        const tsr_exact_opts_t *opts);

/** The footprint plane of a reprojection or mosaic node (1 where the output
 *  is finite for interp), computed together with the data.  @return the
 *  plane's node (owned by g), or NULL with the error on the graph (also
 *  when `n` has no footprint). */
TSR_API tsr_node_t *tsr_footprint(tsr_graph_t *g, tsr_node_t *n);

/* ------------------------------------------------------------------ */
/* Drizzle and blot                                                   */
/* Fruchter & Hook's drizzle as STScI's drizzle 1.13 (python3-drizzle) */
/* computes it: each input pixel, shrunk by pixfrac, is dropped onto   */
/* the output grid through a kernel, and every output pixel keeps the  */
/* weighted mean of the drops that land in it (drizzle's running       */
/* update, in float32, drops in input order) and their summed weight.  */

typedef enum {
  TSR_DRIZZLE_SQUARE = 0,   /* the drop's quadrilateral, exact overlap areas (drizzle's default) */
  TSR_DRIZZLE_POINT,        /* all flux into the output pixel under the input pixel's centre */
  TSR_DRIZZLE_TURBO,        /* an axis-aligned square drop (fast, approximate) */
  TSR_DRIZZLE_GAUSSIAN,     /* a Gaussian of FWHM pixfrac (not flux conserving) */
  TSR_DRIZZLE_LANCZOS2,     /* a Lanczos2 drop (not flux conserving) */
  TSR_DRIZZLE_LANCZOS3,     /* a Lanczos3 drop (not flux conserving) */
  TSR_DRIZZLE_TOPHAT        /* a disc of diameter pixfrac, weight 1 inside (not flux conserving) */
} tsr_drizzle_kernel_t;

/* How each input's weights are scaled (drizzle's wt_scl). */
typedef enum {
  TSR_WT_SCL_EXPTIME = 0,   /* by its exposure time (drizzle's default) */
  TSR_WT_SCL_EXPSQ,         /* by its exposure time squared */
  TSR_WT_SCL_VALUE          /* by wt_scl_value, the same for every input */
} tsr_wt_scl_t;

typedef struct {
  tsr_drizzle_kernel_t kernel; /* default square */
  double  pixfrac;          /* linear size of a drop in input pixels, (0, 10]; default 1;
                               <= 0.001 turns any kernel into point, as drizzle does */
  const double *expin;      /* NULL (1 s each), or one exposure time per input, > 0 s; copied */
  int     in_units_counts;  /* 0: inputs are counts per second (cps, the default); 1: counts,
                               divided by their expin first */
  int     out_units_counts; /* 0: the output is in cps; 1: counts, multiplied by the summed
                               expin (drizzle's write(out_units='counts')) */
  tsr_wt_scl_t wt_scl;      /* default exptime */
  double  wt_scl_value;     /* TSR_WT_SCL_VALUE: the factor, > 0; default 1 */
  double  fillval;          /* value of output pixels no drop reached (weight 0); default 0,
                               drizzle's INDEF (pixels left as they were: 0); NaN allowed */
  double  mapping_tolerance;/* input pixel -> output pixel mapping, output pixels; 0 = exact
                               transforms at every pixel (as drizzle's pixmap); default 1e-5 */
  int64_t block[2];         /* output chunk shape (x, y); 0 = 256 x 256 */
  /* SWarp's weights and data quality (see tsr_drizzle). */
  int     weight_type;      /* -1 (default): the weight maps are drizzle's inwht, used as
                               given; or a tsr_weight_type_t: each map (BACKGROUND: each
                               image itself) read as SWarp reads it (tsr_variance_map), the
                               pixel's weight 1 / its variance, 0 where bad */
  const double *weight_thresh; /* NULL, or one WEIGHT_THRESH per input (NaN = the type's
                               default, as tsr_weight_opts_t.thresh); copied */
  int64_t back_size;        /* BACKGROUND: mesh size in pixels; 0 = 128 */
  tsr_node_t *const *dq;    /* NULL, or n data-quality images or masks (each may be NULL), each
                               of its input's shape; borrowed for the call */
  uint32_t dq_bits;         /* with dq: a pixel with any of these bits set drops nothing;
                               0 = any nonzero value */
} tsr_drizzle_opts_t;

#define TSR_DRIZZLE_OPTS_INIT                                                            \
  { TSR_DRIZZLE_SQUARE, 1.0, NULL, 0, 0, TSR_WT_SCL_EXPTIME, 1.0, 0.0, 1e-5, { 0, 0 },  \
    -1, NULL, 0, NULL, 0 }

/** Parse drizzle's kernel names ("square", "point", "turbo", "gaussian",
 *  "lanczos2", "lanczos3", "tophat").  @return the kernel or -1;
 *  tsr_drizzle_kernel_name: the name of a kernel (a static string,
 *  "unknown" for another value). */
TSR_API int tsr_drizzle_kernel_parse(const char *s);
TSR_API const char *tsr_drizzle_kernel_name(tsr_drizzle_kernel_t k);

/** Drizzle the `n` 2-D images `inputs` (each with a celestial WCS, SIP and
 *  other distortions included) onto `target`, in input order.  `weights`
 *  is NULL or n nodes (each may be NULL = weight 1), each of its image's
 *  shape: drizzle's input weight maps (inwht); a pixel of weight 0 or NaN,
 *  or whose value is NaN, drops nothing.  With opts.weight_type >= 0 the
 *  maps are SWarp's (every input needs one, except for BACKGROUND, which
 *  takes none): a pixel's weight is 1 / the variance its map value stands
 *  for (tsr_variance_map's conversion and WEIGHT_THRESH), 0 where bad.
 *  With opts.dq, a pixel whose DQ value has any of opts.dq_bits set (any
 *  nonzero value for 0) drops nothing.  Each input's weights are scaled
 *  by wt_scl, and its values by (output pixel scale / input pixel scale)^2
 *  as drizzle's `scale` does.  The result is float32: plane 0 the science
 *  image, plane 1 (tsr_footprint) drizzle's output weight image (the
 *  summed drop weights; 0 where nothing landed, where the science image
 *  holds fillval).  Context images: tsr_drizzle_context; the variance and
 *  the output DQ: tsr_drizzle_product.  Lazy by output
 *  block: a block reads of each input only the window whose drops can
 *  land in it (its edges mapped back into the input, grown by the kernel's
 *  reach), and adds the drops in input order, pixels in row order, so a
 *  region equals the same slice of the whole output and every block size
 *  and executor gives the same bits.  `target` is copied; nodes are
 *  borrowed; `opts` may be NULL.  @return the node (owned by g), or NULL
 *  with the error on the graph. */
TSR_API tsr_node_t *tsr_drizzle(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                                tsr_node_t *const *weights, const tsr_wcs_t *target,
                                const tsr_drizzle_opts_t *opts);

/** What else a drizzle gives besides its science image (tsr_drizzle_product). */
typedef enum {
  TSR_DRIZZLE_OUT_SCIENCE = 0, /* the science image (the node itself) */
  TSR_DRIZZLE_OUT_WEIGHT,   /* drizzle's weight image (its footprint plane) */
  TSR_DRIZZLE_OUT_VARIANCE, /* the variance of the science image: with w_i the weight of drop i
                               on the pixel (pixel weight x wt_scl x overlap) and var_i the
                               variance of its value (1 / the weight map's value for
                               drizzle's inwht and MAP_WEIGHT, the map's variance for
                               MAP_VARIANCE, MAP_RMS and BACKGROUND; 1 without a map; times
                               the value's scale^4 and 1 / expin^2 for counts), sum(w_i^2
                               var_i) / sum(w_i)^2 (times the summed expin^2 for counts out);
                               covariance between output pixels ignored; NaN where no drop
                               landed.  float32 */
  TSR_DRIZZLE_OUT_DQ        /* the OR of the DQ words (opts.dq, as 32-bit unsigned integers)
                               of the input pixels that dropped a nonzero weight on the pixel;
                               0 elsewhere.  float64 */
} tsr_drizzle_product_t;

/** The `what` product of drizzle node `drz` (a tsr_drizzle node,
 *  borrowed): a node of the same grid, inputs and options that replays the
 *  same drops block by block, so a region and every block size give the
 *  same bits (TSR_DRIZZLE_OUT_SCIENCE gives `drz` itself, ..._WEIGHT its
 *  footprint plane).  @return the node (owned by g), or NULL with the error
 *  on the graph (not a drizzle node; TSR_DRIZZLE_OUT_DQ without opts.dq). */
TSR_API tsr_node_t *tsr_drizzle_product(tsr_graph_t *g, tsr_node_t *drz,
                                        tsr_drizzle_product_t what);

/** The context planes of drizzle node `drz` (borrowed).  @return their
 *  number (one 32-bit plane per 32 inputs), 0 if `drz` is not a tsr_drizzle
 *  node. */
TSR_API int tsr_drizzle_context_planes(const tsr_node_t *drz);

/** Context plane `plane` of drizzle node `drz` (borrowed) as a node of
 *  its own, computed lazily like it: bit b of a pixel is set when input
 *  32 * plane + b dropped a positive weight on it (drizzle's CTX image).
 *  float64 holding drizzle's int32 values exactly (bit 31 makes the value
 *  negative, as in drizzle's int32 image).  @return the node (owned by g),
 *  or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_drizzle_context(tsr_graph_t *g, tsr_node_t *drz, int plane);

/** Blot interpolants (drizzle's interp names). */
typedef enum {
  TSR_BLOT_NEAREST = 0,   /* "nearest" */
  TSR_BLOT_LINEAR,        /* "linear" */
  TSR_BLOT_POLY3,         /* "poly3": IRAF's cubic polynomial (Everett) */
  TSR_BLOT_POLY5,         /* "poly5": quintic (drizzle's default) */
  TSR_BLOT_SINC,          /* "sinc": tapered sinc over 15 x 15 pixels, scaled by sinscl */
  TSR_BLOT_LAN3,          /* "lan3": Lanczos3, 7 x 7 pixels */
  TSR_BLOT_LAN5           /* "lan5": Lanczos5 lookup table over drizzle's 7 x 7 box */
} tsr_blot_interp_t;

typedef struct {
  tsr_blot_interp_t interp; /* default poly5 */
  double  sinscl;           /* sinc's scale; default 1 */
  double  exptime;          /* values are multiplied by it (drizzle's ef); default 1 */
  double  misval;           /* value off the source image; default 0 */
  double  mapping_tolerance;/* pixels; 0 = exact transforms; default 1e-5 */
  int64_t block[2];         /* output chunk shape (x, y); 0 = 256 x 256 */
} tsr_blot_opts_t;

#define TSR_BLOT_OPTS_INIT { TSR_BLOT_POLY5, 1.0, 1.0, 0.0, 1e-5, { 0, 0 } }

/** Parse "nearest", "linear", "poly3", "poly5", "sinc", "lan3", "lan5".
 *  @return the interpolant or -1; tsr_blot_interp_name: its name (static,
 *  "unknown" for another value). */
TSR_API int tsr_blot_interp_parse(const char *s);
TSR_API const char *tsr_blot_interp_name(tsr_blot_interp_t i);

/** Blot (drizzle's reverse): 2-D image `src` (a drizzled image, in cps,
 *  with its WCS) interpolated onto `target` (an input's grid) at each
 *  target pixel centre mapped into src, times exptime / (src pixel scale /
 *  target pixel scale)^2; misval where the centre falls off src.  float32,
 *  one plane.  Every block size gives the same bits.  `target` is copied,
 *  `src` borrowed, `opts` may be NULL.  @return the node (owned by g), or
 *  NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_blot(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                             const tsr_blot_opts_t *opts);

/* ------------------------------------------------------------------ */
/* Running                                                            */

/** Progress: `done` of `total` tasks finished.  Called in the calling
 *  thread, or on the threads executor in one of its threads (never two at
 *  once). */
typedef void (*tsr_progress_fn)(void *ud, int64_t done, int64_t total);

/** Where the N jobs of a run compute (tsr_run_opts_t.executor). */
typedef enum {
  TSR_EXECUTOR_DEFAULT = 0,       /* threads (measured: 3x the pool into memory, within 5% of it
                                     writing files; see the README), or processes when
                                     task_timeout_s > 0 */
  TSR_EXECUTOR_PROCESSES = 1,     /* forked worker processes: a crashing or hung block costs only
                                     its worker (retries, task_timeout_s) */
  TSR_EXECUTOR_THREADS = 2        /* threads of the calling process: results go straight into
                                     dst or the output band, no copies; no isolation */
} tsr_executor_t;

typedef struct {
  tsr_progress_fn progress;       /* may be NULL */
  void *progress_ud;
  volatile int *cancel;           /* may be NULL; when *cancel becomes non-zero the run stops with TSR_ECANCELED */
  int jobs;                       /* 0 or 1 = serial, in the calling process (the default, so a
                                     zeroed struct runs serially); N > 1 = N threads or worker
                                     processes (see executor), at most 4096; TSR_JOBS_PER_CPU =
                                     one per online CPU */
  int retries;                    /* processes: times a task is retried after its worker dies
                                     (default 2) */
  double task_timeout_s;          /* pool: a task running longer is killed and retried; 0 = none */
  tsr_cache_t *cache;             /* may be NULL; chunks are looked up here before they are
                                     computed and stored after (borrowed; every executor) */
  void *mpi_comm;                 /* NULL, or a pointer to an MPI_Comm (MPI initialised): run
                                     SPMD on its ranks.  Every rank makes the same call on the
                                     same graph; rank 0 hands out blocks, writes files and fills
                                     dst, the others compute (serially) and return the run's
                                     status.  Needs a build with MPI (tsr_has_mpi()). */
  tsr_executor_t executor;        /* for jobs > 1: processes or threads (default: see above) */
  int dst_blank;                  /* tsr_compute, tsr_compute_planes: 1 = each dst already holds
                                     its node's blank, NaN in data and 0 in a footprint, over the
                                     whole region (a promise; see tsr_blank_alloc), so an op that
                                     would first write the blank (reproject_to_healpix) writes only
                                     the pixels that get a value: the pages of a fresh mapping that
                                     nothing maps into are never touched.  Results are the same
                                     either way; 0 (default) = dst may hold anything */
} tsr_run_opts_t;

/* tsr_run_opts_t.jobs: one worker per online CPU. */
#define TSR_JOBS_PER_CPU (-1)

#define TSR_RUN_OPTS_INIT { NULL, NULL, NULL, 1, 2, 0.0, NULL, NULL, TSR_EXECUTOR_DEFAULT, 0 }

/** Compute `region` of `node` (NULL = all) into `dst` (the caller's
 *  memory; g, node, region and opts are borrowed for the call), C-contiguous over the
 *  region with axis 0 fastest, of the node's dtype.  `dst_bytes` must be at
 *  least region size x dtype size.  Only the chunks meeting the region run.
 *  On a pool (opts->jobs > 1) the workers do not map dst while they run
 *  (the results come back through shared memory): a map_blocks callback
 *  must not touch it, which it could not rely on anyway.
 *  @return 0, or a negative code with the message in tsr_errmsg(ctx). */
TSR_API int tsr_compute(tsr_graph_t *g, tsr_node_t *node, const tsr_region_t *region,
                        void *dst, size_t dst_bytes, const tsr_run_opts_t *opts);

/** Compute `region` (NULL = all) of the `n` planes nodes[i] of one
 *  computation (a reprojection or mosaic and its tsr_footprint) together,
 *  each into dsts[i] as tsr_compute would: the op runs once for both.  Every
 *  node must be a plane of nodes[0]'s computation, each at most once.
 *  @return 0, or a negative code with the message in tsr_errmsg(ctx). */
TSR_API int tsr_compute_planes(tsr_graph_t *g, int n, tsr_node_t *const *nodes,
                               const tsr_region_t *region, void *const *dsts, size_t dst_bytes,
                               const tsr_run_opts_t *opts);

/** Memory for a result that is mostly blank (a HEALPix map of one image,
 *  5% of whose pixels get a value): `count` values of `dtype`, each
 *  `value`, page-aligned, that cost only the pages written: a private
 *  copy-on-write mapping of a template file holding the value (Linux memfd;
 *  one per value, made once per process), so a 400 MB NaN array costs a
 *  hundred mappings, not 400 MB of page faults and stores, and reading it
 *  maps the template's pages.  Pages the caller
 *  or tsr_compute writes become its own, as with any memory.  Pass it to
 *  tsr_compute / tsr_compute_planes with tsr_run_opts_t.dst_blank = 1.
 *  Not from the context's allocator (ctx only takes the error message).
 *  Where templates cannot be made the values are written, as a fill would.
 *  @return 0 and *out (free with tsr_blank_free), or TSR_EINVAL (dtype) /
 *  TSR_ENOMEM with *out = NULL.  Any thread. */
TSR_API int tsr_blank_alloc(tsr_ctx_t *ctx, size_t count, tsr_dtype_t dtype, double value,
                            void **out);
/** Unmap memory from tsr_blank_alloc (NULL: nothing).  Any thread. */
TSR_API void tsr_blank_free(void *p);

/** Compute `region` (NULL = all) of `n` nodes of equal shape and write each to
 *  a FITS file, band by band, so memory stays bounded by one band of chunks.
 *  Planes computed together (data and footprint) are computed once.  Each file
 *  is written to an unnamed temporary file (O_TMPFILE; where the filesystem
 *  lacks it, a ".NAME.tsr-PID.tmp" that the next run removes once its
 *  process is gone) in the same directory and renamed when complete, so
 *  neither a failure nor a kill leaves anything.  A path that exists must be
 *  a regular file (devices, FIFOs, sockets and directories are refused
 *  before anything is computed); a symbolic link is followed and the file it
 *  leads to replaced.  An output larger than the space free on its
 *  filesystem is refused at once.  The header is the node's WCS with
 *  NAXISn of the region and CRPIX shifted so the region's WCS stays right.
 *  @return 0 or a negative code. */
TSR_API int tsr_write_fits(tsr_graph_t *g, int n, tsr_node_t *const *nodes,
                           const char *const *paths, const tsr_region_t *region,
                           const tsr_run_opts_t *opts);

/** @return 1 if this library was built with the MPI executor, else 0. */
TSR_API int tsr_has_mpi(void);
/** For programs that do not call MPI themselves (the CLI): MPI_Init if
 *  needed, then *comm = a pointer to MPI_COMM_WORLD (for mpi_comm) and
 *  *rank, *size.  tsr_mpi_finalize() at the end.  @return 0, or TSR_ENOTSUP
 *  without MPI (message in ctx). */
TSR_API int tsr_mpi_init(tsr_ctx_t *ctx, int *argc, char ***argv, void **comm, int *rank,
                         int *size);
/** MPI_Finalize if tsr_mpi_init initialised MPI.  @return nothing. */
TSR_API void tsr_mpi_finalize(void);

/* ------------------------------------------------------------------ */
/* Array ops                                                          */
/* Lazy like everything else: a region of the result computes only the  */
/* blocks and input windows it needs.  Results are float64 when an      */
/* operand is, else float32; the WCS is the first full-shape operand's. */
/* Every constructor borrows its input nodes (nodes of g) and returns   */
/* the new node, owned by g, or NULL with the error on the graph.       */

/** Elementwise functions.  Binary ones broadcast as numpy does (each axis
 *  equal, or 1 in one operand); min and max propagate NaN (np.minimum).
 *  Comparisons give 1 or 0 as numpy's give True or False: any comparison
 *  with NaN is 0, except ne, which is 1. */
typedef enum {
  TSR_ADD = 0, TSR_SUB, TSR_MUL, TSR_DIV, TSR_POW, TSR_MIN, TSR_MAX, /* binary */
  TSR_ABS, TSR_SQRT, TSR_EXP, TSR_LOG, TSR_LOG10, TSR_ISNAN,         /* unary; isnan gives 1 or 0 */
  TSR_LT, TSR_LE, TSR_GT, TSR_GE, TSR_EQ, TSR_NE                     /* binary comparisons */
} tsr_elementwise_t;

/** a OP b, elementwise.  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_binary(tsr_graph_t *g, tsr_elementwise_t op, tsr_node_t *a, tsr_node_t *b);
/** a OP s (tsr_binary_scalar) and s OP a (tsr_scalar_binary); OP a
 *  (tsr_unary).  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_binary_scalar(tsr_graph_t *g, tsr_elementwise_t op, tsr_node_t *a, double s);
TSR_API tsr_node_t *tsr_scalar_binary(tsr_graph_t *g, tsr_elementwise_t op, double s, tsr_node_t *a);
TSR_API tsr_node_t *tsr_unary(tsr_graph_t *g, tsr_elementwise_t op, tsr_node_t *a);
/** Values limited to [lo, hi]; NaN stays NaN.  @return the node, or NULL
 *  with the error on the graph. */
TSR_API tsr_node_t *tsr_clip(tsr_graph_t *g, tsr_node_t *a, double lo, double hi);
/** a where mask is nonzero (NaN counts as nonzero, as in numpy), else b.
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_where(tsr_graph_t *g, tsr_node_t *mask, tsr_node_t *a, tsr_node_t *b);
/** NaN -> nan, +inf -> posinf, -inf -> neginf; a NaN posinf / neginf means
 *  the largest finite value of a's type (numpy's default).  tsr_astype:
 *  `a` converted to `dtype`.  @return the node, or NULL with the error on
 *  the graph. */
TSR_API tsr_node_t *tsr_nan_to_num(tsr_graph_t *g, tsr_node_t *a, double nan, double posinf,
                                   double neginf);
TSR_API tsr_node_t *tsr_astype(tsr_graph_t *g, tsr_node_t *a, tsr_dtype_t dtype);

typedef enum {
  TSR_REDUCE_SUM = 0, TSR_REDUCE_MEAN, TSR_REDUCE_MIN, TSR_REDUCE_MAX, TSR_REDUCE_COUNT,
  TSR_REDUCE_STD          /* population standard deviation (ddof = 0) */
} tsr_reduce_t;

/** Reduce `a` over `axis` (0-based; the axis is removed) or over all axes
 *  (axis = -1: a 1-element result).  With nan_ignoring, NaNs are skipped
 *  (nansum, nanmean, ...; count counts the non-NaN values), else any NaN
 *  makes the result NaN (count counts every value).  An empty nanmean,
 *  nanmin, nanmax or nanstd is NaN, an empty nansum 0.  float64 result.
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_reduce(tsr_graph_t *g, tsr_reduce_t op, tsr_node_t *a, int axis,
                               int nan_ignoring);

/** a[start:stop:step] per axis, arrays of a's number of axes (NULL arrays:
 *  0, the length, 1; steps >= 1).
 *  The WCS follows: CRPIX shifts and each axis's column of CD or PC scales
 *  by its step, so every pixel keeps its world position.  The arrays are
 *  copied.  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_slice(tsr_graph_t *g, tsr_node_t *a, const int64_t *start,
                              const int64_t *stop, const int64_t *step);
/** The width x height box of `a` centred on (lon, lat) (degrees, a's frame),
 *  clipped to the image, with its WCS (astropy's Cutout2D, mode 'trim').
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_cutout(tsr_graph_t *g, tsr_node_t *a, double lon, double lat,
                               int64_t width, int64_t height);
/** The smallest box of `a` holding the footprint of the image described by
 *  `box` (its edges mapped into a; borrowed for the call), with its WCS.
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_crop_to(tsr_graph_t *g, tsr_node_t *a, const tsr_wcs_t *box);
/** n arrays of one shape stacked along a new axis `axis` (up to 4 axes).
 *  `nodes` is read during the call.  @return the node, or NULL with the
 *  error on the graph. */
TSR_API tsr_node_t *tsr_stack(tsr_graph_t *g, int n, tsr_node_t *const *nodes, int axis);
/** n arrays joined along existing axis `axis` (other axes equal).  @return
 *  the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_concatenate(tsr_graph_t *g, int n, tsr_node_t *const *nodes, int axis);

/** One block of a tsr_map_blocks node, as the callback sees it. */
typedef struct {
  tsr_region_t out;               /* the block, in output pixels */
  void *data;                     /* write here: C-contiguous over out (axis 0 fastest), of dtype */
  tsr_dtype_t dtype;
  int n_inputs;
  const void *const *inputs;      /* input i over in_regions[i] (the block grown by the halo,
                                     clipped to the input), C-contiguous, of in_dtypes[i] */
  const tsr_region_t *in_regions;
  const tsr_dtype_t *in_dtypes;
  int sparse;                     /* 1 when the run asks for a small part of its output (under
                                     1/16): windows are scattered, so a source should read just
                                     them, without reading ahead around them */
} tsr_block_t;

/** Compute one block; 0, or a negative TSR_E* code (or any nonzero) to fail
 *  the run.  May run in a worker process; must not keep pointers. */
typedef int (*tsr_block_fn)(void *user, const tsr_block_t *block);

typedef struct {
  const char *name;        /* required: names the computation in keys and messages */
  const void *params;      /* bytes that, with name, identify the computation: hashed into */
  size_t  params_len;      /* the key (so the cache and merging work); copied */
  tsr_dtype_t dtype;       /* output type, TSR_F32 or TSR_F64 (required: the INIT macro's 0 is
                              refused) */
  int     ndim;            /* 0 = the first input's */
  int64_t shape[4];        /* 0 = the first input's; inputs must have this shape */
  int64_t chunk[4];        /* 0 = the first input's */
  int64_t halo[4];         /* extra input pixels each side of a block */
  const tsr_wcs_t *wcs;    /* NULL = the first input's; copied */
} tsr_map_blocks_opts_t;

#define TSR_MAP_BLOCKS_OPTS_INIT                                                        \
  { NULL, NULL, 0, 0, 0, { 0, 0, 0, 0 }, { 0, 0, 0, 0 }, { 0, 0, 0, 0 }, NULL }

/** A node computed block by block by fn(user, block) (dask's map_blocks).
 *  The callback and user pointer are borrowed for the graph's life.
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_map_blocks(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                                   tsr_block_fn fn, void *user, const tsr_map_blocks_opts_t *opts);

typedef struct {
  const char *name;        /* required: names the data in keys and messages */
  const void *params;      /* bytes that, with name, shape, dtype and wcs, identify the */
  size_t  params_len;      /* values (a content hash, a file's identity); copied */
  tsr_dtype_t dtype;       /* TSR_F32 or TSR_F64 (required) */
  int     ndim;            /* 1 to 4 (required) */
  int64_t shape[4];        /* FITS axis order (required) */
  const tsr_wcs_t *wcs;    /* may be NULL; copied */
} tsr_source_callback_opts_t;

/** A source whose values the caller produces window by window (a dask
 *  array, an integer or byte-swapped array converted as it is read): when a
 *  computation needs window W, fn(user, block) is called with block->out = W
 *  and no inputs, and writes W's values C-contiguous (axis 0 fastest) into
 *  block->data, of block->dtype.  Only the windows the requested blocks
 *  need are asked for, each once per task that needs it; the node is never
 *  cached.  fn may be called from several threads at once and, with the
 *  process executor, in forked workers; it must not keep block pointers.
 *  The name, parameter bytes, shape, dtype and WCS make the node's key: two
 *  callbacks given the same ones are taken to give the same values (the
 *  graph merges them).  fn and user are borrowed for the graph's life.
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_source_callback(tsr_graph_t *g, tsr_block_fn fn, void *user,
                                        const tsr_source_callback_opts_t *opts);

/* ------------------------------------------------------------------ */
/* Mosaics                                                            */

/** How tsr_coadd combines the inputs that cover an output pixel.  Each
 *  input i gives at the pixel its value v_i, its footprint f_i (0 where
 *  v_i is NaN) and its weight W_i (the weight node's value, 1 without one;
 *  NaN counts as 0); w_i = f_i W_i.  reproject's functions (mean .. median)
 *  take the inputs with w_i > 0 (mean and sum: w_i != 0).  SWarp's
 *  (weighted .. median_weight, as SWarp 2.41's coadd.c) take the "good"
 *  inputs, w_i > 0, each with variance var_i = 1 / w_i (SWarp keeps
 *  variances; a weight map is an inverse variance); the flag functions
 *  (and .. nor) the inputs that cover the pixel (f_i > 0), with values
 *  taken as 32-bit unsigned integers.  Where no input counts the value is
 *  `blank`.  The values of the enum are stable. */
typedef enum {
  TSR_COMBINE_MEAN = 0,   /* sum(w v) / sum(w) (reproject_and_coadd's 'mean') */
  TSR_COMBINE_SUM,        /* sum(w v) (reproject's 'sum') */
  TSR_COMBINE_FIRST,      /* the first input (in order) with w > 0 */
  TSR_COMBINE_LAST,       /* the last input with w > 0 */
  TSR_COMBINE_MIN,        /* the smallest value with w > 0 (also SWarp's MIN) */
  TSR_COMBINE_MAX,        /* the largest value with w > 0 (also SWarp's MAX) */
  TSR_COMBINE_MEDIAN,     /* the median of the values with w > 0, unweighted (also SWarp's
                             MEDIAN; an even count averages the middle two) */
  TSR_COMBINE_WEIGHTED,   /* SWarp's WEIGHTED: sum(v / var) / sum(1 / var) */
  TSR_COMBINE_AVERAGE,    /* SWarp's AVERAGE: the plain mean of the good values */
  TSR_COMBINE_SUM_UNWEIGHTED, /* SWarp's SUM: the plain sum of the good values */
  TSR_COMBINE_CHI_OLD,    /* SWarp's CHI_OLD: sqrt(sum(v^2 / var) / n) */
  TSR_COMBINE_CHI_MODE,   /* SWarp's CHI-MODE: (sqrt(sum(v^2 / var)) - sqrt(n - 1))
                             / sqrt(n - mu_n^2), mu_n = sqrt(2) G((n+1)/2) / G(n/2);
                             v / sqrt(var) for n = 1 */
  TSR_COMBINE_CHI_MEAN,   /* SWarp's CHI-MEAN: (sqrt(sum(v^2 / var)) - mu_n)
                             / sqrt(n - mu_n^2); v / sqrt(var) for n = 1 */
  TSR_COMBINE_CLIPPED,    /* SWarp's CLIPPED: with 3 or more good values, those within
                             clip_sigma sqrt(var + |m| / gain) + clip_ampfrac |m| of their
                             median m, weighted as WEIGHTED; 2 values: their weighted mean
                             if they differ by at most clip_sigma sqrt(var1 + var2 +
                             |m|(1/g1 + 1/g2)) + clip_ampfrac |m| (m their mean), else
                             none (blank); 1 value: itself.  See tsr_coadd_clip_log. */
  TSR_COMBINE_WEIGHTED_WEIGHT, /* SWarp's WEIGHTED_WEIGHT: the values are weight maps; the
                             weight of the WEIGHTED mean of images with those weights */
  TSR_COMBINE_MEDIAN_WEIGHT,   /* SWarp's MEDIAN_WEIGHT: the same for MEDIAN */
  TSR_COMBINE_AND,        /* flags: bitwise AND of the covering inputs (0 if their total
                             weight is 0) */
  TSR_COMBINE_NAND,       /* ~AND */
  TSR_COMBINE_OR,         /* bitwise OR of the covering inputs */
  TSR_COMBINE_NOR         /* ~OR */
} tsr_combine_t;

/** @return the tsr_combine_t named `s` (case aside): "mean", "sum",
 *  "first", "last", "min", "max", "median", "weighted", "average",
 *  "sum-unweighted", "chi-old", "chi-mode", "chi-mean", "clipped",
 *  "weighted_weight", "median_weight", "and", "nand", "or", "nor", or -1;
 *  tsr_combine_name: the name of a value (a static string, "unknown" for
 *  another value). */
TSR_API int tsr_combine_parse(const char *s);
TSR_API const char *tsr_combine_name(tsr_combine_t combine);
/** @return the tsr_combine_t of a SWarp COMBINE_TYPE keyword (case aside):
 *  MEDIAN, AVERAGE, MIN, MAX, WEIGHTED, CLIPPED, CHI_OLD (or CHI-OLD),
 *  CHI-MODE, CHI-MEAN, SUM (SWarp's: TSR_COMBINE_SUM_UNWEIGHTED),
 *  WEIGHTED_WEIGHT, MEDIAN_WEIGHT, AND, NAND, OR, NOR; or -1. */
TSR_API int tsr_combine_parse_swarp(const char *s);

typedef struct {
  tsr_combine_t combine;  /* default mean */
  double  blank;          /* value where no input counts (see tsr_combine_t); default NaN */
  int     dtype;          /* a tsr_dtype_t, or 0 = float64 if any input is float64 or the
                             combine is a flag one, else float32 (an int: 0 is not a
                             tsr_dtype_t value) */
  int64_t block[2];       /* output chunk shape; 0 = the first input's */
  const double *offsets;  /* NULL, or one additive offset per input, subtracted from its
                             values (see tsr_coadd_match_background); copied */
  double  clip_sigma;     /* clipped: SWarp's CLIP_SIGMA, >= 0; default 4 */
  double  clip_ampfrac;   /* clipped: SWarp's CLIP_AMPFRAC, >= 0; default 0.3 */
  const double *gains;    /* clipped: NULL, or one gain (e-/ADU, >= 0) per input for the
                             Poisson term |m| / gain; 0 (and NULL) = infinite gain, no such
                             term; copied */
  tsr_node_t *const *dq;  /* NULL, or n data-quality nodes (each may be NULL) on the target
                             grid, e.g. DQ images reprojected with nearest-neighbour: read
                             by the TSR_COADD_DQ product only (borrowed for the call) */
} tsr_coadd_opts_t;

#define TSR_COADD_OPTS_INIT { TSR_COMBINE_MEAN, NAN, 0, { 0, 0 }, NULL, 4.0, 0.3, NULL, NULL }

/** A mosaic of `n` reprojections (reproject_and_coadd): `inputs[i]` is the
 *  data node of a reprojection (any method) onto one common target grid;
 *  its footprint plane is used with it.  `weights` is NULL or n nodes (each
 *  may be NULL) on the same grid, e.g. weight maps reprojected the same way:
 *  they multiply the footprints (NaN weights count as 0).  Each input is
 *  read only where its edges, mapped into the target, say it can cover: a
 *  region of the mosaic computes only the inputs and blocks it meets, and
 *  a block holds one window of each input that covers it, whatever the
 *  number of inputs and the combine (median and clipped too).
 *  @return the data node (footprint: tsr_footprint(), the summed w of the
 *  inputs that count -- of those kept for clipped -- except first, last,
 *  min and max: the chosen input's), or NULL with the error on the graph.
 *  Nodes are borrowed; `opts` may be NULL. */
TSR_API tsr_node_t *tsr_coadd(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                              tsr_node_t *const *weights, const tsr_coadd_opts_t *opts);

/** What else a mosaic gives besides its values (tsr_coadd_product). */
typedef enum {
  TSR_COADD_VALUE = 0,    /* the mosaic itself */
  TSR_COADD_WEIGHT,       /* SWarp's output weight map of the combine: 1 / variance for
                             weighted, average, sum, median, clipped (SWarp's Gaussian-noise
                             formula for median); 1 for min, max and chi*; the summed
                             weights for the flag combines; 1 / variance for reproject's mean,
                             first and last; 0 where the value is blank */
  TSR_COADD_VARIANCE,     /* the variance of the value, each input's being 1 / W_i (SWarp's
                             convention: 1 / w_i for SWarp's combines): sum(c_i^2 var_i) for a
                             linear combine sum(c_i v_i) (mean, sum, weighted, average,
                             sum-unweighted, clipped over the kept values), the chosen
                             input's for first and last, SWarp's formula for median; NaN
                             where not defined (min, max, chi*, the weight and flag combines)
                             or blank */
  TSR_COADD_DQ            /* the OR of the data-quality values (opts.dq, as 32-bit unsigned
                             integers) of the inputs that count (are kept); 0 elsewhere */
} tsr_coadd_product_t;

/** The `what` product of mosaic `mosaic` (a tsr_coadd node, borrowed): a
 *  node of the same grid, inputs and options, computed block by block as
 *  the mosaic is (TSR_COADD_VALUE gives `mosaic` itself).  Its footprint
 *  plane is the mosaic's.  @return the node, or NULL with the error on the
 *  graph (not a mosaic; TSR_COADD_DQ without opts.dq). */
TSR_API tsr_node_t *tsr_coadd_product(tsr_graph_t *g, tsr_node_t *mosaic,
                                      tsr_coadd_product_t what);

/** One rejected input pixel of a clipped mosaic: input `input` (0-based)
 *  at output pixel (x, y) (0-based), off the pixel's median (or its pair's
 *  mean) by `mu` tolerances, signed (SWarp's clip log value).  0 to go on,
 *  anything else stops tsr_coadd_clip_log with that code. */
typedef int (*tsr_clip_fn)(void *ud, int input, int64_t x, int64_t y, double mu);

/** The clip log of clipped mosaic `mosaic` (CLIP_WRITELOG: SWarp writes each
 *  call as "%4d %6d %6d %+10g" with 1-based x and y): fn is called for every
 *  rejected input pixel of `region` (NULL = all), rows in order, pixels in
 *  order along a row, inputs in order within a pixel, in the calling
 *  thread.  Computes the rejections again, reading the inputs a band of
 *  rows at a time with `run` (may be NULL).  fn and ud are borrowed for the
 *  call.  @return 0, fn's nonzero code, or a negative code with the
 *  message in tsr_errmsg(ctx) (TSR_EINVAL: not a clipped mosaic). */
TSR_API int tsr_coadd_clip_log(tsr_graph_t *g, tsr_node_t *mosaic, const tsr_region_t *region,
                               const tsr_run_opts_t *run, tsr_clip_fn fn, void *ud);

/* Input weight maps of SWarp's kinds (WEIGHT_TYPE). */
typedef enum {
  TSR_WEIGHT_MAP_WEIGHT = 0,   /* inverse variances: var = 1 / m where m > thresh, else bad
                                  (thresh default 0) */
  TSR_WEIGHT_MAP_VARIANCE,     /* variances: var = m where 0 < m < thresh, else bad (thresh
                                  default infinity) */
  TSR_WEIGHT_MAP_RMS,          /* standard deviations: var = m^2 where 0 < m < thresh, else bad */
  TSR_WEIGHT_BACKGROUND        /* from the image itself: var = the square of its background
                                  RMS (sigma-clipped per back_size mesh, interpolated
                                  between mesh centres); bad where that RMS >= thresh */
} tsr_weight_type_t;

/** @return the tsr_weight_type_t of SWarp's "MAP_WEIGHT", "MAP_VARIANCE",
 *  "MAP_RMS", "BACKGROUND" (case aside), or -1. */
TSR_API int tsr_weight_type_parse(const char *s);

typedef struct {
  double thresh;        /* SWarp's WEIGHT_THRESH; NaN = the type's default */
  int64_t back_size;    /* BACKGROUND: mesh size in pixels (BACK_SIZE); 0 = 128 */
  uint32_t dq_bits;     /* with a dq node: pixels whose DQ value has any of these bits set
                           are bad; 0 = any nonzero value (a mask) */
} tsr_weight_opts_t;

#define TSR_WEIGHT_OPTS_INIT { NAN, 0, 0 }

/** The variance map (float64, same grid and WCS) that weight map `map`
 *  of kind `type` stands for, +infinity at bad pixels: reproject it with
 *  the data and invert it (1 / var) for tsr_coadd's weights; that is how
 *  SWarp carries weights.  For TSR_WEIGHT_BACKGROUND `map` is the image
 *  itself.  `dq` (may be NULL) is a data-quality image or mask of the same
 *  shape: its bad pixels (opts->dq_bits) get infinite variance too.  Lazy
 *  and block by block like any node.  `map`, `dq` borrowed; `opts` may be
 *  NULL.  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_variance_map(tsr_graph_t *g, tsr_node_t *map, tsr_weight_type_t type,
                                     tsr_node_t *dq, const tsr_weight_opts_t *opts);

/** `data` with NaN where data-quality image `dq` (same shape) has any of
 *  `bits` set (bits 0 = any nonzero value), so that a reprojection gives
 *  those pixels no footprint and a mosaic no weight.  Nodes borrowed.
 *  @return the node, or NULL with the error on the graph. */
TSR_API tsr_node_t *tsr_mask_dq(tsr_graph_t *g, tsr_node_t *data, tsr_node_t *dq, uint32_t bits);

/** Additive background offsets for tsr_coadd (match_background): for each
 *  pair of inputs that overlap, the median of their difference where both
 *  footprints are > 0; then the offsets c minimising the sum over pairs of
 *  (c_i - c_j - median_ij)^2, solved exactly (a deterministic least-squares
 *  solve, not reproject's shuffled gradient descent), with c[reference] = 0,
 *  or mean(c) = 0 when reference < 0.  Inputs with no overlap keep 0.
 *  Computes the overlaps now (with `run`, may be NULL).
 *  @return 0 with offsets[0..n) set, or a negative code. */
TSR_API int tsr_coadd_match_background(tsr_graph_t *g, int n, tsr_node_t *const *inputs,
                                       tsr_node_t *const *weights, int reference,
                                       const tsr_run_opts_t *run, double *offsets);

typedef struct {
  const char *frame;      /* "icrs", "fk5", "galactic", "ecliptic"; NULL = the first input's */
  const char *projection; /* three letters; NULL = "TAN" */
  double  resolution;     /* degrees per pixel; 0 = the finest input's */
  int     has_reference;  /* use reference_lon/lat (degrees, in `frame`) as CRVAL */
  double  reference_lon, reference_lat;
  int     auto_rotate;    /* rotate to the minimum-area rectangle around the inputs */
} tsr_optimal_wcs_opts_t;

#define TSR_OPTIMAL_WCS_OPTS_INIT { NULL, NULL, 0.0, 0, 0.0, 0.0, 0 }

/** A target that covers every input (find_optimal_celestial_wcs): the
 *  inputs' corners projected with `projection` about the mean of their
 *  reference points, at the finest input resolution unless given.
 *  @return 0 and *out (free with tsr_wcs_free), or a negative code. */
TSR_API int tsr_optimal_wcs(tsr_ctx_t *ctx, int n, const tsr_wcs_t *const *inputs,
                            const tsr_optimal_wcs_opts_t *opts, tsr_wcs_t **out);

/* ------------------------------------------------------------------ */
/* Previews                                                           */

typedef enum { TSR_STRETCH_LINEAR = 0, TSR_STRETCH_SQRT, TSR_STRETCH_LOG, TSR_STRETCH_ASINH } tsr_stretch_t;
typedef enum { TSR_SCALE_ZSCALE = 0, TSR_SCALE_MINMAX, TSR_SCALE_PERCENT } tsr_scale_t;

typedef struct {
  tsr_stretch_t stretch;  /* astropy's (log a = 1000, asinh a = 0.1); default linear */
  tsr_scale_t scale;      /* the interval mapped to black..white; default zscale */
  double percent;         /* TSR_SCALE_PERCENT: the central percentage kept (e.g. 99.5) */
  int    max_size;        /* pixels on the longer side at most (a strided view); default 2048 */
  const tsr_run_opts_t *run; /* how the image is computed (jobs, progress, cancel, cache);
                                borrowed for the call; NULL = serially, silently */
} tsr_preview_opts_t;

#define TSR_PREVIEW_OPTS_INIT { TSR_STRETCH_LINEAR, TSR_SCALE_ZSCALE, 99.5, 2048, NULL }

/** Write 2-D node `n` as an 8-bit grey + alpha PNG (NaN transparent, north
 *  up as in ds9: FITS row 1 at the bottom).  The path is checked and
 *  the file created before anything is computed, and replaced as
 *  tsr_write_fits replaces its outputs.  The graph is only read, as by
 *  tsr_compute: no node is added to it and its status is never set, also
 *  when the preview fails.  `g`, `n`, `path` and `opts` are borrowed for
 *  the call.  @return 0, or a negative code with the message in
 *  tsr_errmsg(ctx) (TSR_ESTATE if the graph has a build error). */
TSR_API int tsr_write_png(tsr_graph_t *g, tsr_node_t *n, const char *path,
                          const tsr_preview_opts_t *opts);

/* ------------------------------------------------------------------ */
/* Chunk cache                                                        */

/** A directory of immutable, zstd-compressed chunk files named by (node
 *  key, chunk index).  Node keys cover op versions, parameters and input
 *  file identity, so a changed input or option is a miss, never a stale
 *  hit.  With run options' `cache` set, every executor looks a chunk up
 *  before computing it and stores it after; a second request of a region
 *  costs only decompression, and a run killed halfway resumes on rerun.
 *  Several processes may read and write one directory at once.  A cache
 *  never makes a run fail: a corrupt, truncated or foreign chunk file is a
 *  miss (deleted and recomputed), and a full disk or an unwritable
 *  directory sets the cache aside; each such event is a warning
 *  (tsr_cache_warning, and tsr_errmsg(ctx) after the run).  Anything inside
 *  the directory that is not a regular file or a real subdirectory (a
 *  symlink, FIFO, device, socket) is foreign: never followed, opened,
 *  counted against the budget or deleted; a chunk behind one is a miss.
 *  `dir` itself may be a symlink. */

#define TSR_CACHE_MIN_BYTES (UINT64_C(1) << 20)
#define TSR_CACHE_MAX_BYTES (UINT64_C(1) << 62)
#define TSR_CACHE_DEFAULT_BYTES (UINT64_C(4) << 30)  /* the CLI's default budget */

typedef struct {
  uint64_t entries;          /* chunk files in the directory now */
  uint64_t bytes;            /* their size on disk */
  uint64_t raw_bytes;        /* their size decompressed */
  double   ratio;            /* raw_bytes / bytes; 0 when empty */
  uint64_t max_bytes;        /* this handle's budget */
  /* Cumulative over the runs recorded in <dir>/stats (all processes; two
   * runs ending at the same instant may lose one's counts). */
  uint64_t hits, misses, stores, evictions, dropped;  /* dropped = bad files deleted */
  int      n_runs;           /* entries of runs[], newest first */
  struct {
    int64_t  end_unix_s;     /* when the run ended */
    uint64_t hits, misses, stores;
  } runs[8];
  /* Through this handle since it was opened (every process of its runs). */
  uint64_t session_hits, session_misses, session_stores, session_dropped;
  uint64_t session_raw_stored;   /* bytes stored, before compression */
  uint64_t session_zip_stored;   /* the same, compressed, headers included */
  double   session_compress_s;   /* CPU time spent shuffling + compressing, summed over processes */
  double   session_decompress_s; /* ... decompressing + unshuffling hits */
  uint64_t warnings;             /* warnings met by this handle */
  uint64_t foreign;              /* entries not made by a cache (symlinks, FIFOs, devices,
                                    sockets, other files where chunk files or their
                                    subdirectories go): skipped, never followed, opened,
                                    counted in bytes or deleted */
} tsr_cache_stats_t;

/** tsr_cache_open() : use directory `dir` (created if missing, with its
 *  parents) as a chunk cache of at most `max_bytes` on disk, in
 *  [TSR_CACHE_MIN_BYTES, TSR_CACHE_MAX_BYTES].  Chunks past the budget are
 *  evicted least recently used first (a hit counts as a use).  `dir` is
 *  copied.  A directory that cannot be created or written does not fail the
 *  open: the handle is set aside (every lookup misses) with a warning.
 *  @return 0 and *out (free with tsr_cache_close), or TSR_EINVAL /
 *  TSR_ENOMEM with *out = NULL and the message in tsr_errmsg(ctx).
 *  The handle is used with graphs of the same ctx, by any number of runs
 *  and threads at once; processes forked by a run may use it too. */
TSR_API int tsr_cache_open(tsr_ctx_t *ctx, const char *dir, uint64_t max_bytes,
                           tsr_cache_t **out);
/** tsr_cache_open_read_only() : use the existing directory `dir` for
 *  lookups and tsr_cache_stats only.  Nothing in it is ever created,
 *  changed or deleted: no stores, no trimming, no stats recorded, a hit does
 *  not refresh the chunk's LRU time and a bad chunk file is ignored, not
 *  deleted.  Works on a directory the caller cannot write.
 *  @return 0 and *out, or TSR_ECACHE when `dir` is not a readable directory,
 *  TSR_EINVAL or TSR_ENOMEM; tsr_cache_trim and tsr_cache_clear on the
 *  handle return TSR_EINVAL. */
TSR_API int tsr_cache_open_read_only(tsr_ctx_t *ctx, const char *dir, tsr_cache_t **out);
/** Record this handle's counts in <dir>/stats and free it.  Accepts NULL.
 *  Must not be called while a run uses it, and must come before
 *  tsr_ctx_free of the context it was opened with.  @return nothing. */
TSR_API void tsr_cache_close(tsr_cache_t *c);
/** Scan the directory and fill *out.  @return 0, or TSR_ECACHE when the
 *  directory cannot be read (message in tsr_errmsg). */
TSR_API int tsr_cache_stats(tsr_cache_t *c, tsr_cache_stats_t *out);
/** Evict least recently used chunks until the directory is within the
 *  budget; also removes temporary files left by killed processes.
 *  @return 0 or TSR_ECACHE. */
TSR_API int tsr_cache_trim(tsr_cache_t *c);
/** Delete every chunk file and the stats; foreign entries stay.  A file that
 *  cannot be deleted does not stop the others.  @return 0, or TSR_ECACHE
 *  with "cache clear: removed N files; could not remove M: "PATH": REASON"
 *  (the first failure) in tsr_errmsg. */
TSR_API int tsr_cache_clear(tsr_cache_t *c);
/** @return the last warning of this handle ("" if none); owned by c,
 *  valid until its next use. */
TSR_API const char *tsr_cache_warning(const tsr_cache_t *c);

/* ------------------------------------------------------------------ */
/* HEALPix                                                            */
/* All-sky maps in the HEALPix pixelisation (Gorski et al. 2005) as     */
/* lazy 1-D nodes of 12 nside^2 pixels in RING or NESTED order, whose   */
/* WCS holds the HEALPix cards (PIXTYPE, ORDERING, NSIDE, COORDSYS)     */
/* instead of a celestial WCS.  COORDSYS G is Galactic, C ICRS, E the   */
/* barycentric mean ecliptic of J2000.                                  */

typedef struct {
  int hdu;                 /* 1-based as cfitsio (the first extension is 2); 0 = the first
                              binary table */
  int field;               /* which value column, 0-based, the PIXEL column of an explicit
                              table not counted (reproject's `field`) */
  const char *field_name;  /* or the column by TTYPE (case aside); NULL = use field */
  int nested;              /* -1 = the file's ORDERING; 0 = RING, 1 = NESTED regardless */
  const char *coordsys;    /* NULL = the file's COORDSYS; "G", "C", "E" (or "galactic",
                              "icrs", "ecliptic") regardless */
} tsr_healpix_opts_t;

#define TSR_HEALPIX_OPTS_INIT { 0, 0, NULL, -1, NULL }

/** A HEALPix FITS binary table as a lazy node: implicit (full or FIRSTPIX..
 *  LASTPIX) and explicit (INDXSCHM = 'EXPLICIT', a PIXEL column) layouts,
 *  scalar or vector columns (usually 1024 values a row), E/D/J/I/K/B with
 *  TSCAL/TZERO/TNULL.  Only the header is read now (and an explicit table's
 *  PIXEL column); values are read row by row as computations need them.
 *  Pixels not in the file, UNSEEN (-1.6375e30) and null values are NaN.
 *  float64 for D, J, K and scaled columns, else float32.  `path` and `opts`
 *  are copied; opts may be NULL.  @return the node, or NULL with the error
 *  on the graph (wrong row count, bad NSIDE, unknown ORDERING or COORDSYS,
 *  a truncated table, ... named with the file and HDU). */
TSR_API tsr_node_t *tsr_source_healpix(tsr_graph_t *g, const char *path,
                                       const tsr_healpix_opts_t *opts);

/* Value columns tsr_healpix_info lists by name (a table may have up to 999). */
#define TSR_HEALPIX_MAX_FIELDS 32

typedef struct {
  int     hdu;             /* 1-based, resolved */
  int64_t nside;
  int     nested;
  char    coordsys;        /* 'G', 'C' or 'E' */
  int     explicit_index;  /* INDXSCHM = 'EXPLICIT' */
  int64_t n_pixels;        /* pixels the file holds */
  int64_t first_pixel, last_pixel;
  int64_t n_rows, repeat;  /* table rows, values per row */
  char    type;            /* TFORM letter of the column: E D J I K B */
  char    column[72];      /* its TTYPE */
  int     field;           /* its index among the value columns (reproject's `field`) */
  int     n_fields;        /* value columns of the table (the PIXEL column not counted) */
  struct {
    char    name[72];      /* TTYPE ("" when the column has none) */
    char    type;          /* TFORM letter (any, also one the reader refuses: 'A', ...) */
    int64_t repeat;        /* values per row */
  } fields[TSR_HEALPIX_MAX_FIELDS]; /* the first min(n_fields, TSR_HEALPIX_MAX_FIELDS) */
  char    pixel_column[72]; /* explicit tables: TTYPE of the PIXEL column, else "" */
  char    extname[72];     /* EXTNAME of the HDU, "" if none */
} tsr_healpix_info_t;

/** Describe a HEALPix table as tsr_source_healpix would read it (`opts`
 *  may be NULL; path and opts are borrowed for the call; *out is the
 *  caller's).  @return 0, or a negative code with the message on ctx. */
TSR_API int tsr_healpix_info(tsr_ctx_t *ctx, const char *path, const tsr_healpix_opts_t *opts,
                             tsr_healpix_info_t *out);

/* How a HEALPix map is resampled.  A method of its own rather than a
 * fourth tsr_order_t value: exact is not an interpolation order (it has no
 * kernel, and its own option, nan_mode, which the orders ignore), and
 * tsr_order_t is shared with tsr_reproject_interp, which has no exact. */
typedef enum {
  TSR_HEALPIX_INTERP = 0,  /* `order`: nearest or bilinear (reproject_from_healpix) */
  TSR_HEALPIX_EXACT = 1    /* flux-conserving overlap of HEALPix pixels and output pixels */
} tsr_healpix_method_t;

typedef struct {
  int     order;           /* TSR_ORDER_NEAREST or TSR_ORDER_BILINEAR (astropy-healpix's
                              four-neighbour interpolation); default bilinear; interp only */
  int     nested;          /* -1 = the source's ordering; else 0 RING, 1 NESTED */
  const char *coordsys;    /* NULL = the source's; else as tsr_healpix_opts_t */
  int     dtype;           /* 0 = float32, or float64 when the source is */
  int64_t block[2];        /* output chunk shape; 0 = 256 x 256 */
  tsr_healpix_method_t method;  /* default TSR_HEALPIX_INTERP */
  tsr_nan_mode_t nan_mode; /* exact only: NaN (and UNSEEN) map pixels; default propagate */
} tsr_from_healpix_opts_t;

#define TSR_FROM_HEALPIX_OPTS_INIT                                                     \
  { TSR_ORDER_BILINEAR, -1, NULL, 0, { 0, 0 }, TSR_HEALPIX_INTERP, TSR_NAN_PROPAGATE }

/** Reproject HEALPix map `src` (a tsr_source_healpix node, or any 1-D node
 *  of 12 nside^2 values with opts giving the ordering and frame) onto
 *  `target` (reproject_from_healpix): each output pixel centre, taken into
 *  the map's frame, gets the value of the pixel holding it (nearest) or
 *  astropy-healpix's bilinear interpolation of four pixel centres around
 *  it (a NaN among them makes it NaN).  Each block reads only the pixels
 *  within reach of it.  The footprint is 1 where the output pixel lies on
 *  the sky (reproject: everywhere), 0 off the projection's edge (where the
 *  value is NaN).
 *
 *  With method TSR_HEALPIX_EXACT, flux-conserving (reproject_exact's
 *  convention, surface brightness conserved): each output pixel (the
 *  spherical quadrilateral between its corners) gets sum(v_i A_i) /
 *  sum(A_i) over the HEALPix pixels i it overlaps, A_i the overlap's solid
 *  angle; where the map covers the pixel, sum(A_i) is its solid angle, so
 *  sum(value x pixel solid angle) over an image equals sum(v_i x 4 pi /
 *  npix) over the map pixels inside it.  A HEALPix pixel is the polygon
 *  through points of its exact edges, split until each piece lies within
 *  3e-7 of a pixel size of its chord (its area is then within 6e-7 of 4
 *  pi / npix everywhere, poles included; README).  The
 *  footprint is sum(A_i) / the pixel's solid angle, in [0, 1].  NaN and
 *  UNSEEN map pixels per nan_mode, as tsr_reproject_exact: propagate makes
 *  every output pixel they overlap NaN (they still count in the
 *  footprint), ignore leaves them out of both sums.  Output pixels must
 *  be under ~60 degrees across.  Every block size gives the same bits.
 *
 *  `target` is copied; opts may be NULL.  @return the data node, or NULL
 *  with the error on the graph. */
TSR_API tsr_node_t *tsr_reproject_from_healpix(tsr_graph_t *g, tsr_node_t *src,
                                               const tsr_wcs_t *target,
                                               const tsr_from_healpix_opts_t *opts);

/* Reprojection to HEALPix (reproject_to_healpix).  `method` leaves room
 * for more methods than interpolation: a new one is a new value, with any
 * options of its own appended to the struct. */
typedef enum {
  TSR_TO_HEALPIX_INTERP = 0,  /* each map pixel centre interpolated in the image */
  TSR_TO_HEALPIX_EXACT = 1    /* flux-conserving overlap of map pixels and image pixels */
} tsr_to_healpix_method_t;

typedef struct {
  tsr_to_healpix_method_t method; /* default interpolation */
  tsr_order_t order;       /* interpolation order, nearest .. bicubic (scipy's map_coordinates,
                              as reproject_to_healpix); default bilinear */
  int     nested;          /* 0 = RING (default), 1 = NESTED (nside a power of 2) */
  const char *coordsys;    /* frame of the map: "G", "C", "E" (or "galactic", "icrs",
                              "ecliptic"); NULL = the input's frame when it is one of them */
  int     dtype;           /* a tsr_dtype_t, or 0 = float32, or float64 when the input is */
  int64_t chunk;           /* map pixels per chunk; 0 = by nside and ordering (see below) */
  tsr_nan_mode_t nan_mode; /* exact only: NaN image pixels; default propagate */
} tsr_to_healpix_opts_t;

#define TSR_TO_HEALPIX_OPTS_INIT                                                       \
  { TSR_TO_HEALPIX_INTERP, TSR_ORDER_BILINEAR, 0, NULL, 0, 0, TSR_NAN_PROPAGATE }

/** Reproject 2-D image `src` (a celestial WCS) into a HEALPix map of
 *  `nside` (reproject_to_healpix): each map pixel centre, taken into the
 *  image's frame and pixels, gets scipy.ndimage.map_coordinates' value
 *  there with mode 'constant' and cval NaN: NaN where the centre falls
 *  outside [0, n - 1] on an image axis; nearest rounds, bilinear reads the
 *  2 x 2 pixels from floor (a NaN among them, even at zero weight, gives
 *  NaN); orders 2 and 3 are reproject_interp's splines (a NaN spoils only
 *  the values whose support touches it, where scipy's prefilter spreads
 *  it over the whole image).  The footprint (tsr_footprint) is 1 where the
 *  value is finite.  The result is a 1-D node of 12 nside^2 values that
 *  carries the HEALPix cards (PIXTYPE, ORDERING, NSIDE, COORDSYS), so it
 *  chains like any node, tsr_reproject_from_healpix takes it back, tsr_coadd
 *  makes mosaics of several and tsr_write_healpix writes it.  Chunks are runs
 *  of pixel indices (by default, RING: bands of rings of up to 2 Mi pixels,
 *  read in longitude sectors about as wide as the band is high; NESTED:
 *  nested cells of 4^k <= 65536 pixels, read in 16 sub-cells; orders 2 and
 *  3: 65536 pixels, read whole); a part of a chunk whose pixels miss the
 *  image's footprint on the sky reads and maps nothing, and one that meets
 *  it reads only the part of the image its pixels can fall in.
 *
 *  With method TSR_TO_HEALPIX_EXACT, flux-conserving: each map pixel (the
 *  polygon of tsr_reproject_from_healpix's exact method) gets sum(v_j A_j)
 *  / sum(A_j) over the image pixels j it overlaps (the quadrilaterals
 *  between their corners, A_j the overlap's solid angle), and the
 *  footprint sum(A_j) / its area: so sum(value x footprint x 4 pi / npix)
 *  over the map equals sum(v_j x solid angle) over the image (to the
 *  polygon areas' 6e-7).  NaN image pixels per nan_mode, as
 *  tsr_reproject_exact.  Each chunk reads only the image pixels its map
 *  pixels can meet.  Every chunk size gives the same bits.
 *
 *  `src` is borrowed, `opts` copied (NULL = defaults).
 *  @return the data node (owned by g), or NULL with the error on the
 *  graph. */
TSR_API tsr_node_t *tsr_reproject_to_healpix(tsr_graph_t *g, tsr_node_t *src, int64_t nside,
                                             const tsr_to_healpix_opts_t *opts);

typedef struct {
  int     partial;         /* 0 = the full sky, implicit (INDXSCHM 'IMPLICIT', 1024 values a
                              row when 12 nside^2 is a multiple of 1024, else one); 1 = only
                              the pixels with a finite value, explicit (INDXSCHM 'EXPLICIT',
                              a PIXEL column, OBJECT 'PARTIAL') */
  const char *column;      /* TTYPE of the value column; NULL = "SIGNAL" */
  const tsr_run_opts_t *run; /* how it is computed; borrowed; NULL = serially */
} tsr_healpix_write_opts_t;

#define TSR_HEALPIX_WRITE_OPTS_INIT { 0, NULL, NULL }

/** Write HEALPix node `n` (1-D, 12 nside^2 values, with HEALPix cards:
 *  tsr_reproject_to_healpix, tsr_source_healpix, or a mosaic of them) to
 *  `path` as a HEALPix binary table: an empty primary HDU and a BINTABLE
 *  with PIXTYPE, ORDERING, NSIDE, COORDSYS, INDXSCHM, FIRSTPIX, LASTPIX
 *  and the column in the node's dtype (E or D).  `region` (NULL = all)
 *  limits the pixels written to an index range: an implicit file then
 *  says FIRSTPIX..LASTPIX.  The map is computed chunk by chunk and written
 *  as it comes (memory is bounded by a chunk), into a temporary renamed
 *  when complete, as tsr_write_fits does.  tsr_source_healpix,
 *  astropy-healpix/reproject (full sky) and astropy.table read it.  g, n,
 *  path, region and opts are borrowed for the call.  @return 0, or a
 *  negative code with the message in tsr_errmsg(ctx). */
TSR_API int tsr_write_healpix(tsr_graph_t *g, tsr_node_t *n, const char *path,
                              const tsr_region_t *region, const tsr_healpix_write_opts_t *opts);

/* ------------------------------------------------------------------ */
/* HiPS                                                               */
/* Hierarchical Progressive Surveys (IVOA HiPS 1.0): the sky cut into   */
/* HEALPix tiles at every order down to the deepest, as Aladin reads    */
/* them, with the tile geometry of reproject 0.21's reproject_to_hips.  */

/* tsr_hips_opts_t.formats: which tile files are written (FITS always). */
#define TSR_HIPS_FITS 1
#define TSR_HIPS_PNG  2

typedef struct {
  int     level;            /* HiPS order of the deepest tiles, 0 to 26 - log2(tile_width)
                               (pixels down to 3 milliarcseconds);
                               -1 = the lowest order whose pixels are no larger than the
                               finest input's */
  int     tile_width;       /* pixels on a tile's side, a power of two from 8 to 4096;
                               0 = 512 */
  const char *frame;        /* "equatorial" (ICRS), "galactic" or "ecliptic" (mean
                               ecliptic J2000); NULL = equatorial */
  tsr_order_t order;        /* interpolation onto the tiles; default bilinear */
  double  mapping_tolerance;/* pixels, as tsr_interp_opts_t; default 1e-4 */
  tsr_combine_t combine;    /* how several inputs make one tile; default mean */
  int     formats;          /* TSR_HIPS_FITS, | TSR_HIPS_PNG; 0 = both */
  int     moc;              /* 1 = write Moc.fits (the default), 0 = not */
  const char *title;        /* obs_title; NULL = the directory's name */
  int     has_cut;          /* PNG grey scale: cut[0] black, cut[1] white; else the */
  double  cut[2];           /* 0.5 and 99.5 percentiles of a sample of the inputs
                               (64 rows of each) */
  tsr_stretch_t stretch;    /* PNG stretch after the cut; default linear */
  const tsr_run_opts_t *run;/* how the tiles are computed (jobs, executor, cache,
                               progress in tiles, cancel); borrowed; NULL = serially */
} tsr_hips_opts_t;

#define TSR_HIPS_OPTS_INIT                                                            \
  { -1, 0, NULL, TSR_ORDER_BILINEAR, 1e-4, TSR_COMBINE_MEAN, 0, 1, NULL, 0, { 0, 0 },  \
    TSR_STRETCH_LINEAR, NULL }

/* What tsr_write_hips wrote (tsr_write_hips's `report`). */
typedef struct {
  int     level;            /* the deepest order */
  int     tile_width;
  int64_t candidates;       /* deepest tiles whose sky may meet an input (computed) */
  int64_t tiles_deepest;    /* tiles written at the deepest order (those with data) */
  int64_t tiles_total;      /* tiles written at every order */
  double  cut[2];           /* the PNG cut used (hips_pixel_cut) */
} tsr_hips_report_t;

/** Write the `n` 2-D celestial images `inputs` (nodes of g, borrowed) as a
 *  HiPS directory `dir`, which must not exist (its parent must) or be an
 *  empty directory: Norder{k}/Dir{D}/Npix{N}.fits (float32) and .png
 *  (grey + alpha) tiles, `properties` (reproject 0.21's keys), index.html,
 *  Norder{0..3}/Allsky.fits and .png, and Moc.fits (MOC 1.1, NUNIQ).  The
 *  deepest tiles are lazy reprojections (tsr_reproject_interp, and
 *  tsr_coadd of them for several inputs) of the tile WCS reproject 0.21
 *  gives each tile; only tiles whose sky may meet an input are computed,
 *  a row of up to 16 tiles at a time (memory: that row plus the run's
 *  windows), and only those with data are written.  Lower orders are the
 *  2x2 NaN-ignoring means of their four children, as reproject and
 *  hipsgen build them.  Every file is written to a temporary name and
 *  renamed; `properties` comes last.  On failure or cancel everything
 *  written under dir is removed (and dir, if this call made it).  Nodes
 *  are added to g (the reprojections).  `dir`, `opts` and `report` (may be NULL) are borrowed
 *  for the call.  Every region is computed on one run of opts->run.  With
 *  opts->run->mpi_comm, every rank makes the same call on the same graph:
 *  the ranks other than 0 compute blocks of tiles for rank 0, which
 *  chooses the tiles and writes every file (dir need exist on rank 0's
 *  machine only; a cache for resuming is best shared), and every rank
 *  returns rank 0's status; there *report holds only level and tile_width.
 *  @return 0, or a negative code with the message in tsr_errmsg(ctx). */
TSR_API int tsr_write_hips(tsr_graph_t *g, int n, tsr_node_t *const *inputs, const char *dir,
                           const tsr_hips_opts_t *opts, tsr_hips_report_t *report);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_H */
