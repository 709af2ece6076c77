/* options.c -- the parsers of option values shared by the tessera commands
 * (and the fuzz target that feeds them random strings). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

int parse_int64(const char *s, int64_t *v) {
  char *end;
  long long x;
  errno = 0;
  x = strtoll(s, &end, 10);
  if (errno || end == s || *end)
    return -1;
  *v = x;
  return 0;
}

/* A finite real number, the whole string. */
int parse_real(const char *s, double *v) {
  char *end;
  errno = 0;
  *v = strtod(s, &end);
  return errno || end == s || *end || !isfinite(*v) ? -1 : 0;
}

/* "X1:X2,Y1:Y2" (FITS 1-based inclusive) -> zero-based half-open. */
int parse_region(const char *s, tsr_region_t *r) {
  long long v[4];
  int used = 0;
  memset(r, 0, sizeof *r);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    r->start[a] = 0, r->stop[a] = 1;
  if (sscanf(s, "%lld:%lld,%lld:%lld%n", &v[0], &v[1], &v[2], &v[3], &used) != 4 ||
      s[used] != '\0')
    return -1;
  for (int k = 0; k < 4; k++)
    if (v[k] < -(1LL << 62) || v[k] > (1LL << 62))
      return -1; /* no overflow below; the caller says what range is valid */
  r->start[0] = v[0] - 1;
  r->stop[0] = v[1];
  r->start[1] = v[2] - 1;
  r->stop[1] = v[3];
  return 0;
}

/* Bytes with an optional binary suffix K, M, G or T ("512M"), within
 * [TSR_CACHE_MIN_BYTES, TSR_CACHE_MAX_BYTES]. */
int parse_bytes(const char *s, uint64_t *v) {
  char *end;
  unsigned long long x;
  int shift = 0;
  if (*s == '-' || *s == '\0')
    return -1;
  errno = 0;
  x = strtoull(s, &end, 10);
  if (errno || end == s)
    return -1;
  switch (*end) {
  case 'K': case 'k': shift = 10; end++; break;
  case 'M': case 'm': shift = 20; end++; break;
  case 'G': case 'g': shift = 30; end++; break;
  case 'T': case 't': shift = 40; end++; break;
  default: break;
  }
  if (*end || x > (TSR_CACHE_MAX_BYTES >> shift))
    return -1;
  *v = (uint64_t)x << shift;
  return *v >= TSR_CACHE_MIN_BYTES ? 0 : -1;
}

int parse_block(const char *s, int64_t b[2]) {
  long long w, h;
  int used = 0;
  if (sscanf(s, "%lldx%lld%n", &w, &h, &used) != 2 || s[used] != '\0' || w < 1 || h < 1 ||
      w > (1 << 20) || h > (1 << 20))
    return -1;
  b[0] = w;
  b[1] = h;
  return 0;
}


/* --method: 0 interp, 1 adaptive, 2 exact; -1 otherwise. */
int parse_method(const char *s) {
  static const char *const names[] = {"interp", "adaptive", "exact", "drizzle"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0)
      return i;
  return -1;
}

int parse_stretch(const char *s) {
  static const char *const names[] = {"linear", "sqrt", "log", "asinh"};
  static const tsr_stretch_t values[] = {TSR_STRETCH_LINEAR, TSR_STRETCH_SQRT, TSR_STRETCH_LOG,
                                         TSR_STRETCH_ASINH};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0)
      return (int)values[i];
  return -1;
}

int parse_nan_mode(const char *s) {
  return strcmp(s, "propagate") == 0 ? (int)TSR_NAN_PROPAGATE
         : strcmp(s, "ignore") == 0  ? (int)TSR_NAN_IGNORE
                                     : -1;
}

/* --dtype: TSR_F32 or TSR_F64; -1 otherwise. */
int parse_dtype(const char *s) {
  if (strcmp(s, "float32") == 0)
    return TSR_F32;
  if (strcmp(s, "float64") == 0)
    return TSR_F64;
  return -1;
}

int cli_same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return a && b && stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}
