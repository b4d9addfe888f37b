/* Unit tests for common/grpcwire: framing (whole buffers and the streaming
 * deframer), grpc-timeout, grpc-message encoding, binary metadata, status names. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "grpc/health/v1/health.pb-c.h"
#include "grpcwire.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Sentinels: gw_frame_next must leave its outputs alone unless it returns a message. */
static uint8_t sentinel_byte;
#define SENTINEL_MSG (&sentinel_byte)
#define SENTINEL_LEN ((size_t)0xdeadbeef)

static struct evbuffer *buf_with(const void *bytes, size_t n) {
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  assert_int_equal(evbuffer_add(b, bytes, n), 0);
  return b;
}

/* Asserts that gw_frame_next returns `want` (not a message) and changes nothing. */
static void expect_no_frame(struct evbuffer *b, size_t max_len, int want) {
  size_t before = evbuffer_get_length(b);
  uint8_t *msg = SENTINEL_MSG;
  size_t len = SENTINEL_LEN;
  assert_int_equal(gw_frame_next(b, max_len, &msg, &len), want);
  assert_ptr_equal(msg, SENTINEL_MSG);
  assert_int_equal(len, SENTINEL_LEN);
  assert_int_equal(evbuffer_get_length(b), before);
}

/* Asserts that the next frame of `b` is exactly `want` (want_len bytes). */
static void expect_frame(struct evbuffer *b, const void *want, size_t want_len) {
  uint8_t *msg = SENTINEL_MSG;
  size_t len = SENTINEL_LEN;
  assert_int_equal(gw_frame_next(b, 1 << 20, &msg, &len), GW_FRAME_MSG);
  assert_int_equal(len, want_len);
  if (want_len == 0) {
    assert_null(msg);
  } else {
    assert_non_null(msg);
    assert_memory_equal(msg, want, want_len);
  }
  free(msg);
}

