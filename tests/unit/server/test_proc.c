/* proc: the subprocess core. The children are this binary itself, re-executed with
 * "--child=<role>" (libuv test-spawn style), so every behaviour is checked against a
 * program whose actions we know. Every behavioural test runs in pidfd mode and threaded
 * mode, and most of them once more in each with the child started in a cgroup of its own
 * (proc_opts.cgroup_fd, under a cgroup root for a temporary directory), where cgroup v2 is
 * usable (not under valgrind, which lacks clone3). The test process is a child
 * subreaper, so that grandchildren orphaned by a run come back to it and can be checked
 * (and reaped) here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "cgroup.h"
#include "proc.h"
#include "testslurp.h"

#define ECHO_OUT_LEN 300000u /* several pipe buffers' worth */
#define ECHO_ERR_LEN 100000u
#define GUARD_MS     20000 /* bound on every wait; generous for valgrind */
#define BURN_CPU_MS  300
#define BURN_MIB     64
#define COMM_TRICKY  "a) (b) 7 7 7 7" /* 15 bytes at most, with the NUL */

static char g_self[PATH_MAX];
/* The cgroup root of the cgroup modes, on a base of its own (cgroup_remove's retries);
 * NULL where cgroup v2 is not usable. */
static cgroup_root *g_cg;
static struct event_base *g_cg_base;

/* ---- the child side ---- */

/* Different patterns per stream, each covering all 256 byte values (7 is odd). */
static uint8_t pattern(int stream, size_t i) {
  return stream == PROC_STDOUT ? (uint8_t)i : (uint8_t)(i * 7 + 3);
}

static void put_pattern(int fd, size_t *off, size_t total, size_t chunk) {
  uint8_t buf[4096];
  size_t n = total - *off < chunk ? total - *off : chunk;
  for (size_t i = 0; i < n; i++) buf[i] = pattern(fd, *off + i);
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, buf + done, n - done);
    if (w < 0) _exit(101);
    done += (size_t)w;
  }
  *off += n;
}

static void child_echo_both(void) {
  size_t o = 0, e = 0;
  while (o < ECHO_OUT_LEN || e < ECHO_ERR_LEN) {
    put_pattern(STDOUT_FILENO, &o, ECHO_OUT_LEN, 4093);
    put_pattern(STDERR_FILENO, &e, ECHO_ERR_LEN, 1021);
  }
}

/* Prints the open descriptors, then what stdin is. */
static void child_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) _exit(102);
  int fds[64], n = 0;
  for (struct dirent *de; (de = readdir(d)) && n < 64;) {
    if (de->d_name[0] == '.') continue;
    int fd = atoi(de->d_name);
    if (fd != dirfd(d)) fds[n++] = fd;
  }
  closedir(d);
  for (int i = 0; i < n; i++) /* /proc lists them ascending; keep it checkable anyway */
    for (int j = i + 1; j < n; j++)
      if (fds[j] < fds[i]) {
        int t = fds[i];
        fds[i] = fds[j];
        fds[j] = t;
      }
  for (int i = 0; i < n; i++) dprintf(STDOUT_FILENO, "%d ", fds[i]);
  char target[PATH_MAX] = "";
  ssize_t len = readlink("/proc/self/fd/0", target, sizeof target - 1);
  if (len >= 0) target[len] = 0;
  dprintf(STDOUT_FILENO, "stdin=%s\n", target);
}

static void burn_cpu(void) {
  struct timespec ts;
  do clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  while (ts.tv_sec * 1000 + ts.tv_nsec / 1000000 < BURN_CPU_MS);
}

static void child_burn(void) {
  size_t sz = (size_t)BURN_MIB << 20;
  volatile char *m = malloc(sz);
  if (!m) _exit(103);
  memset((char *)m, 1, sz);
  burn_cpu();
  _exit(m[sz - 1] == 1 ? 0 : 104);
}

/* A grandchild that nobody waits for burns the CPU (this process only waits for it to
 * close its end of a pipe, at its exit): wait4 of this process cannot count that time. */
static void child_burn_grandchild(void) {
  int sync[2];
  char c;
  if (pipe(sync) < 0) _exit(107);
  pid_t g = fork();
  if (g < 0) _exit(105);
  if (g == 0) {
    close(sync[0]);
    dprintf(STDOUT_FILENO, "gpid=%d\n", (int)getpid());
    burn_cpu();
    _exit(0);
  }
  close(sync[1]);
  if (read(sync[0], &c, 1) != 0) _exit(108);
  _exit(0);
}

static void on_usr1_exit(int sig) {
  (void)sig;
  _exit(42);
}

/* A daemon made the classic way: fork, setsid, fork again (the middle process exits and
 * is reaped here), stdio on /dev/null, so it is in no process group of the run and holds
 * none of its pipes. SIGTERM kills it; SIGUSR1 makes it exit 42. Prints "gpid=<its pid>"
 * once it is set up, then `how` "exit": exits 3; "stay": prints "ready" and waits. */
static void child_daemon(const char *how) {
  int sync[2];
  char c;
  if (pipe(sync) < 0) _exit(107);
  pid_t mid = fork();
  if (mid < 0) _exit(105);
  if (mid == 0) {
    if (setsid() < 0) _exit(109);
    pid_t d = fork();
    if (d != 0) _exit(d < 0 ? 105 : 0);
    signal(SIGUSR1, on_usr1_exit);
    dprintf(STDOUT_FILENO, "gpid=%d\n", (int)getpid());
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++) dup2(null, fd);
    close(null);
    close(sync[0]);
    close(sync[1]);
    for (;;) pause();
  }
  close(sync[1]);
  int st;
  if (waitpid(mid, &st, 0) != mid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) _exit(110);
  if (read(sync[0], &c, 1) != 0) _exit(108);
  if (!strcmp(how, "exit")) _exit(3);
  dprintf(STDOUT_FILENO, "ready\n");
  for (;;) pause();
}

