/* nanopb compatibility of the contract: the code nanopb generates from runner.proto
 * with proto/prismq/runner/v1/runner.options (fixed sizes, no allocation) must put
 * the same bytes on the wire as protobuf-c, which the server uses, and must read
 * what the server sends. Messages are built on both sides and compared byte for
 * byte: both encoders write fields in field-number order and map entries in
 * insertion order, so equal messages give equal bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pb_decode.h>
#include <pb_encode.h>

#include "prismq/runner/v1/runner.pb-c.h"
#include "prismq/runner/v1/runner.pb.h"

typedef struct {
  const char *key;
  const char *value;
} kv;

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
/* More entries than runner.options allows (16), for the overflow case. */
#define MAX_ENTRIES 17

static const kv PARAMS[] = {{"message", "h\xc3\xa9llo, w\xc3\xb6rld"}, {"count", "3"}};
static const kv LABELS[] = {{"team", "embedded"}, {"empty", ""}, {"zz", "last"}};

static const char RUN_ID[] = "01JDQ3V8K2Q9RJ5W7N4M6P8T0A";
static const char ERROR_MESSAGE[] =
    "ls: cannot access '/nonexistent': No such file or directory \xe2\x9c\x97";

/* Copies src into a fixed nanopb string field; the test data must fit. */
#define NPB_SET(dst, src)                   \
  do {                                      \
    assert_true(strlen(src) < sizeof(dst)); \
    strcpy((dst), (src));                   \
  } while (0)

#define NPB_MAP_SET(arr, count, src, n)          \
  do {                                           \
    (count) = (pb_size_t)(n);                    \
    for (size_t i_ = 0; i_ < (n); i_++) {        \
      NPB_SET((arr)[i_].key, (src)[i_].key);     \
      NPB_SET((arr)[i_].value, (src)[i_].value); \
    }                                            \
  } while (0)

#define NPB_MAP_EQ(arr, count, src, n)                       \
  do {                                                       \
    assert_int_equal((count), (n));                          \
    for (size_t i_ = 0; i_ < (n); i_++) {                    \
      assert_string_equal((arr)[i_].key, (src)[i_].key);     \
      assert_string_equal((arr)[i_].value, (src)[i_].value); \
    }                                                        \
  } while (0)

/* protobuf-c map entries of `type` pointing at src, in src order. */
#define PBC_MAP_SET(type, init, entries, ptrs, src, n) \
  do {                                                 \
    for (size_t i_ = 0; i_ < (n); i_++) {              \
      (entries)[i_] = (type)init;                      \
      (entries)[i_].key = (char *)(src)[i_].key;       \
      (entries)[i_].value = (char *)(src)[i_].value;   \
      (ptrs)[i_] = &(entries)[i_];                     \
    }                                                  \
  } while (0)

/* A Run as the server sends one, built with protobuf-c; its strings point at
 * constants, its entries into the struct. */
typedef struct {
  Prismq__Runner__V1__Run run;
  Prismq__Runner__V1__Run__ParametersEntry params[MAX_ENTRIES];
  Prismq__Runner__V1__Run__ParametersEntry *param_ptrs[MAX_ENTRIES];
  Prismq__Runner__V1__Run__LabelsEntry labels[MAX_ENTRIES];
  Prismq__Runner__V1__Run__LabelsEntry *label_ptrs[MAX_ENTRIES];
} pbc_run;

/* Every field set, with values that stress the encodings: a negative int32 (ten
 * varint bytes), 64-bit counters past 2^32, UTF-8 in strings, an empty map value. */
