/* Unit tests for server/retention: which runs and files a sweep removes (by age on a
 * fake clock, by count), what it leaves (active runs, recent runs), sweeps in passes
 * with the loop free in between, files removed off the loop's thread and a slow removal
 * that holds neither the loop nor a pass, repeated sweeps, the clock offset test hook,
 * a free in the middle of a sweep, and a file that cannot be removed (counted and
 * logged). The loop is driven until on_sweep fires, each wait bounded by a timeout
 * event. */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ids.h"
#include "retention.h"
#include "runtab.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define ST(x)        PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_##x
#define WAIT_LIMIT_S 10
#define DAY_MS       (86400 * INT64_C(1000))
/* The fake clock's start: any fixed time. */
#define T0 (INT64_C(1700000000000))

typedef Prismq__Runner__V1__Run Run;

/* This program's own unlink: a definition in the program takes precedence over libc's,
 * so retention's removals come here. It notes on which thread each file under `dir` is
 * removed, and while `hold` is set makes such a removal off the loop's thread wait (as
 * ext4 sometimes makes one wait for a journal commit), at most WAIT_LIMIT_S in all;
 * then removes with unlinkat. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  char dir[72];        /* the fixture's directory; "" watches nothing */
  pthread_t loop;      /* the loop's thread */
  atomic_int on_loop;  /* removals under dir on the loop's thread */
  atomic_int off_loop; /* ... and on another one */
  pid_t last;          /* the thread of the last one off the loop's ... */
  int threads;         /* ... and how often that changed: the workers seen */
  int hold;            /* guarded by mu while a worker may run */
  atomic_int held;     /* a removal has waited for hold */
} hook = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

int unlink(const char *path) {
  size_t n = strlen(hook.dir);
  if (n && strncmp(path, hook.dir, n) == 0) {
    if (pthread_equal(pthread_self(), hook.loop)) {
      atomic_fetch_add(&hook.on_loop, 1);
    } else {
      atomic_fetch_add(&hook.off_loop, 1);
      struct timespec limit;
      clock_gettime(CLOCK_REALTIME, &limit);
      limit.tv_sec += WAIT_LIMIT_S;
      pthread_mutex_lock(&hook.mu);
      if (!hook.threads || hook.last != gettid()) { /* ids are not reused at once */
        hook.threads++;
        hook.last = gettid();
      }
      while (hook.hold) {
        atomic_store(&hook.held, 1);
        if (pthread_cond_timedwait(&hook.cv, &hook.mu, &limit) == ETIMEDOUT)
          hook.hold = 0; /* a test is failing: the rest need not wait too */
      }
      pthread_mutex_unlock(&hook.mu);
    }
  }
  return unlinkat(AT_FDCWD, path, 0);
}

struct fx {
  char dir[64];
  struct event_base *base;
  runtab *rt;
  retention *ret;
  int64_t now; /* the fake clock */
  int sweeps;  /* on_sweep calls */
  int target;  /* ... to wait for */
  retention_sweep last;
  int timed_out;
  /* Loop freedom: a ticker fires on every pass of the loop; each sweep pass records
   * how often it had fired by then. */
  struct event *ticker;
  unsigned ticks;
  unsigned pass_ticks[64];
  size_t npasses;
  int break_after_pass; /* on_pass ends the loop after this many passes (0: never) */
  /* test_slow_unlink: the ticker lets the held removal go once the loop has turned
   * RELEASE_TICKS times and RELEASE_AFTER_US have passed since it began to wait. */
  int releasing;
  unsigned held_ticks;
  uint64_t held_since_us;
  size_t passes_at_release;
};

#define RELEASE_TICKS    100
#define RELEASE_AFTER_US 5000 /* a few of the sweep's millisecond looks */

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int64_t fake_now(void *arg) { return ((struct fx *)arg)->now; }

static void on_sweep(void *arg, const retention_sweep *s) {
  struct fx *f = arg;
  f->last = *s;
  if (++f->sweeps >= f->target) event_base_loopbreak(f->base);
}

static void on_pass(void *arg, uint64_t us, const retention_sweep *so_far) {
  struct fx *f = arg;
  assert_true(so_far->passes >= 1 && so_far->max_pass_us >= us && so_far->busy_us >= us);
  if (f->npasses < ARRAY_LEN(f->pass_ticks)) f->pass_ticks[f->npasses] = f->ticks;
  f->npasses++;
  if (f->break_after_pass && f->npasses == (size_t)f->break_after_pass)
    event_base_loopbreak(f->base);
}