/* Forks a grandchild that ignores SIGTERM and prints its pid. `how`: "hold" keeps the
 * pipes, "release" gives them up (stdout and stderr to /dev/null), "escape" keeps them
 * but leaves the process group. sync_fd, if any, is closed once it is set up. */
static void fork_grandchild(int sync_fd, const char *how) {
  pid_t g = fork();
  if (g < 0) _exit(105);
  if (g > 0) return;
  signal(SIGTERM, SIG_IGN);
  if (!strcmp(how, "escape") && setsid() < 0) _exit(109);
  dprintf(STDOUT_FILENO, "gpid=%d\n", (int)getpid());
  if (!strcmp(how, "release")) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    close(null);
  }
  if (sync_fd >= 0) close(sync_fd);
  for (;;) pause();
}

/* Exits 3 once its grandchild is set up (EOF on sync). */
static void child_orphan(const char *how) {
  int sync[2];
  char c;
  if (pipe(sync) < 0) _exit(107);
  fork_grandchild(sync[1], how);
  close(sync[1]);
  if (read(sync[0], &c, 1) != 0) _exit(108);
  _exit(3);
}

static int child_main(const char *role, char **args) {
  if (!strcmp(role, "exit")) _exit(atoi(args[0]));
  if (!strcmp(role, "raise")) {
    raise(atoi(args[0]));
    _exit(0);
  }
  if (!strcmp(role, "echo-both"))
    child_echo_both();
  else if (!strcmp(role, "fds"))
    child_fds();
  else if (!strcmp(role, "env"))
    for (char **e = environ; *e; e++) dprintf(STDOUT_FILENO, "%s\n", *e);
  else if (!strcmp(role, "cwd")) {
    char buf[PATH_MAX];
    if (!getcwd(buf, sizeof buf)) _exit(106);
    dprintf(STDOUT_FILENO, "%s\n", buf);
  } else if (!strcmp(role, "ids"))
    dprintf(STDOUT_FILENO, "%d %d\n", (int)getpid(), (int)getpgid(0));
  else if (!strcmp(role, "burn"))
    child_burn();
  else if (!strcmp(role, "pause")) {
    dprintf(STDOUT_FILENO, "ready\n");
    for (;;) pause();
  } else if (!strcmp(role, "tree")) {
    fork_grandchild(-1, "hold");
    for (;;) pause();
  } else if (!strcmp(role, "orphan")) {
    child_orphan(args[0]);
  } else if (!strcmp(role, "daemon")) {
    child_daemon(args[0]);
  } else if (!strcmp(role, "burn-grandchild")) {
    child_burn_grandchild();
  } else if (!strcmp(role, "inputs")) {
    /* Descriptors 5 and 9 hold data to read to its end; then the descriptors as "fds". */
    char buf[64];
    for (int fd = 5; fd <= 9; fd += 4) {
      ssize_t n = read(fd, buf, sizeof buf), end = read(fd, buf + (n > 0 ? n : 0), 1);
      if (n < 0 || end != 0) _exit(112);
      dprintf(STDOUT_FILENO, "%d:%.*s ", fd, (int)n, buf);
    }
    child_fds();
  } else if (!strcmp(role, "progress")) {
    dprintf(3, "1/2 half\n");
    dprintf(STDOUT_FILENO, "out\n");
  } else if (!strcmp(role, "comm")) {
    /* A command name that fools a parser of /proc/PID/stat reading up to the first ')'. */
    if (prctl(PR_SET_NAME, COMM_TRICKY) < 0) _exit(111);
    dprintf(STDOUT_FILENO, "ready\n");
    for (;;) pause();
  } else
    _exit(100);
  _exit(0);
}

/* ---- the test side ---- */

typedef struct mode {
  int threaded;
  int cgroup; /* started in a cgroup of its own */
} mode;
static mode M_PIDFD = {0, 0}, M_THREADED = {1, 0}, M_CG_PIDFD = {0, 1}, M_CG_THREADED = {1, 1};
static int g_have_pidfd; /* valgrind 3.19 lacks pidfd_open: pidfd mode is left out there */

typedef struct run {
  struct event_base *base;
  struct event *guard;
  int timed_out;
  int threaded;
  uint32_t orphan_kill_ms;
  int progress_pipe;
  const proc_input *inputs;
  size_t ninputs;
  proc *p;
  pid_t pid;
  struct evbuffer *out[3]; /* stdout, stderr, the progress pipe */
  const char *want;        /* for has_want: text awaited on stdout */
  int exits, status, sig;
  proc_usage usage;
  int kill_rc_in_exit;
  int free_in_output, free_in_exit, freed;
  int cg_fd; /* the run's cgroup (cgroup modes), else -1 */
  char cg_path[PATH_MAX];
} run;

static void on_guard(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ((run *)arg)->timed_out = 1;
}

static void on_output(proc *p, int stream, const uint8_t *data, size_t len, void *arg) {
  run *r = arg;
  assert_false(r->freed);
  assert_ptr_equal(p, r->p);
  assert_true(stream == PROC_STDOUT || stream == PROC_STDERR ||
              (stream == PROC_PROGRESS && r->progress_pipe));
  assert_true(len > 0);
  evbuffer_add(r->out[stream - 1], data, len);
  if (r->free_in_output) {
    proc_free(p);
    r->p = NULL;
    r->freed = 1;
  }
}

