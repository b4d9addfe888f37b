#include "h2conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conn.h"
#include "log.h"
#include "xalloc.h"

/* Rapid Reset (CVE-2023-44487): at most this many RST_STREAMs in a burst, then per second. */
#define RST_BURST 1000
#define RST_RATE  33
/* CONTINUATION flood (CVE-2024-28182). */
#define MAX_CONTINUATIONS 8
/* Largest frame we accept (SETTINGS_MAX_FRAME_SIZE), and largest DATA payload of file
 * output we send when the peer accepts it: above an output record (64 KiB and a few
 * bytes), so that a client can take records whole from one frame. nghttp2 grows a
 * connection's frame buffer to it once (unused address space, since file frames are
 * NO_COPY). */
#define DATA_FRAME_MAX (128u << 10)
/* DATA payload of memory output: nghttp2's default (16 KiB). */
#define MEM_FRAME_MAX (16u << 10)
/* Most bytes one read of the transport takes (on_conn_read). */
#define READ_CHUNK (64u << 10)

/* Output queued before a file piece: what was appended to the stream's output buffer
 * before h2conn_stream_add_file (mem), or a file range sent without copying (seg). */
struct piece {
  struct piece *next;
  struct evbuffer *mem;              /* a memory piece, or NULL */
  struct evbuffer_file_segment *seg; /* a file piece: our reference */
  uint64_t off;                      /* next byte of seg to send */
  size_t len;                        /* bytes left in the piece */
};

struct h2stream {
  int32_t id;
  void *user;
  struct evbuffer *out; /* memory output after every piece */
  struct piece *pieces; /* sent before `out`, in order */
  struct piece **pieces_tail;
  size_t pieces_len;    /* bytes left in pieces */
  nghttp2_nv *trailers; /* one allocation holding the array and its strings */
  size_t ntrailers;
  size_t hdr_bytes; /* header list size of the block being received */
  unsigned has_body : 1;
  unsigned deferred : 1; /* the data provider returned DEFERRED: needs resume_data */
  unsigned ending : 1;   /* h2conn_stream_end was called */
  unsigned drained : 1;  /* the output emptied during a send: tell the user */
  unsigned responded : 1;
  struct h2stream *prev, *next;
};

struct h2conn {
  nghttp2_session *session;
  conn *conn;
  struct evbuffer *in; /* read from the transport, not yet taken by nghttp2 */
  struct evbuffer
      *out; /* frames for the transport (file chains stay unmapped where it sends files) */
  struct event *flush_ev; /* deferred: send, notify drains, tear down */
  h2conn_callbacks cbs;
  void *conn_user;
  h2conn_opts opts;
  enum h2conn_role role;
  struct h2stream *streams;
  size_t nstreams;
  unsigned closing : 1;     /* tear down at the next flush */
  unsigned dead : 1;        /* tearing down: the API is a no-op */
  unsigned read_held : 1;   /* reading paused while output is over the high-water mark */
  unsigned read_paused : 1; /* reading paused by the user (h2conn_pause_input) */
  unsigned file_tail : 1;   /* the output may end with a file chain (out_add) */
  unsigned write_wait : 1;  /* the transport was full: on_conn_write comes when it takes more */
};

static void schedule_flush(h2conn *c) {
  if (!c->dead) event_active(c->flush_ev, EV_WRITE, 0);
}

static struct h2stream *stream_new(h2conn *c, void *user) {
  struct h2stream *s = xcalloc(1, sizeof *s);
  s->out = evbuffer_new();
  if (!s->out) abort();
  s->pieces_tail = &s->pieces;
  s->user = user;
  s->next = c->streams;
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  c->nstreams++;
  return s;
}

static void piece_free(struct piece *p) {
  if (p->mem) evbuffer_free(p->mem);
  if (p->seg) evbuffer_file_segment_free(p->seg);
  free(p);
}

static void stream_free(h2conn *c, struct h2stream *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  c->nstreams--;
  while (s->pieces) {
    struct piece *p = s->pieces;
    s->pieces = p->next;
    piece_free(p);
  }
  evbuffer_free(s->out);
  free(s->trailers);
  free(s);
}

