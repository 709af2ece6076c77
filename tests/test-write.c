/* test-write.c -- writing FITS files: round trips, bands, planes, cancel and errors
 * that leave nothing, outputs that are special files or links, temporaries,
 * free space (io/fits_write.c, io/output.c).
 *
 * Fixtures are written with cfitsio into the harness's scratch directory
 * (io_fixtures.h); every error test checks the exact words of the message.
 */
#include "io_fixtures.h"

/* Read a whole float image (and its header keywords on request) with cfitsio. */
static float *read_back(const char *path, int *naxis, long naxes[4], int *bitpix) {
  fitsfile *f = NULL;
  int status = 0, anynul = 0;
  long n = 1;
  float nul = NAN;
  naxes[0] = naxes[1] = naxes[2] = naxes[3] = 1;
  CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
  CHECK_FITS(fits_get_img_param(f, 4, bitpix, naxis, naxes, &status));
  for (int a = 0; a < *naxis; a++)
    n *= naxes[a];
  float *d = malloc((size_t)n * sizeof *d);
  CHECK_FITS(fits_read_img(f, TFLOAT, 1, n, &nul, d, &anynul, &status));
  CHECK_FITS(fits_close_file(f, &status));
  return d;
}

static void read_key(const char *path, const char *key, char *value) {
  fitsfile *f = NULL;
  int status = 0;
  CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
  CHECK_FITS(fits_read_keyword(f, key, value, NULL, &status));
  CHECK_FITS(fits_close_file(f, &status));
}

/* ------------------------------------------------------------------ */
/* Writing                                                            */

static tsr_wcs_t *tan_wcs(tsr_ctx_t *ctx, int nx, int ny) {
  char text[1024];
  tsr_wcs_t *w = NULL;
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRPIX1 = 15.25 / Pixel coordinate of reference point\nCRPIX2 = 10.5\n"
           "CRVAL1 = 10.6847\nCRVAL2 = 41.26875\nCDELT1 = -0.001\nCDELT2 = 0.001\n"
           "BSCALE = 3\nHISTORY kept as it was\n",
           nx, ny);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "tan", 1, &w));
  return w;
}

