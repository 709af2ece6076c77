/* guard.c -- reading a file mapping without dying when the file shrinks.
 *
 * DESIGN: sources map their files and readers touch the pages directly (a
 * window copy, or an op reading a view in place).  If another process
 * truncates the file meanwhile, the next access to a page past the new end
 * raises SIGBUS, which would kill the process (or a pool worker, three
 * times) with no word about the file.  tsr__sigbus_guard runs a piece of
 * work with a handler that jumps back out of it instead, so the caller can
 * fail the task with a message that names the file.  The handler is
 * installed only around the work and the previous one restored; guards may
 * nest.  Anything the work had allocated is the caller's to release (ops
 * keep it in their per-run state, freed when the run stops).
 */
#include <setjmp.h>
#include <signal.h>
#include <string.h>

#include "internal.h"

static sigjmp_buf *volatile bus_jump;

static void on_sigbus(int sig) {
  if (bus_jump)
    siglongjmp(*bus_jump, 1);
  signal(sig, SIG_DFL);
  raise(sig);
}

int tsr__sigbus_guard(int (*fn)(void *), void *arg, bool *bus) {
  struct sigaction sa, old;
  sigjmp_buf jb;
  sigjmp_buf *volatile outer = bus_jump;
  volatile int rc = 0;

  *bus = false;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old);
  if (sigsetjmp(jb, 1) == 0) {
    bus_jump = &jb;
    rc = fn(arg);
  } else {
    *bus = true;
    rc = TSR_EIO;
  }
  bus_jump = outer;
  sigaction(SIGBUS, &old, NULL);
  return rc;
}
