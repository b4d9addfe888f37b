/* Unit tests for server/exec_slurm: the Slurm executor driven on a real event loop
 * with fake Slurm commands. The test writes shell scripts sbatch, squeue, scancel and
 * sacct into a temporary bin_dir; they log how they were called into files there and
 * answer what the test put in files there (an exit code, a line of stderr, stdout, or
 * "hang"), and the test plays the job's output by appending to the spool directory's
 * RUN.out and RUN.err itself. Cases: a job from submission to its end (sbatch's
 * arguments, environment and script, pending reason, node, output, exit, the spool
 * files forgotten), exit codes and signals and Slurm's end states, a job that ran
 * between two polls, output of a job still pending asking squeue at once, sbatch
 * refusing the job or not answering in time, cancelling a running job with a grace, a
 * pending one, one still being submitted or looked up, squeue failing or hanging for a
 * while, a job squeue forgets (with and without accounting), sacct's figures and a
 * cluster without accounting, taking jobs up again after a restart (by job id, by name,
 * or submitting when the name is unknown), a job released while pending, while being
 * submitted or from its own callbacks, one squeue (and one sacct) for several jobs, and
 * a job script that cannot be written. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "exec.h"
#include "log.h"
#include "slurmjob.h"
#include "../testloop.h"

/* Run ids: 26 characters, as the server's. */
#define RUN_A "01HZES00000000000000000AAA"
#define RUN_B "01HZES00000000000000000BBB"
#define RUN_C "01HZES00000000000000000CCC"

#define POLL_MS 50

/* ---- the fake Slurm commands ------------------------------------------------------ */

/* answer FILE: exits as FILE says (its first line the exit code, or "hang" to sleep
 * until killed; its second line, if not empty, printed on stderr; the rest on stdout).
 * Without FILE: nothing printed, exit 0. */
#define ANSWER_FN                                        \
  "answer() {\n"                                         \
  "  [ -e \"$1\" ] || exit 0\n"                          \
  "  { IFS= read -r rc; IFS= read -r err\n"              \
  "    [ \"$rc\" = hang ] && exec sleep 100\n"           \
  "    [ -n \"$err\" ] && printf '%s\\n' \"$err\" >&2\n" \
  "    cat; exit \"$rc\"; } < \"$1\"\n"                  \
  "}\n"

/* sbatch: writes its argv ($0 first, one a line) to sbatch.argv.RUN and its environment
 * to sbatch.env.RUN, logs RUN to sbatch.log; then waits for sbatch.go while sbatch.hold
 * exists, hangs while sbatch.sleep exists, refuses the job while sbatch.refuse exists,
 * and otherwise prints the contents of id.RUN. */
static const char FAKE_SBATCH[] =
    "#!/bin/sh\n"
    "d=${0%/*}\n"
    "run=\n"
    "for a; do case \"$a\" in --job-name=prismq-*) run=${a#--job-name=prismq-};; esac; done\n"
    "{ printf '%s\\n' \"$0\"; for a; do printf '%s\\n' \"$a\"; done; } > \"$d/sbatch.argv.$run\"\n"
    "env > \"$d/sbatch.env.$run\"\n"
    "echo \"$run\" >> \"$d/sbatch.log\"\n"
    "if [ -e \"$d/sbatch.hold\" ]; then\n"
    "  while [ ! -e \"$d/sbatch.go\" ]; do sleep 0.01; done\n"
    "fi\n"
    "[ -e \"$d/sbatch.sleep\" ] && exec sleep 100\n"
    "if [ -e \"$d/sbatch.refuse\" ]; then\n"
    "  echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\n"
    "  exit 1\n"
    "fi\n"
    "cat \"$d/id.$run\"\n";

/* squeue: logs its arguments (one line a call) to squeue.log; answers squeue.name for a
 * look-up by name, squeue.jobs otherwise. */
static const char FAKE_SQUEUE[] =
    "#!/bin/sh\n"
    "d=${0%/*}\n" ANSWER_FN
    "printf '%s\\n' \"$*\" >> \"$d/squeue.log\"\n"
    "case \" $* \" in *' --name '*) answer \"$d/squeue.name\" ;; *) answer \"$d/squeue.jobs\" ;; "
    "esac\n";

static const char FAKE_SCANCEL[] =
    "#!/bin/sh\n"
    "printf '%s\\n' \"$*\" >> \"${0%/*}/scancel.log\"\n";

static const char FAKE_SACCT[] =
    "#!/bin/sh\n"
    "d=${0%/*}\n" ANSWER_FN
    "printf '%s\\n' \"$*\" >> \"$d/sacct.log\"\n"
    "answer \"$d/sacct.answer\"\n";

#define SACCT_DISABLED "sacct: error: Slurm accounting storage is disabled"

/* ---- fixture ------------------------------------------------------------------------ */

enum { EV_OUTPUT, EV_EXIT, EV_FAIL, EV_REMOTE };

/* One callback as the job got it. */
typedef struct cbrec {
  int kind;
  int stream;                            /* EV_OUTPUT */
  char job_id[24], reason[64], node[64]; /* EV_REMOTE */
  int running;                           /* EV_REMOTE */
  exec_end end;                          /* EV_EXIT (end.why: see why_null) */
  int why_null;                          /* EV_EXIT: end.why was NULL */
  char why[400];                         /* EV_EXIT's end.why, EV_FAIL's why */
} cbrec;

#define MAX_EV 32

struct fx;

typedef struct tjob {
  struct fx *f;
  Prismq__Runner__V1__Run run;
  exec_job *j;
  cbrec ev[MAX_EV];
  int nev, overflow;
  char out[3][256]; /* the bytes of EXEC_STDOUT, EXEC_STDERR, EXEC_PROGRESS */
  size_t outlen[3];
  int nexit, nfail, nremote;
  int late;             /* callbacks after on_exit or on_fail */
  int starting;         /* inside exec_start */
  int during_start;     /* callbacks from inside exec_start */
  size_t squeue_at_end; /* squeue calls made when on_exit or on_fail fired */
  /* Called after each callback is recorded (from the loop): a test's reaction. */
  void (*hook)(struct tjob *t, const cbrec *e);
  size_t squeue_at_hook;
  int free_on; /* free_hook: the kind of callback to release the job from */
} tjob;

typedef struct fx {
  char dir[64], bin[128], spool[128];
  struct event_base *base;
  struct testloop tl;
  struct event *tick;
  exec_slurm_opts opts;
  executor *ex;
  config_module mod;
  char *none[1];
  tjob *jobs[8];
  size_t njobs;
} fx;

static void write_file(const char *path, const char *data, mode_t mode) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  assert_true(fd >= 0);
  size_t len = strlen(data);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
  /* Renamed into place: a fake reading it sees the old contents or the new, whole. */
  assert_int_equal(rename(tmp, path), 0);
}

