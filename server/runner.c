#include "runner.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "authz.h"
#include "b64.h"
#include "compat.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpcwire.h"
#include "ids.h"
#include "log.h"
#include "outlog.h"
#include "pbcheck.h"
#include "preset.h"
#include "utf8.h"
#include "xalloc.h"

/* Input limits: generous for people, small enough that no request can make the
 * server hold much. */
#define MAX_ID_LEN    128
#define MAX_KEY_LEN   128
#define MAX_VALUE_LEN 8192
#define MAX_ENTRIES   64
#define LIST_DEFAULT  100
#define LIST_MAX      1000
/* A run is stored and listed with everything its request held: keep requests small
 * enough that a page of runs stays a reasonable message. */
#define MAX_START_REQ (64u << 10)
/* A module's saved presets together stay well under a ListPresets page
 * (PRESET_MAX_PER_MODULE of them). */
#define MAX_PRESET_REQ (16u << 10)
/* A ListRuns answer stops short of this many bytes (stock clients refuse messages
 * over 4 MiB), continuing through next_page_token. */
#define LIST_MAX_BYTES (3u << 20)
/* Output a follower moves per turn while its client keeps up; also what a stalled
 * follower holds, so it stays near one output record. */
#define FOLLOW_BATCH (64u << 10)

struct runner {
  sched *sch;
  uint64_t followers;
  struct evbuffer *framed; /* scratch for messages sent already encoded */
};

typedef Prismq__Runner__V1__Run pb_run;

/* Maps the core's negative errno to a gRPC status. */
static int status_of(int rc) {
  switch (rc) {
  case -ENOENT: return GW_NOT_FOUND;
  case -EINVAL: return GW_INVALID_ARGUMENT;
  case -EEXIST: return GW_ALREADY_EXISTS;
  case -EPERM: return GW_PERMISSION_DENIED;
  case -ENOSPC:
  case -EAGAIN: return GW_RESOURCE_EXHAUSTED;
  case -EROFS:
  case -EALREADY:
  case -ENOTSUP: return GW_FAILED_PRECONDITION;
  /* Shutting down, or the run table cannot be written: worth a retry elsewhere or later. */
  case -ESHUTDOWN:
  case -EIO: return GW_UNAVAILABLE;
  default: return GW_INTERNAL;
  }
}

static int send_run(call *c, const pb_run *r) { return call_send(c, &r->base); }

static void reply_run(call *c, pb_run *r) {
  send_run(c, r);
  prismq__runner__v1__run__free_unpacked(r, NULL);
  call_finish(c, GW_OK, NULL);
}

/* ---- input checks --------------------------------------------------------------- */

/* Checks one string field's length (pbcheck_message has checked its bytes).
 * Answers the call and returns 0 if it is too long. */
static int check_str(call *c, const char *what, const char *s, size_t max) {
  size_t len = strlen(s);
  if (len > max) {
    call_finish(c, GW_INVALID_ARGUMENT, "%s is too long (%zu bytes, at most %zu)", what, len, max);
    return 0;
  }
  return 1;
}

/* Map entries of a request: key and value strings at the same places in each type. */
typedef struct {
  ProtobufCMessage base;
  char *key;
  char *value;
} map_entry;

static int check_map(call *c, const char *what, void *const *entries, size_t n) {
  if (n > MAX_ENTRIES) {
    call_finish(c, GW_INVALID_ARGUMENT, "too many %s (%zu, at most %d)", what, n, MAX_ENTRIES);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    const map_entry *e = entries[i];
    if (!check_str(c, what, e->key, MAX_KEY_LEN) || !check_str(c, what, e->value, MAX_VALUE_LEN))
      return 0;
    if (!e->key[0]) {
      call_finish(c, GW_INVALID_ARGUMENT, "%s key must not be empty", what);
      return 0;
    }
  }
  return 1;
}

/* A run id argument: answers NOT_FOUND itself for anything that cannot be one. */
static int check_run_id(call *c, const char *id) {
  if (!id[0]) {
    call_finish(c, GW_INVALID_ARGUMENT, "run_id is required");
    return 0;
  }
  if (!id_run_valid(id, strlen(id))) {
    char safe[64];
    utf8_sanitize(safe, sizeof safe, id, strlen(id));
    call_finish(c, GW_NOT_FOUND, "run \"%s\" not found", safe);
    return 0;
  }
  return 1;
}

/* Decodes the request, after checking its strings: protobuf-c would cut one at a NUL
 * byte (a parameter would silently run shorter) and pass invalid UTF-8 through. */
