/* Unit tests for libprismq (client/prismq_client.c and the gRPC core under it,
 * client/gclient.c), through the public header only, against testpeer.h's scripted
 * HTTP/2 server on a unix socket: what goes on the wire (path, headers, deadline, the
 * request message), how answers map to a prismq_status (messages, grpc-status codes,
 * percent-encoded messages, HTTP statuses, resets, malformed, oversized, cut and
 * compressed messages, lost connections, deadlines, unreachable servers; the field
 * violations of grpc-status-details-bin, and the details ignored), server
 * streaming (chunks in order whatever the DATA framing, live, stopping early), several
 * calls at once on one connection, flow control on a large answer, freeing the client
 * with calls pending or from a callback, misuse of the two kinds of client, and the
 * blocking client with its interrupt (before a call, from another thread during one,
 * from inside a callback) and its refusal of a nested blocking call.
 *
 * The asynchronous client shares the test's loop with the peer; the blocking client
 * runs its own, so the peer then runs on a thread of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "grpc/health/v1/health.pb-c.h"
#include "prismq/client.h"
#include "../testloop.h"
#include "testpeer.h"

#define P_RUNNER "/prismq.runner.v1.Runner/"
#define ST(x)    PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_##x
#define NO_RUN   "01NOSUCHRUN0000000000000000"

typedef Prismq__Runner__V1__Run Run;

struct fx {
  struct event_base *base;
  struct testloop tl;
  struct peer peer;
  prismq_client *c;
  /* Handlers' state. */
  int answer_case;         /* which answer the handler gives */
  struct pstream *held[8]; /* requests the test answers later */
  size_t nheld;
  char *details;           /* a grpc-status-details-bin value the handler sends */
  const char *trailers[8]; /* trailers the handler sends (they must outlive it) */
};

/* The outcome of one asynchronous call. */
struct result {
  int done;
  prismq_status st;
  Run *run;
  ProtobufCMessage *resp; /* list responses */
  int serving;
  /* Streams: chunks received, in order. */
  size_t nchunks;
  uint64_t seq[16];
  char data[16][64];
  int final_status[16];        /* status of the chunk's run, or -1 */
  size_t stop_at;              /* on_chunk returns 1 at this chunk (1-based; 0 never) */
  prismq_client *free_in_done; /* the completion frees this client */
  struct fx *fx;
  int blocking_rc_code; /* on_chunk's nested blocking call's code */
  int interrupt_in_chunk;
  /* The status's field violations ("FIELD: DESCRIPTION"), read in the callback. */
  size_t nviol;
  char viol[4][96];
  size_t viol_len[4]; /* the descriptions' lengths */
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  if (!(f->base = testloop_base_new())) return -1;
  testloop_init(&f->tl, f->base);
  peer_init(&f->peer, f->base);
  f->peer.arg = f;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  peer_thread_fini(&f->peer);
  prismq_client_free(f->c);
  peer_fini(&f->peer);
  testloop_fini(&f->tl);
  event_base_free(f->base);
  free(f->details);
  free(f);
  return 0;
}

/* An asynchronous client of the peer, with `deadline_ms` as its default deadline. */
static void connect_async(struct fx *f, uint32_t deadline_ms) {
  prismq_client_opts o = PRISMQ_CLIENT_OPTS_INIT;
  o.target = f->peer.target;
  o.deadline_ms = deadline_ms;
  assert_int_equal(prismq_client_connect_async(&f->c, f->base, &o), 0);
}

static void result_free(struct result *r) {
  prismq_run_free(r->run);
  if (r->resp) protobuf_c_message_free_unpacked(r->resp, NULL);
  r->run = NULL;
  r->resp = NULL;
}

/* Copies the field violations of `st` into r. */
static void keep_violations(struct result *r, const prismq_status *st) {
  const prismq_field_violation *v = (const prismq_field_violation *)r;
  r->nviol = prismq_status_violations(st, &v);
  if (r->nviol == 0) assert_null(v);
  for (size_t i = 0; i < r->nviol && i < 4; i++) {
    snprintf(r->viol[i], sizeof r->viol[i], "%s: %s", v[i].field, v[i].description);
    r->viol_len[i] = strlen(v[i].description);
  }
}

static void on_run(const prismq_status *st, Run *run, void *user) {
  struct result *r = user;
  r->done++;
  r->st = *st;
  keep_violations(r, st);
  r->st.details = NULL; /* valid during the callback only */
  r->run = run;
  if (st->code == PRISMQ_CODE_OK)
    assert_non_null(run);
  else
    assert_null(run);
  if (r->free_in_done) {
    prismq_client_free(r->free_in_done);
    r->fx->c = NULL;
  }
}

static void on_list_runs(const prismq_status *st, Prismq__Runner__V1__ListRunsResponse *resp,
                         void *user) {
  struct result *r = user;
  r->done++;
  r->st = *st;
  r->resp = resp ? &resp->base : NULL;
}

static void on_list_modules(const prismq_status *st, Prismq__Runner__V1__ListModulesResponse *resp,
                            void *user) {
  struct result *r = user;
  r->done++;
  r->st = *st;
  r->resp = resp ? &resp->base : NULL;
}

static void on_health(const prismq_status *st, int serving, void *user) {
  struct result *r = user;
  r->done++;
  r->st = *st;
  r->serving = serving;
}

static int on_chunk(const Prismq__Runner__V1__OutputChunk *ch, void *user) {
  struct result *r = user;
  assert_true(r->nchunks < 16);
  size_t i = r->nchunks++;
  r->seq[i] = ch->seq;
  snprintf(r->data[i], sizeof r->data[i], "%.*s", (int)ch->data.len, (const char *)ch->data.data);
  r->final_status[i] = ch->run ? (int)ch->run->status : -1;
  if (r->interrupt_in_chunk) {
    /* A nested blocking call is refused; an interrupt ends the running one. */
    Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
    g.run_id = "x";
    Run *out = NULL;
    prismq_status st = prismq_get_run(&out, r->fx->c, &g, 0);
    r->blocking_rc_code = st.code;
    assert_null(out);
    assert_string_equal(st.message, "blocking call from inside a callback of the same client");
    assert_int_equal(prismq_client_interrupt(r->fx->c), 0);
  }
  return r->stop_at && r->nchunks == r->stop_at;
}

