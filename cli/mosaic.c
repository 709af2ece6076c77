/* mosaic.c -- `tessera mosaic` and `tessera mosaic-header`: reproject_and_coadd
 * and find_optimal_celestial_wcs from the command line. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "progress.h"

typedef struct {
  const char **inputs, **weights;
  int n, n_weights;
  const char *target, *output, *footprint, *cache_dir;
  tsr_hdu_t hdu;
  int method, quiet, progress, jobs, match_background, background_reference;
  int auto_target, has_target_opts, mpi, executor;
  tsr_interp_opts_t interp;
  tsr_coadd_opts_t coadd;
  tsr_optimal_wcs_opts_t optimal;
} mosaic_args_t;

enum { M_TARGET = 256, M_AUTO, M_PROJ, M_FRAME, M_RES, M_ROTATE, M_COMBINE, M_WEIGHTS, M_MATCH,
       M_BGREF, M_BLANK, M_FP, M_METHOD, M_ORDER, M_DTYPE, M_BLOCK, M_CACHE, M_QUIET, M_PROGRESS,
       M_HDU, M_TOL, M_NORT, M_REFERENCE, M_EXECUTOR };

static const struct option mosaic_opts[] = {
    {"target", required_argument, NULL, M_TARGET},
    {"auto", no_argument, NULL, M_AUTO},
    {"projection", required_argument, NULL, M_PROJ},
    {"frame", required_argument, NULL, M_FRAME},
    {"resolution", required_argument, NULL, M_RES},
    {"auto-rotate", no_argument, NULL, M_ROTATE},
    {"reference", required_argument, NULL, M_REFERENCE},
    {"combine", required_argument, NULL, M_COMBINE},
    {"weights", required_argument, NULL, M_WEIGHTS},
    {"match-background", no_argument, NULL, M_MATCH},
    {"background-reference", required_argument, NULL, M_BGREF},
    {"blank", required_argument, NULL, M_BLANK},
    {"footprint", required_argument, NULL, M_FP},
    {"method", required_argument, NULL, M_METHOD},
    {"order", required_argument, NULL, M_ORDER},
    {"dtype", required_argument, NULL, M_DTYPE},
    {"block", required_argument, NULL, M_BLOCK},
    {"mapping-tolerance", required_argument, NULL, M_TOL},
    {"no-roundtrip", no_argument, NULL, M_NORT},
    {"hdu", required_argument, NULL, M_HDU},
    {"jobs", required_argument, NULL, 'j'},
    {"cache", required_argument, NULL, M_CACHE},
    {"quiet", no_argument, NULL, M_QUIET},
    {"progress", no_argument, NULL, M_PROGRESS},
    {"executor", required_argument, NULL, M_EXECUTOR},
    {"output", required_argument, NULL, 'o'},
    {NULL, 0, NULL, 0}};

/* Parse the arguments of `mosaic` (header_only = 0) or `mosaic-header`. */
static int parse_args(int argc, char **argv, int header_only, mosaic_args_t *a) {
  const char *cmd = header_only ? "mosaic-header" : "mosaic";
  tsr_interp_opts_t idflt = TSR_INTERP_OPTS_INIT;
  tsr_coadd_opts_t cdflt = TSR_COADD_OPTS_INIT;
  tsr_optimal_wcs_opts_t odflt = TSR_OPTIMAL_WCS_OPTS_INIT;
  int c;
  int64_t v;

  memset(a, 0, sizeof *a);
  a->interp = idflt;
  a->coadd = cdflt;
  a->optimal = odflt;
  a->background_reference = -1;
  a->inputs = calloc((size_t)argc, sizeof *a->inputs);
  a->weights = calloc((size_t)argc, sizeof *a->weights);
  if (a->inputs == NULL || a->weights == NULL)
    return fail("out of memory");
  if (getenv("TESSERA_CACHE") && getenv("TESSERA_CACHE")[0])
    a->cache_dir = getenv("TESSERA_CACHE");
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "-:o:j:", mosaic_opts, NULL)) != -1) {
    /* In header mode only the target's options apply. */
    if (header_only && c != 1 && c != 'o' && c != M_PROJ && c != M_FRAME && c != M_RES &&
        c != M_ROTATE && c != M_REFERENCE && c != M_HDU && c != ':' && c != '?') {
      const char *name = "?";
      for (int k = 0; mosaic_opts[k].name; k++)
        if (mosaic_opts[k].val == c)
          name = mosaic_opts[k].name;
      return usage_error("mosaic-header: option '--%s' does not apply (it writes a header only)",
                         c == 'j' ? "jobs" : name);
    }
    switch (c) {
    case 1: a->inputs[a->n++] = optarg; break;
    case M_TARGET: a->target = optarg; break;
    case M_AUTO: a->auto_target = 1; break;
    case M_PROJ:
      if (strlen(optarg) != 3)
        return usage_error("%s: --projection '%s': expected a 3-letter code such as TAN, SIN, CAR",
                           cmd, optarg);
      a->optimal.projection = optarg;
      a->has_target_opts = 1;
      break;
    case M_FRAME:
      if (strcmp(optarg, "icrs") && strcmp(optarg, "fk5") && strcmp(optarg, "fk4") &&
          strcmp(optarg, "fk4-no-e") && strcmp(optarg, "galactic") &&
          strcmp(optarg, "supergalactic") && strcmp(optarg, "ecliptic"))
        return usage_error("%s: --frame '%s': expected icrs, fk5, fk4, fk4-no-e, galactic, "
                           "supergalactic or ecliptic", cmd, optarg);
      a->optimal.frame = optarg;
      a->has_target_opts = 1;
      break;
    case M_RES: {
      double r;
      if (parse_real(optarg, &r) != 0 || !(r > 0 && r < 3600.0 * 180))
        return usage_error("%s: --resolution '%s': expected arcseconds per pixel > 0", cmd, optarg);
      a->optimal.resolution = r / 3600.0;
      a->has_target_opts = 1;
      break;
    }
    case M_ROTATE: a->optimal.auto_rotate = 1; a->has_target_opts = 1; break;
    case M_REFERENCE: {
      char *end;
      double lon = strtod(optarg, &end), lat;
      if (end == optarg || *end != ',' || (lat = strtod(end + 1, &end), *end) || !isfinite(lon) ||
          !(lat >= -90 && lat <= 90))
        return usage_error("%s: --reference '%s': expected LON,LAT in degrees", cmd, optarg);
      a->optimal.has_reference = 1;
      a->optimal.reference_lon = lon;
      a->optimal.reference_lat = lat;
      a->has_target_opts = 1;
      break;
    }
    case M_COMBINE:
      if ((a->coadd.combine = tsr_combine_parse(optarg)) < 0)
        return usage_error("mosaic: --combine '%s': expected mean, sum, first, last, min, max or "
                           "median", optarg);
      break;
    case M_WEIGHTS: a->weights[a->n_weights++] = optarg; break;
    case M_MATCH: a->match_background = 1; break;
    case M_BGREF:
      if (parse_int64(optarg, &v) != 0 || v < 1 || v > 100000)
        return usage_error("mosaic: --background-reference '%s': expected an input number, 1 to N",
                           optarg);
      a->background_reference = (int)v - 1;
      break;
    case M_BLANK:
      if (strcmp(optarg, "nan") == 0 || strcmp(optarg, "NaN") == 0)
        a->coadd.blank = NAN;
      else if (parse_real(optarg, &a->coadd.blank) != 0)
        return usage_error("mosaic: --blank '%s': expected a number or nan", optarg);
      break;
    case M_FP: a->footprint = optarg; break;
    case M_METHOD:
      if ((a->method = parse_method(optarg)) < 0)
        return usage_error("mosaic: --method '%s': expected interp, adaptive or exact", optarg);
      break;
    case M_ORDER:
      if ((a->interp.order = tsr_order_parse(optarg)) < 0)
        return usage_error("mosaic: --order '%s': expected nearest-neighbor, bilinear, biquadratic "
                           "or bicubic", optarg);
      break;
    case M_DTYPE:
      if ((a->coadd.dtype = parse_dtype(optarg)) < 0)
        return usage_error("mosaic: --dtype '%s': expected float32 or float64", optarg);
      break;
    case M_BLOCK:
      if (parse_block(optarg, a->interp.block) != 0)
        return usage_error("mosaic: --block '%s': expected WxH with 1 <= W, H <= 1048576", optarg);
      break;
    case M_TOL:
      if (parse_real(optarg, &a->interp.mapping_tolerance) != 0 ||
          !(a->interp.mapping_tolerance >= 0 && a->interp.mapping_tolerance <= 1))
        return usage_error("mosaic: --mapping-tolerance '%s': expected pixels in [0, 1]", optarg);
      break;
    case M_NORT: a->interp.roundtrip = 0; break;
    case M_HDU: {
      char prefix[32];
      snprintf(prefix, sizeof prefix, "%s: ", cmd);
      if (parse_hdu(prefix, optarg, &a->hdu) != 0)
        return EXIT_USAGE;
      break;
    }
    case 'j':
      if (parse_int64(optarg, &v) != 0 || v < 0 || v > 4096)
        return usage_error("mosaic: --jobs '%s': expected 0 to 4096 (0 = one per CPU)", optarg);
      a->jobs = (int)v;
      break;
    case M_CACHE:
      if (optarg[0] == '\0')
        return usage_error("mosaic: --cache '': expected a directory");
      a->cache_dir = optarg;
      break;
    case M_EXECUTOR:
      if (cli_parse_executor(optarg, &a->mpi, &a->executor) != 0)
        return EXIT_USAGE;
      break;
    case M_QUIET: a->quiet = 1; break;
    case M_PROGRESS: a->progress = 1; break;
    case 'o': a->output = optarg; break;
    case ':': return usage_error("%s: option '%s' needs a value", cmd, argv[optind - 1]);
    default: return usage_error("%s: unknown option '%s'", cmd, argv[optind - 1]);
    }
  }
  if (a->n == 0)
    return usage_error("%s: missing IN...: expected one or more FITS images", cmd);
  if (a->output == NULL)
    return usage_error("%s: missing -o %s", cmd, header_only ? "TARGET.hdr" : "OUT");
  if (header_only)
    return 0;
  if ((a->target != NULL) == (a->auto_target != 0))
    return usage_error("mosaic: expected exactly one of --target TARGET and --auto");
  if (a->target && a->has_target_opts)
    return usage_error("mosaic: --projection, --frame, --resolution, --reference and "
                       "--auto-rotate go with --auto, not --target");
  if (a->n_weights && a->n_weights != a->n)
    return usage_error("mosaic: %d --weights for %d inputs: expected one per input, in order",
                       a->n_weights, a->n);
  if (a->background_reference >= a->n)
    return usage_error("mosaic: --background-reference %d: there are %d inputs",
                       a->background_reference + 1, a->n);
  if (a->background_reference >= 0 && !a->match_background)
    return usage_error("mosaic: --background-reference goes with --match-background");
  if (a->method == 2 && (a->interp.order != idflt.order || a->interp.mapping_tolerance != idflt.mapping_tolerance))
    return usage_error("mosaic: --order and --mapping-tolerance do not apply to --method exact");
  return 0;
}

