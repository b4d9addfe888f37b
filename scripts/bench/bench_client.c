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
#include "grpcwire.h"
#include "tlsctx.h"
#include "prismq/runner/v1/runner.pb-c.h"

#define PATH_START "/prismq.runner.v1.Runner/StartRun"
#define PATH_WAIT "/prismq.runner.v1.Runner/WaitRun"
#define PATH_STREAM "/prismq.runner.v1.Runner/StreamOutput"
#define CALL_TIMEOUT_MS 600000
#define MAX_PARAMS 16
#define MAX_INFLIGHT 1024
#define QUEUE_INFLIGHT 100

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

static void call_start(gcl_conn *c, const char *path, const uint8_t *req, size_t len, gcl_msg_fn on_msg,
                       gcl_done_fn on_done, void *user) {
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

static void loop_until(const int *flag) {
  while (!*flag)
    if (event_base_loop(g_base, EVLOOP_ONCE) < 0) die("event loop failed");
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* ---- one run: StartRun, then a WaitRun or a follower ------------------------------ */

/* One run in flight, as the starts, firstbyte and stream modes drive it. */
struct run {
  gcl_conn *c;
  int follow;        /* then a StreamOutput follow, else a WaitRun */
  char run_id[64];
  int status;        /* of the StartRun answer, then of the terminal run */
  int exit_code;
  double t0, t_first; /* StartRun sent; first output byte (0 = none yet) */
  uint64_t bytes;
  int ended;          /* the terminal run arrived */
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
  if (r->failed) fprintf(stderr, "bench_client: run %s failed: %s %s\n", r->run_id, gw_status_name(st->code), st->message);
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
    call_start(r->c, PATH_STREAM, req, follow_req(req, sizeof req, r->run_id), run_follow_msg, run_end_done, r);
  else
    call_start(r->c, PATH_WAIT, req, wait_req(req, sizeof req, r->run_id), run_wait_msg, run_end_done, r);
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
  printf("{\"runs\":%ld,\"seconds\":%.6f,\"runs_per_s\":%.1f,\"failed\":%ld}\n", n, s, (double)n / s, g_failed);
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
  double sum = 0;
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
    sum += lat[k];
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  long p99 = (n * 99) / 100 < n ? (n * 99) / 100 : n - 1;
  printf("{\"samples\":%ld,\"median_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,\"failed\":%ld}\n", n, lat[n / 2],
         lat[p99], sum / (double)n, failed);
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
  printf("{\"bytes\":%llu,\"seconds\":%.6f,\"bytes_per_s\":%.0f,\"ok\":%d}\n", (unsigned long long)r.bytes, s,
         (double)r.bytes / s, ok);
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
  if (st->code != GW_OK && st->code != GW_CANCELLED) fprintf(stderr, "bench_client: follower: %s %s\n", gw_status_name(st->code), st->message);
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
    if (hash && (!(fs[i].h = XXH3_createState()) || XXH3_64bits_reset(fs[i].h) != XXH_OK)) die("XXH3 state");
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
  for (long i = 0; i < n; i++) exact += fs[i].ok && fs[i].bytes == size && XXH3_64bits_digest(fs[i].h) == want;
  printf("{\"followers\":%ld,\"bytes_each\":%llu,\"seconds\":%.6f,\"aggregate_bytes_per_s\":%.0f,\"exact\":%ld}\n", n,
         (unsigned long long)size, s, (double)size * (double)n / s, exact);
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

/* ---- command line ----------------------------------------------------------------- */

static long count_arg(const char *s, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 1 || v > max) die("bad count argument");
  return v;
}

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
  die("usage: bench_client TARGET starts|firstbyte|stream|fanout|queue|follow|stall ... (see the source)");
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
