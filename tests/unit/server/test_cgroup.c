/* cgroup: runs in cgroups (v2), against the real hierarchy. Each test gets a root of its
 * own (a temporary data directory names it) and its processes are forked members that
 * move themselves into a cgroup, some the way a daemon leaves its parent (fork, setsid,
 * fork again). The test process is a child subreaper, so every member, daemons included,
 * is ours to reap and check. Where cgroup v2 is not usable (no writable cgroup2, no
 * cgroup.kill, no clone3: valgrind) cgroup_root_open says -ENOTSUP and the tests that need
 * a root are skipped with its message. The teardown kills, reaps and removes whatever a
 * test left, also when it failed. */
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
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "cgroup.h"
#include "testslurp.h"

#define GUARD_S     10  /* bound on every wait */
#define BURN_MS     100 /* CPU a burner member spends */
#define MAX_MEMBERS 8

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

struct fx {
  struct event_base *base;
  struct event *guard;
  int timed_out;
  char dir[64];   /* the data directory: names the root */
  char other[64]; /* a second data directory, for tests that need one */
  cgroup_root *r; /* NULL: cgroup v2 is not usable here (why says why) */
  char why[512];
  char root[PATH_MAX];  /* the root's path, kept for the clean-up */
  char extra[PATH_MAX]; /* another root a test made, removed by the clean-up too */
};

/* ---- helpers ---------------------------------------------------------------------- */

static void on_guard(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  ((struct fx *)arg)->timed_out = 1;
}

static void on_alarm(int sig) { (void)sig; }

/* waitpid bounded by an alarm (no SA_RESTART: EINTR). Returns what waitpid did. */
static pid_t wait_bounded(pid_t pid, int *st, struct rusage *ru) {
  struct sigaction sa = {.sa_handler = on_alarm}, old;
  sigaction(SIGALRM, &sa, &old);
  alarm(GUARD_S);
  pid_t r = wait4(pid, st, 0, ru);
  alarm(0);
  sigaction(SIGALRM, &old, NULL);
  return r;
}

/* Reaps member `pid`, which should be dying already; returns its wait status. */
static int reap(pid_t pid) {
  int st = 0;
  if (wait_bounded(pid, &st, NULL) != pid)
    fail_msg("member %d did not end within %d s", (int)pid, GUARD_S);
  return st;
}

static void assert_killed_by(pid_t pid, int sig) {
  int st = reap(pid);
  if (!WIFSIGNALED(st) || WTERMSIG(st) != sig)
    fail_msg("member %d: wait status 0x%x, expected death by signal %d", (int)pid, st, sig);
}

static int write_at(int dirfd, const char *file, const char *s) {
  int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = write(fd, s, strlen(s)) < 0 ? -errno : 0;
  close(fd);
  return rc;
}

/* The pids in the cgroup at `path`, sorted as the kernel lists them; returns how many. */
static size_t procs(const char *path, pid_t *out, size_t cap) {
  char file[PATH_MAX + 16];
  snprintf(file, sizeof file, "%s/cgroup.procs", path);
  const char *s = slurp(file);
  size_t n = 0;
  for (char *end; *s; s = end) {
    long v = strtol(s, &end, 10);
    if (end == s) break;
    if (n < cap) out[n] = (pid_t)v;
    n++;
  }
  return n;
}

