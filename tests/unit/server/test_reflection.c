/* Unit tests for server/reflection, entirely in memory: the service on a call server,
 * driven by the raw nghttp2 client of testh2.h, over a small descriptor set built here
 * with what the served protos lack: imports (transitive), nested types, oneofs and
 * extensions. What matters: each name finds its file, a file comes with its imports,
 * each once; extensions are found by number; what is unknown is NOT_FOUND and the
 * stream goes on; a set that does not hold together is refused; open streams end with
 * the service or the call server. Leaks show in the ASan build. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "call.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpcwire.h"
#include "reflection.h"
#include "testh2.h"

#define P_V1      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
#define P_V1ALPHA "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

typedef Google__Protobuf__FieldDescriptorProto field_proto;
typedef Google__Protobuf__DescriptorProto message_proto;
typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Grpc__Reflection__V1__ServerReflectionRequest request;
typedef Grpc__Reflection__V1__ServerReflectionResponse response;

#define RESP(kind) GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##kind
#define KIND(kind) GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##kind

struct fx {
  struct event_base *base;
  call_server *srv;
  reflection *r;
  struct client cl;
};

static field_proto field(const char *name, int32_t number, const char *extendee) {
  field_proto f = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__INIT;
  f.name = (char *)name;
  f.has_number = 1;
  f.number = number;
  f.extendee = (char *)extendee;
  return f;
}

/* The set, serialized (malloc'd, *len bytes): c.proto, a.proto and, with_b, b.proto,
 * which c.proto imports and which imports a.proto.
 *   a.proto  package a; message M { int32 x; oneof o { string s; } message N { int32 y; }
 *            enum E { E0; } extensions 100 to 200; }
 *   b.proto  package b; extend a.M { int32 tag = 150; }
 *            message Outer { extend a.M { int32 inner = 151; } }
 *            service S { rpc Call(a.M) returns (a.M); }
 *   c.proto  message C {} (no package) */
static uint8_t *make_set(size_t *len, int with_b) {
  field_proto x = field("x", 1, NULL), s = field("s", 2, NULL), y = field("y", 1, NULL);
  s.has_oneof_index = 1;
  field_proto tag = field("tag", 150, ".a.M"), inner = field("inner", 151, ".a.M");
  field_proto *m_fields[] = {&x, &s}, *n_fields[] = {&y}, *b_ext[] = {&tag}, *o_ext[] = {&inner};
  Google__Protobuf__OneofDescriptorProto o = GOOGLE__PROTOBUF__ONEOF_DESCRIPTOR_PROTO__INIT,
                                         *oneofs[] = {&o};
  o.name = "o";
  Google__Protobuf__EnumValueDescriptorProto
      e0 = GOOGLE__PROTOBUF__ENUM_VALUE_DESCRIPTOR_PROTO__INIT,
      *values[] = {&e0};
  e0.name = "E0";
  Google__Protobuf__EnumDescriptorProto e = GOOGLE__PROTOBUF__ENUM_DESCRIPTOR_PROTO__INIT,
                                        *enums[] = {&e};
  e.name = "E";
  e.n_value = 1;
  e.value = values;
  message_proto n = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT, *nested[] = {&n};
  n.name = "N";
  n.n_field = 1;
  n.field = n_fields;
  message_proto m = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT, *a_msgs[] = {&m};
  m.name = "M";
  m.n_field = 2;
  m.field = m_fields;
  m.n_oneof_decl = 1;
  m.oneof_decl = oneofs;
  m.n_nested_type = 1;
  m.nested_type = nested;
  m.n_enum_type = 1;
  m.enum_type = enums;
  message_proto outer = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT, *b_msgs[] = {&outer};
  outer.name = "Outer";
  outer.n_extension = 1;
  outer.extension = o_ext;
  message_proto cm = GOOGLE__PROTOBUF__DESCRIPTOR_PROTO__INIT, *c_msgs[] = {&cm};
  cm.name = "C";
  Google__Protobuf__MethodDescriptorProto meth = GOOGLE__PROTOBUF__METHOD_DESCRIPTOR_PROTO__INIT,
                                          *methods[] = {&meth};
  meth.name = "Call";
  meth.input_type = meth.output_type = ".a.M";
  Google__Protobuf__ServiceDescriptorProto svc = GOOGLE__PROTOBUF__SERVICE_DESCRIPTOR_PROTO__INIT,
                                           *services[] = {&svc};
  svc.name = "S";
  svc.n_method = 1;
  svc.method = methods;
  char *a_name = "a.proto", *b_name = "b.proto";
  file_proto a = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
  a.name = a_name;
  a.package = "a";
  a.n_message_type = 1;
  a.message_type = a_msgs;
  file_proto b = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
  b.name = b_name;
  b.package = "b";
  b.n_dependency = 1;
  b.dependency = &a_name;
  b.n_message_type = 1;
  b.message_type = b_msgs;
  b.n_extension = 1;
  b.extension = b_ext;
  b.n_service = 1;
  b.service = services;
  file_proto c = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_PROTO__INIT;
  c.name = "c.proto";
  c.n_dependency = 1;
  c.dependency = &b_name;
  c.n_message_type = 1;
  c.message_type = c_msgs;
  file_proto *files[] = {&c, &a, &b};
  Google__Protobuf__FileDescriptorSet set = GOOGLE__PROTOBUF__FILE_DESCRIPTOR_SET__INIT;
  set.n_file = with_b ? 3 : 2;
  set.file = files;
  *len = google__protobuf__file_descriptor_set__get_packed_size(&set);
  uint8_t *buf = malloc(*len);
  assert_non_null(buf);
  google__protobuf__file_descriptor_set__pack(&set, buf);
  return buf;
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->base = event_base_new();
  assert_non_null(f->base);
  client_init(&f->cl, f->base);
  assert_int_equal(call_server_new(&f->srv, f->base, NULL), 0);
  size_t len;
  uint8_t *set = make_set(&len, 1);
  assert_int_equal(reflection_new(&f->r, f->srv, set, len), 0);
  free(set);
  client_connect(&f->cl, f->srv, 0, 0);
  *state = f;
  return 0;
}

