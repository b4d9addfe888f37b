#include "scheduler.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <search.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "compat.h"
#include "exec.h"
#include "ids.h"
#include "log.h"
#include "outlog.h"
#include "preset.h"
#include "progress.h"
#include "quota.h"
#include "resmon.h"
#include "runstats.h"
#include "secretkey.h"
#include "utf8.h"
#include "xalloc.h"

/* The last stderr bytes kept for a failed run's error_message (as the old design). */
#define ERRTAIL_MAX 500
/* Finished runs' logs kept open after a replay: reopening one scans its whole file,
 * so a client replaying the same run again and again must not make the loop do it. */
#define DONE_LOGS 8

struct sched_watch {
  sched *s;
  struct srun *run; /* live watch: on run->watchers; NULL for a pending one */
  sched_run *snap;  /* pending watch: the state to report, fired from `ev` */
  struct event *ev;
  int events;
  sched_watch_fn fn;
  void *arg;
  unsigned firing : 1;  /* taken by notify: freed there */
  unsigned dropped : 1; /* unwatched while firing: its callback is skipped */
  struct sched_watch *prev, *next;
};

/* An active (queued or running) run. */
struct srun {
  sched *s;
  sched_run *pb;            /* owned; strings are malloc'd or protobuf_c_empty_string */
  config *cfg;              /* the snapshot the run was taken under (a reference) */
  const config_module *mod; /* in cfg */
  char **argv;              /* rendered at request time; freed once started */
  char *cwd;
  char **secret_env; /* "ENV_VAR=value" of its secret parameters, until started; else NULL */
  uint32_t timeout_ms;
  exec_job *job; /* while running */
  outlog *log;
  struct event *timer;
  char *errtail; /* ring of the last ERRTAIL_MAX stderr bytes, while running */
  size_t errtail_len, errtail_pos;
  progress_scan *out_scan; /* stdout's progress lines (the module's pattern), while running */
  progress_scan *fd_scan;  /* the lines of its progress descriptor, while running */
  unsigned cancelled : 1, timed_out : 1, progress_warned : 1;
  unsigned remote : 1,       /* carried out by the Slurm executor (its module's executor) */
      resume : 1,            /* remote, recovered after a restart: its job may exist already */
      holding : 1;           /* counts in nrunning (local) or nremote (remote), and per module */
  int log_errno;             /* the first output write error, or 0 */
  const char *cancel_reason; /* error_message of a cancelled run (static) */
  struct sched_watch *watchers;
  struct srun *qprev, *qnext; /* the queue, while QUEUED */
};

struct sched {
  struct event_base *base;
  sched_opts opts;
  char *data_dir;
  uint8_t secret_key[SECRETKEY_LEN]; /* digests of secret parameters (secretkey.h) */
  config *cfg;                       /* the current snapshot (a reference): new runs use it */
  quota *running_by_module;          /* running runs per module id (max_concurrent) */
  void *index;                       /* tsearch tree of active runs by run_id */
  struct srun *qhead, *qtail;
  size_t nqueued, nrunning;
  size_t nremote;         /* remote runs handed to their executor (pending or running there) */
  size_t nqueued_remote;  /* remote runs in the queue */
  quota *queued_by_owner; /* queued runs per owner (limits.max_queued_per_identity) */
  resmon *res;
  struct {
    char run_id[ID_RUN_LEN + 1];
    outlog *log;
  } done_logs[DONE_LOGS]; /* a ring, the oldest replaced first */
  size_t done_next;
  struct event *sync_ev; /* commits the run table's waiting updates, end of this pass */
  uint8_t *packed;       /* sched_get_packed's answer for an active run */
  size_t packed_cap;
  struct event *pump_ev;  /* starts the runs recovered at start-up, from the loop */
  struct event *drain_ev; /* shutdown: the end of the wait for running runs */
  unsigned pumping : 1, repump : 1, stopping : 1;
  void (*on_idle)(void *arg); /* after sched_shutdown: no run is active any more */
  void *idle_arg;
  char blocked_why[160]; /* the last resource check that held the queue */
  runstats *stats;       /* NULL without opts.metrics */
  executor *ex;          /* where runs run (exec.h): this machine */
  executor *slurm;       /* where remote runs run: made at the first (exec_slurm_new) */
  int slurm_busy;        /* after sched_shutdown: its commands are still under way */
};

static const char *status_name(int st) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&prismq__runner__v1__run_status__descriptor, st);
  return v ? v->name + sizeof "RUN_STATUS_" - 1 : "?";
}

/* ---- the Run message ------------------------------------------------------------ */

static void set_str(char **field, const char *v) {
  if (*field != protobuf_c_empty_string) free(*field);
  *field = v && *v ? xstrdup(v) : (char *)protobuf_c_empty_string;
}

static sched_run *run_copy(const sched_run *r) {
  size_t n = prismq__runner__v1__run__get_packed_size(r);
  uint8_t stackbuf[2048];
  uint8_t *buf = n <= sizeof stackbuf ? stackbuf : xmalloc(n);
  prismq__runner__v1__run__pack(r, buf);
  sched_run *c = prismq__runner__v1__run__unpack(NULL, n, buf);
  if (buf != stackbuf) free(buf);
  if (!c) abort(); /* only out of memory can fail on our own encoding */
  return c;
}

/* The map entries of a Run, built from parallel key/value strings. */
#define BUILD_MAP(Type, INIT, out_arr, out_n, keys, vals, count)       \
  do {                                                                 \
    (out_n) = (count);                                                 \
    (out_arr) = (count) ? xmalloc((count) * sizeof *(out_arr)) : NULL; \
    for (size_t i_ = 0; i_ < (count); i_++) {                          \
      Type *e_ = xmalloc(sizeof *e_);                                  \
      *e_ = (Type)INIT;                                                \
      e_->key = xstrdup(keys[i_]);                                     \
      e_->value = xstrdup(vals[i_]);                                   \
      (out_arr)[i_] = e_;                                              \
    }                                                                  \
  } while (0)

/* The copy of a run that callers get, with the live byte counts of a running one. */
/* Brings the live byte counts of a running run into its record. */
static void refresh_live(struct srun *r) {
  if (!r->log) return;
  r->pb->stdout_bytes = outlog_bytes(r->log, OUTLOG_STDOUT);
  r->pb->stderr_bytes = outlog_bytes(r->log, OUTLOG_STDERR);
}

static sched_run *snapshot(struct srun *r) {
  refresh_live(r);
  return run_copy(r->pb);
}

/* ---- the index of active runs --------------------------------------------------- */

static int run_cmp(const void *a, const void *b) {
  return strcmp(((const struct srun *)a)->pb->run_id, ((const struct srun *)b)->pb->run_id);
}

static struct srun *find_active(sched *s, const char *run_id) {
  sched_run key_pb = PRISMQ__RUNNER__V1__RUN__INIT;
  struct srun key = {.pb = &key_pb};
  key_pb.run_id = (char *)run_id;
  struct srun **hit = tfind(&key, &s->index, run_cmp);
  return hit ? *hit : NULL;
}

/* ---- watchers ------------------------------------------------------------------- */

static void watch_unlink(sched_watch *w) {
  if (!w->run) return;
  if (w->prev)
    w->prev->next = w->next;
  else
    w->run->watchers = w->next;
  if (w->next) w->next->prev = w->prev;
  w->run = NULL;
}

/* Fires the watchers of r that wait for one of `events`. The matching ones are taken off
 * the run's list first, in one pass (rescanning the list after each callback would cost
 * O(n*m) with thousands of watchers of one run); a callback may unwatch any watcher,
 * one taken included (sched_unwatch then only marks it), and watchers it adds that
 * match are fired by the next pass. */
static void notify(struct srun *r, int events) {
  for (;;) {
    sched_watch *batch = NULL, **tail = &batch;
    for (sched_watch *w = r->watchers, *next; w; w = next) {
      next = w->next;
      if (!(w->events & events)) continue;
      watch_unlink(w);
      w->firing = 1;
      w->next = NULL;
      *tail = w;
      tail = &w->next;
    }
    if (!batch) return;
    while (batch) {
      sched_watch *w = batch;
      batch = w->next;
      if (!w->dropped) w->fn(w->arg, r->pb);
      free(w);
    }
  }
}

static void pending_fire(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sched_watch *w = arg;
  w->fn(w->arg, w->snap);
  prismq__runner__v1__run__free_unpacked(w->snap, NULL);
  event_free(w->ev);
  free(w);
}

