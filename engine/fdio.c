/* fdio.c -- whole reads and writes on descriptors: the pool's socket
 * messages and the cache's chunk files both need every byte or a reason,
 * through short transfers and EINTR. */
#include <errno.h>
#include <unistd.h>

#include "internal.h"

bool tsr__read_full(int fd, void *p, size_t n) {
  char *q = p;
  while (n > 0) {
    ssize_t k = read(fd, q, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      if (k == 0)
        errno = EIO;
      return false;
    }
    q += k, n -= (size_t)k;
  }
  return true;
}

bool tsr__write_full(int fd, const void *p, size_t n) {
  const char *q = p;
  while (n > 0) {
    ssize_t k = write(fd, q, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      if (k == 0)
        errno = ENOSPC;
      return false;
    }
    q += k, n -= (size_t)k;
  }
  return true;
}

int tsr__pread_full(int fd, void *dst, size_t len, off_t off) {
  while (len > 0) {
    ssize_t got = pread(fd, dst, len, off);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return got == 0 ? 1 : -1;
    dst = (char *)dst + got, len -= (size_t)got, off += got;
  }
  return 0;
}
