#include "pbcheck.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "utf8.h"

/* Nesting deeper than any message of ours: stops a crafted request from recursing. */
#define MAX_DEPTH 16

/* Reads a varint at *p (< end). Returns 0, or -1 if it runs past end or 10 bytes. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

static int walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end,
                int depth, size_t *nfields, const char *prefix, char *err, size_t errlen) {
  while (p < end) {
    uint64_t tag, n;
    if (varint(&p, end, &tag) < 0) return 0; /* malformed: unpack will say so */
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(desc, (unsigned)(tag >> 3));
    /* Every field costs unpack memory of its own (unknown ones are kept too), far
     * more than its size on the wire: count them all. */
    if (++*nfields > PBCHECK_MAX_FIELDS) {
      snprintf(err, errlen, "%s%s: too many fields (at most %d in all)", prefix,
               f ? f->name : "unknown field", PBCHECK_MAX_FIELDS);
      return -E2BIG;
    }
    switch (tag & 7) {
    case 0:
      if (varint(&p, end, &n) < 0) return 0;
      break;
    case 1:
    case 5: {
      size_t w = (tag & 7) == 1 ? 8 : 4;
      if ((size_t)(end - p) < w) return 0;
      p += w;
      break;
    }
    case 2:
      if (varint(&p, end, &n) < 0 || n > (uint64_t)(end - p)) return 0;
      if (f && f->label == PROTOBUF_C_LABEL_REPEATED && f->type != PROTOBUF_C_TYPE_STRING &&
          f->type != PROTOBUF_C_TYPE_BYTES && f->type != PROTOBUF_C_TYPE_MESSAGE) {
        /* Packed scalars: at most one element per byte. */
        *nfields += n;
        if (*nfields > PBCHECK_MAX_FIELDS) {
          snprintf(err, errlen, "%s%s has too many elements (at most %d fields in all)", prefix,
                   f->name, PBCHECK_MAX_FIELDS);
          return -E2BIG;
        }
      } else if (f && f->type == PROTOBUF_C_TYPE_STRING) {
        const char *what = memchr(p, 0, n)                   ? "holds a NUL byte"
                           : !utf8_valid((const char *)p, n) ? "is not valid UTF-8"
                                                             : NULL;
        if (what) {
          snprintf(err, errlen, "%s%s %s", prefix, f->name, what);
          return -EINVAL;
        }
      } else if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < MAX_DEPTH) {
        char sub[128];
        snprintf(sub, sizeof sub, "%s%s.", prefix, f->name);
        int rc = walk(f->descriptor, p, p + n, depth + 1, nfields, sub, err, errlen);
        if (rc < 0) return rc;
      }
      p += n;
      break;
    default: return 0; /* groups or junk: unpack refuses them */
    }
  }
  return 0;
}

int pbcheck_message(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                    char *err, size_t errlen) {
  size_t nfields = 0;
  /* An empty message comes as NULL: no field, nothing to check (and NULL + 0 is
   * undefined). */
  if (len == 0) return 0;
  return walk(desc, buf, buf + len, 0, &nfields, "", err, errlen);
}
