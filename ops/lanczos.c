/* lanczos.c -- the Lanczos kernel of SWarp (interpolate.c, make_kernel),
 * evaluated fast enough for every output pixel.
 *
 * For a sample f past pixel p, tap k (pixel p + 1 - a + k) lies at
 * d_k = k - (a - 1) - f, and L(d_k) = a sin(pi d_k) sin(pi d_k / a) /
 * (pi d_k)^2.  Since sin(pi d_k) = (-1)^(k - a) sin(pi f), the factor
 * a (-1)^a sin(pi f) / pi^2 is common to all taps and cancels when the
 * weights are divided by their sum, which is how SWarp normalises them:
 * w_k is proportional to (-1)^k sin(t_k) / d_k^2 with t_k = pi d_k / a.
 * The t_k are one angle apart by pi / a, so one sine and cosine, turned
 * by a fixed rotation, give them all (SWarp does the same with sincos).
 *
 * Two resamplers evaluate this per output pixel and axis, so it must cost
 * a few nanoseconds: the sine and cosine of pi (1 - f) / a, in [0, pi/2],
 * are Taylor polynomials (truncation below 3e-16), and instead of 2a
 * divisions by d_k^2, each numerator is multiplied by the product of the
 * other taps' d_j^2 (prefix and suffix products), leaving the one
 * division of the normalisation.  No calls, no branches: four samples go
 * through it at once (AVX2 where the CPU has it).
 * The weights agree with the direct formula to about 1e-15 (tested).
 */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "lanczos.h"



#define PI 3.14159265358979323846

double tsr__lanczos_kernel(int a, double x) {
  double px;
  if (!(fabs(x) < (double)a))
    return 0.0;
  if (x == 0.0)
    return 1.0;
  px = PI * x;
  return (double)a * sin(px) * sin(px / a) / (px * px);
}

/* sin(x) / x and cos(x) for |x| <= pi/2, from x^2 (four at a time): Taylor
 * series whose first omitted terms are below 3e-16 there. */
#define SINC_POLY(x2)                                                                         \
  (1.0 + (x2) * (-1.0 / 6 + (x2) * (1.0 / 120 + (x2) * (-1.0 / 5040 + (x2) * (1.0 / 362880 + \
   (x2) * (-1.0 / 39916800 + (x2) * (1.0 / 6227020800.0 + (x2) * (-1.0 / 1307674368000.0 +  \
   (x2) * (1.0 / 355687428096000.0 + (x2) * (-1.0 / 121645100408832000.0))))))))))
#define COS_POLY(x2)                                                                          \
  (1.0 + (x2) * (-1.0 / 2 + (x2) * (1.0 / 24 + (x2) * (-1.0 / 720 + (x2) * (1.0 / 40320 +    \
   (x2) * (-1.0 / 3628800 + (x2) * (1.0 / 479001600.0 + (x2) * (-1.0 / 87178291200.0 +      \
   (x2) * (1.0 / 20922789888000.0 + (x2) * (-1.0 / 6402373705728000.0 +                     \
   (x2) * (1.0 / 2432902008176640000.0)))))))))))



/* pi / a, and (-1)^k cos(k pi / a), (-1)^k sin(k pi / a): turning t_0 by
 * k pi / a gives tap k's angle, and (-1)^k its sign. */
static const double pi_over[TSR__LANCZOS_MAX_A + 1] = {0, 0, PI / 2, PI / 3, PI / 4};
#define R3 0.86602540378443864676 /* sin(pi / 3) */
#define R2 0.70710678118654752440 /* sin(pi / 4) */
static const double turn_cos[TSR__LANCZOS_MAX_A + 1][2 * TSR__LANCZOS_MAX_A] = {
    {0}, {0}, {1, 0, -1, 0}, {1, -0.5, -0.5, 1, -0.5, -0.5}, {1, -R2, 0, R2, -1, R2, 0, -R2}};
static const double turn_sin[TSR__LANCZOS_MAX_A + 1][2 * TSR__LANCZOS_MAX_A] = {
    {0}, {0}, {0, -1, 0, 1}, {0, -R3, R3, 0, -R3, R3}, {0, -R2, 1, -R2, 0, R2, -1, R2}};

