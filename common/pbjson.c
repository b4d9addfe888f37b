/* pbjson: protobuf-c messages as JSON (proto3 JSON mapping), driven by the generated
 * descriptors so that every message prints the same way; protobuf-c has no JSON of its
 * own. Shared by the prismq CLI (--json) and prismqd's HTTP/1.1 front. The messages
 * printed hold strings, integers, booleans, enums, doubles (some in one-field oneofs,
 * printed only when set), bytes (base64), messages and map<string, string>. */
#include "pbjson.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "b64.h"
#include "compat.h"
#include "utf8.h"

/* The printer takes the stream's lock once (flockfile, which nests) and writes with the
 * _unlocked calls: a lock per character would cost more than the printing. */
void pbjson_string(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  const unsigned char *end = p + strlen(s);
  flockfile(f);
  putc_unlocked('"', f);
  while (*p) {
    size_t n;
    switch (*p) {
    case '"': fputs_unlocked("\\\"", f); break;
    case '\\': fputs_unlocked("\\\\", f); break;
    case '\b': fputs_unlocked("\\b", f); break;
    case '\f': fputs_unlocked("\\f", f); break;
    case '\n': fputs_unlocked("\\n", f); break;
    case '\r': fputs_unlocked("\\r", f); break;
    case '\t': fputs_unlocked("\\t", f); break;
    default:
      if (*p < 0x20 || *p == 0x7f) {
        fprintf(f, "\\u%04x", *p);
      } else if (*p < 0x80) {
        putc_unlocked(*p, f);
      } else if ((n = utf8_seq_len((const char *)p, (size_t)(end - p))) > 0) {
        fwrite_unlocked(p, 1, n, f);
        p += n - 1;
      } else {
        fputs_unlocked("\\ufffd", f); /* one per byte that is not UTF-8, as decoders do */
      }
    }
    p++;
  }
  putc_unlocked('"', f);
  funlockfile(f);
}

static void newline(FILE *f, int depth) {
  putc_unlocked('\n', f);
  for (int i = 0; i < depth; i++) fputs_unlocked("  ", f);
}

/* A field name as protoc's json_name: "run_id" -> "runId". */
static void put_name(FILE *f, const char *name) {
  int upper = 0;
  putc_unlocked('"', f);
  for (; *name; name++) {
    if (*name == '_') {
      upper = 1;
      continue;
    }
    putc_unlocked(upper && *name >= 'a' && *name <= 'z' ? *name - 'a' + 'A' : *name, f);
    upper = 0;
  }
  fputs_unlocked("\": ", f);
}

static void put_message(FILE *f, const ProtobufCMessage *m, int depth);

/* A number as the shortest decimal that reads back the same; the proto3 mapping's
 * strings for the values JSON has no number for. */
static void put_double(FILE *f, double d) {
  if (isnan(d)) {
    fputs_unlocked("\"NaN\"", f);
  } else if (isinf(d)) {
    fputs_unlocked(d > 0 ? "\"Infinity\"" : "\"-Infinity\"", f);
  } else {
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, d);
      if (strtod(buf, NULL) == d) break;
    }
    fputs_unlocked(buf, f);
  }
}

/* Bytes as standard base64 with padding, the proto3 mapping's form; encoded 48 bytes
 * (64 characters) at a time, so that no size needs an allocation. */
static void put_bytes(FILE *f, const ProtobufCBinaryData *b) {
  unsigned char out[65];
  putc_unlocked('"', f);
  for (size_t at = 0; at < b->len; at += 48) {
    size_t n = b->len - at < 48 ? b->len - at : 48;
    fwrite_unlocked(out, 1, (size_t)EVP_EncodeBlock(out, b->data + at, (int)n), f);
  }
  putc_unlocked('"', f);
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
  case PROTOBUF_C_TYPE_BOOL:
    fputs_unlocked(*(const protobuf_c_boolean *)p ? "true" : "false", f);
    break;
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
  default: fputs_unlocked("null", f); break;
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
  putc_unlocked(map ? '{' : '[', f);
  for (size_t i = 0; i < n; i++) {
    const void *item = items + i * elem_size(fd->type);
    fputs_unlocked(i ? "," : "", f);
    newline(f, depth + 1);
    if (map) {
      /* Keys are strings in the proto3 mapping (and all our maps are string maps). */
      const ProtobufCMessage *e = *(ProtobufCMessage *const *)item;
      const ProtobufCMessageDescriptor *d = e->descriptor;
      put_value(f, &d->fields[0], (const char *)e + d->fields[0].offset, depth + 1);
      fputs_unlocked(": ", f);
      put_value(f, &d->fields[1], (const char *)e + d->fields[1].offset, depth + 1);
    } else {
      put_value(f, fd, item, depth + 1);
    }
  }
  if (n) newline(f, depth);
  putc_unlocked(map ? '}' : ']', f);
}

