/* libprismq_probe: drives libprismq (client/include/prismq/client.h) against a prismqd
 * for tests/integration/test_client_lib.py.
 *
 *   libprismq_probe TARGET COMMAND [ARGS...]      (TARGET "-": opts.target = NULL)
 *
 * The TLS options come from PRISMQ_TLS_CA, PRISMQ_TLS_CERT and PRISMQ_TLS_KEY when set
 * and not empty (opts.ca_file, cert_file, key_file), as for prismq.
 *
 * Blocking API:
 *   health [SERVICE]         prints the serving status (SERVING)
 *   modules                  prints the module ids, one a line
 *   start MODULE [K=V...]    StartRun: prints "RUN_ID STATUS"
 *   get RUN_ID               GetRun: prints "RUN_ID MODULE STATUS EXIT_CODE"
 *   wait RUN_ID [MS]         WaitRun (no server-side timeout) with a per-call deadline
 *                            of MS (default: none): prints "STATUS EXIT_CODE"
 *   cancel RUN_ID            CancelRun (grace 100 ms): prints STATUS
 *   list MODULE              ListRuns of MODULE: prints the run ids, newest first
 *   stream RUN_ID [follow]   StreamOutput: the run's stdout to stdout, its stderr to
 *                            stderr, flushed chunk by chunk
 *   stop-early RUN_ID N      StreamOutput with follow, stopped by on_chunk after N
 *                            chunks; checks that a blocking call from on_chunk is
 *                            refused and that the connection still serves a GetRun;
 *                            prints "CANCELLED N"
 *   interrupt RUN_ID         prismq_client_interrupt from a SIGALRM handler: a
 *                            StreamOutput (follow, no deadline) of a silent RUN_ID,
 *                            interrupted 100 ms after its first chunk, then a WaitRun
 *                            (no deadline) interrupted after 100 ms; then an interrupt
 *                            with no call running, which the next GetRun must end at
 *                            once; then a GetRun on the same connection. Prints
 *                            "stream CANCELLED 1", "wait CANCELLED", "get CANCELLED"
 *                            and the GetRun line
 *   misuse                   wrong kind of client, NULL arguments (no server needed):
 *                            prints "ok"
 *   tls                      connect with a missing CA file: prints the error
 * Asynchronous API (on the probe's own event_base):
 *   async MODULE [K=V...]    health and ListModules, StartRun, then StreamOutput
 *                            (follow) and WaitRun together, then GetRun, ListRuns and
 *                            CancelRun (of the finished run) together; one line each
 *   async-free RUN_ID        StreamOutput (follow) of a running RUN_ID with a WaitRun
 *                            beside it; the stream stops after its first chunk, and its
 *                            on_done frees the client: the WaitRun must end CANCELLED
 *                            before prismq_client_free returns
 *
 * Exit status: 0 on success; 3 if an RPC ended with an unexpected status (printed on
 * stderr as "NAME: message"); 4 if connecting failed ("connect: why" on stderr); 1 for
 * any other failed check; 2 for usage errors. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "prismq/client.h"

#define EXIT_RPC     3
#define EXIT_CONNECT 4

static const char *run_status_name(int status) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&prismq__runner__v1__run_status__descriptor, status);
  return v ? v->name : "?";
}

static int rpc_failed(const prismq_status *st) {
  fprintf(stderr, "%s: %s\n", prismq_code_name(st->code), st->message);
  return EXIT_RPC;
}

/* An environment variable, or NULL when unset or empty. */
static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* The client options of a command: `target`, and TLS files from the environment. */
static prismq_client_opts client_opts(const char *target) {
  prismq_client_opts opts = PRISMQ_CLIENT_OPTS_INIT;
  opts.target = target;
  opts.ca_file = env("PRISMQ_TLS_CA");
  opts.cert_file = env("PRISMQ_TLS_CERT");
  opts.key_file = env("PRISMQ_TLS_KEY");
  return opts;
}

