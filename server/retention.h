/* retention: the periodic deletion of old runs (the configuration's retention: section).
 *
 * A sweep deletes what runtab_purge selects (see runtab.h for exactly which runs):
 * terminal runs created and finished more than max_age_ms ago, and the oldest terminal
 * runs while the table holds more than max_runs; active (queued, running) runs are
 * never touched. With each run goes its output file, data_dir/output/<run_id>.out (a
 * run that never started has none). A follower still reading a swept run's output goes
 * on through its open descriptor; the run itself is gone for every lookup.
 *
 * When: the first sweep first_delay_ms after retention_new, then each next one
 * sweep_interval_ms after the previous one ended. The age cutoff is taken from the
 * clock once, when a sweep begins.
 *
 * The loop stays free: a sweep is cut into passes of the loop, the next one a zero
 * timeout, so that everything that is ready (I/O, timers, other events) runs in
 * between. A pass deletes a batch of `batch` runs from the table (one runtab_purge
 * transaction, which also commits the run table's waiting updates) when the files of
 * the previous batch are all gone, then unlinks files until it has worked slice_us; so
 * a pass holds the loop for about the longer of a batch and a slice, plus one unlink.
 * A checkpoint of the run table's WAL (runtab.c), which the commit of a batch may run
 * as any commit may, comes on top (about one per several thousand runs deleted).
 * scripts/bench/retention_bench.c measures the passes.
 *
 * Each sweep logs one line: INFO, or WARNING if the run table failed (the sweep then
 * ends; the next one tries again), with the runs and files deleted, the runs left, the
 * batches and passes, the sweep's duration, its busy time, its longest pass and how many
 * passes took RETENTION_LONG_PASS_US or more.
 *
 * The runs of a batch are deleted before their files: a crash before a batch's files
 * are all gone leaves the rest behind, unreferenced (never a run without its output).
 *
 * Single-threaded: everything runs on the thread of the event_base. Knows nothing of
 * the protocol. Out of memory aborts (server code). */
#ifndef PRISMQ_RETENTION_H
#define PRISMQ_RETENTION_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "runtab.h"

struct event_base;
typedef struct retention retention;

/* What one sweep did, given to on_sweep. Durations are monotonic. */
typedef struct retention_sweep {
  uint64_t runs;        /* runs deleted */
  uint64_t files;       /* output files unlinked */
  uint64_t batches;     /* runtab_purge calls */
  uint64_t passes;      /* passes of the loop the sweep took */
  uint64_t duration_us; /* from the first pass's start to the last one's end */
  uint64_t busy_us;     /* the passes' own time, the loop's other work left out */
  uint64_t max_pass_us; /* the longest pass: the longest the sweep held the loop */
  uint64_t long_passes; /* passes of RETENTION_LONG_PASS_US or more */
  int failed;           /* the run table failed (logged): the sweep ended there */
} retention_sweep;

/* Called after each sweep, with its figures (valid during the call). Must not free
 * the retention. */
typedef void (*retention_sweep_fn)(void *arg, const retention_sweep *s);

/* Called after each pass of a sweep with its duration in microseconds (monotonic) and
 * the sweep's figures so far (valid during the call; `batches` tells whether this pass
 * ran one): a timing hook (scripts/bench/retention_bench.c). Must not free the
 * retention. */
typedef void (*retention_pass_fn)(void *arg, uint64_t pass_us, const retention_sweep *so_far);

/* Wall-clock time now, in milliseconds since the Unix epoch. */
typedef int64_t (*retention_clock_fn)(void *arg);

typedef struct retention_opts {
  runtab *rt;              /* required; not owned, must outlive the retention */
  const char *data_dir;    /* required; output files are data_dir/output/<run_id>.out. Copied */
  config_retention limits; /* sweep_interval_ms 0, or max_age_ms and max_runs both 0: no sweeps */
  uint32_t first_delay_ms; /* the first sweep, after this (at most sweep_interval_ms) */
  size_t batch;            /* runs deleted per transaction, >= 1 */
  uint32_t slice_us;       /* a pass unlinks files until it has worked this long (one at least) */
  /* The clock of the age cutoff. NULL: the wall clock, shifted forward by the
   * environment variable PRISMQ_TEST_CLOCK_OFFSET_MS (decimal milliseconds, at most 100
   * years; read by retention_new) when it is set: a test hook, so that a black-box test
   * can age runs without waiting; never set it in production. */
  retention_clock_fn now_ms;
  void *now_arg;
  retention_sweep_fn on_sweep; /* may be NULL */
  retention_pass_fn on_pass;   /* may be NULL */
  void *arg;                   /* passed to on_sweep and on_pass */
} retention_opts;

/* Defaults: a batch of 64 takes about 1.5 ms here, an unlink about 0.1 ms (ext4). */
#define RETENTION_FIRST_DELAY_MS 1000
#define RETENTION_BATCH          64
#define RETENTION_SLICE_US       1000
/* A pass this long is counted (retention_sweep.long_passes) and said in the log line. */
#define RETENTION_LONG_PASS_US 5000

#define RETENTION_OPTS_INIT                                                                     \
  {                                                                                             \
    NULL, NULL, {0, 0, 0}, RETENTION_FIRST_DELAY_MS, RETENTION_BATCH, RETENTION_SLICE_US, NULL, \
        NULL, NULL, NULL, NULL                                                                  \
  }

/* Creates the retention on `base` (which must outlive it) and schedules its first
 * sweep, if sweeps are on. `opts` is only read during the call. Logs the limits at
 * INFO once.
 * Returns 0 and sets *out (free with retention_free). Otherwise *out is untouched,
 * err (errlen bytes; may be NULL if errlen is 0) says why, and the return is -EINVAL
 * for a NULL rt or data_dir, batch 0, or (with the wall clock) a
 * PRISMQ_TEST_CLOCK_OFFSET_MS that is not a decimal number of milliseconds from 0 to 100
 * years, or -ENOMEM if the timer cannot be made. */
int retention_new(retention **out, struct event_base *base, const retention_opts *opts, char *err,
                  size_t errlen);

/* Runs deleted by all sweeps so far. */
uint64_t retention_swept_total(const retention *r);

/* Stops the sweeps and frees the retention. A sweep in progress stops between two
 * passes: what it deleted stays deleted, and the files of its last batch are unlinked
 * here. Accepts NULL. */
void retention_free(retention *r);

#endif
