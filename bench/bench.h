/* bench.h -- what the benchmark programs share: a deterministic synthetic
 * sky, TAN header text, and sorting of timings.  Public API only. */
#ifndef TSR_BENCH_H
#define TSR_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Smooth sky (level 1000, gradient, 12 Gaussian sources) plus noise of
 * sigma 5, n x n float32, the same numbers every run; malloc'd, NULL on
 * failure. */
float *bench_make_sky(int64_t n);
/* A TAN header, n x n, scale in arcsec/px, rotated rot_deg, reference pixel
 * at the centre, reference value shifted by (dx, dy) input pixels: 80-column
 * cards separated by newlines, into buf. */
void bench_tan_header(char *buf, size_t cap, int64_t n, double scale_as, double rot_deg,
                      double dx, double dy);
/* The same around M31 in `frame` ("icrs", "fk4": B1950 with E-terms,
 * "galactic"), centred, rotated rot_deg. */
void bench_frame_header(char *buf, size_t cap, int64_t n, double scale_as, double rot_deg,
                        const char *frame);
/* qsort comparison of uint64_t. */
int bench_cmp_u64(const void *a, const void *b);

#endif