#define UNPACK_OR_FAIL(var, type, stem, what)                                    \
  char perr_[256];                                                               \
  if (pbcheck_message(&stem##__descriptor, req, len, perr_, sizeof perr_) < 0) { \
    call_finish(c, GW_INVALID_ARGUMENT, "%s", perr_);                            \
    return;                                                                      \
  }                                                                              \
  type *var = stem##__unpack(NULL, len, req);                                    \
  if (!var) {                                                                    \
    call_finish(c, GW_INVALID_ARGUMENT, "malformed " what);                      \
    return;                                                                      \
  }

/* ---- who may touch a run ---------------------------------------------------------- */

static const char *who(const call *c) {
  const char *id = call_peer(c)->identity;
  return id[0] ? id : "anonymous";
}

/* A caller holding `all_role` may touch any run; others only their own (the method's
 * own role was checked by the call layer). Answers the call and returns 0 if the run
 * is someone else's or does not exist. The run is read only for such callers, so the
 * common path (one identity for everything, or none) costs nothing here. */
static int check_owner(runner *rn, call *c, const char *run_id, unsigned all_role) {
  if (call_roles(c) & all_role) return 1;
  pb_run *run = NULL;
  if (sched_get(rn->sch, run_id, &run) != 0) {
    call_finish(c, GW_NOT_FOUND, "run %s not found", run_id);
    return 0;
  }
  int mine = strcmp(run->owner, call_peer(c)->identity) == 0;
  prismq__runner__v1__run__free_unpacked(run, NULL);
  if (!mine)
    call_finish(c, GW_PERMISSION_DENIED,
                "permission denied: run %s belongs to another identity; %s needs role %s", run_id,
                who(c), authz_role_name(all_role));
  return mine;
}

/* ---- unary methods -------------------------------------------------------------- */

/* Rich details stay well within what clients accept as metadata (grpcio: 8 KiB). */
#define MAX_DETAILS_BYTES 3072

/* INVALID_ARGUMENT for bad StartRun parameters: `msg` names them all, and a
 * google.rpc.BadRequest in the status details has a field violation for each
 * ("parameters.NAME"), as many as fit in MAX_DETAILS_BYTES. */
static void finish_bad_params(call *c, const param_report *bad, const char *msg) {
  Google__Rpc__BadRequest__FieldViolation *fv = xcalloc(bad->n, sizeof *fv);
  Google__Rpc__BadRequest__FieldViolation **fvp = xcalloc(bad->n, sizeof *fvp);
  char **fields = xcalloc(bad->n, sizeof *fields);
  Google__Rpc__BadRequest br = GOOGLE__RPC__BAD_REQUEST__INIT;
  Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
  Google__Protobuf__Any *anyp = &any;
  Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
  /* What the Status holds besides the BadRequest: the message, the Any's type URL, and
   * their tags and lengths. */
  size_t budget = MAX_DETAILS_BYTES - strlen(msg) - 64;
  br.field_violations = fvp;
  for (size_t i = 0; i < bad->n; i++) {
    fields[i] = xmalloc(strlen(bad->items[i].name) + sizeof "parameters.");
    sprintf(fields[i], "parameters.%s", bad->items[i].name);
    fv[i] =
        (Google__Rpc__BadRequest__FieldViolation)GOOGLE__RPC__BAD_REQUEST__FIELD_VIOLATION__INIT;
    fv[i].field = fields[i];
    fv[i].description = bad->items[i].message;
    fvp[i] = &fv[i];
    br.n_field_violations = i + 1;
    if (google__rpc__bad_request__get_packed_size(&br) > budget) {
      br.n_field_violations = i ? i : 1;
      break;
    }
  }
  any.type_url = "type.googleapis.com/google.rpc.BadRequest";
  any.value.len = google__rpc__bad_request__get_packed_size(&br);
  any.value.data = xmalloc(any.value.len + 1);
  google__rpc__bad_request__pack(&br, any.value.data);
  st.code = GW_INVALID_ARGUMENT;
  st.message = (char *)msg;
  st.n_details = 1;
  st.details = &anyp;
  size_t len = google__rpc__status__get_packed_size(&st);
  uint8_t *packed = xmalloc(len + 1);
  google__rpc__status__pack(&st, packed);
  call_finish_details(c, GW_INVALID_ARGUMENT, packed, len, "%s", msg);
  free(packed);
  free(any.value.data);
  for (size_t i = 0; i < bad->n; i++) free(fields[i]);
  free(fields);
  free(fvp);
  free(fv);
}

static void start_run(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  if (len > MAX_START_REQ) {
    call_finish(c, GW_INVALID_ARGUMENT,
                "StartRunRequest of %zu bytes is over the limit of %u bytes", len, MAX_START_REQ);
    return;
  }
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__StartRunRequest, prismq__runner__v1__start_run_request,
                 "StartRunRequest");
  if (!r->module_id[0]) {
    call_finish(c, GW_INVALID_ARGUMENT, "module_id is required");

  } else if (check_str(c, "module_id", r->module_id, MAX_ID_LEN) &&
             check_str(c, "request_id", r->request_id, MAX_ID_LEN) &&
             check_str(c, "preset", r->preset, MAX_ID_LEN) &&
             check_map(c, "parameters", (void *const *)r->parameters, r->n_parameters) &&
             check_map(c, "labels", (void *const *)r->labels, r->n_labels)) {
    char err[512];
    pb_run *run = NULL;
    const conn_peer *p = call_peer(c);
    if (!authz_may_start(sched_config(rn->sch), p->identity, p->local, r->module_id)) {
      LOG_INFO("start refused module_id=%.64s identity=%s peer=%s", r->module_id, who(c), p->addr);
      call_finish(c, GW_PERMISSION_DENIED, "permission denied: %s may not start module %.64s",
                  who(c), r->module_id);
    } else {
      param_report bad = PARAM_REPORT_INIT;
      int rc = sched_start(rn->sch, r, p->identity, &run, &bad, err, sizeof err);
      if (rc < 0 && bad.n)
        finish_bad_params(c, &bad, err);
      else if (rc < 0)
        call_finish(c, status_of(rc), "%s", err);
      else
        reply_run(c, run);
      param_report_clear(&bad);
    }
  }
  prismq__runner__v1__start_run_request__free_unpacked(r, NULL);
}

