/* bench_client: the load driver of scripts/bench (run starts, first byte, streaming,
 * fan-out, queued runs, idle and stalled followers) on the project's own client core
 * (client/gclient.h), so that a Python client's speed does not cap what is measured.
 *
 *   bench_client [--tls-ca FILE] TARGET MODE ...
 *       TARGET as gclient takes it ("127.0.0.1:PORT", "tls://127.0.0.1:PORT", ...).
 *       Connections use TLS (ALPN h2) when --tls-ca is given or TARGET starts with
 *       "tls://": the server certificate must verify against FILE (else the system's
 *       CAs) and match TARGET's host.
 *
 *   bench_client TARGET starts N INFLIGHT MODULE [NAME=VALUE...]
 *       N runs, INFLIGHT at once over one connection: StartRun, then WaitRun to the
 *       terminal state, then the next StartRun. A run fails unless it ends COMPLETED
 *       with exit code 0.
 *       {"runs":N,"seconds":S,"runs_per_s":R,"failed":F}
 *   bench_client TARGET firstbyte N MODULE [NAME=VALUE...]
 *       N runs one after the other: the time from sending StartRun to the first output
 *       byte at a follower (StreamOutput follow, opened when StartRun has answered).
 *       {"samples":N,"median_us":M,"p99_us":P,"mean_us":A,"failed":F}
 *   bench_client TARGET stream BYTES MODULE [NAME=VALUE...]
 *       one run, one follower: BYTES of output expected; time from sending StartRun to
 *       the follower's end.
 *       {"bytes":B,"seconds":S,"bytes_per_s":R,"ok":0|1}
 *   bench_client TARGET fanout FOLLOWERS FILE MODULE [NAME=VALUE...]
 *       one run whose output must be the contents of FILE; FOLLOWERS followers, each on
 *       its own connection, each checked byte for byte (count and XXH3-64 hash). Time
 *       from sending StartRun to the last follower's end.
 *       {"followers":F,"bytes_each":B,"seconds":S,"aggregate_bytes_per_s":R,"exact":E}
 *   bench_client TARGET queue N MODULE [NAME=VALUE...]
 *       N StartRuns (QUEUE_INFLIGHT at once over one connection), e.g. to fill the
 *       queue; fails for any non-OK answer.
 *       {"runs":N,"seconds":S,"failed":F}
 *   bench_client TARGET follow N PER_CONN RUN_ID
 *       N followers of RUN_ID (StreamOutput follow), PER_CONN per connection, held
 *       open until stdin reaches EOF. Prints {"followers":N,"connections":C} once every
 *       call is sent.
 *   bench_client TARGET stall N MODULE [NAME=VALUE...]
 *       starts one run and N followers of it, each on its own connection; once each
 *       has received a message, stops reading (the event loop no longer runs) and
 *       prints {"run_id":"...","followers":N}; exits at EOF on stdin.
 *   bench_client TARGET getrun N FILE
 *       N GetRun calls, one at a time over one connection, of the run ids in FILE (one
 *       per line, taken in turn). Each answer must be OK and the run asked for.
 *       {"calls":N,"median_us":M,"p99_us":P,"mean_us":A,"max_us":X,"failed":F}
 *   bench_client TARGET listruns N [status=S]... [label=KEY=VALUE]... [page_size=P]
 *       N ListRuns calls of the first page, one at a time over one connection, with the
 *       filter given (S a RunStatus number). Each answer must be OK, and every run in it
 *       must match the filter, newest first. "runs" and "bytes" are those of the last
 *       answer, "more" whether it had a next page.
 *       {"calls":N,"median_us":M,...,"runs":R,"bytes":B,"more":0|1,"failed":F}
 *   bench_client TARGET ready TIMEOUT_MS
 *       Health/Check on a new connection every millisecond or so, until one answers
 *       SERVING (then exits 0) or TIMEOUT_MS have passed (exits 1). "ok_at" is the
 *       CLOCK_MONOTONIC time of the answer, in seconds (Python's time.monotonic()).
 *       {"attempts":K,"ok_at":T}
 *
 * Results go to stdout as one JSON line. Exits 0 when every check passed, 1 when one
 * failed (the JSON says which), 2 on usage or set-up errors. Built by
 * scripts/bench/run.sh against the build directory's libraries. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>
#include <xxhash.h>

#include "gclient.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"
#include "tlsctx.h"
#include "prismq/runner/v1/runner.pb-c.h"

#define PATH_START       "/prismq.runner.v1.Runner/StartRun"
#define PATH_WAIT        "/prismq.runner.v1.Runner/WaitRun"
#define PATH_STREAM      "/prismq.runner.v1.Runner/StreamOutput"
#define PATH_GET         "/prismq.runner.v1.Runner/GetRun"
#define PATH_LIST        "/prismq.runner.v1.Runner/ListRuns"
#define PATH_HEALTH      "/grpc.health.v1.Health/Check"
#define UNARY_TIMEOUT_MS 30000
#define MAX_FILTER       64
#define CALL_TIMEOUT_MS  600000
#define MAX_PARAMS       16
#define MAX_INFLIGHT     1024
#define QUEUE_INFLIGHT   100

typedef Prismq__Runner__V1__Run pb_run;
typedef Prismq__Runner__V1__OutputChunk pb_chunk;

static struct event_base *g_base;
static const char *g_target;
static SSL_CTX *g_tls; /* client TLS context of every connection, or NULL for h2c */
/* The StartRun request of every run, packed once. */
static uint8_t *g_start_req;
static size_t g_start_len;

