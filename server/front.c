#include "front.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "http.h"
#include "listen.h"
#include "log.h"
#include "tlsctx.h"

/* At most one line per this many ms about refused connections. */
#define REFUSED_LOG_MS 10000
/* The HTTP/2 client preface (RFC 9113, 3.4): a plain connection that starts otherwise
 * is HTTP/1.1. */
static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN (sizeof preface - 1)

struct front {
  struct event_base *base;
  config *cfg; /* a reference */
  call_server *calls;
  SSL_CTX *tls; /* NULL without a tls: section */
  listen_sock **listeners;
  char **urls; /* as given, per listener */
  size_t nlisteners;
  log_limit refused_log;
  http *http;    /* HTTP/1.1 on the plain listeners */
  size_t nsniff; /* plain connections whose first bytes are awaited */
};

static int load_tls(SSL_CTX **out, const config_tls *t, char *err, size_t errlen) {
  tlsctx_server_opts o = {t->cert, t->key, t->client_ca, t->crl, t->require_client_cert};
  return tlsctx_server_new(out, &o, err, errlen);
}

/* Serves HTTP/2 (gRPC) on fd, TLS or not. */
static void serve_h2(front *f, int fd, int tls_on, const char *url) {
  conn_tls_opts tls = {f->tls, 1, NULL, f->cfg->tls.handshake_timeout_ms};
  conn *cn = NULL;
  int rc = conn_new_socket(&cn, f->base, fd, tls_on ? &tls : NULL);
  if (rc == 0) rc = call_server_accept(f->calls, cn);
  if (rc < 0) LOG_WARN("connection refused on %s: %s", url, strerror(-rc));
}

static void sniff_wait(front *f, int fd);

/* The first bytes are in (or the wait is over): the HTTP/2 preface, or as much of it as
 * came, makes it gRPC; anything else HTTP/1.1. Peeked, so that either reads them all. */
static void sniff_cb(evutil_socket_t fd, short what, void *arg) {
  front *f = arg;
  char buf[PREFACE_LEN];
  ssize_t n = what & EV_READ ? recv(fd, buf, sizeof buf, MSG_PEEK) : 0;
  if ((n < 0 && (errno == EAGAIN || errno == EINTR)) ||
      (n > 0 && (size_t)n < PREFACE_LEN && memcmp(buf, preface, (size_t)n) == 0)) {
    sniff_wait(f, fd); /* nothing yet, or a prefix of the preface: wait for more */
    return;
  }
  f->nsniff--;
  int rc = 0;
  if (n <= 0) /* closed, failed, or silent for the idle timeout */
    close(fd);
  else if (memcmp(buf, preface, (size_t)n) != 0)
    rc = http_accept(f->http, fd);
  else
    serve_h2(f, fd, 0, "a plain listener");
  if (rc < 0) LOG_WARN("HTTP/1.1 connection refused: %s", strerror(-rc));
}

/* Waits for a plain connection's first bytes, for at most the idle timeout: a one-shot
 * event, which libevent frees after its callback (and at event_base_free, if pending). */
static void sniff_wait(front *f, int fd) {
  uint32_t ms = f->cfg->limits.idle_timeout_ms ? f->cfg->limits.idle_timeout_ms : 300000;
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  if (event_base_once(f->base, fd, EV_READ, sniff_cb, f, &tv) != 0) abort();
}

static void on_accept(int fd, listen_sock *l, void *arg) {
  front *f = arg;
  /* Over the limit, a connection is closed as it comes: the descriptors and memory
   * of the ones open, and the runs' own descriptors, stay safe. */
  uint32_t max = f->cfg->limits.max_connections;
  if (call_server_live_conns(f->calls) + front_live_conns(f) >= max) {
    close(fd);
    unsigned long long held;
    if (log_limit_pass(&f->refused_log, REFUSED_LOG_MS, &held))
      LOG_WARN(
          "connection refused: %u connections open, limits.max_connections (%llu more refused "
          "since the last report)",
          (unsigned)max, held);
    return;
  }
  /* TLS connections speak HTTP/2 only (ALPN h2); plain ones are sniffed. */
  if (listen_is_tls(l))
    serve_h2(f, fd, 1, listen_url(l));
  else {
    f->nsniff++;
    sniff_wait(f, fd);
  }
}

/* A listener the configuration's policy does not allow: answered at startup. */
static int check_policy(const config *cfg, const SSL_CTX *tls, const listen_sock *l, char *err,
                        size_t errlen) {
  if (listen_is_tls(l) && !tls) {
    snprintf(err, errlen, "%s needs a tls: section with cert and key", listen_url(l));
    return -EINVAL;
  }
  if (!listen_is_tls(l) && !listen_is_local(l) && !cfg->allow_insecure_remote) {
    snprintf(err, errlen,
             "refusing to listen on %s: plain TCP beyond loopback would let anyone run modules "
             "unauthenticated; listen on tls://, or set allow_insecure_remote: true",
             listen_url(l));
    return -EINVAL;
  }
  return 0;
}

