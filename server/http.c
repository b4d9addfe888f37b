#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "compat.h"
#include "google/rpc/status.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "authz.h"
#include "grpcwire.h"
#include "pbjson.h"
#include "prismq/runner/v1/runner.pb-c.h"
#include "ui.h"
#include "xalloc.h"

#define RUNNER "/prismq.runner.v1.Runner/"

/* What the answer of the call in flight becomes. */
enum reply_kind {
  REPLY_JSON,   /* the response message as JSON, 200 */
  REPLY_HEALTH, /* the same, 200 when SERVING, else 503 */
  REPLY_SSE,    /* OutputChunks as Server-Sent Events, as they come */
  REPLY_RAW,    /* OutputChunks' bytes only (application/octet-stream) */
};

/* A connection whose answers are all out waits this long for the client to close it. */
#define LINGER_MS 2000
/* A streamed answer stops taking output while evhttp holds this much unsent. */
#define STREAM_HIGH (64u << 10)
/* A relay buffer (see "connections") that passes this stops reading from the other
 * side until it drains to half. */
#define RELAY_MAX (256u << 10)

/* The private listener evhttp serves, and the ends connected to it: abstract unix
 * sockets where there are such (Linux), else loopback TCP. */
#if COMPAT_HAVE_ABSTRACT_UNIX
typedef struct sockaddr_un inner_addr;
#define INNER_FAMILY AF_UNIX
#else
typedef struct sockaddr_in inner_addr;
#define INNER_FAMILY AF_INET
#endif
/* Windows cuts a plain backlog to about 200; SOMAXCONN_HINT asks for what we mean. */
#ifdef SOMAXCONN_HINT
#define INNER_BACKLOG SOMAXCONN_HINT(4096)
#else
#define INNER_BACKLOG 1024
#endif

/* One HTTP/1.1 connection. evhttp answers its requests one at a time, so there is at
 * most one request, and one call, in flight. */
struct hconn {
  http *h;
  conn *outer, *inner;                  /* the client's transport; ours to evhttp */
  struct evbuffer *to_inner, *to_outer; /* relayed bytes the other side has not taken */
  inner_addr name;                      /* inner's name, which evhttp sees as its peer */
  socklen_t namelen;
  int efd;                         /* evhttp's descriptor of this connection, once known, else -1 */
  struct evhttp_connection *evcon; /* evhttp's connection, from its first request to its close */
  unsigned inner_done : 1;         /* evhttp takes no more (it closed, or a 408 ended it) */
  unsigned inner_eof : 1;          /* and says no more: the pair ends once outer has drained */
  struct event *slow_ev;           /* a request begun and not whole after the timeout: 408 */
  struct event *stall_ev; /* the client took nothing of what waits for it for the timeout */
  int dead;               /* ended: freed from free_ev */
  struct event *free_ev;
  conn_peer peer;
  struct evhttp_request *req; /* the request being answered, or NULL */
  call *pending;              /* its call, until the sink's finish */
  enum reply_kind kind;
  const ProtobufCMessageDescriptor *resp; /* the call's response type */
  int serving;                            /* REPLY_HEALTH: the answer said SERVING */
  int started;                            /* REPLY_SSE, REPLY_RAW: the reply's headers are out */
  struct evbuffer *body;                  /* the answer's JSON */
  struct hconn *prev, *next;
};

struct http {
  struct event_base *base;
  call_server *calls;
  struct evhttp *evh;
  struct timeval timeout; /* http_opts.timeout_ms, as a libevent timeout */
  uint32_t timeout_ms;
  inner_addr addr; /* evhttp's private listener */
  socklen_t addrlen;
  struct hconn *conns;
  size_t nconns;
  struct hconn **by_fd; /* connections by evhttp's descriptor, for the requests */
  size_t nby_fd;
  int ui;           /* http_opts.ui: the web page's files are served */
  metrics *metrics; /* http_opts.metrics */
};

/* The HTTP status for a gRPC status, as google/rpc/code.proto maps them. */
static int http_status(int status) {
  static const int map[] = {200, 499, 500, 400, 504, 404, 409, 403, 429,
                            400, 409, 400, 501, 500, 503, 500, 401};
  return status >= 0 && status < (int)(sizeof map / sizeof map[0]) ? map[status] : 500;
}

/* Ends the request in flight with `code` and the JSON in hc->body. */
static void reply(struct hconn *hc, int code) {
  struct evkeyvalq *out = evhttp_request_get_output_headers(hc->req);
  evhttp_add_header(out, "Content-Type", "application/json");
  evhttp_send_reply(hc->req, code, NULL, hc->body);
  hc->req = NULL;
}

/* A stream to print JSON on (pbjson prints on a FILE, the CLI's stdout as much as
 * this); body_close appends what was printed to hc->body. */
static FILE *body_open(compat_memstream *m) {
  FILE *f = compat_memstream_open(m);
  if (!f) abort();
  return f;
}

static void body_close(struct hconn *hc, compat_memstream *m) {
  if (compat_memstream_close(m) != 0) abort();
  if (evbuffer_add(hc->body, m->buf, m->len) != 0) abort();
  free(m->buf);
}

/* The details of a google.rpc.Status (each Any as its type URL and base64 value). */
static void put_details(FILE *f, const uint8_t *details, size_t dlen) {
  Google__Rpc__Status *st = details ? google__rpc__status__unpack(NULL, dlen, details) : NULL;
  fputc('[', f);
  for (size_t i = 0; st && i < st->n_details; i++) {
    fputs(i ? ",\n" : "\n", f);
    pbjson_print(f, &st->details[i]->base);
  }
  fputc(']', f);
  google__rpc__status__free_unpacked(st, NULL);
}