static int has_pid(const pid_t *pids, size_t n, pid_t pid) {
  for (size_t i = 0; i < n; i++)
    if (pids[i] == pid) return 1;
  return 0;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static void burn_cpu(void) {
  struct timespec ts;
  do clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  while (ts.tv_sec * 1000 + ts.tv_nsec / 1000000 < BURN_MS);
}

enum { M_IGNORE_TERM = 1, M_DAEMON = 2, M_BURN = 4, M_BIG = 8 };
#define BIG_MIB 256

/* Forks a member of the cgroup at `cgfd`: it moves itself in (writing 0 to cgroup.procs).
 * M_DAEMON: it forks again and the middle process exits (reaped here), the member
 * leaving the session with setsid, like a daemon; M_IGNORE_TERM: it ignores SIGTERM;
 * M_BURN: it spends BURN_MS of CPU, then exits 0 instead of waiting for signals; M_BIG:
 * it fills BIG_MIB of memory, which makes its exit take a while (freeing it comes before
 * it leaves the cgroup).
 * Returns the member's pid once it is in place (after its burn). */
static pid_t member(int cgfd, int flags) {
  int ready[2];
  assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(ready[0]);
    if (write_at(cgfd, "cgroup.procs", "0") < 0) _exit(100);
    if (flags & M_DAEMON) {
      pid_t d = fork();
      if (d != 0) _exit(d < 0 ? 101 : 0);
      if (setsid() < 0) _exit(102);
    }
    if (flags & M_IGNORE_TERM) signal(SIGTERM, SIG_IGN);
    if (flags & M_BURN) burn_cpu();
    if (flags & M_BIG) {
      char *big = malloc((size_t)BIG_MIB << 20);
      if (!big) _exit(104);
      memset(big, 1, (size_t)BIG_MIB << 20);
    }
    pid_t me = getpid();
    if (write(ready[1], &me, sizeof me) != (ssize_t)sizeof me) _exit(103);
    if (flags & M_BURN) _exit(0);
    for (;;) pause();
  }
  close(ready[1]);
  pid_t got = 0;
  ssize_t n = read(ready[0], &got, sizeof got); /* EOF if the member failed */
  close(ready[0]);
  if (flags & M_DAEMON) {
    int st = reap(pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  assert_int_equal(n, sizeof got);
  return got;
}

/* Creates "<root>/<name>" with cgroup_create and returns its descriptor. */
static int create(struct fx *f, const char *name) {
  char err[512] = "";
  int fd = -1;
  int rc = cgroup_create(&fd, f->r, name, 0, 0, err, sizeof err);
  if (rc != 0) fail_msg("cgroup_create %s: %d %s", name, rc, err);
  return fd;
}

static const char *path_of(struct fx *f, const char *name) {
  static char buf[2][PATH_MAX + 64];
  static int i;
  i ^= 1;
  snprintf(buf[i], sizeof buf[i], "%s/%s", f->root, name);
  return buf[i];
}

/* Runs the loop (cgroup_remove's retries) until `path` is gone; fails after GUARD_S. */
static void drive_until_gone(struct fx *f, const char *path) {
  struct timeval tv = {GUARD_S, 0};
  f->timed_out = 0;
  evtimer_add(f->guard, &tv);
  while (exists(path) && !f->timed_out) event_base_loop(f->base, EVLOOP_ONCE);
  evtimer_del(f->guard);
  if (exists(path)) fail_msg("%s still there after %d s", path, GUARD_S);
}

static void need_root(struct fx *f) {
  if (f->r) return;
  print_message("cgroup v2 is not usable here, skipped: %s\n", f->why);
  skip();
}

/* ---- fixture ---------------------------------------------------------------------- */

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  strcpy(f->dir, "/tmp/pq-cg-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  strcpy(f->other, "/tmp/pq-cg2-XXXXXX");
  assert_non_null(mkdtemp(f->other));
  f->base = event_base_new();
  assert_non_null(f->base);
  f->guard = evtimer_new(f->base, on_guard, f);
  assert_non_null(f->guard);
  int rc = cgroup_root_open(&f->r, f->base, "auto", f->dir, f->why, sizeof f->why);
  if (rc == 0)
    snprintf(f->root, sizeof f->root, "%s", cgroup_root_path(f->r));
  else if (rc != -ENOTSUP)
    fail_msg("cgroup_root_open: %d %s", rc, f->why);
  *state = f;
  return 0;
}

/* Removes the cgroup tree at `path`, deepest first. */
static void remove_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    char sub[PATH_MAX + 256];
    /* A truncated path would name another directory. */
    if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= sizeof sub) continue;
    remove_tree(sub);
  }
  closedir(d);
  rmdir(path);
}

