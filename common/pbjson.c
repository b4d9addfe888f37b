/* pbjson: protobuf-c messages as JSON (proto3 JSON mapping), driven by the generated
 * descriptors so that every message prints the same way; protobuf-c has no JSON of its
 * own. Shared by the prismq CLI (--json) and prismqd's HTTP/1.1 front. The messages
 * printed hold strings, integers, booleans, enums, doubles (some in one-field oneofs,
 * printed only when set), bytes (base64), messages and map<string, string>. */
#include "pbjson.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "utf8.h"

void pbjson_string(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  const unsigned char *end = p + strlen(s);
  fputc('"', f);
  while (*p) {
    size_t n;
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\b': fputs("\\b", f); break;
    case '\f': fputs("\\f", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (*p < 0x20 || *p == 0x7f) {
        fprintf(f, "\\u%04x", *p);
      } else if (*p < 0x80) {
        fputc(*p, f);
      } else if ((n = utf8_seq_len((const char *)p, (size_t)(end - p))) > 0) {
        fwrite(p, 1, n, f);
        p += n - 1;
      } else {
        fputs("\\ufffd", f); /* one per byte that is not UTF-8, as decoders do */
      }
    }
    p++;
  }
  fputc('"', f);
}

static void newline(FILE *f, int depth) {
  fputc('\n', f);
  for (int i = 0; i < depth; i++) fputs("  ", f);
}

/* A field name as protoc's json_name: "run_id" -> "runId". */
static void put_name(FILE *f, const char *name) {
  int upper = 0;
  fputc('"', f);
  for (; *name; name++) {
    if (*name == '_') {
      upper = 1;
      continue;
    }
    fputc(upper && *name >= 'a' && *name <= 'z' ? *name - 'a' + 'A' : *name, f);
    upper = 0;
  }
  fputs("\": ", f);
}

static void put_message(FILE *f, const ProtobufCMessage *m, int depth);

/* A number as the shortest decimal that reads back the same; the proto3 mapping's
 * strings for the values JSON has no number for. */
static void put_double(FILE *f, double d) {
  if (isnan(d)) {
    fputs("\"NaN\"", f);
  } else if (isinf(d)) {
    fputs(d > 0 ? "\"Infinity\"" : "\"-Infinity\"", f);
  } else {
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, d);
      if (strtod(buf, NULL) == d) break;
    }
    fputs(buf, f);
  }
}

/* Bytes as standard base64 with padding, the proto3 mapping's form; encoded 48 bytes
 * (64 characters) at a time, so that no size needs an allocation. */
static void put_bytes(FILE *f, const ProtobufCBinaryData *b) {
  unsigned char out[65];
  fputc('"', f);
  for (size_t at = 0; at < b->len; at += 48) {
    size_t n = b->len - at < 48 ? b->len - at : 48;
    fwrite(out, 1, (size_t)EVP_EncodeBlock(out, b->data + at, (int)n), f);
  }
  fputc('"', f);
}

/* One value of field fd stored at p. */
static void put_value(FILE *f, const ProtobufCFieldDescriptor *fd, const void *p, int depth) {
  const ProtobufCEnumValue *ev;
  switch (fd->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32: fprintf(f, "%" PRId32, *(const int32_t *)p); break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32: fprintf(f, "%" PRIu32, *(const uint32_t *)p); break;
  /* 64-bit integers are strings in proto3 JSON: JavaScript numbers stop at 2^53. */
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64: fprintf(f, "\"%" PRId64 "\"", *(const int64_t *)p); break;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64: fprintf(f, "\"%" PRIu64 "\"", *(const uint64_t *)p); break;
  case PROTOBUF_C_TYPE_BOOL: fputs(*(const protobuf_c_boolean *)p ? "true" : "false", f); break;
  case PROTOBUF_C_TYPE_ENUM:
    ev = protobuf_c_enum_descriptor_get_value(fd->descriptor, *(const int *)p);
    if (ev)
      pbjson_string(f, ev->name);
    else
      fprintf(f, "%d", *(const int *)p); /* a value newer than our descriptor */
    break;
  case PROTOBUF_C_TYPE_STRING: pbjson_string(f, *(char *const *)p); break;
  case PROTOBUF_C_TYPE_MESSAGE: put_message(f, *(ProtobufCMessage *const *)p, depth); break;
  case PROTOBUF_C_TYPE_DOUBLE: put_double(f, *(const double *)p); break;
  case PROTOBUF_C_TYPE_FLOAT: put_double(f, *(const float *)p); break;
  case PROTOBUF_C_TYPE_BYTES: put_bytes(f, (const ProtobufCBinaryData *)p); break;
  default: fputs("null", f); break;
  }
}

/* The size of one element of a repeated field of type t, as protobuf-c lays it out. */
static size_t elem_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE: return 8;
  case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
  case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
  default: return 4;
  }
}

/* protoc turns map<K, V> into a repeated nested message XxxEntry {key = 1; value = 2}. */
static int is_map(const ProtobufCFieldDescriptor *fd) {
  if (fd->type != PROTOBUF_C_TYPE_MESSAGE) return 0;
  const ProtobufCMessageDescriptor *d = fd->descriptor;
  size_t n = strlen(d->short_name);
  return d->n_fields == 2 && n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 &&
         strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static void put_repeated(FILE *f, const ProtobufCFieldDescriptor *fd, const char *msg, int depth) {
  size_t n = *(const size_t *)(msg + fd->quantifier_offset);
  const char *items = *(const char *const *)(msg + fd->offset);
  int map = is_map(fd);
  fputc(map ? '{' : '[', f);
  for (size_t i = 0; i < n; i++) {
    const void *item = items + i * elem_size(fd->type);
    fputs(i ? "," : "", f);
    newline(f, depth + 1);
    if (map) {
      /* Keys are strings in the proto3 mapping (and all our maps are string maps). */
      const ProtobufCMessage *e = *(ProtobufCMessage *const *)item;
      const ProtobufCMessageDescriptor *d = e->descriptor;
      put_value(f, &d->fields[0], (const char *)e + d->fields[0].offset, depth + 1);
      fputs(": ", f);
      put_value(f, &d->fields[1], (const char *)e + d->fields[1].offset, depth + 1);
    } else {
      put_value(f, fd, item, depth + 1);
    }
  }
  if (n) newline(f, depth);
  fputc(map ? '}' : ']', f);
}

static void put_message(FILE *f, const ProtobufCMessage *m, int depth) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  int first = 1;
  fputc('{', f);
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *fd = &d->fields[i];
    /* A message field not set is absent, as in the proto3 mapping; so is a member of
     * a oneof that holds another one, or none. */
    if (fd->label != PROTOBUF_C_LABEL_REPEATED && fd->type == PROTOBUF_C_TYPE_MESSAGE &&
        !*(void *const *)(base + fd->offset))
      continue;
    if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        *(const uint32_t *)(base + fd->quantifier_offset) != fd->id)
      continue;
    fputs(first ? "" : ",", f);
    first = 0;
    newline(f, depth + 1);
    put_name(f, fd->name);
    if (fd->label == PROTOBUF_C_LABEL_REPEATED)
      put_repeated(f, fd, base, depth + 1);
    else
      put_value(f, fd, base + fd->offset, depth + 1);
  }
  if (!first) newline(f, depth);
  fputc('}', f);
}

void pbjson_print(FILE *f, const ProtobufCMessage *msg) {
  put_message(f, msg, 0);
  fputc('\n', f);
}