static void get_run(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__GetRunRequest, prismq__runner__v1__get_run_request,
                 "GetRunRequest");
  const uint8_t *run;
  size_t run_len;
  if (check_run_id(c, r->run_id) && check_owner(rn, c, r->run_id, AUTHZ_READ_ALL)) {
    /* The stored encoding goes out as it is: no decode and re-encode per call. */
    if (sched_get_packed(rn->sch, r->run_id, &run, &run_len) == 0) {
      if (gw_frame_append(rn->framed, run, run_len) != 0) abort();
      call_send_framed(c, rn->framed);
      call_finish(c, GW_OK, NULL);
    } else {
      call_finish(c, GW_NOT_FOUND, "run %s not found", r->run_id);
    }
  }
  prismq__runner__v1__get_run_request__free_unpacked(r, NULL);
}

/* Page tokens are opaque to clients: a kind ("v1:" for runs, "p1:" for presets) and
 * where the next page starts, base64. Writes the token of `kind` + `body` into out
 * (room for 4 * 64 / 3 + 1 bytes). */
static void token_encode(char *out, const char *kind, const char *body) {
  char raw[64];
  int n = snprintf(raw, sizeof raw, "%s%s", kind, body);
  EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)raw, n);
}

/* The body of token tok of `kind` (NUL-terminated, in body: 64 bytes), or -EINVAL. */
static int token_decode(char *body, const char *kind, const char *tok) {
  size_t len = strlen(tok), klen = strlen(kind), n;
  uint8_t raw[B64_DECODED_MAX(80)];
  if (len == 0 || len % 4 || len > 80 || b64_decode(raw, &n, tok, len) < 0) return -EINVAL;
  if (n < klen || memcmp(raw, kind, klen) != 0) return -EINVAL;
  memcpy(body, raw + klen, (size_t)n - klen);
  body[n - klen] = '\0';
  return 0;
}

/* A run page token's run id (ID_RUN_LEN + 1 bytes), or -EINVAL. */
static int run_token_decode(char *run_id, const char *tok) {
  char body[64];
  if (token_decode(body, "v1:", tok) != 0 || !id_run_valid(body, strlen(body))) return -EINVAL;
  memcpy(run_id, body, ID_RUN_LEN + 1);
  return 0;
}

static void list_runs(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__ListRunsRequest, prismq__runner__v1__list_runs_request,
                 "ListRunsRequest");
  char before[ID_RUN_LEN + 1];
  const char *keys[MAX_ENTRIES], *vals[MAX_ENTRIES];
  int statuses[RUNTAB_FILTER_MAX];
  runtab_filter f = RUNTAB_FILTER_INIT;
  if (r->n_statuses > RUNTAB_FILTER_MAX) {
    call_finish(c, GW_INVALID_ARGUMENT, "too many statuses (at most %d)", RUNTAB_FILTER_MAX);
    goto out;
  }
  for (size_t i = 0; i < r->n_statuses; i++) {
    if (r->statuses[i] < PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED ||
        r->statuses[i] > PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST) {
      call_finish(c, GW_INVALID_ARGUMENT, "invalid status %d in statuses", (int)r->statuses[i]);
      goto out;
    }
    statuses[i] = (int)r->statuses[i];
  }
  if (!check_str(c, "module_id", r->module_id, MAX_ID_LEN) ||
      !check_map(c, "labels", (void *const *)r->labels, r->n_labels))
    goto out;
  if (r->page_token[0] && run_token_decode(before, r->page_token) != 0) {
    call_finish(c, GW_INVALID_ARGUMENT, "invalid page_token");
    goto out;
  }
  for (size_t i = 0; i < r->n_labels; i++) {
    keys[i] = r->labels[i]->key;
    vals[i] = r->labels[i]->value;
  }
  f.statuses = statuses;
  f.nstatuses = r->n_statuses;
  f.module_id = r->module_id;
  f.label_keys = keys;
  f.label_values = vals;
  f.nlabels = r->n_labels;
  /* Without read_all a caller lists its own runs only. */
  if (!(call_roles(c) & AUTHZ_READ_ALL)) f.owner = call_peer(c)->identity;
  size_t limit = r->page_size == 0         ? LIST_DEFAULT
                 : r->page_size > LIST_MAX ? LIST_MAX
                                           : r->page_size;
  pb_run **runs = NULL;
  size_t n = 0;
  int more = 0;
  int rc = sched_list(rn->sch, &f, r->page_token[0] ? before : NULL, limit, &runs, &n, &more);
  if (rc < 0) {
    call_finish(c, GW_INTERNAL, "cannot list runs: %s", strerror(-rc));
    goto out;
  }
  size_t bytes = 0, keep = 0;
  while (keep < n) {
    size_t sz = prismq__runner__v1__run__get_packed_size(runs[keep]) + 8; /* + tag and length */
    if (keep > 0 && bytes + sz > LIST_MAX_BYTES) break;
    bytes += sz;
    keep++;
  }
  if (keep < n) {
    more = 1;
    for (size_t i = keep; i < n; i++) prismq__runner__v1__run__free_unpacked(runs[i], NULL);
    n = keep;
  }
  char tok[128] = "";
  if (more && n > 0) token_encode(tok, "v1:", runs[n - 1]->run_id);
  Prismq__Runner__V1__ListRunsResponse resp = PRISMQ__RUNNER__V1__LIST_RUNS_RESPONSE__INIT;
  resp.runs = runs;
  resp.n_runs = n;
  resp.next_page_token = tok;
  call_send(c, &resp.base);
  runtab_list_free(runs, n);
  call_finish(c, GW_OK, NULL);
