/* key.c -- canonical encodings and 128-bit content keys.
 *
 * DESIGN: a node's key is XXH3-128 of a canonical byte string: op name, op
 * version, the op's parameter encoding and the keys of its inputs.  Equal keys
 * mean equal data, so the encoding must be independent of how a value was
 * spelled (integers little-endian, doubles by bit pattern with -0.0 and NaN
 * folded, strings length-prefixed so that concatenations cannot collide).
 * Appends never fail loudly: the first failed allocation makes the buffer
 * sticky-bad and the caller checks `oom` once at the end.
 */
#include <math.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

void tsr__buf_init(tsr__buf_t *b, tsr_ctx_t *ctx) {
  memset(b, 0, sizeof *b);
  b->ctx = ctx;
}

void tsr__buf_release(tsr__buf_t *b) {
  tsr__free(b->ctx, b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

void tsr__buf_put(tsr__buf_t *b, const void *p, size_t n) {
  if (b->oom || n == 0)
    return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    unsigned char *q;
    while (cap < b->len + n)
      cap *= 2;
    q = tsr__realloc(b->ctx, b->p, cap);
    if (q == NULL) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

void tsr__buf_put_i64(tsr__buf_t *b, int64_t v) {
  unsigned char le[8];
  uint64_t u = (uint64_t)v;
  for (int i = 0; i < 8; i++)
    le[i] = (unsigned char)(u >> (8 * i));
  tsr__buf_put(b, le, 8);
}

void tsr__buf_put_f64(tsr__buf_t *b, double v) {
  uint64_t u;
  if (v == 0.0)
    v = 0.0; /* folds -0.0 */
  if (isnan(v))
    v = NAN;
  memcpy(&u, &v, 8);
  tsr__buf_put_i64(b, (int64_t)u);
}

void tsr__buf_put_str(tsr__buf_t *b, const char *s) {
  size_t n = strlen(s);
  tsr__buf_put_i64(b, (int64_t)n);
  tsr__buf_put(b, s, n);
}

void tsr__hash128(const void *p, size_t n, uint8_t key[16]) {
  XXH128_hash_t h = XXH3_128bits(p, n);
  for (int i = 0; i < 8; i++) {
    key[i] = (uint8_t)(h.low64 >> (8 * i));
    key[8 + i] = (uint8_t)(h.high64 >> (8 * i));
  }
}
