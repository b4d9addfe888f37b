/* Unit tests for server/scheduler, through its public API: a real run table and output
 * files in a temporary data directory, configurations from YAML text, and a libevent
 * loop driven until what a test waits for holds (testloop.h's LOOP_UNTIL, each wait
 * bounded). The modules run this binary itself, re-executed with "--child=<mode>"
 * (libuv test-spawn style), so every run does something known: print, exit N, die of a
 * signal, write a long stderr, hold until SIGUSR1, ignore SIGTERM, fork a grandchild,
 * print its environment or working directory.
 *
 * Covered: the life of a run (RUNNING, then COMPLETED / FAILED with exit code, signal
 * and stderr tail, output stored, or counted as lost when it cannot be), request
 * errors, the global and per-module limits and the queue's order, the queue limits (per
 * identity, global, none), idempotency keys, cancel (queued, running, SIGKILL after the
 * grace, while timing out), timeouts (the request may shorten the module's, never
 * lengthen it), watchers (from the loop for what already happened, unwatching inside a
 * callback), live values in list and packed answers, replay of finished runs (more than
 * the ring of open logs), progress (from a pattern and a descriptor: live, persisted at
 * the end, each update after its line), the child's environment and directory, dry-run, a
 * configuration swap, the three ways to stop (shutdown waiting, shutdown cancelling,
 * sched_free), and recovery: a clean
 * restart requeues in order (or fails runs that no longer fit), a crash (a forked
 * "server" SIGKILLed with runs RUNNING) leaves LOST runs whose processes are killed at
 * the next start (through the cgroup for what left the process group), unless the
 * recorded pid is another process now or from before this boot.
 *
 * Spawning tests run in async (pidfd) and threaded mode, some in a cgroup root of
 * their own too where cgroup v2 is usable (not under valgrind). The test process is a
 * child subreaper, so that the processes of a crashed "server" come back to it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cgroup.h"
#include "config.h"
#include "grpcwire.h"
#include "log.h"
#include "outlog.h"
#include "proc.h"
#include "runtab.h"
#include "scheduler.h"
#include "utf8.h"
#include "../testloop.h"

#define ST(x)     PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_##x
#define READY     "ready\n"
#define READY_LEN (sizeof READY - 1)
#define TERM_NOTE "term\n"
#define GRACE_MS  1000 /* the fixture's default grace (sched_opts.default_grace_ms) */
#define TIMED_MS  300  /* module "timed"'s timeout */
#define NOPROG    "/nonexistent/prismq-test-program"

static char g_self[PATH_MAX];
static int g_have_cgroups;

/* ---- the child side ------------------------------------------------------------ */

static void on_usr1_exit(int sig) {
  (void)sig;
  _exit(0);
}

static void on_term_note(int sig) {
  (void)sig;
  ssize_t w = write(STDOUT_FILENO, TERM_NOTE, sizeof TERM_NOTE - 1);
  (void)w;
}

/* Installs the handlers of a held child, then says it is ready and waits: SIGUSR1 makes
 * it exit 0; with `stubborn`, SIGTERM only prints "term". */
static void hold(int stubborn) {
  signal(SIGUSR1, on_usr1_exit);
  if (stubborn) {
    struct sigaction sa = {.sa_handler = on_term_note, .sa_flags = SA_RESTART};
    sigaction(SIGTERM, &sa, NULL);
  }
  dprintf(STDOUT_FILENO, READY);
  for (;;) pause();
}

/* Ends a "progress" child: a last progress line without a newline, then exit 0. */
static void on_usr1_progress_exit(int sig) {
  (void)sig;
  static const char last[] = "PROGRESS 3/3 end";
  ssize_t w = write(STDOUT_FILENO, last, sizeof last - 1);
  _exit(w < 0);
}

/* Reports progress on stdout and on PRISMQ_PROGRESS_FD, then holds until SIGUSR1. */
static void progress_child(void) {
  const char *fd = getenv("PRISMQ_PROGRESS_FD");
  signal(SIGUSR1, on_usr1_progress_exit);
  dprintf(STDOUT_FILENO, "start\nPROGRESS 1/3 one\n");
  if (!fd || dprintf(atoi(fd), "2/3 two\nnot progress\n") < 0) _exit(107);
  dprintf(STDOUT_FILENO, READY);
  for (;;) pause();
}

static int child_main(const char *mode, const char *arg) {
  if (!strcmp(mode, "exit")) _exit(atoi(arg));
  if (!strcmp(mode, "print")) {
    dprintf(STDOUT_FILENO, "%s\n", arg);
    _exit(0);
  }
  if (!strcmp(mode, "raise")) {
    raise(atoi(arg));
    _exit(0);
  }
  if (!strcmp(mode, "errtail")) {
    /* Many lines, then one with a byte that is not UTF-8. */
    for (int i = 0; i < atoi(arg); i++) dprintf(STDERR_FILENO, "line %03d\n", i);
    dprintf(STDERR_FILENO, "bad \xff end\n");
    _exit(1);
  }
  if (!strcmp(mode, "hold")) hold(0);
  if (!strcmp(mode, "progress")) progress_child();
  if (!strcmp(mode, "burst")) {
    /* Progress lines, atoi(arg) of them, in one write. */
    char buf[8192];
    int n = 0, count = atoi(arg);
    for (int i = 1; i <= count && n < (int)sizeof buf - 32; i++)
      n += snprintf(buf + n, sizeof buf - (size_t)n, "PROGRESS %d/%d\n", i, count);
    _exit(write(STDOUT_FILENO, buf, (size_t)n) == n ? 0 : 1);
  }
  if (!strcmp(mode, "stubborn")) hold(1);
  if (!strcmp(mode, "tree")) {
    /* A grandchild that ignores SIGTERM, in the run's process group, or ("escape") in a
     * session of its own. */
    pid_t g = fork();
    if (g < 0) _exit(105);
    if (g == 0) {
      if (!strcmp(arg, "escape") && setsid() < 0) _exit(109);
      signal(SIGTERM, SIG_IGN);
      for (;;) pause();
    }
    dprintf(STDOUT_FILENO, "gpid=%d\n", (int)g);
    hold(0);
  }
  if (!strcmp(mode, "env")) {
    for (char **e = environ; *e; e++) dprintf(STDOUT_FILENO, "%s\n", *e);
    _exit(0);
  }
  if (!strcmp(mode, "cwd")) {
    char buf[PATH_MAX];
    if (!getcwd(buf, sizeof buf)) _exit(106);
    dprintf(STDOUT_FILENO, "%s\n", buf);
    _exit(0);
  }
  _exit(100);
}

/* ---- configuration --------------------------------------------------------------- */

struct lim {
  unsigned max_concurrent, max_queued, per_identity;
};
#define LIM(c, q, p) (&(const struct lim){(c), (q), (p)})
#define LIM_DEFAULT  LIM(4, 100, 0)

/* A module running this binary as "--child={mode}" "{arg}", with `attrs` (YAML lines
 * of the module, indented by 4) before its argv. */
static size_t put_module(char *buf, size_t cap, const char *id, const char *attrs) {
  int n = snprintf(buf, cap,
                   "  - id: %s\n%s"
                   "    argv: [\"%s\", \"--child={mode}\", \"{arg}\"]\n"
                   "    parameters:\n"
                   "      - {name: mode, required: true, pattern: \"[a-z]+\"}\n"
                   "      - {name: arg, default: \"0\"}\n",
                   id, attrs, g_self);
  assert_true(n > 0 && (size_t)n < cap);
  return (size_t)n;
}

/* The test configuration: limits `l`, and the modules
 *   child  the test binary, no limit of its own
 *   solo   the same, max_concurrent 1
 *   timed  the same, timeout_ms TIMED_MS
 *   noprog a program that does not exist
 * then `extra` (more module entries, may be NULL). */
static config *load_config(const struct lim *l, const char *extra) {
  char yaml[16384];
  size_t n =
      (size_t)snprintf(yaml, sizeof yaml,
                       "limits: {max_concurrent: %u, max_queued: %u, max_queued_per_identity: %u}\n"
                       "modules:\n",
                       l->max_concurrent, l->max_queued, l->per_identity);
  n += put_module(yaml + n, sizeof yaml - n, "child", "");
  n += put_module(yaml + n, sizeof yaml - n, "solo", "    max_concurrent: 1\n");
  n += put_module(yaml + n, sizeof yaml - n, "timed", "    timeout_ms: 300\n");
  n += (size_t)snprintf(yaml + n, sizeof yaml - n, "  - id: noprog\n    argv: [\"" NOPROG "\"]\n%s",
                        extra ? extra : "");
  assert_true(n < sizeof yaml);
  config *c = NULL;
  char err[512] = "";
  if (config_load_string(&c, yaml, n, "t.yaml", err, sizeof err) != 0)
    fail_msg("config: %s\n%s", err, yaml);
  return c;
}

/* ---- the fixture ----------------------------------------------------------------- */

typedef struct tmode {
  enum sched_mode mode;
  int cgroup; /* runs in cgroups under a root for the test's data directory */
} tmode;
static tmode M_ASYNC = {SCHED_ASYNC, 0}, M_THREADED = {SCHED_THREADED, 0}, M_CG = {SCHED_ASYNC, 1},
             M_DRY = {SCHED_DRY_RUN, 0};

struct fx {
  char dir[64];
  const tmode *m;
  struct event_base *base;
  struct testloop tl;
  runtab *rt;
  cgroup_root *cg;
  sched *s;
  int idle;          /* on_idle calls */
  uint32_t grace_ms; /* the scheduler's default grace; 0: GRACE_MS */
  pid_t strays[8];   /* processes outside any run that teardown kills and reaps (0: done) */
};

static void stray_add(struct fx *f, pid_t pid) {
  for (size_t i = 0; i < sizeof f->strays / sizeof *f->strays; i++)
    if (!f->strays[i]) {
      f->strays[i] = pid;
      return;
    }
  fail_msg("too many strays");
}

/* Kills and reaps what is left of the strays (a failed test's), or forgets a reaped one. */
static void strays_end(struct fx *f, pid_t only_forget) {
  for (size_t i = 0; i < sizeof f->strays / sizeof *f->strays; i++) {
    if (!f->strays[i]) continue;
    if (only_forget) {
      if (f->strays[i] == only_forget) f->strays[i] = 0;
      continue;
    }
    kill(f->strays[i], SIGKILL);
    waitpid(f->strays[i], NULL, 0);
    f->strays[i] = 0;
  }
}

/* The data directory made as prismqd makes it, then its run table opened. */
static void fx_open_runtab(struct fx *f) {
  char path[128], err[512] = "";
  if (sched_init_data_dir(f->dir, err, sizeof err) != 0) fail_msg("data dir: %s", err);
  snprintf(path, sizeof path, "%s/runs.db", f->dir);
  if (runtab_open(&f->rt, path, err, sizeof err) != 0) fail_msg("runtab_open: %s", err);
}