static void on_exit_cb(proc *p, int exit_status, int term_signal, const proc_usage *u, void *arg) {
  run *r = arg;
  assert_false(r->freed);
  assert_ptr_equal(p, r->p);
  r->exits++;
  r->status = exit_status;
  r->sig = term_signal;
  r->usage = *u;
  r->kill_rc_in_exit = proc_kill(p, 0);
  if (r->free_in_exit) {
    proc_free(p);
    r->p = NULL;
    r->freed = 1;
  }
}

static void run_init(run *r, void **state) {
  memset(r, 0, sizeof *r);
  r->threaded = ((const mode *)*state)->threaded;
  r->orphan_kill_ms = 2000;
  r->base = event_base_new();
  assert_non_null(r->base);
  r->guard = evtimer_new(r->base, on_guard, r);
  for (int s = 0; s < 3; s++) r->out[s] = evbuffer_new();
  r->cg_fd = -1;
  if (((const mode *)*state)->cgroup) {
    static unsigned n;
    char name[32], err[512] = "";
    snprintf(name, sizeof name, "t%u", ++n);
    if (cgroup_create(&r->cg_fd, g_cg, name, 0, 0, err, sizeof err) != 0)
      fail_msg("cgroup_create: %s", err);
    snprintf(r->cg_path, sizeof r->cg_path, "%s/%s", cgroup_root_path(g_cg), name);
  }
}

static int in_cgroup(const run *r) { return r->cg_fd >= 0; }

static const char *cg_procs(const run *r) {
  char file[PATH_MAX + 16];
  snprintf(file, sizeof file, "%s/cgroup.procs", r->cg_path);
  return slurp(file);
}

static void run_fini(run *r) {
  proc_free(r->p);
  for (int s = 0; s < 3; s++) evbuffer_free(r->out[s]);
  event_free(r->guard);
  event_base_free(r->base);
  /* Nothing of ours is left unreaped: no zombie, no orphan. */
  assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
  if (in_cgroup(r)) {
    /* Nothing is left in the cgroup, which goes at once; our descriptor is still ours. */
    assert_string_equal(cg_procs(r), "");
    assert_int_equal(close(r->cg_fd), 0);
    cgroup_remove(g_cg, strrchr(r->cg_path, '/') + 1);
    assert_int_equal(access(r->cg_path, F_OK), -1);
  }
}

static int run_spawn(run *r, const char *const *argv, const char *const *envp, const char *cwd) {
  proc_opts o = PROC_OPTS_INIT;
  o.argv = argv;
  o.envp = envp;
  o.cwd = cwd;
  o.threaded = r->threaded;
  o.orphan_kill_ms = r->orphan_kill_ms;
  o.cgroup_fd = r->cg_fd;
  o.progress_pipe = r->progress_pipe;
  o.inputs = r->inputs;
  o.ninputs = r->ninputs;
  o.on_output = on_output;
  o.on_exit = on_exit_cb;
  o.arg = r;
  proc *sentinel = (proc *)&sentinel;
  r->p = sentinel;
  int rc = proc_spawn(&r->p, r->base, &o);
  if (rc < 0) {
    assert_ptr_equal(r->p, sentinel); /* *out untouched */
    r->p = NULL;
    return rc;
  }
  r->pid = proc_pid(r->p);
  assert_true(r->pid > 0);
  return 0;
}

/* Spawns this binary as `role` with up to one argument and an empty environment. */
static void run_child(run *r, const char *role, const char *arg) {
  char flag[64];
  snprintf(flag, sizeof flag, "--child=%s", role);
  const char *argv[] = {g_self, flag, arg, NULL};
  assert_int_equal(run_spawn(r, argv, NULL, NULL), 0);
}

static int has_exited(run *r) { return r->exits > 0; }
static int has_want(run *r) {
  return evbuffer_search(r->out[0], r->want, strlen(r->want), NULL).pos >= 0;
}
static int is_gone(run *r) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d", (int)r->pid);
  return access(path, F_OK) != 0;
}

/* Runs the loop until pred holds, failing the test after GUARD_MS. */
static void drive(run *r, int (*pred)(run *)) {
  struct timeval tv = {GUARD_MS / 1000, 0};
  r->timed_out = 0;
  evtimer_add(r->guard, &tv);
  while (!pred(r) && !r->timed_out) event_base_loop(r->base, EVLOOP_ONCE);
  evtimer_del(r->guard);
  assert_false(r->timed_out);
}

static void wait_text(run *r, const char *want) {
  r->want = want;
  drive(r, has_want);
}

/* The whole of an output buffer as a string (tests print short text). */
static const char *buf_str(struct evbuffer *b) {
  evbuffer_add(b, "", 1);
  return (const char *)evbuffer_pullup(b, -1);
}

static const char *stdout_str(run *r) { return buf_str(r->out[0]); }

