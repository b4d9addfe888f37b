#include "retention.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "compat.h"
#include "ids.h"
#include "log.h"
#include "outlog.h"
#include "xalloc.h"

#define CLOCK_OFFSET_ENV "PRISMQ_TEST_CLOCK_OFFSET_MS"
/* 100 years: far enough for any test, and the wall clock plus it cannot overflow. */
#define CLOCK_OFFSET_MAX (INT64_C(100) * 365 * 86400 * 1000)

struct retention {
  runtab *rt;
  config_retention limits;
  size_t batch;
  retention_clock_fn now_ms;
  void *now_arg;
  int64_t clock_offset_ms; /* PRISMQ_TEST_CLOCK_OFFSET_MS, with the wall clock */
  retention_sweep_fn on_sweep;
  retention_pass_fn on_pass;
  void *arg;
  /* One timer does both: the wait for the next sweep, and the waits between two passes
   * of a sweep (`sweeping`): none, or a millisecond while the worker or a checkpoint
   * has the next step. */
  struct event *timer;
  int sweeping;
  int table_done;    /* the sweep has deleted all it will from the table */
  int64_t cutoff_ms; /* of the sweep in progress, fixed at its start */
  uint64_t started_us;
  retention_sweep cur;
  uint64_t swept_total;
  char (*ids)[ID_RUN_LEN + 1]; /* the last batch's deleted runs, whose files ... */
  size_t nids;                 /* ... are still there (0 once they are gone) */
  /* The worker: one thread for the files of a sweep, from its first batch of runs to its
   * last. Each post of `go` hands it a batch (with `stop`, the last: it ends after it),
   * and it posts `done` when the batch's files are gone. The loop never waits for it: it
   * looks with sem_trywait. While `unlinking`, the worker owns ids, nids, stop and the
   * counts below; the two semaphores hand them over, as they order memory. */
  pthread_t worker;
  int worker_on; /* the thread exists, not joined yet */
  int unlinking; /* the worker has a batch */
  int stop;      /* ... the sweep's last */
  sem_t go, done;
  uint64_t batch_files;   /* files the batch's unlinks removed */
  uint64_t batch_errors;  /* files they could not remove */
  int first_error;        /* the first one's negative errno ... */
  size_t first_error_at;  /* ... and index in ids */
  log_limit unlink_limit; /* a directory we may not write to fails for every file */
  char *data_dir;
};

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void arm(retention *r, uint64_t ms) {
  struct timeval tv = compat_timeout_ms(ms);
  evtimer_add(r->timer, &tv);
}

/* Back in about a millisecond (a look at the worker or the table), or in the next pass
 * with `now`. A poll, not a timeout: firing early does no harm, so no tick is added
 * (compat_timeout_ms's would make each wait 5 ms). */
static void poll_again(retention *r, int now) {
  struct timeval tv = {0, now ? 0 : 1000};
  evtimer_add(r->timer, &tv);
}

/* The unlinks of a batch, on the worker (or the loop, where no thread can be made):
 * the output files of ids[0..nids), counted. Touches nothing else: no logging, no run
 * table. */
static void unlink_batch(retention *r) {
  for (size_t i = 0; i < r->nids; i++) {
    char path[4096];
    int rc = outlog_path(path, sizeof path, r->data_dir, r->ids[i]);
    if (rc == 0 && unlink(path) != 0) rc = -errno;
    if (rc == 0) {
      r->batch_files++;
    } else if (rc != -ENOENT && !r->batch_errors++) { /* ENOENT: the run never started */
      r->first_error = rc;
      r->first_error_at = i;
    }
  }
}

/* The worker thread: a batch for each post of `go`, until the one marked `stop`. It
 * runs as SCHED_BATCH, at the same weight, so that neither its start after a post nor
 * the end of a wait in unlink preempts the loop's thread (the scheduler makes a woken
 * SCHED_BATCH thread wait for its turn instead). */
static void *worker_main(void *arg) {
  retention *r = arg;
#ifdef SCHED_BATCH /* Linux's; elsewhere the thread keeps the default policy */
  struct sched_param sp = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp); /* a failure costs only that */
#endif
  int stop;
  do {
    while (sem_wait(&r->go) != 0 && errno == EINTR) continue;
    stop = r->stop;
    unlink_batch(r);
    sem_post(&r->done);
  } while (!stop);
  return NULL;
}

