/* libprismq: typed Runner RPCs over the gRPC client core (gclient). Blocking calls
 * are asynchronous calls on the client's private event_base, run until they end, so
 * both forms share one code path. */
#include "prismq/client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/ssl.h>
#include <protobuf-c/protobuf-c.h>

#include "compat.h"
#include "gclient.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"
#include "tlsctx.h"

#define DEFAULT_TARGET  "127.0.0.1:50051"
#define TARGET_ENV      "PRISMQ_TARGET"
#define INTERRUPTED_MSG "call interrupted by prismq_client_interrupt"

/* A generated request as the protobuf-c message it starts with (NULL stays NULL). */
#define REQ(req) ((const ProtobufCMessage *)(req))

struct sync;

/* A status's details (prismq_status.details): its field violations, then their strings,
 * in one allocation (free with free()). */
struct prismq_status_details {
  size_t n;
  prismq_field_violation v[];
};

struct prismq_client {
  gcl_conn *conn;
  SSL_CTX *tls; /* NULL: h2c */
  struct event_base *base;
  struct event_base *own_base; /* blocking client: the private loop; NULL when async */
  uint32_t deadline_ms;        /* default per call; 0 = none */
  struct sync *running;        /* the blocking call running its loop, or NULL */
  /* Blocking client: prismq_client_interrupt signals the wakeup, which wakes the private
   * loop; NULL when async. */
  compat_wakeup *intr;
  struct event *intr_ev;
  int intr_pending; /* an interrupt came with no call running: it is for the next one */
  /* Blocking client: the details of the last call's status, kept until the next call. */
  struct prismq_status_details *details;
};

/* An RPC: its path and the message type it answers with. */
struct rpc {
  const char *path;
  const ProtobufCMessageDescriptor *resp; /* NULL: a stream of OutputChunks */
};

static const struct rpc RPC_START = {"/prismq.runner.v1.Runner/StartRun",
                                     &prismq__runner__v1__run__descriptor};
static const struct rpc RPC_GET = {"/prismq.runner.v1.Runner/GetRun",
                                   &prismq__runner__v1__run__descriptor};
static const struct rpc RPC_LIST = {"/prismq.runner.v1.Runner/ListRuns",
                                    &prismq__runner__v1__list_runs_response__descriptor};
static const struct rpc RPC_CANCEL = {"/prismq.runner.v1.Runner/CancelRun",
                                      &prismq__runner__v1__run__descriptor};
static const struct rpc RPC_WAIT = {"/prismq.runner.v1.Runner/WaitRun",
                                    &prismq__runner__v1__run__descriptor};
static const struct rpc RPC_MODULES = {"/prismq.runner.v1.Runner/ListModules",
                                       &prismq__runner__v1__list_modules_response__descriptor};
static const struct rpc RPC_SAVE_PRESET = {"/prismq.runner.v1.Runner/SavePreset",
                                           &prismq__runner__v1__preset__descriptor};
static const struct rpc RPC_LIST_PRESETS = {"/prismq.runner.v1.Runner/ListPresets",
                                            &prismq__runner__v1__list_presets_response__descriptor};
static const struct rpc RPC_DELETE_PRESET = {
    "/prismq.runner.v1.Runner/DeletePreset",
    &prismq__runner__v1__delete_preset_response__descriptor};
static const struct rpc RPC_STREAM = {"/prismq.runner.v1.Runner/StreamOutput", NULL};
static const struct rpc RPC_HEALTH = {"/grpc.health.v1.Health/Check",
                                      &grpc__health__v1__health_check_response__descriptor};

/* A blocking call's outcome, filled by the completion. */
struct sync {
  int done;
  prismq_status st;
  struct prismq_status_details *details; /* st's, for the client to keep */
  ProtobufCMessage *resp;
  gcl_call *call;  /* valid until done */
  int interrupted; /* prismq_client_interrupt cancelled it */
};

