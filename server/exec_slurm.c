/* The Slurm executor: a run's command is a batch job on a Slurm cluster. See exec.h
 * and docs/slurm.md.
 *
 * A job goes through these phases:
 *   LOOKUP   a run taken up after a restart without a recorded job id: squeue by the
 *            job's name (prismq-RUN_ID) tells whether an earlier server submitted it;
 *   SUBMIT   sbatch is running;
 *   PENDING, RUNNING  as squeue says, polled for all jobs at once every interval;
 *   ENDING   the job has ended: its files were read to the end, sacct is asked for
 *            its accounting (where the cluster keeps any);
 *   DONE     on_exit or on_fail has fired.
 * Every Slurm command is a child process on the loop (proc.h), never waited for; each
 * has a timeout. Output comes from the files the job writes in the spool directory,
 * followed with inotify (tailf.h) and read again at every poll for file systems whose
 * writes on other hosts raise no event. */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <search.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compat.h"
#include "exec.h"
#include "exec_impl.h"
#include "log.h"
#include "proc.h"
#include "slurmjob.h"
#include "tailf.h"
#include "xalloc.h"

extern char **environ;

enum { P_LOOKUP, P_SUBMIT, P_PENDING, P_RUNNING, P_ENDING, P_DONE };

/* The programs this executor runs. sacct is optional (clusters without accounting). */
enum { SBATCH, SQUEUE, SCANCEL, SACCT, NPROGS };
static const char *const prog_names[NPROGS] = {"sbatch", "squeue", "scancel", "sacct"};

/* Job ids in one squeue: an argument is at most 128 KiB (MAX_ARG_STRLEN). */
#define POLL_CHUNK 4096

/* Output kept of one Slurm command: squeue's lines for POLL_CHUNK jobs fit. */
#define CMD_OUT_MAX (4u << 20)
#define CMD_ERR_MAX 4096

/* Polls a job may be missing from squeue's answer before it counts as gone. */
#define MISSING_MAX 3

struct slurm;
struct sjob;
struct cmd;

typedef void (*cmd_done_fn)(struct cmd *c);

struct buf {
  char *p;
  size_t len, cap, max;
};

/* One Slurm command in flight. */
struct cmd {
  struct slurm *ex;
  struct sjob *job; /* the job it is for (a reference), or NULL */
  proc *p;
  struct event *timer;
  struct buf out, err;
  int exit_status, term_signal;
  cmd_done_fn done;
  struct cmd *prev, *next;
};

struct sjob {
  exec_job job; /* first: the dispatch */
  struct slurm *ex;
  int phase;
  char run_id[40];
  char job_id[24];
  char reason[256], node[256];
  /* Until submitted: what sbatch gets. */
  char *script;
  char **sbatch_argv;
  char **sbatch_env;
  tailf_file *files[3]; /* stdout, stderr, progress (NULL without) */
  uint64_t progress_from;
  void (*on_output)(void *arg, int stream, const uint8_t *data, size_t len);
  void (*on_exit)(void *arg, const exec_end *e);
  void (*on_fail)(void *arg, const char *why);
  void (*on_remote)(void *arg, const exec_remote *st);
  void *arg;
  exec_end end;
  char why[160];
  unsigned refs;                  /* the owner's, plus one per command and delivery in progress */
  unsigned terminating : 1;       /* exec_terminate was called */
  unsigned killed : 1;            /* the SIGKILL cancel was sent */
  unsigned cancel_wanted : 1;     /* a cancel to send once the job id is known */
  unsigned lookup_busy : 1;       /* squeue --name is running for it */
  unsigned missing : 2;           /* passes in a row squeue did not name it */
  unsigned vanished : 1;          /* gone from squeue before its end was seen */
  unsigned kicked : 1;            /* its first output asked for a poll */
  unsigned in_output : 1;         /* on_output is running */
  uint64_t poll_gen;              /* the pass that last asked squeue for it */
  uint64_t chunk_gen, seen_chunk; /* the squeue call that asked, and the last that named it */
  struct event *grace_ev;
  struct sjob *prev, *next; /* ex->jobs: every job not freed */
};

struct slurm {
  executor ex; /* first: the dispatch */
  struct event_base *base;
  char *spool_dir;
  char *progs[NPROGS];
  char *slurm_conf; /* "SLURM_CONF=..." from the server's environment, or NULL */
  uint32_t poll_ms, cmd_timeout_ms, grace_ms;
  tailf *tf;
  struct sjob *jobs;
  void *by_id; /* tsearch tree of jobs with a job id, not DONE */
  size_t nids;
  struct cmd *cmds;
  struct event *poll_ev;
  uint64_t gen;      /* of the poll pass in progress */
  uint64_t chunk;    /* of the last squeue call of a pass (POLL_CHUNK jobs each) */
  int polling;       /* squeue or sacct of a pass in flight */
  int repoll;        /* a pass was asked for while one was in flight */
  struct sjob *reap; /* jobs freed from inside their output: their files go from the loop */
  void (*quiet_fn)(void *arg); /* exec_quiesce's: fires once no command is under way */
  void *quiet_arg;
  struct event *quiet_ev;
  int quiescing; /* no poll or lookup of its own any more */
  struct event *reap_ev;
  int acct;            /* sacct gives accounting: 1 until it says the cluster keeps none */
  int warned_squeue;   /* the last squeue failed (said once per streak) */
  struct sjob **ended; /* jobs of this pass waiting for sacct */
  size_t nended, cap_ended;
};

