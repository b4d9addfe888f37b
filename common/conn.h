/* conn: the byte-stream transport under an HTTP/2 connection, one small table of
 * operations per kind, the way redis's connection.h hides TCP, TLS and unix sockets:
 *
 *   socket  a TCP or unix stream socket: readv(2) in, writev(2) and sendfile(2) out (file
 *           chains of the output go out without a copy);
 *   tls     TLS (OpenSSL) over a TCP or unix socket: SSL_read/SSL_write; file chains must
 *           be mapped (conn_can_sendfile is 0; this kernel has no kTLS);
 *   bev     an adapter over a libevent bufferevent (in-memory pairs in tests, or any other
 *           bufferevent).
 *
 * The user never touches the descriptor: it reads and writes bytes, and is told by its
 * handlers when it can go on. Connecting and the TLS handshake happen inside the conn:
 * until the transport is up, reads and writes return -EAGAIN and the handlers fire
 * once it is (or once it has failed; the next read then returns the error and
 * conn_error() says why). So a user may queue output before the peer is reached.
 *
 * Handlers: on_read fires while reading is wanted (conn_want_read) and input may be
 * there; on_write fires once after conn_want_write, when the transport takes output
 * again. Either may fire for a transport that failed. They never fire from inside a
 * conn_* call. TLS may need to write to read, or read to write; the conn arms what it
 * needs and calls the handler that waits.
 *
 * Threading: one conn lives on one event_base thread. Library code: failures are
 * returned, out of memory included. */
#ifndef PRISMQ_CONN_H
#define PRISMQ_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "compat.h"

struct bufferevent;
struct event_base;
struct evbuffer;
typedef struct ssl_ctx_st SSL_CTX;

typedef struct conn conn;

enum conn_kind { CONN_SOCKET = 0, CONN_TLS = 1, CONN_BEV = 2 };

typedef void (*conn_fn)(conn *c, void *arg);

/* Who is at the other end, known once the transport is up (after the TLS handshake). */
typedef struct conn_peer {
  char addr[64]; /* "127.0.0.1:5555", "[::1]:5555", "unix", "memory" */
  /* The authenticated identity, "" if none: for a verified TLS client certificate its
   * first URI SAN, else its first DNS SAN, else its subject CN; on a unix socket
   * "unix:" and the peer's user name (or "unix:uid:N" for a uid without a name; none
   * on Windows, which does not tell a unix socket's peer: compat_sock_peer_user). */
  char identity[256];
  int local; /* a loopback address or a unix socket (or an in-memory pair) */
  long uid;  /* the peer's uid on a unix socket (compat_sock_peer_user), else -1 */
} conn_peer;

/* TLS set-up of one connection: `ctx` gives certificates and verification (see tlsctx.h;
 * the conn takes its own reference). Client role: `server_name` is sent as SNI (unless
 * it is an IP literal) and the server certificate must match it (host name or IP). */
typedef struct conn_tls_opts {
  SSL_CTX *ctx;
  int server;                    /* non-zero: accept, else connect */
  const char *server_name;       /* client role: the name to verify; NULL: none checked */
  uint32_t handshake_timeout_ms; /* 0 = none */
} conn_tls_opts;

/* Wraps an accepted or connected stream socket `fd` (TCP or unix), made non-blocking
 * here if it is not; with `tls` (may be NULL) the socket carries TLS, whose handshake starts at
 * once. Takes ownership of fd, also on failure.
 * Returns 0 and sets *out (free with conn_free), or -ENOMEM / -EINVAL (TLS set-up). */
int conn_new_socket(conn **out, struct event_base *base, evutil_socket_t fd,
                    const conn_tls_opts *tls);

/* Starts connecting a new stream socket to `sa` (non-blocking; TLS on top with `tls`).
 * `name` (copied) names the target in error messages ("connect to NAME: ..."). The
 * connect is bounded by connect_timeout_ms (0: none), the handshake by the TLS one.
 * Returns 0 and sets *out, or a negative errno from socket(2) / -ENOMEM. A connect that
 * fails later is reported through the handlers. */
int conn_connect(conn **out, struct event_base *base, const struct sockaddr *sa, socklen_t salen,
                 const char *name, uint32_t connect_timeout_ms, const conn_tls_opts *tls);

/* Adapts a bufferevent (owned by the conn from now on, also on failure). Its output is
 * kept under 64 KiB: over that, conn_write leaves the rest with the caller.
 * Returns 0 and sets *out, or -ENOMEM. */
int conn_new_bufferevent(conn **out, struct bufferevent *bev);

/* Closes the transport (no TLS close_notify wait) and frees it. Accepts NULL. Must
 * not be called from inside this conn's own handlers (mark, free later). */
void conn_free(conn *c);

/* Sets the handlers and their argument (replacing earlier ones). */
void conn_set_handlers(conn *c, conn_fn on_read, conn_fn on_write, void *arg);

/* Turns reading on (non-zero) or off: on_read fires while on and input may be there. */
void conn_want_read(conn *c, int on);

/* Asks for one on_write call when the transport can take output again (at once, from
 * the loop, when nothing is pending). */
void conn_want_write(conn *c);

/* Reads up to len bytes. Returns the count (> 0), 0 at the end of the stream, -EAGAIN
 * when nothing is there now (on_read fires again when there is), or another negative
 * errno when the transport has failed (conn_error says why). A plain socket whose write
 * failed because the peer had closed (EPIPE) still gives what the peer sent before it
 * closed, then the end of the stream (or its error). */
ssize_t conn_read(conn *c, void *buf, size_t len);

/* Writes as much of `out` as the transport takes now and drains that from `out`.
 * Returns 0 (what is left in `out` waits: ask conn_want_write), or a negative errno
 * when the transport has failed (conn_error says why). Before the transport is up it
 * writes nothing and returns 0. */
int conn_write(conn *c, struct evbuffer *out);

/* Ends the sending direction of a plain socket (shutdown SHUT_WR: the peer reads the
 * end of the stream), which may still be read. Other kinds: nothing. For a lingering
 * close: say "no more", read what the peer still sends, then free. */
void conn_shutdown_write(conn *c);

/* Bytes the transport has taken from conn_write but not yet handed to the kernel
 * (TLS ciphertext, a bufferevent's output). They go out on their own; a user that
 * closes once its output is gone waits for on_write while this is not 0. */
size_t conn_pending(const conn *c);

/* Non-zero if file chains in an output buffer may stay unmapped (sendfile): set
 * EVBUFFER_FLAG_DRAINS_TO_FD on such a buffer only then. */
int conn_can_sendfile(const conn *c);

/* The event_base the transport runs on. */
struct event_base *conn_base(const conn *c);

/* The kind of transport. */
enum conn_kind conn_kind(const conn *c);

/* The peer (valid until conn_free; filled once the transport is up). */
const conn_peer *conn_get_peer(const conn *c);

/* Why the transport failed ("" while it has not): e.g. "connect to 127.0.0.1:1:
 * Connection refused", "TLS handshake with 127.0.0.1:5555 failed: certificate verify
 * failed". */
const char *conn_error(const conn *c);

/* The protocol ALPN selected for a TLS transport that is up: "h2" or "http/1.1" (the
 * ones tlsctx offers), or "" (none, another kind, or not up yet). Static strings. */
const char *conn_alpn(const conn *c);

/* The TLS protocol version in use ("TLSv1.3") and whether the session was resumed;
 * NULL and 0 for other kinds or before the handshake. */
const char *conn_tls_version(const conn *c, int *resumed);

#endif
