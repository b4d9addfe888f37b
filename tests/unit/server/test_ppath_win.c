/* ppath_win: Windows paths for PATH parameters (drive paths, either separator, names
 * compared without case, the forms Win32 would rewrite refused). Runs under Wine, whose
 * C: drive has C:\windows\system32. Links are tested black-box (tests/windows), where the
 * test can make them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ppath.h"

static void test_absolute(void **state) {
  (void)state;
  char out[PPATH_MAX];
  assert_int_equal(ppath_resolve(out, NULL, "c:/windows/../WINDOWS/./system32//"), 0);
  /* The existing part as the file system spells it; the drive in upper case. */
  assert_true(strcasecmp(out, "C:\\windows\\system32") == 0);
  assert_int_equal(out[0], 'C');
  assert_int_equal(ppath_resolve(out, NULL, "C:\\windows\\no such\\deeper"), 0);
  assert_true(strncasecmp(out, "C:\\windows\\", 11) == 0);
  assert_string_equal(out + 11, "no such\\deeper");
  /* ".." never goes above the drive's root. */
  assert_int_equal(ppath_resolve(out, NULL, "C:\\..\\..\\windows"), 0);
  assert_true(strcasecmp(out, "C:\\windows") == 0);
  assert_int_equal(ppath_resolve(out, NULL, "C:\\"), 0);
  assert_string_equal(out, "C:\\");
  assert_int_equal(ppath_resolve(out, NULL, "relative"), -EINVAL);
  assert_int_equal(ppath_resolve(out, NULL, "\\windows"), -EINVAL);
  assert_int_equal(ppath_resolve(out, NULL, ""), -EINVAL);
}

static void test_relative_and_under(void **state) {
  (void)state;
  char base[PPATH_MAX], out[PPATH_MAX];
  assert_int_equal(ppath_resolve(base, NULL, "C:\\Windows"), 0);
  assert_int_equal(ppath_resolve(out, base, "System32/drivers"), 0);
  assert_true(ppath_under(out, base));
  assert_int_equal(ppath_resolve(out, base, "system32\\..\\..\\x"), 0);
  assert_true(strcasecmp(out, "C:\\x") == 0);
  assert_false(ppath_under(out, base));
  /* Without case, but by whole components. */
  assert_true(ppath_under("c:\\WINDOWS\\x", "C:\\windows"));
  assert_true(ppath_under("C:\\windows", "C:\\windows"));
  assert_false(ppath_under("C:\\windowsx", "C:\\windows"));
  assert_false(ppath_under("C:\\win", "C:\\windows"));
  assert_false(ppath_under("D:\\windows", "C:\\windows"));
  assert_true(ppath_under("C:\\x\\y", "C:\\"));
  /* An absolute value is taken as it is, then held to the base by ppath_under. */
  assert_int_equal(ppath_resolve(out, base, "C:\\elsewhere"), 0);
  assert_false(ppath_under(out, base));
  /* A drive that does not exist cannot be resolved at all. */
  assert_int_equal(ppath_resolve(out, base, "Q:\\x"), -ENOENT);
}

static void test_refused_names(void **state) {
  (void)state;
  static const char *const bad[] = {
      ".. ", "x.", "x ", "a:b", "NUL", "nul.txt", "COM1", "lpt9.log", "con", "a<b", "a|b", "a\"b",
      "a?", "*", "\\abs", "/abs", "D:rel", "ok\\bad.", "ok/..  /x", "x\x01y", "LPT0", "NUL .txt",
      "COM\xc2\xb9",
      /* what the ANSI code page's best fit makes "..\\..\\x" of (U+FF0E, U+FF3C) */
      "\xef\xbc\x8e\xef\xbc\x8e\xef\xbc\xbc\xef\xbc\x8e\xef\xbc\x8e\xef\xbc\xbcx"};
  char base[PPATH_MAX], out[PPATH_MAX];
  assert_int_equal(ppath_resolve(base, NULL, "C:\\windows"), 0);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (ppath_resolve(out, base, bad[i]) != -EINVAL) fail_msg("\"%s\" was taken: %s", bad[i], out);
  /* Names close to those are fine. */
  static const char *const good[] = {"NULL", "COM10", "con-fig", ".x", "x.y", "a b", "..x"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    if (ppath_resolve(out, base, good[i]) != 0) fail_msg("\"%s\" was refused", good[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_absolute),
      cmocka_unit_test(test_relative_and_under),
      cmocka_unit_test(test_refused_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
