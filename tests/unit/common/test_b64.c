/* Unit tests for common/b64: base64 decoding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "b64.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Decodes `src` into a buffer of exactly B64_DECODED_MAX bytes (ASan sees any write
 * past it); returns b64_decode's value, with the bytes in out (NUL-terminated). */
static int bin_decode(char *out, size_t cap, const char *src) {
  size_t len = strlen(src), n = 0;
  uint8_t *dst = malloc(B64_DECODED_MAX(len));
  assert_non_null(dst);
  int rc = b64_decode(dst, &n, src, len);
  if (rc == 0) {
    assert_true(n < cap);
    memcpy(out, dst, n);
    out[n] = '\0';
  }
  free(dst);
  return rc;
}

/* RFC 4648's vectors, padded or not; every other form refused. */
static void test_bin_decode(void **state) {
  (void)state;
  static const struct {
    const char *in, *want;
  } ok[] = {
      {"", ""},
      {"Zg", "f"},
      {"Zg==", "f"},
      {"Zm8", "fo"},
      {"Zm8=", "fo"},
      {"Zm9v", "foo"},
      {"Zm9vYg", "foob"},
      {"Zm9vYg==", "foob"},
      {"Zm9vYmE", "fooba"},
      {"Zm9vYmE=", "fooba"},
      {"Zm9vYmFy", "foobar"},
      {"+/+/", "\xfb\xff\xbf"},
  };
  char out[64];
  for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
    if (bin_decode(out, sizeof out, ok[i].in) != 0) fail_msg("\"%s\" refused", ok[i].in);
    assert_string_equal(out, ok[i].want);
  }
  static const char *const bad[] = {
      "Z",  "Zm9vY", "Zg=",    "Zg===", "Zm8==", "Z===",     "=",
      "==", "Zm=v",  "Zm9v\n", " Zm9v", "Zm-_",  "Zm9v\x80",
  };
  for (size_t i = 0; i < ARRAY_LEN(bad); i++)
    if (bin_decode(out, sizeof out, bad[i]) != -EINVAL) fail_msg("\"%s\" accepted", bad[i]);
}

/* Every byte value and every length of a last group, as OpenSSL encodes them, with their
 * padding and without. */
static void test_bin_decode_round_trip(void **state) {
  (void)state;
  uint8_t src[256], dst[B64_DECODED_MAX(344)];
  char enc[345];
  for (int i = 0; i < 256; i++) src[i] = (uint8_t)(255 - i);
  for (size_t len = 254; len <= 256; len++) {
    int n = EVP_EncodeBlock((unsigned char *)enc, src, (int)len);
    for (int unpadded = 0; unpadded < 2; unpadded++) {
      while (unpadded && n > 0 && enc[n - 1] == '=') n--;
      size_t got = 0;
      assert_int_equal(b64_decode(dst, &got, enc, (size_t)n), 0);
      assert_int_equal(got, len);
      assert_memory_equal(dst, src, len);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bin_decode),
      cmocka_unit_test(test_bin_decode_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
