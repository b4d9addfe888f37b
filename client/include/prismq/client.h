/* libprismq: the C client library of PrismQ Runner.
 *
 * One prismq_client is one HTTP/2 connection (gRPC; h2c, or TLS with ALPN h2) to a
 * prismqd. Every Runner RPC has a blocking function and an asynchronous one; requests
 * and results are the protobuf-c structs of "prismq/runner/v1/runner.pb-c.h" (included here), generated
 * from proto/prismq/runner/v1/runner.proto.
 *
 * Two kinds of client:
 *   - prismq_client_connect: blocking. Each prismq_<rpc>() call runs a private
 *     libevent loop until the RPC ends. The prismq_*_async functions refuse it.
 *   - prismq_client_connect_async: on the caller's struct event_base. The
 *     prismq_*_async functions start an RPC and return; its callback fires later from
 *     the caller's loop. The blocking functions refuse it.
 *
 * Connecting is lazy, as in gRPC: prismq_client_connect only checks the options and
 * starts the connection. If the server cannot be reached, each call ends with
 * PRISMQ_CODE_UNAVAILABLE and a message naming the reason (e.g. "connect to
 * 127.0.0.1:7: Connection refused"). There is no reconnection: once the connection is
 * lost (server stopped or killed), calls in progress and every later call end
 * UNAVAILABLE; free the client and connect again.
 *
 * Results: each result is a protobuf-c message allocated with malloc (protobuf-c's
 * default allocator). The caller owns it and frees it with the generated
 * free_unpacked function and a NULL allocator, e.g.
 *   prismq__runner__v1__list_runs_response__free_unpacked(resp, NULL);
 * prismq_run_free(run) does exactly that for a Run. Requests are only read: the
 * library never keeps a pointer to a request after the function returns.
 *
 * Statuses: every RPC ends with a prismq_status, the gRPC status code (enum
 * prismq_code; 0 = OK) and its message. Errors of the library itself use the same
 * codes: INVALID_ARGUMENT (a NULL argument), FAILED_PRECONDITION (a blocking function
 * on an asynchronous client, or called from inside a callback of the same client),
 * RESOURCE_EXHAUSTED (out of memory), INTERNAL (a response that does not decode).
 * A status may carry the server's error details: prismq_status_violations gives the
 * field violations (the bad parameters of a StartRun or SavePreset).
 *
 * Deadlines: every RPC function takes `deadline_ms`: 0 uses the client's default
 * (prismq_client_opts.deadline_ms), PRISMQ_NO_DEADLINE means none, any other value is
 * the deadline in milliseconds from the start of the call. It is sent to the server
 * (grpc-timeout) and enforced locally: the call ends PRISMQ_CODE_DEADLINE_EXCEEDED.
 * The default (30 s) suits short calls; WaitRun and a following StreamOutput usually
 * want a longer deadline or PRISMQ_NO_DEADLINE.
 *
 * Threads: a client and everything about it belongs to one thread at a time; nothing
 * here is thread-safe, except prismq_client_interrupt. Distinct clients may be used
 * from distinct threads.
 *
 * Interrupting: a blocking function does not return when a signal arrives (its loop
 * goes on after EINTR). A signal handler, or another thread, ends it with
 * prismq_client_interrupt.
 *
 * SIGPIPE: the blocking functions block SIGPIPE in the calling thread while they run
 * (and discard one raised meanwhile), so a server that goes away cannot kill the
 * program. A prismq_chunk_fn runs inside, so its own writes to a closed pipe fail with
 * EPIPE rather than raise SIGPIPE. Programs using the asynchronous form run the loop
 * themselves and must ignore or block SIGPIPE, as any libevent program writing to
 * sockets must. (Windows has no SIGPIPE: there such writes just fail.)
 *
 * Failures are returned, out of memory included, not aborted on. One known exception
 * remains: the HTTP/2 layer shared with the server (common/h2conn) still aborts if an
 * allocation fails while it frames or sends. */
#ifndef PRISMQ_CLIENT_H
#define PRISMQ_CLIENT_H

#include <stdint.h>

#include "prismq/runner/v1/runner.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

typedef struct prismq_client prismq_client;