static void fx_open_cgroups(struct fx *f) {
  char err[512] = "";
  if (cgroup_root_open(&f->cg, f->base, "auto", f->dir, err, sizeof err) != 0)
    fail_msg("cgroups: %s", err);
}

static sched_opts fx_opts(struct fx *f, config *cfg) {
  sched_opts o = SCHED_OPTS_INIT;
  o.cfg = cfg;
  o.rt = f->rt;
  o.data_dir = f->dir;
  o.mode = f->m->mode;
  o.default_grace_ms = f->grace_ms ? f->grace_ms : GRACE_MS;
  o.orphan_kill_ms = 500;
  o.cg = f->cg;
  return o;
}

/* Creates f->s (the run table opened first if need be) with the test configuration. */
static void fx_sched(struct fx *f, const struct lim *l, const char *extra) {
  if (!f->rt) fx_open_runtab(f);
  if (f->m->cgroup && !f->cg) fx_open_cgroups(f);
  config *cfg = load_config(l, extra);
  sched_opts o = fx_opts(f, cfg);
  char err[512] = "";
  int rc = sched_new(&f->s, f->base, &o, err, sizeof err);
  config_free(cfg); /* the scheduler holds its own reference */
  if (rc != 0) fail_msg("sched_new: %d %s", rc, err);
}

/* True once this process has no child left, not even a zombie. */
static int no_children(void) {
  siginfo_t si;
  return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD;
}

/* Frees the scheduler, then runs the loop until its processes (SIGKILLed) are reaped:
 * proc reaps a freed process from the loop. */
