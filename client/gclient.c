#include "gclient.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "addr.h"
#include "b64.h"
#include "compat.h"
#include "conn.h"
#include "grpcwire.h"
#include "h2conn.h"

#define GCL_USER_AGENT "prismq-c/0.1"

struct gcl_call {
  gcl_call *next, **prev_next; /* in conn->calls: the next call, and what points to this one */
  gcl_conn *conn;
  int32_t sid; /* 0: no stream was opened (the call failed at start) */
  /* The call's one event: its deadline while the stream is open, then, activated by
   * hand, the deferred completion that runs on_done outside h2conn's callbacks. */
  struct event *ev;
  struct evbuffer *in; /* the framed request until the stream opens */
  gw_deframer df;      /* response messages */
  gcl_msg_fn on_msg;
  gcl_done_fn on_done;
  void *user;
  int http_status;
  int grpc_status; /* -1 absent, -2 malformed */
  int grpc_type_ok;
  int closed;          /* h2conn closed the stream (or there never was one) */
  uint32_t reset_code; /* HTTP/2 error code the stream closed with */
  int have_status;     /* st is final: the first final status wins */
  gcl_status st;
  uint8_t *details; /* grpc-status-details-bin, decoded; NULL: none (kept) */
  size_t details_len;
};

struct gcl_conn {
  struct event_base *base;
  gcl_conn_opts opts;
  h2conn *h2; /* NULL once the connection has failed or closed */
  char *target;
  char authority[ADDR_FORMAT_LEN];
  const char *scheme; /* "https" over TLS */
  int freeing;
  char err[256];   /* why the connection is gone, for the calls that end with it */
  gcl_call *calls; /* the calls not completed yet, newest first */
};

/* ---- call status ---- */

static void call_set_status(gcl_call *call, int code, const char *fmt, ...) COMPAT_PRINTF(3, 4);

static void call_set_vstatus(gcl_call *call, int code, const char *fmt, va_list ap) {
  if (call->have_status) return;
  call->have_status = 1;
  call->st.code = code;
  vsnprintf(call->st.message, sizeof call->st.message, fmt, ap);
}

static void call_set_status(gcl_call *call, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  call_set_vstatus(call, code, fmt, ap);
  va_end(ap);
}

static int stream_open(const gcl_call *call) {
  return call->sid > 0 && !call->closed && call->conn->h2;
}

/* Ends the call locally with `code`: the stream is reset so the server stops, and
 * on_done follows once h2conn has closed it. */
static void call_fail(gcl_call *call, int code, const char *fmt, ...) COMPAT_PRINTF(3, 4);

static void call_fail(gcl_call *call, int code, const char *fmt, ...) {
  if (call->have_status) return;
  va_list ap;
  va_start(ap, fmt);
  call_set_vstatus(call, code, fmt, ap);
  va_end(ap);
  if (stream_open(call)) h2conn_stream_reset(call->conn->h2, call->sid, NGHTTP2_CANCEL);
}

/* grpc doc/PROTOCOL-HTTP2.md, "Errors": RST_STREAM codes as the client reports them. */
static int reset_code_status(uint32_t code) {
  switch (code) {
  case NGHTTP2_CANCEL: return GW_CANCELLED;
  case NGHTTP2_REFUSED_STREAM: return GW_UNAVAILABLE;
  case NGHTTP2_ENHANCE_YOUR_CALM: return GW_RESOURCE_EXHAUSTED;
  case NGHTTP2_INADEQUATE_SECURITY: return GW_PERMISSION_DENIED;
  default: return GW_INTERNAL;
  }
}

/* grpc doc/http-grpc-status-mapping.md. */
static int http_status_code(int http) {
  switch (http) {
  case 400: return GW_INTERNAL;
  case 401: return GW_UNAUTHENTICATED;
  case 403: return GW_PERMISSION_DENIED;
  case 404: return GW_UNIMPLEMENTED;
  case 429:
  case 502:
  case 503:
  case 504: return GW_UNAVAILABLE;
  default: return GW_UNKNOWN;
  }
}

static void call_free(gcl_call *call) {
  if (call->ev) event_free(call->ev);
  if (call->in) evbuffer_free(call->in);
  gw_deframer_reset(&call->df);
  free(call->details);
  free(call);
}

