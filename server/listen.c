#include "listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

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
  char *unix_path; /* removed on free */
  char url[160];
};

static void accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg) {
  (void)ev;
  (void)salen;
  listen_sock *l = arg;
  if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
    /* gRPC messages are small and latency-bound: do not wait to coalesce. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  l->fn(fd, l->arg);
}

/* accept(2) failed for a reason libevent does not retry (EMFILE, ENFILE, ENOBUFS...).
 * The pending connection is still there, so the socket stays readable: listening on
 * would spin on the same error. Pause instead, and say so at most every 10 s. */
static void error_cb(struct evconnlistener *ev, void *arg) {
  listen_sock *l = arg;
  int e = EVUTIL_SOCKET_ERROR();
  unsigned long long held;
  if (log_limit_pass(&l->log_lim, ACCEPT_LOG_MS, &held))
    LOG_ERROR("accept failed on %s: %s; not accepting for %d ms (%llu more failures since the last report)",
              l->url, evutil_socket_error_to_string(e), ACCEPT_PAUSE_MS, held);
  evconnlistener_disable(ev);
  struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
  evtimer_add(l->resume_ev, &tv);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  listen_sock *l = arg;
  evconnlistener_enable(l->ev);
}

static int fail_msg(char *err, size_t errlen, int rc, const char *fmt, const char *what) {
  if (err && errlen) snprintf(err, errlen, fmt, what);
  return rc;
}

int listen_new(listen_sock **out, struct event_base *base, const char *url, listen_accept_fn fn,
               void *arg, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  int sslen = sizeof ss;
  char *unix_path = NULL;
  memset(&ss, 0, sizeof ss);

  if (strncmp(url, "tcp://", 6) == 0) {
    /* HOST:PORT with HOST an IPv4 literal, [IPv6] or localhost; numeric only, so
     * nothing blocks on a resolver. Port 0 is allowed (evutil's parser refuses it). */
    char host[128];
    const char *hp = url + 6;
    const char *colon = strrchr(hp, ':');
    size_t hlen = colon ? (size_t)(colon - hp) : 0;
    if (hlen >= 2 && hp[0] == '[' && hp[hlen - 1] == ']') {
      hp++;
      hlen -= 2;
    }
    if (!colon || hlen == 0 || hlen >= sizeof host)
      return fail_msg(err, errlen, -EINVAL, "bad listen address %s (want tcp://IP:PORT)", url);
    memcpy(host, hp, hlen);
    host[hlen] = '\0';
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai)
      return fail_msg(err, errlen, -EINVAL, "bad listen address %s (want tcp://IP:PORT)", url);
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    sslen = (int)ai->ai_addrlen;
    freeaddrinfo(ai);
  } else if (strncmp(url, "unix://", 7) == 0) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
    const char *path = url + 7;
    if (path[0] != '/' || strlen(path) >= sizeof sun->sun_path)
      return fail_msg(err, errlen, -EINVAL, "bad unix socket path in %s (want unix:///abs/path)", url);
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, path);
    sslen = (int)sizeof *sun;
    struct stat st;
    if (lstat(path, &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        return fail_msg(err, errlen, -EEXIST, "%s exists and is not a socket", path);
      unlink(path); /* a stale socket from an earlier run */
    }
    unix_path = strdup(path);
    if (!unix_path) abort();
  } else {
    return fail_msg(err, errlen, -EINVAL, "bad listen URL %s (want tcp://IP:PORT or unix:///path)", url);
  }

  listen_sock *l = calloc(1, sizeof *l);
  if (!l) abort();
  l->fn = fn;
  l->arg = arg;
  l->unix_path = unix_path;
  l->ev = evconnlistener_new_bind(base, accept_cb, l,
                                  LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                  (struct sockaddr *)&ss, sslen);
  if (!l->ev) {
    int e = errno ? errno : EADDRNOTAVAIL;
    if (err && errlen) snprintf(err, errlen, "cannot listen on %s: %s", url, strerror(e));
    free(unix_path);
    free(l);
    return -e;
  }
  evconnlistener_set_error_cb(l->ev, error_cb);
  l->resume_ev = evtimer_new(base, resume_cb, l);
  if (!l->resume_ev) abort();

  if (unix_path) {
    snprintf(l->url, sizeof l->url, "unix://%s", unix_path);
  } else {
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    getsockname(evconnlistener_get_fd(l->ev), (struct sockaddr *)&bound, &blen);
    if (bound.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&bound;
      evutil_inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      port = ntohs(a->sin6_port);
      snprintf(l->url, sizeof l->url, "tcp://[%s]:%d", host, port);
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)&bound;
      evutil_inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      port = ntohs(a->sin_port);
      snprintf(l->url, sizeof l->url, "tcp://%s:%d", host, port);
    }
  }
  *out = l;
  return 0;
}

const char *listen_url(const listen_sock *l) { return l->url; }

void listen_free(listen_sock *l) {
  if (!l) return;
  evconnlistener_free(l->ev);
  event_free(l->resume_ev);
  if (l->unix_path) unlink(l->unix_path);
  free(l->unix_path);
  free(l);
}
