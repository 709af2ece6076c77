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

int fail(const char *msg) {
  fprintf(stderr, "tessera: %s\n", msg);
  return 1;
}

static const char usage_text[] =
    "usage: tessera COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  reproject INPUT --target TARGET -o OUT [options]\n"
    "      reproject a FITS image onto the WCS and shape of TARGET (a .hdr header\n"
    "      file with NAXISn, or a FITS file)\n"
    "        --hdu N|NAME[,VER]      input HDU: a number counted from 1 as cfitsio does (the\n"
    "                                primary HDU is 1, the first extension 2; default: the\n"
    "                                first with data), or EXTNAME[,EXTVER]\n"
    "        --method interp|adaptive|exact\n"
    "                                reprojection method (default interp)\n"
    "        --order ORDER           nearest-neighbor|bilinear|biquadratic|bicubic\n"
    "                                (default bilinear; interp only)\n"
    "      adaptive only (reproject_adaptive's options and defaults):\n"
    "        --kernel gaussian|hann  (default gaussian)\n"
    "        --kernel-width PX       Gaussian width, +-1 sigma (default 1.3)\n"
    "        --sample-region-width PX  Gaussian truncation width (default 4)\n"
    "        --boundary-mode MODE    strict|constant|grid-constant|ignore|\n"
    "                                ignore_threshold|nearest (default strict)\n"
    "        --boundary-fill-value V       constant modes (default 0)\n"
    "        --boundary-ignore-threshold F ignore_threshold mode (default 0.5)\n"
    "        --x-cyclic, --y-cyclic  wrap that input axis\n"
    "        --center-jacobian       Jacobian from transforms at +-0.5 px\n"
    "        --despike-jacobian      replace Jacobian spikes (all-sky wraps)\n"
    "        --conserve-flux         scale by the pixel area ratio (flux images)\n"
    "        --bad-value-mode strict|ignore|constant  NaN/inf inputs (default strict)\n"
    "        --bad-fill-value V      bad-value-mode constant (default 0)\n"
    "      exact only (reproject_exact: overlap-weighted mean, footprint = coverage):\n"
    "        --nan-mode propagate|ignore  NaN inputs spoil the outputs they touch, as\n"
    "                                in reproject (default), or get no weight\n"
    "        --region X1:X2,Y1:Y2    compute only this output region (FITS-style,\n"
    "                                1-based, inclusive); OUT holds exactly it\n"
    "        --block WxH             output block size (default 256x256, or 512x512\n"
    "                                for inputs over 256 MiB)\n"
    "        --mapping-tolerance PX  coordinate interpolation error allowed, in\n"
    "                                input pixels (default 1e-4; 0 = exact)\n"
    "        --no-roundtrip          skip reproject's round-trip coordinate check\n"
    "        --footprint FILE        also write the footprint\n"
    "        --dtype float32|float64 output type (default float32, float64 for a\n"
    "                                float64 input)\n"
    "        --progress | --quiet    force the progress bar / print nothing\n"
    "        -j, --jobs N            workers (default 0 = one per CPU;\n"
    "                                1 = compute in this process)\n"
    "        --retries N             retries of a block whose worker died (default 2;\n"
    "                                implies --executor processes)\n"
    "        --task-timeout S        kill and retry a block running longer (default\n"
    "                                none; implies --executor processes)\n"
    "        --cache DIR             keep computed blocks zstd-compressed in DIR and\n"
    "                                reuse them (default: $TESSERA_CACHE, if set)\n"
    "        --no-cache              ignore $TESSERA_CACHE\n"
    "        --executor E            local (default): threads, or processes with\n"
    "                                --retries/--task-timeout; threads: one\n"
    "                                process, no copies; processes: forked workers,\n"
    "                                a crashing or hung block is retried; mpi: run\n"
    "                                under mpirun, every rank computing blocks for\n"
    "                                rank 0, which writes OUT\n"
    "        --cache-max-bytes N     cache budget; least recently used blocks are\n"
    "                                evicted past it; suffix K, M, G or T (default 4G)\n"
    "  mosaic IN... (--target TARGET | --auto) -o OUT [options]\n"
    "      reproject every input onto one target and combine them\n"
    "      (reproject_and_coadd); each input is read only where it lands\n"
    "        --auto                  a target covering every input (see mosaic-header)\n"
    "        --combine C             mean|sum|first|last|min|max|median (default mean,\n"
    "                                footprint-weighted)\n"
    "        --weights W             a weight map per input, in order (repeat)\n"
    "        --match-background      subtract per-input offsets solved from the\n"
    "                                overlaps' median differences\n"
    "        --background-reference N  keep input N's level (default: mean offset 0)\n"
    "        --blank V               value where no input covers (default nan)\n"
    "        --footprint FILE        also write the summed footprint\n"
    "        --method, --order, --mapping-tolerance, --no-roundtrip, --dtype,\n"
    "        --block, --hdu, -j, --cache, --quiet, --progress  as for reproject\n"
    "  mosaic-header IN... -o TARGET.hdr [options]\n"
    "      write a target covering every input (find_optimal_celestial_wcs)\n"
    "        --projection XXX        (default TAN)\n"
    "        --frame F               icrs|fk5|fk4|fk4-no-e|galactic|supergalactic|\n"
    "                                ecliptic (default: the first\n"
    "                                input's)\n"
    "        --resolution ARCSEC     pixel size (default: the finest input's)\n"
    "        --reference LON,LAT     CRVAL in degrees (default: the mean of the\n"
    "                                inputs' reference points)\n"
    "        --auto-rotate           turn the grid to the minimum-area rectangle\n"
    "      (these also go with mosaic --auto)\n"
    "  preview FITS -o PNG [--stretch linear|sqrt|log|asinh]\n"
    "          [--scale zscale|minmax|PERCENT] [--hdu N] [--max-size PX]\n"
    "      an 8-bit PNG of a 2-D image, NaN transparent (default zscale, linear,\n"
    "      at most 2048 pixels on a side)\n"
    "  cache stats|trim|clear DIR [--cache-max-bytes N]\n"
    "                              a cache's entries, size, compression ratio and\n"
    "                              the hits and misses of its last runs | evict down\n"
    "                              to the budget | delete every block\n"
    "  info FILE [--hdu N|NAME[,VER]]  HDU, shape, stored BITPIX, scaling, dtype\n"
    "                              and WCS of a FITS image\n"
    "  sample DIR                  write the sample sky image and target header\n"
    "  demo [DIR]                  make the sample (default ./sample) and reproject it\n"
    "  version                     print the version\n"
    "  help                        print this text\n";