static void append_file(const char *path, const char *data) {
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  size_t len = strlen(data);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);
}

/* The contents of a file, NUL-terminated ("" if it cannot be read); a static buffer, valid
 * until the next call. */
static const char *slurp(const char *path) {
  static char buf[1 << 16];
  size_t len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n;
    while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)n;
    close(fd);
  }
  buf[len] = '\0';
  return buf;
}

static const char *bin_path(const fx *f, const char *name) {
  static char p[2][PATH_MAX];
  static int i;
  i ^= 1;
  snprintf(p[i], sizeof p[i], "%s/%s", f->bin, name);
  return p[i];
}

static const char *spool_path(const fx *f, const char *run_id, const char *ext) {
  static char p[2][PATH_MAX];
  static int i;
  i ^= 1;
  snprintf(p[i], sizeof p[i], "%s/%s.%s", f->spool, run_id, ext);
  return p[i];
}

static int exists(const char *path) {
  struct stat sb;
  return lstat(path, &sb) == 0;
}

/* Creates the flag file bin/name (sbatch.hold, sbatch.go, ...). */
static void flag(const fx *f, const char *name) { write_file(bin_path(f, name), "", 0644); }

/* What the fake answers from bin/name: exit code rc ("hang": none, it hangs), one line
 * of stderr (may be ""), and stdout. */
static void answer(const fx *f, const char *name, const char *rc, const char *err,
                   const char *out) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s\n%s\n%s", rc, err, out);
  write_file(bin_path(f, name), buf, 0644);
}