out:
  prismq__runner__v1__list_runs_request__free_unpacked(r, NULL);
}

/* Whether module m is in the category and has every tag the request names. */
static int module_matches(const config_module *m, const Prismq__Runner__V1__ListModulesRequest *r) {
  if (r->category[0] && strcmp(r->category, m->category) != 0) return 0;
  for (size_t i = 0; i < r->n_tags; i++) {
    size_t j = 0;
    while (j < m->ntags && strcmp(m->tags[j], r->tags[i]) != 0) j++;
    if (j == m->ntags) return 0;
  }
  return 1;
}

/* A ParameterSpec viewing p: nothing is copied. */
static void fill_param(Prismq__Runner__V1__ParameterSpec *o, const config_param *p) {
  *o = (Prismq__Runner__V1__ParameterSpec)PRISMQ__RUNNER__V1__PARAMETER_SPEC__INIT;
  o->name = p->name;
  o->required = p->required != 0;
  o->default_value = p->default_value ? p->default_value : (char *)protobuf_c_empty_string;
  o->description = p->description;
  o->pattern = p->pattern ? p->pattern : (char *)protobuf_c_empty_string;
  o->type = (Prismq__Runner__V1__ParameterType)p->type;
  if (p->has_min) {
    o->min_bound_case = PRISMQ__RUNNER__V1__PARAMETER_SPEC__MIN_BOUND_MIN;
    o->min = p->min;
  }
  if (p->has_max) {
    o->max_bound_case = PRISMQ__RUNNER__V1__PARAMETER_SPEC__MAX_BOUND_MAX;
    o->max = p->max;
  }
  o->options = p->options;
  o->n_options = p->noptions;
  o->min_length = p->min_length;
  o->max_length = p->max_length;
  o->base_dir = p->base_dir ? p->base_dir : (char *)protobuf_c_empty_string;
}

/* A Module viewing m, its parameters in ps (m->nparams slots) pointed to from pptr. */
static void fill_module(Prismq__Runner__V1__Module *o, const config_module *m,
                        Prismq__Runner__V1__ParameterSpec *ps,
                        Prismq__Runner__V1__ParameterSpec **pptr) {
  *o = (Prismq__Runner__V1__Module)PRISMQ__RUNNER__V1__MODULE__INIT;
  o->id = m->id;
  o->name = m->name;
  o->description = m->description;
  o->timeout_ms = m->timeout_ms;
  o->max_concurrent = m->max_concurrent;
  o->category = m->category;
  o->tags = m->tags;
  o->n_tags = m->ntags;
  o->version = m->version;
  o->enabled = m->enabled != 0;
  if (m->executor == CONFIG_EXEC_SLURM) o->executor = "slurm";
  o->parameters = pptr;
  o->n_parameters = m->nparams;
  for (size_t j = 0; j < m->nparams; j++) {
    fill_param(&ps[j], &m->params[j]);
    pptr[j] = &ps[j];
  }
}

