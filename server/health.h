/* health: the standard grpc.health.v1.Health service (doc/health-checking.md).
 *
 * Service "" is the server as a whole; the names given to health_new are known too;
 * any other name is NOT_FOUND, for Check and Watch alike (the set of names is fixed,
 * so an unknown name can never become known). Each known name has its own status,
 * SERVING or NOT_SERVING, SERVING from the start; health_set changes it.
 *
 * Check answers the named service's current status. Watch sends it at once, then one
 * message each time it changes, and never the same status twice in a row; the stream
 * stays open until the client cancels it, its deadline passes, the server shuts down
 * (a Watch is a streaming call: a graceful shutdown ends it at once) or the health
 * service is freed. A watcher whose client does not read is sent
 * nothing more while its output is queued, then only the status current when it has
 * drained, if that differs from the last one it was sent: memory stays bounded.
 * Single-threaded: everything runs on the call server's event_base. */
#ifndef PRISMQ_HEALTH_H
#define PRISMQ_HEALTH_H

#include "call.h"

typedef struct health health;

/* Registers Check and Watch on `s`. `services` (NULL-terminated; copied) lists the
 * service names known besides "". Returns 0 and sets *out (free with health_free), or
 * a negative errno from call_server_add: then *out is untouched, and `s` may hold one
 * of the two methods, with a dangling svc: free `s` without serving. */
int health_new(health **out, call_server *s, const char *const *services);

/* Sets the status of `service` (NULL: of every service, "" included) to SERVING if
 * `serving` is non-zero, else NOT_SERVING; a name health does not know is ignored.
 * If the status changed, each of that service's watchers has the new status queued on
 * its call when this returns (or, while its output is held up, once it drains). */
void health_set(health *h, const char *service, int serving);

/* Ends every watcher still open with UNAVAILABLE and frees everything. The call server
 * must not dispatch to this module again: free it after the call server (whose
 * call_server_free or call_server_shutdown cancels the watchers, releasing them here),
 * or free the call server right after this without running its loop in between.
 * Accepts NULL. */
void health_free(health *h);

#endif
