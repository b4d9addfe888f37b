#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sched.h>

#include <event2/event.h>
#include <event2/util.h>

#include "cgroup.h"
#include "compat.h"
#include "log.h"

/* One read per readiness: a pipe holds 64 KiB by default, and reading once per
 * callback keeps a chatty child from starving the rest of the loop. */
#define PROC_READ_MAX (64u << 10)

/* What execvpe searches when the environment has no PATH. */
#define PROC_DEFAULT_PATH "/bin:/usr/bin"

struct proc {
  struct event_base *base;
  pid_t pid;
  int threaded;
  uint32_t orphan_kill_ms;
  proc_output_fn on_output;
  proc_exit_fn on_exit;
  void *arg;

  int nstreams;  /* 2, or 3 with the progress pipe */
  int out_fd[3]; /* our read ends of stdout, stderr, progress; -1 once at end-of-file */
  struct event *out_ev[3];
  int exit_fd; /* pidfd, or the eventfd the waiter thread signals; -1 once seen */
  struct event *exit_ev;
  pthread_t waiter;
  struct event *term_ev;   /* proc_terminate's grace period */
  struct event *orphan_ev; /* main process gone, pipes still open */
  int cg_fd;               /* the run's cgroup directory, or -1 */

  int in_cb;                 /* depth of user callbacks running: defer the release */
  unsigned exited : 1;       /* the main process is a zombie: its pid still pins the group */
  unsigned done : 1;         /* reaped and on_exit delivered */
  unsigned user_gone : 1;    /* proc_free was called */
  unsigned term_sent : 1;    /* proc_terminate was called */
  unsigned group_killed : 1; /* the group has had a SIGKILL */
};

static void *must(void *ptr) {
  if (!ptr) {
    LOG_ERROR("proc out of memory");
    abort();
  }
  return ptr;
}

/* posix_spawn's set-up calls fail only on allocation or on a programming error. */
static void must0(int err) {
  if (err) {
    LOG_ERROR("proc spawn set-up failed err=%s", strerror(err));
    abort();
  }
}

/* Only called while the main process is not reaped, so the group id is still ours.
 * With a cgroup, its members get the signal instead, once each: those that left the
 * group with setsid() among them (the group's members are all in the cgroup too). */
static int kill_group(proc *p, int sig) {
  if (sig < 0 || sig >= NSIG) return -EINVAL;
  if (sig == SIGKILL) p->group_killed = 1;
  if (p->cg_fd >= 0 && sig != 0) {
    int rc = cgroup_signal(p->cg_fd, sig);
    if (rc == 0) return kill(-p->pid, 0) < 0 ? -errno : 0; /* as proc_kill reports */
    LOG_WARN("proc cgroup signal failed, signalling the group pid=%d sig=%d err=%s", p->pid, sig,
             strerror(-rc));
  }
  return kill(-p->pid, sig) < 0 ? -errno : 0;
}

static void close_stream(proc *p, int s) {
  if (p->out_fd[s] < 0) return;
  event_del(p->out_ev[s]);
  close(p->out_fd[s]);
  p->out_fd[s] = -1;
}

static void close_streams(proc *p) {
  for (int s = 0; s < p->nstreams; s++) close_stream(p, s);
}

static int streams_open(const proc *p) {
  for (int s = 0; s < p->nstreams; s++)
    if (p->out_fd[s] >= 0) return 1;
  return 0;
}

static void destroy(proc *p) {
  for (int s = 0; s < p->nstreams; s++) {
    close_stream(p, s);
    if (p->out_ev[s]) event_free(p->out_ev[s]);
  }
  if (p->exit_ev) event_free(p->exit_ev);
  if (p->exit_fd >= 0) close(p->exit_fd);
  if (p->cg_fd >= 0) close(p->cg_fd);
  event_free(p->term_ev);
  event_free(p->orphan_ev);
  free(p);
}

/* The main process is a zombie (exit seen): SIGKILL the group while its id is still
 * pinned, then reap. Returns 0 with the status and usage, or -errno if something else
 * in the program reaped it first. */
static int reap(proc *p, int *status, struct rusage *ru) {
  int rc = kill_group(p, SIGKILL);
  if (rc < 0 && rc != -ESRCH)
    LOG_WARN("proc group kill failed pid=%d err=%s", p->pid, strerror(-rc));
  pid_t r;
  do r = wait4(p->pid, status, WNOHANG, ru);
  while (r < 0 && errno == EINTR);
  if (r == p->pid) return 0;
  rc = r < 0 ? -errno : -ECHILD;
  LOG_ERROR("proc reap failed, exit status lost pid=%d err=%s", p->pid, strerror(-rc));
  return rc;
}

