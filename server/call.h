/* call: the gRPC call layer of the server, between h2conn (streams and bytes) and
 * the handlers (messages and statuses).
 *
 * A call_server holds the method table and the connections. For each request stream
 * it checks the gRPC request headers, arms the grpc-timeout deadline, reassembles the
 * single request message (refusing oversized, compressed or malformed input with the
 * right status), then calls the method's handler with it. A method registered with
 * call_server_add_stream (client streaming, bidirectional) starts at the request headers
 * instead and is handed each request message as it arrives (call_on_input). The handler
 * answers through the call API only: call_send for each response message, call_finish
 * for the status.
 *
 * Lifetime: a call belongs to its handler from the handler call until call_finish, or
 * until the call is cancelled (client reset, deadline, connection loss, shutdown): then
 * the on_cancel callback fires and the handler must drop its pointer, the layer ends
 * the call itself. After call_finish or on_cancel the handler must not touch the call.
 *
 * Context: a handler sees who calls (call_peer: address, identity), the request's
 * metadata (call_metadata), its deadline and the roles the caller holds (call_roles).
 *
 * Authorization is one check here, before any handler runs and before the request body
 * is read: opts.roles gives the caller's role bits (any meaning the server gives them),
 * and a method registered with `need` runs only for a caller holding one of those bits;
 * any other caller is answered PERMISSION_DENIED naming the roles it lacks.
 * Single-threaded: everything runs on the server's event_base. */
#ifndef PRISMQ_CALL_H
#define PRISMQ_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "conn.h"

struct evbuffer;
struct evbuffer_file_segment;
struct event_base;
struct ProtobufCMessage;

typedef struct call call;
typedef struct call_server call_server;
typedef struct metrics metrics;

/* A method handler: the request message (len bytes, not yet decoded; valid only
 * during the call) has arrived for `path`. `svc` is the pointer given to
 * call_server_add. The handler owns `c` until it calls call_finish. */
typedef void (*call_handler_fn)(call *c, const uint8_t *req, size_t len, void *svc);

typedef struct call_server_opts {
  size_t max_recv_msg;      /* largest request message accepted (default 4 MiB); a
                             * connection buffers at most 16 MiB of requests in all, or
                             * one such message if that is more */
  uint32_t max_streams;     /* streams one connection may have open (default 100) */
  uint32_t max_header_list; /* header bytes of one request, as HTTP/2 counts them (16 KiB) */
  /* A connection with no stream open this long is shut down (GOAWAY), and a stream
   * whose request headers have not all come in by then is reset; 0: never (default
   * 300000). Checked every second (every quarter of the timeout if shorter), so it may take
   * that much longer. */
  uint32_t idle_timeout_ms;
  size_t stream_low_water; /* streaming: on_writable fires when queued output is below */
  /* Called before a connection sends what its calls have queued (NULL: nothing): the
   * server makes durable there what answers may tell (prismqd commits its run table).
   * Returns 0, or a negative errno if it could not: the connection is then closed
   * unsent (its calls are cancelled), so that no answer tells what a crash could undo. */
  int (*before_send)(void *arg);
  void *before_send_arg;
  /* The role bits `peer` holds, asked once per call (NULL: every caller holds all). */
  unsigned (*roles)(void *arg, const conn_peer *peer);
  void *roles_arg;
  /* The name of one role bit, for PERMISSION_DENIED messages (NULL: the bit's value). */
  const char *(*role_name)(unsigned bit);
  /* Where calls are counted (NULL: nowhere; must outlive the server): by method,
   * grpc_server_started_total, grpc_server_handled_total (and status code) and
   * grpc_server_handling_seconds, from the stream's opening to the status; calls of no
   * registered method count as grpc_service and grpc_method "unknown", a call the client
   * resets as Canceled; codes by Go's names (NotFound). Calls made with
   * call_server_invoke (the HTTP/1.1 routes) count too. */
  metrics *metrics;
} call_server_opts;

#define CALL_SERVER_OPTS_INIT \
  { 4u << 20, 100, 16u << 10, 300000, 64u << 10, NULL, NULL, NULL, NULL, NULL, NULL }

/* Creates the server layer on `base`. Returns 0 and sets *out, or -ENOMEM. */
int call_server_new(call_server **out, struct event_base *base, const call_server_opts *opts);

/* Frees everything: connections are dropped (calls cancelled). Accepts NULL. */
void call_server_free(call_server *s);

/* Registers `fn` for `path` ("/pkg.Service/Method"; copied). Only a caller holding one
 * of the role bits of `need` may call it (0: anyone, even without any role). Call before
 * serving. Returns 0, -EEXIST (path taken) or -ENOMEM. */
int call_server_add(call_server *s, const char *path, call_handler_fn fn, void *svc, unsigned need);