static void put_message(FILE *f, const ProtobufCMessage *m, int depth) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  int first = 1;
  putc_unlocked('{', f);
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
    fputs_unlocked(first ? "" : ",", f);
    first = 0;
    newline(f, depth + 1);
    put_name(f, fd->name);
    if (fd->label == PROTOBUF_C_LABEL_REPEATED)
      put_repeated(f, fd, base, depth + 1);
    else
      put_value(f, fd, base + fd->offset, depth + 1);
  }
  if (!first) newline(f, depth);
  putc_unlocked('}', f);
}

void pbjson_print(FILE *f, const ProtobufCMessage *msg) {
  flockfile(f);
  put_message(f, msg, 0);
  putc_unlocked('\n', f);
  funlockfile(f);
}

/* ---- parsing ---------------------------------------------------------------------- */

/* Nesting of objects and arrays a document may have. */
#define MAX_DEPTH 32

/* A parse: the input left, and every allocation of the message being built, freed
 * together once it is packed (protobuf-c's free_unpacked would take the empty-string
 * defaults for its own). */
struct jp {
  const char *p, *end;
  int depth;
  char *err;
  size_t errlen;
  void **allocs;
  size_t nallocs, cap;
};

static int jfail(struct jp *j, const char *fmt, ...) COMPAT_PRINTF(2, 3);
static int jfail(struct jp *j, const char *fmt, ...) {
  if (j->err && j->errlen && !j->err[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->err, j->errlen, fmt, ap);
    va_end(ap);
  }
  return -EINVAL;
}

static void *jalloc(struct jp *j, size_t n) {
  if (j->nallocs == j->cap) {
    size_t cap = j->cap ? 2 * j->cap : 16;
    void **a = realloc(j->allocs, cap * sizeof *a);
    if (!a) return NULL;
    j->allocs = a;
    j->cap = cap;
  }
  void *p = calloc(1, n ? n : 1);
  if (p) j->allocs[j->nallocs++] = p;
  return p;
}

static void ws(struct jp *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Consumes `lit` if it comes next. */
static int take(struct jp *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return 0;
  j->p += n;
  return 1;
}

static int hex4(const char *p, unsigned *out) {
  *out = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    int v = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (v < 0) return -1;
    *out = *out << 4 | (unsigned)v;
  }
  return 0;
}

/* The code point of a \u escape at j->p (after "\u"), a surrogate pair joined. */
static int unicode_escape(struct jp *j, unsigned *cp) {
  if (j->end - j->p < 4 || hex4(j->p, cp) < 0) return jfail(j, "bad \\u escape");
  j->p += 4;
  if (*cp >= 0xDC00 && *cp <= 0xDFFF) return jfail(j, "lone low surrogate in \\u escape");
  if (*cp < 0xD800 || *cp > 0xDBFF) return 0;
  unsigned lo;
  if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || hex4(j->p + 2, &lo) < 0 ||
      lo < 0xDC00 || lo > 0xDFFF)
    return jfail(j, "high surrogate without its low half in \\u escape");
  j->p += 6;
  *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12);
    o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18);
  o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* A string literal, unescaped into a new NUL-terminated string (*len bytes). Text must
 * be UTF-8 and escapes must make valid code points. */
