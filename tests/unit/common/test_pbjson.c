/* Unit tests for pbjson: the proto3 JSON parser (strictness, escapes, UTF-8, limits)
 * and a print-then-parse round trip, all in memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../testos.h"
#include "pbjson.h"
#include "prismq/runner/v1/runner.pb-c.h"

typedef Prismq__Runner__V1__StartRunRequest start_req;

/* Parses `json` as a StartRunRequest: returns it decoded, or NULL with err set. */
static start_req *parse_start(const char *json, char *err, size_t errlen) {
  uint8_t *buf = NULL;
  size_t len = 0;
  if (pbjson_parse(&buf, &len, &prismq__runner__v1__start_run_request__descriptor, json,
                   strlen(json), err, errlen) < 0)
    return NULL;
  start_req *r = prismq__runner__v1__start_run_request__unpack(NULL, len, buf);
  free(buf);
  assert_non_null(r);
  return r;
}

static void test_fields(void **state) {
  (void)state;
  char err[200];
  start_req *r = parse_start(
      " {\"moduleId\": \"m\\u00e9\\ud83d\\ude00\\n\", \"parameters\": {\"a\": \"1\", \"b\": \"\"},"
      " \"request_id\": \"r\", \"timeoutMs\": \"42\", \"labels\": null, \"preset\": \"p\"} ",
      err, sizeof err);
  assert_non_null(r);
  assert_string_equal(r->module_id, "m\xc3\xa9\xf0\x9f\x98\x80\n");
  assert_int_equal(r->n_parameters, 2);
  assert_string_equal(r->parameters[1]->key, "b");
  assert_string_equal(r->parameters[1]->value, "");
  assert_string_equal(r->request_id, "r");
  assert_int_equal(r->timeout_ms, 42);
  assert_int_equal(r->n_labels, 0);
  prismq__runner__v1__start_run_request__free_unpacked(r, NULL);
}

static void test_errors(void **state) {
  (void)state;
  static const char *const cases[][2] = {
      {"", "'{' expected"},
      {"{", "string expected"},
      {"{\"moduleId\": \"x\",}", "string expected"},
      {"{\"nope\": 1}", "unknown field nope"},
      {"{\"moduleId\": 1}", "a string expected"},
      {"{\"timeoutMs\": -1}", "out of range"},
      {"{\"timeoutMs\": 4294967296}", "out of range"},
      {"{\"timeoutMs\": 01}", "malformed number"},
      {"{\"timeoutMs\": 1e3}", "an integer expected"},
      {"{\"timeoutMs\": true}", "malformed number"},
      {"{\"moduleId\": \"\\ud800\"}", "surrogate"},
      {"{\"moduleId\": \"\\udc00\"}", "surrogate"},
      {"{\"moduleId\": \"\\u0000\"}", "NUL"},
      {"{\"moduleId\": \"\\x\"}", "bad escape"},
      {"{\"moduleId\": \"\xc3\"}", "UTF-8"},
      {"{\"moduleId\": \"\xed\xa0\x80\"}", "UTF-8"},
      {"{\"moduleId\": \"a\tb\"}", "control character"},
      {"{\"moduleId\": \"a", "unterminated"},
      {"{\"moduleId\" \"a\"}", "':' expected"},
      {"{} {}", "text after"},
      {"{\"parameters\": {\"a\": 1}}", "a string expected"},
      {"{\"parameters\": [\"a\"]}", "'{' expected"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[200] = "";
    start_req *r = parse_start(cases[i][0], err, sizeof err);
    if (r) fail_msg("accepted: %s", cases[i][0]);
    if (!strstr(err, cases[i][1])) fail_msg("%s: said \"%s\"", cases[i][0], err);
  }
}

static void test_depth(void **state) {
  (void)state;
  /* Nesting follows the message types, so a document deeper than its schema stops at
   * the first field its type lacks (MAX_DEPTH bounds schemas that recurse). */
  char json[4096] = "";
  for (int i = 0; i < 200; i++) strcat(json, "{\"run\": ");
  uint8_t *buf = NULL;
  size_t len = 0;
  char err[200];
  assert_int_equal(pbjson_parse(&buf, &len, &prismq__runner__v1__output_chunk__descriptor, json,
                                strlen(json), err, sizeof err),
                   -22);
  assert_non_null(strstr(err, "unknown field run"));
  assert_null(buf);
}

/* What pbjson_print writes reads back as the same message: names, enums by name,
 * 64-bit integers as strings, bytes as base64, nested messages. */
static void test_round_trip(void **state) {
  (void)state;
  Prismq__Runner__V1__Run run = PRISMQ__RUNNER__V1__RUN__INIT;
  run.run_id = "r1";
  run.status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED;
  run.created_at_ms = 1234567890123;
  run.exit_code = -3;
  Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c.seq = UINT64_MAX;
  c.data.data = (uint8_t *)"\x00\xff bytes\n";
  c.data.len = 9;
  c.run = &run;
  size_t tlen = 0;
  FILE *f = test_memout_begin();
  pbjson_print(f, &c.base);
  char *text = test_memout_end(f, &tlen);
  uint8_t *buf = NULL;
  size_t len = 0;
  char err[200];
  assert_int_equal(pbjson_parse(&buf, &len, &prismq__runner__v1__output_chunk__descriptor, text,
                                tlen, err, sizeof err),
                   0);
  size_t want = protobuf_c_message_get_packed_size(&c.base);
  uint8_t *packed = malloc(want);
  protobuf_c_message_pack(&c.base, packed);
  assert_int_equal(len, want);
  assert_memory_equal(buf, packed, len);
  free(packed);
  free(buf);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fields),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_depth),
      cmocka_unit_test(test_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
