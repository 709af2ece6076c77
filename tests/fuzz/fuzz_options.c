/* fuzz_options.c -- libFuzzer target: the CLI's option value parsers
 * (--region, --block, --cache-max-bytes, numbers) on any string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  tsr_region_t r;
  int64_t b[2], v;
  uint64_t u;
  double d;
  if (s == NULL)
    return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  if (parse_region(s, &r) == 0 && (r.start[0] < -(1LL << 62) - 1 || r.stop[1] > (1LL << 62)))
    abort(); /* the parser bounds the values */
  if (parse_block(s, b) == 0 && (b[0] < 1 || b[1] < 1 || b[0] > (1 << 20) || b[1] > (1 << 20)))
    abort(); /* the parser promises this range */
  if (parse_bytes(s, &u) == 0 && (u < (1u << 20) || u > (1ULL << 62)))
    abort();
  (void)parse_int64(s, &v);
  (void)parse_real(s, &d);
  free(s);
  return 0;
}