/* Ends the request in flight with an error: {"code", "message", "details"}. */
static void reply_error(struct hconn *hc, int status, const char *msg, const uint8_t *details,
                        size_t dlen) {
  compat_memstream m;
  FILE *f = body_open(&m);
  fprintf(f, "{\"code\": %d, \"message\": ", status);
  pbjson_string(f, msg);
  fputs(", \"details\": ", f);
  put_details(f, details, dlen);
  fputs("}\n", f);
  evbuffer_drain(hc->body, evbuffer_get_length(hc->body));
  body_close(hc, &m);
  reply(hc, http_status(status));
}

/* ---- the calls' sink ------------------------------------------------------------- */

/* The bufferevent evhttp writes the request in flight with. */
static struct bufferevent *req_bev(struct hconn *hc) {
  struct evhttp_connection *evcon = hc->req ? evhttp_request_get_connection(hc->req) : NULL;
  return evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
}

/* Starts a streamed reply (once): 200, chunked, with the type of `kind`. evhttp keeps
 * reading while it writes (to see a close), so its read timeout would cut a follow
 * that is quiet for longer: only the write timeout applies until the stream ends. */
static void stream_start(struct hconn *hc) {
  if (hc->started) return;
  hc->started = 1;
  struct bufferevent *bev = req_bev(hc);
  if (bev) bufferevent_set_timeouts(bev, NULL, &hc->h->timeout);
  struct evkeyvalq *out = evhttp_request_get_output_headers(hc->req);
  evhttp_add_header(out, "Content-Type",
                    hc->kind == REPLY_SSE ? "text/event-stream" : "application/octet-stream");
  evhttp_add_header(out, "Cache-Control", "no-cache");
  evhttp_send_reply_start(hc->req, 200, NULL);
}

/* evhttp has written a chunk: the follower may send more. */
static void chunk_written(struct evhttp_connection *evcon, void *arg) {
  (void)evcon;
  struct hconn *hc = arg;
  if (hc->pending) call_sink_drained(hc->pending);
}

/* Appends chunk c to b as one Server-Sent Event: `event:` its kind, `id:` the seq of an
 * output chunk (what Last-Event-ID gives back on a reconnection), `data:` the chunk as
 * JSON, a line each. The JSON is printed once and its lines cut with memchr; the data's
 * base64 is most of it, on one line. */
static void put_event(struct evbuffer *b, const Prismq__Runner__V1__OutputChunk *c) {
  compat_memstream m;
  FILE *j = compat_memstream_open(&m);
  if (!j) abort();
  pbjson_print(j, &c->base);
  if (compat_memstream_close(&m) != 0) abort();
  char *json = m.buf;
  size_t len = m.len;
  int rc = 0;
  if (c->progress)
    rc = evbuffer_add(b, "event: progress\n", 16);
  else if (c->run)
    rc = evbuffer_add(b, "event: end\n", 11);
  else
    rc = evbuffer_add_printf(b, "event: output\nid: %llu\n", (unsigned long long)c->seq) < 0;
  for (const char *line = json, *end = json + len; rc == 0 && line < end;) {
    const char *nl = memchr(line, '\n', (size_t)(end - line));
    size_t n = (size_t)((nl ? nl : end) - line);
    if (n > 0)
      rc = evbuffer_add(b, "data: ", 6) || evbuffer_add(b, line, n) || evbuffer_add(b, "\n", 1);
    line += n + 1;
  }
  if (rc != 0 || evbuffer_add(b, "\n", 1) != 0) abort();
  free(json);
}

/* An output chunk of a streamed answer goes out at once. */
static void stream_chunk(struct hconn *hc, const Prismq__Runner__V1__OutputChunk *c) {
  stream_start(hc);
  struct evbuffer *b = evbuffer_new();
  if (!b) abort();
  if (hc->kind == REPLY_RAW) {
    if (evbuffer_add(b, c->data.data, c->data.len) != 0) abort();
  } else {
    put_event(b, c);
  }
  if (evbuffer_get_length(b) > 0) evhttp_send_reply_chunk_with_cb(hc->req, b, chunk_written, hc);
  evbuffer_free(b);
}

static void sink_message(void *arg, const ProtobufCMessage *msg) {
  struct hconn *hc = arg;
  if (hc->kind == REPLY_SSE || hc->kind == REPLY_RAW) {
    stream_chunk(hc, (const Prismq__Runner__V1__OutputChunk *)msg);
    return;
  }
  if (hc->kind == REPLY_HEALTH)
    hc->serving = ((const Grpc__Health__V1__HealthCheckResponse *)msg)->status ==
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  compat_memstream m;
  FILE *f = body_open(&m);
  pbjson_print(f, msg);
  body_close(hc, &m);
}

/* Answers stored in wire form (a run is encoded once): each message decoded with the
 * method's response type and printed as sink_message would. */
static void sink_framed(void *arg, struct evbuffer *framed) {
  struct hconn *hc = arg;
  uint8_t prefix[5];
  while (evbuffer_copyout(framed, prefix, 5) == 5) {
    size_t len =
        (size_t)prefix[1] << 24 | (size_t)prefix[2] << 16 | (size_t)prefix[3] << 8 | prefix[4];
    if (evbuffer_get_length(framed) < 5 + len) break;
    const uint8_t *msg = evbuffer_pullup(framed, (ev_ssize_t)(5 + len)) + 5;
    ProtobufCMessage *m = protobuf_c_message_unpack(hc->resp, NULL, len, msg);
    if (!m) abort(); /* our own encoding */
    sink_message(hc, m);
    protobuf_c_message_free_unpacked(m, NULL);
    evbuffer_drain(framed, 5 + len);
  }
  evbuffer_drain(framed, evbuffer_get_length(framed));
}

/* Room in evhttp's output and in the relay to the client: a slow reader holds the
 * follower back instead of making us buffer its output. */
static int sink_writable(void *arg) {
  struct hconn *hc = arg;
  struct bufferevent *bev = req_bev(hc);
  return bev && evbuffer_get_length(bufferevent_get_output(bev)) < STREAM_HIGH &&
         evbuffer_get_length(hc->to_outer) + conn_pending(hc->outer) < RELAY_MAX / 2;
}

