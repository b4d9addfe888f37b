#include "call.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "compat.h"
#include "grpcwire.h"
#include "h2conn.h"
#include "log.h"
#include "metrics.h"
#include "xalloc.h"

/* Codes a gRPC status may have (0..16). */
#define NCODES 17

/* A method's series in opts.metrics: kept with it so that counting a call is additions. */
struct method_stats {
  metrics_series *started, *seconds;
  metrics_series *handled[NCODES]; /* by status code, each made on first use */
  const char *labels[2];           /* grpc_service, grpc_method: into name */
  char name[256];
};

struct method {
  char *path;
  call_handler_fn fn;  /* a unary request's handler, or NULL */
  call_stream_fn open; /* else streamed requests' (call_server_add_stream) */
  void *svc;
  unsigned need;              /* role bits of which the caller must hold one (0: none needed) */
  struct method_stats *stats; /* NULL without opts.metrics */
};

struct call_conn {
  call_server *srv;
  h2conn *h2;
  size_t held;            /* request bytes buffered by this connection's calls */
  size_t ncalls;          /* its streams (calls) open now */
  uint64_t idle_since;    /* ms when ncalls last became 0 (or it was accepted) */
  unsigned idle_shut : 1; /* shut down for being idle: closed if still there a timeout later */
  struct call_conn *prev, *next;
};

/* Request bytes one connection may have buffered at once, all its streams together
 * (or one message of the largest size, if more): nghttp2 reopens flow-control windows
 * as data arrives, so this is the real bound. */
#define CONN_MAX_HELD (16u << 20)
/* How often idle connections and stalled request headers are looked for, at most. */
#define SWEEP_MS 1000
/* A request must have arrived whole this long after its headers (or by its own
 * deadline, if sooner): a client cannot park half a request for ever. */
#define REQUEST_READ_MS 30000

enum call_state {
  CALL_HEADERS, /* reading request headers */
  CALL_BODY,    /* reading the request message; streamed requests: waiting for the handler */
  CALL_READY,   /* complete: waits for the dispatch, after the rest of the input read with it */
  CALL_HANDLER, /* the handler owns the call (streamed requests: reading them still) */
  CALL_DONE,    /* answered; waiting for the stream to close */
};

struct call {
  call_server *srv;
  struct call_conn *conn;
  int32_t sid;
  enum call_state state;
  char path[256];
  size_t pathlen;
  unsigned path_too_long : 1;
  unsigned is_post : 1;
  unsigned ct_grpc : 1;
  unsigned has_encoding : 1; /* grpc-encoding other than identity */
  unsigned headers_sent : 1;
  unsigned streaming : 1;    /* call_set_streaming: a shutdown ends it at once */
  unsigned queued : 1;       /* in the server's dispatch queue */
  unsigned remote_ended : 1; /* streamed requests: the client has ended its side */
  unsigned input_ended : 1;  /* streamed requests: on_input_end has fired */
  uint64_t opened_ms;        /* when its stream opened */
  struct timespec opened_at; /* the same on the monotonic clock, with opts.metrics only */
  unsigned roles;            /* the caller's role bits, known once the headers are in */
  char *md;                  /* request metadata: "name\0value\0" pairs in order */
  size_t mdlen, mdcap;
  uint64_t timeout_ms; /* UINT64_MAX = none */
  uint64_t deadline_at_ms;
  const struct method *method;
  struct evbuffer *in;
  uint8_t *msg;
  size_t msglen;
  size_t nmsgs;
  size_t held; /* this call's share of conn->held */
  struct event *deadline_ev;
  void (*on_cancel)(call *c, void *arg);
  void *cancel_arg;
  void (*on_writable)(call *c, void *arg);
  void *writable_arg;
  void (*on_message)(call *c, const uint8_t *msg, size_t len, void *arg);
  void (*on_input_end)(call *c, void *arg);
  void *input_arg;
  struct call *prev, *next;             /* the server's live calls */
  struct call *ready_prev, *ready_next; /* queued: the server's dispatch queue */
  /* A call made with call_server_invoke has no connection (conn is NULL): */
  const call_sink *sink;
  void *sink_arg;
  unsigned dropped : 1; /* call_drop: the invoker wants no answer */
  unsigned counted : 1; /* its end is in opts.metrics */
  conn_peer peer;
};

struct call_server {
  struct event_base *base;
  call_server_opts opts;
  log_limit send_refused; /* before_send failing: every send of every connection */
  log_limit conn_failed;  /* transports that failed */
  size_t max_held;        /* request bytes one connection may buffer */
  struct event *sweep_ev; /* idle_timeout_ms: closes idle connections */
  /* Complete unary requests and streamed-request calls with something to do, in order. */
  struct call *ready_head, *ready_tail;
  struct event *dispatch_ev; /* runs their handlers */
  struct method *methods;    /* sorted by path for bsearch */
  size_t nmethods;
  struct call_conn *conns;
  size_t nconns;
  struct call *calls;
  size_t ncalls;
  uint64_t total_calls;
  metrics_family *handled;      /* opts.metrics: grpc_server_handled_total */
  struct method_stats *unknown; /* opts.metrics: calls of no registered method */
  unsigned shutting_down : 1;
  struct event *drain_ev; /* the end of a graceful shutdown's wait for calls */
  void (*on_idle)(void *arg);
  void *idle_arg;
};

