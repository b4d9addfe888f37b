/* http: prismqd's HTTP/1.1 + JSON front, beside gRPC on the same listeners: the front
 * (front.c) hands it the plain connections whose first bytes are not the HTTP/2
 * preface. libevent's evhttp parses HTTP/1.1; each route is made a unary call of the
 * Runner or Health service through call_server_invoke, so that the same authorization
 * (roles from the peer's identity and local-ness), checks, ownership rules and answers
 * apply as over gRPC. Answers are JSON in the proto3 mapping (common/pbjson); errors
 * are {"code", "message", "details"} with the HTTP status that gRPC's mapping gives
 * (google/rpc/code.proto). Routes (docs/http.md):
 *   GET  /healthz                      200 when serving, else 503
 *   GET  /v1/modules
 *   GET  /v1/runs?status=&module_id=&label=K=V&page_size=&page_token=
 *   GET  /v1/runs/{id}
 *   POST /v1/runs/{id}:cancel?grace_ms=
 *   GET  /v1/runs/{id}:wait?timeout_ms=
 *   POST /v1/runs                      body: StartRunRequest as JSON
 *   GET  /v1/presets?module_id=&page_size=&page_token=
 *   POST /v1/presets                   body: SavePresetRequest as JSON
 *   DELETE /v1/presets/{module}/{name}
 *   GET  /metrics                      Prometheus text format (http_opts.metrics)
 *   GET  / and /NAME                   the web page's files (ui.h; http_opts.ui)
 * Bounded: a request's headers and body (http_opts), a slow request (timeout), and
 * the connections (http_live_conns, counted by the front against
 * limits.max_connections). Single-threaded, on the server's event_base. */
#ifndef PRISMQ_HTTP_H
#define PRISMQ_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "call.h"
#include "metrics.h"

struct event_base;

typedef struct http http;

/* Options for http_new. Initialise with HTTP_OPTS_INIT. */
typedef struct http_opts {
  size_t max_body;    /* a request's body; larger is answered 413 (default 4 MiB) */
  size_t max_headers; /* a request's header lines together (default 16 KiB) */
  /* A request must have come in whole within this, and an idle keep-alive connection
   * is closed after it (default 30000 ms). */
  uint32_t timeout_ms;
  int ui; /* non-zero: the web page at / (default 1) */
  /* GET /metrics renders it (metrics.h) for a caller with the role read_all; NULL: no
   * such route (default). Must outlive the http. */
  metrics *metrics;
} http_opts;

#define HTTP_OPTS_INIT \
  { 4u << 20, 16u << 10, 30000, 1, NULL }

/* Creates the front for calls on `calls` (which must outlive it) on `base`. `opts`
 * may be NULL for HTTP_OPTS_INIT. Returns 0 and sets *out (free with http_free), or
 * -ENOMEM with *out untouched. */
int http_new(http **out, struct event_base *base, call_server *calls, const http_opts *opts);

/* Applies `opts` from now on (a reloaded configuration): the page and the metrics to
 * every request that begins later; the size limits and the timeout to connections
 * accepted later (evhttp copies them into each connection it accepts). */
void http_reconfigure(http *h, const http_opts *opts);

/* Serves HTTP/1.1 on the client's transport `outer` (a socket, or TLS whose handshake
 * is over: its peer is the one requests are authorized as), which h owns from now on,
 * also on failure (freed). Returns 0, or a negative errno when the relay to evhttp
 * could not be made (socket, bind or connect failed, e.g. -EMFILE). */
int http_accept(http *h, conn *outer);

/* The HTTP/1.1 connections open now. */
size_t http_live_conns(const http *h);

/* Closes every connection (their calls are dropped: the handlers' on_cancel fires)
 * and frees the front. Accepts NULL. */
void http_free(http *h);

#endif