/* Kills everything in the root at `root` (its cgroup.kill reaches every cgroup below). */
static void kill_root(const char *root) {
  if (!root[0]) return;
  int fd = open(root, O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    write_at(fd, "cgroup.kill", "1");
    close(fd);
  }
}

/* What a test left, also when it failed: its roots' members are killed and reaped (all
 * of them are ours), then the roots are removed. */
static int teardown(void **state) {
  struct fx *f = *state;
  cgroup_root_free(f->r);
  kill_root(f->root);
  kill_root(f->extra);
  while (wait_bounded(-1, NULL, NULL) > 0) {
  }
  if (f->root[0]) remove_tree(f->root);
  if (f->extra[0]) remove_tree(f->extra);
  int left = (f->root[0] && exists(f->root)) || (f->extra[0] && exists(f->extra));
  rmdir(f->dir);
  rmdir(f->other);
  event_free(f->guard);
  event_base_free(f->base);
  free(f);
  return left ? -1 : 0;
}

/* Every member the test made has been reaped: none is left running. */
static void assert_no_children(void) {
  assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
  assert_int_equal(errno, ECHILD);
}

/* ---- tests ------------------------------------------------------------------------ */

/* The server's cgroup v2 directory, worked out independently of cgroup.c: the cgroup2
 * mount (at /sys/fs/cgroup or /sys/fs/cgroup/unified, from /proc/self/mounts) joined
 * with the "0::" line of /proc/self/cgroup. */
static void own_cgroup(char *out, size_t cap) {
  char mnt[256] = "";
  FILE *m = fopen("/proc/self/mounts", "r");
  assert_non_null(m);
  char dev[256], dir[256], type[64];
  while (fscanf(m, "%255s %255s %63s %*[^\n]", dev, dir, type) == 3)
    if (!strcmp(type, "cgroup2") &&
        (!strcmp(dir, "/sys/fs/cgroup") || !strcmp(dir, "/sys/fs/cgroup/unified")) &&
        (!mnt[0] || !strcmp(dir, "/sys/fs/cgroup")))
      snprintf(mnt, sizeof mnt, "%s", dir);
  fclose(m);
  assert_true(mnt[0]);
  const char *own = strstr(slurp("/proc/self/cgroup"), "0::");
  assert_non_null(own);
  own += 3;
  int len = (int)strcspn(own, "\n");
  snprintf(out, cap, "%s%.*s", mnt, len == 1 ? 0 : len, own);
}

/* "auto": the root is "prismq.<8 hex digits>" in the server's own cgroup, the same for
 * the same data directory however it is spelt (and for that cgroup given explicitly), and
 * another for another directory. */