static void die(const char *what) {
  fprintf(stderr, "bench_client: %s\n", what);
  exit(2);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory");
  return p;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static gcl_conn *conn_new(void) {
  gcl_conn *c = NULL;
  gcl_conn_opts o = GCL_CONN_OPTS_INIT;
  o.tls_ctx = g_tls;
  char err[256] = "";
  if (gcl_conn_new(&c, g_base, g_target, &o, err, sizeof err) < 0) {
    fprintf(stderr, "bench_client: cannot connect to %s: %s\n", g_target, err);
    exit(2);
  }
  return c;
}

static void call_start(gcl_conn *c, const char *path, const uint8_t *req, size_t len,
                       gcl_msg_fn on_msg, gcl_done_fn on_done, void *user) {
  if (gcl_call_start(NULL, c, path, req, len, CALL_TIMEOUT_MS, on_msg, on_done, user) < 0)
    die("cannot start a call");
}

/* Packs the StartRunRequest of module `module` with NAME=VALUE parameters into g_start_req. */
static void start_req_init(const char *module, int nparams, char **params) {
  if (nparams > MAX_PARAMS) die("too many parameters");
  Prismq__Runner__V1__StartRunRequest req = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  Prismq__Runner__V1__StartRunRequest__ParametersEntry ents[MAX_PARAMS], *ptrs[MAX_PARAMS];
  for (int i = 0; i < nparams; i++) {
    char *eq = strchr(params[i], '=');
    if (!eq) die("parameters are NAME=VALUE");
    *eq = '\0';
    ents[i] = (Prismq__Runner__V1__StartRunRequest__ParametersEntry)
        PRISMQ__RUNNER__V1__START_RUN_REQUEST__PARAMETERS_ENTRY__INIT;
    ents[i].key = params[i];
    ents[i].value = eq + 1;
    ptrs[i] = &ents[i];
  }
  req.module_id = (char *)module;
  req.parameters = ptrs;
  req.n_parameters = (size_t)nparams;
  g_start_len = prismq__runner__v1__start_run_request__get_packed_size(&req);
  g_start_req = xmalloc(g_start_len);
  prismq__runner__v1__start_run_request__pack(&req, g_start_req);
}

/* Packs a StreamOutputRequest (follow, both streams, from the start) for run_id into
 * buf (cap bytes); returns the length. */
static size_t follow_req(uint8_t *buf, size_t cap, const char *run_id) {
  Prismq__Runner__V1__StreamOutputRequest r = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  r.run_id = (char *)run_id;
  r.follow = 1;
  if (prismq__runner__v1__stream_output_request__get_packed_size(&r) > cap) die("run id too long");
  return prismq__runner__v1__stream_output_request__pack(&r, buf);
}

/* Packs a WaitRunRequest (no timeout) for run_id into buf (cap bytes); returns the length. */
static size_t wait_req(uint8_t *buf, size_t cap, const char *run_id) {
  Prismq__Runner__V1__WaitRunRequest r = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  r.run_id = (char *)run_id;
  if (prismq__runner__v1__wait_run_request__get_packed_size(&r) > cap) die("run id too long");
  return prismq__runner__v1__wait_run_request__pack(&r, buf);
}

/* Copies the run id of a packed Run into out (64 bytes); returns its status, or -1 if
 * the message does not decode. *exit_code gets the exit code if not NULL. */
static int run_info(char *out, int *exit_code, const uint8_t *msg, size_t len) {
  pb_run *r = prismq__runner__v1__run__unpack(NULL, len, msg);
  if (!r) return -1;
  snprintf(out, 64, "%s", r->run_id);
  int st = (int)r->status;
  if (exit_code) *exit_code = r->exit_code;
  prismq__runner__v1__run__free_unpacked(r, NULL);
  return st;
}

static int completed_ok(int status, int exit_code) {
  return status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED && exit_code == 0;
}

static long count_arg(const char *s, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 1 || v > max) die("bad count argument");
  return v;
}

