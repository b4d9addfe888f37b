#include "retention.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

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
  uint32_t slice_us;
  retention_clock_fn now_ms;
  void *now_arg;
  int64_t clock_offset_ms; /* PRISMQ_TEST_CLOCK_OFFSET_MS, with the wall clock */
  retention_sweep_fn on_sweep;
  retention_pass_fn on_pass;
  void *arg;
  /* One timer does both: the wait for the next sweep, and the zero timeout between
   * two passes of a sweep (`sweeping`). */
  struct event *timer;
  int sweeping;
  int table_done;    /* the sweep has deleted all it will from the table */
  int64_t cutoff_ms; /* of the sweep in progress, fixed at its start */
  uint64_t started_us;
  retention_sweep cur;
  uint64_t swept_total;
  char (*ids)[ID_RUN_LEN + 1]; /* the last batch's deleted runs ... */
  size_t nids, next_unlink;    /* ... and the first whose file is still there */
  log_limit unlink_limit;      /* a directory we may not write to fails for every file */
  char *data_dir;
};

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void arm(retention *r, uint64_t ms) {
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  evtimer_add(r->timer, &tv);
}

/* Unlinks the output file of the next deleted run whose file is still there. */
static void unlink_next(retention *r) {
  char path[4096];
  int rc = outlog_path(path, sizeof path, r->data_dir, r->ids[r->next_unlink++]);
  if (rc == 0 && unlink(path) != 0) rc = -errno;
  if (rc == 0) {
    r->cur.files++;
  } else if (rc != -ENOENT) { /* ENOENT: the run never started */
    unsigned long long held;
    if (log_limit_pass(&r->unlink_limit, 10000, &held))
      LOG_WARN(
          "retention: cannot remove the output of a deleted run path=%s: %s (%llu more in the last "
          "10 s)",
          path, strerror(-rc), held);
  }
}

/* Deletes the next batch of runs from the table; their files wait for unlink_next. */
static void purge_batch(retention *r) {
  size_t n = 0;
  int rc = runtab_purge(r->rt, r->cutoff_ms, r->limits.max_runs, r->batch, r->ids, &n);
  r->cur.batches++;
  r->nids = rc == 0 ? n : 0;
  r->next_unlink = 0;
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
          " batches=%" PRIu64 " passes=%" PRIu64
          " duration_ms=%.1f busy_ms=%.1f longest_pass_ms=%.2f long_passes=%" PRIu64,
          r->cur.failed ? " failed" : "", r->cur.runs, r->cur.files, runtab_count(r->rt),
          r->cur.batches, r->cur.passes, (double)r->cur.duration_us / 1000,
          (double)r->cur.busy_us / 1000, (double)r->cur.max_pass_us / 1000, r->cur.long_passes);
  arm(r, r->limits.sweep_interval_ms);
  if (r->on_sweep) r->on_sweep(r->arg, &r->cur);
}

/* One pass of a sweep (see retention.h): a batch from the table when the last one's
 * files are all gone, then files until the slice is used up. */
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
  /* The table is checkpointing on its own thread: a batch would wait for it on the
   * loop's, and so would an unlink (ext4 holds it until the journal commit that the
   * checkpoint's fsync forces is over). Back in a millisecond. */
  if (runtab_busy(r->rt)) {
    arm(r, 1);
    return;
  }
  if (r->next_unlink == r->nids && !r->table_done) purge_batch(r);
  /* At least one unlink a pass (a slice of 0 still ends), unless the batch's commit has
   * just started a checkpoint: then they wait for the next pass. */
  while (r->next_unlink < r->nids && !runtab_busy(r->rt)) {
    unlink_next(r);
    if (mono_us() - t0 >= r->slice_us) break;
  }
  uint64_t took = mono_us() - t0;
  r->cur.passes++;
  r->cur.busy_us += took;
  if (took > r->cur.max_pass_us) r->cur.max_pass_us = took;
  if (took >= RETENTION_LONG_PASS_US) r->cur.long_passes++;
  if (r->on_pass) r->on_pass(r->arg, took, &r->cur);
  if (r->next_unlink < r->nids || !r->table_done)
    arm(r, runtab_busy(r->rt)); /* more to do: after whatever else is ready */
  else
    sweep_end(r);
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
  r->slice_us = opts->slice_us;
  r->now_ms = opts->now_ms;
  r->now_arg = opts->now_arg;
  r->clock_offset_ms = offset;
  r->on_sweep = opts->on_sweep;
  r->on_pass = opts->on_pass;
  r->arg = opts->arg;
  r->ids = xmalloc(r->batch * sizeof *r->ids);
  r->data_dir = xstrdup(opts->data_dir);

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
  /* The runs of the last batch are gone from the table: their files go too (a batch
   * is short), or nothing would ever remove them. */
  while (r->next_unlink < r->nids) unlink_next(r);
  event_free(r->timer);
  free(r->ids);
  free(r->data_dir);
  free(r);
}