/* gRPC status codes (grpc doc/statuscodes.md). */
enum prismq_code {
  PRISMQ_CODE_OK = 0,
  PRISMQ_CODE_CANCELLED = 1,
  PRISMQ_CODE_UNKNOWN = 2,
  PRISMQ_CODE_INVALID_ARGUMENT = 3,
  PRISMQ_CODE_DEADLINE_EXCEEDED = 4,
  PRISMQ_CODE_NOT_FOUND = 5,
  PRISMQ_CODE_ALREADY_EXISTS = 6,
  PRISMQ_CODE_PERMISSION_DENIED = 7,
  PRISMQ_CODE_RESOURCE_EXHAUSTED = 8,
  PRISMQ_CODE_FAILED_PRECONDITION = 9,
  PRISMQ_CODE_ABORTED = 10,
  PRISMQ_CODE_OUT_OF_RANGE = 11,
  PRISMQ_CODE_UNIMPLEMENTED = 12,
  PRISMQ_CODE_INTERNAL = 13,
  PRISMQ_CODE_UNAVAILABLE = 14,
  PRISMQ_CODE_DATA_LOSS = 15,
  PRISMQ_CODE_UNAUTHENTICATED = 16,
};

/* The outcome of an RPC: `code` (enum prismq_code, 0 = OK) and a NUL-terminated
 * message ("" when the server sent none; truncated to fit). `details` belongs to the
 * library: read it with prismq_status_violations (NULL: none, as in a status made by
 * hand). The details of a status live
 *   - returned by a blocking function: until the next blocking call on the same client,
 *     or prismq_client_free;
 *   - handed to a completion callback: until the callback returns;
 * and a copy of the status shares them: copy what you need of them to keep it longer. */
typedef struct prismq_status {
  int code;
  char message[512];
  const struct prismq_status_details *details;
} prismq_status;

/* Returns the canonical name of a status code ("DEADLINE_EXCEEDED"), or "UNKNOWN"
 * for a code outside 0..16. The string is static. */
const char *prismq_code_name(int code);

/* A field violation: what the server found wrong with one field of the request (a
 * google.rpc.BadRequest.FieldViolation). */
typedef struct prismq_field_violation {
  const char *field;       /* its path: "parameters.NAME" for a parameter (may be "") */
  const char *description; /* what is wrong with it, a sentence (may be "") */
} prismq_field_violation;

/* The field violations of a failed call, in the server's order: the google.rpc.BadRequest
 * details of the google.rpc.Status in its grpc-status-details-bin trailer. prismqd sends
 * them with INVALID_ARGUMENT for bad parameters of StartRun and SavePreset, one per bad
 * parameter (the message joins the same sentences with "; "), as many as fit in about
 * 3 KiB. Sets *out (if not NULL) to the array (valid as the status's details are, see
 * prismq_status), or to NULL when there are none, and returns how many there are: 0 for
 * a NULL or OK status, an error of the library, a server that sent no such details, and
 * details that do not decode, disagree with the status code or are over 8 KiB. */
size_t prismq_status_violations(const prismq_status *st, const prismq_field_violation **out);

/* Per-call deadline meaning "no deadline at all". */
#define PRISMQ_NO_DEADLINE UINT32_MAX

typedef struct prismq_client_opts {
  /* The server, in gRPC's naming: "host:port", "dns:host:port", "ipv4:1.2.3.4:port",
   * "ipv6:[::1]:port", "unix:path", "unix:///abs/path", "unix-abstract:name", or
   * "tls://host:port" (TLS). A host name is resolved when connecting (getaddrinfo, which
   * may block on DNS). NULL: the environment variable PRISMQ_TARGET if set and not
   * empty, else "127.0.0.1:50051" (prismqd's default). Copied. */
  const char *target;
  /* Default deadline of each call in milliseconds; 0 or PRISMQ_NO_DEADLINE: none. */
  uint32_t deadline_ms;
  /* Bound on establishing the connection (and on the TLS handshake), in ms; 0: none. */
  uint32_t connect_timeout_ms;
  /* TLS, used when the target is "tls://..." or any of these is set. PEM files: the CAs
   * to verify the server with (NULL: the system's), a client certificate and its key
   * (for servers that ask for one), and the name the server certificate must match
   * (NULL: the target's host; an IP address is matched against the IP SANs). */
  const char *ca_file;
  const char *cert_file;
  const char *key_file;
  const char *server_name;
} prismq_client_opts;

#define PRISMQ_CLIENT_OPTS_INIT \
  { NULL, 30000, 10000, NULL, NULL, NULL, NULL }

