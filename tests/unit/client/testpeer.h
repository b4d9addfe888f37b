/* testpeer: a scripted gRPC server for the client unit tests. Include after cmocka.h.
 *
 * It listens on a unix socket in a temporary directory (on Windows, where Wine has no
 * AF_UNIX, on a loopback TCP port: nothing leaves the machine either way) and
 * speaks HTTP/2 through a raw nghttp2 server session (not h2conn, so that a fault shared
 * by both roles cannot hide itself). It records every request (pseudo-headers, gRPC
 * headers, body, resets) and answers only as the test says: a handler runs once per
 * complete request, from the loop (never inside nghttp2's callbacks), and answers with
 * the peer_* functions below: a whole message with a status, a status alone
 * (trailers-only, with rich error details or not), raw headers and bytes in DATA frames
 * of a chosen size, a reset, or nothing (a hang); or drops the connection.
 *
 * The peer runs on the test's event_base (with an asynchronous client on the same loop)
 * or on a thread of its own (peer_thread_start/stop) for the blocking client, whose
 * private loop would not run the peer. State is read by the test only while the peer's
 * thread is stopped. */
#ifndef PRISMQ_TESTPEER_H
#define PRISMQ_TESTPEER_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <nghttp2/nghttp2.h>
#include <openssl/evp.h>
#include <protobuf-c/protobuf-c.h>

#include "../testos.h"
#include "compat.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"

#define PEER_MAX_STREAMS 64

struct peer;

/* One request the peer received, and what it answers. */
struct pstream {
  struct peer *p;
  int32_t sid;
  char method[16], scheme[16], path[128], authority[128];
  char content_type[64], te[32], user_agent[64], timeout[32];
  struct evbuffer *body; /* request body as received (framed) */
  int ended;             /* the request is complete (END_STREAM) */
  int handled;           /* the handler ran */
  int rst_received;      /* the client reset the stream ... */
  uint32_t rst_code;     /* ... with this code */
  int closed;
  /* The response body: bytes queued by peer_send, at most max_frame per DATA frame. */
  struct evbuffer *out;
  size_t max_frame;            /* 0: as nghttp2 likes */
  int responding;              /* response HEADERS submitted */
  int out_done;                /* no more body: end after `out` drains */
  const char *const *trailers; /* sent after the body (static), NULL: END_STREAM on DATA */
};

typedef void (*peer_handler)(struct peer *p, struct pstream *s);

struct peer {
  struct event_base *base;
  char dir[256];      /* a temporary directory of its own (the socket's) */
  char target[272];   /* "unix:<dir>/sock" (Windows: "127.0.0.1:PORT"), for the client */
  char authority[64]; /* what the client sends as :authority for that target */
  struct evconnlistener *lis;
  struct bufferevent *bev; /* the client's connection (one at a time) */
  nghttp2_session *ss;
  int accepted; /* connections accepted */
  int goaways;  /* GOAWAY frames received */
  int err;      /* an nghttp2 call failed */
  struct pstream streams[PEER_MAX_STREAMS];
  size_t nstreams;
  peer_handler handler;
  void *arg;
  int drop; /* a handler asked to drop the connection */
  /* Thread mode. */
  pthread_t thread;
  int running;
  compat_wakeup *stop;
  struct event *stop_ev;
};

/* ---- answering -------------------------------------------------------------------- */

static inline nghttp2_nv peer_nv(const char *name, const char *value) {
  return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                      NGHTTP2_NV_FLAG_NONE};
}

static inline void peer_flush(struct peer *p) {
  if (p->ss && nghttp2_session_send(p->ss) != 0) p->err = 1;
}

static inline ssize_t peer_read_body(nghttp2_session *ss, int32_t sid, uint8_t *buf, size_t len,
                                     uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)ud;
  struct pstream *s = src->ptr;
  size_t n = evbuffer_get_length(s->out);
  if (n > len) n = len;
  if (s->max_frame && n > s->max_frame) n = s->max_frame;
  if (n == 0 && !s->out_done) return NGHTTP2_ERR_DEFERRED;
  evbuffer_remove(s->out, buf, n);
  if (s->out_done && evbuffer_get_length(s->out) == 0) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->trailers) {
      nghttp2_nv nva[8];
      size_t k = 0;
      for (const char *const *t = s->trailers; *t && k < 8; t += 2) nva[k++] = peer_nv(t[0], t[1]);
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      if (nghttp2_submit_trailer(ss, sid, nva, k) != 0) s->p->err = 1;
    }
  }
  return (ssize_t)n;
}

