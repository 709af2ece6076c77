/* to_healpix.c -- `tessera to-healpix`: images onto a HEALPix map
 * (reproject_to_healpix), one or several (a mosaic), written as a HEALPix
 * FITS table, full-sky or partial. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "progress.h"

typedef struct {
  const char **inputs;
  int n;
  const char *output;
  int64_t nside;
  int has_nside, nested, partial, has_combine, has_range;
  int64_t first, last;       /* --range FIRST:LAST, 0-based inclusive */
  const char *frame;         /* --frame; NULL = the first input's */
  tsr_combine_t combine;
  tsr_nan_mode_t nan_mode;   /* --nan-mode (exact only) */
  int has_nan_mode;
  cli_run_args_t run;        /* method, order, dtype, jobs, executor, cache, progress, quiet */
} to_healpix_args_t;

enum { T_NSIDE = 256, T_NESTED, T_RING, T_FRAME, T_PARTIAL, T_COMBINE, T_CHUNK, T_RANGE,
       T_NANMODE };

static const struct option to_healpix_opts[] = {
    {"nside", required_argument, NULL, T_NSIDE},
    {"nested", no_argument, NULL, T_NESTED},
    {"ring", no_argument, NULL, T_RING},
    {"frame", required_argument, NULL, T_FRAME},
    {"partial", no_argument, NULL, T_PARTIAL},
    {"combine", required_argument, NULL, T_COMBINE},
    {"chunk", required_argument, NULL, T_CHUNK},
    {"range", required_argument, NULL, T_RANGE},
    {"order", required_argument, NULL, CLI_ORDER},
    {"method", required_argument, NULL, CLI_METHOD},
    {"nan-mode", required_argument, NULL, T_NANMODE},
    CLI_EXEC_OPTION_TABLE,
    {NULL, 0, NULL, 0}};

static int64_t chunk_opt;

static int parse_args(int argc, char **argv, to_healpix_args_t *a) {
  const char *cmd = "to-healpix";
  int c, parsed;
  memset(a, 0, sizeof *a);
  cli_run_args_init(&a->run);
  a->combine = TSR_COMBINE_MEAN;
  a->inputs = calloc((size_t)argc, sizeof *a->inputs);
  if (a->inputs == NULL)
    return fail("out of memory");
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "-:o:j:", to_healpix_opts, NULL)) != -1) {
    switch (c) {
    case 1: a->inputs[a->n++] = optarg; break;
    case T_NSIDE:
      if (parse_int64(optarg, &a->nside) != 0 || a->nside < 1 || a->nside > ((int64_t)1 << 29))
        return usage_error("%s: --nside '%s': expected 1 to 2^29 (a power of 2 for --nested)",
                           cmd, optarg);
      a->has_nside = 1;
      break;
    case T_NESTED: a->nested = 1; break;
    case T_RING: a->nested = 0; break;
    case T_FRAME:
      if (strcmp(optarg, "galactic") && strcmp(optarg, "icrs") && strcmp(optarg, "ecliptic") &&
          strcmp(optarg, "G") && strcmp(optarg, "C") && strcmp(optarg, "E"))
        return usage_error("%s: --frame '%s': expected galactic, icrs or ecliptic (G, C, E)", cmd,
                           optarg);
      a->frame = optarg;
      break;
    case T_PARTIAL: a->partial = 1; break;
    case T_COMBINE:
      if ((parsed = tsr_combine_parse(optarg)) < 0)
        return usage_error("%s: --combine '%s': expected mean, sum, first, last, min, max or "
                           "median", cmd, optarg);
      a->combine = (tsr_combine_t)parsed;
      a->has_combine = 1;
      break;
    case T_CHUNK:
      if (parse_int64(optarg, &chunk_opt) != 0 || chunk_opt < 1 || chunk_opt > ((int64_t)1 << 24))
        return usage_error("%s: --chunk '%s': expected map pixels per chunk, 1 to 16777216", cmd,
                           optarg);
      break;
    case T_RANGE: {
      char *end;
      const char *colon = strchr(optarg, ':');
      if (colon == NULL || parse_int64(colon + 1, &a->last) != 0 ||
          (a->first = strtoll(optarg, &end, 10), end != colon) || a->first < 0 || a->last < a->first)
        return usage_error("%s: --range '%s': expected FIRST:LAST, pixel indices from 0 with "
                           "FIRST <= LAST", cmd, optarg);
      a->has_range = 1;
      break;
    }
    case T_NANMODE: {
      int k = parse_nan_mode(optarg);
      if (k < 0)
        return usage_error("%s: --nan-mode '%s': expected propagate or ignore", cmd, optarg);
      a->nan_mode = (tsr_nan_mode_t)k;
      a->has_nan_mode = 1;
      break;
    }
    case 'o': a->output = optarg; break;
    default: {
      int rc = cli_run_option_or_usage(cmd, c, optarg, argv, &a->run);
      if (rc != 0)
        return rc;
    }
    }
  }
  if (a->n == 0)
    return usage_error("%s: missing IN...: expected one or more FITS images", cmd);
  if (a->output == NULL)
    return usage_error("%s: missing -o OUT", cmd);
  if (!a->has_nside)
    return usage_error("%s: missing --nside N", cmd);
  if (a->nested && (a->nside & (a->nside - 1)) != 0)
    return usage_error("%s: --nside %" PRId64 " with --nested: expected a power of 2", cmd,
                       a->nside);
  if (a->has_range && a->last >= 12 * a->nside * a->nside)
    return usage_error("%s: --range %" PRId64 ":%" PRId64 " is outside the map, whose pixels are "
                       "0 to %" PRId64, cmd, a->first, a->last, 12 * a->nside * a->nside - 1);
  if (a->run.method == 1)
    return usage_error("%s: --method adaptive: expected interp or exact", cmd);
  if (a->has_nan_mode && a->run.method != 2)
    return usage_error("%s: option '--nan-mode' applies to --method exact only", cmd);
  if (a->has_combine && a->n == 1)
    return usage_error("%s: --combine goes with two or more inputs", cmd);
  for (int i = 0; i < a->n; i++)
    if (cli_same_file(a->output, a->inputs[i]))
      return usage_error("%s: -o '%s' is the input '%s'; expected a path that is not an input",
                         cmd, a->output, a->inputs[i]);
  return cli_run_check(cmd, &a->run);
}