int sched_watch_run(sched *s, sched_watch **out, const char *run_id, int events, sched_watch_fn fn,
                    void *arg) {
  struct srun *r = find_active(s, run_id);
  sched_run *snap = NULL;
  if (r) {
    int started = r->log != NULL; /* a remote run has one once submitted, while QUEUED */
    if ((events & SCHED_EV_STARTED) && started) snap = snapshot(r);
  } else if (runtab_get(s->opts.rt, run_id, &snap) != 0) {
    return -ENOENT;
  }
  sched_watch *w = xcalloc(1, sizeof *w);
  w->s = s;
  w->events = events;
  w->fn = fn;
  w->arg = arg;
  if (snap) {
    /* Already happened: report it from the loop, never inside this call. */
    w->snap = snap;
    w->ev = event_new(s->base, -1, 0, pending_fire, w);
    if (!w->ev) abort();
    event_active(w->ev, EV_TIMEOUT, 0);
  } else {
    w->run = r;
    w->next = r->watchers;
    if (r->watchers) r->watchers->prev = w;
    r->watchers = w;
  }
  *out = w;
  return 0;
}

void sched_unwatch(sched_watch *w) {
  if (!w) return;
  if (w->firing) {
    w->dropped = 1; /* notify frees it */
    return;
  }
  if (w->snap) {
    event_free(w->ev);
    prismq__runner__v1__run__free_unpacked(w->snap, NULL);
  }
  watch_unlink(w);
  free(w);
}

/* ---- queue ---------------------------------------------------------------------- */

static void queue_remove(sched *s, struct srun *r) {
  if (r->qprev)
    r->qprev->qnext = r->qnext;
  else
    s->qhead = r->qnext;
  if (r->qnext)
    r->qnext->qprev = r->qprev;
  else
    s->qtail = r->qprev;
  r->qprev = r->qnext = NULL;
  s->nqueued--;
  s->nqueued_remote -= r->remote;
  quota_dec(s->queued_by_owner, r->pb->owner);
}

static void queue_push(sched *s, struct srun *r) {
  r->qprev = s->qtail;
  if (s->qtail)
    s->qtail->qnext = r;
  else
    s->qhead = r;
  s->qtail = r;
  s->nqueued++;
  s->nqueued_remote += r->remote;
  quota_inc(s->queued_by_owner, r->pb->owner);
}

/* ---- life of a run -------------------------------------------------------------- */

static void pump(sched *s);

/* Records a change of the run. The update waits in the run table's open transaction
 * (group commit, see runtab.h) until the next insert, a connection about to send
 * (prismqd's before_send), or at the latest the end of this pass of the loop. */
static void persist(sched *s, const sched_run *pb) {
  int rc = runtab_update(s->opts.rt, pb);
  if (rc < 0)
    LOG_ERROR("run table update failed run_id=%s module_id=%s status=%s: %s", pb->run_id,
              pb->module_id, status_name(pb->status), strerror(-rc));
  event_active(s->sync_ev, 0, 0);
}

static void sync_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sched *s = arg;
  runtab_sync(s->opts.rt);
}

/* Frees the secret values of r, leaving no copy in freed memory. */
static void drop_secrets(struct srun *r) {
  for (size_t i = 0; r->secret_env && r->secret_env[i]; i++)
    compat_explicit_bzero(r->secret_env[i], strlen(r->secret_env[i]));
  config_argv_free(r->secret_env);
  r->secret_env = NULL;
}

static void srun_free(struct srun *r) {
  drop_secrets(r);
  progress_scan_free(r->out_scan);
  progress_scan_free(r->fd_scan);
  config_free(r->cfg);
  config_argv_free(r->argv);
  free(r->cwd);
  if (r->timer) event_free(r->timer);
  free(r->errtail);
  prismq__runner__v1__run__free_unpacked(r->pb, NULL);
  free(r);
}

/* A run of m under the current snapshot, not yet in the index or the queue; takes
 * argv, cwd, secret_env (may be NULL) and pb. */
static struct srun *srun_new(sched *s, const config_module *m, char **argv, char *cwd,
                             char **secret_env, sched_run *pb, uint32_t timeout_ms) {
  struct srun *r = xcalloc(1, sizeof *r);
  r->s = s;
  r->cfg = config_ref(s->cfg);
  r->mod = m;
  r->argv = argv;
  r->cwd = cwd;
  r->secret_env = secret_env;
  r->pb = pb;
  r->timeout_ms = timeout_ms;
  r->remote = !strcmp(pb->executor, "slurm");
  return r;
}

/* Makes r an active run, queued behind the others. */
static void activate(sched *s, struct srun *r) {
  if (!tsearch(r, &s->index, run_cmp)) abort();
  queue_push(s, r);
}

/* After sched_shutdown: tells the caller once no run is running (queued runs stay). */
static void maybe_idle(sched *s) {
  if (s->stopping && s->on_idle && s->nrunning == 0 && !s->slurm_busy) {
    void (*fn)(void *) = s->on_idle;
    s->on_idle = NULL;
    fn(s->idle_arg);
  }
}

/* Says in error_message how much output a write error (a full disk) cost the run. */
static void note_dropped(struct srun *r) {
  sched_run *pb = r->pb;
  char msg[ERRTAIL_MAX + 256];
  snprintf(msg, sizeof msg, "%s%s%" PRIu64 " output bytes not stored (%s)", pb->error_message,
           pb->error_message[0] ? "; " : "", pb->output_dropped_bytes, strerror(r->log_errno));
  set_str(&pb->error_message, msg);
}

/* The executor of r. */
static executor *executor_of(const struct srun *r) { return r->remote ? r->s->slurm : r->s->ex; }

/* r takes a slot: a local run one of limits.max_concurrent, a remote one one of
 * slurm.max_jobs; either one of its module's max_concurrent. */
static void take_slot(struct srun *r) {
  r->holding = 1;
  if (r->remote)
    r->s->nremote++;
  else
    r->s->nrunning++;
  quota_inc(r->s->running_by_module, r->mod->id);
}

static void release_slot(struct srun *r) {
  if (!r->holding) return;
  r->holding = 0;
  if (r->remote)
    r->s->nremote--;
  else
    r->s->nrunning--;
  quota_dec(r->s->running_by_module, r->mod->id);
}

/* The run is over: record it, end its output, tell watchers, free a slot. */
static void finish(struct srun *r, int status, const char *error) {
  sched *s = r->s;
  sched_run *pb = r->pb;
  pb->status = status;
  pb->finished_at_ms = id_now_ms();
  runstats_finished(s->stats, pb->module_id, status_name(status),
                    pb->started_at_ms ? pb->finished_at_ms - pb->started_at_ms : -1);
  if (error) set_str(&pb->error_message, error);
  refresh_live(r);
  if (pb->output_dropped_bytes) note_dropped(r);
  /* Persist before the log ends: a follower that sees the end reads the final run. */
  persist(s, pb);
  outlog_free(r->log);
  r->log = NULL;
  if (r->job) {
    exec_job_free(r->job);
    r->job = NULL;
  }
  if (r->holding) exec_forget(executor_of(r), pb);
  tdelete(r, &s->index, run_cmp);
  if (r->qprev || r->qnext || s->qhead == r) queue_remove(s, r);
  release_slot(r);
  LOG_INFO("run finished run_id=%s module_id=%s status=%s exit_code=%d signal=%d", pb->run_id,
           pb->module_id, status_name(status), pb->exit_code, pb->term_signal);
  notify(r, SCHED_EV_STARTED | SCHED_EV_TERMINAL);
  srun_free(r);
  pump(s);
  maybe_idle(s);
}

/* An append to r's output failed: the run goes on; what is lost is counted on it and said
 * once in the log (a full disk would otherwise flood it). */
static void output_lost(struct srun *r, int rc, size_t len) {
  r->pb->output_dropped_bytes += len;
  if (!r->log_errno) {
    r->log_errno = -rc;
    LOG_ERROR("output not stored run_id=%s module_id=%s: %s", r->pb->run_id, r->pb->module_id,
              strerror(-rc));
  }
}

static void store_output(struct srun *r, int stream, const uint8_t *data, size_t len, int64_t now) {
  runstats_output(r->s->stats, stream, len);
  int rc = outlog_append(r->log, stream, data, len, now);
  if (rc < 0) output_lost(r, rc, len);
}

/* Progress updates found in one read, waiting to be stored with the output around them. */
struct updates {
  Prismq__Runner__V1__Progress pg[OUTLOG_UPDATES_MAX];
  const Prismq__Runner__V1__Progress *ptr[OUTLOG_UPDATES_MAX];
  char msg[OUTLOG_UPDATES_MAX][PROGRESS_MESSAGE_MAX + 1];
  size_t at[OUTLOG_UPDATES_MAX]; /* where each one's line ends, from the output's start */
  size_t n;
};