static struct h2stream *stream_get(h2conn *c, int32_t sid) {
  if (c->dead) return NULL;
  struct h2stream *s = nghttp2_session_get_stream_user_data(c->session, sid);
  if (s) return s;
  /* A client stream exists in nghttp2 only once its HEADERS are sent: until then it
   * is found on our own list. */
  for (s = c->streams; s; s = s->next)
    if (s->id == sid) return s;
  return NULL;
}

/* Copies header fields into one allocation: they must outlive the caller's arrays
 * until the data provider reaches EOF and submits them. */
static nghttp2_nv *nv_copy(const nghttp2_nv *nva, size_t n) {
  size_t bytes = n * sizeof *nva;
  for (size_t i = 0; i < n; i++) bytes += nva[i].namelen + nva[i].valuelen;
  nghttp2_nv *out = xmalloc(bytes);
  uint8_t *p = (uint8_t *)(out + n);
  for (size_t i = 0; i < n; i++) {
    out[i] = nva[i];
    out[i].flags = NGHTTP2_NV_FLAG_NONE;
    out[i].name = memcpy(p, nva[i].name, nva[i].namelen);
    p += nva[i].namelen;
    out[i].value = memcpy(p, nva[i].value, nva[i].valuelen);
    p += nva[i].valuelen;
  }
  return out;
}

static size_t stream_pending(const struct h2stream *s) {
  return s->pieces_len + evbuffer_get_length(s->out);
}

static void piece_push(struct h2stream *s, struct piece *p) {
  *s->pieces_tail = p;
  s->pieces_tail = &p->next;
  s->pieces_len += p->len;
}

/* ---- nghttp2 callbacks ---------------------------------------------------------- */

static int over_high_water(const h2conn *c) {
  return evbuffer_get_length(c->out) >= c->opts.out_high_water;
}

/* Appends to the output. libevent sizes a new chain after the last one, which
 * after a file chain is that chain's file offset plus its length (hundreds of MiB):
 * past a file chain, memory goes in through reserve_space, sized by the request. */
static void out_add(h2conn *c, struct evbuffer *o, const void *data, size_t len) {
  if (!c->file_tail) {
    if (evbuffer_add(o, data, len) != 0) abort();
    return;
  }
  struct evbuffer_iovec v;
  if (evbuffer_reserve_space(o, (ev_ssize_t)len, &v, 1) != 1) abort();
  memcpy(v.iov_base, data, len);
  v.iov_len = len;
  if (evbuffer_commit_space(o, &v, 1) != 0) abort();
  c->file_tail = 0;
}

/* Moves n bytes of src to the output: whole chains move, a partial one is
 * copied (by evbuffer_add inside evbuffer_remove_buffer, hence the copy here past a
 * file chain, as in out_add). */
static void out_move(h2conn *c, struct evbuffer *o, struct evbuffer *src, size_t n) {
  if (!c->file_tail || n == evbuffer_get_length(src)) {
    if (evbuffer_remove_buffer(src, o, n) != (int)n) abort();
    c->file_tail = 0;
    return;
  }
  struct evbuffer_iovec v;
  if (evbuffer_reserve_space(o, (ev_ssize_t)n, &v, 1) != 1) abort();
  if (evbuffer_remove(src, v.iov_base, n) != (int)n) abort();
  v.iov_len = n;
  if (evbuffer_commit_space(o, &v, 1) != 0) abort();
  c->file_tail = 0;
}

static ssize_t send_cb(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
                       void *user_data) {
  (void)session;
  (void)flags;
  h2conn *c = user_data;
  /* Stop producing while the transport is behind: bounded output per connection. */
  if (over_high_water(c)) return NGHTTP2_ERR_WOULDBLOCK;
  out_add(c, c->out, data, len);
  return (ssize_t)len;
}

/* Moves `len` bytes of the stream's output to the connection's output: memory by moving
 * evbuffer chains, file pieces as file segments, which a socket sends with sendfile(2)
 * (a sendfile chain cannot be split by evbuffer_remove_buffer, hence the pieces).
 * Returns 0, or -1 if a file piece could not be added (mapping it failed). */