/* A FITS file starts with a SIMPLE card and has no line breaks in its
 * 80-column cards; a header text file (which may also start with SIMPLE) has
 * one card per line. */
static int is_fits_file(const char *path) {
  char head[81] = {0};
  FILE *f = fopen(path, "rb");
  size_t n;
  if (f == NULL)
    return 0;
  n = fread(head, 1, 81, f);
  fclose(f);
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
  const char *input, *target, *output, *footprint;
  tsr_hdu_t hdu;
  method_t method;
  tsr_interp_opts_t interp;
  tsr_adaptive_opts_t adaptive;  /* block, tolerance, roundtrip, dtype come from interp */
  const char *adaptive_opt;      /* first adaptive-only option given, for usage errors */
  int order_given;               /* --order was given (interp only) */
  tsr_exact_opts_t exact;        /* nan_mode; block and dtype come from interp */
  const char *nan_mode_opt;      /* --nan-mode was given (exact only) */
  const char *mapping_opt;       /* --mapping-tolerance / --no-roundtrip given (not exact) */
  int has_region;
  tsr_region_t region;
  int progress;  /* 0 auto, 1 always, -1 never */
  int quiet;
  int jobs;      /* worker processes; 0 = one per CPU (the CLI's default) */
  int retries;
  double task_timeout_s;
  const char *cache_dir;         /* --cache or $TESSERA_CACHE; NULL = none */
  uint64_t cache_max_bytes;      /* 0 = TSR_CACHE_DEFAULT_BYTES */
  int mpi;                       /* --executor mpi */
  int executor;                  /* --executor local|processes|threads: a tsr_executor_t */
  const char *pool_opt;          /* "retries" or "task-timeout" if given */
} reproject_args_t;

