/* fuzz_cache.c -- libFuzzer target: the chunk cache's reader on any file
 * where a chunk should be (a truncated, corrupt or foreign file must be a
 * miss, dropped, never a crash or a wrong value), and on foreign entries
 * (symlinks, a FIFO, a directory) where a chunk or its subdirectory should
 * be: a miss, never opened or deleted. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tessera/tessera.h>
#include <unistd.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The file a chunk of `n` lives in, found by storing one (first call), and
 * its valid contents: the fuzz input is XORed onto them (and sets the
 * length), so mutations explore damaged versions of a real chunk file. */
static char chunk_path[1024], sub_path[1024], dir[256];
static unsigned char valid[1 << 16];
static size_t valid_len;

static void find_chunk_path(tsr_ctx_t *ctx, tsr_graph_t *g, tsr_node_t *n) {
  char cmd[600];
  tsr_cache_t *c;
  float out[64];
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  if (tsr_cache_open(ctx, dir, 1 << 26, &c) != 0)
    abort();
  ro.cache = c;
  tsr_compute(g, n, NULL, out, sizeof out, &ro);
  tsr_cache_close(c);
  snprintf(cmd, sizeof cmd, "find %s -name '*.tsc' | head -1", dir);
  FILE *p = popen(cmd, "r");
  if (p == NULL || fgets(chunk_path, sizeof chunk_path, p) == NULL)
    abort();
  pclose(p);
  chunk_path[strcspn(chunk_path, "\n")] = '\0';
  snprintf(sub_path, sizeof sub_path, "%.*s", (int)(strrchr(chunk_path, '/') - chunk_path),
           chunk_path);
  {
    FILE *f = fopen(chunk_path, "rb");
    if (f == NULL)
      abort();
    valid_len = fread(valid, 1, sizeof valid, f);
    fclose(f);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static float img[64];
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_cache_t *c;
  float out[64];
  int64_t shape[2] = {8, 8};
  if (dir[0] == '\0') {
    snprintf(dir, sizeof dir, "/dev/shm/tsr-fuzz-cache-%ld", (long)getpid());
    for (int k = 0; k < 64; k++)
      img[k] = (float)k;
  }
  if (tsr_ctx_new(&ctx, NULL) != 0 || tsr_graph_new(ctx, &g) != 0)
    abort();
  tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, img, NULL);
  tsr_node_t *n = tsr_binary_scalar(g, TSR_ADD, src, 1.0);
  if (chunk_path[0] == '\0')
    find_chunk_path(ctx, g, n);
  /* A first byte 0xf0 .. 0xf3 (which would only spoil the magic) puts a
   * foreign entry in place instead: a symlink to a valid chunk file
   * elsewhere, a FIFO (an open would block until -timeout), a directory, or
   * a symlink in place of the subdirectory, to a copy of it elsewhere. */
  int kind = size > 0 && data[0] >= 0xf0 && data[0] <= 0xf3 ? data[0] - 0xf0 : -1;
  char away[300], away_file[1400];
  struct stat st;
  snprintf(away, sizeof away, "%s.away", dir);
  snprintf(away_file, sizeof away_file, "%s/%s", away, strrchr(chunk_path, '/') + 1);
  /* Undo what the previous input left. */
  if (lstat(sub_path, &st) == 0 && !S_ISDIR(st.st_mode))
    unlink(sub_path);
  mkdir(sub_path, 0755);
  if (rmdir(chunk_path) != 0 && errno == ENOTDIR)
    unlink(chunk_path);
  mkdir(away, 0755);
  {
    FILE *f = fopen(kind == 0 || kind == 3 ? away_file : kind < 0 ? chunk_path : "/dev/null",
                    "wb");
    if (f) {
      if (kind < 0)
        for (size_t k = 0; k < size; k++)
          fputc((k < valid_len ? valid[k] : 0) ^ data[k], f);
      else
        fwrite(valid, 1, valid_len, f);
      fclose(f);
    }
  }
  if ((kind == 0 && symlink(away_file, chunk_path) != 0) ||
      (kind == 1 && mkfifo(chunk_path, 0644) != 0) || (kind == 2 && mkdir(chunk_path, 0755) != 0) ||
      (kind == 3 && (rmdir(sub_path) != 0 || symlink(away, sub_path) != 0)))
    abort();
  if (tsr_cache_open(ctx, dir, 1 << 26, &c) == 0) {
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ro.cache = c;
    /* Whatever the file held, the values must be right. */
    if (tsr_compute(g, n, NULL, out, sizeof out, &ro) == 0)
      for (int k = 0; k < 64; k++)
        if (out[k] != (float)k + 1)
          abort();
    /* A foreign entry is still there, and so is what a symlink leads to. */
    if (kind >= 0) {
      tsr_cache_clear(c);
      const char *at = kind == 3 ? sub_path : chunk_path;
      mode_t want[4] = {S_IFLNK, S_IFIFO, S_IFDIR, S_IFLNK};
      if (lstat(at, &st) != 0 || (st.st_mode & S_IFMT) != want[kind])
        abort();
      if ((kind == 0 || kind == 3) && (stat(away_file, &st) != 0 || (size_t)st.st_size != valid_len))
        abort();
    }
    tsr_cache_close(c);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  return 0;
}