static int move_output(h2conn *c, struct h2stream *s, struct evbuffer *o, size_t len) {
  while (len > 0 && s->pieces) {
    struct piece *p = s->pieces;
    size_t n = p->len < len ? p->len : len;
    if (p->seg) {
      /* The output drains to a descriptor (file pieces exist only where the transport
       * sends files), so libevent adds a sendfile chain and maps nothing: it fails only
       * for a range past the segment, and then it has dropped our reference. */
      if (evbuffer_add_file_segment(o, p->seg, (ev_off_t)p->off, (ev_off_t)n) != 0) {
        p->seg = NULL;
        return -1;
      }
      c->file_tail = 1;
      p->off += n;
    } else {
      out_move(c, o, p->mem, n);
    }
    p->len -= n;
    s->pieces_len -= n;
    len -= n;
    if (p->len == 0) {
      s->pieces = p->next;
      if (!s->pieces) s->pieces_tail = &s->pieces;
      piece_free(p);
    }
  }
  if (len > 0) out_move(c, o, s->out, len);
  return 0;
}

/* DATA payloads go from the stream's output to the connection's without copying
 * (NGHTTP2_DATA_FLAG_NO_COPY). */
static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data) {
  (void)session;
  h2conn *c = user_data;
  struct h2stream *s = source->ptr;
  if (over_high_water(c)) return NGHTTP2_ERR_WOULDBLOCK;
  struct evbuffer *o = c->out;
  out_add(c, o, framehd, 9);
  /* We install no padding callback, so padlen is always 0. */
  (void)frame;
  if (move_output(c, s, o, length) != 0) {
    LOG_ERROR(
        "h2: cannot send the file output of stream %d (a range past the file segment, "
        "or the file could not be mapped)",
        s->id);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (stream_pending(s) == 0 && !s->ending) s->drained = 1;
  return 0;
}

/* DATA frames from a file go out as large as the peer takes, up to DATA_FRAME_MAX:
 * fewer, larger sendfile calls. Memory output keeps the default 16 KiB, so what a frame
 * that crosses the high-water mark adds to the memory held stays small. nghttp2 applies
 * the flow-control windows to what we return. */
static ssize_t read_length_cb(nghttp2_session *session, uint8_t frame_type, int32_t sid,
                              int32_t session_window, int32_t stream_window,
                              uint32_t remote_max_frame_size, void *user_data) {
  (void)frame_type;
  (void)session_window;
  (void)stream_window;
  (void)user_data;
  const struct h2stream *s = nghttp2_session_get_stream_user_data(session, sid);
  size_t max = s && s->pieces && s->pieces->seg ? DATA_FRAME_MAX : MEM_FRAME_MAX;
  return (ssize_t)(remote_max_frame_size < max ? remote_max_frame_size : max);
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t sid, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
  (void)buf;
  (void)user_data;
  struct h2stream *s = source->ptr;
  size_t avail = stream_pending(s);
  size_t n = avail < length ? avail : length;
  if (n == avail && s->ending) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (s->ntrailers) {
      /* Trailers submitted from here go out after this last DATA frame, never
       * before queued data (nghttp2#269). */
      *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      if (nghttp2_submit_trailer(session, sid, s->trailers, s->ntrailers) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
  } else if (n == 0) {
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (n > 0) *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  return (ssize_t)n;
}

static int begin_headers_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  h2conn *c = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  struct h2stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!s && c->role == H2CONN_SERVER && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    s = stream_new(c, NULL);
    s->id = frame->hd.stream_id;
    nghttp2_session_set_stream_user_data(session, s->id, s);
    s->user = c->cbs.on_stream_open ? c->cbs.on_stream_open(c, s->id, c->conn_user) : NULL;
  }
  if (s) s->hdr_bytes = 0;
  return 0;
}

static int is_trailer_block(const nghttp2_frame *frame) {
  return frame->headers.cat == NGHTTP2_HCAT_HEADERS;
}

static int header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data) {
  (void)flags;
  h2conn *c = user_data;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  struct h2stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!s) return 0; /* stream already gone: tolerate */
  /* nghttp2 advertises but does not enforce SETTINGS_MAX_HEADER_LIST_SIZE (#655). */
  s->hdr_bytes += namelen + valuelen + 32;
  if (s->hdr_bytes > c->opts.max_header_list_size) {
    LOG_DEBUG("h2: header list too large stream=%d bytes=%zu", s->id, s->hdr_bytes);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (c->cbs.on_header && c->cbs.on_header(c, s->id, s->user, name, namelen, value, valuelen,
                                           is_trailer_block(frame)) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static int frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  h2conn *c = user_data;
  struct h2stream *s = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (!s) return 0;
  int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    if (c->cbs.on_headers_done)
      c->cbs.on_headers_done(c, s->id, s->user, is_trailer_block(frame), end);
    break;
  case NGHTTP2_DATA:
    if (end && c->cbs.on_remote_end) c->cbs.on_remote_end(c, s->id, s->user);
    break;
  default: break;
  }
  return 0;
}

