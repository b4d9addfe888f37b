/* gcl_probe: drives the client core (gclient) against a gRPC server's Health service
 * for the integration tests.
 *
 *   gcl_probe TARGET check            Health/Check(""): prints SERVING
 *   gcl_probe TARGET loop N           N Checks over one connection: prints "ok N"
 *   gcl_probe TARGET watch-cancel     Health/Watch, stopped by on_msg after the first
 *                                     message: prints CANCELLED
 *   gcl_probe TARGET deadline MS      Health/Watch with an MS deadline: prints
 *                                     DEADLINE_EXCEEDED
 *   (both then make a Check on the same connection: a reset stream must leave it
 *   usable)
 *   gcl_probe TARGET unknown          /no.Such/Method: prints UNIMPLEMENTED
 *
 * Exits 0 when the result is the expected one; otherwise 1 with
 * "gcl_probe: STATUS: message" on stderr (2 for usage errors). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <protobuf-c/protobuf-c.h>

#include "gclient.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"

#define CHECK_PATH       "/grpc.health.v1.Health/Check"
#define WATCH_PATH       "/grpc.health.v1.Health/Watch"
#define UNKNOWN_PATH     "/no.Such/Method"
#define CHECK_TIMEOUT_MS 10000

static int fail_status(const gcl_status *st) {
  fprintf(stderr, "gcl_probe: %s: %s\n", gw_status_name(st->code), st->message);
  return 1;
}

/* The serving status name of a packed HealthCheckResponse, or NULL if it does not
 * decode. */
static const char *serving_name(const uint8_t *msg, size_t len) {
  Grpc__Health__V1__HealthCheckResponse *r =
      grpc__health__v1__health_check_response__unpack(NULL, len, msg);
  if (!r) return NULL;
  const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
      &grpc__health__v1__health_check_response__serving_status__descriptor, (int)r->status);
  grpc__health__v1__health_check_response__free_unpacked(r, NULL);
  return v ? v->name : "?";
}

/* An empty HealthCheckRequest (service ""), which packs to zero bytes. */
static size_t health_request(uint8_t *buf, size_t cap) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  size_t len = grpc__health__v1__health_check_request__get_packed_size(&req);
  if (len > cap) abort();
  return grpc__health__v1__health_check_request__pack(&req, buf);
}

/* One Check; 0 if the answer is SERVING. */
static int check_once(gcl_conn *c, int print) {
  uint8_t req[16];
  size_t reqlen = health_request(req, sizeof req);
  uint8_t *resp = NULL;
  size_t resplen = 0;
  gcl_status st;
  if (gcl_unary(c, CHECK_PATH, req, reqlen, CHECK_TIMEOUT_MS, &resp, &resplen, &st) != 0)
    return fail_status(&st);
  const char *name = serving_name(resp, resplen);
  free(resp);
  if (!name || strcmp(name, "SERVING") != 0) {
    fprintf(stderr, "gcl_probe: unexpected Check answer: %s\n", name ? name : "undecodable");
    return 1;
  }
  if (print) printf("%s\n", name);
  return 0;
}

/* A streaming Watch run on the probe's loop. */
struct watch {
  int done;
  int stop_after_first;
  size_t nmsg;
  gcl_status st;
};

static int watch_msg(void *user, const uint8_t *msg, size_t len) {
  struct watch *w = user;
  const char *name = serving_name(msg, len);
  if (!name) {
    fprintf(stderr, "gcl_probe: undecodable Watch message\n");
    return 1;
  }
  w->nmsg++;
  return w->stop_after_first;
}

static void watch_done(void *user, const gcl_status *st) {
  struct watch *w = user;
  w->done = 1;
  w->st = *st;
}

/* Runs a Watch until it ends, then a Check; 0 if the Watch ends with `want` after at
 * least one message and the Check answers SERVING. */
static int watch(struct event_base *base, gcl_conn *c, uint64_t timeout_ms, int stop_after_first,
                 int want) {
  uint8_t req[16];
  size_t reqlen = health_request(req, sizeof req);
  struct watch w = {0};
  w.stop_after_first = stop_after_first;
  int rc = gcl_call_start(NULL, c, WATCH_PATH, req, reqlen, timeout_ms, watch_msg, watch_done, &w);
  if (rc < 0) {
    fprintf(stderr, "gcl_probe: gcl_call_start: %s\n", strerror(-rc));
    return 1;
  }
  while (!w.done) event_base_loop(base, EVLOOP_ONCE);
  if (w.st.code != want) return fail_status(&w.st);
  if (w.nmsg == 0) {
    fprintf(stderr, "gcl_probe: Watch ended with %s before any message\n", gw_status_name(want));
    return 1;
  }
  if (check_once(c, 0) != 0) return 1;
  printf("%s\n", gw_status_name(w.st.code));
  return 0;
}

static int unknown_method(gcl_conn *c) {
  uint8_t *resp = NULL;
  size_t resplen = 0;
  gcl_status st;
  if (gcl_unary(c, UNKNOWN_PATH, NULL, 0, CHECK_TIMEOUT_MS, &resp, &resplen, &st) !=
      GW_UNIMPLEMENTED) {
    free(resp);
    return fail_status(&st);
  }
  printf("%s\n", gw_status_name(st.code));
  return 0;
}

/* A positive decimal argument, or 0. */
static unsigned long positive_arg(const char *s) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  return errno || end == s || *end || s[0] == '-' ? 0 : v;
}

static int run(struct event_base *base, gcl_conn *c, int argc, char **argv) {
  const char *cmd = argv[2];
  if (strcmp(cmd, "check") == 0 && argc == 3) return check_once(c, 1);
  if (strcmp(cmd, "unknown") == 0 && argc == 3) return unknown_method(c);
  if (strcmp(cmd, "watch-cancel") == 0 && argc == 3) return watch(base, c, 0, 1, GW_CANCELLED);
  unsigned long n = argc == 4 ? positive_arg(argv[3]) : 0;
  if (strcmp(cmd, "deadline") == 0 && n > 0) return watch(base, c, n, 0, GW_DEADLINE_EXCEEDED);
  if (strcmp(cmd, "loop") == 0 && n > 0) {
    for (unsigned long i = 0; i < n; i++)
      if (check_once(c, 0) != 0) return 1;
    printf("ok %lu\n", n);
    return 0;
  }
  fprintf(stderr, "usage: gcl_probe TARGET check|loop N|watch-cancel|deadline MS|unknown\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: gcl_probe TARGET check|loop N|watch-cancel|deadline MS|unknown\n");
    return 2;
  }
  struct event_base *base = event_base_new();
  if (!base) {
    fprintf(stderr, "gcl_probe: event_base_new failed\n");
    return 1;
  }
  gcl_conn *c = NULL;
  char err[256] = "";
  int rc = gcl_conn_new(&c, base, argv[1], NULL, err, sizeof err);
  if (rc < 0) {
    fprintf(stderr, "gcl_probe: gcl_conn_new %s: %s\n", argv[1], err[0] ? err : strerror(-rc));
    event_base_free(base);
    return 2;
  }
  int code = run(base, c, argc, argv);
  gcl_conn_free(c);
  event_base_free(base);
  libevent_global_shutdown();
  return code;
}