/* The fake answering from bin/name answers exit 0 with the lines printf-formatted. */
static void answer_lines(const fx *f, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void answer_lines(const fx *f, const char *name, const char *fmt, ...) {
  char out[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out, sizeof out, fmt, ap);
  va_end(ap);
  answer(f, name, "0", "", out);
}

/* squeue -j answers these lines (SLURMJOB_SQUEUE_FORMAT), exit 0. */
#define squeue_says(f, ...) answer_lines(f, "squeue.jobs", __VA_ARGS__)

/* sbatch answers id for run_id. */
static void sbatch_id(const fx *f, const char *run_id, const char *id) {
  char name[64], text[32];
  snprintf(name, sizeof name, "id.%s", run_id);
  snprintf(text, sizeof text, "%s\n", id);
  write_file(bin_path(f, name), text, 0644);
}

/* The lines of bin/name (0 if missing). */
static size_t lines(const fx *f, const char *name) {
  const char *s = slurp(bin_path(f, name));
  size_t n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* Line i (from 0) of bin/name, without its newline; "" past the end. Static buffer. */
static const char *line_at(const fx *f, const char *name, size_t i) {
  static char out[4096];
  const char *s = slurp(bin_path(f, name));
  for (; i && *s; s++)
    if (*s == '\n') i--;
  size_t n = strcspn(s, "\n");
  snprintf(out, sizeof out, "%.*s", (int)n, s);
  return out;
}

/* Whether bin/name has the line `want`. */
static int has_line(const fx *f, const char *name, const char *want) {
  size_t n = lines(f, name);
  for (size_t i = 0; i < n; i++)
    if (!strcmp(line_at(f, name, i), want)) return 1;
  return 0;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
}

static void flag_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  *(int *)arg = 1;
}

/* Runs the loop for ms: for checking that nothing happens meanwhile. */
static void run_for(fx *f, unsigned ms) {
  int done = 0;
  struct event *timer = evtimer_new(f->base, flag_cb, &done);
  assert_non_null(timer);
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  evtimer_add(timer, &tv);
  LOOP_UNTIL(&f->tl, done);
  event_free(timer);
}

static void write_fake(const fx *f, const char *name, const char *text) {
  write_file(bin_path(f, name), text, 0755);
}

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  strcpy(f->dir, "/tmp/test_exec_slurm.XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  snprintf(f->bin, sizeof f->bin, "%s/bin", f->dir);
  snprintf(f->spool, sizeof f->spool, "%s/spool", f->dir);
  if (mkdir(f->bin, 0755) != 0 || mkdir(f->spool, 0755) != 0) return -1;
  write_fake(f, "sbatch", FAKE_SBATCH);
  write_fake(f, "squeue", FAKE_SQUEUE);
  write_fake(f, "scancel", FAKE_SCANCEL);
  write_fake(f, "sacct", FAKE_SACCT);
  if (!(f->base = testloop_base_new())) return -1;
  testloop_init(&f->tl, f->base);
  /* Some waits are for a fake to have written a file, which raises no event of the
   * loop's: the tick makes LOOP_UNTIL look again. */
  f->tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
  struct timeval tv = {0, 10000};
  if (!f->tick || event_add(f->tick, &tv) != 0) return -1;
  exec_slurm_opts o = EXEC_SLURM_OPTS_INIT;
  o.spool_dir = f->spool;
  o.bin_dir = f->bin;
  o.poll_interval_ms = POLL_MS;
  o.command_timeout_ms = 10000;
  o.grace_ms = 10000;
  f->opts = o;
  f->none[0] = NULL;
  f->mod.slurm.sbatch_args = f->none;
  f->mod.slurm.env = f->none;
  *state = f;
  return 0;
}

static void ex_new(fx *f) {
  char err[512] = "";
  int rc = exec_slurm_new(&f->ex, f->base, &f->opts, err, sizeof err);
  if (rc != 0) fail_msg("exec_slurm_new: %d %s", rc, err);
}

static void run_str_free(char *s) {
  if (s != protobuf_c_empty_string) free(s);
}

static void tjob_free(tjob *t) {
  exec_job_free(t->j);
  t->j = NULL;
  run_str_free(t->run.run_id);
  run_str_free(t->run.executor);
  run_str_free(t->run.job_id);
  run_str_free(t->run.node);
  run_str_free(t->run.pending_reason);
  free(t);
}

static int rm_entry(const char *path, const struct stat *st, int flag_, struct FTW *ftw) {
  (void)st;
  (void)flag_;
  (void)ftw;
  return remove(path);
}

/* True once this process has no child left, not even a zombie. */
static int no_children(void) {
  siginfo_t si;
  return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD;
}

static int teardown(void **state) {
  fx *f = *state;
  for (size_t i = 0; i < f->njobs; i++) tjob_free(f->jobs[i]);
  exec_free(f->ex);
  /* Commands still in flight were killed by exec_free: proc reaps them from the loop. */
  LOOP_UNTIL(&f->tl, no_children());
  event_free(f->tick);
  testloop_fini(&f->tl);
  event_base_free(f->base);
  nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

/* ---- the job's callbacks ---------------------------------------------------------- */

static cbrec *record(tjob *t, int kind) {
  static cbrec scratch;
  if (t->nexit || t->nfail) t->late++;
  if (t->starting) t->during_start++;
  cbrec *e = &scratch;
  if (t->nev < MAX_EV)
    e = &t->ev[t->nev++];
  else
    t->overflow = 1;
  memset(e, 0, sizeof *e);
  e->kind = kind;
  return e;
}

static void on_output(void *arg, int stream, const uint8_t *data, size_t len) {
  tjob *t = arg;
  cbrec *e = record(t, EV_OUTPUT);
  e->stream = stream;
  if (stream >= 1 && stream <= 3) {
    size_t i = (size_t)stream - 1, room = sizeof t->out[i] - 1 - t->outlen[i];
    if (len > room) {
      t->overflow = 1;
      len = room;
    }
    memcpy(t->out[i] + t->outlen[i], data, len);
    t->outlen[i] += len;
  }
  if (t->hook) t->hook(t, e);
}

static void on_exit_cb(void *arg, const exec_end *end) {
  tjob *t = arg;
  cbrec *e = record(t, EV_EXIT);
  e->end = *end;
  e->why_null = end->why == NULL;
  snprintf(e->why, sizeof e->why, "%s", end->why ? end->why : "");
  e->end.why = NULL;
  t->nexit++;
  t->squeue_at_end = lines(t->f, "squeue.log");
  if (t->hook) t->hook(t, e);
}

static void on_fail(void *arg, const char *why) {
  tjob *t = arg;
  cbrec *e = record(t, EV_FAIL);
  snprintf(e->why, sizeof e->why, "%s", why ? why : "(null)");
  t->nfail++;
  t->squeue_at_end = lines(t->f, "squeue.log");
  if (t->hook) t->hook(t, e);
}

static void on_remote(void *arg, const exec_remote *st) {
  tjob *t = arg;
  cbrec *e = record(t, EV_REMOTE);
  snprintf(e->job_id, sizeof e->job_id, "%s", st->job_id ? st->job_id : "(null)");
  snprintf(e->reason, sizeof e->reason, "%s", st->reason ? st->reason : "(null)");
  snprintf(e->node, sizeof e->node, "%s", st->node ? st->node : "(null)");
  e->running = st->running;
  t->nremote++;
  if (t->hook) t->hook(t, e);
}

/* The callbacks' kinds in order, one letter each: r on_remote, o/e/p output of stdout,
 * stderr, progress (one letter for consecutive chunks of a stream), x on_exit, f on_fail. */
static const char *seq(const tjob *t) {
  static char s[MAX_EV + 1];
  size_t n = 0;
  for (int i = 0; i < t->nev; i++) {
    const cbrec *e = &t->ev[i];
    char c = e->kind == EV_REMOTE       ? 'r'
             : e->kind == EV_EXIT       ? 'x'
             : e->kind == EV_FAIL       ? 'f'
             : e->stream == EXEC_STDOUT ? 'o'
             : e->stream == EXEC_STDERR ? 'e'
                                        : 'p';
    if (n && (c == 'o' || c == 'e' || c == 'p') && s[n - 1] == c) continue;
    s[n++] = c;
  }
  s[n] = '\0';
  return s;
}

/* The i-th (from 0) callback of `kind`. */
static const cbrec *nth(const tjob *t, int kind, int i) {
  for (int k = 0; k < t->nev; k++)
    if (t->ev[k].kind == kind && i-- == 0) return &t->ev[k];
  fail_msg("no callback %d of kind %d (%s)", i, kind, seq(t));
  return NULL;
}

static void assert_remote(const cbrec *e, const char *job_id, int running, const char *reason,
                          const char *node) {
  assert_int_equal(e->kind, EV_REMOTE);
  assert_string_equal(e->job_id, job_id);
  assert_int_equal(e->running, running);
  assert_string_equal(e->reason, reason);
  assert_string_equal(e->node, node);
}

/* The exit callback (exactly one, and nothing after it). */
static const cbrec *the_end(const tjob *t) {
  assert_int_equal(t->nexit, 1);
  assert_int_equal(t->nfail, 0);
  assert_int_equal(t->late, 0);
  assert_int_equal(t->during_start, 0);
  assert_false(t->overflow);
  return nth(t, EV_EXIT, 0);
}

static const char *const ARGV[] = {"/bin/echo", "hi there", NULL};
static const char *const ENVP[] = {"PATH=/usr/bin:/bin", NULL};

static tjob *tjob_new(fx *f, const char *run_id) {
  assert_int_equal(strlen(run_id), 26);
  assert_true(f->njobs < sizeof f->jobs / sizeof *f->jobs);
  tjob *t = calloc(1, sizeof *t);
  assert_non_null(t);
  Prismq__Runner__V1__Run init = PRISMQ__RUNNER__V1__RUN__INIT;
  t->run = init;
  t->run.run_id = strdup(run_id);
  assert_non_null(t->run.run_id);
  t->f = f;
  f->jobs[f->njobs++] = t;
  return t;
}

static exec_spec spec_of(tjob *t) {
  exec_spec s = {0};
  s.run = &t->run;
  s.mod = &t->f->mod;
  s.argv = ARGV;
  s.envp = ENVP;
  s.on_output = on_output;
  s.on_exit = on_exit_cb;
  s.on_fail = on_fail;
  s.on_remote = on_remote;
  s.arg = t;
  return s;
}

static void start_spec(tjob *t, const exec_spec *s) {
  char err[512] = "";
  t->starting = 1;
  int rc = exec_start(t->f->ex, &t->j, s, err, sizeof err);
  t->starting = 0;
  if (rc != 0) fail_msg("exec_start: %d %s", rc, err);
  assert_non_null(t->j);
  assert_string_equal(t->run.executor, "slurm");
}

/* A new job of run_id, submitted (sbatch answering id). */
static tjob *start(fx *f, const char *run_id, const char *id) {
  tjob *t = tjob_new(f, run_id);
  if (id) sbatch_id(f, run_id, id);
  exec_spec s = spec_of(t);
  start_spec(t, &s);
  return t;
}

static void job_release(tjob *t) {
  exec_job_free(t->j);
  t->j = NULL;
}

/* ---- 1. a job from submission to its end ------------------------------------------- */

static void test_happy_path(void **state) {
  fx *f = *state;
  /* sbatch runs with the run's environment, the module's slurm.env and SLURM_CONF. */
  char *menv[] = {"PRISMQ_TEST_ENV=from-module", NULL};
  f->mod.slurm.env = menv;
  f->mod.slurm.nenv = 1;
  assert_int_equal(setenv("SLURM_CONF", "/etc/slurm/test-es.conf", 1), 0);
  ex_new(f);
  unsetenv("SLURM_CONF");

  squeue_says(f, "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = tjob_new(f, RUN_A);
  sbatch_id(f, RUN_A, "17");
  exec_spec s = spec_of(t);
  s.timeout_ms = 60000; /* + grace 10 s + a poll: --time=2 */
  start_spec(t, &s);

  LOOP_UNTIL(&f->tl, t->nremote == 2);
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nremote == 3);
  append_file(spool_path(f, RUN_A, "out"), "hello\n");
  LOOP_UNTIL(&f->tl, t->outlen[0] == 6);
  append_file(spool_path(f, RUN_A, "err"), "oops\n");
  LOOP_UNTIL(&f->tl, t->outlen[1] == 5);
  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);

  assert_string_equal(seq(t), "rrroex");
  assert_remote(nth(t, EV_REMOTE, 0), "17", 0, "", "");
  assert_remote(nth(t, EV_REMOTE, 1), "17", 0, "Priority", "");
  assert_remote(nth(t, EV_REMOTE, 2), "17", 1, "", "n1");
  assert_memory_equal(t->out[0], "hello\n", 6);
  assert_memory_equal(t->out[1], "oops\n", 5);
  const cbrec *e = the_end(t);
  assert_int_equal(e->end.exit_status, 0);
  assert_int_equal(e->end.term_signal, 0);
  assert_int_equal(e->end.timed_out, 0);
  assert_true(e->why_null);

  /* sbatch, once, with the job's name, files and script (last). */
  assert_int_equal(lines(f, "sbatch.log"), 1);
  char script[PATH_MAX], want[PATH_MAX + 16];
  snprintf(script, sizeof script, "%s", spool_path(f, RUN_A, "sh"));
  const char *argvf = "sbatch.argv." RUN_A;
  size_t n = lines(f, argvf);
  assert_true(n >= 4);
  assert_string_equal(line_at(f, argvf, 0), bin_path(f, "sbatch"));
  assert_string_equal(line_at(f, argvf, 1), "--parsable");
  assert_true(has_line(f, argvf, "--job-name=prismq-" RUN_A));
  snprintf(want, sizeof want, "--output=%s", spool_path(f, RUN_A, "out"));
  assert_true(has_line(f, argvf, want));
  snprintf(want, sizeof want, "--error=%s", spool_path(f, RUN_A, "err"));
  assert_true(has_line(f, argvf, want));
  assert_true(has_line(f, argvf, "--open-mode=append"));
  assert_true(has_line(f, argvf, "--time=2"));
  assert_string_equal(line_at(f, argvf, n - 1), script);
  const char *envf = "sbatch.env." RUN_A;
  assert_true(has_line(f, envf, "PATH=/usr/bin:/bin"));
  assert_true(has_line(f, envf, "PRISMQ_TEST_ENV=from-module"));
  assert_true(has_line(f, envf, "SLURM_CONF=/etc/slurm/test-es.conf"));
  /* The script execs the command. */
  char *expect = slurmjob_script(RUN_A, ARGV, NULL);
  assert_string_equal(slurp(script), expect);
  free(expect);
  assert_non_null(strstr(slurp(script), "exec '/bin/echo' 'hi there'"));
  /* squeue asked for the job by id; nothing was cancelled; sacct asked once. */
  assert_non_null(strstr(line_at(f, "squeue.log", 0), " -j 17 "));
  assert_false(exists(bin_path(f, "scancel.log")));
  assert_int_equal(lines(f, "sacct.log"), 1);
  assert_string_equal(line_at(f, "sacct.log", 0), "-n -P -j 17 -o " SLURMJOB_SACCT_FIELDS);

  job_release(t);
  assert_true(exists(spool_path(f, RUN_A, "sh")));
  exec_forget(f->ex, &t->run);
  assert_false(exists(spool_path(f, RUN_A, "sh")));
  assert_false(exists(spool_path(f, RUN_A, "out")));
  assert_false(exists(spool_path(f, RUN_A, "err")));
  f->mod.slurm.env = f->none;
  f->mod.slurm.nenv = 0;
}

/* ---- 2. exit codes, signals and Slurm's end states --------------------------------- */

static void test_exit_states(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f,
              "21|prismq-%s|RUNNING|0|n1|None\n"
              "22|prismq-%s|RUNNING|0|n2|None\n"
              "23|prismq-%s|RUNNING|0|n3|None\n",
              RUN_A, RUN_B, RUN_C);
  tjob *a = start(f, RUN_A, "21");
  tjob *b = start(f, RUN_B, "22");
  tjob *c = start(f, RUN_C, "23");
  LOOP_UNTIL(&f->tl, a->nremote == 2 && b->nremote == 2 && c->nremote == 2);
  squeue_says(f,
              "21|prismq-%s|FAILED|768|n1|NonZeroExitCode\n"
              "22|prismq-%s|CANCELLED|9|n2|None\n"
              "23|prismq-%s|TIMEOUT|15|n3|TimeLimit\n",
              RUN_A, RUN_B, RUN_C);
  LOOP_UNTIL(&f->tl, a->nexit + a->nfail && b->nexit + b->nfail && c->nexit + c->nfail);

  assert_string_equal(seq(a), "rrx");
  const cbrec *e = the_end(a);
  assert_int_equal(e->end.exit_status, 3);
  assert_int_equal(e->end.term_signal, 0);
  assert_int_equal(e->end.timed_out, 0);
  assert_true(e->why_null);

  assert_string_equal(seq(b), "rrx");
  e = the_end(b);
  assert_int_equal(e->end.exit_status, -1);
  assert_int_equal(e->end.term_signal, 9);
  assert_int_equal(e->end.timed_out, 0);
  assert_false(e->why_null); /* not cancelled by us */
  assert_non_null(strstr(e->why, "cancelled on the cluster"));
  assert_non_null(strstr(e->why, "22"));

  assert_string_equal(seq(c), "rrx");
  e = the_end(c);
  assert_int_equal(e->end.exit_status, -1);
  assert_int_equal(e->end.term_signal, 15);
  assert_int_equal(e->end.timed_out, 1);
  assert_false(e->why_null);
  assert_non_null(strstr(e->why, "time limit"));
  assert_false(exists(bin_path(f, "scancel.log")));
}

