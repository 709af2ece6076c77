/* runopts.c -- the options `reproject` and `mosaic` share (how to read the
 * inputs, reproject them, and run: region, block, workers, cache,
 * verbosity), parsed and checked in one place so that the two commands
 * cannot drift apart, and the run options made from them. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void cli_run_args_init(cli_run_args_t *r) {
  tsr_interp_opts_t dflt = TSR_INTERP_OPTS_INIT;
  tsr_hdu_t hdu = TSR_HDU_INIT;
  memset(r, 0, sizeof *r);
  r->hdu = hdu;
  r->interp = dflt;
  r->retries = 2;
  if (getenv("TESSERA_CACHE") && getenv("TESSERA_CACHE")[0])
    r->cache_dir = getenv("TESSERA_CACHE");
}

int cli_run_option(const char *cmd, int c, const char *arg, cli_run_args_t *r) {
  int64_t v;
  int parsed; /* a parsed enum, checked before it is stored: the enum types may be unsigned */
  double t;
  switch (c) {
  case CLI_HDU: {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s: ", cmd);
    return parse_hdu(prefix, arg, &r->hdu) != 0 ? EXIT_USAGE : 0;
  }
  case CLI_METHOD:
    if ((r->method = parse_method(arg)) < 0)
      return usage_error("%s: --method '%s': expected interp, adaptive or exact", cmd, arg);
    return 0;
  case CLI_ORDER:
    r->order_given = 1;
    if ((parsed = tsr_order_parse(arg)) < 0)
      return usage_error("%s: --order '%s': expected nearest-neighbor, bilinear, biquadratic or "
                         "bicubic", cmd, arg);
    r->interp.order = (tsr_order_t)parsed;
    return 0;
  case CLI_REGION:
    if (parse_region(arg, &r->region) != 0)
      return usage_error("%s: --region '%s': expected X1:X2,Y1:Y2 (1-based, inclusive)", cmd, arg);
    if (r->region.stop[0] <= r->region.start[0] || r->region.stop[1] <= r->region.start[1])
      return usage_error("%s: --region %s is empty: expected X1 <= X2 and Y1 <= Y2", cmd, arg);
    r->has_region = 1;
    return 0;
  case CLI_BLOCK:
    if (parse_block(arg, r->interp.block) != 0)
      return usage_error("%s: --block '%s': expected WxH with 1 <= W, H <= 1048576", cmd, arg);
    return 0;
  case CLI_TOL:
    if (parse_real(arg, &t) != 0 || !(t >= 0 && t <= 1))
      return usage_error("%s: --mapping-tolerance '%s': expected pixels in [0, 1]", cmd, arg);
    r->interp.mapping_tolerance = t;
    r->mapping_opt = "mapping-tolerance";
    return 0;
  case CLI_NORT:
    r->interp.roundtrip = 0;
    r->mapping_opt = "no-roundtrip";
    return 0;
  case CLI_FP: r->footprint = arg; return 0;
  case CLI_DTYPE:
    if ((r->interp.dtype = parse_dtype(arg)) < 0)
      return usage_error("%s: --dtype '%s': expected float32 or float64", cmd, arg);
    return 0;
  case CLI_PROGRESS: r->progress = 1; return 0;
  case CLI_QUIET: r->quiet = 1; return 0;
  case 'j':
    if (parse_int64(arg, &v) != 0 || v < 0 || v > 4096)
      return usage_error("%s: --jobs '%s': expected a number of workers, 0 to 4096 (0 = one per "
                         "CPU, 1 = none)", cmd, arg);
    r->jobs = (int)v;
    return 0;
  case CLI_RETRIES:
    if (parse_int64(arg, &v) != 0 || v < 0 || v > 100)
      return usage_error("%s: --retries '%s': expected 0 to 100", cmd, arg);
    r->retries = (int)v;
    r->pool_opt = "retries";
    return 0;
  case CLI_TIMEOUT:
    if (parse_real(arg, &t) != 0 || !(t >= 0 && t <= 1e6))
      return usage_error("%s: --task-timeout '%s': expected seconds, 0 (none) to 1e6", cmd, arg);
    r->task_timeout_s = t;
    r->pool_opt = "task-timeout";
    return 0;
  case CLI_CACHE:
    if (arg[0] == '\0')
      return usage_error("%s: --cache '': expected a directory", cmd);
    r->cache_dir = arg;
    return 0;
  case CLI_NO_CACHE: r->cache_dir = NULL; return 0;
  case CLI_CACHE_MAX:
    if (parse_bytes(arg, &r->cache_max_bytes) != 0)
      return usage_error("%s: --cache-max-bytes '%s': expected bytes with an optional K, M, G or "
                         "T suffix, in [1M, 2^62]", cmd, arg);
    return 0;
  case CLI_EXECUTOR:
    return cli_parse_executor(arg, &r->mpi, &r->executor) != 0 ? EXIT_USAGE : 0;
  default: return -1;
  }
}

int cli_run_option_or_usage(const char *cmd, int c, const char *arg, char *const *argv,
                            cli_run_args_t *r) {
  int rc;
  if (c == ':')
    return usage_error("%s: option '%s' needs a value", cmd, argv[optind - 1]);
  if (c == '?' || (rc = cli_run_option(cmd, c, arg, r)) < 0)
    return usage_error("%s: unknown option '%s'", cmd, argv[optind - 1]);
  return rc;
}