static void sink_finish(void *arg, int status, const char *msg, const uint8_t *details,
                        size_t dlen) {
  struct hconn *hc = arg;
  hc->pending = NULL;
  if (hc->kind == REPLY_SSE || hc->kind == REPLY_RAW) {
    if (!hc->started && status != GW_OK) {
      reply_error(hc, status, msg, details, dlen);
      return;
    }
    stream_start(hc);
    if (status != GW_OK && hc->kind == REPLY_SSE) {
      /* A stream cut short says why, as its last event. */
      compat_memstream m;
      FILE *f = body_open(&m);
      fprintf(f, "event: error\ndata: {\"code\": %d, \"message\": ", status);
      pbjson_string(f, msg);
      fputs("}\n\n", f);
      evbuffer_drain(hc->body, evbuffer_get_length(hc->body));
      body_close(hc, &m);
      evhttp_send_reply_chunk(hc->req, hc->body);
    }
    struct bufferevent *bev = req_bev(hc);
    if (bev) bufferevent_set_timeouts(bev, &hc->h->timeout, &hc->h->timeout);
    evhttp_send_reply_end(hc->req);
    hc->req = NULL;
  } else if (status != GW_OK) {
    reply_error(hc, status, msg, details, dlen);
  } else {
    reply(hc, hc->kind == REPLY_HEALTH && !hc->serving ? 503 : 200);
  }
}

static const call_sink sink = {sink_message, sink_framed, sink_writable, sink_finish};

/* Makes the request in flight the call `method` (under RUNNER unless it starts with
 * '/') with the encoded request `buf` (len bytes); `resp` is its response type. */
static void invoke_encoded(struct hconn *hc, const char *method, const uint8_t *buf, size_t len,
                           const ProtobufCMessageDescriptor *resp, enum reply_kind kind) {
  char path[128];
  snprintf(path, sizeof path, "%s%s", method[0] == '/' ? "" : RUNNER, method);
  hc->kind = kind;
  hc->resp = resp;
  evbuffer_drain(hc->body, evbuffer_get_length(hc->body));
  if (call_server_invoke(&hc->pending, hc->h->calls, path, buf, len, &hc->peer, &sink, hc) < 0)
    reply_error(hc, GW_UNIMPLEMENTED, "method not served", NULL, 0);
}

/* invoke_encoded with the request message `req`. */
static void invoke(struct hconn *hc, const char *method, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *resp, enum reply_kind kind) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = xmalloc(len);
  protobuf_c_message_pack(req, buf);
  invoke_encoded(hc, method, buf, len, resp, kind);
  free(buf);
}

/* invoke_encoded with the request body, JSON of message type `d`: a body that is not
 * one is answered INVALID_ARGUMENT (400) saying why. (evhttp has bounded its size.) */
static void invoke_body(struct hconn *hc, const char *method, const ProtobufCMessageDescriptor *d,
                        const ProtobufCMessageDescriptor *resp) {
  struct evbuffer *in = evhttp_request_get_input_buffer(hc->req);
  size_t len = evbuffer_get_length(in);
  const char *json = (const char *)evbuffer_pullup(in, -1);
  uint8_t *buf = NULL;
  size_t n = 0;
  char err[200], msg[256];
  if (pbjson_parse(&buf, &n, d, json ? json : "", len, err, sizeof err) < 0) {
    snprintf(msg, sizeof msg, "request body: %s", err);
    reply_error(hc, GW_INVALID_ARGUMENT, msg, NULL, 0);
    return;
  }
  invoke_encoded(hc, method, buf, n, resp, REPLY_JSON);
  free(buf);
}

/* ---- routes ---------------------------------------------------------------------- */

/* A decimal number of 64 bits at most, digits only. Returns 0, or -1. */
static int parse_u64(const char *v, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0) return -1;
  *out = n;
  return 0;
}

/* A query parameter as an unsigned 32-bit number (absent: 0). Returns 0, or -1 after
 * answering INVALID_ARGUMENT. */
static int query_u32(struct hconn *hc, struct evkeyvalq *q, const char *name, uint32_t *out) {
  const char *v = evhttp_find_header(q, name);
  uint64_t n = 0;
  *out = 0;
  if (!v) return 0;
  if (parse_u64(v, &n) == 0 && n <= UINT32_MAX) {
    *out = (uint32_t)n;
    return 0;
  }
  char msg[160];
  snprintf(msg, sizeof msg, "query parameter %s: not a 32-bit unsigned number", name);
  reply_error(hc, GW_INVALID_ARGUMENT, msg, NULL, 0);
  return -1;
}

/* ListRuns's filters from the query: status (repeated; a RunStatus by name or number),
 * module_id, label (repeated, KEY=VALUE), page_size, page_token. The strings point into
 * `q` (nq parameters; *labels has room for nq); the caller frees the arrays. Returns 0,
 * or -1 after answering. */
static int list_request(struct hconn *hc, struct evkeyvalq *q, size_t nq,
                        Prismq__Runner__V1__ListRunsRequest *r,
                        Prismq__Runner__V1__ListRunsRequest__LabelsEntry **labels) {
  r->statuses = xcalloc(nq, sizeof *r->statuses);
  r->labels = xcalloc(nq, sizeof *r->labels);
  for (struct evkeyval *kv = q->tqh_first; kv; kv = kv->next.tqe_next) {
    if (strcmp(kv->key, "status") == 0) {
      const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(
          &prismq__runner__v1__run_status__descriptor, kv->value);
      char *end;
      long n = strtol(kv->value, &end, 10);
      if (!ev && (*end != '\0' || kv->value[0] == '\0' || n < 0 || n > 1000)) {
        reply_error(hc, GW_INVALID_ARGUMENT, "query parameter status: not a RunStatus", NULL, 0);
        return -1;
      }
      r->statuses[r->n_statuses++] = ev ? ev->value : (int)n;
    } else if (strcmp(kv->key, "label") == 0) {
      char *eq = strchr(kv->value, '=');
      if (!eq) {
        reply_error(hc, GW_INVALID_ARGUMENT, "query parameter label: KEY=VALUE expected", NULL, 0);
        return -1;
      }
      *eq = '\0';
      Prismq__Runner__V1__ListRunsRequest__LabelsEntry *e = &(*labels)[r->n_labels];
      prismq__runner__v1__list_runs_request__labels_entry__init(e);
      e->key = kv->value;
      e->value = eq + 1;
      r->labels[r->n_labels++] = e;
    } else if (strcmp(kv->key, "module_id") == 0) {
      r->module_id = kv->value;
    } else if (strcmp(kv->key, "page_token") == 0) {
      r->page_token = kv->value;
    }
  }
  return query_u32(hc, q, "page_size", &r->page_size);
}