/* The reprojection node for a->method (NULL with the error on the graph). */
static tsr_node_t *build_reprojection(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                      const reproject_args_t *a) {
  switch (a->method) {
  case METHOD_INTERP:
    return tsr_reproject_interp(g, src, target, &a->interp);
  case METHOD_ADAPTIVE: {
    tsr_adaptive_opts_t o = a->adaptive;
    o.mapping_tolerance = a->interp.mapping_tolerance;
    o.roundtrip = a->interp.roundtrip;
    o.dtype = a->interp.dtype;
    o.block[0] = a->interp.block[0];
    o.block[1] = a->interp.block[1];
    return tsr_reproject_adaptive(g, src, target, &o);
  }
  case METHOD_EXACT: {
    tsr_exact_opts_t o = a->exact;
    o.dtype = a->interp.dtype;
    o.block[0] = a->interp.block[0];
    o.block[1] = a->interp.block[1];
    return tsr_reproject_exact(g, src, target, &o);
  }
  }
  return NULL;
}

/* Run the reprojection described by `a`; returns an exit status. */
static int run_reproject(const reproject_args_t *a) {
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *target = NULL;
  tsr_node_t *src, *out, *fp = NULL;
  tsr_node_t *nodes[2];
  const char *paths[2];
  int n = 1, rc, status = 1;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  cli_progress_t prog;
  tsr_region_t region = a->region;
  tsr_cache_t *cache = NULL;
  double t0 = cli_now();

  if (tsr_ctx_new(&ctx, NULL) != 0)
    return fail("out of memory");
  if (a->mpi && cli_mpi_begin(ctx, &ro) != 0)
    goto out;
  /* A cache that cannot be used sets itself aside with a warning; only a
   * bad budget or no memory stops here. */
  if (a->cache_dir && tsr_cache_open(ctx, a->cache_dir,
                                     a->cache_max_bytes ? a->cache_max_bytes
                                                        : TSR_CACHE_DEFAULT_BYTES,
                                     &cache) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if ((rc = read_target(ctx, a->target, &target)) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  if (tsr_graph_new(ctx, &g) != 0) {
    fail(tsr_errmsg(ctx));
    goto out;
  }
  src = tsr_source_fits_hdu(g, a->input, &a->hdu);
  out = build_reprojection(g, src, target, a);
  if (a->footprint)
    fp = tsr_footprint(g, out);
  if (tsr_graph_status(g) != 0) {
    fail(tsr_graph_errmsg(g));
    goto out;
  }
  if (a->has_region) {
    /* Say what is wrong in the terms the user typed (1-based, inclusive). */
    int64_t nx = tsr_node_shape(out, 0), ny = tsr_node_shape(out, 1);
    long long x1 = region.start[0] + 1, x2 = region.stop[0], y1 = region.start[1] + 1,
              y2 = region.stop[1];
    if (x2 < x1 || y2 < y1) {
      fprintf(stderr, "tessera: --region %lld:%lld,%lld:%lld is empty: expected X1 <= X2 and Y1 <= Y2\n",
              x1, x2, y1, y2);
      goto out;
    }
    if (x1 < 1 || y1 < 1 || x2 > nx || y2 > ny) {
      fprintf(stderr,
              "tessera: --region %lld:%lld,%lld:%lld is outside the output, which is %" PRId64
              " x %" PRId64 "; expected 1 <= X1 <= X2 <= %" PRId64 " and 1 <= Y1 <= Y2 <= %" PRId64
              "\n",
              x1, x2, y1, y2, nx, ny, nx, ny);
      goto out;
    }
    /* Planes of a cube: all of them. */
    for (int ax = 2; ax < TSR_MAX_DIMS; ax++) {
      region.start[ax] = 0;
      region.stop[ax] = tsr_node_shape(out, ax);
    }
  }
  nodes[0] = out;
  paths[0] = a->output;
  if (fp) {
    nodes[1] = fp;
    paths[1] = a->footprint;
    n = 2;
  }
  cli_progress_init(&prog, a->quiet || cli_mpi_rank ? -1 : a->progress, "reproject");
  ro.progress = cli_progress_cb;
  ro.progress_ud = &prog;
  ro.cancel = &interrupted;
  ro.jobs = a->jobs;
  ro.executor = (tsr_executor_t)a->executor;
  ro.retries = a->retries;
  ro.task_timeout_s = a->task_timeout_s;
  ro.cache = cache;
  install_signals();
  rc = tsr_write_fits(g, n, nodes, paths, a->has_region ? &region : NULL, &ro);
  cli_progress_end(&prog);
  if (cache && tsr_cache_warning(cache)[0])
    fprintf(stderr, "tessera: warning: %s\n", tsr_cache_warning(cache));
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
  if (!a->quiet && cli_mpi_rank == 0) {
    tsr_region_t r = a->has_region ? region : tsr_region_of(out);
    fprintf(stderr, "tessera: wrote %s (%" PRId64 " x %" PRId64 " %s%s%s) in %.3f s\n",
            a->output, r.stop[0] - r.start[0], r.stop[1] - r.start[1],
            tsr_dtype_name(tsr_node_dtype(out)), fp ? ", footprint " : "", fp ? a->footprint : "",
            cli_now() - t0);
  }
  status = 0;
out:
  tsr_graph_free(g);
  tsr_wcs_free(target);
  tsr_cache_close(cache);
  tsr_ctx_free(ctx);
  if (a->mpi)
    tsr_mpi_finalize();
  return status;
}

static int cmd_reproject(int argc, char **argv) {
  enum { O_TARGET = 256, O_HDU, O_METHOD, O_ORDER, O_REGION, O_BLOCK, O_TOL, O_NORT, O_FP,
         O_DTYPE, O_PROGRESS, O_QUIET, O_RETRIES, O_TIMEOUT, O_CACHE, O_NO_CACHE, O_CACHE_MAX,
         O_EXECUTOR };
  /* Options of --method adaptive. */
  enum { A_KERNEL = 512, A_KWIDTH, A_SRW, A_BMODE, A_BFILL, A_BTHRESH, A_XCYC, A_YCYC, A_CENTER,
         A_DESPIKE, A_CONSERVE, A_BADMODE, A_BADFILL };
  /* Options of --method exact. */
  enum { E_NANMODE = 768 };
  static const struct option opts[] = {
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
      {"output", required_argument, NULL, 'o'},
      {"hdu", required_argument, NULL, O_HDU},
      {"method", required_argument, NULL, O_METHOD},
      {"order", required_argument, NULL, O_ORDER},
      {"region", required_argument, NULL, O_REGION},
      {"block", required_argument, NULL, O_BLOCK},
      {"mapping-tolerance", required_argument, NULL, O_TOL},
      {"no-roundtrip", no_argument, NULL, O_NORT},
      {"footprint", required_argument, NULL, O_FP},
      {"dtype", required_argument, NULL, O_DTYPE},
      {"progress", no_argument, NULL, O_PROGRESS},
      {"quiet", no_argument, NULL, O_QUIET},
      {"jobs", required_argument, NULL, 'j'},
      {"retries", required_argument, NULL, O_RETRIES},
      {"task-timeout", required_argument, NULL, O_TIMEOUT},
      {"cache", required_argument, NULL, O_CACHE},
      {"no-cache", no_argument, NULL, O_NO_CACHE},
      {"cache-max-bytes", required_argument, NULL, O_CACHE_MAX},
      {"executor", required_argument, NULL, O_EXECUTOR},
      {NULL, 0, NULL, 0}};
  reproject_args_t a;
  tsr_interp_opts_t dflt = TSR_INTERP_OPTS_INIT;
  int c;
  int64_t v;

  memset(&a, 0, sizeof a);
  a.interp = dflt;
  {
    tsr_adaptive_opts_t adflt = TSR_ADAPTIVE_OPTS_INIT;
    a.adaptive = adflt;
  }
  a.jobs = 0;
  a.retries = 2;
  if (getenv("TESSERA_CACHE") && getenv("TESSERA_CACHE")[0])
    a.cache_dir = getenv("TESSERA_CACHE");
  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":o:j:", opts, NULL)) != -1) {
    switch (c) {
    case O_TARGET: a.target = optarg; break;
    case 'o': a.output = optarg; break;
    case O_HDU:
      if (parse_hdu("", optarg, &a.hdu) != 0)
        return EXIT_USAGE;
      break;
    case O_METHOD: {
      int m = parse_method(optarg);
      if (m < 0)
        return usage_error("--method '%s': expected interp, adaptive or exact", optarg);
      a.method = (method_t)m; /* METHOD_INTERP, METHOD_ADAPTIVE, METHOD_EXACT */
      break;
    }
    case O_ORDER:
      a.order_given = 1;
      if ((a.interp.order = tsr_order_parse(optarg)) < 0)
        return usage_error("--order '%s': expected nearest-neighbor, bilinear, biquadratic or bicubic",
                           optarg);
      break;
    case O_REGION:
      if (parse_region(optarg, &a.region) != 0)
        return usage_error("--region '%s': expected X1:X2,Y1:Y2 (1-based, inclusive)", optarg);
      a.has_region = 1;
      break;
    case O_BLOCK:
      if (parse_block(optarg, a.interp.block) != 0)
        return usage_error("--block '%s': expected WxH with 1 <= W, H <= 1048576", optarg);
      break;
    case O_TOL: {
      char *end;
      double t = strtod(optarg, &end);
      if (end == optarg || *end || !(t >= 0 && t <= 1))
        return usage_error("--mapping-tolerance '%s': expected pixels in [0, 1]", optarg);
      a.interp.mapping_tolerance = t;
      a.mapping_opt = "mapping-tolerance";
      break;
    }
    case O_NORT: a.interp.roundtrip = 0; a.mapping_opt = "no-roundtrip"; break;
    case O_FP: a.footprint = optarg; break;
    case O_DTYPE:
      if ((a.interp.dtype = parse_dtype(optarg)) < 0)
        return usage_error("--dtype '%s': expected float32 or float64", optarg);
      break;
    case O_PROGRESS: a.progress = 1; break;
    case O_QUIET: a.quiet = 1; break;
    case 'j':
      if (parse_int64(optarg, &v) != 0 || v < 0 || v > 4096)
        return usage_error("--jobs '%s': expected a number of worker processes, 0 to 4096 "
                           "(0 = one per CPU, 1 = no workers)",
                           optarg);
      a.jobs = (int)v;
      break;
    case O_RETRIES:
      if (parse_int64(optarg, &v) != 0 || v < 0 || v > 100)
        return usage_error("--retries '%s': expected 0 to 100", optarg);
      a.retries = (int)v;
      a.pool_opt = "retries";
      break;
    case O_TIMEOUT: {
      char *end;
      double t = strtod(optarg, &end);
      if (end == optarg || *end || !(t >= 0 && t <= 1e6))
        return usage_error("--task-timeout '%s': expected seconds, 0 (none) to 1e6", optarg);
      a.task_timeout_s = t;
      a.pool_opt = "task-timeout";
      break;
    }
    case O_CACHE:
      if (optarg[0] == '\0')
        return usage_error("--cache '': expected a directory");
      a.cache_dir = optarg;
      break;
    case O_NO_CACHE: a.cache_dir = NULL; break;
    case O_EXECUTOR:
      if (cli_parse_executor(optarg, &a.mpi, &a.executor) != 0)
        return EXIT_USAGE;
      break;
    case O_CACHE_MAX:
      if (parse_bytes(optarg, &a.cache_max_bytes) != 0)
        return usage_error("--cache-max-bytes '%s': expected bytes with an optional K, M, G or T "
                           "suffix, in [1M, 2^62]", optarg);
      break;
    case A_KERNEL:
      if ((a.adaptive.kernel = tsr_kernel_parse(optarg)) < 0)
        return usage_error("--kernel '%s': expected gaussian or hann", optarg);
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
      if ((a.adaptive.boundary_mode = tsr_boundary_parse(optarg)) < 0)
        return usage_error("--boundary-mode '%s': expected strict, constant, grid-constant, ignore, "
                           "ignore_threshold or nearest", optarg);
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
      if ((a.adaptive.bad_value_mode = tsr_bad_value_parse(optarg)) < 0)
        return usage_error("--bad-value-mode '%s': expected strict, ignore or constant", optarg);
      goto adaptive_only;
    case A_BADFILL:
      if (parse_real(optarg, &a.adaptive.bad_fill_value) != 0)
        return usage_error("--bad-fill-value '%s': expected a finite number", optarg);
      goto adaptive_only;
    case E_NANMODE:
      if (strcmp(optarg, "propagate") == 0)
        a.exact.nan_mode = TSR_NAN_PROPAGATE;
      else if (strcmp(optarg, "ignore") == 0)
        a.exact.nan_mode = TSR_NAN_IGNORE;
      else
        return usage_error("--nan-mode '%s': expected propagate or ignore", optarg);
      a.nan_mode_opt = "nan-mode";
      break;
    adaptive_only:
      for (int k = 0; a.adaptive_opt == NULL && opts[k].name; k++)
        if (opts[k].val == c)
          a.adaptive_opt = opts[k].name;
      break;
    case ':': return usage_error("reproject: option '%s' needs a value", argv[optind - 1]);
    default: return usage_error("reproject: unknown option '%s'", argv[optind - 1]);
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
  if (a.adaptive_opt && a.method != METHOD_ADAPTIVE)
    return usage_error("reproject: option '--%s' applies to --method adaptive only", a.adaptive_opt);
  if (a.nan_mode_opt && a.method != METHOD_EXACT)
    return usage_error("reproject: option '--%s' applies to --method exact only", a.nan_mode_opt);
  if (a.method == METHOD_EXACT && a.order_given)
    return usage_error("reproject: option '--order' does not apply to --method exact "
                       "(it applies to --method interp only)");
  if (a.method == METHOD_EXACT && a.mapping_opt)
    return usage_error("reproject: option '--%s' does not apply to --method exact (corners "
                       "are mapped exactly)", a.mapping_opt);
  if (a.order_given && a.method == METHOD_ADAPTIVE)
    return usage_error("reproject: option '--order' applies to --method interp only");
  /* Retries and timeouts need workers that can die alone: processes. */
  if (a.pool_opt && a.executor == TSR_EXECUTOR_THREADS)
    return usage_error("reproject: option '--%s' applies to --executor processes, not threads "
                       "(a thread cannot be killed or retried alone)", a.pool_opt);
  if (a.pool_opt && a.executor == TSR_EXECUTOR_DEFAULT && !a.mpi)
    a.executor = TSR_EXECUTOR_PROCESSES;
  return run_reproject(&a);
}

/* tessera preview FITS -o PNG: a quick look, as ds9 or astropy would scale it. */
static int cmd_preview(int argc, char **argv) {
  enum { P_STRETCH = 256, P_SCALE, P_HDU, P_MAX };
  static const struct option opts[] = {{"stretch", required_argument, NULL, P_STRETCH},
                                       {"scale", required_argument, NULL, P_SCALE},
                                       {"hdu", required_argument, NULL, P_HDU},
                                       {"max-size", required_argument, NULL, P_MAX},
                                       {"output", required_argument, NULL, 'o'},
                                       {NULL, 0, NULL, 0}};
  tsr_preview_opts_t po = TSR_PREVIEW_OPTS_INIT;
  const char *in = NULL, *out = NULL;
  int c, status = 1;
  tsr_hdu_t hdu = TSR_HDU_INIT;
  int64_t v;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;

  opterr = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out = optarg; break;
    case P_STRETCH:
      if (strcmp(optarg, "linear") == 0)
        po.stretch = TSR_STRETCH_LINEAR;
      else if (strcmp(optarg, "sqrt") == 0)
        po.stretch = TSR_STRETCH_SQRT;
      else if (strcmp(optarg, "log") == 0)
        po.stretch = TSR_STRETCH_LOG;
      else if (strcmp(optarg, "asinh") == 0)
        po.stretch = TSR_STRETCH_ASINH;
      else
        return usage_error("preview: --stretch '%s': expected linear, sqrt, log or asinh", optarg);
      break;
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
    if (tsr_write_png(g, src, out, &po) != 0) {
      fail(tsr_errmsg(ctx));
      goto out;
    }
  }
  status = 0;
out:
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  return status;
}

