/* sample.h -- the sample sky the project generates itself. */
#ifndef TSR_CLI_SAMPLE_H
#define TSR_CLI_SAMPLE_H

#include <stddef.h>

#define TSR_SAMPLE_IMAGE "sky.fits"
#define TSR_SAMPLE_TARGET "target.hdr"

/* Write DIR/sky.fits (2048 x 2048 float32, TAN, ICRS: stars, galaxies, a
 * nebula, noise; the same bytes every time) and DIR/target.hdr (ZEA in
 * Galactic coordinates).  Creates DIR if needed.  On success returns 0 and a
 * summary in msg; on failure -1 and the error in msg. */
int tsr_cli_sample_write(const char *dir, char *msg, size_t cap);

#endif
