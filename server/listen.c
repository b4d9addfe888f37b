#include "listen.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _WIN32
typedef unsigned gid_t; /* unix_prepare's, unused there: Windows has no groups */
#else
#include <grp.h>
#endif

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "addr.h"
#include "compat.h"
#include "log.h"

/* How long accepting pauses after accept(2) failed (a full descriptor table). */
#define ACCEPT_PAUSE_MS 100
/* At most one line per this many ms about failed accepts. */
#define ACCEPT_LOG_MS 10000

struct listen_sock {
  struct evconnlistener *ev;
  struct event *resume_ev; /* ends a pause */
  log_limit log_lim;
  listen_accept_fn fn;
  void *arg;
  char *unix_path; /* absolute; removed on free */
  int tls;         /* the URL was tls:// */
  int local;       /* bound to a loopback address or a unix socket */
  char *url;       /* the canonical bound URL */
};

static void accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg) {
  (void)ev;
  (void)salen;
  listen_sock *l = arg;
  if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
    /* gRPC messages are small and latency-bound: do not wait to coalesce. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const void *)&one, sizeof one);
  }
  l->fn(fd, l, l->arg);
}

/* accept(2) failed for a reason libevent does not retry (EMFILE, ENFILE, ENOBUFS...).
 * The pending connection is still there, so the socket stays readable: listening on
 * would spin on the same error. Pause instead, and say so at most every 10 s. */
static void error_cb(struct evconnlistener *ev, void *arg) {
  listen_sock *l = arg;
  int e = EVUTIL_SOCKET_ERROR();
  unsigned long long held;
  if (log_limit_pass(&l->log_lim, ACCEPT_LOG_MS, &held))
    LOG_ERROR(
        "accept failed on %s: %s; not accepting for %d ms (%llu more failures since the last "
        "report)",
        l->url, evutil_socket_error_to_string(e), ACCEPT_PAUSE_MS, held);
  evconnlistener_disable(ev);
  struct timeval tv = compat_timeout_ms(ACCEPT_PAUSE_MS);
  evtimer_add(l->resume_ev, &tv);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  listen_sock *l = arg;
  evconnlistener_enable(l->ev);
}

/* Formats into a new string; the server may abort on out-of-memory. */
static char *xprintf(const char *fmt, ...) COMPAT_PRINTF(1, 2);
static char *xprintf(const char *fmt, ...) {
  char *s = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap);
  va_end(ap);
  if (n < 0) abort();
  return s;
}

#ifndef _WIN32
/* The gid of `group`: a number as it is, else the group database's entry. */
static int group_gid(gid_t *out, const char *group, char *err, size_t errlen) {
  if (isdigit((unsigned char)group[0])) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(group, &end, 10);
    if (*end == '\0' && errno == 0 && v < (unsigned long)(gid_t)-1) {
      *out = (gid_t)v;
      return 0;
    }
  }
  struct group gr, *res = NULL;
  long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
  size_t blen = hint > 0 ? (size_t)hint : 1024;
  char *buf = NULL;
  int rc;
  for (;;) {
    buf = malloc(blen);
    if (!buf) abort();
    rc = getgrnam_r(group, &gr, buf, blen, &res);
    if (rc != ERANGE || blen >= (1u << 20)) break;
    free(buf);
    blen *= 2;
  }
  if (rc == 0 && res) *out = gr.gr_gid;
  free(buf);
  if (rc != 0) {
    if (err && errlen) snprintf(err, errlen, "cannot look up group %s: %s", group, strerror(rc));
    return -rc;
  }
  if (!res) {
    if (err && errlen) snprintf(err, errlen, "unknown group %s", group);
    return -EINVAL;
  }
  return 0;
}
#endif

/* Before a unix socket is bound: checks the options, resolves the group, makes the
 * path absolute (*abs_path, caller frees: it names the socket in the URL and for the
 * unlink at free, which may come after a change of directory) and removes a stale
 * socket left there. Returns 0, or a negative errno with err filled. */
static int unix_prepare(char **abs_path, gid_t *gid, const addr *a, const listen_opts *opts,
                        const char *url, char *err, size_t errlen) {
  if (opts->unix_mode > 07777) {
    if (err && errlen)
      snprintf(err, errlen, "bad unix socket mode %o for %s", opts->unix_mode, url);
    return -EINVAL;
  }
#ifdef _WIN32
  /* Windows' AF_UNIX (Windows 10) is not wired up yet (docs/windows.md); Wine has none. */
  (void)a;
  (void)opts;
  (void)gid;
  (void)abs_path;
  if (err && errlen)
    snprintf(err, errlen, "cannot listen on %s: unix sockets are not supported on Windows yet",
             url);
  return -ENOTSUP;
#else
  int rc;
  if (opts->unix_group && (rc = group_gid(gid, opts->unix_group, err, errlen)) < 0) return rc;
  char *path;
  if (a->path[0] == '/') {
    path = xprintf("%s", a->path);
  } else {
    char *cwd = getcwd(NULL, 0);
    if (!cwd) {
      rc = -errno;
      if (err && errlen)
        snprintf(err, errlen, "cannot listen on %s: working directory: %s", url, strerror(-rc));
      return rc;
    }
    path = xprintf("%s/%s", strcmp(cwd, "/") ? cwd : "", a->path);
    free(cwd);
  }
  struct stat st;
  if (lstat(a->path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      if (err && errlen)
        snprintf(err, errlen, "cannot listen on %s: %s exists and is not a socket", url, path);
      free(path);
      return -EEXIST;
    }
    unlink(a->path); /* a stale socket from an earlier run */
  }
  *abs_path = path;
  return 0;
#endif
}

