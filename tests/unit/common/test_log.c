/* Unit tests for common/log: level parsing, filtering of what reaches stderr, batching. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

static void test_level_parse_accepts(void **state) {
  (void)state;
  static const struct {
    const char *s;
    enum log_level lvl;
  } cases[] = {
      {"DEBUG", LOG_LVL_DEBUG},  {"debug", LOG_LVL_DEBUG},     {"Info", LOG_LVL_INFO},
      {"INFO", LOG_LVL_INFO},    {"WARNING", LOG_LVL_WARNING}, {"warning", LOG_LVL_WARNING},
      {"WARN", LOG_LVL_WARNING}, {"wArN", LOG_LVL_WARNING},    {"ERROR", LOG_LVL_ERROR},
      {"error", LOG_LVL_ERROR},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    /* Start from a different level so that a missing store is seen. */
    enum log_level out = cases[i].lvl == LOG_LVL_ERROR ? LOG_LVL_DEBUG : LOG_LVL_ERROR;
    int rc = log_level_parse(&out, cases[i].s);
    if (rc != 0 || out != cases[i].lvl)
      fail_msg("'%s': rc=%d level=%d want %d", cases[i].s, rc, (int)out, (int)cases[i].lvl);
  }
}

static void test_level_parse_rejects(void **state) {
  (void)state;
  static const char *const cases[] = {"",      "TRACE",    "INF", "INFOO", " INFO",
                                      "INFO ", "WARNINGS", "0",   "ERR"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    enum log_level out = LOG_LVL_ERROR;
    int rc = log_level_parse(&out, cases[i]);
    if (rc != -EINVAL || out != LOG_LVL_ERROR)
      fail_msg("'%s' accepted: rc=%d level=%d", cases[i], rc, (int)out);
  }
  enum log_level out = LOG_LVL_WARNING;
  assert_int_equal(log_level_parse(&out, NULL), -EINVAL);
  assert_int_equal(out, LOG_LVL_WARNING);
}

/* stderr is swapped for a temporary file while a test logs, then restored before any
 * assertion so that cmocka's own reports are not captured. */
struct capture {
  FILE *file;
  int saved_stderr;
};

static int setup_capture(void **state) {
  struct capture *c = malloc(sizeof *c);
  if (!c) return -1;
  c->file = tmpfile();
  c->saved_stderr = dup(STDERR_FILENO);
  if (!c->file || c->saved_stderr < 0 || dup2(fileno(c->file), STDERR_FILENO) < 0) {
    if (c->saved_stderr >= 0) close(c->saved_stderr);
    if (c->file) fclose(c->file);
    free(c);
    return -1;
  }
  *state = c;
  return 0;
}

/* Restores stderr and returns everything logged so far (NUL-terminated, caller frees). */
static char *end_capture(struct capture *c) {
  assert_int_equal(dup2(c->saved_stderr, STDERR_FILENO), STDERR_FILENO);
  off_t size = lseek(fileno(c->file), 0, SEEK_END);
  assert_true(size >= 0);
  char *text = malloc((size_t)size + 1);
  assert_non_null(text);
  assert_int_equal(pread(fileno(c->file), text, (size_t)size, 0), size);
  text[size] = '\0';
  return text;
}

static int teardown_capture(void **state) {
  struct capture *c = *state;
  dup2(c->saved_stderr, STDERR_FILENO);
  close(c->saved_stderr);
  fclose(c->file);
  free(c);
  log_set_level(LOG_LVL_INFO);
  return 0;
}

static void assert_matches(const char *text, const char *pattern) {
  regex_t re;
  assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
  int rc = regexec(&re, text, 0, NULL, 0);
  regfree(&re);
  if (rc != 0) fail_msg("output does not match %s:\n%s", pattern, text);
}

#define TS "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

static void test_filter_at_info(void **state) {
  struct capture *c = *state;
  log_set_level(LOG_LVL_INFO);
  LOG_DEBUG("hidden detail n=%d", 1);
  log_msg(LOG_LVL_DEBUG, "hidden direct n=%d", 2);
  LOG_ERROR("disk full path=%s", "/var/x");
  char *text = end_capture(c);
  /* Exactly one line: the ERROR one, with timestamp and level word. */
  assert_matches(text, "^" TS " ERROR disk full path=/var/x\n$");
  free(text);
}