static uint64_t now_ms(struct event_base *base) {
  struct timeval tv;
  event_base_gettimeofday_cached(base, &tv);
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

#define NV(n, v) \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

/* ---- answering ------------------------------------------------------------------ */

/* A status message, kept short as the spec asks. */
#define MESSAGE_MAX 512

static void send_headers(call *c) {
  if (c->headers_sent || !c->conn) return;
  c->headers_sent = 1;
  nghttp2_nv nva[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                      NV("grpc-accept-encoding", "identity")};
  h2conn_submit_response(c->conn->h2, c->sid, nva, 3, 1);
}

static void disarm_deadline(call *c) {
  if (c->deadline_ev) event_del(c->deadline_ev);
}

/* Brings the connection's count of buffered request bytes up to date. */
static void update_held(call *c) {
  if (!c->conn) return; /* an invoked call's request is its invoker's */
  size_t now = evbuffer_get_length(c->in) + c->msglen;
  c->conn->held = c->conn->held - c->held + now;
  c->held = now;
}

/* An answered call needs none of its request any more. */
static void drop_request(call *c) {
  evbuffer_drain(c->in, evbuffer_get_length(c->in));
  free(c->msg);
  c->msg = NULL;
  c->msglen = 0;
  update_held(c);
}

static void arm_timer(call *c, uint64_t ms) {
  struct timeval tv = compat_timeout_ms(ms);
  evtimer_add(c->deadline_ev, &tv);
}

/* The call is answered: no timer, no request bytes held any more. */
static void mark_done(call *c) {
  c->state = CALL_DONE;
  disarm_deadline(c);
  drop_request(c);
}

static void end_invoked(call *c, int status, const char *msg, const uint8_t *details, size_t dlen);
static int invoked_may_tell(call *c);

static void count_answer(call *c, int status);

/* Sends the status (`msg` as it is, encoded here): as trailers after what was sent,
 * or trailers-only; `details` (a serialized google.rpc.Status, dlen bytes) in
 * grpc-status-details-bin only when not NULL. An invoked call's sink is told instead. */
static void answer(call *c, int status, const char *msg, const uint8_t *details, size_t dlen) {
  mark_done(c);
  if (c->srv->opts.metrics && !c->counted) count_answer(c, status);
  if (!c->conn) {
    end_invoked(c, status, msg, details, dlen);
    return;
  }
  char code[12], enc_msg[1024], *b64 = NULL;
  nghttp2_nv nva[6];
  size_t n = 0;
  snprintf(code, sizeof code, "%d", status);
  gw_pct_encode(enc_msg, sizeof enc_msg, msg);
  if (details) {
    /* Binary metadata goes base64 encoded, without padding as the gRPC spec prefers. */
    b64 = xmalloc(4 * ((dlen + 2) / 3) + 1);
    int k = EVP_EncodeBlock((unsigned char *)b64, details, (int)dlen);
    while (k > 0 && b64[k - 1] == '=') b64[--k] = '\0';
  }
  if (!c->headers_sent) {
    nva[n++] = (nghttp2_nv)NV(":status", "200");
    nva[n++] = (nghttp2_nv)NV("content-type", "application/grpc");
    nva[n++] = (nghttp2_nv)NV("grpc-accept-encoding", "identity");
  }
  nva[n++] = (nghttp2_nv)NV("grpc-status", code);
  if (enc_msg[0]) nva[n++] = (nghttp2_nv)NV("grpc-message", enc_msg);
  if (b64) nva[n++] = (nghttp2_nv)NV("grpc-status-details-bin", b64);
  if (c->headers_sent)
    h2conn_stream_end(c->conn->h2, c->sid, nva, n);
  else
    h2conn_submit_response(c->conn->h2, c->sid, nva, n, 0);
  if (status != GW_OK)
    LOG_DEBUG("call ended path=%.*s status=%s", (int)c->pathlen, c->path, gw_status_name(status));
  free(b64);
}

static void answerf(call *c, int status, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static void answerf(call *c, int status, const char *fmt, ...) {
  char msg[MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  answer(c, status, msg, NULL, 0);
}

/* An answer that is not gRPC at all (wrong content-type or method). */
static void answer_http(call *c, const char *http_status) {
  mark_done(c);
  nghttp2_nv nva[] = {NV(":status", http_status)};
  h2conn_submit_response(c->conn->h2, c->sid, nva, 1, 0);
}

/* The layer takes the call back from its handler: tell the handler first. */
static void cancel_handler(call *c) {
  if (c->state != CALL_HANDLER) return;
  c->state = CALL_DONE;
  void (*fn)(call *, void *) = c->on_cancel;
  c->on_cancel = NULL;
  c->on_writable = NULL;
  if (fn) fn(c, c->cancel_arg);
}

/* ---- the handler's API ---------------------------------------------------------- */

void call_on_cancel(call *c, void (*fn)(call *c, void *arg), void *arg) {
  c->on_cancel = fn;
  c->cancel_arg = arg;
}

void call_set_streaming(call *c) { c->streaming = 1; }

void call_on_writable(call *c, void (*fn)(call *c, void *arg), void *arg) {
  c->on_writable = fn;
  c->writable_arg = arg;
}

int call_writable(const call *c) {
  if (!c->conn) return c->sink->writable(c->sink_arg);
  return h2conn_stream_pending(c->conn->h2, c->sid) < c->srv->opts.stream_low_water;
}

static void ready_push(call *c);

void call_on_input(call *c, void (*on_message)(call *c, const uint8_t *msg, size_t len, void *arg),
                   void (*on_end)(call *c, void *arg), void *arg) {
  c->on_message = on_message;
  c->on_input_end = on_end;
  c->input_arg = arg;
  ready_push(c); /* what came in before is handed over from the loop */
}

int call_send(call *c, const struct ProtobufCMessage *msg) {
  if (!c->conn) {
    if (invoked_may_tell(c) == 0) c->sink->message(c->sink_arg, msg);
    return 0;
  }
  send_headers(c);
  struct evbuffer *out = h2conn_stream_output(c->conn->h2, c->sid);
  if (!out) return 0; /* stream already gone: the cancel callback is on its way */
  int rc = gw_frame_append_pb(out, msg);
  if (rc == 0) h2conn_stream_resume(c->conn->h2, c->sid);
  return rc;
}

int call_send_framed(call *c, struct evbuffer *framed) {
  if (!c->conn) {
    if (invoked_may_tell(c) == 0)
      c->sink->framed(c->sink_arg, framed);
    else
      evbuffer_drain(framed, evbuffer_get_length(framed));
    return 0;
  }
  send_headers(c);
  struct evbuffer *out = h2conn_stream_output(c->conn->h2, c->sid);
  if (!out) {
    evbuffer_drain(framed, evbuffer_get_length(framed));
    return 0;
  }
  if (evbuffer_add_buffer(out, framed) != 0) abort();
  h2conn_stream_resume(c->conn->h2, c->sid);
  return 0;
}

int call_send_file(call *c, struct evbuffer_file_segment *seg, size_t len) {
  if (!c->conn) {
    /* call_sends_files said no: this maps the segment, and the sink takes the bytes. */
    struct evbuffer *b = evbuffer_new();
    if (!b) abort();
    int rc = evbuffer_add_file_segment(b, seg, 0, (ev_off_t)len) == 0 ? 0 : -EIO;
    evbuffer_file_segment_free(seg);
    if (rc == 0) call_send_framed(c, b);
    evbuffer_free(b);
    return rc;
  }
  send_headers(c);
  int rc = h2conn_stream_add_file(c->conn->h2, c->sid, seg, len);
  return rc == -ENOENT ? 0 : rc; /* stream gone: the cancel callback is on its way */
}

static void finish_v(call *c, int status, const uint8_t *details, size_t dlen, const char *fmt,
                     va_list ap) {
  char msg[MESSAGE_MAX];
  msg[0] = '\0';
  if (fmt) vsnprintf(msg, sizeof msg, fmt, ap);
  c->on_cancel = NULL;
  c->on_writable = NULL;
  answer(c, status, msg, details, dlen);
}

void call_finish(call *c, int status, const char *fmt, ...) {
  if (c->state != CALL_HANDLER) return;
  va_list ap;
  va_start(ap, fmt);
  finish_v(c, status, NULL, 0, fmt, ap);
  va_end(ap);
}

void call_finish_details(call *c, int status, const uint8_t *details, size_t len, const char *fmt,
                         ...) {
  if (c->state != CALL_HANDLER) return;
  va_list ap;
  va_start(ap, fmt);
  finish_v(c, status, details, len, fmt, ap);
  va_end(ap);
}

uint64_t call_deadline_left_ms(const call *c) {
  if (c->timeout_ms == UINT64_MAX) return UINT64_MAX;
  uint64_t now = now_ms(c->srv->base);
  return now >= c->deadline_at_ms ? 0 : c->deadline_at_ms - now;
}

struct event_base *call_base(const call *c) {
  return c->srv->base;
}

const conn_peer *call_peer(const call *c) {
  return c->conn ? conn_get_peer(h2conn_conn(c->conn->h2)) : &c->peer;
}

unsigned call_roles(const call *c) { return c->roles; }

int call_sends_files(const call *c) {
  return c->conn && conn_can_sendfile(h2conn_conn(c->conn->h2));
}

const char *call_metadata(const call *c, const char *name, size_t *len) {
  size_t pos = 0;
  const char *n, *v;
  while (call_metadata_next(c, &pos, &n, &v))
    if (strcmp(n, name) == 0) {
      if (len) *len = strlen(v);
      return v;
    }
  return NULL;
}

int call_metadata_next(const call *c, size_t *pos, const char **name, const char **value) {
  if (*pos >= c->mdlen) return 0;
  *name = c->md + *pos;
  *value = *name + strlen(*name) + 1;
  *pos = (size_t)(*value - c->md) + strlen(*value) + 1;
  return 1;
}

/* ---- request processing --------------------------------------------------------- */

/* A status queued behind output the client does not read would never go out, and
 * the stream would hold its buffers: reset it instead (RST_STREAM CANCEL). */
static void reset_if_stalled(call *c) {
  if (c->conn && h2conn_stream_pending(c->conn->h2, c->sid) > 0)
    h2conn_stream_reset(c->conn->h2, c->sid, NGHTTP2_CANCEL);
}

static void ready_unlink(call *c);
static void call_release(call *c);

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  call *c = arg;
  if (c->state == CALL_DONE) {
    if (!c->conn) call_release(c); /* armed by end_invoked, out of the sink's callback */
    return;
  }
  if (c->queued) ready_unlink(c);
  if (c->state == CALL_BODY && call_deadline_left_ms(c) > 0) {
    answerf(c, GW_DEADLINE_EXCEEDED, "request not received whole within %d ms", REQUEST_READ_MS);
  } else {
    cancel_handler(c);
    answerf(c, GW_DEADLINE_EXCEEDED, "deadline of %llu ms exceeded",
            (unsigned long long)c->timeout_ms);
  }
  reset_if_stalled(c);
}

/* A new call, among the server's live ones. */
static call *call_create(call_server *s) {
  call *c = xcalloc(1, sizeof *c);
  c->srv = s;
  c->timeout_ms = UINT64_MAX;
  c->opened_ms = now_ms(s->base);
  if (s->opts.metrics) clock_gettime(CLOCK_MONOTONIC, &c->opened_at);
  c->in = evbuffer_new();
  if (!c->in) abort();
  c->next = s->calls;
  if (s->calls) s->calls->prev = c;
  s->calls = c;
  s->ncalls++;
  s->total_calls++;
  return c;
}

/* Takes the call out of the server's live ones and frees it. */
static void call_release(call *c) {
  call_server *s = c->srv;
  if (c->queued) ready_unlink(c);
  if (c->prev)
    c->prev->next = c->next;
  else
    s->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  s->ncalls--;
  /* Ended with no status sent (the client reset the stream, the invoker dropped it). */
  if (s->opts.metrics && c->method && !c->counted) count_answer(c, GW_CANCELLED);
  drop_request(c);
  if (c->conn && --c->conn->ncalls == 0) c->conn->idle_since = now_ms(s->base);
  if (c->deadline_ev) event_free(c->deadline_ev);
  evbuffer_free(c->in);
  free(c->md);
  free(c);
}

static void *on_stream_open(h2conn *h2, int32_t sid, void *conn_user) {
  (void)h2;
  struct call_conn *cn = conn_user;
  call *c = call_create(cn->srv);
  c->conn = cn;
  c->sid = sid;
  cn->ncalls++;
  return c;
}

/* Keeps a metadata entry. h2conn bounds a request's header list
 * (h2conn_opts.max_header_list_size), and so what this holds. */
static void md_add(call *c, const uint8_t *name, size_t namelen, const uint8_t *value,
                   size_t valuelen) {
  size_t need = c->mdlen + namelen + valuelen + 2;
  if (need > c->mdcap) {
    size_t cap = c->mdcap ? c->mdcap : 256;
    while (cap < need) cap *= 2;
    c->md = xrealloc(c->md, cap);
    c->mdcap = cap;
  }
  memcpy(c->md + c->mdlen, name, namelen);
  c->md[c->mdlen + namelen] = '\0';
  memcpy(c->md + c->mdlen + namelen + 1, value, valuelen);
  c->md[need - 1] = '\0';
  c->mdlen = need;
}

static int on_header(h2conn *h2, int32_t sid, void *user, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, int trailer) {
  (void)h2;
  (void)sid;
  call *c = user;
  if (!c || trailer || c->state != CALL_HEADERS) return 0;
  if (gw_header_is(name, namelen, ":path")) {
    if (valuelen >= sizeof c->path) {
      c->path_too_long = 1;
      memcpy(c->path, value, sizeof c->path - 1);
      c->path[sizeof c->path - 1] = '\0';
    } else {
      memcpy(c->path, value, valuelen);
      c->path[valuelen] = '\0';
      c->pathlen = valuelen;
    }
  } else if (gw_header_is(name, namelen, ":method")) {
    c->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
  } else if (gw_header_is(name, namelen, "content-type")) {
    c->ct_grpc = gw_content_type_is_grpc(value, valuelen);
  } else if (gw_header_is(name, namelen, "grpc-timeout")) {
    uint64_t ms;
    /* A malformed timeout is ignored, as gRPC C-core does. */
    if (gw_timeout_parse(&ms, (const char *)value, valuelen) == 0) c->timeout_ms = ms;
  } else if (gw_header_is(name, namelen, "grpc-encoding")) {
    c->has_encoding = !(valuelen == 8 && memcmp(value, "identity", 8) == 0);
  }
  if (namelen > 0 && name[0] != ':') md_add(c, name, namelen, value, valuelen);
  return 0;
}

/* Binary search of the sorted method table for a path that is not NUL-terminated. */
static const struct method *find_method(const call_server *s, const char *path, size_t len) {
  size_t lo = 0, hi = s->nmethods;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const char *p = s->methods[mid].path;
    size_t plen = strlen(p);
    int cmp = memcmp(path, p, len < plen ? len : plen);
    if (cmp == 0) cmp = (len > plen) - (len < plen);
    if (cmp == 0) return &s->methods[mid];
    if (cmp < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* Names the bits of `bits` as "a or b" into buf. */
static void role_names(char *buf, size_t len, const call_server *s, unsigned bits) {
  size_t used = 0;
  buf[0] = '\0';
  for (unsigned bit = 1; bit && used < len; bit <<= 1) {
    if (!(bits & bit)) continue;
    char num[16];
    const char *name = s->opts.role_name ? s->opts.role_name(bit) : NULL;
    if (!name) {
      snprintf(num, sizeof num, "%u", bit);
      name = num;
    }
    int n = snprintf(buf + used, len - used, "%s%s", used ? " or " : "", name);
    if (n < 0) break;
    used += (size_t)n;
  }
}

int call_server_commit(call_server *s) {
  return s->opts.before_send ? s->opts.before_send(s->opts.before_send_arg) : 0;
}

unsigned call_server_roles(const call_server *s, const conn_peer *peer) {
  return s->opts.roles ? s->opts.roles(s->opts.roles_arg, peer) : ~0u;
}

/* The one authorization check: the caller must hold one of the method's roles. Done
 * before the request body is read, so a caller without them makes us buffer nothing. */
static int authorized(call *c) {
  call_server *s = c->srv;
  const conn_peer *p = call_peer(c);
  c->roles = call_server_roles(s, p);
  if (c->method->stats) metrics_add(c->method->stats->started, 1);
  unsigned need = c->method->need;
  if (!need || (c->roles & need)) return 1;
  char names[128];
  role_names(names, sizeof names, s, need);
  LOG_INFO("permission denied path=%s identity=%s peer=%s needs=%s", c->path,
           p->identity[0] ? p->identity : "anonymous", p->addr, names);
  answerf(c, GW_PERMISSION_DENIED, "permission denied: %s needs role %s, which %s does not have",
          c->path, names, p->identity[0] ? p->identity : "an anonymous caller");
  return 0;
}

static void request_headers_done(call *c) {
  call_server *s = c->srv;
  if (!c->ct_grpc) {
    answer_http(c, "415");
    return;
  }
  if (!c->is_post) {
    answer_http(c, "405");
    return;
  }
  c->state = CALL_BODY;
  c->method = c->path_too_long ? NULL : find_method(s, c->path, c->pathlen);
  if (!c->method) {
    if (s->unknown) metrics_add(s->unknown->started, 1);
    answerf(c, GW_UNIMPLEMENTED, "unknown method %.*s", (int)(c->path_too_long ? 64 : c->pathlen),
            c->path);
    return;
  }
  if (!authorized(c)) return;
  if (c->timeout_ms != UINT64_MAX) c->deadline_at_ms = now_ms(s->base) + c->timeout_ms;
  c->deadline_ev = evtimer_new(s->base, deadline_cb, c);
  if (!c->deadline_ev) abort();
  arm_timer(c, c->timeout_ms < REQUEST_READ_MS ? c->timeout_ms : REQUEST_READ_MS);
  if (c->method->open) ready_push(c); /* its handler starts now, from the loop */
}

static void ready_unlink(call *c) {
  call_server *s = c->srv;
  if (c->ready_prev)
    c->ready_prev->ready_next = c->ready_next;
  else
    s->ready_head = c->ready_next;
  if (c->ready_next)
    c->ready_next->ready_prev = c->ready_prev;
  else
    s->ready_tail = c->ready_prev;
  c->ready_prev = c->ready_next = NULL;
  c->queued = 0;
}

/* Handlers run from the dispatch event, once nghttp2 has taken the rest of the input
 * read with the request: a RST_STREAM right behind it (Rapid Reset, CVE-2023-44487)
 * closes the stream before any work is done for it. */
static void ready_push(call *c) {
  if (c->queued) return;
  call_server *s = c->srv;
  c->queued = 1;
  c->ready_prev = s->ready_tail;
  if (s->ready_tail)
    s->ready_tail->ready_next = c;
  else
    s->ready_head = c;
  s->ready_tail = c;
  event_active(s->dispatch_ev, EV_TIMEOUT, 0);
}

/* The client has sent everything: for a unary method exactly one message makes a
 * valid call, which waits for the dispatch. */
static void request_complete(call *c) {
  if ((c->state == CALL_BODY || c->state == CALL_HANDLER) && c->method->open) {
    c->remote_ended = 1;
    ready_push(c); /* on_input_end fires from the loop, after the messages before it */
    return;
  }
  if (c->state != CALL_BODY) return;
  if (evbuffer_get_length(c->in) > 0) {
    answerf(c, GW_INTERNAL, "request stream ended inside a message");
    return;
  }
  if (c->nmsgs != 1) {
    answerf(c, GW_UNIMPLEMENTED, "%s expects exactly one request message, got %zu", c->path,
            c->nmsgs);
    return;
  }
  c->state = CALL_READY;
  ready_push(c);
}

/* The handler takes the call: from now on only the call's own deadline applies.
 * Returns 0, or -1 if the server is shutting down (answered UNAVAILABLE). */
static int begin_handler(call *c) {
  if (c->srv->shutting_down) {
    answerf(c, GW_UNAVAILABLE, "server shutting down");
    return -1;
  }
  c->state = CALL_HANDLER;
  if (c->timeout_ms == UINT64_MAX)
    event_del(c->deadline_ev);
  else
    arm_timer(c, call_deadline_left_ms(c));
  return 0;
}

/* Hands a complete request to its method's handler. */
static void run_handler(call *c) {
  if (begin_handler(c) < 0) return;
  uint8_t *msg = c->msg;
  size_t len = c->msglen;
  c->msg = NULL;
  c->msglen = 0;
  update_held(c);
  c->method->fn(c, msg, len, c->method->svc);
  free(msg);
}

/* Answers a message that gw_frame_next refused (`r`), dropping the request bytes. */
static void refuse_message(call *c, int r) {
  uint8_t hdr[GW_PREFIX_LEN];
  evbuffer_copyout(c->in, hdr, sizeof hdr);
  uint32_t announced;
  int flag = gw_prefix_decode(&announced, hdr);
  evbuffer_drain(c->in, evbuffer_get_length(c->in));
  switch (r) {
  case GW_FRAME_TOO_LARGE:
    answerf(c, GW_RESOURCE_EXHAUSTED, "request message of %u bytes exceeds the limit of %zu bytes",
            announced, c->srv->opts.max_recv_msg);
    return;
  case GW_FRAME_COMPRESSED:
    if (c->has_encoding)
      answerf(c, GW_UNIMPLEMENTED,
              "compressed messages are not supported; use grpc-encoding identity");
    else
      answerf(c, GW_INTERNAL, "compressed flag set without a grpc-encoding");
    return;
  default: answerf(c, GW_INTERNAL, "invalid message flag %d", flag); return;
  }
}

/* Hands a streamed-request call's whole messages to its handler, then the end of its
 * input, for as long as it can answer them (call_writable): on_drain brings it back. */
static void stream_input(call *c) {
  for (;;) {
    if (c->state != CALL_HANDLER || !c->on_message || !call_writable(c)) return;
    uint8_t *msg;
    size_t len;
    int r = gw_frame_next(c->in, c->srv->opts.max_recv_msg, &msg, &len);
    if (r == GW_FRAME_NEED_MORE) break;
    if (r == -ENOMEM) abort();
    if (r != GW_FRAME_MSG) {
      cancel_handler(c);
      refuse_message(c, r);
      return;
    }
    update_held(c);
    c->on_message(c, msg, len, c->input_arg);
    free(msg);
  }
  if (!c->remote_ended || c->input_ended) return;
  if (evbuffer_get_length(c->in) > 0) {
    cancel_handler(c);
    answerf(c, GW_INTERNAL, "request stream ended inside a message");
    return;
  }
  c->input_ended = 1;
  if (c->on_input_end) c->on_input_end(c, c->input_arg);
}

/* A streamed-request call's turn: its handler starts on the first, then it is handed
 * what has come in. */
static void run_stream(call *c) {
  if (c->state == CALL_BODY) {
    if (begin_handler(c) < 0) return;
    c->method->open(c, c->method->svc);
  }
  stream_input(c);
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  call_server *s = arg;
  call *c;
  while ((c = s->ready_head) != NULL) {
    ready_unlink(c);
    if (c->state == CALL_READY)
      run_handler(c);
    else
      run_stream(c);
  }
}

static void on_headers_done(h2conn *h2, int32_t sid, void *user, int trailer, int end_stream) {
  (void)h2;
  (void)sid;
  call *c = user;
  if (!c) return;
  if (!trailer && c->state == CALL_HEADERS) request_headers_done(c);
  if (end_stream) request_complete(c);
}

static void on_data(h2conn *h2, int32_t sid, void *user, const uint8_t *data, size_t len) {
  (void)h2;
  (void)sid;
  call *c = user;
  /* Answered already: discard. A streamed-request call reads on in its handler. */
  if (!c || (c->state != CALL_BODY && c->state != CALL_HANDLER)) return;
  if (c->conn->held + len > c->srv->max_held) {
    cancel_handler(c);
    answerf(c, GW_RESOURCE_EXHAUSTED,
            "more than %zu bytes of requests in flight on this connection", c->srv->max_held);
    return;
  }
  if (evbuffer_add(c->in, data, len) != 0) abort();
  update_held(c);
  if (c->method->open) {
    /* Framing is checked as the messages are taken, from the loop's next turn: within
     * one read of a refused prefix. */
    ready_push(c);
    return;
  }
  for (;;) {
    uint8_t *msg;
    size_t mlen;
    if (c->nmsgs == 1 && evbuffer_get_length(c->in) > 0) {
      /* A second message begins: refuse it now rather than buffer its body. */
      answerf(c, GW_UNIMPLEMENTED, "%s expects exactly one request message, got more", c->path);
      return;
    }
    int r = gw_frame_next(c->in, c->srv->opts.max_recv_msg, &msg, &mlen);
    if (r == GW_FRAME_NEED_MORE) return;
    if (r == -ENOMEM) abort();
    if (r == GW_FRAME_MSG) {
      c->nmsgs++;
      c->msg = msg;
      c->msglen = mlen;
      update_held(c);
      continue;
    }
    refuse_message(c, r);
    return;
  }
}

static void on_remote_end(h2conn *h2, int32_t sid, void *user) {
  (void)h2;
  (void)sid;
  if (user) request_complete(user);
}

static void on_drain(h2conn *h2, int32_t sid, void *user) {
  (void)h2;
  (void)sid;
  call *c = user;
  if (!c || c->state != CALL_HANDLER) return;
  if (c->on_writable) c->on_writable(c, c->writable_arg);
  if (c->on_message) ready_push(c); /* input held back while the output was full */
}

static void on_stream_close(h2conn *h2, int32_t sid, void *user, uint32_t error_code) {
  (void)h2;
  (void)sid;
  call *c = user;
  if (!c) return;
  if (c->state == CALL_HANDLER)
    LOG_DEBUG("call cancelled by peer path=%s h2_error=%s", c->path,
              nghttp2_http2_strerror(error_code));
  if (c->queued) ready_unlink(c);
  cancel_handler(c);
  call_release(c);
}

/* Closes what holds resources without moving: connections with no call for
 * idle_timeout_ms (GOAWAY, then the connection ends), and streams whose request
 * headers have not all come in by then (a slow drip of headers). */
static void sweep_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  call_server *s = arg;
  uint64_t now = now_ms(s->base), limit = s->opts.idle_timeout_ms;
  for (struct call_conn *cn = s->conns; cn; cn = cn->next) {
    if (cn->ncalls > 0 || now < cn->idle_since || now - cn->idle_since < limit) continue;
    if (cn->idle_shut) {
      h2conn_close(cn->h2); /* its peer did not take the GOAWAY within a timeout */
      continue;
    }
    LOG_DEBUG("idle connection shut down peer=%s", conn_get_peer(h2conn_conn(cn->h2))->addr);
    cn->idle_shut = 1;
    cn->idle_since = now;
    h2conn_shutdown(cn->h2);
  }
  for (call *c = s->calls; c; c = c->next)
    if (c->state == CALL_HEADERS && now >= c->opened_ms && now - c->opened_ms >= limit)
      h2conn_stream_reset(c->conn->h2, c->sid, NGHTTP2_CANCEL);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  call_server *s = arg;
  void (*fn)(void *) = s->on_idle;
  s->on_idle = NULL;
  if (fn && s->nconns == 0) fn(s->idle_arg);
}

static void check_idle(call_server *s) {
  if (s->shutting_down && s->nconns == 0 && s->on_idle)
    event_base_once(s->base, -1, EV_TIMEOUT, idle_cb, s, NULL);
}

static void on_conn_close(h2conn *h2, void *conn_user) {
  struct call_conn *cn = conn_user;
  call_server *s = cn->srv;
  /* A transport that failed (a refused TLS handshake, a reset) says why; a flood of
   * them gives one line a second. */
  const conn *t = h2conn_conn(h2);
  unsigned long long held;
  if (conn_error(t)[0] && log_limit_pass(&s->conn_failed, 1000, &held))
    LOG_INFO("connection from %s ended: %s (%llu more since the last report)",
             conn_get_peer(t)->addr, conn_error(t), held);
  if (cn->prev)
    cn->prev->next = cn->next;
  else
    s->conns = cn->next;
  if (cn->next) cn->next->prev = cn->prev;
  s->nconns--;
  free(cn);
  check_idle(s);
}

static int on_send(h2conn *h2, void *conn_user) {
  (void)h2;
  call_server *s = ((struct call_conn *)conn_user)->srv;
  int rc = s->opts.before_send ? s->opts.before_send(s->opts.before_send_arg) : 0;
  if (rc == 0) return 0;
  unsigned long long held;
  if (log_limit_pass(&s->send_refused, 10000, &held))
    LOG_WARN(
        "connection closed unsent: its answers could not be made durable: %s (%llu more in the "
        "last 10 s)",
        strerror(-rc), held);
  return -1;
}

static const h2conn_callbacks conn_callbacks = {
    .on_stream_open = on_stream_open,
    .on_header = on_header,
    .on_headers_done = on_headers_done,
    .on_data = on_data,
    .on_remote_end = on_remote_end,
    .on_drain = on_drain,
    .on_stream_close = on_stream_close,
    .on_conn_close = on_conn_close,
    .on_send = on_send,
};

/* ---- the server ----------------------------------------------------------------- */

/* ---- metrics (opts.metrics) ---- */

/* The labels of go-grpc-prometheus, which dashboards know: a path "/pkg.Service/Method"
 * is grpc_service "pkg.Service", grpc_method "Method". */
static const char *const method_labels[] = {"grpc_service", "grpc_method", NULL};
static const char *const handled_labels[] = {"grpc_service", "grpc_method", "grpc_code", NULL};
/* Seconds; unary calls take tens of microseconds, streams as long as a run. */
static const double call_buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5,
                                      5,      10,      30,     60,    300,    3600};

static struct method_stats *stats_new(call_server *s, const char *path) {
  metrics *m = s->opts.metrics;
  struct method_stats *st = xcalloc(1, sizeof *st);
  snprintf(st->name, sizeof st->name, "%s", path[0] == '/' ? path + 1 : path);
  char *slash = strchr(st->name, '/');
  if (slash) *slash = '\0';
  st->labels[0] = st->name;
  st->labels[1] = slash ? slash + 1 : "";
  st->started = metrics_series_get(
      metrics_family_get(m, METRICS_COUNTER, "grpc_server_started_total",
                         "RPCs started on the server, by method.", method_labels, NULL, 0),
      st->labels);
  st->seconds = metrics_series_get(
      metrics_family_get(m, METRICS_HISTOGRAM, "grpc_server_handling_seconds",
                         "Time from a call's stream opening to its status, by method.",
                         method_labels, call_buckets, sizeof call_buckets / sizeof *call_buckets),
      st->labels);
  return st;
}

/* Counts the call's end with `status`, and how long it took. */
static void count_answer(call *c, int status) {
  call_server *s = c->srv;
  struct method_stats *st = c->method ? c->method->stats : s->unknown;
  if (!st) return;
  c->counted = 1;
  if (status < 0 || status >= NCODES) status = GW_UNKNOWN;
  if (!st->handled[status]) {
    /* Codes by their names in Go's grpc (codes.Code.String()), as go-grpc-prometheus
     * labels them and alerting rules expect them. */
    static const char *const names[NCODES] = {
        "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
        "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
        "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
        "DataLoss", "Unauthenticated"};
    const char *v[] = {st->labels[0], st->labels[1], names[status]};
    st->handled[status] = metrics_series_get(s->handled, v);
  }
  metrics_add(st->handled[status], 1);
  metrics_observe_since(st->seconds, &c->opened_at);
}

static void stats_open(call_server *s) {
  s->handled = metrics_family_get(s->opts.metrics, METRICS_COUNTER, "grpc_server_handled_total",
                                  "RPCs completed on the server, by method and status code.",
                                  handled_labels, NULL, 0);
  s->unknown = stats_new(s, "/unknown/unknown");
}

int call_server_new(call_server **out, struct event_base *base, const call_server_opts *opts) {
  static const call_server_opts defaults = CALL_SERVER_OPTS_INIT;
  call_server *s = calloc(1, sizeof *s);
  if (!s) return -ENOMEM;
  s->base = base;
  s->opts = opts ? *opts : defaults;
  s->max_held = s->opts.max_recv_msg + GW_PREFIX_LEN > CONN_MAX_HELD
                    ? s->opts.max_recv_msg + GW_PREFIX_LEN
                    : CONN_MAX_HELD;
  s->dispatch_ev = event_new(base, -1, 0, dispatch_cb, s);
  if (!s->dispatch_ev) {
    free(s);
    return -ENOMEM;
  }
  if (s->opts.metrics) stats_open(s);
  if (s->opts.idle_timeout_ms) {
    s->sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, s);
    /* A short timeout (tests) is looked at more often, within a quarter of itself. */
    uint32_t every =
        s->opts.idle_timeout_ms / 4 < SWEEP_MS ? s->opts.idle_timeout_ms / 4 + 1 : SWEEP_MS;
    struct timeval tv = compat_timeout_ms(every);
    if (!s->sweep_ev || event_add(s->sweep_ev, &tv) < 0) {
      if (s->sweep_ev) event_free(s->sweep_ev);
      event_free(s->dispatch_ev);
      free(s);
      return -ENOMEM;
    }
  }
  *out = s;
  return 0;
}

void call_server_free(call_server *s) {
  if (!s) return;
  while (s->conns) h2conn_free(s->conns->h2); /* on_conn_close unlinks it */
  /* What is left are invoked calls: their handlers hear of it, their invokers do not. */
  while (s->calls) {
    call *c = s->calls;
    call_drop(c);
    call_release(c);
  }
  if (s->sweep_ev) event_free(s->sweep_ev);
  if (s->drain_ev) event_free(s->drain_ev);
  event_free(s->dispatch_ev);
  for (size_t i = 0; i < s->nmethods; i++) {
    free(s->methods[i].path);
    free(s->methods[i].stats);
  }
  free(s->methods);
  free(s->unknown);
  free(s);
}

static int method_cmp(const void *a, const void *b) {
  return strcmp(((const struct method *)a)->path, ((const struct method *)b)->path);
}

/* Adds `m` with a copy of its path. Returns 0, -EEXIST or -ENOMEM. */
static int add_method(call_server *s, struct method m) {
  if (find_method(s, m.path, strlen(m.path))) return -EEXIST;
  struct method *all = realloc(s->methods, (s->nmethods + 1) * sizeof *all);
  if (!all) return -ENOMEM;
  s->methods = all;
  m.path = strdup(m.path);
  if (!m.path) return -ENOMEM;
  if (s->opts.metrics) m.stats = stats_new(s, m.path);
  all[s->nmethods++] = m;
  qsort(s->methods, s->nmethods, sizeof *all, method_cmp);
  return 0;
}

int call_server_add(call_server *s, const char *path, call_handler_fn fn, void *svc,
                    unsigned need) {
  return add_method(s, (struct method){(char *)path, fn, NULL, svc, need, NULL});
}

int call_server_add_stream(call_server *s, const char *path, call_stream_fn fn, void *svc,
                           unsigned need) {
  return add_method(s, (struct method){(char *)path, NULL, fn, svc, need, NULL});
}

call_handler_fn call_server_lookup(const call_server *s, const char *path, size_t len,
                                   void **svc_out) {
  const struct method *m = find_method(s, path, len);
  if (!m) return NULL;
  *svc_out = m->svc;
  return m->fn;
}

int call_server_accept(call_server *s, conn *transport) {
  if (s->shutting_down) {
    conn_free(transport);
    return -ECONNREFUSED;
  }
  struct call_conn *cn = xcalloc(1, sizeof *cn);
  cn->srv = s;
  cn->idle_since = now_ms(s->base);
  h2conn_opts o = H2CONN_OPTS_INIT;
  o.max_concurrent_streams = s->opts.max_streams;
  o.max_header_list_size = s->opts.max_header_list;
  int rc = h2conn_new(&cn->h2, transport, H2CONN_SERVER, &o, &conn_callbacks, cn);
  if (rc < 0) {
    free(cn);
    return rc;
  }
  cn->next = s->conns;
  if (s->conns) s->conns->prev = cn;
  s->conns = cn;
  s->nconns++;
  return 0;
}

/* Ends the calls in their handlers (only the streaming ones unless `all`) with
 * UNAVAILABLE. */
static void end_calls(call_server *s, int all) {
  for (call *c = s->calls, *next; c; c = next) {
    next = c->next;
    if (c->state != CALL_HANDLER || !(all || c->streaming)) continue;
    cancel_handler(c);
    answerf(c, GW_UNAVAILABLE, "server shutting down");
    reset_if_stalled(c);
  }
}

static void drain_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  end_calls(arg, 1);
}