static int check_failed(const char *what) {
  fprintf(stderr, "libprismq_probe: %s\n", what);
  return 1;
}

/* StartRunRequest parameters from K=V arguments (the strings are split in place). */
struct params {
  Prismq__Runner__V1__StartRunRequest__ParametersEntry entries[16];
  Prismq__Runner__V1__StartRunRequest__ParametersEntry *ptrs[16];
};

static int start_request(Prismq__Runner__V1__StartRunRequest *req, struct params *p,
                         const char *module, int n, char **kv) {
  if (n > 16) return -1;
  prismq__runner__v1__start_run_request__init(req);
  req->module_id = (char *)module;
  for (int i = 0; i < n; i++) {
    char *eq = strchr(kv[i], '=');
    if (!eq) return -1;
    *eq = '\0';
    prismq__runner__v1__start_run_request__parameters_entry__init(&p->entries[i]);
    p->entries[i].key = kv[i];
    p->entries[i].value = eq + 1;
    p->ptrs[i] = &p->entries[i];
  }
  req->n_parameters = (size_t)n;
  req->parameters = p->ptrs;
  return 0;
}

static const char *serving_name(int serving) {
  static const char *const names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  return serving >= 0 && serving < 4 ? names[serving] : "?";
}

/* ---- blocking ---- */

static int cmd_health(prismq_client *c, const char *service) {
  int serving = -1;
  prismq_status st = prismq_health(&serving, c, service, 0);
  if (st.code) return rpc_failed(&st);
  printf("%s\n", serving_name(serving));
  return 0;
}

static int cmd_modules(prismq_client *c) {
  Prismq__Runner__V1__ListModulesResponse *resp = NULL;
  prismq_status st = prismq_list_modules(&resp, c, NULL, 0);
  if (st.code) return rpc_failed(&st);
  for (size_t i = 0; i < resp->n_modules; i++) printf("%s\n", resp->modules[i]->id);
  prismq__runner__v1__list_modules_response__free_unpacked(resp, NULL);
  return 0;
}

static int cmd_start(prismq_client *c, const char *module, int n, char **kv) {
  Prismq__Runner__V1__StartRunRequest req;
  struct params p;
  if (start_request(&req, &p, module, n, kv) < 0) return 2;
  Prismq__Runner__V1__Run *run = NULL;
  prismq_status st = prismq_start_run(&run, c, &req, 0);
  if (st.code) return rpc_failed(&st);
  printf("%s %s\n", run->run_id, run_status_name(run->status));
  prismq_run_free(run);
  return 0;
}

static int cmd_get(prismq_client *c, const char *run_id) {
  Prismq__Runner__V1__GetRunRequest req = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  req.run_id = (char *)run_id;
  Prismq__Runner__V1__Run *run = NULL;
  prismq_status st = prismq_get_run(&run, c, &req, 0);
  if (st.code) return rpc_failed(&st);
  printf("%s %s %s %d\n", run->run_id, run->module_id, run_status_name(run->status),
         run->exit_code);
  prismq_run_free(run);
  return 0;
}

static int cmd_wait(prismq_client *c, const char *run_id, uint32_t deadline_ms) {
  Prismq__Runner__V1__WaitRunRequest req = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  req.run_id = (char *)run_id;
  Prismq__Runner__V1__Run *run = NULL;
  prismq_status st = prismq_wait_run(&run, c, &req, deadline_ms);
  if (st.code) return rpc_failed(&st);
  printf("%s %d\n", run_status_name(run->status), run->exit_code);
  prismq_run_free(run);
  return 0;
}

static int cmd_cancel(prismq_client *c, const char *run_id) {
  Prismq__Runner__V1__CancelRunRequest req = PRISMQ__RUNNER__V1__CANCEL_RUN_REQUEST__INIT;
  req.run_id = (char *)run_id;
  req.grace_ms = 100;
  Prismq__Runner__V1__Run *run = NULL;
  prismq_status st = prismq_cancel_run(&run, c, &req, 0);
  if (st.code) return rpc_failed(&st);
  printf("%s\n", run_status_name(run->status));
  prismq_run_free(run);
  return 0;
}

