/* Unit tests for the prismq CLI's aligned tables (client/cli/cli-table.c): columns as
 * wide as their widest cell counted in UTF-8 characters (not bytes), two spaces apart,
 * the last column unpadded, NULL cells empty, one line per row whatever a cell holds
 * (control characters, newlines among them, shown as '?'), cells copied. */
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

static char *print_table(const cli_table *t) {
  struct memout m;
  cli_table_print(t, memout_begin(&m));
  return memout_end(&m);
}

static void test_alignment(void **state) {
  (void)state;
  cli_table *t = cli_table_new(3, (const char *[]){"ID", "NAME", "X"});
  char cell[] = "22";
  cli_table_add(t, (const char *[]){"1", "h\xc3\xa9llo", "a"});
  cli_table_add(t, (const char *[]){cell, NULL, "b\nc"});
  cell[0] = 'Z'; /* copied: the table keeps its own */
  char *got = print_table(t);
  assert_string_equal(got,
                      "ID  NAME   X\n"
                      "1   h\xc3\xa9llo  a\n"
                      "22         b?c\n");
  free(got);
  cli_table_free(t);
  cli_table_free(NULL);
}

/* Multibyte text lines up with ASCII: 3- and 4-byte characters count as one. */
static void test_multibyte_widths(void **state) {
  (void)state;
  cli_table *t = cli_table_new(2, (const char *[]){"MODULE", "DESCRIPTION"});
  cli_table_add(
      t, (const char *[]){"\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac", "euros"}); /* 3 chars, 9 bytes */
  cli_table_add(t, (const char *[]){"\xf0\x9f\x98\x80"
                                    "abcdefg",
                                    "grin"}); /* 8 chars, 11 bytes */
  cli_table_add(t, (const char *[]){"plain", "x"});
  char *got = print_table(t);
  assert_string_equal(got,
                      "MODULE    DESCRIPTION\n"
                      "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac       euros\n"
                      "\xf0\x9f\x98\x80"
                      "abcdefg  grin\n"
                      "plain     x\n");
  free(got);
  cli_table_free(t);
}

/* Headers alone; control characters of every kind in cells, DEL included. */
static void test_headers_only_and_controls(void **state) {
  (void)state;
  cli_table *t = cli_table_new(2, (const char *[]){"A", "B"});
  char *got = print_table(t);
  assert_string_equal(got, "A  B\n");
  free(got);
  cli_table_add(t, (const char *[]){"\x1b[31mred", "\r\t\x7f"});
  got = print_table(t);
  assert_string_equal(got,
                      "A         B\n"
                      "?[31mred  ???\n");
  free(got);
  cli_table_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alignment),
      cmocka_unit_test(test_multibyte_widths),
      cmocka_unit_test(test_headers_only_and_controls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