/* A zero timeout added again each time (a persistent one with a zero timeout would
 * fire once): it fires on every pass of the loop. */
static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct fx *f = arg;
  f->ticks++;
  if (f->releasing && atomic_load(&hook.held)) {
    if (!f->held_ticks++) f->held_since_us = mono_us();
    if (f->held_ticks >= RELEASE_TICKS && mono_us() - f->held_since_us >= RELEASE_AFTER_US) {
      f->releasing = 0;
      f->passes_at_release = f->npasses;
      pthread_mutex_lock(&hook.mu);
      hook.hold = 0;
      pthread_cond_broadcast(&hook.cv);
      pthread_mutex_unlock(&hook.mu);
    }
  }
  struct timeval zero = {0, 0};
  evtimer_add(f->ticker, &zero);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct fx *f = arg;
  f->timed_out = 1;
  event_base_loopbreak(f->base);
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  strcpy(f->dir, "/tmp/test_retention.XXXXXX");
  char out[96];
  if (!mkdtemp(f->dir)) return -1;
  snprintf(out, sizeof out, "%s/output", f->dir);
  if (mkdir(out, 0700) != 0) return -1;
  f->base = event_base_new();
  if (!f->base || runtab_open(&f->rt, ":memory:", NULL, 0) != 0) return -1;
  f->now = T0;
  hook.loop = pthread_self();
  snprintf(hook.dir, sizeof hook.dir, "%s/", f->dir);
  atomic_store(&hook.on_loop, 0);
  atomic_store(&hook.off_loop, 0);
  atomic_store(&hook.held, 0);
  hook.threads = 0;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  retention_free(f->ret);
  hook.dir[0] = '\0'; /* no worker left: the removals below are the test's */
  hook.hold = 0;
  if (f->ticker) event_free(f->ticker);
  runtab_free(f->rt);
  event_base_free(f->base);
  /* What is left in dir/output: files, and test_unremovable_output's directory. */
  char out[96], path[512];
  snprintf(out, sizeof out, "%s/output", f->dir);
  DIR *d = opendir(out);
  for (struct dirent *e; d && (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", out, e->d_name);
    if (unlink(path) == 0) continue;
    snprintf(path, sizeof path, "%s/%s/inner", out, e->d_name);
    unlink(path);
    snprintf(path, sizeof path, "%s/%s", out, e->d_name);
    rmdir(path);
  }
  if (d) closedir(d);
  rmdir(out);
  rmdir(f->dir);
  free(f);
  return 0;
}

/* A run as the scheduler stores it. */
struct run_buf {
  Run run;
  char id[ID_RUN_LEN + 1];
};

/* Inserts a run created at created_ms (ids in insertion order: insert oldest first),
 * finished at finished_ms (0: never), with an output file when `output`. */
static void add_run(struct fx *f, struct run_buf *b, int status, int64_t created_ms,
                    int64_t finished_ms, int output) {
  Run init = PRISMQ__RUNNER__V1__RUN__INIT;
  b->run = init;
  id_run_new(b->id, created_ms);
  b->run.run_id = b->id;
  b->run.module_id = "m";
  b->run.status = status;
  b->run.created_at_ms = created_ms;
  b->run.finished_at_ms = finished_ms;
  assert_int_equal(runtab_insert(f->rt, &b->run), 0);
  if (!output) return;
  char path[128];
  snprintf(path, sizeof path, "%s/output/%s.out", f->dir, b->id);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  assert_true(fputs("output", fp) >= 0);
  assert_int_equal(fclose(fp), 0);
}

static int has_output(struct fx *f, const struct run_buf *b) {
  char path[128];
  snprintf(path, sizeof path, "%s/output/%s.out", f->dir, b->id);
  return access(path, F_OK) == 0;
}

static int has_run(struct fx *f, const struct run_buf *b) {
  Run *got = NULL;
  int rc = runtab_get(f->rt, b->id, &got);
  assert_true(rc == 0 || rc == -ENOENT);
  prismq__runner__v1__run__free_unpacked(got, NULL);
  return rc == 0;
}

