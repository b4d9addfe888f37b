/* exec: where a run's command is carried out. The scheduler decides
 * when a run starts, renders its command and records all there is to know of it; an
 * executor starts the command, hands its output over as it comes, ends it on request
 * and tells how it ended. The scheduler calls only the functions below, which dispatch
 * on the executor's kind:
 *
 *  - exec_local_new: processes on this machine (proc.h), each in a cgroup of its own
 *    where there are cgroups (cgroup.h), else in a process group of its own. A job has
 *    started when exec_start returns.
 *  - exec_slurm_new (exec_slurm.c): batch jobs on a Slurm cluster, submitted with
 *    sbatch, followed by one squeue for all jobs per interval, their output read from
 *    files in a directory the cluster shares (tailf.h). A job is pending on the cluster
 *    until on_remote says it runs; jobs outlive the server, and a restarted server takes
 *    them up again (exec_spec.resume).
 *
 * Single-threaded, on the scheduler's event_base. Callbacks fire from the loop, never
 * from inside an exec_* call; from inside one, the user may call exec_terminate,
 * exec_kill and exec_job_free on the same job. The server aborts on out-of-memory. */
#ifndef PRISMQ_EXEC_H
#define PRISMQ_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "cgroup.h"
#include "config.h"
#include "proc.h"
#include "prismq/runner/v1/runner.pb-c.h"

typedef struct executor executor;
typedef struct exec_job exec_job;

/* Streams given to on_output: the command's stdout and stderr, and its progress
 * descriptor (exec_spec.progress_pipe). The same numbers as proc's. */
enum { EXEC_STDOUT = PROC_STDOUT, EXEC_STDERR = PROC_STDERR, EXEC_PROGRESS = PROC_PROGRESS };

/* How a job ended (exec_spec.on_exit). */
typedef struct exec_end {
  int exit_status;                              /* its exit code (term_signal 0), or -1 ... */
  int term_signal;                              /* ... with the signal that ended it */
  uint64_t user_cpu_ms, sys_cpu_ms, max_rss_kb; /* what it used, as far as the executor
                                                 * can tell (0: unknown) */
  int timed_out;   /* the executor ended it for a time limit of its own (Slurm's) */
  const char *why; /* NULL, or what else the executor knows of the end, for a message
                    * ("cancelled on the cluster", "its node failed") */
} exec_end;

/* Where a remote job is (exec_spec.on_remote). Strings valid during the call. */
typedef struct exec_remote {
  const char *job_id; /* the cluster's id of the job */
  int running;        /* 0: pending (reason says why), 1: running (on node) */
  const char *reason; /* "" when the cluster gives none */
  const char *node;   /* "" until it runs */
} exec_remote;

/* One run's command and where to tell what becomes of it. Only read during exec_start
 * (the strings too), except the callbacks and arg. */
typedef struct exec_spec {
  /* The run: its run_id names the job; the executor records in it where the job is
   * (local: pid, pid_start_ticks, cgroup), for exec_end_survivors after a restart. */
  Prismq__Runner__V1__Run *run;
  const config_module *mod; /* its limits (memory_max, cpu_max_percent) */
  const char *const *argv;  /* NULL-terminated, argv[0] the program (no shell) */
  const char *const *envp;  /* the whole environment, NULL-terminated */
  const char *cwd;          /* NULL: the server's */
  const proc_input *inputs; /* data on descriptors of the command's own (ninputs) */
  size_t ninputs;
  int progress_pipe; /* non-zero: a third stream on the command's descriptor 3 */
  /* Remote executors: the run may have a job already, from an earlier server (its
   * run's job_id, or one submitted before the job id was recorded): take it up instead
   * of submitting another, its output from resume_bytes[0] (stdout) and [1] (stderr)
   * on, what the run's log holds. Local: ignored (see exec_started_before). */
  int resume;
  uint64_t resume_bytes[2];
  /* The run's timeout (0: none), which the scheduler enforces. Remote executors also
   * give the job a time limit a little past it (plus the grace), so that the cluster
   * ends it should this server be gone. */
  uint32_t timeout_ms;
  /* Called once, before the command starts, when nothing that survives a crash of the
   * server would show that it started (local: no cgroup): the caller records the run
   * as started then, so that a restart does not start it twice. May be NULL. */
  void (*commit_start)(void *arg);
  /* `len` (> 0) bytes of `stream` (EXEC_*), valid during the call, in order per stream. */
  void (*on_output)(void *arg, int stream, const uint8_t *data, size_t len);
  /* The job is done, exactly once, after its last output. */
  void (*on_exit)(void *arg, const exec_end *e);
  /* Remote executors only: the job could not be carried out (submission refused, the
   * job lost by the cluster), exactly once and instead of on_exit; why says so. */
  void (*on_fail)(void *arg, const char *why);
  /* Remote executors only: the job is submitted (pending, its id known), its pending
   * reason changed, or it started running. Local jobs run when exec_start returns. */
  void (*on_remote)(void *arg, const exec_remote *st);
  void *arg;
} exec_spec;