static int data_chunk_cb(nghttp2_session *session, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *user_data) {
  (void)flags;
  h2conn *c = user_data;
  struct h2stream *s = nghttp2_session_get_stream_user_data(session, sid);
  if (s && c->cbs.on_data) c->cbs.on_data(c, sid, s->user, data, len);
  return 0;
}

static int frame_send_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  h2conn *c = user_data;
  if (c->role != H2CONN_SERVER || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) return 0;
  /* We answered before the client finished sending: tell it to stop (gRPC spec). */
  if (nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

static int stream_close_cb(nghttp2_session *session, int32_t sid, uint32_t error_code,
                           void *user_data) {
  h2conn *c = user_data;
  struct h2stream *s = nghttp2_session_get_stream_user_data(session, sid);
  if (!s) return 0;
  nghttp2_session_set_stream_user_data(session, sid, NULL);
  if (c->cbs.on_stream_close) c->cbs.on_stream_close(c, sid, s->user, error_code);
  stream_free(c, s);
  return 0;
}

/* ---- driving the session -------------------------------------------------------- */

static void teardown(h2conn *c);

/* Starts or stops reading the peer. */
static void reading(h2conn *c, int on) { conn_want_read(c->conn, on); }

/* Feeds buffered input to nghttp2 until it is consumed or output is over the mark. */
static int process_input(h2conn *c) {
  struct evbuffer *in = c->in;
  while (evbuffer_get_length(in) > 0) {
    if (over_high_water(c)) {
      /* A peer that does not read our answers (PING/SETTINGS floods included)
       * must not make us queue without bound: stop reading until it drains. */
      reading(c, 0);
      c->read_held = 1;
      return 0;
    }
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
    ssize_t rv = nghttp2_session_mem_recv(c->session, v.iov_base, v.iov_len);
    if (rv < 0) {
      LOG_DEBUG("h2: input rejected: %s", nghttp2_strerror((int)rv));
      if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC || rv == NGHTTP2_ERR_FLOODED)
        nghttp2_session_terminate_session(c->session, NGHTTP2_PROTOCOL_ERROR);
      else
        nghttp2_session_terminate_session(c->session, NGHTTP2_INTERNAL_ERROR);
      evbuffer_drain(in, evbuffer_get_length(in));
      return -1;
    }
    evbuffer_drain(in, (size_t)rv);
  }
  return 0;
}

/* Output goes to the transport at once, and a write wake-up is asked for only while
 * some is left over: a unary answer then costs one writev instead of arming a write
 * event, waking up for it and disarming it again (two epoll_ctl and one epoll_wait per
 * call). */
static void write_now(h2conn *c) {
  if (c->write_wait) return;
  if (evbuffer_get_length(c->out) > 0 && conn_write(c->conn, c->out) < 0) {
    LOG_DEBUG("h2: %s", conn_error(c->conn));
    c->closing = 1;
    return;
  }
  if (evbuffer_get_length(c->out) > 0 || conn_pending(c->conn) > 0) {
    c->write_wait = 1;
    conn_want_write(c->conn);
  }
}

/* Output not yet handed to the kernel: ours, and what the transport holds. */
static size_t unsent(const h2conn *c) {
  return evbuffer_get_length(c->out) + conn_pending(c->conn);
}

/* Sends what nghttp2 has, tells users whose output drained, and closes the
 * connection once neither side has anything more to say. */
