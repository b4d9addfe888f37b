#include "resmon.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "log.h"
#ifdef _WIN32
#include <windows.h>
#endif

/* Only the first line of stat is needed, and the kernel formats the whole file (the
 * "intr" line alone can be kilobytes): read just enough for the aggregate cpu line. */
#define STAT_READ 512
/* meminfo is about 1.5 KiB, MemTotal and MemAvailable are among its first lines. */
#define MEMINFO_READ 4096

/* A procfs file read on every sample; `failing` keeps a broken file from logging on
 * every tick. */
struct source {
  char *path;
  int failing;
};

struct cpu_times {
  uint64_t total; /* jiffies of every kind, guests excluded (they are in user/nice) */
  uint64_t idle;  /* idle + iowait */
};

struct resmon {
  struct event *timer;
  int native; /* Windows without proc_root: the system's counters, not procfs files */
  resmon_limits lim;
  resmon_sample_fn on_sample;
  void *arg;
  struct source stat, meminfo;
  struct cpu_times prev; /* counters at the last good stat read */
  resmon_sample last;
};

static void *must(void *ptr) {
  if (!ptr) {
    LOG_ERROR("resmon out of memory");
    abort();
  }
  return ptr;
}

static char *path_join(const char *dir, const char *name) {
  char *s;
  if (asprintf(&s, "%s/%s", dir, name) < 0) s = NULL;
  return must(s);
}

/* Reads the start of `path` into buf (NUL-terminated). If the file is longer than the
 * buffer, the cut last line is dropped, so every line handed on is whole. Returns 0
 * or a negative errno. */
