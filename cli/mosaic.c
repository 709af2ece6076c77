/* mosaic.c -- `tessera mosaic` and `tessera mosaic-header`: reproject_and_coadd
 * and find_optimal_celestial_wcs from the command line. */
#include <errno.h>
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
  const char *target, *output, *offsets_out;
  /* SWarp's ways (see the README's "Coadding like SWarp and drizzle") */
  cli_weight_args_t w;        /* weight kinds (type -1: --weights multiply footprints), DQ */
  const char *gain_keyword;   /* GAIN_KEYWORD */
  double gain_default;        /* GAIN_DEFAULT */
  const char *clip_log, *weight_out;
  cli_run_args_t run;  /* the options shared with reproject */
  int match_background, background_reference;
  int auto_target, has_target_opts;
  tsr_coadd_opts_t coadd;
  tsr_optimal_wcs_opts_t optimal;
} mosaic_args_t;

enum { M_TARGET = 256, M_AUTO, M_PROJ, M_FRAME, M_RES, M_ROTATE, M_COMBINE, M_WEIGHTS, M_MATCH,
       M_BGREF, M_BLANK, M_REFERENCE, M_OFFSETS, M_COMBINE_TYPE, M_CLIP_SIGMA, M_CLIP_AMPFRAC,
       M_CLIP_LOG, M_GAIN_KEY, M_GAIN_DEFAULT, M_WEIGHT_OUT };

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
    {"weight", required_argument, NULL, M_WEIGHTS},
    {"combine-type", required_argument, NULL, M_COMBINE_TYPE},
    {"clip-sigma", required_argument, NULL, M_CLIP_SIGMA},
    {"clip-ampfrac", required_argument, NULL, M_CLIP_AMPFRAC},
    {"clip-log", required_argument, NULL, M_CLIP_LOG},
    {"gain-keyword", required_argument, NULL, M_GAIN_KEY},
    {"gain-default", required_argument, NULL, M_GAIN_DEFAULT},
    {"weight-out", required_argument, NULL, M_WEIGHT_OUT},
    CLI_WEIGHT_OPTION_TABLE,
    {"match-background", no_argument, NULL, M_MATCH},
    {"background-reference", required_argument, NULL, M_BGREF},
    {"offsets-out", required_argument, NULL, M_OFFSETS},
    {"blank", required_argument, NULL, M_BLANK},
    CLI_RUN_OPTION_TABLE,
    {NULL, 0, NULL, 0}};

/* The projections of FITS WCS Paper II (and HEALPix's, Paper V), as wcslib
 * knows them: anything else is a usage error, found before any file is read. */
#define PROJECTIONS                                                                        \
  "AZP SZP TAN STG SIN ARC ZPN ZEA AIR CYP CEA CAR MER COP COE COD COO SFL PAR MOL AIT BON " \
  "PCO TSC CSC QSC HPX XPH"

static int is_projection(const char *s) {
  static const char projections[] = PROJECTIONS;
  const char *p = strstr(projections, s);
  return strlen(s) == 3 && p != NULL && (p == projections || p[-1] == ' ') &&
         (p[3] == ' ' || p[3] == '\0');
}

/* The first output among outs[0..n_out) that is one of the inputs: a usage
 * error naming both, or 0. */
static const char *const out_names[8] = {"-o", "--footprint", "--offsets-out", "--clip-log",
                                         "--weight-out", "--variance-out", "--rms-out", "--dq-out"};

static void outputs_of(const mosaic_args_t *a, const char *outs[8]) {
  outs[0] = a->output, outs[1] = a->run.footprint, outs[2] = a->offsets_out, outs[3] = a->clip_log;
  outs[4] = a->weight_out, outs[5] = a->w.variance_out, outs[6] = a->w.rms_out;
  outs[7] = a->w.dq_out;
}