static void loop_until(const int *flag) {
  while (!*flag)
    if (event_base_loop(g_base, EVLOOP_ONCE) < 0) die("event loop failed");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sorts the n latencies lat (microseconds) and prints the figures of the result line
 * that describe them: "median_us":M,"p99_us":P,"mean_us":A,"max_us":X (no braces). */
static void print_latency(double *lat, long n) {
  double sum = 0;
  for (long i = 0; i < n; i++) sum += lat[i];
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  long p99 = (n * 99) / 100 < n ? (n * 99) / 100 : n - 1;
  printf("\"median_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,\"max_us\":%.1f", lat[n / 2],
         lat[p99], sum / (double)n, lat[n - 1]);
}

/* ---- one run: StartRun, then a WaitRun or a follower ------------------------------ */

/* One run in flight, as the starts, firstbyte and stream modes drive it. */
struct run {
  gcl_conn *c;
  int follow; /* then a StreamOutput follow, else a WaitRun */
  char run_id[64];
  int status; /* of the StartRun answer, then of the terminal run */
  int exit_code;
  double t0, t_first; /* StartRun sent; first output byte (0 = none yet) */
  uint64_t bytes;
  int ended; /* the terminal run arrived */
  int failed;
  int done;
  void (*next)(struct run *r); /* called when the run is over */
};

static int run_start_msg(void *user, const uint8_t *msg, size_t len) {
  struct run *r = user;
  r->status = run_info(r->run_id, NULL, msg, len);
  return 0;
}

static int run_wait_msg(void *user, const uint8_t *msg, size_t len) {
  struct run *r = user;
  char id[64];
  r->status = run_info(id, &r->exit_code, msg, len);
  r->ended = 1;
  return 0;
}

static int run_follow_msg(void *user, const uint8_t *msg, size_t len) {
  struct run *r = user;
  pb_chunk *ch = prismq__runner__v1__output_chunk__unpack(NULL, len, msg);
  if (!ch) return 1;
  if (ch->data.len && !r->t_first) r->t_first = now_s();
  r->bytes += ch->data.len;
  if (ch->run) {
    r->status = (int)ch->run->status;
    r->exit_code = ch->run->exit_code;
    r->ended = 1;
  }
  prismq__runner__v1__output_chunk__free_unpacked(ch, NULL);
  return 0;
}

static void run_end_done(void *user, const gcl_status *st) {
  struct run *r = user;
  r->failed = st->code != GW_OK || !r->ended || !completed_ok(r->status, r->exit_code);
  if (r->failed)
    fprintf(stderr, "bench_client: run %s failed: %s %s\n", r->run_id, gw_status_name(st->code),
            st->message);
  r->done = 1;
  if (r->next) r->next(r);
}

static void run_start_done(void *user, const gcl_status *st) {
  struct run *r = user;
  if (st->code != GW_OK || r->status < 0) {
    fprintf(stderr, "bench_client: StartRun: %s %s\n", gw_status_name(st->code), st->message);
    r->failed = 1;
    r->done = 1;
    if (r->next) r->next(r);
    return;
  }
  uint8_t req[128];
  if (r->follow)
    call_start(r->c, PATH_STREAM, req, follow_req(req, sizeof req, r->run_id), run_follow_msg,
               run_end_done, r);
  else
    call_start(r->c, PATH_WAIT, req, wait_req(req, sizeof req, r->run_id), run_wait_msg,
               run_end_done, r);
}

static void run_go(struct run *r) {
  r->run_id[0] = '\0';
  r->status = -1;
  r->exit_code = -1;
  r->t_first = 0;
  r->bytes = 0;
  r->ended = r->failed = r->done = 0;
  r->t0 = now_s();
  call_start(r->c, PATH_START, g_start_req, g_start_len, run_start_msg, run_start_done, r);
}

/* ---- starts ----------------------------------------------------------------------- */

static long g_n, g_started, g_finished, g_failed;

static void starts_next(struct run *r) {
  g_finished++;
  g_failed += r->failed;
  if (g_started < g_n) {
    g_started++;
    run_go(r);
  }
}

static int mode_starts(long n, long inflight) {
  static struct run runs[MAX_INFLIGHT];
  gcl_conn *c = conn_new();
  g_n = n;
  double t0 = now_s();
  for (long i = 0; i < inflight && g_started < n; i++, g_started++) {
    runs[i].c = c;
    runs[i].next = starts_next;
    run_go(&runs[i]);
  }
  while (g_finished < n)
    if (event_base_loop(g_base, EVLOOP_ONCE) < 0) die("event loop failed");
  double s = now_s() - t0;
  printf("{\"runs\":%ld,\"seconds\":%.6f,\"runs_per_s\":%.1f,\"failed\":%ld}\n", n, s,
         (double)n / s, g_failed);
  gcl_conn_free(c);
  return g_failed ? 1 : 0;
}

/* ---- queue ------------------------------------------------------------------------ */

static void queue_done(void *user, const gcl_status *st) {
  struct run *r = user;
  g_finished++;
  if (st->code != GW_OK || r->status < 0) {
    fprintf(stderr, "bench_client: StartRun: %s %s\n", gw_status_name(st->code), st->message);
    g_failed++;
  }
  if (g_started < g_n) {
    g_started++;
    r->status = -1;
    call_start(r->c, PATH_START, g_start_req, g_start_len, run_start_msg, queue_done, r);
  }
}

static int mode_queue(long n) {
  static struct run runs[QUEUE_INFLIGHT];
  gcl_conn *c = conn_new();
  g_n = n;
  double t0 = now_s();
  for (long i = 0; i < QUEUE_INFLIGHT && g_started < n; i++, g_started++) {
    runs[i].c = c;
    runs[i].status = -1;
    call_start(c, PATH_START, g_start_req, g_start_len, run_start_msg, queue_done, &runs[i]);
  }
  while (g_finished < n)
    if (event_base_loop(g_base, EVLOOP_ONCE) < 0) die("event loop failed");
  printf("{\"runs\":%ld,\"seconds\":%.6f,\"failed\":%ld}\n", n, now_s() - t0, g_failed);
  gcl_conn_free(c);
  return g_failed ? 1 : 0;
}

/* ---- firstbyte and stream ----------------------------------------------------------- */

static int mode_firstbyte(long n) {
  double *lat = xmalloc((size_t)n * sizeof *lat);
  long failed = 0;
  struct run r = {0};
  r.c = conn_new();
  r.follow = 1;
  for (long k = 0; k < n; k++) {
    run_go(&r);
    loop_until(&r.done);
    if (!r.t_first) r.failed = 1;
    failed += r.failed;
    lat[k] = r.t_first ? (r.t_first - r.t0) * 1e6 : 0;
  }
  printf("{\"samples\":%ld,", n);
  print_latency(lat, n);
  printf(",\"failed\":%ld}\n", failed);
  free(lat);
  gcl_conn_free(r.c);
  return failed ? 1 : 0;
}

static int mode_stream(uint64_t want) {
  struct run r = {0};
  r.c = conn_new();
  r.follow = 1;
  run_go(&r);
  loop_until(&r.done);
  double s = now_s() - r.t0;
  int ok = !r.failed && r.bytes == want;
  printf("{\"bytes\":%llu,\"seconds\":%.6f,\"bytes_per_s\":%.0f,\"ok\":%d}\n",
         (unsigned long long)r.bytes, s, (double)r.bytes / s, ok);
  gcl_conn_free(r.c);
  return ok ? 0 : 1;
}

/* ---- followers: fanout, follow, stall ----------------------------------------------- */

struct follower {
  gcl_conn *c;
  uint64_t bytes;
  uint64_t msgs;
  XXH3_state_t *h;
  int ended, done, ok;
};

static long g_fdone, g_fmsg;

static int follower_msg(void *user, const uint8_t *msg, size_t len) {
  struct follower *f = user;
  pb_chunk *ch = prismq__runner__v1__output_chunk__unpack(NULL, len, msg);
  if (!ch) return 1;
  if (f->h && XXH3_64bits_update(f->h, ch->data.data, ch->data.len) != XXH_OK) die("XXH3 update");
  f->bytes += ch->data.len;
  if (f->msgs++ == 0) g_fmsg++;
  if (ch->run) f->ended = completed_ok((int)ch->run->status, ch->run->exit_code);
  prismq__runner__v1__output_chunk__free_unpacked(ch, NULL);
  return 0;
}

static void follower_done(void *user, const gcl_status *st) {
  struct follower *f = user;
  f->ok = st->code == GW_OK && f->ended;
  if (st->code != GW_OK && st->code != GW_CANCELLED)
    fprintf(stderr, "bench_client: follower: %s %s\n", gw_status_name(st->code), st->message);
  f->done = 1;
  g_fdone++;
}

static void start_one_done(void *user, const gcl_status *st) {
  struct run *r = user;
  if (st->code != GW_OK) r->status = -1;
  r->done = 1;
}

/* Starts the run of g_start_req and waits for its answer; fills run_id. */
static void start_one(char *run_id, gcl_conn *c) {
  struct run r = {0};
  r.c = c;
  r.status = -1;
  call_start(c, PATH_START, g_start_req, g_start_len, run_start_msg, start_one_done, &r);
  loop_until(&r.done);
  if (r.status < 0) die("StartRun failed");
  snprintf(run_id, 64, "%s", r.run_id);
}

static struct follower *followers_new(long n, long per_conn, const char *run_id, int hash) {
  struct follower *fs = calloc((size_t)n, sizeof *fs);
  if (!fs) die("out of memory");
  uint8_t req[128];
  size_t len = follow_req(req, sizeof req, run_id);
  for (long i = 0; i < n; i++) {
    fs[i].c = i % per_conn == 0 ? conn_new() : fs[i - 1].c;
    if (hash && (!(fs[i].h = XXH3_createState()) || XXH3_64bits_reset(fs[i].h) != XXH_OK))
      die("XXH3 state");
    call_start(fs[i].c, PATH_STREAM, req, len, follower_msg, follower_done, &fs[i]);
  }
  return fs;
}

static void followers_free(struct follower *fs, long n, long per_conn) {
  for (long i = 0; i < n; i++) {
    if (i % per_conn == 0) gcl_conn_free(fs[i].c);
    XXH3_freeState(fs[i].h);
  }
  free(fs);
}

/* Hashes the whole file at path; sets *size. */
static XXH64_hash_t file_hash(uint64_t *size, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open the fan-out file");
  XXH3_state_t *h = XXH3_createState();
  if (!h || XXH3_64bits_reset(h) != XXH_OK) die("XXH3 state");
  static unsigned char buf[1 << 20];
  size_t n;
  *size = 0;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
    XXH3_64bits_update(h, buf, n);
    *size += n;
  }
  fclose(f);
  XXH64_hash_t v = XXH3_64bits_digest(h);
  XXH3_freeState(h);
  return v;
}

