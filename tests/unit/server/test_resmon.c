/* Unit tests for server/resmon: parsing of fake stat and meminfo files, CPU use from
 * the deltas of periodic samples, the limit decisions and their reasons, the periodic
 * callback, and a run against the real /proc. The loop is driven until on_sample
 * fires, each wait bounded by a timeout event. */
#include <errno.h>
#include <event2/event.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "compat.h"
#include "resmon.h"
#include "../testos.h"

#define WAIT_LIMIT_S 5

/* 1 GiB total, 120 MiB available: 88.28125% used. */
#define MEMINFO_120MB             \
  "MemTotal:        1048576 kB\n" \
  "MemFree:           40960 kB\n" \
  "MemAvailable:     122880 kB\n" \
  "Buffers:            1024 kB\n"

/* total 1000 jiffies (guest fields excluded), idle + iowait 800. */
#define STAT_A "cpu  100 0 100 700 100 0 0 0 0 0\n"
/* From STAT_A: total +1000 (guest 200 excluded), idle + iowait +450: 55% busy. */
#define STAT_B "cpu  400 50 150 1100 150 25 25 100 200 0\n"
/* From STAT_A: user +1000 only, 100% busy. */
#define STAT_BUSY "cpu  1100 0 100 700 100 0 0 0 0 0\n"

struct fx {
  char dir[300];
  struct event_base *base;
  resmon *m;
  int samples;
  int target;
  int timed_out;
  int free_in_cb; /* on_sample frees m */
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->base = compat_net_init() == 0 ? event_base_new() : NULL;
  if (!test_mkdtemp(f->dir, sizeof f->dir, "resmon") || !f->base) {
    if (f->base) event_base_free(f->base);
    free(f);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  resmon_free(f->m);
  char path[400];
  snprintf(path, sizeof path, "%s/stat", f->dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/meminfo", f->dir);
  unlink(path);
  rmdir(f->dir);
  event_base_free(f->base);
  free(f);
  return 0;
}

/* Replaces dir/name with `text`, or removes it when text is NULL. */
static void put_file(struct fx *f, const char *name, const char *text) {
  char path[400];
  snprintf(path, sizeof path, "%s/%s", f->dir, name);
  if (!text) {
    assert_int_equal(unlink(path), 0);
    return;
  }
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fputs(text, fp) >= 0, 1);
  assert_int_equal(fclose(fp), 0);
}

static void on_sample(void *arg) {
  struct fx *f = arg;
  f->samples++;
  if (f->free_in_cb) {
    resmon_free(f->m);
    f->m = NULL;
  }
  if (f->samples >= f->target) event_base_loopbreak(f->base);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct fx *f = arg;
  f->timed_out = 1;
  event_base_loopbreak(f->base);
}

/* Runs the loop until `n` more samples were taken; fails after WAIT_LIMIT_S. */
static void wait_samples(struct fx *f, int n) {
  f->target = f->samples + n;
  f->timed_out = 0;
  struct event *to = evtimer_new(f->base, timeout_cb, f);
  assert_non_null(to);
  struct timeval tv = {WAIT_LIMIT_S, 0};
  assert_int_equal(evtimer_add(to, &tv), 0);
  assert_int_equal(event_base_loop(f->base, 0), 0);
  event_free(to);
  assert_false(f->timed_out);
  assert_int_equal(f->samples, f->target);
}

/* Replaces f->m with a monitor on the fake files with these limits. */
static void start(struct fx *f, resmon_limits lim, uint32_t interval_ms) {
  resmon_free(f->m);
  f->m = NULL;
  resmon_opts o = RESMON_OPTS_INIT;
  o.limits = lim;
  o.interval_ms = interval_ms;
  o.proc_root = f->dir;
  o.on_sample = on_sample;
  o.arg = f;
  assert_int_equal(resmon_new(&f->m, f->base, &o), 0);
  assert_non_null(f->m);
}

static void test_first_sample_parses_files(void **state) {
  struct fx *f = *state;
  /* The real stat goes on with per-CPU lines and a very long "intr" line; only the
   * start of the file is read, so the cut is exercised too. */
  char stat[8192];
  int n = snprintf(stat, sizeof stat, "%scpu0 50 0 50 350 50 0 0 0 0 0\nintr 123456", STAT_A);
  while (n < 6000) n += snprintf(stat + n, sizeof stat - (size_t)n, " 1234567");
  snprintf(stat + n, sizeof stat - (size_t)n, "\nctxt 99\n");
  put_file(f, "stat", stat);
  /* A meminfo longer than what is read, MemAvailable well inside it. */
  char mem[8192];
  n = snprintf(mem, sizeof mem, "%s", MEMINFO_120MB);
  for (int i = 0; n < 6000; i++)
    n += snprintf(mem + n, sizeof mem - (size_t)n, "Field%d:    %d kB\n", i, i);
  put_file(f, "meminfo", mem);
  start(f, (resmon_limits){0}, 1000);
  const resmon_sample *s = resmon_last(f->m);
  assert_float_equal(s->cpu_percent, -1, 0);
  assert_int_equal(s->mem_total_kb, 1048576);
  assert_int_equal(s->mem_available_kb, 122880);
  assert_float_equal(s->mem_used_percent, 88.28125, 1e-4);
  assert_int_equal(f->samples, 0); /* the first sample does not fire on_sample */
}

/* Writes `stat`, waits for one sample and checks the CPU use it gave. */
static void expect_cpu(struct fx *f, const char *stat, double want) {
  put_file(f, "stat", stat);
  wait_samples(f, 1);
  const resmon_sample *s = resmon_last(f->m);
  if (s->cpu_percent < want - 1e-9 || s->cpu_percent > want + 1e-9)
    fail_msg("after '%s': cpu_percent %f, want %f", stat, s->cpu_percent, want);
}

static void test_cpu_percent_from_deltas(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){0}, 1);
  /* Guests are not added to the total, iowait counts as idle. */
  expect_cpu(f, STAT_B, 55);
  /* Counters that did not move keep the last value. */
  expect_cpu(f, STAT_B, 55);
  /* Only busy time: user +100. */
  expect_cpu(f, "cpu  500 50 150 1100 150 25 25 100 200 0\n", 100);
  /* Counters that went backwards only set a new baseline... */
  expect_cpu(f, "cpu  10 0 10 80 0 0 0 0 0 0\n", 100);
  /* ...from which the next delta counts: idle +100 only. */
  expect_cpu(f, "cpu  10 0 10 180 0 0 0 0 0 0\n", 0);
  /* iowait may go backwards on some kernels, and the busy fields with it: the result
   * stays within 0..100. */
  expect_cpu(f, "cpu  10 0 10 180 10 0 0 0 0 0\n", 0);
  expect_cpu(f, "cpu  60 0 10 180 0 0 0 0 0 0\n", 100); /* total +40, idle + iowait -10 */
  expect_cpu(f, "cpu  10 0 10 300 0 0 0 0 0 0\n", 0);   /* total +70, idle + iowait +120 */
}

