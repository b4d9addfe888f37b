/* pbjson: protobuf-c messages printed as JSON in the proto3 JSON mapping (see pbjson.c).
 * Stateless; any thread; allocates nothing itself (the stream may). */
#ifndef PRISMQ_PBJSON_H
#define PRISMQ_PBJSON_H

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

#endif
