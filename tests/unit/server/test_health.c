/* Unit tests for server/health, entirely in memory: the service on a call server, driven
 * by the raw nghttp2 client of testh2.h. What matters: Check and Watch tell the status
 * health_set gave; a watcher hears of each change once and of nothing else; a watcher
 * that goes away (cancelled, its connection lost, the call server freed) is released,
 * and health_free ends those still open. Leaks and use after free show in the ASan
 * build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "call.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"
#include "health.h"
#include "testh2.h"

#define P_CHECK "/grpc.health.v1.Health/Check"
#define P_WATCH "/grpc.health.v1.Health/Watch"
#define RUNNER  "prismq.runner.v1.Runner"
#define ADMIN   "prismq.admin.v1.Admin"

#define SERVING     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
/* next_status: no whole message has arrived. */
#define NO_MESSAGE (-1)

struct fx {
  struct event_base *base;
  call_server *srv;
  health *h;
  struct client cl;
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->base = event_base_new();
  assert_non_null(f->base);
  client_init(&f->cl, f->base);
  assert_int_equal(call_server_new(&f->srv, f->base, NULL), 0);
  static const char *const services[] = {RUNNER, ADMIN, NULL};
  assert_int_equal(health_new(&f->h, f->srv, services), 0);
  client_connect(&f->cl, f->srv, 0, 0);
  *state = f;
  return 0;
}

/* In prismqd's order: the call server first, then the service. */
static int teardown(void **state) {
  struct fx *f = *state;
  call_server_free(f->srv);
  health_free(f->h);
  client_free(&f->cl);
  event_base_free(f->base);
  free(f);
  return 0;
}

/* Starts a call of `path` (Check or Watch) asking about `service`. */
static struct cstream *ask(struct fx *f, const char *path, const char *service) {
  Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  r.service = (char *)service;
  uint8_t buf[128];
  assert_true(grpc__health__v1__health_check_request__get_packed_size(&r) <= sizeof buf);
  size_t n = grpc__health__v1__health_check_request__pack(&r, buf);
  return REQ(&f->cl, .path = path, .msg = buf, .msg_len = n);
}

/* Takes the next whole HealthCheckResponse off what the stream received: its status,
 * or NO_MESSAGE. */
static int next_status(struct cstream *cs) {
  uint8_t *msg = NULL;
  size_t len = 0;
  int r = gw_frame_next(cs->data, 1024, &msg, &len);
  if (r == GW_FRAME_NEED_MORE) return NO_MESSAGE;
  assert_int_equal(r, GW_FRAME_MSG);
  Grpc__Health__V1__HealthCheckResponse *resp =
      grpc__health__v1__health_check_response__unpack(NULL, len, msg);
  assert_non_null(resp);
  int st = resp->status;
  grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
  free(msg);
  return st;
}

/* Check of `service`: answered OK with exactly one message, whose status it returns. */
static int check(struct fx *f, const char *service) {
  struct cstream *cs = ask(f, P_CHECK, service);
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  int st = next_status(cs);
  assert_int_equal(evbuffer_get_length(cs->data), 0);
  return st;
}

/* Runs the loop until the watcher's next message has come, and returns its status. */
static int watch_next(struct fx *f, struct cstream *cs) {
  int st;
  RUN_UNTIL(&f->cl, (st = next_status(cs)) != NO_MESSAGE);
  return st;
}

/* Lets everything in flight arrive, then checks the watcher got nothing more and is
 * still open. */