enum sink {
  SINK_SYNC,
  SINK_RUN,
  SINK_LIST_RUNS,
  SINK_LIST_MODULES,
  SINK_PRESET,
  SINK_LIST_PRESETS,
  SINK_HEALTH,
  SINK_DONE
};

/* One call in flight. */
struct pcall {
  const struct rpc *rpc;
  prismq_chunk_fn on_chunk;
  void *user;
  ProtobufCMessage *resp; /* unary: the response, once decoded */
  size_t nmsg;
  int have_local;      /* the call failed here (decoding, out of memory): `local` wins */
  prismq_status local; /* over the CANCELLED that stopping the call produces */
  struct prismq_status_details *details; /* of the final status, until it is delivered */
  enum sink sink;
  union {
    struct sync *sync;
    prismq_run_fn run;
    prismq_list_runs_fn list_runs;
    prismq_list_modules_fn list_modules;
    prismq_preset_fn preset;
    prismq_list_presets_fn list_presets;
    prismq_health_fn health;
    prismq_done_fn done;
  } to;
};

/* ---- statuses ---- */

static void status_set(prismq_status *st, int code, const char *fmt, ...) COMPAT_PRINTF(3, 4);

static void status_set(prismq_status *st, int code, const char *fmt, ...) {
  va_list ap;
  st->code = code;
  st->details = NULL;
  va_start(ap, fmt);
  vsnprintf(st->message, sizeof st->message, fmt, ap);
  va_end(ap);
}

static prismq_status status_of(int code, const char *message) {
  prismq_status st;
  status_set(&st, code, "%s", message);
  return st;
}

/* The status for a call that could not be started (negative errno). */
static prismq_status start_error(int rc) {
  if (rc == -ENOMEM) return status_of(PRISMQ_CODE_RESOURCE_EXHAUSTED, "out of memory");
  if (rc == -EMSGSIZE) return status_of(PRISMQ_CODE_RESOURCE_EXHAUSTED, "request too large");
  return status_of(PRISMQ_CODE_INVALID_ARGUMENT, "NULL client, request or callback");
}

const char *prismq_code_name(int code) { return gw_status_name(code); }

size_t prismq_status_violations(const prismq_status *st, const prismq_field_violation **out) {
  const struct prismq_status_details *d = st ? st->details : NULL;
  if (out) *out = d ? d->v : NULL;
  return d ? d->n : 0;
}

/* Why the last connect of this thread failed, when errno alone cannot say (TLS files). */
static __thread char connect_error[512];
static __thread int connect_error_rc;

const char *prismq_strerror(int rc) {
  if (rc < 0 && rc == connect_error_rc && connect_error[0]) return connect_error;
  return compat_strerror(rc < 0 ? -rc : rc);
}

void prismq_run_free(Prismq__Runner__V1__Run *run) {
  prismq__runner__v1__run__free_unpacked(run, NULL);
}

/* ---- decoding ---- */

/* protobuf-c's unpack returns NULL both for malformed input and for a failed
 * allocation; this allocator tells them apart. It is malloc/free, so results can be
 * freed with the default allocator (free_unpacked(msg, NULL)). */
struct decode_alloc {
  ProtobufCAllocator a;
  int nomem;
};

static void *decode_alloc_fn(void *data, size_t size) {
  struct decode_alloc *d = data;
  void *p = malloc(size);
  if (!p) d->nomem = 1;
  return p;
}

static void decode_free_fn(void *data, void *p) {
  (void)data;
  free(p);
}

/* Decodes one response message; on failure the call gets its local status and is
 * stopped (the return value for gclient's on_msg). */
static ProtobufCMessage *decode(struct pcall *pc, const ProtobufCMessageDescriptor *desc,
                                const uint8_t *msg, size_t len) {
  struct decode_alloc d = {{decode_alloc_fn, decode_free_fn, NULL}, 0};
  d.a.allocator_data = &d;
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, &d.a, len, msg);
  if (!m) {
    pc->have_local = 1;
    if (d.nomem)
      status_set(&pc->local, PRISMQ_CODE_RESOURCE_EXHAUSTED, "out of memory decoding a %s",
                 desc->short_name);
    else
      status_set(&pc->local, PRISMQ_CODE_INTERNAL, "malformed %s from the server",
                 desc->short_name);
  }
  return m;
}

