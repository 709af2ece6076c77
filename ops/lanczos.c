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
 * division of the normalisation.  The loop over samples has no calls or
 * branches, so the compiler vectorises it (AVX2 where the CPU has it).
 * The weights agree with the direct formula to about 1e-15 (tested).
 */
#include <math.h>

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

/* sin(x) / x and cos(x) for |x| <= pi/2, from x^2: Taylor series whose
 * first omitted terms are below 3e-16 there. */
static inline double sinc_poly(double x2) {
  return 1.0 + x2 * (-1.0 / 6 + x2 * (1.0 / 120 + x2 * (-1.0 / 5040 + x2 * (1.0 / 362880 +
         x2 * (-1.0 / 39916800 + x2 * (1.0 / 6227020800.0 + x2 * (-1.0 / 1307674368000.0 +
         x2 * (1.0 / 355687428096000.0 + x2 * (-1.0 / 121645100408832000.0)))))))));
}

static inline double cos_poly(double x2) {
  return 1.0 + x2 * (-1.0 / 2 + x2 * (1.0 / 24 + x2 * (-1.0 / 720 + x2 * (1.0 / 40320 +
         x2 * (-1.0 / 3628800 + x2 * (1.0 / 479001600.0 + x2 * (-1.0 / 87178291200.0 +
         x2 * (1.0 / 20922789888000.0 + x2 * (-1.0 / 6402373705728000.0 +
         x2 * (1.0 / 2432902008176640000.0))))))))));
}

/* cos and sin of pi / a, the step between the angles of adjacent taps. */
static const double rot_cos[TSR__LANCZOS_MAX_A + 1] = {0, 0, 0.0, 0.5, 0.70710678118654752440};
static const double rot_sin[TSR__LANCZOS_MAX_A + 1] = {0, 0, 1.0, 0.86602540378443864676,
                                                       0.70710678118654752440};

/* Inlined with a constant `a` into one function per a, so the tap loops
 * unroll and the sample loop vectorises. */
static inline __attribute__((always_inline)) void weights_of(const int a, int64_t n,
                                                             const double *f, double *w,
                                                             int64_t stride) {
  const double c = rot_cos[a], s = rot_sin[a];
  for (int64_t i = 0; i < n; i++) {
    double g = f[i];
    double x = PI * (1.0 - g) / (double)a, x2 = x * x;
    /* t_0 = pi d_0 / a = -pi + x. */
    double st = -x * sinc_poly(x2), ct = -cos_poly(x2);
    double u[2 * TSR__LANCZOS_MAX_A], q[2 * TSR__LANCZOS_MAX_A], pre[2 * TSR__LANCZOS_MAX_A];
    double acc = 1.0, sum = 0.0, inv;
#pragma GCC unroll 8
    for (int k = 0; k < 2 * a; k++) {
      double d = (double)(k - (a - 1)) - g, ns;
      q[k] = d * d;
      u[k] = (k & 1) ? -st : st;
      ns = st * c + ct * s;
      ct = ct * c - st * s;
      st = ns;
      pre[k] = acc;
      acc *= q[k];
    }
    acc = 1.0;
#pragma GCC unroll 8
    for (int k = 2 * a - 1; k >= 0; k--) {
      u[k] *= pre[k] * acc;
      acc *= q[k];
      sum += u[k];
    }
    inv = 1.0 / sum;
#pragma GCC unroll 8
    for (int k = 0; k < 2 * a; k++)
      w[k * stride + i] = u[k] * inv;
  }
  /* Snapped samples (f = 0 gave 0 / 0 above) are set apart: a test in the
   * loop above would keep GCC from vectorising it (trapping math). */
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
