/* fuzz_grpcwire: the gRPC message framing both ways it is read, on the same bytes.
 *
 * The server's deframer (gw_frame_next over the evbuffer a call gathers DATA into) and
 * the client's (gw_deframe over DATA pieces as they come) must agree, whatever the
 * split: the same messages, the same refusal at the same message, the same partial
 * message left over. Each message framed again (gw_frame_append) must give back the
 * input bytes it came from. The header values of the same layer ride along: a
 * grpc-timeout that parses must survive formatting, and grpc-message percent-decoding
 * must undo percent-encoding.
 *
 * Input: byte 0 picks max_len (bits 0-2) and how many split bytes follow (bits 3-5);
 * each split byte is the size of a piece (cycled; 0 = an empty piece); the rest is the
 * byte stream, and its first bytes are the header value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "fuzzkit.h"
#include "grpcwire.h"

static const size_t max_lens[8] = {0, 1, 5, 16, 300, 4096, 65536, 4u << 20};

struct pieces {
  const uint8_t *sizes;
  size_t nsizes, next;
  const uint8_t *p;
  size_t left;
};

/* The next piece of the stream; returns 0 when none is left. */
static int next_piece(struct pieces *s, const uint8_t **p, size_t *n) {
  if (s->left == 0) return 0;
  size_t k = s->left;
  if (s->nsizes) {
    k = s->sizes[s->next++ % s->nsizes];
    if (k > s->left) k = s->left;
  }
  *p = s->p;
  *n = k;
  s->p += k;
  s->left -= k;
  return 1;
}

struct result {
  struct evbuffer *reframed; /* every message taken, framed again */
  size_t nmsgs;
  int error;      /* the refusal (GW_FRAME_*), or 0 */
  size_t partial; /* bytes of an incomplete message left at the end (no error) */
};

static void server_side(struct result *r, struct pieces s, size_t max_len) {
  struct evbuffer *in = evbuffer_new();
  FZ_CHECK(in, "evbuffer_new");
  const uint8_t *p;
  size_t n;
  size_t i = 0;
  while (!r->error && next_piece(&s, &p, &n)) {
    /* Alternate copied and referenced pieces: chains of every shape, as DATA gives. */
    if (i++ % 2)
      evbuffer_add_reference(in, p, n, NULL, NULL);
    else
      evbuffer_add(in, p, n);
    for (;;) {
      size_t before = evbuffer_get_length(in);
      uint8_t *msg = (uint8_t *)"untouched";
      size_t len = 12345;
      int rc = gw_frame_next(in, max_len, &msg, &len);
      if (rc != GW_FRAME_MSG) {
        FZ_CHECK(evbuffer_get_length(in) == before && len == 12345 &&
                     strcmp((char *)msg, "untouched") == 0,
                 "gw_frame_next returned %d but touched its buffer or outputs", rc);
        if (rc != GW_FRAME_NEED_MORE) r->error = rc;
        break;
      }
      FZ_CHECK(len <= max_len, "gw_frame_next gave a message of %zu bytes over max_len %zu", len,
               max_len);
      FZ_CHECK((len == 0) == (msg == NULL), "gw_frame_next: body pointer and length disagree");
      FZ_CHECK(before - evbuffer_get_length(in) == GW_PREFIX_LEN + len,
               "gw_frame_next drained the wrong amount");
      FZ_CHECK(gw_frame_append(r->reframed, msg, len) == 0, "gw_frame_append");
      r->nmsgs++;
      free(msg);
    }
  }
  if (!r->error) r->partial = evbuffer_get_length(in);
  evbuffer_free(in);
}

static int on_msg(void *arg, const uint8_t *msg, size_t len) {
  struct result *r = arg;
  FZ_CHECK(gw_frame_append(r->reframed, msg, len) == 0, "gw_frame_append");
  r->nmsgs++;
  return 0;
}

static void client_side(struct result *r, struct pieces s, size_t max_len) {
  gw_deframer d = GW_DEFRAMER_INIT(max_len);
  const uint8_t *p;
  size_t n;
  while (!r->error && next_piece(&s, &p, &n)) {
    int rc = gw_deframe(&d, p, n, on_msg, r);
    FZ_CHECK(rc <= 0, "gw_deframe returned %d though on_msg never stops", rc);
    r->error = rc;
  }
  if (!r->error) r->partial = gw_deframer_partial(&d);
  gw_deframer_reset(&d);
  FZ_CHECK(gw_deframer_partial(&d) == 0, "gw_deframer_reset left a partial message");
}

