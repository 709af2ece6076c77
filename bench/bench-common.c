/* bench-common.c -- see bench.h. */
#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double rng_uniform(void) /* xorshift64*, (0, 1) */
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return ((double)((rng_state * 2685821657736338717ull) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_normal(void)
{
  double u = rng_uniform(), v = rng_uniform();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Smooth sky (level 1000, gradient, 12 Gaussian sources) + noise of sigma 5. */
float *bench_make_sky(int64_t n)
{
  enum { NSRC = 12 };
  float *d = malloc((size_t)(n * n) * sizeof *d);
  double *gx = malloc((size_t)(n * NSRC) * sizeof *gx);
  double amp[NSRC], cy[NSRC], sig[NSRC];
  if (!d || !gx) {
    free(d);
    free(gx);
    return NULL;
  }
  for (int s = 0; s < NSRC; s++) {
    double cx = rng_uniform() * (double)n;
    cy[s] = rng_uniform() * (double)n;
    sig[s] = (3.0 + 77.0 * rng_uniform()) * (double)n / 2048.0;
    amp[s] = 50.0 + 2950.0 * rng_uniform();
    for (int64_t x = 0; x < n; x++)
      gx[s * n + x] = exp(-((double)x - cx) * ((double)x - cx) / (2.0 * sig[s] * sig[s]));
  }
  for (int64_t y = 0; y < n; y++) {
    double gy[NSRC];
    for (int s = 0; s < NSRC; s++)
      gy[s] = amp[s] * exp(-((double)y - cy[s]) * ((double)y - cy[s]) / (2.0 * sig[s] * sig[s]));
    for (int64_t x = 0; x < n; x++) {
      double v = 1000.0 + 0.05 * (double)x + 0.03 * (double)y + 5.0 * rng_normal();
      for (int s = 0; s < NSRC; s++)
        v += gy[s] * gx[s * n + x];
      d[y * n + x] = (float)v;
    }
  }
  free(gx);
  return d;
}

/* Append one 80-column card and a newline. */
static void card(char *buf, size_t cap, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void card(char *buf, size_t cap, const char *key, const char *fmt, ...)
{
  char val[72], line[82];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(val, sizeof val, fmt, ap);
  va_end(ap);
  snprintf(line, sizeof line, "%-8.8s= %-70.70s", key, val);
  size_t len = strlen(buf);
  snprintf(buf + len, cap - len, "%-80.80s\n", line);
}

/* TAN header, n x n, scale in arcsec/px, rotated rot_deg, reference pixel at
 * the centre, reference value shifted by (dx, dy) input pixels. */
void bench_tan_header(char *buf, size_t cap, int64_t n, double scale_as, double rot_deg,
                       double dx, double dy)
{
  const double ra = 10.6847, dec = 41.26875, s0 = 1.0 / 3600.0;
  const double s = scale_as / 3600.0, th = rot_deg * 3.141592653589793 / 180.0;
  buf[0] = '\0';
  card(buf, cap, "NAXIS", "%20d", 2);
  card(buf, cap, "NAXIS1", "%20lld", (long long)n);
  card(buf, cap, "NAXIS2", "%20lld", (long long)n);
  card(buf, cap, "CTYPE1", "'RA---TAN'");
  card(buf, cap, "CTYPE2", "'DEC--TAN'");
  card(buf, cap, "CRPIX1", "%20.17g", ((double)n + 1.0) / 2.0);
  card(buf, cap, "CRPIX2", "%20.17g", ((double)n + 1.0) / 2.0);
  card(buf, cap, "CRVAL1", "%20.17g", ra + dx * s0 / cos(dec * 3.141592653589793 / 180.0));
  card(buf, cap, "CRVAL2", "%20.17g", dec + dy * s0);
  card(buf, cap, "CDELT1", "%20.17g", -s);
  card(buf, cap, "CDELT2", "%20.17g", s);
  card(buf, cap, "CUNIT1", "'deg     '");
  card(buf, cap, "CUNIT2", "'deg     '");
  card(buf, cap, "RADESYS", "'ICRS    '");
  if (rot_deg != 0.0) {
    card(buf, cap, "PC1_1", "%20.17g", cos(th));
    card(buf, cap, "PC1_2", "%20.17g", -sin(th));
    card(buf, cap, "PC2_1", "%20.17g", sin(th));
    card(buf, cap, "PC2_2", "%20.17g", cos(th));
  }
}

void bench_frame_header(char *buf, size_t cap, int64_t n, double scale_as, double rot_deg,
                        const char *frame)
{
  /* M31 in each frame (astropy 5.2: ICRS (10.6847, 41.26875) is FK4 B1950
   * (10.000388, 40.994925) and Galactic (121.174322, -21.573309)). */
  const char *lng = "RA--", *lat = "DEC-", *sys = "'ICRS    '";
  double lon = 10.6847, la = 41.26875;
  const double s = scale_as / 3600.0, th = rot_deg * 3.141592653589793 / 180.0;
  if (!strcmp(frame, "fk4"))
    lon = 10.000388059603353, la = 40.99492541566779, sys = "'FK4     '";
  else if (!strcmp(frame, "galactic"))
    lng = "GLON", lat = "GLAT", lon = 121.17432233331309, la = -21.57330857105386, sys = NULL;
  buf[0] = '\0';
  card(buf, cap, "NAXIS", "%20d", 2);
  card(buf, cap, "NAXIS1", "%20lld", (long long)n);
  card(buf, cap, "NAXIS2", "%20lld", (long long)n);
  card(buf, cap, "CTYPE1", "'%s-TAN'", lng);
  card(buf, cap, "CTYPE2", "'%s-TAN'", lat);
  card(buf, cap, "CRPIX1", "%20.17g", ((double)n + 1.0) / 2.0);
  card(buf, cap, "CRPIX2", "%20.17g", ((double)n + 1.0) / 2.0);
  card(buf, cap, "CRVAL1", "%20.17g", lon);
  card(buf, cap, "CRVAL2", "%20.17g", la);
  card(buf, cap, "CDELT1", "%20.17g", -s);
  card(buf, cap, "CDELT2", "%20.17g", s);
  card(buf, cap, "PC1_1", "%20.17g", cos(th));
  card(buf, cap, "PC1_2", "%20.17g", -sin(th));
  card(buf, cap, "PC2_1", "%20.17g", sin(th));
  card(buf, cap, "PC2_2", "%20.17g", cos(th));
  if (sys != NULL)
    card(buf, cap, "RADESYS", "%s", sys);
  if (!strcmp(frame, "fk4"))
    card(buf, cap, "EQUINOX", "%20.1f", 1950.0);
}

int bench_cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