/* Decides the status of a call that ended without one, runs on_done, frees the call.
 * The call is unlinked first, so on_done may free the connection. */
static void call_complete(gcl_call *call) {
  gcl_conn *c = call->conn;
  if (c->freeing)
    call_set_status(call, GW_CANCELLED, "connection freed");
  else if (!c->h2)
    /* Streams cut by a lost connection close with CANCEL just before on_conn_close;
     * completion is deferred, so by now the connection is known to be gone. */
    call_set_status(call, GW_UNAVAILABLE, "%s", c->err);
  else if (call->reset_code != NGHTTP2_NO_ERROR)
    call_set_status(call, reset_code_status(call->reset_code), "stream reset by server: %s",
                    nghttp2_http2_strerror(call->reset_code));
  else
    call_set_status(call, GW_INTERNAL, "stream closed without grpc-status");
  *call->prev_next = call->next;
  if (call->next) call->next->prev_next = call->prev_next;
  call->on_done(call->user, &call->st);
  call_free(call);
}

/* Schedules call_complete from the loop (never from inside gcl_call_start or an
 * h2conn callback). */
static void call_schedule_done(gcl_call *call) {
  call->closed = 1;
  event_del(call->ev);
  event_active(call->ev, EV_TIMEOUT, 1);
}

static void call_event_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  gcl_call *call = arg;
  if (call->closed)
    call_complete(call);
  else
    call_fail(call, GW_DEADLINE_EXCEEDED, "deadline exceeded");
}

/* ---- h2conn callbacks ---- */

/* A non-negative decimal of at most 9 digits, or -1. */
static int parse_small_uint(const uint8_t *v, size_t len) {
  if (len == 0 || len > 9) return -1;
  int n = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    n = n * 10 + (v[i] - '0');
  }
  return n;
}

/* Keeps a grpc-status-details-bin value, decoded, for the status (the last one wins).
 * One that is malformed or too large is dropped, as is one that finds no memory: the
 * details only add to a status that stands without them. */
static void call_keep_details(gcl_call *call, const uint8_t *value, size_t len) {
  free(call->details);
  call->details = NULL;
  call->details_len = 0;
  /* The longest base64 of GCL_MAX_STATUS_DETAILS bytes, padded. */
  if (len > (GCL_MAX_STATUS_DETAILS + 2) / 3 * 4) return;
  uint8_t *d = malloc(B64_DECODED_MAX(len));
  size_t n;
  if (!d || b64_decode(d, &n, (const char *)value, len) < 0 || n > GCL_MAX_STATUS_DETAILS) {
    free(d);
    return;
  }
  call->details = d;
  call->details_len = n;
}

static int on_header(h2conn *h2, int32_t sid, void *stream_user, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, int trailer) {
  (void)h2;
  (void)sid;
  (void)trailer;
  gcl_call *call = stream_user;
  if (!call || call->have_status) return 0;
  if (gw_header_is(name, namelen, ":status")) {
    call->http_status = parse_small_uint(value, valuelen);
  } else if (gw_header_is(name, namelen, "content-type")) {
    call->grpc_type_ok = gw_content_type_is_grpc(value, valuelen);
  } else if (gw_header_is(name, namelen, "grpc-status")) {
    int code = parse_small_uint(value, valuelen);
    call->grpc_status = code < 0 ? -2 : code;
  } else if (gw_header_is(name, namelen, "grpc-message")) {
    gw_pct_decode(call->st.message, sizeof call->st.message, (const char *)value, valuelen);
  } else if (gw_header_is(name, namelen, "grpc-status-details-bin")) {
    call_keep_details(call, value, valuelen);
  }
  return 0;
}

