/* Unit tests for server/call and the h2conn server role under it, entirely in memory,
 * with the raw nghttp2 client of testh2.h. Test handlers are registered with
 * call_server_add: echo, protobuf, fail-with-message, a streaming producer that honours
 * call_writable, and one that never finishes; and with call_server_add_stream, a
 * bidirectional echo. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "call.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"
#include "metrics.h"
#include "testh2.h"

#define P_ECHO   "/test.Echo/Unary"
#define P_PB     "/test.Echo/Serving"
#define P_FAIL   "/test.Echo/Fail"
#define P_HANG   "/test.Echo/Hang"
#define P_STREAM "/test.Echo/Stream"
#define P_DIRTY  "/test.Echo/Dirty"
#define P_WATCH  "/test.Echo/Watch" /* as P_HANG, marked streaming */
#define P_BIDI   "/test.Echo/Bidi"  /* streamed requests, each echoed */
/* Authorization and call context: one handler that records what the call tells. */
#define P_GUARDED "/test.Echo/Guarded" /* needs role bit 2 */
#define P_EITHER  "/test.Echo/Either"  /* needs role bit 2 or 4 */
#define P_OPEN    "/test.Echo/Open"    /* needs no role */
#define ROLE_TWO  2u
#define ROLE_FOUR 4u

#define STREAM_N   2000
#define STREAM_MSG 1000
/* What the server may hold for one slow stream: below the call layer's low-water mark
 * plus the message that crossed it, plus h2conn's socket high-water mark plus the
 * largest frame that crossed it, plus headers. From CALL_SERVER_OPTS_INIT and
 * H2CONN_OPTS_INIT (64 KiB each) and the 16 KiB default SETTINGS_MAX_FRAME_SIZE. */
#define QUEUE_BOUND \
  ((64u << 10) + STREAM_MSG + GW_PREFIX_LEN + (64u << 10) + (16u << 10) + 9 + 1024)

struct fx {
  struct event_base *base;
  call_server *srv;
  struct client cl;
  /* handlers */
  int handler_calls;
  int base_mismatch;  /* call_base() was not our base */
  size_t framed_left; /* bytes call_send_framed left behind */
  call *hang;         /* the never-finishing call, until cancelled */
  int cancels;
  call *watch; /* the streaming one, until cancelled */
  int watch_cancels;
  int cancel_wrong_call;
  uint64_t hang_left_ms;
  size_t st_sent, st_writable_calls;
  struct cstream *st_stream;
  size_t st_max_queued;
  int idle;
  /* before_send: P_DIRTY's handler sets dirty, the hook clears it; data that reaches
   * the client while dirty is counted. */
  int dirty, before_sends, dirty_data, refuse;
  /* opts.roles gives `roles` and notes whom it was asked about; inspect_handler notes
   * what its call tells (copied: valid only during the call). */
  unsigned roles;
  int roles_asked;
  char roles_peer[64];
  unsigned seen_roles;
  char seen_addr[64], seen_identity[256];
  int seen_local;
  char md_trace[64], md_dup[64], md_walk[512];
  size_t md_trace_len, md_empty_len;
  int md_missing_null, md_empty_found;
  /* P_BIDI: messages handed over, ends of input, cancels; copies sent of each (0: 1) */
  size_t bidi_msgs, bidi_copies;
  int bidi_ends, bidi_cancels;
};

/* ---- driving ---------------------------------------------------------------------- */

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- handlers --------------------------------------------------------------------- */

static void send_bytes(struct fx *f, call *c, const uint8_t *msg, size_t len) {
  struct evbuffer *b = evbuffer_new();
  if (!b || gw_frame_append(b, msg, len) != 0) abort();
  call_send_framed(c, b);
  f->framed_left += evbuffer_get_length(b);
  evbuffer_free(b);
}

static void note_call(struct fx *f, call *c) {
  f->handler_calls++;
  if (call_base(c) != f->base) f->base_mismatch = 1;
}

static void echo_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  struct fx *f = svc;
  note_call(f, c);
  send_bytes(f, c, req, len);
  call_finish(c, GW_OK, NULL);
}

/* As echo, after a change that must be made durable before any answer leaves. */
static void dirty_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  ((struct fx *)svc)->dirty = 1;
  echo_handler(c, req, len, svc);
}

/* As the run table's sync: nothing to do is never a failure; with `refuse`, making a
 * change durable fails (a full disk). */
static int make_clean(void *arg) {
  struct fx *f = arg;
  f->before_sends++;
  if (f->dirty && f->refuse) return -EIO;
  f->dirty = 0;
  return 0;
}

/* The client's on_data: counts response data that arrives while a change is not yet
 * durable. */
static void count_dirty_data(void *arg) {
  struct fx *f = arg;
  if (f->dirty) f->dirty_data++;
}

static void pb_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  (void)req;
  (void)len;
  note_call(svc, c);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  call_send(c, &resp.base);
  call_finish(c, GW_OK, NULL);
}

static void count_cancel(call *c, void *arg) {
  struct fx *f = arg;
  f->cancels++;
  if (f->hang && c != f->hang) f->cancel_wrong_call = 1;
  f->hang = NULL;
}

/* Echoes the request, then fails with the request's text as grpc-message. Its cancel
 * callback must never fire: the call is finished at once. */
static void fail_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  struct fx *f = svc;
  note_call(f, c);
  call_on_cancel(c, count_cancel, f);
  send_bytes(f, c, req, len);
  call_finish(c, GW_FAILED_PRECONDITION, "%.*s", (int)len, (const char *)req);
}

/* Never finishes; echoes a non-empty request first. */
static void hang_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  struct fx *f = svc;
  note_call(f, c);
  f->hang = c;
  f->hang_left_ms = call_deadline_left_ms(c);
  call_on_cancel(c, count_cancel, f);
  if (len > 0) send_bytes(f, c, req, len);
}

static void watch_cancelled(call *c, void *arg) {
  struct fx *f = arg;
  if (c == f->watch) f->watch_cancels++;
  f->watch = NULL;
}

/* Echoes the request and streams until cancelled (as a follow or a health Watch). */
static void watch_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  struct fx *f = svc;
  note_call(f, c);
  f->watch = c;
  call_set_streaming(c);
  call_on_cancel(c, watch_cancelled, f);
  send_bytes(f, c, req, len);
}

static void stream_msg(uint8_t *m, size_t idx) {
  m[0] = (uint8_t)(idx >> 24);
  m[1] = (uint8_t)(idx >> 16);
  m[2] = (uint8_t)(idx >> 8);
  m[3] = (uint8_t)idx;
  for (size_t j = 4; j < STREAM_MSG; j++) m[j] = (uint8_t)(idx * 7 + j);
}

/* Bytes the handler has produced that have not left the server (call layer, h2conn,
 * socket buffer). What sits in the client's input buffer has left: with a real socket
 * it would be in the kernel's receive buffer. */
static void note_queued(struct fx *f) {
  size_t made = f->st_sent * (STREAM_MSG + GW_PREFIX_LEN);
  size_t gone = evbuffer_get_length(f->st_stream->data) +
                evbuffer_get_length(bufferevent_get_input(f->cl.cbev));
  size_t held = made > gone ? made - gone : 0;
  if (held > f->st_max_queued) f->st_max_queued = held;
}

static void stream_fill(struct fx *f, call *c) {
  while (f->st_sent < STREAM_N && call_writable(c)) {
    uint8_t m[STREAM_MSG];
    stream_msg(m, f->st_sent);
    send_bytes(f, c, m, sizeof m);
    f->st_sent++;
    note_queued(f);
  }
  if (f->st_sent == STREAM_N) call_finish(c, GW_OK, NULL);
}

static void stream_writable(call *c, void *arg) {
  struct fx *f = arg;
  f->st_writable_calls++;
  stream_fill(f, c);
}

/* Sends STREAM_N messages, only while the call is writable. */
static void stream_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  (void)req;
  (void)len;
  struct fx *f = svc;
  note_call(f, c);
  call_on_cancel(c, count_cancel, f);
  call_on_writable(c, stream_writable, f);
  stream_fill(f, c);
}

static void bidi_message(call *c, const uint8_t *msg, size_t len, void *arg) {
  struct fx *f = arg;
  f->bidi_msgs++;
  for (size_t i = 0; i < (f->bidi_copies ? f->bidi_copies : 1); i++) send_bytes(f, c, msg, len);
}

static void bidi_end(call *c, void *arg) {
  ((struct fx *)arg)->bidi_ends++;
  call_finish(c, GW_OK, NULL);
}

static void bidi_cancelled(call *c, void *arg) {
  (void)c;
  ((struct fx *)arg)->bidi_cancels++;
}

/* Streamed requests: echoes each message as it comes (bidi_copies times), ends OK
 * after the last. */
static void bidi_open(call *c, void *svc) {
  struct fx *f = svc;
  note_call(f, c);
  call_on_cancel(c, bidi_cancelled, f);
  call_on_input(c, bidi_message, bidi_end, f);
}