/* The target of --auto (find_optimal_celestial_wcs) from the inputs' headers. */
static int auto_target(tsr_ctx_t *ctx, const mosaic_args_t *a, tsr_wcs_t **out) {
  tsr_wcs_t **w = calloc((size_t)a->n, sizeof *w);
  int rc = 0;
  if (w == NULL)
    return TSR_ENOMEM;
  for (int i = 0; i < a->n && rc == 0; i++)
    rc = tsr_wcs_read_fits_hdu(ctx, a->inputs[i], &a->hdu, &w[i]);
  if (rc == 0)
    rc = tsr_optimal_wcs(ctx, a->n, (const tsr_wcs_t *const *)w, &a->optimal, out);
  for (int i = 0; i < a->n; i++)
    tsr_wcs_free(w[i]);
  free(w);
  return rc;
}

static tsr_node_t *reproject(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                             const mosaic_args_t *a) {
  if (a->method == 1) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.mapping_tolerance = a->interp.mapping_tolerance;
    o.roundtrip = a->interp.roundtrip;
    o.block[0] = a->interp.block[0], o.block[1] = a->interp.block[1];
    return tsr_reproject_adaptive(g, src, target, &o);
  }
  if (a->method == 2) {
    tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
    o.block[0] = a->interp.block[0], o.block[1] = a->interp.block[1];
    return tsr_reproject_exact(g, src, target, &o);
  }
  return tsr_reproject_interp(g, src, target, &a->interp);
}