/* Keeps a copy of update `in`, whose line ends `at` bytes into the output to store. */
static void add_update(struct updates *u, const Prismq__Runner__V1__Progress *in, size_t at,
                       int64_t now) {
  Prismq__Runner__V1__Progress *pg = &u->pg[u->n];
  *pg = *in;
  pg->updated_at_ms = now;
  pg->message = u->msg[u->n];
  snprintf(pg->message, sizeof u->msg[0], "%s", in->message);
  u->ptr[u->n] = pg;
  u->at[u->n++] = at;
}

/* Stores data[0, len) of `stream` (len 0 and stream 0 for updates alone) with the updates
 * in u, each after the output of its line, in one write; the last becomes the run's
 * latest, which every copy of the run shows and the next status change persists (never
 * a run table write per update). */
static void store_updates(struct srun *r, int stream, const uint8_t *data, size_t len,
                          struct updates *u, int64_t now) {
  sched_run *pb = r->pb;
  runstats_output(r->s->stats, stream, len);
  int rc = outlog_append_updates(r->log, stream, data, len, u->at, u->ptr, u->n, now);
  if (rc < 0) output_lost(r, rc, len);
  if (rc != 0 && !r->progress_warned) {
    r->progress_warned = 1;
    LOG_WARN("progress not stored in the output run_id=%s module_id=%s: %s", pb->run_id,
             pb->module_id, rc < 0 ? strerror(-rc) : "past its budget");
  }
  if (!pb->progress) {
    pb->progress = xmalloc(sizeof *pb->progress);
    *pb->progress = (Prismq__Runner__V1__Progress)PRISMQ__RUNNER__V1__PROGRESS__INIT;
  }
  const Prismq__Runner__V1__Progress *last = u->ptr[u->n - 1];
  pb->progress->done = last->done;
  pb->progress->total = last->total;
  pb->progress->updated_at_ms = last->updated_at_ms;
  set_str(&pb->progress->message, last->message);
  u->n = 0;
}

/* Passes a read of `stream` through scanner sc: the output, unless the stream is the
 * progress descriptor, is stored with each update right after the bytes of its line. */
static void scan_chunk(struct srun *r, progress_scan *sc, int stream, const uint8_t *data,
                       size_t len, int64_t now) {
  Prismq__Runner__V1__Progress pg = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  struct updates u;
  size_t pos = 0, from = 0;
  int out = stream != EXEC_PROGRESS;
  u.n = 0;
  while (progress_scan_next(sc, data, len, &pos, &pg)) {
    add_update(&u, &pg, out ? pos - from : 0, now);
    if (u.n < OUTLOG_UPDATES_MAX) continue;
    store_updates(r, out ? stream : 0, data + from, out ? pos - from : 0, &u, now);
    from = pos;
  }
  if (u.n)
    store_updates(r, out ? stream : 0, data + from, out ? len - from : 0, &u, now);
  else if (out)
    store_output(r, stream, data + from, len - from, now);
}

/* The streams have ended: a last line without a newline may still be an update, and
 * lines meant as progress that gave none are said once. */
static void end_progress(struct srun *r) {
  progress_scan *sc[2] = {r->out_scan, r->fd_scan};
  Prismq__Runner__V1__Progress pg = PRISMQ__RUNNER__V1__PROGRESS__INIT;
  for (int i = 0; i < 2; i++) {
    if (!sc[i]) continue;
    if (progress_scan_end(sc[i], &pg)) {
      int64_t now = id_now_ms();
      struct updates u = {.n = 0};
      add_update(&u, &pg, 0, now);
      store_updates(r, 0, NULL, 0, &u, now);
    }
    if (progress_scan_rejected(sc[i]))
      LOG_INFO("progress lines ignored run_id=%s module_id=%s source=%s count=%" PRIu64,
               r->pb->run_id, r->pb->module_id, i ? "fd" : "pattern",
               progress_scan_rejected(sc[i]));
  }
}

static void on_output(void *arg, int stream, const uint8_t *data, size_t len) {
  struct srun *r = arg;
  int64_t now = id_now_ms();
  if (stream == EXEC_PROGRESS) {
    scan_chunk(r, r->fd_scan, stream, data, len, now);
    return;
  }
  /* Modules without a pattern pay this test and nothing more. */
  if (r->out_scan && stream == EXEC_STDOUT)
    scan_chunk(r, r->out_scan, stream, data, len, now);
  else
    store_output(r, stream, data, len, now);
  if (stream != OUTLOG_STDERR) return;
  for (size_t i = len > ERRTAIL_MAX ? len - ERRTAIL_MAX : 0; i < len; i++) {
    r->errtail[r->errtail_pos] = (char)data[i];
    r->errtail_pos = (r->errtail_pos + 1) % ERRTAIL_MAX;
    if (r->errtail_len < ERRTAIL_MAX) r->errtail_len++;
  }
}

/* The last lines of stderr, at most ERRTAIL_MAX bytes, starting at a line when the
 * tail was cut, made valid UTF-8 for the string field. */
static void stderr_tail(const struct srun *r, char *out, size_t cap) {
  char lin[ERRTAIL_MAX];
  size_t n = r->errtail_len;
  size_t start = (r->errtail_pos + ERRTAIL_MAX - n) % ERRTAIL_MAX;
  for (size_t i = 0; i < n; i++) lin[i] = r->errtail[(start + i) % ERRTAIL_MAX];
  size_t from = 0;
  if (n == ERRTAIL_MAX) {
    char *nl = memchr(lin, '\n', n);
    if (nl && (size_t)(nl - lin) + 1 < n) from = (size_t)(nl - lin) + 1;
  }
  while (n > from && (lin[n - 1] == '\n' || lin[n - 1] == '\r')) n--;
  utf8_sanitize(out, cap, lin + from, n - from);
}

static void on_exit_cb(void *arg, const exec_end *e) {
  struct srun *r = arg;
  sched_run *pb = r->pb;
  char msg[ERRTAIL_MAX + 128];
  int exit_status = e->exit_status, term_signal = e->term_signal;
  end_progress(r);
  pb->exit_code = exit_status;
  pb->term_signal = term_signal;
  pb->user_cpu_ms = e->user_cpu_ms;
  pb->sys_cpu_ms = e->sys_cpu_ms;
  pb->max_rss_kb = e->max_rss_kb;
  if (r->cancelled) {
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED, r->cancel_reason);
  } else if (r->timed_out || e->timed_out) {
    if (r->timed_out || !e->why)
      snprintf(msg, sizeof msg, "timed out after %u ms", r->timeout_ms);
    else
      snprintf(msg, sizeof msg, "timed out: %s", e->why);
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT, msg);
  } else if (e->why) {
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, e->why);
  } else if (term_signal) {
    snprintf(msg, sizeof msg, "killed by signal %d (%s)", term_signal,
             compat_strsignal(term_signal));
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, msg);
  } else if (exit_status != 0) {
    stderr_tail(r, msg, sizeof msg);
    if (!msg[0]) snprintf(msg, sizeof msg, "exited with code %d", exit_status);
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, msg);
  } else {
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED, NULL);
  }
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct srun *r = arg;
  if (r->cancelled) return; /* a cancel got there first */
  LOG_INFO("run timed out run_id=%s module_id=%s timeout_ms=%u", r->pb->run_id, r->pb->module_id,
           r->timeout_ms);
  r->timed_out = 1;
  exec_terminate(r->job, r->s->opts.default_grace_ms);
}

/* The child's clean environment: some variables of ours (PATH, which has a safe default,
 * HOME and LANG; on Windows PATH and what its programs expect to find, SystemRoot first,
 * without which some cannot even start, names compared without case as Windows does),
 * then the module's own variables, which win, PRISMQ_PROGRESS_FD=3 if it has a
 * progress descriptor, then its secret parameters
 * (secret, NULL-terminated, borrowed: the caller frees the result's first n strings
 * only, *nown). */
#ifdef _WIN32
static const char *const inherit[] = {"PATH", "SystemRoot", "SystemDrive", "windir",
                                      "TEMP", "TMP",        "USERPROFILE", "PATHEXT"};
#define PATH_DEFAULT NULL /* proc_resolve searches the system's directories */
#define env_ncmp     strncasecmp
#else
static const char *const inherit[] = {"PATH", "HOME", "LANG"};
#define PATH_DEFAULT "/usr/local/bin:/usr/bin:/bin"
#define env_ncmp     strncmp
#endif
#define NINHERIT (sizeof inherit / sizeof inherit[0])