/* In prismqd's order: the call server first, then the service. */
static int teardown(void **state) {
  struct fx *f = *state;
  call_server_free(f->srv);
  reflection_free(f->r);
  client_free(&f->cl);
  event_base_free(f->base);
  free(f);
  return 0;
}

/* Appends one request, framed, to `body`. */
static void add_request(struct evbuffer *body, const request *req) {
  assert_int_equal(gw_frame_append_pb(body, &req->base), 0);
}

static void by_file(struct evbuffer *body, const char *name) {
  request req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case = KIND(FILE_BY_FILENAME);
  req.file_by_filename = (char *)name;
  add_request(body, &req);
}

static void by_symbol(struct evbuffer *body, const char *name) {
  request req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case = KIND(FILE_CONTAINING_SYMBOL);
  req.file_containing_symbol = (char *)name;
  add_request(body, &req);
}

static void by_extension(struct evbuffer *body, const char *type, int32_t number) {
  Grpc__Reflection__V1__ExtensionRequest x = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
  x.containing_type = (char *)type;
  x.extension_number = number;
  request req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case = KIND(FILE_CONTAINING_EXTENSION);
  req.file_containing_extension = &x;
  add_request(body, &req);
}

static void numbers_of(struct evbuffer *body, const char *type) {
  request req = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  req.message_request_case = KIND(ALL_EXTENSION_NUMBERS_OF_TYPE);
  req.all_extension_numbers_of_type = (char *)type;
  add_request(body, &req);
}

/* Sends the requests of `body` on one stream of `path`, ends it, and waits for the
 * answer: OK after one response per request. */
static struct cstream *converse(struct fx *f, const char *path, struct evbuffer *body) {
  size_t len = evbuffer_get_length(body);
  struct cstream *cs = REQ(&f->cl, .path = path, .raw = evbuffer_pullup(body, -1), .raw_len = len);
  evbuffer_free(body);
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_OK);
  return cs;
}

/* Takes the next response off what the stream received (free with
 * grpc__reflection__v1__server_reflection_response__free_unpacked). */
static response *next_response(struct cstream *cs) {
  uint8_t *msg = NULL;
  size_t len = 0;
  assert_int_equal(gw_frame_next(cs->data, 1u << 20, &msg, &len), GW_FRAME_MSG);
  response *r = grpc__reflection__v1__server_reflection_response__unpack(NULL, len, msg);
  assert_non_null(r);
  free(msg);
  return r;
}