static void pbc_run_init(pbc_run *p, const kv *labels, size_t nlabels) {
  p->run = (Prismq__Runner__V1__Run)PRISMQ__RUNNER__V1__RUN__INIT;
  Prismq__Runner__V1__Run *r = &p->run;
  r->run_id = (char *)RUN_ID;
  r->module_id = "fail";
  r->status = PRISMQ__RUNNER__V1__RUN_STATUS__RUN_STATUS_FAILED;
  r->exit_code = -1;
  r->term_signal = 9;
  r->error_message = (char *)ERROR_MESSAGE;
  PBC_MAP_SET(Prismq__Runner__V1__Run__ParametersEntry,
              PRISMQ__RUNNER__V1__RUN__PARAMETERS_ENTRY__INIT, p->params, p->param_ptrs, PARAMS,
              COUNT(PARAMS));
  r->parameters = p->param_ptrs;
  r->n_parameters = COUNT(PARAMS);
  PBC_MAP_SET(Prismq__Runner__V1__Run__LabelsEntry, PRISMQ__RUNNER__V1__RUN__LABELS_ENTRY__INIT,
              p->labels, p->label_ptrs, labels, nlabels);
  r->labels = p->label_ptrs;
  r->n_labels = nlabels;
  r->created_at_ms = 1732646400123;
  r->started_at_ms = 1732646400456;
  r->finished_at_ms = 1732646409999;
  r->pid = 4242;
  r->stdout_bytes = (UINT64_C(1) << 40) + 7;
  r->stderr_bytes = 61;
  r->user_cpu_ms = 12;
  r->sys_cpu_ms = 3;
  r->max_rss_kb = 5120;
  r->request_id = "req-42";
}

static void assert_run_decoded(const prismq_runner_v1_Run *r) {
  assert_string_equal(r->run_id, RUN_ID);
  assert_string_equal(r->module_id, "fail");
  assert_int_equal(r->status, prismq_runner_v1_RunStatus_RUN_STATUS_FAILED);
  assert_int_equal(r->exit_code, -1);
  assert_int_equal(r->term_signal, 9);
  assert_string_equal(r->error_message, ERROR_MESSAGE);
  NPB_MAP_EQ(r->parameters, r->parameters_count, PARAMS, COUNT(PARAMS));
  NPB_MAP_EQ(r->labels, r->labels_count, LABELS, COUNT(LABELS));
  assert_int_equal(r->created_at_ms, 1732646400123);
  assert_int_equal(r->started_at_ms, 1732646400456);
  assert_int_equal(r->finished_at_ms, 1732646409999);
  assert_int_equal(r->pid, 4242);
  assert_int_equal(r->stdout_bytes, (UINT64_C(1) << 40) + 7);
  assert_int_equal(r->stderr_bytes, 61);
  assert_int_equal(r->user_cpu_ms, 12);
  assert_int_equal(r->sys_cpu_ms, 3);
  assert_int_equal(r->max_rss_kb, 5120);
  assert_string_equal(r->request_id, "req-42");
}

/* Encodes with nanopb into buf; returns the length (fails the test on an error). */
static size_t npb_encode(uint8_t *buf, size_t cap, const pb_msgdesc_t *fields, const void *msg) {
  pb_ostream_t os = pb_ostream_from_buffer(buf, cap);
  if (!pb_encode(&os, fields, msg)) fail_msg("pb_encode: %s", PB_GET_ERROR(&os));
  return os.bytes_written;
}

/* ---- requests: what an embedded client sends ------------------------------------ */

static void test_start_run_request_encodes_identically(void **state) {
  (void)state;
  Prismq__Runner__V1__StartRunRequest__ParametersEntry pe[COUNT(PARAMS)], *pp[COUNT(PARAMS)];
  Prismq__Runner__V1__StartRunRequest__LabelsEntry le[COUNT(LABELS)], *lp[COUNT(LABELS)];
  Prismq__Runner__V1__StartRunRequest c = PRISMQ__RUNNER__V1__START_RUN_REQUEST__INIT;
  c.module_id = "echo";
  PBC_MAP_SET(Prismq__Runner__V1__StartRunRequest__ParametersEntry,
              PRISMQ__RUNNER__V1__START_RUN_REQUEST__PARAMETERS_ENTRY__INIT, pe, pp, PARAMS,
              COUNT(PARAMS));
  c.parameters = pp;
  c.n_parameters = COUNT(PARAMS);
  c.request_id = "req-42";
  PBC_MAP_SET(Prismq__Runner__V1__StartRunRequest__LabelsEntry,
              PRISMQ__RUNNER__V1__START_RUN_REQUEST__LABELS_ENTRY__INIT, le, lp, LABELS,
              COUNT(LABELS));
  c.labels = lp;
  c.n_labels = COUNT(LABELS);
  c.timeout_ms = 4000000000u; /* a uint32 past INT32_MAX */
  uint8_t want[1024];
  size_t want_len = prismq__runner__v1__start_run_request__get_packed_size(&c);
  assert_true(want_len <= sizeof want);
  prismq__runner__v1__start_run_request__pack(&c, want);

  prismq_runner_v1_StartRunRequest n = prismq_runner_v1_StartRunRequest_init_zero;
  NPB_SET(n.module_id, "echo");
  NPB_MAP_SET(n.parameters, n.parameters_count, PARAMS, COUNT(PARAMS));
  NPB_SET(n.request_id, "req-42");
  NPB_MAP_SET(n.labels, n.labels_count, LABELS, COUNT(LABELS));
  n.timeout_ms = 4000000000u;
  uint8_t got[prismq_runner_v1_StartRunRequest_size];
  size_t got_len = npb_encode(got, sizeof got, prismq_runner_v1_StartRunRequest_fields, &n);

  assert_int_equal(got_len, want_len);
  assert_memory_equal(got, want, want_len);
}