/* After the unlinks of a batch: their counts into the sweep's, and a line for the files
 * that could not be removed (on the loop's thread, where log lines are batched). */
static void unlinks_done(retention *r) {
  r->cur.files += r->batch_files;
  r->cur.file_errors += r->batch_errors;
  unsigned long long held;
  if (r->batch_errors && log_limit_pass(&r->unlink_limit, 10000, &held)) {
    char path[4096];
    outlog_path(path, sizeof path, r->data_dir, r->ids[r->first_error_at]);
    LOG_WARN("retention: cannot remove the output of %" PRIu64
             " deleted runs, the first path=%s: %s (%llu batches more in the last 10 s)",
             r->batch_errors, path, strerror(-r->first_error), held);
  }
  r->nids = 0;
}

/* Hands the batch just deleted (none when the table is done) to the worker, which the
 * sweep's first batch starts; with the table done, it is the last, and the worker ends
 * after it. Where no thread can be made, unlinks here. */
static void unlinks_start(retention *r) {
  r->batch_files = r->batch_errors = 0;
  r->stop = r->table_done;
  if (!r->worker_on && r->nids && pthread_create(&r->worker, NULL, worker_main, r) == 0)
    r->worker_on = 1;
  if (r->worker_on) {
    r->unlinking = 1;
    sem_post(&r->go);
    return;
  }
  unlink_batch(r);
  unlinks_done(r);
}

/* Takes the worker's counts once it has answered, and joins it after the last batch
 * (it has returned, or is returning). */
static void unlinks_answered(retention *r) {
  r->unlinking = 0;
  unlinks_done(r);
  if (r->stop) {
    pthread_join(r->worker, NULL);
    r->worker_on = 0;
  }
}

/* Deletes the next batch of runs from the table; their files go to unlinks_start. */
static void purge_batch(retention *r) {
  size_t n = 0;
  int rc = runtab_purge(r->rt, r->cutoff_ms, r->limits.max_runs, r->batch, r->ids, &n);
  r->cur.batches++;
  r->nids = rc == 0 ? n : 0;
  r->cur.runs += r->nids;
  r->cur.failed = rc < 0;
  r->table_done = rc < 0 || n < r->batch;
}

static void sweep_end(retention *r) {
  r->sweeping = 0;
  r->cur.duration_us = mono_us() - r->started_us;
  r->swept_total += r->cur.runs;
  log_msg(r->cur.failed ? LOG_LVL_WARNING : LOG_LVL_INFO,
          "retention sweep%s deleted=%" PRIu64 " files=%" PRIu64 " runs_left=%" PRIu64
          " batches=%" PRIu64 " passes=%" PRIu64 " file_errors=%" PRIu64
          " duration_ms=%.1f busy_ms=%.1f longest_pass_ms=%.2f long_passes=%" PRIu64,
          r->cur.failed ? " failed" : "", r->cur.runs, r->cur.files, runtab_count(r->rt),
          r->cur.batches, r->cur.passes, r->cur.file_errors, (double)r->cur.duration_us / 1000,
          (double)r->cur.busy_us / 1000, (double)r->cur.max_pass_us / 1000, r->cur.long_passes);
  arm(r, r->limits.sweep_interval_ms);
  if (r->on_sweep) r->on_sweep(r->arg, &r->cur);
}

/* One pass of a sweep (see retention.h): the last batch's files, once the worker has
 * removed them, then the next batch deleted and handed to it. */
static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  retention *r = arg;
  uint64_t t0 = mono_us();
  if (!r->sweeping) {
    int64_t now = r->now_ms ? r->now_ms(r->now_arg) : id_now_ms() + r->clock_offset_ms;
    uint64_t age = r->limits.max_age_ms;
    r->cutoff_ms = age && now > 0 && (uint64_t)now > age ? now - (int64_t)age : 0;
    memset(&r->cur, 0, sizeof r->cur);
    r->started_us = t0;
    r->sweeping = 1;
    r->table_done = 0;
  }
  /* Back in a millisecond, with nothing done (not a pass), while the worker is still at
   * the last batch's files (the next batch waits for them), or, with nothing from it,
   * while the table is checkpointing on its own thread (runtab_purge would wait for it
   * on the loop's). */
  if (r->unlinking) {
    if (sem_trywait(&r->done) != 0) {
      poll_again(r, 0);
      return;
    }
    unlinks_answered(r);
  } else if (runtab_busy(r->rt)) { /* no batch out: the table is not done, or it had ended */
    poll_again(r, 0);
    return;
  }
  if (!r->table_done && !runtab_busy(r->rt)) purge_batch(r);
  if (r->nids || (r->table_done && r->worker_on)) unlinks_start(r);
  uint64_t took = mono_us() - t0;
  r->cur.passes++;
  r->cur.busy_us += took;
  if (took > r->cur.max_pass_us) r->cur.max_pass_us = took;
  if (took >= RETENTION_LONG_PASS_US) r->cur.long_passes++;
  if (r->on_pass) r->on_pass(r->arg, took, &r->cur);
  if (r->unlinking || !r->table_done)
    poll_again(r, !r->unlinking && !runtab_busy(r->rt)); /* now: after whatever else is ready */
  else
    sweep_end(r); /* the worker, if any, is joined */
}

