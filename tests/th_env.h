/* th_env.h -- a context and a graph for a test, opened and closed around
 * its body; assertion failures end the test (harness.h). */
#ifndef TSR_TH_ENV_H
#define TSR_TH_ENV_H

#include <tessera/tessera.h>

#include "harness.h"

typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
} th_env_t;

static inline void th_env_open(th_env_t *e) {
  if (tsr_ctx_new(&e->ctx, NULL) != 0 || tsr_graph_new(e->ctx, &e->g) != 0)
    th_fail(__FILE__, __LINE__, "cannot make a context and a graph");
}

static inline void th_env_close(th_env_t *e) {
  tsr_graph_free(e->g);
  tsr_ctx_free(e->ctx);
}

#endif
