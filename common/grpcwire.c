#include "grpcwire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <protobuf-c/protobuf-c.h>

static const char *const status_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *gw_status_name(int code) {
  if (code < 0 || code >= (int)(sizeof status_names / sizeof status_names[0])) return "UNKNOWN";
  return status_names[code];
}

static const char hex_digits[] = "0123456789ABCDEF";

size_t gw_pct_encode(char *dst, size_t cap, const char *src) {
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
    int edge_space = *p == ' ' && (p == (const unsigned char *)src || p[1] == '\0');
    int plain = *p >= 0x20 && *p <= 0x7E && *p != '%' && !edge_space;
    size_t need = plain ? 1 : 3;
    /* Stop rather than emit half an escape: the peer would decode it as literal text. */
    if (cap - 1 - n < need) break;
    if (plain) {
      dst[n++] = (char)*p;
    } else {
      dst[n++] = '%';
      dst[n++] = hex_digits[*p >> 4];
      dst[n++] = hex_digits[*p & 0xF];
    }
  }
  while (n > 0 && dst[n - 1] == ' ') n--; /* truncated right after a space */
  dst[n] = '\0';
  return n;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

size_t gw_pct_decode(char *dst, size_t cap, const char *src, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len && n < cap - 1; i++) {
    int hi = -1, lo = -1;
    if (src[i] == '%' && len - i >= 3) {
      hi = hex_value(src[i + 1]);
      lo = hex_value(src[i + 2]);
    }
    if (hi >= 0 && lo >= 0) {
      dst[n++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      dst[n++] = src[i];
    }
  }
  dst[n] = '\0';
  return n;
}

/* grpc-timeout units, finest first, in ms; sub-ms units divide instead. */
static const struct {
  char unit;
  uint64_t mul; /* ms per unit, or 0 for sub-ms units */
  uint64_t div; /* units per ms when mul is 0 */
} timeout_units[] = {
    {'n', 0, 1000000}, {'u', 0, 1000},  {'m', 1, 0},
    {'S', 1000, 0},    {'M', 60000, 0}, {'H', 3600000, 0},
};

#define TIMEOUT_MAX_DIGITS 8
#define TIMEOUT_MAX_VALUE  99999999u