/* A job that ran and ended between two polls: it is told running (on its node) before
 * its end. */
static void test_ran_between_polls(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n7|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrrx");
  assert_remote(nth(t, EV_REMOTE, 2), "17", 1, "", "n7");
  assert_int_equal(the_end(t)->end.exit_status, 0);
}

/* Output from a job squeue last said was pending: the job runs, and squeue is asked at
 * once where, rather than an interval later. */
static void test_output_while_pending_polls(void **state) {
  fx *f = *state;
  f->opts.poll_interval_ms = 60000; /* beyond the guard: only the output can ask */
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n2|None\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 1);
  assert_false(exists(bin_path(f, "squeue.log")));
  append_file(spool_path(f, RUN_A, "out"), "early\n");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  assert_string_equal(seq(t), "ror");
  assert_remote(nth(t, EV_REMOTE, 1), "17", 1, "", "n2");
  assert_memory_equal(t->out[0], "early\n", 6);
  assert_int_equal(lines(f, "squeue.log"), 1);
}

/* ---- 3. sbatch refuses the job ------------------------------------------------------ */

static void test_sbatch_refused(void **state) {
  fx *f = *state;
  ex_new(f);
  flag(f, "sbatch.refuse");
  tjob *t = start(f, RUN_A, NULL);
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "f");
  assert_int_equal(t->nfail, 1);
  const cbrec *e = nth(t, EV_FAIL, 0);
  assert_non_null(strstr(e->why,
                         "sbatch: error: Batch job submission failed: Invalid partition "
                         "name specified"));
  /* Nothing goes on for it: no poll, no cancel, no further callback. */
  run_for(f, 6 * POLL_MS);
  assert_int_equal(t->nev, 1);
  assert_int_equal(t->late, 0);
  assert_int_equal(t->during_start, 0);
  assert_int_equal(lines(f, "sbatch.log"), 1);
  assert_false(exists(bin_path(f, "squeue.log")));
  assert_false(exists(bin_path(f, "scancel.log")));
  job_release(t);
  exec_free(f->ex);
  f->ex = NULL;
}