/* The smallest request, as a GetRun or WaitRun: defaults are left out by both. */
static void test_wait_run_request_encodes_identically(void **state) {
  (void)state;
  Prismq__Runner__V1__WaitRunRequest c = PRISMQ__RUNNER__V1__WAIT_RUN_REQUEST__INIT;
  c.run_id = (char *)RUN_ID;
  uint8_t want[64];
  size_t want_len = prismq__runner__v1__wait_run_request__pack(&c, want);

  prismq_runner_v1_WaitRunRequest n = prismq_runner_v1_WaitRunRequest_init_zero;
  NPB_SET(n.run_id, RUN_ID);
  uint8_t got[prismq_runner_v1_WaitRunRequest_size];
  size_t got_len = npb_encode(got, sizeof got, prismq_runner_v1_WaitRunRequest_fields, &n);

  assert_int_equal(got_len, want_len);
  assert_memory_equal(got, want, want_len);
}

/* ---- answers: what an embedded client receives ----------------------------------- */

static void test_run_decodes_and_reencodes_identically(void **state) {
  (void)state;
  pbc_run p;
  pbc_run_init(&p, LABELS, COUNT(LABELS));
  uint8_t wire[4096];
  size_t len = prismq__runner__v1__run__get_packed_size(&p.run);
  assert_true(len <= sizeof wire);
  prismq__runner__v1__run__pack(&p.run, wire);

  prismq_runner_v1_Run r = prismq_runner_v1_Run_init_zero;
  pb_istream_t is = pb_istream_from_buffer(wire, len);
  if (!pb_decode(&is, prismq_runner_v1_Run_fields, &r))
    fail_msg("pb_decode: %s", PB_GET_ERROR(&is));
  assert_run_decoded(&r);

  uint8_t again[prismq_runner_v1_Run_size];
  size_t again_len = npb_encode(again, sizeof again, prismq_runner_v1_Run_fields, &r);
  assert_int_equal(again_len, len);
  assert_memory_equal(again, wire, len);
}

/* Decodes a Run whose labels are `labels`; returns pb_decode's result, and its
 * error message in *why. */
static int decode_run_with_labels(const kv *labels, size_t n, const char **why) {
  pbc_run p;
  pbc_run_init(&p, labels, n);
  uint8_t wire[16384];
  size_t len = prismq__runner__v1__run__get_packed_size(&p.run);
  assert_true(len <= sizeof wire);
  prismq__runner__v1__run__pack(&p.run, wire);
  prismq_runner_v1_Run r = prismq_runner_v1_Run_init_zero;
  pb_istream_t is = pb_istream_from_buffer(wire, len);
  int ok = pb_decode(&is, prismq_runner_v1_Run_fields, &r);
  *why = PB_GET_ERROR(&is);
  return ok;
}

/* The sizes in runner.options are limits, not truncation: a value one byte too
 * long or one map entry too many makes decoding fail with nanopb's message. */
static void test_run_over_the_options_limits_fails_cleanly(void **state) {
  (void)state;
  char longest[256], too_long[257];
  memset(longest, 'v', sizeof longest - 1);
  longest[sizeof longest - 1] = '\0';
  memset(too_long, 'v', sizeof too_long - 1);
  too_long[sizeof too_long - 1] = '\0';
  const char *why;
  kv one = {"k", longest};
  assert_true(decode_run_with_labels(&one, 1, &why));
  one.value = too_long;
  assert_false(decode_run_with_labels(&one, 1, &why));
  assert_string_equal(why, "string overflow");

  kv many[MAX_ENTRIES];
  char keys[MAX_ENTRIES][8];
  for (size_t i = 0; i < MAX_ENTRIES; i++) {
    snprintf(keys[i], sizeof keys[i], "k%zu", i);
    many[i] = (kv){keys[i], "v"};
  }
  assert_true(decode_run_with_labels(many, MAX_ENTRIES - 1, &why));
  assert_false(decode_run_with_labels(many, MAX_ENTRIES, &why));
  assert_string_equal(why, "array overflow");
}