/* ---- small helpers ---------------------------------------------------------------- */

static void buf_add(struct buf *b, const uint8_t *data, size_t len) {
  if (len > b->max - b->len) len = b->max - b->len;
  if (!len) return;
  if (b->len + len + 1 > b->cap) {
    b->cap = (b->len + len + 1) * 2;
    b->p = xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, data, len);
  b->len += len;
  b->p[b->len] = '\0';
}

/* The first line of a command's stderr, for a message. */
static void first_line(char *out, size_t cap, const struct buf *b) {
  size_t n = b->len ? strcspn(b->p, "\n") : 0;
  snprintf(out, cap, "%.*s", (int)n, n ? b->p : "");
}

static int id_cmp(const void *a, const void *b) {
  return strcmp(((const struct sjob *)a)->job_id, ((const struct sjob *)b)->job_id);
}

static struct sjob *find_job(struct slurm *ex, const char *job_id) {
  struct sjob key;
  snprintf(key.job_id, sizeof key.job_id, "%s", job_id);
  void *n = tfind(&key, &ex->by_id, id_cmp);
  return n ? *(struct sjob **)n : NULL;
}

static void job_unref(struct sjob *j);

/* ---- commands --------------------------------------------------------------------- */

static void cmd_output(proc *p, int stream, const uint8_t *data, size_t len, void *arg) {
  (void)p;
  struct cmd *c = arg;
  buf_add(stream == PROC_STDOUT ? &c->out : &c->err, data, len);
}

static void cmd_free(struct cmd *c) {
  struct slurm *ex = c->ex;
  if (c->prev)
    c->prev->next = c->next;
  else
    ex->cmds = c->next;
  if (c->next) c->next->prev = c->prev;
  event_free(c->timer);
  proc_free(c->p);
  free(c->out.p);
  free(c->err.p);
  if (c->job) job_unref(c->job);
  free(c);
  if (ex->quiet_fn && !ex->cmds) event_active(ex->quiet_ev, 0, 0);
}

static void cmd_exit(proc *p, int exit_status, int term_signal, const proc_usage *u, void *arg) {
  (void)p;
  (void)u;
  struct cmd *c = arg;
  c->exit_status = exit_status;
  c->term_signal = term_signal;
  c->done(c);
  cmd_free(c);
}

static void cmd_timeout(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct cmd *c = arg;
  LOG_WARN("a Slurm command took over %u ms, ending it", c->ex->cmd_timeout_ms);
  proc_terminate(c->p, 1000);
}

/* Runs argv (envp NULL: the server's environment) for job j (NULL: none); done fires
 * from the loop once it has ended, with its output in c->out and c->err. Returns 0 or
 * the negative errno of the spawn (logged). */
static int cmd_run(struct slurm *ex, struct sjob *j, const char *const *argv,
                   const char *const *envp, cmd_done_fn done) {
  struct cmd *c = xcalloc(1, sizeof *c);
  c->ex = ex;
  c->done = done;
  c->out.max = CMD_OUT_MAX;
  c->err.max = CMD_ERR_MAX;
  proc_opts po = PROC_OPTS_INIT;
  po.argv = argv;
  po.envp = envp ? envp : (const char *const *)environ;
  po.on_output = cmd_output;
  po.on_exit = cmd_exit;
  po.arg = c;
  int rc = proc_spawn(&c->p, ex->base, &po);
  if (rc < 0) {
    LOG_ERROR("cannot run %s: %s", argv[0], strerror(-rc));
    free(c);
    return rc;
  }
  c->timer = evtimer_new(ex->base, cmd_timeout, c);
  if (!c->timer) abort();
  struct timeval tv = compat_timeout_ms(ex->cmd_timeout_ms);
  evtimer_add(c->timer, &tv);
  if (j) {
    c->job = j;
    j->refs++;
  }
  c->next = ex->cmds;
  if (c->next) c->next->prev = c;
  ex->cmds = c;
  return 0;
}

/* ---- polling ------------------------------------------------------------------------ */

static void poll_start(struct slurm *ex);

/* Polls again after the interval (or after `ms`, if sooner than one pending). */
static void poll_later(struct slurm *ex, uint32_t ms) {
  if (ex->quiescing) return;
  struct timeval tv = compat_timeout_ms(ms), left;
  if (evtimer_pending(ex->poll_ev, &left)) {
    struct timeval now;
    event_base_gettimeofday_cached(ex->base, &now);
    timersub(&left, &now, &left);
    if (timercmp(&left, &tv, <=)) return;
  }
  evtimer_add(ex->poll_ev, &tv);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  poll_start(arg);
}

/* ---- delivering the end ---------------------------------------------------------- */

static void job_untrack(struct sjob *j) {
  struct slurm *ex = j->ex;
  if (j->job_id[0] && tdelete(j, &ex->by_id, id_cmp)) ex->nids--;
  j->job_id[0] = '\0';
}

static void files_drain(struct sjob *j) {
  for (int i = 0; i < 3; i++)
    if (j->files[i]) tailf_poll(j->files[i]);
}

static void deliver_exit(struct sjob *j) {
  files_drain(j);
  if (!j->on_exit) return; /* freed from its last output */
  job_untrack(j);
  j->phase = P_DONE;
  j->refs++;
  j->on_exit(j->arg, &j->end);
  job_unref(j);
}

static void deliver_fail(struct sjob *j, const char *why) {
  LOG_WARN("Slurm job failed run_id=%s job_id=%s: %s", j->run_id, j->job_id, why);
  files_drain(j);
  if (!j->on_exit) return; /* freed from its last output */
  job_untrack(j);
  j->phase = P_DONE;
  j->refs++;
  j->on_fail(j->arg, why);
  job_unref(j);
}

