/* drizzle.c -- `tessera reproject IN... --method drizzle` and `tessera
 * blot`: drizzle's parameters under drizzle's names (kernel, pixfrac,
 * expin, wt_scl, in/out units, fillval; blot's interp, sinscl), on the run
 * options reproject and mosaic share, with mosaic's SWarp weight kinds, DQ
 * masks and variance outputs (weight_args.c).  reproject hands its arguments here
 * when they ask for --method drizzle, since drizzle takes several inputs
 * and its own --kernel names. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tessera/tessera.h>

#include "cli.h"

#define MAX_INPUTS 100000

typedef struct {
  int n;
  const char **inputs;
  const char **weights;      /* --weight, in order of the inputs */
  int n_weights;
  const char *target, *output, *weight_out, *context_out;
  cli_weight_args_t w;       /* --weight-type, --dq, --variance-out, ... */
  cli_run_args_t run;
  tsr_drizzle_opts_t o;
  double *expin;             /* n, or NULL */
  const char *expin_arg;
} drizzle_args_t;

/* "S" or "S1,S2,...": one exposure time for every input or one each. */
static int parse_expin(const char *s, int n, double *out) {
  const char *p = s;
  int k = 0;
  while (1) {
    char buf[64], *end;
    size_t len = strcspn(p, ",");
    if (len == 0 || len >= sizeof buf || k >= n)
      return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    out[k] = strtod(buf, &end);
    if (*end != '\0' || !(out[k] > 0) || !isfinite(out[k]))
      return -1;
    k++;
    if (p[len] == '\0')
      break;
    p += len + 1;
  }
  if (k == 1)
    for (int i = 1; i < n; i++)
      out[i] = out[0];
  else if (k != n)
    return -1;
  return 0;
}

