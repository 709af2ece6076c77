/* output.c -- how every output file is created, published or given up.
 *
 * DESIGN: FITS images, PNG previews and header files all go through here,
 * so that one set of rules holds for every output of every subcommand:
 * - A path that exists must be a regular file, or a symbolic link that
 *   leads to one or to nothing yet.  Devices, FIFOs, sockets and
 *   directories are refused before anything is computed: renaming over
 *   them replaces the node (as root, /dev/full became a 13 MB file), and
 *   opening them could block or throw the result away.
 * - A symbolic link is followed and the file it leads to is replaced, so
 *   the link stays a link.  A dangling link gets the file it names created,
 *   as the shell's `>` and cp(1) do.
 * - The contents go to an unnamed file (O_TMPFILE) in the directory of the
 *   file replaced, which a killed process cannot leave behind.  It gets a
 *   name, ".NAME.tsr-PID.tmp", only once complete, and is renamed over the
 *   final name at once.  Where the filesystem has no O_TMPFILE the file is
 *   created under that name from the start.  Either way a named temporary
 *   holds an flock for as long as its writer (or a worker forked from it)
 *   lives, and the next run writing the same output removes the ones whose
 *   process is gone and whose lock is free; the lock keeps a live writer's
 *   file on a shared filesystem, where its PID means nothing here.
 * - On failure only that temporary is removed: nothing the run did not
 *   create is ever deleted.
 * The descriptor is inherited by forked pool workers, which write their
 * bands through it with pwrite; nothing opens the temporary by name.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "io.h"

static const char *kind_of(mode_t m) {
  return S_ISDIR(m) ? "directory" : S_ISCHR(m) ? "character device" : S_ISBLK(m) ? "block device"
       : S_ISFIFO(m) ? "FIFO" : S_ISSOCK(m) ? "socket" : "special file";
}

/* The file that writing `path` replaces: `path` itself, or where its
 * symbolic links lead (relative targets are relative to the link's
 * directory).  Refuses anything that exists and is not a regular file. */
static int resolve(tsr_ctx_t *ctx, const char *what, const char *path, char **out) {
  char p[PATH_MAX], link[PATH_MAX];
  struct stat st;
  int rc = 0;

  if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p)
    return tsr__err(ctx, TSR_EIO, "%s: cannot create \"%s\": %s", what, path, strerror(ENAMETOOLONG));
  for (int hops = 0;; hops++) {
    if (lstat(p, &st) != 0) {
      if (errno == ENOENT)
        break; /* a new file; a missing directory is reported when it is opened */
      rc = tsr__err(ctx, TSR_EIO, "%s: cannot create \"%s\": %s", what, path, strerror(errno));
      goto out;
    }
    if (S_ISREG(st.st_mode))
      break;
    if (!S_ISLNK(st.st_mode)) {
      if (strcmp(p, path) == 0)
        rc = tsr__err(ctx, TSR_EIO, "%s: output \"%s\" exists and is a %s; expected a regular "
                      "file or a new path", what, path, kind_of(st.st_mode));
      else
        rc = tsr__err(ctx, TSR_EIO, "%s: output \"%s\" leads to \"%s\", which is a %s; expected "
                      "a regular file or a new path", what, path, p, kind_of(st.st_mode));
      goto out;
    }
    ssize_t k = readlink(p, link, sizeof link);
    if (hops == 40 || k < 0 || (size_t)k >= sizeof link) {
      int e = hops == 40 ? ELOOP : k < 0 ? errno : ENAMETOOLONG;
      rc = tsr__err(ctx, TSR_EIO, "%s: cannot create \"%s\": %s", what, path, strerror(e));
      goto out;
    }
    link[k] = '\0';
    char *slash = strrchr(p, '/');
    if (link[0] != '/' && slash != NULL) {
      int dirlen = (int)(slash + 1 - p);
      if (snprintf(p + dirlen, sizeof p - (size_t)dirlen, "%s", link) >= (int)(sizeof p - (size_t)dirlen)) {
        rc = tsr__err(ctx, TSR_EIO, "%s: cannot create \"%s\": %s", what, path, strerror(ENAMETOOLONG));
        goto out;
      }
    } else {
      memcpy(p, link, (size_t)k + 1);
    }
  }
  if ((*out = tsr__strdup(ctx, p)) == NULL)
    rc = tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", what);
out:
  return rc;
}

/* True if `name` in `dirfd` is a temporary of `base` (".BASE.tsr-PID.tmp")
 * that nothing holds any more: its process is gone here and its lock is
 * free (so no writer on another machine has it either).  Then it is
 * removed. */
