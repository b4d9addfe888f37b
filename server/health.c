#include "health.h"

#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"
#include "pbcheck.h"

/* Looks up the requested service; answers the error itself and returns 0 when the
 * request is bad or the service unknown. */
static int known_service(call *c, const uint8_t *req, size_t len, const char *const *services) {
  char err[256];
  if (pbcheck_message(&grpc__health__v1__health_check_request__descriptor, req, len, err, sizeof err) < 0) {
    call_finish(c, GW_INVALID_ARGUMENT, "%s", err);
    return 0;
  }
  Grpc__Health__V1__HealthCheckRequest *r = grpc__health__v1__health_check_request__unpack(NULL, len, req);
  if (!r) {
    call_finish(c, GW_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return 0;
  }
  int known = r->service[0] == '\0';
  for (const char *const *p = services; !known && *p; p++) known = strcmp(*p, r->service) == 0;
  if (!known) call_finish(c, GW_NOT_FOUND, "unknown service \"%.100s\"", r->service);
  grpc__health__v1__health_check_request__free_unpacked(r, NULL);
  return known;
}

static int send_serving(call *c) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  return call_send(c, &resp.base);
}

static void check(call *c, const uint8_t *req, size_t len, void *svc) {
  if (!known_service(c, req, len, svc)) return;
  send_serving(c);
  call_finish(c, GW_OK, NULL);
}

/* Nothing to release: a watcher holds no state beyond its call. */
static void watch_cancelled(call *c, void *arg) {
  (void)c;
  (void)arg;
}

/* Sends the current status, then keeps the stream open: the status never changes
 * while the server is up, and shutdown ends every call with UNAVAILABLE. */
static void watch(call *c, const uint8_t *req, size_t len, void *svc) {
  if (!known_service(c, req, len, svc)) return;
  call_on_cancel(c, watch_cancelled, NULL);
  send_serving(c);
}

int health_register(call_server *s, const char *const *services) {
  void *svc = (void *)(uintptr_t)services;
  int rc = call_server_add(s, "/grpc.health.v1.Health/Check", check, svc, 0);
  if (rc == 0) rc = call_server_add(s, "/grpc.health.v1.Health/Watch", watch, svc, 0);
  return rc;
}