/* The server ended the stream with trailers (or a trailers-only answer). */
static void call_take_trailers(gcl_call *call) {
  if (call->grpc_status == -1) {
    call_set_status(call, GW_UNKNOWN, "missing grpc-status in trailers");
  } else if (call->grpc_status == -2) {
    call_set_status(call, GW_UNKNOWN, "malformed grpc-status in trailers");
  } else if (call->grpc_status == GW_OK && gw_deframer_partial(&call->df) > 0) {
    call_set_status(call, GW_INTERNAL, "stream ended inside a message (%zu bytes left)",
                    gw_deframer_partial(&call->df));
  } else {
    /* st.message already holds the decoded grpc-message, if any. A code gRPC does
     * not define is UNKNOWN, as stock clients read it. */
    call->st.code = call->grpc_status > GW_UNAUTHENTICATED ? GW_UNKNOWN : call->grpc_status;
    call->have_status = 1;
    if (call->st.code != GW_OK) {
      call->st.details = call->details;
      call->st.details_len = call->details_len;
    }
  }
}

static void on_headers_done(h2conn *h2, int32_t sid, void *stream_user, int trailer,
                            int end_stream) {
  (void)h2;
  (void)sid;
  gcl_call *call = stream_user;
  if (!call || call->have_status) return;
  if (!trailer) {
    if (call->http_status != 200) {
      call_fail(call, http_status_code(call->http_status), "unexpected HTTP status %d",
                call->http_status);
      return;
    }
    /* A trailers-only answer is judged by its grpc-status alone. */
    if (!end_stream && !call->grpc_type_ok) {
      call_fail(call, GW_INTERNAL, "response content-type is not application/grpc");
      return;
    }
  }
  if (end_stream) call_take_trailers(call);
}

/* A message for the user; a non-zero return stops the deframer. */
static int deliver(void *arg, const uint8_t *msg, size_t len) {
  gcl_call *call = arg;
  if (call->on_msg && call->on_msg(call->user, msg, len)) {
    call_fail(call, GW_CANCELLED, "call cancelled by the client");
    return 1;
  }
  return call->have_status; /* on_msg may have ended the call */
}

static void on_data(h2conn *h2, int32_t sid, void *stream_user, const uint8_t *data, size_t len) {
  (void)h2;
  (void)sid;
  gcl_call *call = stream_user;
  if (!call || call->have_status) return;
  switch (gw_deframe(&call->df, data, len, deliver, call)) {
  case 0:
  case 1: break;
  case GW_FRAME_TOO_LARGE:
    call_fail(call, GW_RESOURCE_EXHAUSTED, "response message larger than %zu bytes",
              call->conn->opts.max_recv_msg);
    break;
  case GW_FRAME_COMPRESSED:
    call_fail(call, GW_INTERNAL, "compressed response message, but no encoding was asked for");
    break;
  case -ENOMEM:
    call_fail(call, GW_RESOURCE_EXHAUSTED, "out of memory for a response message");
    break;
  default: call_fail(call, GW_INTERNAL, "bad message flag in the response"); break;
  }
}

static void on_stream_close(h2conn *h2, int32_t sid, void *stream_user, uint32_t error_code) {
  (void)h2;
  (void)sid;
  gcl_call *call = stream_user;
  if (!call) return;
  call->reset_code = error_code;
  call_schedule_done(call);
}

static void on_conn_close(h2conn *h2, void *conn_user) {
  gcl_conn *c = conn_user;
  c->h2 = NULL;
  /* A transport that failed says why (refused, timed out, TLS handshake). */
  const char *why = conn_error(h2conn_conn(h2));
  if (!c->err[0]) snprintf(c->err, sizeof c->err, "%s", why[0] ? why : "connection closed");
}

static const h2conn_callbacks conn_callbacks = {
    .on_header = on_header,
    .on_headers_done = on_headers_done,
    .on_data = on_data,
    .on_stream_close = on_stream_close,
    .on_conn_close = on_conn_close,
};

/* ---- connection ---- */

/* Starts the transport to `a` and HTTP/2 over it. */
static int conn_open(gcl_conn *c, const addr *a, const struct sockaddr_storage *ss,
                     socklen_t sslen) {
  conn_tls_opts tls = {c->opts.tls_ctx, 0, c->opts.server_name, c->opts.connect_timeout_ms};
  if (!tls.server_name && a->kind == ADDR_TCP) tls.server_name = a->host;
  conn *cn = NULL;
  int rc = conn_connect(&cn, c->base, (const struct sockaddr *)ss, sslen, c->target,
                        c->opts.connect_timeout_ms, c->opts.tls_ctx ? &tls : NULL);
  if (rc < 0) return rc;
  h2conn_opts ho = H2CONN_OPTS_INIT;
  return h2conn_new(&c->h2, cn, H2CONN_CLIENT, &ho, &conn_callbacks, c);
}

