/* hips.c -- `tessera hips IN... -o DIR`: a HiPS directory (tsr_write_hips)
 * from one or several FITS images. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "progress.h"

enum { H_LEVEL = 256, H_TILE, H_FRAME, H_COMBINE, H_FORMATS, H_NO_MOC, H_TITLE, H_CUT, H_STRETCH };

/* With the run options; those that do not apply to HiPS (tiles are
 * interp, float32, whole) are refused in parse_hips. */
static const struct option hips_opts[] = {
    {"level", required_argument, NULL, H_LEVEL},
    {"tile-width", required_argument, NULL, H_TILE},
    {"frame", required_argument, NULL, H_FRAME},
    {"combine", required_argument, NULL, H_COMBINE},
    {"formats", required_argument, NULL, H_FORMATS},
    {"no-moc", no_argument, NULL, H_NO_MOC},
    {"title", required_argument, NULL, H_TITLE},
    {"cut", required_argument, NULL, H_CUT},
    {"stretch", required_argument, NULL, H_STRETCH},
    CLI_RUN_OPTION_TABLE,
    {NULL, 0, NULL, 0}};

static int parse_hips(int argc, char **argv, const char **inputs, int *n, const char **dir,
                      cli_run_args_t *run, tsr_hips_opts_t *o) {
  int c, parsed;
  int64_t v;
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "-:o:j:", hips_opts, NULL)) != -1) {
    switch (c) {
    case 1: inputs[(*n)++] = optarg; break;
    case 'o': *dir = optarg; break;
    case H_LEVEL:
      if (parse_int64(optarg, &v) != 0 || v < 0 || v > 23)
        return usage_error("hips: --level '%s': expected a HiPS order from 0 to 26 - "
                           "log2(tile width) (23 for 8-pixel tiles, 17 for 512)", optarg);
      o->level = (int)v;
      break;
    case H_TILE:
      if (parse_int64(optarg, &v) != 0 || v < 8 || v > 4096 || (v & (v - 1)) != 0)
        return usage_error("hips: --tile-width '%s': expected a power of two from 8 to 4096",
                           optarg);
      o->tile_width = (int)v;
      break;
    case H_FRAME:
      if (strcmp(optarg, "equatorial") && strcmp(optarg, "galactic") && strcmp(optarg, "ecliptic"))
        return usage_error("hips: --frame '%s': expected equatorial, galactic or ecliptic", optarg);
      o->frame = optarg;
      break;
    case H_COMBINE:
      if ((parsed = tsr_combine_parse(optarg)) < 0)
        return usage_error("hips: --combine '%s': expected mean, sum, first, last, min, max or "
                           "median", optarg);
      o->combine = (tsr_combine_t)parsed;
      break;
    case H_FORMATS:
      if (strcmp(optarg, "fits") == 0)
        o->formats = TSR_HIPS_FITS;
      else if (strcmp(optarg, "fits,png") == 0 || strcmp(optarg, "png,fits") == 0)
        o->formats = TSR_HIPS_FITS | TSR_HIPS_PNG;
      else
        return usage_error("hips: --formats '%s': expected fits or fits,png (FITS tiles are "
                           "always written: lower orders are made from them)", optarg);
      break;
    case H_NO_MOC: o->moc = 0; break;
    case H_TITLE:
      if (optarg[0] == '\0' || strchr(optarg, '\n'))
        return usage_error("hips: --title '%s': expected a non-empty one-line title", optarg);
      o->title = optarg;
      break;
    case H_CUT: {
      char *comma = strchr(optarg, ','), lo[64];
      if (comma == NULL || (size_t)(comma - optarg) >= sizeof lo)
        return usage_error("hips: --cut '%s': expected LOW,HIGH (the values shown black and "
                           "white in PNG tiles)", optarg);
      snprintf(lo, sizeof lo, "%.*s", (int)(comma - optarg), optarg);
      if (parse_real(lo, &o->cut[0]) != 0 || parse_real(comma + 1, &o->cut[1]) != 0 ||
          !(o->cut[0] < o->cut[1]))
        return usage_error("hips: --cut '%s': expected LOW,HIGH, two finite numbers with LOW < "
                           "HIGH", optarg);
      o->has_cut = 1;
      break;
    }
    case H_STRETCH: {
      int k = parse_stretch(optarg);
      if (k < 0)
        return usage_error("hips: --stretch '%s': expected linear, sqrt, log or asinh", optarg);
      o->stretch = (tsr_stretch_t)k;
      break;
    }
    case CLI_REGION: case CLI_FP: case CLI_METHOD: case CLI_BLOCK: case CLI_DTYPE: case CLI_NORT: {
      const char *name = "?";
      for (int k = 0; hips_opts[k].name; k++)
        if (hips_opts[k].val == c)
          name = hips_opts[k].name;
      return usage_error("hips: option '--%s' does not apply (tiles are whole float32 interp "
                         "reprojections)", name);
    }
    default: {
      int rc = cli_run_option_or_usage("hips", c, optarg, argv, run);
      if (rc != 0)
        return rc;
    }
    }
  }
  if (*n == 0)
    return usage_error("hips: missing IN...: expected one or more FITS images");
  if (*dir == NULL)
    return usage_error("hips: missing -o DIR");
  if ((*dir)[0] == '\0')
    return usage_error("hips: -o '': expected a directory name");
  if (o->level >= 0 && o->level > 26 - (int)lround(log2(o->tile_width ? o->tile_width : 512)))
    return usage_error("hips: --level %d is too deep for %d-pixel tiles: expected at most %d",
                       o->level, o->tile_width ? o->tile_width : 512,
                       26 - (int)lround(log2(o->tile_width ? o->tile_width : 512)));
  for (int i = 0; i < *n; i++)
    if (cli_same_file(*dir, inputs[i]))
      return usage_error("hips: -o '%s' is the input '%s'; expected a new or empty directory",
                         *dir, inputs[i]);
  return cli_run_check("hips", run);
}