/* The next response is a file answer with exactly the files named in `want`
 * ("c.proto b.proto a.proto"), in that order. */
static void expect_files(struct cstream *cs, const char *want) {
  response *r = next_response(cs);
  assert_int_equal(r->message_response_case, RESP(FILE_DESCRIPTOR_RESPONSE));
  char got[256] = "";
  for (size_t i = 0; i < r->file_descriptor_response->n_file_descriptor_proto; i++) {
    ProtobufCBinaryData *b = &r->file_descriptor_response->file_descriptor_proto[i];
    file_proto *fd = google__protobuf__file_descriptor_proto__unpack(NULL, b->len, b->data);
    assert_non_null(fd);
    snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", i ? " " : "", fd->name);
    google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
  }
  assert_string_equal(got, want);
  grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
}

static void expect_error(struct cstream *cs, int code) {
  response *r = next_response(cs);
  assert_int_equal(r->message_response_case, RESP(ERROR_RESPONSE));
  assert_int_equal(r->error_response->error_code, code);
  grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
}

/* ---- tests ------------------------------------------------------------------------ */

/* A file comes with its imports, transitively, each once; every kind of name finds
 * the file that declares it, nested or not, with or without a package. */
static void test_files_and_symbols(void **state) {
  struct fx *f = *state;
  static const char *const in_a[] = {"a.M",   "a.M.x",   "a.M.o", "a.M.s",
                                     "a.M.N", "a.M.N.y", "a.M.E", "a.M.E0"};
  static const char *const in_b[] = {"b.tag", "b.Outer", "b.Outer.inner", "b.S", "b.S.Call"};
  static const char *const unknown[] = {"a.M.E.E0", "a", "M", "a.M.", "", "C.x"};
  struct evbuffer *body = evbuffer_new();
  assert_non_null(body);
  by_file(body, "c.proto");
  by_file(body, "a.proto");
  by_file(body, "d.proto");
  for (size_t i = 0; i < ARRAY_LEN(in_a); i++) by_symbol(body, in_a[i]);
  for (size_t i = 0; i < ARRAY_LEN(in_b); i++) by_symbol(body, in_b[i]);
  by_symbol(body, "C");
  for (size_t i = 0; i < ARRAY_LEN(unknown); i++) by_symbol(body, unknown[i]);
  struct cstream *cs = converse(f, P_V1, body);
  expect_files(cs, "c.proto b.proto a.proto");
  expect_files(cs, "a.proto");
  expect_error(cs, GW_NOT_FOUND);
  for (size_t i = 0; i < ARRAY_LEN(in_a); i++) expect_files(cs, "a.proto");
  for (size_t i = 0; i < ARRAY_LEN(in_b); i++) expect_files(cs, "b.proto a.proto");
  expect_files(cs, "c.proto b.proto a.proto");
  for (size_t i = 0; i < ARRAY_LEN(unknown); i++) expect_error(cs, GW_NOT_FOUND);
  assert_int_equal(evbuffer_get_length(cs->data), 0);
}

/* Extensions by the message they extend and their number, wherever declared; the
 * services; the request echoed; v1alpha the same. */
