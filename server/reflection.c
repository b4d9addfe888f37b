#include "reflection.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpcwire.h"
#include "pbcheck.h"
#include "xalloc.h"

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__DescriptorProto message_proto;
typedef Google__Protobuf__EnumDescriptorProto enum_proto;
typedef Google__Protobuf__FieldDescriptorProto field_proto;
typedef Grpc__Reflection__V1__ServerReflectionRequest request;

#define REQ(kind)  GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##kind
#define RESP(kind) GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##kind
#define NO_FILE    SIZE_MAX

struct file {
  const char *name; /* in the decoded set */
  uint8_t *bytes;   /* its FileDescriptorProto, serialized */
  size_t len;
  size_t *deps; /* indexes of the files it imports */
  size_t ndeps;
};

enum sym_kind { SYM_OTHER, SYM_MESSAGE, SYM_SERVICE };

struct symbol {
  char *name; /* fully qualified, without protobuf's leading dot */
  size_t file;
  enum sym_kind kind;
};

struct extension {
  const char *extendee; /* the extended message's full name (in the decoded set) */
  int32_t number;
  size_t file;
};

struct reflection;

/* One open ServerReflectionInfo call. */
struct stream {
  struct reflection *r;
  call *c;
  size_t nrequests;
  struct stream *prev, *next;
};

struct reflection {
  Google__Protobuf__FileDescriptorSet *set;
  struct file *files; /* as in the set */
  size_t nfiles;
  struct symbol *syms; /* sorted by name once all are in */
  size_t nsyms, symcap;
  struct extension *exts;
  size_t nexts, extcap;
  struct stream *streams;
};

/* protobuf-c leaves a proto2 string that is not set NULL. */
static const char *str(const char *s) { return s ? s : ""; }

/* ---- the index ------------------------------------------------------------------ */

/* Adds `scope`.`name` to the symbols; returns the full name (owned by r). */
static const char *add_symbol(reflection *r, const char *scope, const char *name, size_t file,
                              enum sym_kind kind) {
  if (r->nsyms == r->symcap) {
    r->symcap = r->symcap ? 2 * r->symcap : 256;
    r->syms = xrealloc(r->syms, r->symcap * sizeof *r->syms);
  }
  size_t n = strlen(scope) + strlen(str(name)) + 2;
  char *full = xmalloc(n);
  snprintf(full, n, "%s%s%s", scope, scope[0] ? "." : "", str(name));
  r->syms[r->nsyms++] = (struct symbol){full, file, kind};
  return full;
}

/* Extension fields are symbols of their scope, and extend another message. */
static void add_extensions(reflection *r, const char *scope, field_proto *const *ext, size_t n,
                           size_t file) {
  for (size_t i = 0; i < n; i++) {
    add_symbol(r, scope, ext[i]->name, file, SYM_OTHER);
    if (r->nexts == r->extcap) {
      r->extcap = r->extcap ? 2 * r->extcap : 16;
      r->exts = xrealloc(r->exts, r->extcap * sizeof *r->exts);
    }
    const char *extendee = str(ext[i]->extendee);
    if (extendee[0] == '.') extendee++; /* protoc writes resolved names so */
    r->exts[r->nexts++] = (struct extension){extendee, ext[i]->number, file};
  }
}

static void add_enum(reflection *r, const char *scope, const enum_proto *e, size_t file) {
  add_symbol(r, scope, e->name, file, SYM_OTHER);
  /* Enum values are scoped as the enum is (C++ rules), not inside it. */
  for (size_t i = 0; i < e->n_value; i++) add_symbol(r, scope, e->value[i]->name, file, SYM_OTHER);
}

static void add_message(reflection *r, const char *scope, const message_proto *m, size_t file) {
  const char *full = add_symbol(r, scope, m->name, file, SYM_MESSAGE);
  for (size_t i = 0; i < m->n_field; i++) add_symbol(r, full, m->field[i]->name, file, SYM_OTHER);
  for (size_t i = 0; i < m->n_oneof_decl; i++)
    add_symbol(r, full, m->oneof_decl[i]->name, file, SYM_OTHER);
  for (size_t i = 0; i < m->n_nested_type; i++) add_message(r, full, m->nested_type[i], file);
  for (size_t i = 0; i < m->n_enum_type; i++) add_enum(r, full, m->enum_type[i], file);
  add_extensions(r, full, m->extension, m->n_extension, file);
}