static void assert_exited(run *r, int status, int sig) {
  drive(r, has_exited);
  event_base_loop(r->base, EVLOOP_NONBLOCK); /* a second on_exit would show up here */
  assert_int_equal(r->exits, 1);
  assert_int_equal(r->status, status);
  assert_int_equal(r->sig, sig);
  assert_int_equal(r->kill_rc_in_exit, -ESRCH);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* At least `ms` have passed since t0, by libevent's timers: they run on the coarse
 * monotonic clock, which may fire them up to a tick (at most 10 ms) early. */
static void assert_waited(int64_t t0, int64_t ms) {
  int64_t waited = now_ms() - t0;
  if (waited < ms - 10) fail_msg("waited %lld ms, expected %lld", (long long)waited, (long long)ms);
}

static void on_alarm(int sig) { (void)sig; }

/* Reaps an orphaned grandchild (reparented to us, the subreaper) and returns its wait
 * status. It should be dying already; an alarm bounds the wait (pidfd_open, which
 * could bound it on the loop, is missing under valgrind), and a grandchild still alive
 * then is killed, so that a failure does not leak it into later tests. */
static int reap_orphan(pid_t pid) {
  struct sigaction sa = {.sa_handler = on_alarm}, old; /* no SA_RESTART: EINTR */
  sigaction(SIGALRM, &sa, &old);
  alarm(GUARD_MS / 1000);
  int st;
  pid_t r = waitpid(pid, &st, 0);
  alarm(0);
  sigaction(SIGALRM, &old, NULL);
  if (r != pid) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    fail_msg("grandchild %d still alive", (int)pid);
  }
  return st;
}

static pid_t parse_gpid(run *r) {
  int gpid = 0;
  assert_int_equal(sscanf(stdout_str(r), "gpid=%d", &gpid), 1);
  return (pid_t)gpid;
}

static void test_exit_codes(void **state) {
  static const char *const codes[] = {"0", "1", "42", "255"};
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    run r;
    run_init(&r, state);
    run_child(&r, "exit", codes[i]);
    assert_exited(&r, atoi(codes[i]), 0);
    assert_int_equal(evbuffer_get_length(r.out[0]) + evbuffer_get_length(r.out[1]), 0);
    run_fini(&r);
  }
}

/* The child dies of the signal it raises even though we block one and ignore the
 * other: the mask and the dispositions are reset for it. */
static void test_signal_death(void **state) {
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, &old_mask);
  struct sigaction ign = {.sa_handler = SIG_IGN}, old_sa;
  sigaction(SIGUSR2, &ign, &old_sa);

  static const int sigs[] = {SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
    char num[16];
    snprintf(num, sizeof num, "%d", sigs[i]);
    run r;
    run_init(&r, state);
    run_child(&r, "raise", num);
    assert_exited(&r, -1, sigs[i]);
    run_fini(&r);
  }
  sigaction(SIGUSR2, &old_sa, NULL);
  sigprocmask(SIG_SETMASK, &old_mask, NULL);
}

/* A scratch directory with a link to this binary and a non-executable file. */
typedef struct scratch {
  char dir[64], child[128], noexec[128];
} scratch;

static void scratch_init(scratch *s) {
  strcpy(s->dir, "/tmp/pq-proc-XXXXXX");
  assert_non_null(mkdtemp(s->dir));
  snprintf(s->child, sizeof s->child, "%s/pq-child", s->dir);
  snprintf(s->noexec, sizeof s->noexec, "%s/pq-noexec", s->dir);
  assert_int_equal(symlink(g_self, s->child), 0);
  int fd = open(s->noexec, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "#!/bin/sh\n", 10), 10);
  close(fd);
}

static void scratch_fini(scratch *s) {
  unlink(s->child);
  unlink(s->noexec);
  rmdir(s->dir);
}

static int spawn_rc(void **state, const char *const *argv, const char *const *envp,
                    const char *cwd) {
  run r;
  run_init(&r, state);
  int rc = run_spawn(&r, argv, envp, cwd);
  if (rc == 0) assert_exited(&r, 7, 0);
  run_fini(&r);
  return rc;
}

static void test_spawn_errors(void **state) {
  scratch s;
  scratch_init(&s);
  const char *missing[] = {"/nonexistent/pq-none", NULL};
  assert_int_equal(spawn_rc(state, missing, NULL, NULL), -ENOENT);
  const char *noexec[] = {s.noexec, NULL};
  assert_int_equal(spawn_rc(state, noexec, NULL, NULL), -EACCES);
  const char *dir[] = {s.dir, NULL};
  assert_int_equal(spawn_rc(state, dir, NULL, NULL), -EACCES);
  const char *by_name[] = {"pq-noexec", NULL};
  char path_env[128];
  snprintf(path_env, sizeof path_env, "PATH=/nonexistent:%s", s.dir);
  const char *env[] = {path_env, NULL};
  assert_int_equal(spawn_rc(state, by_name, env, NULL), -EACCES);
  const char *none[] = {"pq-none", NULL};
  assert_int_equal(spawn_rc(state, none, env, NULL), -ENOENT);
  const char *empty[] = {"", NULL};
  assert_int_equal(spawn_rc(state, empty, env, NULL), -ENOENT);
  const char *ok[] = {g_self, "--child=exit", "7", NULL};
  assert_int_equal(spawn_rc(state, ok, NULL, "/nonexistent"), -ENOENT);
  const char *no_argv0[] = {NULL};
  assert_int_equal(spawn_rc(state, no_argv0, NULL, NULL), -EINVAL);
  scratch_fini(&s);
}

/* argv[0] is looked up in the child's PATH, never the server's; an empty entry is the
 * child's cwd; without PATH the default applies. */