/* The stored type of a FITS BITPIX, for info. */
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

static int cmd_info(int argc, char **argv) {
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_node_t *n;
  tsr_hdu_t hdu = TSR_HDU_INIT;
  tsr_fits_info_t fi;
  const char *path = NULL;
  char desc[512];
  int status = 1;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--hdu") == 0 && i + 1 < argc) {
      if (parse_hdu("info: ", argv[++i], &hdu) != 0)
        return EXIT_USAGE;
    } else if (argv[i][0] == '-') {
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
  printf("shape: ");
  for (int a = 0; a < tsr_node_ndim(n); a++)
    printf("%s%" PRId64, a ? " x " : "", tsr_node_shape(n, a));
  printf(" (NAXIS1 x NAXIS2%s)\n", tsr_node_ndim(n) > 2 ? " x ..." : "");
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
  if (tsr_node_wcs(n) == NULL) {
    printf("wcs:   none\n");
  } else if (tsr_wcs_describe(ctx, tsr_node_wcs(n), desc, sizeof desc) == 0) {
    printf("wcs:   %s\n", desc);
  } else {
    printf("wcs:   unreadable: %s\n", tsr_errmsg(ctx));
  }
  status = 0;
out:
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
  int status = 1;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--cache-max-bytes") == 0 && i + 1 < argc) {
      if (parse_bytes(argv[++i], &max_bytes) != 0)
        return usage_error("--cache-max-bytes '%s': expected bytes with an optional K, M, G or T "
                           "suffix, in [1M, 2^62]", argv[i]);
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
  if (strcmp(verb, "stats") != 0) {
    printf("%s: %" PRIu64 " entries, %.1f MiB", dir, st.entries, (double)st.bytes / 1048576.0);
    if (st.foreign)
      printf("; %" PRIu64 " foreign entries left alone", st.foreign);
    printf("\n");
  } else {
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

static int cmd_sample(int argc, char **argv) {
  char msg[1024];
  if (argc != 2)
    return usage_error("sample: expected one argument, the output directory");
  if (tsr_cli_sample_write(argv[1], msg, sizeof msg) != 0)
    return fail(msg);
  printf("%s\n", msg);
  return 0;
}

static int cmd_demo(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "sample";
  char msg[1024], in[PATH_MAX], tgt[PATH_MAX], out[PATH_MAX];
  reproject_args_t a;
  tsr_interp_opts_t dflt = TSR_INTERP_OPTS_INIT;
  double t0;
  int st;

  if (argc > 2)
    return usage_error("demo: expected at most one argument, the directory");
  t0 = cli_now();
  if (tsr_cli_sample_write(dir, msg, sizeof msg) != 0)
    return fail(msg);
  printf("%s (%.2f s)\n", msg, cli_now() - t0);
  snprintf(in, sizeof in, "%s/%s", dir, TSR_SAMPLE_IMAGE);
  snprintf(tgt, sizeof tgt, "%s/%s", dir, TSR_SAMPLE_TARGET);
  snprintf(out, sizeof out, "%s/%s", dir, "reprojected.fits");
  memset(&a, 0, sizeof a);
  a.input = in;
  a.target = tgt;
  a.output = out;
  a.interp = dflt;
  a.quiet = 1;
  a.retries = 2;
  t0 = cli_now();
  st = run_reproject(&a);
  if (st == 0)
    printf("reprojected %s (ICRS, TAN) onto %s (Galactic, ZEA): wrote %s in %.3f s\n", in, tgt,
           out, cli_now() - t0);
  return st;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage_error("missing COMMAND");
  if (strcmp(argv[1], "reproject") == 0)
    return cmd_reproject(argc - 1, argv + 1);
  if (strcmp(argv[1], "preview") == 0)
    return cmd_preview(argc - 1, argv + 1);
  if (strcmp(argv[1], "mosaic") == 0)
    return cmd_mosaic(argc - 1, argv + 1);
  if (strcmp(argv[1], "mosaic-header") == 0)
    return cmd_mosaic_header(argc - 1, argv + 1);
  if (strcmp(argv[1], "info") == 0)
    return cmd_info(argc - 1, argv + 1);
  if (strcmp(argv[1], "sample") == 0)
    return cmd_sample(argc - 1, argv + 1);
  if (strcmp(argv[1], "cache") == 0)
    return cmd_cache(argc - 1, argv + 1);
  if (strcmp(argv[1], "demo") == 0)
    return cmd_demo(argc - 1, argv + 1);
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    printf("tessera %s\n", tsr_version_string());
    return 0;
  }
  if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  return usage_error("unknown command '%s'", argv[1]);
}
