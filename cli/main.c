/* main.c -- the `tessera` command line tool (public API only).
 *
 * Exit status: 0 on success, 2 on a usage error, 1 on any other failure, 130
 * when interrupted.  Every failure prints one line on stderr that says what
 * and where; outputs are written under temporary names by the library, so a
 * failed or interrupted run leaves nothing behind.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <tessera/tessera.h>

#include "cli.h"
#include "progress.h"
#include "sample.h"

volatile int interrupted;

static void on_signal(int sig) {
  (void)sig;
  interrupted = 1;
}

void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

int usage_error(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "tessera: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see 'tessera help')\n");
  return EXIT_USAGE;
}

int cli_mpi_rank;

int cli_parse_executor(const char *s, int *mpi, int *executor) {
  *mpi = 0;
  *executor = TSR_EXECUTOR_DEFAULT;
  if (strcmp(s, "processes") == 0)
    *executor = TSR_EXECUTOR_PROCESSES;
  else if (strcmp(s, "threads") == 0)
    *executor = TSR_EXECUTOR_THREADS;
  else if (strcmp(s, "mpi") == 0)
    *mpi = 1;
  else if (strcmp(s, "local") != 0)
    return usage_error("--executor '%s': expected local, processes, threads or mpi", s);
  if (*mpi && !tsr_has_mpi())
    return usage_error("--executor mpi: this tessera was built without MPI (install "
                       "libopenmpi-dev and rebuild)");
  return 0;
}

int cli_mpi_begin(tsr_ctx_t *ctx, tsr_run_opts_t *ro) {
  int size = 1;
  if (tsr_mpi_init(ctx, NULL, NULL, &ro->mpi_comm, &cli_mpi_rank, &size) != 0)
    return fail(tsr_errmsg(ctx));
  return 0;
}

int cli_run_failed(tsr_ctx_t *ctx, int rc) {
  if (rc == TSR_ECANCELED || interrupted) {
    fprintf(stderr, "tessera: interrupted; no output written\n");
    return EXIT_INTERRUPTED;
  }
  if (cli_mpi_rank == 0)
    fail(tsr_errmsg(ctx));
  return 1;
}

int fail(const char *msg) {
  fprintf(stderr, "tessera: %s\n", msg);
  return 1;
}

/* A FITS file starts with a SIMPLE card and has no line breaks in its
 * 80-column cards, or is gzipped; a header text file (which may also start
 * with SIMPLE) has one card per line. */
static int is_fits_file(const char *path) {
  char head[81] = {0};
  FILE *f = fopen(path, "rb");
  size_t n;
  if (f == NULL)
    return 0;
  n = fread(head, 1, 81, f);
  fclose(f);
  /* A gzip stream (.fits.gz) is a FITS file for cfitsio, never a header. */
  if (n >= 2 && (unsigned char)head[0] == 0x1f && (unsigned char)head[1] == 0x8b)
    return 1;
  return n == 81 && memcmp(head, "SIMPLE  =", 9) == 0 && memchr(head, '\n', 81) == NULL;
}

/* A target from a FITS file (its header and shape) or a header text file. */
int read_target(tsr_ctx_t *ctx, const char *path, tsr_wcs_t **out) {
  if (is_fits_file(path))
    return tsr_wcs_read_fits(ctx, path, 0, out);
  return tsr_wcs_read_hdr(ctx, path, out);
}

/* Reprojection methods the CLI knows; each has its options struct in
 * reproject_args_t and one case in build_reprojection(). */
typedef enum { METHOD_INTERP = 0, METHOD_ADAPTIVE, METHOD_EXACT } method_t;

typedef struct {
  const char *input, *target, *output;
  cli_run_args_t run;            /* the options shared with mosaic */
  tsr_adaptive_opts_t adaptive;  /* block, tolerance, roundtrip, dtype come from run.interp */
  const char *adaptive_opt;      /* first adaptive-only option given, for usage errors */
  tsr_exact_opts_t exact;        /* nan_mode; block and dtype come from run.interp */
  const char *nan_mode_opt;      /* --nan-mode was given (exact only) */
  tsr_healpix_opts_t healpix;    /* --field, --nested / --ring (HEALPix inputs) */
  const char *healpix_opt;       /* first HEALPix-only option given */
} reproject_args_t;

/* Is `path` a HEALPix table (a binary table at HDU `which` with the HEALPix
 * keywords), read with `base`'s field and ordering?  Images are the common
 * case: a failure that shows the file is no HEALPix table means "no" (0);
 * 1 is a good map (*info filled); a table that fails the HEALPix checks is
 * -1 with the reason on ctx, so that its message, which says more than "no
 * image HDU" would, reaches the user.  Commands that take images and maps
 * (reproject, info) ask this first. */
