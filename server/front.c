#include "front.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "conn.h"
#include "listen.h"
#include "log.h"
#include "tlsctx.h"

/* At most one line per this many ms about refused connections. */
#define REFUSED_LOG_MS 10000

struct front {
  struct event_base *base;
  const config *cfg;
  call_server *calls;
  SSL_CTX *tls; /* NULL without a tls: section */
  listen_sock **listeners;
  size_t nlisteners;
  log_limit refused_log;
};

static int load_tls(SSL_CTX **out, const config_tls *t, char *err, size_t errlen) {
  tlsctx_server_opts o = {t->cert, t->key, t->client_ca, t->crl, t->require_client_cert};
  return tlsctx_server_new(out, &o, err, errlen);
}

static void on_accept(int fd, listen_sock *l, void *arg) {
  front *f = arg;
  /* Over the limit, a connection is closed as it comes: the descriptors and memory
   * of the ones open, and the runs' own descriptors, stay safe. */
  uint32_t max = f->cfg->limits.max_connections;
  if (call_server_live_conns(f->calls) >= max) {
    close(fd);
    unsigned long long held;
    if (log_limit_pass(&f->refused_log, REFUSED_LOG_MS, &held))
      LOG_WARN("connection refused: %u connections open, limits.max_connections (%llu more refused "
               "since the last report)", (unsigned)max, held);
    return;
  }
  conn_tls_opts tls = {f->tls, 1, NULL, f->cfg->tls.handshake_timeout_ms};
  conn *cn = NULL;
  int rc = conn_new_socket(&cn, f->base, fd, listen_is_tls(l) ? &tls : NULL);
  if (rc == 0) rc = call_server_accept(f->calls, cn);
  if (rc < 0) LOG_WARN("connection refused on %s: %s", listen_url(l), strerror(-rc));
}

/* A listener the configuration's policy does not allow: answered at startup. */
static int check_policy(const front *f, const listen_sock *l, char *err, size_t errlen) {
  if (listen_is_tls(l) && !f->tls) {
    snprintf(err, errlen, "%s needs a tls: section with cert and key", listen_url(l));
    return -EINVAL;
  }
  if (!listen_is_tls(l) && !listen_is_local(l) && !f->cfg->allow_insecure_remote) {
    snprintf(err, errlen,
             "refusing to listen on %s: plain TCP beyond loopback would let anyone run modules "
             "unauthenticated; listen on tls://, or set allow_insecure_remote: true",
             listen_url(l));
    return -EINVAL;
  }
  return 0;
}

int front_new(front **out, struct event_base *base, const config *cfg, call_server *calls,
              const char *const *urls, size_t nurls, char *err, size_t errlen) {
  front *f = calloc(1, sizeof *f);
  if (!f) abort();
  f->base = base;
  f->cfg = cfg;
  f->calls = calls;
  f->listeners = calloc(nurls ? nurls : 1, sizeof *f->listeners);
  if (!f->listeners) abort();
  int rc = 0;
  if (cfg->has_tls && (rc = load_tls(&f->tls, &cfg->tls, err, errlen)) < 0) goto fail;
  listen_opts lo = LISTEN_OPTS_INIT;
  lo.unix_mode = cfg->unix_mode;
  lo.unix_group = cfg->unix_group;
  for (size_t i = 0; i < nurls; i++) {
    if ((rc = listen_new(&f->listeners[i], base, urls[i], &lo, on_accept, f, err, errlen)) < 0) goto fail;
    f->nlisteners++;
    if ((rc = check_policy(f, f->listeners[i], err, errlen)) < 0) goto fail;
    LOG_INFO("listening on %s", listen_url(f->listeners[i]));
  }
  *out = f;
  return 0;

fail:
  front_free(f);
  return rc;
}

int front_reload_tls(front *f, char *err, size_t errlen) {
  if (!f->tls) return 0;
  SSL_CTX *fresh = NULL;
  int rc = load_tls(&fresh, &f->cfg->tls, err, errlen);
  if (rc < 0) return rc;
  /* Each open connection holds its own reference to the context it started with. */
  SSL_CTX_free(f->tls);
  f->tls = fresh;
  return 0;
}

void front_close(front *f) {
  for (size_t i = 0; i < f->nlisteners; i++) listen_free(f->listeners[i]);
  f->nlisteners = 0;
}

void front_free(front *f) {
  if (!f) return;
  front_close(f);
  free(f->listeners);
  SSL_CTX_free(f->tls);
  free(f);
}
