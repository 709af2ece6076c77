/* guard.c -- reading a file mapping without dying when the file shrinks.
 *
 * DESIGN: sources map their files and readers touch the pages directly (a
 * window copy, or an op reading a view in place).  If another process
 * truncates the file meanwhile, the next access to a page past the new end
 * raises SIGBUS, which would kill the process (or a pool worker, three
 * times) with no word about the file.  tsr__sigbus_guard runs a piece of
 * work so that such a fault jumps back out of it instead, and the caller can
 * fail the task with a message that names the file.  Anything the work had
 * allocated is the caller's to release (ops keep it in their per-run state,
 * freed when the run stops).
 *
 * Threads: a SIGBUS from a memory access is delivered to the thread that
 * faulted, so each thread keeps its own jump target (thread-local) and
 * guards nest per thread.  The handler is installed once per process, the
 * first time a guard runs, and never swapped around each piece of work: a
 * process-wide sigaction changed and restored by one thread while another
 * is inside its guard left the other unprotected, or sent its fault to the
 * first thread's jump buffer (a crash in the wrong thread).  A fault in a
 * thread outside any guard goes to the handler that was installed before
 * ours, or, if there was none, kills the process as SIGBUS would.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>

#include "internal.h"

/* initial-exec: the handler reads it, and a thread's static TLS exists from
 * its start, so the access never allocates (general-dynamic TLS in a shared
 * library may, on first use, which a signal handler must not do). */
static _Thread_local sigjmp_buf *bus_jump __attribute__((tls_model("initial-exec")));
static struct sigaction previous;
static pthread_once_t installed = PTHREAD_ONCE_INIT;

static void on_sigbus(int sig, siginfo_t *info, void *uc) {
  if (bus_jump)
    siglongjmp(*bus_jump, 1);
  if (previous.sa_flags & SA_SIGINFO) {
    previous.sa_sigaction(sig, info, uc);
    return;
  }
  if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
    return;
  }
  /* Not ours and nobody else's: die of it, as without us (the signal is
   * blocked in here, so it arrives as the handler returns). */
  signal(sig, SIG_DFL);
  raise(sig);
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &previous);
}

int tsr__sigbus_guard(int (*fn)(void *), void *arg, bool *bus) {
  sigjmp_buf jb;
  sigjmp_buf *volatile outer = bus_jump;
  volatile int rc = 0;

  *bus = false;
  pthread_once(&installed, install);
  if (sigsetjmp(jb, 1) == 0) {
    bus_jump = &jb;
    rc = fn(arg);
  } else {
    *bus = true;
    rc = TSR_EIO;
  }
  bus_jump = outer;
  return rc;
}
