/* b64: base64 decoding (RFC 4648, the standard alphabet), strict about what it
 * accepts: what gRPC's binary metadata (grpc-status-details-bin), proto3 JSON's bytes
 * and prismqd's page tokens carry. Pure functions; any thread. */
#ifndef PRISMQ_B64_H
#define PRISMQ_B64_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes b64_decode writes for a value of `len` characters. */
#define B64_DECODED_MAX(len) ((len) / 4 * 3 + 2)

/* Decodes `len` bytes of base64 at `src`, padding optional (as gRPC asks receivers of
 * binary metadata to accept), into dst, which holds at least B64_DECODED_MAX(len)
 * bytes. Returns 0 and sets *out_len; or -EINVAL for a character outside the alphabet,
 * '=' other than as the padding of the last group, or a length no base64 has (one
 * character over a group). */
int b64_decode(uint8_t *dst, size_t *out_len, const char *src, size_t len);

#endif
