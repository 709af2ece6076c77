/* harness.h -- a tiny TAP test harness.
 *
 * Each test program lists its tests with TEST(name) { ... } and ends with
 * TEST_MAIN().  Every test runs in a forked child with a timeout (libuv's
 * runner), so a crash or a hang fails that test only; `--no-fork` runs them
 * in-process for debuggers, and a test name on the command line runs only
 * that test.  Output is TAP; the summary is a TAP comment and the exit status
 * is 0 only if nothing failed.
 */
#ifndef TSR_HARNESS_H
#define TSR_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*th_fn)(void);
void th_register(const char *name, th_fn fn);
int th_main(int argc, char **argv);
void th_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));
void th_skip(const char *why) __attribute__((noreturn));
/* The scratch directory of this test program, shared by its tests and
 * removed at the end (kept with TSR_TEST_KEEP=1). */
const char *th_tmpdir(void);
/* Path inside th_tmpdir(); returns a static buffer rotated over 8 slots. */
const char *th_path(const char *name);
/* Directory of the source tree's tests/ (for fixtures and scripts). */
const char *th_srcdir(void);
/* Directory where the built tessera executable lives (build root /cli). */
const char *th_builddir(void);
/* Temporary files of tsr_write_fits (".tsr-" in the name) left in `dir`. */
int th_count_temps(const char *dir);

#define TEST(name)                                                   \
  static void test_##name(void);                                     \
  __attribute__((constructor)) static void th_reg_##name(void) {     \
    th_register(#name, test_##name);                                 \
  }                                                                  \
  static void test_##name(void)

#define TEST_MAIN() \
  int main(int argc, char **argv) { return th_main(argc, argv); }

#define ASSERT(c)                                                    \
  do {                                                               \
    if (!(c)) th_fail(__FILE__, __LINE__, "assertion failed: %s", #c); \
  } while (0)

#define ASSERT_INT_EQ(a, b)                                                     \
  do {                                                                          \
    long long th_a = (long long)(a), th_b = (long long)(b);                     \
    if (th_a != th_b)                                                           \
      th_fail(__FILE__, __LINE__, "%s == %s: %lld vs %lld", #a, #b, th_a, th_b); \
  } while (0)

#define ASSERT_NEAR(a, b, tol)                                                        \
  do {                                                                                \
    double th_a = (double)(a), th_b = (double)(b), th_t = (double)(tol);              \
    if (!(fabs(th_a - th_b) <= th_t))                                                 \
      th_fail(__FILE__, __LINE__, "%s ~ %s: %.17g vs %.17g (tol %g)", #a, #b, th_a, th_b, \
              th_t);                                                                  \
  } while (0)

#define ASSERT_STR_CONTAINS(hay, needle)                                          \
  do {                                                                            \
    const char *th_h = (hay), *th_n = (needle);                                   \
    if (th_h == NULL || strstr(th_h, th_n) == NULL)                               \
      th_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", th_h ? th_h : "(null)", \
              th_n);                                                              \
  } while (0)

#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    int th_rc = (expr);                                                        \
    if (th_rc != 0) th_fail(__FILE__, __LINE__, "%s returned %d", #expr, th_rc); \
  } while (0)

#endif