/* A handler of streamed requests (client streaming or bidirectional): the request
 * headers of a call to `path` are in and the caller is authorized, no request message
 * has been handed over yet. `svc` is the pointer given to call_server_add_stream. The
 * handler owns `c` until it calls call_finish, as a call_handler_fn does, and calls
 * call_on_input to be handed the request messages. */
typedef void (*call_stream_fn)(call *c, void *svc);

/* Registers `fn` for `path` as call_server_add does, for a method whose client sends
 * any number of request messages on the stream. Returns 0, -EEXIST (path taken) or
 * -ENOMEM. */
int call_server_add_stream(call_server *s, const char *path, call_stream_fn fn, void *svc,
                           unsigned need);

/* Looks up a method by path (not NUL-terminated). Returns its handler or NULL (none,
 * or a call_server_add_stream method); *svc_out receives its svc pointer. Exposed for
 * tests of the dispatch table. */
call_handler_fn call_server_lookup(const call_server *s, const char *path, size_t len,
                                   void **svc_out);

/* Makes durable what an answer may tell (opts.before_send), for a front-end that
 * answers something other than a call (the metrics). Returns 0, or the hook's negative
 * errno: then answer that the server is unavailable. */
int call_server_commit(call_server *s);

/* The role bits `peer` holds (opts.roles; all when there is none), for a front-end
 * that authorizes something other than a call. */
unsigned call_server_roles(const call_server *s, const conn_peer *peer);

/* Serves HTTP/2 on a transport (a socket, TLS still in its handshake, an adapted
 * bufferevent), which the server owns from now on, also on failure. Returns 0,
 * -ECONNREFUSED after call_server_shutdown, or -ENOMEM/-EPROTO. */
int call_server_accept(call_server *s, conn *cn);

/* Graceful shutdown: GOAWAY on every connection (the streams the client opens after it
 * are refused), and no new connection is taken. Streaming calls (call_set_streaming)
 * are cancelled and answered UNAVAILABLE at once; other calls in their handlers may
 * finish for drain_ms, then the rest are treated the same way (drain_ms 0: all at
 * once). `on_idle` fires (once, from the loop) when the last connection has closed,
 * which may be at once. */
void call_server_shutdown(call_server *s, uint32_t drain_ms, void (*on_idle)(void *arg), void *arg);

/* The receiver of the answer of a call made with call_server_invoke, for a front-end
 * that is not gRPC over HTTP/2 (prismqd's HTTP/1.1). Every callback gets the `arg`
 * given to call_server_invoke and fires from the handler's call_* calls or the layer. */
typedef struct call_sink {
  /* A response message (call_send); valid during the callback only. */
  void (*message)(void *arg, const struct ProtobufCMessage *msg);
  /* Output in wire form (call_send_framed, call_send_file): whole framed messages
   * (5-byte prefix + body each). The sink takes every byte (moves or drains them). */
  void (*framed)(void *arg, struct evbuffer *framed);
  /* Non-zero while the sink's queued output is below its low-water mark
   * (call_writable); the sink calls call_sink_drained when it gets there again. */
  int (*writable)(void *arg);
  /* The call has ended with `status` (enum gw_status) and `msg` (plain text, maybe
   * ""), and for call_finish_details `details` (dlen bytes, a serialized
   * google.rpc.Status; else NULL): fires once, unless call_drop came first. The call
   * is the layer's from then on (freed later from the loop): forget the pointer. */
  void (*finish)(void *arg, int status, const char *msg, const uint8_t *details, size_t dlen);
} call_sink;

/* Calls the unary method `path` ("/pkg.Service/Method", NUL-terminated) with the
 * encoded request `req` (len bytes, read during this call only) for the caller `peer`
 * (copied; its identity and local-ness give the roles as for a connection's calls),
 * answering through `sink` (must outlive the call) with `arg`. The same authorization
 * check applies; a call made during a shutdown is answered UNAVAILABLE. The handler
 * runs at once, from inside this function, so the sink may fire before it returns:
 * *out is set first. The call then lives until sink->finish, or call_drop. Returns 0,
 * or -ENOENT for no such unary method (*out untouched). */
int call_server_invoke(call **out, call_server *s, const char *path, const uint8_t *req, size_t len,
                       const conn_peer *peer, const call_sink *sink, void *arg);

/* An invoked call's sink has sent its queued output: the handler's call_on_writable
 * callback fires (if the call is still the handler's). */
void call_sink_drained(call *c);

/* The invoker of `c` no longer wants its answer (its client went away): the handler's
 * on_cancel fires if it still holds the call, and the sink hears nothing more. The call
 * is freed later, from the loop. Not from inside the sink's own callbacks. */
void call_drop(call *c);

/* Counters for introspection. */
size_t call_server_live_calls(const call_server *s);
size_t call_server_live_conns(const call_server *s);
uint64_t call_server_total_calls(const call_server *s);