static void test_path_lookup(void **state) {
  scratch s;
  scratch_init(&s);
  char *saved = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
  setenv("PATH", s.dir, 1);

  const char *argv[] = {"pq-child", "--child=exit", "7", NULL};
  char path_env[128];
  snprintf(path_env, sizeof path_env, "PATH=/nonexistent:%s", s.dir);
  const char *found[] = {"A=1", path_env, NULL};
  assert_int_equal(spawn_rc(state, argv, found, NULL), 0);
  const char *elsewhere[] = {"PATH=/nonexistent", NULL};
  assert_int_equal(spawn_rc(state, argv, elsewhere, NULL), -ENOENT);
  const char *cwd_entry[] = {"PATH=/nonexistent:", NULL};
  assert_int_equal(spawn_rc(state, argv, cwd_entry, s.dir), 0);
  assert_int_equal(spawn_rc(state, argv, NULL, NULL), -ENOENT); /* default PATH */
  const char *sh[] = {"sh", "-c", "exit 7", NULL};
  assert_int_equal(spawn_rc(state, sh, NULL, NULL), 0); /* /bin/sh via the default */

  if (saved)
    setenv("PATH", saved, 1);
  else
    unsetenv("PATH");
  free(saved);
  scratch_fini(&s);
}

static void assert_stream(struct evbuffer *b, int stream, size_t len) {
  assert_int_equal(evbuffer_get_length(b), len);
  const uint8_t *d = evbuffer_pullup(b, -1);
  for (size_t i = 0; i < len; i++)
    if (d[i] != pattern(stream, i)) fail_msg("stream %d differs at byte %zu", stream, i);
}

/* Both streams arrive apart, whole, in order, byte-exact, before on_exit. */
static void test_output(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "echo-both", NULL);
  assert_exited(&r, 0, 0);
  assert_stream(r.out[0], PROC_STDOUT, ECHO_OUT_LEN);
  assert_stream(r.out[1], PROC_STDERR, ECHO_ERR_LEN);
  run_fini(&r);
}

/* Only 0, 1, 2 reach the child, stdin is /dev/null, even with leaky fds around. */
static void test_fds(void **state) {
  int leak1 = dup(STDOUT_FILENO); /* no O_CLOEXEC on purpose */
  int leak2 = open("/dev/null", O_RDONLY);
  assert_true(leak1 > 2 && leak2 > 2);
  run r;
  run_init(&r, state);
  run_child(&r, "fds", NULL);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "0 1 2 stdin=/dev/null\n");
  assert_int_equal(evbuffer_get_length(r.out[1]), 0);
  run_fini(&r);
  close(leak1);
  close(leak2);
}

/* With progress_pipe the child's descriptor 3 is a third pipe, read as PROC_PROGRESS,
 * and still nothing else reaches the child. */
static void test_progress_pipe(void **state) {
  int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC on purpose */
  run r;
  run_init(&r, state);
  r.progress_pipe = 1;
  run_child(&r, "fds", NULL);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "0 1 2 3 stdin=/dev/null\n");
  run_fini(&r);
  close(leak);

  run_init(&r, state);
  r.progress_pipe = 1;
  run_child(&r, "progress", NULL);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "out\n");
  assert_string_equal(buf_str(r.out[2]), "1/2 half\n");
  assert_int_equal(evbuffer_get_length(r.out[1]), 0);
  run_fini(&r);
}

/* Inputs: the child reads each one's data, then end-of-file, on the descriptor it
 * names, given in any order; nothing else reaches it. Bad inputs
 * are refused before anything starts. */
static void test_inputs(void **state) {
  const proc_input in[] = {{9, "nine", 4}, {5, "five", 4}};
  run r;
  run_init(&r, state);
  r.progress_pipe = 1;
  r.inputs = in;
  r.ninputs = 2;
  run_child(&r, "inputs", NULL);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "5:five 9:nine 0 1 2 3 5 9 stdin=/dev/null\n");
  run_fini(&r);

  static const char big[PROC_MAX_INPUT_LEN + 1];
  const proc_input bad[][2] = {
      {{3, "x", 1}},                     /* the progress pipe's descriptor */
      {{2, "x", 1}},                     /* stderr */
      {{PROC_MAX_INPUT_FD + 1, "x", 1}}, /* too high */
      {{4, "x", 1}, {4, "y", 1}},        /* twice */
      {{4, big, sizeof big}},            /* too long */
  };
  const size_t nbad[] = {1, 1, 1, 2, 1};
  for (size_t i = 0; i < sizeof nbad / sizeof *nbad; i++) {
    run_init(&r, state);
    r.progress_pipe = 1;
    r.inputs = bad[i];
    r.ninputs = nbad[i];
    const char *argv[] = {g_self, "--child=exit", "0", NULL};
    assert_int_equal(run_spawn(&r, argv, NULL, NULL), -EINVAL);
    run_fini(&r);
  }
}

/* The progress pipe counts like the others: a grandchild that gave up stdout and stderr
 * but holds it keeps the process from being done until the orphan kill. */
static void test_progress_pipe_held(void **state) {
  run r;
  run_init(&r, state);
  r.progress_pipe = 1;
  r.orphan_kill_ms = 100;
  int64_t t0 = now_ms();
  run_child(&r, "orphan", "release");
  assert_exited(&r, 3, 0);
  assert_waited(t0, 100);
  int st = reap_orphan(parse_gpid(&r));
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
  run_fini(&r);
}

static void test_env(void **state) {
  run r;
  run_init(&r, state);
  const char *argv[] = {g_self, "--child=env", NULL};
  const char *env[] = {"A=1", "B=two words", "EMPTY=", NULL};
  assert_int_equal(run_spawn(&r, argv, env, NULL), 0);
  assert_exited(&r, 0, 0);
  assert_string_equal(stdout_str(&r), "A=1\nB=two words\nEMPTY=\n");
  run_fini(&r);
}