static void list_modules(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__ListModulesRequest,
                 prismq__runner__v1__list_modules_request, "ListModulesRequest");
  const config *cfg = sched_config(rn->sch);
  size_t np = 0;
  for (size_t i = 0; i < cfg->nmodules; i++) np += cfg->modules[i].nparams;
  /* Views into the config: nothing here is allocated per string. */
  Prismq__Runner__V1__Module *mods = xcalloc(cfg->nmodules + 1, sizeof *mods);
  Prismq__Runner__V1__Module **mptr = xcalloc(cfg->nmodules + 1, sizeof *mptr);
  Prismq__Runner__V1__ParameterSpec *ps = xcalloc(np + 1, sizeof *ps);
  Prismq__Runner__V1__ParameterSpec **pptr = xcalloc(np + 1, sizeof *pptr);
  size_t k = 0, n = 0;
  for (size_t i = 0; i < cfg->nmodules; i++) {
    const config_module *m = &cfg->modules[i];
    if (!module_matches(m, r)) continue;
    fill_module(&mods[n], m, &ps[k], &pptr[k]);
    k += m->nparams;
    mptr[n] = &mods[n];
    n++;
  }
  prismq__runner__v1__list_modules_request__free_unpacked(r, NULL);
  Prismq__Runner__V1__ListModulesResponse resp = PRISMQ__RUNNER__V1__LIST_MODULES_RESPONSE__INIT;
  resp.modules = mptr;
  resp.n_modules = n;
  call_send(c, &resp.base);
  free(pptr);
  free(ps);
  free(mptr);
  free(mods);
  call_finish(c, GW_OK, NULL);
}

/* ---- WaitRun and CancelRun: a call held until the run changes -------------------- */

struct waiter {
  runner *rn;
  call *c;
  sched_watch *w;
  struct event *timer;
  char run_id[ID_RUN_LEN + 1];
};

static void waiter_free(struct waiter *wt) {
  sched_unwatch(wt->w);
  if (wt->timer) event_free(wt->timer);
  free(wt);
}

static void waiter_cancelled(call *c, void *arg) {
  (void)c;
  waiter_free(arg);
}

static void waiter_fired(void *arg, const pb_run *run) {
  struct waiter *wt = arg;
  wt->w = NULL; /* the scheduler frees a watch once it fires */
  send_run(wt->c, run);
  call_finish(wt->c, GW_OK, NULL);
  waiter_free(wt);
}

/* WaitRun's own timeout: answer with the run as it is now. */
static void waiter_timeout(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct waiter *wt = arg;
  pb_run *run = NULL;
  if (sched_get(wt->rn->sch, wt->run_id, &run) == 0)
    reply_run(wt->c, run);
  else
    call_finish(wt->c, GW_NOT_FOUND, "run %s not found", wt->run_id);
  waiter_free(wt);
}

/* Holds call c until run_id is terminal (or timeout_ms, if not 0, has passed). */
static void wait_terminal(runner *rn, call *c, const char *run_id, uint32_t timeout_ms) {
  struct waiter *wt = xcalloc(1, sizeof *wt);
  wt->rn = rn;
  wt->c = c;
  snprintf(wt->run_id, sizeof wt->run_id, "%s", run_id);
  if (sched_watch_run(rn->sch, &wt->w, run_id, SCHED_EV_TERMINAL, waiter_fired, wt) < 0) {
    free(wt);
    call_finish(c, GW_NOT_FOUND, "run %s not found", run_id);
    return;
  }
  if (timeout_ms) {
    wt->timer = evtimer_new(call_base(c), waiter_timeout, wt);
    if (!wt->timer) abort();
    event_base_update_cache_time(call_base(c)); /* count from now, not the loop's start */
    struct timeval tv = compat_timeout_ms(timeout_ms);
    evtimer_add(wt->timer, &tv);
  }
  call_on_cancel(c, waiter_cancelled, wt);
}

static void wait_run(call *c, const uint8_t *req, size_t len, void *svc) {
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__WaitRunRequest, prismq__runner__v1__wait_run_request,
                 "WaitRunRequest");
  if (check_run_id(c, r->run_id) && check_owner(svc, c, r->run_id, AUTHZ_READ_ALL))
    wait_terminal(svc, c, r->run_id, r->timeout_ms);
  prismq__runner__v1__wait_run_request__free_unpacked(r, NULL);
}

/* Cancel = terminate, wait, kill: the answer is the run once it has ended, so a
 * client that sees CancelRun return knows no process of the run is left. */
static void cancel_run(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__CancelRunRequest, prismq__runner__v1__cancel_run_request,
                 "CancelRunRequest");
  if (check_run_id(c, r->run_id) && check_owner(rn, c, r->run_id, AUTHZ_CANCEL_ANY)) {
    LOG_INFO("cancel requested run_id=%s by=%s peer=%s", r->run_id, who(c), call_peer(c)->addr);
    int rc = sched_cancel(rn->sch, r->run_id, r->grace_ms);
    if (rc == -EALREADY) {
      pb_run *run = NULL;
      const char *st = "terminal";
      if (sched_get(rn->sch, r->run_id, &run) == 0) {
        const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
            &prismq__runner__v1__run_status__descriptor, run->status);
        if (v) st = v->name;
      }
      call_finish(c, GW_FAILED_PRECONDITION, "run %s is already %s", r->run_id, st);
      if (run) prismq__runner__v1__run__free_unpacked(run, NULL);
    } else if (rc < 0) {
      call_finish(c, status_of(rc), "run %s not found", r->run_id);
    } else {
      wait_terminal(rn, c, r->run_id, 0);
    }
  }
  prismq__runner__v1__cancel_run_request__free_unpacked(r, NULL);
}