static uint64_t tv_ms(struct timeval tv) {
  return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static void settle(proc *p);

static void finish(proc *p) {
  int status = 0, code = -1, sig = 0;
  struct rusage ru;
  proc_usage u = {0};
  if (reap(p, &status, &ru) == 0) {
    if (WIFEXITED(status))
      code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
      sig = WTERMSIG(status);
    u.user_cpu_ms = tv_ms(ru.ru_utime);
    u.sys_cpu_ms = tv_ms(ru.ru_stime);
    u.max_rss_kb = (uint64_t)ru.ru_maxrss; /* already KiB on Linux */
    /* The cgroup counts the whole tree, also what the main process never waited for. */
    if (p->cg_fd >= 0) cgroup_cpu(p->cg_fd, &u.user_cpu_ms, &u.sys_cpu_ms);
  }
  p->done = 1;
  event_del(p->term_ev);
  event_del(p->orphan_ev);
  LOG_DEBUG("proc done pid=%d exit_status=%d term_signal=%d", p->pid, code, sig);
  if (p->on_exit) {
    p->in_cb++;
    p->on_exit(p, code, sig, &u, p->arg);
    p->in_cb--;
  }
  settle(p);
}

/* Moves the proc on after any change of state; p may be gone when it returns, so it
 * is the last thing every event callback does. */
static void settle(proc *p) {
  if (p->in_cb) return; /* the callback's dispatcher settles once it returns */
  if (p->user_gone) {
    if (p->done) {
      destroy(p);
    } else if (p->exited) {
      int status;
      struct rusage ru;
      reap(p, &status, &ru);
      destroy(p);
    }
    return; /* not exited: exit_ev comes back here */
  }
  if (p->done || !p->exited) return;
  if (streams_open(p)) {
    if (!evtimer_pending(p->orphan_ev, NULL)) {
      struct timeval tv = compat_timeout_ms(p->orphan_kill_ms);
      evtimer_add(p->orphan_ev, &tv);
    }
    return;
  }
  finish(p);
}

static void output_cb(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  proc *p = arg;
  int s = fd == p->out_fd[0] ? 0 : fd == p->out_fd[1] ? 1 : 2;
  uint8_t buf[PROC_READ_MAX];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n > 0) {
    if (p->on_output) {
      p->in_cb++;
      p->on_output(p, s + 1, buf, (size_t)n, p->arg);
      p->in_cb--;
      settle(p);
    }
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0)
    LOG_WARN("proc output read failed pid=%d stream=%d err=%s", p->pid, s + 1, strerror(errno));
  close_stream(p, s);
  settle(p);
}

static void exit_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  proc *p = arg;
  /* The waiter has signalled and is returning: the join is immediate. */
  if (p->threaded) pthread_join(p->waiter, NULL);
  close(p->exit_fd);
  p->exit_fd = -1;
  p->exited = 1;
  settle(p);
}

static void term_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  kill_group(arg, SIGKILL);
}

/* First expiry: the main process left members of its group holding the pipes; kill
 * them. Second expiry: the pipes are still open although the group is dead, so a
 * process that left the group holds them; stop waiting for it. */
static void orphan_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  proc *p = arg;
  if (!p->group_killed) {
    kill_group(p, SIGKILL);
    struct timeval tv = compat_timeout_ms(p->orphan_kill_ms);
    evtimer_add(p->orphan_ev, &tv);
    return;
  }
  LOG_WARN("proc output held open by a process outside the group, closing it pid=%d", p->pid);
  close_streams(p);
  settle(p);
}

/* Threaded mode. The waiter reads only p->pid and p->exit_fd, which do not change, and
 * p is not freed before the loop has joined it. WNOWAIT leaves the reaping to the loop,
 * as in pidfd mode, so the group id stays pinned until the final group kill. */
static void *waiter_main(void *arg) {
  proc *p = arg;
  siginfo_t si;
  while (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
  }
  eventfd_write(p->exit_fd, 1);
  return NULL;
}

/* 0 if `path` (relative to dirfd) is an executable regular file for us, as exec
 * would judge it; else -errno. */
