/* scheduler (prefix sched_): the run scheduler, the heart of the core. It turns run requests into runs
 * of configured modules and carries each through its life:
 *
 *   QUEUED ──(slot free, module slot free, resources ok)──> RUNNING ──> COMPLETED
 *      │                                                      │   ├──> FAILED
 *      └──(cancel)──> CANCELLED                 (cancel) ─────┤   ├──> CANCELLED
 *                                              (timeout) ─────┘   └──> TIMED_OUT
 *
 * It owns the active runs (queued and running) in memory, persists every run through
 * the run table at each transition, starts processes with proc, records their output
 * with outlog (one file per run under data_dir/output/) and the progress they report
 * (progress.h: Run.progress, the latest in memory and persisted with the next status
 * change, and a record in the output after the bytes of its line), enforces the limits of the
 * configuration (global and per-module concurrency, queue length, the resource check
 * of resmon, timeouts) and tells watchers when runs change.
 *
 * Runs are the contract's data model (Prismq__Runner__V1__Run): the core knows the
 * messages of the .proto, not gRPC. Errors are negative errno values with a message.
 * Single-threaded: everything runs on the event_base given to sched_new (threaded
 * mode only moves the waiting for exits to worker threads inside proc). */
#ifndef PRISMQ_SCHEDULER_H
#define PRISMQ_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "param.h"
#include "prismq/runner/v1/runner.pb-c.h"
#include "runtab.h"

struct event_base;
typedef struct sched sched;
typedef struct outlog_reader outlog_reader;

typedef Prismq__Runner__V1__Run sched_run;
typedef struct cgroup_root cgroup_root;
typedef struct metrics metrics;

/* error_message of the runs a shutdown cancels. */
#define SCHED_SHUTDOWN_MESSAGE "server shutdown"
/* error_message of the runs found RUNNING at start-up: their server is gone. */
#define SCHED_LOST_MESSAGE "the server stopped while the run was running"

enum sched_mode {
  SCHED_ASYNC = 0,    /* exits noticed on the event loop (pidfd) */
  SCHED_THREADED = 1, /* exits waited for on worker threads, handed back to the loop */
  SCHED_DRY_RUN = 2,  /* nothing executes: a run records the argv it would run */
};

typedef struct sched_opts {
  config *cfg;          /* modules and limits: the sched takes a reference (config_ref) */
  runtab *rt;           /* not owned, must outlive the sched */
  const char *data_dir; /* output files go to data_dir/output/<run_id>.out */
  enum sched_mode mode;
  uint32_t resmon_interval_ms; /* resource samples; queued runs are re-tried after each */
  uint32_t default_grace_ms;   /* cancel and timeout: SIGTERM, then SIGKILL after this */
  uint32_t orphan_kill_ms;     /* see proc_opts */
  cgroup_root *cg;             /* runs get cgroups under it; NULL: process groups only. Not owned */
  metrics *metrics;            /* runs are counted there (runstats.h); NULL: not. Not owned */
} sched_opts;

/* The default grace of a cancel, a timeout and a shutdown's cancel: SIGTERM, then
 * SIGKILL this much later. */
#define SCHED_DEFAULT_GRACE_MS 5000

#define SCHED_OPTS_INIT \
  { NULL, NULL, "./var", SCHED_ASYNC, 1000, SCHED_DEFAULT_GRACE_MS, 2000, NULL, NULL }

/* Parses PRISMQ_RUN_MODE ("async", "threaded", "dry-run"; NULL or "" = async).
 * Returns 0 and sets *out, or -EINVAL. */
int sched_mode_parse(enum sched_mode *out, const char *s);

/* Creates data_dir and data_dir/output (with missing parents), where the run table
 * and the output files live. Returns 0, or a negative errno with err saying which
 * directory could not be made. */
int sched_init_data_dir(const char *data_dir, char *err, size_t errlen);

/* Creates the scheduler on a data_dir made by sched_init_data_dir (it reads, or first
 * makes, the key of secret parameter digests there: secretkey.h), and recovers what
 * an earlier server left in the run table:
 *   - RUNNING runs become LOST (error_message SCHED_LOST_MESSAGE...). Whatever of them
 *     still runs is killed: their cgroup, and their main process's group if that
 *     process is still the one recorded (pid, start time, this boot);
 *   - QUEUED runs are queued again, oldest first, and start from the loop as slots
 *     allow; one whose module is gone, whose parameters no longer fit the module or
 *     that had secret parameters becomes FAILED, saying so;
 *   - with opts->cg, cgroups left under its root are killed and removed.
 * Returns 0 and sets *out, or a negative errno with err (errlen bytes) saying what
 * failed. Free with sched_free. */
int sched_new(sched **out, struct event_base *base, const sched_opts *opts, char *err,
              size_t errlen);

/* Replaces the configuration snapshot (taking a reference; the old one is dropped once
 * no run taken under it is left): new runs and sched_config use `cfg` at once, with
 * its modules and limits; queued and running runs keep the module and timeout they
 * were taken with. Returns 0, or a negative errno with err (the old snapshot stays)
 * when the resource check of the new limits cannot start. */
int sched_set_config(sched *s, config *cfg, char *err, size_t errlen);

/* The current snapshot: valid until the next sched_set_config (take a reference with
 * config_ref to keep it longer). */
const config *sched_config(const sched *s);