/* Any.type_url names the type after its last '/'
 * ("type.googleapis.com/google.rpc.BadRequest"). */
static int any_is_bad_request(const Google__Protobuf__Any *any) {
  const char *slash = strrchr(any->type_url, '/');
  return slash && strcmp(slash + 1, "google.rpc.BadRequest") == 0;
}

/* Decodes the BadRequests among the details of `rs` into br[0..rs->n_details) (NULL
 * where a detail is of another type or does not decode). Returns how many field
 * violations they hold, and adds the bytes their strings take (NULs included) to
 * *bytes. */
static size_t bad_requests_unpack(Google__Rpc__BadRequest **br, const Google__Rpc__Status *rs,
                                  size_t *bytes) {
  size_t n = 0;
  for (size_t i = 0; i < rs->n_details; i++) {
    const Google__Protobuf__Any *any = rs->details[i];
    br[i] = any_is_bad_request(any)
                ? google__rpc__bad_request__unpack(NULL, any->value.len, any->value.data)
                : NULL;
    for (size_t j = 0; br[i] && j < br[i]->n_field_violations; j++, n++)
      *bytes += strlen(br[i]->field_violations[j]->field) +
                strlen(br[i]->field_violations[j]->description) + 2;
  }
  return n;
}

/* Copies s, NUL included, to *at and moves *at past it. Returns the copy. */
static char *put_string(char **at, const char *s) {
  char *copy = *at;
  size_t n = strlen(s) + 1;
  memcpy(copy, s, n);
  *at += n;
  return copy;
}

/* Copies the field violations of br[0..nbr) into d, sized by bad_requests_unpack. */
static void details_fill(struct prismq_status_details *d, Google__Rpc__BadRequest *const *br,
                         size_t nbr) {
  char *str = (char *)&d->v[d->n];
  size_t k = 0;
  for (size_t i = 0; i < nbr; i++) {
    for (size_t j = 0; br[i] && j < br[i]->n_field_violations; j++, k++) {
      d->v[k].field = put_string(&str, br[i]->field_violations[j]->field);
      d->v[k].description = put_string(&str, br[i]->field_violations[j]->description);
    }
  }
}

/* The field violations in the details that came with the server's status `gst`: a
 * google.rpc.Status of the same code. NULL if there are none, if the details do not
 * decode, and without memory: the details only add to a status that stands without
 * them. */
static struct prismq_status_details *details_decode(const gcl_status *gst) {
  Google__Rpc__Status *rs =
      gst->details ? google__rpc__status__unpack(NULL, gst->details_len, gst->details) : NULL;
  if (!rs) return NULL;
  Google__Rpc__BadRequest **br =
      rs->code == gst->code ? calloc(rs->n_details + 1, sizeof *br) : NULL;
  size_t bytes = 0, n = br ? bad_requests_unpack(br, rs, &bytes) : 0;
  struct prismq_status_details *d = n ? malloc(sizeof *d + n * sizeof d->v[0] + bytes) : NULL;
  if (d) {
    d->n = n;
    details_fill(d, br, rs->n_details);
  }
  for (size_t i = 0; br && i < rs->n_details; i++)
    google__rpc__bad_request__free_unpacked(br[i], NULL);
  free(br);
  google__rpc__status__free_unpacked(rs, NULL);
  return d;
}

/* ---- calls ---- */