static void list_runs(struct hconn *hc, struct evkeyvalq *q) {
  Prismq__Runner__V1__ListRunsRequest r = PRISMQ__RUNNER__V1__LIST_RUNS_REQUEST__INIT;
  size_t nq = 0;
  for (struct evkeyval *kv = q->tqh_first; kv; kv = kv->next.tqe_next) nq++;
  Prismq__Runner__V1__ListRunsRequest__LabelsEntry *labels = xcalloc(nq, sizeof *labels);
  if (list_request(hc, q, nq, &r, &labels) == 0)
    invoke(hc, "ListRuns", &r.base, &prismq__runner__v1__list_runs_response__descriptor,
           REPLY_JSON);
  free(r.statuses);
  free(r.labels);
  free(labels);
}

/* /v1/runs/{id}/output?start_seq=&follow=: the run's output as Server-Sent Events, or
 * its bytes with Accept: application/octet-stream. A reconnecting EventSource's
 * Last-Event-ID (the seq of the last output event it had) resumes after it. */
static void output_route(struct hconn *hc, char *run_id, struct evkeyvalq *q) {
  struct evkeyvalq *in = evhttp_request_get_input_headers(hc->req);
  const char *accept = evhttp_find_header(in, "Accept");
  const char *last = evhttp_find_header(in, "Last-Event-ID");
  const char *follow = evhttp_find_header(q, "follow");
  Prismq__Runner__V1__StreamOutputRequest r = PRISMQ__RUNNER__V1__STREAM_OUTPUT_REQUEST__INIT;
  r.run_id = run_id;
  r.follow = follow && (strcmp(follow, "true") == 0 || strcmp(follow, "1") == 0);
  const char *start = evhttp_find_header(q, "start_seq");
  if (last ? parse_u64(last, &r.start_seq) < 0 : start && parse_u64(start, &r.start_seq) < 0) {
    reply_error(hc, GW_INVALID_ARGUMENT,
                last ? "Last-Event-ID: not an event id" : "query parameter start_seq: not a number",
                NULL, 0);
    return;
  }
  if (last) r.start_seq++; /* the event after the last one the client had */
  int raw = accept && strstr(accept, "application/octet-stream") != NULL;
  hc->started = 0;
  invoke(hc, "StreamOutput", &r.base, &prismq__runner__v1__output_chunk__descriptor,
         raw ? REPLY_RAW : REPLY_SSE);
}

/* /v1/runs/{id}, /v1/runs/{id}:cancel, /v1/runs/{id}:wait, /v1/runs/{id}/output. */
static void run_route(struct hconn *hc, enum evhttp_cmd_type cmd, char *rest, struct evkeyvalq *q) {
  char *slash = strchr(rest, '/');
  if (slash && strcmp(slash, "/output") == 0 && cmd == EVHTTP_REQ_GET) {
    *slash = '\0';
    output_route(hc, rest, q);
    return;
  }
  char *colon = strchr(rest, ':');
  const char *verb = colon ? colon + 1 : "";
  if (colon) *colon = '\0';
  if (slash) {
    reply_error(hc, GW_NOT_FOUND, "no such route", NULL, 0);
  } else if (strcmp(verb, "") == 0 && cmd == EVHTTP_REQ_GET) {
    Prismq__Runner__V1__GetRunRequest r = PRISMQ__RUNNER__V1__GET_RUN_REQUEST__INIT;
    r.run_id = rest;
    invoke(hc, "GetRun", &r.base, &prismq__runner__v1__run__descriptor, REPLY_JSON);
  } else if (strcmp(verb, "wait") == 0 && cmd == EVHTTP_REQ_GET) {
    Prismq__Runner__V1__WaitRunRequest r = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
    r.run_id = rest;
    if (query_u32(hc, q, "timeout_ms", &r.timeout_ms) == 0)
      invoke(hc, "WaitRun", &r.base, &prismq__runner__v1__run__descriptor, REPLY_JSON);
  } else if (strcmp(verb, "cancel") == 0 && cmd == EVHTTP_REQ_POST) {
    Prismq__Runner__V1__CancelRunRequest r = PRISMQ__RUNNER__V1__CANCEL_RUN_REQUEST__INIT;
    r.run_id = rest;
    if (query_u32(hc, q, "grace_ms", &r.grace_ms) == 0)
      invoke(hc, "CancelRun", &r.base, &prismq__runner__v1__run__descriptor, REPLY_JSON);
  } else if (strcmp(verb, "") == 0 || strcmp(verb, "wait") == 0 || strcmp(verb, "cancel") == 0) {
    reply_error(hc, GW_UNIMPLEMENTED, "method not allowed on this route", NULL, 0);
  } else {
    reply_error(hc, GW_NOT_FOUND, "no such route", NULL, 0);
  }
}