int gcl_conn_new(gcl_conn **out, struct event_base *base, const char *target,
                 const gcl_conn_opts *opts, char *err, size_t errlen) {
  static const gcl_conn_opts defaults = GCL_CONN_OPTS_INIT;
  addr a;
  struct sockaddr_storage ss;
  socklen_t sslen;
  int rc = addr_parse(&a, target, err, errlen);
  if (rc == 0) rc = addr_sockaddr(&ss, &sslen, &a, 0, err, errlen);
  if (rc < 0) return rc;

  gcl_conn *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  c->base = base;
  c->opts = opts ? *opts : defaults;
  rc = -ENOMEM;
  c->target = strdup(target);
  if (!c->target) goto fail;
  c->scheme = c->opts.tls_ctx ? "https" : "http";
  /* gRPC names unix sockets "localhost" in :authority. */
  if (a.kind != ADDR_TCP)
    snprintf(c->authority, sizeof c->authority, "localhost");
  else if (c->opts.server_name)
    snprintf(c->authority, sizeof c->authority, "%s:%u", c->opts.server_name, a.port);
  else {
    a.tls = 0;
    addr_format(c->authority, sizeof c->authority, &a);
  }
  rc = conn_open(c, &a, &ss, sslen);
  if (rc < 0 && rc != -ENOMEM && err && errlen)
    snprintf(err, errlen, "connect to %s: %s", target, compat_strerror(-rc));
  if (rc < 0) goto fail;
  *out = c;
  return 0;

fail:
  gcl_conn_free(c);
  return rc;
}

void gcl_conn_free(gcl_conn *c) {
  /* Also a no-op from an on_done that this very free runs. */
  if (!c || c->freeing) return;
  c->freeing = 1;
  /* Closes every stream (each schedules its completion), then on_conn_close. */
  h2conn_free(c->h2);
  gcl_call *call;
  while ((call = c->calls) != NULL) {
    call->closed = 1;
    call_complete(call);
  }
  free(c->target);
  free(c);
}

/* ---- calls ---- */

/* Opens the stream for the request already framed in call->in. Nothing can fail once
 * the stream exists: the bytes move to its output without a copy, leaving call->in
 * empty for the response. Returns 0, -ENOMEM, or another negative errno from h2conn
 * (the connection takes no new streams). */
static int call_submit(gcl_call *call, const char *path, uint64_t timeout_ms) {
  gcl_conn *c = call->conn;
  char timeout[16];
#define NV(n, v, vlen) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}
#define NVS(n, s)      NV(n, s, strlen(s))
  nghttp2_nv nva[] = {
      NVS(":method", "POST"),
      NVS(":scheme", c->scheme),
      NVS(":path", path),
      NVS(":authority", c->authority),
      NVS("content-type", "application/grpc"),
      NVS("te", "trailers"),
      NVS("user-agent", GCL_USER_AGENT),
      NV("grpc-timeout", timeout, timeout_ms ? gw_timeout_format(timeout, timeout_ms) : 0),
  };
#undef NVS
#undef NV
  size_t nvlen = sizeof nva / sizeof nva[0] - (timeout_ms ? 0 : 1);
  int rc = h2conn_submit_request(c->h2, &call->sid, nva, nvlen, 1, call);
  if (rc < 0) return rc;
  evbuffer_add_buffer(h2conn_stream_output(c->h2, call->sid), call->in);
  h2conn_stream_resume(c->h2, call->sid);
  h2conn_stream_end(c->h2, call->sid, NULL, 0);
  return 0;
}

