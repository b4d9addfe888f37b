/* listen: the server's listening sockets (TCP, unix, unix abstract), on libevent's
 * evconnlistener. Knows sockets only: each accepted connection is handed to a
 * callback as a non-blocking, close-on-exec descriptor. When accept(2) fails for want
 * of descriptors or memory, the listener pauses for 100 ms (rather than spin on a
 * socket that stays readable) and logs it at most every 10 s. */
#ifndef PRISMQ_LISTEN_H
#define PRISMQ_LISTEN_H

#include <stddef.h>

struct event_base;

typedef struct listen_sock listen_sock;

/* Options for listen_new. Initialise with LISTEN_OPTS_INIT. */
typedef struct listen_opts {
  /* Permission bits (at most 07777) of a unix socket file, set before the socket
   * listens, so no one connects through looser ones. Ignored for TCP and abstract
   * sockets (no file). Default 0600: the server's user only. */
  unsigned unix_mode;
  /* NULL, or the group (a name, or a numeric gid) given to a unix socket file, for
   * unix_mode's group bits. Ignored for TCP and abstract sockets. */
  const char *unix_group;
} listen_opts;

#define LISTEN_OPTS_INIT \
  { 0600, NULL }

/* Fires for each accepted connection, from the event loop: `l` is the listener that
 * accepted it (ask it listen_is_tls, listen_is_local). The callee owns `fd` (close it
 * or wrap it). The callback must not free `l`. */
typedef void (*listen_accept_fn)(int fd, listen_sock *l, void *arg);

/* Binds and listens on `url`, any form of addr.h: "tcp://HOST:PORT",
 * "tls://HOST:PORT" (the same socket; listen_is_tls tells the caller to speak TLS on
 * it), "HOST:PORT", "dns:", "ipv4:", "ipv6:", "unix:PATH", "unix:///ABS/PATH" or
 * "unix-abstract:NAME". A port left out is 50051; port 0 lets the kernel choose. A host
 * name is resolved here (startup only: it may block on DNS), taking its first address.
 * A stale socket file at a unix path is replaced; any other file there is an error. The
 * socket file gets opts->unix_mode and opts->unix_group before the socket listens.
 * `opts` may be NULL for LISTEN_OPTS_INIT; `opts->unix_group` is only read during the
 * call. `fn(fd, l, arg)` fires for each connection accepted.
 * Returns 0 and sets *out (free it with listen_free), or, with *out untouched, err
 * (errlen bytes, may be NULL) saying why:
 *   -EINVAL        a malformed URL (addr_parse's reason), a bad unix_mode, an unknown group
 *   -EEXIST        a file that is not a socket at the unix path
 *   -EHOSTUNREACH, -EAGAIN  the host name cannot be resolved
 *   another negative errno from socket/bind/chmod/chown/listen (e.g. -EADDRINUSE),
 *                  err naming the address. */
int listen_new(listen_sock **out, struct event_base *base, const char *url, const listen_opts *opts,
               listen_accept_fn fn, void *arg, char *err, size_t errlen);

/* The bound address as a URL, valid while the listener lives: "tcp://127.0.0.1:50051"
 * (the real port when 0 was asked; "tcp://[::1]:50051" for IPv6), "tls://IP:PORT",
 * "unix:///abs/path" (a relative path made absolute against the working directory at
 * listen_new), or "unix-abstract:NAME". */
const char *listen_url(const listen_sock *l);

/* Non-zero when the URL was tls://: connections accepted here are to speak TLS. */
int listen_is_tls(const listen_sock *l);

/* Non-zero when the socket is bound to a loopback address (127.0.0.0/8, ::1) or is a
 * unix socket: only this machine can connect. Zero for a wildcard or another address. */
int listen_is_local(const listen_sock *l);

/* Stops listening, closes the socket and removes a unix socket file. Accepts NULL. */
void listen_free(listen_sock *l);

#endif