static void tell_remote(struct sjob *j) {
  exec_remote st = {j->job_id, j->phase == P_RUNNING, j->reason, j->node};
  j->refs++;
  j->on_remote(j->arg, &st);
  job_unref(j);
}

/* What Slurm's end state says beyond the exit status, for the run's message. */
static void end_from_state(struct sjob *j, const char *state) {
  j->end.why = NULL;
  if (!strcmp(state, "TIMEOUT")) {
    j->end.timed_out = 1;
    snprintf(j->why, sizeof j->why, "the job reached its Slurm time limit");
  } else if (!strcmp(state, "CANCELLED")) {
    if (j->terminating) return;
    snprintf(j->why, sizeof j->why, "the Slurm job %s was cancelled on the cluster", j->job_id);
  } else if (!strcmp(state, "NODE_FAIL") || !strcmp(state, "OUT_OF_MEMORY") ||
             !strcmp(state, "PREEMPTED") || !strcmp(state, "BOOT_FAIL") ||
             !strcmp(state, "DEADLINE") || !strcmp(state, "REVOKED")) {
    snprintf(j->why, sizeof j->why, "the Slurm job %s ended %s", j->job_id, state);
  } else {
    return;
  }
  j->end.why = j->why;
}

static void acct_line(void *arg, const slurmjob_acct *a) {
  struct slurm *ex = arg;
  struct sjob *j = find_job(ex, a->job_id);
  if (!j || j->phase != P_ENDING) return;
  j->end.user_cpu_ms = a->cpu_ms;
  j->end.max_rss_kb = a->max_rss_kb;
  if (j->vanished && slurmjob_phase(a->state) != SLURMJOB_ENDED) {
    /* squeue missed it, but it goes on: back to following it (ended_deliver skips it). */
    j->phase = slurmjob_phase(a->state) == SLURMJOB_RUNNING ? P_RUNNING : P_PENDING;
    j->vanished = 0;
    j->missing = 0;
    j->end.why = NULL;
    return;
  }
  if (j->vanished) {
    /* squeue had forgotten it: accounting tells how it ended. */
    j->end.exit_status = a->term_signal ? -1 : a->exit_code;
    j->end.term_signal = a->term_signal;
    end_from_state(j, a->state);
  }
}

/* Delivers the ends of this pass's ended jobs. */
static void ended_deliver(struct slurm *ex) {
  size_t n = ex->nended;
  ex->nended = 0;
  struct sjob **list = xmalloc((n ? n : 1) * sizeof *list);
  memcpy(list, ex->ended, n * sizeof *list);
  for (size_t i = 0; i < n; i++) {
    if (list[i]->phase == P_ENDING && list[i]->on_exit) deliver_exit(list[i]);
    job_unref(list[i]); /* taken in ended_add */
  }
  free(list);
}

static void acct_done(struct cmd *c) {
  struct slurm *ex = c->ex;
  if (c->exit_status == 0) {
    slurmjob_parse_sacct(c->out.p ? c->out.p : "", c->out.len, acct_line, ex);
  } else if (c->err.p && strstr(c->err.p, "accounting storage is disabled")) {
    LOG_INFO("the Slurm cluster keeps no accounting: runs get no CPU time or memory figures");
    ex->acct = 0;
  } else {
    char line[256];
    first_line(line, sizeof line, &c->err);
    LOG_WARN("sacct failed (exit %d): %s", c->exit_status, line);
  }
  ended_deliver(ex);
  ex->polling = 0;
  if (ex->jobs) poll_later(ex, ex->repoll ? 0 : ex->poll_ms);
}

/* Asks sacct for the accounting of this pass's ended jobs, then delivers them; without
 * accounting, delivers them at once. */
static void ended_finish(struct slurm *ex) {
  if (!ex->nended) return;
  if (!ex->acct || !ex->progs[SACCT]) {
    ended_deliver(ex);
    return;
  }
  /* One argument holds at most 128 KiB (MAX_ARG_STRLEN): past POLL_CHUNK jobs ended in
   * one pass (a mass cancel), the rest end without accounting. */
  size_t n = ex->nended < POLL_CHUNK ? ex->nended : POLL_CHUNK;
  size_t cap = n * sizeof ex->ended[0]->job_id + 1, o = 0;
  char *ids = xmalloc(cap);
  for (size_t i = 0; i < n; i++)
    if (ex->ended[i]->job_id[0])
      o += (size_t)snprintf(ids + o, cap - o, "%s%s", o ? "," : "", ex->ended[i]->job_id);
  const char *argv[] = {ex->progs[SACCT], "-n", "-P", "-j", ids, "-o", SLURMJOB_SACCT_FIELDS, NULL};
  int rc = cmd_run(ex, NULL, argv, NULL, acct_done);
  free(ids);
  if (rc < 0)
    ended_deliver(ex);
  else
    ex->polling = 1;
}

static void ended_add(struct slurm *ex, struct sjob *j) {
  j->phase = P_ENDING;
  j->refs++;
  if (ex->nended == ex->cap_ended) {
    ex->cap_ended = ex->cap_ended ? ex->cap_ended * 2 : 16;
    ex->ended = xrealloc(ex->ended, ex->cap_ended * sizeof *ex->ended);
  }
  ex->ended[ex->nended++] = j;
}

/* ---- squeue's answer ----------------------------------------------------------------- */