/* Creates a blocking client and starts connecting (see "Connecting is lazy" above).
 * `opts` may be NULL for PRISMQ_CLIENT_OPTS_INIT.
 * Returns 0 and sets *out (free with prismq_client_free); or, *out untouched:
 *   -EINVAL   the target is malformed (or out is NULL), or a TLS file cannot be
 *             loaded (prismq_strerror then says which and why),
 *   -EHOSTUNREACH  the target's host name does not resolve,
 *   -ENOMEM   out of memory,
 *   another negative errno from socket(2) or eventfd(2) (e.g. -EMFILE; on Windows
 *             winsock's errors, as the errno values POSIX gives for them).
 * prismq_strerror() turns these into text. */
int prismq_client_connect(prismq_client **out, const prismq_client_opts *opts);

/* Creates an asynchronous client on `base`, which must outlive it; the caller runs
 * the loop. Deadlines are libevent timers on `base`: create it with
 * EVENT_BASE_FLAG_PRECISE_TIMER (as the blocking client does for its own loop), or
 * they may end a few milliseconds early (libevent's default clock is the coarse one).
 * Returns as prismq_client_connect does (-EINVAL also for a NULL base). */
int prismq_client_connect_async(prismq_client **out, struct event_base *base,
                                const prismq_client_opts *opts);

/* Closes the connection and frees the client. Asynchronous calls still running end
 * with PRISMQ_CODE_CANCELLED: their callbacks fire before this returns. Accepts NULL.
 * May be called from a completion callback (prismq_run_fn and the like, or a
 * stream's prismq_done_fn), not from inside a prismq_chunk_fn. */
void prismq_client_free(prismq_client *c);

/* Ends the blocking call running on `c` (from prismq_client_connect) as a non-zero
 * return from a prismq_chunk_fn does: the call is cancelled on the wire (RST_STREAM
 * CANCEL) and returns PRISMQ_CODE_CANCELLED with the message "call interrupted by
 * prismq_client_interrupt". A call that has already ended otherwise by then returns
 * its own status.
 *
 * If no blocking call is running, the interrupt waits for the next one, which then
 * returns that CANCELLED at once, sending nothing; so a handler cannot miss a call
 * that is just starting. Interrupts that come before a call starts count as one; one
 * that comes during a call is consumed by it (even when it came too late to change the
 * outcome), except one that comes just as the call ends, which may go to the next.
 *
 * Async-signal-safe (it only write(2)s to an eventfd, or on Windows sends a byte on a
 * socket, and leaves errno as it was), so a signal handler (on Windows a console control
 * handler, SetConsoleCtrlHandler) may call it; and safe to call from any thread while the client's
 * own thread is inside a call, but not concurrently with (or after)
 * prismq_client_free.
 * Returns 0, or -EINVAL for NULL or an asynchronous client (whose caller runs the loop
 * and can cancel by other means, e.g. a stream's on_chunk returning non-zero). */
int prismq_client_interrupt(prismq_client *c);

/* A message for a negative errno returned by this library: strerror's text, or, for
 * the code the last failed connect of the calling thread returned, its reason when
 * errno alone cannot say (e.g. "cannot load the CA file ca.pem: No such file or
 * directory"). The string is valid until the thread's next connect. */
const char *prismq_strerror(int rc);

/* Frees a Run returned by this library; the same as
 * prismq__runner__v1__run__free_unpacked(run, NULL). Accepts NULL. */
void prismq_run_free(Prismq__Runner__V1__Run *run);

/* ---- blocking calls (clients from prismq_client_connect) ----
 *
 * Each sends one request and waits for the end of the call. On PRISMQ_CODE_OK the
 * result goes to *out (the caller owns it; see "Results" above); on any other code
 * *out is untouched. `out` may be NULL to discard the result. The request must not
 * be NULL unless said otherwise. */

/* Runner/StartRun: creates a run of req->module_id with req->parameters (and the
 * optional request_id, labels and timeout_ms). *out: the new run (QUEUED or RUNNING),
 * or the existing one for a request_id seen before. */
prismq_status prismq_start_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                               const Prismq__Runner__V1__StartRunRequest *req,
                               uint32_t deadline_ms);

/* Runner/GetRun: the run req->run_id as it is now (NOT_FOUND if unknown). */
prismq_status prismq_get_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                             const Prismq__Runner__V1__GetRunRequest *req, uint32_t deadline_ms);