static int output_is_input(const char *cmd, const mosaic_args_t *a) {
  const char *outs[8];
  outputs_of(a, outs);
  for (int i = 0; i < 8; i++)
    for (int k = 0; k < a->n + a->n_weights + a->w.n_dqs + 1; k++) {
      const char *in = k < a->n                                ? a->inputs[k]
                       : k < a->n + a->n_weights               ? a->weights[k - a->n]
                       : k < a->n + a->n_weights + a->w.n_dqs ? a->w.dqs[k - a->n - a->n_weights]
                                                                : a->target;
      if (cli_same_file(outs[i], in))
        return usage_error("%s: %s '%s' is the input '%s'; expected a path that is not an input",
                           cmd, out_names[i], outs[i], in);
    }
  return 0;
}

/* Two outputs named alike: a usage error naming both options, or 0. */
static int outputs_clash(const mosaic_args_t *a) {
  const char *outs[8];
  outputs_of(a, outs);
  for (int i = 0; i < 8; i++)
    for (int j = i + 1; j < 8; j++)
      if (outs[i] && outs[j] && (strcmp(outs[i], outs[j]) == 0 || cli_same_file(outs[i], outs[j])))
        return usage_error("mosaic: %s and %s name the same file '%s'", out_names[i], out_names[j],
                           outs[i]);
  return 0;
}

/* A value of 0 or more for option `opt` into *v: 0, or a usage error. */
static int parse_nonneg(const char *opt, const char *arg, double *v) {
  if (parse_real(arg, v) != 0 || !(*v >= 0))
    return usage_error("mosaic: %s '%s': expected a number >= 0", opt, arg);
  return 0;
}

