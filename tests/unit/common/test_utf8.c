/* Unit tests for utf8: what counts as well-formed, and sanitizing for string fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"

#define VALID(s) utf8_valid(s, sizeof(s) - 1)

static void test_valid(void **state) {
  (void)state;
  assert_true(VALID("plain ascii"));
  assert_true(VALID("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80")); /* é € 😀 */
  assert_false(VALID("\xc0\xaf"));                                  /* overlong '/' */
  assert_false(VALID("\xed\xa0\x80"));                              /* surrogate */
  assert_false(VALID("\xf4\x90\x80\x80"));                          /* over U+10FFFF */
  assert_false(VALID("\xe2\x82"));                                  /* cut short */
  assert_false(VALID("\xff"));
}

#define SEQ(s) utf8_seq_len(s, sizeof(s) - 1)

static void test_seq_len(void **state) {
  (void)state;
  assert_int_equal(SEQ("a"), 1);
  assert_int_equal(SEQ("\xc3\xa9x"), 2); /* only the first sequence counts */
  assert_int_equal(SEQ("\xe2\x82\xac"), 3);
  assert_int_equal(SEQ("\xf0\x9f\x98\x80"), 4);
  assert_int_equal(SEQ("\xf4\x8f\xbf\xbf"), 4); /* U+10FFFF, the last */
  assert_int_equal(SEQ("\xc0\xaf"), 0);         /* overlong */
  assert_int_equal(SEQ("\xe0\x9f\xbf"), 0);     /* overlong 3-byte */
  assert_int_equal(SEQ("\xed\xa0\x80"), 0);     /* surrogate */
  assert_int_equal(SEQ("\xf4\x90\x80\x80"), 0); /* over U+10FFFF */
  assert_int_equal(SEQ("\x80"), 0);             /* stray continuation */
  assert_int_equal(SEQ("\xc3\x41"), 0);         /* missing continuation */
  /* Never past len: the rest of a sequence beyond it does not count. */
  assert_int_equal(utf8_seq_len("\xe2\x82\xac", 2), 0);
  assert_int_equal(utf8_seq_len("a", 0), 0);
}

static void test_sanitize(void **state) {
  (void)state;
  char out[16];
  assert_int_equal(utf8_sanitize(out, sizeof out,
                                 "a\xff"
                                 "b\0c",
                                 5),
                   5);
  assert_string_equal(out, "a?b?c");
  /* Truncation never splits a sequence: "é" needs 2 bytes, only 1 is left. */
  assert_int_equal(utf8_sanitize(out, 3, "a\xc3\xa9", 3), 1);
  assert_string_equal(out, "a");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_seq_len),
      cmocka_unit_test(test_sanitize),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