/* LANES samples at a time in GCC's generic vectors: AVX2 registers in the
 * AVX2 clone, SSE2 ones in the baseline one, and the same IEEE operations
 * in every lane, so a sample's weights do not depend on its neighbours or
 * its place in the call.  Auto-vectorisation was tried first: GCC kept
 * some of these loops scalar, at 3x the cost.  Sixteen lanes (four AVX2
 * registers per value) run four independent chains through the
 * polynomials: 2.3x faster than four lanes, 1.25x faster than eight. */
#define LANES 16
typedef double vec_t __attribute__((vector_size(LANES * sizeof(double))));

/* Inlined with a constant `a` into one function per a, so the tap loops
 * unroll into straight-line code. */
static inline __attribute__((always_inline)) void weights_vec(const int a, const vec_t *pg,
                                                              vec_t *w) {
  const vec_t g = *pg; /* by pointer: a vector argument would be another ABI per clone */
  vec_t x = (1.0 - g) * pi_over[a], x2 = x * x;
  /* t_0 = pi d_0 / a = -pi + x. */
  vec_t st = -x * SINC_POLY(x2), ct = -COS_POLY(x2);
  vec_t u[2 * TSR__LANCZOS_MAX_A], q[2 * TSR__LANCZOS_MAX_A], pre[2 * TSR__LANCZOS_MAX_A];
  vec_t acc = g * 0.0 + 1.0, sum = g * 0.0, inv;
#pragma GCC unroll 8
  for (int k = 0; k < 2 * a; k++) {
    vec_t d = (double)(k - (a - 1)) - g;
    q[k] = d * d;
    /* (-1)^k sin(t_0 + k pi / a), each tap on its own (no chain); the
     * angle of tap k + a is pi more, so its u is -(-1)^a times tap k's. */
    if (k < a)
      u[k] = st * turn_cos[a][k] + ct * turn_sin[a][k];
    else
      u[k] = (a & 1) ? u[k - a] : -u[k - a];
    pre[k] = acc;
    acc *= q[k];
  }
  acc = g * 0.0 + 1.0;
#pragma GCC unroll 8
  for (int k = 2 * a - 1; k >= 0; k--) {
    u[k] *= pre[k] * acc;
    acc *= q[k];
    sum += u[k];
  }
  inv = 1.0 / sum;
#pragma GCC unroll 8
  for (int k = 0; k < 2 * a; k++)
    w[k] = u[k] * inv;
}

static inline __attribute__((always_inline)) void weights_of(const int a, int64_t n,
                                                             const double *f, double *w,
                                                             int64_t stride) {
  for (int64_t i = 0; i < n; i += LANES) {
    int64_t m = n - i < LANES ? n - i : LANES;
    double lane[LANES];
    for (int l = 0; l < LANES; l++)
      lane[l] = 0.5; /* a harmless f for the lanes past n */
    vec_t g, wk[2 * TSR__LANCZOS_MAX_A];
    memcpy(lane, f + i, (size_t)m * sizeof(double));
    memcpy(&g, lane, sizeof g);
    weights_vec(a, &g, wk);
    for (int k = 0; k < 2 * a; k++) {
      if (m == LANES) {
        memcpy(w + k * stride + i, &wk[k], sizeof wk[k]);
      } else {
        memcpy(lane, &wk[k], sizeof lane);
        memcpy(w + k * stride + i, lane, (size_t)m * sizeof(double));
      }
    }
  }
  /* Snapped samples (f = 0 gives 0 / 0 above) are set apart. */
  for (int64_t i = 0; i < n; i++)
    if (f[i] < TSR__LANCZOS_SNAP)
      for (int k = 0; k < 2 * a; k++)
        w[k * stride + i] = k == a - 1 ? 1.0 : 0.0;
}

TSR__MULTIVERSION static void weights2(int64_t n, const double *f, double *w, int64_t stride) {
  weights_of(2, n, f, w, stride);
}
TSR__MULTIVERSION static void weights3(int64_t n, const double *f, double *w, int64_t stride) {
  weights_of(3, n, f, w, stride);
}
TSR__MULTIVERSION static void weights4(int64_t n, const double *f, double *w, int64_t stride) {
  weights_of(4, n, f, w, stride);
}

void tsr__lanczos_weights(int a, int64_t n, const double *f, double *w, int64_t stride) {
  tsr__api_check(a >= 2 && a <= TSR__LANCZOS_MAX_A && stride >= n, "lanczos: a in 2..4");
  if (a == 2)
    weights2(n, f, w, stride);
  else if (a == 3)
    weights3(n, f, w, stride);
  else
    weights4(n, f, w, stride);
}
