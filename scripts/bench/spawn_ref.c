/* spawn_ref: the plain-C baseline for prismqd's run start rate and first-byte latency:
 * posix_spawn with two pipes (stdout, stderr), read both to EOF, waitpid. No server,
 * no HTTP/2, no run table: what a process start costs on this machine.
 *
 *   spawn_ref rate N INFLIGHT CMD [ARG...]
 *       runs CMD N times, INFLIGHT at once (a new one starts as soon as one has been
 *       reaped); prints {"runs":N,"seconds":S,"runs_per_s":R,"failed":F}
 *   spawn_ref firstbyte N CMD [ARG...]
 *       runs CMD N times one after the other, timing posix_spawn to the first byte read
 *       from its stdout; prints {"samples":N,"median_us":M,"p99_us":P,"mean_us":A,
 *       "failed":F}
 *
 * A run "fails" when the command exits non-zero or dies by a signal (firstbyte: or
 * writes nothing). Exits 0 when no run failed, 1 otherwise, 2 on usage or set-up
 * errors. Built by scripts/bench/run.sh. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_INFLIGHT 1024

extern char **environ;

struct child {
  pid_t pid;
  int fd[2]; /* stdout, stderr read ends; -1 once at EOF */
  size_t bytes;
};

static void die(const char *what, int err) {
  fprintf(stderr, "spawn_ref: %s: %s\n", what, strerror(err));
  exit(2);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts argv[0] (searched in PATH) with stdin from /dev/null and stdout/stderr on two
 * new pipes whose read ends go to ch->fd. */
static void child_start(struct child *ch, char **argv) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) die("pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&fa, err[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  int rc = posix_spawnp(&ch->pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) die("posix_spawnp", rc);
  close(out[1]);
  close(err[1]);
  ch->fd[0] = out[0];
  ch->fd[1] = err[0];
  ch->bytes = 0;
}

/* Reads what is there on pipe i of ch; closes it at EOF. */
static void child_read(struct child *ch, int i) {
  char buf[65536];
  ssize_t n = read(ch->fd[i], buf, sizeof buf);
  if (n > 0) {
    ch->bytes += (size_t)n;
    return;
  }
  if (n < 0 && errno == EINTR) return;
  close(ch->fd[i]);
  ch->fd[i] = -1;
}

/* Waits for ch's exit; returns 1 if it failed. */
static int child_reap(struct child *ch) {
  int st;
  while (waitpid(ch->pid, &st, 0) < 0)
    if (errno != EINTR) die("waitpid", errno);
  return !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static int rate(long n, long inflight, char **argv) {
  static struct child kids[MAX_INFLIGHT];
  struct pollfd pfd[2 * MAX_INFLIGHT];
  long started = 0, done = 0, failed = 0, live = 0;
  double t0 = now_s();
  for (; live < inflight && started < n; live++, started++) child_start(&kids[live], argv);
  while (live > 0) {
    for (long i = 0; i < live; i++)
      for (int j = 0; j < 2; j++) pfd[2 * i + j] = (struct pollfd){kids[i].fd[j], POLLIN, 0};
    if (poll(pfd, (nfds_t)(2 * live), -1) < 0) {
      if (errno == EINTR) continue;
      die("poll", errno);
    }
    for (long i = live - 1; i >= 0; i--) {
      for (int j = 0; j < 2; j++)
        if (pfd[2 * i + j].revents) child_read(&kids[i], j);
      if (kids[i].fd[0] >= 0 || kids[i].fd[1] >= 0) continue;
      failed += child_reap(&kids[i]);
      done++;
      if (started < n) {
        child_start(&kids[i], argv);
        started++;
      } else {
        kids[i] = kids[--live];
      }
    }
  }
  double s = now_s() - t0;
  printf("{\"runs\":%ld,\"seconds\":%.6f,\"runs_per_s\":%.1f,\"failed\":%ld}\n", done, s,
         (double)done / s, failed);
  return failed ? 1 : 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int firstbyte(long n, char **argv) {
  double *lat = calloc((size_t)n, sizeof *lat);
  if (!lat) die("calloc", ENOMEM);
  long failed = 0;
  double sum = 0;
  for (long k = 0; k < n; k++) {
    struct child ch;
    double t0 = now_s();
    child_start(&ch, argv);
    while (ch.bytes == 0 && ch.fd[0] >= 0) {
      struct pollfd p = {ch.fd[0], POLLIN, 0};
      if (poll(&p, 1, -1) > 0) child_read(&ch, 0);
    }
    lat[k] = (now_s() - t0) * 1e6;
    sum += lat[k];
    int wrote = ch.bytes > 0;
    for (int j = 0; j < 2; j++)
      while (ch.fd[j] >= 0) child_read(&ch, j);
    failed += child_reap(&ch) || !wrote;
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  printf("{\"samples\":%ld,\"median_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,\"failed\":%ld}\n",
         n, lat[n / 2], lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], sum / (double)n, failed);
  free(lat);
  return failed ? 1 : 0;
}

static long count_arg(const char *s, long max) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return errno || end == s || *end || v < 1 || v > max ? 0 : v;
}

int main(int argc, char **argv) {
  if (argc >= 5 && strcmp(argv[1], "rate") == 0) {
    long n = count_arg(argv[2], 100000000), inflight = count_arg(argv[3], MAX_INFLIGHT);
    if (n && inflight) return rate(n, inflight, argv + 4);
  } else if (argc >= 4 && strcmp(argv[1], "firstbyte") == 0) {
    long n = count_arg(argv[2], 10000000);
    if (n) return firstbyte(n, argv + 3);
  }
  fprintf(stderr,
          "usage: spawn_ref rate N INFLIGHT CMD [ARG...]\n"
          "       spawn_ref firstbyte N CMD [ARG...]\n");
  return 2;
}
