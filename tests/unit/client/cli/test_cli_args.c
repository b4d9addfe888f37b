/* Unit tests for the prismq CLI's command-line parsing (client/cli/cli-args.c), and for
 * the commands' option handling as a user meets it (each cmd-*.c exec with argv, as
 * prismq.c's main calls it): numbers, durations, KEY=VALUE maps, status names, the
 * count of arguments, --help, and every refusal with its message and exit status 2.
 * No command here gets as far as connecting (the target is a socket nobody listens on,
 * should one try). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "testcapture.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- numbers ------------------------------------------------------------------------ */

static void test_parse_uint(void **state) {
  (void)state;
  static const struct {
    const char *s;
    uint64_t max, want;
    int rc;
  } cases[] = {
      {"0", 10, 0, 0},
      {"42", UINT64_MAX, 42, 0},
      {"007", 10, 7, 0},
      {"100", 100, 100, 0},
      {"101", 100, 0, -ERANGE},
      {"18446744073709551615", UINT64_MAX, UINT64_MAX, 0},
      {"18446744073709551616", UINT64_MAX, 0, -ERANGE},
      {"99999999999999999999999", UINT64_MAX, 0, -ERANGE},
      {"", 10, 0, -EINVAL},
      {"-1", 10, 0, -EINVAL},
      {"+1", 10, 0, -EINVAL},
      {" 1", 10, 0, -EINVAL},
      {"1 ", 10, 0, -EINVAL},
      {"1x", 10, 0, -EINVAL},
      {"0x10", 100, 0, -EINVAL},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    uint64_t v = 12345;
    int rc = cli_parse_uint(&v, cases[i].s, cases[i].max);
    if (rc != cases[i].rc) fail_msg("\"%s\": %d, expected %d", cases[i].s, rc, cases[i].rc);
    assert_int_equal(v, rc == 0 ? cases[i].want : 12345); /* untouched on failure */
  }
}

/* ---- durations ------------------------------------------------------------------------ */

static void test_duration_ok(void **state) {
  (void)state;
  static const struct {
    const char *s;
    uint32_t ms;
  } cases[] = {
      {"0", 0},
      {"0s", 0},
      {"500ms", 500},
      {"30s", 30000},
      {"5m", 300000},
      {"2h", 7200000},
      {"1h30m", 5400000},
      {"1m1ms", 60001},
      {"1h2m3s4ms", 3723004},
      {"90s", 90000},
      {"1193h2m47s294ms", 4294967294u}, /* UINT32_MAX - 1: the longest */
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    uint32_t ms = 7;
    capture_start();
    int rc = cli_opt_duration(&ms, &cli_cmd_run, "timeout", cases[i].s);
    capture_stop();
    if (rc != 0) fail_msg("\"%s\" refused: %s", cases[i].s, cap.err);
    assert_int_equal(ms, cases[i].ms);
    assert_string_equal(cap.err, "");
  }
}

/* Refused with exit status 2, the option and value named, the usage line and the
 * pointer to --help; the output is untouched. UINT32_MAX ms itself is refused: the
 * library reads it as "no deadline". */
static void test_duration_bad(void **state) {
  (void)state;
  static const char *const bad[] = {"",    "5",  "ms",   "5x", "1.5s", "-5s", " 5s",  "5s ",
                                    "5 s", "5S", "1h30", "s5", "00",   "5d",  "1e3ms"};
  static const char *const too_long[] = {"4294967295ms", "1193h2m47s295ms",       "1194h",
                                         "50000h",       "99999999999999999999h", "4294967296ms"};
  for (size_t i = 0; i < ARRAY_LEN(bad) + ARRAY_LEN(too_long); i++) {
    int range = i >= ARRAY_LEN(bad);
    const char *s = range ? too_long[i - ARRAY_LEN(bad)] : bad[i];
    uint32_t ms = 7;
    capture_start();
    int rc = cli_opt_duration(&ms, &cli_cmd_wait, "timeout", s);
    capture_stop();
    if (rc != CLI_EXIT_USAGE) fail_msg("\"%s\" taken (%u ms)", s, ms);
    assert_int_equal(ms, 7);
    char want[256];
    snprintf(want, sizeof want,
             range ? "prismq wait: --timeout %s: too long (at most 49 days)\n"
                   : "prismq wait: --timeout %s: not a duration (e.g. 500ms, 30s, 5m, 1h)\n",
             s);
    if (strncmp(cap.err, want, strlen(want)) != 0) fail_msg("\"%s\": got %s", s, cap.err);
    assert_non_null(
        strstr(cap.err,
               "\nusage: prismq wait RUN [--timeout DURATION] [--no-progress] [--json]\n"
               "Try 'prismq wait --help'.\n"));
  }
}