static uint64_t div_round_up(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

int gw_timeout_parse(uint64_t *out_ms, const char *v, size_t len) {
  if (len < 2 || len > TIMEOUT_MAX_DIGITS + 1) return -EINVAL;
  uint64_t value = 0;
  for (size_t i = 0; i < len - 1; i++) {
    if (v[i] < '0' || v[i] > '9') return -EINVAL;
    value = value * 10 + (uint64_t)(v[i] - '0');
  }
  for (size_t u = 0; u < sizeof timeout_units / sizeof timeout_units[0]; u++) {
    if (timeout_units[u].unit != v[len - 1]) continue;
    /* 8 digits times an hour in ms stays far below 2^64. */
    *out_ms = timeout_units[u].mul ? value * timeout_units[u].mul
                                   : div_round_up(value, timeout_units[u].div);
    return 0;
  }
  return -EINVAL;
}

size_t gw_timeout_format(char *buf, uint64_t ms) {
  /* Sub-ms units would only add digits: start at 'm'. Rounding up never shortens the
   * deadline the peer sees. */
  uint64_t value = TIMEOUT_MAX_VALUE;
  char unit = 'H';
  for (size_t u = 0; u < sizeof timeout_units / sizeof timeout_units[0]; u++) {
    if (!timeout_units[u].mul) continue;
    uint64_t v = div_round_up(ms, timeout_units[u].mul);
    if (v <= TIMEOUT_MAX_VALUE) {
      value = v;
      unit = timeout_units[u].unit;
      break;
    }
  }
  return (size_t)sprintf(buf, "%" PRIu64 "%c", value, unit);
}

int gw_content_type_is_grpc(const uint8_t *v, size_t len) {
  static const char base[] = "application/grpc";
  size_t n = sizeof base - 1;
  return len >= n && memcmp(v, base, n) == 0 && (len == n || v[n] == '+' || v[n] == ';');
}

void gw_prefix_encode(uint8_t *prefix, uint32_t len) {
  prefix[0] = 0;
  prefix[1] = (uint8_t)(len >> 24);
  prefix[2] = (uint8_t)(len >> 16);
  prefix[3] = (uint8_t)(len >> 8);
  prefix[4] = (uint8_t)len;
}

static int prefix_check(const uint8_t *prefix, size_t max_len, uint32_t *len) {
  uint32_t n;
  int flag = gw_prefix_decode(&n, prefix);
  if (flag == 1) return GW_FRAME_COMPRESSED;
  if (flag != 0) return GW_FRAME_BAD_FLAG;
  *len = n;
  return n > max_len ? GW_FRAME_TOO_LARGE : 0;
}

int gw_frame_next(struct evbuffer *in, size_t max_len, uint8_t **out_msg, size_t *out_len) {
  uint8_t prefix[GW_PREFIX_LEN];
  if (evbuffer_copyout(in, prefix, sizeof prefix) < (ev_ssize_t)sizeof prefix)
    return GW_FRAME_NEED_MORE;
  uint32_t len;
  int rc = prefix_check(prefix, max_len, &len);
  if (rc) return rc;
  if (evbuffer_get_length(in) - GW_PREFIX_LEN < len) return GW_FRAME_NEED_MORE;
  uint8_t *msg = NULL;
  if (len > 0) {
    msg = malloc(len);
    if (!msg) return -ENOMEM;
  }
  evbuffer_drain(in, GW_PREFIX_LEN);
  if (len > 0) evbuffer_remove(in, msg, len);
  *out_msg = msg;
  *out_len = len;
  return GW_FRAME_MSG;
}

int gw_deframe(gw_deframer *d, const uint8_t *data, size_t len, gw_msg_fn fn, void *arg) {
  while (len > 0) {
    if (d->prefix_have < GW_PREFIX_LEN) {
      /* Between messages: one whole inside `data` goes to fn in place. */
      if (d->prefix_have == 0 && len >= GW_PREFIX_LEN) {
        uint32_t n;
        int rc = prefix_check(data, d->max_len, &n);
        if (rc) return rc;
        if (len - GW_PREFIX_LEN >= n) {
          rc = fn(arg, data + GW_PREFIX_LEN, n);
          if (rc) return rc;
          data += GW_PREFIX_LEN + n;
          len -= GW_PREFIX_LEN + n;
          continue;
        }
      }
      size_t k = GW_PREFIX_LEN - d->prefix_have;
      if (k > len) k = len;
      memcpy(d->prefix + d->prefix_have, data, k);
      d->prefix_have += k;
      data += k;
      len -= k;
      if (d->prefix_have < GW_PREFIX_LEN) return 0;
      uint32_t n;
      int rc = prefix_check(d->prefix, d->max_len, &n);
      if (rc) return rc;
      d->len = n;
      d->have = 0;
      if (n > 0 && !(d->msg = malloc(n))) return -ENOMEM;
    }
    size_t k = d->len - d->have;
    if (k > len) k = len;
    if (k) memcpy(d->msg + d->have, data, k);
    d->have += k;
    data += k;
    len -= k;
    if (d->have < d->len) return 0;
    uint8_t *msg = d->msg;
    size_t n = d->len;
    d->msg = NULL;
    d->prefix_have = 0;
    d->len = d->have = 0;
    int rc = fn(arg, msg, n);
    free(msg);
    if (rc) return rc;
  }
  return 0;
}

size_t gw_deframer_partial(const gw_deframer *d) { return d->prefix_have + d->have; }

void gw_deframer_reset(gw_deframer *d) {
  free(d->msg);
  d->msg = NULL;
  d->prefix_have = 0;
  d->len = d->have = 0;
}

/* Reserves prefix + body as one contiguous extent and writes the prefix, so a failure
 * leaves `out` without half a frame. The caller fills the body, then commits `vec`. */
static int frame_reserve(struct evbuffer *out, size_t len, struct evbuffer_iovec *vec,
                         uint8_t **body) {
  if (len > UINT32_MAX) return -EMSGSIZE;
  if (evbuffer_reserve_space(out, (ev_ssize_t)(GW_PREFIX_LEN + len), vec, 1) != 1) return -ENOMEM;
  uint8_t *p = vec->iov_base;
  gw_prefix_encode(p, (uint32_t)len);
  vec->iov_len = GW_PREFIX_LEN + len;
  *body = p + GW_PREFIX_LEN;
  return 0;
}

static int frame_commit(struct evbuffer *out, struct evbuffer_iovec *vec) {
  return evbuffer_commit_space(out, vec, 1) == 0 ? 0 : -ENOMEM;
}

int gw_frame_append(struct evbuffer *out, const uint8_t *msg, size_t len) {
  struct evbuffer_iovec vec;
  uint8_t *body;
  int rc = frame_reserve(out, len, &vec, &body);
  if (rc < 0) return rc;
  if (len > 0) memcpy(body, msg, len);
  return frame_commit(out, &vec);
}

int gw_frame_append_pb(struct evbuffer *out, const struct ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  struct evbuffer_iovec vec;
  uint8_t *body;
  int rc = frame_reserve(out, len, &vec, &body);
  if (rc < 0) return rc;
  protobuf_c_message_pack(msg, body);
  return frame_commit(out, &vec);
}
