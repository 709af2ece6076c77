/* hooks.c -- the tessera tool for tests, with the test hooks reachable:
 * linked into tessera-hooks (the CLI over the engine's static components),
 * never into the installed tool.  TSR_TEST_NO_TMPFILE=1 sets
 * tsr__test_hooks.no_tmpfile before main, so that the CLI tests can kill
 * runs that write as on a filesystem without O_TMPFILE.
 * TSR_TEST_HEALPIX_ROWS=1 prints, when the process exits, how many rows of
 * HEALPix tables it read ("healpix rows read: N" on stderr), for the tests
 * and bench/healpix to check that a region reads only the rows it needs. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

extern _Atomic int64_t tsr__healpix_rows_read;   /* io/healpix.c */

__attribute__((constructor)) static void hooks_from_environment(void) {
  const char *e = getenv("TSR_TEST_NO_TMPFILE");
  tsr__test_hooks.no_tmpfile = e != NULL && e[0] == '1';
}

__attribute__((destructor)) static void healpix_rows_at_exit(void) {
  const char *e = getenv("TSR_TEST_HEALPIX_ROWS");
  if (e != NULL && e[0] == '1')
    fprintf(stderr, "healpix rows read: %lld\n", (long long)atomic_load(&tsr__healpix_rows_read));
}