static char **build_env(const config_module *m, char *const *secret, size_t *nown) {
  size_t nsecret = 0;
  while (secret && secret[nsecret]) nsecret++;
  char **env = xmalloc((NINHERIT + 1 + m->nenv + nsecret + 1) * sizeof *env);
  size_t n = 0;
  for (size_t i = 0; i < NINHERIT; i++) {
    char buf[4096];
    const char *v = compat_getenv(inherit[i], buf, sizeof buf);
    if (!v && i == 0) v = PATH_DEFAULT;
    if (!v) continue;
    int overridden = 0;
    size_t klen = strlen(inherit[i]);
    for (size_t j = 0; j < m->nenv; j++)
      overridden |= env_ncmp(m->env[j], inherit[i], klen) == 0 && m->env[j][klen] == '=';
    if (overridden) continue;
    size_t len = klen + 1 + strlen(v) + 1;
    env[n] = xmalloc(len);
    snprintf(env[n++], len, "%s=%s", inherit[i], v);
  }
  for (size_t j = 0; j < m->nenv; j++) env[n++] = xstrdup(m->env[j]);
  _Static_assert(EXEC_PROGRESS == 3, "the progress pipe is the child's descriptor 3");
  if (m->progress_fd) env[n++] = xstrdup("PRISMQ_PROGRESS_FD=3");
  *nown = n;
  for (size_t j = 0; j < nsecret; j++)
    if (!isdigit((unsigned char)secret[j][0])) env[n++] = secret[j]; /* not an fd's */
  env[n] = NULL;
  return env;
}

_Static_assert(CONFIG_SECRET_FDS_MAX <= PROC_MAX_INPUTS &&
                   CONFIG_SECRET_FD_MAX <= PROC_MAX_INPUT_FD &&
                   CONFIG_SECRET_FD_LEN_MAX <= PROC_MAX_INPUT_LEN,
               "the configuration's secret descriptors are ones proc can give");

/* The proc inputs of the secrets passed on a descriptor ("FD=value" in secret, see
 * config_module_render), pointing into secret; returns how many. */
static size_t secret_inputs(proc_input *in, char *const *secret) {
  size_t n = 0;
  for (size_t j = 0; secret && secret[j] && n < PROC_MAX_INPUTS; j++) {
    if (!isdigit((unsigned char)secret[j][0])) continue;
    char *eq = strchr(secret[j], '=');
    in[n].fd = atoi(secret[j]);
    in[n].data = eq + 1;
    in[n++].len = strlen(eq + 1);
  }
  return n;
}

/* Frees build_env's result: its own strings, not the secrets it borrowed. */
static void free_env(char **env, size_t nown) {
  for (size_t i = 0; i < nown; i++) free(env[i]);
  free(env);
}

/* The argv as one line a person can read, for dry-run mode. */
static size_t argv_line(char *buf, size_t cap, char *const *argv) {
  size_t o = 0;
  for (size_t i = 0; argv && argv[i] && o + 1 < cap; i++) {
    int quote = argv[i][0] == '\0' || strpbrk(argv[i], " \t\n'\"\\$`*?[]{}()<>|&;#~") != NULL;
    o += (size_t)snprintf(buf + o, cap - o, quote ? "%s'%s'" : "%s%s", i ? " " : "", argv[i]);
    if (o >= cap) o = cap - 1;
  }
  if (o + 1 < cap) buf[o++] = '\n';
  buf[o] = '\0';
  return o;
}

/* Before a start that nothing surviving a crash would show (exec.h, commit_start). */
static void commit_start(void *arg) {
  struct srun *r = arg;
  persist(r->s, r->pb);
  runtab_sync(r->s->opts.rt);
}

/* Counts r's timeout from now: `ms` (the run's timeout, or what is left of it). */
static void arm_timeout(struct srun *r, uint32_t ms) {
  r->timer = evtimer_new(r->s->base, timeout_cb, r);
  if (!r->timer) abort();
  /* Timers count from the loop's cached time, taken before this iteration's work
   * (the spawn included): refresh it so a run never times out early. */
  event_base_update_cache_time(r->s->base);
  struct timeval tv = compat_timeout_ms(ms);
  evtimer_add(r->timer, &tv);
}

/* The run's command runs from now on (a local one once spawned, a remote one once its
 * executor says so): RUNNING, its timeout counting. */
static void mark_running(struct srun *r) {
  sched_run *pb = r->pb;
  pb->status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING;
  pb->started_at_ms = id_now_ms();
  runstats_started(r->s->stats, pb->module_id);
}

/* A remote run's job: submitted, pending for a new reason, or running. */
static void on_remote(void *arg, const exec_remote *st) {
  struct srun *r = arg;
  sched_run *pb = r->pb;
  int fresh = strcmp(pb->job_id, st->job_id) != 0;
  set_str(&pb->job_id, st->job_id);
  set_str(&pb->pending_reason, st->running ? "" : st->reason);
  set_str(&pb->node, st->node);
  if (st->running && pb->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED) {
    mark_running(r);
    if (r->timeout_ms) arm_timeout(r, r->timeout_ms);
    LOG_INFO("run started run_id=%s module_id=%s job_id=%s node=%s", pb->run_id, pb->module_id,
             pb->job_id, pb->node);
    notify(r, SCHED_EV_STARTED);
  }
  persist(r->s, pb);
  /* A restart looks for the job by its id: have it on disk now. */
  if (fresh) runtab_sync(r->s->opts.rt);
}

/* A remote run's job could not be carried out. */
static void on_fail(void *arg, const char *why) {
  struct srun *r = arg;
  end_progress(r);
  r->pb->exit_code = -1;
  if (r->cancelled)
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED, r->cancel_reason);
  else
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, why);
}

/* Starts r's command with its executor. Returns 0, or a negative errno with err saying
 * what failed. */
static int spawn(struct srun *r, char *err, size_t errlen) {
  exec_spec es = {
      .run = r->pb,
      .mod = r->mod,
      .argv = (const char *const *)r->argv,
      .cwd = r->cwd,
      .progress_pipe = r->mod->progress_fd,
      .resume = r->resume,
      .resume_bytes = {outlog_bytes(r->log, OUTLOG_STDOUT), outlog_bytes(r->log, OUTLOG_STDERR)},
      .timeout_ms = r->timeout_ms,
      .commit_start = commit_start,
      .on_output = on_output,
      .on_exit = on_exit_cb,
      .on_fail = on_fail,
      .on_remote = on_remote,
      .arg = r};
  size_t nown;
  char **envp = build_env(r->mod, r->secret_env, &nown);
  es.envp = (const char *const *)envp;
  proc_input inputs[PROC_MAX_INPUTS];
  es.inputs = inputs;
  es.ninputs = secret_inputs(inputs, r->secret_env);
  r->errtail = xmalloc(ERRTAIL_MAX);
  int rc = exec_start(executor_of(r), &r->job, &es, err, errlen);
  free_env(envp, nown);
  drop_secrets(r);
  return rc;
}

/* Opens r's output log: a new one, or for a remote run taken up after a restart the
 * one it has, to go on with. Returns 0 or finishes r FAILED and returns -1. */
static int open_log(struct srun *r) {
  sched *s = r->s;
  char path[4096], err[4096 + 128];
  outlog_opts lo = OUTLOG_OPTS_INIT;
  lo.max_bytes = r->cfg->limits.output_max_bytes;
  int rc = outlog_path(path, sizeof path, s->data_dir, r->pb->run_id);
  if (rc == 0)
    rc = r->resume ? outlog_resume(&r->log, s->base, path, &lo)
                   : outlog_new(&r->log, s->base, path, &lo);
  if (rc == 0) return 0;
  snprintf(err, sizeof err, "cannot create the output file %s: %s", path, strerror(-rc));
  LOG_ERROR("%s run_id=%s module_id=%s", err, r->pb->run_id, r->pb->module_id);
  finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, err);
  return -1;
}

/* The time left of a resumed running run's timeout (at least 1 ms). */
static uint32_t timeout_left(const struct srun *r) {
  int64_t left = (int64_t)r->timeout_ms - (id_now_ms() - r->pb->started_at_ms);
  return left > 1 ? (uint32_t)left : 1;
}

