/* Small file-system helpers with crash-safe semantics (write temp, fsync, rename, fsync dir). */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int md_read_file(const char *path, char **out, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? MD_ENOTFOUND : MD_EIO;
  sb_t sb = {0};
  char buf[65536];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      close(fd);
      sb_free(&sb);
      return MD_EIO;
    }
    if (r == 0) break;
    sb_append(&sb, buf, (size_t)r);
  }
  close(fd);
  if (sb.oom) {
    sb_free(&sb);
    return MD_ENOMEM;
  }
  if (len) *len = sb.len;
  *out = sb_steal(&sb);
  return 0;
}

int md_fsync_dir(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return MD_EIO;
  int rc = fsync(fd);
  close(fd);
  return rc == 0 ? 0 : MD_EIO;
}

int md_write_file_atomic(const char *path, const void *p, size_t n) {
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 5);
  if (!tmp) return MD_ENOMEM;
  memcpy(tmp, path, pl);
  memcpy(tmp + pl, ".tmp", 5);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    free(tmp);
    return e == ENOSPC ? MD_ENOSPC : MD_EIO;
  }
  const char *c = p;
  size_t left = n;
  int rc = 0;
  while (left) {
    ssize_t w = write(fd, c, left);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = errno == ENOSPC ? MD_ENOSPC : MD_EIO;
      break;
    }
    c += w;
    left -= (size_t)w;
  }
  if (!rc && fsync(fd) != 0) rc = errno == ENOSPC ? MD_ENOSPC : MD_EIO;
  close(fd);
  if (!rc && rename(tmp, path) != 0) rc = MD_EIO;
  if (rc) unlink(tmp);
  free(tmp);
  if (!rc) {
    char *d = strdup(path);
    if (d) {
      md_fsync_dir(dirname(d));
      free(d);
    }
  }
  return rc;
}

int md_mkdir_p(const char *path) {
  char buf[4096];
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof buf) return MD_EINVAL;
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == 0) {
      char c = buf[i];
      buf[i] = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) return errno == ENOSPC ? MD_ENOSPC : MD_EIO;
      buf[i] = c;
    }
  }
  return 0;
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)flag; (void)ftw;
  return remove(p);
}

int md_rm_rf(const char *path) {
  if (nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) return MD_EIO;
  return 0;
}
