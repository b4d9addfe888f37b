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

static int walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end, int depth,
                size_t *nmsgs, const char *prefix, char *err, size_t errlen) {
  while (p < end) {
    uint64_t tag, n;
    if (varint(&p, end, &tag) < 0) return 0; /* malformed: unpack will say so */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(desc, (unsigned)(tag >> 3));
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
      if (f && f->type == PROTOBUF_C_TYPE_STRING) {
        const char *what = memchr(p, 0, n) ? "holds a NUL byte" : !utf8_valid((const char *)p, n) ? "is not valid UTF-8" : NULL;
        if (what) {
          snprintf(err, errlen, "%s%s %s", prefix, f->name, what);
          return -EINVAL;
        }
      } else if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < MAX_DEPTH) {
        /* Each sub-message costs unpack an allocation of its own: a few MiB of
         * empty map entries would cost a hundred times that in memory. */
        if (++*nmsgs > PBCHECK_MAX_MESSAGES) {
          snprintf(err, errlen, "%s%s has too many entries (at most %d messages in all)", prefix, f->name,
                   PBCHECK_MAX_MESSAGES);
          return -E2BIG;
        }
        char sub[128];
        snprintf(sub, sizeof sub, "%s%s.", prefix, f->name);
        int rc = walk(f->descriptor, p, p + n, depth + 1, nmsgs, sub, err, errlen);
        if (rc < 0) return rc;
      }
      p += n;
      break;
    default:
      return 0; /* groups or junk: unpack refuses them */
    }
  }
  return 0;
}

int pbcheck_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len, char *err,
                    size_t errlen) {
  size_t nmsgs = 0;
  return walk(desc, buf, buf + len, 0, &nmsgs, "", err, errlen);
}