static void fx_close_sched(struct fx *f) {
  sched_free(f->s);
  f->s = NULL;
  LOOP_UNTIL(&f->tl, no_children());
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->m = *state ? *state : &M_ASYNC;
  strcpy(f->dir, "/tmp/test_scheduler.XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  if (!(f->base = testloop_base_new())) return -1;
  testloop_init(&f->tl, f->base);
  *state = f;
  return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static int teardown(void **state) {
  struct fx *f = *state;
  strays_end(f, 0);
  if (f->s) fx_close_sched(f);
  runtab_free(f->rt);
  cgroup_root_free(f->cg);
  testloop_fini(&f->tl);
  event_base_free(f->base);
  nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* ---- requests and runs ----------------------------------------------------------- */

static void run_free(sched_run *r) { prismq__runner__v1__run__free_unpacked(r, NULL); }

static sched_run *run_dup(const sched_run *r) {
  size_t n = prismq__runner__v1__run__get_packed_size(r);
  uint8_t *buf = malloc(n ? n : 1);
  assert_non_null(buf);
  prismq__runner__v1__run__pack(r, buf);
  sched_run *c = prismq__runner__v1__run__unpack(NULL, n, buf);
  free(buf);
  assert_non_null(c);
  return c;
}

struct req {
  const char *module; /* default "child" */
  const char *owner;  /* default "" */
  const char *request_id;
  uint32_t timeout_ms;
  const char *kv[8];     /* parameter names and values, NULL-terminated */
  const char *labels[8]; /* label keys and values, NULL-terminated */
};

/* sched_start of `q`, bad parameters reported to `bad` (may be NULL); *out is untouched
 * unless it returns 0 or 1. */
static int start_report(struct fx *f, const struct req *q, sched_run **out, param_report *bad,
                        char *err, size_t errlen) {
  Prismq__Runner__V1__StartRunRequest req = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  Prismq__Runner__V1__StartRunRequest__ParametersEntry e[4], *ep[4];
  size_t n = 0;
  for (; q->kv[2 * n]; n++) {
    assert_true(n < 4);
    e[n] = (Prismq__Runner__V1__StartRunRequest__ParametersEntry)
        PRISMQ__RUNNER__V1__START_RUN_REQUEST__PARAMETERS_ENTRY__INIT;
    e[n].key = (char *)q->kv[2 * n];
    e[n].value = (char *)q->kv[2 * n + 1];
    ep[n] = &e[n];
  }
  req.module_id = (char *)(q->module ? q->module : "child");
  req.parameters = ep;
  req.n_parameters = n;
  if (q->request_id) req.request_id = (char *)q->request_id;
  req.timeout_ms = q->timeout_ms;
  Prismq__Runner__V1__StartRunRequest__LabelsEntry l[4], *lp[4];
  size_t nl = 0;
  for (; q->labels[2 * nl]; nl++) {
    assert_true(nl < 4);
    l[nl] = (Prismq__Runner__V1__StartRunRequest__LabelsEntry)
        PRISMQ__RUNNER__V1__START_RUN_REQUEST__LABELS_ENTRY__INIT;
    l[nl].key = (char *)q->labels[2 * nl];
    l[nl].value = (char *)q->labels[2 * nl + 1];
    lp[nl] = &l[nl];
  }
  req.labels = lp;
  req.n_labels = nl;
  err[0] = '\0';
  return sched_start(f->s, &req, q->owner ? q->owner : "", out, bad, err, errlen);
}

static int start_req(struct fx *f, const struct req *q, sched_run **out, char *err, size_t errlen) {
  return start_report(f, q, out, NULL, err, errlen);
}

#define REQ(...) (&(const struct req){__VA_ARGS__})
#define KV(...)  .kv = {__VA_ARGS__, NULL}

/* Starts a run that must be taken (new); returns the answer. */
static sched_run *start_q(struct fx *f, const struct req *q) {
  sched_run *r = NULL;
  char err[512];
  int rc = start_req(f, q, &r, err, sizeof err);
  if (rc != 0) fail_msg("sched_start: %d %s", rc, err);
  assert_non_null(r);
  return r;
}

static sched_run *start_mode(struct fx *f, const char *module, const char *mode, const char *arg) {
  return start_q(f, REQ(.module = module, KV("mode", mode, "arg", arg)));
}

static sched_run *get(struct fx *f, const char *id) {
  sched_run *r = NULL;
  assert_int_equal(sched_get(f->s, id, &r), 0);
  return r;
}

static int status_of(struct fx *f, const char *id) {
  sched_run *r = get(f, id);
  int st = r->status;
  run_free(r);
  return st;
}

static uint64_t stdout_bytes(struct fx *f, const char *id) {
  sched_run *r = get(f, id);
  uint64_t n = r->stdout_bytes;
  run_free(r);
  return n;
}

static int is_terminal(int st) { return st != ST(QUEUED) && st != ST(RUNNING) && st != 0; }

struct waiter {
  int fired;
  sched_run *run;     /* the last state reported (a copy) */
  sched *s;           /* set: the callback also reads the run back (sched_get) ... */
  int got_status;     /* ... and notes its status here */
  sched_watch *other; /* set: the callback unwatches this one */
};

static void on_watch(void *arg, const sched_run *run) {
  struct waiter *w = arg;
  w->fired++;
  run_free(w->run);
  w->run = run_dup(run);
  if (w->s) {
    sched_run *back = NULL;
    assert_int_equal(sched_get(w->s, run->run_id, &back), 0);
    w->got_status = back->status;
    run_free(back);
  }
  if (w->other) sched_unwatch(w->other);
}

/* Waits for the run to be terminal (a SCHED_EV_TERMINAL watch); returns it (free it). */
static sched_run *wait_terminal(struct fx *f, const char *id) {
  struct waiter w = {0};
  sched_watch *h = NULL;
  assert_int_equal(sched_watch_run(f->s, &h, id, SCHED_EV_TERMINAL, on_watch, &w), 0);
  LOOP_UNTIL(&f->tl, w.fired);
  assert_int_equal(w.fired, 1);
  assert_true(is_terminal(w.run->status));
  return w.run;
}

static void wait_status(struct fx *f, const char *id, int st) {
  LOOP_UNTIL(&f->tl, status_of(f, id) == st);
}

/* Waits until the run has written `n` bytes on stdout. */
static void wait_stdout(struct fx *f, const char *id, uint64_t n) {
  LOOP_UNTIL(&f->tl, stdout_bytes(f, id) >= n);
}

/* Lets a held run exit 0, once it is ready for it. */
static void release(struct fx *f, const char *id) {
  wait_stdout(f, id, READY_LEN);
  sched_run *r = get(f, id);
  assert_int_equal(r->status, ST(RUNNING));
  assert_true(r->pid > 0);
  assert_int_equal(kill(r->pid, SIGUSR1), 0);
  run_free(r);
}

/* Releases a held run and waits for it to complete. */
static void release_done(struct fx *f, const char *id) {
  release(f, id);
  sched_run *r = wait_terminal(f, id);
  assert_int_equal(r->status, ST(COMPLETED));
  run_free(r);
}

/* The run's output on `stream` (0 both) as a string (free it); NULL if it has none. */
static char *output_of(struct fx *f, const char *id, int stream) {
  outlog_reader *rd = (outlog_reader *)f;
  assert_int_equal(sched_open_output(f->s, id, 0, stream, &rd), 0);
  if (!rd) return NULL;
  struct evbuffer *b = evbuffer_new(), *text = evbuffer_new();
  assert_true(b && text);
  while (outlog_reader_read(rd, b, 1u << 20) > 0) {
  }
  outlog_reader_free(rd);
  uint8_t *msg;
  size_t len;
  while (gw_frame_next(b, 1u << 20, &msg, &len) == GW_FRAME_MSG) {
    Prismq__Runner__V1__OutputChunk *c = prismq__runner__v1__output_chunk__unpack(NULL, len, msg);
    assert_non_null(c);
    if (stream) assert_int_equal(c->stream, stream);
    evbuffer_add(text, c->data.data, c->data.len);
    prismq__runner__v1__output_chunk__free_unpacked(c, NULL);
    free(msg);
  }
  assert_int_equal(evbuffer_get_length(b), 0);
  evbuffer_add(text, "", 1);
  char *s = strdup((const char *)evbuffer_pullup(text, -1));
  assert_non_null(s);
  evbuffer_free(b);
  evbuffer_free(text);
  return s;
}

static void assert_output(struct fx *f, const char *id, int stream, const char *want) {
  char *got = output_of(f, id, stream);
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the life of a run ----------------------------------------------------------- */

/* A run that can start starts inside sched_start (the answer is RUNNING), records its
 * parameters in declared order, completes with its output stored; exit codes, signals
 * and an empty stderr make FAILED runs with the matching message. In a cgroup, the run
 * names its cgroup, which is gone once the run is. */
static void test_run_outcomes(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *r = start_q(f, REQ(.owner = "alice", KV("arg", "hello", "mode", "print"),
                                .labels = {"team", "a", "x", "1", "team", "b", NULL}));
  assert_int_equal(r->status, ST(RUNNING));
  assert_true(r->pid > 0);
  assert_string_equal(r->module_id, "child");
  assert_string_equal(r->owner, "alice");
  assert_true(r->created_at_ms > 0 && r->started_at_ms >= r->created_at_ms);
  assert_int_equal(r->n_parameters, 2);
  assert_string_equal(r->parameters[0]->key, "mode");
  assert_string_equal(r->parameters[0]->value, "print");
  assert_string_equal(r->parameters[1]->key, "arg");
  assert_string_equal(r->parameters[1]->value, "hello");
  /* Labels: the last of a repeated key wins, as in a protobuf map. */
  assert_int_equal(r->n_labels, 2);
  assert_string_equal(r->labels[0]->key, "team");
  assert_string_equal(r->labels[0]->value, "b");
  assert_string_equal(r->labels[1]->key, "x");
  assert_string_equal(r->labels[1]->value, "1");
  char cg[PATH_MAX];
  snprintf(cg, sizeof cg, "%s", r->cgroup);
  if (f->m->cgroup)
    assert_int_equal(access(cg, F_OK), 0);
  else
    assert_string_equal(cg, "");
  assert_int_equal(sched_active(f->s), 1);

  sched_run *done = wait_terminal(f, r->run_id);
  assert_int_equal(done->status, ST(COMPLETED));
  assert_int_equal(done->exit_code, 0);
  assert_int_equal(done->term_signal, 0);
  assert_string_equal(done->error_message, "");
  assert_int_equal(done->stdout_bytes, 6);
  assert_int_equal(done->stderr_bytes, 0);
  assert_true(done->finished_at_ms >= done->started_at_ms);
  assert_int_equal(done->pid, r->pid);
  assert_output(f, r->run_id, OUTLOG_STDOUT, "hello\n");
  assert_output(f, r->run_id, 0, "hello\n");
  assert_int_equal(sched_active(f->s), 0);
  if (f->m->cgroup) LOOP_UNTIL(&f->tl, access(cg, F_OK) != 0);
  /* What the table holds is the final run. */
  sched_run *stored = NULL;
  assert_int_equal(runtab_get(f->rt, r->run_id, &stored), 0);
  assert_int_equal(stored->status, ST(COMPLETED));
  assert_int_equal(stored->stdout_bytes, 6);
  run_free(stored);
  run_free(done);
  run_free(r);

  r = start_mode(f, NULL, "exit", "3");
  done = wait_terminal(f, r->run_id);
  assert_int_equal(done->status, ST(FAILED));
  assert_int_equal(done->exit_code, 3);
  assert_int_equal(done->term_signal, 0);
  assert_string_equal(done->error_message, "exited with code 3");
  assert_null(output_of(f, r->run_id, 0)); /* wrote nothing: no output file */
  run_free(done);
  run_free(r);

  r = start_mode(f, NULL, "raise", "10");
  done = wait_terminal(f, r->run_id);
  char want[128];
  snprintf(want, sizeof want, "killed by signal %d (%s)", SIGUSR1, strsignal(SIGUSR1));
  assert_int_equal(done->status, ST(FAILED));
  assert_int_equal(done->term_signal, SIGUSR1);
  assert_string_equal(done->error_message, want);
  run_free(done);
  run_free(r);
  assert_int_equal(sched_total(f->s), 3);
}

/* A failed run's error_message is the end of its stderr: whole lines (cut at a line
 * start when more than 500 bytes were written), no trailing newline, valid UTF-8. */
static void test_stderr_tail(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *r = start_mode(f, NULL, "errtail", "100");
  sched_run *done = wait_terminal(f, r->run_id);
  assert_int_equal(done->status, ST(FAILED));
  assert_int_equal(done->exit_code, 1);
  /* What the child wrote, as the message may show it. */
  char full[2048];
  size_t n = 0;
  for (int i = 0; i < 100; i++) n += (size_t)snprintf(full + n, sizeof full - n, "line %03d\n", i);
  n += (size_t)snprintf(full + n, sizeof full - n, "bad ? end");
  assert_int_equal(done->stderr_bytes, n + 1); /* the \xff for the '?', and a newline */
  const char *msg = done->error_message;
  size_t len = strlen(msg);
  assert_true(len > 400 && len <= 500);
  assert_true(utf8_valid(msg, len));
  /* A suffix of the whole text, starting right after a newline. */
  assert_string_equal(full + n - len, msg);
  assert_int_equal(full[n - len - 1], '\n');
  run_free(done);
  run_free(r);
}

/* Output that cannot be stored (here the output directory is gone, a file in its place)
 * costs the output, not the run: it ends as it would have, counting the bytes lost and
 * saying why in error_message (after a failed run's stderr tail); its replay is the
 * error of opening its output file. */
static void test_output_not_stored(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  char out[128];
  snprintf(out, sizeof out, "%s/output", f->dir);
  assert_int_equal(rmdir(out), 0);
  int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  close(fd);
  char want[256];
  sched_run *r = start_mode(f, NULL, "print", "hello");
  sched_run *done = wait_terminal(f, r->run_id);
  assert_int_equal(done->status, ST(COMPLETED));
  assert_int_equal(done->stdout_bytes, 6);
  assert_int_equal(done->output_dropped_bytes, 6);
  snprintf(want, sizeof want, "6 output bytes not stored (%s)", strerror(ENOTDIR));
  assert_string_equal(done->error_message, want);
  outlog_reader *rd = (outlog_reader *)f;
  assert_int_equal(sched_open_output(f->s, r->run_id, 0, 0, &rd), -ENOTDIR);
  assert_ptr_equal(rd, (outlog_reader *)f);
  run_free(done);
  run_free(r);

  r = start_mode(f, NULL, "errtail", "2");
  done = wait_terminal(f, r->run_id);
  assert_int_equal(done->status, ST(FAILED));
  assert_int_equal(done->output_dropped_bytes, 28);
  snprintf(want, sizeof want, "line 000\nline 001\nbad ? end; 28 output bytes not stored (%s)",
           strerror(ENOTDIR));
  assert_string_equal(done->error_message, want);
  run_free(done);
  run_free(r);
}

/* Requests that cannot be taken are refused with the reason, *out untouched, nothing
 * recorded; every bad parameter is reported at once; a program that cannot start gives
 * a FAILED run that says why. */
static void test_start_errors(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, "  - {id: off, enabled: false, argv: [/bin/true]}\n");
  static const struct {
    struct req q;
    int rc;
    const char *msg;
  } bad[] = {
      {{.module = "nope", .kv = {"mode", "print", NULL}}, -ENOENT, "unknown module \"nope\""},
      {{.kv = {"mode", "print", "bogus", "1", NULL}}, -EINVAL, "unknown parameter \"bogus\""},
      {{.kv = {"arg", "1", NULL}}, -EINVAL, "missing required parameter \"mode\""},
      {{.kv = {"mode", "PRINT", NULL}}, -EINVAL, "parameter \"mode\" does not match [a-z]+"},
      {{.module = "off"}, -ENOTSUP, "module \"off\" is disabled"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    sched_run *sentinel = (sched_run *)f, *out = sentinel;
    char err[512];
    assert_int_equal(start_req(f, &bad[i].q, &out, err, sizeof err), bad[i].rc);
    assert_ptr_equal(out, sentinel);
    assert_string_equal(err, bad[i].msg);
  }
  param_report bad_params = PARAM_REPORT_INIT;
  sched_run *sentinel = (sched_run *)f, *out = sentinel;
  char err[512];
  assert_int_equal(start_report(f, REQ(KV("zz", "1", "arg", "x", "yy", "2")), &out, &bad_params,
                                err, sizeof err),
                   -EINVAL);
  assert_ptr_equal(out, sentinel);
  assert_string_equal(
      err,
      "unknown parameter \"zz\"; unknown parameter \"yy\"; missing required parameter \"mode\"");
  assert_int_equal(bad_params.n, 3);
  assert_string_equal(bad_params.items[0].name, "zz");
  assert_string_equal(bad_params.items[1].name, "yy");
  assert_string_equal(bad_params.items[2].name, "mode");
  assert_string_equal(bad_params.items[2].message, "missing required parameter \"mode\"");
  param_report_clear(&bad_params);
  assert_int_equal(sched_total(f->s), 0);
  assert_int_equal(sched_active(f->s), 0);

  sched_run *r = start_q(f, REQ(.module = "noprog"));
  assert_int_equal(r->status, ST(FAILED));
  assert_int_equal(r->pid, 0);
  assert_string_equal(r->error_message, "cannot start \"" NOPROG "\": No such file or directory");
  assert_true(r->finished_at_ms > 0);
  assert_int_equal(sched_active(f->s), 0);
  assert_int_equal(sched_total(f->s), 1);
  assert_null(output_of(f, r->run_id, 0));
  run_free(r);
}

/* ---- limits and the queue ---------------------------------------------------------- */

/* At most max_concurrent run at once; the others wait QUEUED and start oldest first,
 * each as soon as a slot frees. */
static void test_concurrency_and_order(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(2, 100, 0), NULL);
  sched_run *r[5];
  for (int i = 0; i < 5; i++) r[i] = start_mode(f, NULL, "hold", "0");
  assert_int_equal(r[0]->status, ST(RUNNING));
  assert_int_equal(r[1]->status, ST(RUNNING));
  for (int i = 2; i < 5; i++) {
    assert_int_equal(r[i]->status, ST(QUEUED));
    assert_int_equal(r[i]->pid, 0);
    assert_int_equal(r[i]->started_at_ms, 0);
  }
  assert_int_equal(sched_active(f->s), 5);
  /* Each end lets the oldest queued run in, and only that one. */
  for (int i = 0; i < 3; i++) {
    release_done(f, r[i]->run_id);
    wait_status(f, r[i + 2]->run_id, ST(RUNNING));
    for (int j = i + 3; j < 5; j++) assert_int_equal(status_of(f, r[j]->run_id), ST(QUEUED));
    assert_int_equal(status_of(f, r[i + 1]->run_id), ST(RUNNING));
    assert_int_equal(sched_active(f->s), (size_t)(4 - i));
  }
  release_done(f, r[3]->run_id);
  release_done(f, r[4]->run_id);
  int64_t prev = 0;
  for (int i = 0; i < 5; i++) {
    sched_run *g = get(f, r[i]->run_id);
    assert_true(g->started_at_ms >= prev);
    prev = g->started_at_ms;
    run_free(g);
    run_free(r[i]);
  }
  assert_int_equal(sched_active(f->s), 0);
}

/* A module at its own limit waits without holding up runs of other modules. */
static void test_module_limit(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(4, 100, 0), NULL);
  sched_run *s1 = start_mode(f, "solo", "hold", "0");
  sched_run *s2 = start_mode(f, "solo", "hold", "0");
  sched_run *c = start_mode(f, "child", "hold", "0");
  assert_int_equal(s1->status, ST(RUNNING));
  assert_int_equal(s2->status, ST(QUEUED));
  assert_int_equal(c->status, ST(RUNNING));
  release_done(f, s1->run_id);
  wait_status(f, s2->run_id, ST(RUNNING));
  release_done(f, s2->run_id);
  release_done(f, c->run_id);
  run_free(s1);
  run_free(s2);
  run_free(c);
}

static void assert_refused(struct fx *f, const char *owner, const char *msg) {
  sched_run *sentinel = (sched_run *)f, *out = sentinel;
  char err[512];
  assert_int_equal(start_req(f, REQ(.owner = owner, KV("mode", "hold")), &out, err, sizeof err),
                   -EAGAIN);
  assert_ptr_equal(out, sentinel);
  assert_string_equal(err, msg);
}

/* The queue's limits: per identity first, then the global one; a run that can start at
 * once is never refused for them; a cancelled queued run gives its place back. */
static void test_queue_limits(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 2, 1), NULL);
  sched_run *h = start_q(f, REQ(.owner = "alice", KV("mode", "hold")));
  assert_int_equal(h->status, ST(RUNNING));
  sched_run *a1 = start_q(f, REQ(.owner = "alice", KV("mode", "hold")));
  assert_int_equal(a1->status, ST(QUEUED));
  assert_refused(f, "alice",
                 "too many queued runs for alice (1; limits.max_queued_per_identity is 1)");
  sched_run *b1 = start_q(f, REQ(.owner = "bob", KV("mode", "hold")));
  assert_int_equal(b1->status, ST(QUEUED));
  assert_refused(f, "carol", "too many queued runs (2; limits.max_queued is 2)");
  assert_refused(f, "", "too many queued runs (2; limits.max_queued is 2)");
  assert_int_equal(sched_total(f->s), 3);

  assert_int_equal(sched_cancel(f->s, a1->run_id, 0), 0);
  sched_run *a2 = start_q(f, REQ(.owner = "alice", KV("mode", "hold")));
  assert_int_equal(a2->status, ST(QUEUED));
  /* bob's run came before alice's second one. */
  release_done(f, h->run_id);
  wait_status(f, b1->run_id, ST(RUNNING));
  assert_int_equal(status_of(f, a2->run_id), ST(QUEUED));
  release_done(f, b1->run_id);
  release_done(f, a2->run_id);
  run_free(h);
  run_free(a1);
  run_free(b1);
  run_free(a2);
}