static int cmd_list(prismq_client *c, const char *module) {
  Prismq__Runner__V1__ListRunsRequest req = PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT;
  req.module_id = (char *)module;
  req.page_size = 1000;
  Prismq__Runner__V1__ListRunsResponse *resp = NULL;
  prismq_status st = prismq_list_runs(&resp, c, &req, 0);
  if (st.code) return rpc_failed(&st);
  for (size_t i = 0; i < resp->n_runs; i++) printf("%s\n", resp->runs[i]->run_id);
  prismq__runner__v1__list_runs_response__free_unpacked(resp, NULL);
  return 0;
}

static int write_chunk(const Prismq__Runner__V1__OutputChunk *chunk) {
  FILE *to =
      chunk->stream == PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR ? stderr : stdout;
  if (chunk->data.len == 0) return 0; /* the last chunk of a follow: data.data is NULL */
  if (fwrite(chunk->data.data, 1, chunk->data.len, to) != chunk->data.len) return -1;
  return fflush(to) == 0 ? 0 : -1;
}

static int stream_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  (void)user;
  return write_chunk(chunk) < 0;
}

static int cmd_stream(prismq_client *c, const char *run_id, int follow) {
  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = (char *)run_id;
  req.follow = follow;
  prismq_status st = prismq_stream_output(c, &req, PRISMQ_NO_DEADLINE, stream_chunk, NULL);
  return st.code ? rpc_failed(&st) : 0;
}

struct stop_early {
  prismq_client *c;
  const char *run_id;
  int stop_after, nchunks;
  int nested_code; /* status of the blocking call tried from inside on_chunk */
};

static int stop_early_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  (void)chunk;
  struct stop_early *s = user;
  if (s->nchunks++ == 0) {
    Prismq__Runner__V1__GetRunRequest req = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
    req.run_id = (char *)s->run_id;
    Prismq__Runner__V1__Run *run = NULL;
    s->nested_code = prismq_get_run(&run, s->c, &req, 0).code;
    prismq_run_free(run);
  }
  return s->nchunks >= s->stop_after;
}

static int cmd_stop_early(prismq_client *c, const char *run_id, int n) {
  struct stop_early s = {c, run_id, n, 0, -1};
  Prismq__Runner__V1__StreamOutputRequest req = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  req.run_id = (char *)run_id;
  req.follow = 1;
  prismq_status st = prismq_stream_output(c, &req, 0, stop_early_chunk, &s);
  if (st.code != PRISMQ_CODE_CANCELLED) return rpc_failed(&st);
  if (s.nchunks != n) return check_failed("on_chunk called again after it stopped the stream");
  if (s.nested_code != PRISMQ_CODE_FAILED_PRECONDITION)
    return check_failed("a blocking call from on_chunk was not refused");
  int rc = cmd_get(c, run_id);
  if (rc) return rc;
  printf("%s %d\n", prismq_code_name(st.code), s.nchunks);
  return 0;
}

/* ---- interrupting ---- */

#define INTERRUPTED "call interrupted by prismq_client_interrupt"

static prismq_client *alarm_client;

static void on_alarm(int sig) {
  (void)sig;
  prismq_client_interrupt(alarm_client);
}

/* SIGALRM once, in 100 ms. */
static void alarm_soon(void) {
  struct itimerval it = {{0, 0}, {0, 100 * 1000}};
  setitimer(ITIMER_REAL, &it, NULL);
}

static int alarm_after_first(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  (void)chunk;
  if ((*(int *)user)++ == 0) alarm_soon();
  return 0;
}

/* 0 if `st` is the CANCELLED of an interrupt, else rpc_failed()'s value. */
static int check_interrupted(const prismq_status *st) {
  if (st->code != PRISMQ_CODE_CANCELLED || strcmp(st->message, INTERRUPTED) != 0)
    return rpc_failed(st);
  return 0;
}