static int parse_string(struct jp *j, char **out, size_t *len) {
  if (!take(j, "\"")) return jfail(j, "string expected");
  /* Unescaped text is never longer than its source. */
  const char *q = j->p;
  while (q < j->end && *q != '"') q += *q == '\\' && q + 1 < j->end ? 2 : 1;
  if (q >= j->end) return jfail(j, "unterminated string");
  char *o = jalloc(j, (size_t)(q - j->p) + 1);
  if (!o) return -ENOMEM;
  size_t n = 0;
  while (*j->p != '"') {
    unsigned char c = (unsigned char)*j->p;
    if (c < 0x20) return jfail(j, "control character in string");
    if (c >= 0x80) {
      size_t k = utf8_seq_len(j->p, (size_t)(j->end - j->p));
      if (!k) return jfail(j, "string is not valid UTF-8");
      memcpy(o + n, j->p, k);
      n += k;
      j->p += k;
      continue;
    }
    j->p++;
    if (c != '\\') {
      o[n++] = (char)c;
      continue;
    }
    char e = *j->p++;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *at = strchr(from, e);
    unsigned cp = 0;
    if (e && at) {
      o[n++] = to[at - from];
    } else if (e == 'u') {
      int rc = unicode_escape(j, &cp);
      if (rc < 0) return rc;
      if (cp == 0) return jfail(j, "NUL character in string");
      n += put_utf8(o + n, cp);
    } else {
      return jfail(j, "bad escape in string");
    }
  }
  j->p++;
  o[n] = '\0';
  *out = o;
  if (len) *len = n;
  return 0;
}

/* A number as JSON writes it, or, as proto3 JSON allows, within a string. Copies its
 * text to buf (NUL-terminated); *integral says it has no fraction or exponent. */
static int number_text(struct jp *j, char *buf, size_t cap, int *integral) {
  int quoted = take(j, "\"");
  const char *s = j->p;
  *integral = 1;
  if (j->p < j->end && *j->p == '-') j->p++;
  const char *digits = j->p;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
  if (j->p == digits || (*digits == '0' && j->p - digits > 1)) return jfail(j, "malformed number");
  if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E')) {
    *integral = 0;
    while (j->p < j->end && strchr("0123456789.eE+-", *j->p)) j->p++;
  }
  if ((size_t)(j->p - s) >= cap) return jfail(j, "number too long");
  memcpy(buf, s, (size_t)(j->p - s));
  buf[j->p - s] = '\0';
  if (quoted && !take(j, "\"")) return jfail(j, "malformed number in string");
  return 0;
}

/* An integer of the field's type (range checked) into dst. */
static int parse_int(struct jp *j, const ProtobufCFieldDescriptor *fd, void *dst) {
  char buf[64], *end;
  int integral;
  int rc = number_text(j, buf, sizeof buf, &integral);
  if (rc < 0) return rc;
  if (!integral) return jfail(j, "field %s: an integer expected", fd->name);
  errno = 0;
  int neg = buf[0] == '-';
  long long v = neg ? strtoll(buf, &end, 10) : 0;
  unsigned long long u = neg ? 0 : strtoull(buf, &end, 10);
  int ok = errno == 0 && *end == '\0';
  switch (fd->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    ok = ok && (neg ? v >= INT32_MIN : u <= INT32_MAX);
    *(int32_t *)dst = neg ? (int32_t)v : (int32_t)u;
    break;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    ok = ok && !neg && u <= UINT32_MAX;
    *(uint32_t *)dst = (uint32_t)u;
    break;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    ok = ok && (neg || u <= INT64_MAX);
    *(int64_t *)dst = neg ? (int64_t)v : (int64_t)u;
    break;
  default:
    ok = ok && !neg;
    *(uint64_t *)dst = (uint64_t)u;
    break;
  }
  return ok ? 0 : jfail(j, "field %s: number out of range", fd->name);
}

static int parse_float(struct jp *j, const ProtobufCFieldDescriptor *fd, void *dst) {
  double d;
  if (take(j, "\"NaN\"")) {
    d = NAN;
  } else if (take(j, "\"Infinity\"")) {
    d = INFINITY;
  } else if (take(j, "\"-Infinity\"")) {
    d = -INFINITY;
  } else {
    char buf[64], *end;
    int integral;
    int rc = number_text(j, buf, sizeof buf, &integral);
    if (rc < 0) return rc;
    d = strtod(buf, &end);
    if (*end != '\0') return jfail(j, "field %s: malformed number", fd->name);
  }
  if (fd->type == PROTOBUF_C_TYPE_FLOAT)
    *(float *)dst = (float)d;
  else
    *(double *)dst = d;
  return 0;
}