static bool remove_if_stale(int dirfd, const char *name, const char *base) {
  size_t nb = strlen(base);
  const char *p = name + 1 + nb + 5;
  char *end;
  struct stat st;
  bool removed = false;
  if (name[0] != '.' || strncmp(name + 1, base, nb) != 0 || strncmp(name + 1 + nb, ".tsr-", 5) != 0 ||
      *p < '0' || *p > '9')
    return false;
  long pid = strtol(p, &end, 10);
  /* Our own PID: left by a dead process that had it, or held by another
   * thread of ours, which the lock tells apart. */
  if (strcmp(end, ".tmp") != 0 || pid <= 0 ||
      (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)))
    return false;
  int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return false;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
    removed = unlinkat(dirfd, name, 0) == 0;
  close(fd);
  return removed;
}

static void remove_stale(int dirfd, const char *base) {
  int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  struct dirent *e;
  if (d == NULL) {
    if (fd >= 0)
      close(fd);
    return;
  }
  while ((e = readdir(d)) != NULL)
    remove_if_stale(dirfd, e->d_name, base);
  closedir(d);
}

static void temp_name(const tsr__out_t *o, char *buf, size_t cap) {
  snprintf(buf, cap, ".%s.tsr-%ld.tmp", o->base, (long)getpid());
}