static void do_send(h2conn *c) {
  /* Closing: nghttp2 may have failed (a callback refused a frame); never drive it again. */
  if (c->dead || c->closing) return;
  if ((c->cbs.on_send && c->cbs.on_send(c, c->conn_user) < 0) ||
      nghttp2_session_send(c->session) != 0) {
    /* on_send refused, or nghttp2 failed and the output may end in half a frame:
     * nothing more goes to the peer. */
    c->closing = 1;
    schedule_flush(c);
    return;
  }
  for (struct h2stream *s = c->streams; s; s = s->next) {
    if (!s->drained) continue;
    s->drained = 0;
    if (c->cbs.on_drain) c->cbs.on_drain(c, s->id, s->user);
  }
  write_now(c);
  /* The transport took all of it while nghttp2 had stopped at the high-water mark: no
   * write wake-up will come to re-drive it, so go round again from the loop. */
  if (!c->closing && evbuffer_get_length(c->out) == 0 && nghttp2_session_want_write(c->session))
    schedule_flush(c);
  /* Neither side has more to say: close once the output is gone (write_now asked to
   * be woken while some is left). */
  if (!c->closing && unsent(c) == 0 && !nghttp2_session_want_read(c->session) &&
      !nghttp2_session_want_write(c->session))
    c->closing = 1;
  if (c->closing) schedule_flush(c); /* tear down from the loop, not inside a callback */
}

static void flush_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  h2conn *c = arg;
  if (c->closing)
    teardown(c);
  else
    do_send(c);
}

/* The transport has input: one read of up to READ_CHUNK per wake-up. */
static void on_conn_read(conn *cn, void *arg) {
  h2conn *c = arg;
  struct evbuffer_iovec v;
  if (evbuffer_reserve_space(c->in, READ_CHUNK, &v, 1) != 1) abort();
  ssize_t r = conn_read(cn, v.iov_base, v.iov_len);
  v.iov_len = r > 0 ? (size_t)r : 0;
  evbuffer_commit_space(c->in, &v, 1);
  if (r == -EAGAIN) return;
  if (r <= 0) {
    if (r < 0) LOG_DEBUG("h2: %s", conn_error(cn));
    /* End of stream or failure: tear down from the deferred event. */
    reading(c, 0);
    c->closing = 1;
    schedule_flush(c);
    return;
  }
  process_input(c);
  do_send(c);
}

/* Output went out: take up reading again if it was held, and send more. */
static void output_went(h2conn *c) {
  if (c->read_held && !over_high_water(c)) {
    c->read_held = 0;
    if (!c->read_paused) reading(c, 1);
    process_input(c);
  }
  do_send(c);
}

/* The transport takes output again. */
static void on_conn_write(conn *cn, void *arg) {
  (void)cn;
  h2conn *c = arg;
  c->write_wait = 0;
  write_now(c);
  if (c->closing) {
    schedule_flush(c);
    return;
  }
  output_went(c);
}

/* Ends everything: open streams are closed (nghttp2_session_del would not call
 * on_stream_close for them), then the user hears of the connection's end. */
static void teardown(h2conn *c) {
  if (c->dead) return;
  c->dead = 1;
  while (c->streams) {
    struct h2stream *s = c->streams;
    nghttp2_session_set_stream_user_data(c->session, s->id, NULL);
    if (c->cbs.on_stream_close) c->cbs.on_stream_close(c, s->id, s->user, NGHTTP2_CANCEL);
    stream_free(c, s);
  }
  nghttp2_session_del(c->session);
  evbuffer_free(c->in);
  evbuffer_free(c->out);
  event_free(c->flush_ev);
  /* The transport outlives the callback, which may ask it why it ended. */
  if (c->cbs.on_conn_close) c->cbs.on_conn_close(c, c->conn_user);
  conn_free(c->conn);
  free(c);
}

/* ---- public API ----------------------------------------------------------------- */