/* PRISMQ_TEST_CLOCK_OFFSET_MS into *out (0 when unset). Returns 0 or -EINVAL. */
static int clock_offset(int64_t *out) {
  const char *s = getenv(CLOCK_OFFSET_ENV);
  *out = 0;
  if (!s) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (*s < '0' || *s > '9' || *end || errno || v > CLOCK_OFFSET_MAX)
    return -EINVAL; /* no sign, no spaces */
  *out = v;
  return 0;
}

int retention_new(retention **out, struct event_base *base, const retention_opts *opts, char *err,
                  size_t errlen) {
  int64_t offset = 0;
  if (!opts->rt || !opts->data_dir || !opts->batch) {
    if (errlen)
      snprintf(err, errlen, "retention: no run table, no data directory, or a batch of 0");
    return -EINVAL;
  }
  if (!opts->now_ms && clock_offset(&offset) < 0) {
    if (errlen)
      snprintf(err, errlen, "%s=\"%s\": not a number of milliseconds (0 to 100 years)",
               CLOCK_OFFSET_ENV, getenv(CLOCK_OFFSET_ENV));
    return -EINVAL;
  }
  retention *r = xcalloc(1, sizeof *r);
  r->timer = evtimer_new(base, on_timer, r);
  if (!r->timer) {
    free(r);
    if (errlen) snprintf(err, errlen, "retention: cannot create a timer");
    return -ENOMEM;
  }
  r->rt = opts->rt;
  r->limits = opts->limits;
  r->batch = opts->batch;
  r->now_ms = opts->now_ms;
  r->now_arg = opts->now_arg;
  r->clock_offset_ms = offset;
  r->on_sweep = opts->on_sweep;
  r->on_pass = opts->on_pass;
  r->arg = opts->arg;
  r->ids = xmalloc(r->batch * sizeof *r->ids);
  r->data_dir = xstrdup(opts->data_dir);
  sem_init(&r->go, 0, 0); /* cannot fail: not shared, a value of 0 */
  sem_init(&r->done, 0, 0);

  const config_retention *l = &r->limits;
  if (l->sweep_interval_ms && (l->max_age_ms || l->max_runs)) {
    arm(r,
        opts->first_delay_ms < l->sweep_interval_ms ? opts->first_delay_ms : l->sweep_interval_ms);
    LOG_INFO("retention on sweep_interval_ms=%" PRIu64 " max_age_ms=%" PRIu64 " max_runs=%" PRIu64
             "%s",
             l->sweep_interval_ms, l->max_age_ms, l->max_runs,
             offset ? " (test clock offset " CLOCK_OFFSET_ENV " set)" : "");
  } else {
    LOG_INFO("retention off: runs are kept%s",
             l->sweep_interval_ms ? " (no max_age, no max_runs)" : "");
  }
  *out = r;
  return 0;
}

uint64_t retention_swept_total(const retention *r) { return r->swept_total; }

void retention_free(retention *r) {
  if (!r) return;
  /* The runs of the last batch are gone from the table: their files must go too, or
   * nothing would ever remove them. The worker is removing them; a batch is short. */
  if (r->unlinking) {
    while (sem_wait(&r->done) != 0 && errno == EINTR) continue;
    unlinks_answered(r);
  }
  if (r->worker_on) { /* between two batches: an empty last one ends it */
    r->stop = 1;
    sem_post(&r->go);
    pthread_join(r->worker, NULL);
  }
  sem_destroy(&r->go);
  sem_destroy(&r->done);
  event_free(r->timer);
  free(r->ids);
  free(r->data_dir);
  free(r);
}
