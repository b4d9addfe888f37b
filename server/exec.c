/* The executors' public functions, which dispatch on the kind, and the local executor:
 * a run's command is a process here (proc.h), in a cgroup of its own where there are
 * cgroups (cgroup.h). See exec.h. */
#include "exec.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exec_impl.h"
#include "log.h"
#include "xalloc.h"

/* ---- dispatch ------------------------------------------------------------------- */

void exec_free(executor *ex) {
  if (ex) ex->ops->free(ex);
}

int exec_start(executor *ex, exec_job **out, const exec_spec *spec, char *err, size_t errlen) {
  return ex->ops->start(ex, out, spec, err, errlen);
}

void exec_terminate(exec_job *j, uint32_t grace_ms) { j->ops->terminate(j, grace_ms); }

void exec_kill(exec_job *j) { j->ops->kill(j); }

void exec_job_free(exec_job *j) {
  if (j) j->ops->job_free(j);
}

int exec_started_before(executor *ex, Prismq__Runner__V1__Run *run) {
  return ex->ops->started_before(ex, run);
}

int exec_end_survivors(executor *ex, const Prismq__Runner__V1__Run *run, int64_t boot_ms) {
  return ex->ops->end_survivors(ex, run, boot_ms);
}

size_t exec_sweep(executor *ex) { return ex->ops->sweep(ex); }

void exec_forget(executor *ex, const Prismq__Runner__V1__Run *run) { ex->ops->forget(ex, run); }

void exec_quiesce(executor *ex, void (*fn)(void *arg), void *arg) { ex->ops->quiesce(ex, fn, arg); }

/* ---- the local executor ---------------------------------------------------------- */

struct local {
  executor ex; /* first: the dispatch */
  struct event_base *base;
  exec_local_opts opts;
};

struct local_job {
  exec_job job; /* first: the dispatch */
  proc *p;
  void (*on_output)(void *arg, int stream, const uint8_t *data, size_t len);
  void (*on_exit)(void *arg, const exec_end *e);
  void *arg;
};

static void local_free(executor *ex) { free(ex); }

static void on_output(proc *p, int stream, const uint8_t *data, size_t len, void *arg) {
  (void)p;
  struct local_job *j = arg;
  j->on_output(j->arg, stream, data, len);
}

static void on_exit_cb(proc *p, int exit_status, int term_signal, const proc_usage *u, void *arg) {
  (void)p;
  struct local_job *j = arg;
  exec_end e = {exit_status, term_signal, u->user_cpu_ms, u->sys_cpu_ms, u->max_rss_kb, 0, NULL};
  j->on_exit(j->arg, &e);
}

/* Records the run's cgroup (under the root, named by its run_id) in the run. */
static void set_cgroup(struct local *ex, Prismq__Runner__V1__Run *run) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", cgroup_root_path(ex->opts.cg), run->run_id);
  if (run->cgroup != protobuf_c_empty_string) free(run->cgroup);
  run->cgroup = xstrdup(path);
}

/* The run's cgroup, recorded in the run, or, without cgroups, the run committed as
 * started first. Returns its directory's descriptor (-1 without cgroups) or a negative
 * errno with err. */
static int place(struct local *ex, const exec_spec *spec, char *err, size_t errlen) {
  Prismq__Runner__V1__Run *run = spec->run;
  if (!ex->opts.cg) {
    /* Without a cgroup, a restart could not tell that the run had started were it
     * still QUEUED in the table: it would run twice. With one, the cgroup tells. */
    if (spec->commit_start) spec->commit_start(spec->arg);
    return -1;
  }
  int fd = -1;
  int rc = cgroup_create(&fd, ex->opts.cg, run->run_id, spec->mod->memory_max,
                         spec->mod->cpu_max_percent, err, errlen);
  if (rc < 0) return rc;
  set_cgroup(ex, run);
  return fd;
}

static int local_start(executor *base, exec_job **out, const exec_spec *spec, char *err,
                       size_t errlen) {
  struct local *ex = (struct local *)base;
  int cg_fd = place(ex, spec, err, errlen);
  if (cg_fd < -1) return cg_fd;
  struct local_job *j = xcalloc(1, sizeof *j);
  j->job.ops = ex->ex.ops;
  j->on_output = spec->on_output;
  j->on_exit = spec->on_exit;
  j->arg = spec->arg;
  proc_opts po = PROC_OPTS_INIT;
  po.cgroup_fd = cg_fd;
  po.argv = spec->argv;
  po.envp = spec->envp;
  po.cwd = spec->cwd;
  po.threaded = ex->opts.threaded;
  po.orphan_kill_ms = ex->opts.orphan_kill_ms;
  po.progress_pipe = spec->progress_pipe;
  po.inputs = spec->inputs;
  po.ninputs = spec->ninputs;
  po.memory_max = spec->mod->memory_max; /* Windows' job limit; the cgroup's on Linux */
  po.on_output = on_output;
  po.on_exit = on_exit_cb;
  po.arg = j;
  int rc = proc_spawn(&j->p, ex->base, &po);
  if (cg_fd >= 0) close(cg_fd);
  if (rc < 0) {
    snprintf(err, errlen, "cannot start \"%.200s\": %s", spec->argv[0], strerror(-rc));
    free(j);
    return rc;
  }
  Prismq__Runner__V1__Run *run = spec->run;
  run->pid = (int32_t)proc_pid(j->p);
  /* Recovery after a crash tells this process from a later one with the same pid. */
  proc_pid_start_ticks(run->pid, &run->pid_start_ticks);
  *out = &j->job;
  return 0;
}