static void on_done(const prismq_status *st, void *user) {
  struct result *r = user;
  r->done++;
  r->st = *st;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts GetRun of run_id on the async client. */
static void get_run(struct fx *f, const char *run_id, uint32_t deadline_ms, struct result *r) {
  Prismq__Runner__V1__GetRunRequest req = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  req.run_id = (char *)run_id;
  assert_int_equal(prismq_get_run_async(f->c, &req, deadline_ms, on_run, r), 0);
  assert_int_equal(r->done, 0); /* never from inside the call */
}

/* Runs one GetRun against the current handler and waits for its end. */
static void call_get_run(struct fx *f, struct result *r) {
  get_run(f, "01RUN", 0, r);
  LOOP_UNTIL(&f->tl, r->done);
  assert_int_equal(r->done, 1);
}

static void assert_status(const struct result *r, int code, const char *message) {
  if (r->st.code != code)
    fail_msg("status %s (%s), expected %s", prismq_code_name(r->st.code), r->st.message,
             prismq_code_name(code));
  if (message) assert_string_equal(r->st.message, message);
}

/* ---- handlers ------------------------------------------------------------------------ */

/* Answers a Run named after the request (GetRun, CancelRun, WaitRun: their run_id; StartRun:
 * "run-of-" + module). */
static void run_handler(struct peer *p, struct pstream *s) {
  (void)p;
  Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  char id[160] = "";
  if (strcmp(s->path, P_RUNNER "StartRun") == 0) {
    Prismq__Runner__V1__StartRunRequest *q = (Prismq__Runner__V1__StartRunRequest *)peer_request(
        s, &prismq__runner__v1__start_run_request__descriptor);
    snprintf(id, sizeof id, "run-of-%s", q->module_id);
    run.module_id = "m1";
    run.status = ST(RUNNING);
    protobuf_c_message_free_unpacked(&q->base, NULL);
  } else {
    Prismq__Runner__V1__GetRunRequest *q = (Prismq__Runner__V1__GetRunRequest *)peer_request(
        s, &prismq__runner__v1__get_run_request__descriptor);
    snprintf(id, sizeof id, "%s", q->run_id);
    run.status = ST(COMPLETED);
    protobuf_c_message_free_unpacked(&q->base, NULL);
  }
  run.run_id = id;
  peer_reply(s, &run.base);
}

/* Answers whatever the path asks for with an empty or fixed message. */
static void any_handler(struct peer *p, struct pstream *s) {
  if (strstr(s->path, "ListRuns")) {
    Prismq__Runner__V1__ListRunsResponse r = PRISMQ__RUNNER__V1__LIST_RUNS_RESPONSE__INIT;
    r.next_page_token = "next";
    peer_reply(s, &r.base);
  } else if (strstr(s->path, "ListModules")) {
    Prismq__Runner__V1__ListModulesResponse r = PRISMQ__RUNNER__V1__LIST_MODULES_RESPONSE__INIT;
    peer_reply(s, &r.base);
  } else if (strstr(s->path, "Health")) {
    Grpc__Health__V1__HealthCheckRequest *q = (Grpc__Health__V1__HealthCheckRequest *)peer_request(
        s, &grpc__health__v1__health_check_request__descriptor);
    if (strcmp(q->service, "nope") == 0) {
      peer_status(s, "5", "unknown service");
    } else {
      Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
      r.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
      peer_reply(s, &r.base);
    }
    protobuf_c_message_free_unpacked(&q->base, NULL);
  } else {
    run_handler(p, s);
  }
}

static void hang_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  if (f->nheld < 8) f->held[f->nheld++] = s;
}

/* ---- unary calls ----------------------------------------------------------------------- */

/* A StartRun: the request on the wire (method, path, gRPC headers, the default deadline,
 * the message), and the answer decoded into the callback, which fires from the loop. */
static void test_unary_ok(void **state) {
  struct fx *f = *state;
  f->peer.handler = run_handler;
  connect_async(f, 30000);
  Prismq__Runner__V1__StartRunRequest req = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  Prismq__Runner__V1__StartRunRequest__ParametersEntry
      e = PRISMQ__RUNNER__V1__START_RUN_REQUEST__PARAMETERS_ENTRY__INIT,
      *ep = &e;
  e.key = "bytes";
  e.value = "10";
  req.module_id = "emit";
  req.parameters = &ep;
  req.n_parameters = 1;
  req.request_id = "key-1";
  struct result r = {0};
  assert_int_equal(prismq_start_run_async(f->c, &req, 0, on_run, &r), 0);
  assert_int_equal(r.done, 0);
  LOOP_UNTIL(&f->tl, r.done);
  assert_status(&r, PRISMQ_CODE_OK, "");
  assert_string_equal(r.run->run_id, "run-of-emit");
  assert_string_equal(r.run->module_id, "m1");
  assert_int_equal(r.run->status, ST(RUNNING));

  assert_int_equal(f->peer.nstreams, 1);
  struct pstream *s = &f->peer.streams[0];
  assert_string_equal(s->method, "POST");
  assert_string_equal(s->scheme, "http");
  assert_string_equal(s->path, P_RUNNER "StartRun");
  assert_string_equal(s->authority, f->peer.authority);
  assert_string_equal(s->content_type, "application/grpc");
  assert_string_equal(s->te, "trailers");
  assert_string_equal(s->user_agent, "prismq-c/0.1");
  assert_string_equal(s->timeout, "30000m");
  Prismq__Runner__V1__StartRunRequest *got = (Prismq__Runner__V1__StartRunRequest *)peer_request(
      s, &prismq__runner__v1__start_run_request__descriptor);
  assert_string_equal(got->module_id, "emit");
  assert_string_equal(got->request_id, "key-1");
  assert_int_equal(got->n_parameters, 1);
  assert_string_equal(got->parameters[0]->key, "bytes");
  assert_string_equal(got->parameters[0]->value, "10");
  protobuf_c_message_free_unpacked(&got->base, NULL);
  result_free(&r);
}

/* Every RPC goes to its own path and decodes its own answer type; a per-call deadline
 * wins over the default, PRISMQ_NO_DEADLINE sends none. */