static int mode_fanout(long n, const char *file) {
  uint64_t size;
  XXH64_hash_t want = file_hash(&size, file);
  gcl_conn *c = conn_new();
  char run_id[64];
  double t0 = now_s();
  start_one(run_id, c);
  struct follower *fs = followers_new(n, 1, run_id, 1);
  while (g_fdone < n)
    if (event_base_loop(g_base, EVLOOP_ONCE) < 0) die("event loop failed");
  double s = now_s() - t0;
  long exact = 0;
  for (long i = 0; i < n; i++)
    exact += fs[i].ok && fs[i].bytes == size && XXH3_64bits_digest(fs[i].h) == want;
  printf(
      "{\"followers\":%ld,\"bytes_each\":%llu,\"seconds\":%.6f,\"aggregate_bytes_per_s\":%.0f,"
      "\"exact\":%ld}\n",
      n, (unsigned long long)size, s, (double)size * (double)n / s, exact);
  followers_free(fs, n, 1);
  gcl_conn_free(c);
  return exact == n ? 0 : 1;
}

static void on_stdin(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  char buf[256];
  if (read(fd, buf, sizeof buf) <= 0) *(int *)arg = 1;
}

static int mode_follow(long n, long per_conn, const char *run_id) {
  struct follower *fs = followers_new(n, per_conn, run_id, 0);
  printf("{\"followers\":%ld,\"connections\":%ld}\n", n, (n + per_conn - 1) / per_conn);
  fflush(stdout);
  int eof = 0;
  struct event *ev = event_new(g_base, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, &eof);
  if (!ev || event_add(ev, NULL) != 0) die("cannot watch stdin");
  loop_until(&eof);
  event_free(ev);
  long early = g_fdone;
  followers_free(fs, n, per_conn);
  if (early) fprintf(stderr, "bench_client: %ld followers ended early\n", early);
  return early ? 1 : 0;
}

