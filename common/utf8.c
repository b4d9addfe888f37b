#include "utf8.h"

#include <stdint.h>

/* RFC 3629 table 3-7: the second byte's range depends on the first. */
size_t utf8_seq_len(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  if (len == 0) return 0;
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c == 0xE0)
    n = 3, lo = 0xA0;
  else if (c == 0xED)
    n = 3, hi = 0x9F;
  else if (c >= 0xE1 && c <= 0xEF)
    n = 3;
  else if (c == 0xF0)
    n = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3)
    n = 4;
  else if (c == 0xF4)
    n = 4, hi = 0x8F;
  else
    return 0;
  if (len < n || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF) return 0;
  return n;
}

int utf8_valid(const char *s, size_t len) {
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq_len(s + i, len - i);
    if (!n) return 0;
    i += n;
  }
  return 1;
}

size_t utf8_sanitize(char *dst, size_t cap, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_seq_len(s + i, len - i);
    if (n == 0 || p[i] == 0) {
      if (o + 1 >= cap) break;
      dst[o++] = '?';
      i++;
      continue;
    }
    if (o + n >= cap) break;
    for (size_t k = 0; k < n; k++) dst[o++] = (char)p[i + k];
    i += n;
  }
  dst[o] = '\0';
  return o;
}
