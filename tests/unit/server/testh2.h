/* testh2: an in-memory gRPC client for the unit tests of the call layer and the
 * services on it. Include after cmocka.h.
 *
 * The server (a call_server) sits on one end of a bufferevent pair; the other end is
 * driven by a raw nghttp2 client session (not h2conn, so that a fault shared by both
 * roles cannot hide itself) whose every received frame is recorded, or by raw bytes for
 * input that is not HTTP/2 at all. Tests drive the loop until an observable condition
 * holds, under a guard timer (RUN_UNTIL), or until no callback is pending (settle). */
#ifndef PRISMQ_TESTH2_H
#define PRISMQ_TESTH2_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "call.h"
#include "grpcwire.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define CLIENT_MAX_STREAMS 64
/* A test whose loop runs longer than this fails instead of hanging. */
#define CLIENT_GUARD_SECONDS 10

/* What one client stream sent and observed. */
struct cstream {
  int32_t sid;
  uint8_t *body; /* request body bytes, sent in DATA frames of at most `chunk` */
  size_t body_len, body_sent, chunk;
  int keep_open;         /* do not end the stream after the body */
  int end_with_trailers; /* end the request with a trailing HEADERS frame */
  size_t data_frames_sent;
  int http_status; /* :status, 0 until seen */
  char content_type[64];
  char accept_encoding[64];
  int grpc_status;         /* -1 until seen */
  char grpc_message[1100]; /* as received: percent-encoded */
  int headers_ended;       /* the response HEADERS carried END_STREAM */
  int got_trailers;
  size_t data_at_status; /* DATA bytes received before grpc-status */
  struct evbuffer *data; /* DATA payload received */
  int rst_received;
  uint32_t rst_error;
  int closed;
  uint32_t close_error;
};

/* One client connection at a time, and everything it observed. */
struct client {
  struct event_base *base;
  call_server *srv;         /* the server of the last client_connect */
  struct bufferevent *cbev; /* the client's end of the pair */
  struct bufferevent *sbev; /* the server's end: the server's, valid while it is connected */
  nghttp2_session *cs;      /* NULL: raw mode, the server's bytes go to raw_in */
  struct evbuffer *raw_in;
  int client_err; /* an nghttp2 client call failed */
  struct event *guard;
  int timed_out;
  struct cstream streams[CLIENT_MAX_STREAMS];
  size_t nstreams;
  int settings_seen;
  uint32_t srv_max_streams, srv_window, srv_max_hdr;
  int goaways;
  uint32_t goaway_error;
  int32_t goaway_last_sid;
  size_t ping_acks;
  void (*on_data)(void *arg); /* called for each DATA chunk received (may be NULL) */
  void *on_data_arg;
};

/* ---- client ----------------------------------------------------------------------- */

static inline struct cstream *stream_of(nghttp2_session *s, int32_t sid) {
  return nghttp2_session_get_stream_user_data(s, sid);
}

static inline ssize_t c_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                             void *ud) {
  (void)s;
  (void)flags;
  struct client *cl = ud;
  if (bufferevent_write(cl->cbev, data, len) != 0) return NGHTTP2_ERR_CALLBACK_FAILURE;
  return (ssize_t)len;
}

static inline ssize_t c_body_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                                  uint32_t *flags, nghttp2_data_source *src, void *ud) {
  struct client *cl = ud;
  struct cstream *cs = src->ptr;
  size_t n = cs->body_len - cs->body_sent;
  if (n > len) n = len;
  if (cs->chunk && n > cs->chunk) n = cs->chunk;
  if (n == 0 && cs->keep_open) return NGHTTP2_ERR_DEFERRED;
  memcpy(buf, cs->body + cs->body_sent, n);
  cs->body_sent += n;
  if (cs->body_sent == cs->body_len && !cs->keep_open) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (cs->end_with_trailers) {
      static const nghttp2_nv tr[] = {
          {(uint8_t *)"x-trailer", (uint8_t *)"1", 9, 1, NGHTTP2_NV_FLAG_NONE}};
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      if (nghttp2_submit_trailer(s, sid, tr, 1) != 0) cl->client_err = 1;
    }
  }
  return (ssize_t)n;
}

