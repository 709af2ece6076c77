/* progress.c -- a progress bar with rate and ETA, drawn on stderr only when
 * stderr is a terminal and the run has lasted long enough to be worth it (or
 * when forced with --progress), redrawn at most ten times a second. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_progress_init(cli_progress_t *p, int mode, const char *label) {
  p->mode = mode;
  p->t0 = cli_now();
  p->drawn = 0;
  p->last = 0;
  p->label = label;
}

void cli_progress_cb(void *ud, int64_t done, int64_t total) {
  cli_progress_t *p = ud;
  double now = cli_now(), el = now - p->t0;
  char bar[31];
  int width = 30, fill;

  if (p->mode < 0 || total <= 0)
    return;
  if (p->mode == 0 && (!isatty(STDERR_FILENO) || el < 0.5))
    return;
  if (done < total && now - p->last < 0.1)
    return;
  p->last = now;
  fill = (int)((double)width * (double)done / (double)total);
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
  bar[width] = '\0';
  {
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld blocks  %.1f blocks/s  %.1f s  ETA %.1f s ",
            p->label, bar, (int)(100.0 * (double)done / (double)total), (long long)done,
            (long long)total, rate, el, eta);
    fflush(stderr);
  }
  p->drawn = 1;
}

void cli_progress_end(cli_progress_t *p) {
  if (p->drawn) {
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
    p->drawn = 0;
  }
}
