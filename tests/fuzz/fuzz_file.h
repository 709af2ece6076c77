/* fuzz_file.h -- for the targets that read files: the input written to a
 * file of this process in /dev/shm, reused by every run. */
#ifndef TSR_FUZZ_FILE_H
#define TSR_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

/* @return the path (static; the caller unlinks it), or NULL. */
static const char *fuzz_file(const uint8_t *data, size_t size, const char *tag) {
  static char path[64];
  FILE *f;
  snprintf(path, sizeof path, "/dev/shm/tsr-fuzz-%s%ld.fits", tag, (long)getpid());
  if ((f = fopen(path, "wb")) == NULL)
    return NULL;
  fwrite(data, 1, size, f);
  fclose(f);
  return path;
}

#endif
