/* grpcwire: the gRPC-over-HTTP/2 wire rules that are pure functions of bytes:
 * status codes, header names and the gRPC content-type, grpc-message percent-encoding,
 * binary (-bin) metadata values, grpc-timeout values, and the 5-byte length-prefixed
 * message framing. No sockets, no nghttp2: unit-testable alone.
 * See grpc doc/PROTOCOL-HTTP2.md and doc/statuscodes.md. */
#ifndef PRISMQ_GRPCWIRE_H
#define PRISMQ_GRPCWIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct evbuffer;
struct ProtobufCMessage;

/* gRPC status codes (doc/statuscodes.md). */
enum gw_status {
  GW_OK = 0,
  GW_CANCELLED = 1,
  GW_UNKNOWN = 2,
  GW_INVALID_ARGUMENT = 3,
  GW_DEADLINE_EXCEEDED = 4,
  GW_NOT_FOUND = 5,
  GW_ALREADY_EXISTS = 6,
  GW_PERMISSION_DENIED = 7,
  GW_RESOURCE_EXHAUSTED = 8,
  GW_FAILED_PRECONDITION = 9,
  GW_ABORTED = 10,
  GW_OUT_OF_RANGE = 11,
  GW_UNIMPLEMENTED = 12,
  GW_INTERNAL = 13,
  GW_UNAVAILABLE = 14,
  GW_DATA_LOSS = 15,
  GW_UNAUTHENTICATED = 16,
};

/* Returns the canonical upper-case name ("DEADLINE_EXCEEDED"), or "UNKNOWN" for a
 * code outside 0..16. The string is static. */
const char *gw_status_name(int code);

/* Length of the 5-byte message prefix: 1 flag byte + 4-byte big-endian length. */
#define GW_PREFIX_LEN 5

/* Decodes the GW_PREFIX_LEN bytes at `prefix`: sets *out_len to the body length they
 * announce, whatever the flag. Returns the flag byte: 0 uncompressed, 1 compressed,
 * anything else invalid. Inline: it runs per message. */
static inline int gw_prefix_decode(uint32_t *out_len, const uint8_t *prefix) {
  *out_len = (uint32_t)prefix[1] << 24 | (uint32_t)prefix[2] << 16 | (uint32_t)prefix[3] << 8 |
             (uint32_t)prefix[4];
  return prefix[0];
}

/* Writes the GW_PREFIX_LEN bytes of an uncompressed message of `len` bytes at
 * `prefix`. */
void gw_prefix_encode(uint8_t *prefix, uint32_t len);

/* True if the header name of `namelen` bytes at `name` (not NUL-terminated, as h2conn
 * hands it over) is exactly `lit`. HTTP/2 names are lower case on the wire (nghttp2
 * refuses others), so the comparison is exact. Inline: with a literal `lit` the
 * compiler folds its length and the compare, per header of every call. */
static inline int gw_header_is(const uint8_t *name, size_t namelen, const char *lit) {
  size_t n = strlen(lit);
  return namelen == n && memcmp(name, lit, n) == 0;
}

/* True if the content-type value of `len` bytes at `v` is gRPC's: "application/grpc"
 * alone or followed by '+' or ';' ("application/grpc+proto",
 * "application/grpc;charset=utf-8"); not "application/grpcx" nor any other type. */
int gw_content_type_is_grpc(const uint8_t *v, size_t len);

/* Percent-encodes `src` (NUL-terminated) for a grpc-message header: '%' and every
 * byte outside 0x20..0x7E become %XX. Writes at most cap-1 bytes plus a NUL into dst,
 * never splitting an escape; returns the length written (excluding the NUL).
 * cap must be >= 1. */
size_t gw_pct_encode(char *dst, size_t cap, const char *src);

/* Decodes a grpc-message value of `len` bytes into dst (cap >= 1, NUL-terminated,
 * truncated to cap-1). A malformed escape is copied as-is, as the spec asks.
 * Returns the length written. */
size_t gw_pct_decode(char *dst, size_t cap, const char *src, size_t len);