static void test_rpc_paths(void **state) {
  struct fx *f = *state;
  f->peer.handler = any_handler;
  connect_async(f, 30000);
  struct result r[8] = {{0}};
  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  Prismq__Runner__V1__CancelRunRequest c = PRISMQ__RUNNER__V1__CANCEL_RUN_REQUEST__INIT;
  Prismq__Runner__V1__WaitRunRequest w = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  Prismq__Runner__V1__ListRunsRequest l = PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT;
  g.run_id = "g";
  c.run_id = "c";
  w.run_id = "w";
  assert_int_equal(prismq_get_run_async(f->c, &g, 1500, on_run, &r[0]), 0);
  assert_int_equal(prismq_cancel_run_async(f->c, &c, PRISMQ_NO_DEADLINE, on_run, &r[1]), 0);
  assert_int_equal(prismq_wait_run_async(f->c, &w, 0, on_run, &r[2]), 0);
  assert_int_equal(prismq_list_runs_async(f->c, &l, 0, on_list_runs, &r[3]), 0);
  assert_int_equal(prismq_list_modules_async(f->c, NULL, 0, on_list_modules, &r[4]), 0);
  assert_int_equal(prismq_health_async(f->c, NULL, 0, on_health, &r[5]), 0);
  assert_int_equal(prismq_health_async(f->c, "nope", 0, on_health, &r[6]), 0);
  LOOP_UNTIL(&f->tl, r[0].done && r[1].done && r[2].done && r[3].done && r[4].done && r[5].done &&
                         r[6].done);
  for (int i = 0; i < 6; i++) assert_status(&r[i], PRISMQ_CODE_OK, "");
  assert_string_equal(r[0].run->run_id, "g");
  assert_string_equal(r[1].run->run_id, "c");
  assert_string_equal(r[2].run->run_id, "w");
  assert_ptr_equal(r[3].resp->descriptor, &prismq__runner__v1__list_runs_response__descriptor);
  assert_string_equal(((Prismq__Runner__V1__ListRunsResponse *)r[3].resp)->next_page_token, "next");
  assert_ptr_equal(r[4].resp->descriptor, &prismq__runner__v1__list_modules_response__descriptor);
  assert_int_equal(r[5].serving, PRISMQ_NOT_SERVING);
  assert_status(&r[6], PRISMQ_CODE_NOT_FOUND, "unknown service");
  assert_int_equal(r[6].serving, PRISMQ_SERVING_UNKNOWN);

  static const char *const paths[] = {P_RUNNER "GetRun",
                                      P_RUNNER "CancelRun",
                                      P_RUNNER "WaitRun",
                                      P_RUNNER "ListRuns",
                                      P_RUNNER "ListModules",
                                      "/grpc.health.v1.Health/Check",
                                      "/grpc.health.v1.Health/Check"};
  assert_int_equal(f->peer.nstreams, 7);
  for (int i = 0; i < 7; i++) assert_string_equal(f->peer.streams[i].path, paths[i]);
  assert_string_equal(f->peer.streams[0].timeout, "1500m");
  assert_string_equal(f->peer.streams[1].timeout, "");
  assert_string_equal(f->peer.streams[2].timeout, "30000m");
  for (int i = 0; i < 7; i++) result_free(&r[i]);
}

/* The default deadline 0 means none. */
static void test_no_default_deadline(void **state) {
  struct fx *f = *state;
  f->peer.handler = run_handler;
  connect_async(f, 0);
  struct result r = {0};
  call_get_run(f, &r);
  assert_status(&r, PRISMQ_CODE_OK, "");
  assert_string_equal(f->peer.streams[0].timeout, "");
  result_free(&r);
}

/* Error statuses, trailers-only or after a message: the code (UNKNOWN for one gRPC
 * does not define or cannot be read), the percent-decoded message; no result. */
static void status_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  static const char *const no_status[] = {"x-other", "1", NULL};
  static const char *const bad_arg[] = {"grpc-status", "3", "grpc-message", "bad%20run%20id", NULL};
  Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  run.run_id = "partial";
  switch (f->answer_case) {
  case 0: peer_status(s, "5", "run%20%22x%22%20not%20found%3A%20100%25%20%E2%9C%93"); break;
  case 1: peer_status(s, "42", NULL); break;
  case 2: peer_status(s, "abc", "whatever"); break;
  case 3:
    peer_begin(s, NULL);
    peer_end(s, no_status);
    break;
  case 4:
    peer_begin(s, NULL);
    peer_send_pb(s, &run.base);
    peer_end(s, bad_arg);
    break;
  default: peer_status(s, "16", "who%0Aare you"); break;
  }
}

static void test_status_errors(void **state) {
  struct fx *f = *state;
  f->peer.handler = status_handler;
  connect_async(f, 30000);
  static const struct {
    int code;
    const char *message;
  } want[] = {
      {PRISMQ_CODE_NOT_FOUND, "run \"x\" not found: 100% \xe2\x9c\x93"},
      {PRISMQ_CODE_UNKNOWN, ""},
      {PRISMQ_CODE_UNKNOWN, "malformed grpc-status in trailers"},
      {PRISMQ_CODE_UNKNOWN, "missing grpc-status in trailers"},
      {PRISMQ_CODE_INVALID_ARGUMENT, "bad run id"},
      {PRISMQ_CODE_UNAUTHENTICATED, "who\nare you"},
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    f->answer_case = (int)i;
    struct result r = {0};
    call_get_run(f, &r);
    assert_status(&r, want[i].code, want[i].message);
    assert_null(r.run);
  }
  assert_int_equal(f->peer.accepted, 1); /* all on one connection */
}

/* HTTP statuses map as gRPC says; a 200 that is not gRPC is INTERNAL. The client resets
 * those streams: the peer never ends them itself. */
static void http_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  static const char *const h503[] = {":status", "503", NULL};
  static const char *const h404[] = {":status", "404", "content-type", "text/plain", NULL};
  static const char *const html[] = {":status", "200", "content-type", "text/html", NULL};
  static const char *const plus[] = {":status", "200", "content-type", "application/grpc+proto",
                                     NULL};
  const char *const *h = f->answer_case == 0   ? h503
                         : f->answer_case == 1 ? h404
                         : f->answer_case == 2 ? html
                                               : plus;
  Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  run.run_id = "proto";
  peer_begin(s, h);
  peer_send_pb(s, &run.base);
  if (h == plus) peer_end(s, PEER_OK_TRAILERS);
}

static void test_http_errors(void **state) {
  struct fx *f = *state;
  f->peer.handler = http_handler;
  connect_async(f, 30000);
  static const struct {
    int code;
    const char *message;
  } want[] = {
      {PRISMQ_CODE_UNAVAILABLE, "unexpected HTTP status 503"},
      {PRISMQ_CODE_UNIMPLEMENTED, "unexpected HTTP status 404"},
      {PRISMQ_CODE_INTERNAL, "response content-type is not application/grpc"},
      {PRISMQ_CODE_OK, ""},
  };
  for (size_t i = 0; i < 4; i++) {
    f->answer_case = (int)i;
    struct result r = {0};
    call_get_run(f, &r);
    assert_status(&r, want[i].code, want[i].message);
    if (want[i].code == PRISMQ_CODE_OK) {
      assert_string_equal(r.run->run_id, "proto");
    } else {
      struct pstream *s = &f->peer.streams[i];
      LOOP_UNTIL(&f->tl, s->closed);
      assert_true(s->rst_received);
      assert_int_equal(s->rst_code, NGHTTP2_CANCEL);
    }
    result_free(&r);
  }
}

/* Answers that do not hold one well-formed message. Where the client must stop the
 * stream, the peer leaves it open (only the client's reset can end the call). */