int cli_run_check(const char *cmd, cli_run_args_t *r) {
  if (r->method == 2 && r->order_given)
    return usage_error("%s: option '--order' does not apply to --method exact (it applies to "
                       "--method interp only)", cmd);
  if (r->method == 2 && r->mapping_opt)
    return usage_error("%s: option '--%s' does not apply to --method exact (corners are mapped "
                       "exactly)", cmd, r->mapping_opt);
  if (r->method == 1 && r->order_given)
    return usage_error("%s: option '--order' applies to --method interp only", cmd);
  /* Retries and timeouts need workers that can die alone: processes. */
  if (r->pool_opt && r->executor == TSR_EXECUTOR_THREADS)
    return usage_error("%s: option '--%s' applies to --executor processes, not threads (a thread "
                       "cannot be killed or retried alone)", cmd, r->pool_opt);
  if (r->pool_opt && r->executor == TSR_EXECUTOR_DEFAULT && !r->mpi)
    r->executor = TSR_EXECUTOR_PROCESSES;
  return 0;
}

int cli_run_begin(tsr_ctx_t *ctx, const cli_run_args_t *r, const char *label, tsr_run_opts_t *ro,
                  tsr_cache_t **cache, cli_progress_t *prog) {
  tsr_run_opts_t dflt = TSR_RUN_OPTS_INIT;
  *ro = dflt;
  *cache = NULL;
  if (r->mpi && cli_mpi_begin(ctx, ro) != 0)
    return 1;
  /* A cache that cannot be used sets itself aside with a warning; only a
   * bad budget or no memory stops here. */
  if (r->cache_dir &&
      tsr_cache_open(ctx, r->cache_dir,
                     r->cache_max_bytes ? r->cache_max_bytes : TSR_CACHE_DEFAULT_BYTES, cache) != 0)
    return fail(tsr_errmsg(ctx));
  cli_progress_init(prog, r->quiet || cli_mpi_rank ? -1 : r->progress, label);
  ro->progress = cli_progress_cb;
  ro->progress_ud = prog;
  ro->cancel = &interrupted;
  /* On the command line 0 means one per CPU; in the library 0 is serial. */
  ro->jobs = r->jobs == 0 ? TSR_JOBS_PER_CPU : r->jobs;
  ro->executor = (tsr_executor_t)r->executor;
  ro->retries = r->retries;
  ro->task_timeout_s = r->task_timeout_s;
  ro->cache = *cache;
  install_signals();
  return 0;
}

int cli_run_region(const cli_run_args_t *r, const tsr_node_t *out, tsr_region_t *region) {
  /* Say what is wrong in the terms the user typed (1-based, inclusive). */
  int64_t nx = tsr_node_shape(out, 0), ny = tsr_node_shape(out, 1);
  long long x1 = r->region.start[0] + 1, x2 = r->region.stop[0], y1 = r->region.start[1] + 1,
            y2 = r->region.stop[1];
  if (!r->has_region)
    return 0;
  if (x1 < 1 || y1 < 1 || x2 > nx || y2 > ny) {
    fprintf(stderr,
            "tessera: --region %lld:%lld,%lld:%lld is outside the output, which is %lld x %lld; "
            "expected 1 <= X1 <= X2 <= %lld and 1 <= Y1 <= Y2 <= %lld\n",
            x1, x2, y1, y2, (long long)nx, (long long)ny, (long long)nx, (long long)ny);
    return 1;
  }
  *region = r->region;
  /* Planes of a cube: all of them. */
  for (int ax = 2; ax < TSR_MAX_DIMS; ax++) {
    region->start[ax] = 0;
    region->stop[ax] = tsr_node_shape(out, ax);
  }
  return 0;
}

/* --hdu: see cli.h.  Prints its own usage error (so it is not in options.c,
 * whose parsers the fuzz target feeds without the CLI around them). */
int parse_hdu(const char *cmd, const char *s, tsr_hdu_t *h) {
  static char name[72];   /* the CLI parses one --hdu per run */
  const char *comma = strchr(s, ',');
  int64_t v;
  tsr_hdu_t z = TSR_HDU_INIT;
  *h = z;
  if (parse_int64(s, &v) == 0) {
    if (v < 0 || v > 100000)
      return usage_error("%s--hdu '%s': expected an HDU number >= 1 (the primary HDU is 1, the "
                         "first extension 2; 0 = the first with data) or an EXTNAME[,EXTVER]",
                         cmd, s);
    h->hdu = (int)v;
    return 0;
  }
  if (s[0] == '\0' || s == comma || strlen(s) >= sizeof name)
    return usage_error("%s--hdu '%s': expected an HDU number or an EXTNAME[,EXTVER] of at most "
                       "68 characters", cmd, s);
  snprintf(name, sizeof name, "%.*s", (int)(comma ? (size_t)(comma - s) : strlen(s)), s);
  h->extname = name;
  h->extver = 0;
  if (comma != NULL && (parse_int64(comma + 1, &v) != 0 || v < 1 || v > 1000000))
    return usage_error("%s--hdu '%s': expected EXTNAME,EXTVER with EXTVER >= 1", cmd, s);
  if (comma != NULL)
    h->extver = (int)v;
  return 0;
}