static int run_to_healpix(const to_healpix_args_t *a) {
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_node_t **maps = NULL, *out;
  tsr_run_opts_t ro;
  tsr_cache_t *cache = NULL;
  cli_progress_t prog;
  tsr_to_healpix_opts_t to = TSR_TO_HEALPIX_OPTS_INIT;
  tsr_healpix_write_opts_t wo = TSR_HEALPIX_WRITE_OPTS_INIT;
  tsr_region_t region;
  double t0 = cli_now();
  int status = 1, rc;

  if (tsr_ctx_new(&ctx, NULL) != 0)
    return fail("out of memory");
  if ((status = cli_run_begin(ctx, &a->run, "to-healpix", &ro, &cache, &prog)) != 0)
    goto out;
  status = 1;
  if (tsr_graph_new(ctx, &g) != 0 || (maps = calloc((size_t)a->n, sizeof *maps)) == NULL) {
    fail("out of memory");
    goto out;
  }
  to.method = a->run.method == 2 ? TSR_TO_HEALPIX_EXACT : TSR_TO_HEALPIX_INTERP;
  to.nan_mode = a->nan_mode;
  to.order = a->run.interp.order;
  to.nested = a->nested;
  to.coordsys = a->frame;
  to.dtype = a->run.interp.dtype;
  to.chunk = chunk_opt;
  for (int i = 0; i < a->n; i++) {
    tsr_node_t *src = tsr_source_fits_hdu(g, a->inputs[i], &a->run.hdu);
    maps[i] = tsr_reproject_to_healpix(g, src, a->nside, &to);
    /* Every map in the frame of the first, unless --frame says. */
    if (i == 0 && maps[0] && to.coordsys == NULL) {
      /* COORDSYS= 'G       ': the letter is column 12 of its card. */
      static char cs[2];
      int ncards = 0;
      const char *cards = tsr_wcs_cards(tsr_node_wcs(maps[0]), &ncards);
      for (int k = 0; k < ncards; k++)
        if (strncmp(cards + 80 * k, "COORDSYS= '", 11) == 0) {
          cs[0] = cards[80 * k + 11];
          to.coordsys = cs;
        }
    }
  }
  if (a->n == 1) {
    out = maps[0];
  } else {
    tsr_coadd_opts_t co = TSR_COADD_OPTS_INIT;
    co.combine = a->combine;
    co.dtype = a->run.interp.dtype;
    out = tsr_coadd(g, a->n, maps, NULL, &co);
  }
  if (tsr_graph_status(g) != 0) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  region = tsr_region_of(out);
  if (a->has_range)
    region.start[0] = a->first, region.stop[0] = a->last + 1;
  wo.partial = a->partial;
  wo.run = &ro;
  rc = tsr_write_healpix(g, out, a->output, &region, &wo);
  cli_progress_end(&prog);
  if (cache && tsr_cache_warning(cache)[0])
    fprintf(stderr, "tessera: warning: %s\n", tsr_cache_warning(cache));
  if (rc != 0 || interrupted) {
    status = cli_run_failed(ctx, rc);
    goto out;
  }
  if (!a->run.quiet && cli_mpi_rank == 0)
    fprintf(stderr, "tessera: wrote %s (nside %" PRId64 " %s, %s, pixels %" PRId64 " to %" PRId64
                    ", %s) in %.3f s\n",
            a->output, a->nside, a->nested ? "NESTED" : "RING",
            a->partial ? "partial" : "implicit", region.start[0], region.stop[0] - 1,
            tsr_dtype_name(tsr_node_dtype(out)), cli_now() - t0);
  status = 0;
out:
  free(maps);
  tsr_graph_free(g);
  tsr_cache_close(cache);
  tsr_ctx_free(ctx);
  if (a->run.mpi)
    tsr_mpi_finalize();
  return status;
}

int cmd_to_healpix(int argc, char **argv) {
  to_healpix_args_t a;
  int rc = parse_args(argc, argv, &a);
  if (rc == 0)
    rc = run_to_healpix(&a);
  free(a.inputs);
  return rc;
}