static int mode_stall(long n) {
  gcl_conn *c = conn_new();
  char run_id[64];
  start_one(run_id, c);
  struct follower *fs = followers_new(n, 1, run_id, 0);
  while (g_fmsg < n && g_fdone == 0)
    if (event_base_loop(g_base, EVLOOP_ONCE) < 0) die("event loop failed");
  printf("{\"run_id\":\"%s\",\"followers\":%ld}\n", run_id, n);
  fflush(stdout);
  char buf[256];
  while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
  }
  followers_free(fs, n, 1);
  gcl_conn_free(c);
  return g_fmsg < n ? 1 : 0;
}

/* ---- unary calls on a run table: getrun, listruns, ready ----------------------------- */

/* One blocking unary call; returns its latency in microseconds, or -1 (said on
 * stderr) if it did not end OK. *resp as gcl_unary gives it (freed by the caller). */
static double timed_unary(gcl_conn *c, const char *path, const uint8_t *req, size_t len,
                          uint8_t **resp, size_t *resp_len) {
  gcl_status st;
  *resp = NULL;
  *resp_len = 0;
  double t0 = now_s();
  if (gcl_unary(c, path, req, len, UNARY_TIMEOUT_MS, resp, resp_len, &st) != GW_OK) {
    fprintf(stderr, "bench_client: %s: %s %s\n", path, gw_status_name(st.code), st.message);
    return -1;
  }
  return (now_s() - t0) * 1e6;
}

