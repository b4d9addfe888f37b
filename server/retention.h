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
 * The loop stays free: a sweep is cut into passes of the loop, so that everything that
 * is ready (I/O, timers, other events) runs in between. A pass deletes a batch of
 * `batch` runs from the table (one runtab_purge transaction, which also commits the
 * run table's waiting updates) and hands the unlinks of their output files to the
 * sweep's worker thread; the next pass comes once the worker is done with them, and
 * deletes the next batch. So a pass holds the loop for about one batch, never for an
 * unlink: on ext4 an unlink sometimes waits for a journal commit (tens of
 * milliseconds). In between, the loop only looks every millisecond whether the worker
 * is done (sem_trywait; those looks are not passes). A checkpoint of the run table's
 * WAL (runtab.c) that is running delays the next batch the same way (runtab_busy); one
 * that the commit of a batch starts runs on its own thread.
 * scripts/bench/retention_bench.c measures the passes.
 *
 * The worker: one thread per sweep, started by its first batch of runs and ended
 * after its last (joined once it has said it is done, so the loop does not wait for
 * it), rather than one per batch: a new thread may take the loop's CPU, and on a busy
 * machine the loop then waits for its turn (3 to 20 ms, measured). For the same reason
 * it runs as SCHED_BATCH (the same share of the CPU, but its wake-ups do not preempt).
 * While it lives the process has a second thread, and a posix_spawn pays a TLB
 * shootdown for its munmap (docs/performance.md, "Start rate"): during a sweep only.
 * Where no thread can be made, a pass does the unlinks itself, as before there was a
 * worker.
 *
 * Each sweep logs one line: INFO, or WARNING if the run table failed (the sweep then
 * ends; the next one tries again), with the runs and files deleted, the runs left, the
 * batches and passes, the output files that could not be removed, the sweep's
 * duration, its busy time, its longest pass and how many passes took
 * RETENTION_LONG_PASS_US or more. A file that cannot be removed (other than one that
 * never existed) is logged too, at WARNING, by the loop once the worker is done with the
 * batch: one line per batch with such files, at most one every 10 s.
 *
 * The runs of a batch are deleted before their files, and the next batch only once
 * those files are all gone: a crash before then leaves some files of one batch behind,
 * unreferenced (never a run without its output).
 *
 * Threads: every function and callback runs on the thread of the event_base; the worker
 * only unlinks files and counts them, and touches nothing else. Knows nothing of the
 * protocol. Out of memory aborts (server code). */
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
  uint64_t file_errors; /* output files that could not be unlinked (logged); not ENOENT */
  uint64_t batches;     /* runtab_purge calls */
  uint64_t passes;      /* passes of the loop that did work (see above) */
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
  size_t batch;            /* runs deleted per transaction (and files per hand-over), >= 1 */
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

/* Defaults: a batch of 64 takes about 1.5 ms here, its unlinks about 6 ms (ext4). */
#define RETENTION_FIRST_DELAY_MS 1000
#define RETENTION_BATCH          64
/* A pass this long is counted (retention_sweep.long_passes) and said in the log line. */
#define RETENTION_LONG_PASS_US 5000

#define RETENTION_OPTS_INIT \
  { NULL, NULL, {0, 0, 0}, RETENTION_FIRST_DELAY_MS, RETENTION_BATCH, NULL, NULL, NULL, NULL, NULL }

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
 * passes: what it deleted stays deleted, and the files of its last batch are all gone
 * on return (this waits for the worker to remove them, a few milliseconds, and to
 * end). Accepts NULL. */
void retention_free(retention *r);

#endif