static void on_idle(void *arg) { ((struct fx *)arg)->idle++; }

static void copy_str(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "(null)");
}

/* Notes the caller's roles and address, and the request metadata: by name (a custom
 * header, a missing one, a duplicated one, an empty one) and walked in order as
 * "name=value;" pairs. Then answers OK. */
static void inspect_handler(call *c, const uint8_t *req, size_t len, void *svc) {
  (void)req;
  (void)len;
  struct fx *f = svc;
  note_call(f, c);
  f->seen_roles = call_roles(c);
  const conn_peer *p = call_peer(c);
  copy_str(f->seen_addr, sizeof f->seen_addr, p->addr);
  copy_str(f->seen_identity, sizeof f->seen_identity, p->identity);
  f->seen_local = p->local;
  copy_str(f->md_trace, sizeof f->md_trace, call_metadata(c, "x-trace", &f->md_trace_len));
  f->md_missing_null = call_metadata(c, "x-missing", NULL) == NULL;
  copy_str(f->md_dup, sizeof f->md_dup, call_metadata(c, "x-dup", NULL));
  const char *empty = call_metadata(c, "x-empty", &f->md_empty_len);
  f->md_empty_found = empty && empty[0] == '\0';
  size_t pos = 0, used = 0;
  const char *name, *value;
  f->md_walk[0] = '\0';
  while (call_metadata_next(c, &pos, &name, &value) && used < sizeof f->md_walk)
    used += (size_t)snprintf(f->md_walk + used, sizeof f->md_walk - used, "%s=%s;", name, value);
  call_finish(c, GW_OK, NULL);
}

static unsigned give_roles(void *arg, const conn_peer *peer) {
  struct fx *f = arg;
  f->roles_asked++;
  copy_str(f->roles_peer, sizeof f->roles_peer, peer->addr);
  return f->roles;
}

/* Names bit 2 only: other bits are shown by value. */
static const char *name_role(unsigned bit) { return bit == ROLE_TWO ? "role-two" : NULL; }

/* ---- fixture ---------------------------------------------------------------------- */

static void server_start(struct fx *f, const call_server_opts *opts) {
  assert_int_equal(call_server_new(&f->srv, f->base, opts), 0);
  assert_int_equal(call_server_add(f->srv, P_ECHO, echo_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_PB, pb_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_FAIL, fail_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_HANG, hang_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_STREAM, stream_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_DIRTY, dirty_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_WATCH, watch_handler, f, 0), 0);
  assert_int_equal(call_server_add(f->srv, P_GUARDED, inspect_handler, f, ROLE_TWO), 0);
  assert_int_equal(call_server_add(f->srv, P_EITHER, inspect_handler, f, ROLE_TWO | ROLE_FOUR), 0);
  assert_int_equal(call_server_add(f->srv, P_OPEN, inspect_handler, f, 0), 0);
  assert_int_equal(call_server_add_stream(f->srv, P_BIDI, bidi_open, f, 0), 0);
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->base = event_base_new();
  assert_non_null(f->base);
  client_init(&f->cl, f->base);
  f->cl.on_data = count_dirty_data;
  f->cl.on_data_arg = f;
  server_start(f, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  call_server_free(f->srv);
  client_free(&f->cl);
  event_base_free(f->base);
  free(f);
  return 0;
}

/* ---- tests: dispatch table -------------------------------------------------------- */

static void test_dispatch_table(void **state) {
  (void)state;
  call_server *s = NULL;
  struct event_base *base = event_base_new();
  assert_non_null(base);
  assert_int_equal(call_server_new(&s, base, NULL), 0);
  /* Added out of order, with shared prefixes, so the search must really sort; two
   * distinct handlers (never run here) and a distinct svc per path. */
  static const char *const paths[] = {"/z.S/M", "/a.S/MM",       "/a.S/M", "/m.Svc/Get", "/a.S/",
                                      "/a.T/M", "/m.Svc/GetAll", "/b",     "/a.S/N"};
  for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
    call_handler_fn fn = i % 2 ? echo_handler : fail_handler;
    assert_int_equal(call_server_add(s, paths[i], fn, (void *)(uintptr_t)(i + 1), 0), 0);
  }
  for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
    void *svc = NULL;
    call_handler_fn fn = i % 2 ? echo_handler : fail_handler;
    assert_ptr_equal(call_server_lookup(s, paths[i], strlen(paths[i]), &svc), fn);
    assert_ptr_equal(svc, (void *)(uintptr_t)(i + 1));
  }
  /* Exact match only: prefixes, superstrings, the empty path and near misses fail
   * and leave *svc_out alone. */
  static const char *const misses[] = {
      "/m.Svc/Ge", "/m.Svc/GetAl", "/m.Svc/GetAllX", "/z.S/MX", "/", "",
      "/a.S",      "/b/",          "/A.S/M",         "/c"};
  for (size_t i = 0; i < ARRAY_LEN(misses); i++) {
    void *svc = &svc;
    assert_null(call_server_lookup(s, misses[i], strlen(misses[i]), &svc));
    assert_ptr_equal(svc, &svc);
  }
  /* The path is a length, not a C string: a prefix of a longer buffer matches. */
  void *svc = NULL;
  assert_ptr_equal(call_server_lookup(s, "/a.S/MMXYZ", 7, &svc), echo_handler);
  assert_ptr_equal(svc, (void *)(uintptr_t)2);
  assert_ptr_equal(call_server_lookup(s, "/a.S/MMXYZ", 6, &svc), fail_handler);
  assert_ptr_equal(svc, (void *)(uintptr_t)3);
  /* A duplicate is refused and does not replace the first. */
  assert_int_equal(call_server_add(s, "/a.S/M", echo_handler, NULL, 0), -EEXIST);
  assert_ptr_equal(call_server_lookup(s, "/a.S/M", 6, &svc), fail_handler);
  assert_ptr_equal(svc, (void *)(uintptr_t)3);
  /* Streamed-request methods share the table: no handler to look up, same paths. */
  assert_int_equal(call_server_add_stream(s, "/a.S/M", bidi_open, NULL, 0), -EEXIST);
  assert_int_equal(call_server_add_stream(s, "/a.S/B", bidi_open, NULL, 0), 0);
  assert_null(call_server_lookup(s, "/a.S/B", 6, &svc));
  assert_int_equal(call_server_add(s, "/a.S/B", echo_handler, NULL, 0), -EEXIST);
  call_server_free(s);
  call_server_free(NULL);
  event_base_free(base);
}

/* ---- tests: well-formed calls ----------------------------------------------------- */

static void test_settings_sent_at_once(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  RUN_UNTIL(&f->cl, f->cl.settings_seen);
  /* The gRPC-relevant limits: the configured streams per connection (100 by
   * default, limits.max_streams_per_connection), a large window, a header list cap. */
  assert_int_equal(f->cl.srv_max_streams, 100);
  assert_true(f->cl.srv_window >= (1u << 20));
  assert_int_equal(f->cl.srv_max_hdr, 16u << 10);
  assert_int_equal(call_server_live_conns(f->srv), 1);
}

static void test_unary_round_trip(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const char hello[] = "hello, world";
  struct cstream *cs = REQ(&f->cl, .path = P_ECHO, MSG(hello));
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  assert_string_equal(cs->accept_encoding, "identity");
  assert_string_equal(cs->grpc_message, "");
  expect_one_message(cs, hello, 12);
  assert_int_equal(f->handler_calls, 1);
  assert_false(f->base_mismatch);
  assert_int_equal(f->framed_left, 0);
  assert_int_equal(call_server_total_calls(f->srv), 1);
  assert_int_equal(call_server_live_conns(f->srv), 1);
}

static void test_unary_sizes(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* Empty, and larger than the default 64 KiB windows on both sides. */
  static const size_t sizes[] = {0, 1, 70000, 300000};
  uint8_t *big = malloc(300000);
  assert_non_null(big);
  for (size_t i = 0; i < 300000; i++) big[i] = (uint8_t)(i * 31 + 7);
  struct cstream *cs[ARRAY_LEN(sizes)];
  for (size_t i = 0; i < ARRAY_LEN(sizes); i++)
    cs[i] = REQ(&f->cl, .path = P_ECHO, .msg = big, .msg_len = sizes[i]);
  for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
    finish(&f->cl, cs[i]);
    expect_with_trailers(cs[i], GW_OK);
    expect_one_message(cs[i], big, sizes[i]);
  }
  free(big);
}

static void test_protobuf_response(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_PB, MSG(""));
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  expect_one_message(cs, "\x08\x01", 2); /* status: SERVING */
}

static void test_request_one_byte_per_frame(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const char text[] = "one DATA frame per byte";
  size_t n = strlen(text);
  struct cstream *cs = REQ(&f->cl, .path = P_ECHO, MSG(text), .chunk = 1);
  finish(&f->cl, cs);
  assert_int_equal(cs->data_frames_sent, n + GW_PREFIX_LEN);
  expect_with_trailers(cs, GW_OK);
  expect_one_message(cs, text, n);
}