int h2conn_new(h2conn **out, conn *cn, enum h2conn_role role, const h2conn_opts *opts,
               const h2conn_callbacks *cbs, void *conn_user) {
  static const h2conn_opts defaults = H2CONN_OPTS_INIT;
  nghttp2_session_callbacks *ncb = NULL;
  nghttp2_option *nopt = NULL;
  h2conn *c = NULL;
  int rc = -ENOMEM;

  c = calloc(1, sizeof *c);
  if (!c) goto fail;
  c->conn = cn;
  c->role = role;
  c->opts = opts ? *opts : defaults;
  c->cbs = *cbs;
  c->conn_user = conn_user;
  c->flush_ev = event_new(conn_base(cn), -1, 0, flush_cb, c);
  c->in = evbuffer_new();
  c->out = evbuffer_new();
  if (!c->flush_ev || !c->in || !c->out) goto fail;
  /* File chains then stay unmapped, for sendfile (h2conn_stream_add_file). */
  if (conn_can_sendfile(cn)) evbuffer_set_flags(c->out, EVBUFFER_FLAG_DRAINS_TO_FD);

  if (nghttp2_session_callbacks_new(&ncb) != 0) goto fail;
  nghttp2_session_callbacks_set_send_callback(ncb, send_cb);
  nghttp2_session_callbacks_set_send_data_callback(ncb, send_data_cb);
  nghttp2_session_callbacks_set_data_source_read_length_callback(ncb, read_length_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(ncb, begin_headers_cb);
  nghttp2_session_callbacks_set_on_header_callback(ncb, header_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(ncb, frame_recv_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ncb, data_chunk_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(ncb, frame_send_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(ncb, stream_close_cb);
  if (nghttp2_option_new(&nopt) != 0) goto fail;
  nghttp2_option_set_stream_reset_rate_limit(nopt, RST_BURST, RST_RATE);
  nghttp2_option_set_max_continuations(nopt, MAX_CONTINUATIONS);

  int nrv = role == H2CONN_SERVER ? nghttp2_session_server_new2(&c->session, ncb, c, nopt)
                                  : nghttp2_session_client_new2(&c->session, ncb, c, nopt);
  if (nrv != 0) goto fail;

  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, c->opts.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->opts.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, c->opts.max_header_list_size},
      /* nghttp2 hands DATA to us as it arrives, so large frames cost no buffer. */
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, DATA_FRAME_MAX},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  /* ENABLE_PUSH is a client-only setting. */
  size_t niv = role == H2CONN_CLIENT ? 5 : 4;
  rc = -EPROTO;
  if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, niv) != 0) goto fail;
  if (nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0,
                                            (int32_t)c->opts.connection_window_size) != 0)
    goto fail;

  nghttp2_option_del(nopt);
  nghttp2_session_callbacks_del(ncb);
  conn_set_handlers(cn, on_conn_read, on_conn_write, c);
  conn_want_read(cn, 1);
  /* Our SETTINGS go out at once: C-core clients wait for them (grpc#23636). */
  schedule_flush(c);
  *out = c;
  return 0;

fail:
  if (c && c->session) nghttp2_session_del(c->session);
  nghttp2_option_del(nopt);
  nghttp2_session_callbacks_del(ncb);
  if (c && c->flush_ev) event_free(c->flush_ev);
  if (c && c->in) evbuffer_free(c->in);
  if (c && c->out) evbuffer_free(c->out);
  free(c);
  conn_free(cn);
  return rc;
}

void h2conn_free(h2conn *c) {
  if (c) teardown(c);
}

void h2conn_close(h2conn *c) {
  if (!c || c->dead) return;
  c->closing = 1;
  schedule_flush(c);
}

void h2conn_shutdown(h2conn *c) {
  if (!c || c->dead) return;
  /* Streams the peer opened after the last one we processed are refused; the
   * peer may retry them elsewhere. */
  nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR, NULL,
                        0);
  schedule_flush(c);
}

static nghttp2_data_provider provider_for(struct h2stream *s) {
  nghttp2_data_provider prd;
  prd.source.ptr = s;
  prd.read_callback = data_read_cb;
  return prd;
}

int h2conn_submit_request(h2conn *c, int32_t *out_sid, const nghttp2_nv *nva, size_t nvlen,
                          int has_body, void *stream_user) {
  if (c->dead || c->role != H2CONN_CLIENT) return -EINVAL;
  struct h2stream *s = stream_new(c, stream_user);
  s->has_body = has_body != 0;
  nghttp2_data_provider prd = provider_for(s);
  int32_t sid = nghttp2_submit_request(c->session, NULL, nva, nvlen, has_body ? &prd : NULL, s);
  if (sid < 0) {
    stream_free(c, s);
    return sid == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE ? -EAGAIN
           : sid == NGHTTP2_ERR_NOMEM                 ? -ENOMEM
                                                      : -EINVAL;
  }
  s->id = sid;
  schedule_flush(c);
  *out_sid = sid;
  return 0;
}

