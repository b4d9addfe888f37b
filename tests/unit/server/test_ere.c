/* Unit tests for server/ere: regcomp with stacked repetitions refused before glibc sees
 * them (they cost it unbounded memory). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ere.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_stacked_refused(void **state) {
  (void)state;
  static const char *const refused[] = {"a++",   "a*+",       "a?*",   "a+{2}",
                                        "a{2}+", "a{2,3}{4}", "(x)+*", "ca++++++++++++t|dog"};
  for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
    regex_t re;
    char why[160] = "";
    if (ere_compile(&re, refused[i], REG_EXTENDED, why, sizeof why) != -E2BIG)
      fail_msg("%s: not refused as stacked", refused[i]);
    assert_string_equal(why, "repeats a repetition (as in \"a++\"), which is refused");
  }
}

static void test_others_compile(void **state) {
  (void)state;
  /* Operators inside brackets or escaped are literals; one after a group or a
   * character is a single repetition. */
  static const char *const fine[] = {
      "a+b*c?", "[+*?]+", "\\++",   "a\\*+", "(a+)+", "a{2,3}b+", "^PROGRESS ([0-9]+)/([0-9]+)$",
      "[]+]*",  "[]++]",  "[^]++]+"};
  for (size_t i = 0; i < ARRAY_LEN(fine); i++) {
    regex_t re;
    char why[160] = "";
    if (ere_compile(&re, fine[i], REG_EXTENDED, why, sizeof why) != 0)
      fail_msg("%s: refused: %s", fine[i], why);
    regfree(&re);
  }
  regex_t re;
  char why[160] = "";
  assert_int_equal(ere_compile(&re, "(a", REG_EXTENDED, why, sizeof why), -EINVAL);
  assert_true(why[0] != '\0'); /* regerror's text */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stacked_refused),
      cmocka_unit_test(test_others_compile),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