static int call_on_msg(void *user, const uint8_t *msg, size_t len) {
  struct pcall *pc = user;
  if (!pc->rpc->resp) {
    ProtobufCMessage *m = decode(pc, &prismq__runner__v1__output_chunk__descriptor, msg, len);
    if (!m) return 1;
    int stop = pc->on_chunk((const Prismq__Runner__V1__OutputChunk *)m, pc->user);
    protobuf_c_message_free_unpacked(m, NULL);
    return stop;
  }
  if (pc->nmsg++ > 0) {
    pc->have_local = 1;
    status_set(&pc->local, PRISMQ_CODE_INTERNAL, "unary call got more than one response");
    return 1;
  }
  pc->resp = decode(pc, pc->rpc->resp, msg, len);
  return pc->resp ? 0 : 1;
}

/* The serving status in a HealthCheckResponse, which the call consumes. */
static int take_serving(ProtobufCMessage *resp) {
  if (!resp) return PRISMQ_SERVING_UNKNOWN;
  int serving = (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
  protobuf_c_message_free_unpacked(resp, NULL);
  return serving;
}

/* Hands the final status and result to where the call's caller wants them. */
static void deliver(struct pcall *pc, const prismq_status *st, ProtobufCMessage *resp) {
  switch (pc->sink) {
  case SINK_SYNC:
    pc->to.sync->st = *st;
    pc->to.sync->details = pc->details;
    pc->details = NULL;
    pc->to.sync->resp = resp;
    pc->to.sync->done = 1;
    break;
  case SINK_RUN: pc->to.run(st, (Prismq__Runner__V1__Run *)resp, pc->user); break;
  case SINK_LIST_RUNS:
    pc->to.list_runs(st, (Prismq__Runner__V1__ListRunsResponse *)resp, pc->user);
    break;
  case SINK_LIST_MODULES:
    pc->to.list_modules(st, (Prismq__Runner__V1__ListModulesResponse *)resp, pc->user);
    break;
  case SINK_PRESET: pc->to.preset(st, (Prismq__Runner__V1__Preset *)resp, pc->user); break;
  case SINK_LIST_PRESETS:
    pc->to.list_presets(st, (Prismq__Runner__V1__ListPresetsResponse *)resp, pc->user);
    break;
  case SINK_HEALTH: pc->to.health(st, take_serving(resp), pc->user); break;
  case SINK_DONE:
    /* A unary call whose answer says nothing more than its status (DeletePreset). */
    if (resp) protobuf_c_message_free_unpacked(resp, NULL);
    pc->to.done(st, pc->user);
    break;
  }
}

static void call_on_done(void *user, const gcl_status *gst) {
  struct pcall *pc = user;
  prismq_status st;
  if (pc->have_local) {
    st = pc->local;
  } else {
    status_set(&st, gst->code, "%s", gst->message);
    st.details = pc->details = details_decode(gst);
  }
  if (st.code == PRISMQ_CODE_OK && pc->rpc->resp && !pc->resp)
    status_set(&st, PRISMQ_CODE_INTERNAL, "unary call got no response message");
  ProtobufCMessage *resp = pc->resp;
  if (st.code != PRISMQ_CODE_OK && resp) {
    protobuf_c_message_free_unpacked(resp, NULL);
    resp = NULL;
  }
  deliver(pc, &st, resp);
  free(pc->details);
  free(pc);
}

static uint64_t effective_deadline(const prismq_client *c, uint32_t deadline_ms) {
  if (deadline_ms == 0) deadline_ms = c->deadline_ms;
  return deadline_ms == PRISMQ_NO_DEADLINE ? 0 : deadline_ms;
}

/* Packs `req` and starts the call described by `tmpl` (copied). Returns 0 (deliver
 * will run from the loop; *out, if not NULL, is the call's handle until then) or a
 * negative errno, and then nothing more happens. */
static int call_start(gcl_call **out, prismq_client *c, const struct pcall *tmpl,
                      const ProtobufCMessage *req, uint32_t deadline_ms) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len ? len : 1);
  struct pcall *pc = malloc(sizeof *pc);
  int rc = -ENOMEM;
  if (!buf || !pc) goto fail;
  protobuf_c_message_pack(req, buf);
  *pc = *tmpl;
  rc = gcl_call_start(out, c->conn, pc->rpc->path, buf, len, effective_deadline(c, deadline_ms),
                      call_on_msg, call_on_done, pc);
  if (rc < 0) goto fail;
  free(buf);
  return 0;

