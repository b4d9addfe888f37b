#include "front.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "compat.h"
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
  http *http;       /* HTTP/1.1, on any listener */
  metrics *metrics; /* what /metrics shows, when the configuration has it on */
  size_t nsniff;    /* connections whose protocol is not known yet (first bytes, TLS handshake) */
  struct handshake *handshakes; /* TLS connections in their handshake */
};

static int load_tls(SSL_CTX **out, const config_tls *t, char *err, size_t errlen) {
  tlsctx_server_opts o = {t->cert, t->key, t->client_ca, t->crl, t->require_client_cert};
  return tlsctx_server_new(out, &o, err, errlen);
}

/* Serves HTTP/2 (gRPC) on a transport whose protocol is known. */
static void serve_h2(front *f, conn *cn, const char *url) {
  int rc = call_server_accept(f->calls, cn);
  if (rc < 0) LOG_WARN("connection refused on %s: %s", url, strerror(-rc));
}

/* Serves HTTP/1.1 on a transport whose protocol is known. */
static void serve_http(front *f, conn *cn) {
  int rc = http_accept(f->http, cn);
  if (rc < 0) LOG_WARN("HTTP/1.1 connection refused: %s", strerror(-rc));
}

/* ---- TLS: the protocol is the one ALPN selected ---- */

/* A TLS connection until its handshake is over: in the front's list, so that a front
 * freed meanwhile frees it. */
struct handshake {
  front *f;
  conn *cn;
  struct event *done; /* handshake_done, out of the transport's handler */
  struct handshake *prev, *next;
};

static void handshake_free(struct handshake *hs) {
  front *f = hs->f;
  if (hs->prev)
    hs->prev->next = hs->next;
  else
    f->handshakes = hs->next;
  if (hs->next) hs->next->prev = hs->prev;
  f->nsniff--;
  event_free(hs->done);
  free(hs);
}

/* Out of the transport's handler (conn_free is not allowed in it): gRPC for ALPN h2,
 * HTTP/1.1 for http/1.1 or none, nothing for a failed handshake. */
static void handshake_done(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct handshake *hs = arg;
  front *f = hs->f;
  conn *cn = hs->cn;
  handshake_free(hs);
  if (conn_error(cn)[0]) {
    LOG_DEBUG("%s", conn_error(cn));
    conn_free(cn);
  } else if (strcmp(conn_alpn(cn), "h2") == 0) {
    serve_h2(f, cn, "a TLS listener");
  } else {
    serve_http(f, cn);
  }
}

/* A handler call: the transport may be up (it has a TLS version) or have failed, or
 * the handshake may go on (a call from the conn's own kick). */
static void handshake_fired(conn *cn, void *arg) {
  struct handshake *hs = arg;
  if (!conn_tls_version(cn, NULL) && !conn_error(cn)[0]) return;
  conn_want_read(cn, 0);
  event_active(hs->done, EV_TIMEOUT, 0);
}

static void serve_tls(front *f, int fd, const char *url) {
  conn_tls_opts tls = {f->tls, 1, NULL, f->cfg->tls.handshake_timeout_ms};
  conn *cn = NULL;
  int rc = conn_new_socket(&cn, f->base, fd, &tls);
  if (rc < 0) {
    LOG_WARN("connection refused on %s: %s", url, strerror(-rc));
    return;
  }
  struct handshake *hs = calloc(1, sizeof *hs);
  if (!hs) abort();
  hs->f = f;
  hs->cn = cn;
  hs->done = event_new(f->base, -1, 0, handshake_done, hs);
  if (!hs->done) abort();
  hs->next = f->handshakes;
  if (f->handshakes) f->handshakes->prev = hs;
  f->handshakes = hs;
  f->nsniff++;
  conn_set_handlers(cn, handshake_fired, handshake_fired, hs);
  conn_want_read(cn, 1);
}

/* ---- plain: the protocol is in the first bytes ---- */

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
  if (n <= 0) { /* closed, failed, or silent for the idle timeout */
    close(fd);
    return;
  }
  conn *cn = NULL;
  int rc = conn_new_socket(&cn, f->base, fd, NULL);
  if (rc < 0)
    LOG_WARN("connection refused on a plain listener: %s", strerror(-rc));
  else if (memcmp(buf, preface, (size_t)n) != 0)
    serve_http(f, cn);
  else
    serve_h2(f, cn, "a plain listener");
}

/* Waits for a plain connection's first bytes, for at most the idle timeout: a one-shot
 * event, which libevent frees after its callback (and at event_base_free, if pending). */
static void sniff_wait(front *f, int fd) {
  uint32_t ms = f->cfg->limits.idle_timeout_ms ? f->cfg->limits.idle_timeout_ms : 300000;
  struct timeval tv = compat_timeout_ms(ms);
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
  /* TLS connections say their protocol with ALPN; plain ones in their first bytes. */
  if (listen_is_tls(l))
    serve_tls(f, fd, listen_url(l));
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

/* What the HTTP/1.1 side serves under cfg, with the gRPC side's size limits (a
 * reload's apply to HTTP/1.1 connections accepted after it: http_reconfigure). */
static http_opts http_options(const front *f, const config *cfg) {
  http_opts ho = HTTP_OPTS_INIT;
  ho.max_body = cfg->limits.max_message_bytes;
  ho.max_headers = cfg->limits.max_header_list_bytes;
  ho.timeout_ms = cfg->http.request_timeout_ms;
  ho.ui = cfg->http.ui;
  ho.metrics = cfg->http.metrics ? f->metrics : NULL;
  return ho;
}

int front_new(front **out, struct event_base *base, config *cfg, call_server *calls, metrics *m,
              const char *const *urls, size_t nurls, char *err, size_t errlen) {
  front *f = calloc(1, sizeof *f);
  if (!f) abort();
  f->base = base;
  f->metrics = m;
  f->cfg = config_ref(cfg);
  f->calls = calls;
  int rc = 0;
  http_opts ho = http_options(f, cfg);
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
  http_opts ho = http_options(f, cfg);
  http_reconfigure(f->http, &ho);
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
  while (f->handshakes) {
    conn *cn = f->handshakes->cn;
    handshake_free(f->handshakes);
    conn_free(cn);
  }
  http_free(f->http);
  free(f->listeners);
  free(f->urls);
  SSL_CTX_free(f->tls);
  config_free(f->cfg);
  free(f);
}
