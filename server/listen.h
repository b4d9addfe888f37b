/* listen: the server's listening sockets (TCP and unix), on libevent's
 * evconnlistener. Knows sockets only: each accepted connection is handed to a
 * callback as a non-blocking, close-on-exec descriptor. When accept(2) fails for want
 * of descriptors or memory, the listener pauses for 100 ms (rather than spin on a
 * socket that stays readable) and logs it at most every 10 s. */
#ifndef PRISMQ_LISTEN_H
#define PRISMQ_LISTEN_H

#include <stddef.h>

struct event_base;

typedef struct listen_sock listen_sock;

/* Fires for each accepted connection; the callee owns `fd` (close it or wrap it). */
typedef void (*listen_accept_fn)(int fd, void *arg);

/* Binds and listens on `url`: "tcp://HOST:PORT" (HOST an IPv4 literal, "[v6]" or
 * "localhost"; PORT 0 lets the kernel choose) or "unix:///path" (a stale socket file
 * at path is replaced; any other file there is an error).
 * Returns 0 and sets *out, -EINVAL for a malformed URL (err says why), or a negative
 * errno from socket/bind/listen with err naming the address. err may be NULL. */
int listen_new(listen_sock **out, struct event_base *base, const char *url, listen_accept_fn fn,
               void *arg, char *err, size_t errlen);

/* The bound address as a URL ("tcp://127.0.0.1:50051", the real port when 0 was
 * asked), valid while the listener lives. */
const char *listen_url(const listen_sock *l);

/* Stops listening, closes the socket and removes a unix socket file. Accepts NULL. */
void listen_free(listen_sock *l);

#endif