fail:
  free(pc);
  free(buf);
  return rc;
}

/* Starts an asynchronous call after checking the client kind and arguments. */
static int call_async(prismq_client *c, const ProtobufCMessage *req, uint32_t deadline_ms,
                      int have_cb, const struct pcall *tmpl) {
  if (!c || !req || !have_cb || c->own_base) return -EINVAL;
  return call_start(NULL, c, tmpl, req, deadline_ms);
}

/* The private loop's interrupt event: the wakeup was signalled. */
static void on_interrupt(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  prismq_client *c = arg;
  compat_wakeup_take(c->intr);
  struct sync *s = c->running;
  if (s && !s->done) {
    s->interrupted = 1;
    gcl_call_cancel(s->call);
  } else {
    /* The call ended in this same turn of the loop: the interrupt came too late for it
     * and is kept for the next one, as if it had come after. */
    c->intr_pending = 1;
  }
}

/* Consumes an interrupt that came while no call was running. */
static int take_interrupt(prismq_client *c) {
  int got = c->intr_pending || compat_wakeup_take(c->intr);
  c->intr_pending = 0;
  return got;
}

/* Runs one call on the private loop until it ends. On OK, *resp (if not NULL) gets
 * the result, else it is freed. */
static prismq_status call_blocking(prismq_client *c, const struct rpc *rpc,
                                   const ProtobufCMessage *req, uint32_t deadline_ms,
                                   prismq_chunk_fn on_chunk, void *user, ProtobufCMessage **resp) {
  if (!c || !req) return start_error(-EINVAL);
  if (!c->own_base)
    return status_of(PRISMQ_CODE_FAILED_PRECONDITION,
                     "blocking call on a client made by prismq_client_connect_async");
  free(c->details);
  c->details = NULL;
  /* event_base_loop refuses to nest: the inner call could never end. */
  if (c->running)
    return status_of(PRISMQ_CODE_FAILED_PRECONDITION,
                     "blocking call from inside a callback of the same client");
  if (take_interrupt(c)) return status_of(PRISMQ_CODE_CANCELLED, INTERRUPTED_MSG);
  struct sync s = {0};
  struct pcall tmpl = {.rpc = rpc, .on_chunk = on_chunk, .user = user, .sink = SINK_SYNC};
  tmpl.to.sync = &s;
  /* A write to a connection the server has closed fails with EPIPE, not the program. */
  compat_sigpipe g;
  compat_sigpipe_block(&g);
  int rc = call_start(&s.call, c, &tmpl, req, deadline_ms);
  if (rc == 0) {
    c->running = &s;
    /* The interrupt event is always pending, so the loop cannot run dry first. */
    while (!s.done) event_base_loop(c->base, EVLOOP_ONCE);
    c->running = NULL;
  }
  compat_sigpipe_restore(&g);
  if (rc < 0) return start_error(rc);
  c->details = s.details;
  /* A call that had already ended otherwise when the interrupt came keeps its status. */
  if (s.interrupted && s.st.code == PRISMQ_CODE_CANCELLED)
    status_set(&s.st, PRISMQ_CODE_CANCELLED, INTERRUPTED_MSG);
  if (resp && s.resp)
    *resp = s.resp;
  else
    protobuf_c_message_free_unpacked(s.resp, NULL);
  return s.st;
}

/* ---- client ---- */

