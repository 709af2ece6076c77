/* harness.c -- see harness.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Registered by constructors, before main: grown as needed (a fixed table
 * once dropped every test past its 512th without a word). */
static struct th_test {
  const char *name;
  th_fn fn;
} *tests;
static int n_tests, cap_tests;
static char tmpdir[4096];

void th_register(const char *name, th_fn fn) {
  if (n_tests == cap_tests) {
    int cap = cap_tests ? 2 * cap_tests : 64;
    struct th_test *t = realloc(tests, (size_t)cap * sizeof *t);
    if (t == NULL) {
      fprintf(stderr, "harness: out of memory registering test %s\n", name);
      exit(1);
    }
    tests = t, cap_tests = cap;
  }
  tests[n_tests].name = name;
  tests[n_tests].fn = fn;
  n_tests++;
}

void th_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  fprintf(stdout, "# %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fprintf(stdout, "\n");
  fflush(stdout);
  exit(1);
}

void th_skip(const char *why) {
  fprintf(stdout, "# SKIP %s\n", why);
  fflush(stdout);
  exit(77);
}

const char *th_tmpdir(void) {
  if (tmpdir[0] == '\0') {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/tsr-test-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
      perror("mkdtemp");
      exit(2);
    }
  }
  return tmpdir;
}

const char *th_path(const char *name) {
  static char slots[8][4096];
  static int k;
  char *p = slots[k++ & 7];
  snprintf(p, 4096, "%s/%s", th_tmpdir(), name);
  return p;
}

const char *th_srcdir(void) {
  const char *s = getenv("TSR_TEST_SRCDIR");
  return s && *s ? s : TSR_TEST_SRCDIR;
}

const char *th_builddir(void) {
  const char *s = getenv("TSR_TEST_BUILDDIR");
  return s && *s ? s : TSR_TEST_BUILDDIR;
}

int th_count_temps(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  if (d == NULL)
    th_fail(__FILE__, __LINE__, "cannot list %s", dir);
  while ((e = readdir(d)) != NULL)
    if (strstr(e->d_name, ".tsr-") != NULL)
      n++;
  closedir(d);
  return n;
}

static void rm_rf(const char *dir) {
  char cmd[4200];
  if (dir[0] == '\0')
    return;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) {
    /* Nothing useful to do; the directory is under TMPDIR. */
  }
}

/* Run one test in a child with a timeout; returns 0 pass, 1 fail, 77 skip. */
static int run_forked(int i, int timeout_s) {
  pid_t pid;
  int status = 0;
  time_t t0 = time(NULL);

  fflush(stdout);
  pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    alarm((unsigned)timeout_s);
    tests[i].fn();
    fflush(stdout);
    _exit(0);
  }
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return 1;
  }
  if (WIFEXITED(status))
    return WEXITSTATUS(status) == 0 ? 0 : WEXITSTATUS(status) == 77 ? 77 : 1;
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    if (sig == SIGALRM)
      printf("# timed out after %ld s\n", (long)(time(NULL) - t0));
    else
      printf("# killed by signal %d (%s)\n", sig, strsignal(sig));
  }
  return 1;
}

int th_main(int argc, char **argv) {
  int fork_tests = 1, passed = 0, failed = 0, skipped = 0, n_run = 0;
  const char *only = NULL;
  int timeout_s = 120;
  const char *t = getenv("TSR_TEST_TIMEOUT");

  if (t && atoi(t) > 0)
    timeout_s = atoi(t);
  for (int a = 1; a < argc; a++) {
    if (strcmp(argv[a], "--no-fork") == 0)
      fork_tests = 0;
    else
      only = argv[a];
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* The scratch directory is made here, before the tests fork: made in a
   * test's child, its name would die with the child and nobody would remove
   * it. Tests share it, so each names its own files. */
  th_tmpdir();
  for (int i = 0; i < n_tests; i++)
    if (!only || strcmp(only, tests[i].name) == 0)
      n_run++;
  printf("1..%d\n", n_run);
  n_run = 0;
  for (int i = 0; i < n_tests; i++) {
    int r;
    if (only && strcmp(only, tests[i].name) != 0)
      continue;
    n_run++;
    if (fork_tests) {
      r = run_forked(i, timeout_s);
    } else {
      tests[i].fn();
      r = 0;
    }
    if (r == 0) {
      printf("ok %d - %s\n", n_run, tests[i].name);
      passed++;
    } else if (r == 77) {
      printf("ok %d - %s # SKIP\n", n_run, tests[i].name);
      skipped++;
    } else {
      printf("not ok %d - %s\n", n_run, tests[i].name);
      failed++;
    }
  }
  printf("# %d passed, %d failed, %d skipped\n", passed, failed, skipped);
  if (!getenv("TSR_TEST_KEEP"))
    rm_rf(tmpdir);
  free(tests);
  return failed ? 1 : 0;
}