TEST(write_round_trip) {
  enum { NX = 30, NY = 20 };
  long naxes[2] = {NX, NY};
  float *d = ramp(2, naxes);
  double dd[NX * NY];
  const char *out = th_path("out.fits"), *out64 = th_path("out64.fits"),
             *sub = th_path("sub.fits");
  char v[FLEN_VALUE];
  int naxis, bitpix;
  long got[4];
  int64_t shape[2] = {NX, NY};
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_wcs_t *w = tan_wcs(ctx, NX, NY);
  d[7] = NAN;
  for (int i = 0; i < NX * NY; i++)
    dd[i] = d[i] + 0.25;
  tsr_node_t *n = tsr_source_buffer(g, TSR_F32, 2, shape, d, w);
  tsr_node_t *n64 = tsr_source_buffer(g, TSR_F64, 2, shape, dd, w);
  ASSERT(n && n64);
  write_text(out, "an older file", 13); /* replaced on success */
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  float *back = read_back(out, &naxis, got, &bitpix);
  ASSERT_INT_EQ(bitpix, -32);
  ASSERT_INT_EQ(naxis, 2);
  ASSERT_INT_EQ(got[0], NX);
  ASSERT_INT_EQ(got[1], NY);
  for (int i = 0; i < NX * NY; i++)
    if (i == 7)
      ASSERT(isnan(back[i]));
    else
      ASSERT_INT_EQ(back[i], d[i]);
  free(back);
  read_key(out, "CRPIX1", v);
  ASSERT_STR_CONTAINS(v, "15.25");
  read_key(out, "ORIGIN", v);
  ASSERT_STR_CONTAINS(v, "'tessera 0.1.0'");
  {
    fitsfile *f = NULL;
    int status = 0, nkeys = 0;
    char *hdr = NULL;
    CHECK_FITS(fits_open_diskfile(&f, out, READONLY, &status));
    CHECK_FITS(fits_hdr2str(f, 0, NULL, 0, &hdr, &nkeys, &status));
    ASSERT_STR_CONTAINS(hdr, "HISTORY tessera: buffer#1, region [0:30, 0:20]");
    ASSERT_STR_CONTAINS(hdr, "HISTORY kept as it was");
    ASSERT(strstr(hdr, "BSCALE") == NULL);
    ASSERT(strstr(strstr(hdr, "NAXIS2") + 80, "NAXIS") == NULL); /* no second NAXIS set */
    fits_free_memory(hdr, &status);
    CHECK_FITS(fits_close_file(f, &status));
  }
  /* The written header is a valid WCS again. */
  tsr_wcs_t *rw = NULL;
  ASSERT_OK(tsr_wcs_read_fits(ctx, out, 0, &rw));
  tsr_wcs_free(rw);

  ASSERT_OK(tsr_write_fits(g, 1, &n64, &out64, NULL, NULL));
  back = read_back(out64, &naxis, got, &bitpix);
  ASSERT_INT_EQ(bitpix, -64);
  ASSERT_NEAR(back[NX + 1], dd[NX + 1], 1e-6);
  free(back);

  /* A region: NAXISn of the region, CRPIX shifted so the WCS stays right. */
  tsr_region_t r = {{5, 4, 0, 0}, {25, 16, 1, 1}};
  ASSERT_OK(tsr_write_fits(g, 1, &n, &sub, &r, NULL));
  back = read_back(sub, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[0], 20);
  ASSERT_INT_EQ(got[1], 12);
  for (int y = 0; y < 12; y++)
    for (int x = 0; x < 20; x++)
      ASSERT_INT_EQ(back[y * 20 + x], d[(y + 4) * NX + x + 5]);
  free(back);
  read_key(sub, "CRPIX1", v);
  ASSERT_NEAR(atof(v), 10.25, 0);
  read_key(sub, "CRPIX2", v);
  ASSERT_NEAR(atof(v), 6.5, 0);
  {
    fitsfile *f = NULL;
    int status = 0;
    char card[FLEN_CARD];
    CHECK_FITS(fits_open_diskfile(&f, sub, READONLY, &status));
    CHECK_FITS(fits_read_card(f, "CRPIX1", card, &status));
    ASSERT_STR_CONTAINS(card, "/ Pixel coordinate of reference point");
    CHECK_FITS(fits_close_file(f, &status));
  }
  /* Same sky position at the same data pixel in both files. */
  tsr_wcs_t *wf = NULL, *ws = NULL;
  ASSERT_OK(tsr_wcs_read_fits(ctx, out, 0, &wf));
  ASSERT_OK(tsr_wcs_read_fits(ctx, sub, 0, &ws));
  double xf = 12, yf = 9, xs = 7, ys = 5, l1, b1, l2, b2;
  ASSERT_OK(tsr_wcs_pix2world(ctx, wf, 1, &xf, &yf, &l1, &b1));
  ASSERT_OK(tsr_wcs_pix2world(ctx, ws, 1, &xs, &ys, &l2, &b2));
  ASSERT_NEAR(l1, l2, 1e-12);
  ASSERT_NEAR(b1, b2, 1e-12);
  tsr_wcs_free(wf);
  tsr_wcs_free(ws);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);

  /* No WCS on the node: no WCS cards, and no CRPIX invented. */
  const char *nowcs = th_path("nowcs-out.fits");
  tsr_node_t *plain = tsr_source_buffer(g, TSR_F32, 2, shape, d, NULL);
  ASSERT_OK(tsr_write_fits(g, 1, &plain, &nowcs, &r, NULL));
  {
    fitsfile *f = NULL;
    int status = 0;
    char val[FLEN_VALUE];
    CHECK_FITS(fits_open_diskfile(&f, nowcs, READONLY, &status));
    fits_read_keyword(f, "CRPIX1", val, NULL, &status);
    ASSERT_INT_EQ(status, KEY_NO_EXIST);
    status = 0;
    fits_clear_errmsg();
    CHECK_FITS(fits_close_file(f, &status));
  }
  tsr_wcs_free(w);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* A FITS file copied through a source, in bands (a source has no chunk
 * rows, so bands are cut by size: use an image larger than one band). */
TEST(write_fits_source_in_bands) {
  long naxes[2] = {2100, 2200}; /* 18.5 MB of float32: two bands */
  float *d = ramp(2, naxes);
  const char *in = th_path("big.fits"), *out = th_path("big-out.fits");
  int naxis, bitpix;
  long got[4];
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, in, 0);
  ASSERT(n != NULL);
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  float *back = read_back(out, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[1], 2200);
  for (long i = 0; i < 2100L * 2200L; i++)
    if (back[i] != d[i])
      th_fail(__FILE__, __LINE__, "pixel %ld: %g vs %g", i, back[i], d[i]);
  free(back);
  free(d);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* Brackets in names are not cfitsio's extended syntax here, and a file can
 * be rewritten from itself (the input closes before the rename). */