/* max_queued 0: runs never wait; one that would is refused, one that can start is not. */
static void test_no_queue(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 0, 0), NULL);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  assert_int_equal(h->status, ST(RUNNING));
  assert_refused(f, "", "too many queued runs (0; limits.max_queued is 0)");
  release_done(f, h->run_id);
  sched_run *h2 = start_mode(f, NULL, "hold", "0");
  assert_int_equal(h2->status, ST(RUNNING));
  release_done(f, h2->run_id);
  run_free(h);
  run_free(h2);
}

/* ---- idempotency ------------------------------------------------------------------- */

/* A request_id names one run: the same request again gets it back (1), live while it
 * runs, final once it ended; a default given explicitly is the same request; another
 * module, other parameters or another owner is -EEXIST; no request_id never matches. */
static void test_request_id(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *r = start_q(f, REQ(.owner = "alice", .request_id = "k1", KV("mode", "hold")));
  sched_run *again = NULL;
  char err[512];
  assert_int_equal(
      start_req(f, REQ(.owner = "alice", .request_id = "k1", KV("mode", "hold", "arg", "0")),
                &again, err, sizeof err),
      1);
  assert_string_equal(again->run_id, r->run_id);
  assert_int_equal(again->status, ST(RUNNING));
  wait_stdout(f, r->run_id, READY_LEN);
  run_free(again);
  again = NULL;
  assert_int_equal(start_req(f, REQ(.owner = "alice", .request_id = "k1", KV("mode", "hold")),
                             &again, err, sizeof err),
                   1);
  assert_int_equal(again->stdout_bytes, READY_LEN); /* the live run, not the stored record */
  run_free(again);

  static const struct req other[] = {
      {.owner = "alice", .request_id = "k1", .kv = {"mode", "hold", "arg", "1", NULL}},
      {.owner = "bob", .request_id = "k1", .kv = {"mode", "hold", NULL}},
      {.module = "solo", .owner = "alice", .request_id = "k1", .kv = {"mode", "hold", NULL}},
  };
  char want[256];
  snprintf(want, sizeof want,
           "request_id \"k1\" was used for run %s with another module, parameters or owner",
           r->run_id);
  for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
    sched_run *sentinel = (sched_run *)f, *out = sentinel;
    assert_int_equal(start_req(f, &other[i], &out, err, sizeof err), -EEXIST);
    assert_ptr_equal(out, sentinel);
    assert_string_equal(err, want);
  }

  release_done(f, r->run_id);
  again = NULL;
  assert_int_equal(start_req(f, REQ(.owner = "alice", .request_id = "k1", KV("mode", "hold")),
                             &again, err, sizeof err),
                   1);
  assert_string_equal(again->run_id, r->run_id);
  assert_int_equal(again->status, ST(COMPLETED));
  run_free(again);

  sched_run *p1 = start_mode(f, NULL, "exit", "0");
  sched_run *p2 = start_mode(f, NULL, "exit", "0");
  assert_string_not_equal(p1->run_id, p2->run_id);
  assert_int_equal(sched_total(f->s), 3);
  run_free(wait_terminal(f, p1->run_id));
  run_free(wait_terminal(f, p2->run_id));
  run_free(p1);
  run_free(p2);
  run_free(r);
}

/* ---- cancel and timeouts ------------------------------------------------------------- */

/* A queued run is cancelled at once: CANCELLED, never started, no output; cancelling it
 * again is -EALREADY, an unknown run -ENOENT; it never starts. */
static void test_cancel_queued(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 100, 0), NULL);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  sched_run *q = start_mode(f, NULL, "hold", "0");
  assert_int_equal(q->status, ST(QUEUED));
  outlog_reader *rd = NULL;
  assert_int_equal(sched_open_output(f->s, q->run_id, 0, 0, &rd), -EAGAIN);
  struct waiter w = {0};
  sched_watch *wh;
  assert_int_equal(sched_watch_run(f->s, &wh, q->run_id, SCHED_EV_TERMINAL, on_watch, &w), 0);

  assert_int_equal(sched_cancel(f->s, q->run_id, 0), 0);
  sched_run *c = get(f, q->run_id);
  assert_int_equal(c->status, ST(CANCELLED));
  assert_string_equal(c->error_message, "cancelled while queued");
  assert_int_equal(c->started_at_ms, 0);
  assert_true(c->finished_at_ms > 0);
  assert_int_equal(c->pid, 0);
  run_free(c);
  LOOP_UNTIL(&f->tl, w.fired);
  assert_int_equal(w.run->status, ST(CANCELLED));
  assert_int_equal(sched_cancel(f->s, q->run_id, 0), -EALREADY);
  assert_int_equal(sched_cancel(f->s, "01NOSUCHRUN0000000000000000", 0), -ENOENT);
  assert_null(output_of(f, q->run_id, 0));
  assert_int_equal(sched_active(f->s), 1);

  release_done(f, h->run_id);
  assert_int_equal(sched_active(f->s), 0);
  assert_int_equal(status_of(f, q->run_id), ST(CANCELLED));
  run_free(w.run);
  run_free(h);
  run_free(q);
}

/* A running run gets SIGTERM and becomes CANCELLED once it has exited; one that ignores
 * SIGTERM gets SIGKILL after the grace asked for (not the default, which is beyond the
 * wait's guard here). */
static void test_cancel_running(void **state) {
  struct fx *f = *state;
  f->grace_ms = 600000;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *a = start_mode(f, NULL, "hold", "0");
  wait_stdout(f, a->run_id, READY_LEN);
  assert_int_equal(sched_cancel(f->s, a->run_id, 0), 0);
  assert_int_equal(sched_cancel(f->s, a->run_id, 0), 0); /* already on its way: not an error */
  sched_run *done = wait_terminal(f, a->run_id);
  assert_int_equal(done->status, ST(CANCELLED));
  assert_string_equal(done->error_message, "cancelled");
  assert_int_equal(done->term_signal, SIGTERM);
  assert_int_equal(sched_cancel(f->s, a->run_id, 0), -EALREADY);
  run_free(done);

  sched_run *b = start_mode(f, NULL, "stubborn", "0");
  wait_stdout(f, b->run_id, READY_LEN);
  int64_t t0 = mono_ms();
  assert_int_equal(sched_cancel(f->s, b->run_id, 200), 0);
  wait_stdout(f, b->run_id, READY_LEN + sizeof TERM_NOTE - 1); /* it saw SIGTERM, and stays */
  done = wait_terminal(f, b->run_id);
  assert_true(mono_ms() - t0 >= 200);
  assert_int_equal(done->status, ST(CANCELLED));
  assert_int_equal(done->term_signal, SIGKILL);
  assert_output(f, b->run_id, OUTLOG_STDOUT, READY TERM_NOTE);
  run_free(done);
  run_free(a);
  run_free(b);
}

/* The module's timeout ends a run (SIGTERM) as TIMED_OUT, saying after how long; a
 * request may shorten it, not lengthen it, and may set one where the module has none. A
 * run that ends in time is not touched (and its timer goes with it: ASan would see a
 * leak or a late firing). */
static void test_timeout(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  int64_t t0 = mono_ms();
  sched_run *a = start_mode(f, "timed", "hold", "0");
  assert_int_equal(a->timeout_ms, TIMED_MS);
  sched_run *done = wait_terminal(f, a->run_id);
  assert_true(mono_ms() - t0 >= TIMED_MS);
  assert_int_equal(done->status, ST(TIMED_OUT));
  assert_string_equal(done->error_message, "timed out after 300 ms");
  assert_int_equal(done->term_signal, SIGTERM);
  run_free(done);

  t0 = mono_ms();
  sched_run *b = start_q(f, REQ(.timeout_ms = 150, KV("mode", "hold")));
  assert_int_equal(b->timeout_ms, 150);
  done = wait_terminal(f, b->run_id);
  assert_true(mono_ms() - t0 >= 150);
  assert_int_equal(done->status, ST(TIMED_OUT));
  assert_string_equal(done->error_message, "timed out after 150 ms");
  run_free(done);

  /* Only the recorded timeouts matter here: these may end either way. */
  sched_run *longer = start_q(f, REQ(.module = "timed", .timeout_ms = 60000, KV("mode", "exit")));
  sched_run *shorter = start_q(f, REQ(.module = "timed", .timeout_ms = 100, KV("mode", "exit")));
  sched_run *none = start_q(f, REQ(.timeout_ms = 60000, KV("mode", "exit")));
  assert_int_equal(longer->timeout_ms, TIMED_MS);
  assert_int_equal(shorter->timeout_ms, 100);
  assert_int_equal(none->timeout_ms, 60000);
  sched_run *runs[] = {longer, shorter, none};
  for (size_t i = 0; i < 3; i++) {
    done = wait_terminal(f, runs[i]->run_id);
    if (i == 2) assert_int_equal(done->status, ST(COMPLETED));
    run_free(done);
  }
  run_free(longer);
  run_free(shorter);
  run_free(none);
  run_free(a);
  run_free(b);
}

/* A run timing out (SIGTERM sent, ignored) stays TIMED_OUT when cancelled meanwhile,
 * and still gets its SIGKILL after the grace. */