static void test_cwd(void **state) {
  scratch s;
  scratch_init(&s);
  run r;
  run_init(&r, state);
  const char *argv[] = {g_self, "--child=cwd", NULL};
  assert_int_equal(run_spawn(&r, argv, NULL, s.dir), 0);
  assert_exited(&r, 0, 0);
  char want[PATH_MAX + 1];
  assert_non_null(realpath(s.dir, want));
  strcat(want, "\n");
  assert_string_equal(stdout_str(&r), want);
  run_fini(&r);
  scratch_fini(&s);
}

/* The child leads a process group of its own. */
static void test_pgid(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "ids", NULL);
  assert_exited(&r, 0, 0);
  int pid = 0, pgid = 0;
  assert_int_equal(sscanf(stdout_str(&r), "%d %d", &pid, &pgid), 2);
  assert_int_equal(pid, r.pid);
  assert_int_equal(pgid, r.pid);
  assert_int_not_equal(pgid, getpgid(0));
  run_fini(&r);
}

static void test_kill(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  assert_int_equal(proc_kill(r.p, 0), 0);
  assert_int_equal(proc_kill(r.p, -1), -EINVAL);
  assert_int_equal(proc_kill(r.p, SIGUSR1), 0);
  assert_exited(&r, -1, SIGUSR1);
  assert_int_equal(proc_kill(r.p, SIGKILL), -ESRCH);
  proc_terminate(r.p, 0); /* done: a no-op */
  run_fini(&r);
}

/* SIGTERM kills the main process; the grandchild ignores it and holds the pipes until
 * the SIGKILL after the grace period; then nothing of the group is left. */
static void test_terminate_tree(void **state) {
  run r;
  run_init(&r, state);
  r.orphan_kill_ms = 60000; /* only the grace period may end it */
  run_child(&r, "tree", NULL);
  wait_text(&r, "\n");
  pid_t gpid = parse_gpid(&r);
  int64_t t0 = now_ms();
  proc_terminate(r.p, 100);
  proc_terminate(r.p, 0); /* idempotent: does not shorten the grace */
  assert_exited(&r, -1, SIGTERM);
  assert_waited(t0, 100);
  int st = reap_orphan(gpid);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
  assert_int_equal(kill(-r.pid, 0), -1);
  assert_int_equal(errno, ESRCH);
  run_fini(&r);
}

/* The main process exits, a grandchild keeps the pipes: the group is killed after
 * orphan_kill_ms and on_exit reports the main process's own status. */
static void test_orphan(void **state) {
  run r;
  run_init(&r, state);
  r.orphan_kill_ms = 100;
  int64_t t0 = now_ms();
  run_child(&r, "orphan", "hold");
  assert_exited(&r, 3, 0);
  assert_waited(t0, 100);
  int st = reap_orphan(parse_gpid(&r));
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
  assert_int_equal(kill(-r.pid, 0), -1);
  assert_int_equal(errno, ESRCH);
  run_fini(&r);
}

/* A grandchild that let go of the pipes does not delay the end, but does not outlive
 * it either: the group gets a SIGKILL when done. */
static void test_group_killed_when_done(void **state) {
  run r;
  run_init(&r, state);
  r.orphan_kill_ms = 60000;
  run_child(&r, "orphan", "release");
  assert_exited(&r, 3, 0);
  int st = reap_orphan(parse_gpid(&r));
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
  run_fini(&r);
}

/* A grandchild that left the group with the pipes cannot be killed through it: the
 * pipes are given up orphan_kill_ms after the group kill and the run still ends. In a
 * cgroup the group kill reaches it, and the run ends with that. */
static void test_escaped_holder(void **state) {
  run r;
  run_init(&r, state);
  r.orphan_kill_ms = 100;
  int64_t t0 = now_ms();
  run_child(&r, "orphan", "escape");
  assert_exited(&r, 3, 0);
  pid_t gpid = parse_gpid(&r);
  if (!in_cgroup(&r)) assert_int_equal(kill(gpid, SIGKILL), 0); /* still alive: ours to clean up */
  int st = reap_orphan(gpid);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
  assert_waited(t0, in_cgroup(&r) ? 100 : 200);
  run_fini(&r);
}

static void test_rusage(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "burn", NULL);
  assert_exited(&r, 0, 0);
  assert_true(r.usage.user_cpu_ms + r.usage.sys_cpu_ms >= BURN_CPU_MS - 10);
  assert_true(r.usage.max_rss_kb >= (uint64_t)BURN_MIB * 1024);
  run_fini(&r);
}