static void test_request_ends_with_trailers(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_ECHO, MSG("t"), .end_with_trailers = 1);
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  expect_one_message(cs, "t", 1);
}

static void test_concurrent_calls(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  char bodies[40][16];
  struct cstream *cs[40];
  for (size_t i = 0; i < 40; i++) {
    snprintf(bodies[i], sizeof bodies[i], "call %zu", i);
    cs[i] = REQ(&f->cl, .path = P_ECHO, .msg = bodies[i], .msg_len = strlen(bodies[i]), .chunk = 3);
  }
  for (size_t i = 0; i < 40; i++) {
    finish(&f->cl, cs[i]);
    expect_with_trailers(cs[i], GW_OK);
    expect_one_message(cs[i], bodies[i], strlen(bodies[i]));
  }
  assert_int_equal(f->handler_calls, 40);
  assert_int_equal(call_server_total_calls(f->srv), 40);
}

static void test_content_types(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const struct {
    const char *ct;
    int http;
  } cases[] = {
      {"application/grpc", 200},           {"application/grpc+proto", 200},
      {"application/grpc;charset=x", 200}, {"text/plain", 415},
      {"application/grpcx", 415},          {"application/grp", 415},
      {"application/json", 415},           {NULL, 415},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct cstream *cs = REQ(&f->cl, .path = P_ECHO, .content_type = cases[i].ct,
                             .no_content_type = cases[i].ct == NULL, MSG("x"));
    finish(&f->cl, cs);
    assert_int_equal(cs->http_status, cases[i].http);
    if (cases[i].http == 200) {
      expect_with_trailers(cs, GW_OK);
    } else {
      assert_true(cs->headers_ended);
      assert_int_equal(cs->grpc_status, -1);
    }
  }
  assert_int_equal(f->handler_calls, 3);
}

static void test_get_is_405(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_ECHO, .method = "GET", .headers_only = 1);
  finish(&f->cl, cs);
  assert_int_equal(cs->http_status, 405);
  assert_true(cs->headers_ended);
  assert_int_equal(f->handler_calls, 0);
}

/* ---- tests: refused requests ------------------------------------------------------ */

static void test_unknown_path(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const char path[] = "/no.Such/Method%20x";
  struct cstream *cs = REQ(&f->cl, .path = path, MSG("x"));
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_UNIMPLEMENTED);
  char msg[512];
  decode_message(cs, msg, sizeof msg);
  assert_non_null(strstr(msg, path));
  /* Superstrings and prefixes of a real method are unknown too. */
  struct cstream *a = REQ(&f->cl, .path = P_ECHO "X", MSG("x"));
  struct cstream *b = REQ(&f->cl, .path = "/test.Echo/Unar", MSG("x"));
  finish(&f->cl, a);
  finish(&f->cl, b);
  expect_trailers_only(a, GW_UNIMPLEMENTED);
  expect_trailers_only(b, GW_UNIMPLEMENTED);
  assert_int_equal(f->handler_calls, 0);
}

static void test_long_unknown_path(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  char path[1001];
  path[0] = '/';
  memset(path + 1, 'q', sizeof path - 2);
  path[sizeof path - 1] = '\0';
  struct cstream *cs = REQ(&f->cl, .path = path, MSG("x"));
  finish(&f->cl, cs);
  /* BUG (reported to the lead): a :path of 256 bytes or more is not kept (on_header in
   * server/call.c sets path_too_long only), so request_headers_done prints 64 bytes of
   * an empty buffer: grpc-message is "unknown method " -- no path, and a trailing
   * space, which RFC 9113 forbids in a field value: nghttp2 >= 1.50 clients (ours
   * included) reject the whole answer with PROTOCOL_ERROR. */
  expect_trailers_only(cs, GW_UNIMPLEMENTED);
  char msg[512];
  decode_message(cs, msg, sizeof msg);
  assert_non_null(strstr(msg, "/qqqqqqqqqqqqqqqq"));
}

static void test_oversized_message(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* The prefix announces 5 MiB; no byte of the body is ever sent and the stream stays
   * open, so an answer proves the server did not wait for the body. */
  static const uint8_t prefix[] = {0, 0x00, 0x50, 0x00, 0x00};
  struct cstream *cs = REQ(&f->cl, .path = P_ECHO, RAW(prefix), .keep_open = 1);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_RESOURCE_EXHAUSTED);
  /* We had not finished sending: the server tells us to stop (gRPC spec). */
  assert_true(cs->rst_received);
  assert_int_equal(cs->rst_error, NGHTTP2_NO_ERROR);
  assert_int_equal(f->handler_calls, 0);
}

static void test_max_recv_msg_boundary(void **state) {
  struct fx *f = *state;
  call_server_free(f->srv);
  call_server_opts o = CALL_SERVER_OPTS_INIT;
  o.max_recv_msg = 1024;
  server_start(f, &o);
  client_connect(&f->cl, f->srv, 0, 0);
  uint8_t big[1025];
  memset(big, 'b', sizeof big);
  struct cstream *ok = REQ(&f->cl, .path = P_ECHO, .msg = big, .msg_len = 1024);
  struct cstream *over = REQ(&f->cl, .path = P_ECHO, .msg = big, .msg_len = 1025);
  finish(&f->cl, ok);
  finish(&f->cl, over);
  expect_with_trailers(ok, GW_OK);
  expect_one_message(ok, big, 1024);
  expect_trailers_only(over, GW_RESOURCE_EXHAUSTED);
}

/* before_send runs before the server sends anything a handler queued: no answer
 * reaches the client while the change its handler made is not yet made durable. */
static void test_before_send(void **state) {
  struct fx *f = *state;
  call_server_free(f->srv);
  call_server_opts o = CALL_SERVER_OPTS_INIT;
  o.before_send = make_clean;
  o.before_send_arg = f;
  server_start(f, &o);
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs[3];
  for (size_t i = 0; i < ARRAY_LEN(cs); i++) cs[i] = REQ(&f->cl, .path = P_DIRTY, MSG("changed"));
  for (size_t i = 0; i < ARRAY_LEN(cs); i++) {
    finish(&f->cl, cs[i]);
    expect_with_trailers(cs[i], GW_OK);
    expect_one_message(cs[i], "changed", 7);
  }
  assert_int_equal(f->dirty_data, 0);
  assert_true(f->before_sends >= 1);
  /* When the change cannot be made durable, the answer never leaves: the connection is
   * closed unsent and its calls end. */
  f->refuse = 1;
  struct cstream *refused = REQ(&f->cl, .path = P_DIRTY, MSG("changed"));
  RUN_UNTIL(&f->cl, call_server_live_conns(f->srv) == 0);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 0);
  assert_false(refused->closed);
  assert_int_equal(evbuffer_get_length(refused->data), 0);
  assert_int_equal(f->dirty_data, 0);
  f->refuse = 0;
  f->dirty = 0;
  /* Without the hook the same exchange does show the answers early: the check bites. */
  call_server_free(f->srv);
  client_drop(&f->cl);
  server_start(f, NULL);
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *plain = REQ(&f->cl, .path = P_DIRTY, MSG("changed"));
  finish(&f->cl, plain);
  assert_true(f->dirty_data > 0);
}

static void test_truncated_message(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* Inside the prefix, and inside the body. */
  static const uint8_t half_prefix[] = {0, 0, 0};
  static const uint8_t half_body[] = {0, 0, 0, 0, 9, 'a', 'b'};
  struct cstream *a = REQ(&f->cl, .path = P_ECHO, RAW(half_prefix));
  struct cstream *b = REQ(&f->cl, .path = P_ECHO, RAW(half_body));
  finish(&f->cl, a);
  finish(&f->cl, b);
  expect_trailers_only(a, GW_INTERNAL);
  expect_trailers_only(b, GW_INTERNAL);
  assert_int_equal(f->handler_calls, 0);
}

static void test_message_count(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* No DATA at all; one empty DATA frame with END_STREAM; two messages. */
  static const uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
  struct cstream *none = REQ(&f->cl, .path = P_ECHO, .headers_only = 1);
  struct cstream *empty = REQ(&f->cl, .path = P_ECHO);
  struct cstream *pair = REQ(&f->cl, .path = P_ECHO, RAW(two));
  struct cstream *split = REQ(&f->cl, .path = P_ECHO, RAW(two), .chunk = 6);
  finish(&f->cl, none);
  finish(&f->cl, empty);
  finish(&f->cl, pair);
  finish(&f->cl, split);
  expect_trailers_only(none, GW_UNIMPLEMENTED);
  expect_trailers_only(empty, GW_UNIMPLEMENTED);
  expect_trailers_only(pair, GW_UNIMPLEMENTED);
  expect_trailers_only(split, GW_UNIMPLEMENTED);
  assert_int_equal(f->handler_calls, 0);
}

