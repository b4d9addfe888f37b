#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <event2/event.h>

#include "compat.h"
#include "log.h"
#include "xalloc.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* cgroup_remove's retries: every RETRY_MS, at most RETRY_MAX times. */
#define RETRY_MS  100
#define RETRY_MAX 100

struct pending {
  char *name;
  unsigned tries;
  struct pending *next;
};

struct cgroup_root {
  struct event_base *base;
  char *path;
  int fd; /* the root directory */
  unsigned controllers;
  struct pending *pending; /* cgroups waiting for their members to exit */
  struct event *retry_ev;
};

/* Writes a short string to a cgroup file. Returns 0 or -errno. */
static int write_file(int dirfd, const char *file, const char *s) {
  int fd = openat(dirfd, file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, s, strlen(s));
  int rc = n < 0 ? -errno : 0;
  close(fd);
  return rc;
}

/* Reads a cgroup file (they are small) into buf. Returns its length or -errno. */
static ssize_t read_file(int dirfd, const char *file, char *buf, size_t cap) {
  int fd = openat(dirfd, file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t len = 0;
  ssize_t n;
  while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0) len += (size_t)n;
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

static int is_cgroup2(const char *path) {
  struct statfs sf;
  return statfs(path, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
}

/* "auto": the cgroup2 mount, then the server's own cgroup in it ("0::/path"). */
static int find_auto(char *out, size_t cap, char *err, size_t errlen) {
  static const char *const mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
  const char *mnt = NULL;
  for (size_t i = 0; i < sizeof mounts / sizeof mounts[0] && !mnt; i++)
    if (is_cgroup2(mounts[i])) mnt = mounts[i];
  if (!mnt) {
    snprintf(err, errlen, "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified");
    return -ENOTSUP;
  }
  char buf[4096];
  ssize_t n = read_file(AT_FDCWD, "/proc/self/cgroup", buf, sizeof buf);
  const char *own = n > 0 ? strstr(buf, "0::") : NULL;
  if (own && own != buf && own[-1] != '\n') own = NULL;
  if (!own) {
    snprintf(err, errlen, "/proc/self/cgroup names no cgroup2 cgroup for the server");
    return -ENOTSUP;
  }
  own += 3;
  size_t len = strcspn(own, "\n");
  /* The server's own cgroup "/" is the mount itself. */
  if (len == 1) len = 0;
  snprintf(out, cap, "%s%.*s", mnt, (int)len, own);
  return 0;
}

/* The kernel must have what a run's cgroup relies on. */
static int check_kernel(int fd, const char *path, char *err, size_t errlen) {
  if (faccessat(fd, "cgroup.kill", W_OK, 0) != 0) {
    snprintf(err, errlen, "%s has no writable cgroup.kill (Linux 5.14 or later is needed)", path);
    return -ENOTSUP;
  }
  return 0;
}

/* Enables memory and cpu below the root, each where the parent offers it. */
static unsigned enable_controllers(int fd) {
  static const struct {
    const char *name, *enable;
    unsigned bit;
  } ctl[] = {{"memory", "+memory", CGROUP_MEMORY}, {"cpu", "+cpu", CGROUP_CPU}};
  char avail[512];
  unsigned got = 0;
  if (read_file(fd, "cgroup.controllers", avail, sizeof avail) < 0) return 0;
  for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++) {
    size_t len = strlen(ctl[i].name);
    for (const char *p = avail; (p = strstr(p, ctl[i].name)) != NULL; p += len) {
      int word = (p == avail || p[-1] == ' ') && (p[len] == ' ' || p[len] == '\n' || !p[len]);
      if (word && write_file(fd, "cgroup.subtree_control", ctl[i].enable) == 0) got |= ctl[i].bit;
      if (word) break;
    }
  }
  return got;
}

/* cgroup.kill, then rmdir: 0, or -EBUSY while killed members are still exiting. */
static int kill_and_remove(int rootfd, const char *name) {
  int fd = openat(rootfd, name, O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -errno;
  cgroup_signal(fd, SIGKILL);
  close(fd);
  if (unlinkat(rootfd, name, AT_REMOVEDIR) == 0 || errno == ENOENT) return 0;
  return -errno;
}

static void schedule_retry(cgroup_root *r) {
  if (!evtimer_pending(r->retry_ev, NULL)) {
    struct timeval tv = compat_timeout_ms(RETRY_MS);
    evtimer_add(r->retry_ev, &tv);
  }
}

static void retry_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  cgroup_root *r = arg;
  for (struct pending **pp = &r->pending, *p; (p = *pp) != NULL;) {
    int rc = kill_and_remove(r->fd, p->name);
    if (rc == -EBUSY && ++p->tries < RETRY_MAX) {
      pp = &p->next;
      continue;
    }
    if (rc < 0) LOG_ERROR("cgroup not removed path=%s/%s: %s", r->path, p->name, strerror(-rc));
    *pp = p->next;
    free(p->name);
    free(p);
  }
  if (r->pending) schedule_retry(r);
}

void cgroup_remove(cgroup_root *r, const char *name) {
  int rc = kill_and_remove(r->fd, name);
  if (rc == 0) return;
  if (rc != -EBUSY) {
    LOG_ERROR("cgroup not removed path=%s/%s: %s", r->path, name, strerror(-rc));
    return;
  }
  struct pending *p = xmalloc(sizeof *p);
  p->name = xstrdup(name);
  p->tries = 0;
  p->next = r->pending;
  r->pending = p;
  schedule_retry(r);
}

size_t cgroup_root_sweep(cgroup_root *r) {
  int fd = dup(r->fd);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return 0;
  }
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    cgroup_remove(r, e->d_name);
    n++;
  }
  closedir(d);
  return n;
}