void call_server_shutdown(call_server *s, uint32_t drain_ms, void (*on_idle)(void *arg),
                          void *arg) {
  s->shutting_down = 1;
  s->on_idle = on_idle;
  s->idle_arg = arg;
  end_calls(s, drain_ms == 0);
  if (drain_ms && !s->drain_ev) {
    s->drain_ev = evtimer_new(s->base, drain_cb, s);
    if (!s->drain_ev) abort();
    struct timeval tv = compat_timeout_ms(drain_ms);
    evtimer_add(s->drain_ev, &tv);
  }
  for (struct call_conn *cn = s->conns; cn; cn = cn->next) h2conn_shutdown(cn->h2);
  check_idle(s);
}

/* ---- calls without a connection ------------------------------------------------- */

/* An invoked call's sink hears nothing before the server has made durable what it
 * could tell (before_send, as a connection's output): 0, or -1 after answering the sink
 * UNAVAILABLE (the call is dropped: nothing more reaches the sink). */
static int invoked_may_tell(call *c) {
  call_server *s = c->srv;
  if (c->dropped) return -1;
  if (!s->opts.before_send || s->opts.before_send(s->opts.before_send_arg) == 0) return 0;
  LOG_ERROR("call path=%s answered UNAVAILABLE: the server could not commit its state", c->path);
  c->sink->finish(c->sink_arg, GW_UNAVAILABLE, "server could not commit its state", NULL, 0);
  if (s->opts.metrics && !c->counted) count_answer(c, GW_UNAVAILABLE);
  /* The handler hears of it from the loop (deadline_cb), not inside its own send. */
  c->dropped = 1;
  arm_timer(c, 0);
  return -1;
}