/* Starts the response: HEADERS with `headers` (name, value, ..., NULL; NULL: :status 200
 * and content-type application/grpc), then a body to come from peer_send. */
static inline void peer_begin(struct pstream *s, const char *const *headers) {
  static const char *const grpc_ok[] = {":status", "200", "content-type", "application/grpc", NULL};
  nghttp2_nv nva[8];
  size_t k = 0;
  for (const char *const *h = headers ? headers : grpc_ok; *h && k < 8; h += 2)
    nva[k++] = peer_nv(h[0], h[1]);
  nghttp2_data_provider prd = {.source.ptr = s, .read_callback = peer_read_body};
  if (nghttp2_submit_response(s->p->ss, s->sid, nva, k, &prd) != 0) s->p->err = 1;
  s->responding = 1;
  peer_flush(s->p);
}

/* Queues raw body bytes (already framed, or deliberately not). */
static inline void peer_send(struct pstream *s, const void *data, size_t len) {
  evbuffer_add(s->out, data, len);
  if (nghttp2_session_resume_data(s->p->ss, s->sid) != 0) s->p->err = 1;
  peer_flush(s->p);
}

/* Adds one gRPC message to the body without sending it yet (the next peer_send or
 * peer_end does, possibly several in one DATA frame): the 5-byte prefix (flag 0) and
 * `len` bytes. */
static inline void peer_queue_msg(struct pstream *s, const void *msg, size_t len) {
  uint8_t prefix[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                       (uint8_t)len};
  evbuffer_add(s->out, prefix, 5);
  evbuffer_add(s->out, msg, len);
}

static inline void peer_queue_pb(struct pstream *s, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) abort();
  protobuf_c_message_pack(m, buf);
  peer_queue_msg(s, buf, n);
  free(buf);
}

/* Queues one message and sends what is queued. */
static inline void peer_send_msg(struct pstream *s, const void *msg, size_t len) {
  peer_queue_msg(s, msg, len);
  peer_send(s, NULL, 0);
}

static inline void peer_send_pb(struct pstream *s, const ProtobufCMessage *m) {
  peer_queue_pb(s, m);
  peer_send(s, NULL, 0);
}

/* Ends the body, then sends `trailers` (static; NULL: the body's last DATA frame ends
 * the stream). */
static inline void peer_end(struct pstream *s, const char *const *trailers) {
  s->out_done = 1;
  s->trailers = trailers;
  if (nghttp2_session_resume_data(s->p->ss, s->sid) != 0) s->p->err = 1;
  peer_flush(s->p);
}

static const char *const PEER_OK_TRAILERS[] = {"grpc-status", "0", NULL};

/* A whole unary answer: `m` and status OK. */
static inline void peer_reply(struct pstream *s, const ProtobufCMessage *m) {
  peer_begin(s, NULL);
  peer_send_pb(s, m);
  peer_end(s, PEER_OK_TRAILERS);
}

/* A trailers-only answer: HEADERS with :status 200, content-type, grpc-status `code`
 * and, if not NULL, grpc-message `message` and grpc-status-details-bin `details` (both
 * sent as given: encode them yourself, e.g. with peer_details_b64). */
static inline void peer_status_details(struct pstream *s, const char *code, const char *message,
                                       const char *details) {
  nghttp2_nv nva[5] = {peer_nv(":status", "200"), peer_nv("content-type", "application/grpc"),
                       peer_nv("grpc-status", code)};
  size_t n = 3;
  if (message) nva[n++] = peer_nv("grpc-message", message);
  if (details) nva[n++] = peer_nv("grpc-status-details-bin", details);
  if (nghttp2_submit_response(s->p->ss, s->sid, nva, n, NULL) != 0) s->p->err = 1;
  s->responding = 1;
  peer_flush(s->p);
}

/* The same without details. */
static inline void peer_status(struct pstream *s, const char *code, const char *message) {
  peer_status_details(s, code, message, NULL);
}

/* Base64 of `len` bytes (malloc'd; free it), with its padding or, as gRPC servers
 * usually send it, without. */
