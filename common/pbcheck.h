/* pbcheck: checks on encoded protobuf messages that protobuf-c's unpack does not make.
 *
 * protobuf-c hands `string` fields over as C strings, so a string holding a NUL byte
 * silently arrives cut short; and it accepts invalid UTF-8, which other languages'
 * runtimes then refuse to decode when the text comes back to them; and its memory per
 * decoded field is many times the field's size on the wire. */
#ifndef PRISMQ_PBCHECK_H
#define PRISMQ_PBCHECK_H

#include <stddef.h>
#include <stdint.h>

struct ProtobufCMessageDescriptor;

/* Most fields a checked message may hold, counting those of sub-messages (map
 * entries included), unknown fields, and each element of a packed repeated field:
 * protobuf-c's unpack spends about a hundred bytes of memory per field. */
#define PBCHECK_MAX_FIELDS 4096

/* Walks the encoded message buf[0..len) of type `desc`, into sub-messages (map
 * entries included), and checks every `string` field: valid UTF-8 with no NUL byte.
 * Fields the descriptor does not know are skipped; malformed wire data is left for
 * unpack to refuse. Returns 0; -EINVAL with err (errlen bytes) naming the field, e.g.
 * `parameters.value holds a NUL byte`; or -E2BIG when the message holds more than
 * PBCHECK_MAX_FIELDS fields (decoding it would cost far more memory than its size). */
int pbcheck_message(const struct ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                    char *err, size_t errlen);

#endif
