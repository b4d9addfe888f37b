/* pbjson: protobuf-c messages printed as JSON in the proto3 JSON mapping (see pbjson.c).
 * Stateless; any thread. */
#ifndef PRISMQ_PBJSON_H
#define PRISMQ_PBJSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

/* Prints `msg` on `f` as one JSON document (and a newline) in the proto3 JSON mapping:
 * lowerCamelCase field names, every field present (defaults included), enums by name,
 * 64-bit integers as strings, maps as objects, messages not set omitted, two-space
 * indentation. */
void pbjson_print(FILE *f, const ProtobufCMessage *msg);

/* Prints `s` as a JSON string literal: quotes, backslashes and control characters
 * escaped, bytes that are not valid UTF-8 replaced by \ufffd. */
void pbjson_string(FILE *f, const char *s);

/* Parses `json` (len bytes, not NUL-terminated) as one object of message type `d` in
 * the proto3 JSON mapping, strictly: field names in lowerCamelCase or as in the proto,
 * unknown fields refused, values of the field's type only (64-bit integers as numbers
 * or strings, enums by name or number, bytes in base64, repeated fields as arrays, maps
 * as objects, null for a default), strings with JSON's escapes and valid UTF-8,
 * nesting at most 32 deep, nothing after the object. The caller bounds len.
 * Returns 0 and sets *out (malloc'd, caller frees) and *outlen to the message's
 * protobuf encoding, or, both untouched, -EINVAL with `err` (errlen bytes, may be
 * NULL) saying what and where, or -ENOMEM. */
int pbjson_parse(uint8_t **out, size_t *outlen, const ProtobufCMessageDescriptor *d,
                 const char *json, size_t len, char *err, size_t errlen);

#endif