/* ---- 4. cancelling ---------------------------------------------------------------------- */

static void test_terminate_running_grace(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  assert_remote(nth(t, EV_REMOTE, 1), "17", 1, "", "n1");

  uint64_t t0 = now_ms();
  exec_terminate(t->j, 300);
  exec_terminate(t->j, 300); /* idempotent */
  LOOP_UNTIL(&f->tl, lines(f, "scancel.log") >= 1);
  assert_string_equal(line_at(f, "scancel.log", 0), "--full --signal=TERM 17");
  LOOP_UNTIL(&f->tl, lines(f, "scancel.log") >= 2);
  assert_true(now_ms() - t0 >= 300);
  assert_string_equal(line_at(f, "scancel.log", 1), "--full --signal=KILL 17");
  assert_int_equal(t->nexit + t->nfail, 0);

  squeue_says(f, "17|prismq-" RUN_A "|CANCELLED|9|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrx");
  const cbrec *e = the_end(t);
  assert_int_equal(e->end.exit_status, -1);
  assert_int_equal(e->end.term_signal, 9);
  assert_true(e->why_null); /* we asked for it */
  assert_int_equal(lines(f, "scancel.log"), 2);
}

static void test_kill_running(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  exec_kill(t->j);
  LOOP_UNTIL(&f->tl, lines(f, "scancel.log") >= 1);
  assert_string_equal(line_at(f, "scancel.log", 0), "--full --signal=KILL 17");
  exec_kill(t->j); /* sent once */
  squeue_says(f, "17|prismq-" RUN_A "|CANCELLED|9|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrx");
  const cbrec *e = the_end(t);
  assert_int_equal(e->end.term_signal, 9);
  assert_true(e->why_null);
  assert_int_equal(lines(f, "scancel.log"), 1);
}

static void test_terminate_pending(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f, "18|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = start(f, RUN_A, "18");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  exec_terminate(t->j, 5000);
  LOOP_UNTIL(&f->tl, lines(f, "scancel.log") >= 1);
  /* A pending job has no processes to signal: a plain cancel. */
  assert_string_equal(line_at(f, "scancel.log", 0), "18");
  squeue_says(f, "18|prismq-" RUN_A "|CANCELLED|0||None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrx");
  const cbrec *e = the_end(t);
  assert_true(e->why_null);
  assert_int_equal(e->end.timed_out, 0);
  assert_int_equal(lines(f, "scancel.log"), 1);
}

static void test_terminate_submitting(void **state) {
  fx *f = *state;
  ex_new(f);
  flag(f, "sbatch.hold");
  squeue_says(f, "19|prismq-" RUN_A "|PENDING|0||None\n");
  tjob *t = start(f, RUN_A, "19");
  LOOP_UNTIL(&f->tl, exists(bin_path(f, "sbatch.log")));
  exec_terminate(t->j, 1000);
  assert_int_equal(t->nev, 0);
  flag(f, "sbatch.go");
  /* Once its id is known, the job is cancelled. */
  LOOP_UNTIL(&f->tl, lines(f, "scancel.log") >= 1);
  assert_string_equal(line_at(f, "scancel.log", 0), "19");
  assert_string_equal(seq(t), "r");
  assert_remote(nth(t, EV_REMOTE, 0), "19", 0, "", "");
  squeue_says(f, "19|prismq-" RUN_A "|CANCELLED|0||None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rx");
  assert_true(the_end(t)->why_null);
  assert_int_equal(lines(f, "scancel.log"), 1);
  assert_int_equal(lines(f, "sbatch.log"), 1);
}

/* ---- 5. squeue failing or hanging for a while -------------------------------------- */

static void test_squeue_fails_then_answers(void **state) {
  fx *f = *state;
  f->opts.command_timeout_ms = 1000;
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);

  answer(f, "squeue.jobs", "1", "slurm_load_jobs error: Unable to contact slurm controller", "");
  size_t n0 = lines(f, "squeue.log");
  /* Calls n0+1.. started after the change: three of them failed and were answered
   * once a fourth has started (polls never overlap). */
  LOOP_UNTIL(&f->tl, lines(f, "squeue.log") >= n0 + 4);
  assert_int_equal(t->nev, 2);

  /* One that hangs is ended after command_timeout_ms, and polling goes on. */
  answer(f, "squeue.jobs", "hang", "", "");
  size_t n1 = lines(f, "squeue.log");
  LOOP_UNTIL(&f->tl, lines(f, "squeue.log") >= n1 + 1);
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n4|None\n");
  LOOP_UNTIL(&f->tl, t->nremote == 3);
  assert_remote(nth(t, EV_REMOTE, 2), "17", 1, "", "n4");
  assert_int_equal(t->nev, 3);

  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n4|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrrx");
  assert_int_equal(the_end(t)->end.exit_status, 0);
}

/* ---- 6. a job squeue no longer knows ------------------------------------------------ */

/* Once the job is pending for Priority, squeue no longer knows it. */
static void vanish_hook(tjob *t, const cbrec *e) {
  if (e->kind != EV_REMOTE || strcmp(e->reason, "Priority") != 0) return;
  /* From squeue's answer: no squeue is in flight, the next ones all answer this. */
  answer(t->f, "squeue.jobs", "1", "slurm_load_jobs error: Invalid job id specified", "");
  t->squeue_at_hook = lines(t->f, "squeue.log");
}