/* Options for f: its data directory, run table and callbacks, the fake clock, the
 * first sweep at once. */
static retention_opts opts_for(struct fx *f, uint64_t interval_ms, uint64_t max_age_ms,
                               uint64_t max_runs) {
  retention_opts o = RETENTION_OPTS_INIT;
  o.rt = f->rt;
  o.data_dir = f->dir;
  o.limits.sweep_interval_ms = interval_ms;
  o.limits.max_age_ms = max_age_ms;
  o.limits.max_runs = max_runs;
  o.first_delay_ms = 0;
  o.now_ms = fake_now;
  o.now_arg = f;
  o.on_sweep = on_sweep;
  o.on_pass = on_pass;
  o.arg = f;
  return o;
}

static void start(struct fx *f, const retention_opts *o) {
  char err[256] = "";
  assert_int_equal(retention_new(&f->ret, f->base, o, err, sizeof err), 0);
  assert_non_null(f->ret);
}

/* Runs the loop until something breaks it, at most WAIT_LIMIT_S. Returns 0, or -1 if
 * it timed out or failed. Asserts nothing (stderr may be captured meanwhile). */
static int run_loop(struct fx *f) {
  f->timed_out = 0;
  struct event *to = evtimer_new(f->base, timeout_cb, f);
  struct timeval tv = {WAIT_LIMIT_S, 0};
  int rc = to && evtimer_add(to, &tv) == 0 ? event_base_loop(f->base, 0) : -1;
  if (to) event_free(to);
  return rc == 0 && !f->timed_out ? 0 : -1;
}

/* Runs the loop until `n` more sweeps have ended; -1 as run_loop. */
static int run_sweeps(struct fx *f, int n) {
  f->target = f->sweeps + n;
  return run_loop(f) == 0 && f->sweeps == f->target ? 0 : -1;
}

/* run_sweeps, asserted, and no file removed on the loop's thread. */
static void wait_sweeps(struct fx *f, int n) {
  assert_int_equal(run_sweeps(f, n), 0);
  assert_int_equal(atomic_load(&hook.on_loop), 0);
}

static void start_ticker(struct fx *f) {
  f->ticker = evtimer_new(f->base, on_tick, f);
  assert_non_null(f->ticker);
  struct timeval zero = {0, 0};
  assert_int_equal(evtimer_add(f->ticker, &zero), 0);
}

/* By age: old terminal runs go with their files (a run that never started has none);
 * active runs stay whatever their age, and so do recent runs. */
static void test_sweep_by_age(void **state) {
  struct fx *f = *state;
  struct run_buf done, never, queued, running, recent;
  add_run(f, &done, ST(COMPLETED), T0 - 10 * DAY_MS, T0 - 10 * DAY_MS + 5, 1);
  add_run(f, &never, ST(CANCELLED), T0 - 9 * DAY_MS, T0 - 9 * DAY_MS, 0);
  add_run(f, &queued, ST(QUEUED), T0 - 9 * DAY_MS, 0, 0);
  add_run(f, &running, ST(RUNNING), T0 - 9 * DAY_MS, 0, 1);
  add_run(f, &recent, ST(FAILED), T0 - DAY_MS, T0 - DAY_MS + 5, 1);
  retention_opts o = opts_for(f, 3600 * 1000, 7 * DAY_MS, 0);
  start(f, &o);
  wait_sweeps(f, 1);
  assert_int_equal(f->last.runs, 2);
  assert_int_equal(f->last.files, 1);
  assert_int_equal(f->last.file_errors, 0); /* `never` had no file: not an error */
  assert_false(f->last.failed);
  /* One batch, then the pass that takes its files' counts and ends the sweep. */
  assert_int_equal(f->last.batches, 1);
  assert_int_equal(f->last.passes, 2);
  assert_int_equal(atomic_load(&hook.off_loop), 2);
  assert_true(f->last.max_pass_us <= f->last.busy_us && f->last.busy_us <= f->last.duration_us);
  assert_false(has_run(f, &done) || has_output(f, &done) || has_run(f, &never));
  assert_true(has_run(f, &queued) && has_run(f, &running) && has_output(f, &running));
  assert_true(has_run(f, &recent) && has_output(f, &recent));
  assert_int_equal(runtab_count(f->rt), 3);
  assert_int_equal(retention_swept_total(f->ret), 2);
}