int tsr__out_open(tsr_ctx_t *ctx, const char *what, const char *path, tsr__out_t *o) {
  const char *base = strrchr(path, '/'), *slash;
  char dir[PATH_MAX];
  int rc, e;

  memset(o, 0, sizeof *o);
  o->path = path;
  o->dirfd = o->fd = -1;
  base = base ? base + 1 : path;
  if (base[0] == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
    return tsr__err(ctx, TSR_EINVAL, "%s: cannot create \"%s\": not a file name", what, path);
  if ((rc = resolve(ctx, what, path, &o->final)) != 0)
    goto out;
  slash = strrchr(o->final, '/');
  o->base = slash ? slash + 1 : o->final;
  rc = TSR_EIO;
  if (strlen(o->base) + 32 > sizeof o->tmp) {
    tsr__err(ctx, rc, "%s: cannot create \"%s\": %s", what, path, strerror(ENAMETOOLONG));
    goto out;
  }
  /* "/x": "/"; "dir/x": "dir/"; "x": ".". */
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(o->base - o->final) : 1, slash ? o->final : ".");
  if ((o->dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
    tsr__err(ctx, rc, "%s: cannot create \"%s\": %s", what, path, strerror(errno));
    goto out;
  }
  remove_stale(o->dirfd, o->base);
  if (!tsr__test_hooks.no_tmpfile) {
    o->fd = openat(o->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    e = errno;
  } else {
    e = EOPNOTSUPP;
  }
  /* Kernels and filesystems without it say so in these ways. */
  if (o->fd < 0 && (e == EOPNOTSUPP || e == EISDIR || e == EINVAL)) {
    temp_name(o, o->tmp, sizeof o->tmp);
    o->fd = openat(o->dirfd, o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    e = errno;
    if (o->fd < 0)
      o->tmp[0] = '\0';
  }
  if (o->fd < 0) {
    tsr__err(ctx, rc, "%s: cannot create \"%s\": %s", what, path, strerror(e));
    goto out;
  }
  (void)flock(o->fd, LOCK_EX | LOCK_NB); /* a new file: nobody else holds it */
  rc = 0;
out:
  if (rc != 0)
    tsr__out_discard(ctx, o);
  return rc;
}

/* "4.0 TB", "48 MB": decimal units, as df -H and disk vendors give them. */
static void human_bytes(double b, char *buf, size_t cap) {
  static const char *const unit[] = {"bytes", "kB", "MB", "GB", "TB", "PB", "EB"};
  int u = 0;
  while (b >= 1000 && u < 6)
    b /= 1000, u++;
  snprintf(buf, cap, u == 0 || b >= 10 ? "%.0f %s" : "%.1f %s", b, unit[u]);
}

int tsr__out_room(tsr_ctx_t *ctx, const char *what, const tsr__out_t *o, int64_t bytes,
                  const char *with) {
  struct statvfs sv;
  char need[32], have[32], dir[PATH_MAX], *real;
  if (fstatvfs(o->fd, &sv) != 0)
    return 0; /* nothing to say; the writes will tell */
  double avail = (double)sv.f_bavail * (double)sv.f_frsize;
  if ((double)bytes <= avail)
    return 0;
  snprintf(dir, sizeof dir, "%.*s", o->base > o->final ? (int)(o->base - o->final) : 1,
           o->base > o->final ? o->final : ".");
  real = realpath(dir, NULL);
  human_bytes((double)bytes, need, sizeof need);
  human_bytes(avail, have, sizeof have);
  tsr__err(ctx, TSR_EIO, "%s: output \"%s\" needs %s%s, %s free on %s", what, o->path, need, with,
           have, real ? real : dir);
  free(real);
  return TSR_EIO;
}

FILE *tsr__out_stream(tsr_ctx_t *ctx, const char *what, const tsr__out_t *o) {
  int fd = fcntl(o->fd, F_DUPFD_CLOEXEC, 0);
  FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
  if (f == NULL) {
    tsr__err(ctx, TSR_EIO, "%s: cannot write \"%s\": %s", what, o->path, strerror(errno));
    if (fd >= 0)
      close(fd);
  }
  return f;
}

int tsr__out_seal(tsr_ctx_t *ctx, const char *what, tsr__out_t *o) {
  char proc[64];
  int rc = 0;
  if (o->tmp[0] == '\0') {
    temp_name(o, o->tmp, sizeof o->tmp);
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", o->fd);
    for (int attempt = 0;; attempt++) {
      if (linkat(AT_FDCWD, proc, o->dirfd, o->tmp, AT_SYMLINK_FOLLOW) == 0)
        break;
      /* Without /proc, AT_EMPTY_PATH does the same given CAP_DAC_READ_SEARCH. */
      if (errno == ENOENT && linkat(o->fd, "", o->dirfd, o->tmp, AT_EMPTY_PATH) == 0)
        break;
      if (errno == EEXIST && attempt == 0 && remove_if_stale(o->dirfd, o->tmp, o->base))
        continue; /* left by a dead process that had our PID */
      rc = tsr__err(ctx, TSR_EIO, "%s: cannot write \"%s\": cannot name its temporary file: %s",
                    what, o->path, strerror(errno));
      o->tmp[0] = '\0';
      return rc;
    }
  }
  /* Network filesystems report failed writes as late as close. */
  if (close(o->fd) != 0)
    rc = tsr__err(ctx, TSR_EIO, "%s: cannot write \"%s\": %s", what, o->path, strerror(errno));
  o->fd = -1;
  return rc;
}

int tsr__out_commit(tsr_ctx_t *ctx, const char *what, tsr__out_t *o) {
  if (renameat(o->dirfd, o->tmp, o->dirfd, o->base) != 0)
    return tsr__err(ctx, TSR_EIO, "%s: cannot rename \"%s\" to \"%s\": %s", what, o->tmp,
                    o->final, strerror(errno));
  o->tmp[0] = '\0';
  return 0;
}

void tsr__out_discard(tsr_ctx_t *ctx, tsr__out_t *o) {
  if (o->fd >= 0)
    close(o->fd);
  if (o->tmp[0] != '\0' && o->dirfd >= 0)
    unlinkat(o->dirfd, o->tmp, 0);
  if (o->dirfd >= 0)
    close(o->dirfd);
  tsr__free(ctx, o->final);
  o->final = NULL;
  o->base = NULL;
  o->tmp[0] = '\0';
  o->fd = o->dirfd = -1;
}

int tsr_wcs_write_hdr(tsr_ctx_t *ctx, const tsr_wcs_t *wcs, const char *path) {
  tsr__out_t o;
  FILE *f;
  int rc;
  tsr__api_check(ctx != NULL && wcs != NULL && path != NULL, "tsr_wcs_write_hdr: NULL argument");
  if ((rc = tsr__out_open(ctx, "header", path, &o)) != 0)
    return rc;
  if ((f = tsr__out_stream(ctx, "header", &o)) == NULL) {
    rc = TSR_EIO;
    goto out;
  }
  /* As astropy's Header.totextfile: one card per line, no END. */
  for (int i = 0; i < wcs->ncards; i++)
    fprintf(f, "%.80s\n", wcs->cards + (size_t)80 * i);
  if (fclose(f) != 0) {
    rc = tsr__err(ctx, TSR_EIO, "header: cannot write \"%s\": %s", path, strerror(errno));
    goto out;
  }
  if ((rc = tsr__out_seal(ctx, "header", &o)) == 0)
    rc = tsr__out_commit(ctx, "header", &o);
out:
  tsr__out_discard(ctx, &o);
  return rc;
}
