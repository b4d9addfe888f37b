#include "fuzzkit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

void fz_setup(void) {
  enum log_level lvl = LOG_LVL_ERROR;
  const char *env = getenv("LOG_LEVEL");
  if (env && *env) log_level_parse(&lvl, env);
  log_set_level(lvl);
  signal(SIGPIPE, SIG_IGN);
}

static char tempdir[256];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static void rm_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void rm_tempdir(void) {
  if (tempdir[0]) rm_tree(tempdir);
}

/* libFuzzer often ends with _Exit (time limit, crash, timeout), so atexit cannot be
 * counted on: a directory is named after its process, and those of processes that
 * are gone are removed by the next run. */
static void rm_stale(const char *root) {
  DIR *d = opendir(root);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *dash = strrchr(e->d_name, '-');
    if (strncmp(e->d_name, "prismq-fuzz-", 12) != 0 || !dash) continue;
    long pid = strtol(dash + 1, NULL, 10);
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH) || pid == (long)getpid()) {
      char path[512];
      snprintf(path, sizeof path, "%s/%s", root, e->d_name);
      rm_tree(path);
    }
  }
  closedir(d);
}

const char *fz_tempdir(const char *what) {
  struct stat st;
  const char *root =
      stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : getenv("TMPDIR");
  if (!root) root = "/tmp";
  rm_stale(root);
  snprintf(tempdir, sizeof tempdir, "%s/prismq-fuzz-%s-%ld", root, what, (long)getpid());
  if (mkdir(tempdir, 0700) != 0) fz_fail("mkdir %s: %s", tempdir, strerror(errno));
  atexit(rm_tempdir);
  return tempdir;
}

void fz_clear_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d)) != NULL) {
    if (e->d_type == DT_DIR) continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
}

void fz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz check failed: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

int fz_lowest_free_fd(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) fz_fail("open /dev/null: %s", strerror(errno));
  close(fd);
  return fd;
}

/* The sanitizers' runtime starts llvm-symbolizer once, to print function names (in
 * libFuzzer's NEW_FUNC lines, in reports), and keeps it running: that one child is
 * not the code's. Any other is, and so is one that has already exited. */
void fz_check_no_child(void) {
  errno = 0;
  pid_t pid = waitpid(-1, NULL, WNOHANG);
  if (pid == -1 && errno == ECHILD) return;
  FZ_CHECK(pid == 0, "a child process exists (waitpid gave %d, %s)", (int)pid, strerror(errno));
  DIR *tasks = opendir("/proc/self/task");
  FZ_CHECK(tasks, "opendir /proc/self/task: %s", strerror(errno));
  struct dirent *t;
  while ((t = readdir(tasks)) != NULL) {
    if (t->d_name[0] == '.') continue;
    char path[64], comm[64];
    snprintf(path, sizeof path, "/proc/self/task/%s/children", t->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    int child;
    while (fscanf(f, "%d", &child) == 1) {
      snprintf(path, sizeof path, "/proc/%d/comm", child);
      FILE *c = fopen(path, "r");
      int named = c && fgets(comm, sizeof comm, c);
      if (c) fclose(c);
      FZ_CHECK(named && strcmp(comm, "llvm-symbolizer\n") == 0, "child process %d (%s) exists",
               child, named ? strtok(comm, "\n") : "?");
    }
    fclose(f);
  }
  closedir(tasks);
}
