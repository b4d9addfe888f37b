/* h2conn: one HTTP/2 connection over a transport (conn.h: a socket, TLS, or an adapted
 * bufferevent), on nghttp2.
 *
 * It knows bytes and streams, not RPCs: it moves header fields, DATA bytes and
 * trailers between the transport and its user, enforces HTTP/2 limits (header list size,
 * concurrent streams, Rapid Reset and CONTINUATION floods) and applies backpressure
 * both ways. The same code serves the server role (streams are opened by the peer) and
 * the client role (streams are opened with h2conn_submit_request).
 *
 * Threading: one h2conn lives on one event_base thread; no function here is
 * thread-safe.
 *
 * Re-entrancy: functions called by the user never run nghttp2 synchronously; output is
 * flushed from a deferred event. So callbacks never fire from inside an h2conn_*
 * call, and a callback may call any h2conn_* function except h2conn_free.
 *
 * Output bodies: every stream has an output evbuffer (h2conn_stream_output). The user
 * appends bytes to it and calls h2conn_stream_resume, or queues file ranges
 * (h2conn_stream_add_file); h2conn moves them to the transport without copying as the
 * flow-control windows allow, and calls on_drain when the output has emptied so that a
 * producer can add more: that bounds what a slow peer can make us hold. DATA frames
 * of file output are as large as the peer's SETTINGS_MAX_FRAME_SIZE allows, up to
 * 128 KiB (we advertise that size too); memory output goes in 16 KiB frames. */
#ifndef PRISMQ_H2CONN_H
#define PRISMQ_H2CONN_H

#include <stddef.h>
#include <stdint.h>
#include <nghttp2/nghttp2.h>

#include "conn.h"

struct evbuffer;
struct evbuffer_file_segment;

typedef struct h2conn h2conn;

enum h2conn_role { H2CONN_SERVER = 0, H2CONN_CLIENT = 1 };

typedef struct h2conn_callbacks {
  /* Server role: the peer opened stream `sid`. Return the stream's user pointer (may
   * be NULL), which every later callback for the stream receives. */
  void *(*on_stream_open)(h2conn *c, int32_t sid, void *conn_user);
  /* One header field of the stream's request headers, response headers or trailers
   * (`trailer` is 1 for a trailing HEADERS frame). Return 0, or -1 to reset the stream
   * with INTERNAL_ERROR. */
  int (*on_header)(h2conn *c, int32_t sid, void *stream_user, const uint8_t *name, size_t namelen,
                   const uint8_t *value, size_t valuelen, int trailer);
  /* A HEADERS block was complete (after its on_header calls). `end_stream` says the
   * peer also ended its side with it. */
  void (*on_headers_done)(h2conn *c, int32_t sid, void *stream_user, int trailer, int end_stream);
  /* DATA bytes of the stream (in order, any split). */
  void (*on_data)(h2conn *c, int32_t sid, void *stream_user, const uint8_t *data, size_t len);
  /* The peer ended its side of the stream (END_STREAM on DATA; END_STREAM on HEADERS
   * is reported by on_headers_done instead). */
  void (*on_remote_end)(h2conn *c, int32_t sid, void *stream_user);
  /* The stream's output buffer has been sent to the transport and is empty again. */
  void (*on_drain)(h2conn *c, int32_t sid, void *stream_user);
  /* The stream is closed (`error_code` 0 for a clean close, else the HTTP/2 error from
   * RST_STREAM, or NGHTTP2_CANCEL when the connection went away). Fires exactly once
   * per opened stream, including streams still open when the connection ends. After
   * it returns, `sid` is invalid and the user may free stream_user. */
  void (*on_stream_close)(h2conn *c, int32_t sid, void *stream_user, uint32_t error_code);
  /* The connection has ended and every stream has been closed; h2conn frees itself
   * right after this returns. */
  void (*on_conn_close)(h2conn *c, void *conn_user);
  /* About to turn what the streams queued into frames for the peer (each round of
   * sending): the last moment to make durable what those frames may tell the peer.
   * Return 0, or -1 if that failed: nothing more is sent and the connection is closed
   * (as after h2conn_close). */
  int (*on_send)(h2conn *c, void *conn_user);
} h2conn_callbacks;

typedef struct h2conn_opts {
  uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS we advertise */
  uint32_t initial_window_size;    /* per-stream receive window */
  uint32_t connection_window_size; /* connection receive window */
  uint32_t max_header_list_size;   /* header bytes per block we accept (name+value+32 each) */
  size_t out_high_water;           /* output bytes above which we stop framing/reading */
} h2conn_opts;

#define H2CONN_OPTS_INIT \
  { 1000, 1u << 20, 16u << 20, 16u << 10, 64u << 10 }