/* /v1/presets, /v1/presets/{module}/{name}. */
static void preset_route(struct hconn *hc, enum evhttp_cmd_type cmd, char *rest,
                         struct evkeyvalq *q) {
  char *slash = rest[0] == '/' ? strchr(rest + 1, '/') : NULL;
  if (!rest[0] && cmd == EVHTTP_REQ_GET) {
    Prismq__Runner__V1__ListPresetsRequest r = PRISMQ__RUNNER__V1__LIST_PRESETS_REQUEST__INIT;
    const char *mod = evhttp_find_header(q, "module_id"),
               *tok = evhttp_find_header(q, "page_token");
    r.module_id = mod ? (char *)mod : (char *)"";
    r.page_token = tok ? (char *)tok : (char *)"";
    if (query_u32(hc, q, "page_size", &r.page_size) == 0)
      invoke(hc, "ListPresets", &r.base, &prismq__runner__v1__list_presets_response__descriptor,
             REPLY_JSON);
  } else if (!rest[0] && cmd == EVHTTP_REQ_POST) {
    invoke_body(hc, "SavePreset", &prismq__runner__v1__save_preset_request__descriptor,
                &prismq__runner__v1__preset__descriptor);
  } else if (slash && !strchr(slash + 1, '/') && cmd == EVHTTP_REQ_DELETE) {
    Prismq__Runner__V1__DeletePresetRequest r = PRISMQ__RUNNER__V1__DELETE_PRESET_REQUEST__INIT;
    *slash = '\0';
    r.module_id = rest + 1;
    r.name = slash + 1;
    invoke(hc, "DeletePreset", &r.base, &prismq__runner__v1__delete_preset_response__descriptor,
           REPLY_JSON);
  } else {
    reply_error(hc, GW_NOT_FOUND, "no such route", NULL, 0);
  }
}

/* The web page's policy: everything from this origin only, no inline script or style
 * (the page has none), no <base>, not framed by other sites. */
#define UI_CSP "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

/* GET of the web page's files (ui.c), when http_opts.ui is set: 200 with the file, or
 * 304 when If-None-Match names its tag. The browser is told to revalidate at each use
 * (no-cache: a new prismqd may serve a new page), not to guess types (nosniff), and
 * to load nothing from elsewhere (UI_CSP). Returns 1 if answered, 0 if there is no such
 * file (nothing is answered then). */
static int ui_route(struct hconn *hc, const char *path) {
  ui_asset a;
  if (!hc->h->ui || ui_lookup(&a, path) < 0) return 0;
  struct evkeyvalq *in = evhttp_request_get_input_headers(hc->req);
  struct evkeyvalq *out = evhttp_request_get_output_headers(hc->req);
  int fresh = ui_etag_matches(&a, evhttp_find_header(in, "If-None-Match"));
  evhttp_add_header(out, "Content-Type", a.content_type);
  evhttp_add_header(out, "ETag", a.etag);
  evhttp_add_header(out, "Cache-Control", "no-cache");
  evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
  evhttp_add_header(out, "Content-Security-Policy", UI_CSP);
  evbuffer_drain(hc->body, evbuffer_get_length(hc->body));
  /* The bytes are static: evhttp sends them from where they are. */
  if (!fresh && evbuffer_add_reference(hc->body, a.data, a.len, NULL, NULL) != 0) abort();
  evhttp_send_reply(hc->req, fresh ? 304 : 200, NULL, hc->body);
  hc->req = NULL;
  return 1;
}

/* GET /metrics: what the registry renders now, for a caller who may read every run
 * (role read_all: the figures are the runs of all identities). */
static void metrics_route(struct hconn *hc) {
  http *h = hc->h;
  if (!(call_server_roles(h->calls, &hc->peer) & AUTHZ_READ_ALL)) {
    reply_error(hc, GW_PERMISSION_DENIED, "permission denied: /metrics needs role read_all", NULL,
                0);
    return;
  }
  /* The figures may tell of runs that ended: nothing is told before it is durable. */
  if (call_server_commit(h->calls) < 0) {
    reply_error(hc, GW_UNAVAILABLE, "server could not commit its state", NULL, 0);
    return;
  }
  evbuffer_drain(hc->body, evbuffer_get_length(hc->body));
  metrics_render(h->metrics, hc->body);
  evhttp_add_header(evhttp_request_get_output_headers(hc->req), "Content-Type",
                    METRICS_CONTENT_TYPE);
  evhttp_send_reply(hc->req, 200, NULL, hc->body);
  hc->req = NULL;
}

static void route(struct hconn *hc, enum evhttp_cmd_type cmd, char *path, struct evkeyvalq *q) {
  int get = cmd == EVHTTP_REQ_GET;
  if (strcmp(path, "/healthz") == 0 && get) {
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    invoke(hc, "/grpc.health.v1.Health/Check", &r.base,
           &grpc__health__v1__health_check_response__descriptor, REPLY_HEALTH);
  } else if (strcmp(path, "/v1/modules") == 0 && get) {
    Prismq__Runner__V1__ListModulesRequest r = PRISMQ__RUNNER__V1__LIST_MODULES_REQUEST__INIT;
    const char *cat = evhttp_find_header(q, "category");
    r.category = cat ? (char *)cat : (char *)"";
    invoke(hc, "ListModules", &r.base, &prismq__runner__v1__list_modules_response__descriptor,
           REPLY_JSON);
  } else if (strcmp(path, "/metrics") == 0 && get && hc->h->metrics) {
    metrics_route(hc);
  } else if (strcmp(path, "/v1/runs") == 0 && get) {
    list_runs(hc, q);
  } else if (strcmp(path, "/v1/runs") == 0 && cmd == EVHTTP_REQ_POST) {
    invoke_body(hc, "StartRun", &prismq__runner__v1__start_run_request__descriptor,
                &prismq__runner__v1__run__descriptor);
  } else if (strncmp(path, "/v1/presets", 11) == 0 && (!path[11] || path[11] == '/')) {
    preset_route(hc, cmd, path + 11, q);
  } else if (strncmp(path, "/v1/runs/", 9) == 0 && path[9]) {
    run_route(hc, cmd, path + 9, q);
  } else if (!get || !ui_route(hc, path)) {
    reply_error(hc, GW_NOT_FOUND, "no such route", NULL, 0);
  }
}

static struct hconn *lookup(http *h, struct evhttp_connection *evcon);

