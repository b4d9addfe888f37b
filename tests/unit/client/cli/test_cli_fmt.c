/* Unit tests for what the prismq CLI prints about runs (client/cli/cli-fmt.c): the exit
 * status a run's outcome gives (what scripts depend on), the outcome line, the EXIT
 * column, durations and times for people, status names, text from the server made
 * harmless for a terminal, RPC errors, and the deep copy of a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "testcapture.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define ST(x)        PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_##x

static cli_run mkrun(int status, int pid, int exit_code, int sig, const char *error) {
  cli_run r = PRISMQ__RUNNER__V1__RUN__INIT;
  r.run_id = "01RUN";
  r.status = status;
  r.pid = pid;
  r.exit_code = exit_code;
  r.term_signal = sig;
  if (error) r.error_message = (char *)error;
  return r;
}

/* The documented table: 0 completed, the exit code, 128 + signal, 75, 124, 69, 127 for
 * a program that never ran, 99 while active; 1 for a status this CLI does not know. */
static void test_run_exit(void **state) {
  (void)state;
  static const struct {
    int status, exit_code, sig, want;
  } cases[] = {
      {ST(COMPLETED), 0, 0, CLI_EXIT_OK},
      {ST(FAILED), 3, 0, 3},
      {ST(FAILED), 255, 0, 255},
      {ST(FAILED), -1, SIGKILL, 128 + SIGKILL},
      {ST(FAILED), -1, SIGSEGV, 128 + SIGSEGV},
      {ST(FAILED), 0, 0, CLI_EXIT_NOT_STARTED},   /* could not start */
      {ST(FAILED), 256, 0, CLI_EXIT_NOT_STARTED}, /* not an exit code a shell could give */
      {ST(FAILED), -1, 0, CLI_EXIT_NOT_STARTED},
      {ST(FAILED), 7, 200, 7}, /* no signal number: the exit code */
      {ST(CANCELLED), -1, SIGTERM, CLI_EXIT_CANCELLED},
      {ST(TIMED_OUT), -1, SIGKILL, CLI_EXIT_TIMED_OUT},
      {ST(LOST), 0, 0, CLI_EXIT_LOST},
      {ST(QUEUED), 0, 0, CLI_EXIT_ACTIVE},
      {ST(RUNNING), 0, 0, CLI_EXIT_ACTIVE},
      {ST(UNSPECIFIED), 0, 0, CLI_EXIT_ERROR},
      {42, 0, 0, CLI_EXIT_ERROR},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    cli_run r = mkrun(cases[i].status, 100, cases[i].exit_code, cases[i].sig, NULL);
    int got = cli_run_exit(&r);
    if (got != cases[i].want) fail_msg("case %zu: exit %d, expected %d", i, got, cases[i].want);
  }
}

static char *outcome(const cli_run *r) {
  struct memout m;
  cli_print_outcome(memout_begin(&m), r);
  return memout_end(&m);
}

/* "RUN STATUS[: detail]": the signal, else the exit code of a FAILED run, else the first
 * line of error_message, its control characters shown as '?'. */