static int cmd_interrupt(prismq_client *c, const char *run_id) {
  alarm_client = c;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGALRM, &sa, NULL) < 0) return check_failed("sigaction");

  Prismq__Runner__V1__StreamOutputRequest sreq = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  sreq.run_id = (char *)run_id;
  sreq.follow = 1;
  int nchunks = 0;
  prismq_status st =
      prismq_stream_output(c, &sreq, PRISMQ_NO_DEADLINE, alarm_after_first, &nchunks);
  int rc = check_interrupted(&st);
  if (rc) return rc;
  printf("stream CANCELLED %d\n", nchunks);

  Prismq__Runner__V1__WaitRunRequest wreq = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  wreq.run_id = (char *)run_id;
  Prismq__Runner__V1__Run *run = NULL;
  alarm_soon();
  st = prismq_wait_run(&run, c, &wreq, PRISMQ_NO_DEADLINE);
  if ((rc = check_interrupted(&st)) != 0) return rc;
  printf("wait CANCELLED\n");

  /* No call running: kept for the next one, which must not even start. */
  if (prismq_client_interrupt(c) != 0 || prismq_client_interrupt(c) != 0)
    return check_failed("interrupt refused");
  Prismq__Runner__V1__GetRunRequest greq = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  greq.run_id = (char *)run_id;
  st = prismq_get_run(&run, c, &greq, 0);
  if ((rc = check_interrupted(&st)) != 0) return rc;
  printf("get CANCELLED\n");
  if (run) return check_failed("an interrupted call set its result");
  /* Two interrupts, one call: the next call runs. */
  return cmd_get(c, run_id);
}

static void ignore_run(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user) {
  (void)st;
  (void)user;
  prismq_run_free(run);
}

static int cmd_misuse(void) {
  struct event_base *base = event_base_new();
  prismq_client *blocking = NULL, *async = NULL;
  int code = 1;
  if (!base) return check_failed("event_base_new");
  /* Connecting is lazy: a port nobody listens on is fine for these checks. */
  prismq_client_opts opts = PRISMQ_CLIENT_OPTS_INIT;
  opts.target = "127.0.0.1:9";
  if (prismq_client_connect(&blocking, &opts) != 0 ||
      prismq_client_connect_async(&async, base, &opts) != 0) {
    check_failed("connect");
    goto out;
  }
  Prismq__Runner__V1__GetRunRequest req = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
  Prismq__Runner__V1__Run *run = NULL;
  prismq_client *other = NULL;
  if (prismq_get_run_async(blocking, &req, 0, ignore_run, NULL) != -EINVAL ||
      prismq_get_run_async(async, NULL, 0, ignore_run, NULL) != -EINVAL ||
      prismq_get_run_async(async, &req, 0, NULL, NULL) != -EINVAL ||
      prismq_client_connect_async(&other, NULL, &opts) != -EINVAL ||
      prismq_client_connect(NULL, &opts) != -EINVAL || other ||
      prismq_client_interrupt(async) != -EINVAL || prismq_client_interrupt(NULL) != -EINVAL) {
    check_failed("async misuse accepted");
    goto out;
  }
  if (prismq_get_run(&run, async, &req, 0).code != PRISMQ_CODE_FAILED_PRECONDITION ||
      prismq_get_run(&run, blocking, NULL, 0).code != PRISMQ_CODE_INVALID_ARGUMENT ||
      prismq_get_run(&run, NULL, &req, 0).code != PRISMQ_CODE_INVALID_ARGUMENT ||
      prismq_stream_output(blocking, NULL, 0, stream_chunk, NULL).code !=
          PRISMQ_CODE_INVALID_ARGUMENT ||
      run) {
    check_failed("blocking misuse accepted");
    goto out;
  }
  printf("ok\n");
  code = 0;

out:
  prismq_client_free(async);
  prismq_client_free(blocking);
  event_base_free(base);
  return code;
}