static void bad_body_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  run.run_id = "r";
  static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  static const uint8_t cut[] = {0, 0, 0, 0, 10, 1, 2, 3};
  static const uint8_t compressed[] = {1, 0, 0, 0, 1, 0};
  static const uint8_t bad_flag[] = {2, 0, 0, 0, 1, 0};
  static const uint8_t huge[] = {0, 0x7f, 0xff, 0xff, 0xff};
  peer_begin(s, NULL);
  switch (f->answer_case) {
  case 0: peer_send_msg(s, garbage, sizeof garbage); break;
  case 1:
    peer_send_pb(s, &run.base);
    peer_send_pb(s, &run.base);
    break;
  case 2: break; /* no message */
  case 3: peer_send(s, cut, sizeof cut); break;
  case 4: peer_send(s, compressed, sizeof compressed); break;
  case 5: peer_send(s, bad_flag, sizeof bad_flag); break;
  default: peer_send(s, huge, sizeof huge); break;
  }
  if (f->answer_case == 2 || f->answer_case == 3) peer_end(s, PEER_OK_TRAILERS);
}

static void test_bad_bodies(void **state) {
  struct fx *f = *state;
  f->peer.handler = bad_body_handler;
  connect_async(f, 30000);
  static const struct {
    int code;
    const char *message;
    int reset; /* the client stops the stream */
  } want[] = {
      {PRISMQ_CODE_INTERNAL, "malformed Run from the server", 1},
      {PRISMQ_CODE_INTERNAL, "unary call got more than one response", 1},
      {PRISMQ_CODE_INTERNAL, "unary call got no response message", 0},
      {PRISMQ_CODE_INTERNAL, "stream ended inside a message (8 bytes left)", 0},
      {PRISMQ_CODE_INTERNAL, "compressed response message, but no encoding was asked for", 1},
      {PRISMQ_CODE_INTERNAL, "bad message flag in the response", 1},
      {PRISMQ_CODE_RESOURCE_EXHAUSTED, "response message larger than 67108864 bytes", 1},
  };
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    f->answer_case = (int)i;
    struct result r = {0};
    call_get_run(f, &r);
    assert_status(&r, want[i].code, want[i].message);
    assert_null(r.run);
    struct pstream *s = &f->peer.streams[i];
    LOOP_UNTIL(&f->tl, s->closed);
    assert_int_equal(s->rst_received, want[i].reset);
    if (want[i].reset) assert_int_equal(s->rst_code, NGHTTP2_CANCEL);
  }
  /* The connection is still good. */
  f->peer.handler = run_handler;
  struct result ok = {0};
  call_get_run(f, &ok);
  assert_status(&ok, PRISMQ_CODE_OK, "");
  result_free(&ok);
}

/* An answer far larger than HTTP/2's initial windows, in small DATA frames: the client
 * opens its windows as it reads, and the message arrives whole. */
#define BIG_LEN (3u << 20)
static void big_handler(struct peer *p, struct pstream *s) {
  (void)p;
  char *big = malloc(BIG_LEN + 1);
  assert_non_null(big);
  for (size_t i = 0; i < BIG_LEN; i++) big[i] = (char)('a' + i % 26);
  big[BIG_LEN] = '\0';
  Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  run.run_id = "big";
  run.error_message = big;
  s->max_frame = 16384;
  peer_reply(s, &run.base);
  free(big);
}

static void test_large_answer(void **state) {
  struct fx *f = *state;
  f->peer.handler = big_handler;
  connect_async(f, 30000);
  struct result r = {0};
  call_get_run(f, &r);
  assert_status(&r, PRISMQ_CODE_OK, "");
  assert_int_equal(strlen(r.run->error_message), BIG_LEN);
  for (size_t i = 0; i < BIG_LEN; i += 4099)
    assert_int_equal(r.run->error_message[i], 'a' + i % 26);
  result_free(&r);
}

/* Rich error details (grpc-status-details-bin): a google.rpc.Status whose BadRequest
 * gives field violations, trailers-only or in trailers, padded or not; details that are
 * not base64, not a Status, of another type, of another code, too large or sent with OK
 * are ignored, and the status stands as sent. */
#define BAD_N       "parameter \"n\" is 0, below the minimum 1"
#define BAD_X       "unknown parameter \"x\""
#define DETAILS_MAX 8192 /* client.h: larger details are ignored */
#define BAD_MSG \
  "unknown%20parameter%20%22x%22%3B%20parameter%20%22n%22%20is%200%2C%20below%20the%20minimum%201"

static void details_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  static const char *const fv[] = {"parameters.x", BAD_X, "parameters.n", BAD_N, NULL};
  static const uint8_t not_a_status[] = {0xff, 0xff, 0xff};
  Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  run.run_id = "ok";
  size_t big_len = f->answer_case == 5 ? DETAILS_MAX + 1 : 8000;
  char *big = malloc(big_len + 1);
  assert_non_null(big);
  memset(big, 'd', big_len);
  big[big_len] = '\0';
  const char *const big_fv[] = {"parameters.big", big, NULL};
  free(f->details);
  f->details = NULL;
  switch (f->answer_case) {
  case 0: f->details = peer_details_b64(3, "m", NULL, NULL, fv, 0); break;
  case 1:
    /* One of three message lengths makes the Status's base64 end in padding. */
    for (const char *m = "mm"; !f->details || !strchr(f->details, '='); m++) {
      free(f->details);
      f->details = peer_details_b64(3, m, NULL, NULL, fv, 1);
    }
    break;
  case 2: f->details = strdup("bm90*YmFzZTY0"); break;
  case 3: f->details = peer_b64(not_a_status, sizeof not_a_status, 0); break;
  case 4:
    f->details =
        peer_details_b64(3, "m", "type.googleapis.com/prismq.runner.v1.Run", &run.base, NULL, 0);
    break;
  case 5:
  case 6: f->details = peer_details_b64(3, "m", NULL, NULL, big_fv, 0); break;
  case 7: f->details = peer_details_b64(5, "m", NULL, NULL, fv, 0); break;
  default: f->details = peer_details_b64(0, "", NULL, NULL, fv, 0); break;
  }
  free(big);
  const char *const trailers[] = {"grpc-status", f->answer_case == 8 ? "0" : "3", "grpc-message",
                                  BAD_MSG,       "grpc-status-details-bin",       f->details,
                                  NULL};
  memcpy(f->trailers, trailers, sizeof trailers);
  if (f->answer_case == 0) {
    peer_status_details(s, "3", BAD_MSG, f->details);
    return;
  }
  peer_begin(s, NULL);
  if (f->answer_case == 8) peer_send_pb(s, &run.base);
  peer_end(s, f->trailers);
}