static void test_root_path(void **state) {
  struct fx *f = *state;
  need_root(f);
  char parent[PATH_MAX];
  own_cgroup(parent, sizeof parent);
  const char *path = cgroup_root_path(f->r);
  size_t plen = strlen(parent);
  if (strncmp(path, parent, plen) != 0 || strncmp(path + plen, "/prismq.", 8) != 0)
    fail_msg("root %s is not %s/prismq.*", path, parent);
  const char *hex = path + plen + 8;
  assert_int_equal(strlen(hex), 8);
  assert_int_equal(strspn(hex, "0123456789abcdef"), 8);
  struct statfs sf;
  assert_int_equal(statfs(path, &sf), 0);
  assert_true(sf.f_type == CGROUP2_SUPER_MAGIC);
  /* Controllers: only ones the root really enables below it. */
  unsigned ctl = cgroup_root_controllers(f->r);
  assert_int_equal(ctl & ~(unsigned)(CGROUP_MEMORY | CGROUP_CPU), 0);
  char file[PATH_MAX + 32];
  snprintf(file, sizeof file, "%s/cgroup.subtree_control", path);
  const char *sub = slurp(file);
  if (ctl & CGROUP_MEMORY) assert_non_null(strstr(sub, "memory"));
  if (ctl & CGROUP_CPU) assert_non_null(strstr(sub, "cpu"));

  char err[512], spelt[128];
  cgroup_root *again = NULL, *explicit = NULL, *other = NULL;
  snprintf(spelt, sizeof spelt, "%s/./", f->dir);
  assert_int_equal(cgroup_root_open(&again, f->base, "auto", spelt, err, sizeof err), 0);
  assert_string_equal(cgroup_root_path(again), path);
  assert_int_equal(cgroup_root_open(&explicit, f->base, parent, f->dir, err, sizeof err), 0);
  assert_string_equal(cgroup_root_path(explicit), path);
  assert_int_equal(cgroup_root_open(&other, f->base, "auto", f->other, err, sizeof err), 0);
  snprintf(f->extra, sizeof f->extra, "%s", cgroup_root_path(other));
  assert_string_not_equal(f->extra, path);
  assert_int_equal(strncmp(f->extra, path, plen + 8), 0);
  /* Freed, a root that holds a cgroup stays; an empty one goes (the next start makes it
   * again). */
  char keep[PATH_MAX + 16];
  snprintf(keep, sizeof keep, "%s/keep", f->extra);
  assert_int_equal(mkdir(keep, 0755), 0);
  cgroup_root_free(other);
  assert_true(exists(keep));
  assert_int_equal(rmdir(keep), 0);
  cgroup_root_free(again);
  assert_false(exists(path));
  cgroup_root_free(explicit);
  cgroup_root_free(NULL);
}

/* An explicit root must be a cgroup2 directory: anything else is -ENOTSUP, saying so,
 * with *out untouched. Needs no usable hierarchy. */
static void test_not_cgroup2(void **state) {
  struct fx *f = *state;
  static const char *const wheres[] = {"/tmp", "/nonexistent/cgroup"};
  for (size_t i = 0; i < sizeof wheres / sizeof *wheres; i++) {
    cgroup_root *r = (cgroup_root *)&r;
    char err[512] = "";
    assert_int_equal(cgroup_root_open(&r, f->base, wheres[i], f->dir, err, sizeof err), -ENOTSUP);
    assert_ptr_equal(r, (cgroup_root *)&r);
    assert_non_null(strstr(err, wheres[i]));
    assert_non_null(strstr(err, "cgroup2"));
  }
}

/* cgroup_create makes the directory and gives a close-on-exec descriptor of it; a name
 * taken or a missing parent fail with *dirfd untouched and nothing left; limits are set
 * only where their controller is enabled. A process moved in is listed in it. */