/* Parse the arguments of `mosaic` (header_only = 0) or `mosaic-header`. */
static int parse_args(int argc, char **argv, int header_only, mosaic_args_t *a) {
  const char *cmd = header_only ? "mosaic-header" : "mosaic";
  tsr_coadd_opts_t cdflt = TSR_COADD_OPTS_INIT;
  tsr_optimal_wcs_opts_t odflt = TSR_OPTIMAL_WCS_OPTS_INIT;
  int c, parsed; /* parsed: a parsed enum, checked before it is stored (the enum types may be unsigned) */
  int64_t v;

  memset(a, 0, sizeof *a);
  cli_run_args_init(&a->run);
  a->coadd = cdflt;
  a->optimal = odflt;
  a->background_reference = -1;
  a->gain_keyword = "GAIN";
  a->inputs = calloc((size_t)argc, sizeof *a->inputs);
  a->weights = calloc((size_t)argc, sizeof *a->weights);
  if (cli_weight_args_init(&a->w, argc) != 0 || a->inputs == NULL || a->weights == NULL)
    return fail("out of memory");
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "-:o:j:", mosaic_opts, NULL)) != -1) {
    /* In header mode only the target's options apply. */
    if (header_only && c != 1 && c != 'o' && c != M_PROJ && c != M_FRAME && c != M_RES &&
        c != M_ROTATE && c != M_REFERENCE && c != CLI_HDU && c != CLI_QUIET && c != ':' &&
        c != '?') {
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
      if (!is_projection(optarg))
        return usage_error("%s: --projection '%s': expected a FITS projection code: %s", cmd,
                           optarg, PROJECTIONS);
      a->optimal.projection = optarg;
      a->has_target_opts = 1;
      break;
    case M_FRAME:
      if (strcmp(optarg, "icrs") && strcmp(optarg, "fk5") && strcmp(optarg, "galactic") &&
          strcmp(optarg, "ecliptic"))
        return usage_error("%s: --frame '%s': expected icrs, fk5, galactic or ecliptic", cmd, optarg);
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
      if ((parsed = tsr_combine_parse(optarg)) < 0)
        return usage_error("mosaic: --combine '%s': expected mean, sum, first, last, min, max, "
                           "median, weighted, average, sum-unweighted, chi-old, chi-mode, chi-mean, "
                           "clipped, weighted_weight, median_weight, and, nand, or or nor", optarg);
      a->coadd.combine = (tsr_combine_t)parsed;
      break;
    case M_COMBINE_TYPE:
      if ((parsed = tsr_combine_parse_swarp(optarg)) < 0)
        return usage_error("mosaic: --combine-type '%s': expected one of SWarp's COMBINE_TYPE: "
                           "MEDIAN, AVERAGE, MIN, MAX, WEIGHTED, CLIPPED, CHI_OLD, CHI-MODE, "
                           "CHI-MEAN, SUM, WEIGHTED_WEIGHT, MEDIAN_WEIGHT, AND, NAND, OR, NOR",
                           optarg);
      a->coadd.combine = (tsr_combine_t)parsed;
      break;
    case M_CLIP_SIGMA:
      if (parse_nonneg("--clip-sigma", optarg, &a->coadd.clip_sigma) != 0)
        return EXIT_USAGE;
      break;
    case M_CLIP_AMPFRAC:
      if (parse_nonneg("--clip-ampfrac", optarg, &a->coadd.clip_ampfrac) != 0)
        return EXIT_USAGE;
      break;
    case M_CLIP_LOG: a->clip_log = optarg; break;
    case M_GAIN_KEY:
      if (optarg[0] == '\0' || strlen(optarg) > 8)
        return usage_error("mosaic: --gain-keyword '%s': expected a FITS keyword of 1 to 8 "
                           "characters", optarg);
      a->gain_keyword = optarg;
      break;
    case M_GAIN_DEFAULT:
      if (parse_nonneg("--gain-default", optarg, &a->gain_default) != 0)
        return EXIT_USAGE;
      break;
    case M_WEIGHT_OUT: a->weight_out = optarg; break;
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
    case M_OFFSETS: a->offsets_out = optarg; break;
    case 'o': a->output = optarg; break;
    default: {
      int rc = cli_weight_option(cmd, c, optarg, &a->w);
      if (rc < 0)
        rc = cli_run_option_or_usage(cmd, c, optarg, argv, &a->run);
      if (rc != 0)
        return rc;
    }
    }
  }
  if (a->n == 0)
    return usage_error("%s: missing IN...: expected one or more FITS images", cmd);
  if (a->output == NULL)
    return usage_error("%s: missing -o %s", cmd, header_only ? "TARGET.hdr" : "OUT");
  if (output_is_input(cmd, a) != 0)
    return EXIT_USAGE;
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
  if (cli_weight_check("mosaic", &a->w, a->n, a->n_weights) != 0)
    return EXIT_USAGE;
  if (a->clip_log && a->coadd.combine != TSR_COMBINE_CLIPPED)
    return usage_error("mosaic: --clip-log goes with --combine clipped (--combine-type CLIPPED)");
  if (outputs_clash(a) != 0)
    return EXIT_USAGE;
  if (a->background_reference >= a->n)
    return usage_error("mosaic: --background-reference %d: there are %d inputs",
                       a->background_reference + 1, a->n);
  if (a->background_reference >= 0 && !a->match_background)
    return usage_error("mosaic: --background-reference goes with --match-background");
  if (a->offsets_out && !a->match_background)
    return usage_error("mosaic: --offsets-out goes with --match-background");
  if (a->run.method == 3)
    return usage_error("mosaic: --method drizzle coadds by itself: use 'tessera reproject IN... "
                       "--method drizzle'");
  return cli_run_check("mosaic", &a->run);
}

/* The target of --auto (find_optimal_celestial_wcs) from the inputs' headers. */
static int auto_target(tsr_ctx_t *ctx, const mosaic_args_t *a, tsr_wcs_t **out) {
  tsr_wcs_t **w = calloc((size_t)a->n, sizeof *w);
  int rc = 0;
  if (w == NULL)
    return TSR_ENOMEM;
  for (int i = 0; i < a->n && rc == 0; i++)
    rc = tsr_wcs_read_fits_hdu(ctx, a->inputs[i], &a->run.hdu, &w[i]);
  if (rc == 0)
    rc = tsr_optimal_wcs(ctx, a->n, (const tsr_wcs_t *const *)w, &a->optimal, out);
  for (int i = 0; i < a->n; i++)
    tsr_wcs_free(w[i]);
  free(w);
  return rc;
}

static tsr_node_t *reproject(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                             const mosaic_args_t *a) {
  /* --dtype is the mosaic's: each input is reprojected in its own type. */
  tsr_interp_opts_t each = a->run.interp;
  const tsr_interp_opts_t *io = &each;
  each.dtype = 0;
  if (a->run.method == 1) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.mapping_tolerance = io->mapping_tolerance;
    o.roundtrip = io->roundtrip;
    o.block[0] = io->block[0], o.block[1] = io->block[1];
    return tsr_reproject_adaptive(g, src, target, &o);
  }
  if (a->run.method == 2) {
    tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
    o.block[0] = io->block[0], o.block[1] = io->block[1];
    return tsr_reproject_exact(g, src, target, &o);
  }
  return tsr_reproject_interp(g, src, target, io);
}

