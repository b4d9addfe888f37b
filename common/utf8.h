/* utf8: checks for text that goes into protobuf `string` fields, which other
 * languages' runtimes (Python's, notably) refuse to decode unless it is valid UTF-8. */
#ifndef PRISMQ_UTF8_H
#define PRISMQ_UTF8_H

#include <stddef.h>

/* Length (1..4) of the well-formed UTF-8 sequence that begins s[0..len), or 0 if
 * none does there (a stray or missing continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF, or len 0). */
size_t utf8_seq_len(const char *s, size_t len);

/* True if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int utf8_valid(const char *s, size_t len);

/* Copies s[0..len) into dst (cap >= 1 bytes, NUL-terminated) replacing every byte
 * that is not part of a well-formed sequence, and every NUL, with '?'; never splits a
 * sequence when truncating to cap-1. Returns the length written. */
size_t utf8_sanitize(char *dst, size_t cap, const char *s, size_t len);

#endif
