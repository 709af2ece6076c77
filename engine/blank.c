/* blank.c -- result arrays that cost only what is written (tsr_blank_alloc).
 *
 * DESIGN: a HEALPix map of one image is mostly blank: a 2048^2 image onto
 * nside 2048 gives values to 5% of 50 million pixels, and its two float64
 * planes are 800 MB.  Writing NaN and 0 into the rest cost more than the
 * reprojection: every fresh page is a fault in which the kernel zeroes it
 * (and, in a virtual machine, the host first provides it), about 1 s a
 * 400 MB plane on the bench machine, 2 MB pages or not.  So the blank is
 * left to the page tables: the array is a private mapping, repeated over
 * its range, of a template file (memfd) that holds the value.  Unwritten
 * pages are the template's page-cache pages, shared by every such array,
 * and the first write to a page copies that page alone.  Also for 0: an
 * anonymous mapping would do until written, but reading it gives each
 * page its own memory on some kernels (the bench machine's), where the
 * template's pages are mapped, not copied.
 * A page in front of the values holds the mapping's size and a magic, so
 * tsr_blank_free needs only the pointer.  Templates are made once per
 * process, one per (element size, bit pattern), TEMPLATE_BYTES each, at
 * most TEMPLATES_MAX of them (later values are filled by hand), under a
 * mutex: any thread may allocate.  Where memfd_create or a mapping of the
 * template fails (an old kernel, a sandbox), the values are written into
 * anonymous memory, which is correct, only not cheaper.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define BLANK_MAGIC UINT64_C(0x6b6e616c62727374) /* "tsrblank" */
#define TEMPLATE_BYTES ((size_t)4 << 20)        /* one mapping per 4 MiB of array */
#define TEMPLATES_MAX 8

typedef struct {
  uint64_t magic;
  size_t total;              /* bytes mapped, the header page included */
} blank_head_t;

typedef struct {
  size_t esize;
  uint64_t bits;             /* the value's bits, in the low esize bytes */
  int fd;                    /* the template file, TEMPLATE_BYTES of the value; kept open */
} template_t;

static pthread_mutex_t templates_mu = PTHREAD_MUTEX_INITIALIZER;
static template_t templates[TEMPLATES_MAX]; /* guarded by templates_mu */
static int n_templates;                     /* guarded by templates_mu */

static void fill(void *dst, size_t bytes, const void *elem, size_t esize) {
  unsigned char *d = dst;
  size_t done = esize < bytes ? esize : bytes;
  memcpy(d, elem, done);
  /* Doubling copies: a few dozen memcpy calls for any size. */
  while (done < bytes) {
    size_t k = done < bytes - done ? done : bytes - done;
    memcpy(d + done, d, k);
    done += k;
  }
}

/* The template file for the value, made on first use; -1 if none can be. */
static int template_fd(const void *elem, size_t esize) {
  uint64_t bits = 0;
  int fd = -1;
  memcpy(&bits, elem, esize);
  pthread_mutex_lock(&templates_mu);
  for (int i = 0; i < n_templates; i++)
    if (templates[i].esize == esize && templates[i].bits == bits) {
      fd = templates[i].fd;
      goto out;
    }
#ifdef MFD_CLOEXEC
  if (n_templates < TEMPLATES_MAX && (fd = memfd_create("tessera-blank", MFD_CLOEXEC)) >= 0) {
    void *m = MAP_FAILED;
    if (ftruncate(fd, (off_t)TEMPLATE_BYTES) == 0)
      m = mmap(NULL, TEMPLATE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      close(fd);
      fd = -1;
      goto out;
    }
    fill(m, TEMPLATE_BYTES, elem, esize);
    munmap(m, TEMPLATE_BYTES);
    templates[n_templates].esize = esize;
    templates[n_templates].bits = bits;
    templates[n_templates].fd = fd;
    n_templates++;
  }
#endif
out:
  pthread_mutex_unlock(&templates_mu);
  return fd;
}

int tsr_blank_alloc(tsr_ctx_t *ctx, size_t count, tsr_dtype_t dtype, double value, void **out) {
  long pg = sysconf(_SC_PAGESIZE);
  size_t page = pg > 0 ? (size_t)pg : 4096, esize, bytes, total = 0, done = 0;
  unsigned char elem[8];
  char *base = MAP_FAILED;
  bool refused = false;
  int fd, rc;

  tsr__api_check(ctx != NULL && out != NULL, "tsr_blank_alloc: ctx or out is NULL");
  *out = NULL;
  if (dtype != TSR_F32 && dtype != TSR_F64)
    return tsr__err(ctx, TSR_EINVAL, "blank: dtype %d is not TSR_F32 (1) or TSR_F64 (2)",
                    (int)dtype);
  esize = tsr_dtype_size(dtype);
  if (dtype == TSR_F32) {
    float f = (float)value;
    memcpy(elem, &f, 4);
  } else {
    memcpy(elem, &value, 8);
  }
  if (count > (SIZE_MAX - 2 * page) / esize)
    return tsr__err(ctx, TSR_ENOMEM, "blank: %zu values of %zu bytes do not fit in memory",
                    count, esize);
  bytes = (count * esize + page - 1) / page * page;
  total = page + bytes;
  base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) {
    rc = tsr__err(ctx, TSR_ENOMEM, "blank: cannot map %zu bytes: %s", total, strerror(errno));
    goto out;
  }
  {
    blank_head_t h = {BLANK_MAGIC, total};
    memcpy(base, &h, sizeof h);
  }
  if (bytes > 0 && (fd = template_fd(elem, esize)) >= 0)
    for (; done < bytes; done += TEMPLATE_BYTES) {
      size_t len = bytes - done < TEMPLATE_BYTES ? bytes - done : TEMPLATE_BYTES;
      refused = mmap(base + page + done, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                     fd, 0) == MAP_FAILED;
      if (refused)
        break;
    }
  /* What the template did not cover (none made, or a mapping refused:
   * vm.max_map_count) gets the values written, into anonymous pages
   * mapped again where a mapping was refused (a failed MAP_FIXED may
   * have unmapped them). */
  if (refused && mmap(base + page + done, bytes - done, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
    rc = tsr__err(ctx, TSR_ENOMEM, "blank: cannot map %zu bytes: %s", bytes - done,
                  strerror(errno));
    goto out;
  }
  if (done < bytes)
    fill(base + page + done, bytes - done, elem, esize);
  *out = base + page;
  base = MAP_FAILED;
  rc = 0;
out:
  if (base != MAP_FAILED)
    munmap(base, total);
  return rc;
}

void tsr_blank_free(void *p) {
  long pg = sysconf(_SC_PAGESIZE);
  size_t page = pg > 0 ? (size_t)pg : 4096;
  blank_head_t h;
  if (p == NULL)
    return;
  memcpy(&h, (char *)p - page, sizeof h);
  tsr__api_check(h.magic == BLANK_MAGIC, "tsr_blank_free: not from tsr_blank_alloc");
  if (h.magic == BLANK_MAGIC) /* else a programmer's error: leak rather than unmap a guess */
    munmap((char *)p - page, h.total);
}
