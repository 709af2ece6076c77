/* cli.h -- what the tessera commands share: exit codes, messages, option
 * parsers and the interrupt flag (defined in main.c). */
#ifndef TSR_CLI_H
#define TSR_CLI_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <tessera/tessera.h>

#include "progress.h"

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

/* Set by SIGINT / SIGTERM once install_signals() ran; runs poll it. */
extern volatile int interrupted;
void install_signals(void);

/* "tessera: <message> (see 'tessera help')" on stderr; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "tessera: <msg>" on stderr; returns 1. */
int fail(const char *msg);
/* After a run that failed (rc != 0) or was interrupted: says so (rank 0
 * only) and returns the exit status, 1 or EXIT_INTERRUPTED. */
int cli_run_failed(tsr_ctx_t *ctx, int rc);

/* 0 on success, -1 if s is not entirely what is expected (options.c). */
int parse_int64(const char *s, int64_t *v);
int parse_real(const char *s, double *v);     /* finite */
int parse_block(const char *s, int64_t b[2]); /* WxH, 1 to 1048576 each */
int parse_bytes(const char *s, uint64_t *v);  /* N[K|M|G|T] in [1M, 2^62] */
/* --method: 0 interp, 1 adaptive, 2 exact, 3 drizzle; --dtype: TSR_F32 or TSR_F64; -1 if neither. */
int parse_method(const char *s);
int parse_dtype(const char *s);
/* --stretch: a tsr_stretch_t (linear, sqrt, log, asinh); --nan-mode: a
 * tsr_nan_mode_t (propagate, ignore); -1 if neither. */
int parse_stretch(const char *s);
int parse_nan_mode(const char *s);
/* --hdu: N (1-based, 0 = the first image with data), NAME or NAME,VER
 * (EXTNAME and EXTVER; the name is copied to a static buffer: one --hdu
 * per run).  Prints the usage error
 * (prefixed by `cmd`) and returns nonzero if bad. */
int parse_hdu(const char *cmd, const char *s, tsr_hdu_t *h);
/* X1:X2,Y1:Y2, FITS-style (1-based, inclusive) -> a zero-based half-open region. */
int parse_region(const char *s, tsr_region_t *r);

/* A target from a FITS file (its header and shape) or a header text file;
 * *out is the caller's (tsr_wcs_free). */
int read_target(tsr_ctx_t *ctx, const char *path, tsr_wcs_t **out);

/* --executor local|processes|threads|mpi into *mpi (1 for mpi) and
 * *executor (a tsr_executor_t); prints the usage error and returns nonzero
 * if bad. */
int cli_parse_executor(const char *s, int *mpi, int *executor);
/* Start MPI and point ro->mpi_comm at MPI_COMM_WORLD; sets cli_mpi_rank.
 * Messages and progress come from rank 0 only. */
int cli_mpi_begin(tsr_ctx_t *ctx, tsr_run_opts_t *ro);
extern int cli_mpi_rank;

/* A command's usage text (usage.c), NULL for an unknown command; the
 * overview of all commands. */
const char *cli_usage(const char *cmd);
void cli_overview(FILE *f);

/* 1 if paths a and b name the same existing file (through links too). */
int cli_same_file(const char *a, const char *b);

/* The options reproject and mosaic share (runopts.c).  Their getopt codes
 * start at 1024, above each command's own; CLI_RUN_OPTION_TABLE goes into
 * each command's struct option table. */
enum { CLI_HDU = 1024, CLI_METHOD, CLI_ORDER, CLI_REGION, CLI_BLOCK, CLI_TOL, CLI_NORT, CLI_FP,
       CLI_DTYPE, CLI_PROGRESS, CLI_QUIET, CLI_RETRIES, CLI_TIMEOUT, CLI_CACHE, CLI_NO_CACHE,
       CLI_CACHE_MAX, CLI_EXECUTOR };