static void test_extensions_and_services(void **state) {
  struct fx *f = *state;
  for (int alpha = 0; alpha < 2; alpha++) {
    struct evbuffer *body = evbuffer_new();
    assert_non_null(body);
    by_extension(body, "a.M", 150);
    by_extension(body, "a.M", 151);
    by_extension(body, "a.M", 152);
    by_extension(body, "b.Outer", 150);
    numbers_of(body, "a.M");
    numbers_of(body, "b.Outer");
    numbers_of(body, "a.M.E");
    request list = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    list.message_request_case = KIND(LIST_SERVICES);
    list.list_services = "*";
    add_request(body, &list);
    struct cstream *cs = converse(f, alpha ? P_V1ALPHA : P_V1, body);
    expect_files(cs, "b.proto a.proto");
    expect_files(cs, "b.proto a.proto");
    expect_error(cs, GW_NOT_FOUND);
    expect_error(cs, GW_NOT_FOUND);
    response *r = next_response(cs);
    assert_int_equal(r->message_response_case, RESP(ALL_EXTENSION_NUMBERS_RESPONSE));
    assert_string_equal(r->all_extension_numbers_response->base_type_name, "a.M");
    assert_int_equal(r->all_extension_numbers_response->n_extension_number, 2);
    int32_t *nums = r->all_extension_numbers_response->extension_number; /* in any order */
    assert_int_equal(nums[0] + nums[1], 150 + 151);
    assert_int_equal(abs(nums[0] - nums[1]), 1);
    assert_int_equal(r->original_request->message_request_case,
                     KIND(ALL_EXTENSION_NUMBERS_OF_TYPE));
    assert_string_equal(r->original_request->all_extension_numbers_of_type, "a.M");
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    r = next_response(cs);
    assert_int_equal(r->all_extension_numbers_response->n_extension_number, 0);
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    expect_error(cs, GW_NOT_FOUND); /* an enum has no extensions */
    r = next_response(cs);
    assert_int_equal(r->message_response_case, RESP(LIST_SERVICES_RESPONSE));
    assert_int_equal(r->list_services_response->n_service, 1);
    assert_string_equal(r->list_services_response->service[0]->name, "b.S");
    grpc__reflection__v1__server_reflection_response__free_unpacked(r, NULL);
    assert_int_equal(evbuffer_get_length(cs->data), 0);
  }
}

/* Requests that are not reflection requests end the call; one of no kind is
 * UNIMPLEMENTED and the stream goes on. */
static void test_bad_requests(void **state) {
  struct fx *f = *state;
  static const uint8_t not_pb[] = {0, 0, 0, 0, 1, 0xff};
  struct cstream *cs = REQ(&f->cl, .path = P_V1, RAW(not_pb));
  finish(&f->cl, cs);
  expect_trailers_only(cs, GW_INVALID_ARGUMENT);
  struct evbuffer *body = evbuffer_new();
  assert_non_null(body);
  assert_int_equal(gw_frame_append(body, NULL, 0), 0);
  by_file(body, "a.proto");
  cs = converse(f, P_V1, body);
  expect_error(cs, GW_UNIMPLEMENTED);
  expect_files(cs, "a.proto");
}

/* A set that does not decode, or misses an import, is refused, registers nothing and
 * leaves *out alone; the service already registered still answers. */
static void test_bad_sets(void **state) {
  struct fx *f = *state;
  reflection *r = (reflection *)&r;
  static const uint8_t garbage[] = {0x0a, 0x05, 1};
  assert_int_equal(reflection_new(&r, f->srv, garbage, sizeof garbage), -EINVAL);
  size_t len;
  uint8_t *set = make_set(&len, 0);
  assert_int_equal(reflection_new(&r, f->srv, set, len), -EINVAL);
  free(set);
  assert_ptr_equal(r, (reflection *)&r);
  struct evbuffer *body = evbuffer_new();
  assert_non_null(body);
  by_file(body, "c.proto");
  expect_files(converse(f, P_V1, body), "c.proto b.proto a.proto");
}

/* reflection_free ends the streams still open, UNAVAILABLE, after what they were sent. */
static void test_free_with_open_stream(void **state) {
  struct fx *f = *state;
  struct evbuffer *body = evbuffer_new();
  assert_non_null(body);
  by_file(body, "a.proto");
  struct cstream *cs = REQ(&f->cl, .path = P_V1, .raw = evbuffer_pullup(body, -1),
                           .raw_len = evbuffer_get_length(body), .keep_open = 1);
  evbuffer_free(body);
  RUN_UNTIL(&f->cl, evbuffer_get_length(cs->data) > 0);
  reflection_free(f->r);
  f->r = NULL;
  finish(&f->cl, cs);
  expect_with_trailers(cs, GW_UNAVAILABLE);
  expect_files(cs, "a.proto");
}

/* prismqd's order: the call server freed with a stream open cancels it, which releases
 * it. */
static void test_call_server_freed_first(void **state) {
  struct fx *f = *state;
  REQ(&f->cl, .path = P_V1ALPHA, .keep_open = 1);
  RUN_UNTIL(&f->cl, call_server_live_calls(f->srv) == 1);
  settle(&f->cl);
  call_server_free(f->srv);
  f->srv = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
      T(test_files_and_symbols), T(test_extensions_and_services), T(test_bad_requests),
      T(test_bad_sets),          T(test_free_with_open_stream),   T(test_call_server_freed_first),
#undef T
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
