/* cache.c -- the on-disk chunk cache: immutable zstd chunk files.
 *
 * DESIGN: a cache is a directory of immutable files, one per (owner node
 * key, chunk index), at <dir>/<first 2 hex of key>/<32 hex key>-<c0.c1.c2.c3>.tsc.
 * A file is a fixed 128-byte header (magic "TSRC", format version, dtype,
 * plane count, the chunk's box, raw and frame sizes, and a hash of the header
 * itself) followed by one zstd frame per plane (level 1, content size and
 * content checksum on; a request for the data plane alone decompresses only
 * it), each byte-shuffled: byte k of every element comes before byte k+1 of
 * any, so the slowly varying sign and exponent bytes of floats sit together
 * and compress, while the noisy low mantissa bytes cost little time.  The planner asks before computing a chunk and stores the
 * chunk after (plan.c, tsr__run_chunk), in whichever process computes it.
 *
 * Invariants and concurrency: a file is only ever published whole, by
 * writing <dir>/tmp/<name>.<pid>-<seq>.tmp and renaming it into place without
 * replacing anything, so a reader sees either no file or a complete one, and
 * two processes storing the same chunk at once both succeed (the contents
 * are equal; the first rename wins).  Only regular files and real
 * subdirectories are the cache's: anything else in the directory is foreign
 * and never followed, opened, counted or deleted (see "Foreign entries").
 * Nothing is locked: files are opened per operation, no descriptor is held,
 * and a reader that finds anything wrong with a file (short, long, foreign
 * magic, other format version, other dtype or box, a frame whose content
 * size or checksum disagrees) deletes it and reports a miss, so the chunk is
 * recomputed and stored again.  Least recently used order is the files'
 * mtime, set explicitly on store and on every hit (atime is unreliable under
 * noatime; an explicit timestamp also has full ns resolution, where the
 * kernel's own clock for file times is coarse); eviction deletes the oldest
 * first.  The byte total is kept as a running estimate and made exact by a
 * scan whenever it passes the budget; a scan trims to 7/8 of the budget so
 * that a full cache does not rescan on every store.
 *
 * Processes: the handle is created in the caller's process; a run's pool
 * workers are forked afterwards and use their copy of it.  Counters and the
 * last warning live in a small MAP_SHARED mapping made at open, so what the
 * workers count is seen by the parent.  Everything else a worker touches
 * (the ZSTD contexts and scratch buffers, created lazily) is its private
 * copy-on-write memory, so no handle or buffer is ever shared between
 * processes.
 *
 * Threads: any number of threads may look up and store at once.  The
 * counters are atomic; each lookup or store takes a work set (ZSTD
 * contexts and buffers) from WORK_SLOTS slots claimed with an atomic flag,
 * or a fresh one when all are busy, so decompression runs in parallel and
 * nothing blocks.  A process forked while another thread held a slot finds
 * that slot busy for ever, which costs it nothing (no lock is left held).
 * Temporary names carry the pid and a per-process sequence number, so two
 * threads storing the same chunk do not share one.  Flushing the stats
 * (the end of a run, close) takes the handle's mutex.  The library never prints: warnings are counted, the last one
 * is kept (tsr_cache_warning) and copied into the ctx message after a run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_createCCtx_advanced: contexts on the ctx allocator */
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "cache.h"

/* Header, little-endian: 0 magic[4] | 4 u16 format | 6 u16 header bytes |
 * 8 u8 dtype | 9 u8 planes | 10 u8 element bytes | 11 u8 filter | 12 pad |
 * 16 node key[16] | 32 i64 start[4] | 64 i64 stop[4] | 96 u64 raw bytes per
 * plane | 104 u64 frame bytes of plane 0, 112 of plane 1 | 120 u64 XXH3-64
 * of bytes 0..119. */
_Static_assert(TSR__MAX_PLANES <= 2, "the header has room for two frame sizes");
#define CACHE_MAGIC "TSRC"
#define CACHE_FORMAT 1
#define HDR_BYTES 128
#define FILTER_SHUFFLE 1
#define ZLEVEL 1
#define STATS_MAGIC "tessera-cache-stats 1"
#define MAX_RUNS 8
/* A temporary file this old is a leftover of a killed process even if its
 * pid has been reused. */
#define TMP_STALE_S 3600

/* Counters shared by every process of the handle's runs (MAP_SHARED). */
typedef struct {
  atomic_uint_fast64_t hits, misses, stores, dropped, evictions, warnings;
  atomic_uint_fast64_t raw_stored, zip_stored;   /* bytes */
  atomic_uint_fast64_t compress_ns, decompress_ns;
  atomic_int_fast64_t disk_bytes;                /* estimate of the directory's total */
  atomic_int stores_off;                         /* a store failed: stop storing this run */
  atomic_flag trimming;                          /* one automatic trim at a time */
  atomic_flag msg_lock;                          /* guards warning[] */
  char warning[512];
} shared_t;

/* What one lookup or store works with; see "Threads" above. */
typedef struct {
  atomic_flag busy;
  ZSTD_CCtx *cctx;
  ZSTD_DCtx *dctx;
  unsigned char *raw, *file;     /* shuffled planes; a whole file */
  size_t raw_cap, file_cap;
} work_t;
#define WORK_SLOTS 16

struct tsr_cache_s {
  tsr_ctx_t *ctx;                /* allocator (called from any thread) */
  char *dir;                     /* owned copy */
  uint64_t max_bytes;
  bool aside;                    /* no usable directory: every lookup misses */
  bool read_only;                /* tsr_cache_open_read_only: nothing is ever written */
  shared_t *sh;                  /* shared with forked workers */
  /* Private to each process (copies after a fork). */
  work_t work[WORK_SLOTS];
  pthread_mutex_t flush_lock;    /* guards the three fields below */
  /* Parent only: counts already written to <dir>/stats. */
  uint64_t flushed[5];           /* hits, misses, stores, evictions, dropped */
  uint64_t run_warnings;         /* warnings count at the last run end */
  char warning[512];             /* tsr_cache_warning's copy */
};

typedef struct {
  int64_t mtime_ns;
  uint64_t size;
  dev_t dev;                     /* identity as scanned: only this file is deleted */
  ino_t ino;
  uint64_t raw;                  /* from the header, when asked for */
  char name[144];                /* relative to dir: "ab/<key>-<index>.tsc" */
} entry_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *zalloc(void *opaque, size_t size) { return tsr__malloc(opaque, size); }

static void work_release_buffers(tsr_cache_t *c, work_t *w) {
  ZSTD_freeCCtx(w->cctx);
  ZSTD_freeDCtx(w->dctx);
  tsr__free(c->ctx, w->raw);
  tsr__free(c->ctx, w->file);
  w->cctx = NULL;
  w->dctx = NULL;
  w->raw = w->file = NULL;
  w->raw_cap = w->file_cap = 0;
}

/* A free work set, or a fresh one (calloc'd; work_put frees it) when every
 * slot is busy; NULL when out of memory. */
static work_t *work_get(tsr_cache_t *c) {
  for (int i = 0; i < WORK_SLOTS; i++)
    if (!atomic_flag_test_and_set_explicit(&c->work[i].busy, memory_order_acquire))
      return &c->work[i];
  return tsr__calloc(c->ctx, 1, sizeof(work_t));
}

