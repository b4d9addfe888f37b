#include "sdnotify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "xalloc.h"

/* Our messages are a few short lines; a longer one is a bug, dropped and logged. */
#define SDNOTIFY_MAX 1024

struct sdnotify {
  int fd;
  struct sockaddr_un addr;
  socklen_t addrlen;
  int warned; /* a failure was logged: the next ones are not */
};

/* NOTIFY_SOCKET as a socket address: "/path" (with its NUL) or "@name" (the abstract
 * namespace: a leading NUL, and the length counts the name's bytes only). */
static int parse_address(struct sockaddr_un *sa, socklen_t *len, const char *name, char *err,
                         size_t errlen) {
  size_t n = strlen(name);
  if ((name[0] != '/' && name[0] != '@') || n < 2 || n >= sizeof sa->sun_path) {
    snprintf(err, errlen,
             "NOTIFY_SOCKET=%s is neither an absolute path nor @name of at most %zu bytes", name,
             sizeof sa->sun_path - 1);
    return -EINVAL;
  }
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, name, n);
  if (name[0] == '@') {
    sa->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  } else {
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return 0;
}

int sdnotify_new(sdnotify **out, char *err, size_t errlen) {
  const char *name = getenv("NOTIFY_SOCKET");
  if (!name || !*name) {
    *out = NULL;
    return 0;
  }
  struct sockaddr_un sa;
  socklen_t len;
  int rc = parse_address(&sa, &len, name, err, errlen);
  if (rc < 0) return rc;
  /* Non-blocking: a service manager that does not read must not stall the loop. */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot open a socket for NOTIFY_SOCKET=%s: %s", name, strerror(-rc));
    return rc;
  }
  sdnotify *n = xcalloc(1, sizeof *n);
  n->fd = fd;
  n->addr = sa;
  n->addrlen = len;
  *out = n;
  return 0;
}

/* Logs the first failure only: a service manager that went away would otherwise cost
 * a log line per state change. */
static void failed(sdnotify *n, const char *why) {
  if (n->warned) return;
  n->warned = 1;
  LOG_WARN(
      "cannot notify the service manager (NOTIFY_SOCKET): %s; it may not learn of readiness, "
      "reloads or "
      "shutdown (said once)",
      why);
}

void sdnotify_send(sdnotify *n, const char *fmt, ...) {
  if (!n) return;
  char msg[SDNOTIFY_MAX];
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (len < 0 || (size_t)len >= sizeof msg) {
    failed(n, "message too long");
    return;
  }
  /* No SCM_CREDENTIALS of our own: the kernel attaches the sender's to a receiver with
   * SO_PASSCRED, which is how systemd tells the main process (NotifyAccess=main). */
  if (sendto(n->fd, msg, (size_t)len, MSG_NOSIGNAL, (const struct sockaddr *)&n->addr, n->addrlen) <
      0)
    failed(n, strerror(errno));
}

void sdnotify_reloading(sdnotify *n, const char *status) {
  if (!n) return;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  unsigned long long usec =
      (unsigned long long)now.tv_sec * 1000000 + (unsigned long long)now.tv_nsec / 1000;
  if (status)
    sdnotify_send(n, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s", usec, status);
  else
    sdnotify_send(n, "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
}

void sdnotify_free(sdnotify *n) {
  if (!n) return;
  close(n->fd);
  free(n);
}