/* Freed while running: no callback, and the main process is still reaped. */
static void test_free_running(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  proc_free(r.p);
  r.p = NULL;
  r.freed = 1;
  drive(&r, is_gone);
  assert_int_equal(r.exits, 0);
  assert_int_equal(waitpid(r.pid, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
  run_fini(&r);
}

/* Freed from inside on_output, mid-stream: no more callbacks, still reaped. */
static void test_free_in_output(void **state) {
  run r;
  run_init(&r, state);
  r.free_in_output = 1;
  run_child(&r, "echo-both", NULL);
  drive(&r, is_gone);
  assert_true(r.freed);
  assert_int_equal(r.exits, 0);
  run_fini(&r);
}

/* Freed from inside on_exit. */
static void test_free_in_exit(void **state) {
  run r;
  run_init(&r, state);
  r.free_in_exit = 1;
  run_child(&r, "echo-both", NULL);
  assert_exited(&r, 0, 0);
  assert_true(r.freed);
  proc_free(NULL);
  run_fini(&r);
}

/* ---- cgroups ---- */

/* The child runs in the cgroup it was given: its /proc/PID/cgroup names it, and the
 * cgroup lists it. */
static void test_cgroup_member(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "pause", NULL);
  wait_text(&r, "ready\n");
  char file[64], line[PATH_MAX], want[32], procs[64];
  snprintf(file, sizeof file, "/proc/%d/cgroup", (int)r.pid);
  const char *l = strstr(slurp(file), "0::");
  snprintf(line, sizeof line, "%.*s", l ? (int)strcspn(l + 3, "\n") : 0, l ? l + 3 : "");
  snprintf(procs, sizeof procs, "%s", cg_procs(&r));
  proc_terminate(r.p, 0); /* before any assertion, so that a failure leaves nothing running */
  assert_exited(&r, -1, SIGTERM);
  /* "0::/path" is the cgroup below the hierarchy's mount point. */
  size_t len = strlen(line), plen = strlen(r.cg_path);
  if (len == 0 || len > plen || strcmp(r.cg_path + plen - len, line) != 0)
    fail_msg("child in \"%s\", not in %s", line, r.cg_path);
  snprintf(want, sizeof want, "%d\n", (int)r.pid);
  assert_string_equal(procs, want);
  run_fini(&r);
}

/* A daemon's end: killed by signal `sig`, or (0) alive and well, which SIGUSR1 shows
 * (it exits 42; had a SIGKILL or SIGTERM been sent to it, its death would be that). */
static void expect_daemon(pid_t pid, int sig) {
  if (!sig) assert_int_equal(kill(pid, SIGUSR1), 0);
  int st = reap_orphan(pid);
  if (sig)
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == sig);
  else
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 42);
}

/* A daemon (setsid and a double fork, holding nothing of the run) is out of the run's
 * process group. In a cgroup it still gets proc_terminate's SIGTERM, and the SIGKILL at
 * completion when the main process exits without it; without one it survives both. */
static void test_daemon(void **state) {
  run r;
  run_init(&r, state);
  r.orphan_kill_ms = 60000;
  run_child(&r, "daemon", "stay");
  wait_text(&r, "ready\n");
  pid_t d = parse_gpid(&r);
  pid_t dpgid = getpgid(d);
  proc_terminate(r.p, 60000); /* no SIGKILL to the group before completion */
  assert_exited(&r, -1, SIGTERM);
  assert_int_not_equal(dpgid, r.pid);
  expect_daemon(d, in_cgroup(&r) ? SIGTERM : 0);
  run_fini(&r);

  run_init(&r, state);
  run_child(&r, "daemon", "exit");
  assert_exited(&r, 3, 0);
  expect_daemon(parse_gpid(&r), in_cgroup(&r) ? SIGKILL : 0);
  run_fini(&r);
}

/* Exec failures in the child (the file is found, but exec refuses it) are reported like
 * posix_spawn's, in every mode, and leave no process behind. */
static void test_exec_failure(void **state) {
  /* valgrind runs a vfork-style child (posix_spawn's, and ours in a cgroup) as a fork
   * of itself, which dies with the exec (its preload library tells it is there). */
  const char *preload = getenv("LD_PRELOAD");
  if (preload && strstr(preload, "vgpreload")) {
    print_message("under valgrind an exec failure kills a vfork-style child: not tested\n");
    skip();
  }
  scratch s;
  scratch_init(&s);
  static const struct {
    const char *name, *text;
    int rc;
  } cases[] = {{"pq-no-interp", "#!/nonexistent/interp\n", -ENOENT},
               {"pq-bad-interp", NULL, -EACCES}, /* the interpreter is pq-noexec */
               {"pq-not-a-program", "just text\n", -ENOEXEC}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char path[192], text[192];
    snprintf(path, sizeof path, "%s/%s", s.dir, cases[i].name);
    snprintf(text, sizeof text, "#!%s\n", s.noexec);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
    assert_true(fd >= 0);
    const char *t = cases[i].text ? cases[i].text : text;
    assert_int_equal(write(fd, t, strlen(t)), (ssize_t)strlen(t));
    close(fd);
    const char *argv[] = {path, NULL};
    assert_int_equal(spawn_rc(state, argv, NULL, NULL), cases[i].rc);
    unlink(path);
  }
  scratch_fini(&s);
}

/* on_exit's CPU time: in a cgroup, the whole tree's, a grandchild nobody waited for
 * included; otherwise wait4's, which cannot see that grandchild. */
static void test_tree_cpu(void **state) {
  run r;
  run_init(&r, state);
  run_child(&r, "burn-grandchild", NULL);
  assert_exited(&r, 0, 0);
  int st = reap_orphan(parse_gpid(&r));
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  uint64_t cpu = r.usage.user_cpu_ms + r.usage.sys_cpu_ms;
  if (in_cgroup(&r) ? cpu < BURN_CPU_MS - 10 : cpu >= BURN_CPU_MS / 2)
    fail_msg("CPU %llu ms with a grandchild burning %d ms", (unsigned long long)cpu, BURN_CPU_MS);
  run_fini(&r);
}

/* ---- start times ---- */

/* Field 22 of /proc/PID/stat, parsed here on its own: the command name (field 2) is
 * whatever is between the first '(' and the last ')'. `raw` receives the whole line.
 * Returns 0 if the line cannot be parsed. */
static uint64_t stat_start_ticks(pid_t pid, char *raw, size_t cap) {
  char path[32];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  snprintf(raw, cap, "%s", slurp(path));
  size_t end = strlen(raw);
  while (end > 0 && raw[end - 1] != ')') end--;
  char rest[1024], *save = NULL, *tok = NULL;
  snprintf(rest, sizeof rest, "%s", raw + end);
  int field = 2;
  for (char *p = rest; end > 0 && field < 22 && (tok = strtok_r(p, " ", &save)) != NULL; p = NULL)
    field++;
  return field == 22 ? strtoull(tok, NULL, 10) : 0;
}