TEST(write_over_its_own_input) {
  long naxes[2] = {12, 9};
  float *d = ramp(2, naxes), out[54];
  const char *path = th_path("img[1].fits");
  int naxis, bitpix;
  long got[4];
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT_STR_CONTAINS(tsr_node_name(n), "(\"img[1].fits\")");
  tsr_region_t r = {{3, 2, 0, 0}, {9, 11, 1, 1}};
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &path, &r, NULL), TSR_ERANGE);
  r.stop[1] = 8;
  ASSERT_OK(tsr_write_fits(g, 1, &n, &path, &r, NULL));
  tsr_graph_free(g);
  float *back = read_back(path, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[0], 6);
  ASSERT_INT_EQ(got[1], 6);
  {
    fitsfile *f = NULL;
    int status = 0, nkeys = 0;
    char *hdr = NULL, *first;
    CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
    CHECK_FITS(fits_hdr2str(f, 0, NULL, 0, &hdr, &nkeys, &status));
    /* cfitsio's boilerplate at most once, not once per generation. */
    first = strstr(hdr, "COMMENT   FITS (Flexible Image");
    ASSERT(first == NULL || strstr(first + 80, "COMMENT   FITS (Flexible Image") == NULL);
    ASSERT_STR_CONTAINS(hdr, "CRPIX1  =                 13.5");
    fits_free_memory(hdr, &status);
    CHECK_FITS(fits_close_file(f, &status));
  }
  for (int y = 0; y < 6; y++)
    for (int x = 0; x < 6; x++)
      ASSERT_INT_EQ(back[y * 6 + x], d[(y + 2) * 12 + x + 3]);
  free(back);
  /* And read again as a source: same values, through the new header. */
  g = graph_new(ctx);
  n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL && tsr_node_wcs(n) != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, NULL));
  ASSERT_INT_EQ(out[7], d[3 * 12 + 4]);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* A two-plane op that computes whole chunks, to check bands follow the
 * chunk grid and that planes of one owner are computed once, together. */
static int gen_calls, gen_fail_at;
static int gen_compute(tsr__task_t *t) {
  const tsr_region_t *r = &t->out;
  if (++gen_calls == gen_fail_at)
    return tsr__err(t->ctx, TSR_EINVAL, "gen: made to fail");
  for (int64_t z = r->start[2]; z < r->stop[2]; z++)
    for (int64_t y = r->start[1]; y < r->stop[1]; y++)
      for (int64_t x = r->start[0]; x < r->stop[0]; x++) {
        size_t o = tsr__task_offset(t, x - r->start[0], y - r->start[1], z - r->start[2], 0);
        float v = (float)(x + 100 * y + 10000 * z);
        if (t->planes[0])
          ((float *)t->planes[0])[o] = v;
        if (t->planes[1])
          ((float *)t->planes[1])[o] = -v;
      }
  return 0;
}
static void gen_encode(const tsr_node_t *n, tsr__buf_t *b) {
  (void)n;
  tsr__buf_put_str(b, "gen");
}
static const tsr__op_t gen_op = {.name = "gen", .version = 1, .compute = gen_compute,
                                 .encode = gen_encode};

static tsr_node_t *gen_node(tsr_graph_t *g) {
  tsr_node_t *n = tsr__node_alloc(g, &gen_op, NULL);
  ASSERT(n != NULL);
  n->ndim = 3;
  n->shape[0] = 23, n->shape[1] = 17, n->shape[2] = 3;
  n->chunk[0] = 7, n->chunk[1] = 5, n->chunk[2] = 2;
  n->n_planes = 2;
  n->dtype = TSR_F32;
  return tsr__node_finish(n);
}