static void test_frame_split_byte_by_byte(void **state) {
  (void)state;
  static const uint8_t wire[] = {0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  for (size_t i = 0; i < sizeof wire - 1; i++) {
    assert_int_equal(evbuffer_add(b, &wire[i], 1), 0);
    expect_no_frame(b, 1 << 20, GW_FRAME_NEED_MORE);
  }
  assert_int_equal(evbuffer_add(b, &wire[sizeof wire - 1], 1), 0);
  expect_frame(b, "hello", 5);
  assert_int_equal(evbuffer_get_length(b), 0);
  evbuffer_free(b);
}

static void test_frame_two_in_one_buffer(void **state) {
  (void)state;
  static const uint8_t wire[] = {0, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 0, 3, 'x', 'y', 'z', 0};
  struct evbuffer *b = buf_with(wire, sizeof wire);
  expect_frame(b, "ab", 2);
  assert_int_equal(evbuffer_get_length(b), 9);
  expect_frame(b, "xyz", 3);
  /* The start of a third prefix stays for later. */
  expect_no_frame(b, 1 << 20, GW_FRAME_NEED_MORE);
  assert_int_equal(evbuffer_get_length(b), 1);
  evbuffer_free(b);
}

static void test_frame_empty_message(void **state) {
  (void)state;
  static const uint8_t wire[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'q'};
  struct evbuffer *b = buf_with(wire, sizeof wire);
  expect_frame(b, NULL, 0);
  /* Exactly the empty frame's prefix was drained: the next one is intact. */
  expect_frame(b, "q", 1);
  assert_int_equal(evbuffer_get_length(b), 0);
  evbuffer_free(b);
}

static void test_frame_too_large_refused_at_prefix(void **state) {
  (void)state;
  static const uint8_t over[] = {0, 0, 0, 0, 17};
  struct evbuffer *b = buf_with(over, sizeof over);
  /* No body byte is there yet: the refusal must not wait for it. */
  expect_no_frame(b, 16, GW_FRAME_TOO_LARGE);
  evbuffer_free(b);

  static const uint8_t at_limit[] = {0, 0, 0, 0, 16};
  b = buf_with(at_limit, sizeof at_limit);
  expect_no_frame(b, 16, GW_FRAME_NEED_MORE);
  evbuffer_free(b);
}

static void test_frame_4gib_length(void **state) {
  (void)state;
  static const uint8_t wire[] = {0, 0xff, 0xff, 0xff, 0xff, 'x'};
  struct evbuffer *b = buf_with(wire, sizeof wire);
  expect_no_frame(b, 4u << 20, GW_FRAME_TOO_LARGE);
  expect_no_frame(b, 0xfffffffe, GW_FRAME_TOO_LARGE);
  /* The full 32-bit length is decoded, not a truncated or signed one. */
  expect_no_frame(b, 0xffffffff, GW_FRAME_NEED_MORE);
  expect_no_frame(b, SIZE_MAX, GW_FRAME_NEED_MORE);
  evbuffer_free(b);
}

static void test_frame_flags(void **state) {
  (void)state;
  static const uint8_t compressed[] = {1, 0, 0, 0, 1, 'z'};
  struct evbuffer *b = buf_with(compressed, sizeof compressed);
  expect_no_frame(b, 1 << 20, GW_FRAME_COMPRESSED);
  evbuffer_free(b);

  static const uint8_t bad_flags[] = {2, 0x80, 0xff};
  for (size_t i = 0; i < ARRAY_LEN(bad_flags); i++) {
    uint8_t wire[] = {bad_flags[i], 0, 0, 0, 0};
    b = buf_with(wire, sizeof wire);
    expect_no_frame(b, 1 << 20, GW_FRAME_BAD_FLAG);
    evbuffer_free(b);
  }
}

static void test_frame_append_round_trip(void **state) {
  (void)state;
  size_t big_len = 100000;
  uint8_t *big = malloc(big_len);
  assert_non_null(big);
  for (size_t i = 0; i < big_len; i++) big[i] = (uint8_t)(i * 7 + 3);

  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  assert_int_equal(gw_frame_append(b, (const uint8_t *)"abc", 3), 0);
  assert_int_equal(gw_frame_append(b, NULL, 0), 0);
  assert_int_equal(gw_frame_append(b, big, big_len), 0);
  assert_int_equal(evbuffer_get_length(b), 3 * GW_PREFIX_LEN + 3 + big_len);

  /* The prefix is flag 0 plus the big-endian length, as the peer will read it. */
  static const uint8_t first[] = {0, 0, 0, 0, 3, 'a', 'b',  'c',  0,
                                  0, 0, 0, 0, 0, 0,   0x01, 0x86, 0xa0};
  uint8_t head[sizeof first];
  assert_int_equal(evbuffer_copyout(b, head, sizeof head), sizeof head);
  assert_memory_equal(head, first, sizeof first);

  expect_frame(b, "abc", 3);
  expect_frame(b, NULL, 0);
  expect_frame(b, big, big_len);
  assert_int_equal(evbuffer_get_length(b), 0);
  evbuffer_free(b);
  free(big);
}

static void test_frame_append_all_or_nothing(void **state) {
  (void)state;
  struct evbuffer *b = buf_with("x", 1);
  /* A buffer whose end is frozen cannot grow: the append fails without a partial frame. */
  assert_int_equal(evbuffer_freeze(b, 0), 0);
  assert_int_equal(gw_frame_append(b, (const uint8_t *)"abc", 3), -ENOMEM);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  assert_int_equal(gw_frame_append_pb(b, &resp.base), -ENOMEM);
  assert_int_equal(evbuffer_get_length(b), 1);
  evbuffer_free(b);
}

static void test_frame_append_pb(void **state) {
  (void)state;
  struct evbuffer *b = evbuffer_new();
  assert_non_null(b);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  assert_int_equal(gw_frame_append_pb(b, &resp.base), 0);
  /* A default message packs to nothing: an empty frame. */
  Grpc__Health__V1__HealthCheckResponse empty = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  assert_int_equal(gw_frame_append_pb(b, &empty.base), 0);

  static const uint8_t want[] = {0, 0, 0, 0, 2, 0x08, 0x01, 0, 0, 0, 0, 0};
  assert_int_equal(evbuffer_get_length(b), sizeof want);
  uint8_t got[sizeof want];
  assert_int_equal(evbuffer_copyout(b, got, sizeof got), sizeof got);
  assert_memory_equal(got, want, sizeof want);

  uint8_t *msg = NULL;
  size_t len = 0;
  assert_int_equal(gw_frame_next(b, 1 << 20, &msg, &len), GW_FRAME_MSG);
  Grpc__Health__V1__HealthCheckResponse *dec =
      grpc__health__v1__health_check_response__unpack(NULL, len, msg);
  assert_non_null(dec);
  assert_int_equal(dec->status, GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  grpc__health__v1__health_check_response__free_unpacked(dec, NULL);
  free(msg);

  expect_frame(b, NULL, 0);
  assert_int_equal(evbuffer_get_length(b), 0);
  evbuffer_free(b);
}

/* ---- streaming deframer ---------------------------------------------------------- */

#define MAX_SEEN     64
#define NOT_IN_PIECE SIZE_MAX

/* What gw_deframe handed to the callback. */
typedef struct seen {
  size_t n;             /* messages */
  struct evbuffer *log; /* each message as a 4-byte length and its bytes, in order */
  size_t at[MAX_SEEN];  /* where the first MAX_SEEN messages were within the piece
                             * being fed, or NOT_IN_PIECE */
  size_t len[MAX_SEEN];
  const uint8_t *piece; /* the piece being fed */
  size_t piece_len;
  size_t in_place; /* non-empty messages that lay inside the piece */
  size_t stop_at;  /* return stop_rc from this message (1-based; 0: never) */
  int stop_rc;
} seen;

static void seen_init(seen *s) {
  memset(s, 0, sizeof *s);
  s->log = evbuffer_new();
  assert_non_null(s->log);
}

/* No assertions here: a failure would jump out of gw_deframe. The tests check what
 * was recorded. */
static int on_msg(void *arg, const uint8_t *msg, size_t len) {
  seen *s = arg;
  int inside = s->piece && msg && msg >= s->piece && msg + len <= s->piece + s->piece_len;
  if (s->n < MAX_SEEN) {
    s->at[s->n] = inside ? (size_t)(msg - s->piece) : NOT_IN_PIECE;
    s->len[s->n] = len;
  }
  if (inside && len > 0) s->in_place++;
  s->n++;
  uint32_t l32 = (uint32_t)len;
  if (evbuffer_add(s->log, &l32, sizeof l32) != 0 || (len && evbuffer_add(s->log, msg, len) != 0))
    abort();
  return s->n == s->stop_at ? s->stop_rc : 0;
}

/* Feeds `n` bytes as one piece in an allocation of its own, so that ASan sees a read
 * outside it. */
static int feed(gw_deframer *d, seen *s, const uint8_t *p, size_t n) {
  uint8_t *piece = malloc(n ? n : 1);
  assert_non_null(piece);
  if (n) memcpy(piece, p, n);
  s->piece = piece;
  s->piece_len = n;
  int rc = gw_deframe(d, piece, n, on_msg, s);
  free(piece);
  s->piece = NULL;
  return rc;
}

/* Appends one framed message of `len` pattern bytes to `wire`, and to `want` as
 * on_msg logs it. */
static void add_msg(struct evbuffer *wire, struct evbuffer *want, size_t len, uint8_t seed) {
  uint8_t *body = malloc(len + 1);
  assert_non_null(body);
  for (size_t i = 0; i < len; i++) body[i] = (uint8_t)(seed + i * 31 + (i >> 8));
  assert_int_equal(gw_frame_append(wire, body, len), 0);
  uint32_t l32 = (uint32_t)len;
  assert_int_equal(evbuffer_add(want, &l32, sizeof l32), 0);
  if (len) assert_int_equal(evbuffer_add(want, body, len), 0);
  free(body);
}

static void expect_same(struct evbuffer *a, struct evbuffer *b) {
  assert_int_equal(evbuffer_get_length(a), evbuffer_get_length(b));
  if (evbuffer_get_length(a))
    assert_memory_equal(evbuffer_pullup(a, -1), evbuffer_pullup(b, -1), evbuffer_get_length(a));
}

static void test_deframe_whole_messages_in_place(void **state) {
  (void)state;
  static const size_t lens[] = {3, 1000, 1, 70000, 2};
  struct evbuffer *wire = evbuffer_new(), *want = evbuffer_new();
  assert_true(wire && want);
  for (size_t i = 0; i < ARRAY_LEN(lens); i++) add_msg(wire, want, lens[i], (uint8_t)i);
  size_t n = evbuffer_get_length(wire);
  gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
  seen s;
  seen_init(&s);
  assert_int_equal(feed(&d, &s, evbuffer_pullup(wire, -1), n), 0);
  assert_int_equal(s.n, ARRAY_LEN(lens));
  expect_same(s.log, want);
  /* Each message was passed in place: a pointer into the piece, after its prefix. */
  assert_int_equal(s.in_place, ARRAY_LEN(lens));
  size_t at = 0;
  for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
    at += GW_PREFIX_LEN;
    assert_int_equal(s.at[i], at);
    assert_int_equal(s.len[i], lens[i]);
    at += lens[i];
  }
  assert_int_equal(gw_deframer_partial(&d), 0);
  assert_null(d.msg);
  gw_deframer_reset(&d);
  evbuffer_free(s.log);
  evbuffer_free(want);
  evbuffer_free(wire);
}

/* Deterministic xorshift so failures reproduce. */
static uint64_t rnd(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* Feeds `wire` in pieces: all in one (max_piece 0), byte by byte (1), or of random
 * sizes in 1..max_piece. Every call returns 0 and the messages come out as `want`
 * says. Returns how many non-empty ones were passed in place. */
static size_t feed_in_pieces(struct evbuffer *wire, struct evbuffer *want, size_t max_piece,
                             uint64_t seed) {
  const uint8_t *p = evbuffer_pullup(wire, -1);
  size_t n = evbuffer_get_length(wire);
  gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
  seen s;
  seen_init(&s);
  for (size_t off = 0; off < n;) {
    size_t k = max_piece == 0 ? n : max_piece == 1 ? 1 : 1 + rnd(&seed) % max_piece;
    if (k > n - off) k = n - off;
    assert_int_equal(feed(&d, &s, p + off, k), 0);
    off += k;
  }
  expect_same(s.log, want);
  assert_int_equal(gw_deframer_partial(&d), 0);
  gw_deframer_reset(&d);
  evbuffer_free(s.log);
  return s.in_place;
}

static void test_deframe_any_split_same_messages(void **state) {
  (void)state;
  struct evbuffer *wire = evbuffer_new(), *want = evbuffer_new();
  assert_true(wire && want);
  uint64_t x = 0x2545f4914f6cdd1dULL;
  size_t nonempty = 0;
  for (size_t i = 0; i < 300; i++) {
    uint64_t r = rnd(&x);
    size_t len = r % 7 == 0 ? 0 : r % 31 == 0 ? 20000 + r % 100000 : 1 + r % 600;
    add_msg(wire, want, len, (uint8_t)r);
    nonempty += len > 0;
  }
  assert_true(nonempty > 200 && nonempty < 300);
  /* All in one piece: every message in place. */
  assert_int_equal(feed_in_pieces(wire, want, 0, 0), nonempty);
  /* Byte by byte: every message gathered. */
  assert_int_equal(feed_in_pieces(wire, want, 1, 0), 0);
  /* Random pieces, small and large: the same messages each time. */
  static const size_t maxes[] = {2, 6, 7, 100, 5000, 150000};
  for (size_t i = 0; i < ARRAY_LEN(maxes); i++)
    assert_true(feed_in_pieces(wire, want, maxes[i], 0x9e3779b97f4a7c15ULL + i) <= nonempty);
  evbuffer_free(want);
  evbuffer_free(wire);
}

static void test_deframe_empty_messages(void **state) {
  (void)state;
  static const uint8_t wire[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'q', 0, 0, 0, 0, 0};
  /* One piece, then byte by byte: empty, empty, "q", empty either way. */
  for (int split = 0; split < 2; split++) {
    gw_deframer d = GW_DEFRAMER_INIT(16);
    seen s;
    seen_init(&s);
    if (split) {
      for (size_t i = 0; i < sizeof wire; i++) {
        assert_int_equal(feed(&d, &s, &wire[i], 1), 0);
        /* An empty message is complete with its prefix: handed over at once. */
        if (i == 4 || i == 9 || i == 15 || i == 20) assert_int_equal(gw_deframer_partial(&d), 0);
      }
    } else {
      assert_int_equal(feed(&d, &s, wire, sizeof wire), 0);
    }
    assert_int_equal(s.n, 4);
    static const size_t lens[] = {0, 0, 1, 0};
    for (size_t i = 0; i < ARRAY_LEN(lens); i++) assert_int_equal(s.len[i], lens[i]);
    assert_int_equal(gw_deframer_partial(&d), 0);
    assert_null(d.msg);
    gw_deframer_reset(&d);
    evbuffer_free(s.log);
  }
  /* A piece that is exactly one empty message's prefix. */
  gw_deframer d = GW_DEFRAMER_INIT(16);
  seen s;
  seen_init(&s);
  assert_int_equal(feed(&d, &s, wire, GW_PREFIX_LEN), 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.len[0], 0);
  evbuffer_free(s.log);
}

static void test_deframe_prefix_split(void **state) {
  (void)state;
  static const uint8_t wire[] = {0,   0, 0, 0, 5, 'h', 'e', 'l', 'l',
                                 'o', 0, 0, 0, 0, 3,   'a', 'b', 'c'};
  gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
  seen s;
  seen_init(&s);
  assert_int_equal(feed(&d, &s, wire, 2), 0);
  assert_int_equal(gw_deframer_partial(&d), 2);
  assert_int_equal(feed(&d, &s, wire + 2, 3), 0); /* the prefix is complete, no body yet */
  assert_int_equal(gw_deframer_partial(&d), 5);
  assert_int_equal(s.n, 0);
  /* The body and the whole next message in one piece: the first was gathered, the
   * second is passed in place. */
  assert_int_equal(feed(&d, &s, wire + 5, sizeof wire - 5), 0);
  assert_int_equal(s.n, 2);
  assert_int_equal(s.at[0], NOT_IN_PIECE);
  assert_int_equal(s.at[1], 5 + GW_PREFIX_LEN);
  assert_int_equal(s.in_place, 1);
  struct evbuffer *want = evbuffer_new();
  assert_non_null(want);
  uint32_t l5 = 5, l3 = 3;
  assert_int_equal(evbuffer_add(want, &l5, 4), 0);
  assert_int_equal(evbuffer_add(want, "hello", 5), 0);
  assert_int_equal(evbuffer_add(want, &l3, 4), 0);
  assert_int_equal(evbuffer_add(want, "abc", 3), 0);
  expect_same(s.log, want);
  assert_int_equal(gw_deframer_partial(&d), 0);
  evbuffer_free(want);
  evbuffer_free(s.log);

  /* A prefix split at every point, with the body in the piece that completes it. */
  for (size_t k = 1; k < GW_PREFIX_LEN; k++) {
    seen_init(&s);
    assert_int_equal(feed(&d, &s, wire, k), 0);
    assert_int_equal(gw_deframer_partial(&d), k);
    assert_int_equal(feed(&d, &s, wire + k, 10 - k), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.len[0], 5);
    assert_memory_equal(evbuffer_pullup(s.log, -1) + 4, "hello", 5);
    assert_int_equal(gw_deframer_partial(&d), 0);
    evbuffer_free(s.log);
  }
  gw_deframer_reset(&d);
}

static void test_deframe_too_large_at_prefix(void **state) {
  (void)state;
  static const uint8_t over[] = {0, 0, 0, 0, 17};
  static const uint8_t ok[] = {0, 0, 0, 0, 1, 'k'};
  /* A whole prefix alone; the same split; after a good message in the same piece;
   * with a body following in the piece. None waits for the body. */
  for (int how = 0; how < 4; how++) {
    gw_deframer d = GW_DEFRAMER_INIT(16);
    seen s;
    seen_init(&s);
    int rc;
    if (how == 0) {
      rc = feed(&d, &s, over, sizeof over);
    } else if (how == 1) {
      assert_int_equal(feed(&d, &s, over, 3), 0);
      rc = feed(&d, &s, over + 3, 2);
    } else {
      uint8_t piece[sizeof ok + sizeof over + 17];
      memcpy(piece, ok, sizeof ok);
      memcpy(piece + sizeof ok, over, sizeof over);
      memset(piece + sizeof ok + sizeof over, 'x', 17);
      rc = feed(&d, &s, piece, how == 2 ? sizeof ok + sizeof over : sizeof piece);
    }
    assert_int_equal(rc, GW_FRAME_TOO_LARGE);
    assert_int_equal(s.n, how >= 2 ? 1 : 0);
    assert_null(d.msg);
    gw_deframer_reset(&d);
    evbuffer_free(s.log);
  }
  /* At the limit it is taken; with its prefix alone it waits for the body. */
  gw_deframer d = GW_DEFRAMER_INIT(16);
  seen s;
  seen_init(&s);
  static const uint8_t at_limit[] = {0, 0, 0, 0, 16};
  assert_int_equal(feed(&d, &s, at_limit, sizeof at_limit), 0);
  assert_int_equal(gw_deframer_partial(&d), GW_PREFIX_LEN);
  uint8_t body[16];
  memset(body, 'b', sizeof body);
  assert_int_equal(feed(&d, &s, body, sizeof body), 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.len[0], 16);
  /* The full 32-bit length, not a truncated or signed one. */
  gw_deframer_reset(&d);
  d.max_len = 0xfffffffe;
  static const uint8_t huge[] = {0, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(feed(&d, &s, huge, sizeof huge), GW_FRAME_TOO_LARGE);
  assert_null(d.msg);
  gw_deframer_reset(&d);
  evbuffer_free(s.log);
}

static void test_deframe_flags(void **state) {
  (void)state;
  static const uint8_t flags[] = {1, 2, 0x80, 0xff};
  for (size_t i = 0; i < ARRAY_LEN(flags); i++) {
    int want = flags[i] == 1 ? GW_FRAME_COMPRESSED : GW_FRAME_BAD_FLAG;
    uint8_t wire[] = {0, 0, 0, 0, 1, 'a', flags[i], 0, 0, 0, 1, 'z'};
    /* In place (whole in the piece), then with the prefix gathered byte by byte. */
    for (int split = 0; split < 2; split++) {
      gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
      seen s;
      seen_init(&s);
      int rc = 0;
      if (split) {
        for (size_t k = 0; k < sizeof wire && rc == 0; k++) rc = feed(&d, &s, &wire[k], 1);
      } else {
        rc = feed(&d, &s, wire, sizeof wire);
      }
      assert_int_equal(rc, want);
      /* The message before it went through; the refused one never does. */
      assert_int_equal(s.n, 1);
      assert_int_equal(s.len[0], 1);
      assert_null(d.msg);
      gw_deframer_reset(&d);
      evbuffer_free(s.log);
    }
  }
}

static void test_deframe_callback_stops(void **state) {
  (void)state;
  struct evbuffer *wire = evbuffer_new(), *want = evbuffer_new();
  assert_true(wire && want);
  add_msg(wire, want, 10, 1);
  add_msg(wire, want, 20, 2);
  add_msg(wire, want, 30, 3);
  size_t n = evbuffer_get_length(wire);
  const uint8_t *p = evbuffer_pullup(wire, -1);
  /* In place: the second message stops it, the third is not passed. */
  gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
  seen s;
  seen_init(&s);
  s.stop_at = 2;
  s.stop_rc = 7;
  assert_int_equal(feed(&d, &s, p, n), 7);
  assert_int_equal(s.n, 2);
  assert_int_equal(s.len[1], 20);
  gw_deframer_reset(&d);
  evbuffer_free(s.log);

  /* Gathered: the message completed by the piece stops it; its buffer is freed
   * (ASan's leak check) and the rest of the piece is not looked at. */
  seen_init(&s);
  s.stop_at = 1;
  s.stop_rc = 1;
  assert_int_equal(feed(&d, &s, p, 8), 0);
  assert_int_equal(feed(&d, &s, p + 8, n - 8), 1);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.len[0], 10);
  gw_deframer_reset(&d);
  assert_int_equal(gw_deframer_partial(&d), 0);
  /* After the reset it starts over between messages. */
  s.stop_at = 0;
  assert_int_equal(feed(&d, &s, p, n), 0);
  assert_int_equal(s.n, 4);
  gw_deframer_reset(&d);
  evbuffer_free(s.log);
  evbuffer_free(want);
  evbuffer_free(wire);
}

static void test_deframer_partial(void **state) {
  (void)state;
  struct evbuffer *wire = evbuffer_new(), *want = evbuffer_new();
  assert_true(wire && want);
  add_msg(wire, want, 100, 1);
  add_msg(wire, want, 50, 2);
  const uint8_t *p = evbuffer_pullup(wire, -1);
  gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
  seen s;
  seen_init(&s);
  assert_int_equal(gw_deframer_partial(&d), 0);
  /* Byte by byte through the first message: it counts prefix and body so far. */
  for (size_t i = 0; i < GW_PREFIX_LEN + 100; i++) {
    assert_int_equal(feed(&d, &s, p + i, 1), 0);
    assert_int_equal(gw_deframer_partial(&d), i + 1 == GW_PREFIX_LEN + 100 ? 0 : i + 1);
  }
  assert_int_equal(s.n, 1);
  /* The second, half in one piece. */
  assert_int_equal(feed(&d, &s, p + 105, 30), 0);
  assert_int_equal(gw_deframer_partial(&d), 30);
  assert_int_equal(feed(&d, &s, p + 135, 25), 0);
  assert_int_equal(gw_deframer_partial(&d), 0);
  assert_int_equal(s.n, 2);
  expect_same(s.log, want);
  /* A whole message and half of the next in one piece. */
  evbuffer_free(s.log);
  seen_init(&s);
  assert_int_equal(feed(&d, &s, p, 105 + 12), 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(gw_deframer_partial(&d), 12);
  gw_deframer_reset(&d);
  evbuffer_free(s.log);
  evbuffer_free(want);
  evbuffer_free(wire);
}

static void test_deframer_reset_frees_partial(void **state) {
  (void)state;
  struct evbuffer *wire = evbuffer_new(), *want = evbuffer_new();
  assert_true(wire && want);
  add_msg(wire, want, 100000, 9);
  const uint8_t *p = evbuffer_pullup(wire, -1);
  gw_deframer d = GW_DEFRAMER_INIT(1 << 20);
  seen s;
  seen_init(&s);
  /* Half a message gathered into its own buffer: the reset frees it (a leak would
   * show under ASan) and drops what was gathered. */
  assert_int_equal(feed(&d, &s, p, 50000), 0);
  assert_int_equal(gw_deframer_partial(&d), 50000);
  assert_non_null(d.msg);
  gw_deframer_reset(&d);
  assert_null(d.msg);
  assert_int_equal(gw_deframer_partial(&d), 0);
  /* The rest of that message would now read as a new prefix: start over instead. */
  assert_int_equal(feed(&d, &s, p, evbuffer_get_length(wire)), 0);
  assert_int_equal(s.n, 1);
  expect_same(s.log, want);
  /* A reset with only part of a prefix, and on a fresh or reset deframer. */
  assert_int_equal(feed(&d, &s, p, 3), 0);
  gw_deframer_reset(&d);
  assert_int_equal(gw_deframer_partial(&d), 0);
  gw_deframer_reset(&d);
  gw_deframer fresh = GW_DEFRAMER_INIT(1);
  gw_deframer_reset(&fresh);
  assert_int_equal(fresh.max_len, 1);
  evbuffer_free(s.log);
  evbuffer_free(want);
  evbuffer_free(wire);
}

static void test_timeout_parse_valid(void **state) {
  (void)state;
  static const struct {
    const char *v;
    uint64_t ms;
  } cases[] = {
      {"1H", 3600000},
      {"2M", 120000},
      {"3S", 3000},
      {"4m", 4},
      {"0H", 0},
      {"0m", 0},
      {"0n", 0},
      {"0u", 0},
      {"1u", 1},
      {"999u", 1},
      {"1000u", 1},
      {"1001u", 2},
      {"1n", 1},
      {"1000000n", 1},
      {"1000001n", 2},
      {"99999999n", 100},
      {"99999999m", 99999999},
      {"00000001S", 1000},
      {"99999999H", UINT64_C(359999996400000)},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    uint64_t ms = UINT64_MAX;
    int rc = gw_timeout_parse(&ms, cases[i].v, strlen(cases[i].v));
    if (rc != 0 || ms != cases[i].ms)
      fail_msg("%s: rc=%d ms=%llu want %llu", cases[i].v, rc, (unsigned long long)ms,
               (unsigned long long)cases[i].ms);
  }
}

static void test_timeout_parse_invalid(void **state) {
  (void)state;
  static const char *const cases[] = {
      "",    "m",   "100000000m", "000000001m", "10",   "10x",  "10h", "10s", "1 m",
      " 1m", "1m ", "-1m",        "+1m",        "1.5S", "0x1S", "1mm", "S1",
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    uint64_t ms = 42;
    int rc = gw_timeout_parse(&ms, cases[i], strlen(cases[i]));
    if (rc != -EINVAL || ms != 42)
      fail_msg("'%s' accepted: rc=%d ms=%llu", cases[i], rc, (unsigned long long)ms);
  }
  /* Only `len` bytes count: "12m" cut to "12" has no unit. */
  uint64_t ms = 42;
  assert_int_equal(gw_timeout_parse(&ms, "12m", 2), -EINVAL);
  assert_int_equal(ms, 42);
  assert_int_equal(gw_timeout_parse(&ms, "12m", 3), 0);
  assert_int_equal(ms, 12);
}

static void expect_format(uint64_t ms, const char *want) {
  char buf[16];
  size_t n = gw_timeout_format(buf, ms);
  assert_string_equal(buf, want);
  assert_int_equal(n, strlen(want));
}

static void test_timeout_format(void **state) {
  (void)state;
  expect_format(0, "0m");
  expect_format(1, "1m");
  expect_format(99999999, "99999999m");
  expect_format(100000000, "100000S");
  expect_format(100000001, "100001S");
  expect_format(UINT64_C(99999999000), "99999999S");
  expect_format(UINT64_C(99999999001), "1666667M");
  expect_format(UINT64_C(359999996400000), "99999999H");
  expect_format(UINT64_MAX, "99999999H");
}

static uint64_t unit_ms(char unit) {
  switch (unit) {
  case 'm': return 1;
  case 'S': return 1000;
  case 'M': return 60000;
  default: return 3600000;
  }
}

static void test_timeout_format_round_trip(void **state) {
  (void)state;
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (int i = 0; i < 2000; i++) {
    /* Values spread over every unit's range, up to 2^64. */
    x = x * 6364136223846793005u + 1442695040888963407u;
    uint64_t ms = x >> (x % 64);
    char buf[16];
    size_t n = gw_timeout_format(buf, ms);
    if (ms > UINT64_C(359999996400000)) {
      assert_string_equal(buf, "99999999H");
      continue;
    }
    assert_in_range(n, 2, 9);
    uint64_t back = 0;
    assert_int_equal(gw_timeout_parse(&back, buf, n), 0);
    /* Never shorter, and longer by less than one unit. */
    assert_true(back >= ms);
    assert_true(back - ms < unit_ms(buf[n - 1]));
    if (ms <= 99999999) assert_int_equal(back, ms);
  }
}

static void expect_encode(const char *src, const char *want) {
  char dst[256];
  size_t n = gw_pct_encode(dst, sizeof dst, src);
  assert_string_equal(dst, want);
  assert_int_equal(n, strlen(want));
}

static void test_pct_encode(void **state) {
  (void)state;
  expect_encode("", "");
  expect_encode("Hello, World! ~ `{}|' \"x\"", "Hello, World! ~ `{}|' \"x\"");
  expect_encode("100%", "100%25");
  expect_encode("%%", "%25%25");
  expect_encode("r\xc3\xa9sum\xc3\xa9", "r%C3%A9sum%C3%A9");
  expect_encode("a\tb\nc\x7f\x1f", "a%09b%0Ac%7F%1F");
  expect_encode("\xff", "%FF");
}

static void test_pct_encode_truncation(void **state) {
  (void)state;
  static const struct {
    size_t cap;
    const char *want;
  } cases[] = {
      {1, ""},   {2, "a"},     {3, "ab"},     {4, "ab"},
      {5, "ab"}, {6, "ab%25"}, {7, "ab%25c"}, {8, "ab%25c"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char dst[16];
    memset(dst, '#', sizeof dst);
    size_t n = gw_pct_encode(dst, cases[i].cap, "ab%c");
    assert_string_equal(dst, cases[i].want);
    assert_int_equal(n, strlen(cases[i].want));
    /* Nothing written past cap. */
    for (size_t j = cases[i].cap; j < sizeof dst; j++) assert_int_equal(dst[j], '#');
  }
}

static void expect_decode(const char *src, const char *want) {
  char dst[256];
  size_t n = gw_pct_decode(dst, sizeof dst, src, strlen(src));
  assert_string_equal(dst, want);
  assert_int_equal(n, strlen(want));
}

static void test_pct_decode(void **state) {
  (void)state;
  expect_decode("", "");
  expect_decode("plain text", "plain text");
  expect_decode("100%25", "100%");
  expect_decode("r%C3%A9sum%c3%a9", "r\xc3\xa9sum\xc3\xa9");
  expect_decode("%%41", "%A");
  /* Malformed escapes are kept verbatim. */
  expect_decode("%", "%");
  expect_decode("100%", "100%");
  expect_decode("%2", "%2");
  expect_decode("%zz", "%zz");
  expect_decode("%2g%g2", "%2g%g2");
  expect_decode("50% off", "50% off");

  char dst[16];
  /* Only `len` bytes count: an escape cut by len is malformed. */
  assert_int_equal(gw_pct_decode(dst, sizeof dst, "%41", 2), 2);
  assert_string_equal(dst, "%4");
  /* %00 decodes to a NUL byte that the length accounts for. */
  assert_int_equal(gw_pct_decode(dst, sizeof dst, "a%00b", 5), 3);
  assert_memory_equal(dst, "a\0b", 4);
  /* Truncated to cap - 1 and NUL-terminated, nothing written past cap. */
  memset(dst, '#', sizeof dst);
  assert_int_equal(gw_pct_decode(dst, 4, "%41%42%43%44", 12), 3);
  assert_string_equal(dst, "ABC");
  for (size_t j = 4; j < sizeof dst; j++) assert_int_equal(dst[j], '#');
  assert_int_equal(gw_pct_decode(dst, 1, "abc", 3), 0);
  assert_string_equal(dst, "");
}

static void test_pct_round_trip_all_bytes(void **state) {
  (void)state;
  char src[256];
  for (int i = 1; i < 256; i++) src[i - 1] = (char)i;
  src[255] = '\0';
  char enc[3 * 256 + 1];
  size_t n = gw_pct_encode(enc, sizeof enc, src);
  for (size_t i = 0; i < n; i++) assert_true(enc[i] >= 0x20 && enc[i] <= 0x7e);
  char dec[256];
  assert_int_equal(gw_pct_decode(dec, sizeof dec, enc, n), 255);
  assert_memory_equal(dec, src, 256);
}

static void test_status_name(void **state) {
  (void)state;
  assert_string_equal(gw_status_name(GW_OK), "OK");
  assert_string_equal(gw_status_name(GW_CANCELLED), "CANCELLED");
  assert_string_equal(gw_status_name(GW_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
  assert_string_equal(gw_status_name(GW_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
  assert_string_equal(gw_status_name(GW_UNIMPLEMENTED), "UNIMPLEMENTED");
  assert_string_equal(gw_status_name(GW_INTERNAL), "INTERNAL");
  assert_string_equal(gw_status_name(GW_UNAUTHENTICATED), "UNAUTHENTICATED");
  assert_string_equal(gw_status_name(-1), "UNKNOWN");
  assert_string_equal(gw_status_name(17), "UNKNOWN");
  assert_string_equal(gw_status_name(INT_MAX), "UNKNOWN");
  assert_string_equal(gw_status_name(INT_MIN), "UNKNOWN");
}

static void test_prefix_decode(void **state) {
  (void)state;
  static const uint8_t plain[GW_PREFIX_LEN] = {0, 0x01, 0x02, 0x03, 0x04};
  static const uint8_t compressed[GW_PREFIX_LEN] = {1, 0, 0, 0, 7};
  static const uint8_t bad[GW_PREFIX_LEN] = {0x80, 0xff, 0xff, 0xff, 0xff};
  uint32_t len = 0;
  assert_int_equal(gw_prefix_decode(&len, plain), 0);
  assert_int_equal(len, 0x01020304u);
  assert_int_equal(gw_prefix_decode(&len, compressed), 1);
  assert_int_equal(len, 7);
  /* The length is read whatever the flag, for the caller's error message. */
  assert_int_equal(gw_prefix_decode(&len, bad), 0x80);
  assert_int_equal(len, UINT32_MAX);
}

static void test_prefix_encode_round_trip(void **state) {
  (void)state;
  static const uint32_t lens[] = {0, 1, 255, 256, 65536, 0x01020304u, UINT32_MAX};
  for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
    uint8_t p[GW_PREFIX_LEN];
    gw_prefix_encode(p, lens[i]);
    uint32_t len = 0;
    assert_int_equal(gw_prefix_decode(&len, p), 0);
    assert_int_equal(len, lens[i]);
  }
  uint8_t p[GW_PREFIX_LEN];
  gw_prefix_encode(p, 0x01020304u);
  static const uint8_t want[GW_PREFIX_LEN] = {0, 1, 2, 3, 4};
  assert_memory_equal(p, want, sizeof want);
}

#define CT(s) gw_content_type_is_grpc((const uint8_t *)(s), sizeof(s) - 1)

static void test_content_type(void **state) {
  (void)state;
  assert_true(CT("application/grpc"));
  assert_true(CT("application/grpc+proto"));
  assert_true(CT("application/grpc;charset=utf-8"));
  assert_false(CT("application/grpcx"));
  assert_false(CT("application/grp"));
  assert_false(CT("application/json"));
  assert_false(CT("Application/grpc"));
  assert_false(CT(""));
  /* Only the bytes given count: a longer buffer cut at "application/grpc" is gRPC. */
  assert_true(gw_content_type_is_grpc((const uint8_t *)"application/grpcx", 16));
}

static void test_header_is(void **state) {
  (void)state;
  static const uint8_t name[] = {'c', 'o', 'n', 't', 'e', 'n', 't', '-', 't', 'y', 'p', 'e'};
  assert_true(gw_header_is(name, sizeof name, "content-type"));
  assert_false(gw_header_is(name, sizeof name - 1, "content-type"));
  assert_false(gw_header_is(name, sizeof name, "content-typ"));
  assert_false(gw_header_is(name, sizeof name, "content-types"));
  assert_false(gw_header_is(name, sizeof name, "Content-Type"));
  assert_true(gw_header_is(name, 0, ""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_prefix_decode),
      cmocka_unit_test(test_prefix_encode_round_trip),
      cmocka_unit_test(test_content_type),
      cmocka_unit_test(test_header_is),
      cmocka_unit_test(test_frame_split_byte_by_byte),
      cmocka_unit_test(test_frame_two_in_one_buffer),
      cmocka_unit_test(test_frame_empty_message),
      cmocka_unit_test(test_frame_too_large_refused_at_prefix),
      cmocka_unit_test(test_frame_4gib_length),
      cmocka_unit_test(test_frame_flags),
      cmocka_unit_test(test_frame_append_round_trip),
      cmocka_unit_test(test_frame_append_all_or_nothing),
      cmocka_unit_test(test_frame_append_pb),
      cmocka_unit_test(test_deframe_whole_messages_in_place),
      cmocka_unit_test(test_deframe_any_split_same_messages),
      cmocka_unit_test(test_deframe_empty_messages),
      cmocka_unit_test(test_deframe_prefix_split),
      cmocka_unit_test(test_deframe_too_large_at_prefix),
      cmocka_unit_test(test_deframe_flags),
      cmocka_unit_test(test_deframe_callback_stops),
      cmocka_unit_test(test_deframer_partial),
      cmocka_unit_test(test_deframer_reset_frees_partial),
      cmocka_unit_test(test_timeout_parse_valid),
      cmocka_unit_test(test_timeout_parse_invalid),
      cmocka_unit_test(test_timeout_format),
      cmocka_unit_test(test_timeout_format_round_trip),
      cmocka_unit_test(test_pct_encode),
      cmocka_unit_test(test_pct_encode_truncation),
      cmocka_unit_test(test_pct_decode),
      cmocka_unit_test(test_pct_round_trip_all_bytes),
      cmocka_unit_test(test_status_name),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
