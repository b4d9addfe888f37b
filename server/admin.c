#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "authz.h"
#include "grpcwire.h"
#include "pbcheck.h"
#include "procstat.h"
#include "prismq/admin/v1/admin.pb-c.h"

struct admin {
  call_server *srv;
  admin_counters_fn fn;
  void *arg;
};

static void get_stats(call *c, const uint8_t *req, size_t len, void *svc) {
  admin *a = svc;
  char err[256];
  if (pbcheck_message(&prismq__admin__v1__get_stats_request__descriptor, req, len, err,
                      sizeof err) < 0) {
    call_finish(c, GW_INVALID_ARGUMENT, "%s", err);
    return;
  }
  Prismq__Admin__V1__GetStatsRequest *r =
      prismq__admin__v1__get_stats_request__unpack(NULL, len, req);
  if (!r) {
    call_finish(c, GW_INVALID_ARGUMENT, "malformed GetStatsRequest");
    return;
  }
  prismq__admin__v1__get_stats_request__free_unpacked(r, NULL);
  admin_counters rc = {0, 0, 0, 0};
  if (a->fn) a->fn(&rc, a->arg);
  Prismq__Admin__V1__Stats st = PRISMQ__ADMIN__V1__STATS__INIT;
  st.live_calls = call_server_live_calls(a->srv);
  st.live_connections = call_server_live_conns(a->srv) + rc.conns;
  st.total_calls = call_server_total_calls(a->srv);
  st.open_fds = procstat_open_fds();
  st.rss_kb = procstat_rss_bytes() / 1024u;
  st.runs_active = rc.runs_active;
  st.runs_total = rc.runs_total;
  st.followers = rc.followers;
  call_send(c, &st.base);
  call_finish(c, GW_OK, NULL);
}

int admin_new(admin **out, call_server *s, admin_counters_fn fn, void *arg) {
  admin *a = calloc(1, sizeof *a);
  if (!a) abort();
  a->srv = s;
  a->fn = fn;
  a->arg = arg;
  int rc = call_server_add(s, "/prismq.admin.v1.Admin/GetStats", get_stats, a, AUTHZ_ADMIN);
  if (rc < 0) {
    free(a);
    return rc;
  }
  *out = a;
  return 0;
}

void admin_free(admin *a) { free(a); }
