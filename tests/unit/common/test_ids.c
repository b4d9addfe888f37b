/* Unit tests for ids: run ids are valid, unique and sort in creation order, even
 * within one millisecond and when the clock steps back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ids.h"

static void test_ids_sort_in_creation_order(void **state) {
  (void)state;
  char prev[ID_RUN_LEN + 1] = "", id[ID_RUN_LEN + 1];
  int64_t t = id_now_ms();
  /* Many in one millisecond, then a later one, then the clock going back. */
  int64_t times[] = {t, t, t, t, t + 1, t + 1, t - 1000, t + 2};
  for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
    for (int k = 0; k < 1000; k++) {
      id_run_new(id, times[i]);
      assert_int_equal(strlen(id), ID_RUN_LEN);
      assert_true(id_run_valid(id, ID_RUN_LEN));
      assert_true(strcmp(prev, id) < 0);
      memcpy(prev, id, sizeof id);
    }
  }
}

static void test_time_is_the_prefix(void **state) {
  (void)state;
  char a[ID_RUN_LEN + 1], b[ID_RUN_LEN + 1];
  int64_t t = id_now_ms() + 10000;
  id_run_new(a, t);
  id_run_new(b, t + 86400000); /* a day later: the first 10 characters (48 bits of time) differ */
  assert_true(memcmp(a, b, 10) < 0);
}

static void test_valid_rejects_other_shapes(void **state) {
  (void)state;
  assert_false(id_run_valid("", 0));
  assert_false(id_run_valid("01M8CGYBKN6CCF56C1Y33THAP", 25));
  assert_false(id_run_valid("01M8CGYBKN6CCF56C1Y33THAPU", 26)); /* U is not Crockford base32 */
  assert_false(id_run_valid("81M8CGYBKN6CCF56C1Y33THAP4", 26)); /* over 128 bits */
  assert_false(id_run_valid("01m8cgybkn6ccf56c1y33thap4", 26));
  assert_true(id_run_valid("01M8CGYBKN6CCF56C1Y33THAP4", 26));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ids_sort_in_creation_order),
      cmocka_unit_test(test_time_is_the_prefix),
      cmocka_unit_test(test_valid_rejects_other_shapes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