static tjob *vanishing_job(fx *f) {
  squeue_says(f, "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = tjob_new(f, RUN_A);
  t->hook = vanish_hook;
  sbatch_id(f, RUN_A, "17");
  exec_spec s = spec_of(t);
  start_spec(t, &s);
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrx");
  /* Gone after three polls that did not name it. */
  assert_true(t->squeue_at_hook > 0);
  assert_int_equal(t->squeue_at_end - t->squeue_at_hook, 3);
  return t;
}

static void test_vanished_without_accounting(void **state) {
  fx *f = *state;
  ex_new(f);
  answer(f, "sacct.answer", "1", SACCT_DISABLED, "");
  tjob *t = vanishing_job(f);
  const cbrec *e = the_end(t);
  assert_int_equal(e->end.exit_status, -1);
  assert_int_equal(e->end.term_signal, 0);
  assert_false(e->why_null);
  assert_non_null(strstr(e->why, "no longer known"));
  assert_int_equal(e->end.user_cpu_ms, 0);
  assert_int_equal(e->end.max_rss_kb, 0);
  assert_false(exists(bin_path(f, "scancel.log")));
}

static void test_vanished_with_accounting(void **state) {
  fx *f = *state;
  ex_new(f);
  answer(f, "sacct.answer", "0", "",
         "17|FAILED|2:0|00:01.500|\n"
         "17.batch|FAILED|2:0|00:01.500|2048K\n");
  tjob *t = vanishing_job(f);
  /* sacct tells how it ended. */
  const cbrec *e = the_end(t);
  assert_int_equal(e->end.exit_status, 2);
  assert_int_equal(e->end.term_signal, 0);
  assert_int_equal(e->end.user_cpu_ms, 1500);
  assert_int_equal(e->end.max_rss_kb, 2048);
  assert_true(e->why_null);
  assert_int_equal(lines(f, "sacct.log"), 1);
  assert_string_equal(line_at(f, "sacct.log", 0), "-n -P -j 17 -o " SLURMJOB_SACCT_FIELDS);
}

/* ---- 7. accounting ------------------------------------------------------------------ */

static void test_accounting(void **state) {
  fx *f = *state;
  ex_new(f);
  answer(f, "sacct.answer", "0", "",
         "17|COMPLETED|0:0|00:01.500|\n"
         "17.batch|COMPLETED|0:0|00:01.500|2048K\n"
         "17.extern|COMPLETED|0:0|00:00:00|1024K\n");
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrx");
  const cbrec *e = the_end(t);
  assert_int_equal(e->end.exit_status, 0);
  assert_int_equal(e->end.user_cpu_ms, 1500);
  assert_int_equal(e->end.max_rss_kb, 2048);
  assert_int_equal(lines(f, "sacct.log"), 1);
}

static void test_no_accounting_asked_once(void **state) {
  fx *f = *state;
  ex_new(f);
  answer(f, "sacct.answer", "1", SACCT_DISABLED, "");
  squeue_says(f,
              "71|prismq-%s|COMPLETED|0|n1|None\n"
              "72|prismq-%s|RUNNING|0|n2|None\n",
              RUN_A, RUN_B);
  tjob *a = start(f, RUN_A, "71");
  tjob *b = start(f, RUN_B, "72");
  LOOP_UNTIL(&f->tl, a->nexit + a->nfail > 0 && b->nremote == 2);
  const cbrec *e = the_end(a);
  assert_int_equal(e->end.exit_status, 0);
  assert_int_equal(e->end.user_cpu_ms, 0);
  assert_int_equal(e->end.max_rss_kb, 0);
  assert_int_equal(lines(f, "sacct.log"), 1);

  squeue_says(f, "72|prismq-" RUN_B "|COMPLETED|256|n2|None\n");
  LOOP_UNTIL(&f->tl, b->nexit + b->nfail > 0);
  e = the_end(b);
  assert_int_equal(e->end.exit_status, 1);
  assert_int_equal(e->end.user_cpu_ms, 0);
  assert_int_equal(e->end.max_rss_kb, 0);
  /* The cluster keeps no accounting: not asked again. */
  assert_int_equal(lines(f, "sacct.log"), 1);
}

/* ---- 8. taking jobs up again after a restart ------------------------------------------ */

static void test_resume_by_job_id(void **state) {
  fx *f = *state;
  ex_new(f);
  write_file(spool_path(f, RUN_A, "out"), "abcdef", 0644);
  squeue_says(f, "42|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  tjob *t = tjob_new(f, RUN_A);
  t->run.job_id = strdup("42");
  t->run.node = strdup("n1");
  t->run.status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING;
  exec_spec s = spec_of(t);
  s.resume = 1;
  s.resume_bytes[0] = 3; /* "abc" is in the run's log already */
  s.resume_bytes[1] = 0;
  start_spec(t, &s);
  LOOP_UNTIL(&f->tl, t->outlen[0] == 3);
  append_file(spool_path(f, RUN_A, "err"), "late\n");
  LOOP_UNTIL(&f->tl, t->outlen[1] == 5);
  squeue_says(f, "42|prismq-" RUN_A "|COMPLETED|0|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "oex");
  assert_memory_equal(t->out[0], "def", 3);
  assert_memory_equal(t->out[1], "late\n", 5);
  assert_int_equal(the_end(t)->end.exit_status, 0);
  assert_false(exists(bin_path(f, "sbatch.log")));
  assert_false(exists(spool_path(f, RUN_A, "sh")));
  assert_non_null(strstr(line_at(f, "squeue.log", 0), " -j 42 "));
}

static void test_resume_found_by_name(void **state) {
  fx *f = *state;
  ex_new(f);
  /* Another run's job in the answer is not taken for this one. */
  answer_lines(f, "squeue.name",
               "99|prismq-%s|RUNNING|0|n9|None\n"
               "55|prismq-%s|PENDING|0||Resources\n",
               RUN_B, RUN_A);
  squeue_says(f, "55|prismq-" RUN_A "|PENDING|0||Resources\n");
  tjob *t = tjob_new(f, RUN_A);
  exec_spec s = spec_of(t);
  s.resume = 1;
  start_spec(t, &s);
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  assert_remote(nth(t, EV_REMOTE, 0), "55", 0, "", "");
  assert_remote(nth(t, EV_REMOTE, 1), "55", 0, "Resources", "");
  assert_non_null(strstr(line_at(f, "squeue.log", 0), " --name prismq-" RUN_A " "));
  squeue_says(f, "55|prismq-" RUN_A "|RUNNING|0|n5|None\n");
  LOOP_UNTIL(&f->tl, t->nremote == 3);
  squeue_says(f, "55|prismq-" RUN_A "|COMPLETED|0|n5|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrrx");
  assert_int_equal(the_end(t)->end.exit_status, 0);
  assert_false(exists(bin_path(f, "sbatch.log")));
}

static void test_resume_not_found_submits(void **state) {
  fx *f = *state;
  ex_new(f);
  answer(f, "squeue.name", "0", "", "99|prismq-" RUN_B "|RUNNING|0|n9|None\n");
  squeue_says(f, "56|prismq-" RUN_A "|RUNNING|0|n5|None\n");
  tjob *t = tjob_new(f, RUN_A);
  sbatch_id(f, RUN_A, "56");
  exec_spec s = spec_of(t);
  s.resume = 1;
  start_spec(t, &s);
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  squeue_says(f, "56|prismq-" RUN_A "|COMPLETED|0|n5|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrx");
  assert_remote(nth(t, EV_REMOTE, 0), "56", 0, "", "");
  assert_int_equal(the_end(t)->end.exit_status, 0);
  assert_non_null(strstr(line_at(f, "squeue.log", 0), " --name prismq-" RUN_A " "));
  assert_int_equal(lines(f, "sbatch.log"), 1);
}

/* ---- 9. sbatch does not answer in time -------------------------------------------------- */

static void test_sbatch_timeout_looks_up(void **state) {
  fx *f = *state;
  f->opts.command_timeout_ms = 500;
  ex_new(f);
  flag(f, "sbatch.sleep");
  /* The controller did take the job. */
  answer(f, "squeue.name", "0", "", "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  squeue_says(f, "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  assert_remote(nth(t, EV_REMOTE, 0), "17", 0, "", "");
  assert_remote(nth(t, EV_REMOTE, 1), "17", 0, "Priority", "");
  assert_int_equal(lines(f, "sbatch.log"), 1);
  assert_non_null(strstr(line_at(f, "squeue.log", 0), " --name prismq-" RUN_A " "));
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nremote == 3);
  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n1|None\n");
  LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
  assert_string_equal(seq(t), "rrrx");
  assert_int_equal(lines(f, "sbatch.log"), 1);
}

/* ---- 10. releasing a job -------------------------------------------------------------- */

static void test_free_pending(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|PENDING|0||Priority\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  job_release(t);
  /* Its end is no one's business any more; the job goes on on the cluster. */
  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n1|None\n");
  append_file(spool_path(f, RUN_A, "out"), "after\n");
  run_for(f, 6 * POLL_MS);
  assert_int_equal(t->nev, 2);
  assert_false(exists(bin_path(f, "scancel.log")));
  exec_free(f->ex);
  f->ex = NULL;
}

static void test_free_while_submitting(void **state) {
  fx *f = *state;
  ex_new(f);
  flag(f, "sbatch.hold");
  tjob *t = start(f, RUN_A, "17");
  tjob *u = start(f, RUN_B, "18");
  LOOP_UNTIL(&f->tl, lines(f, "sbatch.log") == 2);
  job_release(t);
  job_release(u);
  /* The sbatches answer after their jobs were released, one with an id, the other with
   * nothing (a refusal): no callback, no cancel. */
  write_file(bin_path(f, "id." RUN_A), "", 0644);
  flag(f, "sbatch.go");
  run_for(f, 6 * POLL_MS);
  assert_int_equal(t->nev, 0);
  assert_int_equal(u->nev, 0);
  assert_false(exists(bin_path(f, "scancel.log")));
  /* And the executor goes with a command perhaps still in flight. */
  exec_free(f->ex);
  f->ex = NULL;
}

static void test_free_executor_with_command_in_flight(void **state) {
  fx *f = *state;
  ex_new(f);
  flag(f, "sbatch.hold");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, lines(f, "sbatch.log") == 1);
  job_release(t);
  exec_free(f->ex); /* sbatch still waiting: killed */
  f->ex = NULL;
  LOOP_UNTIL(&f->tl, no_children());
  assert_int_equal(t->nev, 0);
}

/* ---- 11. one squeue for all jobs ---------------------------------------------------- */

static int str_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* The ids of `-j IDS` in line, sorted, comma-separated; "" without -j. */
static const char *ids_of(const char *line) {
  static char out[256];
  out[0] = '\0';
  const char *p = strstr(line, " -j ");
  if (!p) return out;
  p += 4;
  char ids[8][24];
  size_t n = 0;
  while (*p && *p != ' ' && n < 8) {
    size_t k = strcspn(p, ", ");
    snprintf(ids[n++], sizeof ids[0], "%.*s", (int)k, p);
    p += k + (*(p + k) == ',');
  }
  qsort(ids, n, sizeof ids[0], str_cmp);
  for (size_t i = 0; i < n; i++)
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? "," : "", ids[i]);
  return out;
}

static void test_one_squeue_for_all(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f,
              "31|prismq-%s|PENDING|0||None\n"
              "32|prismq-%s|PENDING|0||None\n"
              "33|prismq-%s|PENDING|0||None\n",
              RUN_A, RUN_B, RUN_C);
  tjob *t[3] = {start(f, RUN_A, "31"), start(f, RUN_B, "32"), start(f, RUN_C, "33")};
  LOOP_UNTIL(&f->tl, t[0]->nremote && t[1]->nremote && t[2]->nremote);
  /* The pass under way may still ask, in squeues of its own, for jobs whose ids came
   * after it began: when the last id came, one such squeue may have been started but
   * not yet logged, and one more may follow. Every later pass asks for the three at
   * once. */
  size_t n0 = lines(f, "squeue.log");
  LOOP_UNTIL(&f->tl, lines(f, "squeue.log") >= n0 + 4);
  for (size_t i = n0 + 2; i < n0 + 4; i++) {
    char line[4096];
    snprintf(line, sizeof line, "%s", line_at(f, "squeue.log", i));
    assert_string_equal(ids_of(line), "31,32,33");
  }
  squeue_says(f,
              "31|prismq-%s|RUNNING|0|n1|None\n"
              "32|prismq-%s|RUNNING|0|n1|None\n"
              "33|prismq-%s|RUNNING|0|n1|None\n",
              RUN_A, RUN_B, RUN_C);
  LOOP_UNTIL(&f->tl, t[0]->nremote == 2 && t[1]->nremote == 2 && t[2]->nremote == 2);
  squeue_says(f,
              "31|prismq-%s|COMPLETED|0|n1|None\n"
              "32|prismq-%s|COMPLETED|0|n1|None\n"
              "33|prismq-%s|COMPLETED|0|n1|None\n",
              RUN_A, RUN_B, RUN_C);
  LOOP_UNTIL(&f->tl, t[0]->nexit && t[1]->nexit && t[2]->nexit);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(seq(t[i]), "rrx");
    assert_int_equal(the_end(t[i])->end.exit_status, 0);
  }
  /* Ended in the same pass: one sacct for the three. */
  assert_int_equal(lines(f, "sacct.log"), 1);
  char line[4096];
  snprintf(line, sizeof line, "%s", line_at(f, "sacct.log", 0));
  assert_string_equal(ids_of(line), "31,32,33");
}