int gcl_call_start(gcl_call **out, gcl_conn *c, const char *path, const uint8_t *req, size_t len,
                   uint64_t timeout_ms, gcl_msg_fn on_msg, gcl_done_fn on_done, void *user) {
  gcl_call *call = calloc(1, sizeof *call);
  if (!call) return -ENOMEM;
  call->conn = c;
  call->on_msg = on_msg;
  call->on_done = on_done;
  call->user = user;
  call->http_status = -1;
  call->grpc_status = -1;
  call->ev = event_new(c->base, -1, 0, call_event_cb, call);
  call->df = (gw_deframer)GW_DEFRAMER_INIT(c->opts.max_recv_msg);
  call->in = evbuffer_new();
  int rc = call->ev && call->in ? gw_frame_append(call->in, req, len) : -ENOMEM;
  if (rc == 0 && timeout_ms) {
    /* The deadline covers connecting too. Past ~68 years it is moot; the cap keeps
     * time_t arithmetic sane. */
    uint64_t sec = timeout_ms / 1000 > INT32_MAX ? INT32_MAX : timeout_ms / 1000;
    struct timeval tv = {.tv_sec = (long)sec, .tv_usec = (long)(timeout_ms % 1000) * 1000};
    if (event_add(call->ev, &tv) < 0) rc = -ENOMEM;
  }
  if (rc < 0) goto fail;

  if (!c->h2) {
    call_set_status(call, GW_UNAVAILABLE, "%s", c->err);
  } else {
    rc = call_submit(call, path, timeout_ms);
    if (rc == -ENOMEM) goto fail;
    if (rc < 0)
      call_set_status(call, GW_UNAVAILABLE, "connection takes no new calls: %s", strerror(-rc));
  }
  call->next = c->calls;
  if (c->calls) c->calls->prev_next = &call->next;
  c->calls = call;
  call->prev_next = &c->calls;
  if (call->sid == 0) call_schedule_done(call);
  if (out) *out = call;
  return 0;

fail:
  call_free(call);
  return rc;
}

void gcl_call_cancel(gcl_call *call) { call_fail(call, GW_CANCELLED, "call cancelled"); }

/* ---- blocking unary ---- */

struct unary {
  int done;
  size_t nmsg;
  int nomem;
  uint8_t *msg;
  size_t len;
  gcl_status st;
};

static int unary_msg(void *user, const uint8_t *msg, size_t len) {
  struct unary *u = user;
  if (u->nmsg++ > 0) return 1;
  if (len > 0) {
    u->msg = malloc(len);
    if (!u->msg) {
      u->nomem = 1;
      return 1;
    }
    memcpy(u->msg, msg, len);
  }
  u->len = len;
  return 0;
}

static void unary_done(void *user, const gcl_status *st) {
  struct unary *u = user;
  u->done = 1;
  u->st = *st;
  /* They go with the call, which ends as this returns. */
  u->st.details = NULL;
  u->st.details_len = 0;
  if (u->nomem) {
    u->st.code = GW_RESOURCE_EXHAUSTED;
    snprintf(u->st.message, sizeof u->st.message, "out of memory for the response");
  } else if (u->nmsg > 1) {
    u->st.code = GW_INTERNAL;
    snprintf(u->st.message, sizeof u->st.message, "unary call got more than one response");
  } else if (st->code == GW_OK && u->nmsg == 0) {
    u->st.code = GW_INTERNAL;
    snprintf(u->st.message, sizeof u->st.message, "unary call got no response message");
  }
}

int gcl_unary(gcl_conn *c, const char *path, const uint8_t *req, size_t len, uint64_t timeout_ms,
              uint8_t **resp, size_t *resp_len, gcl_status *st) {
  struct unary u = {0};
  int rc = gcl_call_start(NULL, c, path, req, len, timeout_ms, unary_msg, unary_done, &u);
  if (rc < 0) {
    u.st.code = GW_RESOURCE_EXHAUSTED;
    snprintf(u.st.message, sizeof u.st.message, "cannot start the call: %s", strerror(-rc));
  }
  /* A pending call always has an event (socket, deadline or completion), so the loop
   * cannot run dry before on_done. */
  while (rc == 0 && !u.done) event_base_loop(c->base, EVLOOP_ONCE);
  if (u.st.code == GW_OK) {
    *resp = u.msg;
    *resp_len = u.len;
  } else {
    free(u.msg);
  }
  if (st) *st = u.st;
  return u.st.code;
}