/* Reads the run ids of FILE (one per line); sets *n. */
static char **read_ids(const char *file, long *n) {
  FILE *f = fopen(file, "r");
  if (!f) die("cannot open the run id file");
  char **ids = NULL, line[128];
  long cap = 0;
  *n = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (!*line) continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 1024;
      ids = realloc(ids, (size_t)cap * sizeof *ids);
      if (!ids) die("out of memory");
    }
    if (!(ids[(*n)++] = strdup(line))) die("out of memory");
  }
  fclose(f);
  if (!*n) die("no run ids in the file");
  return ids;
}

static int mode_getrun(long n, const char *file) {
  long nids, failed = 0;
  char **ids = read_ids(file, &nids);
  double *lat = xmalloc((size_t)n * sizeof *lat);
  gcl_conn *c = conn_new();
  for (long k = 0; k < n; k++) {
    Prismq__Runner__V1__GetRunRequest g = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
    uint8_t req[128], *resp;
    size_t len;
    g.run_id = ids[k % nids];
    if (prismq__runner__v1__get_run_request__get_packed_size(&g) > sizeof req)
      die("run id too long");
    lat[k] = timed_unary(c, PATH_GET, req, prismq__runner__v1__get_run_request__pack(&g, req),
                         &resp, &len);
    char id[64];
    if (lat[k] < 0 || run_info(id, NULL, resp, len) < 0 || strcmp(id, g.run_id) != 0) {
      if (lat[k] >= 0) fprintf(stderr, "bench_client: GetRun %s: not that run\n", g.run_id);
      failed++;
    }
    free(resp);
  }
  printf("{\"calls\":%ld,", n);
  print_latency(lat, n);
  printf(",\"failed\":%ld}\n", failed);
  free(lat);
  for (long i = 0; i < nids; i++) free(ids[i]);
  free(ids);
  gcl_conn_free(c);
  return failed ? 1 : 0;
}