/* Runner/ListRuns: a page of runs, newest first, filtered by req (statuses,
 * module_id, labels); *out->next_page_token is "" on the last page. */
prismq_status prismq_list_runs(Prismq__Runner__V1__ListRunsResponse **out, prismq_client *c,
                               const Prismq__Runner__V1__ListRunsRequest *req,
                               uint32_t deadline_ms);

/* Runner/CancelRun: SIGTERM to the run's processes, SIGKILL after req->grace_ms;
 * *out: the run once terminal. */
prismq_status prismq_cancel_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                                const Prismq__Runner__V1__CancelRunRequest *req,
                                uint32_t deadline_ms);

/* Runner/WaitRun: returns when the run is terminal, or after req->timeout_ms (if not
 * 0) with the run as it is then. Keep deadline_ms above req->timeout_ms. */
prismq_status prismq_wait_run(Prismq__Runner__V1__Run **out, prismq_client *c,
                              const Prismq__Runner__V1__WaitRunRequest *req, uint32_t deadline_ms);

/* Runner/ListModules: the modules the server can run. `req` may be NULL (the request
 * has no fields yet). */
prismq_status prismq_list_modules(Prismq__Runner__V1__ListModulesResponse **out, prismq_client *c,
                                  const Prismq__Runner__V1__ListModulesRequest *req,
                                  uint32_t deadline_ms);

/* Runner/SavePreset: saves req->parameters (and description) as preset req->name of
 * module req->module_id, replacing the caller's own preset of that name. *out: the
 * preset as saved. INVALID_ARGUMENT for bad values, FAILED_PRECONDITION for a name the
 * server's configuration uses, PERMISSION_DENIED for another identity's preset. */
prismq_status prismq_save_preset(Prismq__Runner__V1__Preset **out, prismq_client *c,
                                 const Prismq__Runner__V1__SavePresetRequest *req,
                                 uint32_t deadline_ms);

/* Runner/ListPresets: a page of the presets of req->module_id ("" = every module), the
 * configuration's first; *out->next_page_token is "" on the last page. */
prismq_status prismq_list_presets(Prismq__Runner__V1__ListPresetsResponse **out, prismq_client *c,
                                  const Prismq__Runner__V1__ListPresetsRequest *req,
                                  uint32_t deadline_ms);

/* Runner/DeletePreset: deletes a saved preset (NOT_FOUND if there is none). */
prismq_status prismq_delete_preset(prismq_client *c,
                                   const Prismq__Runner__V1__DeletePresetRequest *req,
                                   uint32_t deadline_ms);

/* Serving status of grpc.health.v1 (HealthCheckResponse.ServingStatus). */
enum prismq_serving {
  PRISMQ_SERVING_UNKNOWN = 0,
  PRISMQ_SERVING = 1,
  PRISMQ_NOT_SERVING = 2,
  PRISMQ_SERVICE_UNKNOWN = 3,
};

/* grpc.health.v1.Health/Check of `service` (NULL or "" = the server as a whole; the
 * Runner is "prismq.runner.v1.Runner"). On OK sets *out (if not NULL) to an enum
 * prismq_serving value. An unknown service ends NOT_FOUND. */
prismq_status prismq_health(int *out, prismq_client *c, const char *service, uint32_t deadline_ms);

/* Called for each OutputChunk of a StreamOutput, in order. `chunk` belongs to the
 * library and is freed when the callback returns. Return 0 to go on; non-zero stops
 * the stream at once: no further chunk is delivered, the call is cancelled on the
 * wire (RST_STREAM CANCEL, the server stops sending) and the call ends with
 * PRISMQ_CODE_CANCELLED. */
typedef int (*prismq_chunk_fn)(const Prismq__Runner__V1__OutputChunk *chunk, void *user);

/* Runner/StreamOutput: replays the run's output from req->start_seq (optionally only
 * req->stream) and, with req->follow, goes on live until the run ends; the last chunk
 * of a follow has `run` set to the terminal run (and usually no data). Calls
 * on_chunk(chunk, user) for each chunk, from inside this function, and returns the
 * final status: OK when the server ended the stream, CANCELLED if on_chunk stopped
 * it, NOT_FOUND for an unknown run, UNAVAILABLE if the connection was lost, ...
 * on_chunk may not make blocking calls on this client. */