static void watch_quiet(struct fx *f, struct cstream *cs) {
  settle(&f->cl);
  assert_int_equal(evbuffer_get_length(cs->data), 0);
  assert_false(cs->closed);
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_check_serving(void **state) {
  struct fx *f = *state;
  assert_int_equal(check(f, ""), SERVING);
  assert_int_equal(check(f, RUNNER), SERVING);
  assert_int_equal(check(f, ADMIN), SERVING);
}

static void test_set_not_serving(void **state) {
  struct fx *f = *state;
  health_set(f->h, RUNNER, 0);
  assert_int_equal(check(f, RUNNER), NOT_SERVING);
  /* Each name has its own status. */
  assert_int_equal(check(f, ""), SERVING);
  assert_int_equal(check(f, ADMIN), SERVING);
  health_set(f->h, RUNNER, 1);
  assert_int_equal(check(f, RUNNER), SERVING);
  /* NULL sets every service, "" included. */
  health_set(f->h, NULL, 0);
  assert_int_equal(check(f, ""), NOT_SERVING);
  assert_int_equal(check(f, RUNNER), NOT_SERVING);
  assert_int_equal(check(f, ADMIN), NOT_SERVING);
  health_set(f->h, "", 1);
  assert_int_equal(check(f, ""), SERVING);
  assert_int_equal(check(f, ADMIN), NOT_SERVING);
  /* A name health does not know changes nothing. */
  health_set(f->h, "no.such.Service", 1);
  assert_int_equal(check(f, ADMIN), NOT_SERVING);
}

static void test_unknown_service(void **state) {
  struct fx *f = *state;
  const char *paths[] = {P_CHECK, P_WATCH};
  for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
    struct cstream *cs = ask(f, paths[i], "no.such.Service");
    finish(&f->cl, cs);
    expect_trailers_only(cs, GW_NOT_FOUND);
    char msg[256];
    decode_message(cs, msg, sizeof msg);
    assert_non_null(strstr(msg, "no.such.Service"));
  }
  /* A request that is not a HealthCheckRequest. */
  static const uint8_t junk[] = {0x0a, 0x05, 'x'};
  struct cstream *cs = REQ(&f->cl, .path = P_CHECK, .msg = junk, .msg_len = sizeof junk);
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_INVALID_ARGUMENT);
}

/* The current status at once, then one message per change of that service's status:
 * none for a repeat, none for another service's change. */
static void test_watch_changes(void **state) {
  struct fx *f = *state;
  struct cstream *runner = ask(f, P_WATCH, RUNNER);
  struct cstream *all = ask(f, P_WATCH, "");
  assert_int_equal(watch_next(f, runner), SERVING);
  assert_int_equal(watch_next(f, all), SERVING);
  watch_quiet(f, runner);
  watch_quiet(f, all);

  health_set(f->h, RUNNER, 0);
  assert_int_equal(watch_next(f, runner), NOT_SERVING);
  watch_quiet(f, runner);
  watch_quiet(f, all);

  health_set(f->h, RUNNER, 0); /* a repeat */
  health_set(f->h, ADMIN, 0);  /* another service */
  watch_quiet(f, runner);
  watch_quiet(f, all);

  /* All to SERVING: only RUNNER's status changes. */
  health_set(f->h, NULL, 1);
  assert_int_equal(watch_next(f, runner), SERVING);
  watch_quiet(f, runner);
  watch_quiet(f, all);

  /* A watcher that comes later starts from the status of now. */
  health_set(f->h, "", 0);
  assert_int_equal(watch_next(f, all), NOT_SERVING);
  struct cstream *late = ask(f, P_WATCH, "");
  assert_int_equal(watch_next(f, late), NOT_SERVING);
  watch_quiet(f, late);
  watch_quiet(f, runner);
  assert_int_equal(call_server_live_calls(f->srv), 3);
}

/* A watcher whose client does not read fast enough is not sent every change: the
 * queue stops at the call's low-water mark, and once it drains the watcher gets the
 * status of then, if it differs from the last one sent. Run for either final status:
 * for one of them the status that ends the burst is not the last one queued. */