static int run_drizzle(drizzle_args_t *a) {
  cli_session_t s;
  tsr_node_t **src = NULL, **wts = NULL, **dqs = NULL, *out = NULL, *ctxn = NULL;
  tsr_node_t *nodes[6];
  const char *paths[6];
  double *thresh = NULL;
  int nn = 1, rc, status;
  tsr_region_t region;

  if ((status = cli_session_open(&s, &a->run, "reproject", a->target)) != 0)
    goto out;
  status = 1;
  src = calloc((size_t)a->n, sizeof *src);
  wts = calloc((size_t)a->n, sizeof *wts);
  dqs = calloc((size_t)a->n, sizeof *dqs);
  thresh = calloc((size_t)a->n, sizeof *thresh);
  if (src == NULL || wts == NULL || dqs == NULL || thresh == NULL) {
    fail("out of memory");
    goto out;
  }
  for (int i = 0; i < a->n; i++) {
    src[i] = tsr_source_fits_hdu(s.g, a->inputs[i], &a->run.hdu);
    if (a->n_weights > 0) {
      wts[i] = tsr_source_fits_hdu(s.g, a->weights[i], &a->run.hdu);
    } else if (a->w.suffix) {
      char *wpath = cli_weight_suffixed(a->inputs[i], a->w.suffix);
      if (wpath == NULL) {
        fail("out of memory");
        goto out;
      }
      wts[i] = tsr_source_fits_hdu(s.g, wpath, &a->run.hdu);
      free(wpath);
    }
    if (a->w.n_dqs)
      dqs[i] = tsr_source_fits_hdu(s.g, a->w.dqs[i], &a->run.hdu);
    thresh[i] = cli_weight_thresh(&a->w, i);
  }
  a->o.expin = a->expin;
  a->o.weight_type = a->w.type;
  a->o.weight_thresh = a->w.type >= 0 ? thresh : NULL;
  a->o.dq = a->w.n_dqs ? dqs : NULL;
  a->o.dq_bits = a->w.dq_bits;
  out = tsr_drizzle(s.g, a->n, src, a->n_weights || a->w.suffix ? wts : NULL, s.target, &a->o);
  if (out && a->context_out) {
    int np = tsr_drizzle_context_planes(out);
    tsr_node_t *planes[(MAX_INPUTS + 31) / 32];
    for (int p = 0; p < np; p++)
      planes[p] = tsr_drizzle_context(s.g, out, p);
    ctxn = np == 1 ? planes[0] : tsr_stack(s.g, np, planes, 2);
  }
  if (tsr_graph_status(s.g) != 0) {
    fail(tsr_graph_errmsg(s.g));
    goto out;
  }
  if (cli_run_region(&a->run, out, &region) != 0)
    goto out;
  nodes[0] = out;
  paths[0] = a->output;
  if (a->weight_out || a->run.footprint) {
    nodes[nn] = tsr_footprint(s.g, out);
    paths[nn++] = a->weight_out ? a->weight_out : a->run.footprint;
  }
  if (ctxn && tsr_node_ndim(ctxn) == 2) {
    nodes[nn] = ctxn;
    paths[nn++] = a->context_out;
  }
  if (a->w.variance_out) {
    nodes[nn] = tsr_drizzle_product(s.g, out, TSR_DRIZZLE_OUT_VARIANCE);
    paths[nn++] = a->w.variance_out;
  }
  if (a->w.rms_out) {
    nodes[nn] = tsr_unary(s.g, TSR_SQRT, tsr_drizzle_product(s.g, out, TSR_DRIZZLE_OUT_VARIANCE));
    paths[nn++] = a->w.rms_out;
  }
  if (a->w.dq_out) {
    nodes[nn] = tsr_drizzle_product(s.g, out, TSR_DRIZZLE_OUT_DQ);
    paths[nn++] = a->w.dq_out;
  }
  if (tsr_graph_status(s.g) != 0) {
    fail(tsr_graph_errmsg(s.g));
    goto out;
  }
  rc = tsr_write_fits(s.g, nn, nodes, paths, a->run.has_region ? &region : NULL, &s.ro);
  if (rc == 0 && !interrupted && ctxn && tsr_node_ndim(ctxn) == 3) {
    /* Past 32 inputs the context is a cube (one 32-bit plane per 32
     * inputs, axis 3), which a file of its own holds. */
    tsr_region_t cr = a->run.has_region ? region : tsr_region_of(ctxn);
    cr.start[2] = 0;
    cr.stop[2] = tsr_node_shape(ctxn, 2);
    rc = tsr_write_fits(s.g, 1, &ctxn, &a->context_out, &cr, &s.ro);
  }
  if ((status = cli_session_written(&s, rc)) != 0)
    goto out;
  if (!a->run.quiet && cli_mpi_rank == 0) {
    tsr_region_t r = a->run.has_region ? region : tsr_region_of(out);
    const char *wout = a->weight_out ? a->weight_out : a->run.footprint;
    fprintf(stderr, "tessera: drizzled %d input%s into %s (%" PRId64 " x %" PRId64 ", kernel %s, "
            "pixfrac %g%s%s%s%s) in %.3f s\n", a->n, a->n == 1 ? "" : "s", a->output,
            r.stop[0] - r.start[0], r.stop[1] - r.start[1], tsr_drizzle_kernel_name(a->o.kernel),
            a->o.pixfrac, wout ? ", weight " : "", wout ? wout : "", ctxn ? ", context " : "",
            ctxn ? a->context_out : "", cli_now() - s.t0);
  }
  status = 0;
out:
  free(src);
  free(wts);
  free(dqs);
  free(thresh);
  cli_session_close(&s);
  return status;
}

/* Is `p` one of the n paths in `list`? */
static const char *same_as(const char *p, const char *const *list, int n) {
  for (int i = 0; i < n; i++)
    if (list[i] && (strcmp(p, list[i]) == 0 || cli_same_file(p, list[i])))
      return list[i];
  return NULL;
}