static void start_run(struct srun *r) {
  sched *s = r->s;
  sched_run *pb = r->pb;
  char err[4096 + 128];
  queue_remove(s, r);
  take_slot(r);
  if (!r->remote) mark_running(r);
  if (open_log(r) < 0) return;

  if (s->opts.mode == SCHED_DRY_RUN) {
    size_t n = argv_line(err, sizeof err, r->argv);
    outlog_append(r->log, OUTLOG_STDOUT, err, n, id_now_ms());
    LOG_INFO("run started run_id=%s module_id=%s mode=dry-run", pb->run_id, pb->module_id);
    notify(r, SCHED_EV_STARTED);
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED, NULL);
    return;
  }

  if (spawn(r, err, sizeof err) < 0) {
    LOG_WARN("%s run_id=%s module_id=%s", err, pb->run_id, pb->module_id);
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, err);
    return;
  }
  /* The scanners are ready before the loop delivers any output. */
  if (r->mod->progress) r->out_scan = progress_scan_new(r->mod->progress);
  if (r->mod->progress_fd) r->fd_scan = progress_scan_new(NULL);
  config_argv_free(r->argv);
  r->argv = NULL;
  persist(s, pb);
  if (r->remote) {
    /* Running once its executor says so (on_remote); one taken up again runs already. */
    if (pb->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING && r->timeout_ms)
      arm_timeout(r, timeout_left(r));
    LOG_INFO("run handed to Slurm run_id=%s module_id=%s resumed=%d", pb->run_id, pb->module_id,
             (int)r->resume);
    notify(r, SCHED_EV_STARTED); /* its output log exists: followers may open it */
    return;
  }
  if (r->timeout_ms) arm_timeout(r, r->timeout_ms);
  LOG_INFO("run started run_id=%s module_id=%s pid=%d", pb->run_id, pb->module_id, pb->pid);
  notify(r, SCHED_EV_STARTED);
}

/* Makes the Slurm executor, at the first remote run, from the slurm: section then
 * current (read once: see docs/slurm.md). Returns 0, or finishes r FAILED and
 * returns -1. */
static int slurm_open(sched *s, struct srun *r) {
  const config_slurm *c = &s->cfg->slurm;
  char err[512];
  int rc = -EINVAL;
  snprintf(err, sizeof err, "the Slurm executor needs slurm.spool_dir in the configuration");
  if (c->spool_dir) {
    exec_slurm_opts o = EXEC_SLURM_OPTS_INIT;
    o.spool_dir = c->spool_dir;
    o.bin_dir = c->bin_dir;
    o.poll_interval_ms = c->poll_interval_ms;
    o.grace_ms = s->opts.default_grace_ms;
    rc = exec_slurm_new(&s->slurm, s->base, &o, err, sizeof err);
  }
  if (rc == 0) return 0;
  LOG_ERROR("cannot set up the Slurm executor: %s", err);
  finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED, err);
  return -1;
}

/* Whether r may start now as far as slots go (resources aside). */
static int slot_free(const sched *s, const struct srun *r) {
  /* A job taken up after a restart exists whatever the limits are now. */
  if (r->resume && r->pb->job_id[0]) return 1;
  uint32_t mmax = r->mod->max_concurrent;
  if (mmax && quota_get(s->running_by_module, r->mod->id) >= mmax) return 0;
  if (r->remote) return s->nremote < s->cfg->slurm.max_jobs;
  return s->nrunning < s->cfg->limits.max_concurrent;
}

/* Starts queued runs, oldest first, while slots and resources allow. A run whose
 * module is at its own limit is passed over, so it does not hold up other modules;
 * remote runs take no slot of this machine and pass no check of its resources.
 * Starting a run can end it at once (dry-run, spawn failure), which asks for another
 * pump: that one is folded into this loop rather than run re-entrantly. */
static void pump(sched *s) {
  if (s->pumping) {
    s->repump = 1;
    return;
  }
  if (s->stopping) return;
  s->pumping = 1;
  do {
    s->repump = 0;
    struct srun *r = s->qhead;
    int local_ok = 1; /* no check of this machine's resources has failed in this scan */
    while (r && ((local_ok && s->nrunning < s->cfg->limits.max_concurrent) ||
                 (s->nqueued_remote && s->nremote < s->cfg->slurm.max_jobs))) {
      if (!slot_free(s, r) || (!r->remote && !local_ok)) {
        r = r->qnext;
        continue;
      }
      char why[160];
      if (!r->remote && s->res && !resmon_check(s->res, why, sizeof why)) {
        if (strcmp(why, s->blocked_why) != 0) {
          LOG_INFO("queued runs wait: %s queued=%zu", why, s->nqueued);
          snprintf(s->blocked_why, sizeof s->blocked_why, "%s", why);
        }
        local_ok = 0;
        r = r->qnext;
        continue;
      }
      if (!r->remote) s->blocked_why[0] = '\0';
      if (r->remote && !s->slurm && slurm_open(s, r) < 0) {
        r = s->qhead;
        continue;
      }
      start_run(r);
      r = s->qhead; /* the queue changed under us: scan again from the oldest */
    }
  } while (s->repump);
  s->pumping = 0;
}

static void on_sample(void *arg) { pump(arg); }

/* ---- requests ------------------------------------------------------------------- */

int sched_mode_parse(enum sched_mode *out, const char *s) {
  if (!s || !*s || strcmp(s, "async") == 0)
    *out = SCHED_ASYNC;
  else if (strcmp(s, "threaded") == 0)
    *out = SCHED_THREADED;
  else if (strcmp(s, "dry-run") == 0)
    *out = SCHED_DRY_RUN;
  else
    return -EINVAL;
  return 0;
}

/* Two runs are the same request when module and effective parameters match. */
static int same_request(const sched_run *a, const char *module_id, const char *owner,
                        char *const *params, const ProtobufCBinaryData *digest) {
  if (strcmp(a->module_id, module_id) != 0 || strcmp(a->owner, owner) != 0) return 0;
  if (a->secret_digest.len != digest->len ||
      (digest->len && memcmp(a->secret_digest.data, digest->data, digest->len)))
    return 0;
  size_t n = 0;
  for (; params[n]; n++) {
    if (n >= a->n_parameters) return 0;
    const char *eq = strchr(params[n], '=');
    size_t klen = (size_t)(eq - params[n]);
    const Prismq__Runner__V1__Run__ParametersEntry *e = a->parameters[n];
    if (strlen(e->key) != klen || memcmp(e->key, params[n], klen) != 0 ||
        strcmp(e->value, eq + 1) != 0)
      return 0;
  }
  return n == a->n_parameters;
}

/* Whether a new run of m for `owner` may be taken: not while shutting down, and, for a
 * run that would wait, not past the queue's limits (one that can start now, a global
 * and a module slot free and resources fine, is never refused for them). Returns 0, or
 * -EAGAIN with err filled. */
static int admit(const sched *s, const config_module *m, const char *owner, char *err,
                 size_t errlen) {
  const config_limits *lim = &s->cfg->limits;
  if (s->stopping) {
    snprintf(err, errlen, "server shutting down");
    return -ESHUTDOWN;
  }
  char why[160];
  int module_ok = !m->max_concurrent || quota_get(s->running_by_module, m->id) < m->max_concurrent;
  int can_start = m->executor == CONFIG_EXEC_SLURM
                      ? module_ok && s->nremote < s->cfg->slurm.max_jobs
                      : s->nrunning < lim->max_concurrent && module_ok &&
                            (!s->res || resmon_check(s->res, why, sizeof why));
  if (can_start) return 0;
  uint32_t mine = quota_get(s->queued_by_owner, owner);
  if (lim->max_queued_per_identity && mine >= lim->max_queued_per_identity) {
    snprintf(err, errlen,
             "too many queued runs for %.256s (%u; limits.max_queued_per_identity is %u)",
             owner[0] ? owner : "anonymous callers", mine, lim->max_queued_per_identity);
    return -EAGAIN;
  }
  if (s->nqueued >= lim->max_queued) {
    snprintf(err, errlen, "too many queued runs (%zu; limits.max_queued is %u)", s->nqueued,
             lim->max_queued);
    return -EAGAIN;
  }
  return 0;
}

/* A request rendered for its module: what the process gets, what the record shows. */
struct rendered {
  char **argv, *cwd;
  char **params;     /* "name=value", a secret's value shown as CONFIG_SECRET_SHOWN */
  char **secret_env; /* "ENV_VAR=value" of the secrets given */
  uint8_t digest[SECRETKEY_DIGEST_LEN];
  ProtobufCBinaryData secret_digest; /* of secret_env, empty without secrets */
};

/* Renders req's parameters for m into *rd, over those of preset ps if not NULL
 * (config_module_render: -EINVAL with every bad parameter in `bad`). Free with
 * rendered_clear. */
