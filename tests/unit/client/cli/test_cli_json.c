/* Unit tests for the prismq CLI's JSON output (client/cli/cli-json.c): string escaping
 * (quotes, backslashes, every control character, DEL), valid UTF-8 kept as it is, each
 * byte of invalid UTF-8 (stray continuation bytes, overlong forms, surrogates, code
 * points past U+10FFFF, sequences cut short by the end of the string) replaced by
 * \ufffd; and messages in the proto3 JSON mapping (lowerCamelCase names, every field,
 * 64-bit integers as strings, enums by name or number, maps as objects, repeated fields
 * as arrays, unset messages left out, bytes as null). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "testcapture.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static char *json_string(const char *s) {
  struct memout m;
  cli_json_string(memout_begin(&m), s);
  return memout_end(&m);
}

static char *json_message(const ProtobufCMessage *msg) {
  struct memout m;
  cli_json_message(memout_begin(&m), msg);
  return memout_end(&m);
}

static void expect_json(const char *in, const char *want) {
  char *got = json_string(in);
  if (strcmp(got, want) != 0) fail_msg("JSON of \"%s\": %s, expected %s", in, got, want);
  free(got);
}

static void test_escapes(void **state) {
  (void)state;
  expect_json("", "\"\"");
  expect_json("plain text 123", "\"plain text 123\"");
  expect_json("say \"hi\" \\ bye", "\"say \\\"hi\\\" \\\\ bye\"");
  expect_json("\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"");
  expect_json("\x01\x1f\x1b[31m\x7f", "\"\\u0001\\u001f\\u001b[31m\\u007f\"");
  expect_json("/ and ' stay", "\"/ and ' stay\"");
  /* Every control character is escaped, whatever its form. */
  for (int c = 1; c < 0x20; c++) {
    char in[2] = {(char)c, 0};
    char *got = json_string(in);
    assert_int_equal(got[1], '\\');
    assert_int_equal(got[strlen(got) - 1], '"');
    free(got);
  }
}