static int is_healpix(tsr_ctx_t *ctx, const char *path, const tsr_hdu_t *which,
                      const tsr_healpix_opts_t *base, tsr_healpix_info_t *info) {
  tsr_healpix_opts_t o = *base;
  if (which->extname != NULL)
    return 0;
  o.hdu = which->hdu;
  if (tsr_healpix_info(ctx, path, &o, info) == 0)
    return 1;
  /* Files without a binary table (or with PIXTYPE other than HEALPIX) go to
   * the image reader. */
  const char *m = tsr_errmsg(ctx);
  return -(strstr(m, "has no binary table") == NULL && strstr(m, "is not a binary table") == NULL &&
         strstr(m, "PIXTYPE") == NULL && strstr(m, "cannot open") == NULL &&
         strstr(m, "gzip") == NULL && strstr(m, "does not start with") == NULL &&
         strstr(m, "HDUs; HDU") == NULL && strstr(m, "is not a HEALPix table") == NULL &&
         strstr(m, "truncated: header") == NULL && strstr(m, "bad NAXIS") == NULL);
}

static int input_is_healpix(tsr_ctx_t *ctx, const reproject_args_t *a) {
  tsr_healpix_info_t info;
  return is_healpix(ctx, a->input, &a->run.hdu, &a->healpix, &info) != 0;
}

/* The reprojection node for a->method (NULL with the error on the graph). */
static tsr_node_t *build_reprojection(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                      const reproject_args_t *a) {
  const tsr_interp_opts_t *io = &a->run.interp;
  switch ((method_t)a->run.method) {
  case METHOD_INTERP:
    return tsr_reproject_interp(g, src, target, io);
  case METHOD_ADAPTIVE: {
    tsr_adaptive_opts_t o = a->adaptive;
    o.mapping_tolerance = io->mapping_tolerance;
    o.roundtrip = io->roundtrip;
    o.dtype = io->dtype;
    o.block[0] = io->block[0];
    o.block[1] = io->block[1];
    return tsr_reproject_adaptive(g, src, target, &o);
  }
  case METHOD_EXACT: {
    tsr_exact_opts_t o = a->exact;
    o.dtype = io->dtype;
    o.block[0] = io->block[0];
    o.block[1] = io->block[1];
    return tsr_reproject_exact(g, src, target, &o);
  }
  }
  return NULL;
}

/* Run the reprojection described by `a`; returns an exit status. */
static int run_reproject(const reproject_args_t *a) {
  cli_session_t s;
  tsr_node_t *src, *out, *fp = NULL;
  tsr_node_t *nodes[2];
  const char *paths[2];
  int n = 1, rc, status;
  tsr_region_t region;

  if ((status = cli_session_open(&s, &a->run, "reproject", a->target)) != 0)
    goto out;
  status = 1;
  tsr_graph_t *g = s.g;
  tsr_ctx_t *ctx = s.ctx;
  const tsr_wcs_t *target = s.target;
  if (input_is_healpix(ctx, a)) {
    tsr_healpix_opts_t ho = a->healpix;
    tsr_from_healpix_opts_t fo = TSR_FROM_HEALPIX_OPTS_INIT;
    if (a->run.method == METHOD_ADAPTIVE ||
        (a->run.method == METHOD_INTERP && a->run.interp.order > 1)) {
      status = usage_error("reproject: \"%s\" is a HEALPix map: only --method interp with --order "
                           "nearest-neighbor or bilinear, or --method exact, applies", a->input);
      goto out;
    }
    ho.hdu = a->run.hdu.hdu;
    fo.method = a->run.method == METHOD_EXACT ? TSR_HEALPIX_EXACT : TSR_HEALPIX_INTERP;
    fo.nan_mode = a->exact.nan_mode;
    fo.order = a->run.interp.order;
    fo.dtype = a->run.interp.dtype;
    fo.block[0] = a->run.interp.block[0];
    fo.block[1] = a->run.interp.block[1];
    src = tsr_source_healpix(g, a->input, &ho);
    out = tsr_reproject_from_healpix(g, src, target, &fo);
  } else if (a->healpix_opt != NULL) {
    tsr_healpix_info_t info;
    tsr_healpix_opts_t ho = a->healpix;
    ho.hdu = a->run.hdu.hdu;
    if (tsr_healpix_info(ctx, a->input, &ho, &info) != 0)
      fail(tsr_errmsg(ctx));
    else
      status = usage_error("reproject: --%s applies to HEALPix inputs only", a->healpix_opt);
    goto out;
  } else {
    src = tsr_source_fits_hdu(g, a->input, &a->run.hdu);
    out = build_reprojection(g, src, target, a);
  }
  if (a->run.footprint)
    fp = tsr_footprint(g, out);
  if (tsr_graph_status(g) != 0) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  if (cli_run_region(&a->run, out, &region) != 0)
    goto out;
  nodes[0] = out;
  paths[0] = a->output;
  if (fp) {
    nodes[1] = fp;
    paths[1] = a->run.footprint;
    n = 2;
  }
  rc = tsr_write_fits(g, n, nodes, paths, a->run.has_region ? &region : NULL, &s.ro);
  if ((status = cli_session_written(&s, rc)) != 0)
    goto out;
  if (!a->run.quiet && cli_mpi_rank == 0) {
    tsr_region_t r = a->run.has_region ? region : tsr_region_of(out);
    fprintf(stderr, "tessera: wrote %s (%" PRId64 " x %" PRId64 " %s%s%s) in %.3f s\n",
            a->output, r.stop[0] - r.start[0], r.stop[1] - r.start[1],
            tsr_dtype_name(tsr_node_dtype(out)), fp ? ", footprint " : "",
            fp ? a->run.footprint : "", cli_now() - s.t0);
  }
  status = 0;
out:
  cli_session_close(&s);
  return status;
}