static inline char *peer_b64(const void *data, size_t len, int padded) {
  char *b64 = malloc(4 * ((len + 2) / 3) + 1);
  if (!b64) abort();
  int n = EVP_EncodeBlock((unsigned char *)b64, data, (int)len);
  while (!padded && n > 0 && b64[n - 1] == '=') b64[--n] = '\0';
  return b64;
}

/* A grpc-status-details-bin value (peer_b64 of a google.rpc.Status of `code` and
 * `message`) holding one google.protobuf.Any of `type_url`: `detail` packed, or, when
 * `type_url` is NULL, a google.rpc.BadRequest of the field violations `fv` (field,
 * description, ..., NULL). */
static inline char *peer_details_b64(int code, const char *message, const char *type_url,
                                     const ProtobufCMessage *detail, const char *const *fv,
                                     int padded) {
  Google__Rpc__BadRequest__FieldViolation v[16], *vp[16];
  Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
  for (; fv && fv[0] && br.n_field_violations < 16; fv += 2) {
    size_t i = br.n_field_violations++;
    v[i] = (Google__Rpc__BadRequest__FieldViolation)GOOGLE__RPC__BAD_REQUEST__FIELD_VIOLATION__INIT;
    v[i].field = (char *)fv[0];
    v[i].description = (char *)fv[1];
    vp[i] = &v[i];
  }
  br.field_violations = vp;
  if (!type_url) {
    type_url = "type.googleapis.com/google.rpc.BadRequest";
    detail = &br.base;
  }
  Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT, *anyp = &any;
  any.type_url = (char *)type_url;
  any.value.len = protobuf_c_message_get_packed_size(detail);
  any.value.data = malloc(any.value.len + 1);
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  st.code = code;
  st.message = (char *)message;
  st.n_details = 1;
  st.details = &anyp;
  size_t len = google__rpc__status__get_packed_size(&st);
  uint8_t *packed = malloc(len + 1);
  if (!any.value.data || !packed) abort();
  protobuf_c_message_pack(detail, any.value.data);
  google__rpc__status__pack(&st, packed);
  char *b64 = peer_b64(packed, len, padded);
  free(packed);
  free(any.value.data);
  return b64;
}

static inline void peer_reset(struct pstream *s, uint32_t code) {
  if (nghttp2_submit_rst_stream(s->p->ss, NGHTTP2_FLAG_NONE, s->sid, code) != 0) s->p->err = 1;
  peer_flush(s->p);
}

/* Closes the client's connection at once (from a handler: once it returns). */
static inline void peer_drop(struct peer *p) { p->drop = 1; }

/* ---- the request side --------------------------------------------------------------- */

static inline struct pstream *peer_stream(nghttp2_session *ss, int32_t sid) {
  return nghttp2_session_get_stream_user_data(ss, sid);
}