static int cmd_tls(void) {
  prismq_client_opts opts = PRISMQ_CLIENT_OPTS_INIT;
  opts.ca_file = "ca.pem";
  prismq_client *c = NULL;
  int rc = prismq_client_connect(&c, &opts);
  if (rc == 0) {
    prismq_client_free(c);
    return check_failed("connected with TLS options");
  }
  printf("%s\n", prismq_strerror(rc));
  return rc == -EINVAL && !c ? 0 : 1;
}

/* ---- asynchronous ---- */

struct async_run {
  struct event_base *base;
  prismq_client *c;
  int pending; /* calls not yet ended */
  int failed;
  char run_id[64];
  const char *module;
  size_t out_bytes, err_bytes;
  int final_status;
};

static void async_end(struct async_run *a) {
  if (--a->pending == 0) event_base_loopbreak(a->base);
}

static int async_check(struct async_run *a, const char *what, const prismq_status *st) {
  if (st->code == PRISMQ_CODE_OK) return 0;
  printf("%s %s: %s\n", what, prismq_code_name(st->code), st->message);
  a->failed = 1;
  return -1;
}

static void on_health(const prismq_status *st, int serving, void *user) {
  struct async_run *a = user;
  if (async_check(a, "health", st) == 0) printf("health %s\n", serving_name(serving));
  async_end(a);
}

static void on_modules(const prismq_status *st, Prismq__Runner__V1__ListModulesResponse *resp,
                       void *user) {
  struct async_run *a = user;
  if (async_check(a, "modules", st) == 0) printf("modules %zu\n", resp->n_modules);
  prismq__runner__v1__list_modules_response__free_unpacked(resp, NULL);
  async_end(a);
}

static int on_async_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  struct async_run *a = user;
  if (chunk->stream == PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR)
    a->err_bytes += chunk->data.len;
  else
    a->out_bytes += chunk->data.len;
  if (chunk->run) a->final_status = chunk->run->status;
  return 0;
}

static void on_stream_done(const prismq_status *st, void *user) {
  struct async_run *a = user;
  if (async_check(a, "stream", st) == 0)
    printf("stream OK stdout %zu stderr %zu final %s\n", a->out_bytes, a->err_bytes,
           run_status_name(a->final_status));
  async_end(a);
}

static void on_list(const prismq_status *st, Prismq__Runner__V1__ListRunsResponse *resp,
                    void *user) {
  struct async_run *a = user;
  if (async_check(a, "list", st) == 0)
    printf("list first %s\n", resp->n_runs ? resp->runs[0]->run_id : "-");
  prismq__runner__v1__list_runs_response__free_unpacked(resp, NULL);
  async_end(a);
}

static void on_cancel(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user) {
  struct async_run *a = user;
  printf("cancel %s%s\n", prismq_code_name(st->code), run ? " (with a run)" : "");
  prismq_run_free(run);
  async_end(a);
}

static void on_get(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user) {
  struct async_run *a = user;
  if (async_check(a, "get", st) == 0)
    printf("get %s %s\n", run->run_id, run_status_name(run->status));
  prismq_run_free(run);
  async_end(a);
}

/* Starts a call and counts it pending, or marks the whole run failed. */
static void async_started(struct async_run *a, const char *what, int rc) {
  if (rc == 0) {
    a->pending++;
    return;
  }
  printf("%s: cannot start: %s\n", what, prismq_strerror(rc));
  a->failed = 1;
}