int cmd_mosaic(int argc, char **argv) {
  mosaic_args_t a;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *target = NULL;
  tsr_cache_t *cache = NULL;
  tsr_node_t **data = NULL, **wts = NULL, *out, *nodes[2];
  const char *paths[2];
  double *offsets = NULL, t0 = cli_now();
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  cli_progress_t prog;
  int status = 1, rc;

  if ((rc = parse_args(argc, argv, 0, &a)) != 0)
    goto done;
  rc = 1;
  data = calloc((size_t)a.n, sizeof *data);
  wts = calloc((size_t)a.n, sizeof *wts);
  offsets = calloc((size_t)a.n, sizeof *offsets);
  if (!data || !wts || !offsets || tsr_ctx_new(&ctx, NULL) != 0) {
    fail("out of memory");
    goto out;
  }
  if (a.mpi && cli_mpi_begin(ctx, &ro) != 0)
    goto out;
  if (a.cache_dir && tsr_cache_open(ctx, a.cache_dir, TSR_CACHE_DEFAULT_BYTES, &cache) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if ((a.target ? read_target(ctx, a.target, &target) : auto_target(ctx, &a, &target)) != 0 ||
      tsr_graph_new(ctx, &g) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  for (int i = 0; i < a.n; i++) {
    data[i] = reproject(g, tsr_source_fits_hdu(g, a.inputs[i], &a.hdu), target, &a);
    if (a.n_weights) {
      tsr_node_t *w = tsr_source_fits_hdu(g, a.weights[i], &a.hdu);
      if (w && tsr_node_wcs(w) == NULL) {
        fprintf(stderr, "tessera: mosaic: weight \"%s\" has no WCS; expected a weight map with the "
                        "header of its input\n", a.weights[i]);
        goto out;
      }
      wts[i] = reproject(g, w, target, &a);
    }
  }
  ro.cancel = &interrupted;
  ro.jobs = a.jobs;
  ro.executor = (tsr_executor_t)a.executor;
  ro.cache = cache;
  install_signals();
  if (a.match_background && tsr_graph_status(g) == 0) {
    if (tsr_coadd_match_background(g, a.n, data, a.n_weights ? wts : NULL, a.background_reference,
                                   &ro, offsets) != 0) {
      fail(interrupted ? "interrupted; no output written" : tsr_errmsg(ctx));
      status = interrupted ? EXIT_INTERRUPTED : 1;
      goto out;
    }
    a.coadd.offsets = offsets;
  }
  a.coadd.block[0] = a.interp.block[0], a.coadd.block[1] = a.interp.block[1];
  out = tsr_coadd(g, a.n, data, a.n_weights ? wts : NULL, &a.coadd);
  nodes[0] = out;
  paths[0] = a.output;
  nodes[1] = a.footprint ? tsr_footprint(g, out) : NULL;
  paths[1] = a.footprint;
  if (tsr_graph_status(g) != 0) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  cli_progress_init(&prog, a.quiet || cli_mpi_rank ? -1 : a.progress, "mosaic");
  ro.progress = cli_progress_cb;
  ro.progress_ud = &prog;
  rc = tsr_write_fits(g, a.footprint ? 2 : 1, nodes, paths, NULL, &ro);
  cli_progress_end(&prog);
  if (rc == TSR_ECANCELED || interrupted) {
    fprintf(stderr, "tessera: interrupted; no output written\n");
    status = EXIT_INTERRUPTED;
    goto out;
  }
  if (rc != 0) {
    if (cli_mpi_rank == 0)
      fail(tsr_errmsg(ctx));
    goto out;
  }
  if (!a.quiet && cli_mpi_rank == 0)
    fprintf(stderr, "tessera: wrote %s (%" PRId64 " x %" PRId64 " %s, %s of %d inputs) in %.3f s\n",
            a.output, tsr_node_shape(out, 0), tsr_node_shape(out, 1),
            tsr_dtype_name(tsr_node_dtype(out)), tsr_combine_name(a.coadd.combine), a.n,
            cli_now() - t0);
  status = 0;
out:
  tsr_graph_free(g);
  tsr_wcs_free(target);
  tsr_cache_close(cache);
  tsr_ctx_free(ctx);
  free(data);
  free(wts);
  free(offsets);
  if (a.mpi)
    tsr_mpi_finalize();
  rc = status;
done:
  free(a.inputs);
  free(a.weights);
  return rc;
}

int cmd_mosaic_header(int argc, char **argv) {
  mosaic_args_t a;
  tsr_ctx_t *ctx = NULL;
  tsr_wcs_t *target = NULL;
  int rc;

  if ((rc = parse_args(argc, argv, 1, &a)) != 0)
    goto done;
  rc = 1;
  if (tsr_ctx_new(&ctx, NULL) != 0) {
    fail("out of memory");
    goto done;
  }
  if (auto_target(ctx, &a, &target) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if (tsr_wcs_write_hdr(ctx, target, a.output) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  fprintf(stderr, "tessera: wrote %s (%" PRId64 " x %" PRId64 ")\n", a.output,
          tsr_wcs_shape(target, 0), tsr_wcs_shape(target, 1));
  rc = 0;
out:
  tsr_wcs_free(target);
  tsr_ctx_free(ctx);
done:
  free(a.inputs);
  free(a.weights);
  return rc;
}