static void test_compressed_flag(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const uint8_t gz[] = {1, 0, 0, 0, 2, 'z', 'z'};
  static const uint8_t bad_flag[] = {2, 0, 0, 0, 1, 'z'};
  struct cstream *gzip = REQ(&f->cl, .path = P_ECHO, .encoding = "gzip", RAW(gz));
  struct cstream *none = REQ(&f->cl, .path = P_ECHO, RAW(gz));
  struct cstream *ident = REQ(&f->cl, .path = P_ECHO, .encoding = "identity", RAW(gz));
  struct cstream *flag2 = REQ(&f->cl, .path = P_ECHO, RAW(bad_flag));
  /* The flag is per message: an uncompressed one is fine whatever grpc-encoding says. */
  struct cstream *plain = REQ(&f->cl, .path = P_ECHO, .encoding = "gzip", MSG("u"));
  finish(&f->cl, gzip);
  finish(&f->cl, none);
  finish(&f->cl, ident);
  finish(&f->cl, flag2);
  finish(&f->cl, plain);
  expect_with_trailers(plain, GW_OK);
  expect_one_message(plain, "u", 1);
  expect_trailers_only(gzip, GW_UNIMPLEMENTED);
  expect_trailers_only(none, GW_INTERNAL);
  expect_trailers_only(ident, GW_INTERNAL);
  expect_trailers_only(flag2, GW_INTERNAL);
  assert_int_equal(f->handler_calls, 1);
  /* BUG (reported to the lead): grpc doc/compression.md and our notes require the
   * UNIMPLEMENTED answer to an unsupported encoding to carry grpc-accept-encoding; the
   * trailers-only answer built by answer() in server/call.c omits it. */
  assert_string_equal(gzip->accept_encoding, "identity");
}

static void test_headers_without_path(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *bad = REQ(&f->cl, .path = NULL, MSG("x"));
  finish(&f->cl, bad);
  assert_true(bad->rst_received);
  assert_int_equal(bad->close_error, NGHTTP2_PROTOCOL_ERROR);
  assert_int_equal(bad->http_status, 0);
  /* The connection is fine: the next stream is served. */
  struct cstream *ok = REQ(&f->cl, .path = P_ECHO, MSG("y"));
  finish(&f->cl, ok);
  expect_with_trailers(ok, GW_OK);
  expect_one_message(ok, "y", 1);
  assert_int_equal(f->handler_calls, 1);
  assert_int_equal(call_server_live_conns(f->srv), 1);
}

static void test_header_list_too_large(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *fat = REQ(&f->cl, .path = P_ECHO, .pad_header = 20000, MSG("x"));
  finish(&f->cl, fat);
  assert_true(fat->rst_received);
  assert_int_not_equal(fat->close_error, NGHTTP2_NO_ERROR);
  /* A header under the limit is fine, and so is the connection. */
  struct cstream *ok = REQ(&f->cl, .path = P_ECHO, .pad_header = 8000, MSG("y"));
  finish(&f->cl, ok);
  expect_with_trailers(ok, GW_OK);
  assert_int_equal(f->handler_calls, 1);
}

static void test_garbage_preface(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, CL_RAW);
  static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  assert_int_equal(bufferevent_write(f->cl.cbev, http1, sizeof http1 - 1), 0);
  RUN_UNTIL(&f->cl, call_server_live_conns(f->srv) == 0);
  settle(&f->cl);
  /* What came back: our SETTINGS first, then a GOAWAY(PROTOCOL_ERROR). */
  size_t n = evbuffer_get_length(f->cl.raw_in);
  const uint8_t *b = evbuffer_pullup(f->cl.raw_in, -1);
  int goaway = 0;
  for (size_t off = 0; off + 9 <= n;) {
    size_t len = (size_t)b[off] << 16 | (size_t)b[off + 1] << 8 | b[off + 2];
    uint8_t type = b[off + 3];
    assert_true(off + 9 + len <= n);
    if (off == 0) assert_int_equal(type, NGHTTP2_SETTINGS);
    if (type == NGHTTP2_GOAWAY) {
      assert_true(len >= 8);
      const uint8_t *p = b + off + 9 + 4;
      uint32_t code = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
      assert_int_equal(code, NGHTTP2_PROTOCOL_ERROR);
      goaway = 1;
    }
    off += 9 + len;
  }
  assert_true(goaway);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* ---- tests: status messages ------------------------------------------------------- */

static void test_status_message_percent_encoding(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* UTF-8, '%', a tab, a DEL and a near-escape: all must come back byte for byte. */
  static const char text[] = "na\xc3\xafve \xe2\x98\x83 100% done\t%zz \x7f end";
  size_t n = strlen(text);
  struct cstream *cs = REQ(&f->cl, .path = P_FAIL, MSG(text));
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_FAILED_PRECONDITION);
  expect_one_message(cs, text, n);
  char msg[512];
  decode_message(cs, msg, sizeof msg);
  assert_string_equal(msg, text);
}

/* RFC 9113 section 8.2.1: a field value must not start or end with whitespace, and
 * nghttp2 >= 1.50 rejects such a response. Spaces are legal unencoded inside a
 * grpc-message, so only the ends need %20. */
static void test_status_message_edge_spaces(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const char text[] = " padded message ";
  struct cstream *cs = REQ(&f->cl, .path = P_FAIL, MSG(text));
  finish(&f->cl, cs);
  /* BUG (reported to the lead): gw_pct_encode (common/grpcwire.c) leaves the leading
   * and trailing spaces as they are; the client rejects the trailers (stream reset
   * PROTOCOL_ERROR) and never sees the status. */
  expect_with_trailers(cs, GW_FAILED_PRECONDITION);
  char msg[64];
  decode_message(cs, msg, sizeof msg);
  assert_string_equal(msg, text);
}

/* ---- tests: cancellation ---------------------------------------------------------- */

static void test_deadline(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  uint64_t t0 = mono_ms();
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, .timeout = "50m", MSG(""));
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  assert_true(f->hang_left_ms > 0 && f->hang_left_ms <= 50);
  finish(&f->cl, cs);
  assert_true(mono_ms() - t0 >= 45);
  expect_trailers_only(cs, GW_DEADLINE_EXCEEDED);
  assert_int_equal(f->cancels, 1);
  assert_false(f->cancel_wrong_call);
  assert_null(f->hang);
}

static void test_deadline_after_a_message(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, .timeout = "20000u", MSG("m"));
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_DEADLINE_EXCEEDED);
  expect_one_message(cs, "m", 1);
  assert_int_equal(f->cancels, 1);
}

/* The deadline runs from the request headers: a request body that never completes
 * is cut off too, and no handler ever sees it. */
static void test_deadline_while_request_arrives(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const uint8_t part[] = {0, 0, 0, 0, 4, 'a'};
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, .timeout = "30m", RAW(part), .keep_open = 1);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_DEADLINE_EXCEEDED);
  assert_true(cs->rst_received);
  assert_int_equal(cs->rst_error, NGHTTP2_NO_ERROR);
  assert_int_equal(f->handler_calls, 0);
  assert_int_equal(f->cancels, 0);
}

static void test_client_reset(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* A malformed grpc-timeout is ignored: no deadline. */
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, .timeout = "5x", MSG(""));
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  assert_int_equal(f->hang_left_ms, UINT64_MAX);
  assert_int_equal(call_server_live_calls(f->srv), 1);
  settle(&f->cl);
  assert_int_equal(f->cancels, 0);
  client_cancel(&f->cl, cs);
  RUN_UNTIL(&f->cl, f->cancels > 0);
  settle(&f->cl);
  assert_int_equal(f->cancels, 1);
  assert_false(f->cancel_wrong_call);
  assert_int_equal(call_server_live_calls(f->srv), 0);
  /* The connection still serves. */
  struct cstream *ok = REQ(&f->cl, .path = P_ECHO, MSG("z"));
  finish(&f->cl, ok);
  expect_with_trailers(ok, GW_OK);
}

static void test_client_reset_before_handler(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const uint8_t part[] = {0, 0, 0, 0, 4, 'a'};
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, RAW(part), .keep_open = 1);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 1);
  client_cancel(&f->cl, cs);
  RUN_UNTIL(&f->cl, call_server_live_calls(f->srv) == 0);
  settle(&f->cl);
  assert_int_equal(f->handler_calls, 0);
  assert_int_equal(f->cancels, 0);
}

/* A finished call whose answer is still queued is the layer's: a reset then must not
 * reach the handler. The client grants a 4 KiB window and never more, so the answer
 * stays queued. (A client that stops reading its socket could not be heard at all:
 * the server stops reading while its output is full.) */