/* The URL of a bound listener (malloc'd): the real port of a TCP one. */
static char *bound_url(const addr *a, const struct sockaddr *bound, socklen_t blen,
                       const char *abs_path) {
  char buf[ADDR_FORMAT_LEN];
  if (a->kind == ADDR_TCP) {
    addr_peer_format(buf, sizeof buf, bound, blen);
    return xprintf("%s://%s", a->tls ? "tls" : "tcp", buf);
  }
  if (a->kind == ADDR_UNIX) return xprintf("unix://%s", abs_path);
  addr_format(buf, sizeof buf, a);
  return xprintf("%s", buf);
}

/* A TCP listener's options, before bind: SO_REUSEADDR where it means "rebind past
 * TIME_WAIT"; not on Windows, where it would let another program bind the same port
 * (libevent knows which). There, the port is made ours alone instead: no other socket,
 * even of our own user, binds over it. Returns 0, or -1 with the socket error left for
 * compat_sock_errno and *step naming the call. */
static int tcp_options(evutil_socket_t fd, const char **step) {
  *step = "SO_REUSEADDR";
  if (evutil_make_listen_socket_reuseable(fd) < 0) return -1;
#ifdef _WIN32
  int one = 1;
  *step = "SO_EXCLUSIVEADDRUSE";
  if (setsockopt(fd, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&one, sizeof one) != 0)
    return -1;
#endif
  return 0;
}

/* bind made the unix socket's file with the umask's mode: sets the one asked for (and
 * the group) before listen, so no connection is ever accepted through looser
 * permissions. (fchmod on the socket would change the socket's inode, not the file's.)
 * Returns 0, or a negative errno with *step naming the call. */
static int unix_file_mode(const char *path, const listen_opts *opts, gid_t gid, const char **step) {
  *step = "chmod";
  if (chmod(path, (mode_t)opts->unix_mode) < 0) return -errno;
#ifdef _WIN32
  (void)gid;
#else
  *step = "chown";
  if (opts->unix_group && chown(path, (uid_t)-1, gid) < 0) return -errno;
#endif
  return 0;
}

int listen_new(listen_sock **out, struct event_base *base, const char *url, const listen_opts *opts,
               listen_accept_fn fn, void *arg, char *err, size_t errlen) {
  static const listen_opts defaults = LISTEN_OPTS_INIT;
  struct sockaddr_storage ss, bound;
  socklen_t sslen, blen = sizeof bound;
  addr a;
  gid_t gid = (gid_t)-1;
  evutil_socket_t fd = -1;
  int file_made = 0, rc;
  const char *step = NULL; /* the call that failed, for err */
  char *abs_path = NULL;
  listen_sock *l = NULL;
  if (!opts) opts = &defaults;

  rc = addr_parse(&a, url, err, errlen);
  if (rc < 0) goto fail;
  rc = addr_sockaddr(&ss, &sslen, &a, 1, err, errlen);
  if (rc < 0) goto fail;
  if (a.kind == ADDR_UNIX && (rc = unix_prepare(&abs_path, &gid, &a, opts, url, err, errlen)) < 0)
    goto fail;

  step = "socket";
  if ((rc = compat_sock_stream(&fd, ss.ss_family)) < 0) goto fail_step;
  if (a.kind == ADDR_TCP && tcp_options(fd, &step) < 0) goto fail_errno;
  step = "bind";
  if (bind(fd, (struct sockaddr *)&ss, sslen) < 0) goto fail_errno;
  if (a.kind == ADDR_UNIX) {
    file_made = 1;
    if ((rc = unix_file_mode(a.path, opts, gid, &step)) < 0) goto fail_step;
  }
  step = "listen";
  if (listen(fd, 1024) < 0) goto fail_errno;
  step = "getsockname";
  if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) goto fail_errno;

  l = calloc(1, sizeof *l);
  if (!l) abort();
  /* Backlog 0: the socket already listens. */
  l->ev =
      evconnlistener_new(base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
  if (!l->ev) {
    if (err && errlen) snprintf(err, errlen, "cannot listen on %s: out of memory", url);
    rc = -ENOMEM;
    goto fail;
  }
  fd = -1; /* the listener's now */
  evconnlistener_set_error_cb(l->ev, error_cb);
  l->resume_ev = evtimer_new(base, resume_cb, l);
  if (!l->resume_ev) abort();
  l->fn = fn;
  l->arg = arg;
  l->tls = a.tls;
  l->local = addr_is_local((struct sockaddr *)&bound);
  l->url = bound_url(&a, (struct sockaddr *)&bound, blen, abs_path);
  l->unix_path = abs_path; /* NULL but for a unix path */
  *out = l;
  return 0;

fail_errno:
  rc = -compat_sock_errno();
fail_step:
  if (err && errlen) snprintf(err, errlen, "cannot listen on %s: %s: %s", url, step, strerror(-rc));
fail:
  free(l);
  if (fd >= 0) evutil_closesocket(fd);
  if (file_made) unlink(a.path);
  free(abs_path);
  return rc;
}

const char *listen_url(const listen_sock *l) { return l->url; }

int listen_is_tls(const listen_sock *l) { return l->tls; }

int listen_is_local(const listen_sock *l) { return l->local; }

void listen_free(listen_sock *l) {
  if (!l) return;
  evconnlistener_free(l->ev);
  event_free(l->resume_ev);
  if (l->unix_path) unlink(l->unix_path);
  free(l->unix_path);
  free(l->url);
  free(l);
}
