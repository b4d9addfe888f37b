#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Written once at start-up, read everywhere: a plain int is enough. */
static enum log_level g_level = LOG_LVL_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

int log_level_parse(enum log_level *out, const char *s) {
  if (!s) return -EINVAL;
  for (int i = 0; i <= LOG_LVL_ERROR; i++) {
    if (strcasecmp(s, level_names[i]) == 0) {
      *out = (enum log_level)i;
      return 0;
    }
  }
  if (strcasecmp(s, "WARN") == 0) {
    *out = LOG_LVL_WARNING;
    return 0;
  }
  return -EINVAL;
}

/* The batching thread's buffer; only that thread touches it (see log.h). */
static struct {
  atomic_int on; /* read by every thread that logs */
  pthread_t thread;
  log_flush_request_fn request;
  void *arg;
  size_t len;
  char buf[LOG_BATCH_BYTES];
} g_batch;

static void write_all(const char *p, size_t len) {
  while (len > 0) {
    ssize_t w = write(STDERR_FILENO, p, len);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return; /* nowhere to report a failing stderr */
    }
    p += w;
    len -= (size_t)w;
  }
}

static int batching_here(void) {
  return atomic_load_explicit(&g_batch.on, memory_order_acquire) &&
         pthread_equal(g_batch.thread, pthread_self());
}

void log_flush(void) {
  if (!batching_here() || !g_batch.len) return;
  write_all(g_batch.buf, g_batch.len);
  g_batch.len = 0;
}

void log_batch(log_flush_request_fn request, void *arg) {
  log_flush();
  atomic_store_explicit(&g_batch.on, 0, memory_order_release);
  g_batch.thread = pthread_self();
  g_batch.request = request;
  g_batch.arg = arg;
  if (request) atomic_store_explicit(&g_batch.on, 1, memory_order_release);
}

/* Queues a line of the batching thread; see log_batch for when it leaves. */
static void batch_line(enum log_level lvl, const char *line, size_t len) {
  if (g_batch.len + len > sizeof g_batch.buf) log_flush();
  int first = g_batch.len == 0;
  memcpy(g_batch.buf + g_batch.len, line, len);
  g_batch.len += len;
  if (lvl >= LOG_LVL_ERROR)
    log_flush();
  else if (first)
    g_batch.request(g_batch.arg);
}

void log_set_level(enum log_level lvl) { g_level = lvl; }

enum log_level log_get_level(void) { return g_level; }

void log_msg(enum log_level lvl, const char *fmt, ...) {
  if (lvl < g_level) return;
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  time_t sec = tv.tv_sec; /* timeval's is a long on Windows */
  gmtime_r(&sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (int)(tv.tv_usec / 1000), level_names[lvl]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2; /* truncated: keep room for '\n' */
  line[len++] = '\n';
  /* One write per line (or per batch) so lines from threads and children do not
   * interleave. */
  if (batching_here())
    batch_line(lvl, line, len);
  else
    write_all(line, len);
}

int log_limit_pass(log_limit *l, unsigned every_ms, unsigned long long *held) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  /* +1 so that a clock reading of 0 is still a line passed. */
  long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
  if (l->last_ms && now - l->last_ms < (long long)every_ms) {
    l->held++;
    return 0;
  }
  l->last_ms = now;
  *held = l->held;
  l->held = 0;
  return 1;
}
