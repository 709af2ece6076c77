/* hooks.c -- the tessera tool for tests, with the test hooks reachable:
 * linked into tessera-hooks (the CLI over the engine's static components),
 * never into the installed tool.  TSR_TEST_NO_TMPFILE=1 sets
 * tsr__test_hooks.no_tmpfile before main, so that the CLI tests can kill
 * runs that write as on a filesystem without O_TMPFILE. */
#include <stdlib.h>

#include "internal.h"

__attribute__((constructor)) static void hooks_from_environment(void) {
  const char *e = getenv("TSR_TEST_NO_TMPFILE");
  tsr__test_hooks.no_tmpfile = e != NULL && e[0] == '1';
}