static void on_request(struct evhttp_request *req, void *arg) {
  http *h = arg;
  struct evhttp_connection *evcon = evhttp_request_get_connection(req);
  struct hconn *hc = lookup(h, evcon);
  if (!hc || hc->dead) { /* not one the front relays: no peer to authorize */
    evhttp_send_error(req, 403, NULL);
    return;
  }
  hc->req = req;
  evtimer_del(hc->slow_ev); /* it came in whole */
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  struct evkeyvalq q = {NULL, &q.tqh_first};
  const char *query = evhttp_uri_get_query(uri);
  char *path = evhttp_uridecode(evhttp_uri_get_path(uri), 0, NULL);
  if (!path) abort();
  if (query && evhttp_parse_query_str(query, &q) != 0)
    reply_error(hc, GW_INVALID_ARGUMENT, "malformed query string", NULL, 0);
  else
    route(hc, evhttp_request_get_command(req), path, &q);
  evhttp_clear_headers(&q);
  free(path);
}

/* ---- connections ----------------------------------------------------------------- */

/* libevent 2.1's evhttp takes connections only from a listening socket it accepts
 * on (evhttp_get_request is not exported). So each HTTP/1.1 connection the front
 * hands over is relayed through a private socket pair: the client's transport
 * ("outer", a socket or TLS) and our end of a unix connection to evhttp's private
 * listener ("inner"), bytes moved between them through bounded buffers. Both are
 * conns, which write what they can at once: a relayed answer costs no extra pass of
 * the loop, nor the epoll changes of a bufferevent's write. The pair is the count of
 * live connections, and carries the real peer: evhttp's side finds it by the abstract
 * name our end is bound to (lookup). */

static void hconn_close(struct hconn *hc);

/* evhttp takes no more: what the client still sends is read and dropped (closing a
 * socket with unread input resets it, and the client could lose the answer), what
 * evhttp said before it went is still read and passed on. */
static void inner_gone(struct hconn *hc) {
  hc->inner_done = 1;
  evbuffer_drain(hc->to_inner, evbuffer_get_length(hc->to_inner));
  conn_want_read(hc->outer, 1); /* if it waited for evhttp to take more */
}

/* Once evhttp has said all it will and the client has all of it, the pair ends when
 * the client closes, or LINGER_MS later (a lingering close, as HTTP servers do). */
static void maybe_end(struct hconn *hc) {
  if (!hc->inner_eof) return;
  if (evbuffer_get_length(hc->to_outer) > 0 || conn_pending(hc->outer) > 0) {
    conn_want_write(hc->outer); /* back here when it drains */
    return;
  }
  conn_shutdown_write(hc->outer); /* the client reads the end and closes */
  struct timeval linger = compat_timeout_ms(LINGER_MS);
  evtimer_add(hc->stall_ev, &linger);
}

/* Sends what `buf` holds to `to`; what it does not take now waits for its on_write,
 * and bytes waiting for the client start its stall timer. A failed write to evhttp
 * (it closed after an answer such as 413) ends only its side; to the client, the pair. */
static int relay_send(struct hconn *hc, conn *to, struct evbuffer *buf) {
  if (conn_write(to, buf) < 0) {
    if (to == hc->inner)
      inner_gone(hc);
    else
      hconn_close(hc);
    return -1;
  }
  if (evbuffer_get_length(buf) > 0) {
    conn_want_write(to);
    if (to == hc->outer && !evtimer_pending(hc->stall_ev, NULL))
      evtimer_add(hc->stall_ev, &hc->h->timeout);
  }
  return 0;
}

/* Reads what `from` has into `buf` (up to RELAY_MAX: then `from` pauses until `to` has
 * taken half) and passes it on to `to`. The client's end or failure ends the pair;
 * evhttp's ends its side (maybe_end). */
static void relay(struct hconn *hc, conn *from, conn *to, struct evbuffer *buf) {
  for (;;) {
    if (evbuffer_get_length(buf) >= RELAY_MAX) {
      conn_want_read(from, 0);
      conn_want_write(to); /* relay_written resumes `from`, even if all goes out now */
      break;
    }
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(buf, 16384, &v, 1) < 1) abort();
    ssize_t n = conn_read(from, v.iov_base, v.iov_len);
    if (n == -EAGAIN) break;
    if (n <= 0) {
      if (from == hc->outer) {
        hconn_close(hc);
        return;
      }
      hc->inner_eof = 1;
      inner_gone(hc);
      conn_want_read(hc->inner, 0);
      break;
    }
    int whole = (size_t)n == v.iov_len;
    v.iov_len = (size_t)n;
    evbuffer_commit_space(buf, &v, 1);
    /* Short: nothing more now. The conn calls again for more (epoll, or its own wake-up
     * for TLS records it holds), which spares a read that would only say EAGAIN. */
    if (!whole) break;
  }
  if (from == hc->outer && hc->inner_done) {
    evbuffer_drain(buf, evbuffer_get_length(buf));
    return;
  }
  if (relay_send(hc, to, buf) == 0) maybe_end(hc);
}

/* `to` took more: the side feeding it reads again below half the bound; a pair whose
 * evhttp side has ended ends once the client has everything; a client that takes
 * something has its stall timer start again. */
static void relay_written(struct hconn *hc, conn *to, conn *from, struct evbuffer *buf) {
  if (to == hc->inner && hc->inner_done) return;
  if (relay_send(hc, to, buf) < 0) return;
  if (to == hc->outer) {
    if (evbuffer_get_length(buf) > 0 || conn_pending(to) > 0)
      evtimer_add(hc->stall_ev, &hc->h->timeout);
    else
      evtimer_del(hc->stall_ev);
    if (hc->inner_eof) {
      maybe_end(hc);
      return;
    }
  }
  if (evbuffer_get_length(buf) < RELAY_MAX / 2) conn_want_read(from, 1);
  if (hc->pending && to == hc->outer) call_sink_drained(hc->pending);
}