/* FNV-1a: names the root after the data directory. */
static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

int cgroup_root_open(cgroup_root **out, struct event_base *base, const char *where,
                     const char *data_dir, char *err, size_t errlen) {
  char parent[PATH_MAX], path[PATH_MAX + 32], dir[PATH_MAX];
  int rc;
  if (strcmp(where, "auto") == 0) {
    if ((rc = find_auto(parent, sizeof parent, err, errlen)) < 0) return rc;
  } else if (!is_cgroup2(where)) {
    snprintf(err, errlen, "%s is not in a cgroup2 hierarchy", where);
    return -ENOTSUP;
  } else {
    snprintf(parent, sizeof parent, "%s", where);
  }
  if (!realpath(data_dir, dir)) snprintf(dir, sizeof dir, "%s", data_dir);
  snprintf(path, sizeof path, "%s/prismq.%08" PRIx32, parent, hash_str(dir));
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    rc = errno == EROFS || errno == EACCES || errno == EPERM ? -ENOTSUP : -errno;
    snprintf(err, errlen, "cannot create the cgroup %s: %s", path, strerror(errno));
    return rc;
  }
  int fd = open(path, O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot open the cgroup %s: %s", path, strerror(-rc));
    return rc;
  }
  if ((rc = check_kernel(fd, path, err, errlen)) < 0) {
    close(fd);
    unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
    return rc;
  }
  cgroup_root *r = xcalloc(1, sizeof *r);
  r->base = base;
  r->path = xstrdup(path);
  r->fd = fd;
  r->retry_ev = evtimer_new(base, retry_cb, r);
  if (!r->retry_ev) abort();
  r->controllers = enable_controllers(fd);
  *out = r;
  return 0;
}

void cgroup_root_free(cgroup_root *r) {
  if (!r) return;
  while (r->pending) {
    struct pending *p = r->pending;
    r->pending = p->next;
    if (kill_and_remove(r->fd, p->name) < 0)
      LOG_INFO("cgroup not removed yet, the next start removes it path=%s/%s", r->path, p->name);
    free(p->name);
    free(p);
  }
  event_free(r->retry_ev);
  close(r->fd);
  /* Empty, the root goes too (the next start makes it again). */
  rmdir(r->path);
  free(r->path);
  free(r);
}

const char *cgroup_root_path(const cgroup_root *r) { return r->path; }

unsigned cgroup_root_controllers(const cgroup_root *r) { return r->controllers; }

int cgroup_create(int *dirfd, cgroup_root *r, const char *name, uint64_t memory_max,
                  uint32_t cpu_max_percent, char *err, size_t errlen) {
  char val[64];
  int rc;
  if (mkdirat(r->fd, name, 0755) != 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot create the cgroup %s/%s: %s", r->path, name, strerror(-rc));
    return rc;
  }
  int fd = openat(r->fd, name, O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot open the cgroup %s/%s: %s", r->path, name, strerror(-rc));
    goto fail_dir;
  }
  if (memory_max && (r->controllers & CGROUP_MEMORY)) {
    snprintf(val, sizeof val, "%" PRIu64, memory_max);
    if ((rc = write_file(fd, "memory.max", val)) < 0) {
      snprintf(err, errlen, "cannot set memory.max of %s/%s: %s", r->path, name, strerror(-rc));
      goto fail_fd;
    }
  }
  if (cpu_max_percent && (r->controllers & CGROUP_CPU)) {
    /* A period of 100 ms: quota = percent * 1 ms. */
    snprintf(val, sizeof val, "%" PRIu64 " 100000", (uint64_t)cpu_max_percent * 1000);
    if ((rc = write_file(fd, "cpu.max", val)) < 0) {
      snprintf(err, errlen, "cannot set cpu.max of %s/%s: %s", r->path, name, strerror(-rc));
      goto fail_fd;
    }
  }
  *dirfd = fd;
  return 0;

fail_fd:
  close(fd);
fail_dir:
  unlinkat(r->fd, name, AT_REMOVEDIR);
  return rc;
}

int cgroup_kill_path(const char *path) {
  int fd = open(path, O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 0 : -errno;
  /* "populated" counts the whole subtree: members in cgroups of the run's own too. */
  char buf[256];
  ssize_t n = read_file(fd, "cgroup.events", buf, sizeof buf);
  int populated = n > 0 && strstr(buf, "populated 1") != NULL;
  int rc = n < 0 ? (int)n : cgroup_signal(fd, SIGKILL);
  close(fd);
  return rc < 0 ? rc : populated;
}

int cgroup_signal(int dirfd, int sig) {
  if (sig == SIGKILL) return write_file(dirfd, "cgroup.kill", "1");
  int fd = openat(dirfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  FILE *f = fdopen(fd, "r");
  if (!f) {
    close(fd);
    return -errno;
  }
  for (long pid; fscanf(f, "%ld", &pid) == 1;)
    if (pid > 0) kill((pid_t)pid, sig);
  fclose(f);
  return 0;
}

int cgroup_cpu(int dirfd, uint64_t *user_ms, uint64_t *sys_ms) {
  char buf[1024];
  ssize_t n = read_file(dirfd, "cpu.stat", buf, sizeof buf);
  if (n < 0) return (int)n;
  const char *u = strstr(buf, "user_usec "), *s = strstr(buf, "system_usec ");
  if (!u || !s) return -EINVAL;
  *user_ms = strtoull(u + sizeof "user_usec " - 1, NULL, 10) / 1000;
  *sys_ms = strtoull(s + sizeof "system_usec " - 1, NULL, 10) / 1000;
  return 0;
}