int cmd_hips(int argc, char **argv) {
  const char **inputs = calloc((size_t)argc + 1, sizeof *inputs), *dir = NULL;
  tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
  tsr_hips_report_t rep;
  cli_run_args_t run;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_cache_t *cache = NULL;
  tsr_node_t **nodes = NULL;
  tsr_run_opts_t ro;
  cli_progress_t prog;
  double t0 = cli_now();
  int n = 0, status = 1, rc;

  if (inputs == NULL)
    return fail("out of memory");
  cli_run_args_init(&run);
  if ((rc = parse_hips(argc, argv, inputs, &n, &dir, &run, &o)) != 0) {
    free(inputs);
    return rc;
  }
  o.order = run.interp.order;
  o.mapping_tolerance = run.interp.mapping_tolerance;
  nodes = calloc((size_t)n, sizeof *nodes);
  if (nodes == NULL || tsr_ctx_new(&ctx, NULL) != 0 || tsr_graph_new(ctx, &g) != 0) {
    fail("out of memory");
    goto out;
  }
  if ((status = cli_run_begin(ctx, &run, "hips", &ro, &cache, &prog)) != 0)
    goto out;
  status = 1;
  for (int i = 0; i < n; i++)
    nodes[i] = tsr_source_fits_hdu(g, inputs[i], &run.hdu);
  if (tsr_graph_status(g) != 0) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  o.run = &ro;
  rc = tsr_write_hips(g, n, nodes, dir, &o, &rep);
  cli_progress_end(&prog);
  if (cache && tsr_cache_warning(cache)[0])
    fprintf(stderr, "tessera: warning: %s\n", tsr_cache_warning(cache));
  if (rc != 0 || interrupted) {
    status = cli_run_failed(ctx, rc);
    goto out;
  }
  if (!run.quiet && cli_mpi_rank == 0)
    fprintf(stderr, "tessera: wrote HiPS %s: order %d, %d-pixel tiles, %" PRId64 " tiles at the "
            "deepest order (of %" PRId64 " computed), %" PRId64 " in all, in %.3f s\n",
            dir, rep.level, rep.tile_width, rep.tiles_deepest, rep.candidates, rep.tiles_total,
            cli_now() - t0);
  status = 0;
out:
  tsr_graph_free(g);
  tsr_cache_close(cache);
  tsr_ctx_free(ctx);
  if (run.mpi)
    tsr_mpi_finalize();
  free(nodes);
  free(inputs);
  return status;
}