/* ---- StreamOutput followers ------------------------------------------------------ */

struct follower {
  runner *rn;
  call *c;
  char run_id[ID_RUN_LEN + 1];
  uint64_t start_seq;
  int stream;
  int follow;
  outlog_reader *rd;
  sched_watch *w;
  struct evbuffer *buf;
};

static void follower_free(struct follower *f) {
  sched_unwatch(f->w);
  outlog_reader_free(f->rd);
  evbuffer_free(f->buf);
  f->rn->followers--;
  free(f);
}

static void follower_cancelled(call *c, void *arg) {
  (void)c;
  follower_free(arg);
}

/* The end of a follow: one last chunk carrying the terminal run, then OK. A run
 * deleted meanwhile (retention) ends the stream with NOT_FOUND. */
static void follower_end(struct follower *f) {
  if (f->follow) {
    pb_run *run = NULL;
    if (sched_get(f->rn->sch, f->run_id, &run) != 0) {
      call_finish(f->c, GW_NOT_FOUND, "run %s was deleted", f->run_id);
      follower_free(f);
      return;
    }
    Prismq__Runner__V1__OutputChunk last = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
    last.run = run;
    call_send(f->c, &last.base);
    prismq__runner__v1__run__free_unpacked(run, NULL);
  }
  call_finish(f->c, GW_OK, NULL);
  follower_free(f);
}

static void follower_wake(outlog_reader *rd, void *arg);

/* Moves output to the call while the client keeps up; then waits for the client
 * (on_writable) or for more output (outlog wake). Records go as they are in the file
 * (a file segment, sent without copying) when the follower wants them all; a stream
 * filter, or skipping to the start seq, reads them into memory: one batch at most. */
static void follower_pump(struct follower *f) {
  /* Where the connection cannot send files as they are (TLS), a file segment would
   * be mapped and unmapped per batch: reading a batch into memory costs less. */
  int files = call_sends_files(f->c);
  while (call_writable(f->c)) {
    struct evbuffer_file_segment *seg;
    ssize_t n = files ? outlog_reader_read_segment(f->rd, &seg) : -ENOTSUP;
    if (n > 0) n = call_send_file(f->c, seg, (size_t)n) == 0 ? 1 : -EIO;
    if (n > 0) continue;
    if (n == -ENOTSUP) n = outlog_reader_read(f->rd, f->buf, FOLLOW_BATCH);
    if (n < 0) {
      LOG_ERROR("output read failed run_id=%s: %s", f->run_id, strerror((int)-n));
      call_finish(f->c, GW_DATA_LOSS, "cannot read the output of run %s: %s", f->run_id,
                  strerror((int)-n));
      follower_free(f);
      return;
    }
    if (n > 0) {
      call_send_framed(f->c, f->buf);
      continue;
    }
    if (outlog_reader_done(f->rd) || (!f->follow && outlog_reader_caught_up(f->rd))) {
      follower_end(f);
      return;
    }
    outlog_reader_wait(f->rd, follower_wake, f);
    return;
  }
}

static void follower_wake(outlog_reader *rd, void *arg) {
  (void)rd;
  follower_pump(arg);
}

static void follower_writable(call *c, void *arg) {
  (void)c;
  follower_pump(arg);
}

static void follower_started(void *arg, const pb_run *run);

/* Opens the reader once the run has an output log: at once, or when a queued run starts
 * (a remote run has its log once submitted, while it may still be QUEUED). */
static void follower_open(struct follower *f) {
  int rc = sched_open_output(f->rn->sch, f->run_id, f->start_seq, f->stream, &f->rd);
  if (rc == -EAGAIN && f->follow && !f->w) {
    rc = sched_watch_run(f->rn->sch, &f->w, f->run_id, SCHED_EV_STARTED, follower_started, f);
    if (rc == 0) return;
    rc = -ENOENT;
  }
  if (rc == -EAGAIN) {
    call_finish(f->c, GW_OK, NULL); /* queued: nothing exists yet */
    follower_free(f);
    return;
  }
  if (rc == -ENOENT) {
    call_finish(f->c, GW_NOT_FOUND, "run %s not found", f->run_id);
    follower_free(f);
    return;
  }
  if (rc < 0) {
    call_finish(f->c, status_of(rc), "cannot open the output of run %s: %s", f->run_id,
                strerror(-rc));
    follower_free(f);
    return;
  }
  if (!f->rd) {
    follower_end(f); /* the run ended before it started: no output at all */
    return;
  }
  call_on_writable(f->c, follower_writable, f);
  follower_pump(f);
}