static void work_put(tsr_cache_t *c, work_t *w) {
  if (w == NULL)
    return;
  if (w >= c->work && w < c->work + WORK_SLOTS) {
    atomic_flag_clear_explicit(&w->busy, memory_order_release);
    return;
  }
  work_release_buffers(c, w);
  tsr__free(c->ctx, w);
}
static void zfree(void *opaque, void *p) { tsr__free(opaque, p); }

static void warn(tsr_cache_t *c, const char *fmt, ...) TSR__PRINTF(2, 3);
static void warn(tsr_cache_t *c, const char *fmt, ...) {
  char buf[sizeof c->sh->warning];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  atomic_fetch_add(&c->sh->warnings, 1);
  /* A bounded spin: a worker killed while holding the lock must not hang
   * the parent; losing one warning's text is harmless. */
  for (int i = 0; i < 1000000; i++)
    if (!atomic_flag_test_and_set(&c->sh->msg_lock)) {
      memcpy(c->sh->warning, buf, sizeof buf);
      atomic_flag_clear(&c->sh->msg_lock);
      return;
    }
}

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static void key_hex(const uint8_t key[16], char hex[33]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    hex[2 * i] = digits[key[i] >> 4];
    hex[2 * i + 1] = digits[key[i] & 15];
  }
  hex[32] = '\0';
}

/* "ab/<key>-c0.c1.c2.c3.tsc" for the chunk whose box is `chunk`. */
static void chunk_name(const tsr_node_t *n, const tsr_region_t *chunk, char *buf, size_t cap) {
  char hex[33];
  key_hex(n->key, hex);
  snprintf(buf, cap, "%.2s/%s-%" PRId64 ".%" PRId64 ".%" PRId64 ".%" PRId64 ".tsc", hex, hex,
           chunk->start[0] / n->chunk[0], chunk->start[1] / n->chunk[1],
           chunk->start[2] / n->chunk[2], chunk->start[3] / n->chunk[3]);
}

/* Chunk files of one node differ a little in size: a quarter more than
 * asked for spares a fresh allocation (and its page faults) for most of
 * the next ones. */
static bool grow(tsr_cache_t *c, unsigned char **p, size_t *cap, size_t need) {
  if (*cap >= need)
    return true;
  size_t want = need + need / 4;
  unsigned char *q = tsr__malloc(c->ctx, want);
  if (q == NULL)
    return false;
  tsr__free(c->ctx, *p);
  tsr__advise_huge(q, want);
  *p = q;
  *cap = want;
  return true;
}

/* Byte shuffle: byte b of element i of `in` (n elements of `es` bytes)
 * goes to out[b * total + i], so that one plane's bytes take their own
 * stretch of every byte plane of a `total`-element array.  Floats take an
 * SSE2 path, 16 elements at a time (a byte transpose by two rounds of
 * even/odd byte splits); the scalar loops do the rest and other sizes. */
static void shuffle(unsigned char *restrict out, const unsigned char *restrict in, size_t n,
                    size_t total, size_t es) {
  size_t i = 0;
  if (es == 4) {
#if defined(__SSE2__)
    const __m128i lo = _mm_set1_epi16(0x00ff);
    for (; i + 16 <= n; i += 16) {
      __m128i r0 = _mm_loadu_si128((const __m128i *)(in + 4 * i));
      __m128i r1 = _mm_loadu_si128((const __m128i *)(in + 4 * i + 16));
      __m128i r2 = _mm_loadu_si128((const __m128i *)(in + 4 * i + 32));
      __m128i r3 = _mm_loadu_si128((const __m128i *)(in + 4 * i + 48));
      /* Bytes 0 and 2 of elements 0..7 (e01) and 8..15 (e23); 1 and 3 in o01, o23. */
      __m128i e01 = _mm_packus_epi16(_mm_and_si128(r0, lo), _mm_and_si128(r1, lo));
      __m128i e23 = _mm_packus_epi16(_mm_and_si128(r2, lo), _mm_and_si128(r3, lo));
      __m128i o01 = _mm_packus_epi16(_mm_srli_epi16(r0, 8), _mm_srli_epi16(r1, 8));
      __m128i o23 = _mm_packus_epi16(_mm_srli_epi16(r2, 8), _mm_srli_epi16(r3, 8));
      _mm_storeu_si128((__m128i *)(out + i),
                       _mm_packus_epi16(_mm_and_si128(e01, lo), _mm_and_si128(e23, lo)));
      _mm_storeu_si128((__m128i *)(out + 2 * total + i),
                       _mm_packus_epi16(_mm_srli_epi16(e01, 8), _mm_srli_epi16(e23, 8)));
      _mm_storeu_si128((__m128i *)(out + total + i),
                       _mm_packus_epi16(_mm_and_si128(o01, lo), _mm_and_si128(o23, lo)));
      _mm_storeu_si128((__m128i *)(out + 3 * total + i),
                       _mm_packus_epi16(_mm_srli_epi16(o01, 8), _mm_srli_epi16(o23, 8)));
    }
#endif
    for (; i < n; i++) {
      out[i] = in[4 * i];
      out[total + i] = in[4 * i + 1];
      out[2 * total + i] = in[4 * i + 2];
      out[3 * total + i] = in[4 * i + 3];
    }
    return;
  }
  for (; i < n; i++)
    for (size_t b = 0; b < es; b++)
      out[b * total + i] = in[es * i + b];
}

/* The inverse of shuffle, for n elements starting at `in` in each byte
 * plane (planes `total` bytes apart).  SSE2: interleave bytes of planes 0|1
 * and 2|3, then 16-bit pairs of those. */