static int parse_object(struct jp *j, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out);

/* Base64 (standard, padding optional) into a ProtobufCBinaryData. */
static int parse_bytes(struct jp *j, const ProtobufCFieldDescriptor *fd, ProtobufCBinaryData *b) {
  char *s;
  size_t n;
  int rc = parse_string(j, &s, &n);
  if (rc < 0) return rc;
  b->data = jalloc(j, B64_DECODED_MAX(n) + 1);
  if (!b->data) return -ENOMEM;
  if (b64_decode(b->data, &b->len, s, n) < 0) return jfail(j, "field %s: not base64", fd->name);
  return 0;
}

/* One value of field fd into dst (its storage, or one element of a repeated one). */
static int parse_value(struct jp *j, const ProtobufCFieldDescriptor *fd, void *dst) {
  const ProtobufCEnumValue *ev;
  char *s;
  switch (fd->type) {
  case PROTOBUF_C_TYPE_BOOL:
    if (take(j, "true"))
      *(protobuf_c_boolean *)dst = 1;
    else if (take(j, "false"))
      *(protobuf_c_boolean *)dst = 0;
    else
      return jfail(j, "field %s: true or false expected", fd->name);
    return 0;
  case PROTOBUF_C_TYPE_ENUM:
    if (j->p < j->end && *j->p != '"') {
      int32_t v;
      ProtobufCFieldDescriptor as_int = *fd;
      as_int.type = PROTOBUF_C_TYPE_INT32;
      int rc = parse_int(j, &as_int, &v);
      *(int *)dst = v;
      return rc;
    }
    if (parse_string(j, &s, NULL) < 0) return -EINVAL;
    if (!(ev = protobuf_c_enum_descriptor_get_value_by_name(fd->descriptor, s)))
      return jfail(j, "field %s: unknown value %.64s", fd->name, s);
    *(int *)dst = ev->value;
    return 0;
  case PROTOBUF_C_TYPE_STRING:
    if (j->p >= j->end || *j->p != '"') return jfail(j, "field %s: a string expected", fd->name);
    return parse_string(j, (char **)dst, NULL);
  case PROTOBUF_C_TYPE_BYTES: return parse_bytes(j, fd, dst);
  case PROTOBUF_C_TYPE_MESSAGE: return parse_object(j, fd->descriptor, dst);
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: return parse_float(j, fd, dst);
  default: return parse_int(j, fd, dst);
  }
}

/* Opens a nested object or array (`open`), counting the depth. */
static int enter(struct jp *j, const char *open) {
  ws(j);
  if (!take(j, open)) return jfail(j, "'%s' expected", open);
  if (++j->depth > MAX_DEPTH) return jfail(j, "nested more than %d deep", MAX_DEPTH);
  return 0;
}

/* After a member or element: 1 for another, 0 at `close`. */
static int next_item(struct jp *j, const char *close) {
  ws(j);
  if (take(j, ",")) return 1;
  if (take(j, close)) {
    j->depth--;
    return 0;
  }
  return jfail(j, "',' or '%s' expected", close);
}

/* A repeated field (an array) or a map (an object of entries) into the message at msg. */
static int parse_repeated(struct jp *j, const ProtobufCFieldDescriptor *fd, char *msg) {
  int map = is_map(fd), rc;
  size_t esz = elem_size(fd->type), n = 0, cap = 0;
  char *items = NULL;
  if ((rc = enter(j, map ? "{" : "[")) < 0) return rc;
  ws(j);
  int more = take(j, map ? "}" : "]") ? (j->depth--, 0) : 1;
  while (more > 0) {
    if (n == cap) {
      cap = cap ? 2 * cap : 8;
      char *grown = realloc(items, cap * esz);
      if (!grown) goto fail_nomem;
      items = grown;
    }
    ws(j);
    if (map) {
      const ProtobufCMessageDescriptor *d = fd->descriptor;
      ProtobufCMessage *e = jalloc(j, d->sizeof_message);
      if (!e) goto fail_nomem;
      d->message_init(e);
      if ((rc = parse_string(j, (char **)((char *)e + d->fields[0].offset), NULL)) < 0) goto fail;
      ws(j);
      if (!take(j, ":")) {
        rc = jfail(j, "':' expected");
        goto fail;
      }
      ws(j);
      if ((rc = parse_value(j, &d->fields[1], (char *)e + d->fields[1].offset)) < 0) goto fail;
      memcpy(items + n * esz, &e, sizeof e);
    } else if ((rc = parse_value(j, fd, items + n * esz)) < 0) {
      goto fail;
    }
    n++;
    if ((more = next_item(j, map ? "}" : "]")) < 0) {
      rc = more;
      goto fail;
    }
  }
  void *kept = jalloc(j, n * esz);
  if (!kept) goto fail_nomem;
  if (n) memcpy(kept, items, n * esz);
  free(items);
  *(size_t *)(msg + fd->quantifier_offset) = n;
  *(void **)(msg + fd->offset) = kept;
  return 0;
fail_nomem:
  rc = -ENOMEM;
fail:
  free(items);
  return rc;
}

