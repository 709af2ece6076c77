/* tsr_errors.h -- the error list of tessera.
 *
 * One X-macro list generates the enum (tessera.h), tsr_err_name() and
 * tsr_strerror() (engine/ctx.c).  Values are part of the ABI: never renumber
 * an entry, only append. */
#ifndef TSR_ERRORS_H
#define TSR_ERRORS_H

#define TSR_ERRNO_MAP(XX)                                                     \
  XX(EINVAL,    -1, "invalid argument")                                      \
  XX(ENOMEM,    -2, "out of memory")                                         \
  XX(EIO,       -3, "input/output error")                                    \
  XX(EFITS,     -4, "FITS error")                                            \
  XX(EWCS,      -5, "WCS error")                                             \
  XX(ERANGE,    -6, "value out of range")                                    \
  XX(EBUSY,     -7, "resource busy")                                         \
  XX(ECANCELED, -8, "operation canceled")                                    \
  XX(EWORKER,   -9, "worker failed")                                         \
  XX(ENOTSUP,  -10, "not supported")                                         \
  XX(ESTATE,   -11, "graph has an error from an earlier call")               \
  XX(ECACHE,   -12, "chunk cache error")

#endif
