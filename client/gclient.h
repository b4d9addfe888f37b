/* gclient: the gRPC client core: calls over one HTTP/2 connection (h2conn, client
 * role) to a prismqd or any gRPC server: h2c with prior knowledge over TCP or a unix
 * socket, or TLS with ALPN h2.
 *
 * Asynchronous on a caller's event_base (gcl_call_start), with blocking helpers that
 * run a private loop (gcl_unary). Library code: every failure, out-of-memory included,
 * is returned, never aborted on. Not thread-safe: one connection belongs to one thread
 * (its event_base). */
#ifndef PRISMQ_GCLIENT_H
#define PRISMQ_GCLIENT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct ssl_ctx_st SSL_CTX;

typedef struct gcl_conn gcl_conn;
typedef struct gcl_call gcl_call;

/* The largest grpc-status-details-bin (decoded) a call keeps; a larger one is ignored.
 * Servers keep theirs to a few KiB (prismqd: 3 KiB; grpcio refuses metadata over 8). */
#define GCL_MAX_STATUS_DETAILS 8192

/* Final status of a call: a gRPC status code (enum gw_status) and its decoded
 * grpc-message. Transport failures map to UNAVAILABLE (cannot connect, connection
 * lost) or INTERNAL (protocol violations), with a message saying what happened.
 * `details`: the server's grpc-status-details-bin, base64-decoded (details_len bytes,
 * meant to be a serialized google.rpc.Status), when it ended the call with a code other
 * than OK and sent one; NULL if not, and for a value that is not base64, is over
 * GCL_MAX_STATUS_DETAILS or found no memory (the status stands without it). */
typedef struct gcl_status {
  int code;
  char message[512];
  const uint8_t *details;
  size_t details_len;
} gcl_status;

typedef struct gcl_conn_opts {
  uint32_t connect_timeout_ms; /* 0 = none; bounds the TLS handshake too */
  size_t max_recv_msg;         /* largest response message accepted */
  /* TLS: a client context (tlsctx_client_new; borrowed, each connection takes its own
   * reference), or NULL for h2c. The server certificate must match server_name, or
   * the target's host when server_name is NULL. */
  SSL_CTX *tls_ctx;
  const char *server_name;
} gcl_conn_opts;

#define GCL_CONN_OPTS_INIT \
  { 10000, 64u << 20, NULL, NULL }

/* Connects to `target`, in gRPC's naming (addr.h): "host:port", "dns:host:port",
 * "ipv4:", "ipv6:", "unix:path", "unix:///abs/path", "unix-abstract:name", or
 * "tls://host:port" (TLS is chosen by opts->tls_ctx, not by the form). A host name is
 * resolved here, with getaddrinfo: that may block the caller on DNS. The connection is
 * made asynchronously on `base` (within
 * opts->connect_timeout_ms); calls may be started at once. If it cannot be made, or
 * once it is lost, every call on it ends UNAVAILABLE with the reason (e.g. "connect to
 * 127.0.0.1:1: Connection refused", "connection closed"); there is no reconnection.
 * `opts` may be NULL for GCL_CONN_OPTS_INIT.
 * Returns 0 and sets *out (caller frees with gcl_conn_free); or -EINVAL for a malformed
 * target or another negative errno for a host that does not resolve, both with `err`
 * (errlen bytes, may be NULL) saying why; -ENOMEM; or a negative errno from socket(2)
 * (e.g. -EAFNOSUPPORT for a unix socket where the system has none), with `err` saying
 * "connect to TARGET: " and why. */
int gcl_conn_new(gcl_conn **out, struct event_base *base, const char *target,
                 const gcl_conn_opts *opts, char *err, size_t errlen);

/* Closes the connection; calls still running end with CANCELLED (their on_done
 * fires before this returns). Accepts NULL. May be called from a call's on_done, not
 * from inside on_msg. */
void gcl_conn_free(gcl_conn *c);

/* Called for each response message (len bytes, valid during the call). Return 0 to
 * go on, non-zero to stop: the call is cancelled on the wire (RST_STREAM CANCEL) and
 * on_done reports CANCELLED. */
typedef int (*gcl_msg_fn)(void *user, const uint8_t *msg, size_t len);

/* Called once when the call ends, with its final status; the call is freed right
 * after it returns, and st->details with it. */
typedef void (*gcl_done_fn)(void *user, const gcl_status *st);

/* Starts a unary or server-streaming call of `path` ("/pkg.Svc/Method") sending the
 * one request message `req` (len bytes, copied). `timeout_ms` 0 = no deadline; else it
 * is sent as grpc-timeout and enforced locally too (DEADLINE_EXCEEDED). `on_msg` may
 * be NULL to ignore response messages. on_msg and on_done run from the connection's
 * event_base loop.
 * Returns 0 (on_done will fire exactly once, never from inside this function; on a
 * failed connection it fires from the loop with UNAVAILABLE) and, if out is not NULL,
 * sets *out to a handle valid until on_done; or -ENOMEM / -EMSGSIZE (request over
 * 4 GiB), in which case no callback fires. */
int gcl_call_start(gcl_call **out, gcl_conn *c, const char *path, const uint8_t *req, size_t len,
                   uint64_t timeout_ms, gcl_msg_fn on_msg, gcl_done_fn on_done, void *user);

/* Cancels a running call: RST_STREAM(CANCEL) goes out and on_done fires later from the
 * loop with CANCELLED (or with the final status the call already had). Valid until
 * on_done, including from inside on_msg. */
void gcl_call_cancel(gcl_call *call);

/* Blocking unary call on a connection whose event_base is not otherwise running: runs
 * the loop until the call ends. On OK sets *resp (malloc'd, caller frees with free();
 * NULL for an empty message) and *resp_len; otherwise leaves them untouched. A
 * response with no message or more than one is INTERNAL; a call that cannot be started
 * (out of memory) is RESOURCE_EXHAUSTED. Returns the status code (0 = OK) and fills
 * *st (which may be NULL), without the details (st->details NULL). */
int gcl_unary(gcl_conn *c, const char *path, const uint8_t *req, size_t len, uint64_t timeout_ms,
              uint8_t **resp, size_t *resp_len, gcl_status *st);

#endif