static void on_wait(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user) {
  struct async_run *a = user;
  if (async_check(a, "wait", st) == 0) {
    printf("wait %s %d\n", run_status_name(run->status), run->exit_code);
    Prismq__Runner__V1__GetRunRequest get = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
    get.run_id = a->run_id;
    Prismq__Runner__V1__ListRunsRequest list = PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT;
    list.module_id = (char *)a->module;
    Prismq__Runner__V1__CancelRunRequest cancel = PRISMQ__RUNNER__V1__CANCEL_RUN_REQUEST__INIT;
    cancel.run_id = a->run_id;
    async_started(a, "get", prismq_get_run_async(a->c, &get, 0, on_get, a));
    async_started(a, "list", prismq_list_runs_async(a->c, &list, 0, on_list, a));
    async_started(a, "cancel", prismq_cancel_run_async(a->c, &cancel, 0, on_cancel, a));
  }
  prismq_run_free(run);
  async_end(a);
}

static void on_started(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user) {
  struct async_run *a = user;
  if (async_check(a, "start", st) == 0) {
    printf("started %s\n", run->run_id);
    snprintf(a->run_id, sizeof a->run_id, "%s", run->run_id);
    Prismq__Runner__V1__StreamOutputRequest sreq = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
    sreq.run_id = a->run_id;
    sreq.follow = 1;
    Prismq__Runner__V1__WaitRunRequest wreq = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
    wreq.run_id = a->run_id;
    async_started(a, "stream",
                  prismq_stream_output_async(a->c, &sreq, PRISMQ_NO_DEADLINE, on_async_chunk,
                                             on_stream_done, a));
    async_started(a, "wait", prismq_wait_run_async(a->c, &wreq, PRISMQ_NO_DEADLINE, on_wait, a));
  }
  prismq_run_free(run);
  async_end(a);
}

static int cmd_async(const char *target, const char *module, int n, char **kv) {
  Prismq__Runner__V1__StartRunRequest req;
  struct params p;
  if (start_request(&req, &p, module, n, kv) < 0) return 2;
  struct async_run a = {0};
  a.module = module;
  a.base = event_base_new();
  if (!a.base) return check_failed("event_base_new");
  prismq_client_opts opts = client_opts(target);
  int rc = prismq_client_connect_async(&a.c, a.base, &opts);
  if (rc < 0) {
    event_base_free(a.base);
    fprintf(stderr, "connect: %s\n", prismq_strerror(rc));
    return EXIT_CONNECT;
  }
  async_started(&a, "health", prismq_health_async(a.c, NULL, 0, on_health, &a));
  async_started(&a, "modules", prismq_list_modules_async(a.c, NULL, 0, on_modules, &a));
  async_started(&a, "start", prismq_start_run_async(a.c, &req, 0, on_started, &a));
  if (a.pending) event_base_dispatch(a.base);
  prismq_client_free(a.c);
  event_base_free(a.base);
  return a.failed || a.pending ? 1 : 0;
}

struct async_free {
  prismq_client *c;
  int nchunks;
  int wait_code;   /* -1 until the WaitRun ends */
  int wait_before; /* its end came before prismq_client_free returned */
  int freed;
  int stream_code;
};

static int free_chunk(const Prismq__Runner__V1__OutputChunk *chunk, void *user) {
  (void)chunk;
  struct async_free *f = user;
  f->nchunks++;
  return 1;
}

static void free_wait_done(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user) {
  struct async_free *f = user;
  f->wait_code = st->code;
  f->wait_before = !f->freed;
  prismq_run_free(run);
}

static void free_stream_done(const prismq_status *st, void *user) {
  struct async_free *f = user;
  f->stream_code = st->code;
  prismq_client_free(f->c);
  f->freed = 1;
}