static void test_utf8(void **state) {
  (void)state;
  /* Valid: 2, 3 and 4 bytes, the extremes of each length included. */
  expect_json("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
              "\"\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  expect_json("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
              "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"");
  /* Invalid: one \ufffd per byte that is not part of a valid sequence. */
  static const struct {
    const char *in, *want;
  } bad[] = {
      {"\x80", "\"\\ufffd\""}, /* stray continuation */
      {"a\xbf"
       "b",
       "\"a\\ufffdb\""},
      {"\xc0\xaf", "\"\\ufffd\\ufffd\""}, /* overlong '/' */
      {"\xc1\xbf", "\"\\ufffd\\ufffd\""},
      {"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""},            /* overlong, 3 bytes */
      {"\xf0\x80\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* overlong, 4 bytes */
      {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},            /* surrogate U+D800 */
      {"\xed\xbf\xbf", "\"\\ufffd\\ufffd\\ufffd\""},            /* surrogate U+DFFF */
      {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* U+110000 */
      {"\xf5\x80\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
      {"\xff\xfe", "\"\\ufffd\\ufffd\""},
      {"\xe2\x82", "\"\\ufffd\\ufffd\""}, /* cut short by the end */
      {"\xf0\x9f\x98", "\"\\ufffd\\ufffd\\ufffd\""},
      {"\xe2\x82"
       "A",
       "\"\\ufffd\\ufffdA\""}, /* cut short by ASCII */
      {"\xc3\xa9\xc3", "\"\xc3\xa9\\ufffd\""},
  };
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) expect_json(bad[i].in, bad[i].want);
}

/* A small message, whole: names, order, indentation, the trailing newline. */
static void test_small_message(void **state) {
  (void)state;
  Prismq__Runner__V1__CancelRunRequest c = PRISMQ__RUNNER__V1__CANCEL_RUN_REQUEST__INIT;
  c.run_id = "01ABC";
  c.grace_ms = 4294967295u;
  char *got = json_message(&c.base);
  assert_string_equal(got, "{\n  \"runId\": \"01ABC\",\n  \"graceMs\": 4294967295\n}\n");
  free(got);
}

/* Values of every kind in a Run: 64-bit integers as strings (past 2^53 too), negative
 * 32-bit ones as numbers, the status by name, a value newer than the enum by number,
 * maps as objects in order, empty maps, escaped strings, an unset message left out. */
static void test_run_message(void **state) {
  (void)state;
  Prismq__Runner__V1__Run r = PRISMQ__RUNNER__V1__RUN__INIT;
  Prismq__Runner__V1__Run__LabelsEntry l1 = PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT,
                                       l2 = PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT;
  Prismq__Runner__V1__Run__LabelsEntry *labels[] = {&l1, &l2};
  l1.key = "team";
  l1.value = "a\"b";
  l2.key = "k\n";
  l2.value = "";
  r.run_id = "01RUN";
  r.status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED;
  r.exit_code = -1;
  r.created_at_ms = INT64_C(9007199254740993); /* 2^53 + 1 */
  r.stdout_bytes = UINT64_MAX;
  r.error_message = "bad \xff";
  r.labels = labels;
  r.n_labels = 2;
  char *got = json_message(&r.base);
  static const char *const want[] = {
      "{\n  \"runId\": \"01RUN\",\n",
      "\n  \"status\": \"RUN_STATUS_FAILED\",\n",
      "\n  \"exitCode\": -1,\n",
      "\n  \"createdAtMs\": \"9007199254740993\",\n",
      "\n  \"stdoutBytes\": \"18446744073709551615\",\n",
      "\n  \"errorMessage\": \"bad \\ufffd\",\n",
      "\n  \"labels\": {\n    \"team\": \"a\\\"b\",\n    \"k\\n\": \"\"\n  }",
      "\n  \"parameters\": {}",
      "\n  \"moduleId\": \"\",\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(want); i++)
    if (!strstr(got, want[i])) fail_msg("missing %s in:\n%s", want[i], got);
  assert_int_equal(got[strlen(got) - 2], '}');
  assert_int_equal(got[strlen(got) - 1], '\n');
  /* Every name is lowerCamelCase: no key (what precedes ": " on a line) has a '_'. */
  for (char *line = got; (line = strchr(line, '\n')) != NULL; line++) {
    char *colon = strstr(line, "\": ");
    char *eol = strchr(line + 1, '\n');
    if (!colon || (eol && colon > eol) || line[1] == '\0') continue;
    for (char *k = line; k < colon; k++)
      if (*k == '_') fail_msg("snake_case name in line: %.*s", (int)(eol ? eol - line : 40), line);
  }
  free(got);

  r.status = 99; /* newer than this descriptor */
  got = json_message(&r.base);
  assert_non_null(strstr(got, "\n  \"status\": 99,\n"));
  free(got);
}

/* Repeated messages as an array of objects, nested with the indentation of their depth;
 * an empty repeated field as []. */
static void test_repeated(void **state) {
  (void)state;
  Prismq__Runner__V1__ListRunsResponse resp = PRISMQ__RUNNER__V1__LIST_RUNS_RESPONSE__INIT;
  char *got = json_message(&resp.base);
  assert_string_equal(got, "{\n  \"runs\": [],\n  \"nextPageToken\": \"\"\n}\n");
  free(got);

  Prismq__Runner__V1__ListRunsRequest req = PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT;
  Prismq__Runner__V1__RunStatus st[] = {PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_RUNNING,
                                        PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_LOST};
  req.statuses = st;
  req.n_statuses = 2;
  got = json_message(&req.base);
  assert_non_null(strstr(
      got, "\n  \"statuses\": [\n    \"RUN_STATUS_RUNNING\",\n    \"RUN_STATUS_LOST\"\n  ],\n"));
  free(got);

  Prismq__Runner__V1__Run a = PRISMQ__RUNNER__V1__RUN__INIT, b = PRISMQ__RUNNER__V1__RUN__INIT;
  Prismq__Runner__V1__Run *runs[] = {&a, &b};
  a.run_id = "A";
  b.run_id = "B";
  resp.runs = runs;
  resp.n_runs = 2;
  resp.next_page_token = "tok";
  got = json_message(&resp.base);
  assert_int_equal(strncmp(got, "{\n  \"runs\": [\n    {\n      \"runId\": \"A\",\n", 40), 0);
  assert_non_null(strstr(got, "\n    },\n    {\n      \"runId\": \"B\",\n"));
  assert_non_null(strstr(got, "\n    }\n  ],\n  \"nextPageToken\": \"tok\"\n}\n"));
  free(got);
}

/* A message field: left out when unset, an object when set; bytes print as base64. */
static void test_nested_and_bytes(void **state) {
  (void)state;
  Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c.seq = 7;
  c.data.data = (uint8_t *)"xyz";
  c.data.len = 3;
  char *got = json_message(&c.base);
  assert_null(strstr(got, "\"run\""));
  assert_non_null(strstr(got, "\n  \"seq\": \"7\",\n"));
  assert_non_null(strstr(got, "\n  \"data\": \"eHl6\""));
  free(got);
  Prismq__Runner__V1__Run r = PRISMQ__RUNNER__V1__RUN__INIT;
  r.run_id = "R";
  c.run = &r;
  got = json_message(&c.base);
  assert_non_null(strstr(got, "\n  \"run\": {\n    \"runId\": \"R\",\n"));
  free(got);
}

/* Doubles as the shortest decimal that reads back; a oneof member only when it is the
 * one set. */
static void test_doubles_and_oneofs(void **state) {
  (void)state;
  Prismq__Runner__V1__ParameterSpec p = PRISMQ__RUNNER__V1__PARAMETER_SPEC__INIT;
  p.name = "n";
  char *got = json_message(&p.base);
  assert_null(strstr(got, "\"min\""));
  assert_null(strstr(got, "\"max\""));
  free(got);
  p.min_bound_case = PRISMQ__RUNNER__V1__PARAMETER_SPEC__MIN_BOUND_MIN;
  p.min = 0.1;
  p.max_bound_case = PRISMQ__RUNNER__V1__PARAMETER_SPEC__MAX_BOUND_MAX;
  p.max = -1e300;
  got = json_message(&p.base);
  assert_non_null(strstr(got, "\n  \"min\": 0.1,\n"));
  assert_non_null(strstr(got, "\n  \"max\": -1e+300,\n"));
  free(got);
  p.max = 1.0 / 0.0;
  p.min = 3;
  got = json_message(&p.base);
  assert_non_null(strstr(got, "\n  \"min\": 3,\n"));
  assert_non_null(strstr(got, "\n  \"max\": \"Infinity\",\n"));
  free(got);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escapes),
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_small_message),
      cmocka_unit_test(test_run_message),
      cmocka_unit_test(test_repeated),
      cmocka_unit_test(test_nested_and_bytes),
      cmocka_unit_test(test_doubles_and_oneofs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