static size_t find_file(const reflection *r, const char *name) {
  for (size_t i = 0; i < r->nfiles; i++)
    if (strcmp(r->files[i].name, name) == 0) return i;
  return NO_FILE;
}

/* Serializes file i of the set, finds its dependencies and indexes what it declares.
 * Returns 0, or -EINVAL for a dependency the set does not hold. */
static int load_file(reflection *r, size_t i) {
  const file_proto *f = r->set->file[i];
  struct file *out = &r->files[i];
  out->len = google__protobuf__file_descriptor_proto__get_packed_size(f);
  out->bytes = xmalloc(out->len);
  google__protobuf__file_descriptor_proto__pack(f, out->bytes);
  out->deps = xcalloc(f->n_dependency, sizeof *out->deps);
  for (; out->ndeps < f->n_dependency; out->ndeps++) {
    out->deps[out->ndeps] = find_file(r, str(f->dependency[out->ndeps]));
    if (out->deps[out->ndeps] == NO_FILE) return -EINVAL;
  }
  const char *pkg = str(f->package);
  for (size_t j = 0; j < f->n_message_type; j++) add_message(r, pkg, f->message_type[j], i);
  for (size_t j = 0; j < f->n_enum_type; j++) add_enum(r, pkg, f->enum_type[j], i);
  for (size_t j = 0; j < f->n_service; j++) {
    const Google__Protobuf__ServiceDescriptorProto *svc = f->service[j];
    const char *full = add_symbol(r, pkg, svc->name, i, SYM_SERVICE);
    for (size_t k = 0; k < svc->n_method; k++)
      add_symbol(r, full, svc->method[k]->name, i, SYM_OTHER);
  }
  add_extensions(r, pkg, f->extension, f->n_extension, i);
  return 0;
}

static int symbol_cmp(const void *a, const void *b) {
  return strcmp(((const struct symbol *)a)->name, ((const struct symbol *)b)->name);
}

static const struct symbol *find_symbol(const reflection *r, const char *name) {
  struct symbol key = {(char *)name, 0, SYM_OTHER};
  return bsearch(&key, r->syms, r->nsyms, sizeof key, symbol_cmp);
}

/* ---- answers -------------------------------------------------------------------- */

/* One response and what it points to, alive until it is sent. */
struct answer {
  Grpc__Reflection__V1__ServerReflectionResponse resp;
  Grpc__Reflection__V1__FileDescriptorResponse files;
  Grpc__Reflection__V1__ListServiceResponse list;
  Grpc__Reflection__V1__ExtensionNumberResponse numbers;
  Grpc__Reflection__V1__ErrorResponse error;
  Grpc__Reflection__V1__ServiceResponse *services;
  uint8_t *seen; /* files: those in already */
};

static void answer_error(struct answer *a, int code, const char *message) {
  a->error.error_code = code;
  a->error.error_message = (char *)message;
  a->resp.message_response_case = RESP(ERROR_RESPONSE);
  a->resp.error_response = &a->error;
}

/* Adds file i, then its dependencies, to a file answer: each once. */
static void add_file(const reflection *r, struct answer *a, size_t i) {
  if (a->seen[i]) return;
  a->seen[i] = 1;
  const struct file *f = &r->files[i];
  a->files.file_descriptor_proto[a->files.n_file_descriptor_proto++] =
      (ProtobufCBinaryData){f->len, f->bytes};
  for (size_t d = 0; d < f->ndeps; d++) add_file(r, a, f->deps[d]);
}

