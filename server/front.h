/* front: the server's front door. Opens the listeners of the configuration, holds the
 * TLS context of its `tls:` section, and turns each accepted socket into a transport
 * (conn.h: plain, or TLS with its handshake) served by the call layer (HTTP/2: gRPC) or
 * the HTTP/1.1 side (http.h): a plain connection's first bytes say which, a TLS one's
 * ALPN.
 *
 * Policy at startup: a tls:// listener needs a tls: section; a plain TCP listener on a
 * non-loopback address is refused unless allow_insecure_remote is set (its callers
 * could not be authenticated). Over limits.max_connections, connections are closed as
 * they are accepted. Unix socket files get the configured mode and group.
 *
 * front_reload (prismqd calls it on SIGHUP) applies a new configuration: certificates
 * are read again (new connections use the new ones, open connections keep theirs),
 * listeners are added and removed, and the http section applies (http_reconfigure). */
#ifndef PRISMQ_FRONT_H
#define PRISMQ_FRONT_H

#include <stddef.h>

#include "call.h"
#include "config.h"

struct event_base;

typedef struct front front;

/* Opens every listener of `urls` (nurls addresses, see listen.h) for the call layer
 * `calls` (which must outlive the front), under `cfg` (its tls, unix_socket, limits,
 * http and allow_insecure_remote; the front takes a reference). HTTP/1.1 connections get
 * /metrics from `m` (NULL: none; must outlive the front) while cfg's http.metrics is on. Logs "listening on URL" for each.
 * Returns 0 and sets *out (free with front_free), or, *out untouched, a negative errno
 * with `err` saying why: -EINVAL for a policy or TLS set-up error (files, key mismatch,
 * expired certificate), else the listener's error. */
int front_new(front **out, struct event_base *base, config *cfg, call_server *calls, metrics *m,
              const char *const *urls, size_t nurls, char *err, size_t errlen);

/* Applies `cfg` (taking a reference, dropping the old one) and the listen addresses
 * `urls`: the TLS certificate, key, client CAs and CRL are loaded from its files,
 * listeners whose address is still listed are kept, others are closed, new ones are
 * opened (a unix socket keeps the mode it was made with). All or nothing: on failure
 * (bad TLS files, a listener that cannot be opened or that the policy refuses) the
 * old state stays and a negative errno is returned with `err` saying why. The http
 * section (page, metrics, request timeout) applies to requests from now on. */
int front_reload(front *f, config *cfg, const char *const *urls, size_t nurls, char *err,
                 size_t errlen);

/* The connections the front holds beside the call layer's: HTTP/1.1 ones, and those
 * whose protocol is not known yet (first bytes awaited, TLS handshake going on). */
size_t front_live_conns(const front *f);

/* Closes the listeners (open connections stay with the call layer and the HTTP/1.1
 * side; TLS handshakes going on, with the front). */
void front_close(front *f);

/* Closes the listeners and frees the front. Accepts NULL. */
void front_free(front *f);

#endif