static void test_filter_at_error(void **state) {
  struct capture *c = *state;
  log_set_level(LOG_LVL_ERROR);
  LOG_INFO("not shown");
  LOG_WARN("not shown either");
  LOG_ERROR("shown code=%d", 7);
  char *text = end_capture(c);
  assert_matches(text, "^" TS " ERROR shown code=7\n$");
  free(text);
}

static void test_filter_at_debug(void **state) {
  struct capture *c = *state;
  log_set_level(LOG_LVL_DEBUG);
  assert_int_equal(log_get_level(), LOG_LVL_DEBUG);
  LOG_DEBUG("d");
  LOG_INFO("i");
  LOG_WARN("w");
  LOG_ERROR("e");
  char *text = end_capture(c);
  assert_matches(text, "^" TS " DEBUG d\n" TS " INFO i\n" TS " WARNING w\n" TS " ERROR e\n$");
  free(text);
}

static void test_long_line_truncated_to_one_line(void **state) {
  struct capture *c = *state;
  size_t big = 10000;
  char *msg = malloc(big + 1);
  assert_non_null(msg);
  memset(msg, 'x', big);
  msg[big] = '\0';
  LOG_WARN("long %s", msg);
  free(msg);
  char *text = end_capture(c);
  size_t len = strlen(text);
  /* Cut to the line buffer, but still a whole line ending in one newline. */
  assert_true(len > 1000 && len < 4096);
  assert_int_equal(text[len - 1], '\n');
  assert_null(memchr(text, '\n', len - 1));
  assert_matches(text, "^" TS " WARNING long x+\n$");
  free(text);
}

/* The first line passes; within the interval lines are held back and counted; the next
 * line to pass says how many. Waiting out a 20 ms interval polls the clock (bounded). */
static void test_limit_holds_back_and_counts(void **state) {
  (void)state;
  log_limit l = {0};
  unsigned long long held = 99;
  assert_int_equal(log_limit_pass(&l, 20, &held), 1);
  assert_int_equal(held, 0);
  for (int i = 0; i < 3; i++) assert_int_equal(log_limit_pass(&l, 60000, &held), 0);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int passed = 0;
  double waited = 0;
  while (!passed && waited < 2.0) {
    passed = log_limit_pass(&l, 20, &held);
    clock_gettime(CLOCK_MONOTONIC, &t);
    waited = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
  }
  assert_int_equal(passed, 1);
  assert_true(waited >= 0.015); /* not before its interval (a few ms of slack for the clock) */
  assert_true(held >= 3);
  /* An interval of 0 lets everything pass. */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(log_limit_pass(&l, 0, &held), 1);
    assert_int_equal(held, 0);
  }
}

/* Batching: stderr is a non-blocking pipe here, so a test sees what has been written so
 * far, and nothing when nothing has. */
struct pipe_capture {
  int rd;
  int saved_stderr;
  int requests; /* calls of the flush request */
};

static int setup_pipe(void **state) {
  struct pipe_capture *c = calloc(1, sizeof *c);
  int p[2];
  if (!c || pipe2(p, O_CLOEXEC) < 0) {
    free(c);
    return -1;
  }
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  c->rd = p[0];
  c->saved_stderr = dup(STDERR_FILENO);
  if (c->saved_stderr < 0 || dup2(p[1], STDERR_FILENO) < 0) return -1;
  close(p[1]);
  *state = c;
  return 0;
}

static int teardown_pipe(void **state) {
  struct pipe_capture *c = *state;
  log_batch(NULL, NULL);
  dup2(c->saved_stderr, STDERR_FILENO);
  close(c->saved_stderr);
  close(c->rd);
  free(c);
  log_set_level(LOG_LVL_INFO);
  return 0;
}

static void count_request(void *arg) { ((struct pipe_capture *)arg)->requests++; }

/* Everything written to the pipe so far (it holds far less than buf), NUL terminated in
 * buf; "" if nothing is there. */