static inline void copy_value(char *dst, size_t cap, const uint8_t *v, size_t len) {
  if (len >= cap) len = cap - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

static inline int c_header(nghttp2_session *s, const nghttp2_frame *fr, const uint8_t *name,
                           size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                           void *ud) {
  (void)flags;
  (void)ud;
  struct cstream *cs = stream_of(s, fr->hd.stream_id);
  if (!cs || fr->hd.type != NGHTTP2_HEADERS) return 0;
  if (fr->headers.cat == NGHTTP2_HCAT_HEADERS) cs->got_trailers = 1;
  char v[1100];
  copy_value(v, sizeof v, value, valuelen);
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    cs->http_status = atoi(v);
  } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
    copy_value(cs->content_type, sizeof cs->content_type, value, valuelen);
  } else if (namelen == 20 && memcmp(name, "grpc-accept-encoding", 20) == 0) {
    copy_value(cs->accept_encoding, sizeof cs->accept_encoding, value, valuelen);
  } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    cs->grpc_status = atoi(v);
    cs->data_at_status = evbuffer_get_length(cs->data);
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    copy_value(cs->grpc_message, sizeof cs->grpc_message, value, valuelen);
  }
  return 0;
}

static inline int c_frame_recv(nghttp2_session *s, const nghttp2_frame *fr, void *ud) {
  struct client *cl = ud;
  struct cstream *cs = stream_of(s, fr->hd.stream_id);
  switch (fr->hd.type) {
  case NGHTTP2_SETTINGS:
    if (fr->hd.flags & NGHTTP2_FLAG_ACK) break;
    cl->settings_seen++;
    for (size_t i = 0; i < fr->settings.niv; i++) {
      uint32_t v = fr->settings.iv[i].value;
      switch (fr->settings.iv[i].settings_id) {
      case NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS: cl->srv_max_streams = v; break;
      case NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE: cl->srv_window = v; break;
      case NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE: cl->srv_max_hdr = v; break;
      default: break;
      }
    }
    break;
  case NGHTTP2_PING:
    if (fr->hd.flags & NGHTTP2_FLAG_ACK) cl->ping_acks++;
    break;
  case NGHTTP2_GOAWAY:
    cl->goaways++;
    cl->goaway_error = fr->goaway.error_code;
    cl->goaway_last_sid = fr->goaway.last_stream_id;
    break;
  case NGHTTP2_RST_STREAM:
    if (cs) {
      cs->rst_received = 1;
      cs->rst_error = fr->rst_stream.error_code;
    }
    break;
  case NGHTTP2_HEADERS:
    if (cs && fr->headers.cat == NGHTTP2_HCAT_RESPONSE && (fr->hd.flags & NGHTTP2_FLAG_END_STREAM))
      cs->headers_ended = 1;
    break;
  default: break;
  }
  return 0;
}

static inline int c_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud) {
  (void)flags;
  struct client *cl = ud;
  if (cl->on_data) cl->on_data(cl->on_data_arg);
  struct cstream *cs = stream_of(s, sid);
  if (cs && evbuffer_add(cs->data, data, len) != 0) abort();
  return 0;
}

static inline int c_frame_send(nghttp2_session *s, const nghttp2_frame *fr, void *ud) {
  (void)ud;
  struct cstream *cs = stream_of(s, fr->hd.stream_id);
  if (cs && fr->hd.type == NGHTTP2_DATA) cs->data_frames_sent++;
  return 0;
}

static inline int c_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *ud) {
  (void)ud;
  struct cstream *cs = stream_of(s, sid);
  if (cs) {
    cs->closed = 1;
    cs->close_error = error_code;
  }
  return 0;
}

static inline void client_flush(struct client *cl) {
  if (nghttp2_session_send(cl->cs) != 0) cl->client_err = 1;
}

static inline void client_read_cb(struct bufferevent *bev, void *arg) {
  struct client *cl = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  if (!cl->cs) {
    evbuffer_add_buffer(cl->raw_in, in);
    return;
  }
  struct evbuffer_iovec v;
  while (evbuffer_peek(in, -1, NULL, &v, 1) == 1) {
    ssize_t rv = nghttp2_session_mem_recv(cl->cs, v.iov_base, v.iov_len);
    if (rv != (ssize_t)v.iov_len) {
      cl->client_err = 1;
      evbuffer_drain(in, evbuffer_get_length(in));
      return;
    }
    evbuffer_drain(in, v.iov_len);
  }
  client_flush(cl);
}