static inline int peer_begin_headers(nghttp2_session *ss, const nghttp2_frame *fr, void *ud) {
  struct peer *p = ud;
  if (fr->hd.type != NGHTTP2_HEADERS || fr->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (p->nstreams >= PEER_MAX_STREAMS) return NGHTTP2_ERR_CALLBACK_FAILURE;
  struct pstream *s = &p->streams[p->nstreams++];
  memset(s, 0, sizeof *s);
  s->p = p;
  s->sid = fr->hd.stream_id;
  s->body = evbuffer_new();
  s->out = evbuffer_new();
  if (!s->body || !s->out) abort();
  nghttp2_session_set_stream_user_data(ss, s->sid, s);
  return 0;
}

static inline void peer_copy(char *dst, size_t size, const uint8_t *v, size_t len) {
  if (len >= size) len = size - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

static inline int peer_header(nghttp2_session *ss, const nghttp2_frame *fr, const uint8_t *name,
                              size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                              void *ud) {
  (void)flags;
  (void)ud;
  struct pstream *s = peer_stream(ss, fr->hd.stream_id);
  if (!s) return 0;
  static const struct {
    const char *name;
    size_t off, cap;
  } fields[] = {
      {":method", offsetof(struct pstream, method), sizeof((struct pstream *)0)->method},
      {":scheme", offsetof(struct pstream, scheme), sizeof((struct pstream *)0)->scheme},
      {":path", offsetof(struct pstream, path), sizeof((struct pstream *)0)->path},
      {":authority", offsetof(struct pstream, authority), sizeof((struct pstream *)0)->authority},
      {"content-type", offsetof(struct pstream, content_type),
       sizeof((struct pstream *)0)->content_type},
      {"te", offsetof(struct pstream, te), sizeof((struct pstream *)0)->te},
      {"user-agent", offsetof(struct pstream, user_agent), sizeof((struct pstream *)0)->user_agent},
      {"grpc-timeout", offsetof(struct pstream, timeout), sizeof((struct pstream *)0)->timeout},
  };
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
    if (strlen(fields[i].name) == namelen && memcmp(fields[i].name, name, namelen) == 0)
      peer_copy((char *)s + fields[i].off, fields[i].cap, value, valuelen);
  return 0;
}

static inline int peer_data(nghttp2_session *ss, uint8_t flags, int32_t sid, const uint8_t *data,
                            size_t len, void *ud) {
  (void)flags;
  (void)ud;
  struct pstream *s = peer_stream(ss, sid);
  if (s) evbuffer_add(s->body, data, len);
  return 0;
}

static inline int peer_frame_recv(nghttp2_session *ss, const nghttp2_frame *fr, void *ud) {
  struct peer *p = ud;
  struct pstream *s = peer_stream(ss, fr->hd.stream_id);
  if (fr->hd.type == NGHTTP2_GOAWAY) p->goaways++;
  if (!s) return 0;
  if ((fr->hd.type == NGHTTP2_HEADERS || fr->hd.type == NGHTTP2_DATA) &&
      (fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
    s->ended = 1;
  if (fr->hd.type == NGHTTP2_RST_STREAM) {
    s->rst_received = 1;
    s->rst_code = fr->rst_stream.error_code;
  }
  return 0;
}

static inline int peer_stream_close(nghttp2_session *ss, int32_t sid, uint32_t code, void *ud) {
  (void)code;
  (void)ud;
  struct pstream *s = peer_stream(ss, sid);
  if (s) s->closed = 1;
  return 0;
}

static inline ssize_t peer_send_cb(nghttp2_session *ss, const uint8_t *data, size_t len, int flags,
                                   void *ud) {
  (void)ss;
  (void)flags;
  struct peer *p = ud;
  if (bufferevent_write(p->bev, data, len) != 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
  return (ssize_t)len;
}

static inline void peer_close_conn(struct peer *p) {
  if (p->ss) nghttp2_session_del(p->ss);
  if (p->bev) bufferevent_free(p->bev);
  p->ss = NULL;
  p->bev = NULL;
  p->drop = 0;
}

/* Runs the handler for the requests that are complete, outside nghttp2's callbacks. */
static inline void peer_dispatch(struct peer *p) {
  for (size_t i = 0; i < p->nstreams && p->ss; i++) {
    struct pstream *s = &p->streams[i];
    if (!s->ended || s->handled) continue;
    s->handled = 1;
    if (p->handler) p->handler(p, s);
    if (p->drop) peer_close_conn(p);
  }
}

static inline void peer_read_cb(struct bufferevent *bev, void *arg) {
  struct peer *p = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  struct evbuffer_iovec v;
  while (p->ss && evbuffer_peek(in, -1, NULL, &v, 1) == 1) {
    ssize_t rv = nghttp2_session_mem_recv(p->ss, v.iov_base, v.iov_len);
    if (rv != (ssize_t)v.iov_len) {
      p->err = 1;
      peer_close_conn(p);
      return;
    }
    evbuffer_drain(in, v.iov_len);
  }
  peer_dispatch(p);
  peer_flush(p);
}

static inline void peer_event_cb(struct bufferevent *bev, short what, void *arg) {
  (void)bev;
  struct peer *p = arg;
  /* A write that fails (EPIPE: the client has closed) ends only our sending; what the
   * client sent before it closed (a reset, say) is still to be read, up to the end. */
  if ((what & BEV_EVENT_READING) && (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) peer_close_conn(p);
}

static inline void peer_accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
                                  struct sockaddr *sa, int salen, void *arg) {
  (void)lis;
  (void)sa;
  (void)salen;
  struct peer *p = arg;
  p->accepted++;
  peer_close_conn(p); /* one client at a time */
  p->bev = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (!p->bev) abort();
  bufferevent_setcb(p->bev, peer_read_cb, NULL, peer_event_cb, p);
  bufferevent_enable(p->bev, EV_READ | EV_WRITE);
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0) abort();
  nghttp2_session_callbacks_set_send_callback(cb, peer_send_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, peer_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, peer_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, peer_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, peer_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, peer_stream_close);
  if (nghttp2_session_server_new(&p->ss, cb, p) != 0) abort();
  nghttp2_session_callbacks_del(cb);
  if (nghttp2_submit_settings(p->ss, NGHTTP2_FLAG_NONE, NULL, 0) != 0) p->err = 1;
  peer_flush(p);
}

/* Listens on a new unix socket (Windows: a loopback TCP port), on `base`. */
static inline void peer_init(struct peer *p, struct event_base *base) {
  memset(p, 0, sizeof *p);
  p->base = base;
  assert_int_equal(compat_net_init(), 0);
  assert_non_null(test_mkdtemp(p->dir, sizeof p->dir, "test_client"));
#ifdef _WIN32
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  p->lis = evconnlistener_new_bind(base, peer_accept_cb, p,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                   (struct sockaddr *)&sin, sizeof sin);
  assert_non_null(p->lis);
  socklen_t len = sizeof sin;
  assert_int_equal(getsockname(evconnlistener_get_fd(p->lis), (struct sockaddr *)&sin, &len), 0);
  snprintf(p->target, sizeof p->target, "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
  snprintf(p->authority, sizeof p->authority, "%s", p->target);
#else
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  assert_true((size_t)snprintf(sun.sun_path, sizeof sun.sun_path, "%s/sock", p->dir) <
              sizeof sun.sun_path);
  snprintf(p->target, sizeof p->target, "unix:%s", sun.sun_path);
  /* gRPC names unix sockets "localhost". */
  snprintf(p->authority, sizeof p->authority, "localhost");
  p->lis = evconnlistener_new_bind(base, peer_accept_cb, p,
                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
                                   (struct sockaddr *)&sun, sizeof sun);
  assert_non_null(p->lis);
#endif
}

static inline void peer_fini(struct peer *p) {
  peer_close_conn(p);
  if (p->lis) evconnlistener_free(p->lis);
  for (size_t i = 0; i < p->nstreams; i++) {
    evbuffer_free(p->streams[i].body);
    evbuffer_free(p->streams[i].out);
  }
  test_remove_tree(p->dir);
}

/* The request message of stream s (unframed), decoded with `desc`; free it with
 * protobuf_c_message_free_unpacked. */
static inline ProtobufCMessage *peer_request(struct pstream *s,
                                             const ProtobufCMessageDescriptor *desc) {
  size_t n = evbuffer_get_length(s->body);
  assert_true(n >= 5);
  const uint8_t *b = evbuffer_pullup(s->body, -1);
  assert_int_equal(b[0], 0);
  size_t len = (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
  assert_int_equal(len + 5, n);
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, b + 5);
  assert_non_null(m);
  return m;
}

/* ---- thread mode ------------------------------------------------------------------ */

static inline void peer_stop_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct peer *p = arg;
  compat_wakeup_take(p->stop);
  event_base_loopbreak(p->base);
}

static inline void *peer_thread_main(void *arg) {
  struct peer *p = arg;
  event_base_loop(p->base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

/* Runs the peer's base on a thread of its own until peer_thread_stop. */
static inline void peer_thread_start(struct peer *p) {
  if (!p->stop) {
    assert_int_equal(compat_wakeup_new(&p->stop), 0);
    p->stop_ev =
        event_new(p->base, compat_wakeup_fd(p->stop), EV_READ | EV_PERSIST, peer_stop_cb, p);
    assert_non_null(p->stop_ev);
    assert_int_equal(event_add(p->stop_ev, NULL), 0);
  }
  assert_int_equal(pthread_create(&p->thread, NULL, peer_thread_main, p), 0);
  p->running = 1;
}

/* Stops and joins the peer's thread: its state is the test's to read again, with what
 * the client had sent by then read (the stop may have come first). */
static inline void peer_thread_stop(struct peer *p) {
  if (!p->running) return;
  compat_wakeup_signal(p->stop);
  assert_int_equal(pthread_join(p->thread, NULL), 0);
  p->running = 0;
  event_base_loop(p->base, EVLOOP_NONBLOCK);
}

static inline void peer_thread_fini(struct peer *p) {
  peer_thread_stop(p);
  if (p->stop_ev) event_free(p->stop_ev);
  compat_wakeup_free(p->stop);
  p->stop_ev = NULL;
  p->stop = NULL;
}

#endif