static void test_status_details(void **state) {
  struct fx *f = *state;
  f->peer.handler = details_handler;
  connect_async(f, 30000);
  for (int i = 0; i <= 8; i++) {
    f->answer_case = i;
    struct result r = {0};
    call_get_run(f, &r);
    if (i == 8) {
      assert_status(&r, PRISMQ_CODE_OK, BAD_X "; " BAD_N);
      assert_string_equal(r.run->run_id, "ok");
    } else {
      assert_status(&r, PRISMQ_CODE_INVALID_ARGUMENT, BAD_X "; " BAD_N);
      assert_null(r.run);
    }
    size_t want = i <= 1 ? 2 : i == 6 ? 1 : 0;
    if (r.nviol != want) fail_msg("case %d: %zu violations, expected %zu", i, r.nviol, want);
    if (i <= 1) {
      assert_string_equal(r.viol[0], "parameters.x: " BAD_X);
      assert_string_equal(r.viol[1], "parameters.n: " BAD_N);
    } else if (i == 6) {
      assert_int_equal(r.viol_len[0], 8000);
      assert_int_equal(strncmp(r.viol[0], "parameters.big: ddd", 19), 0);
    }
    result_free(&r);
  }
  assert_int_equal(f->peer.accepted, 1);
}

/* A stream reset by the server ends the call with the code gRPC maps it to. */
static void reset_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  static const uint32_t codes[] = {NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR,
                                   NGHTTP2_ENHANCE_YOUR_CALM};
  peer_reset(s, codes[f->answer_case]);
}

static void test_reset_by_server(void **state) {
  struct fx *f = *state;
  f->peer.handler = reset_handler;
  connect_async(f, 30000);
  static const int want[] = {PRISMQ_CODE_UNAVAILABLE, PRISMQ_CODE_CANCELLED, PRISMQ_CODE_INTERNAL,
                             PRISMQ_CODE_RESOURCE_EXHAUSTED};
  for (int i = 0; i < 4; i++) {
    f->answer_case = i;
    struct result r = {0};
    call_get_run(f, &r);
    assert_status(&r, want[i], NULL);
    assert_non_null(strstr(r.st.message, "stream reset by server: "));
  }
}

/* The server goes away mid-call: the call ends UNAVAILABLE, and so does every later
 * call at once (no reconnection). */
static void drop_handler(struct peer *p, struct pstream *s) {
  (void)s;
  peer_drop(p);
}

static void test_connection_lost(void **state) {
  struct fx *f = *state;
  f->peer.handler = drop_handler;
  connect_async(f, 30000);
  struct result r = {0}, later = {0};
  call_get_run(f, &r);
  assert_status(&r, PRISMQ_CODE_UNAVAILABLE, NULL);
  assert_true(r.st.message[0] != '\0');
  call_get_run(f, &later);
  assert_status(&later, PRISMQ_CODE_UNAVAILABLE, r.st.message);
  assert_int_equal(f->peer.accepted, 1);
  assert_int_equal(f->peer.nstreams, 1);
}

/* A server that never answers: the deadline ends the call (not early), and the stream
 * is reset so the server stops. */
static void test_deadline(void **state) {
  struct fx *f = *state;
  f->peer.handler = hang_handler;
  connect_async(f, 30000);
  struct result r = {0};
  int64_t t0 = mono_ms();
  get_run(f, "01RUN", 200, &r);
  LOOP_UNTIL(&f->tl, r.done);
  assert_true(mono_ms() - t0 >= 200);
  assert_status(&r, PRISMQ_CODE_DEADLINE_EXCEEDED, "deadline exceeded");
  struct pstream *s = f->held[0];
  assert_non_null(s);
  assert_string_equal(s->timeout, "200m");
  LOOP_UNTIL(&f->tl, s->closed);
  assert_true(s->rst_received);
  assert_int_equal(s->rst_code, NGHTTP2_CANCEL);
}

/* prismq_client_free with calls pending: their callbacks fire, CANCELLED, before it
 * returns; a callback may free the client (the other call still ends once). */
static void test_free_with_calls(void **state) {
  struct fx *f = *state;
  f->peer.handler = hang_handler;
  connect_async(f, 30000);
  struct result a = {0}, b = {0};
  get_run(f, "a", PRISMQ_NO_DEADLINE, &a);
  get_run(f, "b", PRISMQ_NO_DEADLINE, &b);
  LOOP_UNTIL(&f->tl, f->nheld == 2);
  prismq_client_free(f->c);
  f->c = NULL;
  assert_int_equal(a.done, 1);
  assert_int_equal(b.done, 1);
  assert_status(&a, PRISMQ_CODE_CANCELLED, NULL);
  assert_status(&b, PRISMQ_CODE_CANCELLED, NULL);

  /* Freed from a completion. */
  connect_async(f, 30000);
  struct result c = {0}, d = {0};
  c.free_in_done = f->c;
  c.fx = f;
  get_run(f, "c", 0, &c);
  get_run(f, "d", 0, &d);
  LOOP_UNTIL(&f->tl, f->nheld == 4);
  run_handler(&f->peer, f->held[2]);
  LOOP_UNTIL(&f->tl, c.done);
  assert_null(f->c);
  assert_status(&c, PRISMQ_CODE_OK, "");
  assert_int_equal(d.done, 1);
  assert_status(&d, PRISMQ_CODE_CANCELLED, NULL);
  result_free(&c);
}

/* Several calls at once on one connection, answered in the reverse order: each gets
 * its own answer. */
static void test_multiplexing(void **state) {
  struct fx *f = *state;
  f->peer.handler = hang_handler;
  connect_async(f, 30000);
  struct result r[5] = {{0}};
  char ids[5][8];
  for (int i = 0; i < 5; i++) {
    snprintf(ids[i], sizeof ids[i], "run%d", i);
    get_run(f, ids[i], 0, &r[i]);
  }
  LOOP_UNTIL(&f->tl, f->nheld == 5);
  for (int i = 4; i >= 0; i--) run_handler(&f->peer, f->held[i]);
  LOOP_UNTIL(&f->tl, r[0].done && r[1].done && r[2].done && r[3].done && r[4].done);
  for (int i = 0; i < 5; i++) {
    assert_status(&r[i], PRISMQ_CODE_OK, "");
    assert_string_equal(r[i].run->run_id, ids[i]);
    result_free(&r[i]);
  }
  assert_int_equal(f->peer.accepted, 1);
}

/* ---- server streaming -------------------------------------------------------------- */