static void test_reset_after_finish(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 4096, CL_NO_UPDATE);
  static uint8_t big[300000];
  struct cstream *cs = REQ(&f->cl, .path = P_FAIL, .msg = big, .msg_len = sizeof big);
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 1);
  client_cancel(&f->cl, cs);
  RUN_UNTIL(&f->cl, call_server_live_calls(f->srv) == 0);
  settle(&f->cl);
  assert_int_equal(f->cancels, 0);
}

static void test_connection_loss(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const uint8_t half_prefix[] = {0, 0};
  REQ(&f->cl, .path = P_HANG, MSG(""));
  REQ(&f->cl, .path = P_ECHO, RAW(half_prefix), .keep_open = 1);
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 2);
  client_close(&f->cl);
  RUN_UNTIL(&f->cl, call_server_live_conns(f->srv) == 0);
  settle(&f->cl);
  assert_int_equal(f->cancels, 1);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

static void test_server_free_cancels(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  REQ(&f->cl, .path = P_HANG, MSG(""));
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  call_server_free(f->srv);
  f->srv = NULL;
  assert_int_equal(f->cancels, 1);
  settle(&f->cl);
}

static ssize_t never_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                          uint32_t *flags, nghttp2_data_source *src, void *ud) {
  (void)s;
  (void)sid;
  (void)buf;
  (void)len;
  (void)flags;
  (void)src;
  (void)ud;
  return NGHTTP2_ERR_DEFERRED;
}

/* Rapid Reset (CVE-2023-44487): streams opened and reset at once, more than the
 * burst h2conn allows, end the connection with GOAWAY; nothing leaks. */
static void test_rapid_reset(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  nghttp2_nv nva[] = {mknv(":method", "POST"), mknv(":scheme", "http"), mknv(":path", P_HANG),
                      mknv(":authority", "test"), mknv("content-type", "application/grpc")};
  nghttp2_data_provider prd = {.read_callback = never_read};
  int i;
  for (i = 0; i < 1500 && !f->cl.goaways; i++) {
    int32_t sid = nghttp2_submit_request(f->cl.cs, NULL, nva, ARRAY_LEN(nva), &prd, NULL);
    assert_true(sid > 0);
    /* HEADERS must be out first: nghttp2 drops both for a reset stream never sent. */
    client_flush(&f->cl);
    assert_int_equal(nghttp2_submit_rst_stream(f->cl.cs, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL),
                     0);
    client_flush(&f->cl);
    if (i % 50 == 0) settle(&f->cl);
  }
  RUN_UNTIL(&f->cl, f->cl.goaways);
  assert_true(i > 1000);
  assert_int_equal(f->cl.goaway_error, NGHTTP2_INTERNAL_ERROR);
  RUN_UNTIL(&f->cl, call_server_live_conns(f->srv) == 0);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 0);
  assert_int_equal(f->handler_calls, 0);
}

/* A client that sends PINGs but reads nothing: once its output is over the high-water
 * mark the server stops writing and then stops reading, so the ACKs cannot pile up
 * without bound (the PINGs stay with the client). When the client reads again, every
 * PING is answered and the connection still serves. */
static void test_ping_flood_unread(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  RUN_UNTIL(&f->cl, f->cl.settings_seen);
  bufferevent_disable(f->cl.cbev, EV_READ);
  size_t pings = 0;
  struct evbuffer *unsent = bufferevent_get_output(f->cl.cbev);
  /* The pair moves bytes only while the server reads: left-over client output means
   * the server has stopped reading. */
  while (evbuffer_get_length(unsent) == 0) {
    assert_true(pings < 100000);
    for (int i = 0; i < 100; i++)
      assert_int_equal(nghttp2_submit_ping(f->cl.cs, NGHTTP2_FLAG_NONE, NULL), 0);
    pings += 100;
    client_flush(&f->cl);
    settle(&f->cl);
    assert_true(evbuffer_get_length(bufferevent_get_output(f->cl.sbev)) <= (64u << 10) + 1024);
  }
  settle(&f->cl);
  assert_int_equal(call_server_live_conns(f->srv), 1);
  bufferevent_enable(f->cl.cbev, EV_READ);
  RUN_UNTIL(&f->cl, f->cl.ping_acks == pings || f->cl.goaways);
  assert_int_equal(f->cl.goaways, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_ECHO, MSG("p"));
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
}

/* ---- tests: streaming and backpressure -------------------------------------------- */

static void expect_stream_messages(struct cstream *cs) {
  uint8_t want[STREAM_MSG];
  for (size_t i = 0; i < STREAM_N; i++) {
    uint8_t *msg = NULL;
    size_t len = 0;
    assert_int_equal(gw_frame_next(cs->data, STREAM_MSG, &msg, &len), GW_FRAME_MSG);
    assert_int_equal(len, STREAM_MSG);
    stream_msg(want, i);
    assert_memory_equal(msg, want, STREAM_MSG);
    free(msg);
  }
  assert_int_equal(evbuffer_get_length(cs->data), 0);
}

/* The client stops reading entirely; flow-control windows are far larger than the
 * stream, so only the server's own backpressure can bound what it holds. */
static void test_stream_backpressure_stalled_reader(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 32u << 20, 0);
  f->st_stream = REQ(&f->cl, .path = P_STREAM, MSG(""));
  bufferevent_disable(f->cl.cbev, EV_READ);
  settle(&f->cl);
  assert_int_equal(f->handler_calls, 1);
  size_t stalled_at = f->st_sent;
  assert_true(stalled_at > 0);
  assert_true(stalled_at < STREAM_N);
  assert_true(f->st_max_queued <= QUEUE_BOUND);
  settle(&f->cl);
  assert_int_equal(f->st_sent, stalled_at);
  /* Reading again resumes the producer through on_writable. */
  bufferevent_enable(f->cl.cbev, EV_READ);
  finish(&f->cl, f->st_stream);
  assert_int_equal(f->st_sent, STREAM_N);
  assert_true(f->st_writable_calls > 0);
  assert_true(f->st_max_queued <= QUEUE_BOUND);
  expect_with_trailers(f->st_stream, GW_OK);
  expect_stream_messages(f->st_stream);
  assert_int_equal(f->cancels, 0);
}

/* The deadline passes while the answer is held up by a client that does not read: the
 * handler is cancelled at once, and the client, once it reads, gets what was queued
 * in order, then DEADLINE_EXCEEDED. */
static void test_stream_deadline_while_stalled(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 32u << 20, 0);
  f->st_stream = REQ(&f->cl, .path = P_STREAM, .timeout = "30m", MSG(""));
  bufferevent_disable(f->cl.cbev, EV_READ);
  RUN_UNTIL(&f->cl, f->cancels == 1);
  size_t sent = f->st_sent;
  assert_true(sent > 0 && sent < STREAM_N);
  bufferevent_enable(f->cl.cbev, EV_READ);
  finish(&f->cl, f->st_stream);
  assert_int_equal(f->st_sent, sent);
  assert_int_equal(f->cancels, 1);
  /* The status could only queue behind output the client was not reading: the
   * server resets the stream instead, so it holds nothing for a stalled client. */
  assert_true(f->st_stream->closed);
  assert_int_equal(f->st_stream->close_error, NGHTTP2_CANCEL);
  assert_true(evbuffer_get_length(f->st_stream->data) <= sent * (STREAM_MSG + GW_PREFIX_LEN));
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* The client reads, but grants only a small window: flow control stalls the stream
 * over and over. */
static void test_stream_backpressure_small_window(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 4096, 0);
  f->st_stream = REQ(&f->cl, .path = P_STREAM, MSG(""));
  finish(&f->cl, f->st_stream);
  assert_true(f->st_max_queued <= QUEUE_BOUND);
  expect_with_trailers(f->st_stream, GW_OK);
  expect_stream_messages(f->st_stream);
}

static void test_stream_cancelled_while_stalled(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 32u << 20, 0);
  f->st_stream = REQ(&f->cl, .path = P_STREAM, MSG(""));
  bufferevent_disable(f->cl.cbev, EV_READ);
  settle(&f->cl);
  assert_true(f->st_sent < STREAM_N);
  client_close(&f->cl);
  RUN_UNTIL(&f->cl, call_server_live_conns(f->srv) == 0);
  settle(&f->cl);
  assert_int_equal(f->cancels, 1);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* ---- tests: streamed requests ----------------------------------------------------- */

/* Frames each of `n` messages into one buffer; returns its length, *out malloc'd. */
static size_t frame_all(uint8_t **out, const char *const *msgs, size_t n) {
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(gw_frame_append(b, (const uint8_t *)msgs[i], strlen(msgs[i])), 0);
  size_t len = evbuffer_get_length(b);
  *out = malloc(len);
  assert_non_null(*out);
  evbuffer_remove(b, *out, len);
  evbuffer_free(b);
  return len;
}

/* Several messages, an empty one among them, sent at once and one byte per DATA frame:
 * each is handed over whole and in order, then the end of input. */