static void test_cpu_line_of_old_kernels(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", "cpu 10 0 10 80\n");
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){0}, 1);
  expect_cpu(f, "cpu 20 0 20 160", 20); /* no final newline either */
}

static void test_bad_files_fail_new(void **state) {
  struct fx *f = *state;
  static const struct {
    const char *stat, *meminfo;
    int rc;
  } cases[] = {
      {NULL, MEMINFO_120MB, -ENOENT},
      {STAT_A, NULL, -ENOENT},
      {"", MEMINFO_120MB, -EBADMSG},
      {"cpu0 1 2 3 4\n", MEMINFO_120MB, -EBADMSG},
      {"intr 1\ncpu 1 2 3 4\n", MEMINFO_120MB, -EBADMSG},
      {"cpu 1 2 3\n", MEMINFO_120MB, -EBADMSG},
      {"cpu 1 2 x 4\n", MEMINFO_120MB, -EBADMSG},
      {"cpu 1 2 3 4 x\n", MEMINFO_120MB, -EBADMSG},
      {"cpu -1 2 3 4\n", MEMINFO_120MB, -EBADMSG},
      {"cpu 1 2 3 99999999999999999999999\n", MEMINFO_120MB, -EBADMSG},
      {STAT_A, "MemTotal: 1048576 kB\nMemFree: 1000 kB\n", -EBADMSG},
      {STAT_A, "MemAvailable: 1000 kB\n", -EBADMSG},
      {STAT_A, "MemTotal: 0 kB\nMemAvailable: 0 kB\n", -EBADMSG},
      {STAT_A, "MemTotal: kB\nMemAvailable: 10 kB\n", -EBADMSG},
      {STAT_A, "XMemTotal: 10 kB\nMemAvailable: 10 kB\n", -EBADMSG},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (cases[i].stat) put_file(f, "stat", cases[i].stat);
    if (cases[i].meminfo) put_file(f, "meminfo", cases[i].meminfo);
    resmon_opts o = RESMON_OPTS_INIT;
    o.proc_root = f->dir;
    resmon *sentinel = (resmon *)&o, *m = sentinel;
    int rc = resmon_new(&m, f->base, &o);
    if (rc != cases[i].rc || m != sentinel)
      fail_msg("case %zu: rc=%d want %d, out %s", i, rc, cases[i].rc,
               m == sentinel ? "untouched" : "set");
    if (cases[i].stat) put_file(f, "stat", NULL);
    if (cases[i].meminfo) put_file(f, "meminfo", NULL);
  }
  /* Nothing was left on the loop. */
  assert_int_equal(event_base_get_num_events(f->base, EVENT_BASE_COUNT_ADDED), 0);
}