static inline void guard_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ((struct client *)arg)->timed_out = 1;
}

/* Readies *cl (zeroed by the caller) on `base`, and arms its guard timer. */
static inline void client_init(struct client *cl, struct event_base *base) {
  cl->base = base;
  cl->raw_in = evbuffer_new();
  assert_non_null(cl->raw_in);
  cl->guard = evtimer_new(base, guard_cb, cl);
  assert_non_null(cl->guard);
  struct timeval tv = {CLIENT_GUARD_SECONDS, 0};
  assert_int_equal(evtimer_add(cl->guard, &tv), 0);
}

/* Drops the connection (the server sees it end), keeping what its streams observed. */
static inline void client_drop(struct client *cl) {
  if (cl->cs) nghttp2_session_del(cl->cs);
  if (cl->cbev) bufferevent_free(cl->cbev);
  cl->cs = NULL;
  cl->cbev = NULL;
}

/* Frees what client_init, client_connect and the requests made; not the base. */
static inline void client_free(struct client *cl) {
  client_drop(cl);
  for (size_t i = 0; i < cl->nstreams; i++) {
    evbuffer_free(cl->streams[i].data);
    free(cl->streams[i].body);
  }
  evbuffer_free(cl->raw_in);
  event_free(cl->guard);
}

enum {
  CL_RAW = 1,       /* no nghttp2 session: the test writes bytes itself */
  CL_NO_UPDATE = 2, /* never open the receive windows again (no WINDOW_UPDATE) */
};

/* Connects a new client to `srv` over a bufferevent pair. `window` > 0 sets the
 * client's stream and connection receive windows; `flags` are CL_*. */
static inline void client_connect(struct client *cl, call_server *srv, uint32_t window, int flags) {
  /* A pair always defers its callbacks, so, as with sockets, neither side ever runs
   * from inside the other's nghttp2 calls. */
  struct bufferevent *pair[2];
  assert_int_equal(bufferevent_pair_new(cl->base, BEV_OPT_CLOSE_ON_FREE, pair), 0);
  cl->srv = srv;
  cl->cbev = pair[1];
  cl->sbev = pair[0];
  bufferevent_setcb(cl->cbev, client_read_cb, NULL, NULL, cl);
  bufferevent_enable(cl->cbev, EV_READ | EV_WRITE);
  conn *sc;
  assert_int_equal(conn_new_bufferevent(&sc, pair[0]), 0);
  assert_int_equal(call_server_accept(srv, sc), 0);
  if (flags & CL_RAW) return;

  nghttp2_session_callbacks *cb;
  assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
  nghttp2_session_callbacks_set_send_callback(cb, c_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, c_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_stream_close);
  nghttp2_option *opt;
  assert_int_equal(nghttp2_option_new(&opt), 0);
  if (flags & CL_NO_UPDATE) nghttp2_option_set_no_auto_window_update(opt, 1);
  assert_int_equal(nghttp2_session_client_new2(&cl->cs, cb, cl, opt), 0);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window},
                                 {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  if (window) {
    assert_int_equal(nghttp2_submit_settings(cl->cs, NGHTTP2_FLAG_NONE, iv, 2), 0);
    assert_int_equal(
        nghttp2_session_set_local_window_size(cl->cs, NGHTTP2_FLAG_NONE, 0, (int32_t)window), 0);
  } else {
    assert_int_equal(nghttp2_submit_settings(cl->cs, NGHTTP2_FLAG_NONE, iv + 1, 1), 0);
  }
  client_flush(cl);
}

/* Sends EOF to the server, as a peer closing its socket. */
static inline void client_close(struct client *cl) {
  assert_int_equal(bufferevent_flush(cl->cbev, EV_WRITE, BEV_FINISHED), 0);
}