static void unshuffle(unsigned char *restrict out, const unsigned char *restrict in, size_t n,
                      size_t total, size_t es) {
  size_t i = 0;
  if (es == 4) {
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
      __m128i p0 = _mm_loadu_si128((const __m128i *)(in + i));
      __m128i p1 = _mm_loadu_si128((const __m128i *)(in + total + i));
      __m128i p2 = _mm_loadu_si128((const __m128i *)(in + 2 * total + i));
      __m128i p3 = _mm_loadu_si128((const __m128i *)(in + 3 * total + i));
      __m128i ab_lo = _mm_unpacklo_epi8(p0, p1), ab_hi = _mm_unpackhi_epi8(p0, p1);
      __m128i cd_lo = _mm_unpacklo_epi8(p2, p3), cd_hi = _mm_unpackhi_epi8(p2, p3);
      _mm_storeu_si128((__m128i *)(out + 4 * i), _mm_unpacklo_epi16(ab_lo, cd_lo));
      _mm_storeu_si128((__m128i *)(out + 4 * i + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
      _mm_storeu_si128((__m128i *)(out + 4 * i + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
      _mm_storeu_si128((__m128i *)(out + 4 * i + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
#endif
    for (; i < n; i++) {
      out[4 * i] = in[i];
      out[4 * i + 1] = in[total + i];
      out[4 * i + 2] = in[2 * total + i];
      out[4 * i + 3] = in[3 * total + i];
    }
    return;
  }
#if defined(__SSE2__)
  /* float64: the same interleave one level deeper (a cache hit of float64
   * data spent most of its time here, a byte at a time). */
  if (es == 8) {
    for (; i + 16 <= n; i += 16) {
      __m128i p[8], lo[4], hi[4], q[8];
      for (int b = 0; b < 8; b++)
        p[b] = _mm_loadu_si128((const __m128i *)(in + (size_t)b * total + i));
      for (int b = 0; b < 4; b++) {
        lo[b] = _mm_unpacklo_epi8(p[2 * b], p[2 * b + 1]);
        hi[b] = _mm_unpackhi_epi8(p[2 * b], p[2 * b + 1]);
      }
      /* q[0..3]: bytes 0-3 of elements 0-3, 4-7, 8-11, 12-15; q[4..7]: bytes 4-7. */
      for (int h = 0; h < 2; h++) {
        q[4 * h] = _mm_unpacklo_epi16(lo[2 * h], lo[2 * h + 1]);
        q[4 * h + 1] = _mm_unpackhi_epi16(lo[2 * h], lo[2 * h + 1]);
        q[4 * h + 2] = _mm_unpacklo_epi16(hi[2 * h], hi[2 * h + 1]);
        q[4 * h + 3] = _mm_unpackhi_epi16(hi[2 * h], hi[2 * h + 1]);
      }
      for (int k = 0; k < 4; k++) {
        _mm_storeu_si128((__m128i *)(out + 8 * i + 32 * k), _mm_unpacklo_epi32(q[k], q[4 + k]));
        _mm_storeu_si128((__m128i *)(out + 8 * i + 32 * k + 16), _mm_unpackhi_epi32(q[k], q[4 + k]));
      }
    }
  }
#endif
  for (; i < n; i++)
    for (size_t b = 0; b < es; b++)
      out[es * i + b] = in[b * total + i];
}


/* The current time as a file timestamp, at full resolution. */
static void stamp_now(struct timespec ts[2]) {
  clock_gettime(CLOCK_REALTIME, &ts[0]);
  ts[1] = ts[0];
}

/* mkdir -p; 0 if `path` is a directory afterwards, else an errno value. */
static int make_dirs(const char *path) {
  char buf[PATH_MAX];
  struct stat st;
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf)
    return ENAMETOOLONG;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0')
      continue;
    char keep = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return errno;
    buf[i] = keep;
  }
  if (stat(path, &st) != 0)
    return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

/* ------------------------------------------------------------------ */
/* Foreign entries                                                    */

/* Only a regular file, or a real directory, where the cache puts one is
 * the cache's.  Anything else inside the directory (a symlink, a FIFO, a
 * device, a socket) was put there by someone else and is foreign: never
 * followed, opened, counted or deleted.  Followed, a symlinked subdirectory
 * would let a clear or an eviction delete files elsewhere, a symlinked
 * entry would serve bytes from anywhere or count a huge file against the
 * budget, and opening a FIFO blocks.  So everything below the top
 * directory is reached through a descriptor of its subdirectory opened
 * with O_NOFOLLOW, a file is lstat'ed before it is opened, and the open
 * itself carries O_NOFOLLOW | O_NONBLOCK, so that an entry swapped between
 * the two can neither redirect it nor block it.  The top directory was
 * named by the user, and may be a symlink. */

/* <dir>/<first len bytes of sub> as a directory descriptor, or -1 with
 * errno (ELOOP or ENOTDIR when the entry is foreign). */
static int open_subdir(const tsr_cache_t *c, const char *sub, int len) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%.*s", c->dir, len, sub);
  return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Regular file `name` of directory dfd opened for reading, *st filled; -1
 * for anything else, which is not even opened. */
static int open_regular(int dfd, const char *name, struct stat *st) {
  int fd;
  if (fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st->st_mode))
    return -1;
  fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd >= 0 && (fstat(fd, st) != 0 || !S_ISREG(st->st_mode))) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* Delete `name` of dfd if it still is the regular file (dev, ino) that was
 * seen, never what was put in its place since.  0 or an errno value; a
 * file gone or replaced meanwhile gives ENOENT. */
static int unlink_same(int dfd, const char *name, dev_t dev, ino_t ino) {
  struct stat st;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return errno;
  if (!S_ISREG(st.st_mode) || st.st_dev != dev || st.st_ino != ino)
    return ENOENT;
  return unlinkat(dfd, name, 0) == 0 ? 0 : errno;
}

/* Create `name` in <dir>/tmp for writing, exclusively and without following
 * a link, so that nothing already there is opened; a regular file left by
 * an earlier process with our pid is replaced.  *tfd gets tmp/'s descriptor
 * (the caller closes it, also on failure when it is not -1).  The file's
 * descriptor, or -1 with errno. */
static int create_tmp(const tsr_cache_t *c, const char *name, int *tfd) {
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  struct stat st;
  int fd;
  *tfd = open_subdir(c, "tmp", 3);
  if (*tfd < 0 && errno == ENOENT) {
    /* Cleared by another process meanwhile: make tmp/ again. */
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/tmp", c->dir);
    make_dirs(d);
    *tfd = open_subdir(c, "tmp", 3);
  }
  if (*tfd < 0)
    return -1;
  fd = openat(*tfd, name, flags, 0644);
  if (fd < 0 && errno == EEXIST && fstatat(*tfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISREG(st.st_mode) || unlink_same(*tfd, name, st.st_dev, st.st_ino) != 0) {
      errno = EEXIST;
      return -1;
    }
    fd = openat(*tfd, name, flags, 0644);
  }
  return fd;
}

/* ------------------------------------------------------------------ */
/* Lookups and stores                                                 */

/* Does chunk file `h` (size bytes, read whole) hold chunk `chunk` of node
 * n, whole and in this format?  Else false with the reason in why. */
static bool entry_ok(const tsr_node_t *n, const tsr_region_t *chunk, const unsigned char *h,
                     size_t size, char *why, size_t cap) {
  size_t es = tsr_dtype_size(n->dtype), plane_raw = (size_t)tsr_region_size(chunk) * es;
  uint64_t frames = 0;
  if (memcmp(h, CACHE_MAGIC, 4) != 0) {
    snprintf(why, cap, "not a tessera chunk file (bad magic)");
    return false;
  }
  if (get_le(h + 4, 2) != CACHE_FORMAT || get_le(h + 6, 2) != HDR_BYTES) {
    snprintf(why, cap, "format version %u, expected %u", (unsigned)get_le(h + 4, 2),
             CACHE_FORMAT);
    return false;
  }
  if (XXH3_64bits(h, 120) != get_le(h + 120, 8)) {
    snprintf(why, cap, "header checksum mismatch");
    return false;
  }
  if (h[8] != (unsigned)n->dtype || h[9] != (unsigned)n->n_planes || h[10] != es ||
      h[11] != FILTER_SHUFFLE || memcmp(h + 16, n->key, 16) != 0) {
    snprintf(why, cap, "holds another dtype, plane count or key");
    return false;
  }
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    if ((int64_t)get_le(h + 32 + 8 * a, 8) != chunk->start[a] ||
        (int64_t)get_le(h + 64 + 8 * a, 8) != chunk->stop[a]) {
      snprintf(why, cap, "holds another chunk shape");
      return false;
    }
  if (get_le(h + 96, 8) != plane_raw) {
    snprintf(why, cap, "wrong size: %" PRIu64 " bytes per plane, expected %zu", get_le(h + 96, 8),
             plane_raw);
    return false;
  }
  for (int p = 0; p < n->n_planes; p++)
    frames += get_le(h + 104 + 8 * p, 8);
  if (frames != size - HDR_BYTES) {
    snprintf(why, cap, "%s: %zu bytes, expected %" PRIu64,
             size - HDR_BYTES < frames ? "truncated" : "wrong size", size, frames + HDR_BYTES);
    return false;
  }
  return true;
}

/* Decompress plane p's zstd frame f (len bytes) into w->raw, which it must
 * fill exactly (plane_raw bytes); else false with the reason in why. */
static bool decode_plane(work_t *w, int p, const unsigned char *f, size_t len, size_t plane_raw,
                         char *why, size_t cap) {
  unsigned long long fcs = ZSTD_getFrameContentSize(f, len);
  size_t d;
  if (fcs != plane_raw) {
    snprintf(why, cap, "zstd frame of plane %d: content size %llu, expected %zu", p, fcs,
             plane_raw);
    return false;
  }
  d = ZSTD_decompressDCtx(w->dctx, w->raw, plane_raw, f, len);
  if (ZSTD_isError(d)) {
    snprintf(why, cap, "zstd: %s", ZSTD_getErrorName(d));
    return false;
  }
  if (d != plane_raw) {
    snprintf(why, cap, "wrong size: %zu bytes decompressed, expected %zu", d, plane_raw);
    return false;
  }
  return true;
}

bool tsr__cache_get(tsr_cache_t *c, const tsr_node_t *n, const tsr_region_t *chunk,
                    const tsr_region_t *sub, const tsr_region_t *dreg, void *const *dst,
                    const int64_t *stride) {
  char name[160], path[PATH_MAX], why[160] = "";
  size_t es = tsr_dtype_size(n->dtype), count = (size_t)tsr_region_size(chunk);
  size_t plane_raw = count * es, size = 0;
  uint64_t t0 = now_ns();
  bool hit = false;
  struct stat st;
  int fd = -1, sfd = -1;
  work_t *w = NULL;

  if (c->aside)
    goto out;
  chunk_name(n, chunk, name, sizeof name);
  snprintf(path, sizeof path, "%s/%s", c->dir, name);
  sfd = open_subdir(c, name, 2);
  if (sfd < 0)
    goto out;
  fd = open_regular(sfd, name + 3, &st);
  if (fd < 0)
    goto out; /* not stored, unreadable or foreign: a plain miss */
  size = (size_t)st.st_size;
  if (size < HDR_BYTES) {
    snprintf(why, sizeof why, "truncated: %zu bytes, shorter than the %d-byte header", size,
             HDR_BYTES);
    goto out;
  }
  if (size > HDR_BYTES + (size_t)n->n_planes * ZSTD_compressBound(plane_raw)) {
    /* Larger than any frame of this chunk could be: not worth reading. */
    snprintf(why, sizeof why, "wrong size: %zu bytes, more than this chunk can take", size);
    goto out;
  }
  if ((w = work_get(c)) == NULL || !grow(c, &w->file, &w->file_cap, size) ||
      !grow(c, &w->raw, &w->raw_cap, plane_raw))
    goto out; /* out of memory: compute instead */
  if (!tsr__read_full(fd, w->file, size)) {
    snprintf(why, sizeof why, "read failed: %s", strerror(errno ? errno : EIO));
    goto out;
  }
  if (!entry_ok(n, chunk, w->file, size, why, sizeof why))
    goto out;
  if (w->dctx == NULL) {
    ZSTD_customMem mem = {zalloc, zfree, c->ctx};
    w->dctx = ZSTD_createDCtx_advanced(mem);
    if (w->dctx == NULL)
      goto out;
  }
  /* Only the planes wanted are decompressed (each is its own frame), and
   * straight into the destination, row by row: no scratch copy. */
  {
    int64_t cst[TSR_MAX_DIMS];
    size_t nx = (size_t)(sub->stop[0] - sub->start[0]), off = HDR_BYTES;
    tsr__contiguous_strides(chunk, cst);
    for (int p = 0; p < n->n_planes; p++) {
      size_t frame = (size_t)get_le(w->file + 104 + 8 * p, 8);
      const unsigned char *f = w->file + off;
      off += frame;
      if (dst[p] == NULL)
        continue;
      if (!decode_plane(w, p, f, frame, plane_raw, why, sizeof why))
        goto out;
      for (int64_t q = sub->start[3]; q < sub->stop[3]; q++)
        for (int64_t z = sub->start[2]; z < sub->stop[2]; z++)
          for (int64_t y = sub->start[1]; y < sub->stop[1]; y++) {
            int64_t is = (sub->start[0] - chunk->start[0]) + (y - chunk->start[1]) * cst[1] +
                         (z - chunk->start[2]) * cst[2] + (q - chunk->start[3]) * cst[3];
            int64_t id = (sub->start[0] - dreg->start[0]) + (y - dreg->start[1]) * stride[1] +
                         (z - dreg->start[2]) * stride[2] + (q - dreg->start[3]) * stride[3];
            unshuffle((unsigned char *)dst[p] + (size_t)id * es, w->raw + (size_t)is, nx, count,
                      es);
          }
    }
  }
  /* A hit is a use: move it to the young end of the LRU order. */
  if (!c->read_only) {
    struct timespec ts[2];
    stamp_now(ts);
    futimens(fd, ts);
  }
  hit = true;
out:
  if (fd >= 0)
    close(fd);
  if (why[0]) {
    /* Deleting it makes the recomputed chunk's store replace it. */
    if (!c->read_only)
      unlink_same(sfd, name + 3, st.st_dev, st.st_ino);
    atomic_fetch_add(&c->sh->dropped, 1);
    warn(c, "cache: %s chunk file \"%s\": %s; recomputing it",
         c->read_only ? "ignored" : "dropped", path, why);
  }
  if (sfd >= 0)
    close(sfd);
  work_put(c, w);
  if (hit) {
    atomic_fetch_add(&c->sh->hits, 1);
    atomic_fetch_add(&c->sh->decompress_ns, now_ns() - t0);
  } else {
    atomic_fetch_add(&c->sh->misses, 1);
  }
  return hit;
}

bool tsr__cache_has(tsr_cache_t *c, const tsr_node_t *n, const tsr_region_t *chunk) {
  char name[160], path[PATH_MAX];
  struct stat st;
  if (c->aside)
    return false;
  chunk_name(n, chunk, name, sizeof name);
  /* A probable hit is a regular file in a real subdirectory. */
  snprintf(path, sizeof path, "%s/%.2s", c->dir, name);
  if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return false;
  snprintf(path, sizeof path, "%s/%s", c->dir, name);
  return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A store failed for a reason that will not go away within the run (full
 * disk, read-only or vanished directory): step aside, the run goes on. */
static void step_aside(tsr_cache_t *c, int err, const char *what, const char *path) {
  if (atomic_exchange(&c->sh->stores_off, 1) == 0)
    warn(c, "cache: cannot %s \"%s\": %s; not storing chunks for the rest of the run", what, path,
         strerror(err));
}

static int trim_to(tsr_cache_t *c, uint64_t target);

/* Move tmp/<tname> to <sub>/<file> without replacing anything: a file
 * already there was stored by another process (the contents are equal) or
 * is foreign.  *sfd is the subdirectory's descriptor, reopened when another
 * process removed the emptied subdirectory meanwhile.  0 or an errno value
 * (EEXIST: something is there). */
static int publish(const tsr_cache_t *c, int tfd, const char *tname, int *sfd, const char *name) {
  struct stat st;
  for (int attempt = 0;; attempt++) {
    int e;
    if (renameat2(tfd, tname, *sfd, name + 3, RENAME_NOREPLACE) == 0)
      return 0;
    e = errno;
    if (e == EINVAL) {
      /* No RENAME_NOREPLACE on this filesystem: look first, then rename. */
      if (fstatat(*sfd, name + 3, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return EEXIST;
      e = renameat(tfd, tname, *sfd, name + 3) == 0 ? 0 : errno;
    }
    if (e != ENOENT || attempt > 0)
      return e;
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s/%.2s", c->dir, name);
    make_dirs(d);
    close(*sfd);
    if ((*sfd = open_subdir(c, name, 2)) < 0)
      return errno;
  }
}

void tsr__cache_put(tsr_cache_t *c, const tsr_node_t *n, const tsr_region_t *chunk,
                    void *const *planes) {
  char name[160], path[PATH_MAX], tname[200];
  size_t es = tsr_dtype_size(n->dtype), count = (size_t)tsr_region_size(chunk);
  size_t plane_raw = count * es, raw = plane_raw * (size_t)n->n_planes, z;
  uint64_t t0 = now_ns();
  unsigned char *h;
  struct timespec ts[2];
  struct stat st;
  int fd = -1, sfd = -1, tfd = -1, e;
  work_t *w = NULL;
  static atomic_uint_fast64_t tmp_seq;

  if (c->aside || atomic_load(&c->sh->stores_off))
    return;
  chunk_name(n, chunk, name, sizeof name);
  snprintf(path, sizeof path, "%s/%.2s", c->dir, name);
  sfd = open_subdir(c, name, 2);
  if (sfd < 0 && errno == ENOENT) {
    make_dirs(path);
    sfd = open_subdir(c, name, 2);
  }
  if (sfd < 0) {
    /* A foreign entry in place of the subdirectory: store nothing through it. */
    if (errno != ELOOP && errno != ENOTDIR)
      step_aside(c, errno, "create", path);
    goto out;
  }
  snprintf(path, sizeof path, "%s/%s", c->dir, name);
  /* Stored by another process meanwhile (the contents would be equal), or
   * a foreign entry is in the way. */
  if (fstatat(sfd, name + 3, &st, AT_SYMLINK_NOFOLLOW) == 0)
    goto out;
  if ((w = work_get(c)) == NULL)
    goto out;
  if (w->cctx == NULL) {
    ZSTD_customMem mem = {zalloc, zfree, c->ctx};
    w->cctx = ZSTD_createCCtx_advanced(mem);
    if (w->cctx == NULL)
      goto out;
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, ZLEVEL);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1);
  }
  if (!grow(c, &w->raw, &w->raw_cap, plane_raw) ||
      !grow(c, &w->file, &w->file_cap,
            HDR_BYTES + (size_t)n->n_planes * ZSTD_compressBound(plane_raw)))
    goto out; /* out of memory: the chunk is simply not kept */
  /* One frame per plane, so that a request for one plane (the data without
   * its footprint) decompresses only that one. */
  z = 0;
  for (int p = 0; p < n->n_planes; p++) {
    size_t zp;
    shuffle(w->raw, planes[p], count, count, es);
    zp = ZSTD_compress2(w->cctx, w->file + HDR_BYTES + z, w->file_cap - HDR_BYTES - z, w->raw,
                        plane_raw);
    if (ZSTD_isError(zp)) {
      warn(c, "cache: zstd: %s; chunk not stored", ZSTD_getErrorName(zp));
      goto out;
    }
    put_le(w->file + 104 + 8 * p, zp, 8);
    z += zp;
  }
  h = w->file;
  memset(h, 0, 104);
  memset(h + 104 + 8 * n->n_planes, 0, 120 - 104 - 8 * (size_t)n->n_planes);
  memcpy(h, CACHE_MAGIC, 4);
  put_le(h + 4, CACHE_FORMAT, 2);
  put_le(h + 6, HDR_BYTES, 2);
  h[8] = (unsigned char)n->dtype;
  h[9] = (unsigned char)n->n_planes;
  h[10] = (unsigned char)es;
  h[11] = FILTER_SHUFFLE;
  memcpy(h + 16, n->key, 16);
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    put_le(h + 32 + 8 * a, (uint64_t)chunk->start[a], 8);
    put_le(h + 64 + 8 * a, (uint64_t)chunk->stop[a], 8);
  }
  put_le(h + 96, plane_raw, 8);
  put_le(h + 120, XXH3_64bits(h, 120), 8);

  /* Publish atomically: a reader sees no file or a whole one.  No fsync:
   * after a power loss a chunk may be short or empty, which its header and
   * checksum reveal, and it is then recomputed; the cache holds nothing
   * that cannot be recomputed, and an fsync per chunk would cost more than
   * computing many of them. */
  snprintf(tname, sizeof tname, "%.*s.%ld-%" PRIuFAST64 ".tmp", (int)(strlen(name) - 7), name + 3,
           (long)getpid(), atomic_fetch_add(&tmp_seq, 1));
  fd = create_tmp(c, tname, &tfd);
  if (fd < 0) {
    snprintf(path, sizeof path, "%s/tmp/%s", c->dir, tname);
    step_aside(c, errno, "create", path);
    goto out;
  }
  e = tsr__write_full(fd, w->file, HDR_BYTES + z) ? 0 : errno;
  if (e == 0) {
    stamp_now(ts);
    futimens(fd, ts);
  }
  if (close(fd) != 0 && e == 0)
    e = errno;
  fd = -1;
  if (e != 0) {
    unlinkat(tfd, tname, 0);
    snprintf(path, sizeof path, "%s/tmp/%s", c->dir, tname);
    step_aside(c, e, "write", path);
    goto out;
  }
  if ((e = publish(c, tfd, tname, &sfd, name)) != 0) {
    unlinkat(tfd, tname, 0);
    if (e != EEXIST)
      step_aside(c, e, "rename into", path);
    goto out;
  }
  atomic_fetch_add(&c->sh->stores, 1);
  atomic_fetch_add(&c->sh->raw_stored, raw);
  atomic_fetch_add(&c->sh->zip_stored, HDR_BYTES + z);
  atomic_fetch_add(&c->sh->compress_ns, now_ns() - t0);
  if (atomic_fetch_add(&c->sh->disk_bytes, (int64_t)(HDR_BYTES + z)) + (int64_t)(HDR_BYTES + z) >
          (int64_t)c->max_bytes &&
      !atomic_flag_test_and_set(&c->sh->trimming)) {
    trim_to(c, c->max_bytes - c->max_bytes / 8);
    atomic_flag_clear(&c->sh->trimming);
  }
out:
  work_put(c, w);
  if (tfd >= 0)
    close(tfd);
  if (sfd >= 0)
    close(sfd);
}

/* ------------------------------------------------------------------ */
/* Scans, trimming, stats                                             */

static bool is_hex2(const char *s) {
  return strlen(s) == 2 && strchr("0123456789abcdef", s[0]) && strchr("0123456789abcdef", s[1]);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Every chunk file, into *out (freed by the caller), and the number of
 * foreign entries met (see "Foreign entries") into *n_foreign when it is
 * not NULL; with `headers` the raw size is read from each header.  Also
 * removes leftover temporary files of dead processes, unless read-only.
 * Returns 0 or TSR_ECACHE / TSR_ENOMEM with a message. */
static int scan(tsr_cache_t *c, bool headers, entry_t **out, size_t *n_out,
                uint64_t *n_foreign) {
  entry_t *v = NULL;
  size_t n = 0, cap = 0;
  uint64_t foreign = 0;
  DIR *top = NULL, *sub = NULL;
  struct dirent *de, *fe;
  int rc = 0, sfd;
  time_t now = time(NULL);

  *out = NULL;
  *n_out = 0;
  top = opendir(c->dir);
  if (top == NULL) {
    rc = tsr__err(c->ctx, TSR_ECACHE, "cache: cannot read \"%s\": %s", c->dir, strerror(errno));
    goto out;
  }
  while ((de = readdir(top)) != NULL) {
    struct stat st;
    bool tmpdir = strcmp(de->d_name, "tmp") == 0;
    if (strcmp(de->d_name, "stats") == 0) {
      foreign += fstatat(dirfd(top), "stats", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 !S_ISREG(st.st_mode);
      continue;
    }
    if (!tmpdir && !is_hex2(de->d_name))
      continue;
    sfd = openat(dirfd(top), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sfd < 0) {
      foreign += errno == ELOOP || errno == ENOTDIR;
      continue;
    }
    if ((sub = fdopendir(sfd)) == NULL) {
      close(sfd);
      continue;
    }
    while ((fe = readdir(sub)) != NULL) {
      if (strcmp(fe->d_name, ".") == 0 || strcmp(fe->d_name, "..") == 0)
        continue;
      if (fstatat(sfd, fe->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        continue;
      if (!S_ISREG(st.st_mode)) {
        foreign++;
        continue;
      }
      if (tmpdir) {
        /* <name>.<pid>-<seq>.tmp: remove it if its writer is gone. */
        const char *end = strrchr(fe->d_name, '.'), *dot = end;
        long pid = 0;
        while (dot && dot > fe->d_name && dot[-1] != '.')
          dot--;
        if (end && dot > fe->d_name)
          pid = strtol(dot, NULL, 10);
        /* A writer takes milliseconds; the age also protects a writer on
         * another host sharing the directory, whose pid means nothing here. */
        if (!c->read_only &&
            (now - st.st_mtime > TMP_STALE_S ||
             (now - st.st_mtime > 60 && pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)))
          unlink_same(sfd, fe->d_name, st.st_dev, st.st_ino);
        continue;
      }
      if (fe->d_name[0] == '.' || !ends_with(fe->d_name, ".tsc") || strlen(fe->d_name) > 130) {
        foreign++;
        continue;
      }
      if (n == cap) {
        size_t nc = cap ? 2 * cap : 256;
        entry_t *q = tsr__realloc(c->ctx, v, nc * sizeof *v);
        if (q == NULL) {
          rc = tsr__err(c->ctx, TSR_ENOMEM, "cache: out of memory scanning \"%s\"", c->dir);
          goto out;
        }
        v = q;
        cap = nc;
      }
      entry_t *e = &v[n++];
      e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
      e->size = (uint64_t)st.st_size;
      e->dev = st.st_dev;
      e->ino = st.st_ino;
      e->raw = 0;
      snprintf(e->name, sizeof e->name, "%s/%s", de->d_name, fe->d_name);
      if (headers) {
        unsigned char h[HDR_BYTES];
        int fd = open_regular(sfd, fe->d_name, &st);
        if (fd >= 0) {
          if (tsr__read_full(fd, h, sizeof h) && memcmp(h, CACHE_MAGIC, 4) == 0)
            e->raw = get_le(h + 96, 8) * h[9];
          close(fd);
        }
      }
    }
    closedir(sub);
    sub = NULL;
  }
out:
  if (sub)
    closedir(sub);
  if (top)
    closedir(top);
  if (rc != 0) {
    tsr__free(c->ctx, v);
    return rc;
  }
  *out = v;
  *n_out = n;
  if (n_foreign)
    *n_foreign = foreign;
  return 0;
}

/* Delete scanned entry e.  *sfd and sub[0..1] keep the descriptor and name
 * of the last subdirectory opened (-1 at first; the caller closes it).  0
 * or an errno value; ENOENT if it is gone or no longer the file scanned. */
static int remove_entry(const tsr_cache_t *c, const entry_t *e, int *sfd, char sub[2]) {
  if (*sfd < 0 || memcmp(sub, e->name, 2) != 0) {
    if (*sfd >= 0)
      close(*sfd);
    memcpy(sub, e->name, 2);
    if ((*sfd = open_subdir(c, e->name, 2)) < 0)
      return errno == ELOOP || errno == ENOTDIR ? ENOENT : errno;
  }
  return unlink_same(*sfd, e->name + 3, e->dev, e->ino);
}

static int by_age(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  if (x->mtime_ns != y->mtime_ns)
    return x->mtime_ns < y->mtime_ns ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Evict the least recently used chunks until at most `target` bytes stay. */
static int trim_to(tsr_cache_t *c, uint64_t target) {
  entry_t *v = NULL;
  size_t n = 0;
  uint64_t total = 0;
  char sub[2];
  int rc, sfd = -1;

  if (c->aside || c->read_only)
    return 0;
  if ((rc = scan(c, false, &v, &n, NULL)) != 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    total += v[i].size;
  if (total > target) {
    qsort(v, n, sizeof *v, by_age);
    for (size_t i = 0; i < n && total > target; i++) {
      int e = remove_entry(c, &v[i], &sfd, sub);
      if (e == 0 || e == ENOENT) {
        total -= v[i].size;
        atomic_fetch_add(&c->sh->evictions, e == 0);
      }
    }
  }
  if (sfd >= 0)
    close(sfd);
  atomic_store(&c->sh->disk_bytes, (int64_t)total);
  tsr__free(c->ctx, v);
  return 0;
}

static int refuse_read_only(tsr_cache_t *c, const char *what) {
  return tsr__err(c->ctx, TSR_EINVAL,
                  "cache %s: \"%s\" was opened read-only (tsr_cache_open_read_only)", what, c->dir);
}

int tsr_cache_trim(tsr_cache_t *c) {
  tsr__api_check(c != NULL, "tsr_cache_trim: NULL cache");
  if (c->read_only)
    return refuse_read_only(c, "trim");
  return trim_to(c, c->max_bytes);
}

int tsr_cache_clear(tsr_cache_t *c) {
  entry_t *v = NULL;
  size_t n = 0;
  uint64_t removed = 0, failed = 0;
  char path[PATH_MAX], first[PATH_MAX + 128] = "", sub[2];
  struct stat st;
  int rc, e, sfd = -1;

  tsr__api_check(c != NULL, "tsr_cache_clear: NULL cache");
  if (c->read_only)
    return refuse_read_only(c, "clear");
  if (c->aside)
    return 0;
  if ((rc = scan(c, false, &v, &n, NULL)) != 0)
    return rc;
  for (size_t i = 0; i <= n; i++) {
    if (i == n) {
      /* The stats file, if it is one. */
      snprintf(path, sizeof path, "%s/stats", c->dir);
      if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        break;
      e = unlink_same(AT_FDCWD, path, st.st_dev, st.st_ino);
    } else {
      snprintf(path, sizeof path, "%s/%s", c->dir, v[i].name);
      e = remove_entry(c, &v[i], &sfd, sub);
    }
    if (e == 0)
      removed++;
    else if (e != ENOENT && failed++ == 0)
      snprintf(first, sizeof first, "\"%s\": %s", path, strerror(e));
    /* A subdirectory goes when it is empty: after its last entry (scan
     * lists them by subdirectory).  rmdir removes no symlink. */
    if (i < n && (i + 1 == n || memcmp(v[i + 1].name, v[i].name, 2) != 0)) {
      path[strlen(c->dir) + 3] = '\0';
      rmdir(path);
    }
  }
  if (sfd >= 0)
    close(sfd);
  atomic_store(&c->sh->disk_bytes, 0);
  tsr__free(c->ctx, v);
  if (failed)
    return tsr__err(c->ctx, TSR_ECACHE,
                    "cache clear: removed %" PRIu64 " file%s; could not remove %" PRIu64 ": %s",
                    removed, removed == 1 ? "" : "s", failed, first);
  return 0;
}

typedef struct {
  uint64_t tot[5];               /* hits, misses, stores, evictions, dropped */
  int n_runs;
  int64_t run_end[MAX_RUNS];
  uint64_t run[MAX_RUNS][3];     /* hits, misses, stores */
} stats_file_t;

static const char *const stat_names[5] = {"hits", "misses", "stores", "evictions", "dropped"};

/* Read <dir>/stats; a missing, unreadable or foreign file is all zeros. */
static void stats_read(tsr_cache_t *c, stats_file_t *s) {
  char path[PATH_MAX], line[256];
  struct stat sb;
  FILE *f;
  int fd;
  memset(s, 0, sizeof *s);
  snprintf(path, sizeof path, "%s/stats", c->dir);
  if ((fd = open_regular(AT_FDCWD, path, &sb)) < 0)
    return;
  if ((f = fdopen(fd, "r")) == NULL) {
    close(fd);
    return;
  }
  if (fgets(line, sizeof line, f) == NULL || strncmp(line, STATS_MAGIC, strlen(STATS_MAGIC)) != 0) {
    fclose(f);
    return;
  }
  while (fgets(line, sizeof line, f)) {
    char word[32];
    unsigned long long v, h, m, st;
    long long t;
    if (sscanf(line, "run %lld %llu %llu %llu", &t, &h, &m, &st) == 4) {
      if (s->n_runs < MAX_RUNS) {
        s->run_end[s->n_runs] = t;
        s->run[s->n_runs][0] = h;
        s->run[s->n_runs][1] = m;
        s->run[s->n_runs][2] = st;
        s->n_runs++;
      }
    } else if (sscanf(line, "%31s %llu", word, &v) == 2) {
      for (int i = 0; i < 5; i++)
        if (strcmp(word, stat_names[i]) == 0)
          s->tot[i] = v;
    }
  }
  fclose(f);
}

/* Add the counts since the last flush to <dir>/stats as one run.  Two
 * processes flushing at the same instant may lose one's counts (read, add,
 * rename is not atomic as a whole); the stats are advisory, and a lock
 * would make every run pay for it. */
static void stats_flush(tsr_cache_t *c) {
  uint64_t now[5] = {atomic_load(&c->sh->hits), atomic_load(&c->sh->misses),
                     atomic_load(&c->sh->stores), atomic_load(&c->sh->evictions),
                     atomic_load(&c->sh->dropped)};
  uint64_t d[5];
  bool any = false;
  stats_file_t s;
  char path[PATH_MAX], tname[64];
  struct stat st;
  FILE *f;
  int fd, tfd;

  for (int i = 0; i < 5; i++) {
    d[i] = now[i] - c->flushed[i];
    any |= d[i] != 0;
  }
  if (c->aside || c->read_only || !any)
    return;
  snprintf(path, sizeof path, "%s/stats", c->dir);
  /* A foreign entry in its place is neither read nor replaced. */
  if (lstat(path, &st) == 0 && !S_ISREG(st.st_mode))
    return;
  stats_read(c, &s);
  snprintf(tname, sizeof tname, "stats.%ld.tmp", (long)getpid());
  fd = create_tmp(c, tname, &tfd);
  if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
    if (fd >= 0) {
      close(fd);
      unlinkat(tfd, tname, 0);
    }
    if (tfd >= 0)
      close(tfd);
    return;
  }
  fprintf(f, "%s\n", STATS_MAGIC);
  for (int i = 0; i < 5; i++)
    fprintf(f, "%s %" PRIu64 "\n", stat_names[i], s.tot[i] + d[i]);
  fprintf(f, "run %lld %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", (long long)time(NULL), d[0], d[1],
          d[2]);
  for (int i = 0; i < s.n_runs && i < MAX_RUNS - 1; i++)
    fprintf(f, "run %lld %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", (long long)s.run_end[i],
            s.run[i][0], s.run[i][1], s.run[i][2]);
  if (fclose(f) != 0 || renameat(tfd, tname, AT_FDCWD, path) != 0) {
    unlinkat(tfd, tname, 0);
    close(tfd);
    return;
  }
  close(tfd);
  memcpy(c->flushed, now, sizeof now);
}

void tsr__cache_run_end(tsr_cache_t *c, tsr_ctx_t *ctx) {
  uint64_t w = atomic_load(&c->sh->warnings);
  pthread_mutex_lock(&c->flush_lock);
  stats_flush(c);
  if (w != c->run_warnings) {
    c->run_warnings = w;
    if (ctx)
      tsr__err(ctx, 0, "%s", tsr_cache_warning(c));
  }
  pthread_mutex_unlock(&c->flush_lock);
  /* A full disk may have been freed by the next run. */
  atomic_store(&c->sh->stores_off, 0);
}

int tsr_cache_stats(tsr_cache_t *c, tsr_cache_stats_t *out) {
  entry_t *v = NULL;
  size_t n = 0;
  stats_file_t s;
  int rc;

  tsr__api_check(c != NULL && out != NULL, "tsr_cache_stats: NULL argument");
  memset(out, 0, sizeof *out);
  out->max_bytes = c->max_bytes;
  out->session_hits = atomic_load(&c->sh->hits);
  out->session_misses = atomic_load(&c->sh->misses);
  out->session_stores = atomic_load(&c->sh->stores);
  out->session_dropped = atomic_load(&c->sh->dropped);
  out->session_raw_stored = atomic_load(&c->sh->raw_stored);
  out->session_zip_stored = atomic_load(&c->sh->zip_stored);
  out->session_compress_s = (double)atomic_load(&c->sh->compress_ns) * 1e-9;
  out->session_decompress_s = (double)atomic_load(&c->sh->decompress_ns) * 1e-9;
  out->warnings = atomic_load(&c->sh->warnings);
  if (c->aside)
    return 0;
  if ((rc = scan(c, true, &v, &n, &out->foreign)) != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    out->entries++;
    out->bytes += v[i].size;
    out->raw_bytes += v[i].raw;
  }
  out->ratio = out->bytes ? (double)out->raw_bytes / (double)out->bytes : 0.0;
  tsr__free(c->ctx, v);
  stats_read(c, &s);
  out->hits = s.tot[0];
  out->misses = s.tot[1];
  out->stores = s.tot[2];
  out->evictions = s.tot[3];
  out->dropped = s.tot[4];
  out->n_runs = s.n_runs;
  for (int i = 0; i < s.n_runs; i++) {
    out->runs[i].end_unix_s = s.run_end[i];
    out->runs[i].hits = s.run[i][0];
    out->runs[i].misses = s.run[i][1];
    out->runs[i].stores = s.run[i][2];
  }
  return 0;
}

const char *tsr_cache_warning(const tsr_cache_t *c) {
  tsr_cache_t *m = (tsr_cache_t *)c; /* the copy is a cache of shared state */
  for (int i = 0; i < 1000000; i++)
    if (!atomic_flag_test_and_set(&m->sh->msg_lock)) {
      memcpy(m->warning, m->sh->warning, sizeof m->warning);
      atomic_flag_clear(&m->sh->msg_lock);
      break;
    }
  m->warning[sizeof m->warning - 1] = '\0';
  return m->warning;
}

/* ------------------------------------------------------------------ */
/* Open and close                                                     */

static int open_cache(tsr_ctx_t *ctx, const char *dir, uint64_t max_bytes, bool read_only,
                      tsr_cache_t **out) {
  tsr_cache_t *c = NULL;
  char tmp[PATH_MAX];
  struct stat st;
  int rc = TSR_ENOMEM, e;

  *out = NULL;
  if (max_bytes < TSR_CACHE_MIN_BYTES || max_bytes > TSR_CACHE_MAX_BYTES)
    return tsr__err(ctx, TSR_EINVAL, "cache: max_bytes=%" PRIu64 " out of range [1 MiB, 2^62]",
                    max_bytes);
  if (dir == NULL || dir[0] == '\0')
    return tsr__err(ctx, TSR_EINVAL, "cache: the directory name is empty");
  if (strlen(dir) > PATH_MAX - 256)
    return tsr__err(ctx, TSR_EINVAL, "cache: directory name of %zu bytes is too long (at most %d)",
                    strlen(dir), PATH_MAX - 256);
  c = tsr__calloc(ctx, 1, sizeof *c);
  if (c == NULL)
    goto out;
  c->ctx = ctx;
  ctx->n_caches++; /* tsr_cache_close undoes it, also on the failure paths below */
  c->max_bytes = max_bytes;
  pthread_mutex_init(&c->flush_lock, NULL);
  for (int i = 0; i < WORK_SLOTS; i++)
    atomic_flag_clear(&c->work[i].busy);
  if ((c->dir = tsr__strdup(ctx, dir)) == NULL)
    goto out;
  /* Strip trailing slashes, so that paths built from it stay canonical. */
  for (size_t k = strlen(c->dir); k > 1 && c->dir[k - 1] == '/'; k--)
    c->dir[k - 1] = '\0';
  c->sh = mmap(NULL, sizeof *c->sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (c->sh == MAP_FAILED) {
    c->sh = NULL;
    goto out;
  }
  memset(c->sh, 0, sizeof *c->sh);
  atomic_flag_clear(&c->sh->trimming);
  atomic_flag_clear(&c->sh->msg_lock);
  snprintf(tmp, sizeof tmp, "%s/tmp", c->dir);
  if (read_only) {
    /* Inspecting creates, stores, trims and records nothing. */
    e = stat(c->dir, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    if (e != 0) {
      rc = tsr__err(ctx, TSR_ECACHE, "cache: cannot read \"%s\": %s", c->dir, strerror(e));
      goto out;
    }
    c->read_only = true;
    atomic_store(&c->sh->stores_off, 1);
  } else if ((e = make_dirs(c->dir)) != 0) {
    warn(c, "cache: cannot use \"%s\" as a cache directory: %s; running without a cache",
         c->dir, strerror(e));
    c->aside = true;
  } else if (mkdir(tmp, 0777) != 0 && errno != EEXIST) {
    warn(c, "cache: cannot write in \"%s\": %s; chunks will not be stored", c->dir,
         strerror(errno));
    atomic_store(&c->sh->stores_off, 1);
  } else if (lstat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) {
    warn(c, "cache: \"%s\" is not a directory (a symlink or another foreign entry); chunks will "
         "not be stored", tmp);
    atomic_store(&c->sh->stores_off, 1);
  } else if (access(tmp, W_OK) != 0) {
    /* Readable but not writable (a shared read-only cache): lookups still hit. */
    warn(c, "cache: cannot write in \"%s\": %s; chunks will not be stored", c->dir,
         strerror(errno));
    atomic_store(&c->sh->stores_off, 1);
  } else {
    trim_to(c, c->max_bytes); /* exact total, and within a budget that may have shrunk */
  }
  c->run_warnings = 0;
  *out = c;
  return 0;
out:
  tsr_cache_close(c);
  if (rc == TSR_ENOMEM)
    tsr__err(ctx, rc, "cache: out of memory opening \"%s\"", dir);
  return rc;
}

int tsr_cache_open(tsr_ctx_t *ctx, const char *dir, uint64_t max_bytes, tsr_cache_t **out) {
  tsr__api_check(ctx != NULL && out != NULL, "tsr_cache_open: NULL argument");
  return open_cache(ctx, dir, max_bytes, false, out);
}

int tsr_cache_open_read_only(tsr_ctx_t *ctx, const char *dir, tsr_cache_t **out) {
  tsr__api_check(ctx != NULL && out != NULL, "tsr_cache_open_read_only: NULL argument");
  return open_cache(ctx, dir, TSR_CACHE_MAX_BYTES, true, out);
}

void tsr_cache_close(tsr_cache_t *c) {
  if (c == NULL)
    return;
  if (c->sh)
    stats_flush(c);
  for (int i = 0; i < WORK_SLOTS; i++)
    work_release_buffers(c, &c->work[i]);
  pthread_mutex_destroy(&c->flush_lock);
  if (c->sh)
    munmap(c->sh, sizeof *c->sh);
  c->ctx->n_caches--;
  tsr__free(c->ctx, c->dir);
  tsr__free(c->ctx, c);
}
