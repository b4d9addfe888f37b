/* Unit tests for pbcheck: string fields are checked in the encoded bytes, where
 * protobuf-c's unpack would cut them at a NUL or pass bad UTF-8 on. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pbcheck.h"
#include "prismq/runner/v1/runner.pb-c.h"

/* Hand-built StartRunRequest bytes: module_id (1), then one parameters entry (2)
 * holding key (1) and value (2). */
static size_t start_req(uint8_t *out, const char *module, const char *key, const uint8_t *val,
                        size_t vlen) {
  size_t n = 0, mlen = strlen(module), klen = strlen(key);
  out[n++] = 0x0a;
  out[n++] = (uint8_t)mlen;
  memcpy(out + n, module, mlen);
  n += mlen;
  out[n++] = 0x12;
  out[n++] = (uint8_t)(2 + klen + 2 + vlen);
  out[n++] = 0x0a;
  out[n++] = (uint8_t)klen;
  memcpy(out + n, key, klen);
  n += klen;
  out[n++] = 0x12;
  out[n++] = (uint8_t)vlen;
  memcpy(out + n, val, vlen);
  return n + vlen;
}

static int check(const uint8_t *buf, size_t len, char *err, size_t errlen) {
  return pbcheck_message(&prismq__runner__v1__start_run_request__descriptor, buf, len, err, errlen);
}

static void test_clean_message_passes(void **state) {
  (void)state;
  uint8_t buf[128];
  char err[128] = "";
  size_t n = start_req(buf, "emit", "bytes", (const uint8_t *)"h\xc3\xa9llo", 6);
  assert_int_equal(check(buf, n, err, sizeof err), 0);
  /* The same bytes unpack to what was checked. */
  Prismq__Runner__V1__StartRunRequest *r =
      prismq__runner__v1__start_run_request__unpack(NULL, n, buf);
  assert_non_null(r);
  assert_string_equal(r->parameters[0]->value, "h\xc3\xa9llo");
  prismq__runner__v1__start_run_request__free_unpacked(r, NULL);
}

/* An empty message reaches handlers as NULL and no bytes (the call layer's form). */
static void test_empty_message_passes(void **state) {
  (void)state;
  char err[128] = "";
  assert_int_equal(pbcheck_message(&prismq__runner__v1__list_modules_request__descriptor, NULL, 0,
                                   err, sizeof err),
                   0);
  assert_string_equal(err, "");
}

static void test_nul_in_map_value_is_named(void **state) {
  (void)state;
  uint8_t buf[128];
  char err[128] = "";
  size_t n = start_req(buf, "emit", "bytes", (const uint8_t *)"12\0" "34", 5);
  assert_int_equal(check(buf, n, err, sizeof err), -EINVAL);
  assert_string_equal(err, "parameters.value holds a NUL byte");
}

static void test_bad_utf8_in_top_level_field(void **state) {
  (void)state;
  uint8_t buf[128];
  char err[128] = "";
  size_t n = start_req(buf, "e\xffmit", "k", (const uint8_t *)"v", 1);
  assert_int_equal(check(buf, n, err, sizeof err), -EINVAL);
  assert_string_equal(err, "module_id is not valid UTF-8");
}

static void test_truncated_or_unknown_wire_is_left_to_unpack(void **state) {
  (void)state;
  char err[64] = "";
  /* Length running past the end, an unknown varint field 9, and a fixed64 cut short. */
  static const uint8_t past_end[] = {0x0a, 0x7f, 'a'};
  static const uint8_t unknown[] = {0x48, 0x96, 0x01, 0x0a, 0x01, 'x'};
  static const uint8_t short64[] = {0x49, 1, 2, 3};
  assert_int_equal(check(past_end, sizeof past_end, err, sizeof err), 0);
  assert_int_equal(check(unknown, sizeof unknown, err, sizeof err), 0);
  assert_int_equal(check(short64, sizeof short64, err, sizeof err), 0);
}

static void test_bytes_fields_may_hold_anything(void **state) {
  (void)state;
  /* OutputChunk.data (3) is bytes: NUL and 0xff are data, not errors. */
  static const uint8_t chunk[] = {0x1a, 0x03, 0x00, 0xff, 0x41};
  char err[64] = "";
  assert_int_equal(pbcheck_message(&prismq__runner__v1__output_chunk__descriptor, chunk,
                                   sizeof chunk, err, sizeof err),
                   0);
}

static void test_too_many_fields(void **state) {
  (void)state;
  /* Empty labels entries (field 4, length 0): two bytes and one field each. */
  static uint8_t buf[2 * (PBCHECK_MAX_FIELDS + 1)];
  char err[128] = "";
  for (size_t i = 0; i < sizeof buf; i += 2) buf[i] = 0x22, buf[i + 1] = 0;
  assert_int_equal(check(buf, sizeof buf - 2, err, sizeof err), 0);
  assert_int_equal(check(buf, sizeof buf, err, sizeof err), -E2BIG);
  assert_non_null(strstr(err, "labels"));
  /* Unknown fields count too: protobuf-c keeps each of them. */
  for (size_t i = 0; i < sizeof buf; i += 2) buf[i] = 0x78, buf[i + 1] = 0;
  assert_int_equal(check(buf, sizeof buf, err, sizeof err), -E2BIG);
  /* And so does each element of a packed repeated scalar (ListRunsRequest.statuses). */
  static uint8_t packed[4 + PBCHECK_MAX_FIELDS + 1];
  size_t n = sizeof packed - 4;
  packed[0] = 0x0a;
  packed[1] = (uint8_t)(0x80 | (n & 0x7f));
  packed[2] = (uint8_t)(0x80 | ((n >> 7) & 0x7f));
  packed[3] = (uint8_t)(n >> 14);
  memset(packed + 4, 1, n);
  assert_int_equal(pbcheck_message(&prismq__runner__v1__list_runs_request__descriptor, packed,
                                   sizeof packed, err, sizeof err),
                   -E2BIG);
  assert_non_null(strstr(err, "statuses"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_clean_message_passes),
      cmocka_unit_test(test_empty_message_passes),
      cmocka_unit_test(test_nul_in_map_value_is_named),
      cmocka_unit_test(test_bad_utf8_in_top_level_field),
      cmocka_unit_test(test_truncated_or_unknown_wire_is_left_to_unpack),
      cmocka_unit_test(test_bytes_fields_may_hold_anything),
      cmocka_unit_test(test_too_many_fields),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