TEST(write_planes_together_by_chunk_rows) {
  const char *pa = th_path("gen-data.fits"), *pb = th_path("gen-foot.fits");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  ASSERT(n && fp);
  tsr_node_t *nodes[2] = {n, fp};
  const char *paths[2] = {pa, pb};
  int naxis, bitpix;
  long got[4];

  gen_calls = 0;
  ASSERT_OK(tsr_write_fits(g, 2, nodes, paths, NULL, NULL));
  ASSERT_INT_EQ(gen_calls, 4 * 4 * 2); /* every chunk once, for both planes */
  float *a = read_back(pa, &naxis, got, &bitpix), *b = read_back(pb, &naxis, got, &bitpix);
  ASSERT_INT_EQ(naxis, 3);
  ASSERT_INT_EQ(got[2], 3);
  for (int z = 0; z < 3; z++)
    for (int y = 0; y < 17; y++)
      for (int x = 0; x < 23; x++) {
        ASSERT_INT_EQ(a[(z * 17 + y) * 23 + x], x + 100 * y + 10000 * z);
        ASSERT_INT_EQ(b[(z * 17 + y) * 23 + x], -(x + 100 * y + 10000 * z));
      }
  free(a);
  free(b);

  /* A region: only the chunks meeting it, each once. */
  tsr_region_t r = {{3, 2, 1, 0}, {20, 15, 3, 1}};
  gen_calls = 0;
  ASSERT_OK(tsr_write_fits(g, 2, nodes, paths, &r, NULL));
  ASSERT_INT_EQ(gen_calls, 3 * 3 * 2);
  a = read_back(pa, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[0], 17);
  ASSERT_INT_EQ(got[1], 13);
  ASSERT_INT_EQ(got[2], 2);
  for (int z = 0; z < 2; z++)
    for (int y = 0; y < 13; y++)
      for (int x = 0; x < 17; x++)
        ASSERT_INT_EQ(a[(z * 13 + y) * 17 + x], (x + 3) + 100 * (y + 2) + 10000 * (z + 1));
  free(a);

  /* The same node to two files shares one computation. */
  tsr_node_t *twice[2] = {n, n};
  gen_calls = 0;
  ASSERT_OK(tsr_write_fits(g, 2, twice, paths, NULL, NULL));
  ASSERT_INT_EQ(gen_calls, 32);
  b = read_back(pb, &naxis, got, &bitpix);
  ASSERT_INT_EQ(b[23 * 17 + 5], 5 + 10000);
  free(b);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

static volatile int cancel_flag;
static int progress_calls;
static int64_t progress_total;
static void cancel_after_3(void *ud, int64_t done, int64_t total) {
  (void)ud;
  progress_calls++;
  progress_total = total;
  if (done >= 3)
    cancel_flag = 1;
}

TEST(write_cancel_leaves_nothing) {
  const char *pa = th_path("cancel-a.fits"), *pb = th_path("cancel-b.fits");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  tsr_node_t *nodes[2] = {n, fp};
  const char *paths[2] = {pa, pb};
  tsr_run_opts_t opts = TSR_RUN_OPTS_INIT;
  char buf[32] = "";
  opts.progress = cancel_after_3;
  opts.cancel = &cancel_flag;
  write_text(pa, "previous", 8);
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, &opts), TSR_ECANCELED);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "canceled");
  ASSERT_INT_EQ(progress_total, 32);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  ASSERT(!file_exists(pb));
  FILE *f = fopen(pa, "rb");
  ASSERT(f != NULL);
  ASSERT(fread(buf, 1, sizeof buf, f) == 8);
  fclose(f);
  ASSERT(strcmp(buf, "previous") == 0);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(write_error_mid_run_leaves_nothing) {
  const char *pa = th_path("fail-a.fits"), *pb = th_path("fail-b.fits");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  tsr_node_t *nodes[2] = {fp, n};
  const char *paths[2] = {pa, pb};
  gen_calls = 0;
  gen_fail_at = 20; /* after several bands were written */
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: writing \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fail-a.fits\": gen#1 chunk [21:23, 0:5, 2:3]: gen: made to fail");
  ASSERT(!file_exists(pa) && !file_exists(pb));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  gen_fail_at = 0;

  /* A source whose file changed under the graph. */
  long naxes[2] = {9, 7};
  float *d = ramp(2, naxes);
  const char *in = th_path("changing.fits");
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  tsr_node_t *src = tsr_source_fits(g, in, 0);
  ASSERT(src != NULL);
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  /* File times can be coarser than two writes apart: make the change plain. */
  struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
  ASSERT_OK(utimensat(AT_FDCWD, in, ts, 0));
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &src, &pa, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "changing.fits\" changed since the graph was built");
  ASSERT(!file_exists(pa));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  free(d);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(write_unwritable_fails_before_computing) {
  char dir[4096], path[4200], good[4200];
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  const char *paths[2];
  tsr_node_t *nodes[2] = {n, n};

  snprintf(good, sizeof good, "%s", th_path("fine.fits"));
  snprintf(path, sizeof path, "%s/no/such/dir/x.fits", th_tmpdir());
  paths[0] = good;
  paths[1] = path;
  gen_calls = 0;
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: cannot create \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "/no/such/dir/x.fits\": No such file or directory");
  ASSERT_INT_EQ(gen_calls, 0);
  ASSERT(!file_exists(good));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);

  ASSERT_INT_EQ(tsr_write_fits(g, 1, nodes, (const char *[]){th_tmpdir()}, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "\" exists and is a directory; expected a regular file");

  paths[1] = good;
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "write_fits: outputs 0 and 1 are the same file");

  if (geteuid() != 0) {
    snprintf(dir, sizeof dir, "%s", th_path("readonly"));
    ASSERT_OK(mkdir(dir, 0755));
    ASSERT_OK(chmod(dir, 0555));
    snprintf(path, sizeof path, "%s/x.fits", dir);
    paths[0] = path;
    ASSERT_INT_EQ(tsr_write_fits(g, 1, nodes, paths, NULL, NULL), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "readonly/x.fits\": Permission denied");
    ASSERT_INT_EQ(th_count_temps(dir), 0);
    chmod(dir, 0755);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ */
/* Outputs: special files, symbolic links, temporaries, free space    */

static mode_t lstat_type(const char *path) {
  struct stat st;
  ASSERT_OK(lstat(path, &st));
  return st.st_mode & S_IFMT;
}

/* A path of each kind a writer must refuse; `dev` is a private copy of
 * /dev/full when we may make one (root), else /dev/full itself, which only
 * root could replace. */
static int special_paths(const char *paths[4], const char *names[4]) {
  static char fifo[4096], sock[4096], dev[4096], dir[4096];
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd;
  snprintf(fifo, sizeof fifo, "%s", th_path("a-fifo"));
  snprintf(sock, sizeof sock, "%s", th_path("a-socket"));
  snprintf(dir, sizeof dir, "%s", th_path("a-dir"));
  snprintf(dev, sizeof dev, "%s", th_path("a-device"));
  if (access(fifo, F_OK) != 0) {
    ASSERT_OK(mkfifo(fifo, 0644));
    ASSERT_OK(mkdir(dir, 0755));
    ASSERT(strlen(sock) < sizeof sa.sun_path);
    strcpy(sa.sun_path, sock);
    ASSERT((fd = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0);
    ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof sa));
    close(fd);
    if (geteuid() != 0 || mknod(dev, S_IFCHR | 0666, makedev(1, 7)) != 0)
      snprintf(dev, sizeof dev, "/dev/full");
  }
  paths[0] = dev, names[0] = "character device";
  paths[1] = fifo, names[1] = "FIFO";
  paths[2] = sock, names[2] = "socket";
  paths[3] = dir, names[3] = "directory";
  return 4;
}