static void test_outcome(void **state) {
  (void)state;
  const struct {
    cli_run r;
    const char *want;
  } cases[] = {
      {mkrun(ST(COMPLETED), 9, 0, 0, NULL), "01RUN COMPLETED\n"},
      {mkrun(ST(FAILED), 9, -1, SIGKILL, "ignored"),
       "01RUN FAILED: killed by signal 9 (SIGKILL)\n"},
      {mkrun(ST(FAILED), 9, 3, 0, "last stderr line"), "01RUN FAILED: exit code 3\n"},
      {mkrun(ST(FAILED), 0, 0, 0, "cannot start \"x\": No such file or directory"),
       "01RUN FAILED: cannot start \"x\": No such file or directory\n"},
      {mkrun(ST(CANCELLED), 9, -1, SIGTERM, "cancelled"), "01RUN CANCELLED: cancelled\n"},
      {mkrun(ST(TIMED_OUT), 9, -1, SIGTERM, "timed out after 300 ms\nmore"),
       "01RUN TIMED_OUT: timed out after 300 ms\n"},
      {mkrun(ST(LOST), 9, 0, 0, "gone\x1b]0;pwned\x07"), "01RUN LOST: gone?]0;pwned?\n"},
      {mkrun(ST(RUNNING), 9, 0, 0, NULL), "01RUN RUNNING\n"},
      {mkrun(42, 9, 0, 0, NULL), "01RUN ?\n"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *got = outcome(&cases[i].r);
    assert_string_equal(got, cases[i].want);
    free(got);
  }
  /* A signal without a name: a real-time one (Linux's SIGRTMIN + 3). */
  int rt = 37;
  cli_run r = mkrun(ST(FAILED), 9, -1, rt, NULL);
  char *got = outcome(&r);
  char want[96];
  snprintf(want, sizeof want, "01RUN FAILED: killed by signal %d (signal %d)\n", rt, rt);
  assert_string_equal(got, want);
  free(got);
}

/* The EXIT column: "-" while active, for a run that never ran a process, and for a LOST
 * one (its end was not seen); else the signal's name or the exit code. */
static void test_format_exit(void **state) {
  (void)state;
  const struct {
    cli_run r;
    const char *want;
  } cases[] = {
      {mkrun(ST(RUNNING), 9, 0, 0, NULL), "-"},
      {mkrun(ST(QUEUED), 0, 0, 0, NULL), "-"},
      {mkrun(ST(COMPLETED), 9, 0, 0, NULL), "0"},
      {mkrun(ST(FAILED), 9, 3, 0, NULL), "3"},
      {mkrun(ST(FAILED), 9, -1, SIGKILL, NULL), "SIGKILL"},
      {mkrun(ST(CANCELLED), 9, -1, SIGTERM, NULL), "SIGTERM"},
      {mkrun(ST(CANCELLED), 0, 0, 0, NULL), "-"}, /* cancelled while queued */
      {mkrun(ST(FAILED), 0, 0, 0, NULL), "-"},    /* could not start */
      {mkrun(ST(LOST), 9, 0, 0, NULL), "-"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char buf[32];
    cli_format_exit(buf, sizeof buf, &cases[i].r);
    if (strcmp(buf, cases[i].want) != 0)
      fail_msg("case %zu: \"%s\", expected \"%s\"", i, buf, cases[i].want);
  }
}

static void test_format_duration(void **state) {
  (void)state;
  static const struct {
    uint64_t ms;
    const char *want;
  } cases[] = {
      {0, "0ms"},          {850, "850ms"},       {999, "999ms"},
      {1000, "1.0s"},      {4250, "4.2s"},       {59999, "59.9s"},
      {60000, "1m00s"},    {184000, "3m04s"},    {3599999, "59m59s"},
      {3600000, "1h00m"},  {7500000, "2h05m"},   {86399999, "23h59m"},
      {86400000, "1d00h"}, {273600000, "3d04h"}, {UINT64_MAX, "213503982334d14h"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char buf[32];
    cli_format_duration(buf, sizeof buf, cases[i].ms);
    if (strcmp(buf, cases[i].want) != 0)
      fail_msg("%llu ms: \"%s\", expected \"%s\"", (unsigned long long)cases[i].ms, buf,
               cases[i].want);
  }
  /* A short buffer truncates, never overflows. */
  char small[4];
  cli_format_duration(small, sizeof small, 273600000);
  assert_string_equal(small, "3d0");
}

static void test_format_time(void **state) {
  (void)state;
  char *tz = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
  test_setenv("TZ", "UTC");
  tzset();
  char buf[32];
  cli_format_time(buf, sizeof buf, INT64_C(1700000000123));
  assert_string_equal(buf, "2023-11-14 22:13:20");
  cli_format_time(buf, sizeof buf, 0);
  assert_string_equal(buf, "-");
  cli_format_time(buf, sizeof buf, -5);
  assert_string_equal(buf, "-");
  cli_format_time(buf, 8, INT64_C(1700000000123)); /* too short for the time: "-" */
  assert_string_equal(buf, "-");
  test_setenv("TZ", tz);
  free(tz);
  tzset();
}

static void test_status_names(void **state) {
  (void)state;
  static const struct {
    int st;
    const char *name;
    int terminal;
  } cases[] = {
      {ST(UNSPECIFIED), "UNSPECIFIED", 0},
      {ST(QUEUED), "QUEUED", 0},
      {ST(RUNNING), "RUNNING", 0},
      {ST(COMPLETED), "COMPLETED", 1},
      {ST(FAILED), "FAILED", 1},
      {ST(CANCELLED), "CANCELLED", 1},
      {ST(TIMED_OUT), "TIMED_OUT", 1},
      {ST(LOST), "LOST", 1},
      {99, "?", 0},
      {-1, "?", 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    assert_string_equal(cli_status_name(cases[i].st), cases[i].name);
    assert_int_equal(cli_status_terminal(cases[i].st), cases[i].terminal);
  }
}

static char *put_text(const char *s, const char *newline) {
  struct memout m;
  cli_put_text(memout_begin(&m), s, newline);
  return memout_end(&m);
}

/* Text from the server cannot drive the terminal: control characters and DEL become
 * '?'; UTF-8 stays; a newline ends the text or is replaced as asked. */
static void test_put_text(void **state) {
  (void)state;
  static const struct {
    const char *in, *newline, *want;
  } cases[] = {
      {"plain", NULL, "plain"},
      {"\x1b[2J\x07\x7f\t\r", NULL, "?[2J????"},
      {"caf\xc3\xa9 \xe2\x82\xac", NULL, "caf\xc3\xa9 \xe2\x82\xac"},
      {"first\nsecond", NULL, "first"},
      {"first\nsecond\n", "\n  ", "first\n  second\n  "},
      {"", NULL, ""},
      {"\n", NULL, ""},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char *got = put_text(cases[i].in, cases[i].newline);
    assert_string_equal(got, cases[i].want);
    free(got);
  }
}

/* "prismq: CODE_NAME: message" on stderr, exit status 1. */
static void test_rpc_error(void **state) {
  (void)state;
  prismq_status st = {.code = PRISMQ_CODE_NOT_FOUND,
                      .message = "run \"x\" not found\x1b[0m\nsecond line"};
  capture_start();
  int code = cli_rpc_error(&st);
  capture_stop();
  assert_int_equal(code, CLI_EXIT_ERROR);
  assert_string_equal(cap.err, "prismq: NOT_FOUND: run \"x\" not found?[0m\n");
  assert_string_equal(cap.out, "");
  prismq_status st2 = {.code = PRISMQ_CODE_UNAVAILABLE};
  capture_start();
  cli_rpc_error(&st2);
  capture_stop();
  assert_string_equal(cap.err, "prismq: UNAVAILABLE: \n");
}

/* A deep copy: equal field by field, nothing shared. */
static void test_run_dup(void **state) {
  (void)state;
  cli_run r = mkrun(ST(FAILED), 77, 3, 0, "oops");
  Prismq__Runner__V1__Run__LabelsEntry l = PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT, *lp = &l;
  l.key = "k";
  l.value = "v";
  r.labels = &lp;
  r.n_labels = 1;
  r.created_at_ms = 123456789;
  cli_run *d = cli_run_dup(&r);
  assert_ptr_not_equal(d->run_id, r.run_id);
  assert_string_equal(d->run_id, "01RUN");
  assert_string_equal(d->error_message, "oops");
  assert_int_equal(d->exit_code, 3);
  assert_int_equal(d->pid, 77);
  assert_int_equal(d->created_at_ms, 123456789);
  assert_int_equal(d->n_labels, 1);
  assert_ptr_not_equal(d->labels[0], &l);
  assert_string_equal(d->labels[0]->value, "v");
  prismq_run_free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_exit),    cmocka_unit_test(test_outcome),
      cmocka_unit_test(test_format_exit), cmocka_unit_test(test_format_duration),
      cmocka_unit_test(test_format_time), cmocka_unit_test(test_status_names),
      cmocka_unit_test(test_put_text),    cmocka_unit_test(test_rpc_error),
      cmocka_unit_test(test_run_dup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