/* Parses a grpc-timeout value (1..8 ASCII digits then one unit of H M S m u n) of
 * `len` bytes. On success returns 0 and sets *out_ms to the timeout in milliseconds,
 * rounded up (so 1n is 1 ms and 0 stays 0). Returns -EINVAL, *out_ms untouched, for
 * anything else; callers ignore a malformed timeout, as gRPC C-core does. */
int gw_timeout_parse(uint64_t *out_ms, const char *v, size_t len);

/* Formats `ms` as a grpc-timeout value into buf (at least 16 bytes), choosing the
 * finest unit from m, S, M, H whose value, rounded up, fits in 8 digits (beyond
 * 99999999H the value is clamped to that). Returns the length. */
size_t gw_timeout_format(char *buf, uint64_t ms);

/* Result of gw_frame_next. */
enum gw_frame_result {
  GW_FRAME_MSG = 1,         /* one whole message was taken out */
  GW_FRAME_NEED_MORE = 0,   /* not enough bytes yet */
  GW_FRAME_TOO_LARGE = -1,  /* the prefix announces more than max_len: RESOURCE_EXHAUSTED */
  GW_FRAME_COMPRESSED = -2, /* flag byte 1: the caller decides (we support no encoding) */
  GW_FRAME_BAD_FLAG = -3,   /* flag byte other than 0 or 1: INTERNAL */
};

/* Takes the next length-prefixed message out of `in`, if whole. Checks the prefix as
 * soon as its 5 bytes are there, so an oversized message is refused before its body
 * is buffered. On GW_FRAME_MSG, *out_msg is a malloc'd copy of the body (NULL when the
 * body is empty) of *out_len bytes that the caller frees with free(); both prefix and
 * body are drained from `in`. On anything else `in` and the outputs are untouched.
 * Returns -ENOMEM (outputs untouched) if the copy cannot be allocated. */
int gw_frame_next(struct evbuffer *in, size_t max_len, uint8_t **out_msg, size_t *out_len);

/* A streaming deframer for bytes that arrive in pieces (DATA frames): it hands whole
 * messages over without copying those that lie wholly inside one piece, and gathers
 * the others once into a buffer of their announced size. Set up with
 * GW_DEFRAMER_INIT(max_len); release with gw_deframer_reset. */
typedef struct gw_deframer {
  size_t max_len;                /* larger messages are refused (GW_FRAME_TOO_LARGE) */
  uint8_t prefix[GW_PREFIX_LEN]; /* of the message being gathered */
  size_t prefix_have;
  uint8_t *msg; /* body being gathered (malloc'd, len bytes), or NULL */
  size_t len, have;
} gw_deframer;

#define GW_DEFRAMER_INIT(max_len) \
  { (max_len), {0}, 0, NULL, 0, 0 }

/* Called for each whole message; `msg` is valid during the call only. Return 0 to go
 * on, or a positive value to stop. */
typedef int (*gw_msg_fn)(void *arg, const uint8_t *msg, size_t len);

/* Feeds `len` bytes to the deframer, calling fn(arg, ...) for every message they
 * complete, in order. Returns 0 once all bytes are taken; fn's positive value if it
 * stopped (the bytes after that message are dropped); GW_FRAME_TOO_LARGE,
 * GW_FRAME_COMPRESSED or GW_FRAME_BAD_FLAG for a prefix refused (as gw_frame_next);
 * -ENOMEM. After a non-zero return the deframer must be reset before reuse. */
int gw_deframe(gw_deframer *d, const uint8_t *data, size_t len, gw_msg_fn fn, void *arg);

/* Bytes of a message begun but not complete (0 between messages). */
size_t gw_deframer_partial(const gw_deframer *d);

/* Frees what a partial message holds and starts over between messages. */
void gw_deframer_reset(gw_deframer *d);

/* Appends one uncompressed message (prefix + body) to `out`, all or nothing.
 * Returns 0, -EMSGSIZE if len does not fit the 4-byte prefix, or -ENOMEM if `out`
 * could not grow (`out` untouched on failure). */
int gw_frame_append(struct evbuffer *out, const uint8_t *msg, size_t len);

/* Packs a protobuf-c message straight into `out` behind its prefix, with no
 * intermediate copy. Returns 0, -EMSGSIZE or -ENOMEM as gw_frame_append does. */
int gw_frame_append_pb(struct evbuffer *out, const struct ProtobufCMessage *msg);

#endif