prismq_status prismq_stream_output(prismq_client *c,
                                   const Prismq__Runner__V1__StreamOutputRequest *req,
                                   uint32_t deadline_ms, prismq_chunk_fn on_chunk, void *user);

/* ---- asynchronous calls (clients from prismq_client_connect_async) ----
 *
 * Each packs the request (which the caller may free at once) and starts the call.
 * Returns 0: the callback will fire exactly once, from the client's event loop (never
 * from inside the *_async function), also when the call fails. Or returns, and then no
 * callback fires: -EINVAL (NULL client, request or callback, or a blocking client),
 * -ENOMEM, -EMSGSIZE (request over 4 GiB).
 *
 * Completion callbacks receive the status (valid during the callback) and, on
 * PRISMQ_CODE_OK only, the result, which the callback owns and must free (see
 * "Results"); otherwise the result is NULL. */

typedef void (*prismq_run_fn)(const prismq_status *st, Prismq__Runner__V1__Run *run, void *user);
typedef void (*prismq_list_runs_fn)(const prismq_status *st,
                                    Prismq__Runner__V1__ListRunsResponse *resp, void *user);
typedef void (*prismq_list_modules_fn)(const prismq_status *st,
                                       Prismq__Runner__V1__ListModulesResponse *resp, void *user);
typedef void (*prismq_preset_fn)(const prismq_status *st, Prismq__Runner__V1__Preset *preset,
                                 void *user);
typedef void (*prismq_list_presets_fn)(const prismq_status *st,
                                       Prismq__Runner__V1__ListPresetsResponse *resp, void *user);
/* `serving` is an enum prismq_serving value (PRISMQ_SERVING_UNKNOWN unless OK). */
typedef void (*prismq_health_fn)(const prismq_status *st, int serving, void *user);
/* The end of a call without a result (a stream). */
typedef void (*prismq_done_fn)(const prismq_status *st, void *user);

int prismq_start_run_async(prismq_client *c, const Prismq__Runner__V1__StartRunRequest *req,
                           uint32_t deadline_ms, prismq_run_fn cb, void *user);
int prismq_get_run_async(prismq_client *c, const Prismq__Runner__V1__GetRunRequest *req,
                         uint32_t deadline_ms, prismq_run_fn cb, void *user);
int prismq_list_runs_async(prismq_client *c, const Prismq__Runner__V1__ListRunsRequest *req,
                           uint32_t deadline_ms, prismq_list_runs_fn cb, void *user);
int prismq_cancel_run_async(prismq_client *c, const Prismq__Runner__V1__CancelRunRequest *req,
                            uint32_t deadline_ms, prismq_run_fn cb, void *user);
int prismq_wait_run_async(prismq_client *c, const Prismq__Runner__V1__WaitRunRequest *req,
                          uint32_t deadline_ms, prismq_run_fn cb, void *user);
/* `req` may be NULL, as for prismq_list_modules. */
int prismq_list_modules_async(prismq_client *c, const Prismq__Runner__V1__ListModulesRequest *req,
                              uint32_t deadline_ms, prismq_list_modules_fn cb, void *user);
int prismq_save_preset_async(prismq_client *c, const Prismq__Runner__V1__SavePresetRequest *req,
                             uint32_t deadline_ms, prismq_preset_fn cb, void *user);
int prismq_list_presets_async(prismq_client *c, const Prismq__Runner__V1__ListPresetsRequest *req,
                              uint32_t deadline_ms, prismq_list_presets_fn cb, void *user);
/* cb fires with the status alone. */
int prismq_delete_preset_async(prismq_client *c, const Prismq__Runner__V1__DeletePresetRequest *req,
                               uint32_t deadline_ms, prismq_done_fn cb, void *user);
/* `service` may be NULL, as for prismq_health. */
int prismq_health_async(prismq_client *c, const char *service, uint32_t deadline_ms,
                        prismq_health_fn cb, void *user);

/* StreamOutput, asynchronously: on_chunk fires from the loop for each chunk (with the
 * same contract as for prismq_stream_output; it may start other asynchronous calls),
 * then on_done once with the final status. */
int prismq_stream_output_async(prismq_client *c, const Prismq__Runner__V1__StreamOutputRequest *req,
                               uint32_t deadline_ms, prismq_chunk_fn on_chunk,
                               prismq_done_fn on_done, void *user);

#ifdef __cplusplus
}
#endif

#endif