/* One request. Unset fields give a well-formed gRPC request to `path`. */
struct req {
  const char *path;         /* NULL: no :path at all */
  const char *method;       /* default POST */
  const char *content_type; /* default application/grpc */
  int no_content_type;
  const char *timeout;  /* grpc-timeout */
  const char *encoding; /* grpc-encoding */
  size_t pad_header;    /* adds an x-pad header of this many bytes */
  const void *msg;      /* one message, framed by gw_frame_append */
  size_t msg_len;
  const void *raw; /* or raw body bytes */
  size_t raw_len;
  int headers_only;         /* END_STREAM on HEADERS, no DATA at all */
  size_t chunk;             /* at most this many body bytes per DATA frame (0: any) */
  int keep_open;            /* leave the stream open after the body */
  int end_with_trailers;    /* end the request with trailers, not END_STREAM on DATA */
  const char *const *extra; /* more headers after the others: name, value, ..., NULL */
};

static inline nghttp2_nv mknv(const char *name, const char *value) {
  return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                      NGHTTP2_NV_FLAG_NONE};
}

/* REQ(cl, .path = P_ECHO, MSG("hi")): one request, fields as in struct req. */
#define REQ(cl, ...) client_call((cl), &(struct req){__VA_ARGS__})
#define MSG(lit)     .msg = (lit), .msg_len = sizeof(lit) - 1
#define RAW(arr)     .raw = (arr), .raw_len = sizeof(arr)

static inline struct cstream *client_call(struct client *cl, const struct req *r) {
  assert_true(cl->nstreams < CLIENT_MAX_STREAMS);
  struct cstream *cs = &cl->streams[cl->nstreams++];
  cs->grpc_status = -1;
  cs->data = evbuffer_new();
  assert_non_null(cs->data);
  struct evbuffer *body = evbuffer_new();
  assert_non_null(body);
  if (r->msg) assert_int_equal(gw_frame_append(body, r->msg, r->msg_len), 0);
  if (r->raw) assert_int_equal(evbuffer_add(body, r->raw, r->raw_len), 0);
  cs->body_len = evbuffer_get_length(body);
  cs->body = malloc(cs->body_len + 1);
  assert_non_null(cs->body);
  evbuffer_remove(body, cs->body, cs->body_len);
  evbuffer_free(body);
  cs->chunk = r->chunk;
  cs->keep_open = r->keep_open;
  cs->end_with_trailers = r->end_with_trailers;

  nghttp2_nv nva[16];
  size_t n = 0;
  nva[n++] = mknv(":method", r->method ? r->method : "POST");
  nva[n++] = mknv(":scheme", "http");
  if (r->path) nva[n++] = mknv(":path", r->path);
  nva[n++] = mknv(":authority", "test");
  if (!r->no_content_type)
    nva[n++] = mknv("content-type", r->content_type ? r->content_type : "application/grpc");
  nva[n++] = mknv("te", "trailers");
  if (r->timeout) nva[n++] = mknv("grpc-timeout", r->timeout);
  if (r->encoding) nva[n++] = mknv("grpc-encoding", r->encoding);
  char *pad = NULL;
  if (r->pad_header) {
    pad = malloc(r->pad_header + 1);
    assert_non_null(pad);
    memset(pad, 'p', r->pad_header);
    pad[r->pad_header] = '\0';
    nva[n++] = mknv("x-pad", pad);
  }
  for (const char *const *x = r->extra; x && *x; x += 2) {
    assert_true(n < ARRAY_LEN(nva));
    nva[n++] = mknv(x[0], x[1]);
  }
  nghttp2_data_provider prd = {.source.ptr = cs, .read_callback = c_body_read};
  cs->sid = nghttp2_submit_request(cl->cs, NULL, nva, n, r->headers_only ? NULL : &prd, cs);
  free(pad);
  assert_true(cs->sid > 0);
  client_flush(cl);
  return cs;
}

/* Ends a keep_open request after what its body already holds. */
static inline void client_end_body(struct client *cl, struct cstream *cs) {
  cs->keep_open = 0;
  assert_int_equal(nghttp2_session_resume_data(cl->cs, cs->sid), 0);
  client_flush(cl);
}