static int read_head(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t len = 0;
  int rc = 0;
  while (len < size - 1) {
    ssize_t n = read(fd, buf + len, size - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = -errno;
      break;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  if (rc) return rc;
  buf[len] = '\0';
  if (len == size - 1) {
    char *nl = strrchr(buf, '\n');
    if (nl)
      nl[1] = '\0';
    else
      buf[0] = '\0';
  }
  return 0;
}

/* Decimal digits at *p, after blanks; advances *p past them. Returns 0, or -EBADMSG
 * when there is no number or it does not fit. */
static int parse_u64(const char **p, uint64_t *out) {
  const char *s = *p + strspn(*p, " \t");
  if (*s < '0' || *s > '9') return -EBADMSG;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno) return -EBADMSG;
  *out = v;
  *p = end;
  return 0;
}

/* The aggregate line: "cpu  user nice system idle iowait irq softirq steal guest
 * guest_nice". Kernels before 2.6.33 have fewer fields, later ones might add some:
 * the first four are required, missing ones count as 0, extra ones are ignored. */
static int parse_stat(const char *buf, struct cpu_times *t) {
  if (strncmp(buf, "cpu ", 4) != 0) return -EBADMSG;
  const char *p = buf + 4;
  uint64_t f[8] = {0};
  size_t n = 0;
  while (n < 8 && parse_u64(&p, &f[n]) == 0) n++;
  if (n < 4) return -EBADMSG;
  p += strspn(p, " \t");
  if (n < 8 && *p != '\n' && *p != '\0') return -EBADMSG;
  t->total = 0;
  for (size_t i = 0; i < 8; i++) t->total += f[i];
  t->idle = f[3] + f[4];
  return 0;
}

/* The value of the line "<key> <number> kB" of meminfo. */
static int meminfo_field(const char *buf, const char *key, uint64_t *out) {
  size_t klen = strlen(key);
  for (const char *line = buf; *line; line++) {
    if (strncmp(line, key, klen) == 0) {
      const char *p = line + klen;
      return parse_u64(&p, out);
    }
    line = strchr(line, '\n');
    if (!line) break;
  }
  return -EBADMSG;
}

#ifdef _WIN32
static uint64_t ft64(FILETIME f) { return (uint64_t)f.dwHighDateTime << 32 | f.dwLowDateTime; }

/* GetSystemTimes: its kernel time includes the idle time, as psutil reads it there. */
static int native_cpu(struct cpu_times *t) {
  FILETIME idle, kernel, user;
  if (!GetSystemTimes(&idle, &kernel, &user)) return -EIO;
  t->total = ft64(kernel) + ft64(user);
  t->idle = ft64(idle);
  return 0;
}

/* GlobalMemoryStatusEx: physical memory, and what is available without paging. */
static int native_mem(uint64_t *total, uint64_t *avail) {
  MEMORYSTATUSEX ms = {.dwLength = sizeof ms};
  if (!GlobalMemoryStatusEx(&ms)) return -EIO;
  *total = ms.ullTotalPhys / 1024;
  *avail = ms.ullAvailPhys / 1024;
  return 0;
}
#endif

static int read_stat(resmon *m, struct cpu_times *t) {
#ifdef _WIN32
  if (m->native) return native_cpu(t);
#endif
  char buf[STAT_READ];
  int rc = read_head(m->stat.path, buf, sizeof buf);
  return rc ? rc : parse_stat(buf, t);
}

static int read_meminfo(resmon *m) {
  char buf[MEMINFO_READ];
  uint64_t total, avail;
  int rc;
#ifdef _WIN32
  if (m->native)
    rc = native_mem(&total, &avail);
  else
#endif
  {
    rc = read_head(m->meminfo.path, buf, sizeof buf);
    if (!rc) rc = meminfo_field(buf, "MemTotal:", &total);
    if (!rc) rc = meminfo_field(buf, "MemAvailable:", &avail);
  }
  if (!rc && total == 0) rc = -EBADMSG;
  if (rc) return rc;
  m->last.mem_total_kb = total;
  m->last.mem_available_kb = avail;
  uint64_t used = total > avail ? total - avail : 0;
  m->last.mem_used_percent = 100.0 * (double)used / (double)total;
  return 0;
}

/* Logs the first failure of a source, and its recovery. */
static void note(struct source *src, int rc) {
  if (rc && !src->failing)
    LOG_WARN("resource sample failed, keeping the last reading path=%s err=%s", src->path,
             strerror(-rc));
  else if (!rc && src->failing)
    LOG_INFO("resource sample works again path=%s", src->path);
  src->failing = rc != 0;
}

/* CPU use over the time since the previous good read. Counters that did not move (two
 * reads within one jiffy) leave the last value in place; iowait may go backwards on
 * some kernels, hence the clamping; counters that went backwards as a whole only set
 * the new baseline. */
static void cpu_update(resmon *m, const struct cpu_times *t) {
  if (t->total > m->prev.total) {
    uint64_t dt = t->total - m->prev.total;
    uint64_t didle = t->idle > m->prev.idle ? t->idle - m->prev.idle : 0;
    if (didle > dt) didle = dt;
    m->last.cpu_percent = 100.0 * (double)(dt - didle) / (double)dt;
  }
  m->prev = *t;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  resmon *m = arg;
  struct cpu_times t;
  int rc = read_stat(m, &t);
  if (!rc) cpu_update(m, &t);
  note(&m->stat, rc);
  note(&m->meminfo, read_meminfo(m));
  /* Last: the callback may free m. */
  if (m->on_sample) m->on_sample(m->arg);
}

int resmon_new(resmon **out, struct event_base *base, const resmon_opts *opts) {
  resmon_opts defaults = RESMON_OPTS_INIT;
  if (!opts) opts = &defaults;
  if (!out || !base || !opts->interval_ms || opts->limits.max_cpu_percent > 100 ||
      opts->limits.max_memory_percent > 100)
    return -EINVAL;
  const char *root = opts->proc_root ? opts->proc_root : "/proc";
  resmon *m = must(calloc(1, sizeof *m));
  m->lim = opts->limits;
  m->on_sample = opts->on_sample;
  m->arg = opts->arg;
#ifdef _WIN32
  m->native = !opts->proc_root;
  m->stat.path = m->native ? must(strdup("GetSystemTimes")) : path_join(root, "stat");
  m->meminfo.path = m->native ? must(strdup("GlobalMemoryStatusEx")) : path_join(root, "meminfo");
#else
  m->stat.path = path_join(root, "stat");
  m->meminfo.path = path_join(root, "meminfo");
#endif
  m->last.cpu_percent = -1;
  int rc = read_stat(m, &m->prev);
  if (!rc) rc = read_meminfo(m);
  if (rc) goto fail;
  m->timer = must(event_new(base, -1, EV_PERSIST, tick_cb, m));
  struct timeval tv = compat_timeout_ms(opts->interval_ms);
  if (event_add(m->timer, &tv) < 0) {
    rc = -EIO;
    goto fail;
  }
  *out = m;
  return 0;
fail:
  resmon_free(m);
  return rc;
}

static int refuse(char *why, size_t whylen, const char *fmt, ...) COMPAT_PRINTF(3, 4);
static int refuse(char *why, size_t whylen, const char *fmt, ...) {
  if (whylen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
  }
  return 0;
}

int resmon_check(resmon *m, char *why, size_t whylen) {
  const resmon_limits *lim = &m->lim;
  if (lim->min_available_memory_mb || lim->max_memory_percent) note(&m->meminfo, read_meminfo(m));
  const resmon_sample *s = &m->last;
  if (lim->min_available_memory_mb &&
      s->mem_available_kb < (uint64_t)lim->min_available_memory_mb * 1024)
    return refuse(why, whylen,
                  "available memory %" PRIu64 " MB below the minimum of %" PRIu32 " MB",
                  s->mem_available_kb / 1024, lim->min_available_memory_mb);
  if (lim->max_memory_percent && s->mem_used_percent > lim->max_memory_percent)
    return refuse(why, whylen, "memory use %.1f%% over the limit of %" PRIu32 "%%",
                  s->mem_used_percent, lim->max_memory_percent);
  if (lim->max_cpu_percent && s->cpu_percent > lim->max_cpu_percent)
    return refuse(why, whylen, "CPU use %.1f%% over the limit of %" PRIu32 "%%", s->cpu_percent,
                  lim->max_cpu_percent);
  if (whylen) why[0] = '\0';
  return 1;
}

const resmon_sample *resmon_last(const resmon *m) { return &m->last; }

void resmon_free(resmon *m) {
  if (!m) return;
  if (m->timer) event_free(m->timer);
  free(m->stat.path);
  free(m->meminfo.path);
  free(m);
}