static void test_bidi_messages(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const char *const msgs[] = {"first", "", "third message"};
  uint8_t *body;
  size_t len = frame_all(&body, msgs, ARRAY_LEN(msgs));
  struct cstream *a = REQ(&f->cl, .path = P_BIDI, .raw = body, .raw_len = len);
  struct cstream *b = REQ(&f->cl, .path = P_BIDI, .raw = body, .raw_len = len, .chunk = 1);
  finish(&f->cl, a);
  finish(&f->cl, b);
  for (struct cstream *cs = a; cs; cs = cs == a ? b : NULL) {
    expect_with_trailers(cs, GW_OK);
    assert_int_equal(evbuffer_get_length(cs->data), len);
    assert_memory_equal(evbuffer_pullup(cs->data, -1), body, len);
  }
  free(body);
  assert_int_equal(f->handler_calls, 2);
  assert_int_equal(f->bidi_msgs, 2 * ARRAY_LEN(msgs));
  assert_int_equal(f->bidi_ends, 2);
  assert_int_equal(f->bidi_cancels, 0);
}

/* The handler starts at the request headers; each message is answered before the
 * client sends the next, on one stream. */
static void test_bidi_interactive(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_BIDI, .keep_open = 1);
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  client_send_msg(&f->cl, cs, "ping", 4);
  RUN_UNTIL(&f->cl, evbuffer_get_length(cs->data) == GW_PREFIX_LEN + 4);
  client_send_msg(&f->cl, cs, "pong!", 5);
  RUN_UNTIL(&f->cl, evbuffer_get_length(cs->data) == 2 * GW_PREFIX_LEN + 9);
  assert_int_equal(f->bidi_ends, 0);
  client_end_body(&f->cl, cs);
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  assert_int_equal(f->bidi_msgs, 2);
  assert_int_equal(f->bidi_ends, 1);
}

/* No message at all: the end of input alone, answered trailers-only. */
static void test_bidi_no_messages(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_BIDI, .headers_only = 1);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_OK);
  assert_int_equal(f->bidi_msgs, 0);
  assert_int_equal(f->bidi_ends, 1);
}

/* The layer's refusals take the call from its handler (on_cancel fires): a stream that
 * ends inside a message, a message over the limit (before its body comes), and the
 * deadline. */
static void test_bidi_refused(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const uint8_t half[] = {0, 0, 0, 0, 9, 'a', 'b'};
  struct cstream *cs = REQ(&f->cl, .path = P_BIDI, RAW(half));
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_INTERNAL);
  static const uint8_t big[] = {0, 0, 0x50, 0, 0}; /* 5 MiB announced */
  cs = REQ(&f->cl, .path = P_BIDI, RAW(big), .keep_open = 1);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_RESOURCE_EXHAUSTED);
  cs = REQ(&f->cl, .path = P_BIDI, MSG("late"), .timeout = "50m", .keep_open = 1);
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_DEADLINE_EXCEEDED);
  assert_int_equal(f->bidi_msgs, 1);
  assert_int_equal(f->bidi_cancels, 3);
  assert_int_equal(f->bidi_ends, 0);
}

#define BIDI_N      200
#define BIDI_MSG    64
#define BIDI_COPIES 64

/* A client that sends small requests with large answers and does not read them: the
 * handler is handed no more while its output is held up, so what the server holds stays
 * bounded (all BIDI_N requests arrive in one read), and everything once the client
 * reads. */
static void test_bidi_backpressure(void **state) {
  struct fx *f = *state;
  f->bidi_copies = BIDI_COPIES;
  client_connect(&f->cl, f->srv, 32u << 20, 0);
  struct evbuffer *want = evbuffer_new();
  assert_non_null(want);
  uint8_t *body = malloc(BIDI_N * (GW_PREFIX_LEN + BIDI_MSG)), m[BIDI_MSG];
  assert_non_null(body);
  for (size_t i = 0; i < BIDI_N; i++) {
    memset(m, (int)i, sizeof m);
    gw_prefix_encode(body + i * (GW_PREFIX_LEN + BIDI_MSG), BIDI_MSG);
    memcpy(body + i * (GW_PREFIX_LEN + BIDI_MSG) + GW_PREFIX_LEN, m, sizeof m);
    for (size_t j = 0; j < BIDI_COPIES; j++)
      assert_int_equal(gw_frame_append(want, m, sizeof m), 0);
  }
  bufferevent_disable(f->cl.cbev, EV_READ);
  struct cstream *cs =
      REQ(&f->cl, .path = P_BIDI, .raw = body, .raw_len = BIDI_N * (GW_PREFIX_LEN + BIDI_MSG));
  settle(&f->cl);
  size_t stalled_at = f->bidi_msgs;
  assert_true(stalled_at > 0 && stalled_at < BIDI_N);
  assert_true(stalled_at * BIDI_COPIES * (GW_PREFIX_LEN + BIDI_MSG) <= QUEUE_BOUND);
  settle(&f->cl);
  assert_int_equal(f->bidi_msgs, stalled_at);
  bufferevent_enable(f->cl.cbev, EV_READ);
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  assert_int_equal(f->bidi_msgs, BIDI_N);
  size_t len = evbuffer_get_length(want);
  assert_int_equal(evbuffer_get_length(cs->data), len);
  assert_memory_equal(evbuffer_pullup(cs->data, -1), evbuffer_pullup(want, -1), len);
  evbuffer_free(want);
  free(body);
}

/* ---- tests: shutdown -------------------------------------------------------------- */

static void test_shutdown_running_call(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, MSG(""));
  struct cstream *sent = REQ(&f->cl, .path = P_HANG, MSG("s"));
  RUN_UNTIL(&f->cl, f->handler_calls == 2);
  call_server_shutdown(f->srv, 0, on_idle, f);
  assert_int_equal(f->cancels, 2);
  RUN_UNTIL(&f->cl, cs->closed && sent->closed && f->cl.goaways);
  expect_trailers_only(cs, GW_UNAVAILABLE);
  expect_with_trailers(sent, GW_UNAVAILABLE);
  expect_one_message(sent, "s", 1);
  assert_int_equal(f->cl.goaway_error, NGHTTP2_NO_ERROR);
  assert_int_equal(f->cl.goaway_last_sid, sent->sid);
  /* Nothing is left open: the server closes the connection by itself. */
  RUN_UNTIL(&f->cl, f->idle);
  settle(&f->cl);
  assert_int_equal(f->idle, 1);
  assert_int_equal(f->cancels, 2);
  assert_int_equal(call_server_live_conns(f->srv), 0);
  assert_int_equal(call_server_live_calls(f->srv), 0);
  /* New connections are refused (and their transport freed). */
  struct bufferevent *pair[2];
  conn *sc;
  assert_int_equal(bufferevent_pair_new(f->base, BEV_OPT_CLOSE_ON_FREE, pair), 0);
  assert_int_equal(conn_new_bufferevent(&sc, pair[0]), 0);
  assert_true(call_server_accept(f->srv, sc) < 0);
  bufferevent_free(pair[1]);
}

/* A stream the client opens after the server's GOAWAY (it had not seen it yet) is
 * refused, not served. */
