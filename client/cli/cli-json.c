/* The CLI's JSON output: common/pbjson's proto3 JSON mapping, shared with prismqd's
 * HTTP/1.1 front so that both print a message alike. */
#include "cli.h"
#include "pbjson.h"

void cli_json_string(FILE *f, const char *s) { pbjson_string(f, s); }

void cli_json_message(FILE *f, const ProtobufCMessage *msg) { pbjson_print(f, msg); }