static int render_request(sched *s, const config_module *m,
                          const Prismq__Runner__V1__StartRunRequest *req, const preset_pb *ps,
                          struct rendered *rd, param_report *bad, char *err, size_t errlen) {
  size_t np = 0, nps = ps ? ps->n_parameters : 0;
  const char **names = xmalloc((nps + req->n_parameters + 1) * sizeof *names);
  const char **values = xmalloc((nps + req->n_parameters + 1) * sizeof *values);
  /* The preset's values first: the request's come later, and the last pair wins. */
  for (size_t i = 0; i < nps; i++, np++) {
    names[np] = ps->parameters[i]->key;
    values[np] = ps->parameters[i]->value;
  }
  for (size_t i = 0; i < req->n_parameters; i++, np++) {
    names[np] = req->parameters[i]->key;
    values[np] = req->parameters[i]->value;
  }
  memset(rd, 0, sizeof *rd);
  int rc = config_module_render(&rd->argv, &rd->cwd, &rd->params, &rd->secret_env, m, names, values,
                                NULL, np, bad, err, errlen);
  free(names);
  free(values);
  if (rc == 0 && rd->secret_env[0]) {
    secretkey_digest(rd->digest, s->secret_key, rd->secret_env);
    rd->secret_digest = (ProtobufCBinaryData){sizeof rd->digest, rd->digest};
  }
  return rc;
}

/* Frees what rd still owns (the secrets cleared first). */
static void rendered_clear(struct rendered *rd) {
  config_argv_free(rd->argv);
  free(rd->cwd);
  config_argv_free(rd->params);
  for (size_t i = 0; rd->secret_env && rd->secret_env[i]; i++)
    compat_explicit_bzero(rd->secret_env[i], strlen(rd->secret_env[i]));
  config_argv_free(rd->secret_env);
  memset(rd, 0, sizeof *rd);
}

/* Whether req->request_id names an earlier run: returns 1 with *out set (a copy, live
 * if active) if it was the same request, 0 if there is none, -EEXIST with err if it was
 * another one. */
static int earlier_request(sched *s, const Prismq__Runner__V1__StartRunRequest *req,
                           const config_module *m, const char *owner, const struct rendered *rd,
                           sched_run **out, char *err, size_t errlen) {
  sched_run *prev = NULL;
  if (!req->request_id[0] || runtab_get_by_request_id(s->opts.rt, req->request_id, &prev) != 0)
    return 0;
  if (!same_request(prev, m->id, owner, rd->params, &rd->secret_digest)) {
    snprintf(err, errlen,
             "request_id \"%.128s\" was used for run %s with another module, parameters or owner",
             req->request_id, prev->run_id);
    prismq__runner__v1__run__free_unpacked(prev, NULL);
    return -EEXIST;
  }
  struct srun *live = find_active(s, prev->run_id);
  if (live) {
    prismq__runner__v1__run__free_unpacked(prev, NULL);
    prev = snapshot(live);
  }
  *out = prev;
  return 1;
}

/* The record of a new QUEUED run of m for `owner`: a new run id, the effective
 * parameters ("name=value", consumed: freed here) and secret digest, the request's
 * labels (the last of a duplicate key wins, as in a protobuf map). */
static sched_run *new_record(const config_module *m, const Prismq__Runner__V1__StartRunRequest *req,
                             const char *owner, char **params, const ProtobufCBinaryData *digest,
                             uint32_t timeout_ms) {
  sched_run *pb = xmalloc(sizeof *pb);
  *pb = (sched_run)PRISMQ__RUNNER__V1__RUN__INIT;
  char id[ID_RUN_LEN + 1];
  pb->created_at_ms = id_now_ms();
  id_run_new(id, pb->created_at_ms);
  pb->run_id = xstrdup(id);
  pb->module_id = xstrdup(m->id);
  pb->status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED;
  pb->timeout_ms = timeout_ms;
  if (m->executor == CONFIG_EXEC_SLURM) set_str(&pb->executor, "slurm");
  set_str(&pb->request_id, req->request_id);
  set_str(&pb->owner, owner);
  set_str(&pb->preset, req->preset);
  if (digest->len) {
    pb->secret_digest.data = xmalloc(digest->len);
    memcpy(pb->secret_digest.data, digest->data, digest->len);
    pb->secret_digest.len = digest->len;
  }
  size_t npar = 0;
  while (params[npar]) npar++;
  char **pk = xmalloc(npar * sizeof *pk), **pv = xmalloc(npar * sizeof *pv);
  for (size_t i = 0; i < npar; i++) {
    pk[i] = params[i];
    pv[i] = strchr(params[i], '=');
    *pv[i]++ = '\0';
  }
  BUILD_MAP(Prismq__Runner__V1__Run__ParametersEntry,
            PRISMQ__RUNNER__V1__RUN__PARAMETERS_ENTRY__INIT, pb->parameters, pb->n_parameters, pk,
            pv, npar);
  free(pk);
  free(pv);
  config_argv_free(params);
  size_t nl = 0;
  const char **lk = xmalloc(req->n_labels * sizeof *lk), **lv = xmalloc(req->n_labels * sizeof *lv);
  for (size_t i = 0; i < req->n_labels; i++) {
    size_t j = 0;
    while (j < nl && strcmp(lk[j], req->labels[i]->key) != 0) j++;
    lk[j] = req->labels[i]->key;
    lv[j] = req->labels[i]->value;
    if (j == nl) nl++;
  }
  BUILD_MAP(Prismq__Runner__V1__Run__LabelsEntry, PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT,
            pb->labels, pb->n_labels, lk, lv, nl);
  free(lk);
  free(lv);
  return pb;
}

int sched_start(sched *s, const Prismq__Runner__V1__StartRunRequest *req, const char *owner,
                sched_run **out, param_report *bad, char *err, size_t errlen) {
  const config_module *m = config_find_module(s->cfg, req->module_id);
  if (!m) {
    snprintf(err, errlen, "unknown module \"%.64s\"", req->module_id);
    return -ENOENT;
  }
  if (!m->enabled) {
    snprintf(err, errlen, "module \"%.64s\" is disabled", req->module_id);
    return -ENOTSUP;
  }
  preset_pb *ps = NULL;
  int rc = req->preset[0] ? preset_get(&ps, s->opts.rt, m, req->preset) : 0;
  if (rc < 0) {
    if (rc == -ENOENT)
      snprintf(err, errlen, "module \"%s\" has no preset \"%.64s\"", m->id, req->preset);
    else
      snprintf(err, errlen, "cannot read the presets: %s", strerror(-rc));
    return rc;
  }
  struct rendered rd;
  rc = render_request(s, m, req, ps, &rd, bad, err, errlen);
  if (ps) prismq__runner__v1__preset__free_unpacked(ps, NULL);
  if (rc < 0) return rc;
  if ((rc = earlier_request(s, req, m, owner, &rd, out, err, errlen)) != 0 ||
      (rc = admit(s, m, owner, err, errlen)) < 0) {
    rendered_clear(&rd);
    return rc;
  }
  /* The request may shorten the module's timeout, never lengthen it. */
  uint32_t timeout_ms = m->timeout_ms;
  if (req->timeout_ms && (!m->timeout_ms || req->timeout_ms < m->timeout_ms))
    timeout_ms = req->timeout_ms;
  sched_run *pb = new_record(m, req, owner, rd.params, &rd.secret_digest, timeout_ms);
  struct srun *r = srun_new(s, m, rd.argv, rd.cwd, rd.secret_env, pb, timeout_ms);
  rd = (struct rendered){0};
  rc = runtab_insert(s->opts.rt, pb);
  if (rc < 0) {
    snprintf(err, errlen, "cannot record the run: %s", strerror(-rc));
    LOG_ERROR("run not recorded run_id=%s module_id=%s: %s", pb->run_id, pb->module_id,
              strerror(-rc));
    srun_free(r);
    return -EIO;
  }
  activate(s, r);
  LOG_INFO("run queued run_id=%s module_id=%s owner=%s", pb->run_id, pb->module_id,
           pb->owner[0] ? pb->owner : "anonymous");
  char run_id[ID_RUN_LEN + 1];
  memcpy(run_id, pb->run_id, sizeof run_id);
  pump(s);
  /* The answer shows the run as pump left it: running, or even finished already. */
  return sched_get(s, run_id, out) == 0 ? 0 : -EIO;
}

int sched_get(sched *s, const char *run_id, sched_run **out) {
  struct srun *r = find_active(s, run_id);
  if (r) {
    *out = snapshot(r);
    return 0;
  }
  return runtab_get(s->opts.rt, run_id, out) == 0 ? 0 : -ENOENT;
}

struct collect {
  struct srun ***arr;
  size_t *n;
};

/* compat_twalk_r visitor: gathers the running runs (each node once, at its leaf or
 * post-order visit), since finishing runs while walking would change the tree. */