/* Graceful stop: no run starts any more and no new run is taken (-EAGAIN); queued runs
 * stay QUEUED, for the next server on this data directory. Running runs are cancelled
 * (as sched_cancel with the default grace; they become CANCELLED with error_message
 * SCHED_SHUTDOWN_MESSAGE) at once if `cancel_runs` or grace_ms is 0, else those still
 * running grace_ms from now. `on_idle` fires (perhaps before this returns) once no run
 * is running. */
void sched_shutdown(sched *s, int cancel_runs, uint32_t grace_ms, void (*on_idle)(void *arg),
                    void *arg);

/* Frees the scheduler. Queued runs stay QUEUED in the run table. Runs still running (a
 * shutdown that did not finish in time) are SIGKILLed and recorded CANCELLED with
 * SCHED_SHUTDOWN_MESSAGE; watchers are dropped without firing. Accepts NULL. */
void sched_free(sched *s);

/* Creates a run from `req` (module, preset, parameters, labels, request_id, timeout_ms) for
 * `owner` (the caller's identity, "" for anonymous; recorded as Run.owner).
 * Returns 0 for a new run or 1 when req->request_id names an existing run with the
 * same module, parameters and owner (then that run is returned); *out is a copy the caller
 * frees with prismq__runner__v1__run__free_unpacked(*out, NULL). With req->preset, the
 * run starts from that preset's values (preset.h), the request's parameters override
 * them, and Run.preset records its name. Errors, *out untouched,
 * err filled: -ENOENT unknown module or preset; -ENOTSUP the module is disabled; -EINVAL bad
 * parameters (unknown, missing, or refused by param_check: each is added to `bad` if
 * not NULL, and err joins their messages); -EEXIST request_id used before for another
 * module, other parameters or owner;
 * -EAGAIN the queue is full (limits.max_queued_per_identity, limits.max_queued);
 * -ESHUTDOWN the scheduler is shutting down;
 * -EIO the run table failed. A run that can start at once never counts against
 * max_queued. */
int sched_start(sched *s, const Prismq__Runner__V1__StartRunRequest *req, const char *owner,
                sched_run **out, param_report *bad, char *err, size_t errlen);

/* Copies run `run_id` into *out (free as above). Returns 0 or -ENOENT. */
int sched_get(sched *s, const char *run_id, sched_run **out);

/* As sched_get, but gives the run encoded (a packed Run), without decoding a stored
 * one: *out is valid until the next call into the scheduler. Returns 0 or -ENOENT. */
int sched_get_packed(sched *s, const char *run_id, const uint8_t **out, size_t *len);

/* Longest grace a cancel may ask for. */
#define SCHED_MAX_GRACE_MS 60000

/* Cancels a run: a queued run becomes CANCELLED at once; a running one gets SIGTERM
 * to its process group and SIGKILL after grace_ms (0 = the default grace; at most
 * SCHED_MAX_GRACE_MS), and becomes
 * CANCELLED when it has exited (watch SCHED_EV_TERMINAL to learn when). Cancelling a
 * run that is already being cancelled, or that is timing out (it stays TIMED_OUT), is
 * not an error. Returns 0, -ENOENT, or
 * -EALREADY if the run is terminal. */
int sched_cancel(sched *s, const char *run_id, uint32_t grace_ms);

/* Lists runs newest first; see runtab_list for the filter and paging. Active runs
 * show their live values. Same ownership as runtab_list (runtab_list_free). */
int sched_list(sched *s, const runtab_filter *f, const char *before_run_id, size_t limit,
               sched_run ***out, size_t *n_out, int *more_out);

/* What a watcher waits for. */
enum {
  SCHED_EV_STARTED = 1,  /* the run left QUEUED (to RUNNING or terminal), or, a remote
                          * one, was handed to its executor: its output log exists */
  SCHED_EV_TERMINAL = 2, /* the run is terminal and its output log has ended */
};

typedef struct sched_watch sched_watch;

/* Called once when one of the watched events happens; `run` is the run's current
 * state (valid during the call). The watch is freed right after the call: do not
 * sched_unwatch it then. */
typedef void (*sched_watch_fn)(void *arg, const sched_run *run);

/* Watches run `run_id` for `events`. If one of them has already happened, fn fires
 * from the loop soon (never inside this call). Returns 0 and sets *out (a handle to
 * sched_unwatch before it fires), or -ENOENT. */
int sched_watch_run(sched *s, sched_watch **out, const char *run_id, int events, sched_watch_fn fn,
                    void *arg);

/* Drops a watch that has not fired. Accepts NULL. */
void sched_unwatch(sched_watch *w);

/* Opens a reader of the run's output from `start_seq` (0 = the start) filtered by
 * `stream` (0 both, 1 stdout, 2 stderr): see outlog_reader_*. A queued run has no
 * output yet: returns -EAGAIN (watch SCHED_EV_STARTED, then open); a remote run has its
 * log from its submission on, while it may still be QUEUED. Returns 0 and sets
 * *out (free with outlog_reader_free), or sets *out to NULL for a terminal run that
 * never started (it has no output at all); -ENOENT for an unknown run, -EINVAL for a
 * bad stream, or the negative errno of opening a finished run's output file. */
int sched_open_output(sched *s, const char *run_id, uint64_t start_seq, int stream,
                      outlog_reader **out);

/* The run table the scheduler was made with (sched_opts.rt). */
runtab *sched_runtab(const sched *s);

/* Counters: runs queued + running, and all runs in the table. */
size_t sched_active(const sched *s);
uint64_t sched_total(const sched *s);

#endif