static int fail_block(void *user, const tsr_block_t *b) {
  (void)user, (void)b;
  return TSR_EINVAL;
}

/* A preview reads the caller's graph and never builds in it: after it,
 * done or failed (bad options, a bad path, a node that is not 2-D, a block
 * that fails), the graph has the same nodes and no error, and computes. */
TEST(preview_leaves_the_callers_graph_as_it_was) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  static float img[300 * 200], cube[8 * 8 * 2], back[300 * 200];
  int64_t shape[2] = {300, 200}, shape3[3] = {8, 8, 2};
  tsr_map_blocks_opts_t mo = TSR_MAP_BLOCKS_OPTS_INIT;
  tsr_preview_opts_t po = TSR_PREVIEW_OPTS_INIT;
  tsr_node_t *n, *n3, *bad;
  int nodes;
  for (int i = 0; i < 300 * 200; i++)
    img[i] = (float)(i % 300) + (i % 7 == 0 ? NAN : 0.0f);
  n = tsr_source_buffer(g, TSR_F32, 2, shape, img, NULL);
  n3 = tsr_source_buffer(g, TSR_F32, 3, shape3, cube, NULL);
  mo.name = "fails";
  mo.dtype = TSR_F32;
  bad = tsr_map_blocks(g, 1, &n, fail_block, NULL, &mo);
  ASSERT(n != NULL && n3 != NULL && bad != NULL);
  nodes = g->n_nodes;
  po.max_size = 64; /* strided and resampled */
  ASSERT_OK(tsr_write_png(g, n, th_path("as-it-was.png"), &po));
  ASSERT(file_exists(th_path("as-it-was.png")));
  ASSERT_INT_EQ(g->n_nodes, nodes);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  po.stretch = 99;
  ASSERT_INT_EQ(tsr_write_png(g, n, th_path("bad-options.png"), &po), TSR_EINVAL);
  po.stretch = TSR_STRETCH_LINEAR;
  ASSERT_INT_EQ(tsr_write_png(g, n, th_path("no-such-dir/x.png"), &po), TSR_EIO);
  ASSERT_INT_EQ(tsr_write_png(g, n3, th_path("cube.png"), &po), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "preview: expected a 2-D image");
  ASSERT_INT_EQ(tsr_write_png(g, bad, th_path("fails.png"), &po), TSR_EINVAL);
  ASSERT_INT_EQ(g->n_nodes, nodes);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT(strcmp(tsr_graph_errmsg(g), "") == 0);
  ASSERT(!file_exists(th_path("fails.png")));
  ASSERT_OK(tsr_compute(g, n, NULL, back, sizeof back, NULL));
  ASSERT(memcmp(back, img, sizeof back) == 0);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(outputs_refuse_special_files_before_computing) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  int64_t shape[2] = {4, 3};
  static float img[12];
  tsr_node_t *flat = tsr_source_buffer(g, TSR_F32, 2, shape, img, NULL);
  const char *paths[4], *names[4], *link = th_path("link-to-special");
  char want[512];
  tsr_wcs_t *wcs;
  ASSERT(fp != NULL && flat != NULL);
  ASSERT_OK(tsr_wcs_parse(ctx, tan_hdr, sizeof tan_hdr - 1, "tan", 1, &wcs));
  int k = special_paths(paths, names);
  for (int i = 0; i < k; i++) {
    mode_t before = lstat_type(paths[i]);
    const char *two[2] = {th_path("beside.fits"), paths[i]};
    tsr_node_t *nodes[2] = {n, fp};
    snprintf(want, sizeof want, "output \"%s\" exists and is a %s; expected a regular file or a new path",
             paths[i], names[i]);
    gen_calls = 0;
    ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, two, NULL, NULL), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: ");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(gen_calls, 0);
    ASSERT(!file_exists(two[0]));
    ASSERT_INT_EQ(tsr_write_png(g, flat, paths[i], NULL), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "preview: ");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(tsr_wcs_write_hdr(ctx, wcs, paths[i]), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "header: ");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(lstat_type(paths[i]), before);
    /* A link to one is refused the same way, and stays. */
    unlink(link);
    ASSERT_OK(symlink(paths[i], link));
    ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &link, NULL, NULL), TSR_EIO);
    snprintf(want, sizeof want, "leads to \"%s\", which is a %s;", paths[i], names[i]);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(lstat_type(link), S_IFLNK);
    ASSERT_INT_EQ(lstat_type(paths[i]), before);
  }
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  tsr_wcs_free(wcs);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(outputs_replace_what_a_link_leads_to) {
  char dir[4096], real[4200], chain[4200];
  const char *link = th_path("out-link.fits"), *dang = th_path("dangling.fits");
  const char *made = th_path("made-by-link.fits"), *hdr = th_path("hdr-link.hdr");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  tsr_wcs_t *wcs, *back;
  int naxis, bitpix;
  long got[4];
  char buf[16] = "";
  snprintf(dir, sizeof dir, "%s", th_path("link-target-dir"));
  ASSERT_OK(mkdir(dir, 0755));
  snprintf(real, sizeof real, "%s/real.fits", dir);
  write_text(real, "previous", 8);
  ASSERT_OK(symlink("link-target-dir/real.fits", link)); /* relative to the link */
  snprintf(chain, sizeof chain, "%s", th_path("chain.fits"));
  ASSERT_OK(symlink("out-link.fits", chain));            /* a link to a link */
  gen_calls = 0, gen_fail_at = 3;
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, (const char *[]){chain}, NULL, NULL), TSR_EINVAL);
  gen_fail_at = 0;
  FILE *f = fopen(real, "rb");
  ASSERT(f != NULL && fread(buf, 1, sizeof buf, f) == 8);
  fclose(f);
  ASSERT(strcmp(buf, "previous") == 0); /* a failed run leaves the target alone */
  ASSERT_INT_EQ(lstat_type(chain), S_IFLNK);
  ASSERT_OK(tsr_write_fits(g, 1, &n, (const char *[]){chain}, NULL, NULL));
  ASSERT_INT_EQ(lstat_type(chain), S_IFLNK);
  ASSERT_INT_EQ(lstat_type(link), S_IFLNK);
  ASSERT_INT_EQ(lstat_type(real), S_IFREG);
  float *d = read_back(link, &naxis, got, &bitpix);
  ASSERT(naxis == 3 && got[0] == 23 && got[1] == 17 && d[23 * 4 + 9] == 409.0f);
  free(d);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()) + th_count_temps(dir), 0);
  /* A dangling link: the file it names is created. */
  ASSERT_OK(symlink("made-by-link.fits", dang));
  ASSERT_OK(tsr_write_fits(g, 1, &n, &dang, NULL, NULL));
  ASSERT_INT_EQ(lstat_type(dang), S_IFLNK);
  ASSERT_INT_EQ(lstat_type(made), S_IFREG);
  /* Header files follow the same rules. */
  ASSERT_OK(tsr_wcs_parse(ctx, tan_hdr, sizeof tan_hdr - 1, "tan", 1, &wcs));
  write_text(real, "previous", 8);
  ASSERT_OK(symlink("link-target-dir/real.fits", hdr));
  ASSERT_OK(tsr_wcs_write_hdr(ctx, wcs, hdr));
  ASSERT_INT_EQ(lstat_type(hdr), S_IFLNK);
  ASSERT_OK(tsr_wcs_read_hdr(ctx, real, &back));
  ASSERT_INT_EQ(tsr_wcs_shape(back, 0), 2048);
  tsr_wcs_free(back);
  tsr_wcs_free(wcs);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* While a file is written, its directory shows no temporary (O_TMPFILE);
 * where the filesystem has none (tsr__test_hooks.no_tmpfile), one named and
 * locked temporary that the run removes or renames. */
