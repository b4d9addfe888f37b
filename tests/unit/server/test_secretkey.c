/* Unit tests for server/secretkey: the key is made once and kept, a damaged key file is
 * refused, and digests tell lists apart. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "secretkey.h"

static void test_key_made_once_and_kept(void **state) {
  (void)state;
  char dir[] = "/tmp/prismq-secretkey-XXXXXX", path[64], err[256];
  uint8_t k1[SECRETKEY_LEN], k2[SECRETKEY_LEN], zero[SECRETKEY_LEN] = {0};
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/secret.key", dir);
  assert_int_equal(secretkey_load(k1, dir, err, sizeof err), 0);
  assert_memory_not_equal(k1, zero, sizeof k1);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(st.st_size, SECRETKEY_LEN);
  assert_int_equal(secretkey_load(k2, dir, err, sizeof err), 0);
  assert_memory_equal(k1, k2, sizeof k1); /* read back, not made anew */

  /* A short or long file is refused, the output untouched. */
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("short", f);
  fclose(f);
  memset(k2, 7, sizeof k2);
  assert_int_equal(secretkey_load(k2, dir, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "not a key of 32 bytes"));
  assert_int_equal(k2[0], 7);
  f = fopen(path, "w");
  assert_non_null(f);
  for (int i = 0; i < SECRETKEY_LEN + 1; i++) fputc('x', f);
  fclose(f);
  assert_int_equal(secretkey_load(k2, dir, err, sizeof err), -EINVAL);
  unlink(path);
  assert_int_equal(secretkey_load(k2, "/nonexistent-prismq/dir", err, sizeof err), -ENOENT);
  rmdir(dir);
}

static void test_digests(void **state) {
  (void)state;
  uint8_t key[SECRETKEY_LEN], other[SECRETKEY_LEN], a[32], b[32];
  memset(key, 1, sizeof key);
  memset(other, 2, sizeof other);
  secretkey_digest(a, key, (char *[]){"T=ab", "U=c", NULL});
  secretkey_digest(b, key, (char *[]){"T=ab", "U=c", NULL});
  assert_memory_equal(a, b, sizeof a);
  secretkey_digest(b, key, (char *[]){"T=a", "bU=c", NULL}); /* same bytes, other split */
  assert_memory_not_equal(a, b, sizeof a);
  secretkey_digest(b, key, (char *[]){"U=c", "T=ab", NULL}); /* other order */
  assert_memory_not_equal(a, b, sizeof a);
  secretkey_digest(b, other, (char *[]){"T=ab", "U=c", NULL}); /* other key */
  assert_memory_not_equal(a, b, sizeof a);
  secretkey_digest(b, key, (char *[]){NULL});
  assert_memory_not_equal(a, b, sizeof a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_key_made_once_and_kept),
      cmocka_unit_test(test_digests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