static void chunk_pb(Prismq__Runner__V1__OutputChunk *c, Run *run, uint64_t seq, const char *data) {
  *c = (Prismq__Runner__V1__OutputChunk)PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c->seq = seq;
  c->stream = PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDOUT;
  c->data.data = (uint8_t *)data;
  c->data.len = strlen(data);
  c->run = run;
}

/* Chunks arrive in order and whole whatever the DATA framing (a message in pieces,
 * several in one frame), each as soon as it is sent; the last one carries the run. */
static void test_stream_output(void **state) {
  struct fx *f = *state;
  f->peer.handler = hang_handler;
  connect_async(f, 30000);
  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = "01RUN";
  req.follow = 1;
  req.start_seq = 1;
  struct result r = {0};
  assert_int_equal(
      prismq_stream_output_async(f->c, &req, PRISMQ_NO_DEADLINE, on_chunk, on_done, &r), 0);
  LOOP_UNTIL(&f->tl, f->nheld == 1);
  struct pstream *s = f->held[0];
  assert_string_equal(s->path, P_RUNNER "StreamOutput");
  Prismq__Runner__V1__StreamOutputRequest *got =
      (Prismq__Runner__V1__StreamOutputRequest *)peer_request(
          s, &prismq__runner__v1__stream_output_request__descriptor);
  assert_string_equal(got->run_id, "01RUN");
  assert_true(got->follow);
  protobuf_c_message_free_unpacked(&got->base, NULL);

  Prismq__Runner__V1__OutputChunk c;
  peer_begin(s, NULL);
  /* One at a time, each seen before the next is sent: delivery is live. */
  s->max_frame = 3; /* every message in pieces */
  chunk_pb(&c, NULL, 1, "first");
  peer_send_pb(s, &c.base);
  LOOP_UNTIL(&f->tl, r.nchunks == 1);
  chunk_pb(&c, NULL, 2, "second");
  peer_send_pb(s, &c.base);
  LOOP_UNTIL(&f->tl, r.nchunks == 2);
  /* Then three in one frame. */
  s->max_frame = 0;
  static const char *const texts[] = {"third", "fourth", ""};
  Run final = PRISMQ__RUNNER__V1__RUN__INIT;
  final.run_id = "01RUN";
  final.status = ST(COMPLETED);
  for (int i = 0; i < 3; i++) {
    chunk_pb(&c, i == 2 ? &final : NULL, (uint64_t)i + 3, texts[i]);
    peer_queue_pb(s, &c.base);
  }
  peer_end(s, PEER_OK_TRAILERS);
  LOOP_UNTIL(&f->tl, r.done);
  assert_status(&r, PRISMQ_CODE_OK, "");
  assert_int_equal(r.nchunks, 5);
  static const char *const all[] = {"first", "second", "third", "fourth", ""};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(r.seq[i], i + 1);
    assert_string_equal(r.data[i], all[i]);
    assert_int_equal(r.final_status[i], i == 4 ? ST(COMPLETED) : -1);
  }
}

/* on_chunk returning non-zero stops the stream at once: no further chunk, even of those
 * already received (all five come in one DATA frame); the server sees the reset; the
 * call ends CANCELLED. */
static void stream_handler(struct peer *p, struct pstream *s) {
  (void)p;
  Prismq__Runner__V1__OutputChunk c;
  peer_begin(s, NULL);
  char text[5][8];
  for (int i = 0; i < 5; i++) {
    snprintf(text[i], sizeof text[i], "c%d", i + 1);
    chunk_pb(&c, NULL, (uint64_t)i + 1, text[i]);
    peer_queue_pb(s, &c.base);
  }
  peer_send(s, NULL, 0);
  struct fx *f = p->arg;
  if (f->answer_case == 0) peer_end(s, PEER_OK_TRAILERS); /* else: hangs on */
}

static void test_stream_stop(void **state) {
  struct fx *f = *state;
  f->peer.handler = stream_handler;
  f->answer_case = 0;
  connect_async(f, 30000);
  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = "01RUN";
  struct result r = {.stop_at = 2};
  assert_int_equal(prismq_stream_output_async(f->c, &req, 0, on_chunk, on_done, &r), 0);
  LOOP_UNTIL(&f->tl, r.done);
  assert_status(&r, PRISMQ_CODE_CANCELLED, "call cancelled by the client");
  assert_int_equal(r.nchunks, 2);
  assert_string_equal(r.data[1], "c2");
  struct pstream *s = &f->peer.streams[0];
  LOOP_UNTIL(&f->tl, s->closed);
  /* The peer had ended its side already (all sent with trailers) or sees the reset. */
  if (!s->rst_received)
    assert_true(s->out_done);
  else
    assert_int_equal(s->rst_code, NGHTTP2_CANCEL);

  /* A server that keeps the stream open after five chunks: the reset stops it. */
  f->answer_case = 1;
  struct result r2 = {.stop_at = 3};
  assert_int_equal(prismq_stream_output_async(f->c, &req, 0, on_chunk, on_done, &r2), 0);
  LOOP_UNTIL(&f->tl, r2.done);
  assert_status(&r2, PRISMQ_CODE_CANCELLED, NULL);
  assert_int_equal(r2.nchunks, 3);
  s = &f->peer.streams[1];
  LOOP_UNTIL(&f->tl, s->closed);
  assert_true(s->rst_received);
  assert_int_equal(s->rst_code, NGHTTP2_CANCEL);
}

/* ---- connecting and misuse ------------------------------------------------------------- */

/* Connecting is lazy: a server that is not there shows in the call's status. */
static void test_unreachable(void **state) {
  struct fx *f = *state;
  prismq_client_opts o = PRISMQ_CLIENT_OPTS_INIT;
  char target[300];
#ifdef _WIN32
  /* A loopback port nobody listens on (Wine has no unix sockets): port 1. */
  snprintf(target, sizeof target, "127.0.0.1:1");
  const char *why = "Connection refused";
#else
  snprintf(target, sizeof target, "unix:%s/nobody-listens", f->peer.dir);
  const char *why = "No such file or directory";
#endif
  o.target = target;
  assert_int_equal(prismq_client_connect_async(&f->c, f->base, &o), 0);
  struct result r = {0};
  call_get_run(f, &r);
  assert_status(&r, PRISMQ_CODE_UNAVAILABLE, NULL);
  assert_non_null(strstr(r.st.message, why));
  assert_non_null(strstr(r.st.message, target));
}