/* ---- maps and statuses ------------------------------------------------------------ */

static void test_opt_map(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *d =
      &prismq__runner__v1__start_run_request__parameters_entry__descriptor;
  char a1[] = "bytes=1024", a2[] = "empty=", a3[] = "expr=a=b==c", a4[] = "utf=\xc3\xa9t\xc3\xa9";
  char *args[] = {a1, a2, a3, a4};
  static const char *const keys[] = {"bytes", "empty", "expr", "utf"};
  static const char *const values[] = {"1024", "", "a=b==c", "\xc3\xa9t\xc3\xa9"};
  cli_map m = {0, NULL};
  for (size_t i = 0; i < 4; i++)
    assert_int_equal(cli_opt_map(&m, d, &cli_cmd_run, "param", args[i]), 0);
  assert_int_equal(m.n, 4);
  for (size_t i = 0; i < 4; i++) {
    Prismq__Runner__V1__StartRunRequest__ParametersEntry *e =
        (Prismq__Runner__V1__StartRunRequest__ParametersEntry *)m.items[i];
    assert_ptr_equal(e->base.descriptor, d);
    assert_string_equal(e->key, keys[i]);
    assert_string_equal(e->value, values[i]);
    assert_ptr_equal(e->key, args[i]); /* in place: the argument itself */
  }
  /* The entries make a request that packs and reads back. */
  Prismq__Runner__V1__StartRunRequest req = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  req.module_id = "m";
  req.n_parameters = m.n;
  req.parameters = (Prismq__Runner__V1__StartRunRequest__ParametersEntry **)m.items;
  uint8_t buf[256];
  size_t n = prismq__runner__v1__start_run_request__get_packed_size(&req);
  assert_true(n <= sizeof buf);
  prismq__runner__v1__start_run_request__pack(&req, buf);
  Prismq__Runner__V1__StartRunRequest *back =
      prismq__runner__v1__start_run_request__unpack(NULL, n, buf);
  assert_non_null(back);
  assert_int_equal(back->n_parameters, 4);
  assert_string_equal(back->parameters[2]->value, "a=b==c");
  prismq__runner__v1__start_run_request__free_unpacked(back, NULL);
  cli_map_clear(&m);
  assert_int_equal(m.n, 0);
  assert_null(m.items);
  cli_map_clear(&m);

  /* No '=', or nothing before it. */
  char b1[] = "novalue", b2[] = "=v", b3[] = "";
  char *bad[] = {b1, b2, b3};
  const ProtobufCMessageDescriptor *ld =
      &prismq__runner__v1__list_runs_request__labels_entry__descriptor;
  for (size_t i = 0; i < 3; i++) {
    char copy[16];
    snprintf(copy, sizeof copy, "%s", bad[i]);
    capture_start();
    int rc = cli_opt_map(&m, ld, &cli_cmd_ls, "label", bad[i]);
    capture_stop();
    assert_int_equal(rc, CLI_EXIT_USAGE);
    assert_int_equal(m.n, 0);
    assert_string_equal(bad[i], copy); /* not cut */
    char want[128];
    snprintf(want, sizeof want, "prismq ls: --label %s: want KEY=VALUE\nusage: prismq ls ", copy);
    assert_int_equal(strncmp(cap.err, want, strlen(want)), 0);
  }
  cli_map_clear(&m);
}

static void test_parse_status(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int want;
  } ok[] = {
      {"queued", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_QUEUED},
      {"RUNNING", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING},
      {"Completed", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_COMPLETED},
      {"run_status_failed", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED},
      {"RUN_STATUS_CANCELLED", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_CANCELLED},
      {"timed_out", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_TIMED_OUT},
      {"Run_Status_Lost", PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST},
  };
  for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
    int st = -1;
    assert_int_equal(cli_parse_status(&st, ok[i].s), 0);
    assert_int_equal(st, ok[i].want);
  }
  /* UNSPECIFIED is no status a run has. */
  static const char *const bad[] = {
      "",         "unspecified", "RUN_STATUS_UNSPECIFIED",    "RUN_STATUS_", "run", "timed-out",
      "timedout", " running",    "RUN_STATUS_RUN_STATUS_LOST"};
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    int st = -1;
    if (cli_parse_status(&st, bad[i]) != -EINVAL) fail_msg("\"%s\" taken", bad[i]);
    assert_int_equal(st, -1);
  }
}