static void local_terminate(exec_job *j, uint32_t grace_ms) {
  proc_terminate(((struct local_job *)j)->p, grace_ms);
}

static void local_kill(exec_job *j) { proc_kill(((struct local_job *)j)->p, SIGKILL); }

static void local_job_free(exec_job *j) {
  proc_free(((struct local_job *)j)->p);
  free(j);
}

static int local_started_before(executor *base, Prismq__Runner__V1__Run *run) {
  struct local *ex = (struct local *)base;
  if (!ex->opts.cg) return 0;
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", cgroup_root_path(ex->opts.cg), run->run_id);
  if (access(path, F_OK) != 0) return 0;
  set_cgroup(ex, run);
  return 1;
}

static int local_end_survivors(executor *ex, const Prismq__Runner__V1__Run *run, int64_t boot_ms) {
  (void)ex;
  int ended = 0;
  if (run->cgroup[0]) {
    int rc = cgroup_kill_path(run->cgroup);
    if (rc < 0)
      LOG_WARN("cannot end the cgroup of a lost run run_id=%s path=%s: %s", run->run_id,
               run->cgroup, strerror(-rc));
    ended = rc > 0;
  }
#ifdef _WIN32
  /* Nothing survives there: each run's Job Object kills its processes when the last
   * handle to it goes, which was the earlier server's death (proc_win.c). */
  (void)boot_ms;
#else
  uint64_t ticks;
  if (run->pid > 0 && run->pid_start_ticks && run->started_at_ms >= boot_ms &&
      proc_pid_start_ticks(run->pid, &ticks) == 0 && ticks == run->pid_start_ticks) {
    kill(-run->pid, SIGKILL);
    kill(run->pid, SIGKILL);
    ended = 1;
  }
#endif
  return ended;
}

static size_t local_sweep(executor *base) {
  struct local *ex = (struct local *)base;
  return ex->opts.cg ? cgroup_root_sweep(ex->opts.cg) : 0;
}

static void local_forget(executor *base, const Prismq__Runner__V1__Run *run) {
  struct local *ex = (struct local *)base;
  if (run->cgroup[0] && ex->opts.cg) cgroup_remove(ex->opts.cg, run->run_id);
}

/* Local jobs are the scheduler's to wait for: nothing of the executor's own runs. */
struct quiet {
  void (*fn)(void *arg);
  void *arg;
};

static void local_quiesce_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct quiet q = *(struct quiet *)arg;
  free(arg);
  q.fn(q.arg);
}

static void local_quiesce(executor *base, void (*fn)(void *arg), void *arg) {
  struct local *ex = (struct local *)base;
  struct quiet *q = xmalloc(sizeof *q);
  *q = (struct quiet){fn, arg};
  if (event_base_once(ex->base, -1, EV_TIMEOUT, local_quiesce_cb, q, NULL) != 0) abort();
}

static const exec_ops local_ops = {
    local_start,         local_terminate, local_kill,   local_job_free, local_started_before,
    local_end_survivors, local_sweep,     local_forget, local_quiesce,  local_free};

int exec_local_new(executor **out, struct event_base *base, const exec_local_opts *opts) {
  static const exec_local_opts defaults = EXEC_LOCAL_OPTS_INIT;
  struct local *ex = xcalloc(1, sizeof *ex);
  ex->ex.ops = &local_ops;
  ex->base = base;
  ex->opts = opts ? *opts : defaults;
  *out = &ex->ex;
  return 0;
}

#ifdef _WIN32
/* The Slurm executor (exec_slurm.c) is Linux's: a Windows server refuses `executor: slurm`
 * when it loads the configuration, and a Slurm run in its table (from a Linux server's)
 * ends FAILED with this. */
int exec_slurm_new(executor **out, struct event_base *base, const exec_slurm_opts *opts, char *err,
                   size_t errlen) {
  (void)out;
  (void)base;
  (void)opts;
  snprintf(err, errlen, "the Slurm executor is not available on Windows");
  return -ENOTSUP;
}
#endif