/* An invoked call has ended: its sink hears the status (unless dropped), and the call
 * is freed from its timer, not inside the sink's callback or the handler's call. */
static void end_invoked(call *c, int status, const char *msg, const uint8_t *details, size_t dlen) {
  if (invoked_may_tell(c) == 0) c->sink->finish(c->sink_arg, status, msg, details, dlen);
  c->dropped = 1;
  arm_timer(c, 0);
}

int call_server_invoke(call **out, call_server *s, const char *path, const uint8_t *req, size_t len,
                       const conn_peer *peer, const call_sink *sink, void *arg) {
  const struct method *m = find_method(s, path, strlen(path));
  if (!m || !m->fn) return -ENOENT;
  call *c = call_create(s);
  c->sink = sink;
  c->sink_arg = arg;
  c->peer = *peer;
  c->method = m;
  c->pathlen = strlen(m->path) < sizeof c->path ? strlen(m->path) : sizeof c->path - 1;
  memcpy(c->path, m->path, c->pathlen);
  c->deadline_ev = evtimer_new(s->base, deadline_cb, c);
  if (!c->deadline_ev) abort();
  *out = c;
  if (authorized(c) && begin_handler(c) == 0) m->fn(c, req, len, m->svc);
  return 0;
}

void call_sink_drained(call *c) {
  if (c->state == CALL_HANDLER && c->on_writable) c->on_writable(c, c->writable_arg);
}

void call_drop(call *c) {
  if (c->dropped) return;
  c->dropped = 1;
  cancel_handler(c);
  mark_done(c);
  arm_timer(c, 0);
}

size_t call_server_live_calls(const call_server *s) { return s->ncalls; }
size_t call_server_live_conns(const call_server *s) { return s->nconns; }
uint64_t call_server_total_calls(const call_server *s) { return s->total_calls; }