static int cmd_reproject(int argc, char **argv) {
  enum { O_TARGET = 256 };
  /* Options of --method adaptive. */
  enum { A_KERNEL = 512, A_KWIDTH, A_SRW, A_BMODE, A_BFILL, A_BTHRESH, A_XCYC, A_YCYC, A_CENTER,
         A_DESPIKE, A_CONSERVE, A_BADMODE, A_BADFILL };
  /* Options of --method exact. */
  enum { E_NANMODE = 768 };
  /* Options of HEALPix inputs. */
  enum { H_FIELD = 800, H_NESTED, H_RING };
  static const struct option opts[] = {
      {"field", required_argument, NULL, H_FIELD},
      {"nested", no_argument, NULL, H_NESTED},
      {"ring", no_argument, NULL, H_RING},
      {"kernel", required_argument, NULL, A_KERNEL},
      {"kernel-width", required_argument, NULL, A_KWIDTH},
      {"sample-region-width", required_argument, NULL, A_SRW},
      {"boundary-mode", required_argument, NULL, A_BMODE},
      {"boundary-fill-value", required_argument, NULL, A_BFILL},
      {"boundary-ignore-threshold", required_argument, NULL, A_BTHRESH},
      {"x-cyclic", no_argument, NULL, A_XCYC},
      {"y-cyclic", no_argument, NULL, A_YCYC},
      {"center-jacobian", no_argument, NULL, A_CENTER},
      {"despike-jacobian", no_argument, NULL, A_DESPIKE},
      {"conserve-flux", no_argument, NULL, A_CONSERVE},
      {"bad-value-mode", required_argument, NULL, A_BADMODE},
      {"bad-fill-value", required_argument, NULL, A_BADFILL},
      {"nan-mode", required_argument, NULL, E_NANMODE},
      {"target", required_argument, NULL, O_TARGET},
      CLI_RUN_OPTION_TABLE,
      {NULL, 0, NULL, 0}};
  reproject_args_t a;
  int c, rc, parsed; /* parsed: a parsed enum, checked before it is stored (the enum types may be unsigned) */

  /* drizzle takes several inputs and its own --kernel names: its own parser. */
  for (int k = 1; k < argc && strcmp(argv[k], "--") != 0; k++)
    if ((strcmp(argv[k], "--method") == 0 && k + 1 < argc && strcmp(argv[k + 1], "drizzle") == 0) ||
        strcmp(argv[k], "--method=drizzle") == 0)
      return cmd_reproject_drizzle(argc, argv);
  memset(&a, 0, sizeof a);
  cli_run_args_init(&a.run);
  {
    tsr_adaptive_opts_t adflt = TSR_ADAPTIVE_OPTS_INIT;
    tsr_healpix_opts_t hdflt = TSR_HEALPIX_OPTS_INIT;
    a.adaptive = adflt;
    a.healpix = hdflt;
  }
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":o:j:", opts, NULL)) != -1) {
    switch (c) {
    case O_TARGET: a.target = optarg; break;
    case 'o': a.output = optarg; break;
    case A_KERNEL:
      if ((parsed = tsr_kernel_parse(optarg)) < 0)
        return usage_error("--kernel '%s': expected gaussian or hann", optarg);
      a.adaptive.kernel = (tsr_kernel_t)parsed;
      goto adaptive_only;
    case A_KWIDTH:
      if (parse_real(optarg, &a.adaptive.kernel_width) != 0 || !(a.adaptive.kernel_width > 0) ||
          a.adaptive.kernel_width > 100)
        return usage_error("--kernel-width '%s': expected output pixels in (0, 100]", optarg);
      goto adaptive_only;
    case A_SRW:
      if (parse_real(optarg, &a.adaptive.sample_region_width) != 0 ||
          !(a.adaptive.sample_region_width > 0) || a.adaptive.sample_region_width > 100)
        return usage_error("--sample-region-width '%s': expected output pixels in (0, 100]", optarg);
      goto adaptive_only;
    case A_BMODE:
      if ((parsed = tsr_boundary_parse(optarg)) < 0)
        return usage_error("--boundary-mode '%s': expected strict, constant, grid-constant, ignore, "
                           "ignore_threshold or nearest", optarg);
      a.adaptive.boundary_mode = (tsr_boundary_t)parsed;
      goto adaptive_only;
    case A_BFILL:
      if (parse_real(optarg, &a.adaptive.boundary_fill_value) != 0)
        return usage_error("--boundary-fill-value '%s': expected a finite number", optarg);
      goto adaptive_only;
    case A_BTHRESH:
      if (parse_real(optarg, &a.adaptive.boundary_ignore_threshold) != 0 ||
          !(a.adaptive.boundary_ignore_threshold >= 0 && a.adaptive.boundary_ignore_threshold <= 1))
        return usage_error("--boundary-ignore-threshold '%s': expected a fraction in [0, 1]", optarg);
      goto adaptive_only;
    case A_XCYC: a.adaptive.x_cyclic = 1; goto adaptive_only;
    case A_YCYC: a.adaptive.y_cyclic = 1; goto adaptive_only;
    case A_CENTER: a.adaptive.center_jacobian = 1; goto adaptive_only;
    case A_DESPIKE: a.adaptive.despike_jacobian = 1; goto adaptive_only;
    case A_CONSERVE: a.adaptive.conserve_flux = 1; goto adaptive_only;
    case A_BADMODE:
      if ((parsed = tsr_bad_value_parse(optarg)) < 0)
        return usage_error("--bad-value-mode '%s': expected strict, ignore or constant", optarg);
      a.adaptive.bad_value_mode = (tsr_bad_value_t)parsed;
      goto adaptive_only;
    case A_BADFILL:
      if (parse_real(optarg, &a.adaptive.bad_fill_value) != 0)
        return usage_error("--bad-fill-value '%s': expected a finite number", optarg);
      goto adaptive_only;
    case H_FIELD: {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end == '\0' && end != optarg) {
        if (v < 0 || v > 998)
          return usage_error("reproject: --field %s: expected a column number in [0, 998] or a name",
                             optarg);
        a.healpix.field = (int)v;
      } else {
        a.healpix.field_name = optarg;
      }
      a.healpix_opt = "field";
      break;
    }
    case H_NESTED: a.healpix.nested = 1; a.healpix_opt = "nested"; break;
    case H_RING: a.healpix.nested = 0; a.healpix_opt = "ring"; break;
    case E_NANMODE: {
      int k = parse_nan_mode(optarg);
      if (k < 0)
        return usage_error("--nan-mode '%s': expected propagate or ignore", optarg);
      a.exact.nan_mode = (tsr_nan_mode_t)k;
      a.nan_mode_opt = "nan-mode";
      break;
    }
    adaptive_only:
      for (int k = 0; a.adaptive_opt == NULL && opts[k].name; k++)
        if (opts[k].val == c)
          a.adaptive_opt = opts[k].name;
      break;
    default:
      if ((rc = cli_run_option_or_usage("reproject", c, optarg, argv, &a.run)) != 0)
        return rc;
    }
  }
  if (optind < argc)
    a.input = argv[optind++];
  if (optind < argc)
    return usage_error("reproject: unexpected argument '%s'", argv[optind]);
  if (a.input == NULL)
    return usage_error("reproject: missing INPUT");
  if (a.target == NULL)
    return usage_error("reproject: missing --target TARGET");
  if (a.output == NULL)
    return usage_error("reproject: missing -o OUT");
  {
    const char *outs[2] = {a.output, a.run.footprint}, *ins[2] = {a.input, a.target};
    const char *names[2] = {"-o", "--footprint"}, *what[2] = {"INPUT", "TARGET"};
    for (int i = 0; i < 2; i++)
      for (int k = 0; k < 2; k++)
        if (cli_same_file(outs[i], ins[k]))
          return usage_error("reproject: %s '%s' is %s ('%s'); expected a path that is not an "
                             "input", names[i], outs[i], what[k], ins[k]);
    if (a.run.footprint &&
        (strcmp(a.output, a.run.footprint) == 0 || cli_same_file(a.output, a.run.footprint)))
      return usage_error("reproject: -o and --footprint name the same file '%s'", a.output);
  }
  if (a.adaptive_opt && a.run.method != METHOD_ADAPTIVE)
    return usage_error("reproject: option '--%s' applies to --method adaptive only", a.adaptive_opt);
  if (a.nan_mode_opt && a.run.method != METHOD_EXACT)
    return usage_error("reproject: option '--%s' applies to --method exact only", a.nan_mode_opt);
  if ((rc = cli_run_check("reproject", &a.run)) != 0)
    return rc;
  return run_reproject(&a);
}