/* proc_pid_start_ticks agrees with /proc for this process and for a child whose command
 * name holds ") ("; a process that has exited (a zombie) or never was is -ESRCH, with
 * *out untouched. */
static void test_start_ticks(void **state) {
  char raw[1024];
  uint64_t ticks = 0;
  assert_int_equal(proc_pid_start_ticks(getpid(), &ticks), 0);
  uint64_t own = stat_start_ticks(getpid(), raw, sizeof raw);
  assert_true(own > 0);
  assert_int_equal(ticks, own);

  run r;
  run_init(&r, state);
  run_child(&r, "comm", NULL);
  wait_text(&r, "ready\n");
  uint64_t want = stat_start_ticks(r.pid, raw, sizeof raw);
  int rc = proc_pid_start_ticks(r.pid, &ticks);
  proc_terminate(r.p, 0); /* before any assertion, so that a failure leaves nothing running */
  assert_exited(&r, -1, SIGTERM);
  assert_non_null(strstr(raw, "(" COMM_TRICKY ")"));
  assert_int_equal(rc, 0);
  assert_true(want > 0);
  assert_int_equal(ticks, want);
  assert_true(ticks >= own);
  run_fini(&r);

  pid_t z = fork();
  assert_true(z >= 0);
  if (z == 0) _exit(0);
  siginfo_t si;
  assert_int_equal(waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT), 0); /* a zombie now */
  ticks = 7;
  assert_int_equal(proc_pid_start_ticks(z, &ticks), -ESRCH);
  assert_int_equal(waitpid(z, NULL, 0), z);
  long pid_max = atol(slurp("/proc/sys/kernel/pid_max"));
  assert_true(pid_max > 0);
  assert_int_equal(proc_pid_start_ticks((pid_t)pid_max, &ticks), -ESRCH);
  assert_int_equal(ticks, 7);
}

#define BOTH(f) \
  {#f "/pidfd", f, NULL, NULL, &M_PIDFD}, { #f "/threaded", f, NULL, NULL, &M_THREADED }
#define CG(f)                                            \
  {#f "/cgroup-pidfd", f, NULL, NULL, &M_CG_PIDFD}, {    \
#f "/cgroup-threaded", f, NULL, NULL, &M_CG_THREADED \
  }
#define ALL(f) BOTH(f), CG(f)

/* Removes what failed tests left in the runs' cgroups (a passing test removes its own),
 * bounded, then the root. */
static void cgroup_cleanup(void) {
  if (!g_cg) return;
  char root[PATH_MAX];
  snprintf(root, sizeof root, "%s", cgroup_root_path(g_cg));
  if (cgroup_root_sweep(g_cg) > 0) {
    for (int i = 0; i < 50 && rmdir(root) != 0 && errno == EBUSY; i++) {
      struct timeval tv = {0, 100000};
      event_base_loopexit(g_cg_base, &tv);
      event_base_dispatch(g_cg_base);
    }
  }
  cgroup_root_free(g_cg);
  event_base_free(g_cg_base);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strncmp(argv[1], "--child=", 8) == 0) return child_main(argv[1] + 8, argv + 2);
  ssize_t len = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
  if (len <= 0) return 1;
  g_self[len] = 0;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) return 1;
  int fd = pidfd_open(getpid(), 0);
  g_have_pidfd = fd >= 0;
  if (fd >= 0) close(fd);
  char cg_dir[] = "/tmp/pq-proc-cg-XXXXXX", why[512] = "";
  if (!mkdtemp(cg_dir) || !(g_cg_base = event_base_new())) return 1;
  int cg_rc = cgroup_root_open(&g_cg, g_cg_base, "auto", cg_dir, why, sizeof why);
  if (cg_rc < 0 && cg_rc != -ENOTSUP) return 1;
  struct CMUnitTest tests[] = {
      ALL(test_exit_codes),
      ALL(test_signal_death),
      ALL(test_spawn_errors),
      ALL(test_path_lookup),
      ALL(test_output),
      ALL(test_fds),
      ALL(test_progress_pipe),
      ALL(test_progress_pipe_held),
      ALL(test_inputs),
      ALL(test_env),
      ALL(test_cwd),
      ALL(test_pgid),
      ALL(test_kill),
      ALL(test_terminate_tree),
      ALL(test_orphan),
      ALL(test_group_killed_when_done),
      ALL(test_escaped_holder),
      ALL(test_rusage),
      ALL(test_free_running),
      ALL(test_free_in_output),
      ALL(test_free_in_exit),
      ALL(test_exec_failure),
      ALL(test_daemon),
      ALL(test_tree_cpu),
      CG(test_cgroup_member),
      {"test_start_ticks", test_start_ticks, NULL, NULL, &M_THREADED},
  };
  size_t n = 0;
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
    const mode *m = tests[i].initial_state;
    if ((g_have_pidfd || m->threaded) && (g_cg || !m->cgroup)) tests[n++] = tests[i];
  }
  if (!g_have_pidfd) fprintf(stderr, "pidfd_open is missing here: pidfd mode not tested\n");
  if (!g_cg) fprintf(stderr, "cgroup v2 is not usable here (%s): cgroup mode not tested\n", why);
  int rc = _cmocka_run_group_tests("test_proc", tests, n, NULL, NULL);
  cgroup_cleanup();
  rmdir(cg_dir);
  libevent_global_shutdown();
  return rc;
}