static void follower_started(void *arg, const pb_run *run) {
  (void)run;
  struct follower *f = arg;
  f->w = NULL;
  follower_open(f);
}

static void stream_output(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__StreamOutputRequest,
                 prismq__runner__v1__stream_output_request, "StreamOutputRequest");
  if (!check_run_id(c, r->run_id) || !check_owner(rn, c, r->run_id, AUTHZ_READ_ALL)) goto out;
  if (r->stream < 0 || r->stream > PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR) {
    call_finish(c, GW_INVALID_ARGUMENT, "invalid stream %d", (int)r->stream);
    goto out;
  }
  struct follower *f = xcalloc(1, sizeof *f);
  f->rn = rn;
  f->c = c;
  snprintf(f->run_id, sizeof f->run_id, "%s", r->run_id);
  f->start_seq = r->start_seq;
  f->stream = (int)r->stream;
  f->follow = r->follow;
  if (f->follow) call_set_streaming(c);
  f->buf = evbuffer_new();
  if (!f->buf) abort();
  rn->followers++;
  call_on_cancel(c, follower_cancelled, f);
  follower_open(f);
out:
  prismq__runner__v1__stream_output_request__free_unpacked(r, NULL);
}

/* ---- presets --------------------------------------------------------------------- */

/* Saving and deleting a module's presets is for those who may start it. Answers the
 * call and returns 0 if the caller may not. */
static int may_change_presets(runner *rn, call *c, const char *module_id) {
  const conn_peer *p = call_peer(c);
  if (authz_may_start(sched_config(rn->sch), p->identity, p->local, module_id)) return 1;
  call_finish(c, GW_PERMISSION_DENIED,
              "permission denied: %s may not change the presets of module %.64s", who(c),
              module_id);
  return 0;
}

/* A preset request's module_id and name: present and short. Answers the call and
 * returns 0 if not. */
static int check_preset_key(call *c, const char *module_id, const char *name) {
  if (!module_id[0] || !name[0]) {
    call_finish(c, GW_INVALID_ARGUMENT, "%s is required", module_id[0] ? "name" : "module_id");
    return 0;
  }
  return check_str(c, "module_id", module_id, MAX_ID_LEN) && check_str(c, "name", name, MAX_ID_LEN);
}

static void save_preset(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  if (len > MAX_PRESET_REQ) {
    call_finish(c, GW_INVALID_ARGUMENT,
                "SavePresetRequest of %zu bytes is over the limit of %u bytes", len,
                MAX_PRESET_REQ);
    return;
  }
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__SavePresetRequest, prismq__runner__v1__save_preset_request,
                 "SavePresetRequest");
  if (check_preset_key(c, r->module_id, r->name) &&
      check_map(c, "parameters", (void *const *)r->parameters, r->n_parameters) &&
      may_change_presets(rn, c, r->module_id)) {
    const config_module *m = config_find_module(sched_config(rn->sch), r->module_id);
    char err[512];
    param_report bad = PARAM_REPORT_INIT;
    preset_pb *p = NULL;
    int rc = m ? preset_save(&p, sched_runtab(rn->sch), m, r, call_peer(c)->identity,
                             (call_roles(c) & AUTHZ_ADMIN) != 0, &bad, err, sizeof err)
               : -ENOENT;
    if (!m)
      call_finish(c, GW_NOT_FOUND, "unknown module \"%.64s\"", r->module_id);
    else if (rc < 0 && bad.n)
      finish_bad_params(c, &bad, err);
    else if (rc < 0)
      call_finish(c, status_of(rc), "%s", err);
    else {
      call_send(c, &p->base);
      prismq__runner__v1__preset__free_unpacked(p, NULL);
      call_finish(c, GW_OK, NULL);
    }
    param_report_clear(&bad);
  }
  prismq__runner__v1__save_preset_request__free_unpacked(r, NULL);
}

/* A preset page token's index of the page's first preset, or -EINVAL. */
static int preset_token_decode(size_t *index, const char *tok) {
  char body[64], *end;
  if (token_decode(body, "p1:", tok) != 0 || body[0] < '0' || body[0] > '9') return -EINVAL;
  *index = strtoul(body, &end, 10);
  return *end ? -EINVAL : 0;
}

/* Answers ListPresets with the presets of arr[from..n) that fit page_size and
 * LIST_MAX_BYTES, and a token for the rest. */
static void send_presets(call *c, preset_pb **arr, size_t n, size_t from, uint32_t page_size) {
  size_t end = from, bytes = 0;
  size_t limit = page_size ? page_size : LIST_MAX;
  while (end < n && end - from < limit) {
    size_t sz = prismq__runner__v1__preset__get_packed_size(arr[end]) + 8;
    if (end > from && bytes + sz > LIST_MAX_BYTES) break;
    bytes += sz;
    end++;
  }
  char tok[64] = "";
  if (end < n) {
    char index[24];
    snprintf(index, sizeof index, "%zu", end);
    token_encode(tok, "p1:", index);
  }
  Prismq__Runner__V1__ListPresetsResponse resp = PRISMQ__RUNNER__V1__LIST_PRESETS_RESPONSE__INIT;
  resp.presets = arr + from;
  resp.n_presets = end - from;
  resp.next_page_token = tok;
  call_send(c, &resp.base);
  call_finish(c, GW_OK, NULL);
}