/* Whether run r matches the filter of q. */
static int run_matches(const pb_run *r, const Prismq__Runner__V1__ListRunsRequest *q) {
  int ok = q->n_statuses == 0;
  for (size_t i = 0; i < q->n_statuses; i++) ok |= r->status == q->statuses[i];
  for (size_t i = 0; ok && i < q->n_labels; i++) {
    int found = 0;
    for (size_t j = 0; j < r->n_labels; j++)
      found |= strcmp(r->labels[j]->key, q->labels[i]->key) == 0 &&
               strcmp(r->labels[j]->value, q->labels[i]->value) == 0;
    ok = found;
  }
  return ok;
}

/* Checks a ListRuns answer against the request q; sets *runs and *more. Returns 0 if
 * every run matches the filter, newest first, else -1 (said on stderr). */
static int check_page(const uint8_t *msg, size_t len, const Prismq__Runner__V1__ListRunsRequest *q,
                      size_t *runs, int *more) {
  Prismq__Runner__V1__ListRunsResponse *r =
      prismq__runner__v1__list_runs_response__unpack(NULL, len, msg);
  if (!r) {
    fprintf(stderr, "bench_client: ListRuns: the answer does not decode\n");
    return -1;
  }
  int ret = 0;
  for (size_t i = 0; i < r->n_runs && !ret; i++)
    if (!run_matches(r->runs[i], q) ||
        (i && strcmp(r->runs[i - 1]->run_id, r->runs[i]->run_id) <= 0)) {
      fprintf(stderr,
              "bench_client: ListRuns: run %s does not match the filter or is out of order\n",
              r->runs[i]->run_id);
      ret = -1;
    }
  *runs = r->n_runs;
  *more = r->next_page_token[0] != '\0';
  prismq__runner__v1__list_runs_response__free_unpacked(r, NULL);
  return ret;
}

/* args: status=S, label=KEY=VALUE, page_size=P. */
static int mode_listruns(long n, int nargs, char **args) {
  Prismq__Runner__V1__ListRunsRequest q = PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT;
  Prismq__Runner__V1__RunStatus statuses[MAX_FILTER];
  Prismq__Runner__V1__ListRunsRequest__LabelsEntry ents[MAX_FILTER], *ptrs[MAX_FILTER];
  q.statuses = statuses;
  q.labels = ptrs;
  for (int i = 0; i < nargs; i++) {
    char *a = args[i], *eq;
    if (strncmp(a, "status=", 7) == 0 && q.n_statuses < MAX_FILTER) {
      statuses[q.n_statuses++] = (Prismq__Runner__V1__RunStatus)count_arg(a + 7, 7);
    } else if (strncmp(a, "label=", 6) == 0 && (eq = strchr(a + 6, '=')) &&
               q.n_labels < MAX_FILTER) {
      *eq = '\0';
      ents[q.n_labels] = (Prismq__Runner__V1__ListRunsRequest__LabelsEntry)
          PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__LABELS_ENTRY__INIT;
      ents[q.n_labels].key = a + 6;
      ents[q.n_labels].value = eq + 1;
      ptrs[q.n_labels] = &ents[q.n_labels];
      q.n_labels++;
    } else if (strncmp(a, "page_size=", 10) == 0) {
      q.page_size = (uint32_t)count_arg(a + 10, 100000);
    } else {
      die("listruns filters are status=S, label=KEY=VALUE and page_size=P");
    }
  }
  size_t len = prismq__runner__v1__list_runs_request__get_packed_size(&q);
  uint8_t *req = xmalloc(len);
  prismq__runner__v1__list_runs_request__pack(&q, req);
  double *lat = xmalloc((size_t)n * sizeof *lat);
  gcl_conn *c = conn_new();
  long failed = 0;
  size_t runs = 0, bytes = 0;
  int more = 0;
  for (long k = 0; k < n; k++) {
    uint8_t *resp;
    lat[k] = timed_unary(c, PATH_LIST, req, len, &resp, &bytes);
    if (lat[k] < 0 || check_page(resp, bytes, &q, &runs, &more) < 0) failed++;
    free(resp);
  }
  printf("{\"calls\":%ld,", n);
  print_latency(lat, n);
  printf(",\"runs\":%zu,\"bytes\":%zu,\"more\":%d,\"failed\":%ld}\n", runs, bytes, more, failed);
  free(lat);
  free(req);
  gcl_conn_free(c);
  return failed ? 1 : 0;
}