/* The solved background offsets: on stderr unless quiet, and as CSV
 * (input,offset) to --offsets-out.  0, or 1 after saying why. */
static int report_offsets(const mosaic_args_t *a, const double *offsets) {
  FILE *f = NULL;
  if (!a->run.quiet && cli_mpi_rank == 0)
    for (int i = 0; i < a->n; i++)
      fprintf(stderr, "tessera: background offset of input %d (%s): %.9g\n", i + 1,
              a->inputs[i], offsets[i]);
  if (a->offsets_out == NULL || cli_mpi_rank != 0)
    return 0;
  if ((f = fopen(a->offsets_out, "w")) == NULL) {
    fprintf(stderr, "tessera: mosaic: cannot write \"%s\": %s\n", a->offsets_out, strerror(errno));
    return 1;
  }
  fprintf(f, "input,offset\n");
  for (int i = 0; i < a->n; i++)
    fprintf(f, "%s,%.17g\n", a->inputs[i], offsets[i]);
  if (fclose(f) != 0) {
    fprintf(stderr, "tessera: mosaic: cannot write \"%s\": %s\n", a->offsets_out, strerror(errno));
    remove(a->offsets_out);
    return 1;
  }
  return 0;
}

/* The value of header keyword `key` of FITS file `path` (HDU as the run
 * reads it) into *v: 1 if found, 0 if not, -1 after saying why. */
static int header_real(tsr_ctx_t *ctx, const mosaic_args_t *a, const char *path, const char *key,
                       double *v) {
  tsr_wcs_t *w = NULL;
  const char *cards;
  int nc, found = 0;
  size_t kl = strlen(key);
  if (tsr_wcs_read_fits_hdu(ctx, path, &a->run.hdu, &w) != 0) {
    fail(tsr_errmsg(ctx));
    return -1;
  }
  cards = tsr_wcs_cards(w, &nc);
  for (int i = 0; i < nc && !found; i++) {
    const char *c = cards + (size_t)80 * i;
    char val[81], *end;
    if (strncmp(c, key, kl) != 0 || (kl < 8 && strspn(c + kl, " ") < 8 - kl) || c[8] != '=')
      continue;
    memcpy(val, c + 10, 70);
    val[70] = '\0';
    *v = strtod(val, &end);
    found = end != val;
  }
  tsr_wcs_free(w);
  return found;
}

/* Writes each rejection as SWarp's clip log does. */
static int write_clip(void *ud, int input, int64_t x, int64_t y, double mu) {
  return fprintf((FILE *)ud, "%4d %6" PRId64 " %6" PRId64 " %+10g\n", input, x + 1, y + 1, mu) < 0;
}

static int clip_log(tsr_ctx_t *ctx, tsr_graph_t *g, tsr_node_t *out, const mosaic_args_t *a,
                    const tsr_region_t *region, const tsr_run_opts_t *ro) {
  FILE *f = fopen(a->clip_log, "w");
  /* Rank 0 alone, on its own: the other ranks have finished their run. */
  tsr_run_opts_t local = *ro;
  int rc;
  local.mpi_comm = NULL;
  if (f == NULL) {
    fprintf(stderr, "tessera: mosaic: cannot write \"%s\": %s\n", a->clip_log, strerror(errno));
    return 1;
  }
  rc = tsr_coadd_clip_log(g, out, region, &local, write_clip, f);
  if (fclose(f) != 0 || rc > 0) {
    fprintf(stderr, "tessera: mosaic: cannot write \"%s\": %s\n", a->clip_log, strerror(errno));
    rc = 1;
  } else if (rc < 0) {
    fprintf(stderr, "tessera: mosaic: %s\n", tsr_errmsg(ctx));
    rc = 1;
  }
  if (rc != 0)
    remove(a->clip_log);
  return rc;
}