static void test_cancel_while_timing_out(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  /* Time for the child to set up its SIGTERM handler first, even on a loaded machine. */
  sched_run *a = start_q(f, REQ(.timeout_ms = 1000, KV("mode", "stubborn")));
  wait_stdout(f, a->run_id, READY_LEN + sizeof TERM_NOTE - 1);
  assert_int_equal(sched_cancel(f->s, a->run_id, 0), 0);
  sched_run *done = wait_terminal(f, a->run_id);
  assert_int_equal(done->status, ST(TIMED_OUT));
  assert_string_equal(done->error_message, "timed out after 1000 ms");
  assert_int_equal(done->term_signal, SIGKILL);
  assert_true(done->finished_at_ms - done->started_at_ms >= 1000 + GRACE_MS - 10);
  run_free(done);
  run_free(a);
}

/* ---- watchers ---------------------------------------------------------------------- */

/* Watches fire once, when their event comes, with the run as it is then; the terminal
 * state is in the table by then; what already happened is told from the loop, never
 * inside sched_watch_run; an unwatched watch never fires, also when a callback of the
 * same batch unwatches it. */
static void test_watch(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 100, 0), NULL);
  sched_watch *h = (sched_watch *)f;
  struct waiter w0 = {0};
  assert_int_equal(
      sched_watch_run(f->s, &h, "01NOSUCHRUN0000000000000000", SCHED_EV_TERMINAL, on_watch, &w0),
      -ENOENT);
  assert_ptr_equal(h, (sched_watch *)f);

  sched_run *hold_run = start_mode(f, NULL, "hold", "0");
  sched_run *q = start_mode(f, NULL, "print", "x");
  struct waiter started = {0}, term = {.s = f->s}, x = {0}, y = {0}, gone = {0};
  sched_watch *hs, *ht, *hx, *hy, *hg;
  assert_int_equal(sched_watch_run(f->s, &hs, q->run_id, SCHED_EV_STARTED, on_watch, &started), 0);
  assert_int_equal(sched_watch_run(f->s, &ht, q->run_id, SCHED_EV_TERMINAL, on_watch, &term), 0);
  assert_int_equal(sched_watch_run(f->s, &hx, q->run_id, SCHED_EV_TERMINAL, on_watch, &x), 0);
  assert_int_equal(sched_watch_run(f->s, &hy, q->run_id, SCHED_EV_TERMINAL, on_watch, &y), 0);
  assert_int_equal(sched_watch_run(f->s, &hg, q->run_id, SCHED_EV_TERMINAL, on_watch, &gone), 0);
  x.other = hy; /* whichever fires first drops the other */
  y.other = hx;
  sched_unwatch(hg);
  sched_unwatch(NULL);

  release(f, hold_run->run_id);
  LOOP_UNTIL(&f->tl, started.fired);
  assert_int_equal(started.run->status, ST(RUNNING));
  LOOP_UNTIL(&f->tl, term.fired);
  assert_int_equal(started.fired, 1);
  assert_int_equal(term.fired, 1);
  assert_int_equal(term.run->status, ST(COMPLETED));
  assert_int_equal(term.got_status, ST(COMPLETED));
  assert_int_equal(x.fired + y.fired, 1);
  assert_int_equal(gone.fired, 0);

  /* Already happened: told from the loop. */
  struct waiter late = {0}, dropped = {0};
  sched_watch *hl, *hd;
  assert_int_equal(
      sched_watch_run(f->s, &hl, q->run_id, SCHED_EV_STARTED | SCHED_EV_TERMINAL, on_watch, &late),
      0);
  assert_int_equal(sched_watch_run(f->s, &hd, q->run_id, SCHED_EV_TERMINAL, on_watch, &dropped), 0);
  assert_int_equal(late.fired, 0);
  sched_unwatch(hd);
  LOOP_UNTIL(&f->tl, late.fired);
  assert_int_equal(late.run->status, ST(COMPLETED));
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(dropped.fired, 0);

  /* STARTED of a running run: from the loop too. */
  sched_run *r = start_mode(f, NULL, "hold", "0");
  struct waiter st2 = {0};
  sched_watch *h2;
  assert_int_equal(sched_watch_run(f->s, &h2, r->run_id, SCHED_EV_STARTED, on_watch, &st2), 0);
  assert_int_equal(st2.fired, 0);
  LOOP_UNTIL(&f->tl, st2.fired);
  assert_int_equal(st2.run->status, ST(RUNNING));
  release_done(f, r->run_id);

  struct waiter *all[] = {&started, &term, &x, &y, &late, &st2};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) run_free(all[i]->run);
  run_free(r);
  run_free(q);
  run_free(hold_run);
}

/* ---- reading runs and output ------------------------------------------------------- */

/* sched_list and sched_get_packed show an active run's live values (its output so far),
 * which the stored record does not have yet. */
static void test_live_values(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *done = start_mode(f, NULL, "exit", "0");
  run_free(wait_terminal(f, done->run_id));
  sched_run *h = start_mode(f, NULL, "hold", "0");
  wait_stdout(f, h->run_id, READY_LEN);

  sched_run **runs = NULL;
  size_t n = 0;
  int more = -1;
  assert_int_equal(sched_list(f->s, NULL, NULL, 10, &runs, &n, &more), 0);
  assert_int_equal(n, 2);
  assert_int_equal(more, 0);
  assert_string_equal(runs[0]->run_id, h->run_id); /* newest first */
  assert_int_equal(runs[0]->status, ST(RUNNING));
  assert_int_equal(runs[0]->stdout_bytes, READY_LEN);
  assert_string_equal(runs[1]->run_id, done->run_id);
  assert_int_equal(runs[1]->status, ST(COMPLETED));
  runtab_list_free(runs, n);

  const uint8_t *p = NULL;
  size_t len = 0;
  assert_int_equal(sched_get_packed(f->s, h->run_id, &p, &len), 0);
  sched_run *u = prismq__runner__v1__run__unpack(NULL, len, p);
  assert_non_null(u);
  assert_int_equal(u->stdout_bytes, READY_LEN);
  assert_int_equal(u->status, ST(RUNNING));
  run_free(u);
  assert_int_equal(sched_get_packed(f->s, done->run_id, &p, &len), 0);
  u = prismq__runner__v1__run__unpack(NULL, len, p);
  assert_non_null(u);
  assert_int_equal(u->status, ST(COMPLETED));
  run_free(u);
  assert_int_equal(sched_get_packed(f->s, "01NOSUCHRUN0000000000000000", &p, &len), -ENOENT);
  sched_run *sentinel = (sched_run *)f, *out = sentinel;
  assert_int_equal(sched_get(f->s, "01NOSUCHRUN0000000000000000", &out), -ENOENT);
  assert_ptr_equal(out, sentinel);

  sched_run *stored = NULL;
  assert_int_equal(runtab_get(f->rt, h->run_id, &stored), 0);
  assert_int_equal(stored->stdout_bytes, 0); /* live values live in the scheduler */
  run_free(stored);
  release_done(f, h->run_id);
  run_free(h);
  run_free(done);
}

/* Finished runs' output replays, more runs than the ring of open logs holds, readers
 * kept open across the ring's turnover; a running run's output is readable live;
 * stream filters and their errors. */