static void cancel_send(struct sjob *j, int kill);

/* squeue says the job runs (on other nodes, if it had been running already). */
static void now_running(struct sjob *j, const char *nodes) {
  if (j->phase == P_RUNNING && !strcmp(j->node, nodes)) return;
  j->phase = P_RUNNING;
  j->reason[0] = '\0';
  snprintf(j->node, sizeof j->node, "%s", nodes);
  LOG_INFO("Slurm job running run_id=%s job_id=%s node=%s", j->run_id, j->job_id, j->node);
  tell_remote(j);
}

static void state_line(void *arg, const slurmjob_state *st) {
  struct slurm *ex = arg;
  struct sjob *j = find_job(ex, st->job_id);
  if (!j || j->phase == P_ENDING || j->phase == P_DONE) return;
  j->seen_chunk = ex->chunk;
  j->missing = 0;
  if (st->phase == SLURMJOB_PENDING && j->phase == P_RUNNING) {
    /* Requeued by Slurm (a node failed, preemption): pending again, on no node. */
    j->phase = P_PENDING;
    j->node[0] = '\0';
    snprintf(j->reason, sizeof j->reason, "%s", st->reason);
    LOG_INFO("Slurm job pending again run_id=%s job_id=%s reason=%s", j->run_id, j->job_id,
             j->reason);
    tell_remote(j);
  } else if (st->phase == SLURMJOB_PENDING && j->phase == P_PENDING) {
    if (strcmp(j->reason, st->reason) != 0) {
      snprintf(j->reason, sizeof j->reason, "%s", st->reason);
      tell_remote(j);
    }
  } else if (st->phase == SLURMJOB_RUNNING) {
    now_running(j, st->nodes);
  } else if (st->phase == SLURMJOB_ENDED) {
    /* One that ran between two polls (it had nodes) started all the same. */
    if (st->nodes[0]) now_running(j, st->nodes);
    slurmjob_wait_status(st->wait_status, &j->end.exit_status, &j->end.term_signal);
    end_from_state(j, st->state);
    LOG_INFO("Slurm job ended run_id=%s job_id=%s state=%s", j->run_id, j->job_id, st->state);
    ended_add(ex, j);
  }
}

/* Jobs of this pass that squeue did not name: after MISSING_MAX passes, gone. */
static void missing_check(struct slurm *ex) {
  for (struct sjob *j = ex->jobs, *next; j; j = next) {
    next = j->next;
    if (j->chunk_gen != ex->chunk || j->seen_chunk == ex->chunk) continue;
    if (j->phase != P_PENDING && j->phase != P_RUNNING) continue;
    if (++j->missing < MISSING_MAX) continue;
    /* sacct may still know how it ended. */
    j->vanished = 1;
    j->end.exit_status = -1;
    j->end.term_signal = 0;
    snprintf(j->why, sizeof j->why,
             "the Slurm job %s is no longer known to the cluster; how it ended was not seen",
             j->job_id);
    j->end.why = j->why;
    ended_add(ex, j);
  }
}

static int poll_chunk(struct slurm *ex);
static void pass_end(struct slurm *ex);

static void poll_done(struct cmd *c) {
  struct slurm *ex = c->ex;
  /* With none of the ids known any more, squeue fails rather than print nothing. */
  int none = c->exit_status == 1 && c->err.p && strstr(c->err.p, "Invalid job id");
  /* An answer cut at CMD_OUT_MAX would make jobs look gone: it counts as a failure. */
  int cut = c->out.len >= c->out.max;
  if ((c->exit_status == 0 && !cut) || none) {
    if (ex->warned_squeue) LOG_INFO("squeue answers again");
    ex->warned_squeue = 0;
    if (c->out.len) slurmjob_parse_squeue(c->out.p, c->out.len, state_line, ex);
    missing_check(ex);
  } else if (!ex->warned_squeue) {
    char line[256];
    first_line(line, sizeof line, &c->err);
    LOG_WARN("squeue failed (exit %d, signal %d), trying again every %u ms: %s", c->exit_status,
             c->term_signal, ex->poll_ms, line);
    ex->warned_squeue = 1;
  }
  ex->polling = 0;
  if (!poll_chunk(ex)) pass_end(ex);
}

/* One squeue for up to POLL_CHUNK jobs not yet asked for in this pass, reading the
 * files of the running ones first. Returns 1 if one was started. */
static int poll_chunk(struct slurm *ex) {
  size_t cap = POLL_CHUNK * sizeof ex->jobs->job_id + 1, o = 0, n = 0;
  char *ids = xmalloc(cap);
  for (struct sjob *j = ex->jobs; j && n < POLL_CHUNK; j = j->next) {
    if (!j->job_id[0] || j->poll_gen == ex->gen) continue;
    if (j->phase != P_PENDING && j->phase != P_RUNNING) continue;
    if (j->phase == P_RUNNING) files_drain(j);
    j->poll_gen = ex->gen;
    j->chunk_gen = ex->chunk + 1;
    o += (size_t)snprintf(ids + o, cap - o, "%s%s", n++ ? "," : "", j->job_id);
  }
  if (n) {
    ex->chunk++;
    const char *argv[] = {ex->progs[SQUEUE],      "-h", "--states=all", "-j", ids, "-O",
                          SLURMJOB_SQUEUE_FORMAT, NULL};
    ex->polling = cmd_run(ex, NULL, argv, NULL, poll_done) == 0;
  }
  free(ids);
  return ex->polling;
}