static const char *temps_dir;
static int temps_seen;
static void count_temps_now(void *ud, int64_t done, int64_t total) {
  (void)ud, (void)done, (void)total;
  int k = th_count_temps(temps_dir);
  if (k > temps_seen)
    temps_seen = k;
}

TEST(outputs_leave_no_named_temporary_while_written) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  const char *out = th_path("unnamed.fits");
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  temps_dir = th_tmpdir();
  ro.progress = count_temps_now;
  for (int fallback = 0; fallback < 2; fallback++) {
    if (fallback)
      tsr__test_hooks.no_tmpfile = 1;
    for (int jobs = 1; jobs <= 2; jobs++) {
      temps_seen = 0;
      ro.jobs = jobs;
      ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, &ro));
      ASSERT_INT_EQ(temps_seen, fallback);
      ASSERT_INT_EQ(th_count_temps(temps_dir), 0);
      int naxis, bitpix;
      long got[4];
      float *d = read_back(out, &naxis, got, &bitpix);
      ASSERT(d[2 * 23 * 17 + 23 * 16 + 22] == 22 + 1600 + 20000);
      free(d);
    }
    tsr__test_hooks.no_tmpfile = 0;
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* Temporaries left by killed runs (".NAME.tsr-PID.tmp") are removed by the
 * next run writing NAME when their process is gone and their lock free;
 * nothing else is touched. */