static int check_exec(int dirfd, const char *path) {
  struct stat st;
  if (fstatat(dirfd, path, &st, 0) < 0) return -errno;
  if (!S_ISREG(st.st_mode)) return -EACCES;
  return faccessat(dirfd, path, X_OK, AT_EACCESS) < 0 ? -errno : 0;
}

/* Finds the file to execute for `file` the way execvpe does, but with the PATH of the
 * child's environment and relative names taken from the child's cwd (dirfd). Checking
 * here, rather than trying posix_spawn on each candidate, spawns once and reports
 * ENOENT/EACCES even where posix_spawn cannot (valgrind turns its vfork into a fork). */
static int resolve(char *out, size_t cap, int dirfd, const char *file, const char *const *envp) {
  if (!*file) return -ENOENT;
  if (strchr(file, '/')) {
    if (strlen(file) >= cap) return -ENAMETOOLONG;
    int rc = check_exec(dirfd, file);
    if (rc == 0) strcpy(out, file);
    return rc;
  }
  const char *path = PROC_DEFAULT_PATH;
  for (const char *const *e = envp; *e; e++) {
    if (strncmp(*e, "PATH=", 5) == 0) {
      path = *e + 5;
      break;
    }
  }
  int rc = -ENOENT;
  for (const char *dir = path;; dir++) {
    size_t dlen = strcspn(dir, ":");
    /* An empty entry means the current directory. */
    int n = dlen ? snprintf(out, cap, "%.*s/%s", (int)dlen, dir, file)
                 : snprintf(out, cap, "./%s", file);
    if (n > 0 && (size_t)n < cap) {
      int r = check_exec(dirfd, out);
      if (r == 0) return 0;
      if (r == -EACCES) rc = r;
    }
    dir += dlen;
    if (!*dir) break;
  }
  return rc;
}

int proc_resolve(char *out, size_t cap, const char *file, const char *const *envp) {
  return resolve(out, cap, AT_FDCWD, file, envp);
}

/* The child's set-up, run by posix_spawn between fork and exec. Order matters: the
 * chdir needs cwd_fd before closefrom, and the pipes are placed before /dev/null is
 * opened on 0 in case a pipe end got a low number. Pipe s goes to descriptor s + 1. */
static void spawn_setup(posix_spawn_file_actions_t *fa, posix_spawnattr_t *attr, int cwd_fd,
                        const int *child_end, int nstreams) {
  must0(posix_spawn_file_actions_init(fa));
  if (cwd_fd >= 0) must0(posix_spawn_file_actions_addfchdir_np(fa, cwd_fd));
  for (int s = 0; s < nstreams; s++)
    must0(posix_spawn_file_actions_adddup2(fa, child_end[s], s + 1));
  must0(posix_spawn_file_actions_addopen(fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0));
  must0(posix_spawn_file_actions_addclosefrom_np(fa, nstreams + 1));

  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  must0(posix_spawnattr_init(attr));
  must0(posix_spawnattr_setflags(
      attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
  must0(posix_spawnattr_setpgroup(attr, 0));
  must0(posix_spawnattr_setsigmask(attr, &none));
  must0(posix_spawnattr_setsigdefault(attr, &all));
}

/* What the child of spawn_cloned needs: read on the parent's memory, which the
 * child shares until its exec. */
struct child_args {
  const char *path;
  const char *const *argv, *const *envp;
  int cwd_fd;
  const int *ends; /* the pipes' write ends: pipe s goes to descriptor s + 1 */
  int nstreams;
  const int *in_ends;       /* the inputs' read ends: input i goes to descriptor in_fds[i] */
  const proc_input *inputs; /* ... as proc_opts gave them */
  size_t ninputs;
  int procs_fd;  /* the cgroup's cgroup.procs, open for writing; -1 without a cgroup */
  int report_fd; /* an exec failure's errno goes here */
};

/* Whether descriptor fd is one an input of a goes to. */
static int is_input_fd(const struct child_args *a, int fd) {
  for (size_t i = 0; i < a->ninputs; i++)
    if (a->inputs[i].fd == fd) return 1;
  return 0;
}

/* The child's descriptors, in the child of spawn_cloned: every end it gets is moved
 * above the highest descriptor it will have (`top`) so that placing one cannot
 * overwrite another, then each is placed, and everything else is closed but report_fd
 * (close-on-exec). Returns report_fd's new number, or -1. */
static int child_place_fds(const struct child_args *a) {
  int top = a->nstreams, n = 0, fds[2 + 3 + PROC_MAX_INPUTS];
  for (size_t i = 0; i < a->ninputs; i++)
    if (a->inputs[i].fd > top) top = a->inputs[i].fd;
  fds[n++] = a->report_fd;
  fds[n++] = a->cwd_fd;
  for (int s = 0; s < a->nstreams; s++) fds[n++] = a->ends[s];
  for (size_t i = 0; i < a->ninputs; i++) fds[n++] = a->in_ends[i];
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0 && fds[i] <= top && (fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, top + 1)) < 0)
      return -1;
  if (fds[1] >= 0 && fchdir(fds[1]) < 0) return -1;
  for (int s = 0; s < a->nstreams; s++)
    if (dup2(fds[2 + s], s + 1) < 0) return -1;
  for (size_t i = 0; i < a->ninputs; i++)
    if (dup2(fds[2 + a->nstreams + (int)i], a->inputs[i].fd) < 0) return -1;
  int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (nul < 0 || dup2(nul, STDIN_FILENO) < 0) return -1;
  for (int fd = a->nstreams + 1; fd <= top; fd++)
    if (!is_input_fd(a, fd)) close(fd);
  if (fds[0] > top + 1) close_range((unsigned)top + 1, (unsigned)fds[0] - 1, 0);
  close_range((unsigned)fds[0] + 1, ~0u, 0);
  return fds[0];
}