/* How to read the inputs and run: every command that computes takes these. */
#define CLI_EXEC_OPTION_TABLE                                                                     \
  {"hdu", required_argument, NULL, CLI_HDU}, {"dtype", required_argument, NULL, CLI_DTYPE},       \
  {"progress", no_argument, NULL, CLI_PROGRESS}, {"quiet", no_argument, NULL, CLI_QUIET},         \
  {"jobs", required_argument, NULL, 'j'}, {"retries", required_argument, NULL, CLI_RETRIES},      \
  {"task-timeout", required_argument, NULL, CLI_TIMEOUT},                                         \
  {"cache", required_argument, NULL, CLI_CACHE}, {"no-cache", no_argument, NULL, CLI_NO_CACHE},   \
  {"cache-max-bytes", required_argument, NULL, CLI_CACHE_MAX},                                    \
  {"executor", required_argument, NULL, CLI_EXECUTOR}, {"output", required_argument, NULL, 'o'}
/* Those and how to reproject onto a target grid: reproject and mosaic. */
#define CLI_RUN_OPTION_TABLE                                                                      \
  {"method", required_argument, NULL, CLI_METHOD}, {"order", required_argument, NULL, CLI_ORDER}, \
  {"region", required_argument, NULL, CLI_REGION}, {"block", required_argument, NULL, CLI_BLOCK}, \
  {"mapping-tolerance", required_argument, NULL, CLI_TOL},                                        \
  {"no-roundtrip", no_argument, NULL, CLI_NORT}, {"footprint", required_argument, NULL, CLI_FP},  \
  CLI_EXEC_OPTION_TABLE

typedef struct {
  tsr_hdu_t hdu;             /* --hdu N|NAME[,VER] */
  int method;                /* 0 interp, 1 adaptive, 2 exact, 3 drizzle (parse_method) */
  tsr_interp_opts_t interp;  /* order, tolerance, roundtrip, dtype and block for every method */
  int order_given;           /* --order was given (interp only) */
  const char *mapping_opt;   /* --mapping-tolerance / --no-roundtrip given (not exact) */
  int has_region;
  tsr_region_t region;       /* zero-based, half-open */
  const char *footprint;
  int progress, quiet;
  int jobs;                  /* 0 = one per CPU (the CLI's default) */
  int retries;
  double task_timeout_s;
  const char *pool_opt;      /* "retries" or "task-timeout" if given */
  const char *cache_dir;     /* --cache or $TESSERA_CACHE; NULL = none */
  uint64_t cache_max_bytes;  /* 0 = TSR_CACHE_DEFAULT_BYTES */
  int mpi;                   /* --executor mpi */
  int executor;              /* a tsr_executor_t */
} cli_run_args_t;

void cli_run_args_init(cli_run_args_t *r);
/* Option c (a getopt code) with value arg: 0 if it is a run option and
 * good, -1 if it is not a run option, else the usage error's exit status. */
int cli_run_option(const char *cmd, int c, const char *arg, cli_run_args_t *r);
/* The end of a command's getopt switch: ':' and '?' are usage errors
 * (naming argv[optind - 1]), any other code a run option.  0, or the exit
 * status after saying why. */
int cli_run_option_or_usage(const char *cmd, int c, const char *arg, char *const *argv,
                            cli_run_args_t *r);
/* The checks between run options, once all are parsed: 0 or EXIT_USAGE. */
int cli_run_check(const char *cmd, cli_run_args_t *r);
/* MPI, the cache, the progress bar and *ro from r: 0, or the exit status
 * (after saying why).  *cache is the caller's to close, also on failure. */
int cli_run_begin(tsr_ctx_t *ctx, const cli_run_args_t *r, const char *label, tsr_run_opts_t *ro,
                  tsr_cache_t **cache, cli_progress_t *prog);
/* r's --region checked against output node `out` and widened to its cube
 * planes into *region: 0, or 1 after saying why. */
int cli_run_region(const cli_run_args_t *r, const tsr_node_t *out, tsr_region_t *region);

/* What a command that writes images holds while it runs: the context, the
 * run options (cli_run_begin), the target and an empty graph. */
typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *target;
  tsr_cache_t *cache;
  tsr_run_opts_t ro;
  cli_progress_t prog;
  double t0;                 /* cli_now() at the start */
  int mpi;                   /* MPI was started (finalised on close) */
} cli_session_t;
/* Open *s for run options r (progress labelled `label`) with the target
 * read from target_path: 0, or the exit status after saying why.  Close
 * with cli_session_close in either case. */
int cli_session_open(cli_session_t *s, const cli_run_args_t *r, const char *label,
                     const char *target_path);
/* After the session's tsr_write_fits returned rc: ends the progress bar,
 * prints the cache's warning; 0, or the exit status of a failed or
 * interrupted run (after saying so). */
int cli_session_written(cli_session_t *s, int rc);
void cli_session_close(cli_session_t *s);

/* SWarp's weight kinds, DQ masks and the variance and DQ outputs: the
 * options of every command that coadds (mosaic, reproject --method
 * drizzle), parsed and checked alike (weight_args.c).  Codes from 2048. */
enum { CLI_WTYPE = 2048, CLI_WTHRESH, CLI_WSUFFIX, CLI_DQ, CLI_DQ_BITS, CLI_VARIANCE_OUT,
       CLI_RMS_OUT, CLI_DQ_OUT };
#define CLI_WEIGHT_OPTION_TABLE                                                                   \
  {"weight-type", required_argument, NULL, CLI_WTYPE},                                           \
  {"weight-thresh", required_argument, NULL, CLI_WTHRESH},                                       \
  {"weight-suffix", required_argument, NULL, CLI_WSUFFIX}, {"dq", required_argument, NULL, CLI_DQ}, \
  {"dq-bits", required_argument, NULL, CLI_DQ_BITS},                                             \
  {"variance-out", required_argument, NULL, CLI_VARIANCE_OUT},                                   \
  {"rms-out", required_argument, NULL, CLI_RMS_OUT}, {"dq-out", required_argument, NULL, CLI_DQ_OUT}

typedef struct {
  int type;                  /* --weight-type: a tsr_weight_type_t, or -1 (none) */
  double *thresh;            /* --weight-thresh, per input (the last given repeats) */
  int n_thresh;
  const char *suffix;        /* --weight-suffix: SWarp's WEIGHT_SUFFIX */
  const char **dqs;          /* --dq, in order of the inputs */
  int n_dqs;
  uint32_t dq_bits;          /* --dq-bits; 0 = any nonzero DQ value */
  const char *variance_out, *rms_out, *dq_out;
  int cap;                   /* room in thresh and dqs (argc) */
} cli_weight_args_t;

/* Empty *w with room for argc values: 0, or -1 out of memory.  Free with
 * cli_weight_args_free (also after a failed init). */
int cli_weight_args_init(cli_weight_args_t *w, int argc);
void cli_weight_args_free(cli_weight_args_t *w);
/* Option c with value arg: 0 if it is a weight option and good, -1 if it
 * is not one, else the usage error's exit status (messages start with cmd). */
int cli_weight_option(const char *cmd, int c, const char *arg, cli_weight_args_t *w);
/* The checks between them once all are parsed, for n_inputs inputs and
 * n_weights --weight maps: 0 or EXIT_USAGE after saying why. */
int cli_weight_check(const char *cmd, const cli_weight_args_t *w, int n_inputs, int n_weights);
/* Input i's WEIGHT_THRESH (NaN = the type's default). */
double cli_weight_thresh(const cli_weight_args_t *w, int i);
/* Input `in`'s weight map by --weight-suffix: its name with the extension
 * (from the last '.') replaced by suffix; malloc'ed (NULL out of memory). */
char *cli_weight_suffixed(const char *in, const char *suffix);

int cmd_mosaic(int argc, char **argv);
/* reproject --method drizzle (several inputs, drizzle's options) and blot
 * (drizzle.c). */
int cmd_reproject_drizzle(int argc, char **argv);
int cmd_blot(int argc, char **argv);
int cmd_mosaic_header(int argc, char **argv);
int cmd_to_healpix(int argc, char **argv);
/* `tessera hips IN... -o DIR` (hips.c). */
int cmd_hips(int argc, char **argv);

#endif
