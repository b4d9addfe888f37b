/* cgroup on Windows: there are no cgroups. What they give a run on Linux (a tree no
 * member escapes, a kill of all of it, its CPU time, a memory limit) each run gets from
 * a Job Object of its own there (proc_win.c). So no root ever opens, and the calls that
 * take one, or a cgroup's directory, are never reached; the rest say "nothing there". */
#include "cgroup.h"

#include <errno.h>
#include <stdio.h>

int cgroup_root_open(cgroup_root **out, struct event_base *base, const char *where,
                     const char *data_dir, char *err, size_t errlen) {
  (void)out;
  (void)base;
  (void)where;
  (void)data_dir;
  snprintf(err, errlen, "Windows has no cgroups (each run is a Job Object)");
  return -ENOTSUP;
}

size_t cgroup_root_sweep(cgroup_root *r) {
  (void)r;
  return 0;
}

/* A run recorded with a cgroup came from a Linux server's table: nothing of it runs
 * here. */
int cgroup_kill_path(const char *path) {
  (void)path;
  return 0;
}

void cgroup_root_free(cgroup_root *r) { (void)r; }

const char *cgroup_root_path(const cgroup_root *r) {
  (void)r;
  return "";
}

unsigned cgroup_root_controllers(const cgroup_root *r) {
  (void)r;
  return 0;
}

int cgroup_create(int *dirfd, cgroup_root *r, const char *name, uint64_t memory_max,
                  uint32_t cpu_max_percent, char *err, size_t errlen) {
  (void)dirfd;
  (void)r;
  (void)name;
  (void)memory_max;
  (void)cpu_max_percent;
  snprintf(err, errlen, "Windows has no cgroups");
  return -ENOTSUP;
}

void cgroup_remove(cgroup_root *r, const char *name) {
  (void)r;
  (void)name;
}

int cgroup_signal(int dirfd, int sig) {
  (void)dirfd;
  (void)sig;
  return -ENOTSUP;
}

int cgroup_cpu(int dirfd, uint64_t *user_ms, uint64_t *sys_ms) {
  (void)dirfd;
  (void)user_ms;
  (void)sys_ms;
  return -ENOTSUP;
}