/* The child of spawn_cloned, between clone and exec: with a cgroup it first moves
 * itself into it (before any code of the run exists, so nothing can be forked outside
 * it), then the same set-up as spawn_setup's, and its inputs. Async-signal-safe calls
 * only, on its own stack. */
static int child_main(void *arg) {
  const struct child_args *a = arg;
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  sigset_t none;
  sigemptyset(&none);
  int report_fd = a->report_fd;
  if ((a->procs_fd >= 0 && write(a->procs_fd, "0", 1) != 1) || setpgid(0, 0) < 0 ||
      (report_fd = child_place_fds(a)) < 0)
    goto fail;
  /* The parent blocked every signal around the clone: handlers go first, then the mask. */
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execve(a->path, (char *const *)a->argv, (char *const *)a->envp);
fail:;
  int e = errno;
  if (report_fd < 0) report_fd = a->report_fd; /* placing failed: a dup may be half done */
  if (write(report_fd, &e, sizeof e) < 0) _exit(127);
  _exit(127);
}

/* The child's stack: spawns happen one at a time on the loop's thread, and the parent
 * is suspended (CLONE_VFORK) until the child has exec'd or exited. */
static char child_stack[64u << 10] __attribute__((aligned(64)));

/* Starts the child as `a` says, inside the cgroup at cg_fd if it is not -1. posix_spawn
 * cannot place it there, and moving it from outside after the spawn would let it fork
 * first; clone3's CLONE_INTO_CGROUP has no vfork form without a stack of its own, and a
 * plain fork copies the server's page tables for every run. So: posix_spawn's own way
 * (a child sharing our memory, us suspended until its exec), the child moving itself in
 * first. posix_spawn's file actions cannot place inputs on any descriptor safely
 * either, so a child with inputs comes this way too. Returns 0 with p->pid set, or
 * -errno (the exec's own error included: the child is then reaped). */
static int spawn_cloned(proc *p, struct child_args *a, int cg_fd) {
  int report[2], rc = 0;
  a->procs_fd = -1;
  if (cg_fd >= 0 && (a->procs_fd = openat(cg_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC)) < 0)
    return -errno;
  if (pipe2(report, O_CLOEXEC) < 0) {
    rc = -errno;
    if (a->procs_fd >= 0) close(a->procs_fd);
    return rc;
  }
  a->report_fd = report[1];
  /* No handler of ours may run in the child, on its stack, before it resets them. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid =
      clone(child_main, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
  if (pid < 0) rc = -errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(report[1]);
  if (a->procs_fd >= 0) close(a->procs_fd);
  if (rc == 0) {
    int e;
    ssize_t n;
    /* The child has exec'd (end-of-file: the pipe was close-on-exec) or failed. */
    do n = read(report[0], &e, sizeof e);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof e) {
      rc = -e;
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
      }
    } else {
      p->pid = pid;
    }
  }
  close(report[0]);
  return rc;
}