static void test_shutdown_refuses_new_streams(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *old = REQ(&f->cl, .path = P_HANG, MSG(""));
  RUN_UNTIL(&f->cl, f->handler_calls == 1);
  call_server_shutdown(f->srv, 0, on_idle, f);
  struct cstream *late = REQ(&f->cl, .path = P_ECHO, MSG("l"));
  RUN_UNTIL(&f->cl, old->closed && late->closed);
  expect_trailers_only(old, GW_UNAVAILABLE);
  assert_int_equal(late->close_error, NGHTTP2_REFUSED_STREAM);
  assert_int_equal(late->http_status, 0);
  assert_int_equal(f->cl.goaway_last_sid, old->sid);
  RUN_UNTIL(&f->cl, f->idle);
  settle(&f->cl);
  assert_int_equal(f->handler_calls, 1);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

static void test_shutdown_without_connections(void **state) {
  struct fx *f = *state;
  call_server_shutdown(f->srv, 0, on_idle, f);
  assert_int_equal(f->idle, 0); /* from the loop, not from inside the call */
  RUN_UNTIL(&f->cl, f->idle);
  settle(&f->cl);
  assert_int_equal(f->idle, 1);
}

/* A request still arriving at shutdown keeps its connection open until the client
 * goes away. */
static void test_shutdown_waits_for_client(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const uint8_t part[] = {0, 0, 0, 0, 4, 'a'};
  REQ(&f->cl, .path = P_HANG, RAW(part), .keep_open = 1);
  settle(&f->cl);
  call_server_shutdown(f->srv, 0, on_idle, f);
  RUN_UNTIL(&f->cl, f->cl.goaways);
  settle(&f->cl);
  assert_int_equal(f->idle, 0);
  assert_int_equal(call_server_live_conns(f->srv), 1);
  client_close(&f->cl);
  RUN_UNTIL(&f->cl, f->idle);
  settle(&f->cl);
  assert_int_equal(f->idle, 1);
  assert_int_equal(f->handler_calls, 0);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* A request that completes after shutdown must not start a handler that nothing will
 * end: it is answered UNAVAILABLE like the calls running at shutdown. */
static void test_shutdown_then_request_completes(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, MSG(""), .keep_open = 1);
  settle(&f->cl);
  call_server_shutdown(f->srv, 0, on_idle, f);
  RUN_UNTIL(&f->cl, f->cl.goaways);
  client_end_body(&f->cl, cs);
  RUN_UNTIL(&f->cl, cs->closed || f->handler_calls > 0);
  /* BUG (reported to the lead): request_complete() in server/call.c dispatches the
   * handler even while the server is shutting down, so a long-running handler keeps
   * the connection (and on_idle) waiting forever. */
  assert_int_equal(f->handler_calls, 0);
  expect_trailers_only(cs, GW_UNAVAILABLE);
  RUN_UNTIL(&f->cl, f->idle);
}

/* A graceful shutdown with a drain: a streaming call ends UNAVAILABLE at once, a stream
 * opened after the GOAWAY is refused, and a unary call still in its handler finishes OK
 * within the drain; then the connection closes. */
static void test_drain_lets_unary_finish(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *unary = REQ(&f->cl, .path = P_HANG, MSG("u"));
  struct cstream *watch = REQ(&f->cl, .path = P_WATCH, MSG("w"));
  RUN_UNTIL(&f->cl, f->hang && f->watch);
  call_server_shutdown(f->srv, 60000, on_idle, f);
  assert_int_equal(f->watch_cancels, 1);
  assert_int_equal(f->cancels, 0);
  struct cstream *late = REQ(&f->cl, .path = P_ECHO, MSG("l")); /* before the GOAWAY arrives */
  RUN_UNTIL(&f->cl, watch->closed && late->closed && f->cl.goaways);
  expect_with_trailers(watch, GW_UNAVAILABLE);
  expect_one_message(watch, "w", 1);
  assert_int_equal(late->close_error, NGHTTP2_REFUSED_STREAM);
  assert_true(f->cl.goaway_last_sid < late->sid);
  settle(&f->cl);
  assert_false(unary->closed);
  call *c = f->hang;
  f->hang = NULL;
  call_finish(c, GW_OK, NULL);
  RUN_UNTIL(&f->cl, unary->closed && f->idle);
  expect_with_trailers(unary, GW_OK);
  expect_one_message(unary, "u", 1);
  settle(&f->cl);
  assert_int_equal(f->cancels, 0);
  assert_int_equal(f->handler_calls, 2);
  assert_int_equal(call_server_live_conns(f->srv), 0);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* When the drain time has passed, a unary call still in its handler is ended UNAVAILABLE
 * (not before). */
static void test_drain_ends_late_unary(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_HANG, MSG(""));
  RUN_UNTIL(&f->cl, f->hang);
  uint64_t t0 = mono_ms();
  call_server_shutdown(f->srv, 100, on_idle, f);
  RUN_UNTIL(&f->cl, f->cl.goaways);
  assert_int_equal(f->cancels, 0);
  RUN_UNTIL(&f->cl, cs->closed && f->idle);
  /* libevent's timers run on the coarse clock: up to a tick (10 ms) early. */
  assert_true(mono_ms() - t0 >= 100 - 10);
  assert_int_equal(f->cancels, 1);
  assert_false(f->cancel_wrong_call);
  expect_trailers_only(cs, GW_UNAVAILABLE);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* ---- tests: authorization and call context ------------------------------------- */

/* Restarts the server with opts.roles (every caller holds f->roles) and role_name, and
 * connects a new client. */
static void restart_with_roles(struct fx *f) {
  call_server_free(f->srv);
  client_drop(&f->cl);
  call_server_opts o = CALL_SERVER_OPTS_INIT;
  o.roles = give_roles;
  o.roles_arg = f;
  o.role_name = name_role;
  server_start(f, &o);
  client_connect(&f->cl, f->srv, 0, 0);
}

/* A caller without one of the method's roles is answered PERMISSION_DENIED naming the
 * roles, before the request body is read, and no handler runs. */
static void test_role_denied(void **state) {
  struct fx *f = *state;
  restart_with_roles(f);
  f->roles = 1;
  /* The prefix announces 5 MiB of which no byte is ever sent: only a check made before
   * the body is read can answer. */
  static const uint8_t prefix[] = {0, 0x00, 0x50, 0x00, 0x00};
  struct cstream *cs = REQ(&f->cl, .path = P_GUARDED, RAW(prefix), .keep_open = 1);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_PERMISSION_DENIED);
  assert_true(cs->rst_received); /* told to stop sending */
  assert_int_equal(cs->rst_error, NGHTTP2_NO_ERROR);
  char msg[512];
  decode_message(cs, msg, sizeof msg);
  assert_non_null(strstr(msg, P_GUARDED));
  assert_non_null(strstr(msg, "needs role role-two,"));
  assert_non_null(strstr(msg, "anonymous"));
  /* A whole large body is refused the same way. */
  static uint8_t big[1u << 20];
  struct cstream *whole = REQ(&f->cl, .path = P_GUARDED, .msg = big, .msg_len = sizeof big);
  finish(&f->cl, whole);
  expect_trailers_only(whole, GW_PERMISSION_DENIED);
  /* Several bits are named with "or", a bit without a name by its value. */
  struct cstream *either = REQ(&f->cl, .path = P_EITHER, MSG("e"));
  finish(&f->cl, either);
  expect_trailers_only(either, GW_PERMISSION_DENIED);
  decode_message(either, msg, sizeof msg);
  assert_non_null(strstr(msg, "needs role role-two or 4,"));
  assert_int_equal(f->handler_calls, 0);
  /* Asked once per call, about this caller. */
  assert_int_equal(f->roles_asked, 3);
  assert_string_equal(f->roles_peer, "memory");
  /* The connection still serves. */
  struct cstream *ok = REQ(&f->cl, .path = P_ECHO, MSG("after"));
  finish(&f->cl, ok);
  expect_with_trailers(ok, GW_OK);
  expect_one_message(ok, "after", 5);
}

/* Rapid Reset (CVE-2023-44487): requests reset in the input that brought them never
 * reach their handler, since handlers run only once the whole read has been taken. */
static void test_reset_before_dispatch_runs_no_handler(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  /* Written before the loop runs again: the server reads them all at once. */
  for (int i = 0; i < 20; i++) {
    struct cstream *cs = REQ(&f->cl, .path = P_ECHO, MSG("x"));
    client_cancel(&f->cl, cs);
  }
  struct cstream *ok = REQ(&f->cl, .path = P_ECHO, MSG("after"));
  finish(&f->cl, ok);
  expect_with_trailers(ok, GW_OK);
  expect_one_message(ok, "after", 5);
  assert_int_equal(f->handler_calls, 1);
  settle(&f->cl);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* A caller holding one of the method's roles gets its handler, which sees the roles
 * through call_roles; a method that needs none runs for anyone. */
static void test_role_granted(void **state) {
  struct fx *f = *state;
  /* Without opts.roles every caller holds every role. */
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *cs = REQ(&f->cl, .path = P_GUARDED, MSG("g"));
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_OK);
  assert_int_equal(f->seen_roles, ~0u);
  restart_with_roles(f);
  static const struct {
    const char *path;
    unsigned roles;
  } cases[] = {{P_GUARDED, ROLE_TWO},
               {P_GUARDED, ROLE_TWO | 1},
               {P_EITHER, ROLE_FOUR},
               {P_OPEN, 0},
               {P_OPEN, 1}};
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    f->roles = cases[i].roles;
    cs = REQ(&f->cl, .path = cases[i].path, MSG("g"));
    finish(&f->cl, cs);
    expect_trailers_only(cs, GW_OK);
    assert_int_equal(f->handler_calls, (int)i + 2);
    assert_int_equal(f->seen_roles, cases[i].roles);
  }
  assert_int_equal(f->roles_asked, (int)ARRAY_LEN(cases));
}

/* The handler sees the request metadata (no pseudo-headers) and who calls. */
static void test_call_context(void **state) {
  struct fx *f = *state;
  client_connect(&f->cl, f->srv, 0, 0);
  static const char *const md[] = {"x-trace", "abc",   "x-dup",  "first", "x-empty",
                                   "",        "x-dup", "second", NULL};
  struct cstream *cs = REQ(&f->cl, .path = P_OPEN, MSG("m"), .timeout = "5S", .extra = md);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_OK);
  assert_string_equal(f->md_trace, "abc");
  assert_int_equal(f->md_trace_len, 3);
  assert_true(f->md_missing_null);
  assert_string_equal(f->md_dup, "first");
  assert_true(f->md_empty_found);
  assert_int_equal(f->md_empty_len, 0);
  assert_string_equal(f->md_walk,
                      "content-type=application/grpc;te=trailers;grpc-timeout=5S;x-trace=abc;"
                      "x-dup=first;x-empty=;x-dup=second;");
  assert_string_equal(f->seen_addr, "memory");
  assert_string_equal(f->seen_identity, "");
  assert_int_equal(f->seen_local, 1);
}