int cmd_reproject_drizzle(int argc, char **argv) {
  enum { O_TARGET = 256, D_KERNEL, D_PIXFRAC, D_EXPIN, D_WTSCL, D_WEIGHT, D_WOUT, D_COUT,
         D_INUNITS, D_OUTUNITS, D_FILL };
  static const struct option opts[] = {
      {"target", required_argument, NULL, O_TARGET},
      {"kernel", required_argument, NULL, D_KERNEL},
      {"pixfrac", required_argument, NULL, D_PIXFRAC},
      {"expin", required_argument, NULL, D_EXPIN},
      {"wt-scl", required_argument, NULL, D_WTSCL},
      {"weight", required_argument, NULL, D_WEIGHT},
      {"weight-out", required_argument, NULL, D_WOUT},
      {"context-out", required_argument, NULL, D_COUT},
      {"in-units", required_argument, NULL, D_INUNITS},
      {"out-units", required_argument, NULL, D_OUTUNITS},
      {"fillval", required_argument, NULL, D_FILL},
      CLI_WEIGHT_OPTION_TABLE,
      CLI_RUN_OPTION_TABLE,
      {NULL, 0, NULL, 0}};
  drizzle_args_t a;
  tsr_drizzle_opts_t dflt = TSR_DRIZZLE_OPTS_INIT;
  int c, rc, parsed, status;

  memset(&a, 0, sizeof a);
  cli_run_args_init(&a.run);
  a.o = dflt;
  a.weights = calloc((size_t)argc + 1, sizeof *a.weights);
  a.inputs = calloc((size_t)argc + 1, sizeof *a.inputs);
  if (cli_weight_args_init(&a.w, argc) != 0 || a.weights == NULL || a.inputs == NULL) {
    free(a.weights);
    free(a.inputs);
    cli_weight_args_free(&a.w);
    return fail("out of memory");
  }
  opterr = 0;
  optind = 1;
  status = -1;
  while (status < 0 && (c = getopt_long(argc, argv, ":o:j:", opts, NULL)) != -1) {
    switch (c) {
    case O_TARGET: a.target = optarg; break;
    case 'o': a.output = optarg; break;
    case D_KERNEL:
      if ((parsed = tsr_drizzle_kernel_parse(optarg)) < 0)
        status = usage_error("reproject: --kernel '%s': expected square, point, turbo, gaussian, "
                             "lanczos2, lanczos3 or tophat (--method drizzle)", optarg);
      else
        a.o.kernel = (tsr_drizzle_kernel_t)parsed;
      break;
    case D_PIXFRAC:
      if (parse_real(optarg, &a.o.pixfrac) != 0 || !(a.o.pixfrac > 0) || a.o.pixfrac > 10)
        status = usage_error("reproject: --pixfrac '%s': expected a drop size in input pixels, "
                             "in (0, 10]", optarg);
      break;
    case D_EXPIN: a.expin_arg = optarg; break;
    case D_WTSCL:
      if (strcmp(optarg, "exptime") == 0) {
        a.o.wt_scl = TSR_WT_SCL_EXPTIME;
      } else if (strcmp(optarg, "expsq") == 0) {
        a.o.wt_scl = TSR_WT_SCL_EXPSQ;
      } else if (parse_real(optarg, &a.o.wt_scl_value) == 0 && a.o.wt_scl_value > 0) {
        a.o.wt_scl = TSR_WT_SCL_VALUE;
      } else {
        status = usage_error("reproject: --wt-scl '%s': expected exptime, expsq or a number > 0",
                             optarg);
      }
      break;
    case D_WEIGHT: a.weights[a.n_weights++] = optarg; break;
    case D_WOUT: a.weight_out = optarg; break;
    case D_COUT: a.context_out = optarg; break;
    case D_INUNITS:
    case D_OUTUNITS: {
      int counts = strcmp(optarg, "counts") == 0;
      if (!counts && strcmp(optarg, "cps") != 0)
        status = usage_error("reproject: --%s '%s': expected cps or counts",
                             c == D_INUNITS ? "in-units" : "out-units", optarg);
      else if (c == D_INUNITS)
        a.o.in_units_counts = counts;
      else
        a.o.out_units_counts = counts;
      break;
    }
    case D_FILL:
      if (strcmp(optarg, "INDEF") == 0 || strcmp(optarg, "indef") == 0)
        a.o.fillval = 0.0;
      else if (strcmp(optarg, "NaN") == 0 || strcmp(optarg, "nan") == 0)
        a.o.fillval = NAN;
      else if (parse_real(optarg, &a.o.fillval) != 0)
        status = usage_error("reproject: --fillval '%s': expected a number, NaN or INDEF", optarg);
      break;
    case ':': status = usage_error("reproject: option '%s' needs a value", argv[optind - 1]); break;
    case '?': status = usage_error("reproject: unknown option '%s'", argv[optind - 1]); break;
    default:
      if ((rc = cli_weight_option("reproject", c, optarg, &a.w)) >= 0) {
        if (rc != 0)
          status = rc;
      } else if ((rc = cli_run_option("reproject", c, optarg, &a.run)) != 0)
        status = rc < 0 ? usage_error("reproject: option '%s' does not apply to --method drizzle",
                                      argv[optind - 1])
                        : rc;
    }
  }
  if (status >= 0)
    goto out;
  while (optind < argc)
    a.inputs[a.n++] = argv[optind++];
  status = EXIT_USAGE;
  if (a.n == 0) {
    usage_error("reproject: missing INPUT");
    goto out;
  }
  if (a.n > MAX_INPUTS) {
    usage_error("reproject: %d inputs; --method drizzle takes at most %d", a.n, MAX_INPUTS);
    goto out;
  }
  if (a.target == NULL || a.output == NULL) {
    usage_error("reproject: missing %s", a.target == NULL ? "--target TARGET" : "-o OUT");
    goto out;
  }
  if (a.n_weights != 0 && a.n_weights != a.n) {
    usage_error("reproject: %d --weight maps for %d inputs; expected one per input, in order",
                a.n_weights, a.n);
    goto out;
  }
  if (cli_weight_check("reproject", &a.w, a.n, a.n_weights) != 0)
    goto out;
  if (a.run.order_given || a.run.interp.dtype == TSR_F64 || !a.run.interp.roundtrip) {
    usage_error("reproject: option '--%s' does not apply to --method drizzle (drizzle's output is "
                "float32, its drops are not interpolated)",
                a.run.order_given ? "order" : !a.run.interp.roundtrip ? "no-roundtrip" : "dtype");
    goto out;
  }
  if (a.weight_out && a.run.footprint) {
    usage_error("reproject: --weight-out and --footprint both name drizzle's weight image; give "
                "one");
    goto out;
  }
  if (a.run.mapping_opt)
    a.o.mapping_tolerance = a.run.interp.mapping_tolerance;
  a.o.block[0] = a.run.interp.block[0];
  a.o.block[1] = a.run.interp.block[1];
  if (a.expin_arg) {
    if ((a.expin = calloc((size_t)a.n, sizeof *a.expin)) == NULL) {
      status = fail("out of memory");
      goto out;
    }
    if (parse_expin(a.expin_arg, a.n, a.expin) != 0) {
      usage_error("reproject: --expin '%s': expected one exposure time > 0 s, or %d of them "
                  "separated by commas", a.expin_arg, a.n);
      goto out;
    }
  }
  {
    /* No output may overwrite an input, the target or another output. */
    const char *outs[6] = {a.output, a.weight_out ? a.weight_out : a.run.footprint, a.context_out,
                           a.w.variance_out, a.w.rms_out, a.w.dq_out};
    const char *names[6] = {"-o", a.weight_out ? "--weight-out" : "--footprint", "--context-out",
                            "--variance-out", "--rms-out", "--dq-out"};
    for (int i = 0; i < 6; i++) {
      const char *hit;
      if (outs[i] == NULL)
        continue;
      if ((hit = same_as(outs[i], a.inputs, a.n)) ||
          (hit = same_as(outs[i], a.weights, a.n_weights)) ||
          (hit = same_as(outs[i], a.w.dqs, a.w.n_dqs)) ||
          (hit = same_as(outs[i], &a.target, 1))) {
        usage_error("reproject: %s '%s' is an input ('%s'); expected a path that is not an input",
                    names[i], outs[i], hit);
        goto out;
      }
      for (int k = 0; k < i; k++)
        if (outs[k] && same_as(outs[i], &outs[k], 1)) {
          usage_error("reproject: %s and %s name the same file '%s'", names[k], names[i], outs[i]);
          goto out;
        }
    }
  }
  if ((rc = cli_run_check("reproject", &a.run)) != 0)
    goto out;
  status = run_drizzle(&a);
out:
  free(a.expin);
  free(a.inputs);
  free(a.weights);
  cli_weight_args_free(&a.w);
  return status;
}