/* ---- 12. the job script cannot be written ---------------------------------------------- */

static void test_script_unwritable(void **state) {
  fx *f = *state;
  ex_new(f);
  /* A directory where the script goes: open(2) fails even for root. */
  assert_int_equal(mkdir(spool_path(f, RUN_A, "sh"), 0755), 0);
  tjob *t = tjob_new(f, RUN_A);
  sbatch_id(f, RUN_A, "17");
  exec_spec s = spec_of(t);
  char err[512] = "";
  t->starting = 1;
  int rc = exec_start(f->ex, &t->j, &s, err, sizeof err);
  t->starting = 0;
  /* exec.h: either exec_start fails with no callback to come, or it succeeds and
   * on_fail fires from the loop; never a callback from inside exec_start. */
  assert_int_equal(t->during_start, 0);
  if (rc < 0) {
    assert_null(t->j);
    assert_true(err[0] != '\0');
    run_for(f, 4 * POLL_MS);
    assert_int_equal(t->nev, 0);
  } else {
    LOOP_UNTIL(&f->tl, t->nexit + t->nfail > 0);
    assert_string_equal(seq(t), "f");
    assert_non_null(strstr(nth(t, EV_FAIL, 0)->why, spool_path(f, RUN_A, "sh")));
  }
  assert_false(exists(bin_path(f, "sbatch.log")));
  rmdir(spool_path(f, RUN_A, "sh"));
}