static void test_output_replay(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  enum { N = 11 };
  sched_run *r[N];
  char text[N][32];
  for (int i = 0; i < N; i++) {
    snprintf(text[i], sizeof text[i], "output of %d", i);
    r[i] = start_mode(f, NULL, "print", text[i]);
  }
  for (int i = 0; i < N; i++) run_free(wait_terminal(f, r[i]->run_id));
  /* All readers open at once, then read. */
  outlog_reader *rd[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(sched_open_output(f->s, r[i]->run_id, 0, OUTLOG_STDOUT, &rd[i]), 0);
  for (int i = 0; i < N; i++) {
    struct evbuffer *b = evbuffer_new();
    while (outlog_reader_read(rd[i], b, 1u << 20) > 0) {
    }
    assert_true(outlog_reader_done(rd[i]));
    uint8_t *msg;
    size_t len;
    assert_int_equal(gw_frame_next(b, 1u << 20, &msg, &len), GW_FRAME_MSG);
    Prismq__Runner__V1__OutputChunk *c = prismq__runner__v1__output_chunk__unpack(NULL, len, msg);
    assert_non_null(c);
    assert_int_equal(c->seq, 1);
    assert_int_equal(c->data.len, strlen(text[i]) + 1);
    assert_memory_equal(c->data.data, text[i], strlen(text[i]));
    prismq__runner__v1__output_chunk__free_unpacked(c, NULL);
    free(msg);
    evbuffer_free(b);
    outlog_reader_free(rd[i]);
  }
  /* And again, from the ring or the file. */
  for (int i = N - 1; i >= 0; i--) {
    char want[40];
    snprintf(want, sizeof want, "%s\n", text[i]);
    assert_output(f, r[i]->run_id, 0, want);
    char *none = output_of(f, r[i]->run_id, OUTLOG_STDERR);
    assert_string_equal(none, "");
    free(none);
  }
  outlog_reader *bad = (outlog_reader *)f;
  assert_int_equal(sched_open_output(f->s, r[0]->run_id, 0, 3, &bad), -EINVAL);
  assert_int_equal(sched_open_output(f->s, r[0]->run_id, 0, -1, &bad), -EINVAL);
  assert_int_equal(sched_open_output(f->s, "01NOSUCHRUN0000000000000000", 0, 0, &bad), -ENOENT);
  assert_ptr_equal(bad, (outlog_reader *)f);

  sched_run *h = start_mode(f, NULL, "hold", "0");
  wait_stdout(f, h->run_id, READY_LEN);
  assert_output(f, h->run_id, OUTLOG_STDOUT, READY);
  release_done(f, h->run_id);
  run_free(h);
  for (int i = 0; i < N; i++) run_free(r[i]);
}

/* The run's output records (0: every stream) described in a string (free it): "o:" and
 * "e:" then the data of stdout and stderr records, "p:DONE/TOTAL MESSAGE" for progress
 * records, joined by "|". */
static char *records_of(struct fx *f, const char *id, int stream) {
  outlog_reader *rd = NULL;
  assert_int_equal(sched_open_output(f->s, id, 0, stream, &rd), 0);
  struct evbuffer *b = evbuffer_new(), *text = evbuffer_new();
  assert_true(rd && b && text);
  while (outlog_reader_read(rd, b, 1u << 20) > 0) {
  }
  outlog_reader_free(rd);
  uint8_t *msg;
  size_t len;
  for (int i = 0; gw_frame_next(b, 1u << 20, &msg, &len) == GW_FRAME_MSG; i++) {
    Prismq__Runner__V1__OutputChunk *c = prismq__runner__v1__output_chunk__unpack(NULL, len, msg);
    assert_non_null(c);
    if (c->progress)
      evbuffer_add_printf(text, "%sp:%g/%g %s", i ? "|" : "", c->progress->done, c->progress->total,
                          c->progress->message);
    else
      evbuffer_add_printf(text, "%s%c:%.*s", i ? "|" : "", c->stream == OUTLOG_STDOUT ? 'o' : 'e',
                          (int)c->data.len, (const char *)c->data.data);
    prismq__runner__v1__output_chunk__free_unpacked(c, NULL);
    free(msg);
  }
  evbuffer_add(text, "", 1);
  char *out = strdup((const char *)evbuffer_pullup(text, -1));
  assert_non_null(out);
  evbuffer_free(b);
  evbuffer_free(text);
  return out;
}

static double progress_done(struct fx *f, const char *id) {
  sched_run *r = get(f, id);
  double done = r->progress ? r->progress->done : -1;
  run_free(r);
  return done;
}

static void assert_progress(const sched_run *r, double done, const char *message) {
  assert_non_null(r->progress);
  assert_true(r->progress->done == done);
  assert_true(r->progress->total == 3);
  assert_string_equal(r->progress->message, message);
  assert_true(r->progress->updated_at_ms >= r->started_at_ms);
}

/* Progress from the module's pattern and from its descriptor: the run shows the latest
 * while it runs (the run table gets it with the final status only), each update is a
 * record right after the output of its line, in every stream's view, and a last line
 * without a newline counts at the end. */
static void test_progress(void **state) {
  struct fx *f = *state;
  char module[4096];
  put_module(module, sizeof module, "prog",
             "    progress: {pattern: '^PROGRESS (?P<done>\\d+)/(?P<total>\\d+)"
             "(?: (?P<message>.*))?$', fd: true}\n");
  fx_sched(f, LIM_DEFAULT, module);
  sched_run *r = start_mode(f, "prog", "progress", "0");
  LOOP_UNTIL(&f->tl, progress_done(f, r->run_id) == 2);
  wait_stdout(f, r->run_id, strlen("start\nPROGRESS 1/3 one\n") + READY_LEN);
  sched_run *live = get(f, r->run_id);
  assert_int_equal(live->status, ST(RUNNING));
  assert_progress(live, 2, "two");
  sched_run *stored = NULL;
  assert_int_equal(runtab_get(f->rt, r->run_id, &stored), 0);
  assert_null(stored->progress);
  run_free(stored);
  assert_int_equal(kill(live->pid, SIGUSR1), 0);
  run_free(live);

  sched_run *end = wait_terminal(f, r->run_id);
  assert_int_equal(end->status, ST(COMPLETED));
  assert_progress(end, 3, "end");
  run_free(end);
  assert_int_equal(runtab_get(f->rt, r->run_id, &stored), 0);
  assert_progress(stored, 3, "end");
  run_free(stored);
  char *all = records_of(f, r->run_id, 0);
  const char *first = "o:start\nPROGRESS 1/3 one\n|p:1/3 one|";
  if (strncmp(all, first, strlen(first)) != 0 || !strstr(all, "|p:2/3 two") ||
      !strstr(all, "PROGRESS 3/3 end|p:3/3 end") || strstr(all, "not progress"))
    fail_msg("records: %s", all);
  free(all);
  char *err = records_of(f, r->run_id, OUTLOG_STDERR);
  assert_string_equal(err, "p:1/3 one|p:2/3 two|p:3/3 end");
  free(err);
  run_free(r);

  /* More updates in one read than one write takes: each still right after its line. */
  r = start_mode(f, "prog", "burst", "40");
  end = wait_terminal(f, r->run_id);
  assert_true(end->progress && end->progress->done == 40 && end->progress->total == 40);
  run_free(end);
  char want[4096];
  size_t n = 0;
  for (int i = 1; i <= 40; i++)
    n += (size_t)snprintf(want + n, sizeof want - n, "%so:PROGRESS %d/40\n|p:%d/40 ",
                          i > 1 ? "|" : "", i, i);
  all = records_of(f, r->run_id, 0);
  assert_string_equal(all, want);
  free(all);
  run_free(r);
}

/* The child's environment is PATH, HOME and LANG from ours with the module's variables
 * over them, nothing else; its working directory is the module's. */
static void test_env_and_cwd(void **state) {
  struct fx *f = *state;
  char extra[4096];
  snprintf(extra, sizeof extra,
           "    env: {FOO: \"bar baz\", HOME: /custom/home}\n    cwd: \"%s\"\n", f->dir);
  char module[8192];
  put_module(module, sizeof module, "envy", extra);
  assert_int_equal(setenv("PRISMQ_SCHED_TEST_LEAK", "1", 1), 0);
  assert_int_equal(setenv("LANG", "C.UTF-8", 1), 0);
  fx_sched(f, LIM_DEFAULT, module);
  sched_run *e = start_mode(f, "envy", "env", "0");
  sched_run *c = start_mode(f, "envy", "cwd", "0");
  run_free(wait_terminal(f, e->run_id));
  run_free(wait_terminal(f, c->run_id));
  unsetenv("PRISMQ_SCHED_TEST_LEAK");
  char *env = output_of(f, e->run_id, OUTLOG_STDOUT);
  char want[PATH_MAX + 64];
  snprintf(want, sizeof want, "PATH=%s\nLANG=C.UTF-8\nFOO=bar baz\nHOME=/custom/home\n",
           getenv("PATH") ? getenv("PATH") : "/usr/local/bin:/usr/bin:/bin");
  assert_string_equal(env, want);
  free(env);
  char real[PATH_MAX];
  assert_non_null(realpath(f->dir, real));
  snprintf(want, sizeof want, "%s\n", real);
  assert_output(f, c->run_id, OUTLOG_STDOUT, want);
  run_free(e);
  run_free(c);
}

/* Dry-run: nothing executes; the run completes inside sched_start with the command it
 * would have run as its output (quoted where a shell would need it). */
static void test_dry_run(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *r = start_mode(f, NULL, "print", "hello world");
  assert_int_equal(r->status, ST(COMPLETED));
  assert_int_equal(r->pid, 0);
  assert_true(r->started_at_ms > 0);
  char want[PATH_MAX + 64];
  snprintf(want, sizeof want, "%s --child=print 'hello world'\n", g_self);
  assert_output(f, r->run_id, OUTLOG_STDOUT, want);
  assert_int_equal(r->stdout_bytes, strlen(want));
  assert_true(no_children());
  run_free(r);
}

/* ---- configuration swap ------------------------------------------------------------ */

/* New limits take effect at once (queued runs start when they allow); new runs see the
 * new modules only, while runs taken under the old snapshot keep their module after
 * it is gone. */
static void test_set_config(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 100, 0), NULL);
  const config *old = sched_config(f->s);
  assert_non_null(config_find_module(old, "child"));
  sched_run *h = start_mode(f, NULL, "hold", "0");
  sched_run *q = start_mode(f, NULL, "hold", "0");
  assert_int_equal(q->status, ST(QUEUED));
  config *fresh = NULL;
  char err[512] = "";
  const char yaml[] = "limits: {max_concurrent: 2}\nmodules:\n  - {id: other, argv: [/bin/true]}\n";
  assert_int_equal(config_load_string(&fresh, yaml, strlen(yaml), "new.yaml", err, sizeof err), 0);
  assert_int_equal(sched_set_config(f->s, fresh, err, sizeof err), 0);
  config_free(fresh); /* the scheduler's reference is enough */
  assert_ptr_equal(sched_config(f->s), fresh);
  assert_int_equal(status_of(f, q->run_id), ST(RUNNING)); /* started by the swap itself */
  sched_run *sentinel = (sched_run *)f, *out = sentinel;
  assert_int_equal(start_req(f, REQ(KV("mode", "hold")), &out, err, sizeof err), -ENOENT);
  release_done(f, h->run_id);
  release_done(f, q->run_id);
  run_free(h);
  run_free(q);
}

/* ---- stopping ---------------------------------------------------------------------- */

static void on_idle(void *arg) { ((struct fx *)arg)->idle++; }

static sched_run *stored_run(struct fx *f, const char *id) {
  sched_run *r = NULL;
  assert_int_equal(runtab_get(f->rt, id, &r), 0);
  return r;
}

/* Shutdown, runs: wait: nothing new is taken, queued runs stay QUEUED (also when a slot
 * frees), running runs finish on their own; on_idle fires once when none is left. */
static void test_shutdown_wait(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 100, 0), NULL);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  sched_run *q = start_mode(f, NULL, "hold", "0");
  sched_shutdown(f->s, 0, 60000, on_idle, f);
  assert_int_equal(f->idle, 0);
  sched_run *sentinel = (sched_run *)f, *out = sentinel;
  char err[512];
  assert_int_equal(start_req(f, REQ(KV("mode", "hold")), &out, err, sizeof err), -ESHUTDOWN);
  assert_string_equal(err, "server shutting down");
  assert_ptr_equal(out, sentinel);
  release_done(f, h->run_id);
  assert_int_equal(f->idle, 1);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(status_of(f, q->run_id), ST(QUEUED));
  fx_close_sched(f);
  assert_int_equal(f->idle, 1);
  sched_run *s = stored_run(f, q->run_id);
  assert_int_equal(s->status, ST(QUEUED));
  run_free(s);
  run_free(h);
  run_free(q);
}

/* Shutdown, runs: wait, with a grace that runs out: what still runs is cancelled then,
 * saying why. */
static void test_shutdown_grace(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  wait_stdout(f, h->run_id, READY_LEN);
  int64_t t0 = mono_ms();
  sched_shutdown(f->s, 0, 200, on_idle, f);
  sched_run *done = wait_terminal(f, h->run_id);
  assert_true(mono_ms() - t0 >= 200);
  assert_int_equal(done->status, ST(CANCELLED));
  assert_string_equal(done->error_message, SCHED_SHUTDOWN_MESSAGE);
  assert_int_equal(done->term_signal, SIGTERM);
  assert_int_equal(f->idle, 1);
  run_free(done);
  run_free(h);
}

/* Shutdown, runs: cancel: running runs are cancelled at once (SIGTERM, SIGKILL after
 * the default grace for one that ignores it); with nothing running, on_idle fires
 * before sched_shutdown returns. */
static void test_shutdown_cancel(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  sched_run *s = start_mode(f, NULL, "stubborn", "0");
  wait_stdout(f, h->run_id, READY_LEN);
  wait_stdout(f, s->run_id, READY_LEN);
  int64_t t0 = mono_ms();
  sched_shutdown(f->s, 1, 60000, on_idle, f);
  sched_run *dh = wait_terminal(f, h->run_id);
  sched_run *ds = wait_terminal(f, s->run_id);
  assert_true(mono_ms() - t0 >= GRACE_MS);
  assert_int_equal(dh->status, ST(CANCELLED));
  assert_string_equal(dh->error_message, SCHED_SHUTDOWN_MESSAGE);
  assert_int_equal(dh->term_signal, SIGTERM);
  assert_int_equal(ds->status, ST(CANCELLED));
  assert_int_equal(ds->term_signal, SIGKILL);
  assert_int_equal(f->idle, 1);
  run_free(dh);
  run_free(ds);
  run_free(h);
  run_free(s);
  fx_close_sched(f);

  f->idle = 0;
  fx_sched(f, LIM_DEFAULT, NULL);
  sched_shutdown(f->s, 1, 0, on_idle, f);
  assert_int_equal(f->idle, 1);
}