/* ---- tests: calls without a connection (call_server_invoke) ----------------------- */

/* What an invoked call's sink was told. */
struct sunk {
  size_t framed_bytes;
  int finishes, status;
  char msg[128];
};

static void sunk_message(void *arg, const struct ProtobufCMessage *msg) {
  (void)arg;
  (void)msg;
}

static void sunk_framed(void *arg, struct evbuffer *framed) {
  struct sunk *k = arg;
  k->framed_bytes += evbuffer_get_length(framed);
  evbuffer_drain(framed, evbuffer_get_length(framed));
}

static int sunk_writable(void *arg) {
  (void)arg;
  return 1;
}

static void sunk_finish(void *arg, int status, const char *msg, const uint8_t *details,
                        size_t dlen) {
  (void)details;
  (void)dlen;
  struct sunk *k = arg;
  k->finishes++;
  k->status = status;
  copy_str(k->msg, sizeof k->msg, msg);
}

static const call_sink sunk_sink = {sunk_message, sunk_framed, sunk_writable, sunk_finish};
static const conn_peer local_peer = {"memory", "me", 1, -1};

/* The handler runs at once; its output and status reach the sink (the message plain,
 * not percent-encoded); the call is freed from the loop afterwards. */
static void test_invoke_answers_the_sink(void **state) {
  struct fx *f = *state;
  struct sunk k = {0};
  call *c = NULL;
  assert_int_equal(call_server_invoke(&c, f->srv, P_FAIL, (const uint8_t *)"50% off", 7,
                                      &local_peer, &sunk_sink, &k),
                   0);
  assert_non_null(c);
  assert_int_equal(f->handler_calls, 1);
  assert_int_equal(k.framed_bytes, 5 + 7);
  assert_int_equal(k.finishes, 1);
  assert_int_equal(k.status, GW_FAILED_PRECONDITION);
  assert_string_equal(k.msg, "50% off");
  assert_int_equal(call_server_live_calls(f->srv), 1);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(call_server_live_calls(f->srv), 0);
  assert_int_equal(f->cancels, 0);
  assert_int_equal(
      call_server_invoke(&c, f->srv, "/test.Echo/Nope", NULL, 0, &local_peer, &sunk_sink, &k),
      -ENOENT);
}

/* An invoker that goes away: the handler's on_cancel fires, the sink hears nothing. */
static void test_invoke_drop(void **state) {
  struct fx *f = *state;
  struct sunk k = {0};
  call *c = NULL;
  assert_int_equal(call_server_invoke(&c, f->srv, P_HANG, NULL, 0, &local_peer, &sunk_sink, &k), 0);
  assert_ptr_equal(f->hang, c);
  call_drop(c);
  assert_int_equal(f->cancels, 1);
  assert_int_equal(k.finishes, 0);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* The same authorization as a connection's calls: the peer's roles, asked once. */
static void test_invoke_role_denied(void **state) {
  struct fx *f = *state;
  restart_with_roles(f);
  f->roles = 1;
  struct sunk k = {0};
  call *c = NULL;
  assert_int_equal(call_server_invoke(&c, f->srv, P_GUARDED, NULL, 0, &local_peer, &sunk_sink, &k),
                   0);
  assert_int_equal(f->handler_calls, 0);
  assert_int_equal(k.status, GW_PERMISSION_DENIED);
  assert_non_null(strstr(k.msg, "role-two"));
  assert_string_equal(f->roles_peer, "memory");
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(call_server_live_calls(f->srv), 0);
}

/* ---- tests: metrics ----------------------------------------------------------------- */

/* With opts.metrics, each call counts once by method and status: answered ones with
 * their code (by Go's name), calls of no registered method as "unknown", one the client
 * reset as Canceled; each is in the latency histogram of its method. */
static void test_metrics_count_calls(void **state) {
  struct fx *f = *state;
  call_server_free(f->srv);
  metrics *m;
  assert_int_equal(metrics_new(&m), 0);
  call_server_opts o = CALL_SERVER_OPTS_INIT;
  o.metrics = m;
  server_start(f, &o);
  client_connect(&f->cl, f->srv, 0, 0);
  struct cstream *ok1 = REQ(&f->cl, .path = P_ECHO, MSG("a"));
  struct cstream *ok2 = REQ(&f->cl, .path = P_ECHO, MSG("b"));
  struct cstream *bad = REQ(&f->cl, .path = P_FAIL, MSG("c"));
  struct cstream *none = REQ(&f->cl, .path = "/no.Such/Method", MSG("d"));
  finish(&f->cl, ok1);
  finish(&f->cl, ok2);
  finish(&f->cl, bad);
  finish(&f->cl, none);
  struct cstream *hang = REQ(&f->cl, .path = P_HANG, MSG(""));
  RUN_UNTIL(&f->cl, f->handler_calls == 4);
  client_cancel(&f->cl, hang);
  RUN_UNTIL(&f->cl, f->cancels > 0);
  settle(&f->cl);

  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  metrics_render(m, b);
  evbuffer_add(b, "", 1);
  const char *text = (const char *)evbuffer_pullup(b, -1);
  static const char *const want[] = {
      "grpc_server_started_total{grpc_service=\"test.Echo\",grpc_method=\"Unary\"} 2\n",
      "grpc_server_handled_total{grpc_service=\"test.Echo\",grpc_method=\"Unary\","
      "grpc_code=\"OK\"} 2\n",
      "grpc_server_handled_total{grpc_service=\"test.Echo\",grpc_method=\"Fail\","
      "grpc_code=\"FailedPrecondition\"} 1\n",
      "grpc_server_handled_total{grpc_service=\"unknown\",grpc_method=\"unknown\","
      "grpc_code=\"Unimplemented\"} 1\n",
      "grpc_server_handled_total{grpc_service=\"test.Echo\",grpc_method=\"Hang\","
      "grpc_code=\"Canceled\"} 1\n",
      "grpc_server_handling_seconds_count{grpc_service=\"test.Echo\",grpc_method=\"Unary\"} 2\n",
      "grpc_server_handling_seconds_count{grpc_service=\"test.Echo\",grpc_method=\"Hang\"} 1\n",
      "grpc_server_started_total{grpc_service=\"test.Echo\",grpc_method=\"Open\"} 0\n",
      "grpc_server_started_total{grpc_service=\"unknown\",grpc_method=\"unknown\"} 1\n",
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++)
    if (!strstr(text, want[i])) fail_msg("missing: %s\nin:\n%s", want[i], text);
  evbuffer_free(b);
  call_server_free(f->srv);
  f->srv = NULL;
  metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dispatch_table),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_settings_sent_at_once),
      T(test_invoke_answers_the_sink),
      T(test_invoke_drop),
      T(test_invoke_role_denied),
      T(test_unary_round_trip),
      T(test_unary_sizes),
      T(test_protobuf_response),
      T(test_request_one_byte_per_frame),
      T(test_request_ends_with_trailers),
      T(test_concurrent_calls),
      T(test_content_types),
      T(test_get_is_405),
      T(test_unknown_path),
      T(test_long_unknown_path),
      T(test_oversized_message),
      T(test_max_recv_msg_boundary),
      T(test_before_send),
      T(test_truncated_message),
      T(test_message_count),
      T(test_compressed_flag),
      T(test_headers_without_path),
      T(test_header_list_too_large),
      T(test_garbage_preface),
      T(test_status_message_percent_encoding),
      T(test_status_message_edge_spaces),
      T(test_deadline),
      T(test_deadline_after_a_message),
      T(test_deadline_while_request_arrives),
      T(test_client_reset),
      T(test_metrics_count_calls),
      T(test_client_reset_before_handler),
      T(test_reset_before_dispatch_runs_no_handler),
      T(test_reset_after_finish),
      T(test_connection_loss),
      T(test_server_free_cancels),
      T(test_rapid_reset),
      T(test_ping_flood_unread),
      T(test_stream_backpressure_stalled_reader),
      T(test_stream_deadline_while_stalled),
      T(test_stream_backpressure_small_window),
      T(test_stream_cancelled_while_stalled),
      T(test_bidi_messages),
      T(test_bidi_interactive),
      T(test_bidi_no_messages),
      T(test_bidi_refused),
      T(test_bidi_backpressure),
      T(test_shutdown_running_call),
      T(test_shutdown_refuses_new_streams),
      T(test_shutdown_without_connections),
      T(test_shutdown_waits_for_client),
      T(test_shutdown_then_request_completes),
      T(test_drain_lets_unary_finish),
      T(test_drain_ends_late_unary),
      T(test_role_denied),
      T(test_role_granted),
      T(test_call_context),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