static void collect_run(const void *node, VISIT v, void *arg) {
  if (v != postorder && v != leaf) return;
  struct collect *c = arg;
  struct srun *r = *(struct srun *const *)node;
  if (!r->job) return;
  struct srun **a = xrealloc(*c->arr, (*c->n + 1) * sizeof *a);
  a[(*c->n)++] = r;
  *c->arr = a;
}

int sched_get_packed(sched *s, const char *run_id, const uint8_t **out, size_t *len) {
  struct srun *r = find_active(s, run_id);
  if (!r) return runtab_get_packed(s->opts.rt, run_id, out, len) == 0 ? 0 : -ENOENT;
  refresh_live(r);
  size_t n = prismq__runner__v1__run__get_packed_size(r->pb);
  if (n > s->packed_cap) {
    s->packed = xrealloc(s->packed, n);
    s->packed_cap = n;
  }
  prismq__runner__v1__run__pack(r->pb, s->packed);
  *out = s->packed;
  *len = n;
  return 0;
}

int sched_cancel(sched *s, const char *run_id, uint32_t grace_ms) {
  struct srun *r = find_active(s, run_id);
  if (!r) {
    sched_run *done = NULL;
    if (runtab_get(s->opts.rt, run_id, &done) != 0) return -ENOENT;
    prismq__runner__v1__run__free_unpacked(done, NULL);
    return -EALREADY;
  }
  LOG_INFO("run cancel requested run_id=%s module_id=%s status=%s", run_id, r->pb->module_id,
           status_name(r->pb->status));
  if (!r->job) {
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED, "cancelled while queued");
    return 0;
  }
  if (r->timed_out) return 0; /* already on its way out: TIMED_OUT it stays */
  r->cancelled = 1;
  r->cancel_reason = "cancelled";
  /* A client cannot hold a slot for long with a huge grace. */
  if (!grace_ms) grace_ms = s->opts.default_grace_ms;
  exec_terminate(r->job, grace_ms < SCHED_MAX_GRACE_MS ? grace_ms : SCHED_MAX_GRACE_MS);
  return 0;
}

/* Cancels every running run as a shutdown does. */
static void cancel_running(sched *s) {
  size_t n = 0;
  struct srun **running = NULL;
  compat_twalk_r(s->index, collect_run, &(struct collect){&running, &n});
  for (size_t i = 0; i < n; i++) {
    /* Cluster jobs outlive the server: the next one takes them up again. */
    if (running[i]->timed_out || running[i]->cancelled || running[i]->remote) continue;
    running[i]->cancelled = 1;
    running[i]->cancel_reason = SCHED_SHUTDOWN_MESSAGE;
    exec_terminate(running[i]->job, s->opts.default_grace_ms);
  }
  free(running);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  sched *s = arg;
  if (s->nrunning)
    LOG_INFO("shutdown grace over, cancelling the runs still running count=%zu", s->nrunning);
  cancel_running(s);
}

/* The Slurm executor's last commands have ended (exec_quiesce). */
static void slurm_quiet(void *arg) {
  sched *s = arg;
  s->slurm_busy = 0;
  maybe_idle(s);
}

void sched_shutdown(sched *s, int cancel_runs, uint32_t grace_ms, void (*on_idle)(void *arg),
                    void *arg) {
  s->stopping = 1;
  s->on_idle = on_idle;
  s->idle_arg = arg;
  if (s->slurm) {
    /* Its jobs go on; its own commands (a poll, an sbatch) end before the server does. */
    s->slurm_busy = 1;
    exec_quiesce(s->slurm, slurm_quiet, s);
  }
  if (s->nqueued)
    LOG_INFO("shutdown: queued runs stay queued for the next start count=%zu", s->nqueued);
  if (cancel_runs || !grace_ms) {
    cancel_running(s);
  } else if (s->nrunning) {
    LOG_INFO("shutdown: waiting for running runs count=%zu grace_ms=%u", s->nrunning, grace_ms);
    struct timeval tv = compat_timeout_ms(grace_ms);
    evtimer_add(s->drain_ev, &tv);
  }
  maybe_idle(s);
}

int sched_list(sched *s, const runtab_filter *f, const char *before_run_id, size_t limit,
               sched_run ***out, size_t *n_out, int *more_out) {
  int rc = runtab_list(s->opts.rt, f, before_run_id, limit, out, n_out, more_out);
  if (rc < 0) return rc;
  for (size_t i = 0; i < *n_out; i++) {
    struct srun *r = find_active(s, (*out)[i]->run_id);
    if (!r) continue;
    prismq__runner__v1__run__free_unpacked((*out)[i], NULL);
    (*out)[i] = snapshot(r);
  }
  return 0;
}

int sched_open_output(sched *s, const char *run_id, uint64_t start_seq, int stream,
                      outlog_reader **out) {
  if (stream < 0 || stream > 2) return -EINVAL;
  struct srun *r = find_active(s, run_id);
  if (r) {
    if (!r->log) return -EAGAIN;
    return outlog_reader_new(out, r->log, start_seq, stream);
  }
  sched_run *done = NULL;
  if (runtab_get(s->opts.rt, run_id, &done) != 0) return -ENOENT;
  prismq__runner__v1__run__free_unpacked(done, NULL);
  for (size_t i = 0; i < DONE_LOGS; i++)
    if (s->done_logs[i].log && strcmp(s->done_logs[i].run_id, run_id) == 0)
      return outlog_reader_new(out, s->done_logs[i].log, start_seq, stream);
  char path[4096];
  outlog *l = NULL;
  int rc = outlog_path(path, sizeof path, s->data_dir, run_id);
  if (rc == 0) rc = outlog_open_existing(&l, s->base, path, NULL);
  if (rc == -ENOENT) {
    /* A run that ended before it started (cancelled while queued) has no output. */
    *out = NULL;
    return 0;
  }
  if (rc < 0) return rc;
  rc = outlog_reader_new(out, l, start_seq, stream);
  /* The ring holds the owner's reference; readers hold their own. */
  size_t slot = s->done_next++ % DONE_LOGS;
  outlog_free(s->done_logs[slot].log);
  s->done_logs[slot].log = l;
  memcpy(s->done_logs[slot].run_id, run_id, ID_RUN_LEN + 1);
  return rc;
}

runtab *sched_runtab(const sched *s) { return s->opts.rt; }

size_t sched_active(const sched *s) { return s->nqueued + s->nrunning + s->nremote; }

uint64_t sched_total(const sched *s) { return runtab_count(s->opts.rt); }

/* ---- recovery after a restart -------------------------------------------------- */

static void pump_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pump(arg);
}

/* When this boot began (/proc/stat btime), in ms since the epoch; 0 if unknown. */
static int64_t boot_time_ms(void) {
  FILE *f = fopen("/proc/stat", "re");
  if (!f) return 0;
  char line[256];
  long long btime = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "btime %lld", &btime) == 1) break;
  fclose(f);
  return (int64_t)btime * 1000;
}

/* A run the previous server left QUEUED goes back into the queue; so does a remote run
 * it left QUEUED or RUNNING, to be taken up again (its job goes on, or is submitted if
 * it never was). Takes pb on success. Returns 0, or a negative errno with err saying
 * why it cannot (its module is gone, its parameters no longer fit, it had secrets,
 * which no table keeps, and is still to be started). */
static int requeue(sched *s, sched_run *pb, char *err, size_t errlen) {
  const config_module *m = config_find_module(s->cfg, pb->module_id);
  if (!m) {
    snprintf(err, errlen, "module \"%.64s\" is not configured any more", pb->module_id);
    return -ENOENT;
  }
  int remote = !strcmp(pb->executor, "slurm");
  if (remote && pb->job_id[0]) {
    /* Its job exists: nothing is to be rendered or submitted. */
    struct srun *r = srun_new(s, m, NULL, NULL, NULL, pb, pb->timeout_ms);
    r->resume = 1;
    activate(s, r);
    return 0;
  }
  if (pb->secret_digest.len) {
    snprintf(err, errlen,
             "its secret parameters are kept in memory only, and were lost with the server");
    return -EINVAL;
  }
  size_t np = pb->n_parameters;
  const char **names = xmalloc(np * sizeof *names), **values = xmalloc(np * sizeof *values);
  for (size_t i = 0; i < np; i++) {
    names[i] = pb->parameters[i]->key;
    values[i] = pb->parameters[i]->value;
  }
  char **argv = NULL, *cwd = NULL;
  int rc =
      config_module_render(&argv, &cwd, NULL, NULL, m, names, values, NULL, np, NULL, err, errlen);
  free(names);
  free(values);
  if (rc < 0) return rc;
  struct srun *r =
      srun_new(s, m, argv, cwd, NULL, pb, pb->timeout_ms ? pb->timeout_ms : m->timeout_ms);
  r->resume = remote;
  activate(s, r);
  return 0;
}

