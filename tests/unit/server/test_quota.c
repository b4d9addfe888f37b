/* Unit tests for server/quota: counts per owner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "quota.h"

static void test_counts_per_owner(void **state) {
  (void)state;
  quota *q = quota_new();
  assert_int_equal(quota_get(q, "alice"), 0);
  quota_inc(q, "alice");
  quota_inc(q, "alice");
  quota_inc(q, "");
  assert_int_equal(quota_get(q, "alice"), 2);
  assert_int_equal(quota_get(q, ""), 1);
  assert_int_equal(quota_get(q, "bob"), 0);
  assert_int_equal(quota_get(q, "alic"), 0); /* whole names only */
  quota_dec(q, "alice");
  assert_int_equal(quota_get(q, "alice"), 1);
  quota_dec(q, "alice");
  assert_int_equal(quota_get(q, "alice"), 0);
  /* Back to zero and up again: the owner's entry was dropped and is made anew. */
  quota_inc(q, "alice");
  assert_int_equal(quota_get(q, "alice"), 1);
  quota_free(q); /* frees what is left (ASan checks) */
  quota_free(NULL);
}

static void test_many_owners(void **state) {
  (void)state;
  quota *q = quota_new();
  char name[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, "spiffe://x/%d", i);
    for (int k = 0; k <= i % 3; k++) quota_inc(q, name);
  }
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, "spiffe://x/%d", i);
    assert_int_equal(quota_get(q, name), (uint32_t)(i % 3 + 1));
    if (i % 2) quota_dec(q, name);
  }
  for (int i = 1; i < 1000; i += 2) {
    snprintf(name, sizeof name, "spiffe://x/%d", i);
    assert_int_equal(quota_get(q, name), (uint32_t)(i % 3));
  }
  quota_free(q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_per_owner),
      cmocka_unit_test(test_many_owners),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