static void test_connect_errors(void **state) {
  struct fx *f = *state;
  prismq_client *sentinel = (prismq_client *)f, *c = sentinel;
  prismq_client_opts o = PRISMQ_CLIENT_OPTS_INIT;
  assert_int_equal(prismq_client_connect(NULL, NULL), -EINVAL);
  assert_int_equal(prismq_client_connect_async(&c, NULL, NULL), -EINVAL);
  static const char *const bad[] = {"unix:", "127.0.0.1:99999", "ipv4:not-an-ip:1", "host:port"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    o.target = bad[i];
    int rc = prismq_client_connect(&c, &o);
    if (rc != -EINVAL) fail_msg("target %s: %d", bad[i], rc);
    assert_ptr_equal(c, sentinel);
    assert_string_not_equal(prismq_strerror(rc), strerror(EINVAL)); /* says what is wrong */
  }
  o.target = f->peer.target;
  o.ca_file = "/nonexistent/ca.pem";
  int rc = prismq_client_connect_async(&c, f->base, &o);
  assert_true(rc < 0);
  assert_ptr_equal(c, sentinel);
  assert_non_null(strstr(prismq_strerror(rc), "cannot load the CA file /nonexistent/ca.pem"));

  /* No target: PRISMQ_TARGET. */
  test_setenv("PRISMQ_TARGET", f->peer.target);
  f->peer.handler = run_handler;
  assert_int_equal(prismq_client_connect_async(&f->c, f->base, NULL), 0);
  test_setenv("PRISMQ_TARGET", NULL);
  struct result r = {0};
  call_get_run(f, &r);
  assert_status(&r, PRISMQ_CODE_OK, "");
  assert_int_equal(f->peer.accepted, 1);
  result_free(&r);
}

