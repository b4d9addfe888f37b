/* Unit tests for common/xalloc: what the wrappers return when memory is there (zero
 * sizes included). Running out of memory aborts, which a test cannot survive. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "xalloc.h"

static void test_zero_sizes_allocate(void **state) {
  (void)state;
  void *m = xmalloc(0);
  void *c1 = xcalloc(0, 8);
  void *c2 = xcalloc(8, 0);
  void *r = xrealloc(NULL, 0);
  assert_non_null(m);
  assert_non_null(c1);
  assert_non_null(c2);
  assert_non_null(r);
  /* A realloc to 0 gives a live block, not a freed pointer. */
  r = xrealloc(r, 0);
  assert_non_null(r);
  free(m);
  free(c1);
  free(c2);
  free(r);
}

static void test_calloc_zeroed_realloc_keeps(void **state) {
  (void)state;
  unsigned char *p = xcalloc(100, 3);
  for (size_t i = 0; i < 300; i++) assert_int_equal(p[i], 0);
  memset(p, 0xab, 300);
  p = xrealloc(p, 1 << 20);
  for (size_t i = 0; i < 300; i++) assert_int_equal(p[i], 0xab);
  free(p);
}

static void test_strdup_strndup(void **state) {
  (void)state;
  char *a = xstrdup("");
  char *b = xstrdup("hello");
  char *c = xstrndup("hello", 3);
  char *d = xstrndup("hi", 10);
  assert_string_equal(a, "");
  assert_string_equal(b, "hello");
  assert_string_equal(c, "hel");
  assert_string_equal(d, "hi");
  free(a);
  free(b);
  free(c);
  free(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_zero_sizes_allocate),
      cmocka_unit_test(test_calloc_zeroed_realloc_keeps),
      cmocka_unit_test(test_strdup_strndup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