int cmd_blot(int argc, char **argv) {
  enum { O_TARGET = 256, B_INTERP, B_SINSCL, B_EXPTIME, B_MISVAL };
  static const struct option opts[] = {
      {"target", required_argument, NULL, O_TARGET},
      {"interp", required_argument, NULL, B_INTERP},
      {"sinscl", required_argument, NULL, B_SINSCL},
      {"exptime", required_argument, NULL, B_EXPTIME},
      {"misval", required_argument, NULL, B_MISVAL},
      CLI_RUN_OPTION_TABLE,
      {NULL, 0, NULL, 0}};
  tsr_blot_opts_t o = TSR_BLOT_OPTS_INIT;
  cli_run_args_t run;
  const char *input = NULL, *target_path = NULL, *output = NULL;
  int c, rc, parsed, status;
  cli_session_t s;
  tsr_region_t region;

  cli_run_args_init(&run);
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":o:j:", opts, NULL)) != -1) {
    switch (c) {
    case O_TARGET: target_path = optarg; break;
    case 'o': output = optarg; break;
    case B_INTERP:
      if ((parsed = tsr_blot_interp_parse(optarg)) < 0)
        return usage_error("blot: --interp '%s': expected nearest, linear, poly3, poly5, sinc, "
                           "lan3 or lan5", optarg);
      o.interp = (tsr_blot_interp_t)parsed;
      break;
    case B_SINSCL:
      if (parse_real(optarg, &o.sinscl) != 0 || !(o.sinscl > 0))
        return usage_error("blot: --sinscl '%s': expected a scale > 0", optarg);
      break;
    case B_EXPTIME:
      if (parse_real(optarg, &o.exptime) != 0 || !(o.exptime > 0))
        return usage_error("blot: --exptime '%s': expected an exposure time > 0 s", optarg);
      break;
    case B_MISVAL:
      if (parse_real(optarg, &o.misval) != 0)
        return usage_error("blot: --misval '%s': expected a finite number", optarg);
      break;
    case ':': return usage_error("blot: option '%s' needs a value", argv[optind - 1]);
    case '?': return usage_error("blot: unknown option '%s'", argv[optind - 1]);
    default:
      if ((rc = cli_run_option("blot", c, optarg, &run)) != 0)
        return rc < 0 ? usage_error("blot: unknown option '%s'", argv[optind - 1]) : rc;
    }
  }
  if (optind < argc)
    input = argv[optind++];
  if (optind < argc)
    return usage_error("blot: unexpected argument '%s'", argv[optind]);
  if (input == NULL || target_path == NULL || output == NULL)
    return usage_error("blot: missing %s", input == NULL         ? "INPUT"
                                           : target_path == NULL ? "--target TARGET"
                                                                 : "-o OUT");
  if (run.method != 0 || run.order_given || run.footprint || run.interp.dtype == TSR_F64 ||
      !run.interp.roundtrip)
    return usage_error("blot: --method, --order, --footprint, --dtype and --no-roundtrip do not "
                       "apply (blot writes float32 through --interp)");
  if (cli_same_file(output, input) || cli_same_file(output, target_path) ||
      strcmp(output, input) == 0)
    return usage_error("blot: -o '%s' is an input; expected a path that is not an input", output);
  if (run.mapping_opt)
    o.mapping_tolerance = run.interp.mapping_tolerance;
  o.block[0] = run.interp.block[0];
  o.block[1] = run.interp.block[1];
  if ((rc = cli_run_check("blot", &run)) != 0)
    return rc;
  if ((status = cli_session_open(&s, &run, "blot", target_path)) != 0)
    goto out;
  status = 1;
  {
    tsr_node_t *src = tsr_source_fits_hdu(s.g, input, &run.hdu);
    tsr_node_t *out = tsr_blot(s.g, src, s.target, &o);
    if (tsr_graph_status(s.g) != 0) {
      fail(tsr_graph_errmsg(s.g));
      goto out;
    }
    if (cli_run_region(&run, out, &region) != 0)
      goto out;
    rc = tsr_write_fits(s.g, 1, &out, &output, run.has_region ? &region : NULL, &s.ro);
    if ((status = cli_session_written(&s, rc)) != 0)
      goto out;
    if (!run.quiet && cli_mpi_rank == 0)
      fprintf(stderr, "tessera: blotted %s onto %s (interp %s) in %.3f s\n", input, output,
              tsr_blot_interp_name(o.interp), cli_now() - s.t0);
  }
  status = 0;
out:
  cli_session_close(&s);
  return status;
}