/* ---- commands ----------------------------------------------------------------------- */

/* Runs command `cmd` with the arguments after its name (NULL-terminated), as main does:
 * argv[0] "prismq NAME", getopt reset. Returns its exit status; cap holds its output. */
static int run_cmd(const struct cli_cmd *cmd, const char *const *args) {
  char name[64], *argv[16], store[16][128];
  snprintf(name, sizeof name, "prismq %s", cmd->name);
  int argc = 0;
  argv[argc++] = name;
  for (; args[argc - 1]; argc++) {
    assert_true(argc < 15);
    snprintf(store[argc], sizeof store[argc], "%s", args[argc - 1]);
    argv[argc] = store[argc];
  }
  argv[argc] = NULL;
  cli_ctx ctx = {PRISMQ_CLIENT_OPTS_INIT, NULL, NULL};
  ctx.opts.target = "unix:/nonexistent/prismq-test.sock";
  optind = 0;
  capture_start();
  int code = cmd->exec(&ctx, argc, argv);
  capture_stop();
  assert_null(ctx.client); /* nothing here may connect */
  return code;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Usage errors: exit status 2, "prismq NAME: what", the usage line, the hint; nothing
 * on stdout. */
static void test_usage_errors(void **state) {
  (void)state;
  const struct {
    const struct cli_cmd *cmd;
    const char *const *args;
    const char *first_line;
  } cases[] = {
      {&cli_cmd_run, ARGS("--json"), "prismq run: missing argument"},
      {&cli_cmd_run, ARGS("m1", "m2"), "prismq run: unexpected argument 'm2'"},
      {&cli_cmd_run, ARGS("m", "-p", "x"), "prismq run: --param x: want KEY=VALUE"},
      {&cli_cmd_run, ARGS("m", "--label", "=x"), "prismq run: --label =x: want KEY=VALUE"},
      {&cli_cmd_run, ARGS("m", "--timeout", "soon"),
       "prismq run: --timeout soon: not a duration (e.g. 500ms, 30s, 5m, 1h)"},
      {&cli_cmd_run, ARGS("m", "-f", "--json"),
       "prismq run: --json and --follow exclude each other (the output is not JSON)"},
      {&cli_cmd_ls, ARGS("--status", "sleeping"),
       "prismq ls: --status sleeping: not a run status (e.g. running, failed)"},
      {&cli_cmd_ls, ARGS("--limit", "ten"), "prismq ls: --limit ten: not a number"},
      {&cli_cmd_ls, ARGS("--limit", "-1"), "prismq ls: --limit -1: not a number"},
      {&cli_cmd_ls, ARGS("extra"), "prismq ls: unexpected argument 'extra'"},
      {&cli_cmd_wait, ARGS("r", "--timeout", "1y"),
       "prismq wait: --timeout 1y: not a duration (e.g. 500ms, 30s, 5m, 1h)"},
      {&cli_cmd_wait, ARGS("--json"), "prismq wait: missing argument"},
      {&cli_cmd_cancel, ARGS("r", "--grace", "1194h"),
       "prismq cancel: --grace 1194h: too long (at most 49 days)"},
      {&cli_cmd_cancel, ARGS("a", "b"), "prismq cancel: unexpected argument 'b'"},
      {&cli_cmd_logs, ARGS("r", "--from", "x1"), "prismq logs: --from x1: not a sequence number"},
      {&cli_cmd_logs, ARGS("-f"), "prismq logs: missing argument"},
      {&cli_cmd_status, ARGS("a", "b"), "prismq status: unexpected argument 'b'"},
      {&cli_cmd_status, ARGS("--json"), "prismq status: missing argument"},
      {&cli_cmd_modules, ARGS("extra"), "prismq modules: unexpected argument 'extra'"},
      {&cli_cmd_health, ARGS("a", "b"), "prismq health: unexpected argument 'b'"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    int code = run_cmd(cases[i].cmd, cases[i].args);
    if (code != CLI_EXIT_USAGE) fail_msg("case %zu: exit %d, stderr: %s", i, code, cap.err);
    char want[512];
    snprintf(want, sizeof want, "%s\nusage: prismq %s %s\nTry 'prismq %s --help'.\n",
             cases[i].first_line, cases[i].cmd->name, cases[i].cmd->args, cases[i].cmd->name);
    assert_string_equal(cap.err, want);
    assert_string_equal(cap.out, "");
  }
}

/* Unknown options and missing option arguments: getopt's own message, naming the
 * command, then the usage line and the hint. */
static void test_unknown_options(void **state) {
  (void)state;
  const struct {
    const struct cli_cmd *cmd;
    const char *const *args;
    const char *getopt_says;
  } cases[] = {
      {&cli_cmd_run, ARGS("m", "--bogus"), "prismq run: unrecognized option '--bogus'\n"},
      {&cli_cmd_run, ARGS("m", "-x"), "prismq run: invalid option -- 'x'\n"},
      {&cli_cmd_run, ARGS("m", "--timeout"),
       "prismq run: option '--timeout' requires an argument\n"},
      {&cli_cmd_ls, ARGS("--json=yes"), "prismq ls: option '--json' doesn't allow an argument\n"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    int code = run_cmd(cases[i].cmd, cases[i].args);
    assert_int_equal(code, CLI_EXIT_USAGE);
    char want[512];
    snprintf(want, sizeof want, "%susage: prismq %s %s\nTry 'prismq %s --help'.\n",
             cases[i].getopt_says, cases[i].cmd->name, cases[i].cmd->args, cases[i].cmd->name);
    assert_string_equal(cap.err, want);
  }
}

/* --help and -h print the command's help on stdout and exit 0, whatever else is given. */
static void test_help(void **state) {
  (void)state;
  const struct cli_cmd *cmds[] = {&cli_cmd_run,     &cli_cmd_ls,    &cli_cmd_status,
                                  &cli_cmd_logs,    &cli_cmd_wait,  &cli_cmd_cancel,
                                  &cli_cmd_modules, &cli_cmd_health};
  for (size_t i = 0; i < ARRAY_LEN(cmds); i++) {
    for (int form = 0; form < 2; form++) {
      int code = run_cmd(cmds[i], form ? ARGS("-h") : ARGS("x", "--help", "y", "z"));
      assert_int_equal(code, CLI_EXIT_OK);
      char want[8192];
      snprintf(want, sizeof want, "usage: prismq %s %s\n\n%s.\n\n%s", cmds[i]->name, cmds[i]->args,
               cmds[i]->summary, cmds[i]->help);
      assert_string_equal(cap.out, want);
      assert_string_equal(cap.err, "");
    }
  }
}

/* The count of arguments left after the options. */
static void test_check_args(void **state) {
  (void)state;
  char a0[] = "prismq x", a1[] = "one", a2[] = "two";
  char *argv[] = {a0, a1, a2, NULL};
  optind = 1;
  assert_int_equal(cli_check_args(&cli_cmd_status, 3, argv, 1, 2), 0);
  assert_int_equal(cli_check_args(&cli_cmd_status, 3, argv, 2, 2), 0);
  assert_int_equal(cli_check_args(&cli_cmd_status, 1, argv, 0, 0), 0);
  capture_start();
  int rc = cli_check_args(&cli_cmd_status, 3, argv, 3, 3);
  capture_stop();
  assert_int_equal(rc, CLI_EXIT_USAGE);
  assert_int_equal(strncmp(cap.err, "prismq status: missing argument\n", 32), 0);
  capture_start();
  rc = cli_check_args(&cli_cmd_status, 3, argv, 0, 1);
  capture_stop();
  assert_int_equal(rc, CLI_EXIT_USAGE);
  assert_int_equal(strncmp(cap.err, "prismq status: unexpected argument 'two'\n", 41), 0);
  /* A usage error without a message: only the usage line and the hint. */
  capture_start();
  rc = cli_usage_error(&cli_cmd_health, NULL);
  capture_stop();
  assert_int_equal(rc, CLI_EXIT_USAGE);
  char want[256];
  snprintf(want, sizeof want, "usage: prismq health %s\nTry 'prismq health --help'.\n",
           cli_cmd_health.args);
  assert_string_equal(cap.err, want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_uint),      cmocka_unit_test(test_duration_ok),
      cmocka_unit_test(test_duration_bad),    cmocka_unit_test(test_opt_map),
      cmocka_unit_test(test_parse_status),    cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_unknown_options), cmocka_unit_test(test_help),
      cmocka_unit_test(test_check_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