/* The pass is over: the ends it found are delivered (after sacct), and the next pass
 * comes after the interval while there are jobs. */
static void pass_end(struct slurm *ex) {
  if (ex->nended) ended_finish(ex);
  if (!ex->polling && ex->jobs) poll_later(ex, ex->repoll ? 0 : ex->poll_ms);
}

static void lookup_submit(struct sjob *j);

/* A poll pass: lookups that failed are tried again, then squeue for every job with an
 * id, POLL_CHUNK at a time. */
static void poll_start(struct slurm *ex) {
  if (ex->quiescing) return;
  if (ex->polling) {
    ex->repoll = 1; /* asked for early: another pass right after this one */
    return;
  }
  ex->repoll = 0;
  ex->gen++;
  for (struct sjob *j = ex->jobs; j; j = j->next)
    if (j->phase == P_LOOKUP && !j->lookup_busy) lookup_submit(j);
  if (!poll_chunk(ex)) pass_end(ex);
}

/* ---- submission ------------------------------------------------------------------- */

static void set_job_id(struct sjob *j, const char *id) {
  struct slurm *ex = j->ex;
  snprintf(j->job_id, sizeof j->job_id, "%s", id);
  if (!tsearch(j, &ex->by_id, id_cmp)) abort();
  ex->nids++;
  poll_later(ex, ex->poll_ms);
}

static void submit_free(struct sjob *j) {
  free(j->script);
  j->script = NULL;
  slurmjob_argv_free(j->sbatch_argv);
  j->sbatch_argv = NULL;
  slurmjob_argv_free(j->sbatch_env);
  j->sbatch_env = NULL;
}

static void submitted(struct cmd *c) {
  struct sjob *j = c->job;
  if (j->phase == P_DONE || !j->on_exit) return; /* freed meanwhile: the job goes on */
  char id[24], line[256];
  if (c->exit_status == 0 &&
      slurmjob_parse_submit(id, sizeof id, c->out.p ? c->out.p : "", c->out.len) == 0) {
    submit_free(j);
    j->phase = P_PENDING;
    set_job_id(j, id);
    LOG_INFO("Slurm job submitted run_id=%s job_id=%s", j->run_id, id);
    tell_remote(j);
    if (j->cancel_wanted && j->phase == P_PENDING) cancel_send(j, 1);
    return;
  }
  if (c->term_signal) {
    /* Killed by the timeout: whether the controller took the job is unknown. */
    LOG_WARN("sbatch did not answer in time run_id=%s: looking the job up by name", j->run_id);
    j->phase = P_LOOKUP;
    poll_later(j->ex, j->ex->poll_ms);
    return;
  }
  first_line(line, sizeof line, &c->err);
  char why[400];
  snprintf(why, sizeof why, "sbatch refused the job (exit %d): %s", c->exit_status, line);
  deliver_fail(j, why);
}

/* Writes the job's script into the spool directory and runs sbatch. Returns 0, or a
 * negative errno with err saying what failed (no callback then). */