/* Opens the pipes (our ends non-blocking, all close-on-exec) and watches our ends. */
static int open_streams(proc *p, int *child_end) {
  for (int s = 0; s < p->nstreams; s++) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
    p->out_fd[s] = fds[0];
    child_end[s] = fds[1];
    evutil_make_socket_nonblocking(fds[0]);
    p->out_ev[s] = must(event_new(p->base, fds[0], EV_READ | EV_PERSIST, output_cb, p));
    if (event_add(p->out_ev[s], NULL) < 0) return -EIO;
  }
  return 0;
}

static int watch_exit(proc *p) {
  p->exit_ev = must(event_new(p->base, p->exit_fd, EV_READ, exit_cb, p));
  return event_add(p->exit_ev, NULL) < 0 ? -EIO : 0;
}

/* Starts watching for the child's exit: a pidfd, or a waiter thread signalling an
 * eventfd in threaded mode and where pidfd_open is missing (kernels before 5.3, and
 * valgrind, which does not know the call): each such child then gets the thread. */
static int watch_child(proc *p) {
  if (!p->threaded) {
    if ((p->exit_fd = pidfd_open(p->pid, 0)) >= 0) return watch_exit(p);
    if (errno != ENOSYS) return -errno;
    p->threaded = 1;
  }
  if ((p->exit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) return -errno;
  int rc = watch_exit(p);
  return rc < 0 ? rc : -pthread_create(&p->waiter, NULL, waiter_main, p);
}

/* Whether opts->inputs are valid for a child with nstreams output pipes. */
static int inputs_valid(const proc_opts *opts, int nstreams) {
  if (opts->ninputs > PROC_MAX_INPUTS || (opts->ninputs && !opts->inputs)) return 0;
  for (size_t i = 0; i < opts->ninputs; i++) {
    const proc_input *in = &opts->inputs[i];
    if (in->fd <= nstreams || in->fd > PROC_MAX_INPUT_FD || in->len > PROC_MAX_INPUT_LEN ||
        (in->len && !in->data))
      return 0;
    for (size_t j = 0; j < i; j++)
      if (opts->inputs[j].fd == in->fd) return 0;
  }
  return 1;
}

/* A pipe per input holding its data, the write end closed: in_ends[i] gets the read
 * end (close-on-exec). Returns 0 or -errno (the ends made so far are in in_ends). */
static int open_inputs(const proc_opts *opts, int *in_ends) {
  for (size_t i = 0; i < opts->ninputs; i++) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
    in_ends[i] = fds[0];
    /* Any pipe holds a page: the write is whole and does not block. */
    ssize_t n = write(fds[1], opts->inputs[i].data, opts->inputs[i].len);
    int e = errno;
    close(fds[1]);
    if (n != (ssize_t)opts->inputs[i].len) return n < 0 ? -e : -EIO;
    /* The child reads it as a plain, blocking pipe. */
    if (fcntl(fds[0], F_SETFL, 0) < 0) return -errno;
  }
  return 0;
}

/* Closes what only the child needed: its pipe ends and cwd (each -1 if not open). */
static void close_child_ends(const proc *p, int *child_end, int *in_ends, int *cwd_fd) {
  for (int s = 0; s < p->nstreams; s++)
    if (child_end[s] >= 0) close(child_end[s]);
  for (size_t i = 0; i < PROC_MAX_INPUTS; i++)
    if (in_ends[i] >= 0) close(in_ends[i]);
  if (*cwd_fd >= 0) close(*cwd_fd);
  for (int s = 0; s < p->nstreams; s++) child_end[s] = -1;
  for (size_t i = 0; i < PROC_MAX_INPUTS; i++) in_ends[i] = -1;
  *cwd_fd = -1;
}