static void test_create(void **state) {
  struct fx *f = *state;
  need_root(f);
  int fd = create(f, "run1");
  assert_true(fd >= 0);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  struct stat a, b;
  assert_int_equal(fstat(fd, &a), 0);
  assert_int_equal(stat(path_of(f, "run1"), &b), 0);
  assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);

  char err[512] = "";
  int bad = -7;
  assert_int_equal(cgroup_create(&bad, f->r, "run1", 0, 0, err, sizeof err), -EEXIST);
  assert_int_equal(bad, -7);
  assert_non_null(strstr(err, "run1"));
  assert_true(exists(path_of(f, "run1")));
  err[0] = '\0';
  assert_int_equal(cgroup_create(&bad, f->r, "missing/run", 0, 0, err, sizeof err), -ENOENT);
  assert_int_equal(bad, -7);
  assert_non_null(strstr(err, "missing/run"));
  assert_false(exists(path_of(f, "missing")));

  int lim = -1;
  assert_int_equal(cgroup_create(&lim, f->r, "limited", 64u << 20, 50, err, sizeof err), 0);
  char file[PATH_MAX + 64];
  snprintf(file, sizeof file, "%s/memory.max", path_of(f, "limited"));
  if (cgroup_root_controllers(f->r) & CGROUP_MEMORY)
    assert_string_equal(slurp(file), "67108864\n");
  else
    assert_false(exists(file));
  snprintf(file, sizeof file, "%s/cpu.max", path_of(f, "limited"));
  if (cgroup_root_controllers(f->r) & CGROUP_CPU)
    assert_string_equal(slurp(file), "50000 100000\n");
  else
    assert_false(exists(file));
  close(lim);

  pid_t pids[MAX_MEMBERS];
  assert_int_equal(procs(path_of(f, "run1"), pids, MAX_MEMBERS), 0);
  pid_t m = member(fd, 0);
  assert_int_equal(procs(path_of(f, "run1"), pids, MAX_MEMBERS), 1);
  assert_int_equal(pids[0], m);
  assert_int_equal(cgroup_signal(fd, SIGKILL), 0);
  assert_killed_by(m, SIGKILL);
  assert_int_equal(procs(path_of(f, "run1"), pids, MAX_MEMBERS), 0);
  close(fd);
  cgroup_remove(f->r, "run1");
  cgroup_remove(f->r, "limited");
  assert_false(exists(path_of(f, "run1")));
  assert_false(exists(path_of(f, "limited")));
  assert_no_children();
}

/* Any signal but SIGKILL goes to each member, daemons that left the session among them;
 * SIGKILL goes through cgroup.kill and ends members that ignore SIGTERM. An empty cgroup
 * is no error; a directory that is no cgroup is. */
static void test_signal(void **state) {
  struct fx *f = *state;
  need_root(f);
  int fd = create(f, "sig");
  pid_t m[3] = {member(fd, 0), member(fd, 0), member(fd, M_DAEMON)};
  pid_t pids[MAX_MEMBERS];
  assert_int_equal(procs(path_of(f, "sig"), pids, MAX_MEMBERS), 3);
  for (int i = 0; i < 3; i++) assert_true(has_pid(pids, 3, m[i]));
  assert_int_not_equal(getsid(m[2]), getsid(0));
  assert_int_equal(cgroup_signal(fd, SIGTERM), 0);
  for (int i = 0; i < 3; i++) assert_killed_by(m[i], SIGTERM);
  assert_int_equal(procs(path_of(f, "sig"), pids, MAX_MEMBERS), 0);
  assert_int_equal(cgroup_signal(fd, SIGTERM), 0);
  assert_int_equal(cgroup_signal(fd, SIGKILL), 0);

  pid_t stubborn[2] = {member(fd, M_IGNORE_TERM), member(fd, M_IGNORE_TERM | M_DAEMON)};
  assert_int_equal(cgroup_signal(fd, SIGTERM), 0);
  /* An ignored signal is dropped when sent: both are still members, and alive. */
  assert_int_equal(procs(path_of(f, "sig"), pids, MAX_MEMBERS), 2);
  for (int i = 0; i < 2; i++) assert_int_equal(waitpid(stubborn[i], NULL, WNOHANG), 0);
  assert_int_equal(cgroup_signal(fd, SIGKILL), 0);
  for (int i = 0; i < 2; i++) assert_killed_by(stubborn[i], SIGKILL);
  close(fd);
  cgroup_remove(f->r, "sig");
  assert_no_children();
  assert_false(exists(path_of(f, "sig")));

  int plain = open(f->dir, O_DIRECTORY | O_CLOEXEC);
  assert_true(plain >= 0);
  assert_int_equal(cgroup_signal(plain, SIGTERM), -ENOENT);
  assert_int_equal(cgroup_signal(plain, SIGKILL), -ENOENT);
  close(plain);
}

/* cgroup_cpu: nothing for a new cgroup; then the CPU of everything that ran in it, a
 * daemon nobody waited for included, as wait4 saw it of each. */