static const char *read_pipe(struct pipe_capture *c, char *buf, size_t cap) {
  ssize_t n = read(c->rd, buf, cap - 1);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

static void test_batch_waits_for_flush(void **state) {
  struct pipe_capture *c = *state;
  char buf[8192];
  log_batch(count_request, c);
  LOG_INFO("one");
  LOG_WARN("two");
  LOG_DEBUG("filtered"); /* below the level: neither buffered nor a request */
  LOG_INFO("three");
  /* Nothing written yet, and one request for the whole batch. */
  assert_string_equal(read_pipe(c, buf, sizeof buf), "");
  assert_int_equal(c->requests, 1);
  log_flush();
  assert_matches(read_pipe(c, buf, sizeof buf),
                 "^" TS " INFO one\n" TS " WARNING two\n" TS " INFO three\n$");
  log_flush(); /* nothing buffered: writes nothing */
  assert_string_equal(read_pipe(c, buf, sizeof buf), "");
  /* The next line after a flush asks again. */
  LOG_INFO("four");
  assert_int_equal(c->requests, 2);
  log_batch(NULL, NULL); /* turning batching off flushes */
  assert_matches(read_pipe(c, buf, sizeof buf), "^" TS " INFO four\n$");
  LOG_INFO("five"); /* off: written at once */
  assert_matches(read_pipe(c, buf, sizeof buf), "^" TS " INFO five\n$");
  assert_int_equal(c->requests, 2);
}

static void test_batch_error_goes_at_once_in_order(void **state) {
  struct pipe_capture *c = *state;
  char buf[8192];
  log_batch(count_request, c);
  LOG_INFO("before");
  LOG_ERROR("failed code=%d", 5);
  assert_matches(read_pipe(c, buf, sizeof buf),
                 "^" TS " INFO before\n" TS " ERROR failed code=5\n$");
  assert_int_equal(c->requests, 1);
  LOG_ERROR("alone");
  assert_matches(read_pipe(c, buf, sizeof buf), "^" TS " ERROR alone\n$");
}

static void test_batch_full_buffer_is_written(void **state) {
  struct pipe_capture *c = *state;
  char buf[8192];
  char msg[901];
  memset(msg, 'y', 900);
  msg[900] = '\0';
  log_batch(count_request, c);
  /* Lines of about 930 bytes: the fifth does not fit in LOG_BATCH_BYTES with four others,
   * so the four leave (one write) and the fifth starts the next batch. */
  for (int i = 0; i < 5; i++) LOG_INFO("%d %s", i, msg);
  const char *got = read_pipe(c, buf, sizeof buf);
  size_t len = strlen(got);
  assert_true(len <= LOG_BATCH_BYTES);
  size_t lines = 0;
  for (const char *p = got; (p = strchr(p, '\n')); p++) lines++;
  assert_int_equal(lines, 4);
  assert_non_null(strstr(got, " INFO 3 yyy"));
  assert_null(strstr(got, " INFO 4 "));
  assert_int_equal(c->requests, 2);
  log_flush();
  assert_matches(read_pipe(c, buf, sizeof buf), "^" TS " INFO 4 y+\n$");
}

static void *log_from_thread(void *arg) {
  (void)arg;
  LOG_INFO("from another thread");
  return NULL;
}

static void test_batch_other_threads_write_at_once(void **state) {
  struct pipe_capture *c = *state;
  char buf[8192];
  log_batch(count_request, c);
  LOG_INFO("held");
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, log_from_thread, NULL), 0);
  pthread_join(t, NULL);
  assert_matches(read_pipe(c, buf, sizeof buf), "^" TS " INFO from another thread\n$");
  log_flush();
  assert_matches(read_pipe(c, buf, sizeof buf), "^" TS " INFO held\n$");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_level_parse_accepts),
      cmocka_unit_test(test_level_parse_rejects),
      cmocka_unit_test(test_limit_holds_back_and_counts),
      cmocka_unit_test_setup_teardown(test_filter_at_info, setup_capture, teardown_capture),
      cmocka_unit_test_setup_teardown(test_filter_at_error, setup_capture, teardown_capture),
      cmocka_unit_test_setup_teardown(test_filter_at_debug, setup_capture, teardown_capture),
      cmocka_unit_test_setup_teardown(test_long_line_truncated_to_one_line, setup_capture,
                                      teardown_capture),
      cmocka_unit_test_setup_teardown(test_batch_waits_for_flush, setup_pipe, teardown_pipe),
      cmocka_unit_test_setup_teardown(test_batch_error_goes_at_once_in_order, setup_pipe,
                                      teardown_pipe),
      cmocka_unit_test_setup_teardown(test_batch_full_buffer_is_written, setup_pipe, teardown_pipe),
      cmocka_unit_test_setup_teardown(test_batch_other_threads_write_at_once, setup_pipe,
                                      teardown_pipe),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