/* tessera preview FITS -o PNG: a quick look, as ds9 or astropy would scale it. */
static int cmd_preview(int argc, char **argv) {
  enum { P_STRETCH = 256, P_SCALE, P_HDU, P_MAX, P_QUIET, P_PROGRESS };
  static const struct option opts[] = {{"stretch", required_argument, NULL, P_STRETCH},
                                       {"scale", required_argument, NULL, P_SCALE},
                                       {"hdu", required_argument, NULL, P_HDU},
                                       {"max-size", required_argument, NULL, P_MAX},
                                       {"output", required_argument, NULL, 'o'},
                                       {"quiet", no_argument, NULL, P_QUIET},
                                       {"progress", no_argument, NULL, P_PROGRESS},
                                       {NULL, 0, NULL, 0}};
  tsr_preview_opts_t po = TSR_PREVIEW_OPTS_INIT;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  cli_progress_t prog;
  const char *in = NULL, *out = NULL;
  tsr_hdu_t hdu = TSR_HDU_INIT;
  int c, status = 1, quiet = 0, progress = 0, rc;
  double t0 = cli_now();
  int64_t v;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;

  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out = optarg; break;
    case P_STRETCH: {
      int k = parse_stretch(optarg);
      if (k < 0)
        return usage_error("preview: --stretch '%s': expected linear, sqrt, log or asinh", optarg);
      po.stretch = (tsr_stretch_t)k;
      break;
    }
    case P_SCALE:
      if (strcmp(optarg, "zscale") == 0)
        po.scale = TSR_SCALE_ZSCALE;
      else if (strcmp(optarg, "minmax") == 0)
        po.scale = TSR_SCALE_MINMAX;
      else if (parse_real(optarg, &po.percent) == 0 && po.percent > 0 && po.percent <= 100)
        po.scale = TSR_SCALE_PERCENT;
      else
        return usage_error("preview: --scale '%s': expected zscale, minmax or a percentage in "
                           "(0, 100]", optarg);
      break;
    case P_HDU:
      if (parse_hdu("preview: ", optarg, &hdu) != 0)
        return EXIT_USAGE;
      break;
    case P_MAX:
      if (parse_int64(optarg, &v) != 0 || v < 1 || v > 65536)
        return usage_error("preview: --max-size '%s': expected pixels, 1 to 65536", optarg);
      po.max_size = (int)v;
      break;
    case P_QUIET: quiet = 1; break;
    case P_PROGRESS: progress = 1; break;
    case ':': return usage_error("preview: option '%s' needs a value", argv[optind - 1]);
    default: return usage_error("preview: unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc)
    in = argv[optind++];
  if (optind < argc)
    return usage_error("preview: unexpected argument '%s'", argv[optind]);
  if (in == NULL || out == NULL)
    return usage_error("preview: expected FITS -o PNG");
  {
    const char *dot = strrchr(out, '.');
    if (dot == NULL || strchr(dot, '/') != NULL || strcasecmp(dot, ".png") != 0)
      return usage_error("preview: -o '%s': expected a file name ending in .png", out);
  }
  if (cli_same_file(in, out))
    return usage_error("preview: -o '%s' is the input itself; expected another path", out);
  if (tsr_ctx_new(&ctx, NULL) != 0 || tsr_graph_new(ctx, &g) != 0) {
    fail("out of memory");
    goto out;
  }
  {
    tsr_node_t *src = tsr_source_fits_hdu(g, in, &hdu);
    if (src == NULL) {
      fail(tsr_graph_errmsg(g));
      goto out;
    }
    cli_progress_init(&prog, quiet ? -1 : progress, "preview");
    ro.progress = cli_progress_cb;
    ro.progress_ud = &prog;
    ro.cancel = &interrupted;
    ro.jobs = TSR_JOBS_PER_CPU;
    po.run = &ro;
    install_signals();
    rc = tsr_write_png(g, src, out, &po);
    cli_progress_end(&prog);
    if (rc != 0 || interrupted) {
      status = cli_run_failed(ctx, rc);
      goto out;
    }
    if (!quiet)
      fprintf(stderr, "tessera: wrote %s in %.3f s\n", out, cli_now() - t0);
  }
  status = 0;
out:
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  return status;
}

static void print_wcs(tsr_ctx_t *ctx, const tsr_wcs_t *wcs) {
  char desc[512];
  if (wcs == NULL)
    printf("wcs:   none\n");
  else if (tsr_wcs_describe(ctx, wcs, desc, sizeof desc) == 0)
    printf("wcs:   %s\n", desc);
  else
    printf("wcs:   unreadable: %s\n", tsr_errmsg(ctx));
}

static const char *bitpix_name(int bitpix) {
  switch (bitpix) {
  case 8: return "uint8";
  case 16: return "int16";
  case 32: return "int32";
  case 64: return "int64";
  case -32: return "float32";
  case -64: return "float64";
  default: return "?";
  }
}

static void print_shape(int ndim, const int64_t *shape) {
  printf("shape: ");
  for (int a = 0; a < ndim; a++)
    printf("%s%" PRId64, a ? " x " : "", shape[a]);
  printf(" (NAXIS1 x NAXIS2%s)\n", ndim > 2 ? " x ..." : "");
}

static const char *coordsys_name(char c) {
  return c == 'G' ? "Galactic" : c == 'C' ? "ICRS" : c == 'E' ? "ecliptic, J2000" : "?";
}

/* The HEALPix part of `tessera info`: what tsr_source_healpix reads, and
 * every value column, so that a user can pick --field. */
static int print_healpix(tsr_graph_t *g, const char *path, const tsr_healpix_info_t *hi) {
  tsr_healpix_opts_t o = TSR_HEALPIX_OPTS_INIT;
  int64_t npix = 12 * hi->nside * hi->nside;
  tsr_node_t *n;
  o.hdu = hi->hdu;
  if ((n = tsr_source_healpix(g, path, &o)) == NULL) {
    fail(tsr_graph_errmsg(g));
    return 1;
  }
  printf("file:  %s (HEALPix map)\n", path);
  printf("hdu:   %d (cfitsio's numbering: the primary HDU is 1)", hi->hdu);
  if (hi->extname[0])
    printf(", EXTNAME = '%s'", hi->extname);
  printf("\n");
  printf("healpix: NSIDE = %" PRId64 ", ORDERING = %s, COORDSYS = %c (%s), %" PRId64
         " pixels on the sky (12 NSIDE^2)\n",
         hi->nside, hi->nested ? "NESTED" : "RING", hi->coordsys, coordsys_name(hi->coordsys),
         npix);
  printf("index: %s, %" PRId64 " pixels held (%.4g%% of the sky)", hi->explicit_index ?
         "explicit (INDXSCHM = 'EXPLICIT')" : "implicit", hi->n_pixels,
         100.0 * (double)hi->n_pixels / (double)npix);
  if (hi->n_pixels > 0)
    printf(", first pixel %" PRId64 ", last pixel %" PRId64, hi->first_pixel, hi->last_pixel);
  printf("\n");
  if (hi->explicit_index)
    printf("pixel column: %s\n", hi->pixel_column[0] ? hi->pixel_column : "(unnamed)");
  printf("table: %" PRId64 " rows x %" PRId64 " value%s a row\n", hi->n_rows, hi->repeat,
         hi->repeat == 1 ? "" : "s");
  printf("shape: %" PRId64 " (every pixel of the sky in the file's ordering; pixels not held "
         "are NaN)\n", tsr_node_shape(n, 0));
  printf("field: %d, column '%s', TFORM %" PRId64 "%c, read as %s (the default --field)\n",
         hi->field, hi->column, hi->repeat, hi->type, tsr_dtype_name(tsr_node_dtype(n)));
  printf("fields: %d value column%s (--field N or NAME)\n", hi->n_fields,
         hi->n_fields == 1 ? "" : "s");
  for (int f = 0; f < hi->n_fields && f < TSR_HEALPIX_MAX_FIELDS; f++)
    printf("  %d: '%s' %" PRId64 "%c\n", f, hi->fields[f].name[0] ? hi->fields[f].name :
           "(unnamed)", hi->fields[f].repeat, hi->fields[f].type);
  if (hi->n_fields > TSR_HEALPIX_MAX_FIELDS)
    printf("  ... and %d more\n", hi->n_fields - TSR_HEALPIX_MAX_FIELDS);
  return 0;
}

/* tessera info FILE: a FITS image or HEALPix map, or a header text file
 * (a target). */
static int cmd_info(int argc, char **argv) {
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *wcs = NULL;
  tsr_node_t *n;
  int64_t shape[TSR_MAX_DIMS];
  tsr_hdu_t hdu = TSR_HDU_INIT;
  tsr_fits_info_t fi;
  const char *path = NULL;
  int status = 1;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--hdu") == 0) {
      if (i + 1 == argc)
        return usage_error("info: option '--hdu' needs a value");
      if (parse_hdu("info: ", argv[++i], &hdu) != 0)
        return EXIT_USAGE;
    } else if (strcmp(argv[i], "--quiet") == 0) {
      /* The report is the output. */
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error("info: unknown option '%s'", argv[i]);
    } else if (path == NULL) {
      path = argv[i];
    } else {
      return usage_error("info: unexpected argument '%s'", argv[i]);
    }
  }
  if (path == NULL)
    return usage_error("info: missing FILE");
  if (tsr_ctx_new(&ctx, NULL) != 0 || tsr_graph_new(ctx, &g) != 0)
    return fail("out of memory");
  if (!is_fits_file(path)) {
    /* A header text file: what reproject --target would make of it. */
    if (hdu.hdu != 0 || hdu.extname != NULL) {
      fprintf(stderr, "tessera: info: \"%s\" is a header text file, which has no HDUs; --hdu "
                      "applies to FITS files\n", path);
      goto out;
    }
    if (tsr_wcs_read_hdr(ctx, path, &wcs) != 0) {
      fail(tsr_errmsg(ctx));
      goto out;
    }
    printf("file:  %s (header)\n", path);
    for (int a = 0; a < tsr_wcs_naxis(wcs) && a < TSR_MAX_DIMS; a++)
      shape[a] = tsr_wcs_shape(wcs, a);
    print_shape(tsr_wcs_naxis(wcs), shape);
    print_wcs(ctx, wcs);
    status = 0;
    goto out;
  }
  {
    tsr_healpix_opts_t ho = TSR_HEALPIX_OPTS_INIT;
    tsr_healpix_info_t hi;
    int k = is_healpix(ctx, path, &hdu, &ho, &hi);
    if (k < 0) {
      fail(tsr_errmsg(ctx));
      goto out;
    }
    if (k > 0) {
      status = print_healpix(g, path, &hi);
      goto out;
    }
  }
  n = tsr_source_fits_hdu(g, path, &hdu);
  if (n == NULL) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  if (tsr_fits_info(ctx, path, &hdu, &fi) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  printf("file:  %s\n", path);
  printf("hdu:   %d (cfitsio's numbering: the primary HDU is 1)", fi.hdu);
  if (fi.extname[0])
    printf(", EXTNAME = '%s', EXTVER = %d", fi.extname, fi.extver);
  printf("\n");
  for (int a = 0; a < tsr_node_ndim(n); a++)
    shape[a] = tsr_node_shape(n, a);
  print_shape(tsr_node_ndim(n), shape);
  printf("stored: BITPIX = %d (%s)", fi.bitpix, bitpix_name(fi.bitpix));
  if (fi.compression[0])
    printf(", tile-compressed %s", fi.compression);
  if (fi.gzip)
    printf(", gzip file");
  printf("\n");
  printf("scaling: BSCALE = %.17g, BZERO = %.17g", fi.bscale, fi.bzero);
  if (fi.has_blank)
    printf(", BLANK = %lld (read as NaN)", fi.blank);
  printf("%s\n", fi.bscale == 1.0 && fi.bzero == 0.0 ? " (none)" : "");
  printf("dtype: %s (as read, scaling applied)\n", tsr_dtype_name(tsr_node_dtype(n)));
  print_wcs(ctx, tsr_node_wcs(n));
  status = 0;
out:
  tsr_wcs_free(wcs);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  return status;
}