/* Options of exec_local_new. Initialise with EXEC_LOCAL_OPTS_INIT. */
typedef struct exec_local_opts {
  cgroup_root *cg;         /* a cgroup per run under it; NULL: process groups only. Not owned */
  int threaded;            /* exits waited for on worker threads (proc_opts.threaded) */
  uint32_t orphan_kill_ms; /* see proc_opts */
} exec_local_opts;

#define EXEC_LOCAL_OPTS_INIT \
  { NULL, 0, 2000 }

/* The local executor on `base` (opts NULL: EXEC_LOCAL_OPTS_INIT). Returns 0 and sets
 * *out (free with exec_free). */
int exec_local_new(executor **out, struct event_base *base, const exec_local_opts *opts);

/* Options of exec_slurm_new. Initialise with EXEC_SLURM_OPTS_INIT. */
typedef struct exec_slurm_opts {
  const char *spool_dir;       /* the jobs' scripts and output (shared with the cluster) */
  const char *bin_dir;         /* where the Slurm commands are; NULL: the server's PATH */
  uint32_t poll_interval_ms;   /* one squeue for all active jobs this often */
  uint32_t command_timeout_ms; /* a Slurm command taking longer is killed (and retried) */
  uint32_t grace_ms;           /* the grace of a time limit (added to --time) */
} exec_slurm_opts;

#define EXEC_SLURM_OPTS_INIT \
  { NULL, NULL, 1000, 60000, 10000 }

/* The Slurm executor on `base`. Returns 0 and sets *out (free with exec_free), or a
 * negative errno with err: -ENOENT (a Slurm command not found), -ENOTDIR, or that of
 * watching the spool directory (inotify). */
int exec_slurm_new(executor **out, struct event_base *base, const exec_slurm_opts *opts, char *err,
                   size_t errlen);

/* Frees an executor whose jobs are all freed. Accepts NULL. */
void exec_free(executor *ex);

/* The server stops: the executor starts no command of its own any more (Slurm: no
 * poll, no lookup) and calls fn(arg) once, from the loop, when none is under way
 * (local: at once), so that exec_free leaves no child process behind. */
void exec_quiesce(executor *ex, void (*fn)(void *arg), void *arg);

/* Starts spec's command. Returns 0 and sets *out (free with exec_job_free; the
 * callbacks fire from the loop), or a negative errno with err (errlen bytes) saying what
 * failed, *out untouched, no callback to come and nothing left running: -ENOENT (no
 * such program), -EACCES, or another from setting it up (a cgroup, pipes, the spawn). */
int exec_start(executor *ex, exec_job **out, const exec_spec *spec, char *err, size_t errlen);

/* Asks the job to end: SIGTERM to everything it started now, SIGKILL grace_ms later if
 * it is not done by then (0: at once). Idempotent; on_exit fires as usual. */
void exec_terminate(exec_job *j, uint32_t grace_ms);

/* Ends the job now (SIGKILL to everything it started); on_exit fires as usual. */
void exec_kill(exec_job *j);

/* Releases the job; accepts NULL. No callback fires after it. A local job not done is
 * killed; a remote one goes on on the cluster (a later server takes it up again).
 * Called from one of its callbacks, the release takes place when it returns. */
void exec_job_free(exec_job *j);

/* After a restart: whether the run `run`, recorded QUEUED by an earlier server, had in
 * fact started under this executor (local: its cgroup exists; it is then set in run's
 * cgroup field). Such a run is LOST, never started twice. */
int exec_started_before(executor *ex, Prismq__Runner__V1__Run *run);

/* After a restart: ends whatever is left of `run`, which an earlier server had running
 * (local: its cgroup; and its main process's group if that process is still the one
 * recorded, started after boot_ms, the boot's time). Returns 1 if something was
 * ended, else 0. */
int exec_end_survivors(executor *ex, const Prismq__Runner__V1__Run *run, int64_t boot_ms);

/* After a restart, once every run has been looked at: ends and removes what earlier
 * servers left that no run claims (local: cgroups under the root). Returns how many. */
size_t exec_sweep(executor *ex);

/* The run is over and its job freed: removes what the executor kept for it (local: its
 * cgroup). */
void exec_forget(executor *ex, const Prismq__Runner__V1__Run *run);

#endif
