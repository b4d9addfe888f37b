/* Unit tests for common/log: level parsing and filtering of what reaches stderr. */
#include <errno.h>
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
      {"DEBUG", LOG_LVL_DEBUG},     {"debug", LOG_LVL_DEBUG},   {"Info", LOG_LVL_INFO},
      {"INFO", LOG_LVL_INFO},       {"WARNING", LOG_LVL_WARNING}, {"warning", LOG_LVL_WARNING},
      {"WARN", LOG_LVL_WARNING},    {"wArN", LOG_LVL_WARNING},  {"ERROR", LOG_LVL_ERROR},
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
  static const char *const cases[] = {"", "TRACE", "INF", "INFOO", " INFO", "INFO ", "WARNINGS", "0", "ERR"};
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
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