static void outer_read(conn *c, void *arg) {
  struct hconn *hc = arg;
  /* Bytes of a request, none being answered: it must be whole within the timeout. */
  if (!hc->req && !evtimer_pending(hc->slow_ev, NULL)) evtimer_add(hc->slow_ev, &hc->h->timeout);
  relay(hc, c, hc->inner, hc->to_inner);
}

/* An answer is still on its way to the client: in evhttp's output, ours, or the
 * transport's. */
static int answering(const struct hconn *hc) {
  struct bufferevent *bev = hc->evcon ? evhttp_connection_get_bufferevent(hc->evcon) : NULL;
  return hc->req || (bev && evbuffer_get_length(bufferevent_get_output(bev)) > 0) ||
         evbuffer_get_length(hc->to_outer) > 0 || conn_pending(hc->outer) > 0;
}

/* A request did not come in whole within the timeout (evhttp's own, a second later,
 * would close the connection without a word): answered 408 here, after whatever answer
 * is still on its way, and the pair ends once the client has it. */
static void slow_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct hconn *hc = arg;
  if (hc->inner_done || hc->dead) return;
  if (answering(hc)) {
    evtimer_add(hc->slow_ev, &hc->h->timeout); /* the client reads slowly: stall_ev's */
    return;
  }
  char body[160];
  int n = snprintf(body, sizeof body,
                   "{\"code\": %d, \"message\": \"request not received whole within %ld ms\", "
                   "\"details\": []}\n",
                   GW_DEADLINE_EXCEEDED, (long)hc->h->timeout_ms);
  if (evbuffer_add_printf(hc->to_outer,
                          "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                          n, body) < 0)
    abort();
  hc->inner_eof = 1;
  inner_gone(hc);
  conn_want_read(hc->inner, 0);
  if (relay_send(hc, hc->outer, hc->to_outer) == 0) maybe_end(hc);
}

/* The client took nothing for the timeout while an answer waited for it (a client that
 * does not read must not hold its buffers and a connection for ever), or a lingering
 * close is over: the pair ends. */
static void stall_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  hconn_close(arg);
}

static void inner_read(conn *c, void *arg) {
  struct hconn *hc = arg;
  relay(hc, c, hc->outer, hc->to_outer);
}

static void outer_written(conn *c, void *arg) {
  struct hconn *hc = arg;
  relay_written(hc, c, hc->inner, hc->to_outer);
}

static void inner_written(conn *c, void *arg) {
  struct hconn *hc = arg;
  relay_written(hc, c, hc->outer, hc->to_inner);
}

/* Ends the pair: a call in flight is dropped (its handler hears of it) and its request
 * answered to evhttp's side (whose connection ends when ours is freed), so that evhttp
 * frees it. The pair is freed from its own event, not inside the handlers that end it. */
static void hconn_close(struct hconn *hc) {
  if (hc->dead) return;
  hc->dead = 1;
  hc->h->nconns--;
  if (hc->pending) call_drop(hc->pending);
  hc->pending = NULL;
  conn_want_read(hc->outer, 0);
  conn_want_read(hc->inner, 0);
  if (hc->req) evhttp_send_reply(hc->req, 503, NULL, NULL);
  hc->req = NULL;
  event_active(hc->free_ev, EV_TIMEOUT, 0);
}

static void hconn_free(struct hconn *hc) {
  http *h = hc->h;
  hconn_close(hc);
  if (hc->efd >= 0 && h->by_fd[hc->efd] == hc) h->by_fd[hc->efd] = NULL;
  if (hc->prev)
    hc->prev->next = hc->next;
  else
    h->conns = hc->next;
  if (hc->next) hc->next->prev = hc->prev;
  if (hc->evcon) evhttp_connection_set_closecb(hc->evcon, NULL, NULL);
  conn_free(hc->outer);
  conn_free(hc->inner);
  event_free(hc->slow_ev);
  event_free(hc->stall_ev);
  evbuffer_free(hc->to_inner);
  evbuffer_free(hc->to_outer);
  event_free(hc->free_ev);
  evbuffer_free(hc->body);
  free(hc);
}

static void free_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  hconn_free(arg);
}

/* evhttp closes (or frees) a connection: its descriptor may be another's soon. */
static void evcon_closed(struct evhttp_connection *evcon, void *arg) {
  (void)evcon;
  struct hconn *hc = arg;
  http *h = hc->h;
  if (hc->efd >= 0 && (size_t)hc->efd < h->nby_fd && h->by_fd[hc->efd] == hc)
    h->by_fd[hc->efd] = NULL;
  hc->efd = -1;
  hc->evcon = NULL;
}

/* The pair whose inner end is the peer of evhttp's connection `evcon`, or NULL (a
 * connection made to the private listener from outside prismqd). Found by the abstract
 * name at its first request, then by its descriptor until evhttp closes it. */
static struct hconn *lookup(http *h, struct evhttp_connection *evcon) {
  int efd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
  if (efd < 0) return NULL;
  if ((size_t)efd < h->nby_fd && h->by_fd[efd] && h->by_fd[efd]->evcon == evcon)
    return h->by_fd[efd];
  inner_addr sa;
  socklen_t len = sizeof sa;
  if (getpeername(efd, (struct sockaddr *)&sa, &len) != 0) return NULL;
  for (struct hconn *hc = h->conns; hc; hc = hc->next) {
    if (hc->evcon || hc->namelen != len || memcmp(&hc->name, &sa, len) != 0) continue;
    if ((size_t)efd >= h->nby_fd) {
      size_t n = (size_t)efd + 64;
      h->by_fd = xrealloc(h->by_fd, n * sizeof *h->by_fd);
      memset(h->by_fd + h->nby_fd, 0, (n - h->nby_fd) * sizeof *h->by_fd);
      h->nby_fd = n;
    }
    hc->efd = efd;
    hc->evcon = evcon;
    h->by_fd[efd] = hc;
    evhttp_connection_set_closecb(evcon, evcon_closed, hc);
    return hc;
  }
  return NULL;
}

/* A socket of the inner kind bound to a name the system picks (an abstract unix name by
 * autobind; a loopback port), non-blocking but where `blocking`. Returns 0 and sets *out,
 * or a negative errno. */