/* sched_free with a run still running kills it and records it CANCELLED (SIGKILL,
 * "server shutdown"); queued runs stay QUEUED; nothing is left unreaped. */
static void test_free_running(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 100, 0), NULL);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  sched_run *q = start_mode(f, NULL, "hold", "0");
  struct waiter w = {0};
  sched_watch *wh;
  assert_int_equal(sched_watch_run(f->s, &wh, h->run_id, SCHED_EV_TERMINAL, on_watch, &w), 0);
  wait_stdout(f, h->run_id, READY_LEN);
  fx_close_sched(f);            /* runs the loop until the process is reaped */
  assert_int_equal(w.fired, 0); /* watchers are dropped without firing */
  runtab_free(f->rt);           /* what sched_free recorded is committed */
  f->rt = NULL;
  fx_open_runtab(f);
  sched_run *sh = stored_run(f, h->run_id), *sq = stored_run(f, q->run_id);
  assert_int_equal(sh->status, ST(CANCELLED));
  assert_string_equal(sh->error_message, SCHED_SHUTDOWN_MESSAGE);
  assert_int_equal(sh->term_signal, SIGKILL);
  assert_int_equal(sq->status, ST(QUEUED));
  run_free(sh);
  run_free(sq);
  run_free(h);
  run_free(q);
}

/* ---- recovery ---------------------------------------------------------------------- */

/* Modules of the first server that the second one has no more ("gone"), or has with a
 * stricter parameter ("strict"). */
#define GONE_MODULE "  - {id: gone, argv: [/bin/true]}\n"
#define STRICT_BEFORE                                                                            \
  "  - id: strict\n    argv: [/bin/echo, \"{x}\"]\n    parameters: [{name: x, pattern: \".*\", " \
  "default: a}]\n"
#define STRICT_AFTER                                                                     \
  "  - id: strict\n    argv: [/bin/echo, \"{x}\"]\n    parameters: [{name: x, pattern: " \
  "\"[0-9]+\", default: \"1\"}]\n"

/* A restart on the same data directory (and a reopened run table): queued runs are
 * queued again in their order and start from the loop; those whose module is gone or
 * whose parameters no longer fit become FAILED, saying why. */
static void test_restart_requeues(void **state) {
  struct fx *f = *state;
  fx_sched(f, LIM(1, 100, 0), GONE_MODULE STRICT_BEFORE);
  sched_run *h = start_mode(f, NULL, "hold", "0");
  sched_run *q1 = start_q(f, REQ(.owner = "alice", KV("mode", "hold")));
  sched_run *g = start_q(f, REQ(.module = "gone"));
  sched_run *q2 = start_q(f, REQ(.owner = "alice", KV("mode", "print", "arg", "two")));
  sched_run *st = start_q(f, REQ(.module = "strict", KV("x", "abc")));
  wait_stdout(f, h->run_id, READY_LEN);
  fx_close_sched(f);
  runtab_free(f->rt);
  f->rt = NULL;

  fx_sched(f, LIM(1, 100, 1), STRICT_AFTER);
  /* Not started inside sched_new: from the loop. */
  assert_int_equal(status_of(f, q1->run_id), ST(QUEUED));
  assert_int_equal(sched_active(f->s), 2);
  sched_run *fg = get(f, g->run_id), *fs = get(f, st->run_id);
  assert_int_equal(fg->status, ST(FAILED));
  assert_string_equal(
      fg->error_message,
      "not started after a server restart: module \"gone\" is not configured any more");
  assert_int_equal(fs->status, ST(FAILED));
  assert_string_equal(fs->error_message,
                      "not started after a server restart: parameter \"x\" does not match [0-9]+");
  assert_true(fg->finished_at_ms > 0);
  run_free(fg);
  run_free(fs);
  /* Requeued runs count against their owner's queue. */
  wait_status(f, q1->run_id, ST(RUNNING));
  assert_int_equal(status_of(f, q2->run_id), ST(QUEUED));
  assert_refused(f, "alice",
                 "too many queued runs for alice (1; limits.max_queued_per_identity is 1)");
  release(f, q1->run_id);
  sched_run *d1 = wait_terminal(f, q1->run_id), *d2 = wait_terminal(f, q2->run_id);
  assert_int_equal(d1->status, ST(COMPLETED));
  assert_int_equal(d2->status, ST(COMPLETED));
  assert_true(d1->started_at_ms <= d2->started_at_ms);
  assert_true(d1->finished_at_ms <= d2->started_at_ms); /* one at a time */
  assert_output(f, q1->run_id, 0, READY);
  assert_output(f, q2->run_id, 0, "two\n");
  assert_int_equal(status_of(f, h->run_id), ST(CANCELLED));
  run_free(d1);
  run_free(d2);
  sched_run *all[] = {h, q1, g, q2, st};
  for (size_t i = 0; i < 5; i++) run_free(all[i]);
}

/* Whether the run's stdout so far contains `text` (no cmocka here: a forked process). */
static int output_has(sched *s, const char *id, const char *text) {
  outlog_reader *rd = NULL;
  if (sched_open_output(s, id, 0, OUTLOG_STDOUT, &rd) != 0 || !rd) return 0;
  struct evbuffer *b = evbuffer_new();
  while (b && outlog_reader_read(rd, b, 1u << 20) > 0) {
  }
  outlog_reader_free(rd);
  int found = b && evbuffer_search(b, text, strlen(text), NULL).pos >= 0;
  if (b) evbuffer_free(b);
  return found;
}

static void crash_guard(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  _exit(97);
}

/* A fork that plays a server: starts a "tree" run (a grandchild in its group) and a
 * queued one, commits, says so on `ready_fd` and waits for the test's SIGKILL (a crash:
 * nothing cleaned up). Exits with a code of 90 and up if something did not go as
 * planned; no cmocka assertion may fail in it (its longjmp would go on with the tests in
 * this process). */
static void crashing_server(struct fx *f, int ready_fd) {
  struct event_base *base = event_base_new();
  if (!base) _exit(90);
  struct event *guard = evtimer_new(base, crash_guard, NULL);
  struct timeval tv = {TESTLOOP_GUARD_SECONDS, 0};
  if (!guard || evtimer_add(guard, &tv) != 0) _exit(90);
  char path[128], err[512] = "";
  snprintf(path, sizeof path, "%s/runs.db", f->dir);
  runtab *rt = NULL;
  cgroup_root *cg = NULL;
  if (sched_init_data_dir(f->dir, err, sizeof err) != 0 ||
      runtab_open(&rt, path, err, sizeof err) != 0)
    _exit(91);
  if (f->m->cgroup && cgroup_root_open(&cg, base, "auto", f->dir, err, sizeof err) != 0) _exit(92);
  config *cfg = load_config(LIM(1, 100, 0), NULL);
  sched_opts o = fx_opts(f, cfg);
  o.rt = rt;
  o.cg = cg;
  if (sched_new(&f->s, base, &o, err, sizeof err) != 0) _exit(93);
  sched_run *t = NULL, *q = NULL;
  /* In a cgroup the grandchild leaves the run's process group: only the cgroup holds it. */
  if (start_req(f, REQ(KV("mode", "tree", "arg", f->m->cgroup ? "escape" : "0")), &t, err,
                sizeof err) != 0 ||
      start_req(f, REQ(KV("mode", "print", "arg", "after")), &q, err, sizeof err) != 0)
    _exit(94);
  if (t->status != ST(RUNNING) || q->status != ST(QUEUED)) _exit(95);
  /* Ready: the grandchild exists, and its pid is in the output. */
  while (!output_has(f->s, t->run_id, READY)) event_base_loop(base, EVLOOP_ONCE);
  if (runtab_sync(rt) != 0) _exit(96);
  if (write(ready_fd, "k", 1) != 1) _exit(98);
  for (;;) pause();
}

static void on_alarm(int sig) { (void)sig; }

/* Reaps stray `pid` (ours as the subreaper), which must be ending already, and returns
 * its wait status. An alarm bounds the wait (no pidfd under valgrind); one still alive
 * then fails the test, and teardown kills it, so that nothing leaks into later tests. */
static int reap_stray(struct fx *f, pid_t pid) {
  struct sigaction sa = {.sa_handler = on_alarm}, old; /* no SA_RESTART: EINTR */
  sigaction(SIGALRM, &sa, &old);
  alarm(TESTLOOP_GUARD_SECONDS);
  int st = 0;
  pid_t r = waitpid(pid, &st, 0);
  alarm(0);
  sigaction(SIGALRM, &old, NULL);
  if (r != pid) fail_msg("process %d did not end", (int)pid);
  strays_end(f, pid);
  return st;
}

static void assert_killed(struct fx *f, pid_t pid) {
  int st = reap_stray(f, pid);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
}

/* Inserts a RUNNING run of module "child" as a server would have left it. */
static void insert_running(struct fx *f, char *id, pid_t pid, uint64_t ticks, int64_t started) {
  sched_run r = PRISMQ__RUNNER__V1__RUN__INIT;
  id_run_new(id, id_now_ms());
  r.run_id = id;
  r.module_id = "child";
  r.status = ST(RUNNING);
  r.created_at_ms = started;
  r.started_at_ms = started;
  r.pid = pid;
  r.pid_start_ticks = ticks;
  assert_int_equal(runtab_insert(f->rt, &r), 0);
}

/* Two RUNNING runs whose pids name live processes that are not theirs: one started
 * after the run (another start time), one recorded before this boot. Opens the table. */
static void insert_decoys(struct fx *f, char *id_other, pid_t *other, char *id_older,
                          pid_t *older) {
  *other = fork();
  if (*other == 0)
    for (;;) pause();
  *older = fork();
  if (*older == 0)
    for (;;) pause();
  assert_true(*other > 0 && *older > 0);
  stray_add(f, *other);
  stray_add(f, *older);
  uint64_t ticks_other = 0, ticks_older = 0;
  assert_int_equal(proc_pid_start_ticks(*other, &ticks_other), 0);
  assert_int_equal(proc_pid_start_ticks(*older, &ticks_older), 0);
  fx_open_runtab(f);
  insert_running(f, id_other, *other, ticks_other + 1, id_now_ms());
  insert_running(f, id_older, *older, ticks_older, 1000); /* started in 1970: before this boot */
}

/* In cgroups, a run recorded QUEUED whose cgroup exists had started (the crash came
 * before its start was committed): inserts one, and makes its cgroup at `path`. */