static int mode_ready(long timeout_ms) {
  double deadline = now_s() + (double)timeout_ms / 1000;
  for (long attempts = 1;; attempts++) {
    gcl_conn *c = conn_new();
    uint8_t *resp = NULL;
    size_t len = 0;
    int ok = gcl_unary(c, PATH_HEALTH, NULL, 0, 1000, &resp, &len, NULL) == GW_OK;
    double t = now_s();
    if (ok) {
      Grpc__Health__V1__HealthCheckResponse *h =
          grpc__health__v1__health_check_response__unpack(NULL, len, resp);
      ok = h && h->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
      if (h) grpc__health__v1__health_check_response__free_unpacked(h, NULL);
    }
    free(resp);
    gcl_conn_free(c);
    if (ok) {
      printf("{\"attempts\":%ld,\"ok_at\":%.6f}\n", attempts, t);
      return 0;
    }
    if (t > deadline) {
      fprintf(stderr, "bench_client: no SERVING answer within %ld ms\n", timeout_ms);
      return 1;
    }
    usleep(1000);
  }
}

/* ---- command line ----------------------------------------------------------------- */

static int run_mode(int argc, char **argv) {
  const char *mode = argv[2];
  if (strcmp(mode, "starts") == 0 && argc >= 6) {
    start_req_init(argv[5], argc - 6, argv + 6);
    return mode_starts(count_arg(argv[3], 100000000), count_arg(argv[4], MAX_INFLIGHT));
  }
  if (strcmp(mode, "firstbyte") == 0 && argc >= 5) {
    start_req_init(argv[4], argc - 5, argv + 5);
    return mode_firstbyte(count_arg(argv[3], 10000000));
  }
  if (strcmp(mode, "stream") == 0 && argc >= 5) {
    start_req_init(argv[4], argc - 5, argv + 5);
    return mode_stream((uint64_t)strtoull(argv[3], NULL, 10));
  }
  if (strcmp(mode, "fanout") == 0 && argc >= 6) {
    start_req_init(argv[5], argc - 6, argv + 6);
    return mode_fanout(count_arg(argv[3], 100000), argv[4]);
  }
  if (strcmp(mode, "queue") == 0 && argc >= 5) {
    start_req_init(argv[4], argc - 5, argv + 5);
    return mode_queue(count_arg(argv[3], 100000000));
  }
  if (strcmp(mode, "follow") == 0 && argc == 6)
    return mode_follow(count_arg(argv[3], 1000000), count_arg(argv[4], 100000), argv[5]);
  if (strcmp(mode, "stall") == 0 && argc >= 5) {
    start_req_init(argv[4], argc - 5, argv + 5);
    return mode_stall(count_arg(argv[3], 100000));
  }
  if (strcmp(mode, "getrun") == 0 && argc == 5)
    return mode_getrun(count_arg(argv[3], 100000000), argv[4]);
  if (strcmp(mode, "listruns") == 0 && argc >= 4)
    return mode_listruns(count_arg(argv[3], 100000000), argc - 4, argv + 4);
  if (strcmp(mode, "ready") == 0 && argc == 4) return mode_ready(count_arg(argv[3], 3600000));
  die("usage: bench_client TARGET "
      "starts|firstbyte|stream|fanout|queue|follow|stall|getrun|listruns|ready ..."
      " (see the source)");
  return 2;
}

int main(int argc, char **argv) {
  const char *tls_ca = NULL;
  if (argc > 2 && strcmp(argv[1], "--tls-ca") == 0) {
    tls_ca = argv[2];
    argc -= 2;
    argv += 2;
  }
  if (argc < 3) die("usage: bench_client [--tls-ca FILE] TARGET MODE ... (see the source)");
  g_target = argv[1];
  if (tls_ca || strncmp(g_target, "tls://", 6) == 0) {
    tlsctx_client_opts to = TLSCTX_CLIENT_OPTS_INIT;
    char err[512];
    to.ca_file = tls_ca;
    if (tlsctx_client_new(&g_tls, &to, err, sizeof err) < 0) die(err);
  }
  g_base = event_base_new();
  if (!g_base) die("event_base_new failed");
  int rc = run_mode(argc, argv);
  free(g_start_req);
  SSL_CTX_free(g_tls);
  event_base_free(g_base);
  libevent_global_shutdown();
  return rc;
}
