#include "ids.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "compat.h"

static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

int64_t id_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void id_run_new(char *out, int64_t now_ms) {
  /* The last id's time and random part: a second id in the same millisecond (or
   * after the clock stepped back) continues from it, so ids stay ordered. */
  static int64_t last_ms = -1;
  static uint8_t last_rand[10];
  uint8_t bytes[16];
  if (now_ms <= last_ms) {
    now_ms = last_ms;
    for (int i = 9; i >= 0 && ++last_rand[i] == 0; i--) {
    }
  } else {
    if (compat_random(last_rand, sizeof last_rand) < 0) abort();
    last_rand[0] &= 0x7f; /* headroom so increments within a millisecond never wrap */
    last_ms = now_ms;
  }
  uint64_t t = (uint64_t)now_ms;
  for (int i = 5; i >= 0; i--, t >>= 8) bytes[i] = (uint8_t)t;
  memcpy(bytes + 6, last_rand, 10);
  /* 128 bits as 26 base32 digits, most significant first (the top digit holds 3 bits). */
  unsigned acc = 0;
  int nbits = 2; /* 130 - 128: pad at the top */
  size_t o = 0;
  for (int i = 0; i < 16; i++) {
    acc = (acc << 8) | bytes[i];
    nbits += 8;
    while (nbits >= 5) {
      nbits -= 5;
      out[o++] = b32[(acc >> nbits) & 31];
    }
  }
  out[o] = '\0';
}

int id_run_valid(const char *s, size_t len) {
  if (len != ID_RUN_LEN || s[0] > '7') return 0;
  for (size_t i = 0; i < len; i++)
    if (!s[i] || !strchr(b32, s[i])) return 0;
  return 1;
}
