/* reflection: gRPC server reflection (grpc doc/server-reflection.md), both
 * grpc.reflection.v1.ServerReflection and its deprecated twin v1alpha, answered from a
 * FileDescriptorSet: prismqd compiles in the one of the protos it serves, with their
 * imports (proto/CMakeLists.txt), so that tools (grpcurl, the grpc-js reflection
 * clients) list and describe its services without the .proto files.
 *
 * ServerReflectionInfo is a bidirectional stream: every request gets one response, in
 * order; the client may send more on the same stream, and the call ends OK once it has
 * ended its side. Requests:
 *   list_services                  the full name of every service in the set;
 *   file_by_filename               the file of that name, as protoc named it
 *                                  ("prismq/runner/v1/runner.proto");
 *   file_containing_symbol         the file that declares a fully qualified name: a
 *                                  service, method, message (nested ones too), field,
 *                                  oneof, enum, enum value or extension;
 *   file_containing_extension      the file that declares extension N of a message;
 *   all_extension_numbers_of_type  the numbers of a message type's extensions.
 * A file answer holds the serialized FileDescriptorProto of the file, then those of
 * its dependencies, transitively, each once. What the set does not hold is answered
 * with an ErrorResponse of NOT_FOUND (a request of no known kind: UNIMPLEMENTED), and
 * the stream goes on. A request that does not decode ends the call with
 * INVALID_ARGUMENT; one larger than REFLECTION_MAX_REQUEST bytes, or more than
 * REFLECTION_MAX_REQUESTS on one stream, with RESOURCE_EXHAUSTED. The call is a
 * streaming one (call_set_streaming): a graceful shutdown ends it at once.
 *
 * Reflection tells only the shape of the API, which the .proto files in the
 * repository tell anyway: any caller the transport lets in may use it, as Health.
 * Single-threaded: everything runs on the call server's event_base. */
#ifndef PRISMQ_REFLECTION_H
#define PRISMQ_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

#include "call.h"

/* A request names a file or a symbol or two: far below this. */
#define REFLECTION_MAX_REQUEST (16u << 10)
/* A client that describes everything we serve sends a few dozen; a new stream may
 * follow. */
#define REFLECTION_MAX_REQUESTS 4096

typedef struct reflection reflection;

/* Decodes `set` (`len` bytes of a serialized google.protobuf.FileDescriptorSet, read
 * during the call only) and registers ServerReflectionInfo of v1 and v1alpha on `s`,
 * open to every caller (no role needed). Returns 0 and sets *out (free with
 * reflection_free), -EINVAL if the set does not decode or a file's dependency is not in
 * it, or a negative errno from call_server_add_stream: then *out is untouched, and `s`
 * may hold one of the two methods, with a dangling svc: free `s` without serving. */
int reflection_new(reflection **out, call_server *s, const uint8_t *set, size_t len);

/* Ends every stream still open with UNAVAILABLE and frees everything. As health_free:
 * free it after the call server (which cancels the streams, releasing them here), or
 * free the call server right after this without running its loop in between. Accepts
 * NULL. */
void reflection_free(reflection *r);

#endif