/* ---- 13. releasing a job from its own callbacks ---------------------------------------- */

/* exec.h: from inside a callback the user may call exec_job_free on the same job. */
static void free_hook(tjob *t, const cbrec *e) {
  if (e->kind == t->free_on) job_release(t);
}

static void test_free_from_callbacks(void **state) {
  fx *f = *state;
  ex_new(f);
  /* RUN_B's job is cancelled on the cluster before it ran. */
  squeue_says(f,
              "17|prismq-%s|RUNNING|0|n1|None\n"
              "18|prismq-%s|CANCELLED|0||None\n",
              RUN_A, RUN_B);
  tjob *a = tjob_new(f, RUN_A);
  a->hook = free_hook;
  a->free_on = EV_REMOTE;
  tjob *b = tjob_new(f, RUN_B);
  b->hook = free_hook;
  b->free_on = EV_EXIT;
  sbatch_id(f, RUN_A, "17");
  sbatch_id(f, RUN_B, "18");
  exec_spec sa = spec_of(a), sb = spec_of(b);
  start_spec(a, &sa);
  start_spec(b, &sb);
  LOOP_UNTIL(&f->tl, a->j == NULL && b->j == NULL);
  append_file(spool_path(f, RUN_A, "out"), "unseen\n");
  run_for(f, 6 * POLL_MS);
  assert_string_equal(seq(a), "r");
  assert_string_equal(seq(b), "rx");
  assert_int_equal(b->late, 0);
  assert_false(exists(bin_path(f, "scancel.log")));
  exec_free(f->ex);
  f->ex = NULL;
}

static void test_free_from_output_callback(void **state) {
  fx *f = *state;
  ex_new(f);
  squeue_says(f, "17|prismq-" RUN_A "|RUNNING|0|n1|None\n");
  tjob *t = start(f, RUN_A, "17");
  LOOP_UNTIL(&f->tl, t->nremote == 2);
  t->hook = free_hook;
  t->free_on = EV_OUTPUT;
  append_file(spool_path(f, RUN_A, "out"), "first\n");
  LOOP_UNTIL(&f->tl, t->j == NULL);
  append_file(spool_path(f, RUN_A, "out"), "second\n");
  append_file(spool_path(f, RUN_A, "err"), "third\n");
  squeue_says(f, "17|prismq-" RUN_A "|COMPLETED|0|n1|None\n");
  run_for(f, 6 * POLL_MS);
  assert_string_equal(seq(t), "rro");
  assert_memory_equal(t->out[0], "first\n", 6);
  assert_int_equal(t->outlen[0], 6);
  exec_free(f->ex);
  f->ex = NULL;
}

/* ---- 14. cancelled while looking its job up --------------------------------------------- */

static void test_terminate_looking_up(void **state) {
  fx *f = *state;
  ex_new(f);
  /* RUN_B's job is found by its name, RUN_A's is not. */
  answer(f, "squeue.name", "0", "", "55|prismq-" RUN_B "|PENDING|0||Priority\n");
  squeue_says(f, "55|prismq-" RUN_B "|PENDING|0||Priority\n");
  sbatch_id(f, RUN_A, "56");
  tjob *a = tjob_new(f, RUN_A), *b = tjob_new(f, RUN_B);
  exec_spec sa = spec_of(a), sb = spec_of(b);
  sa.resume = sb.resume = 1;
  start_spec(a, &sa);
  start_spec(b, &sb);
  exec_terminate(a->j, 1000);
  exec_terminate(b->j, 1000);
  /* The job found is cancelled once its id is known. */
  LOOP_UNTIL(&f->tl, lines(f, "scancel.log") >= 1 && a->nexit + a->nfail > 0);
  assert_string_equal(line_at(f, "scancel.log", 0), "55");
  assert_remote(nth(b, EV_REMOTE, 0), "55", 0, "", "");
  /* None is submitted for the other just to cancel it: it ends at once. */
  assert_false(exists(bin_path(f, "sbatch.log")));
  assert_int_equal(a->nexit + a->nfail, 1);
  assert_int_equal(a->nremote, 0);
  squeue_says(f, "55|prismq-" RUN_B "|CANCELLED|0||None\n");
  LOOP_UNTIL(&f->tl, b->nexit + b->nfail > 0);
  assert_true(the_end(b)->why_null);
  assert_int_equal(lines(f, "scancel.log"), 1);
  assert_int_equal(a->late + b->late, 0);
}

int main(void) {
  /* The executor's warnings (sbatch refused, squeue failing, ...) are expected here. */
  log_set_level(LOG_LVL_ERROR);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_happy_path),
      T(test_exit_states),
      T(test_ran_between_polls),
      T(test_output_while_pending_polls),
      T(test_sbatch_refused),
      T(test_terminate_running_grace),
      T(test_kill_running),
      T(test_terminate_pending),
      T(test_terminate_submitting),
      T(test_squeue_fails_then_answers),
      T(test_vanished_without_accounting),
      T(test_vanished_with_accounting),
      T(test_accounting),
      T(test_no_accounting_asked_once),
      T(test_resume_by_job_id),
      T(test_resume_found_by_name),
      T(test_resume_not_found_submits),
      T(test_sbatch_timeout_looks_up),
      T(test_free_pending),
      T(test_free_while_submitting),
      T(test_free_executor_with_command_in_flight),
      T(test_one_squeue_for_all),
      T(test_script_unwritable),
      T(test_free_from_callbacks),
      T(test_terminate_looking_up),
      T(test_free_from_output_callback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