static void list_presets(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__ListPresetsRequest,
                 prismq__runner__v1__list_presets_request, "ListPresetsRequest");
  size_t from = 0, n = 0;
  preset_pb **arr = NULL;
  int rc;
  if (!check_str(c, "module_id", r->module_id, MAX_ID_LEN)) goto out;
  if (r->page_token[0] && preset_token_decode(&from, r->page_token) != 0) {
    call_finish(c, GW_INVALID_ARGUMENT, "invalid page_token");
    goto out;
  }
  if ((rc = preset_list(&arr, &n, sched_runtab(rn->sch), sched_config(rn->sch), r->module_id)) <
      0) {
    call_finish(c, GW_UNAVAILABLE, "cannot list presets: %s", strerror(-rc));
    goto out;
  }
  if (r->module_id[0] && !n && !config_find_module(sched_config(rn->sch), r->module_id))
    call_finish(c, GW_NOT_FOUND, "unknown module \"%.64s\"", r->module_id);
  else
    send_presets(c, arr, n, from < n ? from : n, r->page_size);
  runtab_preset_list_free(arr, n);
out:
  prismq__runner__v1__list_presets_request__free_unpacked(r, NULL);
}

static void delete_preset(call *c, const uint8_t *req, size_t len, void *svc) {
  runner *rn = svc;
  UNPACK_OR_FAIL(r, Prismq__Runner__V1__DeletePresetRequest,
                 prismq__runner__v1__delete_preset_request, "DeletePresetRequest");
  if (check_preset_key(c, r->module_id, r->name) && may_change_presets(rn, c, r->module_id)) {
    char err[512];
    int rc =
        preset_delete(sched_runtab(rn->sch), sched_config(rn->sch), r->module_id, r->name,
                      call_peer(c)->identity, (call_roles(c) & AUTHZ_ADMIN) != 0, err, sizeof err);
    if (rc < 0) {
      call_finish(c, status_of(rc), "%s", err);
    } else {
      Prismq__Runner__V1__DeletePresetResponse resp =
          PRISMQ__RUNNER__V1__DELETE_PRESET_RESPONSE__INIT;
      call_send(c, &resp.base);
      call_finish(c, GW_OK, NULL);
    }
  }
  prismq__runner__v1__delete_preset_request__free_unpacked(r, NULL);
}

/* ---- registration --------------------------------------------------------------- */

int runner_new(runner **out, call_server *cs, sched *sch) {
  /* Reading runs: one's own with read or with any module to start, all with read_all
   * (checked per run by check_owner); cancelling: one's own runs, or any with cancel_any. */
  enum { READ = AUTHZ_READ | AUTHZ_READ_ALL | AUTHZ_START };
  static const struct {
    const char *path;
    call_handler_fn fn;
    unsigned need;
  } methods[] = {
      {"/prismq.runner.v1.Runner/StartRun", start_run, AUTHZ_START},
      {"/prismq.runner.v1.Runner/GetRun", get_run, READ},
      {"/prismq.runner.v1.Runner/ListRuns", list_runs, READ},
      {"/prismq.runner.v1.Runner/CancelRun", cancel_run, AUTHZ_START | AUTHZ_CANCEL_ANY},
      {"/prismq.runner.v1.Runner/WaitRun", wait_run, READ},
      {"/prismq.runner.v1.Runner/StreamOutput", stream_output, READ},
      {"/prismq.runner.v1.Runner/ListModules", list_modules, AUTHZ_ANY},
      {"/prismq.runner.v1.Runner/SavePreset", save_preset, AUTHZ_START},
      {"/prismq.runner.v1.Runner/ListPresets", list_presets, AUTHZ_ANY},
      {"/prismq.runner.v1.Runner/DeletePreset", delete_preset, AUTHZ_START},
  };
  runner *rn = xcalloc(1, sizeof *rn);
  rn->sch = sch;
  rn->framed = evbuffer_new();
  if (!rn->framed) abort();
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
    int rc = call_server_add(cs, methods[i].path, methods[i].fn, rn, methods[i].need);
    if (rc < 0) {
      runner_free(rn);
      return rc;
    }
  }
  *out = rn;
  return 0;
}

void runner_free(runner *rn) {
  if (!rn) return;
  evbuffer_free(rn->framed);
  free(rn);
}

void runner_counters(admin_counters *out, void *arg) {
  runner *rn = arg;
  out->runs_active = sched_active(rn->sch);
  out->runs_total = sched_total(rn->sch);
  out->followers = rn->followers;
}
