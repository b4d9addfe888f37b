/* fuzz_pbjson: the proto3 JSON parser of request bodies (prismqd's HTTP/1.1 front).
 *
 * Any input either parses or is refused with a message; what parses is a valid
 * encoding of its type, and printing it (pbjson_print) and parsing that again gives the
 * same encoding back: the printer and the parser agree on every value.
 *
 * Input: byte 0 picks the message type (bit 0: StartRunRequest or OutputChunk, which
 * holds bytes, 64-bit integers, enums and nested messages); the rest is the JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzkit.h"
#include "pbjson.h"
#include "prismq/runner/v1/runner.pb-c.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_setup();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const ProtobufCMessageDescriptor *d = data[0] & 1
                                            ? &prismq__runner__v1__output_chunk__descriptor
                                            : &prismq__runner__v1__start_run_request__descriptor;
  uint8_t *enc = NULL, *again = NULL;
  size_t len = 0, len2 = 0;
  char err[200];
  if (pbjson_parse(&enc, &len, d, (const char *)data + 1, size - 1, err, sizeof err) < 0) {
    FZ_CHECK(err[0], "refused without a message");
    return 0;
  }
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, enc);
  FZ_CHECK(m, "parsed into an encoding that does not decode");
  char *text = NULL;
  size_t tlen = 0;
  FILE *f = open_memstream(&text, &tlen);
  FZ_CHECK(f, "open_memstream");
  pbjson_print(f, m);
  fclose(f);
  int rc = pbjson_parse(&again, &len2, d, text, tlen, err, sizeof err);
  FZ_CHECK(rc == 0, "its own output refused: %s: %s", err, text);
  FZ_CHECK(len2 == len && memcmp(again, enc, len) == 0, "printed and parsed again differs: %s",
           text);
  protobuf_c_message_free_unpacked(m, NULL);
  free(text);
  free(enc);
  free(again);
  return 0;
}