static int submit(struct sjob *j, char *err, size_t errlen) {
  struct slurm *ex = j->ex;
  const char *script_path = j->sbatch_argv[0];
  for (char **a = j->sbatch_argv; *a; a++) script_path = *a; /* the last argument */
  int fd = open(script_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  size_t len = strlen(j->script);
  int rc = fd < 0 ? -errno : 0;
  if (rc == 0 && write(fd, j->script, len) != (ssize_t)len) rc = errno ? -errno : -EIO;
  if (fd >= 0 && close(fd) != 0 && rc == 0) rc = -errno;
  if (rc == 0) {
    j->phase = P_SUBMIT;
    rc = cmd_run(ex, j, (const char *const *)j->sbatch_argv, (const char *const *)j->sbatch_env,
                 submitted);
    if (rc == 0) return 0;
    snprintf(err, errlen, "cannot run %s: %s", j->sbatch_argv[0], strerror(-rc));
  } else {
    snprintf(err, errlen, "cannot write the job script %s: %s", script_path, strerror(-rc));
  }
  return rc;
}

static void looked_up_line(void *arg, const slurmjob_state *st) {
  struct sjob *j = arg;
  char name[80];
  slurmjob_name(name, sizeof name, j->run_id);
  if (!strcmp(st->name, name) && !j->job_id[0]) set_job_id(j, st->job_id);
}

static void looked_up(struct cmd *c) {
  struct sjob *j = c->job;
  j->lookup_busy = 0;
  if (j->phase != P_LOOKUP || !j->on_exit) return;
  if (c->exit_status != 0) {
    char line[256];
    first_line(line, sizeof line, &c->err);
    LOG_WARN("squeue --name failed run_id=%s, trying again: %s", j->run_id, line);
    poll_later(j->ex, j->ex->poll_ms);
    return;
  }
  if (c->out.len) slurmjob_parse_squeue(c->out.p, c->out.len, looked_up_line, j);
  if (!j->job_id[0] && j->cancel_wanted) {
    deliver_fail(j, "cancelled before its job was submitted");
    return;
  }
  if (!j->job_id[0]) {
    char why[4200];
    if (submit(j, why, sizeof why) < 0) deliver_fail(j, why);
    return;
  }
  LOG_INFO("Slurm job of an earlier server found run_id=%s job_id=%s", j->run_id, j->job_id);
  submit_free(j);
  j->phase = P_PENDING; /* squeue tells the rest at the next poll */
  tell_remote(j);
  if (j->cancel_wanted && j->phase == P_PENDING) cancel_send(j, 1);
}

/* A run that may have been submitted by an earlier server: looks for its job by name
 * (squeue), then submits it if there is none. */
static void lookup_submit(struct sjob *j) {
  struct slurm *ex = j->ex;
  char name[80];
  slurmjob_name(name, sizeof name, j->run_id);
  const char *argv[] = {ex->progs[SQUEUE],      "-h", "--states=all", "--name", name, "-O",
                        SLURMJOB_SQUEUE_FORMAT, NULL};
  if (cmd_run(ex, j, argv, NULL, looked_up) == 0)
    j->lookup_busy = 1;
  else
    poll_later(ex, ex->poll_ms); /* tried again at the next pass */
}

/* ---- cancel ----------------------------------------------------------------------- */

static void cancelled(struct cmd *c) {
  struct sjob *j = c->job;
  if (c->exit_status != 0) {
    char line[256];
    first_line(line, sizeof line, &c->err);
    LOG_INFO("scancel run_id=%s job_id=%s: exit %d: %s", j->run_id, j->job_id, c->exit_status,
             line);
  }
  /* Its end comes sooner than at the next regular poll. */
  if (j->ex->nids) poll_later(j->ex, 100);
}

/* scancel of j's job: with kill, a cancel (SIGKILL, after Slurm's own SIGTERM and
 * KillWait for a running job); without, SIGTERM to the batch script and all its steps'
 * processes, the job going on. */
static void cancel_send(struct sjob *j, int kill) {
  struct slurm *ex = j->ex;
  if (kill) j->killed = 1;
  const char *argv[] = {ex->progs[SCANCEL], "--full", kill ? "--signal=KILL" : "--signal=TERM",
                        j->job_id, NULL};
  /* A pending job has no processes to signal: it is simply cancelled. */
  if (j->phase == P_PENDING) {
    argv[1] = j->job_id;
    argv[2] = NULL;
  }
  cmd_run(ex, j, argv, NULL, cancelled);
}

static void grace_over(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct sjob *j = arg;
  if (j->phase == P_PENDING || j->phase == P_RUNNING) cancel_send(j, 1);
}

static void slurm_terminate(exec_job *jb, uint32_t grace_ms) {
  struct sjob *j = (struct sjob *)jb;
  if (j->terminating) return;
  j->terminating = 1;
  switch (j->phase) {
  case P_LOOKUP:
  case P_SUBMIT: j->cancel_wanted = 1; break;
  case P_PENDING: cancel_send(j, 1); break;
  case P_RUNNING:
    if (!grace_ms) {
      cancel_send(j, 1);
      break;
    }
    cancel_send(j, 0);
    j->grace_ev = evtimer_new(j->ex->base, grace_over, j);
    if (!j->grace_ev) abort();
    struct timeval tv = compat_timeout_ms(grace_ms);
    evtimer_add(j->grace_ev, &tv);
    break;
  default: break;
  }
}

static void slurm_kill(exec_job *jb) {
  struct sjob *j = (struct sjob *)jb;
  j->terminating = 1;
  if (j->phase == P_PENDING || j->phase == P_RUNNING) {
    if (!j->killed) cancel_send(j, 1);
  } else if (j->phase == P_LOOKUP || j->phase == P_SUBMIT) {
    j->cancel_wanted = 1;
  }
}

/* ---- jobs ---------------------------------------------------------------------------- */

static void job_unref(struct sjob *j) {
  if (--j->refs) return;
  submit_free(j);
  free(j);
}

static void files_free(struct sjob *j) {
  for (int i = 0; i < 3; i++) {
    tailf_file_free(j->files[i]);
    j->files[i] = NULL;
  }
}

/* Frees the files of jobs freed from inside their own output (tailf forbids freeing a
 * file from its callback). */
static void reap_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct slurm *ex = arg;
  while (ex->reap) {
    struct sjob *j = ex->reap;
    ex->reap = j->next;
    files_free(j);
    job_unref(j);
  }
}

/* A job released while a cancel of it is under way (the server stops): `scancel ID`,
 * left to run on its own, so that the cancel the client was told of still happens. The
 * run stays active in the table; the next server sees its job end. */
static void cancel_detached(struct sjob *j) {
  const char *argv[] = {j->ex->progs[SCANCEL], j->job_id, NULL};
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
  if (rc != 0)
    LOG_WARN("cannot cancel the Slurm job %s of run %s: %s", j->job_id, j->run_id, strerror(rc));
}

static void slurm_job_free(exec_job *jb) {
  struct sjob *j = (struct sjob *)jb;
  struct slurm *ex = j->ex;
  if (j->terminating && j->job_id[0] && (j->phase == P_PENDING || j->phase == P_RUNNING))
    cancel_detached(j);
  if (j->grace_ev) event_free(j->grace_ev);
  job_untrack(j);
  if (j->prev)
    j->prev->next = j->next;
  else
    ex->jobs = j->next;
  if (j->next) j->next->prev = j->prev;
  /* Commands and deliveries in flight see it as done and let go of it. */
  j->on_exit = NULL;
  j->phase = P_DONE;
  if (j->in_output) {
    /* Its files go from the loop; until then their output finds it done. */
    j->next = ex->reap;
    ex->reap = j;
    event_active(ex->reap_ev, 0, 0);
    return;
  }
  files_free(j);
  job_unref(j);
}