/* Marks the call as one that streams until its client or the server ends it (an output
 * follow, a health Watch): a graceful shutdown ends it at once with UNAVAILABLE rather
 * than waiting for it to finish. */
void call_set_streaming(call *c);

/* Sets the handler's cancel callback: fires at most once, if the call ends before
 * call_finish (client reset, deadline, connection loss, shutdown). `arg` is passed
 * back. The call is gone once it returns. */
void call_on_cancel(call *c, void (*fn)(call *c, void *arg), void *arg);

/* Streaming: sets a callback that fires whenever the queued output has all gone to
 * the connection, so the handler can send more. A handler that sends only while
 * call_writable() is true keeps memory bounded however slow the client reads. */
void call_on_writable(call *c, void (*fn)(call *c, void *arg), void *arg);

/* True while the queued output is below the low-water mark. */
int call_writable(const call *c);

/* Streamed requests (call_server_add_stream): sets the callbacks that are handed the
 * request messages. on_message fires for each message once it is whole, in order
 * (`msg`, `len` bytes, not yet decoded, valid during the callback only; NULL when len
 * is 0); on_end (may be NULL) fires once after the last, when the client has ended
 * its side. Both fire from the server's loop, never from inside this function, and
 * only while the call is writable: the messages of a client that does not read the
 * answers wait in the layer, up to the connection's bound on buffered requests (see
 * call_server_opts.max_recv_msg), beyond which the call ends with RESOURCE_EXHAUSTED.
 * A message the layer refuses (too large, compressed, bad framing) or a stream that
 * ends inside one ends the call with its status, as for a unary call: on_cancel
 * fires. `arg` is passed back. */
void call_on_input(call *c, void (*on_message)(call *c, const uint8_t *msg, size_t len, void *arg),
                   void (*on_end)(call *c, void *arg), void *arg);

/* Sends one response message (response headers go first, once). Returns 0, or
 * -ENOMEM. Messages queue; call_writable tells when to stop. */
int call_send(call *c, const struct ProtobufCMessage *msg);

/* Queues messages that are already framed (5-byte prefix + body each), moving all of
 * `framed`'s bytes without copying: for output stored in wire form. Returns 0. */
int call_send_framed(call *c, struct evbuffer *framed);

/* Queues `len` bytes (at most the segment's) of already framed messages from a file
 * segment, sent without copying (sendfile on a socket). Takes ownership of `seg`, also
 * on failure. Returns 0; -EINVAL once the call has finished; -EIO if the file could not
 * be mapped (not on a socket): nothing was queued. */
int call_send_file(call *c, struct evbuffer_file_segment *seg, size_t len);

/* Non-zero if call_send_file sends file bytes as they are (sendfile on a plain
 * socket); zero where it would map them (TLS, in-memory transports), and copying a
 * batch into memory is cheaper. */
int call_sends_files(const call *c);

/* Ends the call with `status` (enum gw_status) and a printf-style message (may be
 * NULL), sent percent-encoded in grpc-message. Nothing sent yet and status non-zero
 * gives a trailers-only answer. The call is the layer's from now on. */
void call_finish(call *c, int status, const char *fmt, ...) COMPAT_PRINTF(3, 4);

/* As call_finish, with rich error details: `details` (len bytes, a serialized
 * google.rpc.Status whose code and message agree with status and the message; the
 * caller's, read during the call) goes in the grpc-status-details-bin trailer, which
 * gRPC clients decode (grpcio-status's rpc_status.from_call, grpc-go's status). Keep it
 * to a few KiB: clients bound their metadata (grpcio: 8 KiB by default). */
void call_finish_details(call *c, int status, const uint8_t *details, size_t len, const char *fmt,
                         ...) COMPAT_PRINTF(5, 6);

/* Who calls: the peer's address and identity (valid during the call). */
const conn_peer *call_peer(const call *c);

/* The role bits the caller holds (from call_server_opts.roles). */
unsigned call_roles(const call *c);

/* The value of request metadata `name` (a header other than the pseudo-headers; give it
 * in lower case), or NULL if the request has none; with several, the first. *len (may
 * be NULL) receives its length; the value is NUL-terminated and valid during the call. */
const char *call_metadata(const call *c, const char *name, size_t *len);

/* Walks the request metadata in order: pass *pos = 0 first. Returns 1 and sets *name
 * and *value (NUL-terminated, valid during the call), or 0 after the last. */
int call_metadata_next(const call *c, size_t *pos, const char **name, const char **value);

/* Milliseconds left until the call's deadline, or UINT64_MAX for none. */
uint64_t call_deadline_left_ms(const call *c);

/* The event_base the call runs on (for the handler's own timers). */
struct event_base *call_base(const call *c);

#endif