TEST(outputs_remove_stale_temporaries_only) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  const char *out = th_path("st.fits");
  char dead[4200], mine[4200], live[4200], other[4200], locked[4200], link[4200], victim[4200];
  /* PIDs above the kernel's limit (2^22) never exist. */
  snprintf(dead, sizeof dead, "%s/.st.fits.tsr-99999999.tmp", th_tmpdir());
  snprintf(mine, sizeof mine, "%s/.st.fits.tsr-%ld.tmp", th_tmpdir(), (long)getpid());
  snprintf(live, sizeof live, "%s/.st.fits.tsr-%ld.tmp", th_tmpdir(), (long)getppid());
  snprintf(other, sizeof other, "%s/.other.fits.tsr-99999999.tmp", th_tmpdir());
  snprintf(locked, sizeof locked, "%s/.st.fits.tsr-99999997.tmp", th_tmpdir());
  snprintf(link, sizeof link, "%s/.st.fits.tsr-99999998.tmp", th_tmpdir());
  snprintf(victim, sizeof victim, "%s", th_path("not-a-temporary"));
  write_text(dead, "x", 1);
  write_text(mine, "x", 1);
  write_text(live, "x", 1);
  write_text(other, "x", 1);
  write_text(locked, "x", 1);
  write_text(victim, "x", 1);
  ASSERT_OK(symlink(victim, link));
  int lfd = open(locked, O_RDONLY);
  ASSERT(lfd >= 0 && flock(lfd, LOCK_EX) == 0); /* a writer still at work, elsewhere */
  tsr__test_hooks.no_tmpfile = 1;
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  tsr__test_hooks.no_tmpfile = 0;
  ASSERT(!file_exists(dead) && !file_exists(mine));
  ASSERT(file_exists(live) && file_exists(other) && file_exists(locked) && file_exists(victim));
  ASSERT_INT_EQ(lstat_type(link), S_IFLNK);
  close(lfd);
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  ASSERT(!file_exists(locked) && file_exists(live));
  unlink(live), unlink(other), unlink(link), unlink(victim);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* An output bigger than the free space is refused before anything is
 * planned or computed.  (A file size limit keeps a regression from filling
 * the disk.) */