static void check_framing(const uint8_t *data, size_t size, const uint8_t *sizes, size_t nsizes,
                          size_t max_len) {
  struct pieces s = {sizes, nsizes, 0, data, size};
  struct result a = {evbuffer_new(), 0, 0, 0}, b = {evbuffer_new(), 0, 0, 0};
  FZ_CHECK(a.reframed && b.reframed, "evbuffer_new");
  server_side(&a, s, max_len);
  client_side(&b, s, max_len);
  FZ_CHECK(a.error == b.error, "deframers disagree: gw_frame_next %d, gw_deframe %d", a.error,
           b.error);
  FZ_CHECK(a.nmsgs == b.nmsgs, "deframers disagree: %zu and %zu messages", a.nmsgs, b.nmsgs);
  FZ_CHECK(a.partial == b.partial, "deframers disagree: %zu and %zu bytes left", a.partial,
           b.partial);
  size_t la = evbuffer_get_length(a.reframed);
  FZ_CHECK(la == evbuffer_get_length(b.reframed), "deframers disagree on the messages' sizes");
  FZ_CHECK(la <= size, "more bytes framed again than came in");
  uint8_t *fa = evbuffer_pullup(a.reframed, -1), *fb = evbuffer_pullup(b.reframed, -1);
  FZ_CHECK(la == 0 || (memcmp(fa, fb, la) == 0 && memcmp(fa, data, la) == 0),
           "messages framed again differ from the input");
  if (!a.error)
    FZ_CHECK(la + a.partial == size, "bytes lost: %zu framed + %zu partial of %zu", la, a.partial,
             size);
  evbuffer_free(a.reframed);
  evbuffer_free(b.reframed);
}

static void check_timeout(const uint8_t *v, size_t len) {
  uint64_t ms = 777, again = 0;
  if (gw_timeout_parse(&ms, (const char *)v, len) != 0) {
    FZ_CHECK(ms == 777, "gw_timeout_parse failed but set its output");
    return;
  }
  char buf[16];
  size_t n = gw_timeout_format(buf, ms);
  FZ_CHECK(n < sizeof buf && strlen(buf) == n, "gw_timeout_format wrote %zu bytes", n);
  FZ_CHECK(gw_timeout_parse(&again, buf, n) == 0,
           "gw_timeout_format(%llu) gave \"%s\", which does not parse", (unsigned long long)ms,
           buf);
  FZ_CHECK(again >= ms, "timeout %llu ms formatted as \"%s\" comes back shorter (%llu ms)",
           (unsigned long long)ms, buf, (unsigned long long)again);
  FZ_CHECK(ms > 99999999 || again == ms,
           "timeout %llu ms formatted as \"%s\" comes back as %llu ms", (unsigned long long)ms, buf,
           (unsigned long long)again);
}

static void check_message(const uint8_t *v, size_t len) {
  /* What a client makes of a grpc-message (gclient's buffer is 512 bytes). */
  char dec[512];
  size_t n = gw_pct_decode(dec, sizeof dec, (const char *)v, len);
  FZ_CHECK(n < sizeof dec && dec[n] == '\0', "gw_pct_decode returned %zu for a %zu-byte buffer", n,
           sizeof dec);
  /* Encoding what was decoded (up to a NUL) and decoding it gives it back. */
  size_t slen = strlen(dec);
  char enc[3 * sizeof dec + 1], back[sizeof dec];
  size_t e = gw_pct_encode(enc, sizeof enc, dec);
  FZ_CHECK(e == strlen(enc), "gw_pct_encode's length is wrong");
  for (size_t i = 0; i < e; i++)
    FZ_CHECK(enc[i] >= 0x20 && enc[i] <= 0x7e, "gw_pct_encode left byte 0x%02x",
             (unsigned)(uint8_t)enc[i]);
  size_t b = gw_pct_decode(back, sizeof back, enc, e);
  FZ_CHECK(b == slen && memcmp(back, dec, slen) == 0,
           "percent-decoding does not undo percent-encoding");
  /* A small buffer: never past it, never half an escape. */
  char small[8];
  size_t s = gw_pct_encode(small, sizeof small, dec);
  FZ_CHECK(s < sizeof small && s <= e && memcmp(small, enc, s) == 0,
           "gw_pct_encode into 8 bytes went wrong");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0];
  size_t max_len = max_lens[mode & 7];
  size_t nsizes = (mode >> 3) & 7;
  data++;
  size--;
  if (nsizes > size) nsizes = size;
  const uint8_t *sizes = data;
  data += nsizes;
  size -= nsizes;
  /* Pieces that are all empty would never end. */
  size_t total = 0;
  for (size_t i = 0; i < nsizes; i++) total += sizes[i];
  if (total == 0) nsizes = 0;

  check_framing(data, size, sizes, nsizes, max_len);
  check_timeout(data, size < 12 ? size : 12);
  check_message(data, size < 1024 ? size : 1024);
  return 0;
}