/* Start-up: the runs an earlier server left active. Running ones become LOST, and
 * whatever of them still runs is killed; queued ones are queued again, in their order,
 * and start from the loop. Returns 0 or the negative errno of reading the table. */
static int recover(sched *s) {
  sched_run **runs = NULL;
  size_t n = 0, lost = 0, killed = 0, queued = 0, failed = 0;
  int rc = runtab_active(s->opts.rt, &runs, &n);
  if (rc < 0) return rc;
  int64_t boot_ms = boot_time_ms(), now = id_now_ms();
  for (size_t i = 0; i < n; i++) {
    sched_run *pb = runs[i];
    char err[512];
    /* A run recorded QUEUED whose cgroup exists had started, its start not committed yet.
     * A remote run's job outlives the server. */
    int remote = !strcmp(pb->executor, "slurm");
    if (remote || (pb->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED &&
                   !exec_started_before(s->ex, pb))) {
      if (requeue(s, pb, err, sizeof err) == 0) {
        runs[i] = NULL;
        queued++;
        continue;
      }
      char msg[600];
      snprintf(msg, sizeof msg, "%s after a server restart: %s",
               remote ? "not taken up again" : "not started", err);
      set_str(&pb->error_message, msg);
      pb->status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED;
      failed++;
    } else {
      int ended = exec_end_survivors(s->ex, pb, boot_ms);
      killed += (size_t)ended;
      set_str(&pb->error_message, ended ? SCHED_LOST_MESSAGE
                                      "; its processes were killed at restart"
                                        : SCHED_LOST_MESSAGE);
      pb->status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST;
      lost++;
    }
    pb->finished_at_ms = now;
    runstats_finished(s->stats, pb->module_id, status_name(pb->status), -1);
    persist(s, pb);
  }
  runtab_list_free(runs, n);
  if ((rc = runtab_sync(s->opts.rt)) < 0) return rc;
  size_t swept = exec_sweep(s->ex);
  if (n)
    LOG_WARN(
        "runs recovered after a restart lost=%zu processes_killed=%zu requeued=%zu "
        "not_requeued=%zu "
        "cgroups_swept=%zu",
        lost, killed, queued, failed, swept);
  if (queued) event_active(s->pump_ev, 0, 0);
  return 0;
}

/* ---- set-up --------------------------------------------------------------------- */

static int mkdir_p(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
#ifdef _WIN32
    /* Either separator; a drive ("C:") is no directory to make. */
    if ((*p != '/' && *p != '\\') || p[-1] == ':') continue;
#else
    if (*p != '/') continue;
#endif
    char sep = *p;
    *p = '\0';
    if (compat_mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
    *p = sep;
  }
  if (compat_mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
  return 0;
}

int sched_init_data_dir(const char *data_dir, char *err, size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/" OUTLOG_DIR, data_dir);
  int rc = mkdir_p(path);
  if (rc < 0) snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
  return rc;
}

/* The resource check of the current snapshot's limits, if it has any. Returns 0 or the
 * negative errno of reading /proc. */
static int open_resmon(sched *s) {
  const config_limits *lim = &s->cfg->limits;
  resmon_free(s->res);
  s->res = NULL;
  if (!lim->max_cpu_percent && !lim->max_memory_percent && !lim->min_available_memory_mb) return 0;
  resmon_opts ro = RESMON_OPTS_INIT;
  ro.limits.max_cpu_percent = lim->max_cpu_percent;
  ro.limits.max_memory_percent = lim->max_memory_percent;
  ro.limits.min_available_memory_mb = lim->min_available_memory_mb;
  ro.interval_ms = s->opts.resmon_interval_ms;
  ro.on_sample = on_sample;
  ro.arg = s;
  return resmon_new(&s->res, s->base, &ro);
}

int sched_set_config(sched *s, config *cfg, char *err, size_t errlen) {
  config *old = s->cfg;
  s->cfg = config_ref(cfg);
  int rc = open_resmon(s);
  if (rc < 0) {
    snprintf(err, errlen, "cannot read resource usage from /proc: %s", strerror(-rc));
    config_free(s->cfg);
    s->cfg = old;
    open_resmon(s);
    return rc;
  }
  config_free(old);
  /* Limits may have grown: queued runs may start now. */
  pump(s);
  return 0;
}

const config *sched_config(const sched *s) { return s->cfg; }

/* Remote runs handed to their executor, by status (pending on the cluster or running). */
static void count_remote(const void *node, VISIT v, void *arg) {
  if (v != postorder && v != leaf) return;
  const struct srun *r = *(struct srun *const *)node;
  if (!r->remote || !r->holding) return;
  runstats_gauges *g = arg;
  if (r->pb->status == PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING)
    g->running++;
  else
    g->queued++;
}

static void stats_gauges(void *arg, runstats_gauges *g) {
  const sched *s = arg;
  g->queued = s->nqueued;
  g->running = s->nrunning;
  if (s->nremote) compat_twalk_r(s->index, count_remote, g);
  g->runs = runtab_count(s->opts.rt);
}

int sched_new(sched **out, struct event_base *base, const sched_opts *opts, char *err,
              size_t errlen) {
  sched *s = xcalloc(1, sizeof *s);
  s->base = base;
  s->opts = *opts;
  s->data_dir = xstrdup(opts->data_dir);
  s->sync_ev = event_new(base, -1, 0, sync_cb, s);
  if (!s->sync_ev) abort();
  int rc = secretkey_load(s->secret_key, s->data_dir, err, errlen);
  if (rc < 0) goto fail;
  s->queued_by_owner = quota_new();
  s->running_by_module = quota_new();
  s->cfg = config_ref(opts->cfg);
  if ((rc = open_resmon(s)) < 0) {
    snprintf(err, errlen, "cannot read resource usage from /proc: %s", strerror(-rc));
    goto fail;
  }
  s->pump_ev = event_new(base, -1, 0, pump_cb, s);
  s->drain_ev = evtimer_new(base, drain_cb, s);
  if (!s->pump_ev || !s->drain_ev) abort();
  exec_local_opts eo = {opts->cg, opts->mode == SCHED_THREADED, opts->orphan_kill_ms};
  exec_local_new(&s->ex, base, &eo);
  /* Before the recovery, so that the runs it ends are counted. */
  if (opts->metrics) runstats_new(&s->stats, opts->metrics, stats_gauges, s);
  if ((rc = recover(s)) < 0) {
    snprintf(err, errlen, "cannot read the run table: %s", strerror(-rc));
    goto fail;
  }
  *out = s;
  return 0;

fail:
  sched_free(s);
  return rc;
}

void sched_free(sched *s) {
  if (!s) return;
  s->stopping = 1; /* ending runs below must not start queued ones */
  s->on_idle = NULL;
  /* Queued runs stay QUEUED in the run table, for the next start. */
  while (s->qhead) {
    struct srun *r = s->qhead;
    while (r->watchers) sched_unwatch(r->watchers);
    queue_remove(s, r);
    tdelete(r, &s->index, run_cmp);
    srun_free(r);
  }
  while (s->index) {
    struct srun *r = *(struct srun **)s->index;
    while (r->watchers) sched_unwatch(r->watchers);
    if (r->remote) {
      /* Its job goes on on the cluster; the next server takes it up from the table. */
      exec_job_free(r->job);
      outlog_free(r->log);
      tdelete(r, &s->index, run_cmp);
      release_slot(r);
      srun_free(r);
      continue;
    }
    exec_kill(r->job);
    r->pb->exit_code = -1;
    r->pb->term_signal = SIGKILL;
    finish(r, PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED, SCHED_SHUTDOWN_MESSAGE);
  }
  if (s->pump_ev) event_free(s->pump_ev);
  if (s->drain_ev) event_free(s->drain_ev);
  if (s->sync_ev) {
    runtab_sync(s->opts.rt); /* the runs just ended */
    event_free(s->sync_ev);
  }
  for (size_t i = 0; i < DONE_LOGS; i++) outlog_free(s->done_logs[i].log);
  resmon_free(s->res);
  quota_free(s->queued_by_owner);
  quota_free(s->running_by_module);
  config_free(s->cfg);
  free(s->packed);
  free(s->data_dir);
  runstats_free(s->stats);
  exec_free(s->ex);
  exec_free(s->slurm);
  compat_explicit_bzero(s->secret_key, sizeof s->secret_key);
  free(s);
}