/* By count: the oldest terminal runs go until the table is back at max_runs. */
static void test_sweep_by_count(void **state) {
  struct fx *f = *state;
  struct run_buf q, r[5];
  add_run(f, &q, ST(QUEUED), T0 - 100, 0, 0);
  for (size_t i = 0; i < ARRAY_LEN(r); i++)
    add_run(f, &r[i], ST(COMPLETED), T0 - 50 + (int64_t)i, T0, 1);
  retention_opts o = opts_for(f, 3600 * 1000, 0, 3);
  start(f, &o);
  wait_sweeps(f, 1);
  assert_int_equal(f->last.runs, 3);
  assert_int_equal(f->last.files, 3);
  assert_true(has_run(f, &q));
  for (size_t i = 0; i < 3; i++) assert_false(has_run(f, &r[i]) || has_output(f, &r[i]));
  for (size_t i = 3; i < 5; i++) assert_true(has_run(f, &r[i]) && has_output(f, &r[i]));
  assert_int_equal(runtab_count(f->rt), 3);
}

/* A sweep of several batches goes in passes, a batch each and one more at the end, and
 * the loop runs its other events between two passes; every file is removed off the
 * loop's thread (wait_sweeps checks), all by one worker. */
static void test_sweep_in_passes(void **state) {
  struct fx *f = *state;
  struct run_buf r[7];
  for (size_t i = 0; i < ARRAY_LEN(r); i++)
    add_run(f, &r[i], ST(COMPLETED), T0 - 10 * DAY_MS + (int64_t)i, T0 - 10 * DAY_MS + 10, 1);
  start_ticker(f);
  retention_opts o = opts_for(f, 3600 * 1000, DAY_MS, 0);
  o.batch = 3;
  start(f, &o);
  wait_sweeps(f, 1);
  assert_int_equal(f->last.runs, 7);
  assert_int_equal(f->last.files, 7);
  assert_int_equal(f->last.batches, 3); /* 3, 3, then 1: the short batch ends it */
  assert_int_equal(f->last.passes, 4);  /* after the last batch's files, the end */
  assert_int_equal(f->npasses, 4);
  for (size_t i = 1; i < f->npasses; i++) assert_true(f->pass_ticks[i] > f->pass_ticks[i - 1]);
  assert_int_equal(atomic_load(&hook.off_loop), 7);
  assert_int_equal(hook.threads, 1);
  assert_int_equal(runtab_count(f->rt), 0);
  for (size_t i = 0; i < ARRAY_LEN(r); i++) assert_false(has_output(f, &r[i]));
}

/* A removal that takes long (held here until the loop has turned RELEASE_TICKS times
 * over RELEASE_AFTER_US) holds neither the loop nor a pass: the loop goes on with its
 * other events, the sweep counts no pass meanwhile (it only looks whether the worker
 * is done), and it ends once the files are gone. */
static void test_slow_unlink(void **state) {
  struct fx *f = *state;
  struct run_buf r[3];
  for (size_t i = 0; i < ARRAY_LEN(r); i++)
    add_run(f, &r[i], ST(COMPLETED), T0 - 10 * DAY_MS + (int64_t)i, T0 - 10 * DAY_MS + 10, 1);
  hook.hold = 1; /* no worker yet */
  f->releasing = 1;
  start_ticker(f);
  retention_opts o = opts_for(f, 3600 * 1000, DAY_MS, 0);
  start(f, &o);
  wait_sweeps(f, 1);
  assert_false(f->releasing); /* the loop turned while the removal waited */
  assert_true(f->held_ticks >= RELEASE_TICKS);
  assert_int_equal(f->passes_at_release, 1); /* the batch's, and none while it waited */
  assert_int_equal(f->last.runs, 3);
  assert_int_equal(f->last.files, 3);
  assert_int_equal(f->last.passes, 2);
  for (size_t i = 0; i < ARRAY_LEN(r); i++) assert_false(has_run(f, &r[i]) || has_output(f, &r[i]));
}

/* Sweeps repeat every interval, each with the clock's time then: runs too young for
 * the first one go in a later one once the clock has moved on. */