static void test_watch_slow_reader_gets_latest(void **state) {
  struct fx *f = *state;
  enum { FLIPS = 30000 };
  const int finals[] = {NOT_SERVING, SERVING};
  for (size_t i = 0; i < ARRAY_LEN(finals); i++) {
    health_set(f->h, RUNNER, 1);
    struct cstream *cs = ask(f, P_WATCH, RUNNER);
    assert_int_equal(watch_next(f, cs), SERVING);
    /* All queued before the loop runs again: nothing leaves meanwhile. */
    for (int n = 1; n <= FLIPS; n++) health_set(f->h, RUNNER, n % 2 == 0);
    health_set(f->h, RUNNER, finals[i] == SERVING);
    settle(&f->cl);
    int prev = SERVING, st;
    size_t got = 0;
    while ((st = next_status(cs)) != NO_MESSAGE) {
      assert_int_not_equal(st, prev); /* never a repeat */
      prev = st;
      got++;
    }
    assert_int_equal(prev, finals[i]);
    assert_true(got > 1);
    /* Bounded by the low-water mark (64 KiB of 7-byte messages), not by the flips. */
    assert_true(got < (64u << 10) / 7 + 3);
    client_cancel(&f->cl, cs);
    finish(&f->cl, cs);
  }
}

/* A watcher cancelled by its client, or whose connection is lost, is released: changes
 * after that reach no one (ASan would see a freed watcher touched, or one leaked). */
static void test_watch_cancelled_released(void **state) {
  struct fx *f = *state;
  struct cstream *gone = ask(f, P_WATCH, RUNNER);
  struct cstream *stays = ask(f, P_WATCH, RUNNER);
  assert_int_equal(watch_next(f, gone), SERVING);
  assert_int_equal(watch_next(f, stays), SERVING);
  client_cancel(&f->cl, gone);
  RUN_UNTIL(&f->cl, call_server_live_calls(f->srv) == 1);
  health_set(f->h, RUNNER, 0);
  assert_int_equal(watch_next(f, stays), NOT_SERVING);
  watch_quiet(f, stays);
  assert_int_equal(evbuffer_get_length(gone->data), 0);

  client_close(&f->cl);
  RUN_UNTIL(&f->cl, call_server_live_conns(f->srv) == 0);
  assert_int_equal(call_server_live_calls(f->srv), 0);
  health_set(f->h, NULL, 1);
  settle(&f->cl);
  /* The service still serves a new connection. */
  client_drop(&f->cl);
  client_connect(&f->cl, f->srv, 0, 0);
  assert_int_equal(check(f, RUNNER), SERVING);
}

/* health_free ends the watchers still open, UNAVAILABLE, after what they were sent. */
static void test_free_with_live_watchers(void **state) {
  struct fx *f = *state;
  struct cstream *a = ask(f, P_WATCH, RUNNER);
  struct cstream *b = ask(f, P_WATCH, "");
  assert_int_equal(watch_next(f, a), SERVING);
  assert_int_equal(watch_next(f, b), SERVING);
  health_free(f->h);
  f->h = NULL;
  finish(&f->cl, a);
  finish(&f->cl, b);
  expect_with_trailers(a, GW_UNAVAILABLE);
  expect_with_trailers(b, GW_UNAVAILABLE);
  assert_int_equal(evbuffer_get_length(a->data), 0);
}

/* prismqd's order: the call server freed with watchers open cancels them, which
 * releases them; health_set and health_free after that touch no call. */
static void test_call_server_freed_first(void **state) {
  struct fx *f = *state;
  struct cstream *cs = ask(f, P_WATCH, ADMIN);
  assert_int_equal(watch_next(f, cs), SERVING);
  call_server_free(f->srv);
  f->srv = NULL;
  health_set(f->h, NULL, 0);
  health_free(f->h);
  f->h = NULL;
}

/* A graceful shutdown ends a Watch at once, as a streaming call, however long it lets
 * other calls finish; the watcher is released. */
static void test_shutdown_ends_watchers(void **state) {
  struct fx *f = *state;
  struct cstream *cs = ask(f, P_WATCH, RUNNER);
  assert_int_equal(watch_next(f, cs), SERVING);
  call_server_shutdown(f->srv, 60000, NULL, NULL); /* far beyond the guard timer */
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_UNAVAILABLE);
  health_set(f->h, NULL, 0);
  settle(&f->cl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_check_serving),
      T(test_set_not_serving),
      T(test_unknown_service),
      T(test_watch_changes),
      T(test_watch_slow_reader_gets_latest),
      T(test_watch_cancelled_released),
      T(test_free_with_live_watchers),
      T(test_call_server_freed_first),
      T(test_shutdown_ends_watchers),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