static int client_new(prismq_client **out, struct event_base *base,
                      const prismq_client_opts *opts) {
  static const prismq_client_opts defaults = PRISMQ_CLIENT_OPTS_INIT;
  connect_error_rc = 0;
  if (!out) return -EINVAL;
  if (!opts) opts = &defaults;
  const char *target = opts->target;
  if (!target) target = getenv(TARGET_ENV);
  if (!target || !target[0]) target = DEFAULT_TARGET;

  /* Before libevent's base, which makes sockets of its own (winsock on Windows). */
  int rc = compat_net_init();
  if (rc < 0) return rc;
  prismq_client *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  if (opts->ca_file || opts->cert_file || opts->key_file || opts->server_name ||
      strncmp(target, "tls://", 6) == 0) {
    tlsctx_client_opts to = {opts->ca_file, opts->cert_file, opts->key_file};
    rc = tlsctx_client_new(&c->tls, &to, connect_error, sizeof connect_error);
    if (rc < 0) {
      connect_error_rc = rc;
      goto fail;
    }
  }
  rc = -ENOMEM;
  c->deadline_ms = opts->deadline_ms == PRISMQ_NO_DEADLINE ? 0 : opts->deadline_ms;
  if (!base) {
    /* Deadlines must not fire early: libevent's default clock is the coarse one, a few
     * milliseconds behind. */
    struct event_config *ecfg = event_config_new();
    if (!ecfg) goto fail;
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    c->own_base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    if (!c->own_base) goto fail;
    base = c->own_base;
    rc = compat_wakeup_new(&c->intr);
    if (rc < 0) goto fail;
    rc = -ENOMEM;
    c->intr_ev = event_new(base, compat_wakeup_fd(c->intr), EV_READ | EV_PERSIST, on_interrupt, c);
    if (!c->intr_ev || event_add(c->intr_ev, NULL) < 0) goto fail;
  }
  c->base = base;
  gcl_conn_opts go = GCL_CONN_OPTS_INIT;
  go.connect_timeout_ms = opts->connect_timeout_ms;
  go.tls_ctx = c->tls;
  go.server_name = opts->server_name;
  rc = gcl_conn_new(&c->conn, base, target, &go, connect_error, sizeof connect_error);
  if (rc < 0) {
    connect_error_rc = rc;
    goto fail;
  }
  *out = c;
  return 0;

fail:
  prismq_client_free(c);
  return rc;
}

int prismq_client_connect(prismq_client **out, const prismq_client_opts *opts) {
  return client_new(out, NULL, opts);
}

int prismq_client_connect_async(prismq_client **out, struct event_base *base,
                                const prismq_client_opts *opts) {
  if (!base) return -EINVAL;
  return client_new(out, base, opts);
}

void prismq_client_free(prismq_client *c) {
  if (!c) return;
  gcl_conn_free(c->conn);
  SSL_CTX_free(c->tls);
  if (c->intr_ev) event_free(c->intr_ev);
  compat_wakeup_free(c->intr);
  if (c->own_base) event_base_free(c->own_base);
  free(c->details);
  free(c);
}

int prismq_client_interrupt(prismq_client *c) {
  if (!c || !c->intr) return -EINVAL;
  compat_wakeup_signal(c->intr);
  return 0;
}

/* ---- blocking RPCs ---- */

/* A unary call whose result is a Run. */
static prismq_status run_call(Prismq__Runner__V1__Run **out, prismq_client *c,
                              const struct rpc *rpc, const ProtobufCMessage *req,
                              uint32_t deadline_ms) {
  ProtobufCMessage *m = NULL;
  prismq_status st = call_blocking(c, rpc, req, deadline_ms, NULL, NULL, out ? &m : NULL);
  if (m) *out = (Prismq__Runner__V1__Run *)m;
  return st;
}

prismq_status prismq_start_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                               const Prismq__Runner__V1__StartRunRequest *req,
                               uint32_t deadline_ms) {
  return run_call(out, c, &RPC_START, REQ(req), deadline_ms);
}

prismq_status prismq_get_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                             const Prismq__Runner__V1__GetRunRequest *req, uint32_t deadline_ms) {
  return run_call(out, c, &RPC_GET, REQ(req), deadline_ms);
}