static void answer_file(const reflection *r, struct answer *a, size_t i) {
  a->seen = xcalloc(r->nfiles, 1);
  a->files.file_descriptor_proto = xcalloc(r->nfiles, sizeof *a->files.file_descriptor_proto);
  add_file(r, a, i);
  a->resp.message_response_case = RESP(FILE_DESCRIPTOR_RESPONSE);
  a->resp.file_descriptor_response = &a->files;
}

static size_t find_extension(const reflection *r, const Grpc__Reflection__V1__ExtensionRequest *x) {
  for (size_t i = 0; i < r->nexts; i++)
    if (r->exts[i].number == x->extension_number &&
        strcmp(r->exts[i].extendee, x->containing_type) == 0)
      return r->exts[i].file;
  return NO_FILE;
}

/* The file that a file request asks for, or NO_FILE; *missing says what was not found
 * then. */
static size_t requested_file(const reflection *r, const request *req, const char **missing) {
  switch (req->message_request_case) {
  case REQ(FILE_BY_FILENAME):
    *missing = "file not found";
    return find_file(r, req->file_by_filename);
  case REQ(FILE_CONTAINING_SYMBOL): {
    *missing = "symbol not found";
    const struct symbol *sym = find_symbol(r, req->file_containing_symbol);
    return sym ? sym->file : NO_FILE;
  }
  default: /* file_containing_extension: respond asks for no other */
    *missing = "extension not found";
    return find_extension(r, req->file_containing_extension);
  }
}

static void answer_services(const reflection *r, struct answer *a) {
  a->services = xcalloc(r->nsyms, sizeof *a->services);
  a->list.service = xcalloc(r->nsyms, sizeof *a->list.service);
  for (size_t i = 0; i < r->nsyms; i++) {
    if (r->syms[i].kind != SYM_SERVICE) continue;
    Grpc__Reflection__V1__ServiceResponse *s = &a->services[a->list.n_service];
    *s = (Grpc__Reflection__V1__ServiceResponse)GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;
    s->name = r->syms[i].name;
    a->list.service[a->list.n_service++] = s;
  }
  a->resp.message_response_case = RESP(LIST_SERVICES_RESPONSE);
  a->resp.list_services_response = &a->list;
}

static void answer_numbers(const reflection *r, struct answer *a, const char *type) {
  const struct symbol *sym = find_symbol(r, type);
  if (!sym || sym->kind != SYM_MESSAGE) {
    answer_error(a, GW_NOT_FOUND, "type not found");
    return;
  }
  a->numbers.base_type_name = (char *)type;
  a->numbers.extension_number = xcalloc(r->nexts, sizeof *a->numbers.extension_number);
  for (size_t i = 0; i < r->nexts; i++)
    if (strcmp(r->exts[i].extendee, type) == 0)
      a->numbers.extension_number[a->numbers.n_extension_number++] = r->exts[i].number;
  a->resp.message_response_case = RESP(ALL_EXTENSION_NUMBERS_RESPONSE);
  a->resp.all_extension_numbers_response = &a->numbers;
}

/* Sends the response to one request; it echoes the request, as gRPC's servers do. */
static void respond(const reflection *r, call *c, request *req) {
  struct answer a = {
      .resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT,
      .files = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT,
      .list = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT,
      .numbers = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT,
      .error = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT,
  };
  a.resp.original_request = req;
  switch (req->message_request_case) {
  case REQ(LIST_SERVICES): answer_services(r, &a); break;
  case REQ(ALL_EXTENSION_NUMBERS_OF_TYPE):
    answer_numbers(r, &a, req->all_extension_numbers_of_type);
    break;
  case REQ(FILE_BY_FILENAME):
  case REQ(FILE_CONTAINING_SYMBOL):
  case REQ(FILE_CONTAINING_EXTENSION): {
    const char *missing;
    size_t i = requested_file(r, req, &missing);
    if (i == NO_FILE)
      answer_error(&a, GW_NOT_FOUND, missing);
    else
      answer_file(r, &a, i);
    break;
  }
  default: answer_error(&a, GW_UNIMPLEMENTED, "request of no known kind"); break;
  }
  /* call_send fails only for want of memory, on which the server aborts. */
  if (call_send(c, &a.resp.base) < 0) abort();
  free(a.services);
  free(a.list.service);
  free(a.seen);
  free(a.files.file_descriptor_proto);
  free(a.numbers.extension_number);
}