static void insert_started_queued(struct fx *f, char *id, char *path) {
  fx_open_cgroups(f);
  sched_run qr = PRISMQ__RUNNER__V1__RUN__INIT;
  id_run_new(id, id_now_ms());
  qr.run_id = id;
  qr.module_id = "child";
  qr.status = ST(QUEUED);
  qr.created_at_ms = id_now_ms();
  assert_int_equal(runtab_insert(f->rt, &qr), 0);
  snprintf(path, PATH_MAX, "%s/%s", cgroup_root_path(f->cg), id);
  assert_int_equal(mkdir(path, 0755), 0);
}

/* A "server" (a child of ours) with runs under way, SIGKILLed once it says it is ready:
 * it leaves the table and its runs as a crash would. */
static void crash_a_server(struct fx *f) {
  int ready[2];
  assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
  pid_t srv = fork();
  assert_true(srv >= 0);
  if (srv == 0) {
    close(ready[0]);
    crashing_server(f, ready[1]);
  }
  close(ready[1]);
  char c = 0;
  ssize_t got = read(ready[0], &c, 1); /* its guard bounds the wait */
  close(ready[0]);
  kill(srv, SIGKILL);
  int ws = 0;
  assert_int_equal(waitpid(srv, &ws, 0), srv);
  if (got != 1)
    fail_msg("the crashing server failed: exit %d", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
  assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
}

/* After a crash, RUNNING runs become LOST and what is left of them is killed (its
 * group, its cgroup), unless the recorded pid is another process now (another start
 * time) or the run is from before this boot; QUEUED runs run. */
static void test_crash_recovery(void **state) {
  struct fx *f = *state;
  crash_a_server(f);
  pid_t other, older;
  char id_other[ID_RUN_LEN + 1], id_older[ID_RUN_LEN + 1];
  insert_decoys(f, id_other, &other, id_older, &older);
  char id_qcg[ID_RUN_LEN + 1] = "", qcg_path[PATH_MAX] = "";
  if (f->m->cgroup) insert_started_queued(f, id_qcg, qcg_path);

  sched_run **runs = NULL;
  size_t n = 0;
  int more;
  assert_int_equal(runtab_list(f->rt, NULL, NULL, 10, &runs, &n, &more), 0);
  /* Newest first: [the QUEUED one with a cgroup,] the 2 inserted, q, tree. */
  size_t skip = f->m->cgroup ? 1 : 0;
  assert_int_equal(n, 4 + skip);
  sched_run **r4 = runs + skip;
  char tree_id[ID_RUN_LEN + 1], q_id[ID_RUN_LEN + 1], cg[PATH_MAX];
  snprintf(q_id, sizeof q_id, "%s", r4[2]->run_id);
  snprintf(tree_id, sizeof tree_id, "%s", r4[3]->run_id);
  pid_t tree_pid = r4[3]->pid;
  snprintf(cg, sizeof cg, "%s", r4[3]->cgroup);
  assert_int_equal(r4[3]->status, ST(RUNNING));
  assert_int_equal(r4[2]->status, ST(QUEUED));
  assert_true(tree_pid > 0);
  stray_add(f, tree_pid);
  assert_int_equal(f->m->cgroup, cg[0] != '\0');
  runtab_list_free(runs, n);
  /* In a cgroup, the main process ends after the crash, the grandchild that left its
   * group stays: only the cgroup can tell what is left of the run. */
  if (f->m->cgroup) {
    assert_int_equal(kill(tree_pid, SIGUSR1), 0);
    int st = reap_stray(f, tree_pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }

  fx_sched(f, LIM_DEFAULT, NULL);
  char *out = output_of(f, tree_id, OUTLOG_STDOUT);
  int gpid = 0;
  int scanned = sscanf(out, "gpid=%d\n", &gpid);
  free(out);
  assert_int_equal(scanned, 1);
  stray_add(f, (pid_t)gpid);
  sched_run *t = get(f, tree_id);
  assert_int_equal(t->status, ST(LOST));
  assert_string_equal(t->error_message,
                      SCHED_LOST_MESSAGE "; its processes were killed at restart");
  assert_true(t->finished_at_ms > 0);
  run_free(t);
  if (!f->m->cgroup) assert_killed(f, tree_pid);
  assert_killed(f, (pid_t)gpid);
  if (cg[0]) LOOP_UNTIL(&f->tl, access(cg, F_OK) != 0);

  /* Not theirs: left alone. */
  sched_run *so = get(f, id_other), *sl = get(f, id_older);
  assert_int_equal(so->status, ST(LOST));
  assert_string_equal(so->error_message, SCHED_LOST_MESSAGE);
  assert_int_equal(sl->status, ST(LOST));
  assert_string_equal(sl->error_message, SCHED_LOST_MESSAGE);
  run_free(so);
  run_free(sl);
  assert_int_equal(kill(other, 0), 0);
  assert_int_equal(kill(older, 0), 0);
  strays_end(f, 0);
  if (id_qcg[0]) {
    sched_run *qc = get(f, id_qcg);
    assert_int_equal(qc->status, ST(LOST));
    assert_string_equal(qc->cgroup, qcg_path);
    assert_string_equal(qc->error_message, SCHED_LOST_MESSAGE);
    run_free(qc);
    LOOP_UNTIL(&f->tl, access(qcg_path, F_OK) != 0); /* swept */
  }

  sched_run *d = wait_terminal(f, q_id);
  assert_int_equal(d->status, ST(COMPLETED));
  assert_output(f, q_id, 0, "after\n");
  run_free(d);
}

/* ---- no fixture ------------------------------------------------------------------ */

static void test_mode_parse(void **state) {
  (void)state;
  enum sched_mode m = SCHED_DRY_RUN;
  assert_int_equal(sched_mode_parse(&m, NULL), 0);
  assert_int_equal(m, SCHED_ASYNC);
  m = SCHED_DRY_RUN;
  assert_int_equal(sched_mode_parse(&m, ""), 0);
  assert_int_equal(m, SCHED_ASYNC);
  assert_int_equal(sched_mode_parse(&m, "threaded"), 0);
  assert_int_equal(m, SCHED_THREADED);
  assert_int_equal(sched_mode_parse(&m, "dry-run"), 0);
  assert_int_equal(m, SCHED_DRY_RUN);
  assert_int_equal(sched_mode_parse(&m, "async"), 0);
  assert_int_equal(m, SCHED_ASYNC);
  static const char *const bad[] = {"ASYNC", "dry_run", "thread", " async"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(sched_mode_parse(&m, bad[i]), -EINVAL);
    assert_int_equal(m, SCHED_ASYNC);
  }
}

/* The data directory and its output/ are made with their parents; a path that cannot
 * be made is an error naming it, and sched_new on it fails cleanly. */
static void test_data_dir(void **state) {
  struct fx *f = *state;
  char path[256], err[512] = "";
  snprintf(path, sizeof path, "%s/a/b/c", f->dir);
  assert_int_equal(sched_init_data_dir(path, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/a/b/c/output", f->dir);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  snprintf(path, sizeof path, "%s/a/b/c", f->dir);
  assert_int_equal(sched_init_data_dir(path, err, sizeof err), 0); /* again: fine */

  snprintf(path, sizeof path, "%s/file", f->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  assert_true(fd >= 0);
  close(fd);
  snprintf(path, sizeof path, "%s/file/sub", f->dir);
  assert_int_equal(sched_init_data_dir(path, err, sizeof err), -ENOTDIR);
  char want[512];
  snprintf(want, sizeof want, "cannot create %s/file/sub/output: %s", f->dir, strerror(ENOTDIR));
  assert_string_equal(err, want);

  fx_open_runtab(f);
  config *cfg = load_config(LIM_DEFAULT, NULL);
  sched_opts o = fx_opts(f, cfg);
  o.data_dir = path;
  sched *sentinel = (sched *)f, *s = sentinel;
  err[0] = '\0';
  assert_int_equal(sched_new(&s, f->base, &o, err, sizeof err), -ENOTDIR);
  assert_ptr_equal(s, sentinel);
  snprintf(want, sizeof want, "%s/file/sub/secret.key: %s", f->dir, strerror(ENOTDIR));
  assert_string_equal(err, want);
  config_free(cfg);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strncmp(argv[1], "--child=", 8) == 0)
    return child_main(argv[1] + 8, argc > 2 ? argv[2] : "");
  ssize_t len = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
  if (len <= 0) return 1;
  g_self[len] = 0;
  /* The processes of a crashed "server" come back to us. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) return 1;
  if (!getenv("LOG_LEVEL")) log_set_level(LOG_LVL_ERROR);
  /* Cgroups where usable: not under valgrind, which lacks clone3. */
  const char *preload = getenv("LD_PRELOAD");
  if (preload && strstr(preload, "vgpreload")) {
    fprintf(stderr, "under valgrind (no clone3): cgroup mode not tested\n");
  } else {
    char dir[] = "/tmp/test_scheduler-cg.XXXXXX", why[512] = "";
    struct event_base *b = event_base_new();
    cgroup_root *probe = NULL;
    if (b && mkdtemp(dir) && cgroup_root_open(&probe, b, "auto", dir, why, sizeof why) == 0)
      g_have_cgroups = 1;
    else
      fprintf(stderr, "cgroup v2 is not usable here (%s): cgroup mode not tested\n", why);
    cgroup_root_free(probe);
    rmdir(dir);
    if (b) event_base_free(b);
  }
#define T(fn, m) \
  { #fn "/" #m, fn, setup, teardown, &M_##m }
#define BOTH(fn) T(fn, ASYNC), T(fn, THREADED)
  struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mode_parse),
      T(test_data_dir, ASYNC),
      BOTH(test_run_outcomes),
      T(test_run_outcomes, CG),
      T(test_stderr_tail, ASYNC),
      T(test_start_errors, ASYNC),
      T(test_output_not_stored, ASYNC),
      BOTH(test_concurrency_and_order),
      T(test_module_limit, ASYNC),
      T(test_queue_limits, ASYNC),
      T(test_no_queue, ASYNC),
      T(test_request_id, ASYNC),
      T(test_cancel_queued, ASYNC),
      BOTH(test_cancel_running),
      T(test_cancel_running, CG),
      BOTH(test_timeout),
      T(test_cancel_while_timing_out, ASYNC),
      T(test_watch, ASYNC),
      T(test_live_values, ASYNC),
      T(test_output_replay, ASYNC),
      BOTH(test_progress),
      T(test_progress, CG),
      T(test_env_and_cwd, ASYNC),
      T(test_dry_run, DRY),
      T(test_set_config, ASYNC),
      T(test_shutdown_wait, ASYNC),
      T(test_shutdown_grace, ASYNC),
      BOTH(test_shutdown_cancel),
      T(test_free_running, ASYNC),
      T(test_restart_requeues, ASYNC),
      T(test_crash_recovery, ASYNC),
      T(test_crash_recovery, CG),
  };
  size_t n = 0;
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
    const tmode *m = tests[i].initial_state;
    if (!m || !m->cgroup || g_have_cgroups) tests[n++] = tests[i];
  }
  int rc = _cmocka_run_group_tests("test_scheduler", tests, n, NULL, NULL);
  libevent_global_shutdown();
  return rc;
}