prismq_status prismq_cancel_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                                const Prismq__Runner__V1__CancelRunRequest *req,
                                uint32_t deadline_ms) {
  return run_call(out, c, &RPC_CANCEL, REQ(req), deadline_ms);
}

prismq_status prismq_wait_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                              const Prismq__Runner__V1__WaitRunRequest *req, uint32_t deadline_ms) {
  return run_call(out, c, &RPC_WAIT, REQ(req), deadline_ms);
}

prismq_status prismq_list_runs(Prismq__Runner__V1__ListRunsResponse **out, prismq_client *c,
                               const Prismq__Runner__V1__ListRunsRequest *req,
                               uint32_t deadline_ms) {
  ProtobufCMessage *m = NULL;
  prismq_status st =
      call_blocking(c, &RPC_LIST, REQ(req), deadline_ms, NULL, NULL, out ? &m : NULL);
  if (m) *out = (Prismq__Runner__V1__ListRunsResponse *)m;
  return st;
}

static const Prismq__Runner__V1__ListModulesRequest EMPTY_MODULES_REQ =
    PRISMQ__RUNNER__V1__LIST_MODULES_REQUEST__INIT;

prismq_status prismq_list_modules(Prismq__Runner__V1__ListModulesResponse **out, prismq_client *c,
                                  const Prismq__Runner__V1__ListModulesRequest *req,
                                  uint32_t deadline_ms) {
  if (!req) req = &EMPTY_MODULES_REQ;
  ProtobufCMessage *m = NULL;
  prismq_status st =
      call_blocking(c, &RPC_MODULES, &req->base, deadline_ms, NULL, NULL, out ? &m : NULL);
  if (m) *out = (Prismq__Runner__V1__ListModulesResponse *)m;
  return st;
}

prismq_status prismq_save_preset(Prismq__Runner__V1__Preset **out, prismq_client *c,
                                 const Prismq__Runner__V1__SavePresetRequest *req,
                                 uint32_t deadline_ms) {
  ProtobufCMessage *m = NULL;
  prismq_status st =
      call_blocking(c, &RPC_SAVE_PRESET, REQ(req), deadline_ms, NULL, NULL, out ? &m : NULL);
  if (m) *out = (Prismq__Runner__V1__Preset *)m;
  return st;
}

prismq_status prismq_list_presets(Prismq__Runner__V1__ListPresetsResponse **out, prismq_client *c,
                                  const Prismq__Runner__V1__ListPresetsRequest *req,
                                  uint32_t deadline_ms) {
  ProtobufCMessage *m = NULL;
  prismq_status st =
      call_blocking(c, &RPC_LIST_PRESETS, REQ(req), deadline_ms, NULL, NULL, out ? &m : NULL);
  if (m) *out = (Prismq__Runner__V1__ListPresetsResponse *)m;
  return st;
}

prismq_status prismq_delete_preset(prismq_client *c,
                                   const Prismq__Runner__V1__DeletePresetRequest *req,
                                   uint32_t deadline_ms) {
  return call_blocking(c, &RPC_DELETE_PRESET, REQ(req), deadline_ms, NULL, NULL, NULL);
}

/* A HealthCheckRequest for `service` (NULL = ""); points into `service`. */
static Grpc__Health__V1__HealthCheckRequest health_request(const char *service) {
  Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  if (service) r.service = (char *)service;
  return r;
}

prismq_status prismq_health(int *out, prismq_client *c, const char *service, uint32_t deadline_ms) {
  Grpc__Health__V1__HealthCheckRequest req = health_request(service);
  ProtobufCMessage *resp = NULL;
  prismq_status st = call_blocking(c, &RPC_HEALTH, &req.base, deadline_ms, NULL, NULL, &resp);
  int serving = take_serving(resp);
  if (st.code == PRISMQ_CODE_OK && out) *out = serving;
  return st;
}

