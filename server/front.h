/* front: the server's front door. Opens the listeners of the configuration, holds the
 * TLS context of its `tls:` section, and turns each accepted socket into a transport
 * (conn.h: plain, or TLS with its handshake) served by the call layer.
 *
 * Policy at startup: a tls:// listener needs a tls: section; a plain TCP listener on a
 * non-loopback address is refused unless allow_insecure_remote is set (its callers
 * could not be authenticated). Over limits.max_connections, connections are closed as
 * they are accepted. Unix socket files get the configured mode and group.
 *
 * Certificates are re-read by front_reload_tls (prismqd calls it on SIGHUP): new
 * connections use the new ones, open connections keep theirs. */
#ifndef PRISMQ_FRONT_H
#define PRISMQ_FRONT_H

#include <stddef.h>

#include "call.h"
#include "config.h"

struct event_base;

typedef struct front front;

/* Opens every listener of `urls` (nurls addresses, see listen.h) for the call layer
 * `calls`, under `cfg` (its tls, unix_socket, limits and allow_insecure_remote; both
 * must outlive the front). Logs "listening on URL" for each.
 * Returns 0 and sets *out (free with front_free), or, *out untouched, a negative errno
 * with `err` saying why: -EINVAL for a policy or TLS set-up error (files, key mismatch,
 * expired certificate), else the listener's error. */
int front_new(front **out, struct event_base *base, const config *cfg, call_server *calls,
              const char *const *urls, size_t nurls, char *err, size_t errlen);

/* Reloads the TLS certificate, key, client CAs and CRL from the files named by the
 * configuration. On failure the old ones stay in use and -EINVAL is returned with
 * `err` filled. Returns 0 (also when there is no TLS). */
int front_reload_tls(front *f, char *err, size_t errlen);

/* Closes the listeners (open connections are the call layer's). */
void front_close(front *f);

/* Closes the listeners and frees the front. Accepts NULL. */
void front_free(front *f);

#endif
