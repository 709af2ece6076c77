/* reproject.h -- what the reprojection ops share: checking a source and
 * target pair, the parameters and run state every one of them begins with
 * (the target, the input's name, the output -> input mapping), and building
 * the node (data and footprint planes). */
#ifndef TSR_OPS_REPROJECT_H
#define TSR_OPS_REPROJECT_H

#include "internal.h"
#include "sky.h"

/* Default output blocks, measured on the ANCHORS case and a 16384^2 one:
 * 256^2 is 15-26% faster than 512^2 while the input fits the 256 MiB that
 * io maps whole (windows stay in cache); past that, where each window is
 * mapped on its own, 512^2 is 25% faster (fewer overlapping windows to
 * fault in). */
#define TSR__DEFAULT_BLOCK 256
#define TSR__DEFAULT_BLOCK_LARGE 512
#define TSR__LARGE_INPUT_BYTES ((int64_t)256 << 20)

/* The first member of every reprojection's parameters, so that allocation,
 * encoding and freeing are written once.  `tol` and `roundtrip` configure
 * the output -> input mapping that tsr__reproject_state_new opens. */
typedef struct {
  tsr_wcs_t *target;   /* the output WCS, as given (owned) */
  char in_what[160];   /* 'input "a.fits"', for messages */
  double tol;          /* mapping tolerance, output pixels */
  bool roundtrip;      /* NaN where output -> input -> output moves > 1 px */
} tsr__reproject_params_t;

/* `size` zeroed bytes of params beginning with a tsr__reproject_params_t
 * filled from src, a copy of target, tol and roundtrip.  NULL with the error
 * (named with `op`) on the graph. */
void *tsr__reproject_params_new(tsr_graph_t *g, const char *op, size_t size, const tsr_node_t *src,
                                const tsr_wcs_t *target, double tol, bool roundtrip);
/* Free params made by tsr__reproject_params_new (their target too): the
 * free_params of ops whose params own nothing else. */
void tsr__reproject_params_free(tsr_ctx_t *ctx, void *params);
/* The shared part of the key, after the op's own fields. */
void tsr__reproject_params_encode(const tsr__reproject_params_t *p, tsr__buf_t *b);

/* The first member of every mapped reprojection's run state. */
struct tsr__map_s;
typedef struct {
  struct tsr__map_s *map; /* output pixel -> input pixel */
} tsr__reproject_state_t;

/* `size` zeroed bytes of state beginning with a tsr__reproject_state_t
 * whose map goes from n's target to its input, as its params say.  An op's
 * start adds its own members after this and, if that fails, unwinds through
 * its stop, which must take a partly built state (NULL members).  0, or the
 * error code with the message on the context. */
int tsr__reproject_state_new(tsr_node_t *n, size_t size, void **state);
/* Free the map and the state itself; the op frees its own members first. */
void tsr__reproject_state_free(tsr_node_t *n, void *state);

/* The checks of the arguments alone: neither is NULL, dtype and block in
 * range.  false with the error on the graph. */
bool tsr__reproject_check_args(tsr_graph_t *g, const char *op, const tsr_node_t *src,
                               const tsr_wcs_t *target, int dtype, const int64_t block[2]);

/* The checks every reprojection makes the same way: the input has a WCS
 * and 2 or more axes, the target 2 celestial (or, for interp and adaptive,
 * linear: tsr__cel_open) axes with a shape and extra
 * axes equal to the input's, dtype and block in range, and both WCSs parse
 * into a mapping (frames included).  `op` names the op in messages.  On
 * failure the error is on the graph and false is returned (the arguments
 * are checked first, as tsr__reproject_check_args does). */
bool tsr__reproject_check(tsr_graph_t *g, const char *op, const tsr_node_t *src,
                          const tsr_wcs_t *target, int dtype, const int64_t block[2]);

/* The reprojection node of `op` with `params` (ownership passes, even on
 * failure): the target's shape plus the input's extra axes (none for a 1-D
 * input, a HEALPix map), chunks of
 * `block` (0 = default) by whole extra axes, two planes (data and
 * footprint), dtype as asked or following the input, and the target's WCS
 * with the input's extra-axis keywords.  NULL with the error on the graph. */
tsr_node_t *tsr__reproject_node(tsr_graph_t *g, const tsr__op_t *op, void *params,
                                tsr_node_t *src, const tsr_wcs_t *target, int dtype,
                                const int64_t block[2]);

/* The input window that output box `out`, grown by `grow` pixels, needs:
 * the bounds of its mapped boundary widened by `halo` input pixels and 1%
 * of their extent (curvature between boundary samples), or the whole input
 * where the mapping is undefined in part of the box or jumps (seams).  Sets
 * *empty when nothing maps or the bounds miss the input.  Axes past 1 are
 * copied from `out`. */
int tsr__reproject_window(struct tsr__map_s *m, const tsr_region_t *out, int64_t grow,
                          const tsr_node_t *in, double halo, tsr_region_t *win, bool *empty);

/* The overlap methods' block helpers (reproject_exact.c and
 * reproject_healpix_exact.c).  An inclusive box of output pixels. */
typedef struct {
  int64_t x0, x1, y0, y1;
} tsr__box_t;

/* Merge boxes that meet until none do, so that no output pixel is in two,
 * then clip them to [bx0, bx1] x [by0, by1] and drop the empty ones.
 * Returns how many are left (at the front of box). */
int tsr__boxes_merge_clip(tsr__box_t *box, int nb, int64_t bx0, int64_t bx1, int64_t by0,
                          int64_t by1);
/* Replace scratch array *p by one of n elements of `size` bytes (contents
 * not kept).  0, or TSR_ENOMEM with *p unchanged. */
int tsr__scratch_grow(tsr_ctx_t *ctx, void **p, size_t n, size_t size);
/* Set plane `plane` of the task's whole box to v (if that plane is
 * wanted), in the node's dtype; nothing when v is the blank (NaN data, 0
 * footprint) of destinations that hold it (t->dst_blank). */
void tsr__task_fill(tsr__task_t *t, int plane, double v);
/* Store value v and footprint fp at element `off` of the task's data and
 * footprint planes (those wanted), in the node's dtype. */
static inline void tsr__task_put2(tsr__task_t *t, size_t off, double v, double fp) {
  if (t->node->dtype == TSR_F32) {
    if (t->planes[0])
      ((float *)t->planes[0])[off] = (float)v;
    if (t->planes[1])
      ((float *)t->planes[1])[off] = (float)fp;
  } else {
    if (t->planes[0])
      ((double *)t->planes[0])[off] = v;
    if (t->planes[1])
      ((double *)t->planes[1])[off] = fp;
  }
}

/* The exact reprojection from a HEALPix map (reproject_healpix_exact.c),
 * built by tsr_reproject_from_healpix once it has checked `opts`, the
 * target and the map's layout (nside, ordering, COORDSYS letter).  NULL
 * with the error on the graph. */
tsr_node_t *tsr__from_healpix_exact(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                    const tsr_from_healpix_opts_t *opts, int64_t nside,
                                    bool nested, char coordsys);
/* The exact reprojection to a HEALPix map (reproject_healpix_exact.c),
 * built by tsr_reproject_to_healpix once it has checked `opts` and the
 * input and resolved the map's COORDSYS letter. */
tsr_node_t *tsr__to_healpix_exact(tsr_graph_t *g, tsr_node_t *src, int64_t nside,
                                  const tsr_to_healpix_opts_t *opts, char coordsys);

#endif