/* Sends one more message (framed here) on a keep_open request. */
static inline void client_send_msg(struct client *cl, struct cstream *cs, const void *msg,
                                   size_t len) {
  cs->body = realloc(cs->body, cs->body_len + GW_PREFIX_LEN + len + 1);
  assert_non_null(cs->body);
  gw_prefix_encode(cs->body + cs->body_len, (uint32_t)len);
  if (len) memcpy(cs->body + cs->body_len + GW_PREFIX_LEN, msg, len);
  cs->body_len += GW_PREFIX_LEN + len;
  /* Fails, harmlessly, while the body is still being sent: it goes on with this too. */
  (void)nghttp2_session_resume_data(cl->cs, cs->sid);
  client_flush(cl);
}

/* Resets a stream, as a client cancelling its call (RST_STREAM CANCEL). */
static inline void client_cancel(struct client *cl, struct cstream *cs) {
  assert_int_equal(nghttp2_submit_rst_stream(cl->cs, NGHTTP2_FLAG_NONE, cs->sid, NGHTTP2_CANCEL),
                   0);
  client_flush(cl);
}

/* ---- driving ---------------------------------------------------------------------- */

/* Runs the loop until `cond` holds; the guard timer fails the test instead of a hang. */
#define RUN_UNTIL(cl, cond)                     \
  do {                                          \
    while (!(cond)) {                           \
      assert_false((cl)->timed_out);            \
      assert_false((cl)->client_err);           \
      event_base_loop((cl)->base, EVLOOP_ONCE); \
    }                                           \
    assert_false((cl)->client_err);             \
  } while (0)

/* Runs the loop until no callback is pending: everything the two ends can say to each
 * other without a timer firing has been said. */
static inline void settle(struct client *cl) {
  for (int i = 0; event_base_get_num_events(cl->base, EVENT_BASE_COUNT_ACTIVE) > 0; i++) {
    assert_true(i < 1000000);
    event_base_loop(cl->base, EVLOOP_NONBLOCK);
  }
  assert_false(cl->client_err);
}

/* Waits for the stream to close, then for the server to let go of every call. */
static inline void finish(struct client *cl, struct cstream *cs) {
  RUN_UNTIL(cl, cs->closed);
  settle(cl);
  assert_int_equal(call_server_live_calls(cl->srv), 0);
}

/* ---- assertions ------------------------------------------------------------------- */

/* A gRPC answer with no messages: one HEADERS frame with END_STREAM (trailers-only). */
static inline void expect_trailers_only(const struct cstream *cs, int status) {
  assert_true(cs->closed);
  assert_int_equal(cs->http_status, 200);
  assert_string_equal(cs->content_type, "application/grpc");
  assert_true(cs->headers_ended);
  assert_false(cs->got_trailers);
  assert_int_equal(cs->grpc_status, status);
  assert_int_equal(evbuffer_get_length(cs->data), 0);
}

/* A gRPC answer with messages: HEADERS, DATA, then trailers with `status`. */
static inline void expect_with_trailers(const struct cstream *cs, int status) {
  assert_true(cs->closed);
  assert_int_equal(cs->close_error, NGHTTP2_NO_ERROR);
  assert_int_equal(cs->http_status, 200);
  assert_string_equal(cs->content_type, "application/grpc");
  assert_false(cs->headers_ended);
  assert_true(cs->got_trailers);
  assert_int_equal(cs->grpc_status, status);
  assert_int_equal(cs->data_at_status, evbuffer_get_length(cs->data));
}

/* The response body is exactly one message equal to want. */
static inline void expect_one_message(const struct cstream *cs, const void *want, size_t want_len) {
  uint8_t *msg = NULL;
  size_t len = 0;
  assert_int_equal(gw_frame_next(cs->data, 8u << 20, &msg, &len), GW_FRAME_MSG);
  assert_int_equal(len, want_len);
  if (want_len) assert_memory_equal(msg, want, want_len);
  free(msg);
  assert_int_equal(evbuffer_get_length(cs->data), 0);
}

/* Decodes the stream's grpc-message into out, checking it is plain visible ASCII on
 * the wire. */
static inline void decode_message(const struct cstream *cs, char *out, size_t cap) {
  for (const char *p = cs->grpc_message; *p; p++) assert_true(*p >= 0x20 && *p <= 0x7e);
  gw_pct_decode(out, cap, cs->grpc_message, strlen(cs->grpc_message));
}

#endif
