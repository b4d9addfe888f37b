#include "health.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"
#include "pbcheck.h"

typedef Grpc__Health__V1__HealthCheckResponse__ServingStatus serving_status;

#define SERVING     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
/* A watcher's last status sent, before the first: no service ever has it. */
#define NONE_SENT GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN

struct service;

/* One open Watch call. */
struct watcher {
  call *c;
  struct service *svc;
  serving_status sent; /* the last status sent on c */
  struct watcher *prev, *next;
};

struct service {
  char *name;
  serving_status status;
  struct watcher *watchers;
};

struct health {
  struct service *svcs; /* "" first */
  size_t nsvcs;
};

/* Queues one HealthCheckResponse. call_send fails only for want of memory, on which
 * the server aborts. */
static void send_status(call *c, serving_status st) {
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = st;
  if (call_send(c, &resp.base) < 0) abort();
}

/* Decodes the request and looks up its service; answers the error itself and returns
 * NULL when the request is bad or the service unknown. */
static struct service *requested(health *h, call *c, const uint8_t *req, size_t len) {
  char err[256];
  if (pbcheck_message(&grpc__health__v1__health_check_request__descriptor, req, len, err,
                      sizeof err) < 0) {
    call_finish(c, GW_INVALID_ARGUMENT, "%s", err);
    return NULL;
  }
  Grpc__Health__V1__HealthCheckRequest *r =
      grpc__health__v1__health_check_request__unpack(NULL, len, req);
  if (!r) {
    call_finish(c, GW_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return NULL;
  }
  struct service *found = NULL;
  for (size_t i = 0; !found && i < h->nsvcs; i++)
    if (strcmp(h->svcs[i].name, r->service) == 0) found = &h->svcs[i];
  if (!found) call_finish(c, GW_NOT_FOUND, "unknown service \"%.100s\"", r->service);
  grpc__health__v1__health_check_request__free_unpacked(r, NULL);
  return found;
}

static void check(call *c, const uint8_t *req, size_t len, void *arg) {
  struct service *svc = requested(arg, c, req, len);
  if (!svc) return;
  send_status(c, svc->status);
  call_finish(c, GW_OK, NULL);
}

/* Sends the service's status if the watcher has not been sent it last. Only while the
 * call is writable: a client that does not read gets the status current once its
 * output has drained (watch_writable), not every change queued behind it. */
static void watcher_update(struct watcher *w) {
  if (w->sent == w->svc->status || !call_writable(w->c)) return;
  send_status(w->c, w->svc->status);
  w->sent = w->svc->status;
}

static void watcher_free(struct watcher *w) {
  if (w->prev)
    w->prev->next = w->next;
  else
    w->svc->watchers = w->next;
  if (w->next) w->next->prev = w->prev;
  free(w);
}

/* The call is the layer's now; the watcher, ours, goes with it. */
static void watch_cancelled(call *c, void *arg) {
  (void)c;
  watcher_free(arg);
}

static void watch_writable(call *c, void *arg) {
  (void)c;
  watcher_update(arg);
}

static void watch(call *c, const uint8_t *req, size_t len, void *arg) {
  struct service *svc = requested(arg, c, req, len);
  if (!svc) return;
  struct watcher *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->c = c;
  w->svc = svc;
  w->sent = NONE_SENT;
  w->next = svc->watchers;
  if (w->next) w->next->prev = w;
  svc->watchers = w;
  call_on_cancel(c, watch_cancelled, w);
  call_set_streaming(c);
  call_on_writable(c, watch_writable, w);
  watcher_update(w);
}

static void service_set(struct service *svc, serving_status st) {
  if (svc->status == st) return;
  svc->status = st;
  for (struct watcher *w = svc->watchers; w; w = w->next) watcher_update(w);
}

void health_set(health *h, const char *service, int serving) {
  serving_status st = serving ? SERVING : NOT_SERVING;
  for (size_t i = 0; i < h->nsvcs; i++)
    if (!service || strcmp(h->svcs[i].name, service) == 0) service_set(&h->svcs[i], st);
}

int health_new(health **out, call_server *s, const char *const *services) {
  size_t n = 1;
  while (services[n - 1]) n++;
  health *h = calloc(1, sizeof *h);
  if (!h) abort();
  h->svcs = calloc(n, sizeof *h->svcs);
  if (!h->svcs) abort();
  h->nsvcs = n;
  for (size_t i = 0; i < n; i++) {
    h->svcs[i].name = strdup(i == 0 ? "" : services[i - 1]);
    if (!h->svcs[i].name) abort();
    h->svcs[i].status = SERVING;
  }
  int rc = call_server_add(s, "/grpc.health.v1.Health/Check", check, h, 0);
  if (rc == 0) rc = call_server_add(s, "/grpc.health.v1.Health/Watch", watch, h, 0);
  if (rc < 0) {
    health_free(h);
    return rc;
  }
  *out = h;
  return 0;
}

void health_free(health *h) {
  if (!h) return;
  for (size_t i = 0; i < h->nsvcs; i++) {
    struct service *svc = &h->svcs[i];
    /* call_finish takes the call back without its cancel callback firing. */
    while (svc->watchers) {
      call_finish(svc->watchers->c, GW_UNAVAILABLE, "health service stopped");
      watcher_free(svc->watchers);
    }
    free(svc->name);
  }
  free(h->svcs);
  free(h);
}
