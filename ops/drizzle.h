/* drizzle.h -- what drizzle.c and blot.c share: drizzle's rounding and its
 * Lanczos lookup table. */
#ifndef TSR_OPS_DRIZZLE_H
#define TSR_OPS_DRIZZLE_H

#include <math.h>
#include <stdint.h>

/* drizzle's fortran_round (Fortran NINT), kept in a range where the
 * conversion is defined. */
static inline int64_t tsr__nint(double x) {
  if (!(x < 4e15))
    x = 4e15;
  if (!(x > -4e15))
    x = -4e15;
  return x >= 0 ? (int64_t)floor(x + .5) : -(int64_t)floor(.5 - x);
}

/* drizzle's create_lanczos_lut: lut[i] = sinc(x) sinc(x / order) at x =
 * i * del (lut[0] = 1), n entries, in drizzle's mix of float and double so
 * that the table has its bits. */
void tsr__drizzle_lanczos_lut(int order, int n, float del, float *lut);

#endif