/* ---- the calls ------------------------------------------------------------------ */

static void stream_free(struct stream *st) {
  if (st->prev)
    st->prev->next = st->next;
  else
    st->r->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  free(st);
}

/* The call is the layer's now; the stream, ours, goes with it. */
static void stream_cancelled(call *c, void *arg) {
  (void)c;
  stream_free(arg);
}

static void stream_request(call *c, const uint8_t *msg, size_t len, void *arg) {
  struct stream *st = arg;
  char err[256];
  if (++st->nrequests > REFLECTION_MAX_REQUESTS || len > REFLECTION_MAX_REQUEST) {
    stream_free(st);
    call_finish(c, GW_RESOURCE_EXHAUSTED, "at most %d requests of %u bytes on one stream",
                REFLECTION_MAX_REQUESTS, REFLECTION_MAX_REQUEST);
    return;
  }
  if (pbcheck_message(&grpc__reflection__v1__server_reflection_request__descriptor, msg, len, err,
                      sizeof err) < 0) {
    stream_free(st);
    call_finish(c, GW_INVALID_ARGUMENT, "%s", err);
    return;
  }
  request *req = grpc__reflection__v1__server_reflection_request__unpack(NULL, len, msg);
  if (!req) {
    stream_free(st);
    call_finish(c, GW_INVALID_ARGUMENT, "malformed ServerReflectionRequest");
    return;
  }
  respond(st->r, c, req);
  grpc__reflection__v1__server_reflection_request__free_unpacked(req, NULL);
}

/* The client has asked all it wanted. */
static void stream_end(call *c, void *arg) {
  stream_free(arg);
  call_finish(c, GW_OK, NULL);
}

static void stream_open(call *c, void *svc) {
  reflection *r = svc;
  struct stream *st = xcalloc(1, sizeof *st);
  st->r = r;
  st->c = c;
  st->next = r->streams;
  if (st->next) st->next->prev = st;
  r->streams = st;
  call_set_streaming(c);
  call_on_cancel(c, stream_cancelled, st);
  call_on_input(c, stream_request, stream_end, st);
}

int reflection_new(reflection **out, call_server *s, const uint8_t *set, size_t len) {
  int rc = -EINVAL;
  reflection *r = xcalloc(1, sizeof *r);
  r->set = google__protobuf__file_descriptor_set__unpack(NULL, len, set);
  if (!r->set) goto fail;
  r->nfiles = r->set->n_file;
  r->files = xcalloc(r->nfiles, sizeof *r->files);
  for (size_t i = 0; i < r->nfiles; i++) r->files[i].name = str(r->set->file[i]->name);
  for (size_t i = 0; i < r->nfiles; i++)
    if (load_file(r, i) < 0) goto fail;
  qsort(r->syms, r->nsyms, sizeof *r->syms, symbol_cmp);
  rc = call_server_add_stream(s, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              stream_open, r, 0);
  if (rc == 0)
    rc = call_server_add_stream(s, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                stream_open, r, 0);
  if (rc < 0) goto fail;
  *out = r;
  return 0;
fail:
  reflection_free(r);
  return rc;
}

void reflection_free(reflection *r) {
  if (!r) return;
  /* call_finish takes the call back without its cancel callback firing. */
  while (r->streams) {
    call_finish(r->streams->c, GW_UNAVAILABLE, "reflection service stopped");
    stream_free(r->streams);
  }
  for (size_t i = 0; i < r->nsyms; i++) free(r->syms[i].name);
  free(r->syms);
  free(r->exts);
  for (size_t i = 0; i < r->nfiles; i++) {
    free(r->files[i].bytes);
    free(r->files[i].deps);
  }
  free(r->files);
  if (r->set) google__protobuf__file_descriptor_set__free_unpacked(r->set, NULL);
  free(r);
}