/* Each kind of client refuses the other's functions; NULL arguments are refused. */
static void test_misuse(void **state) {
  struct fx *f = *state;
  connect_async(f, 30000);
  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  Run *out = (Run *)f;
  prismq_status st = prismq_get_run(&out, f->c, &g, 0);
  assert_int_equal(st.code, PRISMQ_CODE_FAILED_PRECONDITION);
  assert_ptr_equal(out, (Run *)f);
  assert_int_equal(prismq_client_interrupt(f->c), -EINVAL);
  assert_int_equal(prismq_client_interrupt(NULL), -EINVAL);
  struct result r = {0};
  assert_int_equal(prismq_get_run_async(f->c, NULL, 0, on_run, &r), -EINVAL);
  assert_int_equal(prismq_get_run_async(f->c, &g, 0, NULL, &r), -EINVAL);
  assert_int_equal(prismq_get_run_async(NULL, &g, 0, on_run, &r), -EINVAL);
  Prismq__Runner__V1__StreamOutputRequest so = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  assert_int_equal(prismq_stream_output_async(f->c, &so, 0, on_chunk, NULL, &r), -EINVAL);
  assert_int_equal(prismq_stream_output_async(f->c, &so, 0, NULL, on_done, &r), -EINVAL);

  prismq_client *blocking = NULL;
  prismq_client_opts o = PRISMQ_CLIENT_OPTS_INIT;
  o.target = f->peer.target;
  assert_int_equal(prismq_client_connect(&blocking, &o), 0);
  assert_int_equal(prismq_get_run_async(blocking, &g, 0, on_run, &r), -EINVAL);
  st = prismq_get_run(&out, blocking, NULL, 0);
  assert_int_equal(st.code, PRISMQ_CODE_INVALID_ARGUMENT);
  st = prismq_stream_output(blocking, &so, 0, NULL, NULL);
  assert_int_equal(st.code, PRISMQ_CODE_INVALID_ARGUMENT);
  prismq_client_free(blocking);
  prismq_client_free(NULL);
  prismq_run_free(NULL);
  assert_int_equal(r.done, 0);

  assert_string_equal(prismq_code_name(PRISMQ_CODE_OK), "OK");
  assert_string_equal(prismq_code_name(PRISMQ_CODE_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
  assert_string_equal(prismq_code_name(PRISMQ_CODE_UNAUTHENTICATED), "UNAUTHENTICATED");
  assert_string_equal(prismq_code_name(17), "UNKNOWN");
  assert_string_equal(prismq_code_name(-1), "UNKNOWN");
}

/* ---- the blocking client ------------------------------------------------------------ */

static prismq_client *connect_blocking(struct fx *f) {
  prismq_client *c = NULL;
  prismq_client_opts o = PRISMQ_CLIENT_OPTS_INIT;
  o.target = f->peer.target;
  assert_int_equal(prismq_client_connect(&c, &o), 0);
  return c;
}

/* The blocking functions: results, statuses, a stream. */
static void blocking_handler(struct peer *p, struct pstream *s) {
  if (strstr(s->path, "StreamOutput")) {
    stream_handler(p, s);
  } else if (strstr(s->path, "GetRun")) {
    Prismq__Runner__V1__GetRunRequest *q = (Prismq__Runner__V1__GetRunRequest *)peer_request(
        s, &prismq__runner__v1__get_run_request__descriptor);
    if (strcmp(q->run_id, NO_RUN) == 0)
      peer_status(s, "5", "no%20such%20run");
    else
      run_handler(p, s);
    protobuf_c_message_free_unpacked(&q->base, NULL);
  } else {
    any_handler(p, s);
  }
}

static void test_blocking_calls(void **state) {
  struct fx *f = *state;
  f->peer.handler = blocking_handler;
  f->c = connect_blocking(f);
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__StartRunRequest sr = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  sr.module_id = "emit";
  Run *run = NULL;
  prismq_status st = prismq_start_run(&run, f->c, &sr, 0);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  assert_string_equal(run->run_id, "run-of-emit");
  prismq_run_free(run);

  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  g.run_id = NO_RUN;
  run = (Run *)f;
  st = prismq_get_run(&run, f->c, &g, 0);
  assert_int_equal(st.code, PRISMQ_CODE_NOT_FOUND);
  assert_string_equal(st.message, "no such run");
  assert_ptr_equal(run, (Run *)f);
  g.run_id = "x";
  st = prismq_get_run(NULL, f->c, &g, 0); /* result discarded */
  assert_int_equal(st.code, PRISMQ_CODE_OK);

  int serving = -1;
  st = prismq_health(&serving, f->c, NULL, 0);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  assert_int_equal(serving, PRISMQ_NOT_SERVING);
  Prismq__Runner__V1__ListModulesResponse *mods = NULL;
  st = prismq_list_modules(&mods, f->c, NULL, 0);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  assert_non_null(mods);
  prismq__runner__v1__list_modules_response__free_unpacked(mods, NULL);

  f->answer_case = 0;
  Prismq__Runner__V1__StreamOutputRequest so = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  so.run_id = "x";
  struct result r = {0};
  st = prismq_stream_output(f->c, &so, 0, on_chunk, &r);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  assert_int_equal(r.nchunks, 5);
  assert_string_equal(r.data[4], "c5");
  peer_thread_stop(&f->peer);
  assert_int_equal(f->peer.nstreams, 6);
}

/* An interrupt that comes while no call runs ends the next call at once, sending
 * nothing; the call after that is normal. */
static void test_interrupt_before(void **state) {
  struct fx *f = *state;
  f->peer.handler = blocking_handler;
  f->c = connect_blocking(f);
  assert_int_equal(prismq_client_interrupt(f->c), 0);
  assert_int_equal(prismq_client_interrupt(f->c), 0); /* two count as one */
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  g.run_id = "a";
  Run *run = NULL;
  prismq_status st = prismq_get_run(&run, f->c, &g, 0);
  assert_int_equal(st.code, PRISMQ_CODE_CANCELLED);
  assert_string_equal(st.message, "call interrupted by prismq_client_interrupt");
  assert_null(run);
  g.run_id = "b";
  st = prismq_get_run(&run, f->c, &g, 0);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  assert_string_equal(run->run_id, "b");
  prismq_run_free(run);
  peer_thread_stop(&f->peer);
  assert_int_equal(f->peer.nstreams, 1);
}

/* The handler, on the peer's thread, interrupts the client's call in progress. */
static void interrupting_handler(struct peer *p, struct pstream *s) {
  struct fx *f = p->arg;
  (void)s;
  assert_int_equal(prismq_client_interrupt(f->c), 0);
}

/* An interrupt from another thread ends the blocking call in progress, which resets its
 * stream. */
static void test_interrupt_from_thread(void **state) {
  struct fx *f = *state;
  f->peer.handler = interrupting_handler;
  f->c = connect_blocking(f);
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__WaitRunRequest w = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  w.run_id = "a";
  Run *run = NULL;
  prismq_status st = prismq_wait_run(&run, f->c, &w, PRISMQ_NO_DEADLINE);
  assert_int_equal(st.code, PRISMQ_CODE_CANCELLED);
  assert_string_equal(st.message, "call interrupted by prismq_client_interrupt");
  assert_null(run);
  /* The next call is not interrupted: that interrupt was consumed. */
  peer_thread_stop(&f->peer);
  f->peer.handler = blocking_handler;
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  g.run_id = "b";
  st = prismq_get_run(&run, f->c, &g, 0);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  prismq_run_free(run);
  peer_thread_stop(&f->peer);
  assert_int_equal(f->peer.nstreams, 2);
  assert_true(f->peer.streams[0].rst_received);
  assert_int_equal(f->peer.streams[0].rst_code, NGHTTP2_CANCEL);
}

/* Inside a stream's on_chunk: a blocking call on the same client is refused, and an
 * interrupt ends the stream. */
static void test_interrupt_in_callback(void **state) {
  struct fx *f = *state;
  f->peer.handler = stream_handler;
  f->answer_case = 1; /* the stream stays open */
  f->c = connect_blocking(f);
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__StreamOutputRequest so = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  so.run_id = "x";
  struct result r = {.interrupt_in_chunk = 1, .fx = f};
  prismq_status st = prismq_stream_output(f->c, &so, PRISMQ_NO_DEADLINE, on_chunk, &r);
  assert_int_equal(st.code, PRISMQ_CODE_CANCELLED);
  assert_string_equal(st.message, "call interrupted by prismq_client_interrupt");
  assert_true(r.nchunks >= 1 && r.nchunks <= 5);
  assert_int_equal(r.blocking_rc_code, PRISMQ_CODE_FAILED_PRECONDITION);
  peer_thread_stop(&f->peer);
  assert_int_equal(f->peer.nstreams, 1); /* the refused call sent nothing */
}

/* A blocking call's field violations outlive the call, until the next call; a status
 * without details (NULL, made by hand, OK) has none. */
static void test_blocking_details(void **state) {
  struct fx *f = *state;
  f->peer.handler = details_handler;
  f->c = connect_blocking(f);
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__StartRunRequest sr = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  sr.module_id = "m";
  prismq_status st = prismq_start_run(NULL, f->c, &sr, 0);
  assert_int_equal(st.code, PRISMQ_CODE_INVALID_ARGUMENT);
  const prismq_field_violation *v = NULL;
  assert_int_equal(prismq_status_violations(&st, &v), 2);
  assert_string_equal(v[0].field, "parameters.x");
  assert_string_equal(v[0].description, BAD_X);
  assert_string_equal(v[1].field, "parameters.n");
  assert_string_equal(v[1].description, BAD_N);
  assert_int_equal(prismq_status_violations(&st, NULL), 2);

  f->answer_case = 8;
  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  g.run_id = "ok";
  st = prismq_get_run(NULL, f->c, &g, 0);
  assert_int_equal(st.code, PRISMQ_CODE_OK);
  assert_int_equal(prismq_status_violations(&st, &v), 0);
  assert_null(v);
  peer_thread_stop(&f->peer);

  prismq_status mine = {.code = PRISMQ_CODE_INVALID_ARGUMENT};
  assert_int_equal(prismq_status_violations(&mine, &v), 0);
  v = (const prismq_field_violation *)f;
  assert_int_equal(prismq_status_violations(NULL, &v), 0);
  assert_null(v);
}

/* A blocking call's deadline. */
static void test_blocking_deadline(void **state) {
  struct fx *f = *state;
  f->peer.handler = NULL; /* never answers */
  f->c = connect_blocking(f);
  peer_thread_start(&f->peer);
  Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  g.run_id = "a";
  Run *run = NULL;
  int64_t t0 = mono_ms();
  prismq_status st = prismq_get_run(&run, f->c, &g, 150);
  assert_true(mono_ms() - t0 >= 150);
  assert_int_equal(st.code, PRISMQ_CODE_DEADLINE_EXCEEDED);
  assert_null(run);
  peer_thread_stop(&f->peer);
}

int main(void) {
  /* As any program of the asynchronous client must (client.h, "SIGPIPE"); the peer
   * writes to closed sockets too. */
#ifdef SIGPIPE
  signal(SIGPIPE, SIG_IGN);
#endif
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_unary_ok),
      T(test_rpc_paths),
      T(test_no_default_deadline),
      T(test_status_errors),
      T(test_http_errors),
      T(test_bad_bodies),
      T(test_large_answer),
      T(test_status_details),
      T(test_reset_by_server),
      T(test_connection_lost),
      T(test_deadline),
      T(test_free_with_calls),
      T(test_multiplexing),
      T(test_stream_output),
      T(test_stream_stop),
      T(test_unreachable),
      T(test_connect_errors),
      T(test_misuse),
      T(test_blocking_calls),
      T(test_interrupt_before),
      T(test_interrupt_from_thread),
      T(test_interrupt_in_callback),
      T(test_blocking_deadline),
      T(test_blocking_details),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  libevent_global_shutdown();
  return rc;
}