/* The field of d whose JSON name (lowerCamelCase, as protoc makes it) or proto name is
 * key. */
static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key) {
  for (unsigned i = 0; i < d->n_fields; i++) {
    const char *name = d->fields[i].name;
    char camel[128];
    size_t n = 0;
    for (int upper = 0; *name && n + 1 < sizeof camel; name++) {
      if (*name == '_') {
        upper = 1;
        continue;
      }
      camel[n++] = upper && *name >= 'a' && *name <= 'z' ? (char)(*name - 'a' + 'A') : *name;
      upper = 0;
    }
    camel[n] = '\0';
    if (strcmp(d->fields[i].name, key) == 0 || strcmp(camel, key) == 0) return &d->fields[i];
  }
  return NULL;
}

/* One member "key": value of an object of type d, into msg. */
static int parse_member(struct jp *j, const ProtobufCMessageDescriptor *d, char *msg) {
  char *key;
  int rc = parse_string(j, &key, NULL);
  if (rc < 0) return rc;
  const ProtobufCFieldDescriptor *fd = find_field(d, key);
  if (!fd) return jfail(j, "unknown field %.64s in %s", key, d->short_name);
  ws(j);
  if (!take(j, ":")) return jfail(j, "':' expected after field %s", fd->name);
  ws(j);
  if (take(j, "null")) return 0; /* the field's default */
  if (fd->label == PROTOBUF_C_LABEL_REPEATED) return parse_repeated(j, fd, msg);
  if ((rc = parse_value(j, fd, msg + fd->offset)) < 0) return rc;
  if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    *(uint32_t *)(msg + fd->quantifier_offset) = fd->id;
  else if (fd->label == PROTOBUF_C_LABEL_OPTIONAL && fd->quantifier_offset)
    *(protobuf_c_boolean *)(msg + fd->quantifier_offset) = 1;
  return 0;
}

static int parse_object(struct jp *j, const ProtobufCMessageDescriptor *d, ProtobufCMessage **out) {
  int rc = enter(j, "{");
  if (rc < 0) return rc;
  ProtobufCMessage *m = jalloc(j, d->sizeof_message);
  if (!m) return -ENOMEM;
  d->message_init(m);
  ws(j);
  int more = take(j, "}") ? (j->depth--, 0) : 1;
  while (more > 0) {
    ws(j);
    if ((rc = parse_member(j, d, (char *)m)) < 0) return rc;
    more = next_item(j, "}");
  }
  if (more < 0) return more;
  *out = m;
  return 0;
}

int pbjson_parse(uint8_t **out, size_t *outlen, const ProtobufCMessageDescriptor *d,
                 const char *json, size_t len, char *err, size_t errlen) {
  struct jp j = {json, json + len, 0, err, errlen, NULL, 0, 0};
  if (err && errlen) err[0] = '\0';
  ProtobufCMessage *m = NULL;
  int rc = parse_object(&j, d, &m);
  ws(&j);
  if (rc == 0 && j.p != j.end) rc = jfail(&j, "text after the JSON object");
  if (rc == 0) {
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
      protobuf_c_message_pack(m, buf);
      *out = buf;
      *outlen = n;
    } else {
      rc = -ENOMEM;
    }
  }
  if (rc == -ENOMEM) jfail(&j, "out of memory");
  for (size_t i = 0; i < j.nallocs; i++) free(j.allocs[i]);
  free(j.allocs);
  return rc;
}