static void test_bad_options(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  resmon_opts o = RESMON_OPTS_INIT;
  o.proc_root = f->dir;
  resmon *m = NULL;
  assert_int_equal(resmon_new(NULL, f->base, &o), -EINVAL);
  assert_int_equal(resmon_new(&m, NULL, &o), -EINVAL);
  o.interval_ms = 0;
  assert_int_equal(resmon_new(&m, f->base, &o), -EINVAL);
  o.interval_ms = 1000;
  o.limits.max_cpu_percent = 101;
  assert_int_equal(resmon_new(&m, f->base, &o), -EINVAL);
  o.limits.max_cpu_percent = 100;
  o.limits.max_memory_percent = 101;
  assert_int_equal(resmon_new(&m, f->base, &o), -EINVAL);
  assert_null(m);
  o.limits.max_memory_percent = 100;
  assert_int_equal(resmon_new(&m, f->base, &o), 0);
  resmon_free(m);
}

/* resmon_check's answer and reason. */
static void check_is(struct fx *f, int want, const char *why_want) {
  char why[128];
  memset(why, 'X', sizeof why);
  int ok = resmon_check(f->m, why, sizeof why);
  if (ok != want || strcmp(why, why_want) != 0)
    fail_msg("check=%d why='%.*s', want %d '%s'", ok, (int)sizeof why, why, want, why_want);
}

static void test_min_available_memory(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){.min_available_memory_mb = 256}, 1000);
  check_is(f, 0, "available memory 120 MB below the minimum of 256 MB");
  /* A check reads memory afresh, without waiting for a sample. */
  put_file(f, "meminfo", "MemTotal: 1048576 kB\nMemAvailable: 262144 kB\n");
  check_is(f, 1, "");
  assert_int_equal(resmon_last(f->m)->mem_available_kb, 262144);
  put_file(f, "meminfo", "MemTotal: 1048576 kB\nMemAvailable: 262143 kB\n");
  check_is(f, 0, "available memory 255 MB below the minimum of 256 MB");
  /* An unreadable meminfo leaves the last reading in force. */
  put_file(f, "meminfo", NULL);
  check_is(f, 0, "available memory 255 MB below the minimum of 256 MB");
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){.min_available_memory_mb = 120}, 1000);
  check_is(f, 1, "");
}

static void test_max_memory_percent(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){.max_memory_percent = 80}, 1000);
  check_is(f, 0, "memory use 88.3% over the limit of 80%");
  put_file(f, "meminfo", "MemTotal: 1000000 kB\nMemAvailable: 200000 kB\n");
  check_is(f, 1, ""); /* exactly at the limit is not over it */
  start(f, (resmon_limits){.max_memory_percent = 89}, 1000);
  put_file(f, "meminfo", MEMINFO_120MB);
  check_is(f, 1, "");
}

static void test_max_cpu_percent(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){.max_cpu_percent = 1}, 1);
  /* Not known before the second sample: the check passes rather than waits. */
  check_is(f, 1, "");
  start(f, (resmon_limits){.max_cpu_percent = 50}, 1);
  expect_cpu(f, STAT_B, 55);
  check_is(f, 0, "CPU use 55.0% over the limit of 50%");
  put_file(f, "stat", STAT_A);
  start(f, (resmon_limits){.max_cpu_percent = 55}, 1);
  expect_cpu(f, STAT_B, 55);
  check_is(f, 1, "");
}