static void file_output(tailf_file *f, const uint8_t *data, size_t len, void *arg) {
  struct sjob *j = arg;
  int stream = f == j->files[0] ? EXEC_STDOUT : f == j->files[1] ? EXEC_STDERR : EXEC_PROGRESS;
  if (!j->on_exit) return;
  /* Output shows that the job runs: squeue tells where at once rather than at the next
   * interval, so the run is RUNNING with its node as soon as can be. */
  if (j->phase == P_PENDING && !j->kicked) {
    j->kicked = 1;
    poll_later(j->ex, 0);
  }
  j->in_output = 1;
  j->on_output(j->arg, stream, data, len);
  j->in_output = 0;
}

/* Follows the job's output files: stdout and stderr from what the run's log holds,
 * the progress file from its end (progress already reported is in the log). */
static int files_follow(struct sjob *j, const exec_spec *spec, char *err, size_t errlen) {
  static const char *const ext[3] = {"out", "err", "progress"};
  struct slurm *ex = j->ex;
  for (int i = 0; i < (spec->progress_pipe ? 3 : 2); i++) {
    char name[64], path[PATH_MAX];
    snprintf(name, sizeof name, "%s.%s", j->run_id, ext[i]);
    uint64_t from = 0;
    if (i < 2) {
      from = spec->resume ? spec->resume_bytes[i] : 0;
    } else {
      struct stat sb;
      snprintf(path, sizeof path, "%s/%s", ex->spool_dir, name);
      if (spec->resume && stat(path, &sb) == 0) from = (uint64_t)sb.st_size;
    }
    int rc = tailf_add(&j->files[i], ex->tf, name, from, file_output, j);
    if (rc < 0) {
      snprintf(err, errlen, "cannot follow %s/%s: %s", ex->spool_dir, name, strerror(-rc));
      return rc;
    }
  }
  return 0;
}

/* sbatch's environment: the run's, the module's slurm.env, and SLURM_CONF. */
static char **submit_env(const struct slurm *ex, const exec_spec *spec) {
  size_t n = 0, k = 0;
  while (spec->envp[n]) n++;
  const config_slurm_job *sj = &spec->mod->slurm;
  char **env = xcalloc(n + sj->nenv + 2, sizeof *env);
  for (size_t i = 0; i < n; i++) env[k++] = xstrdup(spec->envp[i]);
  for (size_t i = 0; i < sj->nenv; i++) env[k++] = xstrdup(sj->env[i]);
  if (ex->slurm_conf) env[k++] = xstrdup(ex->slurm_conf);
  return env;
}

/* The job's time limit in minutes: the module's, else its timeout plus the grace and a
 * poll interval (the server notices the start up to one interval late), rounded up. */
static uint32_t time_limit(const struct slurm *ex, const exec_spec *spec) {
  if (spec->mod->slurm.time_limit_min) return spec->mod->slurm.time_limit_min;
  if (!spec->timeout_ms) return 0;
  uint64_t ms = (uint64_t)spec->timeout_ms + ex->grace_ms + ex->poll_ms;
  return (uint32_t)((ms + 59999) / 60000);
}

static void submit_prepare(struct sjob *j, const exec_spec *spec) {
  struct slurm *ex = j->ex;
  char script[PATH_MAX], out[PATH_MAX], errp[PATH_MAX], prog[PATH_MAX];
  snprintf(script, sizeof script, "%s/%s.sh", ex->spool_dir, j->run_id);
  snprintf(out, sizeof out, "%s/%s.out", ex->spool_dir, j->run_id);
  snprintf(errp, sizeof errp, "%s/%s.err", ex->spool_dir, j->run_id);
  snprintf(prog, sizeof prog, "%s/%s.progress", ex->spool_dir, j->run_id);
  j->script = slurmjob_script(j->run_id, spec->argv, spec->progress_pipe ? prog : NULL);
  slurmjob_submit sub = {ex->progs[SBATCH], j->run_id,           script, out, errp, spec->cwd,
                         &spec->mod->slurm, time_limit(ex, spec)};
  j->sbatch_argv = slurmjob_sbatch_argv(&sub);
  j->sbatch_env = submit_env(ex, spec);
}

static int slurm_start(executor *base, exec_job **out, const exec_spec *spec, char *err,
                       size_t errlen) {
  struct slurm *ex = (struct slurm *)base;
  Prismq__Runner__V1__Run *run = spec->run;
  struct sjob *j = xcalloc(1, sizeof *j);
  j->job.ops = ex->ex.ops;
  j->ex = ex;
  j->refs = 1;
  snprintf(j->run_id, sizeof j->run_id, "%s", run->run_id);
  j->on_output = spec->on_output;
  j->on_exit = spec->on_exit;
  j->on_fail = spec->on_fail;
  j->on_remote = spec->on_remote;
  j->arg = spec->arg;
  int rc = files_follow(j, spec, err, errlen);
  if (rc < 0) {
    for (int i = 0; i < 3; i++) tailf_file_free(j->files[i]);
    free(j);
    return rc;
  }
  j->next = ex->jobs;
  if (j->next) j->next->prev = j;
  ex->jobs = j;
  if (run->executor == protobuf_c_empty_string || strcmp(run->executor, "slurm") != 0) {
    if (run->executor != protobuf_c_empty_string) free(run->executor);
    run->executor = xstrdup("slurm");
  }
  if (spec->resume && run->job_id[0]) {
    /* Its job is known: squeue says where it is at the next poll. */
    j->phase =
        run->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING ? P_RUNNING : P_PENDING;
    snprintf(j->node, sizeof j->node, "%s", run->node);
    snprintf(j->reason, sizeof j->reason, "%s", run->pending_reason);
    set_job_id(j, run->job_id);
    poll_later(ex, 0);
  } else {
    submit_prepare(j, spec);
    j->phase = P_LOOKUP;
    if (spec->resume) {
      lookup_submit(j);
    } else if ((rc = submit(j, err, errlen)) < 0) {
      slurm_job_free(&j->job);
      return rc;
    }
  }
  *out = &j->job;
  return 0;
}