TEST(outputs_that_cannot_fit_are_refused_at_once) {
  struct rlimit rl = {64 << 20, 64 << 20};
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr__node_alloc(g, &gen_op, NULL);
  const char *pa = th_path("huge.fits"), *pb = th_path("huge-fp.fits");
  signal(SIGXFSZ, SIG_IGN);
  ASSERT_OK(setrlimit(RLIMIT_FSIZE, &rl));
  n->ndim = 2;
  n->shape[0] = n->shape[1] = 1000000;
  n->chunk[0] = n->chunk[1] = 1024;
  n->n_planes = 2;
  n->dtype = TSR_F32;
  ASSERT((n = tsr__node_finish(n)) != NULL);
  tsr_node_t *nodes[2] = {n, tsr_footprint(g, n)};
  const char *paths[2] = {pa, pb};
  gen_calls = 0;
  uint64_t t0 = uv_hrtime();
  ASSERT_INT_EQ(tsr_write_fits(g, 1, nodes, paths, NULL, NULL), TSR_EIO);
  ASSERT(uv_hrtime() - t0 < 1000000000u);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: output \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "huge.fits\" needs 4.0 TB, ");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), " free on /");
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "huge.fits\" needs 8.0 TB with the other outputs on that "
                                       "filesystem, ");
  ASSERT_INT_EQ(gen_calls, 0);
  ASSERT(!file_exists(pa) && !file_exists(pb));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(write_checks_its_arguments) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx), *g2 = graph_new(ctx);
  int64_t s1[2] = {4, 4}, s2[2] = {4, 5};
  float d[20] = {0};
  tsr_node_t *a = tsr_source_buffer(g, TSR_F32, 2, s1, d, NULL);
  tsr_node_t *b = tsr_source_buffer(g, TSR_F32, 2, s2, d, NULL);
  tsr_node_t *c = tsr_source_buffer(g2, TSR_F32, 2, s1, d, NULL);
  const char *paths[2] = {th_path("a1.fits"), th_path("a2.fits")};
  tsr_node_t *ab[2] = {a, b}, *ac[2] = {a, c};
  ASSERT_INT_EQ(tsr_write_fits(g, 2, ab, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "has extent [0:4, 0:5] but buffer#1");
  ASSERT_INT_EQ(tsr_write_fits(g, 2, ac, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "write_fits: node 1 is NULL or from another graph");
  tsr_region_t r = {{0, 0, 0, 0}, {5, 4, 1, 1}};
  ASSERT_INT_EQ(tsr_write_fits(g, 1, ab, paths, &r, NULL), TSR_ERANGE);
  ASSERT(!file_exists(paths[0]));
  ASSERT_INT_EQ(tsr_write_fits(g, 0, ab, paths, NULL, NULL), TSR_EINVAL);
  tsr_graph_free(g);
  tsr_graph_free(g2);
  tsr_ctx_free(ctx);
}

/* Faults in the middle of a run: a full disk under the output, the input
 * truncated while it is read, the cache directory removed.  Each gives a
 * clear error or the right result, never a partial output. */
TEST(io_faults_mid_run) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  const char *out = th_path("faulty.fits");
  /* 1. Full disk: the second data write fails. */
  {
    tsr_node_t *n = gen_node(g);
    tsr__test_hooks.write_fail = 2;
    ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &out, NULL, NULL), TSR_EIO);
    tsr__test_hooks.write_fail = 0;
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "faulty.fits\": No space left on device");
    ASSERT(!file_exists(out));
    ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  }
  /* 2. The input truncated after the first block was read. */
  {
    static float img[200 * 150];
    static float res[200 * 150];
    int64_t shape[2] = {200, 150};
    const char *in = th_path("shrinking.fits");
    for (int k = 0; k < 200 * 150; k++)
      img[k] = (float)k;
    tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, NULL);
    ASSERT_OK(tsr_write_fits(g, 1, &src, &in, NULL, NULL));
    tsr_node_t *f = tsr_source_fits(g, in, 0);
    tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
    o.name = "copy";
    o.dtype = TSR_F32;
    o.chunk[0] = 50, o.chunk[1] = 30;
    tsr_node_t *m = tsr_map_blocks(g, 1, &f, copy_block, NULL, &o);
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ASSERT(m != NULL);
    ro.progress = fault_after_first;
    fault_path = in, fault_kind = 1;
    int rc = tsr_compute(g, m, NULL, res, sizeof res, &ro);
    fault_kind = 0;
    if (rc == 0)
      ASSERT(memcmp(res, img, sizeof img) == 0); /* read before it shrank */
    else /* by a fault on the mapping, or by the identity check after it */
      ASSERT(strstr(tsr_errmsg(ctx), "was truncated while being read") != NULL ||
             strstr(tsr_errmsg(ctx), "changed while it was read") != NULL);
  }
  /* 2b. The same under a bicubic reprojection, which reads the file in
   * place (a view of the mapping) rather than a copy: the tiles it needs
   * after the first block lie past the new end. */
  {
    enum { W = 600, H = 300 };
    static float img[W * H], res[W * H];
    int64_t shape[2] = {W, H};
    char text[512];
    tsr_wcs_t *wcs;
    const char *in = th_path("shrinking-view.fits");
    for (int k = 0; k < W * H; k++)
      img[k] = (float)(k % 977);
    snprintf(text, sizeof text,
             "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
             "CRPIX1 = 300\nCRPIX2 = 150\nCRVAL1 = 10.0\nCRVAL2 = 41.0\nCDELT1 = -0.001\n"
             "CDELT2 = 0.001\n", W, H);
    ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "view", 1, &wcs));
    tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, wcs);
    ASSERT_OK(tsr_write_fits(g, 1, &src, &in, NULL, NULL));
    tsr_node_t *f = tsr_source_fits(g, in, 0);
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    io.order = 3;
    io.block[0] = 50, io.block[1] = 30;
    tsr_node_t *r = tsr_reproject_interp(g, f, wcs, &io);
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ASSERT(r != NULL);
    ro.progress = fault_after_first;
    fault_path = in, fault_kind = 1;
    ASSERT_INT_EQ(tsr_compute(g, r, NULL, res, sizeof res, &ro), TSR_EIO);
    fault_kind = 0;
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "shrinking-view.fits");
    ASSERT(strstr(tsr_errmsg(ctx), "was truncated while it was read") != NULL ||
           strstr(tsr_errmsg(ctx), "changed while it was read") != NULL);
    tsr_wcs_free(wcs);
  }
  /* 3. The cache directory removed after the first block: the run goes on
   * (the cache makes its directories again as it stores) with the right
   * values. */
  {
    char dir[4096];
    static float res2[23 * 17 * 3];
    tsr_cache_t *cache;
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    tsr_node_t *n = gen_node(g);
    snprintf(dir, sizeof dir, "%s", th_path("vanishing-cache"));
    ASSERT_OK(tsr_cache_open(ctx, dir, 1 << 26, &cache));
    ro.cache = cache;
    ro.progress = fault_after_first;
    ro.progress_ud = dir;
    fault_kind = 2;
    gen_calls = 0, gen_fail_at = 0;
    ASSERT_OK(tsr_compute(g, n, NULL, res2, sizeof res2, &ro));
    fault_kind = 0;
    for (int z = 0; z < 3; z++)
      for (int y = 0; y < 17; y++)
        for (int x = 0; x < 23; x++)
          ASSERT(res2[(z * 17 + y) * 23 + x] == (float)(x + 100 * y + 10000 * z));
    tsr_cache_close(cache);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