int h2conn_submit_response(h2conn *c, int32_t sid, const nghttp2_nv *nva, size_t nvlen,
                           int has_body) {
  struct h2stream *s = stream_get(c, sid);
  if (!s) return -ENOENT;
  if (s->responded) return -EINVAL;
  s->responded = 1;
  s->has_body = has_body != 0;
  nghttp2_data_provider prd = provider_for(s);
  if (nghttp2_submit_response(c->session, sid, nva, nvlen, has_body ? &prd : NULL) != 0)
    return -EINVAL;
  schedule_flush(c);
  return 0;
}

struct evbuffer *h2conn_stream_output(h2conn *c, int32_t sid) {
  struct h2stream *s = stream_get(c, sid);
  return s ? s->out : NULL;
}

void h2conn_stream_resume(h2conn *c, int32_t sid) {
  struct h2stream *s = stream_get(c, sid);
  if (!s) return;
  /* resume_data on a stream that is not deferred is an error (nghttp2#399). */
  if (s->deferred) {
    s->deferred = 0;
    nghttp2_session_resume_data(c->session, sid);
  }
  schedule_flush(c);
}

int h2conn_stream_end(h2conn *c, int32_t sid, const nghttp2_nv *nva, size_t nvlen) {
  struct h2stream *s = stream_get(c, sid);
  if (!s) return -ENOENT;
  if (!s->has_body || s->ending) return -EINVAL;
  s->ending = 1;
  if (nvlen > 0) {
    s->trailers = nv_copy(nva, nvlen);
    s->ntrailers = nvlen;
  }
  h2conn_stream_resume(c, sid);
  return 0;
}

void h2conn_stream_reset(h2conn *c, int32_t sid, uint32_t error_code) {
  if (!stream_get(c, sid)) return;
  nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, sid, error_code);
  schedule_flush(c);
}

int h2conn_stream_add_file(h2conn *c, int32_t sid, struct evbuffer_file_segment *seg, size_t len) {
  struct h2stream *s = stream_get(c, sid);
  if (!s || s->ending) {
    evbuffer_file_segment_free(seg);
    return s ? -EINVAL : -ENOENT;
  }
  if (len == 0) {
    evbuffer_file_segment_free(seg);
    return 0;
  }
  if (!conn_can_sendfile(c->conn)) {
    /* A transport that cannot send files (TLS, an in-memory pair): libevent
     * maps the file into a chain of the stream's output, which then goes as memory. On
     * a plain buffer the mapping is the only way this fails, and then the reference is
     * still ours. */
    int rc = evbuffer_add_file_segment(s->out, seg, 0, (ev_off_t)len);
    evbuffer_file_segment_free(seg);
    if (rc != 0) return -EIO;
    h2conn_stream_resume(c, sid);
    return 0;
  }
  /* What the user appended so far goes first: it becomes a memory piece. */
  size_t before = evbuffer_get_length(s->out);
  if (before > 0) {
    struct piece *m = xcalloc(1, sizeof *m);
    m->mem = evbuffer_new();
    if (!m->mem) abort();
    if (evbuffer_add_buffer(m->mem, s->out) != 0) abort();
    m->len = before;
    piece_push(s, m);
  }
  struct piece *p = xcalloc(1, sizeof *p);
  p->seg = seg;
  p->len = len;
  piece_push(s, p);
  h2conn_stream_resume(c, sid);
  return 0;
}

size_t h2conn_stream_pending(h2conn *c, int32_t sid) {
  struct h2stream *s = stream_get(c, sid);
  return s ? stream_pending(s) : 0;
}

void h2conn_pause_input(h2conn *c, int paused) {
  if (c->dead || c->read_paused == (paused != 0)) return;
  c->read_paused = paused != 0;
  if (paused)
    reading(c, 0);
  else if (!c->read_held)
    reading(c, 1);
}

size_t h2conn_stream_count(const h2conn *c) { return c->nstreams; }

conn *h2conn_conn(h2conn *c) { return c->conn; }

size_t h2conn_output_pending(const h2conn *c) { return evbuffer_get_length(c->out); }
