/* ppath on POSIX systems: lexical normalisation, then realpath(3) of the longest existing
 * prefix. */
#include "ppath.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Appends component c (len bytes) to the absolute path in buf (len *n), lexically: "."
 * is nothing, ".." drops the last component (never above "/"). */
static void push_component(char *buf, size_t *n, const char *c, size_t len) {
  if (len == 0 || (len == 1 && c[0] == '.')) return;
  if (len == 2 && c[0] == '.' && c[1] == '.') {
    while (*n > 1 && buf[*n - 1] != '/') (*n)--;
    if (*n > 1) (*n)--;
    buf[*n] = '\0';
    return;
  }
  if (*n > 1) buf[(*n)++] = '/';
  memcpy(buf + *n, c, len);
  *n += len;
  buf[*n] = '\0';
}

/* The lexical form of `rel` taken from directory `base` (or alone if rel is absolute)
 * into buf (PPATH_MAX bytes): absolute, no ".", "..", or repeated "/". -ENAMETOOLONG. */
static int normalize(char *buf, const char *base, const char *rel) {
  size_t n = 1;
  buf[0] = '/';
  buf[1] = '\0';
  for (int pass = rel[0] == '/'; pass < 2; pass++) {
    const char *s = pass ? rel : base;
    while (*s) {
      size_t len = strcspn(s, "/");
      if (n + 1 + len >= PPATH_MAX) return -ENAMETOOLONG;
      push_component(buf, &n, s, len);
      s += len + (s[len] == '/');
    }
  }
  return 0;
}

/* Resolves the symbolic links of the longest existing prefix of the normalized absolute
 * path in buf (PPATH_MAX bytes), in place; the rest stays as it is. -ELOOP for a
 * component past that prefix that is itself a symbolic link (one that points nowhere:
 * the run could still create what it names, anywhere); -ENAMETOOLONG; another -errno
 * of realpath (a component that is not a directory, a loop of links, no access). */
static int resolve_links(char *buf) {
  char real[PPATH_MAX], tail[PPATH_MAX] = "";
  size_t cut = strlen(buf);
  for (;;) {
    char saved = buf[cut];
    buf[cut] = '\0';
    const char *prefix = cut ? buf : "/";
    if (realpath(prefix, real)) {
      buf[cut] = saved;
      break;
    }
    struct stat st;
    if (errno != ENOENT) return -errno;
    if (cut && lstat(prefix, &st) == 0) return -ELOOP;
    buf[cut] = saved;
    while (cut > 0 && buf[cut - 1] != '/') cut--;
    if (cut > 0) cut--;
  }
  /* buf = real + the part that does not exist (which starts with "/"). */
  size_t tlen = strlen(buf + cut), rlen = strcmp(real, "/") == 0 && tlen ? 0 : strlen(real);
  if (rlen + tlen >= PPATH_MAX) return -ENAMETOOLONG;
  memcpy(tail, buf + cut, tlen + 1);
  memcpy(buf, real, rlen);
  memcpy(buf + rlen, tail, tlen + 1);
  return 0;
}

int ppath_resolve(char *out, const char *base, const char *v) {
  if (!*v || (!base && v[0] != '/')) return -EINVAL;
  int rc = normalize(out, base ? base : "/", v);
  return rc < 0 ? rc : resolve_links(out);
}

int ppath_under(const char *path, const char *base) {
  size_t blen = strlen(base);
  return strncmp(path, base, blen) == 0 &&
         (path[blen] == '\0' || path[blen] == '/' || strcmp(base, "/") == 0);
}
