/* testslurp.h: the contents of a small file (a /proc or cgroup file), for the unit tests
 * that read them. */
#ifndef PRISMQ_TESTSLURP_H
#define PRISMQ_TESTSLURP_H

#include <fcntl.h>
#include <unistd.h>

/* The contents of a small file, NUL-terminated ("" if it cannot be read); a static
 * buffer, valid until the next call. */
static const char *slurp(const char *path) {
  static char buf[8192];
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return buf;
  ssize_t n, len = 0;
  while ((n = read(fd, buf + len, sizeof buf - 1 - (size_t)len)) > 0) len += n;
  buf[len] = '\0';
  close(fd);
  return buf;
}

#endif