static void test_zero_disables_and_order(void **state) {
  struct fx *f = *state;
  static const char *const full = "MemTotal: 1048576 kB\nMemAvailable: 0 kB\n";
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", full);
  start(f, (resmon_limits){0}, 1);
  expect_cpu(f, STAT_BUSY, 100);
  check_is(f, 1, "");
  /* Everything over: the first check in order names the reason. */
  put_file(f, "stat", STAT_A);
  resmon_limits all = {
      .max_cpu_percent = 10, .max_memory_percent = 10, .min_available_memory_mb = 10};
  start(f, all, 1);
  expect_cpu(f, STAT_BUSY, 100);
  check_is(f, 0, "available memory 0 MB below the minimum of 10 MB");
  put_file(f, "stat", STAT_A);
  all.min_available_memory_mb = 0;
  start(f, all, 1);
  expect_cpu(f, STAT_BUSY, 100);
  check_is(f, 0, "memory use 100.0% over the limit of 10%");
  put_file(f, "stat", STAT_A);
  all.max_memory_percent = 0;
  start(f, all, 1);
  expect_cpu(f, STAT_BUSY, 100);
  check_is(f, 0, "CPU use 100.0% over the limit of 10%");
}

static void test_why_buffer(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){.min_available_memory_mb = 256}, 1000);
  char why[11];
  memset(why, 'X', sizeof why);
  assert_int_equal(resmon_check(f->m, why, sizeof why), 0);
  assert_string_equal(why, "available ");
  assert_int_equal(resmon_check(f->m, NULL, 0), 0);
}

static void test_on_sample_periodic(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){0}, 2);
  wait_samples(f, 5);
  /* Freeing from the callback stops the timer. */
  f->free_in_cb = 1;
  wait_samples(f, 1);
  assert_null(f->m);
  assert_int_equal(event_base_get_num_events(f->base, EVENT_BASE_COUNT_ADDED), 0);
}

static void test_failed_sample_keeps_last(void **state) {
  struct fx *f = *state;
  put_file(f, "stat", STAT_A);
  put_file(f, "meminfo", MEMINFO_120MB);
  start(f, (resmon_limits){0}, 1);
  expect_cpu(f, STAT_B, 55);
  put_file(f, "stat", NULL);
  put_file(f, "meminfo", NULL);
  wait_samples(f, 2); /* still fires, with the last readings */
  const resmon_sample *s = resmon_last(f->m);
  assert_float_equal(s->cpu_percent, 55, 1e-6);
  assert_int_equal(s->mem_available_kb, 122880);
  put_file(f, "meminfo", "MemTotal: 1048576 kB\nMemAvailable: 524288 kB\n");
  /* The delta spans the gap: from STAT_B, busy +100 and idle +100. */
  expect_cpu(f, "cpu  500 50 150 1200 150 25 25 100 200 0\n", 50);
  assert_int_equal(s->mem_available_kb, 524288);
}

static void test_real_proc(void **state) {
  struct fx *f = *state;
  resmon_opts o = RESMON_OPTS_INIT;
  o.interval_ms = 20;
  o.on_sample = on_sample;
  o.arg = f;
  assert_int_equal(resmon_new(&f->m, f->base, &o), 0);
  const resmon_sample *s = resmon_last(f->m);
  assert_true(s->mem_total_kb > 0);
  assert_true(s->mem_available_kb <= s->mem_total_kb);
  assert_true(s->mem_used_percent >= 0 && s->mem_used_percent <= 100);
  assert_true(s->cpu_percent == -1);
  /* Two reads within one jiffy leave it unknown; a few ticks are plenty. */
  for (int i = 0; i < 50 && s->cpu_percent < 0; i++) wait_samples(f, 1);
  assert_true(s->cpu_percent >= 0 && s->cpu_percent <= 100);
  char why[128];
  assert_int_equal(resmon_check(f->m, why, sizeof why), 1);
  assert_string_equal(why, "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_first_sample_parses_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cpu_percent_from_deltas, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cpu_line_of_old_kernels, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_files_fail_new, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
      cmocka_unit_test_setup_teardown(test_min_available_memory, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_memory_percent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_max_cpu_percent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zero_disables_and_order, setup, teardown),
      cmocka_unit_test_setup_teardown(test_why_buffer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_on_sample_periodic, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_sample_keeps_last, setup, teardown),
      cmocka_unit_test_setup_teardown(test_real_proc, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