int cmd_mosaic(int argc, char **argv) {
  mosaic_args_t a;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *target = NULL;
  tsr_cache_t *cache = NULL;
  tsr_node_t **data = NULL, **wts = NULL, **dqo = NULL, *out, *nodes[6];
  const char *paths[6];
  double *offsets = NULL, *gains = NULL, t0 = cli_now();
  tsr_run_opts_t ro;
  tsr_region_t region;
  cli_progress_t prog;
  int status = 1, rc, nout = 0;
  int has_w;

  if ((rc = parse_args(argc, argv, 0, &a)) != 0)
    goto done;
  rc = 1;
  data = calloc((size_t)a.n, sizeof *data);
  wts = calloc((size_t)a.n, sizeof *wts);
  dqo = calloc((size_t)a.n, sizeof *dqo);
  offsets = calloc((size_t)a.n, sizeof *offsets);
  gains = calloc((size_t)a.n, sizeof *gains);
  if (!data || !wts || !dqo || !offsets || !gains || tsr_ctx_new(&ctx, NULL) != 0) {
    fail("out of memory");
    goto out;
  }
  if ((status = cli_run_begin(ctx, &a.run, "mosaic", &ro, &cache, &prog)) != 0)
    goto out;
  status = 1;
  if ((a.target ? read_target(ctx, a.target, &target) : auto_target(ctx, &a, &target)) != 0 ||
      tsr_graph_new(ctx, &g) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  has_w = a.n_weights || a.w.type >= 0;
  for (int i = 0; i < a.n; i++) {
    tsr_node_t *src = tsr_source_fits_hdu(g, a.inputs[i], &a.run.hdu), *dq = NULL;
    if (a.w.n_dqs) {
      tsr_interp_opts_t nn = TSR_INTERP_OPTS_INIT;
      dq = tsr_source_fits_hdu(g, a.w.dqs[i], &a.run.hdu);
      /* Data-quality bits are not interpolated: the nearest pixel's. */
      nn.order = TSR_ORDER_NEAREST;
      nn.block[0] = a.run.interp.block[0], nn.block[1] = a.run.interp.block[1];
      nn.mapping_tolerance = a.run.interp.mapping_tolerance;
      dqo[i] = tsr_reproject_interp(g, dq, target, &nn);
    }
    data[i] = reproject(g, dq ? tsr_mask_dq(g, src, dq, a.w.dq_bits) : src, target, &a);
    if (a.w.type >= 0) {
      /* SWarp's way: a variance on the input's grid, reprojected as the
       * data are, inverted on the target's. */
      tsr_weight_opts_t wo = TSR_WEIGHT_OPTS_INIT;
      tsr_node_t *map = src;
      char *wpath = NULL;
      wo.thresh = cli_weight_thresh(&a.w, i);
      wo.dq_bits = a.w.dq_bits;
      if (a.w.type != TSR_WEIGHT_BACKGROUND) {
        if (a.w.suffix && (wpath = cli_weight_suffixed(a.inputs[i], a.w.suffix)) == NULL) {
          fail("out of memory");
          goto out;
        }
        map = tsr_source_fits_hdu(g, wpath ? wpath : a.weights[i], &a.run.hdu);
        free(wpath);
      }
      wts[i] = tsr_scalar_binary(g, TSR_DIV, 1.0,
                                 reproject(g, tsr_variance_map(g, map, (tsr_weight_type_t)a.w.type,
                                                               dq, &wo),
                                           target, &a));
    } else if (a.n_weights) {
      tsr_node_t *w = tsr_source_fits_hdu(g, a.weights[i], &a.run.hdu);
      if (w && tsr_node_wcs(w) == NULL) {
        fprintf(stderr, "tessera: mosaic: weight \"%s\" has no WCS; expected a weight map with the "
                        "header of its input\n", a.weights[i]);
        goto out;
      }
      wts[i] = reproject(g, w, target, &a);
    }
    if (a.coadd.combine == TSR_COMBINE_CLIPPED) {
      /* SWarp's GAIN_KEYWORD, else GAIN_DEFAULT (0 = infinite). */
      int found = tsr_graph_status(g) ? 0 : header_real(ctx, &a, a.inputs[i], a.gain_keyword, &gains[i]);
      if (found < 0)
        goto out;
      if (found == 0 || !(gains[i] >= 0))
        gains[i] = a.gain_default;
    }
  }
  if (a.match_background && tsr_graph_status(g) == 0) {
    if ((rc = tsr_coadd_match_background(g, a.n, data, has_w ? wts : NULL,
                                         a.background_reference, &ro, offsets)) != 0) {
      status = cli_run_failed(ctx, rc);
      goto out;
    }
    if (report_offsets(&a, offsets) != 0)
      goto out;
    a.coadd.offsets = offsets;
  }
  a.coadd.dtype = a.run.interp.dtype;
  a.coadd.block[0] = a.run.interp.block[0], a.coadd.block[1] = a.run.interp.block[1];
  a.coadd.gains = gains;
  a.coadd.dq = a.w.n_dqs ? dqo : NULL;
  out = tsr_coadd(g, a.n, data, has_w ? wts : NULL, &a.coadd);
  nodes[nout] = out, paths[nout++] = a.output;
  if (a.run.footprint)
    nodes[nout] = tsr_footprint(g, out), paths[nout++] = a.run.footprint;
  if (a.weight_out)
    nodes[nout] = tsr_coadd_product(g, out, TSR_COADD_WEIGHT), paths[nout++] = a.weight_out;
  if (a.w.variance_out)
    nodes[nout] = tsr_coadd_product(g, out, TSR_COADD_VARIANCE), paths[nout++] = a.w.variance_out;
  if (a.w.rms_out)
    nodes[nout] = tsr_unary(g, TSR_SQRT, tsr_coadd_product(g, out, TSR_COADD_VARIANCE)),
    paths[nout++] = a.w.rms_out;
  if (a.w.dq_out)
    nodes[nout] = tsr_coadd_product(g, out, TSR_COADD_DQ), paths[nout++] = a.w.dq_out;
  if (tsr_graph_status(g) != 0) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  if (cli_run_region(&a.run, out, &region) != 0)
    goto out;
  rc = tsr_write_fits(g, nout, nodes, paths, a.run.has_region ? &region : NULL, &ro);
  cli_progress_end(&prog);
  if (rc == 0 && !interrupted && a.clip_log && cli_mpi_rank == 0 &&
      clip_log(ctx, g, out, &a, a.run.has_region ? &region : NULL, &ro) != 0)
    goto out;
  if (cache && tsr_cache_warning(cache)[0])
    fprintf(stderr, "tessera: warning: %s\n", tsr_cache_warning(cache));
  if (rc != 0 || interrupted) {
    status = cli_run_failed(ctx, rc);
    goto out;
  }
  if (!a.run.quiet && cli_mpi_rank == 0) {
    tsr_region_t r = a.run.has_region ? region : tsr_region_of(out);
    fprintf(stderr, "tessera: wrote %s (%" PRId64 " x %" PRId64 " %s, %s of %d inputs) in %.3f s\n",
            a.output, r.stop[0] - r.start[0], r.stop[1] - r.start[1],
            tsr_dtype_name(tsr_node_dtype(out)), tsr_combine_name(a.coadd.combine), a.n,
            cli_now() - t0);
  }
  status = 0;
out:
  tsr_graph_free(g);
  tsr_wcs_free(target);
  tsr_cache_close(cache);
  tsr_ctx_free(ctx);
  free(data);
  free(wts);
  free(dqo);
  free(offsets);
  free(gains);
  if (a.run.mpi)
    tsr_mpi_finalize();
  rc = status;
done:
  free(a.inputs);
  free(a.weights);
  cli_weight_args_free(&a.w);
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
  if (!a.run.quiet)
    fprintf(stderr, "tessera: wrote %s (%" PRId64 " x %" PRId64 ")\n", a.output,
            tsr_wcs_shape(target, 0), tsr_wcs_shape(target, 1));
  rc = 0;
out:
  tsr_wcs_free(target);
  tsr_ctx_free(ctx);
done:
  free(a.inputs);
  free(a.weights);
  cli_weight_args_free(&a.w);
  return rc;
}