static int cmd_async_free(const char *target, const char *run_id) {
  struct event_base *base = event_base_new();
  if (!base) return check_failed("event_base_new");
  struct async_free f = {NULL, 0, -1, 0, 0, -1};
  prismq_client_opts opts = client_opts(target);
  int rc = prismq_client_connect_async(&f.c, base, &opts);
  if (rc < 0) {
    event_base_free(base);
    fprintf(stderr, "connect: %s\n", prismq_strerror(rc));
    return EXIT_CONNECT;
  }
  Prismq__Runner__V1__WaitRunRequest wreq = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  wreq.run_id = (char *)run_id;
  Prismq__Runner__V1__StreamOutputRequest sreq = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  sreq.run_id = (char *)run_id;
  sreq.follow = 1;
  if (prismq_wait_run_async(f.c, &wreq, PRISMQ_NO_DEADLINE, free_wait_done, &f) != 0 ||
      prismq_stream_output_async(f.c, &sreq, 0, free_chunk, free_stream_done, &f) != 0) {
    prismq_client_free(f.c);
    event_base_free(base);
    return check_failed("cannot start the calls");
  }
  while (!f.freed) event_base_loop(base, EVLOOP_ONCE);
  event_base_free(base);
  if (f.nchunks != 1) return check_failed("the stream did not stop after one chunk");
  if (!f.wait_before) return check_failed("WaitRun did not end inside prismq_client_free");
  printf("stream %s\nwait %s\n", prismq_code_name(f.stream_code), prismq_code_name(f.wait_code));
  return 0;
}

/* ---- main ---- */

/* A non-negative decimal argument, or -1. */
static long number_arg(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return errno || end == s || *end || v < 0 ? -1 : v;
}

static int blocking_cmd(prismq_client *c, int argc, char **argv) {
  const char *cmd = argv[2];
  const char *arg = argc > 3 ? argv[3] : NULL;
  long n = argc > 4 ? number_arg(argv[4]) : -1;
  if (strcmp(cmd, "health") == 0 && argc <= 4) return cmd_health(c, arg);
  if (strcmp(cmd, "modules") == 0 && argc == 3) return cmd_modules(c);
  if (strcmp(cmd, "start") == 0 && arg) return cmd_start(c, arg, argc - 4, argv + 4);
  if (strcmp(cmd, "get") == 0 && argc == 4) return cmd_get(c, arg);
  if (strcmp(cmd, "wait") == 0 && argc == 4) return cmd_wait(c, arg, PRISMQ_NO_DEADLINE);
  if (strcmp(cmd, "wait") == 0 && argc == 5 && n > 0) return cmd_wait(c, arg, (uint32_t)n);
  if (strcmp(cmd, "cancel") == 0 && argc == 4) return cmd_cancel(c, arg);
  if (strcmp(cmd, "list") == 0 && argc == 4) return cmd_list(c, arg);
  if (strcmp(cmd, "stream") == 0 && argc == 4) return cmd_stream(c, arg, 0);
  if (strcmp(cmd, "stream") == 0 && argc == 5 && strcmp(argv[4], "follow") == 0)
    return cmd_stream(c, arg, 1);
  if (strcmp(cmd, "stop-early") == 0 && argc == 5 && n > 0) return cmd_stop_early(c, arg, (int)n);
  if (strcmp(cmd, "interrupt") == 0 && argc == 4) return cmd_interrupt(c, arg);
  fprintf(stderr, "libprismq_probe: bad command (see the source for usage)\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: libprismq_probe TARGET COMMAND [ARGS...]\n");
    return 2;
  }
  const char *target = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
  const char *cmd = argv[2];
  int code;
  if (strcmp(cmd, "misuse") == 0) {
    code = cmd_misuse();
  } else if (strcmp(cmd, "tls") == 0) {
    code = cmd_tls();
  } else if (strcmp(cmd, "async") == 0 && argc >= 4) {
    code = cmd_async(target, argv[3], argc - 4, argv + 4);
  } else if (strcmp(cmd, "async-free") == 0 && argc == 4) {
    code = cmd_async_free(target, argv[3]);
  } else {
    prismq_client_opts opts = client_opts(target);
    prismq_client *c = NULL;
    int rc = prismq_client_connect(&c, &opts);
    if (rc < 0) {
      fprintf(stderr, "connect: %s\n", prismq_strerror(rc));
      return EXIT_CONNECT;
    }
    code = blocking_cmd(c, argc, argv);
    prismq_client_free(c);
  }
  libevent_global_shutdown();
  return code;
}