static void test_cpu(void **state) {
  struct fx *f = *state;
  need_root(f);
  int fd = create(f, "cpu");
  uint64_t user = 77, sys = 77;
  assert_int_equal(cgroup_cpu(fd, &user, &sys), 0);
  assert_int_equal(user + sys, 0);
  pid_t m[2] = {member(fd, M_BURN), member(fd, M_BURN | M_DAEMON)};
  uint64_t waited_ms = 0;
  for (int i = 0; i < 2; i++) {
    int st;
    struct rusage ru;
    assert_int_equal(wait_bounded(m[i], &st, &ru), m[i]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    waited_ms += (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
                 (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
  }
  assert_int_equal(cgroup_cpu(fd, &user, &sys), 0);
  uint64_t total = user + sys;
  if (total + 20 < 2 * BURN_MS || total + 20 < waited_ms || total > waited_ms + 40)
    fail_msg("cgroup CPU %llu ms (user %llu), the members' own %llu ms, each burnt %d ms",
             (unsigned long long)total, (unsigned long long)user, (unsigned long long)waited_ms,
             BURN_MS);
  close(fd);
  cgroup_remove(f->r, "cpu");
  assert_no_children();

  int plain = open(f->dir, O_DIRECTORY | O_CLOEXEC);
  user = sys = 77;
  assert_int_equal(cgroup_cpu(plain, &user, &sys), -ENOENT);
  assert_true(user == 77 && sys == 77);
  close(plain);
}

/* cgroup_remove: an empty cgroup goes at once, a missing one is fine; one with a live
 * member is killed and goes once the member is dead (from the loop if the member was
 * still exiting); one that cannot go yet (it holds a cgroup of its own) is retried from
 * the loop, every 100 ms, until it can. */
static void test_remove(void **state) {
  struct fx *f = *state;
  need_root(f);
  close(create(f, "empty"));
  cgroup_remove(f->r, "empty");
  assert_false(exists(path_of(f, "empty")));
  cgroup_remove(f->r, "never-made");

  int fd = create(f, "busy");
  pid_t m[2] = {member(fd, M_IGNORE_TERM | M_BIG), member(fd, M_IGNORE_TERM | M_DAEMON | M_BIG)};
  close(fd);
  cgroup_remove(f->r, "busy");
  int retried = exists(path_of(f, "busy"));
  drive_until_gone(f, path_of(f, "busy")); /* before reaping: a zombie is no member */
  for (int i = 0; i < 2; i++) assert_killed_by(m[i], SIGKILL);
  print_message("a killed member was %s when cgroup_remove first tried\n",
                retried ? "still exiting" : "gone");

  /* Retries that fail go on: the sub-cgroup outlives a few of them. */
  close(create(f, "nested"));
  assert_int_equal(mkdir(path_of(f, "nested/sub"), 0755), 0);
  cgroup_remove(f->r, "nested");
  assert_true(exists(path_of(f, "nested")));
  struct timeval three = {0, 350000};
  event_base_loopexit(f->base, &three);
  event_base_dispatch(f->base);
  assert_true(exists(path_of(f, "nested")));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(rmdir(path_of(f, "nested/sub")), 0);
  drive_until_gone(f, path_of(f, "nested"));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  long waited = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  assert_true(waited < 1000); /* the next retry, not a later one */

  /* Freeing the root tries the pending removals once more: what can go then goes, what
   * still cannot stays for the next start's sweep, and so does the root. A second root
   * object on the same directory plays the server that stops. */
  char err[512];
  cgroup_root *r2 = NULL;
  assert_int_equal(cgroup_root_open(&r2, f->base, "auto", f->dir, err, sizeof err), 0);
  close(create(f, "stuck"));
  close(create(f, "late"));
  assert_int_equal(mkdir(path_of(f, "stuck/sub"), 0755), 0);
  assert_int_equal(mkdir(path_of(f, "late/sub"), 0755), 0);
  cgroup_remove(r2, "stuck");
  cgroup_remove(r2, "late");
  assert_int_equal(rmdir(path_of(f, "late/sub")), 0);
  cgroup_root_free(r2);
  assert_false(exists(path_of(f, "late")));
  assert_true(exists(path_of(f, "stuck")));
  assert_int_equal(rmdir(path_of(f, "stuck/sub")), 0);
  assert_int_equal(rmdir(path_of(f, "stuck")), 0);
  assert_no_children();
}

/* A restarted server finds what the earlier one left under its root: every cgroup there
 * is killed and removed, live members (daemons, SIGTERM ignored) and all. */
static void test_sweep(void **state) {
  struct fx *f = *state;
  need_root(f);
  /* The earlier server: two runs' cgroups made by hand, one with members. */
  assert_int_equal(mkdir(path_of(f, "01OLDRUN"), 0755), 0);
  assert_int_equal(mkdir(path_of(f, "02OLDRUN"), 0755), 0);
  int fd = open(path_of(f, "01OLDRUN"), O_DIRECTORY | O_CLOEXEC);
  assert_true(fd >= 0);
  pid_t m[3] = {member(fd, M_IGNORE_TERM), member(fd, M_IGNORE_TERM | M_DAEMON), member(fd, 0)};
  close(fd);
  cgroup_root_free(f->r); /* it stopped, its runs' cgroups left behind */
  f->r = NULL;
  assert_true(exists(f->root));

  char err[512];
  assert_int_equal(cgroup_root_open(&f->r, f->base, "auto", f->dir, err, sizeof err), 0);
  assert_string_equal(cgroup_root_path(f->r), f->root);
  assert_int_equal(cgroup_root_sweep(f->r), 2);
  drive_until_gone(f, path_of(f, "01OLDRUN"));
  assert_false(exists(path_of(f, "02OLDRUN")));
  for (int i = 0; i < 3; i++) assert_killed_by(m[i], SIGKILL);
  assert_int_equal(cgroup_root_sweep(f->r), 0);
  assert_true(exists(f->root));
  assert_no_children();
}

/* cgroup_kill_path: 1 when the cgroup had members (then all killed), 0 when it had none
 * or does not exist, a negative errno for a directory that is no cgroup. */
static void test_kill_path(void **state) {
  struct fx *f = *state;
  need_root(f);
  assert_int_equal(cgroup_kill_path(path_of(f, "nope")), 0);
  int fd = create(f, "k");
  assert_int_equal(cgroup_kill_path(path_of(f, "k")), 0);
  pid_t m[2] = {member(fd, M_IGNORE_TERM), member(fd, M_IGNORE_TERM | M_DAEMON)};
  assert_int_equal(cgroup_kill_path(path_of(f, "k")), 1);
  for (int i = 0; i < 2; i++) assert_killed_by(m[i], SIGKILL);
  assert_int_equal(cgroup_kill_path(path_of(f, "k")), 0);
  /* A member only in a cgroup of the run's own below it counts, and dies, too. */
  char sub[PATH_MAX];
  snprintf(sub, sizeof sub, "%s/sub", path_of(f, "k"));
  assert_int_equal(mkdir(sub, 0755), 0);
  int subfd = open(sub, O_DIRECTORY | O_CLOEXEC);
  assert_true(subfd >= 0);
  pid_t deep = member(subfd, M_IGNORE_TERM);
  assert_int_equal(cgroup_kill_path(path_of(f, "k")), 1);
  assert_killed_by(deep, SIGKILL);
  close(subfd);
  assert_int_equal(rmdir(sub), 0);
  close(fd);
  cgroup_remove(f->r, "k");
  assert_no_children();
  assert_true(cgroup_kill_path(f->dir) < 0);
}

int main(void) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) return 1;
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_root_path), T(test_not_cgroup2), T(test_create), T(test_signal),
      T(test_cpu),       T(test_remove),      T(test_sweep),  T(test_kill_path),
  };
#undef T
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  libevent_global_shutdown();
  return rc;
}
