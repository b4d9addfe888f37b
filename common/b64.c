#include "b64.h"

#include <errno.h>

static int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int b64_decode(uint8_t *dst, size_t *out_len, const char *src, size_t len) {
  size_t pad = 0;
  while (pad < 2 && len > 0 && src[len - 1] == '=') {
    len--;
    pad++;
  }
  /* Padding, when there is some, completes the last group exactly. */
  if (len % 4 == 1 || (pad && (len + pad) % 4 != 0)) return -EINVAL;
  uint32_t acc = 0;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    int v = base64_value(src[i]);
    if (v < 0) return -EINVAL;
    acc = acc << 6 | (uint32_t)v;
    if (i % 4 == 3) {
      dst[n++] = (uint8_t)(acc >> 16);
      dst[n++] = (uint8_t)(acc >> 8);
      dst[n++] = (uint8_t)acc;
    }
  }
  /* A short last group: 2 characters hold 1 byte, 3 hold 2 (the bits left over are
   * ignored, as by most decoders). */
  if (len % 4 == 2) dst[n++] = (uint8_t)(acc >> 4);
  if (len % 4 == 3) {
    dst[n++] = (uint8_t)(acc >> 10);
    dst[n++] = (uint8_t)(acc >> 2);
  }
  *out_len = n;
  return 0;
}