static int inner_socket(evutil_socket_t *out, int blocking) {
  evutil_socket_t s = -1;
  int rc = compat_sock_stream(&s, INNER_FAMILY);
  if (rc < 0) return rc;
#if COMPAT_HAVE_ABSTRACT_UNIX
  struct sockaddr_un any = {.sun_family = AF_UNIX};
  socklen_t len = sizeof(sa_family_t);
#else
  struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof any;
#endif
  if (bind(s, (struct sockaddr *)&any, len) != 0) {
    rc = -compat_sock_errno();
    evutil_closesocket(s);
    return rc;
  }
#ifdef _WIN32
  u_long nb = !blocking;
  ioctlsocket(s, FIONBIO, &nb);
#else
  (void)blocking;
#endif
  *out = s;
  return 0;
}

/* A socket connected to evhttp's private listener, its name into hc->name. A unix
 * socket's connect completes at once; a loopback TCP one (Windows) is connected while
 * blocking, then made non-blocking: loopback answers at once while the listener's
 * backlog (INNER_BACKLOG) has room, and a full one (thousands of new HTTP connections in
 * one pass of the loop) makes the connect wait for a retry (docs/windows.md). Returns it, or a
 * negative errno. */
static int connect_inner(http *h, struct hconn *hc, evutil_socket_t *out) {
  evutil_socket_t s = -1;
  int rc = inner_socket(&s, 1);
  if (rc < 0) return rc;
  hc->namelen = sizeof hc->name;
  if (getsockname(s, (struct sockaddr *)&hc->name, &hc->namelen) != 0 ||
      connect(s, (struct sockaddr *)&h->addr, h->addrlen) != 0
#ifdef _WIN32
      || evutil_make_socket_nonblocking(s) != 0
#endif
  ) {
    rc = -compat_sock_errno();
    evutil_closesocket(s);
    return rc;
  }
  *out = s;
  return 0;
}

int http_accept(http *h, conn *outer) {
  struct hconn *hc = xcalloc(1, sizeof *hc);
  hc->h = h;
  hc->efd = -1;
  hc->peer = *conn_get_peer(outer);
  evutil_socket_t s = -1;
  int rc = connect_inner(h, hc, &s);
  if (rc < 0) {
    conn_free(outer);
    free(hc);
    return rc;
  }
  if ((rc = conn_new_socket(&hc->inner, h->base, s, NULL)) < 0) {
    conn_free(outer);
    free(hc);
    return rc;
  }
  hc->outer = outer;
  hc->body = evbuffer_new();
  hc->to_inner = evbuffer_new();
  hc->to_outer = evbuffer_new();
  hc->free_ev = evtimer_new(h->base, free_cb, hc);
  hc->slow_ev = evtimer_new(h->base, slow_cb, hc);
  hc->stall_ev = evtimer_new(h->base, stall_cb, hc);
  if (!hc->body || !hc->to_inner || !hc->to_outer || !hc->free_ev || !hc->slow_ev || !hc->stall_ev)
    abort();
  conn_set_handlers(hc->outer, outer_read, outer_written, hc);
  conn_set_handlers(hc->inner, inner_read, inner_written, hc);
  conn_want_read(hc->outer, 1);
  conn_want_read(hc->inner, 1);
  hc->next = h->conns;
  if (h->conns) h->conns->prev = hc;
  h->conns = hc;
  h->nconns++;
  return 0;
}

/* evhttp's private listener, on a name the system picks (inner_socket). */
static int open_inner(http *h) {
  evutil_socket_t s = -1;
  int rc = inner_socket(&s, 0);
  if (rc < 0) return rc;
  h->addrlen = sizeof h->addr;
  if (listen(s, INNER_BACKLOG) != 0 ||
      getsockname(s, (struct sockaddr *)&h->addr, &h->addrlen) != 0) {
    rc = -compat_sock_errno();
    evutil_closesocket(s);
    return rc;
  }
  struct evconnlistener *lev =
      evconnlistener_new(h->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, s);
  if (!lev) {
    evutil_closesocket(s);
    return -ENOMEM;
  }
  if (!evhttp_bind_listener(h->evh, lev)) {
    evconnlistener_free(lev);
    return -ENOMEM;
  }
  return 0;
}

void http_reconfigure(http *h, const http_opts *opts) {
  h->ui = opts->ui;
  h->metrics = opts->metrics;
  evhttp_set_max_body_size(h->evh, (ev_ssize_t)opts->max_body);
  evhttp_set_max_headers_size(h->evh, (ev_ssize_t)opts->max_headers);
  h->timeout_ms = opts->timeout_ms;
  h->timeout = compat_timeout_ms(opts->timeout_ms);
  /* A second more than ours: a slow request is answered 408 (slow_cb) before evhttp
   * drops it; an idle keep-alive connection goes then. */
  struct timeval evh = h->timeout;
  evh.tv_sec += 1;
  evhttp_set_timeout_tv(h->evh, &evh);
}

int http_new(http **out, struct event_base *base, call_server *calls, const http_opts *opts) {
  static const http_opts defaults = HTTP_OPTS_INIT;
  if (!opts) opts = &defaults;
  http *h = xcalloc(1, sizeof *h);
  h->base = base;
  h->calls = calls;
  h->evh = evhttp_new(base);
  if (!h->evh) {
    free(h);
    return -ENOMEM;
  }
  evhttp_set_gencb(h->evh, on_request, h);
  evhttp_set_allowed_methods(h->evh, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE);
  http_reconfigure(h, opts);
  int rc = open_inner(h);
  if (rc < 0) {
    evhttp_free(h->evh);
    free(h);
    return rc;
  }
  *out = h;
  return 0;
}

size_t http_live_conns(const http *h) { return h->nconns; }

void http_free(http *h) {
  if (!h) return;
  while (h->conns) hconn_free(h->conns);
  evhttp_free(h->evh);
  free(h->by_fd);
  free(h);
}
