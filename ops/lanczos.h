/* lanczos.h -- the Lanczos kernel as SWarp defines it (RESAMPLING_TYPE
 * LANCZOS2/3/4), shared by the resamplers that use it. */
#ifndef TSR_OPS_LANCZOS_H
#define TSR_OPS_LANCZOS_H

#include <stdint.h>

/* Largest supported a (taps per axis: 2a). */
#define TSR__LANCZOS_MAX_A 4

/* A sample closer than this to a pixel centre takes that pixel alone:
 * SWarp's threshold (interpolate.c, make_kernel). */
#define TSR__LANCZOS_SNAP 1e-5

/* The kernel itself, L(x) = sinc(x) sinc(x / a) for |x| < a, else 0 (not
 * normalised; sinc(x) = sin(pi x) / (pi x), L(0) = 1).  a in 1..8. */
double tsr__lanczos_kernel(int a, double x);

/* Normalised 1-D weights of n samples at once.  Sample i lies f[i] in
 * [0, 1) past pixel p (its floor); its 2a taps are pixels p + 1 - a ..
 * p + a, and w[k * stride + i] gets tap k's weight: L(p + 1 - a + k - x)
 * divided by the sum over the taps (SWarp's normalisation), or exactly 1
 * on tap a - 1 and 0 elsewhere when f[i] < TSR__LANCZOS_SNAP.  A caller
 * that wants SWarp's snapping on both sides of a pixel centre rounds f
 * above 1 - TSR__LANCZOS_SNAP up to the next pixel first.  a in 2..4;
 * stride >= n. */
void tsr__lanczos_weights(int a, int64_t n, const double *f, double *w, int64_t stride);

#endif