/* Creates a connection over the transport `cn` (up, or still connecting or in its
 * handshake: output waits until it is up), which the h2conn owns from now on, also on
 * failure; it sets the transport's handlers. Sends our SETTINGS at
 * once (and, client role, the connection preface). `cbs` is copied; `conn_user` is
 * passed to on_stream_open and on_conn_close.
 * Returns 0 and sets *out, or -ENOMEM / -EPROTO (nghttp2 refused set-up). */
int h2conn_new(h2conn **out, conn *cn, enum h2conn_role role, const h2conn_opts *opts,
               const h2conn_callbacks *cbs, void *conn_user);

/* Tears the connection down at once: every open stream gets on_stream_close with
 * NGHTTP2_CANCEL, then on_conn_close fires and the connection is freed. Accepts NULL.
 * Must not be called from one of this connection's own callbacks (use h2conn_close). */
void h2conn_free(h2conn *c);

/* Asks for the connection to be torn down as h2conn_free does, from a deferred event:
 * safe from inside callbacks. */
void h2conn_close(h2conn *c);

/* Graceful shutdown: GOAWAY so the peer opens no new streams; streams already open
 * go on, and the connection closes once they are done and output is flushed. */
void h2conn_shutdown(h2conn *c);

/* Client role: opens a stream with request headers `nva` (copied). With `has_body`
 * the request body comes from the stream's output buffer and ends with
 * h2conn_stream_end; otherwise the headers carry END_STREAM.
 * Returns 0 and sets *out_sid, or -EINVAL (server role / shut down) / -ENOMEM /
 * -EAGAIN (no more stream ids: open a new connection). */
int h2conn_submit_request(h2conn *c, int32_t *out_sid, const nghttp2_nv *nva, size_t nvlen,
                          int has_body, void *stream_user);

/* Server role: sends response headers `nva` (copied). With `has_body` the body comes
 * from the stream's output buffer; without, the headers carry END_STREAM
 * (a "trailers-only" answer). At most once per stream.
 * Returns 0, -ENOENT (stream gone) or -EINVAL (already responded). */
int h2conn_submit_response(h2conn *c, int32_t sid, const nghttp2_nv *nva, size_t nvlen,
                           int has_body);

/* The stream's output buffer: append body bytes, then call h2conn_stream_resume.
 * Returns NULL if the stream is gone. The buffer belongs to the h2conn. */
struct evbuffer *h2conn_stream_output(h2conn *c, int32_t sid);

/* Queues the first `len` bytes of the file segment `seg` (len must not exceed the
 * segment) as body output after everything queued before, without copying them: a
 * plain socket sends them with sendfile(2); on other transports libevent maps
 * the segment at once. The file must not change in that range until the segment is
 * freed; a cleanup callback on it (see evbuffer_file_segment_add_cleanup_cb) tells when
 * the last byte is sent or dropped. A file cut short under a queued segment ends the
 * connection. Takes ownership of `seg` (also on failure) and resumes the stream.
 * Returns 0, -ENOENT (stream gone), -EINVAL (the stream was ended) or -EIO (the file
 * could not be mapped). */
int h2conn_stream_add_file(h2conn *c, int32_t sid, struct evbuffer_file_segment *seg, size_t len);

/* Tells h2conn that output was appended. Cheap; call after each batch. */
void h2conn_stream_resume(h2conn *c, int32_t sid);

/* Ends our side of the stream after its buffered output: with trailers `nva` (copied,
 * nvlen > 0) in a final HEADERS frame, or with an empty END_STREAM DATA frame.
 * Returns 0, -ENOENT, or -EINVAL (the stream has no body, or was ended before). If
 * our side ends before the peer's, the stream is then reset with NO_ERROR so the peer
 * stops sending. */
int h2conn_stream_end(h2conn *c, int32_t sid, const nghttp2_nv *nva, size_t nvlen);

/* Resets the stream with `error_code` (e.g. NGHTTP2_CANCEL); on_stream_close follows. */
void h2conn_stream_reset(h2conn *c, int32_t sid, uint32_t error_code);

/* Bytes waiting in the stream's output, file pieces included (0 if the stream is gone). */
size_t h2conn_stream_pending(h2conn *c, int32_t sid);

/* Stops (paused non-zero) or resumes reading from the peer. While paused, what the peer
 * sends waits in the kernel and HTTP/2 flow control soon stops it: for a consumer that
 * cannot keep up. Input already buffered is still processed. */
void h2conn_pause_input(h2conn *c, int paused);

/* Number of streams currently open. */
size_t h2conn_stream_count(const h2conn *c);

/* The transport under the connection (to read the peer, the TLS state...). */
conn *h2conn_conn(h2conn *c);

/* Bytes framed for the transport and not yet taken by it. */
size_t h2conn_output_pending(const h2conn *c);

#endif