static void test_sweeps_repeat(void **state) {
  struct fx *f = *state;
  struct run_buf r;
  add_run(f, &r, ST(COMPLETED), T0 - DAY_MS, T0 - DAY_MS + 1, 1);
  retention_opts o = opts_for(f, 10, 7 * DAY_MS, 0);
  start(f, &o);
  wait_sweeps(f, 2);
  assert_int_equal(f->last.runs, 0);
  assert_true(has_run(f, &r) && has_output(f, &r));
  f->now = T0 + 7 * DAY_MS;
  wait_sweeps(f, 1);
  assert_int_equal(f->last.runs, 1);
  assert_false(has_run(f, &r) || has_output(f, &r));
  assert_int_equal(retention_swept_total(f->ret), 1);
}

/* No sweep interval, or no limit: nothing is ever scheduled (the loop has nothing to
 * wait for). */
static void test_off(void **state) {
  struct fx *f = *state;
  struct run_buf r;
  add_run(f, &r, ST(COMPLETED), T0 - 10 * DAY_MS, T0 - 10 * DAY_MS, 1);
  static const config_retention offs[] = {{0, DAY_MS, 1}, {1000, 0, 0}};
  for (size_t i = 0; i < ARRAY_LEN(offs); i++) {
    retention_opts o = opts_for(f, 0, 0, 0);
    o.limits = offs[i];
    start(f, &o);
    assert_int_equal(event_base_dispatch(f->base), 1); /* no events */
    retention_free(f->ret);
    f->ret = NULL;
  }
  assert_int_equal(f->sweeps, 0);
  assert_true(has_run(f, &r) && has_output(f, &r));
}

/* The default clock is the wall clock, shifted forward by PRISMQ_TEST_CLOCK_OFFSET_MS
 * when set; a value that is not a plain number of milliseconds is refused. */
static void test_clock_offset(void **state) {
  struct fx *f = *state;
  int64_t now = id_now_ms();
  struct run_buf r;
  add_run(f, &r, ST(COMPLETED), now - 1000, now - 500, 1);
  retention_opts o = opts_for(f, 3600 * 1000, DAY_MS, 0);
  o.now_ms = NULL;
  static const char *const bad[] = {"",
                                    "abc",
                                    "-5",
                                    "+5",
                                    " 5",
                                    "5ms",
                                    "99999999999999999999",
                                    "3153600000001" /* 100 years and 1 ms */};
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    char err[256] = "";
    retention *sentinel = (retention *)f, *ret = sentinel;
    assert_int_equal(setenv("PRISMQ_TEST_CLOCK_OFFSET_MS", bad[i], 1), 0);
    assert_int_equal(retention_new(&ret, f->base, &o, err, sizeof err), -EINVAL);
    assert_ptr_equal(ret, sentinel);
    assert_non_null(strstr(err, "PRISMQ_TEST_CLOCK_OFFSET_MS"));
  }
  /* Without it, the run is a second old: kept. */
  assert_int_equal(unsetenv("PRISMQ_TEST_CLOCK_OFFSET_MS"), 0);
  start(f, &o);
  wait_sweeps(f, 1);
  assert_int_equal(f->last.runs, 0);
  retention_free(f->ret);
  f->ret = NULL;
  /* Two days on, it is older than a day. */
  assert_int_equal(setenv("PRISMQ_TEST_CLOCK_OFFSET_MS", "172800000", 1), 0);
  start(f, &o);
  assert_int_equal(unsetenv("PRISMQ_TEST_CLOCK_OFFSET_MS"), 0); /* read by retention_new */
  wait_sweeps(f, 1);
  assert_int_equal(f->last.runs, 1);
  assert_false(has_run(f, &r) || has_output(f, &r));
}

/* A free in the middle of a sweep: the runs of the batch in progress are deleted
 * already, so their files go too (the free waits for the worker removing them, here
 * held until the free); the rest stays for a later sweep. */
