/* Unit tests for common/compat: the helpers that stand in for what one C library has and
 * another lacks. On Linux they check that the helpers are glibc's calls; under Wine, the
 * same cases check compat's own code (docs/windows.md). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compat.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_fnmatch(void **state) {
  (void)state;
  static const struct {
    const char *glob, *s;
    int match;
  } cases[] = {
      {"*", "", 1},
      {"*", "anything at all", 1},
      {"", "", 1},
      {"", "a", 0},
      {"alice", "alice", 1},
      {"alice", "alicia", 0},
      {"a*", "alice", 1},
      {"*e", "alice", 1},
      {"*e", "alicia", 0},
      {"a*c*e", "abcde", 1},
      {"a*c*e", "abcdf", 0},
      {"*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaa", 0},
      {"a?c", "abc", 1},
      {"a?c", "ac", 0},
      {"[abc]x", "bx", 1},
      {"[abc]x", "dx", 0},
      {"[!abc]x", "dx", 1},
      {"[!abc]x", "ax", 0},
      {"[^abc]x", "dx", 1},
      {"[a-c]", "b", 1},
      {"[a-c]", "d", 0},
      {"[]a]", "]", 1},
      {"[!]a]", "]", 0},
      {"[a-]", "-", 1},
      {"\\*", "*", 1},
      {"\\*", "a", 0},
      {"a\\?", "a?", 1},
      {"[", "[", 1},
      {"a[b", "a[b", 1},
      {"CN=*,O=Example", "CN=svc-1,O=Example", 1},
      {"spiffe://example.org/*", "spiffe://example.org/ns/prod/sa/runner", 1},
      {"spiffe://example.org/*", "spiffe://evil.org/example.org/x", 0},
      /* Invalid: a lone trailing backslash matches nothing (not even itself). */
      {"a\\", "a\\", 0},
      {"a\\\\", "a\\", 1},
#ifdef _WIN32
      /* Classes are glibc's; compat's own code fails closed on them. */
      {"[[:alpha:]]", "a", 0},
#endif
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++)
    if (compat_fnmatch(cases[i].glob, cases[i].s) != cases[i].match)
      fail_msg("case %zu: \"%s\" against \"%s\": want %d", i, cases[i].glob, cases[i].s,
               cases[i].match);
}

static void test_memmem_memrchr(void **state) {
  (void)state;
  static const char hay[] = "abc\0abcab\nxyz";
  size_t n = sizeof hay - 1;
  assert_ptr_equal(compat_memmem(hay, n, "ab", 2), hay);
  assert_ptr_equal(compat_memmem(hay, n, "cab", 3), hay + 6);
  assert_ptr_equal(compat_memmem(hay, n, "\0a", 2), hay + 3);
  assert_ptr_equal(compat_memmem(hay, n, "xyz", 3), hay + 10);
  assert_null(compat_memmem(hay, n, "xyzz", 4));
  assert_null(compat_memmem(hay, 2, "abc", 3));
  assert_ptr_equal(compat_memmem(hay, n, "", 0), hay);
  assert_ptr_equal(compat_memrchr(hay, 'a', n), hay + 7);
  assert_ptr_equal(compat_memrchr(hay, '\0', n), hay + 3);
  assert_ptr_equal(compat_memrchr(hay, 'z', n), hay + 12);
  assert_null(compat_memrchr(hay, 'q', n));
  assert_null(compat_memrchr(hay, 'a', 0));
}

static void test_memstream(void **state) {
  (void)state;
  compat_memstream m;
  FILE *f = compat_memstream_open(&m);
  assert_non_null(f);
  for (int i = 0; i < 10000; i++) fprintf(f, "%d\n", i);
  fputc('\0', f); /* binary data too */
  fputs("end", f);
  assert_int_equal(compat_memstream_close(&m), 0);
  size_t want = 0;
  for (int i = 0; i < 10000; i++) want += (size_t)snprintf(NULL, 0, "%d\n", i);
  assert_int_equal(m.len, want + 4);
  assert_memory_equal(m.buf, "0\n1\n2\n", 6);
  assert_memory_equal(m.buf + want, "\0end", 5); /* NUL-terminated after len */
  free(m.buf);
  /* An empty stream is "" of length 0. */
  assert_non_null(compat_memstream_open(&m));
  assert_int_equal(compat_memstream_close(&m), 0);
  assert_int_equal(m.len, 0);
  assert_string_equal(m.buf, "");
  free(m.buf);
}

static void test_timeval(void **state) {
  (void)state;
  struct timeval tv = compat_timeval_ms(0);
  assert_int_equal(tv.tv_sec, 0);
  assert_int_equal(tv.tv_usec, 0);
  tv = compat_timeval_ms(1999);
  assert_int_equal(tv.tv_sec, 1);
  assert_int_equal(tv.tv_usec, 999000);
  tv = compat_timeval_ms(86400000);
  assert_int_equal(tv.tv_sec, 86400);
  assert_int_equal(tv.tv_usec, 0);
}

static void test_strsignal(void **state) {
  (void)state;
  /* Linux's numbers on every system: the API's. */
  assert_string_equal(compat_strsignal(9), "Killed");
  assert_string_equal(compat_strsignal(15), "Terminated");
  assert_string_equal(compat_strsignal(11), "Segmentation fault");
  assert_string_equal(compat_strsignal(6), "Aborted");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fnmatch),   cmocka_unit_test(test_memmem_memrchr),
      cmocka_unit_test(test_memstream), cmocka_unit_test(test_timeval),
      cmocka_unit_test(test_strsignal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