/* tessera cache stats|trim|clear DIR [--cache-max-bytes N] */
static int cmd_cache(int argc, char **argv) {
  const char *verb = NULL, *dir = NULL;
  uint64_t max_bytes = 0;
  tsr_ctx_t *ctx = NULL;
  tsr_cache_t *c = NULL;
  tsr_cache_stats_t st;
  struct stat sb;
  int status = 1, quiet = 0;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--cache-max-bytes") == 0 && i + 1 < argc) {
      if (parse_bytes(argv[++i], &max_bytes) != 0)
        return usage_error("--cache-max-bytes '%s': expected bytes with an optional K, M, G or T "
                           "suffix, in [1M, 2^62]", argv[i]);
    } else if (strcmp(argv[i], "--quiet") == 0) {
      quiet = 1;
    } else if (argv[i][0] == '-') {
      return usage_error("cache: unknown option '%s'", argv[i]);
    } else if (verb == NULL) {
      verb = argv[i];
    } else if (dir == NULL) {
      dir = argv[i];
    } else {
      return usage_error("cache: unexpected argument '%s'", argv[i]);
    }
  }
  if (verb == NULL || (strcmp(verb, "stats") != 0 && strcmp(verb, "trim") != 0 &&
                       strcmp(verb, "clear") != 0))
    return usage_error("cache: expected stats, trim or clear, got '%s'", verb ? verb : "");
  if (dir == NULL)
    dir = getenv("TESSERA_CACHE");
  if (dir == NULL || dir[0] == '\0')
    return usage_error("cache %s: missing DIR", verb);
  /* Inspecting must not create a cache where there is none. */
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "tessera: cache %s: \"%s\" is not a cache directory\n", verb, dir);
    return 1;
  }
  if (tsr_ctx_new(&ctx, NULL) != 0)
    return fail("out of memory");
  /* Opening trims to the budget: only trim has a default one, so that
   * clear never evicts what a larger budget keeps.  stats writes nothing at
   * all, so it works on a cache it cannot write. */
  if ((strcmp(verb, "stats") == 0
           ? tsr_cache_open_read_only(ctx, dir, &c)
           : tsr_cache_open(ctx, dir,
                            max_bytes ? max_bytes
                            : verb[0] == 't' ? TSR_CACHE_DEFAULT_BYTES
                                             : TSR_CACHE_MAX_BYTES,
                            &c)) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if (tsr_cache_warning(c)[0]) {
    fail(tsr_cache_warning(c));
    goto out;
  }
  if (strcmp(verb, "trim") == 0 && tsr_cache_trim(c) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if (strcmp(verb, "clear") == 0 && tsr_cache_clear(c) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if (tsr_cache_stats(c, &st) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if (strcmp(verb, "stats") != 0 && !quiet) {
    printf("%s: %" PRIu64 " entries, %.1f MiB", dir, st.entries, (double)st.bytes / 1048576.0);
    if (st.foreign)
      printf("; %" PRIu64 " foreign entries left alone", st.foreign);
    printf("\n");
  } else if (strcmp(verb, "stats") == 0) {
    printf("cache:       %s\n", dir);
    printf("entries:     %" PRIu64 "\n", st.entries);
    printf("bytes:       %" PRIu64 " (%.1f MiB)\n", st.bytes, (double)st.bytes / 1048576.0);
    printf("raw bytes:   %" PRIu64 " (%.1f MiB)\n", st.raw_bytes, (double)st.raw_bytes / 1048576.0);
    printf("ratio:       %.3f\n", st.ratio);
    printf("hits:        %" PRIu64 "\n", st.hits);
    printf("misses:      %" PRIu64 "\n", st.misses);
    printf("stores:      %" PRIu64 "\n", st.stores);
    printf("evictions:   %" PRIu64 "\n", st.evictions);
    printf("dropped:     %" PRIu64 " (bad files deleted)\n", st.dropped);
    printf("foreign:     %" PRIu64 " (symlinks, FIFOs, devices or other files: skipped, never "
           "deleted)\n", st.foreign);
    for (int i = 0; i < st.n_runs; i++) {
      char when[64];
      time_t t = (time_t)st.runs[i].end_unix_s;
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
      printf("run %s:  %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " stored\n", when,
             st.runs[i].hits, st.runs[i].misses, st.runs[i].stores);
    }
  }
  status = 0;
out:
  tsr_cache_close(c);
  tsr_ctx_free(ctx);
  return status;
}

/* The arguments of a command without valued options: --quiet, then at
 * most max positionals (after "--" anything is one).  An option is never
 * taken for a path.  0, or the usage error's exit status. */
static int plain_args(const char *cmd, int argc, char **argv, int *quiet, const char **pos,
                      int max, int *n) {
  int options = 1;
  *n = 0;
  for (int i = 1; i < argc; i++) {
    if (options && strcmp(argv[i], "--") == 0) {
      options = 0;
    } else if (options && strcmp(argv[i], "--quiet") == 0) {
      *quiet = 1;
    } else if (options && argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error("%s: unknown option '%s'", cmd, argv[i]);
    } else if (*n < max) {
      pos[(*n)++] = argv[i];
    } else {
      return usage_error("%s: unexpected argument '%s'", cmd, argv[i]);
    }
  }
  return 0;
}

static int cmd_sample(int argc, char **argv) {
  char msg[1024];
  const char *dir = NULL;
  int quiet = 0, n, rc;
  if ((rc = plain_args("sample", argc, argv, &quiet, &dir, 1, &n)) != 0)
    return rc;
  if (n == 0)
    return usage_error("sample: missing DIR, the output directory");
  if (tsr_cli_sample_write(dir, msg, sizeof msg) != 0)
    return fail(msg);
  if (!quiet)
    printf("%s\n", msg);
  return 0;
}

static int cmd_demo(int argc, char **argv) {
  const char *dir = "sample";
  char msg[1024], in[PATH_MAX], tgt[PATH_MAX], out[PATH_MAX];
  reproject_args_t a;
  double t0;
  int st, quiet = 0, n;

  if ((st = plain_args("demo", argc, argv, &quiet, &dir, 1, &n)) != 0)
    return st;
  t0 = cli_now();
  if (tsr_cli_sample_write(dir, msg, sizeof msg) != 0)
    return fail(msg);
  if (!quiet)
    printf("%s (%.2f s)\n", msg, cli_now() - t0);
  snprintf(in, sizeof in, "%s/%s", dir, TSR_SAMPLE_IMAGE);
  snprintf(tgt, sizeof tgt, "%s/%s", dir, TSR_SAMPLE_TARGET);
  snprintf(out, sizeof out, "%s/%s", dir, "reprojected.fits");
  memset(&a, 0, sizeof a);
  a.input = in;
  a.target = tgt;
  a.output = out;
  cli_run_args_init(&a.run);
  a.run.cache_dir = NULL;
  a.run.quiet = 1;
  t0 = cli_now();
  st = run_reproject(&a);
  if (st == 0 && !quiet)
    printf("reprojected %s (ICRS, TAN) onto %s (Galactic, ZEA): wrote %s in %.3f s\n", in, tgt,
           out, cli_now() - t0);
  return st;
}

static int cmd_version(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--quiet") != 0)
    return usage_error("version: unexpected argument '%s'", argv[1]);
  printf("tessera %s\n%s\n", tsr_version_string(), tsr_library_versions());
  return 0;
}

static int cmd_help(int argc, char **argv) {
  if (argc > 2)
    return usage_error("help: expected at most one COMMAND");
  if (argc == 2) {
    const char *u = cli_usage(argv[1]);
    if (u == NULL)
      return usage_error("help: unknown command '%s'", argv[1]);
    fputs(u, stdout);
    return 0;
  }
  cli_overview(stdout);
  return 0;
}

static const struct {
  const char *name;
  int (*fn)(int argc, char **argv);
} commands[] = {{"reproject", cmd_reproject}, {"mosaic", cmd_mosaic},
                {"mosaic-header", cmd_mosaic_header}, {"to-healpix", cmd_to_healpix},
                {"hips", cmd_hips}, {"preview", cmd_preview},
                {"info", cmd_info}, {"cache", cmd_cache}, {"sample", cmd_sample},
                {"demo", cmd_demo}, {"version", cmd_version}, {"help", cmd_help},
                {"blot", cmd_blot}};

int main(int argc, char **argv) {
  if (argc < 2)
    return usage_error("missing COMMAND");
  if (strcmp(argv[1], "--version") == 0)
    return cmd_version(argc - 1, argv + 1);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
    return cmd_help(1, argv + 1);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(argv[1], commands[i].name) != 0)
      continue;
    /* -h or --help anywhere before "--" asks for the command's usage, and
     * nothing else is done: no option is ever taken for a path. */
    for (int k = 2; k < argc && strcmp(argv[k], "--") != 0; k++)
      if (strcmp(argv[k], "-h") == 0 || strcmp(argv[k], "--help") == 0) {
        fputs(cli_usage(commands[i].name), stdout);
        return 0;
      }
    return commands[i].fn(argc - 1, argv + 1);
  }
  return usage_error("unknown command '%s'", argv[1]);
}