static void test_free_mid_sweep(void **state) {
  struct fx *f = *state;
  struct run_buf r[5];
  for (size_t i = 0; i < ARRAY_LEN(r); i++)
    add_run(f, &r[i], ST(COMPLETED), T0 - 10 * DAY_MS + (int64_t)i, T0 - 10 * DAY_MS + 10, 1);
  retention_opts o = opts_for(f, 3600 * 1000, DAY_MS, 0);
  o.batch = 2;
  f->break_after_pass = 1; /* after the first batch, its files' removal started */
  hook.hold = 1;
  start(f, &o);
  assert_int_equal(run_loop(f), 0);
  assert_int_equal(f->npasses, 1);
  assert_false(has_run(f, &r[0]) || has_run(f, &r[1]));
  assert_true(has_output(f, &r[0]) && has_output(f, &r[1])); /* the removal waits */
  pthread_mutex_lock(&hook.mu);
  hook.hold = 0; /* free may now wait for it without a deadlock */
  pthread_cond_broadcast(&hook.cv);
  pthread_mutex_unlock(&hook.mu);
  retention_free(f->ret);
  f->ret = NULL;
  assert_int_equal(f->sweeps, 0);
  assert_int_equal(atomic_load(&hook.on_loop), 0);
  for (size_t i = 0; i < 2; i++) assert_false(has_run(f, &r[i]) || has_output(f, &r[i]));
  for (size_t i = 2; i < ARRAY_LEN(r); i++) assert_true(has_run(f, &r[i]) && has_output(f, &r[i]));
}

/* An output that cannot be removed (here a directory in its place) is counted, logged
 * with its path, and skipped: the sweep goes on with the others. */
static void test_unremovable_output(void **state) {
  struct fx *f = *state;
  struct run_buf a, b;
  add_run(f, &a, ST(COMPLETED), T0 - 10 * DAY_MS, T0 - 10 * DAY_MS, 0);
  add_run(f, &b, ST(COMPLETED), T0 - 10 * DAY_MS, T0 - 10 * DAY_MS, 1);
  char path[160];
  snprintf(path, sizeof path, "%s/output/%s.out", f->dir, a.id);
  assert_int_equal(mkdir(path, 0700), 0);
  char inner[192];
  snprintf(inner, sizeof inner, "%s/inner", path);
  FILE *fp = fopen(inner, "w");
  assert_non_null(fp);
  assert_int_equal(fclose(fp), 0);
  /* stderr into a file while the sweep logs; restored before any assertion. */
  FILE *log = tmpfile();
  assert_non_null(log);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fileno(log), STDERR_FILENO), STDERR_FILENO);
  retention_opts o = opts_for(f, 3600 * 1000, DAY_MS, 0);
  char err[256] = "";
  int rc = retention_new(&f->ret, f->base, &o, err, sizeof err);
  if (rc == 0) rc = run_sweeps(f, 1);
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  assert_int_equal(rc, 0);
  assert_int_equal(atomic_load(&hook.on_loop), 0);
  char text[4096];
  rewind(log);
  size_t len = fread(text, 1, sizeof text - 1, log);
  text[len] = '\0';
  fclose(log);
  char want[320];
  snprintf(
      want, sizeof want,
      "WARNING retention: cannot remove the output of 1 deleted runs, the first path=%s: ", path);
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, " file_errors=1 "));
  assert_int_equal(f->last.runs, 2);
  assert_int_equal(f->last.files, 1);
  assert_int_equal(f->last.file_errors, 1);
  assert_false(f->last.failed);
  assert_false(has_run(f, &a) || has_run(f, &b) || has_output(f, &b));
  assert_true(has_output(f, &a)); /* the directory, left alone */
}

static void test_new_invalid(void **state) {
  struct fx *f = *state;
  retention *sentinel = (retention *)f, *ret = sentinel;
  char err[256] = "";
  retention_opts o = opts_for(f, 1000, DAY_MS, 0);
  o.rt = NULL;
  assert_int_equal(retention_new(&ret, f->base, &o, err, sizeof err), -EINVAL);
  assert_true(err[0] != '\0');
  o = opts_for(f, 1000, DAY_MS, 0);
  o.data_dir = NULL;
  assert_int_equal(retention_new(&ret, f->base, &o, NULL, 0), -EINVAL);
  o = opts_for(f, 1000, DAY_MS, 0);
  o.batch = 0;
  assert_int_equal(retention_new(&ret, f->base, &o, err, sizeof err), -EINVAL);
  assert_ptr_equal(ret, sentinel);
  retention_free(NULL);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_sweep_by_age), T(test_sweep_by_count), T(test_sweep_in_passes),
      T(test_slow_unlink),  T(test_sweeps_repeat),  T(test_off),
      T(test_clock_offset), T(test_free_mid_sweep), T(test_unremovable_output),
      T(test_new_invalid),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