/* Starts the child: with posix_spawn, or spawn_cloned when it has a cgroup or inputs. */
static int start_child(proc *p, const proc_opts *opts, const char *path, const char *const *envp,
                       int cwd_fd, const int *child_end, const int *in_ends) {
  if (opts->cgroup_fd >= 0 || opts->ninputs) {
    if (opts->cgroup_fd >= 0 && (p->cg_fd = fcntl(opts->cgroup_fd, F_DUPFD_CLOEXEC, 3)) < 0)
      return -errno;
    struct child_args a = {path,    opts->argv,   envp,          cwd_fd, child_end, p->nstreams,
                           in_ends, opts->inputs, opts->ninputs, -1,     -1};
    return spawn_cloned(p, &a, p->cg_fd);
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  spawn_setup(&fa, &attr, cwd_fd, child_end, p->nstreams);
  /* posix_spawn only reads argv and envp; its prototype predates const. */
  int rc = -posix_spawn(&p->pid, path, &fa, &attr, (char *const *)opts->argv, (char *const *)envp);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc;
}

int proc_spawn(proc **out, struct event_base *base, const proc_opts *opts) {
  static const char *const no_env[] = {NULL};
  if (!out || !base || !opts || !opts->argv || !opts->argv[0] ||
      !inputs_valid(opts, opts->progress_pipe ? 3 : 2))
    return -EINVAL;
  const char *const *envp = opts->envp ? opts->envp : no_env;

  int cwd_fd = -1, child_end[3] = {-1, -1, -1}, in_ends[PROC_MAX_INPUTS], rc;
  for (size_t i = 0; i < PROC_MAX_INPUTS; i++) in_ends[i] = -1;
  proc *p = must(calloc(1, sizeof *p));
  p->base = base;
  p->threaded = opts->threaded;
  p->orphan_kill_ms = opts->orphan_kill_ms;
  p->on_output = opts->on_output;
  p->on_exit = opts->on_exit;
  p->arg = opts->arg;
  p->nstreams = opts->progress_pipe ? 3 : 2;
  p->out_fd[0] = p->out_fd[1] = p->out_fd[2] = p->exit_fd = p->cg_fd = -1;
  p->term_ev = must(evtimer_new(base, term_cb, p));
  p->orphan_ev = must(evtimer_new(base, orphan_cb, p));

  /* The directory is held open so that the lookup and the child see the same one. */
  if (opts->cwd && (cwd_fd = open(opts->cwd, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
    rc = -errno;
    goto fail;
  }
  char path[PATH_MAX];
  if ((rc = resolve(path, sizeof path, cwd_fd >= 0 ? cwd_fd : AT_FDCWD, opts->argv[0], envp)) < 0)
    goto fail;
  if ((rc = open_streams(p, child_end)) < 0 || (rc = open_inputs(opts, in_ends)) < 0 ||
      (rc = start_child(p, opts, path, envp, cwd_fd, child_end, in_ends)) < 0)
    goto fail;
  close_child_ends(p, child_end, in_ends, &cwd_fd);

  if ((rc = watch_child(p)) < 0) goto fail_spawned;
  LOG_DEBUG("proc spawned pid=%d path=%s threaded=%d", p->pid, path, p->threaded);
  *out = p;
  return 0;

fail_spawned:
  LOG_ERROR("proc cannot watch the child, killing it pid=%d err=%s", p->pid, strerror(-rc));
  kill_group(p, SIGKILL);
  /* Blocks only for the moment a SIGKILLed child takes to die, on this rare path. */
  while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
  }
fail:
  close_child_ends(p, child_end, in_ends, &cwd_fd);
  destroy(p);
  return rc;
}

void proc_terminate(proc *p, uint32_t grace_ms) {
  if (p->done || p->term_sent) return;
  p->term_sent = 1;
  kill_group(p, SIGTERM);
  kill_group(p, SIGCONT);
  struct timeval tv = compat_timeout_ms(grace_ms);
  evtimer_add(p->term_ev, &tv);
}

int proc_kill(proc *p, int sig) {
  if (p->done) return -ESRCH;
  return kill_group(p, sig);
}

pid_t proc_pid(const proc *p) { return p->pid; }

int proc_pid_start_ticks(pid_t pid, uint64_t *out) {
  char path[32], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? -ESRCH : -errno;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  int rc = n < 0 ? -errno : 0;
  close(fd);
  if (rc < 0) return rc;
  buf[n] = '\0';
  /* The command name (field 2) may hold spaces and parentheses: count from its end.
   * Field 3 follows ") ", and 22 is 19 fields further on. */
  char *p = strrchr(buf, ')');
  if (!p || !p[1] || !p[2]) return -EINVAL;
  if (p[2] == 'Z' || p[2] == 'X') return -ESRCH; /* exited: nothing left to name */
  p++;
  for (int field = 3; field < 22; field++) {
    p = strchr(p + 1, ' ');
    if (!p) return -EINVAL;
  }
  *out = strtoull(p + 1, NULL, 10);
  return 0;
}

void proc_free(proc *p) {
  if (!p) return;
  p->user_gone = 1;
  if (!p->done) {
    kill_group(p, SIGKILL);
    close_streams(p);
    event_del(p->term_ev);
    event_del(p->orphan_ev);
  }
  settle(p);
}