/* Listeners for `urls` under `cfg` and `tls`: those of f with the same address are
 * kept, others opened. On success the new arrays replace f's and the listeners not
 * kept are closed; on failure f is unchanged (the new ones are closed). */
static int open_listeners(front *f, const config *cfg, const SSL_CTX *tls, const char *const *urls,
                          size_t nurls, char *err, size_t errlen) {
  listen_sock **ls = calloc(nurls ? nurls : 1, sizeof *ls);
  char **names = calloc(nurls ? nurls : 1, sizeof *names);
  unsigned char *kept = calloc(f->nlisteners ? f->nlisteners : 1, 1);
  if (!ls || !names || !kept) abort();
  listen_opts lo = LISTEN_OPTS_INIT;
  lo.unix_mode = cfg->unix_mode;
  lo.unix_group = cfg->unix_group;
  int rc = 0;
  size_t i;
  for (i = 0; i < nurls && rc == 0; i++) {
    if (!(names[i] = strdup(urls[i]))) abort();
    size_t j = 0;
    while (j < f->nlisteners && (kept[j] || strcmp(f->urls[j], urls[i]) != 0)) j++;
    if (j < f->nlisteners) {
      kept[j] = 1;
      ls[i] = f->listeners[j];
    } else if ((rc = listen_new(&ls[i], f->base, urls[i], &lo, on_accept, f, err, errlen)) == 0) {
      LOG_INFO("listening on %s", listen_url(ls[i]));
    }
    if (rc == 0) rc = check_policy(cfg, tls, ls[i], err, errlen);
  }
  /* On failure, close what was opened here; on success, what is not kept. */
  for (size_t k = 0; k < i; k++) {
    size_t j = 0;
    while (j < f->nlisteners && f->listeners[j] != ls[k]) j++;
    if (rc < 0 && j == f->nlisteners && ls[k]) listen_free(ls[k]);
  }
  if (rc == 0) {
    for (size_t j = 0; j < f->nlisteners; j++) {
      if (kept[j]) continue;
      LOG_INFO("no longer listening on %s", listen_url(f->listeners[j]));
      listen_free(f->listeners[j]);
    }
    for (size_t j = 0; j < f->nlisteners; j++) free(f->urls[j]);
    free(f->listeners);
    free(f->urls);
    f->listeners = ls;
    f->urls = names;
    f->nlisteners = nurls;
  } else {
    for (size_t k = 0; k < i; k++) free(names[k]);
    free(ls);
    free(names);
  }
  free(kept);
  return rc;
}

int front_new(front **out, struct event_base *base, config *cfg, call_server *calls,
              const char *const *urls, size_t nurls, char *err, size_t errlen) {
  front *f = calloc(1, sizeof *f);
  if (!f) abort();
  f->base = base;
  f->cfg = config_ref(cfg);
  f->calls = calls;
  int rc = 0;
  http_opts ho = HTTP_OPTS_INIT;
  ho.max_body = cfg->limits.max_message_bytes;
  ho.max_headers = cfg->limits.max_header_list_bytes;
  if ((rc = http_new(&f->http, base, calls, &ho)) < 0) goto fail;
  if (cfg->has_tls && (rc = load_tls(&f->tls, &cfg->tls, err, errlen)) < 0) goto fail;
  if ((rc = open_listeners(f, cfg, f->tls, urls, nurls, err, errlen)) < 0) goto fail;
  *out = f;
  return 0;

fail:
  front_free(f);
  return rc;
}

int front_reload(front *f, config *cfg, const char *const *urls, size_t nurls, char *err,
                 size_t errlen) {
  SSL_CTX *fresh = NULL;
  int rc = cfg->has_tls ? load_tls(&fresh, &cfg->tls, err, errlen) : 0;
  if (rc == 0) rc = open_listeners(f, cfg, fresh, urls, nurls, err, errlen);
  if (rc < 0) {
    SSL_CTX_free(fresh);
    return rc;
  }
  /* Each open connection holds its own reference to the context it started with. */
  SSL_CTX_free(f->tls);
  f->tls = fresh;
  config_free(f->cfg);
  f->cfg = config_ref(cfg);
  return 0;
}

size_t front_live_conns(const front *f) { return http_live_conns(f->http) + f->nsniff; }

void front_close(front *f) {
  for (size_t i = 0; i < f->nlisteners; i++) {
    listen_free(f->listeners[i]);
    free(f->urls[i]);
  }
  f->nlisteners = 0;
}

void front_free(front *f) {
  if (!f) return;
  front_close(f);
  http_free(f->http);
  free(f->listeners);
  free(f->urls);
  SSL_CTX_free(f->tls);
  config_free(f->cfg);
  free(f);
}
