#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
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

void log_set_level(enum log_level lvl) { g_level = lvl; }

enum log_level log_get_level(void) { return g_level; }

void log_msg(enum log_level lvl, const char *fmt, ...) {
  if (lvl < g_level) return;
  char line[2048];
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
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
  /* One write per line so lines from threads and children do not interleave. */
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
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
