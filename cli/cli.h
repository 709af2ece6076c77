/* cli.h -- what the tessera commands share: exit codes, messages, option
 * parsers and the interrupt flag (defined in main.c). */
#ifndef TSR_CLI_H
#define TSR_CLI_H

#include <stdint.h>
#include <tessera/tessera.h>

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

/* Set by SIGINT / SIGTERM once install_signals() ran; runs poll it. */
extern volatile int interrupted;
void install_signals(void);

/* "tessera: <message> (see 'tessera help')" on stderr; returns EXIT_USAGE. */
int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "tessera: <msg>" on stderr; returns 1. */
int fail(const char *msg);

/* 0 on success, -1 if s is not entirely what is expected (options.c). */
int parse_int64(const char *s, int64_t *v);
int parse_real(const char *s, double *v);     /* finite */
int parse_block(const char *s, int64_t b[2]); /* WxH, 1 to 1048576 each */
int parse_bytes(const char *s, uint64_t *v);  /* N[K|M|G|T] in [1M, 2^62] */
/* --method: 0 interp, 1 adaptive, 2 exact; --dtype: TSR_F32 or TSR_F64; -1 if neither. */
int parse_method(const char *s);
int parse_dtype(const char *s);
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

int cmd_mosaic(int argc, char **argv);
int cmd_mosaic_header(int argc, char **argv);

#endif