/* ---- the executor ------------------------------------------------------------------ */

static int slurm_started_before(executor *ex, Prismq__Runner__V1__Run *run) {
  (void)ex;
  (void)run;
  return 0; /* its job, if any, is taken up again (exec_spec.resume) */
}

static int slurm_end_survivors(executor *ex, const Prismq__Runner__V1__Run *run, int64_t boot_ms) {
  (void)ex;
  (void)run;
  (void)boot_ms;
  return 0;
}

static size_t slurm_sweep(executor *ex) {
  (void)ex;
  return 0;
}

/* The run's output is in its log now: its files in the spool directory go. */
static void slurm_forget(executor *base, const Prismq__Runner__V1__Run *run) {
  static const char *const ext[] = {"sh", "out", "err", "progress"};
  struct slurm *ex = (struct slurm *)base;
  for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.%s", ex->spool_dir, run->run_id, ext[i]);
    if (unlink(path) != 0 && errno != ENOENT)
      LOG_WARN("cannot remove %s: %s", path, strerror(errno));
  }
}

static void slurm_free(executor *base) {
  struct slurm *ex = (struct slurm *)base;
  ex->quiet_fn = NULL;
  while (ex->cmds) cmd_free(ex->cmds);
  for (size_t i = 0; i < ex->nended; i++) job_unref(ex->ended[i]);
  free(ex->ended);
  reap_cb(-1, 0, ex);
  if (ex->reap_ev) event_free(ex->reap_ev);
  if (ex->quiet_ev) event_free(ex->quiet_ev);
  if (ex->poll_ev) event_free(ex->poll_ev);
  tailf_free(ex->tf);
  for (int i = 0; i < NPROGS; i++) free(ex->progs[i]);
  free(ex->slurm_conf);
  free(ex->spool_dir);
  free(ex);
}

static void quiet_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct slurm *ex = arg;
  void (*fn)(void *) = ex->quiet_fn;
  ex->quiet_fn = NULL;
  if (fn && !ex->cmds) fn(ex->quiet_arg);
}

static void slurm_quiesce(executor *base, void (*fn)(void *arg), void *arg) {
  struct slurm *ex = (struct slurm *)base;
  ex->quiescing = 1;
  evtimer_del(ex->poll_ev);
  ex->quiet_fn = fn;
  ex->quiet_arg = arg;
  if (!ex->cmds) event_active(ex->quiet_ev, 0, 0);
}

static const exec_ops slurm_ops = {
    slurm_start,         slurm_terminate, slurm_kill,   slurm_job_free, slurm_started_before,
    slurm_end_survivors, slurm_sweep,     slurm_forget, slurm_quiesce,  slurm_free};

/* The path of program `name`: in bin_dir, or else as proc_spawn would find it in the
 * server's PATH. */
static char *find_prog(const char *bin_dir, const char *name) {
  char file[PATH_MAX], path[PATH_MAX];
  snprintf(file, sizeof file, "%s%s%s", bin_dir ? bin_dir : "", bin_dir ? "/" : "", name);
  return proc_resolve(path, sizeof path, file, (const char *const *)environ) == 0 ? xstrdup(path)
                                                                                  : NULL;
}

int exec_slurm_new(executor **out, struct event_base *base, const exec_slurm_opts *opts, char *err,
                   size_t errlen) {
  struct slurm *ex = xcalloc(1, sizeof *ex);
  ex->ex.ops = &slurm_ops;
  ex->base = base;
  ex->spool_dir = xstrdup(opts->spool_dir);
  ex->poll_ms = opts->poll_interval_ms;
  ex->cmd_timeout_ms = opts->command_timeout_ms;
  ex->grace_ms = opts->grace_ms;
  ex->acct = 1;
  int rc = 0;
  for (int i = 0; i < NPROGS; i++) {
    ex->progs[i] = find_prog(opts->bin_dir, prog_names[i]);
    if (!ex->progs[i] && i != SACCT) {
      snprintf(err, errlen, "the Slurm command %s is not in %s", prog_names[i],
               opts->bin_dir ? opts->bin_dir : "the PATH");
      rc = -ENOENT;
      goto fail;
    }
  }
  const char *conf = getenv("SLURM_CONF");
  if (conf) {
    size_t len = strlen(conf) + sizeof "SLURM_CONF=";
    ex->slurm_conf = xmalloc(len);
    snprintf(ex->slurm_conf, len, "SLURM_CONF=%s", conf);
  }
  if ((rc = tailf_new(&ex->tf, base, ex->spool_dir)) < 0) {
    snprintf(err, errlen, "cannot watch the Slurm spool directory %s: %s", ex->spool_dir,
             strerror(-rc));
    goto fail;
  }
  ex->poll_ev = evtimer_new(base, poll_cb, ex);
  ex->reap_ev = event_new(base, -1, 0, reap_cb, ex);
  ex->quiet_ev = event_new(base, -1, 0, quiet_cb, ex);
  if (!ex->poll_ev || !ex->reap_ev || !ex->quiet_ev) abort();
  *out = &ex->ex;
  return 0;

fail:
  slurm_free(&ex->ex);
  return rc;
}