prismq_status prismq_stream_output(prismq_client *c,
                                   const Prismq__Runner__V1__StreamOutputRequest *req,
                                   uint32_t deadline_ms, prismq_chunk_fn on_chunk, void *user) {
  if (!on_chunk) return start_error(-EINVAL);
  return call_blocking(c, &RPC_STREAM, REQ(req), deadline_ms, on_chunk, user, NULL);
}

/* ---- asynchronous RPCs ---- */

int prismq_start_run_async(prismq_client *c, const Prismq__Runner__V1__StartRunRequest *req,
                           uint32_t deadline_ms, prismq_run_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_START, .sink = SINK_RUN, .user = user, .to.run = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_get_run_async(prismq_client *c, const Prismq__Runner__V1__GetRunRequest *req,
                         uint32_t deadline_ms, prismq_run_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_GET, .sink = SINK_RUN, .user = user, .to.run = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_list_runs_async(prismq_client *c, const Prismq__Runner__V1__ListRunsRequest *req,
                           uint32_t deadline_ms, prismq_list_runs_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_LIST, .sink = SINK_LIST_RUNS, .user = user, .to.list_runs = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_cancel_run_async(prismq_client *c, const Prismq__Runner__V1__CancelRunRequest *req,
                            uint32_t deadline_ms, prismq_run_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_CANCEL, .sink = SINK_RUN, .user = user, .to.run = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_wait_run_async(prismq_client *c, const Prismq__Runner__V1__WaitRunRequest *req,
                          uint32_t deadline_ms, prismq_run_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_WAIT, .sink = SINK_RUN, .user = user, .to.run = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_list_modules_async(prismq_client *c, const Prismq__Runner__V1__ListModulesRequest *req,
                              uint32_t deadline_ms, prismq_list_modules_fn cb, void *user) {
  struct pcall t = {
      .rpc = &RPC_MODULES, .sink = SINK_LIST_MODULES, .user = user, .to.list_modules = cb};
  return call_async(c, REQ(req ? req : &EMPTY_MODULES_REQ), deadline_ms, cb != NULL, &t);
}

int prismq_save_preset_async(prismq_client *c, const Prismq__Runner__V1__SavePresetRequest *req,
                             uint32_t deadline_ms, prismq_preset_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_SAVE_PRESET, .sink = SINK_PRESET, .user = user, .to.preset = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_list_presets_async(prismq_client *c, const Prismq__Runner__V1__ListPresetsRequest *req,
                              uint32_t deadline_ms, prismq_list_presets_fn cb, void *user) {
  struct pcall t = {
      .rpc = &RPC_LIST_PRESETS, .sink = SINK_LIST_PRESETS, .user = user, .to.list_presets = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_delete_preset_async(prismq_client *c, const Prismq__Runner__V1__DeletePresetRequest *req,
                               uint32_t deadline_ms, prismq_done_fn cb, void *user) {
  struct pcall t = {.rpc = &RPC_DELETE_PRESET, .sink = SINK_DONE, .user = user, .to.done = cb};
  return call_async(c, REQ(req), deadline_ms, cb != NULL, &t);
}

int prismq_health_async(prismq_client *c, const char *service, uint32_t deadline_ms,
                        prismq_health_fn cb, void *user) {
  Grpc__Health__V1__HealthCheckRequest req = health_request(service);
  struct pcall t = {.rpc = &RPC_HEALTH, .sink = SINK_HEALTH, .user = user, .to.health = cb};
  return call_async(c, REQ(&req), deadline_ms, cb != NULL, &t);
}

int prismq_stream_output_async(prismq_client *c, const Prismq__Runner__V1__StreamOutputRequest *req,
                               uint32_t deadline_ms, prismq_chunk_fn on_chunk,
                               prismq_done_fn on_done, void *user) {
  struct pcall t = {.rpc = &RPC_STREAM,
                    .sink = SINK_DONE,
                    .on_chunk = on_chunk,
                    .user = user,
                    .to.done = on_done};
  return call_async(c, REQ(req), deadline_ms, on_chunk && on_done, &t);
}
