/* progress.h -- a progress bar on stderr for the tessera CLI. */
#ifndef TSR_CLI_PROGRESS_H
#define TSR_CLI_PROGRESS_H

#include <stdint.h>

typedef struct {
  int mode;            /* 0 = auto (a terminal and a long run), 1 = always, -1 = never */
  double t0;           /* start, seconds */
  int drawn;           /* something is on the line */
  double last;         /* last draw time */
  const char *label;
} cli_progress_t;

double cli_now(void);
void cli_progress_init(cli_progress_t *p, int mode, const char *label);
/* A tsr_progress_fn. */
void cli_progress_cb(void *ud, int64_t done, int64_t total);
/* Clear the bar line if one was drawn. */
void cli_progress_end(cli_progress_t *p);

#endif