/* OutputChunk.data is a callback (chunks reach 64 KiB): it reads the bytes in small
 * pieces, as a device reading straight off the connection would. */
typedef struct {
  size_t total;
  size_t calls;
} data_sink;

static uint8_t pattern_byte(size_t i) { return (uint8_t)(i * 31u + 7u); }

static bool read_data(pb_istream_t *is, const pb_field_t *field, void **arg) {
  (void)field;
  data_sink *sink = *arg;
  sink->calls++;
  uint8_t piece[512];
  while (is->bytes_left > 0) {
    size_t n = is->bytes_left < sizeof piece ? is->bytes_left : sizeof piece;
    if (!pb_read(is, piece, n)) return false;
    for (size_t i = 0; i < n; i++)
      if (piece[i] != pattern_byte(sink->total + i)) return false;
    sink->total += n;
  }
  return true;
}

/* Packs chunk with protobuf-c and decodes it with nanopb into *out. */
static void decode_chunk(prismq_runner_v1_OutputChunk *out, data_sink *sink,
                         const Prismq__Runner__V1__OutputChunk *chunk) {
  uint8_t wire[16384];
  size_t len = prismq__runner__v1__output_chunk__get_packed_size(chunk);
  assert_true(len <= sizeof wire);
  prismq__runner__v1__output_chunk__pack(chunk, wire);
  *out = (prismq_runner_v1_OutputChunk)prismq_runner_v1_OutputChunk_init_zero;
  out->data.funcs.decode = read_data;
  out->data.arg = sink;
  pb_istream_t is = pb_istream_from_buffer(wire, len);
  if (!pb_decode(&is, prismq_runner_v1_OutputChunk_fields, out))
    fail_msg("pb_decode: %s", PB_GET_ERROR(&is));
}

static void test_output_chunks_decode_with_a_data_callback(void **state) {
  (void)state;
  static uint8_t data[10000];
  for (size_t i = 0; i < sizeof data; i++) data[i] = pattern_byte(i);
  Prismq__Runner__V1__OutputChunk c = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  c.seq = 7;
  c.stream = PRISMQ__RUNNER__V1__OUTPUT_STREAM__OUTPUT_STREAM_STDERR;
  c.data = (ProtobufCBinaryData){sizeof data, data};
  c.offset = (UINT64_C(1) << 33) + 5;
  c.time_ms = 1732646400789;
  prismq_runner_v1_OutputChunk n;
  data_sink sink = {0, 0};
  decode_chunk(&n, &sink, &c);
  assert_int_equal(sink.total, sizeof data);
  assert_int_equal(sink.calls, 1);
  assert_int_equal(n.seq, 7);
  assert_int_equal(n.stream, prismq_runner_v1_OutputStream_OUTPUT_STREAM_STDERR);
  assert_int_equal(n.offset, (UINT64_C(1) << 33) + 5);
  assert_int_equal(n.time_ms, 1732646400789);
  assert_false(n.has_run);

  /* The last chunk of a follow: no data, the terminal run. */
  pbc_run p;
  pbc_run_init(&p, LABELS, COUNT(LABELS));
  Prismq__Runner__V1__OutputChunk last = PRISMQ__RUNNER__V1__OUTPUT_CHUNK__INIT;
  last.run = &p.run;
  data_sink none = {0, 0};
  decode_chunk(&n, &none, &last);
  assert_int_equal(none.calls, 0);
  assert_true(n.has_run);
  assert_run_decoded(&n.run);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_start_run_request_encodes_identically),
      cmocka_unit_test(test_wait_run_request_encodes_identically),
      cmocka_unit_test(test_run_decodes_and_reencodes_identically),
      cmocka_unit_test(test_run_over_the_options_limits_fails_cleanly),
      cmocka_unit_test(test_output_chunks_decode_with_a_data_callback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
