/* slurmjob: the text that Slurm's command-line tools take and give, for the Slurm
 * executor (exec.h): a run's batch script and sbatch's arguments, and the reading of
 * what sbatch --parsable, squeue and sacct print. Pure functions: no I/O, no processes.
 * Core code: knows no protocol. Out of memory aborts (server code). Thread-safe (no
 * state). */
#ifndef PRISMQ_SLURMJOB_H
#define PRISMQ_SLURMJOB_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The batch script of a run, for sbatch:
 *
 *   #!/bin/sh
 *   # prismq run RUN_ID
 *   exec 3>>'PROGRESS_PATH'        (only if progress_path != NULL)
 *   exec 'ARGV0' 'ARGV1' ...
 *
 * The progress line opens the run's progress descriptor (3) for appending to a file.
 * Every word (argv's, the progress path) is single-quoted, a ' in it written '\'' ,
 * so that the shell neither splits nor expands anything; no other shell feature is
 * used. A word may hold any byte but NUL (newlines too); a CR before a LF is closed
 * off from it ('...\r''\n...'), as sbatch refuses a script with a "\r\n" in it. Bytes
 * below 0x20 and 0x7f in run_id (it lands in a comment: a newline there would end it)
 * are written as '?'.
 *
 * run_id: the run's id; argv: the command, NULL-terminated, argv[0] the program (at
 * least one word; not starting with '-', which some shells' exec takes for an option);
 * progress_path: NULL, or the file descriptor 3 appends to.
 * Returns a malloc'd NUL-terminated string; the caller frees it with free(). Never
 * fails (aborts on out of memory). */
char *slurmjob_script(const char *run_id, const char *const *argv, const char *progress_path);

/* What slurmjob_sbatch_argv builds a submission from. Only read during the call. */
typedef struct slurmjob_submit {
  const char *sbatch;      /* the sbatch program's path (argv[0]) */
  const char *run_id;      /* names the job: "prismq-" RUN_ID (slurmjob_name) */
  const char *script_path; /* the batch script (slurmjob_script's), an absolute path */
  /* The job's stdout and stderr files: absolute paths without a '\' (Slurm drops every
   * '\' of such a path). */
  const char *out_path, *err_path;
  const char *cwd;             /* the job's working directory; NULL: not given */
  const config_slurm_job *job; /* the module's slurm: block; NULL: no options of its own */
  uint32_t time_limit_min;     /* --time in minutes; 0: no --time */
} slurmjob_submit;

/* sbatch's argv for a submission, NULL-terminated, one option a word (no shell):
 *
 *   SBATCH --parsable --job-name=prismq-RUN_ID --output=OUT --error=ERR --open-mode=append
 *     [--chdir=CWD] [--partition=P] [--account=A] [--qos=Q] [--cpus-per-task=N] [--mem=M]
 *     [--time=MIN] job->sbatch_args... SCRIPT_PATH
 *
 * An option is there when its value is given (non-NULL strings; cpus, time_limit_min
 * above 0); s->time_limit_min is used, never job->time_limit_min (the caller decides).
 * A '%' in OUT or ERR is written "%%", so that Slurm does not read it as one of its
 * file name patterns (%j, %x, ...). job->env is not used here: the environment sbatch
 * runs with is the job's (sbatch's default --export=ALL).
 * Returns a malloc'd array of malloc'd strings; free with slurmjob_argv_free. Never
 * fails (aborts on out of memory). */
char **slurmjob_sbatch_argv(const slurmjob_submit *s);

/* Frees what slurmjob_sbatch_argv returned. Accepts NULL. */
void slurmjob_argv_free(char **argv);

/* What the name of every job of ours begins with. */
#define SLURMJOB_NAME_PREFIX "prismq-"

/* The job name of a run, "prismq-" RUN_ID, into out (cap >= 1 bytes, NUL-terminated; cut
 * to cap - 1 bytes if longer). */
void slurmjob_name(char *out, size_t cap, const char *run_id);

/* Reads sbatch --parsable's stdout, text[0..len): "ID\n" or "ID;CLUSTER\n" (the final
 * newline may be missing; ID one or more digits, CLUSTER one or more bytes, no newline).
 * Returns 0 and copies ID into out (cap bytes, NUL-terminated); -EINVAL if text is not
 * that; -ERANGE if ID does not fit in cap - 1 bytes. out is untouched on failure. */
int slurmjob_parse_submit(char *out, size_t cap, const char *text, size_t len);

/* The -O (--Format) argument of `squeue -h` whose output slurmjob_parse_squeue reads:
 * fields separated by '|', sized to their text (":" with no width), the reason last (a
 * reason may hold anything, "(ReqNodeNotAvail, UnavailableNodes:n[1-3])" for one). */
#define SLURMJOB_SQUEUE_FORMAT "JobID:|,Name:|,State:|,exit_code:|,NodeList:|,Reason:"

/* The phases of a job, as far as a run is concerned (slurmjob_phase). */
enum { SLURMJOB_PENDING, SLURMJOB_RUNNING, SLURMJOB_ENDED };

/* One job as squeue tells it. Over-long fields are cut to fit (never inside a UTF-8
 * sequence; bytes that are not UTF-8 become '?'), trailing blanks dropped. */
typedef struct slurmjob_state {
  char job_id[24]; /* "123" ("123_4" for an array's task: squeue's JobID) */
  char name[80];
  char state[32]; /* Slurm's name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... */
  int phase;      /* SLURMJOB_* of state, or -1 for a name slurmjob_phase does not know */
  /* exit_code: a raw wait(2) status (768: exit 3; 9: killed by SIGKILL), meaningful only
   * once phase is SLURMJOB_ENDED; -1 unknown (empty, negative as Slurm's NO_VAL, or
   * above 0xffff). */
  int wait_status;
  char nodes[256];  /* the node list; "" when none yet */
  char reason[256]; /* why it is pending or ended; "" for Slurm's "None" */
} slurmjob_state;

/* Reads squeue's output in SLURMJOB_SQUEUE_FORMAT, text[0..len): any number of lines,
 * the last possibly without its newline. Calls fn(arg, st) for each line that parses,
 * in order, st valid during the call. A line that does not (fewer than six fields, a
 * JobID not starting with a digit, holding a blank or longer than 23 bytes, a State
 * not made of A-Z and '_', an exit_code that is neither empty nor an integer) is
 * skipped and counted; blank lines are ignored.
 * Returns how many lines were skipped. */
size_t slurmjob_parse_squeue(const char *text, size_t len,
                             void (*fn)(void *arg, const slurmjob_state *st), void *arg);

/* The phase of a Slurm job state name:
 *   PENDING, REQUEUED, REQUEUE_FED, REQUEUE_HOLD, RESV_DEL_HOLD, CONFIGURING (its
 *     resources are not ready: still pending for us) -> SLURMJOB_PENDING;
 *   RUNNING, COMPLETING, SUSPENDED, STOPPED, SIGNALING, STAGE_OUT, RESIZING
 *     -> SLURMJOB_RUNNING;
 *   COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, PREEMPTED, BOOT_FAIL,
 *     DEADLINE, SPECIAL_EXIT, REVOKED -> SLURMJOB_ENDED;
 *   any other name -> -1. */
int slurmjob_phase(const char *state);

/* The -o (--format) argument of `sacct -n -P -j IDS` whose output slurmjob_parse_sacct
 * reads: one line for the job ("123"), more for its steps ("123.batch", "123.extern",
 * "123.0"). */
#define SLURMJOB_SACCT_FIELDS "JobIDRaw,State,ExitCode,TotalCPU,MaxRSS"

/* The accounting of one ended job. */
typedef struct slurmjob_acct {
  char job_id[24];
  char state[32];             /* the job line's State, first word ("CANCELLED by 0") */
  int exit_code, term_signal; /* the job line's ExitCode, "CODE:SIGNAL" */
  /* The job line's TotalCPU: [D-]HH:MM:SS, MM:SS.mmm or MM:SS; "": 0. */
  uint64_t cpu_ms;
  /* The largest MaxRSS of its lines, in KiB (rounded): "1234K", "12M", "1.50G" (K, M,
   * G, T, P: powers of 1024), a bare number of bytes; "" and "0": 0. */
  uint64_t max_rss_kb;
} slurmjob_acct;

/* Reads sacct's output in SLURMJOB_SACCT_FIELDS, text[0..len): any number of lines,
 * the last possibly without its newline, in any order. Calls fn(arg, a) once per job
 * that has a job line, after the whole text was read, in the order jobs first appear,
 * with its steps merged in; a valid during the call. If a job has more than one job
 * line, the last one counts. Returns how many lines were skipped: lines that do not
 * parse (not five fields, a JobIDRaw not DIGITS or DIGITS.STEP with 1..23 digits, a
 * State whose first word is not made of A-Z and '_', an ExitCode, TotalCPU or MaxRSS
 * not in the forms above), and the lines of steps whose job has no line of its own.
 * Blank lines are ignored. Aborts on out of memory. */
size_t slurmjob_parse_sacct(const char *text, size_t len,
                            void (*fn)(void *arg, const slurmjob_acct *a), void *arg);

/* Splits a wait(2) status (squeue's exit_code) the way the server reports an exit
 * (exec.h's on_exit): *exit_status the exit code and *term_signal 0, or *exit_status -1
 * and *term_signal the signal that ended it; -1 (unknown), or a status that is neither,
 * gives -1 and 0. */
void slurmjob_wait_status(int wait_status, int *exit_status, int *term_signal);

#endif
